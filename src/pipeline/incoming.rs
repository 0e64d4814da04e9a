//! The incoming point (*punto di ricezione*, digest §6.2, RFC 6109 §3.2) on the `smtp`
//! listener: what other providers and the Internet send us.
//!
//! Every message is classified and its signature verified (off the executor); the signer's
//! certificate is looked up in the provider index (SHA-1 hash, then full certificate,
//! rule §8.3). Then, per the decision table of §6.2:
//!
//! * a correct transport envelope from a provider in the index (daticert in the signed
//!   content, its `tipo` agreeing with `X-Trasporto`, the sender's domain managed by the
//!   signer, §6.2/§8.3): the take-charge receipt to that provider's `mailReceipt`, then
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
//!   550 when none did.
//!
//! SMTP answers 250 only after every resulting commit is durable; each carries an
//! idempotency key derived from the message bytes (recipient sets sorted, so a replay in
//! another order is the same key), so a peer's retry repeats nothing. An anomaly envelope
//! skips a full mailbox (traced) and reaches the others; only when every target is full is
//! the answer 452 — and never for a certified transaction already taken in charge.

use std::net::SocketAddr;
use std::sync::Arc;

use openssl::x509::X509;

use super::delivery::{self, DeliveryError, route};
use crate::gateway::Gateway;
use crate::pec::address::PecAddress;
use crate::pec::classify::{Classified, Kind, classify};
use crate::pec::compose::Certification;
use crate::pec::crl::{CRL_RECHECK, Revocation};
use crate::pec::daticert::{Daticert, Tipo};
use crate::pec::envelope;
use crate::pec::index::ProviderRecord;
use crate::pec::smime::{self, SignatureCheck};
use crate::pec::time::PecTime;
use crate::smtp::server::{Backend, SmtpReply};
use crate::smtp::session::{DialogueRefusal, Envelope};
use crate::store::pending::Awaiting;
use crate::store::{Batch, Delivery, StoreError};
use crate::trace::TraceQuery;
use crate::trace::sha256_hex;
use crate::trace::{EventKind, TraceEvent};

/// The SMTP backend of the `smtp` listener (25).
#[derive(Debug, Clone)]
pub struct IncomingPoint(pub Arc<Gateway>);

impl Backend for IncomingPoint {
    async fn authenticate(&self, _u: String, _p: String, _peer: SocketAddr) -> Option<String> {
        None
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
    /// The signer certificate is within its validity period at the gateway clock's now.
    cert_current: bool,
    /// A CRL of `[trust] crl_dir` lists the signer certificate as revoked (rule §6.2).
    revoked: Option<Revocation>,
}

impl Verdict {
    /// Signed validly, now, by a certificate the index lists and no CRL of `[trust]
    /// crl_dir` revokes (rule §6.2: existence, origin, validity, CRL). The index pins the
    /// exact certificate, so trust does not depend on `[trust] ca`: the chain verdict is
    /// recorded, not required (each dev PKI has its own CA; in production every provider
    /// certificate chains to AgID's CA anyway).
    fn from_provider(&self) -> bool {
        self.check.valid && self.record.is_some() && self.cert_current && self.revoked.is_none()
    }

    /// Why the sender is not a trusted provider; each cause is told apart (rule §6.2:
    /// existence, origin, validity), so the trace says whether the index or the calendar
    /// was the problem.
    fn untrusted_reason(&self) -> String {
        if !self.check.valid {
            return format!(
                "firma assente o non valida ({})",
                self.check.reason.clone().unwrap_or_default()
            );
        }
        match (&self.record, &self.check.signer) {
            (None, _) => "firma di un soggetto non presente nell'indice dei gestori PEC".into(),
            (Some(r), Some(s)) if !self.cert_current => format!(
                "certificato di firma del gestore {} scaduto o non ancora valido \
                 (valido dal {} al {})",
                r.name, s.not_before, s.not_after
            ),
            (Some(r), _) if let Some(rev) = &self.revoked => format!(
                "certificato di firma del gestore {} non valido: {}",
                r.name,
                rev.describe()
            ),
            (Some(r), _) => format!("firma del gestore {} non accettata", r.name),
        }
    }
}

/// Whether `cert` is within its validity period at `now` (the gateway's clock, so tests
/// and the trace agree on the instant; rule §6.2 "validity period").
fn valid_at(cert: &X509, now: jiff::Timestamp) -> bool {
    let Ok(at) = openssl::asn1::Asn1Time::from_unix(now.as_second() as _) else {
        return false;
    };
    cert.not_before() <= at && cert.not_after() >= at
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

/// Splits the SMTP recipients of a certified envelope into those its daticert lists in
/// `destinatari` (case-insensitive, digest §13) and the others. Rule §2 item 4: the
/// certification data are made from the forward-paths, so a forward-path missing from
/// them means the envelope was not made for that recipient (a replay or a misroute).
fn split_by_destinatari(rcpts: &[String], d: &Daticert) -> (Vec<String>, Vec<String>) {
    rcpts.iter().cloned().partition(|r| {
        d.destinatari
            .iter()
            .any(|x| x.address.trim().eq_ignore_ascii_case(r.trim()))
    })
}

/// Rule §6.2 (SHOULD) and §8.3: the sender's domain must be one the signing provider
/// manages. Checked on the daticert `mittente` (signed) rather than on `From:`, which is
/// unsigned and, in real envelopes, the provider's service host (§8.3 note).
fn sender_managed_by(d: &Daticert, record: &ProviderRecord) -> Result<(), String> {
    match PecAddress::parse(&d.mittente) {
        Ok(a) if record.manages(a.domain()) => Ok(()),
        Ok(a) => Err(format!(
            "il mittente {} appartiene al dominio {} che il gestore {} non gestisce",
            d.mittente,
            a.domain(),
            record.name
        )),
        Err(_) => Err(format!(
            "mittente non valido nei dati di certificazione: {:?}",
            d.mittente
        )),
    }
}

/// Rule §2 item 2: the `From:` of a generated message is the address in the signing
/// certificate. `From:` is unsigned, but it is what the recipient's client shows, so a
/// provider's message whose `From:` names someone else is not correct PEC.
fn from_is_signer(c: &Classified, check: &SignatureCheck) -> Result<(), String> {
    let email = check.signer.as_ref().and_then(|s| s.email.as_deref());
    match (c.headers.from.as_deref(), email) {
        (Some(from), Some(email)) if from.trim().eq_ignore_ascii_case(email.trim()) => Ok(()),
        (from, email) => Err(format!(
            "il From: ({}) non è l'indirizzo del certificato di firma ({})",
            from.unwrap_or("assente"),
            email.unwrap_or("assente")
        )),
    }
}

/// Processes one message received on the incoming point.
pub async fn receive(
    gw: &Arc<Gateway>,
    env: Envelope,
    peer: SocketAddr,
) -> Result<SmtpReply, DeliveryError> {
    let data = Arc::new(env.data);
    let (g, d) = (gw.clone(), data.clone());
    let now = gw.clock.now();
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
            let cert_current = cert.as_ref().is_some_and(|c| valid_at(c, now));
            // Rule §6.2 "check CRL": the snapshot is rechecked against the files at most
            // every CRL_RECHECK (this closure runs on the blocking pool).
            let revoked = match (&g.crls, &cert) {
                (Some(crls), Some(c)) => crls.current(CRL_RECHECK).check(c),
                _ => None,
            };
            Verdict {
                check,
                classified: classify(&d).ok(),
                record,
                cert_current,
                revoked,
            }
        })
        .await;
    let digest = sha256_hex(&data);
    let rcpts = env.rcpt_to;

    if let (true, Some(record)) = (verdict.from_provider(), verdict.record.clone()) {
        let reason = match verdict.classified.as_ref().map(|c| (c, c.certified())) {
            None => "messaggio non analizzabile".to_string(),
            Some((_, Err(e))) => e.to_string(),
            Some((c, Ok(_))) if let Err(why) = from_is_signer(c, &verdict.check) => why,
            Some((c, Ok(d))) => match c.kind {
                Kind::TransportEnvelope => match sender_managed_by(d, &record) {
                    Err(why) => why,
                    Ok(()) => {
                        let postacert = c.postacert.clone().unwrap_or_default();
                        return certified_envelope(
                            gw,
                            d,
                            &data,
                            postacert,
                            &digest,
                            &env.mail_from,
                            &rcpts,
                            &record,
                            peer,
                        )
                        .await;
                    }
                },
                Kind::Receipt(_) => match receipt_target(gw, d, &record, &rcpts)? {
                    Err(why) => why,
                    Ok(target) => {
                        receipt_arrived(gw, d, &record, &data, &digest, &target).await?;
                        return Ok(SmtpReply::new(250, "2.0.0", "Receipt delivered"));
                    }
                },
                // `certified` only succeeds for envelopes and receipts.
                _ => "messaggio PEC di tipo inatteso".to_string(),
            },
        };
        if let Some(reply) = refuse_if_infected(gw, &data, &env.mail_from).await? {
            return Ok(reply);
        }
        // A provider's valid signature on something that is not correct PEC (§4.7 a).
        let reason = format!(
            "messaggio firmato da {} non conforme alle regole PEC: {reason}",
            record.name
        );
        tracing::warn!(%peer, provider = %record.name, %reason, "not correct PEC from a provider");
        return anomaly(gw, &data, &digest, &env.mail_from, &rcpts, &reason, true).await;
    }
    if let Some(reply) = refuse_if_infected(gw, &data, &env.mail_from).await? {
        return Ok(reply);
    }
    let reason = verdict.untrusted_reason();
    anomaly(gw, &data, &digest, &env.mail_from, &rcpts, &reason, false).await
}

/// A correct transport envelope from a provider in the index: taken in charge and
/// delivered for the forward-paths its daticert lists; the others get it as an anomaly
/// envelope (§4.7 a: from a provider, but not a correct envelope for them).
#[allow(clippy::too_many_arguments)]
async fn certified_envelope(
    gw: &Arc<Gateway>,
    d: &Daticert,
    data: &Arc<Vec<u8>>,
    postacert: Vec<u8>,
    digest: &str,
    mail_from: &str,
    rcpts: &[String],
    record: &ProviderRecord,
    peer: SocketAddr,
) -> Result<SmtpReply, DeliveryError> {
    let (listed, unlisted) = split_by_destinatari(rcpts, d);
    let cert = Certification::from_daticert(d);
    if listed.is_empty() {
        if let Some(reply) = refuse_if_infected(gw, data, mail_from).await? {
            return Ok(reply);
        }
        let reason = format!(
            "messaggio firmato da {} non conforme alle regole PEC: i destinatari SMTP non \
             sono tra i destinatari dei dati di certificazione ({})",
            record.name, cert.identificativo
        );
        tracing::warn!(%peer, ident = %cert.identificativo, "envelope for recipients it does not list");
        return anomaly(gw, data, digest, mail_from, rcpts, &reason, true).await;
    }
    let key = format!("takecharge:{}:{}", cert.identificativo, rcpts_key(&listed));
    // A replay (same identificativo, the RCPTs in another order, a subset, or new ones
    // beside old ones) issues no second take-charge for a recipient whose envelope was
    // already handled: delivered or refused (`deliver:<id>:<rcpt>`, delivery.rs) or held
    // as infected (`virus:<id>:<rcpt>`). The key stays the full listed set, so a retry
    // after a crash between the take-charge and the deliveries repeats nothing either.
    let fresh = not_yet_handled(gw, &cert.identificativo, &listed)?;
    if fresh.is_empty() {
        tracing::info!(%peer, ident = %cert.identificativo, "replayed envelope: every listed recipient was already handled");
        return mixed_reply(gw, data, digest, mail_from, &unlisted, &cert, record, peer).await;
    }
    let listed = fresh;
    match super::virus::check(gw, data).await {
        Ok(None) => {}
        Ok(Some(virus)) => {
            virus_in_envelope(gw, &cert, data, &listed, record, key, &virus).await?;
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
        data,
        &Arc::new(postacert),
        &listed,
        &record.mail_receipt,
        key,
    )
    .await?;
    tracing::info!(%peer, ident = %cert.identificativo, provider = %record.name, "transport envelope taken in charge");
    mixed_reply(gw, data, digest, mail_from, &unlisted, &cert, record, peer).await
}

/// The listed recipients whose delivery for `ident` was not decided yet.
fn not_yet_handled(
    gw: &Gateway,
    ident: &str,
    listed: &[String],
) -> Result<Vec<String>, DeliveryError> {
    let mut fresh = Vec::new();
    for r in listed {
        // Spelled exactly as delivery.rs and `virus_in_envelope` spell the claims.
        let r_key = r.to_ascii_lowercase();
        let done = gw.store.is_claimed(&format!("deliver:{ident}:{r_key}"))?
            || gw.store.is_claimed(&format!("virus:{ident}:{r_key}"))?;
        if !done
            && !fresh
                .iter()
                .any(|f: &String| f.eq_ignore_ascii_case(r.trim()))
        {
            fresh.push(r.clone());
        }
    }
    Ok(fresh)
}

/// The answer to a certified envelope once its listed recipients are taken in charge: 250,
/// whatever becomes of the unlisted ones (their anomaly envelope), because the peer holds
/// a take-charge for this transaction. A full mailbox among them is traced, not answered
/// with 4xx; only a failure of the store defers (the retry repeats nothing: every step has
/// its idempotency key).
#[allow(clippy::too_many_arguments)]
async fn mixed_reply(
    gw: &Arc<Gateway>,
    data: &Arc<Vec<u8>>,
    digest: &str,
    mail_from: &str,
    unlisted: &[String],
    cert: &Certification,
    record: &ProviderRecord,
    peer: SocketAddr,
) -> Result<SmtpReply, DeliveryError> {
    if unlisted.is_empty() {
        return Ok(SmtpReply::new(
            250,
            "2.0.0",
            format!("Taken in charge: {}", cert.identificativo),
        ));
    }
    let reason = format!(
        "messaggio firmato da {} non conforme alle regole PEC: destinatario non presente nei \
         dati di certificazione ({})",
        record.name, cert.identificativo
    );
    tracing::warn!(%peer, ident = %cert.identificativo, unlisted = ?unlisted, "recipients not in destinatari");
    let r = anomaly(gw, data, digest, mail_from, unlisted, &reason, true).await?;
    Ok(SmtpReply::new(
        250,
        "2.0.0",
        format!(
            "Taken in charge: {} ({} recipient(s) not in the certification data: {})",
            cert.identificativo,
            unlisted.len(),
            r.text
        ),
    ))
}

/// Where a receipt from another provider goes, or why it is not trusted (§6.2: "correct
/// receipt"). It must be about a message we accepted (a `SubmissionAccepted` trace record
/// for its identificativo, which outlives the pending entry, so late receipts still match,
/// §6.4), from that message's sender, about recipients of that message whose domains the
/// signer manages (a provider cannot certify others' mailboxes). It goes to one mailbox
/// only, which must be among the forward-paths: the original sender for delivery and
/// non-delivery receipts (rule §2 item 3), our service mailbox (`mailReceipt`) for
/// take-charge and virus-detection notices (§4.6, §4.8).
fn receipt_target(
    gw: &Gateway,
    d: &Daticert,
    record: &ProviderRecord,
    rcpts: &[String],
) -> Result<Result<PecAddress, String>, DeliveryError> {
    let q = TraceQuery {
        ident: Some(d.identificativo.clone()),
        ..Default::default()
    };
    let records = gw.store.trace().query(&q).map_err(StoreError::from)?;
    let Some(sent) = records
        .iter()
        .find(|r| r.kind == EventKind::SubmissionAccepted)
    else {
        return Ok(Err(format!(
            "ricevuta per l'identificativo {} che questo gestore non ha mai accettato",
            d.identificativo
        )));
    };
    if !sent
        .sender
        .as_deref()
        .is_some_and(|s| s.eq_ignore_ascii_case(d.mittente.trim()))
    {
        return Ok(Err(format!(
            "il mittente della ricevuta ({}) non è quello del messaggio {}",
            d.mittente, d.identificativo
        )));
    }
    let about: Vec<&String> = d.consegna.iter().chain(d.ricezione.iter()).collect();
    if about.is_empty() {
        return Ok(Err(
            "ricevuta senza destinatario (consegna/ricezione)".into()
        ));
    }
    for a in &about {
        let ours = sent
            .recipients
            .iter()
            .any(|r| r.eq_ignore_ascii_case(a.trim()));
        if !ours {
            return Ok(Err(format!(
                "{a} non è un destinatario del messaggio {}",
                d.identificativo
            )));
        }
        if !PecAddress::parse(a).is_ok_and(|x| record.manages(x.domain())) {
            return Ok(Err(format!(
                "il gestore {} non gestisce il dominio di {a}",
                record.name
            )));
        }
    }
    let target = match d.tipo {
        Tipo::AvvenutaConsegna | Tipo::ErroreConsegna => match PecAddress::parse(&d.mittente) {
            Ok(a) => a,
            Err(_) => return Ok(Err(format!("mittente non valido: {:?}", d.mittente))),
        },
        Tipo::PresaInCarico | Tipo::RilevazioneVirus => gw.config.provider.receipt_mailbox.clone(),
        t => {
            return Ok(Err(format!(
                "una ricevuta di tipo {t} non viene da un altro gestore"
            )));
        }
    };
    if !gw.is_local(target.domain()) {
        return Ok(Err(format!("{target} non è una casella di questo gestore")));
    }
    if !rcpts
        .iter()
        .any(|r| r.trim().eq_ignore_ascii_case(&target.to_string()))
    {
        return Ok(Err(format!(
            "la ricevuta non è indirizzata a {target}, l'unico destinatario ammesso"
        )));
    }
    Ok(Ok(target))
}

async fn receipt_arrived(
    gw: &Arc<Gateway>,
    d: &Daticert,
    record: &ProviderRecord,
    data: &Arc<Vec<u8>>,
    digest: &str,
    target: &PecAddress,
) -> Result<(), DeliveryError> {
    let now = gw.clock.now();
    let blob = gw.put_blob(data.clone()).await?;
    let mut batch = Batch::new().claim(format!("receipt:{digest}"));
    // The receipt is the sender's evidence: stored even past the quota.
    let mut dv = Delivery::inbox(target.clone(), blob, now);
    dv.enforce_quota = false;
    batch = batch.deliver(dv);
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
    let key = format!("anomaly:{digest}:{}", rcpts_key(rcpts));
    // Ordinary mail in an anomaly envelope: the quota applies (only receipts skip it).
    // One full mailbox must not hold the envelope back from the others (nor turn the whole
    // transaction into a 4xx the peer retries for ever): a target whose quota refuses the
    // commit is left out, traced, and the commit is tried again with the rest. The check
    // runs inside the commit, so it is exact under concurrent deliveries.
    let mut full: Vec<PecAddress> = Vec::new();
    loop {
        let mut batch = Batch::new().claim(key.clone());
        let deliver_to: Vec<&PecAddress> = targets.iter().filter(|t| !full.contains(t)).collect();
        if deliver_to.is_empty() {
            break;
        }
        for t in &deliver_to {
            batch = delivery::route_message(gw, batch, t, blob.clone(), &built.message_id, now);
        }
        let mut ev = TraceEvent::new(EventKind::AnomalyWrapped, now)
            .sender(sender.to_string())
            .detail(reason.to_string())
            .message_bytes(data);
        ev.recipients = deliver_to.iter().map(ToString::to_string).collect();
        ev.related = vec![built.message_id.clone()];
        batch = batch.trace(ev);
        for f in &full {
            batch = batch.trace(mailbox_full_event(sender, f, data, &built.message_id, now));
        }
        match gw.store.commit_async(batch).await {
            Ok(_) | Err(StoreError::AlreadyClaimed(_)) => {
                let text = if full.is_empty() {
                    "Delivered as an anomaly envelope (non-certified)".to_string()
                } else {
                    format!(
                        "Delivered as an anomaly envelope (non-certified); not stored, \
                         mailbox full: {}",
                        join(&full)
                    )
                };
                return Ok(SmtpReply::new(250, "2.0.0", text));
            }
            Err(e) => {
                let over = match &e {
                    StoreError::QuotaExceeded { mailbox, .. } => targets
                        .iter()
                        .find(|t| !full.contains(t) && t.key().eq_ignore_ascii_case(mailbox)),
                    _ => None,
                };
                // Any other failure (or a quota refusal we cannot pin on a target, so
                // leaving targets out would not progress) defers the whole transaction.
                match over {
                    Some(t) => full.push(t.clone()),
                    None => return Err(e.into()),
                }
            }
        }
    }
    // Every target is full: nothing stored. The trace says so; the peer may retry later
    // (RFC 5321 §4.2.3 452, RFC 3463 4.2.2 "mailbox full").
    let mut batch = Batch::new();
    for f in &full {
        batch = batch.trace(mailbox_full_event(sender, f, data, &built.message_id, now));
    }
    gw.store.commit_async(batch).await?;
    tracing::warn!(sender, full = %join(&full), "anomaly envelope not stored: every mailbox is full");
    Ok(SmtpReply::new(
        452,
        "4.2.2",
        format!("Mailbox full: {}", join(&full)),
    ))
}

fn join(addrs: &[PecAddress]) -> String {
    addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The trace record of an anomaly envelope left out of a full mailbox.
fn mailbox_full_event(
    sender: &str,
    mailbox: &PecAddress,
    data: &[u8],
    anomaly_id: &str,
    now: jiff::Timestamp,
) -> TraceEvent {
    let mut ev = TraceEvent::new(EventKind::DeliveryFailed, now)
        .sender(sender.to_string())
        .recipient(mailbox.to_string())
        .detail("anomaly envelope not stored: mailbox full".to_string())
        .message_bytes(data);
    ev.related = vec![anomaly_id.to_string()];
    ev
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
