//! How a store is opened ([`StoreOptions`]) and on which engine ([`StoreBackend`]).

use std::sync::Arc;
use std::time::Duration;

use super::{BlobBackend, PgOptions, archive};
use crate::clock::{SharedClock, SystemClock};
use crate::pec::address::Domain;
use crate::pec::smime::Signer;

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
    /// Records per sealed segment of the trace log (sled stores: the `trace` tree keeps
    /// between one and two segments' worth of the newest records, the older ones are in
    /// files, see [`crate::trace::segments`]). `u64::MAX`: nothing is sealed (a store
    /// opened to be copied).
    pub trace_segment_records: u64,
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
            trace_segment_records: 4096,
        }
    }
}

/// The database engine of the store (`store.backend`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum StoreBackend {
    /// The embedded database in `<dir>/db` (the default).
    #[default]
    Sled,
    /// The embedded fjall database in `<dir>/fjall` ([`kv::fjall`]).
    Fjall,
    /// A PostgreSQL database ([`kv::pg`]).
    Postgres(PgOptions),
}

impl StoreBackend {
    /// Whether the database is files in the store's directory, owned by one process
    /// (sled, fjall), beside which the trace log's sealed segments are kept.
    pub fn is_local(&self) -> bool {
        !matches!(self, StoreBackend::Postgres(_))
    }
}
