//! # pecd — a PEC (Posta Elettronica Certificata) provider
//!
//! One crate, library plus the `pecd` binary. The layout follows the PEC data flow
//! (see `../shared/design.md` and the rules digest `../shared/spec/pec-rules.md`):
//!
//! ```text
//!  mail client ──SMTPS/587──► access point ──► acceptance receipt ─► sender's INBOX
//!                                  │
//!                       signed transport envelope ──► local / other provider / non-PEC
//!  other provider ──SMTP 25──► incoming point ──► take-charge receipt, anomaly envelope
//!                                  ▼
//!                       delivery point ──► delivery receipt / non-delivery notice
//!  every step ──► trace log (registro, hash-chained, 30 months)
//! ```
//!
//! | module | owns |
//! |---|---|
//! | [`pec`] | the PEC rules, pure (no I/O): daticert, envelopes, receipts, S/MIME, classifier |
//! | [`config`] | the one typed configuration tree, validated once |
//! | [`pki`] | the development PKI written by `pecd init` |
//! | [`store`] | the embedded store: mailboxes, messages, blobs, queue, pending receipts |
//! | [`trace`] | the trace log (registro): append-only, hash-chained, signed checkpoints |
//! | [`report`] | the offline report of `pecd verify` |
//! | [`http`] | the web listener (HTTPS): routing, webmail sessions, CSRF, security headers |
//! | [`jmap`] | JMAP (RFC 8620/8621) with the PEC capability |
//! | [`web`] | the built-in webmail's embedded assets |
//! | [`ops`] | Prometheus metrics, health and readiness, the admin listener |
//! | [`fuzz`] | the entry points of the fuzz targets (`fuzz/`), shared with a stable test |
#![forbid(unsafe_code)]

pub mod antispam;
pub mod antivirus;
pub mod clock;
pub mod cns;
pub mod config;
pub mod control;
pub mod daemon;
pub mod evidence;
pub mod filters;
pub mod fuzz;
pub mod gateway;
pub mod http;
pub mod imap;
pub mod jmap;
pub mod listener;
pub mod notify;
pub mod ops;
pub mod pec;
pub mod pipeline;
pub mod pki;
pub mod pop3;
pub mod report;
pub mod server;
pub mod smtp;
pub mod store;
pub mod tls;
pub mod trace;
pub mod web;
