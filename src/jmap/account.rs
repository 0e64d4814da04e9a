//! One account as JMAP sees it: its folders as Mailboxes and its stored messages as
//! Emails. A JMAP Email is one message *content*: the store keeps a record per (folder,
//! UID) pointing at a content-addressed blob, so the records of one mailbox that share a
//! blob are one Email with several `mailboxIds` — the id never changes when a message
//! moves, as RFC 8621 §4 requires. Ids: `M` + 128 bits of the blob's SHA-256 (Email),
//! `F` + the folder id (Mailbox), `T` + 96 bits of SHA-256 of the thread key (Thread).
//!
//! Every mailbox has two accounts ([`Scope`]): its own, and the read-only one of its
//! security archive ([`crate::store::archive`]), whose folders the first never shows.
//!
//! A [`View`] is built from the store for one state of the account and shared read-only
//! by every request at that state; a change published by the store makes the next request
//! build a new one. Summaries come from the derived cache ([`super::summary`]).
//!
//! Keywords map to IMAP flags (RFC 8621 §4.1.1): `$seen` ↔ `\Seen`, `$flagged` ↔
//! `\Flagged`, `$answered` ↔ `\Answered`, `$draft` ↔ `\Draft`; other flags are lower-cased
//! keywords; `\Deleted` and `\Recent` have no JMAP meaning and are hidden.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use jiff::Timestamp;

use crate::pec::address::PecAddress;
use crate::store::{BlobId, FolderInfo, Store, StoreError, Uid};

use super::summary::{self, Summary};

/// Which of a mailbox's two JMAP accounts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Scope {
    /// The mailbox's own folders and messages.
    #[default]
    Mailbox,
    /// Its security archive: read-only.
    Archive,
}

impl Scope {
    /// Whether folder `name` belongs to this account.
    pub fn holds(self, name: &str) -> bool {
        crate::store::archive::is_archive(name) == (self == Scope::Archive)
    }
}

/// Where one record of an Email lies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub folder: String,
    pub folder_id: u64,
    pub uid: Uid,
    pub flags: Vec<String>,
}

/// One Email of the account.
#[derive(Debug, Clone)]
pub struct Entry {
    pub id: String,
    pub blob: BlobId,
    pub size: u64,
    pub received: Timestamp,
    pub keywords: BTreeSet<String>,
    pub locations: Vec<Location>,
    pub thread_id: String,
    pub summary: Arc<Summary>,
}

impl Entry {
    pub fn mailbox_ids(&self) -> BTreeSet<String> {
        self.locations
            .iter()
            .map(|l| mailbox_id(l.folder_id))
            .collect()
    }
    pub fn in_folder(&self, folder_id: u64) -> bool {
        self.locations.iter().any(|l| l.folder_id == folder_id)
    }
}

/// The account at one state.
#[derive(Debug, Default)]
pub struct View {
    pub state: u64,
    pub scope: Scope,
    pub folders: Vec<FolderInfo>,
    /// Newest first (receivedAt descending, then id).
    pub emails: Vec<Entry>,
    pub by_id: HashMap<String, usize>,
    pub by_thread: HashMap<String, Vec<usize>>,
}

pub fn email_id(blob: &BlobId) -> String {
    format!("M{}", &blob.as_str()[..32.min(blob.as_str().len())])
}

pub fn mailbox_id(folder_id: u64) -> String {
    format!("F{folder_id}")
}

pub fn thread_id(key: &str) -> String {
    format!("T{}", &crate::trace::sha256_hex(key.as_bytes())[..24])
}

/// The JMAP keyword of an IMAP flag, `None` for flags JMAP does not show.
pub fn keyword(flag: &str) -> Option<String> {
    Some(match flag.to_ascii_lowercase().as_str() {
        "\\seen" => "$seen".into(),
        "\\flagged" => "$flagged".into(),
        "\\answered" => "$answered".into(),
        "\\draft" => "$draft".into(),
        "\\deleted" | "\\recent" => return None,
        f if f.starts_with('\\') => return None,
        f => f.to_string(),
    })
}

/// The IMAP flag of a JMAP keyword.
pub fn flag(keyword: &str) -> String {
    match keyword.to_ascii_lowercase().as_str() {
        "$seen" => "\\Seen".into(),
        "$flagged" => "\\Flagged".into(),
        "$answered" => "\\Answered".into(),
        "$draft" => "\\Draft".into(),
        k => k.to_string(),
    }
}

/// The summary of a blob, from the derived cache or computed (and cached) now.
pub fn summary_of(store: &Store, blob: &BlobId) -> Result<Arc<Summary>, StoreError> {
    let key = format!("{}:{}", summary::VERSION, blob.as_str());
    if let Some(v) = store.cache_get("jmap", &key)?
        && let Ok(s) = serde_json::from_slice::<Summary>(&v)
    {
        return Ok(Arc::new(s));
    }
    let raw = store.blobs().read(blob)?;
    let s = summary::summarize(&raw);
    if let Ok(v) = serde_json::to_vec(&s) {
        store.cache_put("jmap", &key, &v)?;
    }
    Ok(Arc::new(s))
}

/// Builds the view of `mailbox` (blocking: reads the store and, for new blobs, the files).
/// Summaries already in `previous` (the view of an earlier state) are reused: a summary
/// depends only on the blob, so after a change only new contents are read.
pub fn build(
    store: &Store,
    mailbox: &PecAddress,
    state: u64,
    scope: Scope,
    previous: Option<&View>,
) -> Result<View, StoreError> {
    // The security archive is its own account.
    let folders: Vec<_> = store
        .folders(mailbox)?
        .into_iter()
        .filter(|f| scope.holds(&f.name))
        .collect();
    let mut by_blob: HashMap<String, usize> = HashMap::new();
    let mut emails: Vec<Entry> = Vec::new();
    for f in &folders {
        let records = match store.messages(mailbox, &f.name) {
            Ok(r) => r,
            // Deleted between the two reads: the next state will say so.
            Err(StoreError::NoSuchFolder { .. }) => continue,
            Err(e) => return Err(e),
        };
        for r in records {
            let loc = Location {
                folder: f.name.clone(),
                folder_id: f.id,
                uid: r.uid,
                flags: r.flags.clone(),
            };
            let kws = r.flags.iter().filter_map(|f| keyword(f));
            match by_blob.get(r.blob.as_str()) {
                Some(&i) => {
                    let e = &mut emails[i];
                    e.keywords.extend(kws);
                    e.received = e.received.min(r.internal_date);
                    e.locations.push(loc);
                }
                None => {
                    let known = previous
                        .and_then(|p| p.by_id.get(&email_id(&r.blob)).map(|&i| &p.emails[i]))
                        .filter(|e| e.blob == r.blob);
                    let summary = match known {
                        Some(e) => e.summary.clone(),
                        None => summary_of(store, &r.blob)?,
                    };
                    by_blob.insert(r.blob.as_str().to_string(), emails.len());
                    emails.push(Entry {
                        id: email_id(&r.blob),
                        thread_id: thread_id(&summary.thread_key),
                        blob: r.blob,
                        size: r.size,
                        received: r.internal_date,
                        keywords: kws.collect(),
                        locations: vec![loc],
                        summary,
                    });
                }
            }
        }
    }
    emails.sort_by(|a, b| b.received.cmp(&a.received).then_with(|| a.id.cmp(&b.id)));
    let mut by_id = HashMap::with_capacity(emails.len());
    let mut by_thread: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, e) in emails.iter().enumerate() {
        by_id.insert(e.id.clone(), i);
        by_thread.entry(e.thread_id.clone()).or_default().push(i);
    }
    // Threads list their emails oldest first (RFC 8621 §3).
    for v in by_thread.values_mut() {
        v.reverse();
    }
    Ok(View {
        state,
        scope,
        folders,
        emails,
        by_id,
        by_thread,
    })
}

impl View {
    pub fn email(&self, id: &str) -> Option<&Entry> {
        self.by_id.get(id).map(|&i| &self.emails[i])
    }

    pub fn folder_by_id(&self, id: &str) -> Option<&FolderInfo> {
        let n: u64 = id.strip_prefix('F')?.parse().ok()?;
        self.folders.iter().find(|f| f.id == n)
    }

    pub fn folder_by_name(&self, name: &str) -> Option<&FolderInfo> {
        let n = crate::store::messages::normalize_folder(name);
        self.folders.iter().find(|f| f.name == n)
    }

    /// Whether a blob belongs to a message of this account.
    pub fn holds_blob(&self, blob: &str) -> bool {
        self.emails.iter().any(|e| e.blob.as_str() == blob)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_and_flags_round_trip() {
        for (f, k) in [
            ("\\Seen", "$seen"),
            ("\\Flagged", "$flagged"),
            ("\\Draft", "$draft"),
        ] {
            assert_eq!(keyword(f).as_deref(), Some(k));
            assert_eq!(flag(k), f);
        }
        assert_eq!(keyword("\\Deleted"), None);
        assert_eq!(keyword("$POP3Deleted").as_deref(), Some("$pop3deleted"));
    }
}
