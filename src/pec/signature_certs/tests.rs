//! Splitting signatures made by a [`Signer`] of a dev PKI, and the same bytes damaged or
//! re-encoded on purpose. Unwraps: fixtures made here.

use std::path::Path;
use std::sync::OnceLock;

use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;

use super::*;
use crate::pec::address::Domain;
use crate::pec::smime::{Signer, TrustAnchors, verify_detached};
use crate::pki::{PkiFiles, generate_dev_pki};

const CONTENT: &[u8] = b"Content-Type: text/plain\r\n\r\nMessaggio di prova\r\n";

fn pki() -> &'static (tempfile::TempDir, PkiFiles) {
    static PKI: OnceLock<(tempfile::TempDir, PkiFiles)> = OnceLock::new();
    PKI.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let domain = Domain::parse("pec.example.test").unwrap();
        let files =
            generate_dev_pki(&dir.path().join("certs"), &domain, "Acme PEC", false).unwrap();
        (dir, files)
    })
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

/// A signer embedding its certificate and the CA's, as a provider with a chain does.
fn signer() -> Signer {
    let f = &pki().1;
    Signer::from_pem(
        &read(&f.signing_cert),
        &read(&f.signing_key),
        &read(&f.ca_cert),
    )
    .unwrap()
}

fn trust() -> TrustAnchors {
    TrustAnchors::from_pem(&read(&pki().1.ca_cert)).unwrap()
}

/// The DER of the certificates OpenSSL finds in `der`, in order.
fn embedded(der: &[u8]) -> Vec<Vec<u8>> {
    Pkcs7::from_der(der)
        .unwrap()
        .signed()
        .and_then(|s| s.certificates())
        .map(|s| s.iter().map(|c| c.to_der().unwrap()).collect())
        .unwrap_or_default()
}

/// `der` with its outer SEQUENCE re-encoded with an indefinite length (BER), as some
/// signing tools write it.
fn indefinite(der: &[u8]) -> Vec<u8> {
    let outer = element(der).unwrap();
    let mut ber = vec![0x30, 0x80];
    ber.extend_from_slice(outer.content);
    ber.extend_from_slice(&[0, 0]);
    ber
}

/// `der` with its SignedData re-made by `edit` (given its content, returning the new
/// content) and every enclosing length written again; the [0] wrapper's identifier is
/// `explicit_id`.
fn rebuild(der: &[u8], explicit_id: &[u8], edit: impl Fn(&[u8]) -> Vec<u8>) -> Vec<u8> {
    let info = element(der).unwrap();
    let oid = element(info.content).unwrap();
    let explicit = element(oid.rest).unwrap();
    let signed = element(explicit.content).unwrap();
    let content = edit(signed.content);
    let mut signed_tlv = header(Class::Universal, Tag::Sequence, content.len()).unwrap();
    signed_tlv.extend_from_slice(&content);
    let explicit_len = header(Class::ContextSpecific, Tag(0), signed_tlv.len()).unwrap();
    let mut inner = info.content[..info.content.len() - oid.rest.len()].to_vec();
    inner.extend_from_slice(explicit_id);
    inner.extend_from_slice(&explicit_len[1..]);
    inner.extend_from_slice(&signed_tlv);
    let mut out = header(Class::Universal, Tag::Sequence, inner.len()).unwrap();
    out.extend_from_slice(&inner);
    out
}

/// `der` with its certificates field written twice.
fn with_second_certificates_field(der: &[u8]) -> Vec<u8> {
    rebuild(der, &[0xa0], |content| {
        let mut at = content;
        for _ in 0..3 {
            at = element(at).unwrap().rest;
        }
        let field = element(at).unwrap();
        let field_tlv = &at[..at.len() - field.rest.len()];
        let mut out = content[..content.len() - at.len()].to_vec();
        out.extend_from_slice(field_tlv);
        out.extend_from_slice(field_tlv);
        out.extend_from_slice(field.rest);
        out
    })
}

/// `der` with the [0] wrapper of its SignedData identified by `id`.
fn with_explicit_identifier(der: &[u8], id: &[u8]) -> Vec<u8> {
    rebuild(der, id, <[u8]>::to_vec)
}

#[test]
fn a_signature_comes_apart_into_its_certificates_and_the_rest() {
    let sig = signer().sign_detached(CONTENT).unwrap();
    let s = split(&sig).expect("a signer's signature splits");
    let carried = embedded(&sig);
    assert_eq!(carried.len(), 2, "the signing certificate and the CA's");
    assert_eq!(
        s.certs,
        carried.iter().map(Vec::as_slice).collect::<Vec<_>>()
    );
    // The rest is the same SignedData without them: OpenSSL reads it, finds no
    // certificate in it, and writes it back byte for byte.
    let bare = Pkcs7::from_der(&s.bare).unwrap();
    assert!(bare.signed().unwrap().certificates().is_none());
    assert_eq!(bare.to_der().unwrap(), s.bare);
    assert_eq!(
        s.bare.len() + carried.iter().map(Vec::len).sum::<usize>() + 4,
        sig.len(),
        "only the certificates and their field's header are gone"
    );

    let parsed = parse(&sig).unwrap();
    let got: Vec<Vec<u8>> = parsed.certs.iter().map(|c| c.to_der().unwrap()).collect();
    assert_eq!(got, carried);

    // Verification through the split signature judges as before.
    let check = verify_detached(CONTENT, &sig, Some(&trust()));
    assert!(check.valid, "{check:?}");
    assert_eq!(check.chain_ok, Some(true), "{check:?}");
    assert_eq!(
        check.signer_cert.unwrap().to_der().unwrap(),
        carried[0],
        "the signer is the signing certificate"
    );
    let mut changed = CONTENT.to_vec();
    changed[30] ^= 1;
    let check = verify_detached(&changed, &sig, Some(&trust()));
    assert!(!check.valid, "{check:?}");
}

#[test]
fn other_shapes_are_left_whole_to_openssl_and_judged_as_before() {
    let sig = signer().sign_detached(CONTENT).unwrap();

    // BER with an indefinite length: OpenSSL reads it, the split does not.
    let ber = indefinite(&sig);
    assert!(split(&ber).is_none());
    let parsed = parse(&ber).unwrap();
    let got: Vec<Vec<u8>> = parsed.certs.iter().map(|c| c.to_der().unwrap()).collect();
    assert_eq!(got, embedded(&sig));
    let check = verify_detached(CONTENT, &ber, Some(&trust()));
    assert!(check.valid && check.chain_ok == Some(true), "{check:?}");

    // Two certificates fields: OpenSSL refuses the bytes; cutting out the first would
    // make the second one the certificates field of a signature it reads.
    let two = with_second_certificates_field(&sig);
    assert!(split(&two).is_none());
    assert!(parse(&two).is_err());
    let check = verify_detached(CONTENT, &two, Some(&trust()));
    assert!(!check.valid, "{check:?}");

    // The [0] wrapper written with a long tag number that wraps to 0 in 32 bits: OpenSSL
    // refuses it, and so must the split.
    assert_eq!(
        with_explicit_identifier(&sig, &[0xa0]),
        sig,
        "the rebuild alone changes nothing"
    );
    let long = with_explicit_identifier(&sig, &[0xbf, 0x90, 0x80, 0x80, 0x80, 0x00]);
    assert!(split(&long).is_none());
    assert!(parse(&long).is_err());

    // Bytes after the signature.
    let mut trailing = sig.clone();
    trailing.push(0);
    assert!(split(&trailing).is_none());

    // Another content type than signedData (pkcs7-data, …7.1).
    let oid_at = sig
        .windows(SIGNED_DATA_OID.len())
        .position(|w| w == SIGNED_DATA_OID)
        .unwrap();
    let mut data = sig.clone();
    data[oid_at + SIGNED_DATA_OID.len() - 1] = 0x01;
    assert!(split(&data).is_none());

    // No certificates at all: nothing to split, and no signer to find.
    let f = &pki().1;
    let bare_signer = Signer::from_pem(&read(&f.signing_cert), &read(&f.signing_key), b"").unwrap();
    let one = bare_signer.sign_detached(CONTENT).unwrap();
    assert_eq!(split(&one).unwrap().certs.len(), 1);
    let none = split(&one).unwrap().bare;
    assert!(split(&none).is_none());
    let check = verify_detached(CONTENT, &none, Some(&trust()));
    assert!(!check.valid, "{check:?}");
    assert_eq!(
        check.reason.as_deref(),
        Some("the signer certificate is not inside the signature")
    );
}

#[test]
fn damaged_signatures_are_never_split_past_their_bytes_and_never_panic() {
    let sig = signer().sign_detached(CONTENT).unwrap();
    // A signature cut anywhere: its lengths no longer add up.
    for n in 0..sig.len() {
        assert!(split(&sig[..n]).is_none(), "split a prefix of {n} bytes");
        let _ = parse(&sig[..n]);
    }
    // Every byte flipped in turn: whatever is split stays inside the input, and the
    // certificates given back are exactly bytes of it.
    for i in 0..sig.len() {
        let mut bad = sig.clone();
        bad[i] ^= 0xff;
        if let Some(s) = split(&bad) {
            assert!(s.bare.len() < bad.len());
            for c in &s.certs {
                let at = c.as_ptr() as usize - bad.as_ptr() as usize;
                assert!(at + c.len() <= bad.len());
            }
        }
        if let Ok(p) = parse(&bad) {
            for c in &p.certs {
                let der = c.to_der().unwrap();
                assert!(bad.windows(der.len()).any(|w| w == der.as_slice()));
            }
        }
    }
}

#[test]
fn a_certificate_is_parsed_once_and_the_map_stays_bounded() {
    let f = &pki().1;
    let ca = X509::from_pem(&read(&f.ca_cert)).unwrap();
    let ca_key = PKey::private_key_from_pem(&read(&f.ca_key)).unwrap();
    let leaf_key = PKey::private_key_from_pem(&read(&f.signing_key)).unwrap();
    // A certificate for the signing key issued by the CA, with `serial` and `dns_names`.
    let make_with = |serial: u32, dns_names: usize| {
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        b.set_serial_number(&BigNum::from_u32(serial).unwrap().to_asn1_integer().unwrap())
            .unwrap();
        b.set_subject_name(ca.subject_name()).unwrap();
        b.set_issuer_name(ca.subject_name()).unwrap();
        b.set_pubkey(&leaf_key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::days_from_now(1).unwrap())
            .unwrap();
        if dns_names > 0 {
            let mut san = openssl::x509::extension::SubjectAlternativeName::new();
            for i in 0..dns_names {
                san.dns(&format!("host-{i:05}.pec.example.test"));
            }
            let ext = san.build(&b.x509v3_context(Some(&ca), None)).unwrap();
            b.append_extension(ext).unwrap();
        }
        b.sign(&ca_key, MessageDigest::sha256()).unwrap();
        b.build().to_der().unwrap()
    };
    let make = |serial: u32| make_with(serial, 0);
    let first = make(1);
    assert!(!cached(&first));
    assert_eq!(certificate(&first).unwrap().to_der().unwrap(), first);
    assert!(cached(&first), "kept after the first parse");
    assert_eq!(certificate(&first).unwrap().to_der().unwrap(), first);

    for serial in 2..(CAPACITY as u32 + 40) {
        let der = make(serial);
        assert_eq!(
            certificate(&der).unwrap().to_der().unwrap(),
            der,
            "the certificate of these bytes, never another"
        );
        assert!(cached_len() <= CAPACITY);
    }
    assert!(certificate(b"\x30\x03\x02\x01\x01").is_err());

    // A certificate larger than any real one is parsed, and not kept.
    let big = make_with(1, 1000);
    assert!(big.len() > MAX_CACHED_LEN);
    assert_eq!(certificate(&big).unwrap().to_der().unwrap(), big);
    assert!(!cached(&big));
}
