//! `[blobs]`: where message bodies are kept ([`crate::store::blobs`]), and the object
//! store's credentials. Those are read here, once, from `credentials_file` or from the
//! environment, and never written anywhere (the secret is redacted from `Debug`). The
//! credentials file is distrusted like the rest of the configuration: a problem names
//! the file and the key, never the secret.

use std::path::Path;

use toml::Table;

use super::walk::{Problems, Section, optional_file_key};
use crate::store::BlobBackend;
use crate::store::blobs::s3::{S3Credentials, S3Settings};

/// The environment variables read when `credentials_file` is absent, in order of
/// preference: pecd's own, then the AWS tools' usual ones.
pub const ENV_KEYS: [(&str, &str); 2] = [
    ("PECD_S3_ACCESS_KEY_ID", "PECD_S3_SECRET_ACCESS_KEY"),
    ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
];

pub(super) fn blobs(
    root: &mut Table,
    base: &Path,
    errs: &mut Problems,
    absent: &mut Vec<String>,
) -> BlobBackend {
    let mut sec = Section::take(root, "blobs", errs);
    let backend = sec.string("backend", errs).unwrap_or_else(|| "dir".into());
    let out = match backend.as_str() {
        "dir" => BlobBackend::Dir,
        "s3" => s3(&mut sec, base, errs).map_or(BlobBackend::Dir, BlobBackend::S3),
        other => {
            errs.push(
                "blobs.backend",
                format!("unknown backend {other:?} (known: \"dir\", \"s3\")"),
            );
            BlobBackend::Dir
        }
    };
    // Only `backend` is part of the documented file; the S3 keys are commented out there.
    sec.absent.retain(|k| k == "blobs.backend");
    sec.finish(errs, absent);
    out
}

fn s3(sec: &mut Section, base: &Path, errs: &mut Problems) -> Option<S3Settings> {
    let endpoint = sec.required_string("endpoint", errs);
    if let Some(e) = &endpoint
        && !(e.starts_with("https://") || e.starts_with("http://"))
    {
        errs.push("blobs.endpoint", "expected an http:// or https:// URL");
    }
    let bucket = sec.required_string("bucket", errs);
    let region = sec
        .string("region", errs)
        .unwrap_or_else(|| "us-east-1".into());
    let path_style = sec.bool("path_style", true, errs);
    let prefix = sec.string("prefix", errs).unwrap_or_default();
    if prefix.starts_with('/') || prefix.contains("..") {
        errs.push(
            "blobs.prefix",
            "must not start with / nor contain .. (a key prefix such as \"pecd/\")",
        );
    }
    let ca_file = optional_file_key(sec, "ca_file", base, errs);
    let credentials = match optional_file_key(sec, "credentials_file", base, errs) {
        Some(path) => credentials_file(&path, errs),
        None if sec.absent.iter().any(|k| k == "blobs.credentials_file") => from_env(errs),
        // Named but unreadable: the problem is pushed already.
        None => None,
    };
    Some(S3Settings {
        endpoint: endpoint?,
        bucket: bucket?,
        region,
        path_style,
        prefix,
        credentials: credentials?,
        ca_file,
    })
}

/// `credentials_file`: a TOML file with `access_key_id` and `secret_access_key`.
fn credentials_file(path: &Path, errs: &mut Problems) -> Option<S3Credentials> {
    let key = "blobs.credentials_file";
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            errs.push(key, format!("{}: {e}", path.display()));
            return None;
        }
    };
    let table: Table = match toml::from_str(&text) {
        Ok(t) => t,
        Err(_) => {
            // toml's message quotes the offending line, which may hold the secret.
            errs.push(
                key,
                format!(
                    "{} is not TOML with access_key_id and secret_access_key",
                    path.display()
                ),
            );
            return None;
        }
    };
    let get = |k: &str| table.get(k).and_then(|v| v.as_str()).map(str::to_string);
    match (get("access_key_id"), get("secret_access_key")) {
        (Some(id), Some(secret)) if !id.is_empty() && !secret.is_empty() => {
            if let Some(extra) = table
                .keys()
                .find(|k| *k != "access_key_id" && *k != "secret_access_key")
            {
                errs.push(
                    key,
                    format!(
                        "{}: unknown key {extra:?} (known: access_key_id, secret_access_key)",
                        path.display()
                    ),
                );
                return None;
            }
            Some(S3Credentials::new(id, secret))
        }
        _ => {
            errs.push(
                key,
                format!(
                    "{} must set access_key_id and secret_access_key (non-empty strings)",
                    path.display()
                ),
            );
            None
        }
    }
}

fn from_env(errs: &mut Problems) -> Option<S3Credentials> {
    for (id, secret) in ENV_KEYS {
        if let (Ok(id), Ok(secret)) = (std::env::var(id), std::env::var(secret))
            && !id.is_empty()
            && !secret.is_empty()
        {
            return Some(S3Credentials::new(id, secret));
        }
    }
    errs.push(
        "blobs.credentials_file",
        "the S3 backend needs credentials: set credentials_file, or the environment \
         variables PECD_S3_ACCESS_KEY_ID and PECD_S3_SECRET_ACCESS_KEY (or AWS_ACCESS_KEY_ID \
         and AWS_SECRET_ACCESS_KEY)",
    );
    None
}
