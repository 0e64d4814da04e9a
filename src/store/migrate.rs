//! `pecd store migrate`: copies what a store refers to into another backend, and checks
//! the copy. Today the metadata backend is sled alone, so a migration moves the message
//! bodies between blob backends (`dir` ↔ `s3`) of one store; the copy of the metadata
//! comes with a second metadata backend.
//!
//! Every blob some record refers to (the `blobrefs` tree: messages and queue items) is
//! streamed from the source to the target (memory bounded whatever the body's size) and
//! then read back from the target and hashed: the copy is accepted only when the bytes
//! read back hash to the blob's id. A blob already on the target that reads back right is
//! not copied again, so an interrupted migration is simply run again. The source is only
//! read. Distrusted: the target's answers (hence the read-back).

use std::io::{self, Read, Write};

use openssl::sha::Sha256;
use serde::Serialize;

use super::{BlobId, BlobStore, Store, StoreError};

/// What a migration did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MigrateReport {
    /// Blobs some record refers to.
    pub referenced: u64,
    /// Copied now.
    pub copied: u64,
    /// Found on the target already (and read back right).
    pub present: u64,
    /// Bytes of the referenced blobs.
    pub bytes: u64,
}

/// The SHA-256 of everything `r` yields, and its length.
fn hash_stream(mut r: impl Read) -> io::Result<(BlobId, u64)> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut n = 0u64;
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => {
                h.update(&buf[..k]);
                n += k as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((BlobId::from_digest(h.finish()), n))
}

/// Whether `target` holds `id` with the right bytes.
fn holds(target: &BlobStore, id: &BlobId) -> Result<Option<u64>, StoreError> {
    let r = match target.open_blob(id) {
        Ok(r) => r,
        Err(StoreError::BlobMissing(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    let (got, size) = hash_stream(r).map_err(|e| StoreError::Corrupt {
        what: format!("blob {id} on the target"),
        detail: e.to_string(),
    })?;
    Ok((got == *id).then_some(size))
}

/// Copies every referenced blob of `source` into `target` and checks each; `progress` is
/// called after each blob with the report so far.
pub fn copy_blobs(
    source: &Store,
    target: &BlobStore,
    mut progress: impl FnMut(&MigrateReport),
) -> Result<MigrateReport, StoreError> {
    let mut report = MigrateReport::default();
    for kv in source.trees().blobrefs.iter() {
        let (k, v) = kv?;
        if super::tx::be_u64(&v) == 0 {
            continue;
        }
        let id = BlobId::from_raw(&k)?;
        report.referenced += 1;
        if let Some(size) = holds(target, &id)? {
            report.present += 1;
            report.bytes += size;
            progress(&report);
            continue;
        }
        let mut from = source.blobs().open_blob(&id)?;
        let mut w = target.writer()?;
        let copied = io::copy(&mut from, &mut w).and_then(|n| w.flush().map(|()| n));
        let n = match copied {
            Ok(n) => n,
            Err(e) => {
                w.abort();
                return Err(StoreError::Corrupt {
                    what: format!("blob {id}"),
                    detail: format!("copying it: {e}"),
                });
            }
        };
        let blob = w.finish()?;
        if blob.id != id {
            return Err(StoreError::Corrupt {
                what: format!("blob {id} on the source"),
                detail: format!("its bytes hash to {}", blob.id),
            });
        }
        if holds(target, &id)?.is_none() {
            return Err(StoreError::Corrupt {
                what: format!("blob {id} on the target"),
                detail: "it does not read back as written".into(),
            });
        }
        report.copied += 1;
        report.bytes += n;
        progress(&report);
    }
    Ok(report)
}

/// What a copy of the metadata did ([`copy_metadata`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MetadataReport {
    /// Trees copied (the derived-data cache is not: it is computed again).
    pub trees: u64,
    /// Entries copied, and the bytes of their keys and values.
    pub entries: u64,
    pub bytes: u64,
    /// The trace chain's head on both sides after the copy.
    pub trace_head: u64,
    /// The target held an earlier, interrupted copy of this same store, cleared first.
    pub cleared_earlier_copy: bool,
}

/// Entries written per write on the target.
const COPY_BATCH: usize = 1000;

/// In the target's `meta` tree while a copy is under way: the source's store id. A
/// target holding it is an interrupted copy of that store, cleared when the copy is run
/// again; without it, a target holding the same store id is a store that may have run
/// since, replaced only when asked.
pub(crate) const MIGRATING_KEY: &[u8] = b"migration_in_progress";

/// A tree's entries in key order.
type Entries<'a> = Box<dyn Iterator<Item = Result<(sled::IVec, sled::IVec), StoreError>> + 'a>;

/// The entries of the source's tree `name`: for the trace log, its records wherever they
/// are (the tree and the sealed segments), keyed by seq as in the tree; for its indexes,
/// each record's own entry, a sealed segment's groups and time span taken apart (the copied records
/// are in the target's tree, and its own sealing groups them again).
fn entries<'a>(trees: &'a super::Trees, tree: &'a super::kv::Tree, name: &str) -> Entries<'a> {
    if name == "trace" && trees.trace.sealed.is_some() {
        Box::new(trees.trace.records_in(1, u64::MAX).map(|kv| {
            kv.map(|(seq, v)| (sled::IVec::from(&crate::trace::log::seq_key(seq)[..]), v))
                .map_err(StoreError::from)
        }))
    } else if name == "trace_time" && trees.trace.sealed.is_some() {
        // Each record's own entry, the spans of sealed segments taken apart.
        let all = crate::trace::spans::TimeScan::quiescent(
            &trees.trace,
            [0; 16],
            crate::trace::spans::TIME_KEYS_END,
        );
        Box::new(all.map(|kv| {
            kv.map(|(k, _)| (sled::IVec::from(&k[..]), sled::IVec::default()))
                .map_err(StoreError::from)
        }))
    } else if name == "trace_keys" {
        use crate::trace::postings::{GROUP, entry_seqs, own_key};
        // Groups sort after the own entries (their tag has GROUP set); taken apart,
        // in their order, they come in own-key order, merged with the own entries.
        // The own entries of the unsealed records: in the tree (an older pecd's) and in
        // memory ([`crate::trace::tail`]).
        let own = tree
            .range(..[GROUP].as_slice())
            .map(|kv| kv.map_err(StoreError::from));
        let tail = trees
            .trace
            .tail
            .as_ref()
            .map(|t| t.keys())
            .unwrap_or_default();
        let own = super::kv::merge_sorted(
            own,
            tail.into_iter()
                .map(|k| Ok((sled::IVec::from(k), sled::IVec::default()))),
            |(k, _)| k.clone(),
        );
        // A group of a partly purged file names purged records, which are not copied.
        let floor = trees.trace.sealed.as_ref().map_or(0, |s| s.floor());
        let apart = tree.range([GROUP].as_slice()..).flat_map(move |kv| {
            let own = kv.map_err(StoreError::from).and_then(|(k, v)| {
                Ok(entry_seqs(&k, &v)?
                    .into_iter()
                    .filter(|s| *s > floor)
                    .map(|s| (sled::IVec::from(own_key(&k, s)), sled::IVec::default()))
                    .collect::<Vec<_>>())
            });
            match own {
                Ok(es) => es.into_iter().map(Ok).collect::<Vec<_>>(),
                Err(e) => vec![Err(e)],
            }
        });
        Box::new(super::kv::merge_sorted(own, apart, |(k, _)| k.clone()))
    } else {
        Box::new(tree.iter().map(|kv| kv.map_err(StoreError::from)))
    }
}

/// The SHA-256 of the entries of tree `name` in key order (length-prefixed keys and
/// values), without the migration marker and the start of the in-memory trace index.
fn tree_digest(name: &str, entries: Entries<'_>) -> Result<(u64, u64, [u8; 32]), StoreError> {
    let mut h = Sha256::new();
    let (mut n, mut bytes) = (0u64, 0u64);
    for kv in entries {
        let (k, v) = kv?;
        // The migration marker, and where the target's in-memory trace index starts
        // (its own, not the source's).
        if k.as_ref() == MIGRATING_KEY
            || (name == "trace_meta" && k.as_ref() == crate::trace::tail::FROM_KEY)
        {
            continue;
        }
        h.update(&(k.len() as u64).to_be_bytes());
        h.update(&k);
        h.update(&(v.len() as u64).to_be_bytes());
        h.update(&v);
        n += 1;
        bytes += (k.len() + v.len()) as u64;
    }
    Ok((n, bytes, h.finish()))
}

/// Copies the metadata of `source` (every tree: mailboxes, folders, messages, queue,
/// pending receipts, idempotency keys, change log, trace log and checkpoints, the store's
/// id) into the database `target` names, and checks the copy: per tree, the entries read
/// back from the target are counted and hashed and must equal the source's. The id
/// generator of the target is moved past every id the source gave out. The target must
/// be empty, or hold an interrupted copy of this same store (cleared first), or, with
/// `replace`, an older copy of this same store (e.g. the sled store a provider left for
/// PostgreSQL, on the way back); any other store there is refused. The source is only
/// read, and must seal nothing meanwhile (opened with `trace_segment_records =
/// u64::MAX`, as `pecd store migrate` does); the target must not be in use (its lock is
/// taken).
pub fn copy_metadata(
    source: &Store,
    target_dir: &std::path::Path,
    target: &super::StoreOptions,
    replace: bool,
    mut progress: impl FnMut(&str, &MetadataReport),
) -> Result<MetadataReport, StoreError> {
    let src = &source.inner.db;
    // The conformance run on PostgreSQL puts the target where `Store::open` will look.
    #[cfg(test)]
    let target = &super::kv::pg::testing::backend_for(target_dir, target.clone())?;
    #[cfg(test)]
    let target = &super::kv::fjall::testing::backend_for(target.clone());
    // Two engines in one directory would share the trace log's sealed segments
    // (`<dir>/trace`), which the copy clears on the target.
    let same_dir =
        |a: &std::path::Path, b: &std::path::Path| match (a.canonicalize(), b.canonicalize()) {
            (Ok(a), Ok(b)) => a == b,
            _ => a == b,
        };
    if src.is_local() && target.backend.is_local() && same_dir(source.dir(), target_dir) {
        return Err(StoreError::Corrupt {
            what: "migration target".into(),
            detail: format!(
                "it is the source's own store.dir ({}): sled and fjall would share its sealed \
                 trace segments; migrate into another store.dir",
                target_dir.display()
            ),
        });
    }
    std::fs::create_dir_all(target_dir).map_err(super::io_err(target_dir))?;
    let dst = super::open_db(target_dir, target)?;
    let names: Vec<String> = src
        .tree_names()?
        .into_iter()
        .filter(|n| n != "derived")
        .collect();
    let mut report = MetadataReport::default();
    // What the target holds now.
    let meta = dst.open_tree("meta")?;
    let mut nonempty = false;
    for name in dst.tree_names()? {
        if name != "derived" && !dst.open_tree(&name)?.is_empty()? {
            nonempty = true;
        }
    }
    // Sealed trace segments are part of a sled or fjall store too.
    if target.backend.is_local()
        && crate::trace::segments::Segments::present(&target_dir.join("trace"))
    {
        nonempty = true;
    }
    let ours = |v: Option<sled::IVec>| v.is_some_and(|v| v.as_ref() == source.id().as_bytes());
    if nonempty {
        let interrupted = ours(meta.get(MIGRATING_KEY)?);
        match meta.get(super::STORE_ID_KEY)? {
            id if interrupted || (replace && ours(id.clone())) => {
                for name in dst.tree_names()? {
                    dst.open_tree(&name)?.clear()?;
                }
                report.cleared_earlier_copy = true;
            }
            id if ours(id.clone()) => {
                return Err(StoreError::Corrupt {
                    what: "migration target".into(),
                    detail: "it already holds this same store, which may have been in use since \
                             it was copied: to overwrite it with the source, run again with \
                             --replace"
                        .into(),
                });
            }
            other => {
                return Err(StoreError::Corrupt {
                    what: "migration target".into(),
                    detail: format!(
                        "it already holds another store ({}): migrate into an empty database \
                         or directory",
                        other.map_or("no store id".to_string(), |v| String::from_utf8_lossy(&v)
                            .into_owned())
                    ),
                });
            }
        }
    }
    // Marked first: an interruption from here on leaves a target known to be a copy.
    meta.insert(MIGRATING_KEY, source.id().as_bytes())?;
    // Every copied record gets its own entries in the target's `trace_keys`: a sled
    // target indexes in memory only what it appends after them ([`crate::trace::tail`]),
    // even when an interrupted copy is opened.
    let src_head = source.trace().head()?;
    dst.open_tree("trace_meta")?.insert(
        crate::trace::tail::FROM_KEY,
        &src_head.0.saturating_add(1).to_be_bytes(),
    )?;
    super::flush_durably(target_dir, &dst)?;
    // Sealed trace segments a sled or fjall target had (an earlier copy, or the store
    // replaced) would be taken for part of the copied log.
    if target.backend.is_local() {
        crate::trace::segments::Segments::clear(&target_dir.join("trace"))?;
    }
    for name in &names {
        let from = src.open_tree(name)?;
        let from = entries(&source.inner.trees, &from, name);
        let to = dst.open_tree(name)?;
        let mut batch = super::kv::Batch::default();
        let mut pending = 0;
        for kv in from {
            let (k, v) = kv?;
            if name == "trace_meta" && k.as_ref() == crate::trace::tail::FROM_KEY {
                continue;
            }
            report.entries += 1;
            report.bytes += (k.len() + v.len()) as u64;
            batch.insert(&k, &v);
            pending += 1;
            if pending == COPY_BATCH {
                to.apply_batch(std::mem::take(&mut batch))?;
                pending = 0;
                progress(name, &report);
            }
        }
        to.apply_batch(batch)?;
        report.trees += 1;
        progress(name, &report);
    }
    // Ids the source gave out are never given again by the target.
    let next = src.generate_id()?;
    dst.ensure_ids_above(next)?;
    super::flush_durably(target_dir, &dst)?;
    // Read back and compared, tree by tree.
    for name in &names {
        let (from, to) = (src.open_tree(name)?, dst.open_tree(name)?);
        let (a, b) = (
            tree_digest(name, entries(&source.inner.trees, &from, name))?,
            tree_digest(
                name,
                Box::new(to.iter().map(|kv| kv.map_err(StoreError::from))),
            )?,
        );
        if a != b {
            return Err(StoreError::Corrupt {
                what: format!("the copy of tree {name}"),
                detail: format!(
                    "{} entries ({} bytes) on the source, {} ({} bytes) read back from the target, \
                     or different contents",
                    a.0, a.1, b.0, b.1
                ),
            });
        }
    }
    let dst_head =
        crate::trace::TraceLog::new(crate::trace::log::TraceTrees::open(&dst)?).head()?;
    if src_head != dst_head {
        return Err(StoreError::Corrupt {
            what: "the copy of the trace log".into(),
            detail: format!("head {src_head:?} on the source, {dst_head:?} on the target"),
        });
    }
    report.trace_head = dst_head.0;
    meta.remove(MIGRATING_KEY)?;
    super::flush_durably(target_dir, &dst)?;
    Ok(report)
}
