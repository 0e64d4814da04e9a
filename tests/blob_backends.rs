//! The blob boundary's conformance suite: what every backend must do, run against each of
//! them — the local directory and a real S3-compatible server (SeaweedFS on loopback,
//! `tests/common/s3.rs`). Then a whole provider on the S3 backend: a PEC message submitted
//! over SMTPS lands in the recipient's INBOX with its body in the bucket.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use pecd::store::blobs::s3::PART_SIZE;
use pecd::store::{BlobBackend, BlobId, BlobStore, StoreError};

/// One SeaweedFS for the whole file (each test has its own key prefix).
fn s3() -> Option<&'static common::s3::S3Server> {
    static SERVER: OnceLock<Option<common::s3::S3Server>> = OnceLock::new();
    SERVER.get_or_init(common::s3::S3Server::start).as_ref()
}

/// Runs `check` against every backend, each on a fresh store.
fn each_backend(name: &str, check: impl Fn(&BlobStore, &std::path::Path)) {
    let dir = tempfile::tempdir().unwrap();
    let local = BlobStore::open(dir.path().join("blobs"), &BlobBackend::Dir, Some(name)).unwrap();
    eprintln!("{name}: dir");
    check(&local, &dir.path().join("blobs"));
    if let Some(server) = s3() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = format!("{name}/");
        let remote = BlobStore::open(
            dir.path().join("blobs"),
            &BlobBackend::S3(server.settings(&prefix)),
            Some(name),
        )
        .unwrap();
        eprintln!("{name}: s3");
        check(&remote, &dir.path().join("blobs"));
    }
}

fn spool_files(root: &std::path::Path) -> usize {
    std::fs::read_dir(root.join("tmp")).map_or(0, |d| d.count())
}

#[test]
fn put_read_and_dedup() {
    each_backend("put", |bs, _| {
        let a = bs.put(b"Corpo del messaggio\r\n").unwrap();
        assert_eq!(a.id, BlobId::of(b"Corpo del messaggio\r\n"));
        assert_eq!(a.size, 21);
        assert_eq!(bs.read(&a.id).unwrap(), b"Corpo del messaggio\r\n");
        let mut streamed = Vec::new();
        bs.open_blob(&a.id)
            .unwrap()
            .read_to_end(&mut streamed)
            .unwrap();
        assert_eq!(streamed, b"Corpo del messaggio\r\n");
        assert!(bs.exists(&a.id).unwrap());
        // The same bytes again: the same blob, still one.
        assert_eq!(bs.put(b"Corpo del messaggio\r\n").unwrap(), a);
        let empty = bs.put(b"").unwrap();
        assert_eq!((empty.size, bs.read(&empty.id).unwrap()), (0, vec![]));
        let listed: BTreeSet<BlobId> = bs.list().unwrap().into_iter().collect();
        assert_eq!(listed, BTreeSet::from([a.id.clone(), empty.id.clone()]));
    });
}

#[test]
fn a_missing_blob_is_reported_as_missing() {
    each_backend("missing", |bs, _| {
        let id = BlobId::of(b"never stored");
        assert!(matches!(bs.read(&id), Err(StoreError::BlobMissing(ref m)) if *m == id));
        assert!(matches!(bs.open_blob(&id), Err(StoreError::BlobMissing(_))));
        assert!(!bs.exists(&id).unwrap());
    });
}

#[test]
fn streamed_writes_small_and_larger_than_a_part() {
    each_backend("stream", |bs, root| {
        let mut w = bs.writer().unwrap();
        w.write_all(b"piccolo").unwrap();
        let small = w.finish().unwrap();
        assert_eq!(small.id, BlobId::of(b"piccolo"));
        // Two full parts and a bit: a multipart upload on S3.
        let big: Vec<u8> = (0..2 * PART_SIZE + 12_345)
            .map(|i| (i % 251) as u8)
            .collect();
        let mut w = bs.writer().unwrap();
        for chunk in big.chunks(65_536) {
            w.write_all(chunk).unwrap();
        }
        let blob = w.finish().unwrap();
        assert_eq!(blob.id, BlobId::of(&big));
        assert_eq!(blob.size, big.len() as u64);
        assert!(bs.read(&blob.id).unwrap() == big, "the big blob reads back");
        // The same from memory (a multipart upload from the slice on S3).
        let from_memory: Vec<u8> = big.iter().rev().copied().collect();
        let b2 = bs.put(&from_memory).unwrap();
        assert_eq!(b2.id, BlobId::of(&from_memory));
        assert!(bs.read(&b2.id).unwrap() == from_memory);
        // Exactly one part, too.
        let one: Vec<u8> = vec![b'x'; PART_SIZE];
        let mut w = bs.writer().unwrap();
        w.write_all(&one).unwrap();
        assert_eq!(w.finish().unwrap().id, BlobId::of(&one));
        assert_eq!(spool_files(root), 0, "nothing left in the spool");
        // An abandoned write leaves nothing behind either.
        let mut w = bs.writer().unwrap();
        w.write_all(b"abandoned").unwrap();
        w.abort();
        assert_eq!(spool_files(root), 0);
        assert!(!bs.exists(&BlobId::of(b"abandoned")).unwrap());
    });
}

#[test]
fn the_sweep_removes_only_old_unreferenced_blobs_and_spool_files() {
    each_backend("sweep", |bs, root| {
        let keep = bs.put(b"referenced").unwrap();
        let drop_ = bs.put(b"unreferenced").unwrap();
        let mut left = bs.writer().unwrap();
        left.write_all(b"a crash mid-write").unwrap();
        left.flush().unwrap();
        assert_eq!(spool_files(root), 1);
        let referenced = |id: &BlobId| Ok(*id == keep.id);
        // Young: everything stays.
        let s = bs.sweep(referenced, Duration::from_secs(3600)).unwrap();
        assert_eq!((s.kept, s.removed, s.removed_tmp), (2, 0, 0));
        // Object stores date objects to the second: let them age past a zero grace.
        std::thread::sleep(Duration::from_millis(1100));
        let s = bs.sweep(referenced, Duration::ZERO).unwrap();
        assert_eq!((s.kept, s.removed, s.removed_tmp), (1, 1, 1));
        assert_eq!(bs.read(&keep.id).unwrap(), b"referenced");
        assert!(!bs.exists(&drop_.id).unwrap());
        drop(left);
    });
}

#[test]
fn a_put_racing_the_sweeps_delete_keeps_the_blob() {
    // The sweep has found the blob old and unreferenced and looks a second time; meanwhile
    // a writer puts the same bytes (and would then commit a reference). Whatever the
    // order, once the put returned the blob must be there.
    each_backend("race", |bs, _| {
        let a = bs.put(b"same body").unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        let bs2 = bs.clone();
        let racer: std::sync::Mutex<Option<std::thread::JoinHandle<_>>> = Default::default();
        let looks = std::sync::atomic::AtomicUsize::new(0);
        let s = bs
            .sweep(
                |id| {
                    if *id == a.id && looks.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 1 {
                        // The second look: the delete comes next. The put's upload lands
                        // before it (half a second is ages on loopback).
                        let bs3 = bs2.clone();
                        *racer.lock().unwrap() =
                            Some(std::thread::spawn(move || bs3.put(b"same body")));
                        std::thread::sleep(Duration::from_millis(500));
                    }
                    Ok(false)
                },
                Duration::ZERO,
            )
            .unwrap();
        let put = racer.lock().unwrap().take();
        if let Some(put) = put {
            assert_eq!(put.join().unwrap().unwrap(), a);
        }
        assert!(looks.into_inner() >= 1);
        assert!(s.kept + s.removed == 1, "{s:?}");
        assert_eq!(
            bs.read(&a.id).unwrap(),
            b"same body",
            "the racing put's blob survived the sweep"
        );
    });
}

/// A loopback TCP proxy to `upstream` that holds every answer for `delay` while `slow` is
/// set (the requests go through at once): an upload applied by the store but not yet
/// answered, for as long as the test needs.
fn slow_answers_proxy(
    upstream: u16,
    slow: Arc<std::sync::atomic::AtomicBool>,
    delay: Duration,
) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", upstream)) else {
                continue;
            };
            let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c_in, &mut s_out);
                let _ = s_out.shutdown(std::net::Shutdown::Write);
            });
            let (mut s_in, mut c_out) = (server, client);
            let slow = slow.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                loop {
                    let n = match s_in.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if slow.load(std::sync::atomic::Ordering::SeqCst) {
                        std::thread::sleep(delay);
                    }
                    if c_out.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = c_out.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    port
}

#[test]
fn a_sweep_keeps_a_blob_whose_upload_is_still_unanswered() {
    // The other interleaving of the race: the store has applied a put's upload but its
    // answer is still on the way when the sweep looks at the (old, unreferenced) blob.
    // Deleting it then would lose it, and the put would return Ok right after.
    let Some(server) = s3() else { return };
    let slow = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let proxy = slow_answers_proxy(server.port, slow.clone(), Duration::from_millis(1500));
    let mut settings = server.settings("unanswered/");
    settings.endpoint = format!("http://127.0.0.1:{proxy}");
    let dir = tempfile::tempdir().unwrap();
    let bs = BlobStore::open(dir.path().join("b"), &BlobBackend::S3(settings), Some("u")).unwrap();
    let a = bs.put(b"risposta lenta").unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    slow.store(true, std::sync::atomic::Ordering::SeqCst);
    let racer = {
        let bs = bs.clone();
        std::thread::spawn(move || bs.put(b"risposta lenta"))
    };
    // The upload is applied at once; its answer waits in the proxy.
    std::thread::sleep(Duration::from_millis(300));
    slow.store(false, std::sync::atomic::Ordering::SeqCst);
    let s = bs.sweep(|_| Ok(false), Duration::ZERO).unwrap();
    assert_eq!(racer.join().unwrap().unwrap(), a);
    assert_eq!((s.kept, s.removed), (1, 0), "{s:?}");
    assert_eq!(bs.read(&a.id).unwrap(), b"risposta lenta");
}

#[test]
fn concurrent_puts_of_the_same_and_of_different_bodies() {
    each_backend("concurrent", |bs, _| {
        let bs = Arc::new(bs.clone());
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let bs = bs.clone();
                std::thread::spawn(move || {
                    let same = bs.put(b"one body for all").unwrap();
                    let own = bs.put(format!("body {i}").as_bytes()).unwrap();
                    (same, own)
                })
            })
            .collect();
        let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        for (i, (same, own)) in results.iter().enumerate() {
            assert_eq!(same.id, BlobId::of(b"one body for all"));
            assert_eq!(bs.read(&own.id).unwrap(), format!("body {i}").as_bytes());
        }
        assert_eq!(bs.list().unwrap().len(), 9);
    });
}

#[test]
fn the_s3_backend_refuses_wrong_credentials_and_an_unknown_bucket_at_open() {
    let Some(server) = s3() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut wrong = server.settings("x/");
    wrong.credentials = pecd::store::blobs::s3::S3Credentials::new(
        "pecdtestaccess".into(),
        "not-the-secret".into(),
    );
    let e = BlobStore::open(dir.path().join("b"), &BlobBackend::S3(wrong), Some("t")).unwrap_err();
    let text = e.to_string();
    assert!(text.contains("HTTP 403"), "{text}");
    assert!(
        !text.contains("not-the-secret") && !text.contains("Signature"),
        "{text}"
    );
    let mut unknown = server.settings("x/");
    unknown.bucket = "no-such-bucket".into();
    let e =
        BlobStore::open(dir.path().join("b"), &BlobBackend::S3(unknown), Some("t")).unwrap_err();
    assert!(e.to_string().contains("HTTP 404"), "{e}");
    // Nothing listens: a transport error naming the operation, not a panic.
    let mut closed = server.settings("x/");
    closed.endpoint = format!("http://127.0.0.1:{}", common::s3::S3Server::unused_port());
    let e = BlobStore::open(dir.path().join("b"), &BlobBackend::S3(closed), Some("t")).unwrap_err();
    assert!(
        e.to_string().starts_with("object store: open bucket"),
        "{e}"
    );
}

#[test]
fn the_s3_backend_speaks_tls_and_checks_the_certificate() {
    let Some(server) = s3() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut tls = server.settings("tls/");
    tls.endpoint = server.https_endpoint();
    // Not signed by a CA the system or the configuration trusts: refused.
    let e = BlobStore::open(
        dir.path().join("b"),
        &BlobBackend::S3(tls.clone()),
        Some("t"),
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("open bucket") && e.to_string().contains("UnknownIssuer"),
        "{e}"
    );
    assert!(!e.to_string().contains(common::s3::SECRET_KEY));
    // With the store's CA in ca_file: a round trip over TLS.
    tls.ca_file = Some(server.ca_path());
    let bs = BlobStore::open(dir.path().join("b"), &BlobBackend::S3(tls), Some("t")).unwrap();
    let a = bs.put(b"su TLS").unwrap();
    assert_eq!(bs.read(&a.id).unwrap(), b"su TLS");
}

#[test]
fn a_prefix_belongs_to_one_store() {
    let Some(server) = s3() else { return };
    let dir = tempfile::tempdir().unwrap();
    let backend = BlobBackend::S3(server.settings("claimed/"));
    let first = BlobStore::open(dir.path().join("a"), &backend, Some("store-one")).unwrap();
    first.put(b"of the first store").unwrap();
    // The same store again: fine. Another store: refused, before its sweep could delete
    // what the first refers to.
    BlobStore::open(dir.path().join("a"), &backend, Some("store-one")).unwrap();
    let e = BlobStore::open(dir.path().join("b"), &backend, Some("store-two")).unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("another pecd store") && text.contains("store-one"),
        "{text}"
    );
    // Another prefix of the same bucket is its own.
    BlobStore::open(
        dir.path().join("b"),
        &BlobBackend::S3(server.settings("claimed-too/")),
        Some("store-two"),
    )
    .unwrap();
}

#[test]
fn a_body_changed_in_the_bucket_is_refused_not_served() {
    let Some(server) = s3() else { return };
    let dir = tempfile::tempdir().unwrap();
    let bs = BlobStore::open(
        dir.path().join("b"),
        &BlobBackend::S3(server.settings("tamper/")),
        Some("t"),
    )
    .unwrap();
    let a = bs.put(b"Corpo originale").unwrap();
    server.put_raw(&format!("tamper/{}", a.id), b"Corpo alterato!");
    let e = bs.read(&a.id).unwrap_err();
    assert!(e.to_string().contains("does not hash to its name"), "{e}");
    let mut streamed = Vec::new();
    let e = bs
        .open_blob(&a.id)
        .unwrap()
        .read_to_end(&mut streamed)
        .unwrap_err();
    assert!(e.to_string().contains("does not hash to its name"), "{e}");
}

/// A provider whose `[blobs]` are in the bucket under `prefix`.
fn provider_on_s3(
    server: &common::s3::S3Server,
    domain: &str,
    prefix: &str,
) -> common::server::Server {
    let a = format!("mittente@{domain}");
    let b = format!("destinatario@{domain}");
    let s = common::server::Server::new(domain, &[(a.as_str(), "pw"), (b.as_str(), "pw")]);
    let section = server.config_section(s.dir.path(), prefix);
    s.edit_config(|text| {
        assert!(text.contains("[blobs]\nbackend = \"dir\"\n"), "{text}");
        text.replace("[blobs]\nbackend = \"dir\"\n", &section)
    });
    s
}

#[test]
fn a_provider_keeps_its_message_bodies_in_the_bucket() {
    let Some(server) = s3() else { return };
    if !common::have("python3", "smtplib and imaplib clients") {
        return;
    }
    let domain = "pec.oggetti.test";
    let mut s = provider_on_s3(server, domain, "provider/");
    s.enable(&["imaps"]);
    s.start();
    let a = format!("mittente@{domain}");
    let b = format!("destinatario@{domain}");
    // Submitted over SMTPS, read over IMAP: envelope at b, receipts at a.
    let r = s.imap("pec", &[&a, "pw", &b, "pw"]);
    assert!(r["size"].as_u64().unwrap() > 1000, "{r}");
    assert!(r["partial_ok"].as_bool().unwrap(), "{r}");
    assert!(
        r["ref"].as_str().is_some(),
        "the acceptance receipt at a: {r}"
    );
    // Every body is an object of the bucket (acceptance receipt, envelope, delivery
    // receipt...), none a local file.
    let view = BlobStore::open(
        tempfile::tempdir().unwrap().path().join("b"),
        &BlobBackend::S3(server.settings("provider/")),
        None,
    )
    .unwrap();
    let objects = view.list().unwrap();
    assert!(objects.len() >= 3, "{objects:?}");
    for id in &objects {
        let bytes = view.read(id).unwrap();
        assert_eq!(
            BlobId::of(&bytes),
            *id,
            "an object's name is its content's hash"
        );
    }
    assert_eq!(common::server::local_blob_files(&s.data_dir()), 0);
    s.stop();
}

#[test]
fn an_object_store_outage_gets_a_temporary_failure_and_loses_nothing() {
    if s3().is_none() {
        return;
    }
    // A server of its own: this test stops it.
    let mut server = common::s3::S3Server::start().unwrap();
    let domain = "pec.guasto.test";
    let mut s = provider_on_s3(&server, domain, "");
    s.start();
    let a = format!("mittente@{domain}");
    let b = format!("destinatario@{domain}");
    let msg = |n: u32| {
        format!(
            "From: <{a}>\r\nTo: <{b}>\r\nSubject: Prova {n}\r\nMessage-ID: <guasto-{n}@mua.test>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0100\r\n\r\nCiao.\r\n"
        )
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let send = |n: u32| {
        rt.block_on(common::smtp::submit(
            s.addr("smtps"),
            &s.ca(),
            &a,
            "pw",
            &[&b],
            msg(n).as_bytes(),
        ))
    };
    let counts = || {
        (
            s.mailbox_json(&a)["messages"].as_u64().unwrap(),
            s.mailbox_json(&b)["messages"].as_u64().unwrap(),
        )
    };
    let wait_for = |want: (u64, u64)| {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while counts() != want {
            assert!(std::time::Instant::now() < deadline, "{:?}", counts());
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    assert_eq!(send(1).0, 250);
    // Delivered (envelope at b, acceptance and delivery receipts at a) before the outage.
    wait_for((2, 1));
    server.kill();
    let (code, text) = send(2);
    assert!(
        code == 451 && text.contains("Temporary failure"),
        "during the outage: {code} {text}"
    );
    // The client learns it may retry, not the store's internals.
    assert!(
        !text.contains("object store") && !text.contains("127.0.0.1"),
        "{text}"
    );
    // The operator sees it: not ready, the object store down.
    let (code, body) = common::admin_get(s.addr("admin"), "/readyz");
    assert!(
        code == 503 && body.contains("object store"),
        "{code} {body}"
    );
    let (_, metrics) = common::admin_get(s.addr("admin"), "/metrics");
    assert!(
        metrics.contains("pecd_dependency_up{name=\"s3\"} 0"),
        "{metrics}"
    );
    server.restart();
    let (code, body) = common::admin_get(s.addr("admin"), "/readyz");
    assert_eq!(code, 200, "{body}");
    let (_, metrics) = common::admin_get(s.addr("admin"), "/metrics");
    assert!(metrics.contains("pecd_dependency_up{name=\"s3\"} 1"));
    assert_eq!(send(3).0, 250, "after the outage");
    // What got a 250 is all there, once: messages 1 and 3 (at b their envelopes, at a
    // their acceptance and delivery receipts), nothing of message 2.
    wait_for((4, 2));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(counts(), (4, 2));
    s.stop();
}

#[test]
fn a_store_migrates_its_bodies_to_the_bucket_and_back() {
    let Some(server) = s3() else { return };
    if !common::have("python3", "smtplib and imaplib clients") {
        return;
    }
    let domain = "pec.trasloco.test";
    let a = format!("mittente@{domain}");
    let b = format!("destinatario@{domain}");
    let mut s = common::server::Server::new(domain, &[(a.as_str(), "pw"), (b.as_str(), "pw")]);
    s.enable(&["imaps"]);
    // The two configurations: the one in use (dir) and the S3 one, side by side.
    let on_dir = std::fs::read_to_string(s.config()).unwrap();
    let section = server.config_section(s.dir.path(), "trasloco/");
    let on_s3 = on_dir.replace("[blobs]\nbackend = \"dir\"\n", &section);
    let s3_config = s.dir.path().join("pecd-s3.toml");
    let dir_config = s.dir.path().join("pecd-dir.toml");
    std::fs::write(&s3_config, &on_s3).unwrap();
    std::fs::write(&dir_config, &on_dir).unwrap();
    s.start();
    let sent = s.imap("pec", &[&a, "pw", &b, "pw"]);
    let digests = |s: &common::server::Server| {
        let at_a = s.imap("digests", &[&a, "pw"])["sha256"].clone();
        let at_b = s.imap("digests", &[&b, "pw"])["sha256"].clone();
        (at_a, at_b)
    };
    // Wait for the delivery receipt at a, then take what both mailboxes hold.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while s.mailbox_json(&a)["messages"].as_u64() != Some(2) {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(100));
    }
    let before = digests(&s);
    assert_eq!(before.1[0], sent["sha256"], "{before:?}");
    assert_eq!(before.0.as_array().unwrap().len(), 2);
    s.stop();

    let migrate =
        |from: &std::path::Path, to: &std::path::Path| common::server::migrate(from, to, &[]);
    // dir → s3, then the local files go: the server on S3 serves the same bytes.
    let r = migrate(&dir_config, &s3_config);
    let n = r["referenced"].as_u64().unwrap();
    assert!(n >= 4, "{r}");
    assert_eq!(
        (r["copied"].as_u64(), r["present"].as_u64()),
        (Some(n), Some(0))
    );
    // Run again: nothing to copy, everything checked.
    let again = migrate(&dir_config, &s3_config);
    assert_eq!(
        (again["copied"].as_u64(), again["present"].as_u64()),
        (Some(0), Some(n))
    );
    let blobs = s.data_dir().join("blobs");
    for e in std::fs::read_dir(&blobs).unwrap().flatten() {
        if e.file_name().len() == 2 {
            std::fs::remove_dir_all(e.path()).unwrap();
        }
    }
    std::fs::copy(&s3_config, s.config()).unwrap();
    s.start();
    assert_eq!(digests(&s), before, "served from the bucket");
    s.stop();
    // s3 → dir: the files come back, checked; the server on dir serves the same bytes.
    let r = migrate(&s3_config, &dir_config);
    assert_eq!(
        (r["copied"].as_u64(), r["present"].as_u64()),
        (Some(n), Some(0))
    );
    assert_eq!(common::server::local_blob_files(&s.data_dir()) as u64, n);
    std::fs::copy(&dir_config, s.config()).unwrap();
    s.start();
    assert_eq!(digests(&s), before, "served from the directory again");
    s.stop();
    // Credentials from the environment instead of a file (and none at all: refused, naming
    // what to set).
    let env_config = s.dir.path().join("pecd-env.toml");
    std::fs::write(
        &env_config,
        on_s3.replace(
            &format!(
                "credentials_file = \"{}\"\n",
                s.dir.path().join("s3-credentials.toml").display()
            ),
            "",
        ),
    )
    .unwrap();
    let run = |with_env: bool| {
        let mut cmd = std::process::Command::new(common::server::BIN);
        cmd.args(["store", "migrate", "--json", "--config"])
            .arg(&dir_config)
            .arg("--to")
            .arg(&env_config)
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY");
        if with_env {
            cmd.env("PECD_S3_ACCESS_KEY_ID", common::s3::ACCESS_KEY)
                .env("PECD_S3_SECRET_ACCESS_KEY", common::s3::SECRET_KEY);
        } else {
            cmd.env_remove("PECD_S3_ACCESS_KEY_ID")
                .env_remove("PECD_S3_SECRET_ACCESS_KEY");
        }
        cmd.output().unwrap()
    };
    let out = run(true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["present"].as_u64(), Some(n), "{r}");
    let out = run(false);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("blobs.credentials_file") && err.contains("PECD_S3_ACCESS_KEY_ID"),
        "{err}"
    );
    // Refusals name the problem.
    let out = common::server::pecd(&[
        "store",
        "migrate",
        "--config",
        dir_config.to_str().unwrap(),
        "--to",
        dir_config.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to migrate"));
}
