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
//! committer's one sync of the group before it applies any of its batches. A crash
//! leaves at worst an unreferenced file, swept at open after a grace period.
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
mod commit;
pub mod kv;
pub mod mailbox;
pub mod messages;
pub mod migrate;
pub mod notify;
pub mod password;
pub mod pending;
pub mod queue;
pub mod quota;
mod retention;
mod tx;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::clock::{SharedClock, SystemClock};
use crate::pec::address::Domain;
use crate::pec::smime::Signer;
use crate::trace::log::{TraceError, TraceTrees};
use crate::trace::{Checkpoint, TraceLog};

pub use batch::{Applied, Batch};
pub use blobs::{Blob, BlobBackend, BlobId, BlobReader, BlobStore, BlobWriter, SweepStats};
pub use changes::{ChangeKind, Changes, IdChanges, MAX_LOG_ENTRIES};
pub use kv::pg::PgOptions;
use kv::{Db, Tree};
pub use mailbox::{MailboxInfo, MailboxOptions, NewMailbox};
pub use messages::{Delivered, Delivery, FolderInfo, MessageRecord, Uid};
pub use pending::{Awaiting, PendingEntry};
pub use queue::{Lane, NewQueueItem, QueueItem};
pub use retention::PurgeReport;

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

/// The schema this code reads and writes.
///
/// History: 1 = first release; 2 = the outbound queue's due index is split into a local
/// and a remote lane (a one-byte lane prefix on each due key). A version-1 store is
/// migrated at open (the due index is derived data, rebuilt from the queue items by
/// `queue::open_lanes` on every open) and then marked 2, so an older pecd refuses it
/// instead of misreading the new keys; 3 = the per-mailbox change log and blob index of
/// [`changes`] (JMAP `/changes`). A version-1 or -2 store is migrated at open: the blob
/// index is derived from the message records ([`changes::build_email_index`]), modseqs
/// start at 0 with an empty log; 4 = the security archive's folder names are reserved
/// ([`archive`]): a folder a user made at or under `Archivio di sicurezza` is renamed at
/// open by [`archive::migrate_user_folders`], and the email index is derived again after
/// it.
pub const SCHEMA_VERSION: u32 = 4;
/// Schemas this code can open (older ones are migrated to [`SCHEMA_VERSION`]).
pub const SUPPORTED_SCHEMAS: &[u32] = &[1, 2, 3, 4];

/// Errors of the store, by cause.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("database error: {0}")]
    Db(#[from] kv::Error),
    #[error(
        "the store in {} is locked by another process (is `pecd serve` running? stop it, or use its control interface)",
        dir.display()
    )]
    Locked { dir: PathBuf },
    #[error(
        "the store in {} has schema version {found}, this pecd supports version(s) {supported:?}: refusing to open it",
        dir.display()
    )]
    UnknownSchema {
        dir: PathBuf,
        found: u32,
        supported: Vec<u32>,
    },
    #[error("corrupt store entry ({what}): {detail}")]
    Corrupt { what: String, detail: String },
    #[error("mailbox {0} already exists")]
    MailboxExists(String),
    #[error("no mailbox {0}")]
    NoSuchMailbox(String),
    #[error("domain {domain} is not served by this provider (served: {})", served.join(", "))]
    DomainNotServed { domain: String, served: Vec<String> },
    #[error("no folder {folder:?} in mailbox {mailbox}")]
    NoSuchFolder { mailbox: String, folder: String },
    #[error("folder {folder:?} already exists in mailbox {mailbox}")]
    FolderExists { mailbox: String, folder: String },
    /// The security archive: no client may change it ([`archive`]).
    #[error("{folder:?} of {mailbox} is the security archive: it can be read, not changed")]
    ReadOnlyFolder { mailbox: String, folder: String },
    #[error("no message with UID {uid} in {mailbox}/{folder}")]
    NoSuchMessage {
        mailbox: String,
        folder: String,
        uid: u32,
    },
    #[error("mailbox {mailbox} over quota: {usage} + {size} bytes > {quota} bytes")]
    QuotaExceeded {
        mailbox: String,
        usage: u64,
        size: u64,
        quota: u64,
    },
    #[error("idempotency key {0:?} was already claimed: the step was done before")]
    AlreadyClaimed(String),
    #[error("blob {0} is missing")]
    BlobMissing(BlobId),
    /// The object store holding the blobs failed or refused a request ([`blobs::s3`]).
    #[error("object store: {op} {key}: {detail}")]
    ObjectStore {
        op: &'static str,
        key: String,
        detail: String,
    },
    #[error("{0:?} is not a blob id")]
    BadBlobId(String),
    #[error("no queue item {0}")]
    NoSuchQueueItem(u64),
    /// JMAP `cannotCalculateChanges`: `since` is outside the kept log `[oldest, current]`.
    #[error(
        "changes of {mailbox} since modseq {since} cannot be calculated: the log covers {oldest} to {current}"
    )]
    ChangesTooOld {
        mailbox: String,
        since: u64,
        oldest: u64,
        current: u64,
    },
    /// A change to the notifications broke one of their rules ([`notify`]).
    #[error(transparent)]
    Notify(#[from] crate::notify::NotifyError),
    /// The password changed between the check of the current one and the change.
    #[error("the password of {0} changed meanwhile")]
    PasswordMoved(String),
    /// The quota notice level was moved by another writer ([`Batch::quota_notice`]).
    #[error("the quota notice level of {0} changed meanwhile")]
    QuotaNoticeMoved(String),
    /// JMAP `stateMismatch` ([`Batch::if_modseq`]).
    #[error("mailbox {mailbox} is at modseq {found}, not {expected}")]
    ModseqMismatch {
        mailbox: String,
        expected: u64,
        found: u64,
    },
    /// JMAP `cannotCalculateChanges`: one committed batch alone has more ids than asked.
    #[error("modseq {modseq} of {mailbox} alone changed more than {max} ids")]
    ChangesTooMany {
        mailbox: String,
        modseq: u64,
        max: usize,
    },
    #[error("password hashing: {0}")]
    Password(String),
    #[error("the card {sha256} is already associated with {mailbox}")]
    CardAssociated { mailbox: String, sha256: String },
    #[error("no card {sha256} is associated with {mailbox}")]
    CardNotAssociated { mailbox: String, sha256: String },
    #[error("{mailbox} already has {max} cards: remove one first")]
    TooManyCards { mailbox: String, max: usize },
    #[error("signing a checkpoint: {0}")]
    Signing(String),
    #[error("trace log: {0}")]
    Trace(#[from] TraceError),
    #[error("flushing the store to disk failed, the commit is not durable: {0}")]
    Flush(String),
    #[error("the store is closed")]
    Closed,
}

/// How to open a store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Batch concurrent commits under one fsync (`store.group_commit`).
    pub group_commit: bool,
    pub clock: SharedClock,
    /// Signs trace checkpoints; without it no checkpoint is made.
    pub signer: Option<Arc<Signer>>,
    /// `trace.checkpoint_every` (records).
    pub checkpoint_every: u64,
    /// `trace.checkpoint_interval_secs`.
    pub checkpoint_interval: Duration,
    /// `trace.retention_months`.
    pub retention_months: u32,
    /// `provider.domains`; a mailbox must be in one of them (empty: no restriction).
    pub domains: Vec<Domain>,
    /// `limits.default_quota_bytes`.
    pub default_quota_bytes: u64,
    /// `[archive]`: the security archive's default size and retention.
    pub archive: archive::ArchivePolicy,
    /// Unreferenced blobs younger than this survive the sweep at open.
    pub blob_grace: Duration,
    /// `[blobs]`: where message bodies are kept.
    pub blobs: BlobBackend,
    /// `store.backend`: where the metadata, queue and trace log are kept.
    pub backend: StoreBackend,
    /// sled page cache size.
    pub cache_bytes: u64,
    /// How long `open` waits for the directory lock. sled releases its file lock from a
    /// background thread some time after the last handle is dropped, so a store closed
    /// and reopened at once (a restart in the same process, an admin command right after
    /// the server stopped) would otherwise be refused as locked.
    pub lock_wait: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            group_commit: true,
            clock: Arc::new(SystemClock),
            signer: None,
            checkpoint_every: 1000,
            checkpoint_interval: Duration::from_secs(300),
            retention_months: 30,
            domains: Vec::new(),
            default_quota_bytes: 1 << 30,
            archive: archive::ArchivePolicy::default(),
            blob_grace: Duration::from_secs(3600),
            blobs: BlobBackend::Dir,
            backend: StoreBackend::Sled,
            cache_bytes: 256 << 20,
            lock_wait: Duration::from_secs(3),
        }
    }
}

/// The database engine of the store (`store.backend`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum StoreBackend {
    /// The embedded database in `<dir>/db` (the default).
    #[default]
    Sled,
    /// A PostgreSQL database ([`kv::pg`]).
    Postgres(PgOptions),
}

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
                by_msgid: w(&tr.by_msgid),
                by_ident: w(&tr.by_ident),
                by_mailbox: w(&tr.by_mailbox),
                by_time: w(&tr.by_time),
                checkpoints: w(&tr.checkpoints),
                meta: w(&tr.meta),
            },
            changelog: w(&self.changelog),
            email_index: w(&self.email_index),
            cards: w(&self.cards),
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

const SCHEMA_KEY: &[u8] = b"schema_version";
/// Key of the store id in the `meta` tree ([`Store::id`]).
const STORE_ID_KEY: &[u8] = b"store_id";

/// Opens the sled database, retrying a held lock for up to `options.lock_wait`.
fn open_sled(dir: &Path, options: &StoreOptions) -> Result<sled::Db, StoreError> {
    let deadline = std::time::Instant::now() + options.lock_wait;
    loop {
        let opened = sled::Config::new()
            .path(dir.join("db"))
            .cache_capacity(options.cache_bytes)
            .open();
        match opened {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(ref io)) if io.to_string().contains("could not acquire lock") => {
                if std::time::Instant::now() >= deadline {
                    return Err(StoreError::Locked {
                        dir: dir.to_path_buf(),
                    });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(other) => return Err(other.into()),
        }
    }
}

/// Opens the database `options.backend` names.
fn open_db(dir: &Path, options: &StoreOptions) -> Result<Db, StoreError> {
    match &options.backend {
        StoreBackend::Sled => Ok(Db::Sled(open_sled(dir, options)?)),
        StoreBackend::Postgres(pg) => Ok(Db::Pg(kv::pg::PgDb::open(pg, options.lock_wait)?)),
    }
}

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
        Db::Pg(_) => db.flush(None).map_err(StoreError::Flush),
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
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let db = open_db(&dir, &options)?;
        let trees = Trees::open(&db)?;
        let found = check_schema(&dir, &db, &trees)?;
        queue::open_lanes(&trees, &options.domains)?;
        if found < 4 {
            let n = archive::migrate_user_folders(&db, &trees, options.clock.now())?;
            // Durable, and visible to what reads next (PostgreSQL groups the moves).
            flush_durably(&dir, &db)?;
            tracing::info!(
                folders = n,
                "user folders moved out of the security archive's name"
            );
            // After the moves, whose messages are the mailbox's own Emails now; for a
            // schema-2 store this is the schema-3 migration itself. Idempotent.
            let n = changes::build_email_index(&trees)?;
            tracing::info!(mailboxes = n, "email index built from the message records");
        }
        if found != SCHEMA_VERSION {
            // Migrated above: only now may the store say it is of the current version.
            trees
                .meta
                .insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())?;
            flush_durably(&dir, &db)?;
            tracing::info!(dir = %dir.display(), from = found, to = SCHEMA_VERSION, "store schema migrated");
        }
        let id = store_id(&dir, &db, &trees)?;
        let blobs = BlobStore::open(dir.join("blobs"), &options.blobs, Some(&id))?;
        let refs = trees.blobrefs.clone();
        let sweep = if blobs.sweeps_at_open() {
            blobs.sweep(|id| Ok(refs.contains_key(id.as_str())?), options.blob_grace)?
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
            Db::Pg(_) => None,
        };
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
            Db::Pg(_) => "postgres",
        }
    }

    /// Whether the database server answers (`None`: sled, nothing to ask).
    pub fn probe_database(&self) -> Option<Result<(), StoreError>> {
        match &self.inner.db {
            Db::Sled(_) => None,
            Db::Pg(db) => Some(db.probe().map_err(StoreError::Db)),
        }
    }

    /// Where the store's metadata is, for messages: its directory (sled) or its database
    /// (PostgreSQL, without the password).
    pub fn location(&self) -> String {
        match &self.inner.db {
            Db::Sled(_) => self.inner.dir.display().to_string(),
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
        Ok(self.inner.trees.idem.contains_key(key.as_bytes())?)
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
            .sweep(|id| Ok(refs.contains_key(id.as_str())?), grace)
    }

    /// How many records refer to blob `id` (messages and queue items).
    pub fn blob_refs(&self, id: &BlobId) -> Result<u64, StoreError> {
        Ok(self
            .inner
            .trees
            .blobrefs
            .get(id.as_str())?
            .map_or(0, |v| tx::be_u64(&v)))
    }

    /// Flushes everything to disk (commits already do). On PostgreSQL there is nothing
    /// to do: only the committer commits its groups, each before it answers.
    pub fn flush(&self) -> Result<(), StoreError> {
        match &self.inner.db {
            Db::Sled(_) => flush_durably(&self.inner.dir, &self.inner.db),
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
        out.sort_by_key(|t| std::cmp::Reverse(t.2));
        Ok(out)
    }
}

/// Checks the stored schema version; returns it (a new store is created at the current one).
fn check_schema(dir: &Path, db: &Db, trees: &Trees) -> Result<u32, StoreError> {
    match trees.meta.get(SCHEMA_KEY)? {
        Some(v) => {
            let found = <[u8; 4]>::try_from(v.as_ref())
                .map(u32::from_be_bytes)
                .map_err(|_| StoreError::Corrupt {
                    what: "schema version".into(),
                    detail: hex::encode(&v),
                })?;
            if !SUPPORTED_SCHEMAS.contains(&found) {
                return Err(StoreError::UnknownSchema {
                    dir: dir.to_path_buf(),
                    found,
                    supported: SUPPORTED_SCHEMAS.to_vec(),
                });
            }
            Ok(found)
        }
        None => {
            if !trees.mailboxes.is_empty()? || !trees.trace.records.is_empty()? {
                return Err(StoreError::Corrupt {
                    what: "schema version".into(),
                    detail: "data present but no schema version: not a pecd store".into(),
                });
            }
            trees
                .meta
                .insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())?;
            flush_durably(dir, db)?;
            Ok(SCHEMA_VERSION)
        }
    }
}

#[cfg(test)]
mod conformance;
#[cfg(test)]
pub(crate) mod tests;

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Db(e.into())
    }
}
