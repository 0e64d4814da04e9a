//! SEARCH (RFC 3501 §6.4.4): evaluates the key tree against each message of the selected
//! mailbox. Flag, size, date and set keys use the message record only; header and text
//! keys read the message (once per message, on demand). String matching is
//! case-insensitive substring matching (§6.4.4) over the raw header values, and for
//! SUBJECT/FROM/TO/CC/BCC also over the values as decoded by mail-parser (RFC 2047).
//! imap-codec bounds the depth of the key tree when parsing.

use std::collections::HashMap;

use imap_codec::imap_types::core::{Charset, Vec1};
use imap_codec::imap_types::search::SearchKey;
use imap_codec::imap_types::sequence::SequenceSet;
use jiff::civil::Date;
use mail_parser::MessageParser;

use super::exec::no;
use super::mime;
use super::view::{View, in_ranges};
use super::wire::tagged;
use crate::store::{MessageRecord, Store, StoreError};

/// Runs SEARCH or UID SEARCH.
pub fn run(
    store: &Store,
    view: &View,
    tag: &str,
    charset: Option<Charset<'_>>,
    criteria: Vec1<SearchKey<'_>>,
    uid: bool,
    out: &mut Vec<u8>,
) {
    if let Some(c) = &charset {
        let c = c.as_ref().to_ascii_uppercase();
        if c != "UTF-8" && c != "US-ASCII" {
            return out.extend(tagged(
                tag,
                "NO",
                "[BADCHARSET (UTF-8 US-ASCII)] Unsupported charset",
            ));
        }
    }
    let keys = criteria.into_inner();
    let mut hits = Vec::new();
    let mut sets = SetCache::new();
    for (i, m) in view.msgs.iter().enumerate() {
        let mut ctx = Ctx {
            store,
            view,
            index: i,
            rec: m,
            bytes: None,
            sets: &mut sets,
        };
        let mut all = true;
        for k in &keys {
            match ctx.eval(k) {
                Ok(true) => {}
                Ok(false) => {
                    all = false;
                    break;
                }
                Err(e) => return out.extend(no(tag, &e)),
            }
        }
        if all {
            hits.push(if uid { m.uid } else { i as u32 + 1 });
        }
    }
    let mut line = String::from("* SEARCH");
    for h in hits {
        line.push(' ');
        line.push_str(&h.to_string());
    }
    line.push_str("\r\n");
    out.extend(line.into_bytes());
    out.extend(tagged(tag, "OK", "SEARCH completed"));
}

struct Ctx<'a, 'k> {
    store: &'a Store,
    view: &'a View,
    index: usize,
    rec: &'a MessageRecord,
    bytes: Option<Vec<u8>>,
    sets: &'a mut SetCache<'k>,
}

/// The sequence sets of the command, resolved once for the whole SEARCH (not once per
/// message, which made `SEARCH 1:*` quadratic in the mailbox size) into ranges: memory
/// bounded by the size of the command. Keyed by the set's address in the key tree,
/// which does not move while the command runs (the tree is borrowed for `'k`).
type Ranges = Vec<(usize, usize)>;

struct SetCache<'k> {
    /// `None`: the set names a message that does not exist.
    resolved: HashMap<(usize, bool), Option<Ranges>>,
    _keys: std::marker::PhantomData<&'k SequenceSet>,
}

impl<'k> SetCache<'k> {
    fn new() -> Self {
        Self {
            resolved: HashMap::new(),
            _keys: std::marker::PhantomData,
        }
    }

    /// Whether message `index` is in `set`; a set naming a message that does not exist
    /// matches nothing.
    fn contains(&mut self, view: &View, set: &'k SequenceSet, uid: bool, index: usize) -> bool {
        let key = (std::ptr::from_ref(set) as usize, uid);
        self.resolved
            .entry(key)
            .or_insert_with(|| view.ranges(set, uid).ok())
            .as_ref()
            .is_some_and(|r| in_ranges(r, index))
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    if needle.is_empty() {
        return true;
    }
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

fn to_date(d: &impl std::fmt::Display) -> Option<Date> {
    d.to_string().parse().ok()
}

impl<'k> Ctx<'_, 'k> {
    fn bytes(&mut self) -> Result<&[u8], StoreError> {
        if self.bytes.is_none() {
            self.bytes = Some(self.store.blobs().read(&self.rec.blob)?);
        }
        Ok(self.bytes.as_deref().unwrap_or_default())
    }

    fn has_flag(&self, f: &str) -> bool {
        self.rec.flags.iter().any(|x| x.eq_ignore_ascii_case(f))
    }

    fn header(&mut self, name: &str, value: &[u8]) -> Result<bool, StoreError> {
        let name = name.to_ascii_lowercase();
        let msg = self.bytes()?;
        let body = mime::parse(msg).body;
        let fields = mime::fields(msg, 0, body);
        if fields
            .iter()
            .any(|(n, v, _)| *n == name && contains(v.as_bytes(), value))
        {
            return Ok(true);
        }
        if !["subject", "from", "to", "cc", "bcc"].contains(&name.as_str()) {
            return Ok(false);
        }
        // Encoded words (RFC 2047): match the decoded text too.
        let Some(parsed) = MessageParser::new().parse_headers(&msg[..body]) else {
            return Ok(false);
        };
        let decoded = match name.as_str() {
            "subject" => parsed.subject().map(str::to_string),
            n => parsed.header(n).and_then(|h| h.as_address()).map(|a| {
                a.iter()
                    .map(|x| format!("{} <{}>", x.name().unwrap_or(""), x.address().unwrap_or("")))
                    .collect::<Vec<_>>()
                    .join(", ")
            }),
        };
        Ok(decoded.is_some_and(|d| {
            d.to_lowercase()
                .contains(&String::from_utf8_lossy(value).to_lowercase())
        }))
    }

    fn sent_date(&mut self) -> Result<Option<Date>, StoreError> {
        let msg = self.bytes()?;
        let body = mime::parse(msg).body;
        let parsed = MessageParser::new().parse_headers(&msg[..body]);
        let ts = parsed.and_then(|p| p.date().map(|d| d.to_timestamp()));
        Ok(ts
            .and_then(|s| jiff::Timestamp::from_second(s).ok())
            .map(|t| t.to_zoned(jiff::tz::TimeZone::UTC).date()))
    }

    fn internal_date(&self) -> Date {
        self.rec
            .internal_date
            .to_zoned(jiff::tz::TimeZone::UTC)
            .date()
    }

    fn eval(&mut self, key: &'k SearchKey<'_>) -> Result<bool, StoreError> {
        use SearchKey as K;
        Ok(match key {
            K::All => true,
            K::And(keys) => {
                for k in keys.as_ref() {
                    if !self.eval(k)? {
                        return Ok(false);
                    }
                }
                true
            }
            K::Or(a, b) => self.eval(a)? || self.eval(b)?,
            K::Not(k) => !self.eval(k)?,
            K::SequenceSet(set) => self.sets.contains(self.view, set, false, self.index),
            K::Uid(set) => self.sets.contains(self.view, set, true, self.index),
            K::Answered => self.has_flag("\\Answered"),
            K::Unanswered => !self.has_flag("\\Answered"),
            K::Deleted => self.has_flag("\\Deleted"),
            K::Undeleted => !self.has_flag("\\Deleted"),
            K::Draft => self.has_flag("\\Draft"),
            K::Undraft => !self.has_flag("\\Draft"),
            K::Flagged => self.has_flag("\\Flagged"),
            K::Unflagged => !self.has_flag("\\Flagged"),
            K::Seen | K::Old => self.has_flag("\\Seen") || matches!(key, K::Old),
            K::Unseen => !self.has_flag("\\Seen"),
            // This server never reports \Recent.
            K::New | K::Recent => false,
            K::Keyword(a) => self.has_flag(a.as_ref()),
            K::Unkeyword(a) => !self.has_flag(a.as_ref()),
            K::Larger(n) => self.rec.size > u64::from(*n),
            K::Smaller(n) => self.rec.size < u64::from(*n),
            K::Before(d) => to_date(d.as_ref()).is_some_and(|d| self.internal_date() < d),
            K::On(d) => to_date(d.as_ref()).is_some_and(|d| self.internal_date() == d),
            K::Since(d) => to_date(d.as_ref()).is_some_and(|d| self.internal_date() >= d),
            K::SentBefore(d) => {
                matches!((self.sent_date()?, to_date(d.as_ref())), (Some(s), Some(d)) if s < d)
            }
            K::SentOn(d) => {
                matches!((self.sent_date()?, to_date(d.as_ref())), (Some(s), Some(d)) if s == d)
            }
            K::SentSince(d) => {
                matches!((self.sent_date()?, to_date(d.as_ref())), (Some(s), Some(d)) if s >= d)
            }
            K::Header(name, value) => {
                let name = String::from_utf8_lossy(name.as_ref()).into_owned();
                self.header(&name, value.as_ref())?
            }
            K::Subject(v) => self.header("subject", v.as_ref())?,
            K::From(v) => self.header("from", v.as_ref())?,
            K::To(v) => self.header("to", v.as_ref())?,
            K::Cc(v) => self.header("cc", v.as_ref())?,
            K::Bcc(v) => self.header("bcc", v.as_ref())?,
            K::Body(v) => {
                let msg = self.bytes()?;
                let body = mime::parse(msg).body;
                contains(&msg[body..], v.as_ref())
            }
            K::Text(v) => contains(self.bytes()?, v.as_ref()),
            #[allow(unreachable_patterns)]
            _ => false,
        })
    }
}
