//! The outbound queue: transport envelopes and receipts waiting to be relayed to another
//! provider, per recipient domain, with retry state.
//!
//! Keys: `queue` = id (u64 BE) → [`QueueItem`]; `queue_due` = next attempt (unix ms, sign
//! bit flipped, BE) ++ id → empty, so that "what is due now" is one range scan. An item
//! holds a reference on its blob until it is done.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::blobs::{Blob, BlobId};
use super::tx::{QUEUE, QUEUE_DUE, Tx, TxResult, abort, blob_ref, get_json, put_json};
use super::{Store, StoreError};
use crate::pec::address::Domain;

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
    pub next_attempt: Timestamp,
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
}

pub(crate) fn due_key(t: Timestamp, id: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&((t.as_millisecond() as u64) ^ (1 << 63)).to_be_bytes());
    k[8..].copy_from_slice(&id.to_be_bytes());
    k
}

pub(crate) fn apply_enqueue(tx: &Tx, id: u64, n: &NewQueueItem) -> TxResult<()> {
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
    };
    put_json(&tx.t[QUEUE], &id.to_be_bytes(), &item)?;
    tx.t[QUEUE_DUE].insert(&due_key(item.next_attempt, id), &[])?;
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
    tx.t[QUEUE_DUE].remove(&due_key(item.next_attempt, id))?;
    item.attempts = item.attempts.saturating_add(1);
    item.next_attempt = next;
    item.last_error = Some(error.to_string());
    tx.t[QUEUE_DUE].insert(&due_key(next, id), &[])?;
    put_json(&tx.t[QUEUE], &id.to_be_bytes(), &item)
}

pub(crate) fn apply_done(tx: &Tx, id: u64) -> TxResult<()> {
    let item = load(tx, id)?;
    tx.t[QUEUE_DUE].remove(&due_key(item.next_attempt, id))?;
    tx.t[QUEUE].remove(&id.to_be_bytes())?;
    blob_ref(tx, &item.blob, -1)
}

impl Store {
    /// Queue items whose next attempt is at or before `now`, oldest first.
    pub fn queue_due(&self, now: Timestamp, limit: usize) -> Result<Vec<QueueItem>, StoreError> {
        let mut out = Vec::new();
        let hi = due_key(now, u64::MAX);
        for kv in self.trees().queue_due.range(..=hi.as_slice()).take(limit) {
            let (k, _) = kv?;
            let Some(id) = k
                .get(8..16)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
            else {
                continue;
            };
            if let Some(i) = self.queue_item(id)? {
                out.push(i);
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
    pub fn queue_len(&self) -> usize {
        self.trees().queue.len()
    }
}
