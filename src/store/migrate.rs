//! `pecd store migrate`: copies what a store refers to into another backend, and checks
//! the copy. Today the metadata backend is sled alone, so a migration moves the message
//! bodies between blob backends (`dir` ↔ `s3`) of one store; the copy of the metadata
//! comes with a second metadata backend.
//!
//! Every blob some record refers to (the `blobrefs` tree: messages and queue items) is
//! streamed from the source to the target (memory bounded whatever the body's size) and
//! then read back from the target and hashed: the copy is accepted only when the bytes
//! read back hash to the blob's id. A blob already on the target that reads back right is
//! not copied again, so an interrupted migration is simply run again. The source is only
//! read. Distrusted: the target's answers (hence the read-back).

use std::io::{self, Read, Write};

use openssl::sha::Sha256;
use serde::Serialize;

use super::{BlobId, BlobStore, Store, StoreError};

/// What a migration did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MigrateReport {
    /// Blobs some record refers to.
    pub referenced: u64,
    /// Copied now.
    pub copied: u64,
    /// Found on the target already (and read back right).
    pub present: u64,
    /// Bytes of the referenced blobs.
    pub bytes: u64,
}

/// The SHA-256 of everything `r` yields, and its length.
fn hash_stream(mut r: impl Read) -> io::Result<(BlobId, u64)> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut n = 0u64;
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => {
                h.update(&buf[..k]);
                n += k as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((BlobId::from_digest(h.finish()), n))
}

/// Whether `target` holds `id` with the right bytes.
fn holds(target: &BlobStore, id: &BlobId) -> Result<Option<u64>, StoreError> {
    let r = match target.open_blob(id) {
        Ok(r) => r,
        Err(StoreError::BlobMissing(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    let (got, size) = hash_stream(r).map_err(|e| StoreError::Corrupt {
        what: format!("blob {id} on the target"),
        detail: e.to_string(),
    })?;
    Ok((got == *id).then_some(size))
}

/// Copies every referenced blob of `source` into `target` and checks each; `progress` is
/// called after each blob with the report so far.
pub fn copy_blobs(
    source: &Store,
    target: &BlobStore,
    mut progress: impl FnMut(&MigrateReport),
) -> Result<MigrateReport, StoreError> {
    let mut report = MigrateReport::default();
    for kv in source.trees().blobrefs.iter() {
        let (k, v) = kv?;
        if super::tx::be_u64(&v) == 0 {
            continue;
        }
        let id = BlobId::parse(&String::from_utf8_lossy(&k))?;
        report.referenced += 1;
        if let Some(size) = holds(target, &id)? {
            report.present += 1;
            report.bytes += size;
            progress(&report);
            continue;
        }
        let mut from = source.blobs().open_blob(&id)?;
        let mut w = target.writer()?;
        let copied = io::copy(&mut from, &mut w).and_then(|n| w.flush().map(|()| n));
        let n = match copied {
            Ok(n) => n,
            Err(e) => {
                w.abort();
                return Err(StoreError::Corrupt {
                    what: format!("blob {id}"),
                    detail: format!("copying it: {e}"),
                });
            }
        };
        let blob = w.finish()?;
        if blob.id != id {
            return Err(StoreError::Corrupt {
                what: format!("blob {id} on the source"),
                detail: format!("its bytes hash to {}", blob.id),
            });
        }
        if holds(target, &id)?.is_none() {
            return Err(StoreError::Corrupt {
                what: format!("blob {id} on the target"),
                detail: "it does not read back as written".into(),
            });
        }
        report.copied += 1;
        report.bytes += n;
        progress(&report);
    }
    Ok(report)
}
