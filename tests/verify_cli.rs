//! `pecd verify` as a user runs it: exit status 0 / 1 / 2 / 3 and the JSON report's keys,
//! over real provider messages (`../shared/samples`), envelopes signed by providers made
//! with `pecd init`, and files that are not PEC or not mail.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pecd::pec::address::PecAddress;
use pecd::pec::compose::{Certification, ProviderIdentity};
use pecd::pec::daticert::{Destinatario, TipoDestinatario, TipoRicevuta};
use pecd::pec::smime::Signer;
use pecd::pec::time::PecTime;

fn samples() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/samples");
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!(
            "SKIP: {} is absent (a clone without ../shared); the sample checks did not run",
            p.display()
        );
        None
    }
}

fn verify(args: &[&Path], flags: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pecd"))
        .arg("verify")
        .args(args)
        .args(flags)
        .output()
        .expect("running pecd verify")
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

#[test]
fn a_real_envelope_verifies_and_reports_every_field() {
    let Some(s) = samples() else { return };
    let f = s.join("oca-l10n-italy/POSTA CERTIFICATA_ Invio File 7339338.txt");
    // Nothing says who may sign: intact, but the signer is not checked (exit 3).
    let o = verify(&[&f], &["--json"]);
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    let r = json(&o);
    assert_eq!(r["kind"], "transport-envelope");
    assert_eq!(r["ok"], true);
    assert_eq!(r["trusted"], false);
    assert_eq!(r["signer_checked"], false);
    // Signed on 8 December 2018 with a certificate valid then.
    assert_eq!(r["signature"]["valid_at_signing"], true, "{r}");
    assert_eq!(r["signature"]["signed_at"], "2018-12-08T11:26:18Z");
    assert_eq!(r["x_trasporto"], "posta-certificata");
    assert_eq!(r["x_tipo_ricevuta"], "breve");
    assert_eq!(r["signature"]["valid"], true);
    assert_eq!(
        r["signature"]["signer_email"],
        "posta-certificata@pcert.sogei.it"
    );
    let sha1 = r["signature"]["signer_sha1"].as_str().unwrap();
    assert!(
        sha1.len() == 40 && sha1.bytes().all(|b| b.is_ascii_hexdigit()),
        "{sha1}"
    );
    // The daticert is read and consistent with the headers.
    assert_eq!(r["daticert"]["tipo"], "posta-certificata");
    assert_eq!(
        r["daticert"]["identificativo"],
        "opec288.20181208122618.17535.2665.1.3@pcert.sogei.it"
    );
    assert_eq!(r["has_postacert"], true);
    let checks = r["checks"].as_array().unwrap();
    assert!(!checks.is_empty());
    assert!(checks.iter().all(|c| c["ok"] == true), "{checks:?}");

    // The text form says the same.
    let o = verify(&[&f], &[]);
    assert_eq!(o.status.code(), Some(3));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("transport-envelope"), "{text}");
    assert!(text.contains("SIGNER NOT CHECKED"), "{text}");

    // Sogei's certificate in a provider index (as the national index lists it): trusted.
    let raw = std::fs::read(&f).unwrap();
    let signer = pecd::pec::smime::verify_message(&raw, None).signer.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ldif = dir.path().join("index.ldif");
    std::fs::write(
        &ldif,
        index_entry("Sogei S.p.A.", "pcert.sogei.it", &signer.sha1, &signer.der),
    )
    .unwrap();
    let o = verify(&[&f], &["--json", "--index", ldif.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let r = json(&o);
    assert_eq!(
        (r["trusted"].clone(), r["signer_checked"].clone()),
        (true.into(), true.into())
    );
    assert_eq!(r["signature"]["provider"], "Sogei S.p.A.");
}

/// One provider-index entry (LDIF) for a signing certificate.
fn index_entry(name: &str, domain: &str, sha1: &str, der: &[u8]) -> String {
    use base64::Engine;
    format!(
        "version: 1\n\ndn: providerName={name},o=postacert\nobjectclass: top\nobjectclass: provider\n\
providerName: {name}\nproviderCertificateHash: {}\nproviderCertificate;binary:: {}\n\
mailReceipt: posta-certificata@{domain}\nmanagedDomains: {domain}\n",
        sha1.to_uppercase(),
        base64::engine::general_purpose::STANDARD.encode(der)
    )
}

/// A provider directory made by `pecd init` and the signer of its configuration.
fn provider(domain: &str) -> (tempfile::TempDir, Signer, ProviderIdentity) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pecd"))
        .args([
            "init",
            "--dir",
            dir.path().to_str().unwrap(),
            "--domain",
            domain,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read = |n: &str| std::fs::read(dir.path().join("certs").join(n)).unwrap();
    let signer = Signer::from_pem(&read("signing.pem"), &read("signing.key"), b"").unwrap();
    let identity = ProviderIdentity {
        name: format!("Gestore {domain}"),
        service_address: PecAddress::parse(&format!("posta-certificata@{domain}")).unwrap(),
        host: format!("mail.{domain}"),
    };
    (dir, signer, identity)
}

/// A transport envelope signed by `signer`, certified at `at`.
fn envelope(id: &ProviderIdentity, signer: &Signer, domain: &str, at: jiff::Timestamp) -> Vec<u8> {
    let cert = Certification {
        mittente: format!("mario@{domain}"),
        destinatari: vec![Destinatario {
            address: "anna@pec.altro.test".into(),
            tipo: TipoDestinatario::Certificato,
        }],
        risposte: format!("mario@{domain}"),
        oggetto: "Prova".into(),
        identificativo: format!("opec-1@mail.{domain}"),
        msgid: None,
        ricevuta: TipoRicevuta::Completa,
    };
    let original = format!(
        "From: mario@{domain}\r\nTo: anna@pec.altro.test\r\nSubject: Prova\r\n\r\nciao\r\n"
    );
    pecd::pec::envelope::transport(
        id,
        signer,
        &cert,
        original.into_bytes(),
        PecTime::italian(at),
    )
    .unwrap()
    .message
    .bytes
}

/// Issue #13 item 4: an intact signature by any key is not "verified". Without a CA, an
/// index or a configuration the answer is exit 3 ("signer not checked"); against a
/// configuration that does not know the signer, exit 1; against the signer's own
/// provider's configuration (its index holds its own entry), exit 0. A certificate that was
/// not valid at the signed time fails even unchecked.
#[test]
fn an_unchecked_signer_is_said_so_and_the_signing_time_counts() {
    let (a_dir, a_signer, a_id) = provider("pec.alfa.test");
    let (b_dir, _, _) = provider("pec.beta.test");
    let tmp = tempfile::tempdir().unwrap();
    let eml = tmp.path().join("busta.eml");
    std::fs::write(
        &eml,
        envelope(&a_id, &a_signer, "pec.alfa.test", jiff::Timestamp::now()),
    )
    .unwrap();
    let run = |flags: &[&str]| {
        let o = verify(&[&eml], &[&["--json"][..], flags].concat());
        (o.status.code(), json(&o))
    };
    let (code, r) = run(&[]);
    assert_eq!(code, Some(3), "{r}");
    assert_eq!(
        (r["ok"].clone(), r["trusted"].clone()),
        (true.into(), false.into())
    );
    assert_eq!(r["signature"]["valid_now"], true);

    let b_cfg = b_dir.path().join("pecd.toml");
    let (code, r) = run(&["--config", b_cfg.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{r}");
    assert_eq!(r["signature"]["in_index"], false, "{r}");
    assert_eq!(r["trusted"], false);

    let a_cfg = a_dir.path().join("pecd.toml");
    let (code, r) = run(&["--config", a_cfg.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{r}");
    assert_eq!(r["trusted"], true);
    assert_eq!(r["signature"]["in_index"], true);
    assert_eq!(
        r["signature"]["chain_ok"], true,
        "its own CA is in [trust] ca"
    );

    // Certified "in 2001", long before the certificate existed.
    let old: jiff::Timestamp = "2001-03-01T10:00:00Z".parse().unwrap();
    std::fs::write(&eml, envelope(&a_id, &a_signer, "pec.alfa.test", old)).unwrap();
    let (code, r) = run(&[]);
    assert_eq!(code, Some(1), "{r}");
    assert_eq!(r["signature"]["valid_at_signing"], false);
    assert!(r["reasons"].to_string().contains("not valid when"), "{r}");
    let (code, _) = run(&["--config", a_cfg.to_str().unwrap()]);
    assert_eq!(code, Some(1));

    // A configuration that cannot be read is a usage error naming the file (exit 2).
    let o = verify(&[&eml], &["--config", "/nonexistent/pecd.toml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/pecd.toml"));
}

#[test]
fn altered_and_foreign_signed_messages_exit_1_with_reasons() {
    let Some(s) = samples() else { return };
    // One byte changed inside the signed part.
    let f = s.join("oca-l10n-italy/POSTA CERTIFICATA_ Invio File 7339338 (broken XML).txt");
    let o = verify(&[&f], &["--json"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let r = json(&o);
    assert_eq!(r["ok"], false);
    assert_eq!(r["signature"]["valid"], false);
    assert!(!r["reasons"].as_array().unwrap().is_empty(), "{r}");

    // A genuine signature that does not chain to the CA the user trusts.
    let ok = s.join("oca-l10n-italy/POSTA CERTIFICATA_ Invio File 7339338.txt");
    let ca = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("certs/test/ca.pem");
    let o = verify(&[&ok], &["--json", "--ca", ca.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let r = json(&o);
    assert_eq!(r["signature"]["valid"], true, "the content is intact");
    assert_eq!(r["signature"]["chain_ok"], false, "{r}");

    // A placeholder signature (anonymised sample) and a truncated one: invalid, no crash.
    for name in ["go-pec/accettazione.eml", "java-pec-parser/consegna.eml"] {
        let o = verify(&[&s.join(name)], &["--json"]);
        assert_eq!(o.status.code(), Some(1), "{name}: {o:?}");
        assert_eq!(json(&o)["ok"], false, "{name}");
    }
}

#[test]
fn plain_mail_is_not_pec_and_non_mail_is_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.eml");
    std::fs::write(
        &plain,
        "From: a@example.org\r\nTo: b@example.org\r\nSubject: hi\r\n\r\nhello\r\n",
    )
    .unwrap();
    let o = verify(&[&plain], &["--json"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let r = json(&o);
    assert_eq!(r["kind"], "plain-mail");
    let reasons = r["reasons"].to_string();
    assert!(reasons.contains("not a PEC message"), "{reasons}");

    let empty = dir.path().join("empty.eml");
    std::fs::write(&empty, b"").unwrap();
    let o = verify(&[&empty], &[]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("empty.eml") && err.contains("not a mail"),
        "{err}"
    );

    let missing = dir.path().join("missing.eml");
    let o = verify(&[&missing], &[]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("missing.eml"));
}
