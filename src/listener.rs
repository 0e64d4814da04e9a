//! What every TCP listener shares (SMTP, IMAP, POP3): the accept loop that stops on the
//! shutdown signal and survives accept errors, and the connection counters that enforce
//! the per-IP (and per-user) limits, released when a connection ends; and the mailbox
//! login step the IMAP and POP3 drivers share ([`login`]).
//!
//! Owns no protocol: each driver passes what to do with an admitted connection.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

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

/// Accepts connections until `shutdown` turns true. A connection over the per-IP limit
/// gets `refusal` (if any) and is closed; an admitted one is handed to `admit` with its
/// slot, which the connection task must hold until it ends.
pub async fn accept_loop(
    listener: TcpListener,
    protocol: &'static str,
    max_per_ip: usize,
    refusal: Option<&'static [u8]>,
    mut shutdown: watch::Receiver<bool>,
    mut admit: impl FnMut(TcpStream, SocketAddr, Slot<IpAddr>),
) {
    let per_ip: Counter<IpAddr> = Counter::default();
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
        let Some(slot) = per_ip.acquire(peer.ip(), max_per_ip) else {
            tracing::warn!(%peer, protocol, "too many connections from this address");
            if let Some(r) = refusal {
                tokio::spawn(async move {
                    let mut s = stream;
                    let _ = s.write_all(r).await;
                });
            }
            continue;
        };
        admit(stream, peer, slot);
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
}

/// The outcome of a mailbox login on a listener that limits connections per user.
pub enum Login {
    /// Wrong credentials (or a lockout); the failure delay has already been served.
    Failed,
    /// Right credentials, but the user already has the maximum number of connections.
    TooManyConnections,
    /// Logged in: the canonical address and the user's connection slot, held for the session.
    Ok(String, Slot<String>),
}

/// Checks a login for the IMAP and POP3 drivers: the password (through the access point's
/// limiter and argon2 pool), then the per-user connection limit. A failure is logged and
/// answered only after `failure_delay`.
pub async fn login(
    gw: &std::sync::Arc<crate::gateway::Gateway>,
    per_user: &Counter<String>,
    (user, pass): (String, String),
    peer: SocketAddr,
    protocol: &str,
    failure_delay: Duration,
    max_per_user: usize,
) -> Login {
    match crate::pipeline::access::authenticate(gw, user.clone(), pass, peer, protocol).await {
        None => {
            tracing::warn!(%peer, %user, protocol, "login failed");
            tokio::time::sleep(failure_delay).await;
            Login::Failed
        }
        Some(addr) => match per_user.acquire(addr.clone(), max_per_user) {
            Some(slot) => Login::Ok(addr, slot),
            None => Login::TooManyConnections,
        },
    }
}
