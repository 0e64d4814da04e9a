//! Small message bodies kept in the fjall keyspace (`store.backend = "fjall"`) instead of
//! one file each: what the committer writes for a group then reaches the disk with the
//! group's one journal sync, and a 10 KB body no longer costs a file (an inode, a
//! directory entry, a 4 KiB-rounded extent) nor the file system's sync.
//!
//! What it owns: two partitions of the store's keyspace, the bodies by the raw 32 bytes
//! of their id (`pecd_bodies`, compressed with LZ4 by fjall) and the time each was last
//! written (`pecd_body_times`, 8 bytes big-endian, milliseconds since the epoch), always
//! written together in one batch. Only staged writes of at most [`MAX_BYTES`] come here
//! ([`super::BlobStore::put_staged`]); streamed and synced writes, and everything bigger,
//! stay with the blob backend, which is read when the keyspace does not have a body.
//!
//! Invariant (crash safety, as for blob files): a body is durable no later than the first
//! commit that refers to it. A staged body is written into the keyspace's journal before
//! its id is returned, so before any batch naming it is handed to the committer; fjall's
//! journal is one sequence of entries, recovered as a prefix, and the committer's flush
//! syncs it up to the group's batch, the body included. A crash before that flush can
//! leave a body nothing refers to; [`KeyspaceBodies::sweep`] removes it after the grace
//! period, as the backends' sweeps do.
//!
//! Sweeping while the store runs: a write of bytes already kept rewrites its time (no
//! read first), and the sweep removes a body only while it holds the write side of a
//! gate that every write holds the read side of, after reading its time again. So a
//! body written again after the sweep first found it old is kept, and one written after
//! its removal is written whole again.
//!
//! What it must distrust: the stored times (8 bytes, or the body counts as young and is
//! kept) and the keys (32 bytes, or they are skipped and reported).

use std::ops::Bound;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use ::fjall::{Keyspace, PartitionHandle};

use super::{BlobId, StoreError};
use crate::store::kv;
use crate::store::kv::fjall::BodyPartitions;

/// The largest body kept in the keyspace (64 KiB): a 10 KB message, its acceptance
/// receipt and its transport envelope fit; bigger bodies (attachments) go to the blob
/// backend, where they cost no more per byte and do not pass through the journal.
pub const MAX_BYTES: usize = 64 * 1024;

/// The bodies of one store kept in its fjall keyspace.
#[derive(Clone)]
pub struct KeyspaceBodies(Arc<Inner>);

struct Inner {
    ks: Keyspace,
    bodies: PartitionHandle,
    times: PartitionHandle,
    /// Writes hold the read side, a sweep's removal the write side (see the module doc).
    gate: RwLock<()>,
    /// One sweep at a time.
    sweeping: Mutex<()>,
    _lock: Arc<std::fs::File>,
}

impl std::fmt::Debug for KeyspaceBodies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyspaceBodies")
    }
}

fn db(e: ::fjall::Error) -> StoreError {
    StoreError::Db(kv::Error::Fjall(e))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl KeyspaceBodies {
    pub(crate) fn new(p: BodyPartitions) -> Self {
        Self(Arc::new(Inner {
            ks: p.ks,
            bodies: p.bodies,
            times: p.times,
            gate: RwLock::new(()),
            sweeping: Mutex::new(()),
            _lock: p.lock,
        }))
    }

    /// Writes `bytes` (at most [`MAX_BYTES`]) as body `id`: visible at once, durable with
    /// the keyspace's next flush (see the module doc).
    pub(crate) fn put(&self, id: &BlobId, bytes: &[u8]) -> Result<(), StoreError> {
        debug_assert!(bytes.len() <= MAX_BYTES);
        // The guard protects no data of its own, only the order of writes and removals.
        let _g = self.0.gate.read().unwrap_or_else(|p| p.into_inner());
        let key = id.raw();
        let mut batch = self.0.ks.batch();
        batch.insert(&self.0.bodies, key, bytes);
        batch.insert(&self.0.times, key, now_ms().to_be_bytes());
        batch.commit().map_err(db)
    }

    /// Body `id`, if kept here.
    pub(crate) fn get(&self, id: &BlobId) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.0.bodies.get(id.raw()).map_err(db)?.map(|v| v.to_vec()))
    }

    /// Whether body `id` is kept here.
    pub(crate) fn contains(&self, id: &BlobId) -> Result<bool, StoreError> {
        self.0.times.contains_key(id.raw()).map_err(db)
    }

    /// Every id kept here.
    pub(crate) fn ids(&self) -> Result<Vec<BlobId>, StoreError> {
        let mut out = Vec::new();
        for kv in self.0.times.keys() {
            let k = kv.map_err(db)?;
            match BlobId::from_raw(&k) {
                Ok(id) => out.push(id),
                Err(_) => tracing::warn!(
                    "a key of {} bytes among the bodies' times: skipped",
                    k.len()
                ),
            }
        }
        Ok(out)
    }

    /// When body `key` was last written, if kept here (see [`decode_time`]).
    fn written(&self, key: &[u8]) -> Result<Option<u64>, StoreError> {
        Ok(self
            .0
            .times
            .get(key)
            .map_err(db)?
            .map(|v| decode_time(key, &v)))
    }

    /// Removes the bodies not referenced (per `referenced`) and last written `grace` or
    /// more ago; how many were kept and removed. Reads the times a page at a time (memory
    /// bounded whatever the number of bodies); one sweep at a time.
    pub(crate) fn sweep(
        &self,
        referenced: impl Fn(&BlobId) -> Result<bool, StoreError>,
        grace: Duration,
    ) -> Result<(u64, u64), StoreError> {
        const PAGE: usize = 10_000;
        let _one_at_a_time = self.0.sweeping.lock().unwrap_or_else(|p| p.into_inner());
        // A time after now (a write during the sweep) counts as young.
        let old = |t: u64| u128::from(now_ms().saturating_sub(t)) >= grace.as_millis();
        let (mut kept, mut removed) = (0, 0);
        let mut after: Option<Vec<u8>> = None;
        loop {
            let from = match after.take() {
                Some(k) => Bound::Excluded(k),
                None => Bound::Unbounded,
            };
            let mut page = Vec::with_capacity(PAGE);
            for kv in self
                .0
                .times
                .range::<Vec<u8>, _>((from, Bound::Unbounded))
                .take(PAGE)
            {
                let (k, v) = kv.map_err(db)?;
                page.push((k.to_vec(), decode_time(&k, &v)));
            }
            let Some((last, _)) = page.last() else {
                break;
            };
            after = Some(last.clone());
            for (key, t) in page {
                let Ok(id) = BlobId::from_raw(&key) else {
                    tracing::warn!(
                        "a key of {} bytes among the bodies' times: skipped",
                        key.len()
                    );
                    continue;
                };
                if !old(t) || referenced(&id)? {
                    kept += 1;
                    continue;
                }
                let _g = self.0.gate.write().unwrap_or_else(|p| p.into_inner());
                // Looked at again with writes held off: written again meanwhile, it stays.
                match self.written(&key)? {
                    Some(t) if old(t) && !referenced(&id)? => {
                        let mut batch = self.0.ks.batch();
                        batch.remove(&self.0.bodies, key.as_slice());
                        batch.remove(&self.0.times, key.as_slice());
                        batch.commit().map_err(db)?;
                        removed += 1;
                    }
                    Some(_) => kept += 1,
                    None => {}
                }
            }
        }
        Ok((kept, removed))
    }
}

/// A stored time: 8 bytes big-endian. Anything else counts as now (the body is kept, and
/// the next write of it stores a time again), with a warning.
fn decode_time(key: &[u8], v: &[u8]) -> u64 {
    match <[u8; 8]>::try_from(v) {
        Ok(b) => u64::from_be_bytes(b),
        Err(_) => {
            tracing::warn!(
                body = %hex::encode(key),
                "a body's time of {} bytes where 8 were expected: kept as written now",
                v.len()
            );
            now_ms()
        }
    }
}

#[cfg(test)]
mod tests {
    //! Unit tests: their unwraps see only stores made here.
    use super::*;
    use crate::store::{Store, StoreBackend, StoreOptions};

    fn fjall_store(dir: &std::path::Path) -> Store {
        Store::open(
            dir,
            StoreOptions {
                backend: StoreBackend::Fjall,
                ..StoreOptions::default()
            },
        )
        .unwrap()
    }

    #[test]
    fn small_staged_bodies_live_in_the_keyspace_and_big_ones_in_files() {
        let dir = tempfile::tempdir().unwrap();
        let s = fjall_store(dir.path());
        let blobs = s.blobs();
        assert!(blobs.keeps_bodies_in_keyspace());
        let small = b"Subject: small\r\n\r\nbody\r\n".to_vec();
        let big = vec![b'x'; MAX_BYTES + 1];
        let (a, b) = (
            blobs.put_staged(&small).unwrap(),
            blobs.put_staged(&big).unwrap(),
        );
        assert_eq!(a.id, BlobId::of(&small));
        let file = |id: &BlobId| blobs.local_path(id).unwrap().is_file();
        assert!(!file(&a.id), "a small body made a file");
        assert!(file(&b.id), "a big body is not a file");
        assert_eq!(blobs.read(&a.id).unwrap(), small);
        assert_eq!(blobs.read(&b.id).unwrap(), big);
        let mut streamed = Vec::new();
        std::io::Read::read_to_end(&mut blobs.open_blob(&a.id).unwrap(), &mut streamed).unwrap();
        assert_eq!(streamed, small);
        assert!(blobs.exists(&a.id).unwrap() && blobs.exists(&b.id).unwrap());
        let mut all = vec![a.id.clone(), b.id.clone()];
        all.sort();
        assert_eq!(blobs.list().unwrap(), all);
        // Synced and streamed writes stay files whatever their size.
        let synced = blobs.put(b"synced").unwrap();
        assert!(file(&synced.id));
        // The engine's partitions are not trees of the store (a migration copies trees).
        let names: Vec<String> = s.tree_sizes().unwrap().into_iter().map(|t| t.0).collect();
        assert!(!names.iter().any(|n| n.starts_with("pecd_")), "{names:?}");
    }

    #[test]
    fn bodies_are_read_back_after_a_reopen_and_sweeps_remove_only_old_unreferenced_ones() {
        let dir = tempfile::tempdir().unwrap();
        let (kept, dropped) = {
            let s = fjall_store(dir.path());
            let kept = s.blobs().put_staged(b"referenced").unwrap();
            let dropped = s.blobs().put_staged(b"nobody refers to me").unwrap();
            s.flush().unwrap();
            (kept.id, dropped.id)
        };
        let s = fjall_store(dir.path());
        let blobs = s.blobs();
        assert_eq!(blobs.read(&kept).unwrap(), b"referenced");
        assert_eq!(blobs.read(&dropped).unwrap(), b"nobody refers to me");
        let refers = |id: &BlobId| Ok(*id == kept);
        // Young: kept whatever refers to it.
        let stats = blobs.sweep(refers, Duration::from_secs(3600)).unwrap();
        assert_eq!((stats.kept, stats.removed), (2, 0));
        let stats = blobs.sweep(refers, Duration::ZERO).unwrap();
        assert_eq!((stats.kept, stats.removed), (1, 1));
        assert!(matches!(
            blobs.read(&dropped),
            Err(StoreError::BlobMissing(_))
        ));
        assert_eq!(blobs.list().unwrap(), vec![kept.clone()]);
        // Written again, a body is young again and whole.
        blobs.put_staged(b"nobody refers to me").unwrap();
        let stats = blobs.sweep(refers, Duration::from_secs(3600)).unwrap();
        assert_eq!((stats.kept, stats.removed), (2, 0));
        assert_eq!(blobs.read(&dropped).unwrap(), b"nobody refers to me");
    }

    #[test]
    fn a_body_written_again_while_a_sweep_looks_at_it_stays() {
        let dir = tempfile::tempdir().unwrap();
        let s = fjall_store(dir.path());
        let bodies = s.blobs().bodies.clone().unwrap();
        let body = b"written again".to_vec();
        let id = BlobId::of(&body);
        let hour = Duration::from_secs(3600);
        s.blobs().put_staged(&body).unwrap();
        // As if written two hours ago: old enough for the sweep to take.
        let two_hours_ago = now_ms().saturating_sub(7_200_000).to_be_bytes();
        bodies.0.times.insert(id.raw(), two_hours_ago).unwrap();
        let (looked, looked_at) = std::sync::mpsc::channel();
        let (written, written_again) = std::sync::mpsc::channel::<()>();
        let stats = std::thread::scope(|sc| {
            let store = &s;
            let sweeper = sc.spawn(move || {
                let first = std::cell::Cell::new(true);
                store.blobs().sweep(
                    |_| {
                        // The sweep found it old and asks whether anything refers to it:
                        // the body is written again for a commit right then.
                        if first.replace(false) {
                            looked.send(()).unwrap();
                            written_again.recv().unwrap();
                        }
                        Ok(false)
                    },
                    hour,
                )
            });
            looked_at.recv().unwrap();
            s.blobs().put_staged(&body).unwrap();
            written.send(()).unwrap();
            sweeper.join().unwrap().unwrap()
        });
        assert_eq!((stats.kept, stats.removed), (1, 0));
        assert_eq!(s.blobs().read(&id).unwrap(), body);
        // Body and time always go together.
        let keys = |p: &PartitionHandle| -> Vec<Vec<u8>> {
            p.keys().map(|k| k.unwrap().to_vec()).collect()
        };
        assert_eq!(keys(&bodies.0.bodies), vec![id.raw().to_vec()]);
        assert_eq!(keys(&bodies.0.times), vec![id.raw().to_vec()]);
    }
}
