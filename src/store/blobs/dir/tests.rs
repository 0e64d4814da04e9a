//! Tests of the blob directory: writes, dedup, staged syncs, the sweep's races, the two
//! layouts. The unwraps here see only files and values the tests make themselves.

use super::*;

#[test]
fn put_read_dedup_and_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let bs = DirBlobs::open(dir.path().join("blobs")).unwrap();
    let a = bs.put(b"hello").unwrap();
    assert_eq!(a.id, BlobId::of(b"hello"));
    assert_eq!(a.size, 5);
    assert_eq!(bs.read(&a.id).unwrap(), b"hello");
    assert_eq!(bs.put(b"hello").unwrap(), a);
    let mut w = bs.writer().unwrap();
    for _ in 0..1000 {
        w.spool.write_all(&[7u8; 1000]).unwrap();
    }
    let big = w.finish().unwrap();
    assert_eq!(big.size, 1_000_000);
    assert_eq!(big.id, BlobId::of(&vec![7u8; 1_000_000]));
    let _abandoned = bs.writer().unwrap();
    let keep = a.id.clone();
    // With a long grace nothing goes.
    let s = bs
        .sweep(|id| Ok(*id == keep), Duration::from_secs(3600))
        .unwrap();
    assert_eq!((s.kept, s.removed, s.removed_tmp), (2, 0, 0));
    let s = bs.sweep(|id| Ok(*id == keep), Duration::ZERO).unwrap();
    assert_eq!((s.kept, s.removed, s.removed_tmp), (1, 1, 1));
    assert!(bs.exists(&a.id) && !bs.exists(&big.id));
    assert!(matches!(bs.read(&big.id), Err(StoreError::BlobMissing(_))));
}

#[test]
fn staged_writes_are_synced_once_per_group_and_a_short_file_is_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let bs = DirBlobs::open(dir.path().join("blobs")).unwrap();
    // Nothing staged: nothing to sync.
    assert!(!bs.sync_staged().unwrap());
    let a = bs.put_staged(b"envelope").unwrap();
    let b = bs.put_staged(b"receipt").unwrap();
    assert_eq!(bs.read(&a.id).unwrap(), b"envelope");
    assert_eq!(bs.read(&b.id).unwrap(), b"receipt");
    // One sync for both; a second finds nothing new.
    assert!(bs.sync_staged().unwrap());
    assert!(!bs.sync_staged().unwrap());
    assert_eq!(bs.staged_syncs(), 1);
    // A dedup hit on a staged file counts too (it may be another writer's, unsynced).
    bs.put_staged(b"envelope").unwrap();
    assert!(bs.sync_staged().unwrap());
    // What a crash before the sync may leave: the name without all of the content.
    fs::write(bs.path(&b.id), b"rec").unwrap();
    assert_eq!(bs.put_staged(b"receipt").unwrap(), b);
    assert_eq!(bs.read(&b.id).unwrap(), b"receipt");
    assert!(bs.sync_staged().unwrap());
    // `put` syncs by itself: nothing left for the committer.
    let c = bs.put(b"archive").unwrap();
    assert!(!bs.sync_staged().unwrap());
    assert_eq!(bs.read(&c.id).unwrap(), b"archive");
}

#[test]
fn a_body_in_memory_is_linked_in_place_or_else_goes_through_tmp() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let bs = DirBlobs::open(dir.path().join("blobs")).unwrap();
    let a = bs.put(b"linked").unwrap();
    let b = bs.put_staged(b"linked, staged").unwrap();
    if bs.no_tmpfile.load(Ordering::Relaxed) {
        eprintln!("no O_TMPFILE on this file system: only the path through tmp/ is tested");
    }
    for (blob, content) in [(&a, &b"linked"[..]), (&b, &b"linked, staged"[..])] {
        assert_eq!(bs.read(&blob.id).unwrap(), content);
        let mode = fs::metadata(bs.path(&blob.id))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "a body is readable by pecd alone");
    }
    assert_eq!(
        fs::read_dir(dir.path().join("blobs/tmp")).unwrap().count(),
        0
    );
    // A short file at the name (a crash's leftover): replaced through tmp/.
    fs::write(bs.path(&a.id), b"li").unwrap();
    assert_eq!(bs.put(b"linked").unwrap(), a);
    assert_eq!(bs.read(&a.id).unwrap(), b"linked");
    // Where O_TMPFILE cannot be used, tmp/ and a rename, as before.
    bs.no_tmpfile.store(true, Ordering::Relaxed);
    let c = bs.put_staged(b"through tmp").unwrap();
    assert_eq!(bs.read(&c.id).unwrap(), b"through tmp");
    assert!(bs.sync_staged().unwrap());
}

/// Makes `id`'s file look written `age` ago.
fn age(bs: &DirBlobs, id: &BlobId, age: Duration) {
    let f = OpenOptions::new().write(true).open(bs.path(id)).unwrap();
    f.set_modified(SystemTime::now() - age).unwrap();
}

/// Whether `id`'s file was modified less than `within` ago.
fn fresh(bs: &DirBlobs, id: &BlobId, within: Duration) -> bool {
    let t = fs::metadata(bs.path(id)).unwrap().modified().unwrap();
    t.elapsed().unwrap_or_default() < within
}

fn trash_is_empty(dir: &Path) -> bool {
    fs::read_dir(dir.join("blobs/trash")).unwrap().count() == 0
}

/// Sweeps with a one-hour grace and no blob referenced, running `racer` once, at the
/// first look at `id` (after the sweep found the file old, before it moves it: the
/// exact window of the race). Returns the stats and how often the sweep looked at `id`.
fn sweep_racing(bs: &DirBlobs, id: &BlobId, racer: impl Fn()) -> (SweepStats, usize) {
    let looks = std::cell::Cell::new(0);
    let s = bs
        .sweep(
            |seen| {
                if seen == id {
                    if looks.get() == 0 {
                        racer();
                    }
                    looks.set(looks.get() + 1);
                }
                // The racer's reference is never seen by this sweep: only the file's
                // modification time can save the blob.
                Ok(false)
            },
            Duration::from_secs(3600),
        )
        .unwrap();
    (s, looks.get())
}

/// A store holding `content` alone, unreferenced and written two hours ago (older than
/// the one-hour grace of [`sweep_racing`]).
fn old_unreferenced(content: &[u8]) -> (tempfile::TempDir, DirBlobs, Blob) {
    let dir = tempfile::tempdir().unwrap();
    let bs = DirBlobs::open(dir.path().join("blobs")).unwrap();
    let a = bs.put(content).unwrap();
    age(&bs, &a.id, Duration::from_secs(7200));
    (dir, bs, a)
}

/// What a sweep raced by a write of the same content must leave: the racer ran, the blob
/// kept whole and young again at its name, nothing in the trash.
fn kept_fresh_by_the_racer(
    dir: &tempfile::TempDir,
    bs: &DirBlobs,
    a: &Blob,
    content: &[u8],
    s: SweepStats,
    looks: usize,
) {
    assert!(looks >= 1, "the racer ran");
    assert_eq!((s.kept, s.removed), (1, 0));
    assert_eq!(bs.read(&a.id).unwrap(), content);
    assert!(
        fresh(bs, &a.id, Duration::from_secs(3600)),
        "the racer refreshed it"
    );
    assert!(trash_is_empty(dir.path()));
}

#[test]
fn a_put_between_the_sweeps_decision_and_its_removal_keeps_the_blob() {
    // A `put` of the same bytes in the window (the existing-file path: only the time
    // is refreshed) must leave the blob in place.
    let (dir, bs, a) = old_unreferenced(b"same body");
    let (s, looks) = sweep_racing(&bs, &a.id, || {
        assert_eq!(bs.put(b"same body").unwrap(), a);
    });
    kept_fresh_by_the_racer(&dir, &bs, &a, b"same body", s, looks);
    // Old again and still unreferenced, it goes: it was kept for its time alone.
    age(&bs, &a.id, Duration::from_secs(7200));
    let s = bs.sweep(|_| Ok(false), Duration::from_secs(3600)).unwrap();
    assert_eq!((s.kept, s.removed), (0, 1));
    assert!(!bs.exists(&a.id));
}

#[test]
fn a_streamed_write_during_the_sweep_window_keeps_the_blob() {
    // The streamed path: the writer renames a new file (written now) over the old
    // one, which the sweep then moves to its trash and must put back.
    let (dir, bs, a) = old_unreferenced(b"streamed");
    let (s, looks) = sweep_racing(&bs, &a.id, || {
        let mut w = bs.writer().unwrap();
        w.spool.write_all(b"streamed").unwrap();
        assert_eq!(w.finish().unwrap(), a);
    });
    kept_fresh_by_the_racer(&dir, &bs, &a, b"streamed", s, looks);
}

#[test]
fn a_put_that_finds_its_file_moved_to_the_trash_writes_it_again() {
    // The other order: the sweep moved the file away after `put` opened it. `put`
    // must notice that the path no longer names the file it refreshed.
    let dir = tempfile::tempdir().unwrap();
    let bs = DirBlobs::open(dir.path().join("blobs")).unwrap();
    let a = bs.put(b"moved").unwrap();
    let trash = dir.path().join("blobs/trash").join(a.id.as_str());
    fs::rename(bs.path(&a.id), &trash).unwrap();
    // A crash here leaves it in the trash: reopening puts it back.
    let bs = DirBlobs::open(dir.path().join("blobs")).unwrap();
    assert!(bs.exists(&a.id) && !trash.exists());
    // put's steps, interleaved by hand: open, (the sweep moves the file), refresh.
    let path = bs.path(&a.id);
    let held = OpenOptions::new().write(true).open(&path).unwrap();
    fs::rename(&path, &trash).unwrap();
    assert!(
        !refresh(&held, &path).unwrap(),
        "the moved file must not count"
    );
    // Unmoved, it counts.
    let bs2 = DirBlobs::open(dir.path().join("blobs")).unwrap();
    let held = OpenOptions::new().write(true).open(&path).unwrap();
    assert!(refresh(&held, &path).unwrap());
    // And a put whose file was moved away writes the content again.
    fs::rename(&path, &trash).unwrap();
    assert_eq!(bs2.put(b"moved").unwrap(), a);
    assert_eq!(bs2.read(&a.id).unwrap(), b"moved");
}

#[test]
fn a_new_store_has_one_level_names_and_an_old_one_is_read_in_both_layouts() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("blobs");
    let bs = DirBlobs::open(root.clone()).unwrap();
    assert!(!bs.two_level);
    assert_eq!(fs::read(root.join("LAYOUT")).unwrap(), ONE_LEVEL);
    let fan_outs = fs::read_dir(&root)
        .unwrap()
        .flatten()
        .filter(|e| is_fan_out(&e.file_name().to_string_lossy()))
        .count();
    assert_eq!(fan_outs, 256, "every fan-out directory is made at open");
    let a = bs.put_staged(b"one level").unwrap();
    let s = a.id.as_str();
    assert!(root.join(&s[..2]).join(s).is_file());
    // Opened again it stays one-level (its fan-out directories do not make it old).
    let bs = DirBlobs::open(root.clone()).unwrap();
    assert!(!bs.two_level);
    // A file at a two-level name (copied in from an old store) is still read.
    let copied = BlobId::of(b"copied in");
    let c = copied.as_str();
    fs::create_dir_all(root.join(&c[..2]).join(&c[2..4])).unwrap();
    fs::write(root.join(&c[..2]).join(&c[2..4]).join(c), b"copied in").unwrap();
    assert_eq!(bs.read(&copied).unwrap(), b"copied in");
    assert!(bs.exists(&copied));

    // A store made with two-level names: no LAYOUT, fan-out directories, files below.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("blobs");
    let old_id = |bytes: &[u8]| {
        let id = BlobId::of(bytes);
        let s = id.as_str().to_string();
        let d = root.join(&s[..2]).join(&s[2..4]);
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join(&s), bytes).unwrap();
        id
    };
    let (kept, dropped, both) = (old_id(b"kept"), old_id(b"dropped"), old_id(b"both"));
    let bs = DirBlobs::open(root.clone()).unwrap();
    assert!(bs.two_level && !root.join("LAYOUT").exists());
    assert_eq!(bs.read(&kept).unwrap(), b"kept");
    assert!(bs.exists(&dropped));
    // A put of old content reuses the old file; new content gets a one-level name.
    assert_eq!(bs.put(b"both").unwrap().id, both);
    assert!(!bs.path(&both).exists());
    let new = bs.put(b"new").unwrap();
    assert!(bs.path(&new.id).is_file());
    let mut listed = bs.list().unwrap();
    listed.sort();
    let mut want = vec![kept.clone(), dropped.clone(), both.clone(), new.id.clone()];
    want.sort();
    assert_eq!(listed, want);
    // A sweep sees the files at both depths.
    let s = bs.sweep(|id| Ok(*id != dropped), Duration::ZERO).unwrap();
    assert_eq!((s.kept, s.removed), (3, 1));
    assert!(!bs.exists(&dropped) && bs.exists(&kept) && bs.exists(&both));
    assert!(matches!(bs.read(&dropped), Err(StoreError::BlobMissing(_))));
}

#[test]
fn blob_id_parse_table() {
    for (s, ok) in [
        ("a".repeat(64), true),
        ("A".repeat(64), false),
        ("a".repeat(63), false),
        ("g".repeat(64), false),
        ("../".repeat(21) + "a", false),
    ] {
        assert_eq!(BlobId::parse(&s).is_ok(), ok, "{s}");
    }
}
