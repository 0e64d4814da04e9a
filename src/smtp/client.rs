//! The SMTP client that relays envelopes to other providers (RFC 5321, RFC 3207).
//!
//! Between providers STARTTLS is mandatory (digest §7.4): the client refuses to send over
//! a clear channel and verifies the peer's certificate against the configured roots. One
//! transaction per call: EHLO, STARTTLS, EHLO, MAIL, RCPT per recipient, DATA with
//! dot-stuffing, QUIT. Replies are classified per recipient as accepted, temporary (4xx,
//! retry later) or permanent (5xx).
//!
//! Untrusted input: every reply line of the peer (bounded in length and count).

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Longest reply line accepted, and most lines in one reply.
const MAX_REPLY_LINE: usize = 4096;
const MAX_REPLY_LINES: usize = 100;

/// What happened to one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptOutcome {
    Accepted,
    /// 4xx or a failure of the connection: retry later.
    Temporary(String),
    /// 5xx: the peer will never take it.
    Permanent(String),
}

/// A failure of the whole transaction, before any recipient was decided.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connecting to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("the peer does not offer STARTTLS: refusing to send PEC over a clear channel")]
    NoStartTls,
    #[error("TLS with {0}: {1}")]
    Tls(String, std::io::Error),
    #[error("invalid TLS server name {0:?}")]
    ServerName(String),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("timed out waiting for the peer")]
    Timeout,
    #[error("the peer answered {code}: {text}")]
    Reply { code: u16, text: String },
    #[error("malformed reply from the peer: {0:?}")]
    Malformed(String),
}

impl ClientError {
    /// True when retrying later may succeed.
    pub fn is_temporary(&self) -> bool {
        match self {
            ClientError::Reply { code, .. } => *code < 500,
            ClientError::NoStartTls | ClientError::ServerName(_) => false,
            _ => true,
        }
    }
}

/// One transaction to relay.
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    pub helo: &'a str,
    pub mail_from: &'a str,
    pub rcpt_to: &'a [String],
    /// CRLF message bytes (dot-stuffed here).
    pub data: &'a [u8],
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct Peer {
    pub host: String,
    pub port: u16,
    /// The name the certificate must carry.
    pub tls_name: String,
    pub tls: Arc<rustls::ClientConfig>,
    pub timeout: Duration,
}

struct Conn<S> {
    io: BufReader<S>,
    timeout: Duration,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    async fn reply(&mut self) -> Result<(u16, String), ClientError> {
        let mut text = String::new();
        for _ in 0..MAX_REPLY_LINES {
            let mut line = Vec::new();
            let n = tokio::time::timeout(
                self.timeout,
                (&mut self.io)
                    .take(MAX_REPLY_LINE as u64)
                    .read_until(b'\n', &mut line),
            )
            .await
            .map_err(|_| ClientError::Timeout)??;
            if n == 0 {
                return Err(ClientError::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed",
                )));
            }
            let l = String::from_utf8_lossy(&line).trim_end().to_string();
            let code: u16 = l
                .get(..3)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| ClientError::Malformed(l.chars().take(80).collect()))?;
            text.push_str(l.get(4..).unwrap_or(""));
            text.push('\n');
            if l.as_bytes().get(3) != Some(&b'-') {
                return Ok((code, text.trim_end().to_string()));
            }
        }
        Err(ClientError::Malformed("too many reply lines".into()))
    }

    async fn cmd(&mut self, line: &str) -> Result<(u16, String), ClientError> {
        self.io.get_mut().write_all(line.as_bytes()).await?;
        self.io.get_mut().write_all(b"\r\n").await?;
        self.io.get_mut().flush().await?;
        self.reply().await
    }

    async fn expect(&mut self, line: &str, ok: u16) -> Result<String, ClientError> {
        let (code, text) = self.cmd(line).await?;
        if code / 100 == ok / 100 {
            Ok(text)
        } else {
            Err(ClientError::Reply { code, text })
        }
    }
}

/// Dot-stuffing (RFC 5321 §4.5.2) plus the final `.`, with a CRLF before it if needed.
pub fn dot_stuff(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 64 + 5);
    let mut at_line_start = true;
    for &b in data {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    if !data.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// Relays one transaction. Err: nothing was decided (retry or give up as the error says).
pub async fn send(
    peer: &Peer,
    msg: &Outgoing<'_>,
) -> Result<Vec<(String, RcptOutcome)>, ClientError> {
    let target = format!("{}:{}", peer.host, peer.port);
    let tcp = tokio::time::timeout(peer.timeout, TcpStream::connect(&target))
        .await
        .map_err(|_| ClientError::Timeout)?
        .map_err(|e| ClientError::Connect(target.clone(), e))?;
    let _ = tcp.set_nodelay(true);
    let mut c = Conn {
        io: BufReader::new(tcp),
        timeout: peer.timeout,
    };
    let (code, text) = c.reply().await?;
    if code != 220 {
        return Err(ClientError::Reply { code, text });
    }
    let caps = c.expect(&format!("EHLO {}", msg.helo), 250).await?;
    if !caps
        .lines()
        .any(|l| l.trim().eq_ignore_ascii_case("STARTTLS"))
    {
        let _ = c.cmd("QUIT").await;
        return Err(ClientError::NoStartTls);
    }
    c.expect("STARTTLS", 220).await?;
    let name = ServerName::try_from(peer.tls_name.clone())
        .map_err(|_| ClientError::ServerName(peer.tls_name.clone()))?;
    let tcp = c.io.into_inner();
    let tls = tokio_rustls::TlsConnector::from(peer.tls.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| ClientError::Tls(target.clone(), e))?;
    let mut c = Conn {
        io: BufReader::new(tls),
        timeout: peer.timeout,
    };
    c.expect(&format!("EHLO {}", msg.helo), 250).await?;
    c.expect(&format!("MAIL FROM:<{}>", msg.mail_from), 250)
        .await?;
    let mut results = Vec::with_capacity(msg.rcpt_to.len());
    for r in msg.rcpt_to {
        let (code, text) = c.cmd(&format!("RCPT TO:<{r}>")).await?;
        let outcome = match code / 100 {
            2 => RcptOutcome::Accepted,
            4 => RcptOutcome::Temporary(format!("{code} {text}")),
            _ => RcptOutcome::Permanent(format!("{code} {text}")),
        };
        results.push((r.clone(), outcome));
    }
    if !results.iter().any(|(_, o)| *o == RcptOutcome::Accepted) {
        let _ = c.cmd("QUIT").await;
        return Ok(results);
    }
    c.expect("DATA", 354).await?;
    c.io.get_mut().write_all(&dot_stuff(msg.data)).await?;
    c.io.get_mut().flush().await?;
    let (code, text) = c.reply().await?;
    if code / 100 != 2 {
        let o = if code / 100 == 4 {
            RcptOutcome::Temporary(format!("{code} {text}"))
        } else {
            RcptOutcome::Permanent(format!("{code} {text}"))
        };
        for r in results
            .iter_mut()
            .filter(|(_, x)| *x == RcptOutcome::Accepted)
        {
            r.1 = o.clone();
        }
    }
    let _ = c.cmd("QUIT").await;
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_stuffing() {
        assert_eq!(
            dot_stuff(b".a\r\nb\r\n..c\r\n"),
            b"..a\r\nb\r\n...c\r\n.\r\n"
        );
        assert_eq!(dot_stuff(b"no newline"), b"no newline\r\n.\r\n");
    }
}
