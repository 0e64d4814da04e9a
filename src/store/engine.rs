//! Opening the database engine under the store (`store.backend`): sled in the store's
//! directory, with the log segment size its `conf` says, retrying a lock another process
//! is releasing; or PostgreSQL. What it distrusts: a `conf` file it cannot read (sled's
//! own default size is then assumed for an existing log).

use std::path::Path;
use std::time::Duration;

use super::kv::{self, Db};
use super::{StoreBackend, StoreError, StoreOptions};

/// sled's log segment size for a new database (sled's own default is 512 KiB, which
/// every store made before this setting has). Measured with `cargo bench --bench e2e`
/// (12,000 two-provider messages): 512 KiB left 31 KB of database files per message at
/// the sender and 17 KB at the receiver, 8 MiB 9.8 and 7.7 KB, at the same throughput.
/// The cost is memory: sled's write buffer is one segment.
const SLED_SEGMENT_BYTES: usize = 8 << 20;
/// sled's default segment size, for a database whose own cannot be read.
const SLED_DEFAULT_SEGMENT_BYTES: usize = 512 << 10;

/// The segment size to open the database in `db_dir` with: its own, kept by sled in
/// `conf` (a `segment_size: N` line), since sled refuses any other; for a new database,
/// [`SLED_SEGMENT_BYTES`]. A tool that opens the database itself must use it too.
///
/// Without a readable `conf`, sled writes a new one with the size it is given, and with a
/// wrong size it reads an existing log as empty. sled writes `conf` before it creates its
/// log (`db`), so a log without a `conf` (a restore that left it out) is one made with
/// sled's default size, as every store was before [`SLED_SEGMENT_BYTES`].
pub fn sled_segment_size(db_dir: &Path) -> usize {
    let own = std::fs::read(db_dir.join("conf")).ok().and_then(|conf| {
        String::from_utf8_lossy(&conf)
            .lines()
            .find_map(|l| l.strip_prefix("segment_size: ")?.trim().parse().ok())
    });
    let log_exists = std::fs::metadata(db_dir.join("db")).is_ok_and(|m| m.len() > 0);
    match own {
        Some(n) => n,
        None if log_exists => SLED_DEFAULT_SEGMENT_BYTES,
        None => SLED_SEGMENT_BYTES,
    }
}

/// Opens the sled database, retrying a held lock for up to `options.lock_wait`.
fn open_sled(dir: &Path, options: &StoreOptions) -> Result<sled::Db, StoreError> {
    let deadline = std::time::Instant::now() + options.lock_wait;
    let path = dir.join("db");
    loop {
        // Read on every attempt: another process may be creating the database right now.
        let opened = sled::Config::new()
            .path(&path)
            .cache_capacity(options.cache_bytes)
            .segment_size(sled_segment_size(&path))
            .open();
        match opened {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(ref io)) if io.to_string().contains("could not acquire lock") => {
                if std::time::Instant::now() >= deadline {
                    return Err(StoreError::Locked {
                        dir: dir.to_path_buf(),
                    });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(other) => return Err(other.into()),
        }
    }
}

/// A standby's wait before [`Store::open`]: returns once no other process writes the
/// PostgreSQL store `options` names (at once on sled, whose lock a standby cannot wait
/// for across machines). `holder` hears who wrote it when the wait began. An error
/// (the database unreachable) ends the wait; the caller waits again.
pub fn wait_until_unlocked(
    options: &StoreOptions,
    holder: impl FnOnce(Option<String>),
) -> Result<(), StoreError> {
    match &options.backend {
        StoreBackend::Sled | StoreBackend::Fjall => Ok(()),
        StoreBackend::Postgres(pg) => kv::pg::PgDb::wait_until_unlocked(pg, holder),
    }
}

/// Opens the database `options.backend` names. A directory holding the other embedded
/// engine's database is refused: opening it would show an empty store in its place
/// (every mailbox seemingly gone) until the setting is put back.
pub(super) fn open_db(dir: &Path, options: &StoreOptions) -> Result<Db, StoreError> {
    let other = match options.backend {
        StoreBackend::Sled => Some(("fjall", "fjall", "sled")),
        StoreBackend::Fjall => Some(("db", "sled", "fjall")),
        StoreBackend::Postgres(_) => None,
    };
    if let Some((sub, found, wanted)) = other
        && dir.join(sub).is_dir()
    {
        return Err(StoreError::Corrupt {
            what: "store.backend".into(),
            detail: format!(
                "{} holds a {found} database, and store.backend is \"{wanted}\": set it back \
                 to \"{found}\", or copy the store with `pecd store migrate` into another \
                 store.dir",
                dir.display()
            ),
        });
    }
    match &options.backend {
        StoreBackend::Sled => Ok(Db::Sled(open_sled(dir, options)?)),
        StoreBackend::Fjall => Ok(Db::Fjall(kv::fjall::FjallDb::open(
            &dir.join("fjall"),
            options.cache_bytes,
            options.lock_wait,
        )?)),
        StoreBackend::Postgres(pg) => Ok(Db::Pg(kv::pg::PgDb::open(pg, options.lock_wait)?)),
    }
}
