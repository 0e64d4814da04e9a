//! The pending table: messages relayed to a recipient that still await its provider's
//! take-charge receipt (12 h: then a `preavviso-errore-consegna`) or delivery receipt
//! (24 h: then the final non-delivery notice) — rules digest §6.4, §4.12.
//!
//! Keys: `pending` = identificativo `\0` recipient-key → [`PendingEntry`], and
//! identificativo `\0` (no recipient) → [`PendingMessage`], what the entries of one message
//! share (the daticert data of its notices), written once per message rather than once per
//! recipient and removed with its last entry;
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

/// What every pending entry of one message shares: the certification data the timeout
/// notices' daticert repeats from the acceptance (all the recipients with their kind, the
/// original's Reply-To), and how many of its entries are still open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingMessage {
    /// Every To/Cc recipient as the acceptance certified them (*destinatari*).
    pub destinatari: Vec<crate::pec::daticert::Destinatario>,
    /// The original's `Reply-To`, else the sender (*risposte*).
    pub risposte: String,
    /// Open entries of the message; the record goes with the last one.
    #[serde(default)]
    pub open: u32,
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

/// The key of a message's [`PendingMessage`]: its identificativo and the separator, which
/// no entry key ends with (a recipient key is never empty).
fn message_key(ident: &str) -> Vec<u8> {
    let mut k = ident.as_bytes().to_vec();
    k.push(0);
    k
}

/// Adds `delta` to the open count of the message's shared record (when there is one: not
/// for entries written before it existed); at zero the record goes.
fn count_open(tx: &Tx, ident: &str, delta: i64) -> TxResult<()> {
    let key = message_key(ident);
    if let Some(mut m) = get_json::<PendingMessage>(&tx.t[PENDING], &key)? {
        m.open = u32::try_from(i64::from(m.open) + delta).unwrap_or(0);
        if m.open == 0 && delta < 0 {
            tx.t[PENDING].remove(key)?;
        } else {
            put_json(&tx.t[PENDING], &key, &m)?;
        }
    }
    Ok(())
}

/// Writes the shared record of a message; put it before the message's entries, in the same
/// batch, so that they count themselves in.
pub(crate) fn apply_message(tx: &Tx, ident: &str, m: &PendingMessage) -> TxResult<()> {
    let key = message_key(ident);
    let open = get_json::<PendingMessage>(&tx.t[PENDING], &key)?.map_or(0, |o| o.open);
    put_json(&tx.t[PENDING], &key, &PendingMessage { open, ..m.clone() })
}

pub(crate) fn apply_put(tx: &Tx, e: &PendingEntry) -> TxResult<()> {
    let key = entry_key(&e.ident, &e.recipient);
    if unindex(tx, &key)?.is_none() {
        count_open(tx, &e.ident, 1)?;
    }
    put_json(&tx.t[PENDING], &key, e)?;
    tx.t[PENDING_DUE].insert(due_key(e.next_deadline(), &key), &[])?;
    Ok(())
}

/// The take-charge receipt arrived: an entry still awaiting it now awaits the delivery
/// receipt. Read and written inside the transaction, so an entry resolved meanwhile (its
/// delivery receipt committed first) is not brought back. Missing entries are no error.
pub(crate) fn apply_taken_in_charge(tx: &Tx, ident: &str, recipient: &str) -> TxResult<()> {
    let key = entry_key(ident, recipient);
    if let Some(mut e) = get_json::<PendingEntry>(&tx.t[PENDING], &key)?
        && e.awaiting == Awaiting::TakeCharge
    {
        unindex(tx, &key)?;
        e.awaiting = Awaiting::DeliveryReceipt;
        put_json(&tx.t[PENDING], &key, &e)?;
        tx.t[PENDING_DUE].insert(due_key(e.next_deadline(), &key), &[])?;
    }
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
        count_open(tx, ident, -1)?;
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

    /// The shared record of a message with open entries (`None` for messages accepted
    /// before it existed).
    pub fn pending_message(&self, ident: &str) -> Result<Option<PendingMessage>, StoreError> {
        self.trees()
            .pending
            .get(message_key(ident))?
            .map(|v| {
                serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
                    what: "pending message".into(),
                    detail: e.to_string(),
                })
            })
            .transpose()
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
