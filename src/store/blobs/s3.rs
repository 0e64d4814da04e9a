//! The S3 blob backend (`[blobs] backend = "s3"`): every blob is one object of an
//! S3-compatible bucket, keyed `{prefix}{sha256 hex}`. Requests are signed with AWS
//! Signature V4 by `rusty-s3` (presigned, valid [`SIGN_TTL`]) and sent by `ureq` over
//! TLS with the system's roots plus `ca_file` (plain `http://` only if configured so).
//!
//! Writes: a body is uploaded under its SHA-256 name, idempotently (the same bytes give
//! the same object), with `Content-MD5` so that the store checks what it received, and
//! only once the object store answered 200 is the blob handed back for a commit to refer
//! to: a crash leaves at worst an unreferenced object, swept later. Bodies larger than
//! [`PART_SIZE`] are spooled to a local file while hashed, then sent as a multipart upload
//! one part at a time (memory stays at one part whatever the size); a failed multipart
//! upload is aborted. A `put` of bytes already stored uploads them again: that is what
//! makes the object young again for the sweep.
//!
//! Sweep: objects older than the grace period and unreferenced are deleted after a second
//! look (a `HEAD` for the age, the references again). A `put` of the same bytes racing the
//! delete in this process waits for it and uploads again ([`S3Blobs::deleting`]). Across
//! several nodes the grace period is what protects a body between its upload and its
//! commit; the sweep is one of the singleton duties.
//!
//! Distrusted: everything the object store answers. Keys it lists that are not
//! `{prefix}` + 64 lower-case hex digits are ignored, never deleted; error bodies are read
//! to at most 4 KiB and only their `<Code>` is kept; signed URLs (they carry a signature)
//! never reach a log or an error message.

use std::collections::HashSet;
use std::io::{self, Read, Seek};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine;
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

use super::dir::io_err;
use super::{Blob, BlobId, BlobReader, Spool, StoreError, SweepStats};

/// How long a signed request stays valid.
pub const SIGN_TTL: Duration = Duration::from_secs(300);
/// Bodies up to this size go in one `PUT`; larger ones in parts of this size.
pub const PART_SIZE: usize = 8 << 20;
/// Objects listed per request.
const LIST_PAGE: usize = 1000;

/// The access key of the bucket. The secret never appears in `Debug` output, logs or
/// errors.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Credentials {
    pub access_key_id: String,
    secret_access_key: String,
}

impl S3Credentials {
    pub fn new(access_key_id: String, secret_access_key: String) -> Self {
        Self {
            access_key_id,
            secret_access_key,
        }
    }
}

impl std::fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"(redacted)")
            .finish()
    }
}

/// `[blobs]` with `backend = "s3"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Settings {
    /// `https://host[:port][/path]`; `http://` only for a store on loopback or a private
    /// network.
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    /// `true`: `endpoint/bucket/key` (MinIO, SeaweedFS, Ceph); `false`: virtual hosts,
    /// `bucket.endpoint/key` (AWS).
    pub path_style: bool,
    /// Prepended to every key (several providers, or other data, in one bucket).
    pub prefix: String,
    pub credentials: S3Credentials,
    /// Extra CA certificates (PEM) trusted for the endpoint, beside the system's.
    pub ca_file: Option<PathBuf>,
}

/// The open bucket.
pub struct S3Blobs {
    bucket: Bucket,
    credentials: Credentials,
    prefix: String,
    agent: ureq::Agent,
    /// Where streamed writes are spooled before their upload.
    spool_dir: PathBuf,
    /// Blobs a sweep is deleting right now: a `put` that finished meanwhile uploads again
    /// once the delete is done (see the module doc).
    deleting: Mutex<HashSet<BlobId>>,
    deleted: Condvar,
    /// One sweep at a time.
    sweeping: Mutex<()>,
}

impl std::fmt::Debug for S3Blobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Blobs")
            .field("bucket", &self.bucket.name())
            .field("endpoint", &self.bucket.base_url().as_str())
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn fail(op: &'static str, key: &str, detail: impl Into<String>) -> StoreError {
    StoreError::ObjectStore {
        op,
        key: key.to_string(),
        detail: detail.into(),
    }
}

/// A transport error, without anything that could carry a signed URL.
fn transport(op: &'static str, key: &str, e: ureq::Error) -> StoreError {
    let text = e.to_string();
    let text = match text.find('?') {
        Some(i) => format!("{}…", &text[..i]),
        None => text,
    };
    fail(op, key, text)
}

/// The status and the S3 error code of a failed response (`<Code>` of its XML body, read
/// to at most 4 KiB).
fn refused(op: &'static str, key: &str, resp: ureq::http::Response<ureq::Body>) -> StoreError {
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

fn md5(bytes: &[u8]) -> Result<Vec<u8>, StoreError> {
    openssl::hash::hash(openssl::hash::MessageDigest::md5(), bytes)
        .map(|d| d.to_vec())
        .map_err(|e| fail("md5", "", e.to_string()))
}

impl S3Blobs {
    /// Connects to the bucket (a `HEAD` on it, so that a wrong endpoint, bucket or key
    /// is reported at start) and prepares the spool directory `root/tmp`.
    pub fn open(root: PathBuf, s: &S3Settings) -> Result<Self, StoreError> {
        let endpoint = s
            .endpoint
            .parse()
            .map_err(|e| fail("configure", "", format!("endpoint {:?}: {e}", s.endpoint)))?;
        let style = if s.path_style {
            UrlStyle::Path
        } else {
            UrlStyle::VirtualHost
        };
        let bucket = Bucket::new(endpoint, style, s.bucket.clone(), s.region.clone())
            .map_err(|e| fail("configure", "", format!("bucket {:?}: {e}", s.bucket)))?;
        let credentials = Credentials::new(
            s.credentials.access_key_id.clone(),
            s.credentials.secret_access_key.clone(),
        );
        let spool_dir = root.join("tmp");
        std::fs::create_dir_all(&spool_dir).map_err(io_err(&spool_dir))?;
        let blobs = Self {
            bucket,
            credentials,
            prefix: s.prefix.clone(),
            agent: agent(s.ca_file.as_deref())?,
            spool_dir,
            deleting: Mutex::new(HashSet::new()),
            deleted: Condvar::new(),
            sweeping: Mutex::new(()),
        };
        blobs.probe()?;
        Ok(blobs)
    }

    /// A `HEAD` on the bucket: reachable, and the key may use it.
    pub fn probe(&self) -> Result<(), StoreError> {
        let name = self.bucket.name().to_string();
        let url = self
            .bucket
            .head_bucket(Some(&self.credentials))
            .sign(SIGN_TTL);
        let resp = self.call("open bucket", &name, || {
            self.agent.head(url.as_str()).call()
        })?;
        if !resp.status().is_success() {
            return Err(refused("open bucket", &name, resp));
        }
        Ok(())
    }

    /// Sends the request `send` makes (signing it anew each time), once more if the first
    /// attempt failed in transport: a pooled connection the store closed meanwhile (it
    /// restarted, or dropped idle ones) fails only when used. Every request here is
    /// idempotent (a `PUT` of the same bytes under the same name included).
    fn call(
        &self,
        op: &'static str,
        key: &str,
        send: impl Fn() -> Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<ureq::http::Response<ureq::Body>, StoreError> {
        match send() {
            Err(ureq::Error::Io(_) | ureq::Error::ConnectionFailed | ureq::Error::Protocol(_)) => {
                send().map_err(|e| transport(op, key, e))
            }
            other => other.map_err(|e| transport(op, key, e)),
        }
    }

    fn key(&self, id: &BlobId) -> String {
        format!("{}{}", self.prefix, id.as_str())
    }

    pub fn put(&self, bytes: &[u8]) -> Result<Blob, StoreError> {
        let id = BlobId::of(bytes);
        self.upload_bytes(&id, bytes)?;
        self.after_upload(&id, || self.upload_bytes(&id, bytes))?;
        Ok(Blob {
            id,
            size: bytes.len() as u64,
        })
    }

    /// If a sweep is deleting `id` (it may have looked before this upload), waits until it
    /// is done and uploads again.
    fn after_upload(
        &self,
        id: &BlobId,
        again: impl Fn() -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut deleting = self.deleting.lock().unwrap_or_else(|p| p.into_inner());
        if !deleting.contains(id) {
            return Ok(());
        }
        while deleting.contains(id) {
            deleting = self
                .deleted
                .wait(deleting)
                .unwrap_or_else(|p| p.into_inner());
        }
        drop(deleting);
        again()
    }

    /// One `PUT` of the whole body, checked with `Content-MD5` and the answered `ETag`.
    fn upload_bytes(&self, id: &BlobId, bytes: &[u8]) -> Result<(), StoreError> {
        let key = self.key(id);
        let digest = md5(bytes)?;
        let url = self
            .bucket
            .put_object(Some(&self.credentials), &key)
            .sign(SIGN_TTL);
        let resp = self.call("put", &key, || {
            self.agent
                .put(url.as_str())
                .header(
                    "Content-MD5",
                    base64::engine::general_purpose::STANDARD.encode(&digest),
                )
                .send(bytes)
        })?;
        if !resp.status().is_success() {
            return Err(refused("put", &key, resp));
        }
        check_etag(&resp, &digest, &key)
    }

    pub fn writer(self: &Arc<Self>) -> Result<S3Writer, StoreError> {
        Ok(S3Writer {
            spool: Spool::create(&self.spool_dir)?,
            store: self.clone(),
        })
    }

    /// Uploads a spooled body and removes the spool file (whatever the outcome).
    fn upload_spooled(
        &self,
        mut file: std::fs::File,
        tmp: &std::path::Path,
        id: &BlobId,
        size: u64,
    ) -> Result<(), StoreError> {
        let result = (|| {
            if size <= PART_SIZE as u64 {
                let mut bytes = Vec::with_capacity(size as usize);
                file.rewind().map_err(io_err(tmp))?;
                file.read_to_end(&mut bytes).map_err(io_err(tmp))?;
                self.upload_bytes(id, &bytes)?;
                self.after_upload(id, || self.upload_bytes(id, &bytes))
            } else {
                self.upload_parts(&mut file, tmp, id)?;
                self.after_upload(id, || {
                    let mut again = file.try_clone().map_err(io_err(tmp))?;
                    self.upload_parts(&mut again, tmp, id)
                })
            }
        })();
        let _ = std::fs::remove_file(tmp);
        result
    }

    /// A multipart upload of `file` in parts of [`PART_SIZE`], aborted on failure.
    fn upload_parts(
        &self,
        file: &mut std::fs::File,
        tmp: &std::path::Path,
        id: &BlobId,
    ) -> Result<(), StoreError> {
        let key = self.key(id);
        file.rewind().map_err(io_err(tmp))?;
        let url = self
            .bucket
            .create_multipart_upload(Some(&self.credentials), &key)
            .sign(SIGN_TTL);
        let resp = self.call("create multipart upload", &key, || {
            self.agent.post(url.as_str()).send_empty()
        })?;
        if !resp.status().is_success() {
            return Err(refused("create multipart upload", &key, resp));
        }
        let body = read_text(resp, "create multipart upload", &key)?;
        let created = rusty_s3::actions::CreateMultipartUpload::parse_response(&body)
            .map_err(|e| fail("create multipart upload", &key, e.to_string()))?;
        let upload_id = created.upload_id().to_string();
        let parts = (|| {
            let mut etags = Vec::new();
            let mut buf = vec![0u8; PART_SIZE];
            for number in 1u16.. {
                let n = read_full(file, &mut buf).map_err(io_err(tmp))?;
                if n == 0 {
                    break;
                }
                let part = &buf[..n];
                let digest = md5(part)?;
                let url = self
                    .bucket
                    .upload_part(Some(&self.credentials), &key, number, &upload_id)
                    .sign(SIGN_TTL);
                let resp = self.call("upload part", &key, || {
                    self.agent
                        .put(url.as_str())
                        .header(
                            "Content-MD5",
                            base64::engine::general_purpose::STANDARD.encode(&digest),
                        )
                        .send(part)
                })?;
                if !resp.status().is_success() {
                    return Err(refused("upload part", &key, resp));
                }
                let etag = resp
                    .headers()
                    .get("etag")
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| fail("upload part", &key, "no ETag in the answer"))?
                    .to_string();
                etags.push(etag);
                if n < PART_SIZE {
                    break;
                }
            }
            let action = self.bucket.complete_multipart_upload(
                Some(&self.credentials),
                &key,
                &upload_id,
                etags.iter().map(String::as_str),
            );
            let url = action.sign(SIGN_TTL);
            let body = action.body();
            let resp = self.call("complete multipart upload", &key, || {
                self.agent.post(url.as_str()).send(body.as_str())
            })?;
            if !resp.status().is_success() {
                return Err(refused("complete multipart upload", &key, resp));
            }
            // S3 may answer 200 with an error in the body.
            let body = read_text(resp, "complete multipart upload", &key)?;
            if body.contains("<Error>") {
                return Err(fail(
                    "complete multipart upload",
                    &key,
                    "error in the answer",
                ));
            }
            Ok(())
        })();
        if parts.is_err() {
            let url = self
                .bucket
                .abort_multipart_upload(Some(&self.credentials), &key, &upload_id)
                .sign(SIGN_TTL);
            let _ = self.agent.delete(url.as_str()).call();
        }
        parts
    }

    fn get(&self, id: &BlobId) -> Result<ureq::Body, StoreError> {
        let key = self.key(id);
        let url = self
            .bucket
            .get_object(Some(&self.credentials), &key)
            .sign(SIGN_TTL);
        let resp = self.call("get", &key, || self.agent.get(url.as_str()).call())?;
        match resp.status().as_u16() {
            200 => Ok(resp.into_body()),
            404 => Err(StoreError::BlobMissing(id.clone())),
            _ => Err(refused("get", &key, resp)),
        }
    }

    pub fn read(&self, id: &BlobId) -> Result<Vec<u8>, StoreError> {
        let attempt = || -> Result<Vec<u8>, StoreError> {
            let mut v = Vec::new();
            self.get(id)?
                .into_reader()
                .read_to_end(&mut v)
                .map_err(|e| fail("get", &self.key(id), e.to_string()))?;
            Ok(v)
        };
        // A body cut short is read again once (the headers came on a live connection,
        // but it may still have been dropped mid-body).
        match attempt() {
            Err(StoreError::ObjectStore { .. }) => attempt(),
            other => other,
        }
    }

    pub fn open_blob(&self, id: &BlobId) -> Result<BlobReader, StoreError> {
        Ok(Box::new(self.get(id)?.into_reader()))
    }

    /// The object's last modification, `None` when it does not exist.
    fn head(&self, id: &BlobId) -> Result<Option<SystemTime>, StoreError> {
        let key = self.key(id);
        let url = self
            .bucket
            .head_object(Some(&self.credentials), &key)
            .sign(SIGN_TTL);
        let resp = self.call("head", &key, || self.agent.head(url.as_str()).call())?;
        match resp.status().as_u16() {
            200 => {
                let modified = resp
                    .headers()
                    .get("last-modified")
                    .and_then(|v| v.to_str().ok())
                    .and_then(http_date)
                    .ok_or_else(|| fail("head", &key, "no valid Last-Modified"))?;
                Ok(Some(modified))
            }
            404 => Ok(None),
            _ => Err(refused("head", &key, resp)),
        }
    }

    pub fn exists(&self, id: &BlobId) -> Result<bool, StoreError> {
        Ok(self.head(id)?.is_some())
    }

    /// Every blob with its last modification.
    fn list_all(&self) -> Result<Vec<(BlobId, Option<SystemTime>)>, StoreError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut action = self.bucket.list_objects_v2(Some(&self.credentials));
            if !self.prefix.is_empty() {
                action.with_prefix(self.prefix.as_str());
            }
            action.with_max_keys(LIST_PAGE);
            if let Some(t) = &token {
                action.with_continuation_token(t.as_str());
            }
            let url = action.sign(SIGN_TTL);
            let resp = self.call("list", &self.prefix, || self.agent.get(url.as_str()).call())?;
            if !resp.status().is_success() {
                return Err(refused("list", &self.prefix, resp));
            }
            let body = read_text(resp, "list", &self.prefix)?;
            let page = rusty_s3::actions::ListObjectsV2::parse_response(&body)
                .map_err(|e| fail("list", &self.prefix, e.to_string()))?;
            for o in page.contents {
                let Some(name) = o.key.strip_prefix(self.prefix.as_str()) else {
                    continue;
                };
                if let Ok(id) = BlobId::parse(name) {
                    let modified = o.last_modified.as_deref().and_then(iso_time);
                    out.push((id, modified));
                }
            }
            match page.next_continuation_token {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => return Ok(out),
            }
        }
    }

    pub fn list(&self) -> Result<Vec<BlobId>, StoreError> {
        Ok(self.list_all()?.into_iter().map(|(id, _)| id).collect())
    }

    fn delete(&self, id: &BlobId) -> Result<(), StoreError> {
        let key = self.key(id);
        let url = self
            .bucket
            .delete_object(Some(&self.credentials), &key)
            .sign(SIGN_TTL);
        let resp = self.call("delete", &key, || self.agent.delete(url.as_str()).call())?;
        if resp.status().is_success() || resp.status().as_u16() == 404 {
            Ok(())
        } else {
            Err(refused("delete", &key, resp))
        }
    }

    pub fn sweep(
        &self,
        referenced: impl Fn(&BlobId) -> Result<bool, StoreError>,
        grace: Duration,
    ) -> Result<SweepStats, StoreError> {
        let _one_at_a_time = self.sweeping.lock().unwrap_or_else(|p| p.into_inner());
        let now = SystemTime::now();
        // Unknown or future times count as young.
        let old = |t: Option<SystemTime>| {
            t.is_some_and(|t| now.duration_since(t).is_ok_and(|age| age >= grace))
        };
        let mut stats = SweepStats::default();
        for (id, modified) in self.list_all()? {
            if !old(modified) || referenced(&id)? {
                stats.kept += 1;
                continue;
            }
            self.deleting
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id.clone());
            // The second look, now that a racing put will upload again after us.
            let outcome = (|| -> Result<Option<bool>, StoreError> {
                let Some(modified) = self.head(&id)? else {
                    return Ok(None);
                };
                if !old(Some(modified)) || referenced(&id)? {
                    return Ok(Some(false));
                }
                self.delete(&id)?;
                Ok(Some(true))
            })();
            self.deleting
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            self.deleted.notify_all();
            match outcome? {
                Some(true) => stats.removed += 1,
                Some(false) => stats.kept += 1,
                None => {}
            }
        }
        // Spool files a crash or an abandoned writer left.
        let entries = std::fs::read_dir(&self.spool_dir).map_err(io_err(&self.spool_dir))?;
        for e in entries {
            let p = e.map_err(io_err(&self.spool_dir))?.path();
            let modified = std::fs::metadata(&p).and_then(|m| m.modified()).ok();
            if old(modified) {
                std::fs::remove_file(&p).map_err(io_err(&p))?;
                stats.removed_tmp += 1;
            }
        }
        Ok(stats)
    }
}

/// A streamed write: spooled locally while hashed, uploaded by [`S3Writer::finish`].
#[derive(Debug)]
pub struct S3Writer {
    pub(super) spool: Spool,
    store: Arc<S3Blobs>,
}

impl S3Writer {
    pub fn finish(self) -> Result<Blob, StoreError> {
        let (file, tmp, id, size) = self.spool.into_parts()?;
        self.store.upload_spooled(file, &tmp, &id, size)?;
        Ok(Blob { id, size })
    }
}

fn check_etag(
    resp: &ureq::http::Response<ureq::Body>,
    digest: &[u8],
    key: &str,
) -> Result<(), StoreError> {
    // A single-part upload without server-side encryption by KMS answers the MD5 as its
    // ETag; anything else (not 32 hex digits) is not comparable and left alone.
    let Some(etag) = resp.headers().get("etag").and_then(|v| v.to_str().ok()) else {
        return Ok(());
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

fn read_text(
    resp: ureq::http::Response<ureq::Body>,
    op: &'static str,
    key: &str,
) -> Result<String, StoreError> {
    let mut s = String::new();
    resp.into_body()
        .into_with_config()
        .limit(16 << 20)
        .reader()
        .read_to_string(&mut s)
        .map_err(|e| fail(op, key, e.to_string()))?;
    Ok(s)
}

/// Reads until `buf` is full or the file ends.
fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> io::Result<usize> {
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
fn http_date(s: &str) -> Option<SystemTime> {
    let z = jiff::fmt::rfc2822::parse(s).ok()?;
    Some(SystemTime::from(z.timestamp()))
}

/// `LastModified` in a listing (ISO 8601, `2026-12-05T19:40:00.000Z`).
fn iso_time(s: &str) -> Option<SystemTime> {
    s.parse::<jiff::Timestamp>().ok().map(SystemTime::from)
}

/// The HTTP agent: TLS with the system's roots and `ca_file`, no status as error, bounded
/// waits (a part of [`PART_SIZE`] must go through in 2 minutes).
fn agent(ca_file: Option<&std::path::Path>) -> Result<ureq::Agent, StoreError> {
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
        .max_idle_connections_per_host(32)
        .user_agent("pecd")
        .build();
    Ok(ureq::Agent::new_with_config(config))
}
