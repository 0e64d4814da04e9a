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
//! A store from before the name was reserved is migrated by [`migrate`] (schema 4).
//!
//! Distrusts: folder names from clients (anything at or under [`ARCHIVE`] is reserved).

use std::collections::HashMap;

use jiff::Timestamp;

use super::batch::{Batch, Op};
use super::blobs::Blob;
use super::changes::ChangeSet;
use super::mailbox::{MailboxRecord, mailbox_key};
use super::messages::{
    FolderInfo, MessageRecord, create_folder, decode, decode_message, encode_message, folder_key,
    get_message, message_key,
};
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

/// Copies made before this time are past the retention period at `now`: a copy that
/// needs room may drop them.
pub(crate) fn retention_cutoff(policy: &ArchivePolicy, now: Timestamp) -> Timestamp {
    now.to_zoned(jiff::tz::TimeZone::UTC)
        .checked_sub(jiff::Span::new().months(i64::from(policy.retention_months)))
        .map(|z| z.timestamp())
        .unwrap_or(Timestamp::MIN)
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
        let cutoff = retention_cutoff(policy, now);
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
                let m = decode_message(&mv)?;
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
    tx.t[MESSAGES].insert(message_key(f.id, uid), encode_message(&rec))?;
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
    let Some(m) = get_message(&tx.t[MESSAGES], &key)? else {
        return Ok(());
    };
    tx.t[MESSAGES].remove(key)?;
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
    super::quota::apply_notice_level(tx, mailbox, from, to, |r| &mut r.archive_notice)
}

mod migrate;
pub use migrate::USER_ROOT;
pub(crate) use migrate::migrate_user_folders;

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
            out.push(decode_message(&v)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
pub(crate) mod tests;
