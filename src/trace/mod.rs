//! The trace log (*registro*, rules digest §9): the provider's evidence in court, kept
//! 30 months, and the one part of pecd that must never lie.
//!
//! ## What this module owns
//!
//! - the record format ([`TraceRecord`], one per event, [`EventKind`]) and its hash chain;
//! - signed checkpoints ([`Checkpoint`], module [`checkpoint`]);
//! - the on-disk layout of the trace trees inside the store's sled database (module
//!   [`log`]): `trace` (seq → record), the secondary indexes `trace_keys` (hashed
//!   Message-ID, identificativo and mailboxes; `trace_msgid`, `trace_ident` and
//!   `trace_mailbox` in stores of schema 5 and older) and `trace_time`, and
//!   `checkpoints`; on sled stores the older records sealed in files beside the
//!   database (module [`segments`]), read together with the tree (module `records`);
//!   queries; the export/verify walk
//!   bounded at the head (module `walk`); the retention purge plan (module `retention`);
//! - verification of the live log and of an export (module [`verify`]).
//!
//! It does **not** own durability: records are appended only through the store's group
//! commit ([`crate::store::Batch::trace`]) so that a message and its trace record reach
//! the disk in one atomic sled transaction. Nothing else may write the trace trees.
//!
//! ## The chain and its canonical form
//!
//! Records are numbered from 1 (`seq`) without gaps. `prev_hash` is the `hash` of the
//! record `seq - 1` (64 zeros for seq 1, or the head hash of the anchor checkpoint after
//! a purge). `hash` is the lower-case hex SHA-256 of the record's **canonical form**: its
//! compact JSON serialization (serde_json, no whitespace, fields in the order declared in
//! [`TraceRecord`], `null` for absent options, times as RFC 3339 UTC) **with `hash` set to
//! the empty string**. An export line of a record is the same JSON with `"type":"record"`
//! first and the real `hash`; verification re-serializes each parsed line and requires the
//! bytes to be identical, so any byte changed in an export is detected.
//!
//! Every `checkpoint_every` records or `checkpoint_interval_secs` seconds the head
//! (seq, hash) is signed with the provider key (CMS, SHA-256): see [`checkpoint`].
//! The signature covers the chain up to its seq; in the live log, records after the last
//! checkpoint are protected by the chain only (`verify` says how many). An export ends
//! with a signed trailer naming its last record, so an export cut at the end (or empty)
//! is rejected. A log may start at an *anchor* checkpoint only after a retention purge,
//! proven by the `Purged` record that names the anchor (see [`verify`]).
//!
//! Signatures by earlier provider certificates (after a renewal, rules §8.1) are accepted
//! when the verifier is told to trust them ([`checkpoint::TrustedSigners`]).
//!
//! Config keys read (through the callers): `trace.retention_months`,
//! `trace.checkpoint_every`, `trace.checkpoint_interval_secs`, `signing.previous_certs`.

pub mod checkpoint;
pub mod log;
pub(crate) mod postings;
pub(crate) mod records;
pub mod retention;
pub mod segments;
pub(crate) mod spans;
pub(crate) mod stored;
pub(crate) mod tail;
pub mod verify;
pub mod walk;

use jiff::Timestamp;
use openssl::sha::Sha256;
use serde::{Deserialize, Serialize};

use crate::pec::time::PecTime;

pub use checkpoint::Checkpoint;
pub use log::{TraceLog, TraceQuery};
pub use verify::{VerifyProblem, VerifyReport};

/// `prev_hash` of record 1.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened. Serialized as the variant name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventKind {
    SubmissionAccepted,
    SubmissionRefused,
    /// The acceptance receipt (ricevuta di accettazione) was issued: `sha256` is the hash
    /// of the signed receipt as stored, so a receipt can be proved to be ours.
    AcceptanceSent,
    /// The non-acceptance notice (avviso di non accettazione) was issued; `sha256` as above.
    NonAcceptanceSent,
    /// A message refused in the SMTP dialogue of the incoming point (port 25: oversize,
    /// too many recipients, a domain we do not serve...); nothing was accepted.
    IncomingRefused,
    EnvelopeCreated,
    Relayed,
    RelayFailed,
    TakeChargeSent,
    TakeChargeReceived,
    Delivered,
    DeliveryFailed,
    DeliveryReceiptSent,
    DeliveryReceiptReceived,
    NonDeliverySent,
    TimeoutNotice12h,
    TimeoutNotice24h,
    VirusDetected,
    AnomalyWrapped,
    MessageStored,
    LoginFailed,
    MailboxAdmin,
    /// Records up to an anchor checkpoint were purged at the end of their retention.
    Purged,
    /// A signed checkpoint was stored: `sha256` is the hash of its export line and
    /// `related` is `["checkpoint:SEQ"]`, which binds the whole checkpoint (including
    /// the unsigned parts of its CMS structure) into the chain.
    Checkpoint,
    Other,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        use EventKind::*;
        match self {
            SubmissionAccepted => "SubmissionAccepted",
            SubmissionRefused => "SubmissionRefused",
            AcceptanceSent => "AcceptanceSent",
            NonAcceptanceSent => "NonAcceptanceSent",
            IncomingRefused => "IncomingRefused",
            EnvelopeCreated => "EnvelopeCreated",
            Relayed => "Relayed",
            RelayFailed => "RelayFailed",
            TakeChargeSent => "TakeChargeSent",
            TakeChargeReceived => "TakeChargeReceived",
            Delivered => "Delivered",
            DeliveryFailed => "DeliveryFailed",
            DeliveryReceiptSent => "DeliveryReceiptSent",
            DeliveryReceiptReceived => "DeliveryReceiptReceived",
            NonDeliverySent => "NonDeliverySent",
            TimeoutNotice12h => "TimeoutNotice12h",
            TimeoutNotice24h => "TimeoutNotice24h",
            VirusDetected => "VirusDetected",
            AnomalyWrapped => "AnomalyWrapped",
            MessageStored => "MessageStored",
            LoginFailed => "LoginFailed",
            MailboxAdmin => "MailboxAdmin",
            Purged => "Purged",
            Checkpoint => "Checkpoint",
            Other => "Other",
        }
    }
}

/// An event as the pipeline describes it; the store's committer turns it into a
/// [`TraceRecord`] by giving it its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceEvent {
    /// The instant of the event (the one written in the receipt, if any).
    pub time: Timestamp,
    /// The UTC offset used in the receipt, e.g. `+0100` (Italian time by default).
    pub zone: String,
    pub kind: EventKind,
    /// The client's Message-ID (bare, without `<>`).
    pub msgid: Option<String>,
    /// The PEC identificativo.
    pub ident: Option<String>,
    pub sender: Option<String>,
    pub recipients: Vec<String>,
    pub subject: Option<String>,
    /// The other provider involved (sending or receiving), if any.
    pub other_provider: Option<String>,
    /// Outcome / detail text.
    pub detail: Option<String>,
    /// Hex SHA-256 of the message bytes involved.
    pub sha256: Option<String>,
    /// Message-IDs of the messages generated by this step (receipts, envelopes).
    pub related: Vec<String>,
}

impl TraceEvent {
    /// An event at `time` with the Italian offset of that instant and no other field.
    pub fn new(kind: EventKind, time: Timestamp) -> Self {
        Self {
            time,
            zone: PecTime::italian(time).zona(),
            kind,
            msgid: None,
            ident: None,
            sender: None,
            recipients: Vec::new(),
            subject: None,
            other_provider: None,
            detail: None,
            sha256: None,
            related: Vec::new(),
        }
    }

    pub fn msgid(mut self, v: impl Into<String>) -> Self {
        self.msgid = Some(v.into());
        self
    }
    pub fn ident(mut self, v: impl Into<String>) -> Self {
        self.ident = Some(v.into());
        self
    }
    pub fn sender(mut self, v: impl Into<String>) -> Self {
        self.sender = Some(v.into());
        self
    }
    pub fn recipient(mut self, v: impl Into<String>) -> Self {
        self.recipients.push(v.into());
        self
    }
    pub fn subject(mut self, v: impl Into<String>) -> Self {
        self.subject = Some(v.into());
        self
    }
    pub fn other_provider(mut self, v: impl Into<String>) -> Self {
        self.other_provider = Some(v.into());
        self
    }
    pub fn detail(mut self, v: impl Into<String>) -> Self {
        self.detail = Some(v.into());
        self
    }
    /// Records the SHA-256 of `bytes`.
    pub fn message_bytes(mut self, bytes: &[u8]) -> Self {
        self.sha256 = Some(sha256_hex(bytes));
        self
    }

    /// Places the event in the chain after `prev_hash`.
    pub fn into_record(self, seq: u64, prev_hash: &str) -> TraceRecord {
        let mut r = TraceRecord {
            seq,
            time: self.time,
            zone: self.zone,
            kind: self.kind,
            msgid: self.msgid,
            ident: self.ident,
            sender: self.sender,
            recipients: self.recipients,
            subject: self.subject,
            other_provider: self.other_provider,
            detail: self.detail,
            sha256: self.sha256,
            related: self.related,
            prev_hash: prev_hash.to_string(),
            hash: String::new(),
        };
        r.hash = r.compute_hash();
        r
    }
}

/// One record of the log. The field order is part of the canonical form: do not reorder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceRecord {
    pub seq: u64,
    pub time: Timestamp,
    pub zone: String,
    pub kind: EventKind,
    pub msgid: Option<String>,
    pub ident: Option<String>,
    pub sender: Option<String>,
    pub recipients: Vec<String>,
    pub subject: Option<String>,
    pub other_provider: Option<String>,
    pub detail: Option<String>,
    pub sha256: Option<String>,
    pub related: Vec<String>,
    pub prev_hash: String,
    pub hash: String,
}

impl TraceRecord {
    /// The canonical bytes the hash is computed over (see the module doc).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let unhashed = TraceRecordRef {
            hash: "",
            ..TraceRecordRef::of(self)
        };
        // Serializing plain strings, integers and a timestamp cannot fail.
        serde_json::to_vec(&unhashed).unwrap_or_default()
    }

    /// Lower-case hex SHA-256 of [`Self::canonical_bytes`].
    pub fn compute_hash(&self) -> String {
        sha256_hex(&self.canonical_bytes())
    }

    /// The mailbox keys (lower-case) this record is indexed under: sender and recipients.
    pub fn mailbox_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .sender
            .iter()
            .chain(self.recipients.iter())
            .map(|a| mailbox_key(a))
            .filter(|k| !k.is_empty())
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }
}

/// A borrowed view with the same field order as [`TraceRecord`]; used to hash without
/// cloning.
#[derive(Serialize)]
struct TraceRecordRef<'a> {
    seq: u64,
    time: Timestamp,
    zone: &'a str,
    kind: EventKind,
    msgid: &'a Option<String>,
    ident: &'a Option<String>,
    sender: &'a Option<String>,
    recipients: &'a [String],
    subject: &'a Option<String>,
    other_provider: &'a Option<String>,
    detail: &'a Option<String>,
    sha256: &'a Option<String>,
    related: &'a [String],
    prev_hash: &'a str,
    hash: &'a str,
}

impl<'a> TraceRecordRef<'a> {
    fn of(r: &'a TraceRecord) -> Self {
        Self {
            seq: r.seq,
            time: r.time,
            zone: &r.zone,
            kind: r.kind,
            msgid: &r.msgid,
            ident: &r.ident,
            sender: &r.sender,
            recipients: &r.recipients,
            subject: &r.subject,
            other_provider: &r.other_provider,
            detail: &r.detail,
            sha256: &r.sha256,
            related: &r.related,
            prev_hash: &r.prev_hash,
            hash: &r.hash,
        }
    }
}

/// The index key of an address: trimmed, without `<>`, lower-cased.
pub fn mailbox_key(addr: &str) -> String {
    let a = addr.trim();
    let a = a
        .strip_prefix('<')
        .and_then(|x| x.strip_suffix('>'))
        .unwrap_or(a);
    a.trim().to_ascii_lowercase()
}

/// The index key of a Message-ID: trimmed, without `<>` (Message-IDs are case-sensitive).
pub fn msgid_key(id: &str) -> String {
    let a = id.trim();
    a.strip_prefix('<')
        .and_then(|x| x.strip_suffix('>'))
        .unwrap_or(a)
        .trim()
        .to_string()
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(bytes);
    hex::encode(h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: EventKind) -> TraceEvent {
        TraceEvent::new(kind, "2025-01-15T10:00:00Z".parse().unwrap())
            .msgid("abc@client")
            .sender("Alice@Example.IT")
            .recipient("bob@other.it")
            .recipient("alice@example.it")
    }

    #[test]
    fn canonical_form_is_the_json_with_empty_hash() {
        let r = ev(EventKind::Delivered).into_record(1, GENESIS_HASH);
        let json = serde_json::to_string(&r).unwrap();
        let expected = json.replace(&format!("\"hash\":\"{}\"", r.hash), "\"hash\":\"\"");
        assert_eq!(String::from_utf8(r.canonical_bytes()).unwrap(), expected);
        assert_eq!(r.hash, sha256_hex(expected.as_bytes()));
        assert!(
            json.starts_with("{\"seq\":1,\"time\":\"2025-01-15T10:00:00Z\",\"zone\":\"+0100\"")
        );
    }

    #[test]
    fn every_field_changes_the_hash() {
        let base = ev(EventKind::Delivered).into_record(7, GENESIS_HASH);
        let mutations: Vec<(&str, Box<dyn Fn(&mut TraceRecord)>)> = vec![
            ("seq", Box::new(|r| r.seq += 1)),
            (
                "time",
                Box::new(|r| r.time = "2025-01-15T10:00:01Z".parse().unwrap()),
            ),
            ("zone", Box::new(|r| r.zone = "+0200".into())),
            ("kind", Box::new(|r| r.kind = EventKind::DeliveryFailed)),
            ("msgid", Box::new(|r| r.msgid = None)),
            ("ident", Box::new(|r| r.ident = Some("x".into()))),
            ("sender", Box::new(|r| r.sender = Some("eve@x.it".into()))),
            (
                "recipients",
                Box::new(|r| r.recipients.pop().map(|_| ()).unwrap_or(())),
            ),
            ("subject", Box::new(|r| r.subject = Some("s".into()))),
            (
                "other_provider",
                Box::new(|r| r.other_provider = Some("p".into())),
            ),
            ("detail", Box::new(|r| r.detail = Some("d".into()))),
            ("sha256", Box::new(|r| r.sha256 = Some("00".into()))),
            ("related", Box::new(|r| r.related.push("m".into()))),
            ("prev_hash", Box::new(|r| r.prev_hash = "1".repeat(64))),
        ];
        for (name, m) in mutations {
            let mut r = base.clone();
            m(&mut r);
            assert_ne!(
                r.compute_hash(),
                base.hash,
                "changing {name} must change the hash"
            );
        }
        // The stored hash itself is not part of the input.
        let mut r = base.clone();
        r.hash = "ff".into();
        assert_eq!(r.compute_hash(), base.hash);
    }

    #[test]
    fn mailbox_keys_are_lowercased_and_deduplicated() {
        let r = ev(EventKind::Delivered).into_record(1, GENESIS_HASH);
        assert_eq!(r.mailbox_keys(), vec!["alice@example.it", "bob@other.it"]);
    }

    #[test]
    fn keys_strip_brackets() {
        for (input, mb, id) in [
            ("<A@B.it>", "a@b.it", "A@B.it"),
            (" x@y ", "x@y", "x@y"),
            ("", "", ""),
        ] {
            assert_eq!(mailbox_key(input), mb);
            assert_eq!(msgid_key(input), id);
        }
    }
}
