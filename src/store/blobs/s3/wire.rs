//! What crosses the wire to the object store, and the distrust of what comes back: the
//! HTTP agent (TLS roots, no redirects, no proxy, timeouts), errors stripped of signed URLs
//! and of everything but the S3 error code, the ETag check of an upload, bounded reads of
//! answers, the hash check of a body read back, the dates S3 writes.

use std::io::{self, Read};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::super::dir::io_err;
use super::super::{BlobId, StoreError};

pub(super) fn fail(op: &'static str, key: &str, detail: impl Into<String>) -> StoreError {
    StoreError::ObjectStore {
        op,
        key: key.to_string(),
        detail: detail.into(),
    }
}

/// A transport error, without anything that could carry a signed URL.
pub(super) fn transport(op: &'static str, key: &str, e: ureq::Error) -> StoreError {
    let text = e.to_string();
    let text = match text.find('?') {
        Some(i) => format!("{}…", &text[..i]),
        None => text,
    };
    fail(op, key, text)
}

/// The status and the S3 error code of a failed response (`<Code>` of its XML body, read
/// to at most 4 KiB).
pub(super) fn refused(
    op: &'static str,
    key: &str,
    resp: ureq::http::Response<ureq::Body>,
) -> StoreError {
    let status = resp.status();
    let mut body = String::new();
    let _ = resp
        .into_body()
        .into_with_config()
        .limit(4096)
        .reader()
        .read_to_string(&mut body);
    let code = body
        .split_once("<Code>")
        .and_then(|(_, rest)| rest.split_once("</Code>"))
        .map(|(c, _)| {
            c.chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .take(64)
                .collect::<String>()
        });
    match code {
        Some(c) if !c.is_empty() => fail(op, key, format!("HTTP {} {c}", status.as_u16())),
        _ => fail(op, key, format!("HTTP {}", status.as_u16())),
    }
}

pub(super) fn md5(bytes: &[u8]) -> Result<Vec<u8>, StoreError> {
    openssl::hash::hash(openssl::hash::MessageDigest::md5(), bytes)
        .map(|d| d.to_vec())
        .map_err(|e| fail("md5", "", e.to_string()))
}

/// A body read back from the bucket, refused at its end unless it hashes to its id.
pub(super) struct Checked {
    pub(super) inner: ureq::BodyReader<'static>,
    pub(super) hasher: openssl::sha::Sha256,
    pub(super) id: BlobId,
    pub(super) key: String,
    pub(super) done: bool,
}

impl Read for Checked {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            self.hasher.update(&buf[..n]);
        } else if !buf.is_empty() && !self.done {
            self.done = true;
            let h = std::mem::replace(&mut self.hasher, openssl::sha::Sha256::new());
            if hex::encode(h.finish()) != self.id.as_str() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "object {} does not hash to its name: the object store changed it",
                        self.key
                    ),
                ));
            }
        }
        Ok(n)
    }
}

pub(super) fn check_etag(
    resp: &ureq::http::Response<ureq::Body>,
    digest: &[u8],
    key: &str,
) -> Result<(), StoreError> {
    // A single-part upload without server-side encryption by KMS answers the MD5 as its
    // ETag; another form (not 32 hex digits) is not comparable and left alone.
    let Some(etag) = resp.headers().get("etag").and_then(|v| v.to_str().ok()) else {
        // Any HTTP server answers 200; an object store says what it stored.
        return Err(fail("put", key, "no ETag in the answer"));
    };
    let etag = etag.trim_matches('"');
    if etag.len() == 32
        && etag.bytes().all(|b| b.is_ascii_hexdigit())
        && !etag.eq_ignore_ascii_case(&hex::encode(digest))
    {
        return Err(fail(
            "put",
            key,
            "the stored object's ETag is not the body's MD5",
        ));
    }
    Ok(())
}

pub(super) fn read_text(
    resp: ureq::http::Response<ureq::Body>,
    op: &'static str,
    key: &str,
    limit: u64,
) -> Result<String, StoreError> {
    let mut s = String::new();
    resp.into_body()
        .into_with_config()
        .limit(limit)
        .reader()
        .read_to_string(&mut s)
        .map_err(|e| fail(op, key, e.to_string()))?;
    Ok(s)
}

/// Reads until `buf` is full or the body ends.
pub(super) fn read_full(f: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// `Last-Modified` (RFC 9110 IMF-fixdate, `Sat, 05 Dec 2026 19:40:00 GMT`).
pub(super) fn http_date(s: &str) -> Option<SystemTime> {
    let z = jiff::fmt::rfc2822::parse(s).ok()?;
    Some(SystemTime::from(z.timestamp()))
}

/// `LastModified` in a listing (ISO 8601, `2026-12-05T19:40:00.000Z`).
pub(super) fn iso_time(s: &str) -> Option<SystemTime> {
    s.parse::<jiff::Timestamp>().ok().map(SystemTime::from)
}

/// The HTTP agent: TLS with the system's roots and `ca_file`, no status as error, no
/// redirect followed (a `PUT` redirected would become a `GET` answered 200), no proxy from
/// the environment, bounded waits (a part of [`PART_SIZE`] must go through in 2 minutes, a
/// body read back in 10).
pub(super) fn agent(ca_file: Option<&std::path::Path>) -> Result<ureq::Agent, StoreError> {
    let mut roots: Vec<ureq::tls::Certificate<'static>> = Vec::new();
    for c in rustls_native_certs::load_native_certs().certs {
        roots.push(ureq::tls::Certificate::from_der(c.as_ref()).to_owned());
    }
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(io_err(path))?;
        for item in ureq::tls::parse_pem(&pem) {
            match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => roots.push(c),
                Ok(_) => {}
                Err(e) => {
                    return Err(fail("configure", "", format!("{}: {e}", path.display())));
                }
            }
        }
    }
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::Specific(Arc::new(roots)))
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .build();
    let config = ureq::Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(10)))
        .timeout_send_body(Some(Duration::from_secs(120)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .timeout_per_read(Some(Duration::from_secs(60)))
        .timeout_recv_body(Some(Duration::from_secs(600)))
        .max_redirects(0)
        .proxy(None)
        .max_idle_connections_per_host(32)
        .user_agent("pecd")
        .build();
    Ok(ureq::Agent::new_with_config(config))
}
