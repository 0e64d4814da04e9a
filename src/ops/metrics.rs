//! The Prometheus metrics of a running provider (text exposition format 0.0.4, through the
//! `prometheus` crate, which `promtool check metrics` reads).
//!
//! Counted as things happen: messages accepted / refused / deferred per point and status
//! code ([`message`]), trace-log events per kind (which gives the receipts issued per kind
//! and the failed logins, [`trace_events`]), login lockouts, store commit latency, open
//! connections and TLS handshake failures per listener. Read when scraped ([`render`]):
//! queue depth and oldest item per lane, the trace log's head sequence and the age of its
//! last signed checkpoint, clamd and spamd reachability, the provider index's LDAP refreshes, the
//! store's free space, the bytes held in memory for the queue workers ([`crate::gateway::recent`]).
//!
//! Label values are bounded: listener names, lanes, points, trace kinds and SMTP status
//! codes, never addresses or free text.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

use crate::gateway::Gateway;
use crate::store::Lane;
use crate::trace::EventKind;

/// Every metric; one per process ([`METRICS`]).
pub struct Metrics {
    registry: Registry,
    messages: IntCounterVec,
    trace_events: IntCounterVec,
    receipts: IntCounterVec,
    lockouts: IntCounter,
    password_checks: IntCounterVec,
    commit_seconds: Histogram,
    connections: IntGaugeVec,
    tls_failures: IntCounterVec,
    queue_depth: IntGaugeVec,
    queue_oldest: GaugeVec,
    trace_head: IntGauge,
    trace_in_memory: IntGauge,
    checkpoint_age: prometheus::Gauge,
    dependency_up: IntGaugeVec,
    index_refresh: IntCounterVec,
    free_bytes: IntGauge,
    handover_bytes: IntGauge,
    /// Always 0 here: a standby answers its own `/metrics` with 1
    /// ([`super::admin::serve_standby`]), so the series is there on every node.
    #[allow(dead_code)]
    standby: IntGauge,
    /// 1 while this node runs the duties only one node may run: always with one writer,
    /// while elected with several ([`crate::server`]).
    duties: IntGauge,
}

/// The process's metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// Registers `m` and hands it back. The names and label sets are constants of this file,
/// so registration cannot fail but by a programming error caught by every test run.
fn reg<M: prometheus::core::Collector + Clone + 'static>(r: &Registry, m: M) -> M {
    if let Err(e) = r.register(Box::new(m.clone())) {
        tracing::error!(error = %e, "registering a metric");
    }
    m
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace("pecd")
}

impl Metrics {
    fn new() -> Self {
        let r = Registry::new();
        // The metric definitions below are constants: `expect` cannot fail at run time
        // (a bad name or label set fails the first test that renders the metrics).
        let cv = |name: &str, help: &str, labels: &[&str]| {
            reg(
                &r,
                // A constant name, help and label set: cannot fail at run time.
                IntCounterVec::new(opts(name, help), labels).expect("counter definition"),
            )
        };
        let gv = |name: &str, help: &str, labels: &[&str]| {
            reg(
                &r,
                // A constant name, help and label set: cannot fail at run time.
                IntGaugeVec::new(opts(name, help), labels).expect("gauge definition"),
            )
        };
        Self {
            messages: cv(
                "messages_total",
                "Messages handed to the access point (point=access) or the incoming point \
                 (point=incoming), by outcome (accepted, refused, deferred) and SMTP status",
                &["point", "outcome", "code", "enhanced"],
            ),
            trace_events: cv(
                "trace_events_total",
                "Records written to the trace log, by kind",
                &["kind"],
            ),
            receipts: cv(
                "receipts_issued_total",
                "Receipts, notices and anomaly envelopes issued and signed by this provider, by kind",
                &["kind"],
            ),
            lockouts: reg(
                &r,
                IntCounter::with_opts(opts(
                    "login_lockouts_total",
                    "Login lockouts begun (an address or an account past limits.auth_max_failures)",
                ))
                // A constant name, help and label set: cannot fail at run time.
                .expect("counter definition"),
            ),
            password_checks: cv(
                "password_checks_total",
                "Login passwords checked, by how: argon2 (a run on the password pool) or \
                 cache (the same password verified for the same stored hash within \
                 limits.login_cache_secs)",
                &["how"],
            ),
            commit_seconds: reg(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "store_commit_seconds",
                        "Time from handing a batch to the store to its durable commit",
                    )
                    .namespace("pecd")
                    .buckets(vec![
                        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                        2.5,
                    ]),
                )
                // A constant name, help and label set: cannot fail at run time.
                .expect("histogram definition"),
            ),
            connections: gv("connections", "Open connections, by listener", &["listener"]),
            tls_failures: cv(
                "tls_handshake_failures_total",
                "TLS handshakes that failed or timed out, by listener",
                &["listener"],
            ),
            queue_depth: gv(
                "queue_items",
                "Items in the outbound queue, by lane (local delivery, remote relay)",
                &["lane"],
            ),
            queue_oldest: reg(
                &r,
                GaugeVec::new(
                    opts(
                        "queue_oldest_age_seconds",
                        "Age of the oldest queued item since its acceptance, by lane (0 when empty)",
                    ),
                    &["lane"],
                )
                // A constant name, help and label set: cannot fail at run time.
                .expect("gauge definition"),
            ),
            trace_head: reg(
                &r,
                IntGauge::with_opts(opts(
                    "trace_head_seq",
                    "Sequence number of the last record of the trace log",
                ))
                // A constant name, help and label set: cannot fail at run time.
                .expect("gauge definition"),
            ),
            trace_in_memory: reg(
                &r,
                IntGauge::with_opts(opts(
                    "trace_records_in_memory",
                    "Trace records waiting to be sealed into a segment file, whose index \
                     entries are held in memory until then (0 on PostgreSQL); growing \
                     without bound means sealing has stalled",
                ))
                // A constant name, help and label set: cannot fail at run time.
                .expect("gauge definition"),
            ),
            checkpoint_age: reg(
                &r,
                prometheus::Gauge::with_opts(opts(
                    "trace_checkpoint_age_seconds",
                    "Age of the last signed checkpoint of the trace log",
                ))
                // A constant name, help and label set: cannot fail at run time.
                .expect("gauge definition"),
            ),
            dependency_up: gv(
                "dependency_up",
                "Whether an external service answers (clamd, spamd: a PING when scraped)",
                &["name"],
            ),
            index_refresh: cv(
                "index_ldap_refreshes_total",
                "Refreshes of the provider index from LDAP, by result",
                &["result"],
            ),
            free_bytes: reg(
                &r,
                IntGauge::with_opts(opts(
                    "store_free_bytes",
                    "Free bytes on the store's filesystem (see limits.min_free_bytes)",
                ))
                // A constant name, help and label set: cannot fail at run time.
                .expect("gauge definition"),
            ),
            handover_bytes: reg(
                &r,
                IntGauge::with_opts(opts(
                    "queue_handover_bytes",
                    "Bytes of envelopes and receipts held in memory for the queue workers to send (at most 32 MiB)",
                ))
                // A constant name and help without labels: cannot fail at run time.
                .expect("gauge definition"),
            ),
            standby: reg(
                &r,
                IntGauge::with_opts(opts(
                    "standby",
                    "1 while this node waits as a standby for the store another node writes",
                ))
                // A constant name and help without labels: cannot fail at run time.
                .expect("gauge definition"),
            ),
            duties: reg(
                &r,
                IntGauge::with_opts(opts(
                    "duties",
                    "1 while this node runs the receipt timers, notifications and upkeep (with several writers, the elected node)",
                ))
                // A constant name and help without labels: cannot fail at run time.
                .expect("gauge definition"),
            ),
            registry: r,
        }
    }
}

/// Whether this node runs the single duties now ([`Metrics::duties`]).
pub fn duties(running: bool) {
    METRICS.duties.set(i64::from(running));
}

/// A message's outcome at a point (`access`, `incoming`): `code` 2xx accepted, 4xx
/// deferred, 5xx refused; `enhanced` the RFC 3463 code.
pub fn message(point: &str, code: u16, enhanced: &str) {
    let outcome = match code {
        200..=299 => "accepted",
        400..=499 => "deferred",
        _ => "refused",
    };
    METRICS
        .messages
        .with_label_values(&[point, outcome, &code.to_string(), enhanced])
        .inc();
}

/// Records written to the trace log by one committed batch.
pub fn trace_events<'a>(kinds: impl IntoIterator<Item = &'a EventKind>) {
    for k in kinds {
        METRICS.trace_events.with_label_values(&[k.as_str()]).inc();
        let receipt = match k {
            EventKind::AcceptanceSent => "accettazione",
            EventKind::NonAcceptanceSent => "non-accettazione",
            EventKind::TakeChargeSent => "presa-in-carico",
            EventKind::DeliveryReceiptSent => "avvenuta-consegna",
            EventKind::NonDeliverySent => "errore-consegna",
            EventKind::TimeoutNotice12h | EventKind::TimeoutNotice24h => {
                "preavviso-errore-consegna"
            }
            EventKind::AnomalyWrapped => "busta-anomalia",
            _ => continue,
        };
        METRICS.receipts.with_label_values(&[receipt]).inc();
    }
}

/// A login lockout began.
pub fn lockout() {
    METRICS.lockouts.inc();
}

/// A login password was checked (`how`: "argon2" or "cache").
pub fn password_check(how: &str) {
    METRICS.password_checks.with_label_values(&[how]).inc();
}

/// One durable commit took `d`.
pub fn commit_latency(d: Duration) {
    METRICS.commit_seconds.observe(d.as_secs_f64());
}

/// The open-connections gauge of a listener.
pub fn connections(listener: &str) -> IntGauge {
    METRICS.connections.with_label_values(&[listener])
}

/// A TLS handshake on `listener` failed.
pub fn tls_failure(listener: &str) {
    METRICS.tls_failures.with_label_values(&[listener]).inc();
}

/// A refresh of the provider index from LDAP ended.
pub fn index_refresh(ok: bool) {
    METRICS
        .index_refresh
        .with_label_values(&[if ok { "ok" } else { "error" }])
        .inc();
}

/// The exposition text, after reading what is read when scraped.
pub async fn render(gw: &std::sync::Arc<Gateway>) -> String {
    let m = &*METRICS;
    let now = gw.clock.now();
    let g = gw.clone();
    let read = tokio::task::spawn_blocking(move || {
        let stats = g.store.queue_stats();
        let head = g.store.trace().head().map(|(seq, _)| seq);
        let in_memory = g.store.trace().records_in_memory();
        let checkpoint = g.store.trace().last_checkpoint();
        let free = g.store.free_bytes();
        (stats, head, in_memory, checkpoint, free)
    })
    .await;
    if let Ok((stats, head, in_memory, checkpoint, free)) = read {
        m.trace_in_memory
            .set(i64::try_from(in_memory).unwrap_or(i64::MAX));
        if let Ok(stats) = stats {
            for (lane, name) in [(Lane::Local, "local"), (Lane::Remote, "remote")] {
                let (count, oldest) = stats
                    .iter()
                    .find(|s| s.0 == lane)
                    .map(|s| (s.1, s.2))
                    .unwrap_or((0, None));
                m.queue_depth
                    .with_label_values(&[name])
                    .set(i64::try_from(count).unwrap_or(i64::MAX));
                let age = oldest.map_or(0.0, |t| now.duration_since(t).as_secs_f64().max(0.0));
                m.queue_oldest.with_label_values(&[name]).set(age);
            }
        }
        if let Ok(seq) = head {
            m.trace_head.set(i64::try_from(seq).unwrap_or(i64::MAX));
        }
        if let Ok(Some(c)) = checkpoint {
            m.checkpoint_age
                .set(now.duration_since(c.time).as_secs_f64().max(0.0));
        }
        if let Ok(free) = free {
            m.free_bytes.set(i64::try_from(free).unwrap_or(i64::MAX));
        }
    }
    m.handover_bytes
        .set(i64::try_from(gw.recent.held_bytes()).unwrap_or(i64::MAX));
    if let Some(scanner) = &gw.scanner {
        let up = tokio::time::timeout(Duration::from_secs(2), scanner.ping())
            .await
            .is_ok_and(|r| r.is_ok());
        m.dependency_up
            .with_label_values(&["clamd"])
            .set(i64::from(up));
    }
    if let Some(filter) = &gw.spam_filter {
        let up = tokio::time::timeout(Duration::from_secs(2), filter.ping())
            .await
            .is_ok_and(|r| r.is_ok());
        m.dependency_up
            .with_label_values(&["spamd"])
            .set(i64::from(up));
    }
    if gw.store.backend_name() == "postgres" {
        let store = gw.store.clone();
        let probe =
            tokio::task::spawn_blocking(move || store.probe_database().is_some_and(|r| r.is_ok()));
        let up = tokio::time::timeout(Duration::from_secs(2), probe)
            .await
            .is_ok_and(|r| r.unwrap_or(false));
        m.dependency_up
            .with_label_values(&["postgres"])
            .set(i64::from(up));
    }
    if gw.store.blobs().backend_name() == "s3" {
        let store = gw.store.clone();
        let probe =
            tokio::task::spawn_blocking(move || store.blobs().probe().is_some_and(|r| r.is_ok()));
        let up = tokio::time::timeout(Duration::from_secs(2), probe)
            .await
            .is_ok_and(|r| r.unwrap_or(false));
        m.dependency_up
            .with_label_values(&["s3"])
            .set(i64::from(up));
    }
    let mut out = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&m.registry.gather(), &mut out) {
        tracing::error!(error = %e, "encoding the metrics");
    }
    String::from_utf8(out).unwrap_or_default()
}
