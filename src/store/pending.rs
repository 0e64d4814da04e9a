//! The pending table: messages relayed to a recipient that still await its provider's
//! take-charge receipt (12 h: then a `preavviso-errore-consegna`) or delivery receipt
//! (24 h: then the final non-delivery notice) — rules digest §6.4, §4.12.
//!
//! Keys: `pending` = identificativo `\0` recipient-key → [`PendingEntry`];
//! `pending_due` = next deadline (unix ms, sign bit flipped, BE) ++ the same key → empty:
//! the timer asks [`Store::pending_due`] for everything due and commits the notice with
//! [`crate::store::Batch::pending_notice_12h`] / `pending_resolve` in the same batch.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::tx::{PENDING, PENDING_DUE, Tx, TxResult, get_json, put_json};
use super::{Store, StoreError};
use crate::trace::mailbox_key;

/// What is awaited from the recipient's provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Awaiting {
    TakeCharge,
    DeliveryReceipt,
}

/// One recipient of one message awaiting a receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingEntry {
    pub ident: String,
    pub recipient: String,
    pub awaiting: Awaiting,
    pub sender: String,
    pub msgid: Option<String>,
    pub subject: Option<String>,
    pub sent_at: Timestamp,
    pub deadline_12h: Timestamp,
    pub deadline_24h: Timestamp,
    pub notice_12h_sent: bool,
}

impl PendingEntry {
    /// The deadline the entry is next due at.
    pub fn next_deadline(&self) -> Timestamp {
        if self.notice_12h_sent {
            self.deadline_24h
        } else {
            self.deadline_12h
        }
    }
}

pub(crate) fn entry_key(ident: &str, recipient: &str) -> Vec<u8> {
    let r = mailbox_key(recipient);
    let mut k = Vec::with_capacity(ident.len() + r.len() + 1);
    k.extend_from_slice(ident.as_bytes());
    k.push(0);
    k.extend_from_slice(r.as_bytes());
    k
}

fn due_key(t: Timestamp, key: &[u8]) -> Vec<u8> {
    let mut k = ((t.as_millisecond() as u64) ^ (1 << 63))
        .to_be_bytes()
        .to_vec();
    k.extend_from_slice(key);
    k
}

fn unindex(tx: &Tx, key: &[u8]) -> TxResult<Option<PendingEntry>> {
    let old = get_json::<PendingEntry>(&tx.t[PENDING], key)?;
    if let Some(o) = &old {
        tx.t[PENDING_DUE].remove(due_key(o.next_deadline(), key))?;
    }
    Ok(old)
}

pub(crate) fn apply_put(tx: &Tx, e: &PendingEntry) -> TxResult<()> {
    let key = entry_key(&e.ident, &e.recipient);
    unindex(tx, &key)?;
    put_json(&tx.t[PENDING], &key, e)?;
    tx.t[PENDING_DUE].insert(due_key(e.next_deadline(), &key), &[])?;
    Ok(())
}

/// Missing entries are not an error: the receipt may arrive after the 24 h notice.
pub(crate) fn apply_notice_12h(tx: &Tx, ident: &str, recipient: &str) -> TxResult<()> {
    let key = entry_key(ident, recipient);
    if let Some(mut e) = unindex(tx, &key)? {
        e.notice_12h_sent = true;
        put_json(&tx.t[PENDING], &key, &e)?;
        tx.t[PENDING_DUE].insert(due_key(e.next_deadline(), &key), &[])?;
    }
    Ok(())
}

pub(crate) fn apply_resolve(tx: &Tx, ident: &str, recipient: &str) -> TxResult<()> {
    let key = entry_key(ident, recipient);
    if unindex(tx, &key)?.is_some() {
        tx.t[PENDING].remove(key)?;
    }
    Ok(())
}

impl Store {
    /// Entries whose next deadline is at or before `now`, earliest first.
    pub fn pending_due(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<PendingEntry>, StoreError> {
        let hi = ((now.as_millisecond() as u64) ^ (1 << 63))
            .saturating_add(1)
            .to_be_bytes();
        let mut out = Vec::new();
        for kv in self.trees().pending_due.range(..hi.as_slice()).take(limit) {
            let (k, _) = kv?;
            if let Some(v) = self.trees().pending.get(k.get(8..).unwrap_or_default())? {
                out.push(decode(&v)?);
            }
        }
        Ok(out)
    }

    pub fn pending(
        &self,
        ident: &str,
        recipient: &str,
    ) -> Result<Option<PendingEntry>, StoreError> {
        self.trees()
            .pending
            .get(entry_key(ident, recipient))?
            .map(|v| decode(&v))
            .transpose()
    }
}

fn decode(v: &[u8]) -> Result<PendingEntry, StoreError> {
    serde_json::from_slice(v).map_err(|e| StoreError::Corrupt {
        what: "pending entry".into(),
        detail: e.to_string(),
    })
}
