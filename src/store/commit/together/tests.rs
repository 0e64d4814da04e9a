//! Batches sent to the committer at once, applied in one transaction: each must end as
//! if applied alone, in order. Unwraps: stores and values built here.

use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};

use super::goes_with_others;
use crate::clock::ManualClock;
use crate::pec::address::PecAddress;
use crate::store::archive::RECEIVED;
use crate::store::batch::Op;
use crate::store::messages::INBOX;
use crate::store::{Batch, Delivery, Store, StoreError};
use crate::trace::{EventKind, TraceEvent, TraceQuery};

fn t0() -> Timestamp {
    "2026-01-15T09:00:00Z".parse().unwrap()
}

/// A store whose archive has room for three 10-byte copies, kept a month.
fn open(dir: &std::path::Path, clock: Arc<ManualClock>) -> (Store, PecAddress) {
    crate::store::archive::tests::open(dir, clock, 30)
}

/// A delivery of `body` under the idempotency claim `claim`, with its trace record.
fn delivery(s: &Store, a: &PecAddress, claim: &str, body: &str, at: Timestamp) -> Batch {
    let blob = s.blobs().put(body.as_bytes()).unwrap();
    Batch::new()
        .claim(claim)
        .deliver(Delivery::inbox(a.clone(), blob, at))
        .trace(
            TraceEvent::new(EventKind::Delivered, at)
                .msgid(format!("{body}@insieme.test"))
                .recipient(a.to_string()),
        )
}

/// Whether this run's stores are sled's (the conformance run puts them in PostgreSQL,
/// which applies each batch alone, to the same end).
fn on_sled() -> bool {
    std::env::var_os(crate::store::kv::pg::testing::ENV).is_none()
        && std::env::var_os(crate::store::kv::fjall::testing::ENV).is_none()
}

fn bodies(s: &Store, records: &[crate::store::MessageRecord]) -> Vec<String> {
    records
        .iter()
        .map(|m| String::from_utf8(s.blobs().read(&m.blob).unwrap()).unwrap())
        .collect()
}

#[test]
fn batches_applied_together_end_as_if_applied_one_after_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(t0()));
    let (s, a) = open(dir.path(), clock.clone());
    // The mailbox's creation is traced too.
    let base = s.trace().verify(None).unwrap().records;
    for i in 0..3 {
        s.commit(delivery(
            &s,
            &a,
            &format!("old{i}"),
            &format!("old msg {i}"),
            t0(),
        ))
        .unwrap();
    }
    // Two months on, the three archived copies are past the retention period.
    clock.advance(SignedDuration::from_hours(24 * 62));
    let later = t0() + SignedDuration::from_hours(24 * 62);

    // Four deliveries sent at once: each copy needs the room of one old one, the fourth
    // finds none left past the retention period (its copy is not made, it is delivered).
    let batches = (0..4)
        .map(|i| delivery(&s, &a, &format!("new{i}"), &format!("new msg {i}"), later))
        .collect();
    let results: Vec<_> = s
        .commit_all(batches)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    if on_sled() {
        let together: Vec<usize> = results.iter().map(|r| r.together).collect();
        assert_eq!(together, [4, 4, 4, 4], "one transaction for the four");
    }
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.delivered.len(), 1, "batch {i}");
        assert_eq!(r.trace.len(), 1, "batch {i}");
    }
    let full: Vec<bool> = results.iter().map(|r| !r.archive_full.is_empty()).collect();
    assert_eq!(full, [false, false, false, true]);
    // The archive as one batch at a time leaves it: each copy dropped the oldest.
    assert_eq!(
        bodies(&s, &s.archived(&a, RECEIVED).unwrap()),
        ["new msg 0", "new msg 1", "new msg 2"]
    );
    let st = s.archive_state(&a).unwrap().unwrap();
    assert_eq!((st.usage_bytes, st.messages), (27, 3));
    // In order: the trace records follow one another, each batch a modseq step further.
    let seqs: Vec<u64> = results.iter().map(|r| r.trace[0].0).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    let modseqs: Vec<u64> = results.iter().map(|r| r.modseqs[0].1).collect();
    assert!(modseqs.windows(2).all(|w| w[1] > w[0]), "{modseqs:?}");
    assert_eq!(s.messages(&a, INBOX).unwrap().len(), 7);
    assert_eq!(s.trace().verify(None).unwrap().records, base + 7);

    // A batch refused among others (its claim was made above) is refused alone; the
    // ones before it go together, and the ones after it.
    let batches = vec![
        delivery(&s, &a, "next0", "next msg 0", later),
        delivery(&s, &a, "next1", "next msg 1", later),
        delivery(&s, &a, "new1", "again", later),
        delivery(&s, &a, "next2", "next msg 2", later),
        delivery(&s, &a, "next3", "next msg 3", later),
    ];
    let results = s.commit_all(batches);
    assert!(
        matches!(&results[2], Err(StoreError::AlreadyClaimed(k)) if k == "new1"),
        "{results:?}"
    );
    let ok: Vec<_> = [0, 1, 3, 4]
        .iter()
        .map(|&i| results[i].as_ref().unwrap())
        .collect();
    if on_sled() {
        let together: Vec<usize> = ok.iter().map(|r| r.together).collect();
        assert_eq!(together, [2, 2, 2, 2]);
    }
    let seqs: Vec<u64> = ok.iter().map(|r| r.trace[0].0).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    let inbox = bodies(&s, &s.messages(&a, INBOX).unwrap());
    assert_eq!(inbox.len(), 11);
    assert!(!inbox.iter().any(|b| b == "again"));
    let found = s
        .trace()
        .query(&TraceQuery {
            msgid: Some("again@insieme.test".into()),
            ..Default::default()
        })
        .unwrap();
    assert!(found.is_empty(), "no trace of the refused batch");
    assert_eq!(s.trace().verify(None).unwrap().records, base + 11);
}

/// A mailbox created in the same group as a delivery to it: the delivery's archive copy
/// is planned once the mailbox exists, as one after the other.
#[test]
fn a_delivery_after_its_mailbox_is_added_in_the_same_group_is_archived() {
    let dir = tempfile::tempdir().unwrap();
    let (s, a) = open(dir.path(), Arc::new(ManualClock::new(t0())));
    let new = PecAddress::parse("nuova@pec.insieme.test").unwrap();
    let mut rec = s.mailbox_record(&a).unwrap().unwrap();
    rec.address = new.clone();
    let batches = vec![
        Batch::new().push(Op::MailboxAdd(rec)),
        delivery(&s, &new, "first", "first msg", t0()),
    ];
    for r in s.commit_all(batches) {
        let r = r.unwrap();
        assert!(r.archive_full.is_empty(), "{r:?}");
    }
    assert_eq!(bodies(&s, &s.messages(&new, INBOX).unwrap()), ["first msg"]);
    assert_eq!(
        bodies(&s, &s.archived(&new, RECEIVED).unwrap()),
        ["first msg"],
        "the copy was made"
    );
}

/// What goes together: what the pipeline commits per message; not what changes what a
/// later expansion reads.
#[test]
fn only_the_pipelines_batches_go_together() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(t0()));
    let (s, a) = open(dir.path(), clock);
    let cutoff = t0() - SignedDuration::from_hours(24 * 31);
    assert!(goes_with_others(
        &delivery(&s, &a, "k", "body", t0()),
        cutoff
    ));
    // An archive copy that a later one could drop.
    let old = t0() - SignedDuration::from_hours(24 * 62);
    assert!(!goes_with_others(
        &delivery(&s, &a, "k", "body", old),
        cutoff
    ));
    let mut ordinary = Delivery::inbox(a.clone(), s.blobs().put(b"x").unwrap(), old);
    ordinary.archive = false;
    assert!(goes_with_others(&Batch::new().deliver(ordinary), cutoff));
    for alone in [
        Batch::new().create_folder(a.clone(), "Fatture"),
        Batch::new().delete_folder(a.clone(), "Fatture"),
        Batch::new().push(Op::MailboxDelete(a.clone())),
        Batch::new().push(Op::MailboxAdd(s.mailbox_record(&a).unwrap().unwrap())),
        Batch::new().expunge(a.clone(), INBOX, 1),
    ] {
        assert!(!goes_with_others(&alone, cutoff), "{alone:?}");
    }
}
