//! What the incoming point trusts from other providers (rules §6.2, §4.7, §8.3).
//!
//! Provider B (`pec.beta.test`) runs in-process on loopback with provider A's index entry
//! imported (`pecd index export|import`); A is only initialised: the test signs with A's
//! real key (through A's opened gateway) and plays A's part over real SMTP+STARTTLS to
//! B's `smtp` listener. B's clock is a ManualClock so the signer's validity period is
//! judged at an instant the test chooses. The attacks: unsigned parts appended beside the
//! signature, an unsigned header changed, a validly signed envelope replayed to a
//! recipient it does not list, receipts for messages B never sent or for other mailboxes.

mod common;

use common::ports::free_port;

use std::sync::Arc;
use std::time::Duration;

use jiff::SignedDuration;
use pecd::clock::{Clock, ManualClock, SharedClock};
use pecd::config::Config;
use pecd::gateway::Gateway;
use pecd::pec::address::PecAddress;
use pecd::pec::classify::{Kind, NotCertified, classify};
use pecd::pec::compose::{Certification, ProviderIdentity};
use pecd::pec::daticert::{Destinatario, Tipo, TipoDestinatario, TipoRicevuta};
use pecd::pec::smime::{self, Signer, SmimeError};
use pecd::pec::time::PecTime;
use pecd::pec::{envelope, mime, receipt};
use pecd::server::Running;
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

/// Loopback listeners for `dir`'s config (only `smtp`), and `peer`'s index entry imported.
fn wire(dir: &std::path::Path, smtp_port: u16, peer: &std::path::Path) {
    let cfg = dir.join("pecd.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let mut out = String::new();
    for line in text.lines() {
        let l = match line.split_once(" = ") {
            Some(("smtp", _)) => format!("smtp = \"127.0.0.1:{smtp_port}\""),
            Some((k, _))
                if ["smtps", "submission", "imaps", "pop3s", "https", "admin"].contains(&k) =>
            {
                format!("{k} = \"off\"")
            }
            _ => line.to_string(),
        };
        out.push_str(&l);
        out.push('\n');
    }
    std::fs::write(&cfg, out).unwrap();
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

async fn open(dir: &std::path::Path, clock: SharedClock) -> Arc<Gateway> {
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

/// Sends raw bytes to B's smtp listener with STARTTLS; returns the reply code.
async fn smtp_to(dir: &std::path::Path, port: u16, from: &str, rcpts: &[&str], data: &[u8]) -> u16 {
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

fn certification(mittente: &str, to: &[&str], ident: &str) -> Certification {
    Certification {
        mittente: mittente.into(),
        destinatari: to
            .iter()
            .map(|a| Destinatario {
                address: a.to_string(),
                tipo: TipoDestinatario::Certificato,
            })
            .collect(),
        risposte: mittente.into(),
        oggetto: "Prova".into(),
        identificativo: ident.into(),
        msgid: None,
        ricevuta: TipoRicevuta::Completa,
    }
}

fn original(from: &str, to: &[&str]) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: {}\r\nSubject: Prova\r\nMessage-ID: <c1@client>\r\n\r\nciao\r\n",
        to.join(", ")
    )
    .into_bytes()
}

fn transport(id: &ProviderIdentity, signer: &Signer, cert: &Certification, to: &[&str]) -> Vec<u8> {
    let at = PecTime::italian(jiff::Timestamp::now());
    envelope::transport(id, signer, cert, original(&cert.mittente, to), at)
        .unwrap()
        .message
        .bytes
}

fn delivery_receipt(
    id: &ProviderIdentity,
    signer: &Signer,
    cert: &Certification,
    consegna: &str,
) -> Vec<u8> {
    let at = PecTime::italian(jiff::Timestamp::now());
    receipt::build(
        id,
        signer,
        cert,
        receipt::Notice::AvvenutaConsegna {
            consegna,
            form: TipoRicevuta::Sintetica,
            postacert: None,
        },
        at,
    )
    .unwrap()
    .bytes
}

/// The raw `daticert.xml` body part (headers included) of a signed PEC message.
fn daticert_part(signed_message: &[u8]) -> Vec<u8> {
    let content = smime::signed_content(signed_message).unwrap().content;
    let (h, body) = mime::split_header_body(&content);
    let ct = mime::ContentType::parse(&mime::header_value(h, "content-type").unwrap());
    let b = ct.param("boundary").unwrap().to_string();
    mime::split_multipart(body, b.as_bytes())
        .parts
        .into_iter()
        .find(|p| String::from_utf8_lossy(p).contains("daticert.xml"))
        .unwrap()
        .to_vec()
}

/// Appends `part` as a further body part of the top `multipart/signed`, after the signature.
fn append_part(signed_message: &[u8], part: &[u8]) -> Vec<u8> {
    let (h, _) = mime::split_header_body(signed_message);
    let ct = mime::ContentType::parse(&mime::header_value(h, "content-type").unwrap());
    let close = format!("\r\n--{}--", ct.param("boundary").unwrap());
    let text = signed_message.to_vec();
    let at = text
        .windows(close.len())
        .rposition(|w| w == close.as_bytes())
        .unwrap();
    let mut out = text[..at].to_vec();
    out.extend_from_slice(format!("\r\n--{}\r\n", ct.param("boundary").unwrap()).as_bytes());
    out.extend_from_slice(part);
    out.extend_from_slice(&text[at..]);
    out
}

fn replace_header(message: &[u8], from: &str, to: &str) -> Vec<u8> {
    let s = String::from_utf8(message.to_vec()).unwrap();
    assert!(s.contains(from), "{from} not in the message");
    s.replacen(from, to, 1).into_bytes()
}

/// The pure attack, no network: a validly signed anomaly envelope (no daticert inside the
/// signature) gets a `daticert.xml` part appended after the signature and its
/// `X-Trasporto` changed to `posta-certificata`. The signature check refuses the extra
/// part, the classifier ignores it, and the report says NOT OK.
#[test]
fn part_appended_after_the_signature_is_refused() {
    let pki = common::dev_pki("pec.alfa.test");
    let at = PecTime::italian(jiff::Timestamp::now());
    let anomaly = envelope::anomaly(
        &pki.identity,
        &pki.signer,
        b"From: x@example.com\r\nTo: b@pec.beta.test\r\nSubject: hi\r\n\r\nciao\r\n",
        "x@example.com",
        &["b@pec.beta.test".to_string()],
        "firma assente",
        at,
    )
    .unwrap()
    .bytes;
    // Untouched, it verifies and is not a certified envelope.
    assert!(smime::verify_message(&anomaly, Some(&pki.trust)).valid);
    let donor = transport(
        &pki.identity,
        &pki.signer,
        &certification(
            "a@pec.alfa.test",
            &["b@pec.beta.test"],
            "opec-1@mail.pec.alfa.test",
        ),
        &["b@pec.beta.test"],
    );
    let forged = replace_header(
        &append_part(&anomaly, &daticert_part(&donor)),
        "X-Trasporto: errore",
        "X-Trasporto: posta-certificata",
    );

    assert!(matches!(
        smime::split_signed(&forged),
        Err(SmimeError::ExtraParts(3))
    ));
    let check = smime::verify_message(&forged, Some(&pki.trust));
    assert!(!check.valid);
    assert!(check.reason.unwrap_or_default().contains("exactly 2"));

    let c = classify(&forged).unwrap();
    assert_eq!(c.kind, Kind::TransportEnvelope, "the header says so");
    assert!(
        c.daticert.is_none(),
        "the appended daticert is not signed content"
    );
    assert_eq!(c.certified().unwrap_err(), NotCertified::NoDaticert);
    assert!(
        c.problems.iter().any(|p| p.contains("3 body parts")),
        "{:?}",
        c.problems
    );

    let r = pecd::report::verify(&forged, Some(&pki.trust)).unwrap();
    assert!(!r.ok);
    assert!(r.daticert.is_none());
    assert!(!r.signature.valid);
}

/// The unsigned header changed on a validly signed delivery receipt: the signature stays
/// valid (headers are outside it, digest §13) but the message is not taken for what the
/// header claims, because the signed daticert says otherwise.
#[test]
fn changed_unsigned_header_does_not_change_what_the_message_is() {
    let pki = common::dev_pki("pec.alfa.test");
    let cert = certification(
        "b@pec.beta.test",
        &["a@pec.alfa.test"],
        "opec-2@mail.pec.beta.test",
    );
    let real = delivery_receipt(&pki.identity, &pki.signer, &cert, "a@pec.alfa.test");
    assert_eq!(
        classify(&real).unwrap().certified().unwrap().tipo,
        Tipo::AvvenutaConsegna
    );
    for (from, to) in [
        (
            "X-Ricevuta: avvenuta-consegna",
            "X-Trasporto: posta-certificata",
        ),
        (
            "X-Ricevuta: avvenuta-consegna",
            "X-Ricevuta: presa-in-carico",
        ),
    ] {
        let forged = replace_header(&real, from, to);
        assert!(
            smime::verify_message(&forged, Some(&pki.trust)).valid,
            "{to}"
        );
        let c = classify(&forged).unwrap();
        assert!(
            matches!(c.certified(), Err(NotCertified::TipoMismatch { .. })),
            "{to}: {:?}",
            c.certified()
        );
        let r = pecd::report::verify(&forged, Some(&pki.trust)).unwrap();
        assert!(!r.ok, "{to}");
    }
}

struct B {
    dir: tempfile::TempDir,
    port: u16,
    gw: Arc<Gateway>,
    running: Option<Running>,
}

fn anomaly_details(gw: &Gateway) -> Vec<String> {
    gw.store
        .trace()
        .query(&TraceQuery::default())
        .unwrap()
        .into_iter()
        .filter(|r| r.kind == EventKind::AnomalyWrapped)
        .filter_map(|r| r.detail)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn incoming_point_trusts_only_what_the_signature_covers() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("pecd=info")
        .try_init();
    let a_dir = init("pec.alfa.test");
    let b_dir = init("pec.beta.test");
    let (a_port, b_port) = (free_port(), free_port());
    wire(a_dir.path(), a_port, b_dir.path());
    wire(b_dir.path(), b_port, a_dir.path());
    // A is not started (its relay target is closed): B's messages to A stay queued, which
    // is all the receipt checks need. A's gateway is opened for its identity and key.
    let a = open(a_dir.path(), pecd::clock::system()).await;
    let clock_b = Arc::new(ManualClock::new(jiff::Timestamp::now()));
    let gw_b = open(b_dir.path(), clock_b.clone()).await;
    let running = pecd::server::start(gw_b.clone()).await.unwrap();
    let b = B {
        dir: b_dir,
        port: b_port,
        gw: gw_b,
        running: Some(running),
    };
    for (u, anomalies) in [
        ("b", false),
        ("b2", false),
        ("b3", true),
        ("posta-certificata", false),
    ] {
        let addr = format!("{u}@pec.beta.test");
        if b.gw
            .store
            .mailbox(&PecAddress::parse(&addr).unwrap())
            .unwrap()
            .is_none()
        {
            add(&b.gw, &addr, anomalies);
        }
    }
    let send = |from: &'static str, rcpts: Vec<&'static str>, data: Vec<u8>| {
        let (dir, port) = (b.dir.path().to_path_buf(), b.port);
        async move { smtp_to(&dir, port, from, &rcpts, &data).await }
    };

    // 1. A correct envelope from A for b: certified delivery (the control case).
    let cert = certification(
        "a@pec.alfa.test",
        &["b@pec.beta.test"],
        "opec-10@mail.pec.alfa.test",
    );
    let env_b = transport(&a.identity, &a.signer, &cert, &["b@pec.beta.test"]);
    assert_eq!(
        send("a@pec.alfa.test", vec!["b@pec.beta.test"], env_b.clone()).await,
        250
    );
    assert_eq!(inbox(&b.gw, "b@pec.beta.test"), ["posta-certificata"]);

    // 2. The same validly signed envelope replayed by A to b2, whom it does not list: not
    //    delivered as certified. §4.7 a: from a provider but not a correct envelope for
    //    b2 → anomaly envelope, which reaches b2 even without opting in.
    assert_eq!(
        send("a@pec.alfa.test", vec!["b2@pec.beta.test"], env_b.clone()).await,
        250
    );
    assert_eq!(inbox(&b.gw, "b2@pec.beta.test"), ["anomaly-envelope"]);
    assert!(
        anomaly_details(&b.gw)
            .iter()
            .any(|d| d.contains("non sono tra i destinatari")),
        "{:?}",
        anomaly_details(&b.gw)
    );

    // 3. Mixed forward-paths: b3 listed gets the certified envelope, b2 (not listed) an
    //    anomaly; one take-charge covers only b3.
    let cert3 = certification(
        "a@pec.alfa.test",
        &["b3@pec.beta.test"],
        "opec-11@mail.pec.alfa.test",
    );
    let env3 = transport(&a.identity, &a.signer, &cert3, &["b3@pec.beta.test"]);
    assert_eq!(
        send(
            "a@pec.alfa.test",
            vec!["b3@pec.beta.test", "b2@pec.beta.test"],
            env3
        )
        .await,
        250
    );
    assert_eq!(inbox(&b.gw, "b3@pec.beta.test"), ["posta-certificata"]);
    assert_eq!(
        inbox(&b.gw, "b2@pec.beta.test"),
        ["anomaly-envelope", "anomaly-envelope"]
    );
    let tc: Vec<_> =
        b.gw.store
            .trace()
            .query(&TraceQuery {
                ident: Some("opec-11@mail.pec.alfa.test".into()),
                ..Default::default()
            })
            .unwrap()
            .into_iter()
            .filter(|r| r.kind == EventKind::TakeChargeSent)
            .collect();
    assert_eq!(tc.len(), 1);
    assert_eq!(tc[0].recipients, ["b3@pec.beta.test"]);

    // 4. An envelope from A for a sender in a domain A does not manage (§6.2, §8.3).
    let cert4 = certification(
        "x@pec.gamma.test",
        &["b3@pec.beta.test"],
        "opec-12@mail.pec.alfa.test",
    );
    let env4 = transport(&a.identity, &a.signer, &cert4, &["b3@pec.beta.test"]);
    assert_eq!(
        send("x@pec.gamma.test", vec!["b3@pec.beta.test"], env4).await,
        250
    );
    assert_eq!(
        inbox(&b.gw, "b3@pec.beta.test"),
        ["posta-certificata", "anomaly-envelope"]
    );
    assert!(
        anomaly_details(&b.gw)
            .iter()
            .any(|d| d.contains("non gestisce"))
    );

    // 5. The appended-part attack over the wire: the signature no longer verifies, b does
    //    not accept non-certified mail → 550, nothing delivered.
    let anomaly = envelope::anomaly(
        &a.identity,
        &a.signer,
        b"From: x@example.com\r\nTo: b@pec.beta.test\r\nSubject: hi\r\n\r\nciao\r\n",
        "x@example.com",
        &["b@pec.beta.test".to_string()],
        "firma assente",
        PecTime::italian(jiff::Timestamp::now()),
    )
    .unwrap()
    .bytes;
    let forged = replace_header(
        &append_part(&anomaly, &daticert_part(&env_b)),
        "X-Trasporto: errore",
        "X-Trasporto: posta-certificata",
    );
    assert_eq!(
        send("a@pec.alfa.test", vec!["b@pec.beta.test"], forged).await,
        550
    );
    assert_eq!(inbox(&b.gw, "b@pec.beta.test"), ["posta-certificata"]);

    // 6. A delivery receipt signed by A with X-Ricevuta turned into X-Trasporto: not an
    //    envelope (the signed daticert says avvenuta-consegna) → anomaly, not certified.
    let rc = certification(
        "b@pec.beta.test",
        &["a@pec.alfa.test"],
        "opec-13@mail.pec.beta.test",
    );
    let turned = replace_header(
        &delivery_receipt(&a.identity, &a.signer, &rc, "a@pec.alfa.test"),
        "X-Ricevuta: avvenuta-consegna",
        "X-Trasporto: posta-certificata",
    );
    assert_eq!(
        send(
            "posta-certificata@pec.alfa.test",
            vec!["b3@pec.beta.test"],
            turned
        )
        .await,
        250
    );
    assert_eq!(
        inbox(&b.gw, "b3@pec.beta.test"),
        ["posta-certificata", "anomaly-envelope", "anomaly-envelope"]
    );

    // 6b. A correct envelope whose unsigned From: was changed to another address: not
    //     the signing certificate's (rule §2 item 2) → anomaly.
    let cert6 = certification(
        "a@pec.alfa.test",
        &["b3@pec.beta.test"],
        "opec-16@mail.pec.alfa.test",
    );
    let env6 = transport(&a.identity, &a.signer, &cert6, &["b3@pec.beta.test"]);
    let env6 = replace_header(
        &env6,
        "<posta-certificata@pec.alfa.test>",
        "<posta-certificata@pec.evil.test>",
    );
    assert!(smime::verify_message(&env6, None).valid);
    assert_eq!(
        send("a@pec.alfa.test", vec!["b3@pec.beta.test"], env6).await,
        250
    );
    assert_eq!(
        inbox(&b.gw, "b3@pec.beta.test"),
        [
            "posta-certificata",
            "anomaly-envelope",
            "anomaly-envelope",
            "anomaly-envelope"
        ]
    );
    assert!(
        anomaly_details(&b.gw)
            .last()
            .is_some_and(|d| d.contains("certificato di firma")),
        "{:?}",
        anomaly_details(&b.gw)
    );

    // Receipts. B really sends a message from b to a@A (it stays queued: A is down).
    let sub = pecd::pipeline::access::submit(
        &b.gw,
        pecd::smtp::session::Envelope {
            mail_from: "b@pec.beta.test".into(),
            rcpt_to: vec!["a@pec.alfa.test".into()],
            data: original("b@pec.beta.test", &["a@pec.alfa.test"]),
            authenticated: Some("b@pec.beta.test".into()),
            helo: "client".into(),
            tls: true,
        },
    )
    .await
    .unwrap();
    assert_eq!(sub.code, 250, "{}", sub.text);
    let ident =
        b.gw.store
            .trace()
            .query(&TraceQuery {
                mailbox: Some("b@pec.beta.test".into()),
                ..Default::default()
            })
            .unwrap()
            .into_iter()
            .find(|r| r.kind == EventKind::SubmissionAccepted)
            .and_then(|r| r.ident)
            .unwrap();
    assert!(
        b.gw.store
            .pending(&ident, "a@pec.alfa.test")
            .unwrap()
            .is_some()
    );
    let receipts = |who| {
        inbox(&b.gw, who)
            .into_iter()
            .filter(|k| k == "avvenuta-consegna")
            .count()
    };

    // 7. A receipt from A (in the index, manages a@A) for an identificativo B never sent:
    //    not delivered as a receipt. §4.7 a: from a provider but not a correct receipt →
    //    anomaly envelope.
    let never = certification(
        "b@pec.beta.test",
        &["a@pec.alfa.test"],
        "opec-never@mail.pec.beta.test",
    );
    let r7 = delivery_receipt(&a.identity, &a.signer, &never, "a@pec.alfa.test");
    assert_eq!(
        send(
            "posta-certificata@pec.alfa.test",
            vec!["b@pec.beta.test"],
            r7
        )
        .await,
        250
    );
    assert_eq!(receipts("b@pec.beta.test"), 0);
    assert_eq!(
        inbox(&b.gw, "b@pec.beta.test").last().unwrap(),
        "anomaly-envelope"
    );
    assert!(
        anomaly_details(&b.gw)
            .iter()
            .any(|d| d.contains("mai accettato"))
    );

    // 8. The genuine receipt for the message B sent, addressed to b and b2: delivered to
    //    b (the original sender) only, and it resolves the pending deadline.
    let real = certification("b@pec.beta.test", &["a@pec.alfa.test"], &ident);
    let r8 = delivery_receipt(&a.identity, &a.signer, &real, "a@pec.alfa.test");
    let b2_before = inbox(&b.gw, "b2@pec.beta.test").len();
    assert_eq!(
        send(
            "posta-certificata@pec.alfa.test",
            vec!["b@pec.beta.test", "b2@pec.beta.test"],
            r8
        )
        .await,
        250
    );
    assert_eq!(receipts("b@pec.beta.test"), 1);
    assert_eq!(
        inbox(&b.gw, "b2@pec.beta.test").len(),
        b2_before,
        "b2 gets nothing"
    );
    assert!(
        b.gw.store
            .pending(&ident, "a@pec.alfa.test")
            .unwrap()
            .is_none()
    );

    // 9. The genuine receipt sent only to b2: not the original sender → not a receipt
    //    for b2 (an anomaly envelope at most), still one receipt at b.
    let r9 = delivery_receipt(&a.identity, &a.signer, &real, "a@pec.alfa.test");
    assert_eq!(
        send(
            "posta-certificata@pec.alfa.test",
            vec!["b2@pec.beta.test"],
            r9
        )
        .await,
        250
    );
    assert_eq!(receipts("b2@pec.beta.test"), 0);
    assert_eq!(receipts("b@pec.beta.test"), 1);

    // 10. A receipt claiming a different sender for the real identificativo: refused as
    //     a receipt (the trace says b sent it).
    let other = certification("b3@pec.beta.test", &["a@pec.alfa.test"], &ident);
    let r10 = delivery_receipt(&a.identity, &a.signer, &other, "a@pec.alfa.test");
    assert_eq!(
        send(
            "posta-certificata@pec.alfa.test",
            vec!["b3@pec.beta.test"],
            r10
        )
        .await,
        250
    );
    assert_eq!(receipts("b3@pec.beta.test"), 0);

    // 11. Signer validity is judged at B's clock: 800 days on, A's 730-day certificate
    //     has expired; the reason says so, distinct from "not in the index".
    clock_b.set(
        clock_b
            .now()
            .checked_add(SignedDuration::from_hours(24 * 800))
            .unwrap(),
    );
    let cert11 = certification(
        "a@pec.alfa.test",
        &["b3@pec.beta.test"],
        "opec-14@mail.pec.alfa.test",
    );
    let env11 = transport(&a.identity, &a.signer, &cert11, &["b3@pec.beta.test"]);
    assert_eq!(
        send("a@pec.alfa.test", vec!["b3@pec.beta.test"], env11).await,
        250
    );
    let details = anomaly_details(&b.gw);
    let last = details.last().unwrap();
    assert!(last.contains("scaduto"), "{last}");
    assert!(!last.contains("indice"), "{last}");
    assert_eq!(
        inbox(&b.gw, "b3@pec.beta.test")
            .iter()
            .filter(|k| *k == "posta-certificata")
            .count(),
        1,
        "not delivered as certified"
    );
    let stranger = common::dev_pki("pec.stranger.test");
    let cert12 = certification(
        "x@pec.stranger.test",
        &["b3@pec.beta.test"],
        "opec-15@mail.pec.stranger.test",
    );
    let env12 = transport(
        &stranger.identity,
        &stranger.signer,
        &cert12,
        &["b3@pec.beta.test"],
    );
    assert_eq!(
        send("x@pec.stranger.test", vec!["b3@pec.beta.test"], env12).await,
        250
    );
    let details = anomaly_details(&b.gw);
    let last = details.last().unwrap();
    assert!(last.contains("non presente nell'indice"), "{last}");
    assert!(!last.contains("scaduto"), "{last}");

    let B { running, .. } = b;
    if let Some(r) = running {
        r.shutdown().await;
    }
    drop(a);
}

/// Provider A (initialised and opened for its key, not started) and provider B running on
/// loopback with a manual clock, each having imported the other's index entry; B's
/// mailboxes `(local part, accepts anomalies, quota)` are created.
struct Pair {
    _a_dir: tempfile::TempDir,
    a: Arc<Gateway>,
    clock_b: Arc<ManualClock>,
    b: B,
}

impl Pair {
    async fn start(mailboxes: &[(&str, bool, Option<u64>)]) -> Pair {
        let a_dir = init("pec.alfa.test");
        let b_dir = init("pec.beta.test");
        let (a_port, b_port) = (free_port(), free_port());
        wire(a_dir.path(), a_port, b_dir.path());
        wire(b_dir.path(), b_port, a_dir.path());
        let a = open(a_dir.path(), pecd::clock::system()).await;
        let clock_b = Arc::new(ManualClock::new(jiff::Timestamp::now()));
        let gw_b = open(b_dir.path(), clock_b.clone()).await;
        for (u, accept_anomalies, quota_bytes) in mailboxes {
            let address = PecAddress::parse(&format!("{u}@pec.beta.test")).unwrap();
            if gw_b.store.mailbox(&address).unwrap().is_none() {
                gw_b.store
                    .add_mailbox(NewMailbox {
                        address,
                        password: Password::new("pw"),
                        quota_bytes: *quota_bytes,
                        options: MailboxOptions {
                            accept_anomalies: *accept_anomalies,
                        },
                        provisional: false,
                    })
                    .unwrap();
            }
        }
        let running = pecd::server::start(gw_b.clone()).await.unwrap();
        Pair {
            _a_dir: a_dir,
            a,
            clock_b,
            b: B {
                dir: b_dir,
                port: b_port,
                gw: gw_b,
                running: Some(running),
            },
        }
    }

    async fn send(&self, from: &str, rcpts: &[&str], data: &[u8]) -> u16 {
        smtp_to(self.b.dir.path(), self.b.port, from, rcpts, data).await
    }

    fn trace(&self, kind: EventKind, ident: Option<&str>) -> Vec<pecd::trace::TraceRecord> {
        self.b
            .gw
            .store
            .trace()
            .query(&TraceQuery {
                ident: ident.map(str::to_string),
                ..Default::default()
            })
            .unwrap()
            .into_iter()
            .filter(|r| r.kind == kind)
            .collect()
    }

    /// b@B submits a message to a@A (A is not running: it stays queued); its identificativo.
    async fn b_sends_to_a(&self) -> String {
        let sub = pecd::pipeline::access::submit(
            &self.b.gw,
            pecd::smtp::session::Envelope {
                mail_from: "b@pec.beta.test".into(),
                rcpt_to: vec!["a@pec.alfa.test".into()],
                data: original("b@pec.beta.test", &["a@pec.alfa.test"]),
                authenticated: Some("b@pec.beta.test".into()),
                helo: "client".into(),
                tls: true,
            },
        )
        .await
        .unwrap();
        assert_eq!(sub.code, 250, "{}", sub.text);
        self.trace(EventKind::SubmissionAccepted, None)
            .pop()
            .and_then(|r| r.ident)
            .unwrap()
    }

    async fn stop(mut self) {
        if let Some(r) = self.b.running.take() {
            r.shutdown().await;
        }
    }
}

/// A full mailbox among the targets of an anomaly envelope: the others still get it, the
/// full one is traced, and the peer gets 452 only when every target is full. Next to a
/// certified delivery (an unlisted forward-path that is full), the peer still gets 250:
/// it already holds the take-charge.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_full_mailbox_does_not_hold_back_the_others() {
    let p = Pair::start(&[
        ("b", false, None),
        ("b3", true, None),
        ("full", true, Some(1000)),
        ("posta-certificata", false, None),
    ])
    .await;
    let plain = |to: &str| {
        format!("From: x@example.com\r\nTo: {to}\r\nSubject: hi\r\n\r\nciao\r\n").into_bytes()
    };

    // Ordinary mail to a full mailbox and one with room.
    let both = ["full@pec.beta.test", "b3@pec.beta.test"];
    assert_eq!(
        p.send("x@example.com", &both, &plain(&both.join(", ")))
            .await,
        250
    );
    assert_eq!(inbox(&p.b.gw, "b3@pec.beta.test"), ["anomaly-envelope"]);
    assert!(inbox(&p.b.gw, "full@pec.beta.test").is_empty());
    let failed = p.trace(EventKind::DeliveryFailed, None);
    assert!(
        failed.iter().any(|r| r.recipients == ["full@pec.beta.test"]
            && r.detail.as_deref().unwrap_or("").contains("mailbox full")),
        "the left-out mailbox is traced"
    );

    // Only the full one: nothing stored, the peer may try again later.
    assert_eq!(
        p.send(
            "x@example.com",
            &["full@pec.beta.test"],
            &plain("full@pec.beta.test")
        )
        .await,
        452
    );
    assert!(inbox(&p.b.gw, "full@pec.beta.test").is_empty());

    // A correct envelope listing b, also sent to the full (unlisted) mailbox.
    let cert = certification(
        "a@pec.alfa.test",
        &["b@pec.beta.test"],
        "opec-20@mail.pec.alfa.test",
    );
    let env = transport(&p.a.identity, &p.a.signer, &cert, &["b@pec.beta.test"]);
    assert_eq!(
        p.send(
            "a@pec.alfa.test",
            &["b@pec.beta.test", "full@pec.beta.test"],
            &env
        )
        .await,
        250,
        "taken in charge: never a 4xx for that transaction"
    );
    assert_eq!(inbox(&p.b.gw, "b@pec.beta.test"), ["posta-certificata"]);
    assert!(inbox(&p.b.gw, "full@pec.beta.test").is_empty());
    let tc = p.trace(
        EventKind::TakeChargeSent,
        Some("opec-20@mail.pec.alfa.test"),
    );
    assert_eq!(tc.len(), 1);
    assert_eq!(tc[0].recipients, ["b@pec.beta.test"]);
    p.stop().await;
}

/// A peer replaying a correct envelope with its forward-paths in another order, or a
/// subset of them, gets no second signed take-charge, and nothing is delivered twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replayed_envelope_gets_no_second_take_charge() {
    let p = Pair::start(&[
        ("b", false, None),
        ("b2", false, None),
        ("posta-certificata", false, None),
    ])
    .await;
    let ident = "opec-21@mail.pec.alfa.test";
    let to = ["b@pec.beta.test", "b2@pec.beta.test"];
    let cert = certification("a@pec.alfa.test", &to, ident);
    let env = transport(&p.a.identity, &p.a.signer, &cert, &to);
    assert_eq!(p.send("a@pec.alfa.test", &to, &env).await, 250);
    assert_eq!(p.trace(EventKind::TakeChargeSent, Some(ident)).len(), 1);

    for replay in [
        vec!["b2@pec.beta.test", "b@pec.beta.test"],
        vec!["b2@pec.beta.test"],
        vec!["b@pec.beta.test"],
    ] {
        assert_eq!(p.send("a@pec.alfa.test", &replay, &env).await, 250);
        assert_eq!(
            p.trace(EventKind::TakeChargeSent, Some(ident)).len(),
            1,
            "replay to {replay:?}"
        );
    }
    assert_eq!(inbox(&p.b.gw, "b@pec.beta.test"), ["posta-certificata"]);
    assert_eq!(inbox(&p.b.gw, "b2@pec.beta.test"), ["posta-certificata"]);
    p.stop().await;
}

/// Rule §6.4: receipts arriving after the deadline (pending entry resolved by the 24 h
/// notice) are still delivered to their mailbox, as receipts.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn receipts_after_the_24_hour_deadline_are_still_delivered() {
    let p = Pair::start(&[("b", false, None), ("posta-certificata", false, None)]).await;
    let ident = p.b_sends_to_a().await;
    // A is down: nothing arrives; the 12 h and 24 h notices close the deadline.
    p.clock_b.set(
        p.clock_b
            .now()
            .checked_add(SignedDuration::from_hours(24) + SignedDuration::from_secs(60))
            .unwrap(),
    );
    assert_eq!(pecd::pipeline::timers::tick(&p.b.gw).await.unwrap(), 2);
    assert!(
        p.b.gw
            .store
            .pending(&ident, "a@pec.alfa.test")
            .unwrap()
            .is_none()
    );

    // Then A's take-charge and delivery receipt arrive.
    let real = certification("b@pec.beta.test", &["a@pec.alfa.test"], &ident);
    let at = PecTime::italian(jiff::Timestamp::now());
    let ricezione = vec!["a@pec.alfa.test".to_string()];
    let tc = receipt::build(
        &p.a.identity,
        &p.a.signer,
        &real,
        receipt::Notice::PresaInCarico {
            ricezione: &ricezione,
            to: "posta-certificata@pec.beta.test",
        },
        at,
    )
    .unwrap()
    .bytes;
    assert_eq!(
        p.send(
            "posta-certificata@pec.alfa.test",
            &["posta-certificata@pec.beta.test"],
            &tc
        )
        .await,
        250
    );
    assert_eq!(
        inbox(&p.b.gw, "posta-certificata@pec.beta.test"),
        ["presa-in-carico"]
    );
    let dr = delivery_receipt(&p.a.identity, &p.a.signer, &real, "a@pec.alfa.test");
    assert_eq!(
        p.send("posta-certificata@pec.alfa.test", &["b@pec.beta.test"], &dr)
            .await,
        250
    );
    let kinds = inbox(&p.b.gw, "b@pec.beta.test");
    assert_eq!(
        kinds.iter().filter(|k| *k == "avvenuta-consegna").count(),
        1,
        "{kinds:?}"
    );
    assert!(
        !kinds.iter().any(|k| k == "anomaly-envelope"),
        "a late receipt is not an anomaly: {kinds:?}"
    );
    assert_eq!(
        p.trace(EventKind::DeliveryReceiptReceived, Some(&ident))
            .len(),
        1
    );
    assert_eq!(
        p.trace(EventKind::TakeChargeReceived, Some(&ident)).len(),
        1
    );
    p.stop().await;
}

/// Issue #13 item 5: the outer `Subject`, `From`, `To`, `Cc`, `Date` and `Reply-To` of a
/// transport envelope are outside the signature. A copy of a validly signed envelope whose
/// outer header says something its signed content does not is not delivered as certified:
/// it becomes an anomaly envelope naming the field (§4.7 a: reaches the recipient even
/// without opting in), and no take-charge is sent for it. The untouched envelope (control)
/// is certified.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outer_headers_that_differ_from_the_signed_content_make_an_anomaly() {
    let p = Pair::start(&[("b", false, None), ("posta-certificata", false, None)]).await;
    let to = ["b@pec.beta.test"];
    /// Sets one outer header line (`None`: removes it) of a signed message.
    fn outer(message: &[u8], name: &str, line: Option<&str>) -> Vec<u8> {
        let (h, body) = mime::split_header_body(message);
        let mut out = mime::replace_header(h, name, line);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(body);
        out
    }
    let cases: [(&str, Box<dyn Fn(&[u8]) -> Vec<u8>>, &str); 8] = [
        ("control", Box::new(|m| m.to_vec()), ""),
        (
            "subject",
            Box::new(|m| {
                outer(
                    m,
                    "Subject",
                    Some("Subject: POSTA CERTIFICATA: Pagate subito"),
                )
            }),
            "Subject:",
        ),
        (
            "from",
            Box::new(|m| {
                outer(
                    m,
                    "From",
                    Some(
                        "From: \"Per conto di: ceo@pec.alfa.test\" <posta-certificata@pec.alfa.test>",
                    ),
                )
            }),
            "From:",
        ),
        (
            "to",
            Box::new(|m| outer(m, "To", Some("To: b@pec.beta.test, tutti@pec.beta.test"))),
            "To:",
        ),
        (
            "cc",
            Box::new(|m| {
                let (h, body) = mime::split_header_body(m);
                [h, b"Cc: capo@pec.beta.test\r\n\r\n", body].concat()
            }),
            "Cc:",
        ),
        (
            "date",
            Box::new(|m| outer(m, "Date", Some("Date: Mon, 1 Jan 2024 09:00:00 +0100"))),
            "Date:",
        ),
        (
            "reply-to",
            Box::new(|m| outer(m, "Reply-To", Some("Reply-To: truffa@example.com"))),
            "Reply-To:",
        ),
        (
            "two subjects",
            Box::new(|m| {
                let (h, body) = mime::split_header_body(m);
                [h, b"Subject: POSTA CERTIFICATA: altro\r\n\r\n", body].concat()
            }),
            "ripetuta",
        ),
    ];
    for (n, (what, tamper, field)) in cases.iter().enumerate() {
        let ident = format!("opec-outer-{n}@mail.pec.alfa.test");
        let cert = certification("a@pec.alfa.test", &to, &ident);
        let env = tamper(&transport(&p.a.identity, &p.a.signer, &cert, &to));
        assert!(
            smime::verify_message(&env, None).valid,
            "{what}: still validly signed"
        );
        // `pecd verify` says the same, offline.
        let r = pecd::report::verify(&env, None).unwrap();
        let outer_ok = r
            .checks
            .iter()
            .find(|c| c.name == "outer headers")
            .map(|c| c.ok);
        assert_eq!(outer_ok, Some(*what == "control"), "{what}: {:?}", r.checks);
        assert_eq!(p.send("a@pec.alfa.test", &to, &env).await, 250, "{what}");
        let last = inbox(&p.b.gw, "b@pec.beta.test").pop().unwrap();
        let take_charge = p.trace(EventKind::TakeChargeSent, Some(&ident)).len();
        if *what == "control" {
            assert_eq!(last, "posta-certificata");
            assert_eq!(take_charge, 1);
        } else {
            assert_eq!(last, "anomaly-envelope", "{what}");
            assert_eq!(take_charge, 0, "{what}");
            let details = anomaly_details(&p.b.gw);
            let last = details.last().unwrap();
            assert!(last.contains(field), "{what}: {last}");
        }
    }
    p.stop().await;
}

/// Issue #13 item 7: one virus non-delivery notice (#8) per virus detection notice (#7)
/// means one per (identificativo, recipient). The other provider sends its #7 twice,
/// signed again (other bytes): both are kept as evidence, the sender gets one #8.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_repeated_virus_notice_gives_one_notice_to_the_sender() {
    let p = Pair::start(&[("b", false, None), ("posta-certificata", false, None)]).await;
    let ident = p.b_sends_to_a().await;
    let real = certification("b@pec.beta.test", &["a@pec.alfa.test"], &ident);
    let now = jiff::Timestamp::now();
    for secs in [0, 5] {
        let at = PecTime::italian(now + SignedDuration::from_secs(secs));
        let n7 = receipt::build(
            &p.a.identity,
            &p.a.signer,
            &real,
            receipt::Notice::RilevazioneVirus {
                consegna: "a@pec.alfa.test",
                virus: "Eicar-Signature",
                to: "posta-certificata@pec.beta.test",
            },
            at,
        )
        .unwrap()
        .bytes;
        assert_eq!(
            p.send(
                "posta-certificata@pec.alfa.test",
                &["posta-certificata@pec.beta.test"],
                &n7
            )
            .await,
            250
        );
    }
    assert_eq!(
        inbox(&p.b.gw, "posta-certificata@pec.beta.test"),
        ["rilevazione-virus", "rilevazione-virus"]
    );
    let kinds = inbox(&p.b.gw, "b@pec.beta.test");
    assert_eq!(
        kinds.iter().filter(|k| *k == "errore-consegna").count(),
        1,
        "{kinds:?}"
    );
    p.stop().await;
}
