//! Where each lane's scans of the due index start ([`Floors`]), on fjall.
//!
//! Items leave the due index from its oldest end, so a scan from a lane's first key walks
//! past every entry removed since the engine last dropped them: none on sled, whose trees
//! forget a removed key at once, but fjall (an LSM tree) keeps them as tombstones until
//! compaction, and between two providers that walk was a quarter of the CPU. So a scan
//! remembers the first entry it found, and the next scans start there (the floor).
//!
//! Exact, with no assumption about clocks: the committer lowers the floor to every due
//! key it writes, inside the transaction, before the write can be seen
//! ([`Floors::lower`]), and marks those writes settled once its group is flushed, when
//! they are visible on every engine ([`Floors::settle`]). A scan raises the floor to the
//! first entry it found, but never above a key written after the writes it was sure to
//! see (those settled when it began): such a key may be missing from what it read. What
//! it must distrust: nothing from outside; a bug here would hide due items, so a scan
//! from the first key is made anyway once a minute ([`FULL_SCAN_EVERY`]).

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use jiff::{SignedDuration, Timestamp};

use super::Lane;

/// How often a scan starts from the lane's first key whatever the floor.
const FULL_SCAN_EVERY: SignedDuration = SignedDuration::from_secs(60);

/// The floors of the two lanes (see the module doc).
#[derive(Debug, Default)]
pub(crate) struct Floors {
    enabled: bool,
    lanes: [Mutex<Floor>; 2],
}

#[derive(Debug, Default)]
struct Floor {
    /// Where scans start (`None`: at the lane's first key).
    key: Option<[u8; 17]>,
    /// When the last scan from the first key began.
    full_scan_at: Option<Timestamp>,
    /// Keys written, numbered in order: kept while not settled, and after that while a
    /// scan runs that began before they were (it may not have seen them).
    written: VecDeque<(u64, [u8; 17])>,
    /// The number of the last key written.
    last: u64,
    /// Keys numbered up to this one are visible (their group was flushed).
    settled: u64,
    /// The scans running: what was settled when each began.
    running: Vec<u64>,
}

/// A scan begun: where it starts, and what it must hand back to [`Floors::found`]. A
/// scan that ends otherwise (an early return, a panic) is forgotten when this is dropped,
/// so that what it kept is not kept forever.
pub(crate) struct Begun<'a> {
    /// The key to start at (`None`: the lane's first key).
    pub from: Option<[u8; 17]>,
    settled: u64,
    lane: Lane,
    /// Registered among the running scans (to be removed once).
    floors: Option<&'a Floors>,
}

impl Drop for Begun<'_> {
    fn drop(&mut self) {
        if let Some(floors) = self.floors.take() {
            let mut f = floors.lane(self.lane);
            f.end(self.settled);
            f.prune();
        }
    }
}

impl Floors {
    /// Floors kept (`enabled`) or not (every scan starts at the lane's first key).
    pub(crate) fn new(enabled: bool) -> Self {
        Self {
            enabled,
            ..Self::default()
        }
    }

    fn lane(&self, lane: Lane) -> MutexGuard<'_, Floor> {
        // Only plain numbers and keys change under the lock, each assignment whole: a
        // poisoned one is taken over.
        self.lanes[usize::from(lane.byte() != 0)]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The committer is about to write `key` to the due index (inside a transaction, not
    /// yet visible).
    pub(crate) fn lower(&self, key: &[u8]) {
        let (Some(&b), Ok(key)) = (key.first(), <[u8; 17]>::try_from(key)) else {
            return;
        };
        if !self.enabled {
            return;
        }
        let mut f = self.lane(if b == 0 { Lane::Local } else { Lane::Remote });
        if let Some(k) = f.key.as_mut() {
            *k = (*k).min(key);
        }
        f.last += 1;
        let n = f.last;
        f.written.push_back((n, key));
    }

    /// Everything [`Floors::lower`] announced so far is visible (the group was flushed,
    /// or failed and will never be).
    pub(crate) fn settle(&self) {
        for lane in [Lane::Local, Lane::Remote] {
            let mut f = self.lane(lane);
            f.settled = f.last;
            f.prune();
        }
    }

    /// A scan of `lane` at `now` is about to read the index up to `hi`.
    pub(crate) fn begin(&self, lane: Lane, now: Timestamp, hi: &[u8; 17]) -> Begun<'_> {
        if !self.enabled {
            return Begun {
                from: None,
                settled: 0,
                lane,
                floors: None,
            };
        }
        let mut f = self.lane(lane);
        let settled = f.settled;
        f.running.push(settled);
        let fresh = f
            .full_scan_at
            .is_some_and(|at| now >= at && now < at + FULL_SCAN_EVERY);
        let from = match f.key {
            Some(k) if fresh && k <= *hi => Some(k),
            _ => None,
        };
        if from.is_none() {
            f.full_scan_at = Some(now);
        }
        Begun {
            from,
            settled,
            lane,
            floors: Some(self),
        }
    }

    /// The scan `begun` found `first` as its first entry, or with `first` `None` read
    /// the whole range up to `hi` without one (`read_all`); with neither (it stopped
    /// before reading any entry) the floor stays.
    pub(crate) fn found(
        &self,
        mut begun: Begun<'_>,
        first: Option<&[u8]>,
        read_all: bool,
        hi: &[u8; 17],
    ) {
        if begun.floors.take().is_none() {
            return;
        }
        let mut f = self.lane(begun.lane);
        f.end(begun.settled);
        let seen = match first.map(<[u8; 17]>::try_from) {
            Some(Ok(k)) => Some(k),
            Some(Err(_)) => None,
            None if read_all => Some(*hi),
            None => None,
        };
        if let Some(seen) = seen {
            // Keys written since the scan began may be missing from what it read.
            let unseen = f
                .written
                .iter()
                .filter(|(n, _)| *n > begun.settled)
                .map(|(_, k)| *k)
                .min();
            // Right as of now: every entry visible when the scan read is at or above
            // `seen`, every one written since is in `unseen`, and a later write lowers
            // it again.
            f.key = Some(unseen.map_or(seen, |u| u.min(seen)));
        }
        f.prune();
    }
}

impl Floor {
    /// A scan begun when `settled` was settled ended (what it may have missed is
    /// pruned by the caller, once it no longer needs it).
    fn end(&mut self, settled: u64) {
        if let Some(i) = self.running.iter().position(|&s| s == settled) {
            self.running.swap_remove(i);
        }
    }

    /// Drops the written keys that are settled and that no running scan may have missed.
    fn prune(&mut self) {
        let oldest = self
            .running
            .iter()
            .copied()
            .min()
            .unwrap_or(self.settled)
            .min(self.settled);
        while self.written.front().is_some_and(|(n, _)| *n <= oldest) {
            self.written.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    //! Unit tests: their unwraps see only values built here.
    use super::*;

    fn key(n: u8) -> [u8; 17] {
        let mut k = [1u8; 17];
        k[16] = n;
        k
    }

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_scan_never_raises_the_floor_past_a_key_it_may_not_have_seen() {
        let f = Floors::new(true);
        let now = t("2026-12-07T10:00:00Z");
        let hi = key(200);
        let floor = || f.lane(Lane::Remote).key;
        // The first scan starts at the first key and finds 10 first: the floor.
        let b = f.begin(Lane::Remote, now, &hi);
        assert_eq!(b.from, None);
        f.found(b, Some(&key(10)), false, &hi);
        assert_eq!(floor(), Some(key(10)));
        // A scan begins; meanwhile 5 is written and its group flushed. What the scan
        // read may not hold 5: the floor goes to 5, not to what it found.
        let b = f.begin(Lane::Remote, now, &hi);
        assert_eq!(b.from, Some(key(10)));
        f.lower(&key(5));
        assert_eq!(floor(), Some(key(5)), "lowered before the write is visible");
        f.settle();
        f.found(b, Some(&key(20)), false, &hi);
        assert_eq!(floor(), Some(key(5)));
        // Written (lowered) before a scan begins but not yet flushed: the scan may not
        // see it either. (5 was visible to it, and it found 30 first: 5 is gone.)
        f.lower(&key(7));
        let b = f.begin(Lane::Remote, now, &hi);
        assert_eq!(b.from, Some(key(5)));
        f.found(b, Some(&key(30)), false, &hi);
        assert_eq!(floor(), Some(key(7)));
        f.settle();
        // A scan begun after everything settled can raise it.
        let b = f.begin(Lane::Remote, now, &hi);
        assert_eq!(b.from, Some(key(7)));
        f.found(b, Some(&key(30)), false, &hi);
        assert_eq!(floor(), Some(key(30)));
        // Nothing found but the whole range read: the floor is the range's end.
        let b = f.begin(Lane::Remote, now, &hi);
        f.found(b, None, true, &hi);
        assert_eq!(floor(), Some(hi));
        // Stopped before reading anything: the floor stays.
        f.lower(&key(40));
        f.settle();
        let b = f.begin(Lane::Remote, now, &hi);
        f.found(b, None, false, &hi);
        assert_eq!(floor(), Some(key(40)));
        // The other lane has its own floor; nothing is kept once settled and unscanned.
        assert_eq!(f.lane(Lane::Local).key, None);
        assert!(f.lane(Lane::Remote).written.is_empty());
        // Once a minute a scan starts from the first key whatever the floor, and at
        // once if the clock went back.
        let later = now + SignedDuration::from_secs(61);
        assert_eq!(f.begin(Lane::Remote, later, &hi).from, None);
        let back = now - SignedDuration::from_secs(1);
        assert_eq!(f.begin(Lane::Remote, back, &hi).from, None);
    }

    #[test]
    fn a_scan_that_ends_without_a_word_keeps_nothing_kept() {
        let f = Floors::new(true);
        let hi = key(200);
        let now = t("2026-12-07T10:00:00Z");
        let b = f.begin(Lane::Remote, now, &hi);
        f.lower(&key(5));
        f.settle();
        assert_eq!(
            f.lane(Lane::Remote).written.len(),
            1,
            "kept for the running scan"
        );
        drop(b);
        let l = f.lane(Lane::Remote);
        assert_eq!((l.written.len(), l.running.len()), (0, 0));
    }

    #[test]
    fn disabled_floors_keep_nothing() {
        let f = Floors::new(false);
        let hi = key(200);
        let b = f.begin(Lane::Remote, t("2026-12-07T10:00:00Z"), &hi);
        f.lower(&key(5));
        f.found(b, Some(&key(10)), false, &hi);
        let l = f.lane(Lane::Remote);
        assert_eq!((l.key, l.written.len(), l.running.len()), (None, 0, 0));
    }
}
