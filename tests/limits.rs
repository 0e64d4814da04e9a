//! Connection limits on real sockets (issue #13): the per-address limit is one count
//! across all listeners; over it, implicit-TLS listeners complete the handshake and refuse
//! over TLS (never a plaintext byte first) while plain SMTP refuses in its greeting; a
//! network with its own limit (`limits.network_connections`) takes many connections from
//! one address. Clients bind 127.0.0.N source addresses to be many peers.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::server::Server;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;

/// A TCP connection to `to` from the loopback address `127.0.0.{src}`.
pub async fn tcp_from(src: u8, to: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(SocketAddr::from(([127, 0, 0, src], 0))).unwrap();
    s.connect(to).await.unwrap()
}

async fn tls_from(
    src: u8,
    to: SocketAddr,
    tls: &Arc<rustls::ClientConfig>,
) -> TlsStream<TcpStream> {
    let tcp = tcp_from(src, to).await;
    let name = rustls::pki_types::ServerName::IpAddress(IpAddr::from([127, 0, 0, 1]).into());
    // A plaintext byte before the handshake would make this fail.
    tokio::time::timeout(
        Duration::from_secs(10),
        tokio_rustls::TlsConnector::from(tls.clone()).connect(name, tcp),
    )
    .await
    .expect("handshake in time")
    .expect("a TLS handshake, not plaintext")
}

async fn first_line<S: tokio::io::AsyncRead + Unpin>(s: S) -> String {
    let mut line = String::new();
    let mut r = BufReader::new(s);
    tokio::time::timeout(Duration::from_secs(10), r.read_line(&mut line))
        .await
        .expect("a greeting in time")
        .expect("read");
    line
}

fn server() -> Server {
    let s = Server::new("pec.limits.test", &[]);
    s.enable(&["smtp", "imaps", "pop3s"]);
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_address_limit_is_shared_and_implicit_tls_refuses_after_the_handshake() {
    let mut s = server();
    s.limits("max_connections_per_ip = 3\nnetwork_connections = { \"127.0.0.9\" = 40 }");
    s.start();
    let tls = pecd::tls::client_config(&[s.ca()], false).unwrap();
    let (smtp, smtps, sub) = (s.addr("smtp"), s.addr("smtps"), s.addr("submission"));
    let (imaps, pop3s) = (s.addr("imaps"), s.addr("pop3s"));

    // One connection on each of three listeners from 127.0.0.5: its limit of 3, together.
    let mut imap = BufReader::new(tls_from(5, imaps, &tls).await);
    let mut line = String::new();
    imap.read_line(&mut line).await.unwrap();
    assert!(line.starts_with("* OK"), "{line}");
    let mut pop = BufReader::new(tls_from(5, pop3s, &tls).await);
    line.clear();
    pop.read_line(&mut line).await.unwrap();
    assert!(line.starts_with("+OK"), "{line}");
    let mut port25 = BufReader::new(tcp_from(5, smtp).await);
    line.clear();
    port25.read_line(&mut line).await.unwrap();
    assert!(line.starts_with("220 "), "{line}");

    // A fourth, on yet another listener: SMTPS completes the handshake, then 421 over TLS.
    let refused = first_line(tls_from(5, smtps, &tls).await).await;
    assert!(refused.starts_with("421 4.7.0 "), "{refused:?}");
    // IMAPS and POP3S likewise refuse over TLS.
    let refused = first_line(tls_from(5, imaps, &tls).await).await;
    assert!(refused.starts_with("* BYE [UNAVAILABLE]"), "{refused:?}");
    let refused = first_line(tls_from(5, pop3s, &tls).await).await;
    assert!(refused.starts_with("-ERR [SYS/TEMP]"), "{refused:?}");
    // Plain SMTP (587) refuses in its greeting.
    let refused = first_line(tcp_from(5, sub).await).await;
    assert!(
        refused.starts_with("421 4.7.0 Too many connections from your address"),
        "{refused:?}"
    );
    // Another address is not affected.
    let ok = first_line(tls_from(6, smtps, &tls).await).await;
    assert!(ok.starts_with("220 "), "{ok:?}");

    // Closing the IMAP session frees its place for SMTPS.
    imap.get_mut().write_all(b"a LOGOUT\r\n").await.unwrap();
    let mut rest = Vec::new();
    let _ = imap.read_to_end(&mut rest).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let l = first_line(tls_from(5, smtps, &tls).await).await;
        if l.starts_with("220 ") {
            break;
        }
        assert!(l.starts_with("421 ") && Instant::now() < deadline, "{l:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // 127.0.0.9 has a network limit of 40: 30 sessions from that one address.
    let mut held = Vec::new();
    for _ in 0..30 {
        let mut c = BufReader::new(tcp_from(9, smtp).await);
        let mut l = String::new();
        c.read_line(&mut l).await.unwrap();
        assert!(l.starts_with("220 "), "{l:?}");
        held.push(c);
    }
    drop((pop, port25, held));
    s.stop();
}

/// Peak resident set size of the child (`VmHWM` of `/proc/PID/status`).
fn peak_rss(s: &Server) -> u64 {
    s.peak_rss_bytes().expect("running")
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Sessions, source addresses, unfinished DATA per session and the RSS bound of
/// [`hostile_port25_load_keeps_memory_bounded_and_users_can_send`] (also in the README).
const HOSTILE_SESSIONS: usize = 300;
const HOSTILE_SOURCES: u8 = 30;
const HOSTILE_DATA: usize = 1024 * 1024;
const RSS_BOUND: u64 = 256 * 1024 * 1024;

/// Issue #13 item 2: hundreds of anonymous port-25 sessions from many addresses, each in
/// the middle of a large DATA, while the listener is full. DATA goes to the spool (not
/// memory) up to the in-flight budget, transfers past it are read and dropped, the next
/// port-25 connection gets a 421 greeting, and an authenticated user still sends over
/// SMTPS and gets 250. The server's peak RSS (its high-water mark, so nothing in between is
/// missed) stays under [`RSS_BOUND`]; before streaming, 60 such sessions took 2.8 GiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_port25_load_keeps_memory_bounded_and_users_can_send() {
    let mut s = Server::new("pec.limits.test", &[("user@pec.limits.test", "pw")]);
    s.enable(&["smtp"]);
    let inflight: u64 = 128 * 1024 * 1024;
    s.limits(&format!(
        "max_incoming_message_bytes = 73400320\nmax_inflight_data_bytes = {inflight}\n\
         max_processing_bytes = 16777216\nmax_connections_per_listener = {HOSTILE_SESSIONS}"
    ));
    s.start();
    let smtp = s.addr("smtp");
    let spool = s.data_dir().join("spool");
    let body: Arc<Vec<u8>> = Arc::new(
        b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789\r\n"
            .repeat(HOSTILE_DATA / 78),
    );
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..HOSTILE_SESSIONS {
        let body = body.clone();
        let src = 10 + (i % HOSTILE_SOURCES as usize) as u8;
        tasks.push(tokio::spawn(async move {
            let mut c = BufReader::new(tcp_from(src, smtp).await);
            c.get_mut()
                .write_all(
                    b"EHLO hostile.test\r\nMAIL FROM:<x@hostile.test>\r\n\
                      RCPT TO:<nobody@pec.limits.test>\r\nDATA\r\n",
                )
                .await
                .unwrap();
            for want in [220, 250, 250, 250, 354] {
                let (code, line) = common::smtp::reply(&mut c).await;
                assert_eq!(code, want, "{line}");
            }
            c.get_mut().write_all(&body).await.unwrap();
            c
        }));
    }
    let mut held = Vec::new();
    for t in tasks {
        held.push(t.await.unwrap());
    }
    // The server has read more than half the budget's worth of DATA into the spool.
    let deadline = Instant::now() + Duration::from_secs(60);
    while dir_bytes(&spool) < inflight / 2 {
        assert!(Instant::now() < deadline, "spool at {}", dir_bytes(&spool));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let spooled = dir_bytes(&spool);
    assert!(
        spooled <= inflight,
        "the spool stays within its budget: {spooled}"
    );

    // The listener is full: one more gets 421 as its greeting.
    let refused = first_line(tcp_from(99, smtp).await).await;
    assert!(refused.starts_with("421 4.7.0 "), "{refused:?}");
    // Meanwhile a user sends over SMTPS (its own budgets) and gets 250.
    let msg = b"From: user@pec.limits.test\r\nTo: user@pec.limits.test\r\nSubject: still here\r\n\
Date: Mon, 23 Nov 2026 10:00:00 +0100\r\nMessage-ID: <u1@mua.test>\r\n\r\nciao\r\n";
    let r = common::smtp::submit(
        s.addr("smtps"),
        &s.ca(),
        "user@pec.limits.test",
        "pw",
        &["user@pec.limits.test"],
        msg,
    )
    .await;
    assert_eq!(r.0, 250, "{r:?}");
    let rss_held = s.rss_bytes().unwrap();
    let peak_held = peak_rss(&s);

    // The transfers end: those past the in-flight budget get 452 4.3.1, the others are
    // processed (not PEC, and nobody takes anomalies: 550).
    let mut tasks = Vec::new();
    for mut c in held {
        tasks.push(tokio::spawn(async move {
            c.get_mut().write_all(b".\r\nQUIT\r\n").await.unwrap();
            common::smtp::reply(&mut c).await
        }));
    }
    let mut by_code = std::collections::BTreeMap::<u16, usize>::new();
    for t in tasks {
        let (code, line) = t.await.unwrap();
        assert!([452, 550].contains(&code), "{line}");
        if code == 452 {
            assert!(line.starts_with("452 4.3.1 "), "{line}");
        }
        *by_code.entry(code).or_default() += 1;
    }
    assert!(by_code.get(&452).copied().unwrap_or(0) > 0, "{by_code:?}");
    assert!(by_code.get(&550).copied().unwrap_or(0) > 0, "{by_code:?}");
    let peak = peak_rss(&s);
    eprintln!(
        "hostile load: {HOSTILE_SESSIONS} sessions × {HOSTILE_DATA} octets from \
         {HOSTILE_SOURCES} addresses; spooled {spooled}; RSS while held {} MiB (peak {} MiB), peak {} MiB; \
         replies {by_code:?}; {:?}",
        rss_held >> 20,
        peak_held >> 20,
        peak >> 20,
        started.elapsed()
    );
    assert!(peak < RSS_BOUND, "peak RSS {} MiB", peak >> 20);
    // Nothing is left in the spool.
    let deadline = Instant::now() + Duration::from_secs(10);
    while dir_bytes(&spool) > 0 {
        assert!(Instant::now() < deadline, "spool not emptied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.stop();
}
