//! The sans-IO IMAP session: bytes in, response bytes and [`Action`]s out. No socket, no
//! clock, no thread: the driver ([`super::server`]) feeds bytes and performs the actions.
//!
//! ```text
//!   (TLS greeting) ──► NotAuthenticated ──LOGIN/AUTHENTICATE ok──► Authenticated
//!                             │                                     │   ▲
//!                             │                          SELECT/EXAMINE  CLOSE/UNSELECT/
//!                             │                                     ▼   │  failed SELECT
//!                             │                                   Selected
//!                             └────────── LOGOUT (any state) ──► Logout
//! ```
//! (RFC 3501 §3, one [`State`] variant per state.) IDLE (RFC 2177) and the SASL exchange
//! of AUTHENTICATE are sub-states recorded in the pending step, not protocol states.
//!
//! The session decides everything that needs no store: framing and limits (imap-codec's
//! `Fragmentizer`, the literal checks of [`super::Limits`]), decoding (imap-codec's
//! `CommandCodec`), which commands a state allows, CAPABILITY, ID, ENABLE, NAMESPACE,
//! LOGOUT, and the login rules (TLS only: RFC 3501 §6.2.3, RFC 8314). Commands that touch
//! the mailboxes are handed to [`super::exec`] through [`Session::execute`], which the
//! driver runs on the blocking pool.

use base64::Engine;
use imap_codec::fragmentizer::{FragmentInfo, Fragmentizer, LiteralAnnouncement};
use imap_codec::imap_types::IntoStatic;
use imap_codec::imap_types::auth::AuthMechanism;
use imap_codec::imap_types::command::{Command, CommandBody};
use imap_codec::imap_types::core::LiteralMode;
use imap_codec::{CommandCodec, IdleDoneCodec};

use super::view::View;
use super::wire::{tagged, untagged};
use super::{CAPABILITIES, CAPABILITIES_PRE, Limits};
use crate::pec::address::PecAddress;
use crate::store::{MailboxChange, Store};

/// RFC 3501 §3 states.
#[derive(Debug)]
pub enum State {
    NotAuthenticated { failures: u32 },
    Authenticated { user: PecAddress },
    Selected { user: PecAddress, view: View },
    Logout,
}

impl State {
    pub fn user(&self) -> Option<&PecAddress> {
        match self {
            State::Authenticated { user } | State::Selected { user, .. } => Some(user),
            _ => None,
        }
    }
}

/// What the driver must do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Check these credentials, then call [`Session::auth_result`].
    Authenticate { user: String, pass: String },
    /// SASL EXTERNAL: log in with the TLS client certificate (a smart card), as `authzid`
    /// when the client named a mailbox. Answer with [`Session::auth_result`] (or
    /// [`Session::auth_must_change`] is never needed: cards have no password).
    AuthenticateExternal { authzid: Option<String> },
    /// Write the pending output, then call [`Session::execute`] with the store (blocking:
    /// use the blocking pool). A FETCH asks for this once per step, so its answer goes
    /// out in pieces of [`super::fetch::FETCH_CHUNK_BYTES`] or one message.
    Execute,
    /// IDLE: wait for bytes or a store change; on a change that [`Session::watches`] call
    /// [`Session::idle_changed`] (and [`Session::idle_refresh`] now and then as a fallback).
    Idle,
    /// Write the pending output, then close.
    Close,
    /// Write the pending output, then read more bytes.
    NeedInput,
}

/// The step the session waits on.
#[derive(Debug)]
enum Pending {
    None,
    AuthWait {
        tag: String,
    },
    /// Waiting for the client's line of an AUTHENTICATE exchange (`external`: the
    /// EXTERNAL mechanism, else PLAIN).
    Sasl {
        tag: String,
        external: bool,
    },
    Exec(Box<Command<'static>>),
    /// A FETCH answered in steps, each written out before the next (bounded memory).
    Fetch(Box<super::fetch::FetchJob>),
    PostLogin {
        tag: String,
    },
    Idle {
        tag: String,
    },
}

/// One IMAP connection's protocol state.
#[derive(Debug)]
pub struct Session {
    pub state: State,
    pending: Pending,
    frag: Fragmentizer,
    limits: Limits,
    tls: bool,
    /// The TLS client presented a certificate: SASL EXTERNAL is offered.
    external: bool,
    out: Vec<u8>,
    creds: Option<Credentials>,
}

/// What a login gave, for the driver to check.
enum Credentials {
    Password(String, String),
    External(Option<String>),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Password(u, _) => write!(f, "Password({u:?}, <redacted>)"),
            Self::External(a) => write!(f, "External({a:?})"),
        }
    }
}

impl Session {
    /// A new session and its greeting is in the output. `tls`: the connection is encrypted.
    pub fn new(limits: Limits, tls: bool) -> Self {
        let max = limits
            .max_command_bytes
            .saturating_add(limits.max_literal_bytes);
        let mut s = Self {
            state: State::NotAuthenticated { failures: 0 },
            pending: Pending::None,
            frag: Fragmentizer::new(max),
            limits,
            tls,
            external: false,
            out: Vec::new(),
            creds: None,
        };
        s.out.extend(untagged(&format!(
            "OK [CAPABILITY {CAPABILITIES_PRE}] pecd IMAP4rev1 ready"
        )));
        s
    }

    /// The TLS client presented a certificate: offer SASL EXTERNAL (smart-card login).
    /// Call before the first [`Self::next`]: the greeting is written again with it.
    pub fn offer_external(&mut self) {
        self.external = true;
        self.out.clear();
        let caps = self.capabilities_pre();
        self.out.extend(untagged(&format!(
            "OK [CAPABILITY {caps}] pecd IMAP4rev1 ready"
        )));
    }

    fn capabilities_pre(&self) -> String {
        if self.external {
            format!("{CAPABILITIES_PRE} AUTH=EXTERNAL")
        } else {
            CAPABILITIES_PRE.to_string()
        }
    }

    /// Bytes from the client.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.frag.enqueue_bytes(bytes);
    }

    /// The bytes to send now.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    pub fn is_idle(&self) -> bool {
        matches!(self.pending, Pending::Idle { .. })
    }

    /// The authenticated mailbox, if any.
    pub fn user(&self) -> Option<&PecAddress> {
        self.state.user()
    }

    /// Processes buffered input until an action is needed.
    pub fn next(&mut self) -> Action {
        loop {
            if matches!(self.state, State::Logout) {
                return Action::Close;
            }
            match &self.pending {
                Pending::None => {}
                Pending::AuthWait { .. } => {
                    return match self.creds.take() {
                        Some(Credentials::Password(user, pass)) => {
                            Action::Authenticate { user, pass }
                        }
                        Some(Credentials::External(authzid)) => {
                            Action::AuthenticateExternal { authzid }
                        }
                        None => Action::NeedInput,
                    };
                }
                Pending::Exec(_) | Pending::Fetch(_) | Pending::PostLogin { .. } => {
                    return Action::Execute;
                }
                Pending::Idle { .. } | Pending::Sasl { .. } => {}
            }
            let Some(frag) = self.frag.progress() else {
                if self.frag.message_bytes().len() > self.line_limit() {
                    return self.bye("command line too long");
                }
                return if self.is_idle() {
                    Action::Idle
                } else {
                    Action::NeedInput
                };
            };
            if let FragmentInfo::Line {
                announcement: Some(LiteralAnnouncement { mode, length }),
                ..
            } = frag
            {
                if let Some(a) = self.literal(mode, length) {
                    return a;
                }
                continue;
            }
            if !self.frag.is_message_complete() {
                continue;
            }
            if let Some(a) = self.message() {
                return a;
            }
        }
    }

    fn line_limit(&self) -> usize {
        if self.is_append() {
            self.limits.max_literal_bytes as usize + self.limits.max_command_bytes as usize
        } else {
            self.limits.max_command_bytes as usize
        }
    }

    fn is_append(&self) -> bool {
        let m = self.frag.message_bytes();
        let mut words = m.split(|&b| b == b' ');
        let _tag = words.next();
        let cmd = words.next().unwrap_or_default();
        cmd.eq_ignore_ascii_case(b"APPEND")
    }

    /// A literal is announced: accept it (`+` for a synchronizing one) or refuse it.
    fn literal(&mut self, mode: LiteralMode, length: u32) -> Option<Action> {
        let max = if self.is_append() {
            self.limits.max_literal_bytes
        } else {
            self.limits.max_command_bytes
        };
        if length <= max && self.frag.message_bytes().len() <= self.line_limit() {
            if mode == LiteralMode::Sync {
                self.out.extend_from_slice(b"+ Ready for literal data\r\n");
            }
            return None;
        }
        match (mode, self.frag.decode_tag()) {
            // The client waits for "+": refusing is safe, the literal will not come.
            (LiteralMode::Sync, Some(tag)) => {
                let tag = tag.as_ref().to_string();
                self.frag.skip_message();
                self.out.extend(tagged(
                    &tag,
                    "NO",
                    &format!("[TOOBIG] Literal of {length} bytes exceeds the limit of {max}"),
                ));
                None
            }
            // A non-synchronizing literal is on its way (RFC 7888 §4): the stream is lost.
            _ => Some(self.bye("literal too large")),
        }
    }

    fn bye(&mut self, why: &str) -> Action {
        self.out.extend(untagged(&format!("BYE {why}")));
        self.state = State::Logout;
        Action::Close
    }

    /// A complete message is in the fragmentizer.
    fn message(&mut self) -> Option<Action> {
        match std::mem::replace(&mut self.pending, Pending::None) {
            Pending::Idle { tag } => {
                match self.frag.decode_message(&IdleDoneCodec::default()) {
                    Ok(_) => self.out.extend(tagged(&tag, "OK", "IDLE terminated")),
                    Err(_) => self.out.extend(tagged(&tag, "BAD", "Expected DONE")),
                }
                return None;
            }
            Pending::Sasl { tag, external } => {
                let line = String::from_utf8_lossy(self.frag.message_bytes())
                    .trim_end()
                    .to_string();
                if line == "*" {
                    self.out
                        .extend(tagged(&tag, "BAD", "AUTHENTICATE cancelled"));
                    return None;
                }
                let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(line.as_bytes())
                else {
                    self.out.extend(tagged(&tag, "BAD", "Invalid base64"));
                    return None;
                };
                if external {
                    self.external_credentials(tag, &raw);
                    return None;
                }
                return self.plain_credentials(tag, &raw);
            }
            other => self.pending = other,
        }
        if !self.is_append()
            && self.frag.message_bytes().len() > self.limits.max_command_bytes as usize
        {
            let tag = self
                .frag
                .decode_tag()
                .map(|t| t.as_ref().to_string())
                .unwrap_or_else(|| "*".into());
            self.out.extend(tagged(&tag, "BAD", "Command too long"));
            return None;
        }
        let decoded = self
            .frag
            .decode_message(&CommandCodec::default())
            .map(|c| c.into_static());
        let cmd = match decoded {
            Ok(c) => c,
            Err(e) => {
                let tag = self
                    .frag
                    .decode_tag()
                    .map(|t| t.as_ref().to_string())
                    .unwrap_or_else(|| "*".into());
                let why = match e {
                    imap_codec::fragmentizer::DecodeMessageError::MessageTooLong { .. } => {
                        "Command too long"
                    }
                    _ => "Malformed or unknown command",
                };
                self.out.extend(tagged(&tag, "BAD", why));
                return None;
            }
        };
        self.command(cmd)
    }

    fn command(&mut self, cmd: Command<'static>) -> Option<Action> {
        let tag = cmd.tag.as_ref().to_string();
        let authed = self.state.user().is_some();
        let selected = matches!(self.state, State::Selected { .. });
        match &cmd.body {
            CommandBody::Capability => {
                let caps = if authed {
                    CAPABILITIES.to_string()
                } else {
                    self.capabilities_pre()
                };
                self.out.extend(untagged(&format!("CAPABILITY {caps}")));
                self.out.extend(tagged(&tag, "OK", "CAPABILITY completed"));
            }
            CommandBody::Noop if !selected => self.out.extend(tagged(&tag, "OK", "NOOP completed")),
            CommandBody::Logout => {
                self.out.extend(untagged("BYE Logging out"));
                self.out.extend(tagged(&tag, "OK", "LOGOUT completed"));
                self.state = State::Logout;
                return Some(Action::Close);
            }
            CommandBody::Id { .. } => {
                self.out.extend(untagged("ID (\"name\" \"pecd\")"));
                self.out.extend(tagged(&tag, "OK", "ID completed"));
            }
            CommandBody::Login { username, password } => {
                if authed {
                    self.out
                        .extend(tagged(&tag, "BAD", "Already authenticated"));
                } else if !self.tls {
                    self.out
                        .extend(tagged(&tag, "NO", "[PRIVACYREQUIRED] Login only over TLS"));
                } else {
                    let user = String::from_utf8_lossy(username.as_ref()).into_owned();
                    let pass = String::from_utf8_lossy(password.declassify().as_ref()).into_owned();
                    self.creds = Some(Credentials::Password(user, pass));
                    self.pending = Pending::AuthWait { tag };
                }
            }
            CommandBody::Authenticate {
                mechanism,
                initial_response,
            } => {
                let external = mechanism.to_string().eq_ignore_ascii_case("EXTERNAL");
                if authed {
                    self.out
                        .extend(tagged(&tag, "BAD", "Already authenticated"));
                } else if external && self.external {
                    match initial_response {
                        Some(ir) => {
                            let raw = ir.declassify().to_vec();
                            self.external_credentials(tag, &raw);
                        }
                        None => {
                            self.out.extend_from_slice(b"+ \r\n");
                            self.pending = Pending::Sasl {
                                tag,
                                external: true,
                            };
                        }
                    }
                } else if external {
                    self.out.extend(tagged(
                        &tag,
                        "NO",
                        "[AUTHENTICATIONFAILED] EXTERNAL needs a smart-card certificate in the TLS handshake",
                    ));
                } else if *mechanism != AuthMechanism::Plain {
                    self.out
                        .extend(tagged(&tag, "NO", "Unsupported mechanism, use PLAIN"));
                } else if !self.tls {
                    self.out.extend(tagged(
                        &tag,
                        "NO",
                        "[PRIVACYREQUIRED] Authentication only over TLS",
                    ));
                } else if let Some(ir) = initial_response {
                    // SASL-IR: the bytes are already decoded by imap-codec.
                    let raw = ir.declassify().to_vec();
                    return self.plain_credentials(tag, &raw);
                } else {
                    self.out.extend_from_slice(b"+ \r\n");
                    self.pending = Pending::Sasl {
                        tag,
                        external: false,
                    };
                }
            }
            CommandBody::Enable { .. } if authed => {
                // No extension this server knows needs enabling: none is enabled (RFC 5161 §3.1).
                self.out.extend(untagged("ENABLED"));
                self.out.extend(tagged(&tag, "OK", "ENABLE completed"));
            }
            CommandBody::Namespace if authed => {
                self.out
                    .extend(untagged("NAMESPACE ((\"\" \"/\")) NIL NIL"));
                self.out.extend(tagged(&tag, "OK", "NAMESPACE completed"));
            }
            CommandBody::Idle if authed => {
                self.out.extend_from_slice(b"+ idling\r\n");
                self.pending = Pending::Idle { tag };
                return Some(Action::Idle);
            }
            body if !authed => {
                let _ = body;
                self.out.extend(tagged(&tag, "BAD", "Log in first"));
            }
            CommandBody::Check
            | CommandBody::Close
            | CommandBody::Unselect
            | CommandBody::Expunge
            | CommandBody::ExpungeUid { .. }
            | CommandBody::Search { .. }
            | CommandBody::Fetch { .. }
            | CommandBody::Store { .. }
            | CommandBody::Copy { .. }
            | CommandBody::Move { .. }
                if !selected =>
            {
                self.out.extend(tagged(&tag, "BAD", "No mailbox selected"));
            }
            CommandBody::Sort { .. }
            | CommandBody::Thread { .. }
            | CommandBody::Compress { .. } => {
                self.out.extend(tagged(&tag, "BAD", "Not supported"));
            }
            _ => {
                self.pending = Pending::Exec(Box::new(cmd));
                return Some(Action::Execute);
            }
        }
        None
    }

    /// The EXTERNAL message: the authorization identity (the mailbox), possibly empty.
    fn external_credentials(&mut self, tag: String, raw: &[u8]) {
        let authzid = String::from_utf8_lossy(raw).trim().to_string();
        self.creds = Some(Credentials::External(
            (!authzid.is_empty()).then_some(authzid),
        ));
        self.pending = Pending::AuthWait { tag };
    }

    /// `authzid \0 authcid \0 password` (RFC 4616); an authzid other than the user is refused.
    fn plain_credentials(&mut self, tag: String, raw: &[u8]) -> Option<Action> {
        let parts: Vec<&[u8]> = raw.split(|&b| b == 0).collect();
        match parts.as_slice() {
            [authz, user, pass] if authz.is_empty() || authz == user => {
                let user = String::from_utf8_lossy(user).into_owned();
                self.creds = Some(Credentials::Password(
                    user,
                    String::from_utf8_lossy(pass).into_owned(),
                ));
                self.pending = Pending::AuthWait { tag };
                None
            }
            _ => {
                self.out.extend(tagged(
                    &tag,
                    "NO",
                    "[AUTHENTICATIONFAILED] Invalid PLAIN credentials",
                ));
                None
            }
        }
    }

    /// The outcome of [`Action::Authenticate`]: the canonical address, or `None`.
    pub fn auth_result(&mut self, user: Option<String>) {
        let Pending::AuthWait { tag } = std::mem::replace(&mut self.pending, Pending::None) else {
            return;
        };
        match user.and_then(|u| PecAddress::parse(&u).ok()) {
            Some(user) => {
                self.state = State::Authenticated { user };
                self.pending = Pending::PostLogin { tag };
            }
            None => {
                self.out.extend(tagged(
                    &tag,
                    "NO",
                    "[AUTHENTICATIONFAILED] Invalid credentials",
                ));
                if let State::NotAuthenticated { failures } = &mut self.state {
                    *failures += 1;
                    if *failures >= self.limits.max_auth_failures {
                        self.out.extend(untagged("BYE Too many failed logins"));
                        self.state = State::Logout;
                    }
                }
            }
        }
    }

    /// The password was right but provisional: `NO [ALERT]` with where to change it
    /// (clients must show ALERT texts to the user, RFC 3501 §7.1). Not a failed attempt.
    pub fn auth_must_change(&mut self, notice: &str) {
        if let Pending::AuthWait { tag } = std::mem::replace(&mut self.pending, Pending::None) {
            let notice: String = notice.chars().filter(|c| !c.is_control()).collect();
            self.out
                .extend(tagged(&tag, "NO", &format!("[ALERT] {notice}")));
        }
    }

    /// The credentials could not be checked now (RFC 5530 `UNAVAILABLE`).
    pub fn auth_unavailable(&mut self) {
        if let Pending::AuthWait { tag } = std::mem::replace(&mut self.pending, Pending::None) {
            self.out.extend(tagged(
                &tag,
                "NO",
                "[UNAVAILABLE] Temporary failure, try again later",
            ));
        }
    }

    /// The credentials were right but the mailbox has too many sessions open.
    pub fn auth_limited(&mut self) {
        if let Pending::AuthWait { tag } = std::mem::replace(&mut self.pending, Pending::None) {
            self.out.extend(tagged(
                &tag,
                "NO",
                "[LIMIT] Too many connections for this mailbox",
            ));
        }
    }

    /// Runs the pending store command (blocking: call it on the blocking pool).
    pub fn execute(&mut self, store: &Store) {
        match std::mem::replace(&mut self.pending, Pending::None) {
            Pending::PostLogin { tag } => {
                if let Some(user) = self.state.user() {
                    super::exec::ensure_special_folders(store, user);
                }
                self.out.extend(tagged(
                    &tag,
                    "OK",
                    &format!("[CAPABILITY {CAPABILITIES}] Logged in"),
                ));
            }
            Pending::Exec(cmd) => {
                let tag = cmd.tag.as_ref().to_string();
                if let Some(job) =
                    super::exec::run(store, &mut self.state, &tag, cmd.body, &mut self.out)
                {
                    self.fetch_step(store, Box::new(job));
                }
            }
            Pending::Fetch(job) => self.fetch_step(store, job),
            other => self.pending = other,
        }
    }

    /// One step of a FETCH; the rest waits for the next [`Action::Execute`], after the
    /// driver has written this step's output.
    fn fetch_step(&mut self, store: &Store, mut job: Box<super::fetch::FetchJob>) {
        if !job.step(store, &mut self.state, &mut self.out) {
            self.pending = Pending::Fetch(job);
        }
    }

    /// Whether a committed store change may concern the selected folder (the driver
    /// then calls [`Session::idle_changed`]).
    pub fn watches(&self, change: &MailboxChange) -> bool {
        match &self.state {
            State::Selected { user, view } => change.concerns(&user.to_string(), &view.folder),
            _ => false,
        }
    }

    /// During IDLE, after a change that concerns the selected folder: reloads it and
    /// reports new messages, expunges and flag changes (blocking).
    pub fn idle_changed(&mut self, store: &Store) {
        if let State::Selected { user, view } = &mut self.state
            && let Err(e) = view.refresh(store, user, &mut self.out)
        {
            tracing::warn!(error = %e, "IDLE refresh failed");
        }
    }

    /// During IDLE, the fallback check: reports new mail or expunges if the folder's
    /// UIDNEXT or size moved (one read when nothing did; blocking).
    pub fn idle_refresh(&mut self, store: &Store) {
        if let State::Selected { user, view } = &mut self.state
            && view.changed(store, user)
            && let Err(e) = view.refresh(store, user, &mut self.out)
        {
            tracing::warn!(error = %e, "IDLE refresh failed");
        }
    }

    /// The connection is about to be closed for inactivity (RFC 3501 §5.4).
    pub fn timeout(&mut self) -> Vec<u8> {
        self.state = State::Logout;
        untagged("BYE Autologout; idle for too long")
    }
}
