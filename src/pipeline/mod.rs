//! One module per PEC role (digest §6).
//!
//! * [`checks`]: the access point's formal checks on a submission (pure).
//! * [`access`]: the access point (*punto di accesso*): acceptance or non-acceptance,
//!   transport envelope, queueing, deadlines; the SMTP backend of 465/587.
//! * [`delivery`]: the incoming and delivery points for our own domains (*punto di
//!   ricezione*, *punto di consegna*): take-charge, mailbox, delivery receipts.
//! * [`incoming`]: the incoming point on the `smtp` listener: verification against the
//!   provider index, take-charge, receipts for our messages, anomaly envelopes.
//! * [`timers`]: the 12 h / 24 h timeout notices of the sender side.
//! * [`virus`]: the antivirus policy (scan, defer, quarantine).
//! * [`notify`]: confirmation codes and notices of arrivals to the owner's ordinary
//!   addresses.
//! * [`quota`]: the owner's notices at 80 % and 95 % of the mailbox.
//! * [`spam`]: the antispam policy for non-certified mail (scan, defer, Junk).
//! * [`relay`]: the outbound queue to other providers and ordinary mail (SMTP client).
//! * [`storage`]: 452 4.3.1 when the disk is short of space.

/// The span every log line about one message carries: its identificativo (`None` until
/// known, e.g. at the incoming point before the daticert is read), so that `--log-format
/// json` lines can be selected by it.
pub fn message_span(ident: Option<&str>) -> tracing::Span {
    match ident {
        Some(i) => tracing::info_span!("message", identificativo = %i),
        None => tracing::info_span!("message", identificativo = tracing::field::Empty),
    }
}

/// With several writing nodes, leases the due queue `items` this node is about to work on
/// (`store.lease_secs`), so that no other node takes them meanwhile; the ones it got, as
/// leased (with their token, which each outcome's batch checks through
/// [`crate::store::Batch::queue_fence`]). Another node's lease, or a failed commit, leaves
/// an item out. With one writer: `items` as they are.
pub async fn lease_due(
    gw: &std::sync::Arc<crate::gateway::Gateway>,
    items: Vec<crate::store::QueueItem>,
    now: jiff::Timestamp,
) -> Vec<crate::store::QueueItem> {
    if items.is_empty() || !gw.store.several_writers() {
        return items;
    }
    let until = now
        .checked_add(jiff::SignedDuration::from_secs(
            i64::try_from(gw.config.store.lease_secs).unwrap_or(i64::MAX),
        ))
        .unwrap_or(now);
    match gw
        .store
        .commit_async(crate::store::Batch::new().queue_lease(&items, until))
        .await
    {
        Ok(applied) => applied.leased,
        Err(e) => {
            tracing::warn!(error = %e, "leasing queue items failed; trying again later");
            Vec::new()
        }
    }
}

pub mod access;
pub mod card_login;
pub mod checks;
pub mod delivery;
pub mod incoming;
pub mod notify;
pub mod quota;
pub mod relay;
pub mod spam;
pub mod storage;
pub mod timers;
pub mod virus;
