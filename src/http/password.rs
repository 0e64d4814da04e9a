//! The owner's password change (`POST /auth/password`): the current password, a new
//! one meeting the strength rule ([`crate::store::password`]). On success every other
//! session of the mailbox ends on every protocol ([`crate::gateway::CredentialEpochs`]),
//! the caller's own session continues (no longer restricted if it was opened with a
//! provisional password), and the change is in the trace log.
//!
//! Untrusted input: the JSON body (bounded, JSON only, same origin and CSRF token for
//! cookie sessions). A wrong current password counts as a failed login (the same
//! lockout as every protocol), so a stolen session cannot be used to guess it; the
//! password is verified once, by the store, inside the change.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use super::Web;
use super::auth;
use super::response::{self, Body};
use crate::pec::address::PecAddress;
use crate::store::mailbox::PasswordChangeError;

/// Largest request body.
const MAX_BODY: usize = 4096;

/// `POST /auth/password` with `{"currentPassword": …, "newPassword": …}`.
pub async fn change(web: &Arc<Web>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let (p, body) = match auth::json_request(web, req, peer, MAX_BODY).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Change {
        current_password: String,
        new_password: String,
    }
    let Ok(c) = serde_json::from_slice::<Change>(&body) else {
        return response::problem(
            StatusCode::BAD_REQUEST,
            "about:blank",
            "expected {\"currentPassword\": ..., \"newPassword\": ...}",
        );
    };
    let Ok(addr) = PecAddress::parse(&p.user) else {
        return response::problem(StatusCode::INTERNAL_SERVER_ERROR, "about:blank", "bad user");
    };
    // A wrong current password is a failed login: the lockout is asked first, and a
    // failure is counted and traced as on every protocol (the store checks the password
    // once, inside the change).
    let now = web.gw.clock.now();
    if web.gw.logins.lockout(peer.ip(), &p.user, now).is_some() {
        return response::problem(
            StatusCode::TOO_MANY_REQUESTS,
            "about:blank",
            "too many failed logins: try again later",
        );
    }
    match web
        .gw
        .change_own_password(addr, c.current_password, c.new_password)
        .await
    {
        Ok(epoch) => {
            if let Some(t) = p.token() {
                web.sessions.password_changed(t, epoch);
            }
            tracing::info!(%peer, user = %p.user, "password changed by the owner");
            response::json(StatusCode::OK, &json!({"changed": true}))
        }
        Err(PasswordChangeError::Weak(w)) => response::problem_motivo(
            StatusCode::UNPROCESSABLE_ENTITY,
            "urn:pecd:error:weakPassword",
            &w.to_string(),
            &w.italian(),
        ),
        Err(PasswordChangeError::WrongCurrent) => {
            crate::pipeline::access::record_login_failure(
                &web.gw,
                &p.user,
                PecAddress::parse(&p.user).ok().as_ref(),
                peer,
                "HTTPS password change",
                None,
            )
            .await;
            tokio::time::sleep(auth::AUTH_FAILURE_DELAY).await;
            auth::wrong_password()
        }
        Err(PasswordChangeError::Store(e)) => {
            tracing::error!(error = %e, user = %p.user, "password change failed");
            response::problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "about:blank",
                "the password could not be changed now; try again later",
            )
        }
    }
}
