//! Login with a smart card (CNS): SASL EXTERNAL on IMAPS, POP3S and the submission
//! listeners, and the web listener for cards. The TLS handshake proved that the client
//! holds the key of the certificate it sent; here the certificate must pass
//! [`crate::cns::CnsTrust::check`] (a `[cns]` CA, valid now, client-authentication use,
//! not revoked) and be associated with the mailbox asked for ([`crate::store::cards`]).
//! Without a requested mailbox (an empty authorization identity), a card associated with
//! exactly one mailbox opens that one.
//!
//! Every refusal says why in the log and the trace and counts in the same lockout as a
//! wrong password (keyed on the requested mailbox, or on the card when none was named).
//! Untrusted input: the certificate chain and the authorization identity.

use std::net::SocketAddr;
use std::sync::Arc;

use openssl::x509::X509;

use super::access::{LoginCheck, record_login_failure};
use crate::gateway::Gateway;
use crate::pec::address::PecAddress;

/// Checks a card login; see the module doc.
pub async fn authenticate_card(
    gw: &Arc<Gateway>,
    chain: Vec<X509>,
    authzid: Option<String>,
    peer: SocketAddr,
    protocol: &str,
) -> LoginCheck {
    let now = gw.clock.now();
    let requested = authzid.as_deref().map(PecAddress::parse);
    let sha = crate::cns::chain_sha256(&chain);
    let key = crate::cns::lockout_key(&chain, authzid.as_deref());
    if gw.logins.lockout(peer.ip(), &key, now).is_some() {
        return LoginCheck::Failed;
    }
    let addr = requested.as_ref().and_then(|r| r.as_ref().ok());
    let decided = decide(gw, chain, requested.clone(), now).await;
    match decided {
        Ok(user) => {
            gw.logins.record_success(peer.ip(), &key, now);
            tracing::info!(%peer, %user, protocol, card = ?sha, "smart-card login");
            LoginCheck::Granted(user)
        }
        Err(reason) => {
            tracing::warn!(%peer, protocol, card = ?sha, %reason, "smart-card login refused");
            let reason = match &sha {
                Some(s) => format!("smart card {s}: {reason}"),
                None => reason,
            };
            // Without a named mailbox, the trace names the card's only mailbox, so its
            // owner sees the attempt.
            let owner = match (addr, &sha) {
                (None, Some(s)) => {
                    let (store, s) = (gw.store.clone(), s.clone());
                    let found = gw.blocking(move || store.card_mailboxes(&s)).await;
                    match found.as_deref() {
                        Ok([one]) => PecAddress::parse(one).ok(),
                        _ => None,
                    }
                }
                _ => None,
            };
            let addr = addr.or(owner.as_ref());
            record_login_failure(gw, &key, addr, peer, protocol, Some(&reason)).await;
            LoginCheck::Failed
        }
    }
}

async fn decide(
    gw: &Arc<Gateway>,
    chain: Vec<X509>,
    requested: Option<Result<PecAddress, crate::pec::address::AddressError>>,
    now: jiff::Timestamp,
) -> Result<String, String> {
    let Some(trust) = gw.cns.clone() else {
        return Err("smart-card login is off (no [cns] ca)".into());
    };
    let Some((leaf, rest)) = chain.split_first() else {
        return Err("no client certificate was presented in the TLS handshake".into());
    };
    let (leaf, rest) = (leaf.clone(), rest.to_vec());
    let store = gw.store.clone();
    gw.blocking(move || {
        let card = trust
            .check(&leaf, &rest, now)
            .map_err(|e| format!("certificate refused: {e}"))?;
        let mailboxes = store
            .card_mailboxes(&card.sha256)
            .map_err(|e| format!("store error: {e}"))?;
        match requested {
            Some(Err(_)) => Err("the requested authorization identity is not an address".into()),
            Some(Ok(a)) => {
                let k = a.key();
                if mailboxes.contains(&k) {
                    Ok(a.to_string())
                } else {
                    Err(format!(
                        "the card (codice fiscale {}) is not associated with {a}",
                        card.codice_fiscale
                    ))
                }
            }
            None => match mailboxes.as_slice() {
                [one] => PecAddress::parse(one)
                    .map(|a| a.to_string())
                    .map_err(|e| format!("store holds a bad address {one:?}: {e}")),
                [] => Err(format!(
                    "the card (codice fiscale {}) is not associated with any mailbox",
                    card.codice_fiscale
                )),
                _ => Err(format!(
                    "the card (codice fiscale {}) opens {} mailboxes: name one as the \
                     authorization identity",
                    card.codice_fiscale,
                    mailboxes.len()
                )),
            },
        }
    })
    .await
}
