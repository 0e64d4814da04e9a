//! The development PKI and the `pecd init` directory layout.
//!
//! Owns: generating a throw-away PKI for one PEC domain — a CA, the TLS server certificate
//! and the provider signing certificate — and writing a ready-to-run instance directory
//! (`pecd.toml`, `certs/`, `data/`) with [`init_dir`], which `pecd init` and the first run of
//! `pecd serve` call. Production certificates come from AgID's CA (rules digest §7.2); none
//! of this is for production.
//!
//! The signing certificate follows the provider profile of digest §7.2 (RFC 6109 §5.5):
//! subject `C=IT, O=<provider name>, CN=Posta Certificata <provider name>`, `keyUsage`
//! critical digitalSignature + nonRepudiation, `extKeyUsage` emailProtection,
//! `subjectAltName` rfc822Name `posta-certificata@<domain>`, non-critical AKI and SKI, and
//! no `basicConstraints` at all.
//!
//! Invariants: an existing file is never overwritten unless `force` is given, and when a
//! target exists nothing at all is written. Private keys are created with mode 0600; every
//! file is written to a temporary name, fsynced, renamed into place, and the directory
//! fsynced. Reads no configuration (it writes the first one).

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use openssl::x509::{X509, X509Builder, X509Name, X509NameBuilder, X509NameRef};

use crate::config::{
    DEFAULT_CHECKPOINT_EVERY, DEFAULT_CHECKPOINT_INTERVAL_SECS, DEFAULT_COMMAND_TIMEOUT_SECS,
    DEFAULT_MAX_CONNECTIONS_PER_IP, DEFAULT_MAX_LINE_LENGTH, DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_MAX_RECIPIENTS, DEFAULT_QUOTA_BYTES, DEFAULT_SERVICE_LOCAL, MIN_RETENTION_MONTHS,
};
use crate::pec::address::Domain;

/// File names inside the certs directory.
pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca.key";
pub const TLS_CERT: &str = "tls.pem";
pub const TLS_KEY: &str = "tls.key";
pub const SIGNING_CERT: &str = "signing.pem";
pub const SIGNING_KEY: &str = "signing.key";
/// Names inside an instance directory written by [`init_dir`].
pub const CONFIG_FILE: &str = "pecd.toml";
pub const CERTS_DIR: &str = "certs";
pub const DATA_DIR: &str = "data";

/// X.509 upper bound for O and CN (RFC 5280 appendix A, `ub-organization-name`).
const UB_NAME: usize = 64;
const CN_PREFIX: &str = "Posta Certificata ";
const CA_DAYS: u32 = 3650;
const LEAF_DAYS: u32 = 730;
/// notBefore is backdated so that peers with a slightly slow clock accept a fresh PKI.
const BACKDATE_SECS: i64 = 3600;

/// Errors of this module, by cause.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{} already exists; refusing to overwrite it (use --force to regenerate)", .0.display())]
    Exists(PathBuf),
    #[error("invalid provider name {name:?}: {reason}")]
    BadProviderName { name: String, reason: &'static str },
    #[error("cannot write {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("OpenSSL failed while {doing}: {source}")]
    OpenSsl {
        doing: &'static str,
        #[source]
        source: ErrorStack,
    },
}

fn ossl(doing: &'static str) -> impl FnOnce(ErrorStack) -> PkiError {
    move |source| PkiError::OpenSsl { doing, source }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The files of a dev PKI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkiFiles {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    pub signing_cert: PathBuf,
    pub signing_key: PathBuf,
}

impl PkiFiles {
    /// Where [`generate_dev_pki`] writes into `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            ca_cert: dir.join(CA_CERT),
            ca_key: dir.join(CA_KEY),
            tls_cert: dir.join(TLS_CERT),
            tls_key: dir.join(TLS_KEY),
            signing_cert: dir.join(SIGNING_CERT),
            signing_key: dir.join(SIGNING_KEY),
        }
    }

    /// Every file, certificates and keys interleaved as written.
    pub fn all(&self) -> [&Path; 6] {
        [
            &self.ca_cert,
            &self.ca_key,
            &self.tls_cert,
            &self.tls_key,
            &self.signing_cert,
            &self.signing_key,
        ]
    }
}

/// What [`init_dir`] wrote.
#[derive(Debug, Clone)]
pub struct InitReport {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub data_dir: PathBuf,
    pub pki: PkiFiles,
    pub domain: Domain,
    pub provider_name: String,
    /// `posta-certificata@<domain>`: the signing certificate's address.
    pub service_address: String,
}

/// The provider name used when none is given: `pecd Dev Provider (<domain>)`, shortened to
/// fit the X.509 organization name when the domain is long.
pub fn default_provider_name(domain: &Domain) -> String {
    let long = format!("pecd Dev Provider ({domain})");
    if long.len() <= UB_NAME {
        long
    } else {
        "pecd Dev Provider".to_string()
    }
}

fn check_provider_name(name: &str) -> Result<(), PkiError> {
    let bad = |reason| {
        Err(PkiError::BadProviderName {
            name: name.to_string(),
            reason,
        })
    };
    if name.trim().is_empty() {
        bad("it is empty")
    } else if name.trim() != name || name.chars().any(char::is_control) {
        bad("it has surrounding spaces or control characters")
    } else if name.chars().count() > UB_NAME {
        bad("it is longer than 64 characters, the X.509 limit for the organization name")
    } else {
        Ok(())
    }
}

/// Writes a fresh dev PKI into `dir` (created if needed): `ca.pem`/`ca.key`,
/// `tls.pem`/`tls.key`, `signing.pem`/`signing.key`. Without `force`, fails with
/// [`PkiError::Exists`] naming the first existing target, having written nothing.
pub fn generate_dev_pki(
    dir: &Path,
    domain: &Domain,
    provider_name: &str,
    force: bool,
) -> Result<PkiFiles, PkiError> {
    check_provider_name(provider_name)?;
    let files = PkiFiles::in_dir(dir);
    if !force {
        refuse_existing(&files.all())?;
    }
    // Everything is generated before the first write, so a failure leaves no half PKI.
    let ca = make_ca(provider_name)?;
    let tls = make_tls(&ca, domain)?;
    let signing = make_signing(&ca, domain, provider_name)?;

    create_dir(dir, 0o755)?;
    for (issued, cert_path, key_path) in [
        (&ca, &files.ca_cert, &files.ca_key),
        (&tls, &files.tls_cert, &files.tls_key),
        (&signing, &files.signing_cert, &files.signing_key),
    ] {
        let key_pem = issued
            .key
            .private_key_to_pem_pkcs8()
            .map_err(ossl("encoding a private key"))?;
        let cert_pem = issued
            .cert
            .to_pem()
            .map_err(ossl("encoding a certificate"))?;
        write_file(key_path, &key_pem, 0o600)?;
        write_file(cert_path, &cert_pem, 0o644)?;
    }
    sync_dir(dir)?;
    Ok(files)
}

/// Creates a ready-to-run instance in `dir`: `pecd.toml` (see [`dev_config_toml`]), the dev
/// PKI in `certs/` and an empty `data/`.
/// `provider_name` defaults to [`default_provider_name`]. Without `force`, refuses (writing
/// nothing) if `pecd.toml` or any PKI file exists; an existing `data/` is left untouched.
pub fn init_dir(
    dir: &Path,
    domain: &Domain,
    provider_name: Option<&str>,
    force: bool,
) -> Result<InitReport, PkiError> {
    let provider_name = provider_name
        .map(str::to_string)
        .unwrap_or_else(|| default_provider_name(domain));
    check_provider_name(&provider_name)?;
    let config = dir.join(CONFIG_FILE);
    let certs = dir.join(CERTS_DIR);
    let data_dir = dir.join(DATA_DIR);
    let pki_files = PkiFiles::in_dir(&certs);
    if !force {
        let mut targets = vec![config.as_path()];
        targets.extend(pki_files.all());
        refuse_existing(&targets)?;
    }
    create_dir(dir, 0o755)?;
    let pki = generate_dev_pki(&certs, domain, &provider_name, force)?;
    let text = dev_config_toml(domain, &provider_name);
    write_file(&config, text.as_bytes(), 0o644)?;
    // The store holds every user's mail: owner only.
    create_dir(&data_dir, 0o700)?;
    sync_dir(dir)?;
    Ok(InitReport {
        dir: dir.to_path_buf(),
        config,
        data_dir,
        pki,
        domain: domain.clone(),
        provider_name,
        service_address: format!("{DEFAULT_SERVICE_LOCAL}@{domain}"),
    })
}

/// A complete, commented configuration for a development instance created by `pecd init`:
/// the dev PKI under `certs/`, the store under `data/`, loopback listeners on high ports.
/// `config/pecd.toml` documents every key in full.
pub fn dev_config_toml(domain: &Domain, provider_name: &str) -> String {
    let name = toml::Value::String(provider_name.to_string()).to_string();
    format!(
        r#"# pecd development configuration, written by `pecd init`.
# Every key, its default and its bounds are documented in config/pecd.toml of the source tree.
# Relative paths are resolved against the directory of this file.

[provider]
# providerName in the index, gestore-emittente in daticert.
name = {name}
# Managed PEC domains (managedDomains); users' mailboxes live under these.
domains = ["{domain}"]
# From: of receipts and envelopes; must match the signing certificate's subjectAltName.
service_address = "{DEFAULT_SERVICE_LOCAL}@{domain}"
# mailReceipt: where other providers send take-charge receipts.
receipt_mailbox = "{DEFAULT_SERVICE_LOCAL}@{domain}"
# FQDN used in message identifiers and EHLO.
hostname = "mail.{domain}"

[signing]
# Development signing certificate (profile of rules §7.2), issued by certs/ca.pem.
cert = "certs/signing.pem"
key = "certs/signing.key"
chain = []

[tls]
cert = "certs/tls.pem"
key = "certs/tls.key"

[trust]
# CAs trusted for provider signatures. Add other providers' CA files here.
ca = ["certs/ca.pem"]

[listen]
# Loopback-only development listeners on unprivileged ports; "off" disables one.
smtp = "127.0.0.1:2525"
submission = "127.0.0.1:5587"
smtps = "127.0.0.1:4465"
imaps = "127.0.0.1:9993"
pop3s = "127.0.0.1:9995"
https = "127.0.0.1:8443"
# Metrics (/metrics), liveness (/healthz), readiness (/readyz); plain HTTP.
admin = "127.0.0.1:9465"

[limits]
max_message_bytes = {DEFAULT_MAX_MESSAGE_BYTES}
max_recipients = {DEFAULT_MAX_RECIPIENTS}
default_quota_bytes = {DEFAULT_QUOTA_BYTES}
max_line_length = {DEFAULT_MAX_LINE_LENGTH}
max_connections_per_ip = {DEFAULT_MAX_CONNECTIONS_PER_IP}
command_timeout_secs = {DEFAULT_COMMAND_TIMEOUT_SECS}

[store]
dir = "data"
group_commit = true

[blobs]
backend = "dir"
# Or an S3-compatible object store (see config/pecd.toml for every key):
# backend = "s3"
# endpoint = "https://s3.example.it"
# bucket = "pecd-blobs"
# credentials_file = "s3.toml"

[trace]
# At least 30 months (DPR 68/2005).
retention_months = {MIN_RETENTION_MONTHS}
checkpoint_every = {DEFAULT_CHECKPOINT_EVERY}
checkpoint_interval_secs = {DEFAULT_CHECKPOINT_INTERVAL_SECS}

[routes]
# Pin a peer domain to "host:port" (tests, private networks), e.g.
# "pec.other.test" = "127.0.0.1:2526"

[relay]
# Extra CAs trusted for peers' TLS certificates.
trusted_ca = ["certs/ca.pem"]
# Outbound SMTP transactions at once, in all and to one domain (a provider usually
# refuses more than 20 connections from one address).
# max_transactions = 100
# max_transactions_per_domain = 20

[antivirus]
# clamd = "127.0.0.1:3310"

[antispam]
# SpamAssassin's spamd, for ordinary mail to mailboxes that accept it (spam into Junk).
# spamd = "127.0.0.1:783"

[archive]
# Every mailbox's read-only security archive (IMAP: "Archivio di sicurezza/..."):
# its size when the mailbox's plan sets none, and how long copies are kept at least.
# default_bytes = 3221225472
# retention_months = 30
"#
    )
}

fn refuse_existing(targets: &[&Path]) -> Result<(), PkiError> {
    match targets.iter().find(|p| p.symlink_metadata().is_ok()) {
        Some(p) => Err(PkiError::Exists(p.to_path_buf())),
        None => Ok(()),
    }
}

fn create_dir(dir: &Path, mode: u32) -> Result<(), PkiError> {
    DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .map_err(io_err(dir))
}

/// Writes `bytes` to a temporary sibling created with `mode`, fsyncs it and renames it over
/// `path`, so a crash leaves either the old file or the new one, and a key is never visible
/// with wider permissions than `mode`.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), PkiError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    // A stale temporary from a crashed run is ours to replace.
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io_err(path))
}

fn sync_dir(dir: &Path) -> Result<(), PkiError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// A certificate and its key.
struct Issued {
    cert: X509,
    key: PKey<Private>,
}

fn rsa_key(bits: u32) -> Result<PKey<Private>, PkiError> {
    let rsa = Rsa::generate(bits).map_err(ossl("generating an RSA key"))?;
    PKey::from_rsa(rsa).map_err(ossl("wrapping an RSA key"))
}

fn name(entries: &[(Nid, &str)]) -> Result<X509Name, PkiError> {
    let mut b = X509NameBuilder::new().map_err(ossl("building a name"))?;
    for (nid, value) in entries {
        b.append_entry_by_nid(*nid, value)
            .map_err(ossl("adding a name entry"))?;
    }
    Ok(b.build())
}

/// A v3 builder with a random 127-bit serial (RFC 5280 §4.1.2.2: positive, ≤ 20 octets;
/// CA/B BR: ≥ 64 bits of randomness), validity from an hour ago for `days`.
fn builder(
    subject: &X509NameRef,
    issuer: &X509NameRef,
    key: &PKey<Private>,
    days: u32,
) -> Result<X509Builder, PkiError> {
    let mut b = X509Builder::new().map_err(ossl("creating a certificate"))?;
    b.set_version(2).map_err(ossl("setting the version"))?;
    let mut serial = BigNum::new().map_err(ossl("allocating a serial"))?;
    serial
        .rand(127, MsbOption::ONE, false)
        .map_err(ossl("drawing a serial"))?;
    let serial = serial
        .to_asn1_integer()
        .map_err(ossl("encoding a serial"))?;
    b.set_serial_number(&serial)
        .map_err(ossl("setting the serial"))?;
    b.set_subject_name(subject)
        .map_err(ossl("setting the subject"))?;
    b.set_issuer_name(issuer)
        .map_err(ossl("setting the issuer"))?;
    b.set_pubkey(key).map_err(ossl("setting the public key"))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    let not_before = Asn1Time::from_unix((now - BACKDATE_SECS).max(0) as _)
        .map_err(ossl("computing notBefore"))?;
    let not_after = Asn1Time::days_from_now(days).map_err(ossl("computing notAfter"))?;
    b.set_not_before(&not_before)
        .map_err(ossl("setting notBefore"))?;
    b.set_not_after(&not_after)
        .map_err(ossl("setting notAfter"))?;
    Ok(b)
}

/// Self-signed CA: RSA 3072, basicConstraints critical CA:TRUE, keyUsage critical
/// keyCertSign + cRLSign, SKI, 10 years.
fn make_ca(provider_name: &str) -> Result<Issued, PkiError> {
    let key = rsa_key(3072)?;
    let subject = name(&[
        (Nid::COUNTRYNAME, "IT"),
        (Nid::ORGANIZATIONNAME, provider_name),
        (Nid::COMMONNAME, "pecd development CA"),
    ])?;
    let mut b = builder(&subject, &subject, &key, CA_DAYS)?;
    let ext = [
        BasicConstraints::new().critical().ca().build(),
        KeyUsage::new()
            .critical()
            .key_cert_sign()
            .crl_sign()
            .build(),
        SubjectKeyIdentifier::new().build(&b.x509v3_context(None, None)),
    ];
    for e in ext {
        b.append_extension(e.map_err(ossl("building a CA extension"))?)
            .map_err(ossl("adding a CA extension"))?;
    }
    b.sign(&key, MessageDigest::sha256())
        .map_err(ossl("signing the CA"))?;
    Ok(Issued {
        cert: b.build(),
        key,
    })
}

/// TLS server certificate: RSA 2048, SAN DNS domain, mail.<domain>, localhost and IP
/// 127.0.0.1, ::1; EKU serverAuth; 2 years.
fn make_tls(ca: &Issued, domain: &Domain) -> Result<Issued, PkiError> {
    let key = rsa_key(2048)?;
    let mail_host = Domain::parse(&format!("mail.{domain}")).ok();
    let cn = mail_host.as_ref().unwrap_or(domain).to_string();
    let mut entries = vec![(Nid::ORGANIZATIONNAME, "pecd development")];
    // CN is informational (clients match the SAN) and limited to 64 characters.
    if cn.len() <= UB_NAME {
        entries.push((Nid::COMMONNAME, cn.as_str()));
    }
    let subject = name(&entries)?;
    let mut b = builder(&subject, ca.cert.subject_name(), &key, LEAF_DAYS)?;
    let mut san = SubjectAlternativeName::new();
    san.dns(domain.as_str());
    if let Some(h) = &mail_host {
        san.dns(h.as_str());
    }
    san.dns("localhost").ip("127.0.0.1").ip("::1");
    let ext = [
        BasicConstraints::new().critical().build(),
        KeyUsage::new()
            .critical()
            .digital_signature()
            .key_encipherment()
            .build(),
        ExtendedKeyUsage::new().server_auth().build(),
        san.build(&b.x509v3_context(Some(&ca.cert), None)),
        SubjectKeyIdentifier::new().build(&b.x509v3_context(Some(&ca.cert), None)),
        AuthorityKeyIdentifier::new()
            .keyid(true)
            .build(&b.x509v3_context(Some(&ca.cert), None)),
    ];
    for e in ext {
        b.append_extension(e.map_err(ossl("building a TLS extension"))?)
            .map_err(ossl("adding a TLS extension"))?;
    }
    b.sign(&ca.key, MessageDigest::sha256())
        .map_err(ossl("signing the TLS certificate"))?;
    Ok(Issued {
        cert: b.build(),
        key,
    })
}

/// The provider signing certificate, profile of rules digest §7.2.
fn make_signing(ca: &Issued, domain: &Domain, provider_name: &str) -> Result<Issued, PkiError> {
    let key = rsa_key(2048)?;
    // §7.2: the provider name must be in CN or O. O always holds it; CN carries the
    // customary "Posta Certificata <name>" when that fits the 64-character bound.
    let cn = format!("{CN_PREFIX}{provider_name}");
    let cn = if cn.len() <= UB_NAME {
        cn
    } else {
        CN_PREFIX.trim_end().to_string()
    };
    let subject = name(&[
        (Nid::COUNTRYNAME, "IT"),
        (Nid::ORGANIZATIONNAME, provider_name),
        (Nid::COMMONNAME, &cn),
    ])?;
    let mut b = builder(&subject, ca.cert.subject_name(), &key, LEAF_DAYS)?;
    let email = format!("{DEFAULT_SERVICE_LOCAL}@{domain}");
    // §7.2: no basicConstraints; keyUsage critical; everything else non-critical.
    let ext = [
        KeyUsage::new()
            .critical()
            .digital_signature()
            .non_repudiation()
            .build(),
        ExtendedKeyUsage::new().email_protection().build(),
        SubjectAlternativeName::new()
            .email(&email)
            .build(&b.x509v3_context(Some(&ca.cert), None)),
        SubjectKeyIdentifier::new().build(&b.x509v3_context(Some(&ca.cert), None)),
        AuthorityKeyIdentifier::new()
            .keyid(true)
            .build(&b.x509v3_context(Some(&ca.cert), None)),
    ];
    for e in ext {
        b.append_extension(e.map_err(ossl("building a signing extension"))?)
            .map_err(ossl("adding a signing extension"))?;
    }
    b.sign(&ca.key, MessageDigest::sha256())
        .map_err(ossl("signing the signing certificate"))?;
    Ok(Issued {
        cert: b.build(),
        key,
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use openssl::stack::Stack;
    use openssl::x509::store::X509StoreBuilder;
    use openssl::x509::{X509PurposeId, X509StoreContext};

    use super::*;
    use crate::config::Config;
    use crate::pec::smime::{Signer, TrustAnchors, verify_detached};

    fn domain() -> Domain {
        Domain::parse("pec.example.test").unwrap()
    }

    fn read_cert(p: &Path) -> X509 {
        X509::from_pem(&std::fs::read(p).unwrap()).unwrap()
    }

    fn verifies(ca: &X509, leaf: &X509, purpose: X509PurposeId) -> Result<(), String> {
        let mut sb = X509StoreBuilder::new().unwrap();
        sb.add_cert(ca.clone()).unwrap();
        sb.set_purpose(purpose).unwrap();
        let store = sb.build();
        let mut ctx = X509StoreContext::new().unwrap();
        let (ok, err) = ctx
            .init(&store, leaf, &Stack::new().unwrap(), |c| {
                Ok((c.verify_cert()?, c.error()))
            })
            .unwrap();
        if ok {
            Ok(())
        } else {
            Err(err.error_string().to_string())
        }
    }

    /// One PKI for all the profile checks (RSA 3072 generation is slow in debug builds).
    fn pki() -> &'static (tempfile::TempDir, PkiFiles) {
        static PKI: std::sync::OnceLock<(tempfile::TempDir, PkiFiles)> = std::sync::OnceLock::new();
        PKI.get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let files = generate_dev_pki(
                &dir.path().join("certs"),
                &domain(),
                "Acme PEC S.p.A.",
                false,
            )
            .unwrap();
            (dir, files)
        })
    }

    #[test]
    fn signing_certificate_follows_the_provider_profile() {
        let (_, f) = pki();
        let cert = read_cert(&f.signing_cert);
        let text = String::from_utf8(cert.to_text().unwrap()).unwrap();
        let has = |s: &str| assert!(text.contains(s), "missing {s:?} in\n{text}");
        has("X509v3 Key Usage: critical");
        has("Digital Signature, Non Repudiation");
        has("E-mail Protection");
        has("email:posta-certificata@pec.example.test");
        has("X509v3 Subject Key Identifier: \n");
        has("X509v3 Authority Key Identifier: \n");
        has("Subject: C=IT, O=Acme PEC S.p.A., CN=Posta Certificata Acme PEC S.p.A.");
        has("sha256WithRSAEncryption");
        has("Public-Key: (2048 bit)");
        assert!(!text.contains("Basic Constraints"), "{text}");
        // Only keyUsage is critical.
        assert_eq!(text.matches("critical").count(), 1, "{text}");
        let serial = cert.serial_number().to_bn().unwrap();
        assert!(serial.num_bits() >= 64);
    }

    #[test]
    fn chains_verify_to_the_ca() {
        let (_, f) = pki();
        let ca = read_cert(&f.ca_cert);
        let ca_text = String::from_utf8(ca.to_text().unwrap()).unwrap();
        assert!(ca_text.contains("X509v3 Basic Constraints: critical\n                CA:TRUE"));
        assert!(ca_text.contains("Certificate Sign, CRL Sign"));
        assert!(ca_text.contains("Public-Key: (3072 bit)"));
        let signing = read_cert(&f.signing_cert);
        let tls = read_cert(&f.tls_cert);
        verifies(&ca, &signing, X509PurposeId::SMIME_SIGN).unwrap();
        verifies(&ca, &tls, X509PurposeId::SSL_SERVER).unwrap();
        // The TLS certificate must not pass as a PEC signing certificate.
        assert!(verifies(&ca, &tls, X509PurposeId::SMIME_SIGN).is_err());
        let tls_text = String::from_utf8(tls.to_text().unwrap()).unwrap();
        for s in [
            "DNS:pec.example.test",
            "DNS:mail.pec.example.test",
            "DNS:localhost",
            "IP Address:127.0.0.1",
            "IP Address:0:0:0:0:0:0:0:1",
            "TLS Web Server Authentication",
        ] {
            assert!(tls_text.contains(s), "missing {s} in\n{tls_text}");
        }
    }

    #[test]
    fn signer_accepts_the_pair_and_its_signatures_verify() {
        let (_, f) = pki();
        let signer = Signer::from_pem(
            &std::fs::read(&f.signing_cert).unwrap(),
            &std::fs::read(&f.signing_key).unwrap(),
            b"",
        )
        .unwrap();
        assert_eq!(
            signer.address().as_deref(),
            Some("posta-certificata@pec.example.test")
        );
        let sig = signer.sign_detached(b"hello\r\n").unwrap();
        let trust = TrustAnchors::from_pem(&std::fs::read(&f.ca_cert).unwrap()).unwrap();
        let check = verify_detached(b"hello\r\n", &sig, Some(&trust));
        assert!(check.valid, "{check:?}");
        assert_eq!(check.chain_ok, Some(true), "{check:?}");
    }

    #[test]
    fn keys_are_private() {
        let (_, f) = pki();
        for k in [&f.ca_key, &f.tls_key, &f.signing_key] {
            let mode = std::fs::metadata(k).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", k.display());
        }
    }

    #[test]
    fn init_dir_writes_a_loadable_instance_and_never_overwrites() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("inst");
        let report = init_dir(&dir, &domain(), None, false).unwrap();
        assert_eq!(report.provider_name, "pecd Dev Provider (pec.example.test)");
        assert!(report.data_dir.is_dir());
        let config = Config::load(&report.config).unwrap();
        assert_eq!(config.provider.name, report.provider_name);
        assert_eq!(config.signing.cert, report.pki.signing_cert);
        let signer = config.load_signer().unwrap();
        assert_eq!(
            signer.address().as_deref(),
            Some(config.provider.service_address.to_string().as_str())
        );
        assert!(config.load_trust().unwrap().is_some());
        // From: must equal the certificate's address (rules §2 item 2).
        let mut other = config.clone();
        other.provider.service_address =
            crate::pec::address::PecAddress::parse("ricevute@pec.example.test").unwrap();
        let err = other.load_signer().unwrap_err().to_string();
        assert!(err.contains("rules §2 item 2"), "{err}");

        let before = std::fs::read(&report.pki.signing_key).unwrap();
        match init_dir(&dir, &domain(), None, false) {
            Err(PkiError::Exists(p)) => assert_eq!(p, report.config),
            other => panic!("expected Exists, got {other:?}"),
        }
        // A lone missing file does not let a re-run through either.
        std::fs::remove_file(&report.config).unwrap();
        match init_dir(&dir, &domain(), None, false) {
            Err(PkiError::Exists(p)) => assert_eq!(p, report.pki.ca_cert),
            other => panic!("expected Exists, got {other:?}"),
        }
        assert!(!report.config.exists(), "wrote despite refusing");
        assert_eq!(std::fs::read(&report.pki.signing_key).unwrap(), before);
    }

    #[test]
    fn dev_config_escapes_the_provider_name() {
        let name = r#"Acme "PEC" \ S.p.A."#;
        let text = dev_config_toml(&domain(), name);
        let table: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(table["provider"]["name"].as_str(), Some(name));
        assert_eq!(table["listen"]["smtp"].as_str(), Some("127.0.0.1:2525"));
    }

    #[test]
    fn provider_names_are_checked() {
        let tmp = tempfile::tempdir().unwrap();
        for bad in ["", " padded", "line\nbreak", &"x".repeat(65)] {
            assert!(matches!(
                generate_dev_pki(tmp.path(), &domain(), bad, false),
                Err(PkiError::BadProviderName { .. })
            ));
        }
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
        let long = Domain::parse(&format!("{}.example.test", "a".repeat(60))).unwrap();
        assert_eq!(default_provider_name(&long), "pecd Dev Provider");
    }
}
