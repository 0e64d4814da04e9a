//! The owner's password change (`POST /auth/password`): the current password, a new
//! one meeting the strength rule ([`crate::store::password`]). On success every other
//! session of the mailbox ends on every protocol ([`crate::gateway::CredentialEpochs`]),
//! the caller's own session continues (no longer restricted if it was opened with a
//! provisional password), and the change is in the trace log.
//!
//! Untrusted input: the JSON body (bounded, JSON only, same origin and CSRF token for
//! cookie sessions). A wrong current password counts as a failed login (the same
//! lockout as every protocol), so a stolen session cannot be used to guess it.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use super::Web;
use super::auth;
use super::response::{self, Body};
use crate::pec::address::PecAddress;
use crate::pipeline::access::LoginCheck;
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
    // The current password goes through the login check: lockout, trace and the
    // failure delay as for any wrong password.
    match crate::pipeline::access::authenticate(
        &web.gw,
        p.user.clone(),
        c.current_password.clone(),
        peer,
        "HTTPS password change",
    )
    .await
    {
        LoginCheck::Granted(_) | LoginCheck::MustChangePassword { .. } => {}
        LoginCheck::Failed => {
            tokio::time::sleep(auth::AUTH_FAILURE_DELAY).await;
            return response::problem_motivo(
                StatusCode::FORBIDDEN,
                "urn:pecd:error:wrongPassword",
                "the current password is wrong",
                "La password attuale non è corretta",
            );
        }
    }
    let Ok(addr) = PecAddress::parse(&p.user) else {
        return response::problem(StatusCode::INTERNAL_SERVER_ERROR, "about:blank", "bad user");
    };
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
        // Changed between the check above and here: treat as wrong.
        Err(PasswordChangeError::WrongCurrent) => response::problem_motivo(
            StatusCode::FORBIDDEN,
            "urn:pecd:error:wrongPassword",
            "the current password is wrong",
            "La password attuale non è corretta",
        ),
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
