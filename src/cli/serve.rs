//! `pecd serve [--config FILE]`: runs the gateway.
//!
//! With no `--config` and no `./pecd-data/pecd.toml`, the first run creates `./pecd-data/`
//! (dev PKI, config for the demo domain, a demo mailbox with a random password) and prints
//! how to connect. Then it opens the store, starts the listeners that are implemented and
//! configured, the local delivery worker and the maintenance task (trace checkpoints,
//! 30-month retention, blob sweep), and runs until SIGINT/SIGTERM.
//!
//! With `[store] standby = true` (PostgreSQL and S3), a node whose store another node
//! writes waits, listening on nothing, and takes over when that node is gone; a node
//! that finds the store taken over stops at once with exit status 75.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use pecd::config::{Config, DEFAULT_CONFIG_PATH};
use pecd::gateway::Gateway;
use pecd::pec::address::{Domain, PecAddress};
use pecd::store::NewMailbox;
use pecd::store::mailbox::Password;

/// The demo domain of the embedded default.
pub const DEMO_DOMAIN: &str = "pec.demo.test";
/// Where the first run writes the demo credentials (mode 0600).
const DEMO_CREDENTIALS: &str = "demo-credentials.txt";

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Configuration file; default ./pecd-data/pecd.toml, created on first run.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let path = match args.config {
        Some(p) => p,
        None => {
            let p = PathBuf::from(DEFAULT_CONFIG_PATH);
            if !p.exists() {
                first_run(&p)?;
            }
            p
        }
    };
    let config =
        Config::load(&path).with_context(|| format!("configuration {}", path.display()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let served = rt.block_on(serve(config))?;
    if served == Served::StoppedWaiting {
        // The standby's wait runs on a blocking thread that only the database ends.
        rt.shutdown_background();
    }
    Ok(ExitCode::SUCCESS)
}

/// How `serve` ended.
#[derive(Debug, PartialEq, Eq)]
enum Served {
    /// Stopped by a signal after serving.
    Stopped,
    /// Stopped by a signal while a standby, before it served anything.
    StoppedWaiting,
}

/// Exit status of a node that lost the store to another (EX_TEMPFAIL): systemd's
/// `Restart=on-failure` starts it again, as a standby.
const EXIT_DEPOSED: i32 = 75;

fn random_password() -> anyhow::Result<String> {
    let mut b = [0u8; 12];
    openssl::rand::rand_bytes(&mut b).context("random password")?;
    Ok(hex::encode(b))
}

/// Creates ./pecd-data with a dev PKI, a config, the demo mailbox and the service mailbox.
fn first_run(config_path: &Path) -> anyhow::Result<()> {
    let dir = config_path.parent().unwrap_or(Path::new("."));
    let domain = Domain::parse(DEMO_DOMAIN).context("demo domain")?;
    let report = pecd::pki::init_dir(dir, &domain, None, false)
        .with_context(|| format!("initialising {}", dir.display()))?;
    let config = Config::load(&report.config).context("the generated configuration")?;
    let gw = Gateway::open(config, pecd::clock::system()).context("opening the new store")?;
    let demo = PecAddress::parse(&format!("demo@{DEMO_DOMAIN}")).context("demo address")?;
    let password = random_password()?;
    gw.store
        .add_mailbox(NewMailbox {
            address: demo.clone(),
            password: Password::new(password.clone()),
            quota_bytes: None,
            options: Default::default(),
            // The developer who ran the first start is its owner: usable at once.
            provisional: false,
        })
        .context("creating the demo mailbox")?;
    let creds = dir.join(DEMO_CREDENTIALS);
    write_private(
        &creds,
        format!("mailbox  {demo}\npassword {password}\n").as_bytes(),
    )?;
    println!(
        "First run: created {} (dev PKI, configuration, demo mailbox).",
        dir.display()
    );
    println!("  demo mailbox  {demo}");
    println!("  password      {password}   (also in {})", creds.display());
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))?;
    f.sync_all()
        .with_context(|| format!("syncing {}", path.display()))?;
    Ok(())
}

/// The service mailbox (mailReceipt) receives take-charge receipts: it must exist.
fn ensure_service_mailbox(gw: &Gateway) -> anyhow::Result<()> {
    let addr = gw.config.provider.receipt_mailbox.clone();
    if gw.store.mailbox(&addr)?.is_none() {
        gw.store
            .add_mailbox(NewMailbox {
                address: addr.clone(),
                password: Password::new(random_password()?),
                quota_bytes: None,
                options: Default::default(),
                provisional: false,
            })
            .with_context(|| format!("creating the service mailbox {addr}"))?;
        tracing::info!(mailbox = %addr, "created the provider service mailbox (set its password with `pecd mailbox passwd`)");
    }
    Ok(())
}

async fn serve(config: Config) -> anyhow::Result<Served> {
    let config_dir = config
        .path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    // SIGTERM, SIGINT and SIGHUP are caught from before the start-up report on (their
    // default actions would end the process at once): a stop asked for as soon as the
    // server says it runs is a graceful one, and a reload is not lost. A standby waiting
    // for the store stops at once.
    #[cfg(unix)]
    let mut signals = Signals::catch();
    #[cfg(not(unix))]
    let mut signals = ();
    let Some(gw) = open_gateway(config, &mut signals).await? else {
        return Ok(Served::StoppedWaiting);
    };
    ensure_service_mailbox(&gw)?;
    let running = pecd::server::start(gw.clone()).await?;

    let domains: Vec<String> = gw
        .config
        .provider
        .domains
        .iter()
        .map(|d| d.to_string())
        .collect();
    println!(
        "pecd is running for {} ({})",
        domains.join(", "),
        gw.identity.name
    );
    for (name, addr) in &running.listeners {
        println!("  {name:<11} {addr}");
    }
    println!(
        "  dev CA      {}",
        config_dir.join("certs/ca.pem").display()
    );
    let creds = config_dir.join(DEMO_CREDENTIALS);
    if creds.exists() {
        println!("  demo login  see {}", creds.display());
    }
    if let Some(a) = running.addr("https") {
        let host = if a.ip().is_loopback() || a.ip().is_unspecified() {
            "localhost".to_string()
        } else {
            a.ip().to_string()
        };
        println!("  webmail     https://{host}:{}/", a.port());
    }
    if let Some(a) = running.addr("https_cns") {
        let host = if a.ip().is_loopback() || a.ip().is_unspecified() {
            "localhost".to_string()
        } else {
            a.ip().to_string()
        };
        println!("  smart card  https://{host}:{}/", a.port());
    }
    if let Some(a) = running.addr("smtps")
        && domains.iter().any(|d| d == DEMO_DOMAIN)
    {
        println!(
            "  try         swaks --server {a} --tls-on-connect --auth PLAIN --auth-user demo@{DEMO_DOMAIN} --from demo@{DEMO_DOMAIN} --to demo@{DEMO_DOMAIN}"
        );
    }
    if let pecd::store::BlobBackend::S3(s3) = &gw.config.blobs {
        println!(
            "  blobs       {} bucket {}{}",
            s3.endpoint,
            s3.bucket,
            if s3.prefix.is_empty() {
                String::new()
            } else {
                format!(" prefix {}", s3.prefix)
            }
        );
    }
    if gw.store.backend_name() == "postgres" {
        println!("  database    PostgreSQL {}", gw.store.location());
    }
    // Last line of the start-up report (tests wait for it).
    println!("  store       {}", gw.config.store.dir.display());

    wait_for_shutdown(&running, &gw.store, signals).await;
    tracing::info!("shutting down");
    running.shutdown().await;
    Ok(Served::Stopped)
}

/// Opens the gateway. With `[store] standby = true`, while another node writes the
/// store: says so, waits until it is gone and opens then (`None`: stopped by a signal
/// meanwhile).
async fn open_gateway(
    config: Config,
    signals: &mut Stops,
) -> anyhow::Result<Option<std::sync::Arc<Gateway>>> {
    // The writer last named: said once per writer, not at every look.
    let shown: std::sync::Arc<std::sync::Mutex<Option<String>>> = Default::default();
    // A standby's admin listener says it is alive and not ready (a load balancer or an
    // orchestrator must not take it for dead); closed when it takes over.
    let mut standby_admin = None;
    if config.store.standby
        && let Some(addr) = config.listen.admin
    {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listen.admin {addr}"))?;
        println!("  admin       {}", listener.local_addr()?);
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let gate = std::sync::Arc::new(pecd::listener::ConnectionGate::from_config(&config.limits));
        let task = tokio::spawn(pecd::ops::admin::serve_standby(
            listener,
            gate,
            shown.clone(),
            stopped,
        ));
        standby_admin = Some((stop, task));
    }
    loop {
        if config.store.standby {
            let options = config.store_options(pecd::clock::system(), None);
            let said = shown.clone();
            let mut wait = tokio::task::spawn_blocking(move || {
                pecd::store::wait_until_unlocked(&options, |who| {
                    let mut said = said.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(who) = who
                        && said.as_ref() != Some(&who)
                    {
                        println!(
                            "  standby     another node writes the store: {who}; waiting to take over"
                        );
                        tracing::info!(writer = %who, "standby: another node writes the store");
                        *said = Some(who);
                    }
                })
            });
            let waited = tokio::select! {
                r = &mut wait => r.context("the standby's wait")?,
                () = stop_asked(signals) => return Ok(None),
            };
            if let Err(e) = waited {
                // A setting pecd refuses (the URL, TLS) would be refused again: not waited on.
                if !matches!(&e, pecd::store::StoreError::Db(k) if k.is_transient()) {
                    return Err(e).context("the standby's wait for the store");
                }
                // 10 s: after a server restart the writer, which tries again every second,
                // takes its lock back first; a standby replaces a writer that is gone, not
                // one that lost its server for a moment.
                tracing::warn!(error = %e, "standby: cannot wait for the store now; trying again in 10 s");
                tokio::select! {
                    () = tokio::time::sleep(std::time::Duration::from_secs(10)) => {}
                    () = stop_asked(signals) => return Ok(None),
                }
                continue;
            }
        }
        let c = config.clone();
        let opened = tokio::task::spawn_blocking(move || Gateway::open(c, pecd::clock::system()))
            .await
            .context("opening the gateway")?;
        if opened.is_ok()
            && let Some((stop, task)) = standby_admin.take()
        {
            // Its address is free again for the node's own admin listener.
            let _ = stop.send(true);
            let _ = task.await;
        }
        match opened {
            Ok(gw) => {
                // Taken over while it opened (its session lost in between): its open-time
                // writes may already be stale; it must not serve.
                let store = gw.store.clone();
                if tokio::task::spawn_blocking(move || store.deposed())
                    .await
                    .unwrap_or(false)
                {
                    eprintln!(
                        "pecd: another node took the store over while this one opened it; stopping (exit status {EXIT_DEPOSED})"
                    );
                    std::process::exit(EXIT_DEPOSED);
                }
                if shown.lock().is_ok_and(|s| s.is_some()) {
                    tracing::warn!("standby: the store's writer is gone; this node takes over");
                }
                return Ok(Some(gw));
            }
            // Taken over while it opened: as when serving, stop with the status that
            // brings it back as a standby.
            Err(pecd::gateway::GatewayError::Store(pecd::store::StoreError::Db(e)))
                if e.is_deposed() =>
            {
                eprintln!(
                    "pecd: another node took the store over while this one opened it ({e}); stopping (exit status {EXIT_DEPOSED})"
                );
                std::process::exit(EXIT_DEPOSED);
            }
            // Another standby was quicker: wait for it in turn.
            Err(pecd::gateway::GatewayError::Store(pecd::store::StoreError::Locked { .. }))
                if config.store.standby => {}
            // The database failed in the middle of the takeover: a standby waits again
            // rather than end (a configuration or key problem still ends it).
            Err(pecd::gateway::GatewayError::Store(pecd::store::StoreError::Db(e)))
                if config.store.standby && e.is_transient() =>
            {
                tracing::warn!(error = %e, "standby: cannot open the store now; waiting again in 2 s");
                tokio::select! {
                    () = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
                    () = stop_asked(signals) => return Ok(None),
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(unix)]
type Stops = Signals;
#[cfg(not(unix))]
type Stops = ();

/// SIGTERM or SIGINT (Ctrl-C).
#[cfg(unix)]
async fn stop_asked(signals: &mut Signals) {
    tokio::select! {
        _ = received(&mut signals.term) => {}
        _ = received(&mut signals.int) => {}
    }
}

#[cfg(not(unix))]
async fn stop_asked(_: &mut ()) {
    let _ = tokio::signal::ctrl_c().await;
}

/// Stops the process at once when another node took the store over ([`pecd::store::Store::deposed`]):
/// nothing commits here any more, and work done from memory (a relay in flight) would
/// only be done twice. Checked twice a second.
async fn deposed(store: &pecd::store::Store) {
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        // It may connect to the database: not on a runtime thread.
        let s = store.clone();
        if tokio::task::spawn_blocking(move || s.deposed())
            .await
            .unwrap_or(false)
        {
            tracing::error!(
                "another node took the store over while this one was cut off from the database: stopping now"
            );
            eprintln!(
                "pecd: another node took the store over while this one was cut off from the database; stopping (exit status {EXIT_DEPOSED})"
            );
            std::process::exit(EXIT_DEPOSED);
        }
    }
}

/// The signals `pecd serve` answers, each caught once (`None` where the handler could
/// not be installed: that signal keeps its default action).
#[cfg(unix)]
struct Signals {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
    hup: Option<tokio::signal::unix::Signal>,
}

#[cfg(unix)]
impl Signals {
    fn catch() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        Self {
            term: signal(SignalKind::terminate()).ok(),
            int: signal(SignalKind::interrupt()).ok(),
            hup: signal(SignalKind::hangup()).ok(),
        }
    }
}

/// Receives `signal`, or never when it is not caught (or no longer can be: then it is
/// dropped, so that a closed stream is not taken for a signal again and again).
#[cfg(unix)]
async fn received(signal: &mut Option<tokio::signal::unix::Signal>) {
    if let Some(s) = signal {
        if s.recv().await.is_some() {
            return;
        }
        *signal = None;
    }
    std::future::pending().await
}

/// Serves until SIGTERM or SIGINT (Ctrl-C); each SIGHUP reloads the TLS certificate and
/// the CRLs ([`pecd::server::Running::reload`]).
#[cfg(unix)]
async fn wait_for_shutdown(
    running: &pecd::server::Running,
    store: &pecd::store::Store,
    mut signals: Signals,
) {
    loop {
        tokio::select! {
            _ = received(&mut signals.term) => return,
            _ = received(&mut signals.int) => return,
            () = deposed(store) => return,
            _ = received(&mut signals.hup) => {
                for outcome in running.reload() {
                    match outcome {
                        Ok(what) => tracing::info!("SIGHUP: {what}"),
                        Err(why) => tracing::error!("SIGHUP: {why}"),
                    }
                }
            }
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_shutdown(_: &pecd::server::Running, store: &pecd::store::Store, _: ()) {
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = deposed(store) => {}
    }
}
