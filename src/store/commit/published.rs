//! What a group's commit tells others: the mailboxes (and folders) each batch changes, as
//! IMAP sees them, published to this process's subscribers after the flush; and, with
//! several writers, the same changes as announcements to the other processes (`NOTIFY`
//! payloads) and their parsing back. An announcement comes from the database: it is
//! parsed as untrusted text, and what does not parse is skipped.

use super::super::MailboxChange;
use super::super::batch::{Batch, Op};
use super::super::messages::normalize_folder;

/// PostgreSQL's limit on a `NOTIFY` payload is 8000 bytes; the announcement also
/// carries the process's id.
const ANNOUNCEMENT_BYTES: usize = 7000;

/// `changed` as announcements to the other writers: `{"changes": [[mailbox, folder],
/// ...]}` (folder `null`: any folder), each within [`ANNOUNCEMENT_BYTES`]. (New queue
/// items are not announced: the node that queued them works on them at once, and the
/// others find what it leaves when they look at the queue by themselves.)
pub(crate) fn announcements(changed: &[MailboxChange]) -> Vec<String> {
    let mut out = Vec::new();
    let mut part: Vec<serde_json::Value> = Vec::new();
    let text = |part: Vec<serde_json::Value>| serde_json::json!({ "changes": part }).to_string();
    let mut size = 40;
    for c in changed {
        let item = serde_json::json!([c.mailbox, c.folder]);
        let len = item.to_string().len() + 1;
        if size + len > ANNOUNCEMENT_BYTES && !part.is_empty() {
            out.push(text(std::mem::take(&mut part)));
            size = 40;
        }
        // One entry longer than the limit (a mailbox address is at most 254 bytes, a
        // folder name is bounded by the protocols) cannot be announced: IDLE's fallback
        // poll sees it.
        if len + 40 <= ANNOUNCEMENT_BYTES {
            part.push(item);
            size += len;
        }
    }
    if !part.is_empty() {
        out.push(text(part));
    }
    out
}

/// The changes another writer announced ([`announcements`]); what does not parse is
/// skipped (the text comes from the database, not from this process).
pub(crate) fn heard(text: &str) -> Vec<MailboxChange> {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else {
        return Vec::new();
    };
    let Some(items) = v["changes"].as_array() else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| {
            let [m, f] = item.as_array()?.as_slice() else {
                return None;
            };
            Some(MailboxChange {
                mailbox: m.as_str()?.to_string(),
                folder: match f {
                    serde_json::Value::Null => None,
                    f => Some(f.as_str()?.to_string()),
                },
            })
        })
        .collect()
}

/// The mailboxes (and folders) a batch changes, as IMAP sees them.
pub(super) fn mailbox_changes(b: &Batch) -> Vec<MailboxChange> {
    let change = |m: &crate::pec::address::PecAddress, f: Option<&str>| MailboxChange {
        mailbox: m.to_string(),
        folder: f.map(normalize_folder),
    };
    let archived = b.ops.iter().filter_map(|op| match op {
        Op::Deliver(d) if d.archive => {
            Some(change(&d.mailbox, Some(super::super::archive::RECEIVED)))
        }
        Op::ArchiveCopy(c) => Some(change(&c.mailbox, Some(c.folder))),
        _ => None,
    });
    b.ops
        .iter()
        .filter_map(|op| match op {
            // A rule may file it elsewhere: the whole mailbox may have changed.
            Op::Deliver(d) if d.facts.is_some() => Some(change(&d.mailbox, None)),
            Op::Deliver(d) => Some(change(&d.mailbox, Some(&d.folder))),
            Op::SetFlags {
                mailbox, folder, ..
            }
            | Op::Expunge {
                mailbox, folder, ..
            }
            | Op::AddFlags {
                mailbox, folder, ..
            } => Some(change(mailbox, Some(folder))),
            Op::FolderCreate { mailbox, name } | Op::FolderDelete { mailbox, name } => {
                Some(change(mailbox, Some(name)))
            }
            Op::FolderRename { mailbox, .. } => Some(change(mailbox, None)),
            Op::MailboxDelete(m) => Some(change(m, None)),
            // A new quota (or plan): usage against it changed; the quota notices look.
            Op::MailboxUpdate {
                address,
                quota: Some(_),
                ..
            } => Some(change(address, None)),
            _ => None,
        })
        .chain(archived)
        .collect()
}
