//! CRL checking at the incoming point (rules §6.2: "check CRL ... refresh often enough to
//! keep the delay after a revocation small").
//!
//! Provider A (`pec.alfa.test`) runs in-process on loopback with `[trust] crl_dir` set and
//! provider B's index entry imported; B is only initialised and opened for its real
//! signing key. The CRL revoking B's signing certificate is made with the `openssl ca` CLI
//! and B's dev CA key (`certs/ca.key`), then dropped into A's CRL directory.

mod common;

use common::ports::free_port;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use pecd::clock::SharedClock;
use pecd::config::Config;
use pecd::gateway::Gateway;
use pecd::pec::address::PecAddress;
use pecd::pec::classify::classify;
use pecd::pec::compose::Certification;
use pecd::pec::daticert::{Destinatario, TipoDestinatario, TipoRicevuta};
use pecd::pec::envelope;
use pecd::pec::time::PecTime;
use pecd::store::NewMailbox;
use pecd::store::mailbox::{MailboxOptions, Password};
use pecd::trace::{EventKind, TraceQuery};

fn init(domain: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let out = common::server::pecd(&[
        "init",
        "--dir",
        dir.path().to_str().unwrap(),
        "--domain",
        domain,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

/// Only the `smtp` listener, on loopback; `[trust]` gets `crl_dir = "crls"` and the
/// extra CA files; `peer`'s index entry imported.
fn wire(dir: &Path, smtp_port: u16, peer: &Path, extra_ca: &[&Path]) {
    let cfg = dir.join("pecd.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let mut out = String::new();
    let mut in_trust = false;
    for line in text.lines() {
        if line.starts_with('[') {
            in_trust = line == "[trust]";
        }
        let l = match line.split_once(" = ") {
            Some(("smtp", _)) => format!("smtp = \"127.0.0.1:{smtp_port}\""),
            Some((k, _))
                if ["smtps", "submission", "imaps", "pop3s", "https", "admin"].contains(&k) =>
            {
                format!("{k} = \"off\"")
            }
            Some(("ca", _)) if in_trust => {
                let mut cas = vec!["\"certs/ca.pem\"".to_string()];
                cas.extend(
                    extra_ca
                        .iter()
                        .map(|p| format!("{:?}", p.display().to_string())),
                );
                format!("ca = [{}]\ncrl_dir = \"crls\"", cas.join(", "))
            }
            _ => line.to_string(),
        };
        out.push_str(&l);
        out.push('\n');
    }
    assert!(out.contains("crl_dir = \"crls\""), "no [trust] ca in {out}");
    std::fs::write(&cfg, out).unwrap();
    std::fs::create_dir_all(dir.join("crls")).unwrap();
    let ldif = dir.join("peer.ldif");
    let peer_cfg = peer.join("pecd.toml");
    let e = common::server::pecd(&[
        "index",
        "export",
        "--config",
        peer_cfg.to_str().unwrap(),
        "--out",
        ldif.to_str().unwrap(),
    ]);
    assert!(e.status.success(), "{}", String::from_utf8_lossy(&e.stderr));
    let i = common::server::pecd(&[
        "index",
        "import",
        ldif.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert!(i.status.success(), "{}", String::from_utf8_lossy(&i.stderr));
}

/// A CRL (PEM) issued by the dev CA of `certs` revoking `certs/signing.pem`, made with
/// the `openssl ca` CLI; written to `out`.
fn revoke_signing_cert(certs: &Path, out: &Path) {
    std::fs::write(certs.join("index.txt"), b"").unwrap();
    std::fs::write(certs.join("crlnumber"), b"01\n").unwrap();
    std::fs::write(
        certs.join("ca.cnf"),
        "[ca]\ndefault_ca=d\n[d]\ndatabase=index.txt\ncrlnumber=crlnumber\n\
         default_md=sha256\ndefault_crl_days=7\n",
    )
    .unwrap();
    let ca = [
        "ca", "-config", "ca.cnf", "-cert", "ca.pem", "-keyfile", "ca.key",
    ];
    for extra in [
        &["-revoke", "signing.pem"][..],
        &["-gencrl", "-out", out.to_str().unwrap()][..],
    ] {
        let o = Command::new("openssl")
            .current_dir(certs)
            .args(ca)
            .args(extra)
            .output()
            .expect("the openssl CLI");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
}

async fn open(dir: &Path, clock: SharedClock) -> Arc<Gateway> {
    let cfg = dir.join("pecd.toml");
    tokio::task::spawn_blocking(move || Gateway::open(Config::load(&cfg).unwrap(), clock).unwrap())
        .await
        .unwrap()
}

fn add(gw: &Gateway, addr: &str, accept_anomalies: bool) {
    gw.store
        .add_mailbox(NewMailbox {
            address: PecAddress::parse(addr).unwrap(),
            password: Password::new("pw"),
            quota_bytes: None,
            options: MailboxOptions { accept_anomalies },
            provisional: false,
        })
        .unwrap();
}

/// The kinds in a mailbox's INBOX: the daticert `tipo` when there is one, else the kind.
fn inbox(gw: &Gateway, addr: &str) -> Vec<String> {
    let a = PecAddress::parse(addr).unwrap();
    gw.store
        .messages(&a, "INBOX")
        .unwrap()
        .into_iter()
        .map(|m| {
            let c = classify(&gw.store.blobs().read(&m.blob).unwrap()).unwrap();
            match c.certified() {
                Ok(d) => d.tipo.as_str().to_string(),
                Err(_) => c.kind.name(),
            }
        })
        .collect()
}

fn trace(gw: &Gateway, kind: EventKind) -> Vec<pecd::trace::TraceRecord> {
    gw.store
        .trace()
        .query(&TraceQuery::default())
        .unwrap()
        .into_iter()
        .filter(|r| r.kind == kind)
        .collect()
}

/// Sends raw bytes to the smtp listener with STARTTLS; returns the reply code.
async fn smtp_to(dir: &Path, port: u16, from: &str, rcpts: &[&str], data: &[u8]) -> u16 {
    let tls = pecd::tls::client_config(&[dir.join("certs/ca.pem")], false).unwrap();
    let peer = pecd::smtp::client::Peer {
        host: "127.0.0.1".into(),
        port,
        tls_name: "127.0.0.1".into(),
        tls,
        timeout: Duration::from_secs(30),
    };
    let rc: Vec<String> = rcpts.iter().map(|s| s.to_string()).collect();
    let msg = pecd::smtp::client::Outgoing {
        helo: "test",
        mail_from: from,
        rcpt_to: &rc,
        data,
    };
    let r = pecd::smtp::client::send(&peer, &msg).await.unwrap();
    match &r[0].1 {
        pecd::smtp::client::RcptOutcome::Accepted => 250,
        pecd::smtp::client::RcptOutcome::Permanent(t)
        | pecd::smtp::client::RcptOutcome::Temporary(t) => t[..3].parse().unwrap(),
    }
}

/// A transport envelope signed by `sender` from `b@pec.beta.test` to `to`.
fn envelope_from(sender: &Gateway, to: &[&str], ident: &str) -> Vec<u8> {
    let cert = Certification {
        mittente: "b@pec.beta.test".into(),
        destinatari: to
            .iter()
            .map(|a| Destinatario {
                address: a.to_string(),
                tipo: TipoDestinatario::Certificato,
            })
            .collect(),
        risposte: "b@pec.beta.test".into(),
        oggetto: "Prova".into(),
        identificativo: ident.into(),
        msgid: None,
        ricevuta: TipoRicevuta::Completa,
    };
    let original = format!(
        "From: b@pec.beta.test\r\nTo: {}\r\nSubject: Prova\r\nMessage-ID: <{ident}>\r\n\r\nciao\r\n",
        to.join(", ")
    );
    let at = PecTime::italian(jiff::Timestamp::now());
    envelope::transport(
        &sender.identity,
        &sender.signer,
        &cert,
        original.into_bytes(),
        at,
    )
    .unwrap()
    .message
    .bytes
}

/// A running A, B opened for its key.
struct Pair {
    a_dir: tempfile::TempDir,
    b_dir: tempfile::TempDir,
    port: u16,
    a: Arc<Gateway>,
    b: Arc<Gateway>,
    running: pecd::server::Running,
}

impl Pair {
    /// `revoked_from_start`: the CRL is in A's `crl_dir` before A starts. `b_ca_trusted`:
    /// B's CA is in A's `[trust] ca` (so the CRL signature is checked).
    async fn start(revoked_from_start: bool, b_ca_trusted: bool) -> Pair {
        let a_dir = init("pec.alfa.test");
        let b_dir = init("pec.beta.test");
        let port = free_port();
        let b_ca = b_dir.path().join("certs/ca.pem");
        let extra: Vec<&Path> = if b_ca_trusted { vec![&b_ca] } else { vec![] };
        wire(a_dir.path(), port, b_dir.path(), &extra);
        wire(b_dir.path(), free_port(), a_dir.path(), &[]);
        if revoked_from_start {
            revoke_signing_cert(
                &b_dir.path().join("certs"),
                &a_dir.path().join("crls/beta.pem"),
            );
        }
        let b = open(b_dir.path(), pecd::clock::system()).await;
        let a = open(a_dir.path(), pecd::clock::system()).await;
        add(&a, "a@pec.alfa.test", false);
        add(&a, "a2@pec.alfa.test", true);
        add(&a, "posta-certificata@pec.alfa.test", false);
        let running = pecd::server::start(a.clone()).await.unwrap();
        Pair {
            a_dir,
            b_dir,
            port,
            a,
            b,
            running,
        }
    }

    async fn send(&self, rcpts: &[&str], ident: &str) -> u16 {
        let data = envelope_from(&self.b, rcpts, ident);
        smtp_to(
            self.a_dir.path(),
            self.port,
            "b@pec.beta.test",
            rcpts,
            &data,
        )
        .await
    }

    fn anomaly_details(&self) -> Vec<String> {
        trace(&self.a, EventKind::AnomalyWrapped)
            .into_iter()
            .filter_map(|r| r.detail)
            .collect()
    }
}

/// Without the CRL B's envelope is delivered as certified; once the CRL revoking B's
/// signing certificate is dropped into `crl_dir` (and the directory is looked at again),
/// the next envelope is handled as from an unknown signer: no take-charge, an anomaly
/// envelope for the mailbox that accepts non-certified mail, 550 for the one that does
/// not, and the trace names the revocation and its date.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revoked_signer_is_not_trusted_once_the_crl_is_dropped_in() {
    let p = Pair::start(false, false).await;

    assert_eq!(
        p.send(&["a2@pec.alfa.test"], "crl-1@mail.pec.beta.test")
            .await,
        250
    );
    assert_eq!(inbox(&p.a, "a2@pec.alfa.test"), ["posta-certificata"]);
    assert_eq!(trace(&p.a, EventKind::TakeChargeSent).len(), 1);

    revoke_signing_cert(
        &p.b_dir.path().join("certs"),
        &p.a_dir.path().join("crls/beta.pem"),
    );
    // The store looks at the directory at most every CRL_RECHECK; the test does not wait
    // for it on the real clock but asks for a look now, as the next check past it would.
    let crls = p.a.crls.clone().expect("crl_dir is set");
    let seen = tokio::task::spawn_blocking(move || crls.current(Duration::ZERO).len())
        .await
        .unwrap();
    assert_eq!(seen, 1);

    assert_eq!(
        p.send(&["a2@pec.alfa.test"], "crl-2@mail.pec.beta.test")
            .await,
        250
    );
    assert_eq!(
        inbox(&p.a, "a2@pec.alfa.test"),
        ["posta-certificata", "anomaly-envelope"]
    );
    assert_eq!(
        trace(&p.a, EventKind::TakeChargeSent).len(),
        1,
        "no take-charge for the revoked signer"
    );
    // Not opted in to non-certified mail: refused, like any unknown signer.
    assert_eq!(
        p.send(&["a@pec.alfa.test"], "crl-3@mail.pec.beta.test")
            .await,
        550
    );
    assert!(inbox(&p.a, "a@pec.alfa.test").is_empty());

    let details = p.anomaly_details();
    let today = &jiff::Timestamp::now().to_string()[..10];
    assert_eq!(details.len(), 2, "{details:?}");
    for d in &details {
        assert!(d.contains("certificato revocato il "), "{d}");
        assert!(d.contains(today), "revocation date missing: {d}");
        assert!(d.contains("beta.pem"), "{d}");
        // B's CA is not in A's [trust] ca: the CRL was matched by issuer name only.
        assert!(d.contains("firma della CRL non verificata"), "{d}");
    }
    p.running.shutdown().await;
}

/// With B's CA in `[trust] ca`, the CRL present from start-up is signature-checked and
/// applies from the first message; a CRL that does not verify with that CA refuses the
/// configuration, naming the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn checked_crl_applies_from_start_and_a_forged_one_is_refused() {
    let p = Pair::start(true, true).await;
    assert_eq!(
        p.send(&["a2@pec.alfa.test"], "crl-4@mail.pec.beta.test")
            .await,
        250
    );
    assert_eq!(inbox(&p.a, "a2@pec.alfa.test"), ["anomaly-envelope"]);
    assert!(trace(&p.a, EventKind::TakeChargeSent).is_empty());
    let details = p.anomaly_details();
    assert_eq!(details.len(), 1, "{details:?}");
    assert!(
        details[0].contains("certificato revocato il "),
        "{}",
        details[0]
    );
    assert!(!details[0].contains("non verificata"), "{}", details[0]);

    // `pecd verify --crl`: the same verdict offline, signature.revoked in the report.
    let eml = p.a_dir.path().join("from-b.eml");
    std::fs::write(
        &eml,
        envelope_from(&p.b, &["a2@pec.alfa.test"], "crl-5@mail.pec.beta.test"),
    )
    .unwrap();
    let crl = p.a_dir.path().join("crls/beta.pem");
    let b_ca = p.b_dir.path().join("certs/ca.pem");
    let run = |extra: &[&Path]| {
        let mut args = vec![
            eml.to_str().unwrap(),
            "--json",
            "--ca",
            b_ca.to_str().unwrap(),
        ];
        for e in extra {
            args.extend(["--crl", e.to_str().unwrap()]);
        }
        let out = common::server::pecd(&["verify"].into_iter().chain(args).collect::<Vec<_>>());
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code(), v)
    };
    let (code, v) = run(&[]);
    assert_eq!(code, Some(0), "{v}");
    assert!(v["signature"]["revoked"].is_null(), "{v}");
    let (code, v) = run(&[&crl]);
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(v["signature"]["revoked"], true, "{v}");
    assert!(
        v["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r.as_str().unwrap().contains("certificato revocato il")),
        "{v}"
    );

    // The same CRL re-signed by A's CA but claiming to be B's: A's config names B's CA,
    // whose key does not verify it.
    let a_certs = p.a_dir.path().join("certs");
    let forged_dir = tempfile::tempdir().unwrap();
    for f in ["ca.key", "signing.pem"] {
        std::fs::copy(a_certs.join(f), forged_dir.path().join(f)).unwrap();
    }
    // B's CA certificate (its name) with A's CA key: the CLI signs with the key given.
    let o = Command::new("openssl")
        .args(["x509", "-in"])
        .arg(p.b_dir.path().join("certs/ca.pem"))
        .args(["-signkey"])
        .arg(a_certs.join("ca.key"))
        .args(["-out"])
        .arg(forged_dir.path().join("ca.pem"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    revoke_signing_cert(forged_dir.path(), &p.a_dir.path().join("crls/forged.crl"));
    p.running.shutdown().await;
    let err = Config::load(&p.a_dir.path().join("pecd.toml")).unwrap_err();
    let shown = err.to_string();
    assert!(
        err.problems()
            .iter()
            .any(|x| x.key == "trust.crl_dir" && x.message.contains("forged.crl")),
        "{shown}"
    );
    assert!(shown.contains("does not verify"), "{shown}");
}
