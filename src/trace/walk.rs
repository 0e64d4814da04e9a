//! The walk of the trace log in export order (anchor, records, checkpoints), bounded at
//! the head as it was when the walk started, and what is built on it: the JSON Lines
//! export ending with a signed trailer, and the verification of the live log.
//!
//! It only reads the trace trees (through [`TraceLog`]); it does not own the tree layout
//! or queries ([`super::log`]), the chain rules ([`super::verify`]) or retention
//! ([`super::retention`]), and must not write anything.

use std::io::Write;

use jiff::Timestamp;

use super::GENESIS_HASH;
use super::checkpoint::{ExportTrailer, TrustedSigners};
use super::log::{TraceError, TraceLog, decode, seq_key, seq_of_index_key};
use super::verify::{ChainVerifier, ExportLine, VerifyProblem, VerifyReport};

impl TraceLog {
    /// Walks the log in export order: the anchor (if any), then each record followed by
    /// the checkpoint of its seq (if any). Records and checkpoints at or below the anchor
    /// (left by an interrupted purge) are skipped. Returns the end of the walk: the
    /// `(seq, hash)` of the last record walked (or of the anchor, or genesis).
    ///
    /// The walk stops at the head as it was when the walk started: the committer keeps
    /// appending while a live log is exported or verified, and stores each checkpoint
    /// together with a later record binding it. Without the bound, a walk could meet that
    /// binding record but not the checkpoint (its iterator already exhausted) and report a
    /// deleted checkpoint. Every checkpoint at or below the captured head whose binding
    /// record is at or below it too was stored before the walk started, so it is seen; one
    /// stored during the walk may be seen or not, and either way its binding record is
    /// beyond the bound.
    pub fn walk(
        &self,
        mut f: impl FnMut(ExportLine) -> Result<bool, TraceError>,
    ) -> Result<(u64, String), TraceError> {
        let anchor = self.anchor()?;
        let floor = anchor.as_ref().map_or(0, |a| a.seq);
        let mut end = match &anchor {
            Some(a) => (a.seq, a.head_hash.clone()),
            None => (0, GENESIS_HASH.to_string()),
        };
        let (head, _) = self.head()?;
        if let Some(a) = anchor
            && !f(ExportLine::Checkpoint(a))?
        {
            return Ok(end);
        }
        if head <= floor {
            return Ok(end);
        }
        let bound = seq_key(floor + 1)..=seq_key(head);
        let mut cps = self.trees.checkpoints.range(bound).peekable();
        for kv in self.trees.records_in(floor + 1, head) {
            let (seq, v) = kv?;
            let k = seq_key(seq);
            // A record stored without its prev_hash gets the hash of the one walked
            // before it (or of the anchor, or genesis); a gap before it is reported by
            // the verifier as a gap.
            let r = super::stored::decode(&k, &v)?.chained(&end.1);
            let seq = r.seq;
            let hash = r.hash.clone();
            if !f(ExportLine::Record(r))? {
                return Ok(end);
            }
            end = (seq, hash);
            while let Some(Ok((ck, _))) = cps.peek() {
                let Some(cseq) = seq_of_index_key(ck) else {
                    break;
                };
                if cseq > seq {
                    break;
                }
                let (ck, cv) = cps.next().transpose()?.ok_or_else(|| TraceError::Corrupt {
                    key: "checkpoints".into(),
                    detail: "vanished during the walk".into(),
                })?;
                if cseq == seq && !f(ExportLine::Checkpoint(decode(&ck, &cv)?))? {
                    return Ok(end);
                }
            }
        }
        Ok(end)
    }

    /// Writes the log as JSON Lines, up to the head as it was when the export started,
    /// ending with a trailer signed over exactly that last record; returns the number of
    /// lines, trailer included.
    pub fn export(&self, mut w: impl Write) -> Result<u64, TraceError> {
        let signer = self.signer.clone().ok_or(TraceError::NoSigner)?;
        let mut n = 0;
        let (end_seq, end_hash) = self.walk(|line| {
            w.write_all(&line.to_line())?;
            w.write_all(b"\n")?;
            n += 1;
            Ok(true)
        })?;
        let trailer = ExportTrailer::sign(&signer, end_seq, &end_hash, Timestamp::now())
            .map_err(|e| TraceError::Signing(e.to_string()))?;
        w.write_all(&ExportLine::Trailer(trailer).to_line())?;
        w.write_all(b"\n")?;
        w.flush()?;
        Ok(n + 1)
    }

    /// Verifies the live log (same rules as an export, without the trailer).
    /// Like an export, it stops at the head as it was when it started.
    pub fn verify(&self, trusted: impl Into<TrustedSigners>) -> Result<VerifyReport, TraceError> {
        self.verify_observed(trusted, |_| ())
    }

    /// [`TraceLog::verify`], calling `seen` after each line is checked (the tests append
    /// to the log there).
    fn verify_observed(
        &self,
        trusted: impl Into<TrustedSigners>,
        mut seen: impl FnMut(&ExportLine),
    ) -> Result<VerifyReport, TraceError> {
        let mut v = ChainVerifier::new(trusted);
        self.walk(|line| {
            seen(&line);
            let res = match &line {
                ExportLine::Record(r) => v.record(None, r),
                ExportLine::Checkpoint(c) => v.checkpoint(None, c),
                ExportLine::Trailer(_) => Err(VerifyProblem {
                    line: None,
                    seq: None,
                    message: "a trailer inside the live log".into(),
                }),
            };
            match res {
                Ok(()) => Ok(true),
                Err(p) => {
                    v.set_problem(p);
                    Ok(false)
                }
            }
        })?;
        Ok(v.finish())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use jiff::Timestamp;

    use crate::clock::ManualClock;
    use crate::store::{Batch, Store, StoreOptions};
    use crate::trace::checkpoint::{cert_sha256, tests::test_signer};
    use crate::trace::log::TraceError;
    use crate::trace::verify::verify_export;
    use crate::trace::{EventKind, TraceEvent};

    pub(crate) fn t0() -> Timestamp {
        "2023-01-15T09:00:00Z".parse().unwrap()
    }

    /// A store signing checkpoints only on demand.
    pub(crate) fn store(dir: &std::path::Path) -> (Store, String) {
        let signer = Arc::new(test_signer("provider"));
        let me = cert_sha256(signer.certificate());
        let o = StoreOptions {
            clock: Arc::new(ManualClock::new(t0())),
            signer: Some(signer),
            checkpoint_every: 1_000_000,
            checkpoint_interval: std::time::Duration::from_secs(1_000_000),
            ..StoreOptions::default()
        };
        (Store::open(dir, o).unwrap(), me)
    }

    pub(crate) fn add(s: &Store, t: Timestamp) {
        s.commit(Batch::new().trace(TraceEvent::new(EventKind::Relayed, t)))
            .unwrap();
    }

    /// A writer that runs `hook` once, after the `after`-th line was written.
    struct HookWriter<F: FnMut()> {
        out: Vec<u8>,
        after: usize,
        hook: Option<F>,
    }

    impl<F: FnMut()> std::io::Write for HookWriter<F> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.out.extend_from_slice(buf);
            if self.out.iter().filter(|&&c| c == b'\n').count() >= self.after
                && let Some(mut h) = self.hook.take()
            {
                h();
            }
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Enough records for the trees to span several nodes: a walk then reads the last
    /// ones only after the appends its tests make after the first lines.
    fn add_many(s: &Store, n: usize) {
        let b = (0..n).fold(Batch::new(), |b, _| {
            b.trace(TraceEvent::new(EventKind::Relayed, t0()))
        });
        s.commit(b).unwrap();
    }

    /// What the committer does while a live export runs: more records, then a checkpoint
    /// stored together with the record binding it.
    fn append_with_checkpoint(s: &Store) {
        add(s, t0());
        add(s, t0());
        s.checkpoint_now().unwrap().unwrap();
        add(s, t0());
    }

    #[test]
    fn a_live_export_ends_where_it_started_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let (s, me) = store(dir.path());
        add_many(&s, 400);
        let (head, head_hash) = s.trace().head().unwrap();
        // Lines 1 and 2 are written (the checkpoint iterator has found none so far), then
        // records and a checkpoint with its binding record are committed.
        let mut w = HookWriter {
            out: Vec::new(),
            after: 2,
            hook: Some(|| append_with_checkpoint(&s)),
        };
        let n = s.trace().export(&mut w).unwrap();
        assert!(w.hook.is_none(), "the commit ran during the export");
        assert!(s.trace().head().unwrap().0 > head + 3);
        assert_eq!(
            n,
            head + 1,
            "the records up to the starting head, and the trailer"
        );
        let r = verify_export(&w.out[..], Some(me.clone())).unwrap();
        assert!(r.intact(), "{:?}", r.problem);
        assert_eq!(r.last_seq, Some(head));
        let trailer = w
            .out
            .split(|&c| c == b'\n')
            .rfind(|l| !l.is_empty())
            .unwrap();
        let trailer = String::from_utf8_lossy(trailer);
        assert!(
            trailer.contains(&format!(r#""seq":{head},"head_hash":"{head_hash}""#)),
            "{trailer}"
        );

        // The next export has everything, the new checkpoint included.
        let mut out = Vec::new();
        s.trace().export(&mut out).unwrap();
        let r = verify_export(&out[..], Some(me)).unwrap();
        assert!(r.intact(), "{:?}", r.problem);
        assert_eq!(r.checkpoints, 1);
        assert_eq!(r.last_seq, Some(s.trace().head().unwrap().0));
    }

    #[test]
    fn a_live_verify_ends_where_it_started() {
        let dir = tempfile::tempdir().unwrap();
        let (s, me) = store(dir.path());
        add_many(&s, 400);
        let mut lines = 0;
        let r = s
            .trace()
            .verify_observed(Some(me.clone()), |_| {
                lines += 1;
                if lines == 2 {
                    append_with_checkpoint(&s);
                }
            })
            .unwrap();
        assert!(r.intact(), "{:?}", r.problem);
        assert_eq!(
            (r.records, r.last_seq, r.unsigned_tail),
            (400, Some(400), 400)
        );
        let r = s.trace().verify(Some(me)).unwrap();
        assert!(r.intact(), "{:?}", r.problem);
        assert_eq!(r.checkpoints, 1);
    }

    #[test]
    fn an_export_needs_a_signer() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let err = s.trace().export(Vec::new()).unwrap_err();
        assert!(matches!(err, TraceError::NoSigner), "{err}");
    }
}
