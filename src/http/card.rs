//! Smart-card (CNS) login on the web: `GET /auth/options` tells the login page whether
//! card login is available here or on the card listener's port, and `POST /auth/card`
//! (on `[listen] https_cns` only, which asks the browser for a client certificate) opens
//! a session for the mailbox the card is associated with — or the one named, when the card
//! opens several. The session is the same as a password login's (cookie or bearer), and
//! since cookies do not depend on the port, it also works on the ordinary web listener.
//!
//! Untrusted input: the JSON body (bounded), the certificate chain (judged by
//! [`crate::pipeline::card_login`]); same-origin checks as for the password login.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use super::auth::{self, AUTH_FAILURE_DELAY, MAX_LOGIN_BODY};
use super::response::{self, Body};
use super::{Conn, Web};
use crate::pec::address::PecAddress;
use crate::pipeline::access::LoginCheck;

/// `GET /auth/options`: `{"card": {"here": bool, "port": N|null}}`.
pub fn options(web: &Web, conn: &Conn) -> Response<Body> {
    let port = web
        .gw
        .https_cns_port
        .load(std::sync::atomic::Ordering::Relaxed);
    let available = web.gw.cns.is_some() && port != 0;
    response::json(
        StatusCode::OK,
        &json!({"card": {
            "here": conn.cards && available,
            "port": available.then_some(port),
        }}),
    )
}

/// `POST /auth/card` with `{}` or `{"username": MAILBOX, "bearer": bool}`.
pub async fn login(
    web: &Arc<Web>,
    req: Request<Incoming>,
    peer: SocketAddr,
    conn: &Conn,
) -> Response<Body> {
    if req.method() != Method::POST {
        return response::problem(StatusCode::METHOD_NOT_ALLOWED, "about:blank", "use POST");
    }
    if !conn.cards {
        return response::problem(
            StatusCode::NOT_FOUND,
            "about:blank",
            "smart-card login is on the card listener ([listen] https_cns)",
        );
    }
    if let Some(why) = auth::cross_origin(req.headers()) {
        return response::problem(StatusCode::FORBIDDEN, "about:blank", why);
    }
    if !auth::is_json(req.headers()) {
        return response::problem(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "about:blank",
            "send the request as application/json",
        );
    }
    let body = match super::body::read_limited(req.into_body(), MAX_LOGIN_BODY).await {
        Ok(b) => b,
        Err(e) => {
            return response::problem(StatusCode::PAYLOAD_TOO_LARGE, "about:blank", e.to_string());
        }
    };
    #[derive(serde::Deserialize, Default)]
    struct Ask {
        #[serde(default)]
        username: Option<String>,
        #[serde(default)]
        bearer: bool,
    }
    let Ok(ask) = serde_json::from_slice::<Ask>(&body) else {
        return response::problem(
            StatusCode::BAD_REQUEST,
            "about:blank",
            "expected {} or {\"username\": ...}",
        );
    };
    let username = ask.username.filter(|u| !u.trim().is_empty());
    let epoch_of = |u: &str| {
        PecAddress::parse(u)
            .map(|a| web.gw.credentials.current(&a.to_string()))
            .ok()
    };
    let before = username.as_deref().and_then(epoch_of);
    let check = crate::pipeline::card_login::authenticate_card(
        &web.gw,
        conn.chain.clone(),
        username,
        peer,
        "HTTPS smart card",
    )
    .await;
    match check {
        LoginCheck::Granted(user) => {
            let epoch = before.unwrap_or_else(|| web.gw.credentials.current(&user));
            auth::session_response(web, &user, ask.bearer, epoch, false)
        }
        _ => {
            tokio::time::sleep(AUTH_FAILURE_DELAY).await;
            let detail = if conn.chain.is_empty() {
                "no smart-card certificate was presented: insert the card and reload"
            } else {
                "smart-card login refused (the card is not valid, not associated with this \
                 mailbox, or opens several: name the mailbox)"
            };
            response::problem(
                StatusCode::UNAUTHORIZED,
                "urn:pecd:error:cardRefused",
                detail,
            )
        }
    }
}

/// `GET /auth/cards`: the smart cards associated with the caller's mailbox.
pub async fn list(web: &Arc<Web>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let enabled = web.gw.cns.is_some();
    auth::owner_get(
        web,
        &req,
        peer,
        |s, a| s.cards(a),
        |cards| json!({"cards": cards, "enabled": enabled}),
    )
    .await
}

/// `POST /auth/cards` with `{"currentPassword", "add": PEM}` or
/// `{"currentPassword", "remove": SHA256}`: the owner associates a card with the mailbox
/// or ends an association. The current password is required (a card session alone
/// cannot add cards) and a wrong one counts as a failed login. Removing a card ends every
/// session of the mailbox but the caller's.
pub async fn change(web: &Arc<Web>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let (p, addr, body) = match auth::owner_json(web, req, peer, MAX_CARD_BODY).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Change {
        current_password: String,
        #[serde(default)]
        add: Option<String>,
        #[serde(default)]
        remove: Option<String>,
    }
    let c = match serde_json::from_slice::<Change>(&body) {
        Ok(c) if c.add.is_some() != c.remove.is_some() => c,
        _ => {
            return response::problem(
                StatusCode::BAD_REQUEST,
                "about:blank",
                "expected {\"currentPassword\": ..., \"add\": PEM} or {..., \"remove\": SHA256}",
            );
        }
    };
    let check = crate::pipeline::access::authenticate(
        &web.gw,
        p.user.clone(),
        c.current_password,
        peer,
        "HTTPS card management",
    )
    .await;
    match check {
        LoginCheck::Granted(_) | LoginCheck::MustChangePassword { .. } => {}
        LoginCheck::Unavailable => return auth::login_unavailable(),
        LoginCheck::Failed => {
            tokio::time::sleep(AUTH_FAILURE_DELAY).await;
            return auth::wrong_password();
        }
    }
    let (store, cns, now) = (web.gw.store.clone(), web.gw.cns.clone(), web.gw.clock.now());
    if let Some(pem) = c.add {
        let a = addr.clone();
        let r = web
            .gw
            .blocking(move || {
                let card = crate::cns::for_association(cns.as_deref(), pem.as_bytes(), now)
                    .map_err(|e| (e.to_string(), e.italian()))?;
                store
                    .add_card(&a, &card)
                    .map_err(|e| (e.to_string(), store_italian(&e)))?;
                Ok::<_, (String, String)>(card)
            })
            .await;
        return match r {
            Ok(card) => response::json(StatusCode::OK, &json!({"added": card})),
            Err((en, it)) => response::problem_motivo(
                StatusCode::UNPROCESSABLE_ENTITY,
                "urn:pecd:error:cardRefused",
                &en,
                &it,
            ),
        };
    }
    let sha = c.remove.unwrap_or_default().to_ascii_lowercase();
    let a = addr.clone();
    let r = web.gw.blocking(move || store.remove_card(&a, &sha)).await;
    match r {
        Ok(()) => {
            // Sessions opened with that card end; the caller's goes on.
            let epoch = web.gw.credentials.bump(&addr.to_string());
            if let Some(t) = p.token() {
                web.sessions.password_changed(t, epoch);
            }
            response::json(StatusCode::OK, &json!({"removed": true}))
        }
        Err(e) => response::problem_motivo(
            StatusCode::UNPROCESSABLE_ENTITY,
            "urn:pecd:error:cardRefused",
            &e.to_string(),
            &store_italian(&e),
        ),
    }
}

/// Largest card-management body (a PEM card certificate with its chain).
const MAX_CARD_BODY: usize = 64 * 1024;

fn store_italian(e: &crate::store::StoreError) -> String {
    use crate::store::StoreError as E;
    match e {
        E::CardAssociated { .. } => "La carta è già associata a questa casella".into(),
        E::CardNotAssociated { .. } => "La carta non è associata a questa casella".into(),
        E::TooManyCards { max, .. } => {
            format!("La casella ha già {max} carte associate: rimuovine una")
        }
        _ => "Operazione non riuscita, riprova più tardi".into(),
    }
}
