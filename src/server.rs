//! Starting and stopping a running provider: binds the configured listeners, spawns the
//! protocol drivers and the workers (local delivery, relay; timers, notifications, quota
//! notices, maintenance, which with several writing nodes run only while this node is
//! elected, see `duties_when_elected`), and shuts them down in order. `pecd serve`, the
//! integration tests and the benchmarks all start the gateway through [`start`], so what
//! is tested is what runs.
//!
//! Owns the task set and the shutdown signal; it holds no protocol or PEC logic.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::gateway::Gateway;
use crate::pec::address::PecAddress;
use crate::pec::index::{ProviderIndex, ProviderRecord};
use crate::pipeline::{access::AccessPoint, delivery, incoming::IncomingPoint, relay, timers};
use crate::smtp::server::{self as smtp_server, ListenerConfig};
use crate::smtp::session::{Role, SessionConfig};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("listen.{name}: cannot bind {addr}: {source}")]
    Bind {
        name: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("loading the TLS certificate: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("preparing the DATA spool directory {path}: {source}")]
    Spool {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// A running provider.
pub struct Running {
    pub gateway: Arc<Gateway>,
    /// The bound address of each started listener (`smtps`, `submission`, ...).
    pub listeners: Vec<(&'static str, SocketAddr)>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// The listeners' TLS certificate, replaced by [`Running::reload`].
    server_cert: Arc<crate::tls::ServerCert>,
}

impl Running {
    /// What `SIGHUP` does: reads the `[tls]` certificate and key again (a bad new
    /// certificate leaves the old one in force, and the error says why) and looks at the CRL
    /// directory at once. Returns one line per outcome, for the log.
    pub fn reload(&self) -> Vec<Result<String, String>> {
        let cfg = &self.gateway.config;
        let mut out = vec![
            self.server_cert
                .reload(&cfg.tls.cert, &cfg.tls.key)
                .map(|d| format!("TLS certificate reloaded: {d}"))
                .map_err(|e| {
                    format!("TLS certificate not reloaded, the old one stays in force: {e}")
                }),
        ];
        if let Some(crls) = &self.gateway.crls {
            let set = crls.current(std::time::Duration::ZERO);
            out.push(Ok(format!("CRLs looked at again: {} in force", set.len())));
        }
        out
    }

    /// The bound address of a listener.
    pub fn addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, a)| *a)
    }

    /// Stops accepting, lets the workers finish the work in hand, flushes the store.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        let store = self.gateway.store.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || store.flush()).await {
            tracing::error!(error = %e, "flushing the store at shutdown");
        }
    }
}

/// The `mailReceipt` other providers hold for us, when it is not our
/// `provider.receipt_mailbox`. Our entry in `imported` (the national index as imported,
/// which contains our own record too) is the one holding our signing certificate, else the
/// one with our dn, else one managing a domain of ours. `None` when they agree or when the
/// imported index has no entry for us (a fresh or private setup).
pub fn held_receipt_mailbox_mismatch(
    imported: &ProviderIndex,
    own: &ProviderRecord,
) -> Option<PecAddress> {
    let records = imported.records();
    let ours = own
        .certificates
        .iter()
        .find_map(|c| records.iter().find(|r| r.holds_certificate(c)))
        .or_else(|| records.iter().find(|r| r.dn.eq_ignore_ascii_case(&own.dn)))
        .or_else(|| {
            records
                .iter()
                .find(|r| own.managed_domains.iter().any(|d| r.manages(d)))
        })?;
    (!ours.mail_receipt.same_mailbox(&own.mail_receipt)).then(|| ours.mail_receipt.clone())
}

/// Rules §4.6/§8.3: other providers address our take-charge receipts and virus notices to
/// the `mailReceipt` of our index entry, and the incoming point delivers a take-charge only
/// to `provider.receipt_mailbox`: if the two differ, every take-charge for us becomes an
/// anomaly envelope. Checked once at start (a later `pecd index import` is not re-checked);
/// warns, never fails (the index entry may be about to be corrected).
fn check_own_index_entry(gw: &Gateway) {
    let imported = match ProviderIndex::load_or_empty(&ProviderIndex::default_path(&gw.config)) {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the imported provider index to check our own entry");
            return;
        }
    };
    let own = match ProviderRecord::for_this_provider(&gw.config, gw.signer.certificate()) {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!(error = %e, "cannot build our own index entry to check it");
            return;
        }
    };
    if let Some(held) = held_receipt_mailbox_mismatch(&imported, &own) {
        tracing::warn!(
            index_mail_receipt = %held,
            receipt_mailbox = %own.mail_receipt,
            "MISCONFIGURATION: the provider index lists mailReceipt {held} for this provider, \
             but provider.receipt_mailbox is {}: take-charge receipts and virus notices from \
             other providers will be treated as anomalies until the two agree",
            own.mail_receipt
        );
    }
}

/// Mailboxes on a plan follow its size in `[plans]`: a size changed in the configuration
/// is applied here, at start-up (traced like any quota change). A plan that is no longer
/// configured leaves the quota as it was and is reported.
fn apply_plan_sizes(gw: &Gateway) {
    let list = match gw.store.list_mailboxes() {
        Ok(l) => l,
        Err(e) => return tracing::error!(error = %e, "listing mailboxes to apply plan sizes"),
    };
    for m in list {
        let Some(name) = &m.plan else { continue };
        match gw.config.plans.get(name) {
            None => tracing::warn!(
                mailbox = %m.address,
                plan = %name,
                "the mailbox's plan is not in [plans]: its quota stays {} bytes",
                m.quota_bytes
            ),
            Some(p)
                if p.mailbox_bytes != m.quota_bytes || p.archive_bytes != m.archive_quota_bytes =>
            {
                match gw
                    .store
                    .set_plan(&m.address, name, p.mailbox_bytes, p.archive_bytes)
                {
                    Ok(()) => tracing::info!(
                        mailbox = %m.address,
                        plan = %name,
                        from = m.quota_bytes,
                        to = p.mailbox_bytes,
                        "plan size changed: quota updated"
                    ),
                    Err(e) => {
                        tracing::error!(mailbox = %m.address, error = %e, "applying the plan size")
                    }
                }
            }
            Some(_) => {}
        }
    }
}

/// Binds every implemented listener of `[listen]` and starts the workers.
pub async fn start(gw: Arc<Gateway>) -> Result<Running, ServerError> {
    check_own_index_entry(&gw);
    apply_plan_sizes(&gw);
    let (tls, server_cert) = crate::tls::server_config(&gw.config.tls.cert, &gw.config.tls.key)?;
    // With [cns], the mail listeners also ask for a smart card (never required), so that
    // SASL EXTERNAL can log in with it. Port 25 never asks.
    let tls_user = match &gw.cns {
        Some(cns) => crate::tls::server_config_with_cards(server_cert.clone(), cns.ca_subjects())?,
        None => tls.clone(),
    };
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let mut listeners = Vec::new();
    let limits = &gw.config.limits;
    // DATA is spooled here while it arrives; each SMTP role has its own budgets, so a
    // flood on port 25 never stops users from sending.
    let spool_dir = gw.config.store.dir.join("spool");
    crate::smtp::spool::prepare_dir(&spool_dir).map_err(|source| ServerError::Spool {
        path: spool_dir.clone(),
        source,
    })?;
    let data_limits = |prefix| {
        Arc::new(crate::smtp::spool::DataLimits::new(
            &spool_dir,
            prefix,
            limits.max_inflight_data_bytes,
            limits.max_processing_bytes,
        ))
    };
    let (incoming_data, submission_data) = (data_limits("in"), data_limits("sub"));
    let listener_cfg = |name, role, implicit_tls| ListenerConfig {
        name,
        session: SessionConfig {
            hostname: gw.config.provider.hostname.clone(),
            role,
            // Port 25 takes what providers build around a maximum-size original
            // (envelopes, completa receipts, anomaly envelopes: issue #13).
            max_message_bytes: match role {
                Role::Incoming => limits.max_incoming_message_bytes,
                Role::Submission => limits.max_message_bytes,
            } as usize,
            max_recipients: limits.max_recipients as usize,
            tls_available: true,
            local_domains: gw
                .config
                .provider
                .domains
                .iter()
                .map(|d| d.to_string())
                .collect(),
            max_auth_failures: 3,
            max_line_length: limits.max_line_length,
        },
        implicit_tls,
        tls: Some(match role {
            Role::Incoming => tls.clone(),
            Role::Submission => tls_user.clone(),
        }),
        command_timeout: Duration::from_secs(limits.command_timeout_secs),
        gate: gw.connections.clone(),
        data: match role {
            Role::Incoming => incoming_data.clone(),
            Role::Submission => submission_data.clone(),
        },
        auth_failure_delay: Duration::from_secs(1),
    };
    let submission: [(&'static str, Option<SocketAddr>, bool); 2] = [
        ("smtps", gw.config.listen.smtps, true),
        ("submission", gw.config.listen.submission, false),
    ];
    for (name, addr, implicit) in submission {
        let Some(addr) = addr else { continue };
        let l = bind(name, addr, &mut listeners).await?;
        let backend = Arc::new(AccessPoint(gw.clone()));
        tasks.push(tokio::spawn(smtp_server::serve(
            l,
            listener_cfg(name, Role::Submission, implicit),
            backend,
            stop_rx.clone(),
        )));
    }
    if let Some(addr) = gw.config.listen.smtp {
        let name = "smtp";
        let l = bind(name, addr, &mut listeners).await?;
        let backend = Arc::new(IncomingPoint(gw.clone()));
        tasks.push(tokio::spawn(smtp_server::serve(
            l,
            listener_cfg(name, Role::Incoming, false),
            backend,
            stop_rx.clone(),
        )));
    }
    if let Some(addr) = gw.config.listen.imaps {
        let name = "imaps";
        let l = bind(name, addr, &mut listeners).await?;
        let cfg = crate::imap::ImapListenerConfig::from_config(&gw, tls_user.clone());
        tasks.push(tokio::spawn(crate::imap::serve(
            l,
            cfg,
            gw.clone(),
            stop_rx.clone(),
        )));
    }
    if let Some(addr) = gw.config.listen.pop3s {
        let name = "pop3s";
        let l = bind(name, addr, &mut listeners).await?;
        let cfg = crate::pop3::Pop3ListenerConfig::from_config(&gw, tls_user.clone());
        tasks.push(tokio::spawn(crate::pop3::serve(
            l,
            cfg,
            gw.clone(),
            stop_rx.clone(),
        )));
    }
    let https_cns = gw.config.listen.https_cns.filter(|_| gw.cns.is_some());
    if gw.config.listen.https.is_some() || https_cns.is_some() {
        // One web face (sessions, JMAP state) behind both web listeners.
        let web = crate::http::Web::new(gw.clone());
        tasks.push(tokio::spawn(
            web.jmap.clone().follow_changes(stop_rx.clone()),
        ));
        if let Some(addr) = gw.config.listen.https {
            if gw.config.listen.https_from_old_key {
                tracing::warn!(
                    "listen.http is now listen.https (the web listener is HTTPS only): rename the key"
                );
            }
            let l = bind("https", addr, &mut listeners).await?;
            if let Ok(a) = l.local_addr() {
                gw.https_port
                    .store(a.port(), std::sync::atomic::Ordering::Relaxed);
            }
            tasks.push(tokio::spawn(crate::http::serve(
                l,
                tls.clone(),
                web.clone(),
                false,
                stop_rx.clone(),
            )));
        }
        if let Some(addr) = https_cns {
            let l = bind("https_cns", addr, &mut listeners).await?;
            if let Ok(a) = l.local_addr() {
                gw.https_cns_port
                    .store(a.port(), std::sync::atomic::Ordering::Relaxed);
            }
            tasks.push(tokio::spawn(crate::http::serve(
                l,
                tls_user.clone(),
                web,
                true,
                stop_rx.clone(),
            )));
        }
    }
    if let Some(addr) = gw.config.listen.admin {
        let l = bind("admin", addr, &mut listeners).await?;
        tasks.push(tokio::spawn(crate::ops::admin::serve(
            l,
            gw.clone(),
            stop_rx.clone(),
        )));
    }
    // The local control socket: admin subcommands reach this server through it.
    match crate::control::listen(&gw) {
        Ok(l) => tasks.push(tokio::spawn(crate::control::serve(
            l,
            gw.clone(),
            stop_rx.clone(),
        ))),
        Err(e) => {
            tracing::error!(error = %e, "control socket not started: admin subcommands cannot reach this server")
        }
    }
    // The queue's workers run on every node: with several, each item is leased to one.
    tasks.push(tokio::spawn(delivery::run(gw.clone(), stop_rx.clone())));
    tasks.push(tokio::spawn(relay::run(gw.clone(), stop_rx.clone())));
    if gw.store.several_writers() {
        tasks.push(tokio::spawn(duties_when_elected(
            gw.clone(),
            stop_rx.clone(),
        )));
    } else {
        tasks.extend(start_duties(&gw, &stop_rx));
        crate::ops::metrics::duties(true);
    }
    tasks.push(tokio::spawn(crate::pec::index::refresh_task(
        gw.clone(),
        stop_rx,
    )));
    Ok(Running {
        gateway: gw,
        listeners,
        stop,
        tasks,
        server_cert,
    })
}

/// Binds one listener and records its bound address (port 0 picks a free one).
async fn bind(
    name: &'static str,
    addr: SocketAddr,
    listeners: &mut Vec<(&'static str, SocketAddr)>,
) -> Result<tokio::net::TcpListener, ServerError> {
    let err = |source| ServerError::Bind { name, addr, source };
    let l = tokio::net::TcpListener::bind(addr).await.map_err(err)?;
    listeners.push((name, l.local_addr().map_err(err)?));
    Ok(l)
}

/// Starts the duties only one node of a store may run: the receipt timers, notifications,
/// quota notices and upkeep.
fn start_duties(gw: &Arc<Gateway>, stop: &watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
    vec![
        tokio::spawn(timers::run(gw.clone(), stop.clone())),
        tokio::spawn(crate::pipeline::notify::run(gw.clone(), stop.clone())),
        tokio::spawn(crate::pipeline::quota::run(gw.clone(), stop.clone())),
        tokio::spawn(maintenance(gw.clone(), stop.clone())),
    ]
}

/// How often a node of several asks to be elected, and the elected one checks it still is.
const ELECTION_POLL: Duration = Duration::from_secs(2);

/// With several writers: runs [`start_duties`] while this node is the elected one (the
/// store's election lock, [`crate::store::Store::try_lead`]), asking again every
/// [`ELECTION_POLL`] while another node is. An elected node that finds its lock gone (its
/// database session ended) stops its duties and stands again; until it has noticed, both
/// nodes may run them (a timer's notice or an arrival notification may then be sent
/// twice; a purge or a checkpoint is safe to repeat).
async fn duties_when_elected(gw: Arc<Gateway>, mut stop: watch::Receiver<bool>) {
    loop {
        if *stop.borrow() {
            return;
        }
        let store = gw.store.clone();
        let lead = match tokio::task::spawn_blocking(move || store.try_lead()).await {
            Ok(Ok(lead)) => lead,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "the election of the node that runs the timers and upkeep failed; asking again");
                None
            }
            Err(e) => {
                tracing::error!(error = %e, "the election task panicked; asking again");
                None
            }
        };
        if let Some(lead) = lead {
            let lead = Arc::new(lead);
            tracing::info!("elected: this node runs the receipt timers, notifications and upkeep");
            crate::ops::metrics::duties(true);
            let (term, term_rx) = watch::channel(false);
            let duties = start_duties(&gw, &term_rx);
            let stopping = loop {
                tokio::select! {
                    _ = tokio::time::sleep(ELECTION_POLL) => {}
                    _ = stop.changed() => break true,
                }
                let l = lead.clone();
                if !tokio::task::spawn_blocking(move || l.holds())
                    .await
                    .unwrap_or(false)
                {
                    break false;
                }
            };
            crate::ops::metrics::duties(false);
            // Their receiver is dropped with `term` too: they end either way.
            let _ = term.send(true);
            for d in duties {
                if let Err(e) = d.await {
                    tracing::error!(error = %e, "a duty ended abnormally");
                }
            }
            if stopping {
                return;
            }
            tracing::warn!(
                "no longer elected (the election's database session ended): the timers, notifications and upkeep stopped on this node; standing again"
            );
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(ELECTION_POLL) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Periodic upkeep: time-based trace checkpoints, daily retention purge and blob sweep.
async fn maintenance(gw: Arc<Gateway>, mut stop: watch::Receiver<bool>) {
    let every = Duration::from_secs(gw.config.trace.checkpoint_interval_secs.max(1));
    let day = Duration::from_secs(24 * 3600);
    let mut last_purge: Option<std::time::Instant> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        let store = gw.store.clone();
        let now = gw.clock.now();
        let purge = last_purge.is_none_or(|t| t.elapsed() >= day);
        if purge {
            last_purge = Some(std::time::Instant::now());
        }
        let r = tokio::task::spawn_blocking(move || -> Result<(), crate::store::StoreError> {
            store.checkpoint_now()?;
            if purge {
                store.purge_expired(now)?;
                store.sweep_blobs(Duration::from_secs(3600))?;
            }
            Ok(())
        })
        .await;
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "maintenance failed"),
            Err(e) => tracing::error!(error = %e, "maintenance task panicked"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own_record(dir: &std::path::Path) -> ProviderRecord {
        let domain = crate::pec::address::Domain::parse("pec.alfa.test").unwrap();
        let report = crate::pki::init_dir(dir, &domain, None, false).unwrap();
        let config = crate::config::Config::load(&report.config).unwrap();
        let signer = config.load_signer().unwrap();
        ProviderRecord::for_this_provider(&config, signer.certificate()).unwrap()
    }

    #[test]
    fn a_different_mail_receipt_in_our_index_entry_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let own = own_record(dir.path());
        let mut held = own.clone();
        held.mail_receipt = PecAddress::parse("ricevute@pec.alfa.test").unwrap();
        let index = ProviderIndex::new(vec![held]).unwrap();
        assert_eq!(
            held_receipt_mailbox_mismatch(&index, &own),
            Some(PecAddress::parse("ricevute@pec.alfa.test").unwrap())
        );
        // Found by certificate even when the national index spells the dn differently.
        let mut renamed = index.records()[0].clone();
        renamed.dn = "providerName=Other Name,o=postacert".into();
        let index = ProviderIndex::new(vec![renamed]).unwrap();
        assert!(held_receipt_mailbox_mismatch(&index, &own).is_some());
    }

    #[test]
    fn an_agreeing_or_missing_entry_is_fine() {
        let dir = tempfile::tempdir().unwrap();
        let own = own_record(dir.path());
        let same = ProviderIndex::new(vec![own.clone()]).unwrap();
        assert_eq!(held_receipt_mailbox_mismatch(&same, &own), None);
        let empty = ProviderIndex::new(Vec::new()).unwrap();
        assert_eq!(held_receipt_mailbox_mismatch(&empty, &own), None);
    }
}
