//! The spamd client: asks SpamAssassin's daemon for a verdict on a message with the
//! `SYMBOLS` command of the spamc protocol (SPAMC/1.5).
//!
//! This module owns the protocol only. The policy is the pipeline's
//! ([`crate::pipeline::spam`]): only non-certified mail is scanned, spam is filed into the
//! Junk folder, and when spamd gives no verdict ([`SpamError`], any variant) the message is
//! deferred (4xx), never passed on unscanned.
//!
//! The exchange (spamd(1), "PROTOCOL"): connect to `[antispam] spamd`, send
//!
//! ```text
//! SYMBOLS SPAMC/1.5\r\n
//! Content-length: <n>\r\n
//! \r\n
//! <n bytes of message>
//! ```
//!
//! and half-close; spamd answers `SPAMD/1.1 0 EX_OK`, headers (`Spam: True ; 15.2 / 5.0`,
//! `Content-length`), an empty line and the comma-separated names of the rules that hit,
//! then closes. A status other than 0, a reply without `Spam:`, or one over [`MAX_REPLY`]
//! bytes is a [`SpamError::Protocol`].
//!
//! Input it distrusts: spamd's reply. Scores must be finite numbers, rule names are kept
//! only when made of letters, digits and `_` (they go into a header of the stored message).
//!
//! Large messages are scanned on their first [`MAX_SCAN_BYTES`] bytes, cut at a line end,
//! as amavisd-new does: SpamAssassin itself reads only the first 50 kB of each text part
//! (`body_part_scan_size`), and a daemon that buffers a 150 MB message in memory per child
//! would be the easiest denial of service on the whole incoming point.

use std::fmt;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

use crate::daemon::{Conn, DaemonAddr, printable};

/// Longest prefix of a message sent to spamd (1 MiB).
pub const MAX_SCAN_BYTES: usize = 1024 * 1024;
/// Longest reply accepted from spamd: headers and the rule names of one message.
pub const MAX_REPLY: usize = 64 * 1024;
/// Default limit on establishing the connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default limit on a whole check: connect, send, and spamd's answer. SpamAssassin with
/// network tests off answers in well under a second; 60 s covers a loaded machine.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(60);

/// spamd's verdict on one message.
#[derive(Debug, Clone, PartialEq)]
pub struct SpamVerdict {
    /// The score reached the threshold.
    pub spam: bool,
    /// The message's score (finite).
    pub score: f64,
    /// The score from which a message is spam (spamd's `required_score`).
    pub threshold: f64,
    /// The names of the rules that hit (e.g. `GTUBE`), letters, digits and `_` only.
    pub rules: Vec<String>,
}

impl SpamVerdict {
    /// The header lines (CRLF-terminated, folded) that record the verdict on the stored
    /// message, in SpamAssassin's own form: `X-Spam-Flag: YES` for spam, `X-Spam-Score`
    /// and `X-Spam-Status: Yes|No, score=… required=… tests=…`.
    pub fn header_lines(&self) -> String {
        // `-0.0 + 0.0` is `0.0`: spamd writes a clean message's score as -0.0.
        let (score, threshold) = (self.score + 0.0, self.threshold + 0.0);
        let mut out = String::new();
        if self.spam {
            out.push_str("X-Spam-Flag: YES\r\n");
        }
        out.push_str(&format!("X-Spam-Score: {score:.1}\r\n"));
        let mut line = format!(
            "X-Spam-Status: {}, score={score:.1} required={threshold:.1} tests=",
            if self.spam { "Yes" } else { "No" },
        );
        let tests = if self.rules.is_empty() {
            "none".to_string()
        } else {
            self.rules.join(",")
        };
        // Folded before 78 columns, after a comma (RFC 5322 §2.2.3).
        let mut col = line.len();
        for (i, piece) in tests.split_inclusive(',').enumerate() {
            if i > 0 && col + piece.len() > 76 {
                line.push_str("\r\n\t");
                col = 1;
            }
            line.push_str(piece);
            col += piece.len();
        }
        out.push_str(&line);
        out.push_str("\r\n");
        out
    }
}

/// Why no verdict could be had. Every variant means "not scanned": the caller must not
/// pass the message on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpamError {
    /// The `[antispam] spamd` address is neither `"host:port"` nor an absolute path.
    #[error("invalid spamd address: {0}")]
    InvalidAddress(String),
    /// spamd could not be reached or did not answer in time: the caller defers (4xx).
    #[error("spamd unavailable: {0}")]
    Unavailable(String),
    /// spamd answered something that is not a verdict.
    #[error("spamd protocol error: {0}")]
    Protocol(String),
}

/// A spamd client; cheap to clone, holds no connection.
#[derive(Debug, Clone)]
pub struct SpamFilter {
    addr: DaemonAddr,
    connect_timeout: Duration,
    check_timeout: Duration,
}

impl fmt::Display for SpamFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spamd at {}", self.addr)
    }
}

impl SpamFilter {
    /// A client for `[antispam] spamd`. Does not connect.
    pub fn from_config(spamd: &str) -> Result<Self, SpamError> {
        Ok(SpamFilter {
            addr: DaemonAddr::parse(spamd).map_err(SpamError::InvalidAddress)?,
            connect_timeout: CONNECT_TIMEOUT,
            check_timeout: CHECK_TIMEOUT,
        })
    }

    /// Replaces the default timeouts ([`CONNECT_TIMEOUT`], [`CHECK_TIMEOUT`]).
    pub fn with_timeouts(mut self, connect: Duration, check: Duration) -> Self {
        self.connect_timeout = connect;
        self.check_timeout = check;
        self
    }

    /// spamd's verdict on `message` (at most its first [`MAX_SCAN_BYTES`] bytes are sent).
    pub async fn check(&self, message: &[u8]) -> Result<SpamVerdict, SpamError> {
        let body = scan_prefix(message);
        let head = format!(
            "SYMBOLS SPAMC/1.5\r\nContent-length: {}\r\n\r\n",
            body.len()
        );
        let reply = self
            .exchange(self.check_timeout, head.as_bytes(), body)
            .await?;
        parse_reply(&reply).map_err(|e| self.locate(e))
    }

    /// Checks that spamd answers `PING` with `PONG`.
    pub async fn ping(&self) -> Result<(), SpamError> {
        let limit = self.connect_timeout.saturating_mul(2);
        let reply = self.exchange(limit, b"PING SPAMC/1.5\r\n\r\n", &[]).await?;
        let first = reply.split(|&b| b == b'\n').next().unwrap_or_default();
        if first.starts_with(b"SPAMD/") && first.windows(4).any(|w| w == b"PONG") {
            Ok(())
        } else {
            Err(self.locate(SpamError::Protocol(format!(
                "PING answered {:?}",
                printable(first)
            ))))
        }
    }

    /// Connects, sends `head` and `body`, half-closes and reads the whole reply, all
    /// within `limit`.
    async fn exchange(
        &self,
        limit: Duration,
        head: &[u8],
        body: &[u8],
    ) -> Result<Vec<u8>, SpamError> {
        let work = async {
            let mut conn: Conn = self
                .addr
                .connect(self.connect_timeout)
                .await
                .map_err(SpamError::Unavailable)?;
            let sent = async {
                conn.write_all(head).await?;
                conn.write_all(body).await?;
                conn.flush().await?;
                conn.shutdown().await
            };
            sent.await
                .map_err(|e| SpamError::Unavailable(format!("send: {e}")))?;
            read_reply(&mut conn).await
        };
        match timeout(limit, work).await {
            Ok(r) => r.map_err(|e| self.locate(e)),
            Err(_) => Err(SpamError::Unavailable(format!(
                "{self}: no answer within {limit:?}"
            ))),
        }
    }

    /// Prefixes errors with the address, for the log.
    fn locate(&self, e: SpamError) -> SpamError {
        match e {
            SpamError::Unavailable(m) => SpamError::Unavailable(format!("{self}: {m}")),
            SpamError::Protocol(m) => SpamError::Protocol(format!("{self}: {m}")),
            other => other,
        }
    }
}

/// The part of `message` sent to spamd: all of it up to [`MAX_SCAN_BYTES`], else its
/// first [`MAX_SCAN_BYTES`] bytes cut after the last line end.
pub fn scan_prefix(message: &[u8]) -> &[u8] {
    if message.len() <= MAX_SCAN_BYTES {
        return message;
    }
    let head = message.get(..MAX_SCAN_BYTES).unwrap_or(message);
    match head.iter().rposition(|&b| b == b'\n') {
        Some(i) => head.get(..=i).unwrap_or(head),
        None => head,
    }
}

/// Reads to the end of the stream, at most [`MAX_REPLY`] bytes.
async fn read_reply(conn: &mut Conn) -> Result<Vec<u8>, SpamError> {
    let mut reply = Vec::with_capacity(256);
    let mut limited = (&mut *conn).take(MAX_REPLY as u64 + 1);
    limited
        .read_to_end(&mut reply)
        .await
        .map_err(|e| SpamError::Unavailable(format!("reading the reply: {e}")))?;
    if reply.is_empty() {
        return Err(SpamError::Unavailable(
            "connection closed without a reply".into(),
        ));
    }
    if reply.len() > MAX_REPLY {
        return Err(SpamError::Protocol(format!(
            "reply longer than {MAX_REPLY} bytes"
        )));
    }
    Ok(reply)
}

/// Interprets a `SYMBOLS` reply.
fn parse_reply(reply: &[u8]) -> Result<SpamVerdict, SpamError> {
    let text = std::str::from_utf8(reply)
        .map_err(|_| SpamError::Protocol(format!("non-UTF-8 reply {:?}", printable(reply))))?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .or_else(|| text.split_once("\n\n"))
        .unwrap_or((text, ""));
    let mut lines = head.lines();
    let status = lines.next().unwrap_or_default();
    let mut parts = status.splitn(3, ' ');
    let (proto, code, msg) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    if !proto.starts_with("SPAMD/") {
        return Err(SpamError::Protocol(format!(
            "unexpected reply {:?}",
            printable(status.as_bytes())
        )));
    }
    if code != "0" {
        return Err(SpamError::Protocol(format!(
            "spamd error {code}: {}",
            printable(msg.as_bytes())
        )));
    }
    let spam_line = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("spam"))
        .map(|(_, v)| v.trim())
        .ok_or_else(|| SpamError::Protocol("reply without a Spam: header".into()))?;
    // `True ; 15.2 / 5.0`
    let bad = || SpamError::Protocol(format!("bad Spam: header {spam_line:?}"));
    let (flag, scores) = spam_line.split_once(';').ok_or_else(bad)?;
    let (score, threshold) = scores.split_once('/').ok_or_else(bad)?;
    let spam = match flag.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" => true,
        "false" | "no" => false,
        _ => return Err(bad()),
    };
    let number = |s: &str| {
        s.trim()
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .ok_or_else(bad)
    };
    let rules = body
        .split(',')
        .map(str::trim)
        .filter(|r| {
            !r.is_empty()
                && r.len() <= 64
                && r.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        })
        .map(str::to_owned)
        .collect();
    Ok(SpamVerdict {
        spam,
        score: number(score)?,
        threshold: number(threshold)?,
        rules,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_symbols_reply_is_a_verdict() {
        let v = parse_reply(
            b"SPAMD/1.1 0 EX_OK\r\nContent-length: 24\r\nSpam: True ; 1003.3 / 5.0\r\n\r\nGTUBE,MISSING_DATE,NO_RELAYS",
        )
        .unwrap();
        assert!(v.spam);
        assert_eq!((v.score, v.threshold), (1003.3, 5.0));
        assert_eq!(v.rules, ["GTUBE", "MISSING_DATE", "NO_RELAYS"]);
        let ham = parse_reply(b"SPAMD/1.1 0 EX_OK\r\nSpam: False ; -0.0 / 5.0\r\n\r\n").unwrap();
        assert!(!ham.spam && ham.rules.is_empty());
        assert!(
            ham.header_lines()
                .starts_with("X-Spam-Score: 0.0\r\nX-Spam-Status: No, score=0.0")
        );
    }

    #[test]
    fn what_is_not_a_verdict_is_an_error() {
        for bad in [
            &b"SPAMD/1.1 76 Bad header line: (EOF)\r\n\r\n"[..],
            b"SPAMD/1.1 0 EX_OK\r\n\r\nGTUBE",
            b"SPAMD/1.1 0 EX_OK\r\nSpam: Maybe ; 1 / 5\r\n\r\n",
            b"SPAMD/1.1 0 EX_OK\r\nSpam: True ; NaN / 5\r\n\r\n",
            b"SPAMD/1.1 0 EX_OK\r\nSpam: True ; inf / 5\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n\r\n",
            b"\xff\xfe",
        ] {
            assert!(
                matches!(parse_reply(bad), Err(SpamError::Protocol(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    /// Rule names end up in a header of the stored message: nothing but a name passes.
    #[test]
    fn rule_names_cannot_inject_header_lines() {
        let v = parse_reply(
            b"SPAMD/1.1 0 EX_OK\r\nSpam: True ; 9 / 5\r\n\r\nA_1,B\r\nX-Evil: 1,C D,\xc3\xa8,OK",
        )
        .unwrap();
        assert_eq!(v.rules, ["A_1", "OK"]);
        let many = SpamVerdict {
            rules: (0..40).map(|i| format!("RULE_NUMBER_{i}")).collect(),
            ..v
        };
        let h = many.header_lines();
        assert!(h.lines().all(|l| l.len() <= 78), "{h}");
        assert!(
            h.starts_with("X-Spam-Flag: YES\r\nX-Spam-Score: 9.0\r\n"),
            "{h}"
        );
        assert!(h.contains("\r\n\tRULE_NUMBER_"), "{h}");
    }

    #[test]
    fn large_messages_are_cut_at_a_line_end() {
        let mut m = b"Subject: x\r\n\r\n".to_vec();
        while m.len() <= MAX_SCAN_BYTES + 100 {
            m.extend_from_slice(b"0123456789 line\r\n");
        }
        let p = scan_prefix(&m);
        assert!(p.len() <= MAX_SCAN_BYTES && p.len() > MAX_SCAN_BYTES - 20);
        assert!(p.ends_with(b"\r\n"));
        assert_eq!(scan_prefix(b"short"), b"short");
    }
}
