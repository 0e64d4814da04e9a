//! Writing IMAP responses (RFC 3501 §4 data formats, §9 grammar).
//!
//! Commands are parsed by imap-codec; responses are written here by hand because most of
//! them carry data computed from stored messages (ENVELOPE, BODYSTRUCTURE, sections) and a
//! writer of strings is shorter and cheaper than building imap-types values for them. The
//! one rule that matters for safety: any value that came from a message or a client is
//! written through [`string`], which picks a quoted string only when that is lossless and
//! a literal otherwise, so no stored byte can break the response framing.

use jiff::Timestamp;

/// A response under construction.
#[derive(Debug, Default, Clone)]
pub struct Out(pub Vec<u8>);

impl Out {
    pub fn new() -> Self {
        Self(Vec::with_capacity(256))
    }
    pub fn raw(&mut self, s: &str) -> &mut Self {
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
    /// A string: quoted when safe, literal otherwise.
    pub fn string(&mut self, b: &[u8]) -> &mut Self {
        string(&mut self.0, b);
        self
    }
    pub fn nstring(&mut self, b: Option<&[u8]>) -> &mut Self {
        match b {
            Some(b) => self.string(b),
            None => self.raw("NIL"),
        }
    }
    /// A literal, always (message bytes).
    pub fn literal(&mut self, b: &[u8]) -> &mut Self {
        self.0
            .extend_from_slice(format!("{{{}}}\r\n", b.len()).as_bytes());
        self.0.extend_from_slice(b);
        self
    }
    pub fn crlf(&mut self) -> &mut Self {
        self.0.extend_from_slice(b"\r\n");
        self
    }
}

/// Appends `b` as a quoted string or, when it holds CR, LF, NUL, 8-bit bytes or is long,
/// as a literal.
pub fn string(out: &mut Vec<u8>, b: &[u8]) {
    let quotable = b.len() <= 1024
        && b.iter()
            .all(|&c| c != b'\r' && c != b'\n' && c != 0 && c < 0x80);
    if quotable {
        out.push(b'"');
        for &c in b {
            if c == b'"' || c == b'\\' {
                out.push(b'\\');
            }
            out.push(c);
        }
        out.push(b'"');
    } else {
        out.extend_from_slice(format!("{{{}}}\r\n", b.len()).as_bytes());
        out.extend_from_slice(b);
    }
}

/// A tagged status line.
pub fn tagged(tag: &str, status: &str, text: &str) -> Vec<u8> {
    format!("{tag} {status} {}\r\n", clean(text)).into_bytes()
}

/// An untagged line (`* ...`).
pub fn untagged(text: &str) -> Vec<u8> {
    format!("* {}\r\n", clean(text)).into_bytes()
}

/// Human-readable text in a status response: one line, no control characters.
pub fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// `date-time` (RFC 3501 §9): `"dd-Mon-yyyy hh:mm:ss +zzzz"`, in UTC.
pub fn date_time(ts: Timestamp) -> String {
    let z = ts.to_zoned(jiff::tz::TimeZone::UTC);
    format!("\"{}\"", z.strftime("%d-%b-%Y %H:%M:%S +0000"))
}

/// The flags of a message as an IMAP list.
pub fn flag_list(flags: &[String]) -> String {
    let mut s = String::from("(");
    for (i, f) in flags.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(f);
    }
    s.push(')');
    s
}

/// A sequence set in compact form (`1:3,7`) from sorted numbers, for COPYUID.
pub fn compact_set(nums: &[u32]) -> String {
    let mut s = String::new();
    let mut i = 0;
    while i < nums.len() {
        let start = nums[i];
        let mut end = start;
        while i + 1 < nums.len() && nums[i + 1] == end.wrapping_add(1) {
            i += 1;
            end = nums[i];
        }
        if !s.is_empty() {
            s.push(',');
        }
        if start == end {
            s.push_str(&start.to_string())
        } else {
            s.push_str(&format!("{start}:{end}"))
        }
        i += 1;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings() {
        let mut v = Vec::new();
        string(&mut v, b"a \"b\" \\");
        assert_eq!(v, b"\"a \\\"b\\\" \\\\\"");
        let mut v = Vec::new();
        string(&mut v, b"x\r\ny");
        assert_eq!(v, b"{4}\r\nx\r\ny");
        assert_eq!(compact_set(&[1, 2, 3, 7, 9, 10]), "1:3,7,9:10");
        assert_eq!(
            date_time(Timestamp::from_second(0).unwrap_or(Timestamp::UNIX_EPOCH)),
            "\"01-Jan-1970 00:00:00 +0000\""
        );
    }
}
