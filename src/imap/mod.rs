//! IMAP4rev1 access to the mailboxes (RFC 3501), over implicit TLS (`[listen] imaps`).
//!
//! Layering, as for SMTP (design principle 1):
//!
//! | module | owns |
//! |---|---|
//! | [`session`] | the sans-IO protocol state machine: bytes in (through imap-codec's `Fragmentizer` and `CommandCodec`), replies out; one enum variant per RFC 3501 §3 state |
//! | [`exec`], [`folders`] | the commands that read or change the store, run synchronously on the blocking pool |
//! | [`fetch`], [`search`], [`mime`] | FETCH/STORE, SEARCH evaluation, the MIME tree (BODYSTRUCTURE, ENVELOPE, sections) |
//! | [`view`] | the selected mailbox as the session sees it (sequence numbers ↔ UIDs) and its refresh |
//! | [`names`] | mailbox names: validation, special-use folders, isolation |
//! | [`wire`] | writing responses (quoted strings, literals, dates) |
//! | [`server`] | the tokio driver: TLS, per-user connection limits, timeouts, IDLE wake-ups |
//!
//! Untrusted input: everything the client sends. Commands are bounded by
//! [`Limits`]: a command's bytes (line plus literals) up to `max_command_bytes`, an APPEND
//! literal up to `max_literal_bytes`; imap-codec bounds the nesting of SEARCH keys and
//! parenthesised lists. A malformed command gets `BAD` and the session goes on.
//!
//! Isolation: the authenticated address is the only key the session ever passes to the
//! store, so a user can name only their own folders; names are checked by [`names`].
//!
//! Extensions: IDLE (RFC 2177), UIDPLUS (RFC 4315), MOVE (RFC 6851), QUOTA (RFC 9208),
//! NAMESPACE (RFC 2342), ID (RFC 2971), ENABLE (RFC 5161), LITERAL+ (RFC 7888),
//! SPECIAL-USE (RFC 6154), UNSELECT (RFC 3691).

pub mod exec;
pub mod fetch;
pub mod folders;
pub mod mime;
pub mod names;
pub mod search;
pub mod server;
pub mod session;
pub mod view;
pub mod wire;

#[cfg(test)]
pub(crate) mod session_tests;

pub use server::{ImapListenerConfig, serve};
pub use session::Session;

/// The named limits of an IMAP session (design principle 5).
#[derive(Debug, Clone)]
pub struct Limits {
    /// One command, line and literals together (APPEND excluded: see `max_literal_bytes`).
    pub max_command_bytes: u32,
    /// Largest APPEND literal accepted (the configured `limits.max_message_bytes`).
    pub max_literal_bytes: u32,
    /// Failed logins before the session is closed.
    pub max_auth_failures: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_command_bytes: 64 * 1024,
            max_literal_bytes: 100 * 1024 * 1024,
            max_auth_failures: 3,
        }
    }
}

/// The capabilities advertised after login (RFC 3501 §7.2.1).
pub const CAPABILITIES: &str = "IMAP4rev1 LITERAL+ SASL-IR IDLE UIDPLUS MOVE QUOTA QUOTA=RES-STORAGE NAMESPACE ID ENABLE SPECIAL-USE UNSELECT CHILDREN";
/// Before login: no LOGINDISABLED, because every listener is TLS (plain-text logins are
/// refused by [`Session`] when TLS is not active).
pub const CAPABILITIES_PRE: &str = "IMAP4rev1 LITERAL+ SASL-IR ID ENABLE AUTH=PLAIN";
