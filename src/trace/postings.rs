//! The index entries of sealed records, grouped (schema 8, sled stores): when the
//! committer removes a sealed segment's records from the `trace` tree
//! ([`crate::store::commit`]), it replaces their `trace_keys` entries (one per record
//! and key) with one entry per key and segment (a posting list):
//!
//! | key | value |
//! |---|---|
//! | the tag with its high bit set ([`GROUP`]), first 8 bytes of the key's SHA-256, **the segment's first seq** | the seqs holding the key: varints, the first as its distance from the segment's first seq, each next one as its distance from the one before |
//!
//! A record's own entry (tag, hash, its seq; empty value) is read by the same code
//! ([`entry_seqs`]); a query scans the groups and the own entries of its key and merges
//! them. In key order the seqs come out in seq order: a segment's seqs lie between its
//! first seq and the next segment's. A group's key never equals a record's own entry,
//! so a purge that removes a record's own entries cannot take a group with them.
//! Grouping takes a message's five to thirty entries down to two or three
//! (its Message-ID and identificativo once per segment, its mailboxes shared with the
//! other messages of the segment), and sled's overhead per entry with them.
//!
//! A purge removes a group when it purges the whole segment ([`group_keys`]); until
//! then a group may name purged seqs, which readers do not find (the purge floor hides
//! them). A copy of the store writes the records' own entries ([`entry_seqs`]), since the
//! copied records are in the target's tree.
//!
//! What it distrusts: values read from the database. A value that does not decode (a
//! truncated varint, seqs past `u64::MAX` or not increasing) is an error naming the
//! entry, never a panic.

use std::collections::BTreeMap;

use super::log::{TraceError, seq_of_index_key};
use crate::store::codec::{Reader, put_varint};

/// The bit set in the tag of a group's key.
pub(crate) const GROUP: u8 = 0x80;

/// The prefix of the groups of the key whose records' own entries start with `own`.
pub(crate) fn group_prefix(mut own: [u8; 9]) -> [u8; 9] {
    own[0] |= GROUP;
    own
}

/// The key of a record's own entry for seq `seq`, given an entry's key (a group's or a
/// record's own) naming it.
pub(crate) fn own_key(entry: &[u8], seq: u64) -> Vec<u8> {
    let mut k = entry[..entry.len().saturating_sub(8)].to_vec();
    if let Some(tag) = k.first_mut() {
        *tag &= !GROUP;
    }
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The seqs an entry of `trace_keys` (or of an older index tree, whose values are
/// empty) points at: its own for a record's entry, the group's otherwise.
pub(crate) fn entry_seqs(k: &[u8], v: &[u8]) -> Result<Vec<u64>, TraceError> {
    let Some(base) = seq_of_index_key(k) else {
        return Ok(Vec::new());
    };
    if v.is_empty() {
        return Ok(vec![base]);
    }
    let corrupt = |detail: String| TraceError::Corrupt {
        key: hex::encode(k),
        detail,
    };
    let mut out = Vec::new();
    let mut r = Reader::new(v);
    let mut at = base;
    let mut first = true;
    while !r.is_empty() {
        let d = r
            .varint("a seq of the group")
            .map_err(|e| corrupt(e.to_string()))?;
        if !first && d == 0 {
            return Err(corrupt("a seq repeated in the group".into()));
        }
        at = at
            .checked_add(d)
            .ok_or_else(|| corrupt("a seq past the largest".into()))?;
        out.push(at);
        first = false;
    }
    Ok(out)
}

/// The value of a group of `seqs` (increasing, none below `first`).
fn group_value(first: u64, seqs: &[u64]) -> Vec<u8> {
    let mut v = Vec::with_capacity(seqs.len() * 2);
    let mut at = first;
    for &s in seqs {
        put_varint(&mut v, s - at);
        at = s;
    }
    v
}

/// The prefixes (tag and hash) a record in stored form is indexed under in
/// `trace_keys`; none for a record of schema 5 or older, indexed in the older trees, and
/// none for a record that does not decode (logged: its own entries, if any, stay as
/// they are, and verifying the log reports it).
pub(crate) fn prefixes(seq: u64, stored: &[u8]) -> Vec<[u8; 9]> {
    super::tail::Indexed::of(seq, stored).keys
}

/// The writes to `trace_keys` that group the entries of `records` (stored forms, in seq
/// order), the records of the segment starting at `first` still present: their own
/// entries removed, one group per key written. Idempotent: done again (a crash before
/// the records left the tree), it writes the same groups.
pub(crate) fn regroup(
    first: u64,
    records: &[(u64, impl AsRef<[u8]>)],
) -> Result<crate::store::kv::Batch, TraceError> {
    let mut groups: BTreeMap<[u8; 9], Vec<u64>> = BTreeMap::new();
    let mut batch = crate::store::kv::Batch::default();
    for (seq, v) in records {
        for p in prefixes(*seq, v.as_ref()) {
            batch.remove([&p[..], &seq.to_be_bytes()].concat());
            let seqs = groups.entry(p).or_default();
            // A record indexed twice under one key (two equal mailboxes) is listed once.
            if seqs.last() != Some(seq) {
                seqs.push(*seq);
            }
        }
    }
    for (p, seqs) in groups {
        batch.insert(
            [&group_prefix(p)[..], &first.to_be_bytes()].concat(),
            group_value(first, &seqs),
        );
    }
    Ok(batch)
}

/// Groups the index entries of `records` (stored forms, in seq order), the records of
/// the sealed segment `first ..= last` still present: their `trace_keys` entries
/// ([`regroup`]), then their `trace_time` entries ([`super::spans::regroup`]).
/// Idempotent.
pub(crate) fn group_segment(
    trees: &super::log::TraceTrees,
    first: u64,
    last: u64,
    records: &[(u64, impl AsRef<[u8]>)],
) -> Result<(), TraceError> {
    trees.keys.apply_batch(regroup(first, records)?)?;
    trees
        .by_time
        .apply_batch(super::spans::regroup(first, last, records)?)?;
    Ok(())
}

/// The keys of the groups of the segment starting at `first`, given all its records
/// (purged ones included): what a purge of the whole segment removes.
pub(crate) fn group_keys(
    first: u64,
    records: &[(u64, impl AsRef<[u8]>)],
) -> Result<Vec<Vec<u8>>, TraceError> {
    let mut keys = std::collections::BTreeSet::new();
    for (seq, v) in records {
        for p in prefixes(*seq, v.as_ref()) {
            keys.insert([&group_prefix(p)[..], &first.to_be_bytes()].concat());
        }
    }
    Ok(keys.into_iter().collect())
}

#[cfg(test)]
mod tests {
    //! Their unwraps see only values the tests make.
    use super::*;

    fn key(seq: u64) -> Vec<u8> {
        [&[1u8; 9][..], &seq.to_be_bytes()].concat()
    }

    #[test]
    fn a_group_reads_back_its_seqs_and_a_record_entry_its_own() {
        let seqs = [100, 101, 130, 4195];
        let v = group_value(100, &seqs);
        assert_eq!(v.len(), 1 + 1 + 1 + 2);
        assert_eq!(entry_seqs(&key(100), &v).unwrap(), seqs);
        assert_eq!(entry_seqs(&key(7), b"").unwrap(), [7]);
        // A group whose first record is after the segment's first seq.
        assert_eq!(
            entry_seqs(&key(100), &group_value(100, &[103])).unwrap(),
            [103]
        );
    }

    #[test]
    fn a_damaged_group_is_an_error_naming_the_entry() {
        for (v, why) in [
            (vec![0x80], "ends inside"),
            (vec![0x01, 0x00], "repeated"),
            (vec![0xff; 11], "too long"),
        ] {
            let e = entry_seqs(&key(5), &v).unwrap_err().to_string();
            assert!(e.contains(&hex::encode(key(5))) && e.contains(why), "{e}");
        }
        let mut past = Vec::new();
        put_varint(&mut past, u64::MAX);
        let e = entry_seqs(&key(5), &past).unwrap_err().to_string();
        assert!(e.contains("past the largest"), "{e}");
    }
}
