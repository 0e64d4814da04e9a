//! The tokio driver of the `imaps` listener: accepts connections, applies the per-IP and
//! per-user connection limits, does implicit TLS (RFC 8314), times out silent clients
//! (RFC 3501 §5.4: at least 30 minutes once authenticated; IDLE is re-armed by clients
//! every 29 minutes), and performs the [`Action`]s of the sans-IO [`Session`]:
//! password checks through [`crate::pipeline::access::authenticate`] (argon2 off the
//! executor, failures traced) and store commands on the blocking pool.
//!
//! Config keys read (through [`ImapListenerConfig::from_config`]): `limits.max_message_bytes`
//! (APPEND literal), `limits.max_connections_per_ip`, `limits.command_timeout_secs`
//! (before login).

use crate::listener::{Counter, Credentials, LoggedIn, answer_login, login};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, watch};

use super::Limits;
use super::session::{Action, Session};
use crate::gateway::Gateway;
use crate::store::MailboxChange;

/// The default [`ImapListenerConfig::idle_poll`].
pub const IDLE_FALLBACK_POLL: Duration = Duration::from_secs(60);

/// How the IMAP listener behaves.
#[derive(Debug, Clone)]
pub struct ImapListenerConfig {
    pub tls: Arc<rustls::ServerConfig>,
    pub limits: Limits,
    /// Silence allowed before login.
    pub login_timeout: Duration,
    /// Silence allowed once logged in (and during IDLE): 30 minutes by RFC 3501 §5.4.
    pub session_timeout: Duration,
    /// How often an IDLE-ing session checks its folder record anyway: a fallback only,
    /// since the store tells IDLE of every committed change at once.
    pub idle_poll: Duration,
    /// The connection limits shared by every listener (the gateway's).
    pub gate: Arc<crate::listener::ConnectionGate>,
    /// Simultaneous sessions of one mailbox (clients open several: 10 is generous).
    pub max_connections_per_user: usize,
    /// Delay before answering a failed login.
    pub auth_failure_delay: Duration,
}

impl ImapListenerConfig {
    /// The listener configuration from the gateway's config and the TLS server config.
    pub fn from_config(gw: &Gateway, tls: Arc<rustls::ServerConfig>) -> Self {
        let l = &gw.config.limits;
        Self {
            tls,
            limits: Limits {
                max_literal_bytes: u32::try_from(l.max_message_bytes).unwrap_or(u32::MAX),
                ..Limits::default()
            },
            login_timeout: Duration::from_secs(l.command_timeout_secs),
            session_timeout: Duration::from_secs(30 * 60),
            idle_poll: IDLE_FALLBACK_POLL,
            gate: gw.connections.clone(),
            max_connections_per_user: 10,
            auth_failure_delay: Duration::from_secs(1),
        }
    }
}

/// Serves the `imaps` listener until `shutdown` becomes true.
pub async fn serve(
    listener: TcpListener,
    cfg: ImapListenerConfig,
    gw: Arc<Gateway>,
    shutdown: watch::Receiver<bool>,
) {
    let cfg = Arc::new(cfg);
    let per_user: Counter<String> = Counter::default();
    let conn_shutdown = shutdown.clone();
    // RFC 5530 UNAVAILABLE, over TLS: nothing is written before the handshake.
    let refusal = crate::listener::Refusal::AfterHandshake(cfg.tls.clone(), |_| {
        b"* BYE [UNAVAILABLE] Too many connections, try again later\r\n"
    });
    crate::listener::accept_loop(
        listener,
        "imap",
        cfg.gate.clone(),
        refusal,
        shutdown,
        move |stream, peer, slot| {
            let (cfg, gw, per_user, shutdown) = (
                cfg.clone(),
                gw.clone(),
                per_user.clone(),
                conn_shutdown.clone(),
            );
            tokio::spawn(async move {
                let _slot = slot;
                if let Err(e) = connection(stream, peer, &cfg, gw, per_user, shutdown).await {
                    tracing::debug!(%peer, error = %e, "IMAP connection ended with an error");
                }
            });
        },
    )
    .await;
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    cfg: &ImapListenerConfig,
    gw: Arc<Gateway>,
    per_user: Counter<String>,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let tls =
        crate::listener::tls_accept("imaps", cfg.tls.clone(), stream, cfg.login_timeout).await?;
    let chain = crate::tls::peer_chain(tls.get_ref().1);
    let mut session = Session::new(cfg.limits.clone(), true);
    if !chain.is_empty() {
        session.offer_external();
    }
    run(tls, session, chain, peer, cfg, gw, per_user, shutdown).await
}

/// Drives one session over an established (TLS) stream.
#[allow(clippy::too_many_arguments)]
async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    mut session: Session,
    chain: Vec<openssl::x509::X509>,
    peer: SocketAddr,
    cfg: &ImapListenerConfig,
    gw: Arc<Gateway>,
    per_user: Counter<String>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    let mut logged: Option<LoggedIn> = None;
    let (delay, max) = (cfg.auth_failure_delay, cfg.max_connections_per_user);
    let login_with = async |creds| login(&gw, &per_user, creds, peer, "imap", delay, max).await;
    loop {
        if let Some(l) = &logged
            && l.revoked(&gw)
        {
            // The password changed (or the mailbox went): this session ends at once.
            tracing::info!(%peer, user = %l.user, "IMAP session ended: the credentials changed");
            let _ = stream
                .write_all(b"* BYE [ALERT] The mailbox credentials changed: log in again\r\n")
                .await;
            let _ = stream.shutdown().await;
            return Ok(());
        }
        let action = session.next();
        let out = session.take_output();
        if !out.is_empty() {
            stream.write_all(&out).await?;
        }
        match action {
            Action::Close => {
                stream.flush().await?;
                let _ = stream.shutdown().await;
                return Ok(());
            }
            Action::Authenticate { user, pass } => {
                let l = login_with(Credentials::Password(user, pass)).await;
                logged = answer_login(&mut session, l);
            }
            Action::AuthenticateExternal { authzid } => {
                let l = login_with(Credentials::Card(chain.clone(), authzid)).await;
                logged = answer_login(&mut session, l);
            }
            Action::Execute => {
                let store = gw.store.clone();
                session = gw
                    .blocking(move || {
                        session.execute(&store);
                        session
                    })
                    .await;
            }
            Action::NeedInput | Action::Idle => {
                stream.flush().await?;
                let timeout = if logged.is_some() {
                    cfg.session_timeout
                } else {
                    cfg.login_timeout
                };
                let idle = matches!(action, Action::Idle);
                // Subscribed before the first check below, so no change falls between.
                let mut changes = idle.then(|| gw.store.subscribe_changes());
                // (An interval of zero would panic: a misconfigured one polls every ms.)
                let poll = if idle { cfg.idle_poll } else { timeout }.max(Duration::from_millis(1));
                let deadline = tokio::time::Instant::now() + timeout;
                // An interval, not a sleep re-armed on every wake, so a stream of changes
                // to other mailboxes cannot postpone the fallback check forever.
                let mut fallback =
                    tokio::time::interval_at(tokio::time::Instant::now() + poll, poll);
                // At IDLE start: report what happened since the last command.
                let mut wake = if idle { Wake::Poll } else { Wake::Nothing };
                loop {
                    if logged.as_ref().is_some_and(|l| l.revoked(&gw)) {
                        break;
                    }
                    if wake != Wake::Nothing {
                        let store = gw.store.clone();
                        session = gw
                            .blocking(move || {
                                match wake {
                                    Wake::Changed => session.idle_changed(&store),
                                    _ => session.idle_refresh(&store),
                                }
                                session
                            })
                            .await;
                        let out = session.take_output();
                        if !out.is_empty() {
                            stream.write_all(&out).await?;
                            stream.flush().await?;
                        }
                    }
                    tokio::select! {
                        r = stream.read(&mut buf) => {
                            let n = r?;
                            if n == 0 {
                                return Ok(());
                            }
                            session.feed(&buf[..n]);
                            break;
                        }
                        c = next_change(&mut changes) => {
                            wake = relevant(&session, c, &mut changes);
                        }
                        _ = fallback.tick() => {
                            wake = if idle { Wake::Poll } else { Wake::Nothing };
                        }
                        _ = shutdown.changed() => {
                            let _ = stream.write_all(b"* BYE Server shutting down\r\n").await;
                            let _ = stream.shutdown().await;
                            return Ok(());
                        }
                    }
                    if tokio::time::Instant::now() >= deadline {
                        let bye = session.timeout();
                        let _ = stream.write_all(&bye).await;
                        let _ = stream.shutdown().await;
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// Why an IDLE-ing session wakes up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    Nothing,
    /// A committed change concerns the selected folder: reload it.
    Changed,
    /// The fallback interval passed: check the folder record.
    Poll,
}

/// The next store change, or never when not subscribed.
async fn next_change(
    changes: &mut Option<broadcast::Receiver<MailboxChange>>,
) -> Result<MailboxChange, broadcast::error::RecvError> {
    match changes {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Whether `first` and the changes already queued behind it concern the session (one
/// reload serves a burst of them).
fn relevant(
    session: &Session,
    first: Result<MailboxChange, broadcast::error::RecvError>,
    changes: &mut Option<broadcast::Receiver<MailboxChange>>,
) -> Wake {
    let mut wake = Wake::Nothing;
    let mut next = Some(first);
    while let Some(c) = next.take() {
        match c {
            Ok(c) if session.watches(&c) => wake = Wake::Changed,
            Ok(_) => {}
            // Fell behind: anything may have changed.
            Err(broadcast::error::RecvError::Lagged(_)) => wake = Wake::Changed,
            // The store is closing: the fallback poll is all that is left.
            Err(broadcast::error::RecvError::Closed) => {
                *changes = None;
                return wake;
            }
        }
        if let Some(rx) = changes.as_mut() {
            next = match rx.try_recv() {
                Ok(c) => Some(Ok(c)),
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    Some(Err(broadcast::error::RecvError::Lagged(n)))
                }
                Err(_) => None,
            };
        }
    }
    wake
}

impl crate::listener::LoginAnswers for Session {
    fn auth_result(&mut self, user: Option<String>) {
        Session::auth_result(self, user);
    }
    fn auth_too_many(&mut self) {
        self.auth_limited();
    }
    fn auth_unavailable(&mut self) {
        Session::auth_unavailable(self);
    }
    fn auth_must_change(&mut self, notice: &str) {
        Session::auth_must_change(self, notice);
    }
}
