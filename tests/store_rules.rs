//! Store rules that must hold under concurrency and across versions: exact quotas under
//! racing deliveries, refusal of unknown schema versions, a clear "locked" message from
//! the CLI while the store is in use.

use std::process::Command;
use std::sync::{Arc, Barrier};

use pecd::pec::address::PecAddress;
use pecd::store::mailbox::Password;
use pecd::store::{Batch, Delivery, NewMailbox, Store, StoreError, StoreOptions};
use pecd::trace::{EventKind, TraceEvent};

#[test]
fn racing_deliveries_never_exceed_the_quota() {
    const K: u64 = 7;
    const SIZE: u64 = 1000;
    const THREADS: usize = 32;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let a = PecAddress::parse("full@example.it").unwrap();
    store
        .add_mailbox(NewMailbox {
            address: a.clone(),
            password: Password::new("x"),
            quota_bytes: Some(K * SIZE + SIZE / 2),
            options: Default::default(),
            provisional: false,
        })
        .unwrap();
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> =
        (0..THREADS)
            .map(|i| {
                let (store, a, barrier) = (store.clone(), a.clone(), barrier.clone());
                std::thread::spawn(move || {
                    let body = format!("{i:0>width$}", width = SIZE as usize);
                    let blob = store.blobs().put(body.as_bytes()).unwrap();
                    barrier.wait();
                    let now = jiff::Timestamp::now();
                    store.commit(Batch::new().deliver(Delivery::inbox(a, blob, now)).trace(
                        TraceEvent::new(EventKind::Delivered, now).msgid(format!("{i}@race")),
                    ))
                })
            })
            .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let ok = results.iter().filter(|r| r.is_ok()).count() as u64;
    let over = results
        .iter()
        .filter(|r| matches!(r, Err(StoreError::QuotaExceeded { .. })))
        .count();
    assert_eq!(ok, K, "{results:?}");
    assert_eq!(over, THREADS - K as usize);
    let info = store.mailbox(&a).unwrap().unwrap();
    assert_eq!((info.usage_bytes, info.messages), (K * SIZE, K));
    // Refused deliveries left no trace record: admin record + K deliveries.
    assert_eq!(store.trace().verify(None).unwrap().records, 1 + K);
}

#[test]
fn unknown_schema_version_is_refused_naming_the_versions() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path(), StoreOptions::default()).unwrap());
    {
        // sled releases the lock of a dropped handle from a background thread: retry.
        let path = dir.path().join("db");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let db = loop {
            let opened = sled::Config::new()
                .path(&path)
                .segment_size(pecd::store::sled_segment_size(&path))
                .open();
            match opened {
                Ok(db) => break db,
                Err(e) if std::time::Instant::now() < deadline => {
                    eprintln!("retrying sled open: {e}");
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => panic!("{e}"),
            }
        };
        db.open_tree("meta")
            .unwrap()
            .insert("schema_version", &11u32.to_be_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    let e = Store::open(dir.path(), StoreOptions::default()).unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(e, StoreError::UnknownSchema { found: 11, .. }),
        "{e:?}"
    );
    assert!(
        msg.contains("schema version 11")
            && msg.contains("supports version(s) [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]"),
        "{msg}"
    );
    assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
}

/// New databases get larger log segments (a third of the disk per message, see
/// `SLED_SEGMENT_BYTES`); sled refuses to open a database with another size than its own,
/// so a store made with sled's default keeps opening, and keeps its size.
#[test]
fn stores_made_with_the_old_segment_size_still_open() {
    let size_in = |dir: &std::path::Path| {
        // Text lines, then sled's 4-byte checksum.
        String::from_utf8_lossy(&std::fs::read(dir.join("db/conf")).unwrap())
            .lines()
            .find_map(|l| l.strip_prefix("segment_size: ").map(str::to_string))
            .unwrap()
    };
    let new = tempfile::tempdir().unwrap();
    drop(Store::open(new.path(), StoreOptions::default()).unwrap());
    assert_eq!(size_in(new.path()), (8 << 20).to_string());
    let old = tempfile::tempdir().unwrap();
    drop(sled::open(old.path().join("db")).unwrap());
    assert_eq!(size_in(old.path()), (512 << 10).to_string());
    let open = |dir: &std::path::Path| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            // sled releases the lock of a dropped handle from a background thread: retry.
            match Store::open(dir, StoreOptions::default()) {
                Ok(s) => break s,
                Err(StoreError::Locked { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                Err(e) => panic!("{e}"),
            }
        }
    };
    let s = open(old.path());
    let event = TraceEvent::new(EventKind::Other, jiff::Timestamp::now());
    s.commit(Batch::new().trace(event)).unwrap();
    drop(s);
    assert_eq!(size_in(old.path()), (512 << 10).to_string());
    // A restore that left sled's `conf` out: the log is still read with its own size
    // (with another, sled would read it as empty and write over it).
    std::fs::remove_file(old.path().join("db/conf")).unwrap();
    let s = open(old.path());
    let r = s.trace().verify(None).unwrap();
    assert!(r.intact() && r.records == 1, "{r:?}");
    drop(s);
    assert_eq!(size_in(old.path()), (512 << 10).to_string());
}

#[test]
fn cli_mailbox_admin_and_locked_store_message() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let pecd = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_pecd"))
            .args(args)
            .env("PECD_LOG", "warn")
            .output()
            .unwrap()
    };
    assert!(
        pecd(&["init", "--dir", d, "--domain", "example.it"])
            .status
            .success()
    );
    let c = dir.path().join("pecd.toml");
    let c = c.to_str().unwrap();
    let ok = |args: &[&str]| {
        let o = pecd(args);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    ok(&[
        "mailbox",
        "add",
        "u1@example.it",
        "--password",
        "p",
        "--quota",
        "5000",
        "--config",
        c,
    ]);
    ok(&[
        "mailbox",
        "passwd",
        "u1@example.it",
        "--password",
        "q",
        "--config",
        c,
    ]);
    ok(&["mailbox", "quota", "u1@example.it", "9000", "--config", c]);
    let list = ok(&["mailbox", "list", "--json", "--config", c]);
    assert!(list.contains(r#""quota_bytes":9000"#), "{list}");
    // Ordinary mail is refused unless the mailbox opts in to anomaly envelopes.
    assert!(list.contains(r#""accept_anomalies":false"#), "{list}");
    let o = ok(&[
        "mailbox",
        "options",
        "u1@example.it",
        "--accept-anomalies",
        "true",
        "--config",
        c,
    ]);
    assert!(o.contains("accept-anomalies=true"), "{o}");
    let list = ok(&["mailbox", "list", "--json", "--config", c]);
    assert!(list.contains(r#""accept_anomalies":true"#), "{list}");
    let o = ok(&["mailbox", "options", "u1@example.it", "--config", c]);
    assert!(o.contains("accept-anomalies=true"), "{o}");
    let o = pecd(&["mailbox", "options", "nobody@example.it", "--config", c]);
    assert!(
        !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("no such mailbox"),
        "{o:?}"
    );
    let o = pecd(&[
        "mailbox",
        "add",
        "x@elsewhere.it",
        "--password",
        "p",
        "--config",
        c,
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("not served") && err.contains("example.it"),
        "{err}"
    );
    ok(&["mailbox", "del", "u1@example.it", "--config", c]);
    assert!(!ok(&["mailbox", "list", "--config", c]).contains("u1@"));

    // While something holds the store, the CLI says so and names the directory.
    let cfg = pecd::config::Config::load(std::path::Path::new(c)).unwrap();
    let _held = Store::open(&cfg.store.dir, StoreOptions::default()).unwrap();
    let o = pecd(&["mailbox", "list", "--config", c]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        err.contains("locked") && err.contains(&cfg.store.dir.display().to_string()),
        "{err}"
    );
}
