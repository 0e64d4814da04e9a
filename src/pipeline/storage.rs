//! Intake when the disk fills up (issue #13 item 8): the 452 4.3.1 a new message gets
//! while the store's filesystem is short of space ([`crate::gateway::Gateway::room_for`],
//! `limits.min_free_bytes`), or when a write failed for want of it. Every write of the
//! store goes to a temporary file or a sled transaction first, so a refused message leaves
//! nothing half-written visible; the sender (a client, a provider) retries, and intake
//! resumes by itself once space returns.
//!
//! Owns the reply and the classification of a failure as "disk full". Distrusts nothing:
//! its inputs are our own errors.

use crate::gateway::Gateway;
use crate::smtp::server::SmtpReply;

/// The reply to a message that finds no room (RFC 3463 4.3.1, mail system full).
pub fn no_room() -> SmtpReply {
    SmtpReply::new(452, "4.3.1", "Insufficient system storage, try again later")
        .with_motivo("spazio di archiviazione esaurito presso il gestore, riprovare più tardi")
}

/// `Some(452 4.3.1)` when a new message of `bytes` for `recipients` must not be taken now.
/// What it may write is counted per recipient: a completa delivery receipt carries the
/// whole original back to the sender for each of them.
pub fn refuse_if_full(
    gw: &Gateway,
    bytes: u64,
    recipients: usize,
    what: &str,
) -> Option<SmtpReply> {
    let bytes = bytes.saturating_mul(1 + recipients as u64);
    let free = gw.room_for(bytes).err()?;
    tracing::warn!(
        free,
        reserve = gw.config.limits.min_free_bytes,
        bytes,
        "{what} refused: the store's filesystem is short of space"
    );
    Some(no_room())
}

/// Whether an error (or one it wraps) is the filesystem being full (ENOSPC, EDQUOT).
pub fn is_disk_full(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        // sled's error exposes no `source()`: its I/O variant is looked into here.
        let io = err
            .downcast_ref::<std::io::Error>()
            .or_else(|| match err.downcast_ref::<sled::Error>() {
                Some(sled::Error::Io(io)) => Some(io),
                _ => None,
            })
            .or_else(|| {
                err.downcast_ref::<crate::store::kv::Error>()
                    .and_then(|e| e.io())
            });
        // PostgreSQL's own disk is full (SQLSTATE 53100).
        if let Some(crate::store::kv::Error::Pg { code: Some(c), .. }) =
            err.downcast_ref::<crate::store::kv::Error>()
            && c == "53100"
        {
            return true;
        }
        if let Some(io) = io
            && (io.kind() == std::io::ErrorKind::StorageFull
                || io.kind() == std::io::ErrorKind::QuotaExceeded)
        {
            return true;
        }
        cur = err.source();
    }
    false
}

/// The reply to a message whose processing failed: 452 4.3.1 when for want of space,
/// else `451 4.3.0` with `text`. The error itself (paths, object keys, the object store's
/// or the database's words) stays in the server's log: the peer is told only that it may
/// try again.
pub fn temporary_failure(e: &(dyn std::error::Error + 'static), text: &str) -> SmtpReply {
    if is_disk_full(e) {
        no_room()
    } else {
        SmtpReply::new(451, "4.3.0", text.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enospc_anywhere_in_the_chain_is_disk_full() {
        let full = std::io::Error::from_raw_os_error(28);
        assert!(is_disk_full(&full));
        let wrapped = crate::store::StoreError::Io {
            path: "/x".into(),
            source: std::io::Error::from_raw_os_error(28),
        };
        assert!(is_disk_full(&wrapped));
        assert_eq!(temporary_failure(&wrapped, "x").code, 452);
        let other = std::io::Error::from_raw_os_error(13);
        assert!(!is_disk_full(&other));
        assert_eq!(temporary_failure(&other, "x").code, 451);
        // Nothing of the error reaches the peer.
        let internal = crate::store::StoreError::ObjectStore {
            op: "put",
            key: "provider-a/0123abcd".into(),
            detail: "io: Connection refused".into(),
        };
        let reply = temporary_failure(&internal, "Temporary failure, try again later");
        assert_eq!(
            (reply.code, reply.text.as_str()),
            (451, "Temporary failure, try again later")
        );
        let sled_full = crate::store::StoreError::Db(
            sled::Error::Io(std::io::Error::from_raw_os_error(28)).into(),
        );
        assert_eq!(temporary_failure(&sled_full, "x").code, 452);
    }
}
