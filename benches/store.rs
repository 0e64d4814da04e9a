//! Store benchmark (plain `harness = false`): commits per second for small messages with
//! 1, 16 and 128 concurrent writers, with and without group commit, on sled and, in the
//! same run, on PostgreSQL (a cluster of the bench's own, started with Debian's initdb and
//! pg_ctl; skipped with a printed reason when PostgreSQL is not installed), with the
//! metadata and WAL bytes each message costs there; on PostgreSQL also with
//! `several_writers`, the writing threads spread over one and over two stores (nodes) on
//! one database; then the time of a Message-ID query
//! on a trace log of `PECD_BENCH_RECORDS` records (default 10 000 000; on PostgreSQL
//! `PECD_BENCH_PG_RECORDS`, default 1 000 000), built with large batches.
//!
//! `cargo bench --bench store` — knobs: `PECD_BENCH_RECORDS` and `PECD_BENCH_PG_RECORDS`
//! (0: no query runs), `PECD_BENCH_SECS` (seconds per commit run, default 3; 0: the
//! queries only), `PECD_BENCH_BATCH` (records per commit when building the log, default
//! 1000), `PECD_BENCH_DIR` (where to put the stores, default `target/tmp/bench-stores`,
//! see `common/scratch.rs`).

#[path = "common/pg.rs"]
mod pg;
#[path = "common/scratch.rs"]
mod scratch;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pecd::pec::address::PecAddress;
use pecd::store::mailbox::Password;
use pecd::store::{Batch, Delivery, NewMailbox, PgOptions, Store, StoreBackend, StoreOptions};
use pecd::trace::{EventKind, TraceEvent, TraceQuery};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Where a bench store's metadata goes: sled, or a fresh schema of the bench's cluster.
enum Engine {
    Sled,
    Pg(&'static pg::PgCluster),
    /// `several_writers`, with this many stores (nodes) on one schema.
    PgSeveral(&'static pg::PgCluster, usize),
}

impl Engine {
    /// Opens a new store; for PostgreSQL also returns its schema.
    fn open(&self, dir: &std::path::Path, group: bool) -> (Store, Option<String>) {
        let (mut stores, schema) = self.open_nodes(dir, group);
        (stores.remove(0), schema)
    }

    /// Opens a new store (with several writers, one per node, each in a directory of
    /// its own under `dir`); for PostgreSQL also returns its schema.
    fn open_nodes(&self, dir: &std::path::Path, group: bool) -> (Vec<Store>, Option<String>) {
        let (backend, schema, nodes) = match self {
            Engine::Sled => (StoreBackend::Sled, None, 1),
            Engine::Pg(c) | Engine::PgSeveral(c, _) => {
                let schema = pg::new_schema(c);
                let nodes = match self {
                    Engine::PgSeveral(_, n) => *n,
                    _ => 1,
                };
                (
                    StoreBackend::Postgres(PgOptions {
                        url: pg::url(c, &schema),
                        password: None,
                        pool_size: 8,
                        ca_file: None,
                        several_writers: matches!(self, Engine::PgSeveral(..)),
                    }),
                    Some(schema),
                    nodes,
                )
            }
        };
        let stores = (0..nodes)
            .map(|i| {
                Store::open(
                    dir.join(format!("node{i}")),
                    StoreOptions {
                        group_commit: group,
                        backend: backend.clone(),
                        ..StoreOptions::default()
                    },
                )
                .expect("open")
            })
            .collect();
        (stores, schema)
    }
}

fn commits(engine: &Engine, group: bool, writers: u64, secs: u64) -> f64 {
    let dir = scratch::tempdir();
    let (stores, schema) = engine.open_nodes(dir.path(), group);
    let store = stores[0].clone();
    let a = PecAddress::parse("bench@example.it").expect("address");
    store
        .add_mailbox(NewMailbox {
            address: a.clone(),
            password: Password::new("x"),
            quota_bytes: Some(u64::MAX / 2),
            options: Default::default(),
            provisional: false,
        })
        .expect("mailbox");
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            // Writer w commits through node w mod the number of nodes.
            let store = stores[w as usize % stores.len()].clone();
            let (a, stop, done) = (a.clone(), stop.clone(), done.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let body = format!(
                        "Message-ID: <{w}.{n}@bench>\r\nSubject: small\r\n\r\n{}\r\n",
                        "x".repeat(2000)
                    );
                    let blob = store.blobs().put(body.as_bytes()).expect("blob");
                    let now = jiff::Timestamp::now();
                    store
                        .commit(
                            Batch::new()
                                .claim(format!("d:{w}.{n}"))
                                .deliver(Delivery::inbox(a.clone(), blob, now))
                                .trace(
                                    TraceEvent::new(EventKind::Delivered, now)
                                        .msgid(format!("{w}.{n}@bench"))
                                        .recipient("bench@example.it"),
                                )
                                .trace(
                                    TraceEvent::new(EventKind::DeliveryReceiptSent, now)
                                        .msgid(format!("{w}.{n}@bench")),
                                ),
                        )
                        .expect("commit");
                    n += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let wal0 = match engine {
        Engine::Pg(c) | Engine::PgSeveral(c, _) => Some(pg::wal_bytes(c)),
        Engine::Sled => None,
    };
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().expect("writer");
    }
    let n = done.load(Ordering::Relaxed);
    let rate = n as f64 / start.elapsed().as_secs_f64();
    if let (Engine::Pg(c) | Engine::PgSeveral(c, _), Some(schema), Some(wal0)) =
        (engine, &schema, wal0)
    {
        let wal = pg::wal_bytes(c) - wal0;
        let table = pg::store_bytes(c, schema);
        println!(
            "    PostgreSQL: {:.0} bytes of table and indexes and {:.0} bytes of WAL per message",
            table as f64 / n.max(1) as f64,
            wal as f64 / n.max(1) as f64
        );
    }
    rate
}

fn query_bench(engine: &Engine, n: u64) {
    // `PECD_BENCH_RECORDS=0`: the commit runs only.
    if n == 0 {
        return;
    }
    let dir = scratch::tempdir();
    let (store, _) = engine.open(dir.path(), true);
    let t = Instant::now();
    let batch_size = env_u64("PECD_BENCH_BATCH", 1_000);
    let t0: jiff::Timestamp = "2024-01-01T00:00:00Z".parse().expect("time");
    let mut i = 0;
    while i < n {
        let mut b = Batch::new();
        for j in i..(i + batch_size).min(n) {
            let at = t0 + jiff::SignedDuration::from_secs(j as i64);
            b = b.trace(
                TraceEvent::new(EventKind::Delivered, at)
                    .msgid(format!("{j}@client.example"))
                    .ident(format!("opec{j}.20240101@pec.example.it"))
                    .sender(format!("user{}@example.it", j % 1000))
                    .recipient(format!("dest{}@other.it", j % 5000))
                    .subject("Invio fattura")
                    .message_bytes(&j.to_be_bytes()),
            );
        }
        store.commit(b).expect("commit");
        i += batch_size;
        if i % 1_000_000 == 0 {
            eprintln!("  built {i} records in {:.1?}", t.elapsed());
        }
    }
    let build = t.elapsed();
    let disk = fs_size(dir.path());
    println!(
        "trace log of {n} records built in {build:.1?} ({:.0} records/s), {:.1} MiB in the store's directory",
        n as f64 / build.as_secs_f64(),
        disk as f64 / 1048576.0
    );
    let log = store.trace();
    let mut worst = Duration::ZERO;
    let mut total = Duration::ZERO;
    let probes = 1000u64;
    let mut x = 0x2545F4914F6CDD1Du64;
    for _ in 0..probes {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let id = format!("{}@client.example", x % n);
        let q = Instant::now();
        let r = log
            .query(&TraceQuery {
                msgid: Some(id),
                ..Default::default()
            })
            .expect("query");
        let el = q.elapsed();
        assert_eq!(r.len(), 1);
        total += el;
        worst = worst.max(el);
    }
    println!(
        "Message-ID query over {n} records: mean {:.1?}, max {:.1?} ({probes} random probes)",
        total / probes as u32,
        worst
    );
    let q = Instant::now();
    let r = log
        .query(&TraceQuery {
            mailbox: Some("dest42@other.it".into()),
            limit: Some(100),
            ..Default::default()
        })
        .expect("query");
    println!(
        "mailbox query (first {} of {}): {:.1?}",
        r.len(),
        n / 5000,
        q.elapsed()
    );
}

fn fs_size(p: &std::path::Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let m = match e.metadata() {
                Ok(m) => m,
                Err(_) => continue,
            };
            total += if m.is_dir() {
                fs_size(&e.path())
            } else {
                m.len()
            };
        }
    }
    total
}

fn main() {
    bench();
    // The cluster a PostgreSQL run started (statics are never dropped).
    pg::shutdown();
}

fn bench() {
    // `cargo bench` passes `--bench`; ignore arguments.
    let secs = env_u64("PECD_BENCH_SECS", 3);
    let n = env_u64("PECD_BENCH_RECORDS", 10_000_000);
    let n_pg = env_u64("PECD_BENCH_PG_RECORDS", 1_000_000);
    let mut engines = vec![("sled", Engine::Sled)];
    let mut several = Vec::new();
    if let Some(c) = pg::cluster() {
        engines.push(("postgres", Engine::Pg(c)));
        several.push(("postgres several_writers, 1 node", Engine::PgSeveral(c, 1)));
        several.push(("postgres several_writers, 2 nodes", Engine::PgSeveral(c, 2)));
    }
    println!(
        "commits/s, small messages (2 KB, one blob + deliver + 2 trace records + claim each), {secs} s per run:"
    );
    for (name, engine) in &engines {
        for group in [true, false].into_iter().filter(|_| secs > 0) {
            for writers in [1, 16, 128] {
                let r = commits(engine, group, writers, secs);
                println!(
                    "  {name:<8} group_commit={group:<5} writers={writers:<3} {r:>8.0} commits/s"
                );
            }
        }
    }
    for (name, engine) in several.iter().filter(|_| secs > 0) {
        for writers in [1, 16, 128] {
            let r = commits(engine, true, writers, secs);
            println!("  {name}: group_commit=true  writers={writers:<3} {r:>8.0} commits/s");
        }
    }
    for (name, engine) in &engines {
        println!("{name}:");
        query_bench(
            engine,
            if matches!(engine, Engine::Pg(_)) {
                n_pg
            } else {
                n
            },
        );
    }
}
