//! The queue's tests: lanes, leases, retries, the spread over domains.

//! Unit tests: their unwraps see only stores and values built here, never peer input.
use super::*;
use crate::store::StoreOptions;

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn open(dir: &std::path::Path) -> Store {
    let o = StoreOptions {
        domains: vec![Domain::parse("pec.alfa.test").unwrap()],
        ..StoreOptions::default()
    };
    Store::open(dir, o).unwrap()
}

fn item(s: &Store, domain: &str, at: Timestamp) -> NewQueueItem {
    NewQueueItem {
        domain: Domain::parse(domain).unwrap(),
        mail_from: "a@pec.alfa.test".into(),
        rcpt_to: vec![format!("x@{domain}"), format!("y@{domain}")],
        blob: s.blobs().put(b"envelope").unwrap(),
        ident: Some("id".into()),
        next_attempt: at,
    }
}

#[test]
fn a_leased_item_is_one_nodes_until_its_lease_ends_and_a_stale_outcome_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let t0 = t("2026-11-23T09:00:00Z");
    let secs = |n| t0.checked_add(jiff::SignedDuration::from_secs(n)).unwrap();
    let id = s
        .commit(Batch::new().enqueue(item(&s, "peer.example", t0)))
        .unwrap()
        .queued[0];
    let due = s.queue_due(t0, 10).unwrap();
    // Node 1 leases it for 60 s: due to nobody until then.
    let a = s
        .commit(Batch::new().queue_lease(&due, secs(60)))
        .unwrap()
        .leased;
    assert_eq!(a.len(), 1);
    let mine = a[0].clone();
    assert_eq!((mine.id, mine.next_attempt), (id, secs(60)));
    assert!(mine.lease.is_some());
    assert!(s.queue_due(secs(59), 10).unwrap().is_empty());
    // Node 2 read it due before the lease: its lease gets nothing.
    let b = s
        .commit(Batch::new().queue_lease(&due, secs(60)))
        .unwrap()
        .leased;
    assert!(b.is_empty());
    // Node 1 outlived its lease; node 2 takes the item over after it.
    let again = s.queue_due(secs(60), 10).unwrap();
    let theirs = s
        .commit(Batch::new().queue_lease(&again, secs(120)))
        .unwrap()
        .leased;
    assert_eq!(theirs.len(), 1);
    assert_ne!(theirs[0].lease, mine.lease);
    // Node 1's outcome comes late: refused whole, nothing of it applied.
    let late = s.commit(Batch::new().queue_fence(&mine).queue_done(id));
    assert!(
        matches!(late, Err(StoreError::LeaseLost(i)) if i == id),
        "{late:?}"
    );
    assert!(s.queue_item(id).unwrap().is_some());
    // Node 2's retry is recorded, and ends its lease.
    s.commit(
        Batch::new()
            .queue_fence(&theirs[0])
            .queue_retry(id, secs(200), "451 later"),
    )
    .unwrap();
    let now = s.queue_item(id).unwrap().unwrap();
    assert_eq!(
        (now.next_attempt, now.lease, now.attempts),
        (secs(200), None, 1)
    );
    let late = s.commit(Batch::new().queue_fence(&theirs[0]).queue_done(id));
    assert!(matches!(late, Err(StoreError::LeaseLost(_))), "{late:?}");
    // Not leased (one writer): no fence, done as before.
    s.commit(Batch::new().queue_fence(&now).queue_done(id))
        .unwrap();
    assert!(s.queue_item(id).unwrap().is_none());
}

/// Enqueues `n` items for `domain`, due at `at`, in one commit; their ids in order.
fn enqueued(s: &Store, n: usize, domain: &str, at: Timestamp) -> Vec<u64> {
    let b = (0..n).fold(Batch::new(), |b, _| b.enqueue(item(s, domain, at)));
    s.commit(b).unwrap().queued
}

fn ids_of(items: Vec<QueueItem>) -> Vec<u64> {
    items.iter().map(|i| i.id).collect()
}

#[test]
fn a_backlog_of_remote_retries_does_not_hide_local_work() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let t0 = t("2026-11-23T09:00:00Z");
    let queued = enqueued(&s, 100, "down.example", t0);
    // Due after the whole remote backlog, in time order.
    let later = t0.checked_add(jiff::SignedDuration::from_secs(1)).unwrap();
    s.commit(Batch::new().enqueue(item(&s, "pec.alfa.test", later)))
        .unwrap();
    let local = s.queue_due_in(Lane::Local, later, 64).unwrap();
    assert_eq!(local.len(), 1);
    assert_eq!(local[0].domain.as_str(), "pec.alfa.test");
    let remote = s.queue_due_in(Lane::Remote, later, 64).unwrap();
    assert_eq!(remote.len(), 64);
    assert!(remote.iter().all(|i| i.lane == Lane::Remote));
    assert_eq!(s.queue_due(later, 1000).unwrap().len(), 101);
    assert_eq!(ids_of(remote), queued[..64]);
    assert!(s.queue_due_in(Lane::Local, t0, 64).unwrap().is_empty());
}

/// What the relay asks while it relays some items already: the next ones behind
/// them, none of those it holds, and none another node leased between the index read
/// and the record read (the record then says "not due", the index not yet).
#[test]
fn due_items_leave_out_those_held_and_those_leased_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let t0 = t("2026-11-23T09:00:00Z");
    let queued = enqueued(&s, 20, "other.example", t0);
    let held: HashSet<u64> = queued[..5].iter().copied().collect();
    let next = s.queue_due_except(Lane::Remote, t0, 10, &held).unwrap();
    assert_eq!(ids_of(next), queued[5..15]);
    // Everything held: nothing is returned.
    let all: HashSet<u64> = queued.iter().copied().collect();
    assert!(
        s.queue_due_except(Lane::Remote, t0, 10, &all)
            .unwrap()
            .is_empty()
    );
    // Item 6 leased by another node as this one reads: its record moved on.
    let id = queued[5];
    let mut leased = s.queue_item(id).unwrap().unwrap();
    leased.next_attempt = t("2026-11-23T09:05:00Z");
    leased.lease = Some(7);
    s.trees()
        .queue
        .insert(id.to_be_bytes(), serde_json::to_vec(&leased).unwrap())
        .unwrap();
    // Left out; its place in the window stays empty until the next call.
    let next = s.queue_due_except(Lane::Remote, t0, 10, &held).unwrap();
    assert_eq!(ids_of(next), queued[6..15]);
}

/// What the relay asks with a limit per domain: no more of a domain than it has room
/// for (counting what it relays already), the other domains' items behind a full
/// domain's backlog, that backlog passed over without reading its records, and the
/// index entries a retry, a partial retry, a lease or a reopened store write all
/// carry their domain.
#[test]
fn due_items_are_spread_over_domains_within_their_limits() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let t0 = t("2026-11-23T09:00:00Z");
    let busy = enqueued(&s, 30, "busy.example", t0);
    let quiet = enqueued(&s, 3, "quiet.example", t0);
    let spread = |in_flight, per_domain, scan| Spread {
        per_domain,
        in_flight,
        scan,
        after: None,
    };
    let none = HashMap::new();
    let got = s
        .queue_due_spread(Lane::Remote, t0, 10, &HashSet::new(), spread(&none, 4, 100))
        .unwrap()
        .items;
    assert_eq!(ids_of(got), [&busy[..4], &quiet[..]].concat());
    // An index written before it held domains (empty values): the records say, the
    // same; the next open writes the domains in.
    let keys: Vec<_> = s
        .trees()
        .queue_due
        .iter()
        .keys()
        .map(Result::unwrap)
        .collect();
    for k in &keys {
        s.trees().queue_due.insert(k, Vec::new()).unwrap();
    }
    let got = s
        .queue_due_spread(Lane::Remote, t0, 10, &HashSet::new(), spread(&none, 4, 100))
        .unwrap()
        .items;
    assert_eq!(ids_of(got), [&busy[..4], &quiet[..]].concat());
    drop(s);
    let s = open(dir.path());
    // Two of busy.example in flight already: room for two more.
    let flying: HashMap<String, usize> = [("busy.example".to_string(), 2)].into();
    let held: HashSet<u64> = busy[..2].iter().copied().collect();
    let got = s
        .queue_due_spread(Lane::Remote, t0, 10, &held, spread(&flying, 4, 100))
        .unwrap()
        .items;
    assert_eq!(ids_of(got), [&busy[2..4], &quiet[..]].concat());
    // The scan is bounded: the quiet items lie 30 entries deep, and it says so.
    let got = s
        .queue_due_spread(Lane::Remote, t0, 10, &HashSet::new(), spread(&none, 4, 20))
        .unwrap();
    assert!(got.cut_short);
    assert_eq!(ids_of(got.items), busy[..4]);
    // The next look starts where that one stopped and, busy.example's four now in
    // flight, finds them.
    let stopped = got.stopped_at.unwrap();
    let four: HashMap<String, usize> = [("busy.example".to_string(), 4)].into();
    let next = Spread {
        after: Some(&stopped),
        ..spread(&four, 4, 20)
    };
    let got = s
        .queue_due_spread(Lane::Remote, t0, 10, &HashSet::new(), next)
        .unwrap();
    assert_eq!(ids_of(got.items), quiet);
    assert!(!got.cut_short && got.stopped_at.is_none());
    // A bound that reaches the last entry exactly is not cut short.
    let all = s
        .queue_due_spread(Lane::Remote, t0, 10, &HashSet::new(), spread(&none, 4, 33))
        .unwrap();
    assert!(!all.cut_short);
    assert_eq!(all.items.len(), 7);
    // The full domain's entries are passed over on the index alone: with their
    // records unreadable, the quiet items still come back.
    let records: Vec<_> = busy[4..]
        .iter()
        .map(|id| (*id, s.trees().queue.get(id.to_be_bytes()).unwrap().unwrap()))
        .collect();
    for (id, _) in &records {
        s.trees()
            .queue
            .insert(id.to_be_bytes(), b"not json".to_vec())
            .unwrap();
    }
    let got = s
        .queue_due_spread(Lane::Remote, t0, 10, &HashSet::new(), spread(&none, 4, 100))
        .unwrap()
        .items;
    assert_eq!(ids_of(got), [&busy[..4], &quiet[..]].concat());
    for (id, record) in records {
        s.trees().queue.insert(id.to_be_bytes(), record).unwrap();
    }
    // Every way an index entry is written keeps the domain.
    let later = t("2026-11-23T10:00:00Z");
    s.commit(Batch::new().queue_retry(quiet[0], later, "451"))
        .unwrap();
    let it = s.queue_item(quiet[1]).unwrap().unwrap();
    s.commit(
        Batch::new()
            .queue_retry_some(&it, vec!["x@quiet.example".into()], later, "452")
            .unwrap(),
    )
    .unwrap();
    let due = s.queue_due_in(Lane::Remote, t0, 10).unwrap();
    s.commit(Batch::new().queue_lease(&due, later)).unwrap();
    let values = |s: &Store| -> Vec<(Vec<u8>, Vec<u8>)> {
        s.trees()
            .queue_due
            .iter()
            .map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())).unwrap())
            .collect()
    };
    let written = values(&s);
    assert_eq!(written.len(), 33);
    let domains: std::collections::BTreeSet<&[u8]> =
        written.iter().map(|(_, v)| v.as_slice()).collect();
    assert_eq!(
        domains,
        [b"busy.example".as_slice(), b"quiet.example".as_slice()].into()
    );
    // The index rebuilt at the next open is the same.
    drop(s);
    let s = open(dir.path());
    assert_eq!(values(&s), written);
}

#[test]
fn partial_retry_keeps_acceptance_time_and_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let t0 = t("2026-11-23T09:00:00Z");
    let id = s
        .commit(Batch::new().enqueue(item(&s, "other.example", t0)))
        .unwrap()
        .queued[0];
    let t1 = t("2026-11-23T10:00:00Z");
    s.commit(Batch::new().queue_retry(id, t1, "451")).unwrap();
    let it = s.queue_item(id).unwrap().unwrap();
    let t2 = t("2026-11-23T11:00:00Z");
    s.commit(
        Batch::new()
            .queue_retry_some(&it, vec!["y@other.example".into()], t2, "452")
            .unwrap(),
    )
    .unwrap();
    let it = s.queue_item(id).unwrap().unwrap();
    assert_eq!(it.accepted_at, Some(t0));
    assert_eq!(it.attempts, 2);
    assert_eq!(it.rcpt_to, vec!["y@other.example".to_string()]);
    assert!(s.queue_due_in(Lane::Remote, t1, 10).unwrap().is_empty());
    assert_eq!(s.queue_due_in(Lane::Remote, t2, 10).unwrap().len(), 1);
    s.commit(Batch::new().queue_done(id)).unwrap();
    assert_eq!(s.queue_len().unwrap(), 0);
    assert!(s.trees().queue_due.is_empty().unwrap());
    assert_eq!(s.blob_refs(&it.blob).unwrap(), 0);
}

#[test]
fn a_store_written_before_lanes_is_migrated_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = t("2026-11-23T09:00:00Z");
    {
        let s = open(dir.path());
        let blob = s.blobs().put(b"envelope").unwrap();
        // The item and due key exactly as the previous version wrote them.
        let legacy = serde_json::json!({
            "id": 7, "domain": "pec.alfa.test", "mail_from": "a@pec.alfa.test",
            "rcpt_to": ["b@pec.alfa.test"], "blob": blob.id, "size": blob.size,
            "ident": "id7", "next_attempt": t0, "attempts": 3, "last_error": null
        });
        s.trees()
            .queue
            .insert(7u64.to_be_bytes(), serde_json::to_vec(&legacy).unwrap())
            .unwrap();
        let mut k = ((t0.as_millisecond() as u64) ^ (1 << 63))
            .to_be_bytes()
            .to_vec();
        k.extend_from_slice(&7u64.to_be_bytes());
        s.trees().queue_due.insert(k, &[]).unwrap();
        s.trees()
            .meta
            .insert(crate::store::SCHEMA_KEY, &1u32.to_be_bytes())
            .unwrap();
    }
    let s = open(dir.path());
    let v = s
        .trees()
        .meta
        .get(crate::store::SCHEMA_KEY)
        .unwrap()
        .unwrap();
    assert_eq!(
        v.as_ref(),
        crate::store::SCHEMA_VERSION.to_be_bytes(),
        "a migrated store is marked with the current schema, so an older pecd refuses it"
    );
    assert_eq!(crate::store::SCHEMA_VERSION, 10);
    let due = s.queue_due_in(Lane::Local, t0, 10).unwrap();
    assert_eq!(due.len(), 1);
    // Three attempts (1 + 2 + 4 min of backoff) before the next one at t0: accepted
    // at the latest 7 min before t0, written once into the item.
    let estimate = t("2026-11-23T08:53:00Z");
    assert_eq!(
        (due[0].id, due[0].attempts, due[0].accepted_at),
        (7, 3, Some(estimate))
    );
    drop(s);
    let s = open(dir.path());
    assert_eq!(
        s.queue_item(7).unwrap().unwrap().accepted_at,
        Some(estimate),
        "written once, not re-estimated at the next open"
    );
    assert!(s.queue_due_in(Lane::Remote, t0, 10).unwrap().is_empty());
    assert!(
        s.trees()
            .queue_due
            .iter()
            .keys()
            .all(|k| k.unwrap().len() == 17),
        "no old-format due key left"
    );
}

#[test]
fn an_unreadable_queue_item_does_not_stop_the_store_from_opening() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = t("2026-11-23T09:00:00Z");
    let good = {
        let s = open(dir.path());
        let id = s
            .commit(Batch::new().enqueue(item(&s, "other.example", t0)))
            .unwrap()
            .queued[0];
        s.trees()
            .queue
            .insert(999u64.to_be_bytes(), b"{not json".as_slice())
            .unwrap();
        s.trees()
            .queue_due
            .insert(due_key(Lane::Remote, t0, 999), &[])
            .unwrap();
        id
    };
    let s = open(dir.path());
    let due = s.queue_due_in(Lane::Remote, t0, 10).unwrap();
    assert_eq!(
        due.iter().map(|i| i.id).collect::<Vec<_>>(),
        vec![good],
        "the readable item is due, the garbage is out of the index"
    );
    assert!(s.queue_due(t0, 10).is_ok());
    // The rest of the queue still works.
    s.commit(Batch::new().queue_done(good)).unwrap();
    assert!(s.trees().queue_due.is_empty().unwrap());
}

#[test]
fn accepted_at_estimate_for_items_without_attempts_is_exact() {
    let t0 = t("2026-11-23T09:00:00Z");
    let mut it = QueueItem {
        id: 1,
        domain: Domain::parse("other.example").unwrap(),
        mail_from: "a@pec.alfa.test".into(),
        rcpt_to: vec![],
        blob: BlobId::of(b"x"),
        size: 1,
        ident: None,
        next_attempt: t0,
        attempts: 0,
        last_error: None,
        accepted_at: None,
        lane: Lane::Remote,
        lease: None,
    };
    assert_eq!(estimated_accepted_at(&it), t0);
    it.attempts = 30;
    let back = t0.checked_sub(SignedDuration::from_hours(24)).unwrap();
    assert!(
        estimated_accepted_at(&it) <= back,
        "30 attempts span more than a day: given up at once"
    );
}

#[test]
fn due_keys_sort_by_lane_then_time() {
    let t1: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
    let t2: Timestamp = "2026-01-02T00:00:00Z".parse().unwrap();
    let mut keys = [
        due_key(Lane::Remote, t1, 1),
        due_key(Lane::Local, t2, 2),
        due_key(Lane::Local, t1, 3),
    ];
    keys.sort();
    let ids: Vec<u64> = keys.iter().filter_map(|k| id_of_due_key(k)).collect();
    assert_eq!(ids, vec![3, 2, 1]);
}

#[test]
fn on_fjall_scans_start_past_removed_entries_and_still_find_every_item() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(
        dir.path(),
        StoreOptions {
            domains: vec![Domain::parse("pec.alfa.test").unwrap()],
            backend: crate::store::StoreBackend::Fjall,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let t0 = t("2026-11-23T09:00:00Z");
    let at = |ms: i64| t0.checked_add(SignedDuration::from_millis(ms)).unwrap();
    let due = |now| -> Vec<u64> {
        s.queue_due_in(Lane::Remote, now, 100)
            .unwrap()
            .iter()
            .map(|i| i.id)
            .collect()
    };
    let enqueue = |ms| {
        s.commit(Batch::new().enqueue(item(&s, "peer.example", at(ms))))
            .unwrap()
            .queued[0]
    };
    // A thousand items queued and done: their entries are tombstones now.
    for n in 0..1000 {
        let id = enqueue(n);
        s.commit(Batch::new().queue_done(id)).unwrap();
    }
    let kept = enqueue(2_000);
    // The scan from the lane's first key finds `kept` first: later scans start there,
    // past the tombstones.
    assert_eq!(due(at(10_000)), [kept]);
    // Where a scan at `now` would start.
    let floor = |now| {
        let f = &s.trees().queue_floors;
        let b = f.begin(Lane::Remote, now, &due_key(Lane::Remote, now, u64::MAX));
        let from = b.from;
        f.found(b, None, false, &[0; 17]);
        from
    };
    assert_eq!(
        floor(at(10_000)),
        Some(due_key(Lane::Remote, at(2_000), kept))
    );
    // Items due before the floor (accepted long before their commit, or after the clock
    // stepped back) are found at once all the same.
    let early = enqueue(500);
    let earlier = enqueue(-60_000);
    assert_eq!(due(at(10_100)), [earlier, early, kept]);
    // And the floor is back past what left.
    for id in [earlier, early, kept] {
        s.commit(Batch::new().queue_done(id)).unwrap();
    }
    assert!(due(at(10_200)).is_empty());
    let fresh = enqueue(10_300);
    assert_eq!(due(at(10_400)), [fresh]);
    assert_eq!(
        floor(at(10_400)),
        Some(due_key(Lane::Remote, at(10_300), fresh))
    );
}
