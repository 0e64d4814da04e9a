//! The index of PEC providers (*Indice dei gestori PEC*, rules digest §8; RFC 6109 §4.5):
//! who the accredited providers are, which domains each manages, the certificates each signs
//! with, and where each wants its take-charge receipts.
//!
//! Owns: the LDIF form of the index (RFC 2849), the [`ProviderRecord`] model of one entry of
//! the `provider` object class (digest §8.1), the lookups the access and incoming points
//! make ([`ProviderIndex::by_certificate`], [`ProviderIndex::by_domain`], digest §6.2, §8.3),
//! the writer of our own entry ([`ProviderRecord::for_this_provider`],
//! [`ProviderRecord::to_ldif`]) and the file that holds the imported index
//! ([`ProviderIndex::default_path`]). Everything is pure except the explicit
//! [`ProviderIndex::load`] / [`ProviderIndex::save_atomic`] helpers.
//!
//! Untrusted input: the whole LDIF text (another provider's export, or the national
//! directory's dump). The parser is tolerant of what real directories emit — `version: 1`,
//! comments, folded lines, base64 values (`attr:: `), attribute options
//! (`providerCertificate;binary`), OID attribute names, CRLF or LF, case-insensitive
//! attribute names, entries that are not providers (the `o=postacert` root) — and strict
//! about what PEC trust depends on: every MUST attribute of `provider`, single-valued
//! attributes single, domains and addresses well formed, every hash the SHA-1 of one of the
//! record's certificates. Input is bounded by [`LdifLimits`]; errors are typed, name their
//! line, and are all collected (up to [`MAX_REPORTED_ERRORS`]) so an operator fixes a file
//! in one pass. Nothing here panics on any input (see the garbage test in
//! `tests/index_ldif.rs`).
//!
//! Layout: [`ldif`] is the generic RFC 2849 layer (reader and the writer's folding),
//! [`record`] the `provider` entry, this file the index, its errors and its file.
//!
//! Config keys read: `provider.name`, `provider.domains`, `provider.service_address`,
//! `provider.receipt_mailbox` (own entry) and `store.dir` (where the imported index lives).

use std::collections::HashMap;
use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use openssl::x509::X509;

use super::address::Domain;
use crate::config::Config;

pub mod ldap;
pub mod ldif;
pub mod record;

pub use ldap::{LdapIndexError, RefreshReport, refresh_task};
pub use ldif::{FOLD_COLUMN, LdifAttr, LdifEntry, LdifLimits, parse_ldif};
pub use record::{ProviderRecord, certificate_sha1, escape_dn_value};

/// Name of the imported index inside `store.dir` (beside sled's `db/` and `blobs/`).
pub const INDEX_FILE_NAME: &str = "index.ldif";
/// Largest LDIF accepted. The national index (tens of providers, thousands of domains) is a
/// few megabytes.
pub const MAX_LDIF_BYTES: usize = 64 * 1024 * 1024;
/// Most entries in one LDIF.
pub const MAX_LDIF_ENTRIES: usize = 100_000;
/// Largest single value (after base64 decoding). A certificate is 1–3 KB.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Errors collected before the parser gives up on a file.
pub const MAX_REPORTED_ERRORS: usize = 100;
/// Where an error is: `line N` of the LDIF, or nowhere (records built in code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loc(pub Option<usize>);

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(n) => write!(f, "line {n}: "),
            None => Ok(()),
        }
    }
}

/// Errors of the index, by cause. Each names the line (and, past the syntax, the entry's dn).
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("the LDIF is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("{loc}more than {limit} entries")]
    TooManyEntries { loc: Loc, limit: usize },
    #[error("{loc}a value is larger than {limit} bytes")]
    ValueTooLarge { loc: Loc, limit: usize },
    #[error("{loc}not valid UTF-8")]
    InvalidUtf8 { loc: Loc },
    #[error("{loc}continuation line (leading space) with no line to continue")]
    StrayContinuation { loc: Loc },
    #[error("{loc}expected `attribute: value`, found no ':'")]
    MissingColon { loc: Loc },
    #[error("{loc}invalid attribute description {name:?}")]
    BadAttributeName { loc: Loc, name: String },
    #[error("{loc}invalid base64 in the value of {attr}")]
    BadBase64 { loc: Loc, attr: String },
    #[error("{loc}{attr} has a URL value (`:<`), which is not fetched")]
    UrlValue { loc: Loc, attr: String },
    #[error("{loc}an entry must start with `dn:`")]
    NoDn { loc: Loc },
    #[error("{loc}a second `dn:` inside an entry (is a blank line missing?)")]
    DnInsideEntry { loc: Loc },
    #[error("{loc}change records are not supported (changetype: {kind})")]
    ChangeRecord { loc: Loc, kind: String },
    #[error("{loc}entry {dn:?} lacks the MUST attribute {attr} of the provider object class")]
    Missing {
        loc: Loc,
        dn: String,
        attr: &'static str,
    },
    #[error("{loc}entry {dn:?} has {count} values of the single-valued attribute {attr}")]
    SingleValued {
        loc: Loc,
        dn: String,
        attr: &'static str,
        count: usize,
    },
    #[error("{loc}entry {dn:?}: invalid {attr}: {detail}")]
    BadValue {
        loc: Loc,
        dn: String,
        attr: &'static str,
        detail: String,
    },
    #[error(
        "{loc}entry {dn:?}: providerCertificateHash {hash} is not the SHA-1 of any of its certificates"
    )]
    HashMismatch { loc: Loc, dn: String, hash: String },
    #[error("{loc}entry {dn:?}: the certificate with SHA-1 {sha1} has no providerCertificateHash")]
    UnhashedCertificate { loc: Loc, dn: String, sha1: String },
    #[error("{loc}entry {dn:?} appears twice")]
    DuplicateDn { loc: Loc, dn: String },
    #[error("{loc}entry {dn:?}: certificate {sha1} is also in entry {other:?}")]
    DuplicateCertificate {
        loc: Loc,
        dn: String,
        other: String,
        sha1: String,
    },
    #[error("more than {limit} errors; the rest were not reported")]
    TooManyErrors { limit: usize },
    #[error("computing a certificate digest: {0}")]
    Crypto(#[from] openssl::error::ErrorStack),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Every problem found in one input, in line order.
    #[error("{}", list(.0))]
    Invalid(Vec<IndexError>),
}

fn list(errors: &[IndexError]) -> String {
    let mut s = format!(
        "{} error{} in the provider index:",
        errors.len(),
        if errors.len() == 1 { "" } else { "s" }
    );
    for e in errors {
        s.push_str("\n  ");
        s.push_str(&e.to_string());
    }
    s
}

impl IndexError {
    /// The individual problems (one element unless this is [`IndexError::Invalid`]).
    pub fn errors(&self) -> Vec<&IndexError> {
        match self {
            IndexError::Invalid(v) => v.iter().collect(),
            e => vec![e],
        }
    }

    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> IndexError + '_ {
        move |source| IndexError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Collects errors up to [`MAX_REPORTED_ERRORS`].
#[derive(Default)]
struct Errors(Vec<IndexError>);

impl Errors {
    /// Records `e`; false once the cap is reached (the caller stops).
    fn push(&mut self, e: IndexError) -> bool {
        if self.0.len() < MAX_REPORTED_ERRORS {
            self.0.push(e);
            true
        } else {
            if !self.full() {
                self.0.push(IndexError::TooManyErrors {
                    limit: MAX_REPORTED_ERRORS,
                });
            }
            false
        }
    }

    fn full(&self) -> bool {
        self.0.len() > MAX_REPORTED_ERRORS
    }

    fn into_result<T>(self, ok: T) -> Result<T, IndexError> {
        if self.0.is_empty() {
            Ok(ok)
        } else {
            Err(IndexError::Invalid(self.0))
        }
    }
}

// ---------------------------------------------------------------------------------------
// The index
// ---------------------------------------------------------------------------------------

/// The providers known to this gateway, with the lookups of rules §6.2 and §8.3. Built only
/// through [`ProviderIndex::new`] / [`ProviderIndex::parse`], so its invariants hold: no two
/// records share a dn or a certificate.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProviderIndex {
    records: Vec<ProviderRecord>,
    /// Upper-case SHA-1 → record.
    by_hash: HashMap<String, usize>,
    /// Domain → records managing it, main records (no `providerUnit`) first.
    by_domain: HashMap<Domain, Vec<usize>>,
}

impl ProviderIndex {
    /// An index of `records`; duplicate dns or certificates are errors.
    pub fn new(records: Vec<ProviderRecord>) -> Result<Self, IndexError> {
        let with_loc = records.into_iter().map(|r| (Loc(None), r)).collect();
        let mut errors = Errors::default();
        let index = Self::build(with_loc, &mut errors);
        errors.into_result(index)
    }

    fn build(records: Vec<(Loc, ProviderRecord)>, errors: &mut Errors) -> Self {
        let mut index = Self::default();
        let mut dns: HashMap<String, usize> = HashMap::new();
        for (loc, r) in records {
            let dn_key = r.dn.to_lowercase();
            if dns.contains_key(&dn_key) {
                errors.push(IndexError::DuplicateDn { loc, dn: r.dn });
                continue;
            }
            if let Some((h, &i)) = r
                .certificate_hashes
                .iter()
                .find_map(|h| index.by_hash.get_key_value(&h.to_ascii_uppercase()))
            {
                errors.push(IndexError::DuplicateCertificate {
                    loc,
                    dn: r.dn,
                    other: index.records[i].dn.clone(),
                    sha1: h.clone(),
                });
                continue;
            }
            let i = index.records.len();
            dns.insert(dn_key, i);
            for h in &r.certificate_hashes {
                index.by_hash.insert(h.to_ascii_uppercase(), i);
            }
            for d in &r.managed_domains {
                let v = index.by_domain.entry(d.clone()).or_default();
                if r.unit.is_none() {
                    let main_end = v
                        .iter()
                        .take_while(|&&j| index.records[j].unit.is_none())
                        .count();
                    v.insert(main_end, i);
                } else {
                    v.push(i);
                }
            }
            index.records.push(r);
        }
        index
    }

    /// Parses an LDIF index with the default [`LdifLimits`]. Non-provider entries (the
    /// `o=postacert` root, containers) are skipped.
    pub fn parse(input: &[u8]) -> Result<Self, IndexError> {
        Self::parse_with_limits(input, &LdifLimits::default())
    }

    pub fn parse_with_limits(input: &[u8], limits: &LdifLimits) -> Result<Self, IndexError> {
        let mut errors = Errors::default();
        let entries = ldif::parse_ldif_collect(input, limits, &mut errors)?;
        let mut records = Vec::new();
        for e in &entries {
            if errors.full() {
                break;
            }
            match ProviderRecord::from_entry(e) {
                Ok(Some(r)) => records.push((Loc(Some(e.line)), r)),
                Ok(None) => {}
                Err(errs) => {
                    for x in errs {
                        if !errors.push(x) {
                            break;
                        }
                    }
                }
            }
        }
        let index = Self::build(records, &mut errors);
        errors.0.sort_by_key(|e| match e {
            IndexError::TooManyErrors { .. } => usize::MAX,
            e => error_line(e).unwrap_or(0),
        });
        errors.into_result(index)
    }

    pub fn records(&self) -> &[ProviderRecord] {
        &self.records
    }

    pub fn into_records(self) -> Vec<ProviderRecord> {
        self.records
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// This index plus `own`, replacing an imported record with the same dn (the national
    /// dump contains our own entry too).
    pub fn with_own(self, own: ProviderRecord) -> Result<Self, IndexError> {
        let mut records = self.records;
        records.retain(|r| !r.dn.eq_ignore_ascii_case(&own.dn));
        records.insert(0, own);
        Self::new(records)
    }

    /// Rules §6.2 / §8.3, "signature origin": SHA-1 of the DER, looked up case-insensitively
    /// in `providerCertificateHash`, then the full certificate compared with one of the
    /// record's `providerCertificate` values.
    pub fn by_certificate(&self, cert: &X509) -> Option<&ProviderRecord> {
        let sha1 = certificate_sha1(cert).ok()?;
        let r = &self.records[*self.by_hash.get(&sha1)?];
        let der = cert.to_der().ok()?;
        r.certificates
            .iter()
            .any(|c| c.to_der().is_ok_and(|d| d == der))
            .then_some(r)
    }

    /// The record whose `managedDomains` holds `domain` (case-insensitive; a main record is
    /// preferred to a secondary environment's).
    pub fn by_domain(&self, domain: &Domain) -> Option<&ProviderRecord> {
        self.by_domain
            .get(domain)
            .and_then(|v| v.first())
            .map(|&i| &self.records[i])
    }

    /// Rule §6.1 / §8.3: a recipient in a managed domain is `certificato`, else `esterno`.
    pub fn is_pec_domain(&self, domain: &Domain) -> bool {
        self.by_domain.contains_key(domain)
    }

    /// All records, as LDIF entries separated by blank lines, after `version: 1`.
    pub fn to_ldif(&self) -> Result<String, IndexError> {
        let mut out = String::from("version: 1\n");
        for r in &self.records {
            out.push('\n');
            out.push_str(&r.to_ldif()?);
        }
        Ok(out)
    }

    /// Where the imported index lives: `store.dir/index.ldif`.
    pub fn default_path(config: &Config) -> PathBuf {
        config.store.dir.join(INDEX_FILE_NAME)
    }

    /// Reads and parses the file at `path` (at most [`MAX_LDIF_BYTES`]).
    pub fn load(path: &Path) -> Result<Self, IndexError> {
        let bytes = read_bounded(path, MAX_LDIF_BYTES)?;
        Self::parse(&bytes)
    }

    /// Like [`ProviderIndex::load`], but a missing file is an empty index (nothing imported).
    pub fn load_or_empty(path: &Path) -> Result<Self, IndexError> {
        match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            _ => Self::load(path),
        }
    }

    /// Replaces the file at `path` atomically: a temporary file in the same directory is
    /// written and fsynced, renamed over `path`, and the directory fsynced. A reader sees
    /// the old index or the new one, never a mix; a crash leaves at worst the temp file.
    pub fn save_atomic(&self, path: &Path) -> Result<(), IndexError> {
        write_atomic(path, self.to_ldif()?.as_bytes())
    }
}

/// The line an error names, for sorting.
fn error_line(e: &IndexError) -> Option<usize> {
    use IndexError::*;
    match e {
        TooManyEntries { loc, .. }
        | ValueTooLarge { loc, .. }
        | InvalidUtf8 { loc }
        | StrayContinuation { loc }
        | MissingColon { loc }
        | BadAttributeName { loc, .. }
        | BadBase64 { loc, .. }
        | UrlValue { loc, .. }
        | NoDn { loc }
        | DnInsideEntry { loc }
        | ChangeRecord { loc, .. }
        | Missing { loc, .. }
        | SingleValued { loc, .. }
        | BadValue { loc, .. }
        | HashMismatch { loc, .. }
        | UnhashedCertificate { loc, .. }
        | DuplicateDn { loc, .. }
        | DuplicateCertificate { loc, .. } => loc.0,
        _ => None,
    }
}

/// Reads at most `limit` bytes; a longer file is [`IndexError::TooLarge`].
pub fn read_bounded(path: &Path, limit: usize) -> Result<Vec<u8>, IndexError> {
    let f = std::fs::File::open(path).map_err(IndexError::io(path))?;
    let mut bytes = Vec::new();
    f.take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(IndexError::io(path))?;
    if bytes.len() > limit {
        return Err(IndexError::TooLarge { limit });
    }
    Ok(bytes)
}

/// Temp file, fsync, rename, fsync of the directory (creating the directory if needed).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), IndexError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(IndexError::io(&dir))?;
    let file_name = path
        .file_name()
        .map_or_else(|| "index".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{file_name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp).map_err(IndexError::io(&tmp))?;
        f.write_all(bytes).map_err(IndexError::io(&tmp))?;
        f.sync_all().map_err(IndexError::io(&tmp))?;
        std::fs::rename(&tmp, path).map_err(IndexError::io(path))?;
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(IndexError::io(&dir))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
