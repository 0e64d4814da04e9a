//! The sender-side timers (digest §6.4, RFC 6109 §3.1.6): for every certified recipient of
//! an accepted message, if neither the take-charge nor the delivery receipt has arrived
//! within 12 hours the sender gets the *preavviso* notice; if no delivery receipt has
//! arrived within 24 hours, the final timeout notice, and tracking stops.
//!
//! The deadlines live in the store's pending table (armed by the access point in the
//! acceptance commit), so they survive restarts. Time comes from the gateway's clock:
//! [`tick`] does one pass at the clock's "now", which is how tests run 24 hours in
//! milliseconds; [`run`] calls it periodically. A pass takes the due entries in batches
//! until none is left, and when the clock has jumped past 24 h (a long stop, a suspended
//! host) an entry that still owes the 12 h notice gets it before the 24 h one (§6.4: no
//! receipt at all ⇒ both notices). Every notice is committed with an idempotency key, so a
//! crash never issues one twice.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::gateway::Gateway;
use crate::pec::address::PecAddress;
use crate::pec::compose::Certification;
use crate::pec::daticert::{Destinatario, TipoDestinatario, TipoRicevuta};
use crate::pec::receipt::{self, Notice};
use crate::pec::time::PecTime;
use crate::store::pending::{Awaiting, PendingMessage};
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

/// Pending entries read per batch of a pass.
pub const BATCH: usize = 256;

/// One pass: issues every notice due at the clock's current time. Returns how many.
pub async fn tick(gw: &Arc<Gateway>) -> Result<usize, StoreError> {
    let now = gw.clock.now();
    let mut issued = 0;
    loop {
        let due = gw.store.pending_due(now, BATCH)?;
        let full = due.len() == BATCH;
        let mut moved = false;
        for p in due {
            let span = super::message_span(Some(&p.ident));
            let (n, m) = tracing::Instrument::instrument(handle(gw, p, now), span).await?;
            issued += n;
            moved |= m;
        }
        // An entry that cannot move (its notice cannot be signed now) stays due: stop
        // rather than read the same batch again; the next pass retries it.
        if !full || !moved {
            return Ok(issued);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Preavviso12h,
    Final24h,
}
/// The certification data of a notice: as the acceptance certified them (every recipient,
/// the original's Reply-To: `shared`), or, for a message accepted before that record
/// existed, the one recipient and the sender.
fn certification(p: &PendingEntry, shared: Option<PendingMessage>) -> Certification {
    let (destinatari, risposte) = match shared {
        Some(m) if !m.destinatari.is_empty() => (m.destinatari, m.risposte),
        _ => (
            vec![Destinatario {
                address: p.recipient.clone(),
                tipo: TipoDestinatario::Certificato,
            }],
            p.sender.clone(),
        ),
    };
    Certification {
        mittente: p.sender.clone(),
        destinatari,
        risposte,
        oggetto: p.subject.clone().unwrap_or_default(),
        identificativo: p.ident.clone(),
        msgid: p.msgid.as_deref().map(crate::pec::ids::bracketed),
        ricevuta: TipoRicevuta::Completa,
    }
}

/// Handles one due entry; returns (notices issued, whether the entry moved on).
async fn handle(
    gw: &Arc<Gateway>,
    p: PendingEntry,
    now: jiff::Timestamp,
) -> Result<(usize, bool), StoreError> {
    let final_due = now >= p.deadline_24h;
    let twelve_due = !p.notice_12h_sent && now >= p.deadline_12h;
    if !final_due && !twelve_due {
        return Ok((0, false));
    }
    // At 12 h the notice is due only when not even the take-charge receipt arrived; with
    // it, the 12 h stage passes silently and only the 24 h deadline remains.
    let owes_12h = twelve_due && p.awaiting == Awaiting::TakeCharge;
    if twelve_due && !owes_12h && !final_due {
        gw.store
            .commit_async(Batch::new().pending_notice_12h(p.ident.clone(), p.recipient.clone()))
            .await?;
        return Ok((0, true));
    }
    let Ok(sender) = PecAddress::parse(&p.sender) else {
        gw.store
            .commit_async(Batch::new().pending_resolve(p.ident.clone(), p.recipient.clone()))
            .await?;
        return Ok((0, true));
    };
    let mut issued = 0;
    if owes_12h {
        // Also when the 24 h deadline has passed too: the sender is owed both (§6.4).
        match issue(gw, &p, &sender, now, Stage::Preavviso12h).await? {
            Some(n) => issued += n,
            None => return Ok((issued, false)),
        }
    }
    if final_due {
        match issue(gw, &p, &sender, now, Stage::Final24h).await? {
            Some(n) => issued += n,
            None => return Ok((issued, issued > 0)),
        }
    }
    Ok((issued, true))
}

/// Signs and commits one notice and moves the entry on. None: the notice could not be
/// signed (the entry stays due).
async fn issue(
    gw: &Arc<Gateway>,
    p: &PendingEntry,
    sender: &PecAddress,
    now: jiff::Timestamp,
    stage: Stage,
) -> Result<Option<usize>, StoreError> {
    let final_notice = stage == Stage::Final24h;
    let cert = certification(p, gw.store.pending_message(&p.ident)?);
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
            return Ok(None);
        }
    };
    let bytes = Arc::new(notice.bytes);
    let blob = gw.put_blob(bytes.clone()).await?;
    let notice_sha256 = blob.id.as_str().to_string();
    let mut d = Delivery::inbox(sender.clone(), blob, now).filtered(&bytes);
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
    ev.sha256 = Some(notice_sha256);
    let advance = |b: Batch| {
        if final_notice {
            b.pending_resolve(p.ident.clone(), p.recipient.clone())
        } else {
            b.pending_notice_12h(p.ident.clone(), p.recipient.clone())
        }
    };
    let batch = advance(Batch::new().claim(key).deliver(d).trace(ev));
    match gw.store.commit_async(batch).await {
        Ok(_) => Ok(Some(1)),
        Err(StoreError::AlreadyClaimed(_)) => {
            // Issued before a crash: only the pending entry needs to move on.
            gw.store.commit_async(advance(Batch::new())).await?;
            Ok(Some(0))
        }
        Err(e) => Err(e),
    }
}
