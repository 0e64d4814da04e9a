//! The PostgreSQL engine of the key-value layer (`store.backend = "postgres"`).
//!
//! Layout: `pecd_trees(id, name)` names the trees; `pecd_kv(tree, k, v)` holds every
//! entry, primary key `(tree, k)`, so a scan of a tree's key range is an index range scan
//! in the byte order sled uses (bytea compares byte-wise); `pecd_ids` is the sequence
//! behind [`PgDb::generate_id`]. The schema is created at first open, under an advisory
//! lock so that two nodes starting together do not race.
//!
//! Connections: a small pool for reads and writes outside transactions (any thread may
//! use it, including tokio's: the client runs on this module's own one-thread runtime and
//! callers block on its futures, as they block on disk reads with sled), and one
//! **writer** connection for the committer. The committer's transactions
//! ([`PgDb::transaction`]) keep their writes in memory (read-your-writes), merge them into
//! the group's writes when they succeed and drop them when they abort; the group is sent
//! and committed in one SQL transaction (`SERIALIZABLE`) by [`PgDb::commit_group`]: one
//! WAL flush for many messages. Reads the committer makes between transactions
//! ([`PgTree::writer`]) run inside that SQL transaction, after the group's writes so far
//! were sent, so they see every earlier batch of the group.
//!
//! One writer per database by default: the committer keeps the trace chain's head in
//! memory, so a second process writing the same database would fork the chain. Opening
//! takes a session advisory lock held for the life of the store; a second `pecd` gets
//! [`super::super::StoreError::Locked`], or waits as a standby
//! ([`PgDb::wait_until_unlocked`]). The writer's epoch (a random token written when the
//! lock is first taken, read back on every reconnection) tells a writer that lost its
//! session whether another process wrote meanwhile: then it is deposed ([`PgDb::deposed`])
//! and its process stops.
//!
//! **Several writers** ([`PgOptions::several_writers`]): no writer lock. Each group's SQL
//! transaction (`READ COMMITTED`) first takes the **commit lock**, a transaction advisory
//! lock, so the groups of all processes commit one after the other, and every statement
//! of a group sees every group committed before it; the committer reads the chain's head
//! again inside each group (see `store::commit`). An opening holds the same lock as a
//! session lock until [`PgDb::opened`], so that what it rebuilds (the queue's index) is not
//! interleaved with other processes' groups. Each group also announces the mailboxes it
//! changed (`NOTIFY`), and [`PgDb::listen`] hears other processes' announcements.
//!
//! What it must distrust: the server, which may restart, drop connections or refuse a
//! transaction at any time. A broken connection is dropped and made again at the next
//! use; a failed group is rolled back whole and every batch in it is answered with the
//! error. Credentials are never logged (the URL is shown without its password).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use sled::IVec;
use sled::transaction::ConflictableTransactionError;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};

use super::{Error, Tree, TxResult, TxTree};

mod conn;
mod listen;
mod redact;
mod scan;
#[cfg(test)]
pub(crate) mod testing;
mod writer;

use crate::store::StoreError;
use conn::*;
pub(crate) use conn::{DEPOSED, EPOCH_CHANGED};
pub use redact::redacted;
pub use scan::{PgIter, PgTree};
use writer::*;

/// How to reach the database (`[store]` with `backend = "postgres"`).
#[derive(Clone, PartialEq, Eq)]
pub struct PgOptions {
    /// A libpq-style URL or key=value string; `sslmode=require` for TLS.
    pub url: String,
    /// The password, when not in the URL (read from a file or the environment).
    pub password: Option<String>,
    /// Connections for reads (the committer has its own).
    pub pool_size: usize,
    /// CA certificates (PEM) that sign the server's certificate; none: the system's.
    pub ca_file: Option<PathBuf>,
    /// Several processes write this database at once (each group serialized by the
    /// commit lock), instead of one writer holding the writer lock.
    pub several_writers: bool,
}

impl std::fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgOptions")
            .field("url", &redacted(&self.url))
            .field("password", &self.password.as_ref().map(|_| "…"))
            .field("pool_size", &self.pool_size)
            .field("ca_file", &self.ca_file)
            .field("several_writers", &self.several_writers)
            .finish()
    }
}

fn pg_err(op: &'static str, e: tokio_postgres::Error) -> Error {
    let (detail, code) = match e.as_db_error() {
        Some(db) => (
            format!("{} ({})", db.message(), db.code().code()),
            Some(db.code().code().to_string()),
        ),
        None => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(c) = src {
                s.push_str(": ");
                s.push_str(&c.to_string());
                src = c.source();
            }
            (s, None)
        }
    };
    Error::Pg { op, detail, code }
}

/// Where each group leaves its mark ([`PgDb::commit_group`]): tree 0 is never a named
/// tree (their ids start at 1), so no scan, export or migration sees it.
pub(super) const MARK_TREE: i16 = 0;
const MARK_KEY: &[u8] = b"last group";

/// A mark no other group has: 16 random bytes.
pub(super) fn group_mark() -> [u8; 16] {
    let mut m = [0u8; 16];
    if openssl::rand::rand_bytes(&mut m).is_err() {
        // No random bytes: the time, which differs from one group to the next.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        m = t.to_be_bytes();
    }
    m
}

/// Entries a scan fetches per query.
const PAGE: i64 = 256;
/// The advisory lock keys of the schema creation and of the one writer, per SQL schema
/// (several stores may share a database, each in a schema of its own).
const SCHEMA_LOCK: &str = "hashtextextended('pecd schema ' || coalesce(current_schema(), ''), 0)";
const WRITER_LOCK: &str = "hashtextextended('pecd writer ' || coalesce(current_schema(), ''), 0)";
/// With several writers: the lock the node running the single duties holds (a session
/// lock on a connection of its own, [`PgDb::try_lead`]).
const LEADER_LOCK: &str = "hashtextextended('pecd duties ' || coalesce(current_schema(), ''), 0)";
/// With several writers: the lock each group's transaction takes before anything else.
const COMMIT_LOCK: &str = "hashtextextended('pecd commit ' || coalesce(current_schema(), ''), 0)";
/// The `NOTIFY` channel of this schema's committed changes (an identifier: hex).
const CHANGES_CHANNEL: &str = "SELECT 'pecd_' || left(md5(coalesce(current_schema(), '')), 16)";

/// Who holds the writer lock of this schema: application name (`pecd HOST PID`), client
/// address, since when; no row when nobody does.
const WRITER_HOLDER: &str = "\
WITH k AS (SELECT hashtextextended('pecd writer ' || coalesce(current_schema(), ''), 0) AS k) \
SELECT a.application_name, host(a.client_addr), date_trunc('second', a.backend_start)::text \
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid, k \
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 \
AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
AND l.classid::int8 = (k.k >> 32) & 4294967295 AND l.objid::int8 = k.k & 4294967295";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS pecd_trees (id smallint PRIMARY KEY, name text NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS pecd_kv (
    tree smallint NOT NULL,
    k bytea NOT NULL,
    v bytea NOT NULL,
    PRIMARY KEY (tree, k)
);
CREATE SEQUENCE IF NOT EXISTS pecd_ids;
";

/// A PostgreSQL database holding one pecd store.
#[derive(Clone)]
pub struct PgDb {
    shared: Arc<Shared>,
}

impl PgDb {
    /// Connects, creates the schema if needed and takes the writer lock, waiting up to
    /// `lock_wait` for another process to release it. With several writers, takes the
    /// commit lock instead, until [`PgDb::opened`].
    pub fn open(o: &PgOptions, lock_wait: Duration) -> Result<Self, StoreError> {
        let db = PgDb {
            shared: Arc::new(Shared::new(o)?),
        };
        db.create_schema()?;
        // With several writers: the writer lock shared, and the commit lock until opened.
        db.take_writer_lock(lock_wait)?;
        Ok(db)
    }

    /// Whether several processes write this database ([`PgOptions::several_writers`]).
    pub fn several_writers(&self) -> bool {
        self.shared.several
    }

    /// While the store opens, whether this process is the only one writing it: always
    /// with one writer (the writer lock is exclusive); with several, when no other
    /// session holds the writer lock (each of several holds it shared). Asked on the
    /// writer's own connection, which holds it shared: PostgreSQL does not count a
    /// session's own locks as conflicts, so the exclusive request succeeds exactly when
    /// nobody else holds it; it is given back at once.
    pub fn writes_alone(&self) -> Result<bool, Error> {
        if !self.shared.several {
            return Ok(true);
        }
        self.shared
            .with_writes("asking whether other processes write the store", |c| {
                let got = c
                    .query(&format!("SELECT pg_try_advisory_lock({WRITER_LOCK})"), &[])?
                    .first()
                    .and_then(|r| r.get::<_, Option<bool>>(0))
                    .unwrap_or(false);
                if got {
                    c.query(&format!("SELECT pg_advisory_unlock({WRITER_LOCK})"), &[])?;
                }
                Ok(got)
            })
    }

    /// A standby's wait (`[store] standby = true`): returns once no process holds the
    /// writer lock of the store `o` names, having called `holder` with who held it when
    /// the wait began (`None` when nobody did). The lock is not kept: the opening that
    /// follows takes it, or finds that another standby was quicker and waits again.
    /// An error (the server unreachable, restarted meanwhile) ends the wait: the caller
    /// tries again.
    pub fn wait_until_unlocked(
        o: &PgOptions,
        holder: impl FnOnce(Option<String>),
    ) -> Result<(), StoreError> {
        let shared = Shared::new(o)?;
        let mut conn = shared.connect()?;
        let who = conn
            .query(WRITER_HOLDER, &[])
            .map_err(|e| StoreError::Db(pg_err("looking up the writer", e)))?
            .first()
            .map(|r| {
                // Columns another role's session hides from this one are NULL.
                let name: Option<String> = r.get(0);
                let addr: Option<String> = r.get(1);
                let since: Option<String> = r.get(2);
                let mut who = name.unwrap_or_else(|| "a session of another database role".into());
                match (addr, &since) {
                    (Some(a), _) => who.push_str(&format!(" from {a}")),
                    (None, Some(_)) => who.push_str(" from a local socket"),
                    (None, None) => {}
                }
                if let Some(t) = since {
                    who.push_str(&format!(" since {t}"));
                }
                who
            });
        holder(who);
        // The wait has no statement, lock or transaction timeout; the keepalives notice a
        // server gone.
        conn.simple(&format!(
            "SET statement_timeout = 0; {SESSION_SETTINGS}; \
             SELECT pg_advisory_lock({WRITER_LOCK}); SELECT pg_advisory_unlock({WRITER_LOCK})"
        ))
        .map_err(|e| StoreError::Db(pg_err("waiting for the writer lock", e)))
    }

    /// Another process opened the store as its writer after this one lost its
    /// connection: this store can no longer commit, and its process must stop
    /// ([`super::Db::deposed`]). Found by the committer when it connects again, or here,
    /// asked on a pool connection (whose epoch is written), so that an idle node finds out
    /// without waiting for its next commit.
    pub fn deposed(&self) -> bool {
        let shared = &self.shared;
        if !shared.deposed.load(Ordering::Relaxed) && shared.taken_over() == Some(true) {
            shared.deposed.store(true, Ordering::Relaxed);
        }
        // An idle writer whose session broke (a server restart) takes the lock back now,
        // not at its next commit: meanwhile an admin command or a standby could take the
        // store. Under the writer's mutex (one connection attempt at a time), never
        // while the committer holds it, and at most once a second while it fails: well
        // before a standby, which waits 10 s after losing the server, tries again.
        let w = match shared.writer.try_lock() {
            Ok(w) => Some(w),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        };
        let been_writer = shared
            .token
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some();
        if !shared.deposed.load(Ordering::Relaxed)
            && been_writer
            && !shared.opening.load(Ordering::Relaxed)
            && let Some(mut w) = w
            && !w.open
            && w.conn.as_ref().is_none_or(|c| c.client.is_closed())
        {
            let mut last = shared
                .last_reconnect
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                *last = Some(std::time::Instant::now());
                drop(last);
                let _ = w.connected(shared);
            }
        }
        shared.deposed.load(Ordering::Relaxed)
    }

    /// The store finished opening: its committer takes the writer's connection from now
    /// on, and other writes go through the pool ([`Shared::with_writes`]).
    pub fn opened(&self) {
        self.shared.opening.store(false, Ordering::Relaxed);
        if self.shared.several {
            // The commit lock the opening held: other processes' groups go on. A
            // connection that broke meanwhile took the lock with it.
            let mut w = self.shared.writer();
            if let Some(c) = w.conn.as_mut()
                && c.query(&format!("SELECT pg_advisory_unlock({COMMIT_LOCK})"), &[])
                    .is_err()
            {
                w.conn = None;
            }
        }
    }

    /// With several writers: tries to become the process that runs the duties only one
    /// may run, by taking the election lock on a connection of its own (`None`: another
    /// process holds it). The lock lasts as long as that connection: the process's end,
    /// or the server's keepalives giving up on its host (about 30 s), frees it.
    pub fn try_lead(&self) -> Result<Option<Lead>, Error> {
        let mut conn = self.shared.connect()?;
        conn.simple(SESSION_SETTINGS)
            .map_err(|e| pg_err("setting the election session", e))?;
        let got = conn
            .query(&format!("SELECT pg_try_advisory_lock({LEADER_LOCK})"), &[])
            .map_err(|e| pg_err("asking for the election lock", e))?
            .first()
            .and_then(|r| r.get::<_, Option<bool>>(0))
            .unwrap_or(false);
        Ok(got.then(|| Lead {
            conn: Mutex::new(conn),
        }))
    }

    /// With several writers: `changes` is announced to the other processes when the
    /// group being built commits (nothing if it does not). Sent with the group.
    pub(crate) fn announce(&self, changes: String) {
        if self.shared.several {
            let text = format!("{}\n{changes}", self.shared.node);
            self.shared.writer().notices.push(text);
        }
    }

    /// With several writers: calls `heard` with what each group committed by another
    /// process announced (`PgDb::announce`), from a connection of its own that is made
    /// again when it breaks (announcements made while it is away are not heard again:
    /// `heard(None)` says that some may have been missed). Nothing without.
    pub fn listen(&self, heard: impl Fn(Option<&str>) + Send + Sync + 'static) {
        if self.shared.several {
            listen::spawn(&self.shared, Box::new(heard));
        }
    }

    /// The database, for messages (no password).
    pub fn shown(&self) -> &str {
        &self.shared.shown
    }

    fn create_schema(&self) -> Result<(), StoreError> {
        let mut conn = self.shared.connect()?;
        let sql = format!("BEGIN; SELECT pg_advisory_xact_lock({SCHEMA_LOCK}); {SCHEMA} COMMIT;");
        conn.simple(&sql)
            .map_err(|e| StoreError::Db(pg_err("creating the schema", e)))
    }

    /// Connects the writer (which takes the writer lock), waiting up to `wait` for
    /// another process to release the lock.
    fn take_writer_lock(&self, wait: Duration) -> Result<(), StoreError> {
        let deadline = std::time::Instant::now() + wait;
        loop {
            match self.shared.connect_writer() {
                Ok(conn) => {
                    self.shared.writer().conn = Some(conn);
                    return Ok(());
                }
                Err(Error::Pg {
                    op: LOCK_HELD,
                    code: None,
                    ..
                }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(Error::Pg {
                    op: LOCK_HELD,
                    code: None,
                    ..
                }) => {
                    return Err(StoreError::Locked {
                        dir: PathBuf::from(self.shown()),
                    });
                }
                Err(e) => return Err(StoreError::Db(e)),
            }
        }
    }

    pub fn open_tree(&self, name: &str) -> Result<PgTree, Error> {
        let mut trees = self.shared.trees.lock().unwrap_or_else(|p| p.into_inner());
        let id = match trees.get(name) {
            Some(id) => *id,
            None => {
                let id = self.shared.with_pool("opening a tree", |c| {
                    c.simple("BEGIN")?;
                    let r = (|| {
                        c.query(&format!("SELECT pg_advisory_xact_lock({SCHEMA_LOCK})"), &[])?;
                        c.execute(
                            "INSERT INTO pecd_trees (id, name) \
                             SELECT (SELECT coalesce(max(id), 0) + 1 FROM pecd_trees), $1::text \
                             WHERE NOT EXISTS (SELECT 1 FROM pecd_trees WHERE name = $1::text)",
                            &[&name],
                        )?;
                        let rows =
                            c.query("SELECT id FROM pecd_trees WHERE name = $1", &[&name])?;
                        Ok(rows[0].get::<_, i16>(0))
                    })();
                    match r {
                        Ok(id) => c.simple("COMMIT").map(|()| id),
                        Err(e) => {
                            drop(c.simple("ROLLBACK"));
                            Err(e)
                        }
                    }
                })?;
                trees.insert(name.to_string(), id);
                id
            }
        };
        Ok(PgTree {
            shared: self.shared.clone(),
            id,
            name: name.into(),
            writer: false,
        })
    }

    pub fn generate_id(&self) -> Result<u64, Error> {
        self.shared.with_pool("generating an id", |c| {
            let rows = c.query("SELECT nextval('pecd_ids')", &[])?;
            Ok(rows[0].get::<_, i64>(0) as u64)
        })
    }

    /// A round trip to the server (readiness, metrics).
    pub fn probe(&self) -> Result<(), Error> {
        self.shared.with_pool("probing", |c| c.simple("SELECT 1"))
    }

    /// See [`super::Db::ensure_ids_above`].
    pub fn ensure_ids_above(&self, n: u64) -> Result<(), Error> {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        self.shared.with_pool("moving the id generator", |c| {
            c.query(
                "SELECT setval('pecd_ids', greatest($1::int8, (SELECT last_value FROM pecd_ids)))",
                &[&n],
            )
            .map(drop)
        })
    }

    pub fn tree_names(&self) -> Result<Vec<String>, Error> {
        self.shared.with_pool("listing trees", |c| {
            let rows = c.query("SELECT name FROM pecd_trees ORDER BY id", &[])?;
            Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
        })
    }

    /// See [`super::Db::transaction`]: runs once; its writes join the group.
    pub(crate) fn transaction<R>(
        &self,
        trees: &[Tree],
        f: impl Fn(&[TxTree<'_>]) -> TxResult<R>,
    ) -> Result<R, StoreError> {
        let ids: Vec<i16> = trees
            .iter()
            .map(|t| match t {
                Tree::Pg(t) => Ok(t.id),
                _ => Err(StoreError::Corrupt {
                    what: "transaction".into(),
                    detail: "another engine's tree in a PostgreSQL transaction".into(),
                }),
            })
            .collect::<Result<_, _>>()?;
        self.shared.writer().batch.clear();
        let views: Vec<TxTree<'_>> = ids
            .iter()
            .map(|&tree| {
                TxTree::Pg(TxView {
                    shared: &self.shared,
                    tree,
                })
            })
            .collect();
        let r = f(&views);
        let mut w = self.shared.writer();
        let batch = std::mem::take(&mut w.batch);
        match r {
            Ok(v) => {
                if let Some(f) = &w.failed {
                    return Err(StoreError::Db(Error::Pg {
                        op: "applying a batch",
                        detail: f.clone(),
                        code: None,
                    }));
                }
                w.pending.extend(batch);
                Ok(v)
            }
            Err(ConflictableTransactionError::Abort(e)) => Err(e),
            Err(ConflictableTransactionError::Storage(e)) => Err(StoreError::Db(e.into())),
            Err(_) => Err(StoreError::Corrupt {
                what: "transaction".into(),
                detail: "conflict reported inside a PostgreSQL group".into(),
            }),
        }
    }

    /// Reads `keys` ahead in one query inside the group's transaction, for the
    /// transactions about to run: the rows a batch of new mail needs that no earlier batch
    /// of the group wrote (its idempotency key, its new body's reference count...) would
    /// otherwise each cost a round trip. Keys the group already holds are skipped.
    pub(crate) fn prefetch(&self, keys: Vec<(&PgTree, Vec<u8>)>) -> Result<(), Error> {
        let shared = &self.shared;
        let mut w = shared.writer();
        let (mut trees, mut ks) = (Vec::new(), Vec::new());
        let mut wanted = Vec::new();
        for (t, k) in keys {
            let key = (t.id, k);
            if w.pending.contains_key(&key) || w.prefetched.contains_key(&key) {
                continue;
            }
            trees.push(key.0);
            ks.push(key.1.clone());
            wanted.push(key);
        }
        if wanted.is_empty() {
            return Ok(());
        }
        let r = w.in_txn(shared).and_then(|c| {
            c.query(
                "SELECT d.t, d.k, kv.v FROM unnest($1::int2[], $2::bytea[]) AS d(t, k) \
                 LEFT JOIN pecd_kv kv ON kv.tree = d.t AND kv.k = d.k",
                &[&trees, &ks],
            )
            .map_err(|e| pg_err("reading ahead", e))
        });
        let rows = r.map_err(|e| w.fail(e))?;
        for row in rows {
            let key: Key = (row.get(0), row.get::<_, Vec<u8>>(1));
            w.prefetched.insert(key, row.get::<_, Option<Vec<u8>>>(2));
        }
        Ok(())
    }

    /// Sends and commits the group: one SQL transaction, one WAL flush.
    pub(crate) fn commit_group(&self) -> Result<(), Error> {
        let shared = &self.shared;
        let mut w = shared.writer();
        if let Some(f) = w.failed.clone() {
            self.rollback_locked(&mut w);
            return Err(Error::Pg {
                op: "committing",
                detail: f,
                code: None,
            });
        }
        if !w.open && w.pending.is_empty() {
            return Ok(());
        }
        // The group's mark: if the answer to COMMIT is lost with the connection, it says
        // whether the group was committed (then nobody is told it failed and retries it
        // as a second message).
        let mark = (!w.pending.is_empty()).then(group_mark);
        if let Some(m) = &mark {
            w.pending
                .insert((MARK_TREE, shared.mark_key.clone()), Some(m.to_vec()));
        }
        let mut sent_commit = false;
        let notices = std::mem::take(&mut w.notices);
        let r = w.send_pending(shared).and_then(|()| {
            let c = w.in_txn(shared)?;
            // Delivered to the listeners when (and only if) the group commits.
            for n in &notices {
                c.query(
                    &format!("SELECT pg_notify(({CHANGES_CHANNEL}), $1)"),
                    &[&n.as_str()],
                )
                .map_err(|e| pg_err("announcing the changes", e))?;
            }
            sent_commit = true;
            c.simple("COMMIT").map_err(|e| pg_err("committing", e))
        });
        let r = match (r, &mark) {
            // No answer from the server (a database error would have a code): ask it.
            (Err(e @ Error::Pg { code: None, .. }), Some(mark)) if sent_commit => {
                match self.committed(mark) {
                    Some(true) => {
                        tracing::warn!(error = %e, "the answer to COMMIT was lost, but the group was committed");
                        w.conn = None;
                        Ok(())
                    }
                    _ => Err(e),
                }
            }
            (r, _) => r,
        };
        if r.is_err() {
            self.rollback_locked(&mut w);
        }
        w.reset();
        r
    }

    /// Whether the group marked `mark` was committed: asked on a pool connection a few
    /// times over about two seconds (`None`: the server did not answer).
    fn committed(&self, mark: &[u8; 16]) -> Option<bool> {
        for attempt in 0..4 {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(500));
            }
            let r = self.shared.with_pool("checking a commit", |c| {
                get_row(c, MARK_TREE, &self.shared.mark_key)
            });
            if let Ok(v) = r {
                return Some(v.is_some_and(|v| v.as_ref() == mark));
            }
        }
        None
    }

    pub(crate) fn rollback_group(&self) {
        let mut w = self.shared.writer();
        self.rollback_locked(&mut w);
    }

    fn rollback_locked(&self, w: &mut Writer) {
        if w.open
            && let Some(c) = w.conn.as_mut()
            && c.simple("ROLLBACK").is_err()
        {
            w.conn = None;
        }
        w.reset();
    }
}

/// The election lock, held ([`PgDb::try_lead`]).
pub struct Lead {
    conn: Mutex<Conn>,
}

impl Lead {
    /// Whether the lock is still held: its connection answers (a broken one took the
    /// lock with it, and another process may hold it now).
    pub fn holds(&self) -> bool {
        let mut c = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        !c.client.is_closed() && c.simple("SELECT 1").is_ok()
    }
}

/// One tree inside a committer transaction ([`PgDb::transaction`]).
pub struct TxView<'a> {
    shared: &'a Arc<Shared>,
    tree: i16,
}

impl TxView<'_> {
    pub fn get(&self, key: &[u8]) -> TxResult<Option<IVec>> {
        let mut w = self.shared.writer();
        w.get(self.shared, &(self.tree, key.to_vec()), true)
            .map_err(|e| ConflictableTransactionError::Abort(StoreError::Db(e)))
    }

    pub fn put(&self, key: &[u8], value: Option<Vec<u8>>) {
        self.shared
            .writer()
            .batch
            .insert((self.tree, key.to_vec()), value);
    }
}
