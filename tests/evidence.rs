//! The evidence bundle end to end: a real `pecd serve` child, a PEC sent over SMTPS from a
//! to b (To) and c (Cc), delivered with receipts; then `pecd evidence` through the running
//! server's control socket, checked by `pecd evidence verify`, by `openssl cms -verify`
//! and `pecd verify` as the README inside says, tampered entry by entry, and restricted to
//! one mailbox.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use common::server::{Server, pecd};
use pecd::evidence::container::{self, Entry};
use pecd::trace::{EventKind, TraceRecord, sha256_hex};

const DOMAIN: &str = "pec.alfa.test";
const A: &str = "a@pec.alfa.test";
const B: &str = "b@pec.alfa.test";
const C: &str = "c@pec.alfa.test";
const D: &str = "d@pec.alfa.test";

fn have_tools() -> bool {
    let py = std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_ok();
    if !py {
        common::skip("python3 is not installed");
    }
    py && common::have("openssl", "independent CMS check")
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn run(srv: &Server, args: &[&str]) -> Output {
    let cfg = srv.config();
    let mut a = args.to_vec();
    a.extend(["--config", cfg.to_str().unwrap()]);
    pecd(&a)
}

fn records(srv: &Server, ident: &str) -> Vec<TraceRecord> {
    let out = run(srv, &["log", "--json", "--id", ident]);
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The identificativo of the message a sent, once both delivery receipts are recorded.
fn wait_delivered(srv: &Server) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = run(srv, &["log", "--json", "--mailbox", A]);
        let all: Vec<TraceRecord> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if let Some(ident) = all
            .iter()
            .find(|r| r.kind == EventKind::SubmissionAccepted)
            .and_then(|r| r.ident.clone())
        {
            let rs = records(srv, &ident);
            let receipts = rs
                .iter()
                .filter(|r| r.kind == EventKind::DeliveryReceiptSent)
                .count();
            if receipts == 2 {
                return ident;
            }
        }
        assert!(Instant::now() < deadline, "the message was not delivered");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn verify(srv: &Server, zip: &Path) -> Output {
    let cert = srv.dir.path().join("certs/signing.pem");
    run(
        srv,
        &[
            "evidence",
            "verify",
            zip.to_str().unwrap(),
            "--cert",
            cert.to_str().unwrap(),
        ],
    )
}

/// `openssl cms -verify` of a detached DER signature over `content`, against `ca`.
fn openssl_detached(dir: &Path, content: &[u8], sig: &[u8], ca: &Path) -> (bool, String) {
    let c = dir.join("content");
    let s = dir.join("sig.p7s");
    std::fs::write(&c, content).unwrap();
    std::fs::write(&s, sig).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["cms", "-verify", "-binary", "-inform", "DER", "-in"])
        .arg(&s)
        .arg("-content")
        .arg(&c)
        .arg("-CAfile")
        .arg(ca)
        .args(["-out", "/dev/null"])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn entry<'a>(entries: &'a [Entry], path: &str) -> &'a Entry {
    entries
        .iter()
        .find(|e| e.path == path)
        .unwrap_or_else(|| panic!("no {path} in the bundle"))
}

#[test]
fn evidence_bundle_by_cli_while_the_server_runs() {
    if !have_tools() {
        return;
    }
    let mut srv = Server::new(
        DOMAIN,
        &[(A, "pw-a"), (B, "pw-b"), (C, "pw-c"), (D, "pw-d")],
    );
    srv.start();
    let r = srv.smtp("send", &[A, "pw-a", B, C, "Prova evidenza", "-"]);
    assert_eq!(r["refused"].as_array().unwrap().len(), 0, "{r}");
    let ident = wait_delivered(&srv);
    let work = tempfile::tempdir().unwrap();

    // The whole provider's bundle, made by the running server.
    let zip_path = work.path().join("all.zip");
    let out = run(
        &srv,
        &[
            "evidence",
            "--id",
            &ident,
            "--out",
            zip_path.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let zip = std::fs::read(&zip_path).unwrap();
    let entries = container::read(&zip).unwrap();
    let log = records(&srv, &ident);

    // Each message file is the exact bytes a trace record names by SHA-256.
    let mut kinds = Vec::new();
    let files: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.path.starts_with("messages/"))
        .collect();
    for e in &files {
        let h = sha256_hex(&e.bytes);
        let named: Vec<EventKind> = log
            .iter()
            .filter(|r| r.sha256.as_deref() == Some(h.as_str()))
            .map(|r| r.kind)
            .collect();
        assert!(!named.is_empty(), "{}: no trace record names {h}", e.path);
        kinds.extend(named);
    }
    for k in [
        EventKind::AcceptanceSent,
        EventKind::EnvelopeCreated,
        EventKind::Delivered,
        EventKind::TakeChargeSent,
        EventKind::DeliveryReceiptSent,
    ] {
        assert!(kinds.contains(&k), "no {k:?} message in {kinds:?}");
    }
    // The acceptance, the envelope (one file for both recipients), the take-charge
    // receipt, b's and c's delivery receipts.
    assert_eq!(files.len(), 5, "{kinds:?}");
    // The trace lines are the log's own, byte for byte.
    let lines = String::from_utf8(entry(&entries, "trace/records.jsonl").bytes.clone()).unwrap();
    assert_eq!(lines.lines().count(), log.len());
    for (line, r) in lines.lines().zip(&log) {
        let mut expected = b"{\"type\":\"record\",".to_vec();
        expected.extend_from_slice(&serde_json::to_vec(r).unwrap()[1..]);
        assert_eq!(line.as_bytes(), expected, "seq {}", r.seq);
    }

    let ok = verify(&srv, &zip_path);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    eprintln!("pecd evidence verify: {}", text(&ok));
    assert!(
        String::from_utf8_lossy(&ok.stdout).starts_with("intact"),
        "{}",
        text(&ok)
    );
    // pecd log verify on a bundle does the same check.
    let cert = srv.dir.path().join("certs/signing.pem");
    let lv = run(
        &srv,
        &[
            "log",
            "verify",
            zip_path.to_str().unwrap(),
            "--cert",
            cert.to_str().unwrap(),
        ],
    );
    assert_eq!(lv.status.code(), Some(0), "{}", text(&lv));

    // The README's manual steps work: openssl on the statement, the checkpoint and each
    // message, and pecd verify on each message.
    let readme = String::from_utf8_lossy(&entry(&entries, "README.txt").bytes).into_owned();
    assert!(
        readme.contains(&ident) && readme.contains("openssl cms -verify"),
        "{readme}"
    );
    let ca = srv.ca();
    let (ok, err) = openssl_detached(
        work.path(),
        &entry(&entries, "statement.json").bytes,
        &entry(&entries, "statement.json.p7s").bytes,
        &ca,
    );
    assert!(ok, "statement: {err}");
    let (ok, err) = openssl_detached(
        work.path(),
        &entry(&entries, "trace/checkpoint.txt").bytes,
        &entry(&entries, "trace/checkpoint.p7s").bytes,
        &ca,
    );
    assert!(ok, "checkpoint: {err}");
    for e in entries.iter().filter(|e| e.path.starts_with("messages/")) {
        let (ok, err) = common::openssl_verify(&e.bytes, &ca);
        assert!(ok, "{}: {err}", e.path);
        let f = work.path().join("m.eml");
        std::fs::write(&f, &e.bytes).unwrap();
        let v = pecd(&["verify", f.to_str().unwrap(), "--ca", ca.to_str().unwrap()]);
        assert_eq!(v.status.code(), Some(0), "{}: {}", e.path, text(&v));
    }

    // One byte changed in the file, inside each kind of entry: exit 1 naming it.
    let message = entries
        .iter()
        .find(|e| e.path.ends_with("-DeliveryReceiptSent.eml"))
        .unwrap()
        .path
        .clone();
    for path in [
        message.as_str(),
        "trace/records.jsonl",
        "trace/checkpoint.jsonl",
        "statement.json.p7s",
    ] {
        let content = &entry(&entries, path).bytes;
        let at = zip
            .windows(content.len())
            .position(|w| w == content.as_slice())
            .unwrap();
        let mut bad = zip.clone();
        bad[at + content.len() / 2] ^= 0x01;
        let f = work.path().join("bad.zip");
        std::fs::write(&f, &bad).unwrap();
        let out = verify(&srv, &f);
        assert_eq!(out.status.code(), Some(1), "{path}: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(&format!("TAMPERED: {path}:")),
            "{path}: {}",
            text(&out)
        );
        // The same change in a re-made zip (valid CRCs): still caught, still named.
        let remade = container::write(
            &entries
                .iter()
                .map(|e| {
                    let mut e = e.clone();
                    if e.path == path {
                        let i = e.bytes.len() / 2;
                        e.bytes[i] ^= 0x01;
                    }
                    e
                })
                .collect::<Vec<_>>(),
        )
        .unwrap();
        std::fs::write(&f, &remade).unwrap();
        let out = verify(&srv, &f);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{path} re-zipped: {}",
            text(&out)
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(&format!("TAMPERED: {path}:")),
            "{path} re-zipped: {}",
            text(&out)
        );
    }
    // Not a zip at all: exit 2.
    let f = work.path().join("junk.zip");
    std::fs::write(&f, b"junk").unwrap();
    assert_eq!(verify(&srv, &f).status.code(), Some(2));

    // b's own bundle: nothing that concerns only c.
    let b_path = work.path().join("b.zip");
    let out = run(
        &srv,
        &[
            "evidence",
            "--id",
            &ident,
            "--out",
            b_path.to_str().unwrap(),
            "--mailbox",
            B,
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let ok = verify(&srv, &b_path);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    let b_entries = container::read(&std::fs::read(&b_path).unwrap()).unwrap();
    let only_c: Vec<&TraceRecord> = log
        .iter()
        .filter(|r| r.mailbox_keys() == vec![A.to_string(), C.to_string()])
        .collect();
    assert!(!only_c.is_empty(), "c's delivery records");
    let b_lines =
        String::from_utf8(entry(&b_entries, "trace/records.jsonl").bytes.clone()).unwrap();
    for r in &only_c {
        assert!(
            !b_lines.contains(&r.hash),
            "c's record seq {} in b's bundle",
            r.seq
        );
    }
    for line in b_lines.lines() {
        assert!(line.contains(B), "a record not naming b: {line}");
    }
    let c_receipt = only_c
        .iter()
        .find(|r| r.kind == EventKind::DeliveryReceiptSent)
        .and_then(|r| r.sha256.clone())
        .unwrap();
    for e in &b_entries {
        assert_ne!(
            sha256_hex(&e.bytes),
            c_receipt,
            "c's receipt in b's bundle: {}",
            e.path
        );
    }
    assert!(
        b_entries
            .iter()
            .any(|e| e.path.ends_with("-DeliveryReceiptSent.eml")),
        "b's own receipt"
    );
    // A mailbox the message does not concern gets nothing (as if it did not exist).
    let out = run(
        &srv,
        &[
            "evidence",
            "--id",
            &ident,
            "--out",
            work.path().join("d.zip").to_str().unwrap(),
            "--mailbox",
            D,
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no trace record"),
        "{}",
        text(&out)
    );
    assert!(!work.path().join("d.zip").exists());
    srv.stop();

    // With the server stopped, the CLI opens the store and signs with the configured key.
    let closed = work.path().join("closed.zip");
    let out = run(
        &srv,
        &[
            "evidence",
            "--id",
            &ident,
            "--out",
            closed.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let ok = verify(&srv, &closed);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
}
