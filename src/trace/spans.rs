//! The time index of sealed records (schema 8, sled stores): when the committer removes
//! a sealed segment's records from the `trace` tree, their `trace_time` entries (one per
//! record) are replaced by the segment's **span**, one entry:
//!
//! | key | value |
//! |---|---|
//! | [`SPAN_PREFIX`], the segment's first seq | the earliest and the latest time of its records (as in a time entry's key), its last seq |
//!
//! A scan by time ([`TimeScan`]) reads the unsealed records' own entries in its range
//! (in memory, [`super::tail`], and in the tree those an older pecd wrote), then the
//! spans that meet it, the records of their files and gives them all in the order of
//! the time entries' keys (time, then seq). A file is read once no entry before its
//! earliest time is left to give, so a scan holds the matches of the files whose spans
//! overlap; times are nearly monotonic in seq (each event carries its own instant), so
//! that is little more than one file's.
//!
//! A purge removes a span with its file's groups, when it purges the whole file
//! ([`super::retention`]).
//!
//! What it distrusts: spans read from the database. A span of the wrong length is an
//! error naming its key, never a panic.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

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
        // One that does not decode keeps its own entry, if any (and the span does not
        // cover it): verifying the log reports it.
        let Ok(s) = super::stored::decode(&seq_key(*seq), v.as_ref()) else {
            tracing::warn!(
                seq,
                "a sealed trace record does not decode; its time entry is kept"
            );
            continue;
        };
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
///
/// On sled the own entries in the range (in memory, [`super::tail`], and in the tree
/// those an older pecd wrote) are read whole first, and the spans only then: a record
/// whose entry a seal moves into a span meanwhile is seen in one or the other (or both,
/// and given once), never in neither (the seal writes the span, then drops the entry).
/// The own entries are the unsealed records' (at most two segments' worth, more only
/// while an older store's backlog is sealed). On PostgreSQL, which has no spans, they
/// are read as the scan goes.
pub(crate) struct TimeScan<'a> {
    trees: &'a TraceTrees,
    lo: [u8; 16],
    hi: [u8; 16],
    /// The own entries (the tree's and those in memory); `None` until the first step.
    tree: Option<std::iter::Peekable<Keys<'a>>>,
    /// Spans meeting the range, not read yet, by earliest time.
    waiting: VecDeque<Span>,
    /// Entries read from files, not given yet.
    heap: BinaryHeap<Reverse<([u8; 16], Vec<u8>)>>,
    /// The last key given.
    given: Option<[u8; 16]>,
    failed: bool,
    /// Nothing is sealed during the scan ([`TimeScan::quiescent`]).
    quiet: bool,
}

type Keys<'a> = Box<dyn Iterator<Item = Result<[u8; 16], TraceError>> + 'a>;

impl<'a> TimeScan<'a> {
    pub(crate) fn new(trees: &'a TraceTrees, lo: [u8; 16], hi: [u8; 16]) -> Self {
        Self {
            trees,
            lo,
            hi: hi.min(TIME_KEYS_END),
            tree: None,
            waiting: VecDeque::new(),
            heap: BinaryHeap::new(),
            given: None,
            failed: false,
            quiet: false,
        }
    }

    /// The same scan of a store where nothing is sealed meanwhile (a copy's source,
    /// opened with sealing off): the tree's own entries are read as the scan goes, not
    /// held whole.
    pub(crate) fn quiescent(trees: &'a TraceTrees, lo: [u8; 16], hi: [u8; 16]) -> Self {
        Self {
            quiet: true,
            ..Self::new(trees, lo, hi)
        }
    }

    /// Reads the own entries (whole, on sled: the tree's and those in memory) and then
    /// the spans meeting the range.
    fn start(&mut self) -> Result<std::iter::Peekable<Keys<'a>>, TraceError> {
        let own = self
            .trees
            .by_time
            .range(&self.lo[..]..=&self.hi[..])
            .filter_map(|kv| match kv {
                // A key of another length is no time entry (none is written so).
                Ok((k, _)) => <[u8; 16]>::try_from(k.as_ref()).ok().map(Ok),
                Err(e) => Some(Err(TraceError::from(e))),
            });
        if self.trees.sealed.is_none() {
            return Ok((Box::new(own) as Keys<'a>).peekable());
        }
        // The unsealed records' entries in memory ([`super::tail`]), beside those an
        // older pecd wrote in the tree.
        let tail = self
            .trees
            .tail
            .as_ref()
            .map(|t| t.times(self.lo, self.hi))
            .unwrap_or_default();
        let own: Keys<'a> = if self.quiet {
            Box::new(crate::store::kv::merge_sorted(
                own,
                tail.into_iter().map(Ok),
                |k| *k,
            ))
        } else {
            let mut own = own.collect::<Result<Vec<[u8; 16]>, _>>()?;
            own.extend(tail);
            own.sort_unstable();
            own.dedup();
            Box::new(own.into_iter().map(Ok))
        };
        #[cfg(test)]
        super::log::BEFORE_GROUPS.with(|h| {
            if let Some(f) = h.borrow_mut().as_mut() {
                f();
            }
        });
        let mut waiting: Vec<Span> = spans(self.trees)?
            .into_iter()
            .filter(|s| s.max[..] >= self.lo[..8] && s.min[..] <= self.hi[..8])
            .collect();
        waiting.sort_by_key(|s| (s.min, s.first));
        self.waiting = waiting.into();
        Ok(own.peekable())
    }

    /// Reads the records of `span`'s file whose entries are in the range and after the
    /// last one given.
    fn read(&mut self, span: &Span) -> Result<(), TraceError> {
        let Some(sealed) = &self.trees.sealed else {
            return Ok(());
        };
        for (seq, v) in sealed.read_from(span.first, span.last)? {
            // One that does not decode was left out of the span when it was made (its
            // own time entry kept, where a query in its range meets it).
            let Ok(s) = super::stored::decode(&seq_key(seq), &v) else {
                tracing::warn!(
                    seq,
                    "a sealed trace record does not decode; left out of a time scan"
                );
                continue;
            };
            let mut k = [0u8; 16];
            k.copy_from_slice(&time_key(s.unchained()));
            if k[..8] < span.min[..] || k[..8] > span.max[..] {
                // A span not covering its records would hide some: refused.
                return Err(TraceError::Corrupt {
                    key: hex::encode(span_key(span.first)),
                    detail: format!("record {seq}'s time is outside the segment's time span"),
                });
            }
            if k < self.lo || k > self.hi {
                continue;
            }
            self.heap.push(Reverse((k, v)));
        }
        Ok(())
    }

    fn step(&mut self) -> Result<Option<([u8; 16], Option<IVec>)>, TraceError> {
        let mut tree = match self.tree.take() {
            Some(t) => t,
            None => self.start()?,
        };
        let r = self.step_with(&mut tree);
        self.tree = Some(tree);
        r
    }

    fn step_with(
        &mut self,
        tree: &mut std::iter::Peekable<Keys<'a>>,
    ) -> Result<Option<([u8; 16], Option<IVec>)>, TraceError> {
        loop {
            let next_own = match tree.peek() {
                Some(Ok(k)) => Some(*k),
                Some(Err(_)) => {
                    return match tree.next() {
                        Some(Err(e)) => Err(e),
                        _ => Ok(None),
                    };
                }
                None => None,
            };
            let next_read = self.heap.peek().map(|Reverse((k, _))| *k);
            // A file whose earliest time is not after the next entry is read first.
            if self.waiting.front().is_some_and(|w| {
                [next_own, next_read]
                    .iter()
                    .flatten()
                    .all(|next| w.min[..] <= next[..8])
            }) && let Some(span) = self.waiting.pop_front()
            {
                self.read(&span)?;
                continue;
            }
            // The smaller of the two next entries: from a file, or from the tree.
            let from_file = match (next_own, next_read) {
                (None, None) => return Ok(None),
                (Some(t), Some(h)) => h < t,
                (Some(_), None) => false,
                (None, Some(_)) => true,
            };
            let (key, bytes) = match (from_file, next_own) {
                (true, _) => match self.heap.pop() {
                    Some(Reverse((k, v))) => (k, Some(IVec::from(v))),
                    None => return Ok(None),
                },
                (false, Some(t)) => {
                    tree.next();
                    (t, None)
                }
                (false, None) => return Ok(None),
            };
            // Seen in the tree and in its file (a seal between the two reads).
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
