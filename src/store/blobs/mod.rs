//! Message bodies (blobs) behind one boundary: content-addressed by the SHA-256 of their
//! bytes, written durably **before** any record refers to them, read back by id, and
//! swept when no record has referred to them for a grace period. Two backends, chosen by
//! `[blobs] backend`:
//!
//! - [`dir`]: files under the store's `blobs/` directory, fsync'd (the default);
//! - [`s3`]: objects in an S3-compatible bucket, named by their id, for providers whose
//!   bodies outgrow one machine (several pecd nodes share the bucket).
//!
//! On the fjall engine, small staged bodies are kept in the store's keyspace instead
//! ([`keyspace`]), whichever the backend; reads look there first.
//!
//! The pipeline and the protocols see only [`BlobStore`] (static dispatch). What both
//! backends must do is tested once, by `tests/blob_backends.rs` against each of them.
//! Ids read from anywhere go through [`BlobId::parse`]: only 64 lower-case hex digits,
//! so that an id can never name a path or key outside the store.

pub mod dir;
pub mod keyspace;
pub mod s3;

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use openssl::sha::Sha256;
use serde::{Deserialize, Serialize};

use super::StoreError;
use dir::{DirBlobs, DirWriter, io_err};
use keyspace::KeyspaceBodies;
use s3::{S3Blobs, S3Settings, S3Writer};

/// The id of a blob: lower-case hex SHA-256 of its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BlobId(String);

impl BlobId {
    pub fn parse(s: &str) -> Result<Self, StoreError> {
        if s.len() == 64
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(Self(s.to_string()))
        } else {
            Err(StoreError::BadBlobId(s.to_string()))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The 32 bytes of the digest.
    pub fn raw(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        // Cannot fail: every constructor (`parse`, `from_digest`, serde through `parse`)
        // makes only 64 lower-case hex digits; stored bytes never reach here unchecked.
        hex::decode_to_slice(&self.0, &mut out).expect("a BlobId is 64 hex digits");
        out
    }
    /// The id whose digest is `raw` (32 bytes).
    pub fn from_raw(raw: &[u8]) -> Result<Self, StoreError> {
        match <[u8; 32]>::try_from(raw) {
            Ok(d) => Ok(Self::from_digest(d)),
            Err(_) => Err(StoreError::BadBlobId(hex::encode(raw))),
        }
    }
    pub fn of(bytes: &[u8]) -> Self {
        let mut h = Sha256::new();
        h.update(bytes);
        Self::from_digest(h.finish())
    }
}

impl TryFrom<String> for BlobId {
    type Error = StoreError;
    fn try_from(s: String) -> Result<Self, StoreError> {
        Self::parse(&s)
    }
}
impl From<BlobId> for String {
    fn from(b: BlobId) -> String {
        b.0
    }
}
impl std::fmt::Display for BlobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A blob durably written and ready to be referenced by a commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blob {
    pub id: BlobId,
    pub size: u64,
}

/// What a sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SweepStats {
    pub kept: u64,
    pub removed: u64,
    pub removed_tmp: u64,
}

/// `[blobs]`: where message bodies are kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum BlobBackend {
    /// Files under the store directory's `blobs/`.
    #[default]
    Dir,
    /// An S3-compatible bucket.
    S3(S3Settings),
}

/// A blob read back, streamed (a file, or an object store's response body).
pub type BlobReader = Box<dyn Read + Send>;

/// The blob store of one [`crate::store::Store`], whichever the backend.
#[derive(Debug, Clone)]
pub struct BlobStore {
    backend: Backend,
    /// Small staged bodies, on the fjall engine (see [`keyspace`]).
    bodies: Option<KeyspaceBodies>,
}

#[derive(Debug, Clone)]
enum Backend {
    Dir(DirBlobs),
    S3(Arc<S3Blobs>),
}

impl BlobStore {
    /// Opens the backend; `root` is the store's `blobs/` directory (the files themselves
    /// for `dir`, the local spool of streamed writes for `s3`). `owner` is the id of the
    /// store whose bodies these are: a bucket + prefix claimed by another store is refused
    /// (`None` claims nothing: for tools that only look).
    pub fn open(
        root: PathBuf,
        backend: &BlobBackend,
        owner: Option<&str>,
    ) -> Result<Self, StoreError> {
        let backend = match backend {
            BlobBackend::Dir => Backend::Dir(DirBlobs::open(root)?),
            BlobBackend::S3(settings) => {
                Backend::S3(Arc::new(S3Blobs::open(root, settings, owner)?))
            }
        };
        Ok(Self {
            backend,
            bodies: None,
        })
    }

    /// The store keeps small staged bodies in its keyspace, `bodies`, and reads there
    /// first (see [`keyspace`]).
    pub(crate) fn with_keyspace_bodies(mut self, bodies: KeyspaceBodies) -> Self {
        self.bodies = Some(bodies);
        self
    }

    /// Whether small bodies are kept in the store's keyspace.
    pub fn keeps_bodies_in_keyspace(&self) -> bool {
        self.bodies.is_some()
    }

    /// `"dir"` or `"s3"`.
    pub fn backend_name(&self) -> &'static str {
        match &self.backend {
            Backend::Dir(_) => "dir",
            Backend::S3(_) => "s3",
        }
    }

    /// Writes `bytes` and returns its id once durable. If the same content is already
    /// stored, it is kept and made young again (so that a sweep's grace period protects
    /// it until the caller has committed its reference).
    pub fn put(&self, bytes: &[u8]) -> Result<Blob, StoreError> {
        match &self.backend {
            Backend::Dir(d) => d.put(bytes),
            Backend::S3(s) => s.put(bytes),
        }
    }

    /// Writes `bytes` for the next commit of this store to refer to: durable once that
    /// commit returns (the committer syncs staged writes before applying any batch: one
    /// sync per group instead of two fsyncs per blob, see [`dir`]). An object store's
    /// answer is already durable, so for `s3` this is [`BlobStore::put`]. Only for a blob
    /// that a commit of the same [`crate::store::Store`] will refer to.
    ///
    /// On fjall, a body of at most [`keyspace::MAX_BYTES`] goes into the keyspace instead,
    /// durable with the same commit's flush.
    pub fn put_staged(&self, bytes: &[u8]) -> Result<Blob, StoreError> {
        if let Some(bodies) = &self.bodies
            && bytes.len() <= keyspace::MAX_BYTES
        {
            let id = BlobId::of(bytes);
            bodies.put(&id, bytes)?;
            return Ok(Blob {
                id,
                size: bytes.len() as u64,
            });
        }
        match &self.backend {
            Backend::Dir(d) => d.put_staged(bytes),
            Backend::S3(s) => s.put(bytes),
        }
    }

    /// Makes every staged write durable (the committer, before it applies a group).
    pub(crate) fn sync_staged(&self) -> Result<bool, StoreError> {
        match &self.backend {
            Backend::Dir(d) => d.sync_staged(),
            Backend::S3(_) => Ok(false),
        }
    }

    /// A streaming writer (for large messages: what is written goes to a local spool
    /// file, never held in memory).
    pub fn writer(&self) -> Result<BlobWriter, StoreError> {
        Ok(BlobWriter(match &self.backend {
            Backend::Dir(d) => Writer::Dir(d.writer()?),
            Backend::S3(s) => Writer::S3(s.writer()?),
        }))
    }

    /// The whole blob.
    pub fn read(&self, id: &BlobId) -> Result<Vec<u8>, StoreError> {
        if let Some(b) = self.kept_body(id)? {
            return Ok(b);
        }
        match &self.backend {
            Backend::Dir(d) => d.read(id),
            Backend::S3(s) => s.read(id),
        }
    }

    /// The blob as a stream.
    pub fn open_blob(&self, id: &BlobId) -> Result<BlobReader, StoreError> {
        if let Some(b) = self.kept_body(id)? {
            return Ok(Box::new(io::Cursor::new(b)));
        }
        Ok(match &self.backend {
            Backend::Dir(d) => Box::new(d.open_blob(id)?),
            Backend::S3(s) => s.open_blob(id)?,
        })
    }

    /// Whether the blob is stored.
    pub fn exists(&self, id: &BlobId) -> Result<bool, StoreError> {
        if let Some(bodies) = &self.bodies
            && bodies.contains(id)?
        {
            return Ok(true);
        }
        match &self.backend {
            Backend::Dir(d) => Ok(d.exists(id)),
            Backend::S3(s) => s.exists(id),
        }
    }

    /// Every blob id stored (once, wherever it is kept).
    pub fn list(&self) -> Result<Vec<BlobId>, StoreError> {
        let mut ids = match &self.backend {
            Backend::Dir(d) => d.list(),
            Backend::S3(s) => s.list(),
        }?;
        if let Some(bodies) = &self.bodies {
            ids.extend(bodies.ids()?);
            ids.sort_unstable();
            ids.dedup();
        }
        Ok(ids)
    }

    /// Body `id` if the keyspace keeps it.
    fn kept_body(&self, id: &BlobId) -> Result<Option<Vec<u8>>, StoreError> {
        match &self.bodies {
            Some(bodies) => bodies.get(id),
            None => Ok(None),
        }
    }

    /// Whether the backend can serve now (for readiness and metrics): for `s3` a `HEAD`
    /// on the bucket; `None` for `dir`, whose health is the store directory's.
    pub fn probe(&self) -> Option<Result<(), StoreError>> {
        match &self.backend {
            Backend::Dir(_) => None,
            Backend::S3(s) => Some(s.probe()),
        }
    }

    /// The file of blob `id` with the `dir` backend (benchmarks fill a store directly).
    pub fn local_path(&self, id: &BlobId) -> Option<PathBuf> {
        match &self.backend {
            Backend::Dir(d) => Some(d.path(id)),
            Backend::S3(_) => None,
        }
    }

    /// Whether opening the store sweeps: cheap for a directory; for a bucket, listing
    /// every object at each start would not be, and the daily maintenance sweeps it.
    pub(crate) fn sweeps_at_open(&self) -> bool {
        matches!(self.backend, Backend::Dir(_))
    }

    /// Removes blobs not referenced (per `referenced`) and spool files, when older than
    /// `grace`. Safe against a concurrent `put` of the same content in this process (see
    /// each backend's doc). The server calls it through [`crate::store::Store::sweep_blobs`],
    /// with the store's references.
    pub fn sweep(
        &self,
        referenced: impl Fn(&BlobId) -> Result<bool, StoreError>,
        grace: Duration,
    ) -> Result<SweepStats, StoreError> {
        let mut stats = match &self.backend {
            Backend::Dir(d) => d.sweep(&referenced, grace),
            Backend::S3(s) => s.sweep(&referenced, grace),
        }?;
        if let Some(bodies) = &self.bodies {
            let (kept, removed) = bodies.sweep(&referenced, grace)?;
            stats.kept += kept;
            stats.removed += removed;
        }
        Ok(stats)
    }
}

/// Streams a blob while hashing it; [`BlobWriter::finish`] makes it durable under its id
/// and returns it. Dropping it without `finish` removes its spool file (one left by a
/// crash is removed by the next sweep).
#[derive(Debug)]
pub struct BlobWriter(Writer);

#[derive(Debug)]
enum Writer {
    Dir(DirWriter),
    S3(S3Writer),
}

impl BlobWriter {
    fn spool(&mut self) -> &mut Spool {
        match &mut self.0 {
            Writer::Dir(w) => &mut w.spool,
            Writer::S3(w) => &mut w.spool,
        }
    }

    /// Makes the blob durable and returns it.
    pub fn finish(self) -> Result<Blob, StoreError> {
        match self.0 {
            Writer::Dir(w) => w.finish(),
            Writer::S3(w) => w.finish(),
        }
    }

    /// Gives up the write: the spool file is removed (as when the writer is dropped).
    pub fn abort(self) {
        drop(self);
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.spool().write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.spool().flush()
    }
}

/// Removes the files of the spool directory `dir` last written `grace` or more before
/// `now` (a crash mid-write, an abandoned writer); how many. Whatever the backend.
pub(crate) fn sweep_spool(dir: &Path, grace: Duration, now: SystemTime) -> Result<u64, StoreError> {
    let mut removed = 0;
    for e in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let p = e.map_err(io_err(dir))?.path();
        // A time after `now` counts as young.
        let old = std::fs::metadata(&p)
            .and_then(|m| m.modified())
            .is_ok_and(|t| now.duration_since(t).unwrap_or_default() >= grace);
        if old {
            match std::fs::remove_file(&p) {
                Ok(()) => removed += 1,
                // Finished or given up meanwhile.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&p)(e)),
            }
        }
    }
    Ok(removed)
}

impl BlobId {
    /// The id of the content whose SHA-256 is `digest`.
    pub(crate) fn from_digest(digest: [u8; 32]) -> Self {
        Self(hex::encode(digest))
    }
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A local temporary file being written and hashed (the first half of every streamed
/// write, whatever the backend). Dropped before [`Spool::into_parts`], it removes its file.
pub(crate) struct Spool {
    /// `None` once handed over by `into_parts`.
    file: Option<io::BufWriter<File>>,
    pub(crate) tmp: PathBuf,
    hasher: Sha256,
    size: u64,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Spool({}, {} bytes)", self.tmp.display(), self.size)
    }
}

impl Spool {
    /// A new file in `dir` (which exists), named uniquely for this process.
    pub(crate) fn create(dir: &Path) -> Result<Self, StoreError> {
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let tmp = dir.join(format!("{}-{n}-{nanos}", std::process::id()));
        // Message bodies are pecd's alone, whichever way they are written.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        Ok(Self {
            file: Some(io::BufWriter::with_capacity(64 * 1024, file)),
            tmp,
            hasher: Sha256::new(),
            size: 0,
        })
    }

    pub(crate) fn write_all(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        Write::write_all(self, bytes).map_err(io_err(&self.tmp))
    }

    /// The file (flushed, not synced), its path, the content's id and size; from now on
    /// the caller owns the file (and removes or renames it).
    pub(crate) fn into_parts(mut self) -> Result<(File, PathBuf, BlobId, u64), StoreError> {
        let Some(file) = self.file.take() else {
            return Err(io_err(&self.tmp)(io::Error::other(
                "spool already handed over",
            )));
        };
        let file = file
            .into_inner()
            .map_err(|e| io_err(&self.tmp)(e.into_error()))?;
        let hasher = std::mem::replace(&mut self.hasher, Sha256::new());
        Ok((
            file,
            self.tmp.clone(),
            BlobId::from_digest(hasher.finish()),
            self.size,
        ))
    }

    fn file(&mut self) -> io::Result<&mut io::BufWriter<File>> {
        self.file
            .as_mut()
            .ok_or_else(|| io::Error::other("spool already handed over"))
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

impl Write for Spool {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file()?.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file()?.flush()
    }
}
