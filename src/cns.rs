//! Smart-card login (CNS, *Carta Nazionale dei Servizi*): what a card's authentication
//! certificate says (its SHA-256, issuer, serial, subject, *codice fiscale* and
//! validity), and whether it may log in now — issued by a CA of `[cns] ca`, valid at
//! this moment, for client authentication, not revoked by a CRL of `[cns] crl_dir`
//! (when that is set, a card whose issuer has no CRL there is refused).
//!
//! Which mailbox a card may open is the store's part ([`crate::store::cns`]); the TLS
//! layer only proves that the client holds the card's key ([`crate::tls`]), so that every
//! refusal is decided here, with a reason that goes to the log and the trace.
//!
//! Untrusted input: every certificate a client presents or an owner uploads (any DER,
//! any subject), and PEM files given on the command line.

use std::sync::Arc;

use jiff::Timestamp;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::stack::Stack;
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::verify::{X509VerifyFlags, X509VerifyParam};
use openssl::x509::{X509, X509NameRef, X509StoreContext};
use serde::{Deserialize, Serialize};

use crate::pec::crl::{CRL_RECHECK, CrlStore};

/// What pecd keeps of a card certificate associated with a mailbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardCert {
    /// SHA-256 of the DER certificate, lower-case hex: the key it is found by.
    pub sha256: String,
    pub issuer: String,
    /// The serial number, upper-case hex.
    pub serial: String,
    pub subject: String,
    /// The owner's *codice fiscale*, from the subject.
    pub codice_fiscale: String,
    pub not_before: Timestamp,
    pub not_after: Timestamp,
}

/// Why a card certificate cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CardError {
    #[error("not a certificate: {0}")]
    Malformed(String),
    #[error(
        "the subject carries no codice fiscale (neither CN=\"<codice fiscale>/<card>\" nor \
         serialNumber=\"TINIT-<codice fiscale>\")"
    )]
    NoCodiceFiscale,
    #[error("not issued by a trusted CNS certification authority ({0})")]
    UnknownCa(String),
    #[error("expired on {0}")]
    Expired(Timestamp),
    #[error("not valid before {0}")]
    NotYetValid(Timestamp),
    #[error("revoked on {revoked_at} (CRL of {issuer})")]
    Revoked { revoked_at: String, issuer: String },
    #[error("not a certificate for client authentication ({0})")]
    WrongUse(String),
    #[error("no CRL of its issuer ({0}) in [cns] crl_dir: revocation cannot be checked")]
    NoCrl(String),
    #[error(
        "the CRL of its issuer ({issuer}) in [cns] crl_dir is out of date (next update was due {next_update}): revocation cannot be checked"
    )]
    StaleCrl { issuer: String, next_update: String },
}

impl CardError {
    /// The reason in Italian, for the webmail and the API's `motivo`.
    pub fn italian(&self) -> String {
        match self {
            Self::Malformed(_) => "Il file non contiene un certificato leggibile".into(),
            Self::NoCodiceFiscale => {
                "Il certificato non riporta un codice fiscale valido: non è una carta CNS".into()
            }
            Self::UnknownCa(_) => {
                "Il certificato non è emesso da un'autorità CNS riconosciuta da questo gestore"
                    .into()
            }
            Self::Expired(t) => format!("Il certificato è scaduto il {}", t.strftime("%d/%m/%Y")),
            Self::NotYetValid(t) => {
                format!(
                    "Il certificato è valido solo dal {}",
                    t.strftime("%d/%m/%Y")
                )
            }
            Self::Revoked { .. } => "Il certificato è stato revocato".into(),
            Self::WrongUse(_) => "Il certificato non è destinato all'autenticazione".into(),
            Self::NoCrl(_) => {
                "Non è disponibile la lista di revoca dell'emittente: la carta non può essere \
                 verificata"
                    .into()
            }
            Self::StaleCrl { .. } => {
                "La lista di revoca dell'emittente non è aggiornata: la carta non può essere \
                 verificata"
                    .into()
            }
        }
    }
}

impl AssociationError {
    pub fn italian(&self) -> String {
        match self {
            Self::CnsOff => "L'accesso con smart card non è attivo presso questo gestore".into(),
            Self::Card(e) => e.italian(),
        }
    }
}

fn name_text(n: &X509NameRef) -> String {
    n.entries()
        .map(|e| {
            let k = e.object().nid().short_name().unwrap_or("?");
            let v = e.data().to_string().unwrap_or_else(|_| "?".into());
            format!("{k}={v}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn timestamp(t: &openssl::asn1::Asn1TimeRef) -> Result<Timestamp, CardError> {
    let epoch =
        openssl::asn1::Asn1Time::from_unix(0).map_err(|e| CardError::Malformed(e.to_string()))?;
    let d = epoch
        .diff(t)
        .map_err(|e| CardError::Malformed(e.to_string()))?;
    Timestamp::from_second(i64::from(d.days) * 86_400 + i64::from(d.secs))
        .map_err(|e| CardError::Malformed(e.to_string()))
}

/// The *codice fiscale* a CNS subject carries: the start of the CN (`CF/card.hash`, the
/// CNS profile), or `serialNumber=TINIT-CF` (newer CNS-like certificates). Only a
/// well-formed one (check character included) counts.
pub fn codice_fiscale(subject: &X509NameRef) -> Option<String> {
    let text = |nid| {
        subject
            .entries_by_nid(nid)
            .filter_map(|e| e.data().to_string().ok())
            .collect::<Vec<_>>()
    };
    for sn in text(Nid::SERIALNUMBER) {
        if let Some(cf) = sn.strip_prefix("TINIT-")
            && is_codice_fiscale(cf)
        {
            return Some(cf.to_ascii_uppercase());
        }
    }
    for cn in text(Nid::COMMONNAME) {
        let first = cn.split('/').next().unwrap_or_default();
        if cn.contains('/') && is_codice_fiscale(first) {
            return Some(first.to_ascii_uppercase());
        }
    }
    None
}

/// A personal *codice fiscale*: 16 characters in the pattern of DM 23/12/1976 (with the
/// *omocodia* letters allowed in place of digits) and a correct check character.
pub fn is_codice_fiscale(s: &str) -> bool {
    const OMOCODIA: &[u8] = b"LMNPQRSTUV";
    let b = s.as_bytes();
    if b.len() != 16 {
        return false;
    }
    let up: Vec<u8> = b.iter().map(u8::to_ascii_uppercase).collect();
    let letter = |i: usize| up[i].is_ascii_uppercase();
    let digitish = |i: usize| up[i].is_ascii_digit() || OMOCODIA.contains(&up[i]);
    let shape = (0..6).all(letter)
        && digitish(6)
        && digitish(7)
        && letter(8)
        && digitish(9)
        && digitish(10)
        && letter(11)
        && (12..15).all(digitish)
        && letter(15);
    if !shape {
        return false;
    }
    // Odd positions (1st, 3rd, …) and even ones have their own value tables.
    const ODD: [u32; 26] = [
        1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 2, 4, 18, 20, 11, 3, 6, 8, 12, 14, 16, 10, 22, 25, 24,
        23,
    ];
    let mut sum = 0u32;
    for (i, c) in up[..15].iter().enumerate() {
        let idx = if c.is_ascii_digit() {
            u32::from(c - b'0')
        } else {
            u32::from(c - b'A')
        } as usize;
        sum += if i % 2 == 0 { ODD[idx] } else { idx as u32 };
    }
    up[15] == b'A' + (sum % 26) as u8
}

impl CardCert {
    /// What a certificate says, without judging it (no trust, no time).
    pub fn from_x509(x: &X509) -> Result<Self, CardError> {
        let der = x
            .to_der()
            .map_err(|e| CardError::Malformed(e.to_string()))?;
        let sha256 = hex::encode(
            openssl::hash::hash(MessageDigest::sha256(), &der)
                .map_err(|e| CardError::Malformed(e.to_string()))?,
        );
        let serial = x
            .serial_number()
            .to_bn()
            .and_then(|b| b.to_hex_str().map(|s| s.to_string()))
            .map_err(|e| CardError::Malformed(e.to_string()))?;
        Ok(Self {
            sha256,
            issuer: name_text(x.issuer_name()),
            serial,
            subject: name_text(x.subject_name()),
            codice_fiscale: codice_fiscale(x.subject_name()).ok_or(CardError::NoCodiceFiscale)?,
            not_before: timestamp(x.not_before())?,
            not_after: timestamp(x.not_after())?,
        })
    }

    /// The first certificate of a PEM text.
    pub fn from_pem(pem: &[u8]) -> Result<(Self, X509), CardError> {
        let x = X509::from_pem(pem).map_err(|_| {
            CardError::Malformed("no PEM certificate (-----BEGIN CERTIFICATE-----) found".into())
        })?;
        Ok((Self::from_x509(&x)?, x))
    }
}

/// The CNS CAs and their CRLs: whether a card may log in now.
pub struct CnsTrust {
    cas: Vec<X509>,
    crls: Option<Arc<CrlStore>>,
}

impl std::fmt::Debug for CnsTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CnsTrust({} CAs)", self.cas.len())
    }
}

impl CnsTrust {
    pub fn new(
        cas: Vec<X509>,
        crls: Option<Arc<CrlStore>>,
    ) -> Result<Self, openssl::error::ErrorStack> {
        // Fails early on a CA openssl would not take.
        Self::store(&cas, Timestamp::now())?;
        Ok(Self { cas, crls })
    }

    /// The CAs as an openssl store checking at `now`, for client authentication. Built per
    /// check (a handful of certificates): the time is a parameter of the store.
    fn store(cas: &[X509], now: Timestamp) -> Result<X509Store, openssl::error::ErrorStack> {
        let mut b = X509StoreBuilder::new()?;
        for c in cas {
            b.add_cert(c.clone())?;
        }
        let mut p = X509VerifyParam::new()?;
        p.set_time(now.as_second());
        p.set_flags(X509VerifyFlags::X509_STRICT)?;
        p.set_purpose(openssl::x509::X509PurposeId::SSL_CLIENT)?;
        b.set_param(&p)?;
        Ok(b.build())
    }

    /// The subjects of the CAs, DER: what the TLS server names when it asks for a
    /// certificate (so the client offers a card of these issuers).
    pub fn ca_subjects(&self) -> Vec<Vec<u8>> {
        self.cas
            .iter()
            .filter_map(|c| c.subject_name().to_der().ok())
            .collect()
    }

    /// Whether the card certificate `leaf` (with the intermediates the client sent) may
    /// log in at `now`: its chain ends at a CNS CA, it is valid now and meant for client
    /// authentication, no CRL revokes it, and its subject carries a codice fiscale.
    pub fn check(
        &self,
        leaf: &X509,
        intermediates: &[X509],
        now: Timestamp,
    ) -> Result<CardCert, CardError> {
        let card = CardCert::from_x509(leaf)?;
        if now < card.not_before {
            return Err(CardError::NotYetValid(card.not_before));
        }
        if now > card.not_after {
            return Err(CardError::Expired(card.not_after));
        }
        let mut chain = Stack::new().map_err(|e| CardError::Malformed(e.to_string()))?;
        for i in intermediates {
            chain
                .push(i.clone())
                .map_err(|e| CardError::Malformed(e.to_string()))?;
        }
        let store = Self::store(&self.cas, now).map_err(|e| CardError::Malformed(e.to_string()))?;
        let mut ctx = X509StoreContext::new().map_err(|e| CardError::Malformed(e.to_string()))?;
        let verdict = ctx
            .init(&store, leaf, &chain, |c| {
                let ok = c.verify_cert()?;
                Ok(if ok { Ok(()) } else { Err(c.error()) })
            })
            .map_err(|e| CardError::Malformed(e.to_string()))?;
        if let Err(e) = verdict {
            // X509_V_ERR_INVALID_PURPOSE (26): a certificate not for client authentication.
            return Err(if e.as_raw() == 26 {
                CardError::WrongUse(e.error_string().to_string())
            } else {
                CardError::UnknownCa(e.error_string().to_string())
            });
        }
        // With CRLs configured, a card whose issuer has none is refused (fail closed).
        if let Some(crls) = &self.crls {
            let set = crls.current(CRL_RECHECK);
            if !set.covers(leaf) {
                return Err(CardError::NoCrl(card.issuer));
            }
            // An out-of-date list cannot vouch for the card either (fail closed).
            if let Some(next_update) = set.stale(leaf, now) {
                return Err(CardError::StaleCrl {
                    issuer: card.issuer,
                    next_update,
                });
            }
            if let Some(r) = set.check(leaf) {
                return Err(CardError::Revoked {
                    revoked_at: r.revoked_at,
                    issuer: r.issuer,
                });
            }
        }
        Ok(card)
    }
}

/// The SHA-256 (hex) of the first certificate of a TLS client chain.
pub fn chain_sha256(chain: &[X509]) -> Option<String> {
    chain
        .first()
        .and_then(|c| c.digest(MessageDigest::sha256()).ok())
        .map(hex::encode)
}

/// What a card login counts under in the login lockout: the mailbox asked for, else the
/// card itself.
pub fn lockout_key(chain: &[X509], authzid: Option<&str>) -> String {
    match (authzid, chain_sha256(chain)) {
        (Some(a), _) => a.to_string(),
        (None, Some(s)) => format!("card:{s}"),
        (None, None) => "card:none".into(),
    }
}

/// Why a card cannot be associated with a mailbox.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssociationError {
    #[error("smart-card login is off: no [cns] ca is configured")]
    CnsOff,
    #[error(transparent)]
    Card(#[from] CardError),
}

/// A card certificate (PEM) an administrator or owner wants to associate: it must be one
/// that could log in now (trusted CNS CA, valid, not revoked, with a codice fiscale).
pub fn for_association(
    trust: Option<&CnsTrust>,
    pem: &[u8],
    now: Timestamp,
) -> Result<CardCert, AssociationError> {
    let trust = trust.ok_or(AssociationError::CnsOff)?;
    let (_, x) = CardCert::from_pem(pem)?;
    // Intermediates may follow the card in the file.
    let rest: Vec<X509> = X509::stack_from_pem(pem)
        .map(|v| v.into_iter().skip(1).collect())
        .unwrap_or_default();
    Ok(trust.check(&x, &rest, now)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codici_fiscali_are_checked_to_the_check_character() {
        assert!(is_codice_fiscale("RSSMRA80A01H501U"));
        assert!(
            is_codice_fiscale("rssmra80a01h501u"),
            "case does not matter"
        );
        assert!(is_codice_fiscale("BNCLRA85T41F205Y"));
        // Omocodia: a digit replaced by its letter, with the check character recomputed.
        assert!(is_codice_fiscale("RSSMRA80A01H50MM"));
        assert!(
            !is_codice_fiscale("RSSMRA80A01H501A"),
            "wrong check character"
        );
        assert!(!is_codice_fiscale("RSSMRA80A01H501"), "too short");
        assert!(!is_codice_fiscale("12345678901"), "a company's partita IVA");
        assert!(
            !is_codice_fiscale("RSSMRA80A01H5O1U"),
            "letter O is no omocodia digit"
        );
        assert!(!is_codice_fiscale("RSSMRA80A01H501Ü"));
    }
}
