//! Service plans and quota notices (issue #10) on a real `pecd serve`: `[plans.NAME]` in the
//! configuration, `pecd mailbox add --plan` and `pecd mailbox plan` (through the running
//! server's control socket), the plan's size applied again at start-up when the
//! configuration changes it; and the owner's notices when ordinary mail arriving on port 25
//! fills the mailbox to 80 % and 95 %: one per crossing, re-armed when a larger plan brings
//! usage down, read over JMAP as the owner sees them.

mod common;

use common::jmap::{Web, have_curl, mailbox_with_role};
use common::server::{Server, pecd};
use serde_json::json;

const DOMAIN: &str = "pec.piani.test";
const MIB: u64 = 1024 * 1024;

/// An ordinary message of about `size` bytes.
fn ordinary(n: usize, size: u64) -> Vec<u8> {
    let mut m = format!(
        "From: someone@internet.test\r\nTo: b@{DOMAIN}\r\nSubject: allegato {n}\r\n\
         Message-ID: <fill-{n}@internet.test>\r\nDate: Sat, 05 Dec 2026 09:00:00 +0100\r\n\r\n"
    )
    .into_bytes();
    let line = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\r\n";
    while (m.len() as u64) < size {
        m.extend_from_slice(line);
    }
    m
}

/// The quota notices in b's INBOX: the value of their `X-Pecd-Avviso`, with the subject.
fn notices(web: &Web, token: &str, account: &str) -> Vec<(String, String)> {
    let inbox = mailbox_with_role(web, token, account, "inbox");
    let r = web.call(
        token,
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
        .filter_map(|e| {
            let kind = e["header:X-Pecd-Avviso:asText"].as_str()?;
            Some((kind.to_string(), e["subject"].as_str()?.to_string()))
        })
        .collect()
}

fn count(n: &[(String, String)], kind: &str) -> usize {
    n.iter().filter(|(k, _)| k == kind).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_set_quotas_and_owners_are_told_at_80_and_95_percent() {
    if !have_curl() {
        return;
    }
    let b = format!("b@{DOMAIN}");
    let mut s = Server::new(DOMAIN, &[]);
    s.enable(&["smtp"]);
    s.limits("max_message_bytes = 31457280");
    s.edit_config(|t| {
        format!(
            "{t}\n[plans.base]\nmailbox_bytes = {}\n\n[plans.maxi]\nmailbox_bytes = {}\n",
            30 * MIB,
            60 * MIB
        )
    });

    // The CLI: a plan by name, an unknown one named with the configured ones.
    let out = s.admin(&[
        "mailbox",
        "add",
        &b,
        "--password",
        "pw",
        "--keep-password",
        "--plan",
        "base",
        "--accept-anomalies",
    ]);
    assert!(
        out.contains("plan base") && out.contains(&(30 * MIB).to_string()),
        "{out}"
    );
    let cfg = s.config();
    let bad = pecd(&[
        "mailbox",
        "add",
        &format!("c@{DOMAIN}"),
        "--password",
        "pw",
        "--plan",
        "oro",
        "--config",
        cfg.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success());
    assert!(
        err.contains("no plan \"oro\" (configured: base, maxi)"),
        "{err}"
    );
    assert_eq!(s.mailbox_json(&b)["plan"], "base");
    s.start();

    let web = Web::of(&s);
    let token = web.login(&b, "pw");
    let account = web.mail_account(&token);
    let quota = 30 * MIB;
    let usage = |s: &Server| s.mailbox_json(&b)["usage_bytes"].as_u64().unwrap();

    // Ordinary mail up to 80 %: one notice.
    let mut n = 0;
    while usage(&s) * 100 < quota * 80 {
        n += 1;
        let (code, text) = common::smtp::relay(
            s.addr("smtp"),
            "someone@internet.test",
            &[&b],
            &ordinary(n, 5 * MIB),
        )
        .await;
        assert_eq!(code, 250, "{text}");
    }
    let got = web.wait(30, || {
        let got = notices(&web, &token, &account);
        (count(&got, "quota-80") == 1).then_some(got)
    });
    assert!(
        got[0].1.contains("80%") && got[0].1.contains(&b),
        "the subject says how full and which mailbox: {got:?}"
    );
    // More mail below 95 %: no second notice.
    let small = 100 * 1024;
    assert!(usage(&s) + small < quota * 95 / 100);
    n += 1;
    let (code, _) = common::smtp::relay(
        s.addr("smtp"),
        "someone@internet.test",
        &[&b],
        &ordinary(n, small),
    )
    .await;
    assert_eq!(code, 250);

    // Up to 95 %: the second notice.
    let fill = quota * 96 / 100 - usage(&s);
    n += 1;
    let (code, text) = common::smtp::relay(
        s.addr("smtp"),
        "someone@internet.test",
        &[&b],
        &ordinary(n, fill),
    )
    .await;
    assert_eq!(code, 250, "{text}");
    let got = web.wait(30, || {
        let got = notices(&web, &token, &account);
        (count(&got, "quota-95") == 1).then_some(got)
    });
    assert_eq!(count(&got, "quota-80"), 1, "{got:?}");

    // A larger plan, through the running server: usage is now under 80 %, the notices
    // are re-armed; back on the small plan, the owner is told again.
    let out = s.admin(&["mailbox", "plan", &b, "maxi"]);
    assert!(out.contains(&(60 * MIB).to_string()), "{out}");
    assert_eq!(s.mailbox_json(&b)["quota_bytes"], 60 * MIB);
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_eq!(count(&notices(&web, &token, &account), "quota-95"), 1);
    s.admin(&["mailbox", "plan", &b, "base"]);
    web.wait(30, || {
        (count(&notices(&web, &token, &account), "quota-95") == 2).then_some(())
    });

    // The plan's size changes in the configuration: applied at start-up.
    s.stop();
    s.edit_config(|t| {
        t.replace(
            &format!("mailbox_bytes = {}", 30 * MIB),
            &format!("mailbox_bytes = {}", 40 * MIB),
        )
    });
    s.start();
    assert_eq!(s.mailbox_json(&b)["quota_bytes"], 40 * MIB);
    assert_eq!(s.mailbox_json(&b)["plan"], "base");
    // A quota of its own takes the mailbox off the plan.
    s.admin(&["mailbox", "quota", &b, &(50 * MIB).to_string()]);
    assert!(s.mailbox_json(&b)["plan"].is_null());
    s.stop();
}
