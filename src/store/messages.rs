//! Folders and messages of a mailbox.
//!
//! Keys: `folders` = `mailbox-key \0 folder-name` → [`FolderInfo`] (with a numeric folder
//! id, UIDVALIDITY and UIDNEXT); `messages` = folder id (u64 BE) ++ UID (u32 BE) →
//! [`MessageRecord`] in its compact stored form ([`encode_message`]; JSON in stores of
//! schema 4 and older, still read). Messages hang off the folder id, so renaming a folder (IMAP RENAME)
//! rewrites one key; UIDs only grow within a folder (RFC 3501 §2.3.1.1) and a folder
//! created again gets a new UIDVALIDITY from a store-wide counter.
//!
//! Subscriptions (IMAP SUBSCRIBE/LSUB, RFC 3501 §6.3.6–§6.3.9): a folder's own flag
//! ([`FolderInfo::subscribed`], missing in records written before subscriptions were
//! kept, which counts as subscribed), plus one record per mailbox, `folders` =
//! `mailbox-key \x01` → sorted names, for the subscribed names that have no folder (RFC
//! 3501 lets a client subscribe to a name that does not exist, and a subscription
//! outlives a DELETE of its folder). A name is in one place or the other: creating a
//! folder takes its name's subscription from the record, deleting one puts it back.
//! RENAME moves the subscription with the folder (the old name is not left subscribed).

use super::kv::TxTree;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::blobs::{Blob, BlobId};
use super::changes::{self, ChangeSet, Kind};
use super::mailbox::{MailboxRecord, mailbox_key};
use super::tx::{
    FOLDERS, MAILBOXES, MESSAGES, META, Tx, TxResult, abort, blob_ref, get_json, put_json,
};
use super::{Store, StoreError};

mod stored;
use crate::pec::address::PecAddress;
pub(crate) use stored::{decode_message, encode_message, get_message};

/// An IMAP UID.
pub type Uid = u32;

/// The folder every mailbox has.
pub const INBOX: &str = "INBOX";

/// `INBOX` is case-insensitive (RFC 3501 §5.1); other names are kept as given.
pub fn normalize_folder(name: &str) -> String {
    if name.eq_ignore_ascii_case(INBOX) {
        INBOX.to_string()
    } else {
        name.to_string()
    }
}

/// A folder of a mailbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderInfo {
    pub id: u64,
    pub name: String,
    pub uidvalidity: u32,
    pub uidnext: Uid,
    pub messages: u64,
    pub bytes: u64,
    /// IMAP subscription. New folders are not subscribed unless asked (the special-use
    /// ones are at creation); folders stored before this field existed are.
    #[serde(default = "subscribed_when_missing")]
    pub subscribed: bool,
}

fn subscribed_when_missing() -> bool {
    true
}

/// A message in a folder; the body is the blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRecord {
    pub uid: Uid,
    pub blob: BlobId,
    pub size: u64,
    pub flags: Vec<String>,
    pub internal_date: Timestamp,
}

/// A message to store (delivery point, IMAP APPEND, the sender's copy of a receipt).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub mailbox: PecAddress,
    pub folder: String,
    pub blob: Blob,
    pub flags: Vec<String>,
    pub internal_date: Timestamp,
    /// Refuse with `QuotaExceeded` when the message does not fit. Receipts addressed to
    /// the sender may be stored regardless (the caller decides).
    pub enforce_quota: bool,
    /// What the mailbox's rules look at ([`crate::filters`]): set for messages that
    /// arrive (deliveries into the INBOX), `None` for the owner's own copies (APPEND,
    /// drafts), which rules never move.
    pub facts: Option<Box<crate::filters::MessageFacts>>,
    /// Also copy it into the security archive ([`super::archive`]): every message the
    /// provider delivers; not the owner's own copies (APPEND, drafts, COPY).
    pub archive: bool,
}

/// The special use of a folder, by its name (JMAP roles, RFC 8621 §2; IMAP SPECIAL-USE).
pub fn folder_role(name: &str) -> Option<&'static str> {
    Some(match name {
        "INBOX" => "inbox",
        "Sent" => "sent",
        "Drafts" => "drafts",
        "Trash" => "trash",
        "Archive" => "archive",
        "Junk" => "junk",
        _ => return None,
    })
}

impl Delivery {
    /// Into INBOX, no flags, quota enforced.
    pub fn inbox(mailbox: PecAddress, blob: Blob, internal_date: Timestamp) -> Self {
        Self {
            mailbox,
            folder: INBOX.into(),
            blob,
            flags: Vec::new(),
            internal_date,
            enforce_quota: true,
            facts: None,
            archive: true,
        }
    }

    /// Subject to the mailbox's rules, which read these bytes' headers.
    pub fn filtered(mut self, raw: &[u8]) -> Self {
        self.facts = Some(Box::new(crate::filters::MessageFacts::of(raw)));
        self
    }
}

/// Where a delivered message went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Delivered {
    pub mailbox: String,
    pub folder: String,
    pub uid: Uid,
    pub uidvalidity: u32,
    /// The rule that applied (its name).
    pub rule: Option<String>,
    /// The rule's folder is gone: the message went to the INBOX instead.
    pub rule_broken: bool,
}

pub(crate) fn folder_key(mbkey: &str, name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(mbkey.len() + name.len() + 1);
    k.extend_from_slice(mbkey.as_bytes());
    k.push(0);
    k.extend_from_slice(name.as_bytes());
    k
}

pub(crate) fn folder_prefix(mbkey: &str) -> Vec<u8> {
    folder_key(mbkey, "")
}

/// Key of the subscribed names without a folder: outside [`folder_prefix`], so folder
/// scans never see it.
pub(crate) fn subscriptions_key(mbkey: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(mbkey.len() + 1);
    k.extend_from_slice(mbkey.as_bytes());
    k.push(1);
    k
}

type Names = std::collections::BTreeSet<String>;

fn load_unfoldered(tx: &Tx, mbkey: &str) -> TxResult<Names> {
    Ok(get_json::<Names>(&tx.t[FOLDERS], &subscriptions_key(mbkey))?.unwrap_or_default())
}

fn save_unfoldered(tx: &Tx, mbkey: &str, names: &Names) -> TxResult<()> {
    let key = subscriptions_key(mbkey);
    if names.is_empty() {
        tx.t[FOLDERS].remove(key)?;
        Ok(())
    } else {
        put_json(&tx.t[FOLDERS], &key, names)
    }
}

/// Forgets every subscription of a mailbox that has no folder (a mailbox added again
/// starts without its predecessor's).
pub(crate) fn clear_unfoldered(tx: &Tx, mbkey: &str) -> TxResult<()> {
    save_unfoldered(tx, mbkey, &Names::new())
}

pub(crate) fn message_key(folder_id: u64, uid: Uid) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..8].copy_from_slice(&folder_id.to_be_bytes());
    k[8..].copy_from_slice(&uid.to_be_bytes());
    k
}

const UIDVALIDITY_KEY: &[u8] = b"next_uidvalidity";

fn next_uidvalidity(meta: &TxTree<'_>, now: Timestamp) -> TxResult<u32> {
    let stored = meta
        .get(UIDVALIDITY_KEY)?
        .and_then(|v| <[u8; 4]>::try_from(v.as_ref()).ok())
        .map(u32::from_be_bytes);
    // Start from the clock so that a store rebuilt from scratch does not reuse values.
    let v = stored
        .unwrap_or_else(|| now.as_second().clamp(1, u32::MAX as i64) as u32)
        .max(1);
    meta.insert(UIDVALIDITY_KEY, &v.wrapping_add(1).max(1).to_be_bytes())?;
    Ok(v)
}

/// Creates folder `name` (already normalized) in the transaction, subscribed when
/// `subscribed` or when its name was (the subscription moves onto the folder).
pub(crate) fn create_folder(
    tx: &Tx,
    mbkey: &str,
    name: &str,
    id: u64,
    now: Timestamp,
    subscribed: bool,
) -> TxResult<FolderInfo> {
    let key = folder_key(mbkey, name);
    if tx.t[FOLDERS].get(&key)?.is_some() {
        return abort(StoreError::FolderExists {
            mailbox: mbkey.into(),
            folder: name.into(),
        });
    }
    let mut unfoldered = load_unfoldered(tx, mbkey)?;
    let was_subscribed = unfoldered.remove(name);
    if was_subscribed {
        save_unfoldered(tx, mbkey, &unfoldered)?;
    }
    let f = FolderInfo {
        id,
        name: name.to_string(),
        uidvalidity: next_uidvalidity(&tx.t[META], now)?,
        uidnext: 1,
        messages: 0,
        bytes: 0,
        subscribed: subscribed || was_subscribed,
    };
    put_json(&tx.t[FOLDERS], &key, &f)?;
    Ok(f)
}

fn load_mailbox(tx: &Tx, addr: &PecAddress) -> TxResult<(String, MailboxRecord)> {
    let k = mailbox_key(addr);
    match get_json::<MailboxRecord>(&tx.t[MAILBOXES], k.as_bytes())? {
        Some(m) => Ok((k, m)),
        None => abort(StoreError::NoSuchMailbox(addr.to_string())),
    }
}

fn load_folder(tx: &Tx, mbkey: &str, name: &str) -> TxResult<FolderInfo> {
    match get_json::<FolderInfo>(&tx.t[FOLDERS], &folder_key(mbkey, name))? {
        Some(f) => Ok(f),
        None => abort(StoreError::NoSuchFolder {
            mailbox: mbkey.into(),
            folder: name.into(),
        }),
    }
}

pub(crate) fn apply_deliver(tx: &Tx, log: &mut ChangeSet, d: &Delivery) -> TxResult<Delivered> {
    let (mbkey, mut mb) = load_mailbox(tx, &d.mailbox)?;
    let size = d.blob.size;
    // The check-and-add happens inside the single-writer transaction: exact under races.
    if d.enforce_quota && mb.usage_bytes.saturating_add(size) > mb.quota_bytes {
        return abort(StoreError::QuotaExceeded {
            mailbox: mbkey,
            usage: mb.usage_bytes,
            size,
            quota: mb.quota_bytes,
        });
    }
    let mut folder_name = normalize_folder(&d.folder);
    if super::archive::is_archive(&folder_name) {
        return super::archive::read_only(&mbkey, &folder_name);
    }
    let mut flags = d.flags.clone();
    let (mut rule, mut rule_broken, mut rule_notify) = (None, false, false);
    if let Some(facts) = &d.facts
        && folder_name == INBOX
        && let Some(o) = crate::filters::evaluate(&mb.filters, facts)
    {
        rule = Some(o.rule.to_string());
        rule_notify = o.notify;
        if let Some(target) = o.folder.map(normalize_folder) {
            // A folder deleted after the rule was saved: the message stays in the INBOX
            // (as for a rule into the archive, which the rules' check refuses anyway).
            if !super::archive::is_archive(&target)
                && tx.t[FOLDERS].get(folder_key(&mbkey, &target))?.is_some()
            {
                folder_name = target;
            } else {
                rule_broken = true;
            }
        }
        for (on, flag) in [(o.mark_read, "\\Seen"), (o.flag, "\\Flagged")] {
            if on && !flags.iter().any(|x| x.eq_ignore_ascii_case(flag)) {
                flags.push(flag.to_string());
            }
        }
    }
    if let Some(facts) = &d.facts {
        mb.notify.note(facts, d.internal_date, rule_notify);
    }
    let mut f = load_folder(tx, &mbkey, &folder_name)?;
    let uid = f.uidnext;
    f.uidnext = f.uidnext.saturating_add(1);
    f.messages += 1;
    f.bytes += size;
    let rec = MessageRecord {
        uid,
        blob: d.blob.id.clone(),
        size,
        flags,
        internal_date: d.internal_date,
    };
    tx.t[MESSAGES].insert(message_key(f.id, uid), encode_message(&rec))?;
    put_json(&tx.t[FOLDERS], &folder_key(&mbkey, &folder_name), &f)?;
    mb.usage_bytes += size;
    mb.messages += 1;
    put_json(&tx.t[MAILBOXES], mbkey.as_bytes(), &mb)?;
    blob_ref(tx, &d.blob.id, 1)?;
    changes::record_added(tx, log, &mbkey, &d.blob.id, f.id)?;
    Ok(Delivered {
        mailbox: mbkey,
        folder: folder_name,
        uid,
        uidvalidity: f.uidvalidity,
        rule,
        rule_broken,
    })
}

pub(crate) fn apply_folder_create(
    tx: &Tx,
    log: &mut ChangeSet,
    mailbox: &PecAddress,
    name: &str,
    id: u64,
    now: Timestamp,
) -> TxResult<()> {
    let (mbkey, _) = load_mailbox(tx, mailbox)?;
    if super::archive::is_archive(name) {
        return super::archive::read_only(&mbkey, name);
    }
    create_folder(tx, &mbkey, &normalize_folder(name), id, now, false)?;
    log.touch(&mbkey).folder(id, Kind::Created);
    Ok(())
}

/// The last step of a folder deletion, after its messages were expunged in the same
/// batch: removes the folder record `id`.
pub(crate) fn apply_folder_delete(
    tx: &Tx,
    log: &mut ChangeSet,
    mailbox: &PecAddress,
    name: &str,
    id: u64,
) -> TxResult<()> {
    let mbkey = mailbox_key(mailbox);
    tx.t[FOLDERS].remove(folder_key(&mbkey, &normalize_folder(name)))?;
    log.touch(&mbkey).folder(id, Kind::Destroyed);
    Ok(())
}

/// See [`super::Batch::subscribe`]: sets the subscription of `name`, whether or not a
/// folder has that name.
pub(crate) fn apply_subscribe(
    tx: &Tx,
    log: &mut ChangeSet,
    mailbox: &PecAddress,
    name: &str,
    subscribed: bool,
) -> TxResult<()> {
    let (mbkey, _) = load_mailbox(tx, mailbox)?;
    let name = normalize_folder(name);
    if super::archive::is_archive(&name) {
        // Its folders are always listed; a change would log them in the own account.
        return super::archive::read_only(&mbkey, &name);
    }
    let key = folder_key(&mbkey, &name);
    let mut unfoldered = load_unfoldered(tx, &mbkey)?;
    let changed = match get_json::<FolderInfo>(&tx.t[FOLDERS], &key)? {
        Some(mut f) => {
            if f.subscribed != subscribed {
                f.subscribed = subscribed;
                put_json(&tx.t[FOLDERS], &key, &f)?;
                log.touch(&mbkey).folder(f.id, Kind::Updated);
            }
            // Not expected (a name is in one place), but never leave it in both.
            unfoldered.remove(&name)
        }
        None if subscribed => unfoldered.insert(name),
        None => unfoldered.remove(&name),
    };
    if changed {
        save_unfoldered(tx, &mbkey, &unfoldered)?;
        // Visible to IMAP LSUB though no JMAP Mailbox has this name.
        log.touch(&mbkey);
    }
    Ok(())
}

/// Before a folder is deleted (the op precedes the deletion in the same batch): its
/// subscription, if any, is kept under its name (RFC 3501 §6.3.9: never removed
/// unilaterally).
pub(crate) fn apply_keep_subscription(
    tx: &Tx,
    log: &mut ChangeSet,
    mailbox: &PecAddress,
    name: &str,
) -> TxResult<()> {
    let mbkey = mailbox_key(mailbox);
    let name = normalize_folder(name);
    if let Some(f) = get_json::<FolderInfo>(&tx.t[FOLDERS], &folder_key(&mbkey, &name))?
        && f.subscribed
    {
        let mut unfoldered = load_unfoldered(tx, &mbkey)?;
        if unfoldered.insert(name) {
            save_unfoldered(tx, &mbkey, &unfoldered)?;
            log.touch(&mbkey);
        }
    }
    Ok(())
}

pub(crate) fn apply_folder_rename(
    tx: &Tx,
    log: &mut ChangeSet,
    mailbox: &PecAddress,
    from: &str,
    to: &str,
) -> TxResult<()> {
    let (mbkey, _) = load_mailbox(tx, mailbox)?;
    let (from, to) = (normalize_folder(from), normalize_folder(to));
    for name in [&from, &to] {
        if super::archive::is_archive(name) {
            return super::archive::read_only(&mbkey, name);
        }
    }
    if from == INBOX || to == INBOX {
        // IMAP's special INBOX rename (move all messages) is the server's business.
        return abort(StoreError::FolderExists {
            mailbox: mbkey,
            folder: INBOX.into(),
        });
    }
    let mut f = load_folder(tx, &mbkey, &from)?;
    if tx.t[FOLDERS].get(folder_key(&mbkey, &to))?.is_some() {
        return abort(StoreError::FolderExists {
            mailbox: mbkey,
            folder: to,
        });
    }
    tx.t[FOLDERS].remove(folder_key(&mbkey, &from))?;
    // The subscription moves with the folder; one the new name had is kept too.
    let mut unfoldered = load_unfoldered(tx, &mbkey)?;
    if unfoldered.remove(&to) {
        save_unfoldered(tx, &mbkey, &unfoldered)?;
        f.subscribed = true;
    }
    f.name = to.clone();
    log.touch(&mbkey).folder(f.id, Kind::Updated);
    put_json(&tx.t[FOLDERS], &folder_key(&mbkey, &to), &f)
}

pub(crate) fn apply_set_flags(
    tx: &Tx,
    log: &mut ChangeSet,
    mailbox: &PecAddress,
    folder: &str,
    uid: Uid,
    flags: &[String],
) -> TxResult<()> {
    let (mbkey, _) = load_mailbox(tx, mailbox)?;
    let folder = normalize_folder(folder);
    if super::archive::is_archive(&folder) {
        return super::archive::read_only(&mbkey, &folder);
    }
    let f = load_folder(tx, &mbkey, &folder)?;
    let key = message_key(f.id, uid);
    let Some(mut m) = get_message(&tx.t[MESSAGES], &key)? else {
        return abort(StoreError::NoSuchMessage {
            mailbox: mbkey,
            folder,
            uid,
        });
    };
    if m.flags == flags {
        // Nothing a client could see changed: no write, no modseq.
        return Ok(());
    }
    let seen_changed = changes::has_seen(&m.flags) != changes::has_seen(flags);
    m.flags = flags.to_vec();
    changes::record_flagged(log, &mbkey, &m.blob, f.id, seen_changed);
    tx.t[MESSAGES].insert(key, encode_message(&m))
}

/// See [`super::Batch::add_flags`]: adds `flags` (compared case-insensitively) to the
/// messages of `uids` still there; anything gone is skipped, not an error.
pub(crate) fn apply_add_flags(
    tx: &Tx,
    log: &mut ChangeSet,
    mailbox: &PecAddress,
    folder: &str,
    uidvalidity: u32,
    uids: &[Uid],
    flags: &[String],
) -> TxResult<()> {
    let mbkey = mailbox_key(mailbox);
    let folder = normalize_folder(folder);
    if super::archive::is_archive(&folder) {
        return super::archive::read_only(&mbkey, &folder);
    }
    let Some(f) = get_json::<FolderInfo>(&tx.t[FOLDERS], &folder_key(&mbkey, &folder))? else {
        return Ok(());
    };
    if f.uidvalidity != uidvalidity {
        // Deleted and created again: the UIDs name other messages now.
        return Ok(());
    }
    for &uid in uids {
        let key = message_key(f.id, uid);
        let Some(mut m) = get_message(&tx.t[MESSAGES], &key)? else {
            continue;
        };
        let before = m.flags.len();
        let seen_before = changes::has_seen(&m.flags);
        for flag in flags {
            if !m.flags.iter().any(|x| x.eq_ignore_ascii_case(flag)) {
                m.flags.push(flag.clone());
            }
        }
        if m.flags.len() != before {
            let seen_changed = seen_before != changes::has_seen(&m.flags);
            changes::record_flagged(log, &mbkey, &m.blob, f.id, seen_changed);
            tx.t[MESSAGES].insert(key, encode_message(&m))?;
        }
    }
    Ok(())
}

pub(crate) fn apply_expunge(
    tx: &Tx,
    log: &mut ChangeSet,
    mailbox: &PecAddress,
    folder: &str,
    uid: Uid,
) -> TxResult<()> {
    let (mbkey, mut mb) = load_mailbox(tx, mailbox)?;
    let folder = normalize_folder(folder);
    if super::archive::is_archive(&folder) {
        return super::archive::read_only(&mbkey, &folder);
    }
    let mut f = load_folder(tx, &mbkey, &folder)?;
    let key = message_key(f.id, uid);
    let Some(m) = get_message(&tx.t[MESSAGES], &key)? else {
        return abort(StoreError::NoSuchMessage {
            mailbox: mbkey,
            folder,
            uid,
        });
    };
    tx.t[MESSAGES].remove(key)?;
    f.messages = f.messages.saturating_sub(1);
    f.bytes = f.bytes.saturating_sub(m.size);
    put_json(&tx.t[FOLDERS], &folder_key(&mbkey, &folder), &f)?;
    mb.usage_bytes = mb.usage_bytes.saturating_sub(m.size);
    mb.messages = mb.messages.saturating_sub(1);
    put_json(&tx.t[MAILBOXES], mbkey.as_bytes(), &mb)?;
    changes::record_removed(tx, log, &mbkey, &m.blob, f.id)?;
    blob_ref(tx, &m.blob, -1)
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(
    what: &str,
    v: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(v).map_err(|e| StoreError::Corrupt {
        what: what.into(),
        detail: e.to_string(),
    })
}

impl Store {
    /// The folders of a mailbox, by name.
    pub fn folders(&self, mailbox: &PecAddress) -> Result<Vec<FolderInfo>, StoreError> {
        let mut out = Vec::new();
        for kv in self
            .trees()
            .folders
            .scan_prefix(folder_prefix(&mailbox_key(mailbox)))
        {
            let (_, v) = kv?;
            out.push(decode("folder", &v)?);
        }
        Ok(out)
    }

    /// The names the mailbox is subscribed to, sorted: its subscribed folders and the
    /// subscribed names that have no folder.
    pub fn subscriptions(&self, mailbox: &PecAddress) -> Result<Vec<String>, StoreError> {
        let mbkey = mailbox_key(mailbox);
        let mut names: Names = match self.trees().folders.get(subscriptions_key(&mbkey))? {
            Some(v) => decode("subscriptions", &v)?,
            None => Names::new(),
        };
        names.extend(
            self.folders(mailbox)?
                .into_iter()
                .filter(|f| f.subscribed)
                .map(|f| f.name),
        );
        Ok(names.into_iter().collect())
    }

    pub fn folder(
        &self,
        mailbox: &PecAddress,
        name: &str,
    ) -> Result<Option<FolderInfo>, StoreError> {
        let k = folder_key(&mailbox_key(mailbox), &normalize_folder(name));
        self.trees()
            .folders
            .get(k)?
            .map(|v| decode("folder", &v))
            .transpose()
    }

    /// The messages of a folder, by UID.
    pub fn messages(
        &self,
        mailbox: &PecAddress,
        folder: &str,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        let f = self
            .folder(mailbox, folder)?
            .ok_or_else(|| StoreError::NoSuchFolder {
                mailbox: mailbox.to_string(),
                folder: folder.to_string(),
            })?;
        let mut out = Vec::with_capacity(f.messages as usize);
        for kv in self.trees().messages.scan_prefix(f.id.to_be_bytes()) {
            let (_, v) = kv?;
            out.push(decode_message(&v)?);
        }
        Ok(out)
    }

    pub fn message(
        &self,
        mailbox: &PecAddress,
        folder: &str,
        uid: Uid,
    ) -> Result<Option<MessageRecord>, StoreError> {
        let Some(f) = self.folder(mailbox, folder)? else {
            return Ok(None);
        };
        self.trees()
            .messages
            .get(message_key(f.id, uid))?
            .map(|v| decode_message(&v))
            .transpose()
    }
}

#[cfg(test)]
pub(super) mod tests {
    //! Unit tests: their unwraps and expects see only values and stores built here.
    use super::*;
    use crate::store::mailbox::Password;
    use crate::store::{Batch, NewMailbox, StoreOptions};

    pub(in crate::store::messages) fn open(dir: &std::path::Path) -> Store {
        Store::open(dir, StoreOptions::default()).expect("open")
    }

    pub(in crate::store::messages) fn add(s: &Store, a: &PecAddress) {
        s.add_mailbox(NewMailbox {
            address: a.clone(),
            password: Password::new("pw"),
            quota_bytes: Some(1000),
            options: Default::default(),
            provisional: false,
        })
        .expect("mailbox");
    }

    #[test]
    fn subscriptions_survive_reopen_delete_and_rename() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = PecAddress::parse("sub@example.it").expect("address");
        let s = open(dir.path());
        add(&s, &a);
        assert_eq!(s.subscriptions(&a).expect("subs"), ["INBOX"]);
        s.commit(
            Batch::new()
                .create_folder(a.clone(), "Kept")
                .create_folder(a.clone(), "Plain")
                .create_folder(a.clone(), "Gone")
                .subscribe(a.clone(), "Kept")
                .subscribe(a.clone(), "Gone")
                .subscribe(a.clone(), "Nowhere"),
        )
        .expect("commit");
        s.commit(Batch::new().delete_folder(a.clone(), "Gone"))
            .expect("delete");
        s.commit(Batch::new().rename_folder(a.clone(), "Kept", "Moved"))
            .expect("rename");
        drop(s);

        let s = open(dir.path());
        assert_eq!(
            s.subscriptions(&a).expect("subs"),
            ["Gone", "INBOX", "Moved", "Nowhere"]
        );
        let plain = s.folder(&a, "Plain").expect("read").expect("folder");
        assert!(!plain.subscribed);
        // The folder created again under a subscribed name takes the subscription.
        s.commit(Batch::new().create_folder(a.clone(), "Gone"))
            .expect("create");
        assert!(
            s.folder(&a, "Gone")
                .expect("read")
                .expect("folder")
                .subscribed
        );
        s.commit(
            Batch::new()
                .unsubscribe(a.clone(), "Gone")
                .unsubscribe(a.clone(), "Nowhere"),
        )
        .expect("unsubscribe");
        assert_eq!(s.subscriptions(&a).expect("subs"), ["INBOX", "Moved"]);

        // A mailbox deleted and added again starts with INBOX only.
        s.commit(Batch::new().subscribe(a.clone(), "Nowhere"))
            .expect("subscribe");
        s.delete_mailbox(&a).expect("delete mailbox");
        assert!(
            s.trees().folders.is_empty().unwrap(),
            "leftover folder records"
        );
        add(&s, &a);
        assert_eq!(s.subscriptions(&a).expect("subs"), ["INBOX"]);
    }

    #[test]
    fn folders_stored_before_subscriptions_count_as_subscribed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = PecAddress::parse("old@example.it").expect("address");
        let s = open(dir.path());
        add(&s, &a);
        // A record as written before the `subscribed` field existed.
        let old =
            br#"{"id":4242,"name":"Legacy","uidvalidity":7,"uidnext":1,"messages":0,"bytes":0}"#;
        s.trees()
            .folders
            .insert(folder_key(&mailbox_key(&a), "Legacy"), old.to_vec())
            .expect("insert");
        drop(s);
        let s = open(dir.path());
        assert_eq!(s.subscriptions(&a).expect("subs"), ["INBOX", "Legacy"]);
        s.commit(Batch::new().unsubscribe(a.clone(), "Legacy"))
            .expect("unsubscribe");
        assert_eq!(s.subscriptions(&a).expect("subs"), ["INBOX"]);
    }
}
