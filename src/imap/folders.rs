//! Folder commands (RFC 3501 §6.3.3–§6.3.10): CREATE, DELETE, RENAME, SUBSCRIBE,
//! UNSUBSCRIBE, LIST/LSUB with the SPECIAL-USE attributes of RFC 6154 and CHILDREN of RFC
//! 3348, STATUS. Subscriptions are kept by the store (see [`crate::store::messages`]):
//! they may name no folder, survive DELETE and move with RENAME. Names arrive
//! checked by [`super::names`]; every store call carries the session's own address.

use std::collections::BTreeMap;

use imap_codec::imap_types::status::StatusDataItemName;

use super::exec::no;
use super::names::{self, DELIMITER};
use super::session::State;
use super::wire::{Out, tagged, untagged};
use crate::pec::address::PecAddress;
use crate::store::{Batch, Store};

pub(super) fn create(
    store: &Store,
    tag: &str,
    user: &PecAddress,
    folder: String,
    out: &mut Vec<u8>,
) {
    let existing = match store.folders(user) {
        Ok(f) => f,
        Err(e) => return out.extend(no(tag, &e)),
    };
    if existing.iter().any(|f| f.name == folder) {
        return out.extend(tagged(tag, "NO", "[ALREADYEXISTS] Mailbox already exists"));
    }
    // Superior levels are created too (RFC 3501 §6.3.3).
    let mut batch = Batch::new();
    let mut count = existing.len();
    let levels: Vec<&str> = folder.split(DELIMITER).collect();
    for i in 1..=levels.len() {
        let name = levels[..i].join("/");
        if !existing.iter().any(|f| f.name == name) {
            batch = batch.create_folder(user.clone(), name);
            count += 1;
        }
    }
    if count > names::MAX_FOLDERS {
        return out.extend(tagged(tag, "NO", "[LIMIT] Too many mailboxes"));
    }
    match store.commit(batch) {
        Ok(_) => out.extend(tagged(tag, "OK", "CREATE completed")),
        Err(e) => out.extend(no(tag, &e)),
    }
}

pub(super) fn delete(
    store: &Store,
    state: &mut State,
    tag: &str,
    user: &PecAddress,
    folder: String,
    out: &mut Vec<u8>,
) {
    if folder == "INBOX" {
        return out.extend(tagged(tag, "NO", "[CANNOT] INBOX cannot be deleted"));
    }
    let folders = match store.folders(user) {
        Ok(f) => f,
        Err(e) => return out.extend(no(tag, &e)),
    };
    if !folders.iter().any(|f| f.name == folder) {
        return out.extend(tagged(tag, "NO", "[NONEXISTENT] No such mailbox"));
    }
    let prefix = format!("{folder}{DELIMITER}");
    if folders.iter().any(|f| f.name.starts_with(&prefix)) {
        return out.extend(tagged(
            tag,
            "NO",
            "[INUSE] Mailbox has children: delete them first",
        ));
    }
    if let State::Selected { view, .. } = &*state
        && view.folder == folder
    {
        *state = State::Authenticated { user: user.clone() };
    }
    match store.commit(Batch::new().delete_folder(user.clone(), folder)) {
        Ok(_) => out.extend(tagged(tag, "OK", "DELETE completed")),
        Err(e) => out.extend(no(tag, &e)),
    }
}

pub(super) fn rename(
    store: &Store,
    tag: &str,
    user: &PecAddress,
    from: String,
    to: String,
    out: &mut Vec<u8>,
) {
    if from == "INBOX" || to == "INBOX" {
        return out.extend(tagged(tag, "NO", "[CANNOT] INBOX cannot be renamed"));
    }
    let folders = match store.folders(user) {
        Ok(f) => f,
        Err(e) => return out.extend(no(tag, &e)),
    };
    if !folders.iter().any(|f| f.name == from) {
        return out.extend(tagged(tag, "NO", "[NONEXISTENT] No such mailbox"));
    }
    if to.starts_with(&format!("{from}{DELIMITER}")) {
        return out.extend(tagged(
            tag,
            "NO",
            "[CANNOT] Cannot move a mailbox under itself",
        ));
    }
    // The children move with their parent, in the same commit.
    let prefix = format!("{from}{DELIMITER}");
    let mut batch = Batch::new().rename_folder(user.clone(), from.clone(), to.clone());
    for f in folders.iter().filter(|f| f.name.starts_with(&prefix)) {
        let new = format!("{to}{}", &f.name[from.len()..]);
        batch = batch.rename_folder(user.clone(), f.name.clone(), new);
    }
    let levels: Vec<&str> = to.split(DELIMITER).collect();
    for i in 1..levels.len() {
        let parent = levels[..i].join("/");
        if !folders.iter().any(|f| f.name == parent) {
            batch = batch.create_folder(user.clone(), parent);
        }
    }
    match store.commit(batch) {
        Ok(_) => out.extend(tagged(tag, "OK", "RENAME completed")),
        Err(e) => out.extend(no(tag, &e)),
    }
}

/// SUBSCRIBE (`on`) or UNSUBSCRIBE (RFC 3501 §6.3.6, §6.3.7). Any valid name may be
/// subscribed, existing or not; unsubscribing a name that is not subscribed is not an
/// error. The subscribed names without a folder are bounded by [`names::MAX_FOLDERS`].
pub(super) fn subscribe(
    store: &Store,
    tag: &str,
    user: &PecAddress,
    folder: String,
    on: bool,
    out: &mut Vec<u8>,
) {
    let verb = if on { "SUBSCRIBE" } else { "UNSUBSCRIBE" };
    let batch = if on {
        let (folders, subs) = match (store.folders(user), store.subscriptions(user)) {
            (Ok(f), Ok(s)) => (f, s),
            (Err(e), _) | (_, Err(e)) => return out.extend(no(tag, &e)),
        };
        let exists = |n: &str| folders.iter().any(|f| f.name == n);
        let without_folder = subs.iter().filter(|s| !exists(s)).count();
        if !exists(&folder)
            && subs.binary_search(&folder).is_err()
            && without_folder >= names::MAX_FOLDERS
        {
            return out.extend(tagged(tag, "NO", "[LIMIT] Too many subscriptions"));
        }
        Batch::new().subscribe(user.clone(), folder)
    } else {
        Batch::new().unsubscribe(user.clone(), folder)
    };
    match store.commit(batch) {
        Ok(_) => out.extend(tagged(tag, "OK", &format!("{verb} completed"))),
        Err(e) => out.extend(no(tag, &e)),
    }
}

/// LIST (every folder) or LSUB (the subscribed names, RFC 3501 §6.3.9: a subscribed
/// name without a folder is `\Noselect`, and so is an unsubscribed superior of a
/// subscribed name when the pattern ends in `%`).
pub(super) fn list(
    store: &Store,
    tag: &str,
    user: &PecAddress,
    reference: &str,
    pattern: &str,
    lsub: bool,
    out: &mut Vec<u8>,
) {
    let verb = if lsub { "LSUB" } else { "LIST" };
    if pattern.is_empty() {
        out.extend(untagged(&format!("{verb} (\\Noselect) \"/\" \"\"")));
        return out.extend(tagged(tag, "OK", &format!("{verb} completed")));
    }
    let folders = match store.folders(user) {
        Ok(f) => f,
        Err(e) => return out.extend(no(tag, &e)),
    };
    let full = names::join(reference, pattern);
    if full.len() > names::MAX_PATTERN_BYTES {
        return out.extend(tagged(
            tag,
            "NO",
            &format!(
                "[LIMIT] {verb} reference and pattern longer than {} bytes",
                names::MAX_PATTERN_BYTES
            ),
        ));
    }
    let is_match = |name: &str| {
        names::matches(&full, name) || (name == "INBOX" && full.eq_ignore_ascii_case("INBOX"))
    };
    let existing: Vec<&str> = folders.iter().map(|f| f.name.as_str()).collect();
    // Name → shown as \Noselect.
    let mut shown: BTreeMap<String, bool> = BTreeMap::new();
    if lsub {
        let subs = match store.subscriptions(user) {
            Ok(s) => s,
            Err(e) => return out.extend(no(tag, &e)),
        };
        for s in subs.iter().filter(|s| is_match(s)) {
            shown.insert(s.clone(), !existing.contains(&s.as_str()));
        }
        if full.ends_with('%') {
            for s in &subs {
                let superiors = s.match_indices(DELIMITER).map(|(i, _)| &s[..i]);
                for sup in superiors {
                    if is_match(sup) && subs.binary_search_by(|x| x.as_str().cmp(sup)).is_err() {
                        shown.entry(sup.to_string()).or_insert(true);
                    }
                }
            }
        }
    } else {
        for name in existing.iter().filter(|n| is_match(n)) {
            shown.insert(name.to_string(), false);
        }
    }
    let mut order: Vec<(&String, &bool)> = shown.iter().collect();
    order.sort_by_key(|(n, _)| *n != "INBOX");
    for (name, noselect) in order {
        let attrs = if *noselect {
            vec!["\\Noselect"]
        } else {
            let prefix = format!("{name}{DELIMITER}");
            let mut attrs = vec![if existing.iter().any(|n| n.starts_with(&prefix)) {
                "\\HasChildren"
            } else {
                "\\HasNoChildren"
            }];
            if let Some(a) = names::special_use(name) {
                attrs.push(a);
            }
            attrs
        };
        let mut o = Out::new();
        o.raw(&format!("* {verb} ({}) \"/\" ", attrs.join(" ")))
            .string(name.as_bytes())
            .crlf();
        out.extend(o.0);
    }
    out.extend(tagged(tag, "OK", &format!("{verb} completed")));
}

pub(super) fn status(
    store: &Store,
    tag: &str,
    user: &PecAddress,
    folder: String,
    items: &[StatusDataItemName],
    out: &mut Vec<u8>,
) {
    let f = match store.folder(user, &folder) {
        Ok(Some(f)) => f,
        Ok(None) => return out.extend(tagged(tag, "NO", "[NONEXISTENT] No such mailbox")),
        Err(e) => return out.extend(no(tag, &e)),
    };
    let mut parts = Vec::new();
    for i in items {
        match i {
            StatusDataItemName::Messages => parts.push(format!("MESSAGES {}", f.messages)),
            StatusDataItemName::Recent => parts.push("RECENT 0".into()),
            StatusDataItemName::UidNext => parts.push(format!("UIDNEXT {}", f.uidnext)),
            StatusDataItemName::UidValidity => parts.push(format!("UIDVALIDITY {}", f.uidvalidity)),
            StatusDataItemName::Unseen => {
                let msgs = match store.messages(user, &folder) {
                    Ok(m) => m,
                    Err(e) => return out.extend(no(tag, &e)),
                };
                let n = msgs
                    .iter()
                    .filter(|m| !m.flags.iter().any(|f| f.eq_ignore_ascii_case("\\Seen")))
                    .count();
                parts.push(format!("UNSEEN {n}"));
            }
            _ => {}
        }
    }
    let mut o = Out::new();
    o.raw("* STATUS ")
        .string(folder.as_bytes())
        .raw(&format!(" ({})", parts.join(" ")))
        .crlf();
    out.extend(o.0);
    out.extend(tagged(tag, "OK", "STATUS completed"));
}
