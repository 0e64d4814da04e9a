//! Folders and messages of a mailbox.
//!
//! Keys: `folders` = `mailbox-key \0 folder-name` → [`FolderInfo`] (with a numeric folder
//! id, UIDVALIDITY and UIDNEXT); `messages` = folder id (u64 BE) ++ UID (u32 BE) →
//! [`MessageRecord`]. Messages hang off the folder id, so renaming a folder (IMAP RENAME)
//! rewrites one key; UIDs only grow within a folder (RFC 3501 §2.3.1.1) and a folder
//! created again gets a new UIDVALIDITY from a store-wide counter.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sled::transaction::TransactionalTree;

use super::blobs::{Blob, BlobId};
use super::mailbox::{MailboxRecord, mailbox_key};
use super::tx::{
    FOLDERS, MAILBOXES, MESSAGES, META, Tx, TxResult, abort, blob_ref, get_json, put_json,
};
use super::{Store, StoreError};
use crate::pec::address::PecAddress;

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
        }
    }
}

/// Where a delivered message went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Delivered {
    pub mailbox: String,
    pub folder: String,
    pub uid: Uid,
    pub uidvalidity: u32,
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

pub(crate) fn message_key(folder_id: u64, uid: Uid) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..8].copy_from_slice(&folder_id.to_be_bytes());
    k[8..].copy_from_slice(&uid.to_be_bytes());
    k
}

const UIDVALIDITY_KEY: &[u8] = b"next_uidvalidity";

fn next_uidvalidity(meta: &TransactionalTree, now: Timestamp) -> TxResult<u32> {
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

/// Creates folder `name` (already normalized) in the transaction.
pub(crate) fn create_folder(
    tx: &Tx,
    mbkey: &str,
    name: &str,
    id: u64,
    now: Timestamp,
) -> TxResult<FolderInfo> {
    let key = folder_key(mbkey, name);
    if tx.t[FOLDERS].get(&key)?.is_some() {
        return abort(StoreError::FolderExists {
            mailbox: mbkey.into(),
            folder: name.into(),
        });
    }
    let f = FolderInfo {
        id,
        name: name.to_string(),
        uidvalidity: next_uidvalidity(&tx.t[META], now)?,
        uidnext: 1,
        messages: 0,
        bytes: 0,
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

pub(crate) fn apply_deliver(tx: &Tx, d: &Delivery) -> TxResult<Delivered> {
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
    let folder_name = normalize_folder(&d.folder);
    let mut f = load_folder(tx, &mbkey, &folder_name)?;
    let uid = f.uidnext;
    f.uidnext = f.uidnext.saturating_add(1);
    f.messages += 1;
    f.bytes += size;
    let rec = MessageRecord {
        uid,
        blob: d.blob.id.clone(),
        size,
        flags: d.flags.clone(),
        internal_date: d.internal_date,
    };
    put_json(&tx.t[MESSAGES], &message_key(f.id, uid), &rec)?;
    put_json(&tx.t[FOLDERS], &folder_key(&mbkey, &folder_name), &f)?;
    mb.usage_bytes += size;
    mb.messages += 1;
    put_json(&tx.t[MAILBOXES], mbkey.as_bytes(), &mb)?;
    blob_ref(tx, &d.blob.id, 1)?;
    Ok(Delivered {
        mailbox: mbkey,
        folder: folder_name,
        uid,
        uidvalidity: f.uidvalidity,
    })
}

pub(crate) fn apply_folder_create(
    tx: &Tx,
    mailbox: &PecAddress,
    name: &str,
    id: u64,
    now: Timestamp,
) -> TxResult<()> {
    let (mbkey, _) = load_mailbox(tx, mailbox)?;
    create_folder(tx, &mbkey, &normalize_folder(name), id, now).map(|_| ())
}

pub(crate) fn apply_folder_rename(
    tx: &Tx,
    mailbox: &PecAddress,
    from: &str,
    to: &str,
) -> TxResult<()> {
    let (mbkey, _) = load_mailbox(tx, mailbox)?;
    let (from, to) = (normalize_folder(from), normalize_folder(to));
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
    f.name = to.clone();
    put_json(&tx.t[FOLDERS], &folder_key(&mbkey, &to), &f)
}

pub(crate) fn apply_set_flags(
    tx: &Tx,
    mailbox: &PecAddress,
    folder: &str,
    uid: Uid,
    flags: &[String],
) -> TxResult<()> {
    let (mbkey, _) = load_mailbox(tx, mailbox)?;
    let folder = normalize_folder(folder);
    let f = load_folder(tx, &mbkey, &folder)?;
    let key = message_key(f.id, uid);
    let Some(mut m) = get_json::<MessageRecord>(&tx.t[MESSAGES], &key)? else {
        return abort(StoreError::NoSuchMessage {
            mailbox: mbkey,
            folder,
            uid,
        });
    };
    m.flags = flags.to_vec();
    put_json(&tx.t[MESSAGES], &key, &m)
}

/// See [`super::Batch::add_flags`]: adds `flags` (compared case-insensitively) to the
/// messages of `uids` still there; anything gone is skipped, not an error.
pub(crate) fn apply_add_flags(
    tx: &Tx,
    mailbox: &PecAddress,
    folder: &str,
    uidvalidity: u32,
    uids: &[Uid],
    flags: &[String],
) -> TxResult<()> {
    let mbkey = mailbox_key(mailbox);
    let folder = normalize_folder(folder);
    let Some(f) = get_json::<FolderInfo>(&tx.t[FOLDERS], &folder_key(&mbkey, &folder))? else {
        return Ok(());
    };
    if f.uidvalidity != uidvalidity {
        // Deleted and created again: the UIDs name other messages now.
        return Ok(());
    }
    for &uid in uids {
        let key = message_key(f.id, uid);
        let Some(mut m) = get_json::<MessageRecord>(&tx.t[MESSAGES], &key)? else {
            continue;
        };
        let before = m.flags.len();
        for flag in flags {
            if !m.flags.iter().any(|x| x.eq_ignore_ascii_case(flag)) {
                m.flags.push(flag.clone());
            }
        }
        if m.flags.len() != before {
            put_json(&tx.t[MESSAGES], &key, &m)?;
        }
    }
    Ok(())
}

pub(crate) fn apply_expunge(tx: &Tx, mailbox: &PecAddress, folder: &str, uid: Uid) -> TxResult<()> {
    let (mbkey, mut mb) = load_mailbox(tx, mailbox)?;
    let folder = normalize_folder(folder);
    let mut f = load_folder(tx, &mbkey, &folder)?;
    let key = message_key(f.id, uid);
    let Some(m) = get_json::<MessageRecord>(&tx.t[MESSAGES], &key)? else {
        return abort(StoreError::NoSuchMessage {
            mailbox: mbkey,
            folder,
            uid,
        });
    };
    tx.t[MESSAGES].remove(&key)?;
    f.messages = f.messages.saturating_sub(1);
    f.bytes = f.bytes.saturating_sub(m.size);
    put_json(&tx.t[FOLDERS], &folder_key(&mbkey, &folder), &f)?;
    mb.usage_bytes = mb.usage_bytes.saturating_sub(m.size);
    mb.messages = mb.messages.saturating_sub(1);
    put_json(&tx.t[MAILBOXES], mbkey.as_bytes(), &mb)?;
    blob_ref(tx, &m.blob, -1)
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, v: &[u8]) -> Result<T, StoreError> {
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
            out.push(decode("message", &v)?);
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
            .map(|v| decode("message", &v))
            .transpose()
    }
}
