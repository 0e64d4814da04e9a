//! The built-in webmail: static assets (HTML, ES modules, CSS, fonts, translations) under
//! `src/web/assets/`, embedded in the binary by rust-embed, so that `pecd serve` alone
//! serves a working webmail. The assets talk only to this server's JMAP API and login
//! endpoints ([`crate::http`]). Untrusted input: the requested asset path (only names
//! embedded at build time are served; `..` cannot escape since nothing is read from disk
//! in release builds, and rust-embed refuses traversal in debug builds).

use http::{HeaderValue, StatusCode, header};
use rust_embed::Embed;

use crate::http::response::{self, Body};

#[derive(Embed)]
#[folder = "src/web/assets/"]
struct Assets;

/// The asset at `path`, with its MIME type; `index.html` is never cached (it names the
/// others), the rest may be cached briefly and revalidated by ETag.
pub fn asset(path: &str) -> http::Response<Body> {
    if path.split('/').any(|s| s == ".." || s.is_empty()) && path != "index.html" {
        return response::not_found();
    }
    let Some(file) = Assets::get(path) else {
        return response::not_found();
    };
    let mime = file.metadata.mimetype().to_string();
    let mime = if mime.starts_with("text/") || mime.contains("javascript") || mime.contains("json")
    {
        format!("{mime}; charset=utf-8")
    } else {
        mime
    };
    let mut r = response::bytes(StatusCode::OK, &mime, file.data.into_owned());
    let cache = if path == "index.html" {
        "no-cache"
    } else {
        "private, max-age=300"
    };
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    let etag = format!("\"{}\"", hex::encode(&file.metadata.sha256_hash()[..12]));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        r.headers_mut().insert(header::ETAG, v);
    }
    r
}
