//! The sans-IO POP3 session (RFC 1939 §3):
//!
//! ```text
//!   greeting ──► Authorization ──USER/PASS or AUTH PLAIN ok──► Transaction ──QUIT──► Update ──► closed
//!                     └───────────── QUIT ──────────────────────────────────────────────► closed
//! ```
//! The session never touches the store: it asks the driver with [`Action`]s. The maildrop
//! listing is a snapshot taken at login (§4: the numbering is stable during the session).

use base64::Engine;

use super::{DELETED_KEYWORD, MAX_LINE};
use crate::pec::address::PecAddress;
use crate::store::{Batch, MessageRecord, Store, StoreError};

/// One message of the maildrop as this session numbers it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub rec: MessageRecord,
    pub uidl: String,
    pub deleted: bool,
}

/// RFC 1939 states.
#[derive(Debug)]
pub enum State {
    Authorization {
        user: Option<String>,
        failures: u32,
        sasl: bool,
    },
    Transaction {
        user: PecAddress,
        msgs: Vec<Entry>,
    },
    Update,
    Closed,
}

/// What the driver must do.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    Authenticate {
        user: String,
        pass: String,
    },
    /// SASL EXTERNAL (RFC 4422 appendix A): log in with the TLS client certificate (a
    /// smart card), as `authzid` when the client named a mailbox. Answer with
    /// [`Session::auth_result`].
    AuthenticateExternal {
        authzid: Option<String>,
    },
    /// Call [`Session::execute`] on the blocking pool.
    Execute,
    Close,
    NeedInput,
}

#[derive(Debug)]
enum Pending {
    None,
    AuthWait,
    Load(PecAddress),
    Retr { n: usize, lines: Option<usize> },
    Update,
}

/// A POP3 connection's protocol state.
#[derive(Debug)]
pub struct Session {
    pub state: State,
    pending: Pending,
    input: Vec<u8>,
    out: Vec<u8>,
    tls: bool,
    creds: Option<(String, String)>,
    /// The TLS client presented a certificate: EXTERNAL is offered.
    external: bool,
    /// `AUTH EXTERNAL` without an initial response: the next line is its message.
    external_wait: bool,
    /// An EXTERNAL login to check (the authorization identity, if any).
    card: Option<Option<String>>,
    max_failures: u32,
}

fn ok(s: &str) -> Vec<u8> {
    format!("+OK {s}\r\n").into_bytes()
}
fn err(s: &str) -> Vec<u8> {
    format!("-ERR {s}\r\n").into_bytes()
}

impl Session {
    pub fn new(tls: bool) -> Self {
        Self {
            state: State::Authorization {
                user: None,
                failures: 0,
                sasl: false,
            },
            pending: Pending::None,
            input: Vec::new(),
            out: ok("pecd POP3 ready"),
            tls,
            creds: None,
            external: false,
            external_wait: false,
            card: None,
            max_failures: 3,
        }
    }

    /// The TLS client presented a certificate: offer SASL EXTERNAL (smart-card login).
    pub fn offer_external(&mut self) {
        self.external = true;
    }

    pub fn feed(&mut self, b: &[u8]) {
        self.input.extend_from_slice(b);
    }

    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Past the AUTHORIZATION state (the driver's longer inactivity timer applies).
    pub fn is_authenticated(&self) -> bool {
        !matches!(self.state, State::Authorization { .. })
    }

    pub fn next(&mut self) -> Action {
        loop {
            match &self.pending {
                Pending::None => {}
                Pending::AuthWait => {
                    if let Some(authzid) = self.card.take() {
                        return Action::AuthenticateExternal { authzid };
                    }
                    return match self.creds.take() {
                        Some((user, pass)) => Action::Authenticate { user, pass },
                        None => Action::NeedInput,
                    };
                }
                _ => return Action::Execute,
            }
            if matches!(self.state, State::Closed) {
                return Action::Close;
            }
            let Some(pos) = self.input.iter().position(|&b| b == b'\n') else {
                if self.input.len() > MAX_LINE {
                    self.out.extend(err("Line too long"));
                    self.state = State::Closed;
                    return Action::Close;
                }
                return Action::NeedInput;
            };
            let line: Vec<u8> = self.input.drain(..=pos).collect();
            if line.len() > MAX_LINE {
                self.out.extend(err("Line too long"));
                continue;
            }
            let text = String::from_utf8_lossy(&line)
                .trim_end_matches(['\r', '\n'])
                .to_string();
            self.line(&text);
        }
    }

    fn line(&mut self, text: &str) {
        if self.external_wait {
            self.external_wait = false;
            return self.external_message(text);
        }
        if let State::Authorization { sasl: true, .. } = self.state {
            if let State::Authorization { sasl, .. } = &mut self.state {
                *sasl = false;
            }
            return self.plain(text);
        }
        let mut words = text.split(' ');
        let cmd = words.next().unwrap_or_default().to_ascii_uppercase();
        let args: Vec<&str> = words.filter(|w| !w.is_empty()).collect();
        // Everything after the first space, as sent (PASS: RFC 1939 §7).
        let rest = text.split_once(' ').map_or("", |(_, r)| r);
        match cmd.as_str() {
            "CAPA" => {
                let sasl = if self.external {
                    "SASL PLAIN EXTERNAL"
                } else {
                    "SASL PLAIN"
                };
                self.out.extend_from_slice(
                    format!(
                        "+OK Capability list follows\r\nUSER\r\nUIDL\r\nTOP\r\n{sasl}\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\nIMPLEMENTATION pecd\r\n.\r\n"
                    )
                    .as_bytes(),
                );
            }
            "QUIT" => match &self.state {
                State::Transaction { .. } => {
                    self.pending = Pending::Update;
                }
                _ => {
                    self.out.extend(ok("Bye"));
                    self.state = State::Closed;
                }
            },
            "NOOP" if matches!(self.state, State::Transaction { .. }) => self.out.extend(ok("")),
            _ => match &mut self.state {
                State::Authorization { .. } => self.authorization(&cmd, &args, rest),
                State::Transaction { .. } => self.transaction(&cmd, &args),
                _ => self.out.extend(err("Bad state")),
            },
        }
    }

    fn authorization(&mut self, cmd: &str, args: &[&str], rest: &str) {
        if matches!(cmd, "USER" | "PASS" | "AUTH") && !self.tls {
            return self
                .out
                .extend(err("[SYS/PERM] Authentication only over TLS"));
        }
        let State::Authorization { user, sasl, .. } = &mut self.state else {
            return;
        };
        match (cmd, args) {
            ("USER", [u]) => {
                *user = Some((*u).to_string());
                self.out.extend(ok("Send PASS"));
            }
            ("PASS", _) => match user.take() {
                // The password may contain spaces, doubled or at either end: it is the
                // rest of the line exactly as sent (RFC 1939 §7, "PASS string").
                Some(u) => {
                    self.creds = Some((u, rest.to_string()));
                    self.pending = Pending::AuthWait;
                }
                None => self.out.extend(err("USER first")),
            },
            ("AUTH", [m]) if m.eq_ignore_ascii_case("PLAIN") => {
                *sasl = true;
                self.out.extend_from_slice(b"+ \r\n");
            }
            ("AUTH", [m, ir]) if m.eq_ignore_ascii_case("PLAIN") => {
                let ir = ir.to_string();
                self.plain(&ir)
            }
            ("AUTH", [m, ..]) if m.eq_ignore_ascii_case("EXTERNAL") && !self.external => {
                self.out.extend(err(
                    "[AUTH] EXTERNAL needs a smart-card certificate in the TLS handshake",
                ))
            }
            ("AUTH", [m]) if m.eq_ignore_ascii_case("EXTERNAL") => {
                self.external_wait = true;
                self.out.extend_from_slice(b"+ \r\n");
            }
            ("AUTH", [m, ir]) if m.eq_ignore_ascii_case("EXTERNAL") => {
                let ir = ir.to_string();
                self.external_message(&ir)
            }
            ("AUTH", []) if self.external => self
                .out
                .extend_from_slice(b"+OK\r\nPLAIN\r\nEXTERNAL\r\n.\r\n"),
            ("AUTH", []) => self.out.extend_from_slice(b"+OK\r\nPLAIN\r\n.\r\n"),
            ("AUTH", _) => self.out.extend(err("Unsupported mechanism")),
            _ => self.out.extend(err("Unknown command or bad arguments")),
        }
    }

    /// The EXTERNAL message: base64 of the authorization identity, `=` for none.
    fn external_message(&mut self, b64: &str) {
        let b64 = b64.trim();
        if b64 == "*" {
            return self.out.extend(err("AUTH cancelled"));
        }
        let raw = if b64 == "=" || b64.is_empty() {
            Vec::new()
        } else {
            match base64::engine::general_purpose::STANDARD.decode(b64) {
                Ok(r) => r,
                Err(_) => return self.out.extend(err("Invalid base64")),
            }
        };
        let authzid = String::from_utf8_lossy(&raw).trim().to_string();
        self.card = Some((!authzid.is_empty()).then_some(authzid));
        self.pending = Pending::AuthWait;
    }

    fn plain(&mut self, b64: &str) {
        if b64 == "*" {
            return self.out.extend(err("AUTH cancelled"));
        }
        let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b64) else {
            return self.out.extend(err("Invalid base64"));
        };
        let parts: Vec<&[u8]> = raw.split(|&b| b == 0).collect();
        match parts.as_slice() {
            [z, u, p] if z.is_empty() || z == u => {
                self.creds = Some((
                    String::from_utf8_lossy(u).into_owned(),
                    String::from_utf8_lossy(p).into_owned(),
                ));
                self.pending = Pending::AuthWait;
            }
            _ => self.out.extend(err("[AUTH] Invalid credentials")),
        }
    }

    fn transaction(&mut self, cmd: &str, args: &[&str]) {
        let State::Transaction { msgs, .. } = &mut self.state else {
            return;
        };
        let live = |msgs: &Vec<Entry>| msgs.iter().filter(|m| !m.deleted).count();
        let pick = |msgs: &Vec<Entry>, a: &str| -> Result<usize, Vec<u8>> {
            let n: usize = a.parse().map_err(|_| err("Bad message number"))?;
            match msgs.get(n.wrapping_sub(1)) {
                Some(m) if !m.deleted => Ok(n - 1),
                Some(_) => Err(err("Message deleted")),
                None => Err(err("No such message")),
            }
        };
        match (cmd, args) {
            ("STAT", []) => {
                let size: u64 = msgs.iter().filter(|m| !m.deleted).map(|m| m.rec.size).sum();
                self.out.extend(ok(&format!("{} {size}", live(msgs))));
            }
            ("LIST" | "UIDL", []) => {
                self.out.extend(ok(&format!("{} messages", live(msgs))));
                for (i, m) in msgs.iter().enumerate().filter(|(_, m)| !m.deleted) {
                    let v = if cmd == "LIST" {
                        m.rec.size.to_string()
                    } else {
                        m.uidl.clone()
                    };
                    self.out.extend(format!("{} {v}\r\n", i + 1).into_bytes());
                }
                self.out.extend_from_slice(b".\r\n");
            }
            ("LIST" | "UIDL", [a]) => match pick(msgs, a) {
                Ok(i) => {
                    let v = if cmd == "LIST" {
                        msgs[i].rec.size.to_string()
                    } else {
                        msgs[i].uidl.clone()
                    };
                    self.out.extend(ok(&format!("{} {v}", i + 1)));
                }
                Err(e) => self.out.extend(e),
            },
            ("RETR", [a]) => match pick(msgs, a) {
                Ok(n) => self.pending = Pending::Retr { n, lines: None },
                Err(e) => self.out.extend(e),
            },
            ("TOP", [a, l]) => match (pick(msgs, a), l.parse::<usize>()) {
                (Ok(n), Ok(lines)) => {
                    self.pending = Pending::Retr {
                        n,
                        lines: Some(lines),
                    }
                }
                (Err(e), _) => self.out.extend(e),
                (_, Err(_)) => self.out.extend(err("Bad line count")),
            },
            ("DELE", [a]) => match pick(msgs, a) {
                Ok(n) => {
                    msgs[n].deleted = true;
                    self.out.extend(ok("Marked"));
                }
                Err(e) => self.out.extend(e),
            },
            ("RSET", []) => {
                msgs.iter_mut().for_each(|m| m.deleted = false);
                self.out.extend(ok("Reset"));
            }
            _ => self.out.extend(err("Unknown command or bad arguments")),
        }
    }

    /// The outcome of [`Action::Authenticate`].
    pub fn auth_result(&mut self, user: Option<String>) {
        if !matches!(self.pending, Pending::AuthWait) {
            return;
        }
        self.pending = Pending::None;
        match user.and_then(|u| PecAddress::parse(&u).ok()) {
            Some(u) => self.pending = Pending::Load(u),
            None => {
                self.out.extend(err("[AUTH] Invalid credentials"));
                if let State::Authorization { failures, .. } = &mut self.state {
                    *failures += 1;
                    if *failures >= self.max_failures {
                        self.state = State::Closed;
                    }
                }
            }
        }
    }

    /// The password was right but provisional: `-ERR [AUTH]` saying where to change it.
    /// Not a failed attempt.
    pub fn auth_must_change(&mut self, notice: &str) {
        self.pending = Pending::None;
        let notice: String = notice.chars().filter(|c| !c.is_control()).collect();
        self.out.extend(err(&format!("[AUTH] {notice}")));
    }

    /// The credentials could not be checked now (RFC 3206 `SYS/TEMP`).
    pub fn auth_unavailable(&mut self) {
        self.pending = Pending::None;
        self.out
            .extend(err("[SYS/TEMP] Temporary failure, try again later"));
    }

    /// Credentials right, but too many sessions for the mailbox (RFC 2449 `IN-USE`).
    pub fn auth_in_use(&mut self) {
        self.pending = Pending::None;
        self.out
            .extend(err("[IN-USE] Too many sessions for this mailbox"));
    }

    /// Runs the pending store step (blocking).
    pub fn execute(&mut self, store: &Store) {
        let r = match std::mem::replace(&mut self.pending, Pending::None) {
            Pending::Load(user) => self.load(store, user),
            Pending::Retr { n, lines } => self.retr(store, n, lines),
            Pending::Update => self.update(store),
            other => {
                self.pending = other;
                Ok(())
            }
        };
        if let Err(e) = r {
            tracing::error!(error = %e, "POP3 store operation failed");
            self.out.extend(err("[SYS/TEMP] Temporary failure"));
        }
    }

    fn load(&mut self, store: &Store, user: PecAddress) -> Result<(), StoreError> {
        let validity = store.folder(&user, "INBOX")?.map_or(0, |f| f.uidvalidity);
        let mut msgs: Vec<Entry> = store
            .messages(&user, "INBOX")?
            .into_iter()
            .filter(|m| !m.flags.iter().any(|f| f == DELETED_KEYWORD))
            .map(|rec| Entry {
                uidl: format!("{validity}.{}", rec.uid),
                rec,
                deleted: false,
            })
            .collect();
        msgs.sort_by_key(|m| m.rec.uid);
        self.out.extend(ok(&format!("{} messages", msgs.len())));
        self.state = State::Transaction { user, msgs };
        Ok(())
    }

    fn retr(&mut self, store: &Store, n: usize, lines: Option<usize>) -> Result<(), StoreError> {
        let State::Transaction { msgs, .. } = &self.state else {
            return Ok(());
        };
        let Some(m) = msgs.get(n) else { return Ok(()) };
        let bytes = store.blobs().read(&m.rec.blob)?;
        let body_at = crate::imap::mime::parse(&bytes).body;
        let end = match lines {
            None => bytes.len(),
            Some(k) => {
                let mut e = body_at;
                for _ in 0..k {
                    match bytes[e..].iter().position(|&b| b == b'\n') {
                        Some(p) => e += p + 1,
                        None => {
                            e = bytes.len();
                            break;
                        }
                    }
                }
                e
            }
        };
        self.out.extend(ok(&format!("{} octets", m.rec.size)));
        // Byte-stuffing (RFC 1939 §3): lines starting with '.' get another '.'.
        for line in bytes[..end].split_inclusive(|&b| b == b'\n') {
            if line.first() == Some(&b'.') {
                self.out.push(b'.');
            }
            self.out.extend_from_slice(line);
        }
        if !self.out.ends_with(b"\n") {
            self.out.extend_from_slice(b"\r\n");
        }
        self.out.extend_from_slice(b".\r\n");
        Ok(())
    }

    fn update(&mut self, store: &Store) -> Result<(), StoreError> {
        let State::Transaction { user, msgs } = std::mem::replace(&mut self.state, State::Update)
        else {
            return Ok(());
        };
        let mut batch = Batch::new();
        for m in msgs.iter().filter(|m| m.deleted) {
            // Re-read the flags: IMAP may have changed them since the snapshot.
            let Some(cur) = store.message(&user, "INBOX", m.rec.uid)? else {
                continue;
            };
            let mut flags = cur.flags;
            for f in [DELETED_KEYWORD, "\\Seen"] {
                if !flags.iter().any(|x| x == f) {
                    flags.push(f.to_string());
                }
            }
            batch = batch.set_flags(user.clone(), "INBOX", m.rec.uid, flags);
        }
        let r = if batch.is_empty() {
            Ok(())
        } else {
            // IDLE-ing IMAP sessions hear of it from the store.
            store.commit(batch).map(|_| ())
        };
        self.state = State::Closed;
        match r {
            Ok(()) => {
                self.out.extend(ok("Bye"));
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Inactivity (RFC 1939 §3: at least 10 minutes): close without UPDATE.
    pub fn timeout(&mut self) -> Vec<u8> {
        self.state = State::Closed;
        err("Autologout; idle for too long")
    }
}
