//! A real PostgreSQL cluster for the tests that run pecd on the PostgreSQL backend: the
//! library's own fixture (`src/store/kv/pg_cluster.rs`), included here so that both test
//! kinds share one file.

#[path = "../../src/store/kv/pg_cluster.rs"]
mod pg_cluster;

pub use pg_cluster::PgCluster;

/// Starts a cluster, or reports the skip (a failure under `PECD_REQUIRE_TOOLS`).
pub fn cluster(why: &str) -> Option<PgCluster> {
    match PgCluster::start() {
        Ok(c) => Some(c),
        Err(reason) => {
            super::skip(&format!("({why}) {reason}"));
            None
        }
    }
}

/// The `[store]` lines that put a store on `cluster`, in SQL schema `schema` (made here).
pub fn store_section(cluster: &PgCluster, dir: &std::path::Path, schema: &str) -> String {
    create_schema(cluster, schema);
    format!(
        "[store]\ndir = \"{}\"\nbackend = \"postgres\"\nurl = \"{} options=-csearch_path={schema}\"\npool_size = 4\n",
        dir.display(),
        cluster.url()
    )
}

/// The configuration text with its `[store]` section on `cluster`, schema `schema`.
pub fn on_postgres(text: &str, cluster: &PgCluster, dir: &std::path::Path, schema: &str) -> String {
    let section = store_section(cluster, dir, schema);
    let start = text.find("[store]\n").expect("a [store] section");
    let end = text[start + 1..]
        .find("\n[")
        .map_or(text.len(), |i| start + 1 + i + 1);
    format!("{}{}\n{}", &text[..start], section, &text[end..])
}

/// `CREATE SCHEMA` with the cluster's own `psql`.
pub fn create_schema(cluster: &PgCluster, schema: &str) {
    psql(cluster, &format!("CREATE SCHEMA IF NOT EXISTS {schema}"));
}

/// Runs `sql` with the cluster's `psql`; its output (unaligned, tuples only).
pub fn psql(cluster: &PgCluster, sql: &str) -> String {
    let bin = pg_cluster::pg_bin()
        .expect("PostgreSQL binaries")
        .join("psql");
    let out = std::process::Command::new(bin)
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
        // TLS when the cluster requires it (the test's own tool: no certificate check).
        .arg(cluster.url().replace("sslmode=disable", "sslmode=prefer"))
        .args(["-c", sql])
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
