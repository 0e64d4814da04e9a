//! Anomaly envelopes (*busta di anomalia*, §4.7): wrapping what is not correct PEC for
//! the mailboxes that take it (all of them for a provider's message, only those with
//! `accept_anomalies` otherwise), skipping full mailboxes (traced), and the 550/452/250
//! answers that follow.
//!
//! Ordinary mail ([`Origin::Untrusted`]) is scanned for spam here ([`crate::pipeline::spam`])
//! once some mailbox takes it: the verdict goes into `X-Spam-*` lines of the envelope's
//! unsigned header and spam is filed into each mailbox's Junk folder. What a provider in
//! the index signed is never scanned.
//!
//! Why a message is an anomaly is decided by the caller; this does not verify signatures,
//! take charge of anything nor scan for viruses.

use std::sync::Arc;

use super::rcpts_key;
use crate::gateway::Gateway;
use crate::pec::address::PecAddress;
use crate::pec::envelope;
use crate::pec::time::PecTime;
use crate::pipeline::delivery::{self, DeliveryError};
use crate::pipeline::spam;
use crate::smtp::server::SmtpReply;
use crate::store::{Batch, Delivery, StoreError};
use crate::trace::{EventKind, TraceEvent};

/// Where the message came from, which decides who takes it and whether it is scanned for
/// spam.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Origin {
    /// Signed by a provider in the index but not correct PEC (§4.7 a): every mailbox takes
    /// it, no spam scan.
    Provider,
    /// Anything else (plain Internet mail, unknown or invalid signatures): only the
    /// mailboxes with `accept_anomalies` take it, after the spam scan.
    Untrusted,
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn anomaly(
    gw: &Arc<Gateway>,
    data: &Arc<Vec<u8>>,
    digest: &str,
    sender: &str,
    rcpts: &[String],
    reason: &str,
    origin: Origin,
) -> Result<SmtpReply, DeliveryError> {
    let always = origin == Origin::Provider;
    let mut targets = Vec::new();
    for r in rcpts {
        let Ok(addr) = PecAddress::parse(r) else {
            continue;
        };
        let accepts = match gw.store.mailbox(&addr)? {
            Some(m) => always || m.options.accept_anomalies,
            // Unknown mailbox: nothing to deliver to.
            None => false,
        };
        if accepts {
            targets.push(addr);
        }
    }
    if targets.is_empty() {
        let ev = TraceEvent::new(EventKind::AnomalyWrapped, gw.clock.now())
            .sender(sender.to_string())
            .detail(format!("refused: {reason}"))
            .message_bytes(data);
        let _ = gw.store.commit_async(Batch::new().trace(ev)).await;
        return Ok(SmtpReply::new(
            550,
            "5.7.1",
            "This PEC mailbox does not accept non-certified mail",
        ));
    }
    // Only now that some mailbox takes it: what would be refused is not worth a scan.
    let verdict = match origin {
        Origin::Provider => None,
        Origin::Untrusted => match spam::check(gw, data).await {
            Ok(v) => v,
            Err(reply) => return Ok(reply),
        },
    };
    let now = gw.clock.now();
    let at = PecTime::italian(now);
    let (g, d, s, r, why) = (
        gw.clone(),
        data.clone(),
        sender.to_string(),
        rcpts.to_vec(),
        reason.to_string(),
    );
    let built = gw
        .blocking(move || envelope::anomaly(&g.identity, &g.signer, &d, &s, &r, &why, at))
        .await?;
    let junk = verdict.as_ref().is_some_and(|v| v.spam);
    let bytes = Arc::new(match &verdict {
        // The verdict in the unsigned header, before the envelope's own lines.
        Some(v) => [v.header_lines().as_bytes(), &built.bytes].concat(),
        None => built.bytes,
    });
    let detail = match &verdict {
        Some(v) => format!("{reason}; {}", spam::describe(v)),
        None => reason.to_string(),
    };
    if junk {
        spam::ensure_junk(gw, &targets.iter().collect::<Vec<_>>()).await?;
    }
    let blob = gw.put_blob(bytes.clone()).await?;
    let key = format!("anomaly:{digest}:{}", rcpts_key(rcpts));
    // Ordinary mail in an anomaly envelope: the quota applies (only receipts skip it).
    // One full mailbox must not hold the envelope back from the others (nor turn the whole
    // transaction into a 4xx the peer retries for ever): a target whose quota refuses the
    // commit is left out, traced, and the commit is tried again with the rest. The check
    // runs inside the commit, so it is exact under concurrent deliveries.
    let mut full: Vec<PecAddress> = Vec::new();
    loop {
        let mut batch = Batch::new().claim(key.clone());
        let deliver_to: Vec<&PecAddress> = targets.iter().filter(|t| !full.contains(t)).collect();
        if deliver_to.is_empty() {
            break;
        }
        for t in &deliver_to {
            batch = if junk {
                // Into Junk as it is: the owner's rules do not move spam out of it. Not
                // into the security archive: whoever can send ordinary mail could fill it
                // and crowd out the certified mail it exists for.
                let mut d = Delivery::inbox((*t).clone(), blob.clone(), now);
                d.folder = spam::JUNK_FOLDER.to_string();
                d.archive = false;
                batch.deliver(d)
            } else {
                delivery::route_message(
                    gw,
                    batch,
                    t,
                    (blob.clone(), &bytes),
                    &built.message_id,
                    now,
                )
            };
        }
        let mut ev = TraceEvent::new(EventKind::AnomalyWrapped, now)
            .sender(sender.to_string())
            .detail(detail.clone())
            .message_bytes(data);
        ev.recipients = deliver_to.iter().map(ToString::to_string).collect();
        ev.related = vec![built.message_id.clone()];
        batch = batch.trace(ev);
        for f in &full {
            batch = batch.trace(mailbox_full_event(sender, f, data, &built.message_id, now));
        }
        match gw.store.commit_async(batch).await {
            Ok(_) | Err(StoreError::AlreadyClaimed(_)) => {
                let text = if full.is_empty() {
                    "Delivered as an anomaly envelope (non-certified)".to_string()
                } else {
                    format!(
                        "Delivered as an anomaly envelope (non-certified); not stored, \
                         mailbox full: {}",
                        join(&full)
                    )
                };
                return Ok(SmtpReply::new(250, "2.0.0", text));
            }
            Err(e) => {
                let over = match &e {
                    StoreError::QuotaExceeded { mailbox, .. } => targets
                        .iter()
                        .find(|t| !full.contains(t) && t.key().eq_ignore_ascii_case(mailbox)),
                    _ => None,
                };
                // Any other failure (or a quota refusal we cannot pin on a target, so
                // leaving targets out would not progress) defers the whole transaction.
                match over {
                    Some(t) => full.push(t.clone()),
                    None => return Err(e.into()),
                }
            }
        }
    }
    // Every target is full: nothing stored. The trace says so; the peer may retry later
    // (RFC 5321 §4.2.3 452, RFC 3463 4.2.2 "mailbox full").
    let mut batch = Batch::new();
    for f in &full {
        batch = batch.trace(mailbox_full_event(sender, f, data, &built.message_id, now));
    }
    gw.store.commit_async(batch).await?;
    tracing::warn!(sender, full = %join(&full), "anomaly envelope not stored: every mailbox is full");
    Ok(SmtpReply::new(
        452,
        "4.2.2",
        format!("Mailbox full: {}", join(&full)),
    ))
}

fn join(addrs: &[PecAddress]) -> String {
    addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The trace record of an anomaly envelope left out of a full mailbox.
fn mailbox_full_event(
    sender: &str,
    mailbox: &PecAddress,
    data: &[u8],
    anomaly_id: &str,
    now: jiff::Timestamp,
) -> TraceEvent {
    let mut ev = TraceEvent::new(EventKind::DeliveryFailed, now)
        .sender(sender.to_string())
        .recipient(mailbox.to_string())
        .detail("anomaly envelope not stored: mailbox full".to_string())
        .message_bytes(data);
    ev.related = vec![anomaly_id.to_string()];
    ev
}
