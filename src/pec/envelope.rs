//! The two envelopes (*buste*, digest §4.5 and §4.7).
//!
//! * [`transport`]: the *busta di trasporto* the access point wraps around an accepted
//!   original: `X-Trasporto: posta-certificata`, `Subject: POSTA CERTIFICATA: …`,
//!   `From: "Per conto di: <sender>" <service address>`, the PEC identifier as
//!   `Message-ID`, the client's id as `X-Riferimento-Message-ID`, the requested receipt
//!   form as `X-TipoRicevuta`, and the original (with its Message-ID replaced by the PEC
//!   identifier) as `postacert.eml` next to `daticert.xml`.
//! * [`anomaly`]: the *busta di anomalia* the incoming point wraps around anything that is
//!   not valid PEC: `X-Trasporto: errore`, `Subject: ANOMALIA MESSAGGIO: …`, the received
//!   message whole and nothing else (no daticert).
//!
//! Pure: bytes in, signed bytes out. The original is untrusted; nothing from it reaches a
//! header line without [`compose::header_safe`](super::compose::header_safe).

use std::borrow::Cow;

use super::compose::{self, BuiltMessage, Certification, Headers, ProviderIdentity};
use super::daticert::{Errore, Tipo};
use super::ids;
use super::mime;
use super::smime::{Signer, SmimeError};
use super::time::PecTime;

/// Headers copied unchanged from the original onto the transport envelope (§4.5).
const TRANSPORT_INHERITED: &[&str] = &["Received", "To", "Cc", "Return-Path", "Reply-To"];
/// Headers copied unchanged onto the anomaly envelope (§4.7).
const ANOMALY_INHERITED: &[&str] = &[
    "Received",
    "To",
    "Cc",
    "Return-Path",
    "Reply-To",
    "Message-ID",
];

/// The signed transport envelope.
#[derive(Debug, Clone)]
pub struct TransportEnvelope {
    pub message: BuiltMessage,
}

/// Rewrites the original as rule §2.1 prescribes: its `Message-ID` becomes the PEC
/// identifier and the client's id moves to `X-Riferimento-Message-ID`. The body and every
/// other header stay byte-identical.
pub fn rewrite_original(
    original: Vec<u8>,
    identificativo: &str,
    client_msgid: Option<&str>,
) -> Vec<u8> {
    // In place: only the header block is rebuilt; the body (up to 50 MB) is moved within
    // the same buffer, never copied to a second one (unless its line ends need CRLF).
    let crlf = match mime::to_crlf(&original) {
        Cow::Owned(converted) => Some(converted),
        Cow::Borrowed(_) => None,
    };
    let mut original = crlf.unwrap_or(original);
    let (headers, body) = mime::split_header_body(&original);
    let body_start = original.len() - body.len();
    let mut block = mime::replace_header(
        headers,
        "Message-ID",
        Some(&format!("Message-ID: {}", ids::bracketed(identificativo))),
    );
    if let Some(m) = client_msgid {
        block = mime::replace_header(
            &block,
            "X-Riferimento-Message-ID",
            Some(&format!("X-Riferimento-Message-ID: {}", ids::bracketed(m))),
        );
    }
    block.extend_from_slice(b"\r\n");
    original.splice(..body_start, block);
    original
}

/// Builds and signs the transport envelope for an accepted original (row #4 of §4.1).
/// `cert` holds the certification facts taken from the SMTP envelope; `original` the
/// message as submitted, taken by value: it becomes `postacert.eml` in its own buffer, so
/// a 50 MB original is held once beside the envelope being written, not twice.
pub fn transport(
    provider: &ProviderIdentity,
    signer: &Signer,
    cert: &Certification,
    original: Vec<u8>,
    at: PecTime,
) -> Result<TransportEnvelope, SmimeError> {
    let postacert = rewrite_original(original, &cert.identificativo, cert.msgid.as_deref());
    let (orig_headers, _) = mime::split_header_body(&postacert);

    let mut h = Headers::default();
    h.copy_from(orig_headers, TRANSPORT_INHERITED);
    h.raw("X-Trasporto", "posta-certificata");
    h.raw("Date", &at.rfc5322());
    h.text("Subject", &format!("POSTA CERTIFICATA: {}", cert.oggetto));
    h.address(
        "From",
        Some(&format!("Per conto di: {}", cert.mittente)),
        &provider.service_address.to_string(),
    );
    if mime::header_value(orig_headers, "reply-to").is_none() {
        h.address("Reply-To", None, &cert.mittente);
    }
    h.raw("Message-ID", &ids::bracketed(&cert.identificativo));
    if let Some(m) = &cert.msgid {
        h.raw("X-Riferimento-Message-ID", &ids::bracketed(m));
    }
    h.raw("X-TipoRicevuta", cert.ricevuta.as_str());

    let mut d = cert.daticert(Tipo::PostaCertificata, Errore::Nessuno, &provider.name, at);
    d.ricevuta = Some(cert.ricevuta);

    let mut lines = vec![
        "Messaggio di posta certificata".to_string(),
        String::new(),
        format!(
            "Il giorno {} il messaggio \"{}\" è stato inviato da \"{}\"",
            at.human(),
            cert.oggetto,
            cert.mittente
        ),
        "indirizzato a:".to_string(),
    ];
    lines.extend(cert.recipients_text());
    lines.push("Il messaggio originale è incluso in allegato.".to_string());
    lines.push(format!("Identificativo messaggio: {}", cert.identificativo));

    let bytes = compose::sign(signer, h, &lines, Some(&d), Some(&postacert))?;
    Ok(TransportEnvelope {
        message: BuiltMessage {
            bytes,
            message_id: cert.identificativo.clone(),
            daticert: Some(d),
        },
    })
}

/// Builds and signs the anomaly envelope around a received message that is not valid PEC
/// (row #6 of §4.1). `sender` is the SMTP reverse-path, `recipients` the forward-paths,
/// `reason` why the data are not certified.
pub fn anomaly(
    provider: &ProviderIdentity,
    signer: &Signer,
    received: &[u8],
    sender: &str,
    recipients: &[String],
    reason: &str,
    at: PecTime,
) -> Result<BuiltMessage, SmimeError> {
    let received = mime::to_crlf(received);
    let (orig_headers, _) = mime::split_header_body(&received);
    let subject = decoded_subject(orig_headers);

    let mut h = Headers::default();
    h.copy_from(orig_headers, ANOMALY_INHERITED);
    let message_id = match mime::header_value(orig_headers, "message-id") {
        Some(m) => ids::bare(&m).to_string(),
        None => {
            // The original had none: mint one so the envelope can be referred to.
            let m = ids::new_message_id(&at, &provider.host);
            h.raw("Message-ID", &ids::bracketed(&m));
            m
        }
    };
    h.raw("X-Trasporto", "errore");
    h.raw("Date", &at.rfc5322());
    h.text("Subject", &format!("ANOMALIA MESSAGGIO: {subject}"));
    h.address(
        "From",
        Some(&format!("Per conto di: {sender}")),
        &provider.service_address.to_string(),
    );
    if mime::header_value(orig_headers, "reply-to").is_none() && !sender.is_empty() {
        h.address("Reply-To", None, sender);
    }

    let mut lines = vec![
        "Anomalia nel messaggio".to_string(),
        String::new(),
        format!(
            "Il giorno {} è stato ricevuto il messaggio \"{}\" proveniente da \"{}\"",
            at.human(),
            subject,
            sender
        ),
        "ed indirizzato a:".to_string(),
    ];
    lines.extend(recipients.iter().cloned());
    lines.push(format!(
        "Tali dati non sono stati certificati per il seguente errore: {reason}"
    ));
    lines.push("Il messaggio originale è incluso in allegato.".to_string());

    let bytes = compose::sign(signer, h, &lines, None, Some(&received))?;
    Ok(BuiltMessage {
        bytes,
        message_id,
        daticert: None,
    })
}

/// The original's subject, RFC 2047-decoded (mail-parser), control characters removed.
pub fn decoded_subject(headers: &[u8]) -> String {
    mail_parser::MessageParser::new()
        .parse_headers(headers)
        .and_then(|m| m.subject().map(compose::header_safe))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrite_swaps_message_id_and_keeps_the_rest() {
        let orig = b"From: a@pec.x.it\nMessage-ID: <client@x>\nSubject: hi\n\nbody\n";
        let out = rewrite_original(orig.to_vec(), "opec-1@pec.x.it", Some("<client@x>"));
        let s = String::from_utf8(out).unwrap();
        assert_eq!(
            s,
            "X-Riferimento-Message-ID: <client@x>\r\nFrom: a@pec.x.it\r\nMessage-ID: <opec-1@pec.x.it>\r\nSubject: hi\r\n\r\nbody\r\n"
        );
    }

    #[test]
    fn subject_is_decoded() {
        assert_eq!(
            decoded_subject(b"Subject: =?utf-8?Q?Perch=C3=A8?=\r\n"),
            "Perchè"
        );
        assert_eq!(decoded_subject(b"From: a\r\n"), "");
    }
}
