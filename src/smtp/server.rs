//! The thin tokio driver around [`Session`]: accepts connections, applies per-IP
//! connection limits and command timeouts, performs implicit TLS or STARTTLS, and hands
//! every decision ([`Event::Authenticate`], [`Event::Message`]) to a [`Backend`].
//!
//! Owns sockets and timers only; protocol logic stays in the session, PEC logic in the
//! backend (the access and incoming points). Reads are bounded (8 KiB at a time); DATA is
//! streamed: the session hands out chunks of [`DATA_CHUNK_BYTES`], appended to a
//! [`Spool`] file under the role's in-flight budget (452 4.3.1 past it), and the finished
//! message is read back into memory only under the role's processing budget
//! ([`DataLimits`]). Connections are admitted by the gateway's
//! [`ConnectionGate`](crate::listener::ConnectionGate). Before checking
//! credentials it asks the backend whether logins from this peer / for this account are
//! locked out ([`Backend::auth_refusal`]); refusals the session decides by itself are
//! passed to [`Backend::refused`] (for the trace log), at most
//! [`MAX_REPORTED_REFUSALS`] per connection.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::listener::{Crowded, Refusal};
use crate::smtp::spool::{DATA_CHUNK_BYTES, DataLimits, Spool};

use super::session::{DialogueRefusal, Envelope, Event, Session, SessionConfig};

/// Refusals of one connection reported to [`Backend::refused`]; the rest are only logged,
/// so one connection cannot flood the trace log.
pub const MAX_REPORTED_REFUSALS: usize = 20;

/// The final answer to a message, sent as the reply to the DATA dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpReply {
    pub code: u16,
    pub enhanced: String,
    pub text: String,
    /// The reason in Italian for the user, when there is one (the access point's formal
    /// refusals); SMTP clients see only `text`, the webmail shows this.
    pub motivo: Option<String>,
}

impl SmtpReply {
    pub fn new(code: u16, enhanced: &str, text: impl Into<String>) -> Self {
        Self {
            code,
            enhanced: enhanced.into(),
            text: text.into(),
            motivo: None,
        }
    }

    pub fn with_motivo(mut self, motivo: impl Into<String>) -> Self {
        self.motivo = Some(motivo.into());
        self
    }
}

/// A backend's answer to an AUTH attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthAnswer {
    /// Logged in as this canonical mailbox address.
    Granted(String),
    /// Wrong credentials: 535 5.7.8 after the failure delay.
    Invalid,
    /// Not logged in, with this reply (e.g. a provisional password that must be changed
    /// first); counts as a failed attempt of the session.
    Refused(SmtpReply),
}

/// Where the session's decisions are taken.
pub trait Backend: Send + Sync + 'static {
    /// Checks credentials.
    fn authenticate(
        &self,
        username: String,
        password: String,
        peer: SocketAddr,
    ) -> impl Future<Output = AuthAnswer> + Send;
    /// Processes a complete message. Must return 250 only once the message is durable.
    fn message(
        &self,
        envelope: Envelope,
        peer: SocketAddr,
    ) -> impl Future<Output = SmtpReply> + Send;
    /// Checks a smart-card login (SASL EXTERNAL): the TLS client certificate `chain` for
    /// `authzid`, the mailbox the client named (if any). Not offered unless overridden.
    fn authenticate_card(
        &self,
        chain: Vec<openssl::x509::X509>,
        authzid: Option<String>,
        peer: SocketAddr,
    ) -> impl Future<Output = AuthAnswer> + Send {
        let _ = (chain, authzid, peer);
        std::future::ready(AuthAnswer::Invalid)
    }
    /// The credential generation of `user` now: a session whose generation changed since
    /// its login (password changed, card removed) must not send any more.
    fn credential_epoch(&self, user: &str) -> u64 {
        let _ = user;
        0
    }
    /// Asked before checking credentials: `Some(reply)` refuses the attempt unchecked
    /// (e.g. 454 4.7.0 while logins from `peer` or for `username` are locked out).
    fn auth_refusal(&self, username: &str, peer: SocketAddr) -> Option<SmtpReply> {
        let _ = (username, peer);
        None
    }
    /// A refusal the session decided by itself (already answered); e.g. for the trace log.
    fn refused(
        &self,
        refusal: DialogueRefusal,
        peer: SocketAddr,
    ) -> impl Future<Output = ()> + Send {
        let _ = (refusal, peer);
        std::future::ready(())
    }
}

/// How one listener behaves.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// The listener's name in the configuration (`smtp`, `submission`, `smtps`): the
    /// label of its metrics and readiness.
    pub name: &'static str,
    pub session: SessionConfig,
    /// TLS from the first byte (465) instead of STARTTLS.
    pub implicit_tls: bool,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Idle time allowed between commands (RFC 5321 §4.5.3.2 suggests minutes).
    pub command_timeout: Duration,
    /// The connection limits shared by every listener (the gateway's).
    pub gate: Arc<crate::listener::ConnectionGate>,
    /// The spool and byte budgets of this listener's role.
    pub data: Arc<DataLimits>,
    /// Delay before answering a failed AUTH (slows password guessing).
    pub auth_failure_delay: Duration,
}

/// How long the goodbye to a session may take when the server stops.
const SHUTDOWN_WRITE: Duration = Duration::from_secs(2);

/// Serves one listener until `shutdown` becomes true.
pub async fn serve<B: Backend>(
    listener: TcpListener,
    cfg: ListenerConfig,
    backend: Arc<B>,
    shutdown: watch::Receiver<bool>,
) {
    let cfg = Arc::new(cfg);
    let text = |why| match why {
        Crowded::Source => &b"421 4.7.0 Too many connections from your address\r\n"[..],
        Crowded::Busy => &b"421 4.7.0 Too many connections, try again later\r\n"[..],
    };
    // Implicit TLS (465): the 421 goes over TLS, never in clear before the handshake.
    let refusal = match (&cfg.tls, cfg.implicit_tls) {
        (Some(tls), true) => Refusal::AfterHandshake(tls.clone(), text),
        _ => Refusal::Plain(text),
    };
    let stopping = shutdown.clone();
    crate::listener::accept_loop(
        listener,
        cfg.name,
        cfg.gate.clone(),
        refusal,
        shutdown,
        move |stream, peer, slot| {
            let (cfg, backend, stopping) = (cfg.clone(), backend.clone(), stopping.clone());
            tokio::spawn(async move {
                let _slot = slot;
                if let Err(e) = connection(stream, peer, &cfg, &*backend, stopping).await {
                    tracing::info!(%peer, error = %e, "SMTP connection ended with an error");
                }
            });
        },
    )
    .await;
}

async fn connection<B: Backend>(
    stream: TcpStream,
    peer: SocketAddr,
    cfg: &ListenerConfig,
    backend: &B,
    mut stopping: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut conn = Conn {
        peer,
        cfg,
        backend,
        stopping: &mut stopping,
    };
    if cfg.implicit_tls {
        let Some(tls) = &cfg.tls else {
            return Err(std::io::Error::other(
                "implicit TLS listener without a certificate",
            ));
        };
        let tls_stream =
            crate::listener::tls_accept(cfg.name, tls.clone(), stream, cfg.command_timeout).await?;
        let chain = crate::tls::peer_chain(tls_stream.get_ref().1);
        let (mut session, greeting) = Session::new(cfg.session.clone(), true);
        session.stream_data(DATA_CHUNK_BYTES);
        if !chain.is_empty() {
            session.offer_external();
        }
        run(tls_stream, session, Some(greeting), chain, &mut conn)
            .await
            .map(|_| ())
    } else {
        let (mut session, greeting) = Session::new(cfg.session.clone(), false);
        session.stream_data(DATA_CHUNK_BYTES);
        let mut stream = stream;
        match run(&mut stream, session, Some(greeting), Vec::new(), &mut conn).await? {
            Outcome::Closed => Ok(()),
            Outcome::StartTls(mut session) => {
                let Some(tls) = &cfg.tls else { return Ok(()) };
                let tls_stream =
                    crate::listener::tls_accept(cfg.name, tls.clone(), stream, cfg.command_timeout)
                        .await?;
                session.tls_started();
                let chain = crate::tls::peer_chain(tls_stream.get_ref().1);
                if !chain.is_empty() {
                    session.offer_external();
                }
                run(tls_stream, *session, None, chain, &mut conn)
                    .await
                    .map(|_| ())
            }
        }
    }
}

enum Outcome {
    Closed,
    StartTls(Box<Session>),
}

/// What a connection's dialogue needs besides its stream and session, the same before
/// and after STARTTLS.
struct Conn<'a, B> {
    peer: SocketAddr,
    cfg: &'a ListenerConfig,
    backend: &'a B,
    /// Becomes true when the server stops.
    stopping: &'a mut watch::Receiver<bool>,
}

async fn run<S: AsyncRead + AsyncWrite + Unpin, B: Backend>(
    mut stream: S,
    mut session: Session,
    greeting: Option<Event>,
    chain: Vec<openssl::x509::X509>,
    conn: &mut Conn<'_, B>,
) -> std::io::Result<Outcome> {
    let (peer, cfg, backend) = (conn.peer, conn.cfg, conn.backend);
    let stopping = &mut *conn.stopping;
    let mut queue: std::collections::VecDeque<Event> = greeting.into_iter().collect();
    let mut buf = vec![0u8; 8192];
    let mut reported = 0usize;
    // The logged-in mailbox and its credential generation at login.
    let mut logged: Option<(String, u64)> = None;
    // The current transfer's spool file (dropped, with its budget, when it ends).
    let mut spool: Option<Spool> = None;
    // A chunk was not kept after the session had already finished the transfer.
    let mut spool_failed = false;
    loop {
        while let Some(ev) = queue.pop_front() {
            match ev {
                Event::Reply(bytes) => stream.write_all(&bytes).await?,
                Event::Close => {
                    stream.flush().await?;
                    let _ = stream.shutdown().await;
                    return Ok(Outcome::Closed);
                }
                Event::StartTls => {
                    stream.flush().await?;
                    return Ok(Outcome::StartTls(Box::new(session)));
                }
                Event::Authenticate { username, password } => {
                    if let Some(r) = backend.auth_refusal(&username, peer) {
                        tokio::time::sleep(cfg.auth_failure_delay).await;
                        queue.extend(session.auth_refused(r.code, &r.enhanced, &r.text));
                        continue;
                    }
                    let before = backend.credential_epoch(&username);
                    match backend.authenticate(username.clone(), password, peer).await {
                        AuthAnswer::Granted(user) => {
                            logged = Some((user.clone(), before));
                            queue.extend(session.auth_result(Some(user)))
                        }
                        AuthAnswer::Invalid => {
                            tracing::warn!(%peer, user = %username, "SMTP AUTH failed");
                            tokio::time::sleep(cfg.auth_failure_delay).await;
                            queue.extend(session.auth_result(None));
                        }
                        AuthAnswer::Refused(r) => {
                            queue.extend(session.auth_refused(r.code, &r.enhanced, &r.text));
                        }
                    }
                }
                Event::AuthenticateExternal { authzid } => {
                    let who = crate::cns::lockout_key(&chain, authzid.as_deref());
                    if let Some(r) = backend.auth_refusal(&who, peer) {
                        tokio::time::sleep(cfg.auth_failure_delay).await;
                        queue.extend(session.auth_refused(r.code, &r.enhanced, &r.text));
                        continue;
                    }
                    match backend
                        .authenticate_card(chain.clone(), authzid, peer)
                        .await
                    {
                        AuthAnswer::Granted(user) => queue.extend(session.auth_result(Some(user))),
                        AuthAnswer::Invalid => {
                            tracing::warn!(%peer, user = %who, "SMTP AUTH EXTERNAL failed");
                            tokio::time::sleep(cfg.auth_failure_delay).await;
                            queue.extend(session.auth_result(None));
                        }
                        AuthAnswer::Refused(r) => {
                            queue.extend(session.auth_refused(r.code, &r.enhanced, &r.text));
                        }
                    }
                }
                Event::Refused(r) => {
                    reported += 1;
                    if reported <= MAX_REPORTED_REFUSALS {
                        backend.refused(r, peer).await;
                    } else {
                        tracing::info!(
                            %peer,
                            code = r.code,
                            reason = %r.reason,
                            "SMTP refusal (not traced: too many on this connection)"
                        );
                    }
                }
                Event::DataChunk(chunk) => {
                    if let Err(e) = spool_chunk(&mut spool, &cfg.data, &chunk).await {
                        tracing::info!(%peer, error = %e, "DATA not kept: refusing the message");
                        spool = None;
                        spool_failed = !session.abort_data();
                    }
                }
                Event::DataDiscarded => spool = None,
                Event::Message(_)
                    if logged
                        .as_ref()
                        .is_some_and(|(u, e)| backend.credential_epoch(u) != *e) =>
                {
                    // The password changed (or the card was removed) since this login.
                    tracing::info!(%peer, "SMTP session ended: the credentials changed");
                    stream
                        .write_all(b"421 4.7.0 The mailbox credentials changed: log in again\r\n")
                        .await?;
                    stream.flush().await?;
                    let _ = stream.shutdown().await;
                    return Ok(Outcome::Closed);
                }
                Event::Message(mut envelope) => {
                    // Room to process first: only then is the message read back into
                    // memory, so waiting messages cost no memory.
                    let size = spool.as_ref().map_or(0, |s| s.len() as usize) + envelope.data.len();
                    let _permit = cfg.data.processing(size).await;
                    let kept = !std::mem::take(&mut spool_failed)
                        && unspool(spool.as_mut(), &mut envelope, peer).await;
                    let r = if kept {
                        backend.message(envelope, peer).await
                    } else {
                        no_storage()
                    };
                    // The file and its in-flight bytes are kept until the answer.
                    spool = None;
                    queue.extend(session.message_result(r.code, &r.enhanced, &r.text));
                }
            }
        }
        stream.flush().await?;
        if session.is_closed() {
            return Ok(Outcome::Closed);
        }
        // A server shutting down closes the session while it waits for the client (RFC
        // 5321 §3.8: 421): a message already received is processed and answered first; a
        // transfer still arriving is cut (nothing was accepted, the client tries again).
        // So idle sessions (another provider's cached connections) never hold it up.
        let read = tokio::select! {
            r = tokio::time::timeout(cfg.command_timeout, stream.read(&mut buf)) => r,
            () = crate::listener::shutting_down(stopping) => {
                // Bounded: a client that reads nothing must not hold the session open.
                let _ = tokio::time::timeout(SHUTDOWN_WRITE, async {
                    stream
                        .write_all(b"421 4.3.2 Service shutting down, closing connection\r\n")
                        .await?;
                    stream.flush().await
                })
                .await;
                return Ok(Outcome::Closed);
            }
        };
        let n = match read {
            Ok(r) => r?,
            Err(_) => {
                let _ = stream
                    .write_all(b"421 4.4.2 Timeout, closing connection\r\n")
                    .await;
                return Ok(Outcome::Closed);
            }
        };
        if n == 0 {
            return Ok(Outcome::Closed);
        }
        queue.extend(session.feed(&buf[..n]));
    }
}

/// Appends one chunk to the transfer's spool file, creating it at the first chunk.
async fn spool_chunk(
    spool: &mut Option<Spool>,
    limits: &Arc<DataLimits>,
    chunk: &[u8],
) -> Result<(), crate::smtp::spool::SpoolError> {
    let s = match spool {
        Some(s) => s,
        None => spool.insert(limits.create().await?),
    };
    s.append(chunk).await
}

/// Completes a streamed message: the rest after the chunks goes to the spool, and the
/// whole content back into `envelope.data`. False when it could not be kept.
async fn unspool(spool: Option<&mut Spool>, envelope: &mut Envelope, peer: SocketAddr) -> bool {
    let Some(s) = spool else { return true };
    let tail = std::mem::take(&mut envelope.data);
    if let Err(e) = s.append(&tail).await {
        tracing::info!(%peer, error = %e, "DATA not kept: refusing the message");
        return false;
    }
    match s.read_all().await {
        Ok(all) => {
            envelope.data = all;
            true
        }
        Err(e) => {
            tracing::error!(%peer, error = %e, "reading the DATA spool back");
            false
        }
    }
}

/// The answer to a message whose DATA could not be kept (RFC 3463 4.3.1).
fn no_storage() -> SmtpReply {
    SmtpReply::new(452, "4.3.1", "Insufficient system storage, try again later")
}
