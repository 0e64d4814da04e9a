//! One request → one handler, by method and path; every answer gets the security headers.
//!
//! | path | what |
//! |---|---|
//! | `GET /`, `GET /assets/…` | the webmail ([`crate::web`]) |
//! | `POST /auth/login`, `GET /auth/me`, `POST /auth/logout` | webmail sessions ([`super::auth`]) |
//! | `POST /auth/password` | the owner's password change ([`super::password`]) |
//! | `GET /auth/options`, `POST /auth/card` | smart-card login (on `[listen] https_cns`) ([`super::card`]) |
//! | `GET /auth/cards`, `POST /auth/cards` | the owner's smart cards ([`super::card`]) |
//! | `GET /auth/filters`, `POST /auth/filters` | the owner's rules on incoming messages ([`super::filters`]) |
//! | `GET /auth/notifications`, `POST /auth/notifications` | notices to the owner's ordinary addresses ([`super::notify`]) |
//! | `GET /.well-known/jmap` | redirect to the JMAP session (RFC 8620 §2.2) |
//! | `GET /jmap/session`, `POST /jmap/api` | JMAP session and API |
//! | `POST /jmap/upload/{accountId}/`, `GET /jmap/download/{accountId}/{blobId}/{name}` | blobs |
//! | `GET /jmap/eventsource` | push (RFC 8620 §7.3) |
//! | `GET /jmap/evidence/{accountId}/{emailId}` | the evidence bundle (PEC capability) |

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use super::Web;
use super::auth::{self, Principal};
use super::response::{self, Body};

pub async fn handle(
    web: Arc<Web>,
    peer: SocketAddr,
    conn: &super::Conn,
    req: Request<Incoming>,
) -> Response<Body> {
    let mut r = route(&web, peer, conn, req).await;
    response::secure(&mut r);
    r
}

async fn route(
    web: &Arc<Web>,
    peer: SocketAddr,
    conn: &super::Conn,
    req: Request<Incoming>,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    match (&method, path.as_str()) {
        (&Method::GET | &Method::HEAD, "/" | "/index.html") => crate::web::asset("index.html"),
        (&Method::GET | &Method::HEAD, p) if p.starts_with("/assets/") => {
            crate::web::asset(&p["/assets/".len()..])
        }
        (_, "/auth/login") => auth::login(web, req, peer).await,
        (&Method::GET, "/auth/me") => auth::me(web, &req),
        (&Method::POST, "/auth/logout") => auth::logout(web, req, peer).await,
        (&Method::POST, "/auth/password") => super::password::change(web, req, peer).await,
        (&Method::GET, "/auth/options") => super::card::options(web, conn),
        (_, "/auth/card") => super::card::login(web, req, peer, conn).await,
        (&Method::GET, "/auth/cards") => super::card::list(web, req, peer).await,
        (&Method::GET, "/auth/filters") => super::filters::get(web, req, peer).await,
        (&Method::POST, "/auth/filters") => super::filters::set(web, req, peer).await,
        (&Method::GET, "/auth/notifications") => super::notify::get(web, req, peer).await,
        (&Method::POST, "/auth/notifications") => super::notify::set(web, req, peer).await,
        (&Method::POST, "/auth/cards") => super::card::change(web, req, peer).await,
        (&Method::GET, "/.well-known/jmap") => response::redirect("/jmap/session"),
        (_, p) if p.starts_with("/jmap/") => {
            let p = match auth::principal(web, &req, peer).await {
                Ok(p) => p,
                Err(r) => return r,
            };
            if p.must_change_password {
                return auth::password_change_required(web);
            }
            jmap(web, p, req, &path).await
        }
        _ => response::not_found(),
    }
}

async fn jmap(web: &Arc<Web>, p: Principal, req: Request<Incoming>, path: &str) -> Response<Body> {
    let method = req.method().clone();
    if method == Method::POST
        && let Some(r) = auth::csrf_refusal(&p, req.headers())
    {
        return r;
    }
    let segs: Vec<&str> = path.trim_start_matches("/jmap/").split('/').collect();
    let j = &web.jmap;
    match (&method, segs.as_slice()) {
        (&Method::GET, ["session"]) => j.session_response(&p.user),
        (&Method::POST, ["api"]) => {
            let json = req
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| {
                    v.trim_start()
                        .to_ascii_lowercase()
                        .starts_with("application/json")
                });
            if !json {
                return response::problem(
                    StatusCode::BAD_REQUEST,
                    "urn:ietf:params:jmap:error:notJSON",
                    "the request must be application/json",
                );
            }
            j.api_response(&p.user, req.into_body()).await
        }
        (&Method::POST, ["upload", account, ..]) => {
            let ct = req
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/octet-stream")
                .to_string();
            j.upload_response(&p.user, account, &ct, req.into_body())
                .await
        }
        (&Method::GET, ["download", account, blob, name]) => {
            let ty = query_param(req.uri().query(), "type");
            j.download_response(&p.user, account, blob, &percent_decode(name), ty.as_deref())
                .await
        }
        (&Method::GET, ["eventsource"]) => {
            let q = req.uri().query();
            let ping = query_param(q, "ping")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let close = query_param(q, "closeafter").is_some_and(|v| v == "state");
            let types = query_param(q, "types").unwrap_or_else(|| "*".into());
            j.eventsource_response(&p.user, &types, close, ping)
        }
        (&Method::GET, ["evidence", account, email]) => {
            j.evidence_response(&p.user, account, email).await
        }
        _ => response::not_found(),
    }
}

/// A query parameter, percent-decoded.
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then(|| percent_decode(v))
    })
}

/// Percent-decoding of a path segment or query value (`+` is a space in queries only,
/// and no JMAP parameter needs it).
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) =
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_survives_bad_escapes() {
        assert_eq!(percent_decode("a%20b"), "a b");
        assert_eq!(percent_decode("%E2%82%AC.pdf"), "€.pdf");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(
            query_param(Some("types=*&ping=30"), "ping").as_deref(),
            Some("30")
        );
        assert_eq!(query_param(Some("x"), "ping"), None);
    }
}
