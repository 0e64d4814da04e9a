//! Unit tests of the store (the crash, race and tamper tests are in `tests/`). Their
//! unwraps see only stores and values built here, never peer input.

use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};

use super::*;
use crate::clock::{Clock, ManualClock};
use crate::pec::address::PecAddress;
use crate::store::mailbox::{Password, PasswordChangeError, PasswordCheck};
use crate::store::password::WeakPassword;
use crate::trace::checkpoint::{cert_sha256, tests::test_signer};
use crate::trace::log::seq_key;
use crate::trace::{EventKind, TraceEvent, TraceQuery};

fn t0() -> Timestamp {
    "2025-01-15T09:00:00Z".parse().unwrap()
}

fn addr(s: &str) -> PecAddress {
    PecAddress::parse(s).unwrap()
}

fn open(dir: &Path, clock: Arc<ManualClock>) -> Store {
    let o = StoreOptions {
        clock,
        checkpoint_every: 3,
        ..StoreOptions::default()
    };
    Store::open(dir, o).unwrap()
}

fn add(s: &Store, a: &str, quota: u64) {
    s.add_mailbox(NewMailbox {
        address: addr(a),
        password: Password::new("pw"),
        quota_bytes: Some(quota),
        options: Default::default(),
        provisional: false,
    })
    .unwrap();
}

#[test]
fn deliver_quota_claim_and_trace_together() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), Arc::new(ManualClock::new(t0())));
    add(&s, "alice@example.it", 10);
    let blob = s.blobs().put(b"123456").unwrap();
    let ev = TraceEvent::new(EventKind::Delivered, t0())
        .msgid("m1@x")
        .recipient("alice@example.it")
        .message_bytes(b"123456");
    let a = s
        .commit(
            Batch::new()
                .claim("k1")
                .deliver(Delivery::inbox(
                    addr("alice@example.it"),
                    blob.clone(),
                    t0(),
                ))
                .trace(ev.clone()),
        )
        .unwrap();
    assert_eq!(a.delivered[0].uid, 1);
    assert_eq!(a.trace.len(), 1);
    // Same key again: nothing applied.
    let e = s.commit(
        Batch::new()
            .claim("k1")
            .deliver(Delivery::inbox(
                addr("alice@example.it"),
                blob.clone(),
                t0(),
            ))
            .trace(ev.clone()),
    );
    assert!(matches!(e, Err(StoreError::AlreadyClaimed(_))), "{e:?}");
    // Over quota (6 + 6 > 10): nothing applied, not even the trace record or the claim.
    let e = s.commit(
        Batch::new()
            .claim("k2")
            .deliver(Delivery::inbox(
                addr("alice@example.it"),
                blob.clone(),
                t0(),
            ))
            .trace(ev),
    );
    assert!(
        matches!(
            e,
            Err(StoreError::QuotaExceeded {
                usage: 6,
                size: 6,
                quota: 10,
                ..
            })
        ),
        "{e:?}"
    );
    assert!(!s.is_claimed("k2").unwrap());
    let info = s.mailbox(&addr("Alice@example.it")).unwrap().unwrap();
    assert_eq!((info.usage_bytes, info.messages), (6, 1));
    assert_eq!(
        s.messages(&addr("alice@example.it"), "inbox")
            .unwrap()
            .len(),
        1
    );
    // The INBOX's record and the security archive's copy.
    assert_eq!(s.blob_refs(&blob.id).unwrap(), 2);
    let found = s
        .trace()
        .query(&TraceQuery {
            msgid: Some("<m1@x>".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].kind, EventKind::Delivered);
    // One admin record (mailbox added) + one delivery.
    assert_eq!(s.trace().verify(None).unwrap().records, 2);
    assert!(s.claim_once("solo").unwrap());
    assert!(!s.claim_once("solo").unwrap());
}

#[test]
fn mailbox_admin_table() -> Result<(), StoreError> {
    let dir = tempfile::tempdir().unwrap();
    let o = StoreOptions {
        clock: Arc::new(ManualClock::new(t0())),
        domains: vec![crate::pec::address::Domain::parse("example.it").unwrap()],
        ..StoreOptions::default()
    };
    let s = Store::open(dir.path(), o).unwrap();
    add(&s, "bob@example.it", 100);
    let cases: Vec<(&str, Result<(), &str>)> = vec![
        ("add-dup", Err("already exists")),
        ("add-foreign", Err("not served")),
        ("passwd", Ok(())),
        ("quota", Ok(())),
        ("del-missing", Err("no mailbox")),
    ];
    for (what, want) in cases {
        let got = match what {
            "add-dup" => s
                .add_mailbox(NewMailbox {
                    address: addr("BOB@example.it"),
                    password: Password::new("x"),
                    quota_bytes: None,
                    options: Default::default(),
                    provisional: false,
                })
                .map(|_| ()),
            "add-foreign" => s
                .add_mailbox(NewMailbox {
                    address: addr("x@other.it"),
                    password: Password::new("x"),
                    quota_bytes: None,
                    options: Default::default(),
                    provisional: false,
                })
                .map(|_| ()),
            "passwd" => s.set_password(&addr("bob@example.it"), &Password::new("new"), true),
            "quota" => s.set_quota(&addr("bob@example.it"), 5),
            "del-missing" => s.delete_mailbox(&addr("nobody@example.it")),
            _ => unreachable!(),
        };
        match (got, want) {
            (Ok(()), Ok(())) => {}
            (Err(e), Err(w)) => assert!(e.to_string().contains(w), "{what}: {e}"),
            (g, w) => panic!("{what}: got {g:?}, want {w:?}"),
        }
    }
    let check = |a: &str, p: &str| s.verify_password(&addr(a), &Password::new(p));
    // A reset by the administrator is provisional.
    assert_eq!(check("bob@example.it", "new")?, PasswordCheck::MustChange);
    assert_eq!(check("bob@example.it", "pw")?, PasswordCheck::Wrong);
    assert_eq!(check("ghost@example.it", "new")?, PasswordCheck::Wrong);
    assert!(
        s.mailbox(&addr("bob@example.it"))?
            .is_some_and(|m| m.password_provisional)
    );
    // A provisional password has no hash a login cache may rely on.
    assert_eq!(s.own_password_hash(&addr("bob@example.it"))?, None);
    assert_eq!(
        s.verify_password_against(&addr("bob@example.it"), &Password::new("new"))?,
        (PasswordCheck::MustChange, None)
    );
    // The owner's change: the current password right, the new one strong and different.
    let change = |cur: &str, new: &str| {
        s.change_own_password(
            &addr("bob@example.it"),
            &Password::new(cur),
            &Password::new(new),
        )
    };
    assert!(matches!(
        change("wrong", "Corretto-Cavallo-9"),
        Err(PasswordChangeError::WrongCurrent)
    ));
    assert!(matches!(
        change("new", "short"),
        Err(PasswordChangeError::Weak(WeakPassword::TooShort))
    ));
    assert!(matches!(
        change("new", "Bob-example-1234"),
        Err(PasswordChangeError::Weak(WeakPassword::ContainsAddress))
    ));
    assert!(change("new", "Corretto-Cavallo-9").is_ok());
    assert_eq!(
        check("bob@example.it", "Corretto-Cavallo-9")?,
        PasswordCheck::Valid
    );
    // The owner's own: the hash checked is the one stored, and given with the answer.
    let own = s.own_password_hash(&addr("bob@example.it"))?;
    assert!(own.as_deref().is_some_and(|h| h.starts_with("$argon2id$")));
    assert_eq!(
        s.verify_password_against(
            &addr("bob@example.it"),
            &Password::new("Corretto-Cavallo-9")
        )?,
        (PasswordCheck::Valid, own)
    );
    assert_eq!(s.own_password_hash(&addr("ghost@example.it"))?, None);
    assert_eq!(check("bob@example.it", "new")?, PasswordCheck::Wrong);
    assert!(matches!(
        change("Corretto-Cavallo-9", "Corretto-Cavallo-9"),
        Err(PasswordChangeError::Weak(WeakPassword::Unchanged))
    ));
    let info = s.mailbox(&addr("bob@example.it"))?;
    assert!(info.is_some_and(|i| !i.password_provisional));
    let l = s.list_mailboxes().unwrap();
    assert_eq!(l.len(), 1);
    assert_eq!(l[0].quota_bytes, 5);
    let blob = s.blobs().put(b"0123456789").unwrap();
    let e = s
        .commit(Batch::new().deliver(Delivery::inbox(addr("bob@example.it"), blob.clone(), t0())))
        .unwrap_err();
    assert!(matches!(e, StoreError::QuotaExceeded { .. }));
    s.set_quota(&addr("bob@example.it"), 50).unwrap();
    s.commit(Batch::new().deliver(Delivery::inbox(addr("bob@example.it"), blob.clone(), t0())))
        .unwrap();
    s.delete_mailbox(&addr("bob@example.it")).unwrap();
    assert!(s.list_mailboxes().unwrap().is_empty());
    assert_eq!(s.blob_refs(&blob.id).unwrap(), 0);
    assert_eq!(s.sweep_blobs(std::time::Duration::ZERO).unwrap().removed, 1);
    Ok(())
}

#[test]
fn folders_flags_expunge() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), Arc::new(ManualClock::new(t0())));
    let a = addr("carol@example.it");
    add(&s, "carol@example.it", 1000);
    s.commit(Batch::new().create_folder(a.clone(), "Archive"))
        .unwrap();
    let b1 = s.blobs().put(b"one").unwrap();
    let b2 = s.blobs().put(b"two!").unwrap();
    let mut d = Delivery::inbox(a.clone(), b1, t0());
    d.folder = "Archive".into();
    let mut d2 = d.clone();
    d2.blob = b2;
    let r = s.commit(Batch::new().deliver(d).deliver(d2)).unwrap();
    assert_eq!(
        r.delivered.iter().map(|d| d.uid).collect::<Vec<_>>(),
        vec![1, 2]
    );
    s.commit(Batch::new().rename_folder(a.clone(), "Archive", "Old"))
        .unwrap();
    assert!(s.folder(&a, "Archive").unwrap().is_none());
    let f = s.folder(&a, "Old").unwrap().unwrap();
    assert_eq!(
        (f.messages, f.bytes, f.uidnext, f.uidvalidity),
        (2, 7, 3, r.delivered[0].uidvalidity)
    );
    s.commit(Batch::new().set_flags(a.clone(), "Old", 2, vec!["\\Seen".into()]))
        .unwrap();
    assert_eq!(
        s.message(&a, "Old", 2).unwrap().unwrap().flags,
        vec!["\\Seen"]
    );
    s.commit(Batch::new().expunge(a.clone(), "Old", 1)).unwrap();
    assert_eq!(s.mailbox(&a).unwrap().unwrap().usage_bytes, 4);
    s.commit(Batch::new().delete_folder(a.clone(), "Old"))
        .unwrap();
    assert_eq!(s.mailbox(&a).unwrap().unwrap().usage_bytes, 0);
    assert_eq!(
        s.folders(&a)
            .unwrap()
            .iter()
            .map(|f| f.name.as_str())
            .collect::<Vec<_>>(),
        // The deliveries made the security archive; deleting folders never touches it.
        vec![
            "Archivio di sicurezza",
            "Archivio di sicurezza/Ricevuti",
            "INBOX"
        ]
    );
    let e = s
        .commit(Batch::new().rename_folder(a.clone(), "INBOX", "X"))
        .unwrap_err();
    assert!(matches!(e, StoreError::FolderExists { .. }));
    // A folder created again gets a new UIDVALIDITY.
    s.commit(Batch::new().create_folder(a.clone(), "Old"))
        .unwrap();
    assert_ne!(
        s.folder(&a, "Old").unwrap().unwrap().uidvalidity,
        f.uidvalidity
    );
}

#[test]
fn queue_and_pending_due() -> Result<(), StoreError> {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), Arc::new(ManualClock::new(t0())));
    let blob = s.blobs().put(b"envelope").unwrap();
    let item = NewQueueItem {
        domain: crate::pec::address::Domain::parse("other.it").unwrap(),
        mail_from: "a@example.it".into(),
        rcpt_to: vec!["b@other.it".into()],
        blob: blob.clone(),
        ident: Some("id1".into()),
        next_attempt: t0(),
    };
    let id = s.commit(Batch::new().enqueue(item)).unwrap().queued[0];
    assert_eq!(s.blob_refs(&blob.id).unwrap(), 1);
    assert_eq!(s.queue_due(t0(), 10).unwrap().len(), 1);
    let later = t0() + SignedDuration::from_mins(5);
    s.commit(Batch::new().queue_retry(id, later, "451 try later"))
        .unwrap();
    assert!(s.queue_due(t0(), 10).unwrap().is_empty());
    let due = s.queue_due(later, 10).unwrap();
    assert_eq!(
        (due[0].attempts, due[0].last_error.as_deref()),
        (1, Some("451 try later"))
    );
    s.commit(Batch::new().queue_done(id)).unwrap();
    assert_eq!(
        (s.queue_len().unwrap(), s.blob_refs(&blob.id).unwrap()),
        (0, 0)
    );

    let h12 = t0() + SignedDuration::from_hours(12);
    let h24 = t0() + SignedDuration::from_hours(24);
    let e = PendingEntry {
        ident: "id1".into(),
        recipient: "B@other.it".into(),
        awaiting: Awaiting::TakeCharge,
        sender: "a@example.it".into(),
        msgid: None,
        subject: None,
        sent_at: t0(),
        deadline_12h: h12,
        deadline_24h: h24,
        notice_12h_sent: false,
    };
    s.commit(Batch::new().pending_put(e)).unwrap();
    let table: Vec<(Timestamp, usize)> = vec![(t0(), 0), (h12, 1), (h24, 1)];
    for (at, n) in table {
        assert_eq!(s.pending_due(at, 10).unwrap().len(), n, "at {at}");
    }
    s.commit(Batch::new().pending_notice_12h("id1", "b@other.it"))
        .unwrap();
    assert_eq!(s.pending_due(h12, 10).unwrap().len(), 0);
    assert!(s.pending_due(h24, 10).unwrap()[0].notice_12h_sent);
    s.commit(Batch::new().pending_taken_in_charge("id1", "b@other.it"))?;
    assert_eq!(
        s.pending("id1", "b@other.it")?.map(|p| p.awaiting),
        Some(Awaiting::DeliveryReceipt)
    );
    s.commit(Batch::new().pending_resolve("id1", "b@other.it"))
        .unwrap();
    assert!(s.pending("id1", "b@other.it").unwrap().is_none());
    assert!(s.pending_due(h24, 10).unwrap().is_empty());
    // A take-charge processed after the delivery receipt resolved the entry does not
    // bring it back (it would owe a false 24 h notice).
    s.commit(Batch::new().pending_taken_in_charge("id1", "b@other.it"))?;
    assert!(s.pending("id1", "b@other.it")?.is_none());
    assert!(s.pending_due(h24, 10)?.is_empty());
    Ok(())
}

/// A store written before schema 5 holds its trace records as JSON: they are read as
/// they are, the chain goes on from them in the compact form, and the whole log verifies
/// and exports. A damaged compact record is reported, not misread.
#[test]
fn json_trace_records_of_an_older_store_are_read_and_continued() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(t0()));
    let ev = |i: u32| {
        TraceEvent::new(EventKind::Relayed, t0())
            .msgid(format!("<m{i}@x>"))
            .recipient("bob@example.it")
            .message_bytes(b"body")
    };
    {
        let s = open(dir.path(), clock.clone());
        for i in 0..2 {
            s.commit(Batch::new().trace(ev(i))).unwrap();
        }
        // What a schema-4 store holds: each record as its JSON.
        let records = &s.trees().trace.records;
        for seq in 1..=2 {
            let (k, v) = (seq_key(seq), records.get(seq_key(seq)).unwrap().unwrap());
            assert_eq!(v[0], 2, "written in the compact form");
            let r = s.trace().get(seq).unwrap().unwrap();
            records.insert(k, serde_json::to_vec(&r).unwrap()).unwrap();
            // ... indexed in the older trees (this pecd keeps the entries of what it
            // wrote in memory until they are sealed).
            let t = &s.trees().trace;
            for (index, key) in crate::trace::log::old_index_keys(&r) {
                let tree = match index {
                    crate::trace::log::Index::OldMsgId => &t.by_msgid,
                    crate::trace::log::Index::OldIdent => &t.by_ident,
                    crate::trace::log::Index::OldMailbox => &t.by_mailbox,
                    crate::trace::log::Index::Time => &t.by_time,
                    crate::trace::log::Index::Keys => &t.keys,
                };
                tree.insert(key, &b""[..]).unwrap();
            }
        }
        s.trees()
            .meta
            .insert(SCHEMA_KEY, &4u32.to_be_bytes())
            .unwrap();
        s.flush().unwrap();
    }
    let s = open(dir.path(), clock);
    assert_eq!(
        s.trees().meta.get(SCHEMA_KEY).unwrap().unwrap().as_ref(),
        SCHEMA_VERSION.to_be_bytes(),
        "marked current, so an older pecd refuses the compact records it cannot read"
    );
    s.commit(Batch::new().trace(ev(2))).unwrap();
    let firsts: Vec<u8> = s
        .trees()
        .trace
        .records
        .iter()
        .map(|kv| kv.unwrap().1[0])
        .collect();
    assert_eq!(firsts, [b'{', b'{', 2]);
    let r = s.trace().verify(None).unwrap();
    assert!(r.intact() && r.records == 3, "{r:?}");
    let found = s
        .trace()
        .query(&TraceQuery {
            msgid: Some("<m0@x>".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].recipients, ["bob@example.it"]);
    let signer = Arc::new(test_signer("provider"));
    let me = cert_sha256(signer.certificate());
    let mut out = Vec::new();
    s.trace()
        .with_signer(Some(signer))
        .export(&mut out)
        .unwrap();
    let r = crate::trace::verify::verify_export(&out[..], Some(me)).unwrap();
    assert!(r.intact() && r.records == 3, "{r:?}");
    // The compact record's last byte cut off: named, never a panic.
    let records = &s.trees().trace.records;
    let (k, v) = records.last().unwrap().unwrap();
    records.insert(&k, v[..v.len() - 1].to_vec()).unwrap();
    let e = s.trace().get(3).unwrap_err().to_string();
    assert!(e.contains("cannot be decoded") && e.contains("hash"), "{e}");
}

#[test]
fn schema_and_lock_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), Arc::new(ManualClock::new(t0())));
    let wait = Duration::from_millis(300);
    let started = std::time::Instant::now();
    let e = Store::open(
        dir.path(),
        StoreOptions {
            lock_wait: wait,
            ..StoreOptions::default()
        },
    )
    .unwrap_err();
    assert!(matches!(e, StoreError::Locked { .. }), "{e:?}");
    assert!(started.elapsed() >= wait, "a held lock is waited for");
    // It names where the store is: its directory (sled), its database (PostgreSQL).
    assert!(e.to_string().contains(&s.location()), "{e}");
    s.trees()
        .meta
        .insert(SCHEMA_KEY, &99u32.to_be_bytes())
        .unwrap();
    drop(s);
    let e = Store::open(dir.path(), StoreOptions::default()).unwrap_err();
    assert!(
        e.to_string().contains("schema version 99")
            && e.to_string().contains("[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]"),
        "{e}"
    );
}

#[test]
fn checkpoints_are_signed_linked_and_purge_keeps_the_chain_verifiable() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(t0()));
    let signer = Arc::new(test_signer("provider"));
    let me = cert_sha256(signer.certificate());
    let o = StoreOptions {
        clock: clock.clone(),
        signer: Some(signer),
        checkpoint_every: 5,
        ..StoreOptions::default()
    };
    let s = Store::open(dir.path(), o).unwrap();
    for i in 0..12 {
        let ev = TraceEvent::new(EventKind::Relayed, clock.now()).msgid(format!("m{i}@x"));
        s.commit(Batch::new().trace(ev)).unwrap();
    }
    // One record the automatic checkpoints cannot have covered yet (below `every`).
    s.commit(Batch::new().trace(TraceEvent::new(EventKind::Relayed, clock.now()).msgid("last@x")))
        .unwrap();
    // An automatic checkpoint signed in the background may already cover the head; then
    // there is nothing new to sign and that one is the latest.
    let cp = match s.checkpoint_now().unwrap() {
        Some(cp) => cp,
        None => s
            .trace()
            .last_checkpoint()
            .unwrap()
            .expect("a checkpoint covers the head"),
    };
    // 13 records plus one `Checkpoint` record per checkpoint stored before this one.
    assert!(cp.seq >= 13, "{cp:?}");
    assert!(s.checkpoint_now().unwrap().is_none(), "nothing new to sign");
    let r = s.trace().verify(Some(me.clone())).unwrap();
    assert!(r.intact(), "{:?}", r.problem);
    // Only the record binding the last checkpoint is above it.
    assert_eq!((r.records, r.unsigned_tail), (cp.seq + 1, 1));
    assert!(r.checkpoints >= 2);
    // 31 months later, more records; the purge anchors on the last checkpoint.
    clock.advance(SignedDuration::from_hours(24 * 31 * 31));
    for i in 0..3 {
        s.commit(
            Batch::new()
                .trace(TraceEvent::new(EventKind::Relayed, clock.now()).msgid(format!("n{i}@x"))),
        )
        .unwrap();
    }
    let p = s.purge_expired(clock.now()).unwrap();
    assert_eq!((p.anchor, p.records_removed), (Some(cp.seq), cp.seq));
    assert!(
        s.trace()
            .query(&TraceQuery {
                msgid: Some("m1@x".into()),
                ..Default::default()
            })
            .unwrap()
            .is_empty()
    );
    let r = s.trace().verify(Some(me.clone())).unwrap();
    assert!(r.intact(), "{:?}", r.problem);
    // Left: the checkpoint record, 3 new records, the Purged record (and, as the clock
    // jumped past checkpoint_interval, possibly a new checkpoint's record).
    assert_eq!((r.anchor, r.first_seq), (Some(cp.seq), Some(cp.seq + 1)));
    assert!((5..=6).contains(&r.records), "{}", r.records);
    let purged = s
        .trace()
        .query(&TraceQuery {
            since: Some(clock.now()),
            ..Default::default()
        })
        .unwrap();
    assert!(purged.iter().any(|r| r.kind == EventKind::Purged));
    // A second purge has nothing to do.
    assert_eq!(s.purge_expired(clock.now()).unwrap().records_removed, 0);
    let mut out = Vec::new();
    s.trace().export(&mut out).unwrap();
    let r = crate::trace::verify::verify_export(&out[..], Some(me)).unwrap();
    assert!(r.intact(), "{:?}", r.problem);
}

#[tokio::test]
async fn commit_async_does_not_block() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), Arc::new(ManualClock::new(t0())));
    let a = s
        .commit_async(Batch::new().trace(TraceEvent::new(EventKind::Other, t0())))
        .await
        .unwrap();
    assert_eq!(a.trace[0].0, 1);
}

/// The owner's change replaces only the hash its current password was checked against:
/// a change committed in between (another session, the administrator) is never
/// overwritten by a change checked against the older password.
#[test]
fn a_password_change_checked_against_an_old_hash_is_refused() {
    use crate::store::batch::Op;
    use crate::store::mailbox::PasswordUpdate;
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), Arc::new(ManualClock::new(t0())));
    add(&s, "owner@example.it", 1000);
    let a = addr("owner@example.it");
    let old_hash = s.mailbox_record(&a).unwrap().unwrap().password_hash;
    s.change_own_password(
        &a,
        &Password::new("pw"),
        &Password::new("Una-nuova-Password-9"),
    )
    .unwrap();
    // A change that was checked against the old hash, committed after the first one.
    let stale = Op::MailboxUpdate {
        address: a.clone(),
        password: Some(PasswordUpdate {
            hash: crate::store::password::hash(&Password::new("Altra-Password-7x")).unwrap(),
            provisional: false,
            changed: t0(),
            if_hash: Some(old_hash),
        }),
        quota: None,
        options: None,
    };
    let e = s.commit(Batch::new().push(stale));
    assert!(matches!(e, Err(StoreError::PasswordMoved(_))), "{e:?}");
    assert_eq!(
        s.verify_password(&a, &Password::new("Una-nuova-Password-9"))
            .unwrap(),
        PasswordCheck::Valid
    );
    // And the old password no longer changes anything.
    let again = s.change_own_password(
        &a,
        &Password::new("pw"),
        &Password::new("Terza-Password-11"),
    );
    assert!(
        matches!(again, Err(PasswordChangeError::WrongCurrent)),
        "{again:?}"
    );
}

/// The card limit holds when additions race: the committer counts, not the callers.
#[test]
fn the_card_limit_holds_under_concurrent_additions() {
    use crate::store::cards::MAX_CARDS_PER_MAILBOX;
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), Arc::new(ManualClock::new(t0())));
    add(&s, "owner@example.it", 1000);
    let a = addr("owner@example.it");
    let ok: usize = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..MAX_CARDS_PER_MAILBOX + 8)
            .map(|i| {
                let (s, a) = (&s, &a);
                sc.spawn(move || {
                    let card = crate::cns::CardCert {
                        sha256: format!("{i:064x}"),
                        issuer: "CN=CA CNS di prova".into(),
                        serial: format!("{i:X}"),
                        subject: format!("CN=RSSMRA80A01H501U/{i}.abc"),
                        codice_fiscale: "RSSMRA80A01H501U".into(),
                        not_before: t0(),
                        not_after: t0() + SignedDuration::from_hours(24 * 365),
                    };
                    match s.add_card(a, &card) {
                        Ok(()) => 1,
                        Err(StoreError::TooManyCards { .. }) => 0,
                        Err(e) => panic!("{e}"),
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(ok, MAX_CARDS_PER_MAILBOX);
    assert_eq!(s.cards(&a).unwrap().len(), MAX_CARDS_PER_MAILBOX);
}

#[test]
fn metadata_copies_are_checked_and_never_overwrite_another_store() {
    use crate::store::migrate::copy_metadata;
    let (src_dir, dst_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let clock = Arc::new(ManualClock::new(t0()));
    let s = open(src_dir.path(), clock.clone());
    add(&s, "alice@example.it", 1000);
    let blob = s.blobs().put(b"corpo").unwrap();
    s.commit(
        Batch::new()
            .deliver(Delivery::inbox(addr("alice@example.it"), blob, t0()))
            .trace(TraceEvent::new(EventKind::Delivered, t0()).msgid("m@x")),
    )
    .unwrap();
    let copy = |replace: bool| {
        let o = StoreOptions {
            clock: clock.clone(),
            ..StoreOptions::default()
        };
        copy_metadata(&s, dst_dir.path(), &o, replace, |_, _| {})
    };
    let r = copy(false).unwrap();
    assert!(r.entries > 5 && !r.cleared_earlier_copy, "{r:?}");
    assert_eq!(r.trace_head, s.trace().head().unwrap().0);
    // The same store is there now: it may have run since, so only --replace overwrites.
    let e = copy(false).unwrap_err();
    assert!(e.to_string().contains("--replace"), "{e}");
    assert!(copy(true).unwrap().cleared_earlier_copy);
    // The copy opens as the same store, with the same mailbox, message and chain; ids it
    // gives out are new.
    let (id, head) = (s.id().to_string(), s.trace().head().unwrap());
    let t = Store::open(
        dst_dir.path(),
        StoreOptions {
            clock: clock.clone(),
            ..StoreOptions::default()
        },
    )
    .unwrap();
    assert_eq!(t.id(), id);
    assert_eq!(t.trace().head().unwrap(), head);
    assert_eq!(
        t.messages(&addr("alice@example.it"), "INBOX")
            .unwrap()
            .len(),
        1
    );
    assert!(t.trace().verify(None).unwrap().intact());
    // An interrupted copy (the marker left behind) is cleared without being asked.
    t.trees()
        .meta
        .insert(super::migrate::MIGRATING_KEY, id.as_bytes())
        .unwrap();
    t.flush().unwrap();
    drop(t);
    std::thread::sleep(Duration::from_millis(100));
    assert!(copy(false).unwrap().cleared_earlier_copy);
    // Another store is never overwritten, even when asked.
    let other_dir = tempfile::tempdir().unwrap();
    let other = open(other_dir.path(), clock.clone());
    add(&other, "bob@example.it", 1000);
    drop(other);
    let o = StoreOptions {
        clock: clock.clone(),
        ..StoreOptions::default()
    };
    let e = copy_metadata(&s, other_dir.path(), &o, true, |_, _| {}).unwrap_err();
    assert!(e.to_string().contains("another store"), "{e}");
}
