//! The incoming and delivery points for recipients of our own domains (digest §6.2, §6.3,
//! RFC 6109 §3.4: same-domain traffic takes the full path, only without a network hop).
//!
//! A worker takes the queued envelopes addressed to our domains. For each transaction it
//! acts as the incoming point — verifies the envelope's signature and signer, issues the
//! signed take-charge receipt to the sending provider's service mailbox (ours) — and then as
//! the delivery point: stores the envelope in each recipient's INBOX and, in the **same
//! commit**, the signed delivery receipt (completa, breve or sintetica per the §4.10 table)
//! in the sender's INBOX; or the non-delivery notice when the mailbox does not exist or is
//! full.
//!
//! Exactly once: every step carries an idempotency key in its commit
//! (`takecharge:<id>:<queue item>`, `deliver:<id>:<recipient>`), so a crash and a retry
//! never store a message twice nor issue a second receipt.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

use crate::gateway::{Gateway, StageError};
use crate::pec::address::PecAddress;
use crate::pec::classify::{Kind, classify_shared};
use crate::pec::compose::{BuiltMessage, Certification};
use crate::pec::daticert::{Errore, Tipo};
use crate::pec::mime;
use crate::pec::receipt::{self, Notice, delivery_form};
use crate::pec::smime::{self, SmimeError};
use crate::pec::time::PecTime;
use crate::store::{Batch, Blob, Delivery, Lane, NewQueueItem, QueueItem, StoreError};
use crate::trace::{EventKind, TraceEvent};

/// Why a queued transaction could not be processed now (it is retried).
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("signing: {0}")]
    Sign(#[from] SmimeError),
    #[error("the queued envelope is not valid PEC: {0}")]
    Invalid(String),
}

impl From<StageError> for DeliveryError {
    fn from(e: StageError) -> Self {
        match e {
            StageError::Sign(e) => DeliveryError::Sign(e),
            StageError::Store(e) => DeliveryError::Store(e),
        }
    }
}

/// Runs the local worker until `shutdown` turns true; then it finishes the local work
/// already due (a local hop takes milliseconds) and returns. Whatever remains is durable
/// in the queue and resumes at the next start.
pub async fn run(gw: Arc<Gateway>, mut shutdown: watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow() {
            pass(&gw).await;
            return;
        }
        let notified = gw.work.notified();
        if pass(&gw).await {
            continue;
        }
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Processes the local items due now; true when there were any.
pub async fn pass(gw: &Arc<Gateway>) -> bool {
    {
        let now = gw.clock.now();
        // Only the local lane: remote retries piling up for a peer that is down never
        // hide local work (store::queue).
        let mine: Vec<QueueItem> = match gw.store.queue_due_in(Lane::Local, now, 64) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "reading the queue");
                Vec::new()
            }
        };
        let busy = !mine.is_empty();
        let mine = super::lease_due(gw, mine, now).await;
        // Several at once: each waits mostly for its signatures and its commit, and
        // concurrent commits share the committer's fsync (group commit). Every step is
        // idempotent and applied atomically by the committer, so the order does not matter.
        let mut set = tokio::task::JoinSet::new();
        for item in mine {
            while set.len() >= LOCAL_PARALLEL {
                let _ = set.join_next().await;
            }
            set.spawn(one(gw.clone(), item, now));
        }
        while set.join_next().await.is_some() {}
        busy
    }
}

/// Local transactions processed at once.
pub const LOCAL_PARALLEL: usize = 8;

/// One local transaction; a failure is rescheduled or given up ([`after_failure`]).
async fn one(gw: Arc<Gateway>, item: QueueItem, now: jiff::Timestamp) {
    let span = super::message_span(item.ident.as_deref());
    let processed = tracing::Instrument::instrument(process(&gw, &item), span.clone());
    if let Err(e) = processed.await {
        let batch = span.in_scope(|| after_failure(&item, &e, now));
        if let Err(e) = gw.store.commit_async(batch).await {
            span.in_scope(
                || tracing::error!(error = %e, "could not reschedule queue item {}", item.id),
            );
        }
    }
}

/// What a failed local transaction becomes, as on the remote lane ([`super::relay`]): an
/// envelope that does not verify will never do so, and is given up at once; a store or
/// signing failure is retried with the same backoff (1 min doubling to 1 h), and given up
/// 24 h after acceptance (rule §6.2). Giving up leaves the recipients' pending deadlines in
/// place, so the sender gets the 12 h / 24 h notices (§6.4), and is traced (`RelayFailed`).
fn after_failure(item: &QueueItem, e: &DeliveryError, now: jiff::Timestamp) -> Batch {
    let deadline = super::relay::accepted_at(item)
        .checked_add(super::relay::GIVE_UP_AFTER)
        .unwrap_or(now);
    let give_up = match e {
        DeliveryError::Invalid(_) => Some("not valid PEC, not delivered"),
        _ if now >= deadline => Some("given up after 24 hours"),
        _ => None,
    };
    match give_up {
        Some(what) => {
            tracing::error!(queue_item = item.id, error = %e, "local delivery: {what}");
            let mut ev = TraceEvent::new(EventKind::RelayFailed, now)
                .sender(item.mail_from.clone())
                .detail(format!("local delivery {what}: {e}"));
            for r in &item.rcpt_to {
                ev = ev.recipient(r.clone());
            }
            if let Some(id) = &item.ident {
                ev = ev.ident(id.clone());
            }
            Batch::new().queue_fence(item).queue_done(item.id).trace(ev)
        }
        None => {
            tracing::warn!(queue_item = item.id, error = %e, "local delivery deferred");
            let next = now
                .checked_add(super::relay::backoff(item.attempts))
                .unwrap_or(now)
                .min(deadline);
            Batch::new()
                .queue_fence(item)
                .queue_retry(item.id, next, e.to_string())
        }
    }
}

/// Builds and signs a receipt on the blocking pool and writes it as a staged blob there
/// ([`Gateway::sign_and_stage`]). `make` receives owned data and builds the borrowed
/// [`Notice`] there, so nothing outlives the call.
async fn sign_and_stage<T: Send + 'static>(
    gw: &Arc<Gateway>,
    cert: &Certification,
    owned: T,
    make: fn(&T) -> Notice<'_>,
    at: PecTime,
) -> Result<(BuiltMessage, Blob), DeliveryError> {
    let c = cert.clone();
    Ok(gw
        .sign_and_stage_message(move |g| {
            receipt::build(&g.identity, &g.signer, &c, make(&owned), at)
        })
        .await?)
}

/// One queued transaction for our own domain.
pub async fn process(gw: &Arc<Gateway>, item: &QueueItem) -> Result<(), DeliveryError> {
    let bytes = gw.read_blob(item.blob.clone()).await?;
    // Incoming point: signature valid, signer ours (the only provider trusted for a local
    // hop), a transport envelope with its daticert.
    let (g, b) = (gw.clone(), bytes.clone());
    let check = gw
        .blocking(move || smime::verify_message(&b, g.trust.as_deref()))
        .await;
    let ours = check.signer.as_ref().is_some_and(|s| {
        gw.signer
            .certificate()
            .digest(openssl::hash::MessageDigest::sha256())
            .map(hex::encode_upper)
            .ok()
            .as_deref()
            == Some(s.sha256.as_str())
    });
    if !check.valid || !ours || check.chain_ok == Some(false) {
        return Err(DeliveryError::Invalid(
            check
                .reason
                .unwrap_or_else(|| "signer is not this provider".into()),
        ));
    }
    let c = classify_shared(&bytes).map_err(|e| DeliveryError::Invalid(e.to_string()))?;
    let daticert = match (&c.kind, c.daticert) {
        (Kind::TransportEnvelope, Some(Ok(d))) if d.tipo == Tipo::PostaCertificata => d,
        _ => return Err(DeliveryError::Invalid("not a transport envelope".into())),
    };
    let cert = Certification::from_daticert(&daticert);
    let postacert = c.postacert.unwrap_or_default();
    let ident = cert.identificativo.clone();

    let tc_key = format!("takecharge:{ident}:{}", item.id);
    let to = gw.config.provider.receipt_mailbox.clone();
    // The queued envelope is in the store, referred to by the queue item until this item
    // is done (below, after the deliveries committed their own references).
    let stored = Blob {
        id: item.blob.clone(),
        size: bytes.len() as u64,
    };
    let envelope = (&bytes, Some(stored));
    take_charge_and_deliver(gw, &cert, envelope, &postacert, &item.rcpt_to, &to, tc_key).await?;
    gw.store
        .commit_async(Batch::new().queue_fence(item).queue_done(item.id))
        .await?;
    tracing::info!(
        recipients = item.rcpt_to.len(),
        "delivered to our mailboxes"
    );
    Ok(())
}

/// Adds to `batch` the hand-over of a receipt or notice we generated to `to`: into the
/// mailbox when the address is ours, else onto the outbound queue (reverse-path: our
/// service address, as every generated message has, digest §13). Receipts and notices are
/// evidence for their addressee: they are stored even past the mailbox quota. For anything
/// else (anomaly envelopes) use [`route_message`].
/// `raw` is the message's bytes (the blob's content): the recipient's rules read them,
/// and the relay takes them from [`Gateway::recent`] when they go out.
pub fn route(
    gw: &Gateway,
    batch: Batch,
    to: &PecAddress,
    (blob, raw): (Blob, &Arc<Vec<u8>>),
    ident: &str,
    now: jiff::Timestamp,
) -> Batch {
    hand_over(gw, batch, to, (blob, raw), ident, now, false)
}

/// As [`route`], for a message that is not a receipt or notice (an anomaly envelope
/// wrapping ordinary mail): the recipient's quota applies, as for a transport envelope,
/// and a full mailbox fails the batch with `QuotaExceeded`. A caller adding several
/// targets to one batch must leave a full one out and commit again (see
/// `incoming::anomaly`), so that one full mailbox does not hold the message back from the
/// others.
pub fn route_message(
    gw: &Gateway,
    batch: Batch,
    to: &PecAddress,
    (blob, raw): (Blob, &Arc<Vec<u8>>),
    ident: &str,
    now: jiff::Timestamp,
) -> Batch {
    hand_over(gw, batch, to, (blob, raw), ident, now, true)
}

fn hand_over(
    gw: &Gateway,
    batch: Batch,
    to: &PecAddress,
    (blob, raw): (Blob, &Arc<Vec<u8>>),
    ident: &str,
    now: jiff::Timestamp,
    enforce_quota: bool,
) -> Batch {
    if gw.is_local(to.domain()) {
        let mut d = Delivery::inbox(to.clone(), blob, now).filtered(raw);
        d.enforce_quota = enforce_quota;
        batch.deliver(d)
    } else {
        // The relay reads it next.
        gw.recent.keep(&blob, raw.clone());
        batch.enqueue(NewQueueItem {
            domain: to.domain().clone(),
            mail_from: gw.config.provider.service_address.to_string(),
            rcpt_to: vec![to.to_string()],
            blob,
            ident: Some(ident.to_string()),
            next_attempt: now,
        })
    }
}

/// The take-charge receipt (*ricevuta di presa in carico*, §4.6) for the recipients of one
/// transaction, to the sending provider's `mailReceipt`; once per `tc_key`.
pub async fn take_charge(
    gw: &Arc<Gateway>,
    cert: &Certification,
    rcpts: &[String],
    take_charge_to: &PecAddress,
    tc_key: String,
) -> Result<(), DeliveryError> {
    let ident = cert.identificativo.clone();
    if gw.store.is_claimed(&tc_key)? {
        return Ok(());
    }
    let now = gw.clock.now();
    let at = PecTime::italian(now);
    let owned = (rcpts.to_vec(), take_charge_to.to_string());
    let (tc, blob) = sign_and_stage(
        gw,
        cert,
        owned,
        |(r, to)| Notice::PresaInCarico { ricezione: r, to },
        at,
    )
    .await?;
    let bytes = Arc::new(tc.bytes);
    let mut ev = event(EventKind::TakeChargeSent, now, cert, rcpts.to_vec());
    ev.related = vec![tc.message_id];
    ev.sha256 = Some(blob.id.as_str().to_string());
    let mut batch = route(
        gw,
        Batch::new().claim(tc_key),
        take_charge_to,
        (blob, &bytes),
        &ident,
        now,
    )
    .trace(ev);
    for r in rcpts {
        batch = batch.pending_taken_in_charge(ident.clone(), r.clone());
    }
    gw.store.commit_async(batch).await?;
    gw.work.notify_waiters();
    Ok(())
}

/// The incoming and delivery points for one verified transport envelope: the take-charge
/// receipt to `take_charge_to` (the sending provider's `mailReceipt`), then each
/// recipient's delivery with its receipt or non-delivery notice to the sender. Each step
/// is committed with its idempotency key; calling it again after a crash finishes what is
/// left and repeats nothing. `stored`: the envelope's blob when it is already written
/// (staged or referred to), else it is written here.
#[allow(clippy::too_many_arguments)]
pub async fn take_charge_and_deliver(
    gw: &Arc<Gateway>,
    cert: &Certification,
    (envelope, stored): (&Arc<Vec<u8>>, Option<Blob>),
    postacert: &Bytes,
    rcpts: &[String],
    take_charge_to: &PecAddress,
    tc_key: String,
) -> Result<(), DeliveryError> {
    let ident = cert.identificativo.clone();
    let sender =
        PecAddress::parse(&cert.mittente).map_err(|e| DeliveryError::Invalid(e.to_string()))?;
    take_charge(gw, cert, rcpts, take_charge_to, tc_key).await?;
    let (orig_headers, _) = mime::split_header_body(postacert);
    let cc_only: Vec<bool> = rcpts.iter().map(|r| only_in_cc(orig_headers, r)).collect();
    for (rcpt, cc) in rcpts.iter().zip(cc_only) {
        let key = format!("deliver:{ident}:{}", rcpt.to_ascii_lowercase());
        if gw.store.is_claimed(&key)? {
            continue;
        }
        let envelope = (envelope, stored.clone());
        deliver_one(gw, cert, envelope, postacert, &sender, rcpt, cc, key).await?;
    }
    gw.work.notify_waiters();
    Ok(())
}

fn event(
    kind: EventKind,
    now: jiff::Timestamp,
    cert: &Certification,
    recipients: Vec<String>,
) -> TraceEvent {
    let mut e = TraceEvent::new(kind, now)
        .ident(cert.identificativo.clone())
        .sender(cert.mittente.clone())
        .subject(cert.oggetto.clone());
    if let Some(m) = &cert.msgid {
        e = e.msgid(crate::pec::ids::bare(m).to_string());
    }
    e.recipients = recipients;
    e
}

/// A recipient listed in `Cc:` and not in `To:` of the original (gets sintetica).
fn only_in_cc(headers: &[u8], rcpt: &str) -> bool {
    let list = |name| {
        mime::header_value(headers, name)
            .map(|v| v.to_ascii_lowercase())
            .unwrap_or_default()
    };
    let r = rcpt.to_ascii_lowercase();
    let contains = |field: &str| {
        field
            .split([',', '<', '>', ' ', ';'])
            .any(|t| t.trim() == r)
    };
    contains(&list("cc")) && !contains(&list("to"))
}

#[allow(clippy::too_many_arguments)]
async fn deliver_one(
    gw: &Arc<Gateway>,
    cert: &Certification,
    (envelope, stored): (&Arc<Vec<u8>>, Option<Blob>),
    postacert: &Bytes,
    sender: &PecAddress,
    rcpt: &str,
    cc_only: bool,
    key: String,
) -> Result<(), DeliveryError> {
    let now = gw.clock.now();
    let at = PecTime::italian(now);
    let form = delivery_form(cert.ricevuta, cc_only);
    let rcpt_addr = PecAddress::parse(rcpt).map_err(|e| DeliveryError::Invalid(e.to_string()))?;
    let owned = (rcpt.to_string(), form, postacert.clone());
    // The envelope, unless already in the store, is written while the receipt is signed
    // and written.
    let (env_blob, (ok, receipt_blob)) = tokio::try_join!(
        async {
            Ok::<_, DeliveryError>(match stored {
                Some(b) => b,
                None => gw.put_blob(envelope.clone()).await?,
            })
        },
        sign_and_stage(
            gw,
            cert,
            owned,
            |(c, f, p)| Notice::AvvenutaConsegna {
                consegna: c,
                form: *f,
                postacert: Some(p),
            },
            at,
        )
    )?;
    let receipt_bytes = Arc::new(ok.bytes);
    let mut delivered = event(EventKind::Delivered, now, cert, vec![rcpt.to_string()]);
    // The envelope's hash is its blob's id (not computed again here, on an async worker,
    // for each recipient of a message of up to 50 MB).
    delivered.sha256 = Some(env_blob.id.as_str().to_string());
    delivered.detail = Some(format!("stored in INBOX; delivery receipt {form}"));
    let mut sent = event(
        EventKind::DeliveryReceiptSent,
        now,
        cert,
        vec![rcpt.to_string()],
    );
    sent.related = vec![ok.message_id];
    sent.sha256 = Some(receipt_blob.id.as_str().to_string());
    let batch = Batch::new()
        .claim(key.clone())
        .deliver(Delivery::inbox(rcpt_addr.clone(), env_blob, now).filtered(envelope));
    let batch = route(
        gw,
        batch,
        sender,
        (receipt_blob, &receipt_bytes),
        &cert.identificativo,
        now,
    )
    .trace(delivered)
    .trace(sent)
    .pending_resolve(cert.identificativo.clone(), rcpt.to_string());
    let failure = match gw.store.commit_async(batch).await {
        Ok(_) => return Ok(()),
        Err(StoreError::AlreadyClaimed(_)) => return Ok(()),
        Err(StoreError::NoSuchMailbox(m))
            if m.eq_ignore_ascii_case(&rcpt_addr.to_string())
                || m.eq_ignore_ascii_case(&rcpt_addr.key()) =>
        {
            (
                Errore::NoDest,
                format!("5.1.1 - {} - casella inesistente: {rcpt}", gw.identity.name),
            )
        }
        Err(StoreError::QuotaExceeded { mailbox, .. })
            if mailbox.eq_ignore_ascii_case(&rcpt_addr.key())
                || mailbox.eq_ignore_ascii_case(rcpt) =>
        {
            (
                Errore::Altro,
                format!("5.2.2 - {} - casella piena: {rcpt}", gw.identity.name),
            )
        }
        Err(e) => return Err(e.into()),
    };
    // Non-delivery notice (#10) to the sender, once.
    let (errore, esteso) = failure;
    let owned = (rcpt.to_string(), errore, esteso.clone());
    let (ko, blob) = sign_and_stage(
        gw,
        cert,
        owned,
        |(c, e, x)| Notice::ErroreConsegna {
            consegna: c,
            errore: *e,
            errore_esteso: x,
        },
        at,
    )
    .await?;
    let bytes = Arc::new(ko.bytes);
    let mut failed = event(EventKind::DeliveryFailed, now, cert, vec![rcpt.to_string()]);
    failed.detail = Some(esteso);
    let mut notice = event(
        EventKind::NonDeliverySent,
        now,
        cert,
        vec![rcpt.to_string()],
    );
    notice.related = vec![ko.message_id];
    notice.sha256 = Some(blob.id.as_str().to_string());
    let batch = route(
        gw,
        Batch::new().claim(key),
        sender,
        (blob, &bytes),
        &cert.identificativo,
        now,
    )
    .trace(failed)
    .trace(notice)
    .pending_resolve(cert.identificativo.clone(), rcpt.to_string());
    match gw.store.commit_async(batch).await {
        Ok(_) | Err(StoreError::AlreadyClaimed(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};
    use crate::store::NewMailbox;
    use crate::store::mailbox::Password;

    #[tokio::test]
    async fn only_receipts_and_notices_skip_the_quota() {
        let dir = tempfile::tempdir().unwrap();
        let domain = crate::pec::address::Domain::parse("pec.alfa.test").unwrap();
        let report = crate::pki::init_dir(dir.path(), &domain, None, false).unwrap();
        let config = crate::config::Config::load(&report.config).unwrap();
        let clock = Arc::new(ManualClock::new("2026-11-23T09:00:00Z".parse().unwrap()));
        let gw = Gateway::open(config, clock.clone()).unwrap();
        let b = PecAddress::parse("b@pec.alfa.test").unwrap();
        gw.store
            .add_mailbox(NewMailbox {
                address: b.clone(),
                password: Password::new("pw"),
                quota_bytes: Some(100),
                options: Default::default(),
                provisional: false,
            })
            .unwrap();
        let raw = Arc::new(vec![b'x'; 500]);
        // Test set-up: a 500-byte blob in a fresh store cannot fail to be written.
        let big = gw.put_blob(raw.clone()).await.unwrap();
        let now = clock.now();
        let anomaly = route_message(&gw, Batch::new(), &b, (big.clone(), &raw), "id", now);
        assert!(matches!(
            gw.store.commit(anomaly),
            Err(StoreError::QuotaExceeded { .. })
        ));
        let notice = route(&gw, Batch::new(), &b, (big, &raw), "id", now);
        gw.store.commit(notice).unwrap();
        assert_eq!(gw.store.messages(&b, "INBOX").unwrap().len(), 1);
    }

    /// A local queue item that is not valid PEC is given up at once and traced, not retried
    /// every minute forever (issue #13 item 7); a temporary failure backs off like the
    /// remote lane and is given up 24 h after acceptance.
    #[tokio::test]
    async fn a_local_item_that_cannot_succeed_is_given_up_and_traced() {
        let dir = tempfile::tempdir().unwrap();
        let domain = crate::pec::address::Domain::parse("pec.alfa.test").unwrap();
        let report = crate::pki::init_dir(dir.path(), &domain, None, false).unwrap();
        let config = crate::config::Config::load(&report.config).unwrap();
        let clock = Arc::new(ManualClock::new("2026-11-23T09:00:00Z".parse().unwrap()));
        let gw = Gateway::open(config, clock.clone()).unwrap();
        let junk = gw
            .put_blob(Arc::new(b"From: x@y.it\r\n\r\nnot PEC\r\n".to_vec()))
            .await
            .unwrap();
        let now = clock.now();
        gw.store
            .commit(Batch::new().enqueue(NewQueueItem {
                domain: domain.clone(),
                mail_from: "a@pec.alfa.test".into(),
                rcpt_to: vec!["b@pec.alfa.test".into()],
                blob: junk,
                ident: Some("opec-x@pec.alfa.test".into()),
                next_attempt: now,
            }))
            .unwrap();
        assert_eq!(gw.store.queue_len().unwrap(), 1);
        assert!(pass(&gw).await);
        assert_eq!(
            gw.store.queue_len().unwrap(),
            0,
            "given up, not rescheduled"
        );
        let failed: Vec<_> = gw
            .store
            .trace()
            .query(&Default::default())
            .unwrap()
            .into_iter()
            .filter(|r| r.kind == EventKind::RelayFailed)
            .collect();
        assert_eq!(failed.len(), 1);
        assert!(
            failed[0]
                .detail
                .as_deref()
                .unwrap()
                .contains("not valid PEC")
        );
        assert_eq!(failed[0].recipients, ["b@pec.alfa.test"]);

        // A temporary failure: the remote lane's backoff, then the 24 h give-up.
        let item = QueueItem {
            id: 7,
            domain,
            mail_from: "a@pec.alfa.test".into(),
            rcpt_to: vec!["b@pec.alfa.test".into()],
            blob: crate::store::blobs::BlobId::parse(&"ab".repeat(32)).unwrap(),
            size: 1,
            ident: None,
            next_attempt: now,
            attempts: 3,
            last_error: None,
            accepted_at: Some(now),
            lane: Lane::Local,
            lease: None,
        };
        let busy = DeliveryError::Sign(SmimeError::BadDer("busy".into()));
        let later = now + jiff::SignedDuration::from_hours(1);
        match &after_failure(&item, &busy, later).ops[..] {
            [crate::store::batch::Op::QueueRetry { next_attempt, .. }] => {
                assert_eq!(*next_attempt, later + super::super::relay::backoff(3))
            }
            other => panic!("{other:?}"),
        }
        let day = now + jiff::SignedDuration::from_hours(24);
        assert!(matches!(
            &after_failure(&item, &busy, day).ops[..],
            [
                crate::store::batch::Op::QueueDone { id: 7 },
                crate::store::batch::Op::Trace(_)
            ]
        ));
    }
}
