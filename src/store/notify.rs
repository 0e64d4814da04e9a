//! The notification settings and queue kept on a mailbox record ([`crate::notify::Notify`]):
//! the changes the owner and the notifier make, each applied inside one commit with its
//! checks (at most [`crate::notify::MAX_TARGETS`] addresses, a confirmation only with the
//! code sent, a notice taking exactly the arrivals it listed). Arrivals are noted by the
//! delivery itself ([`super::messages::apply_deliver`]).

use jiff::Timestamp;

use super::batch::{Batch, Op};
use super::mailbox::{MailboxRecord, mailbox_key};
use super::tx::{MAILBOXES, Tx, TxResult, abort, get_json, put_json};
use super::{Store, StoreError};
use crate::notify::{MAX_CODE_ATTEMPTS, MAX_TARGETS, Notify, NotifyError, Target};
use crate::pec::address::PecAddress;

/// One change to a mailbox's notifications.
#[derive(Debug, Clone)]
pub enum NotifyChange {
    /// A new address, or a new code for one not yet confirmed.
    Add(Target),
    /// Confirms `address` if its pending code is still `code_sha256`.
    Confirm {
        address: String,
        code_sha256: String,
    },
    /// Records a wrong code; the code is void after [`MAX_CODE_ATTEMPTS`].
    WrongCode {
        address: String,
    },
    Remove {
        address: String,
    },
    Options {
        receipts: bool,
        anomalies: bool,
    },
    /// A notice went out listing the first `listed` pending arrivals and `more` counted.
    Sent {
        listed: usize,
        more: u32,
        at: Timestamp,
    },
}

impl Batch {
    /// Applies `change` to the notifications of `mailbox` (refused with
    /// [`StoreError::Notify`] when it breaks a rule).
    pub fn notify(self, mailbox: PecAddress, change: NotifyChange) -> Self {
        self.push(Op::Notify { mailbox, change })
    }
}

fn refuse<T>(e: NotifyError) -> TxResult<T> {
    abort(StoreError::Notify(e))
}

pub(crate) fn apply(tx: &Tx, mailbox: &PecAddress, change: &NotifyChange) -> TxResult<()> {
    let k = mailbox_key(mailbox);
    let Some(mut rec) = get_json::<MailboxRecord>(&tx.t[MAILBOXES], k.as_bytes())? else {
        return abort(StoreError::NoSuchMailbox(mailbox.to_string()));
    };
    let n = &mut rec.notify;
    let find = |n: &mut Notify, a: &str| n.targets.iter().position(|t| t.address == a);
    match change {
        NotifyChange::Add(t) => match find(n, &t.address) {
            Some(i) if n.targets[i].confirmed => {
                return refuse(NotifyError::AlreadyConfirmed(t.address.clone()));
            }
            Some(i) => n.targets[i] = t.clone(),
            None if n.targets.len() >= MAX_TARGETS => return refuse(NotifyError::TooMany),
            None => n.targets.push(t.clone()),
        },
        NotifyChange::Confirm {
            address,
            code_sha256,
        } => {
            let Some(i) = find(n, address) else {
                return refuse(NotifyError::Unknown(address.clone()));
            };
            let t = &mut n.targets[i];
            if t.code_sha256.as_deref() != Some(code_sha256.as_str()) {
                return refuse(NotifyError::CodeVoid);
            }
            t.confirmed = true;
            t.code_sha256 = None;
            t.code_expires = None;
            t.attempts = 0;
        }
        NotifyChange::WrongCode { address } => {
            if let Some(i) = find(n, address) {
                let t = &mut n.targets[i];
                t.attempts = t.attempts.saturating_add(1);
                if t.attempts >= MAX_CODE_ATTEMPTS {
                    t.code_sha256 = None;
                }
            }
        }
        NotifyChange::Remove { address } => {
            let Some(i) = find(n, address) else {
                return refuse(NotifyError::Unknown(address.clone()));
            };
            n.targets.remove(i);
            if n.confirmed().next().is_none() {
                n.pending.clear();
                n.more = 0;
            }
        }
        NotifyChange::Options {
            receipts,
            anomalies,
        } => {
            n.receipts = *receipts;
            n.anomalies = *anomalies;
        }
        NotifyChange::Sent { listed, more, at } => {
            let listed = (*listed).min(n.pending.len());
            n.pending.drain(..listed);
            n.more = n.more.saturating_sub(*more);
            n.last_sent = Some(*at);
        }
    }
    put_json(&tx.t[MAILBOXES], k.as_bytes(), &rec)
}

impl Store {
    /// Removes a notification address (the administrator's `pecd mailbox notify
    /// --remove`); traced.
    pub fn remove_notify_target(
        &self,
        mailbox: &PecAddress,
        target: &str,
    ) -> Result<Notify, StoreError> {
        let address = target.trim().to_ascii_lowercase();
        let ev = crate::trace::TraceEvent::new(
            crate::trace::EventKind::MailboxAdmin,
            self.options().clock.now(),
        )
        .recipient(mailbox.to_string())
        .detail(format!(
            "notification address {address} removed by the administrator"
        ));
        self.commit(
            Batch::new()
                .notify(mailbox.clone(), NotifyChange::Remove { address })
                .trace(ev),
        )?;
        self.notify_settings(mailbox)
    }

    /// The notification settings and queue of a mailbox.
    pub fn notify_settings(&self, address: &PecAddress) -> Result<Notify, StoreError> {
        Ok(self
            .mailbox_record(address)?
            .ok_or_else(|| StoreError::NoSuchMailbox(address.to_string()))?
            .notify)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Delivery, NewMailbox};

    /// Arrivals are noted by the delivery's own commit: certified mail for a mailbox with a
    /// confirmed address, other kinds only when the owner or a rule asks.
    #[test]
    fn deliveries_note_what_the_owner_wants_told() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), crate::store::StoreOptions::default()).unwrap();
        let a = PecAddress::parse("a@pec.test").unwrap();
        s.add_mailbox(NewMailbox {
            address: a.clone(),
            password: crate::store::mailbox::Password::new("pw"),
            quota_bytes: None,
            options: Default::default(),
            provisional: false,
        })
        .unwrap();
        let now = Timestamp::now();
        let deliver = |raw: &[u8]| {
            let blob = s.blobs().put(raw).unwrap();
            s.commit(Batch::new().deliver(Delivery::inbox(a.clone(), blob, now).filtered(raw)))
                .unwrap();
        };
        let certified: &[u8] =
            b"From: \"Per conto di: m@pec.altro.it\" <posta-certificata@pec.altro.it>\r\n\
            X-Trasporto: posta-certificata\r\nSubject: POSTA CERTIFICATA: uno\r\n\r\n";
        deliver(certified);
        assert!(
            s.notify_settings(&a).unwrap().pending.is_empty(),
            "no address yet"
        );
        let target = Target {
            address: "io@example.com".into(),
            confirmed: true,
            code_sha256: None,
            code_expires: None,
            attempts: 0,
            added: now,
        };
        s.commit(Batch::new().notify(a.clone(), NotifyChange::Add(target)))
            .unwrap();
        deliver(certified);
        deliver(b"From: x@y.it\r\nSubject: ordinaria\r\n\r\n");
        let n = s.notify_settings(&a).unwrap();
        assert_eq!(n.pending.len(), 1, "{n:?}");
        assert_eq!(n.pending[0].from, "m@pec.altro.it");
        s.set_filters(
            &a,
            &serde_json::json!([{"name": "urgenti", "subject": "urgente", "notify": true}]),
        )
        .unwrap();
        deliver(b"From: x@y.it\r\nSubject: urgente davvero\r\n\r\n");
        deliver(b"From: x@y.it\r\nSubject: altro\r\n\r\n");
        let n = s.notify_settings(&a).unwrap();
        assert_eq!(
            n.pending.len(),
            2,
            "the rule asked for the urgent one only: {n:?}"
        );
        assert_eq!(n.pending[1].subject, "urgente davvero");
        // A notice takes exactly what it listed.
        s.commit(Batch::new().notify(
            a.clone(),
            NotifyChange::Sent {
                listed: 1,
                more: 0,
                at: now,
            },
        ))
        .unwrap();
        let n = s.notify_settings(&a).unwrap();
        assert_eq!(n.pending.len(), 1);
        assert_eq!(n.due(), now.checked_add(crate::notify::COALESCE).ok());
    }
}
