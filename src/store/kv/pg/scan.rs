//! Trees read through the pool (or the writer's transaction) and scans of key ranges
//! from either end, a page at a time.

use super::*;

/// A tree in PostgreSQL: reads through the pool, or, for the committer, through the
/// writer's open transaction ([`PgTree::writer`]).
#[derive(Clone)]
pub struct PgTree {
    pub(super) shared: Arc<Shared>,
    pub(super) id: i16,
    pub(super) name: Arc<str>,
    pub(super) writer: bool,
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
        self.shared.with_writes("writing", |c| {
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
        self.shared.with_writes("clearing a tree", |c| {
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
    pub(super) fn page(
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
    pub(super) tree: PgTree,
    /// What is left to fetch.
    pub(super) lo: Bound<Vec<u8>>,
    pub(super) hi: Bound<Vec<u8>>,
    /// Fetched from the low end, ascending; from the high end, descending.
    pub(super) front: VecDeque<(IVec, IVec)>,
    pub(super) back: VecDeque<(IVec, IVec)>,
    /// Nothing is left to fetch between the ends (or a query failed).
    pub(super) done: bool,
    /// A query failed: the scan ends (the rest is unknown, not empty).
    pub(super) failed: bool,
}

impl PgIter {
    pub(super) fn fill(&mut self, desc: bool) -> Option<Result<(), Error>> {
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
