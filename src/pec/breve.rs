//! The original as carried by a *breve* delivery receipt (digest §4.10, RFC 6109 §3.3.2.2):
//! the MIME structure is kept, but every part that has a `name` (Content-Type) or
//! `filename` (Content-Disposition) parameter, and every attached `message/rfc822`, is
//! replaced by a `text/plain` part holding the SHA-1 of that part, named `<name>.hash`.
//!
//! Which bytes are hashed is not settled by the rules (open point 4): we hash the part's
//! body exactly as transmitted (after its header block, before the next delimiter), the
//! reading of "computed on the base64-encoded part" that lets a sender check it against
//! the message it kept. Signed originals keep their structure and signature part
//! (attachments inside the signed part are still replaced, so the copy will no longer
//! verify, as the rules say); opaque `application/pkcs7-mime` originals are left whole.
//!
//! Untrusted input: the whole original. Recursion is bounded by [`MAX_DEPTH`].

use openssl::hash::{MessageDigest, hash};

use super::mime;

/// Deepest multipart nesting rewritten; deeper parts are kept as they are.
pub const MAX_DEPTH: usize = 32;

/// Returns the breve form of `original` (CRLF).
pub fn breve_original(original: &[u8]) -> Vec<u8> {
    let original = mime::to_crlf(original);
    let (headers, body) = mime::split_header_body(&original);
    let ct = content_type(headers);
    if ct.mime_type == "application/pkcs7-mime" || ct.mime_type == "application/x-pkcs7-mime" {
        return original.into_owned();
    }
    let mut out = Vec::with_capacity(original.len());
    if !ct.mime_type.starts_with("multipart/")
        && let Some(name) = part_name(headers, &ct)
    {
        // A single-part original that is itself a named attachment: its content goes the
        // way of any attachment, and the message headers (From, Subject, ...) stay.
        let (hash_headers, digest) = hashed(&name, body);
        let mut h = headers.to_vec();
        for field in [
            "content-type",
            "content-disposition",
            "content-transfer-encoding",
        ] {
            h = mime::replace_header(&h, field, None);
        }
        out.extend_from_slice(&h);
        out.extend_from_slice(hash_headers.as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(digest.as_bytes());
        out.extend_from_slice(b"\r\n");
        return out;
    }
    out.extend_from_slice(headers);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&rewrite_body(&ct, body, 0));
    out
}

/// The header lines (CRLF-terminated) and the body of the `text/plain` part that stands
/// for an attachment named `name` whose transmitted body is `body`.
fn hashed(name: &str, body: &[u8]) -> (String, String) {
    let name = name.replace(['"', '\\', '\r', '\n'], "_");
    let digest = hash(MessageDigest::sha1(), body)
        .map(hex::encode)
        .unwrap_or_default();
    (
        format!(
            "Content-Type: text/plain; charset=us-ascii; name=\"{name}.hash\"\r\n\
             Content-Disposition: attachment; filename=\"{name}.hash\"\r\n\
             Content-Transfer-Encoding: 7bit\r\n"
        ),
        digest,
    )
}

fn content_type(headers: &[u8]) -> mime::ContentType {
    mime::header_value(headers, "content-type")
        .map(|v| mime::ContentType::parse(&v))
        .unwrap_or_else(|| mime::ContentType::parse("text/plain"))
}

/// The attachment name of a part, if it has one.
fn part_name(headers: &[u8], ct: &mime::ContentType) -> Option<String> {
    let disposition = mime::header_value(headers, "content-disposition")
        .map(|v| mime::ContentType::parse(&format!("x/{v}")));
    disposition
        .as_ref()
        .and_then(|d| d.param("filename").map(str::to_string))
        .or_else(|| ct.param("name").map(str::to_string))
}

fn rewrite_body(ct: &mime::ContentType, body: &[u8], depth: usize) -> Vec<u8> {
    if !ct.mime_type.starts_with("multipart/") || depth >= MAX_DEPTH {
        return body.to_vec();
    }
    let Some(boundary) = ct.param("boundary") else {
        return body.to_vec();
    };
    let signed = ct.mime_type == "multipart/signed";
    let split = mime::split_multipart(body, boundary.as_bytes());
    if split.parts.is_empty() {
        return body.to_vec();
    }
    let mut out = Vec::with_capacity(body.len());
    for (i, part) in split.parts.iter().enumerate() {
        out.extend_from_slice(b"--");
        out.extend_from_slice(boundary.as_bytes());
        out.extend_from_slice(b"\r\n");
        if signed && i > 0 {
            // The signature part of a signed original stays untouched.
            out.extend_from_slice(part);
        } else {
            out.extend_from_slice(&rewrite_part(part, depth + 1));
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"--");
    out.extend_from_slice(boundary.as_bytes());
    out.extend_from_slice(b"--\r\n");
    out
}

fn rewrite_part(part: &[u8], depth: usize) -> Vec<u8> {
    let (headers, body) = mime::split_header_body(part);
    let ct = content_type(headers);
    let name = part_name(headers, &ct);
    if name.is_some() || ct.mime_type == "message/rfc822" {
        let name = name.unwrap_or_else(|| "message.eml".to_string());
        let (h, digest) = hashed(&name, body);
        return format!("{h}\r\n{digest}").into_bytes();
    }
    let mut out = Vec::with_capacity(part.len());
    out.extend_from_slice(headers);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&rewrite_body(&ct, body, depth));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGINAL: &[u8] = b"From: a@pec.x.it\r\nSubject: s\r\nContent-Type: multipart/mixed; boundary=\"B\"\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nciao\r\n--B\r\nContent-Type: application/pdf; name=\"fattura.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0x\r\n--B\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\nx\r\n--B--\r\n";

    #[test]
    fn attachments_become_hashes_and_text_stays() {
        let out = String::from_utf8(breve_original(ORIGINAL)).unwrap();
        assert!(out.contains("ciao"));
        assert!(!out.contains("JVBERi0x"));
        assert!(out.contains("filename=\"fattura.pdf.hash\""));
        let sha1 = hex::encode(hash(MessageDigest::sha1(), b"JVBERi0x").unwrap());
        assert!(out.contains(&sha1));
        assert!(
            !out.contains("Subject: inner"),
            "attached message must be replaced"
        );
        assert!(out.contains("message.eml.hash"));
        // Still a parseable multipart with the same number of parts.
        let m = mail_parser::MessageParser::new()
            .parse(out.as_bytes())
            .unwrap();
        assert_eq!(m.attachment_count(), 2);
    }

    /// An original that is one named attachment (no multipart around it): the content is
    /// replaced by its hash like any attachment, the message headers stay (#13 item 7).
    #[test]
    fn a_single_part_attachment_original_is_hashed_too() {
        let orig = b"From: a@pec.x.it\r\nSubject: fattura\r\nMIME-Version: 1.0\r\n\
Content-Type: application/pdf; name=\"f.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n\
JVBERi0xLjQK\r\n";
        let out = String::from_utf8(breve_original(orig)).unwrap();
        assert!(!out.contains("JVBERi0xLjQK"), "{out}");
        assert!(!out.contains("application/pdf"), "{out}");
        assert!(out.contains("Subject: fattura\r\n"));
        assert!(out.contains("name=\"f.pdf.hash\""));
        let sha1 = hex::encode(hash(MessageDigest::sha1(), b"JVBERi0xLjQK\r\n").unwrap());
        assert!(out.contains(&sha1), "{out}");
        let m = mail_parser::MessageParser::new()
            .parse(out.as_bytes())
            .unwrap();
        assert_eq!(m.subject(), Some("fattura"));
        // A plain text message is kept as it is.
        let text = b"From: a@pec.x.it\r\nSubject: s\r\n\r\nciao\r\n";
        assert_eq!(breve_original(text), text.to_vec());
    }

    #[test]
    fn opaque_signed_originals_are_left_whole() {
        let opaque =
            b"Content-Type: application/pkcs7-mime; name=smime.p7m\r\n\r\nMIAGCSqGSIb3\r\n";
        assert_eq!(breve_original(opaque), opaque.to_vec());
    }
}
