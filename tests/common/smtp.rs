//! A minimal SMTP client for tests that send messages too large for a command-line
//! argument: EHLO, AUTH PLAIN, MAIL, RCPT, DATA (dot-stuffed); over implicit TLS with AUTH
//! (submission) or plain as another mail server on port 25.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Reads one (possibly multi-line) reply; returns its code and last line.
pub async fn reply<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> (u16, String) {
    try_reply(r).await.unwrap_or_else(|e| panic!("{e}"))
}

/// As [`reply`], but a connection closed or broken before a reply is an `Err` saying so.
pub async fn try_reply<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
) -> Result<(u16, String), String> {
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(Duration::from_secs(120), r.read_line(&mut line))
            .await
            .map_err(|_| "no reply in time".to_string())?
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("connection closed before a reply".into());
        }
        if line.as_bytes().get(3) != Some(&b'-') {
            let code = line.get(..3).and_then(|c| c.parse().ok()).expect("a code");
            return Ok((code, line.trim_end().to_string()));
        }
    }
}

/// Submits `data` (CRLF, no final dot) over SMTPS; returns the reply to the final dot.
pub async fn submit(
    addr: SocketAddr,
    ca: &Path,
    user: &str,
    password: &str,
    rcpts: &[&str],
    data: &[u8],
) -> (u16, String) {
    match try_submit(addr, ca, user, password, rcpts, data).await {
        Ok(r) => r,
        Err((cmd, r)) => panic!("{cmd:?} -> {r:?}"),
    }
}

/// Sends `data` as another mail server would on port 25: plain SMTP, no AUTH; returns the
/// reply to the final dot.
pub async fn relay(
    addr: SocketAddr,
    mail_from: &str,
    rcpts: &[&str],
    data: &[u8],
) -> (u16, String) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    transaction(tcp, None, mail_from, rcpts, data).await
}

async fn transaction<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    stream: S,
    auth: Option<(&str, &str)>,
    mail_from: &str,
    rcpts: &[&str],
    data: &[u8],
) -> (u16, String) {
    match try_transaction(stream, auth, mail_from, rcpts, data).await {
        Ok(r) => r,
        Err((cmd, r)) => panic!("{cmd:?} -> {r:?}"),
    }
}

/// As [`submit`], but a refusal at any step is returned (`Err`: the command and the
/// reply) instead of failing the test; so is a connection the server closed or refused.
pub async fn try_submit(
    addr: SocketAddr,
    ca: &Path,
    user: &str,
    password: &str,
    rcpts: &[&str],
    data: &[u8],
) -> Result<(u16, String), (String, (u16, String))> {
    let closed = |what: &str, e: std::io::Error| (what.to_string(), (0, e.to_string()));
    let tls = pecd::tls::client_config(&[ca], false).unwrap();
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| closed("connect", e))?;
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let s = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|e| closed("TLS handshake", e))?;
    try_transaction(s, Some((user, password)), user, rcpts, data).await
}

async fn try_transaction<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    stream: S,
    auth: Option<(&str, &str)>,
    mail_from: &str,
    rcpts: &[&str],
    data: &[u8],
) -> Result<(u16, String), (String, (u16, String))> {
    let mut s = BufReader::new(stream);
    // A connection closed or broken is reported as code 0 with what happened.
    let lost = |cmd: &str, e: String| (cmd.trim_end().to_string(), (0, e));
    let mut step = async |cmd: &str, want: u16| {
        if !cmd.is_empty() {
            s.get_mut()
                .write_all(cmd.as_bytes())
                .await
                .map_err(|e| lost(cmd, format!("write: {e}")))?;
        }
        let r = try_reply(&mut s).await.map_err(|e| lost(cmd, e))?;
        if r.0 == want {
            Ok(())
        } else {
            Err((cmd.trim_end().to_string(), r))
        }
    };
    step("", 220).await?;
    step("EHLO test\r\n", 250).await?;
    if let Some((user, password)) = auth {
        let plain =
            base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
        step(&format!("AUTH PLAIN {plain}\r\n"), 235).await?;
    }
    step(&format!("MAIL FROM:<{mail_from}>\r\n"), 250).await?;
    for r in rcpts {
        step(&format!("RCPT TO:<{r}>\r\n"), 250).await?;
    }
    step("DATA\r\n", 354).await?;
    let w = s.get_mut();
    w.write_all(&dot_stuffed(data))
        .await
        .map_err(|e| lost(".", format!("write: {e}")))?;
    w.flush()
        .await
        .map_err(|e| lost(".", format!("write: {e}")))?;
    let r = try_reply(&mut s).await.map_err(|e| lost(".", e))?;
    let _ = s.get_mut().write_all(b"QUIT\r\n").await;
    Ok(r)
}

/// `data` as DATA content: leading dots doubled, then the final `.CRLF`.
pub fn dot_stuffed(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 1024);
    let mut at_line_start = true;
    for line in data.split_inclusive(|&b| b == b'\n') {
        if at_line_start && line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
        at_line_start = line.ends_with(b"\n");
    }
    if !at_line_start {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}
