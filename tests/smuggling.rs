//! SMTP smuggling (issue #13 item 6, RFC 5321 §2.3.8) on real sockets, on the submission
//! port (SMTPS, authenticated) and on port 25: after the content, a client writes an
//! end-of-data variant, then the commands of a second, forged message, then the real
//! `<CRLF>.<CRLF>` and QUIT. Bare-LF variants are content: one message, one reply, and the
//! "commands" are in its body. Any bare CR refuses the message with 554 and closes the
//! connection, so the forged message is never read as commands. The mailbox ends up with
//! exactly the messages the variants that are content made, none more. (The relay's
//! output for the same variants is checked in `tests/relay.rs`.)

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use common::server::Server;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

const DOMAIN: &str = "pec.smuggle.test";

/// Ends of data a lenient receiver might honour, and whether pecd must take them as
/// content (bare LF) or refuse them (bare CR).
const VARIANTS: [(&[u8], bool); 8] = [
    (b"\n.\n", true),
    (b"\n.\r\n", true),
    (b"\r\n.\n", true),
    (b"\r.\r", false),
    (b"\r.\r\n", false),
    (b"\r\n.\r\r\n", false),
    (b"\r\n.\r", false),
    (b"\r\r\n.\r\n", false),
];

/// The commands of the forged message hidden after the variant.
fn forged() -> Vec<u8> {
    format!(
        "MAIL FROM:<a@{DOMAIN}>\r\nRCPT TO:<b@{DOMAIN}>\r\nDATA\r\nFrom: a@{DOMAIN}\r\n\
         To: b@{DOMAIN}\r\nSubject: forged\r\n\r\nforged\r\n"
    )
    .into_bytes()
}

/// One transaction with `variant` inside its content; returns the replies from the one
/// to the final dot on, until the server closes (or 20 s pass).
async fn attempt<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    auth: bool,
    mail_from: &str,
    n: usize,
    variant: &[u8],
) -> Vec<u16> {
    let mut s = BufReader::new(stream);
    let mut step = async |cmd: String, want: u16| {
        if !cmd.is_empty() {
            s.get_mut().write_all(cmd.as_bytes()).await.unwrap();
        }
        let r = common::smtp::reply(&mut s).await;
        assert_eq!(r.0, want, "{cmd:?} -> {r:?}");
    };
    step(String::new(), 220).await;
    step("EHLO client.test\r\n".into(), 250).await;
    if auth {
        let plain = base64::engine::general_purpose::STANDARD.encode(format!("\0a@{DOMAIN}\0pw"));
        step(format!("AUTH PLAIN {plain}\r\n"), 235).await;
    }
    step(format!("MAIL FROM:<{mail_from}>\r\n"), 250).await;
    step(format!("RCPT TO:<b@{DOMAIN}>\r\n"), 250).await;
    step("DATA\r\n".into(), 354).await;
    let head = format!(
        "From: {mail_from}\r\nTo: b@{DOMAIN}\r\nSubject: variant {n}\r\n\
         Date: Mon, 23 Nov 2026 10:00:00 +0100\r\nMessage-ID: <v{n}-{auth}@client.test>\r\n\r\nbody"
    );
    let wire = [head.as_bytes(), variant, &forged(), b".\r\nQUIT\r\n"].concat();
    s.get_mut().write_all(&wire).await.unwrap();
    let mut codes = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut line = String::new();
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read_line(&mut line)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(_)) => {
                if line.as_bytes().get(3) == Some(&b' ') {
                    codes.push(line[..3].parse().unwrap());
                }
            }
            Err(_) => panic!("the server neither answered nor closed: {codes:?}"),
        }
    }
    codes
}

/// The number of messages in b's mailbox (`pecd mailbox list --json` through the running
/// server).
fn messages_of_b(s: &Server) -> u64 {
    let out = s.admin(&["mailbox", "list", "--json"]);
    out.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|m| m["address"] == format!("b@{DOMAIN}"))
        .and_then(|m| m["messages"].as_u64())
        .expect("b is listed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_end_of_data_variant_smuggles_a_message_on_either_port() {
    let mut s = Server::new(
        DOMAIN,
        &[
            (&format!("a@{DOMAIN}"), "pw"),
            (&format!("b@{DOMAIN}"), "pw"),
        ],
    );
    s.enable(&["smtp"]);
    s.admin(&[
        "mailbox",
        "options",
        &format!("b@{DOMAIN}"),
        "--accept-anomalies",
        "true",
    ]);
    s.start();
    let tls = pecd::tls::client_config(&[&s.ca()], false).unwrap();
    let mut content = 0;
    for (n, (variant, is_content)) in VARIANTS.iter().enumerate() {
        let smtps = s.addr("smtps");
        let tcp = tokio::net::TcpStream::connect(smtps).await.unwrap();
        let name = rustls::pki_types::ServerName::IpAddress(smtps.ip().into());
        let stream = tokio_rustls::TlsConnector::from(Arc::clone(&tls))
            .connect(name, tcp)
            .await
            .unwrap();
        let submission = attempt(stream, true, &format!("a@{DOMAIN}"), n, variant).await;
        let tcp = tokio::net::TcpStream::connect(s.addr("smtp"))
            .await
            .unwrap();
        let incoming = attempt(tcp, false, "x@elsewhere.test", n, variant).await;
        if *is_content {
            content += 2;
            assert_eq!(submission, vec![250, 221], "submission {variant:?}");
            assert_eq!(incoming, vec![250, 221], "port 25 {variant:?}");
        } else {
            assert_eq!(submission, vec![554], "submission {variant:?}");
            assert_eq!(incoming, vec![554], "port 25 {variant:?}");
        }
    }
    // b gets one certified message per accepted submission (local delivery through the
    // queue) and one anomaly envelope per port-25 message; nothing forged.
    let deadline = Instant::now() + Duration::from_secs(60);
    while messages_of_b(&s) < content {
        assert!(Instant::now() < deadline, "b has {}", messages_of_b(&s));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(messages_of_b(&s), content, "no forged message reached b");
    s.stop();
}
