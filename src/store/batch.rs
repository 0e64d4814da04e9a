//! A [`Batch`]: the operations of one step of the pipeline, applied all-or-nothing in
//! one transaction by the committer, durable when [`crate::store::Store::commit`]
//! returns. Typical delivery step:
//!
//! ```ignore
//! let blob = store.blobs().put(&bytes)?;                  // durable file first
//! let applied = store.commit(
//!     Batch::new()
//!         .claim(format!("deliver:{ident}:{rcpt}"))      // never twice
//!         .deliver(Delivery::inbox(rcpt.clone(), blob.clone(), now))
//!         .trace(TraceEvent::new(EventKind::Delivered, now).ident(ident)...)
//!         .trace(TraceEvent::new(EventKind::DeliveryReceiptSent, now)...),
//! )?;
//! ```
//!
//! If any operation fails (quota exceeded, key already claimed, unknown mailbox...), none
//! is applied and the error says which.

use jiff::Timestamp;
use serde::Serialize;

use super::blobs::BlobId;
use super::mailbox::{MailboxOptions, MailboxRecord};
use super::messages::{Delivered, Delivery};
use super::pending::PendingEntry;
use super::queue::NewQueueItem;
use crate::pec::address::PecAddress;
use crate::trace::{Checkpoint, TraceEvent};

/// Operations; built through the [`Batch`] methods.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    Claim(String),
    Deliver(Delivery),
    Trace(TraceEvent),
    Enqueue(NewQueueItem),
    QueueRetry {
        id: u64,
        next_attempt: Timestamp,
        error: String,
    },
    QueueDone {
        id: u64,
    },
    /// Leases the item to this node until `until`, if it is still due as `seen` (several
    /// writers): its token is a fresh id.
    QueueLease {
        id: u64,
        seen: Timestamp,
        until: Timestamp,
    },
    /// Aborts the batch unless the item is still leased with `lease`.
    QueueFence {
        id: u64,
        lease: u64,
    },
    PendingPut(PendingEntry),
    PendingMessage(String, crate::store::pending::PendingMessage),
    PendingTakenInCharge {
        ident: String,
        recipient: String,
    },
    PendingNotice12h {
        ident: String,
        recipient: String,
    },
    PendingResolve {
        ident: String,
        recipient: String,
    },
    MailboxAdd(MailboxRecord),
    MailboxUpdate {
        address: PecAddress,
        password: Option<super::mailbox::PasswordUpdate>,
        quota: Option<super::mailbox::QuotaUpdate>,
        options: Option<MailboxOptions>,
    },
    MailboxDelete(PecAddress),
    /// Changes the notifications of a mailbox ([`super::notify`]).
    Notify {
        mailbox: PecAddress,
        change: super::notify::NotifyChange,
    },
    /// Moves the quota notice level ([`super::quota`]), if it is still `from`.
    QuotaNotice {
        mailbox: PecAddress,
        from: u8,
        to: u8,
    },
    /// Replaces a mailbox's rules on incoming messages ([`crate::filters`]).
    SetFilters {
        mailbox: PecAddress,
        rules: Vec<crate::filters::Rule>,
    },
    /// Associates a smart card with a mailbox ([`super::cards`]).
    CardAdd {
        mailbox: PecAddress,
        card: Box<crate::cns::CardCert>,
    },
    CardRemove {
        mailbox: PecAddress,
        sha256: String,
    },
    FolderCreate {
        mailbox: PecAddress,
        name: String,
    },
    FolderRename {
        mailbox: PecAddress,
        from: String,
        to: String,
    },
    FolderDelete {
        mailbox: PecAddress,
        name: String,
    },
    Subscribe {
        mailbox: PecAddress,
        name: String,
        subscribed: bool,
    },
    /// Pushed before a `FolderDelete`: keeps the folder's subscription under its name.
    KeepSubscription {
        mailbox: PecAddress,
        name: String,
    },
    SetFlags {
        mailbox: PecAddress,
        folder: String,
        uid: u32,
        flags: Vec<String>,
    },
    Expunge {
        mailbox: PecAddress,
        folder: String,
        uid: u32,
    },
    AddFlags {
        mailbox: PecAddress,
        folder: String,
        uidvalidity: u32,
        uids: Vec<u32>,
        flags: Vec<String>,
    },
    IfModseq {
        mailbox: PecAddress,
        modseq: u64,
    },
    // Internal, produced by the committer's expansion step and the purge.
    BlobUnref(BlobId),
    /// A copy into the security archive ([`super::archive`]).
    ArchiveCopy(super::archive::ArchiveCopy),
    /// An archived message dropped to make room (planned by the committer only).
    ArchiveDrop {
        mailbox: PecAddress,
        folder: &'static str,
        uid: u32,
    },
    ArchiveNotice {
        mailbox: PecAddress,
        from: u8,
        to: u8,
    },
    Raw {
        tree: usize,
        key: Vec<u8>,
        value: Option<Vec<u8>>,
    },
    Checkpoint(Checkpoint),
    SetAnchor(Checkpoint),
}

/// The operations of one atomic step.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub(crate) ops: Vec<Op>,
}

impl Batch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The kinds of the trace records the batch writes.
    pub fn trace_kinds(&self) -> Vec<crate::trace::EventKind> {
        self.ops
            .iter()
            .filter_map(|o| match o {
                Op::Trace(ev) => Some(ev.kind),
                _ => None,
            })
            .collect()
    }

    /// Fails the whole batch with `AlreadyClaimed` if `key` was claimed before;
    /// otherwise claims it together with the rest of the batch.
    pub fn claim(mut self, key: impl Into<String>) -> Self {
        self.ops.push(Op::Claim(key.into()));
        self
    }

    /// Stores a message in a mailbox folder (quota checked and usage updated atomically).
    pub fn deliver(mut self, d: Delivery) -> Self {
        self.ops.push(Op::Deliver(d));
        self
    }

    /// Appends a trace record (its seq and hashes are given by the committer).
    pub fn trace(mut self, e: TraceEvent) -> Self {
        self.ops.push(Op::Trace(e));
        self
    }

    /// Adds an item to the outbound queue (its id is in [`Applied::queued`]).
    pub fn enqueue(mut self, item: NewQueueItem) -> Self {
        self.ops.push(Op::Enqueue(item));
        self
    }

    /// Records a failed attempt and the next one.
    pub fn queue_retry(
        mut self,
        id: u64,
        next_attempt: Timestamp,
        error: impl Into<String>,
    ) -> Self {
        self.ops.push(Op::QueueRetry {
            id,
            next_attempt,
            error: error.into(),
        });
        self
    }

    /// Removes a queue item (relayed, or given up).
    pub fn queue_done(mut self, id: u64) -> Self {
        self.ops.push(Op::QueueDone { id });
        self
    }

    /// Leases each of `items` (as read from the store) to this node until `until`:
    /// another node no longer sees them due before then. An item another node leased,
    /// retried or finished since it was read is skipped; the ones leased are in
    /// [`Applied::leased`], with their lease token and their new `next_attempt`.
    pub fn queue_lease(mut self, items: &[super::queue::QueueItem], until: Timestamp) -> Self {
        for i in items {
            self.ops.push(Op::QueueLease {
                id: i.id,
                seen: i.next_attempt,
                until,
            });
        }
        self
    }

    /// The fencing of an outcome: the whole batch is refused
    /// ([`super::StoreError::LeaseLost`]) unless `item` is still leased with its token
    /// (nothing is added for an item that was not leased).
    pub fn queue_fence(mut self, item: &super::queue::QueueItem) -> Self {
        if let Some(lease) = item.lease {
            self.ops.push(Op::QueueFence { id: item.id, lease });
        }
        self
    }

    /// Inserts or replaces a pending-receipt entry.
    /// The take-charge receipt for `recipient` arrived: its entry, if it still awaits one,
    /// now awaits the delivery receipt (decided inside the commit, never reviving an entry
    /// resolved meanwhile).
    pub fn pending_taken_in_charge(
        mut self,
        ident: impl Into<String>,
        recipient: impl Into<String>,
    ) -> Self {
        self.ops.push(Op::PendingTakenInCharge {
            ident: ident.into(),
            recipient: recipient.into(),
        });
        self
    }

    /// The shared certification data of a message's pending entries (before them).
    pub fn pending_message(
        mut self,
        ident: impl Into<String>,
        m: crate::store::pending::PendingMessage,
    ) -> Self {
        self.ops.push(Op::PendingMessage(ident.into(), m));
        self
    }

    pub fn pending_put(mut self, e: PendingEntry) -> Self {
        self.ops.push(Op::PendingPut(e));
        self
    }

    /// Marks the 12 h notice as sent: the entry is next due at its 24 h deadline.
    pub fn pending_notice_12h(
        mut self,
        ident: impl Into<String>,
        recipient: impl Into<String>,
    ) -> Self {
        self.ops.push(Op::PendingNotice12h {
            ident: ident.into(),
            recipient: recipient.into(),
        });
        self
    }

    /// Removes a pending entry (the receipt arrived, or the 24 h notice was sent).
    pub fn pending_resolve(
        mut self,
        ident: impl Into<String>,
        recipient: impl Into<String>,
    ) -> Self {
        self.ops.push(Op::PendingResolve {
            ident: ident.into(),
            recipient: recipient.into(),
        });
        self
    }

    pub fn create_folder(mut self, mailbox: PecAddress, name: impl Into<String>) -> Self {
        self.ops.push(Op::FolderCreate {
            mailbox,
            name: name.into(),
        });
        self
    }

    pub fn rename_folder(
        mut self,
        mailbox: PecAddress,
        from: impl Into<String>,
        to: impl Into<String>,
    ) -> Self {
        self.ops.push(Op::FolderRename {
            mailbox,
            from: from.into(),
            to: to.into(),
        });
        self
    }

    /// Deletes a folder and its messages. A subscription to it stays (under its name).
    pub fn delete_folder(mut self, mailbox: PecAddress, name: impl Into<String>) -> Self {
        let name = name.into();
        self.ops.push(Op::KeepSubscription {
            mailbox: mailbox.clone(),
            name: name.clone(),
        });
        self.ops.push(Op::FolderDelete { mailbox, name });
        self
    }

    /// Subscribes the mailbox to folder name `name` (IMAP SUBSCRIBE), which need not
    /// exist; the subscription survives a DELETE of the folder and moves with a RENAME.
    pub fn subscribe(self, mailbox: PecAddress, name: impl Into<String>) -> Self {
        self.set_subscribed(mailbox, name, true)
    }

    /// Removes the subscription to `name`, if any (IMAP UNSUBSCRIBE).
    pub fn unsubscribe(self, mailbox: PecAddress, name: impl Into<String>) -> Self {
        self.set_subscribed(mailbox, name, false)
    }

    fn set_subscribed(mut self, mailbox: PecAddress, name: impl Into<String>, on: bool) -> Self {
        self.ops.push(Op::Subscribe {
            mailbox,
            name: name.into(),
            subscribed: on,
        });
        self
    }

    pub fn set_flags(
        mut self,
        mailbox: PecAddress,
        folder: impl Into<String>,
        uid: u32,
        flags: Vec<String>,
    ) -> Self {
        self.ops.push(Op::SetFlags {
            mailbox,
            folder: folder.into(),
            uid,
            flags,
        });
        self
    }

    /// Adds `flags` to those of `uids` still in `folder` (as it was when the caller saw
    /// it: same `uidvalidity`), keeping their other flags. Unlike [`Batch::set_flags`] it
    /// neither replaces what another session changed meanwhile nor fails on a message
    /// expunged (or a folder deleted) meanwhile: those are skipped. Used for the `\Seen`
    /// a FETCH sets (RFC 3501 §6.4.5), committed while other sessions work.
    pub fn add_flags(
        mut self,
        mailbox: PecAddress,
        folder: impl Into<String>,
        uidvalidity: u32,
        uids: Vec<u32>,
        flags: Vec<String>,
    ) -> Self {
        self.ops.push(Op::AddFlags {
            mailbox,
            folder: folder.into(),
            uidvalidity,
            uids,
            flags,
        });
        self
    }

    /// Removes one message (usage and blob reference updated).
    pub fn expunge(mut self, mailbox: PecAddress, folder: impl Into<String>, uid: u32) -> Self {
        self.ops.push(Op::Expunge {
            mailbox,
            folder: folder.into(),
            uid,
        });
        self
    }

    /// Fails the whole batch with `ModseqMismatch` unless the modseq of `mailbox` is
    /// `modseq` when the batch is applied (JMAP `ifInState`, RFC 8620 §5.3): exact, since
    /// the committer is the only writer. Its place in the batch does not matter: modseqs
    /// advance only at the end of a batch.
    pub fn if_modseq(mut self, mailbox: PecAddress, modseq: u64) -> Self {
        self.ops.push(Op::IfModseq { mailbox, modseq });
        self
    }

    pub(crate) fn push(mut self, op: Op) -> Self {
        self.ops.push(op);
        self
    }
}

/// What a committed batch produced, in operation order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Applied {
    /// How many batches shared this one's transaction (tests of `commit::together`).
    #[cfg(test)]
    #[serde(skip)]
    pub(crate) together: usize,
    pub delivered: Vec<Delivered>,
    /// `(seq, hash)` of each trace record appended.
    pub trace: Vec<(u64, String)>,
    /// Ids of the queue items added.
    pub queued: Vec<u64>,
    /// The queue items leased ([`Batch::queue_lease`]), as they are now.
    pub leased: Vec<super::queue::QueueItem>,
    /// `(mailbox key, modseq)` of each mailbox whose modseq this batch advanced, by key:
    /// the JMAP state right after this batch ([`crate::store::changes`]).
    pub modseqs: Vec<(String, u64)>,
    /// Mailboxes whose archive had no room for a copy of this batch (the copy was not
    /// made; the rest of the batch was).
    pub archive_full: Vec<String>,
}
