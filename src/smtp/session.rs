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
//! the final dot, counted on the dot-unstuffed content). A refused DATA
//! is read and dropped only up to [`SessionConfig::discard_bound`]; past it the session
//! answers 552 and closes, so a peer cannot stream forever.
//!
//! Untrusted input: every byte fed to [`Session::feed`]. Nothing here panics; oversized
//! input goes through an explicit reject path that still answers the peer.

use base64::Engine;
use smtp_proto::request::receiver::{DataReceiver, DummyDataReceiver};
use smtp_proto::{Error as ProtoError, Request};

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
    /// `[limits] max_line_length`: longest command line, CRLF included, on every listener;
    /// also the longest DATA line on submission ([`Self::data_line_limit`]).
    pub max_line_length: usize,
}

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
            Role::Submission => Some(self.max_line_length),
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

/// A command or message the session refused by itself (the backend never saw it). The
/// reply was already queued; the driver reports this to the backend for the trace log
/// (rules §9: every operation leaves a record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialogueRefusal {
    pub code: u16,
    pub enhanced: &'static str,
    /// What the reply said, e.g. "sender <x> is not the authenticated mailbox".
    pub reason: String,
    /// The authenticated user, if any.
    pub user: Option<String>,
    /// The reverse-path the client gave (or tried to give), if any.
    pub mail_from: Option<String>,
}

/// What the driver must do.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// Write these bytes to the peer.
    Reply(Vec<u8>),
    /// Write nothing more; upgrade the connection to TLS, then call [`Session::tls_started`].
    StartTls,
    /// Check credentials, then call [`Session::auth_result`].
    Authenticate { username: String, password: String },
    /// A complete message: run it through the pipeline, then call [`Session::message_result`].
    Message(Envelope),
    /// Close the connection (after writing any reply before it).
    Close,
    /// A refusal decided here, for the record (write nothing: its reply precedes it).
    Refused(DialogueRefusal),
}

/// The SMTP envelope and content of one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Reverse-path (empty for the null sender `<>`).
    pub mail_from: String,
    /// Forward-paths, in order.
    pub rcpt_to: Vec<String>,
    /// The message, dot-unstuffed, CRLF.
    pub data: Vec<u8>,
    /// The authenticated user, if any.
    pub authenticated: Option<String>,
    /// The EHLO/HELO name.
    pub helo: String,
    /// TLS was active for the transaction.
    pub tls: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    Greeted,
    Ready,
    AuthPlain,
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

/// Why a message is being refused while its DATA is still arriving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataFault {
    TooBig,
    LineTooLong,
}

/// One line taken from the input.
enum Line<'a> {
    /// A whole line within the limit, LF included.
    Complete(&'a [u8]),
    /// No LF yet and still within the limit: wait for more input.
    Incomplete,
    /// Over the limit: the line is (being) discarded up to its LF.
    TooLong,
}

/// One SMTP server session.
pub struct Session {
    cfg: SessionConfig,
    phase: Phase,
    tls: bool,
    helo: String,
    authenticated: Option<String>,
    auth_failures: u32,
    mail_from: String,
    rcpt_to: Vec<String>,
    data: Vec<u8>,
    data_rx: DataReceiver,
    discard_rx: Option<DummyDataReceiver>,
    /// Wire bytes consumed since the 354 reply.
    data_received: usize,
    /// Length of the unterminated last line of `data`.
    data_line_len: usize,
    /// Input received while a decision was pending, or not yet consumed (never more than
    /// one incomplete line outside DATA: longer lines are refused and dropped).
    pending: Vec<u8>,
    /// An over-long line was refused: drop input up to and including its LF.
    discarding_line: bool,
    /// Octets at the start of `pending` already known to hold no LF (so a line arriving
    /// in many small reads is scanned once, not once per read).
    line_scanned: usize,
}

fn reply(code: u16, enhanced: &str, text: &str) -> Event {
    Event::Reply(format!("{code} {enhanced} {text}\r\n").into_bytes())
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
            mail_from: String::new(),
            rcpt_to: Vec::new(),
            data: Vec::new(),
            data_rx: DataReceiver::new(),
            discard_rx: None,
            data_received: 0,
            data_line_len: 0,
            pending: Vec::new(),
            discarding_line: false,
            line_scanned: 0,
        };
        (s, greeting)
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
            _ if self.discarding_line => {
                let rest = iter.as_slice();
                match rest.iter().position(|&b| b == b'\n') {
                    Some(p) => {
                        *iter = rest.get(p + 1..).unwrap_or_default().iter();
                        self.discarding_line = false;
                        false
                    }
                    None => {
                        *iter = [].iter();
                        true
                    }
                }
            }
            Phase::AuthPlain | Phase::AuthLoginUser | Phase::AuthLoginPass(_) => {
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

    /// Takes one line (LF included) of at most `limit` octets from `iter`. An over-long
    /// line is consumed up to its LF, or entirely with `discarding_line` set when its LF
    /// has not arrived yet.
    fn take_line<'a>(&mut self, iter: &mut std::slice::Iter<'a, u8>, limit: usize) -> Line<'a> {
        let rest: &'a [u8] = iter.as_slice();
        let from = std::mem::take(&mut self.line_scanned).min(rest.len());
        let lf = rest
            .get(from..)
            .unwrap_or_default()
            .iter()
            .position(|&b| b == b'\n')
            .map(|p| p + from);
        match lf {
            Some(p) => {
                let (line, tail) = rest.split_at(p + 1);
                *iter = tail.iter();
                if line.len() <= limit {
                    Line::Complete(line)
                } else {
                    Line::TooLong
                }
            }
            None if rest.len() >= limit => {
                *iter = [].iter();
                self.discarding_line = true;
                Line::TooLong
            }
            None => {
                // Left in `pending`; the next call starts after what was scanned.
                self.line_scanned = rest.len();
                Line::Incomplete
            }
        }
    }

    fn step_data(&mut self, iter: &mut std::slice::Iter<'_, u8>, out: &mut Vec<Event>) -> bool {
        let before = iter.as_slice().len();
        let stored = self.data.len();
        let done = self.data_rx.ingest(iter, &mut self.data);
        self.data_received += before - iter.as_slice().len();
        // smtp-proto stores the CR of a possible final `.CRLF` and pops it only when the
        // LF arrives, so while the transfer is open `data` may hold one octet that is not
        // content: allow it then, and check the exact size at the final dot.
        let slack = usize::from(!done && self.data.last() == Some(&b'\r'));
        let fault = if self.line_too_long_since(stored) {
            Some(DataFault::LineTooLong)
        } else if self.data.len() > self.cfg.max_message_bytes.saturating_add(slack) {
            Some(DataFault::TooBig)
        } else {
            None
        };
        if let Some(fault) = fault {
            // Stop storing; keep reading (within the bound) until the final dot, then refuse.
            self.data = Vec::new();
            if done {
                self.refuse_data(fault, out);
                return false;
            }
            self.discard_rx = Some(DummyDataReceiver::new_data(&self.data_rx));
            self.phase = Phase::DataDiscard(fault);
            return self.check_discard_bound(out) || iter.as_slice().is_empty();
        }
        if done {
            self.phase = Phase::AwaitingMessage;
            out.push(Event::Message(Envelope {
                mail_from: self.mail_from.clone(),
                rcpt_to: self.rcpt_to.clone(),
                data: std::mem::take(&mut self.data),
                authenticated: self.authenticated.clone(),
                helo: self.helo.clone(),
                tls: self.tls,
            }));
        }
        true
    }

    fn step_discard(
        &mut self,
        fault: DataFault,
        iter: &mut std::slice::Iter<'_, u8>,
        out: &mut Vec<Event>,
    ) -> bool {
        let before = iter.as_slice().len();
        let done = self.discard_rx.as_mut().is_some_and(|d| d.ingest(iter));
        self.data_received += before - iter.as_slice().len();
        if done {
            self.refuse_data(fault, out);
            return false;
        }
        self.check_discard_bound(out);
        true
    }

    /// Past [`SessionConfig::discard_bound`] a refused transfer is not read any further:
    /// 552 and close. Returns true when the session was closed.
    fn check_discard_bound(&mut self, out: &mut Vec<Event>) -> bool {
        if self.data_received <= self.cfg.discard_bound() {
            return false;
        }
        let mail_from = self.mail_from.clone();
        self.refuse(
            out,
            552,
            "5.3.4",
            format!(
                "Message refused and too much data after it ({} octets at most), closing the connection",
                self.cfg.discard_bound()
            ),
            Some(&mail_from),
        );
        out.push(Event::Close);
        self.reset_transaction();
        self.pending.clear();
        self.line_scanned = 0;
        self.phase = Phase::Closed;
        true
    }

    /// Whether a line of `data` from offset `from` on is longer than the DATA line limit
    /// (CRLF included; counted after dot-unstuffing, so one octet of leniency for stuffed
    /// lines). Always false where there is no such limit ([`SessionConfig::data_line_limit`]).
    fn line_too_long_since(&mut self, from: usize) -> bool {
        let Some(max) = self.cfg.data_line_limit() else {
            return false;
        };
        let mut too_long = false;
        for seg in self
            .data
            .get(from..)
            .unwrap_or_default()
            .split_inclusive(|&b| b == b'\n')
        {
            self.data_line_len += seg.len();
            if self.data_line_len > max {
                too_long = true;
            }
            if seg.last() == Some(&b'\n') {
                self.data_line_len = 0;
            }
        }
        too_long
    }

    /// The reply at the final dot of a message refused while it arrived.
    fn refuse_data(&mut self, fault: DataFault, out: &mut Vec<Event>) {
        let mail_from = self.mail_from.clone();
        match fault {
            DataFault::TooBig => self.refuse(
                out,
                552,
                "5.3.4",
                format!(
                    "Message size exceeds fixed maximum message size ({} octets)",
                    self.cfg.max_message_bytes
                ),
                Some(&mail_from),
            ),
            DataFault::LineTooLong => self.refuse(
                out,
                554,
                "5.6.0",
                format!(
                    "Message not accepted: a line is longer than {} octets, CRLF included \
                     (RFC 5321 §4.5.3.1.6)",
                    self.cfg.max_line_length
                ),
                Some(&mail_from),
            ),
        }
        self.reset_transaction();
    }

    /// Queues a refusal's reply and its [`Event::Refused`] record.
    fn refuse(
        &self,
        out: &mut Vec<Event>,
        code: u16,
        enhanced: &'static str,
        reason: String,
        mail_from: Option<&str>,
    ) {
        out.push(reply(code, enhanced, &reason));
        out.push(Event::Refused(DialogueRefusal {
            code,
            enhanced,
            reason,
            user: self.authenticated.clone(),
            mail_from: mail_from.filter(|m| !m.is_empty()).map(str::to_string),
        }));
    }

    fn reset_transaction(&mut self) {
        self.mail_from.clear();
        self.rcpt_to.clear();
        self.data = Vec::new();
        self.data_rx = DataReceiver::new();
        self.discard_rx = None;
        self.data_received = 0;
        self.data_line_len = 0;
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
                    self.data_received = 0;
                    self.data_line_len = 0;
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

    fn ehlo_reply(&self) -> Vec<u8> {
        let mut caps = vec![
            self.cfg.hostname.clone(),
            format!("SIZE {}", self.cfg.max_message_bytes),
            "8BITMIME".into(),
            "PIPELINING".into(),
            "ENHANCEDSTATUSCODES".into(),
        ];
        if !self.tls && self.cfg.tls_available {
            caps.push("STARTTLS".into());
        }
        if self.tls && self.cfg.role == Role::Submission {
            caps.push("AUTH PLAIN LOGIN".into());
        }
        let mut s = String::new();
        for (i, c) in caps.iter().enumerate() {
            let sep = if i + 1 == caps.len() { ' ' } else { '-' };
            s.push_str(&format!("250{sep}{c}\r\n"));
        }
        s.into_bytes()
    }

    fn auth_start(&mut self, mechanism: u64, initial: String, out: &mut Vec<Event>) -> bool {
        if self.cfg.role != Role::Submission {
            out.push(reply(502, "5.5.1", "AUTH is not available on this port"));
            return false;
        }
        if !self.tls {
            // RFC 4954 §4: no credentials over a clear channel.
            out.push(reply(
                538,
                "5.7.11",
                "Encryption required for requested authentication mechanism",
            ));
            return false;
        }
        if self.authenticated.is_some() {
            out.push(reply(503, "5.5.1", "Already authenticated"));
            return false;
        }
        if !matches!(self.phase, Phase::Ready) {
            out.push(reply(503, "5.5.1", "AUTH not allowed now"));
            return false;
        }
        match mechanism {
            smtp_proto::AUTH_PLAIN => {
                if initial.is_empty() {
                    self.phase = Phase::AuthPlain;
                    out.push(Event::Reply(b"334 \r\n".to_vec()));
                    false
                } else {
                    self.auth_continue_plain(&initial, out)
                }
            }
            smtp_proto::AUTH_LOGIN => {
                if initial.is_empty() {
                    self.phase = Phase::AuthLoginUser;
                    out.push(Event::Reply(b"334 VXNlcm5hbWU6\r\n".to_vec()));
                } else {
                    match decode_b64(&initial) {
                        Some(u) => {
                            self.phase = Phase::AuthLoginPass(u);
                            out.push(Event::Reply(b"334 UGFzc3dvcmQ6\r\n".to_vec()));
                        }
                        None => out.push(reply(501, "5.5.2", "Invalid base64")),
                    }
                }
                false
            }
            _ => {
                out.push(reply(504, "5.5.4", "Unrecognized authentication mechanism"));
                false
            }
        }
    }

    fn auth_continue(&mut self, line: &str, out: &mut Vec<Event>) -> bool {
        if line == "*" {
            self.phase = Phase::Ready;
            out.push(reply(501, "5.0.0", "Authentication cancelled"));
            return false;
        }
        match self.phase.clone() {
            Phase::AuthPlain => self.auth_continue_plain(line, out),
            Phase::AuthLoginUser => {
                match decode_b64(line) {
                    Some(u) => {
                        self.phase = Phase::AuthLoginPass(u);
                        out.push(Event::Reply(b"334 UGFzc3dvcmQ6\r\n".to_vec()));
                    }
                    None => {
                        self.phase = Phase::Ready;
                        out.push(reply(501, "5.5.2", "Invalid base64"));
                    }
                }
                false
            }
            Phase::AuthLoginPass(user) => match decode_b64(line) {
                Some(p) => {
                    self.phase = Phase::AwaitingAuth;
                    out.push(Event::Authenticate {
                        username: user,
                        password: p,
                    });
                    true
                }
                None => {
                    self.phase = Phase::Ready;
                    out.push(reply(501, "5.5.2", "Invalid base64"));
                    false
                }
            },
            _ => false,
        }
    }

    fn auth_continue_plain(&mut self, b64: &str, out: &mut Vec<Event>) -> bool {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .ok();
        // RFC 4616: [authzid] NUL authcid NUL passwd
        let parts: Option<(String, String)> = decoded.and_then(|d| {
            let mut it = d.split(|&b| b == 0);
            let authz = it.next()?;
            let user = it.next()?;
            let pass = it.next()?;
            if it.next().is_some() {
                return None;
            }
            let user = String::from_utf8(user.to_vec()).ok()?;
            let authz = String::from_utf8(authz.to_vec()).ok()?;
            if !authz.is_empty() && authz != user {
                return None; // acting as another user is not offered
            }
            Some((user, String::from_utf8(pass.to_vec()).ok()?))
        });
        match parts {
            Some((username, password)) => {
                self.phase = Phase::AwaitingAuth;
                out.push(Event::Authenticate { username, password });
                true
            }
            None => {
                self.phase = Phase::Ready;
                out.push(reply(501, "5.5.2", "Malformed AUTH PLAIN response"));
                false
            }
        }
    }

    /// The driver's answer to [`Event::Authenticate`].
    pub fn auth_result(&mut self, user: Option<String>) -> Vec<Event> {
        match user {
            Some(u) => {
                if self.phase != Phase::AwaitingAuth {
                    return Vec::new();
                }
                self.phase = Phase::Ready;
                self.authenticated = Some(u);
                let mut out = vec![reply(235, "2.7.0", "Authentication successful")];
                out.extend(self.feed(&[]));
                out
            }
            None => self.auth_failed(535, "5.7.8", "Authentication credentials invalid"),
        }
    }

    /// The driver's answer to [`Event::Authenticate`] when the attempt is refused without
    /// checking the credentials (e.g. 454 4.7.0 during a lockout). It counts as a failure.
    pub fn auth_refused(&mut self, code: u16, enhanced: &str, text: &str) -> Vec<Event> {
        self.auth_failed(code, enhanced, text)
    }

    fn auth_failed(&mut self, code: u16, enhanced: &str, text: &str) -> Vec<Event> {
        if self.phase != Phase::AwaitingAuth {
            return Vec::new();
        }
        self.phase = Phase::Ready;
        self.auth_failures += 1;
        if self.auth_failures >= self.cfg.max_auth_failures {
            self.phase = Phase::Closed;
            return vec![
                reply(
                    421,
                    "4.7.0",
                    "Too many failed authentication attempts, closing",
                ),
                Event::Close,
            ];
        }
        let mut out = vec![reply(code, enhanced, text)];
        out.extend(self.feed(&[]));
        out
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

/// A DATA receiver that knows it stands at the start of a line. smtp-proto's starts with
/// no previous CRLF, so it would miss the final dot of an empty message (`.` as the very
/// first line) and would not unstuff a leading dot on the first line (RFC 5321 §4.5.2).
fn primed_data_receiver() -> DataReceiver {
    let mut rx = DataReceiver::new();
    let mut scratch = Vec::new();
    rx.ingest(&mut b"\r\n".iter(), &mut scratch);
    rx
}

fn decode_b64(s: &str) -> Option<String> {
    let d = base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .ok()?;
    String::from_utf8(d).ok()
}

fn protocol_error(e: &ProtoError) -> Event {
    match e {
        ProtoError::UnknownCommand => reply(500, "5.5.1", "Command unrecognized"),
        ProtoError::InvalidSenderAddress => reply(501, "5.1.7", "Bad sender address syntax"),
        ProtoError::InvalidRecipientAddress => reply(501, "5.1.3", "Bad recipient address syntax"),
        ProtoError::SyntaxError { syntax } => {
            reply(501, "5.5.2", &format!("Syntax error, expected: {syntax}"))
        }
        ProtoError::InvalidParameter { param } => {
            reply(501, "5.5.4", &format!("Invalid parameter {param}"))
        }
        ProtoError::UnsupportedParameter { param } => reply(
            504,
            "5.5.4",
            &format!(
                "Unsupported parameter {}",
                param.chars().take(40).collect::<String>()
            ),
        ),
        ProtoError::ResponseTooLong => reply(500, "5.5.2", "Line too long"),
        ProtoError::NeedsMoreData { .. } | ProtoError::InvalidResponse { .. } => {
            reply(500, "5.5.2", "Syntax error")
        }
    }
}
