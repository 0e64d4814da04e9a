//! A group's consecutive batches applied in **one** transaction, where a transaction
//! costs more than its writes.
//!
//! sled (0.34) starts every multi-tree transaction by writing out its current log buffer,
//! and again once the transaction's place in the log is reserved: two writes, each
//! followed by a `sync_file_range` that waits for the disk, whatever the transaction
//! holds. One transaction per batch made that 17 log writes per message in the
//! two-provider benchmark, for about one and a third flushes. So the committer expands
//! the batches of a run one after the other, carrying what each expansion plans for the
//! next ones (the archives' room: what they would otherwise read from the trees once the
//! batch before was committed), and applies them in one transaction, in order, each with
//! its own modseq step and change log entry, as if one after the other.
//!
//! Only batches of what the pipeline commits for each message go together: claims,
//! deliveries, trace records, the queue, pending receipts, archive copies, quota notices.
//! Anything else (a mailbox added or changed, a folder or a card, flags) goes alone,
//! because an expansion after it would read, from the trees as committed, what it changes
//! (the planner reads the mailbox's archive quota, a deletion enumerates messages). So
//! does a run with an archive copy dated before the retention period: a later copy
//! could drop it, and the planner only sees copies already committed.
//!
//! Each batch still succeeds or fails alone: when one is refused (its expansion fails, or
//! it aborts inside the transaction, such as a repeated idempotency claim), nothing of the
//! combined transaction was written; the batches before it are applied together again,
//! it alone, and the ones after it together, each expansion made anew (ids allocated by
//! the first attempt are skipped). On PostgreSQL a transaction only adds its writes to the
//! group's SQL transaction, at no cost of its own: each batch is applied alone there, as
//! before.
//!
//! Distrusts nothing: batches come from pecd's own callers.

use std::cell::Cell;

use jiff::{SignedDuration, Timestamp};

use super::super::archive::retention_cutoff;
use super::super::batch::{Applied, Batch, Op};
use super::super::tx::Tx;
use super::super::{MailboxChange, StoreError};
use super::{Committer, Expansion, Reply, apply_expanded, mailbox_changes, report};

impl Committer {
    /// Applies `run` and queues each caller's answer; whether anything was written.
    pub(super) fn apply_run(
        &mut self,
        run: Vec<(Batch, Reply)>,
        answers: &mut Vec<(Reply, Result<Applied, StoreError>)>,
        changed: &mut Vec<MailboxChange>,
    ) -> bool {
        let touched: Vec<Vec<MailboxChange>> =
            run.iter().map(|(b, _)| mailbox_changes(b)).collect();
        let (batches, replies): (Vec<Batch>, Vec<Reply>) = run.into_iter().unzip();
        let results = self.apply_together(batches);
        let mut wrote = false;
        for ((reply, r), touched) in replies.into_iter().zip(results).zip(touched) {
            if r.is_ok() {
                changed.extend(touched);
                wrote = true;
            }
            answers.push((reply, r));
        }
        wrote
    }

    /// One result per batch, in order.
    fn apply_together(&mut self, batches: Vec<Batch>) -> Vec<Result<Applied, StoreError>> {
        // Each expansion reads the clock again, a little later: a minute's margin keeps
        // every copy of the run inside the period its planner sees.
        let now = self.clock.now();
        let cutoff = retention_cutoff(
            &self.archive,
            now.checked_add(SignedDuration::from_mins(1)).unwrap_or(now),
        );
        if batches.len() < 2
            || !self.db.transaction_costs_log_writes()
            || !batches.iter().all(|b| goes_with_others(b, cutoff))
            || self.reload_head().is_err()
        {
            // (When the head cannot be read, each batch tries again and fails with it.)
            return self.one_at_a_time(batches);
        }
        let mut shared = Expansion::default();
        let mut expanded = Vec::with_capacity(batches.len());
        for (i, b) in batches.iter().enumerate() {
            let now = self.clock.now();
            match self.expand(b.ops.clone(), now, &mut shared) {
                Ok(ops) => expanded.push((ops, now)),
                Err(_) => return self.around(batches, i),
            }
        }
        let head = &self.head;
        let refused = Cell::new(None);
        let tail = self.trees.trace.tail.as_deref();
        let floors = &*self.trees.queue_floors;
        let res = self.db.transaction(&self.all, |t| {
            let tx = Tx {
                t,
                tail,
                floors: Some(floors),
            };
            let mut head = head.clone();
            let mut applied = Vec::with_capacity(expanded.len());
            for (i, (ops, now)) in expanded.iter().enumerate() {
                refused.set(Some(i));
                applied.push(apply_expanded(&tx, ops, *now, &mut head)?);
            }
            refused.set(None);
            Ok((applied, head))
        });
        match res {
            Ok((applied, head)) => {
                self.head = head;
                self.dirty = true;
                #[cfg(test)]
                let n = applied.len();
                applied
                    .into_iter()
                    .zip(&expanded)
                    .map(|(a, (ops, _))| {
                        report(&a, ops);
                        #[cfg(test)]
                        let a = Applied { together: n, ..a };
                        Ok(a)
                    })
                    .collect()
            }
            Err(_) => {
                // Nothing was written.
                self.forget_uncommitted();
                match refused.get() {
                    Some(i) => self.around(batches, i),
                    None => self.one_at_a_time(batches),
                }
            }
        }
    }

    /// The batches before `i` together, batch `i` alone, the ones after it together: as
    /// one after the other, where batch `i` was refused among them.
    fn around(&mut self, mut batches: Vec<Batch>, i: usize) -> Vec<Result<Applied, StoreError>> {
        let after = batches.split_off(i + 1);
        let Some(alone) = batches.pop() else {
            return self.one_at_a_time(after);
        };
        let mut out = self.apply_together(batches);
        out.push(self.apply(alone));
        out.extend(self.apply_together(after));
        out
    }

    fn one_at_a_time(&mut self, batches: Vec<Batch>) -> Vec<Result<Applied, StoreError>> {
        batches.into_iter().map(|b| self.apply(b)).collect()
    }
}

/// Whether `batch` holds only what the pipeline commits per message, with no archive
/// copy that a later copy could drop (made before `cutoff`).
fn goes_with_others(batch: &Batch, cutoff: Timestamp) -> bool {
    batch.ops.iter().all(|op| match op {
        Op::Deliver(d) => !d.archive || d.internal_date >= cutoff,
        Op::ArchiveCopy(c) => c.internal_date >= cutoff,
        Op::Claim(_)
        | Op::Trace(_)
        | Op::Enqueue(_)
        | Op::QueueRetry { .. }
        | Op::QueueDone { .. }
        | Op::QueueLease { .. }
        | Op::QueueFence { .. }
        | Op::PendingPut(_)
        | Op::PendingMessage(..)
        | Op::PendingTakenInCharge { .. }
        | Op::PendingNotice12h { .. }
        | Op::PendingResolve { .. }
        | Op::QuotaNotice { .. }
        | Op::ArchiveNotice { .. } => true,
        _ => false,
    })
}

#[cfg(test)]
#[path = "together/tests.rs"]
mod tests;
