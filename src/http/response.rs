//! Building responses: the one body type, JSON and problem-details (RFC 7807, as RFC 8620
//! §3.6.1 asks for request-level errors) answers, and the security headers every response
//! carries (CSP `default-src 'self'`, `frame-ancestors 'none'`, nosniff, HSTS, no referrer).

use std::convert::Infallible;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};

/// The body of every response: a full buffer or a stream (EventSource).
pub type Body = BoxBody<Bytes, Infallible>;

/// The Content-Security-Policy of the webmail and the API. Remote images are allowed by
/// the policy (`https:`) only so that a user who asks to see them can; the webmail strips
/// them from message HTML until then, and message HTML is shown in a sandboxed frame
/// without scripts.
pub const CSP: &str = "default-src 'self'; img-src 'self' data: https:; \
    frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'";

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

/// A response with the given status, content type and body, security headers included.
pub fn bytes(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

pub fn json(status: StatusCode, v: &serde_json::Value) -> Response<Body> {
    let mut r = bytes(
        status,
        "application/json",
        serde_json::to_vec(v).unwrap_or_default(),
    );
    no_store(&mut r);
    r
}

/// An RFC 7807 problem; `kind` is a JMAP request-level error URN where one applies.
pub fn problem(status: StatusCode, kind: &str, detail: impl Into<String>) -> Response<Body> {
    let v = serde_json::json!({
        "type": kind,
        "status": status.as_u16(),
        "detail": detail.into(),
    });
    let mut r = bytes(
        status,
        "application/problem+json",
        serde_json::to_vec(&v).unwrap_or_default(),
    );
    no_store(&mut r);
    r
}

/// A problem with the reason also in Italian (`motivo`), for what the webmail shows.
pub fn problem_motivo(
    status: StatusCode,
    kind: &str,
    detail: &str,
    motivo: &str,
) -> Response<Body> {
    let v = serde_json::json!({
        "type": kind,
        "status": status.as_u16(),
        "detail": detail,
        "motivo": motivo,
    });
    let mut r = bytes(
        status,
        "application/problem+json",
        serde_json::to_vec(&v).unwrap_or_default(),
    );
    no_store(&mut r);
    r
}

/// 503 for a store that could not answer now (the cause goes to the log, not the client).
pub fn unavailable() -> Response<Body> {
    problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "about:blank",
        "try again later",
    )
}

pub fn not_found() -> Response<Body> {
    problem(StatusCode::NOT_FOUND, "about:blank", "not found")
}

pub fn redirect(to: &str) -> Response<Body> {
    let mut r = bytes(StatusCode::FOUND, "text/plain", Bytes::new());
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// Private, never cached: API answers, session data, downloads of mail.
pub fn no_store(r: &mut Response<Body>) {
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, private"),
    );
}

/// Adds the headers every response carries.
pub fn secure(r: &mut Response<Body>) {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
}

/// `Content-Disposition: attachment` with an ASCII fallback and the RFC 6266 / 8187 UTF-8
/// name: downloads are never rendered by the browser.
pub fn attachment(r: &mut Response<Body>, name: &str) {
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._- ()".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"._-".contains(&b) {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    let v = format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}");
    if let Ok(v) = HeaderValue::from_str(&v) {
        r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachment_names_cannot_break_the_header() {
        let mut r = bytes(StatusCode::OK, "application/octet-stream", "x");
        attachment(&mut r, "a\"b\r\nSet-Cookie: x=1;è.pdf");
        let v = r.headers()[header::CONTENT_DISPOSITION].to_str().unwrap();
        assert!(v.starts_with("attachment; filename=\"a_b__Set-Cookie_ x_1__.pdf\""));
        assert!(v.contains("filename*=UTF-8''a%22b%0D%0ASet-Cookie%3A%20x%3D1%3B%C3%A8.pdf"));
    }
}
