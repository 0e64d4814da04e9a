//! The embedded store: mailboxes, folders and messages, message bodies (blobs), the
//! outbound queue, the pending-receipt table, idempotency keys — and, through the same
//! commits, the trace log ([`crate::trace`]).
//!
//! ## What it owns, what it must not touch
//!
//! It owns the data directory given to [`Store::open`]: `db/` (sled) and `blobs/`
//! ([`blobs`]). It does not know PEC rules (the pipeline decides what to deliver, which
//! receipt to emit, which trace records to write) and reads no configuration file: the
//! caller passes [`StoreOptions`] (built from `store.*`, `trace.*`, `limits.*`,
//! `provider.domains`).
//!
//! ## Durability: "accepted means committed" (design principle 10)
//!
//! Every mutation is a [`Batch`] of operations applied by a single committer thread as
//! **one sled transaction across all trees** (message, usage, blob reference, trace
//! record and its indexes, idempotency claim...), followed by a flush (fsync) before the
//! caller's [`Store::commit`] returns. With group commit on, the committer takes every
//! batch waiting, applies each in its own transaction, flushes **once**, then answers
//! all of them: under load one fsync serves many messages. Because the committer is the
//! only writer, checks such as quotas (`usage + size <= quota`) and idempotency claims
//! are exact under any concurrency.
//!
//! Blob files are written by the caller *before* the batch that refers to them
//! ([`BlobStore`]) and are durable before it is applied: fsynced by the writer
//! ([`BlobStore::put`]), or staged ([`BlobStore::put_staged`]) and made durable by the
//! committer's one sync of the group before it applies any of its batches; on fjall, small
//! staged bodies go into the keyspace's journal ahead of those batches and are durable
//! with the group's flush ([`blobs::keyspace`]). A crash leaves at worst an unreferenced
//! file or body, swept at open after a grace period.
//!
//! ## Change log (JMAP `/changes`)
//!
//! The same transactions keep, per mailbox, a modseq, a blob index (one JMAP Email per
//! content) and a bounded log of what each batch changed: see [`changes`].
//!
//! ## Async callers
//!
//! [`Store::commit`] blocks. Tokio code uses [`Store::commit_async`], which only awaits
//! a oneshot answered by the committer; blob writes ([`BlobStore::put`],
//! [`BlobWriter`]) do file I/O and belong in `spawn_blocking`.
//!
//! ## Keys (plan for IMAP CREATE/RENAME/DELETE)
//!
//! Folders are keyed `mailbox \0 name` but messages are keyed by the folder's numeric id
//! and the UID, so a RENAME rewrites one folder key and never touches messages.

pub mod archive;
pub mod batch;
pub mod blobs;
pub mod cards;
pub mod changes;
pub(crate) mod codec;
mod commit;
#[cfg(test)]
pub(crate) use commit::seal::BETWEEN_GROUPS_AND_DROP;
#[cfg(test)]
pub(crate) use schema::SCHEMA_KEY;
use schema::check_schema;
pub use schema::{SCHEMA_VERSION, SUPPORTED_SCHEMAS};
mod engine;
mod error;
mod keys;
pub mod kv;
pub mod mailbox;
pub mod messages;
pub mod migrate;
pub mod notify;
mod options;
pub mod password;
pub mod pending;
pub mod queue;
pub mod quota;
pub(crate) mod retention;
mod schema;
mod sealed;
mod tx;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::trace::log::TraceTrees;
use crate::trace::{Checkpoint, TraceLog};

pub use batch::{Applied, Batch};
pub use blobs::{Blob, BlobBackend, BlobId, BlobReader, BlobStore, BlobWriter, SweepStats};
pub use changes::{ChangeKind, Changes, IdChanges, MAX_LOG_ENTRIES};
use engine::open_db;
pub use engine::{sled_segment_size, wait_until_unlocked};
pub use error::StoreError;
pub use kv::pg::PgOptions;
use kv::{Db, Tree};
pub use mailbox::{MailboxInfo, MailboxOptions, NewMailbox};
pub use messages::{Delivered, Delivery, FolderInfo, MessageRecord, Uid};
pub use options::{StoreBackend, StoreOptions};
pub use pending::{Awaiting, PendingEntry};
pub use queue::{Due, Lane, NewQueueItem, QueueItem, Spread};
pub use retention::PurgeReport;

/// This process runs the duties only one may run ([`Store::try_lead`]).
pub enum Lead {
    /// The only writer.
    Sole,
    /// Elected among several writers, while its election lock lasts.
    Elected(Box<kv::pg::Lead>),
}

impl Lead {
    /// Whether this process still runs them (blocks for a round trip to the database).
    pub fn holds(&self) -> bool {
        match self {
            Lead::Sole => true,
            Lead::Elected(l) => l.holds(),
        }
    }
}

/// A committed change to one mailbox, published by the committer after the flush that
/// made it durable ([`Store::subscribe_changes`]). IMAP IDLE listens for these, so new
/// mail, flag changes and expunges from any writer (delivery point, IMAP, POP3, admin)
/// reach IDLE-ing clients at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxChange {
    /// The mailbox address, as [`crate::pec::address::PecAddress`] displays it.
    pub mailbox: String,
    /// The folder changed; `None` when the change may concern any folder (a rename, the
    /// mailbox deleted).
    pub folder: Option<String>,
}

impl MailboxChange {
    /// Whether this change may concern `folder` of `mailbox`.
    pub fn concerns(&self, mailbox: &str, folder: &str) -> bool {
        self.mailbox == mailbox
            && self
                .folder
                .as_deref()
                .is_none_or(|f| messages::normalize_folder(f) == messages::normalize_folder(folder))
    }
}

/// Changes a slow subscriber may fall behind by before it is told it lagged (and must
/// then assume anything changed).
pub const CHANGE_BACKLOG: usize = 1024;

/// All trees, in the fixed order used by transactions (see [`commit`]).
#[derive(Debug, Clone)]
pub(crate) struct Trees {
    pub meta: Tree,
    pub mailboxes: Tree,
    pub folders: Tree,
    pub messages: Tree,
    pub blobrefs: Tree,
    pub queue: Tree,
    pub queue_due: Tree,
    pub pending: Tree,
    pub pending_due: Tree,
    pub idem: Tree,
    pub trace: TraceTrees,
    pub changelog: Tree,
    pub email_index: Tree,
    /// Smart cards of mailboxes ([`cards`]); added in schema 3 without a migration
    /// (an older store simply has none).
    pub cards: Tree,
    /// Where the queue's scans start ([`queue::Floors`]): shared by the readers and
    /// the committer, which lowers them.
    pub queue_floors: Arc<queue::Floors>,
}

impl Trees {
    /// The same trees as the committer reads them between its transactions: on
    /// PostgreSQL, inside the group's open SQL transaction (see [`kv::pg`]).
    fn for_committer(&self) -> Self {
        let w = |t: &Tree| match t {
            Tree::Pg(p) => Tree::Pg(p.writer()),
            t => t.clone(),
        };
        let tr = &self.trace;
        Self {
            meta: w(&self.meta),
            mailboxes: w(&self.mailboxes),
            folders: w(&self.folders),
            messages: w(&self.messages),
            blobrefs: w(&self.blobrefs),
            queue: w(&self.queue),
            queue_due: w(&self.queue_due),
            pending: w(&self.pending),
            pending_due: w(&self.pending_due),
            idem: w(&self.idem),
            trace: TraceTrees {
                records: w(&tr.records),
                keys: w(&tr.keys),
                by_msgid: w(&tr.by_msgid),
                by_ident: w(&tr.by_ident),
                by_mailbox: w(&tr.by_mailbox),
                by_time: w(&tr.by_time),
                checkpoints: w(&tr.checkpoints),
                meta: w(&tr.meta),
                sealed: tr.sealed.clone(),
                tail: tr.tail.clone(),
            },
            changelog: w(&self.changelog),
            email_index: w(&self.email_index),
            cards: w(&self.cards),
            queue_floors: self.queue_floors.clone(),
        }
    }

    fn open(db: &Db) -> Result<Self, kv::Error> {
        Ok(Self {
            meta: db.open_tree("meta")?,
            mailboxes: db.open_tree("mailboxes")?,
            folders: db.open_tree("folders")?,
            messages: db.open_tree("messages")?,
            blobrefs: db.open_tree("blobrefs")?,
            queue: db.open_tree("queue")?,
            queue_due: db.open_tree("queue_due")?,
            pending: db.open_tree("pending")?,
            pending_due: db.open_tree("pending_due")?,
            idem: db.open_tree("idem")?,
            trace: TraceTrees::open(db)?,
            changelog: db.open_tree("changelog")?,
            email_index: db.open_tree("email_index")?,
            cards: db.open_tree("cards")?,
            // Removed keys linger on fjall only; with several writers the others' writes
            // are not seen here.
            queue_floors: Arc::new(queue::Floors::new(
                matches!(db, Db::Fjall(_)) && !db.several_writers(),
            )),
        })
    }
}

struct Inner {
    /// This store's id ([`Store::id`]).
    id: String,
    dir: PathBuf,
    /// The derived-data cache ([`Store::cache_get`]); outside the transactional trees.
    derived: Tree,
    db: Db,
    trees: Trees,
    blobs: BlobStore,
    options: StoreOptions,
    jobs: Sender<commit::Job>,
    committer: Mutex<Option<JoinHandle<()>>>,
    sweep: SweepStats,
    changes: tokio::sync::broadcast::Sender<MailboxChange>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.jobs.send(commit::Job::Shutdown);
        if let Some(h) = self
            .committer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            let _ = h.join();
        }
    }
}

/// Counts a durable commit in the metrics: its latency and the trace records it wrote.
fn committed(
    r: &Result<Applied, StoreError>,
    started: std::time::Instant,
    kinds: &[crate::trace::EventKind],
) {
    if r.is_ok() {
        crate::ops::metrics::commit_latency(started.elapsed());
        crate::ops::metrics::trace_events(kinds);
    }
}

/// A handle on an open store; cheap to clone and share between threads.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.inner.dir.display())
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Key of the store id in the `meta` tree ([`Store::id`]).
const STORE_ID_KEY: &[u8] = b"store_id";

/// The store's id, made (32 hex digits) and made durable at its first open.
fn store_id(dir: &Path, db: &Db, trees: &Trees) -> Result<String, StoreError> {
    if let Some(v) = trees.meta.get(STORE_ID_KEY)? {
        return Ok(String::from_utf8_lossy(&v).into_owned());
    }
    let mut raw = [0u8; 16];
    openssl::rand::rand_bytes(&mut raw).map_err(|e| StoreError::Corrupt {
        what: "store id".into(),
        detail: format!("no random bytes: {e}"),
    })?;
    let id = hex::encode(raw);
    trees.meta.insert(STORE_ID_KEY, id.as_bytes())?;
    // Durable before anything is told the id (an object store's bucket is claimed with it).
    flush_durably(dir, db)?;
    Ok(id)
}

/// sled's flush, then an `fdatasync` of its file: sled's flush alone is `sync_file_range`,
/// durable against a killed process but not against a power cut (see
/// `commit::Committer::flush`, which does the same for every commit). PostgreSQL:
/// writes outside the committer are committed as they are made; the committer's group,
/// if any, is committed.
fn flush_durably(dir: &Path, db: &Db) -> Result<(), StoreError> {
    match db {
        Db::Sled(_) => {
            let file = dir.join("db").join("db");
            let f = File::open(&file).map_err(io_err(&file))?;
            db.flush(Some(&f)).map_err(StoreError::Flush)
        }
        Db::Fjall(_) | Db::Pg(_) => db.flush(None).map_err(StoreError::Flush),
    }
}

impl Store {
    /// Opens (creating if needed) the store in `dir`: checks the schema version, sweeps
    /// unreferenced blobs older than `options.blob_grace`, starts the committer.
    pub fn open(dir: impl AsRef<Path>, options: StoreOptions) -> Result<Self, StoreError> {
        let dir = dir.as_ref().to_path_buf();
        // The conformance run of the unit tests on PostgreSQL (see `conformance`).
        #[cfg(test)]
        let options = kv::pg::testing::backend_for(&dir, options)?;
        #[cfg(test)]
        let options = kv::fjall::testing::backend_for(options);
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let db = open_db(&dir, &options)?;
        let mut trees = Trees::open(&db)?;
        let found = check_schema(&dir, &db, &trees)?;
        // Nodes of an older version keep writing in their forms (claims, blob counts)
        // after a migration they do not see: migrate only with nobody else writing.
        if found != SCHEMA_VERSION && !db.writes_alone()? {
            return Err(StoreError::UpgradeWhileOthersWrite {
                dir: dir.clone(),
                found,
                to: SCHEMA_VERSION,
            });
        }
        // Checked before anything is written: a database and files that do not belong
        // together are refused as they were found.
        if db.is_local() {
            trees.trace.sealed = Some(Arc::new(sealed::open(&dir, &db, &trees)?));
        }
        queue::open_lanes(&trees, &options.domains)?;
        schema::migrate(&dir, &db, &trees, found, options.clock.now())?;
        // The unsealed records' `trace_keys` and `trace_time` entries, in memory from now
        // on.
        trees.trace.tail = sealed::index_unsealed(&trees)?.map(Arc::new);
        let id = store_id(&dir, &db, &trees)?;
        let mut blobs = BlobStore::open(dir.join("blobs"), &options.blobs, Some(&id))?;
        if let Db::Fjall(f) = &db {
            blobs = blobs
                .with_keyspace_bodies(blobs::keyspace::KeyspaceBodies::new(f.body_partitions()?));
        }
        let refs = trees.blobrefs.clone();
        let sweep = if blobs.sweeps_at_open() {
            blobs.sweep(
                |id| Ok(refs.contains_key(keys::blobref_key(id))?),
                options.blob_grace,
            )?
        } else {
            SweepStats::default()
        };
        let (changes, _) = tokio::sync::broadcast::channel(CHANGE_BACKLOG);
        // sled's log file (`db/db` under the directory given to sled), synced by the
        // committer after each flush.
        let db_file = match &db {
            Db::Sled(_) => {
                let db_path = dir.join("db").join("db");
                Some(std::fs::File::open(&db_path).map_err(io_err(&db_path))?)
            }
            Db::Fjall(_) | Db::Pg(_) => None,
        };
        // From here the committer owns the writer's connection.
        db.opened();
        // Several writers: what the others commit reaches this process's subscribers too.
        if let Db::Pg(pg) = &db {
            let feed = changes.clone();
            pg.listen(move |heard| match heard {
                Some(text) => {
                    for c in commit::heard(text) {
                        // Nobody subscribed: nobody to tell.
                        drop(feed.send(c));
                    }
                }
                None => tracing::info!(
                    "changes other nodes committed while this one was not listening were not heard (IMAP IDLE's poll finds them)"
                ),
            });
        }
        let (jobs, committer) = commit::Committer::start(
            db.clone(),
            trees.clone(),
            blobs.clone(),
            db_file,
            &options,
            changes.clone(),
        )?;
        let derived = db.open_tree("derived")?;
        Ok(Self {
            inner: Arc::new(Inner {
                id,
                derived,
                dir,
                db,
                trees,
                blobs,
                options,
                jobs,
                committer: Mutex::new(Some(committer)),
                sweep,
                changes,
            }),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The metadata backend's name: `sled` or `postgres`.
    pub fn backend_name(&self) -> &'static str {
        match &self.inner.db {
            Db::Sled(_) => "sled",
            Db::Fjall(_) => "fjall",
            Db::Pg(_) => "postgres",
        }
    }

    /// Whether the database server answers (`None`: sled, nothing to ask).
    pub fn probe_database(&self) -> Option<Result<(), StoreError>> {
        match &self.inner.db {
            Db::Sled(_) | Db::Fjall(_) => None,
            Db::Pg(db) => Some(db.probe().map_err(StoreError::Db)),
        }
    }

    /// Another node took the store over while this one was cut off from its database
    /// (PostgreSQL with a standby, see [`wait_until_unlocked`]): nothing commits here
    /// any more, and the process must stop before it does more work from memory.
    pub fn deposed(&self) -> bool {
        self.inner.db.deposed()
    }

    /// Whether other processes write this store too (PostgreSQL with `several_writers`).
    pub fn several_writers(&self) -> bool {
        self.inner.db.several_writers()
    }

    /// With several writers: tries to become the process that runs the duties only one
    /// may run (the timers, notifications, upkeep); `None` while another one does. The
    /// returned [`Lead`] says whether it still holds them. Without several writers this
    /// process is the only one: always `Some`.
    pub fn try_lead(&self) -> Result<Option<Lead>, StoreError> {
        match &self.inner.db {
            Db::Pg(pg) if pg.several_writers() => {
                Ok(pg.try_lead()?.map(|l| Lead::Elected(Box::new(l))))
            }
            _ => Ok(Some(Lead::Sole)),
        }
    }

    /// Where the store's metadata is, for messages: its directory (sled) or its database
    /// (PostgreSQL, without the password).
    pub fn location(&self) -> String {
        match &self.inner.db {
            Db::Sled(_) | Db::Fjall(_) => self.inner.dir.display().to_string(),
            Db::Pg(db) => db.shown().to_string(),
        }
    }

    /// A random id given to the store when it was first opened: what claims its bucket
    /// prefix with the S3 blob backend.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// Bytes an unprivileged writer can still use on the filesystem of the store
    /// (`statvfs`: available blocks × fragment size).
    pub fn free_bytes(&self) -> std::io::Result<u64> {
        let st = rustix::fs::statvfs(&self.inner.dir)?;
        Ok(st.f_bavail.saturating_mul(st.f_frsize))
    }

    pub fn options(&self) -> &StoreOptions {
        &self.inner.options
    }

    /// What the sweep at open removed.
    pub fn sweep_stats(&self) -> &SweepStats {
        &self.inner.sweep
    }

    /// The blob files.
    pub fn blobs(&self) -> &BlobStore {
        &self.inner.blobs
    }

    /// Read access to the trace log (exports are signed with this store's signer).
    pub fn trace(&self) -> TraceLog {
        TraceLog::new(self.inner.trees.trace.clone()).with_signer(self.inner.options.signer.clone())
    }

    pub(crate) fn trees(&self) -> &Trees {
        &self.inner.trees
    }

    /// Derived data that can always be computed again from what the store holds (e.g. the
    /// JMAP summary of a blob): read without a transaction, written without a flush (a
    /// crash may lose an entry, never make one wrong, since entries are keyed by what
    /// they are derived from). `space` separates the users of the cache.
    pub fn cache_get(&self, space: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let k = format!("{space}\0{key}");
        Ok(self.inner.derived.get(k.as_bytes())?.map(|v| v.to_vec()))
    }

    /// See [`Store::cache_get`].
    pub fn cache_put(&self, space: &str, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let k = format!("{space}\0{key}");
        self.inner.derived.insert(k.as_bytes(), value)?;
        Ok(())
    }

    /// Mailbox changes committed from now on, each published once durable. A receiver
    /// that falls [`CHANGE_BACKLOG`] changes behind gets `Lagged` and should assume that
    /// anything changed.
    pub fn subscribe_changes(&self) -> tokio::sync::broadcast::Receiver<MailboxChange> {
        self.inner.changes.subscribe()
    }

    /// Applies `batch` atomically and durably; blocks until it is on disk.
    /// Must not be called from an async executor thread: use [`Store::commit_async`].
    pub fn commit(&self, batch: Batch) -> Result<Applied, StoreError> {
        let (tx, rx) = mpsc::sync_channel(1);
        let (started, kinds) = (std::time::Instant::now(), batch.trace_kinds());
        self.inner
            .jobs
            .send(commit::Job::Batch(batch, commit::Reply::Sync(tx)))
            .map_err(|_| StoreError::Closed)?;
        let r = rx.recv().map_err(|_| StoreError::Closed)?;
        committed(&r, started, &kinds);
        r
    }

    /// Sends every batch to the committer, held meanwhile, before waiting for any: they
    /// land in one group (tests of what a group does).
    #[cfg(test)]
    pub(crate) fn commit_all(&self, batches: Vec<Batch>) -> Vec<Result<Applied, StoreError>> {
        let (release, hold) = mpsc::channel();
        if self.inner.jobs.send(commit::Job::Hold(hold)).is_err() {
            return batches.iter().map(|_| Err(StoreError::Closed)).collect();
        }
        let waits: Vec<_> = batches
            .into_iter()
            .map(|b| {
                let (tx, rx) = mpsc::sync_channel(1);
                let sent = self
                    .inner
                    .jobs
                    .send(commit::Job::Batch(b, commit::Reply::Sync(tx)));
                (sent, rx)
            })
            .collect();
        drop(release);
        waits
            .into_iter()
            .map(|(sent, rx)| {
                sent.map_err(|_| StoreError::Closed)?;
                rx.recv().map_err(|_| StoreError::Closed)?
            })
            .collect()
    }

    /// As [`Store::commit`], without blocking the executor.
    pub async fn commit_async(&self, batch: Batch) -> Result<Applied, StoreError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (started, kinds) = (std::time::Instant::now(), batch.trace_kinds());
        self.inner
            .jobs
            .send(commit::Job::Batch(batch, commit::Reply::Async(tx)))
            .map_err(|_| StoreError::Closed)?;
        let r = rx.await.map_err(|_| StoreError::Closed)?;
        committed(&r, started, &kinds);
        r
    }

    /// Claims `key` durably; `false` when it was claimed before. To make a step
    /// idempotent together with its effects, put [`Batch::claim`] in the step's batch.
    pub fn claim_once(&self, key: &str) -> Result<bool, StoreError> {
        match self.commit(Batch::new().claim(key)) {
            Ok(_) => Ok(true),
            Err(StoreError::AlreadyClaimed(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Whether `key` has been claimed.
    pub fn is_claimed(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self.inner.trees.idem.contains_key(keys::claim_key(key))?)
    }

    /// Signs the current head of the trace chain now (if a signer is configured and
    /// records were added since the last checkpoint) and waits until it is stored.
    pub fn checkpoint_now(&self) -> Result<Option<Checkpoint>, StoreError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.inner
            .jobs
            .send(commit::Job::CheckpointNow(tx))
            .map_err(|_| StoreError::Closed)?;
        rx.recv().map_err(|_| StoreError::Closed)?
    }

    /// Removes unreferenced blobs older than `grace`. Safe while the store runs as long
    /// as `grace` exceeds the time between a blob write and its commit.
    pub fn sweep_blobs(&self, grace: Duration) -> Result<SweepStats, StoreError> {
        let refs = self.inner.trees.blobrefs.clone();
        self.inner
            .blobs
            .sweep(|id| Ok(refs.contains_key(keys::blobref_key(id))?), grace)
    }

    /// Flushes everything ([`Store::flush`]) and writes out what the engine keeps only
    /// in memory and its journal (fjall's tables): afterwards the files under the store
    /// are what it holds for good. Benchmarks weigh a store after it.
    pub fn settle(&self) -> Result<(), StoreError> {
        self.flush()?;
        Ok(self.inner.db.settle()?)
    }

    /// How many records refer to blob `id` (messages and queue items).
    pub fn blob_refs(&self, id: &BlobId) -> Result<u64, StoreError> {
        Ok(self
            .inner
            .trees
            .blobrefs
            .get(keys::blobref_key(id))?
            .map_or(0, |v| tx::be_u64(&v)))
    }

    /// Flushes everything to disk (commits already do). On PostgreSQL there is nothing
    /// to do: only the committer commits its groups, each before it answers.
    pub fn flush(&self) -> Result<(), StoreError> {
        match &self.inner.db {
            Db::Sled(_) | Db::Fjall(_) => flush_durably(&self.inner.dir, &self.inner.db),
            Db::Pg(_) => Ok(()),
        }
    }

    /// Per tree of the database: its name, entries and the bytes of their keys and values
    /// (what the metadata holds, before the database's own overhead). Reads every entry:
    /// for reports and benchmarks, not for a hot path.
    pub fn tree_sizes(&self) -> Result<Vec<(String, u64, u64)>, StoreError> {
        let mut out = Vec::new();
        for name in self.inner.db.tree_names()? {
            let tree = self.inner.db.open_tree(&name)?;
            let (mut n, mut bytes) = (0u64, 0u64);
            for kv in tree.iter() {
                let (k, v) = kv?;
                n += 1;
                bytes += (k.len() + v.len()) as u64;
            }
            out.push((name, n, bytes));
        }
        if let Some(sealed) = &self.inner.trees.trace.sealed {
            // Counted as stored: what the files hold beyond it is the slot tables.
            let (mut n, mut bytes) = (0u64, 0u64);
            for kv in self.inner.trees.trace.records_in(1, sealed.upto()) {
                let (_, v) = kv?;
                n += 1;
                bytes += 8 + v.len() as u64;
            }
            out.push(("trace (sealed)".into(), n, bytes));
        }
        out.sort_by_key(|t| std::cmp::Reverse(t.2));
        Ok(out)
    }
}

#[cfg(test)]
mod conformance;
#[cfg(test)]
mod several_tests;
#[cfg(test)]
pub(crate) mod tests;
