//! `pecd verify` as a user runs it: exit status 0 / 1 / 2 and the JSON report's keys, over
//! real provider messages (`../shared/samples`) and files that are not PEC or not mail.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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
    let o = verify(&[&f], &["--json"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let r = json(&o);
    assert_eq!(r["kind"], "transport-envelope");
    assert_eq!(r["ok"], true);
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
    assert_eq!(o.status.code(), Some(0));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("transport-envelope"), "{text}");
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
