//! `pecd init` end to end: runs the real binary into a temporary directory and checks what
//! it wrote — the files, key permissions, the refusal to overwrite without `--force`, the
//! regeneration with it, and (when the `openssl` command exists) the certificate profile of
//! rules digest §7.2 as an independent tool sees it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const FILES: &[&str] = &[
    "pecd.toml",
    "certs/ca.pem",
    "certs/ca.key",
    "certs/tls.pem",
    "certs/tls.key",
    "certs/signing.pem",
    "certs/signing.key",
];
const KEYS: &[&str] = &["certs/ca.key", "certs/tls.key", "certs/signing.key"];

fn pecd_init(dir: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pecd"))
        .arg("init")
        .arg("--dir")
        .arg(dir)
        .args(["--domain", "pec.init.test"])
        .args(extra)
        .env("PECD_LOG", "warn")
        .output()
        .expect("run pecd")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    FILES
        .iter()
        .map(|f| (dir.join(f), std::fs::read(dir.join(f)).unwrap()))
        .collect()
}

#[test]
fn init_writes_refuses_and_forces() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("instance");

    let out = pecd_init(&dir, &["--provider-name", "Init Test PEC"]);
    assert!(out.status.success(), "init failed: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "pecd serve --config {}",
            dir.join("pecd.toml").display()
        )),
        "no next step in:\n{stdout}"
    );
    for f in FILES {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    assert!(dir.join("data").is_dir(), "data/ missing");
    assert_eq!(std::fs::read_dir(dir.join("data")).unwrap().count(), 0);
    for k in KEYS {
        let mode = std::fs::metadata(dir.join(k)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{k} has mode {mode:o}");
    }
    let config = std::fs::read_to_string(dir.join("pecd.toml")).unwrap();
    assert!(config.contains("name = \"Init Test PEC\""), "{config}");
    assert!(config.contains("smtp = \"127.0.0.1:2525\""), "{config}");
    let loaded = pecd::config::Config::load(&dir.join("pecd.toml")).unwrap();
    loaded.load_signer().unwrap();

    // Re-run without --force: refused, names the existing file, nothing touched.
    let before = snapshot(&dir);
    let out = pecd_init(&dir, &[]);
    assert!(!out.status.success(), "second init succeeded");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&dir.join("pecd.toml").display().to_string())
            && stderr.contains("already exists"),
        "stderr does not name the existing file: {stderr}"
    );
    assert_eq!(snapshot(&dir), before, "files changed despite the refusal");

    // With --force everything is regenerated, keys still private.
    let out = pecd_init(&dir, &["--force"]);
    assert!(
        out.status.success(),
        "forced init failed: {}",
        text(&out.stderr)
    );
    let after = snapshot(&dir);
    for ((path, old), (_, new)) in before.iter().zip(&after) {
        assert_ne!(old, new, "{} was not regenerated", path.display());
    }
    for k in KEYS {
        let mode = std::fs::metadata(dir.join(k)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{k} has mode {mode:o} after --force");
    }
}

#[test]
fn bad_domain_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pecd"))
        .arg("init")
        .arg("--dir")
        .arg(tmp.path())
        .args(["--domain", "bad..domain"])
        .output()
        .expect("run pecd");
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("--domain") && stderr.contains("\"bad..domain\" is not a valid domain"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}

/// The `openssl` command, if installed.
fn openssl(args: &[&str], dir: &Path) -> Option<Output> {
    match Command::new("openssl").args(args).current_dir(dir).output() {
        Ok(o) => Some(o),
        Err(e) => {
            if std::env::var_os("PECD_REQUIRE_TOOLS").is_some_and(|v| !v.is_empty()) {
                panic!("cannot run `openssl`: {e} (PECD_REQUIRE_TOOLS is set: this must run here)");
            }
            eprintln!("skipping the openssl CLI checks: cannot run `openssl`: {e}");
            None
        }
    }
}

#[test]
fn openssl_cli_sees_the_profile() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("instance");
    let out = pecd_init(&dir, &[]);
    assert!(out.status.success(), "init failed: {}", text(&out.stderr));
    let certs = dir.join("certs");

    let Some(v) = openssl(
        &["verify", "-CAfile", "ca.pem", "signing.pem", "tls.pem"],
        &certs,
    ) else {
        return;
    };
    let verify = text(&v.stdout);
    assert!(v.status.success(), "{verify}{}", text(&v.stderr));
    assert!(verify.contains("signing.pem: OK") && verify.contains("tls.pem: OK"));

    let Some(v) = openssl(
        &[
            "verify",
            "-purpose",
            "smimesign",
            "-CAfile",
            "ca.pem",
            "signing.pem",
        ],
        &certs,
    ) else {
        return;
    };
    assert!(v.status.success(), "smimesign: {}", text(&v.stderr));

    let Some(x) = openssl(
        &[
            "x509",
            "-in",
            "signing.pem",
            "-noout",
            "-ext",
            "keyUsage,subjectAltName,basicConstraints,extendedKeyUsage",
        ],
        &certs,
    ) else {
        return;
    };
    let ext = text(&x.stdout);
    assert!(x.status.success(), "{}", text(&x.stderr));
    assert!(ext.contains("X509v3 Key Usage: critical"), "{ext}");
    assert!(ext.contains("Digital Signature"), "{ext}");
    assert!(ext.contains("E-mail Protection"), "{ext}");
    assert!(
        ext.contains("email:posta-certificata@pec.init.test"),
        "{ext}"
    );
    assert!(!ext.contains("Basic Constraints"), "{ext}");

    let Some(x) = openssl(
        &["x509", "-in", "signing.pem", "-noout", "-subject", "-text"],
        &certs,
    ) else {
        return;
    };
    let all = text(&x.stdout);
    assert!(
        all.contains("O = pecd Dev Provider (pec.init.test), CN = Posta Certificata pecd Dev Provider (pec.init.test)"),
        "{all}"
    );
    assert!(all.contains("X509v3 Subject Key Identifier"), "{all}");
    assert!(all.contains("X509v3 Authority Key Identifier"), "{all}");
    assert!(all.contains("sha256WithRSAEncryption"), "{all}");
}

/// `certs/test/` (committed, see certs/README.md) must stay a usable, unexpired PKI.
#[test]
fn committed_test_pki_is_usable() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("certs/test");
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    let signer =
        pecd::pec::smime::Signer::from_pem(&read("signing.pem"), &read("signing.key"), b"")
            .unwrap();
    assert_eq!(
        signer.address().as_deref(),
        Some("posta-certificata@pec.example.test")
    );
    let trust = pecd::pec::smime::TrustAnchors::from_pem(&read("ca.pem")).unwrap();
    let sig = signer.sign_detached(b"probe\r\n").unwrap();
    let check = pecd::pec::smime::verify_detached(b"probe\r\n", &sig, Some(&trust));
    assert!(check.valid, "{check:?}");
    assert_eq!(
        check.chain_ok,
        Some(true),
        "certs/test no longer chains (expired?): run certs/regen.sh — {check:?}"
    );
}
