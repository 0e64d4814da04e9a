//! Reading records by seq wherever they are: the `trace` tree holds the newest ones, the
//! sealed segments ([`super::segments`], sled stores only) the older ones.
//!
//! The committer seals records already durable in the tree, names the file, and only
//! then removes them from the tree. So a record is read from the tree first and then
//! from the segments: missing from the tree, it was sealed before it was removed. A scan
//! in seq order re-checks the sealed end after each chunk it read from the tree, and
//! reads again from the segments when a seal moved records under it.
//!
//! Trusts the stored bytes no more than its callers do: they decode and chain them
//! ([`super::stored`]).

use sled::IVec;

use super::log::{TraceError, TraceTrees, seq_key, seq_of_index_key};

/// Records read from the tree per chunk of a scan.
const CHUNK: usize = 512;

#[cfg(test)]
thread_local! {
    /// Run by a scan on this thread just before it reads a chunk from the tree: where a
    /// seal landing between the look at the sealed end and the read is simulated.
    pub(crate) static BEFORE_TREE_CHUNK: std::cell::RefCell<Option<Box<dyn FnMut()>>> =
        std::cell::RefCell::new(None);
}

impl TraceTrees {
    /// The stored form of record `seq`, if present.
    pub(crate) fn record(&self, seq: u64) -> Result<Option<IVec>, TraceError> {
        if let Some(v) = self.records.get(seq_key(seq))? {
            return Ok(Some(v));
        }
        match &self.sealed {
            Some(s) => Ok(s.get(seq)?.map(IVec::from)),
            None => Ok(None),
        }
    }

    /// The record with the highest seq, if any.
    pub(crate) fn last_record(&self) -> Result<Option<(u64, IVec)>, TraceError> {
        if let Some((k, v)) = self.records.last()? {
            return Ok(seq_of_index_key(&k).map(|s| (s, v)));
        }
        let Some(s) = &self.sealed else {
            return Ok(None);
        };
        let upto = s.upto();
        Ok(s.get(upto)?.map(|v| (upto, IVec::from(v))))
    }

    /// The records from `from` to `to` (both included) in seq order.
    pub(crate) fn records_in(&self, from: u64, to: u64) -> Records<'_> {
        Records {
            trees: self,
            next: from,
            to,
            buf: std::collections::VecDeque::new(),
            done: from > to,
        }
    }
}

/// A scan of the records in seq order ([`TraceTrees::records_in`]).
pub(crate) struct Records<'a> {
    trees: &'a TraceTrees,
    next: u64,
    to: u64,
    buf: std::collections::VecDeque<(u64, IVec)>,
    done: bool,
}

impl Records<'_> {
    /// Reads the next chunk into `buf`; false at the end.
    fn fill(&mut self) -> Result<bool, TraceError> {
        loop {
            if self.done || self.next > self.to {
                return Ok(false);
            }
            let sealed_upto = self.trees.sealed.as_ref().map_or(0, |s| s.upto());
            if let Some(s) = &self.trees.sealed {
                // Purged records are not read.
                self.next = self.next.max(s.floor().saturating_add(1));
                if self.next <= sealed_upto {
                    let Some(last) = s.last_of(self.next) else {
                        // Below the first file (purged before sealing began): on to the
                        // first file after it, or to the tree.
                        self.next = s
                            .first_after(self.next)
                            .unwrap_or(sealed_upto.saturating_add(1));
                        continue;
                    };
                    let got = s.read_from(self.next, self.to)?;
                    // What remains of the file holding `next` was read: go on after it.
                    if last >= self.to {
                        self.done = true;
                    }
                    self.next = last.min(self.to).saturating_add(1);
                    if got.is_empty() {
                        continue;
                    }
                    self.buf
                        .extend(got.into_iter().map(|(seq, v)| (seq, IVec::from(v))));
                    return Ok(true);
                }
            }
            #[cfg(test)]
            BEFORE_TREE_CHUNK.with(|h| {
                if let Some(f) = h.borrow_mut().as_mut() {
                    f();
                }
            });
            let mut chunk = Vec::with_capacity(CHUNK);
            for kv in self
                .trees
                .records
                .range(seq_key(self.next)..=seq_key(self.to))
                .take(CHUNK)
            {
                let (k, v) = kv?;
                if let Some(seq) = seq_of_index_key(&k) {
                    chunk.push((seq, v));
                }
            }
            // A seal since the look above may have removed records the chunk should
            // hold: read them from their file instead.
            if self
                .trees
                .sealed
                .as_ref()
                .is_some_and(|s| s.upto() > sealed_upto)
            {
                continue;
            }
            match chunk.last() {
                None => {
                    self.done = true;
                    return Ok(false);
                }
                Some((seq, _)) => match seq.checked_add(1) {
                    Some(n) => self.next = n,
                    None => self.done = true,
                },
            }
            self.buf.extend(chunk);
            return Ok(true);
        }
    }
}

impl Iterator for Records<'_> {
    type Item = Result<(u64, IVec), TraceError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() {
            match self.fill() {
                Ok(true) => {}
                Ok(false) => return None,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        self.buf.pop_front().map(Ok)
    }
}
