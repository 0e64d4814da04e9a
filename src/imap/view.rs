//! The selected mailbox as one session sees it (RFC 3501 §2.3.1): a snapshot of the
//! folder's messages ordered by UID, whose positions are the message sequence numbers.
//! The snapshot changes only at points where the protocol allows it to be reported
//! (command completion, NOOP, IDLE), and [`View::refresh`] writes the EXPUNGE, FETCH FLAGS
//! and EXISTS responses that bring the client in line (§7.4.1: expunges in an order that
//! keeps the numbers right).
//!
//! Change notification: the store has no change feed, so IDLE learns of new mail by
//! comparing the folder record (UIDNEXT, message count: one read) at a short interval;
//! IMAP and POP3 sessions that change a folder also wake IDLE-ing sessions at once
//! through [`notify_change`].

use std::num::NonZeroU32;
use std::sync::LazyLock;

use imap_codec::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};
use tokio::sync::Notify;

use super::wire::flag_list;
use crate::pec::address::PecAddress;
use crate::store::{MessageRecord, Store, StoreError};

static CHANGES: LazyLock<Notify> = LazyLock::new(Notify::new);

/// Wakes IDLE-ing sessions: some folder changed.
pub fn notify_change() {
    CHANGES.notify_waiters();
}

/// Resolves when [`notify_change`] is called.
pub async fn changed() {
    CHANGES.notified().await
}

/// A sequence number or UID that names no message (RFC 3501 §9 `seq-number`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("message sequence number {0} does not exist")]
pub struct BadSequence(pub u32);

/// The selected folder.
#[derive(Debug)]
pub struct View {
    pub folder: String,
    pub read_only: bool,
    pub uidvalidity: u32,
    pub uidnext: u32,
    /// By UID; index + 1 is the sequence number.
    pub msgs: Vec<MessageRecord>,
}

impl View {
    /// Loads the folder; `Ok(None)` when it does not exist.
    pub fn load(
        store: &Store,
        user: &PecAddress,
        folder: &str,
        read_only: bool,
    ) -> Result<Option<Self>, StoreError> {
        let Some(f) = store.folder(user, folder)? else {
            return Ok(None);
        };
        let mut msgs = store.messages(user, folder)?;
        msgs.sort_by_key(|m| m.uid);
        Ok(Some(Self {
            folder: f.name,
            read_only,
            uidvalidity: f.uidvalidity,
            uidnext: f.uidnext,
            msgs,
        }))
    }

    /// Whether the stored folder differs from the snapshot in UIDNEXT or size.
    pub fn changed(&self, store: &Store, user: &PecAddress) -> bool {
        match store.folder(user, &self.folder) {
            Ok(Some(f)) => f.uidnext != self.uidnext || f.messages as usize != self.msgs.len(),
            _ => true,
        }
    }

    /// Reloads and writes the untagged responses for the differences.
    pub fn refresh(
        &mut self,
        store: &Store,
        user: &PecAddress,
        out: &mut Vec<u8>,
    ) -> Result<(), StoreError> {
        let Some(new) = View::load(store, user, &self.folder, self.read_only)? else {
            // The folder was deleted under us: everything is gone.
            for _ in 0..self.msgs.len() {
                out.extend_from_slice(b"* 1 EXPUNGE\r\n");
            }
            self.msgs.clear();
            return Ok(());
        };
        let mut seq = 0usize;
        let mut j = 0usize;
        for old in &self.msgs {
            while j < new.msgs.len() && new.msgs[j].uid < old.uid {
                j += 1;
            }
            match new.msgs.get(j) {
                Some(n) if n.uid == old.uid => {
                    seq += 1;
                    if n.flags != old.flags {
                        out.extend_from_slice(
                            format!(
                                "* {seq} FETCH (UID {} FLAGS {})\r\n",
                                n.uid,
                                flag_list(&n.flags)
                            )
                            .as_bytes(),
                        );
                    }
                }
                _ => out.extend_from_slice(format!("* {} EXPUNGE\r\n", seq + 1).as_bytes()),
            }
        }
        let grew = new.msgs.len() != seq;
        self.msgs = new.msgs;
        self.uidnext = new.uidnext;
        self.uidvalidity = new.uidvalidity;
        if grew {
            out.extend_from_slice(format!("* {} EXISTS\r\n", self.msgs.len()).as_bytes());
        }
        Ok(())
    }

    /// Drops the messages with these UIDs, writing EXPUNGE for each (highest first, so
    /// the numbers stay valid).
    pub fn remove(&mut self, uids: &[u32], out: &mut Vec<u8>) {
        let mut idx: Vec<usize> = uids.iter().filter_map(|u| self.index_of(*u)).collect();
        idx.sort_unstable();
        idx.dedup();
        for &i in idx.iter().rev() {
            out.extend_from_slice(format!("* {} EXPUNGE\r\n", i + 1).as_bytes());
            self.msgs.remove(i);
        }
    }

    pub fn index_of(&self, uid: u32) -> Option<usize> {
        self.msgs.binary_search_by_key(&uid, |m| m.uid).ok()
    }

    /// The indexes named by a sequence set, ascending, without duplicates. With `uid`,
    /// UIDs that do not exist are ignored (§6.4.8); sequence numbers past the end are an
    /// error (§9 `seq-number`).
    pub fn resolve(&self, set: &SequenceSet, uid: bool) -> Result<Vec<usize>, BadSequence> {
        let n = self.msgs.len();
        let last_uid = self.msgs.last().map_or(0, |m| m.uid);
        let mut out = Vec::new();
        for seq in set.0.as_ref() {
            let (a, b) = match seq {
                Sequence::Single(x) => (x, x),
                Sequence::Range(x, y) => (x, y),
            };
            let val = |v: &SeqOrUid| match v {
                SeqOrUid::Value(v) => v.get(),
                SeqOrUid::Asterisk => {
                    if uid {
                        last_uid
                    } else {
                        n as u32
                    }
                }
            };
            let (lo, hi) = {
                let (x, y) = (val(a), val(b));
                (x.min(y), x.max(y))
            };
            if uid {
                let start = self.msgs.partition_point(|m| m.uid < lo);
                let end = self.msgs.partition_point(|m| m.uid <= hi);
                out.extend(start..end);
            } else {
                if hi as usize > n || lo == 0 {
                    return Err(BadSequence(hi));
                }
                out.extend((lo as usize - 1)..(hi as usize));
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// Number of messages without `\Seen`, and the first of them (for SELECT).
    pub fn unseen(&self) -> (usize, Option<usize>) {
        let mut first = None;
        let mut count = 0;
        for (i, m) in self.msgs.iter().enumerate() {
            if !m.flags.iter().any(|f| f.eq_ignore_ascii_case("\\Seen")) {
                count += 1;
                first.get_or_insert(i + 1);
            }
        }
        (count, first)
    }
}

/// A non-zero UID for responses (UIDs start at 1 in the store).
pub fn nz(v: u32) -> NonZeroU32 {
    NonZeroU32::new(v).unwrap_or(NonZeroU32::MIN)
}
