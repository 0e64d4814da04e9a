//! The local blob backend (the default, `[blobs] backend = "dir"`): message bodies as
//! content-addressed files, `blobs/ab/abcd…` named by the lower-case hex SHA-256 of the
//! content, under one level of 256 fan-out directories made when the store is opened. It
//! distrusts nothing but the file names it finds (only 64 lower-case hex digits count as
//! blobs).
//!
//! ## Layout
//!
//! Stores made before this layout (December 2026) keep their files two levels down,
//! `blobs/ab/cd/abcd…` (65,536 leaf directories). On a young store nearly every body made
//! a directory (an inode and a 4 KiB block each, and the costliest step of a write on
//! ext4); a store made now gets its 256 directories at once and records so in
//! `blobs/LAYOUT`. A store without
//! that file whose blob directory already holds fan-out directories is read in both
//! layouts: a body is looked for at its one-level name first and then at its old one (in
//! any store: an old file may have been copied in), new bodies get one-level names, and
//! sweeps walk both. Nothing is moved, except that a sweep puts a file it decided to keep
//! back at its one-level name.
//!
//! Invariant (crash safety): a blob file is complete and durable **before** any record
//! refers to it. A writer streams into `blobs/tmp/`, fsyncs the file, renames it to its
//! final name and fsyncs the directory; only then can the id go into a commit. A body
//! already in memory (its name known before it is written) is written as an unnamed
//! `O_TMPFILE` in its final directory and linked there instead: no temporary name, no
//! rename across directories (both serialize concurrent writers on the directories'
//! locks), nothing left by a crash; where `O_TMPFILE` is not supported, through `tmp/`. A crash
//! can therefore leave only unreferenced files behind; [`DirBlobs::sweep`] (run at open)
//! removes those older than a grace period. This module never touches the sled trees.
//!
//! ## Sweeping while the store runs
//!
//! `put` of bytes already stored does not rewrite the file: it refreshes its modification
//! time, and the caller then commits a reference. A sweep that decided "unreferenced and
//! old" just before that refresh must not delete the file just after it. So a sweep never
//! deletes in place: it renames the file into `blobs/trash/`, then looks again (age and
//! references) at the file it now holds, and either deletes it or renames it back. On the
//! other side, `put` after refreshing checks that the blob's path still names the file it
//! refreshed, and writes the content anew if not. Whatever the interleaving, when `put`
//! returns the blob is at its path and either the sweep has not moved it or will see the
//! refreshed time and put it back. Files left in `trash/` by a crash are put back at open.
//!
//! ## Staged writes: one sync per group commit
//!
//! [`DirBlobs::put_staged`] writes and renames like `put` but without the file's and the
//! directory's fsyncs; it only counts the write. The store's committer calls
//! [`DirBlobs::sync_staged`] after taking a group of batches and **before applying any of
//! them**: when something was staged since the last sync it makes the whole blob file
//! system durable with one `syncfs(2)`. A batch is sent to the committer only after its
//! blobs were written, so the sync covers every blob the group refers to, and the
//! invariant above holds with one sync per group instead of two fsyncs per blob. A crash
//! before the sync can leave a staged file at its final name shorter than its content
//! (the rename reached the disk, the data not yet): such a file is unreferenced (no
//! commit was applied), and a later `put` of the same content does not trust it: a dedup
//! hit requires the file's size to be the content's size, and rewrites it otherwise.
//! An unsynced copy never replaces a file that a commit may already refer to: a staged
//! write names its file only where no file is (`O_TMPFILE` + `linkat`, or `rename` with
//! `RENAME_NOREPLACE`), and when another writer got there first it takes that file if it
//! is whole. A dedup hit by a synced `put` syncs the file and its directories itself. A
//! failed sync fails every later one until pecd restarts (see `sync_staged`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::{Blob, BlobId, Spool, StoreError, SweepStats};

pub(super) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn sync_dir(path: &Path) -> Result<(), StoreError> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(io_err(path))
}

/// Creates `path` (one level) if missing and, unless the write is staged (the
/// committer's sync covers it then), makes its entry durable in the parent. A stat
/// first: `mkdir` of an existing directory still takes its parent's lock.
fn ensure_dir(path: &Path, sync: Sync) -> Result<(), StoreError> {
    if path.is_dir() {
        return Ok(());
    }
    match fs::create_dir(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(io_err(path)(e)),
    }
    if let (Sync::Now, Some(parent)) = (sync, path.parent()) {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Refreshes the modification time of the opened blob file `f` and tells whether `path`
/// still names that file: a sweep may have moved it to its trash between the open and
/// the refresh (see the module doc), and then the content must be written anew.
fn refresh(f: &File, path: &Path) -> Result<bool, StoreError> {
    f.set_modified(SystemTime::now()).map_err(io_err(path))?;
    let held = f.metadata().map_err(io_err(path))?;
    Ok(fs::metadata(path).is_ok_and(|m| (m.dev(), m.ino()) == (held.dev(), held.ino())))
}

/// What `blobs/LAYOUT` says of a store made with one-level names from the start.
const ONE_LEVEL: &[u8] = b"one-level\n";

/// Whether `name` is a fan-out directory's: two lower-case hex digits.
fn is_fan_out(name: &str) -> bool {
    name.len() == 2
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The blob directory.
#[derive(Debug, Clone)]
pub struct DirBlobs {
    root: PathBuf,
    /// Whether bodies may be at their two-level names too (see the module doc).
    two_level: bool,
    /// Serializes sweeps (each uses `trash/` by blob id).
    sweeping: Arc<Mutex<()>>,
    /// Staged writes made so far (see the module doc).
    staged: Arc<AtomicU64>,
    /// Set once `O_TMPFILE` or the link of one failed here: writes go through `tmp/`.
    no_tmpfile: Arc<AtomicBool>,
    /// The count of `staged` the last `sync_staged` made durable, and how many syncs.
    synced: Arc<Mutex<(u64, u64)>>,
    /// Why a sync failed, if one did: every later one fails too (see `sync_staged`).
    sync_failed: Arc<Mutex<Option<String>>>,
}

impl DirBlobs {
    pub(crate) fn open(root: PathBuf) -> Result<Self, StoreError> {
        fs::create_dir_all(root.join("tmp")).map_err(io_err(&root))?;
        fs::create_dir_all(root.join("trash")).map_err(io_err(&root))?;
        let two_level = Self::make_layout(&root)?;
        let store = Self {
            root,
            two_level,
            sweeping: Arc::new(Mutex::new(())),
            staged: Arc::new(AtomicU64::new(0)),
            no_tmpfile: Arc::new(AtomicBool::new(false)),
            synced: Arc::new(Mutex::new((0, 0))),
            sync_failed: Arc::new(Mutex::new(None)),
        };
        store.restore_trash()?;
        Ok(store)
    }

    /// Makes the 256 fan-out directories that are missing, and tells whether bodies may
    /// also be at their two-level names: a store whose `LAYOUT` file does not say
    /// `one-level` and that already has fan-out directories (see the module doc). A new
    /// store gets its `LAYOUT` (durably) before any directory, so that a crash between
    /// the two cannot make it look like an old one.
    fn make_layout(root: &Path) -> Result<bool, StoreError> {
        let marker = root.join("LAYOUT");
        let mut one_level = match fs::read(&marker) {
            Ok(text) => text == ONE_LEVEL,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(io_err(&marker)(e)),
        };
        let missing: Vec<PathBuf> = (0..=255u8)
            .map(|b| root.join(format!("{b:02x}")))
            .filter(|d| !d.is_dir())
            .collect();
        let existed = missing.len() < 256;
        if !one_level && !existed {
            // A new store: one-level names only, from now on.
            let tmp = root.join("LAYOUT.tmp");
            let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
            io::Write::write_all(&mut f, ONE_LEVEL).map_err(io_err(&tmp))?;
            f.sync_all().map_err(io_err(&tmp))?;
            fs::rename(&tmp, &marker).map_err(io_err(&marker))?;
            sync_dir(root)?;
            one_level = true;
        }
        for d in &missing {
            match fs::create_dir(d) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err(d)(e)),
            }
        }
        if !missing.is_empty() {
            sync_dir(root)?;
        }
        Ok(!one_level)
    }

    /// Puts back files a sweep interrupted by a crash left in `trash/` (the next sweep
    /// decides again, with the references as they are now).
    fn restore_trash(&self) -> Result<(), StoreError> {
        let trash = self.root.join("trash");
        for e in fs::read_dir(&trash).map_err(io_err(&trash))? {
            let p = e.map_err(io_err(&trash))?.path();
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
            match name.as_deref().map(BlobId::parse) {
                Some(Ok(id)) => self.put_back(&p, &id)?,
                _ => fs::remove_file(&p).map_err(io_err(&p))?,
            }
        }
        Ok(())
    }

    /// Renames a file from `trash/` back to the path of `id` (replacing a copy a `put`
    /// may have written meanwhile: same content).
    fn put_back(&self, from: &Path, id: &BlobId) -> Result<(), StoreError> {
        let path = self.path(id);
        let d1 = fan_out(&path, Sync::Now)?;
        fs::rename(from, &path).map_err(io_err(&path))?;
        sync_dir(&d1)
    }

    /// After a blob file got its name in `dir`: that directory synced and those above it
    /// up to the blob directory (whose entries a staged writer may have made without a
    /// sync), or the write counted for the committer's sync.
    fn named(&self, dir: &Path, sync: Sync) -> Result<(), StoreError> {
        match sync {
            Sync::Now => {
                let mut d = dir;
                while d.starts_with(&self.root) && d != self.root {
                    sync_dir(d)?;
                    match d.parent() {
                        Some(up) => d = up,
                        None => break,
                    }
                }
                sync_dir(&self.root)
            }
            Sync::Staged => {
                self.staged.fetch_add(1, Ordering::Release);
                Ok(())
            }
        }
    }

    /// Where the blob `id` is written (and looked for first).
    pub fn path(&self, id: &BlobId) -> PathBuf {
        let s = id.as_str();
        self.root.join(&s[0..2]).join(s)
    }

    /// Where a store made before the one-level layout may hold `id` (see the module doc).
    /// Reads look there whenever the one-level name is missing (a file may have been
    /// copied in from an old store); writes only in a store known to be old.
    fn two_level_path(&self, id: &BlobId) -> PathBuf {
        let s = id.as_str();
        self.root.join(&s[0..2]).join(&s[2..4]).join(s)
    }

    /// Writes `bytes` (no copy is made) and returns its id once durable. If the same
    /// content is already stored, its modification time is refreshed instead (so that a
    /// sweep's grace period protects it until it is referenced).
    pub fn put(&self, bytes: &[u8]) -> Result<Blob, StoreError> {
        self.put_with(bytes, Sync::Now)
    }

    /// Like [`DirBlobs::put`], but durable only once [`DirBlobs::sync_staged`] has run
    /// (the committer does, before applying the batch that refers to it).
    pub fn put_staged(&self, bytes: &[u8]) -> Result<Blob, StoreError> {
        self.put_with(bytes, Sync::Staged)
    }

    fn put_with(&self, bytes: &[u8], sync: Sync) -> Result<Blob, StoreError> {
        let id = BlobId::of(bytes);
        let path = self.path(&id);
        let blob = Blob {
            id,
            size: bytes.len() as u64,
        };
        if self.reuse(&path, blob.size, sync)? {
            return Ok(blob);
        }
        if self.two_level && self.reuse(&self.two_level_path(&blob.id), blob.size, sync)? {
            return Ok(blob);
        }
        match self.link_new(&path, bytes, sync)? {
            Link::Linked => return Ok(blob),
            // Another writer named the same content meanwhile: theirs, if it is whole.
            Link::Taken if self.reuse(&path, blob.size, sync)? => return Ok(blob),
            Link::Taken | Link::Unsupported => {}
        }
        let mut w = self.writer()?;
        w.spool.write_all(bytes)?;
        w.finish_with(sync)
    }

    /// Whether the file at `path` can stand for content of `size` bytes (a dedup hit):
    /// its size must be the content's (a file of another size is what a crash left of a
    /// staged write, see the module doc, and is written anew). A hit is refreshed (the
    /// sweep's grace period) and made as durable as the write asked for: counted for the
    /// next sync when staged (it may be another writer's staged file), synced now if not.
    fn reuse(&self, path: &Path, size: u64, sync: Sync) -> Result<bool, StoreError> {
        let Ok(f) = OpenOptions::new().write(true).open(path) else {
            return Ok(false);
        };
        if !f.metadata().is_ok_and(|m| m.len() == size) || !refresh(&f, path)? {
            return Ok(false);
        }
        if sync == Sync::Now {
            f.sync_all().map_err(io_err(path))?;
        }
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        self.named(&dir, sync)?;
        Ok(true)
    }

    /// Writes `bytes` as an unnamed file in its final directory (`O_TMPFILE`) and links
    /// it under its name: no temporary name to create and rename across directories
    /// (whose locks serialize concurrent writers), nothing left behind by a crash before
    /// the link. `None` when this cannot be done here (a file system without
    /// `O_TMPFILE`, no `/proc`, or a file already at the name that `put` did not trust):
    /// the caller goes through `tmp/` instead.
    fn link_new(&self, path: &Path, bytes: &[u8], sync: Sync) -> Result<Link, StoreError> {
        use rustix::fs::{AtFlags, CWD, Mode, OFlags};
        use std::io::Write as _;
        use std::os::fd::AsRawFd;
        if self.no_tmpfile.load(Ordering::Relaxed) {
            return Ok(Link::Unsupported);
        }
        let d1 = fan_out(path, sync)?;
        let flags = OFlags::WRONLY | OFlags::TMPFILE | OFlags::CLOEXEC;
        let mut file = match rustix::fs::openat(CWD, &d1, flags, Mode::from_raw_mode(0o600)) {
            Ok(fd) => File::from(fd),
            Err(e) => {
                self.unsupported(e, "O_TMPFILE");
                return Ok(Link::Unsupported);
            }
        };
        file.write_all(bytes).map_err(io_err(&d1))?;
        if sync == Sync::Now {
            file.sync_all().map_err(io_err(&d1))?;
        }
        let fd_path = format!("/proc/self/fd/{}", file.as_raw_fd());
        match rustix::fs::linkat(CWD, fd_path.as_str(), CWD, path, AtFlags::SYMLINK_FOLLOW) {
            Ok(()) => {}
            // The name is taken: by the same content (a concurrent put), or by what `put`
            // did not trust; the caller looks again.
            Err(rustix::io::Errno::EXIST) => return Ok(Link::Taken),
            Err(e) => {
                self.unsupported(e, "linking an O_TMPFILE through /proc");
                return Ok(Link::Unsupported);
            }
        }
        self.named(&d1, sync)?;
        Ok(Link::Linked)
    }

    /// After `what` failed with `e`: when that says it cannot be done here at all (not
    /// supported, no `/proc`, not allowed), the next writes go through `tmp/` at once.
    /// Other errors (a full disk...) concern this write only, which goes through `tmp/`
    /// and fails there with the file's path.
    fn unsupported(&self, e: rustix::io::Errno, what: &str) {
        use rustix::io::Errno;
        let unsupported = [
            Errno::OPNOTSUPP,
            Errno::ISDIR,
            Errno::INVAL,
            Errno::NOENT,
            Errno::PERM,
            Errno::ACCESS,
            Errno::XDEV,
        ];
        if unsupported.contains(&e) && !self.no_tmpfile.swap(true, Ordering::Relaxed) {
            tracing::info!(root = %self.root.display(), error = %e, "{what} cannot be used: bodies are written under tmp/ and renamed");
        }
    }

    /// Makes every staged write durable, with one `syncfs(2)` of the blob file system if
    /// any was made since the last call; returns whether it synced.
    ///
    /// A failed sync fails every later call until the process restarts: the kernel reports
    /// a writeback error once, so a second `syncfs` could answer success for data that
    /// never reached the disk (PostgreSQL's "fsyncgate" lesson). The blobs written since
    /// the last good sync are then of unknown state, and no commit may refer to them.
    pub(crate) fn sync_staged(&self) -> Result<bool, StoreError> {
        let mut synced = self.synced.lock().unwrap_or_else(|p| p.into_inner());
        let mut failed = self.sync_failed.lock().unwrap_or_else(|p| p.into_inner());
        let failure = |why: &str| {
            io_err(&self.root)(io::Error::other(format!(
                "syncing the message bodies failed ({why}); restart pecd once the disk is sound"
            )))
        };
        if let Some(why) = failed.as_deref() {
            return Err(failure(why));
        }
        let staged = self.staged.load(Ordering::Acquire);
        if staged == synced.0 {
            return Ok(false);
        }
        let synced_now = File::open(&self.root)
            .map_err(|e| e.to_string())
            .and_then(|root| rustix::fs::syncfs(&root).map_err(|e| e.to_string()));
        if let Err(why) = synced_now {
            let err = failure(&why);
            *failed = Some(why);
            return Err(err);
        }
        *synced = (staged, synced.1 + 1);
        Ok(true)
    }

    /// How many times [`DirBlobs::sync_staged`] synced.
    #[cfg(test)]
    pub(crate) fn staged_syncs(&self) -> u64 {
        self.synced.lock().unwrap_or_else(|p| p.into_inner()).1
    }

    /// A streaming writer (for large messages: nothing is held in memory).
    pub fn writer(&self) -> Result<DirWriter, StoreError> {
        Ok(DirWriter {
            spool: Spool::create(&self.root.join("tmp"))?,
            store: self.clone(),
        })
    }

    /// The whole blob.
    pub fn read(&self, id: &BlobId) -> Result<Vec<u8>, StoreError> {
        let mut v = Vec::new();
        self.open_blob(id)?
            .read_to_end(&mut v)
            .map_err(io_err(&self.path(id)))?;
        Ok(v)
    }

    /// The blob as a file, for streaming reads.
    pub fn open_blob(&self, id: &BlobId) -> Result<File, StoreError> {
        let p = self.path(id);
        let opened = match File::open(&p) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let old = self.two_level_path(id);
                File::open(&old).map_err(|e| (e, old))
            }
            r => r.map_err(|e| (e, p)),
        };
        opened.map_err(|(e, p)| {
            if e.kind() == io::ErrorKind::NotFound {
                StoreError::BlobMissing(id.clone())
            } else {
                io_err(&p)(e)
            }
        })
    }

    pub fn exists(&self, id: &BlobId) -> bool {
        self.path(id).is_file() || self.two_level_path(id).is_file()
    }

    /// Every blob id present on disk.
    pub fn list(&self) -> Result<Vec<BlobId>, StoreError> {
        let mut out = Vec::new();
        self.for_each_file(|id, _| {
            out.push(id);
            Ok(())
        })?;
        Ok(out)
    }

    /// Calls `f` with every blob file: in each fan-out directory, and one level further
    /// down in a store made with two-level names (a blob may be at both names: a `put`
    /// that found no one-level file does not look at old files it would not read).
    fn for_each_file(
        &self,
        mut f: impl FnMut(BlobId, &Path) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let entries = |p: &Path| -> Result<Vec<(String, PathBuf, bool)>, StoreError> {
            let mut v = Vec::new();
            for e in fs::read_dir(p).map_err(io_err(p))? {
                let e = e.map_err(io_err(p))?;
                let is_dir = e.file_type().map_err(io_err(&e.path()))?.is_dir();
                v.push((
                    e.file_name().to_string_lossy().into_owned(),
                    e.path(),
                    is_dir,
                ));
            }
            Ok(v)
        };
        for (name, d1, is_dir) in entries(&self.root)? {
            if !is_dir || !is_fan_out(&name) {
                continue;
            }
            for (name, path, is_dir) in entries(&d1)? {
                if is_dir && is_fan_out(&name) {
                    for (name, path, is_dir) in entries(&path)? {
                        match BlobId::parse(&name) {
                            Ok(id) if !is_dir => f(id, &path)?,
                            _ => {}
                        }
                    }
                } else if let (Ok(id), false) = (BlobId::parse(&name), is_dir) {
                    f(id, &path)?;
                }
            }
        }
        Ok(())
    }

    /// Removes blob files not referenced (per `referenced`) and temporary files, when
    /// their modification time is older than `grace`. Safe against a concurrent `put` of
    /// the same content (see the module doc).
    pub(crate) fn sweep(
        &self,
        referenced: impl Fn(&BlobId) -> Result<bool, StoreError>,
        grace: Duration,
    ) -> Result<SweepStats, StoreError> {
        let _one_at_a_time = self.sweeping.lock().unwrap_or_else(|p| p.into_inner());
        let now = SystemTime::now();
        // A time after `now` (a refresh during the sweep) counts as young.
        let old = |p: &Path| {
            fs::metadata(p)
                .and_then(|m| m.modified())
                .map(|t| now.duration_since(t).unwrap_or_default() >= grace)
                .unwrap_or(false)
        };
        let trash_dir = self.root.join("trash");
        let mut stats = SweepStats::default();
        self.for_each_file(|id, path| {
            if !old(path) || referenced(&id)? {
                stats.kept += 1;
                return Ok(());
            }
            let trash = trash_dir.join(id.as_str());
            match fs::rename(path, &trash) {
                Ok(()) => {}
                // Gone meanwhile (nothing to do).
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(io_err(path)(e)),
            }
            // Decide again on the file now held: a `put` may have refreshed it (and a
            // reference may have been committed) since the first look.
            if !old(&trash) || referenced(&id)? {
                self.put_back(&trash, &id)?;
                stats.kept += 1;
            } else {
                fs::remove_file(&trash).map_err(io_err(&trash))?;
                stats.removed += 1;
            }
            Ok(())
        })?;
        stats.removed_tmp = super::sweep_spool(&self.root.join("tmp"), grace, now)?;
        Ok(stats)
    }
}

/// Streams a blob into `tmp/` while hashing it; [`DirWriter::finish`] makes it durable
/// under its final name. Dropping it without `finish` leaves a temporary file that the
/// next sweep removes.
#[derive(Debug)]
pub struct DirWriter {
    pub(super) spool: Spool,
    store: DirBlobs,
}

impl DirWriter {
    /// fsync, rename to the content name, fsync the directory.
    pub fn finish(self) -> Result<Blob, StoreError> {
        self.finish_with(Sync::Now)
    }

    /// `finish`, or for a staged write the same steps without the fsyncs, counted for the
    /// next [`DirBlobs::sync_staged`].
    fn finish_with(self, sync: Sync) -> Result<Blob, StoreError> {
        let DirWriter { spool, store } = self;
        let (file, tmp, id, size) = spool.into_parts()?;
        if sync == Sync::Now {
            file.sync_all().map_err(io_err(&tmp))?;
        }
        drop(file);
        let path = store.path(&id);
        let d1 = fan_out(&path, sync)?;
        if sync == Sync::Staged && !rename_noreplace(&tmp, &path)? {
            // Named meanwhile by another writer: theirs if whole (this unsynced copy must
            // not replace a file that a commit may already refer to), else replaced.
            if store.reuse(&path, size, sync)? {
                drop(fs::remove_file(&tmp));
                return Ok(Blob { id, size });
            }
        }
        if tmp.exists() {
            fs::rename(&tmp, &path).map_err(io_err(&path))?;
        }
        store.named(&d1, sync)?;
        Ok(Blob { id, size })
    }
}

/// Renames `from` to `to` unless `to` exists; whether it did. Where the file system
/// cannot refuse to replace, `false` (the caller looks and renames itself).
fn rename_noreplace(from: &Path, to: &Path) -> Result<bool, StoreError> {
    use rustix::fs::{CWD, RenameFlags};
    match rustix::fs::renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::EXIST)
        | Err(rustix::io::Errno::INVAL)
        | Err(rustix::io::Errno::NOSYS)
        | Err(rustix::io::Errno::OPNOTSUPP) => Ok(false),
        Err(e) => Err(io_err(to)(e.into())),
    }
}

/// Makes the fan-out directory of the blob file `path` exist (made at open; again if it
/// was removed since) and returns it.
fn fan_out(path: &Path, sync: Sync) -> Result<PathBuf, StoreError> {
    let d1 = path.parent().map(Path::to_path_buf).unwrap_or_default();
    ensure_dir(&d1, sync)?;
    Ok(d1)
}

/// What [`DirBlobs::link_new`] did.
enum Link {
    Linked,
    /// A file already has the name.
    Taken,
    /// `O_TMPFILE` or the link cannot be used here (or failed for this write).
    Unsupported,
}

/// Whether a write syncs itself or is left to the committer's sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sync {
    Now,
    Staged,
}

#[cfg(test)]
mod tests;
