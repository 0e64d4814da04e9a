//! POP3 access to the INBOX (RFC 1939, CAPA and response codes of RFC 2449, AUTH of
//! RFC 5034 with PLAIN of RFC 4616), over implicit TLS (`[listen] pop3s`, RFC 8314).
//!
//! | module | owns |
//! |---|---|
//! | [`session`] | sans-IO state machine, one [`session::State`] variant per RFC 1939 state |
//! | [`server`] | the tokio driver: TLS, limits, timeouts, password checks, store calls |
//!
//! ## What DELE does to a PEC message (evidence is kept)
//!
//! PEC messages and receipts are legal evidence, so POP3 never destroys one. DELE marks a
//! message; at QUIT (the UPDATE state, RFC 1939 §6) every marked message gets the keywords
//! `$POP3Deleted` and `\Seen` in one commit. Messages carrying `$POP3Deleted` are left out
//! of every later POP3 session, but stay in the INBOX for IMAP and webmail (where the user
//! may file or expunge them) and keep counting against the quota until then. Nothing is
//! expunged by POP3. The trace log records every PEC event independently of the mailbox.
//!
//! Untrusted input: command lines, bounded to [`MAX_LINE`] bytes; arguments are parsed
//! into numbers or rejected with `-ERR`.

pub mod server;
pub mod session;

pub use server::{Pop3ListenerConfig, serve};

/// Longest command line accepted, CRLF included (RFC 2449 §4 allows 255 octets; SASL
/// responses are longer).
pub const MAX_LINE: usize = 2048;
/// The keyword that hides a message from POP3.
pub const DELETED_KEYWORD: &str = "$POP3Deleted";

#[cfg(test)]
mod session_tests;
