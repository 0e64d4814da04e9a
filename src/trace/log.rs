//! The trace trees inside the store's sled database, and the read side of the log:
//! the tree layout and index keys, record lookups, status and queries.
//!
//! Layout (all integers big-endian so that key order is numeric order):
//!
//! | tree | key | value |
//! |---|---|---|
//! | `trace` | seq (u64) | the record (compact, or JSON in older stores: [`super::stored`]) |
//! | `trace_keys` | tag, first 8 bytes of the key's SHA-256, seq | empty, or a group's seqs ([`super::postings`]) |
//! | `trace_time` | unix ms (u64, sign bit flipped) seq | empty; or 8 bytes `ff`, a sealed segment's first seq: its time span ([`super::spans`]) |
//! | `trace_msgid` | msgid `\0` seq | empty (schema 5 and older) |
//! | `trace_ident` | identificativo `\0` seq | empty (schema 5 and older) |
//! | `trace_mailbox` | lower-cased address `\0` seq | empty (schema 5 and older) |
//! | `checkpoints` | seq (u64) | checkpoint JSON |
//! | `trace_meta` | `anchor` | the anchor checkpoint JSON (after a purge) |
//!
//! On sled stores (schema 7 and later) the `trace` tree keeps only the newest records: the
//! committer seals older ones into files ([`super::segments`]), and every read of a
//! record by seq goes through [`TraceTrees::record`] and
//! [`TraceTrees::records_in`](super::records), which look in both. The indexes stay in
//! the trees whatever holds the record; a sealed segment's `trace_keys` entries are
//! grouped, one per key and segment (schema 8: [`super::postings`]).
//!
//! `trace_keys` (schema 6) indexes the Message-ID (tag 1), the identificativo (tag 2)
//! and each mailbox (tag 3) of a record by a 64-bit hash of the index key
//! ([`super::msgid_key`], [`super::mailbox_key`]): 17 bytes an entry, whatever the
//! length of the text, against 40–80 bytes in the three trees it replaces. A query reads
//! the records the hash points at and keeps only those whose fields match, so a
//! collision costs a read, never a wrong answer. The three older trees are no longer
//! written; what a store of schema 5 put there is still found (a query reads both) and
//! purged.
//!
//! Writes happen only in the store's committer (`crate::store::commit`); this module
//! never writes.
//!
//! The walk of the log for export and live verification is in [`super::walk`]; the
//! planning of retention purges in [`super::retention`] (both add methods to
//! [`TraceLog`]).
//!
//! An export ends with a signed [`ExportTrailer`](super::checkpoint::ExportTrailer)
//! naming its last record, so a [`TraceLog`] can export only with a signer: the store's
//! own (the running server), or one given with [`TraceLog::with_signer`] (the CLI on a
//! closed store, from `signing.cert`/`signing.key`).

use std::sync::Arc;

use jiff::Timestamp;
use serde::Serialize;

use super::{Checkpoint, GENESIS_HASH, TraceRecord, mailbox_key, msgid_key};
use crate::pec::smime::Signer;

/// Errors reading the trace trees.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("trace database error: {0}")]
    Db(#[from] crate::store::kv::Error),
    #[error("trace entry {key} cannot be decoded: {detail}")]
    Corrupt { key: String, detail: String },
    #[error("writing the export: {0}")]
    Io(#[from] std::io::Error),
    #[error(
        "an export must end with a signed trailer, and no signing key is available (signing.cert / signing.key)"
    )]
    NoSigner,
    #[error("signing the export trailer: {0}")]
    Signing(String),
}

/// The secondary indexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Index {
    /// `trace_keys`: Message-ID, identificativo and mailboxes, hashed.
    Keys,
    Time,
    /// The trees of schema 5 and older: read and purged, no longer written.
    OldMsgId,
    OldIdent,
    OldMailbox,
}

#[cfg(test)]
thread_local! {
    /// Run by a query on this thread between reading the records' own index entries (or
    /// time entries) and reading the groups (or spans) of the sealed ones: where a seal
    /// landing in between is simulated.
    pub(crate) static BEFORE_GROUPS: std::cell::RefCell<Option<Box<dyn FnMut()>>> =
        std::cell::RefCell::new(None);
}

/// The tags of `trace_keys`.
const TAG_MSGID: u8 = 1;
const TAG_IDENT: u8 = 2;
const TAG_MAILBOX: u8 = 3;

/// Handles on the trace trees (cheap to clone).
#[derive(Debug, Clone)]
pub struct TraceTrees {
    pub(crate) records: crate::store::kv::Tree,
    pub(crate) keys: crate::store::kv::Tree,
    pub(crate) by_msgid: crate::store::kv::Tree,
    pub(crate) by_ident: crate::store::kv::Tree,
    pub(crate) by_mailbox: crate::store::kv::Tree,
    pub(crate) by_time: crate::store::kv::Tree,
    pub(crate) checkpoints: crate::store::kv::Tree,
    pub(crate) meta: crate::store::kv::Tree,
    /// The sealed segments holding the older records (sled stores; none on PostgreSQL).
    pub(crate) sealed: Option<Arc<super::segments::Segments>>,
    /// The `trace_keys` and `trace_time` entries of the records in the tree, in memory
    /// (sled stores, schema 9: [`super::tail`]); none on PostgreSQL, where they are in
    /// the tables.
    pub(crate) tail: Option<Arc<super::tail::Tail>>,
}

pub(crate) const ANCHOR_KEY: &[u8] = b"anchor";

impl TraceTrees {
    pub(crate) fn open(db: &crate::store::kv::Db) -> Result<Self, crate::store::kv::Error> {
        Ok(Self {
            records: db.open_tree("trace")?,
            keys: db.open_tree("trace_keys")?,
            by_msgid: db.open_tree("trace_msgid")?,
            by_ident: db.open_tree("trace_ident")?,
            by_mailbox: db.open_tree("trace_mailbox")?,
            by_time: db.open_tree("trace_time")?,
            checkpoints: db.open_tree("checkpoints")?,
            meta: db.open_tree("trace_meta")?,
            sealed: None,
            tail: None,
        })
    }
}

pub(crate) fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

pub(super) fn time_prefix(t: Timestamp) -> [u8; 8] {
    ((t.as_millisecond() as u64) ^ (1 << 63)).to_be_bytes()
}

fn prefixed(prefix: &str, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + 9);
    k.extend_from_slice(prefix.as_bytes());
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The `trace_keys` prefix of the index key `text` under `tag`.
pub(super) fn hashed_prefix(tag: u8, text: &str) -> [u8; 9] {
    let digest = openssl::sha::sha256(text.as_bytes());
    let mut k = [0u8; 9];
    k[0] = tag;
    k[1..].copy_from_slice(&digest[..8]);
    k
}

fn hashed(tag: u8, text: &str, seq: u64) -> Vec<u8> {
    [&hashed_prefix(tag, text)[..], &seq.to_be_bytes()].concat()
}

/// The texts a record is indexed under, with their `trace_keys` tags: its Message-ID,
/// its identificativo and each of its mailboxes.
pub(super) fn index_texts(r: &TraceRecord) -> Vec<(u8, String)> {
    let id = |v: &Option<String>| v.as_deref().map(msgid_key).filter(|m| !m.is_empty());
    let mut out = Vec::with_capacity(3 + r.recipients.len());
    out.extend(id(&r.msgid).map(|m| (TAG_MSGID, m)));
    out.extend(id(&r.ident).map(|i| (TAG_IDENT, i)));
    out.extend(r.mailbox_keys().into_iter().map(|m| (TAG_MAILBOX, m)));
    out
}

/// The index entries a record gets when it is written.
pub(crate) fn index_keys(r: &TraceRecord) -> Vec<(Index, Vec<u8>)> {
    let mut out: Vec<_> = index_texts(r)
        .into_iter()
        .map(|(tag, text)| (Index::Keys, hashed(tag, &text, r.seq)))
        .collect();
    out.push((Index::Time, time_key(r)));
    out
}

pub(super) fn time_key(r: &TraceRecord) -> Vec<u8> {
    let mut t = time_prefix(r.time).to_vec();
    t.extend_from_slice(&r.seq.to_be_bytes());
    t
}

/// The index entries schema 5 and older gave a record (stored as JSON or in compact
/// form 1): what a purge removes for such a record.
pub(crate) fn old_index_keys(r: &TraceRecord) -> Vec<(Index, Vec<u8>)> {
    let mut out = vec![(Index::Time, time_key(r))];
    for (tag, text) in index_texts(r) {
        let tree = match tag {
            TAG_MSGID => Index::OldMsgId,
            TAG_IDENT => Index::OldIdent,
            _ => Index::OldMailbox,
        };
        out.push((tree, prefixed(&text, r.seq)));
    }
    out
}

pub(crate) fn seq_of_index_key(k: &[u8]) -> Option<u64> {
    let tail: [u8; 8] = k.get(k.len().checked_sub(8)?..)?.try_into().ok()?;
    Some(u64::from_be_bytes(tail))
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(
    key: &[u8],
    v: &[u8],
) -> Result<T, TraceError> {
    serde_json::from_slice(v).map_err(|e| TraceError::Corrupt {
        key: hex::encode(key),
        detail: e.to_string(),
    })
}

/// A query; all given criteria must match. The most selective index is used
/// (Message-ID, then identificativo, then mailbox, then time).
#[derive(Debug, Clone, Default)]
pub struct TraceQuery {
    pub msgid: Option<String>,
    pub ident: Option<String>,
    pub mailbox: Option<String>,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    pub limit: Option<usize>,
}

impl TraceQuery {
    fn matches(&self, r: &TraceRecord) -> bool {
        let eq = |want: &Option<String>, have: &Option<String>| match want {
            None => true,
            Some(w) => have.as_deref().map(msgid_key).as_deref() == Some(msgid_key(w).as_str()),
        };
        eq(&self.msgid, &r.msgid)
            && eq(&self.ident, &r.ident)
            && self
                .mailbox
                .as_ref()
                .is_none_or(|m| r.mailbox_keys().contains(&mailbox_key(m)))
            && self.since.is_none_or(|s| r.time >= s)
            && self.until.is_none_or(|u| r.time <= u)
    }
}

/// Where the chain starts and ends.
#[derive(Debug, Clone, Serialize)]
pub struct TraceStatus {
    pub first_seq: Option<u64>,
    pub head_seq: u64,
    pub head_hash: String,
    pub anchor: Option<Checkpoint>,
    pub last_checkpoint: Option<Checkpoint>,
}

/// Read access to the trace log.
#[derive(Debug, Clone)]
pub struct TraceLog {
    pub(crate) trees: TraceTrees,
    /// Signs export trailers.
    pub(super) signer: Option<Arc<Signer>>,
}

impl TraceLog {
    pub(crate) fn new(trees: TraceTrees) -> Self {
        Self {
            trees,
            signer: None,
        }
    }

    /// The same log, signing export trailers with `signer`.
    pub fn with_signer(mut self, signer: Option<Arc<Signer>>) -> Self {
        if signer.is_some() {
            self.signer = signer;
        }
        self
    }

    /// The record `seq`, if present.
    pub fn get(&self, seq: u64) -> Result<Option<TraceRecord>, TraceError> {
        Chain::new(self).get(seq)
    }

    /// The `prev_hash` of record `seq`: the hash of record `seq - 1`, genesis for
    /// record 1, or the hash of the anchor if the anchor is the record before it.
    /// `None` for a record at or below the anchor whose predecessor is gone: an
    /// interrupted purge left it, and it is no longer part of the log (readers skip it,
    /// as the walk does). The anchor is read only when the predecessor is missing.
    fn prev_hash_of(&self, seq: u64) -> Result<Option<String>, TraceError> {
        if seq <= 1 {
            return Ok(Some(GENESIS_HASH.to_string()));
        }
        let k = seq_key(seq - 1);
        if let Some(v) = self.trees.record(seq - 1)? {
            return Ok(Some(super::stored::decode(&k, &v)?.hash().to_string()));
        }
        match self.anchor()? {
            Some(a) if a.seq.checked_add(1) == Some(seq) => Ok(Some(a.head_hash)),
            Some(a) if seq <= a.seq => Ok(None),
            _ => Err(TraceError::Corrupt {
                key: hex::encode(seq_key(seq)),
                detail: format!(
                    "record {} is missing, so this record's prev_hash is unknown",
                    seq - 1
                ),
            }),
        }
    }

    /// The anchor checkpoint left by the last purge.
    pub fn anchor(&self) -> Result<Option<Checkpoint>, TraceError> {
        match self.trees.meta.get(ANCHOR_KEY)? {
            Some(v) => Ok(Some(decode(ANCHOR_KEY, &v)?)),
            None => Ok(None),
        }
    }

    /// Records not yet sealed whose index entries are held in memory
    /// ([`super::tail`]; 0 on PostgreSQL, which keeps them in its tables).
    pub fn records_in_memory(&self) -> usize {
        self.trees.tail.as_ref().map_or(0, |t| t.records())
    }

    /// The head of the chain: `(seq, hash)` of the last record, or of the anchor, or
    /// `(0, GENESIS_HASH)`.
    pub fn head(&self) -> Result<(u64, String), TraceError> {
        if let Some((seq, v)) = self.trees.last_record()? {
            let r = super::stored::decode(&seq_key(seq), &v)?;
            return Ok((r.seq(), r.hash().to_string()));
        }
        Ok(match self.anchor()? {
            Some(a) => (a.seq, a.head_hash),
            None => (0, GENESIS_HASH.to_string()),
        })
    }

    pub fn last_checkpoint(&self) -> Result<Option<Checkpoint>, TraceError> {
        match self.trees.checkpoints.last()? {
            Some((k, v)) => Ok(Some(decode(&k, &v)?)),
            None => Ok(None),
        }
    }

    /// The first signed checkpoint at or after record `seq` (the one covering it), if any.
    pub fn checkpoint_covering(&self, seq: u64) -> Result<Option<Checkpoint>, TraceError> {
        match self.trees.checkpoints.range(seq_key(seq)..).next() {
            Some(kv) => {
                let (k, v) = kv?;
                Ok(Some(decode(&k, &v)?))
            }
            None => Ok(None),
        }
    }

    pub fn status(&self) -> Result<TraceStatus, TraceError> {
        let anchor = self.anchor()?;
        let floor = anchor.as_ref().map_or(0, |a| a.seq);
        let first_seq = self
            .trees
            .records_in(floor + 1, u64::MAX)
            .next()
            .transpose()?
            .map(|(seq, _)| seq);
        let (head_seq, head_hash) = self.head()?;
        Ok(TraceStatus {
            first_seq,
            head_seq,
            head_hash,
            anchor,
            last_checkpoint: self.last_checkpoint()?,
        })
    }

    /// Records matching `q`, in index order (seq order, or time order for a pure time
    /// range).
    pub fn query(&self, q: &TraceQuery) -> Result<Vec<TraceRecord>, TraceError> {
        let limit = q.limit.unwrap_or(usize::MAX);
        let mut out = Vec::new();
        let mut chain = Chain::new(self);
        self.scan(q, |s| {
            if let Some(r) = chain.complete(s)? {
                out.push(r);
            }
            Ok(out.len() < limit)
        })?;
        Ok(out)
    }

    /// What the records matching `q` say, without their place in the chain (seq,
    /// `prev_hash`, `hash`): for a reader that decides on their content, which then
    /// needs no read of each record's predecessor (a round trip each on PostgreSQL).
    /// Unlike [`TraceLog::query`], a record left by an interrupted purge may be among
    /// them.
    pub fn events(&self, q: &TraceQuery) -> Result<Vec<super::TraceEvent>, TraceError> {
        let limit = q.limit.unwrap_or(usize::MAX);
        let mut out = Vec::new();
        self.scan(q, |s| {
            out.push(s.into_event());
            Ok(out.len() < limit)
        })?;
        Ok(out)
    }

    /// Calls `f` with each stored record matching `q` (none if its limit is 0), in
    /// index order, while `f` returns true. The most selective index is used
    /// (Message-ID, then identificativo, then mailbox, then time).
    fn scan(
        &self,
        q: &TraceQuery,
        mut f: impl FnMut(super::stored::Stored) -> Result<bool, TraceError>,
    ) -> Result<(), TraceError> {
        if q.limit == Some(0) {
            return Ok(());
        }
        let mut matching = |s: super::stored::Stored| {
            if q.matches(s.unchained()) {
                f(s)
            } else {
                Ok(true)
            }
        };
        let by_key = |tag: u8,
                      text: String,
                      old: &crate::store::kv::Tree|
         -> Box<dyn Iterator<Item = Result<u64, TraceError>> + '_> {
            let prefix = hashed_prefix(tag, &text);
            let own = index_seqs(self.trees.keys.scan_prefix(prefix));
            let mut k = text.into_bytes();
            k.push(0);
            let old = index_seqs(old.scan_prefix(k));
            if self.trees.sealed.is_none() {
                // PostgreSQL: no groups.
                return Box::new(merge_by_seq(own, old));
            }
            // The records' own entries are read whole before the groups: a record whose
            // entries a seal groups meanwhile is then seen in one or the other (or both,
            // given once), never in neither (the seal writes the groups, then drops the
            // entries). They are the unsealed records': in memory ([`super::tail`]), and
            // in the tree those an older pecd wrote (the tree keeps at most two
            // segments' worth of records, more only while an older store's backlog is
            // sealed).
            let mut own = match own.collect::<Result<Vec<u64>, _>>() {
                Ok(own) => own,
                Err(e) => return Box::new(std::iter::once(Err(e))),
            };
            if let Some(tail) = &self.trees.tail {
                own.extend(tail.seqs(prefix));
                own.sort_unstable();
                own.dedup();
            }
            #[cfg(test)]
            BEFORE_GROUPS.with(|h| {
                if let Some(f) = h.borrow_mut().as_mut() {
                    f();
                }
            });
            let groups = index_seqs(
                self.trees
                    .keys
                    .scan_prefix(super::postings::group_prefix(prefix)),
            );
            Box::new(merge_by_seq(
                merge_by_seq(groups, own.into_iter().map(Ok)),
                old,
            ))
        };
        // Seqs, each with its record's stored form when the index read it already, and
        // the time entry that named it in a scan by time.
        type Found = Result<(u64, Option<sled::IVec>, Option<[u8; 16]>), TraceError>;
        fn with_seq<'a>(
            seqs: Box<dyn Iterator<Item = Result<u64, TraceError>> + 'a>,
        ) -> Box<dyn Iterator<Item = Found> + 'a> {
            Box::new(seqs.map(|s| s.map(|s| (s, None, None))))
        }
        let found: Option<Box<dyn Iterator<Item = Found> + '_>> = if let Some(m) = &q.msgid {
            Some(with_seq(by_key(
                TAG_MSGID,
                msgid_key(m),
                &self.trees.by_msgid,
            )))
        } else if let Some(i) = &q.ident {
            Some(with_seq(by_key(
                TAG_IDENT,
                msgid_key(i),
                &self.trees.by_ident,
            )))
        } else if let Some(m) = &q.mailbox {
            Some(with_seq(by_key(
                TAG_MAILBOX,
                mailbox_key(m),
                &self.trees.by_mailbox,
            )))
        } else if q.since.is_some() || q.until.is_some() {
            let mut lo = [0u8; 16];
            lo[..8].copy_from_slice(&q.since.map_or([0u8; 8], time_prefix));
            let mut hi = [0xffu8; 16];
            if let Some(u) = q.until {
                hi[..8].copy_from_slice(&time_prefix(u));
            }
            // The unsealed records' entries and the sealed segments' spans
            // ([`super::spans`]).
            Some(Box::new(
                super::spans::TimeScan::new(&self.trees, lo, hi).map(|kv| {
                    let (k, bytes) = kv?;
                    Ok((seq_of_index_key(&k).unwrap_or(0), bytes, Some(k)))
                }),
            ))
        } else {
            None
        };
        match found {
            Some(found) => {
                for f in found {
                    let (seq, bytes, time) = f?;
                    let k = seq_key(seq);
                    let v = match bytes {
                        Some(v) => Some(v),
                        None => self.trees.record(seq)?,
                    };
                    let Some(v) = v else { continue };
                    let s = super::stored::decode(&k, &v)?;
                    // An entry of a transaction that did not commit, whose seq the next
                    // record took: that record is given at its own time entry.
                    if time.is_some_and(|t| time_key(s.unchained()) != t) {
                        continue;
                    }
                    if !matching(s)? {
                        break;
                    }
                }
            }
            None => {
                for kv in self.trees.records_in(1, u64::MAX) {
                    let (seq, v) = kv?;
                    if !matching(super::stored::decode(&seq_key(seq), &v)?)? {
                        break;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Completes records read one by one, remembering the last one so that records read in
/// seq order need no second read for their `prev_hash`.
struct Chain<'a> {
    log: &'a TraceLog,
    last: Option<(u64, String)>,
}

impl<'a> Chain<'a> {
    fn new(log: &'a TraceLog) -> Self {
        Self { log, last: None }
    }

    fn get(&mut self, seq: u64) -> Result<Option<TraceRecord>, TraceError> {
        match self.log.trees.record(seq)? {
            Some(v) => self.complete(super::stored::decode(&seq_key(seq), &v)?),
            None => Ok(None),
        }
    }

    /// The record with its `prev_hash`; `None` for one an interrupted purge left behind
    /// ([`TraceLog::prev_hash_of`]).
    fn complete(&mut self, s: super::stored::Stored) -> Result<Option<TraceRecord>, TraceError> {
        let seq = s.seq();
        let r = if !s.needs_prev() {
            s.chained("")
        } else {
            let prev = match &self.last {
                Some((last, hash)) if last.checked_add(1) == Some(seq) => Some(hash.clone()),
                _ => self.log.prev_hash_of(seq)?,
            };
            match prev {
                Some(p) => s.chained(&p),
                None => return Ok(None),
            }
        };
        self.last = Some((seq, r.hash.clone()));
        Ok(Some(r))
    }
}

/// The seqs an index scan names, in key order: one per entry, or a group's
/// ([`super::postings`]).
fn index_seqs(it: crate::store::kv::Iter) -> impl Iterator<Item = Result<u64, TraceError>> {
    it.flat_map(|kv| {
        match kv
            .map_err(TraceError::from)
            .and_then(|(k, v)| super::postings::entry_seqs(&k, &v))
        {
            Ok(seqs) => seqs.into_iter().map(Ok).collect::<Vec<_>>(),
            Err(e) => vec![Err(e)],
        }
    })
}

/// Two runs of seqs, each in seq order (an index scan: the seq ends every key and the
/// keys before it are equal; a group's seqs lie between its key's seq and the next
/// key's), merged in seq order without repeats.
fn merge_by_seq(
    a: impl Iterator<Item = Result<u64, TraceError>>,
    b: impl Iterator<Item = Result<u64, TraceError>>,
) -> impl Iterator<Item = Result<u64, TraceError>> {
    crate::store::kv::merge_sorted(a, b, |s| *s)
}

#[cfg(test)]
mod tests;
