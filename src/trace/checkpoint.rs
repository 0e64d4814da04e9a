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
//!
//! An export ends with an [`ExportTrailer`] naming its last record, so that cutting
//! records off its end (or handing over an empty file) is detected. Trailers are not
//! stored in the log. A trailer is the last line of an export: no later chain record can
//! bind its exact bytes as one binds a checkpoint's, and a CMS structure has fields its
//! signature does not cover. So the trailer carries a bare signature
//! ([`Signer::sign_raw`]) and the signing certificate (DER), and every byte of it is
//! covered: the signature covers
//!
//! ```text
//! pecd-trace-export-v1\n
//! seq=<decimal>\n
//! head=<64 hex>\n
//! time=<RFC 3339 UTC>\n
//! signer=<upper-case hex SHA-256 of the certificate>\n
//! ```
//!
//! and the certificate must hash to `signer`.
//!
//! Signatures are accepted from a set of [`TrustedSigners`]: the current provider
//! certificate and, after a certificate renewal (rules §8.1, rollover), the previous
//! ones (`signing.previous_certs`, `pecd log verify --cert`).
//!
//! Signing is CPU-bound: the store does it on its own checkpoint thread, never on the
//! commit path nor on async executor threads.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use jiff::Timestamp;
use openssl::hash::MessageDigest;
use openssl::x509::{X509, X509Ref};
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

    /// Checks the signature and that it was made by one of the `trusted` certificates
    /// (an empty set accepts any valid signer).
    pub fn verify(&self, trusted: &TrustedSigners) -> Result<(), String> {
        let content = Self::signed_bytes(self.seq, &self.head_hash, self.time, self.prev);
        verify_statement(&content, &self.signature, &self.signer_sha256, trusted)
    }
}

/// The signed statement closing an export: "this export ends at record `seq`, whose
/// hash is `head_hash`" (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportTrailer {
    /// The last record of the export (0 for an empty log).
    pub seq: u64,
    /// That record's hash (the anchor's head hash, or [`super::GENESIS_HASH`], when the
    /// export holds no record).
    pub head_hash: String,
    /// When the export was made.
    pub time: Timestamp,
    /// Upper-case hex SHA-256 of the signing certificate.
    pub signer_sha256: String,
    /// Base64 of the signing certificate (DER).
    pub cert: String,
    /// Base64 of the bare signature ([`Signer::sign_raw`]) over
    /// [`ExportTrailer::signed_bytes`].
    pub signature: String,
}

impl ExportTrailer {
    /// The canonical text the signature covers (see the module doc).
    pub fn signed_bytes(seq: u64, head_hash: &str, time: Timestamp, signer: &str) -> Vec<u8> {
        format!("pecd-trace-export-v1\nseq={seq}\nhead={head_hash}\ntime={time}\nsigner={signer}\n")
            .into_bytes()
    }

    /// Signs the end `(seq, head_hash)` of an export made at `time`.
    pub fn sign(
        signer: &Signer,
        seq: u64,
        head_hash: &str,
        time: Timestamp,
    ) -> Result<Self, SmimeError> {
        let signer_sha256 = cert_sha256(signer.certificate());
        let sig = signer.sign_raw(&Self::signed_bytes(seq, head_hash, time, &signer_sha256))?;
        let der = signer
            .certificate()
            .to_der()
            .map_err(|e| SmimeError::OpenSsl {
                doing: "encoding the signing certificate",
                detail: e.to_string(),
            })?;
        Ok(Self {
            seq,
            head_hash: head_hash.to_string(),
            time,
            signer_sha256,
            cert: B64.encode(der),
            signature: B64.encode(sig),
        })
    }

    /// Checks the signature, that the certificate is the one named, and that it is one of
    /// the `trusted` certificates (an empty set accepts any).
    pub fn verify(&self, trusted: &TrustedSigners) -> Result<(), String> {
        let der = B64
            .decode(self.cert.as_bytes())
            .map_err(|e| format!("certificate is not base64: {e}"))?;
        let cert = X509::from_der(&der).map_err(|e| format!("certificate unreadable: {e}"))?;
        let actual = cert_sha256(&cert);
        if !actual.eq_ignore_ascii_case(&self.signer_sha256) {
            return Err(format!(
                "the certificate is {actual}, but the trailer names {}",
                self.signer_sha256
            ));
        }
        check_trusted(&actual, trusted)?;
        let sig = B64
            .decode(self.signature.as_bytes())
            .map_err(|e| format!("signature is not base64: {e}"))?;
        let content = Self::signed_bytes(self.seq, &self.head_hash, self.time, &self.signer_sha256);
        let valid = cert
            .public_key()
            .and_then(|pk| {
                let mut v = openssl::sign::Verifier::new(MessageDigest::sha256(), &pk)?;
                v.update(&content)?;
                v.verify(&sig)
            })
            .unwrap_or(false);
        if !valid {
            return Err("invalid signature".into());
        }
        Ok(())
    }
}

/// The certificates whose checkpoint and trailer signatures are accepted, by upper-case
/// hex SHA-256 of their DER. Empty: any valid signature is accepted (not pinned).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedSigners {
    sha256: Vec<String>,
}

impl TrustedSigners {
    /// Accepts any valid signer.
    pub fn any() -> Self {
        Self::default()
    }

    /// Accepts the given certificate hashes (the current provider certificate first).
    pub fn pinned(sha256: impl IntoIterator<Item = String>) -> Self {
        let mut out = Self::default();
        for h in sha256 {
            out.add(h);
        }
        out
    }

    /// Adds a trusted certificate hash.
    pub fn add(&mut self, sha256: String) {
        let h = sha256.to_ascii_uppercase();
        if !self.sha256.contains(&h) {
            self.sha256.push(h);
        }
    }

    /// Whether signers are checked against known certificates.
    pub fn is_pinned(&self) -> bool {
        !self.sha256.is_empty()
    }

    /// The trusted hashes.
    pub fn hashes(&self) -> &[String] {
        &self.sha256
    }

    fn accepts(&self, signer: &str) -> bool {
        self.sha256.is_empty() || self.sha256.iter().any(|h| h.eq_ignore_ascii_case(signer))
    }
}

impl From<Option<String>> for TrustedSigners {
    fn from(one: Option<String>) -> Self {
        Self::pinned(one)
    }
}

impl From<Vec<String>> for TrustedSigners {
    fn from(all: Vec<String>) -> Self {
        Self::pinned(all)
    }
}

/// Verifies a detached signature over `content` made by `named` (the hash the statement
/// claims) and accepted by `trusted`.
fn verify_statement(
    content: &[u8],
    signature_b64: &str,
    named: &str,
    trusted: &TrustedSigners,
) -> Result<(), String> {
    let sig = B64
        .decode(signature_b64.as_bytes())
        .map_err(|e| format!("signature is not base64: {e}"))?;
    let check = verify_detached(content, &sig, None);
    if !check.valid {
        return Err(format!(
            "invalid signature: {}",
            check.reason.unwrap_or_else(|| "no reason given".into())
        ));
    }
    let signer = check.signer.map(|s| s.sha256).unwrap_or_default();
    if !signer.eq_ignore_ascii_case(named) {
        return Err(format!(
            "signed by certificate {signer}, but the statement names {named}"
        ));
    }
    check_trusted(&signer, trusted)
}

fn check_trusted(signer: &str, trusted: &TrustedSigners) -> Result<(), String> {
    if !trusted.accepts(signer) {
        return Err(format!(
            "signed by certificate {signer}, which is not a trusted provider certificate ({}); \
             after a certificate renewal pass the previous one with --cert or signing.previous_certs",
            trusted.sha256.join(", ")
        ));
    }
    Ok(())
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
        let pinned = TrustedSigners::from(Some(me.clone()));
        assert_eq!(cp.verify(&pinned), Ok(()));
        assert_eq!(cp.verify(&TrustedSigners::any()), Ok(()));
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
            assert!(c.verify(&pinned).is_err(), "altering {what} must fail");
        }
        let foreign = Checkpoint::sign(&other, 10, &"ab".repeat(32), t, 0).unwrap();
        let err = foreign.verify(&pinned).unwrap_err();
        assert!(err.contains("not a trusted provider certificate"), "{err}");
        // Rollover: the previous certificate, once trusted, is accepted alongside.
        let both = TrustedSigners::pinned([me.clone(), cert_sha256(other.certificate())]);
        assert_eq!(foreign.verify(&both), Ok(()));
    }

    #[test]
    fn trailer_signature_covers_seq_head_and_time() {
        let signer = test_signer("trace test");
        let pinned = TrustedSigners::from(Some(cert_sha256(signer.certificate())));
        let t: Timestamp = "2025-02-01T00:00:00Z".parse().unwrap();
        let tr = ExportTrailer::sign(&signer, 7, &"ab".repeat(32), t).unwrap();
        assert_eq!(tr.verify(&pinned), Ok(()));
        let mut c = tr.clone();
        c.seq = 6;
        assert!(c.verify(&pinned).is_err());
        let mut c = tr.clone();
        c.head_hash = "cd".repeat(32);
        assert!(c.verify(&pinned).is_err());
        // Another certificate swapped in, named or not.
        let other = test_signer("someone else");
        let mut c = tr.clone();
        c.cert = B64.encode(other.certificate().to_der().unwrap());
        assert!(
            c.verify(&pinned)
                .unwrap_err()
                .contains("but the trailer names")
        );
        c.signer_sha256 = cert_sha256(other.certificate());
        assert!(c.verify(&pinned).unwrap_err().contains("not a trusted"));
        assert_eq!(
            c.verify(&TrustedSigners::any()),
            Err("invalid signature".into())
        );
    }
}
