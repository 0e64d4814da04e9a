//! Signed checkpoints of the trace chain.
//!
//! A checkpoint states "the record `seq` of this log has hash `head_hash`" and is signed
//! with the provider's signing key (detached CMS, SHA-256, via [`Signer::sign_detached`]).
//! The signed bytes are the **canonical checkpoint text** ([`Checkpoint::signed_bytes`]):
//!
//! ```text
//! pecd-trace-checkpoint-v1\n
//! seq=<decimal>\n
//! head=<64 hex>\n
//! time=<RFC 3339 UTC>\n
//! prev=<seq of the previous checkpoint, 0 for none>\n
//! ```
//!
//! `prev` chains the checkpoints so that removing one from an export is detected.
//! Signing is CPU-bound: the store does it on its own checkpoint thread, never on the
//! commit path nor on async executor threads.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use jiff::Timestamp;
use openssl::hash::MessageDigest;
use openssl::x509::X509Ref;
use serde::{Deserialize, Serialize};

use crate::pec::smime::{Signer, SmimeError, verify_detached};

/// A signed statement about the head of the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The last record covered.
    pub seq: u64,
    /// That record's hash.
    pub head_hash: String,
    /// When the checkpoint was made.
    pub time: Timestamp,
    /// The seq of the previous checkpoint (0 for the first one).
    pub prev: u64,
    /// Upper-case hex SHA-256 of the signing certificate (as in `SignerInfo::sha256`).
    pub signer_sha256: String,
    /// Base64 of the detached DER CMS signature over [`Checkpoint::signed_bytes`].
    pub signature: String,
}

impl Checkpoint {
    /// The canonical text the signature covers (see the module doc).
    pub fn signed_bytes(seq: u64, head_hash: &str, time: Timestamp, prev: u64) -> Vec<u8> {
        format!("pecd-trace-checkpoint-v1\nseq={seq}\nhead={head_hash}\ntime={time}\nprev={prev}\n")
            .into_bytes()
    }

    /// Signs the head `(seq, head_hash)` at `time`.
    pub fn sign(
        signer: &Signer,
        seq: u64,
        head_hash: &str,
        time: Timestamp,
        prev: u64,
    ) -> Result<Self, SmimeError> {
        let sig = signer.sign_detached(&Self::signed_bytes(seq, head_hash, time, prev))?;
        Ok(Self {
            seq,
            head_hash: head_hash.to_string(),
            time,
            prev,
            signer_sha256: cert_sha256(signer.certificate()),
            signature: B64.encode(sig),
        })
    }

    /// Checks the signature and that it was made by the certificate whose SHA-256 is
    /// `expected_signer` (upper-case hex; `None` accepts any valid signer).
    pub fn verify(&self, expected_signer: Option<&str>) -> Result<(), String> {
        let sig = B64
            .decode(self.signature.as_bytes())
            .map_err(|e| format!("signature is not base64: {e}"))?;
        let content = Self::signed_bytes(self.seq, &self.head_hash, self.time, self.prev);
        let check = verify_detached(&content, &sig, None);
        if !check.valid {
            return Err(format!(
                "invalid signature: {}",
                check.reason.unwrap_or_else(|| "no reason given".into())
            ));
        }
        let signer = check.signer.map(|s| s.sha256).unwrap_or_default();
        if !signer.eq_ignore_ascii_case(&self.signer_sha256) {
            return Err(format!(
                "signed by certificate {signer}, but the checkpoint names {}",
                self.signer_sha256
            ));
        }
        if let Some(want) = expected_signer {
            if !signer.eq_ignore_ascii_case(want) {
                return Err(format!(
                    "signed by certificate {signer}, not by the provider certificate {want}"
                ));
            }
        }
        Ok(())
    }
}

/// Upper-case hex SHA-256 of a certificate's DER, as `SignerInfo::sha256`.
pub fn cert_sha256(cert: &X509Ref) -> String {
    cert.digest(MessageDigest::sha256())
        .map(hex::encode_upper)
        .unwrap_or_default()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use openssl::asn1::Asn1Time;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::nid::Nid;
    use openssl::pkey::PKey;
    use openssl::x509::{X509, X509NameBuilder};

    /// A throw-away self-signed signer for tests.
    pub(crate) fn test_signer(cn: &str) -> Signer {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", cn).unwrap();
        let name = name.build();
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::days_from_now(30).unwrap())
            .unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        let cert = b.build();
        Signer::from_pem(
            &cert.to_pem().unwrap(),
            &key.private_key_to_pem_pkcs8().unwrap(),
            b"",
        )
        .unwrap()
    }

    #[test]
    fn sign_and_verify_round_trip_and_tamper_cases() {
        let signer = test_signer("trace test");
        let other = test_signer("someone else");
        let me = cert_sha256(signer.certificate());
        let t: Timestamp = "2025-02-01T00:00:00Z".parse().unwrap();
        let cp = Checkpoint::sign(&signer, 10, &"ab".repeat(32), t, 0).unwrap();
        assert_eq!(cp.verify(Some(&me)), Ok(()));
        assert_eq!(cp.verify(None), Ok(()));
        let cases: Vec<(&str, Box<dyn Fn(&mut Checkpoint)>)> = vec![
            ("seq", Box::new(|c| c.seq = 11)),
            ("head", Box::new(|c| c.head_hash = "cd".repeat(32))),
            (
                "time",
                Box::new(|c| c.time = "2025-02-01T00:00:01Z".parse().unwrap()),
            ),
            ("prev", Box::new(|c| c.prev = 3)),
            ("signer", Box::new(|c| c.signer_sha256 = "00".into())),
            ("signature", Box::new(|c| c.signature = "AAAA".into())),
        ];
        for (what, m) in cases {
            let mut c = cp.clone();
            m(&mut c);
            assert!(c.verify(Some(&me)).is_err(), "altering {what} must fail");
        }
        let foreign = Checkpoint::sign(&other, 10, &"ab".repeat(32), t, 0).unwrap();
        let err = foreign.verify(Some(&me)).unwrap_err();
        assert!(err.contains("not by the provider certificate"), "{err}");
    }
}
