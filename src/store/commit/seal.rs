//! Sealing the trace log (sled stores): once the `trace` tree holds two segments' worth
//! of durable records beyond the sealed ones, the oldest segment's records are written
//! to a file ([`crate::trace::segments`]) and then removed from the tree.
//!
//! The committer reads the records right after a flush, when the tree is what is
//! durable; the file is written (deflated, synced, named) on a thread of its own, so that
//! commits do not wait for it; the committer removes the records from the tree once it
//! hears the file is named. Only durable records are sealed (at start, after a flush of
//! what sled recovered), so a file never holds a record that a crash could take back. The removal is flushed with the next group; a
//! crash before that leaves the records in both places, and the store's open removes
//! them from the tree. One seal at a time.

use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread;

use super::Committer;

/// Segments sealed at start between two flushes.
const BACKLOG_FLUSH: u64 = 16;
use crate::store::StoreError;
use crate::store::kv::Tree;
use crate::trace::log::{seq_key, seq_of_index_key};
use crate::trace::segments::Segments;

/// The sealing thread, seen from the committer.
pub(super) struct Sealer {
    ask: Option<SyncSender<Segment>>,
    done: Receiver<Result<(u64, u64), String>>,
    busy: bool,
    thread: Option<thread::JoinHandle<()>>,
}

/// A segment to seal: its first and last seq and its records, read by the committer.
struct Segment {
    first: u64,
    last: u64,
    records: Vec<(u64, sled::IVec)>,
}

/// Records `first ..= last` of `tree`.
fn read(tree: &Tree, first: u64, last: u64) -> Result<Segment, StoreError> {
    let mut records = Vec::new();
    for kv in tree.range(seq_key(first)..=seq_key(last)) {
        let (k, v) = kv?;
        if let Some(seq) = seq_of_index_key(&k) {
            records.push((seq, v));
        }
    }
    Ok(Segment {
        first,
        last,
        records,
    })
}

/// Writes `seg`'s file.
fn write(sealed: &Segments, seg: &Segment) -> Result<(), StoreError> {
    let refs: Vec<(u64, &[u8])> = seg.records.iter().map(|(s, v)| (*s, v.as_ref())).collect();
    Ok(sealed.seal(seg.first, seg.last, &refs)?)
}

impl Sealer {
    pub(super) fn start(sealed: Arc<Segments>) -> Result<Self, StoreError> {
        let (ask, asked) = mpsc::sync_channel::<Segment>(1);
        let (tell, done) = mpsc::channel();
        let thread = thread::Builder::new()
            .name("pecd-trace-seal".into())
            .spawn(move || {
                for seg in asked {
                    let r = write(&sealed, &seg)
                        .map(|()| (seg.first, seg.last))
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
            ask: Some(ask),
            done,
            busy: false,
            thread: Some(thread),
        })
    }

    /// Waits for a seal in flight to end (its records stay in the tree too: the next
    /// open removes them), and for the thread.
    pub(super) fn stop(&mut self) {
        self.ask = None;
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::error!("the trace sealing thread panicked");
        }
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
        let Some(last) = first.checked_add(self.seal_slots - 1) else {
            return Ok(None);
        };
        Ok(last
            .checked_add(self.seal_slots)
            .is_some_and(|want| self.durable_head >= want)
            .then_some((first, last)))
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
    /// the tree), and asks for the next one if there is one. The records are read here,
    /// where the tree is exactly what the last flush made durable (the thread would read
    /// it while the next groups change it, e.g. a purge not yet flushed). A failure is
    /// logged, and sealing is tried again later: the records stay in the tree meanwhile,
    /// where they are read as before. After a failed flush nothing more is sealed.
    pub(super) fn maybe_seal(&mut self, durable: bool) {
        if !durable {
            return;
        }
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
                    Err(mpsc::TryRecvError::Empty) => return Ok(()),
                    Err(mpsc::TryRecvError::Disconnected) => {
                        sealer.ask = None;
                        return Err(StoreError::Flush(
                            "the trace sealing thread ended; sealing stops until pecd restarts"
                                .into(),
                        ));
                    }
                }
            }
            if let (Some((first, last)), Some(ask)) = (self.next_seal()?, &sealer.ask) {
                let seg = read(&self.trees.trace.records, first, last)?;
                if ask.try_send(seg).is_ok() {
                    sealer.busy = true;
                }
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
    /// smaller segments than before). The database is flushed first: after a crash sled
    /// may hold records it wrote but never synced, which a file must not take in.
    pub(super) fn seal_backlog(&mut self) {
        let Some(sealed) = self.trees.trace.sealed.clone() else {
            return;
        };
        if let Err(e) = self.flush() {
            self.flush_failed = true;
            tracing::error!(error = %e, "store flush failed; nothing is sealed");
            return;
        }
        let r = (|| -> Result<(), StoreError> {
            let mut n = 0;
            while let Some((first, last)) = self.next_seal()? {
                write(&sealed, &read(&self.trees.trace.records, first, last)?)?;
                self.remove_sealed(first, last)?;
                n += 1;
                // A long backlog (a store upgraded with millions of records) is flushed
                // as it goes, so that a crash leaves little to remove at the next open.
                if n % BACKLOG_FLUSH == 0 {
                    self.dirty = false;
                    self.flush().map_err(StoreError::Flush)?;
                }
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
