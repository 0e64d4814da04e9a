//! Unit tests of the bundle: build from a real store (test signer), check, and tamper.

use super::container::{self, Entry};
use super::*;
use crate::pec::address::PecAddress;
use crate::store::Batch;
use crate::trace::TraceEvent;
use crate::trace::checkpoint::TrustedSigners;
use crate::trace::sha256_hex;
use crate::trace::walk::tests::{store, t0};

const IDENT: &str = "opec.42@pec.alfa.test";

fn addr(s: &str) -> PecAddress {
    PecAddress::parse(s).unwrap()
}

/// A store with one message from a to b (and c), its receipts, and an unrelated
/// message from x to y in between.
fn sample(dir: &std::path::Path) -> (Store, String) {
    let (s, me) = store(dir);
    let env = s.blobs().put(b"envelope for b and c\r\n").unwrap();
    let acc = s.blobs().put(b"acceptance receipt for a\r\n").unwrap();
    let rc_b = s.blobs().put(b"delivery receipt for b\r\n").unwrap();
    let rc_c = s.blobs().put(b"delivery receipt for c\r\n").unwrap();
    let other = s.blobs().put(b"someone else's mail\r\n").unwrap();
    let ev = |kind, sha: Option<&str>, rcpts: &[&str]| {
        let mut e = TraceEvent::new(kind, t0())
            .ident(IDENT)
            .sender("a@pec.alfa.test")
            .subject("Prova");
        e.recipients = rcpts.iter().map(|r| r.to_string()).collect();
        e.sha256 = sha.map(str::to_string);
        e
    };
    let b = Batch::new()
        .trace(ev(
            EventKind::SubmissionAccepted,
            Some(&"0".repeat(64)),
            &["b@pec.alfa.test", "c@pec.alfa.test"],
        ))
        .trace(ev(
            EventKind::AcceptanceSent,
            Some(acc.id.as_str()),
            &["b@pec.alfa.test", "c@pec.alfa.test"],
        ))
        .trace(
            TraceEvent::new(EventKind::Delivered, t0())
                .ident("opec.other@pec.alfa.test")
                .sender("x@pec.alfa.test")
                .recipient("y@pec.alfa.test")
                .message_bytes(b"someone else's mail\r\n"),
        )
        .trace(ev(
            EventKind::Delivered,
            Some(env.id.as_str()),
            &["b@pec.alfa.test"],
        ))
        .trace(ev(
            EventKind::DeliveryReceiptSent,
            Some(rc_b.id.as_str()),
            &["b@pec.alfa.test"],
        ))
        .trace(ev(
            EventKind::Delivered,
            Some(env.id.as_str()),
            &["c@pec.alfa.test"],
        ))
        .trace(ev(
            EventKind::DeliveryReceiptSent,
            Some(rc_c.id.as_str()),
            &["c@pec.alfa.test"],
        ));
    s.commit(b).unwrap();
    let _ = other;
    (s, me)
}

fn trusted(me: &str) -> TrustedSigners {
    TrustedSigners::pinned([me.to_string()])
}

fn names(zip: &[u8]) -> Vec<String> {
    container::read(zip)
        .unwrap()
        .into_iter()
        .map(|e| e.path)
        .collect()
}

fn rezip(zip: &[u8], f: impl Fn(&mut Vec<Entry>)) -> Vec<u8> {
    let mut e = container::read(zip).unwrap();
    f(&mut e);
    container::write(&e).unwrap()
}

#[test]
fn a_provider_bundle_holds_every_record_and_stored_message_and_checks() {
    let dir = tempfile::tempdir().unwrap();
    let (s, me) = sample(dir.path());
    let b = build(&s, IDENT, &Scope::Provider).unwrap();
    assert_eq!((b.records, b.messages, b.missing), (6, 4, 1));
    assert_eq!(b.file_name, "evidence-opec.42_pec.alfa.test.zip");
    let n = names(&b.zip);
    assert_eq!(&n[..3], [README, STATEMENT, STATEMENT_SIG]);
    assert!(
        n.contains(&"messages/00000002-AcceptanceSent.eml".to_string()),
        "{n:?}"
    );
    assert!(
        !n.iter().any(|p| p.contains("00000003")),
        "the unrelated record's message"
    );
    // The envelope delivered to b and to c is one file.
    assert_eq!(
        n.iter().filter(|p| p.ends_with("-Delivered.eml")).count(),
        1
    );
    let r = check(&b.zip, &trusted(&me)).unwrap();
    assert!(r.intact(), "{:?}", r.problem);
    assert_eq!((r.records, r.messages, r.missing), (6, 4, 1));
    // No checkpoint existed: one was made, covering the newest record.
    let cp = r.checkpoint.unwrap();
    assert!(cp.0 >= 7, "{cp:?}");
    let entries = container::read(&b.zip).unwrap();
    let records = &entries.iter().find(|e| e.path == RECORDS).unwrap().bytes;
    let records = String::from_utf8_lossy(records);
    assert_eq!(records.lines().count(), 6);
    assert!(records.contains("c@pec.alfa.test"));
    assert!(
        !records.contains("x@pec.alfa.test"),
        "another message's record leaked"
    );
}

#[test]
fn a_mailbox_bundle_holds_only_what_names_the_mailbox() {
    let dir = tempfile::tempdir().unwrap();
    let (s, me) = sample(dir.path());
    let b = build(&s, IDENT, &Scope::Mailbox(addr("B@pec.alfa.test"))).unwrap();
    let zip = container::read(&b.zip).unwrap();
    let all: Vec<u8> = zip.iter().flat_map(|e| e.bytes.clone()).collect();
    let all = String::from_utf8_lossy(&all);
    assert!(
        !all.contains("delivery receipt for c"),
        "c's receipt leaked to b"
    );
    assert!(all.contains("delivery receipt for b"));
    let records = &zip.iter().find(|e| e.path == RECORDS).unwrap().bytes;
    let records = String::from_utf8_lossy(records);
    for line in records.lines() {
        assert!(line.contains("b@pec.alfa.test"), "{line}");
    }
    let r = check(&b.zip, &trusted(&me)).unwrap();
    assert!(r.intact(), "{:?}", r.problem);
    assert_eq!(r.mailbox.as_deref(), Some("b@pec.alfa.test"));
    // Records: submission, acceptance (both list b), delivered+receipt for b.
    assert_eq!(r.records, 4);

    // Another mailbox gets nothing about this message, as if it did not exist.
    let err = build(&s, IDENT, &Scope::Mailbox(addr("y@pec.alfa.test"))).unwrap_err();
    assert!(matches!(err, EvidenceError::NotFound(_)), "{err}");
    let err = build(&s, "opec.none@x", &Scope::Provider).unwrap_err();
    assert!(matches!(err, EvidenceError::NotFound(_)), "{err}");
}

#[test]
fn bad_identificativi_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = sample(dir.path());
    for bad in ["", "  ", "a b", "a\nb", &"x".repeat(MAX_IDENT_BYTES + 1)] {
        let err = build(&s, bad, &Scope::Provider).unwrap_err();
        assert!(
            matches!(err, EvidenceError::BadIdentificativo(_)),
            "{bad:?}: {err}"
        );
    }
}

#[test]
fn a_store_without_signer_cannot_issue_a_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), crate::store::StoreOptions::default()).unwrap();
    let err = build(&s, IDENT, &Scope::Provider).unwrap_err();
    assert!(matches!(err, EvidenceError::NoSigner), "{err}");
}

#[test]
fn every_kind_of_change_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (s, me) = sample(dir.path());
    let zip = build(&s, IDENT, &Scope::Provider).unwrap().zip;
    let t = trusted(&me);
    let flip_in = |path: &str| {
        rezip(&zip, |e| {
            let f = e.iter_mut().find(|f| f.path == path).unwrap();
            let i = f.bytes.len() / 2;
            f.bytes[i] ^= 0x01;
        })
    };
    let msg = names(&zip)
        .into_iter()
        .find(|p| p.ends_with("-DeliveryReceiptSent.eml"))
        .unwrap();
    for path in [
        README,
        STATEMENT,
        STATEMENT_SIG,
        SIGNER_PEM,
        RECORDS,
        CHECKPOINT_LINE,
        CHECKPOINT_TEXT,
        CHECKPOINT_SIG,
        msg.as_str(),
    ] {
        let r = check(&flip_in(path), &t).unwrap();
        let p = r
            .problem
            .unwrap_or_else(|| panic!("a change in {path} went unnoticed"));
        // A changed statement may still parse, and then its signature is what fails.
        let ok = p.entry == path || (path == STATEMENT && p.entry == STATEMENT_SIG);
        assert!(ok, "{path}: {p}");
    }
    // A file added or removed.
    let added = rezip(&zip, |e| {
        e.push(Entry {
            path: "messages/extra.eml".into(),
            bytes: b"x".to_vec(),
        })
    });
    let p = check(&added, &t).unwrap().problem.unwrap();
    assert_eq!(p.entry, "messages/extra.eml", "{p}");
    let removed = rezip(&zip, |e| e.retain(|f| f.path != msg));
    let p = check(&removed, &t).unwrap().problem.unwrap();
    assert_eq!(p.entry, msg, "{p}");
    // Every single byte of the file, flipped in place: never intact.
    for i in (0..zip.len()).step_by(7) {
        let mut bad = zip.clone();
        bad[i] ^= 0x20;
        if let Ok(r) = check(&bad, &t) {
            assert!(!r.intact(), "byte {i} of {} changed unnoticed", zip.len());
        }
    }
    // Another provider's key, even if the bundle is otherwise self-consistent.
    let other = TrustedSigners::pinned(["00".repeat(32)]);
    let p = check(&zip, &other).unwrap().problem.unwrap();
    assert_eq!(p.entry, STATEMENT_SIG, "{p}");
    assert!(matches!(
        check(b"not a zip", &t),
        Err(CheckError::NotZip(_))
    ));
}

/// Re-signs a bundle after `f` changed its entries (as only the key holder could): the
/// checker's consistency rules beyond the signature still catch a false statement.
fn resigned(s: &Store, zip: &[u8], f: impl Fn(&mut Vec<Entry>)) -> Vec<u8> {
    let mut e = container::read(zip).unwrap();
    f(&mut e);
    let signer = s.options().signer.clone().unwrap();
    let mut st = Statement::parse(&e[1].bytes).unwrap();
    for file in &mut st.files {
        let b = &e.iter().find(|x| x.path == file.path).unwrap().bytes;
        file.sha256 = sha256_hex(b);
        file.size = b.len() as u64;
    }
    e[1].bytes = st.to_bytes();
    e[2].bytes = signer.sign_detached(&e[1].bytes).unwrap();
    container::write(&e).unwrap()
}

#[test]
fn a_signed_but_inconsistent_bundle_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (s, me) = sample(dir.path());
    let zip = build(&s, IDENT, &Scope::Provider).unwrap().zip;
    let t = trusted(&me);
    assert!(check(&resigned(&s, &zip, |_| ()), &t).unwrap().intact());
    // A record's content changed, its hash kept.
    let bad = resigned(&s, &zip, |e| {
        let r = e.iter_mut().find(|x| x.path == RECORDS).unwrap();
        r.bytes = String::from_utf8(r.bytes.clone())
            .unwrap()
            .replacen("\"Prova\"", "\"Altro\"", 1)
            .into_bytes();
    });
    let p = check(&bad, &t).unwrap().problem.unwrap();
    assert_eq!(p.entry, RECORDS, "{p}");
    assert!(p.message.contains("hash does not match"), "{p}");
    // A message swapped for other bytes.
    let bad = resigned(&s, &zip, |e| {
        let m = e
            .iter_mut()
            .find(|x| x.path.ends_with("-AcceptanceSent.eml"))
            .unwrap();
        m.bytes = b"a forged receipt\r\n".to_vec();
    });
    let p = check(&bad, &t).unwrap().problem.unwrap();
    assert!(p.entry.ends_with("-AcceptanceSent.eml"), "{p}");
    assert!(p.message.contains("trace record seq 2"), "{p}");
}

#[test]
fn an_existing_covering_checkpoint_is_reused() {
    let dir = tempfile::tempdir().unwrap();
    let (s, me) = sample(dir.path());
    let first = check(
        &build(&s, IDENT, &Scope::Provider).unwrap().zip,
        &trusted(&me),
    )
    .unwrap();
    let second = check(
        &build(&s, IDENT, &Scope::Provider).unwrap().zip,
        &trusted(&me),
    )
    .unwrap();
    assert!(first.intact() && second.intact());
    assert_eq!(first.checkpoint, second.checkpoint);
    assert_eq!(
        s.trace().last_checkpoint().unwrap().unwrap().seq,
        first.checkpoint.unwrap().0
    );
}
