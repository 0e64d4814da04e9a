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

/// A TCP proxy in front of a cluster that, once armed, lets the next `COMMIT` (a simple
/// query) reach the server and then cuts that connection before the answer comes back:
/// the one case where a client cannot know whether its transaction was committed.
pub struct CommitCutter {
    pub port: u16,
    armed: std::sync::Arc<std::sync::atomic::AtomicBool>,
    cuts: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

/// The protocol message of a simple query `COMMIT`: 'Q', its length (4 + 7), the text.
const COMMIT_QUERY: &[u8] = b"Q\0\0\0\x0bCOMMIT\0";

impl CommitCutter {
    pub fn start(cluster: &PgCluster) -> CommitCutter {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let armed = std::sync::Arc::new(AtomicBool::new(false));
        let cuts = std::sync::Arc::new(AtomicUsize::new(0));
        let server = cluster.port();
        let (a, c) = (armed.clone(), cuts.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(upstream) = std::net::TcpStream::connect(("127.0.0.1", server)) else {
                    continue;
                };
                let cutting = std::sync::Arc::new(AtomicBool::new(false));
                // Server → client, unless this connection is being cut.
                let (mut from, mut to, cut) = (
                    upstream.try_clone().unwrap(),
                    client.try_clone().unwrap(),
                    cutting.clone(),
                );
                std::thread::spawn(move || {
                    use std::io::{Read, Write};
                    let mut buf = vec![0u8; 65536];
                    while let Ok(n) = from.read(&mut buf) {
                        if n == 0 || cut.load(Ordering::SeqCst) || to.write_all(&buf[..n]).is_err()
                        {
                            break;
                        }
                    }
                });
                // Client → server, watching for the COMMIT to cut after.
                let (mut from, mut to, armed, cuts) = (client, upstream, a.clone(), c.clone());
                std::thread::spawn(move || {
                    use std::io::{Read, Write};
                    let mut buf = vec![0u8; 65536];
                    while let Ok(n) = from.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        let commit = buf[..n]
                            .windows(COMMIT_QUERY.len())
                            .any(|w| w == COMMIT_QUERY);
                        if commit && armed.swap(false, Ordering::SeqCst) {
                            cutting.store(true, Ordering::SeqCst);
                            let _ = to.write_all(&buf[..n]);
                            // The server commits; its answer is never passed on.
                            std::thread::sleep(std::time::Duration::from_millis(300));
                            cuts.fetch_add(1, Ordering::SeqCst);
                            let _ = to.shutdown(std::net::Shutdown::Both);
                            let _ = from.shutdown(std::net::Shutdown::Both);
                            break;
                        }
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        CommitCutter { port, armed, cuts }
    }

    /// `cluster`'s URL through this proxy.
    pub fn url(&self, cluster: &PgCluster) -> String {
        cluster.url().replace(
            &format!("port={}", cluster.port()),
            &format!("port={}", self.port),
        )
    }

    /// Cuts the connection of the next COMMIT.
    pub fn arm(&self) {
        self.armed.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// How many connections were cut so far.
    pub fn cuts(&self) -> usize {
        self.cuts.load(std::sync::atomic::Ordering::SeqCst)
    }
}
