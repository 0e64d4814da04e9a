//! The transaction layer under the committer: the fixed order of the trees inside one
//! transaction ([`super::kv::Db::transaction`]), typed get/put helpers, blob reference counting, and the
//! application of one [`Op`] (each module's `apply_*` does the work for its trees).
//! Only the committer ([`super::commit`]) runs these functions.

use jiff::Timestamp;
use sled::transaction::ConflictableTransactionError;

use super::batch::{Applied, Op};
use super::blobs::BlobId;
use super::changes::{self, ChangeSet};
pub(crate) use super::kv::TxResult;
use super::kv::{Tree, TxTree};
use super::{StoreError, Trees, cards, mailbox, messages, pending, queue};
use crate::trace::log::{ANCHOR_KEY, Index, index_keys, seq_key};

pub(crate) const META: usize = 0;
pub(crate) const MAILBOXES: usize = 1;
pub(crate) const FOLDERS: usize = 2;
pub(crate) const MESSAGES: usize = 3;
pub(crate) const BLOBREFS: usize = 4;
pub(crate) const QUEUE: usize = 5;
pub(crate) const QUEUE_DUE: usize = 6;
pub(crate) const PENDING: usize = 7;
pub(crate) const PENDING_DUE: usize = 8;
pub(crate) const IDEM: usize = 9;
pub(crate) const TRACE: usize = 10;
pub(crate) const T_MSGID: usize = 11;
pub(crate) const T_IDENT: usize = 12;
pub(crate) const T_MAILBOX: usize = 13;
pub(crate) const T_TIME: usize = 14;
pub(crate) const CHECKPOINTS: usize = 15;
pub(crate) const TRACE_META: usize = 16;
pub(crate) const CHANGELOG: usize = 17;
pub(crate) const EMAIL_INDEX: usize = 18;
pub(crate) const CARDS: usize = 19;
pub(crate) const T_KEYS: usize = 20;

pub(crate) fn all_trees(t: &Trees) -> Vec<Tree> {
    vec![
        t.meta.clone(),
        t.mailboxes.clone(),
        t.folders.clone(),
        t.messages.clone(),
        t.blobrefs.clone(),
        t.queue.clone(),
        t.queue_due.clone(),
        t.pending.clone(),
        t.pending_due.clone(),
        t.idem.clone(),
        t.trace.records.clone(),
        t.trace.by_msgid.clone(),
        t.trace.by_ident.clone(),
        t.trace.by_mailbox.clone(),
        t.trace.by_time.clone(),
        t.trace.checkpoints.clone(),
        t.trace.meta.clone(),
        t.changelog.clone(),
        t.email_index.clone(),
        t.cards.clone(),
        t.trace.keys.clone(),
    ]
}

/// The trees inside a transaction, indexed by the constants above.
pub(crate) struct Tx<'a> {
    pub t: &'a [TxTree<'a>],
    /// Where the appended records' `trace_keys` entries go instead of the tree (sled
    /// stores once open: [`crate::trace::tail`]).
    pub tail: Option<&'a crate::trace::tail::Tail>,
    /// The queue's floors, lowered before each due-index entry is written
    /// ([`queue::Floors`]).
    pub floors: Option<&'a queue::Floors>,
}

pub(crate) fn abort<T>(e: StoreError) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(e))
}

pub(crate) fn get_json<T: serde::de::DeserializeOwned>(
    t: &TxTree<'_>,
    key: &[u8],
) -> TxResult<Option<T>> {
    match t.get(key)? {
        None => Ok(None),
        Some(v) => match serde_json::from_slice(&v) {
            Ok(x) => Ok(Some(x)),
            Err(e) => abort(StoreError::Corrupt {
                what: String::from_utf8_lossy(key).into_owned(),
                detail: e.to_string(),
            }),
        },
    }
}

pub(crate) fn put_json<T: serde::Serialize>(t: &TxTree<'_>, key: &[u8], v: &T) -> TxResult<()> {
    match serde_json::to_vec(v) {
        Ok(bytes) => t.insert(key, bytes),
        Err(e) => abort(StoreError::Corrupt {
            what: "serializing".into(),
            detail: e.to_string(),
        }),
    }
}

pub(crate) fn be_u64(v: &[u8]) -> u64 {
    <[u8; 8]>::try_from(v).map(u64::from_be_bytes).unwrap_or(0)
}

/// Adds `delta` to the reference count of a blob (removing the entry at zero).
pub(crate) fn blob_ref(tx: &Tx, id: &BlobId, delta: i64) -> TxResult<()> {
    let t = &tx.t[BLOBREFS];
    let k = super::keys::blobref_key(id);
    let n = t.get(k)?.map_or(0, |v| be_u64(&v)) as i64 + delta;
    if n <= 0 {
        t.remove(k)?;
    } else {
        t.insert(&k, &(n as u64).to_be_bytes())?;
    }
    Ok(())
}

/// The tree (of [`all_trees`]) that holds a trace record's index entries of kind `index`.
pub(crate) fn index_tree(index: Index) -> usize {
    match index {
        Index::Keys => T_KEYS,
        Index::Time => T_TIME,
        // Not written since schema 6 (`index_keys` gives none); purges still remove them.
        Index::OldMsgId => T_MSGID,
        Index::OldIdent => T_IDENT,
        Index::OldMailbox => T_MAILBOX,
    }
}

pub(crate) fn apply_op(
    tx: &Tx,
    op: &Op,
    id: u64,
    now: Timestamp,
    head: &mut (u64, String),
    applied: &mut Applied,
    log: &mut ChangeSet,
) -> TxResult<()> {
    match op {
        Op::Claim(key) => {
            let k = super::keys::claim_key(key);
            if tx.t[IDEM].get(k)?.is_some() {
                return abort(StoreError::AlreadyClaimed(key.clone()));
            }
            tx.t[IDEM].insert(&k, &now.as_millisecond().to_be_bytes())?;
        }
        Op::Deliver(d) => applied.delivered.push(messages::apply_deliver(tx, log, d)?),
        Op::Trace(ev) => {
            let rec = ev.clone().into_record(head.0 + 1, &head.1);
            tx.t[TRACE].insert(seq_key(rec.seq), crate::trace::stored::encode(&rec))?;
            match tx.tail {
                // Indexed in memory before the transaction commits (and again if it runs
                // again), instead of in the trees.
                Some(tail) => tail.add(rec.seq, crate::trace::tail::Indexed::of_record(&rec)),
                None => {
                    for (index, key) in index_keys(&rec) {
                        tx.t[index_tree(index)].insert(key, &[])?;
                    }
                }
            }
            applied.trace.push((rec.seq, rec.hash.clone()));
            *head = (rec.seq, rec.hash);
        }
        Op::Enqueue(n) => {
            queue::apply_enqueue(tx, id, n)?;
            applied.queued.push(id);
        }
        Op::QueueRetry {
            id,
            next_attempt,
            error,
        } => queue::apply_retry(tx, *id, *next_attempt, error)?,
        Op::QueueDone { id } => queue::apply_done(tx, *id)?,
        Op::QueueLease {
            id: item,
            seen,
            until,
        } => {
            if let Some(leased) = queue::apply_lease(tx, *item, *seen, *until, id)? {
                applied.leased.push(leased);
            }
        }
        Op::QueueFence { id, lease } => queue::apply_fence(tx, *id, *lease)?,
        Op::PendingPut(e) => pending::apply_put(tx, e)?,
        Op::PendingMessage(ident, m) => pending::apply_message(tx, ident, m)?,
        Op::PendingTakenInCharge { ident, recipient } => {
            pending::apply_taken_in_charge(tx, ident, recipient)?
        }
        Op::PendingNotice12h { ident, recipient } => {
            pending::apply_notice_12h(tx, ident, recipient)?
        }
        Op::PendingResolve { ident, recipient } => pending::apply_resolve(tx, ident, recipient)?,
        Op::MailboxAdd(rec) => mailbox::apply_add(tx, log, rec, id)?,
        Op::Notify { mailbox, change } => super::notify::apply(tx, mailbox, change)?,
        Op::QuotaNotice { mailbox, from, to } => {
            super::quota::apply_quota_notice(tx, mailbox, *from, *to)?
        }
        Op::SetFilters { mailbox, rules } => mailbox::apply_set_filters(tx, mailbox, rules)?,
        Op::CardAdd { mailbox, card } => cards::apply_add(tx, mailbox, card)?,
        Op::CardRemove { mailbox, sha256 } => cards::apply_remove(tx, mailbox, sha256)?,
        Op::MailboxUpdate {
            address,
            password,
            quota,
            options,
        } => mailbox::apply_update(tx, address, password, quota, options)?,
        Op::FolderCreate { mailbox, name } => {
            messages::apply_folder_create(tx, log, mailbox, name, id, now)?
        }
        Op::FolderRename { mailbox, from, to } => {
            messages::apply_folder_rename(tx, log, mailbox, from, to)?
        }
        Op::Subscribe {
            mailbox,
            name,
            subscribed,
        } => messages::apply_subscribe(tx, log, mailbox, name, *subscribed)?,
        Op::KeepSubscription { mailbox, name } => {
            messages::apply_keep_subscription(tx, log, mailbox, name)?
        }
        Op::SetFlags {
            mailbox,
            folder,
            uid,
            flags,
        } => messages::apply_set_flags(tx, log, mailbox, folder, *uid, flags)?,
        Op::Expunge {
            mailbox,
            folder,
            uid,
        } => messages::apply_expunge(tx, log, mailbox, folder, *uid)?,
        Op::AddFlags {
            mailbox,
            folder,
            uidvalidity,
            uids,
            flags,
        } => messages::apply_add_flags(tx, log, mailbox, folder, *uidvalidity, uids, flags)?,
        Op::IfModseq { mailbox, modseq } => changes::apply_if_modseq(tx, mailbox, *modseq)?,
        Op::BlobUnref(b) => blob_ref(tx, b, -1)?,
        Op::ArchiveCopy(c) => {
            if !super::archive::apply_copy(tx, log, c, id, now)? {
                applied.archive_full.push(c.mailbox.to_string());
            }
        }
        Op::ArchiveDrop {
            mailbox,
            folder,
            uid,
        } => super::archive::apply_drop(tx, log, mailbox, folder, *uid)?,
        Op::ArchiveNotice { mailbox, from, to } => {
            super::archive::apply_notice(tx, mailbox, *from, *to)?
        }
        Op::Raw { tree, key, value } => match value {
            Some(v) => {
                if let (QUEUE_DUE, Some(f)) = (*tree, tx.floors) {
                    f.lower(key);
                }
                tx.t[*tree].insert(key.as_slice(), v.as_slice())?
            }
            None => tx.t[*tree].remove(key.as_slice())?,
        },
        Op::Checkpoint(cp) => put_json(&tx.t[CHECKPOINTS], &seq_key(cp.seq), cp)?,
        Op::SetAnchor(cp) => put_json(&tx.t[TRACE_META], ANCHOR_KEY, cp)?,
        // The committer expanded these into the removal of what they contain; they come
        // last, with the folder's id for a folder (see `Committer::expand`).
        Op::MailboxDelete(address) => {
            changes::apply_mailbox_deleted(tx, log, &mailbox::mailbox_key(address))?
        }
        Op::FolderDelete { mailbox, name } => {
            messages::apply_folder_delete(tx, log, mailbox, name, id)?
        }
    }
    Ok(())
}
