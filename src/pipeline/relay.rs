//! The outbound side of the access point: the durable queue of envelopes for other
//! providers' domains and for ordinary (non-PEC) addresses, relayed over SMTP.
//!
//! Next hop: `[routes]` (a transport map, for private networks and tests) or else DNS
//! ([`plan_hops`], RFC 5321 §5.1 and RFC 7505): MX records by preference; the domain itself
//! (its A/AAAA) only when the domain exists and has no MX; a null MX (`.`) or a domain that
//! does not exist (NXDOMAIN) fails permanently; any other DNS failure (SERVFAIL, timeout) is
//! temporary and retried.
//!
//! Channel (digest §7.4): to a PEC domain (one of a provider in the index) STARTTLS is
//! required and verified against the system trust store plus `[relay] trusted_ca`. To any
//! other domain (`esterno` recipients: ordinary Internet mail) TLS is opportunistic
//! (RFC 7435): STARTTLS when offered, certificate not verified, clear text otherwise.
//! Reverse- and forward-paths are the original ones (rule §4.5).
//!
//! Each host of the domain is tried in turn ([`send_via`]): a failure tied to one host (no
//! STARTTLS, no 8BITMIME for 8-bit data, a bad TLS name, a refused connection) moves on to
//! the next, and counts as permanent only when every host failed permanently.
//!
//! Temporary failures are retried with exponential backoff (1 min doubling to 1 h); an item
//! still queued 24 h after it was accepted (`accepted_at` on the queue item, measured on the
//! gateway's clock, kept across partial deliveries) is given up (rule §6.2: "any queued PEC
//! message must be given up after 24 h").
//!
//! What the sender gets when relaying fails — temporarily until the give-up, or permanently
//! (a 5xx from the peer, a null MX, a domain that does not exist): for a `certificato`
//! recipient, nothing at once. The non-delivery notice (#10) is by definition the receiving
//! delivery point's act (§4.11), and the sending provider's only notices are the timeout
//! ones (§6.4, #11): with neither take-charge nor delivery receipt, the 12 h preavviso and
//! the 24 h notice, the latter "not before 22 h". So the pending entry armed at acceptance is
//! left alone and the timers speak for the failed relay. For `esterno` recipients the rules
//! give the sender no notice of any kind (§6.5); the failure is in the trace log.
//!
//! Each outcome is one commit: done or retry + trace (`Relayed` / `RelayFailed`). A crash
//! before that commit relays again at the next start (the peer's duplicate detection is by
//! PEC identifier). The worker scans only the remote lane of the queue, so local deliveries
//! never wait behind a backlog of retries for a peer that is down.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use tokio::sync::watch;

use crate::gateway::Gateway;
use crate::pec::address::Domain;
use crate::smtp::client::{self, Outgoing, Peer, RcptOutcome, TlsPolicy};
use crate::store::{Batch, Due, Lane, QueueItem, Spread, StoreError};
use crate::trace::{EventKind, TraceEvent};

/// Remote items taken per pass.
pub const PASS_LIMIT: usize = 32;

/// Entries of the due index a deep look at the queue reads beyond those the worker wants,
/// passing over the items of domains at their limit (see [`Store::queue_due_spread`]).
///
/// [`Store::queue_due_spread`]: crate::store::Store::queue_due_spread
const SCAN_BEYOND: usize = 1024;

/// How often, at most, the worker looks deep into the queue. Its other looks (at each
/// transaction that ends and each commit that queues work) read from the oldest entry
/// only as many entries as it wants items plus those in flight: with a backlog for one
/// domain at its limit, a deep look at every wake-up would read a thousand entries each
/// time (measured: a quarter more CPU per message between two providers). A deep look
/// reads on from where the last one stopped, so a domain queued behind a backlog of `n`
/// entries is found within about `n / SCAN_BEYOND` such looks.
const DEEP_LOOK_EVERY: Duration = Duration::from_millis(100);

/// Total time a message may stay queued.
pub const GIVE_UP_AFTER: SignedDuration = SignedDuration::from_hours(24);

/// Delay before attempt `attempts + 1`: 1 min doubling, capped at 1 h.
pub fn backoff(attempts: u32) -> SignedDuration {
    crate::store::queue::retry_backoff(attempts)
}

/// The two TLS client configurations of the relay, and its cache of idle sessions
/// (built once per worker: no per-message TLS configuration).
#[derive(Debug, Clone)]
pub struct RelayTls {
    /// Verified: system roots plus `[relay] trusted_ca` (to PEC providers).
    pub verified: Arc<rustls::ClientConfig>,
    /// Any certificate (opportunistic TLS to ordinary mail servers).
    pub opportunistic: Arc<rustls::ClientConfig>,
    /// Sessions kept open for the next transaction to the same host.
    pub sessions: Arc<client::ConnCache>,
}

impl RelayTls {
    pub fn from_gateway(gw: &Gateway) -> Result<Self, String> {
        let verified = crate::tls::client_config(&gw.config.relay.trusted_ca, true)
            .map_err(|e| e.to_string())?;
        let opportunistic = client::opportunistic_tls().map_err(|e| e.to_string())?;
        Ok(Self {
            verified,
            opportunistic,
            sessions: Arc::new(client::ConnCache::with_per_host(
                gw.config.relay.max_transactions_per_domain,
            )),
        })
    }
}

/// Runs the relay worker until `shutdown`.
///
/// Up to `[relay] max_transactions` transactions are in flight at any time, and no more than
/// `max_transactions_per_domain` to one domain; a slot that frees is filled at once from
/// the queue: a slow or hung peer holds up only its own slots, never a whole batch behind
/// it nor the other domains (the queue is read again each time a transaction ends or new
/// work is announced; items already in flight are skipped by id, and the items of a domain
/// at its limit are passed over, within a bounded scan of the due index). On shutdown no new
/// transaction starts and those in flight get [`SHUTDOWN_DRAIN`] to finish and record their
/// outcome (a message the peer took but whose outcome is not committed would be relayed
/// again at the next start, and an ordinary mail server has no duplicate detection); past
/// that they are abandoned, which loses nothing: an item is done only once its outcome is
/// committed.
pub async fn run(gw: Arc<Gateway>, mut shutdown: watch::Receiver<bool>) {
    let tls = match RelayTls::from_gateway(&gw) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "relay TLS configuration: outbound relaying is disabled");
            return;
        }
    };
    let limits = &gw.config.relay;
    // Queue item and domain of each transaction in flight, by task (a task that panicked
    // is known only by its task id), and the transactions in flight by domain.
    let mut in_flight: HashMap<tokio::task::Id, (u64, String)> = HashMap::new();
    let mut by_domain: HashMap<String, usize> = HashMap::new();
    let mut set: tokio::task::JoinSet<()> = tokio::task::JoinSet::new();
    let mut next_deep_look = tokio::time::Instant::now();
    // Where the next deep look starts: where the last one stopped, so that looks one after
    // the other cover the whole index however long a full domain's backlog is.
    let mut deep_from: Option<Vec<u8>> = None;
    loop {
        if *shutdown.borrow() {
            let drained = tokio::time::timeout(SHUTDOWN_DRAIN, async {
                while set.join_next().await.is_some() {}
            })
            .await;
            if drained.is_err() {
                tracing::warn!(
                    transactions = set.len(),
                    "relay transactions still in flight at shutdown: relayed again at the next start"
                );
            }
            return;
        }
        let notified = gw.work.notified();
        // Sessions idle past their time are closed even when nothing more is sent.
        tls.sessions.expire();
        let free = limits.max_transactions.saturating_sub(set.len());
        // This look left slots free and stopped at its bound: a deep look may find items
        // behind a full domain's.
        let mut room_left = false;
        if free > 0 {
            // The due items in flight are still in the queue (done only when their
            // outcome commits): they are passed over by id, and only the records of the
            // items taken are read (the loop runs at every commit that queues work).
            let now = gw.clock.now();
            let busy: HashSet<u64> = in_flight.values().map(|(id, _)| *id).collect();
            let deep = tokio::time::Instant::now() >= next_deep_look;
            if deep {
                next_deep_look = tokio::time::Instant::now() + DEEP_LOOK_EVERY;
            }
            let spread = Spread {
                per_domain: limits.max_transactions_per_domain,
                in_flight: &by_domain,
                scan: free + busy.len() + if deep { SCAN_BEYOND } else { 0 },
                after: if deep { deep_from.as_deref() } else { None },
            };
            match gw
                .store
                .queue_due_spread(Lane::Remote, now, free, &busy, spread)
            {
                Ok(Due {
                    items: fresh,
                    cut_short,
                    stopped_at,
                }) => {
                    room_left = cut_short;
                    if deep {
                        // At the end of the index the next deep look starts over.
                        deep_from = stopped_at;
                    }
                    // Several nodes: only the items this one could lease.
                    let fresh = super::lease_due(&gw, fresh, now).await;
                    for item in fresh {
                        let (id, domain) = (item.id, item.domain.as_str().to_string());
                        let task = set.spawn(one(gw.clone(), tls.clone(), item));
                        *by_domain.entry(domain.clone()).or_default() += 1;
                        in_flight.insert(task.id(), (id, domain));
                    }
                }
                Err(e) => tracing::error!(error = %e, "reading the queue"),
            }
        }
        tokio::select! {
            Some(done) = set.join_next_with_id(), if !set.is_empty() => {
                let task = match done {
                    Ok((task, ())) => task,
                    // A panic in one transaction: its item stays queued and is taken again.
                    Err(e) => {
                        tracing::error!(error = %e, "a relay transaction failed");
                        e.id()
                    }
                };
                if let Some((_, domain)) = in_flight.remove(&task)
                    && let Some(n) = by_domain.get_mut(&domain)
                {
                    *n -= 1;
                    if *n == 0 {
                        by_domain.remove(&domain);
                    }
                }
            }
            _ = notified => {}
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = tokio::time::sleep_until(next_deep_look), if room_left => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// How long transactions in flight may take to finish when the worker stops.
pub const SHUTDOWN_DRAIN: Duration = Duration::from_secs(8);

/// One transaction of the worker.
async fn one(gw: Arc<Gateway>, tls: RelayTls, item: QueueItem) {
    let span = super::message_span(item.ident.as_deref());
    tracing::Instrument::instrument(
        async {
            if let Err(e) = relay_one(&gw, &tls, &item).await {
                tracing::error!(queue_item = item.id, error = %e, "recording a relay outcome failed");
            }
        },
        span,
    )
    .await;
}

/// Relays the remote items due at the clock's "now" (up to [`PASS_LIMIT`], and no more than
/// `[relay] max_transactions_per_domain` to one domain); true when there were any.
pub async fn pass(gw: &Arc<Gateway>, tls: &RelayTls) -> bool {
    let now = gw.clock.now();
    let limits = &gw.config.relay;
    let spread = Spread {
        per_domain: limits.max_transactions_per_domain,
        in_flight: &HashMap::new(),
        scan: PASS_LIMIT + SCAN_BEYOND,
        after: None,
    };
    let due = gw
        .store
        .queue_due_spread(Lane::Remote, now, PASS_LIMIT, &HashSet::new(), spread);
    let due: Vec<QueueItem> = match due {
        Ok(d) => d.items,
        Err(e) => {
            tracing::error!(error = %e, "reading the queue");
            Vec::new()
        }
    };
    let busy = !due.is_empty();
    let due = super::lease_due(gw, due, now).await;
    // Transactions to different (or the same) peers go out in parallel, bounded: one
    // slow peer must not hold up every other message in the queue.
    let mut set = tokio::task::JoinSet::new();
    for item in due {
        while set.len() >= limits.max_transactions {
            let _ = set.join_next().await;
        }
        let (gw, tls) = (gw.clone(), tls.clone());
        let span = super::message_span(item.ident.as_deref());
        set.spawn(tracing::Instrument::instrument(
            async move {
                if let Err(e) = relay_one(&gw, &tls, &item).await {
                    tracing::error!(queue_item = item.id, error = %e, "recording a relay outcome failed");
                }
            },
            span,
        ));
    }
    while set.join_next().await.is_some() {}
    busy
}

/// What the DNS said about a domain's MX records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MxAnswer {
    /// (preference, exchange) pairs; an exchange of `""` or `"."` is a null MX.
    Records(Vec<(u16, String)>),
    /// The domain exists but has no MX (NOERROR, no answer).
    NoData,
    /// The domain does not exist.
    NxDomain,
    /// SERVFAIL, REFUSED, timeout, no resolver...: the answer is unknown.
    Failed(String),
}

/// Where to send, or why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hops {
    /// Host names to try in order (port 25).
    Hosts(Vec<String>),
    /// Never deliverable: give up now.
    Permanent(String),
    /// Try again later.
    Temporary(String),
}

/// RFC 5321 §5.1 and RFC 7505 §3-4: the hosts for `domain` from its MX answer.
pub fn plan_hops(domain: &Domain, answer: MxAnswer) -> Hops {
    match answer {
        MxAnswer::Records(mut mx) => {
            let null = |h: &str| h.trim_end_matches('.').is_empty();
            if mx.iter().any(|(_, h)| null(h)) {
                return Hops::Permanent(format!(
                    "{domain} publishes a null MX: it accepts no mail (RFC 7505)"
                ));
            }
            if mx.is_empty() {
                return Hops::Hosts(vec![domain.to_string()]);
            }
            mx.sort();
            Hops::Hosts(
                mx.into_iter()
                    .map(|(_, h)| h.trim_end_matches('.').to_ascii_lowercase())
                    .collect(),
            )
        }
        // The implicit MX: the domain's own A/AAAA records.
        MxAnswer::NoData => Hops::Hosts(vec![domain.to_string()]),
        MxAnswer::NxDomain => Hops::Permanent(format!("{domain}: no such domain (NXDOMAIN)")),
        MxAnswer::Failed(why) => Hops::Temporary(format!("DNS lookup of {domain} failed: {why}")),
    }
}

async fn lookup_mx(domain: &Domain) -> MxAnswer {
    use hickory_resolver::net::{DnsError, NetError};
    use hickory_resolver::proto::op::ResponseCode;
    let resolver = match hickory_resolver::TokioResolver::builder_tokio().and_then(|b| b.build()) {
        Ok(r) => r,
        Err(e) => return MxAnswer::Failed(format!("no DNS resolver: {e}")),
    };
    match resolver.mx_lookup(domain.as_str()).await {
        Ok(mx) => MxAnswer::Records(
            mx.answers()
                .iter()
                .filter_map(|r| match &r.data {
                    hickory_resolver::proto::rr::RData::MX(m) => {
                        Some((m.preference, m.exchange.to_utf8()))
                    }
                    _ => None,
                })
                .collect(),
        ),
        Err(NetError::Dns(DnsError::NoRecordsFound(nr))) => match nr.response_code {
            ResponseCode::NXDomain => MxAnswer::NxDomain,
            ResponseCode::NoError => MxAnswer::NoData,
            other => MxAnswer::Failed(other.to_string()),
        },
        Err(NetError::Dns(DnsError::ResponseCode(ResponseCode::NXDomain))) => MxAnswer::NxDomain,
        Err(e) => MxAnswer::Failed(e.to_string()),
    }
}

/// The hosts to try for `domain`, in order, as (host, port, TLS name).
pub async fn next_hops(gw: &Gateway, domain: &Domain) -> Result<Vec<(String, u16, String)>, Hops> {
    if let Some(route) = gw.config.routes.get(domain)
        && let Some((h, p)) = route.rsplit_once(':')
        && let Ok(port) = p.parse()
    {
        let host = h.trim_start_matches('[').trim_end_matches(']').to_string();
        return Ok(vec![(host.clone(), port, host)]);
    }
    match plan_hops(domain, lookup_mx(domain).await) {
        Hops::Hosts(h) => Ok(h.into_iter().map(|h| (h.clone(), 25, h)).collect()),
        other => Err(other),
    }
}

/// Whether relaying to `domain` is provider-to-provider PEC traffic (verified TLS
/// required) rather than ordinary mail to an `esterno` recipient.
pub fn is_pec_peer(gw: &Gateway, domain: &Domain) -> bool {
    gw.index().is_pec_domain(domain)
}

async fn relay_one(gw: &Arc<Gateway>, tls: &RelayTls, item: &QueueItem) -> Result<(), StoreError> {
    let now = gw.clock.now();
    let data = gw.read_blob(item.blob.clone()).await?;
    let (policy, config) = if is_pec_peer(gw, &item.domain) {
        (TlsPolicy::Required, tls.verified.clone())
    } else {
        (TlsPolicy::Opportunistic, tls.opportunistic.clone())
    };
    let mut last_error = format!("no route to {}", item.domain);
    let mut outcome: Option<Vec<(String, RcptOutcome)>> = None;
    let all = |o: fn(String) -> RcptOutcome, why: &str| -> Vec<(String, RcptOutcome)> {
        item.rcpt_to
            .iter()
            .map(|r| (r.clone(), o(why.to_string())))
            .collect()
    };
    let hops = match next_hops(gw, &item.domain).await {
        Ok(h) => h,
        Err(Hops::Permanent(why)) => {
            outcome = Some(all(RcptOutcome::Permanent, &why));
            Vec::new()
        }
        Err(Hops::Temporary(why)) => {
            last_error = why;
            Vec::new()
        }
        // next_hops returns hosts as Ok.
        Err(Hops::Hosts(h)) => h.into_iter().map(|h| (h.clone(), 25, h)).collect(),
    };
    let peers: Vec<Peer> = hops
        .into_iter()
        .map(|(host, port, tls_name)| Peer {
            host,
            port,
            tls_name,
            tls: config.clone(),
            timeout: Duration::from_secs(gw.config.limits.command_timeout_secs.min(300)),
        })
        .collect();
    if !peers.is_empty() {
        let msg = Outgoing {
            helo: &gw.config.provider.hostname,
            mail_from: &item.mail_from,
            rcpt_to: &item.rcpt_to,
            data: &data,
        };
        tracing::debug!(
            queue_item = item.id,
            hops = peers.len(),
            ?policy,
            "relaying"
        );
        match send_via_cached(Some(&tls.sessions), &peers, &msg, policy).await {
            Ok(r) => {
                tracing::debug!(queue_item = item.id, ?r, "relay outcome");
                outcome = Some(r);
            }
            Err(HopsFailed {
                error,
                permanent: true,
            }) => outcome = Some(all(RcptOutcome::Permanent, &error)),
            Err(HopsFailed { error, .. }) => last_error = error,
        }
    }
    let results = outcome.unwrap_or_else(|| all(RcptOutcome::Temporary, &last_error));
    record(gw, item, now, results).await
}

/// Every hop failed before any recipient was decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HopsFailed {
    /// Each hop's failure, `host:port: why`, joined with `; `.
    pub error: String,
    /// Every hop failed permanently: trying again later cannot help.
    pub permanent: bool,
}

/// Tries `peers` in order (RFC 5321 §5.1: each MX until one takes the transaction) and
/// returns the first per-recipient outcome. A failure of one host — a refused or broken
/// connection, no STARTTLS, a bad TLS name, no 8BITMIME for 8-bit data, a 5xx before any
/// recipient — only moves on to the next host: another MX of the domain may well be able
/// to take the message. The failure is permanent only when every host failed permanently;
/// if any failed temporarily, the item is retried later.
pub async fn send_via(
    peers: &[Peer],
    msg: &Outgoing<'_>,
    policy: TlsPolicy,
) -> Result<Vec<(String, RcptOutcome)>, HopsFailed> {
    send_via_cached(None, peers, msg, policy).await
}

/// [`send_via`], reusing idle sessions from `cache` when given.
pub async fn send_via_cached(
    cache: Option<&client::ConnCache>,
    peers: &[Peer],
    msg: &Outgoing<'_>,
    policy: TlsPolicy,
) -> Result<Vec<(String, RcptOutcome)>, HopsFailed> {
    let mut errors = Vec::new();
    let mut permanent = true;
    for peer in peers {
        let sent = match cache {
            Some(cache) => client::send_cached(cache, peer, msg, policy).await,
            None => client::send_with(peer, msg, policy).await,
        };
        match sent {
            Ok(r) => return Ok(r),
            Err(e) => {
                tracing::debug!(host = %peer.host, port = peer.port, error = %e, "hop failed: trying the next");
                permanent &= !e.is_temporary();
                errors.push(format!("{}:{}: {e}", peer.host, peer.port));
            }
        }
    }
    Err(HopsFailed {
        error: if errors.is_empty() {
            "no host to try".into()
        } else {
            errors.join("; ")
        },
        permanent: permanent && !errors.is_empty(),
    })
}

/// When the item was accepted. Items queued by a pecd without `accepted_at` have it
/// written once at store open (`store::queue::estimated_accepted_at`: their next attempt
/// minus the backoff of the attempts they had); the same estimate stands in here should
/// one still lack it.
pub fn accepted_at(item: &QueueItem) -> Timestamp {
    item.accepted_at
        .unwrap_or_else(|| crate::store::queue::estimated_accepted_at(item))
}

/// Commits the outcome of one attempt: trace records, and done / retry / give-up.
async fn record(
    gw: &Arc<Gateway>,
    item: &QueueItem,
    now: Timestamp,
    results: Vec<(String, RcptOutcome)>,
) -> Result<(), StoreError> {
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

    // Rule §6.2: real time since acceptance, on the gateway's clock.
    let deadline = accepted_at(item).checked_add(GIVE_UP_AFTER).unwrap_or(now);
    let give_up = now >= deadline;
    // With several nodes: recorded only while this node still holds the item's lease.
    let mut batch = Batch::new().queue_fence(item);
    if !accepted.is_empty() {
        batch = batch.trace(event(
            EventKind::Relayed,
            accepted.clone(),
            format!("relayed to {}", item.domain),
        ));
    }
    // A permanent refusal: traced; for certified recipients the pending entry stays, so
    // the sender gets the timeout notices (module doc).
    for (r, why) in &permanent {
        batch = batch.trace(event(
            EventKind::RelayFailed,
            vec![r.clone()],
            format!("refused permanently: {why}"),
        ));
    }
    let first_temporary = temporary.first().map(|(_, why)| why.clone());
    match first_temporary {
        None => batch = batch.queue_done(item.id),
        Some(why) if give_up => {
            let rcpts = temporary.iter().map(|(r, _)| r.clone()).collect();
            batch = batch.queue_done(item.id).trace(event(
                EventKind::RelayFailed,
                rcpts,
                format!("given up after 24 hours: {why}"),
            ));
        }
        Some(why) => {
            // Never later than the give-up instant, so that it happens on time.
            let next = now
                .checked_add(backoff(item.attempts))
                .unwrap_or(now)
                .min(deadline);
            batch = if accepted.is_empty() && permanent.is_empty() {
                batch.queue_retry(item.id, next, why.clone())
            } else {
                // Some recipients are settled: the same item (same acceptance time and
                // attempt count) goes on with the others only.
                let rest = temporary.iter().map(|(r, _)| r.clone()).collect();
                batch.queue_retry_some(item, rest, next, why.clone())?
            };
            tracing::info!(queue_item = item.id, error = %why, "relay deferred");
        }
    }
    gw.store.commit_async(batch).await?;
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

    fn d(s: &str) -> Domain {
        Domain::parse(s).unwrap()
    }

    #[test]
    fn mx_records_are_tried_by_preference() {
        let got = plan_hops(
            &d("example.org"),
            MxAnswer::Records(vec![
                (20, "mx2.example.org.".into()),
                (10, "MX1.example.org.".into()),
            ]),
        );
        assert_eq!(
            got,
            Hops::Hosts(vec!["mx1.example.org".into(), "mx2.example.org".into()])
        );
    }

    #[test]
    fn the_domain_itself_only_when_it_exists_without_mx() {
        assert_eq!(
            plan_hops(&d("example.org"), MxAnswer::NoData),
            Hops::Hosts(vec!["example.org".into()])
        );
        assert!(matches!(
            plan_hops(&d("nope.example"), MxAnswer::NxDomain),
            Hops::Permanent(_)
        ));
        assert!(matches!(
            plan_hops(&d("example.org"), MxAnswer::Failed("SERVFAIL".into())),
            Hops::Temporary(_)
        ));
    }

    #[test]
    fn null_mx_is_a_permanent_failure() {
        for null in [".", ""] {
            let got = plan_hops(&d("example.org"), MxAnswer::Records(vec![(0, null.into())]));
            assert!(
                matches!(&got, Hops::Permanent(w) if w.contains("RFC 7505")),
                "{got:?}"
            );
        }
    }
}
