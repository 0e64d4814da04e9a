//! Two pecd nodes of one provider on one PostgreSQL store and one S3 bucket, a submission
//! load spread over them, and the checks of what they delivered and logged.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::postgres::{PgCluster, on_postgres};
use super::s3::S3Server;
use super::server::Server;

/// Node 1 of a provider with mailboxes `mailboxes`, its store on `pg` (schema `schema`)
/// and its bodies in `s3` (prefix `schema/`), `[store]` given the line `mode`
/// (`standby = true`, `several_writers = true`); and node 2, a copy of it with a
/// store.dir of its own.
pub fn two_nodes(
    domain: &str,
    pg: &PgCluster,
    s3: &S3Server,
    schema: &str,
    mailboxes: &[&str],
    mode: &str,
) -> (Server, Server) {
    let n1 = Server::new(domain, &[]);
    let data1 = n1.data_dir();
    let blobs = s3.config_section(n1.dir.path(), &format!("{schema}/"));
    n1.edit_config(|t| {
        let t = on_postgres(&t, pg, &data1, schema);
        let t = t.replace("[store]\n", &format!("[store]\n{mode}\n"));
        assert!(t.contains("[blobs]\nbackend = \"dir\"\n"), "{t}");
        t.replace("[blobs]\nbackend = \"dir\"\n", &blobs)
    });
    for m in mailboxes {
        n1.admin(&["mailbox", "add", m, "--password", "pw", "--keep-password"]);
    }
    let n2 = n1.another_node();
    let data2 = n2.data_dir();
    n2.edit_config(|t| {
        let moved = t.replace(
            &format!("dir = \"{}\"", data1.display()),
            &format!("dir = \"{}\"", data2.display()),
        );
        assert_ne!(moved, t, "node 2's store.dir");
        moved
    });
    (n1, n2)
}

/// The subjects of the messages in `who`'s INBOX, each with how many times it is there,
/// read over IMAP from `node`.
pub fn subjects(node: &Server, who: &str) -> BTreeMap<String, u32> {
    let got = node.imap("subjects", &[who, "pw"]);
    let mut out = BTreeMap::new();
    for s in got["subjects"].as_array().expect("subjects") {
        *out.entry(s.as_str().unwrap().to_string()).or_default() += 1;
    }
    out
}

/// `pecd log export` and `pecd log verify` of the store through `node`'s configuration
/// (every node stopped); the number of records.
pub fn export_and_verify(node: &Server) -> usize {
    // The records and the trailer.
    super::server::exported_and_verified(node).len() + 1
}

/// Where a load client submits; changed while it runs (a node killed).
pub type Target = Arc<Mutex<SocketAddr>>;

/// One submission: its subject, the node it went to, and what that node answered.
pub type Submitted = (
    String,
    SocketAddr,
    Result<(u16, String), (String, (u16, String))>,
);

/// Clients submitting PEC mail from `a` to `b`, one message after another, for a while.
pub struct Load {
    rt: tokio::runtime::Runtime,
    clients: Vec<tokio::task::JoinHandle<Vec<Submitted>>>,
}

impl Load {
    /// Client `c` of `targets.len()` submits to `targets[c]` for `secs` seconds (CA `ca`).
    pub fn start(a: &str, b: &str, ca: PathBuf, targets: &[Target], secs: u64) -> Load {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let stop_at = Instant::now() + Duration::from_secs(secs);
        let clients = targets
            .iter()
            .enumerate()
            .map(|(c, target)| {
                let (a, b, ca, target) = (a.to_string(), b.to_string(), ca.clone(), target.clone());
                rt.spawn(async move {
                    let mut results = Vec::new();
                    for n in 0u32.. {
                        if Instant::now() >= stop_at {
                            break;
                        }
                        let subject = format!("Nodi {c}-{n}");
                        let msg = format!(
                            "From: <{a}>\r\nTo: <{b}>\r\nSubject: {subject}\r\nMessage-ID: <nodi-{c}-{n}@mua.test>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0100\r\n\r\nCiao.\r\n"
                        );
                        let addr = *target.lock().unwrap();
                        let r = super::smtp::try_submit(addr, &ca, &a, "pw", &[&b], msg.as_bytes())
                            .await;
                        results.push((subject, addr, r));
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    results
                })
            })
            .collect();
        Load { rt, clients }
    }

    /// Waits for every client; all their submissions.
    pub fn finish(self) -> Vec<Submitted> {
        let mut out = Vec::new();
        for h in self.clients {
            out.extend(self.rt.block_on(h).unwrap());
        }
        out
    }
}

/// The subjects that got a 250, and how many submissions failed with a temporary error or
/// a cut connection (what a node killed mid-session gives); panics on anything else.
pub fn accepted(results: &[Submitted]) -> (Vec<String>, usize) {
    let (mut ok, mut failed) = (Vec::new(), 0);
    for (subject, _, r) in results {
        match r {
            Ok((250, _)) => ok.push(subject.clone()),
            Ok((code, _)) | Err((_, (code, _))) if *code == 0 || (400..500).contains(code) => {
                failed += 1
            }
            other => panic!("{subject}: {other:?}"),
        }
    }
    (ok, failed)
}

/// How many submissions got a 250 from the node at `node2` and from any other (node 1):
/// `[node 1, node 2]`.
pub fn accepted_per_node(results: &[Submitted], node2: SocketAddr) -> [u32; 2] {
    let mut ok_at = [0u32; 2];
    for (_, addr, r) in results {
        if matches!(r, Ok((250, _))) {
            ok_at[usize::from(*addr == node2)] += 1;
        }
    }
    ok_at
}

/// Everything in `ok` is delivered (the envelope at `b`, the acceptance and delivery
/// receipts at `a`), each exactly once and nothing twice, as `node` lists them; then
/// `node` is stopped, and the store's trace log exported and verified: its records.
pub fn delivered_once_and_logged(node: &mut Server, a: &str, b: &str, ok: &[String]) -> usize {
    super::delivery::wait_for_all(node, a, b, ok.len() as u64);
    // The counts can be reached while something is still in flight when a mailbox holds
    // other messages too (the IDLE check's APPEND at b): wait, up to 90 s, until every
    // accepted subject is there before checking that each is there once.
    let deadline = Instant::now() + Duration::from_secs(90);
    let (at_a, at_b) = loop {
        let (at_a, at_b) = (subjects(node, a), subjects(node, b));
        let all_there = ok.iter().all(|s| {
            at_b.contains_key(&format!("POSTA CERTIFICATA: {s}"))
                && at_a.contains_key(&format!("ACCETTAZIONE: {s}"))
                && at_a.contains_key(&format!("CONSEGNA: {s}"))
        });
        if all_there || Instant::now() >= deadline {
            break (at_a, at_b);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    super::delivery::assert_each_once(ok, &at_a, &at_b);
    node.stop();
    export_and_verify(node)
}
