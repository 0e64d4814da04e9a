//! Changing Emails (RFC 8621 §4.6, §4.8; RFC 8620 §5.4): Email/set, Email/import, and
//! Email/copy / Blob/copy.
//!
//! Storing goes through the same store operations as IMAP (a [`Delivery`] with its
//! `MessageStored` trace record in one commit; quota enforced), keywords are IMAP flags,
//! a move keeps the Email (a new record of the same blob, the old one expunged) and
//! destroying expunges every record of the Email. Nothing here can make a message look
//! certified. Untrusted input: every argument, and the uploaded blobs imported.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use super::email::blob_accessible;
use super::{Ctx, MethodError, Out, SetOutcome, server_fail, set_error};
use crate::jmap::account::{email_id, flag, mailbox_id, summary_of, thread_id};
use crate::jmap::email::{self as content, resolve_blob};
use crate::store::{Batch, Blob, Delivery, StoreError};

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
) -> Result<Blob, Value> {
    let store = &ctx.jmap.gw.store;
    // Staged: the commit below makes it durable before it refers to it.
    let blob = store
        .blobs()
        .put_staged(bytes)
        .map_err(|e| server_fail("storing the message", &e))?;
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
                facts: None,
                archive: false,
            })
            .trace(crate::imap::exec::append_trace(
                store, &ctx.user, &f.name, bytes, how,
            ));
    }
    match store.commit(batch) {
        Ok(_) => Ok(blob),
        Err(StoreError::QuotaExceeded { .. }) => Err(set_error("overQuota", "the mailbox is full")),
        Err(e) => Err(server_fail("storing the message", &e)),
    }
}

/// Records the outcome of one creation (Email/set create, Email/import): the created
/// Email's id, blobId, threadId and size (RFC 8621 §4.6), or the SetError.
fn record_created(
    ctx: &mut Ctx<'_>,
    cid: &str,
    r: Result<Blob, Value>,
    created: &mut Map<String, Value>,
    not_created: &mut Map<String, Value>,
) {
    match r {
        Ok(blob) => {
            let id = email_id(&blob.id);
            // The thread comes from the summary, computed once per content; the view
            // itself is rebuilt once, after every creation of the call.
            let thread = summary_of(&ctx.jmap.gw.store, &blob.id)
                .ok()
                .map(|s| thread_id(&s.thread_key));
            created.insert(
                cid.to_string(),
                json!({
                    "id": id,
                    "blobId": format!("B{}", blob.id.as_str()),
                    "threadId": thread,
                    "size": blob.size,
                }),
            );
            ctx.created.insert(cid.to_string(), id);
        }
        Err(e) => {
            not_created.insert(cid.to_string(), e);
        }
    }
}

pub fn set(ctx: &mut Ctx<'_>, args: &Map<String, Value>) -> Out {
    super::check_if_in_state(ctx, args)?;
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
            let r = (|| -> Result<Blob, Value> {
                let mailboxes = apply_mailbox_patch(ctx, BTreeSet::new(), obj)?;
                let keywords = apply_keyword_patch(BTreeSet::new(), obj)?;
                let bytes = super::compose::build_message(ctx, obj)?;
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
            record_created(ctx, cid, r, &mut created, &mut not_created);
        }
        if !created.is_empty() {
            ctx.refresh()?;
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
                    facts: None,
                    archive: false,
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
            let r = (|| -> Result<Blob, Value> {
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
            record_created(ctx, cid, r, &mut created, &mut not_created);
        }
        if !created.is_empty() {
            ctx.refresh()?;
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
