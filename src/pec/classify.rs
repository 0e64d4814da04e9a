//! What an inbound message is, without trusting it (digest §3, §13).
//!
//! Owns: reading the PEC header fields (`X-Trasporto`, `X-Ricevuta`, …), finding the
//! `daticert.xml` and `postacert.eml` parts and parsing the daticert. It decides nothing
//! about trust: the headers are outside the signature and the daticert is only
//! authoritative once [`smime`](super::smime) has verified the signature and the signer is
//! known; callers combine the two.
//!
//! Where the parts are read from: in a `multipart/signed` message, only from the signed
//! content (its first body part, RFC 1847 §2.1), and there only among the direct children
//! of its `multipart/mixed` (rule §2 item 6): a part appended beside the signature, or a
//! `daticert.xml` hidden in the user's original, is never taken for the provider's.
//! The header fields stay the outer ones: in every real sample (digest §13) the signed
//! entity carries only `Content-Type`, so they cannot come from inside; that is why
//! [`Classified::certified`] accepts a daticert only when its (signed) `tipo` agrees with
//! the (unsigned) header kind.
//!
//! Untrusted input: the whole message. Parsing is done by mail-parser (which never panics
//! on malformed MIME) and the daticert parser (which never expands entities). Inputs larger
//! than [`MAX_MESSAGE_BYTES`] are refused before parsing.

use std::borrow::Cow;

use mail_parser::{MessageParser, MimeHeaders};

use super::daticert::{Daticert, DaticertError, Tipo};
use super::{ids, mime, smime};

/// Largest message classified (the access point refuses more than 50 MB; a full receipt
/// adds its own parts).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// What a message says it is, read from its headers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "value")]
pub enum Kind {
    /// `X-Trasporto: posta-certificata` (busta di trasporto).
    TransportEnvelope,
    /// `X-Trasporto: errore` (busta di anomalia).
    AnomalyEnvelope,
    /// `X-Ricevuta: <tipo>`: a receipt or notice.
    Receipt(Tipo),
    /// A PEC header with a value the rules do not define.
    UnknownPec(String),
    /// No PEC header: ordinary mail.
    PlainMail,
}

impl Kind {
    /// A short stable name: `transport-envelope`, `anomaly-envelope`, the `X-Ricevuta`
    /// value for receipts, `unknown-pec`, `plain-mail`.
    pub fn name(&self) -> String {
        match self {
            Kind::TransportEnvelope => "transport-envelope".into(),
            Kind::AnomalyEnvelope => "anomaly-envelope".into(),
            Kind::Receipt(t) => t.as_str().into(),
            Kind::UnknownPec(_) => "unknown-pec".into(),
            Kind::PlainMail => "plain-mail".into(),
        }
    }

    /// The daticert `tipo` this kind must carry, if any.
    pub fn expected_tipo(&self) -> Option<Tipo> {
        match self {
            Kind::TransportEnvelope => Some(Tipo::PostaCertificata),
            Kind::Receipt(t) => Some(*t),
            _ => None,
        }
    }
}

/// The PEC header fields of a message, as found (untrusted).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PecHeaders {
    pub x_trasporto: Option<String>,
    pub x_ricevuta: Option<String>,
    pub x_tipo_ricevuta: Option<String>,
    pub x_riferimento_message_id: Option<String>,
    pub x_verifica_sicurezza: Option<String>,
    pub x_mittente: Option<String>,
    pub message_id: Option<String>,
    pub subject: Option<String>,
    pub from: Option<String>,
}

/// The classification of one message.
#[derive(Debug, Clone)]
pub struct Classified {
    pub kind: Kind,
    pub headers: PecHeaders,
    /// The top-level entity is `multipart/signed`.
    pub signed: bool,
    /// The parsed daticert, or why it could not be parsed; `None` when there is no
    /// `daticert.xml` part.
    pub daticert: Option<Result<Daticert, DaticertError>>,
    /// The raw bytes of the `postacert.eml` part (the original or, in an anomaly
    /// envelope, the received message).
    pub postacert: Option<Vec<u8>>,
    /// Structural problems noticed (not fatal to classification).
    pub problems: Vec<String>,
}

/// Why a classified message is not a correct PEC envelope or receipt (digest §6.2,
/// "formal correctness"), judged on the daticert alone: the signature is the caller's.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum NotCertified {
    #[error("not a PEC envelope or receipt ({0})")]
    NotPecKind(String),
    #[error("no daticert.xml in the signed content")]
    NoDaticert,
    #[error("daticert.xml unreadable: {0}")]
    BadDaticert(String),
    #[error("the header says {header} but the signed daticert says {daticert}")]
    TipoMismatch { header: String, daticert: String },
    #[error("transport envelope without postacert.eml in the signed content")]
    NoPostacert,
    #[error("Message-ID {header} differs from the identificativo {identificativo}")]
    IdentMismatch {
        header: String,
        identificativo: String,
    },
    #[error(
        "transport envelope without Message-ID (it must be the identificativo {identificativo})"
    )]
    NoMessageId { identificativo: String },
}

impl Classified {
    /// The daticert, when this is a formally correct envelope or receipt: a daticert in
    /// the signed content whose `tipo` is the one the (unsigned) `X-Trasporto` /
    /// `X-Ricevuta` header announces, with the original inside for an envelope and, for
    /// an envelope, a `Message-ID` present and equal to the identificativo (rule §2.1). Changing the
    /// unsigned header therefore cannot change what the message is taken for.
    pub fn certified(&self) -> Result<&Daticert, NotCertified> {
        let expected = self
            .kind
            .expected_tipo()
            .ok_or_else(|| NotCertified::NotPecKind(self.kind.name()))?;
        let d = match &self.daticert {
            None => return Err(NotCertified::NoDaticert),
            Some(Err(e)) => return Err(NotCertified::BadDaticert(e.to_string())),
            Some(Ok(d)) => d,
        };
        if d.tipo != expected {
            return Err(NotCertified::TipoMismatch {
                header: self.kind.name(),
                daticert: d.tipo.as_str().to_string(),
            });
        }
        if self.kind == Kind::TransportEnvelope {
            if self.postacert.is_none() {
                return Err(NotCertified::NoPostacert);
            }
            // Rule §2.1 / digest §4.5: the envelope's Message-ID *is* the identificativo; an
            // envelope without one is as malformed as one with another.
            let Some(mid) = &self.headers.message_id else {
                return Err(NotCertified::NoMessageId {
                    identificativo: d.identificativo.clone(),
                });
            };
            if !ids::bare(mid).eq_ignore_ascii_case(ids::bare(&d.identificativo)) {
                return Err(NotCertified::IdentMismatch {
                    header: mid.clone(),
                    identificativo: d.identificativo.clone(),
                });
            }
        }
        Ok(d)
    }
}

/// Why a message could not be classified at all.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClassifyError {
    #[error("the message is larger than {MAX_MESSAGE_BYTES} bytes")]
    TooLarge,
    #[error("not an e-mail message: no header fields found")]
    NotAMail,
}

/// Classifies any message. Fails only when the input is not a mail at all.
pub fn classify(raw: &[u8]) -> Result<Classified, ClassifyError> {
    if raw.len() > MAX_MESSAGE_BYTES {
        return Err(ClassifyError::TooLarge);
    }
    let crlf = mime::to_crlf(raw);
    let (header_block, _) = mime::split_header_body(&crlf);
    let fields = mime::headers(header_block);
    if fields.is_empty() {
        return Err(ClassifyError::NotAMail);
    }
    let get = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
    };
    // Subject and From are decoded from the outer headers alone: the body is parsed once,
    // below, and only where the PEC parts may be.
    let parsed = MessageParser::new().parse_headers(&crlf[..]);
    let mut headers = PecHeaders {
        x_trasporto: get("X-Trasporto"),
        x_ricevuta: get("X-Ricevuta"),
        x_tipo_ricevuta: get("X-TipoRicevuta"),
        x_riferimento_message_id: get("X-Riferimento-Message-ID"),
        x_verifica_sicurezza: get("X-VerificaSicurezza"),
        x_mittente: get("X-Mittente"),
        message_id: get("Message-ID"),
        subject: None,
        from: None,
    };
    if let Some(m) = &parsed {
        headers.subject = m.subject().map(str::to_string);
        headers.from = m
            .from()
            .and_then(|a| a.first())
            .and_then(|a| a.address())
            .map(str::to_string);
    }

    let kind = match (&headers.x_trasporto, &headers.x_ricevuta) {
        (Some(t), _) if t.eq_ignore_ascii_case("posta-certificata") => Kind::TransportEnvelope,
        (Some(t), _) if t.eq_ignore_ascii_case("errore") => Kind::AnomalyEnvelope,
        (Some(t), _) => Kind::UnknownPec(t.clone()),
        (None, Some(r)) => match Tipo::parse(&r.to_ascii_lowercase()) {
            Some(Tipo::PostaCertificata) | None => Kind::UnknownPec(r.clone()),
            Some(t) => Kind::Receipt(t),
        },
        (None, None) => Kind::PlainMail,
    };

    let signed = get("Content-Type")
        .map(|v| mime::ContentType::parse(&v).mime_type == "multipart/signed")
        .unwrap_or(false);

    let mut problems = Vec::new();
    // The entity the PEC parts are read from: the signed content when signed.
    let content: Option<Cow<'_, [u8]>> = if signed {
        match smime::signed_content(&crlf) {
            Ok(sc) => {
                if !sc.closed {
                    problems
                        .push("multipart/signed is not closed by its final boundary".to_string());
                }
                if sc.parts > 2 {
                    problems.push(format!(
                        "multipart/signed has {} body parts: only the first is signed content, \
                         the others are ignored",
                        sc.parts
                    ));
                }
                Some(sc.content)
            }
            Err(e) => {
                problems.push(format!("signed content not found: {e}"));
                None
            }
        }
    } else {
        Some(Cow::Borrowed(&crlf))
    };
    let mut daticert = None;
    let mut postacert = None;
    let parsed_content = content
        .as_deref()
        .and_then(|c| MessageParser::new().parse(c));
    match &parsed_content {
        None => problems.push("the MIME structure could not be parsed".to_string()),
        Some(m) => {
            // Only the direct children of the top multipart (rule §2 item 6).
            let children = m.root_part().sub_parts().unwrap_or_default();
            for part in children.iter().filter_map(|&id| m.part(id)) {
                let name = part.attachment_name().map(|n| n.to_ascii_lowercase());
                if name.as_deref() == Some("daticert.xml") {
                    if daticert.is_none() {
                        daticert = Some(Daticert::parse(part.contents()));
                    } else {
                        problems.push("more than one daticert.xml: the first is used".into());
                    }
                } else if postacert.is_none() && part.is_message() {
                    let named = name.as_deref() == Some("postacert.eml");
                    if named || matches!(kind, Kind::AnomalyEnvelope) {
                        postacert = part.message().map(|inner| inner.raw_message().to_vec());
                    }
                }
            }
        }
    }
    Ok(Classified {
        kind,
        headers,
        signed,
        daticert,
        postacert,
        problems,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_mail_and_non_mail() {
        let c = classify(b"From: a@b.it\r\nSubject: hi\r\n\r\nbody").unwrap();
        assert_eq!(c.kind, Kind::PlainMail);
        assert!(c.daticert.is_none() && c.postacert.is_none() && !c.signed);
        assert_eq!(classify(b"").unwrap_err(), ClassifyError::NotAMail);
        assert_eq!(
            classify(b"\x00\x01\x02 no colon here").unwrap_err(),
            ClassifyError::NotAMail
        );
    }

    #[test]
    fn pec_headers_decide_the_kind() {
        for (h, k) in [
            ("X-Trasporto: posta-certificata", Kind::TransportEnvelope),
            ("X-Trasporto: errore", Kind::AnomalyEnvelope),
            (
                "X-Ricevuta: avvenuta-consegna",
                Kind::Receipt(Tipo::AvvenutaConsegna),
            ),
            (
                "X-Ricevuta: mancata-consegna",
                Kind::UnknownPec("mancata-consegna".into()),
            ),
        ] {
            let raw = format!("{h}\r\nFrom: x@y.it\r\n\r\n");
            assert_eq!(classify(raw.as_bytes()).unwrap().kind, k, "{h}");
        }
    }

    #[test]
    fn pec_parts_are_read_only_among_the_direct_children() {
        let msg = |inner: &str| {
            format!(
                "X-Trasporto: posta-certificata\r\nFrom: x@y.it\r\n\
                 Content-Type: multipart/mixed; boundary=\"o\"\r\n\r\n\
                 --o\r\nContent-Type: text/plain\r\n\r\ntesto\r\n{inner}--o--\r\n"
            )
        };
        let dc = "Content-Type: application/xml; name=\"daticert.xml\"\r\n\r\n<postacert/>\r\n";
        let direct = msg(&format!("--o\r\n{dc}"));
        assert!(classify(direct.as_bytes()).unwrap().daticert.is_some());
        // One level down (e.g. inside an alternative or the user's own attachments): not
        // the provider's certification data (rule §2 item 6).
        let nested = msg(&format!(
            "--o\r\nContent-Type: multipart/mixed; boundary=\"i\"\r\n\r\n--i\r\n{dc}--i--\r\n"
        ));
        let c = classify(nested.as_bytes()).unwrap();
        assert!(c.daticert.is_none());
        assert_eq!(c.certified().unwrap_err(), NotCertified::NoDaticert);
    }

    #[test]
    fn certified_needs_a_daticert_agreeing_with_the_header() {
        let c = classify(b"From: a@b.it\r\n\r\nx").unwrap();
        assert!(matches!(c.certified(), Err(NotCertified::NotPecKind(_))));
        let c = classify(b"X-Trasporto: errore\r\nFrom: a@b.it\r\n\r\nx").unwrap();
        assert!(matches!(c.certified(), Err(NotCertified::NotPecKind(_))));
        let c = classify(b"X-Ricevuta: accettazione\r\nFrom: a@b.it\r\n\r\nx").unwrap();
        assert_eq!(c.certified().unwrap_err(), NotCertified::NoDaticert);
    }

    /// An envelope is certified only with a Message-ID equal to its identificativo: a
    /// missing one is refused like a different one (issue #13 item 7).
    #[test]
    fn an_envelope_needs_its_identificativo_as_message_id() {
        use crate::pec::address::PecAddress;
        use crate::pec::compose::{Certification, ProviderIdentity};
        use crate::pec::daticert::{Destinatario, TipoDestinatario, TipoRicevuta};
        let signer = crate::trace::checkpoint::tests::test_signer("posta-certificata@pec.a.it");
        let id = ProviderIdentity {
            name: "A".into(),
            service_address: PecAddress::parse("posta-certificata@pec.a.it").unwrap(),
            host: "mail.pec.a.it".into(),
        };
        let cert = Certification {
            mittente: "m@pec.a.it".into(),
            destinatari: vec![Destinatario {
                address: "d@pec.b.it".into(),
                tipo: TipoDestinatario::Certificato,
            }],
            risposte: "m@pec.a.it".into(),
            oggetto: "o".into(),
            identificativo: "opec-9@pec.a.it".into(),
            msgid: None,
            ricevuta: TipoRicevuta::Completa,
        };
        let at = crate::pec::time::PecTime::italian(jiff::Timestamp::now());
        let orig = b"From: m@pec.a.it\r\nTo: d@pec.b.it\r\nSubject: o\r\n\r\nx\r\n";
        let env = crate::pec::envelope::transport(&id, &signer, &cert, orig, at)
            .unwrap()
            .message
            .bytes;
        assert!(classify(&env).unwrap().certified().is_ok());
        let (h, body) = mime::split_header_body(&env);
        for (line, want) in [
            (None, "without Message-ID"),
            (Some("Message-ID: <opec-8@pec.a.it>"), "differs"),
        ] {
            let mut forged = mime::replace_header(h, "Message-ID", line);
            forged.extend_from_slice(b"\r\n");
            forged.extend_from_slice(body);
            let err = classify(&forged).unwrap().certified().unwrap_err();
            assert!(err.to_string().contains(want), "{err}");
        }
    }

    #[test]
    fn malformed_mime_never_panics() {
        let cases: &[&[u8]] = &[
            b"Content-Type: multipart/mixed\r\n\r\n--x\r\n",
            b"Content-Type: multipart/signed; boundary=\"b\"\r\nX-Ricevuta: accettazione\r\n\r\n--b\r\nContent-Type: application/xml; name=daticert.xml\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!notbase64",
            b"Content-Type: message/rfc822\r\n\r\nContent-Type: message/rfc822\r\n\r\n",
        ];
        for c in cases {
            let _ = classify(c);
        }
        let big = format!("Subject: {}\r\n\r\n", "a".repeat(10 * 1024 * 1024));
        assert!(classify(big.as_bytes()).is_ok());
    }
}
