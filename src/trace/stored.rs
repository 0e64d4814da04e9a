//! The stored form of a trace record: the value under its seq in the `trace` tree.
//!
//! What this module owns: the byte layout of a record at rest, and nothing else. The
//! record's *canonical* form (the compact JSON its hash covers, and the export line) is
//! defined in the parent module and does not change with the layout: a record decoded
//! from here serializes to exactly the canonical bytes it was encoded from, so every
//! hash, checkpoint and export is the same whichever form the record was stored in.
//!
//! Two forms are read:
//!
//! - **JSON** (the record's serde serialization, 550–650 bytes for a receipt's record):
//!   what stores of schema 4 and older hold. It starts with `{`.
//! - **Compact** (version byte 1, about 55 % of the JSON): what is written now. Field
//!   names are gone, the time is 12 bytes, the event kind one, and the three hashes are
//!   their 32 raw bytes (when they are 64 lower-case hex digits, as pecd writes them;
//!   any other text is kept as text, so the form is lossless for every record).
//!
//! The compact layout, in order (the primitives are [`crate::store::codec`]'s: varint =
//! unsigned LEB128, str = varint length then UTF-8):
//!
//! | field | encoding |
//! |---|---|
//! | version | `0x01` |
//! | seq | varint |
//! | time | i64 seconds, then i32 nanoseconds of the second (negative before 1970), big-endian |
//! | kind | one byte ([`kind_code`]) |
//! | present | varint bit set: msgid 1, ident 2, sender 4, subject 8, other_provider 16, detail 32, sha256 64 |
//! | zone | str |
//! | msgid, ident, sender | str each, if present |
//! | recipients | varint count, then str each |
//! | subject, other_provider, detail | str each, if present |
//! | sha256 | hash, if present |
//! | related | varint count, then str each |
//! | prev_hash, hash | hash each |
//!
//! A hash is `0x00` followed by the 32 bytes its lower-case hex stands for, or `0x01`
//! followed by a str. Nothing may follow the last field.
//!
//! What it must distrust: the stored bytes (a disk or a copied database can be damaged).
//! Decoding checks every length against what is left, UTF-8, the kind, the nanoseconds
//! and the end, and reports a damaged value as [`TraceError::Corrupt`]; it never panics.

use super::log::TraceError;
use super::{EventKind, TraceRecord};
use crate::store::codec::{DecodeError, Reader, put_hash, put_list, put_str, put_time, put_varint};

/// The first byte of a compact record.
const COMPACT_V1: u8 = 1;

const P_MSGID: u64 = 1;
const P_IDENT: u64 = 2;
const P_SENDER: u64 = 4;
const P_SUBJECT: u64 = 8;
const P_OTHER: u64 = 16;
const P_DETAIL: u64 = 32;
const P_SHA256: u64 = 64;
const P_ALL: u64 = 127;

/// One list of the kinds and their codes, so that encoding and decoding cannot disagree.
/// Codes are stored for 30 months: never change or reuse one, only add.
macro_rules! kind_codes {
    ($($kind:ident = $code:literal,)*) => {
        /// The stored code of an event kind.
        pub(crate) fn kind_code(k: EventKind) -> u8 {
            match k {
                $(EventKind::$kind => $code,)*
            }
        }

        fn kind_of_code(c: u8) -> Option<EventKind> {
            match c {
                $($code => Some(EventKind::$kind),)*
                _ => None,
            }
        }

        #[cfg(test)]
        const ALL_KINDS: &[EventKind] = &[$(EventKind::$kind,)*];
    };
}

kind_codes! {
    SubmissionAccepted = 1,
    SubmissionRefused = 2,
    AcceptanceSent = 3,
    NonAcceptanceSent = 4,
    IncomingRefused = 5,
    EnvelopeCreated = 6,
    Relayed = 7,
    RelayFailed = 8,
    TakeChargeSent = 9,
    TakeChargeReceived = 10,
    Delivered = 11,
    DeliveryFailed = 12,
    DeliveryReceiptSent = 13,
    DeliveryReceiptReceived = 14,
    NonDeliverySent = 15,
    TimeoutNotice12h = 16,
    TimeoutNotice24h = 17,
    VirusDetected = 18,
    AnomalyWrapped = 19,
    MessageStored = 20,
    LoginFailed = 21,
    MailboxAdmin = 22,
    Purged = 23,
    Checkpoint = 24,
    Other = 25,
}

/// The compact form of `r`.
pub(crate) fn encode(r: &TraceRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(384);
    out.push(COMPACT_V1);
    put_varint(&mut out, r.seq);
    put_time(&mut out, r.time);
    out.push(kind_code(r.kind));
    let present = [
        (r.msgid.is_some(), P_MSGID),
        (r.ident.is_some(), P_IDENT),
        (r.sender.is_some(), P_SENDER),
        (r.subject.is_some(), P_SUBJECT),
        (r.other_provider.is_some(), P_OTHER),
        (r.detail.is_some(), P_DETAIL),
        (r.sha256.is_some(), P_SHA256),
    ]
    .iter()
    .filter(|(p, _)| *p)
    .fold(0, |acc, (_, bit)| acc | bit);
    put_varint(&mut out, present);
    put_str(&mut out, &r.zone);
    for s in [&r.msgid, &r.ident, &r.sender].into_iter().flatten() {
        put_str(&mut out, s);
    }
    put_list(&mut out, &r.recipients);
    for s in [&r.subject, &r.other_provider, &r.detail]
        .into_iter()
        .flatten()
    {
        put_str(&mut out, s);
    }
    if let Some(h) = &r.sha256 {
        put_hash(&mut out, h);
    }
    put_list(&mut out, &r.related);
    put_hash(&mut out, &r.prev_hash);
    put_hash(&mut out, &r.hash);
    out
}

/// The record stored under `key`, in either form.
pub(crate) fn decode(key: &[u8], v: &[u8]) -> Result<TraceRecord, TraceError> {
    let corrupt = |detail: String| TraceError::Corrupt {
        key: hex::encode(key),
        detail,
    };
    match v.first() {
        Some(b'{') => serde_json::from_slice(v).map_err(|e| corrupt(e.to_string())),
        Some(&COMPACT_V1) => {
            let mut r = Reader::new(&v[1..]);
            let rec = record(&mut r).map_err(|e| corrupt(e.to_string()))?;
            r.finish().map_err(|e| corrupt(e.to_string()))?;
            Ok(rec)
        }
        Some(b) => Err(corrupt(format!(
            "unknown record form (first byte {b:#04x})"
        ))),
        None => Err(corrupt("empty value".into())),
    }
}

fn record(r: &mut Reader<'_>) -> Result<TraceRecord, DecodeError> {
    let seq = r.varint("seq")?;
    let time = r.time("time")?;
    let code = r.byte("kind")?;
    let kind = kind_of_code(code).ok_or(DecodeError::Unknown {
        what: "event kind code",
        value: code.into(),
    })?;
    let present = r.varint("field set")?;
    if present & !P_ALL != 0 {
        return Err(DecodeError::Unknown {
            what: "fields in the field set",
            value: present,
        });
    }
    let zone = r.str("zone")?;
    let msgid = r.opt_str(present, P_MSGID, "msgid")?;
    let ident = r.opt_str(present, P_IDENT, "ident")?;
    let sender = r.opt_str(present, P_SENDER, "sender")?;
    let recipients = r.list("recipients")?;
    let subject = r.opt_str(present, P_SUBJECT, "subject")?;
    let other_provider = r.opt_str(present, P_OTHER, "other_provider")?;
    let detail = r.opt_str(present, P_DETAIL, "detail")?;
    let sha256 = if present & P_SHA256 != 0 {
        Some(r.hash("sha256")?)
    } else {
        None
    };
    let related = r.list("related")?;
    let prev_hash = r.hash("prev_hash")?;
    let hash = r.hash("hash")?;
    Ok(TraceRecord {
        seq,
        time,
        zone,
        kind,
        msgid,
        ident,
        sender,
        recipients,
        subject,
        other_provider,
        detail,
        sha256,
        related,
        prev_hash,
        hash,
    })
}

#[cfg(test)]
mod tests {
    //! Unit tests: their unwraps see only values built here.
    use super::*;
    use crate::trace::{GENESIS_HASH, TraceEvent};
    use jiff::Timestamp;

    fn full() -> TraceRecord {
        TraceEvent::new(
            EventKind::DeliveryReceiptSent,
            Timestamp::new(1_780_000_000, 123_456_789).unwrap(),
        )
        .msgid("<opec.20261206.abc@pec.example.it>")
        .ident("opec210312.20261206103000.12345.01.1.1@pec.example.it")
        .sender("mario.rossi@pec.example.it")
        .recipient("ufficio@pec.comune.example.it")
        .recipient("Àlfa <alfa@pec.example.it>")
        .subject("Fattura n. 12 — «urgente»")
        .other_provider("pec.other.it")
        .detail("consegna")
        .message_bytes(b"the receipt")
        .into_record(41, &"ab".repeat(32))
    }

    fn same_canonical(r: &TraceRecord) {
        let v = encode(r);
        let back = decode(b"k", &v).unwrap();
        assert_eq!(&back, r);
        assert_eq!(back.canonical_bytes(), r.canonical_bytes());
        assert_eq!(back.compute_hash(), r.hash);
    }

    #[test]
    fn a_record_comes_back_with_the_same_canonical_bytes_and_hash() {
        same_canonical(&full());
        // The sparsest record: nothing optional, no lists, the genesis hash.
        let bare =
            TraceEvent::new(EventKind::Other, Timestamp::UNIX_EPOCH).into_record(1, GENESIS_HASH);
        same_canonical(&bare);
        // Times before 1970, whole seconds, a huge seq; hashes that are not lower hex.
        let mut odd = full();
        odd.time = Timestamp::new(-86_400 * 365, -250_000_000).unwrap();
        odd.seq = u64::MAX;
        odd.sha256 = Some("AB".repeat(32));
        odd.prev_hash = String::new();
        odd.hash = "not a hash".into();
        odd.related = vec!["checkpoint:7".into(), String::new()];
        let v = encode(&odd);
        assert_eq!(decode(b"k", &v).unwrap(), odd);
    }

    #[test]
    fn every_kind_has_its_own_code_and_comes_back() {
        let mut codes: Vec<u8> = ALL_KINDS.iter().map(|k| kind_code(*k)).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), ALL_KINDS.len());
        for k in ALL_KINDS {
            let mut r = full();
            r.kind = *k;
            r.hash = r.compute_hash();
            same_canonical(&r);
        }
        // Stored for 30 months: the codes already written never move.
        assert_eq!(kind_code(EventKind::SubmissionAccepted), 1);
        assert_eq!(kind_code(EventKind::DeliveryReceiptSent), 13);
        assert_eq!(kind_code(EventKind::Other), 25);
    }

    #[test]
    fn the_compact_form_is_about_half_the_json() {
        let r = full();
        let json = serde_json::to_vec(&r).unwrap();
        let compact = encode(&r);
        assert!(
            compact.len() * 100 < json.len() * 60,
            "{} vs {} bytes",
            compact.len(),
            json.len()
        );
    }

    #[test]
    fn json_records_of_older_stores_are_still_read() {
        let r = full();
        let json = serde_json::to_vec(&r).unwrap();
        assert_eq!(decode(b"k", &json).unwrap(), r);
    }

    #[test]
    fn damage_is_an_error_never_a_panic() {
        let v = encode(&full());
        // Every truncation, and every single-byte change, either fails to decode or
        // decodes to a record whose hash no longer matches (the chain check catches it).
        for n in 0..v.len() {
            assert!(decode(b"k", &v[..n]).is_err(), "truncated at {n}");
        }
        for i in 0..v.len() {
            for b in [0x00, 0x01, 0x7f, 0x80, 0xff] {
                let mut w = v.clone();
                if w[i] == b {
                    continue;
                }
                w[i] = b;
                if let Ok(r) = decode(b"k", &w) {
                    assert_ne!(
                        r.compute_hash(),
                        r.hash,
                        "byte {i} set to {b:#x} went unnoticed"
                    );
                }
            }
        }
        let mut trailing = v.clone();
        trailing.push(0);
        let e = decode(b"k", &trailing).unwrap_err().to_string();
        assert!(e.contains("after the last field"), "{e}");
        assert!(
            decode(b"k", &[7, 1, 2])
                .unwrap_err()
                .to_string()
                .contains("first byte 0x07")
        );
        assert!(decode(b"k", &[]).is_err());
        // A count far beyond the value does not allocate or panic: a valid head (seq 1,
        // time, kind, no optional field, empty zone), then 2^63 recipients.
        let mut huge = vec![COMPACT_V1, 1];
        huge.extend_from_slice(&[0; 12]);
        huge.extend_from_slice(&[kind_code(EventKind::Other), 0, 0]);
        huge.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x80, 0x01]);
        let e = decode(b"k", &huge).unwrap_err().to_string();
        assert!(e.contains("inside recipients"), "{e}");
        // A field this version does not know is refused, not skipped.
        let mut v = encode(&full());
        let at = 1 + 1 + 12 + 1; // version, seq 41, time, kind
        assert_eq!(v[at], 127, "every optional field is set in full()");
        v[at] = 0xff;
        v.insert(at + 1, 0x01);
        let e = decode(b"k", &v).unwrap_err().to_string();
        assert!(e.contains("unknown fields"), "{e}");
    }

    /// The layout is read back for 30 months: a change to it must be a new version byte,
    /// never an edit of this one. These bytes were written by the first version.
    #[test]
    fn the_layout_of_version_1_does_not_change() {
        let r = TraceEvent::new(
            EventKind::Delivered,
            Timestamp::new(1_780_000_000, 5).unwrap(),
        )
        .msgid("m")
        .sender("s")
        .recipient("r")
        .into_record(300, GENESIS_HASH);
        let mut want = hex::decode(concat!(
            "01",               // version
            "ac02",             // seq 300
            "000000006a18a500", // seconds (1,780,000,000: June 2026)
            "00000005",         // nanoseconds
            "0b",               // Delivered
            "05",               // msgid and sender present
            "052b30323030",     // zone "+0200" (Italian summer time)
            "016d",             // msgid "m"
            "0173",             // sender "s"
            "010172",           // recipients ["r"]
            "00",               // related []
            "00",               // prev_hash as 32 bytes
        ))
        .unwrap();
        want.extend_from_slice(&[0; 32]);
        want.push(0);
        want.extend_from_slice(&hex::decode(&r.hash).unwrap());
        assert_eq!(hex::encode(encode(&r)), hex::encode(&want));
        assert_eq!(decode(b"k", &want).unwrap(), r);
    }
}
