//! The owner's notifications to ordinary addresses over the API ([`crate::notify`]):
//! `GET /auth/notifications` and `POST /auth/notifications` with one of
//! `{"add": ADDRESS}` (a confirmation code is mailed to it), `{"confirm": ADDRESS, "code":
//! CODE}`, `{"remove": ADDRESS}`, `{"receipts": BOOL, "anomalies": BOOL}`. The answer is the
//! settings as they now are; a refusal is a problem object
//! (`urn:pecd:error:invalidNotification`) with the reason in English and Italian
//! (`motivo`).
//!
//! Untrusted input: the JSON body (bounded by [`MAX_BODY`], CSRF-checked for cookie
//! sessions); addresses and codes are checked by [`crate::notify`].

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::Value;

use super::Web;
use super::auth;
use super::response::{self, Body};
use crate::notify::NotifyError;
use crate::pipeline::notify as send;
use crate::store::StoreError;
use crate::store::notify::NotifyChange;

/// Largest request: one address and a code.
const MAX_BODY: usize = 4096;

/// `GET /auth/notifications`.
pub async fn get(web: &Arc<Web>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    auth::owner_get(web, &req, peer, |s, a| s.notify_settings(a), |n| n.view()).await
}

fn refused(e: &NotifyError) -> Response<Body> {
    response::problem_motivo(
        StatusCode::UNPROCESSABLE_ENTITY,
        "urn:pecd:error:invalidNotification",
        &e.to_string(),
        &e.italian(),
    )
}

/// `POST /auth/notifications`.
pub async fn set(web: &Arc<Web>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let (_, addr, body) = match auth::owner_json(web, req, peer, MAX_BODY).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let gw = &web.gw;
    let r = if let Some(a) = text("add") {
        send::add_target(gw, &addr, &a).await
    } else if let Some(a) = text("confirm") {
        send::confirm(gw, &addr, &a, &text("code").unwrap_or_default()).await
    } else if let Some(a) = text("remove") {
        let address = a.trim().to_ascii_lowercase();
        send::change(gw, &addr, NotifyChange::Remove { address }).await
    } else if let (Some(receipts), Some(anomalies)) = (
        v.get("receipts").and_then(Value::as_bool),
        v.get("anomalies").and_then(Value::as_bool),
    ) {
        send::change(
            gw,
            &addr,
            NotifyChange::Options {
                receipts,
                anomalies,
            },
        )
        .await
    } else {
        return response::problem(
            StatusCode::BAD_REQUEST,
            "urn:pecd:error:badRequest",
            "expected {\"add\"}, {\"confirm\", \"code\"}, {\"remove\"} or {\"receipts\", \"anomalies\"}",
        );
    };
    match r {
        Ok(n) => response::json(StatusCode::OK, &n.view()),
        Err(StoreError::Notify(e)) => refused(&e),
        Err(e) => {
            tracing::error!(error = %e, "changing notifications");
            response::unavailable()
        }
    }
}
