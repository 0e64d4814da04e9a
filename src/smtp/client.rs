//! The SMTP client that relays envelopes to other providers and to ordinary mail servers
//! (RFC 5321, RFC 3207, RFC 6152).
//!
//! Two TLS policies ([`TlsPolicy`]): between PEC providers STARTTLS is mandatory (digest
//! §7.4): the client refuses to send over a clear channel and verifies the peer's
//! certificate against the configured roots. Towards ordinary Internet mail (`esterno`
//! recipients, digest §4.2/§6.5) TLS is opportunistic (RFC 7435): STARTTLS when offered,
//! with a certificate that need not verify, and a clear channel when it is not offered, when
//! the server refuses the STARTTLS command (on the same session), or when the handshake
//! fails (then on a new connection).
//!
//! A transaction: EHLO, [STARTTLS, EHLO], MAIL (with `BODY=8BITMIME` when the data is not
//! 7-bit and the peer offers it; refused before MAIL when it does not, RFC 6152 §3), RCPT
//! per recipient, DATA with dot-stuffing. Replies are classified per recipient as accepted,
//! temporary (4xx, retry later) or permanent (5xx). [`send`] and [`send_with`] open a
//! session for one transaction and QUIT; [`send_cached`] keeps the session in a
//! [`ConnCache`] for the next transaction to the same host under the same TLS
//! configuration (RFC 5321 §3.3 allows many transactions per session; Postfix's connection
//! cache does the same), which saves the connection, the TLS handshake and the EHLOs. A
//! cached session that turns out closed (the peer's idle timeout) when its MAIL is sent is
//! dropped and the transaction goes out on a new one: nothing had been sent yet.
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
    /// RFC 6152 §3: 8-bit data must not be sent to a server that does not offer 8BITMIME,
    /// and a signed envelope cannot be re-encoded without breaking its signature.
    #[error("the message has 8-bit content and the peer does not offer 8BITMIME (RFC 6152)")]
    No8BitMime,
    /// A cached session failed at MAIL: closed by the peer while idle, or refused for now
    /// (no content was sent).
    #[error("the cached session was closed by the peer: {0}")]
    Stale(Box<ClientError>),
}

impl ClientError {
    /// True when retrying later may succeed.
    pub fn is_temporary(&self) -> bool {
        match self {
            ClientError::Reply { code, .. } => *code < 500,
            ClientError::NoStartTls | ClientError::ServerName(_) | ClientError::No8BitMime => false,
            _ => true,
        }
    }
}

/// How the channel to the peer is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlsPolicy {
    /// PEC provider to PEC provider: STARTTLS required, certificate verified by the
    /// [`Peer::tls`] configuration (digest §7.4).
    Required,
    /// Ordinary Internet mail (RFC 7435): STARTTLS when offered, using [`Peer::tls`] (pass
    /// [`opportunistic_tls`] so that any certificate is accepted); clear text otherwise.
    Opportunistic,
}

/// A TLS client configuration that encrypts without authenticating the server (RFC 7435
/// §1.3: opportunistic security protects against passive eavesdropping only). The
/// handshake signatures are still checked; only the certificate chain is not.
pub fn opportunistic_tls() -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(AnyCertificate(provider.clone()));
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
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

/// The byte stream of a session: TCP, or TLS over it after STARTTLS.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// An established session: greeted, EHLO answered (`caps`, after TLS when negotiated).
struct Conn {
    io: BufReader<Box<dyn Stream>>,
    timeout: Duration,
    caps: String,
    /// False for a session left in clear although the peer offered STARTTLS (refused or
    /// failed handshake): good for this message, not kept for others, which a new session
    /// may well carry encrypted.
    keep: bool,
}

impl Conn {
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

    /// Sends `line` (one command, or a pipelined group without its last CRLF) in one
    /// write, so that it goes out in one TLS record and one segment, and reads one reply.
    async fn cmd(&mut self, line: &str) -> Result<(u16, String), ClientError> {
        let mut out = Vec::with_capacity(line.len() + 2);
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
        self.io.get_mut().write_all(&out).await?;
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
///
/// The output is canonical whatever the stored bytes hold: every line end, be it CRLF, a
/// bare LF or a bare CR, goes out as CRLF, and every line that starts with a dot is
/// stuffed. So no receiver, however it reads line ends, finds an end of data (or a
/// command) before the final one (RFC 5321 §2.3.8; SMTP smuggling). The access point
/// refuses bare CR and writes bare LF as CRLF, so this changes nothing we signed.
pub fn dot_stuff(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 64 + 5);
    let mut s = DotStuffer::default();
    s.feed(data, &mut out);
    s.finish(&mut out);
    out
}

/// [`dot_stuff`] a piece at a time, so a big message goes out through a small buffer
/// instead of a stuffed copy of the whole (its state carries a line start or a CR across
/// the pieces): the concatenated output is exactly `dot_stuff` of the concatenated input.
#[derive(Debug)]
pub struct DotStuffer {
    at_line_start: bool,
    /// The previous piece ended with a CR, already written as CRLF: an LF next is its.
    after_cr: bool,
    /// Whether anything was written (an empty message still gets its CRLF before `.`).
    wrote: bool,
}

impl Default for DotStuffer {
    fn default() -> Self {
        Self {
            at_line_start: true,
            after_cr: false,
            wrote: false,
        }
    }
}

impl DotStuffer {
    /// Appends the stuffed form of `data` to `out`: every CR, LF or CRLF becomes CRLF and
    /// a dot that starts a line is doubled. The text between line ends is copied a run at
    /// a time (found with `memchr2`), not byte by byte.
    pub fn feed(&mut self, mut data: &[u8], out: &mut Vec<u8>) {
        out.reserve(data.len() + data.len() / 64 + 2);
        while let Some(&first) = data.first() {
            if std::mem::take(&mut self.after_cr) && first == b'\n' {
                data = &data[1..];
                continue;
            }
            let end = memchr::memchr2(b'\r', b'\n', data).unwrap_or(data.len());
            let (text, rest) = data.split_at(end);
            if let Some(&b) = text.first() {
                if self.at_line_start && b == b'.' {
                    out.push(b'.');
                }
                out.extend_from_slice(text);
                self.at_line_start = false;
                self.wrote = true;
            }
            let Some((&line_end, rest)) = rest.split_first() else {
                break;
            };
            out.extend_from_slice(b"\r\n");
            self.after_cr = line_end == b'\r';
            self.at_line_start = true;
            self.wrote = true;
            data = rest;
        }
    }

    /// Appends the end of data: a CRLF if the last line has none, then `.` CRLF.
    pub fn finish(self, out: &mut Vec<u8>) {
        if !(self.wrote && self.at_line_start) {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
    }
}

/// True when every byte is 7-bit and not NUL (RFC 5321 §2.4 / RFC 6152: otherwise the
/// body must be announced as `BODY=8BITMIME`).
pub fn is_7bit(data: &[u8]) -> bool {
    data.is_ascii() && memchr::memchr(0, data).is_none()
}

/// Whether an EHLO reply (without codes, one capability per line) lists `keyword`.
fn offers(caps: &str, keyword: &str) -> bool {
    caps.lines().any(|l| {
        l.split_whitespace()
            .next()
            .is_some_and(|k| k.eq_ignore_ascii_case(keyword))
    })
}

/// Relays one transaction with STARTTLS required ([`TlsPolicy::Required`]).
/// Err: nothing was decided (retry or give up as the error says).
pub async fn send(
    peer: &Peer,
    msg: &Outgoing<'_>,
) -> Result<Vec<(String, RcptOutcome)>, ClientError> {
    send_with(peer, msg, TlsPolicy::Required).await
}

/// Relays one transaction under `policy` on a session of its own. Err: nothing was decided.
pub async fn send_with(
    peer: &Peer,
    msg: &Outgoing<'_>,
    policy: TlsPolicy,
) -> Result<Vec<(String, RcptOutcome)>, ClientError> {
    let mut c = open_with(peer, msg.helo, policy).await?;
    let (results, open) = transaction(&mut c, msg, false).await?;
    if open {
        let _ = c.cmd("QUIT").await;
    }
    Ok(results)
}

/// Opens a session under `policy`; an opportunistic one whose TLS handshake failed is
/// opened again in clear.
async fn open_with(peer: &Peer, helo: &str, policy: TlsPolicy) -> Result<Conn, ClientError> {
    match open(peer, helo, policy, true).await {
        // RFC 7435 §3: opportunistic security never makes delivery fail where clear text
        // would succeed. A failed handshake leaves the session unusable: start over in
        // clear, ignoring the STARTTLS offer this time.
        Err(ClientError::Tls(..)) if policy == TlsPolicy::Opportunistic => {
            open(peer, helo, policy, false).await
        }
        other => other,
    }
}

/// Idle sessions kept per host and TLS configuration.
const CACHE_PER_KEY: usize = 32;
/// How long a session may stay idle in the cache (Postfix: 2 s), and how long and for how
/// many transactions it may be reused at all (Postfix: 300 s).
const CACHE_IDLE: Duration = Duration::from_secs(5);
const CACHE_LIFETIME: Duration = Duration::from_secs(300);
const CACHE_TRANSACTIONS: u32 = 100;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    host: String,
    port: u16,
    tls_name: String,
    policy: TlsPolicy,
    /// The TLS configuration (by identity): a session verified under one set of roots is
    /// never reused under another.
    tls: usize,
}

impl CacheKey {
    fn of(peer: &Peer, policy: TlsPolicy) -> Self {
        Self {
            host: peer.host.to_ascii_lowercase(),
            port: peer.port,
            tls_name: peer.tls_name.clone(),
            policy,
            tls: Arc::as_ptr(&peer.tls) as usize,
        }
    }
}

struct Cached {
    conn: Conn,
    opened: std::time::Instant,
    idle_since: std::time::Instant,
    transactions: u32,
}

/// Idle SMTP sessions kept for the next transaction to the same host ([`send_cached`]).
/// Bounded: [`CACHE_PER_KEY`] sessions per host by default (the relay keeps as many as it
/// may have transactions to one domain, [`ConnCache::with_per_host`]), each idle at most
/// [`CACHE_IDLE`] and used at most [`CACHE_LIFETIME`] and [`CACHE_TRANSACTIONS`] times; an
/// expired one is dropped (closing the socket) when met.
pub struct ConnCache {
    idle: std::sync::Mutex<std::collections::HashMap<CacheKey, Vec<Cached>>>,
    per_key: usize,
}

impl Default for ConnCache {
    fn default() -> Self {
        Self::with_per_host(CACHE_PER_KEY)
    }
}

impl std::fmt::Debug for ConnCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnCache")
    }
}

impl ConnCache {
    /// A cache keeping up to `n` idle sessions per host (at least one).
    pub fn with_per_host(n: usize) -> Self {
        ConnCache {
            idle: Default::default(),
            per_key: n.max(1),
        }
    }

    fn take(&self, key: &CacheKey) -> Option<Cached> {
        self.expire();
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.get_mut(key)?;
        let c = list.pop();
        if list.is_empty() {
            idle.remove(key);
        }
        c
    }

    fn put(&self, key: CacheKey, mut c: Cached) {
        // Bytes left unread (a reply longer than the line limit, anything unasked for)
        // would be taken for the next transaction's replies.
        if !c.conn.keep
            || !c.conn.io.buffer().is_empty()
            || c.opened.elapsed() >= CACHE_LIFETIME
            || c.transactions >= CACHE_TRANSACTIONS
        {
            quit_later(c.conn);
            return;
        }
        // Whatever expired under other keys goes too, so the map cannot grow with hosts
        // that are no longer written to.
        self.expire();
        c.idle_since = std::time::Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.entry(key).or_default();
        if list.len() < self.per_key {
            list.push(c);
        } else {
            drop(idle);
            quit_later(c.conn);
        }
    }

    /// Closes (with QUIT) the sessions idle for longer than [`CACHE_IDLE`].
    pub fn expire(&self) {
        let now = std::time::Instant::now();
        let mut expired = Vec::new();
        {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            for list in idle.values_mut() {
                let (keep, old): (Vec<Cached>, Vec<Cached>) = std::mem::take(list)
                    .into_iter()
                    .partition(|c| now.duration_since(c.idle_since) < CACHE_IDLE);
                *list = keep;
                expired.extend(old);
            }
            idle.retain(|_, l| !l.is_empty());
        }
        for c in expired {
            quit_later(c.conn);
        }
    }

    /// Idle sessions held now (all hosts).
    pub fn idle(&self) -> usize {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.values().map(Vec::len).sum()
    }
}

/// Ends a session politely (RFC 5321 §4.1.1.10: QUIT before closing) without making the
/// caller wait: on a task of its own, for at most a second.
fn quit_later(mut c: Conn) {
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(async move {
            c.timeout = Duration::from_secs(1);
            let _ = tokio::time::timeout(Duration::from_secs(1), c.cmd("QUIT")).await;
        });
    }
}

/// Relays one transaction under `policy`, on a session from `cache` when one is idle for
/// this host and TLS configuration, else on a new one; the session goes back to the cache
/// when the transaction ended cleanly. Err: nothing was decided.
pub async fn send_cached(
    cache: &ConnCache,
    peer: &Peer,
    msg: &Outgoing<'_>,
    policy: TlsPolicy,
) -> Result<Vec<(String, RcptOutcome)>, ClientError> {
    let key = CacheKey::of(peer, policy);
    if let Some(mut c) = cache.take(&key) {
        c.conn.timeout = peer.timeout;
        match transaction(&mut c.conn, msg, true).await {
            Ok((results, reusable)) => {
                c.transactions += 1;
                if reusable {
                    cache.put(key, c);
                } else {
                    quit_later(c.conn);
                }
                return Ok(results);
            }
            Err(ClientError::Stale(e)) => {
                tracing::debug!(host = %peer.host, error = %e, "cached session closed: opening a new one");
            }
            Err(e) => return Err(e),
        }
    }
    let conn = open_with(peer, msg.helo, policy).await?;
    let now = std::time::Instant::now();
    let mut c = Cached {
        conn,
        opened: now,
        idle_since: now,
        transactions: 0,
    };
    let (results, reusable) = transaction(&mut c.conn, msg, false).await?;
    c.transactions += 1;
    if reusable {
        cache.put(key, c);
    } else {
        quit_later(c.conn);
    }
    Ok(results)
}

/// Connects, reads the greeting, sends EHLO and (when `use_tls` and offered) STARTTLS and
/// EHLO again; the session is ready for [`transaction`].
async fn open(
    peer: &Peer,
    helo: &str,
    policy: TlsPolicy,
    use_tls: bool,
) -> Result<Conn, ClientError> {
    let target = format!("{}:{}", peer.host, peer.port);
    let tcp = tokio::time::timeout(peer.timeout, TcpStream::connect(&target))
        .await
        .map_err(|_| ClientError::Timeout)?
        .map_err(|e| ClientError::Connect(target.clone(), e))?;
    let _ = tcp.set_nodelay(true);
    let mut c = Conn {
        io: BufReader::new(Box::new(tcp)),
        timeout: peer.timeout,
        caps: String::new(),
        keep: true,
    };
    let (code, text) = c.reply().await?;
    if code != 220 {
        return Err(ClientError::Reply { code, text });
    }
    c.caps = c.expect(&format!("EHLO {helo}"), 250).await?;
    if !use_tls || !offers(&c.caps, "STARTTLS") {
        if policy == TlsPolicy::Required {
            let _ = c.cmd("QUIT").await;
            return Err(ClientError::NoStartTls);
        }
        // RFC 7435: no encryption offered (or its handshake failed: `use_tls` false), the
        // ordinary mail goes in clear.
        c.keep = use_tls;
        return Ok(c);
    }
    let (code, text) = c.cmd("STARTTLS").await?;
    if code != 220 {
        if policy == TlsPolicy::Opportunistic {
            // RFC 3207 §4 / RFC 7435 §3: the server declined (e.g. 454 "TLS not available
            // due to temporary reason"); the session is still in its pre-STARTTLS state,
            // so the ordinary mail goes on in clear on it.
            tracing::debug!(%target, code, %text, "STARTTLS refused: continuing in clear");
            c.keep = false;
            return Ok(c);
        }
        let _ = c.cmd("QUIT").await;
        return Err(ClientError::Reply { code, text });
    }
    let name = ServerName::try_from(peer.tls_name.clone())
        .map_err(|_| ClientError::ServerName(peer.tls_name.clone()))?;
    let tcp = c.io.into_inner();
    let tls = tokio_rustls::TlsConnector::from(peer.tls.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| ClientError::Tls(target.clone(), e))?;
    let mut c = Conn {
        io: BufReader::new(Box::new(tls)),
        timeout: peer.timeout,
        caps: String::new(),
        keep: true,
    };
    // RFC 3207 §4.2: the capabilities before TLS are forgotten.
    c.caps = c.expect(&format!("EHLO {helo}"), 250).await?;
    Ok(c)
}

/// The most recipients sent in one pipelined group (RFC 2920 §3.1): with more, the peer's
/// replies could fill the socket buffers while it waits for the rest of the group, and
/// both sides would wait for ever; such a transaction goes one command at a time.
const PIPELINED_RCPTS: usize = 100;

/// How much of a message is stuffed and written at a time.
const STUFF_PIECE: usize = 64 * 1024;

/// MAIL, RCPT, DATA on an established session. Returns the outcome per recipient and
/// whether the session is still open for another transaction (it ended with the final
/// reply to the data, or with a RSET answered 250, and the peer did not say 421; when not,
/// QUIT was sent or the session is unusable). `reused`: a failure to get MAIL answered
/// (the connection closed, or a 4xx) is [`ClientError::Stale`].
///
/// When the peer offers PIPELINING (RFC 2920), MAIL, every RCPT and DATA go out in one
/// write and their replies are read in order: one round trip instead of two or more
/// before the content. Every reply is still looked at (§3.1): DATA accepted although no
/// recipient was gets the lone final dot, and the session goes on after a RSET.
async fn transaction(
    c: &mut Conn,
    msg: &Outgoing<'_>,
    reused: bool,
) -> Result<(Vec<(String, RcptOutcome)>, bool), ClientError> {
    let body = if is_7bit(msg.data) {
        ""
    } else if offers(&c.caps, "8BITMIME") {
        " BODY=8BITMIME"
    } else {
        let _ = c.cmd("QUIT").await;
        return Err(ClientError::No8BitMime);
    };
    let mail_line = format!("MAIL FROM:<{}>{body}", msg.mail_from);
    let pipelined = offers(&c.caps, "PIPELINING") && msg.rcpt_to.len() <= PIPELINED_RCPTS;
    let mail = if pipelined {
        use std::fmt::Write as _;
        let mut group = format!("{mail_line}\r\n");
        for r in msg.rcpt_to {
            // Writing into a String cannot fail.
            let _ = write!(group, "RCPT TO:<{r}>\r\n");
        }
        group.push_str("DATA");
        c.cmd(&group).await
    } else {
        c.cmd(&mail_line).await
    };
    let mail = match mail {
        // A reused session refused for now (421 closing, or a 4xx such as a limit of
        // messages per session): no content was sent, a new session may well take it.
        Ok((code, text)) if reused && code / 100 == 4 => {
            Err(ClientError::Stale(Box::new(ClientError::Reply {
                code,
                text,
            })))
        }
        Ok((code, _)) if code / 100 == 2 => Ok(()),
        Ok((code, text)) => Err(ClientError::Reply { code, text }),
        Err(e) if reused => Err(ClientError::Stale(Box::new(e))),
        Err(e) => Err(e),
    };
    if let Err(e) = mail {
        // A stale session is dropped. Otherwise QUIT, after the replies to the pipelined
        // RCPTs and DATA (refused after a refused MAIL; a lone dot ends a DATA taken all
        // the same), so that QUIT's own reply is the one read.
        if !matches!(e, ClientError::Stale(_)) {
            if pipelined {
                for _ in 0..=msg.rcpt_to.len() {
                    match c.reply().await {
                        Ok((354, _)) => {
                            let _ = c.cmd(".").await;
                            break;
                        }
                        Ok(_) => {}
                        Err(_) => return Err(e),
                    }
                }
            }
            let _ = c.cmd("QUIT").await;
        }
        return Err(e);
    }
    let mut results = Vec::with_capacity(msg.rcpt_to.len());
    let mut closing = false;
    for r in msg.rcpt_to {
        let (code, text) = if pipelined {
            c.reply().await?
        } else {
            c.cmd(&format!("RCPT TO:<{r}>")).await?
        };
        closing |= code == 421;
        let outcome = match code / 100 {
            2 => RcptOutcome::Accepted,
            4 => RcptOutcome::Temporary(format!("{code} {text}")),
            _ => RcptOutcome::Permanent(format!("{code} {text}")),
        };
        results.push((r.clone(), outcome));
    }
    let data = if pipelined {
        Some(c.reply().await)
    } else {
        None
    };
    if !results.iter().any(|(_, o)| *o == RcptOutcome::Accepted) {
        // Every recipient's outcome is known and no content was sent: whatever happens to
        // the session now, they are the result.
        match data {
            Some(Ok((354, _))) => {
                // RFC 2920 §3.1: DATA was taken with no recipient; the lone dot ends it.
                closing |= !matches!(c.cmd(".").await, Ok((code, _)) if code != 421);
            }
            Some(Ok((code, _))) => closing |= code == 421,
            Some(Err(_)) => return Ok((results, false)),
            None => {}
        }
        // The transaction is open: RSET closes it for the next one (RFC 5321 §4.1.1.5).
        let reusable = !closing && matches!(c.cmd("RSET").await, Ok((250, _)));
        if !reusable {
            let _ = c.cmd("QUIT").await;
        }
        return Ok((results, reusable));
    }
    match data {
        Some(Ok((354, _))) => {}
        Some(Ok((code, text))) => {
            let _ = c.cmd("QUIT").await;
            return Err(ClientError::Reply { code, text });
        }
        Some(Err(e)) => return Err(e),
        None => {
            c.expect("DATA", 354).await?;
        }
    }
    // A piece at a time: a 50 MB message needs no stuffed copy of itself.
    let mut stuffer = DotStuffer::default();
    let mut piece = Vec::with_capacity(STUFF_PIECE + STUFF_PIECE / 32);
    for chunk in msg.data.chunks(STUFF_PIECE) {
        piece.clear();
        stuffer.feed(chunk, &mut piece);
        c.io.get_mut().write_all(&piece).await?;
    }
    piece.clear();
    stuffer.finish(&mut piece);
    c.io.get_mut().write_all(&piece).await?;
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
    Ok((results, code != 421))
}

#[cfg(test)]
mod tests;
