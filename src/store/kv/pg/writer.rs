//! The committer's group: its writes kept in memory until the group commits, the rows
//! read ahead for it, and the SQL that reads and writes rows on the writer's connection.

use super::*;

pub(super) type Key = (i16, Vec<u8>);
pub(super) type Overlay = BTreeMap<Key, Option<Vec<u8>>>;

/// The committer's connection and the group being built on it.
#[derive(Default)]
pub(super) struct Writer {
    pub(super) conn: Option<Conn>,
    /// An SQL transaction is open on `conn`.
    pub(super) open: bool,
    /// Writes of the group's successful transactions not yet sent.
    pub(super) pending: Overlay,
    /// Writes of the transaction running now.
    pub(super) batch: Overlay,
    /// Values read ahead for the group in one query ([`PgDb::prefetch`]), as of its SQL
    /// transaction's snapshot; a key the group wrote and sent is dropped from here (its
    /// value is then the transaction's own, read from SQL).
    pub(super) prefetched: HashMap<Key, Option<Vec<u8>>>,
    /// The SQL transaction failed: the group can only be rolled back.
    pub(super) failed: Option<String>,
    /// What the group announces to other processes when it commits (several writers).
    pub(super) notices: Vec<String>,
}

impl Writer {
    /// The writer's connection inside the group's SQL transaction (begun if needed).
    pub(super) fn in_txn(&mut self, shared: &Shared) -> Result<&mut Conn, Error> {
        if let Some(f) = &self.failed {
            return Err(Error::Pg {
                op: "continuing a failed transaction",
                detail: f.clone(),
                code: None,
            });
        }
        if !self.open {
            // A connection that died while idle (a server restart, a session dropped)
            // may not look closed until used: a failed BEGIN on it is tried once more
            // on a new one, nothing having been sent yet.
            let begin = begin_sql(shared);
            let began = self.connected(shared)?.simple(&begin);
            if let Err(e) = began {
                // Closed, or ended by the server (57P01 admin shutdown, 57P02 crash
                // shutdown, 57P03 cannot connect now) as the answer to BEGIN itself.
                let ended = e
                    .as_db_error()
                    .is_some_and(|d| d.code().code().starts_with("57P0"));
                if !ended && !self.conn.as_ref().is_some_and(|c| c.client.is_closed()) {
                    // With several writers the commit lock's wait may fail after its
                    // BEGIN succeeded (a timeout, a cancel): the connection is then inside
                    // an aborted transaction nobody will end. Dropped: the next group
                    // connects again.
                    if shared.several {
                        self.conn = None;
                    }
                    return Err(pg_err("beginning a transaction", e));
                }
                self.conn = None;
                let again = self.connected(shared)?.simple(&begin);
                if let Err(e) = again {
                    if shared.several {
                        self.conn = None;
                    }
                    return Err(pg_err("beginning a transaction", e));
                }
            }
            self.open = true;
        }
        self.connected(shared)
    }

    /// The writer's connection: the one it has, or a new one (which takes the writer lock
    /// again) when it has none or it broke outside a transaction.
    pub(super) fn connected(&mut self, shared: &Shared) -> Result<&mut Conn, Error> {
        Ok(match self.conn.take() {
            Some(c) if !c.client.is_closed() => self.conn.insert(c),
            // What this transaction sent died with the connection: the group is lost and
            // must fail whole, never continue in a new transaction.
            _ if self.open => {
                return Err(Error::Pg {
                    op: "continuing a transaction",
                    detail: "the connection to the server was lost".into(),
                    code: None,
                });
            }
            // Deposed: no more connections (each would take the lock a moment).
            _ if shared.deposed.load(Ordering::Relaxed) => {
                return Err(Error::Pg {
                    op: DEPOSED,
                    detail: "another process took this store over".into(),
                    code: None,
                });
            }
            _ => match shared.connect_writer() {
                Ok(c) => self.conn.insert(c),
                Err(e) => {
                    if let Error::Pg {
                        op: EPOCH_CHANGED,
                        code: None,
                        ..
                    } = &e
                    {
                        // Another node took over (or wrote) while this one was cut off:
                        // it must not go on as if it still wrote the store.
                        shared.deposed.store(true, Ordering::Relaxed);
                    }
                    return Err(e);
                }
            },
        })
    }

    pub(super) fn fail(&mut self, e: Error) -> Error {
        self.failed = Some(e.to_string());
        e
    }

    /// Sends the group's pending writes into the open SQL transaction.
    pub(super) fn send_pending(&mut self, shared: &Shared) -> Result<(), Error> {
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
    pub(super) fn get(
        &mut self,
        shared: &Shared,
        key: &Key,
        batch: bool,
    ) -> Result<Option<IVec>, Error> {
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

    pub(super) fn reset(&mut self) {
        self.open = false;
        self.prefetched.clear();
        self.pending.clear();
        self.batch.clear();
        self.failed = None;
        self.notices.clear();
    }
}

/// How a group's SQL transaction begins. One writer: `SERIALIZABLE`. Several: the
/// commit lock first, in `READ COMMITTED`, so that each statement sees every group the
/// lock made this one wait for (a `SERIALIZABLE` snapshot would be taken before the wait).
fn begin_sql(shared: &Shared) -> String {
    if shared.several {
        format!(
            "BEGIN ISOLATION LEVEL READ COMMITTED; SELECT pg_advisory_xact_lock({})",
            super::COMMIT_LOCK
        )
    } else {
        "BEGIN ISOLATION LEVEL SERIALIZABLE".to_string()
    }
}

pub(super) fn get_row(
    c: &mut Conn,
    tree: i16,
    key: &[u8],
) -> Result<Option<IVec>, tokio_postgres::Error> {
    let rows = c.query(
        "SELECT v FROM pecd_kv WHERE tree = $1 AND k = $2",
        &[&tree, &key],
    )?;
    Ok(rows.first().map(|r| IVec::from(r.get::<_, &[u8]>(0))))
}

/// Upserts and deletes `rows` (each key once) in two statements.
pub(super) fn write_rows(c: &mut Conn, rows: Overlay) -> Result<(), tokio_postgres::Error> {
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
