//! What every TCP listener shares (SMTP, IMAP, POP3): the accept loop that stops on the
//! shutdown signal and survives accept errors; the [`ConnectionGate`] the gateway owns, one
//! for all listeners, enforcing `limits.max_connections_per_ip` (across all listeners),
//! `limits.network_connections` (CIDR → limit, most specific prefix wins),
//! `limits.max_connections_per_listener` and `limits.max_connections`, each count released
//! when its connection ends; the refusal of a connection over a limit ([`Refusal`]: as the
//! greeting on plain-text listeners, after the TLS handshake on implicit-TLS ones, never
//! plaintext before a handshake); and the mailbox login step the IMAP and POP3 drivers
//! share ([`login`]).
//!
//! Owns no protocol: each driver passes what to do with an admitted connection and the
//! text of its refusal. Untrusted input: the peer address only.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::pec::address::PecAddress;

/// Counts connections by key; a [`Slot`] releases its count on drop.
#[derive(Debug, Clone)]
pub struct Counter<K: Hash + Eq + Clone>(Arc<Mutex<HashMap<K, usize>>>);

/// One admitted connection's place in a [`Counter`].
pub struct Slot<K: Hash + Eq + Clone>(Counter<K>, K);

impl<K: Hash + Eq + Clone> Default for Counter<K> {
    fn default() -> Self {
        Self(Arc::default())
    }
}

impl<K: Hash + Eq + Clone> Counter<K> {
    /// A slot for `k`, or `None` when `k` already holds `max`.
    pub fn acquire(&self, k: K, max: usize) -> Option<Slot<K>> {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(k.clone()).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Slot(self.clone(), k))
    }

    /// The count held by `k`.
    pub fn get(&self, k: &K) -> usize {
        let m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.get(k).copied().unwrap_or(0)
    }
}

impl<K: Hash + Eq + Clone> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut m = (self.0).0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.1) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.1);
            }
        }
    }
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crowded {
    /// Its address (or its network, `limits.network_connections`) holds its limit.
    Source,
    /// The listener (`limits.max_connections_per_listener`) or the whole gateway
    /// (`limits.max_connections`) is full.
    Busy,
}

/// The connection limits every listener shares (SMTP, IMAP, POP3), owned by the gateway:
/// one per-source counter across all listeners (`limits.max_connections_per_ip`, or the
/// limit of the most specific network of `limits.network_connections` containing the
/// address, counted for the whole network) and the total (`limits.max_connections`).
#[derive(Debug)]
pub struct ConnectionGate {
    per_source: Counter<Source>,
    total: Counter<()>,
    max_per_ip: usize,
    max_total: usize,
    /// Per-listener cap applied by each [`accept_loop`] to its own counter.
    pub max_per_listener: usize,
    /// Most specific prefix first.
    networks: Vec<(ipnet::IpNet, usize)>,
    /// Refusals being delivered over TLS (handshake, then the refusal); past
    /// [`MAX_REFUSALS_IN_FLIGHT`] a refused connection is just closed.
    refusing: Arc<tokio::sync::Semaphore>,
}

/// Refused connections on implicit-TLS listeners given a handshake and a refusal at the
/// same time; more are closed without a word (a refusal must not cost unbounded CPU).
pub const MAX_REFUSALS_IN_FLIGHT: usize = 64;

/// How long a refused implicit-TLS connection may take for its handshake and refusal.
pub const REFUSAL_TIMEOUT: Duration = Duration::from_secs(10);

/// What a connection is counted under for the per-source limit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Source {
    Ip(IpAddr),
    Net(ipnet::IpNet),
}

/// An admitted connection's places in the counters; released on drop.
pub struct Admission {
    _source: Slot<Source>,
    _listener: Slot<()>,
    _total: Slot<()>,
    /// The listener's open-connections gauge, decremented when the connection ends.
    open: Option<prometheus::IntGauge>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        if let Some(g) = &self.open {
            g.dec();
        }
    }
}

impl ConnectionGate {
    /// `networks`: CIDR → limit (connections from the whole network together).
    pub fn new(
        max_per_ip: usize,
        max_per_listener: usize,
        max_total: usize,
        networks: impl IntoIterator<Item = (ipnet::IpNet, usize)>,
    ) -> Self {
        let mut networks: Vec<(ipnet::IpNet, usize)> =
            networks.into_iter().map(|(n, l)| (n.trunc(), l)).collect();
        networks.sort_by_key(|(n, _)| std::cmp::Reverse(n.prefix_len()));
        Self {
            per_source: Counter::default(),
            total: Counter::default(),
            max_per_ip,
            max_total,
            max_per_listener,
            networks,
            refusing: Arc::new(tokio::sync::Semaphore::new(MAX_REFUSALS_IN_FLIGHT)),
        }
    }

    /// From `[limits]`.
    pub fn from_config(l: &crate::config::LimitsConfig) -> Self {
        Self::new(
            l.max_connections_per_ip as usize,
            l.max_connections_per_listener as usize,
            l.max_connections as usize,
            l.network_connections.iter().map(|(n, m)| (*n, *m as usize)),
        )
    }

    /// The key and limit of `ip`: its most specific configured network, else itself.
    fn source(&self, ip: IpAddr) -> (Source, usize) {
        // An IPv4-mapped IPv6 peer (dual-stack socket) is the IPv4 address it maps.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match self.networks.iter().find(|(n, _)| n.contains(&ip)) {
            Some((n, max)) => (Source::Net(*n), *max),
            None => (Source::Ip(ip), self.max_per_ip),
        }
    }

    /// Admits a connection from `ip` on a listener whose own counter is `listener`.
    pub fn admit(&self, ip: IpAddr, listener: &Counter<()>) -> Result<Admission, Crowded> {
        let (key, max) = self.source(ip);
        let source = self.per_source.acquire(key, max).ok_or(Crowded::Source)?;
        let listener = listener
            .acquire((), self.max_per_listener)
            .ok_or(Crowded::Busy)?;
        let total = self
            .total
            .acquire((), self.max_total)
            .ok_or(Crowded::Busy)?;
        Ok(Admission {
            _source: source,
            _listener: listener,
            _total: total,
            open: None,
        })
    }

    /// Connections currently admitted, across all listeners.
    pub fn total(&self) -> usize {
        self.total.get(&())
    }
}

/// How a listener turns away a connection it does not admit.
#[derive(Clone)]
pub enum Refusal {
    /// Plain-text protocols (SMTP 25 and 587): the refusal is the greeting.
    Plain(fn(Crowded) -> &'static [u8]),
    /// Implicit TLS (465, 993, 995): nothing may be written before the handshake, so the
    /// handshake is completed (within [`REFUSAL_TIMEOUT`]) and the refusal sent over TLS;
    /// when [`MAX_REFUSALS_IN_FLIGHT`] are already under way the connection is just closed.
    AfterHandshake(Arc<rustls::ServerConfig>, fn(Crowded) -> &'static [u8]),
}

/// Completes when the server is shutting down (`stopping` turns true); never if its
/// signal is gone. Sessions select on it while they wait for their client.
pub async fn shutting_down(stopping: &mut watch::Receiver<bool>) {
    if stopping.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Accepts connections until `shutdown` turns true. A connection the `gate` does not admit
/// gets its `refusal` and is closed; an admitted one is handed to `admit` with its
/// admission, which the connection task must hold until it ends.
pub async fn accept_loop(
    listener: TcpListener,
    protocol: &'static str,
    gate: Arc<ConnectionGate>,
    refusal: Refusal,
    mut shutdown: watch::Receiver<bool>,
    mut admit: impl FnMut(TcpStream, SocketAddr, Admission),
) {
    let this_listener: Counter<()> = Counter::default();
    let open = crate::ops::metrics::connections(protocol);
    crate::ops::health::listener_running(protocol, true);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => break,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, protocol, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        match gate.admit(peer.ip(), &this_listener) {
            Ok(mut a) => {
                open.inc();
                a.open = Some(open.clone());
                admit(stream, peer, a)
            }
            Err(why) => {
                tracing::info!(%peer, protocol, ?why, "connection refused: too many connections");
                refuse(stream, &gate, &refusal, why);
            }
        }
    }
    crate::ops::health::listener_running(protocol, false);
}

/// The TLS handshake of a connection on `listener`, within `timeout`; a failure is counted
/// in the metrics (`pecd_tls_handshake_failures_total`).
pub async fn tls_accept<IO>(
    listener: &str,
    tls: Arc<rustls::ServerConfig>,
    stream: IO,
    timeout: Duration,
) -> std::io::Result<tokio_rustls::server::TlsStream<IO>>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let r = match tokio::time::timeout(timeout, tokio_rustls::TlsAcceptor::from(tls).accept(stream))
        .await
    {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "TLS handshake timed out",
        )),
    };
    if r.is_err() {
        crate::ops::metrics::tls_failure(listener);
    }
    r
}

fn refuse(stream: TcpStream, gate: &ConnectionGate, refusal: &Refusal, why: Crowded) {
    // Every refusal task holds a permit, so refused connections cost bounded memory.
    let Ok(permit) = gate.refusing.clone().try_acquire_owned() else {
        return; // dropped: closed without a word
    };
    let refusal = refusal.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let _ = tokio::time::timeout(REFUSAL_TIMEOUT, async move {
            match refusal {
                Refusal::Plain(text) => {
                    let mut s = stream;
                    s.write_all(text(why)).await?;
                    s.shutdown().await
                }
                Refusal::AfterHandshake(tls, text) => {
                    let mut s = tokio_rustls::TlsAcceptor::from(tls).accept(stream).await?;
                    s.write_all(text(why)).await?;
                    s.shutdown().await
                }
            }
        })
        .await;
    });
}

/// What a client logs in with on IMAP and POP3.
pub enum Credentials {
    /// User name and password (LOGIN, USER/PASS, SASL PLAIN).
    Password(String, String),
    /// SASL EXTERNAL: the TLS client certificate chain (a smart card) and the mailbox the
    /// client named, if any.
    Card(Vec<openssl::x509::X509>, Option<String>),
}

/// A logged-in session: its mailbox, the credential generation it must keep seeing
/// ([`crate::gateway::CredentialEpochs`]) and its per-user connection slot (released
/// when this is dropped).
pub struct LoggedIn {
    pub user: String,
    epoch: u64,
    _slot: Slot<String>,
}

impl LoggedIn {
    /// The mailbox's password changed (or its card was removed, or it was deleted)
    /// since this login: the session must end.
    pub fn revoked(&self, gw: &crate::gateway::Gateway) -> bool {
        gw.credentials.current(&self.user) != self.epoch
    }
}

/// The outcome of a mailbox login on a listener that limits connections per user.
pub enum Login {
    /// Wrong credentials (or a lockout); the failure delay has already been served.
    Failed,
    /// Right credentials, but the user already has the maximum number of connections.
    TooManyConnections,
    /// The credentials could not be checked now (the store failed): try again later.
    Unavailable,
    /// The right password, but provisional: the notice says where to change it.
    MustChangePassword(String),
    Ok(LoggedIn),
}

/// How a mailbox-access session answers a login (IMAP and POP3 say it differently).
pub trait LoginAnswers {
    /// Granted as `user`, or refused as invalid (`None`).
    fn auth_result(&mut self, user: Option<String>);
    /// Right credentials, too many sessions for the mailbox.
    fn auth_too_many(&mut self);
    /// The right password, but provisional: `notice` says where to change it.
    fn auth_must_change(&mut self, notice: &str);
    /// The credentials could not be checked now: a temporary failure.
    fn auth_unavailable(&mut self);
}

/// Answers `l` in `session`; the logged-in state when it succeeded.
pub fn answer_login(session: &mut impl LoginAnswers, l: Login) -> Option<LoggedIn> {
    match l {
        Login::Failed => session.auth_result(None),
        Login::TooManyConnections => session.auth_too_many(),
        Login::Unavailable => session.auth_unavailable(),
        Login::MustChangePassword(notice) => session.auth_must_change(&notice),
        Login::Ok(l) => {
            session.auth_result(Some(l.user.clone()));
            return Some(l);
        }
    }
    None
}

/// Checks a login for the IMAP and POP3 drivers: the password (through the access
/// point's limiter and argon2 pool) or the smart card, then the per-user connection limit.
/// A failure is logged and answered only after `failure_delay`.
pub async fn login(
    gw: &std::sync::Arc<crate::gateway::Gateway>,
    per_user: &Counter<String>,
    creds: Credentials,
    peer: SocketAddr,
    protocol: &str,
    failure_delay: Duration,
    max_per_user: usize,
) -> Login {
    use crate::pipeline::access::LoginCheck;
    let epoch_of = |name: &str| {
        PecAddress::parse(name)
            .ok()
            .map(|a| gw.credentials.current(&a.to_string()))
    };
    // The generation is read before the credentials are checked: a change racing with
    // this login ends the new session too.
    let (before, label, check) = match creds {
        Credentials::Password(user, pass) => {
            let before = epoch_of(&user);
            let check =
                crate::pipeline::access::authenticate(gw, user.clone(), pass, peer, protocol).await;
            (before, user, check)
        }
        Credentials::Card(chain, authzid) => {
            let before = authzid.as_deref().and_then(epoch_of);
            let label = authzid.clone().unwrap_or_else(|| "(smart card)".into());
            let check =
                crate::pipeline::card_login::authenticate_card(gw, chain, authzid, peer, protocol)
                    .await;
            (before, label, check)
        }
    };
    match check {
        LoginCheck::Failed => {
            tracing::warn!(%peer, user = %label, protocol, "login failed");
            tokio::time::sleep(failure_delay).await;
            Login::Failed
        }
        LoginCheck::MustChangePassword { notice, .. } => Login::MustChangePassword(notice),
        LoginCheck::Unavailable => Login::Unavailable,
        // Counted per mailbox, whatever case the login used.
        LoginCheck::Granted(user) => match per_user.acquire(user.to_lowercase(), max_per_user) {
            Some(slot) => Login::Ok(LoggedIn {
                epoch: before.unwrap_or_else(|| gw.credentials.current(&user)),
                user,
                _slot: slot,
            }),
            None => Login::TooManyConnections,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_count_and_release() {
        let c: Counter<&str> = Counter::default();
        let a = c.acquire("x", 2).unwrap();
        let _b = c.acquire("x", 2).unwrap();
        assert!(c.acquire("x", 2).is_none());
        assert!(c.acquire("y", 2).is_some());
        drop(a);
        assert!(c.acquire("x", 2).is_some());
    }

    fn net(s: &str) -> ipnet::IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn the_most_specific_network_wins_and_counts_the_whole_network() {
        let gate = ConnectionGate::new(
            2,
            1000,
            1000,
            [
                (net("10.0.0.0/8"), 5),
                (net("10.1.2.0/24"), 3),
                (net("192.0.2.7/32"), 300),
            ],
        );
        let l = Counter::default();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // A NAT address with its own limit takes hundreds.
        let nat: Vec<_> = (0..300)
            .map(|_| gate.admit(ip("192.0.2.7"), &l).unwrap())
            .collect();
        assert_eq!(gate.admit(ip("192.0.2.7"), &l).err(), Some(Crowded::Source));
        // Unlisted addresses keep max_connections_per_ip.
        let _o: Vec<_> = (0..2)
            .map(|_| gate.admit(ip("192.0.2.8"), &l).unwrap())
            .collect();
        assert!(gate.admit(ip("192.0.2.8"), &l).is_err());
        // The /24 counts all its addresses together, and apart from the rest of the /8.
        let _a = gate.admit(ip("10.1.2.1"), &l).unwrap();
        let _b = gate.admit(ip("10.1.2.2"), &l).unwrap();
        let _c = gate.admit(ip("10.1.2.3"), &l).unwrap();
        assert!(gate.admit(ip("10.1.2.4"), &l).is_err());
        let _d: Vec<_> = (0..5)
            .map(|i| gate.admit(ip(&format!("10.9.0.{i}")), &l).unwrap())
            .collect();
        assert!(gate.admit(ip("10.200.0.1"), &l).is_err());
        // IPv4-mapped IPv6 peers count as their IPv4 address.
        assert!(gate.admit(ip("::ffff:192.0.2.8"), &l).is_err());
        assert_eq!(gate.total(), 300 + 2 + 3 + 5);
        drop(nat);
        assert_eq!(gate.total(), 10);
    }

    #[test]
    fn listener_and_total_caps_refuse_as_busy_and_release() {
        let gate = ConnectionGate::new(100, 2, 3, []);
        let (l1, l2) = (Counter::default(), Counter::default());
        let ip = |n: u8| IpAddr::from([127, 0, 0, n]);
        let a = gate.admit(ip(1), &l1).unwrap();
        let _b = gate.admit(ip(2), &l1).unwrap();
        assert_eq!(
            gate.admit(ip(3), &l1).err(),
            Some(Crowded::Busy),
            "listener full"
        );
        let _c = gate.admit(ip(3), &l2).unwrap();
        assert_eq!(
            gate.admit(ip(4), &l2).err(),
            Some(Crowded::Busy),
            "gateway full"
        );
        // A refused attempt leaves no count behind.
        assert_eq!(gate.total(), 3);
        drop(a);
        assert!(gate.admit(ip(4), &l2).is_ok());
    }
}
