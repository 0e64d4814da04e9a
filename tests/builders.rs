//! Every message our builders emit is signed so that independent tools accept it
//! (`openssl cms -verify` against the dev CA), is read back by our own classifier into the
//! same fields, parses with mail-parser, and carries a daticert valid against the rules'
//! DTD (xmllint). Tampering is caught.

mod common;

use common::{Pki, dev_pki, dtd_path, have, openssl_verify, xmllint_valid};
use pecd::pec::classify::{Kind, classify};
use pecd::pec::compose::{BuiltMessage, Certification};
use pecd::pec::daticert::{Destinatario, Errore, Tipo, TipoDestinatario, TipoRicevuta};
use pecd::pec::envelope;
use pecd::pec::receipt::{self, Notice};
use pecd::pec::smime;
use pecd::pec::time::PecTime;
use pecd::report;

const ORIGINAL: &[u8] = b"From: Mario Rossi <mario.rossi@pec.alfa.test>\r\n\
To: ufficio@pec.beta.test\r\n\
Cc: amico@gmail.example\r\n\
Subject: =?utf-8?Q?Fattura_n._1_=E2=80=93_perch=C3=A8?=\r\n\
Message-ID: <client-42@mua.alfa.test>\r\n\
Date: Mon, 23 Nov 2026 10:00:00 +0100\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"XYZ\"\r\n\
\r\n\
--XYZ\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: 8bit\r\n\
\r\n\
Buongiorno, in allegato la fattura. Perch\xc3\xa8 no.\r\n\
--XYZ\r\n\
Content-Type: application/pdf; name=\"fattura.pdf\"\r\n\
Content-Disposition: attachment; filename=\"fattura.pdf\"\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
JVBERi0xLjQKJcfsj6IKNSAwIG9iago8PC9MZW5ndGggNiAwIFI+PgpzdHJlYW0K\r\n\
--XYZ--\r\n";

fn certification() -> Certification {
    Certification {
        mittente: "mario.rossi@pec.alfa.test".into(),
        destinatari: vec![
            Destinatario {
                address: "ufficio@pec.beta.test".into(),
                tipo: TipoDestinatario::Certificato,
            },
            Destinatario {
                address: "amico@gmail.example".into(),
                tipo: TipoDestinatario::Esterno,
            },
        ],
        risposte: "mario.rossi@pec.alfa.test".into(),
        oggetto: "Fattura n. 1 – perchè".into(),
        identificativo: "opec-20261123100000.0123456789abcdef01234567@mail.pec.alfa.test".into(),
        msgid: Some("<client-42@mua.alfa.test>".into()),
        ricevuta: TipoRicevuta::Completa,
    }
}

/// The event time of every message built here: one instant per test process, while the
/// freshly made dev certificates are valid (`pecd verify` judges the signer at this time).
fn at() -> PecTime {
    static AT: std::sync::OnceLock<PecTime> = std::sync::OnceLock::new();
    *AT.get_or_init(|| PecTime::italian(jiff::Timestamp::now()))
}

/// The independent checks every generated message must pass.
fn assert_accepted_everywhere(pki: &common::Pki, m: &BuiltMessage, what: &str) {
    let r = report::verify(&m.bytes, Some(&pki.trust)).unwrap();
    assert!(r.signature.valid, "{what}: {:?}", r.signature.reason);
    assert_eq!(
        r.signature.chain_ok,
        Some(true),
        "{what}: {:?}",
        r.signature.chain_error
    );
    assert!(r.ok, "{what}: {:?}", r.reasons);
    // 8-bit bytes may only travel inside postacert.eml (declared 8bit); everything we
    // write ourselves is 7-bit (QP, base64, RFC 2047).
    let c = classify(&m.bytes).unwrap();
    let outside: Vec<u8> = match &c.postacert {
        Some(p) => {
            let at = m
                .bytes
                .windows(p.len())
                .position(|w| w == &p[..])
                .expect("postacert bytes inside the message");
            [&m.bytes[..at], &m.bytes[at + p.len()..]].concat()
        }
        None => m.bytes.clone(),
    };
    assert!(
        outside.is_ascii(),
        "{what}: 8-bit bytes outside postacert.eml"
    );
    if have("openssl", "openssl cms -verify") {
        let (ok, err) = openssl_verify(&m.bytes, &pki.ca_path());
        assert!(ok, "{what}: openssl cms -verify refused: {err}");
    }
    let c = classify(&m.bytes).unwrap();
    if let Some(d) = &m.daticert {
        assert_eq!(
            c.daticert.as_ref().unwrap().as_ref().unwrap(),
            d,
            "{what}: daticert did not round-trip"
        );
        if let Some(dtd) = dtd_path()
            && have("xmllint", "DTD validation")
        {
            let (ok, err) = xmllint_valid(d.to_xml().as_bytes(), &dtd);
            assert!(ok, "{what}: daticert invalid against the DTD: {err}");
        }
    }
    let parsed = mail_parser::MessageParser::new()
        .parse(&m.bytes)
        .expect("mail-parser");
    assert_eq!(parsed.message_id(), Some(m.message_id.as_str()), "{what}");
    assert_eq!(
        parsed
            .from()
            .and_then(|f| f.first())
            .and_then(|a| a.address()),
        Some("posta-certificata@pec.alfa.test"),
        "{what}"
    );
}

/// The transport envelope `pki`'s provider builds around [`ORIGINAL`].
fn envelope_by(pki: &Pki) -> envelope::TransportEnvelope {
    envelope::transport(
        &pki.identity,
        &pki.signer,
        &certification(),
        ORIGINAL.to_vec(),
        at(),
    )
    .unwrap()
}

/// The original as the envelope carries it in postacert.eml (rule §2.1).
fn rewritten(cert: &Certification) -> Vec<u8> {
    envelope::rewrite_original(
        ORIGINAL.to_vec(),
        &cert.identificativo,
        cert.msgid.as_deref(),
    )
}

#[test]
fn transport_envelope_is_what_the_rules_prescribe() {
    let pki = dev_pki("pec.alfa.test");
    let env = envelope_by(&pki);
    assert_accepted_everywhere(&pki, &env.message, "transport envelope");

    let c = classify(&env.message.bytes).unwrap();
    assert_eq!(c.kind, Kind::TransportEnvelope);
    assert_eq!(c.headers.x_trasporto.as_deref(), Some("posta-certificata"));
    assert_eq!(c.headers.x_tipo_ricevuta.as_deref(), Some("completa"));
    assert_eq!(
        c.headers.x_riferimento_message_id.as_deref(),
        Some("<client-42@mua.alfa.test>")
    );
    let parsed = mail_parser::MessageParser::new()
        .parse(&env.message.bytes)
        .unwrap();
    assert_eq!(
        parsed.subject(),
        Some("POSTA CERTIFICATA: Fattura n. 1 – perchè")
    );
    let from = parsed.from().unwrap().first().unwrap();
    assert_eq!(from.name(), Some("Per conto di: mario.rossi@pec.alfa.test"));
    assert_eq!(
        parsed
            .reply_to()
            .and_then(|r| r.first())
            .and_then(|a| a.address()),
        Some("mario.rossi@pec.alfa.test")
    );
    assert_eq!(
        parsed
            .to()
            .and_then(|r| r.first())
            .and_then(|a| a.address()),
        Some("ufficio@pec.beta.test")
    );
    assert_eq!(
        parsed
            .cc()
            .and_then(|r| r.first())
            .and_then(|a| a.address()),
        Some("amico@gmail.example")
    );

    // postacert.eml: byte-identical to the original except the Message-ID swap.
    let inner = c.postacert.clone().unwrap();
    assert_eq!(inner, rewritten(&certification()));
    let text = String::from_utf8_lossy(&inner);
    assert!(text.contains(
        "Message-ID: <opec-20261123100000.0123456789abcdef01234567@mail.pec.alfa.test>\r\n"
    ));
    assert!(text.contains("X-Riferimento-Message-ID: <client-42@mua.alfa.test>\r\n"));
    assert!(
        !text.contains("\nMessage-ID: <client-42"),
        "the client's id must not stay the Message-ID"
    );
    let expected_body = &ORIGINAL[ORIGINAL.windows(4).position(|w| w == b"\r\n\r\n").unwrap()..];
    assert!(
        inner.ends_with(expected_body),
        "the original's body must travel unchanged"
    );

    let d = c.daticert.unwrap().unwrap();
    assert_eq!(d.tipo, Tipo::PostaCertificata);
    assert_eq!(d.ricevuta, Some(TipoRicevuta::Completa));
    assert_eq!(d.destinatari.len(), 2);
    assert_eq!(
        (d.data.giorno(), d.data.ora(), d.data.zona()),
        (at().giorno(), at().ora(), at().zona())
    );
}

#[test]
fn every_receipt_and_notice_is_signed_typed_and_valid() {
    let pki = dev_pki("pec.alfa.test");
    let cert = certification();
    let postacert = rewritten(&cert);
    let ricezione = vec!["ufficio@pec.beta.test".to_string()];
    let cases: Vec<(Notice<'_>, &str, Tipo, Errore, Option<&str>)> = vec![
        (
            Notice::Accettazione,
            "accettazione",
            Tipo::Accettazione,
            Errore::Nessuno,
            None,
        ),
        (
            Notice::NonAccettazione {
                reason: "Indirizzo presente nel campo Bcc",
            },
            "non-accettazione",
            Tipo::NonAccettazione,
            Errore::Altro,
            None,
        ),
        (
            Notice::NonAccettazioneVirus {
                virus: "Eicar-Signature",
            },
            "non-accettazione",
            Tipo::NonAccettazione,
            Errore::Virus,
            Some("errore"),
        ),
        (
            Notice::PresaInCarico {
                ricezione: &ricezione,
                to: "ricevute@pec.alfa.test",
            },
            "presa-in-carico",
            Tipo::PresaInCarico,
            Errore::Nessuno,
            None,
        ),
        (
            Notice::RilevazioneVirus {
                consegna: "ufficio@pec.beta.test",
                virus: "Eicar-Signature",
                to: "ricevute@pec.alfa.test",
            },
            "rilevazione-virus",
            Tipo::RilevazioneVirus,
            Errore::Virus,
            None,
        ),
        (
            Notice::ErroreConsegnaVirus {
                consegna: "ufficio@pec.beta.test",
                virus: "Eicar-Signature",
            },
            "errore-consegna",
            Tipo::ErroreConsegna,
            Errore::Virus,
            Some("errore"),
        ),
        (
            Notice::AvvenutaConsegna {
                consegna: "ufficio@pec.beta.test",
                form: TipoRicevuta::Completa,
                postacert: Some(&postacert),
            },
            "avvenuta-consegna completa",
            Tipo::AvvenutaConsegna,
            Errore::Nessuno,
            None,
        ),
        (
            Notice::AvvenutaConsegna {
                consegna: "ufficio@pec.beta.test",
                form: TipoRicevuta::Breve,
                postacert: Some(&postacert),
            },
            "avvenuta-consegna breve",
            Tipo::AvvenutaConsegna,
            Errore::Nessuno,
            None,
        ),
        (
            Notice::AvvenutaConsegna {
                consegna: "ufficio@pec.beta.test",
                form: TipoRicevuta::Sintetica,
                postacert: Some(&postacert),
            },
            "avvenuta-consegna sintetica",
            Tipo::AvvenutaConsegna,
            Errore::Nessuno,
            None,
        ),
        (
            Notice::ErroreConsegna {
                consegna: "ufficio@pec.beta.test",
                errore: Errore::NoDest,
                errore_esteso: "5.1.1 - Test PEC - indirizzo non valido",
            },
            "errore-consegna",
            Tipo::ErroreConsegna,
            Errore::NoDest,
            None,
        ),
        (
            Notice::Preavviso12h {
                consegna: "ufficio@pec.beta.test",
            },
            "preavviso 12h",
            Tipo::PreavvisoErroreConsegna,
            Errore::Nessuno,
            None,
        ),
        (
            Notice::Scadenza24h {
                consegna: "ufficio@pec.beta.test",
            },
            "preavviso 24h",
            Tipo::PreavvisoErroreConsegna,
            Errore::Nessuno,
            None,
        ),
    ];
    for (notice, what, tipo, errore, verifica) in cases {
        let m = receipt::build(&pki.identity, &pki.signer, &cert, notice, at()).unwrap();
        assert_accepted_everywhere(&pki, &m, what);
        let c = classify(&m.bytes).unwrap();
        assert_eq!(c.kind, Kind::Receipt(tipo), "{what}");
        assert_eq!(
            c.headers.x_ricevuta.as_deref(),
            Some(tipo.as_str()),
            "{what}"
        );
        assert_eq!(
            c.headers.x_verifica_sicurezza.as_deref(),
            verifica,
            "{what}"
        );
        assert_eq!(
            c.headers.x_riferimento_message_id.as_deref(),
            Some("<client-42@mua.alfa.test>"),
            "{what}"
        );
        assert_ne!(
            m.message_id, cert.identificativo,
            "{what}: a receipt has a fresh Message-ID"
        );
        let d = c.daticert.unwrap().unwrap();
        assert_eq!((d.tipo, d.errore), (tipo, errore), "{what}");
        assert_eq!(d.identificativo, cert.identificativo, "{what}");
        assert_eq!(
            d.msgid.as_deref(),
            Some("<client-42@mua.alfa.test>"),
            "{what}"
        );
        let subject = mail_parser::MessageParser::new()
            .parse(&m.bytes)
            .unwrap()
            .subject()
            .unwrap()
            .to_string();
        assert!(
            subject.starts_with(notice.subject_prefix())
                && subject.ends_with("Fattura n. 1 – perchè"),
            "{what}: {subject}"
        );
        // The original travels only in completa and breve delivery receipts.
        let carries = matches!(
            notice,
            Notice::AvvenutaConsegna {
                form: TipoRicevuta::Completa | TipoRicevuta::Breve,
                ..
            }
        );
        assert_eq!(c.postacert.is_some(), carries, "{what}");
        match notice {
            Notice::AvvenutaConsegna {
                form: TipoRicevuta::Completa,
                ..
            } => assert_eq!(c.postacert.as_deref(), Some(&postacert[..])),
            Notice::AvvenutaConsegna {
                form: TipoRicevuta::Breve,
                ..
            } => {
                let p = String::from_utf8_lossy(c.postacert.as_deref().unwrap()).into_owned();
                assert!(
                    p.contains("fattura.pdf.hash") && !p.contains("JVBERi0x"),
                    "{what}: attachments must become hashes"
                );
                assert!(p.contains("Buongiorno"), "{what}: text parts stay");
            }
            Notice::PresaInCarico { .. } => assert_eq!(d.ricezione, ricezione),
            _ => {}
        }
    }
}

#[test]
fn anomaly_envelope_carries_the_message_and_nothing_else() {
    let pki = dev_pki("pec.alfa.test");
    let plain = b"From: spam@internet.example\r\nTo: ufficio@pec.alfa.test\r\nSubject: offerta\r\nMessage-ID: <x1@internet.example>\r\n\r\nciao\r\n";
    let m = envelope::anomaly(
        &pki.identity,
        &pki.signer,
        plain,
        "spam@internet.example",
        &["ufficio@pec.alfa.test".into()],
        "messaggio non firmato",
        at(),
    )
    .unwrap();
    assert_accepted_everywhere(&pki, &m, "anomaly envelope");
    let c = classify(&m.bytes).unwrap();
    assert_eq!(c.kind, Kind::AnomalyEnvelope);
    assert!(c.daticert.is_none());
    assert_eq!(c.postacert.as_deref(), Some(&plain[..]));
    assert_eq!(
        m.message_id, "x1@internet.example",
        "the anomaly envelope inherits the Message-ID"
    );
    let subject = mail_parser::MessageParser::new()
        .parse(&m.bytes)
        .unwrap()
        .subject()
        .unwrap()
        .to_string();
    assert_eq!(subject, "ANOMALIA MESSAGGIO: offerta");
}

#[test]
fn tampering_and_foreign_signers_are_caught() {
    let pki = dev_pki("pec.alfa.test");
    let other = dev_pki("pec.evil.test");
    let env = envelope_by(&pki);

    // One byte of the signed content changed.
    let mut altered = env.message.bytes.clone();
    let pos = altered
        .windows(10)
        .position(|w| w == b"Buongiorno")
        .unwrap();
    altered[pos] = b'b';
    let r = report::verify(&altered, Some(&pki.trust)).unwrap();
    assert!(!r.signature.valid && !r.ok);
    if have("openssl", "openssl cms -verify") {
        assert!(
            !openssl_verify(&altered, &pki.ca_path()).0,
            "openssl must refuse altered content"
        );
    }

    // Unsigned outer headers may change without breaking the signature, but the daticert
    // (signed) is what counts: swapping X-Ricevuta in is caught by the tipo check.
    let relabelled = String::from_utf8_lossy(&env.message.bytes).replace(
        "X-Trasporto: posta-certificata",
        "X-Ricevuta: avvenuta-consegna",
    );
    let r = report::verify(relabelled.as_bytes(), Some(&pki.trust)).unwrap();
    assert!(r.signature.valid);
    assert!(
        !r.ok && r.reasons.iter().any(|x| x.starts_with("tipo")),
        "{:?}",
        r.reasons
    );

    // A message signed by another CA's provider: valid signature, but no chain to ours.
    let foreign = envelope_by(&other);
    let r = report::verify(&foreign.message.bytes, Some(&pki.trust)).unwrap();
    assert!(r.signature.valid);
    assert_eq!(r.signature.chain_ok, Some(false));
    assert!(!r.ok);

    // A signature over other content.
    let sig = pki.signer.sign_detached(b"other content").unwrap();
    let check = smime::verify_detached(b"this content", &sig, Some(&pki.trust));
    assert!(!check.valid);
    // Garbage as a signature never panics.
    assert!(!smime::verify_detached(b"x", b"\x30\x80garbage", None).valid);
    // A key that does not match the certificate is refused up front.
    let read = |p: &common::Pki, n: &str| std::fs::read(p.dir.path().join(n)).unwrap();
    assert!(matches!(
        smime::Signer::from_pem(
            &read(&pki, "signing.pem"),
            &read(&other, "signing.key"),
            b""
        ),
        Err(smime::SmimeError::KeyMismatch)
    ));
}

/// Our signatures sign what a real provider's does (Namirial's of 2024, rules §7.1):
/// contentType, signingTime and messageDigest, and no SMIMECapabilities; as OpenSSL's own
/// decoder reads them.
#[test]
fn signatures_carry_the_signed_attributes_of_a_real_providers() {
    if !have("openssl", "decoding our signatures") {
        return;
    }
    let pki = dev_pki("pec.alfa.test");
    let sig = pki.signer.sign_detached(b"contenuto firmato\r\n").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sig.der");
    std::fs::write(&path, &sig).unwrap();
    let printed = common::run_ok(
        std::process::Command::new("openssl")
            .args(["cms", "-cmsout", "-print", "-inform", "DER", "-in"])
            .arg(&path),
    );
    // The PKCS #9 attributes among the objects printed (the certificates' extensions are
    // X509v3 ones).
    let attributes: Vec<&str> = printed
        .lines()
        .map(str::trim)
        .filter_map(|l| l.strip_prefix("object: "))
        .filter(|o| o.contains("1.2.840.113549.1.9."))
        .collect();
    assert_eq!(
        attributes,
        [
            "contentType (1.2.840.113549.1.9.3)",
            "signingTime (1.2.840.113549.1.9.5)",
            "messageDigest (1.2.840.113549.1.9.4)",
        ],
        "{printed}"
    );
}

#[test]
fn signer_certificate_follows_the_pec_profile() {
    let pki = dev_pki("pec.alfa.test");
    assert_eq!(
        pki.signer.address().as_deref(),
        Some("posta-certificata@pec.alfa.test")
    );
    let m = receipt::build(
        &pki.identity,
        &pki.signer,
        &certification(),
        Notice::Accettazione,
        at(),
    )
    .unwrap();
    let parts = smime::split_signed(&m.bytes).unwrap();
    assert_eq!(parts.micalg.as_deref(), Some("sha-256"));
    assert_eq!(parts.signature_type, "application/pkcs7-signature");
}
