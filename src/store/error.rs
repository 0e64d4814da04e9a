//! The store's errors, by cause ([`StoreError`]).

use std::path::PathBuf;

use super::BlobId;
use super::kv;
use crate::trace::log::TraceError;

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
    #[error(
        "the store in {} has schema version {found} and this pecd would migrate it to {to}, but other pecd processes are writing it (several_writers): stop every node, then start this version first",
        dir.display()
    )]
    UpgradeWhileOthersWrite { dir: PathBuf, found: u32, to: u32 },
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
    /// A queue item's lease went to another node (it expired while this one worked on
    /// the item): this node's outcome is not recorded.
    #[error("queue item {0} is leased by another node now")]
    LeaseLost(u64),
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

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Db(e.into())
    }
}
