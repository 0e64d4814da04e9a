//! The trace trees inside the store's sled database, and the read side of the log:
//! queries, export, live verification, and the planning of retention purges.
//!
//! Layout (all integers big-endian so that key order is numeric order):
//!
//! | tree | key | value |
//! |---|---|---|
//! | `trace` | seq (u64) | record JSON |
//! | `trace_msgid` | msgid `\0` seq | empty |
//! | `trace_ident` | identificativo `\0` seq | empty |
//! | `trace_mailbox` | lower-cased address `\0` seq | empty |
//! | `trace_time` | unix ms (u64, sign bit flipped) seq | empty |
//! | `checkpoints` | seq (u64) | checkpoint JSON |
//! | `trace_meta` | `anchor` | the anchor checkpoint JSON (after a purge) |
//!
//! Writes happen only in the store's committer (`crate::store::commit`); this module
//! never writes.
//!
//! An export ends with a signed [`ExportTrailer`] naming its last record, so a
//! [`TraceLog`] can export only with a signer: the store's own (the running server), or
//! one given with [`TraceLog::with_signer`] (the CLI on a closed store, from
//! `signing.cert`/`signing.key`).

use std::io::Write;
use std::sync::Arc;

use jiff::{Timestamp, ToSpan};
use serde::Serialize;

use super::checkpoint::{ExportTrailer, TrustedSigners};
use super::verify::{ANCHOR_PREFIX, ChainVerifier, ExportLine, VerifyProblem, VerifyReport};
use super::{
    Checkpoint, EventKind, GENESIS_HASH, TraceEvent, TraceRecord, mailbox_key, msgid_key,
    sha256_hex,
};
use crate::pec::smime::Signer;

/// Errors reading the trace trees.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("trace database error: {0}")]
    Sled(#[from] sled::Error),
    #[error("trace entry {key} cannot be decoded: {detail}")]
    Corrupt { key: String, detail: String },
    #[error("writing the export: {0}")]
    Io(#[from] std::io::Error),
    #[error(
        "an export must end with a signed trailer, and no signing key is available (signing.cert / signing.key)"
    )]
    NoSigner,
    #[error("signing the export trailer: {0}")]
    Signing(String),
}

/// The secondary indexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Index {
    MsgId,
    Ident,
    Mailbox,
    Time,
}

/// Handles on the trace trees (cheap to clone).
#[derive(Debug, Clone)]
pub struct TraceTrees {
    pub(crate) records: sled::Tree,
    pub(crate) by_msgid: sled::Tree,
    pub(crate) by_ident: sled::Tree,
    pub(crate) by_mailbox: sled::Tree,
    pub(crate) by_time: sled::Tree,
    pub(crate) checkpoints: sled::Tree,
    pub(crate) meta: sled::Tree,
}

pub(crate) const ANCHOR_KEY: &[u8] = b"anchor";

impl TraceTrees {
    pub(crate) fn open(db: &sled::Db) -> sled::Result<Self> {
        Ok(Self {
            records: db.open_tree("trace")?,
            by_msgid: db.open_tree("trace_msgid")?,
            by_ident: db.open_tree("trace_ident")?,
            by_mailbox: db.open_tree("trace_mailbox")?,
            by_time: db.open_tree("trace_time")?,
            checkpoints: db.open_tree("checkpoints")?,
            meta: db.open_tree("trace_meta")?,
        })
    }
}

pub(crate) fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

fn time_prefix(t: Timestamp) -> [u8; 8] {
    ((t.as_millisecond() as u64) ^ (1 << 63)).to_be_bytes()
}

fn prefixed(prefix: &str, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + 9);
    k.extend_from_slice(prefix.as_bytes());
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The index entries of a record.
pub(crate) fn index_keys(r: &TraceRecord) -> Vec<(Index, Vec<u8>)> {
    let mut out = Vec::with_capacity(4 + r.recipients.len());
    if let Some(m) = r.msgid.as_deref().map(msgid_key).filter(|m| !m.is_empty()) {
        out.push((Index::MsgId, prefixed(&m, r.seq)));
    }
    if let Some(i) = r.ident.as_deref().map(msgid_key).filter(|m| !m.is_empty()) {
        out.push((Index::Ident, prefixed(&i, r.seq)));
    }
    for m in r.mailbox_keys() {
        out.push((Index::Mailbox, prefixed(&m, r.seq)));
    }
    let mut t = time_prefix(r.time).to_vec();
    t.extend_from_slice(&r.seq.to_be_bytes());
    out.push((Index::Time, t));
    out
}

fn seq_of_index_key(k: &[u8]) -> Option<u64> {
    let tail: [u8; 8] = k.get(k.len().checked_sub(8)?..)?.try_into().ok()?;
    Some(u64::from_be_bytes(tail))
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(
    key: &[u8],
    v: &[u8],
) -> Result<T, TraceError> {
    serde_json::from_slice(v).map_err(|e| TraceError::Corrupt {
        key: hex::encode(key),
        detail: e.to_string(),
    })
}

/// A query; all given criteria must match. The most selective index is used
/// (Message-ID, then identificativo, then mailbox, then time).
#[derive(Debug, Clone, Default)]
pub struct TraceQuery {
    pub msgid: Option<String>,
    pub ident: Option<String>,
    pub mailbox: Option<String>,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    pub limit: Option<usize>,
}

impl TraceQuery {
    fn matches(&self, r: &TraceRecord) -> bool {
        let eq = |want: &Option<String>, have: &Option<String>| match want {
            None => true,
            Some(w) => have.as_deref().map(msgid_key).as_deref() == Some(msgid_key(w).as_str()),
        };
        eq(&self.msgid, &r.msgid)
            && eq(&self.ident, &r.ident)
            && self
                .mailbox
                .as_ref()
                .is_none_or(|m| r.mailbox_keys().contains(&mailbox_key(m)))
            && self.since.is_none_or(|s| r.time >= s)
            && self.until.is_none_or(|u| r.time <= u)
    }
}

/// Where the chain starts and ends.
#[derive(Debug, Clone, Serialize)]
pub struct TraceStatus {
    pub first_seq: Option<u64>,
    pub head_seq: u64,
    pub head_hash: String,
    pub anchor: Option<Checkpoint>,
    pub last_checkpoint: Option<Checkpoint>,
}

/// Read access to the trace log.
#[derive(Debug, Clone)]
pub struct TraceLog {
    pub(crate) trees: TraceTrees,
    /// Signs export trailers.
    signer: Option<Arc<Signer>>,
}

impl TraceLog {
    pub(crate) fn new(trees: TraceTrees) -> Self {
        Self {
            trees,
            signer: None,
        }
    }

    /// The same log, signing export trailers with `signer`.
    pub fn with_signer(mut self, signer: Option<Arc<Signer>>) -> Self {
        if signer.is_some() {
            self.signer = signer;
        }
        self
    }

    /// The record `seq`, if present.
    pub fn get(&self, seq: u64) -> Result<Option<TraceRecord>, TraceError> {
        let k = seq_key(seq);
        match self.trees.records.get(k)? {
            Some(v) => Ok(Some(decode(&k, &v)?)),
            None => Ok(None),
        }
    }

    /// The anchor checkpoint left by the last purge.
    pub fn anchor(&self) -> Result<Option<Checkpoint>, TraceError> {
        match self.trees.meta.get(ANCHOR_KEY)? {
            Some(v) => Ok(Some(decode(ANCHOR_KEY, &v)?)),
            None => Ok(None),
        }
    }

    /// The head of the chain: `(seq, hash)` of the last record, or of the anchor, or
    /// `(0, GENESIS_HASH)`.
    pub fn head(&self) -> Result<(u64, String), TraceError> {
        if let Some((k, v)) = self.trees.records.last()? {
            let r: TraceRecord = decode(&k, &v)?;
            return Ok((r.seq, r.hash));
        }
        Ok(match self.anchor()? {
            Some(a) => (a.seq, a.head_hash),
            None => (0, GENESIS_HASH.to_string()),
        })
    }

    pub fn last_checkpoint(&self) -> Result<Option<Checkpoint>, TraceError> {
        match self.trees.checkpoints.last()? {
            Some((k, v)) => Ok(Some(decode(&k, &v)?)),
            None => Ok(None),
        }
    }

    pub fn status(&self) -> Result<TraceStatus, TraceError> {
        let anchor = self.anchor()?;
        let floor = anchor.as_ref().map_or(0, |a| a.seq);
        let first_seq = self
            .trees
            .records
            .range(seq_key(floor + 1)..)
            .next()
            .transpose()?
            .and_then(|(k, _)| seq_of_index_key(&k));
        let (head_seq, head_hash) = self.head()?;
        Ok(TraceStatus {
            first_seq,
            head_seq,
            head_hash,
            anchor,
            last_checkpoint: self.last_checkpoint()?,
        })
    }

    /// Records matching `q`, in index order (seq order, or time order for a pure time
    /// range).
    pub fn query(&self, q: &TraceQuery) -> Result<Vec<TraceRecord>, TraceError> {
        let limit = q.limit.unwrap_or(usize::MAX);
        let mut out = Vec::new();
        let mut push = |r: TraceRecord| {
            if q.matches(&r) {
                out.push(r);
            }
            out.len() < limit
        };
        let by_prefix = |tree: &sled::Tree, p: String| {
            let mut k = p.into_bytes();
            k.push(0);
            tree.scan_prefix(k)
        };
        let scan = if let Some(m) = &q.msgid {
            Some(by_prefix(&self.trees.by_msgid, msgid_key(m)))
        } else if let Some(i) = &q.ident {
            Some(by_prefix(&self.trees.by_ident, msgid_key(i)))
        } else if let Some(m) = &q.mailbox {
            Some(by_prefix(&self.trees.by_mailbox, mailbox_key(m)))
        } else if q.since.is_some() || q.until.is_some() {
            let lo = q.since.map_or([0u8; 8], time_prefix).to_vec();
            let mut hi = q.until.map_or([0xffu8; 8], time_prefix).to_vec();
            hi.extend_from_slice(&[0xff; 8]);
            Some(self.trees.by_time.range(lo..=hi))
        } else {
            None
        };
        match scan {
            Some(iter) => {
                for kv in iter {
                    let (k, _) = kv?;
                    let Some(seq) = seq_of_index_key(&k) else {
                        continue;
                    };
                    if let Some(r) = self.get(seq)? {
                        if !push(r) {
                            break;
                        }
                    }
                }
            }
            None => {
                for kv in self.trees.records.iter() {
                    let (k, v) = kv?;
                    if !push(decode(&k, &v)?) {
                        break;
                    }
                }
            }
        }
        Ok(out)
    }

    /// Walks the log in export order: the anchor (if any), then each record followed by
    /// the checkpoint of its seq (if any). Records and checkpoints at or below the anchor
    /// (left by an interrupted purge) are skipped. Returns the end of the walk: the
    /// `(seq, hash)` of the last record walked (or of the anchor, or genesis).
    ///
    /// The walk stops at the head as it was when the walk started: the committer keeps
    /// appending while a live log is exported or verified, and stores each checkpoint
    /// together with a later record binding it. Without the bound, a walk could meet that
    /// binding record but not the checkpoint (its iterator already exhausted) and report a
    /// deleted checkpoint. Every checkpoint at or below the captured head whose binding
    /// record is at or below it too was stored before the walk started, so it is seen; one
    /// stored during the walk may be seen or not, and either way its binding record is
    /// beyond the bound.
    pub fn walk(
        &self,
        mut f: impl FnMut(ExportLine) -> Result<bool, TraceError>,
    ) -> Result<(u64, String), TraceError> {
        let anchor = self.anchor()?;
        let floor = anchor.as_ref().map_or(0, |a| a.seq);
        let mut end = match &anchor {
            Some(a) => (a.seq, a.head_hash.clone()),
            None => (0, GENESIS_HASH.to_string()),
        };
        let (head, _) = self.head()?;
        if let Some(a) = anchor
            && !f(ExportLine::Checkpoint(a))?
        {
            return Ok(end);
        }
        if head <= floor {
            return Ok(end);
        }
        let bound = seq_key(floor + 1)..=seq_key(head);
        let mut cps = self.trees.checkpoints.range(bound.clone()).peekable();
        for kv in self.trees.records.range(bound) {
            let (k, v) = kv?;
            let r: TraceRecord = decode(&k, &v)?;
            let seq = r.seq;
            let hash = r.hash.clone();
            if !f(ExportLine::Record(r))? {
                return Ok(end);
            }
            end = (seq, hash);
            while let Some(Ok((ck, _))) = cps.peek() {
                let Some(cseq) = seq_of_index_key(ck) else {
                    break;
                };
                if cseq > seq {
                    break;
                }
                let (ck, cv) = cps.next().transpose()?.ok_or_else(|| TraceError::Corrupt {
                    key: "checkpoints".into(),
                    detail: "vanished during the walk".into(),
                })?;
                if cseq == seq && !f(ExportLine::Checkpoint(decode(&ck, &cv)?))? {
                    return Ok(end);
                }
            }
        }
        Ok(end)
    }

    /// Writes the log as JSON Lines, up to the head as it was when the export started,
    /// ending with a trailer signed over exactly that last record; returns the number of
    /// lines, trailer included.
    pub fn export(&self, mut w: impl Write) -> Result<u64, TraceError> {
        let signer = self.signer.clone().ok_or(TraceError::NoSigner)?;
        let mut n = 0;
        let (end_seq, end_hash) = self.walk(|line| {
            w.write_all(&line.to_line())?;
            w.write_all(b"\n")?;
            n += 1;
            Ok(true)
        })?;
        let trailer = ExportTrailer::sign(&signer, end_seq, &end_hash, Timestamp::now())
            .map_err(|e| TraceError::Signing(e.to_string()))?;
        w.write_all(&ExportLine::Trailer(trailer).to_line())?;
        w.write_all(b"\n")?;
        w.flush()?;
        Ok(n + 1)
    }

    /// Verifies the live log (same rules as an export, without the trailer).
    /// Like an export, it stops at the head as it was when it started.
    pub fn verify(&self, trusted: impl Into<TrustedSigners>) -> Result<VerifyReport, TraceError> {
        self.verify_observed(trusted, |_| ())
    }

    /// [`TraceLog::verify`], calling `seen` after each line is checked (the tests append
    /// to the log there).
    fn verify_observed(
        &self,
        trusted: impl Into<TrustedSigners>,
        mut seen: impl FnMut(&ExportLine),
    ) -> Result<VerifyReport, TraceError> {
        let mut v = ChainVerifier::new(trusted);
        self.walk(|line| {
            seen(&line);
            let res = match &line {
                ExportLine::Record(r) => v.record(None, r),
                ExportLine::Checkpoint(c) => v.checkpoint(None, c),
                ExportLine::Trailer(_) => Err(VerifyProblem {
                    line: None,
                    seq: None,
                    message: "a trailer inside the live log".into(),
                }),
            };
            match res {
                Ok(()) => Ok(true),
                Err(p) => {
                    v.set_problem(p);
                    Ok(false)
                }
            }
        })?;
        Ok(v.finish())
    }

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
        let mut records = self.trees.records.range(seq_key(floor + 1)..);
        let mut scanned = floor;
        'cps: for kv in self.trees.checkpoints.range(seq_key(floor + 1)..) {
            let (k, v) = kv?;
            let cp: Checkpoint = decode(&k, &v)?;
            while scanned < cp.seq {
                let Some(kv) = records.next() else {
                    // The checkpoint's own record is missing: not a safe anchor.
                    break 'cps;
                };
                let (rk, rv) = kv?;
                let r: TraceRecord = decode(&rk, &rv)?;
                if r.time >= cutoff {
                    break 'cps;
                }
                scanned = r.seq;
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

    /// Up to `max` records at or below `upto` still present, with their index keys
    /// (what a purge step removes).
    pub(crate) fn purge_chunk(
        &self,
        upto: u64,
        max: usize,
    ) -> Result<Vec<(u64, Vec<(Index, Vec<u8>)>)>, TraceError> {
        let mut out = Vec::new();
        for kv in self.trees.records.range(..=seq_key(upto)).take(max) {
            let (k, v) = kv?;
            let r: TraceRecord = decode(&k, &v)?;
            out.push((r.seq, index_keys(&r)));
        }
        Ok(out)
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
    use std::sync::Arc;

    use jiff::{SignedDuration, Timestamp};

    use super::{ChainVerifier, Checkpoint, TraceLog, VerifyReport};
    use crate::clock::ManualClock;
    use crate::store::{Batch, Store, StoreOptions};
    use crate::trace::checkpoint::{cert_sha256, tests::test_signer};
    use crate::trace::verify::verify_export;
    use crate::trace::{EventKind, TraceEvent};

    fn t0() -> Timestamp {
        "2023-01-15T09:00:00Z".parse().unwrap()
    }

    /// A store signing checkpoints only on demand.
    fn store(dir: &std::path::Path) -> (Store, String) {
        let signer = Arc::new(test_signer("provider"));
        let me = cert_sha256(signer.certificate());
        let o = StoreOptions {
            clock: Arc::new(ManualClock::new(t0())),
            signer: Some(signer),
            checkpoint_every: 1_000_000,
            checkpoint_interval: std::time::Duration::from_secs(1_000_000),
            ..StoreOptions::default()
        };
        (Store::open(dir, o).unwrap(), me)
    }

    fn add(s: &Store, t: Timestamp) {
        s.commit(Batch::new().trace(TraceEvent::new(EventKind::Relayed, t)))
            .unwrap();
    }

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

    /// A writer that runs `hook` once, after the `after`-th line was written.
    struct HookWriter<F: FnMut()> {
        out: Vec<u8>,
        after: usize,
        hook: Option<F>,
    }

    impl<F: FnMut()> std::io::Write for HookWriter<F> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.out.extend_from_slice(buf);
            if self.out.iter().filter(|&&c| c == b'\n').count() >= self.after
                && let Some(mut h) = self.hook.take()
            {
                h();
            }
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Enough records for the trees to span several nodes: a walk then reads the last
    /// ones only after the appends its tests make after the first lines.
    fn add_many(s: &Store, n: usize) {
        let b = (0..n).fold(Batch::new(), |b, _| {
            b.trace(TraceEvent::new(EventKind::Relayed, t0()))
        });
        s.commit(b).unwrap();
    }

    /// What the committer does while a live export runs: more records, then a checkpoint
    /// stored together with the record binding it.
    fn append_with_checkpoint(s: &Store) {
        add(s, t0());
        add(s, t0());
        s.checkpoint_now().unwrap().unwrap();
        add(s, t0());
    }

    #[test]
    fn a_live_export_ends_where_it_started_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let (s, me) = store(dir.path());
        add_many(&s, 400);
        let (head, head_hash) = s.trace().head().unwrap();
        // Lines 1 and 2 are written (the checkpoint iterator has found none so far), then
        // records and a checkpoint with its binding record are committed.
        let mut w = HookWriter {
            out: Vec::new(),
            after: 2,
            hook: Some(|| append_with_checkpoint(&s)),
        };
        let n = s.trace().export(&mut w).unwrap();
        assert!(w.hook.is_none(), "the commit ran during the export");
        assert!(s.trace().head().unwrap().0 > head + 3);
        assert_eq!(
            n,
            head + 1,
            "the records up to the starting head, and the trailer"
        );
        let r = verify_export(&w.out[..], Some(me.clone())).unwrap();
        assert!(r.intact(), "{:?}", r.problem);
        assert_eq!(r.last_seq, Some(head));
        let trailer = w
            .out
            .split(|&c| c == b'\n')
            .rfind(|l| !l.is_empty())
            .unwrap();
        let trailer = String::from_utf8_lossy(trailer);
        assert!(
            trailer.contains(&format!(r#""seq":{head},"head_hash":"{head_hash}""#)),
            "{trailer}"
        );

        // The next export has everything, the new checkpoint included.
        let mut out = Vec::new();
        s.trace().export(&mut out).unwrap();
        let r = verify_export(&out[..], Some(me)).unwrap();
        assert!(r.intact(), "{:?}", r.problem);
        assert_eq!(r.checkpoints, 1);
        assert_eq!(r.last_seq, Some(s.trace().head().unwrap().0));
    }

    #[test]
    fn a_live_verify_ends_where_it_started() {
        let dir = tempfile::tempdir().unwrap();
        let (s, me) = store(dir.path());
        add_many(&s, 400);
        let mut lines = 0;
        let r = s
            .trace()
            .verify_observed(Some(me.clone()), |_| {
                lines += 1;
                if lines == 2 {
                    append_with_checkpoint(&s);
                }
            })
            .unwrap();
        assert!(r.intact(), "{:?}", r.problem);
        assert_eq!(
            (r.records, r.last_seq, r.unsigned_tail),
            (400, Some(400), 400)
        );
        let r = s.trace().verify(Some(me)).unwrap();
        assert!(r.intact(), "{:?}", r.problem);
        assert_eq!(r.checkpoints, 1);
    }

    #[test]
    fn an_export_needs_a_signer() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let err = s.trace().export(Vec::new()).unwrap_err();
        assert!(matches!(err, super::TraceError::NoSigner), "{err}");
    }
}
