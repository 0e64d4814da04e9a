//! The outbound queue: transport envelopes and receipts waiting to be relayed to another
//! provider (or, for our own domains, to be taken in charge by the local delivery worker),
//! per recipient domain, with retry state.
//!
//! Keys: `queue` = id (u64 BE) → [`QueueItem`]; `queue_due` = lane (1 byte: 0 local, 1
//! remote) ++ next attempt (unix ms, sign bit flipped, BE) ++ id → the item's domain, so
//! that "what is due now in my lane" is one range scan: a peer that is down and piles up
//! remote retries never hides local work from the local worker, nor the reverse; and the
//! relay passes over the items of a domain already at its limit of transactions without
//! reading them ([`Store::queue_due_spread`]). (An entry written before the domain was
//! kept there is empty until the next open rebuilds the index.)
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

use std::collections::{HashMap, HashSet};
use std::ops::Bound;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use super::batch::{Batch, Op};
use super::blobs::{Blob, BlobId};
use super::tx::{META, QUEUE, QUEUE_DUE, Tx, TxResult, abort, blob_ref, get_json, put_json};
use super::{Store, StoreError, Trees};

mod floor;
use crate::pec::address::Domain;
pub(crate) use floor::Floors;

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

/// How [`Store::queue_due_spread`] spreads what it takes over the destination domains.
#[derive(Debug, Clone, Copy)]
pub struct Spread<'a> {
    /// Items of one domain in flight at most (those already in flight included).
    pub per_domain: usize,
    /// Items in flight already, by domain name ([`Domain::as_str`]).
    pub in_flight: &'a HashMap<String, usize>,
    /// Entries of the due index looked at, at most.
    pub scan: usize,
    /// Where to start: after this key of the due index ([`Due::stopped_at`] of an earlier
    /// call), or at the oldest entry.
    pub after: Option<&'a [u8]>,
}

/// What [`Store::queue_due_spread`] found.
#[derive(Debug)]
pub struct Due {
    /// The items taken, oldest first.
    pub items: Vec<QueueItem>,
    /// Fewer than asked for, and the scan stopped at its bound with more entries beyond
    /// it, from [`Self::stopped_at`] on.
    pub cut_short: bool,
    /// The last key of the due index looked at, when `cut_short`.
    pub stopped_at: Option<Vec<u8>>,
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
        due.push((due_key(lane, item.next_attempt, item.id), item.domain));
    }
    trees.queue.apply_batch(items)?;
    // The index is derived: a crash between clear and refill is repaired at the next open.
    trees.queue_due.clear()?;
    let mut index = super::kv::Batch::default();
    for (k, domain) in due {
        index.insert(&k[..], domain.as_str());
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
    put_due(tx, due_key(item.lane, item.next_attempt, id), &item.domain)?;
    blob_ref(tx, &item.blob, 1)
}

/// Writes a due-index entry, the floor lowered to it first (see `Floors`).
fn put_due(tx: &Tx, key: [u8; 17], domain: &Domain) -> TxResult<()> {
    if let Some(f) = tx.floors {
        f.lower(&key);
    }
    tx.t[QUEUE_DUE].insert(key, domain.as_str())
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
    put_due(tx, due_key(item.lane, next, id), &item.domain)?;
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
    put_due(tx, due_key(item.lane, until, id), &item.domain)?;
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
                value: Some(new.domain.as_str().as_bytes().to_vec()),
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
        let spread = Spread {
            per_domain: usize::MAX,
            in_flight: &HashMap::new(),
            scan: limit.saturating_add(skip.len()),
            after: None,
        };
        Ok(self.queue_due_spread(lane, now, limit, skip, spread)?.items)
    }

    /// [`Self::queue_due_except`], taking no more items of a domain than `spread` leaves
    /// room for: a domain with `spread.in_flight` transactions already (by domain name) gets
    /// up to `spread.per_domain` less that many. The items of a full domain are passed over
    /// without reading their records (the index holds each item's domain), and so are the
    /// ids in `skip`; at most `spread.scan` entries of the index are looked at, from
    /// `spread.after` on, so a long run of a full domain's items costs a bounded scan, and
    /// what lies behind it waits for a call that starts where this one stopped
    /// ([`Due::cut_short`], [`Due::stopped_at`]).
    pub fn queue_due_spread(
        &self,
        lane: Lane,
        now: Timestamp,
        limit: usize,
        skip: &HashSet<u64>,
        spread: Spread<'_>,
    ) -> Result<Due, StoreError> {
        let hi = due_key(lane, now, u64::MAX);
        let lane_start = [lane.byte()];
        // A scan from the oldest entry starts at the lane's floor (see `Floors`), and
        // tells it what it found however it ends.
        let floors = &self.trees().queue_floors;
        let begun = spread.after.is_none().then(|| floors.begin(lane, now, &hi));
        let from = match (spread.after, begun.as_ref().and_then(|b| b.from.as_ref())) {
            (Some(k), _) => Bound::Excluded(k),
            (None, Some(f)) => Bound::Included(f.as_slice()),
            (None, None) => Bound::Included(&lane_start[..]),
        };
        let mut first = None;
        let r = self.scan_due(from, &hi, now, limit, skip, spread, &mut first);
        if let Some(b) = begun {
            let read_all = matches!(&r, Ok((due, whole)) if *whole && !due.cut_short);
            floors.found(b, first.as_deref(), read_all, &hi);
        }
        r.map(|(due, _)| due)
    }

    /// The scan of [`Self::queue_due_spread`] from `from` up to `hi`; `first` is set to
    /// the first entry read. Also says whether it read every entry up to `hi`.
    #[allow(clippy::too_many_arguments)]
    fn scan_due(
        &self,
        from: Bound<&[u8]>,
        hi: &[u8; 17],
        now: Timestamp,
        limit: usize,
        skip: &HashSet<u64>,
        spread: Spread<'_>,
        first: &mut Option<Vec<u8>>,
    ) -> Result<(Due, bool), StoreError> {
        let mut taken: HashMap<String, usize> = HashMap::new();
        let room = |taken: &HashMap<String, usize>, domain: &str| {
            let busy = spread.in_flight.get(domain).copied().unwrap_or(0)
                + taken.get(domain).copied().unwrap_or(0);
            busy < spread.per_domain
        };
        let mut out = Vec::new();
        let (mut looked, mut stopped_at, mut beyond, mut whole) = (0, None, false, true);
        for kv in self
            .trees()
            .queue_due
            .range::<&[u8], _>((from, Bound::Included(hi.as_slice())))
        {
            if out.len() == limit {
                whole = false;
                break;
            }
            let (k, domain) = kv?;
            if first.is_none() {
                *first = Some(k.to_vec());
            }
            if looked == spread.scan {
                // An entry beyond the bound: there is more to look at.
                beyond = true;
                break;
            }
            looked += 1;
            stopped_at = Some(k.to_vec());
            let Some(id) = id_of_due_key(&k) else {
                continue;
            };
            // An empty value: an entry from before the index held domains (read the item).
            let domain = std::str::from_utf8(&domain).unwrap_or_default();
            if skip.contains(&id) || (!domain.is_empty() && !room(&taken, domain)) {
                continue;
            }
            match self.queue_item(id)? {
                Some(item) if item.next_attempt <= now && room(&taken, item.domain.as_str()) => {
                    *taken.entry(item.domain.as_str().to_string()).or_default() += 1;
                    out.push(item);
                }
                _ => {}
            }
        }
        let more = beyond && out.len() < limit;
        let due = Due {
            cut_short: more,
            stopped_at: if more { stopped_at } else { None },
            items: out,
        };
        Ok((due, whole && !beyond))
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
mod tests;
