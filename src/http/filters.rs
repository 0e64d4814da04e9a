//! The owner's rules on incoming messages over the API: `GET /auth/filters` and
//! `POST /auth/filters` with `{"rules": [...]}` (the whole list, replaced at once; see
//! [`crate::filters`] for what a rule is and what it may never do). A refusal is a problem
//! object with the reason in English and Italian (`motivo`).
//!
//! Untrusted input: the JSON body (bounded by [`MAX_BODY`], CSRF-checked for cookie
//! sessions); the rules themselves are checked by [`crate::filters::parse`].

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use super::Web;
use super::auth;
use super::response::{self, Body};
use crate::store::mailbox::FiltersError;

/// Largest request: 50 rules of a few hundred bytes each, with room.
const MAX_BODY: usize = 64 * 1024;

/// `GET /auth/filters`.
pub async fn get(web: &Arc<Web>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    auth::owner_get(
        web,
        &req,
        peer,
        |s, a| s.filters(a),
        |rules| json!({ "rules": rules }),
    )
    .await
}

/// `POST /auth/filters` with `{"rules": [...]}`.
pub async fn set(web: &Arc<Web>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let (_, addr, body) = match auth::owner_json(web, req, peer, MAX_BODY).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let rules = match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(v) => v.get("rules").cloned().unwrap_or(serde_json::Value::Null),
        Err(_) => serde_json::Value::Null,
    };
    let store = web.gw.store.clone();
    match web
        .gw
        .blocking(move || store.set_filters(&addr, &rules))
        .await
    {
        Ok(rules) => response::json(StatusCode::OK, &json!({ "rules": rules })),
        Err(FiltersError::Invalid(e)) => response::problem_motivo(
            StatusCode::UNPROCESSABLE_ENTITY,
            "urn:pecd:error:invalidRules",
            &e.to_string(),
            &e.italian(),
        ),
        Err(FiltersError::Store(e)) => {
            tracing::error!(error = %e, "saving rules");
            response::unavailable()
        }
    }
}
