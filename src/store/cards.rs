//! Smart cards (CNS) associated with mailboxes: several cards per mailbox (different
//! people log in to one office mailbox with their own card), and one card may open
//! several mailboxes. One tree, two kinds of key, written together in one commit:
//! `m \0 mailbox-key \0 sha256` → the [`CardCert`] (a mailbox's cards), and
//! `c \0 sha256 \0 mailbox-key` → empty (a card's mailboxes, for a login that does not
//! name one). Deleting a mailbox removes its entries (see the committer's expansion).
//!
//! Whether a card may log in at all (CA, validity, revocation) is [`crate::cns`]'s part.

use super::kv::TxTree;

use super::batch::{Batch, Op};
use super::mailbox::mailbox_key;
use super::tx::{CARDS, MAILBOXES, Tx, TxResult, abort, put_json};
use super::{Store, StoreError};
use crate::cns::CardCert;
use crate::pec::address::PecAddress;
use crate::trace::{EventKind, TraceEvent};

/// Cards one mailbox may have.
pub const MAX_CARDS_PER_MAILBOX: usize = 16;

pub(crate) fn by_mailbox_prefix(mbkey: &str) -> Vec<u8> {
    [b"m\0", mbkey.as_bytes(), b"\0"].concat()
}

fn by_mailbox(mbkey: &str, sha256: &str) -> Vec<u8> {
    [by_mailbox_prefix(mbkey).as_slice(), sha256.as_bytes()].concat()
}

/// The index entry paired with a `m \0 …` key.
pub(crate) fn by_card(sha256: &str, mbkey: &str) -> Vec<u8> {
    [b"c\0", sha256.as_bytes(), b"\0", mbkey.as_bytes()].concat()
}

pub(crate) fn apply_add(tx: &Tx, mailbox: &PecAddress, card: &CardCert) -> TxResult<()> {
    let k = mailbox_key(mailbox);
    if tx.t[MAILBOXES].get(k.as_bytes())?.is_none() {
        return abort(StoreError::NoSuchMailbox(mailbox.to_string()));
    }
    let t: &TxTree<'_> = &tx.t[CARDS];
    let key = by_mailbox(&k, &card.sha256);
    if t.get(&key)?.is_some() {
        return abort(StoreError::CardAssociated {
            mailbox: mailbox.to_string(),
            sha256: card.sha256.clone(),
        });
    }
    put_json(t, &key, card)?;
    t.insert(by_card(&card.sha256, &k), &[] as &[u8])?;
    Ok(())
}

pub(crate) fn apply_remove(tx: &Tx, mailbox: &PecAddress, sha256: &str) -> TxResult<()> {
    let k = mailbox_key(mailbox);
    let t = &tx.t[CARDS];
    let key = by_mailbox(&k, sha256);
    if t.get(&key)?.is_none() {
        return abort(StoreError::CardNotAssociated {
            mailbox: mailbox.to_string(),
            sha256: sha256.to_string(),
        });
    }
    t.remove(&key)?;
    t.remove(by_card(sha256, &k))?;
    Ok(())
}

impl Store {
    /// Associates a card certificate with a mailbox (at most
    /// [`MAX_CARDS_PER_MAILBOX`]); traced.
    /// The limit is checked by the committer, the only writer (see `Committer::expand`),
    /// so two additions at once cannot both pass it.
    pub fn add_card(&self, mailbox: &PecAddress, card: &CardCert) -> Result<(), StoreError> {
        let ev = TraceEvent::new(EventKind::MailboxAdmin, self.options().clock.now())
            .recipient(mailbox.to_string())
            .detail(format!(
                "smart card associated: codice fiscale {}, certificate SHA-256 {}, serial {} of {}",
                card.codice_fiscale, card.sha256, card.serial, card.issuer
            ));
        let op = Op::CardAdd {
            mailbox: mailbox.clone(),
            card: Box::new(card.clone()),
        };
        self.commit(Batch::new().push(op).trace(ev)).map(|_| ())
    }

    /// Ends a card's association with a mailbox; traced.
    pub fn remove_card(&self, mailbox: &PecAddress, sha256: &str) -> Result<(), StoreError> {
        let sha256 = sha256.to_ascii_lowercase();
        let ev = TraceEvent::new(EventKind::MailboxAdmin, self.options().clock.now())
            .recipient(mailbox.to_string())
            .detail(format!("smart card removed: certificate SHA-256 {sha256}"));
        let op = Op::CardRemove {
            mailbox: mailbox.clone(),
            sha256,
        };
        self.commit(Batch::new().push(op).trace(ev)).map(|_| ())
    }

    /// The cards associated with a mailbox.
    pub fn cards(&self, mailbox: &PecAddress) -> Result<Vec<CardCert>, StoreError> {
        let mut out = Vec::new();
        for kv in self
            .trees()
            .cards
            .scan_prefix(by_mailbox_prefix(&mailbox_key(mailbox)))
        {
            let (_, v) = kv?;
            out.push(serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
                what: format!("smart card of {mailbox}"),
                detail: e.to_string(),
            })?);
        }
        Ok(out)
    }

    /// The mailboxes (their keys: canonical addresses) a card may open.
    pub fn card_mailboxes(&self, sha256: &str) -> Result<Vec<String>, StoreError> {
        let prefix = [b"c\0", sha256.as_bytes(), b"\0"].concat();
        let mut out = Vec::new();
        for kv in self.trees().cards.scan_prefix(&prefix) {
            let (k, _) = kv?;
            out.push(String::from_utf8_lossy(&k[prefix.len()..]).into_owned());
        }
        Ok(out)
    }
}
