//! What every generated PEC message has in common (digest §2): the provider identity, the
//! certification facts copied from the original, the header writer, the human-readable part
//! (ISO-8859-1 `multipart/alternative` with `text/plain` and a resource-free `text/html`),
//! and the signed `multipart/mixed` body with `daticert.xml` and `postacert.eml`.
//!
//! mail-builder renders headers (RFC 2047, folding) and MIME parts (QP/base64); this module
//! decides the layout the rules prescribe. It performs no I/O; signing is CPU-bound and the
//! caller chooses the thread.

use std::borrow::Cow;

use mail_builder::headers::Header;
use mail_builder::headers::address::Address;
use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::raw::Raw;
use mail_builder::headers::text::Text;
use mail_builder::mime::{BodyPart, MimePart};

use super::address::PecAddress;
use super::daticert::{Daticert, Destinatario, Errore, Tipo, TipoDestinatario, TipoRicevuta};
use super::ids;
use super::mime;
use super::smime::{Signer, SmimeError};
use super::time::PecTime;

/// Who we are when we generate a message.
#[derive(Debug, Clone)]
pub struct ProviderIdentity {
    /// `gestore-emittente`, also `providerName` in the index.
    pub name: String,
    /// The `From:` of every generated message; must equal the signing certificate's
    /// address (rule §2 item 2).
    pub service_address: PecAddress,
    /// The host used in identifiers we mint.
    pub host: String,
}

/// The certification facts of one original message: the `intestazione` of every daticert
/// about it, plus its identifiers. At the access point they come from the SMTP envelope and
/// headers (rule §2 item 4); at a receiving provider, from the verified envelope's daticert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certification {
    /// SMTP reverse-path (*mittente*).
    pub mittente: String,
    /// Every To/Cc recipient with its classification (*destinatari*).
    pub destinatari: Vec<Destinatario>,
    /// Original `Reply-To:` or the sender (*risposte*).
    pub risposte: String,
    /// Decoded original subject (*oggetto*).
    pub oggetto: String,
    /// The PEC identifier of the transport envelope, without brackets.
    pub identificativo: String,
    /// The client's Message-ID, with brackets.
    pub msgid: Option<String>,
    /// The delivery-receipt form the sender asked for (`X-TipoRicevuta`).
    pub ricevuta: TipoRicevuta,
}

impl Certification {
    /// The facts carried by a transport envelope's daticert.
    pub fn from_daticert(d: &Daticert) -> Self {
        Self {
            mittente: d.mittente.clone(),
            destinatari: d.destinatari.clone(),
            risposte: d.risposte.clone(),
            oggetto: d.oggetto.clone().unwrap_or_default(),
            identificativo: d.identificativo.clone(),
            msgid: d.msgid.clone(),
            ricevuta: d.ricevuta.unwrap_or(TipoRicevuta::Completa),
        }
    }

    /// A daticert about this message, with the per-type optional fields left empty.
    pub fn daticert(&self, tipo: Tipo, errore: Errore, gestore: &str, at: PecTime) -> Daticert {
        Daticert {
            tipo,
            errore,
            mittente: self.mittente.clone(),
            destinatari: self.destinatari.clone(),
            risposte: self.risposte.clone(),
            oggetto: Some(self.oggetto.clone()),
            gestore_emittente: gestore.to_string(),
            data: at,
            identificativo: self.identificativo.clone(),
            msgid: self.msgid.clone(),
            ricevuta: None,
            consegna: None,
            ricezione: Vec::new(),
            errore_esteso: None,
        }
    }

    /// The recipient list as the text parts print it.
    pub fn recipients_text(&self) -> Vec<String> {
        self.destinatari
            .iter()
            .map(|d| match d.tipo {
                TipoDestinatario::Certificato => format!("{} (\"posta certificata\")", d.address),
                TipoDestinatario::Esterno => format!("{} (\"posta ordinaria\")", d.address),
            })
            .collect()
    }
}

/// A message we generated: the signed bytes plus what callers index it by.
#[derive(Debug, Clone)]
pub struct BuiltMessage {
    /// The complete signed RFC 5322 message, CRLF line ends.
    pub bytes: Vec<u8>,
    /// Its own `Message-ID`, without brackets.
    pub message_id: String,
    /// The daticert inside it (absent for the anomaly envelope).
    pub daticert: Option<Daticert>,
}

/// Removes what could break a header line (CR, LF, other controls).
pub fn header_safe(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

/// A header block under construction (CRLF line ends).
#[derive(Debug, Default)]
pub struct Headers(pub Vec<u8>);

impl Headers {
    fn write(&mut self, name: &str, value: &impl Header) {
        self.0.extend_from_slice(name.as_bytes());
        self.0.extend_from_slice(b": ");
        // Writing into a Vec cannot fail.
        let _ = value.write_header(&mut self.0, name.len() + 2);
    }

    /// A structured value written as is (after control characters are removed).
    pub fn raw(&mut self, name: &str, value: &str) {
        self.write(name, &Raw::new(header_safe(value)));
    }

    /// Free text: RFC 2047-encoded when not plain ASCII.
    pub fn text(&mut self, name: &str, value: &str) {
        self.write(name, &Text::new(header_safe(value)));
    }

    /// A single address with an optional display name.
    pub fn address(&mut self, name: &str, display: Option<&str>, addr: &str) {
        let display = display.map(header_safe);
        self.write(name, &Address::new_address(display, header_safe(addr)));
    }

    /// Copies every occurrence of the named header lines, byte for byte (folding kept).
    pub fn copy_from(&mut self, original_headers: &[u8], names: &[&str]) {
        let mut copying = false;
        for line in original_headers.split_inclusive(|&b| b == b'\n') {
            let is_cont = line.first().is_some_and(|&b| b == b' ' || b == b'\t');
            if !is_cont {
                copying = line.iter().position(|&b| b == b':').is_some_and(|c| {
                    names
                        .iter()
                        .any(|n| line[..c].trim_ascii().eq_ignore_ascii_case(n.as_bytes()))
                });
            }
            if copying {
                self.0.extend_from_slice(&mime::to_crlf(line));
                if !line.ends_with(b"\n") {
                    self.0.extend_from_slice(b"\r\n");
                }
            }
        }
    }
}

/// The resource-free HTML twin of the text part (rule §2 item 6: same information, no
/// references, no active content).
fn html_of(lines: &[String]) -> String {
    let mut h = String::from("<html><body>\n");
    for l in lines {
        if l.is_empty() {
            h.push_str("<br>\n");
        } else {
            h.push_str("<p>");
            h.push_str(&quick_xml::escape::escape(l.as_str()));
            h.push_str("</p>\n");
        }
    }
    h.push_str("</body></html>\n");
    h
}

fn latin1_part(subtype: &str, text: &str) -> MimePart<'static> {
    let bytes = mime::to_crlf(&mime::to_latin1(text)).into_owned();
    MimePart::new(
        ContentType::new(format!("text/{subtype}")).attribute("charset", "iso-8859-1"),
        BodyPart::Binary(Cow::Owned(bytes)),
    )
    .inline()
}

/// How `postacert.eml` is declared: 7bit when pure ASCII, else 8bit.
fn rfc822_encoding(original: &[u8]) -> &'static str {
    if original.is_ascii() { "7bit" } else { "8bit" }
}

/// The signed entity: `multipart/mixed` holding the human-readable part, then `daticert.xml`
/// (base64, UTF-8) and `postacert.eml` (the original or whatever `attached` carries).
/// Appended to `out`, which it first makes room for (so a 50 MB `attached` is written
/// once, without the reallocations of a growing buffer).
pub fn write_inner_entity(
    out: &mut Vec<u8>,
    text_lines: &[String],
    daticert: Option<&Daticert>,
    attached: Option<&[u8]>,
) {
    let text = text_lines.join("\r\n") + "\r\n";
    let alternative = MimePart::new(
        ContentType::new("multipart/alternative"),
        vec![
            latin1_part("plain", &text),
            latin1_part("html", &html_of(text_lines)),
        ],
    );
    let mut parts = vec![alternative];
    if let Some(d) = daticert {
        parts.push(
            MimePart::new(
                ContentType::new("application/xml").attribute("name", "daticert.xml"),
                BodyPart::Binary(Cow::Owned(d.to_xml().into_bytes())),
            )
            .header(
                "Content-Disposition",
                Raw::new("inline; filename=\"daticert.xml\""),
            ),
        );
    }
    if let Some(orig) = attached {
        // Borrowed when it already has CRLF line ends (always, for what we accepted).
        let orig = mime::to_crlf(orig);
        let enc = rfc822_encoding(&orig);
        parts.push(
            MimePart::new(
                ContentType::new("message/rfc822").attribute("name", "postacert.eml"),
                BodyPart::Binary(orig),
            )
            .header(
                "Content-Disposition",
                Raw::new("inline; filename=\"postacert.eml\""),
            )
            .header("Content-Transfer-Encoding", Raw::new(enc)),
        );
    }
    let mixed = MimePart::new(ContentType::new("multipart/mixed"), parts);
    // The text parts and daticert are small; an 8bit or binary original goes as it is.
    out.reserve(attached.map_or(0, <[u8]>::len) + 64 * 1024);
    // Writing into a Vec cannot fail.
    let _ = mixed.write_part(out);
}

/// Builds the signed entity of [`write_inner_entity`] and signs it: `headers` are the
/// outer header lines (without MIME-Version and Content-Type). The entity is written
/// straight into the signed message, never held as a copy of its own.
pub fn sign(
    signer: &Signer,
    headers: Headers,
    text_lines: &[String],
    daticert: Option<&Daticert>,
    attached: Option<&[u8]>,
) -> Result<Vec<u8>, SmimeError> {
    signer.sign_message_with(&headers.0, |out| {
        write_inner_entity(out, text_lines, daticert, attached)
    })
}

/// The common header lines of receipts and notices (digest §4 preamble): Date, From,
/// To, Subject, Message-ID, X-Riferimento-Message-ID.
pub fn receipt_headers(
    provider: &ProviderIdentity,
    at: &PecTime,
    to: &str,
    subject: &str,
    msgid: Option<&str>,
) -> (Headers, String) {
    let message_id = ids::new_message_id(at, &provider.host);
    let mut h = Headers::default();
    h.raw("Date", &at.rfc5322());
    h.address("From", None, &provider.service_address.to_string());
    h.address("To", None, to);
    h.text("Subject", subject);
    h.raw("Message-ID", &ids::bracketed(&message_id));
    if let Some(m) = msgid {
        h.raw("X-Riferimento-Message-ID", &ids::bracketed(m));
    }
    (h, message_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_cannot_inject_lines() {
        let mut h = Headers::default();
        h.text("Subject", "ciao\r\nBcc: victim@example.it");
        let s = String::from_utf8(h.0).unwrap();
        assert_eq!(s.matches("\r\n").count(), 1, "{s:?}");
        assert!(s.starts_with("Subject: ciao  Bcc: victim@example.it"));
    }

    #[test]
    fn non_ascii_subject_is_encoded() {
        let mut h = Headers::default();
        h.text("Subject", "Perché è così");
        assert!(h.0.is_ascii());
        assert!(String::from_utf8(h.0).unwrap().contains("=?utf-8?"));
    }

    #[test]
    fn copy_keeps_folding_and_all_occurrences() {
        let orig = b"Received: from a\r\n\tby b\r\nTo: x@y.it\r\nSubject: s\r\nReceived: from c\n";
        let mut h = Headers::default();
        h.copy_from(orig, &["received"]);
        assert_eq!(h.0, b"Received: from a\r\n\tby b\r\nReceived: from c\r\n");
    }
}
