//! The committer's side of trace checkpoints: asking the signing thread for one when
//! `checkpoint_every` records or `checkpoint_interval` have passed, storing what it
//! signed (only if it still links to the last checkpoint stored), and `checkpoint_now`.
//! It trusts nothing from outside the process: the heads it signs are its own.

use super::{Batch, Committer, Op, SignRequest};
use crate::store::StoreError;
use crate::trace::verify::ExportLine;
use crate::trace::{Checkpoint, EventKind, TraceEvent, TraceLog};

impl Committer {
    /// Stores checkpoints the signing thread finished; `wait` blocks for one in flight.
    pub(super) fn store_signed(&mut self, wait: bool) -> bool {
        let mut wrote = false;
        loop {
            let next = if wait && self.in_flight {
                self.signed_rx.recv().map_err(|_| ())
            } else {
                self.signed_rx.try_recv().map_err(|_| ())
            };
            let Ok(res) = next else { return wrote };
            self.in_flight = false;
            match res {
                // A group lost since the request (PostgreSQL rolls a failed group back)
                // may have taken the signed record with it: sign again later instead.
                Ok(cp) if !self.still_in_chain(&cp) => {
                    tracing::warn!(
                        seq = cp.seq,
                        "a signed checkpoint's record was rolled back: not stored"
                    );
                    self.last_cp.0 = self.cp_floor;
                }
                // Another writer stored a checkpoint since this one was asked for (the
                // group read it): this one would not link to it, and is not needed.
                Ok(cp) if self.several && (cp.prev != self.last_cp.0 || cp.seq <= cp.prev) => {
                    tracing::debug!(
                        seq = cp.seq,
                        "another node stored a checkpoint meanwhile: this one is dropped"
                    );
                }
                Ok(cp) => match self.store_checkpoint(cp) {
                    Ok(()) => wrote = true,
                    Err(e) => tracing::error!(error = %e, "storing a trace checkpoint failed"),
                },
                Err(e) => tracing::error!(error = %e, "signing a trace checkpoint failed"),
            }
        }
    }

    /// Whether the record `cp` signs is still the chain's record at its seq.
    pub(super) fn still_in_chain(&mut self, cp: &Checkpoint) -> bool {
        if self.reload_head().is_err() {
            return false;
        }
        if !self.db.flush_failure_loses_writes() {
            return true;
        }
        TraceLog::new(self.trees.trace.clone())
            .get(cp.seq)
            .is_ok_and(|r| r.is_some_and(|r| r.hash == cp.head_hash))
    }

    pub(super) fn maybe_request_checkpoint(&mut self) {
        let Some(tx) = &self.sign_tx else { return };
        if self.in_flight || self.head_stale || self.head.0 <= self.cp_floor {
            return;
        }
        let now = self.clock.now();
        let elapsed = now.duration_since(self.last_cp.1).unsigned_abs();
        if self.head.0 - self.cp_floor < self.every && elapsed < self.interval {
            return;
        }
        let req = SignRequest {
            seq: self.head.0,
            hash: self.head.1.clone(),
            prev: self.last_cp.0,
        };
        if tx.try_send(req).is_ok() {
            self.in_flight = true;
            self.last_cp = (self.head.0, now);
        }
    }

    pub(super) fn checkpoint_now(&mut self) -> Result<Option<Checkpoint>, StoreError> {
        self.store_signed(true);
        self.reload_head()?;
        let Some(signer) = self.signer.clone() else {
            return Ok(None);
        };
        if self.head.0 <= self.cp_floor {
            return Ok(None);
        }
        let now = self.clock.now();
        let cp = Checkpoint::sign(&signer, self.head.0, &self.head.1, now, self.last_cp.0)
            .map_err(|e| StoreError::Signing(e.to_string()))?;
        self.last_cp = (cp.seq, now);
        self.store_checkpoint(cp.clone())?;
        Ok(Some(cp))
    }

    /// Stores a signed checkpoint together with the chain record that binds its exact
    /// bytes (see [`crate::trace::EventKind::Checkpoint`]).
    pub(super) fn store_checkpoint(&mut self, cp: Checkpoint) -> Result<(), StoreError> {
        let line = ExportLine::Checkpoint(cp.clone()).to_line();
        let mut ev = TraceEvent::new(EventKind::Checkpoint, cp.time)
            .detail(format!("signed checkpoint of seq {} stored", cp.seq))
            .message_bytes(&line);
        ev.related.push(format!("checkpoint:{}", cp.seq));
        let covered_everything = cp.seq == self.head.0;
        let (cp_seq, cp_time) = (cp.seq, cp.time);
        self.apply(Batch::new().push(Op::Checkpoint(cp)).trace(ev))?;
        // The next checkpoint links to this one.
        self.last_cp = (cp_seq, cp_time);
        // Records appended while the checkpoint was being signed (between its seq and the
        // checkpoint record) are not covered: keep the floor at its seq so the next
        // checkpoint signs them. Only when it covered the whole chain is the new head (its
        // own chain record) considered covered.
        self.cp_floor = if covered_everything {
            self.head.0
        } else {
            cp_seq
        };
        Ok(())
    }
}
