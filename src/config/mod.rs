//! The one typed configuration tree (design principle 9).
//!
//! Owns: the `pecd.toml` file format, its defaults and bounds, and its validation. The file
//! is read, parsed and checked once, at start-up, by [`Config::load`]; nothing else in the
//! crate reads settings (no environment variables, no second file) — every module receives
//! the piece of [`Config`] it needs. The annotated example `config/pecd.toml` documents every
//! key; a unit test below keeps it in sync with this code.
//!
//! Untrusted input: the configuration text (operator-written, but still checked). Every
//! problem is collected and reported together in [`ConfigError::Invalid`], each naming its
//! key (`provider.domains[1]: "bad..dom" is not a valid domain`). That is why the file is
//! walked as a `toml::Table` instead of derived with serde: a derived `Deserialize` stops at
//! the first error. Unknown keys are errors (the equivalent of `deny_unknown_fields`), so a
//! typo cannot silently fall back to a default.
//!
//! Rules enforced here: DM 2/11/2005 art. 12 (a provider must accept at least 50 recipients
//! and a message whose recipients × size is up to 30 MB; rules digest §10), the 30-month
//! retention of the trace log (DPR 68/2005; digest §9), and the index rule that the service
//! addresses belong to the managed domains (digest §8.3). Relative paths are resolved against
//! the directory of the configuration file.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::pec::address::{Domain, PecAddress};
use crate::pec::smime::{Signer, TrustAnchors};

mod blobs;
mod store;
pub use store::PASSWORD_ENV;
mod parse;
mod plans;
mod validate;
mod walk;

#[cfg(test)]
mod tests;

use parse::parse;
pub use plans::{MAX_PLAN_NAME, Plan, UnknownPlan, valid_name as valid_plan_name};
pub use validate::check_host_port;

/// Where `pecd serve` and the admin subcommands look when no `--config` is given.
pub const DEFAULT_CONFIG_PATH: &str = "pecd-data/pecd.toml";

/// Local part of the default service address (`From:` of generated messages, digest §7.2).
pub const DEFAULT_SERVICE_LOCAL: &str = "posta-certificata";
/// 50 MiB, the usual market value (digest §10: Aruba 100 MB, common 50–100 MB).
pub const DEFAULT_MAX_MESSAGE_BYTES: u64 = 50 * 1024 * 1024;
/// DM 2/11/2005 art. 12: a message of recipients × size ≤ 30 MB must be accepted, so a single
/// recipient message of 30 MB must fit. MiB is used so both readings of "MB" are covered.
pub const MIN_MESSAGE_BYTES: u64 = 30 * 1024 * 1024;
/// Sanity ceiling: messages are buffered and signed whole.
pub const MAX_MESSAGE_BYTES_CEILING: u64 = 1024 * 1024 * 1024;
/// Size × recipients allowed per message by default: the market practice the rules digest
/// cites (§10: Aruba 100 MB), well above the legal floor of 30 MB (DM 2/11/2005 art. 12).
pub const DEFAULT_MAX_TOTAL_BYTES: u64 = 100 * 1024 * 1024;
pub const DEFAULT_MAX_RECIPIENTS: u32 = 500;
/// DM 2/11/2005 art. 12: at least 50 recipients must be accepted.
pub const MIN_RECIPIENTS: u32 = 50;
pub const MAX_RECIPIENTS_CEILING: u32 = 10_000;
pub const DEFAULT_QUOTA_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// Longest protocol command line (SMTP/IMAP/POP3), CRLF included: room for long IMAP
/// sequence sets without letting a peer buffer unbounded input. DATA lines on submission
/// keep RFC 5321 §4.5.3.1.6's 1000 whatever this says
/// ([`crate::smtp::session::SUBMISSION_DATA_LINE`]).
pub const DEFAULT_MAX_LINE_LENGTH: usize = 4096;
pub const MIN_LINE_LENGTH: usize = 1000;
pub const MAX_LINE_LENGTH_CEILING: usize = 1024 * 1024;
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: u32 = 20;
/// Simultaneous connections on one listener, and on all listeners together. An idle
/// session costs some tens of KiB (TLS buffers, session state; DATA goes to the spool), so
/// the defaults keep sessions alone well under 100 MiB.
pub const DEFAULT_MAX_CONNECTIONS_PER_LISTENER: u32 = 1000;
pub const DEFAULT_MAX_CONNECTIONS: u32 = 2000;
pub const MAX_CONNECTIONS_CEILING: u64 = 1_000_000;
/// Room for what a provider puts around an original in an envelope, a completa delivery
/// receipt or an anomaly envelope: headers, the text part, `daticert.xml` (base64, up to
/// `max_recipients` addresses) and the CMS signature with its certificate.
pub const ENVELOPE_OVERHEAD_BYTES: u64 = 1024 * 1024;
/// Ceiling of `limits.max_incoming_message_bytes`.
pub const MAX_INCOMING_MESSAGE_BYTES_CEILING: u64 = 4 * 1024 * 1024 * 1024;
/// `limits.max_inflight_data_bytes` when absent (or twice the largest incoming message, if
/// that is more).
pub const DEFAULT_MAX_INFLIGHT_DATA_BYTES: u64 = 1024 * 1024 * 1024;
/// `limits.max_processing_bytes` when absent, and its floor.
pub const DEFAULT_MAX_PROCESSING_BYTES: u64 = 256 * 1024 * 1024;
pub const MIN_PROCESSING_BYTES: u64 = 1024 * 1024;
/// The port of the admin listener (metrics, health) when `listen.admin` is absent.
pub const DEFAULT_ADMIN_PORT: u16 = 9465;
/// `limits.min_free_bytes` when absent.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 256 * 1024 * 1024;

/// The default of `limits.max_incoming_message_bytes` for a given `max_message_bytes`:
/// the largest message a provider legitimately builds around an original of that size,
/// whatever transfer encoding it gives the original (rules §2 item 6: a part with non-ASCII
/// octets gets QP or base64). Quoted-printable is the worst: an 8-bit octet becomes `=XX`
/// and a 76-column line carries 25 of them, 78 octets with its soft break, ×3.12; this
/// takes ×3.125 plus [`ENVELOPE_OVERHEAD_BYTES`].
pub fn default_incoming_message_bytes(max_message_bytes: u64) -> u64 {
    max_message_bytes
        .saturating_mul(25)
        .div_ceil(8)
        .saturating_add(ENVELOPE_OVERHEAD_BYTES)
}

/// The floor of `limits.max_incoming_message_bytes`: a maximum-size original in base64
/// (57 octets per 78-octet line, ×1.37) plus [`ENVELOPE_OVERHEAD_BYTES`]. Below it a
/// provider's ordinary envelope of a maximum-size message would be refused.
pub fn min_incoming_message_bytes(max_message_bytes: u64) -> u64 {
    max_message_bytes
        .saturating_mul(78)
        .div_ceil(57)
        .saturating_add(ENVELOPE_OVERHEAD_BYTES)
}
/// Failed logins allowed per client address (IPv4, IPv6 /64) and per account from one
/// address within `auth_lockout_secs`, across SMTP, IMAP and POP3 (see
/// [`crate::gateway::LoginLimiter`]).
pub const DEFAULT_AUTH_MAX_FAILURES: u32 = 10;
pub const DEFAULT_AUTH_LOCKOUT_SECS: u64 = 900;
/// How long a verified login spares the next ones of the same password their argon2 run
/// ([`crate::gateway::VerifiedLogins`]).
pub const DEFAULT_LOGIN_CACHE_SECS: u64 = 600;
/// RFC 5321 §4.5.3.2.7: a server should wait at least 5 minutes for the next command.
pub const DEFAULT_COMMAND_TIMEOUT_SECS: u64 = 300;
/// DPR 68/2005 (digest §9): the trace log is kept unmodified for 30 months.
pub const MIN_RETENTION_MONTHS: u32 = 30;
pub const DEFAULT_CHECKPOINT_EVERY: u64 = 1000;
pub const DEFAULT_CHECKPOINT_INTERVAL_SECS: u64 = 600;
/// Base of the national index (digest §8.1).
pub const DEFAULT_INDEX_LDAP_BASE: &str = "o=postacert";
/// Digest §8.2: each provider keeps a local copy of the index, refreshed daily.
pub const DEFAULT_INDEX_REFRESH_SECS: u64 = 86_400;
pub const MIN_INDEX_REFRESH_SECS: u64 = 60;

/// The whole configuration, valid by construction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The file it was read from (absolute when loaded with [`Config::load`]).
    pub path: PathBuf,
    pub provider: ProviderConfig,
    pub signing: SigningConfig,
    pub tls: TlsConfig,
    pub trust: TrustConfig,
    pub listen: ListenConfig,
    pub limits: LimitsConfig,
    pub store: StoreConfig,
    /// `[blobs]`: where message bodies are kept (default: `blobs/` in the store dir).
    pub blobs: crate::store::BlobBackend,
    pub trace: TraceConfig,
    /// Transport map: peer domain → `"host:port"` (tests and private networks).
    pub routes: BTreeMap<Domain, String>,
    pub relay: RelayConfig,
    pub antivirus: AntivirusConfig,
    pub antispam: AntispamConfig,
    pub archive: ArchiveConfig,
    /// `[plans.NAME]`: the service plans, by name.
    pub plans: BTreeMap<String, Plan>,
    pub index: IndexConfig,
    pub cns: CnsConfig,
}

/// `[provider]`: who we are (the index record, digest §8.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderConfig {
    /// `providerName` in the index and `gestore-emittente` in daticert.
    pub name: String,
    /// `managedDomains`: the PEC domains we host, at least one.
    pub domains: Vec<Domain>,
    /// `From:` of generated messages; default `posta-certificata@<first domain>`.
    pub service_address: PecAddress,
    /// `mailReceipt`: where other providers send take-charge receipts; default
    /// `service_address`.
    pub receipt_mailbox: PecAddress,
    /// FQDN used in the message identifier and in EHLO; default `mail.<first domain>`.
    pub hostname: String,
}

/// `[signing]`: the provider signing identity (digest §7.2). PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Intermediate certificates embedded in every signature.
    pub chain: Vec<PathBuf>,
    /// Earlier signing certificates (after a renewal, rules §8.1): trace checkpoints they
    /// signed still verify (`pecd log verify`). Default: none.
    pub previous_certs: Vec<PathBuf>,
}

/// `[tls]`: certificate and key of every TLS listener. PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `[trust]`: CAs trusted for provider signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustConfig {
    pub ca: Vec<PathBuf>,
    /// Directory of CRLs (`*.pem` / `*.crl`, PEM or DER) checked at the incoming point,
    /// reloaded when its files change (rules digest §6.2); `None` = no CRL check.
    pub crl_dir: Option<PathBuf>,
}

/// `[listen]`: one socket per listener; `None` = disabled (`"off"` in the file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenConfig {
    /// Incoming point: mail from other providers and the Internet (25, STARTTLS offered).
    pub smtp: Option<SocketAddr>,
    /// Access point, STARTTLS + AUTH (587).
    pub submission: Option<SocketAddr>,
    /// Access point, implicit TLS + AUTH (465).
    pub smtps: Option<SocketAddr>,
    pub imaps: Option<SocketAddr>,
    pub pop3s: Option<SocketAddr>,
    /// The web face: JMAP API and the built-in webmail, over TLS (the `[tls]` certificate).
    pub https: Option<SocketAddr>,
    /// The address came from the old key `http` (read for compatibility, with a warning
    /// at start-up).
    pub https_from_old_key: bool,
    /// The admin listener, plain HTTP: `/metrics`, `/healthz`, `/readyz` ([`crate::ops`]).
    /// Loopback by default.
    pub admin: Option<SocketAddr>,
    /// The web face again, asking browsers for a smart-card (CNS) certificate: a listener
    /// of its own so that password users are never prompted. Off unless given; needs
    /// `[cns] ca`.
    pub https_cns: Option<SocketAddr>,
}

/// `[cns]`: smart-card (CNS, *Carta Nazionale dei Servizi*) login: the CAs and CRLs a
/// card must pass to be associated with a mailbox (`pecd mailbox cert add`) and to log
/// in. Without `ca`, no card can be associated and no client certificate is asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CnsConfig {
    /// The CNS issuing CAs trusted for login (PEM files).
    pub ca: Vec<PathBuf>,
    /// Their CRLs (`*.pem`/`*.crl`, reloaded on change as for `trust.crl_dir`).
    pub crl_dir: Option<PathBuf>,
}

/// `[limits]`: the named limits of design principle 5.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Largest message accepted, bytes (≥ 30 MiB by DM 2/11/2005 art. 12).
    pub max_message_bytes: u64,
    /// Largest size × number of recipients of one message, bytes (rules §6.1: the size
    /// limit applies to the product; DM 2/11/2005 art. 12: at least 30 MB must be
    /// accepted). ≥ `max_message_bytes`; default 100 MiB, or `max_message_bytes` if larger.
    pub max_total_bytes: u64,
    /// Most recipients of one message (≥ 50 by DM 2/11/2005 art. 12).
    pub max_recipients: u32,
    /// Quota of a new mailbox, bytes (≥ `max_message_bytes`).
    pub default_quota_bytes: u64,
    /// Longest protocol line, CRLF included (≥ 1000, RFC 5321 §4.5.3.1.6).
    pub max_line_length: usize,
    /// Simultaneous connections from one IP address, across all listeners.
    pub max_connections_per_ip: u32,
    /// Simultaneous connections on one listener.
    pub max_connections_per_listener: u32,
    /// Simultaneous connections on all listeners together.
    pub max_connections: u32,
    /// Networks with their own limit: connections from all addresses of the network
    /// together, across all listeners, instead of `max_connections_per_ip` (e.g. an
    /// institution behind one NAT address). The most specific prefix containing an
    /// address wins.
    pub network_connections: Vec<(ipnet::IpNet, u32)>,
    /// Largest message accepted on the `smtp` listener (25) from other providers and the
    /// Internet: envelopes, receipts and anomaly envelopes built around a maximum-size
    /// original are larger than it ([`default_incoming_message_bytes`]).
    pub max_incoming_message_bytes: u64,
    /// DATA bytes being received (spooled to disk, not yet answered) at once, per SMTP
    /// role (`smtp`; `smtps` + `submission`); past it a transfer is refused with 452 4.3.1.
    pub max_inflight_data_bytes: u64,
    /// Bytes of finished messages being processed (read back into memory) at once, per
    /// SMTP role; a message larger than this waits for the whole budget.
    pub max_processing_bytes: u64,
    /// Free space the store's filesystem keeps in reserve (like Postfix's
    /// `queue_minfree`): a new message is refused with 452 4.3.1 while accepting it would
    /// leave less than this plus three times its size (its envelope, receipts and copies),
    /// so the work already accepted (deliveries, receipts, the trace) always finds room.
    pub min_free_bytes: u64,
    /// Idle time allowed between two commands.
    pub command_timeout_secs: u64,
    /// Failed logins allowed per client address (IPv4, IPv6 /64) and per account from
    /// one address within `auth_lockout_secs` (4× per IPv6 /48); past that, logins from
    /// that address (for accounts it has not logged in to recently) / for that account
    /// from that address are refused unchecked until the oldest failure is
    /// `auth_lockout_secs` old. Failures from other addresses never lock an account out
    /// of its known addresses (semantics in [`crate::gateway::LoginLimiter`]).
    pub auth_max_failures: u32,
    /// The sliding window of `auth_max_failures`, seconds: one lockout lasts at most this
    /// long, but a client that keeps failing is locked again at once.
    pub auth_lockout_secs: u64,
    /// Seconds a password found right by argon2 is taken as right again without it, while
    /// the mailbox's stored hash is unchanged; 0 turns the cache off
    /// ([`crate::gateway::VerifiedLogins`]).
    pub login_cache_secs: u64,
}

/// `[store]`: the store's directory and its database engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    pub dir: PathBuf,
    /// Batch fsyncs of concurrent commits (durability is unchanged: a commit returns only
    /// after its batch is synced).
    pub group_commit: bool,
    /// `backend`: sled in `dir/db` (default) or PostgreSQL.
    pub backend: crate::store::StoreBackend,
    /// `standby`: when another node writes the (PostgreSQL) store, `pecd serve` waits
    /// and takes over when that node goes, instead of refusing to start.
    pub standby: bool,
    /// `lease_secs`: with several writers, how long a node holds a queue item it works on
    /// before another may take it over.
    pub lease_secs: u64,
}

impl StoreConfig {
    /// `several_writers`: every node writes the (PostgreSQL) store and serves; one of
    /// them at a time, elected, runs the duties only one may run (timers, notifications,
    /// upkeep); every node works the queue, each item leased to one.
    pub fn several_writers(&self) -> bool {
        matches!(&self.backend, crate::store::StoreBackend::Postgres(pg) if pg.several_writers)
    }
}

/// `[trace]`: the trace log (registro, digest §9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceConfig {
    pub retention_months: u32,
    /// A signed checkpoint every this many records...
    pub checkpoint_every: u64,
    /// ...or after this many seconds, whichever comes first.
    pub checkpoint_interval_secs: u64,
}

/// `[relay]`: outgoing SMTP to other providers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayConfig {
    /// Extra CA files trusted for peers' TLS certificates.
    pub trusted_ca: Vec<PathBuf>,
    /// Outbound SMTP transactions in flight at once, every destination together.
    pub max_transactions: usize,
    /// Outbound SMTP transactions in flight at once to one destination domain (its
    /// connections: each transaction holds one).
    pub max_transactions_per_domain: usize,
}

/// `relay.max_transactions` by default: Postfix's `default_process_limit` (its SMTP
/// clients at once).
pub const DEFAULT_RELAY_TRANSACTIONS: usize = 100;
/// `relay.max_transactions_per_domain` by default: Postfix's
/// `default_destination_concurrency_limit`, and what a peer accepts from one address
/// (pecd's own `limits.max_connections_per_ip` is 20 by default: one more connection would
/// be refused, and its message retried a minute later).
pub const DEFAULT_RELAY_TRANSACTIONS_PER_DOMAIN: usize = 20;
/// The most either relay limit may be set to.
pub const RELAY_TRANSACTIONS_CEILING: u64 = 10_000;

/// `[antivirus]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AntivirusConfig {
    /// clamd: `"host:port"` or an absolute unix socket path; `None` = no scanning.
    pub clamd: Option<String>,
}

/// `[archive]`: every mailbox's security archive (*archivio di sicurezza*).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveConfig {
    /// The size of an archive whose mailbox is on no plan (or on a plan without
    /// `archive_bytes`), bytes; 0 turns archiving off for them.
    pub default_bytes: u64,
    /// Archived messages are kept at least this long; only older ones make room.
    pub retention_months: u32,
}

impl Config {
    /// How the store is opened under this configuration (the options every opener of
    /// `store.dir` must agree on: the server and the admin commands).
    pub fn store_options(
        &self,
        clock: crate::clock::SharedClock,
        signer: Option<std::sync::Arc<crate::pec::smime::Signer>>,
    ) -> crate::store::StoreOptions {
        crate::store::StoreOptions {
            group_commit: self.store.group_commit,
            clock,
            signer,
            checkpoint_every: self.trace.checkpoint_every,
            checkpoint_interval: std::time::Duration::from_secs(
                self.trace.checkpoint_interval_secs,
            ),
            retention_months: self.trace.retention_months,
            domains: self.provider.domains.clone(),
            default_quota_bytes: self.limits.default_quota_bytes,
            archive: self.archive.policy(),
            blobs: self.blobs.clone(),
            backend: self.store.backend.clone(),
            ..crate::store::StoreOptions::default()
        }
    }
}

impl ArchiveConfig {
    /// The store's view of it.
    pub fn policy(&self) -> crate::store::archive::ArchivePolicy {
        crate::store::archive::ArchivePolicy {
            default_bytes: self.default_bytes,
            retention_months: self.retention_months,
        }
    }
}

/// `[antispam]`: the spam filter for non-certified mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AntispamConfig {
    /// SpamAssassin's spamd: `"host:port"` or an absolute unix socket path; `None` = no
    /// scanning.
    pub spamd: Option<String>,
}

/// `[index]`: where the provider index is refreshed from, besides `pecd index import`
/// (digest §8.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexConfig {
    /// `ldaps://host[:port]` or `ldap://host[:port]` of a directory holding the index;
    /// `None` = no periodic refresh.
    pub ldap_url: Option<String>,
    /// Search base of the `(objectClass=provider)` search.
    pub ldap_base: String,
    /// Seconds between two refreshes (at most a day, digest §8.2).
    pub refresh_secs: u64,
    /// `ldap://` upgraded with StartTLS (RFC 4513 §3) before the search.
    pub ldap_starttls: bool,
    /// A PEM file of CAs trusted for the directory's certificate, besides the system roots.
    pub ldap_ca: Option<PathBuf>,
    /// Plain `ldap://` (no TLS, no server authentication) explicitly allowed.
    pub ldap_insecure: bool,
}

impl IndexConfig {
    /// True when the directory is reached without TLS (`ldap://` without StartTLS): only
    /// accepted with `ldap_insecure`, digest §8.2 wants an authenticated channel.
    pub fn ldap_is_plain(&self) -> bool {
        self.ldap_url
            .as_deref()
            .is_some_and(|u| !is_ldaps(u) && !self.ldap_starttls)
    }
}

/// Whether an LDAP URL names LDAP over TLS (`ldaps://`, any case).
pub fn is_ldaps(url: &str) -> bool {
    url.get(..8)
        .is_some_and(|s| s.eq_ignore_ascii_case("ldaps://"))
}

impl Default for IndexConfig {
    fn default() -> Self {
        Self {
            ldap_url: None,
            ldap_base: DEFAULT_INDEX_LDAP_BASE.to_string(),
            refresh_secs: DEFAULT_INDEX_REFRESH_SECS,
            ldap_starttls: false,
            ldap_ca: None,
            ldap_insecure: false,
        }
    }
}

impl Default for ListenConfig {
    /// Production standard ports on all interfaces.
    fn default() -> Self {
        let any = |port| Some(SocketAddr::from(([0, 0, 0, 0], port)));
        Self {
            smtp: any(25),
            submission: any(587),
            smtps: any(465),
            imaps: any(993),
            pop3s: any(995),
            https: any(443),
            https_from_old_key: false,
            admin: Some(SocketAddr::from(([127, 0, 0, 1], DEFAULT_ADMIN_PORT))),
            https_cns: None,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_total_bytes: DEFAULT_MAX_TOTAL_BYTES,
            max_recipients: DEFAULT_MAX_RECIPIENTS,
            default_quota_bytes: DEFAULT_QUOTA_BYTES,
            max_line_length: DEFAULT_MAX_LINE_LENGTH,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            max_connections_per_listener: DEFAULT_MAX_CONNECTIONS_PER_LISTENER,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            network_connections: Vec::new(),
            max_incoming_message_bytes: default_incoming_message_bytes(DEFAULT_MAX_MESSAGE_BYTES),
            max_inflight_data_bytes: DEFAULT_MAX_INFLIGHT_DATA_BYTES
                .max(2 * default_incoming_message_bytes(DEFAULT_MAX_MESSAGE_BYTES)),
            max_processing_bytes: DEFAULT_MAX_PROCESSING_BYTES,
            min_free_bytes: DEFAULT_MIN_FREE_BYTES,
            command_timeout_secs: DEFAULT_COMMAND_TIMEOUT_SECS,
            auth_max_failures: DEFAULT_AUTH_MAX_FAILURES,
            auth_lockout_secs: DEFAULT_AUTH_LOCKOUT_SECS,
            login_cache_secs: DEFAULT_LOGIN_CACHE_SECS,
        }
    }
}

impl Default for TraceConfig {
    fn default() -> Self {
        Self {
            retention_months: MIN_RETENTION_MONTHS,
            checkpoint_every: DEFAULT_CHECKPOINT_EVERY,
            checkpoint_interval_secs: DEFAULT_CHECKPOINT_INTERVAL_SECS,
        }
    }
}

/// One configuration problem: the key it concerns and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Errors of this module, by cause.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not valid TOML: {message}", .path.display())]
    Syntax { path: PathBuf, message: String },
    #[error("{}", render_problems(.path, .problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
    /// A referenced credential file exists but cannot be used (bad PEM, key mismatch...).
    #[error("{}: {key}: {detail}", .path.display())]
    Credentials {
        path: PathBuf,
        key: &'static str,
        detail: String,
    },
}

impl ConfigError {
    /// The collected problems of an [`ConfigError::Invalid`] (empty for other variants).
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid { problems, .. } => problems,
            _ => &[],
        }
    }
}

fn render_problems(path: &Path, problems: &[Problem]) -> String {
    let mut s = format!(
        "{}: {} configuration error{}:",
        path.display(),
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    for p in problems {
        s.push_str("\n  ");
        s.push_str(&p.to_string());
    }
    s
}

impl Config {
    /// Reads, parses and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let read_err = |source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        };
        let abs = std::path::absolute(path).map_err(read_err)?;
        let text = std::fs::read_to_string(&abs).map_err(read_err)?;
        let base = abs.parent().unwrap_or(Path::new("/"));
        Self::from_toml_str(&text, base, &abs)
    }

    /// Parses and validates `text`; relative paths are resolved against `base_dir`, and
    /// `path_for_messages` names the file in errors (and becomes [`Config::path`]).
    pub fn from_toml_str(
        text: &str,
        base_dir: &Path,
        path_for_messages: &Path,
    ) -> Result<Config, ConfigError> {
        parse(text, base_dir, path_for_messages).0
    }

    /// Loads the signing identity from `signing.cert`, `signing.key` and `signing.chain`.
    pub fn load_signer(&self) -> Result<Signer, ConfigError> {
        let cert = self.read_file("signing.cert", &self.signing.cert)?;
        let key = self.read_file("signing.key", &self.signing.key)?;
        let mut chain = Vec::new();
        for p in &self.signing.chain {
            chain.extend_from_slice(&self.read_file("signing.chain", p)?);
            chain.push(b'\n');
        }
        let signer =
            Signer::from_pem(&cert, &key, &chain).map_err(|e| ConfigError::Credentials {
                path: self.path.clone(),
                key: "signing",
                detail: e.to_string(),
            })?;
        // Rules digest §2 item 2: the `From:` of every generated message must equal the
        // address in the signing certificate, so a mismatch would make every receipt
        // unverifiable by clients.
        let cert_address = signer.address().and_then(|a| PecAddress::parse(&a).ok());
        match cert_address {
            Some(a) if a.same_mailbox(&self.provider.service_address) => Ok(signer),
            other => Err(ConfigError::Credentials {
                path: self.path.clone(),
                key: "signing.cert",
                detail: format!(
                    "the certificate's e-mail address is {} but provider.service_address is {} \
                     (they must be equal: rules §2 item 2)",
                    other.map_or_else(|| "missing".to_string(), |a| a.to_string()),
                    self.provider.service_address
                ),
            }),
        }
    }

    /// The CAs of `trust.ca`, or `None` when the list is empty.
    pub fn load_trust(&self) -> Result<Option<TrustAnchors>, ConfigError> {
        if self.trust.ca.is_empty() {
            return Ok(None);
        }
        let mut bundle = Vec::new();
        for p in &self.trust.ca {
            bundle.extend_from_slice(&self.read_file("trust.ca", p)?);
            bundle.push(b'\n');
        }
        TrustAnchors::from_pem(&bundle)
            .map(Some)
            .map_err(|e| ConfigError::Credentials {
                path: self.path.clone(),
                key: "trust.ca",
                detail: e.to_string(),
            })
    }

    /// The CRLs of `trust.crl_dir` (signatures checked against `trust.ca` where the issuer
    /// is there), or `None` when the key is not set.
    pub fn load_crls(&self) -> Result<Option<crate::pec::crl::CrlStore>, ConfigError> {
        let Some(dir) = &self.trust.crl_dir else {
            return Ok(None);
        };
        let mut cas = Vec::new();
        for p in &self.trust.ca {
            let pem = self.read_file("trust.ca", p)?;
            cas.extend(openssl::x509::X509::stack_from_pem(&pem).map_err(|e| {
                ConfigError::Credentials {
                    path: self.path.clone(),
                    key: "trust.ca",
                    detail: format!("{}: {e}", p.display()),
                }
            })?);
        }
        crate::pec::crl::CrlStore::open(dir, cas)
            .map(Some)
            .map_err(|e| ConfigError::Credentials {
                path: self.path.clone(),
                key: "trust.crl_dir",
                detail: e.to_string(),
            })
    }

    /// The smart-card trust of `[cns]`, or `None` when no CNS CA is configured.
    pub fn load_cns(&self) -> Result<Option<crate::cns::CnsTrust>, ConfigError> {
        if self.cns.ca.is_empty() {
            return Ok(None);
        }
        let mut cas = Vec::new();
        for p in &self.cns.ca {
            let pem = self.read_file("cns.ca", p)?;
            cas.extend(openssl::x509::X509::stack_from_pem(&pem).map_err(|e| {
                ConfigError::Credentials {
                    path: self.path.clone(),
                    key: "cns.ca",
                    detail: format!("{}: {e}", p.display()),
                }
            })?);
        }
        let crls = match &self.cns.crl_dir {
            Some(dir) => Some(std::sync::Arc::new(
                crate::pec::crl::CrlStore::open(dir, cas.clone()).map_err(|e| {
                    ConfigError::Credentials {
                        path: self.path.clone(),
                        key: "cns.crl_dir",
                        detail: e.to_string(),
                    }
                })?,
            )),
            None => None,
        };
        crate::cns::CnsTrust::new(cas, crls)
            .map(Some)
            .map_err(|e| ConfigError::Credentials {
                path: self.path.clone(),
                key: "cns.ca",
                detail: e.to_string(),
            })
    }

    fn read_file(&self, key: &'static str, p: &Path) -> Result<Vec<u8>, ConfigError> {
        std::fs::read(p).map_err(|e| ConfigError::Credentials {
            path: self.path.clone(),
            key,
            detail: format!("cannot read {}: {e}", p.display()),
        })
    }
}
