//! The antispam policy of the pipeline (issue #10): ordinary mail (non-certified, wrapped
//! in an anomaly envelope for the mailboxes that accept it) is scanned with spamd when
//! `[antispam] spamd` is configured; certified mail, receipts and anything a provider in
//! the index signed are never scanned nor marked, and never filed as spam.
//!
//! [`check`] gives the verdict or the 4xx that defers the message when spamd cannot give
//! one (the sender retries; nothing is accepted unscanned). The caller records the verdict
//! in `X-Spam-*` header lines of the anomaly envelope it stores (outside its signature) and
//! files spam into each mailbox's [`JUNK_FOLDER`], where the owner's rules do not move it.

use std::sync::Arc;

use crate::antispam::SpamVerdict;
use crate::gateway::Gateway;
use crate::pec::address::PecAddress;
use crate::smtp::server::SmtpReply;
use crate::store::{Batch, StoreError};

/// The folder spam is filed into (special use `\Junk`, JMAP role `junk`).
pub const JUNK_FOLDER: &str = "Junk";

/// `Ok(None)` no spam filter configured, `Ok(Some(verdict))` scanned, `Err(reply)` the
/// temporary refusal to send because no verdict could be had.
pub async fn check(gw: &Arc<Gateway>, data: &[u8]) -> Result<Option<SpamVerdict>, SmtpReply> {
    let Some(filter) = &gw.spam_filter else {
        return Ok(None);
    };
    match filter.check(data).await {
        Ok(v) => Ok(Some(v)),
        Err(e) => {
            tracing::error!(error = %e, "spam check failed: message deferred");
            Err(SmtpReply::new(
                451,
                "4.7.1",
                "Spam filter unavailable, message deferred; try again later",
            ))
        }
    }
}

/// Creates (subscribed) the Junk folder of the mailboxes that lack it. A concurrent
/// delivery creating it first is fine.
pub async fn ensure_junk(gw: &Arc<Gateway>, mailboxes: &[&PecAddress]) -> Result<(), StoreError> {
    for m in mailboxes {
        if gw.store.folder(m, JUNK_FOLDER)?.is_some() {
            continue;
        }
        let batch = Batch::new()
            .create_folder((*m).clone(), JUNK_FOLDER)
            .subscribe((*m).clone(), JUNK_FOLDER);
        match gw.store.commit_async(batch).await {
            Ok(_) | Err(StoreError::FolderExists { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The trace record's words for a verdict.
pub fn describe(v: &SpamVerdict) -> String {
    format!(
        "spam filter: score {:.1} / {:.1}{}",
        v.score,
        v.threshold,
        if v.spam { ", spam: filed in Junk" } else { "" }
    )
}
