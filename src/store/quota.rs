//! Quota notice levels: which notice (80 %, 95 % of the mailbox) the owner was last sent,
//! kept on the mailbox record so that a notice goes out once per crossing, in the same
//! commit as the level that records it ([`Batch::quota_notice`]). Sending the notices is
//! [`crate::pipeline::quota`]'s.

use super::batch::{Batch, Op};
use super::mailbox::{MailboxRecord, mailbox_key};
use super::tx::{MAILBOXES, Tx, TxResult, abort, get_json, put_json};
use super::{Store, StoreError};
use crate::pec::address::PecAddress;

/// The notice levels, percent of the quota, highest last.
pub const LEVELS: [u8; 2] = [80, 95];

/// The highest level of [`LEVELS`] that `usage` reaches in `quota` (0: none).
pub fn level(usage: u64, quota: u64) -> u8 {
    let (u, q) = (u128::from(usage) * 100, u128::from(quota));
    LEVELS
        .iter()
        .rev()
        .copied()
        .find(|&l| quota > 0 && u >= q * u128::from(l))
        .unwrap_or(0)
}

/// A mailbox's usage, quota and the level last notified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaState {
    pub usage_bytes: u64,
    pub quota_bytes: u64,
    pub notified: u8,
}

impl Batch {
    /// Moves the mailbox's notified level from `from` to `to`; the whole batch fails with
    /// [`StoreError::QuotaNoticeMoved`] when it is no longer `from` (another writer
    /// moved it first), so a notice in the same batch is not sent twice.
    pub fn quota_notice(self, mailbox: PecAddress, from: u8, to: u8) -> Self {
        self.push(Op::QuotaNotice { mailbox, from, to })
    }
}

pub(crate) fn apply_quota_notice(tx: &Tx, mailbox: &PecAddress, from: u8, to: u8) -> TxResult<()> {
    apply_notice_level(tx, mailbox, from, to, |r| &mut r.quota_notice)
}

/// Moves a notice level of the mailbox (`level` picks which: the mailbox's own, the
/// archive's) from `from` to `to`; aborts when it is no longer at `from` (another notice
/// came first).
pub(crate) fn apply_notice_level(
    tx: &Tx,
    mailbox: &PecAddress,
    from: u8,
    to: u8,
    level: fn(&mut MailboxRecord) -> &mut u8,
) -> TxResult<()> {
    let k = mailbox_key(mailbox);
    let Some(mut rec) = get_json::<MailboxRecord>(&tx.t[MAILBOXES], k.as_bytes())? else {
        return abort(StoreError::NoSuchMailbox(mailbox.to_string()));
    };
    if *level(&mut rec) != from {
        return abort(StoreError::QuotaNoticeMoved(mailbox.to_string()));
    }
    *level(&mut rec) = to;
    put_json(&tx.t[MAILBOXES], k.as_bytes(), &rec)
}

impl Store {
    /// The mailbox's quota state; `None` when there is no such mailbox.
    pub fn quota_state(&self, address: &PecAddress) -> Result<Option<QuotaState>, StoreError> {
        Ok(self.mailbox_record(address)?.map(|r| QuotaState {
            usage_bytes: r.usage_bytes,
            quota_bytes: r.quota_bytes,
            notified: r.quota_notice,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_crossed_at_80_and_95_percent() {
        assert_eq!(level(0, 100), 0);
        assert_eq!(level(79, 100), 0);
        assert_eq!(level(80, 100), 80);
        assert_eq!(level(94, 100), 80);
        assert_eq!(level(95, 100), 95);
        assert_eq!(level(150, 100), 95);
        assert_eq!(level(u64::MAX, u64::MAX), 95);
        assert_eq!(level(5, 0), 0, "no quota, no percentage");
    }

    #[test]
    fn a_level_moves_only_from_what_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), crate::store::StoreOptions::default()).unwrap();
        let a = PecAddress::parse("a@pec.test").unwrap();
        s.add_mailbox(crate::store::NewMailbox {
            address: a.clone(),
            password: crate::store::mailbox::Password::new("pw"),
            quota_bytes: Some(100),
            options: Default::default(),
            provisional: false,
        })
        .unwrap();
        s.commit(Batch::new().quota_notice(a.clone(), 0, 80))
            .unwrap();
        assert_eq!(s.quota_state(&a).unwrap().unwrap().notified, 80);
        let stale = s.commit(Batch::new().quota_notice(a.clone(), 0, 80));
        assert!(
            matches!(stale, Err(StoreError::QuotaNoticeMoved(_))),
            "{stale:?}"
        );
        s.commit(Batch::new().quota_notice(a.clone(), 80, 0))
            .unwrap();
        assert_eq!(s.quota_state(&a).unwrap().unwrap().notified, 0);
    }
}
