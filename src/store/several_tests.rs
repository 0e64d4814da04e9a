//! Several processes' stores writing one PostgreSQL database at once
//! (`several_writers`): one strict trace chain, checkpoints that link, every commit
//! kept, and changes committed by one heard by the other's subscribers. Each store here
//! stands for a node (its own committer, connections and blob directory). Their unwraps
//! see only stores and values built here, never peer input.

use std::sync::Arc;
use std::time::Duration;

use super::kv::pg::PgOptions;
use super::kv::pg_cluster::PgCluster;
use super::*;
use crate::clock::system;
use crate::pec::address::PecAddress;
use crate::store::mailbox::Password;
use crate::trace::checkpoint::{cert_sha256, tests::test_signer};
use crate::trace::{EventKind, TraceEvent};

/// A cluster of our own, or `None` (skipped with the reason, unless tools are required).
fn cluster() -> Option<PgCluster> {
    // The conformance run repeats the unit tests with every sled store in PostgreSQL:
    // this test brings its own cluster and ran already.
    if std::env::var_os(super::kv::pg::testing::ENV).is_some() {
        return None;
    }
    match PgCluster::start() {
        Ok(c) => Some(c),
        Err(reason) => {
            if std::env::var_os("PECD_REQUIRE_TOOLS").is_some_and(|v| !v.is_empty()) {
                panic!("{reason} (PECD_REQUIRE_TOOLS is set: this must run here)");
            }
            eprintln!("SKIP: several writers on PostgreSQL: {reason}");
            None
        }
    }
}

fn node(dir: &Path, url: &str, signer: &Arc<crate::pec::smime::Signer>) -> Store {
    Store::open(dir, options(url, signer, true)).unwrap()
}

fn options(url: &str, signer: &Arc<crate::pec::smime::Signer>, several: bool) -> StoreOptions {
    StoreOptions {
        clock: system(),
        signer: Some(signer.clone()),
        checkpoint_every: 7,
        backend: StoreBackend::Postgres(PgOptions {
            url: url.to_string(),
            password: None,
            pool_size: 2,
            ca_file: None,
            several_writers: several,
        }),
        lock_wait: Duration::from_millis(300),
        ..StoreOptions::default()
    }
}

fn addr(s: &str) -> PecAddress {
    PecAddress::parse(s).unwrap()
}

/// A delivery with its trace record and idempotency key, as the delivery point commits.
fn deliver(s: &Store, to: &str, n: usize) -> Result<Applied, StoreError> {
    let body = format!("Subject: {n}\r\n\r\nmessage {n}\r\n");
    let blob = s.blobs().put_staged(body.as_bytes())?;
    let ev = TraceEvent::new(EventKind::Delivered, jiff::Timestamp::now())
        .msgid(format!("m{n}@several.test"))
        .recipient(to)
        .message_bytes(body.as_bytes());
    s.commit(
        Batch::new()
            .claim(format!("deliver:{n}"))
            .deliver(Delivery::inbox(addr(to), blob, jiff::Timestamp::now()))
            .trace(ev),
    )
}

#[test]
fn two_writers_append_to_one_chain_and_hear_each_other() {
    let Some(pg) = cluster() else { return };
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let signer = Arc::new(test_signer("provider"));
    let me = cert_sha256(signer.certificate());
    let a = node(da.path(), &pg.url(), &signer);
    // A second writer opens while the first is open (one writer would get `Locked`).
    let b = node(db.path(), &pg.url(), &signer);
    let to = "alice@several.test";
    a.add_mailbox(NewMailbox {
        address: addr(to),
        password: Password::new("pw"),
        quota_bytes: None,
        options: Default::default(),
        provisional: false,
    })
    .unwrap();

    // What A commits reaches B's subscribers (IMAP IDLE, JMAP push there).
    let mut heard = b.subscribe_changes();
    deliver(&a, to, 0).unwrap();
    let change = (0..100)
        .find_map(|_| match heard.try_recv() {
            Ok(c) => Some(c),
            Err(_) => {
                std::thread::sleep(Duration::from_millis(50));
                None
            }
        })
        .expect("B hears the delivery A committed");
    assert!(change.concerns(to, "INBOX"), "{change:?}");

    // A store configured as the only writer is refused while several write, so the two
    // modes never write one store at once.
    let dc = tempfile::tempdir().unwrap();
    let alone = Store::open(dc.path(), options(&pg.url(), &signer, false));
    assert!(
        matches!(alone, Err(StoreError::Locked { .. })),
        "{:?}",
        alone.err()
    );

    // Both write at once, from several threads each: every commit is applied once. Beside
    // them, writes outside the committers (a cache, as the readiness probe writes): they
    // wait for the commit lock, never holding a connection a committer needs meanwhile.
    let cache = {
        let (a, b) = (a.clone(), b.clone());
        std::thread::spawn(move || {
            for i in 0..60 {
                let s = if i % 2 == 0 { &a } else { &b };
                s.cache_put("probe", "k", format!("{i}").as_bytes())
                    .unwrap();
            }
        })
    };
    let per_thread = 40;
    let stores = [a.clone(), b.clone(), a.clone(), b.clone()];
    let threads: Vec<_> = stores
        .into_iter()
        .enumerate()
        .map(|(t, s)| {
            std::thread::spawn(move || {
                for i in 0..per_thread {
                    deliver(&s, to, 1 + t * per_thread + i).unwrap();
                }
                // The same key from the other node: already claimed, nothing applied.
                let again = deliver(&s, to, 1 + ((t + 1) % 4) * per_thread);
                assert!(
                    matches!(again, Err(StoreError::AlreadyClaimed(_))),
                    "{again:?}"
                );
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    cache.join().unwrap();
    let total = 1 + 4 * per_thread;
    // Checkpoints while both run, and one now: they link. Then the store is idle: neither
    // node signs another (the head is the record that stored the last one).
    a.checkpoint_now().unwrap();
    assert!(b.checkpoint_now().unwrap().is_none());
    assert!(a.checkpoint_now().unwrap().is_none());

    for s in [&a, &b] {
        let inbox = s.messages(&addr(to), "INBOX").unwrap();
        assert_eq!(inbox.len(), total);
        let mut uids: Vec<_> = inbox.iter().map(|m| m.uid).collect();
        uids.dedup();
        assert_eq!(uids.len(), total, "every delivery has its own UID");
        // One strict chain, every record linked and every checkpoint signed and linked.
        let r = s.trace().verify(Some(me.clone())).unwrap();
        assert!(r.intact(), "{:?}", r.problem);
        assert!(r.checkpoints >= 2, "{r:?}");
        let delivered = s
            .trace()
            .query(&Default::default())
            .unwrap()
            .into_iter()
            .filter(|r| r.kind == EventKind::Delivered)
            .count();
        assert_eq!(delivered, total);
    }
}

#[test]
fn announcements_fit_postgresql_and_are_heard_back() {
    let changed: Vec<MailboxChange> = (0..400)
        .map(|i| MailboxChange {
            mailbox: format!("utente{i}@several.test"),
            folder: (i % 2 == 0).then(|| "INBOX".to_string()),
        })
        .collect();
    let texts = super::commit::announcements(&changed);
    assert!(texts.len() > 1, "split: {}", texts.len());
    let mut back = Vec::new();
    for t in &texts {
        // PostgreSQL refuses a NOTIFY payload of 8000 bytes or more (the process id and a
        // newline are put in front).
        assert!(t.len() + 33 < 8000, "{}", t.len());
        back.extend(super::commit::heard(t));
    }
    assert_eq!(back, changed);
    assert!(super::commit::announcements(&[]).is_empty());
    // What is not an announcement is nothing.
    for junk in ["", "{", "[1,2]", "{\"changes\": [[1, 2], [\"a\"]]}"] {
        assert!(super::commit::heard(junk).is_empty(), "{junk}");
    }
}

/// A node of an older version writing keeps writing in its forms after a migration it
/// does not see: a node that would migrate refuses while any other node writes.
#[test]
fn a_node_does_not_migrate_the_schema_while_others_write() {
    let Some(pg) = cluster() else { return };
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let signer = Arc::new(test_signer("provider"));
    let a = node(da.path(), &pg.url(), &signer);
    // A running node of schema 5, as far as the store says.
    a.commit(Batch::new().push(batch::Op::Raw {
        tree: tx::META,
        key: SCHEMA_KEY.to_vec(),
        value: Some(5u32.to_be_bytes().to_vec()),
    }))
    .unwrap();
    let refused = Store::open(db.path(), options(&pg.url(), &signer, true));
    match refused {
        Err(e @ StoreError::UpgradeWhileOthersWrite { found: 5, .. }) => {
            assert!(e.to_string().contains("stop every node"), "{e}")
        }
        other => panic!("{:?}", other.err()),
    }
    drop(a);
    // Alone (once the server has seen A's connections go), it migrates.
    let mut opened = None;
    for _ in 0..50 {
        match Store::open(db.path(), options(&pg.url(), &signer, true)) {
            Ok(s) => {
                opened = Some(s);
                break;
            }
            Err(StoreError::UpgradeWhileOthersWrite { .. }) => {
                std::thread::sleep(Duration::from_millis(100))
            }
            Err(e) => panic!("{e}"),
        }
    }
    let b = opened.expect("opened once A was gone");
    let v = b.trees().meta.get(SCHEMA_KEY).unwrap().unwrap();
    assert_eq!(v.as_ref(), SCHEMA_VERSION.to_be_bytes());
}
