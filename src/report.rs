//! The offline report of `pecd verify` on any PEC message, ours or a real provider's:
//! its kind, the daticert fields, the S/MIME verdict (valid over untouched content, who
//! signed, whether the signer chains to the given CA), and whether the daticert agrees with
//! the headers and with the `postacert.eml` inside.
//!
//! Pure: the caller reads the file and the CA bundle. Owns the JSON shape that scripts
//! rely on (`kind`, `x_trasporto`, `x_ricevuta`, `signature{valid, signer_subject,
//! signer_sha1, chain_ok}`, `daticert`), and the verdict: a message is *good* when it is
//! a PEC message, validly signed, with a parseable daticert (except the anomaly envelope,
//! which has none), a signer chaining to the CA when one is given, a signer certificate
//! valid at the signed time, and no failed check. Whether the signer was *checked* at all
//! (a CA or an index given) is its own answer (`signer_checked`, `trusted`): an intact
//! signature by an unchecked key proves nothing about who signed.

use serde::Serialize;

use crate::pec::classify::{self, Classified, ClassifyError, Kind};
use crate::pec::crl::CrlSet;
use crate::pec::daticert::Daticert;
use crate::pec::ids;
use crate::pec::index::ProviderIndex;
use crate::pec::mime;
use crate::pec::smime::{self, SignatureCheck, TrustAnchors};

/// The signature part of the report.
#[derive(Debug, Clone, Serialize)]
pub struct SignatureReport {
    pub present: bool,
    pub valid: bool,
    pub reason: Option<String>,
    pub signer_subject: Option<String>,
    pub signer_issuer: Option<String>,
    pub signer_email: Option<String>,
    pub signer_sha1: Option<String>,
    pub signer_sha256: Option<String>,
    pub chain_ok: Option<bool>,
    pub chain_error: Option<String>,
    /// Whether the signer certificate is in the provider index (`None`: no index given).
    pub in_index: Option<bool>,
    /// The provider the index names for that certificate.
    pub provider: Option<String>,
    /// Whether a given CRL lists the signer certificate as revoked (`None`: no CRL given,
    /// or no signer certificate); rules §6.2 "check CRL".
    pub revoked: Option<bool>,
    /// Why it is revoked: the date and the CRL (Italian, as in the trace).
    pub revocation: Option<String>,
    /// When the signer says it signed (RFC 3339): the daticert `data`, which is inside the
    /// signed content; `None` without a daticert.
    pub signed_at: Option<String>,
    /// Whether the signer certificate was within its validity period at `signed_at`
    /// (`None`: no time or no certificate).
    pub valid_at_signing: Option<bool>,
    /// Whether it is within its validity period now (`None`: no certificate).
    pub valid_now: Option<bool>,
}

impl SignatureReport {
    fn from_check(present: bool, c: &SignatureCheck) -> Self {
        let s = c.signer.as_ref();
        Self {
            present,
            valid: c.valid,
            reason: c.reason.clone(),
            signer_subject: s.map(|s| s.subject.clone()),
            signer_issuer: s.map(|s| s.issuer.clone()),
            signer_email: s.and_then(|s| s.email.clone()),
            signer_sha1: s.map(|s| s.sha1.clone()),
            signer_sha256: s.map(|s| s.sha256.clone()),
            chain_ok: c.chain_ok,
            chain_error: c.chain_error.clone(),
            in_index: None,
            provider: None,
            revoked: None,
            revocation: None,
            signed_at: None,
            valid_at_signing: None,
            valid_now: None,
        }
    }
}

/// The daticert fields as reported.
#[derive(Debug, Clone, Serialize)]
pub struct DaticertReport {
    pub tipo: String,
    pub errore: String,
    pub mittente: String,
    pub destinatari: Vec<crate::pec::daticert::Destinatario>,
    pub risposte: String,
    pub oggetto: Option<String>,
    pub gestore_emittente: String,
    pub giorno: String,
    pub ora: String,
    pub zona: String,
    pub identificativo: String,
    pub msgid: Option<String>,
    pub ricevuta: Option<String>,
    pub consegna: Option<String>,
    pub ricezione: Vec<String>,
    pub errore_esteso: Option<String>,
}

impl From<&Daticert> for DaticertReport {
    fn from(d: &Daticert) -> Self {
        Self {
            tipo: d.tipo.as_str().into(),
            errore: d.errore.as_str().into(),
            mittente: d.mittente.clone(),
            destinatari: d.destinatari.clone(),
            risposte: d.risposte.clone(),
            oggetto: d.oggetto.clone(),
            gestore_emittente: d.gestore_emittente.clone(),
            giorno: d.data.giorno(),
            ora: d.data.ora(),
            zona: d.data.zona(),
            identificativo: d.identificativo.clone(),
            msgid: d.msgid.clone(),
            ricevuta: d.ricevuta.map(|r| r.as_str().into()),
            consegna: d.consegna.clone(),
            ricezione: d.ricezione.clone(),
            errore_esteso: d.errore_esteso.clone(),
        }
    }
}

/// One consistency check between the daticert, the headers and the original inside.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub kind: String,
    pub x_trasporto: Option<String>,
    pub x_ricevuta: Option<String>,
    pub x_tipo_ricevuta: Option<String>,
    pub x_riferimento_message_id: Option<String>,
    pub subject: Option<String>,
    pub from: Option<String>,
    pub signature: SignatureReport,
    pub daticert: Option<DaticertReport>,
    pub daticert_error: Option<String>,
    pub has_postacert: bool,
    pub checks: Vec<Check>,
    pub problems: Vec<String>,
    /// True when the message is a well-formed, validly signed PEC message whose signer
    /// certificate was valid when it signed, and no given CA, index or CRL objects.
    pub ok: bool,
    /// Whether the signer was checked against something the user trusts (a CA bundle or a
    /// provider index). Without one, `ok` only says the content is as some key signed it.
    pub signer_checked: bool,
    /// `ok`, and the signer was checked and passed: certified by a signer the user trusts.
    pub trusted: bool,
    /// Why `ok` is false.
    pub reasons: Vec<String>,
}

/// Builds the report. Fails only when the input is not a mail at all.
pub fn verify(raw: &[u8], trust: Option<&TrustAnchors>) -> Result<Report, ClassifyError> {
    verify_with_index(raw, trust, None)
}

/// As [`verify`], also looking the signer up in a provider index (rule §8.3); a signer
/// missing from a given index makes the verdict not OK.
pub fn verify_with_index(
    raw: &[u8],
    trust: Option<&TrustAnchors>,
    index: Option<&ProviderIndex>,
) -> Result<Report, ClassifyError> {
    verify_with_crls(raw, trust, index, None)
}

/// As [`verify_with_index`], also looking the signer certificate up in the given CRLs
/// (`pecd verify --crl`); a revoked signer makes the verdict not OK. "Now" is the system
/// clock.
pub fn verify_with_crls(
    raw: &[u8],
    trust: Option<&TrustAnchors>,
    index: Option<&ProviderIndex>,
    crls: Option<&CrlSet>,
) -> Result<Report, ClassifyError> {
    verify_at(raw, trust, index, crls, jiff::Timestamp::now())
}

/// The report as of `now` (the signer certificate's validity is judged at the signed time
/// and at `now`).
pub fn verify_at(
    raw: &[u8],
    trust: Option<&TrustAnchors>,
    index: Option<&ProviderIndex>,
    crls: Option<&CrlSet>,
    now: jiff::Timestamp,
) -> Result<Report, ClassifyError> {
    let c = classify::classify(raw)?;
    let check = if c.signed {
        smime::verify_message(raw, trust)
    } else {
        SignatureCheck::invalid("the message is not signed (not multipart/signed)")
    };
    let mut signature = SignatureReport::from_check(c.signed, &check);
    if let Some(idx) = index {
        let record = check
            .signer_cert
            .as_ref()
            .and_then(|cert| idx.by_certificate(cert).cloned());
        signature.in_index = Some(record.is_some());
        signature.provider = record.map(|r| r.name);
    }
    let signer_cert = check.signer_cert.clone();
    if let (Some(crls), Some(cert)) = (crls, &signer_cert) {
        let revocation = crls.check(cert);
        signature.revoked = Some(revocation.is_some());
        signature.revocation = revocation.map(|r| r.describe());
    }
    let (daticert, daticert_error) = match &c.daticert {
        Some(Ok(d)) => (Some(d), None),
        Some(Err(e)) => (None, Some(e.to_string())),
        None => (None, None),
    };
    let signed_at = daticert.and_then(|d| d.data.timestamp());
    if let Some(cert) = &signer_cert {
        signature.signed_at = signed_at.map(|t| t.to_string());
        signature.valid_at_signing = signed_at.map(|t| smime::cert_valid_at(cert, t));
        signature.valid_now = Some(smime::cert_valid_at(cert, now));
    }
    let checks = consistency(
        raw,
        &c,
        daticert,
        check.signer.as_ref().and_then(|s| s.email.as_deref()),
    );

    // A CA or an index says who may sign; a CRL alone only says who may not.
    let signer_checked = signature.chain_ok.is_some() || signature.in_index.is_some();
    let mut reasons = Vec::new();
    match &c.kind {
        Kind::PlainMail => {
            reasons.push("no PEC header (X-Trasporto / X-Ricevuta): not a PEC message".to_string())
        }
        Kind::UnknownPec(v) => reasons.push(format!(
            "PEC header with a value the rules do not define: {v:?}"
        )),
        _ => {}
    }
    if !signature.valid {
        reasons.push(format!(
            "signature not valid: {}",
            signature
                .reason
                .clone()
                .unwrap_or_else(|| "unknown reason".into())
        ));
    }
    if signature.chain_ok == Some(false) {
        reasons.push(format!(
            "signer does not chain to the given CA: {}",
            signature.chain_error.clone().unwrap_or_default()
        ));
    }
    match (signature.valid_at_signing, signature.valid_now) {
        (Some(false), _) => reasons.push(format!(
            "the signer certificate was not valid when the message says it was signed ({}; \
             certificate valid from {} to {})",
            signature.signed_at.clone().unwrap_or_default(),
            signer_cert
                .as_ref()
                .map(|c| c.not_before().to_string())
                .unwrap_or_default(),
            signer_cert
                .as_ref()
                .map(|c| c.not_after().to_string())
                .unwrap_or_default(),
        )),
        (None, Some(false)) => reasons.push(
            "the signer certificate is not valid now, and no signed time says it was when \
             it signed"
                .to_string(),
        ),
        _ => {}
    }
    if let Some(why) = &signature.revocation {
        reasons.push(format!("the signer certificate is revoked: {why}"));
    }
    if signature.in_index == Some(false) {
        reasons.push("the signer is not in the provider index".to_string());
    }
    if let Some(e) = &daticert_error {
        reasons.push(format!("daticert.xml unreadable: {e}"));
    } else if daticert.is_none() && c.kind.expected_tipo().is_some() {
        reasons.push("daticert.xml missing".to_string());
    }
    for ch in checks.iter().filter(|c| !c.ok) {
        reasons.push(format!("{}: {}", ch.name, ch.detail));
    }
    Ok(Report {
        kind: c.kind.name(),
        x_trasporto: c.headers.x_trasporto.clone(),
        x_ricevuta: c.headers.x_ricevuta.clone(),
        x_tipo_ricevuta: c.headers.x_tipo_ricevuta.clone(),
        x_riferimento_message_id: c.headers.x_riferimento_message_id.clone(),
        subject: c.headers.subject.clone(),
        from: c.headers.from.clone(),
        signature,
        daticert: daticert.map(DaticertReport::from),
        daticert_error,
        has_postacert: c.postacert.is_some(),
        checks,
        problems: c.problems.clone(),
        ok: reasons.is_empty(),
        signer_checked,
        trusted: reasons.is_empty() && signer_checked,
        reasons,
    })
}

fn same_id(a: &str, b: &str) -> bool {
    ids::bare(a).eq_ignore_ascii_case(ids::bare(b))
}

/// Whether the daticert agrees with the (unsigned) headers and with the original inside.
fn consistency(
    raw: &[u8],
    c: &Classified,
    d: Option<&Daticert>,
    signer_email: Option<&str>,
) -> Vec<Check> {
    let mut out = Vec::new();
    let mut add = |name, ok, detail: String| out.push(Check { name, ok, detail });
    if let (Some(d), Some(expected)) = (d, c.kind.expected_tipo()) {
        add(
            "tipo",
            d.tipo == expected,
            format!("daticert tipo {} for a {} message", d.tipo, c.kind.name()),
        );
    }
    if let Some(d) = d {
        if matches!(c.kind, Kind::TransportEnvelope)
            && let Some(mid) = &c.headers.message_id
        {
            add(
                "identificativo",
                same_id(mid, &d.identificativo),
                format!("Message-ID {mid} vs identificativo {}", d.identificativo),
            );
        }
        if let (Some(h), Some(m)) = (&c.headers.x_riferimento_message_id, &d.msgid) {
            add(
                "msgid",
                same_id(h, m),
                format!("X-Riferimento-Message-ID {h} vs msgid {m}"),
            );
        }
        if let Some(orig) = &c.postacert {
            let crlf = mime::to_crlf(orig);
            let (oh, _) = mime::split_header_body(&crlf);
            if let Some(omid) = mime::header_value(oh, "message-id") {
                add(
                    "postacert identificativo",
                    same_id(&omid, &d.identificativo),
                    format!(
                        "postacert.eml Message-ID {omid} vs identificativo {}",
                        d.identificativo
                    ),
                );
            }
            if let (Some(oref), Some(m)) =
                (mime::header_value(oh, "x-riferimento-message-id"), &d.msgid)
            {
                add(
                    "postacert msgid",
                    same_id(&oref, m),
                    format!("postacert.eml X-Riferimento-Message-ID {oref} vs msgid {m}"),
                );
            }
        }
    }
    if let (Kind::TransportEnvelope, Some(d), Some(orig)) = (&c.kind, d, &c.postacert) {
        // Issue #13 item 5: the unsigned outer Subject/From/To/Cc/Date/Reply-To must say
        // what the signed content says.
        let (outer, _) = mime::split_header_body(raw);
        let r = crate::pec::outer::check(outer, d, orig);
        add(
            "outer headers",
            r.is_ok(),
            r.err().unwrap_or_else(|| {
                "Subject, From, To, Cc, Date, Reply-To agree with the signed content".into()
            }),
        );
    }
    match c.kind {
        Kind::TransportEnvelope => add(
            "postacert",
            c.postacert.is_some(),
            if c.postacert.is_some() {
                "original present".into()
            } else {
                "transport envelope without postacert.eml".into()
            },
        ),
        Kind::AnomalyEnvelope => add(
            "anomaly content",
            c.postacert.is_some() && c.daticert.is_none(),
            "an anomaly envelope carries the received message and no daticert".into(),
        ),
        _ => {}
    }
    if let (Some(from), Some(email)) = (&c.headers.from, signer_email) {
        // Rule §2 item 2: From must be the certificate's address. Informational: the
        // headers are unsigned, so a mismatch is reported, and fails the verdict.
        add(
            "from matches signer",
            from.eq_ignore_ascii_case(email),
            format!("From {from} vs certificate address {email}"),
        );
    }
    out
}

/// The human-readable rendering of a report.
pub fn render_text(r: &Report) -> String {
    let mut s = String::new();
    let mut line = |k: &str, v: &str| s.push_str(&format!("{k:<22} {v}\n"));
    line("kind", &r.kind);
    line(
        "verdict",
        if r.trusted {
            "OK: well-formed PEC, signature intact, signer trusted"
        } else if r.ok {
            "SIGNATURE INTACT, SIGNER NOT CHECKED: the content is as the key in the \
             signature signed it, but nothing said whose key may sign (give --ca, --index \
             or --config)"
        } else {
            "NOT OK"
        },
    );
    for reason in &r.reasons {
        line("  reason", reason);
    }
    line("X-Trasporto", r.x_trasporto.as_deref().unwrap_or("-"));
    line("X-Ricevuta", r.x_ricevuta.as_deref().unwrap_or("-"));
    line("Subject", r.subject.as_deref().unwrap_or("-"));
    line("From", r.from.as_deref().unwrap_or("-"));
    let sig = &r.signature;
    line(
        "signature",
        if sig.valid {
            "valid (content untouched)"
        } else {
            "INVALID"
        },
    );
    if let Some(reason) = &sig.reason {
        line("  why", reason);
    }
    line("  signer", sig.signer_subject.as_deref().unwrap_or("-"));
    line("  issuer", sig.signer_issuer.as_deref().unwrap_or("-"));
    line("  SHA-1", sig.signer_sha1.as_deref().unwrap_or("-"));
    line("  SHA-256", sig.signer_sha256.as_deref().unwrap_or("-"));
    match (sig.in_index, &sig.provider) {
        (Some(true), Some(p)) => line("  index", &format!("listed: {p}")),
        (Some(_), _) => line("  index", "NOT in the provider index"),
        (None, _) => {}
    }
    match (sig.revoked, &sig.revocation) {
        (Some(true), Some(why)) => line("  CRL", &format!("REVOKED: {why}")),
        (Some(_), _) => line("  CRL", "not listed as revoked"),
        (None, _) => {}
    }
    match (&sig.signed_at, sig.valid_at_signing) {
        (Some(at), Some(ok)) => line(
            "  valid when signed",
            &format!(
                "{} (at {at}, the daticert time)",
                if ok { "yes" } else { "NO" }
            ),
        ),
        _ => line("  valid when signed", "unknown (no signed time)"),
    }
    if let Some(ok) = sig.valid_now {
        line(
            "  valid now",
            if ok {
                "yes"
            } else {
                "no (expired or not yet valid; what counts is the signing time)"
            },
        );
    }
    line(
        "  chain",
        match sig.chain_ok {
            None => "not checked (no --ca)",
            Some(true) => "chains to the given CA",
            Some(false) => "does NOT chain to the given CA",
        },
    );
    match (&r.daticert, &r.daticert_error) {
        (Some(d), _) => {
            line("daticert", &format!("tipo={} errore={}", d.tipo, d.errore));
            line("  mittente", &d.mittente);
            for dest in &d.destinatari {
                line(
                    "  destinatario",
                    &format!("{} ({})", dest.address, dest.tipo),
                );
            }
            line("  oggetto", d.oggetto.as_deref().unwrap_or("-"));
            line("  gestore", &d.gestore_emittente);
            line("  data", &format!("{} {} ({})", d.giorno, d.ora, d.zona));
            line("  identificativo", &d.identificativo);
            line("  msgid", d.msgid.as_deref().unwrap_or("-"));
            if let Some(x) = &d.ricevuta {
                line("  ricevuta", x);
            }
            if let Some(x) = &d.consegna {
                line("  consegna", x);
            }
            for x in &d.ricezione {
                line("  ricezione", x);
            }
            if let Some(x) = &d.errore_esteso {
                line("  errore-esteso", x);
            }
        }
        (None, Some(e)) => line("daticert", &format!("unreadable: {e}")),
        (None, None) => line("daticert", "none"),
    }
    line(
        "postacert.eml",
        if r.has_postacert { "present" } else { "absent" },
    );
    for c in &r.checks {
        line(
            if c.ok { "check ok" } else { "check FAILED" },
            &format!("{}: {}", c.name, c.detail),
        );
    }
    for p in &r.problems {
        line("problem", p);
    }
    s
}
