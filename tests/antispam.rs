//! Antispam for non-certified mail (issue #10), against a real spamd (SpamAssassin 4) and
//! two real `pecd serve` providers: ordinary mail on port 25 to a mailbox that accepts it is
//! scanned, GTUBE lands in the Junk folder with the score in `X-Spam-*` headers and the
//! anomaly envelope's signature intact, ham lands in the INBOX marked as scanned; a certified
//! message carrying GTUBE from the other provider is never scanned nor filed as spam; with
//! spamd down, ordinary mail is deferred with 451 4.7.1 and nothing is stored, and it goes
//! through again once spamd is back. The metrics report spamd's reachability.

mod common;

use std::time::Duration;

use common::jmap::{Web, have_curl, mailbox_with_role, pair};
use common::spamd::{GTUBE, Spamd};
use serde_json::{Value, json};

const A: &str = "pec.alfa.test";
const B: &str = "pec.beta.test";

fn plain(subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: someone@internet.test\r\nTo: b@{B}\r\nSubject: {subject}\r\n\
         Date: Sat, 05 Dec 2026 09:00:00 +0100\r\nMessage-ID: <{subject}@internet.test>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

/// The emails of b's folder with `role`: subject, X-Spam-Flag, X-Spam-Status.
fn emails(web: &Web, token: &str, account: &str, role: &str) -> Vec<Value> {
    let folder = mailbox_with_role(web, token, account, role);
    let r = web.call(
        token,
        json!([
            ["Email/query", {"accountId": account, "filter": {"inMailbox": folder}}, "q"],
            ["Email/get", {"accountId": account,
              "#ids": {"resultOf": "q", "name": "Email/query", "path": "/ids"},
              "properties": ["subject", "blobId", "size", "header:X-Spam-Flag:asText",
                             "header:X-Spam-Status:asText"]}, "g"]
        ]),
    );
    r[1][1]["list"].as_array().cloned().unwrap_or_default()
}

fn metrics(s: &common::server::Server) -> String {
    let out = std::process::Command::new("curl")
        .args(["-s", "--max-time", "20"])
        .arg(format!("http://{}/metrics", s.addr("admin")))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordinary_spam_goes_to_junk_certified_mail_is_never_scanned() {
    if !have_curl() {
        return;
    }
    let Some(mut spamd) = Spamd::start() else {
        return;
    };
    let (a, mut b) = pair(
        (A, &[(&format!("a@{A}"), "pw")]),
        (B, &[(&format!("b@{B}"), "pw")]),
    );
    // B scans with spamd; b takes ordinary mail.
    b.stop();
    b.edit_config(|t| {
        t.replace(
            "# spamd = \"127.0.0.1:783\"",
            &format!("spamd = \"127.0.0.1:{}\"", spamd.port),
        )
    });
    b.admin(&[
        "mailbox",
        "options",
        &format!("b@{B}"),
        "--accept-anomalies",
        "true",
    ]);
    b.start();
    let port25 = b.addr("smtp");

    let (code, text) = common::smtp::relay(
        port25,
        "someone@internet.test",
        &[&format!("b@{B}")],
        &plain("offerta", &format!("Compra ora!\r\n{GTUBE}")),
    )
    .await;
    assert_eq!(code, 250, "{text}\n{}", spamd.log_text());
    let (code, text) = common::smtp::relay(
        port25,
        "collega@internet.test",
        &[&format!("b@{B}")],
        &plain("riunione", "Ci vediamo alle dieci in sala riunioni."),
    )
    .await;
    assert_eq!(code, 250, "{text}");

    // A certified message from a@A whose text is GTUBE: certified mail is never scanned.
    let (code, text) = common::smtp::submit(
        a.addr("smtps"),
        &a.ca(),
        &format!("a@{A}"),
        "pw",
        &[&format!("b@{B}")],
        format!("From: a@{A}\r\nTo: b@{B}\r\nSubject: certificata\r\n\r\n{GTUBE}\r\n").as_bytes(),
    )
    .await;
    assert_eq!(code, 250, "{text}");

    let web = Web::of(&b);
    let token = web.login(&format!("b@{B}"), "pw");
    let session = web.session(&token);
    let account = session["primaryAccounts"]["urn:ietf:params:jmap:mail"]
        .as_str()
        .unwrap()
        .to_string();
    let junk = web.wait(30, || {
        let j = emails(&web, &token, &account, "junk");
        (!j.is_empty()).then_some(j)
    });
    assert_eq!(junk.len(), 1, "{junk:?}");
    assert!(
        junk[0]["subject"].as_str().unwrap().contains("offerta"),
        "{junk:?}"
    );
    assert_eq!(junk[0]["header:X-Spam-Flag:asText"], "YES", "{junk:?}");
    let status = junk[0]["header:X-Spam-Status:asText"].as_str().unwrap();
    assert!(
        status.starts_with("Yes, score=") && status.contains("GTUBE"),
        "{status}"
    );

    // The envelope in Junk is still ours, signed and intact: the verdict is outside it.
    let blob = junk[0]["blobId"].as_str().unwrap();
    let raw = web
        .request(
            "GET",
            &format!("/jmap/download/{account}/{blob}/m.eml?type=message/rfc822"),
            &["-H", &format!("Authorization: Bearer {token}")],
        )
        .body;
    assert!(raw.starts_with(b"X-Spam-Flag: YES\r\n"));
    let (ok, err) = common::openssl_verify(&raw, &b.ca());
    assert!(ok, "the anomaly envelope's signature: {err}");

    let inbox = web.wait(60, || {
        let i = emails(&web, &token, &account, "inbox");
        (i.len() == 2).then_some(i)
    });
    let ham = inbox
        .iter()
        .find(|e| e["subject"].as_str().unwrap().contains("riunione"))
        .expect("the ham in the INBOX");
    assert!(ham["header:X-Spam-Flag:asText"].is_null(), "{ham:?}");
    assert!(
        ham["header:X-Spam-Status:asText"]
            .as_str()
            .unwrap()
            .starts_with("No, score="),
        "{ham:?}"
    );
    let certified = inbox
        .iter()
        .find(|e| e["subject"].as_str().unwrap().contains("certificata"))
        .expect("the certified message in the INBOX");
    assert!(
        certified["header:X-Spam-Status:asText"].is_null()
            && certified["header:X-Spam-Flag:asText"].is_null(),
        "certified mail is never scanned: {certified:?}"
    );
    // The security archive keeps what the INBOX got, not the spam: whoever can send
    // ordinary mail must not be able to fill it.
    let in_inbox: u64 = inbox.iter().map(|e| e["size"].as_u64().unwrap()).sum();
    assert_eq!(
        b.mailbox_json(&format!("b@{B}"))["archive_usage_bytes"],
        in_inbox,
        "archived: the two INBOX messages only"
    );
    assert!(
        metrics(&b).contains("dependency_up{name=\"spamd\"} 1"),
        "spamd reachable in the metrics"
    );

    // spamd down: ordinary mail is deferred, not accepted unscanned.
    spamd.kill();
    let deferred = plain(
        "ritardata",
        "Messaggio ordinario durante il fermo del filtro.",
    );
    let (code, text) = common::smtp::relay(
        port25,
        "collega@internet.test",
        &[&format!("b@{B}")],
        &deferred,
    )
    .await;
    assert_eq!(code, 451, "{text}");
    assert!(
        text.contains("4.7.1") && text.contains("Spam filter unavailable"),
        "{text}"
    );
    assert!(metrics(&b).contains("dependency_up{name=\"spamd\"} 0"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(emails(&web, &token, &account, "inbox").len(), 2);
    assert_eq!(emails(&web, &token, &account, "junk").len(), 1);

    // Back up: the sender's retry goes through.
    let spamd2 = Spamd::start().expect("spamd starts again");
    b.stop();
    b.edit_config(|t| {
        t.replace(
            &format!("spamd = \"127.0.0.1:{}\"", spamd.port),
            &format!("spamd = \"127.0.0.1:{}\"", spamd2.port),
        )
    });
    b.start();
    let (code, text) = common::smtp::relay(
        b.addr("smtp"),
        "collega@internet.test",
        &[&format!("b@{B}")],
        &deferred,
    )
    .await;
    assert_eq!(code, 250, "{text}");
    let web = Web::of(&b);
    let token = web.login(&format!("b@{B}"), "pw");
    assert_eq!(emails(&web, &token, &account, "inbox").len(), 3);
}
