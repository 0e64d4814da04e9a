//! The committer: the only thread that writes the sled trees.
//!
//! Each [`Batch`] is applied atomically over all trees (in the fixed order of
//! `super::tx`). With group commit, the committer drains every waiting batch, applies
//! them (on sled, consecutive batches share one transaction, see `together`; a failing
//! batch does not affect the others), flushes **once**, and only then answers the
//! callers: nobody hears "ok" before the data and its trace records are on disk. Being the single writer also makes reads it
//! does before a transaction (expanding "delete mailbox" into its messages) consistent,
//! and keeps the trace chain head in memory without races.
//!
//! Blobs the group's batches refer to may have been written without fsyncs
//! ([`super::BlobStore::put_staged`]): before applying anything the committer makes them
//! durable with one sync, and when that fails no batch of the group is applied. On fjall,
//! small ones are in the keyspace's journal instead, ahead of the batches that refer to
//! them, and the flush after the group makes them durable with it
//! ([`super::blobs::keyspace`]).
//!
//! Checkpoint signing runs on a separate thread (CPU-bound): the committer sends it the
//! head when `checkpoint_every` records or `checkpoint_interval` elapsed, and stores the
//! signed checkpoint it gets back in a later transaction. At most one signing is in
//! flight, so checkpoints are stored in seq order and each links to the previous one.
//!
//! **Several writers** (PostgreSQL with `several_writers`): the committers of several
//! processes append to one chain. Each group's SQL transaction takes the commit lock
//! before its first statement (`kv::pg`), so groups commit one after the other; the
//! committer then reads the chain's head and last checkpoint again, inside the group,
//! before applying anything, so what it appends follows the last record whoever wrote
//! it. A checkpoint it signed is stored only if it still links to the last checkpoint
//! stored (another process may have stored one meanwhile: then it is dropped, the chain
//! being covered by that one). The mailboxes a group changed are announced to the other
//! processes with the commit, which publish them to their own subscribers.

use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use jiff::Timestamp;

use super::batch::{Applied, Batch, Op};
use super::changes::{self, ChangeSet};
use super::mailbox::mailbox_key;
use super::messages::{
    FolderInfo, decode_message, folder_key, folder_prefix, message_key, normalize_folder,
};
use super::tx::{FOLDERS, MAILBOXES, MESSAGES, Tx, all_trees, apply_op};
use super::{MailboxChange, StoreError, StoreOptions, Trees};
use crate::clock::SharedClock;
use crate::pec::smime::Signer;
use crate::trace::{Checkpoint, EventKind, TraceLog};

mod checkpoints;
mod published;
pub(super) mod seal;
mod together;
use published::mailbox_changes;
pub(crate) use published::{announcements, heard};

pub(crate) enum Reply {
    Sync(SyncSender<Result<Applied, StoreError>>),
    Async(tokio::sync::oneshot::Sender<Result<Applied, StoreError>>),
}

impl Reply {
    fn send(self, r: Result<Applied, StoreError>) {
        // A caller that went away does not want its answer: ignoring is correct.
        match self {
            Reply::Sync(s) => drop(s.send(r)),
            Reply::Async(s) => drop(s.send(r)),
        }
    }
}

pub(crate) enum Job {
    Batch(Batch, Reply),
    CheckpointNow(SyncSender<Result<Option<Checkpoint>, StoreError>>),
    Shutdown,
    /// Tests: the committer waits until the sender of this receiver is dropped, so that
    /// what the test queues meanwhile lands in one group.
    #[cfg(test)]
    Hold(Receiver<()>),
}

/// Adds `job` to the group being gathered (a test's hold is waited out instead).
fn take(jobs: &mut Vec<Job>, job: Job) {
    #[cfg(test)]
    if let Job::Hold(release) = job {
        // Returns when the test drops its sender.
        let _ = release.recv();
        return;
    }
    jobs.push(job);
}

struct SignRequest {
    seq: u64,
    hash: String,
    prev: u64,
}

pub(crate) struct Committer {
    db: super::kv::Db,
    /// The trees as the committer reads them: inside its group ([`Trees::for_committer`]).
    trees: Trees,
    blobs: super::BlobStore,
    /// sled's log file, synced after each flush ([`Committer::flush`]).
    db_file: Option<std::fs::File>,
    all: Vec<super::kv::Tree>,
    /// The last group's writes were lost when its flush failed (PostgreSQL rolls the
    /// group back): the trace head in memory must be read again before the next batch.
    head_stale: bool,
    /// A transaction was applied since the last flush.
    dirty: bool,
    /// Other processes append to the chain too: its head is read again in each group.
    several: bool,
    /// Several writers: the group ended (committed or rolled back), so the head in
    /// memory may be behind another process's; read again before the next batch.
    reread: bool,
    group: bool,
    clock: SharedClock,
    head: (u64, String),
    last_cp: (u64, Timestamp),
    /// Head seq right after the last checkpoint record: records above it are unsigned.
    cp_floor: u64,
    every: u64,
    interval: Duration,
    signer: Option<Arc<Signer>>,
    sign_tx: Option<SyncSender<SignRequest>>,
    signed_rx: Receiver<Result<Checkpoint, String>>,
    in_flight: bool,
    /// Where committed mailbox changes are published, after the flush.
    changes: tokio::sync::broadcast::Sender<MailboxChange>,
    archive: super::archive::ArchivePolicy,
    /// The trace head as of the last successful flush: records up to it may be sealed.
    durable_head: u64,
    /// Records per sealed segment (`StoreOptions::trace_segment_records`).
    seal_slots: u64,
    /// The thread writing sealed segments (sled stores).
    sealer: Option<seal::Sealer>,
    /// A flush failed: what the trees hold may not be durable, so nothing more is
    /// sealed (on sled, every later flush fails too, until a restart).
    flush_failed: bool,
    /// When the committer last warned of records waiting to be sealed.
    unsealed_warned: Option<std::time::Instant>,
}

const MAX_GROUP: usize = 4096;

impl Committer {
    pub(crate) fn start(
        db: super::kv::Db,
        trees: Trees,
        blobs: super::BlobStore,
        db_file: Option<std::fs::File>,
        o: &StoreOptions,
        changes: tokio::sync::broadcast::Sender<MailboxChange>,
    ) -> Result<(Sender<Job>, JoinHandle<()>), StoreError> {
        let log = TraceLog::new(trees.trace.clone());
        let head = log.head()?;
        let last = log.last_checkpoint()?.or(log.anchor()?);
        let last_cp = last.map_or((0, o.clock.now()), |c| (c.seq, c.time));
        let (signed_tx, signed_rx) = mpsc::channel();
        let sign_tx = match &o.signer {
            Some(signer) => {
                let (tx, rx) = mpsc::sync_channel::<SignRequest>(1);
                let (signer, clock) = (signer.clone(), o.clock.clone());
                thread::Builder::new()
                    .name("pecd-trace-sign".into())
                    .spawn(move || {
                        for r in rx {
                            let cp = Checkpoint::sign(&signer, r.seq, &r.hash, clock.now(), r.prev)
                                .map_err(|e| e.to_string());
                            if signed_tx.send(cp).is_err() {
                                break;
                            }
                        }
                    })
                    .map_err(|e| StoreError::Io {
                        path: "thread".into(),
                        source: e,
                    })?;
                Some(tx)
            }
            None => None,
        };
        let trees = trees.for_committer();
        let sealer = match &trees.trace.sealed {
            Some(s) => Some(seal::Sealer::start(s.clone())?),
            None => None,
        };
        let c = Committer {
            sealer,
            flush_failed: false,
            unsealed_warned: None,
            all: all_trees(&trees),
            head_stale: false,
            several: db.several_writers(),
            reread: db.several_writers(),
            dirty: false,
            blobs,
            db_file,
            db,
            trees,
            group: o.group_commit,
            archive: o.archive,
            clock: o.clock.clone(),
            cp_floor: last_cp.0,
            durable_head: head.0,
            seal_slots: o.trace_segment_records.max(1),
            head,
            last_cp,
            every: o.checkpoint_every.max(1),
            interval: o.checkpoint_interval,
            signer: o.signer.clone(),
            sign_tx,
            signed_rx,
            in_flight: false,
            changes,
        };
        let (tx, rx) = mpsc::channel();
        let h = thread::Builder::new()
            .name("pecd-committer".into())
            .spawn(move || c.run(rx))
            .map_err(|e| StoreError::Io {
                path: "thread".into(),
                source: e,
            })?;
        Ok((tx, h))
    }

    fn run(mut self, rx: Receiver<Job>) {
        let tick = Duration::from_millis(200);
        self.before_sealing();
        loop {
            let mut jobs = Vec::new();
            let mut shutdown = false;
            match rx.recv_timeout(tick) {
                Ok(j) => take(&mut jobs, j),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => shutdown = true,
            }
            while self.group && jobs.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(j) => take(&mut jobs, j),
                    Err(_) => break,
                }
            }
            // The blobs staged for these batches, durable before any of them is applied.
            let staged = if jobs.iter().any(|j| matches!(j, Job::Batch(..))) {
                self.blobs.sync_staged().map_err(|e| e.to_string())
            } else {
                Ok(false)
            };
            if let Err(e) = &staged {
                tracing::error!(error = %e, "syncing the staged blobs failed: the group is refused");
            }
            // Several writers: the chain as the last group committed by any of them left
            // it, read under the commit lock that the group's first statement takes (a
            // failure is left to the batches, which read it again and fail).
            if self.several
                && !jobs.is_empty()
                && let Err(e) = self.reload_head()
            {
                tracing::warn!(error = %e, "reading the trace head for a group failed");
            }
            // What the new batches will read that nothing in the group wrote yet, in one
            // query (PostgreSQL); a failure here is left to the batches' own reads. A
            // group of one batch gains nothing measurable from it.
            let batches = jobs.iter().filter(|j| matches!(j, Job::Batch(..))).count();
            if staged.is_ok() && batches > 1 && self.db.flush_failure_loses_writes() {
                let keys = self.read_ahead(&jobs);
                if let Err(e) = self.db.prefetch(keys) {
                    tracing::warn!(error = %e, "reading ahead for a group failed");
                }
            }
            let mut wrote = self.store_signed(false);
            let mut answers = Vec::with_capacity(jobs.len());
            let mut cp_answers = Vec::new();
            let mut changed: Vec<MailboxChange> = Vec::new();
            // Consecutive batches are applied together (see `together`).
            let mut run = Vec::new();
            for job in jobs {
                match job {
                    Job::Batch(b, reply) => {
                        if let Err(e) = &staged {
                            answers.push((reply, Err(StoreError::Flush(e.clone()))));
                            continue;
                        }
                        run.push((b, reply));
                    }
                    Job::CheckpointNow(reply) => {
                        wrote |=
                            self.apply_run(std::mem::take(&mut run), &mut answers, &mut changed);
                        let r = self.checkpoint_now();
                        wrote |= matches!(r, Ok(Some(_)));
                        cp_answers.push((reply, r));
                    }
                    Job::Shutdown => shutdown = true,
                    #[cfg(test)]
                    Job::Hold(_) => {}
                }
            }
            wrote |= self.apply_run(run, &mut answers, &mut changed);
            // Whatever applied a transaction (a checkpoint stored while answering
            // `CheckpointNow` too) is flushed.
            wrote |= std::mem::take(&mut self.dirty);
            if !wrote {
                // Only reads (or batches that all aborted): nothing to keep, and no SQL
                // transaction may stay open between groups. Due entries announced by
                // aborted batches will never be seen: settled.
                self.db.discard();
                self.reread = self.several;
                self.trees.queue_floors.settle();
            }
            if wrote && self.several && !changed.is_empty() {
                for text in announcements(&changed) {
                    self.db.announce(text);
                }
            }
            if wrote {
                let flushed = self.flush();
                if flushed.is_ok() {
                    self.durable_head = self.head.0;
                    self.publish(changed);
                }
                if let Err(msg) = flushed {
                    self.flush_failed = true;
                    tracing::error!(error = %msg, "store flush failed");
                    // PostgreSQL rolled the group back: the head in memory is read again
                    // now (and at every batch until that works).
                    if let Err(e) = self.reload_head() {
                        tracing::error!(error = %e, "reading the trace head again failed");
                    }
                    for (_, r) in answers.iter_mut() {
                        if r.is_ok() {
                            *r = Err(StoreError::Flush(msg.clone()));
                        }
                    }
                    for (_, r) in cp_answers.iter_mut() {
                        if r.is_ok() {
                            *r = Err(StoreError::Flush(msg.clone()));
                        }
                    }
                }
            }
            for (reply, r) in answers {
                reply.send(r);
            }
            for (reply, r) in cp_answers {
                drop(reply.send(r));
            }
            self.maybe_request_checkpoint();
            if !shutdown {
                self.maybe_seal(!self.flush_failed);
            }
            if shutdown {
                if let Some((first, last)) = self.sealer.as_mut().and_then(|s| s.stop())
                    && let Err(e) = self.remove_sealed(first, last)
                {
                    tracing::warn!(error = %e, "removing sealed trace records from the tree failed; the next open does it");
                }
                if self.in_flight {
                    self.store_signed(true);
                }
                if std::mem::take(&mut self.dirty) {
                    drop(self.flush());
                } else {
                    self.db.discard();
                }
                return;
            }
        }
    }

    /// The keys the batches in `jobs` will certainly read: each idempotency claim, and
    /// for each delivery the body's reference count, the mailbox and its email index
    /// entry.
    fn read_ahead<'a>(&'a self, jobs: &[Job]) -> Vec<(&'a super::kv::Tree, Vec<u8>)> {
        use super::tx::{BLOBREFS, EMAIL_INDEX, IDEM};
        let mut keys = Vec::new();
        for job in jobs {
            let Job::Batch(b, _) = job else { continue };
            for op in &b.ops {
                match op {
                    Op::Claim(k) => {
                        keys.push((&self.all[IDEM], super::keys::claim_key(k).to_vec()))
                    }
                    Op::Deliver(d) => {
                        let mb = mailbox_key(&d.mailbox);
                        keys.push((
                            &self.all[BLOBREFS],
                            super::keys::blobref_key(&d.blob.id).to_vec(),
                        ));
                        keys.push((&self.all[MAILBOXES], mb.as_bytes().to_vec()));
                        keys.push((&self.all[EMAIL_INDEX], changes::index_key(&mb, &d.blob.id)));
                    }
                    _ => {}
                }
            }
        }
        keys
    }

    /// sled's flush writes its log with `sync_file_range`, which neither commits the
    /// file's metadata (its new size) nor flushes the disk's write cache: durable against
    /// a killed process, not against a power cut (its own `fsync` comes from a background
    /// thread every 500 ms). An `fdatasync` of sled's file after the flush makes the group
    /// durable before anyone is answered.
    /// On PostgreSQL the flush is the commit of the group's SQL transaction; when it
    /// fails, the group's writes are gone and the trace head is read again.
    fn flush(&mut self) -> Result<(), String> {
        let r = self.db.flush(self.db_file.as_ref());
        // Visible now on every engine, or never to be (see `queue::Floors::settle`).
        self.trees.queue_floors.settle();
        self.reread = self.several;
        if r.is_err() && self.db.flush_failure_loses_writes() {
            self.head_stale = true;
        }
        r
    }

    /// Reads the trace head and checkpoint floor again after a group was lost, and with
    /// several writers at the start of each group (in the group's SQL transaction, under
    /// the commit lock).
    fn reload_head(&mut self) -> Result<(), StoreError> {
        if !self.head_stale && !self.reread {
            return Ok(());
        }
        if self.head_stale {
            self.db.discard();
        }
        let log = TraceLog::new(self.trees.trace.clone());
        self.head = log.head()?;
        let last = match log.last_checkpoint()? {
            Some(cp) => Some(cp),
            None => log.anchor()?,
        };
        // No checkpoint yet: the interval still runs from when it began to.
        self.last_cp = last.map_or((0, self.last_cp.1), |c| (c.seq, c.time));
        // The record that stored the last checkpoint, when it is the head, is covered as
        // far as signing goes (as `store_checkpoint` says): an idle store signs no more.
        let binds_last = self.head.0 == self.last_cp.0 + 1
            && log.get(self.head.0)?.is_some_and(|r| {
                r.kind == EventKind::Checkpoint
                    && r.related
                        .iter()
                        .any(|x| *x == format!("checkpoint:{}", self.last_cp.0))
            });
        self.cp_floor = if binds_last {
            self.head.0
        } else {
            self.last_cp.0
        };
        self.head_stale = false;
        self.reread = false;
        Ok(())
    }

    /// Tells subscribers about durable changes, each (mailbox, folder) once.
    fn publish(&self, mut changed: Vec<MailboxChange>) {
        if self.changes.receiver_count() == 0 {
            return;
        }
        changed.sort_by(|a, b| (&a.mailbox, &a.folder).cmp(&(&b.mailbox, &b.folder)));
        changed.dedup();
        for c in changed {
            // No receiver left is not an error: nobody is waiting.
            drop(self.changes.send(c));
        }
    }

    /// Replaces operations that need scans by point operations (consistent: we are the
    /// only writer) and allocates ids.
    fn expand(
        &self,
        ops: Vec<Op>,
        now: Timestamp,
        shared: &mut Expansion,
    ) -> Result<Vec<(Op, u64)>, StoreError> {
        let mut out = Vec::with_capacity(ops.len());
        let Expansion {
            archive,
            cards_added,
        } = shared;
        let mut lease_token: Option<u64> = None;
        for op in ops {
            match op {
                // The card limit, exact: nothing else writes between this count and the
                // transaction.
                Op::CardAdd { mailbox, card } => {
                    let k = mailbox_key(&mailbox);
                    let have = self
                        .trees
                        .cards
                        .scan_prefix(super::cards::by_mailbox_prefix(&k))
                        .count();
                    let n = cards_added.entry(k).or_default();
                    if have + *n >= super::cards::MAX_CARDS_PER_MAILBOX {
                        return Err(StoreError::TooManyCards {
                            mailbox: mailbox.to_string(),
                            max: super::cards::MAX_CARDS_PER_MAILBOX,
                        });
                    }
                    *n += 1;
                    out.push((Op::CardAdd { mailbox, card }, 0));
                }
                // A delivery is archived after it is stored; a sent envelope as it is.
                Op::Deliver(d) if d.archive => {
                    let copy = super::archive::ArchiveCopy {
                        mailbox: d.mailbox.clone(),
                        folder: super::archive::RECEIVED,
                        blob: d.blob.clone(),
                        internal_date: d.internal_date,
                        quota: 0,
                    };
                    out.push((Op::Deliver(d), 0));
                    self.expand_archive(copy, archive, now, &mut out)?;
                }
                Op::ArchiveCopy(copy) => self.expand_archive(copy, archive, now, &mut out)?,
                Op::MailboxDelete(addr) => {
                    let k = mailbox_key(&addr);
                    if !self.trees.mailboxes.contains_key(k.as_bytes())? {
                        return Err(StoreError::NoSuchMailbox(addr.to_string()));
                    }
                    // Its smart cards, both kinds of key.
                    for kv in self
                        .trees
                        .cards
                        .scan_prefix(super::cards::by_mailbox_prefix(&k))
                    {
                        let (ck, _) = kv?;
                        let plen = super::cards::by_mailbox_prefix(&k).len();
                        let sha = String::from_utf8_lossy(&ck[plen..]).into_owned();
                        for key in [ck.to_vec(), super::cards::by_card(&sha, &k)] {
                            out.push((
                                Op::Raw {
                                    tree: super::tx::CARDS,
                                    key,
                                    value: None,
                                },
                                0,
                            ));
                        }
                    }
                    for kv in self.trees.folders.scan_prefix(folder_prefix(&k)) {
                        let (fk, fv) = kv?;
                        let f: FolderInfo = decode("folder", &fv)?;
                        self.expand_folder_messages(&f, &mut out)?;
                        out.push((
                            Op::Raw {
                                tree: FOLDERS,
                                key: fk.to_vec(),
                                value: None,
                            },
                            0,
                        ));
                    }
                    // Its change log and email index (its modseq stays, as a tombstone).
                    for (tree, key) in changes::mailbox_keys(&self.trees, &k)? {
                        out.push((
                            Op::Raw {
                                tree,
                                key,
                                value: None,
                            },
                            0,
                        ));
                    }
                    // Its subscriptions to names without a folder.
                    out.push((
                        Op::Raw {
                            tree: FOLDERS,
                            key: super::messages::subscriptions_key(&k),
                            value: None,
                        },
                        0,
                    ));
                    out.push((
                        Op::Raw {
                            tree: MAILBOXES,
                            key: k.into_bytes(),
                            value: None,
                        },
                        0,
                    ));
                    out.push((Op::MailboxDelete(addr), 0));
                }
                Op::FolderDelete { mailbox, name } if super::archive::is_archive(&name) => {
                    return Err(StoreError::ReadOnlyFolder {
                        mailbox: mailbox.to_string(),
                        folder: name,
                    });
                }
                Op::FolderDelete { mailbox, name } => {
                    let name = normalize_folder(&name);
                    let key = folder_key(&mailbox_key(&mailbox), &name);
                    let f: FolderInfo = match self.trees.folders.get(&key)? {
                        Some(v) => decode("folder", &v)?,
                        None => {
                            return Err(StoreError::NoSuchFolder {
                                mailbox: mailbox.to_string(),
                                folder: name,
                            });
                        }
                    };
                    for kv in self.trees.messages.scan_prefix(f.id.to_be_bytes()) {
                        let (_, v) = kv?;
                        let m = decode_message(&v)?;
                        out.push((
                            Op::Expunge {
                                mailbox: mailbox.clone(),
                                folder: name.clone(),
                                uid: m.uid,
                            },
                            0,
                        ));
                    }
                    // Removes the folder record, after its messages; carries its id.
                    out.push((Op::FolderDelete { mailbox, name }, f.id));
                }
                // One lease token for all the items a batch leases.
                op @ Op::QueueLease { .. } => {
                    let token = match lease_token {
                        Some(t) => t,
                        None => *lease_token.insert(self.db.generate_id()?),
                    };
                    out.push((op, token));
                }
                op @ (Op::Enqueue(_) | Op::FolderCreate { .. } | Op::MailboxAdd(_)) => {
                    out.push((op, self.db.generate_id()?));
                }
                op => out.push((op, 0)),
            }
        }
        Ok(out)
    }

    /// The drops that make room for `copy` (see [`super::archive`]), then the copy, with
    /// an id for the folder it may create.
    fn expand_archive(
        &self,
        mut copy: super::archive::ArchiveCopy,
        planner: &mut super::archive::Planner,
        now: Timestamp,
        out: &mut Vec<(Op, u64)>,
    ) -> Result<(), StoreError> {
        for drop in planner.plan(&self.trees, &self.archive, now, &mut copy)? {
            out.push((drop, 0));
        }
        out.push((Op::ArchiveCopy(copy), self.db.generate_id()?));
        Ok(())
    }

    fn expand_folder_messages(
        &self,
        f: &FolderInfo,
        out: &mut Vec<(Op, u64)>,
    ) -> Result<(), StoreError> {
        for kv in self.trees.messages.scan_prefix(f.id.to_be_bytes()) {
            let (_, v) = kv?;
            let m = decode_message(&v)?;
            out.push((
                Op::Raw {
                    tree: MESSAGES,
                    key: message_key(f.id, m.uid).to_vec(),
                    value: None,
                },
                0,
            ));
            out.push((Op::BlobUnref(m.blob), 0));
        }
        Ok(())
    }

    fn apply(&mut self, batch: Batch) -> Result<Applied, StoreError> {
        self.reload_head()?;
        let now = self.clock.now();
        let ops = self.expand(batch.ops, now, &mut Expansion::default())?;
        let head = &self.head;
        let tail = self.trees.trace.tail.as_deref();
        let floors = &*self.trees.queue_floors;
        let res = self.db.transaction(&self.all, |t| {
            let tx = Tx {
                t,
                tail,
                floors: Some(floors),
            };
            let mut head = head.clone();
            let applied = apply_expanded(&tx, &ops, now, &mut head)?;
            Ok((applied, head))
        });
        let (applied, head) = res.inspect_err(|_| self.forget_uncommitted())?;
        self.head = head;
        self.dirty = true;
        report(&applied, &ops);
        Ok(applied)
    }
}

impl Committer {
    /// After a transaction that did not commit: the in-memory index entries of the
    /// records it appended are dropped ([`crate::trace::tail`]).
    pub(super) fn forget_uncommitted(&self) {
        if let Some(tail) = &self.trees.trace.tail {
            tail.drop_after(self.head.0);
        }
    }
}

/// One batch's expanded operations inside the transaction `tx`: one modseq step and one
/// log entry per mailbox for the whole batch.
fn apply_expanded(
    tx: &Tx,
    ops: &[(Op, u64)],
    now: Timestamp,
    head: &mut (u64, String),
) -> super::tx::TxResult<Applied> {
    let mut applied = Applied::default();
    let mut log = ChangeSet::default();
    for (op, id) in ops {
        apply_op(tx, op, *id, now, head, &mut applied, &mut log)?;
    }
    applied.modseqs = log.write(tx)?;
    Ok(applied)
}

/// Logs what an applied batch did that its caller does not hear about.
fn report(applied: &Applied, ops: &[(Op, u64)]) {
    for d in &applied.delivered {
        match &d.rule {
            Some(r) if d.rule_broken => tracing::warn!(
                mailbox = %d.mailbox,
                rule = %r,
                "the rule's folder is gone: delivered to the INBOX"
            ),
            Some(r) => {
                tracing::debug!(mailbox = %d.mailbox, folder = %d.folder, rule = %r, "filed by a rule")
            }
            None => {}
        }
    }
    // A mailbox without an archive (size 0) skips every copy: no warning.
    let sized = |m: &str| {
        ops.iter().any(
            |(op, _)| matches!(op, Op::ArchiveCopy(c) if c.quota > 0 && c.mailbox.to_string() == m),
        )
    };
    for m in applied.archive_full.iter().filter(|m| sized(m)) {
        tracing::warn!(mailbox = %m, "security archive full (nothing past the retention period to drop): a copy was not archived");
    }
}

/// What the expansion of one batch leaves for the next ones applied in the same
/// transaction (`together`): the archives' planned usage, which those batches would
/// otherwise read from the trees as committed (and, within one batch, the cards added).
#[derive(Default)]
struct Expansion {
    archive: super::archive::Planner,
    cards_added: std::collections::HashMap<String, usize>,
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, v: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(v).map_err(|e| StoreError::Corrupt {
        what: what.into(),
        detail: e.to_string(),
    })
}
