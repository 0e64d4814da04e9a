//! Relaying to another provider over SMTP with STARTTLS required and verified, through the
//! durable queue: partial refusals, and a process killed between the 250 and the relay.
//! The peer is a small independent SMTP receiver (tests/clients/smtp_sink.py) using a
//! certificate of another dev PKI, trusted through `[relay] trusted_ca`.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::server::{Server, pecd};
use pecd::pec::address::PecAddress;
use pecd::pec::smime::TrustAnchors;
use pecd::store::{Store, StoreOptions};

struct Sink {
    child: Child,
    port: u16,
    out: tempfile::TempDir,
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sink {
    fn start(pki_dir: &Path, delay_secs: f32) -> Sink {
        let out = tempfile::tempdir().unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/smtp_sink.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(pki_dir.join("certs/tls.pem"))
            .arg(pki_dir.join("certs/tls.key"))
            .arg(out.path())
            .arg(delay_secs.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 sink");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().expect("sink port");
        Sink { child, port, out }
    }

    fn messages(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.out.path())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .collect();
        v.sort();
        v
    }

    fn wait_for(&self, n: usize) -> Vec<PathBuf> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let m = self.messages();
            if m.len() >= n {
                return m;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the peer did not receive {n} message(s)");
    }
}

fn provider_a(peer_pki: &Path, port: u16) -> Server {
    let srv = Server::new("pec.alfa.test", &[("a@pec.alfa.test", "pw-a")]);
    let peer_ca = peer_pki.join("certs/ca.pem");
    srv.edit_config(|t| {
        t.replace(
            "[routes]\n",
            &format!("[routes]\n\"pec.beta.test\" = \"127.0.0.1:{port}\"\n"),
        )
        .replace(
            "trusted_ca = [\"certs/ca.pem\"]",
            &format!(
                "trusted_ca = [\"certs/ca.pem\", {:?}]",
                peer_ca.display().to_string()
            ),
        )
    });
    srv
}

fn peer_pki() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let out = pecd(&[
        "init",
        "--dir",
        d.path().to_str().unwrap(),
        "--domain",
        "pec.beta.test",
    ]);
    assert!(out.status.success());
    d
}

fn have_python() -> bool {
    let ok = Command::new("python3").arg("--version").output().is_ok();
    if !ok {
        eprintln!("SKIP: python3 is not installed");
    }
    ok
}

#[test]
fn relays_signed_envelope_with_starttls_and_records_refusals() {
    if !have_python() {
        return;
    }
    let beta = peer_pki();
    let sink = Sink::start(beta.path(), 0.0);
    let mut a = provider_a(beta.path(), sink.port);
    a.start();
    let r = a.smtp(
        "send",
        &[
            "a@pec.alfa.test",
            "pw-a",
            "x@pec.beta.test,reject1@pec.beta.test",
            "-",
            "Verso beta",
            "-",
        ],
    );
    assert_eq!(r["refused"].as_array().unwrap().len(), 0, "{r}");
    let msgs = sink.wait_for(1);
    a.stop();

    let env = std::fs::read(msgs[0].with_extension("env")).unwrap();
    let env = String::from_utf8(env).unwrap();
    assert_eq!(
        env.lines().collect::<Vec<_>>(),
        vec!["a@pec.alfa.test", "x@pec.beta.test"],
        "original reverse/forward paths"
    );
    let bytes = std::fs::read(&msgs[0]).unwrap();
    let trust = TrustAnchors::from_pem(&std::fs::read(a.ca()).unwrap()).unwrap();
    let rep = pecd::report::verify(&bytes, Some(&trust)).unwrap();
    assert_eq!(rep.kind, "transport-envelope");
    assert!(rep.ok, "{:?}", rep.reasons);
    if common::have("openssl", "openssl cms -verify") {
        let (ok, err) = common::openssl_verify(&bytes, &a.ca());
        assert!(ok, "{err}");
    }
    let out = a.admin(&["log", "--json"]);
    assert!(out.contains("Relayed"), "{out}");
    assert!(
        out.contains("RelayFailed") && out.contains("reject1@pec.beta.test"),
        "{out}"
    );
}

#[test]
fn nothing_is_lost_when_killed_between_250_and_relay() {
    if !have_python() {
        return;
    }
    let beta = peer_pki();
    // The peer is slow to greet: the relay is in flight when the process is killed.
    let sink = Sink::start(beta.path(), 3.0);
    let mut a = provider_a(beta.path(), sink.port);
    a.start();
    let r = a.smtp(
        "send",
        &[
            "a@pec.alfa.test",
            "pw-a",
            "y@pec.beta.test",
            "-",
            "Sopravvivo",
            "-",
        ],
    );
    assert_eq!(r["refused"].as_array().unwrap().len(), 0, "{r}");
    a.kill();
    assert!(
        sink.messages().is_empty(),
        "nothing relayed before the kill"
    );

    a.start();
    let msgs = sink.wait_for(1);
    a.stop();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sink.messages().len(), 1, "relayed exactly once: {msgs:?}");

    let store = Store::open(a.data_dir(), StoreOptions::default()).unwrap();
    let inbox = store
        .messages(&PecAddress::parse("a@pec.alfa.test").unwrap(), "INBOX")
        .unwrap();
    assert_eq!(
        inbox.len(),
        1,
        "one acceptance receipt, not repeated by the restart"
    );
    assert_eq!(store.queue_len(), 0, "the queue is empty");
}
