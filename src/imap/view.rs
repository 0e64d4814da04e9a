//! The selected mailbox as one session sees it (RFC 3501 §2.3.1): a snapshot of the
//! folder's messages ordered by UID, whose positions are the message sequence numbers.
//! The snapshot changes only at points where the protocol allows it to be reported
//! (command completion, NOOP, IDLE), and [`View::refresh`] writes the EXPUNGE, FETCH FLAGS
//! and EXISTS responses that bring the client in line (§7.4.1: expunges in an order that
//! keeps the numbers right).
//!
//! Change notification: the store publishes every committed change to a mailbox
//! ([`crate::store::Store::subscribe_changes`], after the flush), whoever made it (the
//! delivery point, another IMAP or POP3 session, an admin command); an IDLE-ing session
//! refreshes its view when a change concerns its folder. A cheap comparison of the
//! folder record ([`View::changed`]) at a long interval remains as a fallback.

use std::num::NonZeroU32;

use imap_codec::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};

use super::wire::flag_list;
use crate::pec::address::PecAddress;
use crate::store::{MessageRecord, Store, StoreError};

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
    ///
    /// Each range is first turned into a half-open range of indexes and the ranges are
    /// sorted and merged before anything is expanded, so the work and the memory are
    /// bounded by the number of ranges in the command plus the size of the mailbox, never
    /// by the sum of the ranges' lengths (`1:*,1:*,...` expands once).
    pub fn resolve(&self, set: &SequenceSet, uid: bool) -> Result<Vec<usize>, BadSequence> {
        let merged = self.ranges(set, uid)?;
        // Disjoint and within 0..n: the total is at most n.
        let total: usize = merged.iter().map(|(s, e)| e - s).sum();
        let mut out = Vec::with_capacity(total);
        for (s, e) in merged {
            out.extend(s..e);
        }
        Ok(out)
    }

    /// The indexes named by a sequence set as half-open ranges, sorted, disjoint and not
    /// adjacent-overlapping (see [`View::resolve`]); membership is a binary search.
    pub fn ranges(&self, set: &SequenceSet, uid: bool) -> Result<Vec<(usize, usize)>, BadSequence> {
        let n = self.msgs.len();
        let last_uid = self.msgs.last().map_or(0, |m| m.uid);
        let val = |v: &SeqOrUid| match v {
            SeqOrUid::Value(v) => v.get(),
            SeqOrUid::Asterisk if uid => last_uid,
            SeqOrUid::Asterisk => u32::try_from(n).unwrap_or(u32::MAX),
        };
        let mut ranges: Vec<(usize, usize)> = Vec::with_capacity(set.0.as_ref().len());
        for seq in set.0.as_ref() {
            let (a, b) = match seq {
                Sequence::Single(x) => (x, x),
                Sequence::Range(x, y) => (x, y),
            };
            let (x, y) = (val(a), val(b));
            let (lo, hi) = (x.min(y), x.max(y));
            let r = if uid {
                let start = self.msgs.partition_point(|m| m.uid < lo);
                let end = self.msgs.partition_point(|m| m.uid <= hi);
                (start, end)
            } else {
                if hi as usize > n || lo == 0 {
                    return Err(BadSequence(hi));
                }
                (lo as usize - 1, hi as usize)
            };
            if r.0 < r.1 {
                ranges.push(r);
            }
        }
        ranges.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::with_capacity(ranges.len());
        for (s, e) in ranges {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        Ok(merged)
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

/// Whether index `i` is in `ranges` (as [`View::ranges`] returns them).
pub fn in_ranges(ranges: &[(usize, usize)], i: usize) -> bool {
    let after = ranges.partition_point(|&(s, _)| s <= i);
    after > 0 && ranges.get(after - 1).is_some_and(|&(_, e)| i < e)
}

/// A non-zero UID for responses (UIDs start at 1 in the store).
pub fn nz(v: u32) -> NonZeroU32 {
    NonZeroU32::new(v).unwrap_or(NonZeroU32::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::BlobId;

    /// A view of `n` messages with UIDs 1, 3, 5, ... (gaps, as after expunges).
    fn view(n: usize) -> View {
        let blob = BlobId::of(b"x");
        View {
            folder: "INBOX".into(),
            read_only: false,
            uidvalidity: 1,
            uidnext: 2 * n as u32 + 1,
            msgs: (0..n)
                .map(|i| MessageRecord {
                    uid: 2 * i as u32 + 1,
                    blob: blob.clone(),
                    size: 1,
                    flags: Vec::new(),
                    internal_date: jiff::Timestamp::UNIX_EPOCH,
                })
                .collect(),
        }
    }

    fn set(s: &str) -> SequenceSet {
        SequenceSet::try_from(s).expect("sequence set")
    }

    #[test]
    fn resolve_merges_ranges_and_checks_bounds() {
        let v = view(10);
        assert_eq!(
            v.resolve(&set("3,1:2,2,9:*"), false),
            Ok(vec![0, 1, 2, 8, 9])
        );
        assert_eq!(v.resolve(&set("*:9"), false), Ok(vec![8, 9]));
        assert_eq!(v.resolve(&set("11"), false), Err(BadSequence(11)));
        // UIDs 1,3,...,19: missing ones are ignored, `*` is the highest UID.
        assert_eq!(v.resolve(&set("2:5,4,19:*"), true), Ok(vec![1, 2, 9]));
        assert_eq!(v.resolve(&set("100:200"), true), Ok(vec![]));
        assert_eq!(view(0).resolve(&set("1:*"), true), Ok(vec![]));
        let r = v.ranges(&set("9:*,1,3:4,2"), false).expect("ranges");
        assert_eq!(r, vec![(0, 4), (8, 10)]);
        let inside: Vec<usize> = (0..12).filter(|&i| in_ranges(&r, i)).collect();
        assert_eq!(inside, vec![0, 1, 2, 3, 8, 9]);
    }

    /// The 64 KB `1:*,1:*,...` command on a 100k-message mailbox: the result is the
    /// mailbox once, and building it does not expand every range (which took ~13 GB).
    #[test]
    fn huge_repeated_set_is_bounded() {
        let n = 100_000;
        let v = view(n);
        let text = vec!["1:*"; 16_000].join(",");
        assert!(text.len() > 60_000);
        let all: Vec<usize> = (0..n).collect();
        let got = v.resolve(&set(&text), false).expect("resolve");
        assert_eq!(got, all);
        assert!(got.capacity() <= n, "allocated {} slots", got.capacity());
        let got = v.resolve(&set(&text), true).expect("resolve uid");
        assert_eq!(got, all);
        // Overlapping, unordered ranges mixed with singles.
        let text = (0..16_000)
            .map(|i| format!("{}:{}", (i * 7) % n + 1, (i * 13) % n + 1))
            .collect::<Vec<_>>()
            .join(",");
        let got = v.resolve(&set(&text), false).expect("resolve mixed");
        assert!(
            got.windows(2).all(|w| w[0] < w[1]),
            "ascending, no duplicates"
        );
        assert!(got.len() <= n);
    }
}
