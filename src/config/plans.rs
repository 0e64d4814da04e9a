//! `[plans.NAME]`: the named service plans mailboxes are sold on (e.g. `base`: a 2 GB
//! mailbox and a 3 GB security archive; `maxi`: 4 GB and 8 GB), which `pecd mailbox add --plan` and `pecd mailbox plan` use.
//! A mailbox on a plan follows the plan's size: `pecd serve` applies a changed size at
//! start-up.
//!
//! Distrusts: the names (letters, digits, `-`, `_`; they are shown and typed by operators)
//! and the sizes (a plan too small for the largest message could never take one).

use std::collections::BTreeMap;

use toml::{Table, Value};

use super::walk::{Problems, type_name};

/// One plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The mailbox's quota, bytes.
    pub mailbox_bytes: u64,
    /// The security archive's size, bytes (`None`: `archive.default_bytes`).
    pub archive_bytes: Option<u64>,
}

/// Longest plan name.
pub const MAX_PLAN_NAME: usize = 32;

/// Whether `name` may name a plan.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_PLAN_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A plan name that is not configured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", describe_unknown(.name, .known))]
pub struct UnknownPlan {
    pub name: String,
    pub known: Vec<String>,
}

fn describe_unknown(name: &str, known: &[String]) -> String {
    if known.is_empty() {
        format!("no plan {name:?}: the configuration has no [plans.NAME] tables")
    } else {
        format!("no plan {name:?} (configured: {})", known.join(", "))
    }
}

impl super::Config {
    /// Plan `name`.
    pub fn plan(&self, name: &str) -> Result<&Plan, UnknownPlan> {
        self.plans.get(name).ok_or_else(|| UnknownPlan {
            name: name.to_string(),
            known: self.plans.keys().cloned().collect(),
        })
    }
}

/// Reads `[plans]`; `max_message_bytes` is the floor of every plan's size.
pub(super) fn plans(
    root: &mut Table,
    max_message_bytes: u64,
    errs: &mut Problems,
) -> BTreeMap<String, Plan> {
    let mut out = BTreeMap::new();
    let table = match root.remove("plans") {
        None => return out,
        Some(Value::Table(t)) => t,
        Some(other) => {
            errs.push(
                "plans",
                format!("expected tables [plans.NAME], found {}", type_name(&other)),
            );
            return out;
        }
    };
    for (name, v) in table {
        let key = format!("plans.{name}");
        if !valid_name(&name) {
            errs.push(
                key.clone(),
                format!("a plan name is 1 to {MAX_PLAN_NAME} letters, digits, '-' or '_'"),
            );
        }
        let Value::Table(mut t) = v else {
            errs.push(
                key,
                format!("expected a table [plans.{name}], found {}", type_name(&v)),
            );
            continue;
        };
        let size = match t.remove("mailbox_bytes") {
            None => {
                errs.push(format!("{key}.mailbox_bytes"), "missing (required)");
                None
            }
            Some(v) => checked_size(&key, "mailbox_bytes", v, max_message_bytes, errs),
        };
        let archive = t
            .remove("archive_bytes")
            .map(|v| checked_size(&key, "archive_bytes", v, max_message_bytes, errs));
        for k in t.keys() {
            errs.push(
                format!("{key}.{k}"),
                "unknown key (known: mailbox_bytes, archive_bytes)",
            );
        }
        if let Some(mailbox_bytes) = size
            && valid_name(&name)
            && archive.as_ref().is_none_or(Option::is_some)
        {
            out.insert(
                name,
                Plan {
                    mailbox_bytes,
                    archive_bytes: archive.flatten(),
                },
            );
        }
    }
    out
}

/// A size in bytes that must hold a largest message; `None` after an error.
fn checked_size(
    key: &str,
    field: &str,
    v: Value,
    max_message_bytes: u64,
    errs: &mut Problems,
) -> Option<u64> {
    match v {
        Value::Integer(i) => match u64::try_from(i) {
            Ok(n) if n >= max_message_bytes => Some(n),
            _ => {
                errs.push(
                    format!("{key}.{field}"),
                    format!(
                        "{i} is below limits.max_message_bytes ({max_message_bytes}): a \
                         largest message could never be stored"
                    ),
                );
                None
            }
        },
        other => {
            errs.push(
                format!("{key}.{field}"),
                format!("expected an integer, found {}", type_name(&other)),
            );
            None
        }
    }
}
