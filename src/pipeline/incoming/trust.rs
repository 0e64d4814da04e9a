//! Trust in the sender of an incoming message (rule §6.2, §8.3): the signature
//! verification verdict (signer looked up in the provider index, certificate validity at
//! the gateway clock's now, CRLs of `[trust] crl_dir`) and the checks that tie a signed
//! message to its signer (`From:` is the signer, the sender's domain is managed by it).
//!
//! Pure decisions only: nothing here writes to the store, traces or answers SMTP; what to
//! do with an untrusted message is the caller's ([`super::anomaly`]).

use std::sync::Arc;

use crate::gateway::Gateway;
use crate::pec::address::PecAddress;
use crate::pec::classify::{Classified, classify_shared};
use crate::pec::crl::{CRL_RECHECK, Revocation};
use crate::pec::daticert::Daticert;
use crate::pec::index::ProviderRecord;
use crate::pec::smime::{self, SignatureCheck};

/// What the verification found out about the sender of a message.
pub(super) struct Verdict {
    pub(super) check: SignatureCheck,
    pub(super) classified: Option<Classified>,
    pub(super) record: Option<ProviderRecord>,
    /// The signer certificate is within its validity period at the gateway clock's now.
    pub(super) cert_current: bool,
    /// A CRL of `[trust] crl_dir` lists the signer certificate as revoked (rule §6.2).
    pub(super) revoked: Option<Revocation>,
    /// The SHA-256 (hex) of the message as received, for the trace.
    pub(super) digest: String,
}

impl Verdict {
    /// Signed validly, now, by a certificate the index lists and no CRL of `[trust]
    /// crl_dir` revokes (rule §6.2: existence, origin, validity, CRL). The index pins the
    /// exact certificate, so trust does not depend on `[trust] ca`: the chain verdict is
    /// recorded, not required (each dev PKI has its own CA; in production every provider
    /// certificate chains to AgID's CA anyway).
    pub(super) fn from_provider(&self) -> bool {
        self.check.valid && self.record.is_some() && self.cert_current && self.revoked.is_none()
    }

    /// Why the sender is not a trusted provider; each cause is told apart (rule §6.2:
    /// existence, origin, validity), so the trace says whether the index or the calendar
    /// was the problem.
    pub(super) fn untrusted_reason(&self) -> String {
        if !self.check.valid {
            return format!(
                "firma assente o non valida ({})",
                self.check.reason.clone().unwrap_or_default()
            );
        }
        match (&self.record, &self.check.signer) {
            (None, _) => "firma di un soggetto non presente nell'indice dei gestori PEC".into(),
            (Some(r), Some(s)) if !self.cert_current => format!(
                "certificato di firma del gestore {} scaduto o non ancora valido \
                 (valido dal {} al {})",
                r.name, s.not_before, s.not_after
            ),
            (Some(r), _) if let Some(rev) = &self.revoked => format!(
                "certificato di firma del gestore {} non valido: {}",
                r.name,
                rev.describe()
            ),
            (Some(r), _) => format!("firma del gestore {} non accettata", r.name),
        }
    }
}

/// Verifies and classifies `data`: the signature, the signer certificate looked up in the
/// provider index, its validity at `now`, and the CRLs; hashes it too. Blocking work (a
/// 50 MB message is not hashed on an async worker): the caller runs it on the blocking
/// pool.
pub(super) fn verdict(g: &Gateway, d: &Arc<Vec<u8>>, now: jiff::Timestamp) -> Verdict {
    let check = smime::verify_message(d, g.trust.as_deref());
    let cert = check.signer_cert.clone();
    let record = cert
        .as_ref()
        .and_then(|c| g.index().by_certificate(c).cloned());
    let cert_current = cert.as_ref().is_some_and(|c| smime::cert_valid_at(c, now));
    // Rule §6.2 "check CRL": the snapshot is rechecked against the files at most every
    // CRL_RECHECK (this runs on the blocking pool).
    let revoked = match (&g.crls, &cert) {
        (Some(crls), Some(c)) => crls.current(CRL_RECHECK).check(c),
        _ => None,
    };
    Verdict {
        check,
        classified: classify_shared(d).ok(),
        digest: crate::trace::sha256_hex(d),
        record,
        cert_current,
        revoked,
    }
}

/// Rule §6.2 (SHOULD) and §8.3: the sender's domain must be one the signing provider
/// manages. Checked on the daticert `mittente` (signed) rather than on `From:`, which is
/// unsigned and, in real envelopes, the provider's service host (§8.3 note).
pub(super) fn sender_managed_by(d: &Daticert, record: &ProviderRecord) -> Result<(), String> {
    match PecAddress::parse(&d.mittente) {
        Ok(a) if record.manages(a.domain()) => Ok(()),
        Ok(a) => Err(format!(
            "il mittente {} appartiene al dominio {} che il gestore {} non gestisce",
            d.mittente,
            a.domain(),
            record.name
        )),
        Err(_) => Err(format!(
            "mittente non valido nei dati di certificazione: {:?}",
            d.mittente
        )),
    }
}

/// Rule §2 item 2: the `From:` of a generated message is the address in the signing
/// certificate. `From:` is unsigned, but it is what the recipient's client shows, so a
/// provider's message whose `From:` names someone else is not correct PEC.
pub(super) fn from_is_signer(c: &Classified, check: &SignatureCheck) -> Result<(), String> {
    let email = check.signer.as_ref().and_then(|s| s.email.as_deref());
    match (c.headers.from.as_deref(), email) {
        (Some(from), Some(email)) if from.trim().eq_ignore_ascii_case(email.trim()) => Ok(()),
        (from, email) => Err(format!(
            "il From: ({}) non è l'indirizzo del certificato di firma ({})",
            from.unwrap_or("assente"),
            email.unwrap_or("assente")
        )),
    }
}
