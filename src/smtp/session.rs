//! The SMTP server session as a sans-IO state machine (RFC 5321, with RFC 3207 STARTTLS,
//! RFC 4954 AUTH, RFC 1870 SIZE, RFC 2920 PIPELINING, RFC 2034 ENHANCEDSTATUSCODES).
//!
//! ```text
//!            EHLO/HELO                MAIL FROM           RCPT TO (1..max)      DATA
//!  Greeted ───────────► Ready ─────────────────► Mail ─────────────► Rcpt ─────────► Data
//!     ▲                  │ ▲  AUTH ─► Auth(..) ─┘ (decision)           │                │ "."
//!     │   STARTTLS       │ └──────── RSET / message decided ◄──────────┴────────────────┘
//!     └──────────────────┘ (TLS up: everything is forgotten, a new EHLO is required)
//! ```
//!
//! Owns: line framing and command parsing (smtp-proto's parser, one complete line at a
//! time), the order of commands, replies and their enhanced status codes, the limits that
//! can be enforced without knowing users (line length, SIZE, recipient count, message
//! bytes), and "no AUTH without TLS". It does not know passwords, mailboxes or the PEC
//! rules: when it needs a decision it yields an [`Event`] and waits (buffering pipelined
//! input) until the driver answers with [`Session::auth_result`] (or
//! [`Session::auth_refused`]) or [`Session::message_result`]. Every refusal it decides
//! itself is also reported as [`Event::Refused`], so the driver can put it in the trace log.
//!
//! Limits (config keys through [`SessionConfig`]): `limits.max_line_length` for command
//! lines on every listener (500 5.5.2, the rest of the line up to its LF is discarded, never
//! parsed) and for DATA lines on submission only (RFC 5321 §4.5.3.1.6; the message is
//! refused with 554 5.6.0 at the final dot; port 25 accepts longer lines, see
//! [`SessionConfig::data_line_limit`]); `limits.max_message_bytes` (SIZE, and 552 5.3.4 at
//! the final dot, counted on the dot-unstuffed content; the driver sets it to
//! `limits.max_incoming_message_bytes` on port 25). With [`Session::stream_data`] (as the
//! driver always does) the content leaves the session in [`Event::DataChunk`]s while it
//! arrives, so a session holds at most about one chunk whatever the message size; a driver
//! that cannot keep a chunk calls [`Session::abort_data`] and the dot is answered
//! 452 4.3.1. A refused DATA
//! is read and dropped only up to [`SessionConfig::discard_bound`]; past it the session
//! answers 552 and closes, so a peer cannot stream forever.
//!
//! Split by concern: this file keeps the types, the phases, `feed`/`step` dispatch and the
//! transaction commands; `framing` (command/AUTH line scan and over-long line discard),
//! `data` (DATA reception and its limits), `auth` (the AUTH exchange), `replies` (reply
//! text, EHLO capabilities, refusals) and `events` (the public output types).
//!
//! Untrusted input: every byte fed to [`Session::feed`]. Nothing here panics; oversized
//! input goes through an explicit reject path that still answers the peer.

mod auth;
mod data;
mod events;
mod framing;
mod replies;

use smtp_proto::Request;
use smtp_proto::request::receiver::{DataReceiver, DummyDataReceiver};

use data::{DataFault, LineEnds, primed_data_receiver};
pub use events::{DialogueRefusal, Envelope, Event};
use framing::Line;
use replies::{protocol_error, reply};

/// Which listener the session serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Users submitting mail (465 implicit TLS, 587 STARTTLS): AUTH required, TLS-only.
    Submission,
    /// Other providers and the Internet (25): no AUTH, only local recipients.
    Incoming,
}

/// The session's settings (from `[limits]` and the listener).
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub hostname: String,
    pub role: Role,
    /// `[limits] max_message_bytes`, advertised as SIZE.
    pub max_message_bytes: usize,
    /// `[limits] max_recipients`.
    pub max_recipients: usize,
    /// A TLS certificate is configured (STARTTLS can be offered).
    pub tls_available: bool,
    /// Domains this gateway serves (for the incoming role's RCPT check).
    pub local_domains: Vec<String>,
    /// Failed AUTH attempts before the session is closed.
    pub max_auth_failures: u32,
    /// `[limits] max_line_length`: longest command line, CRLF included, on every listener.
    /// (DATA lines on submission have their own, fixed limit: [`SUBMISSION_DATA_LINE`].)
    pub max_line_length: usize,
}

/// Longest DATA line on submission, CRLF included: RFC 5321 §4.5.3.1.6's 1000 octets. Not
/// `max_line_length` (4096 by default, for command lines): the user's original travels
/// inside the signed envelope, and a hop that folds a longer line (Postfix's SMTP client
/// does past 998) would break the signature the recipient checks.
pub const SUBMISSION_DATA_LINE: usize = 1000;

/// RFC 4954 §4: an AUTH command line, and each line of the exchange, may be up to 12288
/// octets, whatever the general line limit.
pub const AUTH_LINE_LIMIT: usize = 12_288;

/// Extra DATA read and dropped after a message was refused mid-transfer (size or line
/// length), so that a client that does not read replies until the final dot still gets a
/// clean 552: at most this, and never more than `max_message_bytes` again.
pub const OVERSIZE_GRACE_BYTES: usize = 10 * 1024 * 1024;

impl SessionConfig {
    /// Longest DATA line accepted, CRLF included, if any. Submission only: our users' mail
    /// leaves for other providers and must keep to RFC 5321 §4.5.3.1.6. On port 25 mail from
    /// other providers and the Internet often has longer lines and used to be accepted, so
    /// there is no line limit there: DATA is never buffered by line, and its memory is
    /// bounded by `max_message_bytes` (and [`Self::discard_bound`]) alone.
    pub fn data_line_limit(&self) -> Option<usize> {
        match self.role {
            Role::Submission => Some(SUBMISSION_DATA_LINE),
            Role::Incoming => None,
        }
    }

    /// Wire bytes of one DATA transfer after which a refused message stops being read: the
    /// session answers 552 5.3.4 and closes the connection.
    pub fn discard_bound(&self) -> usize {
        self.max_message_bytes
            .saturating_add(self.max_message_bytes.min(OVERSIZE_GRACE_BYTES))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    Greeted,
    Ready,
    AuthPlain,
    AuthExternal,
    AuthLoginUser,
    AuthLoginPass(String),
    AwaitingAuth,
    Mail,
    Rcpt,
    Data,
    /// Receiving DATA of a refused message: bytes are read and dropped until the final dot
    /// (or until [`SessionConfig::discard_bound`]).
    DataDiscard(DataFault),
    AwaitingMessage,
    Closed,
}

/// One SMTP server session.
pub struct Session {
    cfg: SessionConfig,
    phase: Phase,
    tls: bool,
    helo: String,
    authenticated: Option<String>,
    auth_failures: u32,
    /// The TLS client presented a certificate: AUTH EXTERNAL is offered.
    external: bool,
    mail_from: String,
    rcpt_to: Vec<String>,
    data: Vec<u8>,
    /// Content octets of this transfer already handed out as [`Event::DataChunk`].
    data_flushed: usize,
    /// Hand content out once `data` holds this much ([`Session::stream_data`]).
    data_chunk: usize,
    data_rx: DataReceiver,
    discard_rx: Option<DummyDataReceiver>,
    /// Wire bytes consumed since the 354 reply.
    data_received: usize,
    /// Length of the unterminated last line of `data`.
    data_line_len: usize,
    /// The bare-CR scan of this transfer.
    line_ends: LineEnds,
    /// Input received while a decision was pending, or not yet consumed (never more than
    /// one incomplete line outside DATA: longer lines are refused and dropped).
    pending: Vec<u8>,
    /// An over-long line was refused: drop input up to and including its LF.
    discarding_line: bool,
    /// Octets at the start of `pending` already known to hold no LF (so a line arriving
    /// in many small reads is scanned once, not once per read).
    line_scanned: usize,
}

impl Session {
    /// A new session and its greeting.
    pub fn new(cfg: SessionConfig, tls: bool) -> (Self, Event) {
        let greeting = Event::Reply(format!("220 {} ESMTP pecd\r\n", cfg.hostname).into_bytes());
        let s = Self {
            cfg,
            phase: Phase::Greeted,
            tls,
            helo: String::new(),
            authenticated: None,
            auth_failures: 0,
            external: false,
            mail_from: String::new(),
            rcpt_to: Vec::new(),
            data: Vec::new(),
            data_flushed: 0,
            data_chunk: usize::MAX,
            data_rx: DataReceiver::new(),
            discard_rx: None,
            data_received: 0,
            data_line_len: 0,
            line_ends: LineEnds::default(),
            pending: Vec::new(),
            discarding_line: false,
            line_scanned: 0,
        };
        (s, greeting)
    }

    /// Streams DATA: from now on the content is handed out as [`Event::DataChunk`]s of
    /// about `chunk_bytes` while it arrives, the [`Event::Message`] carrying only the rest,
    /// so the session never holds more than a chunk of a message. Without it (the
    /// default) the whole content comes in the message event.
    pub fn stream_data(&mut self, chunk_bytes: usize) {
        self.data_chunk = chunk_bytes.max(1);
    }

    /// Whether TLS is active.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The authenticated user.
    pub fn authenticated(&self) -> Option<&str> {
        self.authenticated.as_deref()
    }

    /// Whether the session waits for the driver's decision (input is buffered meanwhile).
    pub fn is_waiting(&self) -> bool {
        matches!(self.phase, Phase::AwaitingAuth | Phase::AwaitingMessage)
    }

    /// Whether the session is closed.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Feeds bytes from the peer; returns what to do, in order. Processing stops at an
    /// event that needs a decision or at `StartTls`; the rest stays buffered and is
    /// processed by the next `feed` (call `feed(&[])` after a decision).
    pub fn feed(&mut self, input: &[u8]) -> Vec<Event> {
        self.pending.extend_from_slice(input);
        let mut out = Vec::new();
        // Steps work on `buf[pos..]`; what they consume is dropped once, at the end, so a
        // read carrying k pipelined commands costs O(buffer), not O(k·buffer).
        let mut buf = std::mem::take(&mut self.pending);
        let mut pos = 0;
        while !self.is_waiting() && self.phase != Phase::Closed {
            let rest = buf.get(pos..).unwrap_or_default();
            if rest.is_empty() {
                break;
            }
            let phase_before = self.phase.clone();
            let mut iter = rest.iter();
            let stop = self.step(&mut iter, &mut out);
            let consumed = rest.len() - iter.as_slice().len();
            pos += consumed;
            if stop || (consumed == 0 && self.phase == phase_before) {
                break;
            }
        }
        // Closed (QUIT, STARTTLS until `tls_started`, cut off): what is left is dropped
        // (RFC 3207 §4.2 for STARTTLS). Otherwise it waits for the next call; `step` never
        // adds to `pending` itself, so it is still empty here.
        if self.phase != Phase::Closed {
            buf.drain(..pos.min(buf.len()));
            self.pending = buf;
        }
        out
    }

    /// Processes as much of `iter` as one step allows. Returns true when processing must
    /// pause (need more input, a decision, STARTTLS or close).
    fn step(&mut self, iter: &mut std::slice::Iter<'_, u8>, out: &mut Vec<Event>) -> bool {
        match self.phase.clone() {
            Phase::Data => self.step_data(iter, out),
            Phase::DataDiscard(fault) => self.step_discard(fault, iter, out),
            _ if self.discarding_line => self.skip_discarded_line(iter),
            Phase::AuthPlain
            | Phase::AuthExternal
            | Phase::AuthLoginUser
            | Phase::AuthLoginPass(_) => {
                let limit = self.cfg.max_line_length.max(AUTH_LINE_LIMIT);
                match self.take_line(iter, limit) {
                    Line::Incomplete => true,
                    Line::TooLong => {
                        self.phase = Phase::Ready;
                        out.push(reply(
                            500,
                            "5.5.6",
                            "Authentication exchange line is too long",
                        ));
                        false
                    }
                    Line::Complete(line) => {
                        let line = String::from_utf8_lossy(line).trim().to_string();
                        self.auth_continue(&line, out)
                    }
                }
            }
            _ => {
                let rest = iter.as_slice();
                // RFC 4954 §4: AUTH lines may exceed the general limit.
                let is_auth = rest
                    .get(..5)
                    .is_some_and(|p| p.eq_ignore_ascii_case(b"AUTH "));
                let limit = if is_auth {
                    self.cfg.max_line_length.max(AUTH_LINE_LIMIT)
                } else {
                    self.cfg.max_line_length
                };
                match self.take_line(iter, limit) {
                    Line::Incomplete => true,
                    Line::TooLong => {
                        out.push(reply(
                            500,
                            "5.5.2",
                            &format!("Line too long (at most {limit} octets)"),
                        ));
                        false
                    }
                    // A complete line: whatever the parser makes of it, nothing after its
                    // LF belongs to it.
                    Line::Complete(line) => match Request::parse(&mut line.iter()) {
                        Ok(req) => {
                            let req = req.into_owned();
                            self.command(req, out)
                        }
                        Err(e) => {
                            out.push(protocol_error(&e));
                            false
                        }
                    },
                }
            }
        }
    }

    fn reset_transaction(&mut self) {
        self.mail_from.clear();
        self.rcpt_to.clear();
        self.data = Vec::new();
        self.data_flushed = 0;
        self.data_rx = DataReceiver::new();
        self.discard_rx = None;
        self.data_received = 0;
        self.data_line_len = 0;
        self.line_ends = LineEnds::default();
        self.phase = if self.helo.is_empty() {
            Phase::Greeted
        } else {
            Phase::Ready
        };
    }

    fn command(&mut self, req: Request<String>, out: &mut Vec<Event>) -> bool {
        match req {
            Request::Ehlo { host } => {
                self.helo = host;
                self.reset_transaction();
                out.push(Event::Reply(self.ehlo_reply()));
            }
            Request::Helo { host } => {
                self.helo = host;
                self.reset_transaction();
                out.push(Event::Reply(
                    format!("250 {}\r\n", self.cfg.hostname).into_bytes(),
                ));
            }
            Request::Lhlo { .. } => out.push(reply(500, "5.5.1", "LHLO is not supported here")),
            Request::StartTls => {
                if self.tls {
                    out.push(reply(503, "5.5.1", "TLS is already active"));
                } else if !self.cfg.tls_available {
                    out.push(reply(454, "4.7.0", "TLS not available"));
                } else {
                    out.push(reply(220, "2.0.0", "Ready to start TLS"));
                    out.push(Event::StartTls);
                    // RFC 3207 §4.2: anything pipelined after STARTTLS is discarded.
                    self.pending.clear();
                    self.line_scanned = 0;
                    self.phase = Phase::Closed; // until tls_started
                    return true;
                }
            }
            Request::Auth {
                mechanism,
                initial_response,
            } => return self.auth_start(mechanism, initial_response, out),
            Request::Mail { from } => self.mail(from, out),
            Request::Rcpt { to } => self.rcpt(to.address, out),
            Request::Data => {
                if self.phase != Phase::Rcpt {
                    out.push(reply(503, "5.5.1", "Need RCPT before DATA"));
                } else {
                    out.push(Event::Reply(
                        b"354 Start mail input; end with <CRLF>.<CRLF>\r\n".to_vec(),
                    ));
                    self.data_rx = primed_data_receiver();
                    self.data = Vec::new();
                    self.data_flushed = 0;
                    self.data_received = 0;
                    self.data_line_len = 0;
                    self.line_ends = LineEnds::default();
                    self.phase = Phase::Data;
                }
            }
            Request::Bdat { .. } => out.push(reply(502, "5.5.1", "CHUNKING is not supported")),
            Request::Rset => {
                self.reset_transaction();
                out.push(reply(250, "2.0.0", "Reset"));
            }
            Request::Noop { .. } => out.push(reply(250, "2.0.0", "OK")),
            Request::Quit => {
                out.push(reply(221, "2.0.0", "Bye"));
                out.push(Event::Close);
                self.phase = Phase::Closed;
                return true;
            }
            Request::Vrfy { .. } | Request::Expn { .. } => out.push(reply(
                252,
                "2.5.0",
                "Cannot verify the user, but will accept the message",
            )),
            Request::Help { .. } => out.push(reply(214, "2.0.0", "See RFC 5321")),
            Request::Etrn { .. } | Request::Atrn { .. } | Request::Burl { .. } => {
                out.push(reply(502, "5.5.1", "Command not implemented"))
            }
        }
        false
    }

    fn mail(&mut self, from: smtp_proto::MailFrom<String>, out: &mut Vec<Event>) {
        if self.phase == Phase::Greeted {
            out.push(reply(503, "5.5.1", "Send EHLO first"));
            return;
        }
        if self.phase != Phase::Ready {
            out.push(reply(503, "5.5.1", "Nested MAIL command"));
            return;
        }
        if self.cfg.role == Role::Submission {
            let Some(user) = &self.authenticated else {
                let reason = "Authentication required".to_string();
                self.refuse(out, 530, "5.7.0", reason, Some(&from.address));
                return;
            };
            // The reverse-path must be the authenticated mailbox (the sender cannot be
            // forged, rules §6.1 item 1): "send as" another address is not offered.
            if !from.address.eq_ignore_ascii_case(user) {
                let reason = format!(
                    "Sender address <{}> is not owned by the authenticated user {user}",
                    from.address
                );
                self.refuse(out, 553, "5.7.1", reason, Some(&from.address));
                return;
            }
        }
        if from.size > self.cfg.max_message_bytes {
            let reason = format!(
                "Message size exceeds fixed maximum message size ({} octets, SIZE={})",
                self.cfg.max_message_bytes, from.size
            );
            self.refuse(out, 552, "5.3.4", reason, Some(&from.address));
            return;
        }
        self.mail_from = from.address;
        self.rcpt_to.clear();
        self.phase = Phase::Mail;
        out.push(reply(250, "2.1.0", "Sender OK"));
    }

    fn rcpt(&mut self, to: String, out: &mut Vec<Event>) {
        if !matches!(self.phase, Phase::Mail | Phase::Rcpt) {
            out.push(reply(503, "5.5.1", "Need MAIL before RCPT"));
            return;
        }
        if self.rcpt_to.len() >= self.cfg.max_recipients {
            // RFC 5321 §4.5.3.1.10: 452 for the recipients past the limit.
            let reason = format!("Too many recipients (at most {})", self.cfg.max_recipients);
            let mail_from = self.mail_from.clone();
            self.refuse(out, 452, "4.5.3", reason, Some(&mail_from));
            return;
        }
        let Ok(addr) = crate::pec::address::PecAddress::parse(&to) else {
            out.push(reply(501, "5.1.3", "Bad recipient address syntax"));
            return;
        };
        if self.cfg.role == Role::Incoming
            && !self
                .cfg
                .local_domains
                .iter()
                .any(|d| d.eq_ignore_ascii_case(addr.domain().as_str()))
        {
            out.push(reply(
                550,
                "5.7.1",
                "Relaying denied: this server accepts mail only for its own domains",
            ));
            return;
        }
        if self.rcpt_to.iter().any(|r| r.eq_ignore_ascii_case(&to)) {
            out.push(reply(250, "2.1.5", "Recipient OK (duplicate ignored)"));
            return;
        }
        self.rcpt_to.push(addr.to_string());
        self.phase = Phase::Rcpt;
        out.push(reply(250, "2.1.5", "Recipient OK"));
    }

    /// The driver's answer to [`Event::Message`]: the reply line (e.g. `250 2.0.0 OK id`
    /// only after the message is durable, or a 4xx/5xx with the reason).
    pub fn message_result(&mut self, code: u16, enhanced: &str, text: &str) -> Vec<Event> {
        if self.phase != Phase::AwaitingMessage {
            return Vec::new();
        }
        self.reset_transaction();
        let mut out = vec![reply(code, enhanced, text)];
        out.extend(self.feed(&[]));
        out
    }

    /// The TLS client presented a certificate: offer AUTH EXTERNAL (smart-card login).
    /// Call after the handshake (implicit TLS: at once; STARTTLS: after `tls_started`).
    pub fn offer_external(&mut self) {
        self.external = true;
    }

    /// TLS is now active (after [`Event::StartTls`]): the session starts over (RFC 3207 §4.2).
    pub fn tls_started(&mut self) {
        self.tls = true;
        self.helo.clear();
        self.authenticated = None;
        self.pending.clear();
        self.discarding_line = false;
        self.line_scanned = 0;
        self.reset_transaction();
        self.phase = Phase::Greeted;
    }
}
