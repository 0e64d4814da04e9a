//! The index entries of the records still in the `trace` tree, held in memory (sled
//! stores, schema 9): a record's own `trace_keys` entries (tag, hash of the key, seq) and
//! its `trace_time` entry (time, seq: [`super::log`]) are no longer written to the trees
//! when the committer appends the record. They live here until the segment holding the
//! record is sealed, when the committer writes the segment's groups
//! ([`super::postings`]) and time span ([`super::spans`]) and then drops them from here.
//! Each entry cost sled an insert at the append and a removal at the seal: about 21 of
//! each per two-provider message at the sender, 40 % of the committer's tree writes.
//!
//! Nothing is lost in a crash: the index is built again at open from the records the
//! tree holds after sled's recovery ([`Tail::build`]), at most two segments' worth
//! (the committer seals the older ones). Records whose own entries are in the tree are
//! left out: those an older pecd appended before the store was opened by this one, and
//! those a copy of the store wrote ([`crate::store::migrate`]); the first seq indexed
//! in memory is kept in `trace_meta` ([`FROM_KEY`], absent: from the first), so that a
//! store with a long unsealed backlog is not read whole at each open.
//!
//! The committer adds a record's entries inside the transaction that writes it, before
//! it commits: a reader never finds a committed record missing from the index. Entries
//! added by a transaction that did not commit are dropped after it ([`Tail::drop_after`]);
//! until then they name seqs that are free (no record), and a query reads the record an
//! entry points at and keeps it only when its fields match, as after a hash collision,
//! so such an entry costs a read, never a wrong answer.
//!
//! What it distrusts: the records it is built from (one that does not decode is left
//! out, logged).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::log::TraceError;

/// In `trace_meta`: the first seq whose entries are kept in memory rather than in the
/// tree (u64, big-endian).
pub(crate) const FROM_KEY: &[u8] = b"tail_from";

/// The in-memory index entries of the unsealed records.
#[derive(Debug, Default)]
pub(crate) struct Tail {
    inner: RwLock<Inner>,
}

/// What one record is indexed under.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Indexed {
    /// Its `trace_keys` prefixes (tag and hash of the key).
    pub keys: Vec<[u8; 9]>,
    /// Its `trace_time` key (time, seq).
    pub time: Option<[u8; 16]>,
}

impl Indexed {
    /// What record `seq` (stored form) is indexed under: nothing for a record of schema
    /// 5 or older (indexed in the older trees) or one that does not decode (logged;
    /// queries by key or time do not find it, and verifying the log reports it).
    pub(crate) fn of(seq: u64, stored: &[u8]) -> Self {
        let s = match super::stored::decode(&super::log::seq_key(seq), stored) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(seq, error = %e, "a trace record does not decode: it is not indexed");
                return Self::default();
            }
        };
        if !s.needs_prev() {
            return Self::default();
        }
        Self::of_record(s.unchained())
    }

    /// What record `r` is indexed under (the committer's view, as it appends it; the
    /// same as [`super::log::index_keys`] gives, cut to the prefixes).
    pub(crate) fn of_record(r: &super::TraceRecord) -> Self {
        Self {
            keys: super::log::index_texts(r)
                .into_iter()
                .map(|(tag, text)| super::log::hashed_prefix(tag, &text))
                .collect(),
            time: super::log::time_key(r).try_into().ok(),
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// (tag and hash, seq): what a query by key scans, in the tree's key order.
    keys: BTreeSet<([u8; 9], u64)>,
    /// Time entries (time, seq): what a query by time scans.
    times: BTreeSet<[u8; 16]>,
    /// seq → what it is indexed under: what a seal, a purge or a replacement drops.
    by_seq: BTreeMap<u64, Indexed>,
}

impl Inner {
    fn drop_seqs(&mut self, gone: BTreeMap<u64, Indexed>) {
        for (seq, ix) in gone {
            for p in ix.keys {
                self.keys.remove(&(p, seq));
            }
            if let Some(t) = ix.time {
                self.times.remove(&t);
            }
        }
    }
}

impl Tail {
    /// The index of `records` (seq and stored form): those of the `trace` tree after the
    /// sealed ones and from [`FROM_KEY`].
    pub(crate) fn build(
        records: impl Iterator<Item = Result<(u64, sled::IVec), TraceError>>,
    ) -> Result<Self, TraceError> {
        let tail = Self::default();
        for r in records {
            let (seq, v) = r?;
            tail.add(seq, Indexed::of(seq, &v));
        }
        Ok(tail)
    }

    /// Indexes record `seq`, replacing what was indexed under that seq before (a
    /// transaction that did not commit).
    pub(crate) fn add(&self, seq: u64, ix: Indexed) {
        let mut g = self.write();
        if let Some(old) = g.by_seq.remove(&seq) {
            g.drop_seqs(BTreeMap::from([(seq, old)]));
        }
        for p in &ix.keys {
            g.keys.insert((*p, seq));
        }
        if let Some(t) = ix.time {
            g.times.insert(t);
        }
        g.by_seq.insert(seq, ix);
    }

    /// The seqs indexed under `prefix`, in order.
    pub(crate) fn seqs(&self, prefix: [u8; 9]) -> Vec<u64> {
        self.read()
            .keys
            .range((prefix, 0)..=(prefix, u64::MAX))
            .map(|(_, seq)| *seq)
            .collect()
    }

    /// The time entries from `lo` to `hi` (included), in order.
    pub(crate) fn times(&self, lo: [u8; 16], hi: [u8; 16]) -> Vec<[u8; 16]> {
        if lo > hi {
            return Vec::new();
        }
        self.read().times.range(lo..=hi).copied().collect()
    }

    /// Every `trace_keys` entry as its key in the tree would be (tag, hash, seq), in
    /// key order: what a copy of the store writes as the records' own entries.
    pub(crate) fn keys(&self) -> Vec<Vec<u8>> {
        self.read()
            .keys
            .iter()
            .map(|(p, seq)| [&p[..], &seq.to_be_bytes()].concat())
            .collect()
    }

    /// Drops the entries of the seqs up to `last` (sealed, their groups and span
    /// written; or purged).
    pub(crate) fn drop_through(&self, last: u64) {
        let mut g = self.write();
        let kept = match last.checked_add(1) {
            Some(next) => g.by_seq.split_off(&next),
            None => BTreeMap::new(),
        };
        let gone = std::mem::replace(&mut g.by_seq, kept);
        g.drop_seqs(gone);
    }

    /// Drops the entries of the seqs after `head` (appended by a transaction that did
    /// not commit).
    pub(crate) fn drop_after(&self, head: u64) {
        let Some(next) = head.checked_add(1) else {
            return;
        };
        let mut g = self.write();
        let gone = g.by_seq.split_off(&next);
        g.drop_seqs(gone);
    }

    /// How many records are indexed.
    pub(crate) fn records(&self) -> usize {
        self.read().by_seq.len()
    }

    // A panic while the lock was held (none of the code under it can panic but an
    // allocation failure) leaves sets that are still consistent: every change above is
    // an insert or a removal of whole entries.
    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    //! Their unwraps see only values the tests make.
    use super::*;

    fn p(b: u8) -> [u8; 9] {
        [b; 9]
    }

    fn ix(seq: u64, keys: &[u8]) -> Indexed {
        let mut time = [0u8; 16];
        time[..8].copy_from_slice(&(100 - seq).to_be_bytes());
        time[8..].copy_from_slice(&seq.to_be_bytes());
        Indexed {
            keys: keys.iter().map(|b| p(*b)).collect(),
            time: Some(time),
        }
    }

    fn time_seqs(t: &Tail) -> Vec<u64> {
        t.times([0; 16], [0xff; 16])
            .iter()
            .map(|k| u64::from_be_bytes(k[8..].try_into().unwrap()))
            .collect()
    }

    #[test]
    fn entries_come_back_by_key_and_by_time_in_order_and_go_with_their_segment() {
        let t = Tail::default();
        t.add(7, ix(7, &[1, 3]));
        t.add(5, ix(5, &[1, 2]));
        t.add(9, ix(9, &[1]));
        assert_eq!(t.seqs(p(1)), [5, 7, 9]);
        assert_eq!(t.seqs(p(2)), [5]);
        assert_eq!(t.seqs(p(4)), Vec::<u64>::new());
        assert_eq!(
            t.keys()[0],
            [&p(1)[..], &5u64.to_be_bytes()].concat(),
            "key order"
        );
        assert_eq!(t.keys().len(), 5);
        // Later seqs carry earlier times here: time order.
        assert_eq!(time_seqs(&t), [9, 7, 5]);
        let (lo, hi) = (ix(7, &[]).time.unwrap(), ix(5, &[]).time.unwrap());
        assert_eq!(t.times(lo, hi).len(), 2);
        assert!(t.times(hi, lo).is_empty());
        t.drop_through(7);
        assert_eq!(t.seqs(p(1)), [9]);
        assert_eq!(t.seqs(p(3)), Vec::<u64>::new());
        assert_eq!(time_seqs(&t), [9]);
        assert_eq!((t.records(), t.keys().len()), (1, 1));
        t.drop_through(u64::MAX);
        assert_eq!(
            (t.records(), t.keys().len(), time_seqs(&t).len()),
            (0, 0, 0)
        );
    }

    #[test]
    fn a_seq_taken_again_is_indexed_only_under_its_new_keys_and_a_failed_tail_goes() {
        let t = Tail::default();
        t.add(3, ix(3, &[1, 2]));
        let mut again = ix(3, &[2, 4]);
        again.time.as_mut().unwrap()[0] = 1;
        t.add(3, again.clone());
        assert_eq!(t.seqs(p(1)), Vec::<u64>::new());
        assert_eq!(t.seqs(p(2)), [3]);
        assert_eq!(t.seqs(p(4)), [3]);
        assert_eq!(t.times([0; 16], [0xff; 16]), [again.time.unwrap()]);
        assert_eq!((t.records(), t.keys().len()), (1, 2));
        t.add(4, ix(4, &[2]));
        t.add(5, ix(5, &[2]));
        t.drop_after(3);
        assert_eq!(t.seqs(p(2)), [3]);
        assert_eq!(time_seqs(&t), [3]);
        t.drop_after(u64::MAX);
        assert_eq!(t.records(), 1);
    }
}
