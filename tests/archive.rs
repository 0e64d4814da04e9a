//! The security archive (issue #10, *archivio di sicurezza*) on a real `pecd serve`: a PEC
//! sent with smtplib leaves the transport envelope in the sender's archive and the
//! envelope and receipts in both parties' archives; Python's imaplib finds the archive
//! folders, gets them only read-only, is refused every change (STORE, APPEND, COPY,
//! CREATE, RENAME, DELETE), and still reads the archived copy, byte for byte, after the
//! owner deleted the message from the INBOX. JMAP (curl) does not show the archive as the
//! mailbox's mail and refuses its name; the archive is a read-only account of its own,
//! whose messages are listed, read and downloaded, and whose every change is refused. A plan's `archive_bytes` sizes the archive, and the
//! owner is told at 90 %.

mod common;

use common::jmap::{Web, have_curl, mailbox_with_role};
use common::server::Server;
use serde_json::{Value, json};

const DOMAIN: &str = "pec.archivio.test";
const MIB: u64 = 1024 * 1024;

fn names(web: &Web, token: &str, account: &str) -> Vec<String> {
    let r = web.call(
        token,
        json!([["Mailbox/get", {"accountId": account, "properties": ["name", "parentId"]}, "m"]]),
    );
    r[0][1]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn every_message_is_archived_read_only_and_outlives_its_deletion() {
    if !have_curl() || !common::have("python3", "imaplib") {
        return;
    }
    let (a, b) = (format!("a@{DOMAIN}"), format!("b@{DOMAIN}"));
    let mut s = Server::new(DOMAIN, &[(&a, "pw"), (&b, "pw")]);
    s.enable(&["imaps"]);
    s.start();

    let r = s.imap("archive", &[&a, "pw", &b, "pw"]);
    let list = r["list"].to_string();
    assert!(
        list.contains("\\\"Archivio di sicurezza/Ricevuti\\\""),
        "{list}"
    );
    assert_eq!(r["select"], "read-only", "{r}");
    // Its own quota root: the default archive size, 3 GiB.
    let qr = r["quotaroot"].to_string();
    assert!(
        qr.contains("Archivio di sicurezza") && qr.contains(" 3145728)"),
        "{qr}"
    );
    assert_eq!(r["archived_equal"], true, "{r}");
    assert_eq!(r["store"][0], "NO", "{r}");
    assert!(r["store"].to_string().contains("READ-ONLY"), "{r}");
    for what in ["append", "create", "rename", "delete", "copy"] {
        let got = &r["refusals"][what];
        assert_eq!(got[0], "NO", "{what}: {got}");
        assert!(
            got[1].as_str().unwrap().contains("[NOPERM]"),
            "{what}: {got}"
        );
    }
    assert_eq!(r["inbox_after_delete"], "", "{r}");
    assert_ne!(r["archive_after_delete"], "", "{r}");
    assert_eq!(r["archived_equal_after_delete"], true, "{r}");
    assert!(r["archived_flags"].to_string().contains("\\\\Seen"), "{r}");
    // The sender's archive: the signed transport envelope it sent, and its receipts.
    assert_eq!(r["sent_count"], 1, "{r}");
    assert_eq!(
        r["sent_subject"], "POSTA CERTIFICATA: Prova archivio",
        "{r}"
    );
    assert_eq!(r["sent_type"], "multipart/signed", "{r}");
    assert_eq!(r["sent_trasporto"], "posta-certificata", "{r}");
    let received = r["sender_received"].to_string();
    assert!(
        received.contains("ACCETTAZIONE: Prova archivio"),
        "{received}"
    );
    assert!(received.contains("CONSEGNA: Prova archivio"), "{received}");

    // The archive counts apart: b's mailbox is empty again, its archive is not.
    let m = s.mailbox_json(&b);
    assert_eq!(m["usage_bytes"], 0, "{m}");
    assert!(m["archive_usage_bytes"].as_u64().unwrap() > 1000, "{m}");

    // JMAP: not among the mailbox's mailboxes, and its name cannot be taken.
    let web = Web::of(&s);
    let token = web.login(&b, "pw");
    let account = web.mail_account(&token);
    let n = names(&web, &token, &account);
    assert!(n.iter().any(|x| x == "Inbox" || x == "INBOX"), "{n:?}");
    assert!(!n.iter().any(|x| x.contains("Archivio")), "{n:?}");
    let created = web.call(
        &token,
        json!([["Mailbox/set", {"accountId": account,
            "create": {"x": {"name": "Archivio di sicurezza"}}}, "c"]]),
    );
    assert_eq!(
        created[0][1]["notCreated"]["x"]["type"], "forbidden",
        "{created:?}"
    );
    // Nothing the owner still has refers to the deleted message.
    let inbox = mailbox_with_role(&web, &token, &account, "inbox");
    let q = web.call(
        &token,
        json!([["Email/query", {"accountId": account, "filter": {"inMailbox": inbox}}, "q"]]),
    );
    assert_eq!(q[0][1]["ids"], json!([]), "{q:?}");

    // The archive's own account: read-only, listed in the session.
    let session = web.session(&token);
    let (archive, acc) = session["accounts"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(_, a)| a["isReadOnly"] == true)
        .map(|(id, a)| (id.clone(), a.clone()))
        .expect("a read-only account");
    assert!(
        acc["name"]
            .as_str()
            .unwrap()
            .starts_with("Archivio di sicurezza"),
        "{acc}"
    );
    let r = web.call(
        &token,
        json!([["Mailbox/get", {"accountId": archive}, "m"]]),
    );
    let boxes = r[0][1]["list"].as_array().unwrap().clone();
    let ricevuti = boxes
        .iter()
        .find(|m| m["name"] == "Ricevuti")
        .unwrap_or_else(|| panic!("{boxes:?}"));
    assert_eq!(ricevuti["myRights"]["mayRemoveItems"], false, "{ricevuti}");
    assert_eq!(ricevuti["myRights"]["mayReadItems"], true, "{ricevuti}");
    let r = web.call(
        &token,
        json!([
            ["Email/query", {"accountId": archive, "filter": {"inMailbox": ricevuti["id"]}}, "q"],
            ["Email/get", {"accountId": archive,
              "#ids": {"resultOf": "q", "name": "Email/query", "path": "/ids"},
              "properties": ["subject", "blobId", "mailboxIds"]}, "g"]
        ]),
    );
    let got = r[1][1]["list"].as_array().unwrap().clone();
    assert_eq!(got.len(), 1, "{r:?}");
    assert_eq!(
        got[0]["subject"], "POSTA CERTIFICATA: Prova archivio",
        "{got:?}"
    );
    let blob = got[0]["blobId"].as_str().unwrap();
    let raw = web.request(
        "GET",
        &format!("/jmap/download/{archive}/{blob}/m.eml?type=message/rfc822"),
        &["-H", &format!("Authorization: Bearer {token}")],
    );
    assert_eq!(raw.status, 200);
    let (ok, err) = common::openssl_verify(&raw.body, &s.ca());
    assert!(ok, "the archived envelope's signature: {err}");
    let id = got[0]["id"].as_str().unwrap();
    let r = web.call(
        &token,
        json!([
            ["Email/set", {"accountId": archive, "destroy": [id]}, "d"],
            ["Mailbox/set", {"accountId": archive, "destroy": [ricevuti["id"]]}, "m"],
            ["Email/changes", {"accountId": archive, "sinceState": "0"}, "c"],
            ["EmailSubmission/get", {"accountId": archive}, "s"]
        ]),
    );
    let errors: Vec<&Value> = r.iter().map(|c| &c[1]["type"]).collect();
    assert_eq!(
        errors,
        [
            "accountReadOnly",
            "accountReadOnly",
            "cannotCalculateChanges",
            "accountNotSupportedByMethod"
        ],
        "{r:?}"
    );
    // Still there.
    let r = web.call(
        &token,
        json!([["Email/get", {"accountId": archive, "ids": [id], "properties": ["size"]}, "g"]]),
    );
    assert_eq!(r[0][1]["list"].as_array().unwrap().len(), 1, "{r:?}");
}

/// Ordinary mail fills b's archive (30 MiB on its plan) past 90 %: one notice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_sizes_the_archive_and_the_owner_is_told_at_90_percent() {
    if !have_curl() {
        return;
    }
    let b = format!("b@{DOMAIN}");
    let mut s = Server::new(DOMAIN, &[]);
    s.enable(&["smtp"]);
    s.limits("max_message_bytes = 31457280");
    s.edit_config(|t| {
        format!(
            "{t}\n[plans.base]\nmailbox_bytes = {}\narchive_bytes = {}\n",
            200 * MIB,
            30 * MIB
        )
    });
    s.admin(&[
        "mailbox",
        "add",
        &b,
        "--password",
        "pw",
        "--keep-password",
        "--plan",
        "base",
    ]);
    s.admin(&["mailbox", "options", &b, "--accept-anomalies", "true"]);
    assert_eq!(s.mailbox_json(&b)["archive_quota_bytes"], 30 * MIB);
    s.start();

    let mut n = 0;
    let archived = |s: &Server| s.mailbox_json(&b)["archive_usage_bytes"].as_u64().unwrap();
    while archived(&s) * 100 < 30 * MIB * 90 {
        n += 1;
        let mut m = format!(
            "From: someone@internet.test\r\nTo: {b}\r\nSubject: allegato {n}\r\n\
             Message-ID: <arch-{n}@internet.test>\r\nDate: Sat, 05 Dec 2026 09:00:00 +0100\r\n\r\n"
        )
        .into_bytes();
        while (m.len() as u64) < 3 * MIB {
            m.extend_from_slice(b"Lorem ipsum dolor sit amet, consectetur adipiscing elit.\r\n");
        }
        let (code, text) =
            common::smtp::relay(s.addr("smtp"), "someone@internet.test", &[&b], &m).await;
        assert_eq!(code, 250, "{text}");
        assert!(n < 15, "the archive never filled");
    }
    let web = Web::of(&s);
    let token = web.login(&b, "pw");
    let account = web.mail_account(&token);
    let inbox = mailbox_with_role(&web, &token, &account, "inbox");
    let notices = || {
        let r = web.call(
            &token,
            json!([
                ["Email/query", {"accountId": account, "filter": {"inMailbox": inbox}}, "q"],
                ["Email/get", {"accountId": account,
                  "#ids": {"resultOf": "q", "name": "Email/query", "path": "/ids"},
                  "properties": ["subject", "header:X-Pecd-Avviso:asText"]}, "g"]
            ]),
        );
        r[1][1]["list"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["header:X-Pecd-Avviso:asText"] == "archive-90")
            .map(|e| e["subject"].as_str().unwrap_or_default().to_string())
            .collect::<Vec<_>>()
    };
    let got = web.wait(20, || {
        let n = notices();
        (!n.is_empty()).then_some(n)
    });
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].contains("archivio di sicurezza"), "{got:?}");
    assert!(got[0].contains("90%"), "{got:?}");
    // The mailbox itself (200 MiB) is far from its own notices.
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_eq!(notices().len(), 1, "one notice per crossing");

    // Each account tells its own size (the webmail shows both).
    let archive = web.session(&token)["accounts"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(_, a)| a["isReadOnly"] == true)
        .map(|(id, _)| id.clone())
        .expect("the archive's account");
    let r = web.call(
        &token,
        json!([
            ["Quota/get", {"accountId": account}, "m"],
            ["Quota/get", {"accountId": archive}, "a"]
        ]),
    );
    let (own, arch) = (&r[0][1]["list"][0], &r[1][1]["list"][0]);
    assert_eq!(own["hardLimit"], 200 * MIB, "{r:?}");
    assert_eq!(arch["hardLimit"], 30 * MIB, "{r:?}");
    assert_eq!(arch["used"], archived(&s), "{r:?}");
    assert!(
        arch["name"]
            .as_str()
            .unwrap()
            .contains("Archivio di sicurezza")
    );

    // Off the plan with a quota of its own: the archive keeps the size it had, not the
    // configured default (3 GiB).
    s.admin(&["mailbox", "quota", &b, &(300 * MIB).to_string()]);
    let m = s.mailbox_json(&b);
    assert_eq!(m["quota_bytes"], 300 * MIB, "{m}");
    assert!(m["plan"].is_null(), "{m}");
    assert_eq!(m["archive_quota_bytes"], 30 * MIB, "{m}");
}
