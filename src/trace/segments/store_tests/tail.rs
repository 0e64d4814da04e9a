//! The unsealed records' `trace_keys` entries kept in memory ([`crate::trace::tail`]):
//! none written to the tree, found by every query, built again at open, dropped once
//! their segment's groups are written, and never an answer for a record that was not
//! committed.
//! Their unwraps see only values the tests make.

use std::time::Duration;

use super::{answers, event, options, same, sealed_upto, with_events};
use crate::store::{Batch, Store};
use crate::trace::TraceQuery;

/// The records' own entries in the `trace_keys` tree (a group's value is never empty)
/// and in the `trace_time` tree (a span's key starts with its prefix).
fn own_in_tree(s: &Store) -> (usize, usize) {
    let trees = &s.trees().trace;
    (
        trees
            .keys
            .iter()
            .filter(|kv| kv.as_ref().unwrap().1.is_empty())
            .count(),
        trees
            .by_time
            .range(..&crate::trace::spans::SPAN_PREFIX[..])
            .count(),
    )
}

/// Every time entry in memory.
fn times_in_memory(tail: &crate::trace::tail::Tail) -> usize {
    tail.times([0; 16], crate::trace::spans::TIME_KEYS_END)
        .len()
}

fn by_ident(s: &Store, i: u32) -> Vec<crate::trace::TraceRecord> {
    s.trace()
        .query(&TraceQuery {
            ident: Some(format!("opec.{i}@pec.x.it")),
            ..Default::default()
        })
        .unwrap()
}

#[test]
fn unsealed_records_are_indexed_in_memory_rebuilt_at_open_and_dropped_at_the_seal() {
    let dir = tempfile::tempdir().unwrap();
    let s = with_events(dir.path(), 8, 14);
    assert_eq!(own_in_tree(&s), (0, 0), "no entry per record in the trees");
    let tail = s.trees().trace.tail.clone().unwrap();
    // Each event: its Message-ID, its identificativo, two mailboxes; its time.
    assert_eq!((tail.records(), tail.keys().len()), (14, 14 * 4));
    assert_eq!(times_in_memory(&tail), 14);
    assert_eq!(by_ident(&s, 13).len(), 1);
    let before = answers(&s);
    drop((s, tail));
    std::thread::sleep(Duration::from_millis(100));
    // Opened again: only the database and the files are left, and the answers are the
    // same.
    let s = Store::open(dir.path(), options(8)).unwrap();
    let tail = s.trees().trace.tail.clone().unwrap();
    assert_eq!((tail.records(), tail.keys().len()), (14, 14 * 4));
    same(&answers(&s), &before);
    // Two more: records 1 to 8 are sealed (eight follow them), their entries grouped in
    // the tree and gone from memory.
    for i in 14..16 {
        s.commit(Batch::new().trace(event(i))).unwrap();
    }
    let before = answers(&s);
    sealed_upto(&s, 8);
    assert_eq!(tail.records(), 8);
    assert!(tail.keys().iter().all(|k| k[9..] >= 9u64.to_be_bytes()[..]));
    assert_eq!(times_in_memory(&tail), 8);
    assert_eq!(own_in_tree(&s), (0, 0));
    assert!(
        s.trees().trace.keys.len().unwrap() > 0,
        "the segment's groups"
    );
    same(&answers(&s), &before);
}

#[test]
fn a_refused_batchs_record_is_never_found_and_its_seq_is_indexed_anew() {
    let dir = tempfile::tempdir().unwrap();
    let s = with_events(dir.path(), 1 << 20, 3);
    s.commit(Batch::new().claim("k")).unwrap();
    // Record 4 is appended, indexed, and the batch aborts at its repeated claim.
    s.commit(Batch::new().trace(event(100)).claim("k"))
        .unwrap_err();
    assert!(by_ident(&s, 100).is_empty());
    let tail = s.trees().trace.tail.clone().unwrap();
    assert_eq!(
        (tail.records(), tail.keys().len(), times_in_memory(&tail)),
        (3, 3 * 4, 3),
        "its entries dropped"
    );
    // Seq 4 goes to the next record, found under its own keys only.
    s.commit(Batch::new().trace(event(101))).unwrap();
    assert!(by_ident(&s, 100).is_empty());
    let found = by_ident(&s, 101);
    assert_eq!(found.iter().map(|r| r.seq).collect::<Vec<_>>(), [4]);
    assert_eq!((tail.records(), tail.keys().len()), (4, 4 * 4));
}

#[test]
fn a_store_of_schema_8_keeps_its_records_entries_in_the_tree_and_indexes_only_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let s = with_events(dir.path(), 1 << 20, 6);
    let before = answers(&s);
    // What schema 8 wrote: each record's own entries in the tree, nothing in memory.
    let trees = s.trees().trace.clone();
    for key in trees.tail.as_ref().unwrap().keys() {
        trees.keys.insert(key, &b""[..]).unwrap();
    }
    for key in trees
        .tail
        .as_ref()
        .unwrap()
        .times([0; 16], crate::trace::spans::TIME_KEYS_END)
    {
        trees.by_time.insert(key, &b""[..]).unwrap();
    }
    trees.meta.remove(crate::trace::tail::FROM_KEY).unwrap();
    s.trees()
        .meta
        .insert(crate::store::SCHEMA_KEY, &8u32.to_be_bytes())
        .unwrap();
    s.flush().unwrap();
    drop((s, trees));
    std::thread::sleep(Duration::from_millis(100));
    let s = Store::open(dir.path(), options(1 << 20)).unwrap();
    let tail = s.trees().trace.tail.clone().unwrap();
    assert_eq!(tail.records(), 0, "found in the tree, not read into memory");
    same(&answers(&s), &before);
    s.commit(Batch::new().trace(event(6))).unwrap();
    assert_eq!(tail.records(), 1);
    assert_eq!(own_in_tree(&s), (6 * 4, 6));
    assert_eq!(by_ident(&s, 6).len(), 1);
    // And so at every later open.
    drop((s, tail));
    std::thread::sleep(Duration::from_millis(100));
    let s = Store::open(dir.path(), options(1 << 20)).unwrap();
    assert_eq!(s.trees().trace.tail.as_ref().unwrap().records(), 1);
    assert_eq!(by_ident(&s, 6).len(), 1);
    assert_eq!(by_ident(&s, 5).len(), 1);
    // A copy (whose source says where its own index in memory starts) is checked equal
    // and holds every record's own entry in its tree.
    let to = tempfile::tempdir().unwrap();
    crate::store::migrate::copy_metadata(&s, to.path(), &options(1 << 20), false, |_, _| {})
        .unwrap();
    let t = Store::open(to.path(), options(1 << 20)).unwrap();
    assert_eq!(t.trees().trace.tail.as_ref().unwrap().records(), 0);
    assert_eq!(own_in_tree(&t), (7 * 4, 7));
    same(&answers(&t), &answers(&s));
}

#[test]
fn between_a_segments_grouping_and_the_drop_of_its_entries_every_record_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let s = with_events(dir.path(), 8, 15);
    let before = answers(&s);
    let tail = s.trees().trace.tail.clone().unwrap();
    let during = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (store, seen, held) = (s.clone(), during.clone(), tail.clone());
    let of = std::sync::Arc::as_ptr(&tail) as usize;
    crate::store::BETWEEN_GROUPS_AND_DROP.lock().unwrap().push((
        of,
        Box::new(move || {
            // The segment's groups are written: are its entries still in memory?
            let sealed_in_memory = held
                .keys()
                .iter()
                .filter(|k| k[9..] <= 8u64.to_be_bytes()[..])
                .count();
            seen.lock()
                .unwrap()
                .push((answers(&store), sealed_in_memory));
        }),
    ));
    // The sixteenth record: records 1 to 8 are sealed by the committer.
    s.commit(Batch::new().trace(event(15))).unwrap();
    sealed_upto(&s, 8);
    crate::store::BETWEEN_GROUPS_AND_DROP
        .lock()
        .unwrap()
        .retain(|(o, _)| *o != of);
    let during = std::mem::take(&mut *during.lock().unwrap());
    assert_eq!(during.len(), 1, "the committer sealed once");
    let (answered, sealed_in_memory) = &during[0];
    assert_eq!(*sealed_in_memory, 8 * 4, "dropped only after the grouping");
    // What the log answered before, and the sixteenth record where it is asked for.
    let after = answers(&s);
    same(answered, &after);
    assert_ne!(before, after);
    assert_eq!(tail.records(), 8);
}

#[test]
fn a_time_entry_naming_a_record_of_another_time_gives_it_only_at_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let s = with_events(dir.path(), 1 << 20, 3);
    // An entry for seq 4 at another time than the record that takes seq 4 (left by a
    // transaction that did not commit; here in the tree).
    let mut stale = crate::trace::log::time_prefix(event(6).time).to_vec();
    stale.extend_from_slice(&4u64.to_be_bytes());
    s.trees().trace.by_time.insert(stale, &b""[..]).unwrap();
    s.commit(Batch::new().trace(event(3))).unwrap();
    let found = s
        .trace()
        .query(&TraceQuery {
            since: Some(event(0).time),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        found.iter().map(|r| r.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4],
        "each record once, in time order"
    );
}
