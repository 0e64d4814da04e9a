//! Unit tests of the change log: every op kind, the Email-per-content rule, paging, the
//! kept window, mailbox deletion, reopening and the migration from schema 2.

use std::path::Path;

use super::*;
use crate::store::mailbox::Password;
use crate::store::{Batch, Blob, Delivery, NewMailbox, SCHEMA_KEY, SCHEMA_VERSION, StoreOptions};

fn addr() -> PecAddress {
    PecAddress::parse("jmap@example.it").unwrap()
}

fn open(dir: &Path) -> Store {
    Store::open(dir, StoreOptions::default()).unwrap()
}

fn add(s: &Store) {
    s.add_mailbox(NewMailbox {
        address: addr(),
        password: Password::new("pw"),
        quota_bytes: Some(1 << 30),
        options: Default::default(),
        provisional: false,
    })
    .unwrap();
}

fn deliver(folder: &str, blob: &Blob) -> Batch {
    let mut d = Delivery::inbox(addr(), blob.clone(), jiff::Timestamp::UNIX_EPOCH);
    d.folder = folder.into();
    Batch::new().deliver(d)
}

fn folder_id(s: &Store, name: &str) -> u64 {
    s.folder(&addr(), name).unwrap().unwrap().id
}

/// Expected ids: `(created, updated, destroyed)`.
type Ids<T> = (Vec<T>, Vec<T>, Vec<T>);

fn ids<T: Clone>(c: &IdChanges<T>) -> Ids<T> {
    (c.created.clone(), c.updated.clone(), c.destroyed.clone())
}

fn none<T>() -> Ids<T> {
    (vec![], vec![], vec![])
}

#[test]
fn merge_table() {
    use Kind::*;
    let table = [
        (None, Created, Some(Created)),
        (Some(Created), Updated, Some(Created)),
        (Some(Created), Destroyed, None),
        (Some(Updated), Updated, Some(Updated)),
        (Some(Updated), Destroyed, Some(Destroyed)),
        (Some(Destroyed), Created, Some(Updated)),
    ];
    for (prev, next, want) in table {
        assert_eq!(merge(prev, next), want, "{prev:?} then {next:?}");
    }
}

/// Commits `batch`, checks that it advanced the modseq by exactly one (and says so in
/// [`crate::store::Applied::modseqs`]), returns the changes since the previous modseq.
fn step(s: &Store, prev: &mut u64, what: &str, batch: Batch) -> Changes {
    let a = addr();
    let applied = s.commit(batch).unwrap();
    let now = s.modseq(&a).unwrap();
    assert_eq!(now, *prev + 1, "{what}: one step per batch");
    assert_eq!(applied.modseqs, vec![(a.key(), now)], "{what}");
    let c = s.changes_since(&a, *prev, usize::MAX).unwrap();
    assert_eq!((c.old_modseq, c.new_modseq), (*prev, now), "{what}");
    assert!(!c.has_more_changes, "{what}");
    *prev = now;
    c
}

#[test]
fn every_op_moves_the_modseq_once_and_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    add(&s);
    let a = addr();
    assert_eq!(s.modseq(&a).unwrap(), 1, "adding the mailbox creates INBOX");
    let inbox = folder_id(&s, "INBOX");
    let c = s.changes_since(&a, 0, usize::MAX).unwrap();
    assert_eq!(ids(&c.folders), (vec![inbox], vec![], vec![]));
    let x = s.blobs().put(b"message x").unwrap();
    let xid = || x.id.clone();
    let start = s.modseq(&a).unwrap();
    let mut prev = start;

    let c = step(&s, &mut prev, "deliver", deliver("INBOX", &x));
    assert_eq!(ids(&c.emails), (vec![xid()], vec![], vec![]));
    assert_eq!(ids(&c.folders), (vec![], vec![inbox], vec![]));

    let c = step(&s, &mut prev, "create folder", {
        Batch::new().create_folder(a.clone(), "Arch")
    });
    let arch = folder_id(&s, "Arch");
    assert_eq!(ids(&c.emails), none());
    assert_eq!(ids(&c.folders), (vec![arch], vec![], vec![]));

    // The same content in a second folder is the same Email.
    let c = step(&s, &mut prev, "deliver again", deliver("Arch", &x));
    assert_eq!(ids(&c.emails), (vec![], vec![xid()], vec![]));
    assert_eq!(ids(&c.folders), (vec![], vec![arch], vec![]));
    assert_eq!(s.email_index(&a).unwrap(), HashMap::from([(xid(), 2)]));

    // \Seen changes the folder's unread count too; other flags only the Email.
    let seen = vec!["\\Seen".to_string()];
    let c = step(&s, &mut prev, "set_flags", {
        Batch::new().set_flags(a.clone(), "INBOX", 1, seen.clone())
    });
    assert_eq!(ids(&c.emails), (vec![], vec![xid()], vec![]));
    assert_eq!(ids(&c.folders), (vec![], vec![inbox], vec![]));
    let v = s.folder(&a, "Arch").unwrap().unwrap().uidvalidity;
    let c = step(&s, &mut prev, "add_flags", {
        Batch::new().add_flags(a.clone(), "Arch", v, vec![1], vec!["\\Flagged".into()])
    });
    assert_eq!(ids(&c.emails), (vec![], vec![xid()], vec![]));
    assert_eq!(ids(&c.folders), none());
    let c = step(&s, &mut prev, "add_flags \\Seen", {
        Batch::new().add_flags(a.clone(), "Arch", v, vec![1], seen.clone())
    });
    assert_eq!(ids(&c.emails), (vec![], vec![xid()], vec![]));
    assert_eq!(ids(&c.folders), (vec![], vec![arch], vec![]));

    // One of two records expunged: updated; the last one: destroyed.
    let c = step(&s, &mut prev, "expunge one", {
        Batch::new().expunge(a.clone(), "INBOX", 1)
    });
    assert_eq!(ids(&c.emails), (vec![], vec![xid()], vec![]));
    assert_eq!(ids(&c.folders), (vec![], vec![inbox], vec![]));
    let c = step(&s, &mut prev, "expunge last", {
        Batch::new().expunge(a.clone(), "Arch", 1)
    });
    assert_eq!(ids(&c.emails), (vec![], vec![], vec![xid()]));
    assert_eq!(ids(&c.folders), (vec![], vec![arch], vec![]));
    assert!(s.email_index(&a).unwrap().is_empty());

    let c = step(&s, &mut prev, "rename", {
        Batch::new().rename_folder(a.clone(), "Arch", "Old")
    });
    assert_eq!(ids(&c.folders), (vec![], vec![arch], vec![]));
    let c = step(
        &s,
        &mut prev,
        "subscribe",
        Batch::new().subscribe(a.clone(), "Old"),
    );
    assert_eq!(ids(&c.folders), (vec![], vec![arch], vec![]));
    // Visible to IMAP LSUB, though no JMAP Mailbox has the name: a step without ids.
    let c = step(&s, &mut prev, "subscribe a name", {
        Batch::new().subscribe(a.clone(), "Nowhere")
    });
    assert!(c.emails.is_empty() && c.folders.is_empty());
    let c = step(&s, &mut prev, "delete folder", {
        Batch::new().delete_folder(a.clone(), "Old")
    });
    assert_eq!(ids(&c.folders), (vec![], vec![], vec![arch]));

    // Nothing a client sees: no step.
    let y = s.blobs().put(b"message y").unwrap();
    let c = step(&s, &mut prev, "deliver y", deliver("INBOX", &y));
    assert_eq!(c.emails.created, vec![y.id.clone()]);
    s.commit(Batch::new().set_flags(a.clone(), "INBOX", 99, vec![]))
        .unwrap_err();
    s.set_quota(&a, 1 << 20).unwrap();
    s.commit(Batch::new().set_flags(a.clone(), "INBOX", 2, vec![]))
        .unwrap();
    assert_eq!(
        s.modseq(&a).unwrap(),
        prev,
        "admin change, same flags: no step"
    );

    // The whole window at once: x and Arch were created and destroyed inside it, so
    // they are omitted; INBOX was updated; y created.
    let c = s.changes_since(&a, start, usize::MAX).unwrap();
    assert_eq!(ids(&c.emails), (vec![y.id.clone()], vec![], vec![]));
    assert_eq!(ids(&c.folders), (vec![], vec![inbox], vec![]));
    // Of one kind only.
    let c = s
        .changes_since_of(&a, ChangeKind::Mailbox, start, usize::MAX)
        .unwrap();
    assert!(c.emails.is_empty());
    assert_eq!(c.folders.updated, vec![inbox]);
}

#[test]
fn if_modseq_guards_a_batch() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    add(&s);
    let a = addr();
    let x = s.blobs().put(b"guarded").unwrap();
    let e = s
        .commit(Batch::new().if_modseq(a.clone(), 0).claim("k"))
        .unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::ModseqMismatch {
                expected: 0,
                found: 1,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(!s.is_claimed("k").unwrap(), "nothing of the batch applied");
    let applied = s
        .commit(deliver("INBOX", &x).if_modseq(a.clone(), 1))
        .unwrap();
    assert_eq!(applied.modseqs, vec![(a.key(), 2)]);
}

#[test]
fn a_batch_is_one_entry_and_pages_end_on_a_modseq() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    add(&s);
    let a = addr();
    let start = s.modseq(&a).unwrap();
    // 300 messages in one batch, then \Seen on all of them in one add_flags.
    let mut b = Batch::new();
    let mut blobs = Vec::new();
    for i in 0..300 {
        let blob = s.blobs().put(format!("message {i}").as_bytes()).unwrap();
        let mut d = Delivery::inbox(a.clone(), blob.clone(), jiff::Timestamp::UNIX_EPOCH);
        d.folder = "INBOX".into();
        b = b.deliver(d);
        blobs.push(blob.id);
    }
    blobs.sort();
    s.commit(b).unwrap();
    assert_eq!(s.modseq(&a).unwrap(), start + 1);
    let v = s.folder(&a, "INBOX").unwrap().unwrap().uidvalidity;
    s.commit(Batch::new().add_flags(
        a.clone(),
        "INBOX",
        v,
        (1..=300).collect(),
        vec!["\\Seen".into()],
    ))
    .unwrap();
    assert_eq!(s.modseq(&a).unwrap(), start + 2);
    let entries = s
        .trees()
        .changelog
        .scan_prefix(mailbox_prefix(&a.key()))
        .count();
    assert_eq!(
        entries, 3,
        "mailbox added, 300 deliveries, 300 flag changes"
    );
    let c = s.changes_since(&a, start + 1, 1000).unwrap();
    assert_eq!(c.emails.updated, blobs);

    // One modseq alone over the limit cannot be split.
    let e = s.changes_since(&a, start, 100).unwrap_err();
    assert!(
        matches!(e, StoreError::ChangesTooMany { max: 100, .. }),
        "{e:?}"
    );

    // Five small batches, paged by two.
    let from = s.modseq(&a).unwrap();
    let mut five = Vec::new();
    for i in 0..5 {
        let blob = s.blobs().put(format!("small {i}").as_bytes()).unwrap();
        s.commit(deliver("INBOX", &blob)).unwrap();
        five.push(blob.id);
    }
    let mut since = from;
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let c = s.changes_since(&a, since, 2).unwrap();
        assert!(c.emails.len() <= 2);
        assert!(c.new_modseq > since);
        seen.extend(c.emails.created.clone());
        since = c.new_modseq;
        pages += 1;
        if !c.has_more_changes {
            break;
        }
    }
    assert_eq!((pages, since), (3, from + 5));
    seen.sort();
    five.sort();
    assert_eq!(seen, five);
    // Up to date: nothing, no more.
    let c = s.changes_since(&a, since, 2).unwrap();
    assert_eq!((c.new_modseq, c.has_more_changes), (since, false));
    assert!(c.emails.is_empty() && c.folders.is_empty());
}

#[test]
fn changes_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let a = addr();
    let x;
    {
        let s = open(dir.path());
        add(&s);
        x = s.blobs().put(b"kept").unwrap();
        s.commit(deliver("INBOX", &x)).unwrap();
        assert_eq!(s.modseq(&a).unwrap(), 2);
    }
    let s = open(dir.path());
    assert_eq!(s.modseq(&a).unwrap(), 2);
    let c = s.changes_since(&a, 1, 10).unwrap();
    assert_eq!(c.emails.created, vec![x.id.clone()]);
    s.commit(Batch::new().expunge(a.clone(), "INBOX", 1))
        .unwrap();
    let c = s.changes_since(&a, 0, 10).unwrap();
    assert_eq!(c.new_modseq, 3);
    assert!(c.emails.is_empty(), "created and destroyed in the window");
}

#[test]
fn a_since_outside_the_kept_window_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    add(&s);
    let a = addr();
    let e = s.changes_since(&a, 5, 10).unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::ChangesTooOld {
                since: 5,
                oldest: 0,
                current: 1,
                ..
            }
        ),
        "a state never issued: {e:?}"
    );
    // A full log, written by hand (MAX_LOG_ENTRIES real batches would take long): the
    // state at MAX_LOG_ENTRIES with nothing pruned yet, and its first entry.
    let k = a.key();
    let t = &s.trees().changelog;
    t.insert(state_key(&k), &state_bytes(MAX_LOG_ENTRIES, 0))
        .unwrap();
    t.insert(entry_key(&k, 2), br#"{"f":{"1":"u"}}"#.to_vec())
        .unwrap();
    let x = s.blobs().put(b"one more").unwrap();
    s.commit(deliver("INBOX", &x)).unwrap();
    assert_eq!(s.modseq(&a).unwrap(), MAX_LOG_ENTRIES + 1);
    assert!(
        t.get(entry_key(&k, 1)).unwrap().is_none(),
        "the oldest entry is pruned"
    );
    let e = s.changes_since(&a, 0, 10).unwrap_err();
    assert!(
        matches!(e, StoreError::ChangesTooOld { oldest: 1, .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("cannot be calculated"), "{e}");
    let c = s.changes_since(&a, MAX_LOG_ENTRIES, 10).unwrap();
    assert_eq!(c.emails.created, vec![x.id]);
    // Not a mailbox: its own error.
    let other = PecAddress::parse("nobody@example.it").unwrap();
    assert!(matches!(
        s.changes_since(&other, 0, 1),
        Err(StoreError::NoSuchMailbox(_))
    ));
}

#[test]
fn deleting_a_mailbox_removes_its_index_and_log_but_not_its_modseq() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    add(&s);
    let a = addr();
    let x = s.blobs().put(b"gone").unwrap();
    s.commit(deliver("INBOX", &x)).unwrap();
    let before = s.modseq(&a).unwrap();
    s.delete_mailbox(&a).unwrap();
    assert!(matches!(s.modseq(&a), Err(StoreError::NoSuchMailbox(_))));
    let left: Vec<_> = s.trees().changelog.iter().keys().collect();
    assert_eq!(left.len(), 1, "only the tombstone state is left");
    assert!(s.trees().email_index.is_empty().unwrap());
    // Added again: it continues after the tombstone, so an old state is refused.
    add(&s);
    assert_eq!(s.modseq(&a).unwrap(), before + 2);
    assert!(matches!(
        s.changes_since(&a, before, 10),
        Err(StoreError::ChangesTooOld { .. })
    ));
    let c = s.changes_since(&a, before + 1, 10).unwrap();
    assert_eq!(c.folders.created, vec![folder_id(&s, "INBOX")]);
    assert!(s.email_index(&a).unwrap().is_empty());
}

#[test]
fn a_schema_2_store_is_migrated_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let a = addr();
    let (x, y);
    {
        let s = open(dir.path());
        add(&s);
        x = s.blobs().put(b"twice").unwrap();
        y = s.blobs().put(b"once").unwrap();
        s.commit(
            Batch::new()
                .create_folder(a.clone(), "Arch")
                .deliver(Delivery::inbox(
                    a.clone(),
                    x.clone(),
                    jiff::Timestamp::UNIX_EPOCH,
                ))
                .deliver(Delivery::inbox(
                    a.clone(),
                    y.clone(),
                    jiff::Timestamp::UNIX_EPOCH,
                )),
        )
        .unwrap();
        s.commit(deliver("Arch", &x)).unwrap();
        // What a version-2 store holds: no change log, no index, marked 2.
        s.trees().changelog.clear().unwrap();
        s.trees().email_index.clear().unwrap();
        s.trees()
            .meta
            .insert(SCHEMA_KEY, &2u32.to_be_bytes())
            .unwrap();
        s.flush().unwrap();
    }
    let s = open(dir.path());
    assert_eq!(
        s.trees().meta.get(SCHEMA_KEY).unwrap().unwrap().as_ref(),
        SCHEMA_VERSION.to_be_bytes(),
        "marked current, so an older pecd refuses it"
    );
    assert_eq!(SCHEMA_VERSION, 10);
    assert_eq!(
        s.email_index(&a).unwrap(),
        HashMap::from([(x.id.clone(), 2), (y.id.clone(), 1)])
    );
    assert_eq!(s.modseq(&a).unwrap(), 0);
    let c = s.changes_since(&a, 0, 10).unwrap();
    assert!(c.emails.is_empty() && c.folders.is_empty() && !c.has_more_changes);
    // The derived counts drive the next changes: one of two records of x, then y's only.
    s.commit(Batch::new().expunge(a.clone(), "Arch", 1))
        .unwrap();
    s.commit(Batch::new().expunge(a.clone(), "INBOX", 2))
        .unwrap();
    let c = s.changes_since(&a, 0, 10).unwrap();
    assert_eq!(ids(&c.emails), (vec![], vec![x.id.clone()], vec![y.id]));
    assert_eq!(s.email_index(&a).unwrap(), HashMap::from([(x.id, 1)]));
}
