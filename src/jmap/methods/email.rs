//! Email/get, /query, /set, /import, /parse, /copy, SearchSnippet/get and Blob/copy
//! (RFC 8621 §4, §5; RFC 8620 §6.3).
//!
//! Storing goes through the same store operations as IMAP (a [`Delivery`] with its
//! `MessageStored` trace record in one commit; quota enforced), keywords are IMAP flags,
//! destroying expunges every record of the Email. Nothing here can make a message look
//! certified: the `pec` verdict is computed from the bytes and the provider index only.

use std::collections::BTreeSet;

use mail_builder::MessageBuilder;
use mail_builder::headers::address::Address as BAddress;
use mail_builder::headers::text::Text;
use serde_json::{Map, Value, json};

use super::query;
use super::{
    Ctx, MethodError, Out, SetOutcome, get_answer, ids_arg, pec_enabled, properties_arg, set_error,
};
use crate::jmap::account::{Entry, email_id, flag, mailbox_id};
use crate::jmap::email::{self as content, BodyOptions, resolve_blob};
use crate::store::{Batch, BlobId, Delivery, StoreError};

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

/// The folder ids an Email should be in after a `mailboxIds` value or patch.
fn apply_mailbox_patch(
    ctx: &Ctx<'_>,
    current: BTreeSet<String>,
    patch: &Map<String, Value>,
) -> Result<BTreeSet<String>, Value> {
    let mut set = current;
    for (k, v) in patch {
        if k == "mailboxIds" {
            let Value::Object(m) = v else {
                return Err(set_error(
                    "invalidProperties",
                    "mailboxIds must be an object",
                ));
            };
            set = m
                .iter()
                .filter(|(_, v)| v.as_bool() == Some(true))
                .map(|(k, _)| ctx.id(k).unwrap_or_else(|| k.clone()))
                .collect();
        } else if let Some(id) = k.strip_prefix("mailboxIds/") {
            let id = ctx.id(id).unwrap_or_else(|| id.to_string());
            if v.as_bool() == Some(true) {
                set.insert(id);
            } else {
                set.remove(&id);
            }
        }
    }
    if set.is_empty() {
        return Err(set_error(
            "invalidProperties",
            "an Email must be in at least one mailbox",
        ));
    }
    if let Some(bad) = set.iter().find(|m| ctx.view.folder_by_id(m).is_none()) {
        return Err(set_error(
            "invalidProperties",
            format!("mailboxIds: no mailbox {bad}"),
        ));
    }
    Ok(set)
}

fn apply_keyword_patch(
    current: BTreeSet<String>,
    patch: &Map<String, Value>,
) -> Result<BTreeSet<String>, Value> {
    let mut set = current;
    for (k, v) in patch {
        if k == "keywords" {
            let Value::Object(m) = v else {
                return Err(set_error("invalidProperties", "keywords must be an object"));
            };
            set = m
                .iter()
                .filter(|(_, v)| v.as_bool() == Some(true))
                .map(|(k, _)| k.to_lowercase())
                .collect();
        } else if let Some(kw) = k.strip_prefix("keywords/") {
            if v.as_bool() == Some(true) {
                set.insert(kw.to_lowercase());
            } else {
                set.remove(&kw.to_lowercase());
            }
        }
    }
    if set.iter().any(|k| {
        k.is_empty()
            || k.len() > 255
            || k.chars()
                .any(|c| c.is_control() || "( ){]%*\"\\".contains(c))
    }) {
        return Err(set_error("invalidProperties", "not a valid keyword"));
    }
    Ok(set)
}

fn flags_of(keywords: &BTreeSet<String>, keep: &[String]) -> Vec<String> {
    // IMAP-only flags JMAP cannot see (\Deleted) are kept as they were.
    let mut f: Vec<String> = keep
        .iter()
        .filter(|f| crate::jmap::account::keyword(f).is_none())
        .cloned()
        .collect();
    f.extend(keywords.iter().map(|k| flag(k)));
    f
}

/// Stores `bytes` in the given folders (blocking). Returns the Email id.
fn store_new(
    ctx: &Ctx<'_>,
    bytes: &[u8],
    mailboxes: &BTreeSet<String>,
    keywords: &BTreeSet<String>,
    received: jiff::Timestamp,
    how: &str,
) -> Result<String, Value> {
    let store = &ctx.jmap.gw.store;
    let blob = store
        .blobs()
        .put(bytes)
        .map_err(|e| set_error("serverFail", e.to_string()))?;
    let mut batch = Batch::new();
    for m in mailboxes {
        let Some(f) = ctx.view.folder_by_id(m) else {
            continue;
        };
        batch = batch
            .deliver(Delivery {
                mailbox: ctx.user.clone(),
                folder: f.name.clone(),
                blob: blob.clone(),
                flags: flags_of(keywords, &[]),
                internal_date: received,
                enforce_quota: true,
            })
            .trace(crate::imap::exec::append_trace(
                store, &ctx.user, &f.name, bytes, how,
            ));
    }
    match store.commit(batch) {
        Ok(_) => Ok(email_id(&blob.id)),
        Err(StoreError::QuotaExceeded { .. }) => Err(set_error("overQuota", "the mailbox is full")),
        Err(e) => Err(set_error("serverFail", e.to_string())),
    }
}

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
fn build_message(ctx: &Ctx<'_>, obj: &Map<String, Value>) -> Result<Vec<u8>, Value> {
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
        .map_err(|e| set_error("serverFail", e.to_string()))
}

/// Whether the caller may read blob `id`: a message of the account (or a part of one),
/// or the caller's own upload.
pub fn blob_accessible(ctx: &Ctx<'_>, id: &str) -> bool {
    let Some((base, _)) = content::split_blob_id(id) else {
        return false;
    };
    ctx.view.holds_blob(base.as_str()) || ctx.jmap.uploaded(&ctx.user.to_string(), base.as_str())
}

pub fn set(ctx: &mut Ctx<'_>, args: &Map<String, Value>) -> Out {
    if let Some(s) = args.get("ifInState").and_then(Value::as_str)
        && s != ctx.state()
    {
        return Err(MethodError::new(
            "stateMismatch",
            "ifInState does not match",
        ));
    }
    let n = args
        .get("create")
        .and_then(Value::as_object)
        .map_or(0, |m| m.len())
        + args
            .get("update")
            .and_then(Value::as_object)
            .map_or(0, |m| m.len())
        + args
            .get("destroy")
            .and_then(Value::as_array)
            .map_or(0, |a| a.len());
    if n > ctx.jmap.limits.max_objects_in_set {
        return Err(MethodError::new(
            "requestTooLarge",
            "too many objects in one set",
        ));
    }
    let old_state = ctx.state();
    let store = ctx.jmap.gw.store.clone();
    let (mut created, mut not_created) = (Map::new(), Map::new());
    let (mut updated, mut not_updated) = (Map::new(), Map::new());
    let (mut destroyed, mut not_destroyed) = (Vec::new(), Map::new());
    if let Some(Value::Object(c)) = args.get("create") {
        for (cid, obj) in c {
            let Value::Object(obj) = obj else { continue };
            let r = (|| -> Result<String, Value> {
                let mailboxes = apply_mailbox_patch(ctx, BTreeSet::new(), obj)?;
                let keywords = apply_keyword_patch(BTreeSet::new(), obj)?;
                let bytes = build_message(ctx, obj)?;
                let now = ctx.jmap.gw.clock.now();
                store_new(
                    ctx,
                    &bytes,
                    &mailboxes,
                    &keywords,
                    now,
                    "JMAP Email/set create",
                )
            })();
            match r {
                Ok(id) => {
                    ctx.refresh()?;
                    let e = ctx.view.email(&id);
                    created.insert(
                        cid.clone(),
                        json!({
                            "id": id,
                            "blobId": e.map(|e| format!("B{}", e.blob.as_str())),
                            "threadId": e.map(|e| e.thread_id.clone()),
                            "size": e.map(|e| e.size),
                        }),
                    );
                    ctx.created.insert(cid.clone(), id);
                }
                Err(e) => {
                    not_created.insert(cid.clone(), e);
                }
            }
        }
    }
    if let Some(Value::Object(u)) = args.get("update") {
        let mut batch = Batch::new();
        for (id, patch) in u {
            let id = ctx.id(id).unwrap_or_else(|| id.clone());
            let Some(e) = ctx.view.email(&id).cloned() else {
                not_updated.insert(id.clone(), set_error("notFound", "no such Email"));
                continue;
            };
            let Value::Object(patch) = patch else {
                continue;
            };
            let keywords = match apply_keyword_patch(e.keywords.clone(), patch) {
                Ok(k) => k,
                Err(err) => {
                    not_updated.insert(id.clone(), err);
                    continue;
                }
            };
            let mailboxes = match apply_mailbox_patch(ctx, e.mailbox_ids(), patch) {
                Ok(m) => m,
                Err(err) => {
                    not_updated.insert(id.clone(), err);
                    continue;
                }
            };
            // Records in folders that stay: new flags; folders left: expunged; folders
            // joined: a new record of the same blob.
            for l in &e.locations {
                if mailboxes.contains(&mailbox_id(l.folder_id)) {
                    let flags = flags_of(&keywords, &l.flags);
                    if flags != l.flags {
                        batch = batch.set_flags(ctx.user.clone(), l.folder.clone(), l.uid, flags);
                    }
                } else {
                    batch = batch.expunge(ctx.user.clone(), l.folder.clone(), l.uid);
                }
            }
            for m in &mailboxes {
                if e.locations.iter().any(|l| &mailbox_id(l.folder_id) == m) {
                    continue;
                }
                let Some(f) = ctx.view.folder_by_id(m) else {
                    continue;
                };
                batch = batch.deliver(Delivery {
                    mailbox: ctx.user.clone(),
                    folder: f.name.clone(),
                    blob: crate::store::Blob {
                        id: e.blob.clone(),
                        size: e.size,
                    },
                    flags: flags_of(&keywords, &[]),
                    internal_date: e.received,
                    // A move within the account does not grow it beyond what it holds.
                    enforce_quota: false,
                });
            }
            updated.insert(id.clone(), Value::Null);
        }
        if !batch.is_empty() {
            store.commit(batch)?;
        }
        if !updated.is_empty() {
            ctx.refresh()?;
        }
    }
    if let Some(Value::Array(d)) = args.get("destroy") {
        let mut batch = Batch::new();
        for id in d.iter().filter_map(Value::as_str) {
            let id = ctx.id(id).unwrap_or_else(|| id.to_string());
            match ctx.view.email(&id) {
                Some(e) => {
                    for l in &e.locations {
                        batch = batch.expunge(ctx.user.clone(), l.folder.clone(), l.uid);
                    }
                    destroyed.push(id);
                }
                None => {
                    not_destroyed.insert(id, set_error("notFound", "no such Email"));
                }
            }
        }
        if !batch.is_empty() {
            store.commit(batch)?;
            ctx.refresh()?;
        }
    }
    let outcome = SetOutcome {
        created,
        not_created,
        updated,
        not_updated,
        destroyed,
        not_destroyed,
    };
    Ok(outcome.answer(ctx, old_state))
}

pub fn import(ctx: &mut Ctx<'_>, args: &Map<String, Value>) -> Out {
    let old_state = ctx.state();
    let (mut created, mut not_created) = (Map::new(), Map::new());
    if let Some(Value::Object(emails)) = args.get("emails") {
        for (cid, obj) in emails {
            let Value::Object(obj) = obj else { continue };
            let r = (|| -> Result<String, Value> {
                let bid = obj.get("blobId").and_then(Value::as_str).unwrap_or("");
                let bid = ctx.id(bid).unwrap_or_else(|| bid.to_string());
                if !blob_accessible(ctx, &bid) {
                    return Err(set_error("blobNotFound", format!("no blob {bid}")));
                }
                let bytes = resolve_blob(&ctx.jmap.gw.store, &bid)
                    .map_err(|_| set_error("blobNotFound", format!("no blob {bid}")))?;
                if content::parse(&bytes).is_none_or(|m| m.headers().is_empty()) {
                    return Err(set_error(
                        "invalidEmail",
                        "the blob is not an RFC 5322 message",
                    ));
                }
                let mailboxes = apply_mailbox_patch(ctx, BTreeSet::new(), obj)?;
                let keywords = apply_keyword_patch(BTreeSet::new(), obj)?;
                let received = obj
                    .get("receivedAt")
                    .and_then(Value::as_str)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| ctx.jmap.gw.clock.now());
                store_new(
                    ctx,
                    &bytes,
                    &mailboxes,
                    &keywords,
                    received,
                    "JMAP Email/import",
                )
            })();
            match r {
                Ok(id) => {
                    ctx.refresh()?;
                    let e = ctx.view.email(&id);
                    created.insert(
                        cid.clone(),
                        json!({
                            "id": id,
                            "blobId": e.map(|e| format!("B{}", e.blob.as_str())),
                            "threadId": e.map(|e| e.thread_id.clone()),
                            "size": e.map(|e| e.size),
                        }),
                    );
                    ctx.created.insert(cid.clone(), id);
                }
                Err(e) => {
                    not_created.insert(cid.clone(), e);
                }
            }
        }
    }
    let mut out = Map::new();
    out.insert("accountId".into(), json!(ctx.account_id));
    out.insert("oldState".into(), json!(old_state));
    out.insert("newState".into(), json!(ctx.state()));
    out.insert("created".into(), Value::Object(created));
    out.insert("notCreated".into(), Value::Object(not_created));
    Ok(out)
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

/// Email/copy and Blob/copy copy between accounts; every user has exactly one account,
/// so there is never another account to copy from.
pub fn copy(ctx: &mut Ctx<'_>, args: &Map<String, Value>, name: &str) -> Out {
    let from = args
        .get("fromAccountId")
        .and_then(Value::as_str)
        .unwrap_or("");
    if from != ctx.account_id {
        return Err(MethodError::new("fromAccountNotFound", "no such account"));
    }
    if name == "Blob/copy" {
        // Same account: every blob the caller can read is already there.
        let (mut copied, mut not_copied) = (Map::new(), Map::new());
        for id in args
            .get("blobIds")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if blob_accessible(ctx, id) {
                copied.insert(id.into(), json!(id));
            } else {
                not_copied.insert(id.into(), set_error("blobNotFound", "no such blob"));
            }
        }
        let mut out = Map::new();
        out.insert("fromAccountId".into(), json!(from));
        out.insert("accountId".into(), json!(ctx.account_id));
        out.insert("copied".into(), Value::Object(copied));
        out.insert("notCopied".into(), Value::Object(not_copied));
        return Ok(out);
    }
    Err(MethodError::invalid_arguments(
        "fromAccountId and accountId are the same account: use Email/set to change mailboxIds",
    ))
}

fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn mark(text: &str, terms: &[String]) -> Option<String> {
    let lower = text.to_lowercase();
    let term = terms
        .iter()
        .find(|t| !t.is_empty() && lower.contains(&t.to_lowercase()))?;
    let tl = term.to_lowercase();
    let mut out = String::new();
    let mut rest = text;
    // Case-insensitive search on char boundaries of the original text.
    while let Some(pos) = rest.to_lowercase().find(&tl) {
        if !rest.is_char_boundary(pos) || !rest.is_char_boundary(pos + tl.len()) {
            break;
        }
        out.push_str(&escape_html(&rest[..pos]));
        out.push_str("<mark>");
        out.push_str(&escape_html(&rest[pos..pos + tl.len()]));
        out.push_str("</mark>");
        rest = &rest[pos + tl.len()..];
    }
    out.push_str(&escape_html(rest));
    Some(out)
}

fn text_terms(filter: &Value, out: &mut Vec<String>) {
    match filter {
        Value::Object(o) => {
            for k in ["text", "subject", "body"] {
                if let Some(s) = o.get(k).and_then(Value::as_str) {
                    out.push(s.to_string());
                }
            }
            if let Some(c) = o.get("conditions").and_then(Value::as_array) {
                for x in c {
                    text_terms(x, out);
                }
            }
        }
        _ => {}
    }
}

pub fn snippets(ctx: &mut Ctx<'_>, args: &Map<String, Value>) -> Out {
    let mut terms = Vec::new();
    text_terms(args.get("filter").unwrap_or(&Value::Null), &mut terms);
    let ids: Vec<String> = args
        .get("emailIds")
        .and_then(Value::as_array)
        .ok_or_else(|| MethodError::invalid_arguments("emailIds is required"))?
        .iter()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect();
    let (mut list, mut not_found) = (Vec::new(), Vec::new());
    for id in ids {
        match ctx.view.email(&id) {
            Some(e) => list.push(json!({
                "emailId": id,
                "subject": e.summary.subject.as_deref().and_then(|s| mark(s, &terms)),
                "preview": mark(&e.summary.preview, &terms),
            })),
            None => not_found.push(id),
        }
    }
    let mut out = Map::new();
    out.insert("accountId".into(), json!(ctx.account_id));
    out.insert("list".into(), Value::Array(list));
    out.insert("notFound".into(), json!(not_found));
    Ok(out)
}

/// The blob of an Email id (for EmailSubmission).
pub fn blob_of(ctx: &Ctx<'_>, id: &str) -> Option<BlobId> {
    ctx.view.email(id).map(|e| e.blob.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippets_escape_and_mark() {
        let m = mark("Fattura <n.1> del mese", &["fattura".into()]).unwrap();
        assert_eq!(m, "<mark>Fattura</mark> &lt;n.1&gt; del mese");
        assert!(mark("niente", &["x".into()]).is_none());
    }
}
