//! The incoming point (*punto di ricezione*, digest §6.2, RFC 6109 §3.2) on the `smtp`
//! listener: what other providers and the Internet send us.
//!
//! Every message is classified and its signature verified (off the executor); the signer's
//! certificate is looked up in the provider index (SHA-1 hash, then full certificate,
//! rule §8.3). Then, per the decision table of §6.2:
//!
//! * a correct transport envelope from a provider in the index: the take-charge receipt
//!   to that provider's `mailReceipt`, then the delivery point (mailbox + delivery receipt
//!   or non-delivery notice to the sender), through [`super::delivery`];
//! * a correct receipt about a message we sent (its identificativo is ours, its signer
//!   manages the recipient's domain): delivered unchanged, and the pending deadlines of
//!   the recipients it covers move on or are resolved;
//! * signed by a provider in the index but not a correct PEC message: wrapped in an
//!   anomaly envelope, always delivered (§4.7 case a);
//! * anything else (no signature, invalid, altered, unknown signer, plain mail, a receipt
//!   we cannot match): wrapped in an anomaly envelope for the mailboxes that opted in to
//!   non-certified mail (`accept_anomalies`), refused with 550 when none did.
//!
//! SMTP answers 250 only after every resulting commit is durable; each carries an
//! idempotency key derived from the message bytes, so a peer's retry repeats nothing.

use std::net::SocketAddr;
use std::sync::Arc;

use openssl::x509::X509;

use super::delivery::{self, DeliveryError, route};
use crate::gateway::Gateway;
use crate::pec::address::PecAddress;
use crate::pec::classify::{Classified, Kind, classify};
use crate::pec::compose::Certification;
use crate::pec::daticert::{Daticert, Tipo};
use crate::pec::envelope;
use crate::pec::index::ProviderRecord;
use crate::pec::smime::{self, SignatureCheck};
use crate::pec::time::PecTime;
use crate::smtp::server::{Backend, SmtpReply};
use crate::smtp::session::Envelope;
use crate::store::pending::Awaiting;
use crate::store::{Batch, Delivery, StoreError};
use crate::trace::{EventKind, TraceEvent};

/// The SMTP backend of the `smtp` listener (25).
#[derive(Debug, Clone)]
pub struct IncomingPoint(pub Arc<Gateway>);

impl Backend for IncomingPoint {
    async fn authenticate(&self, _u: String, _p: String, _peer: SocketAddr) -> Option<String> {
        None
    }

    async fn message(&self, envelope: Envelope, peer: SocketAddr) -> SmtpReply {
        match receive(&self.0, envelope, peer).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(%peer, error = %e, "incoming message deferred");
                SmtpReply::new(
                    451,
                    "4.3.0",
                    format!("Temporary failure, try again later: {e}"),
                )
            }
        }
    }
}

/// What the verification found out about the sender of a message.
struct Verdict {
    check: SignatureCheck,
    classified: Option<Classified>,
    record: Option<ProviderRecord>,
    /// The signer certificate is within its validity period now.
    cert_current: bool,
}

impl Verdict {
    /// Signed validly, now, by a certificate the index lists (rule §6.2: existence,
    /// origin, validity). The index pins the exact certificate, so trust does not depend on
    /// `[trust] ca`: the chain verdict is recorded, not required (each dev PKI has its own
    /// CA; in production every provider certificate chains to AgID's CA anyway).
    fn from_provider(&self) -> bool {
        self.check.valid && self.record.is_some() && self.cert_current
    }
}

fn currently_valid(cert: &X509) -> bool {
    let Ok(now) = openssl::asn1::Asn1Time::days_from_now(0) else {
        return false;
    };
    cert.not_before() <= now && cert.not_after() >= now
}

fn sha256_hex(data: &[u8]) -> String {
    openssl::hash::hash(openssl::hash::MessageDigest::sha256(), data)
        .map(hex::encode)
        .unwrap_or_default()
}

/// Processes one message received on the incoming point.
pub async fn receive(
    gw: &Arc<Gateway>,
    env: Envelope,
    peer: SocketAddr,
) -> Result<SmtpReply, DeliveryError> {
    let data = Arc::new(env.data);
    let (g, d) = (gw.clone(), data.clone());
    let verdict = gw
        .blocking(move || {
            let check = smime::verify_message(&d, g.trust.as_deref());
            let cert = check
                .signer
                .as_ref()
                .and_then(|s| X509::from_der(&s.der).ok());
            let record = cert
                .as_ref()
                .and_then(|c| g.index().by_certificate(c).cloned());
            let cert_current = cert.as_ref().is_some_and(currently_valid);
            Verdict {
                check,
                classified: classify(&d).ok(),
                record,
                cert_current,
            }
        })
        .await;
    let digest = sha256_hex(&data);
    let rcpts = env.rcpt_to;

    if let (true, Some(record)) = (verdict.from_provider(), verdict.record.clone()) {
        if let Some(c) = &verdict.classified {
            if let Some(Ok(d)) = &c.daticert {
                match c.kind {
                    Kind::TransportEnvelope
                        if d.tipo == Tipo::PostaCertificata && c.postacert.is_some() =>
                    {
                        let cert = Certification::from_daticert(d);
                        let postacert = Arc::new(c.postacert.clone().unwrap_or_default());
                        let key = format!(
                            "takecharge:{}:{}",
                            cert.identificativo,
                            &sha256_hex(rcpts.join(",").to_ascii_lowercase().as_bytes())[..16]
                        );
                        match super::virus::check(gw, &data).await {
                            Ok(None) => {}
                            Ok(Some(virus)) => {
                                virus_in_envelope(gw, &cert, &data, &rcpts, &record, key, &virus)
                                    .await?;
                                return Ok(SmtpReply::new(
                                    250,
                                    "2.0.0",
                                    "Taken in charge; not delivered: virus detected",
                                ));
                            }
                            Err(reply) => return Ok(reply),
                        }
                        delivery::take_charge_and_deliver(
                            gw,
                            &cert,
                            &data,
                            &postacert,
                            &rcpts,
                            &record.mail_receipt,
                            key,
                        )
                        .await?;
                        tracing::info!(%peer, ident = %cert.identificativo, provider = %record.name, "transport envelope taken in charge");
                        return Ok(SmtpReply::new(
                            250,
                            "2.0.0",
                            format!("Taken in charge: {}", cert.identificativo),
                        ));
                    }
                    Kind::Receipt(t) if t == d.tipo && receipt_is_ours(gw, d, &record) => {
                        receipt_arrived(gw, d, &record, &data, &digest, &rcpts).await?;
                        return Ok(SmtpReply::new(250, "2.0.0", "Receipt delivered"));
                    }
                    _ => {}
                }
            }
        }
        if let Some(reply) = refuse_if_infected(gw, &data, &env.mail_from).await? {
            return Ok(reply);
        }
        // A provider's valid signature on something that is not correct PEC (§4.7 a).
        let reason = format!(
            "messaggio firmato da {} non conforme alle regole PEC",
            record.name
        );
        return anomaly(gw, &data, &digest, &env.mail_from, &rcpts, &reason, true).await;
    }
    if let Some(reply) = refuse_if_infected(gw, &data, &env.mail_from).await? {
        return Ok(reply);
    }
    let reason = if !verdict.check.valid {
        format!(
            "firma assente o non valida ({})",
            verdict.check.reason.clone().unwrap_or_default()
        )
    } else {
        "firma di un soggetto non presente nell'indice dei gestori PEC".to_string()
    };
    anomaly(gw, &data, &digest, &env.mail_from, &rcpts, &reason, false).await
}

/// A receipt is ours when the identificativo was minted here and its signer manages the
/// domain of the recipient it speaks about (a provider cannot certify others' mailboxes).
fn receipt_is_ours(gw: &Gateway, d: &Daticert, record: &ProviderRecord) -> bool {
    let minted_here = d.identificativo.to_ascii_lowercase().ends_with(&format!(
        "@{}",
        gw.config.provider.hostname.to_ascii_lowercase()
    ));
    let about: Vec<&String> = d.consegna.iter().chain(d.ricezione.iter()).collect();
    let signer_responsible = !about.is_empty()
        && about
            .iter()
            .all(|a| PecAddress::parse(a).is_ok_and(|a| record.manages(a.domain())));
    minted_here && signer_responsible
}

async fn receipt_arrived(
    gw: &Arc<Gateway>,
    d: &Daticert,
    record: &ProviderRecord,
    data: &Arc<Vec<u8>>,
    digest: &str,
    rcpts: &[String],
) -> Result<(), DeliveryError> {
    let now = gw.clock.now();
    let blob = gw.put_blob(data.clone()).await?;
    let mut batch = Batch::new().claim(format!("receipt:{digest}"));
    for r in rcpts {
        let Ok(addr) = PecAddress::parse(r) else {
            continue;
        };
        let mut dv = Delivery::inbox(addr, blob.clone(), now);
        dv.enforce_quota = false;
        batch = batch.deliver(dv);
    }
    let kind = if d.tipo == Tipo::PresaInCarico {
        EventKind::TakeChargeReceived
    } else {
        EventKind::DeliveryReceiptReceived
    };
    let mut ev = TraceEvent::new(kind, now)
        .ident(d.identificativo.clone())
        .sender(d.mittente.clone())
        .other_provider(record.name.clone())
        .detail(format!("{} {}", d.tipo, d.errore))
        .message_bytes(data);
    if let Some(m) = &d.msgid {
        ev = ev.msgid(crate::pec::ids::bare(m).to_string());
    }
    ev.recipients = d
        .consegna
        .iter()
        .chain(d.ricezione.iter())
        .cloned()
        .collect();
    batch = batch.trace(ev);
    match d.tipo {
        Tipo::PresaInCarico => {
            for r in &d.ricezione {
                if let Some(mut p) = gw.store.pending(&d.identificativo, r)? {
                    if p.awaiting == Awaiting::TakeCharge {
                        p.awaiting = Awaiting::DeliveryReceipt;
                        batch = batch.pending_put(p);
                    }
                }
            }
        }
        Tipo::AvvenutaConsegna | Tipo::ErroreConsegna | Tipo::RilevazioneVirus => {
            if let Some(c) = &d.consegna {
                if gw.store.pending(&d.identificativo, c)?.is_some() {
                    batch = batch.pending_resolve(d.identificativo.clone(), c.clone());
                }
            }
        }
        _ => {}
    }
    if d.tipo == Tipo::RilevazioneVirus {
        // #8 (§4.9): exactly one virus non-delivery notice to our sender per #7.
        if let (Some(c), Ok(sender)) = (&d.consegna, PecAddress::parse(&d.mittente)) {
            let cert = Certification::from_daticert(d);
            let at = PecTime::italian(now);
            let (g, cc, rc, v) = (
                gw.clone(),
                cert.clone(),
                c.clone(),
                d.errore_esteso.clone().unwrap_or_default(),
            );
            let n = gw
                .blocking(move || {
                    crate::pec::receipt::build(
                        &g.identity,
                        &g.signer,
                        &cc,
                        crate::pec::receipt::Notice::ErroreConsegnaVirus {
                            consegna: &rc,
                            virus: &v,
                        },
                        at,
                    )
                })
                .await?;
            let nb = gw.put_blob(Arc::new(n.bytes)).await?;
            batch = route(gw, batch, &sender, nb, &d.identificativo, now);
        }
    }
    match gw.store.commit_async(batch).await {
        Ok(_) | Err(StoreError::AlreadyClaimed(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[allow(clippy::too_many_arguments)]
async fn anomaly(
    gw: &Arc<Gateway>,
    data: &Arc<Vec<u8>>,
    digest: &str,
    sender: &str,
    rcpts: &[String],
    reason: &str,
    always: bool,
) -> Result<SmtpReply, DeliveryError> {
    let mut targets = Vec::new();
    for r in rcpts {
        let Ok(addr) = PecAddress::parse(r) else {
            continue;
        };
        let accepts = match gw.store.mailbox(&addr)? {
            Some(m) => always || m.options.accept_anomalies,
            // Unknown mailbox: nothing to deliver to.
            None => false,
        };
        if accepts {
            targets.push(addr);
        }
    }
    if targets.is_empty() {
        let ev = TraceEvent::new(EventKind::AnomalyWrapped, gw.clock.now())
            .sender(sender.to_string())
            .detail(format!("refused: {reason}"))
            .message_bytes(data);
        let _ = gw.store.commit_async(Batch::new().trace(ev)).await;
        return Ok(SmtpReply::new(
            550,
            "5.7.1",
            "This PEC mailbox does not accept non-certified mail",
        ));
    }
    let now = gw.clock.now();
    let at = PecTime::italian(now);
    let (g, d, s, r, why) = (
        gw.clone(),
        data.clone(),
        sender.to_string(),
        rcpts.to_vec(),
        reason.to_string(),
    );
    let built = gw
        .blocking(move || envelope::anomaly(&g.identity, &g.signer, &d, &s, &r, &why, at))
        .await?;
    let blob = gw.put_blob(Arc::new(built.bytes)).await?;
    let mut batch = Batch::new().claim(format!("anomaly:{digest}"));
    for t in &targets {
        batch = route(gw, batch, t, blob.clone(), &built.message_id, now);
    }
    let mut ev = TraceEvent::new(EventKind::AnomalyWrapped, now)
        .sender(sender.to_string())
        .detail(reason.to_string())
        .message_bytes(data);
    ev.recipients = targets.iter().map(ToString::to_string).collect();
    ev.related = vec![built.message_id.clone()];
    match gw.store.commit_async(batch.trace(ev)).await {
        Ok(_) | Err(StoreError::AlreadyClaimed(_)) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(SmtpReply::new(
        250,
        "2.0.0",
        "Delivered as an anomaly envelope (non-certified)",
    ))
}

/// Non-PEC traffic with a virus is dropped like any Internet mail (§6.2): refused in SMTP
/// and traced. `Some(reply)` when the message must not go further (infected, or no verdict).
async fn refuse_if_infected(
    gw: &Arc<Gateway>,
    data: &[u8],
    sender: &str,
) -> Result<Option<SmtpReply>, DeliveryError> {
    match super::virus::check(gw, data).await {
        Ok(None) => Ok(None),
        Err(reply) => Ok(Some(reply)),
        Ok(Some(virus)) => {
            let ev = TraceEvent::new(EventKind::VirusDetected, gw.clock.now())
                .sender(sender.to_string())
                .detail(format!("in non-certified mail: {virus}; refused"))
                .message_bytes(data);
            gw.store.commit_async(Batch::new().trace(ev)).await?;
            Ok(Some(SmtpReply::new(
                554,
                "5.7.1",
                format!("Message refused: virus detected ({virus})"),
            )))
        }
    }
}

/// A virus in a correct transport envelope (§4.8): the take-charge receipt (the envelope
/// was correct), then one *rilevazione virus* notice per recipient to the sending
/// provider's `mailReceipt`, the message into the virus storage, nothing delivered.
async fn virus_in_envelope(
    gw: &Arc<Gateway>,
    cert: &Certification,
    data: &Arc<Vec<u8>>,
    rcpts: &[String],
    record: &ProviderRecord,
    tc_key: String,
    virus: &str,
) -> Result<(), DeliveryError> {
    delivery::take_charge(gw, cert, rcpts, &record.mail_receipt, tc_key).await?;
    let mut first = true;
    for r in rcpts {
        let key = format!("virus:{}:{}", cert.identificativo, r.to_ascii_lowercase());
        if gw.store.is_claimed(&key)? {
            continue;
        }
        let now = gw.clock.now();
        let at = PecTime::italian(now);
        let (g, c, rc, v, to) = (
            gw.clone(),
            cert.clone(),
            r.clone(),
            virus.to_string(),
            record.mail_receipt.to_string(),
        );
        let notice = gw
            .blocking(move || {
                crate::pec::receipt::build(
                    &g.identity,
                    &g.signer,
                    &c,
                    crate::pec::receipt::Notice::RilevazioneVirus {
                        consegna: &rc,
                        virus: &v,
                        to: &to,
                    },
                    at,
                )
            })
            .await?;
        let blob = gw.put_blob(Arc::new(notice.bytes)).await?;
        let mut batch = route(
            gw,
            Batch::new().claim(key),
            &record.mail_receipt,
            blob,
            &cert.identificativo,
            now,
        );
        if first {
            batch = super::virus::quarantine(gw, batch, data.clone()).await?;
            first = false;
        }
        let mut ev = TraceEvent::new(EventKind::VirusDetected, now)
            .ident(cert.identificativo.clone())
            .sender(cert.mittente.clone())
            .recipient(r.clone())
            .other_provider(record.name.clone())
            .detail(format!("in a transport envelope: {virus}; not delivered"))
            .message_bytes(data);
        ev.related = vec![notice.message_id];
        match gw.store.commit_async(batch.trace(ev)).await {
            Ok(_) | Err(StoreError::AlreadyClaimed(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    gw.work.notify_waiters();
    Ok(())
}
