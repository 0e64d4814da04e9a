//! Email/query's filter and sort (RFC 8621 §4.4), evaluated over an account view: the
//! FilterOperator tree (AND / OR / NOT, depth-bounded), the FilterConditions this server
//! supports, plus the PEC ones (`pecIdentificativo`, `pecKind`). An unsupported condition
//! or sort property is `unsupportedFilter` / `unsupportedSort`, never silently ignored.

use serde_json::Value;

use super::MethodError;
use crate::jmap::account::{Entry, View};

const MAX_DEPTH: usize = 16;

fn contains(hay: &str, needle: &str) -> bool {
    hay.to_lowercase().contains(&needle.to_lowercase())
}

fn addr_match(list: &[crate::jmap::summary::EmailAddress], needle: &str) -> bool {
    list.iter().any(|a| {
        contains(&a.email, needle) || a.name.as_deref().is_some_and(|n| contains(n, needle))
    })
}

fn date_arg(v: &Value) -> Result<jiff::Timestamp, MethodError> {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| MethodError::new("invalidArguments", "dates are RFC 3339 UTC"))
}

const CONDITIONS: &[&str] = &[
    "inMailbox",
    "inMailboxOtherThan",
    "before",
    "after",
    "minSize",
    "maxSize",
    "hasKeyword",
    "notKeyword",
    "hasAttachment",
    "from",
    "to",
    "cc",
    "bcc",
    "subject",
    "body",
    "text",
    "pecIdentificativo",
    "pecKind",
    "header",
];

/// Checks a filter before it is run, so that an unsupported condition is an error even
/// when there is nothing to match it against.
pub fn check(filter: &Value, depth: usize) -> Result<(), MethodError> {
    if depth > MAX_DEPTH {
        return Err(MethodError::new(
            "unsupportedFilter",
            "filter nested too deep",
        ));
    }
    match filter {
        Value::Null => Ok(()),
        Value::Object(f) if f.contains_key("operator") => {
            match f.get("operator").and_then(Value::as_str) {
                Some("AND" | "OR" | "NOT") => {}
                _ => {
                    return Err(MethodError::new(
                        "unsupportedFilter",
                        "operator must be AND, OR or NOT",
                    ));
                }
            }
            let conds = f
                .get("conditions")
                .and_then(Value::as_array)
                .ok_or_else(|| {
                    MethodError::new("unsupportedFilter", "operator without conditions")
                })?;
            conds.iter().try_for_each(|c| check(c, depth + 1))
        }
        Value::Object(f) => match f.keys().find(|k| !CONDITIONS.contains(&k.as_str())) {
            Some(k) => Err(MethodError::new(
                "unsupportedFilter",
                format!("unsupported filter condition {k}"),
            )),
            None => Ok(()),
        },
        _ => Err(MethodError::new(
            "invalidArguments",
            "filter must be an object",
        )),
    }
}

/// Whether `e` matches `filter`.
pub fn matches(view: &View, e: &Entry, filter: &Value, depth: usize) -> Result<bool, MethodError> {
    if depth > MAX_DEPTH {
        return Err(MethodError::new(
            "unsupportedFilter",
            "filter nested too deep",
        ));
    }
    let Value::Object(f) = filter else {
        return Ok(true);
    };
    if let Some(op) = f.get("operator").and_then(Value::as_str) {
        let conds = f
            .get("conditions")
            .and_then(Value::as_array)
            .ok_or_else(|| MethodError::new("unsupportedFilter", "operator without conditions"))?;
        let mut results = Vec::with_capacity(conds.len());
        for c in conds {
            results.push(matches(view, e, c, depth + 1)?);
        }
        return match op {
            "AND" => Ok(results.iter().all(|x| *x)),
            "OR" => Ok(results.iter().any(|x| *x)),
            "NOT" => Ok(!results.iter().any(|x| *x)),
            _ => Err(MethodError::new(
                "unsupportedFilter",
                format!("operator {op}"),
            )),
        };
    }
    let s = &e.summary;
    for (k, v) in f {
        let ok = match k.as_str() {
            "inMailbox" => {
                let id = v.as_str().unwrap_or("");
                view.folder_by_id(id).is_some_and(|fo| e.in_folder(fo.id))
            }
            "inMailboxOtherThan" => {
                let ids: Vec<&str> = v
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                e.locations
                    .iter()
                    .any(|l| !ids.contains(&crate::jmap::account::mailbox_id(l.folder_id).as_str()))
            }
            "before" => e.received < date_arg(v)?,
            "after" => e.received >= date_arg(v)?,
            "minSize" => v.as_u64().is_some_and(|n| e.size >= n),
            "maxSize" => v.as_u64().is_some_and(|n| e.size < n),
            "hasKeyword" => v
                .as_str()
                .is_some_and(|k| e.keywords.contains(&k.to_lowercase())),
            "notKeyword" => v
                .as_str()
                .is_some_and(|k| !e.keywords.contains(&k.to_lowercase())),
            "hasAttachment" => v.as_bool() == Some(s.has_attachment),
            "from" => v.as_str().is_some_and(|n| addr_match(&s.from, n)),
            "to" => v.as_str().is_some_and(|n| addr_match(&s.to, n)),
            "cc" => v.as_str().is_some_and(|n| addr_match(&s.cc, n)),
            "bcc" => v.as_str().is_some_and(|n| addr_match(&s.bcc, n)),
            "subject" => v
                .as_str()
                .is_some_and(|n| s.subject.as_deref().is_some_and(|x| contains(x, n))),
            "body" => v.as_str().is_some_and(|n| contains(&s.preview, n)),
            "text" => v.as_str().is_some_and(|n| {
                s.subject.as_deref().is_some_and(|x| contains(x, n))
                    || addr_match(&s.from, n)
                    || addr_match(&s.to, n)
                    || addr_match(&s.cc, n)
                    || contains(&s.preview, n)
                    || s.pec
                        .identificativo
                        .as_deref()
                        .is_some_and(|x| contains(x, n))
            }),
            "pecIdentificativo" => v.as_str().is_some_and(|n| {
                let n = crate::pec::ids::bare(n);
                s.pec
                    .identificativo
                    .as_deref()
                    .is_some_and(|x| x.eq_ignore_ascii_case(n))
            }),
            "pecKind" => v.as_str() == Some(s.pec.kind.as_str()),
            "header" => {
                let a: Vec<&str> = v
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                match a.as_slice() {
                    [name] => header_present(s, name),
                    [name, val] => header_value(s, name).is_some_and(|h| contains(&h, val)),
                    _ => {
                        return Err(MethodError::new(
                            "unsupportedFilter",
                            "header takes 1 or 2 strings",
                        ));
                    }
                }
            }
            other => {
                return Err(MethodError::new(
                    "unsupportedFilter",
                    format!("unsupported filter condition {other}"),
                ));
            }
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

fn header_value(s: &crate::jmap::summary::Summary, name: &str) -> Option<String> {
    match name.to_ascii_lowercase().as_str() {
        "subject" => s.subject.clone(),
        "message-id" => s.message_id.first().cloned(),
        _ => None,
    }
}

fn header_present(s: &crate::jmap::summary::Summary, name: &str) -> bool {
    header_value(s, name).is_some()
}

/// Sorts `hits` (indexes into the view) by the `sort` argument; default receivedAt desc.
pub fn sort(view: &View, hits: &mut [usize], sort: Option<&Value>) -> Result<(), MethodError> {
    let Some(Value::Array(keys)) = sort else {
        return Ok(()); // the view is already newest first
    };
    let mut comps: Vec<(String, bool)> = Vec::new();
    for k in keys {
        let prop = k.get("property").and_then(Value::as_str).unwrap_or("");
        let asc = k
            .get("isAscending")
            .and_then(Value::as_bool)
            .unwrap_or(true);
        if !matches!(
            prop,
            "receivedAt" | "sentAt" | "size" | "subject" | "from" | "to"
        ) {
            return Err(MethodError::new(
                "unsupportedSort",
                format!("cannot sort by {prop:?}"),
            ));
        }
        comps.push((prop.to_string(), asc));
    }
    let first_addr = |v: &Vec<crate::jmap::summary::EmailAddress>| {
        v.first()
            .map(|a| {
                a.name
                    .clone()
                    .unwrap_or_else(|| a.email.clone())
                    .to_lowercase()
            })
            .unwrap_or_default()
    };
    hits.sort_by(|&a, &b| {
        let (x, y) = (&view.emails[a], &view.emails[b]);
        for (p, asc) in &comps {
            let o = match p.as_str() {
                "receivedAt" => x.received.cmp(&y.received),
                "sentAt" => x.summary.sent_at.cmp(&y.summary.sent_at),
                "size" => x.size.cmp(&y.size),
                "subject" => x
                    .summary
                    .subject
                    .as_deref()
                    .unwrap_or("")
                    .to_lowercase()
                    .cmp(&y.summary.subject.as_deref().unwrap_or("").to_lowercase()),
                "from" => first_addr(&x.summary.from).cmp(&first_addr(&y.summary.from)),
                _ => first_addr(&x.summary.to).cmp(&first_addr(&y.summary.to)),
            };
            let o = if *asc { o } else { o.reverse() };
            if o != std::cmp::Ordering::Equal {
                return o;
            }
        }
        x.id.cmp(&y.id)
    });
    Ok(())
}
