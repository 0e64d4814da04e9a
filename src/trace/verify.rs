//! Verification of the chain and of the checkpoint signatures, for the live log and for
//! an export file (JSON Lines, see [`ExportLine`]).
//!
//! Rules checked, stopping at the first violation (reported with its line and seq):
//! - each line is valid JSON **in canonical form** (re-serializing it gives the same
//!   bytes), so any changed byte is caught even where JSON would tolerate it;
//! - records are numbered without gaps, from 1 (whose `prev_hash` is [`GENESIS_HASH`]) or
//!   from the seq after a leading *anchor* checkpoint (after a retention purge);
//! - each `prev_hash` is the previous record's `hash`, each `hash` matches the content;
//! - each checkpoint follows the record it covers, names its hash, links to the previous
//!   checkpoint (`prev`), and carries a valid signature by the provider certificate;
//! - each checkpoint's exact line is bound into the chain by a later `Checkpoint` record
//!   (its `sha256`): a CMS structure has fields its signature does not cover, and this
//!   makes a change there (or the removal of the last checkpoint line) detectable too.
//!
//! Records after the last checkpoint are protected by the chain only: the report says how
//! many, because removing them from the end cannot be detected without a later signature.

use std::io::BufRead;

use serde::{Deserialize, Serialize};

use super::{Checkpoint, EventKind, GENESIS_HASH, TraceRecord};

/// One line of an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ExportLine {
    Record(TraceRecord),
    Checkpoint(Checkpoint),
}

impl ExportLine {
    /// The canonical line (without the newline).
    pub fn to_line(&self) -> Vec<u8> {
        // Serializing strings, integers and timestamps cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Where and what the first problem is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyProblem {
    /// 1-based line of the export (absent for the live log).
    pub line: Option<u64>,
    /// The seq of the record or checkpoint concerned, when known.
    pub seq: Option<u64>,
    pub message: String,
}

impl std::fmt::Display for VerifyProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(l) = self.line {
            write!(f, "line {l}: ")?;
        }
        if let Some(s) = self.seq {
            write!(f, "seq {s}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// The outcome of a verification.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// Records whose chain link and hash were verified.
    pub records: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// The anchor checkpoint the chain starts from (after a purge), if any.
    pub anchor: Option<u64>,
    /// Checkpoints whose signature was verified.
    pub checkpoints: u64,
    pub last_checkpoint: Option<Checkpoint>,
    /// Records after the last checkpoint: chained but not yet covered by a signature.
    pub unsigned_tail: u64,
    /// Whether signatures were checked against a known provider certificate.
    pub signer_pinned: bool,
    pub problem: Option<VerifyProblem>,
}

impl VerifyReport {
    pub fn intact(&self) -> bool {
        self.problem.is_none()
    }
}

/// A streaming verifier: feed records and checkpoints in log order.
#[derive(Debug)]
pub struct ChainVerifier {
    expected_signer: Option<String>,
    started: bool,
    next_seq: u64,
    prev_hash: String,
    last_cp: Option<Checkpoint>,
    /// Export-line hash and line of each checkpoint seen, by seq, until the chain record
    /// binding it (kind `Checkpoint`) is met.
    cp_lines: std::collections::HashMap<u64, (Option<u64>, String)>,
    report: VerifyReport,
}

impl ChainVerifier {
    /// `expected_signer`: upper-case hex SHA-256 of the provider certificate; `None`
    /// accepts any valid signature (and the report says so).
    pub fn new(expected_signer: Option<String>) -> Self {
        Self {
            started: false,
            next_seq: 1,
            prev_hash: GENESIS_HASH.to_string(),
            last_cp: None,
            cp_lines: Default::default(),
            report: VerifyReport {
                records: 0,
                first_seq: None,
                last_seq: None,
                anchor: None,
                checkpoints: 0,
                last_checkpoint: None,
                unsigned_tail: 0,
                signer_pinned: expected_signer.is_some(),
                problem: None,
            },
            expected_signer,
        }
    }

    fn fail(line: Option<u64>, seq: Option<u64>, message: impl Into<String>) -> VerifyProblem {
        VerifyProblem {
            line,
            seq,
            message: message.into(),
        }
    }

    /// Feeds one record.
    pub fn record(&mut self, line: Option<u64>, r: &TraceRecord) -> Result<(), VerifyProblem> {
        let seq = Some(r.seq);
        if !self.started {
            self.started = true;
            if r.seq != 1 {
                return Err(Self::fail(
                    line,
                    seq,
                    format!(
                        "the log starts at seq {} without an anchor checkpoint: records 1..{} are missing",
                        r.seq,
                        r.seq.saturating_sub(1)
                    ),
                ));
            }
            self.report.first_seq = Some(r.seq);
        }
        if r.seq != self.next_seq {
            let last = self.next_seq.saturating_sub(1);
            let msg = if r.seq > self.next_seq {
                format!(
                    "expected seq {} after seq {last}: records {}..{} are missing (line deleted?)",
                    self.next_seq,
                    self.next_seq,
                    r.seq - 1
                )
            } else {
                format!(
                    "seq {} comes after seq {last}: lines out of order or repeated",
                    r.seq
                )
            };
            return Err(Self::fail(line, seq, msg));
        }
        let computed = r.compute_hash();
        if computed != r.hash {
            return Err(Self::fail(
                line,
                seq,
                format!(
                    "hash mismatch: the record's content hashes to {computed}, the record says {} (record altered)",
                    r.hash
                ),
            ));
        }
        if r.prev_hash != self.prev_hash {
            return Err(Self::fail(
                line,
                seq,
                format!(
                    "prev_hash {} does not match the hash {} of the preceding record/anchor (chain broken)",
                    r.prev_hash, self.prev_hash
                ),
            ));
        }
        if r.kind == EventKind::Checkpoint {
            self.check_binding(line, r)?;
        }
        self.prev_hash = r.hash.clone();
        self.next_seq = r.seq + 1;
        self.report.records += 1;
        self.report.last_seq = Some(r.seq);
        Ok(())
    }

    /// Feeds one checkpoint. A checkpoint before any record is the anchor.
    pub fn checkpoint(&mut self, line: Option<u64>, cp: &Checkpoint) -> Result<(), VerifyProblem> {
        let seq = Some(cp.seq);
        cp.verify(self.expected_signer.as_deref())
            .map_err(|e| Self::fail(line, seq, format!("checkpoint: {e}")))?;
        if !self.started {
            self.started = true;
            self.report.anchor = Some(cp.seq);
            self.report.first_seq = Some(cp.seq + 1);
            self.next_seq = cp.seq + 1;
            self.prev_hash = cp.head_hash.clone();
        } else {
            let last = self.next_seq.saturating_sub(1);
            if cp.seq != last || (self.report.records == 0 && self.report.anchor.is_none()) {
                return Err(Self::fail(
                    line,
                    seq,
                    format!(
                        "checkpoint for seq {} is not right after record {} (lines deleted or moved)",
                        cp.seq, cp.seq
                    ),
                ));
            }
            if cp.head_hash != self.prev_hash {
                return Err(Self::fail(
                    line,
                    seq,
                    format!(
                        "checkpoint names head hash {}, but record {} hashes to {}",
                        cp.head_hash, cp.seq, self.prev_hash
                    ),
                ));
            }
            let want_prev = self.last_cp.as_ref().map(|c| c.seq);
            let ok = match want_prev {
                Some(p) => cp.prev == p,
                // The first checkpoint after genesis has no predecessor; after an anchor
                // the anchor is the predecessor (handled by last_cp above).
                None => cp.prev == 0,
            };
            if !ok {
                return Err(Self::fail(
                    line,
                    seq,
                    format!(
                        "checkpoint links to previous checkpoint {}, but the previous one here is {} (checkpoint line deleted?)",
                        cp.prev,
                        want_prev.map_or("none".to_string(), |p| p.to_string())
                    ),
                ));
            }
        }
        let line_hash = super::sha256_hex(&ExportLine::Checkpoint(cp.clone()).to_line());
        self.cp_lines.insert(cp.seq, (line, line_hash));
        self.report.checkpoints += 1;
        self.report.last_checkpoint = Some(cp.clone());
        self.last_cp = Some(cp.clone());
        Ok(())
    }

    /// A `Checkpoint` record must match the exact bytes of the checkpoint it names: this
    /// catches changes to the parts of a CMS signature that the signature does not cover.
    fn check_binding(&mut self, line: Option<u64>, r: &TraceRecord) -> Result<(), VerifyProblem> {
        let Some(cseq) = r
            .related
            .iter()
            .find_map(|x| x.strip_prefix("checkpoint:")?.parse::<u64>().ok())
        else {
            return Err(Self::fail(
                line,
                Some(r.seq),
                "checkpoint record names no checkpoint",
            ));
        };
        let floor = self.report.anchor.unwrap_or(0);
        match self.cp_lines.remove(&cseq) {
            Some((_, h)) if Some(&h) == r.sha256.as_ref() => Ok(()),
            Some((cline, h)) => Err(Self::fail(
                cline,
                Some(cseq),
                format!(
                    "checkpoint altered: its line hashes to {h}, but chain record {} recorded {}",
                    r.seq,
                    r.sha256.as_deref().unwrap_or("nothing")
                ),
            )),
            None if cseq < floor => Ok(()),
            None => Err(Self::fail(
                line,
                Some(r.seq),
                format!(
                    "record attests checkpoint {cseq}, which is missing (checkpoint line deleted?)"
                ),
            )),
        }
    }

    /// Records a problem found outside the chain rules (unreadable line...).
    pub fn set_problem(&mut self, p: VerifyProblem) {
        if self.report.problem.is_none() {
            self.report.problem = Some(p);
        }
    }

    pub fn finish(mut self) -> VerifyReport {
        let covered = self.last_cp.as_ref().map_or(0, |c| c.seq);
        let last = self.report.last_seq.unwrap_or(covered);
        self.report.unsigned_tail = last.saturating_sub(covered);
        self.report
    }
}

/// Verifies an export read from `input`. Returns `Err` only when reading fails.
pub fn verify_export(
    input: impl BufRead,
    expected_signer: Option<String>,
) -> std::io::Result<VerifyReport> {
    let mut v = ChainVerifier::new(expected_signer);
    for (i, line) in input.split(b'\n').enumerate() {
        let line = line?;
        let n = Some(i as u64 + 1);
        let parsed: ExportLine = match serde_json::from_slice(&line) {
            Ok(p) => p,
            Err(e) => {
                v.set_problem(ChainVerifier::fail(
                    n,
                    None,
                    format!("not a valid log line: {e}"),
                ));
                break;
            }
        };
        let seq = match &parsed {
            ExportLine::Record(r) => r.seq,
            ExportLine::Checkpoint(c) => c.seq,
        };
        if parsed.to_line() != line {
            v.set_problem(ChainVerifier::fail(
                n,
                Some(seq),
                "line is not in canonical form (bytes altered)",
            ));
            break;
        }
        let res = match &parsed {
            ExportLine::Record(r) => v.record(n, r),
            ExportLine::Checkpoint(c) => v.checkpoint(n, c),
        };
        if let Err(p) = res {
            v.set_problem(p);
            break;
        }
    }
    Ok(v.finish())
}
