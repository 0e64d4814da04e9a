//! The clamd client: scans a message with clamd's `INSTREAM` command.
//!
//! This module owns the clamd protocol only. The policy is applied by the pipeline:
//! an infected message is a non-acceptance for virus at the access point and gets the
//! virus notices (rilevazione virus) at the incoming point; when clamd cannot be asked
//! ([`ScanError`], any variant) the message is deferred (4xx) and never passed on
//! unscanned.
//!
//! The exchange (clamd(8), "INSTREAM"): connect to `[antivirus] clamd` (`"host:port"` or an
//! absolute unix socket path), send `zINSTREAM\0`, then the data in chunks of at most
//! [`CHUNK`] bytes, each prefixed by its length as a 4-byte big-endian integer, then a
//! zero-length chunk; clamd answers one `\0`-terminated line and closes:
//!
//! | reply | result |
//! |---|---|
//! | `stream: OK` | [`Verdict::Clean`] |
//! | `stream: <signature> FOUND` | [`Verdict::Infected`] |
//! | `INSTREAM size limit exceeded. ERROR` | [`ScanError::TooLarge`] (clamd's `StreamMaxLength`) |
//! | `... ERROR`, anything else, a reply over [`MAX_REPLY`] bytes | [`ScanError::Protocol`] |
//! | refused, reset, closed before the `\0`, timed out | [`ScanError::Unavailable`] |
//!
//! clamd may answer (and close) before it has read the whole stream, when the size limit is
//! hit; the reply is therefore read while the chunks are being written, so that the error
//! is reported instead of the broken pipe it causes.
//!
//! One connection per scan (no `IDSESSION`): a scan is milliseconds next to the SMTP
//! transaction around it, and a fresh connection never carries a stale state.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::timeout;

use crate::daemon::{Conn, DaemonAddr, printable};

/// Largest chunk sent in one `INSTREAM` frame (64 KiB).
pub const CHUNK: usize = 64 * 1024;
/// Longest reply accepted from clamd, `\0` included; a signature name is well under 256 bytes.
pub const MAX_REPLY: usize = 4096;
/// Default limit on establishing the connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default limit on a whole scan: connect, send, and clamd's answer.
pub const SCAN_TIMEOUT: Duration = Duration::from_secs(60);

/// What clamd found in the data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No signature matched.
    Clean,
    /// A signature matched; its name as clamd reports it (e.g. `Eicar-Signature`).
    Infected(String),
}

/// Why the data could not be scanned. Every variant means "not scanned": the caller must
/// not pass the message on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    /// The `[antivirus] clamd` address is neither `"host:port"` nor an absolute path.
    #[error("invalid clamd address: {0}")]
    InvalidAddress(String),
    /// clamd could not be reached or did not answer in time (connect, I/O, timeout,
    /// connection closed before the reply): a temporary failure, the caller defers (4xx).
    #[error("clamd unavailable: {0}")]
    Unavailable(String),
    /// clamd answered something that is not a verdict: an `ERROR` reply other than the size
    /// limit, garbage, an over-long reply.
    #[error("clamd protocol error: {0}")]
    Protocol(String),
    /// clamd refused the stream as larger than its `StreamMaxLength`; the field is the size
    /// of the data this client tried to send. Retrying will not help until clamd's limit
    /// is raised to at least the largest accepted message.
    #[error(
        "clamd refused a {0}-byte stream: INSTREAM size limit exceeded (raise StreamMaxLength)"
    )]
    TooLarge(usize),
}

/// A clamd client; cheap to clone, holds no connection.
#[derive(Debug, Clone)]
pub struct Scanner {
    addr: DaemonAddr,
    connect_timeout: Duration,
    scan_timeout: Duration,
}

impl fmt::Display for Scanner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "clamd at {}", self.addr)
    }
}

impl Scanner {
    /// A scanner for `[antivirus] clamd`: `"host:port"` (IP, `[IPv6]` or DNS name) or an
    /// absolute unix socket path. Does not connect.
    pub fn from_config(clamd: &str) -> Result<Self, ScanError> {
        let addr = DaemonAddr::parse(clamd).map_err(ScanError::InvalidAddress)?;
        Ok(Scanner {
            addr,
            connect_timeout: CONNECT_TIMEOUT,
            scan_timeout: SCAN_TIMEOUT,
        })
    }

    /// Replaces the default timeouts ([`CONNECT_TIMEOUT`], [`SCAN_TIMEOUT`]).
    pub fn with_timeouts(mut self, connect: Duration, scan: Duration) -> Self {
        self.connect_timeout = connect;
        self.scan_timeout = scan;
        self
    }

    /// Scans `data` (a whole message, as received) with `INSTREAM`.
    pub async fn scan(&self, data: &[u8]) -> Result<Verdict, ScanError> {
        let reply = self
            .with_conn(self.scan_timeout, |conn| instream(conn, data))
            .await?;
        parse_scan_reply(&reply, data.len())
    }

    /// Checks that clamd answers `PING` with `PONG`.
    pub async fn ping(&self) -> Result<(), ScanError> {
        let limit = self.connect_timeout.saturating_mul(2);
        let reply = self
            .with_conn(limit, |conn| command(conn, b"zPING\0"))
            .await?;
        match reply.as_slice() {
            b"PONG" => Ok(()),
            other => Err(ScanError::Protocol(format!(
                "PING answered {:?}",
                printable(other)
            ))),
        }
    }

    /// Connects (within the connect timeout) and runs `f`, the whole within `limit`.
    async fn with_conn<F, Fut>(&self, limit: Duration, f: F) -> Result<Vec<u8>, ScanError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = Result<Vec<u8>, ScanError>>,
    {
        let work = async {
            let conn = self.connect().await?;
            f(conn).await
        };
        match timeout(limit, work).await {
            Ok(r) => r.map_err(|e| self.locate(e)),
            Err(_) => Err(ScanError::Unavailable(format!(
                "{self}: no answer within {limit:?}"
            ))),
        }
    }

    async fn connect(&self) -> Result<Conn, ScanError> {
        self.addr
            .connect(self.connect_timeout)
            .await
            .map_err(ScanError::Unavailable)
    }

    /// Prefixes transport errors with the address, for the log.
    fn locate(&self, e: ScanError) -> ScanError {
        match e {
            ScanError::Unavailable(m) => ScanError::Unavailable(format!("{self}: {m}")),
            ScanError::Protocol(m) => ScanError::Protocol(format!("{self}: {m}")),
            other => other,
        }
    }
}

/// Sends `zINSTREAM\0`, the chunks and the terminator while reading the reply; returns the
/// reply without its `\0`.
async fn instream<S>(stream: S, data: &[u8]) -> Result<Vec<u8>, ScanError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let send = async move {
        wr.write_all(b"zINSTREAM\0").await?;
        let mut frame = Vec::with_capacity(CHUNK + 4);
        for chunk in data.chunks(CHUNK) {
            let len = u32::try_from(chunk.len()).map_err(std::io::Error::other)?;
            frame.clear();
            frame.extend_from_slice(&len.to_be_bytes());
            frame.extend_from_slice(chunk);
            wr.write_all(&frame).await?;
        }
        wr.write_all(&0u32.to_be_bytes()).await?;
        wr.flush().await?;
        Ok::<_, std::io::Error>(wr)
    };
    let recv = read_reply(&mut rd);
    tokio::pin!(send, recv);
    // The write half is kept (not dropped) once sent, so the socket is not half-closed
    // under clamd while it scans.
    let mut sent: Option<Result<_, std::io::Error>> = None;
    loop {
        tokio::select! {
            reply = &mut recv => {
                return match (reply, sent) {
                    (Ok(r), _) => Ok(r),
                    // The reply failed after a write error: the write error is the cause.
                    (Err(_), Some(Err(w))) => Err(ScanError::Unavailable(format!("send: {w}"))),
                    (Err(e), _) => Err(e),
                };
            }
            w = &mut send, if sent.is_none() => sent = Some(w),
        }
    }
}

/// Sends a one-shot command and returns the reply without its `\0`.
async fn command<S>(mut stream: S, cmd: &[u8]) -> Result<Vec<u8>, ScanError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    stream
        .write_all(cmd)
        .await
        .map_err(|e| ScanError::Unavailable(format!("send: {e}")))?;
    read_reply(&mut stream).await
}

/// Reads up to the first `\0`, at most [`MAX_REPLY`] bytes.
async fn read_reply<R: AsyncRead + Unpin>(rd: &mut R) -> Result<Vec<u8>, ScanError> {
    let mut reply = Vec::with_capacity(64);
    let mut buf = [0u8; 512];
    loop {
        let n = rd
            .read(&mut buf)
            .await
            .map_err(|e| ScanError::Unavailable(format!("reading the reply: {e}")))?;
        if n == 0 {
            return Err(ScanError::Unavailable(if reply.is_empty() {
                "connection closed without a reply".to_owned()
            } else {
                format!(
                    "connection closed in the middle of the reply {:?}",
                    printable(&reply)
                )
            }));
        }
        let got = buf.get(..n).unwrap_or_default();
        if let Some(end) = got.iter().position(|&b| b == 0) {
            reply.extend_from_slice(got.get(..end).unwrap_or_default());
            if reply.len() >= MAX_REPLY {
                break;
            }
            return Ok(reply);
        }
        reply.extend_from_slice(got);
        if reply.len() >= MAX_REPLY {
            break;
        }
    }
    Err(ScanError::Protocol(format!(
        "reply longer than {MAX_REPLY} bytes: {:?}...",
        printable(reply.get(..80).unwrap_or_default())
    )))
}

/// Interprets the `INSTREAM` reply (without its `\0`).
fn parse_scan_reply(reply: &[u8], size: usize) -> Result<Verdict, ScanError> {
    let text = std::str::from_utf8(reply)
        .map_err(|_| ScanError::Protocol(format!("non-UTF-8 reply {:?}", printable(reply))))?;
    let text = text.trim_end_matches(['\n', '\r']);
    if let Some(rest) = text.strip_suffix(" ERROR") {
        if rest.contains("size limit exceeded") {
            return Err(ScanError::TooLarge(size));
        }
        return Err(ScanError::Protocol(format!(
            "clamd error: {}",
            printable(rest.as_bytes())
        )));
    }
    let Some(result) = text.strip_prefix("stream: ") else {
        return Err(ScanError::Protocol(format!(
            "unexpected reply {:?}",
            printable(reply)
        )));
    };
    if result == "OK" {
        return Ok(Verdict::Clean);
    }
    if let Some(name) = result.strip_suffix(" FOUND") {
        let name = name.trim();
        if !name.is_empty() && !name.chars().any(char::is_control) {
            return Ok(Verdict::Infected(name.to_owned()));
        }
    }
    Err(ScanError::Protocol(format!(
        "unexpected reply {:?}",
        printable(reply)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio::net::TcpListener;
    use tokio::sync::Mutex;

    /// What the fake clamd does once it has read the command.
    #[derive(Clone)]
    enum Act {
        /// Reads the whole stream, then writes the bytes and closes.
        Reply(&'static [u8]),
        /// Reads the first chunk only, then writes the bytes and closes (size limit).
        ReplyEarly(&'static [u8]),
        /// Reads the whole stream, then never answers.
        Hang,
        /// Answers a one-shot command (PING) with the bytes.
        Command(&'static [u8]),
    }

    /// Per connection: the command, the data, the chunk sizes (terminator included).
    type Received = (Vec<u8>, Vec<u8>, Vec<usize>);

    /// A fake clamd; records what each connection sent.
    struct Fake {
        addr: String,
        got: Arc<Mutex<Vec<Received>>>,
    }

    async fn fake(act: Act) -> Fake {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let got = Arc::new(Mutex::new(Vec::new()));
        let rec = got.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let act = act.clone();
                let rec = rec.clone();
                tokio::spawn(async move {
                    let mut cmd = Vec::new();
                    loop {
                        let b = s.read_u8().await.unwrap();
                        if b == 0 {
                            break;
                        }
                        cmd.push(b);
                    }
                    let (mut data, mut sizes) = (Vec::new(), Vec::new());
                    let reply = match act {
                        Act::Command(r) => r,
                        Act::Reply(_) | Act::Hang | Act::ReplyEarly(_) => loop {
                            let len = s.read_u32().await.unwrap() as usize;
                            sizes.push(len);
                            let mut c = vec![0; len];
                            s.read_exact(&mut c).await.unwrap();
                            data.extend_from_slice(&c);
                            if let Act::ReplyEarly(r) = act {
                                break r;
                            }
                            if len == 0 {
                                match act {
                                    Act::Reply(r) => break r,
                                    _ => {
                                        rec.lock().await.push((cmd, data, sizes));
                                        tokio::time::sleep(Duration::from_secs(3600)).await;
                                        return;
                                    }
                                }
                            }
                        },
                    };
                    rec.lock().await.push((cmd, data, sizes));
                    let _ = s.write_all(reply).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        Fake { addr, got }
    }

    fn scanner(addr: &str) -> Scanner {
        Scanner::from_config(addr)
            .unwrap()
            .with_timeouts(Duration::from_secs(2), Duration::from_secs(5))
    }

    #[tokio::test]
    async fn clean_and_chunking() {
        let f = fake(Act::Reply(b"stream: OK\0")).await;
        let data: Vec<u8> = (0..150_000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(scanner(&f.addr).scan(&data).await, Ok(Verdict::Clean));
        let got = f.got.lock().await;
        let (cmd, body, sizes) = &got[0];
        assert_eq!(cmd, b"zINSTREAM");
        assert_eq!(body, &data);
        assert_eq!(sizes, &[CHUNK, CHUNK, 150_000 - 2 * CHUNK, 0]);
    }

    #[tokio::test]
    async fn empty_data_is_just_the_terminator() {
        let f = fake(Act::Reply(b"stream: OK\0")).await;
        assert_eq!(scanner(&f.addr).scan(b"").await, Ok(Verdict::Clean));
        assert_eq!(f.got.lock().await[0].2, vec![0]);
    }

    #[tokio::test]
    async fn found() {
        let f = fake(Act::Reply(b"stream: Eicar-Signature FOUND\0")).await;
        assert_eq!(
            scanner(&f.addr).scan(b"x").await,
            Ok(Verdict::Infected("Eicar-Signature".into()))
        );
        let f = fake(Act::Reply(b"stream: Win.Test.EICAR_HDB-1 FOUND\0")).await;
        assert_eq!(
            scanner(&f.addr).scan(b"x").await,
            Ok(Verdict::Infected("Win.Test.EICAR_HDB-1".into()))
        );
    }

    #[tokio::test]
    async fn errors() {
        let f = fake(Act::Reply(b"stream: Can't allocate memory ERROR\0")).await;
        let e = scanner(&f.addr).scan(b"x").await.unwrap_err();
        assert!(
            matches!(&e, ScanError::Protocol(m) if m.contains("allocate")),
            "{e:?}"
        );
        for garbage in [
            &b"hello\0"[..],
            b"stream: \0",
            b"stream:  FOUND\0",
            b"stream: OKAY\0",
            b"\xff\xfe\0",
            b"stream: a\x01b FOUND\0",
        ] {
            let leaked: &'static [u8] = Box::leak(garbage.to_vec().into_boxed_slice());
            let f = fake(Act::Reply(leaked)).await;
            let e = scanner(&f.addr).scan(b"x").await.unwrap_err();
            assert!(matches!(e, ScanError::Protocol(_)), "{garbage:?}: {e:?}");
        }
    }

    #[tokio::test]
    async fn size_limit_while_still_sending() {
        // clamd answers after the first chunk and closes; the client is still writing 8 MiB.
        let f = fake(Act::ReplyEarly(b"INSTREAM size limit exceeded. ERROR\0")).await;
        let data = vec![b'a'; 8 << 20];
        assert_eq!(
            scanner(&f.addr).scan(&data).await,
            Err(ScanError::TooLarge(8 << 20))
        );
    }

    #[tokio::test]
    async fn overlong_reply() {
        let long: &'static [u8] = Box::leak(vec![b'A'; 10_000].into_boxed_slice());
        let f = fake(Act::Reply(long)).await;
        let e = scanner(&f.addr).scan(b"x").await.unwrap_err();
        assert!(
            matches!(&e, ScanError::Protocol(m) if m.contains("longer")),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn disconnect_mid_reply_and_without_reply() {
        let f = fake(Act::Reply(b"stream: Eicar-Sig")).await;
        let e = scanner(&f.addr).scan(b"x").await.unwrap_err();
        assert!(
            matches!(&e, ScanError::Unavailable(m) if m.contains("middle")),
            "{e:?}"
        );
        let f = fake(Act::Reply(b"")).await;
        let e = scanner(&f.addr).scan(b"x").await.unwrap_err();
        assert!(matches!(e, ScanError::Unavailable(_)), "{e:?}");
    }

    #[tokio::test]
    async fn slow_server_times_out() {
        let f = fake(Act::Hang).await;
        let s = Scanner::from_config(&f.addr)
            .unwrap()
            .with_timeouts(Duration::from_secs(1), Duration::from_millis(300));
        let t = std::time::Instant::now();
        let e = s.scan(b"data").await.unwrap_err();
        assert!(
            matches!(&e, ScanError::Unavailable(m) if m.contains("no answer")),
            "{e:?}"
        );
        assert!(t.elapsed() < Duration::from_secs(2));
        // The data did reach the fake: the timeout was on the answer.
        assert_eq!(f.got.lock().await[0].1, b"data");
    }

    #[tokio::test]
    async fn refused_is_unavailable() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        drop(l);
        let e = scanner(&addr).scan(b"x").await.unwrap_err();
        assert!(
            matches!(&e, ScanError::Unavailable(m) if m.contains("connect")),
            "{e:?}"
        );
        assert!(matches!(
            scanner(&addr).ping().await,
            Err(ScanError::Unavailable(_))
        ));
    }

    #[tokio::test]
    async fn ping() {
        let f = fake(Act::Command(b"PONG\0")).await;
        assert_eq!(scanner(&f.addr).ping().await, Ok(()));
        assert_eq!(f.got.lock().await[0].0, b"zPING");
        let f = fake(Act::Command(b"UNKNOWN COMMAND\0")).await;
        assert!(matches!(
            scanner(&f.addr).ping().await,
            Err(ScanError::Protocol(_))
        ));
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn unix_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clamd.sock");
        let l = tokio::net::UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut cmd = [0u8; 10];
            s.read_exact(&mut cmd).await.unwrap();
            assert_eq!(&cmd, b"zINSTREAM\0");
            loop {
                let len = s.read_u32().await.unwrap() as usize;
                if len == 0 {
                    break;
                }
                let mut c = vec![0; len];
                s.read_exact(&mut c).await.unwrap();
            }
            s.write_all(b"stream: Unix.Test FOUND\0").await.unwrap();
        });
        let s = scanner(path.to_str().unwrap());
        assert_eq!(
            s.scan(b"x").await,
            Ok(Verdict::Infected("Unix.Test".into()))
        );
        assert!(s.to_string().contains("unix:"));
    }

    #[test]
    fn addresses() {
        for ok in [
            "127.0.0.1:3310",
            "localhost:3310",
            "[::1]:3310",
            "/run/clamav/clamd.ctl",
        ] {
            assert!(Scanner::from_config(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "clamd",
            "host:0",
            "host:99999",
            "relative/clamd.ctl",
            "::1:3310",
            "/a\0b",
        ] {
            assert!(
                matches!(Scanner::from_config(bad), Err(ScanError::InvalidAddress(_))),
                "{bad:?}"
            );
        }
    }
}
