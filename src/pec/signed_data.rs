//! The detached CMS SignedData pecd signs with (RFC 5652 §5), encoded from a template
//! made once per signing identity instead of by OpenSSL's `CMS_sign` per message.
//!
//! Why by hand: every PEC message costs two to four signatures, and besides the private
//! key operation `CMS_sign` spent about as much again building and freeing its ASN.1
//! objects (copying the certificates and the issuer name, looking up algorithms): 8.9 %
//! of one hop's CPU, measured with `perf`. Everything here but the signed attributes is
//! the same for every message, so it is encoded once; the key operation stays OpenSSL's
//! (`EVP_DigestSign`, SHA-256, PKCS#1 v1.5 for RSA, ECDSA for EC).
//!
//! The output is the DER `CMS_sign` makes with pecd's flags (detached, binary, no
//! SMIMECapabilities): the same fields in the same order, signed attributes contentType,
//! signingTime and messageDigest, the signer's certificate and chain in the certificates
//! set (sorted by encoding, as DER requires), the signer named by issuer and serial
//! number. For an RSA key the bytes are identical to OpenSSL's for the same signing time
//! (PKCS#1 v1.5 is deterministic), which the unit tests check. Keys of any other type
//! (RSA-PSS, Ed25519) get no template, and the caller signs through OpenSSL.
//!
//! Owns: DER encoding of that one structure. Distrusts: nothing; its inputs are the
//! provider's own certificates and key, already parsed by OpenSSL, and bytes to sign.
//! Reads the clock for the signing time, as `CMS_sign` does.

use openssl::hash::MessageDigest;
use openssl::pkey::{Id, PKey, Private};
use openssl::x509::X509;

/// `id-signedData` 1.2.840.113549.1.7.2.
const OID_SIGNED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02];
/// `id-data` 1.2.840.113549.1.7.1.
const OID_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01];
/// `id-sha256` 2.16.840.1.101.3.4.2.1.
const OID_SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
/// `id-contentType` 1.2.840.113549.1.9.3.
const OID_CONTENT_TYPE: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x03];
/// `id-messageDigest` 1.2.840.113549.1.9.4.
const OID_MESSAGE_DIGEST: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x04];
/// `id-signingTime` 1.2.840.113549.1.9.5.
const OID_SIGNING_TIME: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x05];
/// `rsaEncryption` 1.2.840.113549.1.1.1 (with NULL parameters, as OpenSSL writes it).
const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
/// `ecdsa-with-SHA256` 1.2.840.10045.4.3.2 (no parameters).
const OID_ECDSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const CONTEXT_0: u8 = 0xa0;
const INTEGER: u8 = 0x02;
const OCTET_STRING: u8 = 0x04;
const NULL: u8 = 0x05;
const OID: u8 = 0x06;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// Appends a DER tag-length-value to `out`.
fn tlv(out: &mut Vec<u8>, tag: u8, value: &[u8]) {
    out.push(tag);
    let n = value.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes = n.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(value);
}

fn wrap(tag: u8, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + 6);
    tlv(&mut out, tag, value);
    out
}

/// An AlgorithmIdentifier: the OID and, if given, NULL parameters.
fn algorithm(oid: &[u8], null_params: bool) -> Vec<u8> {
    let mut inner = wrap(OID, oid);
    if null_params {
        tlv(&mut inner, NULL, &[]);
    }
    wrap(SEQUENCE, &inner)
}

/// What does not change from one signature to the next, encoded once.
#[derive(Debug, Clone)]
pub(crate) struct Template {
    /// `[0] IMPLICIT SET OF Certificate`, whole.
    certificates: Vec<u8>,
    /// The SignerInfo's `sid`: `IssuerAndSerialNumber`, whole.
    sid: Vec<u8>,
    /// The SignerInfo's `signatureAlgorithm`, whole.
    signature_algorithm: Vec<u8>,
}

/// Why a template could not be made (the caller then signs through OpenSSL).
#[derive(Debug, thiserror::Error)]
pub(crate) enum TemplateError {
    #[error("keys of type {0:?} are signed through OpenSSL's CMS")]
    KeyType(Id),
    #[error("OpenSSL failed while {0}: {1}")]
    OpenSsl(&'static str, openssl::error::ErrorStack),
}

impl Template {
    /// The template for `cert` (the signer's) and `chain`, signing with a key of `key`'s
    /// type.
    pub(crate) fn new(
        cert: &X509,
        chain: &[X509],
        key: &PKey<Private>,
    ) -> Result<Self, TemplateError> {
        let signature_algorithm = match key.id() {
            Id::RSA => algorithm(OID_RSA, true),
            Id::EC => algorithm(OID_ECDSA_SHA256, false),
            other => return Err(TemplateError::KeyType(other)),
        };
        let mut ders = Vec::with_capacity(1 + chain.len());
        for c in std::iter::once(cert).chain(chain) {
            ders.push(
                c.to_der()
                    .map_err(|e| TemplateError::OpenSsl("encoding a certificate", e))?,
            );
        }
        // DER: the elements of a SET OF in the order of their encodings. A chain file that
        // repeats a certificate (the signer's own, in a "full chain") names it once
        // (OpenSSL 3.0's CMS_sign refused such a chain; 3.2 skips the repeat too).
        ders.sort();
        ders.dedup();
        let certificates = wrap(CONTEXT_0, &ders.concat());
        let issuer = cert
            .issuer_name()
            .to_der()
            .map_err(|e| TemplateError::OpenSsl("encoding the issuer's name", e))?;
        let serial = cert
            .serial_number()
            .to_bn()
            .map_err(|e| TemplateError::OpenSsl("reading the serial number", e))?;
        let mut sid = issuer;
        tlv(
            &mut sid,
            INTEGER,
            &integer(&serial.to_vec(), serial.is_negative()),
        );
        Ok(Self {
            certificates,
            sid: wrap(SEQUENCE, &sid),
            signature_algorithm,
        })
    }

    /// The detached SignedData over `content`, signed with `key` at the current time.
    pub(crate) fn sign(
        &self,
        key: &PKey<Private>,
        content: &[u8],
    ) -> Result<Vec<u8>, openssl::error::ErrorStack> {
        self.sign_at(key, content, &signing_time(jiff::Timestamp::now()))
    }

    /// [`Template::sign`] with the encoded signing time `time` (a whole `Time` TLV).
    fn sign_at(
        &self,
        key: &PKey<Private>,
        content: &[u8],
        time: &[u8],
    ) -> Result<Vec<u8>, openssl::error::ErrorStack> {
        let digest = openssl::sha::sha256(content);
        // The three attributes, in the order of their encodings (DER's SET OF).
        let attribute = |oid: &[u8], value: &[u8]| {
            let mut a = wrap(OID, oid);
            tlv(&mut a, SET, value);
            wrap(SEQUENCE, &a)
        };
        let mut each = [
            attribute(OID_CONTENT_TYPE, &wrap(OID, OID_DATA)),
            attribute(OID_SIGNING_TIME, time),
            attribute(OID_MESSAGE_DIGEST, &wrap(OCTET_STRING, &digest)),
        ];
        each.sort();
        let attrs = each.concat();
        // The signature covers the attributes encoded as a SET (RFC 5652 §5.4); they
        // travel with the implicit tag [0] instead.
        let mut signer = openssl::sign::Signer::new(MessageDigest::sha256(), key)?;
        signer.update(&wrap(SET, &attrs))?;
        let signature = signer.sign_to_vec()?;

        let sha256 = algorithm(OID_SHA256, false);
        let mut si = wrap(INTEGER, &[1]);
        si.extend_from_slice(&self.sid);
        si.extend_from_slice(&sha256);
        tlv(&mut si, CONTEXT_0, &attrs);
        si.extend_from_slice(&self.signature_algorithm);
        tlv(&mut si, OCTET_STRING, &signature);
        let signer_infos = wrap(SET, &wrap(SEQUENCE, &si));

        let mut sd = Vec::with_capacity(self.certificates.len() + signer_infos.len() + 64);
        tlv(&mut sd, INTEGER, &[1]);
        tlv(&mut sd, SET, &sha256);
        tlv(&mut sd, SEQUENCE, &wrap(OID, OID_DATA));
        sd.extend_from_slice(&self.certificates);
        sd.extend_from_slice(&signer_infos);

        let mut ci = wrap(OID, OID_SIGNED_DATA);
        tlv(&mut ci, CONTEXT_0, &wrap(SEQUENCE, &sd));
        Ok(wrap(SEQUENCE, &ci))
    }
}

/// The content octets of a DER INTEGER whose magnitude is `magnitude` (big-endian).
fn integer(magnitude: &[u8], negative: bool) -> Vec<u8> {
    let trimmed: &[u8] = match magnitude.iter().position(|b| *b != 0) {
        Some(i) => &magnitude[i..],
        None => &[],
    };
    if trimmed.is_empty() {
        return vec![0];
    }
    if !negative {
        let mut v = Vec::with_capacity(trimmed.len() + 1);
        if trimmed[0] & 0x80 != 0 {
            v.push(0);
        }
        v.extend_from_slice(trimmed);
        return v;
    }
    // Two's complement of the magnitude (a certificate's serial is positive by RFC 5280,
    // but OpenSSL accepts a negative one, and so does this).
    let mut v: Vec<u8> = trimmed.iter().map(|b| !b).collect();
    for b in v.iter_mut().rev() {
        let (sum, carry) = b.overflowing_add(1);
        *b = sum;
        if !carry {
            break;
        }
    }
    if v[0] & 0x80 == 0 {
        v.insert(0, 0xff);
    }
    v
}

/// The signing time as RFC 5652 §11.3 has it: UTCTime from 1950 to 2049, GeneralizedTime
/// otherwise, to the second, in UTC.
fn signing_time(t: jiff::Timestamp) -> Vec<u8> {
    let year = t.to_zoned(jiff::tz::TimeZone::UTC).year();
    if (1950..2050).contains(&year) {
        wrap(UTC_TIME, t.strftime("%y%m%d%H%M%SZ").to_string().as_bytes())
    } else {
        wrap(
            GENERALIZED_TIME,
            t.strftime("%Y%m%d%H%M%SZ").to_string().as_bytes(),
        )
    }
}

#[cfg(test)]
mod tests {
    //! Unit tests: their unwraps see only keys, certificates and signatures made here.
    use super::*;
    use openssl::asn1::Asn1Time;
    use openssl::bn::BigNum;
    use openssl::cms::{CMSOptions, CmsContentInfo};
    use openssl::ec::{EcGroup, EcKey};
    use openssl::nid::Nid;
    use openssl::rsa::Rsa;
    use openssl::stack::Stack;
    use openssl::x509::store::X509StoreBuilder;
    use openssl::x509::{X509Builder, X509NameBuilder};

    fn cert(
        cn: &str,
        key: &PKey<Private>,
        issuer: Option<(&X509, &PKey<Private>)>,
        serial: &[u8],
    ) -> X509 {
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_nid(Nid::COMMONNAME, cn).unwrap();
        name.append_entry_by_nid(Nid::ORGANIZATIONNAME, "Gestore di prova")
            .unwrap();
        let name = name.build();
        let mut b = X509Builder::new().unwrap();
        b.set_version(2).unwrap();
        let serial = BigNum::from_slice(serial)
            .unwrap()
            .to_asn1_integer()
            .unwrap();
        b.set_serial_number(&serial).unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(issuer.map_or(&*name, |(c, _)| c.subject_name()))
            .unwrap();
        b.set_pubkey(key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::days_from_now(30).unwrap())
            .unwrap();
        b.sign(issuer.map_or(key, |(_, k)| k), MessageDigest::sha256())
            .unwrap();
        b.build()
    }

    fn rsa() -> PKey<Private> {
        PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap()
    }

    /// What OpenSSL makes with pecd's flags.
    fn openssl_cms(cert: &X509, key: &PKey<Private>, chain: &[X509], content: &[u8]) -> Vec<u8> {
        let mut stack = Stack::new().unwrap();
        for c in chain {
            stack.push(c.clone()).unwrap();
        }
        CmsContentInfo::sign(
            Some(cert),
            Some(key),
            Some(&stack),
            Some(content),
            CMSOptions::DETACHED | CMSOptions::BINARY | CMSOptions::NOSMIMECAP,
        )
        .unwrap()
        .to_der()
        .unwrap()
    }

    /// The signing time OpenSSL wrote (the TLV after the signingTime OID and its SET).
    fn time_in(der: &[u8]) -> Vec<u8> {
        let at = der
            .windows(OID_SIGNING_TIME.len())
            .position(|w| w == OID_SIGNING_TIME)
            .unwrap()
            + OID_SIGNING_TIME.len();
        // SET tag and length, then the time's tag, length and value.
        let len = der[at + 3] as usize;
        der[at + 2..at + 4 + len].to_vec()
    }

    #[test]
    fn an_rsa_signature_is_byte_for_byte_what_openssl_makes() {
        let ca_key = rsa();
        let ca = cert("CA di prova", &ca_key, None, &[0x01]);
        let mid_key = rsa();
        let mid = cert("CA intermedia", &mid_key, Some((&ca, &ca_key)), &[0x02]);
        let key = rsa();
        // Serials: the first byte's high bit set (DER needs a leading zero), zero, and
        // 20 bytes (RFC 5280's longest).
        let mut long = vec![0xc3; 20];
        long[19] = 0x01;
        for serial in [&[0x9f, 0x01, 0x00][..], &[0x00], &long] {
            let signer = cert(
                "posta-certificata@pec.example.it",
                &key,
                Some((&mid, &mid_key)),
                serial,
            );
            for chain in [vec![], vec![mid.clone()], vec![mid.clone(), ca.clone()]] {
                let t = Template::new(&signer, &chain, &key).unwrap();
                for content in [&b""[..], b"hello\r\n", &vec![b'x'; 70_000]] {
                    let theirs = openssl_cms(&signer, &key, &chain, content);
                    let ours = t.sign_at(&key, content, &time_in(&theirs)).unwrap();
                    assert_eq!(hex::encode(&ours), hex::encode(&theirs));
                }
            }
        }
    }

    #[test]
    fn a_chain_that_repeats_the_signers_certificate_names_it_once() {
        let ca_key = rsa();
        let ca = cert("CA di prova", &ca_key, None, &[0x01]);
        let key = rsa();
        let signer = cert("firma", &key, Some((&ca, &ca_key)), &[0x42]);
        let t = Template::new(&signer, &[signer.clone(), ca.clone(), ca.clone()], &key).unwrap();
        let der = t.sign(&key, b"x").unwrap();
        let count = |c: &X509| {
            let c = c.to_der().unwrap();
            der.windows(c.len()).filter(|w| *w == &c[..]).count()
        };
        assert_eq!((count(&signer), count(&ca)), (1, 1));
        assert_eq!(
            CmsContentInfo::from_der(&der).unwrap().to_der().unwrap(),
            der
        );
    }

    #[test]
    fn signatures_verify_with_openssl_for_rsa_and_ec_keys() {
        let ca_key = rsa();
        let ca = cert("CA di prova", &ca_key, None, &[0x01]);
        let ec = PKey::from_ec_key(
            EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()).unwrap(),
        )
        .unwrap();
        for key in [rsa(), ec] {
            let signer = cert("firma", &key, Some((&ca, &ca_key)), &[0x42]);
            let t = Template::new(&signer, std::slice::from_ref(&ca), &key).unwrap();
            let content = b"Subject: prova\r\n\r\ncorpo\r\n";
            let der = t.sign(&key, content).unwrap();
            // What OpenSSL reads back it encodes to the same bytes (ECDSA signatures are
            // randomized, so this stands for a comparison with CMS_sign's output).
            assert_eq!(
                CmsContentInfo::from_der(&der).unwrap().to_der().unwrap(),
                der
            );
            let mut cms = CmsContentInfo::from_der(&der).unwrap();
            let mut store = X509StoreBuilder::new().unwrap();
            store.add_cert(ca.clone()).unwrap();
            let store = store.build();
            // The chain's own checks are smime's (with the real PKI); here the signature.
            let flags = CMSOptions::BINARY | CMSOptions::NO_SIGNER_CERT_VERIFY;
            cms.verify(None, Some(&store), Some(content), None, flags)
                .unwrap();
            // Another content does not verify.
            let mut cms = CmsContentInfo::from_der(&der).unwrap();
            assert!(
                cms.verify(None, Some(&store), Some(b"altro"), None, flags)
                    .is_err()
            );
        }
    }

    #[test]
    fn lengths_integers_and_times_are_encoded_as_der_wants() {
        for (n, head) in [
            (0usize, vec![0x04, 0x00]),
            (127, vec![0x04, 0x7f]),
            (128, vec![0x04, 0x81, 0x80]),
            (256, vec![0x04, 0x82, 0x01, 0x00]),
            (70_000, vec![0x04, 0x83, 0x01, 0x11, 0x70]),
        ] {
            let mut out = Vec::new();
            tlv(&mut out, OCTET_STRING, &vec![0; n]);
            assert_eq!(out[..head.len()], head[..], "length {n}");
            assert_eq!(out.len(), head.len() + n);
        }
        assert_eq!(integer(&[0, 0, 0x7f], false), vec![0x7f]);
        assert_eq!(integer(&[0x80], false), vec![0x00, 0x80]);
        assert_eq!(integer(&[], false), vec![0x00]);
        assert_eq!(integer(&[0x01], true), vec![0xff]);
        assert_eq!(integer(&[0x80], true), vec![0x80]);
        assert_eq!(integer(&[0x81], true), vec![0xff, 0x7f]);
        let t: jiff::Timestamp = "2026-12-08T09:05:03Z".parse().unwrap();
        assert_eq!(signing_time(t), wrap(UTC_TIME, b"261208090503Z"));
        let t: jiff::Timestamp = "2051-01-02T03:04:05Z".parse().unwrap();
        assert_eq!(signing_time(t), wrap(GENERALIZED_TIME, b"20510102030405Z"));
    }
}
