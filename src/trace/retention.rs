//! The trace side of retention (rules digest §9): choosing the anchor checkpoint of the
//! next purge, the `Purged` record that proves it, and listing what a purge step removes.
//!
//! It only reads the trace trees. The purge itself (storing the anchor, removing records
//! and index entries in chunks) is the store's, in `crate::store::retention`, through the
//! committer; nothing here may write the trace trees.

use jiff::{Timestamp, ToSpan};

use super::log::{
    Index, TraceError, TraceLog, decode, index_keys, old_index_keys, seq_key, seq_of_index_key,
};
use super::verify::{ANCHOR_PREFIX, ExportLine};
use super::{Checkpoint, EventKind, TraceEvent, sha256_hex};

/// Key in `trace_meta` of the seq up to which a purge has removed every record's index
/// entries (u64, big-endian): the sealed segments' purge floor.
pub(crate) const PURGED_KEY: &[u8] = b"purged";

impl TraceLog {
    /// The newest checkpoint (above the current anchor) all of whose records are older
    /// than `now - retention_months`: the anchor of the next purge. Event times need not
    /// be monotonic (a receipt may carry an earlier instant than a record before it), so
    /// every record up to the checkpoint is looked at, not only the checkpoint's own.
    pub fn purge_target(
        &self,
        now: Timestamp,
        retention_months: u32,
    ) -> Result<Option<Checkpoint>, TraceError> {
        let cutoff = now
            .to_zoned(jiff::tz::TimeZone::UTC)
            .checked_sub((retention_months as i64).months())
            .map(|z| z.timestamp())
            .unwrap_or(Timestamp::MIN);
        let floor = self.anchor()?.map_or(0, |a| a.seq);
        let mut best = None;
        // Records are scanned once, in seq order, alongside the checkpoints.
        let mut records = self.trees.records_in(floor + 1, u64::MAX);
        let mut scanned = floor;
        'cps: for kv in self.trees.checkpoints.range(seq_key(floor + 1)..) {
            let (k, v) = kv?;
            let cp: Checkpoint = decode(&k, &v)?;
            while scanned < cp.seq {
                let Some(kv) = records.next() else {
                    // The checkpoint's own record is missing: not a safe anchor.
                    break 'cps;
                };
                let (seq, rv) = kv?;
                let r = super::stored::decode(&seq_key(seq), &rv)?;
                if r.unchained().time >= cutoff {
                    break 'cps;
                }
                scanned = r.seq();
            }
            if scanned == cp.seq {
                best = Some(cp);
            }
        }
        Ok(best)
    }

    /// The `Purged` record a purge anchored on `anchor` appends: it names the anchor's
    /// seq (`related` = `anchor:SEQ`) and binds its exact export line (`sha256`), which
    /// is what lets a verifier accept a log starting at that anchor.
    pub fn purge_event(anchor: &Checkpoint, retention_months: u32, now: Timestamp) -> TraceEvent {
        let line = ExportLine::Checkpoint(anchor.clone()).to_line();
        let mut ev = TraceEvent::new(EventKind::Purged, now).detail(format!(
            "records up to seq {} purged after {} months; anchor checkpoint seq {} head {}",
            anchor.seq, retention_months, anchor.seq, anchor.head_hash
        ));
        ev.sha256 = Some(sha256_hex(&line));
        ev.related.push(format!("{ANCHOR_PREFIX}{}", anchor.seq));
        ev
    }

    /// Up to `max` records at or below `upto` still present (above the sealed
    /// segments' purge floor), with their index keys (what a purge step removes). The
    /// first record of a sealed file that this purge removes whole carries the keys of
    /// the file's groups ([`super::postings`]) and of its time span ([`super::spans`]),
    /// read from all its records, those an earlier purge hid included. Its other records
    /// lose their index entries with that step; they are past the retention, and the
    /// next step removes them.
    pub(crate) fn purge_chunk(
        &self,
        upto: u64,
        max: usize,
    ) -> Result<Vec<(u64, Vec<(Index, Vec<u8>)>)>, TraceError> {
        let mut out = Vec::new();
        let mut files_seen = None;
        for kv in self
            .trees
            .records_in(self.purged_floor() + 1, upto)
            .take(max)
        {
            let (seq, v) = kv?;
            let r = super::stored::decode(&seq_key(seq), &v)?;
            // The form tells which schema wrote the record, hence where its entries are.
            let mut keys = if r.needs_prev() {
                index_keys(r.unchained())
            } else {
                old_index_keys(r.unchained())
            };
            if let Some(sealed) = &self.trees.sealed
                && let Some((first, last)) = sealed.bounds_of(seq)
                && last <= upto
                && files_seen != Some(first)
            {
                files_seen = Some(first);
                let records = sealed.whole_file(first)?;
                keys.extend(
                    super::postings::group_keys(first, &records)?
                        .into_iter()
                        .map(|k| (Index::Keys, k)),
                );
                keys.push((Index::Time, super::spans::span_key(first)));
            }
            out.push((r.seq(), keys));
        }
        Ok(out)
    }

    /// The seq up to which a purge has removed every record's index entries (0 without
    /// sealed segments: there, a purged record is removed from the tree).
    pub(crate) fn purged_floor(&self) -> u64 {
        self.trees.sealed.as_ref().map_or(0, |s| s.floor())
    }

    /// Marks the records up to `seq` purged in the sealed segments (once the commit
    /// that removed their index entries and stored [`PURGED_KEY`] is durable), deleting
    /// the files that hold nothing else.
    pub(crate) fn purge_sealed_through(&self, seq: u64) -> Result<(), TraceError> {
        match &self.trees.sealed {
            Some(s) => s.purge_through(seq),
            None => Ok(()),
        }
    }

    /// Checkpoints strictly below `seq`.
    pub(crate) fn checkpoints_below(&self, seq: u64, max: usize) -> Result<Vec<u64>, TraceError> {
        let mut out = Vec::new();
        for kv in self.trees.checkpoints.range(..seq_key(seq)).take(max) {
            let (k, _) = kv?;
            if let Some(s) = seq_of_index_key(&k) {
                out.push(s);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use jiff::{SignedDuration, Timestamp};

    use crate::store::Store;
    use crate::trace::checkpoint::{cert_sha256, tests::test_signer};
    use crate::trace::verify::{ChainVerifier, VerifyReport, verify_export};
    use crate::trace::walk::tests::{add, store, t0};
    use crate::trace::{Checkpoint, EventKind, TraceEvent, TraceLog};

    #[test]
    fn purge_target_refuses_a_checkpoint_covering_a_younger_record() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = store(dir.path());
        let now: Timestamp = "2026-01-15T09:00:00Z".parse().unwrap();
        let old = now - SignedDuration::from_hours(24 * 31 * 31);
        let young = now - SignedDuration::from_hours(24);
        // seq 1 old, checkpoint A covers it (seq 1, its record is seq 2).
        add(&s, old);
        let a = s.checkpoint_now().unwrap().unwrap();
        // The binding record of A carries the store clock's time (t0, old); then a record
        // with a young event time, then an old one, and checkpoint B on that old record.
        add(&s, young);
        add(&s, old);
        let b = s.checkpoint_now().unwrap().unwrap();
        assert_eq!(s.trace().get(b.seq).unwrap().unwrap().time, old);
        // B's own record is old, but a record it covers is 24 hours old: only A qualifies.
        let target = s.trace().purge_target(now, 30).unwrap().unwrap();
        assert_eq!(target.seq, a.seq);
        // Once everything is past the retention, B is the target.
        let later = young + SignedDuration::from_hours(24 * 31 * 31);
        assert_eq!(
            s.trace().purge_target(later, 30).unwrap().unwrap().seq,
            b.seq
        );
        // A purge at `now` keeps the young record.
        s.purge_expired(now).unwrap();
        let left = s.trace().query(&Default::default()).unwrap();
        assert!(left.iter().any(|r| r.time == young), "{left:?}");
        assert!(s.trace().verify(None).unwrap().intact());
    }

    /// Export lines of a store with a purge behind it, and the anchor's line index.
    fn purged_export(s: &Store) -> Vec<Vec<u8>> {
        let now: Timestamp = "2026-01-15T09:00:00Z".parse().unwrap();
        for _ in 0..3 {
            add(s, t0());
        }
        s.checkpoint_now().unwrap().unwrap();
        add(s, t0());
        s.checkpoint_now().unwrap().unwrap();
        add(s, now);
        s.purge_expired(now).unwrap();
        let mut out = Vec::new();
        s.trace().export(&mut out).unwrap();
        out.split(|&c| c == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect()
    }

    fn join(ls: &[Vec<u8>]) -> Vec<u8> {
        ls.iter()
            .flat_map(|l| l.iter().copied().chain([b'\n']))
            .collect()
    }

    #[test]
    fn an_anchor_is_accepted_only_when_a_purged_record_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let (s, me) = store(dir.path());
        let ls = purged_export(&s);
        let r = verify_export(&join(&ls)[..], Some(me.clone())).unwrap();
        assert!(r.intact(), "{:?}", r.problem);
        assert!(r.anchor.is_some());
        assert_eq!(r.unsigned_tail, 0, "the trailer signs the end");
        let made = r.export_time.expect("the trailer's time is reported");
        assert!(
            (Timestamp::now() - made).get_seconds().abs() < 600,
            "{made}"
        );

        assert!(
            ls.iter()
                .any(|l| l.windows(15).any(|w| w == br#""kind":"Purged""#)
                    && l.windows(7).any(|w| w == b"anchor:"))
        );
    }

    /// Feeds an anchor checkpoint and the records after it, the last being `purged`.
    fn verify_after_anchor(purged: impl Fn(&Checkpoint) -> TraceEvent) -> VerifyReport {
        let signer = test_signer("provider");
        let head = "ab".repeat(32);
        let anchor = Checkpoint::sign(&signer, 4, &head, t0(), 0).unwrap();
        let mut v = ChainVerifier::new(Some(cert_sha256(signer.certificate())));
        v.checkpoint(Some(1), &anchor).unwrap();
        let r5 = TraceEvent::new(EventKind::Relayed, t0()).into_record(5, &head);
        v.record(Some(2), &r5).unwrap();
        let r6 = purged(&anchor).into_record(6, &r5.hash);
        if let Err(p) = v.record(Some(3), &r6) {
            v.set_problem(p);
        }
        v.finish()
    }

    #[test]
    fn an_anchor_is_proven_only_by_a_purged_record_naming_it_exactly() {
        let now: Timestamp = "2026-01-15T09:00:00Z".parse().unwrap();
        let r = verify_after_anchor(|a| TraceLog::purge_event(a, 30, now));
        assert!(r.intact(), "{:?}", r.problem);
        assert_eq!(r.anchor, Some(4));

        // A Purged record in the old, free-text form only: not a proof.
        let r = verify_after_anchor(|a| {
            let mut ev = TraceLog::purge_event(a, 30, now);
            ev.related.clear();
            ev
        });
        let p = r.problem.unwrap();
        assert_eq!((p.line, p.seq), (Some(1), Some(4)));
        assert!(p.message.contains("no Purged record names"), "{p}");
        assert!(
            p.message
                .contains("seq 6 names no anchor: purged by an older pecd?"),
            "{p}"
        );

        // A Purged record naming the seq but another checkpoint line.
        let r = verify_after_anchor(|a| {
            let mut ev = TraceLog::purge_event(a, 30, now);
            ev.sha256 = Some("00".repeat(32));
            ev
        });
        let p = r.problem.unwrap();
        assert_eq!((p.line, p.seq), (Some(3), Some(6)));
        assert!(p.message.contains("anchor checkpoint replaced"), "{p}");

        // A Purged record of an earlier purge (another anchor) does not prove this one.
        let r = verify_after_anchor(|a| {
            let mut older = a.clone();
            older.seq = 2;
            TraceLog::purge_event(&older, 30, now)
        });
        let p = r.problem.unwrap();
        assert!(p.message.contains("no Purged record names"), "{p}");
        assert!(!p.message.contains("older pecd"), "{p}");
    }

    #[test]
    fn a_log_cut_at_a_checkpoint_is_not_an_anchor() {
        let dir = tempfile::tempdir().unwrap();
        let (s, me) = store(dir.path());
        for i in 0..4 {
            add(&s, t0() + SignedDuration::from_secs(i));
        }
        s.checkpoint_now().unwrap().unwrap();
        add(&s, t0());
        let mut out = Vec::new();
        s.trace().export(&mut out).unwrap();
        let cp = out
            .windows(20)
            .position(|w| w == br#"{"type":"checkpoint""#)
            .unwrap();
        let r = verify_export(&out[cp..], Some(me)).unwrap();
        let p = r.problem.expect("a cut log must not verify");
        assert_eq!((p.line, p.seq), (Some(1), Some(4)));
        assert!(p.message.contains("no Purged record names"), "{p}");
    }
}
