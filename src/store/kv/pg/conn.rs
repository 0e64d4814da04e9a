//! Connections to PostgreSQL: TLS, prepared statements, the pool readers share, and
//! the writer's own connection (which holds the writer lock).

use super::*;

pub(super) enum Tls {
    None,
    OpenSsl(postgres_openssl::MakeTlsConnector),
}

/// A connection and its prepared statements.
pub(super) struct Conn {
    pub(super) client: Client,
    pub(super) stmts: HashMap<String, Statement>,
}

impl Conn {
    pub(super) fn stmt(&mut self, sql: &str) -> Result<Statement, tokio_postgres::Error> {
        if let Some(s) = self.stmts.get(sql) {
            return Ok(s.clone());
        }
        let s = futures_executor::block_on(self.client.prepare(sql))?;
        self.stmts.insert(sql.to_string(), s.clone());
        Ok(s)
    }

    pub(super) fn query(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
        let s = self.stmt(sql)?;
        futures_executor::block_on(self.client.query(&s, params))
    }

    pub(super) fn execute(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, tokio_postgres::Error> {
        let s = self.stmt(sql)?;
        futures_executor::block_on(self.client.execute(&s, params))
    }

    pub(super) fn simple(&mut self, sql: &str) -> Result<(), tokio_postgres::Error> {
        futures_executor::block_on(self.client.batch_execute(sql))
    }
}

pub(super) struct Shared {
    pub(super) runtime: Mutex<Option<tokio::runtime::Runtime>>,
    pub(super) handle: tokio::runtime::Handle,
    pub(super) config: tokio_postgres::Config,
    pub(super) tls: Tls,
    pub(super) pool: Vec<Mutex<Option<Conn>>>,
    pub(super) next: AtomicUsize,
    pub(super) writer: Mutex<Writer>,
    pub(super) trees: Mutex<HashMap<String, i16>>,
    pub(super) shown: String,
    /// The writer lock went to another process while this one was reconnecting.
    pub(super) deposed: AtomicBool,
    /// The writer's epoch this process wrote when it took the lock first
    /// ([`Shared::connect_writer`]); `None` until then.
    pub(super) token: Mutex<Option<[u8; 16]>>,
    /// The backend (pid, start time) of the writer's latest session: if it still holds
    /// the lock when the writer connects again, it is this process's own stale session.
    pub(super) writer_session: Mutex<Option<(i32, Option<String>)>>,
    /// When the idle check last connected the writer again ([`super::PgDb::deposed`]).
    pub(super) last_reconnect: Mutex<Option<std::time::Instant>>,
    /// The store is opening: writes outside a group go through the writer's connection
    /// ([`Shared::with_writes`]) until [`super::PgDb::opened`].
    pub(super) opening: AtomicBool,
    /// Several processes write ([`super::PgOptions::several_writers`]).
    pub(super) several: bool,
    /// This process's store handle, in its announcements (16 random bytes, hex).
    pub(super) node: String,
    /// Where this process's groups leave their mark: one key per process when several
    /// write, so that another's commit does not hide whether this one's was committed.
    pub(super) mark_key: Vec<u8>,
}

/// Settings of the writer's and the standby's sessions, each only where this server
/// version knows it: the server-side keepalives, and none of the idle, transaction or
/// lock timeouts a DBA may have set for the role.
pub(super) const SESSION_SETTINGS: &str = "SELECT set_config(s.name, s.v, false) FROM (VALUES \
     ('tcp_keepalives_idle', '10'), ('tcp_keepalives_interval', '5'), \
     ('tcp_keepalives_count', '3'), ('tcp_user_timeout', '30000'), \
     ('idle_session_timeout', '0'), ('idle_in_transaction_session_timeout', '0'), \
     ('transaction_timeout', '0'), ('lock_timeout', '0')) AS s(name, v) \
     WHERE s.name IN (SELECT name FROM pg_settings)";

/// The error `op` of a writer lock another session holds (refuses an opening as locked).
pub(super) const LOCK_HELD: &str = "taking the writer lock";
/// The error `op` of a writer's epoch that changed while it was disconnected (deposes it).
pub(crate) const EPOCH_CHANGED: &str = "taking the writer lock again";
/// The error `op` of a deposed writer asked to connect again.
pub(crate) const DEPOSED: &str = "continuing as the writer";
/// Where the writer's epoch is kept (in tree 0, which no scan sees).
const TOKEN_KEY: &[u8] = b"writer epoch";

/// This session's backend pid and start time.
const OWN_SESSION: &str = "SELECT pg_backend_pid(), \
     (SELECT backend_start::text FROM pg_stat_activity WHERE pid = pg_backend_pid())";

/// The backend (pid, start time) holding the writer lock (no row: nobody).
const HOLDER_PID: &str = "\
WITH k AS (SELECT hashtextextended('pecd writer ' || coalesce(current_schema(), ''), 0) AS k) \
SELECT l.pid, (SELECT a.backend_start::text FROM pg_stat_activity a WHERE a.pid = l.pid) \
FROM pg_locks l, k \
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 \
AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
AND l.classid::int8 = (k.k >> 32) & 4294967295 AND l.objid::int8 = k.k & 4294967295 LIMIT 1";

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
    /// The connection settings of `o`; nothing is connected yet.
    pub(super) fn new(o: &PgOptions) -> Result<Self, StoreError> {
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
        // In pg_stat_activity, which node a connection is (a standby names the writer).
        let host = rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned();
        // The process id first (a long host name is what gets cut), then which of this
        // process's stores (tests open several; only the same one is "this writer").
        static OPENED: AtomicUsize = AtomicUsize::new(0);
        let n = OPENED.fetch_add(1, Ordering::Relaxed) + 1;
        let mut name = format!("pecd {}.{n} {host}", std::process::id());
        // NAMEDATALEN: PostgreSQL keeps 63 bytes.
        while name.len() > 63 {
            name.pop();
        }
        config.application_name(&name);
        let tls = match config.get_ssl_mode() {
            tokio_postgres::config::SslMode::Disable => Tls::None,
            _ => Tls::OpenSsl(tls_connector(o.ca_file.as_deref())?),
        };
        let node = hex::encode(super::group_mark());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("pecd-postgres")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Io {
                path: "postgres runtime".into(),
                source: e,
            })?;
        Ok(Shared {
            handle: runtime.handle().clone(),
            runtime: Mutex::new(Some(runtime)),
            config,
            tls,
            pool: (0..o.pool_size.max(1)).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
            writer: Mutex::new(Writer::default()),
            trees: Mutex::new(HashMap::new()),
            shown: redacted(&o.url),
            deposed: AtomicBool::new(false),
            token: Mutex::new(None),
            writer_session: Mutex::new(None),
            last_reconnect: Mutex::new(None),
            opening: AtomicBool::new(true),
            several: o.several_writers,
            mark_key: if o.several_writers {
                [super::MARK_KEY, b" ", node.as_bytes()].concat()
            } else {
                super::MARK_KEY.to_vec()
            },
            node,
        })
    }

    pub(super) fn connect(&self) -> Result<Conn, Error> {
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
    /// it lasts as long as the connection; taken again on every new one).
    ///
    /// Having the lock again after a reconnection only proves that nobody holds it now,
    /// not that nobody wrote meanwhile: the first connection writes a random token (the
    /// writer's epoch) and every later one reads it back; another token means another
    /// process opened the store as its writer in between, and this one, whose memory (the
    /// trace head...) is stale, must stop: [`EPOCH_CHANGED`] deposes it. A lock merely
    /// held by another session ([`LOCK_HELD`]: a standby's brief look, or a taker that
    /// has not written its epoch yet) does not.
    pub(super) fn connect_writer(&self) -> Result<Conn, Error> {
        let mut conn = self.connect()?;
        if self.several {
            return self.connect_one_of_several(conn);
        }
        let mine = *self.token.lock().unwrap_or_else(|p| p.into_inner());
        let mut attempts = 0;
        loop {
            let got: bool = conn
                .query(&format!("SELECT pg_try_advisory_lock({WRITER_LOCK})"), &[])
                .map_err(|e| pg_err("asking for the writer lock", e))?
                .first()
                .and_then(|r| r.get::<_, Option<bool>>(0))
                .unwrap_or(false);
            if got {
                // This session, recognised later (if it outlives its connection) by its
                // backend pid and start time (a pid alone may be reused).
                let me = conn
                    .query(OWN_SESSION, &[])
                    .map_err(|e| pg_err("asking for the writer lock", e))?;
                let me = me
                    .first()
                    .map(|r| (r.get::<_, i32>(0), r.get::<_, Option<String>>(1)));
                *self
                    .writer_session
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = me;
                break;
            }
            let epoch_changed = match mine {
                Some(mine) => {
                    super::writer::get_row(&mut conn, super::MARK_TREE, TOKEN_KEY)
                        .map_err(|e| pg_err("reading the writer's epoch", e))?
                        .as_deref()
                        != Some(mine.as_slice())
                }
                None => false,
            };
            if epoch_changed {
                return Err(Error::Pg {
                    op: EPOCH_CHANGED,
                    detail: "another process wrote this store meanwhile".into(),
                    code: None,
                });
            }
            // This process's own earlier writer session, which the server has not dropped
            // yet (the client gave up on it first): ended, and the lock asked for again.
            let holder: Option<(i32, Option<String>)> = conn
                .query(HOLDER_PID, &[])
                .map_err(|e| pg_err("asking for the writer lock", e))?
                .first()
                .map(|r| (r.get(0), r.get(1)));
            let earlier = self
                .writer_session
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            match holder {
                Some((pid, _)) if holder == earlier && attempts < 20 => {
                    if attempts == 0 {
                        conn.query("SELECT pg_terminate_backend($1)", &[&pid])
                            .map_err(|e| pg_err("ending this process's earlier session", e))?;
                    }
                    attempts += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
                // Gone meanwhile: ask again.
                None if attempts < 20 => attempts += 1,
                _ => {
                    return Err(Error::Pg {
                        op: LOCK_HELD,
                        detail: "another process writes this store".into(),
                        code: None,
                    });
                }
            }
        }
        // The server, too, notices within about half a minute that this process's host
        // went silent (its own default is the kernel's two hours), so that the lock of a
        // node that died with its machine goes to a standby; and no idle or lock timeout a
        // DBA set for the role ends the writer's session (which would hand the store to a
        // standby).
        conn.simple(SESSION_SETTINGS)
            .map_err(|e| pg_err("setting the writer's session", e))?;
        match mine {
            None => {
                let fresh = super::group_mark();
                conn.execute(
                    "INSERT INTO pecd_kv (tree, k, v) VALUES ($1, $2, $3) \
                     ON CONFLICT (tree, k) DO UPDATE SET v = EXCLUDED.v",
                    &[&super::MARK_TREE, &TOKEN_KEY, &fresh.as_slice()],
                )
                .map_err(|e| pg_err("writing the writer's epoch", e))?;
                *self.token.lock().unwrap_or_else(|p| p.into_inner()) = Some(fresh);
            }
            Some(mine) => {
                let now = super::writer::get_row(&mut conn, super::MARK_TREE, TOKEN_KEY)
                    .map_err(|e| pg_err("reading the writer's epoch", e))?;
                if now.as_deref() != Some(mine.as_slice()) {
                    return Err(Error::Pg {
                        op: EPOCH_CHANGED,
                        detail: "another process wrote this store meanwhile".into(),
                        code: None,
                    });
                }
            }
        }
        Ok(conn)
    }

    /// The writer's connection when several processes write: no writer lock and no
    /// epoch (each group takes the commit lock); while the store opens, the commit lock
    /// held as a session lock (released by [`super::PgDb::opened`]).
    fn connect_one_of_several(&self, mut conn: Conn) -> Result<Conn, Error> {
        conn.simple(SESSION_SETTINGS)
            .map_err(|e| pg_err("setting the writer's session", e))?;
        // The writer lock shared: a pecd configured as the one writer (or a standby's
        // takeover) is refused while any of several holds it, and the reverse, so the
        // two modes never write one store at once.
        let shared: bool = conn
            .query(
                &format!("SELECT pg_try_advisory_lock_shared({})", super::WRITER_LOCK),
                &[],
            )
            .map_err(|e| pg_err("asking for the writer lock", e))?
            .first()
            .and_then(|r| r.get::<_, Option<bool>>(0))
            .unwrap_or(false);
        if !shared {
            return Err(Error::Pg {
                op: LOCK_HELD,
                detail: "a pecd configured as the store's only writer writes it".into(),
                code: None,
            });
        }
        if self.opening.load(Ordering::Relaxed) {
            conn.query(
                &format!("SELECT pg_advisory_lock({})", super::COMMIT_LOCK),
                &[],
            )
            .map_err(|e| pg_err("taking the commit lock", e))?;
        }
        Ok(conn)
    }

    /// Whether another process opened the store as its writer ([`super::PgDb::deposed`]):
    /// the writer's epoch is not this process's, asked on a pool connection. `None` when
    /// this process has not been the writer, or the server did not answer.
    pub(super) fn taken_over(&self) -> Option<bool> {
        let mine = (*self.token.lock().unwrap_or_else(|p| p.into_inner()))?;
        self.with_pool("asking who writes the store", |c| {
            super::writer::get_row(c, super::MARK_TREE, TOKEN_KEY)
        })
        .ok()
        .map(|now| now.as_deref() != Some(mine.as_slice()))
    }

    /// Runs `f`, which writes outside the committer's groups: while the store opens (its
    /// committer not started yet) on the writer's own connection, so that what the
    /// opening writes (the queue's index rebuilt, the store id...) is fenced by the writer
    /// lock and the epoch like a commit; afterwards on a pool connection.
    pub(super) fn with_writes<R>(
        &self,
        op: &'static str,
        f: impl FnOnce(&mut Conn) -> Result<R, tokio_postgres::Error>,
    ) -> Result<R, Error> {
        if !self.opening.load(Ordering::Relaxed) {
            if self.several {
                // Not interleaved with any process's group: under the commit lock, on a
                // connection of its own, so that no pool connection ever waits for the
                // lock (the committer, holding it, may need one) and the lock goes with
                // the connection whatever happens.
                let mut c = self.connect()?;
                c.simple(SESSION_SETTINGS)
                    .map_err(|e| pg_err("setting a session", e))?;
                c.query(
                    &format!("SELECT pg_advisory_lock({})", super::COMMIT_LOCK),
                    &[],
                )
                .map_err(|e| pg_err("taking the commit lock", e))?;
                return f(&mut c).map_err(|e| pg_err(op, e));
            }
            return self.with_pool(op, f);
        }
        let mut w = self.writer();
        if w.open || w.failed.is_some() {
            // Never inside a group: its COMMIT would commit the group half built.
            return Err(Error::Pg {
                op,
                detail: "a write outside the committer while its group is open".into(),
                code: None,
            });
        }
        // A lock held a moment by another session (a standby's look) during a reconnect
        // is waited out for a few seconds; a changed epoch is not.
        let mut tries = 0;
        let conn = loop {
            match w.connected(self) {
                Err(Error::Pg {
                    op: LOCK_HELD,
                    code: None,
                    ..
                }) if tries < 30 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
                r => break r?,
            }
        };
        let r = f(conn).map_err(|e| pg_err(op, e));
        if conn.client.is_closed() {
            w.conn = None;
        }
        r
    }

    /// Runs `f` on a pool connection (made if needed, dropped if it broke).
    pub(super) fn with_pool<R>(
        &self,
        op: &'static str,
        f: impl FnOnce(&mut Conn) -> Result<R, tokio_postgres::Error>,
    ) -> Result<R, Error> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.pool.len();
        let mut slot = self.pool[i].lock().unwrap_or_else(|p| p.into_inner());
        let conn = match slot.take() {
            Some(c) if !c.client.is_closed() => slot.insert(c),
            // None yet, or broken: a new one.
            _ => slot.insert(self.connect()?),
        };
        let r = f(conn);
        if conn.client.is_closed() {
            *slot = None;
        }
        r.map_err(|e| pg_err(op, e))
    }

    pub(super) fn writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub(super) fn tls_connector(
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
