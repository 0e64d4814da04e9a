//! The control socket's client (synchronous: the CLI's side): one request, its items,
//! its final answer.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::*;

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
