//! IMAP benchmarks (`cargo bench --bench imap`, `harness = false`):
//!
//! 1. FETCH of 1,000 headers (`UID FETCH … BODY.PEEK[HEADER.FIELDS (FROM SUBJECT DATE)]`)
//!    from a 100,000-message INBOX, through the sans-IO session and the real store.
//!    The messages share 16 blobs (content-addressed: writing 100,000 fsynced files would
//!    measure the disk, not IMAP); each FETCH still reads a blob file per message.
//! 2. Resident memory of 1,000 concurrent logged-in IDLE connections over TLS to the real
//!    driver (clients in the same process: the figure is an upper bound for the server).
//!
//! `PECD_BENCH_MESSAGES` and `PECD_BENCH_CONNECTIONS` shrink the run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pecd::imap::session::{Action, Session};
use pecd::imap::{ImapListenerConfig, Limits};
use pecd::pec::address::PecAddress;
use pecd::store::{Batch, Delivery, Store};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

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

fn drive(s: &mut Session, store: &Store, input: &[u8]) -> Vec<u8> {
    s.feed(input);
    let mut out = Vec::new();
    loop {
        let a = s.next();
        out.extend(s.take_output());
        match a {
            Action::Authenticate { user, .. } => s.auth_result(Some(user)),
            Action::Execute => s.execute(store),
            _ => return out,
        }
    }
}

fn fill(store: &Store, user: &PecAddress, n: usize) {
    let blobs: Vec<_> = (0..16)
        .map(|i| {
            let m = format!(
                "From: Mittente {i} <m{i}@pec.bench.test>\r\nTo: <{user}>\r\nSubject: POSTA CERTIFICATA: messaggio {i}\r\nDate: Mon, 23 Nov 2026 10:00:00 +0100\r\nMessage-ID: <{i}@bench>\r\nX-Riferimento-Message-ID: <r{i}@bench>\r\n\r\n{}",
                "Corpo del messaggio.\r\n".repeat(100)
            );
            store.blobs().put(m.as_bytes()).expect("blob")
        })
        .collect();
    let now = jiff::Timestamp::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(2000) {
        let mut b = Batch::new();
        for &i in chunk {
            b = b.deliver(Delivery::inbox(user.clone(), blobs[i % 16].clone(), now));
        }
        store.commit(b).expect("commit");
    }
}

fn fetch_bench(dir: &std::path::Path) {
    let n = env_or("PECD_BENCH_MESSAGES", 100_000);
    let opts = pecd::store::StoreOptions {
        default_quota_bytes: u64::MAX / 2,
        ..Default::default()
    };
    let store = Store::open(dir.join("fetch"), opts).expect("store");
    let user = PecAddress::parse("bench@pec.bench.test").expect("address");
    store
        .add_mailbox(pecd::store::NewMailbox {
            address: user.clone(),
            password: pecd::store::mailbox::Password::new("pw"),
            quota_bytes: None,
            options: Default::default(),
            provisional: false,
        })
        .expect("mailbox");
    let t = Instant::now();
    fill(&store, &user, n);
    println!("filled {n} messages in {:.1?}", t.elapsed());
    let mut s = Session::new(Limits::default(), true);
    drive(&mut s, &store, b"");
    drive(&mut s, &store, format!("1 LOGIN {user} pw\r\n").as_bytes());
    let t = Instant::now();
    let out = drive(&mut s, &store, b"2 SELECT INBOX\r\n");
    println!(
        "SELECT of {n} messages: {:.1?} ({} bytes)",
        t.elapsed(),
        out.len()
    );
    let from = n.saturating_sub(999).max(1);
    for round in 0..3 {
        let t = Instant::now();
        let cmd = format!(
            "3 UID FETCH {from}:* (UID FLAGS BODY.PEEK[HEADER.FIELDS (FROM SUBJECT DATE)])\r\n"
        );
        let out = drive(&mut s, &store, cmd.as_bytes());
        let lines = out.windows(8).filter(|w| w == b" FETCH (").count();
        println!(
            "FETCH of {lines} headers from {n} messages (round {round}): {:.1?}, {} bytes",
            t.elapsed(),
            out.len()
        );
    }
}

async fn idle_bench(dir: &std::path::Path) {
    let conns = env_or("PECD_BENCH_CONNECTIONS", 1000);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pecd"))
        .args([
            "init",
            "--dir",
            dir.join("idle").to_str().unwrap_or_default(),
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
    let cfg = pecd::config::Config::load(&dir.join("idle/pecd.toml")).expect("config");
    let gw = pecd::gateway::Gateway::open(cfg, pecd::clock::system()).expect("gateway");
    let user = PecAddress::parse("idle@pec.bench.test").expect("address");
    let store = gw.store.clone();
    let u = user.clone();
    tokio::task::spawn_blocking(move || {
        store.add_mailbox(pecd::store::NewMailbox {
            address: u,
            password: pecd::store::mailbox::Password::new("pw"),
            quota_bytes: None,
            options: Default::default(),
            provisional: false,
        })
    })
    .await
    .expect("join")
    .expect("mailbox");
    let (tls, _) = pecd::tls::server_config(&gw.config.tls.cert, &gw.config.tls.key).expect("tls");
    let mut icfg = ImapListenerConfig::from_config(&gw, tls);
    icfg.gate = std::sync::Arc::new(pecd::listener::ConnectionGate::new(
        conns + 10,
        conns + 10,
        conns + 10,
        [],
    ));
    icfg.max_connections_per_user = conns + 10;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(pecd::imap::serve(l, icfg, gw.clone(), stop));
    let client = pecd::tls::client_config(
        &[gw.config
            .path
            .parent()
            .map(|p| p.join("certs/ca.pem"))
            .unwrap_or_default()],
        false,
    )
    .expect("client tls");
    let connector = tokio_rustls::TlsConnector::from(client);
    // Logins one few at a time: argon2 takes 19 MiB and ~50 ms each.
    let permits = Arc::new(tokio::sync::Semaphore::new(2));
    let before = rss_kib();
    let t = Instant::now();
    let mut held = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (connector, permits, user) = (connector.clone(), permits.clone(), user.to_string());
        tasks.push(tokio::spawn(async move {
            let _p = permits.acquire_owned().await.ok()?;
            let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
            let name = rustls::pki_types::ServerName::try_from("127.0.0.1").ok()?;
            let s = connector.connect(name, tcp).await.ok()?;
            let mut s = BufReader::new(s);
            let mut line = String::new();
            s.read_line(&mut line).await.ok()?;
            s.get_mut()
                .write_all(format!("a LOGIN {user} pw\r\nb SELECT INBOX\r\nc IDLE\r\n").as_bytes())
                .await
                .ok()?;
            loop {
                line.clear();
                if s.read_line(&mut line).await.ok()? == 0 {
                    return None;
                }
                if line.starts_with("+ idling") {
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
    let setup = t.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss_kib();
    println!(
        "{} of {conns} connections logged in and IDLE in {setup:.1?}; RSS {} MiB -> {} MiB: {:.1} KiB per connection (server and client sides, TLS included)",
        held.len(),
        before / 1024,
        after / 1024,
        (after.saturating_sub(before)) as f64 / held.len().max(1) as f64
    );
}

fn main() {
    let dir = scratch::tempdir();
    fetch_bench(dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(idle_bench(dir.path()));
}
