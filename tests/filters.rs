//! Rules on incoming messages (#10 "Filters") against a real `pecd serve`: set over the
//! API and the CLI, refused when they would block certified mail (discard, the Trash for
//! certified messages) or name a folder that does not exist, applied in the delivery
//! (a certified message filed and marked read, receipts flagged), and a rule whose folder
//! was deleted later never loses a message (it lands in the INBOX). Clients: smtplib to
//! send, curl for the JMAP API.

mod common;

use common::jmap::{Web, have_curl, mailbox_with_role};
use common::server::Server;
use serde_json::{Value, json};

const DOMAIN: &str = "pec.regole.test";

fn account(web: &Web, token: &str) -> String {
    web.session(token)["primaryAccounts"]["urn:ietf:params:jmap:mail"]
        .as_str()
        .unwrap()
        .to_string()
}

fn post_rules(web: &Web, token: &str, rules: Value) -> common::jmap::Reply {
    web.post_json(Some(token), "/auth/filters", &json!({ "rules": rules }))
}

/// (subject, keywords) of the messages in folder `mb`.
fn messages_in(web: &Web, token: &str, acc: &str, mb: &str) -> Vec<(String, Value)> {
    let r = web.call(
        token,
        json!([
            ["Email/query", {"accountId": acc, "filter": {"inMailbox": mb}}, "q"],
            ["Email/get", {"accountId": acc, "#ids": {"resultOf": "q", "name": "Email/query", "path": "/ids"},
                "properties": ["subject", "keywords"]}, "g"]
        ]),
    );
    r[1][1]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["subject"].as_str().unwrap_or_default().to_string(),
                e["keywords"].clone(),
            )
        })
        .collect()
}

fn send(s: &Server, from: &str, to: &str, subject: &str) {
    let r = s.smtp("send", &[from, "pw", to, "-", subject, "-"]);
    assert_eq!(r["refused"], json!([]), "{r}");
}

#[test]
fn rules_file_certified_mail_but_never_lose_or_block_it() {
    if !have_curl() || !common::have("python3", "smtplib") {
        return;
    }
    let (a, b) = (format!("a@{DOMAIN}"), format!("b@{DOMAIN}"));
    let mut s = Server::new(DOMAIN, &[(&a, "pw"), (&b, "pw")]);
    s.start();
    let web = Web::of(&s);
    let tb = web.login(&b, "pw");
    let acc_b = account(&web, &tb);
    let created = web.call(
        &tb,
        json!([["Mailbox/set", {"accountId": acc_b, "create": {"f": {"name": "Fatture"}}}, "0"]]),
    );
    let fatture = created[0][1]["created"]["f"]["id"]
        .as_str()
        .unwrap()
        .to_string();

    // What PEC forbids, and unknown folders, are refused with a reason in Italian.
    for (rules, motivo) in [
        (
            json!([{"name": "via", "subject": "spam", "discard": true, "markRead": true}]),
            "non può eliminare",
        ),
        (
            json!([{"name": "cestino", "folder": "Trash"}]),
            "non possono finire nel Cestino",
        ),
        (
            json!([{"name": "x", "folder": "Inesistente"}]),
            "non esiste",
        ),
    ] {
        let r = post_rules(&web, &tb, rules.clone());
        assert_eq!(r.status, 422, "{rules}");
        assert_eq!(r.json()["type"], "urn:pecd:error:invalidRules");
        assert!(
            r.json()["motivo"].as_str().unwrap().contains(motivo),
            "{}",
            r.json()
        );
    }
    // b: invoices into Fatture, marked read.
    let r = post_rules(
        &web,
        &tb,
        json!([{"name": "Fatture", "subject": "fattura", "kind": "posta-certificata",
                "folder": "Fatture", "markRead": true}]),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    // a: receipts flagged (set with the CLI).
    let file = s.dir.path().join("rules.json");
    std::fs::write(
        &file,
        r#"[{"name": "ricevute", "kind": "ricevuta", "flag": true}]"#,
    )
    .unwrap();
    let out = s.admin(&["mailbox", "filters", &a, "--set", file.to_str().unwrap()]);
    assert!(out.contains("\"ricevuta\""), "{out}");

    send(&s, &a, &b, "Invio fattura n. 1");
    let inbox_b = mailbox_with_role(&web, &tb, &acc_b, "inbox");
    let filed = web.wait(60, || {
        let m = messages_in(&web, &tb, &acc_b, &fatture);
        (!m.is_empty()).then_some(m)
    });
    assert!(filed[0].0.contains("Invio fattura n. 1"), "{filed:?}");
    assert_eq!(filed[0].1["$seen"], true, "marked read: {filed:?}");
    assert!(messages_in(&web, &tb, &acc_b, &inbox_b).is_empty());

    // a's receipts (acceptance, delivery) are flagged.
    let ta = web.login(&a, "pw");
    let acc_a = account(&web, &ta);
    let inbox_a = mailbox_with_role(&web, &ta, &acc_a, "inbox");
    let receipts = web.wait(60, || {
        let m = messages_in(&web, &ta, &acc_a, &inbox_a);
        (m.len() >= 2).then_some(m)
    });
    assert!(
        receipts.iter().all(|(_, k)| k["$flagged"] == true),
        "{receipts:?}"
    );

    // No rule matches: the INBOX.
    send(&s, &a, &b, "Saluti");
    web.wait(60, || {
        let m = messages_in(&web, &tb, &acc_b, &inbox_b);
        (m.len() == 1).then_some(())
    });

    // The folder goes; the rule stays, and its next match lands in the INBOX, unlost.
    let gone = web.call(
        &tb,
        json!([["Mailbox/set", {"accountId": acc_b, "destroy": [fatture],
            "onDestroyRemoveEmails": true}, "0"]]),
    );
    assert_eq!(gone[0][1]["destroyed"], json!([fatture]), "{gone:?}");
    send(&s, &a, &b, "Altra fattura");
    let inbox = web.wait(60, || {
        let m = messages_in(&web, &tb, &acc_b, &inbox_b);
        (m.len() == 2).then_some(m)
    });
    assert!(
        inbox.iter().any(|(subj, _)| subj.contains("Altra fattura")),
        "{inbox:?}"
    );

    // The rules read back, and their changes are in the trace.
    let out = s.admin(&["mailbox", "filters", &b]);
    assert!(out.contains("\"folder\": \"Fatture\""), "{out}");
    let log = s.admin(&["log", "--mailbox", &b]);
    assert!(
        log.contains("filters set: 1 rule(s) (\"Fatture\")"),
        "{log}"
    );
}
