//! The store's conformance suite on every backend.
//!
//! The unit tests of the library (the store's own, and the pipeline's, protocol
//! sessions', JMAP's... that open stores) are the suite: quotas, idempotency claims, the
//! trace chain and its checkpoints, the change log, folders, the queue and the pending
//! receipts. `cargo test` runs them on sled; the tests below run **the same test binary
//! again**, once with every store in a real PostgreSQL cluster of its own
//! ([`super::kv::pg::testing`]) and once with every store on fjall
//! ([`super::kv::fjall::testing`]), so every backend passes one suite, and the run fails
//! if any does. Test code: its unwraps see only this process's own files and output.

use super::kv::fjall::testing::ENV as FJALL_ENV;
use super::kv::pg::testing::ENV;
use super::kv::pg_cluster::PgCluster;

/// Tests that look at what only a store in a directory has (the trace log's sealed
/// segments beside the database): not run on PostgreSQL.
const LOCAL_ONLY: &[&str] = &["trace::segments::store_tests"];

/// Tests that open sled's files themselves: not run on another engine.
const SLED_ONLY: &[&str] = &[
    "trace::segments::store_tests::a_database_and_sealed_files_that_do_not_continue_each_other_are_refused",
];

/// The names of the tests that run the suite again, skipped in those runs.
const AGAIN: &[&str] = &[
    "the_unit_tests_pass_on_postgresql",
    "the_unit_tests_pass_on_fjall",
];

/// Runs this test binary again with `env` set to `value` (the store tests then open
/// their stores on `engine`), without the tests in `skip`; fails unless all pass and at
/// least 200 ran. Returns the run's summary line.
fn run_again(env: &str, value: &str, engine: &str, skip: &[&str]) -> String {
    let exe = std::env::current_exe().expect("the test binary");
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
    let mut cmd = std::process::Command::new(exe);
    cmd.env(env, value).arg(format!("--test-threads={threads}"));
    for t in AGAIN.iter().chain(skip) {
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
        "the unit tests fail on {engine}: {summary}\n--- failures ---\n{}\n--- stderr (tail) ---\n{}",
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
    // Not vacuous: the store's own tests ran.
    let passed: usize = summary
        .split_whitespace()
        .skip_while(|w| *w != "ok.")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        passed >= 200,
        "only {passed} tests ran on {engine}: {summary}"
    );
    summary
}

/// Whether this is one of the runs again (which must not start runs of their own).
fn in_a_run_again() -> bool {
    std::env::var_os(ENV).is_some() || std::env::var_os(FJALL_ENV).is_some()
}

#[test]
fn the_unit_tests_pass_on_fjall() {
    if in_a_run_again() {
        return;
    }
    // Each store the suite opens on fjall leaves a file here: proof that it did.
    let opened = tempfile::tempdir().expect("a temporary directory");
    let summary = run_again(
        FJALL_ENV,
        &opened.path().to_string_lossy(),
        "fjall",
        SLED_ONLY,
    );
    let stores = std::fs::read_dir(opened.path())
        .expect("reading the list of stores opened")
        .count();
    assert!(stores >= 50, "only {stores} stores were opened on fjall");
    eprintln!("conformance on fjall: {summary}; {stores} stores opened on fjall");
}

#[test]
fn the_unit_tests_pass_on_postgresql() {
    if in_a_run_again() {
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
    let summary = run_again(
        ENV,
        &cluster.url(),
        "PostgreSQL",
        &[LOCAL_ONLY, SLED_ONLY].concat(),
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
