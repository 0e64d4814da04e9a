//! Load generator for the access point (issue #4): submits N messages of S bytes over M
//! concurrent SMTPS sessions with AUTH, against a real gateway started in-process on
//! loopback (TLS, argon2 login, signing, fsync'd group commit, local delivery running
//! alongside), and reports accepted messages per second and latency percentiles (MAIL FROM
//! to the 250 after DATA).
//!
//! Run: `cargo bench --bench smtp` (env: PECD_BENCH_MESSAGES default 400,
//! PECD_BENCH_SIZE default 10240, PECD_BENCH_SESSIONS default "1,20").

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use pecd::config::Config;
use pecd::gateway::Gateway;
use pecd::pec::address::{Domain, PecAddress};
use pecd::store::NewMailbox;
use pecd::store::mailbox::Password;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

fn env<T: std::str::FromStr>(k: &str, d: T) -> T {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

async fn reply<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> u16 {
    loop {
        let mut l = String::new();
        if r.read_line(&mut l).await.unwrap_or(0) == 0 {
            return 0;
        }
        if l.as_bytes().get(3) != Some(&b'-') {
            return l.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
        }
    }
}

async fn session(
    addr: std::net::SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    n: usize,
    body: Arc<Vec<u8>>,
) -> Vec<Duration> {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let s = tokio_rustls::TlsConnector::from(tls)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("tls");
    let mut s = BufReader::new(s);
    assert_eq!(reply(&mut s).await, 220);
    s.get_mut().write_all(b"EHLO bench\r\n").await.unwrap();
    assert_eq!(reply(&mut s).await, 250);
    let tok = base64::engine::general_purpose::STANDARD.encode(b"\0a@pec.bench.test\0bench-pw");
    s.get_mut()
        .write_all(format!("AUTH PLAIN {tok}\r\n").as_bytes())
        .await
        .unwrap();
    assert_eq!(reply(&mut s).await, 235);
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        s.get_mut()
            .write_all(b"MAIL FROM:<a@pec.bench.test>\r\nRCPT TO:<b@pec.bench.test>\r\nDATA\r\n")
            .await
            .unwrap();
        assert_eq!(reply(&mut s).await, 250);
        assert_eq!(reply(&mut s).await, 250);
        assert_eq!(reply(&mut s).await, 354);
        s.get_mut().write_all(&body).await.unwrap();
        s.get_mut().write_all(b".\r\n").await.unwrap();
        assert_eq!(reply(&mut s).await, 250, "message not accepted");
        lat.push(t.elapsed());
    }
    let _ = s.get_mut().write_all(b"QUIT\r\n").await;
    lat
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

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
        let dir = tempfile::tempdir().expect("tempdir");
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
        let mut body = format!("From: a@pec.bench.test\r\nTo: b@pec.bench.test\r\nSubject: bench\r\nMessage-ID: <bench@x>\r\n\r\n").into_bytes();
        while body.len() < size {
            body.extend_from_slice(b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\r\n");
        }
        let body = Arc::new(body);
        let tls = pecd::tls::client_config(&[dir.path().join("certs/ca.pem")], false)
            .expect("client tls");
        rt.block_on(async {
            let running = pecd::server::start(gw.clone()).await.expect("start");
            let addr = running.addr("smtps").expect("smtps");
            let per = total.div_ceil(m);
            let t0 = Instant::now();
            let handles: Vec<_> = (0..m).map(|_| tokio::spawn(session(addr, tls.clone(), per, body.clone()))).collect();
            let mut lat = Vec::new();
            for h in handles {
                lat.extend(h.await.expect("session"));
            }
            let el = t0.elapsed().as_secs_f64();
            lat.sort();
            println!(
                "{m:>3} sessions, {} messages of {} bytes: {:.1} accepted/s; latency p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                lat.len(),
                body.len(),
                lat.len() as f64 / el,
                pct(&lat, 0.5),
                pct(&lat, 0.9),
                pct(&lat, 0.99),
                pct(&lat, 1.0)
            );
            running.shutdown().await;
        });
    }
}
