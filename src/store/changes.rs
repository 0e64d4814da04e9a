//! The per-mailbox change log behind JMAP `Email/changes` and `Mailbox/changes` (RFC 8620
//! §5.2, RFC 8621 §2.2 and §4.3): a modification sequence (modseq) per mailbox, a
//! per-mailbox blob index, and one log entry per committed batch. All three are written
//! by the committer **inside the batch's transaction**, so they can never disagree with
//! the messages and folders they describe.
//!
//! ## What it owns
//!
//! Two trees (in the transaction's fixed order, see `super::tx`):
//!
//! - `changelog`: `mailbox-key \x01` → the state, modseq (u64 BE) ++ oldest (u64 BE);
//!   `mailbox-key \0 modseq (u64 BE)` → the [`Entry`] of that modseq (JSON). Entries are
//!   kept for every modseq in `(oldest, modseq]`, at most [`MAX_LOG_ENTRIES`]: writing one
//!   past that removes the oldest (O(1) per batch).
//! - `email_index`: `mailbox-key \0 blob-id` (its 32 raw bytes; 64 hex digits before
//!   schema 6, rebuilt at open) → how many message records of the mailbox,
//!   across its folders, have that blob as body (u32 BE; no key at zero).
//!
//! ## Model
//!
//! A JMAP Email is one *content* per mailbox: the records of a mailbox whose body is the
//! same content-addressed blob are one Email, with the [`BlobId`] as id. A record added
//! for a blob not yet in the mailbox creates it, one more record updates it, removing the
//! last record destroys it; a flag change updates it. A JMAP Mailbox is a folder, with its
//! numeric folder id as id; messages coming and going change its counts (updated), as does
//! a change of `\Seen` (its unread count), a rename or a subscription change.
//!
//! A batch that changes anything of a mailbox that a mail client can see advances that
//! mailbox's modseq by **one** and writes **one** entry with the net changes of the batch
//! ([`ChangeSet`] accumulates them during the transaction; [`ChangeSet::write`] writes
//! them at its end): an `add_flags` over 1000 UIDs is one counter update and one entry.
//! Administrative changes (password, quota, options) are not visible to clients and do not
//! count.
//!
//! Deleting a mailbox removes its index and its entries but keeps its state as a
//! tombstone, advanced by one with `oldest = modseq`: a mailbox added again at that
//! address continues from there, so a state a client kept from the deleted mailbox is
//! refused as too old instead of being answered with another mailbox's changes.
//!
//! A store of schema 2 or older is migrated at open by [`build_email_index`]: the index is
//! derived from the message records; modseq starts at 0 with an empty log.
//!
//! ## Untrusted input
//!
//! `since` and `max_changes` come from JMAP clients: every value is answered, a `since`
//! outside the kept window (older, or never issued) with [`StoreError::ChangesTooOld`],
//! a single batch with more ids than `max_changes` with [`StoreError::ChangesTooMany`]
//! (both are JMAP's `cannotCalculateChanges`). Stored entries are decoded with a typed
//! error, never a panic.
//!
//! ## Readers
//!
//! Reads happen outside transactions while the committer writes. [`Store::changes_since`]
//! reads the state first and then checks that the entries it uses are contiguous from
//! `since`, so it answers a consistent prefix (with `has_more_changes`) when the newest
//! entry is not visible yet. A caller pairing data with a state should read the state
//! ([`Store::modseq`]) *before* the data: a state older than the data only makes the
//! next `/changes` repeat some changes, never miss one. A caller that needs the state its
//! own batch produced reads [`super::Applied::modseqs`].

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::blobs::BlobId;
use super::mailbox::mailbox_key;
use super::messages::{decode_message, folder_prefix};
use super::tx::{CHANGELOG, EMAIL_INDEX, Tx, TxResult, abort};
use super::{Store, StoreError, Trees};
use crate::pec::address::PecAddress;

/// Log entries kept per mailbox: a client whose state is older than this many committed
/// batches of its mailbox gets [`StoreError::ChangesTooOld`] and must resynchronise.
pub const MAX_LOG_ENTRIES: u64 = 10_000;

/// What happened to one id within a window of modseqs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Kind {
    #[serde(rename = "c")]
    Created,
    #[serde(rename = "u")]
    Updated,
    #[serde(rename = "d")]
    Destroyed,
}

/// The net effect of `prev` followed by `next` (RFC 8620 §5.2): created then updated is
/// created; created then destroyed is nothing (the id is omitted); destroyed then created
/// again (the same content delivered anew) is updated.
fn merge(prev: Option<Kind>, next: Kind) -> Option<Kind> {
    use Kind::*;
    match (prev, next) {
        (None, k) => Some(k),
        (Some(Created), Destroyed) => None,
        (Some(Created), _) => Some(Created),
        (Some(Destroyed), Created) => Some(Updated),
        // Nothing but a creation can follow a destruction.
        (Some(Destroyed), _) => Some(Destroyed),
        (Some(Updated), Destroyed) => Some(Destroyed),
        (Some(Updated), _) => Some(Updated),
    }
}

fn note<K: Ord + Clone>(map: &mut BTreeMap<K, Kind>, id: &K, k: Kind) {
    match merge(map.get(id).copied(), k) {
        Some(k) => drop(map.insert(id.clone(), k)),
        None => drop(map.remove(id)),
    }
}

/// How many ids `map` would hold after absorbing `more`.
fn len_after<K: Ord>(map: &BTreeMap<K, Kind>, more: &BTreeMap<K, Kind>) -> usize {
    let mut n = map.len();
    for (id, k) in more {
        match (map.get(id), merge(map.get(id).copied(), *k)) {
            (None, Some(_)) => n += 1,
            (Some(_), None) => n -= 1,
            _ => {}
        }
    }
    n
}

/// The changes of one mailbox at one modseq (or, merged, over a window).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry {
    #[serde(rename = "e", default, skip_serializing_if = "BTreeMap::is_empty")]
    emails: BTreeMap<BlobId, Kind>,
    #[serde(rename = "f", default, skip_serializing_if = "BTreeMap::is_empty")]
    folders: BTreeMap<u64, Kind>,
}

impl Entry {
    pub(crate) fn email(&mut self, id: &BlobId, k: Kind) {
        note(&mut self.emails, id, k);
    }

    pub(crate) fn folder(&mut self, id: u64, k: Kind) {
        note(&mut self.folders, &id, k);
    }

    fn absorb(&mut self, later: Entry) {
        for (id, k) in later.emails {
            note(&mut self.emails, &id, k);
        }
        for (id, k) in later.folders {
            note(&mut self.folders, &id, k);
        }
    }
}

/// The changes of the mailboxes a batch touches, accumulated during its transaction.
/// Built afresh for every attempt of the transaction (sled may retry the closure).
#[derive(Debug, Default)]
pub(crate) struct ChangeSet {
    by_mailbox: BTreeMap<String, Entry>,
}

impl ChangeSet {
    /// The entry of mailbox `mbkey`: touching it is enough to advance its modseq (a change
    /// visible to clients without an id of its own, e.g. a subscription to a name that
    /// has no folder).
    pub(crate) fn touch(&mut self, mbkey: &str) -> &mut Entry {
        self.by_mailbox.entry(mbkey.to_string()).or_default()
    }

    /// Advances the modseq of every mailbox touched and writes its entry; returns the
    /// modseqs reached, by mailbox key.
    pub(crate) fn write(self, tx: &Tx) -> TxResult<Vec<(String, u64)>> {
        let t = &tx.t[CHANGELOG];
        let mut reached = Vec::with_capacity(self.by_mailbox.len());
        for (mbkey, entry) in self.by_mailbox {
            let (modseq, mut oldest) = read_state_tx(tx, &mbkey)?;
            // 2^64 batches of one mailbox are out of reach; saturating keeps this total.
            let m = modseq.saturating_add(1);
            let bytes = match serde_json::to_vec(&entry) {
                Ok(b) => b,
                Err(e) => {
                    return abort(StoreError::Corrupt {
                        what: "serializing a change log entry".into(),
                        detail: e.to_string(),
                    });
                }
            };
            t.insert(entry_key(&mbkey, m), bytes)?;
            // Normally one removal; a loop only if MAX_LOG_ENTRIES was lowered since.
            while m - oldest > MAX_LOG_ENTRIES {
                oldest += 1;
                t.remove(entry_key(&mbkey, oldest))?;
            }
            t.insert(state_key(&mbkey), &state_bytes(m, oldest))?;
            reached.push((mbkey, m));
        }
        Ok(reached)
    }
}

fn state_key(mbkey: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(mbkey.len() + 1);
    k.extend_from_slice(mbkey.as_bytes());
    k.push(1);
    k
}

/// Prefix of the entries of a mailbox (and of its index keys): the state key is outside.
pub(crate) fn mailbox_prefix(mbkey: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(mbkey.len() + 9);
    k.extend_from_slice(mbkey.as_bytes());
    k.push(0);
    k
}

fn entry_key(mbkey: &str, modseq: u64) -> Vec<u8> {
    let mut k = mailbox_prefix(mbkey);
    k.extend_from_slice(&modseq.to_be_bytes());
    k
}

pub(crate) fn index_key(mbkey: &str, blob: &BlobId) -> Vec<u8> {
    let mut k = mailbox_prefix(mbkey);
    k.extend_from_slice(&blob.raw());
    k
}

fn state_bytes(modseq: u64, oldest: u64) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[..8].copy_from_slice(&modseq.to_be_bytes());
    v[8..].copy_from_slice(&oldest.to_be_bytes());
    v
}

/// `(modseq, oldest)`; a mailbox without a state (new, or migrated) is at `(0, 0)`.
fn parse_state(mbkey: &str, v: Option<&[u8]>) -> Result<(u64, u64), StoreError> {
    let Some(v) = v else { return Ok((0, 0)) };
    let bad = || StoreError::Corrupt {
        what: format!("change log state of {mbkey}"),
        detail: hex::encode(v),
    };
    let modseq = v.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok());
    let oldest = v.get(8..).and_then(|b| <[u8; 8]>::try_from(b).ok());
    match (modseq, oldest) {
        (Some(m), Some(o)) if u64::from_be_bytes(o) <= u64::from_be_bytes(m) => {
            Ok((u64::from_be_bytes(m), u64::from_be_bytes(o)))
        }
        _ => Err(bad()),
    }
}

fn read_state_tx(tx: &Tx, mbkey: &str) -> TxResult<(u64, u64)> {
    let v = tx.t[CHANGELOG].get(state_key(mbkey))?;
    match parse_state(mbkey, v.as_deref()) {
        Ok(s) => Ok(s),
        Err(e) => abort(e),
    }
}

fn count_of(v: Option<&[u8]>) -> u32 {
    v.and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map_or(0, u32::from_be_bytes)
}

/// Adds `delta` to the records of `blob` in the mailbox; returns the new count.
fn index_add(tx: &Tx, mbkey: &str, blob: &BlobId, delta: i64) -> TxResult<u32> {
    let t = &tx.t[EMAIL_INDEX];
    let key = index_key(mbkey, blob);
    let n = (i64::from(count_of(t.get(&key)?.as_deref())) + delta).clamp(0, i64::from(u32::MAX));
    if n == 0 {
        t.remove(key)?;
    } else {
        t.insert(key, &(n as u32).to_be_bytes())?;
    }
    Ok(n as u32)
}

/// A message record with body `blob` was added to folder `folder_id` of `mbkey`.
pub(crate) fn record_added(
    tx: &Tx,
    log: &mut ChangeSet,
    mbkey: &str,
    blob: &BlobId,
    folder_id: u64,
) -> TxResult<()> {
    let n = index_add(tx, mbkey, blob, 1)?;
    let e = log.touch(mbkey);
    e.email(blob, if n == 1 { Kind::Created } else { Kind::Updated });
    e.folder(folder_id, Kind::Updated);
    Ok(())
}

/// A message record with body `blob` was removed from folder `folder_id` of `mbkey`.
pub(crate) fn record_removed(
    tx: &Tx,
    log: &mut ChangeSet,
    mbkey: &str,
    blob: &BlobId,
    folder_id: u64,
) -> TxResult<()> {
    let n = index_add(tx, mbkey, blob, -1)?;
    let e = log.touch(mbkey);
    e.email(
        blob,
        if n == 0 {
            Kind::Destroyed
        } else {
            Kind::Updated
        },
    );
    e.folder(folder_id, Kind::Updated);
    Ok(())
}

/// The flags of a record with body `blob` in folder `folder_id` changed; `seen_changed`
/// when `\Seen` came or went (the folder's unread count changed).
pub(crate) fn record_flagged(
    log: &mut ChangeSet,
    mbkey: &str,
    blob: &BlobId,
    folder_id: u64,
    seen_changed: bool,
) {
    let e = log.touch(mbkey);
    e.email(blob, Kind::Updated);
    if seen_changed {
        e.folder(folder_id, Kind::Updated);
    }
}

/// Whether the flags hold `\Seen` (IMAP flags are case-insensitive).
pub(crate) fn has_seen(flags: &[String]) -> bool {
    flags.iter().any(|x| x.eq_ignore_ascii_case("\\Seen"))
}

/// See [`super::Batch::if_modseq`]. Compares the stored modseq: ops of the same batch
/// before this one have not advanced it yet (that happens at the end of the batch).
pub(crate) fn apply_if_modseq(tx: &Tx, mailbox: &PecAddress, expected: u64) -> TxResult<()> {
    let mbkey = mailbox_key(mailbox);
    let (found, _) = read_state_tx(tx, &mbkey)?;
    if found != expected {
        return abort(StoreError::ModseqMismatch {
            mailbox: mailbox.to_string(),
            expected,
            found,
        });
    }
    Ok(())
}

/// The mailbox is being deleted (its entries and index keys are removed by the expanded
/// batch): its state becomes a tombstone one modseq further, with nothing kept before it.
pub(crate) fn apply_mailbox_deleted(tx: &Tx, log: &mut ChangeSet, mbkey: &str) -> TxResult<()> {
    log.by_mailbox.remove(mbkey);
    let (modseq, _) = read_state_tx(tx, mbkey)?;
    let m = modseq.saturating_add(1);
    tx.t[CHANGELOG].insert(state_key(mbkey), &state_bytes(m, m))?;
    Ok(())
}

/// Keys to remove with a mailbox: `(tree, key)` for its entries and its index.
pub(crate) fn mailbox_keys(
    trees: &Trees,
    mbkey: &str,
) -> Result<Vec<(usize, Vec<u8>)>, StoreError> {
    let mut out = Vec::new();
    let prefix = mailbox_prefix(mbkey);
    for (tree, t) in [
        (CHANGELOG, &trees.changelog),
        (EMAIL_INDEX, &trees.email_index),
    ] {
        for kv in t.scan_prefix(&prefix) {
            let (k, _) = kv?;
            out.push((tree, k.to_vec()));
        }
    }
    Ok(out)
}

/// Migration to schema 3: derives the blob index of every mailbox from its message
/// records. Idempotent (each mailbox's index is replaced as a whole), so a migration
/// interrupted by a crash is simply done again at the next open.
pub(crate) fn build_email_index(trees: &Trees) -> Result<u64, StoreError> {
    let mut mailboxes = 0;
    for kv in trees.mailboxes.iter() {
        let (k, _) = kv?;
        let mbkey = String::from_utf8_lossy(&k).into_owned();
        let mut counts: BTreeMap<BlobId, u32> = BTreeMap::new();
        for fv in trees.folders.scan_prefix(folder_prefix(&mbkey)) {
            let (_, fv) = fv?;
            let f: super::messages::FolderInfo = decode("folder", &fv)?;
            if super::archive::is_archive(&f.name) {
                // Not JMAP Emails of the mailbox (see `super::archive`).
                continue;
            }
            for mv in trees.messages.scan_prefix(f.id.to_be_bytes()) {
                let (_, mv) = mv?;
                let m = decode_message(&mv)?;
                let n = counts.entry(m.blob).or_default();
                *n = n.saturating_add(1);
            }
        }
        let mut batch = super::kv::Batch::default();
        for kv in trees.email_index.scan_prefix(mailbox_prefix(&mbkey)) {
            batch.remove(kv?.0);
        }
        for (blob, n) in &counts {
            batch.insert(index_key(&mbkey, blob), n.to_be_bytes());
        }
        trees.email_index.apply_batch(batch)?;
        mailboxes += 1;
    }
    Ok(mailboxes)
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, v: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(v).map_err(|e| StoreError::Corrupt {
        what: what.into(),
        detail: e.to_string(),
    })
}

/// Created, updated and destroyed ids of one kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IdChanges<T> {
    pub created: Vec<T>,
    pub updated: Vec<T>,
    pub destroyed: Vec<T>,
}

impl<T> Default for IdChanges<T> {
    fn default() -> Self {
        Self {
            created: Vec::new(),
            updated: Vec::new(),
            destroyed: Vec::new(),
        }
    }
}

impl<T: Clone> IdChanges<T> {
    fn from_map(map: BTreeMap<T, Kind>) -> Self {
        let mut out = Self::default();
        for (id, k) in map {
            match k {
                Kind::Created => out.created.push(id),
                Kind::Updated => out.updated.push(id),
                Kind::Destroyed => out.destroyed.push(id),
            }
        }
        out
    }

    /// Ids in all three lists.
    pub fn len(&self) -> usize {
        self.created.len() + self.updated.len() + self.destroyed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The net changes of a mailbox between two modseqs (RFC 8620 §5.2): an id created and
/// destroyed within the window is omitted, one created and updated is only created, and
/// each id is in one list at most. Ids are sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Changes {
    /// The `since` asked for.
    pub old_modseq: u64,
    /// The modseq these changes lead to: the current one, or less when
    /// `has_more_changes`.
    pub new_modseq: u64,
    /// More changes follow `new_modseq`: ask again from there.
    pub has_more_changes: bool,
    /// JMAP Email ids: the blobs of the mailbox's message records.
    pub emails: IdChanges<BlobId>,
    /// JMAP Mailbox ids: folder ids ([`super::FolderInfo::id`]).
    pub folders: IdChanges<u64>,
}

/// Which ids [`Store::changes_since_of`] reports and counts against `max_changes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// JMAP Email: blob ids.
    Email,
    /// JMAP Mailbox: folder ids.
    Mailbox,
}

impl Store {
    fn change_state(&self, mailbox: &PecAddress) -> Result<(String, u64, u64), StoreError> {
        let mbkey = mailbox_key(mailbox);
        if !self.trees().mailboxes.contains_key(mbkey.as_bytes())? {
            return Err(StoreError::NoSuchMailbox(mailbox.to_string()));
        }
        let v = self.trees().changelog.get(state_key(&mbkey))?;
        let (modseq, oldest) = parse_state(&mbkey, v.as_deref())?;
        Ok((mbkey, modseq, oldest))
    }

    /// The modseq of a mailbox: advanced by one by every committed batch that changed
    /// something of it that clients see. JMAP's Email and Mailbox state.
    pub fn modseq(&self, mailbox: &PecAddress) -> Result<u64, StoreError> {
        Ok(self.change_state(mailbox)?.1)
    }

    /// The net changes of Emails and folders of `mailbox` since modseq `since`, at most
    /// `max_changes` ids of each kind (at least one is taken; `usize::MAX` for no limit).
    /// Pages end on a modseq: when the next one would exceed the limit, the answer stops
    /// before it with `has_more_changes`.
    ///
    /// Errors: [`StoreError::ChangesTooOld`] for a `since` older than the log keeps (or
    /// newer than the current modseq), [`StoreError::ChangesTooMany`] when the first
    /// modseq after `since` alone has more ids than `max_changes`.
    pub fn changes_since(
        &self,
        mailbox: &PecAddress,
        since: u64,
        max_changes: usize,
    ) -> Result<Changes, StoreError> {
        self.changes_window(mailbox, since, max_changes, None)
    }

    /// As [`Store::changes_since`], reporting and counting only the ids of `kind` (the
    /// other lists are empty): what `Email/changes` and `Mailbox/changes` each need.
    pub fn changes_since_of(
        &self,
        mailbox: &PecAddress,
        kind: ChangeKind,
        since: u64,
        max_changes: usize,
    ) -> Result<Changes, StoreError> {
        self.changes_window(mailbox, since, max_changes, Some(kind))
    }

    fn changes_window(
        &self,
        mailbox: &PecAddress,
        since: u64,
        max_changes: usize,
        only: Option<ChangeKind>,
    ) -> Result<Changes, StoreError> {
        let max = max_changes.max(1);
        let (mbkey, current, oldest) = self.change_state(mailbox)?;
        let too_old = |oldest: u64| StoreError::ChangesTooOld {
            mailbox: mailbox.to_string(),
            since,
            oldest,
            current,
        };
        if since < oldest || since > current {
            return Err(too_old(oldest));
        }
        let mut acc = Entry::default();
        let mut reached = since;
        let from = entry_key(&mbkey, since.saturating_add(1));
        let to = entry_key(&mbkey, current);
        let mut has_more = false;
        // Nothing to read when `since == current` (and sled is never asked a reversed range).
        let window = (since < current).then(|| self.trees().changelog.range(from..=to));
        for kv in window.into_iter().flatten() {
            let (k, v) = kv?;
            let m = k
                .get(k.len().saturating_sub(8)..)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map_or(0, u64::from_be_bytes);
            if reached.checked_add(1) != Some(m) {
                if reached == since {
                    // The first entry is gone: pruned since the state was read?
                    let v = self.trees().changelog.get(state_key(&mbkey))?;
                    let (_, oldest) = parse_state(&mbkey, v.as_deref())?;
                    if since < oldest {
                        return Err(too_old(oldest));
                    }
                }
                // An entry of a batch still being committed: stop before it.
                break;
            }
            let mut e: Entry = decode("change log entry", &v)?;
            match only {
                Some(ChangeKind::Email) => e.folders.clear(),
                Some(ChangeKind::Mailbox) => e.emails.clear(),
                None => {}
            }
            if len_after(&acc.emails, &e.emails) > max || len_after(&acc.folders, &e.folders) > max
            {
                if reached == since {
                    return Err(StoreError::ChangesTooMany {
                        mailbox: mailbox.to_string(),
                        modseq: m,
                        max: max_changes,
                    });
                }
                has_more = true;
                break;
            }
            acc.absorb(e);
            reached = m;
        }
        Ok(Changes {
            old_modseq: since,
            new_modseq: reached,
            has_more_changes: has_more || reached < current,
            emails: IdChanges::from_map(acc.emails),
            folders: IdChanges::from_map(acc.folders),
        })
    }

    /// The Emails of a mailbox: each blob with the number of its message records (across
    /// folders). Read [`Store::modseq`] before, to pair it with a state.
    pub fn email_index(&self, mailbox: &PecAddress) -> Result<HashMap<BlobId, u32>, StoreError> {
        let (mbkey, _, _) = self.change_state(mailbox)?;
        let prefix = mailbox_prefix(&mbkey);
        let mut out = HashMap::new();
        for kv in self.trees().email_index.scan_prefix(&prefix) {
            let (k, v) = kv?;
            let id = BlobId::from_raw(k.get(prefix.len()..).unwrap_or_default()).map_err(|e| {
                StoreError::Corrupt {
                    what: format!("email index key of {mbkey}"),
                    detail: e.to_string(),
                }
            })?;
            out.insert(id, count_of(Some(&v)));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
