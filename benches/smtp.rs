//! Load generator for the access point (issue #4): submits N messages of S bytes over M
//! concurrent SMTPS sessions with AUTH, against a real gateway started in-process on
//! loopback (TLS, argon2 login, signing, fsync'd group commit, local delivery running
//! alongside), and reports accepted messages per second and latency percentiles (MAIL FROM
//! to the 250 after DATA).
//!
//! Run: `cargo bench --bench smtp` (env: PECD_BENCH_MESSAGES default 400,
//! PECD_BENCH_SIZE default 10240, PECD_BENCH_SESSIONS default "1,20").

use std::sync::Arc;
use std::time::Instant;

use pecd::config::Config;
use pecd::gateway::Gateway;
use pecd::pec::address::{Domain, PecAddress};
use pecd::store::NewMailbox;
use pecd::store::mailbox::Password;
use rustls::pki_types::ServerName;

#[path = "common/load.rs"]
mod load;
#[path = "common/scratch.rs"]
mod scratch;
use load::{Job, env, pct};

fn main() {
    let total: usize = env("PECD_BENCH_MESSAGES", 400);
    let size: usize = env("PECD_BENCH_SIZE", 10 * 1024);
    let sessions: String = env("PECD_BENCH_SESSIONS", "1,20".to_string());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for m in sessions
        .split(',')
        .filter_map(|s| s.trim().parse::<usize>().ok())
    {
        let dir = scratch::tempdir();
        let domain = Domain::parse("pec.bench.test").unwrap();
        let report =
            pecd::pki::init_dir(dir.path(), &domain, Some("Bench PEC"), false).expect("init");
        let text = std::fs::read_to_string(&report.config).unwrap();
        let text: String = text
            .lines()
            .map(|l| match l.split_once(" = ") {
                Some((k, _)) if k == "smtps" => "smtps = \"127.0.0.1:0\"".to_string(),
                Some((k, _))
                    if ["smtp", "submission", "imaps", "pop3s", "https", "admin"].contains(&k) =>
                {
                    format!("{k} = \"off\"")
                }
                Some((k, _)) if k == "max_connections_per_ip" => format!("{k} = 1000"),
                _ => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(&report.config, text).unwrap();
        let config = Config::load(&report.config).expect("config");
        let gw = Gateway::open(config, pecd::clock::system()).expect("gateway");
        for u in ["a", "b", "posta-certificata"] {
            gw.store
                .add_mailbox(NewMailbox {
                    address: PecAddress::parse(&format!("{u}@pec.bench.test")).unwrap(),
                    password: Password::new("bench-pw"),
                    quota_bytes: Some(1 << 40),
                    options: Default::default(),
                    provisional: false,
                })
                .expect("mailbox");
        }
        let body = Arc::new(load::message("a@pec.bench.test", "b@pec.bench.test", size));
        let tls = pecd::tls::client_config(&[dir.path().join("certs/ca.pem")], false)
            .expect("client tls");
        rt.block_on(async {
            let running = pecd::server::start(gw.clone()).await.expect("start");
            let addr = running.addr("smtps").expect("smtps");
            let per = total.div_ceil(m);
            let t0 = Instant::now();
            let handles: Vec<_> = (0..m)
                .map(|_| {
                    let (tls, body) = (tls.clone(), body.clone());
                    tokio::spawn(async move {
                        let tcp = load::connect(addr).await;
                        let s = tokio_rustls::TlsConnector::from(tls)
                            .connect(ServerName::try_from("localhost").unwrap(), tcp)
                            .await
                            .expect("tls");
                        let job = Job {
                            auth: Some(("a@pec.bench.test", "bench-pw")),
                            from: "a@pec.bench.test",
                            to: "b@pec.bench.test",
                            n: per,
                            body: &body,
                        };
                        load::session(s, &job).await
                    })
                })
                .collect();
            let mut lat = Vec::new();
            for h in handles {
                lat.extend(h.await.expect("session"));
            }
            let el = t0.elapsed().as_secs_f64();
            // Same-provider mail: delivered when the local lane is empty (take-charge and
            // delivery receipts signed, the envelope in b's INBOX).
            while gw.store.queue_len().unwrap_or(0) > 0 && t0.elapsed().as_secs() < 600 {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            let delivered = t0.elapsed().as_secs_f64();
            lat.sort();
            println!(
                "{m:>3} sessions, {} messages of {} bytes: {:.1} accepted/s; latency p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms; all delivered locally at {:.1} msg/s",
                lat.len(),
                body.len(),
                lat.len() as f64 / el,
                pct(&lat, 0.5),
                pct(&lat, 0.9),
                pct(&lat, 0.99),
                pct(&lat, 1.0),
                lat.len() as f64 / delivered,
            );
            running.shutdown().await;
        });
    }
}
