//! Tests of the read side over a real store: records stored without `prev_hash`, the
//! hashed index, and a store whose older part was written by schema 5. Their unwraps see
//! only values the tests make.

use jiff::{SignedDuration, Timestamp};

use super::{Index, TAG_MSGID, TraceQuery, hashed, index_keys, old_index_keys, seq_key};
use crate::store::{Batch, Store};
use crate::trace::walk::tests::{store, t0};
use crate::trace::{EventKind, TraceEvent, TraceRecord};

fn event(i: u32, t: Timestamp) -> TraceEvent {
    TraceEvent::new(EventKind::Relayed, t)
        .msgid(format!("<m{}@x.it>", i % 2))
        .ident(format!("opec.{i}@pec.x.it"))
        .sender("Alice@PEC.x.it")
        .recipient(format!("bob{i}@pec.y.it"))
        .message_bytes(b"body")
}

fn msgid(m: &str) -> TraceQuery {
    TraceQuery {
        msgid: Some(m.into()),
        ..Default::default()
    }
}

fn ident(i: &str) -> TraceQuery {
    TraceQuery {
        ident: Some(i.into()),
        ..Default::default()
    }
}

fn seqs(rs: &[TraceRecord]) -> Vec<u64> {
    rs.iter().map(|r| r.seq).collect()
}

fn query(s: &Store, q: TraceQuery) -> Vec<u64> {
    seqs(&s.trace().query(&q).unwrap())
}

/// Rewrites records `seqs` as schema 5 held them: compact form 1, index entries in the
/// three older trees rather than in `trace_keys`.
fn as_schema_5(s: &Store, seqs: std::ops::RangeInclusive<u64>) {
    let t = &s.trees().trace;
    for seq in seqs {
        let r = s.trace().get(seq).unwrap().unwrap();
        t.records
            .insert(seq_key(seq), crate::trace::stored::encode_v1(&r))
            .unwrap();
        for (index, key) in index_keys(&r).into_iter().chain(old_index_keys(&r)) {
            match index {
                Index::Keys => t.keys.remove(&key).unwrap(),
                Index::Time => {}
                Index::OldMsgId => t.by_msgid.insert(&key, &[]).unwrap(),
                Index::OldIdent => t.by_ident.insert(&key, &[]).unwrap(),
                Index::OldMailbox => t.by_mailbox.insert(&key, &[]).unwrap(),
            }
        }
    }
}

fn first_bytes(s: &Store) -> Vec<u8> {
    let t = &s.trees().trace;
    t.records.iter().map(|kv| kv.unwrap().1[0]).collect()
}

#[test]
fn records_come_back_with_the_previous_hash_they_were_chained_to() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = store(dir.path());
    for i in 0..4 {
        s.commit(Batch::new().trace(event(i, t0()))).unwrap();
    }
    assert_eq!(first_bytes(&s), [2, 2, 2, 2], "written in form 2");
    let all = s.trace().query(&TraceQuery::default()).unwrap();
    assert_eq!(seqs(&all), [1, 2, 3, 4]);
    assert_eq!(all[0].prev_hash, crate::trace::GENESIS_HASH);
    for w in all.windows(2) {
        assert_eq!(w[1].prev_hash, w[0].hash);
    }
    // One by one, out of order, each reads its predecessor's hash.
    for r in all.iter().rev() {
        let got = s.trace().get(r.seq).unwrap().unwrap();
        assert_eq!(&got, r);
        assert_eq!(got.compute_hash(), got.hash);
    }
    // Through an index, non-consecutive records.
    let even = s.trace().query(&msgid("m0@x.it"));
    assert_eq!(even.unwrap(), [all[0].clone(), all[2].clone()]);
    let said = s.trace().events(&TraceQuery {
        msgid: Some("<m0@x.it>".into()),
        limit: Some(1),
        ..Default::default()
    });
    assert_eq!(said.unwrap(), [event(0, t0())]);
    assert!(s.trace().verify(None).unwrap().intact());
}

#[test]
fn a_record_after_a_gap_is_an_error_to_read_and_a_problem_to_verify() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = store(dir.path());
    for i in 0..3 {
        s.commit(Batch::new().trace(event(i, t0()))).unwrap();
    }
    s.trees().trace.records.remove(seq_key(2)).unwrap();
    let e = s.trace().get(3).unwrap_err().to_string();
    assert!(e.contains("record 2 is missing"), "{e}");
    // What record 3 says is still readable: `events` reads no predecessor.
    let q = ident("opec.2@pec.x.it");
    assert!(s.trace().query(&q).is_err());
    assert_eq!(s.trace().events(&q).unwrap(), [event(2, t0())]);
    let r = s.trace().verify(None).unwrap();
    assert!(!r.intact(), "{r:?}");
}

#[test]
fn a_collision_in_the_hashed_index_costs_a_read_not_a_wrong_answer() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = store(dir.path());
    for i in 0..3 {
        s.commit(Batch::new().trace(event(i, t0()))).unwrap();
    }
    // Record 2 (Message-ID m1) filed under m0's hash, as a collision would file it.
    let keys = &s.trees().trace.keys;
    keys.insert(hashed(TAG_MSGID, "m0@x.it", 2), &[]).unwrap();
    assert_eq!(query(&s, msgid("<m0@x.it>")), [1, 3]);
    assert_eq!(query(&s, msgid("m1@x.it")), [2]);
    assert_eq!(query(&s, msgid("m2@x.it")), Vec::<u64>::new());
    // Each entry is 17 bytes, whatever the length of the text.
    for kv in keys.iter() {
        assert_eq!(kv.unwrap().0.len(), 17);
    }
}

#[test]
fn a_store_of_schema_5_is_read_queried_verified_and_purged_with_the_new_records() {
    let dir = tempfile::tempdir().unwrap();
    let (s, me) = store(dir.path());
    for i in 0..3 {
        s.commit(Batch::new().trace(event(i, t0()))).unwrap();
    }
    as_schema_5(&s, 1..=3);
    let t = &s.trees().trace;
    assert!(t.keys.is_empty().unwrap());
    assert_eq!(t.by_ident.len().unwrap(), 3);
    // Then this version writes on.
    let later = t0() + SignedDuration::from_hours(1);
    for i in 3..5 {
        s.commit(Batch::new().trace(event(i, later))).unwrap();
    }
    assert_eq!(first_bytes(&s), [1, 1, 1, 2, 2]);
    let all = s.trace().query(&TraceQuery::default()).unwrap();
    assert_eq!(all[3].prev_hash, all[2].hash, "form 2 after form 1");
    let q = TraceQuery::default;
    let by = |q: TraceQuery| query(&s, q);
    assert_eq!(by(msgid("m0@x.it")), [1, 3, 5]);
    assert_eq!(
        by(TraceQuery {
            mailbox: Some("alice@pec.x.it".into()),
            ..q()
        }),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(
        by(TraceQuery {
            mailbox: Some("<ALICE@pec.x.it>".into()),
            limit: Some(4),
            ..q()
        }),
        [1, 2, 3, 4]
    );
    for (i, want) in [(2, 3), (4, 5)] {
        assert_eq!(by(ident(&format!("opec.{i}@pec.x.it"))), [want]);
    }
    assert_eq!(
        by(TraceQuery {
            since: Some(later),
            ..q()
        }),
        [4, 5]
    );
    assert!(s.trace().verify(None).unwrap().intact());
    let mut out = Vec::new();
    s.trace().export(&mut out).unwrap();
    let r = crate::trace::verify::verify_export(&out[..], Some(me)).unwrap();
    assert!(r.intact() && r.records == 5, "{r:?}");

    // Past the retention, a purge clears the entries of both schemas.
    let cp = s.checkpoint_now().unwrap().unwrap();
    let now = later + SignedDuration::from_hours(24 * 31 * 31);
    s.purge_expired(now).unwrap();
    let t = &s.trees().trace;
    for tree in [&t.by_msgid, &t.by_ident, &t.by_mailbox] {
        assert!(tree.is_empty().unwrap());
    }
    // Left: the records binding the checkpoint and naming the anchor (neither has a
    // Message-ID, an ident or a mailbox).
    assert!(t.keys.is_empty().unwrap());
    let left = s.trace().query(&TraceQuery::default()).unwrap();
    let kinds: Vec<_> = left.iter().map(|r| (r.seq, r.kind)).collect();
    assert_eq!(
        kinds,
        [(6, EventKind::Checkpoint), (7, EventKind::Purged)],
        "{left:?}"
    );
    assert_eq!(cp.seq, 5);
    assert_eq!(left[0].prev_hash, cp.head_hash, "chained to the anchor");
    assert_eq!(s.trace().get(6).unwrap().unwrap(), left[0]);
    assert_eq!(s.trace().get(7).unwrap().unwrap(), left[1]);
    assert!(s.trace().verify(None).unwrap().intact());
}

#[test]
fn an_interrupted_purge_leaves_records_that_queries_skip_not_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = store(dir.path());
    for i in 0..4 {
        s.commit(Batch::new().trace(event(i, t0()))).unwrap();
    }
    let cp = s.checkpoint_now().unwrap().unwrap();
    assert_eq!(cp.seq, 4);
    s.commit(Batch::new().trace(event(4, t0()))).unwrap();
    // What a crash after the anchor was stored and the first chunk removed leaves.
    let purged = crate::trace::TraceLog::purge_event(&cp, 30, t0());
    let anchor = crate::store::batch::Op::SetAnchor(cp.clone());
    s.commit(Batch::new().push(anchor).trace(purged)).unwrap();
    for seq in 1..=2 {
        s.trees().trace.records.remove(seq_key(seq)).unwrap();
    }
    assert_eq!(
        s.trace().get(3).unwrap(),
        None,
        "left for the purge to finish"
    );
    let after = s.trace().get(cp.seq + 1).unwrap().unwrap();
    assert_eq!(after.prev_hash, cp.head_hash);
    let all = query(&s, TraceQuery::default());
    assert!(!all.contains(&3) && all.ends_with(&[5, 6, 7]), "{all:?}");
    let m0 = query(&s, msgid("m0@x.it"));
    assert_eq!(m0, [6], "records 1 and 3 are purged or being purged");
    assert!(s.trace().verify(None).unwrap().intact());
}
