//! The ordered key-value layer under the store: named trees of byte keys and values,
//! point reads and writes, ordered scans, and transactions of point operations over
//! several trees. Two engines sit behind it, chosen by `store.backend`:
//!
//! - **sled** ([`Db::Sled`]): the embedded default, one directory, nothing to run;
//! - **fjall** ([`Db::Fjall`], module [`fjall`]): embedded too, a log-structured merge
//!   tree that writes for less CPU than sled (opt-in);
//! - **PostgreSQL** ([`Db::Pg`], module [`pg`]): one table of `(tree, key, value)` rows
//!   ordered as sled orders them (bytea compares byte-wise), so every rule the store
//!   implements above this layer (quotas, idempotency claims, the trace chain, the change
//!   log) is the same code on both engines, and one conformance suite checks both.
//!
//! What it owns: the mapping of these operations to each engine, and nothing of PEC or of
//! the store's key layout. What it must distrust: nothing user-supplied reaches it
//! directly (keys and values are built by the store modules); the database server can
//! fail or restart at any time, which surfaces as [`Error::Pg`].
//!
//! Transactions ([`Db::transaction`]) see their own writes and are all-or-nothing. On
//! sled each is one sled transaction, durable at the next [`Db::flush`]. On PostgreSQL
//! the committer's transactions are grouped into one SQL transaction that
//! [`Db::flush`] commits (one WAL flush for the whole group, as sled's group commit does).

pub mod fjall;
pub mod pg;
#[cfg(test)]
pub(crate) mod pg_cluster;

use std::ops::{Bound, RangeBounds};

use sled::IVec;
use sled::transaction::{
    ConflictableTransactionError, TransactionError, TransactionalTree, UnabortableTransactionError,
};

use super::StoreError;

/// Errors of the engine under the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Sled(#[from] sled::Error),
    #[error("fjall: {0}")]
    Fjall(#[from] ::fjall::Error),
    /// What an engine cannot store (fjall: an empty key, an odd tree name).
    #[error("{0}: the database engine cannot store it")]
    Unusable(String),
    /// PostgreSQL failed or refused: `op` is what the store was doing.
    #[error("PostgreSQL, {op}: {detail}")]
    Pg {
        op: &'static str,
        detail: String,
        /// The SQLSTATE, when the server answered with one.
        code: Option<String>,
    },
}

impl Error {
    /// A failure that may pass by itself: the server unreachable, restarting, out of
    /// resources, or a serialization conflict (not a refusal that would repeat, such as
    /// a permission or a schema problem).
    pub fn is_transient(&self) -> bool {
        if self.is_deposed() {
            return false;
        }
        match self {
            Error::Sled(_) | Error::Fjall(_) | Error::Unusable(_) => false,
            // pecd's own refusals of a setting: they repeat.
            Error::Pg {
                op: "reading store.url" | "setting up TLS",
                ..
            } => false,
            Error::Pg { code: None, .. } => true,
            Error::Pg { code: Some(c), .. } => {
                c.starts_with("08") || c.starts_with("57P") || c.starts_with("53") || c == "40001"
            }
        }
    }

    /// Another process opened the store as its writer while this one was cut off: this
    /// one must stop ([`Db::deposed`]).
    pub fn is_deposed(&self) -> bool {
        matches!(
            self,
            Error::Pg {
                op: pg::EPOCH_CHANGED | pg::DEPOSED,
                code: None,
                ..
            }
        )
    }

    /// The I/O error under an embedded engine's error, if that is what it is (e.g. a
    /// full disk).
    pub fn io(&self) -> Option<&std::io::Error> {
        match self {
            Error::Sled(sled::Error::Io(io)) => Some(io),
            Error::Fjall(::fjall::Error::Io(io)) => Some(io),
            Error::Fjall(::fjall::Error::Storage(::fjall::LsmError::Io(io))) => Some(io),
            _ => None,
        }
    }
}

/// Results of one transaction attempt (see [`Db::transaction`]).
pub(crate) type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

fn unabortable(e: UnabortableTransactionError) -> ConflictableTransactionError<StoreError> {
    e.into()
}

/// An open database.
#[derive(Clone)]
pub enum Db {
    Sled(sled::Db),
    Fjall(fjall::FjallDb),
    Pg(pg::PgDb),
}

impl Db {
    pub fn open_tree(&self, name: &str) -> Result<Tree, Error> {
        match self {
            Db::Sled(db) => Ok(Tree::Sled(db.open_tree(name)?)),
            Db::Fjall(db) => Ok(Tree::Fjall(db.open_tree(name)?)),
            Db::Pg(db) => Ok(Tree::Pg(db.open_tree(name)?)),
        }
    }

    /// A new id, unique in this database (never reused, possibly with gaps).
    pub fn generate_id(&self) -> Result<u64, Error> {
        match self {
            Db::Sled(db) => Ok(db.generate_id()?),
            Db::Fjall(db) => db.generate_id(),
            Db::Pg(db) => db.generate_id(),
        }
    }

    /// Moves the id generator past `n`: every later [`Db::generate_id`] is above it (a
    /// store copied from another engine keeps its ids unique). sled has no way to set its
    /// counter, so ids are drawn until past `n` (about a hundred million a second).
    pub fn ensure_ids_above(&self, n: u64) -> Result<(), Error> {
        match self {
            Db::Sled(db) => {
                while db.generate_id()? <= n {}
                Ok(())
            }
            Db::Fjall(db) => db.ensure_ids_above(n),
            Db::Pg(db) => db.ensure_ids_above(n),
        }
    }

    pub fn tree_names(&self) -> Result<Vec<String>, Error> {
        match self {
            Db::Sled(db) => Ok(db
                .tree_names()
                .iter()
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .filter(|n| n != "__sled__default")
                .collect()),
            Db::Fjall(db) => Ok(db.tree_names()),
            Db::Pg(db) => db.tree_names(),
        }
    }

    /// Runs `f` as one transaction over `trees` (indexed as given). sled may run `f` more
    /// than once (on a conflict), so `f` must not have effects outside the transaction.
    pub(crate) fn transaction<R>(
        &self,
        trees: &[Tree],
        f: impl Fn(&[TxTree<'_>]) -> TxResult<R>,
    ) -> Result<R, StoreError> {
        match self {
            Db::Sled(_) => {
                let sled_trees: Vec<sled::Tree> = trees
                    .iter()
                    .map(|t| match t {
                        Tree::Sled(t) => Ok(t.clone()),
                        _ => Err(StoreError::Corrupt {
                            what: "transaction".into(),
                            detail: "another engine's tree in a sled transaction".into(),
                        }),
                    })
                    .collect::<Result<_, _>>()?;
                use sled::Transactional;
                let res = sled_trees[..].transaction(|t| {
                    let tx: Vec<TxTree<'_>> = t.iter().map(TxTree::Sled).collect();
                    f(&tx)
                });
                match res {
                    Ok(r) => Ok(r),
                    Err(TransactionError::Abort(e)) => Err(e),
                    Err(TransactionError::Storage(e)) => Err(StoreError::Db(e.into())),
                }
            }
            Db::Fjall(db) => {
                let own: Vec<&fjall::FjallTree> = trees
                    .iter()
                    .map(|t| match t {
                        Tree::Fjall(t) => Ok(t),
                        _ => Err(StoreError::Corrupt {
                            what: "transaction".into(),
                            detail: "another engine's tree in a fjall transaction".into(),
                        }),
                    })
                    .collect::<Result<_, _>>()?;
                db.transaction(&own, f)
            }
            Db::Pg(db) => db.transaction(trees, f),
        }
    }

    /// Writes out what the engine still keeps in memory only (fjall's memtables, whose
    /// journal would otherwise be replayed at the next start); nothing for sled and
    /// PostgreSQL, which keep no such tables.
    pub(crate) fn settle(&self) -> Result<(), Error> {
        match self {
            Db::Fjall(db) => db.settle(),
            Db::Sled(_) | Db::Pg(_) => Ok(()),
        }
    }

    /// Makes every transaction so far durable. sled: its flush and then an `fdatasync` of
    /// its log (`sled_file`), since sled's flush alone is `sync_file_range`, durable
    /// against a killed process but not a power cut. PostgreSQL: commits the SQL
    /// transaction the preceding transactions were grouped in.
    pub(crate) fn flush(&self, sled_file: Option<&std::fs::File>) -> Result<(), String> {
        match self {
            Db::Sled(db) => {
                db.flush().map_err(|e| e.to_string())?;
                match sled_file {
                    Some(f) => f
                        .sync_data()
                        .map_err(|e| format!("syncing the database file: {e}")),
                    None => Ok(()),
                }
            }
            Db::Fjall(db) => db.flush().map_err(|e| e.to_string()),
            Db::Pg(db) => db.commit_group().map_err(|e| e.to_string()),
        }
    }

    /// Reads `keys` ahead for the transactions about to run (PostgreSQL: one query
    /// instead of a round trip each; sled: nothing to gain).
    pub(crate) fn prefetch(&self, keys: Vec<(&Tree, Vec<u8>)>) -> Result<(), Error> {
        match self {
            Db::Sled(_) | Db::Fjall(_) => Ok(()),
            Db::Pg(db) => db.prefetch(
                keys.into_iter()
                    .filter_map(|(t, k)| match t {
                        Tree::Pg(t) => Some((t, k)),
                        _ => None,
                    })
                    .collect(),
            ),
        }
    }

    /// Forgets the transactions not yet made durable by [`Db::flush`], when the engine can
    /// (PostgreSQL: the grouped SQL transaction is rolled back). sled cannot.
    pub(crate) fn discard(&self) {
        if let Db::Pg(db) = self {
            db.rollback_group();
        }
    }

    /// Whether a transaction costs log writes of its own whatever it holds (sled writes
    /// out its log buffer before and after reserving a multi-tree transaction's place),
    /// so that the committer applies a group's batches in one (`commit::together`).
    pub(crate) fn transaction_costs_log_writes(&self) -> bool {
        matches!(self, Db::Sled(_))
    }

    /// Whether transactions not yet flushed are lost when the flush fails (PostgreSQL),
    /// rather than kept in memory (sled).
    pub(crate) fn flush_failure_loses_writes(&self) -> bool {
        matches!(self, Db::Pg(_))
    }

    /// The store finished opening (PostgreSQL: writes outside the committer no longer
    /// go through the writer's connection).
    pub(crate) fn opened(&self) {
        if let Db::Pg(db) = self {
            db.opened();
        }
    }

    /// Whether other processes write this database too (PostgreSQL with
    /// `several_writers`): the committer then reads the chain's head inside each group.
    pub(crate) fn several_writers(&self) -> bool {
        matches!(self, Db::Pg(db) if db.several_writers())
    }

    /// While the store opens: whether no other process writes it (sled and fjall:
    /// always, their lock is exclusive).
    pub(crate) fn writes_alone(&self) -> Result<bool, Error> {
        match self {
            Db::Sled(_) | Db::Fjall(_) => Ok(true),
            Db::Pg(db) => db.writes_alone(),
        }
    }

    /// Announces `changes` to the other writers when the group being built commits
    /// (several writers only).
    pub(crate) fn announce(&self, changes: String) {
        if let Db::Pg(db) = self {
            db.announce(changes);
        }
    }

    /// Another process took this database's writer lock after this one lost its
    /// connection (PostgreSQL with a standby): nothing more commits here. sled's lock
    /// cannot be lost.
    pub fn deposed(&self) -> bool {
        match self {
            Db::Sled(_) | Db::Fjall(_) => false,
            Db::Pg(db) => db.deposed(),
        }
    }

    /// Whether the database is files in the store's directory, owned by this process
    /// (sled, fjall): what the trace log's sealed segments beside it need.
    pub fn is_local(&self) -> bool {
        !matches!(self, Db::Pg(_))
    }
}

/// A named, ordered tree of byte keys and values.
#[derive(Clone)]
pub enum Tree {
    Sled(sled::Tree),
    Fjall(fjall::FjallTree),
    Pg(pg::PgTree),
}

impl std::fmt::Debug for Tree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Tree::Sled(t) => write!(f, "Tree::Sled({})", String::from_utf8_lossy(&t.name())),
            Tree::Fjall(t) => write!(f, "Tree::Fjall({})", t.name()),
            Tree::Pg(t) => write!(f, "Tree::Pg({})", t.name()),
        }
    }
}

impl Tree {
    pub fn get<K: AsRef<[u8]>>(&self, key: K) -> Result<Option<IVec>, Error> {
        match self {
            Tree::Sled(t) => Ok(t.get(key)?),
            Tree::Fjall(t) => t.get(key.as_ref()),
            Tree::Pg(t) => t.get(key.as_ref()),
        }
    }

    pub fn contains_key<K: AsRef<[u8]>>(&self, key: K) -> Result<bool, Error> {
        Ok(self.get(key)?.is_some())
    }

    /// Writes outside any transaction (derived data, migrations at open, tests).
    pub fn insert<K: AsRef<[u8]>, V: Into<IVec>>(&self, key: K, value: V) -> Result<(), Error> {
        match self {
            Tree::Sled(t) => {
                t.insert(key.as_ref(), value)?;
                Ok(())
            }
            Tree::Fjall(t) => t.insert(key.as_ref(), &value.into()),
            Tree::Pg(t) => t.apply(vec![(key.as_ref().to_vec(), Some(value.into().to_vec()))]),
        }
    }

    pub fn remove<K: AsRef<[u8]>>(&self, key: K) -> Result<(), Error> {
        match self {
            Tree::Sled(t) => {
                t.remove(key)?;
                Ok(())
            }
            Tree::Fjall(t) => t.remove(key.as_ref()),
            Tree::Pg(t) => t.apply(vec![(key.as_ref().to_vec(), None)]),
        }
    }

    /// Applies `batch` atomically.
    pub fn apply_batch(&self, batch: Batch) -> Result<(), Error> {
        match self {
            Tree::Sled(t) => {
                let mut b = sled::Batch::default();
                for (k, v) in batch.ops {
                    match v {
                        Some(v) => b.insert(k, v),
                        None => b.remove(k),
                    }
                }
                Ok(t.apply_batch(b)?)
            }
            Tree::Fjall(t) => t.apply(batch.ops),
            Tree::Pg(t) => t.apply(batch.ops),
        }
    }

    pub fn clear(&self) -> Result<(), Error> {
        match self {
            Tree::Sled(t) => Ok(t.clear()?),
            // In batches of bounded size (sled's `clear` is not atomic either).
            Tree::Fjall(t) => loop {
                let keys = t
                    .range(Bound::Unbounded, Bound::Unbounded)
                    .take(10_000)
                    .map(|r| r.map(|(k, _)| (k.to_vec(), None)))
                    .collect::<Result<Vec<_>, _>>()?;
                if keys.is_empty() {
                    return Ok(());
                }
                t.apply(keys)?;
            },
            Tree::Pg(t) => t.clear(),
        }
    }

    pub fn iter(&self) -> Iter {
        self.range::<&[u8], _>(..)
    }

    pub fn scan_prefix<P: AsRef<[u8]>>(&self, prefix: P) -> Iter {
        match self {
            Tree::Sled(t) => Iter::Sled(t.scan_prefix(prefix)),
            Tree::Fjall(_) | Tree::Pg(_) => {
                let p = prefix.as_ref().to_vec();
                let hi = match prefix_successor(&p) {
                    Some(s) => Bound::Excluded(s),
                    None => Bound::Unbounded,
                };
                self.range((Bound::Included(p), hi))
            }
        }
    }

    pub fn range<K: AsRef<[u8]>, R: RangeBounds<K>>(&self, range: R) -> Iter {
        match self {
            Tree::Sled(t) => {
                let lo = owned(range.start_bound());
                let hi = owned(range.end_bound());
                Iter::Sled(t.range::<Vec<u8>, _>((lo, hi)))
            }
            Tree::Fjall(t) => {
                Iter::Fjall(t.range(owned(range.start_bound()), owned(range.end_bound())))
            }
            Tree::Pg(t) => Iter::Pg(t.range(owned(range.start_bound()), owned(range.end_bound()))),
        }
    }

    pub fn first(&self) -> Result<Option<(IVec, IVec)>, Error> {
        self.iter().next().transpose()
    }

    pub fn last(&self) -> Result<Option<(IVec, IVec)>, Error> {
        self.iter().next_back().transpose()
    }

    /// Entries in the tree (a scan on sled).
    pub fn len(&self) -> Result<usize, Error> {
        match self {
            Tree::Sled(t) => Ok(t.len()),
            Tree::Fjall(t) => t.len(),
            Tree::Pg(t) => t.len(),
        }
    }

    pub fn is_empty(&self) -> Result<bool, Error> {
        Ok(self.first()?.is_none())
    }
}

fn owned<K: AsRef<[u8]>>(b: Bound<&K>) -> Bound<Vec<u8>> {
    match b {
        Bound::Included(k) => Bound::Included(k.as_ref().to_vec()),
        Bound::Excluded(k) => Bound::Excluded(k.as_ref().to_vec()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// Two runs of results, each in order by `key`, merged in that order; of two items with
/// the same key the second run's is dropped. An error is passed on at once.
pub(crate) fn merge_sorted<T, E, K: Ord>(
    a: impl Iterator<Item = Result<T, E>>,
    b: impl Iterator<Item = Result<T, E>>,
    key: impl Fn(&T) -> K,
) -> impl Iterator<Item = Result<T, E>> {
    let (mut a, mut b) = (a.peekable(), b.peekable());
    std::iter::from_fn(move || {
        let take_a = match (a.peek(), b.peek()) {
            (None, None) => return None,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(Err(_)), _) => true,
            (_, Some(Err(_))) => false,
            (Some(Ok(x)), Some(Ok(y))) => match key(x).cmp(&key(y)) {
                std::cmp::Ordering::Less => true,
                std::cmp::Ordering::Greater => false,
                std::cmp::Ordering::Equal => {
                    b.next();
                    true
                }
            },
        };
        if take_a { a.next() } else { b.next() }
    })
}

/// The smallest key greater than every key that starts with `p` (none: no such key).
pub(crate) fn prefix_successor(p: &[u8]) -> Option<Vec<u8>> {
    let mut s = p.to_vec();
    while let Some(last) = s.pop() {
        if last < u8::MAX {
            s.push(last + 1);
            return Some(s);
        }
    }
    None
}

/// An ordered scan, from either end.
pub enum Iter {
    Sled(sled::Iter),
    Fjall(fjall::FjallIter),
    Pg(pg::PgIter),
}

impl Iterator for Iter {
    type Item = Result<(IVec, IVec), Error>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Iter::Sled(i) => i.next().map(|r| r.map_err(Error::from)),
            Iter::Fjall(i) => i.next(),
            Iter::Pg(i) => i.next(),
        }
    }
}

impl DoubleEndedIterator for Iter {
    fn next_back(&mut self) -> Option<Self::Item> {
        match self {
            Iter::Sled(i) => i.next_back().map(|r| r.map_err(Error::from)),
            Iter::Fjall(i) => i.next_back(),
            Iter::Pg(i) => i.next_back(),
        }
    }
}

impl Iter {
    /// The keys alone.
    pub fn keys(self) -> impl DoubleEndedIterator<Item = Result<IVec, Error>> {
        self.map(|r| r.map(|(k, _)| k))
    }
}

/// Writes to one tree, applied together ([`Tree::apply_batch`]).
#[derive(Default)]
pub struct Batch {
    ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Batch {
    pub fn insert<K: AsRef<[u8]>, V: AsRef<[u8]>>(&mut self, key: K, value: V) {
        self.ops
            .push((key.as_ref().to_vec(), Some(value.as_ref().to_vec())));
    }

    pub fn remove<K: AsRef<[u8]>>(&mut self, key: K) {
        self.ops.push((key.as_ref().to_vec(), None));
    }
}

/// One tree inside a transaction: point reads that see the transaction's own writes,
/// and point writes.
pub enum TxTree<'a> {
    Sled(&'a TransactionalTree),
    Fjall(fjall::FjallTx<'a>),
    Pg(pg::TxView<'a>),
}

impl TxTree<'_> {
    pub fn get<K: AsRef<[u8]>>(&self, key: K) -> TxResult<Option<IVec>> {
        match self {
            TxTree::Sled(t) => t.get(key.as_ref()).map_err(unabortable),
            TxTree::Fjall(t) => t.get(key.as_ref()),
            TxTree::Pg(t) => t.get(key.as_ref()),
        }
    }

    pub fn insert<K: AsRef<[u8]>, V: Into<IVec>>(&self, key: K, value: V) -> TxResult<()> {
        match self {
            TxTree::Sled(t) => t.insert(key.as_ref(), value).map(drop).map_err(unabortable),
            TxTree::Fjall(t) => {
                t.put(key.as_ref(), Some(value.into().to_vec()));
                Ok(())
            }
            TxTree::Pg(t) => {
                t.put(key.as_ref(), Some(value.into().to_vec()));
                Ok(())
            }
        }
    }

    pub fn remove<K: AsRef<[u8]>>(&self, key: K) -> TxResult<()> {
        match self {
            TxTree::Sled(t) => t.remove(key.as_ref()).map(drop).map_err(unabortable),
            TxTree::Fjall(t) => {
                t.put(key.as_ref(), None);
                Ok(())
            }
            TxTree::Pg(t) => {
                t.put(key.as_ref(), None);
                Ok(())
            }
        }
    }
}
