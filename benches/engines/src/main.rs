//! What pecd's committer writes for one accepted message on one hop (the acceptance receipt
//! delivered to the sender's INBOX, two security-archive copies, the envelope queued and
//! later relayed, four trace records: the gets, inserts and removes per tree counted in
//! pecd's own transactions during `cargo bench --bench one_hop`), replayed on three
//! embedded engines: groups of `G` messages (default 20) in one atomic transaction over
//! ten trees, durable before the next group starts, as pecd's group commit does. Values are
//! incompressible filler of the sizes pecd writes (no JSON). A run on a map in memory
//! (`none`) measures the bench's own CPU, subtracted to give each engine's own. Then
//! reads as the protocols make them: point reads and scans of 50 message records.
//!
//! Prints, per engine, process CPU time (user + system, every thread, from
//! `/proc/self/stat`) and wall time per message, and the bytes the engine's files take on
//! disk per message. `ENG_GROUPS` groups (default 500) in a temporary directory; an
//! argument `sled`, `redb` or `fjall` runs that engine only (and `none`), so that each
//! engine's background threads can be kept to a process of their own.

use redb::ReadableTable;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

const TREES: [&str; 10] = [
    "meta",
    "mailboxes",
    "folders",
    "messages",
    "blobrefs",
    "queue",
    "queue_due",
    "trace",
    "changelog",
    "email_index",
];
const META: usize = 0;
const MAILBOXES: usize = 1;
const FOLDERS: usize = 2;
const MESSAGES: usize = 3;
const BLOBREFS: usize = 4;
const QUEUE: usize = 5;
const QUEUE_DUE: usize = 6;
const TRACE: usize = 7;
const CHANGELOG: usize = 8;
const EMAIL_INDEX: usize = 9;

/// What a backend does inside one transaction.
trait Tx {
    fn get(&mut self, t: usize, k: &[u8]) -> Option<Vec<u8>>;
    fn put(&mut self, t: usize, k: &[u8], v: &[u8]);
    fn del(&mut self, t: usize, k: &[u8]);
}

fn sha(n: u64, salt: u8) -> [u8; 32] {
    // Not a hash: distinct, spread keys are all that matters here.
    let mut out = [0u8; 32];
    let mut x = n.wrapping_mul(0x9E3779B97F4A7C15) ^ (salt as u64).wrapping_mul(0xD6E8FEB86659FD93);
    for c in out.chunks_mut(8) {
        x ^= x >> 29;
        x = x.wrapping_mul(0xBF58476D1CE4E5B9);
        x ^= x >> 32;
        c.copy_from_slice(&x.to_le_bytes());
    }
    out
}

/// `len` bytes of filler that does not compress (fjall compresses its tables with lz4;
/// pecd's JSON would compress some, sled stores it as it is).
fn pad(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// One message's acceptance, as the committer applies it.
fn accept(tx: &mut dyn Tx, m: u64, seq: &mut u64) {
    let _ = tx.get(META, b"schema");
    let mbox = b"mailbox:a@pec.bench.test".to_vec();
    let receipt = sha(m, 1);
    let envelope = sha(m, 2);
    // Three deliveries: receipt to INBOX, receipt and envelope to the archive.
    for (i, (folder, blob)) in [
        ("INBOX", receipt),
        ("Archivio/Ricevuti", receipt),
        ("Archivio/Inviati", envelope),
    ]
    .iter()
    .enumerate()
    {
        let rec = tx.get(MAILBOXES, &mbox).unwrap_or_else(|| pad(420, 1));
        let mut rec = rec;
        rec[0] = rec[0].wrapping_add(1);
        tx.put(MAILBOXES, &mbox, &rec);
        let fk = format!("folder:a@pec.bench.test/{folder}").into_bytes();
        // A new folder's next uid is 1 (its first four bytes; the reads below need it).
        let f = tx.get(FOLDERS, &fk).unwrap_or_else(|| {
            let mut f = pad(160, 2);
            f[..4].fill(0);
            f
        });
        let uid = u32::from_be_bytes([f[0], f[1], f[2], f[3]]).wrapping_add(1);
        let mut f = f;
        f[..4].copy_from_slice(&uid.to_be_bytes());
        tx.put(FOLDERS, &fk, &f);
        let mut mk = fk.clone();
        mk.extend_from_slice(&uid.to_be_bytes());
        tx.put(MESSAGES, &mk, &pad(340, m + i as u64));
        let mut bk = vec![b'b'];
        bk.extend_from_slice(blob);
        let n = tx
            .get(BLOBREFS, &bk)
            .map_or(0, |v| u64::from_be_bytes(v[..8].try_into().unwrap()));
        tx.put(BLOBREFS, &bk, &(n + 1).to_be_bytes());
        if i == 0 {
            let ck = b"modseq:a@pec.bench.test".to_vec();
            let ms = tx
                .get(CHANGELOG, &ck)
                .map_or(0, |v| u64::from_be_bytes(v[..8].try_into().unwrap()))
                + 1;
            tx.put(CHANGELOG, &ck, &ms.to_be_bytes());
            let mut lk = b"log:a@pec.bench.test:".to_vec();
            lk.extend_from_slice(&ms.to_be_bytes());
            tx.put(CHANGELOG, &lk, &pad(110, ms));
            let ek = b"emails:a@pec.bench.test".to_vec();
            let e = tx.get(EMAIL_INDEX, &ek).unwrap_or_else(|| vec![0; 8]);
            let mut ik = b"email:".to_vec();
            ik.extend_from_slice(&receipt[..12]);
            tx.put(EMAIL_INDEX, &ik, &e[..8]);
        }
    }
    // The envelope queued (relayed in a later group: `relayed`).
    let mut blob_env = vec![b'b'];
    blob_env.extend_from_slice(&envelope);
    let n = tx
        .get(BLOBREFS, &blob_env)
        .map_or(0, |v| u64::from_be_bytes(v[..8].try_into().unwrap()));
    tx.put(BLOBREFS, &blob_env, &(n + 1).to_be_bytes());
    let mut bk = vec![b'b'];
    bk.extend_from_slice(&receipt);
    let n = tx
        .get(BLOBREFS, &bk)
        .map_or(0, |v| u64::from_be_bytes(v[..8].try_into().unwrap()));
    tx.put(BLOBREFS, &bk, &(n + 1).to_be_bytes());
    tx.put(QUEUE, &m.to_be_bytes(), &pad(300, m));
    let mut due = 1_700_000_000_000u64.to_be_bytes().to_vec();
    due.extend_from_slice(&m.to_be_bytes());
    tx.put(QUEUE_DUE, &due, &[]);
    for _ in 0..3 {
        *seq += 1;
        tx.put(TRACE, &seq.to_be_bytes(), &pad(250, *seq));
    }
}

/// The relay's outcome for message `m`: done, and its trace record.
fn relayed(tx: &mut dyn Tx, m: u64, seq: &mut u64) {
    let _ = tx.get(QUEUE, &m.to_be_bytes());
    tx.del(QUEUE, &m.to_be_bytes());
    let mut due = 1_700_000_000_000u64.to_be_bytes().to_vec();
    due.extend_from_slice(&m.to_be_bytes());
    tx.del(QUEUE_DUE, &due);
    *seq += 1;
    tx.put(TRACE, &seq.to_be_bytes(), &pad(250, *seq));
}

/// Runs `groups` groups of `g` messages (acceptances of this group, relays of the previous
/// one) through `commit`, which applies the closure in one durable transaction, then
/// `settle` (work an engine leaves for later that it must do anyway: fjall's memtables
/// written out), both timed. Returns the CPU seconds per message.
fn run(
    name: &str,
    dir: &Path,
    groups: u64,
    g: u64,
    mut commit: impl FnMut(&mut dyn FnMut(&mut dyn Tx)),
    settle: impl FnOnce(),
) -> f64 {
    let (t0, c0) = (Instant::now(), cpu());
    let mut seq = 0u64;
    for grp in 0..groups {
        let mut seq2 = seq;
        commit(&mut |tx: &mut dyn Tx| {
            seq2 = seq;
            for i in 0..g {
                accept(tx, grp * g + i, &mut seq2);
            }
            if grp > 0 {
                for i in 0..g {
                    relayed(tx, (grp - 1) * g + i, &mut seq2);
                }
            }
        });
        seq = seq2;
    }
    settle();
    let n = (groups * g) as f64;
    let (wall, cpu) = (t0.elapsed().as_secs_f64(), cpu() - c0);
    println!(
        "{name:6} {:.0} messages in groups of {g}: CPU {:.1} µs/message, wall {:.1} µs/message, on disk {:.1} KB/message",
        n,
        cpu / n * 1e6,
        wall / n * 1e6,
        du(dir) as f64 / n / 1024.0
    );
    cpu / n
}

/// Reads as the protocols do them once `messages` messages are stored: point reads of
/// message records at random (a FETCH, a JMAP `Email/get`) and scans of 50 records from a
/// random uid (a listing), on one thread; CPU per read.
trait Reader {
    fn get(&self, t: usize, k: &[u8]) -> Option<usize>;
    /// How many of the `n` records from `from` it read.
    fn scan(&self, t: usize, from: &[u8], n: usize) -> usize;
}

fn reads(name: &str, r: &dyn Reader, messages: u64) {
    let folders = ["INBOX", "Archivio/Ricevuti", "Archivio/Inviati"];
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut key = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let mut k = format!("folder:a@pec.bench.test/{}", folders[(x % 3) as usize]).into_bytes();
        k.extend_from_slice(&((((x >> 8) % messages) + 1) as u32).to_be_bytes());
        k
    };
    let (gets, scans) = (200_000u32, 20_000u32);
    let c0 = cpu();
    for _ in 0..gets {
        assert!(
            r.get(MESSAGES, &key()).is_some(),
            "{name}: a stored record is missing"
        );
    }
    let c1 = cpu();
    let mut n = 0;
    for _ in 0..scans {
        n += r.scan(MESSAGES, &key(), 50);
    }
    let c2 = cpu();
    assert!(n > 0);
    println!(
        "{name:6} reads: {:.2} µs per point read, {:.1} µs per scan of 50 (CPU)",
        (c1 - c0) / gets as f64 * 1e6,
        (c2 - c1) / scans as f64 * 1e6
    );
}

/// User + system seconds of this process (every thread), in clock ticks of 1/100 s
/// (`USER_HZ`, which Linux keeps at 100 in what it shows to processes).
fn cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // The fields after the command name (which is in parentheses and may hold spaces):
    // utime and stime are the 12th and 13th of them.
    let after = &stat[stat.rfind(')').expect("a command name") + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    let ticks = |i: usize| f[i].parse::<f64>().expect("a number of ticks");
    (ticks(11) + ticks(12)) / 100.0
}

fn du(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut n = 0;
    for e in std::fs::read_dir(p).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        n += if m.is_dir() {
            du(&e.path())
        } else {
            m.blocks() * 512
        };
    }
    n
}

// ---- sled, as pecd uses it: a multi-tree transaction, then flush + fdatasync.
struct SledTx<'a>(&'a [sled::transaction::TransactionalTree]);
impl Tx for SledTx<'_> {
    fn get(&mut self, t: usize, k: &[u8]) -> Option<Vec<u8>> {
        self.0[t].get(k).unwrap().map(|v| v.to_vec())
    }
    fn put(&mut self, t: usize, k: &[u8], v: &[u8]) {
        self.0[t].insert(k, v).unwrap();
    }
    fn del(&mut self, t: usize, k: &[u8]) {
        self.0[t].remove(k).unwrap();
    }
}

fn sled_run(dir: &Path, groups: u64, g: u64) -> f64 {
    use sled::Transactional;
    // As pecd opens it (`src/store/engine.rs`): 8 MiB log segments, a 256 MiB cache.
    let db = sled::Config::new()
        .path(dir)
        .segment_size(8 << 20)
        .cache_capacity(256 << 20)
        .open()
        .unwrap();
    let trees: Vec<sled::Tree> = TREES.iter().map(|n| db.open_tree(n).unwrap()).collect();
    let file = std::fs::File::open(dir.join("db")).unwrap();
    // One thread: no conflict can make sled run the closure again (the `unwrap`s in
    // `SledTx` would stop the bench if one did).
    let cpu = run(
        "sled",
        dir,
        groups,
        g,
        |f| {
            let f = RefCell::new(f);
            trees[..]
                .transaction(|t| {
                    (f.borrow_mut())(&mut SledTx(t));
                    Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
                })
                .unwrap();
            db.flush().unwrap();
            file.sync_data().unwrap();
        },
        || {},
    );
    reads("sled", &SledRead(&trees), groups * g);
    cpu
}

struct SledRead<'a>(&'a [sled::Tree]);
impl Reader for SledRead<'_> {
    fn get(&self, t: usize, k: &[u8]) -> Option<usize> {
        self.0[t].get(k).unwrap().map(|v| v.len())
    }
    fn scan(&self, t: usize, from: &[u8], n: usize) -> usize {
        self.0[t]
            .range(from..)
            .take(n)
            .map(|kv| kv.unwrap().1.len().min(1))
            .sum()
    }
}

// ---- redb: one write transaction, Durability::Immediate (its own fsyncs).
const RT: [redb::TableDefinition<&[u8], &[u8]>; 10] = [
    redb::TableDefinition::new("meta"),
    redb::TableDefinition::new("mailboxes"),
    redb::TableDefinition::new("folders"),
    redb::TableDefinition::new("messages"),
    redb::TableDefinition::new("blobrefs"),
    redb::TableDefinition::new("queue"),
    redb::TableDefinition::new("queue_due"),
    redb::TableDefinition::new("trace"),
    redb::TableDefinition::new("changelog"),
    redb::TableDefinition::new("email_index"),
];
struct RedbTx<'a>(Vec<redb::Table<'a, &'static [u8], &'static [u8]>>);
impl Tx for RedbTx<'_> {
    fn get(&mut self, t: usize, k: &[u8]) -> Option<Vec<u8>> {
        self.0[t].get(k).unwrap().map(|v| v.value().to_vec())
    }
    fn put(&mut self, t: usize, k: &[u8], v: &[u8]) {
        self.0[t].insert(k, v).unwrap();
    }
    fn del(&mut self, t: usize, k: &[u8]) {
        self.0[t].remove(k).unwrap();
    }
}

fn redb_run(dir: &Path, groups: u64, g: u64) -> f64 {
    std::fs::create_dir_all(dir).unwrap();
    let db = redb::Database::create(dir.join("store.redb")).unwrap();
    let cpu = run(
        "redb",
        dir,
        groups,
        g,
        |f| {
            let w = db.begin_write().unwrap();
            {
                let tables = RT.iter().map(|d| w.open_table(*d).unwrap()).collect();
                f(&mut RedbTx(tables));
            }
            w.commit().unwrap();
        },
        || {},
    );
    reads("redb", &RedbRead(&db), groups * g);
    cpu
}

struct RedbRead<'a>(&'a redb::Database);
impl Reader for RedbRead<'_> {
    fn get(&self, t: usize, k: &[u8]) -> Option<usize> {
        let r = self.0.begin_read().unwrap();
        let table = r.open_table(RT[t]).unwrap();
        table.get(k).unwrap().map(|v| v.value().len())
    }
    fn scan(&self, t: usize, from: &[u8], n: usize) -> usize {
        let r = self.0.begin_read().unwrap();
        let table = r.open_table(RT[t]).unwrap();
        table
            .range(from..)
            .unwrap()
            .take(n)
            .map(|kv| kv.unwrap().1.value().len().min(1))
            .sum()
    }
}

// ---- fjall: a cross-partition batch (reads see the group's own writes through an
// overlay, as a committer on it would keep), then persist(SyncData).
struct FjallTx<'a> {
    parts: &'a [fjall::PartitionHandle],
    overlay: BTreeMap<(usize, Vec<u8>), Option<Vec<u8>>>,
}
impl Tx for FjallTx<'_> {
    fn get(&mut self, t: usize, k: &[u8]) -> Option<Vec<u8>> {
        if let Some(v) = self.overlay.get(&(t, k.to_vec())) {
            return v.clone();
        }
        self.parts[t].get(k).unwrap().map(|v| v.to_vec())
    }
    fn put(&mut self, t: usize, k: &[u8], v: &[u8]) {
        self.overlay.insert((t, k.to_vec()), Some(v.to_vec()));
    }
    fn del(&mut self, t: usize, k: &[u8]) {
        self.overlay.insert((t, k.to_vec()), None);
    }
}

fn fjall_run(dir: &Path, groups: u64, g: u64) -> f64 {
    let ks = fjall::Config::new(dir).open().unwrap();
    let parts: Vec<_> = TREES
        .iter()
        .map(|n| {
            ks.open_partition(n, fjall::PartitionCreateOptions::default())
                .unwrap()
        })
        .collect();
    let cpu = run(
        "fjall",
        dir,
        groups,
        g,
        |f| {
            let mut tx = FjallTx {
                parts: &parts,
                overlay: BTreeMap::new(),
            };
            f(&mut tx);
            let mut b = ks.batch();
            for ((t, k), v) in tx.overlay {
                match v {
                    Some(v) => b.insert(&parts[t], k, v),
                    None => b.remove(&parts[t], k),
                }
            }
            b.commit().unwrap();
            ks.persist(fjall::PersistMode::SyncData).unwrap();
        },
        || {
            // What is still only in the journal and the memtables, written out as tables
            // (counted; compactions it starts may still run after).
            for p in &parts {
                p.rotate_memtable_and_wait().unwrap();
            }
        },
    );
    reads("fjall", &FjallRead(&parts), groups * g);
    cpu
}

struct FjallRead<'a>(&'a [fjall::PartitionHandle]);
impl Reader for FjallRead<'_> {
    fn get(&self, t: usize, k: &[u8]) -> Option<usize> {
        self.0[t].get(k).unwrap().map(|v| v.len())
    }
    fn scan(&self, t: usize, from: &[u8], n: usize) -> usize {
        self.0[t]
            .range(from.to_vec()..)
            .take(n)
            .map(|kv| kv.unwrap().1.len().min(1))
            .sum()
    }
}

/// No engine: the same reads and writes on a map in memory, nothing durable. Its CPU is
/// the bench's own (filler, keys, the closures), which the others' figures include.
struct MemTx<'a>(&'a mut BTreeMap<(usize, Vec<u8>), Vec<u8>>);
impl Tx for MemTx<'_> {
    fn get(&mut self, t: usize, k: &[u8]) -> Option<Vec<u8>> {
        self.0.get(&(t, k.to_vec())).cloned()
    }
    fn put(&mut self, t: usize, k: &[u8], v: &[u8]) {
        self.0.insert((t, k.to_vec()), v.to_vec());
    }
    fn del(&mut self, t: usize, k: &[u8]) {
        self.0.remove(&(t, k.to_vec()));
    }
}

fn memory_run(dir: &Path, groups: u64, g: u64) -> f64 {
    std::fs::create_dir_all(dir).unwrap();
    let mut map = BTreeMap::new();
    let cpu = run("none", dir, groups, g, |f| f(&mut MemTx(&mut map)), || {});
    reads("none", &MemRead(&map), groups * g);
    cpu
}

struct MemRead<'a>(&'a BTreeMap<(usize, Vec<u8>), Vec<u8>>);
impl Reader for MemRead<'_> {
    fn get(&self, t: usize, k: &[u8]) -> Option<usize> {
        self.0.get(&(t, k.to_vec())).map(Vec::len)
    }
    fn scan(&self, t: usize, from: &[u8], n: usize) -> usize {
        self.0
            .range((t, from.to_vec())..)
            .take_while(|((u, _), _)| *u == t)
            .take(n)
            .map(|(_, v)| v.len().min(1))
            .sum()
    }
}

fn main() {
    let groups: u64 = std::env::var("ENG_GROUPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let g: u64 = std::env::var("G")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let base = std::env::temp_dir().join(format!("pecd-engines-{}", std::process::id()));
    let which = std::env::args().nth(1).unwrap_or_else(|| "all".into());
    let none = memory_run(&base.join("none"), groups, g);
    for e in ["sled", "redb", "fjall"] {
        if which != "all" && which != e {
            continue;
        }
        let d = base.join(e);
        let cpu = match e {
            "sled" => sled_run(&d, groups, g),
            "redb" => redb_run(&d, groups, g),
            _ => fjall_run(&d, groups, g),
        };
        println!(
            "       the engine's own: {:.1} µs/message",
            (cpu - none) * 1e6
        );
        std::fs::remove_dir_all(&d).ok();
    }
    std::fs::remove_dir_all(&base).ok();
}
