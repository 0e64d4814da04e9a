//! JMAP over HTTP: the session resource (RFC 8620 §2), the API endpoint (§3.1), upload
//! (§6.1), download (§6.2), EventSource push (§7.3) and the PEC capability's evidence
//! download. The HTTP details (auth, CSRF, headers) are [`crate::http`]'s; this file turns
//! requests into calls on [`Jmap`] and results into responses.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use serde_json::json;

use super::methods::{self, Ctx};
use super::{CAP_CORE, CAP_MAIL, CAP_PEC, CAP_QUOTA, CAP_SUBMISSION, Jmap, account_id, request};
use crate::http::response::{self, Body};
use crate::pec::address::PecAddress;

/// How often a push stream checks that its login still holds.
const REVOKED_CHECK: Duration = Duration::from_secs(2);

impl Jmap {
    fn user(&self, user: &str) -> Option<PecAddress> {
        PecAddress::parse(user).ok()
    }

    /// The mailbox of `user` and its view, when `account` is that user's account; else
    /// the 404 (another user's account is indistinguishable from none) or the 500.
    async fn account_view(
        &self,
        user: &str,
        account: &str,
    ) -> Result<(PecAddress, Arc<super::account::View>), Response<Body>> {
        let (u, scope) = self
            .user(user)
            .zip(super::scope_of(user, account))
            .ok_or_else(|| {
                response::problem(StatusCode::NOT_FOUND, "about:blank", "no such account")
            })?;
        match self.view_in(&u, scope).await {
            Ok(v) => Ok((u, v)),
            Err(e) => {
                tracing::error!(error = %e, "JMAP: building the account view");
                Err(response::problem(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "about:blank",
                    "the store could not be read",
                ))
            }
        }
    }

    /// The session state: changes when the account's state does.
    pub fn session_state(&self, user: &str) -> String {
        self.state_string(self.current_state(user))
    }

    /// The mail capability of an account (RFC 8621 §1.3.1); `writable`: the mailbox's own.
    fn mail_capability(&self, writable: bool) -> serde_json::Value {
        json!({
            "maxMailboxesPerEmail": null,
            "maxMailboxDepth": 10,
            "maxSizeMailboxName": 200,
            "maxSizeAttachmentsPerEmail": self.gw.config.limits.max_message_bytes,
            "emailQuerySortOptions": ["receivedAt", "sentAt", "size", "subject", "from", "to"],
            "mayCreateTopLevelMailbox": writable,
        })
    }

    pub fn session_response(self: &Arc<Self>, user: &str) -> Response<Body> {
        let l = &self.limits;
        let acc = account_id(user);
        let session = json!({
            "capabilities": {
                CAP_CORE: {
                    "maxSizeUpload": l.max_size_upload,
                    "maxConcurrentUpload": l.max_concurrent_upload,
                    "maxSizeRequest": l.max_size_request,
                    "maxConcurrentRequests": l.max_concurrent_requests,
                    "maxCallsInRequest": l.max_calls_in_request,
                    "maxObjectsInGet": l.max_objects_in_get,
                    "maxObjectsInSet": l.max_objects_in_set,
                    "collationAlgorithms": ["i;unicode-casemap"],
                },
                CAP_MAIL: {},
                CAP_SUBMISSION: {},
                CAP_QUOTA: {},
                CAP_PEC: {
                    "evidenceUrl": "/jmap/evidence/{accountId}/{emailId}",
                    "receiptForms": ["completa", "breve", "sintetica"],
                },
            },
            "accounts": {
                acc.clone(): {
                    "name": user,
                    "isPersonal": true,
                    "isReadOnly": false,
                    "accountCapabilities": {
                        CAP_MAIL: self.mail_capability(true),
                        CAP_SUBMISSION: {
                            "maxDelayedSend": 0,
                            "submissionExtensions": {},
                        },
                        CAP_QUOTA: {},
                        CAP_PEC: {
                            "maxRecipients": self.gw.config.limits.max_recipients,
                            "maxMessageBytes": self.gw.config.limits.max_message_bytes,
                        },
                    },
                },
                // The security archive: read and searched like mail, never changed.
                super::archive_account_id(user): {
                    "name": format!("Archivio di sicurezza — {user}"),
                    "isPersonal": true,
                    "isReadOnly": true,
                    "accountCapabilities": {
                        CAP_MAIL: self.mail_capability(false),
                        CAP_QUOTA: {},
                        CAP_PEC: {},
                    },
                },
            },
            "primaryAccounts": {
                CAP_MAIL: acc.clone(),
                CAP_SUBMISSION: acc.clone(),
                CAP_QUOTA: acc.clone(),
                CAP_PEC: acc.clone(),
            },
            "username": user,
            "apiUrl": "/jmap/api",
            "downloadUrl": "/jmap/download/{accountId}/{blobId}/{name}?type={type}",
            "uploadUrl": "/jmap/upload/{accountId}/",
            "eventSourceUrl": "/jmap/eventsource?types={types}&closeafter={closeafter}&ping={ping}",
            "state": self.session_state(user),
        });
        if let Some(u) = self.user(user) {
            crate::imap::exec::ensure_special_folders(&self.gw.store, &u);
        }
        response::json(StatusCode::OK, &session)
    }

    pub async fn api_response(self: &Arc<Self>, user: &str, body: Incoming) -> Response<Body> {
        let Some(_slot) = self.enter(user) else {
            return response::problem(
                StatusCode::TOO_MANY_REQUESTS,
                "urn:ietf:params:jmap:error:limit",
                "maxConcurrentRequests reached",
            );
        };
        // The body's memory comes out of the global budget (its announced length, or the
        // whole limit when it does not say), and is given back when the request is done.
        let max = self.limits.max_size_request;
        let announced = hyper::body::Body::size_hint(&body)
            .upper()
            .map(|n| n as usize);
        let want = announced.unwrap_or(max).min(max + 1);
        let Ok(_budget) = self
            .body_budget
            .clone()
            .try_acquire_many_owned(want.div_ceil(1024).max(1) as u32)
        else {
            return response::problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "urn:ietf:params:jmap:error:limit",
                "the server is busy with other large requests: retry shortly",
            );
        };
        let body = match crate::http::body::read_limited(body, max).await {
            Ok(b) => b,
            Err(crate::http::body::BodyError::TooLarge(_)) => {
                return response::problem(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "urn:ietf:params:jmap:error:limit",
                    format!("maxSizeRequest is {} bytes", self.limits.max_size_request),
                );
            }
            Err(e) => {
                return response::problem(StatusCode::BAD_REQUEST, "about:blank", e.to_string());
            }
        };
        let req = match request::parse(&body, &self.limits) {
            Ok(r) => r,
            Err(e) => {
                let mut v = json!({"type": e.urn(), "status": 400, "detail": e.to_string()});
                if let request::RequestError::Limit { limit, .. } = &e {
                    v["limit"] = json!(limit);
                }
                let mut r = response::json(StatusCode::BAD_REQUEST, &v);
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/problem+json"),
                );
                return r;
            }
        };
        let Some(u) = self.user(user) else {
            return response::problem(StatusCode::FORBIDDEN, "about:blank", "not a mailbox");
        };
        let view = match self.view(&u).await {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "JMAP: building the account view");
                return response::problem(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "about:blank",
                    "the store could not be read",
                );
            }
        };
        let (j, rt) = (self.clone(), tokio::runtime::Handle::current());
        let out = tokio::task::spawn_blocking(move || {
            let mut ctx = Ctx {
                jmap: &j,
                account_id: account_id(&u.to_string()),
                user: u,
                view,
                using: req.using.clone(),
                created: Default::default(),
                rt,
            };
            methods::run(&mut ctx, req)
        })
        .await;
        match out {
            Ok(v) => response::json(StatusCode::OK, &v),
            Err(e) => {
                tracing::error!(error = %e, "JMAP request panicked");
                response::problem(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "about:blank",
                    "internal error",
                )
            }
        }
    }

    pub async fn upload_response(
        self: &Arc<Self>,
        user: &str,
        account: &str,
        content_type: &str,
        body: Incoming,
    ) -> Response<Body> {
        if account != account_id(user) {
            return response::problem(StatusCode::NOT_FOUND, "about:blank", "no such account");
        }
        let Some(_slot) = self.enter_upload(user) else {
            return response::problem(
                StatusCode::TOO_MANY_REQUESTS,
                "urn:ietf:params:jmap:error:limit",
                "maxConcurrentUpload reached",
            );
        };
        // Streamed to a blob file as it arrives: an upload never sits in memory.
        let blob = match self.stream_to_blob(body).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        let size = blob.size;
        self.remember_upload(user, blob.id.as_str());
        response::json(
            StatusCode::CREATED,
            &json!({
                "accountId": account,
                "blobId": format!("B{}", blob.id.as_str()),
                "type": content_type,
                "size": size,
            }),
        )
    }

    /// Writes a request body to a new blob, refusing it past `maxSizeUpload`.
    async fn stream_to_blob(
        &self,
        mut body: Incoming,
    ) -> Result<crate::store::Blob, Response<Body>> {
        use std::io::Write;
        let fail = |e: &dyn std::fmt::Display| {
            tracing::error!(error = %e, "JMAP upload");
            response::problem(
                StatusCode::INSUFFICIENT_STORAGE,
                "about:blank",
                "could not store the upload",
            )
        };
        let mut w = self.gw.store.blobs().writer().map_err(|e| fail(&e))?;
        let mut size = 0usize;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                w.abort();
                return Err(response::problem(
                    StatusCode::BAD_REQUEST,
                    "about:blank",
                    "the upload was cut off",
                ));
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            size += data.len();
            if size > self.limits.max_size_upload {
                w.abort();
                return Err(response::problem(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "urn:ietf:params:jmap:error:limit",
                    format!("maxSizeUpload is {} bytes", self.limits.max_size_upload),
                ));
            }
            // File writes off the executor; the writer goes there and back.
            let r = self
                .gw
                .blocking(move || w.write_all(&data).map(|()| w))
                .await;
            w = match r {
                Ok(w) => w,
                Err(e) => return Err(fail(&e)),
            };
        }
        self.gw
            .blocking(move || w.finish())
            .await
            .map_err(|e| fail(&e))
    }

    pub async fn download_response(
        self: &Arc<Self>,
        user: &str,
        account: &str,
        blob: &str,
        name: &str,
        ty: Option<&str>,
    ) -> Response<Body> {
        let (_, view) = match self.account_view(user, account).await {
            Ok(x) => x,
            Err(r) => return r,
        };
        let Some((base, _)) = super::email::split_blob_id(blob) else {
            return response::not_found();
        };
        if !view.holds_blob(base.as_str()) && !self.uploaded(user, base.as_str()) {
            return response::not_found();
        }
        let (store, id) = (self.gw.store.clone(), blob.to_string());
        let bytes = match self
            .gw
            .blocking(move || super::email::resolve_blob(&store, &id))
            .await
        {
            Ok(b) => b,
            Err(_) => return response::not_found(),
        };
        // Only inert types are labelled as asked; the rest is an octet stream. Everything
        // is an attachment, so nothing downloaded is rendered in this origin.
        let ty = ty.filter(|t| {
            t.len() < 100
                && t.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"/.+-".contains(&c))
        });
        let mut r = response::bytes(
            StatusCode::OK,
            ty.unwrap_or("application/octet-stream"),
            bytes,
        );
        response::attachment(&mut r, name);
        response::no_store(&mut r);
        r
    }

    /// `GET eventSourceUrl` (RFC 8620 §7.3): a `state` event whenever the account's state
    /// advances (within a second of the commit: the store publishes after the flush), a
    /// `ping` every `ping` seconds if asked (bounded to 30..=300 as §7.3 allows). The
    /// stream ends within [`REVOKED_CHECK`] of a change of the mailbox's credentials
    /// (password, card removed, mailbox deleted), as every other session does.
    pub fn eventsource_response(
        self: &Arc<Self>,
        user: &str,
        types: &str,
        close_after_state: bool,
        ping: u64,
    ) -> Response<Body> {
        let _ = types;
        let (mut tx, body) =
            http_body_util::channel::Channel::<Bytes, std::convert::Infallible>::new(4);
        let mut rx = self.changed.subscribe();
        let (j, user) = (self.clone(), user.to_string());
        let ping = if ping == 0 {
            None
        } else {
            Some(Duration::from_secs(ping.clamp(30, 300)))
        };
        // The caller was authenticated just now, against the current credentials.
        let epoch = self.gw.credentials.current(&user);
        tokio::spawn(async move {
            let acc = account_id(&user);
            // The archive's read-only account shares the mailbox's state.
            let archive = super::archive_account_id(&user);
            let mut revoked_check = tokio::time::interval(REVOKED_CHECK);
            let event = |j: &Jmap| {
                let s = j.state_string(j.current_state(&user));
                let data = json!({
                    "@type": "StateChange",
                    "changed": {
                        acc.clone(): {
                            "Email": s, "Mailbox": s, "Thread": s, "EmailSubmission": s, "Quota": s,
                        },
                        archive.clone(): {"Email": s, "Mailbox": s, "Thread": s},
                    },
                });
                Bytes::from(format!("event: state\ndata: {data}\n\n"))
            };
            // The current state first, so a client knows where it starts.
            if tx.send_data(event(&j)).await.is_err() {
                return;
            }
            loop {
                let tick = async {
                    match ping {
                        Some(p) => tokio::time::sleep(p).await,
                        None => std::future::pending::<()>().await,
                    }
                };
                tokio::select! {
                    r = rx.changed() => {
                        if r.is_err() { return; }
                        let mine = rx.borrow_and_update().0 == user;
                        if !mine { continue; }
                        if tx.send_data(event(&j)).await.is_err() { return; }
                        if close_after_state { return; }
                    }
                    _ = revoked_check.tick() => {
                        if j.gw.credentials.current(&user) != epoch {
                            return;
                        }
                    }
                    _ = tick => {
                        let data = json!({"@type": "Ping", "interval": ping.map_or(0, |p| p.as_secs())});
                        if tx.send_data(Bytes::from(format!("event: ping\ndata: {data}\n\n"))).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        let mut r = Response::new(BodyExt::boxed(body.map_frame(|f: Frame<Bytes>| f)));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        r.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache, no-store"),
        );
        r
    }

    /// `GET /jmap/evidence/{accountId}/{emailId}`: the evidence bundle of the PEC message
    /// an Email belongs to, limited to what concerns this mailbox.
    pub async fn evidence_response(
        self: &Arc<Self>,
        user: &str,
        account: &str,
        email: &str,
    ) -> Response<Body> {
        let (u, view) = match self.account_view(user, account).await {
            Ok(x) => x,
            Err(r) => return r,
        };
        let Some(e) = view.email(email) else {
            return response::not_found();
        };
        let Some(ident) = e.summary.pec.identificativo.clone() else {
            return response::problem(
                StatusCode::NOT_FOUND,
                "about:blank",
                "not a PEC message: there is no evidence bundle",
            );
        };
        let store = self.gw.store.clone();
        let scope = crate::evidence::Scope::Mailbox(u);
        let built = self
            .gw
            .blocking(move || crate::evidence::build(&store, &ident, &scope))
            .await;
        match built {
            Ok(b) => {
                let mut r = response::bytes(StatusCode::OK, "application/zip", b.zip);
                response::attachment(&mut r, &b.file_name);
                response::no_store(&mut r);
                r
            }
            Err(crate::evidence::EvidenceError::NotFound(_)) => response::problem(
                StatusCode::NOT_FOUND,
                "about:blank",
                "the trace log has no record of this message for your mailbox",
            ),
            Err(crate::evidence::EvidenceError::BadIdentificativo(_)) => response::problem(
                StatusCode::BAD_REQUEST,
                "about:blank",
                "this message carries no valid identificativo",
            ),
            Err(e) => {
                tracing::error!(error = %e, "evidence bundle");
                response::problem(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "about:blank",
                    "the evidence bundle could not be made",
                )
            }
        }
    }
}
