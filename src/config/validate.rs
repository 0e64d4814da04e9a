//! The sections with cross-field rules: `[provider]` (service addresses in the managed
//! domains, digest §8.3), `[listen]` (no two listeners on one socket), `[limits]` (the
//! DM 2/11/2005 art. 12 minimums, quota ≥ largest message), `[routes]` and `[index]` (the
//! LDAP URL and the daily refresh of digest §8.2); plus the `"host:port"` check shared with
//! `[antivirus]`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use toml::{Table, Value};

use super::walk::{Problems, Section, optional_file_key, type_name};
use super::{
    DEFAULT_MAX_INFLIGHT_DATA_BYTES, DEFAULT_MAX_TOTAL_BYTES, DEFAULT_SERVICE_LOCAL, IndexConfig,
    LimitsConfig, ListenConfig, MAX_CONNECTIONS_CEILING, MAX_INCOMING_MESSAGE_BYTES_CEILING,
    MAX_LINE_LENGTH_CEILING, MAX_MESSAGE_BYTES_CEILING, MAX_RECIPIENTS_CEILING,
    MIN_INDEX_REFRESH_SECS, MIN_LINE_LENGTH, MIN_MESSAGE_BYTES, MIN_PROCESSING_BYTES,
    MIN_RECIPIENTS, ProviderConfig, default_incoming_message_bytes, min_incoming_message_bytes,
};
use crate::pec::address::{Domain, PecAddress};

/// Checks `"host:port"` where host is an IP (IPv6 in brackets) or a DNS name.
pub fn check_host_port(s: &str) -> Result<(), String> {
    if s.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!("{s:?} is not \"host:port\" (no port)"));
    };
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => return Err(format!("{s:?} is not \"host:port\" (bad port {port:?})")),
    }
    if host.contains(':') || host.trim() != host || Domain::parse(host).is_err() {
        return Err(format!(
            "{s:?} is not \"host:port\" (bad host {host:?}; IPv6 goes in brackets)"
        ));
    }
    Ok(())
}

pub(super) fn provider(
    root: &mut Table,
    errs: &mut Problems,
    absent: &mut Vec<String>,
) -> Option<ProviderConfig> {
    let mut sec = Section::take(root, "provider", errs);
    let name = sec.required_string("name", errs);
    if let Some(n) = &name {
        if n.trim().is_empty() {
            errs.push("provider.name", "must not be empty");
        } else if n.trim() != n || n.chars().any(char::is_control) {
            errs.push(
                "provider.name",
                "must not have surrounding spaces or control characters",
            );
        } else if n.chars().count() > 128 {
            errs.push("provider.name", "is longer than 128 characters");
        }
    }

    let mut domains: Vec<Domain> = Vec::new();
    let listed = sec.strings("domains", errs);
    if listed.is_empty() && !errs.0.iter().any(|p| p.key.starts_with("provider.domains")) {
        errs.push(
            "provider.domains",
            "at least one managed PEC domain is required",
        );
    }
    for (key, s) in listed {
        match Domain::parse(&s) {
            Ok(d) if domains.contains(&d) => {
                errs.push(key, format!("{s:?} repeats {d}, already listed"))
            }
            Ok(d) => domains.push(d),
            Err(e) => errs.push(key, e.to_string()),
        }
    }
    let first = domains.first().cloned();

    // Ok(None) = absent (take the default), Err(()) = already reported.
    let address = |sec: &mut Section, k: &'static str, errs: &mut Problems| {
        let Some(s) = sec.string(k, errs) else {
            let wrong_type = !sec.absent.contains(&sec.key(k));
            return if wrong_type { Err(()) } else { Ok(None) };
        };
        PecAddress::parse(&s)
            .map(Some)
            .map_err(|e| errs.push(sec.key(k), e.to_string()))
    };
    let service = address(&mut sec, "service_address", errs);
    let receipt = address(&mut sec, "receipt_mailbox", errs);
    let hostname = sec.string("hostname", errs);
    sec.finish(errs, absent);

    let hostname = match hostname {
        Some(h) => match Domain::parse(&h) {
            Ok(d) => Some(d.to_string()),
            Err(e) => {
                errs.push("provider.hostname", e.to_string());
                None
            }
        },
        None => first.as_ref().and_then(|d| {
            // The default is only wrong when the first domain is near the 253-octet limit.
            Domain::parse(&format!("mail.{d}"))
                .map(|h| h.to_string())
                .map_err(|e| errs.push("provider.hostname", format!("default: {e}")))
                .ok()
        }),
    };

    let first = first?;
    let service_address = match service {
        Ok(Some(a)) => a,
        Ok(None) => PecAddress::parse(&format!("{DEFAULT_SERVICE_LOCAL}@{first}"))
            .map_err(|e| errs.push("provider.service_address", format!("default: {e}")))
            .ok()?,
        Err(()) => return None,
    };
    // Digest §8.3: a receiving provider checks that the `From:` domain of what we generate
    // is in our `managedDomains`, and delivers take-charge receipts to `mailReceipt`, which
    // therefore must be a mailbox we host.
    let mut check_hosted = |key: &str, a: &PecAddress| {
        if !domains.contains(a.domain()) {
            errs.push(
                key,
                format!(
                    "the domain of {a} is not one of provider.domains (other providers check \
                     it against our managedDomains)"
                ),
            );
        }
    };
    check_hosted("provider.service_address", &service_address);
    let receipt_mailbox = match receipt {
        Ok(Some(a)) => {
            check_hosted("provider.receipt_mailbox", &a);
            a
        }
        Ok(None) => service_address.clone(),
        Err(()) => return None,
    };
    Some(ProviderConfig {
        name: name?,
        domains,
        service_address,
        receipt_mailbox,
        hostname: hostname?,
    })
}

pub(super) fn listen(
    root: &mut Table,
    errs: &mut Problems,
    absent: &mut Vec<String>,
) -> ListenConfig {
    let mut sec = Section::take(root, "listen", errs);
    let defaults = ListenConfig::default();
    // Absent → `None`; `"off"` → `Some(None)`; an address → `Some(Some(a))`.
    let mut given = |k: &'static str| -> Option<Option<SocketAddr>> {
        let s = sec.string(k, errs)?;
        if s == "off" {
            return Some(None);
        }
        match s.parse::<SocketAddr>() {
            Ok(a) => Some(Some(a)),
            Err(_) => {
                errs.push(
                    format!("listen.{k}"),
                    format!("{s:?} is not \"IP:PORT\" (or \"off\" to disable)"),
                );
                None
            }
        }
    };
    let smtp = given("smtp").unwrap_or(defaults.smtp);
    let submission = given("submission").unwrap_or(defaults.submission);
    let smtps = given("smtps").unwrap_or(defaults.smtps);
    let imaps = given("imaps").unwrap_or(defaults.imaps);
    let pop3s = given("pop3s").unwrap_or(defaults.pop3s);
    let admin = given("admin").unwrap_or(defaults.admin);
    let https_cns = given("https_cns").unwrap_or(defaults.https_cns);
    // `https` replaced `http` (the web listener speaks TLS only); the old key is still read.
    let (new, old) = (given("https"), given("http"));
    let mut https_from_old_key = false;
    let https = match (new, old) {
        (Some(a), Some(_)) => {
            errs.push(
                "listen.http",
                "replaced by listen.https, which is also given: remove listen.http",
            );
            a
        }
        (Some(a), None) => a,
        (None, Some(a)) => {
            https_from_old_key = true;
            a
        }
        (None, None) => defaults.https,
    };
    // The old key is not part of the documented file.
    sec.absent.retain(|k| k != "listen.http");
    let cfg = ListenConfig {
        smtp,
        submission,
        smtps,
        imaps,
        pop3s,
        https,
        https_from_old_key,
        admin,
        https_cns,
    };
    // Off by default and only meaningful with `[cns]`: not part of the documented file.
    sec.absent.retain(|k| k != "listen.https_cns");
    sec.finish(errs, absent);
    let all = [
        ("smtp", cfg.smtp),
        ("submission", cfg.submission),
        ("smtps", cfg.smtps),
        ("imaps", cfg.imaps),
        ("pop3s", cfg.pop3s),
        ("https", cfg.https),
        ("admin", cfg.admin),
        ("https_cns", cfg.https_cns),
    ];
    for (i, (ka, a)) in all.iter().enumerate() {
        for (kb, b) in &all[i + 1..] {
            let (Some(a), Some(b)) = (a, b) else { continue };
            // Port 0 asks the OS for a free port, so it never clashes.
            let overlap = a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified();
            if a.port() != 0 && a.port() == b.port() && overlap {
                errs.push(
                    format!("listen.{kb}"),
                    format!("{b} clashes with listen.{ka} ({a})"),
                );
            }
        }
    }
    cfg
}

pub(super) fn limits(
    root: &mut Table,
    errs: &mut Problems,
    absent: &mut Vec<String>,
) -> LimitsConfig {
    let mut sec = Section::take(root, "limits", errs);
    let d = LimitsConfig::default();
    let art12_size = "30 MiB: DM 2/11/2005 art. 12 requires accepting a message whose \
                      recipients × size is up to 30 MB";
    let art12_rcpt = "DM 2/11/2005 art. 12 requires accepting at least 50 recipients";
    let max_message_bytes = sec.uint(
        "max_message_bytes",
        d.max_message_bytes,
        (MIN_MESSAGE_BYTES, MAX_MESSAGE_BYTES_CEILING),
        art12_size,
        errs,
    );
    // Absent: 100 MiB, or the largest message when that is larger (never below it).
    let total_default =
        DEFAULT_MAX_TOTAL_BYTES.max(max_message_bytes.unwrap_or(d.max_message_bytes));
    let max_total_bytes = sec.uint(
        "max_total_bytes",
        total_default,
        (MIN_MESSAGE_BYTES, u64::MAX >> 1),
        art12_size,
        errs,
    );
    let max_recipients = sec.uint(
        "max_recipients",
        d.max_recipients.into(),
        (MIN_RECIPIENTS.into(), MAX_RECIPIENTS_CEILING.into()),
        art12_rcpt,
        errs,
    );
    let quota = sec.uint(
        "default_quota_bytes",
        d.default_quota_bytes,
        (1, u64::MAX >> 1),
        "",
        errs,
    );
    let line = sec.uint(
        "max_line_length",
        d.max_line_length as u64,
        (MIN_LINE_LENGTH as u64, MAX_LINE_LENGTH_CEILING as u64),
        "RFC 5321 §4.5.3.1.6 requires 1000-octet text lines",
        errs,
    );
    let conns = sec.uint(
        "max_connections_per_ip",
        d.max_connections_per_ip.into(),
        (1, 100_000),
        "",
        errs,
    );
    let per_listener = sec.uint(
        "max_connections_per_listener",
        d.max_connections_per_listener.into(),
        (1, MAX_CONNECTIONS_CEILING),
        "",
        errs,
    );
    let total_conns = sec.uint(
        "max_connections",
        d.max_connections.into(),
        (1, MAX_CONNECTIONS_CEILING),
        "",
        errs,
    );
    let mut network_connections = Vec::new();
    for (cidr, v) in sec.table("network_connections", errs) {
        let key = format!("limits.network_connections.{cidr:?}");
        // A bare address is its own /32 (or /128).
        let net = cidr
            .parse::<ipnet::IpNet>()
            .or_else(|_| cidr.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
        let net = match net {
            Ok(n) if n.trunc() != n => {
                errs.push(
                    &key,
                    format!("{cidr:?} has host bits set (the network is {})", n.trunc()),
                );
                continue;
            }
            Ok(n) => n,
            Err(_) => {
                errs.push(&key, format!("{cidr:?} is not a network (\"10.0.0.0/8\", \"2001:db8::/32\") or an address"));
                continue;
            }
        };
        match v {
            Value::Integer(i) if (1..=MAX_CONNECTIONS_CEILING as i64).contains(&i) => {
                network_connections.push((net, i as u32))
            }
            Value::Integer(i) => errs.push(
                &key,
                format!("{i} is out of range (allowed 1..={MAX_CONNECTIONS_CEILING})"),
            ),
            other => errs.push(
                &key,
                format!("expected an integer, found {}", type_name(&other)),
            ),
        }
    }
    let message = max_message_bytes.unwrap_or(d.max_message_bytes);
    let incoming_default = default_incoming_message_bytes(message);
    let incoming_min = min_incoming_message_bytes(message);
    let incoming = sec.uint(
        "max_incoming_message_bytes",
        incoming_default,
        (incoming_min, MAX_INCOMING_MESSAGE_BYTES_CEILING.max(incoming_min)),
        "a provider's envelope of a maximum-size original in base64 (limits.max_message_bytes × 78/57 + 1 MiB) must fit",
        errs,
    );
    let incoming_or_default = incoming.unwrap_or(incoming_default);
    let inflight_default = DEFAULT_MAX_INFLIGHT_DATA_BYTES.max(2 * incoming_or_default);
    let inflight = sec.uint(
        "max_inflight_data_bytes",
        inflight_default,
        (incoming_or_default, u64::MAX >> 1),
        "a largest incoming message (limits.max_incoming_message_bytes) must fit",
        errs,
    );
    let processing = sec.uint(
        "max_processing_bytes",
        d.max_processing_bytes,
        (MIN_PROCESSING_BYTES, u64::MAX >> 1),
        "",
        errs,
    );
    let min_free = sec.uint(
        "min_free_bytes",
        d.min_free_bytes,
        (0, u64::MAX >> 1),
        "",
        errs,
    );
    let timeout = sec.uint(
        "command_timeout_secs",
        d.command_timeout_secs,
        (1, 3600),
        "",
        errs,
    );
    let auth_failures = sec.uint(
        "auth_max_failures",
        d.auth_max_failures.into(),
        (1, 100_000),
        "",
        errs,
    );
    let auth_lockout = sec.uint(
        "auth_lockout_secs",
        d.auth_lockout_secs,
        (1, 86_400),
        "",
        errs,
    );
    let login_cache = sec.uint(
        "login_cache_secs",
        d.login_cache_secs,
        (0, 86_400),
        "",
        errs,
    );
    sec.finish(errs, absent);
    if let (Some(t), Some(m)) = (max_total_bytes, max_message_bytes)
        && t < m
    {
        errs.push(
            "limits.max_total_bytes",
            format!("{t} is below limits.max_message_bytes ({m}): a largest message to one recipient would be refused"),
        );
    }
    if let (Some(q), Some(m)) = (quota, max_message_bytes)
        && q < m
    {
        errs.push(
            "limits.default_quota_bytes",
            format!("{q} is below limits.max_message_bytes ({m}): a largest message could never be delivered"),
        );
    }
    LimitsConfig {
        max_message_bytes: max_message_bytes.unwrap_or(d.max_message_bytes),
        max_total_bytes: max_total_bytes.unwrap_or(total_default),
        max_recipients: max_recipients
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(d.max_recipients),
        default_quota_bytes: quota.unwrap_or(d.default_quota_bytes),
        max_line_length: line
            .and_then(|v| usize::try_from(v).ok())
            .unwrap_or(d.max_line_length),
        max_connections_per_ip: conns
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(d.max_connections_per_ip),
        max_connections_per_listener: per_listener
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(d.max_connections_per_listener),
        max_connections: total_conns
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(d.max_connections),
        network_connections,
        max_incoming_message_bytes: incoming_or_default,
        max_inflight_data_bytes: inflight.unwrap_or(inflight_default),
        max_processing_bytes: processing.unwrap_or(d.max_processing_bytes),
        min_free_bytes: min_free.unwrap_or(d.min_free_bytes),
        command_timeout_secs: timeout.unwrap_or(d.command_timeout_secs),
        auth_max_failures: auth_failures
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(d.auth_max_failures),
        auth_lockout_secs: auth_lockout.unwrap_or(d.auth_lockout_secs),
        login_cache_secs: login_cache.unwrap_or(d.login_cache_secs),
    }
}

pub(super) fn routes(root: &mut Table, errs: &mut Problems) -> BTreeMap<Domain, String> {
    let mut out = BTreeMap::new();
    let table = match root.remove("routes") {
        None => return out,
        Some(Value::Table(t)) => t,
        Some(other) => {
            errs.push(
                "routes",
                format!("expected a table [routes], found {}", type_name(&other)),
            );
            return out;
        }
    };
    for (k, v) in table {
        let key = format!("routes.{k:?}");
        let domain = match Domain::parse(&k) {
            Ok(d) => Some(d),
            Err(e) => {
                errs.push(key.clone(), e.to_string());
                None
            }
        };
        let target = match v {
            Value::String(s) => match check_host_port(&s) {
                Ok(()) => Some(s),
                Err(e) => {
                    errs.push(key.clone(), e);
                    None
                }
            },
            Value::Table(_) => {
                errs.push(
                    key.clone(),
                    "expected \"host:port\", found a table: quote domain keys, e.g. \
                     \"pec.example.it\" = \"127.0.0.1:2525\"",
                );
                None
            }
            other => {
                errs.push(
                    key.clone(),
                    format!("expected \"host:port\", found {}", type_name(&other)),
                );
                None
            }
        };
        if let (Some(d), Some(t)) = (domain, target)
            && out.insert(d.clone(), t).is_some()
        {
            errs.push(key, format!("{d} is routed twice"));
        }
    }
    out
}

/// `[index]`: `ldap_url` is `ldaps://host[:port][/]` or `ldap://host[:port][/]`; a plain
/// `ldap://` needs `ldap_starttls = true` or, to accept no server authentication at all,
/// `ldap_insecure = true` (digest §7.4, §8.2: the index is the root of trust for provider
/// signatures, so a man in the middle must not be able to feed it). `ldap_ca` is a readable
/// PEM file of CA certificates. `ldap_base` a non-empty DN, `refresh_secs` at most a day
/// (digest §8.2: the local copy is refreshed daily).
pub(super) fn index(
    root: &mut Table,
    base: &Path,
    errs: &mut Problems,
    absent: &mut Vec<String>,
) -> IndexConfig {
    let mut sec = Section::take(root, "index", errs);
    let d = IndexConfig::default();
    let ldap_url = sec.string("ldap_url", errs).filter(|u| {
        check_ldap_url(u)
            .map_err(|e| errs.push("index.ldap_url", e))
            .is_ok()
    });
    let ldap_base = match sec.string("ldap_base", errs) {
        Some(b) if b.trim().is_empty() || !b.contains('=') => {
            errs.push(
                "index.ldap_base",
                format!("{b:?} is not a DN (expected e.g. \"o=postacert\")"),
            );
            d.ldap_base.clone()
        }
        Some(b) => b,
        None => d.ldap_base.clone(),
    };
    let refresh_secs = sec
        .uint(
            "refresh_secs",
            d.refresh_secs,
            (MIN_INDEX_REFRESH_SECS, d.refresh_secs),
            "",
            errs,
        )
        .unwrap_or(d.refresh_secs);
    let ldap_starttls = sec.bool("ldap_starttls", d.ldap_starttls, errs);
    let ldap_insecure = sec.bool("ldap_insecure", d.ldap_insecure, errs);
    let ldap_ca = optional_file_key(&mut sec, "ldap_ca", base, errs);
    if let Some(ca) = &ldap_ca
        && let Err(e) = crate::tls::load_certs(ca)
    {
        errs.push(
            "index.ldap_ca",
            format!("not a PEM file of CA certificates: {e}"),
        );
    }
    sec.finish(errs, absent);
    let out = IndexConfig {
        ldap_url,
        ldap_base,
        refresh_secs,
        ldap_starttls,
        ldap_ca,
        ldap_insecure,
    };
    if let Some(u) = &out.ldap_url {
        if super::is_ldaps(u) && out.ldap_starttls {
            errs.push(
                "index.ldap_starttls",
                format!(
                    "{u:?} is already LDAP over TLS; StartTLS applies to ldap:// only \
                     (remove index.ldap_starttls)"
                ),
            );
        }
        if out.ldap_is_plain() && !out.ldap_insecure {
            errs.push(
                "index.ldap_url",
                format!(
                    "{u:?} is plain LDAP: the provider index (the root of trust for \
                     provider signatures, rules §8.2) would travel without server \
                     authentication. Use \"ldaps://host:636\", or set \
                     index.ldap_starttls = true, or, on a trusted network only, set \
                     index.ldap_insecure = true"
                ),
            );
        }
        if out.ldap_is_plain() && out.ldap_ca.is_some() {
            errs.push(
                "index.ldap_ca",
                format!("{u:?} is plain LDAP, so no certificate is checked against this CA"),
            );
        }
    }
    out
}

fn check_ldap_url(u: &str) -> Result<(), String> {
    let lower = u.to_ascii_lowercase();
    let (rest, default_port) = if let Some(rest) = lower.strip_prefix("ldaps://") {
        (rest, 636)
    } else if let Some(rest) = lower.strip_prefix("ldap://") {
        (rest, 389)
    } else {
        return Err(format!(
            "{u:?} is not \"ldaps://host:port\" or \"ldap://host:port\""
        ));
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.contains(['/', '?', '@']) {
        return Err(format!(
            "{u:?} is not \"ldaps://host:port\" or \"ldap://host:port\" (no path, query \
             or credentials)"
        ));
    }
    let has_port = match authority.rsplit_once(':') {
        Some((h, _)) => !h.ends_with(':') && (!h.contains(':') || h.ends_with(']')),
        None => false,
    };
    let with_port = if has_port {
        authority.to_string()
    } else {
        format!("{authority}:{default_port}")
    };
    check_host_port(&with_port).map_err(|e| format!("{u:?}: {e}"))
}
