//! Sending the notifications of [`crate::notify`]: the confirmation code when the owner adds
//! an ordinary address, and the coalesced notices of arrivals — each through the relay as
//! ordinary mail (null reverse-path, RFC 3834 `Auto-Submitted`), so that a slow or absent
//! receiving server delays nothing here and is retried like any ordinary mail.
//!
//! [`run`] watches the mailboxes the change feed names (all of them at start-up and after a
//! lag) and sends a mailbox's pending arrivals once [`crate::notify::COALESCE`] has passed
//! since its last notice. The notice's queue items and the removal of the arrivals it lists
//! are one commit: a crash repeats nothing and loses nothing.
//!
//! Input it distrusts: the owner's address and code (checked in [`crate::notify`]).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::gateway::Gateway;
use crate::notify::{self, CODE_TTL, MAX_CODE_ATTEMPTS, Notify, NotifyError, Sender, Target};
use crate::pec::address::{Domain, PecAddress};
use crate::pec::time::PecTime;
use crate::store::notify::NotifyChange;
use crate::store::{Batch, NewQueueItem, StoreError};
use crate::trace::{EventKind, TraceEvent, sha256_hex};

/// How often mailboxes with arrivals waiting for their minute are looked at again.
const TICK: Duration = Duration::from_secs(5);

fn sender(gw: &Gateway) -> (String, String, String) {
    (
        gw.identity.name.clone(),
        gw.identity.service_address.to_string(),
        gw.identity.host.clone(),
    )
}

/// One ordinary message into the relay queue, to `to`.
async fn queue_item(gw: &Gateway, to: &str, bytes: Vec<u8>) -> Result<NewQueueItem, StoreError> {
    let domain = to
        .rsplit_once('@')
        .and_then(|(_, d)| Domain::parse(d).ok())
        .ok_or_else(|| StoreError::Notify(NotifyError::BadAddress(to.to_string())))?;
    let blob = gw.put_blob(Arc::new(bytes)).await?;
    Ok(NewQueueItem {
        domain,
        // The null reverse-path: nothing bounces back into a PEC mailbox.
        mail_from: String::new(),
        rcpt_to: vec![to.to_string()],
        blob,
        ident: None,
        next_attempt: gw.clock.now(),
    })
}

/// A fresh confirmation code: 8 decimal digits from the system's random generator.
fn new_code() -> Result<String, StoreError> {
    let mut b = [0u8; 8];
    openssl::rand::rand_bytes(&mut b).map_err(|e| StoreError::Password(e.to_string()))?;
    Ok(format!("{:08}", u64::from_le_bytes(b) % 100_000_000))
}

/// The owner adds an ordinary address (or asks for a new code for one not yet confirmed):
/// the code goes to it by mail, in the same commit as the address.
pub async fn add_target(
    gw: &Arc<Gateway>,
    mailbox: &PecAddress,
    raw: &str,
) -> Result<Notify, StoreError> {
    let own: Vec<String> = gw
        .config
        .provider
        .domains
        .iter()
        .map(ToString::to_string)
        .collect();
    let address = notify::check_address(raw, &own)?;
    let now = gw.clock.now();
    let current = gw.store.notify_settings(mailbox)?;
    if let Some(t) = current.targets.iter().find(|t| t.address == address)
        && !t.confirmed
        && t.added
            .checked_add(notify::COALESCE)
            .is_ok_and(|next| now < next)
    {
        return Err(NotifyError::TooSoon(address).into());
    }
    let code = new_code()?;
    let target = Target {
        address: address.clone(),
        confirmed: false,
        code_sha256: Some(sha256_hex(code.as_bytes())),
        code_expires: now.checked_add(CODE_TTL).ok(),
        attempts: 0,
        added: now,
    };
    let (name, service, host) = sender(gw);
    let from = Sender {
        provider_name: &name,
        service_address: &service,
        host: &host,
    };
    let msg = notify::confirmation(
        &from,
        &address,
        &mailbox.to_string(),
        &code,
        PecTime::italian(now),
    );
    let item = queue_item(gw, &address, msg).await?;
    let ev = TraceEvent::new(EventKind::MailboxAdmin, now)
        .recipient(mailbox.to_string())
        .detail(format!(
            "notification address {address} added: confirmation code sent"
        ));
    gw.store
        .commit_async(
            Batch::new()
                .notify(mailbox.clone(), NotifyChange::Add(target))
                .enqueue(item)
                .trace(ev),
        )
        .await?;
    gw.work.notify_waiters();
    gw.store.notify_settings(mailbox)
}

/// The owner types back the code sent to `address`.
pub async fn confirm(
    gw: &Arc<Gateway>,
    mailbox: &PecAddress,
    address: &str,
    code: &str,
) -> Result<Notify, StoreError> {
    let address = address.trim().to_ascii_lowercase();
    let now = gw.clock.now();
    let current = gw.store.notify_settings(mailbox)?;
    let t = current
        .targets
        .iter()
        .find(|t| t.address == address)
        .ok_or_else(|| NotifyError::Unknown(address.clone()))?;
    if t.confirmed {
        return Err(NotifyError::AlreadyConfirmed(address).into());
    }
    let live = t
        .code_sha256
        .as_deref()
        .filter(|_| t.attempts < MAX_CODE_ATTEMPTS && t.code_expires.is_some_and(|e| now < e));
    let Some(expected) = live else {
        return Err(NotifyError::CodeVoid.into());
    };
    let typed = sha256_hex(code.trim().as_bytes());
    if !openssl::memcmp::eq(typed.as_bytes(), expected.as_bytes()) {
        gw.store
            .commit_async(Batch::new().notify(
                mailbox.clone(),
                NotifyChange::WrongCode {
                    address: address.clone(),
                },
            ))
            .await?;
        return Err(NotifyError::WrongCode.into());
    }
    let ev = TraceEvent::new(EventKind::MailboxAdmin, now)
        .recipient(mailbox.to_string())
        .detail(format!("notification address {address} confirmed"));
    gw.store
        .commit_async(
            Batch::new()
                .notify(
                    mailbox.clone(),
                    NotifyChange::Confirm {
                        address,
                        code_sha256: typed,
                    },
                )
                .trace(ev),
        )
        .await?;
    gw.store.notify_settings(mailbox)
}

/// Removes an address, or sets which arrivals are notified; traced.
pub async fn change(
    gw: &Arc<Gateway>,
    mailbox: &PecAddress,
    change: NotifyChange,
) -> Result<Notify, StoreError> {
    let detail = match &change {
        NotifyChange::Remove { address } => format!("notification address {address} removed"),
        NotifyChange::Options {
            receipts,
            anomalies,
        } => format!("notifications: receipts {receipts}, anomalies {anomalies}"),
        _ => "notifications changed".into(),
    };
    let ev = TraceEvent::new(EventKind::MailboxAdmin, gw.clock.now())
        .recipient(mailbox.to_string())
        .detail(detail);
    gw.store
        .commit_async(Batch::new().notify(mailbox.clone(), change).trace(ev))
        .await?;
    gw.store.notify_settings(mailbox)
}

/// Watches the mailboxes the change feed names until `stop`.
pub async fn run(gw: Arc<Gateway>, mut stop: watch::Receiver<bool>) {
    let mut rx = gw.store.subscribe_changes();
    let mut watch: HashSet<String> = HashSet::new();
    let mut all = true;
    let mut tick = tokio::time::interval(TICK);
    loop {
        if all {
            all = false;
            match gw.store.list_mailboxes() {
                Ok(l) => watch.extend(l.into_iter().map(|m| m.address.to_string())),
                Err(e) => tracing::error!(error = %e, "listing mailboxes for notifications"),
            }
        }
        tokio::select! {
            c = rx.recv() => match c {
                Ok(c) => { watch.insert(c.mailbox); }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => all = true,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
            _ = tick.tick() => {
                let now = gw.clock.now();
                let mut done = Vec::new();
                for m in &watch {
                    let Ok(addr) = PecAddress::parse(m) else {
                        done.push(m.clone());
                        continue;
                    };
                    match send_due(&gw, &addr, now).await {
                        Ok(true) => {}
                        Ok(false) => done.push(m.clone()),
                        Err(StoreError::NoSuchMailbox(_)) => done.push(m.clone()),
                        Err(e) => tracing::error!(mailbox = %addr, error = %e, "notification not sent"),
                    }
                }
                for m in done {
                    watch.remove(&m);
                }
            }
            _ = stop.changed() => return,
        }
    }
}

/// Sends the mailbox's notice if one is due; `Ok(true)` while arrivals still wait for
/// their minute.
async fn send_due(
    gw: &Arc<Gateway>,
    mailbox: &PecAddress,
    now: jiff::Timestamp,
) -> Result<bool, StoreError> {
    let n = gw.store.notify_settings(mailbox)?;
    let Some(due) = n.due() else {
        return Ok(false);
    };
    if now < due {
        return Ok(true);
    }
    let (name, service, host) = sender(gw);
    let from = Sender {
        provider_name: &name,
        service_address: &service,
        host: &host,
    };
    let webmail = gw.webmail_url();
    let mut batch = Batch::new();
    let mut to = Vec::new();
    for target in n.confirmed() {
        let msg = notify::digest(
            &from,
            target,
            &mailbox.to_string(),
            &n.pending,
            n.more,
            webmail.as_deref(),
            PecTime::italian(now),
        );
        batch = batch.enqueue(queue_item(gw, target, msg).await?);
        to.push(target.to_string());
    }
    let total = n.pending.len() + n.more as usize;
    let ev = TraceEvent::new(EventKind::MailboxAdmin, now)
        .recipient(mailbox.to_string())
        .detail(format!(
            "notice of {total} arrival(s) sent to {}",
            to.join(", ")
        ));
    batch = batch
        .notify(
            mailbox.clone(),
            NotifyChange::Sent {
                listed: n.pending.len(),
                more: n.more,
                at: now,
            },
        )
        .trace(ev);
    gw.store.commit_async(batch).await?;
    gw.work.notify_waiters();
    Ok(false)
}
