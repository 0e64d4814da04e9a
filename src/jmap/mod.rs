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
//! **States.** A state is the mailbox's modseq, which the store advances in the same
//! transaction as every change a mail client can see, and keeps with a bounded log of
//! what changed ([`crate::store::Store::changes_since`]): `Email/changes`,
//! `Mailbox/changes` and `Thread/changes` are answered from it, across restarts. The
//! store's change feed wakes the EventSource streams.

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
use crate::listener::{Counter, Slot};
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

/// API request bodies held in memory at once, all users together: past it a request gets
/// 503 with the JMAP `limit` error (uploads are streamed to disk and do not count).
pub const MAX_BODY_BYTES_IN_FLIGHT: usize = 256 * 1024 * 1024;

/// The account id of a mailbox: stable, opaque, URL-safe.
pub fn account_id(user: &str) -> String {
    format!(
        "A{}",
        &crate::trace::sha256_hex(user.to_ascii_lowercase().as_bytes())[..24]
    )
}

/// The account id of a mailbox's security archive (read-only; [`account::Scope::Archive`]).
pub fn archive_account_id(user: &str) -> String {
    let key = format!("archive:{}", user.to_ascii_lowercase());
    format!("R{}", &crate::trace::sha256_hex(key.as_bytes())[..24])
}

/// The scope of account id `account` for `user`, if it is one of theirs.
pub fn scope_of(user: &str, account: &str) -> Option<account::Scope> {
    if account == account_id(user) {
        Some(account::Scope::Mailbox)
    } else if account == archive_account_id(user) {
        Some(account::Scope::Archive)
    } else {
        None
    }
}

/// The view of an account built at some state, and the lock that lets one request at a
/// time build the next one (the others wait and share it).
#[derive(Default)]
struct AccountState {
    view: Option<Arc<account::View>>,
    building: Arc<tokio::sync::Mutex<()>>,
}

/// The JMAP service of one gateway.
pub struct Jmap {
    pub gw: Arc<Gateway>,
    pub limits: Limits,
    accounts: Mutex<HashMap<String, AccountState>>,
    /// Wakes the EventSource streams: the mailbox whose state advanced.
    pub(crate) changed: watch::Sender<(String, u64)>,
    /// Blobs uploaded per account (JMAP upload), kept until the blob sweep removes them.
    uploads: Mutex<HashMap<String, Vec<String>>>,
    /// Requests in progress per account (`maxConcurrentRequests`).
    requests: Counter<String>,
    /// Uploads in progress per account (`maxConcurrentUpload`).
    upload_slots: Counter<String>,
    /// KiB of API request bodies held in memory at once, all accounts together
    /// ([`MAX_BODY_BYTES_IN_FLIGHT`]).
    pub(crate) body_budget: Arc<tokio::sync::Semaphore>,
}

impl Jmap {
    pub fn new(gw: Arc<Gateway>) -> Self {
        let mut limits = Limits::default();
        limits.max_size_upload = gw.config.limits.max_message_bytes as usize;
        let (changed, _) = watch::channel((String::new(), 0));
        Self {
            gw,
            limits,
            accounts: Mutex::default(),
            changed,
            uploads: Mutex::default(),
            requests: Counter::default(),
            upload_slots: Counter::default(),
            body_budget: Arc::new(tokio::sync::Semaphore::new(MAX_BODY_BYTES_IN_FLIGHT / 1024)),
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
                    let users: Vec<String> = self
                        .lock()
                        .keys()
                        .filter(|k| !k.contains('\0'))
                        .cloned()
                        .collect();
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

    /// Wakes the push streams of `mailbox`.
    fn advance(&self, mailbox: &str) {
        let n = self.current_state(mailbox);
        self.changed.send_replace((mailbox.to_string(), n));
    }

    /// The state string of a modseq.
    pub fn state_string(&self, n: u64) -> String {
        n.to_string()
    }

    /// The mailbox's modseq (0 for a mailbox never changed, or on a store error).
    pub fn current_state(&self, user: &str) -> u64 {
        PecAddress::parse(user)
            .ok()
            .and_then(|u| self.gw.store.modseq(&u).ok())
            .unwrap_or(0)
    }

    /// The mailbox's own account's view at its current state.
    pub async fn view(
        &self,
        user: &PecAddress,
    ) -> Result<Arc<account::View>, crate::store::StoreError> {
        self.view_in(user, account::Scope::Mailbox).await
    }

    /// The view of one of the mailbox's accounts at its current state, built if needed
    /// (blocking work runs off the executor). Both accounts follow the mailbox's modseq:
    /// every change of the archive advances it too.
    pub async fn view_in(
        &self,
        user: &PecAddress,
        scope: account::Scope,
    ) -> Result<Arc<account::View>, crate::store::StoreError> {
        let key = match scope {
            account::Scope::Mailbox => user.to_string(),
            account::Scope::Archive => format!("archive\0{user}"),
        };
        let cached = |state: u64| {
            let m = self.lock();
            let a = m.get(&key)?;
            a.view.clone().filter(|v| v.state == state)
        };
        // The state is read before the data, so a view never claims a newer state than
        // what it shows (a change in between makes the next request build again).
        let state = self.gw.store.modseq(user)?;
        if let Some(v) = cached(state) {
            return Ok(v);
        }
        let building = self.lock().entry(key.clone()).or_default().building.clone();
        let _one_builder = building.lock().await;
        let state = self.gw.store.modseq(user)?;
        if let Some(v) = cached(state) {
            return Ok(v); // built meanwhile by the request we waited for
        }
        let previous = self.lock().get(&key).and_then(|a| a.view.clone());
        let (store, u) = (self.gw.store.clone(), user.clone());
        let view = Arc::new(
            self.gw
                .blocking(move || account::build(&store, &u, state, scope, previous.as_deref()))
                .await?,
        );
        let mut m = self.lock();
        let a = m.entry(key).or_default();
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
    pub(crate) fn enter(&self, user: &str) -> Option<Slot<String>> {
        self.requests
            .acquire(user.to_string(), self.limits.max_concurrent_requests)
    }

    /// Takes an upload slot of `user`; `None` past `maxConcurrentUpload`.
    pub(crate) fn enter_upload(&self, user: &str) -> Option<Slot<String>> {
        self.upload_slots
            .acquire(user.to_string(), self.limits.max_concurrent_upload)
    }
}
