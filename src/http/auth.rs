//! Who is asking, and may they change anything: the webmail's login (`POST /auth/login`
//! sets a `__Host-` cookie: HttpOnly, Secure, SameSite=Strict), `GET /auth/me`,
//! `POST /auth/logout`; HTTP Basic and Bearer for API clients (TLS-only, as the whole
//! listener is); and the CSRF defence of cookie sessions: a state-changing request must
//! carry the session's `X-CSRF-Token` and must not come from another origin (`Origin`,
//! `Sec-Fetch-Site`).
//!
//! Failed logins go through [`crate::pipeline::access::authenticate`], so they count in
//! the same lockout as SMTP, IMAP and POP3. Untrusted input: every header named here.

use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use serde_json::json;

use super::Web;
use super::response::{self, Body};
use super::sessions::IDLE_TIMEOUT;
use crate::pec::address::PecAddress;

/// The session cookie. The `__Host-` prefix makes browsers refuse it unless it is Secure,
/// host-only and for `/` (RFC 6265bis §4.1.3.2).
pub const COOKIE: &str = "__Host-pecd_session";
/// The header carrying the per-session CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Largest login request body.
pub(super) const MAX_LOGIN_BODY: usize = 4096;
/// Delay before answering a failed login (as on SMTP, IMAP and POP3).
pub(super) const AUTH_FAILURE_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user: String,
    /// The session token when the caller came with the cookie: such requests need CSRF
    /// checks. `None` for Basic and Bearer (a browser never adds those by itself).
    pub cookie_session: Option<(String, String)>,
    /// The bearer token the caller came with.
    pub bearer_token: Option<String>,
    /// Logged in with a provisional password: only `/auth/password` (and logout) may
    /// be used until the owner changes it.
    pub must_change_password: bool,
}

impl Principal {
    /// The session token (cookie or bearer), if the caller has a session.
    pub fn token(&self) -> Option<&str> {
        self.cookie_session
            .as_ref()
            .map(|(t, _)| t.as_str())
            .or(self.bearer_token.as_deref())
    }
}

/// 403 for a caller who must change the provisional password first (an RFC 7807
/// problem with type `urn:pecd:error:passwordChangeRequired`).
pub fn password_change_required(web: &Web) -> Response<Body> {
    response::problem(
        StatusCode::FORBIDDEN,
        "urn:pecd:error:passwordChangeRequired",
        crate::pipeline::access::password_change_notice(&web.gw),
    )
}

/// The live session of `token`, unless the mailbox's credentials changed since it was
/// opened (then it is closed here).
fn live_session(web: &Web, token: &str) -> Option<super::sessions::WebSession> {
    let s = web.sessions.get(token)?;
    if web.gw.credentials.current(&s.user) != s.epoch {
        web.sessions.close(token);
        return None;
    }
    Some(s)
}

fn cookie_token(h: &HeaderMap) -> Option<String> {
    for v in h.get_all(header::COOKIE) {
        let Ok(s) = v.to_str() else { continue };
        for part in s.split(';') {
            if let Some((k, v)) = part.trim().split_once('=')
                && k == COOKIE
            {
                return Some(v.to_string());
            }
        }
    }
    None
}

/// Who sent `req`, or the 401 to answer.
pub async fn principal(
    web: &Arc<Web>,
    req: &Request<Incoming>,
    peer: SocketAddr,
) -> Result<Principal, Response<Body>> {
    let h = req.headers();
    if let Some(auth) = h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        if let Some(b) = auth.strip_prefix("Basic ") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
                .and_then(|d| String::from_utf8(d).ok());
            if let Some((u, p)) = decoded.as_deref().and_then(|d| d.split_once(':')) {
                use crate::pipeline::access::LoginCheck;
                match crate::pipeline::access::authenticate(
                    &web.gw,
                    u.to_string(),
                    p.to_string(),
                    peer,
                    "HTTPS",
                )
                .await
                {
                    LoginCheck::Granted(user) => {
                        return Ok(Principal {
                            user,
                            cookie_session: None,
                            bearer_token: None,
                            must_change_password: false,
                        });
                    }
                    LoginCheck::MustChangePassword { user, .. } => {
                        return Ok(Principal {
                            user,
                            cookie_session: None,
                            bearer_token: None,
                            must_change_password: true,
                        });
                    }
                    LoginCheck::Unavailable => return Err(login_unavailable()),
                    LoginCheck::Failed => {}
                }
            }
            return Err(unauthorized("wrong user name or password"));
        }
        if let Some(t) = auth.strip_prefix("Bearer ") {
            let t = t.trim();
            return match live_session(web, t) {
                Some(s) if s.bearer => Ok(Principal {
                    user: s.user,
                    cookie_session: None,
                    bearer_token: Some(t.to_string()),
                    must_change_password: s.must_change_password,
                }),
                _ => Err(unauthorized(
                    "the bearer token is not valid (expired, or the password changed?)",
                )),
            };
        }
        return Err(unauthorized("unsupported authorization scheme"));
    }
    if let Some(t) = cookie_token(h)
        && let Some(s) = live_session(web, &t)
        && !s.bearer
    {
        return Ok(Principal {
            user: s.user,
            cookie_session: Some((t, s.csrf)),
            bearer_token: None,
            must_change_password: s.must_change_password,
        });
    }
    Err(unauthorized("log in first"))
}

/// The mailbox of a caller of the owner's settings (cards, rules): refused while the
/// session is restricted to the password change.
pub(super) fn owner(web: &Web, p: &Principal) -> Result<PecAddress, Response<Body>> {
    if p.must_change_password {
        return Err(password_change_required(web));
    }
    PecAddress::parse(&p.user).map_err(|_| {
        response::problem(StatusCode::INTERNAL_SERVER_ERROR, "about:blank", "bad user")
    })
}

/// `GET` of one of the owner's settings: reads it from the store (off the executor) for
/// the caller's mailbox and answers `answer(value)` as JSON, or 503.
pub(super) async fn owner_get<T: Send + 'static>(
    web: &Arc<Web>,
    req: &Request<Incoming>,
    peer: SocketAddr,
    read: impl FnOnce(&crate::store::Store, &PecAddress) -> Result<T, crate::store::StoreError>
    + Send
    + 'static,
    answer: impl FnOnce(T) -> serde_json::Value,
) -> Response<Body> {
    let p = match principal(web, req, peer).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let addr = match owner(web, &p) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let store = web.gw.store.clone();
    match web.gw.blocking(move || read(&store, &addr)).await {
        Ok(v) => response::json(StatusCode::OK, &answer(v)),
        Err(e) => {
            tracing::error!(error = %e, user = %p.user, "reading the owner's settings");
            response::unavailable()
        }
    }
}

/// [`json_request`] for the owner's settings: also the caller's mailbox ([`owner`]).
pub(super) async fn owner_json(
    web: &Arc<Web>,
    req: Request<Incoming>,
    peer: SocketAddr,
    max: usize,
) -> Result<(Principal, PecAddress, bytes::Bytes), Response<Body>> {
    let (p, body) = json_request(web, req, peer, max).await?;
    let addr = owner(web, &p)?;
    Ok((p, addr, body))
}

/// 403 for a wrong current password (after the failure delay the caller served).
pub(super) fn wrong_password() -> Response<Body> {
    response::problem_motivo(
        StatusCode::FORBIDDEN,
        "urn:pecd:error:wrongPassword",
        "the current password is wrong",
        "La password attuale non è corretta",
    )
}

/// The caller and the body of a state-changing JSON request: logged in, CSRF-checked for
/// cookie sessions, `application/json`, at most `max` bytes.
pub(super) async fn json_request(
    web: &Arc<Web>,
    req: Request<Incoming>,
    peer: SocketAddr,
    max: usize,
) -> Result<(Principal, bytes::Bytes), Response<Body>> {
    let p = principal(web, &req, peer).await?;
    if let Some(r) = csrf_refusal(&p, req.headers()) {
        return Err(r);
    }
    if !is_json(req.headers()) {
        return Err(response::problem(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "about:blank",
            "send the request as application/json",
        ));
    }
    match super::body::read_limited(req.into_body(), max).await {
        Ok(b) => Ok((p, b)),
        Err(e) => Err(response::problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            "about:blank",
            e.to_string(),
        )),
    }
}

/// The credentials could not be checked now (the store failed): 503, try again.
pub(super) fn login_unavailable() -> Response<Body> {
    let mut r = response::problem_motivo(
        StatusCode::SERVICE_UNAVAILABLE,
        "urn:pecd:error:unavailable",
        "the credentials cannot be checked now: try again in a moment",
        "Non è possibile verificare le credenziali in questo momento: riprovare tra poco",
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    r
}

fn unauthorized(detail: &str) -> Response<Body> {
    let mut r = response::problem(StatusCode::UNAUTHORIZED, "about:blank", detail);
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"pecd\", charset=\"UTF-8\""),
    );
    r
}

/// Whether the request may come from the browser page of another site. `Origin` must be
/// this origin when present; `Sec-Fetch-Site` must not say cross-site.
pub fn cross_origin(h: &HeaderMap) -> Option<String> {
    if let Some(site) = h.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && !matches!(site, "same-origin" | "none")
    {
        return Some(format!("Sec-Fetch-Site: {site}"));
    }
    if let Some(origin) = h.get(header::ORIGIN) {
        let host = h.get(header::HOST).and_then(|v| v.to_str().ok());
        let ok = match (origin.to_str().ok(), host) {
            (Some(o), Some(host)) => o.eq_ignore_ascii_case(&format!("https://{host}")),
            _ => false,
        };
        if !ok {
            return Some(format!(
                "Origin {:?} is not this site",
                String::from_utf8_lossy(origin.as_bytes())
            ));
        }
    }
    None
}

/// The CSRF check of a state-changing request with a cookie session: `None` when it
/// passes, else the 403 to answer.
pub fn csrf_refusal(p: &Principal, h: &HeaderMap) -> Option<Response<Body>> {
    let (_, csrf) = p.cookie_session.as_ref()?;
    if let Some(why) = cross_origin(h) {
        return Some(response::problem(StatusCode::FORBIDDEN, "about:blank", why));
    }
    let given = h.get(CSRF_HEADER).map(|v| v.as_bytes()).unwrap_or_default();
    if !constant_time_eq(given, csrf.as_bytes()) {
        return Some(response::problem(
            StatusCode::FORBIDDEN,
            "about:blank",
            "missing or wrong X-CSRF-Token",
        ));
    }
    None
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && openssl::memcmp::eq(a, b)
}

fn session_body(s: &super::sessions::WebSession) -> serde_json::Value {
    json!({
        "username": s.user,
        "accountId": crate::jmap::account_id(&s.user),
        "csrfToken": s.csrf,
        "mustChangePassword": s.must_change_password,
    })
}

pub(super) fn is_json(h: &HeaderMap) -> bool {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        })
}

/// `POST /auth/login`: `{"username","password"}` (JSON only, same origin only). With
/// `"bearer": true` the answer carries a bearer token for API clients and sets no cookie.
pub async fn login(web: &Arc<Web>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    if req.method() != Method::POST {
        return response::problem(StatusCode::METHOD_NOT_ALLOWED, "about:blank", "use POST");
    }
    if let Some(why) = cross_origin(req.headers()) {
        return response::problem(StatusCode::FORBIDDEN, "about:blank", why);
    }
    if !is_json(req.headers()) {
        return response::problem(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "about:blank",
            "send the credentials as application/json",
        );
    }
    let body = match super::body::read_limited(req.into_body(), MAX_LOGIN_BODY).await {
        Ok(b) => b,
        Err(e) => {
            return response::problem(StatusCode::PAYLOAD_TOO_LARGE, "about:blank", e.to_string());
        }
    };
    #[derive(serde::Deserialize)]
    struct Creds {
        username: String,
        password: String,
        #[serde(default)]
        bearer: bool,
    }
    let Ok(c) = serde_json::from_slice::<Creds>(&body) else {
        return response::problem(
            StatusCode::BAD_REQUEST,
            "about:blank",
            "expected {\"username\": ..., \"password\": ...}",
        );
    };
    let now = web.gw.clock.now();
    if let Some(l) = web.gw.logins.lockout(peer.ip(), &c.username, now) {
        tracing::info!(%peer, "web login refused: {l}");
        return response::problem(
            StatusCode::TOO_MANY_REQUESTS,
            "about:blank",
            "too many failed logins: try again later",
        );
    }
    // Read before the check: a password change racing with this login ends it too.
    let epoch = crate::pec::address::PecAddress::parse(&c.username)
        .map(|a| web.gw.credentials.current(&a.to_string()))
        .unwrap_or(0);
    use crate::pipeline::access::LoginCheck;
    let (user, must_change) = match crate::pipeline::access::authenticate(
        &web.gw,
        c.username.clone(),
        c.password,
        peer,
        "HTTPS",
    )
    .await
    {
        LoginCheck::Granted(u) => (u, false),
        LoginCheck::MustChangePassword { user, .. } => (user, true),
        LoginCheck::Unavailable => return login_unavailable(),
        LoginCheck::Failed => {
            tracing::warn!(%peer, "web login failed");
            tokio::time::sleep(AUTH_FAILURE_DELAY).await;
            return response::problem(
                StatusCode::UNAUTHORIZED,
                "about:blank",
                "wrong user name or password",
            );
        }
    };
    session_response(web, &user, c.bearer, epoch, must_change)
}

/// Opens a session for `user` and answers with it: a bearer token in the body, or the
/// session cookie. Shared by the password and smart-card logins.
pub(super) fn session_response(
    web: &Web,
    user: &str,
    bearer: bool,
    epoch: u64,
    must_change: bool,
) -> Response<Body> {
    let (token, s) = web.sessions.open(user, bearer, epoch, must_change);
    let mut body = session_body(&s);
    if bearer {
        body["bearerToken"] = json!(token);
        return response::json(StatusCode::OK, &body);
    }
    let mut r = response::json(StatusCode::OK, &body);
    let cookie = format!(
        "{COOKIE}={token}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={}",
        super::sessions::ABSOLUTE_TIMEOUT.as_secs()
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    let _ = IDLE_TIMEOUT;
    r
}

/// `GET /auth/me`: the current cookie session, for a page that was reloaded.
pub fn me(web: &Arc<Web>, req: &Request<Incoming>) -> Response<Body> {
    match cookie_token(req.headers()).and_then(|t| live_session(web, &t)) {
        Some(s) if !s.bearer => response::json(StatusCode::OK, &session_body(&s)),
        _ => response::problem(StatusCode::UNAUTHORIZED, "about:blank", "not logged in"),
    }
}

/// `POST /auth/logout`: ends the cookie session (CSRF-checked) and clears the cookie.
pub async fn logout(web: &Arc<Web>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let p = match principal(web, &req, peer).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    if let Some(r) = csrf_refusal(&p, req.headers()) {
        return r;
    }
    if let Some((t, _)) = &p.cookie_session {
        web.sessions.close(t);
    }
    let mut r = response::bytes(StatusCode::NO_CONTENT, "text/plain", bytes::Bytes::new());
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "__Host-pecd_session=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn other_origins_are_told_apart() {
        let same = headers(&[
            ("host", "pec.test:8443"),
            ("origin", "https://pec.test:8443"),
        ]);
        assert!(cross_origin(&same).is_none());
        let evil = headers(&[("host", "pec.test:8443"), ("origin", "https://evil.test")]);
        assert!(cross_origin(&evil).is_some());
        let plain = headers(&[("host", "pec.test"), ("origin", "http://pec.test")]);
        assert!(cross_origin(&plain).is_some());
        let site = headers(&[("host", "pec.test"), ("sec-fetch-site", "cross-site")]);
        assert!(cross_origin(&site).is_some());
        assert!(cross_origin(&headers(&[("host", "pec.test")])).is_none());
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let h = headers(&[("cookie", "a=1; __Host-pecd_session=tok; b=2")]);
        assert_eq!(cookie_token(&h).as_deref(), Some("tok"));
        assert_eq!(cookie_token(&headers(&[("cookie", "x=y")])), None);
    }

    #[test]
    fn csrf_needs_the_token_for_cookie_sessions_only() {
        let p = Principal {
            user: "a@pec.test".into(),
            cookie_session: Some(("t".into(), "csrf-token".into())),
            bearer_token: None,
            must_change_password: false,
        };
        let h = headers(&[("host", "h"), ("x-csrf-token", "csrf-token")]);
        assert!(csrf_refusal(&p, &h).is_none());
        let h = headers(&[("host", "h"), ("x-csrf-token", "csrf-tokeN")]);
        assert!(csrf_refusal(&p, &h).is_some());
        assert!(csrf_refusal(&p, &headers(&[("host", "h")])).is_some());
        let basic = Principal {
            user: "a@pec.test".into(),
            cookie_session: None,
            bearer_token: None,
            must_change_password: false,
        };
        assert!(csrf_refusal(&basic, &headers(&[])).is_none());
    }
}
