//! Crash test: a child process (this test binary re-executed with `PECD_CRASH_CHILD`)
//! writes messages + trace records + idempotency claims and prints each acknowledged id
//! after `commit` returns; the parent SIGKILLs it at random points over many rounds,
//! then reopens the store and proves that nothing acknowledged was lost, nothing was
//! doubled, no blob is missing or orphaned (half the bodies are written durably first,
//! half staged for their commit: on fjall, kept in its keyspace), usage is exact and the chain verifies. The
//! same test runs on each metadata backend: sled, fjall, and a real PostgreSQL cluster of
//! its own (the child is killed mid-transaction; the server rolls back what it had not
//! committed).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pecd::pec::address::PecAddress;
use pecd::store::mailbox::Password;
use pecd::store::{
    Batch, BlobId, Delivery, NewMailbox, PgOptions, Store, StoreBackend, StoreError, StoreOptions,
};
use pecd::trace::{EventKind, TraceEvent, TraceQuery};

const ROUNDS: u64 = 15;
const WRITERS: u64 = 4;

fn mailbox() -> PecAddress {
    PecAddress::parse("crash@example.it").unwrap()
}

/// The PostgreSQL connection string of the children, when the run is on PostgreSQL.
const PG_ENV: &str = "PECD_CRASH_PG";
/// Set for the children of the run on fjall.
const FJALL_ENV: &str = "PECD_CRASH_FJALL";

/// The engine of the children: PostgreSQL (its connection string), fjall or sled.
#[derive(Clone, Copy)]
enum Engine<'a> {
    Sled,
    Fjall,
    Pg(&'a str),
}

fn options(grace: Duration, engine: Engine<'_>) -> StoreOptions {
    let backend = match engine {
        Engine::Pg(url) => StoreBackend::Postgres(PgOptions {
            url: url.to_string(),
            password: None,
            pool_size: 2,
            ca_file: None,
            several_writers: false,
        }),
        Engine::Fjall => StoreBackend::Fjall,
        Engine::Sled => StoreBackend::Sled,
    };
    StoreOptions {
        blob_grace: grace,
        backend,
        // The killed child's session (and its writer lock) ends when the server sees
        // the connection close.
        lock_wait: Duration::from_secs(10),
        ..StoreOptions::default()
    }
}

/// The child: writes forever until killed.
fn child(dir: &Path, base: u64) {
    let pg = std::env::var(PG_ENV).ok();
    let engine = match (&pg, std::env::var_os(FJALL_ENV)) {
        (Some(url), _) => Engine::Pg(url),
        (None, Some(_)) => Engine::Fjall,
        (None, None) => Engine::Sled,
    };
    let store = Store::open(dir, options(Duration::from_secs(3600), engine)).unwrap();
    if store.mailbox(&mailbox()).unwrap().is_none() {
        store
            .add_mailbox(NewMailbox {
                address: mailbox(),
                password: Password::new("x"),
                quota_bytes: Some(u64::MAX / 2),
                options: Default::default(),
                provisional: false,
            })
            .unwrap();
    }
    println!("READY");
    let handles: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            std::thread::spawn(move || {
                for n in 0.. {
                    let id = base + w * 100_000 + n;
                    let body = format!(
                        "Message-ID: <{id}@crash>\r\n\r\nbody of {id} {}\r\n",
                        "x".repeat((id % 7000) as usize)
                    );
                    // Half the bodies written durably first, half staged for the commit
                    // (on fjall those go into the keyspace, durable with the commit).
                    let blob = if n % 2 == 0 {
                        store.blobs().put(body.as_bytes()).unwrap()
                    } else {
                        store.blobs().put_staged(body.as_bytes()).unwrap()
                    };
                    let now = jiff::Timestamp::now();
                    let batch = Batch::new()
                        .claim(format!("deliver:{id}"))
                        .deliver(Delivery::inbox(mailbox(), blob, now))
                        .trace(
                            TraceEvent::new(EventKind::Delivered, now)
                                .msgid(format!("{id}@crash"))
                                .message_bytes(body.as_bytes()),
                        )
                        .trace(
                            TraceEvent::new(EventKind::DeliveryReceiptSent, now)
                                .msgid(format!("{id}@crash")),
                        );
                    store.commit(batch.clone()).unwrap();
                    println!("ACK {id}");
                    // A retried step must be refused, never applied twice.
                    if n % 5 == 0 {
                        match store.commit(batch) {
                            Err(StoreError::AlreadyClaimed(_)) => {}
                            other => panic!("retry of {id} was not refused: {other:?}"),
                        }
                    }
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
}

/// In a child this test binary re-executed (`PECD_CRASH_CHILD` set): writes until
/// killed, and tells so.
fn ran_as_child() -> bool {
    let Ok(dir) = std::env::var("PECD_CRASH_CHILD") else {
        return false;
    };
    let base = std::env::var("PECD_CRASH_BASE").unwrap().parse().unwrap();
    child(Path::new(&dir), base);
    true
}

#[test]
fn killed_store_reopens_consistent() {
    if ran_as_child() {
        return;
    }
    if std::env::var_os(PG_ENV).is_some() || std::env::var_os(FJALL_ENV).is_some() {
        return;
    }
    crash_rounds("killed_store_reopens_consistent", Engine::Sled);
}

#[test]
fn killed_store_on_fjall_reopens_consistent() {
    if ran_as_child() {
        return;
    }
    crash_rounds("killed_store_on_fjall_reopens_consistent", Engine::Fjall);
}

#[test]
fn killed_store_on_postgresql_reopens_consistent() {
    if ran_as_child() {
        return;
    }
    let Some(cluster) = common::postgres::cluster("the crash test on PostgreSQL") else {
        return;
    };
    crash_rounds(
        "killed_store_on_postgresql_reopens_consistent",
        Engine::Pg(&cluster.url()),
    );
    let rows = common::postgres::psql(&cluster, "SELECT count(*) FROM pecd_kv");
    assert!(
        rows.parse::<u64>().unwrap() > 100,
        "the store was in PostgreSQL: {rows} rows"
    );
}

fn crash_rounds(test: &str, engine: Engine<'_>) {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut acked = BTreeSet::new();
    // A small deterministic PRNG for the kill points.
    let mut seed: u64 = 0x9e3779b97f4a7c15 ^ std::process::id() as u64;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..ROUNDS {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        match engine {
            Engine::Pg(url) => drop(cmd.env(PG_ENV, url)),
            Engine::Fjall => drop(cmd.env(FJALL_ENV, "1")),
            Engine::Sled => {}
        }
        let mut c = cmd
            .args(["--exact", test, "--nocapture", "--test-threads=1"])
            .env("PECD_CRASH_CHILD", dir.path())
            .env("PECD_CRASH_BASE", ((round + 1) * 10_000_000).to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(c.stdout.take().unwrap());
        let mut line = String::new();
        // Wait until the child has opened the store, then let it write for a random time.
        loop {
            line.clear();
            // libtest prints "test NAME ... " before the test runs, so READY is mid-line.
            if out.read_line(&mut line).unwrap() == 0 || line.contains("READY") {
                break;
            }
        }
        let run_for = Duration::from_millis(50 + rand() % 400);
        let reader = std::thread::spawn(move || {
            let mut ids = Vec::new();
            for l in out.lines() {
                let Ok(l) = l else { break };
                if let Some(at) = l.find("ACK ") {
                    ids.push(l[at + 4..].trim().parse::<u64>().unwrap());
                }
            }
            ids
        });
        std::thread::sleep(run_for);
        c.kill().unwrap(); // SIGKILL on Unix
        c.wait().unwrap();
        let ids = reader.join().unwrap();
        acked.extend(ids);
    }
    assert!(
        acked.len() > 50,
        "the child acknowledged too little to prove anything: {}",
        acked.len()
    );

    // Reopen with no grace: every unreferenced blob must go.
    let store = Store::open(dir.path(), options(Duration::ZERO, engine)).unwrap();
    let msgs = store.messages(&mailbox(), "INBOX").unwrap();
    let mut seen: BTreeMap<u64, u32> = BTreeMap::new();
    let mut total = 0;
    let mut referenced = BTreeSet::new();
    let mut in_keyspace = 0;
    for m in &msgs {
        let body = store.blobs().read(&m.blob).unwrap();
        assert_eq!(
            BlobId::of(&body),
            m.blob,
            "blob content does not match its id"
        );
        assert_eq!(body.len() as u64, m.size);
        let text = String::from_utf8(body).unwrap();
        let id: u64 = text["Message-ID: <".len()..text.find('@').unwrap()]
            .parse()
            .unwrap();
        *seen.entry(id).or_default() += 1;
        total += m.size;
        referenced.insert(m.blob.clone());
        let file = store
            .blobs()
            .local_path(&m.blob)
            .is_some_and(|p| p.is_file());
        if !file {
            in_keyspace += 1;
        }
    }
    // On fjall the staged half is kept in the keyspace, elsewhere every body is a file.
    match engine {
        Engine::Fjall => assert!(
            in_keyspace > 20 && in_keyspace < msgs.len(),
            "{in_keyspace} of {} bodies not in files on fjall",
            msgs.len()
        ),
        Engine::Sled | Engine::Pg(_) => {
            assert_eq!(in_keyspace, 0, "bodies missing from the blob directory")
        }
    }
    for id in &acked {
        assert_eq!(
            seen.get(id),
            Some(&1),
            "acknowledged message {id} is missing or doubled"
        );
    }
    assert!(
        seen.values().all(|&n| n == 1),
        "a message was delivered twice"
    );
    let info = store.mailbox(&mailbox()).unwrap().unwrap();
    assert_eq!(
        (info.usage_bytes, info.messages),
        (total, msgs.len() as u64),
        "usage not exact"
    );
    let on_disk: BTreeSet<_> = store.blobs().list().unwrap().into_iter().collect();
    assert_eq!(on_disk, referenced, "orphaned or missing blob files");
    // Each delivered message has exactly its two trace records (claimed once).
    for id in seen.keys().take(200) {
        let recs = store
            .trace()
            .query(&TraceQuery {
                msgid: Some(format!("{id}@crash")),
                ..Default::default()
            })
            .unwrap();
        let kinds: Vec<_> = recs.iter().map(|r| r.kind).collect();
        assert_eq!(
            kinds,
            vec![EventKind::Delivered, EventKind::DeliveryReceiptSent],
            "trace of {id}"
        );
    }
    let report = store.trace().verify(None).unwrap();
    assert!(report.intact(), "{:?}", report.problem);
    assert_eq!(report.records, 1 + 2 * seen.len() as u64);
    eprintln!(
        "crash test ({}): {ROUNDS} rounds, {} acknowledged, {} stored, {} trace records, {:?}",
        match engine {
            Engine::Pg(_) => "PostgreSQL",
            Engine::Fjall => "fjall",
            Engine::Sled => "sled",
        },
        acked.len(),
        seen.len(),
        report.records,
        started.elapsed()
    );
}
