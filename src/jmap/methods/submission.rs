//! EmailSubmission/set, /get, /query (RFC 8621 §7), through the access point.
//!
//! **Sending** runs [`crate::pipeline::access::submit`], exactly what SMTP submission runs:
//! the formal checks (Bcc refused, recipients, sizes, the sender is the logged-in mailbox),
//! the acceptance receipt or the non-acceptance notice, the signed envelope, the queue and
//! the trace. A refusal is `notCreated` with the access point's reason.
//!
//! **Submissions are derived from the acceptance receipts** in the account (one per
//! message accepted, stored in the sender's INBOX by the access point), so they survive
//! restarts and need no table of their own: the id is `S` + identificativo, and each
//! recipient's `deliveryStatus` is read from the receipts and notices with that
//! identificativo (rules §4: avvenuta-consegna → delivered `yes`; errore-consegna → `no`;
//! presa-in-carico / preavviso → `queued` / `unknown`), with the PEC detail (which
//! receipt, when) in `pecReceipts`.

use serde_json::{Map, Value, json};

use super::{Ctx, MethodError, Out, get_answer, ids_arg, query_answer, server_fail, set_error};
use crate::jmap::account::Entry;
use crate::smtp::session::Envelope;

/// The id of the submission of `identificativo` (JMAP ids allow only `[A-Za-z0-9_-]`).
pub fn submission_id(identificativo: &str) -> String {
    let bare = crate::pec::ids::bare(identificativo);
    format!("S{}", &crate::trace::sha256_hex(bare.as_bytes())[..32])
}

/// The implicit Email/set arguments of onSuccessUpdateEmail / onSuccessDestroyEmail.
type Implicit = Option<Map<String, Value>>;

pub fn set(
    ctx: &mut Ctx<'_>,
    args: &Map<String, Value>,
) -> Result<(Map<String, Value>, Implicit), MethodError> {
    let old_state = ctx.state();
    let (mut created, mut not_created) = (Map::new(), Map::new());
    // creation id → email id, for the implicit Email/set.
    let mut sent: Vec<(String, String)> = Vec::new();
    if let Some(Value::Object(c)) = args.get("create") {
        for (cid, obj) in c {
            match submit_one(ctx, obj) {
                Ok((sid, email, ident)) => {
                    created.insert(cid.clone(), json!({
                        "id": sid,
                        "identificativo": ident,
                        "undoStatus": "final",
                        "sendAt": ctx.jmap.gw.clock.now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
                    }));
                    ctx.created.insert(cid.clone(), sid);
                    sent.push((cid.clone(), email));
                }
                Err(e) => {
                    not_created.insert(cid.clone(), e);
                }
            }
        }
        if !sent.is_empty() {
            ctx.refresh()?;
        }
    }
    let mut not_updated = Map::new();
    if let Some(Value::Object(u)) = args.get("update") {
        for id in u.keys() {
            not_updated.insert(
                id.clone(),
                set_error(
                    "cannotUnsend",
                    "a PEC message once accepted cannot be recalled",
                ),
            );
        }
    }
    let mut not_destroyed = Map::new();
    if let Some(Value::Array(d)) = args.get("destroy") {
        for id in d.iter().filter_map(Value::as_str) {
            not_destroyed.insert(
                id.into(),
                set_error(
                    "forbidden",
                    "submissions are the record of accepted PEC messages",
                ),
            );
        }
    }
    let mut out = Map::new();
    out.insert("accountId".into(), json!(ctx.account_id));
    out.insert("oldState".into(), json!(old_state));
    out.insert("newState".into(), json!(ctx.state()));
    out.insert("created".into(), Value::Object(created));
    out.insert("updated".into(), json!({}));
    out.insert("destroyed".into(), json!([]));
    out.insert("notCreated".into(), Value::Object(not_created));
    out.insert("notUpdated".into(), Value::Object(not_updated));
    out.insert("notDestroyed".into(), Value::Object(not_destroyed));

    // RFC 8621 §7.5: onSuccess* name submissions by creation id (`#c`) or id.
    let email_for = |key: &str| -> Option<String> {
        let c = key.strip_prefix('#')?;
        sent.iter()
            .find(|(cid, _)| cid == c)
            .map(|(_, e)| e.clone())
    };
    let mut update = Map::new();
    if let Some(Value::Object(u)) = args.get("onSuccessUpdateEmail") {
        for (k, patch) in u {
            if let Some(e) = email_for(k) {
                update.insert(e, patch.clone());
            }
        }
    }
    let mut destroy = Vec::new();
    if let Some(Value::Array(d)) = args.get("onSuccessDestroyEmail") {
        for k in d.iter().filter_map(Value::as_str) {
            if let Some(e) = email_for(k) {
                destroy.push(Value::from(e));
            }
        }
    }
    let implicit = (!update.is_empty() || !destroy.is_empty()).then(|| {
        let mut m = Map::new();
        m.insert("accountId".into(), json!(ctx.account_id));
        m.insert("update".into(), Value::Object(update));
        m.insert("destroy".into(), Value::Array(destroy));
        m
    });
    Ok((out, implicit))
}

/// Submits one Email; returns the submission id, the Email id and the identificativo.
fn submit_one(ctx: &mut Ctx<'_>, obj: &Value) -> Result<(String, String, String), Value> {
    let identity = obj.get("identityId").and_then(Value::as_str).unwrap_or("");
    if identity != "I0" {
        return Err(set_error(
            "invalidProperties",
            "identityId: no such identity",
        ));
    }
    let given = obj.get("emailId").and_then(Value::as_str).unwrap_or("");
    let email_id = ctx.id(given).unwrap_or_else(|| given.to_string());
    let Some(e) = ctx.view.email(&email_id).cloned() else {
        return Err(set_error("invalidProperties", "emailId: no such Email"));
    };
    let s = &e.summary;
    let rcpt_to: Vec<String> = match obj
        .get("envelope")
        .and_then(|v| v.get("rcptTo"))
        .and_then(Value::as_array)
    {
        Some(list) => list
            .iter()
            .filter_map(|r| r.get("email")?.as_str().map(str::to_string))
            .collect(),
        None => {
            s.to.iter()
                .chain(&s.cc)
                .chain(&s.bcc)
                .map(|a| a.email.clone())
                .collect()
        }
    };
    if let Some(from) = obj
        .get("envelope")
        .and_then(|v| v.get("mailFrom"))
        .and_then(|v| v.get("email"))
        .and_then(Value::as_str)
        && !from.eq_ignore_ascii_case(&ctx.user.to_string())
    {
        return Err(set_error(
            "forbiddenFrom",
            "PEC has no \"send as\": the sender is the mailbox you logged in with",
        ));
    }
    if rcpt_to.is_empty() {
        return Err(set_error("noRecipients", "the message has no recipients"));
    }
    let data = ctx
        .jmap
        .gw
        .store
        .blobs()
        .read(&e.blob)
        .map_err(|err| server_fail("reading the message", &err))?;
    let env = Envelope {
        mail_from: ctx.user.to_string(),
        rcpt_to,
        data,
        authenticated: Some(ctx.user.to_string()),
        helo: "jmap".into(),
        tls: true,
    };
    let gw = ctx.jmap.gw.clone();
    let reply = ctx
        .rt
        .block_on(async move { crate::pipeline::access::submit(&gw, env).await })
        .map_err(|err| server_fail("sending the message", &err))?;
    if reply.code != 250 {
        let kind = if reply.code >= 500 {
            "forbiddenToSend"
        } else {
            "serverFail"
        };
        return Err(json!({
            "type": kind,
            "description": reply.text,
            // The reason in Italian (PEC capability), when the access point gave one.
            "motivo": reply.motivo,
            "smtpReply": format!("{} {} {}", reply.code, reply.enhanced, reply.text),
        }));
    }
    let ident = reply
        .text
        .rsplit(' ')
        .next()
        .unwrap_or_default()
        .to_string();
    Ok((submission_id(&ident), email_id, ident))
}

/// The submission of an acceptance receipt.
fn submission_json(ctx: &Ctx<'_>, acc: &Entry) -> Option<Value> {
    let f = &acc.summary.pec;
    let ident = f.identificativo.as_deref()?;
    let d = f.daticert.as_ref()?;
    // The sent message: the Email of this thread whose Message-ID is the riferimento.
    let thread = ctx.view.by_thread.get(&acc.thread_id);
    let email_id = thread.and_then(|v| {
        v.iter().map(|&i| &ctx.view.emails[i]).find(|e| {
            e.summary.pec.kind == "ordinaria"
                && f.riferimento.as_deref().is_some_and(|r| {
                    e.summary
                        .message_id
                        .iter()
                        .any(|m| crate::pec::ids::bare(m) == crate::pec::ids::bare(r))
                })
        })
    });
    let receipts: Vec<&Entry> = thread
        .map(|v| {
            v.iter()
                .map(|&i| &ctx.view.emails[i])
                .filter(|e| e.summary.pec.identificativo.as_deref() == Some(ident))
                .collect()
        })
        .unwrap_or_default();
    let mut status = Map::new();
    for r in d
        .get("destinatari")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(addr) = r.get("address").and_then(Value::as_str) else {
            continue;
        };
        let mut delivered = "queued";
        let mut reply = "250 2.0.0 accettato dal gestore".to_string();
        let mut detail = Vec::new();
        for x in &receipts {
            let xd = x.summary.pec.daticert.as_ref();
            let about = xd.and_then(|v| v.get("consegna")).and_then(Value::as_str);
            let ricezione: Vec<&str> = xd
                .and_then(|v| v.get("ricezione"))
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let concerns = about.is_some_and(|a| a.eq_ignore_ascii_case(addr))
                || ricezione.iter().any(|a| a.eq_ignore_ascii_case(addr))
                || x.summary.pec.kind == "accettazione";
            if !concerns {
                continue;
            }
            let verified =
                crate::jmap::pec::verdict(&ctx.jmap.gw, x)["verified"].as_bool() == Some(true);
            detail.push(json!({
                "kind": x.summary.pec.kind,
                "emailId": x.id,
                "at": xd.and_then(|v| v.get("data")).cloned(),
                "verified": verified,
            }));
            // Only a verified receipt changes what we say about delivery.
            if !verified {
                continue;
            }
            match x.summary.pec.kind.as_str() {
                "avvenuta-consegna" => {
                    delivered = "yes";
                    reply = "250 2.0.0 ricevuta di avvenuta consegna".into();
                }
                "errore-consegna" if delivered != "yes" => {
                    delivered = "no";
                    reply = format!(
                        "550 5.0.0 avviso di mancata consegna: {}",
                        xd.and_then(|v| v.get("erroreEsteso"))
                            .and_then(Value::as_str)
                            .unwrap_or("")
                    );
                }
                // The 12 h and 24 h notices are the same in XML (rules §4.12): the one
                // issued 22 h or more after the acceptance is the 24 h one, which closes
                // the transaction with a negative outcome (rules §5: not before 22 h).
                "preavviso-errore-consegna" if delivered != "yes" => {
                    let at = |v: Option<&Value>| {
                        v.and_then(|v| v.get("data"))
                            .and_then(Value::as_str)
                            .and_then(|s| s.parse::<jiff::Timestamp>().ok())
                    };
                    let final_notice = match (at(Some(d)), at(xd)) {
                        (Some(sent), Some(notice)) => {
                            notice.duration_since(sent) >= jiff::SignedDuration::from_hours(22)
                        }
                        _ => false,
                    };
                    if final_notice {
                        delivered = "no";
                        reply = "550 5.4.7 avviso di mancata consegna per superamento dei tempi massimi (24 ore)".into();
                    } else if delivered == "queued" {
                        delivered = "unknown";
                        reply = "450 4.4.7 preavviso di mancata consegna (12 ore)".into();
                    }
                }
                "presa-in-carico" if delivered == "queued" => {
                    reply = "250 2.0.0 presa in carico dal gestore del destinatario".into();
                }
                _ => {}
            }
        }
        status.insert(
            addr.to_string(),
            json!({
                "smtpReply": reply,
                "delivered": delivered,
                "displayed": "unknown",
                "pecReceipts": detail,
            }),
        );
    }
    Some(json!({
        "id": submission_id(ident),
        "identityId": "I0",
        "emailId": email_id.map(|e| e.id.clone()),
        "threadId": acc.thread_id,
        "envelope": {
            "mailFrom": {"email": d.get("mittente"), "parameters": null},
            "rcptTo": d.get("destinatari").and_then(Value::as_array).into_iter().flatten()
                .map(|r| json!({"email": r.get("address"), "parameters": null})).collect::<Vec<_>>(),
        },
        "sendAt": d.get("data"),
        "undoStatus": "final",
        "deliveryStatus": status,
        "dsnBlobIds": [],
        "mdnBlobIds": [],
    }))
}

fn acceptances<'v>(ctx: &'v Ctx<'_>) -> impl Iterator<Item = &'v Entry> {
    ctx.view.emails.iter().filter(|e| {
        e.summary.pec.kind == "accettazione"
            && e.summary
                .pec
                .daticert
                .as_ref()
                .and_then(|d| d.get("mittente"))
                .and_then(Value::as_str)
                .is_some_and(|m| m.eq_ignore_ascii_case(&ctx.user.to_string()))
    })
}

pub fn get(ctx: &mut Ctx<'_>, args: &Map<String, Value>) -> Out {
    let ids = ids_arg(ctx, args, ctx.jmap.limits.max_objects_in_get)?;
    let all: Vec<Value> = acceptances(ctx)
        .filter_map(|a| submission_json(ctx, a))
        .collect();
    let (mut list, mut not_found) = (Vec::new(), Vec::new());
    match ids {
        None => list = all,
        Some(ids) => {
            for id in ids {
                match all.iter().find(|s| s["id"] == id.as_str()) {
                    Some(s) => list.push(s.clone()),
                    None => not_found.push(id),
                }
            }
        }
    }
    Ok(get_answer(ctx, list, not_found))
}

pub fn query(ctx: &mut Ctx<'_>, args: &Map<String, Value>) -> Out {
    let filter = args.get("filter").cloned().unwrap_or(Value::Null);
    let want_emails: Option<Vec<&str>> = filter
        .get("emailIds")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect());
    let want_threads: Option<Vec<&str>> = filter
        .get("threadIds")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect());
    let ids: Vec<String> = acceptances(ctx)
        .filter_map(|a| submission_json(ctx, a))
        .filter(|s| {
            want_emails
                .as_ref()
                .is_none_or(|w| s["emailId"].as_str().is_some_and(|e| w.contains(&e)))
                && want_threads
                    .as_ref()
                    .is_none_or(|w| s["threadId"].as_str().is_some_and(|t| w.contains(&t)))
        })
        .filter_map(|s| s["id"].as_str().map(str::to_string))
        .collect();
    let total = ids.len();
    Ok(query_answer(ctx, ids, 0, total))
}
