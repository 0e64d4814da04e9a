//! AUTH (RFC 4954, PLAIN per RFC 4616 and LOGIN): starting the exchange, its
//! continuation lines, and the driver's answers ([`Session::auth_result`],
//! [`Session::auth_refused`]) with the failure count that closes the session.
//!
//! Owns: the `Auth*` phases, `authenticated` and `auth_failures`. Must not touch: the
//! credentials themselves (the driver checks them) or the line framing (`framing`).

use base64::Engine;

use super::replies::reply;
use super::{Event, Phase, Role, Session};

impl Session {
    pub(super) fn auth_start(
        &mut self,
        mechanism: u64,
        initial: String,
        out: &mut Vec<Event>,
    ) -> bool {
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
            smtp_proto::AUTH_EXTERNAL if !self.external => {
                out.push(reply(
                    535,
                    "5.7.8",
                    "EXTERNAL needs a smart-card certificate in the TLS handshake",
                ));
                false
            }
            smtp_proto::AUTH_EXTERNAL => {
                if initial.is_empty() {
                    self.phase = Phase::AuthExternal;
                    out.push(Event::Reply(b"334 \r\n".to_vec()));
                    false
                } else {
                    self.auth_external_message(&initial, out)
                }
            }
            _ => {
                out.push(reply(504, "5.5.4", "Unrecognized authentication mechanism"));
                false
            }
        }
    }

    /// The EXTERNAL message: base64 of the authorization identity, `=` for none.
    fn auth_external_message(&mut self, b64: &str, out: &mut Vec<Event>) -> bool {
        let b64 = b64.trim();
        let raw = if b64 == "=" || b64.is_empty() {
            Some(Vec::new())
        } else {
            base64::engine::general_purpose::STANDARD.decode(b64).ok()
        };
        match raw.and_then(|r| String::from_utf8(r).ok()) {
            Some(a) => {
                let a = a.trim().to_string();
                self.phase = Phase::AwaitingAuth;
                out.push(Event::AuthenticateExternal {
                    authzid: (!a.is_empty()).then_some(a),
                });
                true
            }
            None => {
                self.phase = Phase::Ready;
                out.push(reply(501, "5.5.2", "Invalid base64"));
                false
            }
        }
    }

    pub(super) fn auth_continue(&mut self, line: &str, out: &mut Vec<Event>) -> bool {
        if line == "*" {
            self.phase = Phase::Ready;
            out.push(reply(501, "5.0.0", "Authentication cancelled"));
            return false;
        }
        match self.phase.clone() {
            Phase::AuthPlain => self.auth_continue_plain(line, out),
            Phase::AuthExternal => self.auth_external_message(line, out),
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
}

fn decode_b64(s: &str) -> Option<String> {
    let d = base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .ok()?;
    String::from_utf8(d).ok()
}
