//! The `pec` property of an Email (capability `urn:pecd:params:jmap:pec`): the kind, the
//! identificativo, the riferimento (client Message-ID), the daticert fields, the signature
//! verdict, the blobId of the inner `postacert.eml` and the receipt form.
//!
//! The verdict never claims more than was checked: `verified` is true only when the S/MIME
//! signature is valid over the untouched content, the message is formally correct PEC
//! (signed daticert agreeing with the headers, [`crate::pec::classify`]), the signer
//! certificate is one the provider index lists *now*, it was within its validity period
//! when we stored the message, and no CRL of `[trust] crl_dir` revokes it. The folder a
//! message is in, and how it got there (delivery, IMAP APPEND, Email/import), play no part.

use serde_json::{Value, json};

use crate::gateway::Gateway;
use crate::pec::crl::CRL_RECHECK;
use crate::pec::{signature_certs, smime};

use super::account::Entry;

/// The blobId of the `postacert.eml` inside a message (see [`super::endpoints`]).
pub fn postacert_blob_id(entry: &Entry) -> String {
    format!("B{}_pc", entry.blob.as_str())
}

/// Why a signature failed, for the Italian reader: what it means first; OpenSSL's own
/// words (English) only after, labelled as the technical detail for whoever supports the
/// user.
fn invalid_signature(reason: Option<&str>) -> String {
    let head = "firma assente o non valida: il messaggio può essere stato alterato";
    match reason.map(str::trim).filter(|r| !r.is_empty()) {
        None => head.to_string(),
        Some(r) => match r.strip_prefix("signature does not match the content:") {
            Some(detail) => format!(
                "{head}: il contenuto non corrisponde alla firma (dettaglio tecnico: {})",
                detail.trim()
            ),
            None => format!("{head} (dettaglio tecnico: {r})"),
        },
    }
}

/// The verdict on an entry's signature, judged now.
pub fn verdict(gw: &Gateway, entry: &Entry) -> Value {
    let f = &entry.summary.pec;
    if !f.claims_pec {
        return json!({"verified": false, "signer": null, "provider": null,
                      "reason": "posta ordinaria: nessuna firma del gestore"});
    }
    let cert = f
        .signer_der
        .as_deref()
        .and_then(|h| hex::decode(h).ok())
        .and_then(|d| signature_certs::certificate(&d).ok());
    let provider = cert
        .as_ref()
        .and_then(|c| gw.index().by_certificate(c).map(|r| r.name.clone()));
    let reason: Option<String> = if !f.signature_valid {
        Some(invalid_signature(f.signature_reason.as_deref()))
    } else if let Some(why) = &f.not_certified {
        Some(format!("messaggio PEC non conforme: {why}"))
    } else if provider.is_none() {
        Some("firma di un soggetto non presente nell'indice dei gestori PEC".into())
    } else if !cert
        .as_ref()
        .is_some_and(|c| smime::cert_valid_at(c, entry.received))
    {
        Some("certificato di firma del gestore non valido alla data di ricezione".into())
    } else if let (Some(crls), Some(c)) = (&gw.crls, &cert)
        && let Some(rev) = crls.current(CRL_RECHECK).check(c)
    {
        Some(format!(
            "certificato di firma del gestore revocato: {}",
            rev.describe()
        ))
    } else {
        None
    };
    json!({
        "verified": reason.is_none(),
        "signer": f.signer_subject,
        "provider": provider,
        "reason": reason,
    })
}

/// The whole `pec` property.
pub fn property(gw: &Gateway, entry: &Entry) -> Value {
    let f = &entry.summary.pec;
    json!({
        "kind": f.kind,
        "identificativo": f.identificativo,
        "riferimento": f.riferimento,
        "daticert": f.daticert,
        "verdict": verdict(gw, entry),
        "postacertBlobId": f.has_postacert.then(|| postacert_blob_id(entry)),
        "receiptForm": f.receipt_form,
    })
}

#[cfg(test)]
mod tests {
    use super::invalid_signature;

    #[test]
    fn a_failed_signature_is_explained_in_italian_first() {
        assert_eq!(
            invalid_signature(Some("signature does not match the content: digest failure")),
            "firma assente o non valida: il messaggio può essere stato alterato: il contenuto \
             non corrisponde alla firma (dettaglio tecnico: digest failure)"
        );
        assert_eq!(
            invalid_signature(Some("no signature part")),
            "firma assente o non valida: il messaggio può essere stato alterato \
             (dettaglio tecnico: no signature part)"
        );
        assert_eq!(
            invalid_signature(None),
            "firma assente o non valida: il messaggio può essere stato alterato"
        );
    }
}
