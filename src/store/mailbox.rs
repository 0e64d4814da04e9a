//! Mailboxes and their administration: plain functions on [`Store`] taking typed inputs
//! and returning serde-serializable outputs, so that the CLI today and a control socket
//! of the running server later share them.
//!
//! Passwords are stored only as argon2id PHC strings (argon2 crate defaults: v19,
//! m = 19 MiB, t = 2, p = 1); hashing and verifying are CPU-bound and happen in the
//! caller's thread, never in the committer. Every change also writes a `MailboxAdmin`
//! trace record in the same commit.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::batch::{Batch, Op};
use super::changes::{ChangeSet, Kind};
use super::messages::{INBOX, clear_unfoldered, create_folder};
use super::tx::{MAILBOXES, Tx, TxResult, abort, put_json};
use super::{Store, StoreError};
use crate::pec::address::PecAddress;
use crate::trace::{EventKind, TraceEvent};

/// Per-mailbox options.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MailboxOptions {
    /// Deliver messages that arrive as anomaly envelopes (non-PEC senders).
    pub accept_anomalies: bool,
}

/// The stored record (the password hash never leaves the store).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct MailboxRecord {
    pub address: PecAddress,
    pub password_hash: String,
    pub quota_bytes: u64,
    pub usage_bytes: u64,
    pub messages: u64,
    pub options: MailboxOptions,
    pub created: Timestamp,
}

/// A mailbox as shown to administrators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailboxInfo {
    pub address: PecAddress,
    pub quota_bytes: u64,
    pub usage_bytes: u64,
    pub messages: u64,
    pub options: MailboxOptions,
    pub created: Timestamp,
}

impl From<&MailboxRecord> for MailboxInfo {
    fn from(r: &MailboxRecord) -> Self {
        Self {
            address: r.address.clone(),
            quota_bytes: r.quota_bytes,
            usage_bytes: r.usage_bytes,
            messages: r.messages,
            options: r.options.clone(),
            created: r.created,
        }
    }
}

/// A password in clear, redacted in `Debug`.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Password(String);

impl Password {
    pub fn new(p: impl Into<String>) -> Self {
        Self(p.into())
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// Input of [`Store::add_mailbox`].
#[derive(Debug, Clone, Deserialize)]
pub struct NewMailbox {
    pub address: PecAddress,
    pub password: Password,
    /// `None`: `limits.default_quota_bytes`.
    pub quota_bytes: Option<u64>,
    #[serde(default)]
    pub options: MailboxOptions,
}

pub(crate) fn mailbox_key(a: &PecAddress) -> String {
    a.key()
}

fn hash_password(p: &Password) -> Result<String, StoreError> {
    let mut salt = [0u8; 16];
    openssl::rand::rand_bytes(&mut salt).map_err(|e| StoreError::Password(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| StoreError::Password(e.to_string()))?;
    Argon2::default()
        .hash_password(p.0.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| StoreError::Password(e.to_string()))
}

pub(crate) fn apply_add(
    tx: &Tx,
    log: &mut ChangeSet,
    rec: &MailboxRecord,
    inbox_id: u64,
) -> TxResult<()> {
    let k = mailbox_key(&rec.address);
    if tx.t[MAILBOXES].get(k.as_bytes())?.is_some() {
        return abort(StoreError::MailboxExists(rec.address.to_string()));
    }
    put_json(&tx.t[MAILBOXES], k.as_bytes(), rec)?;
    // INBOX is subscribed from the start; nothing of a former mailbox of this address is.
    clear_unfoldered(tx, &k)?;
    create_folder(tx, &k, INBOX, inbox_id, rec.created, true)?;
    log.touch(&k).folder(inbox_id, Kind::Created);
    Ok(())
}

pub(crate) fn apply_update(
    tx: &Tx,
    address: &PecAddress,
    password_hash: &Option<String>,
    quota: Option<u64>,
    options: &Option<MailboxOptions>,
) -> TxResult<()> {
    let k = mailbox_key(address);
    let Some(mut rec) = super::tx::get_json::<MailboxRecord>(&tx.t[MAILBOXES], k.as_bytes())?
    else {
        return abort(StoreError::NoSuchMailbox(address.to_string()));
    };
    if let Some(h) = password_hash {
        rec.password_hash = h.clone();
    }
    if let Some(q) = quota {
        rec.quota_bytes = q;
    }
    if let Some(o) = options {
        rec.options = o.clone();
    }
    put_json(&tx.t[MAILBOXES], k.as_bytes(), &rec)
}

impl Store {
    fn admin_event(&self, address: &PecAddress, detail: String) -> TraceEvent {
        TraceEvent::new(EventKind::MailboxAdmin, self.options().clock.now())
            .recipient(address.to_string())
            .detail(detail)
    }

    fn check_domain(&self, address: &PecAddress) -> Result<(), StoreError> {
        let served = &self.options().domains;
        if served.is_empty() || served.contains(address.domain()) {
            return Ok(());
        }
        Err(StoreError::DomainNotServed {
            domain: address.domain().to_string(),
            served: served.iter().map(ToString::to_string).collect(),
        })
    }

    /// Creates a mailbox (with its INBOX). Its domain must be served.
    pub fn add_mailbox(&self, req: NewMailbox) -> Result<MailboxInfo, StoreError> {
        self.check_domain(&req.address)?;
        let rec = MailboxRecord {
            address: req.address.clone(),
            password_hash: hash_password(&req.password)?,
            quota_bytes: req
                .quota_bytes
                .unwrap_or(self.options().default_quota_bytes),
            usage_bytes: 0,
            messages: 0,
            options: req.options,
            created: self.options().clock.now(),
        };
        let ev = self.admin_event(
            &req.address,
            format!("mailbox added, quota {} bytes", rec.quota_bytes),
        );
        self.commit(Batch::new().push(Op::MailboxAdd(rec.clone())).trace(ev))?;
        Ok(MailboxInfo::from(&rec))
    }

    /// Deletes a mailbox, its folders and messages (their blobs are swept later).
    pub fn delete_mailbox(&self, address: &PecAddress) -> Result<(), StoreError> {
        let ev = self.admin_event(address, "mailbox deleted".into());
        self.commit(
            Batch::new()
                .push(Op::MailboxDelete(address.clone()))
                .trace(ev),
        )?;
        Ok(())
    }

    /// One mailbox.
    pub fn mailbox(&self, address: &PecAddress) -> Result<Option<MailboxInfo>, StoreError> {
        Ok(self
            .mailbox_record(address)?
            .as_ref()
            .map(MailboxInfo::from))
    }

    pub(crate) fn mailbox_record(
        &self,
        address: &PecAddress,
    ) -> Result<Option<MailboxRecord>, StoreError> {
        match self
            .trees()
            .mailboxes
            .get(mailbox_key(address).as_bytes())?
        {
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| StoreError::Corrupt {
                    what: format!("mailbox {address}"),
                    detail: e.to_string(),
                }),
            None => Ok(None),
        }
    }

    /// All mailboxes with usage and quota, by address.
    pub fn list_mailboxes(&self) -> Result<Vec<MailboxInfo>, StoreError> {
        let mut out = Vec::new();
        for kv in self.trees().mailboxes.iter() {
            let (k, v) = kv?;
            let r: MailboxRecord = serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
                what: format!("mailbox {}", String::from_utf8_lossy(&k)),
                detail: e.to_string(),
            })?;
            out.push(MailboxInfo::from(&r));
        }
        Ok(out)
    }

    pub fn set_password(
        &self,
        address: &PecAddress,
        password: &Password,
    ) -> Result<(), StoreError> {
        let h = hash_password(password)?;
        let ev = self.admin_event(address, "password changed".into());
        let op = Op::MailboxUpdate {
            address: address.clone(),
            password_hash: Some(h),
            quota: None,
            options: None,
        };
        self.commit(Batch::new().push(op).trace(ev)).map(|_| ())
    }

    /// Sets the quota (it may be below the current usage: further deliveries are refused).
    pub fn set_quota(&self, address: &PecAddress, quota_bytes: u64) -> Result<(), StoreError> {
        let ev = self.admin_event(address, format!("quota set to {quota_bytes} bytes"));
        let op = Op::MailboxUpdate {
            address: address.clone(),
            password_hash: None,
            quota: Some(quota_bytes),
            options: None,
        };
        self.commit(Batch::new().push(op).trace(ev)).map(|_| ())
    }

    pub fn set_mailbox_options(
        &self,
        address: &PecAddress,
        options: MailboxOptions,
    ) -> Result<(), StoreError> {
        let ev = self.admin_event(address, format!("options set: {options:?}"));
        let op = Op::MailboxUpdate {
            address: address.clone(),
            password_hash: None,
            quota: None,
            options: Some(options),
        };
        self.commit(Batch::new().push(op).trace(ev)).map(|_| ())
    }

    /// Checks a login. `Ok(false)` for a wrong password or an unknown mailbox (a dummy
    /// hash is verified then, so both take the same time).
    pub fn verify_password(
        &self,
        address: &PecAddress,
        password: &Password,
    ) -> Result<bool, StoreError> {
        const DUMMY: &str = "$argon2id$v=19$m=19456,t=2,p=1$AAAAAAAAAAAAAAAAAAAAAA$4Vh4wOfGI/ubZ3f6NbOVTKhZlVgI6dz3GNjJE2GixxE";
        let rec = self.mailbox_record(address)?;
        let stored = rec.as_ref().map_or(DUMMY, |r| r.password_hash.as_str());
        let parsed = PasswordHash::new(stored).map_err(|e| StoreError::Password(e.to_string()))?;
        let ok = Argon2::default()
            .verify_password(password.0.as_bytes(), &parsed)
            .is_ok();
        Ok(ok && rec.is_some())
    }
}
