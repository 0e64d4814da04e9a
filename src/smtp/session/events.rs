//! The session's outputs: the [`Event`]s the driver acts on, the [`Envelope`] of a
//! received message and the [`DialogueRefusal`] record of a refusal decided by the session.
//!
//! Owns: these plain data types only. Must not touch: the session's state, the reply
//! text (`replies`) or any I/O.

/// A command or message the session refused by itself (the backend never saw it). The
/// reply was already queued; the driver reports this to the backend for the trace log
/// (rules §9: every operation leaves a record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialogueRefusal {
    pub code: u16,
    pub enhanced: &'static str,
    /// What the reply said, e.g. "sender <x> is not the authenticated mailbox".
    pub reason: String,
    /// The authenticated user, if any.
    pub user: Option<String>,
    /// The reverse-path the client gave (or tried to give), if any.
    pub mail_from: Option<String>,
}

/// What the driver must do.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// Write these bytes to the peer.
    Reply(Vec<u8>),
    /// Write nothing more; upgrade the connection to TLS, then call [`Session::tls_started`](super::Session::tls_started).
    StartTls,
    /// Check credentials, then call [`Session::auth_result`](super::Session::auth_result).
    Authenticate { username: String, password: String },
    /// SASL EXTERNAL: check the TLS client certificate (a smart card) for `authzid` (the
    /// mailbox the client named, if any), then call
    /// [`Session::auth_result`](super::Session::auth_result).
    AuthenticateExternal { authzid: Option<String> },
    /// A complete message: run it through the pipeline, then call [`Session::message_result`](super::Session::message_result).
    Message(Envelope),
    /// Content of the message being received, in order, when DATA is streamed
    /// ([`Session::stream_data`](super::Session::stream_data)): the whole content is these
    /// chunks followed by the [`Envelope::data`] of the [`Event::Message`]. If the driver
    /// cannot keep a chunk it calls [`Session::abort_data`](super::Session::abort_data).
    DataChunk(Vec<u8>),
    /// The transfer whose chunks were handed out is refused (too big, line too long):
    /// drop them.
    DataDiscarded,
    /// Close the connection (after writing any reply before it).
    Close,
    /// A refusal decided here, for the record (write nothing: its reply precedes it).
    Refused(DialogueRefusal),
}

/// The SMTP envelope and content of one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Reverse-path (empty for the null sender `<>`).
    pub mail_from: String,
    /// Forward-paths, in order.
    pub rcpt_to: Vec<String>,
    /// The message, dot-unstuffed, CRLF (when DATA is streamed: what follows the chunks).
    pub data: Vec<u8>,
    /// The authenticated user, if any.
    pub authenticated: Option<String>,
    /// The EHLO/HELO name.
    pub helo: String,
    /// TLS was active for the transaction.
    pub tls: bool,
}
