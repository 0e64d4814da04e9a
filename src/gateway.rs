//! The running provider: everything the pipeline roles share, built once from the
//! validated [`Config`] — the provider identity, the signing key, the trust anchors, the
//! store, the clock and the limits — plus the helpers that keep CPU-bound and blocking work
//! (signing, argon2, blob files) off the async executor's threads.
//!
//! Owns no protocol and no PEC rule: those are in [`crate::smtp`] and [`crate::pipeline`].
//! It does own the failure counters shared by every listener ([`limiter`]): failed logins
//! over SMTP, IMAP and POP3 ([`LoginLimiter`], `limits.auth_max_failures` /
//! `limits.auth_lockout_secs`) and the traced SMTP dialogue refusals ([`RefusalLimiter`]),
//! so that reconnecting or switching protocol gives an abuser no fresh attempts; and the
//! envelopes and receipts just written for a queue worker to send ([`recent`]), so that
//! the relay does not read back from disk what it was handed a moment ago.

use std::sync::Arc;

use tokio::sync::Notify;

use crate::clock::SharedClock;
use crate::config::Config;
use crate::pec::address::{Domain, PecAddress};
use crate::pec::compose::{BuiltMessage, ProviderIdentity};
use crate::pec::daticert::TipoDestinatario;
use crate::pec::index::{ProviderIndex, ProviderRecord};
use crate::pec::smime::{Signer, SmimeError, TrustAnchors};
use crate::pipeline::checks::Limits;
use crate::store::mailbox::PasswordCheck;
use crate::store::{Blob, Store, StoreError};

pub mod credentials;
pub mod limiter;
pub mod recent;
pub mod verified;
pub use credentials::CredentialEpochs;
pub use limiter::{Lockout, LoginKey, LoginLimiter, Net, RefusalLimiter, RefusalTrace};
pub use recent::RecentBlobs;
pub use verified::VerifiedLogins;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("opening the store: {0}")]
    Store(#[from] StoreError),
    #[error("antivirus.clamd: {0}")]
    Antivirus(#[from] crate::antivirus::ScanError),
    #[error("antispam.spamd: {0}")]
    Antispam(#[from] crate::antispam::SpamError),
    #[error("the provider index: {0}")]
    Index(#[from] crate::pec::index::IndexError),
}

/// Why [`Gateway::sign_and_stage`] failed: the signature (the message is not issued) or
/// the blob write.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("signing: {0}")]
    Sign(#[from] SmimeError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Size × recipients allowed per message when the config does not say more (now the
/// default of `limits.max_total_bytes`).
pub use crate::config::DEFAULT_MAX_TOTAL_BYTES;

/// The imported index plus our own entry (whose certificate is `signer_cert`): what the
/// running provider trusts, also read by `pecd verify --config`.
pub fn load_index(
    config: &Config,
    signer_cert: &openssl::x509::X509,
) -> Result<ProviderIndex, crate::pec::index::IndexError> {
    let imported = ProviderIndex::load_or_empty(&ProviderIndex::default_path(config))?;
    let own = ProviderRecord::for_this_provider(config, signer_cert)?;
    imported.with_own(own)
}

/// The shared state of a running provider.
pub struct Gateway {
    pub config: Arc<Config>,
    pub identity: ProviderIdentity,
    pub signer: Arc<Signer>,
    pub trust: Option<Arc<TrustAnchors>>,
    /// The CRLs of `[trust] crl_dir` (rules §6.2 "check CRL"), reloaded on change.
    pub crls: Option<Arc<crate::pec::crl::CrlStore>>,
    /// Smart-card (CNS) login: the CAs and CRLs of `[cns]`, when configured.
    pub cns: Option<Arc<crate::cns::CnsTrust>>,
    pub store: Store,
    pub clock: SharedClock,
    pub limits: Limits,
    /// The clamd client, when `[antivirus] clamd` is set.
    pub scanner: Option<crate::antivirus::Scanner>,
    /// The spamd client, when `[antispam] spamd` is set.
    pub spam_filter: Option<crate::antispam::SpamFilter>,
    /// Wakes the queue workers when new work is committed.
    pub work: Notify,
    /// Failed logins per client network and per account (all protocols).
    pub logins: LoginLimiter,
    /// SMTP dialogue refusals written to the trace log, per client network.
    pub refusals: RefusalLimiter,
    /// Per-mailbox credential generations: sessions opened before a change end.
    pub credentials: CredentialEpochs,
    /// The port the web listener is bound to (0 until it is): `listen.https` may say 0.
    pub https_port: std::sync::atomic::AtomicU16,
    /// The port of the smart-card web listener (0: none).
    pub https_cns_port: std::sync::atomic::AtomicU16,
    /// Connection limits shared by every listener (per address or network, in total).
    pub connections: Arc<crate::listener::ConnectionGate>,
    /// The index of PEC providers (imported records plus our own entry).
    index: std::sync::RwLock<Arc<ProviderIndex>>,
    /// Password checks run here: argon2id needs ~19 MiB per check, and on the general
    /// blocking pool every thread would keep its own malloc arena of that size (GBs of
    /// RSS after a login burst). A fixed pool bounds both CPU and memory.
    auth_pool: AuthPool,
    /// Passwords argon2 found right recently, against the hash stored then.
    pub verified: VerifiedLogins,
    /// Blobs just written that a queue worker reads back next (see [`recent`]).
    pub recent: RecentBlobs,
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
        let crls = config.load_crls()?.map(Arc::new);
        let cns = config.load_cns()?.map(Arc::new);
        let options = config.store_options(clock.clone(), Some(signer.clone()));
        let store = Store::open(&config.store.dir, options)?;
        let index = Arc::new(load_index(&config, signer.certificate())?);
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
        let spam_filter = match &config.antispam.spamd {
            Some(a) => Some(crate::antispam::SpamFilter::from_config(a)?),
            None => None,
        };
        let connections = Arc::new(crate::listener::ConnectionGate::from_config(&config.limits));
        let config_login_cache_secs = config.limits.login_cache_secs;
        Ok(Arc::new(Self {
            connections,
            scanner,
            spam_filter,
            config: Arc::new(config),
            identity,
            signer,
            trust,
            crls,
            cns,
            store,
            clock,
            limits,
            logins,
            refusals: RefusalLimiter::default(),
            credentials: CredentialEpochs::default(),
            https_port: Default::default(),
            https_cns_port: Default::default(),
            work: Notify::new(),
            index: std::sync::RwLock::new(index),
            auth_pool: AuthPool::new(),
            verified: VerifiedLogins::new(
                config_login_cache_secs,
                crate::gateway::verified::MAX_ENTRIES,
            ),
            recent: RecentBlobs::default(),
        }))
    }

    /// Whether the store's filesystem has room for a new message of `bytes`: free space
    /// at least `limits.min_free_bytes` plus three times its size (the envelope, the
    /// receipts that may carry it whole, and its spool), so that work already accepted
    /// never runs out of space. `Err` carries the free bytes. A filesystem that cannot be
    /// asked is taken to have room (the writes themselves will say otherwise).
    pub fn room_for(&self, bytes: u64) -> Result<(), u64> {
        let reserve = self.config.limits.min_free_bytes;
        if reserve == 0 {
            return Ok(());
        }
        match self.store.free_bytes() {
            Ok(free) if free < reserve.saturating_add(bytes.saturating_mul(3)) => Err(free),
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the store's free space");
                Ok(())
            }
        }
    }

    /// The provider index in force.
    pub fn index(&self) -> Arc<ProviderIndex> {
        self.index.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Reloads the imported index (after `pecd index import`); the old one stays in force
    /// when the file is unreadable.
    pub fn reload_index(&self) -> Result<(), GatewayError> {
        let fresh = Arc::new(load_index(&self.config, self.signer.certificate())?);
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

    /// Runs `f` on the password pool; `None` if the pool is gone.
    async fn on_auth_pool<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let store = self.store.clone();
        let job = Box::new(move || {
            let _ = tx.send(f(&store));
        });
        self.auth_pool
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(job)
            .ok()?;
        rx.await.ok()
    }

    /// Checks a mailbox password: against the logins verified recently
    /// ([`VerifiedLogins`]: one read of the stored hash, no argon2), else on the password
    /// pool, once for the same login arriving several times at once. `None` when it cannot be checked now (the store failed, e.g. its database is
    /// down): a temporary failure, not a wrong password.
    pub async fn check_password(
        &self,
        addr: PecAddress,
        password: String,
    ) -> Option<PasswordCheck> {
        let user = addr.key();
        let mut stored_now = None;
        if self.verified.enabled() {
            let (store, a) = (self.store.clone(), addr.clone());
            match self.blocking(move || store.own_password_hash(&a)).await {
                Ok(Some(stored)) => stored_now = Some(stored),
                Err(e @ crate::store::StoreError::Db(_)) => {
                    tracing::error!(error = %e, %addr, "cannot check a password now");
                    return None;
                }
                // Provisional, no such mailbox, or a record that cannot be read (the
                // check below says what to do with it).
                _ => {}
            }
        }
        if let Some(stored) = &stored_now
            && self
                .verified
                .hit(&user, stored, &password, self.clock.now())
        {
            crate::ops::metrics::password_check("cache");
            return Some(PasswordCheck::Valid);
        }
        // A miss: the same login arriving meanwhile waits for this one's answer.
        let turn = stored_now
            .as_deref()
            .and_then(|h| self.verified.turn(&user, h, &password));
        let mut answer = match &turn {
            Some(t) => Some(t.wait().await),
            None => None,
        };
        if let Some(given) = answer.as_deref().copied().flatten() {
            crate::ops::metrics::password_check("cache");
            return Some(given);
        }
        let pw = password.clone();
        let checked = self
            .on_auth_pool(move |store| {
                match store
                    .verify_password_against(&addr, &crate::store::mailbox::Password::new(pw))
                {
                    Ok(c) => {
                        crate::ops::metrics::password_check("argon2");
                        Some(c)
                    }
                    // The database failed: try again later.
                    Err(e @ crate::store::StoreError::Db(_)) => {
                        tracing::error!(error = %e, %addr, "cannot check a password now");
                        None
                    }
                    // Anything else (a record that cannot be read) will not get better by
                    // waiting: refused as a wrong password, and logged for the operator.
                    Err(e) => {
                        tracing::error!(error = %e, %addr, "cannot check a password");
                        Some((PasswordCheck::Wrong, None))
                    }
                }
            })
            .await
            .flatten()?;
        if let (PasswordCheck::Valid, Some(stored)) = &checked {
            self.verified
                .remember(&user, stored, &password, self.clock.now());
        }
        if let Some(slot) = answer.as_deref_mut() {
            *slot = Some(checked.0);
        }
        Some(checked.0)
    }

    /// Runs the owner's password change on the password pool (two argon2 runs) and, when
    /// it succeeds, ends every session of the mailbox opened before
    /// ([`CredentialEpochs`]); returns the new generation for the caller's own session.
    pub async fn change_own_password(
        &self,
        addr: PecAddress,
        current: String,
        new: String,
    ) -> Result<u64, crate::store::mailbox::PasswordChangeError> {
        use crate::store::mailbox::{Password, PasswordChangeError};
        let a = addr.clone();
        self.on_auth_pool(move |store| {
            store.change_own_password(&a, &Password::new(current), &Password::new(new))
        })
        .await
        .ok_or_else(|| {
            PasswordChangeError::Store(StoreError::Password("the password pool stopped".into()))
        })??;
        // The new stored hash already ends a cached verification; this frees it.
        self.verified.forget(&addr.key());
        Ok(self.credentials.bump(&addr.to_string()))
    }

    /// Where owners change their password and manage their mailbox: the webmail's
    /// address (`https://<provider.hostname>[:port]/`), or `None` without a web listener.
    pub fn webmail_url(&self) -> Option<String> {
        let https = self.config.listen.https?;
        let host = &self.config.provider.hostname;
        let bound = self.https_port.load(std::sync::atomic::Ordering::Relaxed);
        Some(match if bound != 0 { bound } else { https.port() } {
            443 => format!("https://{host}/"),
            p => format!("https://{host}:{p}/"),
        })
    }

    /// Writes a blob off the executor for a commit of this store to refer to: durable
    /// once that commit returns ([`crate::store::BlobStore::put_staged`]), never before.
    pub async fn put_blob(&self, bytes: Arc<Vec<u8>>) -> Result<Blob, StoreError> {
        let store = self.store.clone();
        self.blocking(move || store.blobs().put_staged(&bytes))
            .await
    }

    /// Builds a signed message with `sign` and writes it as a staged blob (durable with
    /// the commit that refers to it, as [`Gateway::put_blob`]), in one trip to the
    /// blocking pool: signing and the file write are both blocking work, and each trip is
    /// a hand-off and a wake-up (a futex pair) on both sides. `sign` may return something
    /// of its own beside the message (`T`).
    pub async fn sign_and_stage<T: Send + 'static>(
        self: &Arc<Self>,
        sign: impl FnOnce(&Gateway) -> Result<(T, BuiltMessage), SmimeError> + Send + 'static,
    ) -> Result<(T, BuiltMessage, Blob), StageError> {
        let g = self.clone();
        self.blocking(move || {
            let (own, built) = sign(&g)?;
            let blob = g.store.blobs().put_staged(&built.bytes)?;
            Ok((own, built, blob))
        })
        .await
    }

    /// [`Gateway::sign_and_stage`] for a message alone (a receipt or a notice).
    pub async fn sign_and_stage_message(
        self: &Arc<Self>,
        sign: impl FnOnce(&Gateway) -> Result<BuiltMessage, SmimeError> + Send + 'static,
    ) -> Result<(BuiltMessage, Blob), StageError> {
        let ((), built, blob) = self.sign_and_stage(|g| Ok(((), sign(g)?))).await?;
        Ok((built, blob))
    }

    /// Reads a blob: from [`Gateway::recent`] if it was just written for this read, else
    /// off the executor from the store.
    pub async fn read_blob(&self, id: crate::store::BlobId) -> Result<Arc<Vec<u8>>, StoreError> {
        if let Some(bytes) = self.recent.take(&id) {
            return Ok(bytes);
        }
        let store = self.store.clone();
        self.blocking(move || store.blobs().read(&id))
            .await
            .map(Arc::new)
    }
}
