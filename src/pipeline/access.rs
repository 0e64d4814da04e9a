//! The access point (*punto di accesso*, digest §6.1): where a user's message becomes a
//! certified one.
//!
//! For each message submitted over an authenticated TLS session it runs the formal checks
//! ([`super::checks`]); a refused message gets the signed non-acceptance notice in the
//! sender's INBOX and a 5xx naming the reason. An accepted one gets its PEC identifier, the
//! signed transport envelope and the signed acceptance receipt; then **one durable commit**
//! stores the acceptance in the sender's INBOX, queues the envelope for every recipient
//! domain (ours included: local recipients take the same incoming → delivery path, without
//! a network hop), arms the 12 h / 24 h deadlines of every certified recipient and writes
//! the trace records. Only then does SMTP answer 250 (rule: accepted means durable; the
//! acceptance receipt is the answer to the act of sending).
//!
//! Signing and blob files run on the blocking pool, never on the executor.
//!
//! Logins (SMTP here, IMAP and POP3 through [`authenticate`]) are limited per client
//! network and per account by the gateway's [`crate::gateway::LoginLimiter`]; every failed
//! login leaves a trace record naming the peer (rules §9). So does every refusal the SMTP
//! session decides by itself (forged MAIL FROM, SIZE, too many RCPT, AUTH missing,
//! over-long lines), up to the gateway's [`crate::gateway::RefusalLimiter`] per client
//! network: past it, one summary record and then log lines only, so that anonymous peers
//! cannot grow the 30-month log without limit.

use std::net::SocketAddr;
use std::sync::Arc;

use jiff::SignedDuration;

use super::checks::{self, Checked, Refusal};
use crate::gateway::{Gateway, RefusalTrace, StageError};
use crate::pec::address::{Domain, PecAddress};
use crate::pec::compose::Certification;
use crate::pec::daticert::{Destinatario, TipoDestinatario, TipoRicevuta};
use crate::pec::envelope;
use crate::pec::ids;
use crate::pec::receipt::{self, Notice};
use crate::pec::time::PecTime;
use crate::smtp::server::{AuthAnswer, Backend, SmtpReply};
use crate::smtp::session::{DialogueRefusal, Envelope};
use crate::store::mailbox::PasswordCheck;
use crate::store::pending::{Awaiting, PendingMessage};
use crate::store::{Batch, Delivery, NewQueueItem, PendingEntry, StoreError};
use crate::trace::{EventKind, TraceEvent};

/// 12 and 24 hours: the timeout notices of rule §6.4.
pub const DEADLINE_12H: SignedDuration = SignedDuration::from_hours(12);
pub const DEADLINE_24H: SignedDuration = SignedDuration::from_hours(24);

/// The SMTP backend of the submission listeners (465, 587).
#[derive(Debug, Clone)]
pub struct AccessPoint(pub Arc<Gateway>);

impl Backend for AccessPoint {
    async fn authenticate(
        &self,
        username: String,
        password: String,
        peer: SocketAddr,
    ) -> AuthAnswer {
        match authenticate(&self.0, username, password, peer, "smtp").await {
            LoginCheck::Granted(u) => AuthAnswer::Granted(u),
            LoginCheck::Failed => AuthAnswer::Invalid,
            // RFC 4954 §6: 454 4.7.0, a temporary authentication failure.
            LoginCheck::Unavailable => AuthAnswer::Refused(SmtpReply::new(
                454,
                "4.7.0",
                "Temporary authentication failure, try again later",
            )),
            LoginCheck::MustChangePassword { notice, .. } => {
                AuthAnswer::Refused(SmtpReply::new(535, "5.7.8", notice))
            }
        }
    }

    async fn authenticate_card(
        &self,
        chain: Vec<openssl::x509::X509>,
        authzid: Option<String>,
        peer: SocketAddr,
    ) -> AuthAnswer {
        match super::card_login::authenticate_card(&self.0, chain, authzid, peer, "smtp").await {
            LoginCheck::Granted(u) => AuthAnswer::Granted(u),
            _ => AuthAnswer::Invalid,
        }
    }

    fn credential_epoch(&self, user: &str) -> u64 {
        self.0.credentials.current(user)
    }

    fn auth_refusal(&self, username: &str, peer: SocketAddr) -> Option<SmtpReply> {
        let gw = &self.0;
        let lockout = gw.logins.lockout(peer.ip(), username, gw.clock.now())?;
        Some(SmtpReply::new(
            454,
            "4.7.0",
            format!("Login refused: {lockout}"),
        ))
    }

    async fn refused(&self, refusal: DialogueRefusal, peer: SocketAddr) {
        record_dialogue_refusal(&self.0, &refusal, peer, EventKind::SubmissionRefused).await;
    }

    async fn message(&self, envelope: Envelope, _peer: SocketAddr) -> SmtpReply {
        match submit(&self.0, envelope).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "submission failed before it was accepted");
                let reply = super::storage::temporary_failure(
                    &e,
                    "Temporary failure, message not accepted",
                );
                crate::ops::metrics::message("access", reply.code, &reply.enhanced);
                reply
            }
        }
    }
}

/// The outcome of [`authenticate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginCheck {
    /// Logged in as this canonical address.
    Granted(String),
    /// Wrong credentials or a lockout (traced and counted already).
    Failed,
    /// The credentials could not be checked now (the store failed): a temporary failure,
    /// neither counted nor traced as a failed login.
    Unavailable,
    /// The right password, but a provisional one: the mailbox may not be used until its
    /// owner changes it. `notice` says where, for the protocol's answer.
    MustChangePassword { user: String, notice: String },
}

impl LoginCheck {
    /// The address when the login is granted.
    pub fn granted(self) -> Option<String> {
        match self {
            Self::Granted(u) => Some(u),
            _ => None,
        }
    }
}

/// What a user with a provisional password is told, on every protocol.
pub fn password_change_notice(gw: &Gateway) -> String {
    match gw.webmail_url() {
        Some(url) => format!(
            "The password is provisional and must be changed before the mailbox can be used: \
             log in at {url} to change it"
        ),
        None => "The password is provisional and must be changed before the mailbox can be \
                 used: ask the provider"
            .into(),
    }
}

/// Checks a mailbox password (argon2id, off the executor). Failures are traced (also
/// for user names that are not addresses) and counted by the gateway's login limiter;
/// while a lockout applies to this peer and user name the password is not checked at all
/// (the lockout was logged and traced once, when it began). A success makes the peer's
/// address a known one of the account, which others' failures never lock out. The right
/// but provisional password is no failure, and no login either
/// ([`LoginCheck::MustChangePassword`]).
pub async fn authenticate(
    gw: &Arc<Gateway>,
    username: String,
    password: String,
    peer: SocketAddr,
    protocol: &str,
) -> LoginCheck {
    let now = gw.clock.now();
    if gw.logins.lockout(peer.ip(), &username, now).is_some() {
        return LoginCheck::Failed;
    }
    let addr = PecAddress::parse(&username).ok();
    if let Some(a) = &addr {
        match gw.check_password(a.clone(), password).await {
            None => {
                tracing::warn!(%peer, user = %a, protocol, "login not checked: the store is unavailable");
                return LoginCheck::Unavailable;
            }
            Some(PasswordCheck::Valid) => {
                gw.logins.record_success(peer.ip(), &username, now);
                return LoginCheck::Granted(a.to_string());
            }
            Some(PasswordCheck::MustChange) => {
                gw.logins.record_success(peer.ip(), &username, now);
                tracing::info!(%peer, user = %a, protocol, "login with a provisional password: change required");
                return LoginCheck::MustChangePassword {
                    user: a.to_string(),
                    notice: password_change_notice(gw),
                };
            }
            Some(PasswordCheck::Wrong) => {}
        }
    }
    record_login_failure(gw, &username, addr.as_ref(), peer, protocol, None).await;
    LoginCheck::Failed
}

/// Counts a failed login in the lockout (per client network and per `username`) and
/// writes its trace record, with `reason` when there is more to say than "failed".
pub async fn record_login_failure(
    gw: &Arc<Gateway>,
    username: &str,
    addr: Option<&PecAddress>,
    peer: SocketAddr,
    protocol: &str,
    reason: Option<&str>,
) {
    let now = gw.clock.now();
    let started = gw.logins.record_failure(peer.ip(), username, now);
    let mut ev = TraceEvent::new(EventKind::LoginFailed, now);
    let mut detail = format!("{protocol} authentication failed from {}", peer.ip());
    match addr {
        Some(a) => ev = ev.sender(a.to_string()),
        // A reason says what was asked for (a smart card names none).
        None if reason.is_some() => {}
        None => detail.push_str(&format!(
            " for the user name {:?}, which is not an address",
            printable(username)
        )),
    }
    if let Some(r) = reason {
        let r: String = r.chars().take(300).flat_map(char::escape_debug).collect();
        detail.push_str(&format!(": {r}"));
    }
    // A lockout displays the user name escaped ({:?}), so it is safe to log as is.
    for lockout in &started {
        crate::ops::metrics::lockout();
        tracing::warn!(%peer, user = %printable(username), %lockout, "login lockout begins");
        detail.push_str(&format!("; {lockout}"));
    }
    if let Err(e) = gw
        .store
        .commit_async(Batch::new().trace(ev.detail(detail)))
        .await
    {
        tracing::warn!(error = %e, "could not record a failed login");
    }
}

/// Untrusted text for a log line: at most 100 characters, control characters escaped.
fn printable(s: &str) -> String {
    s.chars().take(100).flat_map(char::escape_debug).collect()
}

/// Writes the trace record of a refusal the SMTP session decided by itself. No notice
/// goes to anyone (the message never reached the access point); the record names the
/// peer, the authenticated user (as `sender`, when there is one), the reverse-path the
/// client gave and the reply. Past the gateway's per-network limit the first refusal is
/// traced as a summary ("further refusals from ... not traced until ...") and the rest
/// are only logged.
///
/// `kind` is [`EventKind::SubmissionRefused`] at the access point and
/// [`EventKind::IncomingRefused`] at the incoming point.
pub async fn record_dialogue_refusal(
    gw: &Arc<Gateway>,
    r: &DialogueRefusal,
    peer: SocketAddr,
    kind: EventKind,
) {
    crate::ops::metrics::message(
        if kind == EventKind::IncomingRefused {
            "incoming"
        } else {
            "access"
        },
        r.code,
        r.enhanced,
    );
    let now = gw.clock.now();
    let summary = match gw.refusals.admit(peer.ip(), now) {
        RefusalTrace::Trace => None,
        RefusalTrace::Summarize { net, until } => {
            let until = until.round(jiff::Unit::Second).unwrap_or(until);
            tracing::warn!(%peer, %net, %until, "too many SMTP refusals: no longer traced");
            Some(format!(
                "too many SMTP refusals from {net}: further refusals from it are not \
                 traced (only logged) until {until}; this one"
            ))
        }
        RefusalTrace::Suppress => {
            tracing::info!(
                %peer,
                user = ?r.user,
                code = r.code,
                reason = %printable(&r.reason),
                "SMTP refusal (not traced: too many from this network)"
            );
            return;
        }
    };
    let mut detail = format!(
        "refused in the SMTP dialogue (no message accepted, no notice sent) from {}: {} {} {}",
        peer.ip(),
        r.code,
        r.enhanced,
        printable(&r.reason)
    );
    if let Some(m) = &r.mail_from {
        detail.push_str(&format!("; MAIL FROM <{}>", printable(m)));
    }
    if let Some(s) = summary {
        detail = format!("{s}: {detail}");
    }
    let mut ev = TraceEvent::new(kind, now).detail(detail);
    if let Some(u) = &r.user {
        ev = ev.sender(u.clone());
    }
    tracing::info!(%peer, user = ?r.user, code = r.code, reason = %r.reason, "SMTP refusal");
    if let Err(e) = gw.store.commit_async(Batch::new().trace(ev)).await {
        tracing::warn!(error = %e, "could not record an SMTP refusal");
    }
}

fn certification(gw: &Gateway, checked: &Checked, identificativo: String) -> Certification {
    Certification {
        mittente: checked.sender.to_string(),
        destinatari: checked
            .recipients
            .iter()
            .map(|r| Destinatario {
                address: r.to_string(),
                tipo: gw.classify_recipient(r),
            })
            .collect(),
        risposte: checked.risposte.clone(),
        oggetto: checked.subject.clone(),
        identificativo,
        msgid: checked.client_msgid.clone(),
        ricevuta: checked.ricevuta,
    }
}

/// Processes one submitted message; the reply is 250 only after the durable commit.
pub async fn submit(gw: &Arc<Gateway>, env: Envelope) -> Result<SmtpReply, StoreError> {
    let r = submit_counted(gw, env).await;
    if let Ok(reply) = &r {
        crate::ops::metrics::message("access", reply.code, &reply.enhanced);
    }
    r
}

async fn submit_counted(gw: &Arc<Gateway>, env: Envelope) -> Result<SmtpReply, StoreError> {
    if let Some(reply) =
        super::storage::refuse_if_full(gw, env.data.len() as u64, env.rcpt_to.len(), "submission")
    {
        return Ok(reply);
    }
    let now = gw.clock.now();
    let at = PecTime::italian(now);
    let data = Arc::new(env.data);
    let checked = checks::check(&env.mail_from, &env.rcpt_to, &data, &gw.limits);
    let identificativo = ids::new_identificativo(&at, &gw.identity.host);
    match checked {
        Err(refusal) => {
            let span = super::message_span(Some(&identificativo));
            tracing::Instrument::instrument(
                refuse(
                    gw,
                    &env.mail_from,
                    &env.rcpt_to,
                    &data,
                    refusal,
                    identificativo,
                    at,
                ),
                span,
            )
            .await
        }
        Ok(checked) => {
            let span = super::message_span(Some(&identificativo));
            tracing::Instrument::instrument(accept(gw, checked, data, identificativo, at), span)
                .await
        }
    }
}

async fn accept(
    gw: &Arc<Gateway>,
    checked: Checked,
    data: Arc<Vec<u8>>,
    ident: String,
    at: PecTime,
) -> Result<SmtpReply, StoreError> {
    let now = at.timestamp().unwrap_or_else(|| gw.clock.now());
    // RFC 5322 §3.6 requires Date:; as a submission server we may add it (RFC 6409 §8.6):
    // the acceptance time, so what is certified conforms.
    let data = if checked.date_missing {
        let mut dated = Arc::unwrap_or_clone(data);
        dated.splice(..0, format!("Date: {}\r\n", at.rfc5322()).into_bytes());
        Arc::new(dated)
    } else {
        data
    };
    let cert = certification(gw, &checked, ident.clone());
    // Antivirus (rule §6.1 item 3): infected → non-acceptance for virus and quarantine;
    // no verdict → 4xx, never passed unscanned.
    match super::virus::check(gw, &data).await {
        Ok(None) => {}
        Ok(Some(virus)) => return refuse_virus(gw, &checked, cert, data, virus, at).await,
        Err(reply) => return Ok(reply),
    }
    // The envelope and the acceptance receipt are signed side by side, off the executor,
    // each written as a blob in the same trip (both durable before the commit refers to
    // them). The original's hash for the trace is taken there first (50 MB are not hashed
    // on an async worker); then the original is handed over to become the envelope's
    // postacert.eml in place (a 50 MB message is not held twice). Once written, the
    // envelope is handed to the relay ([`Gateway::recent`]) if small; a large one's buffer
    // is dropped, and the relay reads it from the store after the commit.
    let c = cert.clone();
    let env = gw.sign_and_stage(move |g| {
        let data_sha256 = crate::trace::sha256_hex(&data);
        let original = Arc::unwrap_or_clone(data);
        envelope::transport(&g.identity, &g.signer, &c, original, at)
            .map(|e| (data_sha256, e.message))
    });
    let c = cert.clone();
    let acc = gw.sign_and_stage_message(move |g| {
        receipt::build(&g.identity, &g.signer, &c, Notice::Accettazione, at)
    });
    let ((data_sha256, transport, env_blob), (acceptance, acc_blob)) = match tokio::join!(env, acc)
    {
        (Ok(e), Ok(a)) => (e, a),
        (Err(StageError::Store(e)), _) | (_, Err(StageError::Store(e))) => return Err(e),
        (Err(StageError::Sign(e)), _) | (_, Err(StageError::Sign(e))) => {
            tracing::error!(error = %e, "signing failed");
            return Ok(SmtpReply::new(
                451,
                "4.3.0",
                "Temporary failure while signing, message not accepted",
            ));
        }
    };
    gw.recent.keep(&env_blob, Arc::new(transport.bytes));
    let acc_bytes = Arc::new(acceptance.bytes);
    // A blob's id is the SHA-256 of its exact bytes.
    let (env_sha256, acc_sha256) = (
        env_blob.id.as_str().to_string(),
        acc_blob.id.as_str().to_string(),
    );

    let bare_msgid = checked
        .client_msgid
        .as_deref()
        .map(|m| ids::bare(m).to_string());
    let base = |kind| {
        let mut e = TraceEvent::new(kind, now)
            .ident(ident.clone())
            .sender(checked.sender.to_string())
            .subject(checked.subject.clone());
        if let Some(m) = &bare_msgid {
            e = e.msgid(m.clone());
        }
        e.recipients = checked.recipients.iter().map(ToString::to_string).collect();
        e
    };
    let mut accepted = base(EventKind::SubmissionAccepted)
        .detail("formal checks passed; acceptance receipt issued");
    accepted.sha256 = Some(data_sha256);
    accepted.related = vec![acceptance.message_id.clone(), ident.clone()];
    let mut created = base(EventKind::EnvelopeCreated);
    created.sha256 = Some(env_sha256);
    // The receipt's own hash (the blob id is the SHA-256 of its exact bytes).
    let mut receipt_sent = base(EventKind::AcceptanceSent);
    receipt_sent.sha256 = Some(acc_sha256);
    receipt_sent.related = vec![acceptance.message_id.clone()];

    let mut sender_copy =
        Delivery::inbox(checked.sender.clone(), acc_blob, now).filtered(&acc_bytes);
    // The receipt is the sender's evidence: it is stored even past the quota.
    sender_copy.enforce_quota = false;
    let mut batch = Batch::new()
        .deliver(sender_copy)
        .archive_sent(checked.sender.clone(), env_blob.clone(), now)
        .trace(accepted)
        .trace(receipt_sent)
        .trace(created);

    // One queue item per recipient domain: the transaction the next hop sees.
    let mut by_domain: Vec<(Domain, Vec<String>)> = Vec::new();
    for r in &checked.recipients {
        match by_domain.iter_mut().find(|(d, _)| d == r.domain()) {
            Some((_, v)) => v.push(r.to_string()),
            None => by_domain.push((r.domain().clone(), vec![r.to_string()])),
        }
    }
    for (domain, rcpts) in by_domain {
        batch = batch.enqueue(NewQueueItem {
            domain,
            mail_from: checked.sender.to_string(),
            rcpt_to: rcpts,
            blob: env_blob.clone(),
            ident: Some(ident.clone()),
            next_attempt: now,
        });
    }
    // What the 12 h / 24 h notices' daticert repeats (all recipients, the Reply-To), once
    // per message; each entry below counts itself in.
    if checked
        .recipients
        .iter()
        .any(|r| gw.classify_recipient(r) == TipoDestinatario::Certificato)
    {
        batch = batch.pending_message(
            ident.clone(),
            PendingMessage {
                destinatari: cert.destinatari.clone(),
                risposte: cert.risposte.clone(),
                open: 0,
            },
        );
    }
    for r in &checked.recipients {
        if gw.classify_recipient(r) == TipoDestinatario::Certificato {
            batch = batch.pending_put(PendingEntry {
                ident: ident.clone(),
                recipient: r.to_string(),
                awaiting: Awaiting::TakeCharge,
                sender: checked.sender.to_string(),
                msgid: bare_msgid.clone(),
                subject: Some(checked.subject.clone()),
                sent_at: now,
                deadline_12h: now.checked_add(DEADLINE_12H).unwrap_or(now),
                deadline_24h: now.checked_add(DEADLINE_24H).unwrap_or(now),
                notice_12h_sent: false,
            });
        }
    }
    gw.store.commit_async(batch).await?;
    gw.work.notify_waiters();
    tracing::info!(%ident, sender = %checked.sender, recipients = checked.recipients.len(), "message accepted");
    Ok(SmtpReply::new(
        250,
        "2.0.0",
        format!("Accepted, identificativo {ident}"),
    ))
}

async fn refuse(
    gw: &Arc<Gateway>,
    mail_from: &str,
    rcpt_to: &[String],
    data: &[u8],
    refusal: Refusal,
    ident: String,
    at: PecTime,
) -> Result<SmtpReply, StoreError> {
    let now = at.timestamp().unwrap_or_else(|| gw.clock.now());
    let reply = SmtpReply::new(
        refusal.code,
        refusal.enhanced,
        format!("Message not accepted: {}", refusal.reason),
    )
    .with_motivo(refusal.motivo.clone());
    // The session only lets the authenticated mailbox be the reverse-path, so the notice
    // goes to a mailbox of ours.
    let Ok(sender) = PecAddress::parse(mail_from) else {
        return Ok(reply);
    };
    let crlf = crate::pec::mime::to_crlf(data);
    let (headers, _) = crate::pec::mime::split_header_body(&crlf);
    let cert = Certification {
        mittente: sender.to_string(),
        destinatari: rcpt_to
            .iter()
            .filter_map(|r| PecAddress::parse(r).ok())
            .map(|r| Destinatario {
                address: r.to_string(),
                tipo: gw.classify_recipient(&r),
            })
            .collect(),
        risposte: sender.to_string(),
        oggetto: envelope::decoded_subject(headers),
        identificativo: ident.clone(),
        msgid: crate::pec::mime::header_value(headers, "message-id").map(|m| ids::bracketed(&m)),
        ricevuta: TipoRicevuta::Completa,
    };
    if cert.destinatari.is_empty() {
        return Ok(reply);
    }
    let (c, reason) = (cert.clone(), refusal.reason.clone());
    let notice = gw
        .sign_and_stage_message(move |g| {
            receipt::build(
                &g.identity,
                &g.signer,
                &c,
                Notice::NonAccettazione { reason: &reason },
                at,
            )
        })
        .await;
    let (notice, blob) = match notice {
        Ok(n) => n,
        Err(StageError::Store(e)) => return Err(e),
        Err(StageError::Sign(e)) => {
            tracing::error!(error = %e, "signing the non-acceptance notice failed");
            return Ok(reply);
        }
    };
    let notice_bytes = Arc::new(notice.bytes);
    let mut notice_sent = TraceEvent::new(EventKind::NonAcceptanceSent, now)
        .ident(ident.clone())
        .sender(sender.to_string());
    notice_sent.sha256 = Some(blob.id.as_str().to_string());
    notice_sent.related = vec![notice.message_id.clone()];
    let mut d = Delivery::inbox(sender.clone(), blob, now).filtered(&notice_bytes);
    d.enforce_quota = false;
    let mut ev = TraceEvent::new(EventKind::SubmissionRefused, now)
        .ident(ident)
        .sender(sender.to_string())
        .subject(cert.oggetto.clone())
        .detail(refusal.reason.clone())
        .message_bytes(data);
    ev.recipients = cert.destinatari.iter().map(|d| d.address.clone()).collect();
    ev.related = vec![notice.message_id.clone()];
    if let Some(m) = &cert.msgid {
        ev = ev.msgid(ids::bare(m).to_string());
    }
    gw.store
        .commit_async(Batch::new().deliver(d).trace(ev).trace(notice_sent))
        .await?;
    tracing::info!(sender = %sender, reason = %refusal.reason, "message not accepted");
    Ok(reply)
}

/// Non-acceptance for virus (#3, §4.4): the notice to the sender, the original into the
/// virus storage, the trace; SMTP refuses with the virus named.
async fn refuse_virus(
    gw: &Arc<Gateway>,
    checked: &Checked,
    cert: Certification,
    data: Arc<Vec<u8>>,
    virus: String,
    at: PecTime,
) -> Result<SmtpReply, StoreError> {
    let now = at.timestamp().unwrap_or_else(|| gw.clock.now());
    let (c, v) = (cert.clone(), virus.clone());
    let notice = gw
        .sign_and_stage_message(move |g| {
            receipt::build(
                &g.identity,
                &g.signer,
                &c,
                Notice::NonAccettazioneVirus { virus: &v },
                at,
            )
        })
        .await;
    let mut batch = Batch::new();
    let mut related = Vec::new();
    match notice {
        Ok((n, blob)) => {
            related.push(n.message_id.clone());
            let bytes = Arc::new(n.bytes);
            let mut d = Delivery::inbox(checked.sender.clone(), blob, now).filtered(&bytes);
            d.enforce_quota = false;
            batch = batch.deliver(d);
        }
        Err(StageError::Store(e)) => return Err(e),
        Err(StageError::Sign(e)) => {
            tracing::error!(error = %e, "signing the virus non-acceptance notice failed")
        }
    }
    batch = super::virus::quarantine(gw, batch, data.clone()).await?;
    let mut ev = TraceEvent::new(EventKind::VirusDetected, now)
        .ident(cert.identificativo.clone())
        .sender(checked.sender.to_string())
        .subject(checked.subject.clone())
        .detail(format!(
            "at the access point: {virus}; message quarantined, not accepted"
        ))
        .message_bytes(&data);
    ev.recipients = checked.recipients.iter().map(ToString::to_string).collect();
    ev.related = related;
    gw.store.commit_async(batch.trace(ev)).await?;
    tracing::warn!(sender = %checked.sender, %virus, "virus at the access point: message not accepted");
    Ok(SmtpReply::new(
        554,
        "5.7.1",
        format!("Message not accepted: virus detected ({virus})"),
    ))
}
