//! Receipts from other providers about messages we accepted (§6.2 "correct receipt"):
//! whether a receipt matches a `SubmissionAccepted` trace record and which one mailbox it
//! goes to ([`receipt_target`]), then its storage, the pending deadlines it moves on or
//! resolves, and the virus non-delivery notice to our sender ([`receipt_arrived`]).
//!
//! The signer is already trusted when this runs ([`super::trust`]); an unmatched receipt is
//! the caller's to wrap as an anomaly. Nothing here answers SMTP.

use std::sync::Arc;

use crate::gateway::Gateway;
use crate::pec::address::PecAddress;
use crate::pec::compose::Certification;
use crate::pec::daticert::{Daticert, Tipo};
use crate::pec::index::ProviderRecord;
use crate::pec::time::PecTime;
use crate::pipeline::delivery::{DeliveryError, route};
use crate::store::{Batch, Blob, Delivery, StoreError};
use crate::trace::TraceQuery;
use crate::trace::{EventKind, TraceEvent};

/// Where a receipt from another provider goes, or why it is not trusted (§6.2: "correct
/// receipt"). It must be about a message we accepted (a `SubmissionAccepted` trace record
/// for its identificativo, which outlives the pending entry, so late receipts still match,
/// §6.4), from that message's sender, about recipients of that message whose domains the
/// signer manages (a provider cannot certify others' mailboxes). It goes to one mailbox
/// only, which must be among the forward-paths: the original sender for delivery and
/// non-delivery receipts (rule §2 item 3), our service mailbox (`mailReceipt`) for
/// take-charge and virus-detection notices (§4.6, §4.8).
pub(super) fn receipt_target(
    gw: &Gateway,
    d: &Daticert,
    record: &ProviderRecord,
    rcpts: &[String],
) -> Result<Result<PecAddress, String>, DeliveryError> {
    let q = TraceQuery {
        ident: Some(d.identificativo.clone()),
        ..Default::default()
    };
    // What the records say is all that is needed: no chain, so no predecessor reads.
    let records = gw.store.trace().events(&q).map_err(StoreError::from)?;
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

/// Delivers a provider's receipt `data` (its blob already `staged`, or written here) to
/// `target`, traces it and moves the pending deadlines on. `digest`: the SHA-256 (hex) of
/// `data` as received.
pub(super) async fn receipt_arrived(
    gw: &Arc<Gateway>,
    d: &Daticert,
    record: &ProviderRecord,
    (data, staged): (&Arc<Vec<u8>>, Option<Blob>),
    digest: &str,
    target: &PecAddress,
) -> Result<(), DeliveryError> {
    let now = gw.clock.now();
    let blob = match staged {
        Some(b) => b,
        None => gw.put_blob(data.clone()).await?,
    };
    let mut batch = Batch::new().claim(format!("receipt:{digest}"));
    // The receipt is the sender's evidence: stored even past the quota.
    let mut dv = Delivery::inbox(target.clone(), blob, now).filtered(data);
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
        .detail(format!("{} {}", d.tipo, d.errore));
    // The receipt's hash as received, already taken with its verification (not again here,
    // on an async worker).
    ev.sha256 = Some(digest.to_string());
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
                batch = batch.pending_taken_in_charge(d.identificativo.clone(), r.clone());
            }
        }
        Tipo::AvvenutaConsegna | Tipo::ErroreConsegna | Tipo::RilevazioneVirus => {
            if let Some(c) = &d.consegna
                && gw.store.pending(&d.identificativo, c)?.is_some()
            {
                batch = batch.pending_resolve(d.identificativo.clone(), c.clone());
            }
        }
        _ => {}
    }
    if d.tipo == Tipo::RilevazioneVirus {
        // #8 (§4.9): exactly one virus non-delivery notice to our sender per #7, that is
        // per (identificativo, recipient): a second #7 about the same recipient (a retry
        // the other provider signed again, so other bytes) is stored, but owes nothing.
        let once = d.consegna.as_ref().map(|c| {
            format!(
                "virus-notice:{}:{}",
                d.identificativo,
                crate::trace::mailbox_key(c)
            )
        });
        let owed = match &once {
            Some(k) => !gw.store.is_claimed(k)?,
            None => false,
        };
        if let (true, Some(key), Some(c), Ok(sender)) =
            (owed, once, &d.consegna, PecAddress::parse(&d.mittente))
        {
            batch = batch.claim(key);
            let cert = Certification::from_daticert(d);
            let at = PecTime::italian(now);
            let (cc, rc, v) = (
                cert.clone(),
                c.clone(),
                d.errore_esteso.clone().unwrap_or_default(),
            );
            let (n, nb) = gw
                .sign_and_stage_message(move |g| {
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
            let bytes = Arc::new(n.bytes);
            batch = route(gw, batch, &sender, (nb, &bytes), &d.identificativo, now);
        }
    }
    match gw.store.commit_async(batch).await {
        Ok(_) | Err(StoreError::AlreadyClaimed(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
