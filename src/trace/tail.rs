//! The `trace_keys` entries of the records still in the `trace` tree, held in memory
//! (sled stores, schema 9). A record's own entries (tag, hash of the key, seq:
//! [`super::log`]) are no longer written to the tree when the committer appends the
//! record: they live here until the segment holding the record is sealed, when the
//! committer writes the segment's groups ([`super::postings`]) and then drops them from
//! here. Each entry cost sled an insert at the append and a removal at the seal (a third
//! of the committer's tree writes per message).
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
//! out, logged, as when its segment is grouped).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// In `trace_meta`: the first seq whose entries are kept in memory rather than in the
/// tree (u64, big-endian).
pub(crate) const FROM_KEY: &[u8] = b"tail_from";

/// The in-memory `trace_keys` entries of the unsealed records.
#[derive(Debug, Default)]
pub(crate) struct Tail {
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// (tag and hash, seq): what a query scans, in the tree's key order.
    entries: BTreeSet<([u8; 9], u64)>,
    /// seq → the prefixes it is indexed under: what a seal, a purge or a replacement
    /// drops.
    by_seq: BTreeMap<u64, Vec<[u8; 9]>>,
}

impl Inner {
    fn drop_seqs(&mut self, gone: BTreeMap<u64, Vec<[u8; 9]>>) {
        for (seq, prefixes) in gone {
            for p in prefixes {
                self.entries.remove(&(p, seq));
            }
        }
    }
}

impl Tail {
    /// The index of `records` (seq and stored form): those of the `trace` tree after the
    /// sealed ones and from [`FROM_KEY`].
    pub(crate) fn build(
        records: impl Iterator<Item = Result<(u64, sled::IVec), super::log::TraceError>>,
    ) -> Result<Self, super::log::TraceError> {
        let tail = Self::default();
        for r in records {
            let (seq, v) = r?;
            tail.add(seq, super::postings::prefixes(seq, &v));
        }
        Ok(tail)
    }

    /// Indexes record `seq` under `prefixes` (tag and hash each), replacing what was
    /// indexed under that seq before (a transaction that did not commit).
    pub(crate) fn add(&self, seq: u64, prefixes: Vec<[u8; 9]>) {
        let mut g = self.write();
        if let Some(old) = g.by_seq.remove(&seq) {
            g.drop_seqs(BTreeMap::from([(seq, old)]));
        }
        for p in &prefixes {
            g.entries.insert((*p, seq));
        }
        g.by_seq.insert(seq, prefixes);
    }

    /// The seqs indexed under `prefix`, in order.
    pub(crate) fn seqs(&self, prefix: [u8; 9]) -> Vec<u64> {
        self.read()
            .entries
            .range((prefix, 0)..=(prefix, u64::MAX))
            .map(|(_, seq)| *seq)
            .collect()
    }

    /// Every entry as its key in `trace_keys` would be (tag, hash, seq), in key order:
    /// what a copy of the store writes as the records' own entries.
    pub(crate) fn keys(&self) -> Vec<Vec<u8>> {
        self.read()
            .entries
            .iter()
            .map(|(p, seq)| [&p[..], &seq.to_be_bytes()].concat())
            .collect()
    }

    /// Drops the entries of the seqs up to `last` (sealed, their groups written; or
    /// purged).
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
    use super::*;

    fn p(b: u8) -> [u8; 9] {
        [b; 9]
    }

    #[test]
    fn entries_come_back_by_key_in_seq_order_and_go_with_their_segment() {
        let t = Tail::default();
        t.add(7, vec![p(1), p(3)]);
        t.add(5, vec![p(1), p(2)]);
        t.add(9, vec![p(1)]);
        assert_eq!(t.seqs(p(1)), [5, 7, 9]);
        assert_eq!(t.seqs(p(2)), [5]);
        assert_eq!(t.seqs(p(4)), Vec::<u64>::new());
        assert_eq!(
            t.keys()[0],
            [&p(1)[..], &5u64.to_be_bytes()].concat(),
            "key order"
        );
        assert_eq!(t.keys().len(), 5);
        t.drop_through(7);
        assert_eq!(t.seqs(p(1)), [9]);
        assert_eq!(t.seqs(p(3)), Vec::<u64>::new());
        assert_eq!((t.records(), t.keys().len()), (1, 1));
        t.drop_through(u64::MAX);
        assert_eq!((t.records(), t.keys().len()), (0, 0));
    }

    #[test]
    fn a_seq_taken_again_is_indexed_only_under_its_new_keys() {
        let t = Tail::default();
        t.add(3, vec![p(1), p(2)]);
        t.add(3, vec![p(2), p(4)]);
        assert_eq!(t.seqs(p(1)), Vec::<u64>::new());
        assert_eq!(t.seqs(p(2)), [3]);
        assert_eq!(t.seqs(p(4)), [3]);
        assert_eq!((t.records(), t.keys().len()), (1, 2));
    }
}
