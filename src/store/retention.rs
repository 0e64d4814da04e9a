//! Retention of the trace log (rules digest §9: 30 months, kept unmodified).
//!
//! [`Store::purge_expired`] removes records only **up to a signed checkpoint** all of
//! whose records are past the retention. That checkpoint becomes the *anchor*: stored
//! first (with a `Purged` record appended at the head, in one commit), so the chain
//! stays verifiable from the anchor on; the records and index entries at or below it are
//! then removed in chunks. On sled, records already sealed into files
//! ([`crate::trace::segments`]) are not rewritten: the chunks store how far they got
//! (the purge floor), nothing at or below it is read again, and a file is deleted once
//! everything in it is at or below the floor (up to one segment's worth of records stays
//! on disk past the retention until then). An interrupted purge (crash) is finished by the next call;
//! meanwhile the walk (export, verify) ignores anything at or below the anchor, and a
//! query skips such a record once the record before it is gone (its `prev_hash` is no
//! longer known: [`crate::trace::stored`]).

use jiff::Timestamp;
use serde::Serialize;

use super::batch::{Batch, Op};
use super::tx::{CHECKPOINTS, T_KEYS, T_TIME, TRACE, TRACE_META, index_tree};
use super::{Store, StoreError};
use crate::trace::TraceLog;
use crate::trace::log::seq_key;
use crate::trace::retention::PURGED_KEY;

/// Records removed per commit during a purge.
const PURGE_CHUNK: usize = 5_000;

#[cfg(test)]
thread_local! {
    /// Run by a purge on this thread between reading a step's records and committing
    /// the step: where a seal running beside the purge is simulated.
    pub(crate) static BEFORE_PURGE_COMMIT: std::cell::RefCell<Option<Box<dyn FnMut()>>> =
        std::cell::RefCell::new(None);
}

/// What a purge did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PurgeReport {
    /// The anchor checkpoint seq after the purge (None: nothing was ever purged).
    pub anchor: Option<u64>,
    pub records_removed: u64,
    pub checkpoints_removed: u64,
}

impl Store {
    /// Purges trace records older than `now - retention_months` (the option), up to the
    /// newest eligible checkpoint. Call periodically (e.g. daily).
    pub fn purge_expired(&self, now: Timestamp) -> Result<PurgeReport, StoreError> {
        let log = self.trace();
        if let Some(target) = log.purge_target(now, self.options().retention_months)? {
            let ev = TraceLog::purge_event(&target, self.options().retention_months, now);
            self.commit(Batch::new().push(Op::SetAnchor(target)).trace(ev))?;
        }
        let Some(anchor) = log.anchor()? else {
            return Ok(PurgeReport::default());
        };
        let mut report = PurgeReport {
            anchor: Some(anchor.seq),
            ..Default::default()
        };
        loop {
            let chunk = log.purge_chunk(anchor.seq, PURGE_CHUNK)?;
            let cps = log.checkpoints_below(anchor.seq, PURGE_CHUNK)?;
            if chunk.is_empty() && cps.is_empty() {
                break;
            }
            let mut b = Batch::new();
            for (seq, keys) in &chunk {
                b = b.push(Op::Raw {
                    tree: TRACE,
                    key: seq_key(*seq).to_vec(),
                    value: None,
                });
                for (index, key) in keys {
                    b = b.push(Op::Raw {
                        tree: index_tree(*index),
                        key: key.clone(),
                        value: None,
                    });
                }
            }
            // With sealed segments, whose files are not changed, this is what says which
            // records are purged.
            if let Some((last, _)) = chunk.last() {
                b = b.push(purged_op(*last));
            }
            for seq in &cps {
                b = b.push(Op::Raw {
                    tree: CHECKPOINTS,
                    key: seq_key(*seq).to_vec(),
                    value: None,
                });
            }
            #[cfg(test)]
            BEFORE_PURGE_COMMIT.with(|h| {
                if let Some(f) = h.borrow_mut().as_mut() {
                    f();
                }
            });
            self.commit(b)?;
            if let Some((last, _)) = chunk.last() {
                if let Some(tail) = &log.trees.tail {
                    tail.drop_through(*last);
                }
                self.remove_groups_left(&log, *last)?;
                log.purge_sealed_through(*last)?;
            }
            report.records_removed += chunk.len() as u64;
            report.checkpoints_removed += cps.len() as u64;
        }
        // Everything up to the anchor is gone (a sealed slot may have been empty): the
        // files holding nothing later can go.
        if log.purged_floor() < anchor.seq && log.trees.sealed.is_some() {
            self.commit(Batch::new().push(purged_op(anchor.seq)))?;
            self.remove_groups_left(&log, anchor.seq)?;
            log.purge_sealed_through(anchor.seq)?;
        } else {
            // A file sealed while the last purge ran may hold nothing above the floor.
            self.remove_groups_left(&log, log.purged_floor())?;
            log.purge_sealed_through(log.purged_floor())?;
        }
        Ok(report)
    }

    /// Before the sealed files holding nothing above `floor` are deleted: removes the
    /// index groups and time span of any of them that still has its span. A purge step
    /// removes them with the file's records ([`TraceLog::purge_chunk`]), unless the file
    /// was named after the step read those records from the tree (a seal running beside
    /// the purge): the committer then grouped their entries before the step's commit
    /// removed the records, and they would outlive the file.
    fn remove_groups_left(&self, log: &TraceLog, floor: u64) -> Result<(), StoreError> {
        let Some(sealed) = &log.trees.sealed else {
            return Ok(());
        };
        let mut b = Batch::new();
        let mut any = false;
        for (first, last) in sealed.files() {
            if last > floor {
                break;
            }
            let span = crate::trace::spans::span_key(first);
            if log.trees.by_time.get(&span)?.is_none() {
                continue;
            }
            let records = sealed.whole_file(first)?;
            for key in crate::trace::postings::group_keys(first, &records)? {
                b = b.push(Op::Raw {
                    tree: T_KEYS,
                    key,
                    value: None,
                });
            }
            b = b.push(Op::Raw {
                tree: T_TIME,
                key: span,
                value: None,
            });
            any = true;
        }
        if any {
            self.commit(b)?;
        }
        Ok(())
    }
}

/// Stores the purge floor of the sealed segments ([`PURGED_KEY`]).
fn purged_op(seq: u64) -> Op {
    Op::Raw {
        tree: TRACE_META,
        key: PURGED_KEY.to_vec(),
        value: Some(seq.to_be_bytes().to_vec()),
    }
}
