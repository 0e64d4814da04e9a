//! The security archive (*archivio di sicurezza*, issue #10): a read-only copy of every
//! message delivered to the mailbox (envelopes, receipts, notices) and of every transport
//! envelope sent from it, kept with a quota of its own beside the mailbox's.
//!
//! ## Model
//!
//! The archive is two folders of the mailbox under [`ARCHIVE`]: [`RECEIVED`] and
//! [`SENT`]. Their records are ordinary message records whose body is the **same blob**
//! as the delivered or queued message (one more reference, never a copy), so deleting in
//! the mailbox leaves the archived copy. Their sizes count in the record's
//! `archive_usage`, never in the mailbox's usage. The store itself refuses every change
//! a client could ask of them (flags, expunge, append, copy or move into, create, rename,
//! delete: [`StoreError::ReadOnlyFolder`]); only [`Op::ArchiveCopy`] adds and only the
//! committer's eviction removes. They are not JMAP Emails of the mailbox (no change-log
//! entry, no email index count): JMAP clients do not see them as the mailbox's messages.
//!
//! ## When it is full
//!
//! Before a copy that would not fit, the committer (the only writer, so the plan holds)
//! drops the oldest archived messages **older than the retention period**
//! (`archive.retention_months`) until it fits; messages inside the period are never
//! dropped. If that does not free enough, the copy is not made (the delivery itself is
//! never refused for the archive's sake) and [`super::Applied::archive_full`] says so.
//! The owner gets a notice at 90 % ([`super::Batch::archive_notice`], sent by
//! [`crate::pipeline::quota`]).
//!
//! Distrusts: folder names from clients (anything at or under [`ARCHIVE`] is reserved).

use std::collections::HashMap;

use jiff::Timestamp;
use sled::Transactional;

use super::batch::{Batch, Op};
use super::blobs::Blob;
use super::changes::ChangeSet;
use super::mailbox::{MailboxRecord, mailbox_key};
use super::messages::{FolderInfo, MessageRecord, create_folder, decode, folder_key, message_key};
use super::tx::{FOLDERS, MAILBOXES, MESSAGES, Tx, TxResult, abort, blob_ref, get_json, put_json};
use super::{Store, StoreError, Trees};
use crate::pec::address::PecAddress;

/// The archive's root folder; reserved in every mailbox.
pub const ARCHIVE: &str = "Archivio di sicurezza";
/// What was delivered to the mailbox.
pub const RECEIVED: &str = "Archivio di sicurezza/Ricevuti";
/// The transport envelopes the mailbox sent.
pub const SENT: &str = "Archivio di sicurezza/Inviati";

/// The notice level, percent of the archive's quota.
pub const NOTICE_LEVEL: u8 = 90;

/// Whether `name` is the archive or in it (case-insensitively: a client must not create
/// a look-alike).
pub fn is_archive(name: &str) -> bool {
    let n = name.as_bytes();
    let a = ARCHIVE.as_bytes();
    n.len() >= a.len()
        && n[..a.len()].eq_ignore_ascii_case(a)
        && (n.len() == a.len() || n[a.len()] == b'/')
}

/// The error for a change asked of the archive.
pub(crate) fn read_only<T>(mbkey: &str, folder: &str) -> TxResult<T> {
    abort(StoreError::ReadOnlyFolder {
        mailbox: mbkey.to_string(),
        folder: folder.to_string(),
    })
}

/// The archive's size and usage, as the owner and the administrator see them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ArchiveState {
    pub usage_bytes: u64,
    pub messages: u64,
    /// 0: the mailbox has no archive.
    pub quota_bytes: u64,
    /// The notice level last sent (0 or [`NOTICE_LEVEL`]).
    pub notified: u8,
}

/// `archive.*` as the store applies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchivePolicy {
    /// The quota of an archive whose mailbox has no size of its own (0: no archive).
    pub default_bytes: u64,
    /// Archived messages younger than this are never dropped.
    pub retention_months: u32,
}

impl Default for ArchivePolicy {
    fn default() -> Self {
        Self {
            default_bytes: 3 << 30,
            retention_months: 30,
        }
    }
}

/// An archived copy to add (expanded by the committer from a delivery or a sent
/// envelope, with the quota it must fit in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveCopy {
    pub mailbox: PecAddress,
    pub folder: &'static str,
    pub blob: Blob,
    pub internal_date: Timestamp,
    /// Set by the committer.
    pub quota: u64,
}

impl Batch {
    /// Archives the transport envelope `blob` that `mailbox` sent.
    pub fn archive_sent(self, mailbox: PecAddress, blob: Blob, at: Timestamp) -> Self {
        self.push(Op::ArchiveCopy(ArchiveCopy {
            mailbox,
            folder: SENT,
            blob,
            internal_date: at,
            quota: 0,
        }))
    }

    /// Moves the archive notice level from `from` to `to` (as [`Batch::quota_notice`]).
    pub fn archive_notice(self, mailbox: PecAddress, from: u8, to: u8) -> Self {
        self.push(Op::ArchiveNotice { mailbox, from, to })
    }
}

fn quota_of(rec: &MailboxRecord, policy: &ArchivePolicy) -> u64 {
    rec.archive_quota.unwrap_or(policy.default_bytes)
}

/// What the committer plans, outside the transaction, for the archive copies of one batch.
#[derive(Default)]
pub(crate) struct Planner {
    /// Per mailbox: the archive's usage as the batch will leave it so far, and the
    /// messages already dropped in it.
    seen: HashMap<String, (u64, Vec<(u64, u32)>)>,
}

impl Planner {
    /// Fills in `copy.quota` and returns the drops that make room for it: the oldest
    /// messages past the retention period, if they are enough (none otherwise).
    pub(crate) fn plan(
        &mut self,
        trees: &Trees,
        policy: &ArchivePolicy,
        now: Timestamp,
        copy: &mut ArchiveCopy,
    ) -> Result<Vec<Op>, StoreError> {
        let k = mailbox_key(&copy.mailbox);
        let Some(v) = trees.mailboxes.get(k.as_bytes())? else {
            // The delivery in the same batch fails with NoSuchMailbox.
            return Ok(Vec::new());
        };
        let rec: MailboxRecord = decode("mailbox", &v)?;
        copy.quota = quota_of(&rec, policy);
        let size = copy.blob.size;
        if copy.quota == 0 {
            // No archive: the transaction skips the copy.
            return Ok(Vec::new());
        }
        let (usage, dropped) = self
            .seen
            .entry(k.clone())
            .or_insert_with(|| (rec.archive_usage, Vec::new()));
        let need = (*usage + size).saturating_sub(copy.quota);
        if need == 0 {
            *usage += size;
            return Ok(Vec::new());
        }
        if size > copy.quota {
            // Could never fit: nothing is dropped for it.
            return Ok(Vec::new());
        }
        let cutoff = now
            .to_zoned(jiff::tz::TimeZone::UTC)
            .checked_sub(jiff::Span::new().months(i64::from(policy.retention_months)))
            .map(|z| z.timestamp())
            .unwrap_or(Timestamp::MIN);
        // Each folder in UID order, which is arrival order: only its oldest copies, and
        // no more of them than could be needed, are read.
        let mut old: Vec<(Timestamp, &'static str, u64, MessageRecord)> = Vec::new();
        for name in [RECEIVED, SENT] {
            let Some(fv) = trees.folders.get(folder_key(&k, name))? else {
                continue;
            };
            let f: FolderInfo = decode("folder", &fv)?;
            let mut enough = 0u64;
            for kv in trees.messages.scan_prefix(f.id.to_be_bytes()) {
                let (_, mv) = kv?;
                let m: MessageRecord = decode("message", &mv)?;
                if m.internal_date >= cutoff || enough >= need {
                    break;
                }
                if !dropped.contains(&(f.id, m.uid)) {
                    enough += m.size;
                    old.push((m.internal_date, name, f.id, m));
                }
            }
        }
        old.sort_by_key(|(at, _, id, m)| (*at, *id, m.uid));
        let mut freed = 0u64;
        let mut take = Vec::new();
        for (_, name, id, m) in old {
            if freed >= need {
                break;
            }
            freed += m.size;
            take.push((name, id, m.uid));
        }
        if freed < need {
            // Not enough past the retention period: keep everything; the copy is skipped.
            return Ok(Vec::new());
        }
        *usage = (*usage + size).saturating_sub(freed);
        let drops: Vec<Op> = take
            .into_iter()
            .map(|(name, id, uid)| {
                dropped.push((id, uid));
                Op::ArchiveDrop {
                    mailbox: copy.mailbox.clone(),
                    folder: name,
                    uid,
                }
            })
            .collect();
        Ok(drops)
    }
}

/// Adds an archived copy; `false` when it does not fit (or the mailbox has no archive).
/// Every change of the archive advances the mailbox's modseq (with an empty change-log
/// entry: no Email of the mailbox's own account changed), which is the state of its
/// read-only JMAP account.
pub(crate) fn apply_copy(
    tx: &Tx,
    log: &mut ChangeSet,
    c: &ArchiveCopy,
    id: u64,
    now: Timestamp,
) -> TxResult<bool> {
    let k = mailbox_key(&c.mailbox);
    let Some(mut mb) = get_json::<MailboxRecord>(&tx.t[MAILBOXES], k.as_bytes())? else {
        return abort(StoreError::NoSuchMailbox(c.mailbox.to_string()));
    };
    if c.quota == 0 || mb.archive_usage.saturating_add(c.blob.size) > c.quota {
        return Ok(false);
    }
    let fk = folder_key(&k, c.folder);
    let mut f = match get_json::<FolderInfo>(&tx.t[FOLDERS], &fk)? {
        Some(f) => f,
        None => {
            if tx.t[FOLDERS].get(folder_key(&k, ARCHIVE))?.is_none() {
                // The root holds no messages; it needs an id of its own.
                create_folder(tx, &k, ARCHIVE, id ^ (1 << 63), now, true)?;
            }
            create_folder(tx, &k, c.folder, id, now, true)?
        }
    };
    let uid = f.uidnext;
    f.uidnext = f.uidnext.saturating_add(1);
    f.messages += 1;
    f.bytes += c.blob.size;
    // Archived copies read as seen: the archive is not a place of unread mail.
    let rec = MessageRecord {
        uid,
        blob: c.blob.id.clone(),
        size: c.blob.size,
        flags: vec!["\\Seen".to_string()],
        internal_date: c.internal_date,
    };
    put_json(&tx.t[MESSAGES], &message_key(f.id, uid), &rec)?;
    put_json(&tx.t[FOLDERS], &fk, &f)?;
    mb.archive_usage += c.blob.size;
    mb.archive_messages += 1;
    put_json(&tx.t[MAILBOXES], k.as_bytes(), &mb)?;
    blob_ref(tx, &c.blob.id, 1)?;
    log.touch(&k);
    Ok(true)
}

/// Removes an archived message planned by [`Planner::plan`].
pub(crate) fn apply_drop(
    tx: &Tx,
    log: &mut ChangeSet,
    mailbox: &PecAddress,
    folder: &str,
    uid: u32,
) -> TxResult<()> {
    let k = mailbox_key(mailbox);
    let Some(mut mb) = get_json::<MailboxRecord>(&tx.t[MAILBOXES], k.as_bytes())? else {
        return abort(StoreError::NoSuchMailbox(mailbox.to_string()));
    };
    let fk = folder_key(&k, folder);
    let Some(mut f) = get_json::<FolderInfo>(&tx.t[FOLDERS], &fk)? else {
        return Ok(());
    };
    let key = message_key(f.id, uid);
    let Some(m) = get_json::<MessageRecord>(&tx.t[MESSAGES], &key)? else {
        return Ok(());
    };
    tx.t[MESSAGES].remove(&key)?;
    f.messages = f.messages.saturating_sub(1);
    f.bytes = f.bytes.saturating_sub(m.size);
    put_json(&tx.t[FOLDERS], &fk, &f)?;
    mb.archive_usage = mb.archive_usage.saturating_sub(m.size);
    mb.archive_messages = mb.archive_messages.saturating_sub(1);
    put_json(&tx.t[MAILBOXES], k.as_bytes(), &mb)?;
    log.touch(&k);
    blob_ref(tx, &m.blob, -1)
}

pub(crate) fn apply_notice(tx: &Tx, mailbox: &PecAddress, from: u8, to: u8) -> TxResult<()> {
    let k = mailbox_key(mailbox);
    let Some(mut rec) = get_json::<MailboxRecord>(&tx.t[MAILBOXES], k.as_bytes())? else {
        return abort(StoreError::NoSuchMailbox(mailbox.to_string()));
    };
    if rec.archive_notice != from {
        return abort(StoreError::QuotaNoticeMoved(mailbox.to_string()));
    }
    rec.archive_notice = to;
    put_json(&tx.t[MAILBOXES], k.as_bytes(), &rec)
}

/// Where the schema-4 migration puts a folder a user made at or under [`ARCHIVE`] before
/// the name was reserved (`… (personale 2)` and so on when that is taken too).
pub const USER_ROOT: &str = "Archivio di sicurezza (personale)";

/// Migration to schema 4, where [`ARCHIVE`] became reserved: a folder a user made at or
/// under that name (any case) would otherwise turn read-only, its messages counted in
/// neither the mailbox nor the archive correctly. Each is renamed under [`USER_ROOT`]
/// (each spelling of the prefix under a root of its own: `… (personale 2)` and so on),
/// its messages, uids, flags and subscription going with it as in an IMAP RENAME, and
/// the JMAP change log records it. The archive's own folders stay: the root the archive
/// code made (its id carries the top bit, see [`apply_copy`]), [`RECEIVED`] and [`SENT`]
/// made with or after it (or, without such a root, while their messages are exactly the
/// mailbox's archived count); a kept child whose root was the user's gets a new root.
/// Then the mailbox's usage and the archive's are counted again from the folders, so
/// whatever was moved is counted where it now is. Idempotent (what it renames is no
/// longer under [`ARCHIVE`]), so a migration interrupted by a crash is done again at the
/// next open. Returns the folders renamed.
pub(crate) fn migrate_user_folders(
    db: &sled::Db,
    trees: &Trees,
    now: Timestamp,
) -> Result<u64, StoreError> {
    use super::changes::Kind;
    use super::messages::folder_prefix;
    const MARK: u64 = 1 << 63;
    let all = super::tx::all_trees(trees);
    let mut renamed = 0;
    for kv in trees.mailboxes.iter() {
        let (k, v) = kv?;
        let mbkey = String::from_utf8_lossy(&k).into_owned();
        let mb: MailboxRecord = decode("mailbox", &v)?;
        let mut names = std::collections::BTreeSet::new();
        let mut under = Vec::new();
        // What stays outside the archive, counted for the mailbox's usage below.
        let (mut usage, mut messages) = (0, 0);
        for fv in trees.folders.scan_prefix(folder_prefix(&mbkey)) {
            let (_, fv) = fv?;
            let f: FolderInfo = decode("folder", &fv)?;
            names.insert(f.name.to_lowercase());
            if !is_archive(&f.name) {
                usage += f.bytes;
                messages += f.messages;
            }
            if is_archive(&f.name) {
                under.push(f);
            }
        }
        // The root the archive code made, and the id its first child got with it.
        let since = under
            .iter()
            .find(|f| f.name == ARCHIVE && f.id & MARK != 0)
            .map(|f| f.id ^ MARK);
        let archived: u64 = under
            .iter()
            .filter(|f| f.name == RECEIVED || f.name == SENT)
            .map(|f| f.messages)
            .sum();
        let own = |f: &FolderInfo| match since {
            Some(base) => {
                (f.name == ARCHIVE && f.id & MARK != 0)
                    || ((f.name == RECEIVED || f.name == SENT) && f.id >= base)
            }
            None => {
                (f.name == ARCHIVE && f.messages == 0)
                    || ((f.name == RECEIVED || f.name == SENT)
                        && mb.archive_messages > 0
                        && archived == mb.archive_messages)
            }
        };
        let (kept, moved): (Vec<FolderInfo>, Vec<FolderInfo>) =
            under.into_iter().partition(|f| own(f));
        if moved.is_empty() {
            continue;
        }
        // Usage counted again where each message now is.
        for f in &moved {
            usage += f.bytes;
            messages += f.messages;
        }
        let a_usage: u64 = kept.iter().map(|f| f.bytes).sum();
        let a_messages: u64 = kept.iter().map(|f| f.messages).sum();
        // Each spelling of the prefix gets the first root under which nothing collides.
        let mut roots: std::collections::BTreeMap<String, String> = Default::default();
        let mut taken = names.clone();
        for f in &moved {
            let spelling = f.name[..ARCHIVE.len()].to_string();
            if roots.contains_key(&spelling) {
                continue;
            }
            let root = (1..)
                .map(|n| match n {
                    1 => USER_ROOT.to_string(),
                    n => format!("Archivio di sicurezza (personale {n})"),
                })
                .find(|root| {
                    let r = root.to_lowercase();
                    taken
                        .iter()
                        .all(|n| !(*n == r || n.starts_with(&format!("{r}/"))))
                })
                .expect("an unbounded range has a free name");
            taken.insert(root.to_lowercase());
            roots.insert(spelling, root);
        }
        let target = |name: &str| {
            format!(
                "{}{}",
                roots[&name[..ARCHIVE.len()]],
                &name[ARCHIVE.len()..]
            )
        };
        let mut new_roots: Vec<(String, u64)> = Vec::new();
        for root in roots.values() {
            if !moved.iter().any(|f| target(&f.name) == *root) {
                new_roots.push((root.clone(), db.generate_id()?));
            }
        }
        // A kept child whose root was the user's (now moved) needs the archive's root back.
        let archive_root = (!kept.is_empty() && !kept.iter().any(|f| f.name == ARCHIVE))
            .then(|| db.generate_id().map(|id| id | MARK))
            .transpose()?;
        let res = all[..].transaction(|t| {
            let tx = Tx { t: t.as_slice() };
            let mut log = ChangeSet::default();
            for f in &moved {
                let mut f = f.clone();
                let to = target(&f.name);
                if tx.t[FOLDERS].get(folder_key(&mbkey, &to))?.is_some() {
                    // Never overwrite a folder: refuse to open rather than lose one.
                    return abort(StoreError::FolderExists {
                        mailbox: mbkey.clone(),
                        folder: to,
                    });
                }
                tx.t[FOLDERS].remove(folder_key(&mbkey, &f.name))?;
                f.name = to;
                put_json(&tx.t[FOLDERS], &folder_key(&mbkey, &f.name), &f)?;
                log.touch(&mbkey).folder(f.id, Kind::Updated);
            }
            for (root, id) in &new_roots {
                // The hierarchy keeps a parent (as IMAP CREATE of a child would make).
                let r = create_folder(&tx, &mbkey, root, *id, now, true)?;
                log.touch(&mbkey).folder(r.id, Kind::Created);
            }
            if let Some(id) = archive_root {
                create_folder(&tx, &mbkey, ARCHIVE, id, now, true)?;
            }
            let Some(mut rec) = get_json::<MailboxRecord>(&tx.t[MAILBOXES], mbkey.as_bytes())?
            else {
                return Ok(());
            };
            (rec.usage_bytes, rec.messages) = (usage, messages);
            (rec.archive_usage, rec.archive_messages) = (a_usage, a_messages);
            put_json(&tx.t[MAILBOXES], mbkey.as_bytes(), &rec)?;
            log.write(&tx)?;
            Ok(())
        });
        match res {
            Ok(()) => {}
            Err(sled::transaction::TransactionError::Abort(e)) => return Err(e),
            Err(sled::transaction::TransactionError::Storage(e)) => return Err(e.into()),
        }
        for f in &moved {
            tracing::warn!(mailbox = %mbkey, from = %f.name, to = %target(&f.name), "a folder named like the security archive was renamed: the name is reserved");
        }
        renamed += moved.len() as u64;
    }
    Ok(renamed)
}

impl Store {
    /// The mailbox's archive; `None` when there is no such mailbox.
    pub fn archive_state(&self, address: &PecAddress) -> Result<Option<ArchiveState>, StoreError> {
        let policy = self.options().archive;
        Ok(self.mailbox_record(address)?.map(|r| ArchiveState {
            usage_bytes: r.archive_usage,
            messages: r.archive_messages,
            quota_bytes: quota_of(&r, &policy),
            notified: r.archive_notice,
        }))
    }

    /// The archived messages of `folder` ([`RECEIVED`] or [`SENT`]), oldest first.
    pub fn archived(
        &self,
        address: &PecAddress,
        folder: &str,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        let k = mailbox_key(address);
        let Some(fv) = self.trees().folders.get(folder_key(&k, folder))? else {
            return Ok(Vec::new());
        };
        let f: FolderInfo = decode("folder", &fv)?;
        let mut out = Vec::new();
        for kv in self.trees().messages.scan_prefix(f.id.to_be_bytes()) {
            let (_, v) = kv?;
            out.push(decode("message", &v)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
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

    fn open(dir: &std::path::Path, clock: Arc<ManualClock>, quota: u64) -> (Store, PecAddress) {
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

    fn archived_bodies(s: &Store, a: &PecAddress, folder: &str) -> Vec<Vec<u8>> {
        s.archived(a, folder)
            .unwrap()
            .iter()
            .map(|m| s.blobs().read(&m.blob).unwrap())
            .collect()
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
        let v = t.remove(folder_key(&k, &tmp)).unwrap().unwrap();
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
        s.messages(a, folder)
            .unwrap()
            .iter()
            .map(|m| s.blobs().read(&m.blob).unwrap())
            .collect()
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
}
