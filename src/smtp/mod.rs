//! SMTP for pecd, layered as design principle 1 asks: wire format (smtp-proto) →
//! [`session`] (sans-IO state machine, testable without sockets) → a thin tokio driver.
//!
//! * [`session`]: the server side of one connection, for the submission (465/587) and
//!   incoming (25) listeners.

pub mod session;

#[cfg(test)]
mod session_tests;
