//! The outbound queue: transport envelopes and receipts waiting to be relayed to another
//! provider (or, for our own domains, to be taken in charge by the local delivery worker),
//! per recipient domain, with retry state.
//!
//! Keys: `queue` = id (u64 BE) → [`QueueItem`]; `queue_due` = lane (1 byte: 0 local, 1
//! remote) ++ next attempt (unix ms, sign bit flipped, BE) ++ id → empty, so that "what is
//! due now in my lane" is one range scan: a peer that is down and piles up remote retries
//! never hides local work from the local worker, nor the reverse.
//!
//! The lane is fixed at enqueue from the domains this store serves
//! ([`crate::store::StoreOptions::domains`], copied into `meta` at open so the committer
//! can read it inside the transaction). The `queue_due` index is derived data: it is
//! rebuilt from `queue` at every open ([`open_lanes`]), which also converts stores written
//! before lanes existed (16-byte due keys) and follows a change of the served domains.
//!
//! `accepted_at` is when the item was created (its first `next_attempt`): the relay gives up
//! 24 h after it (rule §6.2), however many attempts and partial deliveries happened.
//! An item holds a reference on its blob until it is done.
//!
//! With several writing nodes a node leases the due items it works on
//! ([`apply_lease`]): their next attempt moves to the lease's end, with a token that the
//! commit of the outcome checks ([`apply_fence`]); an item whose node died comes due again
//! when its lease ends.

use std::collections::HashSet;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use super::batch::{Batch, Op};
use super::blobs::{Blob, BlobId};
use super::tx::{META, QUEUE, QUEUE_DUE, Tx, TxResult, abort, blob_ref, get_json, put_json};
use super::{Store, StoreError, Trees};
use crate::pec::address::Domain;

/// `meta` key of the JSON list of served domains, as of the last open.
const LOCAL_DOMAINS_KEY: &[u8] = b"queue_local_domains";

/// Input of [`crate::store::Batch::enqueue`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewQueueItem {
    /// The recipient domain (one SMTP transaction per domain).
    pub domain: Domain,
    /// Envelope sender and recipients.
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    pub blob: Blob,
    /// The PEC identificativo the message belongs to (for the trace and the timers).
    pub ident: Option<String>,
    /// First attempt; also recorded as the item's `accepted_at`.
    pub next_attempt: Timestamp,
}

/// Which worker takes an item: the local delivery worker or the SMTP relay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lane {
    Local,
    #[default]
    Remote,
}

impl Lane {
    fn byte(self) -> u8 {
        match self {
            Lane::Local => 0,
            Lane::Remote => 1,
        }
    }

    fn of(domain: &Domain, local: &[Domain]) -> Lane {
        if local.iter().any(|d| d == domain) {
            Lane::Local
        } else {
            Lane::Remote
        }
    }
}

/// A queued message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueItem {
    pub id: u64,
    pub domain: Domain,
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    pub blob: BlobId,
    pub size: u64,
    pub ident: Option<String>,
    pub next_attempt: Timestamp,
    pub attempts: u32,
    pub last_error: Option<String>,
    /// When the item was first queued (None: written by a pecd before this field).
    #[serde(default)]
    pub accepted_at: Option<Timestamp>,
    #[serde(default)]
    pub lane: Lane,
    /// The token of the lease a node holds on the item while it works on it (several
    /// writers, [`crate::store::Batch::queue_lease`]); `next_attempt` is then when the lease
    /// ends. `None` when not leased (and always with one writer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<u64>,
}

pub(crate) fn due_key(lane: Lane, t: Timestamp, id: u64) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = lane.byte();
    k[1..9].copy_from_slice(&((t.as_millisecond() as u64) ^ (1 << 63)).to_be_bytes());
    k[9..].copy_from_slice(&id.to_be_bytes());
    k
}

fn id_of_due_key(k: &[u8]) -> Option<u64> {
    k.get(9..17)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
}

/// Delay before attempt `attempts + 1` of a remote item: 1 min doubling, capped at 1 h
/// (the relay's schedule, `pipeline::relay::backoff`; here because the store needs it to
/// date items written before `accepted_at` existed).
pub fn retry_backoff(attempts: u32) -> SignedDuration {
    let secs = 60u64.saturating_mul(1u64 << attempts.min(6)).min(3600);
    SignedDuration::from_secs(secs as i64)
}

/// The acceptance instant of an item written by a pecd before `accepted_at` existed: its
/// next attempt minus the backoff delays of the attempts it had. Attempt `k` ran no earlier
/// than acceptance + Σ_{i<k} backoff(i), and the next one is due at the last attempt +
/// backoff(attempts − 1), so this is the *latest* acceptance consistent with the recorded
/// attempts: the 24 h give-up (rule §6.2) measured from it never comes early, and is late
/// only by the time the worker was behind. With no attempts it is exact (enqueue sets the
/// first attempt to the acceptance instant).
pub fn estimated_accepted_at(item: &QueueItem) -> Timestamp {
    let queued_for: SignedDuration = (0..item.attempts).map(retry_backoff).sum();
    item.next_attempt
        .checked_sub(queued_for)
        .unwrap_or(item.next_attempt)
}

/// At open, before the committer starts: records the served domains for the lane choice at
/// enqueue, and rebuilds the due index from the items (each one's lane recomputed). Items
/// from a pecd before `accepted_at` get [`estimated_accepted_at`] written once, so their
/// give-up instant stays fixed from then on. An item that cannot be read is logged and left
/// out of the due index (it is never attempted; the rest of the queue still works).
pub(crate) fn open_lanes(trees: &Trees, local: &[Domain]) -> Result<(), StoreError> {
    let json = serde_json::to_vec(local).map_err(|e| StoreError::Corrupt {
        what: "served domains".into(),
        detail: e.to_string(),
    })?;
    trees.meta.insert(LOCAL_DOMAINS_KEY, json)?;
    let mut items = super::kv::Batch::default();
    let mut due = Vec::new();
    for kv in trees.queue.iter() {
        let (k, v) = kv?;
        let mut item: QueueItem = match serde_json::from_slice(&v) {
            Ok(i) => i,
            Err(e) => {
                tracing::error!(
                    queue_key = %hex::encode(&k),
                    error = %e,
                    "unreadable queue item: left out of the due index, never attempted"
                );
                continue;
            }
        };
        let lane = Lane::of(&item.domain, local);
        let undated = item.accepted_at.is_none();
        if undated {
            item.accepted_at = Some(estimated_accepted_at(&item));
        }
        if item.lane != lane || undated {
            item.lane = lane;
            let v = serde_json::to_vec(&item).map_err(|e| StoreError::Corrupt {
                what: "queue item".into(),
                detail: e.to_string(),
            })?;
            items.insert(k, v);
        }
        due.push(due_key(lane, item.next_attempt, item.id));
    }
    trees.queue.apply_batch(items)?;
    // The index is derived: a crash between clear and refill is repaired at the next open.
    trees.queue_due.clear()?;
    let mut index = super::kv::Batch::default();
    for k in due {
        index.insert(&k[..], []);
    }
    trees.queue_due.apply_batch(index)?;
    Ok(())
}

pub(crate) fn apply_enqueue(tx: &Tx, id: u64, n: &NewQueueItem) -> TxResult<()> {
    let local: Vec<Domain> = get_json(&tx.t[META], LOCAL_DOMAINS_KEY)?.unwrap_or_default();
    let item = QueueItem {
        id,
        domain: n.domain.clone(),
        mail_from: n.mail_from.clone(),
        rcpt_to: n.rcpt_to.clone(),
        blob: n.blob.id.clone(),
        size: n.blob.size,
        ident: n.ident.clone(),
        next_attempt: n.next_attempt,
        attempts: 0,
        last_error: None,
        accepted_at: Some(n.next_attempt),
        lane: Lane::of(&n.domain, &local),
        lease: None,
    };
    put_json(&tx.t[QUEUE], &id.to_be_bytes(), &item)?;
    tx.t[QUEUE_DUE].insert(due_key(item.lane, item.next_attempt, id), &[])?;
    blob_ref(tx, &item.blob, 1)
}

fn load(tx: &Tx, id: u64) -> TxResult<QueueItem> {
    match get_json::<QueueItem>(&tx.t[QUEUE], &id.to_be_bytes())? {
        Some(i) => Ok(i),
        None => abort(StoreError::NoSuchQueueItem(id)),
    }
}

pub(crate) fn apply_retry(tx: &Tx, id: u64, next: Timestamp, error: &str) -> TxResult<()> {
    let mut item = load(tx, id)?;
    tx.t[QUEUE_DUE].remove(due_key(item.lane, item.next_attempt, id))?;
    item.attempts = item.attempts.saturating_add(1);
    item.next_attempt = next;
    item.last_error = Some(error.to_string());
    item.lease = None;
    tx.t[QUEUE_DUE].insert(due_key(item.lane, next, id), &[])?;
    put_json(&tx.t[QUEUE], &id.to_be_bytes(), &item)
}

/// Leases item `id` until `until` with token `token`, if it is still due as `seen` (not
/// leased, retried or done by another node since it was read); the item as leased.
pub(crate) fn apply_lease(
    tx: &Tx,
    id: u64,
    seen: Timestamp,
    until: Timestamp,
    token: u64,
) -> TxResult<Option<QueueItem>> {
    let Some(mut item) = get_json::<QueueItem>(&tx.t[QUEUE], &id.to_be_bytes())? else {
        return Ok(None);
    };
    if item.next_attempt != seen {
        return Ok(None);
    }
    tx.t[QUEUE_DUE].remove(due_key(item.lane, item.next_attempt, id))?;
    item.next_attempt = until;
    item.lease = Some(token);
    tx.t[QUEUE_DUE].insert(due_key(item.lane, until, id), &[])?;
    put_json(&tx.t[QUEUE], &id.to_be_bytes(), &item)?;
    Ok(Some(item))
}

/// Refuses the batch unless item `id` is still leased with `lease`.
pub(crate) fn apply_fence(tx: &Tx, id: u64, lease: u64) -> TxResult<()> {
    match get_json::<QueueItem>(&tx.t[QUEUE], &id.to_be_bytes())? {
        Some(item) if item.lease == Some(lease) => Ok(()),
        _ => abort(StoreError::LeaseLost(id)),
    }
}

pub(crate) fn apply_done(tx: &Tx, id: u64) -> TxResult<()> {
    let item = load(tx, id)?;
    tx.t[QUEUE_DUE].remove(due_key(item.lane, item.next_attempt, id))?;
    tx.t[QUEUE].remove(id.to_be_bytes())?;
    blob_ref(tx, &item.blob, -1)
}

impl Batch {
    /// Records a failed attempt for only some recipients of an item: the item keeps its id,
    /// blob reference, `accepted_at` and attempt count (+1), and now lists `rcpt_to` only.
    /// `item` is the version read from the store (its due key is replaced).
    pub fn queue_retry_some(
        self,
        item: &QueueItem,
        rcpt_to: Vec<String>,
        next_attempt: Timestamp,
        error: impl Into<String>,
    ) -> Result<Self, StoreError> {
        let mut new = item.clone();
        new.rcpt_to = rcpt_to;
        new.attempts = new.attempts.saturating_add(1);
        new.next_attempt = next_attempt;
        new.last_error = Some(error.into());
        new.lease = None;
        let value = serde_json::to_vec(&new).map_err(|e| StoreError::Corrupt {
            what: format!("queue item {}", item.id),
            detail: e.to_string(),
        })?;
        Ok(self
            .push(Op::Raw {
                tree: QUEUE_DUE,
                key: due_key(item.lane, item.next_attempt, item.id).to_vec(),
                value: None,
            })
            .push(Op::Raw {
                tree: QUEUE_DUE,
                key: due_key(new.lane, new.next_attempt, new.id).to_vec(),
                value: Some(Vec::new()),
            })
            .push(Op::Raw {
                tree: QUEUE,
                key: item.id.to_be_bytes().to_vec(),
                value: Some(value),
            }))
    }
}

impl Store {
    /// Queue items of both lanes whose next attempt is at or before `now`, oldest first.
    pub fn queue_due(&self, now: Timestamp, limit: usize) -> Result<Vec<QueueItem>, StoreError> {
        let mut all = self.queue_due_in(Lane::Local, now, limit)?;
        all.extend(self.queue_due_in(Lane::Remote, now, limit)?);
        all.sort_by_key(|i| (i.next_attempt, i.id));
        all.truncate(limit);
        Ok(all)
    }

    /// Items of one lane due at or before `now`, oldest first.
    pub fn queue_due_in(
        &self,
        lane: Lane,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<QueueItem>, StoreError> {
        self.queue_due_except(lane, now, limit, &HashSet::new())
    }

    /// Up to `limit` items of one lane due at or before `now`, oldest first, leaving out
    /// the ids in `skip` (those the caller is working on already) before their records
    /// are read: it looks at the first `limit + skip.len()` entries of the due index (an
    /// item left out below leaves its place empty until the next call).
    ///
    /// The index and the records are read one after the other, not as one snapshot. An
    /// item whose record is gone by then (done) or says it is not due (another node
    /// leased it meanwhile, which moves its next attempt to the lease's end) is left out:
    /// leasing it on the strength of that record would succeed and relay it twice.
    pub fn queue_due_except(
        &self,
        lane: Lane,
        now: Timestamp,
        limit: usize,
        skip: &HashSet<u64>,
    ) -> Result<Vec<QueueItem>, StoreError> {
        let lo = [lane.byte()];
        let hi = due_key(lane, now, u64::MAX);
        let mut ids = Vec::new();
        for kv in self
            .trees()
            .queue_due
            .range(lo.as_slice()..=hi.as_slice())
            .take(limit.saturating_add(skip.len()))
        {
            let (k, _) = kv?;
            if let Some(id) = id_of_due_key(&k) {
                ids.push(id);
            }
        }
        let mut out = Vec::new();
        for id in ids.into_iter().filter(|id| !skip.contains(id)) {
            if out.len() == limit {
                break;
            }
            match self.queue_item(id)? {
                Some(item) if item.next_attempt <= now => out.push(item),
                _ => {}
            }
        }
        Ok(out)
    }

    pub fn queue_item(&self, id: u64) -> Result<Option<QueueItem>, StoreError> {
        match self.trees().queue.get(id.to_be_bytes())? {
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| StoreError::Corrupt {
                    what: format!("queue item {id}"),
                    detail: e.to_string(),
                }),
            None => Ok(None),
        }
    }

    /// Number of queued items.
    pub fn queue_len(&self) -> Result<usize, StoreError> {
        Ok(self.trees().queue.len()?)
    }

    /// Per lane: the number of queued items and the acceptance time of the oldest (for the
    /// metrics; one pass over the queue, which holds work in flight, not history).
    pub fn queue_stats(&self) -> Result<Vec<(Lane, usize, Option<Timestamp>)>, StoreError> {
        let mut out: Vec<(Lane, usize, Option<Timestamp>)> =
            vec![(Lane::Local, 0, None), (Lane::Remote, 0, None)];
        for kv in self.trees().queue.iter() {
            let (_, v) = kv?;
            let Ok(item) = serde_json::from_slice::<QueueItem>(&v) else {
                continue;
            };
            let at = item
                .accepted_at
                .unwrap_or_else(|| estimated_accepted_at(&item));
            if let Some(s) = out.iter_mut().find(|s| s.0 == item.lane) {
                s.1 += 1;
                s.2 = Some(s.2.map_or(at, |o: Timestamp| o.min(at)));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
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
        assert_eq!(crate::store::SCHEMA_VERSION, 9);
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
}
