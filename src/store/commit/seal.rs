//! Sealing the trace log (sled stores): once the `trace` tree holds two segments' worth
//! of durable records beyond the sealed ones, the oldest segment's records are written
//! to a file ([`crate::trace::segments`]) and then removed from the tree.
//!
//! The file is written (deflated, synced, named) on a thread of its own, so that commits
//! do not wait for it; the committer removes the records from the tree once it hears the
//! file is named. Only records already durable are sealed, so a file never holds a
//! record that a crash could take back. The removal is flushed with the next group; a
//! crash before that leaves the records in both places, and the store's open removes
//! them from the tree. One seal at a time.

use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread;

use super::Committer;
use crate::store::StoreError;
use crate::store::kv::Tree;
use crate::trace::log::{seq_key, seq_of_index_key};
use crate::trace::segments::Segments;

/// The sealing thread, seen from the committer.
pub(super) struct Sealer {
    ask: SyncSender<(u64, u64)>,
    done: Receiver<Result<(u64, u64), String>>,
    busy: bool,
}

/// Writes the file of records `first ..= last` from `tree`.
fn write(tree: &Tree, sealed: &Segments, first: u64, last: u64) -> Result<(), StoreError> {
    let mut records = Vec::new();
    for kv in tree.range(seq_key(first)..=seq_key(last)) {
        let (k, v) = kv?;
        if let Some(seq) = seq_of_index_key(&k) {
            records.push((seq, v));
        }
    }
    let refs: Vec<(u64, &[u8])> = records.iter().map(|(s, v)| (*s, v.as_ref())).collect();
    Ok(sealed.seal(first, last, &refs)?)
}

impl Sealer {
    pub(super) fn start(tree: Tree, sealed: Arc<Segments>) -> Result<Self, StoreError> {
        let (ask, asked) = mpsc::sync_channel::<(u64, u64)>(1);
        let (tell, done) = mpsc::channel();
        thread::Builder::new()
            .name("pecd-trace-seal".into())
            .spawn(move || {
                for (first, last) in asked {
                    let r = write(&tree, &sealed, first, last)
                        .map(|()| (first, last))
                        .map_err(|e| e.to_string());
                    if tell.send(r).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| StoreError::Io {
                path: "thread".into(),
                source: e,
            })?;
        Ok(Self {
            ask,
            done,
            busy: false,
        })
    }
}

impl Committer {
    /// The next segment to seal, when two segments' worth of durable records follow the
    /// sealed ones.
    fn next_seal(&self) -> Result<Option<(u64, u64)>, StoreError> {
        let Some(sealed) = &self.trees.trace.sealed else {
            return Ok(None);
        };
        let first = match sealed.next_first() {
            Some(f) => f,
            None => match self.trees.trace.records.first()? {
                Some((k, _)) => seq_of_index_key(&k).unwrap_or(1),
                None => return Ok(None),
            },
        };
        let last = first + self.seal_slots - 1;
        Ok((self.durable_head >= last.saturating_add(self.seal_slots)).then_some((first, last)))
    }

    /// Removes records `first ..= last`, now in their file, from the tree (flushed with
    /// the next group, or at shutdown).
    fn remove_sealed(&mut self, first: u64, last: u64) -> Result<(), StoreError> {
        let mut batch = crate::store::kv::Batch::default();
        for kv in self
            .trees
            .trace
            .records
            .range(seq_key(first)..=seq_key(last))
        {
            batch.remove(kv?.0);
        }
        self.trees.trace.records.apply_batch(batch)?;
        self.dirty = true;
        Ok(())
    }

    /// After each group: takes in a seal the thread finished (removing its records from
    /// the tree), and asks for the next one if there is one. A failure is logged, and
    /// sealing is tried again later: the records stay in the tree meanwhile, where they
    /// are read as before.
    pub(super) fn maybe_seal(&mut self) {
        let Some(mut sealer) = self.sealer.take() else {
            return;
        };
        let r = (|| -> Result<(), StoreError> {
            if sealer.busy {
                match sealer.done.try_recv() {
                    Ok(Ok((first, last))) => {
                        sealer.busy = false;
                        self.remove_sealed(first, last)?;
                    }
                    Ok(Err(e)) => {
                        sealer.busy = false;
                        return Err(StoreError::Flush(e));
                    }
                    Err(_) => return Ok(()),
                }
            }
            if let Some(next) = self.next_seal()?
                && sealer.ask.try_send(next).is_ok()
            {
                sealer.busy = true;
            }
            Ok(())
        })();
        self.sealer = Some(sealer);
        if let Err(e) = r {
            tracing::error!(error = %e, "sealing trace records failed; they stay in the database");
        }
    }

    /// Seals every segment's worth there is, here and now, and flushes their removal
    /// from the tree: at start, for a store written before sealing existed (or with
    /// larger segments).
    pub(super) fn seal_backlog(&mut self) {
        let Some(sealed) = self.trees.trace.sealed.clone() else {
            return;
        };
        let r = (|| -> Result<(), StoreError> {
            while let Some((first, last)) = self.next_seal()? {
                write(&self.trees.trace.records, &sealed, first, last)?;
                self.remove_sealed(first, last)?;
            }
            Ok(())
        })();
        if let Err(e) = r {
            tracing::error!(error = %e, "sealing trace records failed; they stay in the database");
        }
        if std::mem::take(&mut self.dirty)
            && let Err(e) = self.flush()
        {
            tracing::error!(error = %e, "store flush failed");
        }
    }
}
