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
//! One writer per database: the committer keeps the trace chain's head in memory, so a
//! second process writing the same database would fork the chain. Opening takes a
//! session advisory lock held for the life of the store; a second `pecd` gets
//! [`super::super::StoreError::Locked`].
//!
//! What it must distrust: the server, which may restart, drop connections or refuse a
//! transaction at any time. A broken connection is dropped and made again at the next
//! use; a failed group is rolled back whole and every batch in it is answered with the
//! error. Credentials are never logged (the URL is shown without its password).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use sled::IVec;
use sled::transaction::ConflictableTransactionError;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};

use super::{Error, Tree, TxResult, TxTree};
use crate::store::StoreError;

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
}

impl std::fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgOptions")
            .field("url", &redacted(&self.url))
            .field("password", &self.password.as_ref().map(|_| "…"))
            .field("pool_size", &self.pool_size)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// The URL (or key=value settings) with any password replaced, for messages and logs:
/// the user-info password of a URL (which may itself hold `@`), a `password=` query
/// parameter, and a `password` setting however spaced or quoted.
pub fn redacted(url: &str) -> String {
    for scheme in ["postgres://", "postgresql://"] {
        if let Some(rest) = url.strip_prefix(scheme) {
            // User info ends at the last @ (a password may hold @ itself).
            let (auth, tail) = match rest.rfind('@') {
                Some(at) => (&rest[..at], &rest[at..]),
                None => ("", rest),
            };
            let auth = match auth.split_once(':') {
                Some((user, _)) => format!("{user}:***"),
                None => auth.to_string(),
            };
            let tail = tail
                .split_inclusive(['?', '&'])
                .map(|p| {
                    if p.to_ascii_lowercase().starts_with("password=") {
                        let end = if p.ends_with('&') { "&" } else { "" };
                        format!("password=***{end}")
                    } else {
                        p.to_string()
                    }
                })
                .collect::<String>();
            return format!("{scheme}{auth}{tail}");
        }
    }
    // key=value settings: everything after `password` `=` up to the end of its value.
    let lower = url.to_ascii_lowercase();
    let Some(k) = lower.find("password") else {
        return url.to_string();
    };
    let after = &url[k + "password".len()..];
    let Some(eq) = after.find('=').filter(|&i| after[..i].trim().is_empty()) else {
        return url.to_string();
    };
    let value = after[eq + 1..].trim_start();
    let rest = if let Some(quoted) = value.strip_prefix('\'') {
        // A quoted value ends at the next unescaped quote.
        let mut end = quoted.len();
        let mut it = quoted.char_indices();
        while let Some((i, c)) = it.next() {
            if c == '\\' {
                it.next();
            } else if c == '\'' {
                end = i + 1;
                break;
            }
        }
        &quoted[end.min(quoted.len())..]
    } else {
        value.find(char::is_whitespace).map_or("", |i| &value[i..])
    };
    format!("{}password=***{}", &url[..k], redacted(rest))
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

/// Entries a scan fetches per query.
const PAGE: i64 = 256;
/// The advisory lock keys of the schema creation and of the one writer, per SQL schema
/// (several stores may share a database, each in a schema of its own).
const SCHEMA_LOCK: &str = "hashtextextended('pecd schema ' || coalesce(current_schema(), ''), 0)";
const WRITER_LOCK: &str = "hashtextextended('pecd writer ' || coalesce(current_schema(), ''), 0)";

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

enum Tls {
    None,
    OpenSsl(postgres_openssl::MakeTlsConnector),
}

/// A connection and its prepared statements.
struct Conn {
    client: Client,
    stmts: HashMap<String, Statement>,
}

impl Conn {
    fn stmt(&mut self, sql: &str) -> Result<Statement, tokio_postgres::Error> {
        if let Some(s) = self.stmts.get(sql) {
            return Ok(s.clone());
        }
        let s = futures_executor::block_on(self.client.prepare(sql))?;
        self.stmts.insert(sql.to_string(), s.clone());
        Ok(s)
    }

    fn query(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
        let s = self.stmt(sql)?;
        futures_executor::block_on(self.client.query(&s, params))
    }

    fn execute(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, tokio_postgres::Error> {
        let s = self.stmt(sql)?;
        futures_executor::block_on(self.client.execute(&s, params))
    }

    fn simple(&mut self, sql: &str) -> Result<(), tokio_postgres::Error> {
        futures_executor::block_on(self.client.batch_execute(sql))
    }
}

type Key = (i16, Vec<u8>);
type Overlay = BTreeMap<Key, Option<Vec<u8>>>;

/// The committer's connection and the group being built on it.
#[derive(Default)]
struct Writer {
    conn: Option<Conn>,
    /// An SQL transaction is open on `conn`.
    open: bool,
    /// Writes of the group's successful transactions not yet sent.
    pending: Overlay,
    /// Writes of the transaction running now.
    batch: Overlay,
    /// Values read ahead for the group in one query ([`PgDb::prefetch`]), as of its SQL
    /// transaction's snapshot; a key the group wrote and sent is dropped from here (its
    /// value is then the transaction's own, read from SQL).
    prefetched: HashMap<Key, Option<Vec<u8>>>,
    /// The SQL transaction failed: the group can only be rolled back.
    failed: Option<String>,
}

struct Shared {
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    handle: tokio::runtime::Handle,
    config: tokio_postgres::Config,
    tls: Tls,
    pool: Vec<Mutex<Option<Conn>>>,
    next: AtomicUsize,
    writer: Mutex<Writer>,
    trees: Mutex<HashMap<String, i16>>,
    shown: String,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The last handle may go away on a tokio thread, where dropping a runtime blocks.
        if let Some(rt) = self
            .runtime
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            rt.shutdown_background();
        }
    }
}

impl Shared {
    fn connect(&self) -> Result<Conn, Error> {
        let config = self.config.clone();
        let task = match &self.tls {
            Tls::None => self.handle.spawn(async move {
                let (client, conn) = config.connect(tokio_postgres::NoTls).await?;
                tokio::spawn(async move { drop(conn.await) });
                Ok::<_, tokio_postgres::Error>(client)
            }),
            Tls::OpenSsl(tls) => {
                let tls = tls.clone();
                self.handle.spawn(async move {
                    let (client, conn) = config.connect(tls).await?;
                    tokio::spawn(async move { drop(conn.await) });
                    Ok::<_, tokio_postgres::Error>(client)
                })
            }
        };
        let client = futures_executor::block_on(task)
            .map_err(|e| Error::Pg {
                op: "connecting",
                detail: e.to_string(),
                code: None,
            })?
            .map_err(|e| pg_err("connecting", e))?;
        let mut conn = Conn {
            client,
            stmts: HashMap::new(),
        };
        // No statement of pecd's runs long: one that does is stuck (a lock held elsewhere).
        conn.simple("SET statement_timeout = '30s'")
            .map_err(|e| pg_err("setting the statement timeout", e))?;
        Ok(conn)
    }

    /// A connection for the writer: it takes the writer lock (a session advisory lock, so
    /// it lasts as long as the connection; taken again on every new one, so that after a
    /// server restart another process cannot have become a writer meanwhile).
    fn connect_writer(&self) -> Result<Conn, Error> {
        let mut conn = self.connect()?;
        let got: bool = conn
            .query(&format!("SELECT pg_try_advisory_lock({WRITER_LOCK})"), &[])
            .map_err(|e| pg_err("taking the writer lock", e))?
            .first()
            .and_then(|r| r.get::<_, Option<bool>>(0))
            .unwrap_or(false);
        if !got {
            return Err(Error::Pg {
                op: "taking the writer lock",
                detail: "another process writes this store".into(),
                code: None,
            });
        }
        Ok(conn)
    }

    /// Runs `f` on a pool connection (made if needed, dropped if it broke).
    fn with_pool<R>(
        &self,
        op: &'static str,
        f: impl FnOnce(&mut Conn) -> Result<R, tokio_postgres::Error>,
    ) -> Result<R, Error> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.pool.len();
        let mut slot = self.pool[i].lock().unwrap_or_else(|p| p.into_inner());
        if slot.as_ref().is_none_or(|c| c.client.is_closed()) {
            *slot = Some(self.connect()?);
        }
        let conn = slot.as_mut().expect("connected above");
        let r = f(conn);
        if conn.client.is_closed() {
            *slot = None;
        }
        r.map_err(|e| pg_err(op, e))
    }

    fn writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Writer {
    /// The writer's connection inside the group's SQL transaction (begun if needed).
    fn in_txn(&mut self, shared: &Shared) -> Result<&mut Conn, Error> {
        if let Some(f) = &self.failed {
            return Err(Error::Pg {
                op: "continuing a failed transaction",
                detail: f.clone(),
                code: None,
            });
        }
        if self.conn.as_ref().is_none_or(|c| c.client.is_closed()) {
            if self.open {
                // What this transaction sent died with the connection: the group is lost
                // and must fail whole, never continue in a new transaction.
                self.conn = None;
                return Err(Error::Pg {
                    op: "continuing a transaction",
                    detail: "the connection to the server was lost".into(),
                    code: None,
                });
            }
            self.conn = Some(shared.connect_writer()?);
        }
        let conn = self.conn.as_mut().expect("connected above");
        if !self.open {
            conn.simple("BEGIN ISOLATION LEVEL SERIALIZABLE")
                .map_err(|e| pg_err("beginning a transaction", e))?;
            self.open = true;
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }

    fn fail(&mut self, e: Error) -> Error {
        self.failed = Some(e.to_string());
        e
    }

    /// Sends the group's pending writes into the open SQL transaction.
    fn send_pending(&mut self, shared: &Shared) -> Result<(), Error> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        for k in pending.keys() {
            self.prefetched.remove(k);
        }
        let r = self
            .in_txn(shared)
            .and_then(|c| write_rows(c, pending).map_err(|e| pg_err("writing", e)));
        r.map_err(|e| self.fail(e))
    }

    /// A point read inside the group: the group's own writes first.
    fn get(&mut self, shared: &Shared, key: &Key, batch: bool) -> Result<Option<IVec>, Error> {
        if batch && let Some(v) = self.batch.get(key) {
            return Ok(v.as_deref().map(IVec::from));
        }
        if let Some(v) = self.pending.get(key) {
            return Ok(v.as_deref().map(IVec::from));
        }
        if let Some(v) = self.prefetched.get(key) {
            return Ok(v.as_deref().map(IVec::from));
        }
        let r = self
            .in_txn(shared)
            .and_then(|c| get_row(c, key.0, &key.1).map_err(|e| pg_err("reading", e)));
        r.map_err(|e| self.fail(e))
    }

    fn reset(&mut self) {
        self.open = false;
        self.prefetched.clear();
        self.pending.clear();
        self.batch.clear();
        self.failed = None;
    }
}

fn get_row(c: &mut Conn, tree: i16, key: &[u8]) -> Result<Option<IVec>, tokio_postgres::Error> {
    let rows = c.query(
        "SELECT v FROM pecd_kv WHERE tree = $1 AND k = $2",
        &[&tree, &key],
    )?;
    Ok(rows.first().map(|r| IVec::from(r.get::<_, &[u8]>(0))))
}

/// Upserts and deletes `rows` (each key once) in two statements.
fn write_rows(c: &mut Conn, rows: Overlay) -> Result<(), tokio_postgres::Error> {
    let (mut ut, mut uk, mut uv) = (Vec::new(), Vec::new(), Vec::new());
    let (mut dt, mut dk) = (Vec::new(), Vec::new());
    for ((t, k), v) in rows {
        match v {
            Some(v) => {
                ut.push(t);
                uk.push(k);
                uv.push(v);
            }
            None => {
                dt.push(t);
                dk.push(k);
            }
        }
    }
    if !dt.is_empty() {
        c.execute(
            "DELETE FROM pecd_kv USING unnest($1::int2[], $2::bytea[]) AS d(t, k) \
             WHERE pecd_kv.tree = d.t AND pecd_kv.k = d.k",
            &[&dt, &dk],
        )?;
    }
    if !ut.is_empty() {
        c.execute(
            "INSERT INTO pecd_kv (tree, k, v) SELECT * FROM unnest($1::int2[], $2::bytea[], $3::bytea[]) \
             ON CONFLICT (tree, k) DO UPDATE SET v = EXCLUDED.v",
            &[&ut, &uk, &uv],
        )?;
    }
    Ok(())
}

/// A PostgreSQL database holding one pecd store.
#[derive(Clone)]
pub struct PgDb {
    shared: Arc<Shared>,
}

impl PgDb {
    /// Connects, creates the schema if needed and takes the writer lock, waiting up to
    /// `lock_wait` for another process to release it.
    pub fn open(o: &PgOptions, lock_wait: Duration) -> Result<Self, StoreError> {
        let mut config: tokio_postgres::Config =
            o.url.parse().map_err(|e: tokio_postgres::Error| {
                StoreError::Db(Error::Pg {
                    op: "reading store.url",
                    detail: format!("{}: {e}", redacted(&o.url)),
                    code: None,
                })
            })?;
        if let Some(p) = &o.password {
            config.password(p);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        // A server that silently stops answering (a dropped route, a frozen host) is
        // noticed in seconds, not after the kernel's two hours: the committer holds the
        // writer while it waits, and every submission waits behind it.
        config
            .keepalives_idle(Duration::from_secs(10))
            .keepalives_interval(Duration::from_secs(5))
            .keepalives_retries(3)
            .tcp_user_timeout(Duration::from_secs(30));
        config.application_name("pecd");
        let tls = match config.get_ssl_mode() {
            tokio_postgres::config::SslMode::Disable => Tls::None,
            _ => Tls::OpenSsl(tls_connector(o.ca_file.as_deref())?),
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("pecd-postgres")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Io {
                path: "postgres runtime".into(),
                source: e,
            })?;
        let shared = Arc::new(Shared {
            handle: runtime.handle().clone(),
            runtime: Mutex::new(Some(runtime)),
            config,
            tls,
            pool: (0..o.pool_size.max(1)).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
            writer: Mutex::new(Writer::default()),
            trees: Mutex::new(HashMap::new()),
            shown: redacted(&o.url),
        });
        let db = PgDb { shared };
        db.create_schema()?;
        db.take_writer_lock(lock_wait)?;
        Ok(db)
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
                    op: "taking the writer lock",
                    code: None,
                    ..
                }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(Error::Pg {
                    op: "taking the writer lock",
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
                Tree::Sled(_) => Err(StoreError::Corrupt {
                    what: "transaction".into(),
                    detail: "a sled tree in a PostgreSQL transaction".into(),
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
        let r = w.send_pending(shared).and_then(|()| {
            w.in_txn(shared)?
                .simple("COMMIT")
                .map_err(|e| pg_err("committing", e))
        });
        if r.is_err() {
            self.rollback_locked(&mut w);
        }
        w.reset();
        r
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

fn tls_connector(
    ca_file: Option<&std::path::Path>,
) -> Result<postgres_openssl::MakeTlsConnector, StoreError> {
    let bad = |detail: String| {
        StoreError::Db(Error::Pg {
            op: "setting up TLS",
            detail,
            code: None,
        })
    };
    let mut b = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls())
        .map_err(|e| bad(e.to_string()))?;
    b.set_min_proto_version(Some(openssl::ssl::SslVersion::TLS1_2))
        .map_err(|e| bad(e.to_string()))?;
    if let Some(ca) = ca_file {
        b.set_ca_file(ca)
            .map_err(|e| bad(format!("{}: {e}", ca.display())))?;
    }
    Ok(postgres_openssl::MakeTlsConnector::new(b.build()))
}

/// A tree in PostgreSQL: reads through the pool, or, for the committer, through the
/// writer's open transaction ([`PgTree::writer`]).
#[derive(Clone)]
pub struct PgTree {
    shared: Arc<Shared>,
    id: i16,
    name: Arc<str>,
    writer: bool,
}

impl PgTree {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The same tree, read and written inside the committer's group (its reads see the
    /// group's writes).
    pub(crate) fn writer(&self) -> PgTree {
        PgTree {
            writer: true,
            ..self.clone()
        }
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<IVec>, Error> {
        if self.writer {
            let mut w = self.shared.writer();
            return w.get(&self.shared, &(self.id, key.to_vec()), false);
        }
        self.shared
            .with_pool("reading", |c| get_row(c, self.id, key))
    }

    /// Writes outside a transaction: committed at once through the pool, or, for the
    /// writer, added to the group.
    pub fn apply(&self, ops: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Result<(), Error> {
        let rows: Overlay = ops.into_iter().map(|(k, v)| ((self.id, k), v)).collect();
        if self.writer {
            self.shared.writer().pending.extend(rows);
            return Ok(());
        }
        self.shared.with_pool("writing", |c| {
            c.simple("BEGIN")?;
            match write_rows(c, rows) {
                Ok(()) => c.simple("COMMIT"),
                Err(e) => {
                    drop(c.simple("ROLLBACK"));
                    Err(e)
                }
            }
        })
    }

    pub fn clear(&self) -> Result<(), Error> {
        self.shared.with_pool("clearing a tree", |c| {
            c.execute("DELETE FROM pecd_kv WHERE tree = $1", &[&self.id])
                .map(drop)
        })
    }

    #[allow(clippy::len_without_is_empty)] // `Tree::is_empty` reads one entry instead
    pub fn len(&self) -> Result<usize, Error> {
        self.shared.with_pool("counting", |c| {
            let rows = c.query("SELECT count(*) FROM pecd_kv WHERE tree = $1", &[&self.id])?;
            Ok(rows[0].get::<_, i64>(0) as usize)
        })
    }

    pub fn range(&self, lo: Bound<Vec<u8>>, hi: Bound<Vec<u8>>) -> PgIter {
        PgIter {
            tree: self.clone(),
            lo,
            hi,
            front: VecDeque::new(),
            back: VecDeque::new(),
            done: false,
            failed: false,
        }
    }

    /// One page of the range, ascending (`desc` false) or descending.
    fn page(
        &self,
        lo: &Bound<Vec<u8>>,
        hi: &Bound<Vec<u8>>,
        desc: bool,
    ) -> Result<Vec<(IVec, IVec)>, Error> {
        let mut sql = String::from("SELECT k, v FROM pecd_kv WHERE tree = $1");
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&self.id];
        for (b, incl, excl) in [(lo, ">=", ">"), (hi, "<=", "<")] {
            match b {
                Bound::Included(k) => {
                    params.push(k);
                    sql.push_str(&format!(" AND k {incl} ${}", params.len()));
                }
                Bound::Excluded(k) => {
                    params.push(k);
                    sql.push_str(&format!(" AND k {excl} ${}", params.len()));
                }
                Bound::Unbounded => {}
            }
        }
        sql.push_str(if desc {
            " ORDER BY k DESC LIMIT "
        } else {
            " ORDER BY k LIMIT "
        });
        sql.push_str(&PAGE.to_string());
        let rows = |c: &mut Conn| {
            c.query(&sql, &params).map(|rows| {
                rows.iter()
                    .map(|r| {
                        (
                            IVec::from(r.get::<_, &[u8]>(0)),
                            IVec::from(r.get::<_, &[u8]>(1)),
                        )
                    })
                    .collect()
            })
        };
        if self.writer {
            let shared = &self.shared;
            let mut w = shared.writer();
            w.send_pending(shared)?;
            let r = w
                .in_txn(shared)
                .and_then(|c| rows(c).map_err(|e| pg_err("scanning", e)));
            return r.map_err(|e| w.fail(e));
        }
        self.shared.with_pool("scanning", rows)
    }
}

/// A scan of a key range, fetched a page at a time from either end. The two ends never
/// fetch the same entry: each page's query is bounded by what the other end fetched.
pub struct PgIter {
    tree: PgTree,
    /// What is left to fetch.
    lo: Bound<Vec<u8>>,
    hi: Bound<Vec<u8>>,
    /// Fetched from the low end, ascending; from the high end, descending.
    front: VecDeque<(IVec, IVec)>,
    back: VecDeque<(IVec, IVec)>,
    /// Nothing is left to fetch between the ends (or a query failed).
    done: bool,
    /// A query failed: the scan ends (the rest is unknown, not empty).
    failed: bool,
}

impl PgIter {
    fn fill(&mut self, desc: bool) -> Option<Result<(), Error>> {
        if self.done {
            return None;
        }
        match self.tree.page(&self.lo, &self.hi, desc) {
            Err(e) => {
                self.done = true;
                self.failed = true;
                Some(Err(e))
            }
            Ok(rows) => {
                if (rows.len() as i64) < PAGE {
                    // The page reached the other bound: nothing lies between the ends.
                    self.done = true;
                }
                if let Some((k, _)) = rows.last() {
                    if desc {
                        self.hi = Bound::Excluded(k.to_vec());
                    } else {
                        self.lo = Bound::Excluded(k.to_vec());
                    }
                }
                let buf = if desc {
                    &mut self.back
                } else {
                    &mut self.front
                };
                buf.extend(rows);
                Some(Ok(()))
            }
        }
    }
}

impl Iterator for PgIter {
    type Item = Result<(IVec, IVec), Error>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.failed {
                return None;
            }
            if let Some(kv) = self.front.pop_front() {
                return Some(Ok(kv));
            }
            match self.fill(false) {
                Some(Err(e)) => return Some(Err(e)),
                Some(Ok(())) if !self.front.is_empty() => {}
                // Nothing more between the ends: what the high end fetched comes next.
                _ => return self.back.pop_back().map(Ok),
            }
        }
    }
}

impl DoubleEndedIterator for PgIter {
    fn next_back(&mut self) -> Option<Self::Item> {
        loop {
            if self.failed {
                return None;
            }
            if let Some(kv) = self.back.pop_front() {
                return Some(Ok(kv));
            }
            match self.fill(true) {
                Some(Err(e)) => return Some(Err(e)),
                Some(Ok(())) if !self.back.is_empty() => {}
                _ => return self.front.pop_back().map(Ok),
            }
        }
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

#[cfg(test)]
mod redaction_tests {
    use super::redacted;

    #[test]
    fn no_password_survives_redaction() {
        for (url, secret) in [
            ("postgres://pecd:s3greta@db.example.it/pecd", "s3greta"),
            ("postgresql://pecd:pa@ss@db/pecd?sslmode=require", "pa@ss"),
            (
                "postgres://pecd@db/pecd?sslmode=require&password=s3greta",
                "s3greta",
            ),
            ("host=db user=pecd password=s3greta dbname=pecd", "s3greta"),
            ("host=db password = 's3 gr\\'eta' dbname=pecd", "gr"),
            ("host=db PASSWORD=s3greta", "s3greta"),
        ] {
            let r = redacted(url);
            assert!(!r.contains(secret), "{url} -> {r}");
            assert!(r.contains("db"), "{url} -> {r}");
        }
        assert_eq!(
            redacted("host=127.0.0.1 port=5432 user=pecd"),
            "host=127.0.0.1 port=5432 user=pecd"
        );
    }
}

/// Test support: with `PECD_TEST_STORE_PG` set (a connection string, see
/// `store::conformance`), every store a unit test opens lives in PostgreSQL, in a schema
/// named after its directory, so that a test reopening its directory finds its data.
#[cfg(test)]
pub(crate) mod testing {
    use std::path::Path;

    use super::PgOptions;
    use crate::store::{StoreBackend, StoreError, StoreOptions};

    pub(crate) const ENV: &str = "PECD_TEST_STORE_PG";

    pub(crate) fn backend_for(dir: &Path, mut o: StoreOptions) -> Result<StoreOptions, StoreError> {
        let Some(base) = std::env::var_os(ENV) else {
            return Ok(o);
        };
        if !matches!(o.backend, StoreBackend::Sled) {
            return Ok(o);
        }
        let base = base.to_string_lossy().into_owned();
        let digest = openssl::sha::sha256(dir.to_string_lossy().as_bytes());
        let schema = format!("t_{}", hex::encode(&digest[..12]));
        let (url, create) = (
            base.clone(),
            format!("CREATE SCHEMA IF NOT EXISTS {schema}"),
        );
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .map_err(|e| e.to_string())?;
                tokio::spawn(conn);
                client
                    .batch_execute(&create)
                    .await
                    .map_err(|e| e.to_string())
            })
        })
        .join()
        .map_err(|_| StoreError::Closed)?
        .map_err(|e| StoreError::Corrupt {
            what: "test schema".into(),
            detail: e,
        })?;
        o.backend = StoreBackend::Postgres(PgOptions {
            url: format!("{base} options=-csearch_path={schema}"),
            password: None,
            pool_size: 2,
            ca_file: None,
        });
        Ok(o)
    }
}
