//! `pecd index export|import|list` end to end with the real binary on two instances made by
//! `pecd init` (pec.alfa.test and pec.beta.test): B's entry exported, imported into A and
//! listed there; a corrupted file refused with its line number, the previous import intact.

use std::path::Path;
use std::process::{Command, Output};

fn pecd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pecd"))
        .args(args)
        .env("PECD_LOG", "warn")
        .output()
        .expect("run pecd")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(args: &[&str]) -> String {
    let out = pecd(args);
    assert!(
        out.status.success(),
        "pecd {args:?} failed:\n{}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn init(dir: &Path, domain: &str) -> String {
    ok(&["init", "--dir", dir.to_str().unwrap(), "--domain", domain]);
    dir.join("pecd.toml").to_str().unwrap().to_string()
}

fn sha1_of_pem(pem_path: &Path) -> String {
    let pem = std::fs::read(pem_path).unwrap();
    let cert = openssl::x509::X509::from_pem(&pem).unwrap();
    hex::encode_upper(cert.digest(openssl::hash::MessageDigest::sha1()).unwrap())
}

#[test]
fn export_import_list_and_refuse_a_corrupted_file() {
    let tmp = tempfile::tempdir().unwrap();
    let a_dir = tmp.path().join("alfa");
    let b_dir = tmp.path().join("beta");
    let a = init(&a_dir, "pec.alfa.test");
    let b = init(&b_dir, "pec.beta.test");
    let b_sha1 = sha1_of_pem(&b_dir.join("certs/signing.pem"));

    // Nothing imported yet.
    let listed = ok(&["index", "list", "--config", &a]);
    assert!(listed.contains("no provider index imported"), "{listed}");
    assert_eq!(ok(&["index", "list", "--config", &a, "--json"]), "");

    // Export B: stdout and --out give the same entry, in the RFC 6109 §4.5 shape.
    let stdout = ok(&["index", "export", "--config", &b]);
    let b_ldif = tmp.path().join("beta.ldif");
    ok(&[
        "index",
        "export",
        "--config",
        &b,
        "--out",
        b_ldif.to_str().unwrap(),
    ]);
    let exported = std::fs::read_to_string(&b_ldif).unwrap();
    assert_eq!(exported, stdout);
    for want in [
        "objectclass: provider\n",
        "managedDomains: pec.beta.test\n",
        "mailReceipt: posta-certificata@pec.beta.test\n",
        &format!("providerCertificateHash: {b_sha1}\n"),
        "providerCertificate;binary:: MII",
    ] {
        assert!(exported.contains(want), "{want:?} not in:\n{exported}");
    }
    assert!(exported.lines().all(|l| l.len() <= 76), "{exported}");

    // Import into A, list there.
    let said = ok(&["index", "import", b_ldif.to_str().unwrap(), "--config", &a]);
    assert!(said.contains("imported 1 provider entry"), "{said}");
    let index_file = a_dir.join("data").join("index.ldif");
    assert!(index_file.is_file());
    let listed = ok(&["index", "list", "--config", &a]);
    for want in [
        "pecd Dev Provider (pec.beta.test)",
        "posta-certificata@pec.beta.test",
        "pec.beta.test",
        b_sha1.as_str(),
    ] {
        assert!(listed.contains(want), "{want:?} not in:\n{listed}");
    }
    let json = ok(&["index", "list", "--config", &a, "--json"]);
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(v["mail_receipt"], "posta-certificata@pec.beta.test");
    assert_eq!(v["managed_domains"][0], "pec.beta.test");
    assert_eq!(v["certificate_sha1"][0], b_sha1.as_str());
    let before = std::fs::read(&index_file).unwrap();

    // A corrupted copy: one character of the folded certificate broken, deep in the value.
    let bad_line = exported
        .lines()
        .position(|l| l.starts_with(' '))
        .map(|i| i + 3)
        .unwrap();
    let corrupted: String = exported
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if i + 1 == bad_line {
                format!(" !{}\n", &l[2..])
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let bad = tmp.path().join("bad.ldif");
    std::fs::write(&bad, corrupted).unwrap();
    let out = pecd(&["index", "import", bad.to_str().unwrap(), "--config", &a]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("line {bad_line}: invalid base64")),
        "want line {bad_line} in:\n{err}"
    );
    assert!(err.contains("previous index is unchanged"), "{err}");

    // A well-formed file whose hash does not match its certificate is refused too.
    let mismatched = exported.replace(&b_sha1, &"0".repeat(40));
    std::fs::write(&bad, mismatched).unwrap();
    let out = pecd(&["index", "import", bad.to_str().unwrap(), "--config", &a]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("is not the SHA-1 of any of its certificates"),
        "{err}"
    );

    // A file without provider entries is refused rather than emptying the index.
    std::fs::write(
        &bad,
        "version: 1\n\ndn: o=postacert\nobjectclass: organization\n",
    )
    .unwrap();
    let out = pecd(&["index", "import", bad.to_str().unwrap(), "--config", &a]);
    assert!(!out.status.success(), "{}", text(&out.stdout));

    assert_eq!(
        std::fs::read(&index_file).unwrap(),
        before,
        "previous import changed"
    );
    let listed = ok(&["index", "list", "--config", &a]);
    assert!(listed.contains("pec.beta.test"), "{listed}");
    let leftovers: Vec<_> = std::fs::read_dir(a_dir.join("data"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
