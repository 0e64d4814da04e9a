//! Unit tests of the security archive and of its schema-4 migration.

use std::sync::Arc;

use jiff::SignedDuration;

use super::*;
use crate::clock::ManualClock;
use crate::store::mailbox::Password;
use crate::store::messages::INBOX;
use crate::store::{Delivery, NewMailbox, StoreOptions};

fn t0() -> Timestamp {
    "2026-01-15T09:00:00Z".parse().unwrap()
}

/// A store whose archive holds `quota` bytes, kept a month, and its one mailbox.
pub(crate) fn open(
    dir: &std::path::Path,
    clock: Arc<ManualClock>,
    quota: u64,
) -> (Store, PecAddress) {
    let o = StoreOptions {
        clock,
        archive: ArchivePolicy {
            default_bytes: quota,
            retention_months: 1,
        },
        ..StoreOptions::default()
    };
    let s = Store::open(dir, o).unwrap();
    let a = PecAddress::parse("owner@pec.archivio.test").unwrap();
    s.add_mailbox(NewMailbox {
        address: a.clone(),
        password: Password::new("pw"),
        quota_bytes: Some(1 << 20),
        options: Default::default(),
        provisional: false,
    })
    .unwrap();
    (s, a)
}

fn deliver(s: &Store, a: &PecAddress, body: &[u8], at: Timestamp) -> super::super::Applied {
    let blob = s.blobs().put(body).unwrap();
    s.commit(Batch::new().deliver(Delivery::inbox(a.clone(), blob, at)))
        .unwrap()
}

/// The bodies of `records`, in order.
fn read_all(s: &Store, records: &[MessageRecord]) -> Vec<Vec<u8>> {
    records
        .iter()
        .map(|m| s.blobs().read(&m.blob).unwrap())
        .collect()
}

/// What the archive's `folder` holds, read through [`Store::archived`].
fn archived_bodies(s: &Store, a: &PecAddress, folder: &str) -> Vec<Vec<u8>> {
    read_all(s, &s.archived(a, folder).unwrap())
}

#[test]
fn a_delivery_is_archived_and_outlives_its_deletion_in_the_mailbox() {
    let dir = tempfile::tempdir().unwrap();
    let (s, a) = open(dir.path(), Arc::new(ManualClock::new(t0())), 1000);
    deliver(&s, &a, b"busta di trasporto 1", t0());
    let sent = s.blobs().put(b"busta inviata").unwrap();
    s.commit(Batch::new().archive_sent(a.clone(), sent, t0()))
        .unwrap();
    let st = s.archive_state(&a).unwrap().unwrap();
    assert_eq!((st.usage_bytes, st.messages, st.quota_bytes), (33, 2, 1000));
    // The archive does not count in the mailbox's own usage.
    assert_eq!(s.mailbox(&a).unwrap().unwrap().usage_bytes, 20);
    let names: Vec<String> = s.folders(&a).unwrap().into_iter().map(|f| f.name).collect();
    for n in [ARCHIVE, RECEIVED, SENT] {
        assert!(names.iter().any(|x| x == n), "{n} in {names:?}");
    }

    // The owner deletes it from the INBOX: the archived copy and its bytes stay.
    s.commit(Batch::new().expunge(a.clone(), INBOX, 1)).unwrap();
    assert!(s.messages(&a, INBOX).unwrap().is_empty());
    assert_eq!(
        archived_bodies(&s, &a, RECEIVED),
        vec![b"busta di trasporto 1".to_vec()]
    );
    assert_eq!(
        archived_bodies(&s, &a, SENT),
        vec![b"busta inviata".to_vec()]
    );
    let swept = s.sweep_blobs(std::time::Duration::ZERO).unwrap();
    assert_eq!(swept.removed, 0, "an archived blob is still referenced");
    assert_eq!(
        archived_bodies(&s, &a, RECEIVED),
        vec![b"busta di trasporto 1".to_vec()]
    );
}

#[test]
fn no_client_change_reaches_the_archive() {
    let dir = tempfile::tempdir().unwrap();
    let (s, a) = open(dir.path(), Arc::new(ManualClock::new(t0())), 1000);
    deliver(&s, &a, b"ricevuta", t0());
    let blob = s.blobs().put(b"copia").unwrap();
    let mut into = Delivery::inbox(a.clone(), blob, t0());
    into.folder = RECEIVED.into();
    into.archive = false;
    let attempts = [
        ("append", Batch::new().deliver(into)),
        ("expunge", Batch::new().expunge(a.clone(), RECEIVED, 1)),
        (
            "flags",
            Batch::new().set_flags(a.clone(), RECEIVED, 1, vec!["\\Deleted".into()]),
        ),
        (
            "create",
            Batch::new().create_folder(a.clone(), "archivio di sicurezza/x"),
        ),
        ("rename", Batch::new().rename_folder(a.clone(), SENT, "Mia")),
        (
            "rename into",
            Batch::new().rename_folder(a.clone(), "INBOX2", RECEIVED),
        ),
        ("delete", Batch::new().delete_folder(a.clone(), RECEIVED)),
        (
            "delete root",
            Batch::new().delete_folder(a.clone(), ARCHIVE),
        ),
        ("unsubscribe", Batch::new().unsubscribe(a.clone(), RECEIVED)),
    ];
    for (what, b) in attempts {
        let e = s.commit(b);
        assert!(
            matches!(e, Err(StoreError::ReadOnlyFolder { .. })),
            "{what}: {e:?}"
        );
    }
    assert_eq!(
        archived_bodies(&s, &a, RECEIVED),
        vec![b"ricevuta".to_vec()]
    );
    assert_eq!(s.archived(&a, RECEIVED).unwrap()[0].flags, vec!["\\Seen"]);
}

#[test]
fn a_full_archive_drops_only_what_is_past_the_retention_period() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(t0()));
    // Room for three 10-byte messages.
    let (s, a) = open(dir.path(), clock.clone(), 30);
    for i in 0..3 {
        deliver(&s, &a, format!("msg {i:06}").as_bytes(), t0());
    }
    // Full, and nothing is older than a month: the copy is not made, the delivery is.
    let applied = deliver(&s, &a, b"msg 000003", t0());
    assert_eq!(applied.delivered.len(), 1);
    assert_eq!(applied.archive_full, vec![a.to_string()]);
    assert_eq!(s.messages(&a, INBOX).unwrap().len(), 4);
    assert_eq!(archived_bodies(&s, &a, RECEIVED).len(), 3);

    // Two months on, the oldest copy goes to make room, and only it.
    clock.advance(SignedDuration::from_hours(24 * 62));
    let later = t0() + SignedDuration::from_hours(24 * 62);
    let applied = deliver(&s, &a, b"msg 000004", later);
    assert!(applied.archive_full.is_empty());
    let kept = archived_bodies(&s, &a, RECEIVED);
    assert_eq!(
        kept,
        vec![
            b"msg 000001".to_vec(),
            b"msg 000002".to_vec(),
            b"msg 000004".to_vec()
        ]
    );
    let st = s.archive_state(&a).unwrap().unwrap();
    assert_eq!((st.usage_bytes, st.messages), (30, 3));
    // The mailbox still has every message: the archive's room is its own.
    assert_eq!(s.messages(&a, INBOX).unwrap().len(), 5);
}

#[test]
fn two_copies_in_one_batch_drop_only_what_they_need() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(t0()));
    let (s, a) = open(dir.path(), clock.clone(), 30);
    for i in 0..3 {
        deliver(&s, &a, format!("msg {i:06}").as_bytes(), t0());
    }
    clock.advance(SignedDuration::from_hours(24 * 62));
    let later = t0() + SignedDuration::from_hours(24 * 62);
    // A submission's batch: the acceptance receipt delivered, the envelope archived.
    let receipt = s.blobs().put(b"rr").unwrap();
    let envelope = s.blobs().put(b"ee").unwrap();
    let applied = s
        .commit(
            Batch::new()
                .deliver(Delivery::inbox(a.clone(), receipt, later))
                .archive_sent(a.clone(), envelope, later),
        )
        .unwrap();
    assert!(applied.archive_full.is_empty());
    // One old copy made room for both (10 freed, 4 added): the others stay.
    assert_eq!(
        archived_bodies(&s, &a, RECEIVED),
        vec![
            b"msg 000001".to_vec(),
            b"msg 000002".to_vec(),
            b"rr".to_vec()
        ]
    );
    assert_eq!(archived_bodies(&s, &a, SENT), vec![b"ee".to_vec()]);
    assert_eq!(s.archive_state(&a).unwrap().unwrap().usage_bytes, 24);
}

#[test]
fn a_rule_cannot_file_into_the_archive() {
    let dir = tempfile::tempdir().unwrap();
    let (s, a) = open(dir.path(), Arc::new(ManualClock::new(t0())), 1000);
    deliver(&s, &a, b"crea l'archivio", t0());
    let rule = serde_json::json!([{"name": "nascondi", "folder": RECEIVED}]);
    let e = s.set_filters(&a, &rule).unwrap_err().to_string();
    assert!(e.contains("there is no folder"), "{e}");
}

#[test]
fn an_archive_of_size_zero_is_off() {
    let dir = tempfile::tempdir().unwrap();
    let (s, a) = open(dir.path(), Arc::new(ManualClock::new(t0())), 0);
    let applied = deliver(&s, &a, b"x", t0());
    assert_eq!(applied.archive_full, vec![a.to_string()]);
    assert!(s.archived(&a, RECEIVED).unwrap().is_empty());
}

/// Makes `name` a user folder holding `bodies`, as a store from before the archive's
/// names were reserved may hold it (made under another name, renamed in the tree).
fn user_folder(s: &Store, a: &PecAddress, name: &str, bodies: &[&[u8]]) {
    let tmp = format!("tmp {name}").replace('/', "-");
    s.commit(Batch::new().create_folder(a.clone(), tmp.as_str()))
        .unwrap();
    for b in bodies {
        let mut d = Delivery::inbox(a.clone(), s.blobs().put(b).unwrap(), t0());
        d.folder = tmp.clone();
        d.archive = false;
        s.commit(Batch::new().deliver(d)).unwrap();
    }
    let k = mailbox_key(a);
    let t = &s.trees().folders;
    let v = t.get(folder_key(&k, &tmp)).unwrap().unwrap();
    t.remove(folder_key(&k, &tmp)).unwrap();
    let mut f: FolderInfo = serde_json::from_slice(&v).unwrap();
    f.name = name.into();
    t.insert(folder_key(&k, name), serde_json::to_vec(&f).unwrap())
        .unwrap();
}

/// Closes `s` marked as schema 3 and opens it again (migrating it).
fn reopen_from_schema_3(dir: &std::path::Path, s: Store) -> Store {
    let o = s.options().clone();
    s.trees()
        .meta
        .insert(super::super::SCHEMA_KEY, &3u32.to_be_bytes())
        .unwrap();
    drop(s);
    Store::open(dir, o).unwrap()
}

fn bodies(s: &Store, a: &PecAddress, folder: &str) -> Vec<Vec<u8>> {
    read_all(s, &s.messages(a, folder).unwrap())
}

#[test]
fn a_user_folder_named_like_the_archive_is_moved_out_at_migration() {
    let dir = tempfile::tempdir().unwrap();
    let (s, a) = open(dir.path(), Arc::new(ManualClock::new(t0())), 1000);
    // A store from before the archive: the owner had made these three.
    user_folder(&s, &a, ARCHIVE, &[b"mia 1", b"mia 2"]);
    user_folder(&s, &a, RECEIVED, &[b"mia 3"]);
    user_folder(&s, &a, "archivio di sicurezza/Vecchi", &[]);
    let before = s.modseq(&a).unwrap();
    let s = reopen_from_schema_3(dir.path(), s);

    let p = USER_ROOT;
    assert_eq!(
        bodies(&s, &a, p),
        vec![b"mia 1".to_vec(), b"mia 2".to_vec()]
    );
    assert_eq!(
        bodies(&s, &a, &format!("{p}/Ricevuti")),
        vec![b"mia 3".to_vec()]
    );
    // Another spelling of the prefix, another root: no two can meet.
    assert!(
        s.folder(&a, "Archivio di sicurezza (personale 2)/Vecchi")
            .unwrap()
            .is_some()
    );
    let names: Vec<String> = s.folders(&a).unwrap().into_iter().map(|f| f.name).collect();
    assert!(!names.iter().any(|n| is_archive(n)), "{names:?}");
    assert_eq!(
        s.modseq(&a).unwrap(),
        before + 1,
        "JMAP clients hear of the renames"
    );
    // They are the owner's again (not read-only), and the archive starts afresh.
    s.commit(Batch::new().set_flags(a.clone(), p, 1, vec!["\\Flagged".into()]))
        .unwrap();
    deliver(&s, &a, b"busta", t0());
    assert_eq!(archived_bodies(&s, &a, RECEIVED), vec![b"busta".to_vec()]);
    assert_eq!(s.archive_state(&a).unwrap().unwrap().messages, 1);
}

#[test]
fn an_archive_already_in_use_stays_at_migration() {
    let dir = tempfile::tempdir().unwrap();
    let (s, a) = open(dir.path(), Arc::new(ManualClock::new(t0())), 1000);
    deliver(&s, &a, b"busta", t0());
    user_folder(&s, &a, "Archivio di sicurezza/Note", &[b"nota"]);
    // The owner's own folder of that name: the moved one goes beside it.
    s.commit(Batch::new().create_folder(a.clone(), USER_ROOT))
        .unwrap();
    let s = reopen_from_schema_3(dir.path(), s);

    assert_eq!(archived_bodies(&s, &a, RECEIVED), vec![b"busta".to_vec()]);
    let moved = "Archivio di sicurezza (personale 2)";
    assert_eq!(
        bodies(&s, &a, &format!("{moved}/Note")),
        vec![b"nota".to_vec()]
    );
    assert!(s.folder(&a, moved).unwrap().is_some(), "its parent is made");
    assert!(s.folder(&a, USER_ROOT).unwrap().is_some());
    // Done once: a store of schema 4 is not migrated again.
    let at = s.modseq(&a).unwrap();
    let o = s.options().clone();
    drop(s);
    let s = Store::open(dir.path(), o).unwrap();
    assert_eq!(s.modseq(&a).unwrap(), at);
    assert_eq!(
        s.folders(&a).unwrap().len(),
        6,
        "INBOX, the archive's three, two moved"
    );
}

#[test]
fn two_spellings_of_the_name_are_moved_apart_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let (s, a) = open(dir.path(), Arc::new(ManualClock::new(t0())), 1000);
    user_folder(&s, &a, "Archivio di sicurezza/X", &[b"uno"]);
    user_folder(&s, &a, "ARCHIVIO DI SICUREZZA/X", &[b"due"]);
    let s = reopen_from_schema_3(dir.path(), s);
    let mut got = bodies(&s, &a, &format!("{USER_ROOT}/X"));
    got.extend(bodies(&s, &a, "Archivio di sicurezza (personale 2)/X"));
    got.sort();
    assert_eq!(got, vec![b"due".to_vec(), b"uno".to_vec()]);
    let m = s.mailbox(&a).unwrap().unwrap();
    assert_eq!(
        (m.messages, m.usage_bytes),
        (2, 6),
        "counted in the mailbox"
    );
}

#[test]
fn archive_copies_stay_beside_a_users_older_folder_and_usage_is_recounted() {
    let dir = tempfile::tempdir().unwrap();
    let (s, a) = open(dir.path(), Arc::new(ManualClock::new(t0())), 1000);
    // The user's root held mail, so the archive code made only its child under it.
    user_folder(&s, &a, ARCHIVE, &[b"mia"]);
    deliver(&s, &a, b"busta", t0());
    let s = reopen_from_schema_3(dir.path(), s);
    assert_eq!(archived_bodies(&s, &a, RECEIVED), vec![b"busta".to_vec()]);
    assert!(
        s.folder(&a, ARCHIVE).unwrap().is_some(),
        "the archive's root is back"
    );
    assert_eq!(bodies(&s, &a, USER_ROOT), vec![b"mia".to_vec()]);
    let st = s.archive_state(&a).unwrap().unwrap();
    assert_eq!((st.usage_bytes, st.messages), (5, 1));
    let m = s.mailbox(&a).unwrap().unwrap();
    // INBOX's "busta" and the moved "mia".
    assert_eq!((m.messages, m.usage_bytes), (2, 8));
}

#[test]
fn a_schema_2_store_indexes_the_moved_messages_as_emails() {
    let dir = tempfile::tempdir().unwrap();
    let (s, a) = open(dir.path(), Arc::new(ManualClock::new(t0())), 1000);
    user_folder(&s, &a, "Archivio di sicurezza/Vecchi", &[b"vecchio"]);
    s.trees().changelog.clear().unwrap();
    s.trees().email_index.clear().unwrap();
    let o = s.options().clone();
    s.trees()
        .meta
        .insert(super::super::SCHEMA_KEY, &2u32.to_be_bytes())
        .unwrap();
    drop(s);
    let s = Store::open(dir.path(), o).unwrap();
    let moved = format!("{USER_ROOT}/Vecchi");
    assert_eq!(bodies(&s, &a, &moved), vec![b"vecchio".to_vec()]);
    assert_eq!(
        s.email_index(&a).unwrap().len(),
        1,
        "a JMAP Email of the mailbox"
    );
}

#[test]
fn leaving_a_plan_keeps_the_archive_size_it_gave() {
    let dir = tempfile::tempdir().unwrap();
    let (s, a) = open(dir.path(), Arc::new(ManualClock::new(t0())), 1000);
    s.set_plan(&a, "maxi", 1 << 20, Some(5000)).unwrap();
    assert_eq!(s.archive_state(&a).unwrap().unwrap().quota_bytes, 5000);
    // Off the plan with a quota of its own: the archive does not shrink to the default.
    s.set_quota(&a, 2 << 20).unwrap();
    let m = s.mailbox(&a).unwrap().unwrap();
    assert_eq!((m.quota_bytes, m.plan), (2 << 20, None));
    assert_eq!(s.archive_state(&a).unwrap().unwrap().quota_bytes, 5000);
    // A plan that follows the default brings it back to the default.
    s.set_plan(&a, "base", 1 << 20, None).unwrap();
    assert_eq!(s.archive_state(&a).unwrap().unwrap().quota_bytes, 1000);
}

#[test]
fn the_archive_names_are_reserved_whatever_their_case() {
    assert!(is_archive(ARCHIVE));
    assert!(is_archive(RECEIVED));
    assert!(is_archive("archivio DI sicurezza/altro"));
    assert!(!is_archive("Archivio di sicurezza2"));
    assert!(!is_archive("Archivio"));
    assert!(!is_archive("INBOX"));
}
