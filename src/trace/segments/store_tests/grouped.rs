//! The grouped index entries of sealed records ([`crate::trace::postings`],
//! [`crate::trace::spans`]): one entry per key and segment and one time span per segment,
//! found as the records' own entries were (by a time scan during a seal too), removed
//! whole by the purge of their segment, rebuilt for a store sealed by schema 7, taken
//! apart by a copy.
//! Their unwraps see only values the tests make.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::{answers, event, options, same, sealed_upto, with_events};
use crate::store::{Batch, Store};
use crate::trace::TraceQuery;
use crate::trace::log::seq_of_index_key;
use crate::trace::postings::entry_seqs;
use crate::trace::spans::{SPAN_PREFIX, Span, TIME_KEYS_END, TimeScan, spans};

/// The own entries of `trace_time` (seqs) and the spans.
fn times(s: &Store) -> (Vec<u64>, Vec<Span>) {
    let trees = &s.trees().trace;
    // In the tree (an older pecd's, a copy's) and in memory, given once, in key order.
    let mut own: Vec<Vec<u8>> = trees
        .by_time
        .range(..&SPAN_PREFIX[..])
        .map(|kv| kv.unwrap().0.to_vec())
        .collect();
    own.extend(
        trees
            .tail
            .as_ref()
            .unwrap()
            .times([0; 16], TIME_KEYS_END)
            .iter()
            .map(|k| k.to_vec()),
    );
    own.sort();
    own.dedup();
    let own = own.iter().map(|k| seq_of_index_key(k).unwrap()).collect();
    (own, spans(trees).unwrap())
}

/// Every `trace_keys` entry, in the tree or in memory (the unsealed records' own
/// entries: [`crate::trace::tail`]), in key order: its key's seq, whether it is a
/// group, the seqs it names. An entry in both (a copy writes the records' own entries
/// in the tree) is given once, as queries see it.
fn entries(s: &Store) -> Vec<(u64, bool, Vec<u64>)> {
    let trees = &s.trees().trace;
    let mut all: Vec<(sled::IVec, sled::IVec)> = trees.keys.iter().map(|kv| kv.unwrap()).collect();
    all.extend(
        trees
            .tail
            .as_ref()
            .unwrap()
            .keys()
            .into_iter()
            .map(|k| (k.into(), sled::IVec::default())),
    );
    all.sort();
    all.dedup_by(|a, b| a.0 == b.0);
    all.into_iter()
        .map(|(k, v)| {
            (
                seq_of_index_key(&k).unwrap(),
                !v.is_empty(),
                entry_seqs(&k, &v).unwrap(),
            )
        })
        .collect()
}

/// How many distinct keys (tag and text) the events `from .. to` of [`event`] have.
fn distinct_keys(from: u32, to: u32) -> usize {
    let mut keys = std::collections::BTreeSet::new();
    for i in from..to {
        keys.insert(format!("m{}", i % 3));
        keys.insert(format!("i{i}"));
        keys.insert("alice".to_string());
        keys.insert(format!("bob{}", i % 4));
    }
    keys.len()
}

#[test]
fn a_sealed_segments_entries_are_one_per_key_and_answer_as_the_records_own() {
    let dir = tempfile::tempdir().unwrap();
    let s = with_events(dir.path(), 1 << 20, 40);
    let whole = answers(&s);
    assert!(entries(&s).iter().all(|(_, group, _)| !group));
    assert_eq!(entries(&s).len(), 40 * 4);
    drop(s);
    std::thread::sleep(Duration::from_millis(100));
    let s = Store::open(dir.path(), options(8)).unwrap();
    // A segment of eight is sealed once eight more follow it: up to 32 of 40.
    sealed_upto(&s, 32);
    same(&answers(&s), &whole);
    let upto = s.trees().trace.sealed.as_ref().unwrap().upto();
    let es = entries(&s);
    // Sealed segments: one group per key of each, naming that segment's seqs only.
    for first in (1..upto).step_by(8) {
        let groups: Vec<_> = es.iter().filter(|(k, _, _)| *k == first).collect();
        assert!(groups.iter().all(|(_, group, _)| *group), "{groups:?}");
        let named: usize = groups.iter().map(|(_, _, seqs)| seqs.len()).sum();
        assert_eq!(named, 8 * 4, "segment {first}");
        assert_eq!(
            groups.len(),
            distinct_keys(first as u32 - 1, first as u32 + 7)
        );
        assert!(
            groups
                .iter()
                .all(|(_, _, seqs)| seqs.iter().all(|q| (first..first + 8).contains(q)))
        );
    }
    assert!(
        es.iter().all(|(k, group, _)| (*k <= upto) == *group),
        "entries of the tree's records stay their own"
    );
    assert_eq!(
        es.len(),
        (1..upto)
            .step_by(8)
            .map(|f| distinct_keys(f as u32 - 1, f as u32 + 7))
            .sum::<usize>()
            + (40 - upto as usize) * 4
    );
    // One span per sealed segment, the tree's records' own time entries.
    let (mut own, spans) = times(&s);
    own.sort();
    assert_eq!(own, (upto + 1..=40).collect::<Vec<_>>());
    assert_eq!(
        spans.iter().map(|s| (s.first, s.last)).collect::<Vec<_>>(),
        (1..upto).step_by(8).map(|f| (f, f + 7)).collect::<Vec<_>>()
    );
    // Times are t0 + i % 7 seconds: each segment of eight spans all seven.
    let prefix =
        |secs| crate::trace::log::time_prefix(event(0).time + SignedDuration::from_secs(secs));
    assert!(
        spans
            .iter()
            .all(|s| s.min == prefix(0) && s.max == prefix(6))
    );
    // A reopen reads the same.
    drop(s);
    std::thread::sleep(Duration::from_millis(100));
    let s = Store::open(dir.path(), options(8)).unwrap();
    same(&answers(&s), &whole);
}

#[test]
fn a_time_scan_gives_every_entry_once_in_order_while_a_seal_moves_records() {
    let dir = tempfile::tempdir().unwrap();
    let s = with_events(dir.path(), 1 << 20, 30);
    let trees = &s.trees().trace;
    let keys = |scan: &mut dyn Iterator<Item = _>| -> Vec<[u8; 16]> {
        scan.map(|kv: Result<([u8; 16], _), _>| kv.unwrap().0)
            .collect()
    };
    let all = keys(&mut TimeScan::new(trees, [0; 16], TIME_KEYS_END));
    assert_eq!(all.len(), 30);
    assert!(all.windows(2).all(|w| w[0] < w[1]));
    // Between the scan's read of the tree's entries and its read of the spans, records
    // 1 to 8 move into a file, as the committer moves them: read twice, given once.
    let moving = s.trees().trace.clone();
    crate::trace::log::BEFORE_GROUPS.with(|h| {
        *h.borrow_mut() = Some(Box::new(move || seal_as_the_committer(&moving, 1, 8)));
    });
    let got = keys(&mut TimeScan::new(trees, [0; 16], TIME_KEYS_END));
    crate::trace::log::BEFORE_GROUPS.with(|h| h.borrow_mut().take());
    assert_eq!(spans(trees).unwrap().len(), 1);
    assert_eq!(got, all);
    // Read in two parts, with the seal between them, nothing changes either.
    let mut scan = TimeScan::new(trees, [0; 16], TIME_KEYS_END);
    let mut got = keys(&mut scan.by_ref().take(10));
    seal_as_the_committer(trees, 9, 16);
    got.extend(keys(&mut scan));
    assert_eq!(got, all);
    // A scan started now reads them from the file, within its range only.
    let mid = all[12];
    let from_mid = keys(&mut TimeScan::new(trees, mid, TIME_KEYS_END));
    assert_eq!(from_mid, all[12..]);
}

#[test]
fn a_seal_cut_short_by_a_crash_has_its_entries_grouped_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let before = super::seal_cut_short_by_a_crash(dir.path());
    let s = Store::open(dir.path(), options(1 << 20)).unwrap();
    let es = entries(&s);
    assert_eq!(
        es.iter().filter(|(k, _, _)| *k <= 4).count(),
        distinct_keys(0, 4)
    );
    assert!(es.iter().all(|(k, group, _)| (*k <= 4) == *group));
    same(&answers(&s), &before);
}

#[test]
fn purging_a_segment_in_two_purges_leaves_no_entry_for_its_records() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), options(4)).unwrap();
    let now: Timestamp = "2026-01-15T09:00:00Z".parse().unwrap();
    let later = now + SignedDuration::from_hours(24 * 31 * 32);
    let at = |i: u32, t: Timestamp| {
        let mut ev = event(i);
        ev.time = t;
        s.commit(Batch::new().trace(ev)).unwrap();
    };
    // Records 1-10 old; the first checkpoint covers them, its record (11) and 12-21 are
    // young at `now`; the second covers 1-21, old at `later`.
    for i in 0..10 {
        at(i, event(i).time);
    }
    assert_eq!(s.checkpoint_now().unwrap().unwrap().seq, 10);
    for i in 10..20 {
        at(i, now);
    }
    let cp2 = s.checkpoint_now().unwrap().unwrap();
    assert_eq!(cp2.seq, 21);
    for i in 20..40 {
        at(i, later);
    }
    sealed_upto(&s, 36);
    let ident = |i: u32| TraceQuery {
        ident: Some(format!("opec.{i}@pec.x.it")),
        ..Default::default()
    };
    let log = s.trace();
    // The first purge ends inside the file of records 9-12: its groups stay, and name
    // records 9 and 10 that no reader finds any longer.
    assert_eq!(s.purge_expired(now).unwrap().anchor, Some(10));
    assert!(log.query(&ident(8)).unwrap().is_empty());
    assert!(
        entries(&s)
            .iter()
            .any(|(k, _, seqs)| *k == 9 && seqs.contains(&9))
    );
    assert_eq!(log.query(&ident(11)).unwrap().len(), 1);
    // A copy now holds no entry for them.
    let b = tempfile::tempdir().unwrap();
    crate::store::migrate::copy_metadata(&s, b.path(), &options(1 << 20), false, |_, _| {})
        .unwrap();
    let t = Store::open(b.path(), options(1 << 20)).unwrap();
    assert!(entries(&t).iter().all(|(k, _, _)| *k > 10));
    assert!(times(&t).0.iter().all(|q| *q > 10));
    drop(t);
    // The second purge removes that file whole, and every group of it, those of its
    // records the first purge hid included.
    assert_eq!(s.purge_expired(later).unwrap().anchor, Some(21));
    assert!(
        s.trees()
            .trace
            .sealed
            .as_ref()
            .unwrap()
            .bounds_of(9)
            .is_none()
    );
    let es = entries(&s);
    assert!(
        es.iter()
            .all(|(k, _, seqs)| *k >= 21 && seqs.iter().all(|q| *q >= 21)),
        "{:?}",
        es.iter().filter(|(k, _, _)| *k < 21).collect::<Vec<_>>()
    );
    let (own, spans) = times(&s);
    assert!(spans.iter().all(|s| s.first >= 21), "{spans:?}");
    assert!(own.iter().all(|q| *q > 21), "{own:?}");
    assert!(log.verify(None).unwrap().intact());
    assert_eq!(log.query(&ident(25)).unwrap().len(), 1);
}

/// Seals records `first ..= last` by hand, as the committer does: the file, the
/// grouping of their index entries, their entries in memory dropped, their removal from
/// the tree.
fn seal_as_the_committer(trees: &crate::trace::log::TraceTrees, first: u64, last: u64) {
    let sealed = trees.sealed.clone().unwrap();
    super::seal_by_hand(&sealed, &trees.records, first, last);
    let records: Vec<(u64, sled::IVec)> = (first..=last)
        .map(|q| {
            (
                q,
                trees
                    .records
                    .get(crate::trace::log::seq_key(q))
                    .unwrap()
                    .unwrap(),
            )
        })
        .collect();
    crate::trace::postings::group_segment(trees, first, last, &records).unwrap();
    trees.tail.as_ref().unwrap().drop_through(last);
    for q in first..=last {
        trees.records.remove(crate::trace::log::seq_key(q)).unwrap();
    }
}

#[test]
fn a_seal_between_a_querys_reads_of_own_entries_and_of_groups_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = with_events(dir.path(), 1 << 20, 24);
    let log = s.trace();
    let queries = [
        TraceQuery {
            ident: Some("opec.2@pec.x.it".into()),
            ..Default::default()
        },
        TraceQuery {
            msgid: Some("m1@x.it".into()),
            ..Default::default()
        },
        TraceQuery {
            mailbox: Some("alice@pec.x.it".into()),
            ..Default::default()
        },
        TraceQuery {
            since: Some(event(0).time),
            ..Default::default()
        },
    ];
    let before: Vec<_> = queries.iter().map(|q| log.query(q).unwrap()).collect();
    for (i, q) in queries.iter().enumerate() {
        // Each query sees the next four records sealed between its two reads.
        let trees = s.trees().trace.clone();
        let first = 1 + 4 * i as u64;
        crate::trace::log::BEFORE_GROUPS.with(|h| {
            *h.borrow_mut() = Some(Box::new(move || {
                seal_as_the_committer(&trees, first, first + 3)
            }));
        });
        let got = log.query(q).unwrap();
        crate::trace::log::BEFORE_GROUPS.with(|h| h.borrow_mut().take());
        assert_eq!(s.trees().trace.sealed.as_ref().unwrap().upto(), first + 3);
        assert!(!before[i].is_empty(), "{q:?}");
        assert_eq!(got, before[i], "{q:?}");
    }
    assert!(entries(&s).iter().any(|(_, group, _)| *group));
}

#[test]
fn a_seal_beside_a_purge_step_leaves_no_groups_behind_its_deleted_file() {
    let dir = tempfile::tempdir().unwrap();
    // Segments too large for the committer to seal: this test seals by hand.
    let s = Store::open(dir.path(), options(1 << 20)).unwrap();
    let now: Timestamp = "2026-01-15T09:00:00Z".parse().unwrap();
    for i in 0..10 {
        s.commit(Batch::new().trace(event(i))).unwrap();
    }
    assert_eq!(s.checkpoint_now().unwrap().unwrap().seq, 10);
    for i in 10..20 {
        let mut ev = event(i);
        ev.time = now;
        s.commit(Batch::new().trace(ev)).unwrap();
    }
    // The purge step has read records 1-10 from the tree; before its commit, records
    // 1-4 are sealed, grouped and removed from the tree, as the committer does.
    let trees = s.trees().trace.clone();
    let ran = std::rc::Rc::new(std::cell::Cell::new(false));
    crate::store::retention::BEFORE_PURGE_COMMIT.with(|h| {
        let done = ran.clone();
        *h.borrow_mut() = Some(Box::new(move || {
            if !done.replace(true) {
                seal_as_the_committer(&trees, 1, 4);
            }
        }));
    });
    let report = s.purge_expired(now).unwrap();
    crate::store::retention::BEFORE_PURGE_COMMIT.with(|h| h.borrow_mut().take());
    assert!(ran.get(), "the seal beside the purge happened");
    assert_eq!(report.anchor, Some(10));
    // The file is gone with its records...
    assert!(s.trees().trace.sealed.as_ref().unwrap().files().is_empty());
    assert!(!crate::trace::segments::Segments::present(
        &dir.path().join("trace")
    ));
    // ... and so are its groups and span.
    let es = entries(&s);
    assert!(
        es.iter().all(|(k, group, _)| *k > 10 && !group),
        "{:?}",
        es.iter().filter(|(k, _, _)| *k <= 10).collect::<Vec<_>>()
    );
    let (own, spans) = times(&s);
    assert!(
        own.iter().all(|q| *q > 10) && spans.is_empty(),
        "{own:?} {spans:?}"
    );
}

/// Takes every group apart into its records' own entries: a store sealed by schema 7.
fn as_schema_7(s: &Store) {
    let keys = &s.trees().trace.keys;
    for kv in keys.iter() {
        let (k, v) = kv.unwrap();
        if v.is_empty() {
            continue;
        }
        keys.remove(&k).unwrap();
        for q in entry_seqs(&k, &v).unwrap() {
            keys.insert(crate::trace::postings::own_key(&k, q), &b""[..])
                .unwrap();
        }
    }
    let trees = &s.trees().trace;
    // The unsealed records' own entries were in the tree too.
    for key in trees.tail.as_ref().unwrap().keys() {
        keys.insert(key, &b""[..]).unwrap();
    }
    for key in trees.tail.as_ref().unwrap().times([0; 16], TIME_KEYS_END) {
        trees.by_time.insert(key, &b""[..]).unwrap();
    }
    trees.meta.remove(crate::trace::tail::FROM_KEY).unwrap();
    for span in spans(trees).unwrap() {
        trees
            .by_time
            .remove(crate::trace::spans::span_key(span.first))
            .unwrap();
        for q in span.first..=span.last {
            let r = s.trace().get(q).unwrap().unwrap();
            let mut k = crate::trace::log::time_prefix(r.time).to_vec();
            k.extend_from_slice(&q.to_be_bytes());
            trees.by_time.insert(k, &b""[..]).unwrap();
        }
    }
    s.trees()
        .meta
        .insert(crate::store::SCHEMA_KEY, &7u32.to_be_bytes()[..])
        .unwrap();
    s.flush().unwrap();
}

#[test]
fn a_store_sealed_by_schema_7_has_its_entries_grouped_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let s = with_events(dir.path(), 4, 30);
    // All that is sealed of 30 records in segments of four.
    sealed_upto(&s, 24);
    let grouped = (entries(&s), times(&s));
    let before = answers(&s);
    // Nothing is sealed meanwhile: the log does not grow.
    as_schema_7(&s);
    assert!(entries(&s).len() > grouped.0.len());
    assert!(times(&s).1.is_empty());
    drop(s);
    std::thread::sleep(Duration::from_millis(100));
    let s = Store::open(dir.path(), options(4)).unwrap();
    assert_eq!((entries(&s), times(&s)), grouped);
    same(&answers(&s), &before);
    assert_eq!(
        s.trees()
            .meta
            .get(crate::store::SCHEMA_KEY)
            .unwrap()
            .unwrap()
            .as_ref(),
        crate::store::SCHEMA_VERSION.to_be_bytes()
    );
}

#[test]
fn a_copy_holds_each_records_own_entry() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let s = with_events(a.path(), 4, 30);
    // Nothing is sealed under the copy (see `a_copy_of_a_partly_sealed_store…`).
    sealed_upto(&s, 24);
    assert!(entries(&s).iter().any(|(_, group, _)| *group));
    crate::store::migrate::copy_metadata(&s, b.path(), &options(1 << 20), false, |_, _| {})
        .unwrap();
    let t = Store::open(b.path(), options(1 << 20)).unwrap();
    // They are in the tree: none is kept in memory a second time.
    assert_eq!(t.trees().trace.tail.as_ref().unwrap().records(), 0);
    let es = entries(&t);
    assert!(es.iter().all(|(k, group, seqs)| !group && seqs == &[*k]));
    assert_eq!(es.len(), 30 * 4);
    let (mut own, spans) = times(&t);
    own.sort();
    assert_eq!((own, spans), ((1..=30).collect::<Vec<_>>(), vec![]));
    same(&answers(&t), &answers(&s));
}

#[test]
fn a_span_that_does_not_cover_its_records_is_an_error_not_a_silent_gap() {
    let dir = tempfile::tempdir().unwrap();
    let s = with_events(dir.path(), 4, 30);
    sealed_upto(&s, 24);
    let trees = &s.trees().trace;
    let span = spans(trees).unwrap().remove(0);
    // Its earliest time raised to its latest: the records before would be hidden.
    let mut v = span.max.to_vec();
    v.extend_from_slice(&span.max);
    v.extend_from_slice(&span.last.to_be_bytes());
    trees
        .by_time
        .insert(crate::trace::spans::span_key(span.first), v)
        .unwrap();
    let q = TraceQuery {
        since: Some(event(0).time),
        ..Default::default()
    };
    let e = s.trace().query(&q).unwrap_err().to_string();
    assert!(e.contains("outside the segment's time span"), "{e}");
}
