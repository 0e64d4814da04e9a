//! Mailboxes and their administration: plain functions on [`Store`] taking typed inputs
//! and returning serde-serializable outputs, so that the CLI today and a control socket
//! of the running server later share them.
//!
//! Passwords are stored only as argon2id PHC strings ([`super::password`]). A password
//! the administrator sets (at creation or as a reset) is *provisional*: logins with it are
//! refused until the owner changes it ([`Store::change_own_password`]). Every change also
//! writes a `MailboxAdmin` trace record in the same commit.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::batch::{Batch, Op};
use super::changes::{ChangeSet, Kind};
use super::messages::{INBOX, clear_unfoldered, create_folder};
pub use super::password::Password;
use super::password::{self, WeakPassword};
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
    /// Set by the administrator, not yet changed by the owner: logins are refused.
    /// (Records written before this field existed read as `false`.)
    #[serde(default)]
    pub password_provisional: bool,
    /// When the password last changed (`None`: never since the mailbox was created).
    #[serde(default)]
    pub password_changed: Option<Timestamp>,
    /// The owner's rules on incoming messages ([`crate::filters`]), applied in the
    /// delivery's commit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<crate::filters::Rule>,
    /// The service plan whose size the quota follows (`[plans.NAME]`); `None`: a quota
    /// of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// The highest quota notice level (80, 95 percent) the owner was sent since usage last
    /// went below 80 % ([`super::quota`]).
    #[serde(default)]
    pub quota_notice: u8,
    /// Notifications of arrivals to ordinary addresses ([`crate::notify`]).
    #[serde(default, skip_serializing_if = "is_default")]
    pub notify: crate::notify::Notify,
    /// The security archive's size (`None`: `archive.default_bytes`; a plan sets its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_quota: Option<u64>,
    /// Bytes and messages in the security archive ([`super::archive`]).
    #[serde(default)]
    pub archive_usage: u64,
    #[serde(default)]
    pub archive_messages: u64,
    /// The archive notice level last sent (0 or 90).
    #[serde(default)]
    pub archive_notice: u8,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
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
    /// The owner must change the password before using the mailbox.
    #[serde(default)]
    pub password_provisional: bool,
    /// The service plan the quota follows, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// The security archive: its own size (`None`: the configured default) and usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_quota_bytes: Option<u64>,
    #[serde(default)]
    pub archive_usage_bytes: u64,
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
            password_provisional: r.password_provisional,
            plan: r.plan.clone(),
            archive_quota_bytes: r.archive_quota,
            archive_usage_bytes: r.archive_usage,
        }
    }
}

/// The outcome of checking a login password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordCheck {
    /// Wrong password, or no such mailbox.
    Wrong,
    /// Right, and the owner's own.
    Valid,
    /// Right, but provisional: the owner must change it before using the mailbox.
    MustChange,
}

/// A new password as stored by [`Op::MailboxUpdate`].
#[derive(Debug, Clone)]
pub struct PasswordUpdate {
    pub hash: String,
    pub provisional: bool,
    pub changed: Timestamp,
    /// Apply only if the stored hash is still this one (the owner's change, checked
    /// against the current password): a concurrent change wins once, never silently.
    pub if_hash: Option<String>,
}

/// A new quota as stored by [`Op::MailboxUpdate`]: its size and the plan it follows
/// (`None`: a quota of the mailbox's own).
#[derive(Debug, Clone)]
pub struct QuotaUpdate {
    pub bytes: u64,
    pub plan: Option<String>,
    /// The security archive's new size (`Some(None)`: `archive.default_bytes`); `None`
    /// keeps the size it has (a quota of the mailbox's own leaves the archive as it was:
    /// leaving a plan never shrinks an archive the owner has filled).
    pub archive_bytes: Option<Option<u64>>,
}

/// Why [`Store::set_filters`] refused.
#[derive(Debug, thiserror::Error)]
pub enum FiltersError {
    #[error(transparent)]
    Invalid(#[from] crate::filters::FilterError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why [`Store::change_own_password`] refused.
#[derive(Debug, thiserror::Error)]
pub enum PasswordChangeError {
    #[error("the current password is wrong")]
    WrongCurrent,
    #[error(transparent)]
    Weak(#[from] WeakPassword),
    #[error(transparent)]
    Store(#[from] StoreError),
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
    /// The owner must change the password at first login (what an administrator
    /// creating a mailbox for someone else wants).
    #[serde(default)]
    pub provisional: bool,
}

pub(crate) fn mailbox_key(a: &PecAddress) -> String {
    a.key()
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

pub(crate) fn apply_set_filters(
    tx: &Tx,
    address: &PecAddress,
    rules: &[crate::filters::Rule],
) -> TxResult<()> {
    let k = mailbox_key(address);
    let Some(mut rec) = super::tx::get_json::<MailboxRecord>(&tx.t[MAILBOXES], k.as_bytes())?
    else {
        return abort(StoreError::NoSuchMailbox(address.to_string()));
    };
    rec.filters = rules.to_vec();
    put_json(&tx.t[MAILBOXES], k.as_bytes(), &rec)
}

pub(crate) fn apply_update(
    tx: &Tx,
    address: &PecAddress,
    password: &Option<PasswordUpdate>,
    quota: &Option<QuotaUpdate>,
    options: &Option<MailboxOptions>,
) -> TxResult<()> {
    let k = mailbox_key(address);
    let Some(mut rec) = super::tx::get_json::<MailboxRecord>(&tx.t[MAILBOXES], k.as_bytes())?
    else {
        return abort(StoreError::NoSuchMailbox(address.to_string()));
    };
    if let Some(p) = password {
        if p.if_hash.as_ref().is_some_and(|h| *h != rec.password_hash) {
            return abort(StoreError::PasswordMoved(address.to_string()));
        }
        rec.password_hash = p.hash.clone();
        rec.password_provisional = p.provisional;
        rec.password_changed = Some(p.changed);
    }
    if let Some(q) = quota {
        rec.quota_bytes = q.bytes;
        if let Some(a) = q.archive_bytes {
            rec.archive_quota = a;
        }
        rec.plan = q.plan.clone();
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
        self.add_mailbox_on_plan(req, None, None)
    }

    /// [`Store::add_mailbox`] on a service plan: `plan` names it, and the quota must be
    /// the plan's size (the caller resolves the name against the configuration).
    pub fn add_mailbox_on_plan(
        &self,
        req: NewMailbox,
        plan: Option<String>,
        archive_bytes: Option<u64>,
    ) -> Result<MailboxInfo, StoreError> {
        self.check_domain(&req.address)?;
        let rec = MailboxRecord {
            address: req.address.clone(),
            password_hash: password::hash(&req.password)?,
            quota_bytes: req
                .quota_bytes
                .unwrap_or(self.options().default_quota_bytes),
            usage_bytes: 0,
            messages: 0,
            options: req.options,
            created: self.options().clock.now(),
            password_provisional: req.provisional,
            password_changed: None,
            filters: Vec::new(),
            plan,
            quota_notice: 0,
            notify: Default::default(),
            archive_quota: archive_bytes,
            archive_usage: 0,
            archive_messages: 0,
            archive_notice: 0,
        };
        let ev = self.admin_event(
            &req.address,
            format!(
                "mailbox added, quota {} bytes{}{}",
                rec.quota_bytes,
                rec.plan
                    .as_ref()
                    .map(|p| format!(" (plan {p})"))
                    .unwrap_or_default(),
                if req.provisional {
                    ", provisional password"
                } else {
                    ""
                }
            ),
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

    /// Sets a password as the administrator (a reset): `provisional` makes the owner
    /// change it at the next login.
    pub fn set_password(
        &self,
        address: &PecAddress,
        password: &Password,
        provisional: bool,
    ) -> Result<(), StoreError> {
        let h = password::hash(password)?;
        let ev = self.admin_event(
            address,
            if provisional {
                "password reset by the administrator (provisional)".into()
            } else {
                "password changed by the administrator".into()
            },
        );
        let op = Op::MailboxUpdate {
            address: address.clone(),
            password: Some(PasswordUpdate {
                hash: h,
                provisional,
                changed: self.options().clock.now(),
                if_hash: None,
            }),
            quota: None,
            options: None,
        };
        self.commit(Batch::new().push(op).trace(ev)).map(|_| ())
    }

    /// The owner changes their own password: `current` must be right (provisional or
    /// not), `new` must meet [`password::check_strength`] and differ from `current`.
    /// Recorded in the trace. Ending the owner's other sessions is the caller's part.
    pub fn change_own_password(
        &self,
        address: &PecAddress,
        current: &Password,
        new: &Password,
    ) -> Result<(), PasswordChangeError> {
        // The hash the current password is checked against is the one the change
        // replaces: a change made meanwhile (another session, the administrator) makes
        // this one fail as a wrong current password instead of being overwritten.
        let rec = self.mailbox_record(address)?;
        let stored = rec
            .as_ref()
            .map_or(password::DUMMY_HASH, |r| r.password_hash.as_str());
        if !password::matches(current, stored)? || rec.is_none() {
            return Err(PasswordChangeError::WrongCurrent);
        }
        let stored = stored.to_string();
        password::check_strength(new, address)?;
        if new.as_str() == current.as_str() {
            return Err(WeakPassword::Unchanged.into());
        }
        let ev = self.admin_event(address, "password changed by the owner".into());
        let op = Op::MailboxUpdate {
            address: address.clone(),
            password: Some(PasswordUpdate {
                hash: password::hash(new)?,
                provisional: false,
                changed: self.options().clock.now(),
                if_hash: Some(stored),
            }),
            quota: None,
            options: None,
        };
        match self.commit(Batch::new().push(op).trace(ev)) {
            Err(StoreError::PasswordMoved(_)) => Err(PasswordChangeError::WrongCurrent),
            r => r.map(|_| ()).map_err(Into::into),
        }
    }

    /// Sets a quota of the mailbox's own, off any plan (it may be below the current
    /// usage: further deliveries are refused).
    /// Gives the mailbox a quota of its own (off any plan); its archive keeps the size it
    /// has.
    pub fn set_quota(&self, address: &PecAddress, quota_bytes: u64) -> Result<(), StoreError> {
        self.set_quota_on(address, quota_bytes, None, None)
    }

    /// Puts the mailbox on plan `plan` of `quota_bytes` (the plan's size, resolved by the
    /// caller against the configuration).
    pub fn set_plan(
        &self,
        address: &PecAddress,
        plan: &str,
        quota_bytes: u64,
        archive_bytes: Option<u64>,
    ) -> Result<(), StoreError> {
        self.set_quota_on(
            address,
            quota_bytes,
            Some(plan.to_string()),
            Some(archive_bytes),
        )
    }

    fn set_quota_on(
        &self,
        address: &PecAddress,
        bytes: u64,
        plan: Option<String>,
        archive_bytes: Option<Option<u64>>,
    ) -> Result<(), StoreError> {
        let archive = |a: Option<u64>| a.unwrap_or(self.options().archive.default_bytes);
        let detail = match (&plan, archive_bytes) {
            (Some(p), a) => format!(
                "plan set to {p}: quota {bytes} bytes, archive {} bytes",
                archive(a.flatten())
            ),
            (None, _) => format!("quota set to {bytes} bytes (the archive keeps its size)"),
        };
        let ev = self.admin_event(address, detail);
        let op = Op::MailboxUpdate {
            address: address.clone(),
            password: None,
            quota: Some(QuotaUpdate {
                bytes,
                plan,
                archive_bytes,
            }),
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
            password: None,
            quota: None,
            options: Some(options),
        };
        self.commit(Batch::new().push(op).trace(ev)).map(|_| ())
    }

    /// The owner's rules on incoming messages.
    pub fn filters(&self, address: &PecAddress) -> Result<Vec<crate::filters::Rule>, StoreError> {
        Ok(self
            .mailbox_record(address)?
            .ok_or_else(|| StoreError::NoSuchMailbox(address.to_string()))?
            .filters)
    }

    /// Replaces the rules with `json` (an array), checked against the mailbox's folders
    /// ([`crate::filters::parse`]); traced.
    pub fn set_filters(
        &self,
        address: &PecAddress,
        json: &serde_json::Value,
    ) -> Result<Vec<crate::filters::Rule>, FiltersError> {
        if self.mailbox_record(address)?.is_none() {
            return Err(StoreError::NoSuchMailbox(address.to_string()).into());
        }
        let folders = self.folders(address)?;
        // The security archive takes no message but its copies: to a rule it is no folder.
        let rules = crate::filters::parse(json, |name| {
            folders
                .iter()
                .find(|f| f.name == name && !super::archive::is_archive(&f.name))
                .map(|f| super::messages::folder_role(&f.name).map(str::to_string))
        })?;
        let ev = self.admin_event(
            address,
            format!(
                "filters set: {} rule(s){}",
                rules.len(),
                if rules.is_empty() {
                    String::new()
                } else {
                    format!(
                        " ({})",
                        rules
                            .iter()
                            .map(|r| format!("{:?}", r.name))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            ),
        );
        let op = Op::SetFilters {
            mailbox: address.clone(),
            rules: rules.clone(),
        };
        self.commit(Batch::new().push(op).trace(ev))?;
        Ok(rules)
    }

    /// Checks a login password. [`PasswordCheck::Wrong`] for a wrong password or an
    /// unknown mailbox (a dummy hash is verified then, so both take the same time).
    pub fn verify_password(
        &self,
        address: &PecAddress,
        password: &Password,
    ) -> Result<PasswordCheck, StoreError> {
        Ok(self.verify_password_against(address, password)?.0)
    }

    /// [`Self::verify_password`], with the stored hash the password was checked against
    /// when it was right (the record may change right after: a cache of verified logins
    /// must remember the hash that was checked, not the one read later).
    pub(crate) fn verify_password_against(
        &self,
        address: &PecAddress,
        password: &Password,
    ) -> Result<(PasswordCheck, Option<String>), StoreError> {
        let rec = self.mailbox_record(address)?;
        let stored = rec
            .as_ref()
            .map_or(password::DUMMY_HASH, |r| r.password_hash.as_str());
        let ok = password::matches(password, stored)?;
        Ok(match rec {
            Some(r) if ok && r.password_provisional => (PasswordCheck::MustChange, None),
            Some(r) if ok => (PasswordCheck::Valid, Some(r.password_hash)),
            _ => (PasswordCheck::Wrong, None),
        })
    }

    /// The stored password hash of `address` while its password is the owner's own
    /// (`None`: no such mailbox, or a provisional password). One read, no argon2.
    pub(crate) fn own_password_hash(
        &self,
        address: &PecAddress,
    ) -> Result<Option<String>, StoreError> {
        Ok(self
            .mailbox_record(address)?
            .filter(|r| !r.password_provisional)
            .map(|r| r.password_hash))
    }
}
