//! The offline check of a bundle (`pecd evidence verify`): every byte of the file is
//! distrusted. Stops at the first problem and names the entry it is in.
//!
//! Checked, in order:
//! 1. the zip is readable, holds only stored entries, each matching its CRC-32;
//! 2. `statement.json` is a canonical statement and `statement.json.p7s` a valid CMS
//!    signature over it by the certificate the statement names, one of the trusted ones,
//!    whose certificate set is exactly the one the statement pins (and whose DER is
//!    canonical);
//! 3. the zip holds exactly the files the statement lists (plus the statement and its
//!    signature), each with the listed SHA-256 and size;
//! 4. `trace/records.jsonl`: canonical record lines whose hashes match their content, the
//!    ones the statement lists, chained where consecutive, all at or before the
//!    checkpoint; in a mailbox bundle each names the mailbox;
//! 5. each message file hashes to the SHA-256 its record carries;
//! 6. the checkpoint line is canonical, names the statement's (seq, head), its signature is
//!    valid by a trusted signer, and `checkpoint.txt`/`checkpoint.p7s` are its signed text
//!    and signature;
//! 7. the zip is the canonical container of its entries (a byte changed in a header, a
//!    date or a comment is caught here).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use jiff::Timestamp;
use openssl::hash::MessageDigest;
use openssl::pkcs7::Pkcs7;
use serde::Serialize;

use super::container::{self, Entry, ReadError};
use super::statement::{self, Statement};
use super::{CHECKPOINT_LINE, CHECKPOINT_SIG, CHECKPOINT_TEXT, RECORDS, STATEMENT, STATEMENT_SIG};
use crate::pec::smime::verify_detached;
use crate::trace::checkpoint::TrustedSigners;
use crate::trace::verify::ExportLine;
use crate::trace::{Checkpoint, TraceRecord, mailbox_key, sha256_hex};

/// The largest bundle file the checker reads.
pub const MAX_BUNDLE_FILE_BYTES: u64 = super::MAX_MESSAGE_BYTES + (64 << 20);

/// The bundle cannot be read at all (exit status 2).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("not a readable zip: {0}")]
    NotZip(String),
    #[error("{size} bytes, more than a bundle may be ({MAX_BUNDLE_FILE_BYTES})")]
    TooLarge { size: u64 },
}

/// The first problem found, and the entry it is in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BundleProblem {
    /// The zip entry (`"zip"` for the container itself).
    pub entry: String,
    pub message: String,
}

impl std::fmt::Display for BundleProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.entry, self.message)
    }
}

/// The outcome of a check.
#[derive(Debug, Clone, Serialize)]
pub struct BundleReport {
    pub identificativo: Option<String>,
    pub scope: Option<String>,
    pub mailbox: Option<String>,
    pub created: Option<Timestamp>,
    pub signer_sha256: Option<String>,
    pub records: usize,
    pub messages: usize,
    /// Records naming a message the provider does not keep.
    pub missing: usize,
    pub checkpoint: Option<(u64, String)>,
    /// Whether the signer was checked against known certificates.
    pub signer_pinned: bool,
    pub problem: Option<BundleProblem>,
}

impl BundleReport {
    pub fn intact(&self) -> bool {
        self.problem.is_none()
    }
}

fn problem(entry: &str, message: impl Into<String>) -> BundleProblem {
    BundleProblem {
        entry: entry.to_string(),
        message: message.into(),
    }
}

/// Checks the bundle `bytes`, accepting signatures by `trusted`.
pub fn check(bytes: &[u8], trusted: &TrustedSigners) -> Result<BundleReport, CheckError> {
    if bytes.len() as u64 > MAX_BUNDLE_FILE_BYTES {
        return Err(CheckError::TooLarge {
            size: bytes.len() as u64,
        });
    }
    let mut report = BundleReport {
        identificativo: None,
        scope: None,
        mailbox: None,
        created: None,
        signer_sha256: None,
        records: 0,
        messages: 0,
        missing: 0,
        checkpoint: None,
        signer_pinned: trusted.is_pinned(),
        problem: None,
    };
    let entries = match container::read(bytes) {
        Ok(e) => e,
        Err(ReadError::NotZip(m)) => return Err(CheckError::NotZip(m)),
        Err(ReadError::Entry { entry, message }) => {
            report.problem = Some(problem(&entry, message));
            return Ok(report);
        }
    };
    if let Err(p) = check_entries(bytes, &entries, trusted, &mut report) {
        report.problem = Some(p);
    }
    Ok(report)
}

fn get<'a>(entries: &'a [Entry], path: &str) -> Result<&'a [u8], BundleProblem> {
    entries
        .iter()
        .find(|e| e.path == path)
        .map(|e| e.bytes.as_slice())
        .ok_or_else(|| problem(path, "missing from the bundle"))
}

fn check_entries(
    bytes: &[u8],
    entries: &[Entry],
    trusted: &TrustedSigners,
    report: &mut BundleReport,
) -> Result<(), BundleProblem> {
    // 2. The statement and its signature.
    let st_bytes = get(entries, STATEMENT)?;
    let st = Statement::parse(st_bytes).map_err(|m| problem(STATEMENT, m))?;
    report.identificativo = Some(st.identificativo.clone());
    report.scope = Some(st.scope.clone());
    report.mailbox = st.mailbox.clone();
    report.created = Some(st.created);
    report.signer_sha256 = Some(st.signer_sha256.clone());
    report.checkpoint = Some((st.checkpoint.seq, st.checkpoint.head_hash.clone()));
    let sig = get(entries, STATEMENT_SIG)?;
    check_statement_signature(st_bytes, sig, &st, trusted)?;

    // 3. Exactly the listed files, each as listed.
    for (i, e) in entries.iter().enumerate() {
        if entries[..i].iter().any(|o| o.path == e.path) {
            return Err(problem(&e.path, "appears twice in the zip"));
        }
        if e.path == STATEMENT || e.path == STATEMENT_SIG {
            continue;
        }
        let Some(f) = st.files.iter().find(|f| f.path == e.path) else {
            return Err(problem(&e.path, "not listed in the signed statement"));
        };
        let h = sha256_hex(&e.bytes);
        if h != f.sha256 || e.bytes.len() as u64 != f.size {
            return Err(problem(
                &e.path,
                format!(
                    "altered: SHA-256 {h} ({} bytes), the signed statement lists {} ({} bytes)",
                    e.bytes.len(),
                    f.sha256,
                    f.size
                ),
            ));
        }
    }
    for f in &st.files {
        get(entries, &f.path)?;
    }

    // 4, 5. The trace lines and the messages they name.
    let lines = get(entries, RECORDS)?;
    let text = std::str::from_utf8(lines).map_err(|_| problem(RECORDS, "not UTF-8"))?;
    if !text.is_empty() && !text.ends_with('\n') {
        return Err(problem(RECORDS, "the last line is not terminated"));
    }
    let parsed: Vec<&str> = text.lines().collect();
    if parsed.len() != st.records.len() {
        return Err(problem(
            RECORDS,
            format!(
                "{} lines, the signed statement lists {} records",
                parsed.len(),
                st.records.len()
            ),
        ));
    }
    let mut prev: Option<TraceRecord> = None;
    for (i, (line, want)) in parsed.iter().zip(&st.records).enumerate() {
        let at = |m: String| problem(RECORDS, format!("line {}: {m}", i + 1));
        let r = match serde_json::from_str::<ExportLine>(line) {
            Ok(ExportLine::Record(r)) => r,
            Ok(_) => return Err(at("not a record line".into())),
            Err(e) => return Err(at(format!("not a record line: {e}"))),
        };
        if ExportLine::Record(r.clone()).to_line() != line.as_bytes() {
            return Err(at("not in canonical form".into()));
        }
        if r.compute_hash() != r.hash {
            return Err(at(format!(
                "seq {}: the hash does not match the content",
                r.seq
            )));
        }
        if r.seq != want.seq
            || r.hash != want.hash
            || r.kind.as_str() != want.kind
            || r.sha256 != want.message_sha256
        {
            return Err(at(format!(
                "seq {}: not the record the signed statement lists",
                r.seq
            )));
        }
        if let Some(p) = &prev {
            if r.seq <= p.seq {
                return Err(at(format!("seq {} after seq {}", r.seq, p.seq)));
            }
            if r.seq == p.seq + 1 && r.prev_hash != p.hash {
                return Err(at(format!(
                    "seq {}: prev_hash is not the hash of seq {}",
                    r.seq, p.seq
                )));
            }
        }
        if r.seq > st.checkpoint.seq {
            return Err(at(format!(
                "seq {} is after the covering checkpoint {}",
                r.seq, st.checkpoint.seq
            )));
        }
        if r.seq == st.checkpoint.seq && r.hash != st.checkpoint.head_hash {
            return Err(at(format!(
                "seq {}: the checkpoint covering it names another hash",
                r.seq
            )));
        }
        if let Some(m) = &st.mailbox
            && !r.mailbox_keys().contains(&mailbox_key(m))
        {
            return Err(at(format!(
                "seq {}: does not concern the mailbox {m}",
                r.seq
            )));
        }
        match &want.file {
            Some(path) => {
                let body = get(entries, path)?;
                let h = sha256_hex(body);
                if Some(&h) != r.sha256.as_ref() {
                    return Err(problem(
                        path,
                        format!(
                            "SHA-256 {h}, but trace record seq {} names {}",
                            r.seq,
                            r.sha256.as_deref().unwrap_or("no message")
                        ),
                    ));
                }
            }
            None if r.sha256.is_some() => report.missing += 1,
            None => {}
        }
        prev = Some(r);
    }
    report.records = st.records.len();
    let mut files: Vec<&str> = st
        .records
        .iter()
        .filter_map(|r| r.file.as_deref())
        .collect();
    files.sort_unstable();
    files.dedup();
    report.messages = files.len();
    if st.scope == statement::SCOPE_MAILBOX && st.mailbox.is_none()
        || st.scope == statement::SCOPE_PROVIDER && st.mailbox.is_some()
        || ![statement::SCOPE_MAILBOX, statement::SCOPE_PROVIDER].contains(&st.scope.as_str())
    {
        return Err(problem(STATEMENT, format!("unknown scope {:?}", st.scope)));
    }

    // 6. The checkpoint.
    let cp_line = get(entries, CHECKPOINT_LINE)?;
    let cp_text = std::str::from_utf8(cp_line)
        .ok()
        .and_then(|t| t.strip_suffix('\n'))
        .ok_or_else(|| problem(CHECKPOINT_LINE, "not one UTF-8 line"))?;
    let cp: Checkpoint = match serde_json::from_str::<ExportLine>(cp_text) {
        Ok(ExportLine::Checkpoint(c)) => c,
        _ => return Err(problem(CHECKPOINT_LINE, "not a checkpoint line")),
    };
    if ExportLine::Checkpoint(cp.clone()).to_line() != cp_text.as_bytes() {
        return Err(problem(CHECKPOINT_LINE, "not in canonical form"));
    }
    if cp.seq != st.checkpoint.seq || cp.head_hash != st.checkpoint.head_hash {
        return Err(problem(
            CHECKPOINT_LINE,
            "not the checkpoint the signed statement names",
        ));
    }
    cp.verify(trusted)
        .map_err(|m| problem(CHECKPOINT_LINE, format!("checkpoint signature: {m}")))?;
    if get(entries, CHECKPOINT_TEXT)?
        != Checkpoint::signed_bytes(cp.seq, &cp.head_hash, cp.time, cp.prev)
    {
        return Err(problem(
            CHECKPOINT_TEXT,
            "not the text the checkpoint signs",
        ));
    }
    if B64.decode(cp.signature.as_bytes()).ok().as_deref() != Some(get(entries, CHECKPOINT_SIG)?) {
        return Err(problem(CHECKPOINT_SIG, "not the checkpoint's signature"));
    }

    // 7. The container itself.
    let rebuilt = container::write(entries).map_err(|e| problem("zip", e.to_string()))?;
    if rebuilt != bytes {
        return Err(problem(
            "zip",
            "the zip structure (headers, names, dates, comment or padding) was altered: it is not the canonical container of its entries",
        ));
    }
    Ok(())
}

fn check_statement_signature(
    content: &[u8],
    sig: &[u8],
    st: &Statement,
    trusted: &TrustedSigners,
) -> Result<(), BundleProblem> {
    let bad = |m: String| problem(STATEMENT_SIG, m);
    let check = verify_detached(content, sig, None);
    if !check.valid {
        return Err(bad(format!(
            "the signature over statement.json is invalid: {}",
            check.reason.unwrap_or_else(|| "no reason given".into())
        )));
    }
    let signer = check.signer.map(|s| s.sha256).unwrap_or_default();
    if !signer.eq_ignore_ascii_case(&st.signer_sha256) {
        return Err(bad(format!(
            "signed by certificate {signer}, but the statement names {}",
            st.signer_sha256
        )));
    }
    if trusted.is_pinned()
        && !trusted
            .hashes()
            .iter()
            .any(|h| h.eq_ignore_ascii_case(&signer))
    {
        return Err(bad(format!(
            "signed by certificate {signer}, which is not a trusted provider certificate ({})",
            trusted.hashes().join(", ")
        )));
    }
    // The certificate set and the encoding are outside what the signature covers.
    let p7 = Pkcs7::from_der(sig).map_err(|e| bad(format!("not DER CMS: {e}")))?;
    if p7.to_der().ok().as_deref() != Some(sig) {
        return Err(bad("not in canonical DER".into()));
    }
    let certs: Vec<String> = p7
        .signed()
        .and_then(|s| s.certificates())
        .map(|s| {
            s.iter()
                .map(|c| {
                    c.digest(MessageDigest::sha256())
                        .map(hex::encode_upper)
                        .unwrap_or_default()
                })
                .collect()
        })
        .unwrap_or_default();
    let mut have = certs.clone();
    let mut want = st.certificates.clone();
    have.sort();
    want.sort();
    if have != want {
        return Err(bad(
            "its certificates are not the ones the signed statement pins".into(),
        ));
    }
    Ok(())
}
