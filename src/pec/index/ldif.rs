//! LDIF (RFC 2849), the generic layer of the provider index: content records in, lines
//! named in every error; and the small writer the index's [`super::ProviderRecord::to_ldif`]
//! uses. Knows nothing of the `provider` object class.
//!
//! Tolerates what real directories emit: `version: 1`, comments (also folded), continuation
//! lines, base64 values (`attr:: `), attribute options (`;binary`), OID attribute names of the
//! index schema, CRLF or LF, a UTF-8 BOM, `changetype: add`, whitespace-only separators.
//! Refuses `:<` URL values (never fetched) and other change records.

use base64::Engine;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};

use super::{Errors, IndexError, Loc, MAX_LDIF_BYTES, MAX_LDIF_ENTRIES, MAX_VALUE_BYTES};

/// Column at which the writer folds lines (RFC 2849 note 2 recommends 76).
pub const FOLD_COLUMN: usize = 76;

/// The index attributes with their OIDs (digest §8.1), so an export that names attributes
/// by OID reads the same.
const ATTRS: &[(&str, &str)] = &[
    ("providercertificatehash", "1.3.6.1.4.1.16572.2.2.1"),
    ("providercertificate", "1.3.6.1.4.1.16572.2.2.2"),
    ("providername", "1.3.6.1.4.1.16572.2.2.3"),
    ("mailreceipt", "1.3.6.1.4.1.16572.2.2.4"),
    ("manageddomains", "1.3.6.1.4.1.16572.2.2.5"),
    ("ldiflocationurl", "1.3.6.1.4.1.16572.2.2.6"),
    ("providerunit", "1.3.6.1.4.1.16572.2.2.7"),
    ("objectclass", "2.5.4.0"),
    ("description", "2.5.4.13"),
];

/// Splits a lower-case attribute description (`type;option;...`) into the attribute's
/// name (an OID is mapped to the index attribute it names) and its options. Shared by the
/// LDIF reader and the LDAP search results.
pub(crate) fn attribute_description(desc: &str) -> (String, Vec<String>) {
    let mut parts = desc.split(';');
    let ty = parts.next().unwrap_or_default();
    let name = ATTRS
        .iter()
        .find(|(_, oid)| *oid == ty)
        .map_or(ty, |(n, _)| n)
        .to_string();
    let options = parts
        .filter(|o| !o.is_empty())
        .map(str::to_string)
        .collect();
    (name, options)
}

/// Base64 as directories write it: padding optional, stray trailing bits tolerated.
const LENIENT_B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// The bounds of one LDIF parse (design principle 5).
#[derive(Debug, Clone, Copy)]
pub struct LdifLimits {
    pub max_bytes: usize,
    pub max_entries: usize,
    pub max_value_bytes: usize,
}

impl Default for LdifLimits {
    fn default() -> Self {
        Self {
            max_bytes: MAX_LDIF_BYTES,
            max_entries: MAX_LDIF_ENTRIES,
            max_value_bytes: MAX_VALUE_BYTES,
        }
    }
}

/// One attribute value of an LDIF entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LdifAttr {
    /// Line where the value starts.
    pub line: usize,
    /// The attribute type, lower-cased, OIDs of index attributes mapped to their names.
    pub name: String,
    /// Options (`binary` of `providerCertificate;binary`), lower-cased.
    pub options: Vec<String>,
    /// The value, base64-decoded when given with `::`.
    pub value: Vec<u8>,
}

/// One LDIF content record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LdifEntry {
    /// Line of the `dn:`.
    pub line: usize,
    pub dn: String,
    pub attrs: Vec<LdifAttr>,
}

impl LdifEntry {
    /// The values of attribute `name` (lower-case), with their lines.
    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a LdifAttr> + 'a {
        self.attrs.iter().filter(move |a| a.name == name)
    }
}

/// A logical line: physical lines joined by unfolding, with the first one's number and
/// where each continuation starts (byte offset in `bytes`, line number), so an error deep in
/// a folded base64 value names its physical line.
struct Logical {
    line: usize,
    bytes: Vec<u8>,
    breaks: Vec<(usize, usize)>,
}

impl Logical {
    fn line_at(&self, offset: usize) -> usize {
        self.breaks
            .iter()
            .take_while(|(o, _)| *o <= offset)
            .last()
            .map_or(self.line, |(_, l)| *l)
    }
}

/// Parses LDIF content records. Entries with errors are reported, not returned; the result
/// is `Ok` only when the whole input is clean.
pub fn parse_ldif(input: &[u8], limits: &LdifLimits) -> Result<Vec<LdifEntry>, IndexError> {
    let mut errors = Errors::default();
    let entries = parse_ldif_collect(input, limits, &mut errors)?;
    errors.into_result(entries)
}

/// The parse proper; fatal limit errors return `Err`, the rest go to `errors`.
pub(super) fn parse_ldif_collect(
    input: &[u8],
    limits: &LdifLimits,
    errors: &mut Errors,
) -> Result<Vec<LdifEntry>, IndexError> {
    if input.len() > limits.max_bytes {
        return Err(IndexError::TooLarge {
            limit: limits.max_bytes,
        });
    }
    let input = input.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(input);
    let mut out = Vec::new();
    let mut first = true;
    for group in unfold(input, limits, errors)? {
        if errors.full() {
            break;
        }
        let mut lines = group.as_slice();
        // RFC 2849: an optional `version: 1` opens the file, on its own or right above the
        // first dn.
        if first {
            first = false;
            if let Some(l) = lines.first()
                && l.bytes.len() >= 8
                && l.bytes[..8].eq_ignore_ascii_case(b"version:")
            {
                lines = &lines[1..];
            }
        }
        if lines.is_empty() {
            continue;
        }
        if let Some(entry) = parse_entry(lines, limits, errors) {
            out.push(entry);
        }
    }
    Ok(out)
}

/// Splits the input into entries (blank-line separated) of logical lines, dropping comments
/// and joining continuation lines (RFC 2849 notes 2 and 3). Folding happens on bytes, so a
/// fold inside a multi-byte UTF-8 character is harmless.
fn unfold(
    input: &[u8],
    limits: &LdifLimits,
    errors: &mut Errors,
) -> Result<Vec<Vec<Logical>>, IndexError> {
    let mut groups: Vec<Vec<Logical>> = Vec::new();
    let mut cur: Vec<Logical> = Vec::new();
    let mut in_comment = false;
    for (i, raw) in input.split(|b| *b == b'\n').enumerate() {
        let line = i + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        // Whitespace-only lines are separators: no writer folds into an empty continuation,
        // but hand-edited files do leave blanks with stray spaces between entries.
        let blank = raw.iter().all(u8::is_ascii_whitespace);
        if raw.first() == Some(&b' ') && !blank {
            if in_comment {
                continue;
            }
            match cur.last_mut() {
                Some(l) => {
                    l.breaks.push((l.bytes.len(), line));
                    l.bytes.extend_from_slice(&raw[1..]);
                }
                None => {
                    if !errors.push(IndexError::StrayContinuation {
                        loc: Loc(Some(line)),
                    }) {
                        break;
                    }
                }
            }
            continue;
        }
        in_comment = false;
        if blank {
            if !cur.is_empty() {
                groups.push(std::mem::take(&mut cur));
                if groups.len() > limits.max_entries {
                    return Err(IndexError::TooManyEntries {
                        loc: Loc(Some(line)),
                        limit: limits.max_entries,
                    });
                }
            }
            continue;
        }
        if raw[0] == b'#' {
            in_comment = true;
            continue;
        }
        cur.push(Logical {
            line,
            bytes: raw.to_vec(),
            breaks: Vec::new(),
        });
    }
    if !cur.is_empty() {
        groups.push(cur);
        if groups.len() > limits.max_entries {
            return Err(IndexError::TooManyEntries {
                loc: Loc(None),
                limit: limits.max_entries,
            });
        }
    }
    Ok(groups)
}

/// One entry; `None` (with its errors recorded) when any line is bad.
fn parse_entry(lines: &[Logical], limits: &LdifLimits, errors: &mut Errors) -> Option<LdifEntry> {
    let mut attrs = Vec::with_capacity(lines.len());
    let mut ok = true;
    for l in lines {
        match parse_attr(l, limits) {
            Ok(a) => attrs.push(a),
            Err(e) => {
                ok = false;
                if !errors.push(e) {
                    return None;
                }
            }
        }
    }
    if !ok {
        return None;
    }
    let first = attrs.first()?;
    let line = first.line;
    if first.name != "dn" {
        errors.push(IndexError::NoDn {
            loc: Loc(Some(line)),
        });
        return None;
    }
    let Ok(dn) = String::from_utf8(first.value.clone()) else {
        errors.push(IndexError::InvalidUtf8 {
            loc: Loc(Some(line)),
        });
        return None;
    };
    attrs.remove(0);
    if let Some(a) = attrs.iter().find(|a| a.name == "dn") {
        errors.push(IndexError::DnInsideEntry {
            loc: Loc(Some(a.line)),
        });
        return None;
    }
    // A `changetype: add` record carries the same content as a content record; anything
    // else would be an instruction to a directory, not a description of a provider.
    if let Some(ct) = attrs.first().filter(|a| a.name == "changetype") {
        let kind = String::from_utf8_lossy(&ct.value)
            .trim()
            .to_ascii_lowercase();
        if kind != "add" {
            errors.push(IndexError::ChangeRecord {
                loc: Loc(Some(ct.line)),
                kind,
            });
            return None;
        }
        attrs.remove(0);
    }
    Some(LdifEntry { line, dn, attrs })
}

/// `AttributeDescription ":" (" " value | ":" base64 | "<" url)` (RFC 2849 `attrval-spec`).
fn parse_attr(l: &Logical, limits: &LdifLimits) -> Result<LdifAttr, IndexError> {
    let loc = Loc(Some(l.line));
    let colon = l
        .bytes
        .iter()
        .position(|b| *b == b':')
        .ok_or(IndexError::MissingColon { loc })?;
    let desc = &l.bytes[..colon];
    let desc_ok = !desc.is_empty()
        && desc[0].is_ascii_alphanumeric()
        && desc
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b';' | b'.'));
    if !desc_ok {
        return Err(IndexError::BadAttributeName {
            loc,
            name: String::from_utf8_lossy(desc).chars().take(80).collect(),
        });
    }
    // Checked ASCII just above.
    let desc = String::from_utf8_lossy(desc).to_ascii_lowercase();
    let (name, options) = attribute_description(&desc);
    let rest = &l.bytes[colon + 1..];
    let value = match rest.first() {
        Some(b':') => {
            let text: Vec<u8> = rest[1..]
                .iter()
                .copied()
                .filter(|b| !b.is_ascii_whitespace())
                .collect();
            if text.len() / 4 * 3 > limits.max_value_bytes + 3 {
                return Err(IndexError::ValueTooLarge {
                    loc,
                    limit: limits.max_value_bytes,
                });
            }
            LENIENT_B64.decode(&text).map_err(|e| {
                // Name the physical line of the offending character inside a folded value.
                let at = match e {
                    base64::DecodeError::InvalidByte(i, _)
                    | base64::DecodeError::InvalidLastSymbol(i, _) => Some(i),
                    _ => None,
                };
                let line = at
                    .and_then(|i| {
                        rest.iter()
                            .enumerate()
                            .skip(1)
                            .filter(|(_, b)| !b.is_ascii_whitespace())
                            .nth(i)
                            .map(|(j, _)| l.line_at(colon + 1 + j))
                    })
                    .unwrap_or(l.line);
                IndexError::BadBase64 {
                    loc: Loc(Some(line)),
                    attr: desc.clone(),
                }
            })?
        }
        Some(b'<') => return Err(IndexError::UrlValue { loc, attr: desc }),
        _ => {
            // Leading FILL is syntax; trailing blanks in a plain value are editing debris
            // (a value that really ends in a space is written in base64, RFC 2849 note 8).
            let start = rest.iter().position(|b| *b != b' ').unwrap_or(rest.len());
            rest[start..].trim_ascii_end().to_vec()
        }
    };
    if value.len() > limits.max_value_bytes {
        return Err(IndexError::ValueTooLarge {
            loc,
            limit: limits.max_value_bytes,
        });
    }
    Ok(LdifAttr {
        line: l.line,
        name,
        options,
        value,
    })
}

/// RFC 2849 SAFE-STRING (ASCII, no NUL/CR/LF, no leading space, `:` or `<`); values with a
/// trailing space are base64-encoded too so that no tool trims them.
pub(super) fn ldif_safe(v: &str) -> bool {
    v.bytes()
        .all(|b| b != 0 && b != b'\r' && b != b'\n' && b < 0x80)
        && !v.starts_with([' ', ':', '<'])
        && !v.ends_with(' ')
}

pub(super) fn push_attr(out: &mut String, name: &str, value: &str) {
    if ldif_safe(value) {
        push_folded(out, &format!("{name}: {value}"));
    } else {
        push_folded(
            out,
            &format!("{name}:: {}", STANDARD.encode(value.as_bytes())),
        );
    }
}

/// Folds an ASCII line: 76 columns, then continuation lines of a space plus 75.
pub(super) fn push_folded(out: &mut String, line: &str) {
    let b = line.as_bytes();
    let (head, mut rest) = b.split_at(b.len().min(FOLD_COLUMN));
    out.push_str(&String::from_utf8_lossy(head));
    out.push('\n');
    while !rest.is_empty() {
        let (chunk, r) = rest.split_at(rest.len().min(FOLD_COLUMN - 1));
        out.push(' ');
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
        rest = r;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fold_and_unfold_are_inverse() {
        for len in [0, 1, 75, 76, 77, 151, 152, 400] {
            let line = format!("description: {}", "x".repeat(len));
            let mut out = String::new();
            push_folded(&mut out, &line);
            assert!(out.lines().all(|l| l.len() <= FOLD_COLUMN), "{len}");
            let mut errors = Errors::default();
            let groups = unfold(out.as_bytes(), &LdifLimits::default(), &mut errors).unwrap();
            assert_eq!(groups.len(), 1);
            assert_eq!(groups[0][0].bytes, line.as_bytes(), "{len}");
        }
    }

    #[test]
    fn line_at_names_the_physical_line() {
        let mut errors = Errors::default();
        let input = b"# c\ndn: a\nk:: AAAA\n BBBB\n CCCC\n";
        let groups = unfold(input, &LdifLimits::default(), &mut errors).unwrap();
        let l = &groups[0][1];
        assert_eq!(l.line, 3);
        assert_eq!(l.line_at(0), 3);
        assert_eq!(l.line_at(9), 4);
        assert_eq!(l.line_at(12), 5);
    }

    #[test]
    fn safe_strings() {
        for (v, safe) in [
            ("plain value", true),
            ("", true),
            (" lead", false),
            (":colon", false),
            ("<url", false),
            ("trail ", false),
            ("Società", false),
            ("a\nb", false),
        ] {
            assert_eq!(ldif_safe(v), safe, "{v:?}");
        }
    }
}
