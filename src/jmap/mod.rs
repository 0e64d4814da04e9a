//! JMAP (RFC 8620 core, RFC 8621 mail, RFC 9425 quota) with PEC in it, served on the web
//! listener by [`crate::http`].
//!
//! | module | owns |
//! |---|---|
//! | [`request`] | the request object, limits, result references (sans-IO) |
//! | [`account`] | an account's Mailboxes and Emails at one state (ids, keywords) |
//! | [`summary`] | what is listed about a message, computed once per blob |
//! | [`pec`] | the `pec` property: kind, daticert, the signature verdict |
//! | [`email`] | Email properties read from the message (body structure, values, headers) |
//! | [`methods`] | the method calls |
//! | [`endpoints`] | session, API, upload, download, push and evidence over HTTP |
//!
//! **The PEC capability** `urn:pecd:params:jmap:pec` (documented in the README): adds the
//! `pec` property to Email, the `pecIdentificativo` filter to Email/query, and the
//! evidence download. Whether a message is certified is computed from its signature and
//! the provider index when it is read, never from the folder it is in or from how it got
//! there, so Email/import and Email/set create cannot make a message look certified.
//!
//! **States.** The store publishes every durable change of a mailbox; each one advances
//! the account's state counter. State strings are `<boot>-<counter>`, the boot part
//! changing with every start so that a state from before a restart is never mistaken for
//! a current one. The store keeps no per-change log yet, so `/changes` answers
//! `cannotCalculateChanges` when the state moved (RFC 8620 §5.2 allows it: the client
//! then refetches); see the README.

pub mod account;
pub mod email;
pub mod endpoints;
pub mod methods;
pub mod pec;
pub mod request;
pub mod summary;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::gateway::Gateway;
use crate::pec::address::PecAddress;

pub const CAP_CORE: &str = "urn:ietf:params:jmap:core";
pub const CAP_MAIL: &str = "urn:ietf:params:jmap:mail";
pub const CAP_SUBMISSION: &str = "urn:ietf:params:jmap:submission";
pub const CAP_QUOTA: &str = "urn:ietf:params:jmap:quota";
pub const CAP_PEC: &str = "urn:pecd:params:jmap:pec";

/// The limits advertised in the session's core capability (RFC 8620 §2).
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_size_upload: usize,
    pub max_concurrent_upload: usize,
    pub max_size_request: usize,
    pub max_concurrent_requests: usize,
    pub max_calls_in_request: usize,
    pub max_objects_in_get: usize,
    pub max_objects_in_set: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_size_upload: crate::config::DEFAULT_MAX_MESSAGE_BYTES as usize,
            max_concurrent_upload: 4,
            max_size_request: 10 * 1024 * 1024,
            max_concurrent_requests: 8,
            max_calls_in_request: 64,
            max_objects_in_get: 1000,
            max_objects_in_set: 500,
        }
    }
}

/// The account id of a mailbox: stable, opaque, URL-safe.
pub fn account_id(user: &str) -> String {
    format!(
        "A{}",
        &crate::trace::sha256_hex(user.to_ascii_lowercase().as_bytes())[..24]
    )
}

/// An account's state counter and the view built at some state.
#[derive(Default)]
struct AccountState {
    counter: u64,
    view: Option<Arc<account::View>>,
}

/// The JMAP service of one gateway.
pub struct Jmap {
    pub gw: Arc<Gateway>,
    pub limits: Limits,
    boot: String,
    accounts: Mutex<HashMap<String, AccountState>>,
    /// Wakes the EventSource streams: the mailbox whose state advanced.
    pub(crate) changed: watch::Sender<(String, u64)>,
    /// Blobs uploaded per account (JMAP upload), kept until the blob sweep removes them.
    uploads: Mutex<HashMap<String, Vec<String>>>,
    /// Requests in progress per account (`maxConcurrentRequests`).
    in_flight: Mutex<HashMap<String, usize>>,
}

impl Jmap {
    pub fn new(gw: Arc<Gateway>) -> Self {
        let mut limits = Limits::default();
        limits.max_size_upload = gw.config.limits.max_message_bytes as usize;
        let (changed, _) = watch::channel((String::new(), 0));
        let boot = format!("{:x}", gw.clock.now().as_millisecond());
        Self {
            gw,
            limits,
            boot,
            accounts: Mutex::default(),
            changed,
            uploads: Mutex::default(),
            in_flight: Mutex::default(),
        }
    }

    /// Follows the store's change feed: every committed change of a mailbox advances its
    /// state and wakes the push streams. A lag (too many changes at once) advances every
    /// account.
    pub async fn follow_changes(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut rx = self.gw.store.subscribe_changes();
        loop {
            let change = tokio::select! {
                c = rx.recv() => c,
                _ = stop.changed() => return,
            };
            match change {
                Ok(c) => self.advance(&c.mailbox),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    let users: Vec<String> = self.lock().keys().cloned().collect();
                    for u in users {
                        self.advance(&u);
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, AccountState>> {
        self.accounts.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn advance(&self, mailbox: &str) {
        let n = {
            let mut m = self.lock();
            let a = m.entry(mailbox.to_string()).or_default();
            a.counter += 1;
            a.counter
        };
        self.changed.send_replace((mailbox.to_string(), n));
    }

    /// The state string of a counter.
    pub fn state_string(&self, n: u64) -> String {
        format!("{}-{n}", self.boot)
    }

    pub fn current_state(&self, user: &str) -> u64 {
        self.lock().get(user).map_or(0, |a| a.counter)
    }

    /// The account's view at its current state, built if needed (blocking work runs off
    /// the executor).
    pub async fn view(
        &self,
        user: &PecAddress,
    ) -> Result<Arc<account::View>, crate::store::StoreError> {
        let key = user.to_string();
        let (state, previous) = {
            let m = self.lock();
            let a = m.get(&key);
            let previous = a.and_then(|a| a.view.clone());
            if let Some(v) = &previous
                && v.state == a.map_or(0, |a| a.counter)
            {
                return Ok(v.clone());
            }
            (a.map_or(0, |a| a.counter), previous)
        };
        let (store, u) = (self.gw.store.clone(), user.clone());
        let view = Arc::new(
            self.gw
                .blocking(move || account::build(&store, &u, state, previous.as_deref()))
                .await?,
        );
        let mut m = self.lock();
        let a = m.entry(key).or_default();
        // Keep the newest view; a change during the build leaves this one stale, and the
        // next request builds again.
        if a.view.as_ref().is_none_or(|v| v.state <= state) {
            a.view = Some(view.clone());
        }
        Ok(view)
    }

    pub(crate) fn remember_upload(&self, user: &str, blob: &str) {
        let mut m = self.uploads.lock().unwrap_or_else(|p| p.into_inner());
        let v = m.entry(user.to_string()).or_default();
        v.push(blob.to_string());
        // Bounded: the oldest uploads are forgotten first.
        if v.len() > 1000 {
            v.remove(0);
        }
    }

    pub(crate) fn uploaded(&self, user: &str, blob: &str) -> bool {
        self.uploads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(user)
            .is_some_and(|v| v.iter().any(|b| b == blob))
    }

    /// Takes a request slot of `user`; `None` past `maxConcurrentRequests`.
    pub(crate) fn enter(self: &Arc<Self>, user: &str) -> Option<RequestSlot> {
        let mut m = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(user.to_string()).or_insert(0);
        if *n >= self.limits.max_concurrent_requests {
            return None;
        }
        *n += 1;
        Some(RequestSlot(self.clone(), user.to_string()))
    }
}

/// A request in progress, released on drop.
pub struct RequestSlot(Arc<Jmap>, String);

impl Drop for RequestSlot {
    fn drop(&mut self) {
        let mut m = self.0.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.1) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.1);
            }
        }
    }
}
