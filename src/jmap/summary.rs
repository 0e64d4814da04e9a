//! What JMAP lists about a stored message without reading it again: its header fields,
//! preview, thread key and PEC facts (kind, identificativo, daticert, the signature
//! check). A summary depends only on the message's exact bytes, and blobs are
//! content-addressed, so a summary never goes stale: it is computed once per blob and kept
//! in the store's derived cache ([`crate::store::Store::cache_get`]). What *does* change
//! with time — whether the signer is still in the provider index, revocations — is judged
//! when the message is read ([`super::pec`]), never cached.
//!
//! Untrusted input: the whole message (parsed by mail-parser and the PEC classifier, both
//! panic-free on hostile input).

use mail_parser::{Address, MessageParser, MimeHeaders};
use serde::{Deserialize, Serialize};

use crate::pec::classify::{self, Kind};
use crate::pec::ids;
use crate::pec::smime;

/// Bump when the shape or the judgement changes: old cache entries are then recomputed.
/// (s2: a transport envelope whose outer headers differ from its signed content is not
/// certified.)
pub const VERSION: &str = "s2";
/// Characters of body text kept as the preview (RFC 8621 §4.1.4: at most 256).
pub const PREVIEW_CHARS: usize = 256;

/// One address as JMAP shows it (`EmailAddress`, RFC 8621 §4.1.2.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailAddress {
    pub name: Option<String>,
    pub email: String,
}

/// The PEC facts of a message, as found in its bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PecFacts {
    /// The `pec.kind` value: a daticert `tipo`, `anomalia`, or `ordinaria`.
    pub kind: String,
    /// The message claims to be PEC (a PEC header or a daticert is present).
    pub claims_pec: bool,
    pub identificativo: Option<String>,
    /// The client's Message-ID of the original (daticert `msgid`), bracketed.
    pub riferimento: Option<String>,
    /// The daticert as JSON (the `pec.daticert` value), when it parsed.
    pub daticert: Option<serde_json::Value>,
    /// Why the message is not formally correct PEC, judged on its content alone
    /// ([`classify::Classified::certified`]); `None` when it is, or for ordinary mail.
    pub not_certified: Option<String>,
    pub signature_valid: bool,
    pub signature_reason: Option<String>,
    pub signer_subject: Option<String>,
    /// The signer certificate, DER, hex (looked up in the provider index when read).
    pub signer_der: Option<String>,
    /// There is a `postacert.eml` in the signed content.
    pub has_postacert: bool,
    pub receipt_form: Option<String>,
}

/// The summary of one stored message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub subject: Option<String>,
    pub from: Vec<EmailAddress>,
    pub sender: Vec<EmailAddress>,
    pub to: Vec<EmailAddress>,
    pub cc: Vec<EmailAddress>,
    pub bcc: Vec<EmailAddress>,
    pub reply_to: Vec<EmailAddress>,
    pub message_id: Vec<String>,
    pub in_reply_to: Vec<String>,
    pub references: Vec<String>,
    /// `Date:` as RFC 3339 UTC.
    pub sent_at: Option<String>,
    pub preview: String,
    pub has_attachment: bool,
    /// The messages that share it are one thread: for PEC messages the client's
    /// Message-ID of the original (so the sent message, its acceptance, take-charge and
    /// delivery receipts group together), else the first of References / In-Reply-To /
    /// Message-ID.
    pub thread_key: String,
    pub pec: PecFacts,
}

/// Addresses of a header, flattened (groups included).
pub fn addresses(a: Option<&Address<'_>>) -> Vec<EmailAddress> {
    let Some(a) = a else { return Vec::new() };
    a.iter()
        .filter_map(|x| {
            Some(EmailAddress {
                name: x.name().map(str::to_string).filter(|n| !n.is_empty()),
                email: x.address()?.to_string(),
            })
        })
        .collect()
}

fn id_list(v: &mail_parser::HeaderValue<'_>) -> Vec<String> {
    match v {
        mail_parser::HeaderValue::Text(t) => vec![t.to_string()],
        mail_parser::HeaderValue::TextList(l) => l.iter().map(|t| t.to_string()).collect(),
        _ => Vec::new(),
    }
}

/// RFC 3339 of a mail-parser date, `None` when it is not a real instant.
pub fn rfc3339(d: &mail_parser::DateTime) -> Option<String> {
    let ts = jiff::Timestamp::from_second(d.to_timestamp()).ok()?;
    Some(ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
}

/// Computes the summary of `raw`.
pub fn summarize(raw: &[u8]) -> Summary {
    let mut s = Summary::default();
    if let Some(m) = MessageParser::default().parse(raw) {
        s.subject = m.subject().map(str::to_string);
        s.from = addresses(m.from());
        s.sender = addresses(m.sender());
        s.to = addresses(m.to());
        s.cc = addresses(m.cc());
        s.bcc = addresses(m.bcc());
        s.reply_to = addresses(m.reply_to());
        s.message_id = m
            .message_id()
            .map(|x| vec![x.to_string()])
            .unwrap_or_default();
        s.in_reply_to = id_list(m.in_reply_to());
        s.references = id_list(m.references());
        s.sent_at = m.date().and_then(rfc3339);
        s.preview = m
            .body_preview(PREVIEW_CHARS)
            .map(|p| p.chars().take(PREVIEW_CHARS).collect())
            .unwrap_or_default();
        s.has_attachment = m
            .attachments()
            .any(|p| p.attachment_name().is_some() || !p.is_text());
    }
    s.pec = pec_facts(raw);
    let fallback = s
        .references
        .first()
        .or(s.in_reply_to.first())
        .or(s.message_id.first())
        .cloned();
    s.thread_key = s
        .pec
        .riferimento
        .as_deref()
        .map(|m| ids::bare(m).to_string())
        .or(s.pec.identificativo.clone())
        .or(fallback)
        .unwrap_or_else(|| crate::trace::sha256_hex(raw));
    s
}

fn pec_facts(raw: &[u8]) -> PecFacts {
    let Ok(c) = classify::classify(raw) else {
        return PecFacts {
            kind: "ordinaria".into(),
            ..Default::default()
        };
    };
    let mut f = PecFacts {
        kind: match &c.kind {
            Kind::TransportEnvelope => "posta-certificata".into(),
            Kind::AnomalyEnvelope => "anomalia".into(),
            Kind::Receipt(t) => t.as_str().into(),
            Kind::UnknownPec(_) => "anomalia".into(),
            Kind::PlainMail => "ordinaria".into(),
        },
        claims_pec: !matches!(c.kind, Kind::PlainMail) || c.daticert.is_some(),
        has_postacert: c.postacert.is_some(),
        ..Default::default()
    };
    if !f.claims_pec {
        return f;
    }
    if let Some(Ok(d)) = &c.daticert {
        f.identificativo = Some(ids::bare(&d.identificativo).to_string());
        f.riferimento = d.msgid.clone();
        f.receipt_form = d.ricevuta.map(|r| r.as_str().to_string());
        f.daticert = Some(daticert_json(d));
    } else if let Some(r) = &c.headers.x_riferimento_message_id {
        f.identificativo = Some(ids::bare(r).to_string());
    }
    f.not_certified = match (&c.kind, c.certified()) {
        (Kind::AnomalyEnvelope, _) => None,
        (_, Err(e)) => Some(e.to_string()),
        (Kind::TransportEnvelope, Ok(d)) => {
            let (outer, _) = crate::pec::mime::split_header_body(raw);
            crate::pec::outer::check(outer, d, c.postacert.as_deref().unwrap_or_default())
                .err()
                .map(|why| format!("intestazioni esterne diverse dal contenuto firmato: {why}"))
        }
        (_, Ok(_)) => None,
    };
    let check = smime::verify_message(raw, None);
    f.signature_valid = check.valid;
    f.signature_reason = check.reason.clone();
    if let Some(sig) = &check.signer {
        f.signer_subject = Some(sig.subject.clone());
        f.signer_der = Some(hex::encode(&sig.der));
    }
    f
}

fn daticert_json(d: &crate::pec::daticert::Daticert) -> serde_json::Value {
    serde_json::json!({
        "tipo": d.tipo.as_str(),
        "errore": d.errore.as_str(),
        "mittente": d.mittente,
        "destinatari": d.destinatari.iter().map(|x| serde_json::json!({
            "address": x.address, "tipo": x.tipo.as_str()
        })).collect::<Vec<_>>(),
        "risposte": d.risposte,
        "oggetto": d.oggetto,
        "gestoreEmittente": d.gestore_emittente,
        "data": d.data.timestamp().map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
        "identificativo": d.identificativo,
        "msgid": d.msgid,
        "ricevuta": d.ricevuta.map(|r| r.as_str()),
        "consegna": d.consegna,
        "ricezione": d.ricezione,
        "erroreEsteso": d.errore_esteso,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_mail_is_ordinary_and_threads_by_references() {
        let raw = b"From: A <a@x.test>\r\nTo: b@y.test\r\nSubject: Ciao\r\nMessage-ID: <2@x>\r\n\
References: <1@x>\r\nDate: Thu, 03 Dec 2026 10:00:00 +0100\r\n\r\nTesto del messaggio\r\n";
        let s = summarize(raw);
        assert_eq!(s.subject.as_deref(), Some("Ciao"));
        assert_eq!(s.from[0].email, "a@x.test");
        assert_eq!(s.from[0].name.as_deref(), Some("A"));
        assert_eq!(s.thread_key, "1@x");
        assert_eq!(s.pec.kind, "ordinaria");
        assert!(!s.pec.claims_pec);
        assert_eq!(s.sent_at.as_deref(), Some("2026-12-03T09:00:00Z"));
        assert!(s.preview.starts_with("Testo"));
    }

    #[test]
    fn a_forged_pec_header_claims_pec_but_is_not_certified() {
        let raw = b"From: a@x.test\r\nTo: b@y.test\r\nX-Trasporto: posta-certificata\r\n\
Subject: POSTA CERTIFICATA: finta\r\n\r\nnot signed\r\n";
        let s = summarize(raw);
        assert!(s.pec.claims_pec);
        assert_eq!(s.pec.kind, "posta-certificata");
        assert!(!s.pec.signature_valid);
        assert!(s.pec.not_certified.is_some());
    }

    #[test]
    fn garbage_does_not_panic() {
        for raw in [
            &b""[..],
            b"\r\n\r\n",
            b"X-Ricevuta: accettazione\r\n\r\n",
            &[0xff; 64],
        ] {
            let _ = summarize(raw);
        }
    }
}
