//! One entry of the `provider` object class (rules digest §8.1): built from an LDIF entry
//! with every MUST attribute checked, built for this gateway from its configuration, and
//! written back in the RFC 6109 §4.5 shape.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use openssl::hash::MessageDigest;
use openssl::x509::X509;

use super::ldif::{LdifAttr, LdifEntry, push_attr, push_folded};
use super::{IndexError, Loc};
use crate::config::Config;
use crate::pec::address::{Domain, PecAddress};

/// The `provider` object class (digest §8.1).
const OC_PROVIDER: &str = "provider";
const OC_PROVIDER_OID: &str = "1.3.6.1.4.1.16572.2.1.2";

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
                Ok(s) => Some(s.to_string()),
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

/// RFC 4514 §2.4 escaping of an attribute value inside a DN.
pub fn escape_dn_value(v: &str) -> String {
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
