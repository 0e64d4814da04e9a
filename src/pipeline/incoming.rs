//! The incoming point (*punto di ricezione*, digest §6.2, RFC 6109 §3.2) on the `smtp`
//! listener: what other providers and the Internet send us.
//!
//! Every message is classified and its signature verified (off the executor); the signer's
//! certificate is looked up in the provider index (SHA-1 hash, then full certificate,
//! rule §8.3). A receipt or transport envelope validly signed by a provider in the index
//! is written as a staged blob in the same trip to the blocking pool, before the checks
//! below: most are stored as they came. One that a check then refuses leaves an
//! unreferenced file for the blob sweep, and a blob store that fails defers it with a 4xx
//! even where the answer would have needed no write. Then, per the decision table of §6.2:
//!
//! * a correct transport envelope from a provider in the index (daticert in the signed
//!   content, its `tipo` agreeing with `X-Trasporto`, the sender's domain managed by the
//!   signer, §6.2/§8.3, its unsigned outer `Subject`/`From`/`To`/`Cc`/`Date`/`Reply-To`
//!   agreeing with the signed content, [`crate::pec::outer`]): the take-charge receipt to that provider's `mailReceipt`, then
//!   the delivery point (mailbox + delivery receipt or non-delivery notice to the sender),
//!   through [`super::delivery`] — for the forward-paths the daticert lists in
//!   `destinatari` only; the other forward-paths get an anomaly envelope (rule §2 item 4:
//!   the certification covers exactly the forward-paths it was made for);
//! * a correct receipt about a message we accepted (a `SubmissionAccepted` trace record
//!   for its identificativo, same sender, about recipients of it that the signer manages):
//!   delivered unchanged to the one mailbox it is for (the original sender, or our service
//!   mailbox for take-charge and virus notices), and the pending deadlines of the
//!   recipients it covers move on or are resolved;
//! * signed by a provider in the index but not a correct PEC message (including a receipt
//!   we cannot match): wrapped in an anomaly envelope, always delivered (§4.7 case a);
//! * anything else (no signature, invalid, altered, unknown signer, signer certificate
//!   expired at the gateway clock's now, or listed as revoked by a CRL of `[trust]
//!   crl_dir` — [`crate::pec::crl`] —, plain mail): wrapped in an anomaly envelope for
//!   the mailboxes that opted in to non-certified mail (`accept_anomalies`), refused with
//!   550 when none did; scanned for spam first when `[antispam] spamd` is set (spam into
//!   the Junk folder, 451 while spamd gives no verdict).
//!
//! SMTP answers 250 only after every resulting commit is durable; each carries an
//! idempotency key derived from the message bytes (recipient sets sorted, so a replay in
//! another order is the same key), so a peer's retry repeats nothing. An anomaly envelope
//! skips a full mailbox (traced) and reaches the others; only when every target is full is
//! the answer 452 — and never for a certified transaction already taken in charge.

mod anomaly;
mod certified;
mod receipts;
mod trust;
mod virus;

use std::net::SocketAddr;
use std::sync::Arc;

use self::anomaly::{Origin, anomaly};
use self::certified::certified_envelope;
use self::receipts::{receipt_arrived, receipt_target};
use self::trust::{from_is_signer, sender_managed_by};
use self::virus::refuse_if_infected;
use super::delivery::DeliveryError;
use crate::gateway::Gateway;
use crate::pec::classify::Kind;
use crate::pec::mime::split_header_body;
use crate::pec::outer;
use crate::smtp::server::{AuthAnswer, Backend, SmtpReply};
use crate::smtp::session::{DialogueRefusal, Envelope};
use crate::store::{Blob, StoreError};
use crate::trace::EventKind;
use crate::trace::sha256_hex;

/// The SMTP backend of the `smtp` listener (25).
#[derive(Debug, Clone)]
pub struct IncomingPoint(pub Arc<Gateway>);

impl Backend for IncomingPoint {
    async fn authenticate(&self, _u: String, _p: String, _peer: SocketAddr) -> AuthAnswer {
        AuthAnswer::Invalid
    }

    /// Refusals decided in the dialogue are traced too (rate-limited per network).
    async fn refused(&self, refusal: DialogueRefusal, peer: SocketAddr) {
        super::access::record_dialogue_refusal(&self.0, &refusal, peer, EventKind::IncomingRefused)
            .await;
    }

    async fn message(&self, envelope: Envelope, peer: SocketAddr) -> SmtpReply {
        match receive(&self.0, envelope, peer).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(%peer, error = %e, "incoming message deferred");
                let reply =
                    super::storage::temporary_failure(&e, "Temporary failure, try again later");
                crate::ops::metrics::message("incoming", reply.code, &reply.enhanced);
                reply
            }
        }
    }
}

/// A short key for a *set* of recipients, for idempotency keys: trimmed, lowercased,
/// sorted and deduplicated first, so a peer replaying a transaction with its RCPTs in
/// another order (or repeated) hits the same key.
fn rcpts_key(rcpts: &[String]) -> String {
    let mut set: Vec<String> = rcpts
        .iter()
        .map(|r| r.trim().to_ascii_lowercase())
        .collect();
    set.sort();
    set.dedup();
    let joined = set.join(",");
    let h = sha256_hex(joined.as_bytes());
    h.get(..16).unwrap_or(&h).to_string()
}

/// The verdict on `data` ([`trust::verdict`]) and, for a provider's receipt or transport
/// envelope (stored as it came, unless a later check refuses it), `data` written as a
/// staged blob: one trip to the blocking pool for both. A message refused after this
/// leaves an unreferenced file for the blob sweep; only providers in the index, signing
/// validly, get this far.
async fn verify_and_stage(
    gw: &Arc<Gateway>,
    data: &Arc<Vec<u8>>,
) -> Result<(trust::Verdict, Option<Blob>), StoreError> {
    let (g, d) = (gw.clone(), data.clone());
    let now = gw.clock.now();
    gw.blocking(move || {
        let verdict = trust::verdict(&g, &d, now);
        let as_is = verdict.from_provider()
            && verdict
                .classified
                .as_ref()
                .is_some_and(|c| matches!(c.kind, Kind::TransportEnvelope | Kind::Receipt(_)));
        let staged = match as_is {
            true => Some(g.store.blobs().put_staged(&d)?),
            false => None,
        };
        Ok((verdict, staged))
    })
    .await
}

/// Processes one message received on the incoming point.
pub async fn receive(
    gw: &Arc<Gateway>,
    env: Envelope,
    peer: SocketAddr,
) -> Result<SmtpReply, DeliveryError> {
    let span = super::message_span(None);
    let r = tracing::Instrument::instrument(receive_counted(gw, env, peer), span).await;
    if let Ok(reply) = &r {
        crate::ops::metrics::message("incoming", reply.code, &reply.enhanced);
    }
    r
}

async fn receive_counted(
    gw: &Arc<Gateway>,
    env: Envelope,
    peer: SocketAddr,
) -> Result<SmtpReply, DeliveryError> {
    if let Some(reply) = super::storage::refuse_if_full(
        gw,
        env.data.len() as u64,
        env.rcpt_to.len(),
        "incoming message",
    ) {
        return Ok(reply);
    }
    let data = Arc::new(env.data);
    let (mut verdict, staged) = verify_and_stage(gw, &data).await?;
    if let Some(Ok(d)) = verdict
        .classified
        .as_ref()
        .and_then(|c| c.daticert.as_ref())
    {
        tracing::Span::current().record("identificativo", d.identificativo.as_str());
    }
    let digest = std::mem::take(&mut verdict.digest);
    let rcpts = env.rcpt_to;

    if let (true, Some(record)) = (verdict.from_provider(), verdict.record.clone()) {
        let mut envelope = None;
        let reason = match verdict.classified.as_ref().map(|c| (c, c.certified())) {
            None => "messaggio non analizzabile".to_string(),
            Some((_, Err(e))) => e.to_string(),
            Some((c, Ok(_))) if let Err(why) = from_is_signer(c, &verdict.check) => why,
            Some((c, Ok(d))) => match c.kind {
                Kind::TransportEnvelope => match sender_managed_by(d, &record).and_then(|()| {
                    let (outer, _) = split_header_body(&data);
                    outer::check(outer, d, c.postacert.as_deref().unwrap_or_default())
                }) {
                    Err(why) => why,
                    // Handled below, once the original can be moved out of the verdict
                    // (a 50 MB original is not copied for it).
                    Ok(()) => {
                        envelope = Some(d.clone());
                        String::new()
                    }
                },
                Kind::Receipt(_) => match receipt_target(gw, d, &record, &rcpts)? {
                    Err(why) => why,
                    Ok(target) => {
                        let staged = staged.clone();
                        receipt_arrived(gw, d, &record, (&data, staged), &digest, &target).await?;
                        return Ok(SmtpReply::new(250, "2.0.0", "Receipt delivered"));
                    }
                },
                // `certified` only succeeds for envelopes and receipts.
                _ => "messaggio PEC di tipo inatteso".to_string(),
            },
        };
        if let Some(d) = envelope {
            let postacert = verdict
                .classified
                .as_mut()
                .and_then(|c| c.postacert.take())
                .unwrap_or_default();
            return certified_envelope(
                gw,
                &d,
                (&data, staged),
                postacert,
                &digest,
                &env.mail_from,
                &rcpts,
                &record,
                peer,
            )
            .await;
        }
        if let Some(reply) = refuse_if_infected(gw, &data, &env.mail_from).await? {
            return Ok(reply);
        }
        // A provider's valid signature on something that is not correct PEC (§4.7 a).
        let reason = format!(
            "messaggio firmato da {} non conforme alle regole PEC: {reason}",
            record.name
        );
        tracing::warn!(%peer, provider = %record.name, %reason, "not correct PEC from a provider");
        return anomaly(
            gw,
            &data,
            &digest,
            &env.mail_from,
            &rcpts,
            &reason,
            Origin::Provider,
        )
        .await;
    }
    if let Some(reply) = refuse_if_infected(gw, &data, &env.mail_from).await? {
        return Ok(reply);
    }
    let reason = verdict.untrusted_reason();
    anomaly(
        gw,
        &data,
        &digest,
        &env.mail_from,
        &rcpts,
        &reason,
        Origin::Untrusted,
    )
    .await
}
