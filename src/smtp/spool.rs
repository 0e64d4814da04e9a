//! Where DATA goes while it arrives, and the byte budgets that bound it (issue #13).
//!
//! The session hands the driver the message content in chunks ([`Event::DataChunk`]); the
//! driver appends them to a [`Spool`] file under `store.dir/spool` instead of memory, each
//! chunk reserved first from the role's in-flight budget (`limits.max_inflight_data_bytes`:
//! received, not yet answered). A chunk the budget cannot take makes the transfer be read
//! to its end and refused with 452 4.3.1. At the final dot the finished message is read back
//! into memory for the pipeline (mail-parser, signatures) only under the role's processing
//! budget (`limits.max_processing_bytes`), so concurrent processing is bounded by bytes,
//! not by the number of clients.
//!
//! Owns: the spool files (created with a unique name, removed when dropped; the directory
//! is emptied at start-up: a spooled transfer was never answered 250, so nothing accepted
//! is lost) and the two budgets. The durability of an accepted message is the backend's
//! business, as before: the spool is only a buffer.
//!
//! [`Event::DataChunk`]: super::session::Event::DataChunk

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::AsyncWriteExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Content bytes the session keeps before handing them to the driver as one chunk.
pub const DATA_CHUNK_BYTES: usize = 64 * 1024;

/// A budget of bytes reserved and released by many tasks.
#[derive(Debug)]
pub struct ByteBudget {
    used: AtomicU64,
    max: u64,
}

impl ByteBudget {
    pub fn new(max: u64) -> Self {
        Self {
            used: AtomicU64::new(0),
            max,
        }
    }

    /// Reserves `n` bytes, or returns false (reserving nothing) when they do not fit.
    pub fn try_reserve(&self, n: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                u.checked_add(n).filter(|&t| t <= self.max)
            })
            .is_ok()
    }

    pub fn release(&self, n: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                Some(u.saturating_sub(n))
            });
    }

    /// Bytes reserved now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }
}

/// The spool directory and the budgets of one SMTP role (port 25; or 465 + 587).
#[derive(Debug)]
pub struct DataLimits {
    dir: PathBuf,
    /// `limits.max_inflight_data_bytes`.
    pub inflight: ByteBudget,
    /// `limits.max_processing_bytes`, in permits of one byte (at most `u32::MAX`).
    processing: Arc<Semaphore>,
    processing_max: u32,
    next: AtomicU64,
    /// Distinguishes the roles' files in the one directory.
    prefix: &'static str,
}

impl DataLimits {
    /// Budgets for one role; spool files go to `dir` (which [`prepare_dir`] made).
    pub fn new(dir: &Path, prefix: &'static str, inflight: u64, processing: u64) -> Self {
        let processing_max = u32::try_from(processing).unwrap_or(u32::MAX).max(1);
        Self {
            dir: dir.to_path_buf(),
            inflight: ByteBudget::new(inflight),
            processing: Arc::new(Semaphore::new(processing_max as usize)),
            processing_max,
            next: AtomicU64::new(0),
            prefix,
        }
    }

    /// Waits for room to process a finished message of `size` bytes (a message larger
    /// than the whole budget waits for all of it).
    pub async fn processing(&self, size: usize) -> Option<OwnedSemaphorePermit> {
        let n = u32::try_from(size)
            .unwrap_or(u32::MAX)
            .clamp(1, self.processing_max);
        self.processing.clone().acquire_many_owned(n).await.ok()
    }

    /// A new, empty spool file.
    pub async fn create(self: &Arc<Self>) -> std::io::Result<Spool> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let path = self
            .dir
            .join(format!("{}-{}-{n}", self.prefix, std::process::id()));
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .await?;
        Ok(Spool {
            limits: self.clone(),
            path,
            file: Some(file),
            reserved: 0,
        })
    }
}

/// Makes `dir` and removes what a previous run left in it (never-answered transfers).
pub fn prepare_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for entry in std::fs::read_dir(dir)? {
        let p = entry?.path();
        if p.is_file() {
            std::fs::remove_file(&p)?;
        }
    }
    Ok(())
}

/// One transfer's spool file; removed, and its bytes given back to the in-flight budget,
/// when dropped.
#[derive(Debug)]
pub struct Spool {
    limits: Arc<DataLimits>,
    path: PathBuf,
    file: Option<tokio::fs::File>,
    reserved: u64,
}

/// Why a chunk was not spooled.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("the in-flight DATA budget is exhausted")]
    Budget,
    #[error("writing the spool file: {0}")]
    Io(#[from] std::io::Error),
}

impl Spool {
    /// Reserves and appends one chunk.
    pub async fn append(&mut self, chunk: &[u8]) -> Result<(), SpoolError> {
        let n = chunk.len() as u64;
        if !self.limits.inflight.try_reserve(n) {
            return Err(SpoolError::Budget);
        }
        self.reserved += n;
        let file = self.file.as_mut().ok_or(SpoolError::Budget)?;
        file.write_all(chunk).await?;
        Ok(())
    }

    /// Content bytes spooled so far.
    pub fn len(&self) -> u64 {
        self.reserved
    }

    pub fn is_empty(&self) -> bool {
        self.reserved == 0
    }

    /// The whole content, read back into memory (one copy: the buffer is sized first).
    pub async fn read_all(&mut self) -> std::io::Result<Vec<u8>> {
        if let Some(mut f) = self.file.take() {
            f.flush().await?;
        }
        let path = self.path.clone();
        let cap = usize::try_from(self.reserved).unwrap_or(usize::MAX);
        tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let mut out = Vec::with_capacity(cap);
            std::fs::File::open(path)?.read_to_end(&mut out)?;
            Ok(out)
        })
        .await
        .map_err(std::io::Error::other)?
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        self.limits.inflight.release(self.reserved);
        self.file = None;
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_reserves_what_fits_and_releases() {
        let b = ByteBudget::new(100);
        assert!(b.try_reserve(60));
        assert!(!b.try_reserve(41));
        assert_eq!(b.used(), 60);
        assert!(b.try_reserve(40));
        b.release(60);
        assert_eq!(b.used(), 40);
    }

    #[tokio::test]
    async fn a_spool_holds_its_bytes_and_gives_them_back() {
        let dir = tempfile::tempdir().unwrap();
        prepare_dir(dir.path()).unwrap();
        let limits = Arc::new(DataLimits::new(dir.path(), "t", 10, 1 << 20));
        let mut s = limits.create().await.unwrap();
        s.append(b"hello").await.unwrap();
        s.append(b"worl").await.unwrap();
        assert!(matches!(s.append(b"d!").await, Err(SpoolError::Budget)));
        assert_eq!(limits.inflight.used(), 9);
        assert_eq!(s.read_all().await.unwrap(), b"helloworl");
        drop(s);
        assert_eq!(limits.inflight.used(), 0);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "file removed"
        );
        // Leftovers of a previous run are removed at start-up.
        std::fs::write(dir.path().join("old"), b"x").unwrap();
        prepare_dir(dir.path()).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
