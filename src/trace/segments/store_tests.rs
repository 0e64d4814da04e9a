//! Tests of a store whose trace log is partly sealed: it answers exactly as the same log
//! kept whole in the tree, across a crash in the middle of a seal, a purge and a copy.
//! Their unwraps see only values the tests make.

use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::clock::ManualClock;
use crate::store::{Batch, Store, StoreOptions};
use crate::trace::checkpoint::tests::test_signer;
use crate::trace::log::seq_key;
use crate::trace::walk::tests::t0;
use crate::trace::{EventKind, TraceEvent, TraceQuery};

pub(super) fn options(slots: u64) -> StoreOptions {
    StoreOptions {
        clock: Arc::new(ManualClock::new(t0())),
        signer: Some(Arc::new(test_signer("provider"))),
        checkpoint_every: 1_000_000,
        checkpoint_interval: Duration::from_secs(1_000_000),
        trace_segment_records: slots,
        ..StoreOptions::default()
    }
}

pub(super) fn event(i: u32) -> TraceEvent {
    TraceEvent::new(
        EventKind::Relayed,
        t0() + SignedDuration::from_secs(i as i64 % 7),
    )
    .msgid(format!("<m{}@x.it>", i % 3))
    .ident(format!("opec.{i}@pec.x.it"))
    .sender("alice@pec.x.it")
    .recipient(format!("bob{}@pec.y.it", i % 4))
    .message_bytes(format!("body {i}").as_bytes())
}

/// A store with segments of `slots` records and `n` events committed one by one.
pub(super) fn with_events(dir: &std::path::Path, slots: u64, n: u32) -> Store {
    let s = Store::open(dir, options(slots)).unwrap();
    for i in 0..n {
        s.commit(Batch::new().trace(event(i))).unwrap();
    }
    s
}

/// Seals records `first ..= last` of `tree` into `files` by hand, as the sealing thread
/// would (the tree is left as it is).
pub(super) fn seal_by_hand(
    files: &super::Segments,
    tree: &crate::store::kv::Tree,
    first: u64,
    last: u64,
) {
    let recs: Vec<(u64, sled::IVec)> = (first..=last)
        .map(|q| (q, tree.get(seq_key(q)).unwrap().unwrap()))
        .collect();
    let refs: Vec<(u64, &[u8])> = recs.iter().map(|(q, v)| (*q, v.as_ref())).collect();
    files.seal(first, last, &refs).unwrap();
}

/// A closed store of 10 events whose records 1 to 4 are in a file and still in the tree:
/// the file was named, and the crash came before their removal from the tree was
/// flushed. Returns the store's answers before.
pub(super) fn seal_cut_short_by_a_crash(dir: &std::path::Path) -> Vec<String> {
    let s = with_events(dir, 1 << 20, 10);
    let before = answers(&s);
    let tree = s.trees().trace.records.clone();
    let files = super::Segments::open(&dir.join("trace"), 0).unwrap();
    seal_by_hand(&files, &tree, 1, 4);
    drop((s, tree, files));
    std::thread::sleep(Duration::from_millis(100));
    before
}

/// The error opening the store in `dir` with segments of four (which must fail).
fn refusal(dir: &std::path::Path) -> String {
    Store::open(dir, options(4)).err().unwrap().to_string()
}

/// The seqs of every record, by a scan in seq order.
fn all_seqs(s: &Store) -> Vec<u64> {
    s.trace()
        .query(&TraceQuery::default())
        .unwrap()
        .iter()
        .map(|r| r.seq)
        .collect()
}

/// Waits until the records up to `seq` are sealed and gone from the tree (the committer
/// seals after answering, on a thread of its own, and removes them afterwards).
pub(super) fn sealed_upto(s: &Store, seq: u64) {
    let sealed = s.trees().trace.sealed.clone().unwrap();
    let tree = &s.trees().trace.records;
    for _ in 0..500 {
        let first = tree.first().unwrap().map(|(k, _)| k.to_vec());
        if sealed.upto() >= seq && first.is_none_or(|k| k.as_slice() > &seq_key(seq)[..]) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("sealed up to {}, not {seq}", sealed.upto());
}

/// Everything a reader can ask the log.
pub(super) fn answers(s: &Store) -> Vec<String> {
    let log = s.trace();
    let mut out = vec![format!("{:?}", log.status().unwrap().first_seq)];
    out.push(format!("{:?}", log.head().unwrap()));
    let (head, _) = log.head().unwrap();
    for seq in 0..=head + 1 {
        out.push(format!("{:?}", log.get(seq).unwrap()));
    }
    let mut queries = vec![TraceQuery::default()];
    for m in 0..3 {
        queries.push(TraceQuery {
            msgid: Some(format!("m{m}@x.it")),
            ..Default::default()
        });
    }
    for i in [0, 7, 33] {
        queries.push(TraceQuery {
            ident: Some(format!("opec.{i}@pec.x.it")),
            ..Default::default()
        });
    }
    for b in 0..4 {
        queries.push(TraceQuery {
            mailbox: Some(format!("bob{b}@pec.y.it")),
            limit: Some(5),
            ..Default::default()
        });
    }
    queries.push(TraceQuery {
        since: Some(t0() + SignedDuration::from_secs(2)),
        until: Some(t0() + SignedDuration::from_secs(4)),
        ..Default::default()
    });
    queries.push(TraceQuery {
        since: Some(t0() + SignedDuration::from_secs(5)),
        limit: Some(7),
        ..Default::default()
    });
    queries.push(TraceQuery {
        until: Some(t0() + SignedDuration::from_secs(1)),
        ..Default::default()
    });
    for q in &queries {
        out.push(format!("{:?}", log.query(q).unwrap()));
        out.push(format!("{:?}", log.events(q).unwrap()));
    }
    log.walk(|line| {
        out.push(String::from_utf8(line.to_line()).unwrap());
        Ok(true)
    })
    .unwrap();
    let v = log.verify(None).unwrap();
    assert!(v.intact(), "{v:?}");
    out.push(format!("{} records verified", v.records));
    out
}

/// `a` and `b` are the same answers (the first difference, not thousands of lines).
pub(super) fn same(a: &[String], b: &[String]) {
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert_eq!(x, y, "answer {i}");
    }
    assert_eq!(a.len(), b.len());
}

#[test]
fn a_partly_sealed_log_answers_exactly_as_the_same_log_kept_in_the_tree() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), options(1 << 20)).unwrap();
    for i in 0..40 {
        s.commit(Batch::new().trace(event(i))).unwrap();
        if i % 10 == 9 {
            s.checkpoint_now().unwrap().unwrap();
        }
    }
    let whole = answers(&s);
    assert_eq!(s.trees().trace.records.len().unwrap(), 44);
    drop(s);
    std::thread::sleep(Duration::from_millis(100));
    // Opened with segments of four, the committer seals what is there: a four once two
    // more are durable after it, so the tree keeps four to seven records.
    let s = Store::open(dir.path(), options(4)).unwrap();
    sealed_upto(&s, 40);
    let tree = s.trees().trace.records.clone();
    assert_eq!(tree.first().unwrap().unwrap().0.as_ref(), seq_key(41));
    assert_eq!(tree.len().unwrap(), 4);
    same(&answers(&s), &whole);
    let sizes = s.tree_sizes().unwrap();
    let row = sizes.iter().find(|t| t.0 == "trace (sealed)").unwrap();
    assert_eq!(row.1, 40);
    // Sealing goes on as records are appended, and a reopen reads the same.
    for i in 40..60 {
        s.commit(Batch::new().trace(event(i))).unwrap();
    }
    sealed_upto(&s, 56);
    let live = answers(&s);
    drop((s, tree));
    std::thread::sleep(Duration::from_millis(100));
    let s = Store::open(dir.path(), options(4)).unwrap();
    same(&answers(&s), &live);
    let mut out = Vec::new();
    s.trace().export(&mut out).unwrap();
    let r = crate::trace::verify::verify_export(&out[..], None).unwrap();
    assert!(r.intact() && r.records == 64, "{r:?}");
}

#[test]
fn a_seal_cut_short_by_a_crash_is_finished_at_open_and_a_different_copy_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let before = seal_cut_short_by_a_crash(dir.path());
    let s = Store::open(dir.path(), options(4)).unwrap();
    assert_eq!(
        s.trees().trace.records.first().unwrap().unwrap().0.as_ref(),
        seq_key(5)
    );
    same(&answers(&s), &before);
    drop(s);
    std::thread::sleep(Duration::from_millis(100));
    // A file whose records differ from the tree's is not taken for them.
    let s = Store::open(dir.path(), options(1 << 20)).unwrap();
    let rec5 = s.trees().trace.records.get(seq_key(5)).unwrap().unwrap();
    drop(s);
    std::thread::sleep(Duration::from_millis(100));
    let files = super::Segments::open(&dir.path().join("trace"), 0).unwrap();
    let mut other = rec5.to_vec();
    other.push(b'!');
    files.seal(5, 8, &[(5, &other)]).unwrap();
    let e = refusal(dir.path());
    assert!(
        e.contains("record 5 in the database") && e.contains("other bytes"),
        "{e}"
    );
}

#[test]
fn a_purge_reaching_into_sealed_files_removes_them_and_their_index_entries() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), options(4)).unwrap();
    let now: Timestamp = "2026-01-15T09:00:00Z".parse().unwrap();
    for i in 0..20 {
        s.commit(Batch::new().trace(event(i))).unwrap();
    }
    // The checkpoint covers records 1 to 20; its record (21) and later ones are young.
    let cp = s.checkpoint_now().unwrap().unwrap();
    assert_eq!(cp.seq, 20);
    for i in 20..30 {
        let mut ev = event(i);
        ev.time = now;
        s.commit(Batch::new().trace(ev)).unwrap();
    }
    sealed_upto(&s, 20);
    let report = s.purge_expired(now).unwrap();
    assert_eq!(report.anchor, Some(20));
    assert_eq!(report.records_removed, 20);
    let sealed = s.trees().trace.sealed.clone().unwrap();
    assert_eq!(sealed.floor(), 20);
    // Files of records 1 to 20 are gone, later ones stay.
    let names: Vec<String> = std::fs::read_dir(dir.path().join("trace"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| n.as_str() > "00000000000000000020"),
        "{names:?}"
    );
    let log = s.trace();
    assert_eq!(log.get(20).unwrap(), None);
    assert_eq!(log.status().unwrap().first_seq, Some(21));
    // No index entry is left for a purged record.
    let q = TraceQuery {
        ident: Some("opec.3@pec.x.it".into()),
        ..Default::default()
    };
    assert!(log.query(&q).unwrap().is_empty());
    assert!(log.events(&q).unwrap().is_empty());
    assert!(
        s.trees()
            .trace
            .keys
            .iter()
            .all(|kv| crate::trace::log::seq_of_index_key(&kv.unwrap().0).unwrap() > 20)
    );
    assert!(log.verify(None).unwrap().intact());
    // Nothing more to do, after a reopen too.
    assert_eq!(s.purge_expired(now).unwrap().records_removed, 0);
    drop((s, log));
    std::thread::sleep(Duration::from_millis(100));
    let s = Store::open(dir.path(), options(4)).unwrap();
    assert_eq!(s.trees().trace.sealed.as_ref().unwrap().floor(), 20);
    assert_eq!(s.purge_expired(now).unwrap().records_removed, 0);
    let mut out = Vec::new();
    s.trace().export(&mut out).unwrap();
    let first = out.split(|b| *b == b'\n').next().unwrap();
    assert!(
        first.starts_with(br#"{"type":"checkpoint","seq":20,"#),
        "{}",
        String::from_utf8_lossy(first)
    );
    assert!(
        crate::trace::verify::verify_export(&out[..], None)
            .unwrap()
            .intact()
    );
}

#[test]
fn a_copy_of_a_partly_sealed_store_holds_the_whole_log() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let s = with_events(a.path(), 4, 30);
    // All that 30 records seal in segments of four: nothing is sealed under the copy
    // (the CLI's copy opens its source with sealing off).
    sealed_upto(&s, 24);
    // A target holding sealed files (and no database) is another store's remains: not
    // overwritten.
    let stale = super::Segments::open(&b.path().join("trace"), 0).unwrap();
    stale.seal(1, 2, &[(1, b"stale"), (2, b"stale")]).unwrap();
    let copy = |replace| {
        crate::store::migrate::copy_metadata(&s, b.path(), &options(4), replace, |_, _| {})
    };
    let e = copy(false).unwrap_err().to_string();
    assert!(e.contains("another store"), "{e}");
    super::Segments::clear(&b.path().join("trace")).unwrap();
    assert_eq!(copy(false).unwrap().trace_head, 30);
    let t = Store::open(b.path(), options(4)).unwrap();
    same(&answers(&t), &answers(&s));
    // The copy, once run, seals in its turn; a copy replacing it clears its files.
    sealed_upto(&t, 20);
    drop(t);
    std::thread::sleep(Duration::from_millis(100));
    assert!(copy(true).unwrap().cleared_earlier_copy);
    let t = Store::open(b.path(), options(1 << 20)).unwrap();
    assert_eq!(t.trees().trace.records.len().unwrap(), 30);
    same(&answers(&t), &answers(&s));
}

#[test]
fn readers_never_miss_a_record_while_it_moves_into_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), options(4)).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (log, stop) = (s.trace(), stop.clone());
        std::thread::spawn(move || {
            let mut rounds = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (head, _) = log.head().unwrap();
                // A scan in seq order, a walk, and reads by seq and by index, each whole.
                let all: Vec<u64> = log
                    .query(&TraceQuery::default())
                    .unwrap()
                    .iter()
                    .map(|r| r.seq)
                    .collect();
                assert!(
                    all.len() as u64 >= head && all.iter().copied().eq(1..=all.len() as u64),
                    "{all:?}"
                );
                let mut walked = 0;
                log.walk(|_| {
                    walked += 1;
                    Ok(true)
                })
                .unwrap();
                assert!(walked >= head, "{walked} < {head}");
                for seq in (1..=head).step_by(3) {
                    assert!(log.get(seq).unwrap().is_some(), "record {seq}");
                }
                let q = TraceQuery {
                    msgid: Some("m1@x.it".into()),
                    ..Default::default()
                };
                assert!(log.events(&q).unwrap().len() as u64 >= head / 3);
                rounds += 1;
            }
            rounds
        })
    };
    for i in 0..300 {
        s.commit(Batch::new().trace(event(i))).unwrap();
    }
    sealed_upto(&s, 292);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let rounds = reader.join().unwrap();
    assert!(rounds > 3, "{rounds} rounds of reads");
    assert!(s.trace().verify(None).unwrap().intact());
}

#[test]
fn a_database_and_sealed_files_that_do_not_continue_each_other_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = with_events(dir.path(), 4, 20);
    sealed_upto(&s, 16);
    // The database from another moment: its records after the files start later.
    for seq in 17..=18 {
        s.trees().trace.records.remove(seq_key(seq)).unwrap();
    }
    s.flush().unwrap();
    drop(s);
    std::thread::sleep(Duration::from_millis(100));
    let e = refusal(dir.path());
    assert!(
        e.contains("end at record 16 but the database's records after it start at 19"),
        "{e}"
    );
    // Refused as found: the database and the files are as they were.
    let raw = |f: &dyn Fn(&sled::Db)| {
        let path = dir.path().join("db");
        let db = sled::Config::new()
            .path(&path)
            .segment_size(crate::store::sled_segment_size(&path))
            .open()
            .unwrap();
        f(&db);
    };
    raw(&|db| assert_eq!(db.open_tree("trace").unwrap().len(), 2));
    assert_eq!(
        std::fs::read_dir(dir.path().join("trace")).unwrap().count(),
        4
    );
    std::thread::sleep(Duration::from_millis(100));
    // A lost first file is noticed too.
    raw(&|db| {
        let t = db.open_tree("trace").unwrap();
        for seq in 17..=18 {
            t.insert(seq_key(seq), vec![0u8]).unwrap();
        }
        db.flush().unwrap();
    });
    std::thread::sleep(Duration::from_millis(100));
    std::fs::remove_file(dir.path().join("trace/00000000000000000001.seg")).unwrap();
    let e = refusal(dir.path());
    assert!(
        e.contains("the first sealed segment starts at record 5, the log at 1"),
        "{e}"
    );
    // No database at all beside the files: not taken for a new store.
    std::fs::remove_dir_all(dir.path().join("db")).unwrap();
    let e = refusal(dir.path());
    assert!(e.contains("no database, but sealed trace segments"), "{e}");
}

#[test]
fn files_a_purge_left_behind_are_removed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let s = with_events(dir.path(), 4, 20);
    sealed_upto(&s, 16);
    // A purge stored its floor (8), and the crash came before it deleted the files.
    s.trees()
        .trace
        .meta
        .insert(crate::trace::retention::PURGED_KEY, &8u64.to_be_bytes())
        .unwrap();
    s.flush().unwrap();
    drop(s);
    std::thread::sleep(Duration::from_millis(100));
    let s = Store::open(dir.path(), options(4)).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(dir.path().join("trace"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["00000000000000000009.seg", "00000000000000000013.seg"]
    );
    // (Without the anchor a real purge stores first, record 9's predecessor is unknown.)
    assert_eq!(s.trace().get(8).unwrap(), None);
    assert_eq!(s.trace().status().unwrap().first_seq, Some(9));
}

#[test]
fn a_scan_reads_from_the_files_what_a_seal_moved_while_it_looked_away() {
    let dir = tempfile::tempdir().unwrap();
    // Segments too large for the committer to seal: the test seals by hand.
    let s = with_events(dir.path(), 1 << 20, 12);
    let whole = all_seqs(&s);
    assert_eq!(whole, (1..=12).collect::<Vec<_>>());
    let (tree, sealed) = (
        s.trees().trace.records.clone(),
        s.trees().trace.sealed.clone().unwrap(),
    );
    let mut once = true;
    crate::trace::records::BEFORE_TREE_CHUNK.with(|h| {
        *h.borrow_mut() = Some(Box::new(move || {
            // A seal of records 1 to 4 lands after the scan saw nothing sealed and
            // before it reads the tree: the file is named, then they leave the tree.
            if std::mem::take(&mut once) {
                seal_by_hand(&sealed, &tree, 1, 4);
                for q in 1..=4 {
                    tree.remove(seq_key(q)).unwrap();
                }
            }
        }));
    });
    let seen = all_seqs(&s);
    crate::trace::records::BEFORE_TREE_CHUNK.with(|h| *h.borrow_mut() = None);
    assert_eq!(seen, whole);
    assert!(s.trace().verify(None).unwrap().intact());
}

mod grouped;
mod tail;
