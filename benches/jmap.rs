//! JMAP benchmarks (`cargo bench --bench jmap`, `harness = false`), against the real web
//! listener over TLS, with an HTTP/1.1 keep-alive client in the same process:
//!
//! 1. `Email/query` (INBOX, newest first, position 0 / 50 / …) + `Email/get` of that page
//!    of 50 (list properties and `pec`) in one request, on a 100,000-message mailbox:
//!    p50 and p99 over the repetitions, after the first request built the account view
//!    (its time is reported apart: the cold start after a restart or a change).
//! 2. EventSource latency: from a committed delivery to the `state` event read by a
//!    client, p50 / max over repetitions.
//! 3. Memory per open EventSource connection: RSS growth with 1,000 open streams
//!    (clients in the same process: an upper bound for the server).
//!
//! The 100,000 messages are distinct (a JMAP Email is one content); their blob files are
//! written without fsync (set-up, not measured). `PECD_BENCH_MESSAGES`, `PECD_BENCH_REPS`
//! and `PECD_BENCH_CONNECTIONS` shrink the run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pecd::pec::address::PecAddress;
use pecd::store::{Batch, Blob, BlobId, Delivery};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

#[path = "common/scratch.rs"]
mod scratch;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn connect(
    addr: std::net::SocketAddr,
    connector: &tokio_rustls::TlsConnector,
) -> BufReader<Tls> {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let _ = tcp.set_nodelay(true);
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    BufReader::new(connector.connect(name, tcp).await.expect("tls"))
}

/// One request on a keep-alive connection; returns the status and body.
async fn request(s: &mut BufReader<Tls>, head: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let req = format!(
        "{head}Host: localhost\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.get_mut().write_all(req.as_bytes()).await.expect("write");
    s.get_mut().write_all(body).await.expect("write");
    let mut line = String::new();
    s.read_line(&mut line).await.expect("status");
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut len = 0usize;
    loop {
        line.clear();
        s.read_line(&mut line).await.expect("header");
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut b = vec![0u8; len];
    s.read_exact(&mut b).await.expect("body");
    (status, b)
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn fill(store: &pecd::store::Store, user: &PecAddress, n: usize) {
    let now = jiff::Timestamp::now();
    let mut b = Batch::new();
    for i in 0..n {
        let m = format!(
            "From: Mittente {i} <m{}@pec.altro.test>\r\nTo: <{user}>\r\nSubject: Comunicazione n. {i}\r\nDate: Mon, 23 Nov 2026 10:00:00 +0100\r\nMessage-ID: <{i}@bench>\r\n\r\n{}",
            i % 97,
            "Corpo del messaggio di prova.\r\n".repeat(20)
        );
        let id = BlobId::of(m.as_bytes());
        let path = store
            .blobs()
            .local_path(&id)
            .expect("the benchmark store keeps its blobs in a directory");
        std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
        std::fs::write(&path, m.as_bytes()).expect("blob");
        let at = now
            .checked_add(jiff::SignedDuration::from_secs(i as i64))
            .unwrap_or(now);
        b = b.deliver(Delivery::inbox(
            user.clone(),
            Blob {
                id,
                size: m.len() as u64,
            },
            at,
        ));
        if (i + 1) % 2000 == 0 {
            store.commit(std::mem::take(&mut b)).expect("commit");
        }
    }
    if !b.is_empty() {
        store.commit(b).expect("commit");
    }
}

async fn run() {
    let n = env_or("PECD_BENCH_MESSAGES", 100_000);
    let reps = env_or("PECD_BENCH_REPS", 200);
    let conns = env_or("PECD_BENCH_CONNECTIONS", 1000);
    let dir = scratch::tempdir();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pecd"))
        .args([
            "init",
            "--dir",
            dir.path().to_str().unwrap_or_default(),
            "--domain",
            "pec.bench.test",
        ])
        .output()
        .expect("pecd init");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg_path = dir.path().join("pecd.toml");
    let text = std::fs::read_to_string(&cfg_path).expect("config");
    let text = text
        .replace(
            "max_connections_per_ip = 20",
            "max_connections_per_ip = 100000",
        )
        .replace(
            "[limits]\n",
            "[limits]\nmax_connections_per_listener = 100000\nmax_connections = 100000\n",
        );
    std::fs::write(&cfg_path, text).expect("config");
    let cfg = pecd::config::Config::load(&cfg_path).expect("config");
    let gw = pecd::gateway::Gateway::open(cfg, pecd::clock::system()).expect("gateway");
    let user = PecAddress::parse("bench@pec.bench.test").expect("address");
    let (store, u) = (gw.store.clone(), user.clone());
    let t = Instant::now();
    tokio::task::spawn_blocking(move || {
        store
            .add_mailbox(pecd::store::NewMailbox {
                address: u.clone(),
                password: pecd::store::mailbox::Password::new("pw"),
                quota_bytes: Some(u64::MAX / 2),
                options: Default::default(),
                provisional: false,
            })
            .expect("mailbox");
        fill(&store, &u, n);
    })
    .await
    .expect("join");
    eprintln!("set-up: {n} messages in {:.1?}", t.elapsed());

    let (tls, _) = pecd::tls::server_config(&gw.config.tls.cert, &gw.config.tls.key).expect("tls");
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    let web = pecd::http::Web::new(gw.clone());
    tokio::spawn(web.jmap.clone().follow_changes(stop.clone()));
    tokio::spawn(pecd::http::serve(l, tls, web, false, stop));
    let ca = gw
        .config
        .path
        .parent()
        .map(|p| p.join("certs/ca.pem"))
        .unwrap_or_default();
    let client = pecd::tls::client_config(&[ca], false).expect("client tls");
    let connector = tokio_rustls::TlsConnector::from(client);

    // A bearer token.
    let mut c = connect(addr, &connector).await;
    let (st, body) = request(
        &mut c,
        "POST /auth/login HTTP/1.1\r\nContent-Type: application/json\r\n",
        br#"{"username":"bench@pec.bench.test","password":"pw","bearer":true}"#,
    )
    .await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    let token = v["bearerToken"].as_str().expect("token").to_string();
    let acc = v["accountId"].as_str().expect("account").to_string();
    let api_head = format!(
        "POST /jmap/api HTTP/1.1\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\n"
    );
    let page = |pos: usize| {
        serde_json::json!({
            "using": ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail", "urn:pecd:params:jmap:pec"],
            "methodCalls": [
                ["Email/query", {"accountId": acc, "filter": {"inMailbox": "F0"},
                    "sort": [{"property": "receivedAt", "isAscending": false}],
                    "position": pos, "limit": 50, "calculateTotal": true}, "q"],
                ["Email/get", {"accountId": acc, "#ids": {"resultOf": "q", "name": "Email/query", "path": "/ids"},
                    "properties": ["threadId", "mailboxIds", "keywords", "from", "subject", "receivedAt", "size", "preview", "hasAttachment", "pec"]}, "g"]
            ]
        })
        .to_string()
    };

    // 1. Query + get of a page of 50.
    let t = Instant::now();
    let (st, body) = request(&mut c, &api_head, page(0).as_bytes()).await;
    let cold = t.elapsed();
    assert_eq!(st, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v["methodResponses"][0][1]["total"], n);
    assert_eq!(
        v["methodResponses"][1][1]["list"].as_array().map(Vec::len),
        Some(50.min(n))
    );
    let mut times = Vec::with_capacity(reps);
    for r in 0..reps {
        let body = page((r * 50) % n.max(1));
        let t = Instant::now();
        let (st, _) = request(&mut c, &api_head, body.as_bytes()).await;
        times.push(t.elapsed());
        assert_eq!(st, 200);
    }
    println!(
        "Email/query + Email/get (page of 50, {n} messages): p50 {:.2?}, p99 {:.2?} over {reps}; first request (builds the view) {:.2?}",
        pct(&mut times, 0.5),
        pct(&mut times, 0.99),
        cold
    );

    // 2. EventSource latency: commit → state event.
    let mut es = connect(addr, &connector).await;
    let head = format!(
        "GET /jmap/eventsource?types=*&closeafter=no&ping=0 HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    es.get_mut()
        .write_all(head.as_bytes())
        .await
        .expect("write");
    let mut line = String::new();
    // Skip the head and the initial state event.
    let mut seen_state = 0;
    while seen_state < 1 {
        line.clear();
        es.read_line(&mut line).await.expect("read");
        if line.starts_with("event: state") {
            seen_state += 1;
        }
    }
    let blob = gw
        .store
        .blobs()
        .put(b"From: x@y.test\r\nSubject: push\r\n\r\nx\r\n")
        .expect("blob");
    let mut lat = Vec::new();
    let push_reps = reps.min(100);
    for i in 0..push_reps {
        let (store, u, b) = (gw.store.clone(), user.clone(), blob.clone());
        let t = Instant::now();
        tokio::task::spawn_blocking(move || {
            let mut d = Delivery::inbox(u, b, jiff::Timestamp::now());
            d.flags = vec![format!("$n{i}")];
            store.commit(Batch::new().deliver(d)).expect("commit")
        })
        .await
        .expect("join");
        let committed = t.elapsed();
        loop {
            line.clear();
            es.read_line(&mut line).await.expect("read");
            if line.starts_with("event: state") {
                break;
            }
        }
        lat.push(t.elapsed().saturating_sub(committed));
        // Let the view rebuild settle so each round measures one change.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let max = *lat.iter().max().unwrap_or(&Duration::ZERO);
    println!(
        "EventSource, commit returned → state event read: p50 {:.2?}, max {max:.2?} over {push_reps}",
        pct(&mut lat, 0.5)
    );
    drop(es);

    // 3. Memory per open EventSource connection.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss_kib();
    let mut held = Vec::with_capacity(conns);
    let sem = Arc::new(tokio::sync::Semaphore::new(32));
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (connector, token, sem) = (connector.clone(), token.clone(), sem.clone());
        tasks.push(tokio::spawn(async move {
            let _p = sem.acquire_owned().await.ok()?;
            let mut s = connect(addr, &connector).await;
            let head = format!("GET /jmap/eventsource?types=*&closeafter=no&ping=300 HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\r\n");
            s.get_mut().write_all(head.as_bytes()).await.ok()?;
            let mut line = String::new();
            loop {
                line.clear();
                if s.read_line(&mut line).await.ok()? == 0 {
                    return None;
                }
                if line.starts_with("event: state") {
                    return Some(s);
                }
            }
        }));
    }
    for t in tasks {
        if let Ok(Some(s)) = t.await {
            held.push(s);
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib();
    println!(
        "EventSource connections: {} open, RSS +{} KiB = {:.1} KiB per connection (client and server in one process)",
        held.len(),
        after.saturating_sub(before),
        after.saturating_sub(before) as f64 / held.len().max(1) as f64
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}
