//! The fjall engine (`store.backend = "fjall"`): an embedded log-structured merge tree in
//! `<dir>/fjall`, one partition per tree, as zero-config as sled and cheaper per write
//! (see the README's Performance section for what it was measured to save).
//!
//! What it owns: mapping the key-value layer's operations onto one fjall keyspace (and
//! opening the two partitions of message bodies kept there, whose use is
//! [`crate::store::blobs::keyspace`]'s; partitions named `pecd_…` are never trees), the
//! store directory's lock (fjall takes none: `<dir>/fjall.lock`, held with `flock` for as
//! long as the database is open) and the id generator (fjall has none: ids are handed
//! out of blocks whose end is made durable before the first id of the block is given).
//!
//! Transactions are run once (nothing else writes the committer's trees, so nothing can
//! conflict): their reads see their own writes through an overlay, and their writes are
//! applied at the end as one atomic fjall batch, visible at once and durable at the next
//! [`FjallDb::flush`] (one `fdatasync` of the journal), as sled's are. The journal is
//! synced only by that flush (`manual_journal_persist`; fjall's 8 KiB buffer is written
//! out as it fills), so a group costs one sync. What it must distrust: a failed flush poisons the keyspace (fjall
//! refuses every later write), so the store then fails until it is reopened; the id
//! block's stored end, which must parse as 8 bytes.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs::File;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ::fjall::{Keyspace, PartitionCreateOptions, PartitionHandle, PersistMode};
use sled::IVec;
use sled::transaction::ConflictableTransactionError;

use super::{Error, TxResult, TxTree};
use crate::store::StoreError;

/// The partition holding the id generator's state; not one of the store's trees.
const IDS_PARTITION: &str = "pecd_ids";
/// The partitions of the message bodies kept in the keyspace (see
/// [`crate::store::blobs::keyspace`]): the bodies by id, and when each was last written.
/// Not trees of the store either: every partition named `pecd_…` is the engine's own.
const BODIES_PARTITION: &str = "pecd_bodies";
const BODY_TIMES_PARTITION: &str = "pecd_body_times";
const RESERVED_PREFIX: &str = "pecd_";
const IDS_KEY: &[u8] = b"end";
/// Ids handed out per durable write of the generator's state.
const ID_BLOCK: u64 = 1 << 20;

/// An open fjall database and the lock on its directory.
#[derive(Clone)]
pub struct FjallDb {
    ks: Keyspace,
    /// The keyspace's directory (`store.dir/fjall`).
    dir: PathBuf,
    ids: Arc<Mutex<Ids>>,
    ids_part: PartitionHandle,
    _lock: Arc<File>,
}

/// The id generator: `next` is handed out next; ids below `end` may be handed out
/// without writing (`end` is durable).
struct Ids {
    next: u64,
    end: u64,
}

/// A tree: one partition, and its keyspace (for atomic batches and the instant reads
/// are made at).
#[derive(Clone)]
pub struct FjallTree {
    part: PartitionHandle,
    ks: Keyspace,
    /// The directory's lock, held as long as anything of the database is.
    _lock: Arc<File>,
}

/// What [`FjallDb::body_partitions`] opens.
pub(crate) struct BodyPartitions {
    pub(crate) ks: Keyspace,
    pub(crate) bodies: PartitionHandle,
    pub(crate) times: PartitionHandle,
    /// The directory's lock, held as long as the bodies are.
    pub(crate) lock: Arc<File>,
}

/// A transaction's writes, by tree index and key (`None`: removed).
type Overlay = BTreeMap<(usize, Vec<u8>), Option<Vec<u8>>>;

/// One tree inside a transaction (see the module doc).
pub struct FjallTx<'a> {
    part: &'a PartitionHandle,
    index: usize,
    writes: &'a RefCell<Overlay>,
}

/// A scan of one tree.
pub type FjallIter = Box<dyn DoubleEndedIterator<Item = Result<(IVec, IVec), Error>>>;

impl FjallDb {
    /// Opens (creating if needed) the database in `dir` (the `fjall` directory of the
    /// store), waiting up to `lock_wait` for another process's lock.
    pub fn open(dir: &Path, cache_bytes: u64, lock_wait: Duration) -> Result<Self, StoreError> {
        let lock = lock_dir(dir, lock_wait)?;
        let ks = ::fjall::Config::new(dir)
            .cache_size(cache_bytes)
            .manual_journal_persist(true)
            .open()
            .map_err(Error::from)?;
        let ids_part = open_partition(&ks, dir, IDS_PARTITION)?;
        let end = match ids_part.get(IDS_KEY).map_err(Error::from)? {
            None => 0,
            Some(v) => {
                let raw: [u8; 8] = v.as_ref().try_into().map_err(|_| StoreError::Corrupt {
                    what: "fjall id generator".into(),
                    detail: format!("{} bytes where 8 were expected", v.len()),
                })?;
                u64::from_be_bytes(raw)
            }
        };
        // Every id below the stored end may have been handed out before a crash.
        Ok(Self {
            ks,
            dir: dir.to_path_buf(),
            ids: Arc::new(Mutex::new(Ids { next: end, end })),
            ids_part,
            _lock: Arc::new(lock),
        })
    }

    pub fn open_tree(&self, name: &str) -> Result<FjallTree, Error> {
        // fjall asserts on a name it cannot use as a directory: refused here instead.
        let usable = !name.is_empty()
            && name.len() <= 255
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.#$".contains(&b))
            && !name.starts_with(RESERVED_PREFIX);
        if !usable {
            return Err(Error::Unusable(format!(
                "{name:?} cannot name a fjall partition"
            )));
        }
        let part = open_partition(&self.ks, &self.dir, name)?;
        Ok(FjallTree {
            part,
            ks: self.ks.clone(),
            _lock: self._lock.clone(),
        })
    }

    pub fn tree_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .ks
            .list_partitions()
            .iter()
            .map(|n| n.to_string())
            .filter(|n| !n.starts_with(RESERVED_PREFIX))
            .collect();
        names.sort();
        names
    }

    /// A new id (see [`super::Db::generate_id`]).
    pub fn generate_id(&self) -> Result<u64, Error> {
        let mut ids = self.ids();
        if ids.next >= ids.end {
            let end = ids.next.saturating_add(ID_BLOCK);
            self.store_end(end)?;
            ids.end = end;
        }
        let id = ids.next;
        ids.next += 1;
        Ok(id)
    }

    /// See [`super::Db::ensure_ids_above`].
    pub fn ensure_ids_above(&self, n: u64) -> Result<(), Error> {
        let mut ids = self.ids();
        if ids.next <= n {
            ids.next = n.saturating_add(1);
            if ids.next >= ids.end {
                let end = ids.next.saturating_add(ID_BLOCK);
                self.store_end(end)?;
                ids.end = end;
            }
        }
        Ok(())
    }

    fn ids(&self) -> std::sync::MutexGuard<'_, Ids> {
        // The guard is only held over plain arithmetic and one write: a panic there
        // leaves consistent numbers, so a poisoned lock is taken over.
        self.ids.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `end` the generator's durable end before any id below it is handed out.
    fn store_end(&self, end: u64) -> Result<(), Error> {
        self.ids_part.insert(IDS_KEY, end.to_be_bytes())?;
        self.ks.persist(PersistMode::SyncData)?;
        Ok(())
    }

    /// See [`super::Db::transaction`]: `f` runs once, its writes are applied together.
    pub(crate) fn transaction<R>(
        &self,
        trees: &[&FjallTree],
        f: impl Fn(&[TxTree<'_>]) -> TxResult<R>,
    ) -> Result<R, StoreError> {
        let writes = RefCell::new(Overlay::new());
        let views: Vec<TxTree<'_>> = trees
            .iter()
            .enumerate()
            .map(|(index, t)| {
                TxTree::Fjall(FjallTx {
                    part: &t.part,
                    index,
                    writes: &writes,
                })
            })
            .collect();
        let r = match f(&views) {
            Ok(r) => r,
            Err(ConflictableTransactionError::Abort(e)) => return Err(e),
            Err(ConflictableTransactionError::Storage(e)) => return Err(StoreError::Db(e.into())),
            Err(_) => {
                return Err(StoreError::Corrupt {
                    what: "transaction".into(),
                    detail: "conflict reported inside a fjall transaction".into(),
                });
            }
        };
        let writes = writes.into_inner();
        for ((_, k), v) in &writes {
            check(k, v.as_deref()).map_err(StoreError::Db)?;
        }
        if !writes.is_empty() {
            let mut batch = self.ks.batch();
            for ((i, k), v) in writes {
                match v {
                    Some(v) => batch.insert(&trees[i].part, k, v),
                    None => batch.remove(&trees[i].part, k),
                }
            }
            batch.commit().map_err(Error::from)?;
        }
        Ok(r)
    }

    /// The keyspace and the two partitions that keep message bodies, opened (created if
    /// needed) for [`crate::store::blobs::keyspace::KeyspaceBodies`].
    pub(crate) fn body_partitions(&self) -> Result<BodyPartitions, Error> {
        Ok(BodyPartitions {
            ks: self.ks.clone(),
            bodies: open_partition(&self.ks, &self.dir, BODIES_PARTITION)?,
            times: open_partition(&self.ks, &self.dir, BODY_TIMES_PARTITION)?,
            lock: self._lock.clone(),
        })
    }

    /// Writes every partition's in-memory table out into its segment files, and waits
    /// up to ten seconds for it (a flush that keeps failing is not waited for forever),
    /// so that the journal holds nothing left to replay (what a store weighs once it has
    /// settled). Uses fjall's `rotate_memtable`, public but undocumented in fjall 2.11
    /// (its own tests settle with it); the flush threads do the writing.
    pub(crate) fn settle(&self) -> Result<(), Error> {
        for name in self.ks.list_partitions() {
            self.ks
                .open_partition(&name, PartitionCreateOptions::default())?
                .rotate_memtable()?;
        }
        self.ks.persist(PersistMode::SyncAll)?;
        // The sealed journals go once the flush threads have written every table they
        // cover.
        let until = Instant::now() + Duration::from_secs(10);
        while self.ks.journal_count() > 1 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Makes every write so far durable: the journal written out and `fdatasync`ed.
    pub(crate) fn flush(&self) -> Result<(), Error> {
        Ok(self.ks.persist(PersistMode::SyncData)?)
    }
}

impl FjallTree {
    pub fn name(&self) -> &str {
        &self.part.name
    }

    /// A view of the tree as of the last batch applied whole. A partition's own reads
    /// see the newest version of each key, which can be part of a batch still being
    /// applied (a folder's next uid before the message it counts); a snapshot at the
    /// keyspace's visible instant sees whole batches only, as sled's readers see whole
    /// transactions. While open, it also keeps what it sees from compaction.
    fn view(&self) -> ::fjall::Snapshot {
        self.part.snapshot_at(self.ks.instant())
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<IVec>, Error> {
        Ok(self.view().get(key).map_err(lsm)?.map(|v| IVec::from(&*v)))
    }

    pub fn insert(&self, key: &[u8], value: &[u8]) -> Result<(), Error> {
        check(key, Some(value))?;
        Ok(self.part.insert(key, value)?)
    }

    pub fn remove(&self, key: &[u8]) -> Result<(), Error> {
        check(key, None)?;
        Ok(self.part.remove(key)?)
    }

    /// Applies `ops` atomically (one batch).
    pub fn apply(&self, ops: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Result<(), Error> {
        for (k, v) in &ops {
            check(k, v.as_deref())?;
        }
        let mut batch = self.ks.batch();
        for (k, v) in ops {
            match v {
                Some(v) => batch.insert(&self.part, k, v),
                None => batch.remove(&self.part, k),
            }
        }
        Ok(batch.commit()?)
    }

    /// A scan of the view (see [`FjallTree::view`]), which it keeps open.
    pub fn range(&self, lo: Bound<Vec<u8>>, hi: Bound<Vec<u8>>) -> FjallIter {
        let view = self.view();
        let inner = view.range::<Vec<u8>, _>((lo, hi));
        Box::new(Scan { inner, _view: view }.map(|r| {
            r.map(|(k, v)| (IVec::from(&*k), IVec::from(&*v)))
                .map_err(lsm)
        }))
    }

    /// Entries in the tree (a scan).
    pub fn len(&self) -> Result<usize, Error> {
        self.view().len().map_err(lsm)
    }
}

/// Opens partition `name` of `ks` (in `dir`), creating it if needed. A new partition's
/// entry in `partitions/` is made durable before anything is written into it: fjall
/// syncs the partition's own folder but not the one listing it, and recovery skips the
/// journal's entries for a partition it does not find, so a power cut soon after the
/// first open could otherwise keep a commit and lose a body it refers to.
fn open_partition(ks: &Keyspace, dir: &Path, name: &str) -> Result<PartitionHandle, Error> {
    let existed = ks.partition_exists(name);
    let part = ks.open_partition(name, PartitionCreateOptions::default())?;
    if !existed {
        for d in [dir.join("partitions"), dir.to_path_buf()] {
            File::open(&d)
                .and_then(|f| f.sync_all())
                .map_err(|e| Error::Fjall(::fjall::Error::Io(e)))?;
        }
    }
    Ok(part)
}

/// fjall asserts on keys it cannot store (empty, or over 65,535 bytes) and values over
/// 4 GiB, where sled takes them: refused here with an error instead of a panic.
fn check(key: &[u8], value: Option<&[u8]>) -> Result<(), Error> {
    if key.is_empty() || key.len() > usize::from(u16::MAX) {
        return Err(Error::Unusable(format!("a key of {} bytes", key.len())));
    }
    if value.is_some_and(|v| u32::try_from(v.len()).is_err()) {
        return Err(Error::Unusable("a value of 4 GiB or more".into()));
    }
    Ok(())
}

/// An error of the tree under fjall's keyspace (what its snapshots return).
fn lsm(e: ::fjall::LsmError) -> Error {
    Error::Fjall(e.into())
}

/// A scan and the snapshot it reads.
struct Scan<I> {
    inner: I,
    _view: ::fjall::Snapshot,
}

impl<I: Iterator> Iterator for Scan<I> {
    type Item = I::Item;
    fn next(&mut self) -> Option<I::Item> {
        self.inner.next()
    }
}

impl<I: DoubleEndedIterator> DoubleEndedIterator for Scan<I> {
    fn next_back(&mut self) -> Option<I::Item> {
        self.inner.next_back()
    }
}

impl FjallTx<'_> {
    pub fn get(&self, key: &[u8]) -> TxResult<Option<IVec>> {
        if let Some(v) = self.writes.borrow().get(&(self.index, key.to_vec())) {
            return Ok(v.as_deref().map(IVec::from));
        }
        self.part
            .get(key)
            .map(|v| v.map(|v| IVec::from(&*v)))
            .map_err(|e| ConflictableTransactionError::Abort(StoreError::Db(e.into())))
    }

    pub fn put(&self, key: &[u8], value: Option<Vec<u8>>) {
        self.writes
            .borrow_mut()
            .insert((self.index, key.to_vec()), value);
    }
}

/// Takes the exclusive lock on the database directory `dir` (`<dir>.lock` beside it,
/// since fjall owns what is inside), retrying a held lock until `wait` has passed.
fn lock_dir(dir: &Path, wait: Duration) -> Result<File, StoreError> {
    use rustix::fs::{FlockOperation, flock};
    let path = lock_path(dir);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StoreError::Io {
            path: path.clone(),
            source: e,
        })?;
    let deadline = Instant::now() + wait;
    loop {
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(file),
            Err(rustix::io::Errno::WOULDBLOCK) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(rustix::io::Errno::WOULDBLOCK) => {
                return Err(StoreError::Locked {
                    dir: dir
                        .parent()
                        .map_or_else(|| dir.to_path_buf(), Path::to_path_buf),
                });
            }
            Err(e) => {
                return Err(StoreError::Io {
                    path,
                    source: e.into(),
                });
            }
        }
    }
}

fn lock_path(dir: &Path) -> PathBuf {
    let mut p = dir.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

/// Test support: with `PECD_TEST_STORE_FJALL` set to a directory (see
/// `store::conformance`), every store a unit test opens on sled is opened on fjall instead.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use crate::store::{StoreBackend, StoreOptions};

    pub(crate) const ENV: &str = "PECD_TEST_STORE_FJALL";

    /// The value of [`ENV`] is a directory where each store switched to fjall leaves an
    /// empty file (the conformance test counts them).
    pub(crate) fn backend_for(mut o: StoreOptions) -> StoreOptions {
        static OPENED: AtomicUsize = AtomicUsize::new(0);
        let Some(opened) = std::env::var_os(ENV) else {
            return o;
        };
        if o.backend == StoreBackend::Sled {
            o.backend = StoreBackend::Fjall;
            let n = OPENED.fetch_add(1, Ordering::Relaxed);
            let mark = std::path::Path::new(&opened).join(format!("{}-{n}", std::process::id()));
            // A mark that cannot be written fails the count, not the test.
            drop(std::fs::File::create(mark));
        }
        o
    }
}

#[cfg(test)]
mod tests {
    //! Unit tests: their unwraps see only databases and values made here.
    use super::*;

    fn open(dir: &Path) -> Result<FjallDb, StoreError> {
        FjallDb::open(&dir.join("fjall"), 1 << 20, Duration::from_millis(100))
    }

    #[test]
    fn ids_are_never_handed_out_twice_across_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path()).unwrap();
        let first: Vec<u64> = (0..3).map(|_| db.generate_id().unwrap()).collect();
        db.ensure_ids_above(5_000_000).unwrap();
        let moved = db.generate_id().unwrap();
        assert!(moved > 5_000_000, "{moved}");
        drop(db);
        // No flush: the block's end was made durable before its first id.
        let db = open(dir.path()).unwrap();
        let again = db.generate_id().unwrap();
        assert!(
            again > moved && first.iter().all(|&i| i < again),
            "{first:?} {moved} {again}"
        );
    }

    #[test]
    fn a_second_opener_is_refused_as_locked_while_anything_of_the_first_lives() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path()).unwrap();
        let tree = db.open_tree("messages").unwrap();
        drop(db);
        // A tree keeps the database, and so the lock.
        assert!(matches!(open(dir.path()), Err(StoreError::Locked { .. })));
        drop(tree);
        assert!(open(dir.path()).is_ok());
    }

    #[test]
    fn what_fjall_cannot_store_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path()).unwrap();
        let t = db.open_tree("meta").unwrap();
        assert!(matches!(t.insert(b"", b"v"), Err(Error::Unusable(_))));
        assert!(matches!(t.remove(b""), Err(Error::Unusable(_))));
        let long = vec![b'k'; 70_000];
        assert!(matches!(
            t.apply(vec![(long, None)]),
            Err(Error::Unusable(_))
        ));
        for name in ["", "trace (sealed)", "a/b", IDS_PARTITION] {
            assert!(
                matches!(db.open_tree(name), Err(Error::Unusable(_))),
                "{name:?}"
            );
        }
        let r = db.transaction(&[&t], |tx| {
            if let TxTree::Fjall(t) = &tx[0] {
                t.put(b"", Some(b"v".to_vec()));
            }
            Ok(())
        });
        assert!(
            matches!(r, Err(StoreError::Db(Error::Unusable(_)))),
            "{r:?}"
        );
        // Nothing of it was written, and the tree still works.
        t.insert(b"k", b"v").unwrap();
        assert_eq!(t.len().unwrap(), 1);
    }
}
