//! The MIME tree of a stored message as IMAP sees it (RFC 3501 §6.4.5 sections, §7.4.2
//! BODYSTRUCTURE and ENVELOPE), built over the original bytes so every section is a byte
//! range of the stored message: a PEC envelope's `postacert.eml`, `daticert.xml` and
//! `smime.p7s` come out exactly as stored.
//!
//! Untrusted input: the stored message (it came from the network). The walk is bounded by
//! [`MAX_DEPTH`] and [`MAX_PARTS`]; a malformed part becomes a leaf, never an error.
//! Address parsing for ENVELOPE uses mail-parser.

use base64::Engine;
use mail_parser::{Address, MessageParser};

use super::wire::Out;

/// Deepest nesting of multiparts and embedded messages walked.
pub const MAX_DEPTH: usize = 32;
/// Most parts walked in one message.
pub const MAX_PARTS: usize = 2000;

/// One MIME entity: `start..body` is its header (blank line included), `body..end` its body.
#[derive(Debug, Clone, Default)]
pub struct Part {
    pub start: usize,
    pub body: usize,
    pub end: usize,
    pub ctype: String,
    pub subtype: String,
    pub params: Vec<(String, String)>,
    /// Multipart: the parts. message/rfc822: one child, the embedded message.
    pub children: Vec<Part>,
}

/// Header fields of an entity: `(lower-case name, unfolded value, raw field bytes range)`.
pub fn fields(
    msg: &[u8],
    start: usize,
    end: usize,
) -> Vec<(String, String, std::ops::Range<usize>)> {
    let mut out: Vec<(String, String, std::ops::Range<usize>)> = Vec::new();
    let mut i = start;
    while i < end {
        let line_end = msg[i..end]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(end, |p| i + p + 1);
        let line = &msg[i..line_end];
        let trimmed = trim_eol(line);
        if trimmed.is_empty() {
            break;
        }
        if (line[0] == b' ' || line[0] == b'\t') && !out.is_empty() {
            if let Some(last) = out.last_mut() {
                last.1.push(' ');
                last.1.push_str(String::from_utf8_lossy(trimmed).trim());
                last.2.end = line_end;
            }
        } else if let Some(colon) = trimmed.iter().position(|&b| b == b':') {
            let name = String::from_utf8_lossy(&trimmed[..colon])
                .trim()
                .to_ascii_lowercase();
            let value = String::from_utf8_lossy(&trimmed[colon + 1..])
                .trim()
                .to_string();
            out.push((name, value, i..line_end));
        }
        i = line_end;
    }
    out
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let mut l = line;
    while let [rest @ .., b'\r' | b'\n'] = l {
        l = rest;
    }
    l
}

/// Where the body starts: after the first empty line (or at `end` if there is none).
fn body_start(msg: &[u8], start: usize, end: usize) -> usize {
    let mut i = start;
    while i < end {
        let line_end = msg[i..end]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(end, |p| i + p + 1);
        if trim_eol(&msg[i..line_end]).is_empty() {
            return line_end;
        }
        i = line_end;
    }
    end
}

/// `type/subtype; a=b; c="d"` → lower-case type and subtype, parameters.
fn content_type(v: &str) -> (String, String, Vec<(String, String)>) {
    let mut it = split_params(v);
    let head = it.remove(0);
    let (t, s) = head.split_once('/').unwrap_or((head.as_str(), ""));
    let params = it
        .into_iter()
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            Some((
                k.trim().to_ascii_lowercase(),
                v.trim().trim_matches('"').to_string(),
            ))
        })
        .collect();
    (
        t.trim().to_ascii_lowercase(),
        s.trim().to_ascii_lowercase(),
        params,
    )
}

/// Splits on `;` outside quoted strings; always returns at least one element.
fn split_params(v: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted, mut esc) = (Vec::new(), String::new(), false, false);
    for c in v.chars() {
        match c {
            _ if esc => {
                cur.push(c);
                esc = false;
            }
            '\\' if quoted => esc = true,
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

/// Parses the entity in `start..end`.
pub fn parse(msg: &[u8]) -> Part {
    let mut budget = MAX_PARTS;
    entity(msg, 0, msg.len(), 0, ("text", "plain"), &mut budget)
}

fn entity(
    msg: &[u8],
    start: usize,
    end: usize,
    depth: usize,
    default: (&str, &str),
    budget: &mut usize,
) -> Part {
    *budget = budget.saturating_sub(1);
    let body = body_start(msg, start, end);
    let f = fields(msg, start, body);
    let (ctype, subtype, params) = match f.iter().find(|(n, _, _)| n == "content-type") {
        Some((_, v, _)) => content_type(v),
        None => (
            default.0.into(),
            default.1.into(),
            vec![("charset".into(), "us-ascii".into())],
        ),
    };
    let mut p = Part {
        start,
        body,
        end,
        ctype,
        subtype,
        params,
        children: Vec::new(),
    };
    if depth >= MAX_DEPTH || *budget == 0 {
        return p;
    }
    if p.ctype == "multipart" {
        if let Some(b) = p.param("boundary") {
            let child_default = if p.subtype == "digest" {
                ("message", "rfc822")
            } else {
                ("text", "plain")
            };
            for (s, e) in split_multipart(msg, body, end, b.as_bytes()) {
                if *budget == 0 {
                    break;
                }
                p.children
                    .push(entity(msg, s, e, depth + 1, child_default, budget));
            }
        }
    } else if p.ctype == "message" && p.subtype == "rfc822" {
        p.children
            .push(entity(msg, body, end, depth + 1, ("text", "plain"), budget));
    }
    p
}

/// The byte ranges of the parts of a multipart body (RFC 2046 §5.1.1): a part ends at the
/// CRLF that precedes the next delimiter line.
fn split_multipart(msg: &[u8], start: usize, end: usize, boundary: &[u8]) -> Vec<(usize, usize)> {
    let mut delim = b"--".to_vec();
    delim.extend_from_slice(boundary);
    let mut out = Vec::new();
    let mut open: Option<usize> = None;
    let mut i = start;
    while i < end {
        let line_end = msg[i..end]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(end, |p| i + p + 1);
        let line = trim_eol(&msg[i..line_end]);
        if line.starts_with(&delim) {
            let rest = &line[delim.len()..];
            let closing = rest.starts_with(b"--");
            if closing || rest.iter().all(|b| *b == b' ' || *b == b'\t') {
                if let Some(s) = open.take() {
                    // The line break before the delimiter belongs to the delimiter.
                    let mut e = i;
                    if e > s && msg[e - 1] == b'\n' {
                        e -= 1;
                        if e > s && msg[e - 1] == b'\r' {
                            e -= 1;
                        }
                    }
                    out.push((s, e.max(s)));
                }
                if closing {
                    return out;
                }
                open = Some(line_end);
            }
        }
        i = line_end;
    }
    if let Some(s) = open {
        out.push((s, end));
    }
    out
}

impl Part {
    pub fn param(&self, name: &str) -> Option<&String> {
        self.params.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    pub fn is_message(&self) -> bool {
        self.ctype == "message" && self.subtype == "rfc822" && !self.children.is_empty()
    }

    /// The numbered sub-parts (RFC 3501 §6.4.5: a non-multipart message has part 1, its body).
    fn numbered(&self) -> Vec<&Part> {
        let m = if self.is_message() {
            &self.children[0]
        } else {
            self
        };
        if m.ctype == "multipart" {
            m.children.iter().collect()
        } else {
            vec![m]
        }
    }

    /// The part at `path` (1-based numbers), from the top-level message.
    pub fn resolve(&self, path: &[u32]) -> Option<&Part> {
        let mut cur = self;
        for &n in path {
            let idx = (n as usize).checked_sub(1)?;
            cur = *cur.numbered().get(idx)?;
        }
        Some(cur)
    }

    /// The message whose HEADER/TEXT a section names: the top level, or an embedded one.
    pub fn message_at(&self, path: &[u32]) -> Option<&Part> {
        if path.is_empty() {
            return Some(self);
        }
        let p = self.resolve(path)?;
        if p.is_message() {
            p.children.first()
        } else {
            None
        }
    }

    fn field(&self, msg: &[u8], name: &str) -> Option<String> {
        fields(msg, self.start, self.body)
            .into_iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, v, _)| v)
    }

    /// BODYSTRUCTURE (`ext` true) or BODY.
    pub fn write_structure(&self, msg: &[u8], out: &mut Out, ext: bool) {
        out.raw("(");
        if self.ctype == "multipart" && !self.children.is_empty() {
            for c in &self.children {
                c.write_structure(msg, out, ext);
            }
            out.raw(" ")
                .string(self.subtype.to_ascii_uppercase().as_bytes());
            if ext {
                out.raw(" ");
                self.write_params(out);
                out.raw(" NIL NIL NIL");
            }
            out.raw(")");
            return;
        }
        let (t, s) = if self.ctype == "multipart" {
            ("text", "plain")
        } else {
            (self.ctype.as_str(), self.subtype.as_str())
        };
        out.string(t.to_ascii_uppercase().as_bytes())
            .raw(" ")
            .string(s.to_ascii_uppercase().as_bytes())
            .raw(" ");
        self.write_params(out);
        out.raw(" ");
        let id = self.field(msg, "content-id");
        out.nstring(id.as_deref().map(str::as_bytes)).raw(" ");
        let desc = self.field(msg, "content-description");
        out.nstring(desc.as_deref().map(str::as_bytes)).raw(" ");
        let enc = self
            .field(msg, "content-transfer-encoding")
            .unwrap_or_else(|| "7BIT".into());
        out.string(enc.to_ascii_uppercase().as_bytes());
        let body = &msg[self.body..self.end];
        out.raw(&format!(" {}", body.len()));
        if self.is_message() {
            let m = &self.children[0];
            out.raw(" ");
            write_envelope(msg, m, out);
            out.raw(" ");
            m.write_structure(msg, out, ext);
        }
        if self.ctype == "text" || self.is_message() {
            out.raw(&format!(
                " {}",
                body.iter().filter(|&&b| b == b'\n').count()
            ));
        }
        if ext {
            out.raw(" NIL ");
            match self.field(msg, "content-disposition") {
                Some(d) => {
                    let mut it = split_params(&d).into_iter();
                    let kind = it.next().unwrap_or_default().trim().to_string();
                    let params: Vec<(String, String)> = it
                        .filter_map(|p| {
                            let (k, v) = p.split_once('=')?;
                            Some((
                                k.trim().to_ascii_lowercase(),
                                v.trim().trim_matches('"').to_string(),
                            ))
                        })
                        .collect();
                    out.raw("(")
                        .string(kind.to_ascii_uppercase().as_bytes())
                        .raw(" ");
                    write_param_list(&params, out);
                    out.raw(")");
                }
                None => {
                    out.raw("NIL");
                }
            }
            out.raw(" NIL NIL");
        }
        out.raw(")");
    }

    fn write_params(&self, out: &mut Out) {
        write_param_list(&self.params, out);
    }
}

fn write_param_list(params: &[(String, String)], out: &mut Out) {
    if params.is_empty() {
        out.raw("NIL");
        return;
    }
    out.raw("(");
    for (i, (k, v)) in params.iter().enumerate() {
        if i > 0 {
            out.raw(" ");
        }
        out.string(k.to_ascii_uppercase().as_bytes())
            .raw(" ")
            .string(v.as_bytes());
    }
    out.raw(")");
}

/// ENVELOPE of the message `m` (RFC 3501 §7.4.2).
pub fn write_envelope(msg: &[u8], m: &Part, out: &mut Out) {
    let hdr = &msg[m.start..m.body];
    let f = fields(msg, m.start, m.body);
    let get = |n: &str| f.iter().find(|(k, _, _)| k == n).map(|(_, v, _)| v.clone());
    let parsed = MessageParser::new().parse_headers(hdr);
    let addrs = |name: &str| -> Option<Vec<(Option<String>, String)>> {
        let p = parsed.as_ref()?;
        let v = p.header(name)?;
        let list: Vec<(Option<String>, String)> = match v.as_address()? {
            Address::List(l) => l
                .iter()
                .filter_map(|a| {
                    Some((
                        a.name.as_ref().map(|n| n.to_string()),
                        a.address.as_ref()?.to_string(),
                    ))
                })
                .collect(),
            Address::Group(g) => g
                .iter()
                .flat_map(|g| g.addresses.iter())
                .filter_map(|a| {
                    Some((
                        a.name.as_ref().map(|n| n.to_string()),
                        a.address.as_ref()?.to_string(),
                    ))
                })
                .collect(),
        };
        if list.is_empty() { None } else { Some(list) }
    };
    out.raw("(");
    out.nstring(get("date").as_deref().map(str::as_bytes))
        .raw(" ");
    out.nstring(get("subject").as_deref().map(str::as_bytes))
        .raw(" ");
    let from = addrs("From");
    let sender = addrs("Sender").or_else(|| from.clone());
    let reply_to = addrs("Reply-To").or_else(|| from.clone());
    for (i, list) in [
        from,
        sender,
        reply_to,
        addrs("To"),
        addrs("Cc"),
        addrs("Bcc"),
    ]
    .into_iter()
    .enumerate()
    {
        if i > 0 {
            out.raw(" ");
        }
        write_addresses(list, out);
    }
    out.raw(" ");
    out.nstring(get("in-reply-to").as_deref().map(str::as_bytes))
        .raw(" ");
    out.nstring(get("message-id").as_deref().map(str::as_bytes));
    out.raw(")");
}

fn write_addresses(list: Option<Vec<(Option<String>, String)>>, out: &mut Out) {
    let Some(list) = list else {
        out.raw("NIL");
        return;
    };
    out.raw("(");
    for (name, addr) in list {
        let (mailbox, host) = addr.rsplit_once('@').unwrap_or((addr.as_str(), ""));
        out.raw("(");
        match name {
            Some(n) if n.is_ascii() => out.string(n.as_bytes()),
            // Decoded by the parser: encode again (RFC 2047) to stay 7-bit.
            Some(n) => out.string(
                format!(
                    "=?utf-8?b?{}?=",
                    base64::engine::general_purpose::STANDARD.encode(n)
                )
                .as_bytes(),
            ),
            None => out.raw("NIL"),
        };
        out.raw(" NIL ")
            .string(mailbox.as_bytes())
            .raw(" ")
            .string(host.as_bytes())
            .raw(")");
    }
    out.raw(")");
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"From: A <a@x.it>\r\nSubject: hi\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\npre\r\n--b1\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b1\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\ninner body\r\n--b1--\r\n";

    #[test]
    fn tree_and_sections() {
        let p = parse(MSG);
        assert_eq!(p.children.len(), 2);
        let one = p.resolve(&[1]).map(|q| &MSG[q.body..q.end]);
        assert_eq!(one, Some(&b"hello"[..]));
        let two = p.resolve(&[2]).map(|q| &MSG[q.body..q.end]);
        assert_eq!(two, Some(&b"Subject: inner\r\n\r\ninner body"[..]));
        let inner = p.message_at(&[2]).map(|q| &MSG[q.body..q.end]);
        assert_eq!(inner, Some(&b"inner body"[..]));
        assert!(p.resolve(&[3]).is_none());
        let mut o = Out::new();
        p.write_structure(MSG, &mut o, true);
        let s = String::from_utf8_lossy(&o.0).into_owned();
        assert!(
            s.starts_with("((\"TEXT\" \"PLAIN\" NIL NIL NIL \"7BIT\" 5 0"),
            "{s}"
        );
        assert!(s.contains("\"MIXED\" (\"BOUNDARY\" \"b1\")"), "{s}");
        let mut e = Out::new();
        write_envelope(MSG, &p, &mut e);
        assert!(String::from_utf8_lossy(&e.0).contains("((\"A\" NIL \"a\" \"x.it\"))"));
    }

    #[test]
    fn hostile_inputs_do_not_panic() {
        for m in [
            &b""[..],
            b"\r\n",
            b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x",
            b"Content-Type: message/rfc822\r\n\r\n",
            b":\r\n\r\n",
        ] {
            let p = parse(m);
            let mut o = Out::new();
            p.write_structure(m, &mut o, true);
            write_envelope(m, &p, &mut o);
        }
        let mut deep = Vec::new();
        for _ in 0..100 {
            deep.extend_from_slice(b"Content-Type: message/rfc822\r\n\r\n");
        }
        let p = parse(&deep);
        let mut o = Out::new();
        p.write_structure(&deep, &mut o, true);
    }
}
