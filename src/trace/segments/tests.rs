//! Tests of the sealed file format and directory. Their unwraps see only values the tests
//! make.

use super::*;

fn rec(seq: u64) -> Vec<u8> {
    format!("record {seq} ")
        .repeat(seq as usize % 5 + 1)
        .into_bytes()
}

fn seal(s: &Segments, first: u64, last: u64, skip: &[u64]) {
    let recs: Vec<(u64, Vec<u8>)> = (first..=last)
        .filter(|q| !skip.contains(q))
        .map(|q| (q, rec(q)))
        .collect();
    let refs: Vec<(u64, &[u8])> = recs.iter().map(|(q, v)| (*q, v.as_slice())).collect();
    s.seal(first, last, &refs).unwrap();
}

fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A directory with three files of four records: 1–4, 5–8, 9–12.
fn three_files() -> (tempfile::TempDir, Segments) {
    let dir = tempfile::tempdir().unwrap();
    let s = Segments::open(dir.path(), 0).unwrap();
    seal(&s, 1, 4, &[]);
    seal(&s, 5, 8, &[]);
    seal(&s, 9, 12, &[]);
    (dir, s)
}

#[test]
fn sealed_records_read_back_by_seq_and_in_runs_and_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let s = Segments::open(dir.path(), 0).unwrap();
    assert_eq!((s.upto(), s.next_first()), (0, None));
    // Records 1..=3 were purged before sealing: empty slots.
    seal(&s, 1, 8, &[1, 2, 3]);
    seal(&s, 9, 16, &[]);
    for s in [&s, &Segments::open(dir.path(), 0).unwrap()] {
        assert_eq!((s.upto(), s.next_first()), (16, Some(17)));
        for q in 1..=3 {
            assert_eq!(s.get(q).unwrap(), None);
        }
        for q in 4..=16 {
            assert_eq!(s.get(q).unwrap(), Some(rec(q)), "seq {q}");
        }
        assert_eq!(s.get(17).unwrap(), None);
        // A run stops at the end of the file holding its start, and at `to`.
        let run = s.read_from(2, 100).unwrap();
        assert_eq!(run, (4..=8).map(|q| (q, rec(q))).collect::<Vec<_>>());
        let run = s.read_from(10, 12).unwrap();
        assert_eq!(run, (10..=12).map(|q| (q, rec(q))).collect::<Vec<_>>());
        assert_eq!(s.last_of(9), Some(16));
    }
    assert_eq!(
        files(dir.path()),
        ["00000000000000000001.seg", "00000000000000000009.seg"]
    );
    // Deflated: the repeated texts of the records take less than their bytes.
    let (n, bytes) = s.usage().unwrap();
    let data: usize = (4..=16).map(|q| rec(q).len()).sum();
    let tables = 2 * (24 + 8 * 4 + 4);
    assert_eq!(n, 2);
    assert!(
        bytes > tables as u64 && bytes < (tables + data / 2) as u64,
        "{bytes} for {data}"
    );
}

#[test]
fn a_seal_must_continue_the_run_and_hold_only_its_own_seqs() {
    let dir = tempfile::tempdir().unwrap();
    let s = Segments::open(dir.path(), 0).unwrap();
    seal(&s, 1, 4, &[]);
    let e = s.seal(6, 9, &[(6, b"x")]).unwrap_err().to_string();
    assert!(
        e.contains("would not continue the run, which ends at 4"),
        "{e}"
    );
    let e = s.seal(5, 8, &[(9, b"x")]).unwrap_err().to_string();
    assert!(
        e.contains("record 9 is out of order or out of range"),
        "{e}"
    );
    let e = s
        .seal(5, 8, &[(6, b"x"), (5, b"y")])
        .unwrap_err()
        .to_string();
    assert!(e.contains("out of order"), "{e}");
    // Nothing was named by the refused seals.
    assert_eq!(files(dir.path()), ["00000000000000000001.seg"]);
    assert_eq!(s.upto(), 4);
}

#[test]
fn open_removes_temporary_files_and_refuses_a_missing_file_in_the_run() {
    let (dir, _) = three_files();
    std::fs::write(dir.path().join("00000000000000000013.seg.tmp"), b"half").unwrap();
    std::fs::write(dir.path().join("README"), b"not ours").unwrap();
    let s = Segments::open(dir.path(), 0).unwrap();
    assert_eq!(s.upto(), 12);
    assert!(!files(dir.path()).iter().any(|f| f.ends_with(".tmp")));
    std::fs::remove_file(dir.path().join("00000000000000000005.seg")).unwrap();
    let e = Segments::open(dir.path(), 0).unwrap_err().to_string();
    assert!(
        e.contains("00000000000000000005.seg") && e.contains("jump from seq 4 to seq 9"),
        "{e}"
    );
}

#[test]
fn a_damaged_file_is_an_error_naming_it_whatever_its_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let s = Segments::open(dir.path(), 0).unwrap();
    seal(&s, 1, 3, &[2]);
    let path = dir.path().join("00000000000000000001.seg");
    let good = std::fs::read(&path).unwrap();
    // Every truncation, and every byte of the header and slot table changed.
    let mut cases: Vec<Vec<u8>> = (0..good.len()).map(|n| good[..n].to_vec()).collect();
    for i in 0..good.len() {
        let mut b = good.clone();
        b[i] ^= 0x41;
        cases.push(b);
    }
    for bytes in cases {
        std::fs::write(&path, &bytes).unwrap();
        match Segments::open(dir.path(), 0) {
            Err(e) => assert!(e.to_string().contains(&path.display().to_string()), "{e}"),
            // A change the format cannot see (a slot moved within the data) reads as
            // other bytes, which the hash chain catches; it never reads out of bounds.
            Ok(s) => {
                for q in 0..5 {
                    let _ = s.get(q);
                }
            }
        }
    }
    std::fs::write(&path, &good).unwrap();
    std::fs::rename(&path, dir.path().join("00000000000000000002.seg")).unwrap();
    let e = Segments::open(dir.path(), 0).unwrap_err().to_string();
    assert!(e.contains("holds seqs from 1, its name says 2"), "{e}");
}

#[test]
fn purged_records_are_not_returned_and_their_files_go_once_nothing_else_is_in_them() {
    let (dir, s) = three_files();
    s.purge_through(6).unwrap();
    assert_eq!(
        files(dir.path()),
        ["00000000000000000005.seg", "00000000000000000009.seg"]
    );
    assert_eq!(s.get(6).unwrap(), None);
    assert_eq!(s.get(7).unwrap(), Some(rec(7)));
    assert_eq!(s.read_from(1, 100).unwrap(), vec![(7, rec(7)), (8, rec(8))]);
    // The floor comes from the store at open; the run may start anywhere.
    let s = Segments::open(dir.path(), 6).unwrap();
    assert_eq!((s.get(6).unwrap(), s.upto()), (None, 12));
    seal(&s, 13, 16, &[]);
    s.purge_through(16).unwrap();
    assert!(files(dir.path()).is_empty());
    assert_eq!(
        (s.upto(), s.next_first(), s.get(16).unwrap()),
        (0, None, None)
    );
    Segments::clear(dir.path()).unwrap();
}

#[test]
fn a_file_claiming_seqs_past_the_end_of_the_numbers_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = Segments::open(dir.path(), 0).unwrap();
    seal(&s, 1, 2, &[]);
    let good = std::fs::read(dir.path().join(name(1))).unwrap();
    std::fs::remove_file(dir.path().join(name(1))).unwrap();
    let first = u64::MAX - 1;
    let mut bad = good.clone();
    bad[8..16].copy_from_slice(&first.to_be_bytes());
    std::fs::write(dir.path().join(name(first)), &bad).unwrap();
    let e = Segments::open(dir.path(), 0).unwrap_err().to_string();
    assert!(e.contains("2 slots from seq 18446744073709551614"), "{e}");
}
