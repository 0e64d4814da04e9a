//! The stored form of a message record (the value under its key in the `messages`
//! tree): a compact layout written now, JSON in stores of schema 4 and older, still read.
//!
//! What it owns: the byte layout of a [`MessageRecord`] at rest. What it must distrust:
//! the stored bytes (a disk or a copied database can be damaged): every failure to decode
//! is an error naming the problem, never a panic.

use super::{MessageRecord, Uid, decode};
use crate::store::StoreError;
use crate::store::blobs::BlobId;
use crate::store::kv::TxTree;
use crate::store::tx::{TxResult, abort};

/// The first byte of a message record's compact stored form; a record stored as JSON
/// (schema 4 and older) starts with `{` and is still read.
const MESSAGE_COMPACT_V1: u8 = 1;

/// The stored form of a message record (about a third of its JSON): the version byte,
/// then with [`super::codec`]'s primitives: uid (varint), blob (hash: its 32 bytes), size
/// (varint), flags (list), internal date (time). Nothing may follow. Codes and order are
/// read back for as long as the message is kept: change them only with a new version byte.
pub(crate) fn encode_message(m: &MessageRecord) -> Vec<u8> {
    use crate::store::codec::{put_hash, put_list, put_time, put_varint};
    let mut out = Vec::with_capacity(64);
    out.push(MESSAGE_COMPACT_V1);
    put_varint(&mut out, m.uid.into());
    put_hash(&mut out, m.blob.as_str());
    put_varint(&mut out, m.size);
    put_list(&mut out, &m.flags);
    put_time(&mut out, m.internal_date);
    out
}

/// A message record in either stored form. What it distrusts: the bytes (from disk).
pub(crate) fn decode_message(v: &[u8]) -> Result<MessageRecord, StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt {
        what: "message".into(),
        detail,
    };
    match v.first() {
        Some(b'{') => decode("message", v),
        Some(&MESSAGE_COMPACT_V1) => {
            let mut r = crate::store::codec::Reader::new(&v[1..]);
            let mut fields = || -> Result<_, crate::store::codec::DecodeError> {
                let uid = r.varint("uid")?;
                let blob = r.hash("blob")?;
                let size = r.varint("size")?;
                let flags = r.list("flags")?;
                let internal_date = r.time("internal date")?;
                Ok((uid, blob, size, flags, internal_date))
            };
            let (uid, blob, size, flags, internal_date) =
                fields().map_err(|e| corrupt(e.to_string()))?;
            r.finish().map_err(|e| corrupt(e.to_string()))?;
            Ok(MessageRecord {
                uid: Uid::try_from(uid).map_err(|_| corrupt(format!("uid {uid} out of range")))?,
                blob: BlobId::parse(&blob).map_err(|e| corrupt(e.to_string()))?,
                size,
                flags,
                internal_date,
            })
        }
        Some(b) => Err(corrupt(format!(
            "unknown record form (first byte {b:#04x})"
        ))),
        None => Err(corrupt("empty value".into())),
    }
}

/// The message record under `key` in a transaction.
pub(crate) fn get_message(t: &TxTree<'_>, key: &[u8]) -> TxResult<Option<MessageRecord>> {
    match t.get(key)? {
        None => Ok(None),
        Some(v) => match decode_message(&v) {
            Ok(m) => Ok(Some(m)),
            Err(e) => abort(e),
        },
    }
}

#[cfg(test)]
mod tests {
    //! Unit tests: their unwraps and expects see only values and stores built here.
    use super::*;
    use crate::pec::address::PecAddress;
    use crate::store::messages::INBOX;
    use crate::store::{Batch, Delivery};
    use jiff::Timestamp;

    use crate::store::messages::tests::{add, open};

    fn record() -> MessageRecord {
        MessageRecord {
            uid: 4_000_000_000,
            blob: BlobId::of(b"body"),
            size: 52_428_800,
            flags: vec!["\\Seen".into(), "$Etichetta-è".into(), String::new()],
            internal_date: Timestamp::new(1_780_000_000, 987_654_321).expect("time"),
        }
    }

    #[test]
    fn a_message_record_comes_back_from_its_compact_form() {
        let m = record();
        let v = encode_message(&m);
        assert_eq!(decode_message(&v).expect("decode"), m);
        let json = serde_json::to_vec(&m).expect("json");
        assert!(
            v.len() * 2 < json.len(),
            "{} vs {} bytes",
            v.len(),
            json.len()
        );
        // Older stores' JSON is still read.
        assert_eq!(decode_message(&json).expect("json decode"), m);
        let early = MessageRecord {
            uid: 1,
            flags: vec![],
            internal_date: Timestamp::new(-1, -5).expect("time"),
            ..m
        };
        assert_eq!(
            decode_message(&encode_message(&early)).expect("decode"),
            early
        );
    }

    /// Read back for as long as the message is kept: a change of layout is a new version
    /// byte, never an edit of this one.
    #[test]
    fn the_layout_of_a_message_record_does_not_change() {
        let m = MessageRecord {
            uid: 300,
            blob: BlobId::of(b""),
            size: 5,
            flags: vec!["\\Seen".into()],
            internal_date: Timestamp::new(1_780_000_000, 5).expect("time"),
        };
        let want = format!(
            "01ac0200{}05010{}{}{}",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "55c5365656e",
            "000000006a18a500",
            "00000005"
        );
        assert_eq!(hex::encode(encode_message(&m)), want);
        assert_eq!(
            decode_message(&hex::decode(&want).expect("hex")).expect("decode"),
            m
        );
    }

    #[test]
    fn a_damaged_message_record_is_an_error_never_a_panic() {
        let v = encode_message(&record());
        for n in 0..v.len() {
            assert!(decode_message(&v[..n]).is_err(), "truncated at {n}");
        }
        for i in 0..v.len() {
            for b in [0x00, 0x01, 0x7f, 0x80, 0xff] {
                let mut w = v.clone();
                w[i] = b;
                // Decodes to something, or fails with a reason: never panics.
                if let Err(e) = decode_message(&w) {
                    assert!(!e.to_string().is_empty());
                }
            }
        }
        let mut trailing = v.clone();
        trailing.push(0);
        let e = decode_message(&trailing)
            .expect_err("trailing byte")
            .to_string();
        assert!(e.contains("after the last field"), "{e}");
        // A uid beyond u32 is damage, not a wrap.
        let mut big = vec![MESSAGE_COMPACT_V1, 0x80, 0x80, 0x80, 0x80, 0x10];
        big.extend_from_slice(&v[6..]);
        let e = decode_message(&big).expect_err("uid").to_string();
        assert!(e.contains("uid 4294967296 out of range"), "{e}");
    }

    /// A store of schema 4 holds its message records as JSON: they are read, and the
    /// next change of a record writes it in the compact form.
    #[test]
    fn json_message_records_of_an_older_store_are_read_and_rewritten_on_change() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = PecAddress::parse("old@example.it").expect("address");
        let uid = {
            let s = open(dir.path());
            add(&s, &a);
            let blob = s.blobs().put(b"Subject: x\r\n\r\nbody").expect("blob");
            let d = s
                .commit(Batch::new().deliver(Delivery::inbox(a.clone(), blob, Timestamp::now())))
                .expect("deliver");
            let tree = &s.trees().messages;
            for kv in tree.iter() {
                let (k, v) = kv.expect("entry");
                assert_eq!(v[0], MESSAGE_COMPACT_V1);
                let m = decode_message(&v).expect("decode");
                tree.insert(&k, serde_json::to_vec(&m).expect("json"))
                    .expect("insert");
            }
            s.flush().expect("flush");
            d.delivered[0].uid
        };
        let s = open(dir.path());
        let before = s.messages(&a, INBOX).expect("messages");
        assert_eq!(before.len(), 1);
        s.commit(Batch::new().set_flags(a.clone(), INBOX, uid, vec!["\\Seen".into()]))
            .expect("flags");
        let after = s.messages(&a, INBOX).expect("messages");
        assert_eq!(after[0].flags, ["\\Seen"]);
        assert_eq!(
            (after[0].uid, &after[0].blob),
            (before[0].uid, &before[0].blob)
        );
        let firsts: Vec<u8> = s
            .trees()
            .messages
            .iter()
            .map(|kv| kv.expect("entry").1[0])
            .collect();
        // The INBOX record, rewritten; the security archive's copy, untouched.
        assert_eq!(
            firsts.iter().filter(|b| **b == MESSAGE_COMPACT_V1).count(),
            1,
            "{firsts:?}"
        );
        assert_eq!(
            firsts.iter().filter(|b| **b == b'{').count(),
            1,
            "{firsts:?}"
        );
    }
}
