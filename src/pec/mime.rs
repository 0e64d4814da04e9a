//! Byte-exact MIME helpers shared by the builders, the signature code and the classifier.
//!
//! mail-parser does the general parsing (decoding, RFC 2047, charsets); what lives here is
//! the small set of operations that must work on the *raw bytes*, because a signature
//! covers exact bytes: line-end canonicalisation, header/body split, multipart splitting
//! by boundary (RFC 2046 §5.1.1), unfolded header lookup and `Content-Type` parameters.
//!
//! Untrusted input: all of it. Every function is total (no panics, no unbounded recursion).

use std::borrow::Cow;

use base64::Engine;

/// Converts bare LF line ends to CRLF, leaving existing CRLF alone. Borrows when the
/// input is already canonical.
pub fn to_crlf(input: &[u8]) -> Cow<'_, [u8]> {
    // The LFs without their CR, found with `memchr` (most entities have none: borrowed).
    let bare = |i: &usize| *i == 0 || input[i - 1] != b'\r';
    let mut lfs = memchr::memchr_iter(b'\n', input).filter(bare).peekable();
    if lfs.peek().is_none() {
        return Cow::Borrowed(input);
    }
    let mut out = Vec::with_capacity(input.len() + input.len() / 40);
    let mut from = 0;
    for i in lfs {
        out.extend_from_slice(&input[from..i]);
        out.extend_from_slice(b"\r\n");
        from = i + 1;
    }
    out.extend_from_slice(&input[from..]);
    Cow::Owned(out)
}

/// Splits an entity at the first empty line. The header block keeps its last line end;
/// the body starts after the empty line. Without an empty line the whole input is header.
pub fn split_header_body(entity: &[u8]) -> (&[u8], &[u8]) {
    if entity.starts_with(b"\r\n") {
        return (&entity[..0], &entity[2..]);
    }
    if entity.starts_with(b"\n") {
        return (&entity[..0], &entity[1..]);
    }
    let mut i = 0;
    while i < entity.len() {
        if entity[i] == b'\n' {
            let rest = &entity[i + 1..];
            if rest.starts_with(b"\r\n") {
                return (&entity[..i + 1], &rest[2..]);
            }
            if rest.starts_with(b"\n") {
                return (&entity[..i + 1], &rest[1..]);
            }
        }
        i += 1;
    }
    (entity, &entity[entity.len()..])
}

/// Iterates over the (name, raw unfolded value) pairs of a header block.
pub fn headers(block: &[u8]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in block.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            if let Some(last) = out.last_mut() {
                last.1.push(' ');
                last.1.push_str(String::from_utf8_lossy(line).trim());
            }
            continue;
        }
        if let Some(colon) = line.iter().position(|&b| b == b':') {
            let name = String::from_utf8_lossy(&line[..colon]).trim().to_string();
            let value = String::from_utf8_lossy(&line[colon + 1..])
                .trim()
                .to_string();
            out.push((name, value));
        }
    }
    out
}

/// The unfolded value of the first header with this name (case-insensitive).
pub fn header_value(block: &[u8], name: &str) -> Option<String> {
    headers(block)
        .into_iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

/// A parsed `Content-Type` value: lower-case type and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentType {
    pub mime_type: String,
    pub params: Vec<(String, String)>,
}

impl ContentType {
    /// Parses `type/subtype; a=b; c="d; e"`. Tolerant: malformed parameters are skipped.
    pub fn parse(value: &str) -> Self {
        let mut parts = split_params(value).into_iter();
        let mime_type = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let params = parts
            .filter_map(|p| {
                let (k, v) = p.split_once('=')?;
                let v = v.trim();
                let v = v
                    .strip_prefix('"')
                    .and_then(|x| x.strip_suffix('"'))
                    .map(|x| x.replace("\\\"", "\"").replace("\\\\", "\\"))
                    .unwrap_or_else(|| v.to_string());
                Some((k.trim().to_ascii_lowercase(), v))
            })
            .collect();
        Self { mime_type, params }
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Splits on `;` outside double quotes.
fn split_params(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut escaped = false;
    for c in value.chars() {
        if escaped {
            cur.push(c);
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => {
                cur.push(c);
                escaped = true;
            }
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ';' if !quoted => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// The body parts of a multipart body, as raw slices (headers included), plus whether the
/// close delimiter was seen.
#[derive(Debug)]
pub struct Multipart<'a> {
    pub parts: Vec<&'a [u8]>,
    pub closed: bool,
}

/// Splits a multipart body by its boundary (RFC 2046 §5.1.1): a delimiter is a line that
/// starts with `--boundary`; the line end before it belongs to the delimiter, not to the
/// part. A missing close delimiter ends the last part at the end of input (`closed` false).
pub fn split_multipart<'a>(body: &'a [u8], boundary: &[u8]) -> Multipart<'a> {
    let mut dash = Vec::with_capacity(boundary.len() + 2);
    dash.extend_from_slice(b"--");
    dash.extend_from_slice(boundary);

    // Positions of delimiter lines: (start of the line end before it, start of next line,
    // is-close).
    let mut delims: Vec<(usize, usize, bool)> = Vec::new();
    let mut line_start = 0usize;
    while line_start <= body.len() {
        let line_end = body[line_start..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|p| line_start + p)
            .unwrap_or(body.len());
        let line = &body[line_start..line_end];
        if line.starts_with(&dash) {
            let rest = &line[dash.len()..];
            let rest_trim = trim_end_ws(rest);
            let is_close = rest_trim.starts_with(b"--");
            if rest_trim.is_empty() || is_close {
                let before = if line_start >= 2 && &body[line_start - 2..line_start] == b"\r\n" {
                    line_start - 2
                } else if line_start >= 1 && body[line_start - 1] == b'\n' {
                    line_start - 1
                } else {
                    line_start
                };
                let next = (line_end + 1).min(body.len());
                delims.push((before, next, is_close));
                if is_close {
                    break;
                }
            }
        }
        if line_end >= body.len() {
            break;
        }
        line_start = line_end + 1;
    }
    let mut parts = Vec::new();
    let mut closed = false;
    for (i, &(_, next, is_close)) in delims.iter().enumerate() {
        if is_close {
            closed = true;
            break;
        }
        let end = delims.get(i + 1).map(|d| d.0).unwrap_or(body.len());
        if end >= next {
            parts.push(&body[next..end]);
        } else {
            parts.push(&body[next..next]);
        }
    }
    Multipart { parts, closed }
}

fn trim_end_ws(s: &[u8]) -> &[u8] {
    let mut end = s.len();
    while end > 0 && matches!(s[end - 1], b' ' | b'\t' | b'\r') {
        end -= 1;
    }
    &s[..end]
}

/// A fresh MIME boundary: random, with a prefix telling which layer it belongs to.
pub fn boundary(layer: &str) -> String {
    let mut buf = [0u8; 12];
    // openssl's CSPRNG cannot fail once initialised; fall back to the time if it does.
    if openssl::rand::rand_bytes(&mut buf).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        buf.copy_from_slice(&t.to_le_bytes()[..12]);
    }
    format!("----=_pecd_{layer}_{}", hex::encode(buf))
}

/// Appends base64 in lines of 76 characters, CRLF after each line.
pub fn write_base64_lines(data: &[u8], out: &mut Vec<u8>) {
    let encoded = base64::engine::general_purpose::STANDARD.encode(data);
    for chunk in encoded.as_bytes().chunks(76) {
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
}

/// Encodes text as ISO-8859-1 (the charset the rules require for the human-readable part,
/// digest §2 item 6). Characters outside Latin-1 become `?`.
pub fn to_latin1(text: &str) -> Vec<u8> {
    text.chars()
        .map(|c| {
            if (c as u32) < 256 {
                c as u32 as u8
            } else {
                b'?'
            }
        })
        .collect()
}

/// Replaces (or inserts) header `name` in a header block, returning the new block. Used to
/// swap the client's `Message-ID` for the PEC identifier without touching anything else.
/// Every occurrence of `name` is removed; the new line goes where the first one was (or at
/// the top when there was none).
pub fn replace_header(block: &[u8], name: &str, new_line: Option<&str>) -> Vec<u8> {
    let mut out = Vec::with_capacity(block.len() + 128);
    let mut inserted = new_line.is_none();
    let mut skipping = false;
    for line in block.split_inclusive(|&b| b == b'\n') {
        let is_cont = line.first().is_some_and(|&b| b == b' ' || b == b'\t');
        if is_cont {
            if !skipping {
                out.extend_from_slice(line);
            }
            continue;
        }
        let matches = line
            .iter()
            .position(|&b| b == b':')
            .is_some_and(|c| line[..c].trim_ascii().eq_ignore_ascii_case(name.as_bytes()));
        skipping = matches;
        if matches {
            if !inserted {
                if let Some(l) = new_line {
                    out.extend_from_slice(l.as_bytes());
                    out.extend_from_slice(b"\r\n");
                }
                inserted = true;
            }
            continue;
        }
        out.extend_from_slice(line);
    }
    if !inserted && let Some(l) = new_line {
        let mut top = Vec::with_capacity(out.len() + l.len() + 2);
        top.extend_from_slice(l.as_bytes());
        top.extend_from_slice(b"\r\n");
        top.extend_from_slice(&out);
        return top;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf_canonicalisation_borrows_when_clean() {
        assert!(matches!(to_crlf(b"a\r\nb\r\n"), Cow::Borrowed(_)));
        assert_eq!(&*to_crlf(b"a\nb\r\nc\n"), b"a\r\nb\r\nc\r\n");
        assert_eq!(&*to_crlf(b"\n\r\n\r\r\n\n"), b"\r\n\r\n\r\r\n\r\n");
    }

    /// The conversion a run at a time gives what a byte at a time gives (the first
    /// version's loop), and borrows exactly when nothing changes.
    #[test]
    fn crlf_canonicalisation_matches_the_bytewise_conversion() {
        let alphabet = [b'\r', b'\n', b'a', b'.'];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for n in 0..500 {
            let input: Vec<u8> = (0..n % 47)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    alphabet[(x % 4) as usize]
                })
                .collect();
            let mut expected = Vec::new();
            let mut prev = 0u8;
            for &b in &input {
                if b == b'\n' && prev != b'\r' {
                    expected.push(b'\r');
                }
                expected.push(b);
                prev = b;
            }
            let got = to_crlf(&input);
            assert_eq!(&*got, &expected[..], "{input:?}");
            assert_eq!(
                matches!(got, Cow::Borrowed(_)),
                expected == input,
                "{input:?}"
            );
        }
    }

    #[test]
    fn header_body_split() {
        let (h, b) = split_header_body(b"A: 1\r\nB: 2\r\n\r\nbody");
        assert_eq!(h, b"A: 1\r\nB: 2\r\n");
        assert_eq!(b, b"body");
        let (h, b) = split_header_body(b"A: 1\nB: 2");
        assert_eq!(h, b"A: 1\nB: 2");
        assert!(b.is_empty());
    }

    #[test]
    fn folded_headers_and_params() {
        let block = b"Content-Type: multipart/signed; protocol=\"application/x-pkcs7-signature\";\r\n\tmicalg=sha1; boundary=\"--a;b\"\r\n";
        let ct = ContentType::parse(&header_value(block, "content-type").unwrap());
        assert_eq!(ct.mime_type, "multipart/signed");
        assert_eq!(ct.param("boundary"), Some("--a;b"));
        assert_eq!(ct.param("micalg"), Some("sha1"));
    }

    #[test]
    fn multipart_split_excludes_delimiter_line_ends() {
        let body = b"preamble\r\n--X\r\npart one\r\n--X\r\npart two\r\n\r\n--X--\r\nepilogue";
        let m = split_multipart(body, b"X");
        assert!(m.closed);
        assert_eq!(m.parts, vec![&b"part one"[..], &b"part two\r\n"[..]]);
        let open = split_multipart(b"--X\r\nonly", b"X");
        assert!(!open.closed);
        assert_eq!(open.parts, vec![&b"only"[..]]);
        assert!(split_multipart(b"no delimiters", b"X").parts.is_empty());
    }

    #[test]
    fn replace_header_swaps_all_occurrences_once() {
        let block = b"From: a\r\nMessage-ID: <x>\r\n\tcont\r\nSubject: s\r\nmessage-id: <y>\r\n";
        let out = replace_header(block, "Message-ID", Some("Message-ID: <pec@id>"));
        assert_eq!(out, b"From: a\r\nMessage-ID: <pec@id>\r\nSubject: s\r\n");
        let out = replace_header(b"From: a\r\n", "Message-ID", Some("Message-ID: <n>"));
        assert_eq!(out, b"Message-ID: <n>\r\nFrom: a\r\n");
    }
}
