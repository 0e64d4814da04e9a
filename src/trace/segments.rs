//! Sealed segments of the trace log (sled stores): the older records moved out of the
//! `trace` tree into immutable files under `<store>/trace/`, one file per run of
//! consecutive seqs, written once and never changed.
//!
//! Why: a record in sled costs its bytes about 2.5 times over on disk (sled rewrites
//! pages and cleans a segment of its log only below half live), and the trace log is
//! most of the store's metadata (six records a message, kept 30 months). In a sealed
//! file, deflated in blocks, a record costs about a third of its bytes.
//!
//! What it owns: the file format, writing a file (complete and durable before it is
//! named), reading records by seq, listing, and deleting files a purge left behind.
//! It does not decide what to seal (the store's committer does, from records already
//! durable in the tree, see `crate::store::commit`) nor read the tree: `super::records`
//! reads the tree first and then these files, so that a record moving from one to the
//! other is always found in one of them.
//!
//! What it must distrust: the files it finds (a damaged or foreign file is an error
//! naming it, never a panic or a read out of bounds).
//!
//! ## Format
//!
//! `{first seq, 20 digits}.seg`:
//!
//! | bytes | |
//! |---|---|
//! | 8 | `PECDTSG2` |
//! | 8 | first seq (u64, big-endian) |
//! | 4 | slots `n` (u32, big-endian): seqs `first ..= first + n - 1` |
//! | 4 | slots per block `k` (u32, big-endian) |
//! | 4 × n | end of slot `i`'s bytes in the uncompressed data (u32, big-endian); a slot as long as none is empty (no record: purged before sealing) |
//! | 4 × ⌈n / k⌉ | end of each block in the compressed data (u32, big-endian) |
//! | … | the blocks: each the records' stored forms ([`super::stored`]) of `k` slots one after the other, deflated (RFC 1951) |
//!
//! A read by seq inflates one block (about 16 KB); each record costs a third of its
//! stored form (its two SHA-256 digests do not compress) plus four bytes of table.
//!
//! Crash safety: a file is written under a temporary name, synced, renamed, and the
//! directory synced; only then does the committer remove the records from the tree. A
//! crash before the rename leaves a temporary file (removed at open); after it, the
//! records are in both places until the store's open removes them from the tree.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use super::log::TraceError;

const MAGIC: &[u8; 8] = b"PECDTSG2";
const HEADER: u64 = 24;
/// Segments kept open for reads.
const OPEN_MAX: usize = 16;
/// Slots per compressed block: about 16 KB of records, which deflate to about a third
/// (the two SHA-256 digests a record carries do not compress). A read by seq inflates
/// one block.
const BLOCK_SLOTS: u32 = 64;
/// More than any block of records holds: a table claiming more is damaged (and is not
/// inflated into memory).
const MAX_BLOCK: usize = 64 << 20;
/// The most slots per block a file may claim.
const MAX_BLOCK_SLOTS: u64 = 4096;
/// The deflate level (miniz's default).
const LEVEL: u8 = 6;

fn be32(b: &[u8]) -> Vec<u32> {
    b.chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// One sealed file, open for reads.
struct Segment {
    file: File,
    path: PathBuf,
    first: u64,
    /// End of each slot's bytes in the uncompressed data.
    ends: Vec<u32>,
    /// Slots per block.
    block: u32,
    /// End of each compressed block in the file's data.
    blocks: Vec<u32>,
    data_at: u64,
    /// The block inflated last: reads in seq order inflate each block once.
    last: Mutex<Option<(usize, Arc<Vec<u8>>)>>,
}

impl Segment {
    fn corrupt(path: &Path, detail: String) -> TraceError {
        TraceError::Corrupt {
            key: path.display().to_string(),
            detail,
        }
    }

    fn open(path: PathBuf, first: u64) -> Result<Self, TraceError> {
        let file = File::open(&path).map_err(io_at(&path))?;
        let len = file.metadata().map_err(io_at(&path))?.len();
        let corrupt = |detail: String| Self::corrupt(&path, detail);
        let mut head = [0u8; HEADER as usize];
        file.read_exact_at(&mut head, 0)
            .map_err(|e| corrupt(format!("header: {e}")))?;
        if &head[..8] != MAGIC {
            return Err(corrupt("not a sealed trace segment".into()));
        }
        let at = |r: std::ops::Range<usize>| head[r].iter().fold(0u64, |a, b| a << 8 | *b as u64);
        if at(8..16) != first {
            return Err(corrupt(format!(
                "holds seqs from {}, its name says {first}",
                at(8..16)
            )));
        }
        let (n, block) = (at(16..20), at(20..24));
        // Blocks larger than written here would inflate more than a block's worth; the
        // last seq must leave room for the next file's first.
        if n == 0 || block == 0 || block > MAX_BLOCK_SLOTS || first.checked_add(n).is_none() {
            return Err(corrupt(format!(
                "{n} slots from seq {first} in blocks of {block}"
            )));
        }
        let m = n.div_ceil(block);
        let data_at = HEADER + 4 * (n + m);
        if data_at > len {
            return Err(corrupt(format!("{n} slots do not fit in {len} bytes")));
        }
        let mut tables = vec![0u8; 4 * (n + m) as usize];
        file.read_exact_at(&mut tables, HEADER)
            .map_err(|e| corrupt(format!("tables: {e}")))?;
        let (ends, blocks) = tables.split_at(4 * n as usize);
        let (ends, blocks) = (be32(ends), be32(blocks));
        let sorted = |v: &[u32]| v.windows(2).all(|w| w[0] <= w[1]);
        if !sorted(&ends)
            || !sorted(&blocks)
            || blocks.last().map_or(0, |e| *e as u64) != len - data_at
        {
            return Err(corrupt("its tables do not match its data".into()));
        }
        Ok(Self {
            file,
            path,
            first,
            ends,
            block: block as u32,
            blocks,
            data_at,
            last: Mutex::new(None),
        })
    }

    fn last(&self) -> u64 {
        self.first + self.ends.len() as u64 - 1
    }

    /// Where slot `i`'s bytes start in the uncompressed data.
    fn start(&self, i: usize) -> u32 {
        if i == 0 { 0 } else { self.ends[i - 1] }
    }

    /// Block `b` inflated, and where it starts in the uncompressed data.
    fn inflate(&self, b: usize) -> Result<(u32, Arc<Vec<u8>>), TraceError> {
        let per = self.block as usize;
        let u0 = self.start(b * per);
        let u1 = self.ends[((b + 1) * per).min(self.ends.len()) - 1];
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((lb, bytes)) = &*last
            && *lb == b
        {
            return Ok((u0, bytes.clone()));
        }
        let c0 = if b == 0 { 0 } else { self.blocks[b - 1] };
        let mut packed = vec![0u8; (self.blocks[b] - c0) as usize];
        self.file
            .read_exact_at(&mut packed, self.data_at + c0 as u64)
            .map_err(|e| Self::corrupt(&self.path, format!("reading block {b}: {e}")))?;
        let want = (u1 - u0) as usize;
        if want > MAX_BLOCK {
            return Err(Self::corrupt(
                &self.path,
                format!("block {b} claims {want} bytes"),
            ));
        }
        let bytes = miniz_oxide::inflate::decompress_to_vec_with_limit(&packed, want)
            .ok()
            .filter(|v| v.len() == want)
            .ok_or_else(|| {
                Self::corrupt(
                    &self.path,
                    format!("block {b} does not inflate to {want} bytes"),
                )
            })?;
        let bytes = Arc::new(bytes);
        *last = Some((b, bytes.clone()));
        Ok((u0, bytes))
    }

    /// Slot `seq`'s bytes, `None` for an empty slot.
    fn read(&self, seq: u64) -> Result<Option<Vec<u8>>, TraceError> {
        let Some(i) = seq.checked_sub(self.first).map(|i| i as usize) else {
            return Ok(None);
        };
        let Some(&end) = self.ends.get(i) else {
            return Ok(None);
        };
        let start = self.start(i);
        if start == end {
            return Ok(None);
        }
        let (u0, bytes) = self.inflate(i / self.block as usize)?;
        Ok(Some(
            bytes[(start - u0) as usize..(end - u0) as usize].to_vec(),
        ))
    }

    /// Every record from `from` to `to` (both within this segment), in seq order.
    fn read_range(&self, from: u64, to: u64) -> Result<Vec<(u64, Vec<u8>)>, TraceError> {
        let (lo, hi) = (from.max(self.first), to.min(self.last()));
        let mut out = Vec::new();
        for seq in lo..=hi {
            if let Some(v) = self.read(seq)? {
                out.push((seq, v));
            }
        }
        Ok(out)
    }
}

/// What the directory holds.
#[derive(Default)]
struct State {
    /// first seq → last seq of each file, a contiguous run.
    files: BTreeMap<u64, u64>,
    /// Records at or below this seq are purged: never returned, whatever a file holds.
    floor: u64,
    /// Files found at open holding nothing above the floor (a purge's deletions cut
    /// short), deleted at the next [`Segments::purge_through`].
    purged: Vec<PathBuf>,
}

/// The sealed segments of one store (cheap to share).
pub struct Segments {
    dir: PathBuf,
    state: RwLock<State>,
    open: Mutex<HashMap<u64, Arc<Segment>>>,
}

impl std::fmt::Debug for Segments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Segments({})", self.dir.display())
    }
}

fn name(first: u64) -> String {
    format!("{first:020}.seg")
}

fn io_at(path: &Path) -> impl Fn(std::io::Error) -> TraceError + '_ {
    move |e| {
        TraceError::Io(std::io::Error::new(
            e.kind(),
            format!("{}: {e}", path.display()),
        ))
    }
}

impl Segments {
    /// Opens (creating) the directory `dir`: lists its files, which must form one run of
    /// consecutive seqs, and removes temporary files a crash left. Records at or below
    /// `floor` count as purged.
    pub fn open(dir: &Path, floor: u64) -> Result<Self, TraceError> {
        std::fs::create_dir_all(dir).map_err(io_at(dir))?;
        // Its name in the parent is durable before any file in it is.
        if let Some(parent) = dir.parent() {
            File::open(parent)
                .and_then(|d| d.sync_all())
                .map_err(io_at(parent))?;
        }
        let mut state = State {
            floor,
            ..Default::default()
        };
        for entry in std::fs::read_dir(dir).map_err(io_at(dir))? {
            let entry = entry.map_err(io_at(dir))?;
            let file_name = entry.file_name();
            let name = file_name.to_string_lossy();
            if name.ends_with(".tmp") {
                std::fs::remove_file(entry.path()).map_err(io_at(&entry.path()))?;
                continue;
            }
            let Some(first) = name
                .strip_suffix(".seg")
                .filter(|s| s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            let seg = Segment::open(entry.path(), first)?;
            if seg.last() <= floor {
                // Purged, its deletion cut short by a crash (deleted once the store
                // checked it belongs with these files).
                state.purged.push(entry.path());
                continue;
            }
            state.files.insert(first, seg.last());
        }
        let mut expect = None;
        for (&first, &last) in &state.files {
            if let Some(e) = expect
                && first != e
            {
                return Err(TraceError::Corrupt {
                    key: dir.join(name(e)).display().to_string(),
                    detail: format!(
                        "missing: the sealed segments jump from seq {} to seq {first}",
                        e - 1
                    ),
                });
            }
            expect = Some(last + 1);
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            state: RwLock::new(state),
            open: Mutex::new(HashMap::new()),
        })
    }

    fn state(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // A panic while holding the lock left plain data behind; keep using it.
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn state_mut(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The last seq sealed (0: none).
    pub fn upto(&self) -> u64 {
        self.state().files.last_key_value().map_or(0, |(_, l)| *l)
    }

    /// The purge floor ([`Segments::open`]).
    pub fn floor(&self) -> u64 {
        self.state().floor
    }

    /// The first seq of the first file, if any.
    pub fn first_seq(&self) -> Option<u64> {
        self.state()
            .files
            .first_key_value()
            .map(|(first, _)| *first)
    }

    /// The first seq the next file would start at, if any file was sealed.
    pub fn next_first(&self) -> Option<u64> {
        self.state().files.last_key_value().map(|(_, l)| l + 1)
    }

    /// The last seq of the file holding `seq`, if one does.
    pub fn last_of(&self, seq: u64) -> Option<u64> {
        match self.state().files.range(..=seq).next_back() {
            Some((_, &last)) if seq <= last => Some(last),
            _ => None,
        }
    }

    /// The first seq of the first file starting after `seq`, if any.
    pub fn first_after(&self, seq: u64) -> Option<u64> {
        let st = self.state();
        let from = seq.checked_add(1)?;
        st.files.range(from..).next().map(|(first, _)| *first)
    }

    /// Files and bytes on disk (for reports).
    pub fn usage(&self) -> Result<(u64, u64), TraceError> {
        let firsts: Vec<u64> = self.state().files.keys().copied().collect();
        let mut bytes = 0;
        for first in &firsts {
            let path = self.dir.join(name(*first));
            match std::fs::metadata(&path) {
                Ok(m) => bytes += m.len(),
                // Purged meanwhile.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_at(&path)(e)),
            }
        }
        Ok((firsts.len() as u64, bytes))
    }

    /// The first and last seq of each file, in seq order.
    pub fn files(&self) -> Vec<(u64, u64)> {
        self.state().files.iter().map(|(f, l)| (*f, *l)).collect()
    }

    /// The first and last seq of the file holding `seq`, if one does (purged or not).
    pub fn bounds_of(&self, seq: u64) -> Option<(u64, u64)> {
        match self.state().files.range(..=seq).next_back() {
            Some((&first, &last)) if seq <= last => Some((first, last)),
            _ => None,
        }
    }

    /// Every record of the file starting at `first`, purged ones included (what a purge
    /// of the whole file looks at one last time); empty if there is no such file.
    pub fn whole_file(&self, first: u64) -> Result<Vec<(u64, Vec<u8>)>, TraceError> {
        match self.segment_at(first, false)? {
            Some(s) if s.first == first => s.read_range(first, s.last()),
            _ => Ok(Vec::new()),
        }
    }

    /// The file holding `seq`, if one does and `seq` is not purged.
    fn segment(&self, seq: u64) -> Result<Option<Arc<Segment>>, TraceError> {
        self.segment_at(seq, true)
    }

    /// The file holding `seq`, if one does (and `seq` is not purged, with `hide_purged`).
    fn segment_at(&self, seq: u64, hide_purged: bool) -> Result<Option<Arc<Segment>>, TraceError> {
        let first = {
            let st = self.state();
            if hide_purged && seq <= st.floor {
                return Ok(None);
            }
            match st.files.range(..=seq).next_back() {
                Some((&first, &last)) if seq <= last => first,
                _ => return Ok(None),
            }
        };
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = open.get(&first) {
            return Ok(Some(s.clone()));
        }
        let path = self.dir.join(name(first));
        let seg = match Segment::open(path, first) {
            Ok(s) => Arc::new(s),
            // Deleted by a purge since the look at the state: purged.
            Err(TraceError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                return if seq <= self.floor() {
                    Ok(None)
                } else {
                    Err(TraceError::Io(e))
                };
            }
            Err(e) => return Err(e),
        };
        if open.len() >= OPEN_MAX {
            open.clear();
        }
        // Not kept open if a purge removed it meanwhile.
        if self.state().files.contains_key(&first) {
            open.insert(first, seg.clone());
        }
        Ok(Some(seg))
    }

    /// The stored form of record `seq`, if it is sealed and not purged.
    pub fn get(&self, seq: u64) -> Result<Option<Vec<u8>>, TraceError> {
        match self.segment(seq)? {
            Some(s) => s.read(seq),
            None => Ok(None),
        }
    }

    /// The sealed records from `from` on, up to `to` and to the end of the file holding
    /// `from`, in seq order (empty: `from` is not sealed). Purged ones are left out.
    pub fn read_from(&self, from: u64, to: u64) -> Result<Vec<(u64, Vec<u8>)>, TraceError> {
        let from = from.max(self.floor().saturating_add(1));
        match self.segment(from)? {
            Some(s) => s.read_range(from, to),
            None => Ok(Vec::new()),
        }
    }

    /// Writes the file of seqs `first ..= last` holding `records` (in seq order, within
    /// that range; a seq without a record gets an empty slot), durable and named when
    /// this returns. It must continue the run: `first` is [`Segments::next_first`] when
    /// there is one.
    pub fn seal(&self, first: u64, last: u64, records: &[(u64, &[u8])]) -> Result<(), TraceError> {
        let wrong = |detail: String| TraceError::Corrupt {
            key: self.dir.join(name(first)).display().to_string(),
            detail,
        };
        if let Some(next) = self.next_first()
            && next != first
        {
            return Err(wrong(format!(
                "would not continue the run, which ends at {}",
                next - 1
            )));
        }
        let n = last
            .checked_sub(first)
            .and_then(|d| u32::try_from(d + 1).ok())
            .ok_or_else(|| wrong(format!("no segment from {first} to {last}")))?;
        let mut table = Vec::with_capacity(4 * n as usize);
        let mut data = Vec::new();
        let mut recs = records.iter().peekable();
        for seq in first..=last {
            if let Some((s, v)) = recs.peek()
                && *s == seq
            {
                data.extend_from_slice(v);
                recs.next();
            }
            let end =
                u32::try_from(data.len()).map_err(|_| wrong("over 4 GiB of records".into()))?;
            table.extend_from_slice(&end.to_be_bytes());
        }
        if let Some((s, _)) = recs.next() {
            return Err(wrong(format!("record {s} is out of order or out of range")));
        }
        // Deflated in blocks of BLOCK_SLOTS slots.
        let ends = be32(&table);
        let mut packed = Vec::with_capacity(data.len() / 2);
        let mut blocks = Vec::new();
        for (b, slots) in ends.chunks(BLOCK_SLOTS as usize).enumerate() {
            let u0 = if b == 0 {
                0
            } else {
                ends[b * BLOCK_SLOTS as usize - 1]
            };
            // `chunks` gives no empty chunk.
            let u1 = slots[slots.len() - 1];
            if (u1 - u0) as usize > MAX_BLOCK {
                return Err(wrong(format!(
                    "block {b} would hold {} bytes, more than a reader takes",
                    u1 - u0
                )));
            }
            packed.extend(miniz_oxide::deflate::compress_to_vec(
                &data[u0 as usize..u1 as usize],
                LEVEL,
            ));
            let end =
                u32::try_from(packed.len()).map_err(|_| wrong("over 4 GiB of records".into()))?;
            blocks.extend_from_slice(&end.to_be_bytes());
        }
        let path = self.dir.join(name(first));
        let tmp = self.dir.join(format!("{}.tmp", name(first)));
        let mut head = Vec::with_capacity(HEADER as usize);
        head.extend_from_slice(MAGIC);
        head.extend_from_slice(&first.to_be_bytes());
        head.extend_from_slice(&n.to_be_bytes());
        head.extend_from_slice(&BLOCK_SLOTS.to_be_bytes());
        let written = File::create(&tmp).and_then(|mut f| {
            f.write_all(&head)?;
            f.write_all(&table)?;
            f.write_all(&blocks)?;
            f.write_all(&packed)?;
            f.sync_all()
        });
        if let Err(e) = written {
            // Best effort: open removes temporary files anyway.
            drop(std::fs::remove_file(&tmp));
            return Err(io_at(&tmp)(e));
        }
        std::fs::rename(&tmp, &path).map_err(io_at(&path))?;
        self.sync_dir()?;
        self.state_mut().files.insert(first, last);
        Ok(())
    }

    fn sync_dir(&self) -> Result<(), TraceError> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_at(&self.dir))
    }

    /// Records at or below `floor` are purged: they are no longer returned, and the
    /// files holding nothing else are deleted.
    pub fn purge_through(&self, floor: u64) -> Result<(), TraceError> {
        let (gone, stale) = {
            let mut st = self.state_mut();
            st.floor = st.floor.max(floor);
            let stale = std::mem::take(&mut st.purged);
            let gone: Vec<u64> = st
                .files
                .iter()
                .take_while(|(_, last)| **last <= floor)
                .map(|(first, _)| *first)
                .collect();
            for first in &gone {
                st.files.remove(first);
            }
            (gone, stale)
        };
        if gone.is_empty() && stale.is_empty() {
            return Ok(());
        }
        {
            let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
            for first in &gone {
                open.remove(first);
            }
        }
        for path in gone
            .iter()
            .map(|first| self.dir.join(name(*first)))
            .chain(stale)
        {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_at(&path)(e)),
            }
        }
        self.sync_dir()
    }

    /// Deletes every sealed file in `dir` (a store being overwritten by a copy).
    pub fn clear(dir: &Path) -> Result<(), TraceError> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_at(dir)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io_at(dir))?;
            let n = entry.file_name();
            let n = n.to_string_lossy();
            if n.ends_with(".seg") || n.ends_with(".tmp") {
                std::fs::remove_file(entry.path()).map_err(io_at(&entry.path()))?;
            }
        }
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_at(dir))
    }

    /// Whether `dir` holds any sealed file.
    pub fn present(dir: &Path) -> bool {
        std::fs::read_dir(dir).is_ok_and(|mut d| {
            d.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".seg")))
        })
    }
}

#[cfg(test)]
mod store_tests;
#[cfg(test)]
mod tests;
