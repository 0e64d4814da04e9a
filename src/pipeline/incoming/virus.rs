//! Incoming-side virus handling (§4.8, §6.2): refusing infected non-certified mail, and
//! for a correct transport envelope the take-charge, *rilevazione virus* notices to the
//! sending provider and quarantine. The scan and the virus storage themselves are
//! [`crate::pipeline::virus`]'s; this does not deliver anything to mailboxes.

use std::sync::Arc;

use crate::gateway::Gateway;
use crate::pec::compose::Certification;
use crate::pec::index::ProviderRecord;
use crate::pec::time::PecTime;
use crate::pipeline::delivery::{self, DeliveryError, route};
use crate::smtp::server::SmtpReply;
use crate::store::{Batch, StoreError};
use crate::trace::{EventKind, TraceEvent};

/// Non-PEC traffic with a virus is dropped like any Internet mail (§6.2): refused in SMTP
/// and traced. `Some(reply)` when the message must not go further (infected, or no verdict).
pub(super) async fn refuse_if_infected(
    gw: &Arc<Gateway>,
    data: &[u8],
    sender: &str,
) -> Result<Option<SmtpReply>, DeliveryError> {
    match crate::pipeline::virus::check(gw, data).await {
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
pub(super) async fn virus_in_envelope(
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
        let (c, rc, v, to) = (
            cert.clone(),
            r.clone(),
            virus.to_string(),
            record.mail_receipt.to_string(),
        );
        let (notice, blob) = gw
            .sign_and_stage_message(move |g| {
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
        let bytes = Arc::new(notice.bytes);
        let mut batch = route(
            gw,
            Batch::new().claim(key),
            &record.mail_receipt,
            (blob, &bytes),
            &cert.identificativo,
            now,
        );
        if first {
            batch = crate::pipeline::virus::quarantine(gw, batch, data.clone()).await?;
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
