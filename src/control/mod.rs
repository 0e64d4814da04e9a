//! The local control socket: how the admin subcommands (`pecd mailbox ...`, `pecd log ...`,
//! `pecd index import`) reach a running server, which holds the store's lock.
//!
//! # Where, and who may connect
//!
//! `<store.dir>/control.sock`, a Unix stream socket bound by [`crate::server::start`]
//! ([`listen`]). A socket file left behind by a server that crashed is removed first (a live
//! server cannot be using it: the store lock guarantees one server per store). The socket is
//! made mode 0600, and every connection's peer credentials (`SO_PEERCRED`) must show the uid
//! that owns the socket, i.e. the server's own: any other peer gets one `{"error": ...}` line
//! and is disconnected. The server removes the socket file when it stops.
//!
//! # Protocol
//!
//! JSON Lines (UTF-8, one JSON value per `\n`-terminated line) in both directions. The client
//! sends one [`Request`] per line, at most [`MAX_REQUEST_BYTES`] bytes with the newline (a
//! longer one is answered with an error and the connection is closed). The server answers
//! each request with zero or more *item* lines followed by exactly one *final* line; the
//! client may then send another request on the same connection.
//!
//! Requests, tagged by `"op"`:
//!
//! | request | items | final `done` |
//! |---|---|---|
//! | `{"op":"mailbox_add","address":A,"password":P,"quota":N\|null,"options":MailboxOptions,"provisional":B}` | — | `{"mailbox":MailboxInfo}` |
//! | `{"op":"mailbox_del","address":A}` | — | `{}` |
//! | `{"op":"mailbox_list"}` | `{"mailbox":MailboxInfo}` each | `{}` |
//! | `{"op":"mailbox_passwd","address":A,"password":P,"provisional":B}` | — | `{}` |
//! | `{"op":"mailbox_quota","address":A,"bytes":N}` | — | `{}` |
//! | `{"op":"mailbox_options","address":A,"options":MailboxOptions}` | — | `{}` |
//! | `{"op":"filters_get","address":A}` | — | `{"filters":[Rule..]}` |
//! | `{"op":"filters_set","address":A,"rules":[..]}` | — | `{"filters":[Rule..]}` |
//! | `{"op":"card_add","address":A,"pem":PEM}` | — | `{"cards":[CardCert]}` (the one added) |
//! | `{"op":"card_del","address":A,"sha256":HEX}` | — | `{}` |
//! | `{"op":"card_list","address":A}` | — | `{"cards":[CardCert..]}` |
//! | `{"op":"log_query","msgid":..,"ident":..,"mailbox":..,"since":T,"until":T,"limit":N}` | `{"record":TraceRecord}` each | `{}` |
//! | `{"op":"log_export"}` | `{"line":"<export line>"}` each | `{"lines":N}` |
//! | `{"op":"log_verify","signer":SHA256\|null,"also_trusted":[SHA256..]}` | — | `{"report":VerifyReport}` |
//! | `{"op":"index_reload"}` | — | `{}` |
//! | `{"op":"evidence","ident":ID,"mailbox":A\|null}` | `{"chunk":"<base64>"}` each | `{"bytes":N}` |
//!
//! The final line is `{"done":{...}}` on success, `{"error":"message"}` on failure; the
//! message is the one the CLI prints when it runs the same operation on the store directly
//! (same context, e.g. `adding x@d: mailbox x@d already exists`). Export lines travel as JSON
//! strings holding the exact canonical bytes, so a remote export verifies like a local one;
//! an evidence bundle ([`crate::evidence`]) travels as base64 chunks of its zip;
//! large outputs (export, query, list) are streamed item by item with back-pressure.
//!
//! # Which path the CLI takes
//!
//! The CLI first opens the store directly, as before (so it works the same with no server);
//! only when that fails with [`StoreError::Locked`](crate::store::StoreError::Locked) does it
//! [`Client::connect`] to the socket of the same store dir. If both fail it reports both
//! problems. `pecd index import` writes the index file itself, then asks a server answering
//! on the socket (if any) to reload it (`index_reload`), so the import takes effect without a
//! restart.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::pec::address::PecAddress;
use crate::store::mailbox::{MailboxInfo, MailboxOptions};
use crate::trace::{Checkpoint, TraceRecord, VerifyReport};

/// The socket's file name inside `store.dir`.
pub const SOCKET_NAME: &str = "control.sock";

/// The longest request line the server reads (newline included).
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;

/// The longest response line the client reads (newline included).
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// How long a stopping server lets connections finish the request in hand.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Items buffered between the thread walking the log and the socket (back-pressure).
const EXPORT_QUEUE: usize = 256;

/// Bytes of a binary answer per chunk line (base64 makes it 4/3 larger, well under
/// [`MAX_RESPONSE_BYTES`]).
const CHUNK_BYTES: usize = 1024 * 1024;

/// The control socket of the store in `store_dir`.
pub fn socket_path(store_dir: &Path) -> PathBuf {
    store_dir.join(SOCKET_NAME)
}

/// One request (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    MailboxAdd {
        address: String,
        password: String,
        quota: Option<u64>,
        #[serde(default)]
        options: MailboxOptions,
        /// The owner must change the password at first login.
        #[serde(default)]
        provisional: bool,
        /// A plan of the server's `[plans]`, whose size becomes the quota.
        #[serde(default)]
        plan: Option<String>,
    },
    MailboxDel {
        address: String,
    },
    MailboxList,
    MailboxPasswd {
        address: String,
        password: String,
        /// A reset: the owner must change it at the next login.
        #[serde(default)]
        provisional: bool,
    },
    MailboxQuota {
        address: String,
        bytes: u64,
    },
    /// Puts a mailbox on a plan of the server's `[plans]`.
    MailboxPlan {
        address: String,
        plan: String,
    },
    MailboxOptions {
        address: String,
        options: MailboxOptions,
    },
    FiltersGet {
        address: String,
    },
    /// A mailbox's notifications; with `remove`, after removing that address.
    Notify {
        address: String,
        #[serde(default)]
        remove: Option<String>,
    },
    FiltersSet {
        address: String,
        rules: serde_json::Value,
    },
    CardAdd {
        address: String,
        pem: String,
    },
    CardDel {
        address: String,
        sha256: String,
    },
    CardList {
        address: String,
    },
    LogQuery {
        msgid: Option<String>,
        ident: Option<String>,
        mailbox: Option<String>,
        since: Option<Timestamp>,
        until: Option<Timestamp>,
        limit: Option<usize>,
    },
    LogExport,
    LogVerify {
        signer: Option<String>,
        /// More trusted checkpoint signers (earlier certificates, after a renewal).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        also_trusted: Vec<String>,
    },
    IndexReload,
    /// The evidence bundle of a message, for the whole provider or one mailbox.
    Evidence {
        ident: String,
        #[serde(default)]
        mailbox: Option<String>,
    },
}

/// One response line (see the module doc).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Mailbox(MailboxInfo),
    Record(TraceRecord),
    Line(String),
    /// Base64 of the next bytes of a binary answer (an evidence bundle).
    Chunk(String),
    Done(Done),
    Error(String),
}

/// An item line, as handed to the client's callback.
#[derive(Debug, Clone)]
pub enum Item {
    Mailbox(MailboxInfo),
    Record(Box<TraceRecord>),
    /// One line of a log export (without the newline).
    Line(String),
    /// The next bytes of a binary answer (decoded).
    Chunk(Vec<u8>),
}

/// The result of a request that succeeded.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Done {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mailbox: Option<MailboxInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lines: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<WireReport>,
    /// The size of a binary answer (the sum of its chunks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Smart cards of a mailbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cards: Option<Vec<crate::cns::CardCert>>,
    /// Rules on incoming messages of a mailbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<Vec<crate::filters::Rule>>,
    /// Notifications to ordinary addresses of a mailbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<crate::notify::Notify>,
}

/// [`VerifyReport`] on the wire (the report itself is serialize-only).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireReport {
    pub records: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub anchor: Option<u64>,
    pub checkpoints: u64,
    pub last_checkpoint: Option<Checkpoint>,
    pub unsigned_tail: u64,
    pub signer_pinned: bool,
    pub problem: Option<WireProblem>,
}

/// [`crate::trace::verify::VerifyProblem`] on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireProblem {
    pub line: Option<u64>,
    pub seq: Option<u64>,
    pub message: String,
}

impl From<VerifyReport> for WireReport {
    fn from(r: VerifyReport) -> Self {
        Self {
            records: r.records,
            first_seq: r.first_seq,
            last_seq: r.last_seq,
            anchor: r.anchor,
            checkpoints: r.checkpoints,
            last_checkpoint: r.last_checkpoint,
            unsigned_tail: r.unsigned_tail,
            signer_pinned: r.signer_pinned,
            problem: r.problem.map(|p| WireProblem {
                line: p.line,
                seq: p.seq,
                message: p.message,
            }),
        }
    }
}

impl From<WireReport> for VerifyReport {
    fn from(r: WireReport) -> Self {
        Self {
            records: r.records,
            first_seq: r.first_seq,
            last_seq: r.last_seq,
            anchor: r.anchor,
            checkpoints: r.checkpoints,
            last_checkpoint: r.last_checkpoint,
            unsigned_tail: r.unsigned_tail,
            signer_pinned: r.signer_pinned,
            // The live log has no trailer.
            export_time: None,
            problem: r.problem.map(|p| crate::trace::verify::VerifyProblem {
                line: p.line,
                seq: p.seq,
                message: p.message,
            }),
        }
    }
}

/// Parses a mailbox address with the CLI's wording.
pub fn parse_address(s: &str) -> anyhow::Result<PecAddress> {
    PecAddress::parse(s).with_context(|| format!("{s:?} is not a mailbox address"))
}

mod client;
mod handle;
mod server;

pub use client::{Client, RemoteError};
pub use server::{Listener, listen, serve};
