//! The antivirus policy of the pipeline (digest §4.4, §4.8, §4.9, §6.1 item 3, §6.2).
//!
//! [`check`] scans a message with clamd when `[antivirus] clamd` is configured. A message
//! is never passed unscanned: when clamd cannot give a verdict the caller answers 4xx and
//! the sender retries. [`quarantine`] keeps an infected message as it arrived for the 30
//! months the rules require (*virus storage*, §2.2.4): in the service mailbox's
//! `Quarantena` folder, referenced by a `VirusDetected` trace record with its SHA-256.

use std::sync::Arc;

use crate::antivirus::Verdict;
use crate::gateway::Gateway;
use crate::smtp::server::SmtpReply;
use crate::store::{Batch, Delivery, StoreError};

/// The folder of the service mailbox that holds infected messages.
pub const QUARANTINE_FOLDER: &str = "Quarantena";

/// `Ok(None)` clean (or no scanner configured), `Ok(Some(name))` infected, `Err(reply)`
/// the temporary refusal to send because no verdict could be had.
pub async fn check(gw: &Arc<Gateway>, data: &[u8]) -> Result<Option<String>, SmtpReply> {
    let Some(scanner) = &gw.scanner else {
        return Ok(None);
    };
    match scanner.scan(data).await {
        Ok(Verdict::Clean) => Ok(None),
        Ok(Verdict::Infected(name)) => Ok(Some(name)),
        Err(e) => {
            tracing::error!(error = %e, %scanner, "virus scan failed: message deferred");
            Err(SmtpReply::new(
                451,
                "4.7.1",
                "Virus scanner unavailable, message deferred; try again later",
            ))
        }
    }
}

/// Adds to `batch` the quarantine copy of `data` (the blob is written here).
pub async fn quarantine(
    gw: &Arc<Gateway>,
    batch: Batch,
    data: Arc<Vec<u8>>,
) -> Result<Batch, StoreError> {
    let svc = gw.config.provider.receipt_mailbox.clone();
    let blob = gw.put_blob(data).await?;
    let mut batch = batch;
    if gw.store.folder(&svc, QUARANTINE_FOLDER)?.is_none() {
        // Subscribed, so that clients showing subscribed folders only list it.
        batch = batch
            .create_folder(svc.clone(), QUARANTINE_FOLDER)
            .subscribe(svc.clone(), QUARANTINE_FOLDER);
    }
    let mut d = Delivery::inbox(svc, blob, gw.clock.now());
    d.folder = QUARANTINE_FOLDER.to_string();
    d.enforce_quota = false;
    // The quarantine is itself the 30-month keeping of the infected message: a second
    // copy in the service mailbox's security archive would only double it.
    d.archive = false;
    Ok(batch.deliver(d))
}
