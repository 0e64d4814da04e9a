//! Mailbox/get, /query, /set (RFC 8621 §2), Thread/get (§3), Identity/get (§6) and
//! Quota/get (RFC 9425). Folders are the store's; names with `/` are a hierarchy (the IMAP
//! delimiter), so a Mailbox's `name` is the last level and `parentId` the folder above.
//! Special folders (INBOX, Sent, Drafts, Trash, Archive) have roles and cannot be
//! destroyed or renamed.

use serde_json::{Map, Value, json};

use super::{
    Ctx, MethodError, Out, SetOutcome, get_answer, ids_arg, properties_arg, query_answer, set_error,
};
use crate::jmap::account::mailbox_id;
use crate::store::{Batch, FolderInfo, StoreError};

const DELIM: char = '/';

/// The JMAP role of a folder name.
pub fn role(name: &str) -> Option<&'static str> {
    crate::store::messages::folder_role(name)
}

fn folder_json(ctx: &Ctx<'_>, f: &FolderInfo, props: &[String]) -> Value {
    let (parent, leaf) = match f.name.rsplit_once(DELIM) {
        Some((p, l)) => (ctx.view.folder_by_name(p).map(|p| mailbox_id(p.id)), l),
        None => (None, f.name.as_str()),
    };
    let mut total = 0u64;
    let mut unread = 0u64;
    let mut threads = std::collections::HashSet::new();
    let mut unread_threads = std::collections::HashSet::new();
    for e in ctx.view.emails.iter().filter(|e| e.in_folder(f.id)) {
        total += 1;
        threads.insert(&e.thread_id);
        if !e.keywords.contains("$seen") {
            unread += 1;
            unread_threads.insert(&e.thread_id);
        }
    }
    let is_role = role(&f.name).is_some();
    let mut o = Map::new();
    o.insert("id".into(), json!(mailbox_id(f.id)));
    o.insert(
        "name".into(),
        json!(if f.name == "INBOX" { "Inbox" } else { leaf }),
    );
    o.insert("parentId".into(), json!(parent));
    o.insert("role".into(), json!(role(&f.name)));
    o.insert(
        "sortOrder".into(),
        json!(match f.name.as_str() {
            "INBOX" => 1,
            "Drafts" => 2,
            "Sent" => 3,
            "Archive" => 4,
            "Trash" => 5,
            _ => 10,
        }),
    );
    o.insert("totalEmails".into(), json!(total));
    o.insert("unreadEmails".into(), json!(unread));
    o.insert("totalThreads".into(), json!(threads.len()));
    o.insert("unreadThreads".into(), json!(unread_threads.len()));
    let rights = if ctx.view.scope == crate::jmap::account::Scope::Archive {
        // The security archive: read, nothing else.
        json!({"mayReadItems": true, "mayAddItems": false, "mayRemoveItems": false,
               "maySetSeen": false, "maySetKeywords": false, "mayCreateChild": false,
               "mayRename": false, "mayDelete": false, "maySubmit": false})
    } else {
        json!({"mayReadItems": true, "mayAddItems": true, "mayRemoveItems": true,
               "maySetSeen": true, "maySetKeywords": true, "mayCreateChild": true,
               "mayRename": !is_role, "mayDelete": !is_role, "maySubmit": true})
    };
    o.insert("myRights".into(), rights);
    o.insert("isSubscribed".into(), json!(f.subscribed));
    o.retain(|k, _| k == "id" || props.iter().any(|p| p == k));
    Value::Object(o)
}

const MAILBOX_PROPS: &[&str] = &[
    "id",
    "name",
    "parentId",
    "role",
    "sortOrder",
    "totalEmails",
    "unreadEmails",
    "totalThreads",
    "unreadThreads",
    "myRights",
    "isSubscribed",
];

pub fn get(ctx: &mut Ctx<'_>, args: &Map<String, Value>) -> Out {
    let props = properties_arg(args, MAILBOX_PROPS)?;
    let ids = ids_arg(ctx, args, ctx.jmap.limits.max_objects_in_get)?;
    let (mut list, mut not_found) = (Vec::new(), Vec::new());
    match ids {
        None => {
            for f in &ctx.view.folders {
                list.push(folder_json(ctx, f, &props));
            }
        }
        Some(ids) => {
            for id in ids {
                match ctx.view.folder_by_id(&id) {
                    Some(f) => list.push(folder_json(ctx, f, &props)),
                    None => not_found.push(id),
                }
            }
        }
    }
    Ok(get_answer(ctx, list, not_found))
}

pub fn query(ctx: &mut Ctx<'_>, args: &Map<String, Value>) -> Out {
    let filter = args.get("filter").cloned().unwrap_or(Value::Null);
    let mut folders: Vec<&FolderInfo> = ctx
        .view
        .folders
        .iter()
        .filter(|f| {
            let role_ok = match filter.get("role") {
                None => true,
                Some(Value::Null) => role(&f.name).is_none(),
                Some(r) => r.as_str() == role(&f.name),
            };
            let name_ok = filter
                .get("name")
                .and_then(Value::as_str)
                .is_none_or(|n| f.name.to_lowercase().contains(&n.to_lowercase()));
            let parent_ok = match filter.get("parentId") {
                None => true,
                Some(Value::Null) => !f.name.contains(DELIM),
                Some(p) => f
                    .name
                    .rsplit_once(DELIM)
                    .and_then(|(parent, _)| ctx.view.folder_by_name(parent))
                    .is_some_and(|pf| p.as_str() == Some(mailbox_id(pf.id).as_str())),
            };
            let sub_ok = filter
                .get("isSubscribed")
                .and_then(Value::as_bool)
                .is_none_or(|s| s == f.subscribed);
            role_ok && name_ok && parent_ok && sub_ok
        })
        .collect();
    folders.sort_by(|a, b| a.name.cmp(&b.name));
    let ids: Vec<String> = folders.iter().map(|f| mailbox_id(f.id)).collect();
    let total = ids.len();
    Ok(query_answer(ctx, ids, 0, total))
}

fn full_name(ctx: &Ctx<'_>, name: &str, parent: Option<&Value>) -> Result<String, Value> {
    if name.is_empty()
        || name.contains(DELIM)
        || name.len() > 200
        || name.chars().any(char::is_control)
    {
        return Err(set_error(
            "invalidProperties",
            "name must be 1-200 characters without '/'",
        ));
    }
    let full = match parent.and_then(Value::as_str) {
        None => name.to_string(),
        Some(pid) => {
            let pid = ctx.id(pid).unwrap_or_default();
            let p = ctx
                .view
                .folder_by_id(&pid)
                .ok_or_else(|| set_error("invalidProperties", "parentId: no such mailbox"))?;
            format!("{}{DELIM}{name}", p.name)
        }
    };
    if crate::store::archive::is_archive(&full) {
        return Err(set_error(
            "forbidden",
            "this name is reserved for the security archive (Archivio di sicurezza)",
        ));
    }
    Ok(full)
}

pub fn set(ctx: &mut Ctx<'_>, args: &Map<String, Value>) -> Out {
    super::check_if_in_state(ctx, args)?;
    let old_state = ctx.state();
    let store = ctx.jmap.gw.store.clone();
    let user = ctx.user.clone();
    let (mut created, mut not_created) = (Map::new(), Map::new());
    let (mut updated, mut not_updated) = (Map::new(), Map::new());
    let (mut destroyed, mut not_destroyed) = (Vec::new(), Map::new());
    let mut changed = false;
    if let Some(Value::Object(c)) = args.get("create") {
        for (cid, obj) in c {
            let name = obj.get("name").and_then(Value::as_str).unwrap_or("");
            let full = match full_name(ctx, name, obj.get("parentId")) {
                Ok(n) => n,
                Err(e) => {
                    not_created.insert(cid.clone(), e);
                    continue;
                }
            };
            if ctx.view.folder_by_name(&full).is_some() {
                not_created.insert(
                    cid.clone(),
                    set_error("invalidProperties", "a mailbox with this name exists"),
                );
                continue;
            }
            let mut b = Batch::new().create_folder(user.clone(), full.clone());
            if obj
                .get("isSubscribed")
                .and_then(Value::as_bool)
                .unwrap_or(true)
            {
                b = b.subscribe(user.clone(), full.clone());
            }
            store.commit(b)?;
            ctx.refresh()?;
            if let Some(f) = ctx.view.folder_by_name(&full) {
                let id = mailbox_id(f.id);
                ctx.created.insert(cid.clone(), id.clone());
                created.insert(cid.clone(), json!({"id": id}));
                changed = true;
            }
        }
    }
    if let Some(Value::Object(u)) = args.get("update") {
        for (given, patch) in u {
            let id = &ctx.id(given).unwrap_or_else(|| given.clone());
            let Some(f) = ctx.view.folder_by_id(id).cloned() else {
                not_updated.insert(id.clone(), set_error("notFound", "no such mailbox"));
                continue;
            };
            let mut batch = Batch::new();
            if let Some(name) = patch.get("name").and_then(Value::as_str) {
                if role(&f.name).is_some() {
                    not_updated.insert(
                        id.clone(),
                        set_error("forbidden", "a special mailbox cannot be renamed"),
                    );
                    continue;
                }
                let parent = f
                    .name
                    .rsplit_once(DELIM)
                    .and_then(|(p, _)| ctx.view.folder_by_name(p))
                    .map(|p| json!(mailbox_id(p.id)));
                let parent = patch.get("parentId").cloned().or(parent);
                match full_name(ctx, name, parent.as_ref()) {
                    Ok(n) if n != f.name => {
                        batch = batch.rename_folder(user.clone(), f.name.clone(), n)
                    }
                    Ok(_) => {}
                    Err(e) => {
                        not_updated.insert(id.clone(), e);
                        continue;
                    }
                }
            }
            if let Some(s) = patch.get("isSubscribed").and_then(Value::as_bool) {
                batch = if s {
                    batch.subscribe(user.clone(), f.name.clone())
                } else {
                    batch.unsubscribe(user.clone(), f.name.clone())
                };
            }
            if !batch.is_empty() {
                store.commit(batch)?;
                changed = true;
            }
            updated.insert(id.clone(), Value::Null);
        }
        if changed {
            ctx.refresh()?;
        }
    }
    if let Some(Value::Array(d)) = args.get("destroy") {
        let remove_emails = args
            .get("onDestroyRemoveEmails")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        for given in d.iter().filter_map(Value::as_str) {
            let id = &ctx.id(given).unwrap_or_else(|| given.to_string());
            let id = id.as_str();
            let Some(f) = ctx.view.folder_by_id(id).cloned() else {
                not_destroyed.insert(id.into(), set_error("notFound", "no such mailbox"));
                continue;
            };
            if role(&f.name).is_some() {
                not_destroyed.insert(
                    id.into(),
                    set_error("forbidden", "a special mailbox cannot be destroyed"),
                );
                continue;
            }
            if f.messages > 0 && !remove_emails {
                not_destroyed.insert(
                    id.into(),
                    set_error("mailboxHasEmail", "the mailbox is not empty"),
                );
                continue;
            }
            if ctx
                .view
                .folders
                .iter()
                .any(|c| c.name.starts_with(&format!("{}{DELIM}", f.name)))
            {
                not_destroyed.insert(
                    id.into(),
                    set_error("mailboxHasChild", "the mailbox has children"),
                );
                continue;
            }
            match store.commit(Batch::new().delete_folder(user.clone(), f.name.clone())) {
                Ok(_) => destroyed.push(id.to_string()),
                Err(StoreError::NoSuchFolder { .. }) => {
                    not_destroyed.insert(id.into(), set_error("notFound", "no such mailbox"));
                }
                Err(e) => return Err(e.into()),
            }
        }
        if !destroyed.is_empty() {
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

pub fn thread_get(ctx: &mut Ctx<'_>, args: &Map<String, Value>) -> Out {
    let ids = ids_arg(ctx, args, ctx.jmap.limits.max_objects_in_get)?
        .ok_or_else(|| MethodError::invalid_arguments("ids is required"))?;
    let (mut list, mut not_found) = (Vec::new(), Vec::new());
    for id in ids {
        match ctx.view.by_thread.get(&id) {
            Some(v) => list.push(json!({
                "id": id,
                "emailIds": v.iter().map(|&i| ctx.view.emails[i].id.clone()).collect::<Vec<_>>(),
            })),
            None => not_found.push(id),
        }
    }
    Ok(get_answer(ctx, list, not_found))
}

/// The one identity of a mailbox: PEC has no "send as" (rules §6.1).
pub fn identity_get(ctx: &mut Ctx<'_>, _args: &Map<String, Value>) -> Out {
    let list = vec![json!({
        "id": "I0",
        "name": "",
        "email": ctx.user.to_string(),
        "replyTo": null,
        "bcc": null,
        "textSignature": "",
        "htmlSignature": "",
        "mayDelete": false,
    })];
    Ok(get_answer(ctx, list, Vec::new()))
}

pub fn quota_get(ctx: &mut Ctx<'_>, _args: &Map<String, Value>) -> Out {
    let store = &ctx.jmap.gw.store;
    let gone = || MethodError::new("accountNotFound", "the mailbox is gone");
    // The security archive's account has its own size, beside the mailbox's.
    let (used, limit, name, description) =
        if ctx.account_id == crate::jmap::archive_account_id(&ctx.user.to_string()) {
            let st = store.archive_state(&ctx.user)?.ok_or_else(gone)?;
            (
                st.usage_bytes,
                st.quota_bytes,
                format!("Archivio di sicurezza di {}", ctx.user),
                Some(
                    "Copie in sola lettura. A spazio esaurito, le copie conservate da più del \
                     periodo previsto fanno posto alle nuove.",
                ),
            )
        } else {
            let info = store.mailbox(&ctx.user)?.ok_or_else(gone)?;
            (
                info.usage_bytes,
                info.quota_bytes,
                format!("Spazio della casella {}", ctx.user),
                None,
            )
        };
    let list = vec![json!({
        "id": "Q0",
        "resourceType": "octets",
        "used": used,
        "hardLimit": limit,
        "warnLimit": limit / 10 * 9,
        "scope": "account",
        "name": name,
        "types": ["Email"],
        "description": description,
    })];
    Ok(get_answer(ctx, list, Vec::new()))
}
