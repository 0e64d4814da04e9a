//! Reply text: the reply line format with enhanced status codes, the EHLO capability
//! list, the replies to parser errors, and queuing a refusal with its
//! [`Event::Refused`] record.
//!
//! Owns: wording and codes of these replies. Must not touch: the session's state (it
//! only reads the config, TLS and the authenticated user).

use smtp_proto::Error as ProtoError;

use super::{DialogueRefusal, Event, Role, Session};

pub(super) fn reply(code: u16, enhanced: &str, text: &str) -> Event {
    Event::Reply(format!("{code} {enhanced} {text}\r\n").into_bytes())
}

impl Session {
    /// Queues a refusal's reply and its [`Event::Refused`] record.
    pub(super) fn refuse(
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

    pub(super) fn ehlo_reply(&self) -> Vec<u8> {
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
            caps.push(if self.external {
                "AUTH PLAIN LOGIN EXTERNAL".into()
            } else {
                "AUTH PLAIN LOGIN".into()
            });
        }
        let mut s = String::new();
        for (i, c) in caps.iter().enumerate() {
            let sep = if i + 1 == caps.len() { ' ' } else { '-' };
            s.push_str(&format!("250{sep}{c}\r\n"));
        }
        s.into_bytes()
    }
}

pub(super) fn protocol_error(e: &ProtoError) -> Event {
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
