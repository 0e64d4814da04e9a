//! `[blobs]` with `backend = "s3"`: where the bucket is and the key to it. The secret is
//! kept out of every `Debug` output.

use std::path::PathBuf;

/// The access key of the bucket. The secret never appears in `Debug` output, logs or
/// errors.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Credentials {
    pub access_key_id: String,
    pub(super) secret_access_key: String,
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
