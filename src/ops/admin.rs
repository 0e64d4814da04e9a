//! The admin listener (`[listen] admin`, loopback by default): plain HTTP/1.1 serving
//! `GET /metrics` (Prometheus text format), `GET /healthz` (200 while the process runs)
//! and `GET /readyz` (200 or 503 with the checks of [`super::health`] as JSON).
//!
//! Plain HTTP because Prometheus and orchestrators scrape it on the host; it carries no
//! mail and no credentials, and accepts no input but the request line. Untrusted input:
//! the request (hyper parses it; only the method and path are read). Binding it beyond
//! loopback is the operator's choice and is warned about at start-up. A standby waiting
//! for its store answers on it too ([`serve_standby`]): alive, not ready.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::watch;

use crate::gateway::Gateway;
use crate::http::response::{self, Body};

/// Time allowed for a request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the admin listener until `shutdown` turns true.
pub async fn serve(
    listener: tokio::net::TcpListener,
    gw: Arc<Gateway>,
    shutdown: watch::Receiver<bool>,
) {
    let gate = gw.connections.clone();
    serve_with(listener, gate, shutdown, move |req| {
        let gw = gw.clone();
        async move { route(&gw, req).await }
    })
    .await;
}

/// The admin listener of a standby (`[store] standby = true`, waiting for the store):
/// `/healthz` 200 (the process runs), `/readyz` 503 naming the node that writes the
/// store, `/metrics` with `pecd_standby 1`. Until `shutdown` turns true, when the node
/// takes over and opens its listeners.
pub async fn serve_standby(
    listener: tokio::net::TcpListener,
    gate: Arc<crate::listener::ConnectionGate>,
    writer: Arc<std::sync::Mutex<Option<String>>>,
    shutdown: watch::Receiver<bool>,
) {
    serve_with(listener, gate, shutdown, move |req| {
        let writer = writer
            .lock()
            .map(|w| w.clone())
            .unwrap_or_default()
            .unwrap_or_else(|| "not known yet".into());
        async move { standby_route(&writer, req) }
    })
    .await;
}

async fn serve_with<F, Fut>(
    listener: tokio::net::TcpListener,
    gate: Arc<crate::listener::ConnectionGate>,
    shutdown: watch::Receiver<bool>,
    route: F,
) where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<Body>> + Send + 'static,
{
    if let Ok(a) = listener.local_addr()
        && !a.ip().is_loopback()
    {
        tracing::warn!(addr = %a, "the admin listener (metrics, health) is not on loopback");
    }
    let refusal = crate::listener::Refusal::Plain(|_| {
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    });
    crate::listener::accept_loop(
        listener,
        "admin",
        gate,
        refusal,
        shutdown,
        move |stream, _, slot| {
            let route = route.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let service = hyper::service::service_fn(move |req| {
                    let route = route.clone();
                    async move { Ok::<_, Infallible>(route(req).await) }
                });
                let _ = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        },
    )
    .await;
}

fn standby_route(writer: &str, req: Request<Incoming>) -> Response<Body> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => response::bytes(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            "# HELP pecd_standby 1 while this node waits for the store another node writes.\n\
             # TYPE pecd_standby gauge\npecd_standby 1\n",
        ),
        (&Method::GET, "/healthz") => response::bytes(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            "ok (standby)\n",
        ),
        (&Method::GET, "/readyz") => response::json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({
                "ready": false,
                "standby": true,
                "checks": [{
                    "name": "standby",
                    "ok": false,
                    "detail": format!("another node writes the store: {writer}"),
                }],
            }),
        ),
        _ => response::not_found(),
    }
}

async fn route(gw: &Arc<Gateway>, req: Request<Incoming>) -> Response<Body> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => response::bytes(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            super::metrics::render(gw).await,
        ),
        (&Method::GET, "/healthz") => {
            response::bytes(StatusCode::OK, "text/plain; charset=utf-8", "ok\n")
        }
        (&Method::GET, "/readyz") => {
            let g = gw.clone();
            let checks = tokio::task::spawn_blocking(move || super::health::readiness(&g))
                .await
                .unwrap_or_default();
            let ready = !checks.is_empty() && checks.iter().all(|c| c.ok);
            response::json(
                if ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                },
                &serde_json::json!({"ready": ready, "checks": checks}),
            )
        }
        _ => response::not_found(),
    }
}
