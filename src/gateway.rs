//! The running provider: everything the pipeline roles share, built once from the
//! validated [`Config`] — the provider identity, the signing key, the trust anchors, the
//! store, the clock and the limits — plus the helpers that keep CPU-bound and blocking work
//! (signing, argon2, blob files) off the async executor's threads.
//!
//! Owns no protocol and no PEC rule: those are in [`crate::smtp`] and [`crate::pipeline`].
//! It does own the failed-login state shared by SMTP, IMAP and POP3 ([`LoginLimiter`],
//! `limits.auth_max_failures` / `limits.auth_lockout_secs`), so that reconnecting or
//! switching protocol gives a password guesser no fresh attempts.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use tokio::sync::Notify;

use crate::clock::SharedClock;
use crate::config::Config;
use crate::pec::address::{Domain, PecAddress};
use crate::pec::compose::ProviderIdentity;
use crate::pec::daticert::TipoDestinatario;
use crate::pec::index::{ProviderIndex, ProviderRecord};
use crate::pec::smime::{Signer, TrustAnchors};
use crate::pipeline::checks::Limits;
use crate::store::{Blob, Store, StoreError, StoreOptions};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("opening the store: {0}")]
    Store(#[from] StoreError),
    #[error("antivirus.clamd: {0}")]
    Antivirus(#[from] crate::antivirus::ScanError),
    #[error("the provider index: {0}")]
    Index(#[from] crate::pec::index::IndexError),
}

/// Size × recipients allowed per message when the config does not say more (now the
/// default of `limits.max_total_bytes`).
pub use crate::config::DEFAULT_MAX_TOTAL_BYTES;

/// The imported index plus our own entry.
fn load_index(
    config: &Config,
    signer: &Signer,
) -> Result<ProviderIndex, crate::pec::index::IndexError> {
    let imported = ProviderIndex::load_or_empty(&ProviderIndex::default_path(config))?;
    let own = ProviderRecord::for_this_provider(config, signer.certificate())?;
    imported.with_own(own)
}

/// The shared state of a running provider.
pub struct Gateway {
    pub config: Arc<Config>,
    pub identity: ProviderIdentity,
    pub signer: Arc<Signer>,
    pub trust: Option<Arc<TrustAnchors>>,
    pub store: Store,
    pub clock: SharedClock,
    pub limits: Limits,
    /// The clamd client, when `[antivirus] clamd` is set.
    pub scanner: Option<crate::antivirus::Scanner>,
    /// Wakes the queue workers when new work is committed.
    pub work: Notify,
    /// Failed logins per IP address and per account (all protocols).
    pub logins: LoginLimiter,
    /// The index of PEC providers (imported records plus our own entry).
    index: std::sync::RwLock<Arc<ProviderIndex>>,
    /// Password checks run here: argon2id needs ~19 MiB per check, and on the general
    /// blocking pool every thread would keep its own malloc arena of that size (GBs of
    /// RSS after a login burst). A fixed pool bounds both CPU and memory.
    auth_pool: AuthPool,
}

/// A small fixed pool of threads for argon2 password checks.
struct AuthPool {
    jobs: std::sync::Mutex<std::sync::mpsc::Sender<Box<dyn FnOnce() + Send>>>,
}

/// Threads checking passwords (a check costs ~20 ms of one core).
const AUTH_THREADS: usize = 2;

impl AuthPool {
    fn new() -> Self {
        let (tx, rx) = std::sync::mpsc::channel::<Box<dyn FnOnce() + Send>>();
        let rx = Arc::new(std::sync::Mutex::new(rx));
        for i in 0..AUTH_THREADS {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("pecd-auth-{i}"))
                .spawn(move || {
                    loop {
                        let job = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        match job {
                            Ok(f) => f(),
                            Err(_) => return,
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a password-check thread");
            }
        }
        Self {
            jobs: std::sync::Mutex::new(tx),
        }
    }
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("provider", &self.identity.name)
            .finish()
    }
}

impl Gateway {
    /// Loads the keys, opens the store (with the signer for trace checkpoints).
    pub fn open(config: Config, clock: SharedClock) -> Result<Arc<Self>, GatewayError> {
        let signer = Arc::new(config.load_signer()?);
        let trust = config.load_trust()?.map(Arc::new);
        let options = StoreOptions {
            group_commit: config.store.group_commit,
            clock: clock.clone(),
            signer: Some(signer.clone()),
            checkpoint_every: config.trace.checkpoint_every,
            checkpoint_interval: Duration::from_secs(config.trace.checkpoint_interval_secs),
            retention_months: config.trace.retention_months,
            domains: config.provider.domains.clone(),
            default_quota_bytes: config.limits.default_quota_bytes,
            ..StoreOptions::default()
        };
        let store = Store::open(&config.store.dir, options)?;
        let index = Arc::new(load_index(&config, &signer)?);
        let identity = ProviderIdentity {
            name: config.provider.name.clone(),
            service_address: config.provider.service_address.clone(),
            host: config.provider.hostname.clone(),
        };
        let limits = Limits {
            max_message_bytes: config.limits.max_message_bytes,
            // Config validation keeps it ≥ max_message_bytes (and so ≥ the legal 30 MB).
            max_total_bytes: config.limits.max_total_bytes,
            max_recipients: config.limits.max_recipients as usize,
        };
        let logins = LoginLimiter::new(
            config.limits.auth_max_failures,
            config.limits.auth_lockout_secs,
        );
        let scanner = match &config.antivirus.clamd {
            Some(a) => Some(crate::antivirus::Scanner::from_config(a)?),
            None => None,
        };
        Ok(Arc::new(Self {
            scanner,
            config: Arc::new(config),
            identity,
            signer,
            trust,
            store,
            clock,
            limits,
            logins,
            work: Notify::new(),
            index: std::sync::RwLock::new(index),
            auth_pool: AuthPool::new(),
        }))
    }

    /// The provider index in force.
    pub fn index(&self) -> Arc<ProviderIndex> {
        self.index.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Reloads the imported index (after `pecd index import`); the old one stays in force
    /// when the file is unreadable.
    pub fn reload_index(&self) -> Result<(), GatewayError> {
        let fresh = Arc::new(load_index(&self.config, &self.signer)?);
        *self.index.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }

    /// A domain this gateway serves.
    pub fn is_local(&self, domain: &Domain) -> bool {
        self.config.provider.domains.iter().any(|d| d == domain)
    }

    /// `certificato` for PEC domains (ours, or `managedDomains` of a provider in the
    /// index, case-insensitive), `esterno` for the rest (rule §6.1 item 4).
    pub fn classify_recipient(&self, addr: &PecAddress) -> TipoDestinatario {
        if self.is_local(addr.domain()) || self.index().is_pec_domain(addr.domain()) {
            TipoDestinatario::Certificato
        } else {
            TipoDestinatario::Esterno
        }
    }

    /// Runs CPU-bound or blocking work (signing, argon2, file I/O) on the blocking pool.
    pub async fn blocking<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        match tokio::task::spawn_blocking(f).await {
            Ok(v) => v,
            // The closure panicked: propagate, as if it had run here.
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    /// Checks a mailbox password on the password pool; false on any error.
    pub async fn check_password(&self, addr: PecAddress, password: String) -> bool {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let store = self.store.clone();
        let job = Box::new(move || {
            let ok = store
                .verify_password(&addr, &crate::store::mailbox::Password::new(password))
                .unwrap_or(false);
            let _ = tx.send(ok);
        });
        let sent = self
            .auth_pool
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(job)
            .is_ok();
        sent && rx.await.unwrap_or(false)
    }

    /// Writes a blob durably (file and directory fsynced) off the executor.
    pub async fn put_blob(&self, bytes: Arc<Vec<u8>>) -> Result<Blob, StoreError> {
        let store = self.store.clone();
        self.blocking(move || store.blobs().put(&bytes)).await
    }

    /// Reads a blob off the executor.
    pub async fn read_blob(&self, id: crate::store::BlobId) -> Result<Vec<u8>, StoreError> {
        let store = self.store.clone();
        self.blocking(move || store.blobs().read(&id)).await
    }
}

/// What failed logins are counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LoginKey {
    /// The peer's address; IPv6 addresses are counted per /64 (one host usually holds a
    /// whole /64, so per-address counting would be no limit at all).
    Ip(IpAddr),
    /// The user name as given (trimmed, lower-cased, at most 320 characters), whether or
    /// not such a mailbox exists.
    Account(String),
}

impl std::fmt::Display for LoginKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoginKey::Ip(IpAddr::V6(a)) => write!(f, "address {a}/64"),
            LoginKey::Ip(a) => write!(f, "address {a}"),
            LoginKey::Account(a) => write!(f, "account {a:?}"),
        }
    }
}

/// Logins are refused for `key` until `until`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lockout {
    pub key: LoginKey,
    pub until: Timestamp,
}

impl std::fmt::Display for Lockout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "too many failed logins for {}, refused until {}",
            self.key,
            self.until.round(jiff::Unit::Second).unwrap_or(self.until)
        )
    }
}

/// Keys tracked at most; past it, expired keys are dropped, then the stalest one.
const MAX_LOGIN_KEYS: usize = 100_000;

/// Failed logins per IP address and per account in a sliding window: at most `max`
/// failures within any `window`; while a key has `max` failures in the last `window`,
/// logins for it are refused without checking the password. Refused attempts are not
/// counted (so a lockout ends `window` after the oldest counted failure). Time comes from
/// the caller (the gateway clock), so tests control it.
#[derive(Debug)]
pub struct LoginLimiter {
    max: usize,
    window: SignedDuration,
    /// The last `max` failure instants of each key, oldest first.
    failures: Mutex<HashMap<LoginKey, VecDeque<Timestamp>>>,
}

impl LoginLimiter {
    pub fn new(max_failures: u32, window_secs: u64) -> Self {
        Self {
            max: usize::try_from(max_failures).unwrap_or(usize::MAX).max(1),
            window: SignedDuration::from_secs(i64::try_from(window_secs).unwrap_or(i64::MAX)),
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn keys(ip: IpAddr, user: &str) -> [LoginKey; 2] {
        let ip = match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !((1u128 << 64) - 1))),
            },
            v4 => v4,
        };
        let account: String = user.trim().to_lowercase().chars().take(320).collect();
        [LoginKey::Ip(ip), LoginKey::Account(account)]
    }

    fn cutoff(&self, now: Timestamp) -> Timestamp {
        now.checked_sub(self.window).unwrap_or(Timestamp::MIN)
    }

    /// The lockout in force for a login from `ip` as `user`, if any.
    pub fn lockout(&self, ip: IpAddr, user: &str, now: Timestamp) -> Option<Lockout> {
        let cutoff = self.cutoff(now);
        let map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        Self::keys(ip, user).into_iter().find_map(|key| {
            let q = map.get(&key)?;
            let recent: Vec<&Timestamp> = q.iter().filter(|t| **t > cutoff).collect();
            let oldest = **recent.first()?;
            (recent.len() >= self.max).then(|| Lockout {
                key,
                until: oldest.checked_add(self.window).unwrap_or(Timestamp::MAX),
            })
        })
    }

    /// Counts a failed login; returns the lockout this very failure starts, if any (so
    /// that it is logged once).
    pub fn record_failure(&self, ip: IpAddr, user: &str, now: Timestamp) -> Option<Lockout> {
        let cutoff = self.cutoff(now);
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let mut started = None;
        for key in Self::keys(ip, user) {
            if !map.contains_key(&key) && map.len() >= MAX_LOGIN_KEYS {
                map.retain(|_, q| q.back().is_some_and(|t| *t > cutoff));
                if map.len() >= MAX_LOGIN_KEYS {
                    let stalest = map
                        .iter()
                        .min_by_key(|(_, q)| q.back().copied())
                        .map(|(k, _)| k.clone());
                    if let Some(k) = stalest {
                        map.remove(&k);
                    }
                }
            }
            let q = map.entry(key.clone()).or_default();
            while q.front().is_some_and(|t| *t <= cutoff) {
                q.pop_front();
            }
            let before = q.len();
            q.push_back(now);
            while q.len() > self.max {
                q.pop_front();
            }
            if before + 1 == self.max && started.is_none() {
                let oldest = q.front().copied().unwrap_or(now);
                started = Some(Lockout {
                    key,
                    until: oldest.checked_add(self.window).unwrap_or(Timestamp::MAX),
                });
            }
        }
        started
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    #[test]
    fn failures_lock_an_address_and_an_account_for_the_window() {
        let l = LoginLimiter::new(3, 60);
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        assert_eq!(l.record_failure(ip, "a@pec.test", t(0)), None);
        assert_eq!(l.record_failure(ip, "b@pec.test", t(10)), None);
        assert!(l.lockout(ip, "c@pec.test", t(11)).is_none());
        // The third failure from one address starts a lockout of that address, reported once.
        let started = l.record_failure(ip, "c@pec.test", t(20)).expect("lockout");
        assert_eq!(started.key, LoginKey::Ip(ip));
        assert_eq!(started.until, t(60));
        let now = l.lockout(ip, "anyone@pec.test", t(30)).expect("locked");
        assert_eq!(now.key, LoginKey::Ip(ip));
        assert!(l.lockout(other, "anyone@pec.test", t(30)).is_none());
        // Sliding: once the first failure is 60 s old, one more attempt is allowed.
        assert!(l.lockout(ip, "x", t(59)).is_some());
        assert!(l.lockout(ip, "x", t(60)).is_none());
        assert!(
            l.record_failure(ip, "x", t(61)).is_some(),
            "full again at once"
        );

        // Per account, from many addresses (case and spaces do not make a new account).
        let l = LoginLimiter::new(2, 60);
        l.record_failure("198.51.100.1".parse().unwrap(), "Boss@PEC.test", t(0));
        let s = l
            .record_failure("198.51.100.2".parse().unwrap(), " boss@pec.test", t(1))
            .expect("account lockout");
        assert_eq!(s.key, LoginKey::Account("boss@pec.test".into()));
        assert!(
            l.lockout("203.0.113.9".parse().unwrap(), "boss@pec.test", t(2))
                .is_some()
        );
        assert!(
            l.lockout("203.0.113.9".parse().unwrap(), "a@pec.test", t(2))
                .is_none()
        );
        assert!(s.to_string().contains("account \"boss@pec.test\""), "{s}");
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_v4_as_v4() {
        let l = LoginLimiter::new(2, 60);
        l.record_failure("2001:db8:1:2::1".parse().unwrap(), "a", t(0));
        l.record_failure("2001:db8:1:2:ffff::9".parse().unwrap(), "b", t(1));
        assert!(
            l.lockout("2001:db8:1:2::77".parse().unwrap(), "c", t(2))
                .is_some()
        );
        assert!(
            l.lockout("2001:db8:1:3::1".parse().unwrap(), "c", t(2))
                .is_none()
        );
        l.record_failure("::ffff:192.0.2.1".parse().unwrap(), "d", t(0));
        l.record_failure("192.0.2.1".parse().unwrap(), "e", t(1));
        assert!(l.lockout("192.0.2.1".parse().unwrap(), "f", t(2)).is_some());
    }

    #[test]
    fn the_table_stays_bounded() {
        let l = LoginLimiter::new(5, 60);
        for i in 0..(MAX_LOGIN_KEYS as u32 / 2 + 10) {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from_bits(0x0a00_0000 + i));
            l.record_failure(ip, &format!("u{i}"), t(i64::from(i % 30)));
        }
        let n = l.failures.lock().unwrap().len();
        assert!(n <= MAX_LOGIN_KEYS, "{n}");
    }
}
