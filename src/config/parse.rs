//! The whole parse of one `pecd.toml`: every section in turn, the simple ones inline, then
//! the unknown top-level keys, then the assembly of a [`Config`] if nothing was wrong.

use std::path::Path;

use toml::Table;

use super::validate::{check_host_port, index, limits, listen, provider, routes};
use super::walk::{Problems, Section, file_key, file_list, resolve};
use super::{
    AntispamConfig, AntivirusConfig, ArchiveConfig, CnsConfig, Config, ConfigError,
    DEFAULT_CHECKPOINT_EVERY, DEFAULT_CHECKPOINT_INTERVAL_SECS, DEFAULT_RELAY_TRANSACTIONS,
    DEFAULT_RELAY_TRANSACTIONS_PER_DOMAIN, MIN_RETENTION_MONTHS, RELAY_TRANSACTIONS_CEILING,
    RelayConfig, SigningConfig, TlsConfig, TraceConfig, TrustConfig,
};

/// The whole parse; also returns the keys the text left to their defaults.
pub(super) fn parse(
    text: &str,
    base: &Path,
    path: &Path,
) -> (Result<Config, ConfigError>, Vec<String>) {
    let mut root: Table = match toml::from_str(text) {
        Ok(t) => t,
        Err(e) => {
            let err = ConfigError::Syntax {
                path: path.to_path_buf(),
                message: e.to_string().trim_end().to_string(),
            };
            return (Err(err), Vec::new());
        }
    };
    let mut errs = Problems::default();
    let mut absent = Vec::new();

    let provider = provider(&mut root, &mut errs, &mut absent);

    let mut sec = Section::take(&mut root, "signing", &mut errs);
    let signing_cert = file_key(&mut sec, "cert", base, &mut errs);
    let signing_key = file_key(&mut sec, "key", base, &mut errs);
    let signing_chain = file_list(&mut sec, "chain", base, &mut errs);
    let signing_previous = file_list(&mut sec, "previous_certs", base, &mut errs);
    sec.finish(&mut errs, &mut absent);

    let mut sec = Section::take(&mut root, "tls", &mut errs);
    let tls_cert = file_key(&mut sec, "cert", base, &mut errs);
    let tls_key = file_key(&mut sec, "key", base, &mut errs);
    sec.finish(&mut errs, &mut absent);

    let mut sec = Section::take(&mut root, "trust", &mut errs);
    let ca = file_list(&mut sec, "ca", base, &mut errs);
    let trust_crls = crl_dir(&mut sec, base, &ca, &mut errs);
    let trust = TrustConfig {
        ca,
        crl_dir: trust_crls,
    };
    sec.finish(&mut errs, &mut absent);

    let listen = listen(&mut root, &mut errs, &mut absent);
    let limits = limits(&mut root, &mut errs, &mut absent);

    let store = super::store::store(&mut root, base, &mut errs, &mut absent);

    let blobs = super::blobs::blobs(&mut root, base, &mut errs, &mut absent);
    if store.standby && matches!(blobs, crate::store::BlobBackend::Dir) {
        errs.push(
            "store.standby",
            "a standby needs [blobs] backend = \"s3\": the bodies in one machine's store.dir \
             are not there for the node that takes over",
        );
    }
    if store.several_writers() && matches!(blobs, crate::store::BlobBackend::Dir) {
        errs.push(
            "store.several_writers",
            "several writers need [blobs] backend = \"s3\": the bodies one node accepted in its \
             store.dir are not there for the node that relays or delivers them",
        );
    }

    let mut sec = Section::take(&mut root, "trace", &mut errs);
    let retention_rule = "DPR 68/2005 requires the trace log to be kept for at least 30 months";
    let trace = TraceConfig {
        retention_months: sec
            .uint(
                "retention_months",
                MIN_RETENTION_MONTHS.into(),
                (MIN_RETENTION_MONTHS.into(), 1200),
                retention_rule,
                &mut errs,
            )
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(MIN_RETENTION_MONTHS),
        checkpoint_every: sec
            .uint(
                "checkpoint_every",
                DEFAULT_CHECKPOINT_EVERY,
                (1, 10_000_000),
                "",
                &mut errs,
            )
            .unwrap_or(DEFAULT_CHECKPOINT_EVERY),
        checkpoint_interval_secs: sec
            .uint(
                "checkpoint_interval_secs",
                DEFAULT_CHECKPOINT_INTERVAL_SECS,
                (1, 86_400),
                "",
                &mut errs,
            )
            .unwrap_or(DEFAULT_CHECKPOINT_INTERVAL_SECS),
    };
    sec.finish(&mut errs, &mut absent);

    let routes = routes(&mut root, &mut errs);
    let plans = super::plans::plans(&mut root, limits.max_message_bytes, &mut errs);

    let mut sec = Section::take(&mut root, "relay", &mut errs);
    let trusted_ca = file_list(&mut sec, "trusted_ca", base, &mut errs);
    let mut transactions = |k, d: usize| {
        sec.uint(k, d as u64, (1, RELAY_TRANSACTIONS_CEILING), "", &mut errs)
            .and_then(|v| usize::try_from(v).ok())
            .unwrap_or(d)
    };
    let max_transactions = transactions("max_transactions", DEFAULT_RELAY_TRANSACTIONS);
    let max_transactions_per_domain = transactions(
        "max_transactions_per_domain",
        DEFAULT_RELAY_TRANSACTIONS_PER_DOMAIN.min(max_transactions),
    );
    if max_transactions_per_domain > max_transactions {
        errs.push(
            "relay.max_transactions_per_domain",
            format!(
                "{max_transactions_per_domain} is above relay.max_transactions ({max_transactions})"
            ),
        );
    }
    let relay = RelayConfig {
        trusted_ca,
        max_transactions,
        max_transactions_per_domain,
    };
    sec.finish(&mut errs, &mut absent);

    let mut sec = Section::take(&mut root, "antivirus", &mut errs);
    let clamd = sec.string("clamd", &mut errs);
    if let Some(c) = &clamd {
        let unix = c.starts_with('/');
        if !unix && let Err(e) = check_host_port(c) {
            errs.push(
                "antivirus.clamd",
                format!("{e}; expected \"host:port\" or an absolute unix socket path"),
            );
        }
    }
    sec.finish(&mut errs, &mut absent);

    let mut sec = Section::take(&mut root, "antispam", &mut errs);
    let spamd = sec.string("spamd", &mut errs);
    if let Some(c) = &spamd
        && let Err(e) = crate::daemon::DaemonAddr::parse(c)
    {
        errs.push(
            "antispam.spamd",
            format!("{e}; expected \"host:port\" or an absolute unix socket path"),
        );
    }
    sec.finish(&mut errs, &mut absent);

    let mut sec = Section::take(&mut root, "archive", &mut errs);
    let d = crate::store::archive::ArchivePolicy::default();
    let default_bytes = sec.uint(
        "default_bytes",
        d.default_bytes,
        (0, u64::MAX >> 1),
        "",
        &mut errs,
    );
    if let Some(b) = default_bytes
        && b != 0
        && b < limits.max_message_bytes
    {
        errs.push(
            "archive.default_bytes",
            format!(
                "{b} is below limits.max_message_bytes ({}): a largest message could never \
                 be archived (0 turns the archive off)",
                limits.max_message_bytes
            ),
        );
    }
    let archive = ArchiveConfig {
        default_bytes: default_bytes.unwrap_or(d.default_bytes),
        retention_months: sec
            .uint(
                "retention_months",
                d.retention_months.into(),
                (1, 1200),
                "",
                &mut errs,
            )
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(d.retention_months),
    };
    // Optional as a whole: a configuration from before it existed is complete.
    sec.absent.clear();
    sec.finish(&mut errs, &mut absent);

    let index = index(&mut root, base, &mut errs, &mut absent);

    let mut sec = Section::take(&mut root, "cns", &mut errs);
    let cns_ca = file_list(&mut sec, "ca", base, &mut errs);
    let cns_crl_dir = crl_dir(&mut sec, base, &cns_ca, &mut errs);
    if cns_crl_dir.is_some() && cns_ca.is_empty() {
        errs.push("cns.crl_dir", "needs cns.ca (the CAs whose CRLs these are)");
    }
    if listen.https_cns.is_some() && cns_ca.is_empty() {
        errs.push(
            "listen.https_cns",
            "the smart-card web listener needs [cns] ca (the CAs of the cards)",
        );
    }
    let cns = CnsConfig {
        ca: cns_ca,
        crl_dir: cns_crl_dir,
    };
    // The whole section is optional: not part of the documented file.
    sec.absent.clear();
    sec.finish(&mut errs, &mut absent);

    for k in root.keys() {
        errs.push(
            k.clone(),
            "unknown section or key (known: provider, signing, tls, trust, listen, limits, \
             store, blobs, trace, routes, relay, antivirus, antispam, archive, plans, index, cns)",
        );
    }

    let (Some(provider), Some(sc), Some(sk), Some(tc), Some(tk)) =
        (provider, signing_cert, signing_key, tls_cert, tls_key)
    else {
        // Every `None` above has pushed its problem; the guard keeps the error non-empty
        // should a future edit forget to.
        if errs.0.is_empty() {
            errs.push("(config)", "incomplete configuration");
        }
        return (Err(invalid(path, errs)), absent);
    };
    if !errs.0.is_empty() {
        return (Err(invalid(path, errs)), absent);
    }
    let config = Config {
        path: path.to_path_buf(),
        provider,
        signing: SigningConfig {
            cert: sc,
            key: sk,
            chain: signing_chain,
            previous_certs: signing_previous,
        },
        tls: TlsConfig { cert: tc, key: tk },
        trust,
        listen,
        limits,
        store,
        blobs,
        trace,
        routes,
        relay,
        antivirus: AntivirusConfig { clamd },
        antispam: AntispamConfig { spamd },
        archive,
        plans,
        index,
        cns,
    };
    (Ok(config), absent)
}

fn invalid(path: &Path, errs: Problems) -> ConfigError {
    ConfigError::Invalid {
        path: path.to_path_buf(),
        problems: errs.0,
    }
}

/// `trust.crl_dir`: a readable directory whose every `*.pem` / `*.crl` file is a CRL
/// (checked against its issuer among the `trust.ca` certificates when there); each file
/// that does not load is reported by name (rules digest §6.2, "check CRL").
fn crl_dir(
    sec: &mut Section,
    base: &Path,
    ca: &[std::path::PathBuf],
    errs: &mut Problems,
) -> Option<std::path::PathBuf> {
    let key = sec.key("crl_dir");
    let dir = resolve(base, &key, &sec.string("crl_dir", errs)?, errs)?;
    if !dir.is_dir() {
        errs.push(key, format!("{} is not a directory", dir.display()));
        return None;
    }
    // Unreadable CA files are reported under `trust.ca` (and at `load_trust`).
    let cas: Vec<openssl::x509::X509> = ca
        .iter()
        .filter_map(|p| std::fs::read(p).ok())
        .filter_map(|pem| openssl::x509::X509::stack_from_pem(&pem).ok())
        .flatten()
        .collect();
    match crate::pec::crl::CrlSet::load_dir(&dir, &cas) {
        Ok((_, problems)) if problems.is_empty() => Some(dir),
        Ok((_, problems)) => {
            for p in problems {
                errs.push(key.clone(), p.to_string());
            }
            None
        }
        Err(e) => {
            errs.push(key, e.to_string());
            None
        }
    }
}
