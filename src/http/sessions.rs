//! Web sessions of the webmail (and bearer tokens of API clients): random 256-bit tokens
//! mapped to the logged-in mailbox, with an idle and an absolute time-out and a
//! per-session CSRF token. Kept in memory: a restart logs everybody out, which is the safe
//! direction.
//!
//! Bounded: at most [`MAX_SESSIONS`] live sessions (the oldest is dropped past that) and
//! [`MAX_SESSIONS_PER_USER`] per mailbox. Tokens are compared as map keys, after a length
//! and alphabet check; nothing from the client is trusted beyond that.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;

/// A session not used for this long ends (a user who walks away is logged out).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// A session ends this long after login, used or not.
pub const ABSOLUTE_TIMEOUT: Duration = Duration::from_secs(12 * 3600);
pub const MAX_SESSIONS: usize = 100_000;
pub const MAX_SESSIONS_PER_USER: usize = 64;

/// What a valid token stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebSession {
    pub user: String,
    pub csrf: String,
    /// Issued as a bearer token (API client) rather than a cookie (browser).
    pub bearer: bool,
    /// The mailbox's credential generation at login: the session ends when it changes
    /// ([`crate::gateway::CredentialEpochs`]).
    pub epoch: u64,
    /// Logged in with a provisional password: only the password change is allowed.
    pub must_change_password: bool,
    created: Instant,
    last_used: Instant,
}

#[derive(Default)]
pub struct Sessions(Mutex<HashMap<String, WebSession>>);

/// 32 random bytes, base64url without padding (43 characters).
pub fn random_token() -> String {
    let mut b = [0u8; 32];
    // openssl's CSPRNG; failure to seed is not recoverable in a server.
    openssl::rand::rand_bytes(&mut b).expect("the system random generator failed");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn plausible(token: &str) -> bool {
    token.len() == 43
        && token
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
}

impl Sessions {
    /// Opens a session; returns its token.
    pub fn open(
        &self,
        user: &str,
        bearer: bool,
        epoch: u64,
        must_change_password: bool,
    ) -> (String, WebSession) {
        let now = Instant::now();
        let token = random_token();
        let s = WebSession {
            user: user.to_string(),
            csrf: random_token(),
            bearer,
            epoch,
            must_change_password,
            created: now,
            last_used: now,
        };
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.retain(|_, v| alive(v, now));
        let mine: Vec<(String, Instant)> = m
            .iter()
            .filter(|(_, v)| v.user == user)
            .map(|(k, v)| (k.clone(), v.created))
            .collect();
        if mine.len() >= MAX_SESSIONS_PER_USER
            && let Some((k, _)) = mine.iter().min_by_key(|(_, c)| *c)
        {
            m.remove(k);
        }
        if m.len() >= MAX_SESSIONS
            && let Some(k) = m
                .iter()
                .min_by_key(|(_, v)| v.last_used)
                .map(|(k, _)| k.clone())
        {
            m.remove(&k);
        }
        m.insert(token.clone(), s.clone());
        (token, s)
    }

    /// The live session of `token` (its idle clock restarted), or `None`.
    pub fn get(&self, token: &str) -> Option<WebSession> {
        if !plausible(token) {
            return None;
        }
        let now = Instant::now();
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let s = m.get_mut(token)?;
        if !alive(s, now) {
            m.remove(token);
            return None;
        }
        s.last_used = now;
        Some(s.clone())
    }

    /// After the owner changed the password in this session: it carries the new
    /// generation and is no longer restricted.
    pub fn password_changed(&self, token: &str, epoch: u64) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = m.get_mut(token) {
            s.epoch = epoch;
            s.must_change_password = false;
        }
    }

    pub fn close(&self, token: &str) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(token);
    }

    /// Ends every session of a mailbox (password changed, mailbox deleted).
    pub fn close_user(&self, user: &str) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, v| v.user != user);
    }
}

fn alive(s: &WebSession, now: Instant) -> bool {
    now.duration_since(s.last_used) < IDLE_TIMEOUT
        && now.duration_since(s.created) < ABSOLUTE_TIMEOUT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_checked_and_closable() {
        let s = Sessions::default();
        let (t, ws) = s.open("a@pec.test", false, 0, false);
        assert_eq!(t.len(), 43);
        assert_ne!(t, ws.csrf);
        assert_eq!(s.get(&t).unwrap().user, "a@pec.test");
        assert!(s.get("short").is_none());
        assert!(s.get(&random_token()).is_none());
        s.close(&t);
        assert!(s.get(&t).is_none());
    }

    #[test]
    fn sessions_per_user_are_bounded() {
        let s = Sessions::default();
        let first = s.open("a@pec.test", false, 0, false).0;
        for _ in 0..MAX_SESSIONS_PER_USER {
            s.open("a@pec.test", false, 0, false);
        }
        assert!(s.get(&first).is_none(), "the oldest session is dropped");
        let other = s.open("b@pec.test", true, 0, false).0;
        s.close_user("a@pec.test");
        assert!(s.get(&other).is_some());
    }
}
