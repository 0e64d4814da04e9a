//! The outbound side of the access point: the durable queue of envelopes for other
//! providers' domains and for ordinary (non-PEC) addresses, relayed over SMTP.
//!
//! Next hop: `[routes]` (a transport map, for private networks and tests) or else DNS
//! (MX records by preference, the domain itself when there is none). STARTTLS is required
//! and verified against the system trust store plus `[relay] trusted_ca`. Reverse- and
//! forward-paths are the original ones (rule §4.5). Temporary failures are retried with
//! exponential backoff (1 min doubling to 1 h); a message still queued 24 h after it was
//! accepted is given up (rule §6.2: "any queued PEC message must be given up after 24 h"),
//! and the sender's timers issue the timeout notices for certified recipients.
//!
//! Each outcome is one commit: done + trace (`Relayed` / `RelayFailed`), and a new queue
//! item for the recipients still to retry. A crash before that commit relays again at the
//! next start (the peer's duplicate detection is by PEC identifier).

use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use tokio::sync::watch;

use crate::gateway::Gateway;
use crate::pec::address::Domain;
use crate::smtp::client::{self, Outgoing, Peer, RcptOutcome};
use crate::store::{Batch, Blob, NewQueueItem, QueueItem, StoreError};
use crate::trace::{EventKind, TraceEvent};

/// Outbound SMTP transactions in flight at once.
pub const PARALLEL_TRANSACTIONS: usize = 16;

/// Total time a message may stay queued.
pub const GIVE_UP_AFTER: SignedDuration = SignedDuration::from_hours(24);

/// Delay before attempt `attempts + 1`: 1 min doubling, capped at 1 h.
pub fn backoff(attempts: u32) -> SignedDuration {
    let secs = 60u64.saturating_mul(1u64 << attempts.min(6)).min(3600);
    SignedDuration::from_secs(secs as i64)
}

/// Runs the relay worker until `shutdown`.
pub async fn run(gw: Arc<Gateway>, mut shutdown: watch::Receiver<bool>) {
    let tls = match crate::tls::client_config(&gw.config.relay.trusted_ca, true) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "relay TLS configuration: outbound relaying is disabled");
            return;
        }
    };
    loop {
        if *shutdown.borrow() {
            return;
        }
        let notified = gw.work.notified();
        let now = gw.clock.now();
        let due: Vec<QueueItem> = match gw.store.queue_due(now, 32) {
            Ok(d) => d.into_iter().filter(|i| !gw.is_local(&i.domain)).collect(),
            Err(e) => {
                tracing::error!(error = %e, "reading the queue");
                Vec::new()
            }
        };
        let busy = !due.is_empty();
        // Transactions to different (or the same) peers go out in parallel, bounded: one
        // slow peer must not hold up every other message in the queue.
        let mut set = tokio::task::JoinSet::new();
        for item in due {
            while set.len() >= PARALLEL_TRANSACTIONS {
                let _ = set.join_next().await;
            }
            let (gw, tls) = (gw.clone(), tls.clone());
            set.spawn(async move {
                if let Err(e) = relay_one(&gw, &tls, &item).await {
                    tracing::error!(queue_item = item.id, error = %e, "recording a relay outcome failed");
                }
            });
        }
        while set.join_next().await.is_some() {}
        if busy {
            continue;
        }
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// The hosts to try for `domain`, in order, as (host, port, TLS name).
pub async fn next_hops(gw: &Gateway, domain: &Domain) -> Vec<(String, u16, String)> {
    if let Some(route) = gw.config.routes.get(domain) {
        if let Some((h, p)) = route.rsplit_once(':') {
            let host = h.trim_start_matches('[').trim_end_matches(']').to_string();
            if let Ok(port) = p.parse() {
                return vec![(host.clone(), port, host)];
            }
        }
    }
    let resolver = match hickory_resolver::TokioResolver::builder_tokio() {
        Ok(b) => b.build(),
        Err(e) => {
            tracing::warn!(error = %e, "no DNS resolver configuration");
            return Vec::new();
        }
    };
    let Ok(resolver) = resolver else {
        return Vec::new();
    };
    match resolver.mx_lookup(domain.as_str()).await {
        Ok(mx) => {
            let mut hosts: Vec<(u16, String)> = mx
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    hickory_resolver::proto::rr::RData::MX(m) => Some((
                        m.preference,
                        m.exchange.to_utf8().trim_end_matches('.').to_string(),
                    )),
                    _ => None,
                })
                .collect();
            hosts.sort();
            hosts.into_iter().map(|(_, h)| (h.clone(), 25, h)).collect()
        }
        // RFC 5321 §5.1: no MX, the domain itself is the implicit MX.
        Err(_) => vec![(domain.to_string(), 25, domain.to_string())],
    }
}

async fn relay_one(
    gw: &Arc<Gateway>,
    tls: &Arc<rustls::ClientConfig>,
    item: &QueueItem,
) -> Result<(), StoreError> {
    let now = gw.clock.now();
    let data = gw.read_blob(item.blob.clone()).await?;
    let hops = next_hops(gw, &item.domain).await;
    let mut last_error = format!("no route to {}", item.domain);
    let mut outcome: Option<(String, Vec<(String, RcptOutcome)>)> = None;
    for (host, port, tls_name) in hops {
        let peer = Peer {
            host: host.clone(),
            port,
            tls_name,
            tls: tls.clone(),
            timeout: Duration::from_secs(gw.config.limits.command_timeout_secs.min(300)),
        };
        tracing::debug!(queue_item = item.id, %host, port, "relaying");
        let msg = Outgoing {
            helo: &gw.config.provider.hostname,
            mail_from: &item.mail_from,
            rcpt_to: &item.rcpt_to,
            data: &data,
        };
        match client::send(&peer, &msg).await {
            Ok(r) => {
                tracing::debug!(queue_item = item.id, ?r, "relay outcome");
                outcome = Some((format!("{host}:{port}"), r));
                break;
            }
            Err(e) => {
                last_error = format!("{host}:{port}: {e}");
                if !e.is_temporary() {
                    outcome = Some((
                        format!("{host}:{port}"),
                        item.rcpt_to
                            .iter()
                            .map(|r| (r.clone(), RcptOutcome::Permanent(e.to_string())))
                            .collect(),
                    ));
                    break;
                }
            }
        }
    }
    let results = match outcome {
        Some((_, r)) => r,
        None => item
            .rcpt_to
            .iter()
            .map(|r| (r.clone(), RcptOutcome::Temporary(last_error.clone())))
            .collect(),
    };
    let ident = item.ident.clone().unwrap_or_default();
    let event = |kind, rcpts: Vec<String>, detail: String| {
        let mut e = TraceEvent::new(kind, now)
            .ident(ident.clone())
            .sender(item.mail_from.clone())
            .other_provider(item.domain.to_string())
            .detail(detail);
        e.recipients = rcpts;
        e
    };
    let accepted: Vec<String> = results
        .iter()
        .filter(|(_, o)| *o == RcptOutcome::Accepted)
        .map(|(r, _)| r.clone())
        .collect();
    let permanent: Vec<(String, String)> = results
        .iter()
        .filter_map(|(r, o)| match o {
            RcptOutcome::Permanent(t) => Some((r.clone(), t.clone())),
            _ => None,
        })
        .collect();
    let temporary: Vec<(String, String)> = results
        .iter()
        .filter_map(|(r, o)| match o {
            RcptOutcome::Temporary(t) => Some((r.clone(), t.clone())),
            _ => None,
        })
        .collect();

    // The first attempt happened at the acceptance; attempts accumulate the backoff.
    let queued_for: SignedDuration = (0..item.attempts).map(backoff).sum();
    let give_up = queued_for >= GIVE_UP_AFTER;
    let mut batch = Batch::new();
    if !accepted.is_empty() {
        batch = batch.trace(event(
            EventKind::Relayed,
            accepted.clone(),
            format!("relayed to {}", item.domain),
        ));
    }
    for (r, why) in &permanent {
        batch = batch.trace(event(
            EventKind::RelayFailed,
            vec![r.clone()],
            format!("refused permanently: {why}"),
        ));
    }
    if temporary.is_empty() {
        batch = batch.queue_done(item.id);
    } else if give_up {
        let rcpts = temporary.iter().map(|(r, _)| r.clone()).collect();
        batch = batch.queue_done(item.id).trace(event(
            EventKind::RelayFailed,
            rcpts,
            format!("given up after 24 hours: {}", temporary[0].1),
        ));
    } else if accepted.is_empty() && permanent.is_empty() {
        let next = now.checked_add(backoff(item.attempts)).unwrap_or(now);
        batch = batch.queue_retry(item.id, next, temporary[0].1.clone());
    } else {
        // Some recipients are settled: retry only the others, as a new item.
        let next: Timestamp = now.checked_add(backoff(item.attempts)).unwrap_or(now);
        batch = batch.queue_done(item.id).enqueue(NewQueueItem {
            domain: item.domain.clone(),
            mail_from: item.mail_from.clone(),
            rcpt_to: temporary.iter().map(|(r, _)| r.clone()).collect(),
            blob: Blob {
                id: item.blob.clone(),
                size: item.size,
            },
            ident: item.ident.clone(),
            next_attempt: next,
        });
    }
    gw.store.commit_async(batch).await?;
    if !temporary.is_empty() && !give_up {
        tracing::info!(queue_item = item.id, error = %temporary[0].1, "relay deferred");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_an_hour_and_gives_up_within_a_day() {
        assert_eq!(backoff(0), SignedDuration::from_secs(60));
        assert_eq!(backoff(1), SignedDuration::from_secs(120));
        assert_eq!(backoff(10), SignedDuration::from_secs(3600));
        let total: SignedDuration = (0..30).map(backoff).sum();
        assert!(total >= GIVE_UP_AFTER);
    }
}
