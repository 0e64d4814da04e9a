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

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::watch;

use crate::gateway::Gateway;
use crate::pec::address::PecAddress;
use crate::store::NewMailbox;
use crate::store::mailbox::{MailboxInfo, MailboxOptions, Password};
use crate::trace::{Checkpoint, TraceQuery, TraceRecord, VerifyReport};

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
    MailboxOptions {
        address: String,
        options: MailboxOptions,
    },
    FiltersGet {
        address: String,
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

// ---------------------------------------------------------------------------------------
// Client (synchronous: used by the CLI)
// ---------------------------------------------------------------------------------------

/// A failure reported by the server (`{"error": ...}`): displayed as the bare message.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RemoteError(pub String);

/// A connection to a running server's control socket.
pub struct Client {
    path: PathBuf,
    reader: BufReader<std::os::unix::net::UnixStream>,
    writer: std::os::unix::net::UnixStream,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("path", &self.path).finish()
    }
}

impl Client {
    /// Connects to the control socket of the store in `store_dir`. `NotFound` or
    /// `ConnectionRefused` mean no server is running there.
    pub fn connect(store_dir: &Path) -> std::io::Result<Self> {
        let path = socket_path(store_dir);
        let stream = std::os::unix::net::UnixStream::connect(&path)?;
        let writer = stream.try_clone()?;
        Ok(Self {
            path,
            reader: BufReader::new(stream),
            writer,
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sends `req`, hands each item line to `item`, returns the final `done`. A server-side
    /// failure is a [`RemoteError`] carrying the server's message.
    pub fn call(
        &mut self,
        req: &Request,
        mut item: impl FnMut(Item) -> anyhow::Result<()>,
    ) -> anyhow::Result<Done> {
        let sock = self.path.display().to_string();
        let mut line = serde_json::to_vec(req)?;
        line.push(b'\n');
        self.writer
            .write_all(&line)
            .and_then(|()| self.writer.flush())
            .with_context(|| {
                format!("sending the request to the server's control socket {sock}")
            })?;
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let n = std::io::Read::take(&mut self.reader, MAX_RESPONSE_BYTES as u64)
                .read_until(b'\n', &mut buf)
                .with_context(|| format!("reading the answer from the control socket {sock}"))?;
            if n == 0 {
                anyhow::bail!(
                    "the server closed the control socket {sock} before answering (did it stop?)"
                );
            }
            if buf.last() != Some(&b'\n') {
                anyhow::bail!("the control socket {sock} sent a truncated or overlong answer line");
            }
            let resp: Response = serde_json::from_slice(&buf)
                .with_context(|| format!("unexpected answer from the control socket {sock}"))?;
            match resp {
                Response::Mailbox(m) => item(Item::Mailbox(m))?,
                Response::Record(r) => item(Item::Record(Box::new(r)))?,
                Response::Line(l) => item(Item::Line(l))?,
                Response::Chunk(c) => {
                    use base64::Engine;
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(c.as_bytes())
                        .with_context(|| {
                            format!("a chunk from the control socket {sock} is not base64")
                        })?;
                    item(Item::Chunk(bytes))?
                }
                Response::Done(d) => return Ok(d),
                Response::Error(e) => return Err(RemoteError(e).into()),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------------

/// A bound control socket, ready for [`serve`].
#[derive(Debug)]
pub struct Listener {
    inner: tokio::net::UnixListener,
    path: PathBuf,
    /// The uid owning the socket: the server's (effective) uid.
    uid: u32,
    /// The socket file's inode, to remove only our own file at stop.
    ino: u64,
}

impl Listener {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Binds `<store.dir>/control.sock` (mode 0600), replacing a stale socket file. Must run
/// inside the tokio runtime.
pub fn listen(gw: &Gateway) -> std::io::Result<Listener> {
    let path = socket_path(&gw.config.store.dir);
    let err = |what: &str, e: std::io::Error| {
        std::io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
    };
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.file_type().is_socket() => {
            std::fs::remove_file(&path).map_err(|e| err("removing the stale socket", e))?
        }
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err("inspecting", e)),
    }
    let inner = tokio::net::UnixListener::bind(&path).map_err(|e| err("binding", e))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| err("restricting the mode of", e))?;
    let meta = std::fs::metadata(&path).map_err(|e| err("inspecting", e))?;
    Ok(Listener {
        inner,
        path,
        uid: meta.uid(),
        ino: meta.ino(),
    })
}

/// Accepts control connections until `stop`; then lets connections finish the request in
/// hand (up to a few seconds) and removes the socket file.
pub async fn serve(l: Listener, gw: Arc<Gateway>, mut stop: watch::Receiver<bool>) {
    tracing::info!(socket = %l.path.display(), "control socket listening");
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            r = l.inner.accept() => match r {
                Ok((s, _)) => {
                    conns.spawn(connection(s, gw.clone(), l.uid, stop.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "control socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            _ = stop.changed() => break,
        }
    }
    let _ = tokio::time::timeout(STOP_GRACE, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    conns.abort_all();
    if std::fs::symlink_metadata(&l.path).is_ok_and(|m| m.ino() == l.ino) {
        let _ = std::fs::remove_file(&l.path);
    }
}

type Writer = tokio::io::BufWriter<tokio::net::unix::OwnedWriteHalf>;

async fn send(w: &mut Writer, r: &Response) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(r).map_err(std::io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line).await
}

async fn finish(w: &mut Writer, r: Result<Done, String>) -> std::io::Result<()> {
    let resp = match r {
        Ok(d) => Response::Done(d),
        Err(e) => Response::Error(e),
    };
    send(w, &resp).await?;
    w.flush().await
}

/// One line of at most `max` bytes; `Ok(None)` at end of stream; `Err(None)` when too long.
async fn read_request(
    r: &mut tokio::io::BufReader<tokio::net::unix::OwnedReadHalf>,
    max: usize,
) -> Result<Option<Vec<u8>>, Option<std::io::Error>> {
    let mut buf = Vec::new();
    let n = (&mut *r)
        .take(max as u64 + 1)
        .read_until(b'\n', &mut buf)
        .await
        .map_err(Some)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.len() > max {
        return Err(None);
    }
    Ok(Some(buf))
}

async fn connection(s: UnixStream, gw: Arc<Gateway>, uid: u32, mut stop: watch::Receiver<bool>) {
    let peer = s.peer_cred();
    let (r, w) = s.into_split();
    let mut r = tokio::io::BufReader::new(r);
    let mut w = tokio::io::BufWriter::new(w);
    match peer {
        Ok(c) if c.uid() == uid => {}
        Ok(c) => {
            tracing::warn!(peer_uid = c.uid(), pid = ?c.pid(), "control socket: connection from another user refused");
            let msg = format!(
                "permission denied: uid {} may not administer this server (only uid {uid} may)",
                c.uid()
            );
            let _ = finish(&mut w, Err(msg)).await;
            return;
        }
        Err(e) => {
            let _ = finish(
                &mut w,
                Err(format!("cannot check the peer's credentials: {e}")),
            )
            .await;
            return;
        }
    }
    loop {
        let line = tokio::select! {
            l = read_request(&mut r, MAX_REQUEST_BYTES) => l,
            _ = stop.changed() => return,
        };
        let bytes = match line {
            Ok(Some(b)) => b,
            Ok(None) | Err(Some(_)) => return,
            Err(None) => {
                let msg = format!("request line longer than {MAX_REQUEST_BYTES} bytes");
                let _ = finish(&mut w, Err(msg)).await;
                return;
            }
        };
        let req: Request = match serde_json::from_slice(&bytes) {
            Ok(q) => q,
            Err(e) => {
                if finish(&mut w, Err(format!("bad request: {e}")))
                    .await
                    .is_err()
                {
                    return;
                }
                continue;
            }
        };
        if handle(&gw, req, &mut w).await.is_err() {
            return;
        }
    }
}

fn msg(e: anyhow::Error) -> String {
    format!("{e:#}")
}

/// Runs one request and writes its items and final line. Errors are the socket's.
/// Runs one mailbox administration call off the executor; errors read as the CLI's own
/// (`<what> <address>: <store error>`).
async fn mailbox_op(
    gw: &Arc<Gateway>,
    address: String,
    what: &'static str,
    op: impl FnOnce(&crate::store::Store, &PecAddress) -> Result<(), crate::store::StoreError>
    + Send
    + 'static,
) -> Result<Done, String> {
    let store = gw.store.clone();
    gw.blocking(move || -> anyhow::Result<Done> {
        op(&store, &parse_address(&address)?).with_context(|| format!("{what} {address}"))?;
        Ok(Done::default())
    })
    .await
    .map_err(msg)
}

/// Ends every open session of a mailbox whose credentials the administrator changed.
fn end_sessions(gw: &Gateway, address: &str) {
    if let Ok(a) = parse_address(address) {
        gw.credentials.bump(&a.to_string());
    }
}

async fn handle(gw: &Arc<Gateway>, req: Request, w: &mut Writer) -> std::io::Result<()> {
    let store = gw.store.clone();
    let r: Result<Done, String> = match req {
        Request::MailboxAdd {
            address,
            password,
            quota,
            options,
            provisional,
        } => gw
            .blocking(move || -> anyhow::Result<Done> {
                let req = NewMailbox {
                    address: parse_address(&address)?,
                    password: Password::new(password),
                    quota_bytes: quota,
                    options,
                    provisional,
                };
                let info = store
                    .add_mailbox(req)
                    .with_context(|| format!("adding {address}"))?;
                Ok(Done {
                    mailbox: Some(info),
                    ..Done::default()
                })
            })
            .await
            .map_err(msg),
        Request::MailboxDel { address } => {
            let r = mailbox_op(gw, address.clone(), "deleting", |s, a| s.delete_mailbox(a)).await;
            end_sessions(gw, &address);
            r
        }
        Request::MailboxPasswd {
            address,
            password,
            provisional,
        } => {
            let p = Password::new(password);
            let r = mailbox_op(
                gw,
                address.clone(),
                "changing the password of",
                move |s, a| s.set_password(a, &p, provisional),
            )
            .await;
            if r.is_ok() {
                end_sessions(gw, &address);
            }
            r
        }
        Request::MailboxQuota { address, bytes } => {
            mailbox_op(gw, address, "setting the quota of", move |s, a| {
                s.set_quota(a, bytes)
            })
            .await
        }
        Request::MailboxOptions { address, options } => {
            mailbox_op(gw, address, "setting the options of", move |s, a| {
                s.set_mailbox_options(a, options)
            })
            .await
        }
        Request::FiltersGet { address } => gw
            .blocking(move || -> anyhow::Result<Done> {
                let a = parse_address(&address)?;
                let filters = store
                    .filters(&a)
                    .with_context(|| format!("reading the rules of {address}"))?;
                Ok(Done {
                    filters: Some(filters),
                    ..Done::default()
                })
            })
            .await
            .map_err(msg),
        Request::FiltersSet { address, rules } => gw
            .blocking(move || -> anyhow::Result<Done> {
                let a = parse_address(&address)?;
                let filters = store
                    .set_filters(&a, &rules)
                    .with_context(|| format!("setting the rules of {address}"))?;
                Ok(Done {
                    filters: Some(filters),
                    ..Done::default()
                })
            })
            .await
            .map_err(msg),
        Request::CardAdd { address, pem } => {
            let cns = gw.cns.clone();
            let now = gw.clock.now();
            gw.blocking(move || -> anyhow::Result<Done> {
                let a = parse_address(&address)?;
                let card = crate::cns::for_association(cns.as_deref(), pem.as_bytes(), now)
                    .context("the card certificate")?;
                store
                    .add_card(&a, &card)
                    .with_context(|| format!("associating a card with {address}"))?;
                Ok(Done {
                    cards: Some(vec![card]),
                    ..Done::default()
                })
            })
            .await
            .map_err(msg)
        }
        Request::CardDel { address, sha256 } => {
            let r = mailbox_op(gw, address.clone(), "removing a card of", move |s, a| {
                s.remove_card(a, &sha256)
            })
            .await;
            if r.is_ok() {
                // Sessions opened with that card end.
                end_sessions(gw, &address);
            }
            r
        }
        Request::CardList { address } => gw
            .blocking(move || -> anyhow::Result<Done> {
                let a = parse_address(&address)?;
                let cards = store
                    .cards(&a)
                    .with_context(|| format!("listing the cards of {address}"))?;
                Ok(Done {
                    cards: Some(cards),
                    ..Done::default()
                })
            })
            .await
            .map_err(msg),
        Request::MailboxList => {
            let list = gw
                .blocking(move || store.list_mailboxes().context("listing mailboxes"))
                .await;
            match list {
                Ok(list) => {
                    for m in list {
                        send(w, &Response::Mailbox(m)).await?;
                    }
                    Ok(Done::default())
                }
                Err(e) => Err(msg(e)),
            }
        }
        Request::LogQuery {
            msgid,
            ident,
            mailbox,
            since,
            until,
            limit,
        } => {
            let q = TraceQuery {
                msgid,
                ident,
                mailbox,
                since,
                until,
                limit,
            };
            let records = gw
                .blocking(move || store.trace().query(&q).context("querying the log"))
                .await;
            match records {
                Ok(records) => {
                    for r in records {
                        send(w, &Response::Record(r)).await?;
                    }
                    Ok(Done::default())
                }
                Err(e) => Err(msg(e)),
            }
        }
        Request::LogExport => return export(gw, w).await,
        Request::LogVerify {
            signer,
            also_trusted,
        } => gw
            .blocking(move || {
                let trusted: Vec<String> = signer.into_iter().chain(also_trusted).collect();
                store.trace().verify(trusted).context("reading the log")
            })
            .await
            .map(|r| Done {
                report: Some(r.into()),
                ..Done::default()
            })
            .map_err(msg),
        Request::IndexReload => {
            let g = gw.clone();
            gw.blocking(move || g.reload_index())
                .await
                .map(|()| Done::default())
                .map_err(|e| format!("reloading the provider index: {e}"))
        }
        Request::Evidence { ident, mailbox } => {
            let built = gw
                .blocking(move || -> anyhow::Result<crate::evidence::Bundle> {
                    let scope = match mailbox {
                        None => crate::evidence::Scope::Provider,
                        Some(m) => crate::evidence::Scope::Mailbox(parse_address(&m)?),
                    };
                    crate::evidence::build(&store, &ident, &scope)
                        .with_context(|| format!("building the evidence bundle of {ident}"))
                })
                .await;
            match built {
                Ok(b) => {
                    use base64::Engine;
                    for c in b.zip.chunks(CHUNK_BYTES) {
                        let c = base64::engine::general_purpose::STANDARD.encode(c);
                        send(w, &Response::Chunk(c)).await?;
                    }
                    Ok(Done {
                        bytes: Some(b.zip.len() as u64),
                        ..Done::default()
                    })
                }
                Err(e) => Err(msg(e)),
            }
        }
    };
    finish(w, r).await
}

/// A `Write` that cuts the export into lines and queues them for the socket.
struct LineQueue {
    tx: tokio::sync::mpsc::Sender<String>,
    buf: Vec<u8>,
}

impl Write for LineQueue {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        while let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
            let rest = self.buf.split_off(i + 1);
            let mut line = std::mem::replace(&mut self.buf, rest);
            line.pop();
            let line = String::from_utf8(line).map_err(std::io::Error::other)?;
            self.tx
                .blocking_send(line)
                .map_err(|_| std::io::Error::other("the control connection was closed"))?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Streams the export: a blocking thread walks the log while this task forwards its lines.
async fn export(gw: &Arc<Gateway>, w: &mut Writer) -> std::io::Result<()> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(EXPORT_QUEUE);
    let store = gw.store.clone();
    let walk = gw.blocking(move || {
        store
            .trace()
            .export(LineQueue {
                tx,
                buf: Vec::new(),
            })
            .context("exporting the log")
    });
    let forward = async move {
        while let Some(line) = rx.recv().await {
            send(&mut *w, &Response::Line(line)).await?;
        }
        Ok::<_, std::io::Error>(w)
    };
    let (n, forwarded) = tokio::join!(walk, forward);
    let w = forwarded?;
    let r = n
        .map(|n| Done {
            lines: Some(n),
            ..Done::default()
        })
        .map_err(msg);
    finish(w, r).await
}
