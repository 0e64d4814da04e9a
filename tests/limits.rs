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
