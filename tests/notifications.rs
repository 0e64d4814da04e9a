//! Notifications to ordinary addresses (issue #10) on a real `pecd serve`, with an
//! independent SMTP receiver (tests/clients/smtp_sink.py) as the ordinary domain's mail
//! server: the owner adds addresses over the API, each gets a confirmation code by mail and
//! receives nothing until the code is typed back; certified messages arriving then are
//! listed — sender, subject, identificativo, never the body — in notices sent as ordinary
//! mail with the null reverse-path, at most one per address per minute.

mod common;

use std::time::{Duration, Instant};

use common::jmap::{Web, have_curl};
use common::server::Server;
use common::sink::Sink;
use serde_json::json;

const DOMAIN: &str = "pec.notifiche.test";

fn text(p: &std::path::Path) -> String {
    String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned()
}

/// The recipient (RCPT TO) and reverse-path of a message the sink received.
fn envelope(p: &std::path::Path) -> (String, String) {
    let env = std::fs::read_to_string(p.with_extension("env")).unwrap();
    let mut lines = env.lines();
    let from = lines.next().unwrap_or_default().to_string();
    (lines.next().unwrap_or_default().to_string(), from)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordinary_addresses_are_confirmed_then_told_of_arrivals_without_content() {
    if !have_curl() {
        return;
    }
    let (a, b) = (format!("a@{DOMAIN}"), format!("b@{DOMAIN}"));
    let mut s = Server::new(DOMAIN, &[(&a, "pw"), (&b, "pw")]);
    let sink = Sink::start(s.dir.path(), 0.0);
    s.edit_config(|t| {
        t.replace(
            "[routes]\n",
            &format!("[routes]\n\"example.test\" = \"127.0.0.1:{}\"\n", sink.port),
        )
    });
    s.start();
    let web = Web::of(&s);
    let token = web.login(&b, "pw");
    let post = |body: serde_json::Value| web.post_json(Some(&token), "/auth/notifications", &body);

    // Refusals say why, in Italian too.
    let r = post(json!({"add": format!("x@{DOMAIN}")}));
    assert_eq!(r.status, 422);
    assert!(
        r.json()["motivo"]
            .as_str()
            .unwrap()
            .contains("casella PEC di questo gestore")
    );
    let r = post(json!({"add": "non un indirizzo"}));
    assert_eq!(r.status, 422);
    assert_eq!(post(json!({"nothing": 1})).status, 400);

    // Two addresses: each gets a code; only the first is confirmed.
    let r = post(json!({"add": "Io@Example.test"}));
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["addresses"][0]["address"], "io@example.test");
    assert_eq!(v["addresses"][0]["confirmed"], false);
    assert!(v["addresses"][0]["codeExpires"].is_string());
    assert_eq!(post(json!({"add": "altro@example.test"})).status, 200);
    let again = post(json!({"add": "altro@example.test"}));
    assert_eq!(again.status, 422, "a new code at most once a minute");
    let sent = sink.wait_for(2);
    let to_me = sent
        .iter()
        .find(|m| envelope(m).0 == "io@example.test")
        .expect("the code sent to io@");
    let (_, reverse_path) = envelope(to_me);
    assert_eq!(reverse_path, "", "the null reverse-path");
    let body = text(to_me);
    assert!(body.contains("Auto-Submitted: auto-generated"), "{body}");
    let code = body
        .split("Codice di conferma: ")
        .nth(1)
        .and_then(|t| t.get(..8))
        .expect("the code")
        .to_string();
    assert!(code.bytes().all(|c| c.is_ascii_digit()), "{code}");
    let wrong = if code == "00000000" {
        "11111111"
    } else {
        "00000000"
    };
    let r = post(json!({"confirm": "io@example.test", "code": wrong}));
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["motivo"], "il codice è errato");
    let r = post(json!({"confirm": "io@example.test", "code": code}));
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["addresses"][0]["confirmed"], true);
    assert!(r.json()["addresses"][0]["codeExpires"].is_null());

    // The administrator sees the same, through the running server.
    let listed = s.admin(&["mailbox", "notify", &b]);
    assert!(
        listed.contains("io@example.test") && listed.contains("confirmed"),
        "{listed}"
    );
    assert!(
        listed.contains("altro@example.test") && listed.contains("waiting for the code"),
        "{listed}"
    );

    // Three certified messages to b.
    for n in 1..=3 {
        let msg = format!(
            "From: {a}\r\nTo: {b}\r\nSubject: Fattura {n}\r\n\r\nCONTENUTO-RISERVATO-{n}\r\n"
        );
        let (code, text) =
            common::smtp::submit(s.addr("smtps"), &s.ca(), &a, "pw", &[&b], msg.as_bytes()).await;
        assert_eq!(code, 250, "{text}");
    }
    // Listed in notices to io@ only: at most one a minute.
    let deadline = Instant::now() + Duration::from_secs(30);
    let notices = loop {
        let n: Vec<_> = sink
            .messages()
            .into_iter()
            .filter(|m| text(m).contains("X-Pecd-Avviso: notifica-arrivo"))
            .collect();
        let listed: usize = n
            .iter()
            .map(|m| {
                text(m)
                    .matches("oggetto: POSTA CERTIFICATA: Fattura")
                    .count()
            })
            .sum();
        if listed >= 3 {
            break n;
        }
        if Instant::now() >= deadline {
            let r = web.request(
                "GET",
                "/auth/notifications",
                &["-H", &format!("Authorization: Bearer {token}")],
            );
            let all: Vec<String> = sink
                .messages()
                .iter()
                .map(|m| text(m).chars().take(600).collect())
                .collect();
            let list = s.admin(&["mailbox", "list", "--json"]);
            panic!(
                "{listed} of 3 arrivals notified; settings {}\n{list}\n{all:#?}",
                String::from_utf8_lossy(&r.body)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(notices.len() <= 2, "coalesced: {} notices", notices.len());
    for m in &notices {
        let t = text(m);
        assert_eq!(
            envelope(m).0,
            "io@example.test",
            "an unconfirmed address gets nothing"
        );
        assert!(!t.contains("CONTENUTO-RISERVATO"), "never the body: {t}");
        assert!(
            t.contains(&format!("da: {a}")) && t.contains("identificativo: opec"),
            "{t}"
        );
    }
    // Two more within the minute: they wait for it, then come in one notice.
    let first_at = notices
        .iter()
        .map(|m| std::fs::metadata(m).unwrap().modified().unwrap())
        .max()
        .unwrap();
    for n in 4..=5 {
        let msg = format!(
            "From: {a}\r\nTo: {b}\r\nSubject: Fattura {n}\r\n\r\nCONTENUTO-RISERVATO-{n}\r\n"
        );
        let (code, text) =
            common::smtp::submit(s.addr("smtps"), &s.ca(), &a, "pw", &[&b], msg.as_bytes()).await;
        assert_eq!(code, 250, "{text}");
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let later = loop {
        let n: Vec<_> = sink
            .messages()
            .into_iter()
            .filter(|m| !notices.contains(m) && text(m).contains("X-Pecd-Avviso: notifica-arrivo"))
            .collect();
        if n.iter().any(|m| text(m).contains("Fattura 5")) {
            break n;
        }
        assert!(
            Instant::now() < deadline,
            "the later arrivals were not notified"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(later.len(), 1, "one notice for both");
    let t = text(&later[0]);
    assert!(
        t.contains("Subject: 2 nuovi messaggi") && t.contains("Fattura 4"),
        "{t}"
    );
    let gap = std::fs::metadata(&later[0])
        .unwrap()
        .modified()
        .unwrap()
        .duration_since(first_at)
        .unwrap_or_default();
    assert!(gap >= Duration::from_secs(55), "two notices {gap:?} apart");

    // Removed: gone from the settings.
    let r = post(json!({"remove": "io@example.test"}));
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["addresses"].as_array().unwrap().len(), 1);
    let r = web.request(
        "GET",
        "/auth/notifications",
        &["-H", &format!("Authorization: Bearer {token}")],
    );
    assert_eq!(r.json()["addresses"][0]["address"], "altro@example.test");
    let out = s.admin(&["mailbox", "notify", &b, "--remove", "altro@example.test"]);
    assert!(out.contains("no notification addresses"), "{out}");
    let r = web.request(
        "GET",
        "/auth/notifications",
        &["-H", &format!("Authorization: Bearer {token}")],
    );
    assert_eq!(r.json()["addresses"], json!([]));
    s.stop();
}
