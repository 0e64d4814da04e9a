//! Shared helpers of the integration tests: a development PKI made by the real `pki`
//! module, the provider identity around it, and the independent checkers (the `openssl`
//! and `xmllint` commands) with a printed skip when a tool is missing.
#![allow(dead_code)]

pub mod clamd;
pub mod cns;
pub mod delivery;
pub mod jmap;
pub mod netns;
pub mod nodes;
pub mod ports;
pub mod postgres;
pub mod probe;
pub mod s3;
pub mod server;
pub mod sink;
pub mod smtp;
pub mod spamd;
pub mod web;

use std::path::{Path, PathBuf};
use std::process::Command;

use pecd::pec::address::{Domain, PecAddress};
use pecd::pec::compose::ProviderIdentity;
use pecd::pec::smime::{Signer, TrustAnchors};

pub struct Pki {
    pub dir: tempfile::TempDir,
    pub signer: Signer,
    pub trust: TrustAnchors,
    pub identity: ProviderIdentity,
}

impl Pki {
    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
}

pub fn dev_pki(domain: &str) -> Pki {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Domain::parse(domain).expect("domain");
    pecd::pki::generate_dev_pki(dir.path(), &d, "Test PEC S.p.A.", false).expect("dev PKI");
    let read = |n: &str| std::fs::read(dir.path().join(n)).unwrap_or_else(|e| panic!("{n}: {e}"));
    let signer = Signer::from_pem(&read("signing.pem"), &read("signing.key"), b"").expect("signer");
    let trust = TrustAnchors::from_pem(&read("ca.pem")).expect("trust");
    let identity = ProviderIdentity {
        name: "Test PEC S.p.A.".into(),
        service_address: PecAddress::parse(&format!("posta-certificata@{domain}")).unwrap(),
        host: format!("mail.{domain}"),
    };
    Pki {
        dir,
        signer,
        trust,
        identity,
    }
}

/// Reports a test (or check) that cannot run here: prints `SKIP: reason`, or fails the
/// test when `PECD_REQUIRE_TOOLS` is set (as `.ci/run` does, after installing every tool),
/// so that CI can never pass by skipping.
pub fn skip(reason: &str) {
    if std::env::var_os("PECD_REQUIRE_TOOLS").is_some_and(|v| !v.is_empty()) {
        panic!("{reason} (PECD_REQUIRE_TOOLS is set: this must run here)");
    }
    eprintln!("SKIP: {reason}");
}

/// True when `tool` runs; otherwise reports the skip (see [`skip`]).
pub fn have(tool: &str, why: &str) -> bool {
    let ok = Command::new(tool).arg("--version").output().is_ok()
        || Command::new(tool).arg("version").output().is_ok();
    if !ok {
        skip(&format!(
            "({why}) `{tool}` is not installed; .ci/run installs it"
        ));
    }
    ok
}

/// Runs `cmd`, fails the test with its stderr unless it succeeds, and returns its stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("running the command");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `openssl cms -verify` of a whole S/MIME message against `ca`; returns (ok, stderr).
pub fn openssl_verify(message: &[u8], ca: &Path) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let msg = dir.path().join("m.eml");
    std::fs::write(&msg, message).expect("write");
    let out = Command::new("openssl")
        .args(["cms", "-verify", "-in"])
        .arg(&msg)
        .arg("-CAfile")
        .arg(ca)
        .args(["-out", "/dev/null"])
        .output()
        .expect("run openssl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The rules' DTD, when `../shared` is present.
pub fn dtd_path() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/spec/daticert.dtd");
    if p.is_file() {
        Some(p)
    } else {
        eprintln!("SKIP (DTD validation): {} is absent", p.display());
        None
    }
}

/// `xmllint --noout --nonet --dtdvalid DTD -` on `xml`; returns (ok, stderr).
pub fn xmllint_valid(xml: &[u8], dtd: &Path) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new("xmllint")
        .args(["--noout", "--nonet", "--dtdvalid"])
        .arg(dtd)
        .arg("-")
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run xmllint");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(xml)
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A plain 7-bit message of exactly `size` bytes from `from` to `to` (lines of 80 octets),
/// for the tests at the size limit.
pub fn sized_message(from: &str, to: &str, subject: &str, size: usize) -> Vec<u8> {
    let mut msg = format!(
        "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\n\
         Date: Mon, 23 Nov 2026 10:00:00 +0100\r\nMessage-ID: <{subject}@mua.test>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
    )
    .into_bytes();
    let mut i = 0u64;
    while msg.len() < size {
        let line =
            format!("{i:016x} lorem ipsum dolor sit amet consectetur adipiscing elit sed\r\n");
        let room = size - msg.len();
        if line.len() <= room {
            msg.extend_from_slice(line.as_bytes());
        } else {
            msg.extend(std::iter::repeat_n(b'z', room.saturating_sub(2)));
            msg.extend_from_slice(&b"\r\n"[..room.min(2)]);
        }
        i += 1;
    }
    msg
}

/// `GET path` on pecd's admin listener (plain HTTP) with curl: (status, body).
pub fn admin_get(admin: std::net::SocketAddr, path: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-o", "-", "-w", "\n%{http_code}"])
        .arg(format!("http://{admin}{path}"))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// The value of one series (`name{labels}` exactly as exposed) in a Prometheus text
/// exposition, if present.
pub fn metric_sample(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}
