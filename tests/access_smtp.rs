//! The access point over real TLS on loopback, driven by an independent client (Python's
//! smtplib), with local recipients taking the full access → incoming → delivery path.
//! Every stored envelope and receipt is checked by `openssl cms -verify` against the dev
//! CA and by `pecd verify`.

mod common;

use common::server::{Server, pecd};
use pecd::pec::address::PecAddress;
use pecd::pec::classify::{Kind, classify};
use pecd::pec::daticert::{Errore, Tipo, TipoRicevuta};
use pecd::pec::smime::TrustAnchors;
use pecd::store::{Store, StoreOptions};
use pecd::trace::{EventKind, TraceQuery, TraceRecord};

const DOMAIN: &str = "pec.alfa.test";

fn have_python() -> bool {
    let ok = std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_ok();
    if !ok {
        common::skip("python3 is not installed");
    }
    ok
}

/// Every message in a mailbox's INBOX, as bytes.
fn inbox(store: &Store, addr: &str) -> Vec<Vec<u8>> {
    let a = PecAddress::parse(addr).unwrap();
    store
        .messages(&a, "INBOX")
        .unwrap()
        .into_iter()
        .map(|m| store.blobs().read(&m.blob).unwrap())
        .collect()
}

fn daticert_of(m: &[u8]) -> pecd::pec::daticert::Daticert {
    classify(m)
        .unwrap()
        .daticert
        .expect("daticert")
        .expect("parsable daticert")
}

fn check_signed(srv: &Server, trust: &TrustAnchors, m: &[u8], what: &str) {
    let r = pecd::report::verify(m, Some(trust)).unwrap();
    assert!(r.ok, "{what}: {:?}", r.reasons);
    if common::have("openssl", "openssl cms -verify") {
        let (ok, err) = common::openssl_verify(m, &srv.ca());
        assert!(ok, "{what}: openssl refused: {err}");
    }
}

/// Every trace record, oldest first.
fn trace(store: &Store) -> Vec<TraceRecord> {
    store.trace().query(&TraceQuery::default()).unwrap()
}

fn counts(store: &Store) -> Vec<usize> {
    ["a", "b", "c", "posta-certificata"]
        .iter()
        .map(|u| inbox(store, &format!("{u}@{DOMAIN}")).len())
        .collect()
}

#[test]
fn local_delivery_with_every_receipt_form() {
    if !have_python() {
        return;
    }
    let mut srv = Server::new(
        DOMAIN,
        &[
            ("a@pec.alfa.test", "pw-a"),
            ("b@pec.alfa.test", "pw-b"),
            ("c@pec.alfa.test", "pw-c"),
        ],
    );
    srv.start();
    let a = "a@pec.alfa.test";
    for (subject, to, cc, tipo) in [
        ("Prova completa", "b@pec.alfa.test", "c@pec.alfa.test", "-"),
        ("Prova breve", "b@pec.alfa.test", "-", "breve"),
        ("Prova sintetica", "b@pec.alfa.test", "-", "sintetica"),
        ("Prova inesistente", "nobody@pec.alfa.test", "-", "-"),
    ] {
        let r = srv.smtp("send", &[a, "pw-a", to, cc, subject, tipo]);
        assert_eq!(r["refused"].as_array().unwrap().len(), 0, "{subject}: {r}");
    }
    srv.stop();

    let trust = TrustAnchors::from_pem(&std::fs::read(srv.ca()).unwrap()).unwrap();
    let (b_inbox, c_inbox, a_inbox, svc, records);
    {
        let store = Store::open(srv.data_dir(), StoreOptions::default()).unwrap();
        b_inbox = inbox(&store, "b@pec.alfa.test");
        c_inbox = inbox(&store, "c@pec.alfa.test");
        a_inbox = inbox(&store, a);
        svc = inbox(&store, "posta-certificata@pec.alfa.test");
        records = trace(&store);
    }
    // Every receipt we issued is in the trace log by its exact SHA-256, in the record of
    // the step that sent it: the provider can prove in court that a receipt is its own.
    for m in a_inbox.iter().chain(&svc) {
        let h = pecd::trace::sha256_hex(m);
        let r = records
            .iter()
            .find(|r| r.sha256.as_deref() == Some(h.as_str()))
            .unwrap_or_else(|| panic!("no trace record holds the hash of a receipt we sent"));
        assert!(
            matches!(
                r.kind,
                EventKind::AcceptanceSent
                    | EventKind::DeliveryReceiptSent
                    | EventKind::NonDeliverySent
                    | EventKind::TakeChargeSent
            ),
            "{:?}",
            r.kind
        );
    }
    // Recipients: the transport envelopes, with the original inside.
    assert_eq!(b_inbox.len(), 3, "b gets three envelopes");
    assert_eq!(c_inbox.len(), 1, "c (in Cc) gets one envelope");
    for m in b_inbox.iter().chain(&c_inbox) {
        check_signed(&srv, &trust, m, "transport envelope");
        let c = classify(m).unwrap();
        assert_eq!(c.kind, Kind::TransportEnvelope);
        let orig = String::from_utf8_lossy(c.postacert.as_ref().unwrap()).into_owned();
        assert!(
            orig.contains("X-Riferimento-Message-ID: <client-1@mua.test>"),
            "{orig}"
        );
    }
    // Service mailbox: one take-charge receipt per transaction.
    assert_eq!(svc.len(), 4, "take-charge receipts");
    for m in &svc {
        check_signed(&srv, &trust, m, "take-charge");
        assert_eq!(daticert_of(m).tipo, Tipo::PresaInCarico);
    }
    // Sender: 4 acceptances, 4 delivery receipts (b completa, c sintetica, b breve,
    // b sintetica) and 1 non-delivery notice.
    let mut seen: Vec<(Tipo, Option<TipoRicevuta>, String, Errore)> = Vec::new();
    for m in &a_inbox {
        check_signed(&srv, &trust, m, "sender's receipt");
        let d = daticert_of(m);
        seen.push((
            d.tipo,
            d.ricevuta,
            d.consegna.clone().unwrap_or_default(),
            d.errore,
        ));
        if d.tipo == Tipo::AvvenutaConsegna {
            let c = classify(m).unwrap();
            let carries = c.postacert.is_some();
            assert_eq!(
                carries,
                d.ricevuta != Some(TipoRicevuta::Sintetica),
                "{:?} carries the original: {carries}",
                d.ricevuta
            );
        }
    }
    let n = |t: Tipo| seen.iter().filter(|s| s.0 == t).count();
    assert_eq!(n(Tipo::Accettazione), 4, "{seen:?}");
    assert_eq!(n(Tipo::AvvenutaConsegna), 4, "{seen:?}");
    assert_eq!(n(Tipo::ErroreConsegna), 1, "{seen:?}");
    let has = |t, f, who: &str| seen.iter().any(|s| s.0 == t && s.1 == f && s.2 == who);
    assert!(
        has(
            Tipo::AvvenutaConsegna,
            Some(TipoRicevuta::Completa),
            "b@pec.alfa.test"
        ),
        "{seen:?}"
    );
    assert!(
        has(
            Tipo::AvvenutaConsegna,
            Some(TipoRicevuta::Sintetica),
            "c@pec.alfa.test"
        ),
        "Cc gets sintetica: {seen:?}"
    );
    assert!(
        has(
            Tipo::AvvenutaConsegna,
            Some(TipoRicevuta::Breve),
            "b@pec.alfa.test"
        ),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|s| s.0 == Tipo::ErroreConsegna
            && s.2 == "nobody@pec.alfa.test"
            && s.3 == Errore::NoDest),
        "{seen:?}"
    );

    // `pecd verify` (the CLI) accepts a stored receipt, and the trace log is intact.
    let f = srv.dir.path().join("receipt.eml");
    std::fs::write(&f, &a_inbox[0]).unwrap();
    let out = pecd(&[
        "verify",
        f.to_str().unwrap(),
        "--ca",
        srv.ca().to_str().unwrap(),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["signature"]["chain_ok"], serde_json::Value::Bool(true));
    let cfg = srv.config();
    let out = pecd(&["log", "verify", "--config", cfg.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "log verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // A restart processes nothing twice.
    let before = {
        let store = Store::open(srv.data_dir(), StoreOptions::default()).unwrap();
        counts(&store)
    };
    srv.start();
    srv.stop();
    let store = Store::open(srv.data_dir(), StoreOptions::default()).unwrap();
    assert_eq!(
        counts(&store),
        before,
        "no receipt or delivery repeated after a restart"
    );
}

#[test]
fn refusals_and_limits() {
    if !have_python() {
        return;
    }
    let mut srv = Server::new(
        DOMAIN,
        &[("a@pec.alfa.test", "pw-a"), ("b@pec.alfa.test", "pw-b")],
    );
    srv.start();
    let a = "a@pec.alfa.test";

    let r = srv.smtp(
        "forged_from",
        &[a, "pw-a", "boss@pec.alfa.test", "b@pec.alfa.test"],
    );
    assert_eq!(r["mail_from_code"], 553, "{r}");
    assert_eq!(r["data_code"], 550, "{r}");
    assert!(
        r["data_text"]
            .as_str()
            .unwrap()
            .contains("differs from the sender"),
        "{r}"
    );

    let r = srv.smtp("many_recipients", &[a, "pw-a", DOMAIN, "501"]);
    let codes: Vec<u64> = r["codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_u64().unwrap())
        .collect();
    assert!(codes[..500].iter().all(|&c| c == 250), "first 500 accepted");
    assert_eq!(codes[500], 452, "the 501st recipient gets 452 4.5.3");

    let r = srv.smtp(
        "oversize",
        &[
            a,
            "pw-a",
            "b@pec.alfa.test",
            &(50 * 1024 * 1024 + 1).to_string(),
        ],
    );
    assert_eq!(r["code"], 552, "{r}");
    assert_eq!(
        r["after"], 250,
        "the session goes on after the refusal: {r}"
    );

    let r = srv.smtp("auth_before_starttls", &[a, "pw-a"]);
    assert_eq!(r["ehlo_has_auth"], false, "{r}");
    assert_eq!(r["ehlo_has_starttls"], true, "{r}");
    assert_eq!(r["auth_code"], 538, "{r}");
    assert_eq!(r["after_tls_has_auth"], true, "{r}");
    assert_eq!(r["mail_without_auth"], 530, "{r}");

    let r = srv.smtp("relay_without_auth", &["someone@internet.example"]);
    assert_eq!(r["mail_code"], 530, "{r}");

    let r = srv.smtp("wrong_password", &[a]);
    assert_eq!(r["code"], 535, "{r}");

    // An over-long command line: one 500, its tail never parsed, the dialogue in step.
    let r = srv.smtp("long_line", &[a, "pw-a"]);
    assert_eq!(r["long_code"], 500, "{r}");
    assert!(
        r["long_text"].as_str().unwrap().contains("Line too long"),
        "{r}"
    );
    assert_eq!(r["after_code"], 250, "{r}");
    assert!(r["after_text"].as_str().unwrap().contains("Reset"), "{r}");
    srv.stop();

    // The forged-From submission produced the non-acceptance notice, signed, nothing else.
    let store = Store::open(srv.data_dir(), StoreOptions::default()).unwrap();
    let a_inbox = inbox(&store, a);
    assert_eq!(a_inbox.len(), 1, "exactly the non-acceptance notice");
    let d = daticert_of(&a_inbox[0]);
    assert_eq!((d.tipo, d.errore), (Tipo::NonAccettazione, Errore::Altro));
    assert!(d.errore_esteso.unwrap().contains("differs from the sender"));
    assert!(
        inbox(&store, "b@pec.alfa.test").is_empty(),
        "nothing refused was delivered"
    );
    let trust = TrustAnchors::from_pem(&std::fs::read(srv.ca()).unwrap()).unwrap();
    check_signed(&srv, &trust, &a_inbox[0], "non-acceptance");

    // Refusals decided in the SMTP dialogue leave a trace record naming peer, user and
    // reason (rules §9), though no notice was sent.
    let records = trace(&store);
    let refused = |code: &str| {
        records
            .iter()
            .find(|r| {
                r.kind == EventKind::SubmissionRefused
                    && r.detail.as_deref().is_some_and(|d| d.contains(code))
            })
            .unwrap_or_else(|| panic!("no trace record for {code}: {records:#?}"))
    };
    let forged = refused(": 553 5.7.1");
    let d = forged.detail.as_deref().unwrap();
    assert_eq!(forged.sender.as_deref(), Some(a), "{forged:?}");
    assert!(
        d.contains("127.0.0.1") && d.contains("boss@pec.alfa.test") && d.contains("not owned"),
        "{d}"
    );
    let relay = records
        .iter()
        .find(|r| {
            r.detail.as_deref().is_some_and(|d| {
                d.contains(": 530 5.7.0") && d.contains("someone@internet.example")
            })
        })
        .unwrap_or_else(|| panic!("relay attempt not traced: {records:#?}"));
    assert_eq!(relay.sender, None, "no authenticated user: {relay:?}");
    assert_eq!(relay.kind, EventKind::SubmissionRefused);
    let d = refused(": 452 4.5.3").detail.clone().unwrap();
    assert!(d.contains("Too many recipients"), "{d}");
    assert!(
        refused(": 552 5.3.4")
            .detail
            .as_deref()
            .unwrap()
            .contains("size"),
        "oversize traced"
    );
    assert!(
        records.iter().any(|r| r.kind == EventKind::LoginFailed
            && r.sender.as_deref() == Some(a)
            && r.detail.as_deref().is_some_and(|d| d.contains("127.0.0.1"))),
        "the wrong password is traced"
    );
}

#[test]
fn logins_are_locked_out_across_connections_and_messages_fixed_up() {
    if !have_python() {
        return;
    }
    let mut srv = Server::new(
        DOMAIN,
        &[("a@pec.alfa.test", "pw-a"), ("b@pec.alfa.test", "pw-b")],
    );
    srv.edit_config(|t| {
        t.replace(
            "[limits]\n",
            "[limits]\nauth_max_failures = 2\nauth_lockout_secs = 3600\n",
        )
    });
    srv.start();
    let (a, b) = ("a@pec.alfa.test", "b@pec.alfa.test");

    // No Date: added by the access point (RFC 6409 §8.6); a Bcc with any value: refused.
    let r = srv.smtp("send_raw", &[a, "pw-a", b, "Subject: senza data"]);
    assert_eq!(r["code"], 250, "{r}");
    let r = srv.smtp("send_raw", &[a, "pw-a", b, "Subject: ccn\nBcc: foo"]);
    assert_eq!(r["code"], 550, "{r}");
    assert!(r["text"].as_str().unwrap().contains("Bcc"), "{r}");

    // Failures count per address across connections (a user name that is not an
    // address counts too); then even the right password is refused, unchecked, except for
    // an account that logged in from this address before (a, above).
    let r = srv.smtp(
        "logins",
        &["not an address", "x", a, "wrong", b, "pw-b", a, "pw-a"],
    );
    let codes: Vec<u64> = r["codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_u64().unwrap())
        .collect();
    assert_eq!(codes, vec![535, 535, 454, 235], "{r}");
    assert!(
        r["texts"][2]
            .as_str()
            .unwrap()
            .contains("too many failed logins for address 127.0.0.1"),
        "{r}"
    );
    srv.stop();

    let store = Store::open(srv.data_dir(), StoreOptions::default()).unwrap();
    let envelopes = inbox(&store, b);
    assert_eq!(
        envelopes.len(),
        1,
        "only the message without Date was delivered"
    );
    let orig = classify(&envelopes[0]).unwrap().postacert.unwrap();
    let orig = String::from_utf8_lossy(&orig);
    assert!(
        orig.contains("Date: ") && orig.contains("Subject: senza data"),
        "{orig}"
    );
    let records = trace(&store);
    let failed: Vec<&str> = records
        .iter()
        .filter(|r| r.kind == EventKind::LoginFailed)
        .filter_map(|r| r.detail.as_deref())
        .collect();
    assert_eq!(
        failed.len(),
        2,
        "locked-out attempts are not traced again: {failed:?}"
    );
    assert!(
        failed[0].contains("\"not an address\", which is not an address"),
        "{failed:?}"
    );
    assert!(
        failed[1].contains("too many failed logins for address 127.0.0.1"),
        "the lockout is recorded once: {failed:?}"
    );
}

#[test]
fn long_data_lines_are_refused_on_submission_and_accepted_on_port_25() {
    if !have_python() {
        return;
    }
    let mut srv = Server::new(
        DOMAIN,
        &[("a@pec.alfa.test", "pw-a"), ("b@pec.alfa.test", "pw-b")],
    );
    // Port 25 (the "smtp" listener) on a free loopback port.
    let port25 = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    srv.edit_config(|t| t.replace("smtp = \"off\"", &format!("smtp = \"127.0.0.1:{port25}\"")));
    // b takes ordinary mail (wrapped in an anomaly envelope) rather than refusing it.
    srv.admin(&[
        "mailbox",
        "options",
        "b@pec.alfa.test",
        "--accept-anomalies",
        "true",
    ]);
    srv.start();
    let (a, b) = ("a@pec.alfa.test", "b@pec.alfa.test");
    let r = srv.smtp("long_data_line", &[a, "pw-a", b, &port25]);
    // Our user's message would leave for other providers with a line over RFC 5321's
    // 1000 octets: refused, and the session goes on.
    assert_eq!(r["submission_code"], 554, "{r}");
    assert!(
        r["submission_text"]
            .as_str()
            .unwrap()
            .contains("longer than 1000"),
        "{r}"
    );
    assert_eq!(r["submission_after"], 250, "{r}");
    // The same from the Internet on port 25 is taken in (wrapped as an anomaly: no PEC).
    assert_eq!(r["incoming_code"], 250, "{r}");
    // A refusal in the port-25 dialogue (a declared size over the limit) is traced.
    {
        use std::io::{BufRead, BufReader, Write};
        let tcp =
            std::net::TcpStream::connect(("127.0.0.1", port25.parse::<u16>().unwrap())).unwrap();
        tcp.set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .unwrap();
        let mut w = tcp.try_clone().unwrap();
        let mut r = BufReader::new(tcp);
        let mut reply = || {
            let mut all = String::new();
            loop {
                let mut l = String::new();
                r.read_line(&mut l).unwrap();
                all.push_str(&l);
                if l.len() < 4 || l.as_bytes()[3] != b'-' {
                    return all;
                }
            }
        };
        assert!(reply().starts_with("220"));
        w.write_all(b"EHLO mx.example.org\r\n").unwrap();
        assert!(reply().starts_with("250"));
        w.write_all(b"MAIL FROM:<x@example.org> SIZE=999999999999\r\n")
            .unwrap();
        let refused = reply();
        assert!(refused.starts_with("552"), "{refused}");
        w.write_all(b"QUIT\r\n").unwrap();
        let _ = reply();
    }
    srv.stop();

    let store = Store::open(srv.data_dir(), StoreOptions::default()).unwrap();
    let b_inbox = inbox(&store, b);
    assert_eq!(b_inbox.len(), 1, "only the port-25 message reached b");
    let long = vec![b'x'; 4998];
    assert!(
        b_inbox[0].windows(long.len()).any(|w| w == long),
        "the long line arrived whole"
    );
    let refused: Vec<_> = trace(&store)
        .into_iter()
        .filter(|r| r.kind == EventKind::IncomingRefused)
        .collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    let detail = refused[0].detail.as_deref().unwrap_or_default();
    assert!(
        detail.contains("552") && detail.contains("127.0.0.1") && detail.contains("x@example.org"),
        "{detail}"
    );
}
