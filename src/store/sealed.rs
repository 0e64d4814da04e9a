//! Opening the trace log's sealed segments on a sled store ([`crate::trace::segments`]):
//! the checks that the database and the files belong together, done before anything is
//! written, then the removal from the tree of what a seal cut short by a crash left in
//! both places. What it distrusts: the files and the database it finds (restored from
//! different moments, or from different stores).

use std::path::Path;

use super::kv::Db;
use super::{Checkpoint, StoreError, Trees};

/// Opens the sealed segments of the trace log (`<dir>/trace`, sled stores) and removes
/// from the `trace` tree what a seal interrupted by a crash left there: records already in
/// a file, which must be the same bytes. Refuses, before changing anything, files and a
/// tree that do not continue each other (a database restored without its files, files
/// from another store, a file lost).
pub(super) fn open(
    dir: &Path,
    db: &Db,
    trees: &Trees,
) -> Result<crate::trace::segments::Segments, StoreError> {
    use crate::trace::log::{ANCHOR_KEY, seq_key, seq_of_index_key};
    let meta_u64 = |what: &str, v: Option<sled::IVec>| -> Result<u64, StoreError> {
        match v {
            Some(v) => Ok(u64::from_be_bytes(v.as_ref().try_into().map_err(|_| {
                StoreError::Corrupt {
                    what: what.into(),
                    detail: hex::encode(&v),
                }
            })?)),
            None => Ok(0),
        }
    };
    let floor = meta_u64(
        "trace purge floor",
        trees.trace.meta.get(crate::trace::retention::PURGED_KEY)?,
    )?;
    let anchor = match trees.trace.meta.get(ANCHOR_KEY)? {
        Some(v) => crate::trace::log::decode::<Checkpoint>(ANCHOR_KEY, &v)?.seq,
        None => 0,
    };
    let path = dir.join("trace");
    let sealed = crate::trace::segments::Segments::open(&path, floor)?;
    let refuse = |detail: String| StoreError::Corrupt {
        what: "trace log".into(),
        detail: format!(
            "{detail}: the database and the sealed segments in {} are not from the same moment \
             of one store (restore both from one backup)",
            path.display()
        ),
    };
    let upto = sealed.upto();
    if upto > 0 {
        // The files start where the log (after purges) starts...
        let start = floor.max(anchor) + 1;
        if let Some(first) = sealed.first_seq()
            && first > start
        {
            return Err(refuse(format!(
                "the first sealed segment starts at record {first}, the log at {start}"
            )));
        }
        // ... and the tree goes on where they end: the committer seals only when later
        // records are durable, and a purge never reaches the head.
        let next = trees
            .trace
            .records
            .range(seq_key(upto.saturating_add(1))..)
            .next()
            .transpose()?
            .and_then(|(k, _)| seq_of_index_key(&k));
        if next != Some(upto + 1) {
            return Err(refuse(format!(
                "the sealed segments end at record {upto} but the database's records after it {}",
                next.map_or("are none".to_string(), |n| format!("start at {n}"))
            )));
        }
    }
    // What a seal cut short by a crash left in the tree is the same bytes as the file's.
    let mut dup = 0;
    for kv in trees.trace.records.range(..=seq_key(upto)) {
        let (k, v) = kv?;
        let Some(seq) = seq_of_index_key(&k) else {
            continue;
        };
        if seq > floor && sealed.get(seq)?.as_deref() != Some(v.as_ref()) {
            return Err(refuse(format!(
                "record {seq} in the database is not in the sealed segment that holds its seq, \
                 or with other bytes"
            )));
        }
        dup += 1;
    }
    // Checked: now the writes.
    sealed.purge_through(floor)?;
    if dup > 0 {
        // Their index entries grouped, as the committer would have.
        let mut by_file: std::collections::BTreeMap<(u64, u64), Vec<(u64, sled::IVec)>> =
            Default::default();
        for kv in trees.trace.records.range(..=seq_key(upto)) {
            let (k, v) = kv?;
            if let Some(seq) = seq_of_index_key(&k).filter(|s| *s > floor)
                && let Some(bounds) = sealed.bounds_of(seq)
            {
                by_file.entry(bounds).or_default().push((seq, v));
            }
        }
        for ((first, last), records) in by_file {
            crate::trace::postings::group_segment(&trees.trace, first, last, &records)?;
        }
        loop {
            let mut batch = super::kv::Batch::default();
            let mut n = 0;
            for k in trees
                .trace
                .records
                .range(..=seq_key(upto))
                .keys()
                .take(10_000)
            {
                batch.remove(k?);
                n += 1;
            }
            if n == 0 {
                break;
            }
            trees.trace.records.apply_batch(batch)?;
        }
        super::flush_durably(dir, db)?;
        tracing::info!(
            records = dup,
            "trace records already sealed removed from the tree (a seal was interrupted)"
        );
    }
    Ok(sealed)
}

/// The schema-8 step of a store sealed by schema 7: the index entries of every sealed
/// file's records grouped ([`crate::trace::postings`], [`crate::trace::spans`]), a file
/// at a time. Returns the files done. Idempotent.
pub(super) fn group_index_entries(trees: &Trees) -> Result<u64, StoreError> {
    let Some(sealed) = &trees.trace.sealed else {
        return Ok(0);
    };
    let mut n = 0;
    for (first, last) in sealed.files() {
        let records = sealed.read_from(first, last)?;
        crate::trace::postings::group_segment(&trees.trace, first, last, &records)?;
        n += 1;
    }
    Ok(n)
}

/// The in-memory index of the records in the `trace` tree after the sealed ones and from
/// `trace_meta`'s `tail_from` ([`crate::trace::tail`]); none on a store without sealed
/// segments (PostgreSQL).
pub(super) fn index_unsealed(
    trees: &Trees,
) -> Result<Option<crate::trace::tail::Tail>, StoreError> {
    let Some(sealed) = &trees.trace.sealed else {
        return Ok(None);
    };
    let from = match trees.trace.meta.get(crate::trace::tail::FROM_KEY)? {
        Some(v) => super::tx::be_u64(&v),
        None => 1,
    };
    let from = crate::trace::log::seq_key(sealed.upto().saturating_add(1).max(from));
    let records = trees.trace.records.range(from..).filter_map(|kv| match kv {
        Ok((k, v)) => crate::trace::log::seq_of_index_key(&k).map(|seq| Ok((seq, v))),
        Err(e) => Some(Err(e.into())),
    });
    let tail = crate::trace::tail::Tail::build(records)?;
    tracing::debug!(
        records = tail.records(),
        "trace index of the unsealed records built"
    );
    Ok(Some(tail))
}
