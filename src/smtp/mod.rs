//! SMTP for pecd, layered as design principle 1 asks: wire format (smtp-proto) →
//! [`session`] (sans-IO state machine, testable without sockets) → a thin tokio driver.
//!
//! * [`session`]: the server side of one connection, for the submission (465/587) and
//!   incoming (25) listeners.
//! * [`client`]: relaying to other providers, STARTTLS required and verified.
//! * [`spool`]: DATA streamed to a file while it arrives, and the in-flight and
//!   processing byte budgets.
//! * [`server`]: the tokio driver (sockets, TLS, timeouts, connection limits) and the
//!   [`server::Backend`] trait the PEC pipeline implements (credentials, login lockouts,
//!   messages, and the trace of refusals the session decides by itself).

pub mod client;
pub mod server;
pub mod session;
pub mod spool;

#[cfg(test)]
mod session_tests;
