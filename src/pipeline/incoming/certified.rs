//! Correct transport envelopes from a provider in the index (§6.2): split of the SMTP
//! recipients by the daticert `destinatari`, replay detection, take-charge and delivery
//! through [`crate::pipeline::delivery`], and the reply when some recipients are not
//! listed (they get an anomaly envelope, rule §2 item 4).
//!
//! Trust is decided before this is called ([`super::trust`]); anomaly envelopes are built
//! by [`super::anomaly`] and virus handling by [`super::virus`], not here.

use std::net::SocketAddr;
use std::sync::Arc;

use super::anomaly::{Origin, anomaly};
use super::rcpts_key;
use super::virus::{refuse_if_infected, virus_in_envelope};
use crate::gateway::Gateway;
use crate::pec::compose::Certification;
use crate::pec::daticert::Daticert;
use crate::pec::index::ProviderRecord;
use crate::pipeline::delivery::{self, DeliveryError};
use crate::smtp::server::SmtpReply;
use crate::store::Blob;

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

/// A correct transport envelope from a provider in the index: taken in charge and
/// delivered for the forward-paths its daticert lists; the others get it as an anomaly
/// envelope (§4.7 a: from a provider, but not a correct envelope for them).
#[allow(clippy::too_many_arguments)]
pub(super) async fn certified_envelope(
    gw: &Arc<Gateway>,
    d: &Daticert,
    (data, staged): (&Arc<Vec<u8>>, Option<Blob>),
    postacert: bytes::Bytes,
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
        return anomaly(
            gw,
            data,
            digest,
            mail_from,
            rcpts,
            &reason,
            Origin::Provider,
        )
        .await;
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
    match crate::pipeline::virus::check(gw, data).await {
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
        (data, staged),
        &postacert,
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
    let r = anomaly(
        gw,
        data,
        digest,
        mail_from,
        unlisted,
        &reason,
        Origin::Provider,
    )
    .await?;
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
