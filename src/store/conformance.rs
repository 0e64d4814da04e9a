//! The store's conformance suite on every backend.
//!
//! The unit tests of the library (the store's own, and the pipeline's, protocol
//! sessions', JMAP's... that open stores) are the suite: quotas, idempotency claims, the
//! trace chain and its checkpoints, the change log, folders, the queue and the pending
//! receipts. `cargo test` runs them on sled; the test below runs **the same test binary
//! again** with every store in a real PostgreSQL cluster of its own
//! ([`super::kv::pg::testing`]), so both backends pass one suite, and the run fails if
//! either does.

use super::kv::pg::testing::ENV;
use super::kv::pg_cluster::PgCluster;

/// Tests that look at what only one engine has (sled's files on disk, its lock file).
/// The sealed segments of the trace log exist on sled stores only.
const SLED_ONLY: &[&str] = &["trace::segments::store_tests"];

#[test]
fn the_unit_tests_pass_on_postgresql() {
    if std::env::var_os(ENV).is_some() {
        // This is the run on PostgreSQL itself.
        return;
    }
    let cluster = match PgCluster::start() {
        Ok(c) => c,
        Err(reason) => {
            if std::env::var_os("PECD_REQUIRE_TOOLS").is_some_and(|v| !v.is_empty()) {
                panic!("{reason} (PECD_REQUIRE_TOOLS is set: this must run here)");
            }
            eprintln!("SKIP: the conformance run on PostgreSQL: {reason}");
            return;
        }
    };
    let exe = std::env::current_exe().expect("the test binary");
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
    let mut cmd = std::process::Command::new(exe);
    cmd.env(ENV, cluster.url())
        .arg(format!("--test-threads={threads}"))
        .args(["--skip", "the_unit_tests_pass_on_postgresql"]);
    for t in SLED_ONLY {
        cmd.args(["--skip", t]);
    }
    let out = cmd.output().expect("running the unit tests again");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let summary = stdout
        .lines()
        .find(|l| l.starts_with("test result:"))
        .unwrap_or("no summary")
        .to_string();
    assert!(
        out.status.success(),
        "the unit tests fail on PostgreSQL: {summary}\n--- failures ---\n{}\n--- stderr (tail) ---\n{}",
        stdout
            .lines()
            .filter(|l| l.contains("FAILED") || l.contains("panicked") || l.starts_with("----"))
            .collect::<Vec<_>>()
            .join("\n"),
        stderr
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Not vacuous: the store's own tests ran, on PostgreSQL.
    let passed: usize = summary
        .split_whitespace()
        .skip_while(|w| *w != "ok.")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        passed >= 200,
        "only {passed} tests ran on PostgreSQL: {summary}"
    );
    // And they ran on PostgreSQL: the stores they opened are there, one schema each.
    let url = cluster.url();
    let stores: i64 = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
            tokio::spawn(conn);
            let row = client
                .query_one(
                    "SELECT count(*) FROM information_schema.tables WHERE table_name = 'pecd_kv'",
                    &[],
                )
                .await?;
            Ok::<_, tokio_postgres::Error>(row.get(0))
        })
        .expect("counting the stores made in PostgreSQL");
    assert!(stores >= 50, "only {stores} stores were made in PostgreSQL");
    eprintln!("conformance on PostgreSQL: {summary}; {stores} stores made in PostgreSQL");
}
