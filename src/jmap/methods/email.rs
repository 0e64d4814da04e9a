//! Reading Emails (RFC 8621 §4.2, §4.4, §4.9): Email/get, Email/query and Email/parse,
//! and which blobs a caller may read. The `pec` property comes from [`crate::jmap::pec`]:
//! computed from the bytes and the provider index only, never from where a message is.

use serde_json::{Map, Value, json};

use super::query;
use super::{Ctx, MethodError, Out, get_answer, ids_arg, pec_enabled, properties_arg};
use crate::jmap::account::Entry;
use crate::jmap::email::{self as content, BodyOptions, resolve_blob};

const DEFAULT_PROPS: &[&str] = &[
    "id",
    "blobId",
    "threadId",
    "mailboxIds",
    "keywords",
    "size",
    "receivedAt",
    "messageId",
    "inReplyTo",
    "references",
    "sender",
    "from",
    "to",
    "cc",
    "bcc",
    "replyTo",
    "subject",
    "sentAt",
    "hasAttachment",
    "preview",
    "bodyValues",
    "textBody",
    "htmlBody",
    "attachments",
];

fn body_options(args: &Map<String, Value>) -> BodyOptions {
    BodyOptions {
        fetch_text: args
            .get("fetchTextBodyValues")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        fetch_html: args
            .get("fetchHTMLBodyValues")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        fetch_all: args
            .get("fetchAllBodyValues")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        max_bytes: args
            .get("maxBodyValueBytes")
            .and_then(Value::as_u64)
            .unwrap_or(0) as usize,
        body_properties: args
            .get("bodyProperties")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            }),
    }
}

fn rfc3339(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn entry_json(
    ctx: &Ctx<'_>,
    e: &Entry,
    props: &[String],
    opts: &BodyOptions,
) -> Result<Value, MethodError> {
    let mut o = Map::new();
    o.insert("id".into(), json!(e.id));
    for p in props {
        let v = match p.as_str() {
            "blobId" => json!(format!("B{}", e.blob.as_str())),
            "threadId" => json!(e.thread_id),
            "mailboxIds" => json!(
                e.mailbox_ids()
                    .into_iter()
                    .map(|m| (m, Value::Bool(true)))
                    .collect::<Map<String, Value>>()
            ),
            "keywords" => json!(
                e.keywords
                    .iter()
                    .map(|k| (k.clone(), Value::Bool(true)))
                    .collect::<Map<String, Value>>()
            ),
            "size" => json!(e.size),
            "receivedAt" => json!(rfc3339(e.received)),
            "pec" if pec_enabled(ctx) => crate::jmap::pec::property(&ctx.jmap.gw, e),
            _ => continue,
        };
        o.insert(p.clone(), v);
    }
    content::summary_properties(&e.summary, props, &mut o);
    if content::needs_content(props) {
        let raw = ctx.jmap.gw.store.blobs().read(&e.blob)?;
        if let Some(m) = content::parse(&raw) {
            content::content_properties(&m, &format!("B{}", e.blob.as_str()), props, opts, &mut o);
        }
    }
    Ok(Value::Object(o))
}

pub fn get(ctx: &mut Ctx<'_>, args: &Map<String, Value>) -> Out {
    let props = properties_arg(args, DEFAULT_PROPS)?;
    let opts = body_options(args);
    let max = ctx.jmap.limits.max_objects_in_get;
    let ids = ids_arg(ctx, args, max)?.unwrap_or_else(|| {
        ctx.view
            .emails
            .iter()
            .take(max)
            .map(|e| e.id.clone())
            .collect()
    });
    let (mut list, mut not_found) = (Vec::new(), Vec::new());
    for id in ids {
        match ctx.view.email(&id) {
            Some(e) => list.push(entry_json(ctx, e, &props, &opts)?),
            None => not_found.push(id),
        }
    }
    Ok(get_answer(ctx, list, not_found))
}

pub fn query(ctx: &mut Ctx<'_>, args: &Map<String, Value>) -> Out {
    let filter = args.get("filter").cloned().unwrap_or(Value::Null);
    query::check(&filter, 0)?;
    let mut hits = Vec::new();
    for (i, e) in ctx.view.emails.iter().enumerate() {
        if query::matches(&ctx.view, e, &filter, 0)? {
            hits.push(i);
        }
    }
    query::sort(&ctx.view, &mut hits, args.get("sort"))?;
    if args
        .get("collapseThreads")
        .and_then(Value::as_bool)
        .unwrap_or(false)
    {
        let mut seen = std::collections::HashSet::new();
        hits.retain(|&i| seen.insert(ctx.view.emails[i].thread_id.clone()));
    }
    let total = hits.len();
    let mut position = args.get("position").and_then(Value::as_i64).unwrap_or(0);
    if let Some(anchor) = args.get("anchor").and_then(Value::as_str) {
        let Some(at) = hits.iter().position(|&i| ctx.view.emails[i].id == anchor) else {
            return Err(MethodError::new(
                "anchorNotFound",
                "the anchor is not in the results",
            ));
        };
        position = at as i64
            + args
                .get("anchorOffset")
                .and_then(Value::as_i64)
                .unwrap_or(0);
    }
    if position < 0 {
        position = (total as i64 + position).max(0);
    }
    let start = (position as usize).min(total);
    let limit = args
        .get("limit")
        .and_then(Value::as_u64)
        .map_or(ctx.jmap.limits.max_objects_in_get, |l| {
            (l as usize).min(ctx.jmap.limits.max_objects_in_get)
        });
    let ids: Vec<String> = hits[start..]
        .iter()
        .take(limit)
        .map(|&i| ctx.view.emails[i].id.clone())
        .collect();
    let mut out = Map::new();
    out.insert("accountId".into(), json!(ctx.account_id));
    out.insert("queryState".into(), json!(ctx.state()));
    out.insert("canCalculateChanges".into(), json!(false));
    out.insert("position".into(), json!(start));
    out.insert("ids".into(), json!(ids));
    if args
        .get("calculateTotal")
        .and_then(Value::as_bool)
        .unwrap_or(false)
    {
        out.insert("total".into(), json!(total));
    }
    out.insert("limit".into(), json!(limit));
    Ok(out)
}

/// Whether the caller may read blob `id`: a message of the account (or a part of one),
/// or the caller's own upload.
pub fn blob_accessible(ctx: &Ctx<'_>, id: &str) -> bool {
    let Some((base, _)) = content::split_blob_id(id) else {
        return false;
    };
    ctx.view.holds_blob(base.as_str()) || ctx.jmap.uploaded(&ctx.user.to_string(), base.as_str())
}

/// Email/parse's defaults: the Email/get ones without the mailbox-level properties (RFC
/// 8621 §4.9), which start at `messageId`.
const PARSE_PROPS: &[&str] = DEFAULT_PROPS.split_at(7).1;

pub fn parse(ctx: &mut Ctx<'_>, args: &Map<String, Value>) -> Out {
    let props = properties_arg(args, PARSE_PROPS)?;
    let opts = body_options(args);
    let ids: Vec<String> = args
        .get("blobIds")
        .and_then(Value::as_array)
        .ok_or_else(|| MethodError::invalid_arguments("blobIds is required"))?
        .iter()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect();
    let (mut parsed, mut not_parsable, mut not_found) = (Map::new(), Vec::new(), Vec::new());
    for id in ids {
        if !blob_accessible(ctx, &id) {
            not_found.push(id);
            continue;
        }
        let Ok(bytes) = resolve_blob(&ctx.jmap.gw.store, &id) else {
            not_found.push(id);
            continue;
        };
        match content::parse(&bytes) {
            Some(m) if !m.headers().is_empty() => {
                let mut o = Map::new();
                o.insert("blobId".into(), json!(id));
                o.insert("size".into(), json!(bytes.len()));
                content::header_properties(&m, &props, &mut o);
                content::content_properties(&m, &id, &props, &opts, &mut o);
                for p in ["id", "threadId", "mailboxIds", "keywords", "receivedAt"] {
                    if props.iter().any(|x| x == p) {
                        o.insert(p.into(), Value::Null);
                    }
                }
                parsed.insert(id, Value::Object(o));
            }
            _ => not_parsable.push(id),
        }
    }
    let mut out = Map::new();
    out.insert("accountId".into(), json!(ctx.account_id));
    out.insert("parsed".into(), Value::Object(parsed));
    out.insert("notParsable".into(), json!(not_parsable));
    out.insert("notFound".into(), json!(not_found));
    Ok(out)
}
