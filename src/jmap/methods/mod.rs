//! The method calls of one JMAP request, in order (RFC 8620 §3.3): result references
//! resolved against earlier answers, creation ids carried across calls, each method's
//! arguments checked. Runs on a blocking thread: methods read the store and blob files;
//! the one asynchronous step (submission through the access point) is awaited with the
//! runtime handle.
//!
//! | module | methods |
//! |---|---|
//! | [`mailbox`] | Mailbox/get, /query, /changes, /set; Thread/get, /changes; Identity/get; Quota/get |
//! | [`email`] | Email/get, /query, /parse; which blobs a caller may read |
//! | [`email_set`] | Email/set, /import, /copy; Blob/copy |
//! | [`compose`] | the message of an Email/set create |
//! | [`snippets`] | SearchSnippet/get |
//! | [`submission`] | EmailSubmission/set, /get, /query, /changes |

pub mod compose;
pub mod email;
pub mod email_set;
pub mod mailbox;
pub mod query;
pub mod snippets;
pub mod submission;

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::account::{View, email_id, mailbox_id};
use super::request::{Call, MethodError, Request, resolve_references};
use super::{CAP_MAIL, CAP_PEC, CAP_QUOTA, CAP_SUBMISSION, Jmap};
use crate::pec::address::PecAddress;

/// What every method of one request shares.
pub struct Ctx<'a> {
    pub jmap: &'a Arc<Jmap>,
    pub user: PecAddress,
    pub account_id: String,
    pub view: Arc<View>,
    pub using: Vec<String>,
    /// Creation id → server id, across the calls of this request.
    pub created: HashMap<String, String>,
    pub rt: tokio::runtime::Handle,
}

impl Ctx<'_> {
    pub fn state(&self) -> String {
        self.jmap.state_string(self.view.state)
    }

    pub fn uses(&self, cap: &str) -> bool {
        self.using.iter().any(|u| u == cap)
    }

    /// After a change this request made: rebuild the view, so the next call sees it.
    pub fn refresh(&mut self) -> Result<(), MethodError> {
        let (j, u) = (self.jmap.clone(), self.user.clone());
        self.view = self.rt.block_on(async move { j.view(&u).await })?;
        Ok(())
    }

    /// An id as given, or the server id of a creation id `#x` made earlier.
    pub fn id(&self, given: &str) -> Option<String> {
        match given.strip_prefix('#') {
            Some(c) => self.created.get(c).cloned(),
            None => Some(given.to_string()),
        }
    }
}

/// The capability a method needs.
fn needs(name: &str) -> Option<&'static str> {
    let (ty, _) = name.split_once('/')?;
    Some(match ty {
        "Core" | "Blob" => super::CAP_CORE,
        "Mailbox" | "Email" | "Thread" | "SearchSnippet" => CAP_MAIL,
        "Identity" | "EmailSubmission" => CAP_SUBMISSION,
        "Quota" => CAP_QUOTA,
        _ => return None,
    })
}

/// Runs a request; returns the Response object (RFC 8620 §3.4).
pub fn run(ctx: &mut Ctx<'_>, req: Request) -> Value {
    if let Some(c) = req.created_ids {
        for (k, v) in c {
            if let Value::String(s) = v {
                ctx.created.insert(k, s);
            }
        }
    }
    let mut responses: Vec<(String, Value, String)> = Vec::new();
    let mut implicit: Option<(String, Value)> = None;
    for Call { name, mut args, id } in req.calls {
        let result = resolve_references(&mut args, &responses).and_then(|()| {
            match needs(&name) {
                Some(cap) if cap == super::CAP_CORE || ctx.uses(cap) => {}
                Some(_) => {
                    return Err(MethodError::new(
                        "unknownMethod",
                        format!("{name} needs its capability in \"using\""),
                    ));
                }
                None => {
                    return Err(MethodError::new(
                        "unknownMethod",
                        format!("no method {name}"),
                    ));
                }
            }
            if name != "Core/echo"
                && let Some(a) = args.get("accountId")
                && a.as_str() != Some(ctx.account_id.as_str())
            {
                let archive = super::archive_account_id(&ctx.user.to_string());
                if a.as_str() != Some(archive.as_str()) {
                    return Err(MethodError::new("accountNotFound", "no such account"));
                }
                return in_archive(ctx, &name, args, archive);
            }
            call(ctx, &name, args, &mut implicit)
        });
        match result {
            Ok(v) => responses.push((name, Value::Object(v), id.clone())),
            Err(e) => responses.push(("error".into(), e.to_value(), id.clone())),
        }
        if let Some((n, v)) = implicit.take() {
            responses.push((n, v, id));
        }
    }
    let created: Map<String, Value> = ctx
        .created
        .iter()
        .map(|(k, v)| (k.clone(), Value::from(v.clone())))
        .collect();
    json!({
        "methodResponses": responses.into_iter().map(|(n, v, i)| json!([n, v, i])).collect::<Vec<_>>(),
        "createdIds": created,
        "sessionState": ctx.jmap.session_state(&ctx.user.to_string()),
    })
}

type Out = Result<Map<String, Value>, MethodError>;

/// A call on the security archive's account: only reads are answered, on its view (the
/// account's own view is put back after).
fn in_archive(ctx: &mut Ctx<'_>, name: &str, args: Map<String, Value>, archive: String) -> Out {
    match name {
        "Mailbox/get" | "Mailbox/query" | "Thread/get" | "Email/get" | "Email/query"
        | "SearchSnippet/get" | "Email/parse" | "Quota/get" => {}
        // Its state is the mailbox's modseq, whose change log describes the other account.
        n if n.ends_with("/changes") || n.ends_with("/queryChanges") => {
            return Err(MethodError::new(
                "cannotCalculateChanges",
                "the security archive's changes are not kept: fetch it again",
            ));
        }
        n if n.ends_with("/set") || n == "Email/import" || n == "Email/copy" => {
            return Err(MethodError::new(
                "accountReadOnly",
                "the security archive (Archivio di sicurezza) can be read, not changed",
            ));
        }
        _ => {
            return Err(MethodError::new(
                "accountNotSupportedByMethod",
                format!("{name} is not available on the security archive"),
            ));
        }
    }
    let (j, u) = (ctx.jmap.clone(), ctx.user.clone());
    let view = ctx
        .rt
        .block_on(async move { j.view_in(&u, super::account::Scope::Archive).await })?;
    let own_view = std::mem::replace(&mut ctx.view, view);
    let own_id = std::mem::replace(&mut ctx.account_id, archive);
    let mut none = None;
    let out = call(ctx, name, args, &mut none);
    ctx.view = own_view;
    ctx.account_id = own_id;
    out
}

fn call(
    ctx: &mut Ctx<'_>,
    name: &str,
    args: Map<String, Value>,
    implicit_out: &mut Option<(String, Value)>,
) -> Out {
    match name {
        "Core/echo" => Ok(args),
        "Mailbox/get" => mailbox::get(ctx, &args),
        "Mailbox/query" => mailbox::query(ctx, &args),
        "Mailbox/changes" => changes(ctx, &args, "Mailbox"),
        "Mailbox/queryChanges" | "Email/queryChanges" => query_changes(ctx, &args),
        "Mailbox/set" => mailbox::set(ctx, &args),
        "Thread/get" => mailbox::thread_get(ctx, &args),
        "Thread/changes" => changes(ctx, &args, "Thread"),
        "Identity/get" => mailbox::identity_get(ctx, &args),
        "Identity/changes" => changes(ctx, &args, "Identity"),
        "Quota/get" => mailbox::quota_get(ctx, &args),
        "Email/get" => email::get(ctx, &args),
        "Email/query" => email::query(ctx, &args),
        "Email/changes" => changes(ctx, &args, "Email"),
        "Email/set" => email_set::set(ctx, &args),
        "Email/import" => email_set::import(ctx, &args),
        "Email/parse" => email::parse(ctx, &args),
        "Email/copy" | "Blob/copy" => email_set::copy(ctx, &args, name),
        "SearchSnippet/get" => snippets::snippets(ctx, &args),
        "EmailSubmission/set" => {
            let (out, implicit) = submission::set(ctx, &args)?;
            // onSuccessUpdateEmail / onSuccessDestroyEmail: an implicit Email/set whose
            // answer follows with the same call id (RFC 8621 §7.5).
            if let Some(set_args) = implicit {
                let then = match email_set::set(ctx, &set_args) {
                    Ok(v) => ("Email/set".to_string(), Value::Object(v)),
                    Err(e) => ("error".to_string(), e.to_value()),
                };
                *implicit_out = Some(then);
            }
            Ok(out)
        }
        "EmailSubmission/get" => submission::get(ctx, &args),
        "EmailSubmission/query" => submission::query(ctx, &args),
        "EmailSubmission/changes" => changes(ctx, &args, "EmailSubmission"),
        _ => Err(MethodError::new(
            "unknownMethod",
            format!("no method {name}"),
        )),
    }
}

/// `/changes` (RFC 8620 §5.2) from the store's change log. Email and Mailbox changes are
/// the store's; a Thread changed when one of its Emails did; identities never change;
/// submissions are derived from receipts and are recalculated by the client.
fn changes(ctx: &Ctx<'_>, args: &Map<String, Value>, ty: &str) -> Out {
    let since_str = args
        .get("sinceState")
        .and_then(Value::as_str)
        .ok_or_else(|| MethodError::invalid_arguments("sinceState is required"))?;
    let cannot = || {
        MethodError::new(
            "cannotCalculateChanges",
            "the state is too old or unknown: fetch again",
        )
    };
    let since: u64 = since_str.parse().map_err(|_| cannot())?;
    let max = match args.get("maxChanges") {
        None | Some(Value::Null) => 5000,
        Some(v) => match v.as_u64() {
            Some(n) if n > 0 => n as usize,
            _ => {
                return Err(MethodError::invalid_arguments(
                    "maxChanges must be a positive integer",
                ));
            }
        },
    };
    let current = ctx.jmap.gw.store.modseq(&ctx.user)?;
    let (mut created, mut updated, mut destroyed) = (Vec::new(), Vec::new(), Vec::new());
    let (new_state, more) = match ty {
        "Identity" => {
            if since > current {
                return Err(cannot());
            }
            (current, false)
        }
        "EmailSubmission" => {
            if since != current {
                return Err(cannot());
            }
            (current, false)
        }
        _ => {
            let kind = if ty == "Mailbox" {
                crate::store::ChangeKind::Mailbox
            } else {
                crate::store::ChangeKind::Email
            };
            let c = match ctx
                .jmap
                .gw
                .store
                .changes_since_of(&ctx.user, kind, since, max)
            {
                Ok(c) => c,
                Err(
                    crate::store::StoreError::ChangesTooOld { .. }
                    | crate::store::StoreError::ChangesTooMany { .. },
                ) => {
                    return Err(cannot());
                }
                Err(e) => return Err(e.into()),
            };
            match ty {
                "Mailbox" => {
                    let f = |v: &[u64]| v.iter().map(|&i| mailbox_id(i)).collect::<Vec<_>>();
                    created = f(&c.folders.created);
                    updated = f(&c.folders.updated);
                    destroyed = f(&c.folders.destroyed);
                }
                "Email" => {
                    let f = |v: &[crate::store::BlobId]| v.iter().map(email_id).collect::<Vec<_>>();
                    created = f(&c.emails.created);
                    updated = f(&c.emails.updated);
                    destroyed = f(&c.emails.destroyed);
                }
                _ => {
                    // Thread: the threads of the Emails that changed. A thread is new when
                    // every Email it has now was created in the window; gone when it has none.
                    let new_emails: std::collections::HashSet<String> =
                        c.emails.created.iter().map(email_id).collect();
                    let mut seen = std::collections::BTreeSet::new();
                    for b in c
                        .emails
                        .created
                        .iter()
                        .chain(&c.emails.updated)
                        .chain(&c.emails.destroyed)
                    {
                        let t = match ctx.view.email(&email_id(b)) {
                            Some(e) => e.thread_id.clone(),
                            None => match crate::jmap::account::summary_of(&ctx.jmap.gw.store, b) {
                                Ok(s) => crate::jmap::account::thread_id(&s.thread_key),
                                Err(_) => continue,
                            },
                        };
                        if !seen.insert(t.clone()) {
                            continue;
                        }
                        match ctx.view.by_thread.get(&t) {
                            None => destroyed.push(t),
                            Some(members)
                                if members
                                    .iter()
                                    .all(|&i| new_emails.contains(&ctx.view.emails[i].id)) =>
                            {
                                created.push(t)
                            }
                            Some(_) => updated.push(t),
                        }
                    }
                }
            }
            (c.new_modseq, c.has_more_changes)
        }
    };
    let mut out = Map::new();
    out.insert("accountId".into(), json!(ctx.account_id));
    out.insert("oldState".into(), json!(since_str));
    out.insert("newState".into(), json!(ctx.jmap.state_string(new_state)));
    out.insert("hasMoreChanges".into(), json!(more));
    out.insert("created".into(), json!(created));
    out.insert("updated".into(), json!(updated));
    out.insert("destroyed".into(), json!(destroyed));
    if ty == "Mailbox" {
        out.insert("updatedProperties".into(), Value::Null);
    }
    Ok(out)
}

fn query_changes(ctx: &Ctx<'_>, args: &Map<String, Value>) -> Out {
    let since = args
        .get("sinceQueryState")
        .and_then(Value::as_str)
        .ok_or_else(|| MethodError::invalid_arguments("sinceQueryState is required"))?;
    if since != ctx.state() {
        return Err(MethodError::new(
            "cannotCalculateChanges",
            "the state moved: query again",
        ));
    }
    let mut out = Map::new();
    out.insert("accountId".into(), json!(ctx.account_id));
    out.insert("oldQueryState".into(), json!(since));
    out.insert("newQueryState".into(), json!(ctx.state()));
    out.insert("removed".into(), json!([]));
    out.insert("added".into(), json!([]));
    Ok(out)
}

/// The `ids` argument: `None` for null/absent, else the ids (creation ids resolved).
pub fn ids_arg(
    ctx: &Ctx<'_>,
    args: &Map<String, Value>,
    max: usize,
) -> Result<Option<Vec<String>>, MethodError> {
    match args.get("ids") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => {
            if a.len() > max {
                return Err(MethodError::new(
                    "requestTooLarge",
                    format!("at most {max} ids"),
                ));
            }
            a.iter()
                .map(|v| {
                    v.as_str()
                        .map(|s| ctx.id(s).unwrap_or_else(|| s.to_string()))
                        .ok_or_else(|| MethodError::invalid_arguments("ids must be strings"))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some)
        }
        Some(_) => Err(MethodError::invalid_arguments(
            "ids must be an array or null",
        )),
    }
}

/// The `properties` argument, or the defaults.
pub fn properties_arg(
    args: &Map<String, Value>,
    default: &[&str],
) -> Result<Vec<String>, MethodError> {
    match args.get("properties") {
        None | Some(Value::Null) => Ok(default.iter().map(|s| s.to_string()).collect()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| MethodError::invalid_arguments("properties must be strings"))
            })
            .collect(),
        Some(_) => Err(MethodError::invalid_arguments(
            "properties must be an array",
        )),
    }
}

/// A `/get` answer.
pub fn get_answer(ctx: &Ctx<'_>, list: Vec<Value>, not_found: Vec<String>) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("accountId".into(), json!(ctx.account_id));
    out.insert("state".into(), json!(ctx.state()));
    out.insert("list".into(), Value::Array(list));
    out.insert("notFound".into(), json!(not_found));
    out
}

/// `ifInState` of a `/set` (RFC 8620 §5.3): `stateMismatch` when the account moved on.
pub fn check_if_in_state(ctx: &Ctx<'_>, args: &Map<String, Value>) -> Result<(), MethodError> {
    match args.get("ifInState").and_then(Value::as_str) {
        Some(s) if s != ctx.state() => Err(MethodError::new(
            "stateMismatch",
            "ifInState does not match",
        )),
        _ => Ok(()),
    }
}

/// A SetError (RFC 8620 §5.3): its type and a human description.
pub fn set_error(kind: &str, description: impl Into<String>) -> Value {
    json!({"type": kind, "description": description.into()})
}

/// A `serverFail` SetError for an internal failure while `doing` something: the cause
/// goes to the log, the client is told only what failed (a store error names files and
/// hosts, which are not the client's business); `motivo` says it in Italian for the
/// webmail, as the refusals of EmailSubmission/set do.
pub fn server_fail(doing: &str, cause: &dyn std::fmt::Display) -> Value {
    tracing::error!(error = %cause, "JMAP: {doing} failed");
    let mut e = set_error("serverFail", format!("{doing} failed; try again later"));
    e["motivo"] = Value::from(
        "Errore temporaneo del gestore: l'operazione non è riuscita e nulla è stato inviato. Riprovare tra qualche minuto.",
    );
    e
}

/// What a `/set` call did, answered as RFC 8620 §5.3 shapes it.
#[derive(Default)]
pub struct SetOutcome {
    pub created: Map<String, Value>,
    pub not_created: Map<String, Value>,
    pub updated: Map<String, Value>,
    pub not_updated: Map<String, Value>,
    pub destroyed: Vec<String>,
    pub not_destroyed: Map<String, Value>,
}

impl SetOutcome {
    pub fn answer(self, ctx: &Ctx<'_>, old_state: String) -> Map<String, Value> {
        let mut out = Map::new();
        out.insert("accountId".into(), json!(ctx.account_id));
        out.insert("oldState".into(), json!(old_state));
        out.insert("newState".into(), json!(ctx.state()));
        out.insert("created".into(), Value::Object(self.created));
        out.insert("updated".into(), Value::Object(self.updated));
        out.insert("destroyed".into(), json!(self.destroyed));
        out.insert("notCreated".into(), Value::Object(self.not_created));
        out.insert("notUpdated".into(), Value::Object(self.not_updated));
        out.insert("notDestroyed".into(), Value::Object(self.not_destroyed));
        out
    }
}

/// A `/query` answer for `ids` from `position` (the whole list's length is `total`).
pub fn query_answer(
    ctx: &Ctx<'_>,
    ids: Vec<String>,
    position: usize,
    total: usize,
) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("accountId".into(), json!(ctx.account_id));
    out.insert("queryState".into(), json!(ctx.state()));
    out.insert("canCalculateChanges".into(), json!(false));
    out.insert("position".into(), json!(position));
    out.insert("total".into(), json!(total));
    out.insert("ids".into(), json!(ids));
    out
}

/// The PEC capability is in `using`: the `pec` property may be asked for.
pub fn pec_enabled(ctx: &Ctx<'_>) -> bool {
    ctx.uses(CAP_PEC)
}

#[cfg(test)]
mod server_fail_tests {
    use super::*;

    #[test]
    fn a_server_failure_tells_the_client_what_failed_not_where() {
        let cause = crate::store::StoreError::Io {
            path: "/var/lib/pecd/blobs/ab/cd/secret-path".into(),
            source: std::io::Error::other("disk on fire"),
        };
        let v = server_fail("storing the message", &cause);
        assert_eq!(v["type"], "serverFail");
        let d = v["description"].as_str().unwrap();
        assert!(d.starts_with("storing the message failed"), "{d}");
        assert!(!d.contains("/var/lib") && !d.contains("fire"), "{d}");
        let motivo = v["motivo"].as_str().unwrap();
        assert!(
            motivo.contains("Riprovare") && !motivo.contains("/var/lib"),
            "{motivo}"
        );
    }
}
