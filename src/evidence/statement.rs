//! The evidence statement (`statement.json`): what the provider signs when it issues a
//! bundle. Its canonical form is the compact serde_json serialization of [`Statement`]
//! (fields in declared order, `null` for absent options, times RFC 3339 UTC); the checker
//! re-serializes what it parsed and requires identical bytes, as for trace lines.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// The `format` of this version of the bundle.
pub const FORMAT: &str = "pecd-evidence-v1";

/// `scope` of a bundle made for the whole provider (operator).
pub const SCOPE_PROVIDER: &str = "provider";
/// `scope` of a bundle restricted to one mailbox (webmail user).
pub const SCOPE_MAILBOX: &str = "mailbox";

/// The signed statement. The field order is part of the canonical form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statement {
    /// [`FORMAT`].
    pub format: String,
    /// The PEC identificativo the bundle is about.
    pub identificativo: String,
    /// [`SCOPE_PROVIDER`] or [`SCOPE_MAILBOX`].
    pub scope: String,
    /// The mailbox (lower-case) for [`SCOPE_MAILBOX`]: every record included names it as
    /// sender or recipient.
    pub mailbox: Option<String>,
    /// When the bundle was made (signed).
    pub created: Timestamp,
    /// Upper-case hex SHA-256 of the signing certificate.
    pub signer_sha256: String,
    /// Upper-case hex SHA-256 of every certificate inside `statement.json.p7s`, signer
    /// first: the CMS certificate set is outside what its signature covers, so it is
    /// pinned here.
    pub certificates: Vec<String>,
    /// The signed checkpoint covering every record included.
    pub checkpoint: CheckpointRef,
    /// The trace records included (the lines of `trace/records.jsonl`), in seq order.
    pub records: Vec<RecordRef>,
    /// Every entry of the zip except `statement.json` and its signature.
    pub files: Vec<FileRef>,
}

/// The covering checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointRef {
    pub seq: u64,
    pub head_hash: String,
}

/// One included trace record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordRef {
    pub seq: u64,
    /// The record's chain hash.
    pub hash: String,
    /// The event kind (`EventKind::as_str`).
    pub kind: String,
    /// The SHA-256 of the message the record names, if any.
    pub message_sha256: Option<String>,
    /// The entry holding that message's exact stored bytes; `None` when the record names
    /// no message or the provider does not keep it (e.g. the client's submission before
    /// it was enveloped, or an envelope relayed to another provider).
    pub file: Option<String>,
}

/// One entry of the zip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
    pub path: String,
    /// Lower-case hex SHA-256 of the entry's bytes.
    pub sha256: String,
    pub size: u64,
}

impl Statement {
    /// The canonical bytes (what the signature covers).
    pub fn to_bytes(&self) -> Vec<u8> {
        // Strings, integers and a timestamp always serialize.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses `bytes` and requires them to be canonical.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let s: Self = serde_json::from_slice(bytes).map_err(|e| format!("not a statement: {e}"))?;
        if s.to_bytes() != bytes {
            return Err("not in canonical form (bytes were changed or added)".into());
        }
        if s.format != FORMAT {
            return Err(format!("format {:?}, expected {FORMAT:?}", s.format));
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Statement {
        Statement {
            format: FORMAT.into(),
            identificativo: "opec.1@pec.alfa.test".into(),
            scope: SCOPE_MAILBOX.into(),
            mailbox: Some("a@pec.alfa.test".into()),
            created: "2025-01-15T10:00:00Z".parse().unwrap(),
            signer_sha256: "AB".repeat(32),
            certificates: vec!["AB".repeat(32)],
            checkpoint: CheckpointRef {
                seq: 9,
                head_hash: "cd".repeat(32),
            },
            records: vec![RecordRef {
                seq: 3,
                hash: "ef".repeat(32),
                kind: "Delivered".into(),
                message_sha256: Some("01".repeat(32)),
                file: Some("messages/00000003-Delivered.eml".into()),
            }],
            files: vec![FileRef {
                path: "README.txt".into(),
                sha256: "02".repeat(32),
                size: 10,
            }],
        }
    }

    #[test]
    fn round_trips_and_refuses_non_canonical_bytes() {
        let s = sample();
        let b = s.to_bytes();
        assert_eq!(Statement::parse(&b).unwrap(), s);
        let spaced = String::from_utf8(b.clone()).unwrap().replacen(':', ": ", 1);
        assert!(Statement::parse(spaced.as_bytes()).is_err());
        let extra = String::from_utf8(b.clone())
            .unwrap()
            .replacen('{', "{\"x\":1,", 1);
        assert!(Statement::parse(extra.as_bytes()).is_err());
        let mut other = s.clone();
        other.format = "v0".into();
        assert!(Statement::parse(&other.to_bytes()).is_err());
    }
}
