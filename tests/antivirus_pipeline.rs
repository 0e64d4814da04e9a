//! The antivirus policy end to end, against a real clamd with a signature database the test
//! writes (EICAR): at the access point an infected submission gets the non-acceptance for
//! virus and is quarantined; at the incoming point an infected transport envelope from a
//! provider in the index is taken in charge, not delivered, and the sending provider gets a
//! *rilevazione virus* notice; with clamd down, messages are deferred (4xx), never passed
//! unscanned.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::clamd::{Clamd, eicar};
use pecd::config::Config;
use pecd::gateway::Gateway;
use pecd::pec::address::PecAddress;
use pecd::pec::classify::classify;
use pecd::pec::daticert::{Destinatario, Errore, Tipo, TipoDestinatario, TipoRicevuta};
use pecd::pipeline::access;
use pecd::smtp::session::Envelope;
use pecd::store::NewMailbox;
use pecd::store::mailbox::Password;

fn message(body: &[u8]) -> Vec<u8> {
    let mut m = b"From: a@pec.alfa.test\r\nTo: b@pec.alfa.test\r\nSubject: Allegato\r\nMessage-ID: <v-1@mua>\r\n\r\n".to_vec();
    m.extend_from_slice(body);
    m.extend_from_slice(b"\r\n");
    m
}

fn envelope(data: Vec<u8>) -> Envelope {
    Envelope {
        mail_from: "a@pec.alfa.test".into(),
        rcpt_to: vec!["b@pec.alfa.test".into()],
        data,
        authenticated: Some("a@pec.alfa.test".into()),
        helo: "t".into(),
        tls: true,
    }
}

fn inbox(gw: &Gateway, who: &str, folder: &str) -> Vec<Vec<u8>> {
    let a = PecAddress::parse(who).unwrap();
    match gw.store.folder(&a, folder).unwrap() {
        None => Vec::new(),
        Some(_) => gw
            .store
            .messages(&a, folder)
            .unwrap()
            .into_iter()
            .map(|m| gw.store.blobs().read(&m.blob).unwrap())
            .collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viruses_are_refused_reported_and_quarantined() {
    let Some(mut clamd) = Clamd::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = common::server::pecd(&[
        "init",
        "--dir",
        dir.path().to_str().unwrap(),
        "--domain",
        "pec.alfa.test",
    ]);
    assert!(out.status.success());
    // A peer provider in the index, whose envelopes we receive.
    let peer = tempfile::tempdir().unwrap();
    assert!(
        common::server::pecd(&[
            "init",
            "--dir",
            peer.path().to_str().unwrap(),
            "--domain",
            "pec.beta.test"
        ])
        .status
        .success()
    );
    let ldif = peer.path().join("beta.ldif");
    assert!(
        common::server::pecd(&[
            "index",
            "export",
            "--config",
            peer.path().join("pecd.toml").to_str().unwrap(),
            "--out",
            ldif.to_str().unwrap()
        ])
        .status
        .success()
    );
    let cfg = dir.path().join("pecd.toml");
    assert!(
        common::server::pecd(&[
            "index",
            "import",
            ldif.to_str().unwrap(),
            "--config",
            cfg.to_str().unwrap()
        ])
        .status
        .success()
    );
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "# clamd = \"127.0.0.1:3310\"",
        &format!("clamd = \"127.0.0.1:{}\"", clamd.port),
    );
    std::fs::write(&cfg, text).unwrap();
    let gw = Gateway::open(Config::load(&cfg).unwrap(), pecd::clock::system()).unwrap();
    for u in ["a", "b", "posta-certificata"] {
        gw.store
            .add_mailbox(NewMailbox {
                address: PecAddress::parse(&format!("{u}@pec.alfa.test")).unwrap(),
                password: Password::new("pw"),
                quota_bytes: None,
                options: Default::default(),
                provisional: false,
            })
            .unwrap();
    }

    // Access point: clean passes, infected is not accepted.
    let r = access::submit(&gw, envelope(message(b"nessun virus qui")))
        .await
        .unwrap();
    assert_eq!(r.code, 250, "{r:?}");
    let r = access::submit(&gw, envelope(message(&eicar())))
        .await
        .unwrap();
    assert_eq!(r.code, 554, "{r:?}");
    assert!(r.text.contains("Pecd.Test.EICAR"), "{r:?}");
    let sender = inbox(&gw, "a@pec.alfa.test", "INBOX");
    let notice = sender
        .iter()
        .map(|m| classify(m).unwrap())
        .find(|c| c.headers.x_verifica_sicurezza.as_deref() == Some("errore"))
        .expect("the non-acceptance for virus");
    let d = notice.daticert.unwrap().unwrap();
    assert_eq!((d.tipo, d.errore), (Tipo::NonAccettazione, Errore::Virus));
    assert!(
        notice.postacert.is_none(),
        "the original must not be included"
    );
    assert_eq!(
        inbox(&gw, "posta-certificata@pec.alfa.test", "Quarantena").len(),
        1
    );
    let svc = PecAddress::parse("posta-certificata@pec.alfa.test").unwrap();
    assert_eq!(
        gw.store.archive_state(&svc).unwrap().unwrap().messages,
        0,
        "the quarantine is the infected message's keeping: no archived second copy"
    );
    assert!(
        gw.store
            .subscriptions(&svc)
            .unwrap()
            .contains(&"Quarantena".to_string()),
        "the quarantine folder is subscribed, so IMAP clients list it"
    );

    // Incoming point: an infected envelope signed by the peer (in the index).
    let read = |n: &str| std::fs::read(peer.path().join("certs").join(n)).unwrap();
    let peer_signer =
        pecd::pec::smime::Signer::from_pem(&read("signing.pem"), &read("signing.key"), b"")
            .unwrap();
    let peer_id = pecd::pec::compose::ProviderIdentity {
        name: "pecd Dev Provider (pec.beta.test)".into(),
        service_address: PecAddress::parse("posta-certificata@pec.beta.test").unwrap(),
        host: "mail.pec.beta.test".into(),
    };
    let cert = pecd::pec::compose::Certification {
        mittente: "x@pec.beta.test".into(),
        destinatari: vec![Destinatario {
            address: "b@pec.alfa.test".into(),
            tipo: TipoDestinatario::Certificato,
        }],
        risposte: "x@pec.beta.test".into(),
        oggetto: "Fattura".into(),
        identificativo: "opec-virus@mail.pec.beta.test".into(),
        msgid: None,
        ricevuta: TipoRicevuta::Completa,
    };
    let at = pecd::pec::time::PecTime::italian(jiff::Timestamp::now());
    let mut orig =
        b"From: x@pec.beta.test\r\nTo: b@pec.alfa.test\r\nSubject: Fattura\r\n\r\n".to_vec();
    orig.extend_from_slice(&eicar());
    let env = pecd::pec::envelope::transport(&peer_id, &peer_signer, &cert, orig, at).unwrap();
    let incoming = Envelope {
        mail_from: "x@pec.beta.test".into(),
        rcpt_to: vec!["b@pec.alfa.test".into()],
        data: env.message.bytes.clone(),
        authenticated: None,
        helo: "peer".into(),
        tls: true,
    };
    let peer_addr: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
    let r = pecd::pipeline::incoming::receive(&gw, incoming.clone(), peer_addr)
        .await
        .unwrap();
    assert_eq!(r.code, 250, "{r:?}");
    let b_inbox = inbox(&gw, "b@pec.alfa.test", "INBOX");
    assert!(
        b_inbox.iter().all(|m| classify(m)
            .unwrap()
            .daticert
            .and_then(|d| d.ok())
            .map(|d| d.identificativo)
            != Some("opec-virus@mail.pec.beta.test".into())),
        "an infected envelope is not delivered"
    );
    let queued = gw.store.queue_due(jiff::Timestamp::now(), 100).unwrap();
    let to_peer: Vec<_> = queued
        .iter()
        .filter(|q| q.domain.as_str() == "pec.beta.test")
        .collect();
    let kinds: Vec<Tipo> = to_peer
        .iter()
        .map(|q| {
            classify(&gw.store.blobs().read(&q.blob).unwrap())
                .unwrap()
                .daticert
                .unwrap()
                .unwrap()
                .tipo
        })
        .collect();
    assert!(
        kinds.contains(&Tipo::PresaInCarico) && kinds.contains(&Tipo::RilevazioneVirus),
        "{kinds:?}"
    );
    assert_eq!(
        inbox(&gw, "posta-certificata@pec.alfa.test", "Quarantena").len(),
        2
    );

    // clamd down: deferred, never passed unscanned.
    clamd.kill();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = access::submit(&gw, envelope(message(b"pulito ma non scansionabile")))
        .await
        .unwrap();
    assert_eq!(r.code, 451, "{r:?}");
    // A new envelope (the infected one above was handled once and for all: a replay of it
    // is answered from its claims without scanning again).
    let clean_cert = pecd::pec::compose::Certification {
        identificativo: "opec-clean@mail.pec.beta.test".into(),
        ..cert.clone()
    };
    let clean =
        b"From: x@pec.beta.test\r\nTo: b@pec.alfa.test\r\nSubject: Fattura\r\n\r\npulita\r\n";
    let env =
        pecd::pec::envelope::transport(&peer_id, &peer_signer, &clean_cert, clean.to_vec(), at)
            .unwrap();
    let fresh = Envelope {
        data: env.message.bytes.clone(),
        ..incoming
    };
    let r = pecd::pipeline::incoming::receive(&gw, fresh, peer_addr)
        .await
        .unwrap();
    assert_eq!(r.code, 451, "{r:?}");
    let _ = Arc::clone(&gw);
}
