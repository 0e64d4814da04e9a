//! PostgreSQL for the benches: a cluster of the bench's own (the library's test fixture,
//! `src/store/kv/pg_cluster.rs`: Debian's initdb and pg_ctl in a temporary directory, on
//! loopback), a schema per store, and the WAL and table sizes for the per-message figures.
#![allow(dead_code)]

#[path = "../../src/store/kv/pg_cluster.rs"]
mod pg_cluster;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

pub use pg_cluster::PgCluster;

/// The process's cluster, once started.
static C: OnceLock<Option<PgCluster>> = OnceLock::new();

/// The process's cluster, started at the first call (`None`, printed, when PostgreSQL
/// cannot run here). [`shutdown`] stops it: a static is never dropped.
pub fn cluster() -> Option<&'static PgCluster> {
    C.get_or_init(|| match PgCluster::start() {
        Ok(c) => Some(c),
        Err(e) => {
            println!("PostgreSQL runs skipped: {e}");
            None
        }
    })
    .as_ref()
}

/// Stops the process's cluster, if one was started, and removes its directory (the end of
/// a bench's `main`; a bench that panics leaves it running).
pub fn shutdown() {
    if let Some(Some(c)) = C.get() {
        if let Err(e) = c.stop() {
            println!("stopping the bench's PostgreSQL: {e}");
        }
        // Best effort: a directory left in the temp dir is only disk space.
        let _ = std::fs::remove_dir_all(c.dir());
    }
}

/// Whether the benches of this run keep their metadata in PostgreSQL
/// (`PECD_BENCH_STORE=postgres`).
pub fn wanted() -> bool {
    std::env::var("PECD_BENCH_STORE").is_ok_and(|v| v == "postgres")
}

/// Runs `sql` on the cluster with a connection of its own; the first column of the
/// first row, as an integer.
pub fn query(url: &str, sql: &str) -> Option<i64> {
    let (url, sql) = (url.to_string(), sql.to_string());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // On a thread of its own: the caller may be inside a runtime.
    std::thread::spawn(move || {
        rt.block_on(async move {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .expect("connect");
            tokio::spawn(conn);
            let rows = client.simple_query(&sql).await.expect(&sql);
            rows.into_iter().find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).and_then(|v| v.parse().ok()),
                _ => None,
            })
        })
    })
    .join()
    .expect("query thread")
}

static N: AtomicU64 = AtomicU64::new(0);

/// The schemas [`new_schema`] made so far.
pub fn schemas() -> Vec<String> {
    (0..N.load(Ordering::Relaxed))
        .map(|i| format!("bench{i}"))
        .collect()
}

/// A new schema on `c`; its name.
pub fn new_schema(c: &PgCluster) -> String {
    let schema = format!("bench{}", N.fetch_add(1, Ordering::Relaxed));
    query(&c.url(), &format!("CREATE SCHEMA {schema}"));
    schema
}

/// The connection string of `schema` on `c`.
pub fn url(c: &PgCluster, schema: &str) -> String {
    format!("{} options=-csearch_path={schema}", c.url())
}

/// What replaces the `[store]` header line of a bench provider's configuration: the
/// header alone (sled, the default), or with `PECD_BENCH_STORE=postgres` the header and
/// the lines that put the store in a new schema of the bench's cluster (returned too).
pub fn store_header() -> (String, Option<String>) {
    match wanted().then(cluster).flatten() {
        Some(c) => {
            let schema = new_schema(c);
            (
                format!(
                    "[store]\nbackend = \"postgres\"\nurl = \"{}\"\npool_size = 8",
                    url(c, &schema)
                ),
                Some(schema),
            )
        }
        None if fjall_wanted() => ("[store]\nbackend = \"fjall\"".into(), None),
        None => ("[store]".into(), None),
    }
}

/// Whether the bench is to keep the metadata on fjall (`PECD_BENCH_STORE=fjall`).
pub fn fjall_wanted() -> bool {
    std::env::var("PECD_BENCH_STORE").is_ok_and(|v| v == "fjall")
}

/// WAL written by the whole cluster so far, bytes.
pub fn wal_bytes(c: &PgCluster) -> i64 {
    query(
        &c.url(),
        "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint",
    )
    .unwrap_or(0)
}

/// The table and indexes of `schema`'s store, bytes.
pub fn store_bytes(c: &PgCluster, schema: &str) -> i64 {
    query(
        &c.url(),
        &format!("SELECT pg_total_relation_size('{schema}.pecd_kv')"),
    )
    .unwrap_or(0)
}
