//! The sender-side timers (digest §6.4, RFC 6109 §3.1.6): for every certified recipient of
//! an accepted message, if neither the take-charge nor the delivery receipt has arrived
//! within 12 hours the sender gets the *preavviso* notice; if no delivery receipt has
//! arrived within 24 hours, the final timeout notice, and tracking stops.
//!
//! The deadlines live in the store's pending table (armed by the access point in the
//! acceptance commit), so they survive restarts. Time comes from the gateway's clock:
//! [`tick`] does one pass at the clock's "now", which is how tests run 24 hours in
//! milliseconds; [`run`] calls it periodically. Every notice is committed with an
//! idempotency key, so a crash never issues one twice.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::gateway::Gateway;
use crate::pec::address::PecAddress;
use crate::pec::compose::Certification;
use crate::pec::daticert::{Destinatario, TipoDestinatario, TipoRicevuta};
use crate::pec::receipt::{self, Notice};
use crate::pec::time::PecTime;
use crate::store::pending::Awaiting;
use crate::store::{Batch, Delivery, PendingEntry, StoreError};
use crate::trace::{EventKind, TraceEvent};

/// How often [`run`] looks for due deadlines.
pub const POLL: Duration = Duration::from_secs(30);

/// Runs the timers until `shutdown`.
pub async fn run(gw: Arc<Gateway>, mut shutdown: watch::Receiver<bool>) {
    loop {
        if let Err(e) = tick(&gw).await {
            tracing::error!(error = %e, "timeout notices");
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// One pass: issues every notice due at the clock's current time. Returns how many.
pub async fn tick(gw: &Arc<Gateway>) -> Result<usize, StoreError> {
    let now = gw.clock.now();
    let due = gw.store.pending_due(now, 256)?;
    let mut issued = 0;
    for p in due {
        issued += handle(gw, p, now).await?;
    }
    Ok(issued)
}

fn certification(p: &PendingEntry) -> Certification {
    Certification {
        mittente: p.sender.clone(),
        destinatari: vec![Destinatario {
            address: p.recipient.clone(),
            tipo: TipoDestinatario::Certificato,
        }],
        risposte: p.sender.clone(),
        oggetto: p.subject.clone().unwrap_or_default(),
        identificativo: p.ident.clone(),
        msgid: p.msgid.as_deref().map(crate::pec::ids::bracketed),
        ricevuta: TipoRicevuta::Completa,
    }
}

async fn handle(
    gw: &Arc<Gateway>,
    p: PendingEntry,
    now: jiff::Timestamp,
) -> Result<usize, StoreError> {
    let final_notice = now >= p.deadline_24h;
    let stage_12h = !p.notice_12h_sent && now >= p.deadline_12h && !final_notice;
    if !final_notice && !stage_12h {
        return Ok(0);
    }
    // At 12 h the notice is due only when not even the take-charge receipt arrived; with
    // it, the 12 h stage passes silently and only the 24 h deadline remains.
    if stage_12h && p.awaiting == Awaiting::DeliveryReceipt {
        gw.store
            .commit_async(Batch::new().pending_notice_12h(p.ident.clone(), p.recipient.clone()))
            .await?;
        return Ok(0);
    }
    let Ok(sender) = PecAddress::parse(&p.sender) else {
        gw.store
            .commit_async(Batch::new().pending_resolve(p.ident.clone(), p.recipient.clone()))
            .await?;
        return Ok(0);
    };
    let cert = certification(&p);
    let at = PecTime::italian(now);
    let (g, c, rcpt) = (gw.clone(), cert.clone(), p.recipient.clone());
    let built = gw
        .blocking(move || {
            let n = if final_notice {
                Notice::Scadenza24h { consegna: &rcpt }
            } else {
                Notice::Preavviso12h { consegna: &rcpt }
            };
            receipt::build(&g.identity, &g.signer, &c, n, at)
        })
        .await;
    let notice = match built {
        Ok(n) => n,
        Err(e) => {
            tracing::error!(error = %e, "signing a timeout notice");
            return Ok(0);
        }
    };
    let blob = gw.put_blob(Arc::new(notice.bytes)).await?;
    let mut d = Delivery::inbox(sender, blob, now);
    d.enforce_quota = false;
    let (kind, key) = if final_notice {
        (
            EventKind::TimeoutNotice24h,
            format!("timeout24:{}:{}", p.ident, p.recipient.to_ascii_lowercase()),
        )
    } else {
        (
            EventKind::TimeoutNotice12h,
            format!("timeout12:{}:{}", p.ident, p.recipient.to_ascii_lowercase()),
        )
    };
    let mut ev = TraceEvent::new(kind, now)
        .ident(p.ident.clone())
        .sender(p.sender.clone())
        .recipient(p.recipient.clone());
    if let Some(s) = &p.subject {
        ev = ev.subject(s.clone());
    }
    if let Some(m) = &p.msgid {
        ev = ev.msgid(m.clone());
    }
    ev.related = vec![notice.message_id];
    let mut batch = Batch::new().claim(key).deliver(d).trace(ev);
    batch = if final_notice {
        batch.pending_resolve(p.ident.clone(), p.recipient.clone())
    } else {
        batch.pending_notice_12h(p.ident.clone(), p.recipient.clone())
    };
    match gw.store.commit_async(batch).await {
        Ok(_) => Ok(1),
        Err(StoreError::AlreadyClaimed(_)) => {
            // Issued before a crash: only the pending entry needs to move on.
            let b = if final_notice {
                Batch::new().pending_resolve(p.ident.clone(), p.recipient.clone())
            } else {
                Batch::new().pending_notice_12h(p.ident.clone(), p.recipient.clone())
            };
            gw.store.commit_async(b).await?;
            Ok(0)
        }
        Err(e) => Err(e),
    }
}
