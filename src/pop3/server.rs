//! The tokio driver of the `pop3s` listener: implicit TLS (RFC 8314), per-IP and per-user
//! connection limits, the inactivity timers ([`LOGIN_TIMEOUT`] before login, so idle
//! unauthenticated connections do not hold slots; RFC 1939 §3's ten minutes after), password
//! checks through [`crate::pipeline::access::authenticate`] and store work on the blocking
//! pool. Protocol decisions stay in [`super::session`].
//!
//! Config keys read (through [`Pop3ListenerConfig::from_config`]):
//! `limits.max_connections_per_ip`, `limits.command_timeout_secs`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::session::{Action, Session};
use crate::gateway::Gateway;
use crate::listener::{Counter, Credentials, LoggedIn, answer_login, login};

/// Silence allowed before login (TLS handshake included): short, because an
/// unauthenticated client has nothing to think about.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(60);
/// The inactivity timer once logged in: "at least 10 minutes" (RFC 1939 §3).
pub const MIN_SESSION_TIMEOUT: Duration = Duration::from_secs(600);

/// How the POP3 listener behaves.
#[derive(Debug, Clone)]
pub struct Pop3ListenerConfig {
    pub tls: Arc<rustls::ServerConfig>,
    /// Silence allowed in the AUTHORIZATION state (and for the TLS handshake).
    pub login_timeout: Duration,
    /// Silence allowed once logged in (≥ 10 minutes, RFC 1939 §3).
    pub timeout: Duration,
    /// The connection limits shared by every listener (the gateway's).
    pub gate: Arc<crate::listener::ConnectionGate>,
    pub max_connections_per_user: usize,
    pub auth_failure_delay: Duration,
}

impl Pop3ListenerConfig {
    pub fn from_config(gw: &Gateway, tls: Arc<rustls::ServerConfig>) -> Self {
        let l = &gw.config.limits;
        Self {
            tls,
            login_timeout: LOGIN_TIMEOUT.min(Duration::from_secs(l.command_timeout_secs)),
            timeout: Duration::from_secs(l.command_timeout_secs).max(MIN_SESSION_TIMEOUT),
            gate: gw.connections.clone(),
            max_connections_per_user: 4,
            auth_failure_delay: Duration::from_secs(1),
        }
    }
}

/// Serves the `pop3s` listener until `shutdown` becomes true.
pub async fn serve(
    listener: TcpListener,
    cfg: Pop3ListenerConfig,
    gw: Arc<Gateway>,
    shutdown: watch::Receiver<bool>,
) {
    let cfg = Arc::new(cfg);
    let per_user: Counter<String> = Counter::default();
    // RFC 3206 SYS/TEMP, over TLS: nothing is written before the handshake.
    let refusal = crate::listener::Refusal::AfterHandshake(cfg.tls.clone(), |_| {
        b"-ERR [SYS/TEMP] Too many connections, try again later\r\n"
    });
    crate::listener::accept_loop(
        listener,
        "pop3",
        cfg.gate.clone(),
        refusal,
        shutdown.clone(),
        move |stream, peer, slot| {
            let (cfg, gw, per_user) = (cfg.clone(), gw.clone(), per_user.clone());
            let stopping = shutdown.clone();
            tokio::spawn(async move {
                let _slot = slot;
                if let Err(e) = connection(stream, peer, &cfg, gw, per_user, stopping).await {
                    tracing::debug!(%peer, error = %e, "POP3 connection ended with an error");
                }
            });
        },
    )
    .await;
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    cfg: &Pop3ListenerConfig,
    gw: Arc<Gateway>,
    per_user: Counter<String>,
    mut stopping: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut stream =
        crate::listener::tls_accept("pop3s", cfg.tls.clone(), stream, cfg.login_timeout).await?;
    let chain = crate::tls::peer_chain(stream.get_ref().1);
    let mut session = Session::new(true);
    if !chain.is_empty() {
        session.offer_external();
    }
    let mut buf = vec![0u8; 8192];
    let mut logged: Option<LoggedIn> = None;
    let (delay, max) = (cfg.auth_failure_delay, cfg.max_connections_per_user);
    let login_with = async |creds| login(&gw, &per_user, creds, peer, "pop3", delay, max).await;
    loop {
        if let Some(l) = &logged
            && l.revoked(&gw)
        {
            // The password changed: the session ends without the UPDATE state (no
            // deletion takes effect, RFC 1939 §6).
            tracing::info!(%peer, user = %l.user, "POP3 session ended: the credentials changed");
            let _ = stream
                .write_all(b"-ERR [AUTH] The mailbox credentials changed: log in again\r\n")
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
            Action::NeedInput => {
                stream.flush().await?;
                let timeout = if session.is_authenticated() {
                    cfg.timeout
                } else {
                    cfg.login_timeout
                };
                let read = tokio::select! {
                    r = tokio::time::timeout(timeout, stream.read(&mut buf)) => r,
                    // Shutting down: the session ends without the UPDATE state (no
                    // deletion takes effect, RFC 1939 §6), as when the client goes away.
                    () = crate::listener::shutting_down(&mut stopping) => {
                        // Bounded: a client that reads nothing must not hold it open.
                        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
                            stream
                                .write_all(b"-ERR [SYS/TEMP] Server shutting down\r\n")
                                .await?;
                            stream.shutdown().await
                        })
                        .await;
                        return Ok(());
                    }
                };
                match read {
                    Ok(Ok(0)) => return Ok(()),
                    Ok(Ok(n)) => session.feed(&buf[..n]),
                    Ok(Err(e)) => return Err(e),
                    Err(_) => {
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

impl crate::listener::LoginAnswers for Session {
    fn auth_result(&mut self, user: Option<String>) {
        Session::auth_result(self, user);
    }
    fn auth_too_many(&mut self) {
        self.auth_in_use();
    }
    fn auth_unavailable(&mut self) {
        Session::auth_unavailable(self);
    }
    fn auth_must_change(&mut self, notice: &str) {
        Session::auth_must_change(self, notice);
    }
}
