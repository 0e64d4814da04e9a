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
//! look (a `HEAD` for the age, the references again). Uploads and deletes of one id in this
//! process exclude each other ([`Guard`]): a sweep never deletes an id being uploaded, and
//! an upload waits for a delete in progress, so a `put` that returned has its object in
//! place and young. One bucket + prefix belongs to one store: a marker object
//! `{prefix}.pecd-store` names the store that claimed it, and another store is refused at
//! open (its sweep would delete what the first refers to).
//!
//! Distrusted: everything the object store answers. Keys it lists that are not
//! `{prefix}` + 64 lower-case hex digits are ignored, never deleted; a body read back must
//! hash to its id (else an error, never the bytes) and is bounded by [`MAX_OBJECT_BYTES`];
//! an upload counts only with its `ETag` (and the multipart one parsed); redirects are not
//! followed and no proxy is used; error bodies are read to at most 4 KiB and only their
//! `<Code>` is kept; signed URLs (they carry a signature) never reach an error message
//! (and `ureq`'s own logging, which would print them, is capped at `warn` in `main`).

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Seek};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine;
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

use super::dir::io_err;
use super::{Blob, BlobId, BlobReader, Spool, StoreError, SweepStats};

mod multipart;
mod settings;
mod wire;

pub use settings::{S3Credentials, S3Settings};
use wire::{
    Checked, agent, check_etag, fail, http_date, iso_time, md5, read_text, refused, transport,
};

/// How long a signed request stays valid.
pub const SIGN_TTL: Duration = Duration::from_secs(300);
/// Bodies up to this size go in one `PUT`; larger ones in parts of this size.
pub const PART_SIZE: usize = 8 << 20;
/// Objects listed per request.
const LIST_PAGE: usize = 1000;
/// No blob is larger (a body over it read back is refused, not buffered).
pub const MAX_OBJECT_BYTES: u64 = 1 << 30;
/// The marker object claiming a bucket + prefix for one store.
const MARKER: &str = ".pecd-store";

/// The open bucket.
pub struct S3Blobs {
    bucket: Bucket,
    credentials: Credentials,
    prefix: String,
    agent: ureq::Agent,
    /// Where streamed writes are spooled before their upload.
    spool_dir: PathBuf,
    /// Uploads and deletes in progress, by id (see the module doc).
    guard: Mutex<Guard>,
    guard_changed: Condvar,
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

impl S3Blobs {
    /// Connects to the bucket (a `HEAD` on it, so that a wrong endpoint, bucket or key
    /// is reported at start), claims `prefix` for the store `owner` (`None`: only look,
    /// claim nothing) and prepares the spool directory `root/tmp`.
    pub fn open(root: PathBuf, s: &S3Settings, owner: Option<&str>) -> Result<Self, StoreError> {
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
            guard: Mutex::new(Guard::default()),
            guard_changed: Condvar::new(),
            sweeping: Mutex::new(()),
        };
        blobs.probe()?;
        if let Some(owner) = owner {
            blobs.claim(owner)?;
        }
        if s.endpoint.starts_with("http://")
            && !blobs.bucket.base_url().host_str().is_some_and(|h| {
                h == "localhost"
                    || h.parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            })
        {
            tracing::warn!(
                bucket = s.bucket.as_str(),
                "the object store is reached over plain http: bodies and signed requests cross the network in clear"
            );
        }
        Ok(blobs)
    }

    /// Claims the prefix for `owner`, or refuses if another store holds it.
    fn claim(&self, owner: &str) -> Result<(), StoreError> {
        let key = format!("{}{MARKER}", self.prefix);
        let url = self
            .bucket
            .get_object(Some(&self.credentials), &key)
            .sign(SIGN_TTL);
        let resp = self.call("claim", &key, true, || self.agent.get(url.as_str()).call())?;
        match resp.status().as_u16() {
            200 => {
                let found = read_text(resp, "claim", &key, 4096)?;
                if found.trim() == owner {
                    return Ok(());
                }
                Err(fail(
                    "claim",
                    &key,
                    format!(
                        "bucket {} prefix {:?} holds the bodies of another pecd store ({}), not of this one ({owner}): give each store a prefix of its own",
                        self.bucket.name(),
                        self.prefix,
                        found
                            .trim()
                            .chars()
                            .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                            .take(64)
                            .collect::<String>()
                    ),
                ))
            }
            404 => {
                let url = self
                    .bucket
                    .put_object(Some(&self.credentials), &key)
                    .sign(SIGN_TTL);
                let resp = self.call("claim", &key, true, || {
                    self.agent.put(url.as_str()).send(owner.as_bytes())
                })?;
                if !resp.status().is_success() {
                    return Err(refused("claim", &key, resp));
                }
                Ok(())
            }
            _ => Err(refused("claim", &key, resp)),
        }
    }

    /// A `HEAD` on the bucket: reachable, and the key may use it.
    pub fn probe(&self) -> Result<(), StoreError> {
        let name = self.bucket.name().to_string();
        let url = self
            .bucket
            .head_bucket(Some(&self.credentials))
            .sign(SIGN_TTL);
        let resp = self.call("open bucket", &name, true, || {
            self.agent
                .head(url.as_str())
                .config()
                .timeout_global(Some(Duration::from_secs(5)))
                .build()
                .call()
        })?;
        if !resp.status().is_success() {
            return Err(refused("open bucket", &name, resp));
        }
        Ok(())
    }

    /// Sends the request `send` makes; an `idempotent` one once more if the first attempt
    /// failed in transport (a pooled connection the store closed meanwhile fails only when
    /// used). Idempotent here: `GET`, `HEAD`, `DELETE`, and a `PUT` of the same bytes under
    /// the same name; not the `POST`s of a multipart upload.
    fn call(
        &self,
        op: &'static str,
        key: &str,
        idempotent: bool,
        send: impl Fn() -> Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<ureq::http::Response<ureq::Body>, StoreError> {
        match send() {
            Err(ureq::Error::Io(_) | ureq::Error::ConnectionFailed | ureq::Error::Protocol(_))
                if idempotent =>
            {
                send().map_err(|e| transport(op, key, e))
            }
            other => other.map_err(|e| transport(op, key, e)),
        }
    }

    /// Runs `upload` for `id` once no sweep is deleting it, and marked as uploading so
    /// that no sweep starts deleting it meanwhile.
    fn guarded_upload(
        &self,
        id: &BlobId,
        upload: impl FnOnce() -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        {
            let mut g = self.guard.lock().unwrap_or_else(|p| p.into_inner());
            while g.deleting.contains(id) {
                g = self
                    .guard_changed
                    .wait(g)
                    .unwrap_or_else(|p| p.into_inner());
            }
            *g.uploading.entry(id.clone()).or_insert(0) += 1;
        }
        let result = upload();
        let mut g = self.guard.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = g.uploading.get_mut(id) {
            *n -= 1;
            if *n == 0 {
                g.uploading.remove(id);
            }
        }
        drop(g);
        self.guard_changed.notify_all();
        result
    }

    fn key(&self, id: &BlobId) -> String {
        format!("{}{}", self.prefix, id.as_str())
    }

    pub fn put(&self, bytes: &[u8]) -> Result<Blob, StoreError> {
        let id = BlobId::of(bytes);
        self.guarded_upload(&id, || {
            if bytes.len() <= PART_SIZE {
                self.upload_bytes(&id, bytes)
            } else {
                self.upload_parts(multipart::Parts::Slice(bytes), &id)
            }
        })?;
        Ok(Blob {
            id,
            size: bytes.len() as u64,
        })
    }

    /// One `PUT` of the whole body, checked with `Content-MD5` and the answered `ETag`.
    fn upload_bytes(&self, id: &BlobId, bytes: &[u8]) -> Result<(), StoreError> {
        let key = self.key(id);
        let url = self
            .bucket
            .put_object(Some(&self.credentials), &key)
            .sign(SIGN_TTL);
        let (resp, digest) = self.put_checked("put", &key, url.as_str(), bytes)?;
        check_etag(&resp, &digest, &key)
    }

    /// `PUT` of `body` to the signed `url` with its `Content-MD5` (the store refuses a body
    /// that does not match); the successful answer and the MD5.
    fn put_checked(
        &self,
        op: &'static str,
        key: &str,
        url: &str,
        body: &[u8],
    ) -> Result<(ureq::http::Response<ureq::Body>, Vec<u8>), StoreError> {
        let digest = md5(body)?;
        let content_md5 = base64::engine::general_purpose::STANDARD.encode(&digest);
        let resp = self.call(op, key, true, || {
            self.agent
                .put(url)
                .header("Content-MD5", content_md5.as_str())
                .send(body)
        })?;
        if !resp.status().is_success() {
            return Err(refused(op, key, resp));
        }
        Ok((resp, digest))
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
        let result = self.guarded_upload(id, || {
            file.rewind().map_err(io_err(tmp))?;
            if size <= PART_SIZE as u64 {
                let mut bytes = Vec::with_capacity(size as usize);
                file.read_to_end(&mut bytes).map_err(io_err(tmp))?;
                self.upload_bytes(id, &bytes)
            } else {
                let mut reader = io::BufReader::new(&mut file);
                self.upload_parts(multipart::Parts::Reader(&mut reader), id)
            }
        });
        let _ = std::fs::remove_file(tmp);
        result
    }

    fn get(&self, id: &BlobId) -> Result<ureq::Body, StoreError> {
        let key = self.key(id);
        let url = self
            .bucket
            .get_object(Some(&self.credentials), &key)
            .sign(SIGN_TTL);
        let resp = self.call("get", &key, true, || self.agent.get(url.as_str()).call())?;
        match resp.status().as_u16() {
            200 => Ok(resp.into_body()),
            404 => Err(StoreError::BlobMissing(id.clone())),
            _ => Err(refused("get", &key, resp)),
        }
    }

    /// The body of `id`, checked: it must hash to `id` (at its end) and stay within
    /// [`MAX_OBJECT_BYTES`].
    fn checked_reader(&self, id: &BlobId) -> Result<Checked, StoreError> {
        let body = self.get(id)?;
        Ok(Checked {
            inner: body.into_with_config().limit(MAX_OBJECT_BYTES).reader(),
            hasher: openssl::sha::Sha256::new(),
            id: id.clone(),
            key: self.key(id),
            done: false,
        })
    }

    pub fn read(&self, id: &BlobId) -> Result<Vec<u8>, StoreError> {
        let attempt = || -> Result<Vec<u8>, StoreError> {
            let mut v = Vec::new();
            self.checked_reader(id)?
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
        Ok(Box::new(self.checked_reader(id)?))
    }

    /// The object's last modification, `None` when it does not exist.
    fn head(&self, id: &BlobId) -> Result<Option<SystemTime>, StoreError> {
        let key = self.key(id);
        let url = self
            .bucket
            .head_object(Some(&self.credentials), &key)
            .sign(SIGN_TTL);
        let resp = self.call("head", &key, true, || self.agent.head(url.as_str()).call())?;
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

    /// Every blob with its last modification, one page at a time to `each`.
    fn for_each_page(
        &self,
        mut each: impl FnMut(Vec<(BlobId, Option<SystemTime>)>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut token: Option<String> = None;
        let mut seen_tokens = HashSet::new();
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
            let resp = self.call("list", &self.prefix, true, || {
                self.agent.get(url.as_str()).call()
            })?;
            if !resp.status().is_success() {
                return Err(refused("list", &self.prefix, resp));
            }
            let body = read_text(resp, "list", &self.prefix, 16 << 20)?;
            let page = rusty_s3::actions::ListObjectsV2::parse_response(&body)
                .map_err(|e| fail("list", &self.prefix, e.to_string()))?;
            let mut items = Vec::with_capacity(page.contents.len());
            for o in page.contents {
                let Some(name) = o.key.strip_prefix(self.prefix.as_str()) else {
                    continue;
                };
                if let Ok(id) = BlobId::parse(name) {
                    items.push((id, o.last_modified.as_deref().and_then(iso_time)));
                }
            }
            each(items)?;
            match page.next_continuation_token {
                Some(t) if !t.is_empty() => {
                    if !seen_tokens.insert(t.clone()) {
                        return Err(fail("list", &self.prefix, "the listing repeats itself"));
                    }
                    token = Some(t);
                }
                _ => return Ok(()),
            }
        }
    }

    pub fn list(&self) -> Result<Vec<BlobId>, StoreError> {
        let mut out = Vec::new();
        self.for_each_page(|page| {
            out.extend(page.into_iter().map(|(id, _)| id));
            Ok(())
        })?;
        Ok(out)
    }

    fn delete(&self, id: &BlobId) -> Result<(), StoreError> {
        let key = self.key(id);
        let url = self
            .bucket
            .delete_object(Some(&self.credentials), &key)
            .sign(SIGN_TTL);
        let resp = self.call("delete", &key, true, || {
            self.agent.delete(url.as_str()).call()
        })?;
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
        self.for_each_page(|page| {
            for (id, modified) in page {
                if !old(modified) || referenced(&id)? {
                    stats.kept += 1;
                    continue;
                }
                {
                    let mut g = self.guard.lock().unwrap_or_else(|p| p.into_inner());
                    if g.uploading.contains_key(&id) {
                        // Being uploaded again: young in a moment, and about to be used.
                        stats.kept += 1;
                        continue;
                    }
                    g.deleting.insert(id.clone());
                }
                // The second look; no upload of this id can start until we are done.
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
                self.guard
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .deleting
                    .remove(&id);
                self.guard_changed.notify_all();
                match outcome? {
                    Some(true) => stats.removed += 1,
                    Some(false) => stats.kept += 1,
                    None => {}
                }
            }
            Ok(())
        })?;
        stats.removed_tmp = super::sweep_spool(&self.spool_dir, grace, now)?;
        Ok(stats)
    }
}

/// Uploads and deletes in progress in this process, by blob id.
#[derive(Debug, Default)]
struct Guard {
    /// How many uploads of each id are under way.
    uploading: HashMap<BlobId, usize>,
    /// Ids a sweep is deleting.
    deleting: HashSet<BlobId>,
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
