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
//! Untrusted input: the whole message. Header fields are parsed by mail-parser (which never
//! panics on malformed MIME), parts are cut by [`mime::split_multipart`], and the daticert
//! parser never expands entities; the original inside is not parsed at all. Inputs larger
//! than [`MAX_MESSAGE_BYTES`] are refused before parsing.

use std::borrow::Cow;

use std::sync::Arc;

use bytes::Bytes;
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
    pub postacert: Option<Bytes>,
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

/// Classifies any message. Fails only when the input is not a mail at all. The
/// `postacert` returned is a copy; [`classify_shared`] avoids it.
pub fn classify(raw: &[u8]) -> Result<Classified, ClassifyError> {
    classify_with(raw, |part| match part {
        Cow::Borrowed(part) => Bytes::copy_from_slice(part),
        Cow::Owned(part) => Bytes::from(part),
    })
}

/// [`classify`] for a message already held in shared memory: `postacert` is then a view
/// into `raw`, not a copy (a 50 MB original is not duplicated), unless the message had to
/// be rewritten with CRLF line ends first.
pub fn classify_shared(raw: &Arc<Vec<u8>>) -> Result<Classified, ClassifyError> {
    let raw = Bytes::from_owner(SharedMessage(raw.clone()));
    classify_with(&raw, |part| match part {
        Cow::Borrowed(part) => {
            let (start, end) = (raw.as_ptr() as usize, raw.as_ptr() as usize + raw.len());
            let p = part.as_ptr() as usize;
            if p >= start && p + part.len() <= end {
                raw.slice_ref(part)
            } else {
                // A view into a CRLF copy of the message, not into `raw`.
                Bytes::copy_from_slice(part)
            }
        }
        Cow::Owned(part) => Bytes::from(part),
    })
}

/// A message held behind an `Arc`, lent to [`Bytes`] (which keeps it alive) without a copy.
struct SharedMessage(Arc<Vec<u8>>);

impl AsRef<[u8]> for SharedMessage {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

fn classify_with(
    raw: &[u8],
    shared: impl Fn(Cow<'_, [u8]>) -> Bytes,
) -> Result<Classified, ClassifyError> {
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
    let (daticert, postacert) = match content.as_deref() {
        Some(c) => pec_parts(c, &kind, &mut problems),
        None => (None, None),
    };
    let postacert = postacert.map(shared);
    Ok(Classified {
        kind,
        headers,
        signed,
        daticert,
        postacert,
        problems,
    })
}

/// The daticert found (parsed or not) and the raw original.
type PecParts<'a> = (
    Option<Result<Daticert, DaticertError>>,
    Option<Cow<'a, [u8]>>,
);

/// The PEC parts among the direct children of the top multipart of `content` (rule §2
/// item 6): the parsed `daticert.xml` and the raw `postacert.eml`. The children are cut
/// by [`mime::split_multipart`] (as the signed content itself is); mail-parser reads each
/// child's header fields (names, RFC 2231 and encoded words as before) and decodes only
/// `daticert.xml`. The original in `postacert.eml` is neither parsed nor decoded nor
/// copied when it is sent as it is (7bit, 8bit, binary: what RFC 2046 §5.2.1 allows); a
/// base64 or quoted-printable one is decoded.
fn pec_parts<'a>(content: &'a [u8], kind: &Kind, problems: &mut Vec<String>) -> PecParts<'a> {
    // The top entity's type and boundary as mail-parser reads them (RFC 2231, the last
    // Content-Type), as before the parts were cut here.
    let Some(top) = MessageParser::new().parse_headers(content) else {
        problems.push("the MIME structure could not be parsed".to_string());
        return (None, None);
    };
    let Some(ct) = top.root_part().content_type() else {
        return (None, None);
    };
    // RFC 2046 §5.1.1: a boundary has 1 to 70 characters; an empty one would make every
    // `--` line of the original a delimiter.
    let boundary = ct.attribute("boundary").filter(|b| !b.is_empty());
    let (true, Some(boundary)) = (ct.ctype().eq_ignore_ascii_case("multipart"), boundary) else {
        return (None, None);
    };
    let digest = ct
        .subtype()
        .is_some_and(|s| s.eq_ignore_ascii_case("digest"));
    let (_, body) = mime::split_header_body(content);
    let (mut daticert, mut postacert) = (None, None);
    for part in mime::split_multipart(body, boundary.as_bytes()).parts {
        // A part may have no header fields at all (a multipart/digest child defaults to
        // message/rfc822).
        let parsed = MessageParser::new().parse_headers(part);
        let root = parsed.as_ref().map(|m| m.root_part());
        let name = root
            .and_then(|r| r.attachment_name())
            .map(str::to_ascii_lowercase);
        if name.as_deref() == Some("daticert.xml") {
            if daticert.is_none() {
                let decoded = MessageParser::new().parse(part);
                let contents = decoded
                    .as_ref()
                    .map_or(&[][..], |m| m.root_part().contents());
                daticert = Some(Daticert::parse(contents));
            } else {
                problems.push("more than one daticert.xml: the first is used".into());
            }
            continue;
        }
        let is_message = match root.and_then(|r| r.content_type()) {
            Some(t) => {
                t.ctype().eq_ignore_ascii_case("message")
                    && t.subtype().is_some_and(|s| {
                        s.eq_ignore_ascii_case("rfc822") || s.eq_ignore_ascii_case("global")
                    })
            }
            None => digest,
        };
        let named = name.as_deref() == Some("postacert.eml");
        if postacert.is_some() || !is_message || !(named || matches!(kind, Kind::AnomalyEnvelope)) {
            continue;
        }
        let encoding = root
            .and_then(|r| r.content_transfer_encoding())
            .map(|e| e.trim().to_ascii_lowercase());
        postacert = match encoding.as_deref() {
            // A message has header fields (mail-parser's test, on the headers alone).
            None | Some("7bit" | "8bit" | "binary") => {
                let inner = mime::split_header_body(part).1;
                MessageParser::new()
                    .parse_headers(inner)
                    .map(|_| Cow::Borrowed(inner))
            }
            // Not allowed for message/rfc822, but read as mail-parser always has.
            Some(_) => MessageParser::new().parse(part).and_then(|m| {
                m.root_part()
                    .message()
                    .map(|inner| Cow::Owned(inner.raw_message().to_vec()))
            }),
        };
    }
    (daticert, postacert)
}

// Test code: an unwrap here fails the test; none sees peer input.
#[cfg(test)]
mod tests {
    use super::*;

    fn root_of(c: &Classified) -> Option<String> {
        match &c.daticert {
            Some(Err(DaticertError::WrongRoot(r))) => Some(r.clone()),
            other => panic!("{other:?}"),
        }
    }

    /// Only a whole delimiter line cuts a direct child (RFC 2046 §5.1.1): an original
    /// with the boundary inside a line, or prefixed, cannot slip in a daticert of its own
    /// (mail-parser took `hello --b` and `--bX` for delimiters); an empty boundary cuts
    /// nothing at all.
    #[test]
    fn only_whole_delimiter_lines_cut_the_pec_parts() {
        for line in ["hello --b", "--bX", "---b", "--b junk"] {
            let raw = format!(
                "X-Trasporto: posta-certificata\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
                 --b\r\nContent-Type: message/rfc822; name=\"postacert.eml\"\r\n\r\n\
                 Subject: s\r\n\r\n{line}\r\nContent-Type: application/xml; name=daticert.xml\r\n\r\n<fake/>\r\n\
                 --b\r\nContent-Type: application/xml; name=daticert.xml\r\n\r\n<real/>\r\n--b--\r\n"
            );
            let c = classify(raw.as_bytes()).unwrap();
            assert_eq!(root_of(&c).as_deref(), Some("real"), "{line}");
            assert!(
                c.postacert.as_deref().unwrap().ends_with(b"<fake/>"),
                "{line}: the original keeps its lines"
            );
        }
        let empty = "X-Trasporto: errore\r\nContent-Type: multipart/mixed; boundary=\"\"\r\n\r\n\
                     --\r\nContent-Type: application/xml; name=daticert.xml\r\n\r\n<fake/>\r\n----\r\n";
        let c = classify(empty.as_bytes()).unwrap();
        assert!(c.daticert.is_none() && c.postacert.is_none());
    }

    /// `postacert.eml` must hold a message (header fields), whatever its Content-Type says.
    #[test]
    fn a_postacert_without_header_fields_is_no_postacert() {
        for (body, found) in [
            ("just text no colon\r\n", false),
            ("", false),
            ("Subject: only a header", true),
            ("Subject: s\r\n\r\nbody\r\n", true),
        ] {
            let raw = format!(
                "X-Trasporto: posta-certificata\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n\
                 --b\r\nContent-Type: message/rfc822; name=postacert.eml\r\n\r\n{body}\r\n--b--\r\n"
            );
            let c = classify(raw.as_bytes()).unwrap();
            assert_eq!(c.postacert.is_some(), found, "{body:?}");
        }
    }

    /// The pipeline's variant returns the original as a view into the message it was
    /// given (no 50 MB copy) when the message is CRLF, and a copy otherwise.
    #[test]
    fn classify_shared_views_the_original_in_place() {
        let crlf = "X-Trasporto: posta-certificata\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n\
                    --b\r\nContent-Type: message/rfc822; name=postacert.eml\r\n\r\nSubject: s\r\n\r\nx\r\n--b--\r\n";
        let within = |raw: &Arc<Vec<u8>>, p: &[u8]| {
            let r = raw.as_ptr() as usize..raw.as_ptr() as usize + raw.len();
            r.contains(&(p.as_ptr() as usize))
        };
        let raw = Arc::new(crlf.as_bytes().to_vec());
        let c = classify_shared(&raw).unwrap();
        let p = c.postacert.unwrap();
        assert_eq!(&p[..], b"Subject: s\r\n\r\nx");
        assert!(within(&raw, &p), "a view into the message");
        drop(raw);
        assert_eq!(
            &p[..],
            b"Subject: s\r\n\r\nx",
            "the view keeps the message alive"
        );

        let lf = Arc::new(crlf.replace("\r\n", "\n").into_bytes());
        let p = classify_shared(&lf).unwrap().postacert.unwrap();
        assert_eq!(&p[..], b"Subject: s\r\n\r\nx");
        assert!(
            !within(&lf, &p),
            "LF input is converted, so the original is a copy"
        );
    }

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
        let env = crate::pec::envelope::transport(&id, &signer, &cert, orig.to_vec(), at)
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
