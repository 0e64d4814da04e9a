//! The web listener (`[listen] https`): HTTPS only, HTTP/1.1 over rustls with the `[tls]`
//! certificate, serving the JMAP API ([`crate::jmap`]), the built-in webmail's assets
//! ([`crate::web`]) and the login endpoints of the webmail ([`auth`]).
//!
//! Layering as for the other protocols: hyper parses the wire, [`router`] decides per
//! request, and this file is the thin driver (accept, TLS handshake, one hyper connection
//! per socket, shutdown). Untrusted input: everything a client sends — the request line,
//! headers, cookies, bodies (read through [`body::read_limited`], never unbounded).
//! Named limits: [`MAX_HEADER_BYTES`], [`HEADER_TIMEOUT`], the connection limits shared
//! with every listener (`limits.max_connections*`, `network_connections`),
//! and the JMAP limits advertised in the session ([`crate::jmap::Limits`]).

pub mod auth;
pub mod body;
mod card;
mod filters;
mod notify;
mod password;
pub mod response;
mod router;
pub mod sessions;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::watch;

use crate::gateway::Gateway;

/// Largest request head (request line and headers) hyper buffers.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Time allowed for a client to send a request head (slow-loris bound).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Time allowed for the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// What every request handler shares.
pub struct Web {
    pub gw: Arc<Gateway>,
    pub sessions: sessions::Sessions,
    pub jmap: Arc<crate::jmap::Jmap>,
}

impl Web {
    pub fn new(gw: Arc<Gateway>) -> Arc<Self> {
        let jmap = Arc::new(crate::jmap::Jmap::new(gw.clone()));
        Arc::new(Self {
            gw,
            sessions: sessions::Sessions::default(),
            jmap,
        })
    }
}

/// What the router knows of a request's connection.
#[derive(Debug, Default)]
pub struct Conn {
    /// The web listener for smart cards (`[listen] https_cns`), which asks for them.
    pub cards: bool,
    /// The client certificate chain of the TLS handshake (leaf first); empty if none.
    pub chain: Vec<openssl::x509::X509>,
}

/// Serves the web listener until `shutdown` turns true. `cards`: this is the listener
/// asking for smart cards (`tls` then requests client certificates).
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    web: Arc<Web>,
    cards: bool,
    shutdown: watch::Receiver<bool>,
) {
    let gate = web.gw.connections.clone();
    let refusal = crate::listener::Refusal::AfterHandshake(tls.clone(), |_| {
        b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 10\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    });
    let stop = shutdown.clone();
    let name = if cards { "https_cns" } else { "https" };
    crate::listener::accept_loop(
        listener,
        name,
        gate,
        refusal,
        shutdown,
        move |stream, peer, slot| {
            let (tls, web, stop) = (tls.clone(), web.clone(), stop.clone());
            tokio::spawn(async move {
                let _slot = slot;
                if let Err(e) = connection(stream, peer, tls, web, cards, stop).await {
                    tracing::debug!(%peer, error = %e, "HTTPS connection ended with an error");
                }
            });
        },
    )
    .await;
}

async fn connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    tls: Arc<rustls::ServerConfig>,
    web: Arc<Web>,
    cards: bool,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let name = if cards { "https_cns" } else { "https" };
    let tls_stream = crate::listener::tls_accept(name, tls, stream, HANDSHAKE_TIMEOUT).await?;
    let conn_info = Arc::new(Conn {
        cards,
        chain: if cards {
            crate::tls::peer_chain(tls_stream.get_ref().1)
        } else {
            Vec::new()
        },
    });
    let service = hyper::service::service_fn(move |req| {
        let (web, conn_info) = (web.clone(), conn_info.clone());
        async move {
            Ok::<_, std::convert::Infallible>(router::handle(web, peer, &conn_info, req).await)
        }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES)
        .serve_connection(TokioIo::new(tls_stream), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => r.map_err(std::io::Error::other),
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
            Ok(())
        }
    }
}
