//! Email properties read from a message's bytes (RFC 8621 §4.1): header fields in their
//! parsed forms (§4.1.2), the body structure, `textBody` / `htmlBody` / `attachments`,
//! and `bodyValues` (§4.1.4); and the blob ids of parts.
//!
//! Blob ids: `B<sha256>` is a stored message (or an upload); a suffix `_<partId>` is the
//! decoded content of that MIME part, `_pc` the `postacert.eml` of a PEC message; suffixes
//! chain (`B<sha>_pc_3` is part 3 of the original inside an envelope). [`resolve_blob`]
//! follows them. Untrusted input: the message, and the blob ids and header names clients
//! send (bounded, never used as paths).

use mail_parser::{Message, MessageParser, MessagePart, MimeHeaders, PartType};
use serde_json::{Map, Value, json};

use crate::store::{BlobId, Store, StoreError};

use super::summary::{addresses, rfc3339};

/// Longest chain of blob id suffixes followed.
const MAX_BLOB_DEPTH: usize = 8;

/// How bodies are fetched (the Email/get body arguments).
#[derive(Debug, Clone, Default)]
pub struct BodyOptions {
    pub fetch_text: bool,
    pub fetch_html: bool,
    pub fetch_all: bool,
    pub max_bytes: usize,
    pub body_properties: Option<Vec<String>>,
}

/// Why a blob id could not be followed.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("not a blob id of this server")]
    Malformed,
    #[error("no such part")]
    NoPart,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Splits `B<sha>_a_b` into the stored blob and the suffixes.
pub fn split_blob_id(id: &str) -> Option<(BlobId, Vec<&str>)> {
    let rest = id.strip_prefix('B')?;
    let mut it = rest.split('_');
    let base = BlobId::parse(it.next()?).ok()?;
    let segs: Vec<&str> = it.collect();
    if segs.len() > MAX_BLOB_DEPTH || segs.iter().any(|s| s.is_empty() || s.len() > 6) {
        return None;
    }
    Some((base, segs))
}

/// The bytes a blob id stands for.
pub fn resolve_blob(store: &Store, id: &str) -> Result<Vec<u8>, BlobError> {
    let (base, segs) = split_blob_id(id).ok_or(BlobError::Malformed)?;
    let mut bytes = store.blobs().read(&base)?;
    for seg in segs {
        bytes = if seg == "pc" {
            crate::pec::classify::classify(&bytes)
                .ok()
                .and_then(|c| c.postacert.map(Vec::from))
                .ok_or(BlobError::NoPart)?
        } else {
            let n: usize = seg.parse().map_err(|_| BlobError::Malformed)?;
            let m = MessageParser::default()
                .parse(&bytes)
                .ok_or(BlobError::NoPart)?;
            let p = m.parts.get(n).ok_or(BlobError::NoPart)?;
            match &p.body {
                PartType::Message(inner) => inner.raw_message().to_vec(),
                PartType::Multipart(_) => bytes
                    .get(p.offset_header as usize..p.offset_end as usize)
                    .ok_or(BlobError::NoPart)?
                    .to_vec(),
                _ => p.contents().to_vec(),
            }
        };
    }
    Ok(bytes)
}

pub fn parse(raw: &[u8]) -> Option<Message<'_>> {
    MessageParser::default().parse(raw)
}

fn header_forms(m: &Message<'_>, spec: &str) -> Option<Value> {
    // header:Name[:asForm][:all]
    let mut parts = spec.strip_prefix("header:")?.split(':');
    let name = parts.next()?.to_string();
    let mut form = "asRaw";
    let mut all = false;
    for p in parts {
        match p {
            "all" => all = true,
            f @ ("asRaw" | "asText" | "asAddresses" | "asGroupedAddresses" | "asMessageIds"
            | "asDate" | "asURLs") => form = f,
            _ => return None,
        }
    }
    let values: Vec<Value> = m
        .headers()
        .iter()
        .filter(|h| h.name().eq_ignore_ascii_case(&name))
        .map(|h| {
            let raw = m
                .raw_message()
                .get(h.offset_start() as usize..h.offset_end() as usize)
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            match form {
                "asRaw" => Value::from(raw),
                "asText" => match h.value() {
                    mail_parser::HeaderValue::Text(t) => Value::from(t.trim().to_string()),
                    _ => Value::from(unfold(&raw)),
                },
                "asAddresses" | "asGroupedAddresses" => {
                    json!(addresses(h.value().as_address()))
                }
                "asMessageIds" => match h.value() {
                    mail_parser::HeaderValue::Text(t) => json!([t]),
                    mail_parser::HeaderValue::TextList(l) => json!(l),
                    _ => Value::Null,
                },
                "asDate" => h
                    .value()
                    .as_datetime()
                    .and_then(rfc3339)
                    .map_or(Value::Null, Value::from),
                _ => Value::from(unfold(&raw)),
            }
        })
        .collect();
    Some(if all {
        Value::Array(values)
    } else {
        values.into_iter().last().unwrap_or(Value::Null)
    })
}

fn unfold(raw: &str) -> String {
    raw.replace("\r\n", "").replace('\n', "").trim().to_string()
}

fn raw_headers(m: &Message<'_>, part: &MessagePart<'_>) -> Value {
    Value::Array(
        part.headers
            .iter()
            .map(|h| {
                let raw = m
                    .raw_message()
                    .get(h.offset_start() as usize..h.offset_end() as usize)
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                json!({"name": h.name(), "value": raw})
            })
            .collect(),
    )
}

/// The EmailBodyPart of part `i` (RFC 8621 §4.1.4), with sub-parts for multiparts.
/// `seen` marks the parts already in the answer: each part appears once, so that a
/// malformed message whose part list refers back to a part (mail-parser can produce
/// that from broken multipart nesting) cannot make the tree grow exponentially (a 6 KB
/// message took 8 GB before; found by the `jmap_email` fuzz target).
fn body_part(
    m: &Message<'_>,
    i: usize,
    blob: &str,
    props: Option<&[String]>,
    depth: usize,
    seen: &mut [bool],
) -> Value {
    let Some(p) = m.parts.get(i) else {
        return Value::Null;
    };
    match seen.get_mut(i) {
        Some(s) if !*s => *s = true,
        _ => return Value::Null,
    }
    let ct = p.content_type();
    let ty = ct
        .map(|c| match c.subtype() {
            Some(s) => format!("{}/{}", c.ctype(), s).to_ascii_lowercase(),
            None => c.ctype().to_ascii_lowercase(),
        })
        .unwrap_or_else(|| "text/plain".into());
    let mut o = Map::new();
    let is_multi = matches!(p.body, PartType::Multipart(_));
    o.insert(
        "partId".into(),
        if is_multi {
            Value::Null
        } else {
            Value::from(i.to_string())
        },
    );
    o.insert(
        "blobId".into(),
        if is_multi {
            Value::Null
        } else {
            Value::from(format!("{blob}_{i}"))
        },
    );
    o.insert("size".into(), Value::from(p.contents().len()));
    o.insert("headers".into(), raw_headers(m, p));
    o.insert(
        "name".into(),
        p.attachment_name().map_or(Value::Null, Value::from),
    );
    o.insert("type".into(), Value::from(ty));
    o.insert(
        "charset".into(),
        ct.and_then(|c| c.attribute("charset"))
            .map_or(Value::Null, Value::from),
    );
    o.insert(
        "disposition".into(),
        p.content_disposition()
            .map_or(Value::Null, |d| Value::from(d.ctype().to_ascii_lowercase())),
    );
    o.insert(
        "cid".into(),
        p.content_id().map_or(Value::Null, Value::from),
    );
    o.insert("language".into(), Value::Null);
    o.insert(
        "location".into(),
        p.content_location().map_or(Value::Null, Value::from),
    );
    if let PartType::Multipart(subs) = &p.body {
        let subs: Vec<Value> = if depth > 32 {
            Vec::new()
        } else {
            subs.iter()
                .map(|&s| body_part(m, s as usize, blob, props, depth + 1, seen))
                .filter(|v| !v.is_null())
                .collect()
        };
        o.insert("subParts".into(), Value::Array(subs));
    } else {
        o.insert("subParts".into(), Value::Null);
    }
    if let Some(props) = props {
        o.retain(|k, _| props.iter().any(|p| p == k) || k == "subParts");
    }
    Value::Object(o)
}

fn body_value(p: &MessagePart<'_>, max: usize) -> Value {
    let text = match &p.body {
        PartType::Text(t) | PartType::Html(t) => t.to_string(),
        _ => String::from_utf8_lossy(p.contents()).into_owned(),
    };
    let truncated = max > 0 && text.len() > max;
    let value = if truncated {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text[..end].to_string()
    } else {
        text
    };
    json!({"value": value, "isEncodingProblem": p.is_encoding_problem, "isTruncated": truncated})
}

/// The content properties of an Email (or of a parsed blob) asked for in `props`; `blob`
/// is the blob id of the message, the prefix of its parts' blob ids.
pub fn content_properties(
    m: &Message<'_>,
    blob: &str,
    props: &[String],
    opts: &BodyOptions,
    out: &mut Map<String, Value>,
) {
    let bprops = opts.body_properties.as_deref();
    for p in props {
        let v = match p.as_str() {
            "bodyStructure" => body_part(m, 0, blob, bprops, 0, &mut vec![false; m.parts.len()]),
            "textBody" => json!(
                m.text_body
                    .iter()
                    .map(|&i| body_part(
                        m,
                        i as usize,
                        blob,
                        bprops,
                        0,
                        &mut vec![false; m.parts.len()]
                    ))
                    .collect::<Vec<_>>()
            ),
            "htmlBody" => json!(
                m.html_body
                    .iter()
                    .map(|&i| body_part(
                        m,
                        i as usize,
                        blob,
                        bprops,
                        0,
                        &mut vec![false; m.parts.len()]
                    ))
                    .collect::<Vec<_>>()
            ),
            "attachments" => json!(
                m.attachments
                    .iter()
                    .map(|&i| body_part(
                        m,
                        i as usize,
                        blob,
                        bprops,
                        0,
                        &mut vec![false; m.parts.len()]
                    ))
                    .collect::<Vec<_>>()
            ),
            "headers" => raw_headers(m, m.root_part()),
            "bodyValues" => {
                let mut vals = Map::new();
                let mut add = |ids: &[u32]| {
                    for &i in ids {
                        if let Some(part) = m.parts.get(i as usize)
                            && (part.is_text() || matches!(part.body, PartType::Html(_)))
                        {
                            vals.insert(i.to_string(), body_value(part, opts.max_bytes));
                        }
                    }
                };
                if opts.fetch_text || opts.fetch_all {
                    add(&m.text_body);
                }
                if opts.fetch_html || opts.fetch_all {
                    add(&m.html_body);
                }
                Value::Object(vals)
            }
            s if s.starts_with("header:") => match header_forms(m, s) {
                Some(v) => v,
                None => continue,
            },
            _ => continue,
        };
        out.insert(p.clone(), v);
    }
}

/// Header-derived properties of a parsed message that the summary also has, for
/// Email/parse (which has no stored summary).
pub fn header_properties(m: &Message<'_>, props: &[String], out: &mut Map<String, Value>) {
    let s = super::summary::summarize(m.raw_message());
    summary_properties(&s, props, out);
}

/// Properties answered from a summary.
pub fn summary_properties(
    s: &super::summary::Summary,
    props: &[String],
    out: &mut Map<String, Value>,
) {
    let list = |v: &Vec<super::summary::EmailAddress>| {
        if v.is_empty() { Value::Null } else { json!(v) }
    };
    let ids = |v: &Vec<String>| if v.is_empty() { Value::Null } else { json!(v) };
    for p in props {
        let v = match p.as_str() {
            "messageId" => ids(&s.message_id),
            "inReplyTo" => ids(&s.in_reply_to),
            "references" => ids(&s.references),
            "sender" => list(&s.sender),
            "from" => list(&s.from),
            "to" => list(&s.to),
            "cc" => list(&s.cc),
            "bcc" => list(&s.bcc),
            "replyTo" => list(&s.reply_to),
            "subject" => json!(s.subject),
            "sentAt" => json!(s.sent_at),
            "hasAttachment" => json!(s.has_attachment),
            "preview" => json!(s.preview),
            _ => continue,
        };
        out.insert(p.clone(), v);
    }
}

/// Properties that need the message's bytes.
pub fn needs_content(props: &[String]) -> bool {
    props.iter().any(|p| {
        matches!(
            p.as_str(),
            "bodyStructure" | "textBody" | "htmlBody" | "attachments" | "headers" | "bodyValues"
        ) || p.starts_with("header:")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `jmap_email` fuzz target: mail-parser's part list for this broken
    /// 6 KB message refers back to parts, and the body structure once grew to 8 GB.
    #[test]
    fn a_part_list_with_cycles_gives_each_part_once() -> Result<(), &'static str> {
        let raw = include_bytes!("../../fuzz/regressions/jmap_email/mail-parser-part-cycle-oom");
        let m = parse(raw).ok_or("the regression input no longer parses")?;
        let mut out = Map::new();
        let props = ["bodyStructure".to_string()];
        content_properties(&m, "B", &props, &BodyOptions::default(), &mut out);
        fn count(v: &Value) -> usize {
            1 + v["subParts"]
                .as_array()
                .map_or(0, |s| s.iter().map(count).sum())
        }
        let n = count(&out["bodyStructure"]);
        assert!(
            n <= m.parts.len(),
            "{n} parts in the answer, {} in the message",
            m.parts.len()
        );
        Ok(())
    }

    const MSG: &[u8] = b"From: A <a@x.test>\r\nTo: b@y.test\r\nSubject: =?utf-8?q?Caff=C3=A8?=\r\n\
X-TipoRicevuta: breve\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nCiao\r\n--b\r\nContent-Type: application/pdf\r\n\
Content-Disposition: attachment; filename=\"atto.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n--b--\r\n";

    #[test]
    fn structure_values_and_header_forms() {
        let m = parse(MSG).unwrap();
        let props: Vec<String> = [
            "bodyStructure",
            "attachments",
            "bodyValues",
            "textBody",
            "header:X-TipoRicevuta:asText",
            "header:Subject:asText",
            "header:To:asAddresses",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut out = Map::new();
        let opts = BodyOptions {
            fetch_text: true,
            ..Default::default()
        };
        content_properties(&m, "Bx", &props, &opts, &mut out);
        assert_eq!(out["bodyStructure"]["type"], "multipart/mixed");
        assert_eq!(out["attachments"][0]["name"], "atto.pdf");
        assert_eq!(out["attachments"][0]["type"], "application/pdf");
        let tid = out["textBody"][0]["partId"].as_str().unwrap().to_string();
        assert_eq!(
            out["bodyValues"][&tid]["value"].as_str().unwrap().trim(),
            "Ciao"
        );
        assert_eq!(out["header:X-TipoRicevuta:asText"], "breve");
        assert_eq!(out["header:Subject:asText"], "Caffè");
        assert_eq!(out["header:To:asAddresses"][0]["email"], "b@y.test");
    }

    #[test]
    fn blob_ids_are_checked() {
        let sha = "a".repeat(64);
        assert!(split_blob_id(&format!("B{sha}")).is_some());
        assert_eq!(
            split_blob_id(&format!("B{sha}_pc_3")).unwrap().1,
            vec!["pc", "3"]
        );
        assert!(split_blob_id("B../../etc/passwd").is_none());
        assert!(split_blob_id(&format!("B{sha}__")).is_none());
        assert!(split_blob_id(&format!("B{sha}{}", "_1".repeat(20))).is_none());
    }
}
