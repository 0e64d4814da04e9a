//! Sealing the trace log (sled stores): once the `trace` tree holds two segments' worth
//! of durable records beyond the sealed ones, the oldest segment's records are written
//! to a file ([`crate::trace::segments`]) and then removed from the tree.
//!
//! The committer reads the records right after a flush, when the tree is what is
//! durable; the file is written (deflated, synced, named) on a thread of its own, so that
//! commits do not wait for it; the committer removes the records from the tree once it
//! hears the file is named. Only durable records are sealed (at start, after a flush of
//! what sled recovered), so a file never holds a record that a crash could take back.
//! A store written before sealing existed is sealed the same way, a segment per group
//! or per idle tick of the committer. The removal is flushed with the next group; a
//! crash before that leaves the records in both places, and the store's open removes
//! them from the tree. One seal at a time.

use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread;
use std::time::{Duration, Instant};

use super::Committer;
use crate::store::StoreError;
use crate::store::kv::Tree;
use crate::trace::log::{seq_key, seq_of_index_key};
use crate::trace::segments::Segments;

/// How long after a failed seal the next is tried.
const RETRY: Duration = Duration::from_secs(60);

/// Run by the committer of the store whose in-memory trace index is at the address
/// given, between writing a segment's groups and dropping its entries from memory.
#[cfg(test)]
pub(crate) type Hook = (usize, Box<dyn FnMut() + Send>);
#[cfg(test)]
pub(crate) static BETWEEN_GROUPS_AND_DROP: std::sync::Mutex<Vec<Hook>> =
    std::sync::Mutex::new(Vec::new());

/// The sealing thread, seen from the committer.
pub(super) struct Sealer {
    ask: Option<SyncSender<Segment>>,
    done: Receiver<Result<(u64, u64), String>>,
    busy: bool,
    thread: Option<thread::JoinHandle<()>>,
    /// After a failure (a full disk...), when to try again.
    retry_at: Option<Instant>,
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
            retry_at: None,
        })
    }

    /// Waits for a seal in flight to end, and for the thread. Returns the segment it
    /// finished, whose records the committer removes from the tree (if it does not, the
    /// next open does).
    pub(super) fn stop(&mut self) -> Option<(u64, u64)> {
        self.ask = None;
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::error!("the trace sealing thread panicked");
        }
        match (self.busy, self.done.try_recv()) {
            (true, Ok(Ok(done))) => Some(done),
            _ => None,
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

    /// Warns (once a minute at most) while more than four segments' worth of records
    /// wait to be sealed: their index entries are held in memory ([`crate::trace::tail`])
    /// until then, and read again at each open.
    fn warn_unsealed(&mut self) {
        let Some(tail) = &self.trees.trace.tail else {
            return;
        };
        let records = tail.records() as u64;
        if records > self.seal_slots.saturating_mul(4)
            && self
                .unsealed_warned
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(60))
        {
            tracing::warn!(
                records,
                "trace records are waiting to be sealed: their index entries are held in memory until then"
            );
            self.unsealed_warned = Some(Instant::now());
        }
    }

    /// Removes records `first ..= last`, now in their file, from the tree, their index
    /// entries grouped first ([`crate::trace::postings`], [`crate::trace::spans`]);
    /// flushed with the next group, or at shutdown. sled recovers a prefix of its
    /// writes, so the grouping is durable whenever the removal is (and a crash before
    /// the removal leaves the records in the tree, grouped again at open).
    pub(super) fn remove_sealed(&mut self, first: u64, last: u64) -> Result<(), StoreError> {
        let mut batch = crate::store::kv::Batch::default();
        let mut records = Vec::new();
        for kv in self
            .trees
            .trace
            .records
            .range(seq_key(first)..=seq_key(last))
        {
            let (k, v) = kv?;
            if let Some(seq) = seq_of_index_key(&k) {
                records.push((seq, v));
            }
            batch.remove(k);
        }
        crate::trace::postings::group_segment(&self.trees.trace, first, last, &records)?;
        #[cfg(test)]
        if let Some(tail) = &self.trees.trace.tail {
            let mut hooks = BETWEEN_GROUPS_AND_DROP
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for (of, hook) in hooks.iter_mut() {
                if *of == Arc::as_ptr(tail) as usize {
                    hook();
                }
            }
        }
        // The groups are written: the entries in memory are no longer needed to find
        // these records (a reader reads them before the groups).
        if let Some(tail) = &self.trees.trace.tail {
            tail.drop_through(last);
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
        self.warn_unsealed();
        if !durable {
            return;
        }
        let Some(mut sealer) = self.sealer.take() else {
            return;
        };
        if sealer.retry_at.is_some_and(|t| Instant::now() < t) {
            self.sealer = Some(sealer);
            return;
        }
        let r = (|| -> Result<(), String> {
            if sealer.busy {
                match sealer.done.try_recv() {
                    Ok(Ok((first, last))) => {
                        sealer.busy = false;
                        self.remove_sealed(first, last).map_err(|e| e.to_string())?;
                    }
                    Ok(Err(e)) => {
                        sealer.busy = false;
                        return Err(e);
                    }
                    Err(mpsc::TryRecvError::Empty) => return Ok(()),
                    Err(mpsc::TryRecvError::Disconnected) => {
                        sealer.stop();
                        tracing::error!(
                            "the trace sealing thread ended; nothing more is sealed until pecd restarts"
                        );
                        // Dropped: nothing more is asked of it.
                        return Ok(());
                    }
                }
            }
            let next = self.next_seal().map_err(|e| e.to_string())?;
            if let (Some((first, last)), Some(ask)) = (next, &sealer.ask) {
                let seg =
                    read(&self.trees.trace.records, first, last).map_err(|e| e.to_string())?;
                if ask.try_send(seg).is_ok() {
                    sealer.busy = true;
                }
            }
            Ok(())
        })();
        sealer.retry_at = None;
        if let Err(e) = r {
            tracing::error!(error = %e, "sealing trace records failed; they stay in the database, and sealing is tried again in a minute");
            sealer.retry_at = Some(Instant::now() + RETRY);
        }
        if sealer.thread.is_some() {
            self.sealer = Some(sealer);
        }
    }

    /// At start: flushes what sled recovered (after a crash it may hold records it
    /// wrote but never synced, which a file must not take in); from then on the head is
    /// durable, and [`Committer::maybe_seal`] seals what there is, a segment at a time,
    /// without holding up commits (a store written before sealing existed has a
    /// backlog).
    pub(super) fn before_sealing(&mut self) {
        if self.sealer.is_none() {
            return;
        }
        if let Err(e) = self.flush() {
            self.flush_failed = true;
            tracing::error!(error = %e, "store flush failed; nothing is sealed");
        }
    }
}
