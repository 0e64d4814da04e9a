//! The provider index fetched from an LDAP directory (rules digest §8.1, §8.2; RFC 6109 §4.5)
//! and the periodic refresh of the local copy.
//!
//! Owns: one anonymous `(objectClass=provider)` subtree search under `index.ldap_base` of the
//! directory at `index.ldap_url` ([`fetch`]), the conversion of its result entries into the
//! LDIF entry model ([`LdifEntry`]) so that exactly the checks of an imported file apply
//! ([`ProviderRecord::from_entry`], [`ProviderIndex::new`]), the replacement of the local copy
//! `store.dir/index.ldif` ([`refresh`]) and the server task that does it every
//! `index.refresh_secs` ([`refresh_task`]).
//!
//! Untrusted input: everything the directory returns. Values travel as bytes (a
//! `providerCertificate;binary` value is DER); the search is bounded by a time limit, a size
//! limit of [`MAX_LDIF_ENTRIES`] entries and [`MAX_VALUE_BYTES`] per value. A refresh is
//! all-or-nothing: a connection error, a non-success result code, a malformed or duplicate
//! entry, or an empty result leaves the previous local copy (and the index in force)
//! untouched (digest §7: the local copy is critical, so nothing half-fetched replaces it).
//!
//! Transport (digest §7.4, §8.2: the index is the root of trust for provider signatures, so
//! it must come over a channel that authenticates the server): `ldaps://`, or `ldap://`
//! upgraded with StartTLS (`index.ldap_starttls`), with the directory's certificate and
//! name verified by rustls against the system roots plus `index.ldap_ca`. Plain `ldap://`
//! is used only when the configuration says `index.ldap_insecure = true` (config
//! validation refuses it otherwise) and is logged as a warning at every start of
//! [`refresh_task`] and every `pecd index refresh`. Digest §8.2 also mentions HTTPS with
//! client certificates: the bind stays anonymous here.
//!
//! Config keys read: `index.ldap_url`, `index.ldap_starttls`, `index.ldap_ca`,
//! `index.ldap_insecure`, `index.ldap_base`, `index.refresh_secs`, `store.dir`.

use std::sync::Arc;
use std::time::Duration;

use ldap3::{LdapConnAsync, LdapConnSettings, Scope, SearchEntry, SearchOptions};
use tokio::sync::watch;

use super::ldif::{LdifAttr, LdifEntry};
use super::{IndexError, MAX_LDIF_ENTRIES, MAX_VALUE_BYTES, ProviderIndex, ProviderRecord};
use crate::config::{Config, IndexConfig, is_ldaps};
use crate::gateway::Gateway;
use crate::tls::TlsError;

/// Longest wait for the TCP connection to the directory.
pub const LDAP_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the whole search (also sent to the server as its time limit).
pub const LDAP_SEARCH_TIMEOUT: Duration = Duration::from_secs(120);
/// The search filter: every entry of the `provider` object class (digest §8.1).
pub const PROVIDER_FILTER: &str = "(objectClass=provider)";

/// Why a refresh from LDAP failed. In every case the previous index stays in force.
#[derive(Debug, thiserror::Error)]
pub enum LdapIndexError {
    #[error("index.ldap_url is not set: there is no directory to refresh from")]
    NotConfigured,
    /// The TLS client configuration (system roots, `index.ldap_ca`) could not be built.
    #[error("TLS for {url}: {source}")]
    Tls {
        url: String,
        #[source]
        source: TlsError,
    },
    /// `error` is the client's message (kept as text: `ldap3`'s errors repeat their
    /// source in their message, so chaining them would print it twice).
    #[error("cannot connect to {url}: {error}")]
    Connect { url: String, error: String },
    #[error("searching {filter} under {base:?} at {url}: {error}")]
    Search {
        url: String,
        base: String,
        filter: &'static str,
        error: String,
    },
    #[error("{url} returned no provider entry under {base:?}")]
    Empty { url: String, base: String },
    #[error("a value of {attr} in {dn:?} is larger than {limit} bytes")]
    ValueTooLarge {
        dn: String,
        attr: String,
        limit: usize,
    },
    #[error("{} problem{} in the provider entries from {url}:{}", .errors.len(),
        if .errors.len() == 1 { "" } else { "s" }, list(.errors))]
    Invalid { url: String, errors: Vec<String> },
    #[error("saving the index: {0}")]
    Save(#[source] IndexError),
    #[error("the index is saved, but reloading it failed: {0}")]
    Reload(String),
}

fn list(errors: &[String]) -> String {
    errors.iter().map(|e| format!("\n  {e}")).collect()
}

/// What a successful refresh did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshReport {
    pub providers: usize,
    pub domains: usize,
    pub path: std::path::PathBuf,
}

/// How the connection to the directory is secured, from `index.ldap_url` and
/// `index.ldap_starttls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `ldaps://`: TLS from the first byte.
    Ldaps,
    /// `ldap://` upgraded with the StartTLS extended operation before anything else.
    StartTls,
    /// `ldap://` in clear: no server authentication (needs `index.ldap_insecure`).
    Plain,
}

impl Transport {
    pub fn of(url: &str, starttls: bool) -> Self {
        if is_ldaps(url) {
            Transport::Ldaps
        } else if starttls {
            Transport::StartTls
        } else {
            Transport::Plain
        }
    }
}

/// Logs the warning for a plain-LDAP directory (`index.ldap_insecure`); nothing otherwise.
pub fn warn_if_insecure(index: &IndexConfig) {
    if let Some(url) = &index.ldap_url
        && index.ldap_is_plain()
    {
        tracing::warn!(
            url = %url,
            "index.ldap_insecure: the provider index is fetched over plain LDAP, without \
             server authentication; anyone on the path can change which certificates sign \
             valid PEC (use ldaps:// or index.ldap_starttls)"
        );
    }
}

/// One search of the directory named by `index` (URL, base, TLS settings), turned into a
/// checked index. Nothing is written.
pub async fn fetch(index: &IndexConfig) -> Result<ProviderIndex, LdapIndexError> {
    let url = index
        .ldap_url
        .as_deref()
        .ok_or(LdapIndexError::NotConfigured)?;
    let base = index.ldap_base.as_str();
    let mut settings = LdapConnSettings::new().set_conn_timeout(LDAP_CONNECT_TIMEOUT);
    let transport = Transport::of(url, index.ldap_starttls);
    if transport != Transport::Plain {
        let config =
            crate::tls::client_config(index.ldap_ca.as_slice(), true).map_err(|source| {
                LdapIndexError::Tls {
                    url: url.to_string(),
                    source,
                }
            })?;
        settings = settings
            .set_config(config)
            .set_starttls(transport == Transport::StartTls);
    }
    let (conn, mut ldap) = LdapConnAsync::with_settings(settings, url)
        .await
        .map_err(|e| LdapIndexError::Connect {
            url: url.to_string(),
            error: e.to_string(),
        })?;
    let driver = tokio::spawn(async move {
        if let Err(e) = conn.drive().await {
            tracing::debug!(error = %e, "LDAP connection closed with an error");
        }
    });
    let search_err = |e: ldap3::LdapError| LdapIndexError::Search {
        url: url.to_string(),
        base: base.to_string(),
        filter: PROVIDER_FILTER,
        error: e.to_string(),
    };
    let limit_secs = i32::try_from(LDAP_SEARCH_TIMEOUT.as_secs()).unwrap_or(i32::MAX);
    let max_entries = i32::try_from(MAX_LDIF_ENTRIES).unwrap_or(i32::MAX);
    let result = ldap
        .with_search_options(
            SearchOptions::new()
                .timelimit(limit_secs)
                .sizelimit(max_entries),
        )
        .with_timeout(LDAP_SEARCH_TIMEOUT)
        .search(base, Scope::Subtree, PROVIDER_FILTER, vec!["*"])
        .await
        .and_then(|r| r.success());
    let _ = ldap.unbind().await;
    driver.abort();
    let (entries, _) = result.map_err(search_err)?;

    let mut ldif_entries = Vec::with_capacity(entries.len());
    for (n, raw) in entries.into_iter().enumerate() {
        ldif_entries.push(to_ldif_entry(n + 1, SearchEntry::construct(raw))?);
    }
    let mut records = Vec::new();
    let mut errors = Vec::new();
    for e in &ldif_entries {
        match ProviderRecord::from_entry(e) {
            Ok(Some(r)) => records.push(r),
            // Not a provider after all (the filter matched on a subtype): skipped, as an
            // LDIF import skips the `o=postacert` root.
            Ok(None) => {}
            Err(errs) => errors.extend(errs.iter().map(|x| describe(e.line, x))),
        }
    }
    if errors.is_empty() && records.is_empty() {
        return Err(LdapIndexError::Empty {
            url: url.to_string(),
            base: base.to_string(),
        });
    }
    let index = ProviderIndex::new(records);
    match index {
        Ok(index) if errors.is_empty() => Ok(index),
        Ok(_) => Err(LdapIndexError::Invalid {
            url: url.to_string(),
            errors,
        }),
        Err(e) => {
            errors.extend(e.errors().into_iter().map(|x| x.to_string()));
            Err(LdapIndexError::Invalid {
                url: url.to_string(),
                errors,
            })
        }
    }
}

/// An index error without the `line N: ` of LDIF (here N is the entry's position in the
/// search result, which the message names instead; the dn is in the message already).
fn describe(n: usize, e: &IndexError) -> String {
    let s = e.to_string();
    let text = s
        .strip_prefix(&format!("line {n}: "))
        .unwrap_or(&s)
        .to_string();
    format!("search result #{n}: {text}")
}

/// One search result entry in the LDIF entry model. Attribute descriptions are lower-cased
/// and split into type and options as the LDIF reader does (`providerCertificate;binary` →
/// `providercertificate` + `binary`); an index attribute named by OID gets its name.
fn to_ldif_entry(n: usize, se: SearchEntry) -> Result<LdifEntry, LdapIndexError> {
    let mut attrs = Vec::new();
    // `SearchEntry` keeps an attribute in `attrs` when all its values are UTF-8, in
    // `bin_attrs` otherwise; both are the exact bytes sent.
    let text = se.attrs.into_iter().map(|(k, vs)| {
        (
            k,
            vs.into_iter().map(String::into_bytes).collect::<Vec<_>>(),
        )
    });
    let mut all: Vec<(String, Vec<Vec<u8>>)> = text.chain(se.bin_attrs).collect();
    // HashMap order is random; a stable order gives stable error messages.
    all.sort_by(|a, b| a.0.cmp(&b.0));
    for (desc, values) in all {
        let desc = desc.to_ascii_lowercase();
        let (name, options) = super::ldif::attribute_description(&desc);
        for value in values {
            if value.len() > MAX_VALUE_BYTES {
                return Err(LdapIndexError::ValueTooLarge {
                    dn: se.dn.clone(),
                    attr: desc.clone(),
                    limit: MAX_VALUE_BYTES,
                });
            }
            attrs.push(LdifAttr {
                line: n,
                name: name.clone(),
                options: options.clone(),
                value,
            });
        }
    }
    Ok(LdifEntry {
        line: n,
        dn: se.dn,
        attrs,
    })
}

/// Fetches the index from `index.ldap_url` and, only if that fully succeeded, replaces
/// `store.dir/index.ldif` atomically. Does not touch a running server (see
/// [`refresh_task`] and the CLI, which reloads through the control socket).
pub async fn refresh(config: &Config) -> Result<RefreshReport, LdapIndexError> {
    let index = fetch(&config.index).await?;
    let path = ProviderIndex::default_path(config);
    let to_save = index.clone();
    let save_path = path.clone();
    // fsyncs: off the executor.
    tokio::task::spawn_blocking(move || to_save.save_atomic(&save_path))
        .await
        .map_err(|e| {
            LdapIndexError::Save(IndexError::Io {
                path: path.clone(),
                source: std::io::Error::other(e.to_string()),
            })
        })?
        .map_err(LdapIndexError::Save)?;
    Ok(RefreshReport {
        providers: index.len(),
        domains: index
            .records()
            .iter()
            .map(|r| r.managed_domains.len())
            .sum(),
        path,
    })
}

/// Refresh and reload into the running gateway.
async fn refresh_and_reload(gw: &Gateway) -> Result<RefreshReport, LdapIndexError> {
    let report = refresh(&gw.config).await?;
    gw.reload_index()
        .map_err(|e| LdapIndexError::Reload(e.to_string()))?;
    Ok(report)
}

/// The server task: when `index.ldap_url` is set, refreshes the index at start and then
/// every `index.refresh_secs`, until `stop` turns true. A failed refresh is logged and the
/// previous index stays in force until the next attempt.
pub async fn refresh_task(gw: Arc<Gateway>, mut stop: watch::Receiver<bool>) {
    let Some(url) = gw.config.index.ldap_url.clone() else {
        return;
    };
    let every = Duration::from_secs(gw.config.index.refresh_secs.max(1));
    warn_if_insecure(&gw.config.index);
    loop {
        if *stop.borrow() {
            return;
        }
        let attempt = tokio::select! {
            r = refresh_and_reload(&gw) => Some(r),
            _ = stop.changed() => None,
        };
        if let Some(r) = &attempt {
            crate::ops::metrics::index_refresh(r.is_ok());
        }
        match attempt {
            None => return,
            Some(Ok(r)) => tracing::info!(
                url = %url,
                providers = r.providers,
                domains = r.domains,
                "provider index refreshed from LDAP"
            ),
            Some(Err(e)) => tracing::error!(
                url = %url,
                error = %e,
                "provider index refresh from LDAP failed; the previous index stays in force"
            ),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(attrs: Vec<(&str, Vec<&[u8]>)>, bin: Vec<(&str, Vec<&[u8]>)>) -> SearchEntry {
        let conv = |v: Vec<(&str, Vec<&[u8]>)>| {
            v.into_iter()
                .map(|(k, vs)| (k.to_string(), vs.into_iter().map(<[u8]>::to_vec).collect()))
                .collect::<std::collections::HashMap<String, Vec<Vec<u8>>>>()
        };
        SearchEntry {
            dn: "providerName=X,o=postacert".into(),
            attrs: conv(attrs)
                .into_iter()
                .map(|(k, vs)| {
                    let vs = vs
                        .into_iter()
                        .map(|v| String::from_utf8(v).unwrap())
                        .collect();
                    (k, vs)
                })
                .collect(),
            bin_attrs: conv(bin),
        }
    }

    #[test]
    fn attribute_descriptions_are_normalised_like_ldif() {
        let se = entry(
            vec![
                ("objectClass", vec![b"top", b"provider"]),
                ("1.3.6.1.4.1.16572.2.2.5", vec![b"pec.example.it"]),
            ],
            vec![("providerCertificate;binary", vec![&[0x30, 0x82, 0xff]])],
        );
        let e = to_ldif_entry(3, se).unwrap();
        assert_eq!(e.line, 3);
        assert_eq!(e.values("objectclass").count(), 2);
        let d: Vec<_> = e.values("manageddomains").collect();
        assert_eq!(d[0].value, b"pec.example.it");
        let c: Vec<_> = e.values("providercertificate").collect();
        assert_eq!(c[0].options, vec!["binary".to_string()]);
        assert_eq!(c[0].value, vec![0x30, 0x82, 0xff]);
    }

    #[test]
    fn oversized_values_are_refused() {
        let big = vec![b'a'; MAX_VALUE_BYTES + 1];
        let se = entry(vec![], vec![("description", vec![&big])]);
        assert!(matches!(
            to_ldif_entry(1, se),
            Err(LdapIndexError::ValueTooLarge { .. })
        ));
    }

    #[test]
    fn errors_name_the_search_result_not_a_line() {
        let se = entry(vec![("objectClass", vec![b"provider"])], vec![]);
        let e = to_ldif_entry(2, se).unwrap();
        let errs = ProviderRecord::from_entry(&e).unwrap_err();
        let s = describe(2, &errs[0]);
        assert!(s.starts_with("search result #2: entry "), "{s}");
    }

    #[tokio::test]
    async fn unreachable_directory_is_a_connect_error() {
        // Port 1 on loopback: nothing listens there in a test environment.
        for (url, starttls) in [
            ("ldap://127.0.0.1:1", false),
            ("ldap://127.0.0.1:1", true),
            ("ldaps://127.0.0.1:1", false),
        ] {
            let index = IndexConfig {
                ldap_url: Some(url.into()),
                ldap_starttls: starttls,
                ldap_insecure: true,
                ..IndexConfig::default()
            };
            let r = fetch(&index).await;
            assert!(matches!(r, Err(LdapIndexError::Connect { .. })), "{r:?}");
        }
    }

    #[test]
    fn transport_follows_the_scheme_and_starttls() {
        assert_eq!(Transport::of("LDAPS://dir:636", false), Transport::Ldaps);
        assert_eq!(Transport::of("ldap://dir", true), Transport::StartTls);
        assert_eq!(Transport::of("ldap://dir", false), Transport::Plain);
    }
}
