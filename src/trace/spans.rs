//! The time index of sealed records (schema 8, sled stores): when the committer removes
//! a sealed segment's records from the `trace` tree, their `trace_time` entries (one per
//! record) are replaced by the segment's **span**, one entry:
//!
//! | key | value |
//! |---|---|
//! | [`SPAN_PREFIX`], the segment's first seq | the earliest and the latest time of its records (as in a time entry's key), its last seq |
//!
//! A scan by time ([`TimeScan`]) reads the spans that meet its range, the records of
//! their files, and the tree's own entries, and gives them in the order of the time
//! entries' keys (time, then seq). A file is read once no entry before its earliest time
//! is left to give, so a scan holds the matches of the files whose spans overlap, and
//! times are nearly monotonic in seq (each event carries its own instant), so that is
//! little more than one file's. A span appearing during a scan (a seal) is read at once,
//! its records from where the scan is; an entry given twice (its record seen in the tree
//! and in its file) is given once.
//!
//! A purge removes a span with its file's groups, when it purges the whole file
//! ([`super::retention`]).
//!
//! What it distrusts: spans read from the database. A span of the wrong length is an
//! error naming its key, never a panic.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, VecDeque};

use sled::IVec;

use super::log::{TraceError, TraceTrees, seq_key, seq_of_index_key, time_key};

/// The first 8 bytes of a span's key. No time entry has them: they would be a time
/// 2⁶³ − 1 ms after 1970, far past the last time a record can carry (year 9999).
pub(crate) const SPAN_PREFIX: [u8; 8] = [0xff; 8];

/// The largest key a time entry can have: every span sorts after it.
pub(crate) const TIME_KEYS_END: [u8; 16] = {
    let mut k = [0xff; 16];
    k[7] = 0xfe;
    k
};

/// A sealed segment's times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Span {
    pub first: u64,
    pub last: u64,
    /// The smallest and the largest time prefix of its records' time entries.
    pub min: [u8; 8],
    pub max: [u8; 8],
}

/// The key of the span of the segment starting at `first`.
pub(crate) fn span_key(first: u64) -> Vec<u8> {
    [&SPAN_PREFIX[..], &first.to_be_bytes()].concat()
}

fn decode_span(k: &[u8], v: &[u8]) -> Result<Span, TraceError> {
    let corrupt = || TraceError::Corrupt {
        key: hex::encode(k),
        detail: format!("a time span of {} bytes, not 24", v.len()),
    };
    let first = seq_of_index_key(k).ok_or_else(corrupt)?;
    if v.len() != 24 {
        return Err(corrupt());
    }
    let part = |i: usize| -> [u8; 8] {
        let mut b = [0u8; 8];
        b.copy_from_slice(&v[i * 8..i * 8 + 8]);
        b
    };
    Ok(Span {
        first,
        last: u64::from_be_bytes(part(2)),
        min: part(0),
        max: part(1),
    })
}

/// Every span, in the order of their segments.
pub(crate) fn spans(trees: &TraceTrees) -> Result<Vec<Span>, TraceError> {
    let mut out = Vec::new();
    for kv in trees.by_time.range(&SPAN_PREFIX[..]..) {
        let (k, v) = kv?;
        out.push(decode_span(&k, &v)?);
    }
    Ok(out)
}

/// The writes to `trace_time` that replace the time entries of `records` (stored forms,
/// the records of the segment `first ..= last` still present) with the segment's span.
/// Idempotent.
pub(crate) fn regroup(
    first: u64,
    last: u64,
    records: &[(u64, impl AsRef<[u8]>)],
) -> Result<crate::store::kv::Batch, TraceError> {
    let mut batch = crate::store::kv::Batch::default();
    let mut range: Option<([u8; 8], [u8; 8])> = None;
    for (seq, v) in records {
        let s = super::stored::decode(&seq_key(*seq), v.as_ref())?;
        let k = time_key(s.unchained());
        let mut t = [0u8; 8];
        t.copy_from_slice(&k[..8]);
        range = Some(match range {
            None => (t, t),
            Some((lo, hi)) => (lo.min(t), hi.max(t)),
        });
        batch.remove(k);
    }
    if let Some((min, max)) = range {
        let mut v = Vec::with_capacity(24);
        v.extend_from_slice(&min);
        v.extend_from_slice(&max);
        v.extend_from_slice(&last.to_be_bytes());
        batch.insert(span_key(first), v);
    }
    Ok(batch)
}

/// A scan of the time index between two keys of time entries (both included), sealed
/// records included: their entries' keys in order, each with the record's stored form
/// when it was read from its file.
pub(crate) struct TimeScan<'a> {
    trees: &'a TraceTrees,
    lo: [u8; 16],
    hi: [u8; 16],
    /// Spans meeting the range, not read yet, by earliest time.
    waiting: VecDeque<Span>,
    /// The first seq of every span known to the scan.
    known: BTreeSet<u64>,
    /// The last span key seen: a new one means a seal happened.
    last_span: Option<IVec>,
    /// Entries read from files, not given yet.
    heap: BinaryHeap<Reverse<([u8; 16], Vec<u8>)>>,
    tree: std::iter::Peekable<crate::store::kv::Iter>,
    /// The last key given.
    given: Option<[u8; 16]>,
    failed: bool,
}

impl<'a> TimeScan<'a> {
    pub(crate) fn new(trees: &'a TraceTrees, lo: [u8; 16], hi: [u8; 16]) -> Self {
        let hi = hi.min(TIME_KEYS_END);
        Self {
            trees,
            lo,
            hi,
            waiting: VecDeque::new(),
            known: BTreeSet::new(),
            last_span: None,
            heap: BinaryHeap::new(),
            tree: trees.by_time.range(&lo[..]..=&hi[..]).peekable(),
            given: None,
            failed: false,
        }
    }

    /// Takes in the spans not known yet (all of them at the start; later, those of
    /// seals done since), when the last span's key changed.
    fn look_for_spans(&mut self) -> Result<(), TraceError> {
        let last = match self.trees.by_time.range(&SPAN_PREFIX[..]..).next_back() {
            Some(kv) => Some(kv?.0),
            None => None,
        };
        if last == self.last_span {
            return Ok(());
        }
        self.last_span = last;
        for span in spans(self.trees)? {
            if !self.known.insert(span.first) {
                continue;
            }
            if span.max[..] < self.lo[..8] || span.min[..] > self.hi[..8] {
                continue;
            }
            let at = self
                .waiting
                .iter()
                .position(|w| w.min > span.min)
                .unwrap_or(self.waiting.len());
            self.waiting.insert(at, span);
        }
        Ok(())
    }

    /// Reads the records of `span`'s file whose entries are in the range and after the
    /// last one given.
    fn read(&mut self, span: &Span) -> Result<(), TraceError> {
        let Some(sealed) = &self.trees.sealed else {
            return Ok(());
        };
        for (seq, v) in sealed.read_from(span.first, span.last)? {
            let s = super::stored::decode(&seq_key(seq), &v)?;
            let mut k = [0u8; 16];
            k.copy_from_slice(&time_key(s.unchained()));
            if k < self.lo || k > self.hi || self.given.is_some_and(|g| k <= g) {
                continue;
            }
            self.heap.push(Reverse((k, v)));
        }
        Ok(())
    }

    fn step(&mut self) -> Result<Option<([u8; 16], Option<IVec>)>, TraceError> {
        loop {
            self.look_for_spans()?;
            let tree = match self.tree.peek() {
                Some(Ok((k, _))) => match <[u8; 16]>::try_from(k.as_ref()) {
                    Ok(k) => Some(k),
                    // Not a time entry (none is written so): not read.
                    Err(_) => {
                        self.tree.next();
                        continue;
                    }
                },
                Some(Err(_)) => {
                    return match self.tree.next() {
                        Some(Err(e)) => Err(e.into()),
                        _ => Ok(None),
                    };
                }
                None => None,
            };
            let heap = self.heap.peek().map(|Reverse((k, _))| *k);
            // A file whose earliest time is not after the next entry is read first.
            if let Some(w) = self.waiting.front()
                && [tree, heap]
                    .iter()
                    .flatten()
                    .all(|next| w.min[..] <= next[..8])
            {
                let span = self.waiting.pop_front().expect("looked at just above");
                self.read(&span)?;
                continue;
            }
            let (key, bytes) = match (tree, heap) {
                (None, None) => return Ok(None),
                (Some(t), Some(h)) if h < t => {
                    let Reverse((k, v)) = self.heap.pop().expect("peeked just above");
                    (k, Some(IVec::from(v)))
                }
                (Some(t), _) => {
                    self.tree.next();
                    (t, None)
                }
                (None, Some(_)) => {
                    let Reverse((k, v)) = self.heap.pop().expect("peeked just above");
                    (k, Some(IVec::from(v)))
                }
            };
            if self.given.is_some_and(|g| key <= g) {
                continue;
            }
            self.given = Some(key);
            return Ok(Some((key, bytes)));
        }
    }
}

impl Iterator for TimeScan<'_> {
    /// A time entry's key, and the record's stored form when it was read from its file.
    type Item = Result<([u8; 16], Option<IVec>), TraceError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.step() {
            Ok(Some(item)) => Some(Ok(item)),
            Ok(None) => None,
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}
