//! Multipart uploads of bodies over [`PART_SIZE`]: one part in memory at a time, each
//! checked by `Content-MD5`, the result parsed (its ETag must be of these parts), aborted
//! on any failure.

use std::io::Read;

use super::wire::{fail, read_full, read_text, refused};

/// Where the parts of an upload come from.
pub(super) enum Parts<'a> {
    /// A body in memory, sent slice by slice.
    Slice(&'a [u8]),
    /// A body read part by part into one buffer.
    Reader(&'a mut dyn Read),
}
use super::{BlobId, PART_SIZE, S3Action, S3Blobs, SIGN_TTL, StoreError};

impl S3Blobs {
    /// A multipart upload of what `body` yields, in parts of [`PART_SIZE`] (one part in
    /// memory at a time), aborted on failure.
    pub(super) fn upload_parts(&self, mut body: Parts<'_>, id: &BlobId) -> Result<(), StoreError> {
        let key = self.key(id);
        let url = self
            .bucket
            .create_multipart_upload(Some(&self.credentials), &key)
            .sign(SIGN_TTL);
        let resp = self.call("create multipart upload", &key, false, || {
            self.agent.post(url.as_str()).send_empty()
        })?;
        if !resp.status().is_success() {
            return Err(refused("create multipart upload", &key, resp));
        }
        let text = read_text(resp, "create multipart upload", &key, 64 << 10)?;
        let created = rusty_s3::actions::CreateMultipartUpload::parse_response(&text)
            .map_err(|e| fail("create multipart upload", &key, e.to_string()))?;
        let upload_id = created.upload_id().to_string();
        let parts = (|| {
            let mut etags = Vec::new();
            let mut buf = Vec::new();
            let mut offset = 0;
            for number in 1u16.. {
                // From memory, a part is a slice of the body: no copy.
                let part: &[u8] = match &mut body {
                    Parts::Slice(all) => {
                        let end = (offset + PART_SIZE).min(all.len());
                        let part = &all[offset..end];
                        offset = end;
                        part
                    }
                    Parts::Reader(r) => {
                        buf.resize(PART_SIZE, 0);
                        let n = read_full(*r, &mut buf).map_err(|e| {
                            fail("upload part", &key, format!("reading the body: {e}"))
                        })?;
                        &buf[..n]
                    }
                };
                if part.is_empty() {
                    break;
                }
                let url = self
                    .bucket
                    .upload_part(Some(&self.credentials), &key, number, &upload_id)
                    .sign(SIGN_TTL);
                let (resp, _) = self.put_checked("upload part", &key, url.as_str(), part)?;
                let etag = resp
                    .headers()
                    .get("etag")
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| fail("upload part", &key, "no ETag in the answer"))?
                    .to_string();
                etags.push(etag);
                if part.len() < PART_SIZE {
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
            let xml = action.body();
            let resp = self.call("complete multipart upload", &key, false, || {
                self.agent.post(url.as_str()).send(xml.as_str())
            })?;
            if !resp.status().is_success() {
                return Err(refused("complete multipart upload", &key, resp));
            }
            // S3 may answer 200 with an error in the body: only a parsed result with the
            // multipart ETag of these parts counts.
            let text = read_text(resp, "complete multipart upload", &key, 64 << 10)?;
            let done = rusty_s3::actions::CompleteMultipartUploadResponse::parse(&text)
                .map_err(|_| fail("complete multipart upload", &key, "no result in the answer"))?;
            if !done
                .etag()
                .trim_matches('"')
                .ends_with(&format!("-{}", etags.len()))
            {
                return Err(fail(
                    "complete multipart upload",
                    &key,
                    "the answered ETag is not of these parts",
                ));
            }
            Ok(())
        })();
        if parts.is_err() {
            let url = self
                .bucket
                .abort_multipart_upload(Some(&self.credentials), &key, &upload_id)
                .sign(SIGN_TTL);
            let _ = self.call("abort multipart upload", &key, true, || {
                self.agent.delete(url.as_str()).call()
            });
        }
        parts
    }
}
