//! Verification of the chain and of the checkpoint signatures, for the live log and for
//! an export file (JSON Lines, see [`ExportLine`]).
//!
//! Rules checked, stopping at the first violation (reported with its line and seq):
//! - each line is valid JSON **in canonical form** (re-serializing it gives the same
//!   bytes), so any changed byte is caught even where JSON would tolerate it;
//! - records are numbered without gaps, from 1 (whose `prev_hash` is [`GENESIS_HASH`]) or
//!   from the seq after a leading *anchor* checkpoint (after a retention purge). A log
//!   may start at an anchor only if a later `Purged` record names that exact checkpoint
//!   (`related` = `anchor:SEQ`, `sha256` = hash of the anchor's line): otherwise the
//!   leading lines were cut, not purged (a `Purged` record without `anchor:`, as an older
//!   pecd wrote, proves nothing; the problem then says so);
//! - each `prev_hash` is the previous record's `hash`, each `hash` matches the content;
//! - each checkpoint follows the record it covers, names its hash, links to the previous
//!   checkpoint (`prev`), and carries a valid signature by the provider certificate;
//! - each checkpoint's exact line is bound into the chain by a later `Checkpoint` record
//!   (its `sha256`): a CMS structure has fields its signature does not cover, and this
//!   makes a change there (or the removal of the last checkpoint line) detectable too.
//!
//! - an export ([`verify_export`]) must end with a signed [`ExportTrailer`] naming its last
//!   record (seq and hash) and nothing may follow it: an empty file, or one cut at the end,
//!   is rejected. The report gives the trailer's signed time ([`VerifyReport::export_time`]):
//!   an older export's trailer pasted on a newer export cut back to the same record
//!   verifies, and only that time shows it.
//!
//! In the live log, records after the last checkpoint are protected by the chain only:
//! the report says how many. In an export the trailer signs them.

use std::io::BufRead;

use serde::{Deserialize, Serialize};

use super::checkpoint::{ExportTrailer, TrustedSigners};
use super::{Checkpoint, EventKind, GENESIS_HASH, TraceRecord};

/// The `related` prefix of a `Purged` record naming its anchor checkpoint.
pub const ANCHOR_PREFIX: &str = "anchor:";

/// One line of an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ExportLine {
    Record(TraceRecord),
    Checkpoint(Checkpoint),
    /// The last line of an export (never stored in the log).
    Trailer(ExportTrailer),
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
    /// When the export's trailer says it was made (the time is signed). An export cut at
    /// the end with an older export's trailer pasted on verifies, but shows an old time.
    /// `None` for the live log.
    pub export_time: Option<jiff::Timestamp>,
    pub problem: Option<VerifyProblem>,
}

impl VerifyReport {
    pub fn intact(&self) -> bool {
        self.problem.is_none()
    }
}

/// The leading anchor checkpoint and whether a `Purged` record proved it.
#[derive(Debug)]
struct AnchorState {
    line: Option<u64>,
    seq: u64,
    line_hash: String,
    proven: bool,
    /// The seq of a `Purged` record without an `anchor:` entry (written by an older
    /// pecd), which therefore cannot prove the anchor.
    unnamed_purge: Option<u64>,
}

/// A streaming verifier: feed records and checkpoints in log order.
#[derive(Debug)]
pub struct ChainVerifier {
    trusted: TrustedSigners,
    started: bool,
    anchor: Option<AnchorState>,
    /// The trailer seen (export mode), with its line.
    trailer: Option<Option<u64>>,
    /// Lines fed so far.
    lines: u64,
    next_seq: u64,
    prev_hash: String,
    last_cp: Option<Checkpoint>,
    /// Export-line hash and line of each checkpoint seen, by seq, until the chain record
    /// binding it (kind `Checkpoint`) is met.
    cp_lines: std::collections::HashMap<u64, (Option<u64>, String)>,
    report: VerifyReport,
}

impl ChainVerifier {
    /// `trusted`: the certificates whose signatures are accepted (upper-case hex SHA-256;
    /// `Option<String>` converts); an empty set accepts any valid signature (and the report
    /// says so).
    pub fn new(trusted: impl Into<TrustedSigners>) -> Self {
        let trusted = trusted.into();
        Self {
            started: false,
            anchor: None,
            trailer: None,
            lines: 0,
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
                signer_pinned: trusted.is_pinned(),
                export_time: None,
                problem: None,
            },
            trusted,
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
        self.after_trailer(line, seq)?;
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
        if r.kind == EventKind::Purged {
            self.check_purge(line, r)?;
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
        self.after_trailer(line, seq)?;
        cp.verify(&self.trusted)
            .map_err(|e| Self::fail(line, seq, format!("checkpoint: {e}")))?;
        let line_hash = super::sha256_hex(&ExportLine::Checkpoint(cp.clone()).to_line());
        if !self.started {
            self.started = true;
            self.anchor = Some(AnchorState {
                line,
                seq: cp.seq,
                line_hash: line_hash.clone(),
                proven: false,
                unnamed_purge: None,
            });
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

    /// A `Purged` record naming the leading anchor proves that the records before it were
    /// purged, not cut. One naming another checkpoint is an earlier purge's record.
    fn check_purge(&mut self, line: Option<u64>, r: &TraceRecord) -> Result<(), VerifyProblem> {
        let Some(anchor) = self.anchor.as_mut() else {
            return Ok(());
        };
        if !r.related.iter().any(|x| x.starts_with(ANCHOR_PREFIX)) {
            anchor.unnamed_purge.get_or_insert(r.seq);
        }
        let named = r
            .related
            .iter()
            .find_map(|x| x.strip_prefix(ANCHOR_PREFIX)?.parse::<u64>().ok());
        if named != Some(anchor.seq) {
            return Ok(());
        }
        if r.sha256.as_deref() != Some(anchor.line_hash.as_str()) {
            return Err(Self::fail(
                line,
                Some(r.seq),
                format!(
                    "Purged record names anchor checkpoint {} with line hash {}, but the anchor here hashes to {} (anchor checkpoint replaced?)",
                    anchor.seq,
                    r.sha256.as_deref().unwrap_or("nothing"),
                    anchor.line_hash
                ),
            ));
        }
        anchor.proven = true;
        Ok(())
    }

    /// Feeds the export trailer: it must name the last record fed.
    pub fn trailer(&mut self, line: Option<u64>, t: &ExportTrailer) -> Result<(), VerifyProblem> {
        let seq = Some(t.seq);
        self.after_trailer(line, seq)?;
        self.trailer = Some(line);
        t.verify(&self.trusted)
            .map_err(|e| Self::fail(line, seq, format!("export trailer: {e}")))?;
        self.report.export_time = Some(t.time);
        let last = self.next_seq.saturating_sub(1);
        if t.seq != last || t.head_hash != self.prev_hash {
            let msg = if t.seq > last {
                format!(
                    "the signed export trailer says the export ends at seq {}, but the last record here is seq {last}: records {}..{} are missing (cut at the end?)",
                    t.seq,
                    last + 1,
                    t.seq
                )
            } else {
                format!(
                    "the signed export trailer names seq {} head {}, but the last record here is seq {last} with hash {} (trailer moved or records altered)",
                    t.seq, t.head_hash, self.prev_hash
                )
            };
            return Err(Self::fail(line, seq, msg));
        }
        Ok(())
    }

    fn after_trailer(&mut self, line: Option<u64>, seq: Option<u64>) -> Result<(), VerifyProblem> {
        self.lines += 1;
        match self.trailer {
            Some(tl) => Err(Self::fail(
                line,
                seq,
                format!(
                    "line after the export trailer{} (lines appended?)",
                    tl.map(|l| format!(" of line {l}")).unwrap_or_default()
                ),
            )),
            None => Ok(()),
        }
    }

    /// Records a problem found outside the chain rules (unreadable line...).
    pub fn set_problem(&mut self, p: VerifyProblem) {
        if self.report.problem.is_none() {
            self.report.problem = Some(p);
        }
    }

    /// Ends a verification of the live log.
    pub fn finish(mut self) -> VerifyReport {
        self.check_anchor_proven();
        let covered = self.last_cp.as_ref().map_or(0, |c| c.seq);
        let last = self.report.last_seq.unwrap_or(covered);
        self.report.unsigned_tail = last.saturating_sub(covered);
        self.report
    }

    /// Ends a verification of an export: its signed trailer must have been fed.
    pub fn finish_export(mut self) -> VerifyReport {
        if self.report.problem.is_none() && self.trailer.is_none() {
            let p = if self.lines == 0 {
                Self::fail(
                    None,
                    None,
                    "the export is empty: no records and no signed export trailer (truncated file, or not a pecd export)",
                )
            } else {
                let last = self.next_seq.saturating_sub(1);
                Self::fail(
                    Some(self.lines + 1),
                    Some(last),
                    format!(
                        "missing signed export trailer after line {} (seq {last}): the end of the export is not proven, records may have been cut off the end",
                        self.lines
                    ),
                )
            };
            self.set_problem(p);
        }
        let mut report = self.finish();
        if report.problem.is_none() {
            // The trailer signs everything up to the last record.
            report.unsigned_tail = 0;
        }
        report
    }

    fn check_anchor_proven(&mut self) {
        if self.report.problem.is_some() {
            return;
        }
        if let Some(a) = &self.anchor
            && !a.proven
        {
            // Stores purged by a pecd that did not yet name the anchor have a Purged
            // record without `anchor:`; it proves nothing, but says where the log came from.
            let older = a
                .unnamed_purge
                .map(|s| {
                    format!("; the Purged record seq {s} names no anchor: purged by an older pecd?")
                })
                .unwrap_or_default();
            let p = Self::fail(
                a.line,
                Some(a.seq),
                format!(
                    "the log starts at checkpoint {} as a retention anchor, but no Purged record names that checkpoint: records 1..{} are missing (log cut at the start?){older}",
                    a.seq, a.seq
                ),
            );
            self.set_problem(p);
        }
    }
}

/// Verifies an export read from `input`. Returns `Err` only when reading fails.
pub fn verify_export(
    input: impl BufRead,
    trusted: impl Into<TrustedSigners>,
) -> std::io::Result<VerifyReport> {
    let mut v = ChainVerifier::new(trusted);
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
            ExportLine::Trailer(t) => t.seq,
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
            ExportLine::Trailer(t) => v.trailer(n, t),
        };
        if let Err(p) = res {
            v.set_problem(p);
            break;
        }
    }
    Ok(v.finish_export())
}
