//! Real provider messages from `../shared/samples/` (see its README for sources and
//! licences; they are read in place, never copied). Each case says what the sample proves.
//! Skipped, with the reason printed, when `../shared` is absent (a plain clone).

use std::path::PathBuf;

use pecd::pec::classify::{Kind, classify};
use pecd::pec::daticert::{Errore, Tipo, TipoRicevuta};
use pecd::report;

fn samples_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/samples");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "SKIP: {} is absent (a clone without ../shared); the real-sample tests did not run",
            dir.display()
        );
        None
    }
}

fn load(rel: &str) -> Option<Vec<u8>> {
    let dir = samples_dir()?;
    Some(std::fs::read(dir.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}")))
}

/// Aruba 2014 acceptance receipt, CRLF, SHA-1, x-pkcs7-signature: a real signature that
/// must verify over the CRLF-canonical signed part.
#[test]
fn aruba_acceptance_receipt_verifies() {
    let Some(raw) = load("oca-l10n-italy-7.0/message2_accettazione") else {
        return;
    };
    let c = classify(&raw).unwrap();
    assert_eq!(c.certified().map(|d| d.tipo), Ok(Tipo::Accettazione));
    let r = report::verify(&raw, None).unwrap();
    assert_eq!(r.kind, "accettazione");
    assert!(r.signature.valid, "{:?}", r.signature.reason);
    assert!(
        r.signature
            .signer_subject
            .as_deref()
            .unwrap_or("")
            .contains("ARUBA PEC"),
        "{:?}",
        r.signature.signer_subject
    );
    assert_eq!(r.signature.signer_sha1.as_ref().map(String::len), Some(40));
    let d = r.daticert.as_ref().expect("daticert");
    assert_eq!(d.tipo, "accettazione");
    assert_eq!(d.mittente, "l.battistini@pec.it");
    assert_eq!(
        d.identificativo,
        "opec275.20141114182632.23219.07.1.48@pec.aruba.it"
    );
    assert!(r.ok, "{:?}", r.reasons);
}

/// The matching Aruba delivery receipt (completa): carries the original, whose Message-ID
/// is the PEC identifier.
#[test]
fn aruba_delivery_receipt_completa_verifies_and_carries_the_original() {
    let Some(raw) = load("oca-l10n-italy-7.0/message2_consegna") else {
        return;
    };
    let c = classify(&raw).unwrap();
    assert_eq!(c.kind, Kind::Receipt(Tipo::AvvenutaConsegna));
    // Daticert read from the signed content, its tipo agreeing with X-Ricevuta.
    assert_eq!(c.certified().map(|d| d.tipo), Ok(Tipo::AvvenutaConsegna));
    let d = c.daticert.clone().unwrap().unwrap();
    assert_eq!(d.ricevuta, Some(TipoRicevuta::Completa));
    assert!(d.consegna.is_some());
    assert!(
        c.postacert.is_some(),
        "completa receipts carry postacert.eml"
    );
    let r = report::verify(&raw, None).unwrap();
    assert!(r.signature.valid, "{:?}", r.signature.reason);
    assert!(r.ok, "{:?}", r.reasons);
}

/// Sogei 2018 transport envelope requesting breve receipts (AgID CA1 issuer).
#[test]
fn sogei_transport_envelope_verifies() {
    let Some(raw) = load("oca-l10n-italy/POSTA CERTIFICATA_ Invio File 7339338.txt") else {
        return;
    };
    let c = classify(&raw).unwrap();
    assert_eq!(c.kind, Kind::TransportEnvelope);
    assert_eq!(c.headers.x_tipo_ricevuta.as_deref(), Some("breve"));
    // A formally correct envelope: daticert and postacert inside the signed content,
    // Message-ID equal to the identificativo.
    assert_eq!(c.certified().map(|d| d.tipo), Ok(Tipo::PostaCertificata));
    let d = c.daticert.clone().unwrap().unwrap();
    assert_eq!(d.tipo, Tipo::PostaCertificata);
    assert_eq!(d.ricevuta, Some(TipoRicevuta::Breve));
    assert!(c.postacert.is_some());
    let r = report::verify(&raw, None).unwrap();
    assert!(r.signature.valid, "{:?}", r.signature.reason);
    assert!(
        r.signature
            .signer_issuer
            .as_deref()
            .unwrap_or("")
            .contains("AgID CA1"),
        "{:?}",
        r.signature.signer_issuer
    );
    assert!(r.ok, "{:?}", r.reasons);
    // Its unsigned outer Subject, From, To, Date and Reply-To agree with the signed
    // content as the rules build them (issue #13 item 5): a real envelope passes the
    // incoming point's comparison, and a changed outer Subject does not.
    let (outer, _) = pecd::pec::mime::split_header_body(&raw);
    let postacert = c.postacert.as_deref().unwrap();
    assert_eq!(pecd::pec::outer::check(outer, &d, postacert), Ok(()));
    let changed = String::from_utf8_lossy(outer).replace("Invio File 7339338", "Invio File 1");
    assert!(pecd::pec::outer::check(changed.as_bytes(), &d, postacert).is_err());
}

/// One byte changed inside the signed part: reported as altered, not accepted.
#[test]
fn sogei_envelope_with_one_byte_changed_is_reported_altered() {
    let Some(raw) = load("oca-l10n-italy/POSTA CERTIFICATA_ Invio File 7339338 (broken XML).txt")
    else {
        return;
    };
    let r = report::verify(&raw, None).unwrap();
    assert_eq!(r.kind, "transport-envelope");
    assert!(!r.signature.valid);
    assert!(
        r.signature
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("does not match"),
        "{:?}",
        r.signature.reason
    );
    assert!(!r.ok);
}

/// Anonymised Aruba receipts with a placeholder signature: classified, reported invalid,
/// no crash.
#[test]
fn go_pec_placeholder_signatures_are_invalid_not_fatal() {
    for (file, kind, tipo, errore) in [
        (
            "go-pec/accettazione.eml",
            "accettazione",
            Tipo::Accettazione,
            Errore::Nessuno,
        ),
        (
            "go-pec/consegna.eml",
            "errore-consegna",
            Tipo::ErroreConsegna,
            Errore::NoDest,
        ),
        (
            "go-pec/email_2.eml",
            "avvenuta-consegna",
            Tipo::AvvenutaConsegna,
            Errore::Nessuno,
        ),
    ] {
        let Some(raw) = load(file) else { return };
        let c = classify(&raw).unwrap();
        let d = c
            .daticert
            .clone()
            .unwrap_or_else(|| panic!("{file}: no daticert"))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!((d.tipo, d.errore), (tipo, errore), "{file}");
        let r = report::verify(&raw, None).unwrap();
        assert_eq!(r.kind, kind, "{file}");
        assert!(
            !r.signature.valid,
            "{file}: a placeholder signature must not verify"
        );
        assert!(!r.ok, "{file}");
    }
}

/// Envelope whose inner multipart misses its closing boundary: still classified.
#[test]
fn go_pec_envelope_with_malformed_mime_is_classified() {
    let Some(raw) = load("go-pec/email_3.eml") else {
        return;
    };
    let r = report::verify(&raw, None).unwrap();
    assert_eq!(r.kind, "transport-envelope");
    assert!(!r.signature.valid);
    assert!(!r.ok);
}

/// Truncated receipts: multipart/signed without its signature part.
#[test]
fn java_pec_parser_truncated_receipts_report_missing_signature() {
    for file in [
        "java-pec-parser/accettazione.eml",
        "java-pec-parser/consegna.eml",
    ] {
        let Some(raw) = load(file) else { return };
        let r = report::verify(&raw, None).unwrap();
        assert!(!r.signature.valid, "{file}");
        let reason = r.signature.reason.clone().unwrap_or_default();
        assert!(
            reason.contains("signature part is missing") || reason.contains("truncated"),
            "{file}: {reason}"
        );
        assert!(!r.ok);
    }
}

/// LF-only copies of a real CRLF message still verify (canonicalisation to CRLF).
#[test]
fn lf_stored_copy_of_a_real_receipt_still_verifies() {
    let Some(raw) = load("oca-l10n-italy-7.0/message2_accettazione") else {
        return;
    };
    let lf: Vec<u8> = String::from_utf8_lossy(&raw)
        .replace("\r\n", "\n")
        .into_bytes();
    let r = report::verify(&lf, None).unwrap();
    assert!(r.signature.valid, "{:?}", r.signature.reason);
}

/// What the classifier found before it cut the parts itself: mail-parser's whole parse of
/// the signed content, then its direct children (the reference for the test below).
fn reference_parts(raw: &[u8], kind: &Kind) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    use mail_parser::{MessageParser, MimeHeaders};
    let crlf = pecd::pec::mime::to_crlf(raw);
    let signed = classify(raw).map(|c| c.signed).unwrap_or(false);
    let content: Vec<u8> = if signed {
        match pecd::pec::smime::signed_content(&crlf) {
            Ok(sc) => sc.content.into_owned(),
            Err(_) => return (None, None),
        }
    } else {
        crlf.into_owned()
    };
    let Some(m) = MessageParser::new().parse(&content) else {
        return (None, None);
    };
    let (mut daticert, mut postacert) = (None, None);
    for part in m
        .root_part()
        .sub_parts()
        .unwrap_or_default()
        .iter()
        .filter_map(|&id| m.part(id))
    {
        let name = part.attachment_name().map(|n| n.to_ascii_lowercase());
        if name.as_deref() == Some("daticert.xml") {
            daticert.get_or_insert_with(|| part.contents().to_vec());
        } else if postacert.is_none()
            && part.is_message()
            && (name.as_deref() == Some("postacert.eml") || *kind == Kind::AnomalyEnvelope)
        {
            postacert = part.message().map(|inner| inner.raw_message().to_vec());
        }
    }
    (daticert, postacert)
}

fn assert_parts_as_before(label: &str, raw: &[u8]) {
    let Ok(c) = classify(raw) else {
        return;
    };
    let (daticert, postacert) = reference_parts(raw, &c.kind);
    assert_eq!(
        c.daticert,
        daticert.map(|d| pecd::pec::daticert::Daticert::parse(&d)),
        "{label}: daticert"
    );
    assert_eq!(
        c.postacert.as_deref(),
        postacert.as_deref(),
        "{label}: postacert.eml"
    );
}

/// The classifier cuts the PEC parts itself (a 50 MB original is neither decoded nor
/// copied): on every real sample, and on MIME corner cases, it must find byte for byte
/// the daticert and postacert.eml that mail-parser's whole parse finds.
#[test]
fn pec_parts_are_found_as_mail_parser_finds_them() {
    let cases: &[(&str, &str)] = &[
        (
            "base64 original",
            "X-Trasporto: posta-certificata\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
             --b\r\nContent-Type: application/xml; name=\"daticert.xml\"\r\nContent-Transfer-Encoding: base64\r\n\r\n\
             PHBvc3RhY2VydCB0aXBvPSJwb3N0YS1jZXJ0aWZpY2F0YSIvPg==\r\n\
             --b\r\nContent-Type: message/rfc822; name=\"postacert.eml\"\r\nContent-Transfer-Encoding: base64\r\n\r\n\
             U3ViamVjdDogY2lhbw0KDQpjb3Jwbw0K\r\n--b--\r\n",
        ),
        (
            "RFC 2231 and encoded-word names, 8bit original",
            "X-Trasporto: posta-certificata\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n\
             --b\r\nContent-Type: application/xml\r\nContent-Disposition: inline; filename*=utf-8''daticert.xml\r\n\r\n\
             <postacert tipo=\"accettazione\"/>\r\n\
             --b\r\nContent-Type: message/rfc822; name=\"=?utf-8?q?postacert.eml?=\"\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\
             Subject: perch\u{e8}\r\n\r\ncorpo\r\n--b--\r\n",
        ),
        (
            "anomaly envelope, unnamed message, two daticerts, a nested one",
            "X-Trasporto: errore\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
             --b\r\nContent-Type: text/plain\r\n\r\nanomalia\r\n\
             --b\r\nContent-Type: message/rfc822\r\n\r\nSubject: x\r\nContent-Type: multipart/mixed; boundary=c\r\n\r\n\
             --c\r\nContent-Type: application/xml; name=daticert.xml\r\n\r\n<finto/>\r\n--c--\r\n\
             --b\r\nContent-Type: application/xml; name=daticert.xml\r\n\r\n<uno/>\r\n\
             --b\r\nContent-Type: application/xml; name=daticert.xml\r\n\r\n<due/>\r\n--b--\r\n",
        ),
        (
            "multipart/digest child without Content-Type",
            "X-Trasporto: errore\r\nContent-Type: multipart/digest; boundary=\"b\"\r\n\r\n\
             --b\r\n\r\nSubject: nel digest\r\n\r\ntesto\r\n--b--\r\n",
        ),
        (
            "LF line ends, not closed",
            "X-Trasporto: posta-certificata\nContent-Type: multipart/mixed; boundary=b\n\n\
             --b\nContent-Type: message/rfc822; name=postacert.eml\n\nSubject: y\n\nz\n",
        ),
        (
            "not multipart",
            "X-Trasporto: posta-certificata\r\nContent-Type: text/plain\r\n\r\n--b\r\n",
        ),
    ];
    for (label, raw) in cases {
        assert_parts_as_before(label, raw.as_bytes());
    }
    // Every real provider message in ../shared/samples.
    let Some(dir) = samples_dir() else {
        return;
    };
    let mut stack = vec![dir];
    let mut seen = 0;
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().map(Result::unwrap) {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let raw = std::fs::read(&path).unwrap();
                assert_parts_as_before(&path.display().to_string(), &raw);
                seen += 1;
            }
        }
    }
    assert!(seen >= 10, "only {seen} sample files");
    eprintln!("{seen} sample files: the same PEC parts as mail-parser's whole parse");
}
