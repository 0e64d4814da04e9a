//! The message of an Email/set create, built from its JMAP properties (RFC 8621 §4.6):
//! addresses, subject, Message-ID (one is made when absent), references, date, headers
//! given as `header:Name:asText`, text and HTML bodies from `bodyValues`, attachments from
//! blobs the caller may read. Untrusted input: every property; a header value may not
//! carry a line break and the structural headers cannot be set this way.

use mail_builder::MessageBuilder;
use mail_builder::headers::address::Address as BAddress;
use mail_builder::headers::text::Text;
use serde_json::{Map, Value};

use super::email::blob_accessible;
use super::{Ctx, server_fail, set_error};
use crate::jmap::email::resolve_blob;

fn addr_list(v: Option<&Value>) -> Vec<(String, String)> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| {
                    let email = x.get("email")?.as_str()?.to_string();
                    let name = x
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string();
                    Some((name, email))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn baddr(list: Vec<(String, String)>) -> BAddress<'static> {
    BAddress::new_list(
        list.into_iter()
            .map(|(n, e)| {
                if n.is_empty() {
                    BAddress::from(e)
                } else {
                    BAddress::from((n, e))
                }
            })
            .collect(),
    )
}

/// Builds the message of an Email/set create from its properties (RFC 8621 §4.6).
pub fn build_message(ctx: &Ctx<'_>, obj: &Map<String, Value>) -> Result<Vec<u8>, Value> {
    let mut b = MessageBuilder::new();
    let from = addr_list(obj.get("from"));
    b = if from.is_empty() {
        b.from(ctx.user.to_string())
    } else {
        b.from(baddr(from))
    };
    for (k, setter) in [("to", 0), ("cc", 1), ("bcc", 2), ("replyTo", 3)] {
        let l = addr_list(obj.get(k));
        if l.is_empty() {
            continue;
        }
        let a = baddr(l);
        b = match setter {
            0 => b.to(a),
            1 => b.cc(a),
            2 => b.bcc(a),
            _ => b.reply_to(a),
        };
    }
    if let Some(s) = obj.get("subject").and_then(Value::as_str) {
        b = b.subject(s.to_string());
    }
    let msgid = obj
        .get("messageId")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| {
            format!(
                "{}@{}",
                crate::http::sessions::random_token().replace(['-', '_'], ""),
                ctx.jmap.gw.identity.host
            )
        });
    b = b.message_id(msgid);
    for (k, is_ref) in [("inReplyTo", false), ("references", true)] {
        if let Some(ids) = obj.get(k).and_then(Value::as_array) {
            let ids: Vec<String> = ids
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect();
            if !ids.is_empty() {
                let v = mail_builder::headers::message_id::MessageId::new_list(
                    ids.into_iter().map(std::borrow::Cow::<str>::from),
                );
                b = if is_ref {
                    b.header("References", v)
                } else {
                    b.header("In-Reply-To", v)
                };
            }
        }
    }
    let sent = obj
        .get("sentAt")
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<jiff::Timestamp>().ok())
        .unwrap_or_else(|| ctx.jmap.gw.clock.now());
    b = b.date(sent.as_second());
    for (k, v) in obj {
        if let Some(rest) = k.strip_prefix("header:") {
            let name = rest.split(':').next().unwrap_or("");
            let valid = !name.is_empty()
                && name.bytes().all(|c| c.is_ascii_graphic() && c != b':')
                && ![
                    "from",
                    "to",
                    "cc",
                    "bcc",
                    "subject",
                    "message-id",
                    "date",
                    "content-type",
                    "mime-version",
                ]
                .contains(&name.to_ascii_lowercase().as_str());
            let Some(text) = v.as_str() else { continue };
            if !valid || text.contains(['\r', '\n']) {
                return Err(set_error(
                    "invalidProperties",
                    format!("{k}: not a settable header"),
                ));
            }
            b = b.header(name.to_string(), Text::new(text.to_string()));
        }
    }
    let values = obj.get("bodyValues").and_then(Value::as_object);
    let body_text = |list: Option<&Value>| -> Option<String> {
        let part = list?.as_array()?.first()?;
        let pid = part.get("partId")?.as_str()?;
        Some(values?.get(pid)?.get("value")?.as_str()?.to_string())
    };
    if let Some(t) = body_text(obj.get("textBody")) {
        b = b.text_body(t);
    }
    if let Some(h) = body_text(obj.get("htmlBody")) {
        b = b.html_body(h);
    }
    if let Some(atts) = obj.get("attachments").and_then(Value::as_array) {
        for a in atts {
            let Some(bid) = a.get("blobId").and_then(Value::as_str) else {
                return Err(set_error("invalidProperties", "attachments need a blobId"));
            };
            let bid = ctx.id(bid).unwrap_or_else(|| bid.to_string());
            if !blob_accessible(ctx, &bid) {
                return Err(set_error("blobNotFound", format!("no blob {bid}")));
            }
            let bytes = resolve_blob(&ctx.jmap.gw.store, &bid)
                .map_err(|_| set_error("blobNotFound", format!("no blob {bid}")))?;
            let ty = a
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("application/octet-stream")
                .to_string();
            let name = a
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("allegato")
                .to_string();
            b = b.attachment(ty, name, bytes);
        }
    }
    b.write_to_vec()
        .map_err(|e| server_fail("composing the message", &e))
}
