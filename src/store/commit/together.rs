//! A group's consecutive batches applied in **one** transaction, where a transaction
//! costs more than its writes.
//!
//! sled (0.34) starts every multi-tree transaction by writing out its current log buffer,
//! and again once the transaction's place in the log is reserved: two writes, each
//! followed by a `sync_file_range` that waits for the disk, whatever the transaction
//! holds. One transaction per batch made that 17 log writes per message in the
//! two-provider benchmark, for about two flushes. So the committer expands the batches
//! of a run one after the other, carrying what each expansion plans for the next ones
//! (the archives' usage, the cards added: what they would otherwise read from the trees
//! once the batch before was committed), and applies them in one transaction, in order,
//! each with its own modseq step and change log entry, as if one after the other.
//!
//! Each batch still succeeds or fails alone: when one is refused (an expansion error, or
//! an abort inside the transaction, such as a repeated idempotency claim), nothing of the
//! combined transaction was written, and every batch of the run is applied again alone,
//! from its operations as they came (ids allocated by the first attempt are skipped).
//! A batch whose expansion scans what earlier batches may write (deleting a mailbox or a
//! folder enumerates their messages) makes its run go one batch at a time. On PostgreSQL
//! a transaction only adds its writes to the group's SQL transaction, at no cost of its
//! own: each batch is applied alone there, as before.
//!
//! Distrusts nothing: batches come from pecd's own callers.

use super::super::batch::{Applied, Batch, Op};
use super::super::tx::Tx;
use super::super::{MailboxChange, StoreError};
use super::{Committer, Expansion, Reply, apply_expanded, mailbox_changes, report};

/// Batches applied in a transaction shared with others, in this process (tests).
#[cfg(test)]
pub(crate) static TOGETHER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

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
        if batches.len() < 2
            || !self.db.transaction_costs_log_writes()
            || batches.iter().any(scans_what_others_write)
        {
            return self.one_at_a_time(batches);
        }
        if self.reload_head().is_err() {
            // Each batch reads the head again, and fails with the error.
            return self.one_at_a_time(batches);
        }
        let originals: Vec<Batch> = batches.clone();
        let now = self.clock.now();
        let mut shared = Expansion::default();
        let mut expanded = Vec::with_capacity(batches.len());
        for b in batches {
            match self.expand(b.ops, now, &mut shared) {
                Ok(ops) => expanded.push(ops),
                Err(_) => return self.one_at_a_time(originals),
            }
        }
        let head = &self.head;
        let res = self.db.transaction(&self.all, |t| {
            let tx = Tx { t };
            let mut head = head.clone();
            let mut applied = Vec::with_capacity(expanded.len());
            for ops in &expanded {
                applied.push(apply_expanded(&tx, ops, now, &mut head)?);
            }
            Ok((applied, head))
        });
        match res {
            Ok((applied, head)) => {
                self.head = head;
                self.dirty = true;
                #[cfg(test)]
                TOGETHER.fetch_add(applied.len() as u64, std::sync::atomic::Ordering::Relaxed);
                for (a, ops) in applied.iter().zip(&expanded) {
                    report(a, ops);
                }
                applied.into_iter().map(Ok).collect()
            }
            // Nothing was written: each batch alone, as if never tried together.
            Err(_) => self.one_at_a_time(originals),
        }
    }

    fn one_at_a_time(&mut self, batches: Vec<Batch>) -> Vec<Result<Applied, StoreError>> {
        batches.into_iter().map(|b| self.apply(b)).collect()
    }
}

/// Whether expanding `batch` enumerates what another batch of the same transaction may
/// have written before it (a mailbox's or a folder's messages).
fn scans_what_others_write(batch: &Batch) -> bool {
    batch
        .ops
        .iter()
        .any(|op| matches!(op, Op::MailboxDelete(_) | Op::FolderDelete { .. }))
}

#[cfg(test)]
#[path = "together/tests.rs"]
mod tests;
