//! Mailbox (folder) names as IMAP clients send them, checked before they reach the store.
//!
//! Names are kept in their wire form (modified UTF-7, RFC 3501 §5.1.3, which is ASCII), with
//! `/` as the hierarchy delimiter. A name is refused when it is empty, too long, too deep,
//! has an empty level (`a//b`, leading or trailing `/`), a `.` or `..` level, control
//! characters, or the LIST wildcards `*` and `%`. The store keys folders by the
//! authenticated mailbox, so a valid name can never reach another user's folders: there is
//! no path syntax to escape with, and `\0` (the key separator) is a control character.
//!
//! Special-use folders (RFC 6154) are created at first login: `Sent`, `Drafts`, `Trash`,
//! `Archive`.

use imap_codec::imap_types::mailbox::Mailbox;

/// The hierarchy delimiter.
pub const DELIMITER: char = '/';
/// Longest name, bytes.
pub const MAX_NAME_BYTES: usize = 255;
/// Deepest hierarchy.
pub const MAX_DEPTH: usize = 16;
/// Most folders a mailbox may have (CREATE answers NO past this).
pub const MAX_FOLDERS: usize = 1000;

/// The special-use folders and their attribute.
pub const SPECIAL_USE: &[(&str, &str)] = &[
    ("Sent", "\\Sent"),
    ("Drafts", "\\Drafts"),
    ("Trash", "\\Trash"),
    ("Archive", "\\Archive"),
    ("Junk", "\\Junk"),
];

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("mailbox name is empty")]
    Empty,
    #[error("mailbox name longer than {MAX_NAME_BYTES} bytes")]
    TooLong,
    #[error("mailbox name deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("mailbox name has an empty, '.' or '..' level")]
    BadLevel,
    #[error("mailbox name must be printable ASCII (modified UTF-7) without '*' or '%'")]
    BadChar,
}

/// The canonical name of a mailbox argument: `INBOX` in any case is `INBOX`.
pub fn parse(mailbox: &Mailbox<'_>) -> Result<String, NameError> {
    match mailbox {
        Mailbox::Inbox => Ok("INBOX".into()),
        Mailbox::Other(o) => check(o.as_ref()),
    }
}

/// Checks raw name bytes.
pub fn check(raw: &[u8]) -> Result<String, NameError> {
    if raw.is_empty() {
        return Err(NameError::Empty);
    }
    if raw.len() > MAX_NAME_BYTES {
        return Err(NameError::TooLong);
    }
    if raw
        .iter()
        .any(|&b| !(0x20..0x7f).contains(&b) || b == b'*' || b == b'%')
    {
        return Err(NameError::BadChar);
    }
    // Checked ASCII above: the conversion cannot fail.
    let s = String::from_utf8_lossy(raw).into_owned();
    let levels: Vec<&str> = s.split(DELIMITER).collect();
    if levels.len() > MAX_DEPTH {
        return Err(NameError::TooDeep);
    }
    if levels
        .iter()
        .any(|l| l.is_empty() || *l == "." || *l == "..")
    {
        return Err(NameError::BadLevel);
    }
    if s.eq_ignore_ascii_case("INBOX") {
        Ok("INBOX".into())
    } else {
        Ok(s)
    }
}

/// The special-use attribute of a folder, if any.
pub fn special_use(name: &str) -> Option<&'static str> {
    SPECIAL_USE
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, a)| *a)
}

/// Longest LIST/LSUB pattern (reference and pattern joined), bytes: a pattern longer
/// than twice the longest name cannot be useful, and the matcher's work grows with it.
pub const MAX_PATTERN_BYTES: usize = 2 * MAX_NAME_BYTES;

/// Whether `name` matches the LIST pattern (RFC 3501 §6.3.8: `*` matches anything, `%`
/// anything but the delimiter). Iterative, O(n·m) time, and two rows of `name.len() + 1`
/// booleans allocated once per call, whatever the pattern.
pub fn matches(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    // dp[j]: the pattern prefix read so far matches name prefix j.
    let mut dp = vec![false; n.len() + 1];
    let mut next = vec![false; n.len() + 1];
    dp[0] = true;
    for &pc in p {
        match pc {
            b'*' | b'%' => {
                let mut reach = false;
                for (j, slot) in next.iter_mut().enumerate() {
                    let crosses = j > 0 && pc == b'%' && n[j - 1] == DELIMITER as u8;
                    reach = (reach && !crosses) || dp[j];
                    *slot = reach;
                }
            }
            c => {
                next[0] = false;
                for j in 1..=n.len() {
                    next[j] = dp[j - 1] && n[j - 1] == c;
                }
            }
        }
        std::mem::swap(&mut dp, &mut next);
        if !dp.contains(&true) {
            return false;
        }
    }
    dp[n.len()]
}

/// Joins a LIST reference and pattern (RFC 3501 §6.3.8).
pub fn join(reference: &str, pattern: &str) -> String {
    if reference.is_empty() || pattern.starts_with(DELIMITER) {
        return pattern.to_string();
    }
    if reference.ends_with(DELIMITER) {
        format!("{reference}{pattern}")
    } else {
        format!("{reference}{DELIMITER}{pattern}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(check(b"inbox"), Ok("INBOX".into()));
        assert_eq!(check(b"Lavoro/2026"), Ok("Lavoro/2026".into()));
        for bad in [
            &b""[..],
            b"a//b",
            b"/a",
            b"a/",
            b"../x",
            b"a/./b",
            b"a\0b",
            b"a*",
            b"a%",
            b"\xc3\xa8",
        ] {
            assert!(check(bad).is_err(), "{bad:?}");
        }
        assert_eq!(check(&[b'a'; 300]), Err(NameError::TooLong));
    }

    #[test]
    fn patterns() {
        assert!(matches("*", "a/b"));
        assert!(matches("%", "a"));
        assert!(!matches("%", "a/b"));
        assert!(matches("a/%", "a/b"));
        assert!(matches("INBOX", "INBOX"));
        assert!(!matches("Sent", "Sent/x"));
        assert!(matches("S*t", "Sent"));
        assert!(matches("%/%", "a/b"));
        assert!(!matches("%/%", "a/b/c"));
        assert!(matches("*b*", "abc"));
        assert!(!matches("a", "ab"));
        assert!(!matches("ab", "a"));
        assert!(matches("", ""));
        // A long pattern of wildcards stays cheap and correct.
        let p = "%*".repeat(MAX_PATTERN_BYTES / 2);
        assert!(matches(&p, "a"));
        assert!(matches(&p, "a/b"));
        assert!(!matches(&format!("{p}x"), "a/b"));
    }
}
