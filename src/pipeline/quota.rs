//! Quota notices (*avviso di casella quasi piena*, issue #10): when a mailbox's usage
//! reaches 80 % and again 95 % of its quota, or its security archive 90 % of its own
//! ([`crate::store::archive`]), its owner gets one plain notice in the INBOX,
//! from the provider's service address, saying how full the mailbox is and what happens
//! when it is full (incoming certified mail is then not delivered and its sender gets a
//! non-delivery notice). Usage falling below 80 % (deletions, a larger plan) re-arms them.
//!
//! [`run`] follows the store's change feed (every delivery, expunge and quota change of a
//! mailbox) and checks that mailbox; it checks all of them at start-up and after a lag.
//! The notice and the level it records are one commit guarded by the level read before
//! ([`crate::store::Batch::quota_notice`]): a crash or a concurrent check never sends
//! one twice. The notice skips the quota (it must reach a full mailbox) and the owner's
//! rules. Input it distrusts: none beyond the store's own records.

use std::sync::Arc;

use tokio::sync::watch;

use crate::gateway::Gateway;
use crate::pec::address::PecAddress;
use crate::pec::compose::Headers;
use crate::pec::ids;
use crate::pec::time::PecTime;
use crate::store::archive::NOTICE_LEVEL;
use crate::store::quota::{QuotaState, level};
use crate::store::{Batch, Delivery, StoreError};
use crate::trace::{EventKind, TraceEvent};

/// Follows the store's changes until `stop`.
pub async fn run(gw: Arc<Gateway>, mut stop: watch::Receiver<bool>) {
    let mut rx = gw.store.subscribe_changes();
    check_all(&gw).await;
    loop {
        let change = tokio::select! {
            c = rx.recv() => c,
            _ = stop.changed() => return,
        };
        match change {
            Ok(c) => {
                if let Ok(addr) = PecAddress::parse(&c.mailbox) {
                    report(&addr, check(&gw, &addr).await);
                    report(&addr, check_archive(&gw, &addr).await);
                }
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => check_all(&gw).await,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

fn report(addr: &PecAddress, r: Result<(), StoreError>) {
    match r {
        // Another check moved the level first: it did the work.
        Ok(()) | Err(StoreError::QuotaNoticeMoved(_) | StoreError::NoSuchMailbox(_)) => {}
        Err(e) => tracing::error!(mailbox = %addr, error = %e, "quota notice not sent"),
    }
}

async fn check_all(gw: &Arc<Gateway>) {
    let list = match gw.store.list_mailboxes() {
        Ok(l) => l,
        Err(e) => return tracing::error!(error = %e, "listing mailboxes for quota notices"),
    };
    for m in list {
        report(&m.address, check(gw, &m.address).await);
        report(&m.address, check_archive(gw, &m.address).await);
    }
}

/// Sends the notice the mailbox's usage calls for, if any, or re-arms the levels.
pub async fn check(gw: &Arc<Gateway>, addr: &PecAddress) -> Result<(), StoreError> {
    let Some(state) = gw.store.quota_state(addr)? else {
        return Ok(());
    };
    let reached = level(state.usage_bytes, state.quota_bytes);
    // Up: a notice for the new level. Down below 80 %: re-armed. Between 80 % and 95 %
    // after a 95 % notice: nothing (no second 80 % notice on the way down).
    if reached == state.notified || (reached > 0 && reached < state.notified) {
        return Ok(());
    }
    let mut batch = Batch::new().quota_notice(addr.clone(), state.notified, reached);
    if reached > state.notified {
        let now = gw.clock.now();
        let bytes = notice(gw, addr, state, reached, PecTime::italian(now));
        let detail = format!(
            "quota notice: {reached} % reached ({} of {} bytes)",
            state.usage_bytes, state.quota_bytes
        );
        batch = deliver_notice(gw, batch, addr, bytes, detail).await?;
        tracing::info!(mailbox = %addr, level = reached, "quota notice sent");
    }
    gw.store.commit_async(batch).await.map(|_| ())
}

/// Sends the archive's 90 % notice when its usage calls for it, or re-arms it.
pub async fn check_archive(gw: &Arc<Gateway>, addr: &PecAddress) -> Result<(), StoreError> {
    let Some(a) = gw.store.archive_state(addr)? else {
        return Ok(());
    };
    let full = a.quota_bytes > 0
        && u128::from(a.usage_bytes) * 100 >= u128::from(a.quota_bytes) * u128::from(NOTICE_LEVEL);
    let reached = if full { NOTICE_LEVEL } else { 0 };
    if reached == a.notified {
        return Ok(());
    }
    let mut batch = Batch::new().archive_notice(addr.clone(), a.notified, reached);
    if reached > a.notified {
        let now = gw.clock.now();
        let months = gw.config.archive.retention_months;
        let percent = u128::from(a.usage_bytes) * 100 / u128::from(a.quota_bytes.max(1));
        let (used, quota) = (size_it(a.usage_bytes), size_it(a.quota_bytes));
        let body = format!(
            "L'archivio di sicurezza della casella {addr} occupa {used} dei {quota} \
             disponibili ({percent}%).\r\n\r\n\
             Quando l'archivio è pieno, per fare spazio vengono eliminate dall'archivio le\r\n\
             copie più vecchie di {months} mesi; se non ce ne sono, i nuovi messaggi non\r\n\
             vengono archiviati (restano comunque consegnati nella casella). Per un archivio\r\n\
             più ampio rivolgersi al gestore.\r\n\r\n\
             --\r\n\
             The security archive of {addr} uses {used} of its {quota} ({percent}%). When it\r\n\
             is full, copies older than {months} months make room; if there are none, new\r\n\
             messages are not archived (they are still delivered to the mailbox).\r\n"
        );
        let subject =
            format!("Avviso: l'archivio di sicurezza di {addr} ha raggiunto il {NOTICE_LEVEL}%");
        let bytes = compose(
            gw,
            addr,
            &subject,
            "archive-90",
            &body,
            PecTime::italian(now),
        );
        let detail = format!(
            "archive notice: {NOTICE_LEVEL} % reached ({} of {} bytes)",
            a.usage_bytes, a.quota_bytes
        );
        batch = deliver_notice(gw, batch, addr, bytes, detail).await?;
        tracing::info!(mailbox = %addr, "security archive notice sent");
    }
    gw.store.commit_async(batch).await.map(|_| ())
}

/// Adds to `batch` the delivery of notice `bytes` to `addr` (past the quota: it must
/// reach a full mailbox) and its trace record.
async fn deliver_notice(
    gw: &Arc<Gateway>,
    batch: Batch,
    addr: &PecAddress,
    bytes: Vec<u8>,
    detail: String,
) -> Result<Batch, StoreError> {
    let now = gw.clock.now();
    let blob = gw.put_blob(Arc::new(bytes)).await?;
    let mut d = Delivery::inbox(addr.clone(), blob, now);
    d.enforce_quota = false;
    Ok(batch.deliver(d).trace(
        TraceEvent::new(EventKind::MailboxAdmin, now)
            .recipient(addr.to_string())
            .detail(detail),
    ))
}

/// `n` bytes as Italian readers write sizes: `1,5 GB`, `730,2 MB`, `12,0 kB`.
fn size_it(n: u64) -> String {
    let n = n as f64;
    let (v, unit) = if n >= 1e9 {
        (n / 1e9, "GB")
    } else if n >= 1e6 {
        (n / 1e6, "MB")
    } else {
        (n / 1e3, "kB")
    };
    format!("{v:.1} {unit}").replace('.', ",")
}

/// A plain text notice from the service address to the mailbox.
fn compose(
    gw: &Gateway,
    to: &PecAddress,
    subject: &str,
    kind: &str,
    body: &str,
    at: PecTime,
) -> Vec<u8> {
    let mut h = Headers::default();
    h.raw("Date", &at.rfc5322());
    h.address(
        "From",
        Some(&gw.identity.name),
        &gw.identity.service_address.to_string(),
    );
    h.address("To", None, &to.to_string());
    h.text("Subject", subject);
    h.raw(
        "Message-ID",
        &ids::bracketed(&ids::new_message_id(&at, &gw.identity.host)),
    );
    h.raw("Auto-Submitted", "auto-generated");
    h.raw("X-Pecd-Avviso", kind);
    h.raw("MIME-Version", "1.0");
    h.raw("Content-Type", "text/plain; charset=utf-8");
    h.raw("Content-Transfer-Encoding", "8bit");
    let mut out = h.0;
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
    out
}

/// The mailbox notice: how full the mailbox is and what happens when it is full.
fn notice(gw: &Gateway, to: &PecAddress, s: QuotaState, reached: u8, at: PecTime) -> Vec<u8> {
    let percent = (u128::from(s.usage_bytes) * 100 / u128::from(s.quota_bytes.max(1))) as u64;
    let manage = gw
        .webmail_url()
        .map(|u| format!("\r\nLa casella si gestisce dalla webmail: {u}\r\n"))
        .unwrap_or_default();
    let body = format!(
        "La casella di posta certificata {to} occupa {used} dei {quota} disponibili \
         ({percent}%).\r\n\r\n\
         Quando lo spazio è esaurito i messaggi in arrivo non possono essere consegnati\r\n\
         e i loro mittenti ricevono un avviso di mancata consegna. Si consiglia di\r\n\
         liberare spazio eliminando o salvando altrove i messaggi non più necessari.\r\n\
         {manage}\r\n\
         --\r\n\
         The certified mailbox {to} uses {used} of its {quota} ({percent}%). When it is\r\n\
         full, arriving messages cannot be delivered and their senders get a\r\n\
         non-delivery notice.\r\n",
        used = size_it(s.usage_bytes),
        quota = size_it(s.quota_bytes),
    );
    let subject = format!("Avviso: la casella {to} ha raggiunto il {reached}% dello spazio");
    compose(gw, to, &subject, &format!("quota-{reached}"), &body, at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_in_italian() {
        assert_eq!(size_it(1_500_000_000), "1,5 GB");
        assert_eq!(size_it(31_457_280), "31,5 MB");
        assert_eq!(size_it(12_000), "12,0 kB");
    }
}
