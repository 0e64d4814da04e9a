//! The evidence bundle: one `.zip` that proves, offline, what this provider did with one
//! message (rules digest §9: the trace log is the provider's evidence).
//!
//! ## What this module owns
//!
//! - [`build`]: for an identificativo and a [`Scope`], the zip holding the exact stored
//!   bytes of the message and of every receipt and notice about it (found by the SHA-256
//!   the trace records carry, which is the blob id), the trace lines that record them, the
//!   signed checkpoint covering those lines, a README, and a **signed evidence statement**
//!   (see below);
//! - [`check`]: the offline checker behind `pecd evidence verify` (and `pecd log verify`
//!   on a `.zip`);
//! - the canonical zip container ([`container`]) and statement ([`statement`]) formats.
//!
//! It only reads the store and the trace log; the one write it may cause is a checkpoint
//! ([`Store::checkpoint_now`]) when no signed checkpoint covers the newest line yet.
//!
//! ## What input it distrusts
//!
//! The identificativo (a web user's input: length- and character-checked, and only used
//! as an index key), the scope's mailbox (only records naming it are included, so one
//! user never gets another's data: an identificativo that does not concern the mailbox is
//! [`EvidenceError::NotFound`], exactly as one that does not exist), and, in [`check`],
//! every byte of the bundle file.
//!
//! ## The design choice: a signed statement, not the chain range
//!
//! A hash chain proves that a line belongs to the log only together with every line
//! between it and the covering checkpoint, and those lines concern other users. A record's
//! hash is the SHA-256 of its whole canonical JSON ([`crate::trace::TraceRecord::
//! canonical_bytes`]), not of a separate content hash, so the other lines cannot be
//! reduced to a hash each: proving the chain needs their content. Shipping the range
//! would leak other users' metadata, and changing the record hash format would break every
//! existing log. So the provider **signs an evidence statement** (CMS, SHA-256, with the
//! same key and certificate as its checkpoints and receipts) naming the identificativo,
//! the scope, each included trace line (seq, hash, kind, message SHA-256), the SHA-256 and
//! size of every file in the zip, and the covering checkpoint (seq, head hash), whose own
//! signed line is included too. Its certificate set is pinned in the statement (a CMS
//! structure has parts its signature does not cover), and the zip is canonical, so the
//! checker rebuilds it and any byte changed anywhere is detected. An auditor holding a
//! full export of the log (`pecd log export`) can further find each included line
//! verbatim in it, under the same checkpoint.
//!
//! Blocking (sled, file reads, signing): async callers use `spawn_blocking`.
//!
//! Config keys read: none directly; the signer comes from the store's options
//! (`signing.cert`, `signing.key`).

pub mod check;
pub mod container;
mod readme;
pub mod statement;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use openssl::x509::X509Ref;

use crate::pec::address::PecAddress;
use crate::pec::smime::Signer;
use crate::store::{BlobId, Store, StoreError};
use crate::trace::checkpoint::cert_sha256;
use crate::trace::log::TraceError;
use crate::trace::verify::ExportLine;
use crate::trace::{EventKind, TraceQuery, TraceRecord, mailbox_key, sha256_hex};

pub use check::{BundleProblem, BundleReport, CheckError, check};
use container::Entry;
use statement::{CheckpointRef, FileRef, RecordRef, Statement};

/// The longest identificativo accepted (bytes).
pub const MAX_IDENT_BYTES: usize = 256;
/// The most trace records one bundle may hold.
pub const MAX_RECORDS: usize = 10_000;
/// The most message bytes one bundle may hold (the sum of its `.eml` files).
pub const MAX_MESSAGE_BYTES: u64 = 1 << 30;

/// Entry names inside the zip.
pub const README: &str = "README.txt";
pub const STATEMENT: &str = "statement.json";
pub const STATEMENT_SIG: &str = "statement.json.p7s";
pub const SIGNER_PEM: &str = "signer.pem";
pub const RECORDS: &str = "trace/records.jsonl";
pub const CHECKPOINT_LINE: &str = "trace/checkpoint.jsonl";
pub const CHECKPOINT_TEXT: &str = "trace/checkpoint.txt";
pub const CHECKPOINT_SIG: &str = "trace/checkpoint.p7s";
pub const MESSAGES_DIR: &str = "messages/";

/// Whose evidence: decides which records and messages may be included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every record about the message (the operator's CLI).
    Provider,
    /// Only records naming this mailbox as sender or recipient, and the messages those
    /// records name (a webmail user's own evidence).
    Mailbox(PecAddress),
}

/// Why a bundle could not be made.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    #[error("{0:?} is not an identificativo (1 to {MAX_IDENT_BYTES} printable characters)")]
    BadIdentificativo(String),
    /// No record about it, or none in the scope (the two are not told apart).
    #[error("no trace record about {0}")]
    NotFound(String),
    #[error(
        "the evidence statement must be signed, and no signing key is available (signing.cert / signing.key)"
    )]
    NoSigner,
    #[error("no signed checkpoint covers trace record {0}, and none could be made")]
    NoCheckpoint(u64),
    #[error("the bundle would exceed {limit} {what}")]
    TooLarge { what: &'static str, limit: u64 },
    #[error("the stored message {0} does not hash to its id: the blob store is damaged")]
    CorruptBlob(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("trace log: {0}")]
    Trace(#[from] TraceError),
    #[error("signing the evidence statement: {0}")]
    Signing(String),
    #[error("writing the zip: {0}")]
    Zip(String),
}

/// A bundle ready to be sent or written.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The zip.
    pub zip: Vec<u8>,
    /// A file name for it (ASCII, safe in a `Content-Disposition`).
    pub file_name: String,
    /// Trace records included.
    pub records: usize,
    /// Message files included.
    pub messages: usize,
    /// Messages named by included records that the provider does not keep.
    pub missing: usize,
}

/// Builds the evidence bundle of `identificativo` for `scope`, signed with the store's
/// signer. Blocking.
pub fn build(store: &Store, identificativo: &str, scope: &Scope) -> Result<Bundle, EvidenceError> {
    let ident = check_ident(identificativo)?;
    let signer = store
        .options()
        .signer
        .clone()
        .ok_or(EvidenceError::NoSigner)?;
    let trace = store.trace();
    let q = TraceQuery {
        ident: Some(ident.to_string()),
        limit: Some(MAX_RECORDS + 1),
        ..TraceQuery::default()
    };
    let mailbox = match scope {
        Scope::Provider => None,
        Scope::Mailbox(a) => Some(mailbox_key(&a.to_string())),
    };
    let mut records: Vec<TraceRecord> = trace
        .query(&q)?
        .into_iter()
        .filter(|r| {
            mailbox
                .as_ref()
                .is_none_or(|m| r.mailbox_keys().contains(m))
        })
        .collect();
    if records.len() > MAX_RECORDS {
        return Err(EvidenceError::TooLarge {
            what: "trace records",
            limit: MAX_RECORDS as u64,
        });
    }
    records.sort_by_key(|r| r.seq);
    let Some(last) = records.last().map(|r| r.seq) else {
        return Err(EvidenceError::NotFound(ident.to_string()));
    };
    let cp = match trace.checkpoint_covering(last)? {
        Some(cp) => cp,
        None => {
            store.checkpoint_now()?;
            trace
                .checkpoint_covering(last)?
                .ok_or(EvidenceError::NoCheckpoint(last))?
        }
    };

    // The messages, each once, named after the first record naming it.
    let mut entries: Vec<Entry> = Vec::new();
    let mut refs = Vec::with_capacity(records.len());
    let mut seen: Vec<(String, Option<String>)> = Vec::new();
    let mut total = 0u64;
    for r in &records {
        let file = match r
            .sha256
            .as_deref()
            .filter(|_| r.kind != EventKind::Checkpoint)
        {
            None => None,
            Some(h) => match seen.iter().find(|(s, _)| s == h) {
                Some((_, f)) => f.clone(),
                None => {
                    let f = message_entry(store, r, h, &mut total)?.map(|e| {
                        let p = e.path.clone();
                        entries.push(e);
                        p
                    });
                    seen.push((h.to_string(), f.clone()));
                    f
                }
            },
        };
        refs.push(RecordRef {
            seq: r.seq,
            hash: r.hash.clone(),
            kind: r.kind.as_str().to_string(),
            message_sha256: r.sha256.clone(),
            file,
        });
    }
    let messages = entries.len();
    let missing = seen.iter().filter(|(_, f)| f.is_none()).count();

    let mut lines = Vec::new();
    for r in &records {
        lines.extend_from_slice(&ExportLine::Record(r.clone()).to_line());
        lines.push(b'\n');
    }
    let mut cp_line = ExportLine::Checkpoint(cp.clone()).to_line();
    cp_line.push(b'\n');
    let cp_sig = B64.decode(cp.signature.as_bytes()).map_err(|e| {
        EvidenceError::Trace(TraceError::Corrupt {
            key: format!("checkpoint {}", cp.seq),
            detail: format!("signature is not base64: {e}"),
        })
    })?;
    let certs: Vec<&X509Ref> = std::iter::once(signer.certificate().as_ref())
        .chain(signer.chain().iter().map(|c| c.as_ref()))
        .collect();
    let mut pem = Vec::new();
    for c in &certs {
        pem.extend(
            c.to_pem()
                .map_err(|e| EvidenceError::Signing(e.to_string()))?,
        );
    }
    let created = store.options().clock.now();
    let readme = readme::text(&readme::Facts {
        ident,
        mailbox: mailbox.as_deref(),
        created,
        records: records.len(),
        messages,
        missing,
        checkpoint: cp.seq,
    });

    let mut files = vec![
        Entry {
            path: README.into(),
            bytes: readme.into_bytes(),
        },
        Entry {
            path: SIGNER_PEM.into(),
            bytes: pem,
        },
        Entry {
            path: RECORDS.into(),
            bytes: lines,
        },
        Entry {
            path: CHECKPOINT_LINE.into(),
            bytes: cp_line,
        },
        Entry {
            path: CHECKPOINT_TEXT.into(),
            bytes: crate::trace::Checkpoint::signed_bytes(cp.seq, &cp.head_hash, cp.time, cp.prev),
        },
        Entry {
            path: CHECKPOINT_SIG.into(),
            bytes: cp_sig,
        },
    ];
    files.append(&mut entries);

    let stmt = Statement {
        format: statement::FORMAT.into(),
        identificativo: ident.to_string(),
        scope: match scope {
            Scope::Provider => statement::SCOPE_PROVIDER,
            Scope::Mailbox(_) => statement::SCOPE_MAILBOX,
        }
        .into(),
        mailbox,
        created,
        signer_sha256: cert_sha256(signer.certificate()),
        certificates: certs.iter().map(|c| cert_sha256(c)).collect(),
        checkpoint: CheckpointRef {
            seq: cp.seq,
            head_hash: cp.head_hash.clone(),
        },
        records: refs,
        files: files
            .iter()
            .map(|e| FileRef {
                path: e.path.clone(),
                sha256: sha256_hex(&e.bytes),
                size: e.bytes.len() as u64,
            })
            .collect(),
    };
    let stmt_bytes = stmt.to_bytes();
    let sig = sign(&signer, &stmt_bytes)?;
    // README first: it is what a person opening the zip should read.
    let readme_entry = files.remove(0);
    let mut all = vec![
        readme_entry,
        Entry {
            path: STATEMENT.into(),
            bytes: stmt_bytes,
        },
        Entry {
            path: STATEMENT_SIG.into(),
            bytes: sig,
        },
    ];
    all.append(&mut files);
    let zip = container::write(&all).map_err(|e| EvidenceError::Zip(e.to_string()))?;
    Ok(Bundle {
        zip,
        file_name: file_name(ident),
        records: records.len(),
        messages,
        missing,
    })
}

fn sign(signer: &Signer, bytes: &[u8]) -> Result<Vec<u8>, EvidenceError> {
    signer
        .sign_detached(bytes)
        .map_err(|e| EvidenceError::Signing(e.to_string()))
}

/// The stored bytes of the message `h` named by `r`, if the provider keeps them.
fn message_entry(
    store: &Store,
    r: &TraceRecord,
    h: &str,
    total: &mut u64,
) -> Result<Option<Entry>, EvidenceError> {
    let Ok(id) = BlobId::parse(h) else {
        return Ok(None);
    };
    let bytes = match store.blobs().read(&id) {
        Ok(b) => b,
        Err(StoreError::BlobMissing(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    // The blob id is the SHA-256 of the content: a file that does not hash to it was
    // damaged on disk and is not the message the record names.
    if BlobId::of(&bytes) != id {
        return Err(EvidenceError::CorruptBlob(h.to_string()));
    }
    *total += bytes.len() as u64;
    if *total > MAX_MESSAGE_BYTES {
        return Err(EvidenceError::TooLarge {
            what: "bytes of messages",
            limit: MAX_MESSAGE_BYTES,
        });
    }
    Ok(Some(Entry {
        path: format!("{MESSAGES_DIR}{:08}-{}.eml", r.seq, r.kind.as_str()),
        bytes,
    }))
}

/// Checks a requested identificativo: 1..=[`MAX_IDENT_BYTES`] bytes, no whitespace or
/// control characters.
pub fn check_ident(s: &str) -> Result<&str, EvidenceError> {
    let t = s.trim();
    if t.is_empty()
        || t.len() > MAX_IDENT_BYTES
        || t.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(EvidenceError::BadIdentificativo(
            s.chars().take(MAX_IDENT_BYTES).collect(),
        ));
    }
    Ok(t)
}

/// `evidence-<identificativo with anything but [A-Za-z0-9.-] as _>.zip`.
pub fn file_name(ident: &str) -> String {
    let safe: String = ident
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("evidence-{safe}.zip")
}

#[cfg(test)]
mod tests;
