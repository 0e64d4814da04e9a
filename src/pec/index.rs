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
//! in one pass. Nothing here panics on any input (see the garbage test).
//!
//! Config keys read: `provider.name`, `provider.domains`, `provider.service_address`,
//! `provider.receipt_mailbox` (own entry) and `store.dir` (where the imported index lives).

use std::collections::HashMap;
use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use openssl::hash::MessageDigest;
use openssl::x509::X509;

use super::address::{Domain, PecAddress};
use crate::config::Config;

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
/// Column at which the writer folds lines (RFC 2849 note 2 recommends 76).
const FOLD_COLUMN: usize = 76;

/// The `provider` object class (digest §8.1).
const OC_PROVIDER: &str = "provider";
const OC_PROVIDER_OID: &str = "1.3.6.1.4.1.16572.2.1.2";

/// The index attributes with their OIDs (digest §8.1), so an export that names attributes
/// by OID reads the same.
const ATTRS: &[(&str, &str)] = &[
    ("providercertificatehash", "1.3.6.1.4.1.16572.2.2.1"),
    ("providercertificate", "1.3.6.1.4.1.16572.2.2.2"),
    ("providername", "1.3.6.1.4.1.16572.2.2.3"),
    ("mailreceipt", "1.3.6.1.4.1.16572.2.2.4"),
    ("manageddomains", "1.3.6.1.4.1.16572.2.2.5"),
    ("ldiflocationurl", "1.3.6.1.4.1.16572.2.2.6"),
    ("providerunit", "1.3.6.1.4.1.16572.2.2.7"),
    ("objectclass", "2.5.4.0"),
    ("description", "2.5.4.13"),
];

/// Base64 as directories write it: padding optional, stray trailing bits tolerated.
const LENIENT_B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

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

// ---------------------------------------------------------------------------------------
// LDIF (RFC 2849), generic layer
// ---------------------------------------------------------------------------------------

/// The bounds of one LDIF parse (design principle 5).
#[derive(Debug, Clone, Copy)]
pub struct LdifLimits {
    pub max_bytes: usize,
    pub max_entries: usize,
    pub max_value_bytes: usize,
}

impl Default for LdifLimits {
    fn default() -> Self {
        Self {
            max_bytes: MAX_LDIF_BYTES,
            max_entries: MAX_LDIF_ENTRIES,
            max_value_bytes: MAX_VALUE_BYTES,
        }
    }
}

/// One attribute value of an LDIF entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LdifAttr {
    /// Line where the value starts.
    pub line: usize,
    /// The attribute type, lower-cased, OIDs of index attributes mapped to their names.
    pub name: String,
    /// Options (`binary` of `providerCertificate;binary`), lower-cased.
    pub options: Vec<String>,
    /// The value, base64-decoded when given with `::`.
    pub value: Vec<u8>,
}

/// One LDIF content record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LdifEntry {
    /// Line of the `dn:`.
    pub line: usize,
    pub dn: String,
    pub attrs: Vec<LdifAttr>,
}

impl LdifEntry {
    /// The values of attribute `name` (lower-case), with their lines.
    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a LdifAttr> + 'a {
        self.attrs.iter().filter(move |a| a.name == name)
    }
}

/// A logical line: physical lines joined by unfolding, with the first one's number and
/// where each continuation starts (byte offset in `bytes`, line number), so an error deep in
/// a folded base64 value names its physical line.
struct Logical {
    line: usize,
    bytes: Vec<u8>,
    breaks: Vec<(usize, usize)>,
}

impl Logical {
    fn line_at(&self, offset: usize) -> usize {
        self.breaks
            .iter()
            .take_while(|(o, _)| *o <= offset)
            .last()
            .map_or(self.line, |(_, l)| *l)
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
            self.0.push(IndexError::TooManyErrors {
                limit: MAX_REPORTED_ERRORS,
            });
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

/// Parses LDIF content records. Entries with errors are reported, not returned; the result
/// is `Ok` only when the whole input is clean.
pub fn parse_ldif(input: &[u8], limits: &LdifLimits) -> Result<Vec<LdifEntry>, IndexError> {
    let mut errors = Errors::default();
    let entries = parse_ldif_collect(input, limits, &mut errors)?;
    errors.into_result(entries)
}

/// The parse proper; fatal limit errors return `Err`, the rest go to `errors`.
fn parse_ldif_collect(
    input: &[u8],
    limits: &LdifLimits,
    errors: &mut Errors,
) -> Result<Vec<LdifEntry>, IndexError> {
    if input.len() > limits.max_bytes {
        return Err(IndexError::TooLarge {
            limit: limits.max_bytes,
        });
    }
    let input = input.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(input);
    let mut out = Vec::new();
    let mut first = true;
    for group in unfold(input, limits, errors)? {
        if errors.full() {
            break;
        }
        let mut lines = group.as_slice();
        // RFC 2849: an optional `version: 1` opens the file, on its own or right above the
        // first dn.
        if first {
            first = false;
            if let Some(l) = lines.first()
                && l.bytes.len() >= 8
                && l.bytes[..8].eq_ignore_ascii_case(b"version:")
            {
                lines = &lines[1..];
            }
        }
        if lines.is_empty() {
            continue;
        }
        if let Some(entry) = parse_entry(lines, limits, errors) {
            out.push(entry);
        }
    }
    Ok(out)
}

/// Splits the input into entries (blank-line separated) of logical lines, dropping comments
/// and joining continuation lines (RFC 2849 notes 2 and 3). Folding happens on bytes, so a
/// fold inside a multi-byte UTF-8 character is harmless.
fn unfold(
    input: &[u8],
    limits: &LdifLimits,
    errors: &mut Errors,
) -> Result<Vec<Vec<Logical>>, IndexError> {
    let mut groups: Vec<Vec<Logical>> = Vec::new();
    let mut cur: Vec<Logical> = Vec::new();
    let mut in_comment = false;
    for (i, raw) in input.split(|b| *b == b'\n').enumerate() {
        let line = i + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        // Whitespace-only lines are separators: no writer folds into an empty continuation,
        // but hand-edited files do leave blanks with stray spaces between entries.
        let blank = raw.iter().all(u8::is_ascii_whitespace);
        if raw.first() == Some(&b' ') && !blank {
            if in_comment {
                continue;
            }
            match cur.last_mut() {
                Some(l) => {
                    l.breaks.push((l.bytes.len(), line));
                    l.bytes.extend_from_slice(&raw[1..]);
                }
                None => {
                    if !errors.push(IndexError::StrayContinuation {
                        loc: Loc(Some(line)),
                    }) {
                        break;
                    }
                }
            }
            continue;
        }
        in_comment = false;
        if blank {
            if !cur.is_empty() {
                groups.push(std::mem::take(&mut cur));
                if groups.len() > limits.max_entries {
                    return Err(IndexError::TooManyEntries {
                        loc: Loc(Some(line)),
                        limit: limits.max_entries,
                    });
                }
            }
            continue;
        }
        if raw[0] == b'#' {
            in_comment = true;
            continue;
        }
        cur.push(Logical {
            line,
            bytes: raw.to_vec(),
            breaks: Vec::new(),
        });
    }
    if !cur.is_empty() {
        groups.push(cur);
        if groups.len() > limits.max_entries {
            return Err(IndexError::TooManyEntries {
                loc: Loc(None),
                limit: limits.max_entries,
            });
        }
    }
    Ok(groups)
}

/// One entry; `None` (with its errors recorded) when any line is bad.
fn parse_entry(lines: &[Logical], limits: &LdifLimits, errors: &mut Errors) -> Option<LdifEntry> {
    let mut attrs = Vec::with_capacity(lines.len());
    let mut ok = true;
    for l in lines {
        match parse_attr(l, limits) {
            Ok(a) => attrs.push(a),
            Err(e) => {
                ok = false;
                if !errors.push(e) {
                    return None;
                }
            }
        }
    }
    if !ok {
        return None;
    }
    let first = attrs.first()?;
    let line = first.line;
    if first.name != "dn" {
        errors.push(IndexError::NoDn {
            loc: Loc(Some(line)),
        });
        return None;
    }
    let Ok(dn) = String::from_utf8(first.value.clone()) else {
        errors.push(IndexError::InvalidUtf8 {
            loc: Loc(Some(line)),
        });
        return None;
    };
    attrs.remove(0);
    if let Some(a) = attrs.iter().find(|a| a.name == "dn") {
        errors.push(IndexError::DnInsideEntry {
            loc: Loc(Some(a.line)),
        });
        return None;
    }
    // A `changetype: add` record carries the same content as a content record; anything
    // else would be an instruction to a directory, not a description of a provider.
    if let Some(ct) = attrs.first().filter(|a| a.name == "changetype") {
        let kind = String::from_utf8_lossy(&ct.value)
            .trim()
            .to_ascii_lowercase();
        if kind != "add" {
            errors.push(IndexError::ChangeRecord {
                loc: Loc(Some(ct.line)),
                kind,
            });
            return None;
        }
        attrs.remove(0);
    }
    Some(LdifEntry {
        line,
        dn: dn.trim().to_string(),
        attrs,
    })
}

/// `AttributeDescription ":" (" " value | ":" base64 | "<" url)` (RFC 2849 `attrval-spec`).
fn parse_attr(l: &Logical, limits: &LdifLimits) -> Result<LdifAttr, IndexError> {
    let loc = Loc(Some(l.line));
    let colon = l
        .bytes
        .iter()
        .position(|b| *b == b':')
        .ok_or(IndexError::MissingColon { loc })?;
    let desc = &l.bytes[..colon];
    let desc_ok = !desc.is_empty()
        && desc[0].is_ascii_alphanumeric()
        && desc
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b';' | b'.'));
    if !desc_ok {
        return Err(IndexError::BadAttributeName {
            loc,
            name: String::from_utf8_lossy(desc).chars().take(80).collect(),
        });
    }
    // Checked ASCII just above.
    let desc = String::from_utf8_lossy(desc).to_ascii_lowercase();
    let mut parts = desc.split(';');
    let ty = parts.next().unwrap_or_default();
    let name = ATTRS
        .iter()
        .find(|(_, oid)| *oid == ty)
        .map_or(ty, |(n, _)| n)
        .to_string();
    let options: Vec<String> = parts
        .filter(|o| !o.is_empty())
        .map(str::to_string)
        .collect();
    let rest = &l.bytes[colon + 1..];
    let value = match rest.first() {
        Some(b':') => {
            let text: Vec<u8> = rest[1..]
                .iter()
                .copied()
                .filter(|b| !b.is_ascii_whitespace())
                .collect();
            if text.len() / 4 * 3 > limits.max_value_bytes + 3 {
                return Err(IndexError::ValueTooLarge {
                    loc,
                    limit: limits.max_value_bytes,
                });
            }
            LENIENT_B64.decode(&text).map_err(|e| {
                // Name the physical line of the offending character inside a folded value.
                let at = match e {
                    base64::DecodeError::InvalidByte(i, _)
                    | base64::DecodeError::InvalidLastSymbol(i, _) => Some(i),
                    _ => None,
                };
                let line = at
                    .and_then(|i| {
                        rest.iter()
                            .enumerate()
                            .skip(1)
                            .filter(|(_, b)| !b.is_ascii_whitespace())
                            .nth(i)
                            .map(|(j, _)| l.line_at(colon + 1 + j))
                    })
                    .unwrap_or(l.line);
                IndexError::BadBase64 {
                    loc: Loc(Some(line)),
                    attr: desc.clone(),
                }
            })?
        }
        Some(b'<') => return Err(IndexError::UrlValue { loc, attr: desc }),
        _ => {
            let start = rest.iter().position(|b| *b != b' ').unwrap_or(rest.len());
            rest[start..].to_vec()
        }
    };
    if value.len() > limits.max_value_bytes {
        return Err(IndexError::ValueTooLarge {
            loc,
            limit: limits.max_value_bytes,
        });
    }
    Ok(LdifAttr {
        line: l.line,
        name,
        options,
        value,
    })
}

// ---------------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------------

/// One entry of the `provider` object class (digest §8.1).
#[derive(Debug, Clone)]
pub struct ProviderRecord {
    pub dn: String,
    /// `providerName` (single-valued, MUST).
    pub name: String,
    /// `providerUnit`: only on secondary operating environments.
    pub unit: Option<String>,
    /// `mailReceipt`: where take-charge receipts and virus notices go (MUST, single).
    pub mail_receipt: PecAddress,
    /// `managedDomains` (MUST, at least one), lower-case, without duplicates.
    pub managed_domains: Vec<Domain>,
    /// `providerCertificate` (MUST, at least one; several during a rollover).
    pub certificates: Vec<X509>,
    /// `providerCertificateHash`: upper-case hex SHA-1 of each certificate's DER.
    pub certificate_hashes: Vec<String>,
    /// `LDIFLocationURL`.
    pub ldif_url: Option<String>,
    /// `description` (several values are joined with newlines).
    pub description: Option<String>,
}

impl PartialEq for ProviderRecord {
    fn eq(&self, o: &Self) -> bool {
        let ders = |v: &[X509]| v.iter().map(|c| c.to_der().ok()).collect::<Vec<_>>();
        self.dn == o.dn
            && self.name == o.name
            && self.unit == o.unit
            && self.mail_receipt == o.mail_receipt
            && self.managed_domains == o.managed_domains
            && ders(&self.certificates) == ders(&o.certificates)
            && self.certificate_hashes == o.certificate_hashes
            && self.ldif_url == o.ldif_url
            && self.description == o.description
    }
}

/// Upper-case hex SHA-1 of the DER encoding: the `providerCertificateHash` form (§8.1).
pub fn certificate_sha1(cert: &X509) -> Result<String, IndexError> {
    Ok(hex::encode_upper(cert.digest(MessageDigest::sha1())?))
}

impl ProviderRecord {
    /// This provider's own entry: `providerName=<provider.name>,o=postacert`, our receipt
    /// mailbox, our domains (plus the service address's domain, §8.3 note) and the signing
    /// certificate.
    pub fn for_this_provider(config: &Config, signer_cert: &X509) -> Result<Self, IndexError> {
        let p = &config.provider;
        let mut managed_domains = p.domains.clone();
        for d in [p.service_address.domain(), p.receipt_mailbox.domain()] {
            if !managed_domains.contains(d) {
                managed_domains.push(d.clone());
            }
        }
        Ok(Self {
            dn: format!("providerName={},o=postacert", escape_dn_value(&p.name)),
            name: p.name.clone(),
            unit: None,
            mail_receipt: p.receipt_mailbox.clone(),
            managed_domains,
            certificates: vec![signer_cert.clone()],
            certificate_hashes: vec![certificate_sha1(signer_cert)?],
            ldif_url: None,
            description: None,
        })
    }

    /// Whether `domain` is one of this record's `managedDomains` (case-insensitive: both
    /// sides are lower-cased [`Domain`]s).
    pub fn manages(&self, domain: &Domain) -> bool {
        self.managed_domains.iter().any(|d| d == domain)
    }

    /// Rules §6.2 "signature origin": the certificate's SHA-1 is one of our hashes
    /// (case-insensitive) and its DER equals one of our certificates.
    pub fn holds_certificate(&self, cert: &X509) -> bool {
        let (Ok(sha1), Ok(der)) = (certificate_sha1(cert), cert.to_der()) else {
            return false;
        };
        self.certificate_hashes
            .iter()
            .any(|h| h.eq_ignore_ascii_case(&sha1))
            && self
                .certificates
                .iter()
                .any(|c| c.to_der().is_ok_and(|d| d == der))
    }

    /// Builds a record from an LDIF entry: `Ok(None)` when the entry is not a provider
    /// (no `provider` object class and no `providerName`), all problems otherwise.
    pub fn from_entry(e: &LdifEntry) -> Result<Option<Self>, Vec<IndexError>> {
        let is_provider = e.values("objectclass").any(|a| {
            let v = String::from_utf8_lossy(&a.value);
            let v = v.trim();
            v.eq_ignore_ascii_case(OC_PROVIDER) || v == OC_PROVIDER_OID
        }) || e.values("providername").next().is_some();
        if !is_provider {
            return Ok(None);
        }
        let mut errs = Vec::new();
        let dn = e.dn.clone();
        let loc = Loc(Some(e.line));
        let text = |a: &LdifAttr, attr: &'static str, errs: &mut Vec<IndexError>| {
            match std::str::from_utf8(&a.value) {
                Ok(s) => Some(s.trim().to_string()),
                Err(_) => {
                    errs.push(IndexError::BadValue {
                        loc: Loc(Some(a.line)),
                        dn: dn.clone(),
                        attr,
                        detail: "not UTF-8".into(),
                    });
                    None
                }
            }
        };
        let single = |key: &str, attr: &'static str, must: bool, errs: &mut Vec<IndexError>| {
            let vals: Vec<&LdifAttr> = e.values(key).collect();
            match vals.len() {
                0 if must => {
                    errs.push(IndexError::Missing {
                        loc,
                        dn: dn.clone(),
                        attr,
                    });
                    None
                }
                0 => None,
                1 => text(vals[0], attr, errs).map(|s| (vals[0].line, s)),
                count => {
                    errs.push(IndexError::SingleValued {
                        loc: Loc(Some(vals[1].line)),
                        dn: dn.clone(),
                        attr,
                        count,
                    });
                    None
                }
            }
        };
        let bad = |line: usize, attr: &'static str, detail: String| IndexError::BadValue {
            loc: Loc(Some(line)),
            dn: dn.clone(),
            attr,
            detail,
        };

        let name = single("providername", "providerName", true, &mut errs).map(|(_, s)| s);
        let unit = single("providerunit", "providerUnit", false, &mut errs).map(|(_, s)| s);
        let ldif_url =
            single("ldiflocationurl", "LDIFLocationURL", false, &mut errs).map(|(_, s)| s);
        let mail_receipt =
            single("mailreceipt", "mailReceipt", true, &mut errs).and_then(|(line, s)| {
                match PecAddress::parse(&s) {
                    Ok(a) => Some(a),
                    Err(err) => {
                        errs.push(bad(line, "mailReceipt", err.to_string()));
                        None
                    }
                }
            });

        let mut managed_domains: Vec<Domain> = Vec::new();
        for a in e.values("manageddomains") {
            let Some(s) = text(a, "managedDomains", &mut errs) else {
                continue;
            };
            match Domain::parse(&s) {
                Ok(d) if managed_domains.contains(&d) => {}
                Ok(d) => managed_domains.push(d),
                Err(err) => errs.push(bad(a.line, "managedDomains", err.to_string())),
            }
        }
        if e.values("manageddomains").next().is_none() {
            errs.push(IndexError::Missing {
                loc,
                dn: dn.clone(),
                attr: "managedDomains",
            });
        }

        // Certificates with their SHA-1, to cross-check the hashes below.
        let mut certificates = Vec::new();
        let mut cert_sha1 = Vec::new();
        for a in e.values("providercertificate") {
            match X509::from_der(&a.value) {
                Ok(c) => match certificate_sha1(&c) {
                    Ok(h) if cert_sha1.iter().any(|(x, _)| *x == h) => {}
                    Ok(h) => {
                        cert_sha1.push((h, a.line));
                        certificates.push(c);
                    }
                    Err(err) => errs.push(bad(a.line, "providerCertificate", err.to_string())),
                },
                Err(_) => errs.push(bad(
                    a.line,
                    "providerCertificate",
                    "not a DER X.509 certificate".into(),
                )),
            }
        }
        if e.values("providercertificate").next().is_none() {
            errs.push(IndexError::Missing {
                loc,
                dn: dn.clone(),
                attr: "providerCertificate",
            });
        }

        let mut certificate_hashes: Vec<String> = Vec::new();
        for a in e.values("providercertificatehash") {
            let Some(s) = text(a, "providerCertificateHash", &mut errs) else {
                continue;
            };
            // Tolerate `AB:CD:...` and lower case; store the canonical upper-case form.
            let h: String = s
                .chars()
                .filter(|c| *c != ':' && !c.is_whitespace())
                .collect();
            if h.len() != 40 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                errs.push(bad(
                    a.line,
                    "providerCertificateHash",
                    format!("{s:?} is not 40 hex digits (a SHA-1)"),
                ));
                continue;
            }
            let h = h.to_ascii_uppercase();
            if certificate_hashes.contains(&h) {
                continue;
            }
            if !cert_sha1.iter().any(|(x, _)| *x == h) && !certificates.is_empty() {
                errs.push(IndexError::HashMismatch {
                    loc: Loc(Some(a.line)),
                    dn: dn.clone(),
                    hash: h,
                });
                continue;
            }
            certificate_hashes.push(h);
        }
        if e.values("providercertificatehash").next().is_none() {
            errs.push(IndexError::Missing {
                loc,
                dn: dn.clone(),
                attr: "providerCertificateHash",
            });
        } else {
            // The lookup goes through the hash (§6.2), so a certificate without its hash
            // could never be matched: the record is inconsistent.
            for (h, line) in &cert_sha1 {
                if !certificate_hashes.contains(h)
                    && !errs
                        .iter()
                        .any(|e| matches!(e, IndexError::HashMismatch { .. }))
                {
                    errs.push(IndexError::UnhashedCertificate {
                        loc: Loc(Some(*line)),
                        dn: dn.clone(),
                        sha1: h.clone(),
                    });
                }
            }
        }

        let descs: Vec<String> = e
            .values("description")
            .filter_map(|a| text(a, "description", &mut errs))
            .collect();
        let description = (!descs.is_empty()).then(|| descs.join("\n"));

        match (name, mail_receipt) {
            (Some(name), Some(mail_receipt)) if errs.is_empty() => Ok(Some(Self {
                dn,
                name,
                unit,
                mail_receipt,
                managed_domains,
                certificates,
                certificate_hashes,
                ldif_url,
                description,
            })),
            _ => Err(errs),
        }
    }

    /// The entry in the RFC 6109 §4.5 shape (LF line ends, folded at 76 columns, values
    /// that are not LDIF-safe in base64), without a trailing blank line.
    pub fn to_ldif(&self) -> Result<String, IndexError> {
        let mut out = String::new();
        push_attr(&mut out, "dn", &self.dn);
        push_attr(&mut out, "objectclass", "top");
        push_attr(&mut out, "objectclass", OC_PROVIDER);
        push_attr(&mut out, "providerName", &self.name);
        if let Some(u) = &self.unit {
            push_attr(&mut out, "providerUnit", u);
        }
        for h in &self.certificate_hashes {
            push_attr(&mut out, "providerCertificateHash", h);
        }
        for c in &self.certificates {
            let b64 = STANDARD.encode(c.to_der()?);
            push_folded(&mut out, &format!("providerCertificate;binary:: {b64}"));
        }
        push_attr(&mut out, "mailReceipt", &self.mail_receipt.to_string());
        if let Some(u) = &self.ldif_url {
            push_attr(&mut out, "LDIFLocationURL", u);
        }
        for d in &self.managed_domains {
            push_attr(&mut out, "managedDomains", d.as_str());
        }
        if let Some(d) = &self.description {
            push_attr(&mut out, "description", d);
        }
        Ok(out)
    }
}

/// RFC 2849 SAFE-STRING (ASCII, no NUL/CR/LF, no leading space, `:` or `<`); values with a
/// trailing space are base64-encoded too so that no tool trims them.
fn ldif_safe(v: &str) -> bool {
    v.bytes()
        .all(|b| b != 0 && b != b'\r' && b != b'\n' && b < 0x80)
        && !v.starts_with([' ', ':', '<'])
        && !v.ends_with(' ')
}

fn push_attr(out: &mut String, name: &str, value: &str) {
    if ldif_safe(value) {
        push_folded(out, &format!("{name}: {value}"));
    } else {
        push_folded(
            out,
            &format!("{name}:: {}", STANDARD.encode(value.as_bytes())),
        );
    }
}

/// Folds an ASCII line: 76 columns, then continuation lines of a space plus 75.
fn push_folded(out: &mut String, line: &str) {
    let b = line.as_bytes();
    let (head, mut rest) = b.split_at(b.len().min(FOLD_COLUMN));
    out.push_str(&String::from_utf8_lossy(head));
    out.push('\n');
    while !rest.is_empty() {
        let (chunk, r) = rest.split_at(rest.len().min(FOLD_COLUMN - 1));
        out.push(' ');
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
        rest = r;
    }
}

/// RFC 4514 §2.4 escaping of an attribute value inside a DN.
fn escape_dn_value(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    let n = v.chars().count();
    for (i, c) in v.chars().enumerate() {
        match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=' => {
                s.push('\\');
                s.push(c);
            }
            '#' if i == 0 => s.push_str("\\#"),
            ' ' if i == 0 || i + 1 == n => s.push_str("\\ "),
            '\0' => s.push_str("\\00"),
            c => s.push(c),
        }
    }
    s
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
                .find_map(|h| index.by_hash.get_key_value(h))
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
                index.by_hash.insert(h.clone(), i);
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
        let entries = parse_ldif_collect(input, limits, &mut errors)?;
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

#[cfg(test)]
mod tests {
    use openssl::asn1::Asn1Time;
    use openssl::bn::BigNum;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::nid::Nid;
    use openssl::pkey::PKey;
    use openssl::x509::{X509Builder, X509NameBuilder};

    use super::*;

    fn cert(cn: &str) -> X509 {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", cn).unwrap();
        let name = name.build();
        let mut b = X509Builder::new().unwrap();
        b.set_version(2).unwrap();
        b.set_serial_number(&BigNum::from_u32(1).unwrap().to_asn1_integer().unwrap())
            .unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::days_from_now(30).unwrap())
            .unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        b.build()
    }

    fn b64(c: &X509) -> String {
        STANDARD.encode(c.to_der().unwrap())
    }

    fn sha1(c: &X509) -> String {
        certificate_sha1(c).unwrap()
    }

    fn record(name: &str, domains: &[&str], c: &X509) -> ProviderRecord {
        ProviderRecord {
            dn: format!("providerName={},o=postacert", escape_dn_value(name)),
            name: name.into(),
            unit: None,
            mail_receipt: PecAddress::parse(&format!("ricevute@{}", domains[0])).unwrap(),
            managed_domains: domains.iter().map(|d| Domain::parse(d).unwrap()).collect(),
            certificates: vec![c.clone()],
            certificate_hashes: vec![sha1(c)],
            ldif_url: None,
            description: None,
        }
    }

    /// A well-formed entry in the RFC 6109 §4.5 shape, one value per line.
    fn entry(c: &X509) -> String {
        format!(
            "dn: providerName=Example PEC S.p.A.,o=postacert\n\
             objectclass: top\n\
             objectclass: provider\n\
             providerName: Example PEC S.p.A.\n\
             providerCertificateHash: {}\n\
             providerCertificate;binary:: {}\n\
             mailReceipt: ricevute@pec.example.it\n\
             LDIFLocationURL: https://pec.example.it/index.ldif.p7m\n\
             managedDomains: pec.example.it\n\
             managedDomains: cert.customer.example\n\
             description: Certified mail services\n",
            sha1(c),
            b64(c)
        )
    }

    fn errors_of(input: &str) -> Vec<String> {
        match ProviderIndex::parse(input.as_bytes()) {
            Ok(i) => panic!("accepted: {i:?}"),
            Err(e) => e.errors().iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn accepted_forms() {
        let c = cert("Example");
        let base = entry(&c);
        let folded = {
            // Fold every line longer than 20 bytes at arbitrary points.
            let mut s = String::new();
            for l in base.lines() {
                let mut rest = l;
                let mut first = true;
                while !rest.is_empty() {
                    let n = rest.len().min(if first { 20 } else { 13 });
                    if !first {
                        s.push(' ');
                    }
                    s.push_str(&rest[..n]);
                    s.push('\n');
                    rest = &rest[n..];
                    first = false;
                }
            }
            s
        };
        let b64_values = base
            .replace(
                "providerName: Example PEC S.p.A.",
                &format!("providerName:: {}", STANDARD.encode("Example PEC S.p.A.")),
            )
            .replace(
                "mailReceipt: ricevute@pec.example.it",
                &format!(
                    "mailReceipt:: {}",
                    STANDARD.encode("ricevute@pec.example.it")
                ),
            );
        let oid_names = base
            .replace("providerCertificateHash:", "1.3.6.1.4.1.16572.2.2.1:")
            .replace("managedDomains:", "1.3.6.1.4.1.16572.2.2.5:");
        let cases: Vec<(&str, String)> = vec![
            ("plain", base.clone()),
            ("crlf", base.replace('\n', "\r\n")),
            ("continuation lines", folded.clone()),
            ("folded crlf", folded.replace('\n', "\r\n")),
            ("base64 values", b64_values),
            ("oid attribute names", oid_names),
            (
                "upper-case names",
                base.replace("managedDomains", "MANAGEDDOMAINS")
                    .replace("objectclass", "objectClass"),
            ),
            (
                "lower-case hash",
                base.replace(&sha1(&c), &sha1(&c).to_lowercase()),
            ),
            ("colon hash", {
                let h = sha1(&c);
                let colon: Vec<String> = h
                    .as_bytes()
                    .chunks(2)
                    .map(|p| String::from_utf8_lossy(p).into())
                    .collect();
                base.replace(&h, &colon.join(":"))
            }),
            (
                "version, comments, root entry",
                format!(
                    "version: 1\n# exported\n#  folded comment\n\ndn: o=postacert\nobjectclass: top\n\
                 objectclass: organization\no: postacert\n\n\n# provider\n{base}\n\n"
                ),
            ),
            (
                "version above dn, bom",
                format!("\u{feff}version: 1\n{base}"),
            ),
            (
                "changetype add, blank with spaces",
                format!("  \n{}", base.replacen('\n', "\nchangetype: add\n", 1)),
            ),
            (
                "binary option elsewhere",
                base.replace(
                    "providerCertificate;binary::",
                    "providercertificate;BINARY;x-foo::",
                ),
            ),
            (
                "no binary option",
                base.replace("providerCertificate;binary::", "providerCertificate::"),
            ),
        ];
        for (what, input) in cases {
            let index =
                ProviderIndex::parse(input.as_bytes()).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(index.len(), 1, "{what}");
            let r = &index.records()[0];
            assert_eq!(r.name, "Example PEC S.p.A.", "{what}");
            assert_eq!(
                r.dn, "providerName=Example PEC S.p.A.,o=postacert",
                "{what}"
            );
            assert_eq!(
                r.mail_receipt.to_string(),
                "ricevute@pec.example.it",
                "{what}"
            );
            assert_eq!(r.managed_domains.len(), 2, "{what}");
            assert_eq!(r.certificate_hashes, vec![sha1(&c)], "{what}");
            assert!(index.by_certificate(&c).is_some(), "{what}");
        }
    }

    #[test]
    fn rejected_forms_name_the_line() {
        let c = cert("Example");
        let other = cert("Other");
        let base = entry(&c);
        let drop = |attr: &str| {
            base.lines()
                .filter(|l| !l.starts_with(attr))
                .collect::<Vec<_>>()
                .join("\n")
        };
        let cases: Vec<(&str, String, &str)> = vec![
            (
                "missing providerName",
                drop("providerName:"),
                "line 1: entry \"providerName=Example PEC S.p.A.,o=postacert\" lacks the MUST attribute providerName",
            ),
            (
                "missing mailReceipt",
                drop("mailReceipt"),
                "lacks the MUST attribute mailReceipt",
            ),
            (
                "missing managedDomains",
                drop("managedDomains"),
                "lacks the MUST attribute managedDomains",
            ),
            (
                "missing certificate",
                drop("providerCertificate;"),
                "lacks the MUST attribute providerCertificate",
            ),
            (
                "missing hash",
                drop("providerCertificateHash"),
                "lacks the MUST attribute providerCertificateHash",
            ),
            (
                "hash mismatch",
                base.replace(&sha1(&c), &sha1(&other)),
                "line 5: entry \"providerName=Example PEC S.p.A.,o=postacert\": providerCertificateHash",
            ),
            (
                "extra certificate without hash",
                base.replace(
                    "mailReceipt",
                    &format!("providerCertificate;binary:: {}\nmailReceipt", b64(&other)),
                ),
                "line 7: entry \"providerName=Example PEC S.p.A.,o=postacert\": the certificate with SHA-1",
            ),
            (
                "two names",
                base.replace(
                    "providerName: Example PEC S.p.A.\n",
                    "providerName: A\nproviderName: B\n",
                ),
                "line 5: entry \"providerName=Example PEC S.p.A.,o=postacert\" has 2 values of the single-valued attribute providerName",
            ),
            (
                "bad domain",
                base.replace(
                    "managedDomains: pec.example.it",
                    "managedDomains: pec..example",
                ),
                "line 9: entry \"providerName=Example PEC S.p.A.,o=postacert\": invalid managedDomains",
            ),
            (
                "bad address",
                base.replace("ricevute@pec.example.it", "ricevute"),
                "line 7: entry \"providerName=Example PEC S.p.A.,o=postacert\": invalid mailReceipt",
            ),
            (
                "bad hash",
                base.replace(&sha1(&c), "XYZ"),
                "line 5: entry \"providerName=Example PEC S.p.A.,o=postacert\": invalid providerCertificateHash",
            ),
            (
                "not a certificate",
                base.replace(&b64(&c), "AAAA"),
                "line 6: entry \"providerName=Example PEC S.p.A.,o=postacert\": invalid providerCertificate",
            ),
            (
                "bad base64",
                base.replace(&b64(&c), "!!!!"),
                "line 6: invalid base64",
            ),
            (
                "no colon",
                base.replace("objectclass: top", "objectclass top"),
                "line 2: expected `attribute: value`",
            ),
            (
                "bad attribute name",
                base.replace("objectclass: top", "object class: top"),
                "line 2: invalid attribute description",
            ),
            (
                "url value",
                base.replace("description: Certified", "description:< file:///etc/passwd"),
                "line 11: description has a URL value",
            ),
            (
                "no dn",
                base.replacen("dn:", "cn:", 1),
                "line 1: an entry must start with `dn:`",
            ),
            (
                "missing blank line",
                format!("{base}{base}"),
                "line 12: a second `dn:`",
            ),
            (
                "stray continuation",
                format!(" folded\n{base}"),
                "line 1: continuation line",
            ),
            (
                "changetype modify",
                base.replacen('\n', "\nchangetype: modify\n", 1),
                "line 2: change records are not supported",
            ),
            (
                "invalid utf-8 name",
                base.replace("providerName: Example PEC S.p.A.", "providerName:: /w=="),
                "line 4: entry \"providerName=Example PEC S.p.A.,o=postacert\": invalid providerName: not UTF-8",
            ),
            (
                "duplicate dn",
                format!("{base}\n{base}"),
                "line 13: entry \"providerName=Example PEC S.p.A.,o=postacert\" appears twice",
            ),
            (
                "duplicate certificate",
                format!("{base}\n{}", base.replace("Example PEC", "Copy PEC")),
                "line 13: entry \"providerName=Copy PEC S.p.A.,o=postacert\": certificate",
            ),
        ];
        for (what, input, want) in cases {
            let errs = errors_of(&input);
            assert!(
                errs.iter().any(|e| e.contains(want)),
                "{what}: want {want:?} in {errs:#?}"
            );
        }
    }

    #[test]
    fn all_errors_are_collected_in_line_order() {
        let c = cert("Example");
        let good = entry(&c);
        let input = format!(
            "{}\n{}\n{}",
            good.replace("mailReceipt: ricevute@pec.example.it", "mailReceipt: nope"),
            "dn: providerName=X,o=postacert\nbroken line\n",
            good.replace("Example PEC", "Third PEC")
                .replace(&sha1(&c), &"0".repeat(40))
        );
        let errs = errors_of(&input);
        assert_eq!(errs.len(), 3, "{errs:#?}");
        assert!(errs[0].starts_with("line 7:"), "{errs:#?}");
        assert!(errs[1].starts_with("line 14:"), "{errs:#?}");
        assert!(errs[2].starts_with("line 20:"), "{errs:#?}");
    }

    #[test]
    fn limits() {
        let c = cert("Example");
        let base = entry(&c);
        let small = LdifLimits {
            max_bytes: 100,
            ..LdifLimits::default()
        };
        assert!(matches!(
            ProviderIndex::parse_with_limits(base.as_bytes(), &small),
            Err(IndexError::TooLarge { limit: 100 })
        ));
        let few = LdifLimits {
            max_entries: 2,
            ..LdifLimits::default()
        };
        let three = format!("dn: a=1\n\ndn: a=2\n\ndn: a=3\n");
        assert!(matches!(
            ProviderIndex::parse_with_limits(three.as_bytes(), &few),
            Err(IndexError::TooManyEntries { limit: 2, .. })
        ));
        let tiny = LdifLimits {
            max_value_bytes: 64,
            ..LdifLimits::default()
        };
        let errs = ProviderIndex::parse_with_limits(base.as_bytes(), &tiny).unwrap_err();
        assert!(
            errs.to_string()
                .contains("line 6: a value is larger than 64 bytes"),
            "{errs}"
        );
        // Errors are capped.
        let many = "x\n\n".repeat(1000);
        let errs = ProviderIndex::parse(many.as_bytes()).unwrap_err();
        assert_eq!(errs.errors().len(), MAX_REPORTED_ERRORS + 1);
        assert!(matches!(
            errs.errors().last(),
            Some(IndexError::TooManyErrors { .. })
        ));
    }

    #[test]
    fn garbage_never_panics() {
        let c = cert("Example");
        let base = entry(&c).into_bytes();
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let alphabet = b" :<\n\r#;=-.aZ09+/\xff\xc3";
        for round in 0..3000 {
            let mut input = base.clone();
            for _ in 0..(next() % 8 + 1) {
                let at = (next() as usize) % (input.len() + 1);
                match next() % 3 {
                    0 if at < input.len() => {
                        input.remove(at);
                    }
                    1 => input.insert(at, alphabet[(next() as usize) % alphabet.len()]),
                    _ if at < input.len() => input[at] = next() as u8,
                    _ => {}
                }
            }
            if round % 10 == 0 {
                input = (0..(next() % 300))
                    .map(|_| alphabet[(next() as usize) % alphabet.len()])
                    .collect();
            }
            let _ = ProviderIndex::parse(&input);
            let _ = parse_ldif(&input, &LdifLimits::default());
        }
    }

    #[test]
    fn lookups() {
        let a = cert("A");
        let b = cert("B");
        let mut rb = record("Beta PEC", &["pec.beta.test", "cert.customer.test"], &b);
        rb.unit = Some("secondary".into());
        rb.dn = "providerUnit=secondary,providerName=Beta PEC,o=postacert".into();
        let rb_main = record("Beta PEC", &["pec.beta.test"], &cert("B2"));
        let index = ProviderIndex::new(vec![
            record("Alfa PEC", &["pec.alfa.test"], &a),
            rb,
            rb_main,
        ])
        .unwrap();
        let d = |s: &str| Domain::parse(s).unwrap();

        assert_eq!(index.by_certificate(&a).unwrap().name, "Alfa PEC");
        assert_eq!(
            index.by_certificate(&b).unwrap().unit.as_deref(),
            Some("secondary")
        );
        assert!(index.by_certificate(&cert("Stranger")).is_none());
        assert_eq!(
            index.by_domain(&d("PEC.Alfa.TEST")).unwrap().name,
            "Alfa PEC"
        );
        // The main record wins over the secondary environment listing the same domain.
        assert!(index.by_domain(&d("pec.beta.test")).unwrap().unit.is_none());
        assert!(
            index
                .by_domain(&d("cert.customer.test"))
                .unwrap()
                .unit
                .is_some()
        );
        assert!(index.is_pec_domain(&d("Cert.Customer.Test")));
        assert!(!index.is_pec_domain(&d("gmail.com")));
        let alfa = index.by_domain(&d("pec.alfa.test")).unwrap();
        assert!(alfa.manages(&d("PEC.ALFA.TEST")));
        assert!(!alfa.manages(&d("pec.beta.test")));
        assert!(alfa.holds_certificate(&a) && !alfa.holds_certificate(&b));
    }

    #[test]
    fn by_certificate_compares_the_whole_certificate() {
        // A record whose hash says "a" but whose certificate is "b" can only be built in
        // code (the parser refuses it); the full comparison must still refuse a match.
        let a = cert("A");
        let b = cert("B");
        let mut r = record("Alfa PEC", &["pec.alfa.test"], &b);
        r.certificate_hashes = vec![sha1(&a).to_lowercase().to_uppercase()];
        let index = ProviderIndex::new(vec![r]).unwrap();
        assert!(index.by_certificate(&a).is_none());
        assert!(index.by_certificate(&b).is_none());
    }

    #[test]
    fn round_trip() {
        let a = cert("A");
        let a2 = cert("A, rollover");
        let mut ra = record(
            "Società PEC, S.p.A.",
            &["pec.alfa.test", "cert.alfa.test"],
            &a,
        );
        ra.certificates.push(a2.clone());
        ra.certificate_hashes.push(sha1(&a2));
        ra.ldif_url = Some("https://pec.alfa.test/index.ldif.p7m".into());
        ra.description = Some(" leading space and\nnewline".into());
        let mut rb = record("#Beta PEC ", &["pec.beta.test"], &cert("B"));
        rb.unit = Some("Ambiente 2".into());
        let index = ProviderIndex::new(vec![ra, rb]).unwrap();
        let text = index.to_ldif().unwrap();
        assert!(text.lines().all(|l| l.len() <= FOLD_COLUMN), "{text}");
        assert!(
            text.contains("\nproviderCertificate;binary:: MII"),
            "{text}"
        );
        assert!(text.contains("dn:: "), "non-ASCII dn is base64: {text}");
        assert!(text.contains("providerName:: "), "{text}");
        let back = ProviderIndex::parse(text.as_bytes()).unwrap();
        assert_eq!(back.records(), index.records());
        assert_eq!(back.to_ldif().unwrap(), text);
        assert_eq!(
            back.records()[1].dn,
            "providerName=\\#Beta PEC\\ ,o=postacert"
        );
        assert_eq!(
            back.records()[0].dn,
            "providerName=Società PEC\\, S.p.A.,o=postacert"
        );
    }

    #[test]
    fn own_entry_from_config() {
        let domain = Domain::parse("pec.alfa.test").unwrap();
        let toml = crate::pki::dev_config_toml(&domain, "Alfa PEC");
        let base = Path::new("/srv/alfa");
        let config = Config::from_toml_str(&toml, base, &base.join("pecd.toml")).unwrap();
        let c = cert("Alfa");
        let own = ProviderRecord::for_this_provider(&config, &c).unwrap();
        assert_eq!(own.dn, "providerName=Alfa PEC,o=postacert");
        assert_eq!(own.name, "Alfa PEC");
        assert_eq!(own.mail_receipt, config.provider.receipt_mailbox);
        assert_eq!(own.managed_domains, vec![domain.clone()]);
        assert_eq!(own.certificate_hashes, vec![sha1(&c)]);
        let text = own.to_ldif().unwrap();
        assert!(
            text.starts_with(
                "dn: providerName=Alfa PEC,o=postacert\nobjectclass: top\nobjectclass: provider\n"
            ),
            "{text}"
        );
        let back = ProviderIndex::parse(text.as_bytes()).unwrap();
        assert_eq!(back.records(), &[own.clone()]);
        assert_eq!(
            ProviderIndex::default_path(&config),
            base.join("data").join(INDEX_FILE_NAME)
        );

        // with_own replaces an imported copy of our own entry.
        let imported = ProviderIndex::new(vec![
            own.clone(),
            record("Beta PEC", &["pec.beta.test"], &cert("B")),
        ])
        .unwrap();
        let merged = imported.with_own(own).unwrap();
        assert_eq!(merged.len(), 2);
        assert_eq!(merged.by_certificate(&c).unwrap().name, "Alfa PEC");
    }

    #[test]
    fn save_atomic_and_load() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("sub").join(INDEX_FILE_NAME);
        assert!(ProviderIndex::load_or_empty(&path).unwrap().is_empty());
        assert!(matches!(
            ProviderIndex::load(&path),
            Err(IndexError::Io { .. })
        ));
        let index =
            ProviderIndex::new(vec![record("Alfa PEC", &["pec.alfa.test"], &cert("A"))]).unwrap();
        index.save_atomic(&path).unwrap();
        assert_eq!(ProviderIndex::load(&path).unwrap(), index);
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from(INDEX_FILE_NAME)],
            "no temp file left"
        );
    }
}
