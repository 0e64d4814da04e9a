//! Where the benchmarks put their stores (and Postfix its queue): temporary directories
//! under `target/tmp/bench-stores`, so that one run does not pay for the files the
//! previous one deleted, or under `PECD_BENCH_DIR` when set.
//!
//! Why: ext4 **without a journal** (this development machine's root file system) skips,
//! for every new inode, each free inode of the group deleted in the last 60 seconds (360
//! when its inode-table block is dirty), looking its inode-table block up in the buffer
//! cache to find out (`find_inode_bit` → `recently_deleted`). A bench removes its stores
//! at the end, tens of thousands of files; a run started within the next minutes creates
//! its files in the same block groups (new directories go next to their parent's) and
//! measured 12–13 % of its CPU samples in that scan and ~20 % fewer messages per second
//! (`cargo bench --bench e2e` twice in a row, `perf record -g` on the second). The base
//! directory is therefore marked as the top of a directory hierarchy (`chattr +T`,
//! `FS_TOPDIR_FL`): ext4's Orlov allocator spreads such a directory's subdirectories over
//! the block groups, so a run's stores usually land away from the last run's deleted
//! files (measured: 0.01 % of the samples in that scan, back to back). Where the flag
//! cannot be set (another file system, no permission) the directories are made all the
//! same and a line says so; a journalled ext4, as production runs on, has no such scan.

use std::path::PathBuf;

/// The base directory, and whether it is the default one (only that one gets marked: a
/// directory named in `PECD_BENCH_DIR` is the user's, and left as it is).
fn base() -> (PathBuf, bool) {
    match std::env::var_os("PECD_BENCH_DIR") {
        Some(d) => (PathBuf::from(d), false),
        None => (
            PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-stores"),
            true,
        ),
    }
}

/// Marks `dir` as the top of a directory hierarchy (see the module doc).
fn mark_top(dir: &std::path::Path) -> std::io::Result<()> {
    use rustix::fs::{IFlags, ioctl_getflags, ioctl_setflags};
    let fd = std::fs::File::open(dir)?;
    let flags = ioctl_getflags(&fd)?;
    if !flags.contains(IFlags::TOPDIR) {
        ioctl_setflags(&fd, flags | IFlags::TOPDIR)?;
    }
    Ok(())
}

/// A new temporary directory under the base, removed when dropped.
pub fn tempdir() -> tempfile::TempDir {
    static MARKED: std::sync::Once = std::sync::Once::new();
    let (base, default) = base();
    std::fs::create_dir_all(&base)
        .unwrap_or_else(|e| panic!("bench directory {}: {e}", base.display()));
    MARKED.call_once(|| {
        if !default {
            return;
        }
        // Postfix's daemons must reach their queue below it whatever the umask was.
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755));
        if let Err(e) = mark_top(&base) {
            eprintln!(
                "note: could not mark {} as a top directory ({e}); a run right after another \
                 may pay for the files the last one deleted",
                base.display()
            );
        }
    });
    tempfile::Builder::new()
        .prefix("run-")
        .tempdir_in(&base)
        .unwrap_or_else(|e| panic!("temporary directory in {}: {e}", base.display()))
}
