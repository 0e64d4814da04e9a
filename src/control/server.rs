//! The control socket's server: the owner-only Unix socket of the running gateway, one
//! task per connection, requests read with a size limit and answered by [`super::handle`].

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::watch;

use crate::gateway::Gateway;

use super::handle::handle;
use super::*;

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

pub(super) type Writer = tokio::io::BufWriter<tokio::net::unix::OwnedWriteHalf>;

pub(super) async fn send(w: &mut Writer, r: &Response) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(r).map_err(std::io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line).await
}

pub(super) async fn finish(w: &mut Writer, r: Result<Done, String>) -> std::io::Result<()> {
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
