//! The JMAP API and the web listener over real HTTPS (curl, verifying the dev CA), against
//! real `pecd serve` processes: sessions and their security (cookies, CSRF, Origin,
//! lockout), RFC 8620 request errors, the mail methods, PEC in the data (the `pec`
//! property and its verdict, receipts in their message's thread, deliveryStatus from the
//! receipts), sending through the access point, and push.

mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use common::jmap::{Web, have_curl, mailbox_with_role, pair};
use common::server::Server;
use serde_json::{Value, json};

fn account(web: &Web, token: &str) -> String {
    web.session(token)["primaryAccounts"]["urn:ietf:params:jmap:mail"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Creates a draft and submits it; returns the EmailSubmission/set answer.
fn send(web: &Web, token: &str, acc: &str, email: Value) -> Vec<Value> {
    let drafts = mailbox_with_role(web, token, acc, "drafts");
    let sent = mailbox_with_role(web, token, acc, "sent");
    let mut email = email;
    email["mailboxIds"] = json!({ drafts.clone(): true });
    email["keywords"] = json!({"$draft": true, "$seen": true});
    web.call(
        token,
        json!([
            ["Email/set", {"accountId": acc, "create": {"d": email}}, "0"],
            ["EmailSubmission/set", {
                "accountId": acc,
                "create": {"s": {"identityId": "I0", "emailId": "#d"}},
                "onSuccessUpdateEmail": {"#s": {
                    format!("mailboxIds/{drafts}"): null,
                    format!("mailboxIds/{sent}"): true,
                    "keywords/$draft": null
                }}
            }, "1"]
        ]),
    )
}

fn text_email(from: &str, to: &[&str], subject: &str, body: &str) -> Value {
    json!({
        "from": [{"email": from}],
        "to": to.iter().map(|t| json!({"email": t})).collect::<Vec<_>>(),
        "subject": subject,
        "textBody": [{"partId": "t", "type": "text/plain"}],
        "bodyValues": {"t": {"value": body}},
    })
}

fn query_get(web: &Web, token: &str, acc: &str, filter: Value, props: Value) -> Vec<Value> {
    let r = web.call(
        token,
        json!([
            ["Email/query", {"accountId": acc, "filter": filter}, "q"],
            ["Email/get", {"accountId": acc,
                "#ids": {"resultOf": "q", "name": "Email/query", "path": "/ids"},
                "properties": props}, "g"]
        ]),
    );
    r[1][1]["list"].as_array().unwrap().clone()
}

#[test]
fn sessions_resist_csrf_and_requests_get_the_rfc_errors() {
    if !have_curl() {
        return;
    }
    let mut s = Server::new(
        "pec.web.test",
        &[
            ("anna@pec.web.test", "pw-anna-1"),
            ("carlo@pec.web.test", "pw-carlo-1"),
        ],
    );
    s.start();
    let web = Web::of(&s);

    // The JMAP well-known address and the session need a login.
    let r = web.request("GET", "/.well-known/jmap", &[]);
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some("/jmap/session"));
    let r = web.request("GET", "/jmap/session", &[]);
    assert_eq!(r.status, 401);
    assert!(
        r.header("www-authenticate")
            .is_some_and(|v| v.starts_with("Basic"))
    );
    for h in [
        "content-security-policy",
        "x-content-type-options",
        "strict-transport-security",
    ] {
        assert!(r.header(h).is_some(), "missing {h}");
    }
    assert!(
        r.header("content-security-policy")
            .unwrap()
            .contains("frame-ancestors 'none'")
    );

    // Login: JSON only, same origin only.
    let creds = json!({"username": "anna@pec.web.test", "password": "pw-anna-1"}).to_string();
    let r = web.request(
        "POST",
        "/auth/login",
        &[
            "-H",
            "Content-Type: application/x-www-form-urlencoded",
            "--data-binary",
            &creds,
        ],
    );
    assert_eq!(r.status, 415);
    let r = web.request(
        "POST",
        "/auth/login",
        &[
            "-H",
            "Content-Type: application/json",
            "-H",
            "Origin: https://evil.example",
            "--data-binary",
            &creds,
        ],
    );
    assert_eq!(r.status, 403);
    let r = web.request(
        "POST",
        "/auth/login",
        &[
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &creds,
        ],
    );
    assert_eq!(r.status, 200);
    let cookie = r.header("set-cookie").unwrap().to_string();
    for attr in [
        "__Host-pecd_session=",
        "Path=/",
        "Secure",
        "HttpOnly",
        "SameSite=Strict",
    ] {
        assert!(cookie.contains(attr), "{attr} missing in {cookie}");
    }
    let csrf = r.json()["csrfToken"].as_str().unwrap().to_string();
    let jar = format!("Cookie: {}", cookie.split(';').next().unwrap());
    let echo = json!({"using": ["urn:ietf:params:jmap:core"], "methodCalls": [["Core/echo", {"x": 1}, "c"]]}).to_string();
    let origin = format!("Origin: {}", web.base);
    // A cookie alone is not enough to change anything: the CSRF token is needed...
    let r = web.request(
        "POST",
        "/jmap/api",
        &[
            "-H",
            &jar,
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &echo,
        ],
    );
    assert_eq!(r.status, 403);
    // ...and it must come from this origin.
    let tok = format!("X-CSRF-Token: {csrf}");
    let r = web.request(
        "POST",
        "/jmap/api",
        &[
            "-H",
            &jar,
            "-H",
            &tok,
            "-H",
            "Origin: https://evil.example",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &echo,
        ],
    );
    assert_eq!(r.status, 403);
    let r = web.request(
        "POST",
        "/jmap/api",
        &[
            "-H",
            &jar,
            "-H",
            &tok,
            "-H",
            &origin,
            "-H",
            "Sec-Fetch-Site: same-origin",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &echo,
        ],
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.json()["methodResponses"][0],
        json!(["Core/echo", {"x": 1}, "c"])
    );
    let r = web.request("GET", "/auth/me", &["-H", &jar]);
    assert_eq!(r.json()["csrfToken"], json!(csrf));
    // A forged cookie is just "not logged in"; a malformed header is a 400, not a crash.
    let forged = format!("Cookie: __Host-pecd_session={}", "A".repeat(43));
    assert_eq!(
        web.request("GET", "/jmap/session", &["-H", &forged]).status,
        401
    );
    let r = web.request(
        "GET",
        "/jmap/session",
        &["-H", "Cookie: __Host-pecd_session=AAAA\u{1}; x"],
    );
    assert_eq!(r.status, 400);
    // Logout ends the session.
    let r = web.request(
        "POST",
        "/auth/logout",
        &["-H", &jar, "-H", &tok, "-H", &origin],
    );
    assert_eq!(r.status, 204);
    assert_eq!(web.request("GET", "/auth/me", &["-H", &jar]).status, 401);

    // Basic works for API clients.
    let r = web.request(
        "GET",
        "/jmap/session",
        &["-u", "anna@pec.web.test:pw-anna-1"],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["username"], "anna@pec.web.test");

    // RFC 8620 §3.6.1 request-level errors.
    let token = web.login("anna@pec.web.test", "pw-anna-1");
    let err = |body: &str| {
        let r = web.raw_api(&token, body);
        assert_eq!(r.status, 400, "{body}");
        r.json()["type"].as_str().unwrap().to_string()
    };
    assert_eq!(
        err("{\"using\": [nope"),
        "urn:ietf:params:jmap:error:notJSON"
    );
    assert_eq!(
        err("{\"using\": []}"),
        "urn:ietf:params:jmap:error:notRequest"
    );
    assert_eq!(
        err(r#"{"using":["urn:example:nothing"],"methodCalls":[]}"#),
        "urn:ietf:params:jmap:error:unknownCapability"
    );
    let many =
        json!({"using": [], "methodCalls": vec![json!(["Core/echo", {}, "c"]); 65]}).to_string();
    assert_eq!(err(&many), "urn:ietf:params:jmap:error:limit");
    let big = format!(
        "{{\"using\":[],\"methodCalls\":[],\"x\":\"{}\"}}",
        "a".repeat(11 * 1024 * 1024)
    );
    let path = s.dir.path().join("big.json");
    std::fs::write(&path, big).unwrap();
    let auth = format!("Authorization: Bearer {token}");
    let r = web.request(
        "POST",
        "/jmap/api",
        &[
            "-H",
            &auth,
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &format!("@{}", path.display()),
        ],
    );
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["type"], "urn:ietf:params:jmap:error:limit");
    // Method-level errors.
    let acc = account(&web, &token);
    let r = web.call(&token, json!([
        ["Nope/get", {}, "a"],
        ["Email/get", {"accountId": "Anotmine"}, "b"],
        ["Email/query", {"accountId": acc, "filter": {"unknownCondition": 1}}, "c"],
        ["Email/get", {"accountId": acc, "#ids": {"resultOf": "zz", "name": "Email/query", "path": "/ids"}}, "d"],
    ]));
    assert_eq!(r[0][1]["type"], "unknownMethod");
    assert_eq!(r[1][1]["type"], "accountNotFound");
    assert_eq!(r[2][1]["type"], "unsupportedFilter");
    assert_eq!(r[3][1]["type"], "invalidResultReference");

    // Carlo cannot see Anna's account.
    let carlo = web.login("carlo@pec.web.test", "pw-carlo-1");
    let r = web.call(&carlo, json!([["Mailbox/get", {"accountId": acc}, "0"]]));
    assert_eq!(r[0][1]["type"], "accountNotFound");

    // Failed logins count in the shared lockout: past it, even the right password is
    // refused (429) from this address.
    for _ in 0..10 {
        let bad = json!({"username": "carlo@pec.web.test", "password": "wrong"}).to_string();
        let r = web.request(
            "POST",
            "/auth/login",
            &[
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                &bad,
            ],
        );
        assert!(r.status == 401 || r.status == 429, "{}", r.status);
    }
    let good = json!({"username": "carlo@pec.web.test", "password": "pw-carlo-1"}).to_string();
    let r = web.request(
        "POST",
        "/auth/login",
        &[
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &good,
        ],
    );
    assert_eq!(r.status, 429);
}

#[test]
fn folders_keywords_moves_uploads_and_push() {
    if !have_curl() {
        return;
    }
    let mut s = Server::new(
        "pec.box.test",
        &[
            ("dora@pec.box.test", "pw-dora-1"),
            ("ezio@pec.box.test", "pw-ezio-1"),
        ],
    );
    s.start();
    let web = Web::of(&s);
    let token = web.login("dora@pec.box.test", "pw-dora-1");
    let acc = account(&web, &token);

    // Mailbox/set: a user folder can be made, renamed and destroyed; special ones cannot.
    let inbox = mailbox_with_role(&web, &token, &acc, "inbox");
    let r = web.call(&token, json!([
        ["Mailbox/set", {"accountId": acc, "create": {"n": {"name": "Fatture", "parentId": null}}}, "0"],
        ["Mailbox/set", {"accountId": acc, "update": {"#n": {"name": "Fatture 2026"}}, "destroy": [inbox.clone()]}, "1"],
    ]));
    let folder = r[0][1]["created"]["n"]["id"].as_str().unwrap().to_string();
    assert!(r[1][1]["updated"].get(&folder).is_some(), "{}", r[1][1]);
    assert_eq!(r[1][1]["notDestroyed"][&inbox]["type"], "forbidden");
    let r = web.call(
        &token,
        json!([["Mailbox/get", {"accountId": acc, "ids": [folder.clone()]}, "0"]]),
    );
    assert_eq!(r[0][1]["list"][0]["name"], "Fatture 2026");

    // Email/import of an uploaded message; upload and download round-trip exactly.
    let raw = b"From: Zeno <zeno@altro.test>\r\nTo: dora@pec.box.test\r\nSubject: Ordinaria\r\n\
Message-ID: <m1@altro.test>\r\nDate: Thu, 03 Dec 2026 10:00:00 +0100\r\n\r\nUna mail ordinaria.\r\n";
    let auth = format!("Authorization: Bearer {token}");
    let blob = web.upload(&token, &acc, raw);
    let r = web.request(
        "GET",
        &format!("/jmap/download/{acc}/{blob}/m.eml?type=message/rfc822"),
        &["-H", &auth],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body, raw);
    assert!(
        r.header("content-disposition")
            .unwrap()
            .starts_with("attachment")
    );
    // Another user cannot read it, even knowing the id.
    let ezio = web.login("ezio@pec.box.test", "pw-ezio-1");
    let ezio_acc = account(&web, &ezio);
    let r = web.request(
        "GET",
        &format!("/jmap/download/{ezio_acc}/{blob}/m.eml"),
        &["-H", &format!("Authorization: Bearer {ezio}")],
    );
    assert_eq!(r.status, 404);

    // Push: an EventSource stream hears about the import within a second of the commit.
    let es_url = format!("{}/jmap/eventsource?types=*&closeafter=no&ping=0", web.base);
    let mut es = std::process::Command::new("curl")
        .args(["-sN", "--cacert"])
        .arg(&web.ca)
        .args([
            "--resolve",
            &format!("{}:127.0.0.1", web.host),
            "-H",
            &auth,
            &es_url,
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = es.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0
                || tx
                    .send(String::from_utf8_lossy(&buf[..n]).into_owned())
                    .is_err()
            {
                break;
            }
        }
    });
    // The first event is the current state.
    let first = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("initial state event");
    assert!(
        first.contains("event: state") && first.contains("StateChange"),
        "{first}"
    );

    let before = web.call(
        &token,
        json!([["Email/get", {"accountId": acc, "ids": []}, "0"]]),
    )[0][1]["state"]
        .as_str()
        .unwrap()
        .to_string();
    let started = Instant::now();
    let r = web.call(
        &token,
        json!([["Email/import", {"accountId": acc, "emails": {"i": {
        "blobId": blob, "mailboxIds": {inbox.clone(): true}, "keywords": {}}}}, "0"]]),
    );
    let id = r[0][1]["created"]["i"]["id"].as_str().unwrap().to_string();
    let pushed = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("a state event after the import");
    assert!(pushed.contains("event: state"), "{pushed}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "push took {:?}",
        started.elapsed()
    );
    let _ = es.kill();

    // /changes from the store's log: the import is one created Email, the INBOX updated.
    let r = web.call(
        &token,
        json!([
            ["Email/changes", {"accountId": acc, "sinceState": before}, "0"],
            ["Mailbox/changes", {"accountId": acc, "sinceState": before}, "1"],
            ["Thread/changes", {"accountId": acc, "sinceState": before}, "2"],
            ["Email/changes", {"accountId": acc, "sinceState": "not-a-state"}, "3"],
            ["Email/changes", {"accountId": acc, "sinceState": "999999"}, "4"],
        ]),
    );
    assert_eq!(r[0][1]["created"], json!([id.clone()]), "{}", r[0][1]);
    assert_eq!(r[0][1]["hasMoreChanges"], false);
    assert!(
        r[1][1]["updated"]
            .as_array()
            .unwrap()
            .contains(&json!(inbox.clone())),
        "{}",
        r[1][1]
    );
    assert_eq!(
        r[2][1]["created"].as_array().unwrap().len(),
        1,
        "{}",
        r[2][1]
    );
    assert_eq!(r[3][1]["type"], "cannotCalculateChanges");
    assert_eq!(r[4][1]["type"], "cannotCalculateChanges");
    let after_import = r[0][1]["newState"].as_str().unwrap().to_string();

    // Imported ordinary mail is never certified, whatever folder it is in.
    let list = query_get(
        &web,
        &token,
        &acc,
        json!({"inMailbox": inbox}),
        json!(["subject", "keywords", "pec", "mailboxIds", "threadId"]),
    );
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["pec"]["kind"], "ordinaria");
    assert_eq!(list[0]["pec"]["verdict"]["verified"], false);

    // The other read methods on the same account.
    let r = web.call(
        &token,
        json!([
            ["SearchSnippet/get", {"accountId": acc, "filter": {"text": "ordinaria"}, "emailIds": [id.clone()]}, "s"],
            ["Mailbox/query", {"accountId": acc, "filter": {"role": "inbox"}}, "mq"],
            ["Identity/get", {"accountId": acc}, "i"],
            ["Quota/get", {"accountId": acc}, "q"],
            ["Email/queryChanges", {"accountId": acc, "sinceQueryState": "0", "filter": {}}, "qc"],
            ["Email/copy", {"accountId": acc, "fromAccountId": "Aelsewhere", "create": {}}, "c"],
            ["Blob/copy", {"accountId": acc, "fromAccountId": acc, "blobIds": [blob.clone(), "Bnope"]}, "b"],
            ["Email/query", {"accountId": acc, "filter": {"operator": "OR", "conditions": [
                {"from": "zeno@altro"}, {"pecIdentificativo": "<none@x>"}]}, "sort": [{"property": "subject"}]}, "o"],
        ]),
    );
    assert!(
        r[0][1]["list"][0]["subject"]
            .as_str()
            .unwrap()
            .contains("<mark>Ordinaria</mark>"),
        "{}",
        r[0][1]
    );
    assert_eq!(r[1][1]["ids"], json!([inbox.clone()]));
    assert_eq!(r[2][1]["list"][0]["email"], "dora@pec.box.test");
    assert_eq!(r[2][1]["list"][0]["mayDelete"], false);
    assert!(
        r[3][1]["list"][0]["used"].as_u64().unwrap() >= raw.len() as u64,
        "{}",
        r[3][1]
    );
    assert!(r[3][1]["list"][0]["hardLimit"].as_u64().unwrap() > 0);
    assert_eq!(r[4][1]["type"], "cannotCalculateChanges");
    assert_eq!(r[5][1]["type"], "fromAccountNotFound");
    assert_eq!(r[6][1]["copied"][&blob], json!(blob.clone()));
    assert_eq!(r[6][1]["notCopied"]["Bnope"]["type"], "blobNotFound");
    assert_eq!(r[7][1]["ids"], json!([id.clone()]));
    let r = web.call(
        &token,
        json!([["Mailbox/get", {"accountId": acc, "ids": [inbox.clone()]}, "0"]]),
    );
    assert_eq!(r[0][1]["list"][0]["unreadEmails"], 1);

    // Keywords and a move keep the Email's id (RFC 8621 §4); counts follow.
    let r = web.call(&token, json!([
        ["Email/set", {"accountId": acc, "update": {id.clone(): {"keywords/$seen": true, format!("mailboxIds/{inbox}"): null, format!("mailboxIds/{folder}"): true}}}, "0"],
        ["Email/get", {"accountId": acc, "ids": [id.clone()], "properties": ["mailboxIds", "keywords"]}, "1"],
        ["Mailbox/get", {"accountId": acc, "ids": [inbox.clone(), folder.clone()], "properties": ["totalEmails", "unreadEmails"]}, "2"],
    ]));
    assert!(r[0][1]["updated"].get(&id).is_some(), "{}", r[0][1]);
    assert_eq!(
        r[1][1]["list"][0]["mailboxIds"],
        json!({folder.clone(): true})
    );
    assert_eq!(r[1][1]["list"][0]["keywords"], json!({"$seen": true}));
    assert_eq!(r[2][1]["list"][0]["totalEmails"], 0);
    assert_eq!(r[2][1]["list"][1]["totalEmails"], 1);
    assert_eq!(r[2][1]["list"][1]["unreadEmails"], 0);
    let r = web.call(
        &token,
        json!([["Email/changes", {"accountId": acc, "sinceState": after_import}, "0"]]),
    );
    assert_eq!(
        r[0][1]["updated"],
        json!([id.clone()]),
        "a move and a keyword keep the id: {}",
        r[0][1]
    );
    let after_move = r[0][1]["newState"].as_str().unwrap().to_string();
    // A folder holding mail is not destroyed unless asked.
    let r = web.call(
        &token,
        json!([["Mailbox/set", {"accountId": acc, "destroy": [folder.clone()]}, "0"]]),
    );
    assert_eq!(r[0][1]["notDestroyed"][&folder]["type"], "mailboxHasEmail");
    // Destroy; it is gone for IMAP too (the same store).
    let r = web.call(
        &token,
        json!([
            ["Email/set", {"accountId": acc, "destroy": [id.clone()]}, "0"],
            ["Email/get", {"accountId": acc, "ids": [id.clone()]}, "1"],
        ]),
    );
    assert_eq!(r[0][1]["destroyed"], json!([id.clone()]));
    assert_eq!(r[1][1]["notFound"], json!([id.clone()]));
    let r = web.call(
        &token,
        json!([["Email/changes", {"accountId": acc, "sinceState": after_move}, "0"]]),
    );
    assert_eq!(r[0][1]["destroyed"], json!([id]), "{}", r[0][1]);
}

#[test]
fn a_pec_sent_from_the_api_is_certified_threaded_and_tracked_to_delivery() {
    if !have_curl() {
        return;
    }
    let (a, b) = pair(
        ("pec.uno.test", &[("alice@pec.uno.test", "pw-alice-1")]),
        ("pec.due.test", &[("bob@pec.due.test", "pw-bob-1")]),
    );
    let (wa, wb) = (Web::of(&a), Web::of(&b));
    let ta = wa.login("alice@pec.uno.test", "pw-alice-1");
    let tb = wb.login("bob@pec.due.test", "pw-bob-1");
    let (acc_a, acc_b) = (account(&wa, &ta), account(&wb, &tb));

    // A refused submission: Bcc is not allowed in PEC. notCreated with the reason, and the
    // non-acceptance notice arrives as on SMTP.
    let mut bcc = text_email("alice@pec.uno.test", &["bob@pec.due.test"], "Con Ccn", "x");
    bcc["bcc"] = json!([{"email": "spia@pec.due.test"}]);
    let r = send(&wa, &ta, &acc_a, bcc);
    let nc = &r[1][1]["notCreated"]["s"];
    assert_eq!(nc["type"], "forbiddenToSend", "{}", r[1][1]);
    assert!(
        nc["description"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("bcc"),
        "{nc}"
    );

    // A PEC with a breve receipt form.
    let mut email = text_email(
        "alice@pec.uno.test",
        &["bob@pec.due.test"],
        "Convocazione",
        "Si convoca la riunione.",
    );
    email["header:X-TipoRicevuta:asText"] = json!("breve");
    let r = send(&wa, &ta, &acc_a, email);
    assert!(r[1][1]["created"]["s"]["id"].is_string(), "{}", r[1][1]);
    let sub_id = r[1][1]["created"]["s"]["id"].as_str().unwrap().to_string();
    assert!(
        sub_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "{sub_id}"
    );
    assert_eq!(
        r[2][0], "Email/set",
        "implicit Email/set after the submission"
    );
    let draft_id = r[0][1]["created"]["d"]["id"].as_str().unwrap().to_string();

    // The status reaches delivered, from the receipts.
    let status = wa.wait(60, || {
        let r = wa.call(
            &ta,
            json!([["EmailSubmission/get", {"accountId": acc_a, "ids": [sub_id.clone()]}, "0"]]),
        );
        let s = r[0][1]["list"][0]["deliveryStatus"]["bob@pec.due.test"].clone();
        (s["delivered"] == "yes").then_some(s)
    });
    // The refused message got its non-acceptance notice, as on SMTP; the submission is
    // found by its Email.
    let notices = query_get(
        &wa,
        &ta,
        &acc_a,
        json!({"pecKind": "non-accettazione"}),
        json!(["pec"]),
    );
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert_eq!(notices[0]["pec"]["verdict"]["verified"], true);
    let r = wa.call(&ta, json!([["EmailSubmission/query", {"accountId": acc_a, "filter": {"emailIds": [draft_id.clone()]}}, "0"]]));
    assert_eq!(r[0][1]["ids"], json!([sub_id.clone()]));
    let kinds: Vec<&str> = status["pecReceipts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"accettazione") && kinds.contains(&"avvenuta-consegna"),
        "{kinds:?}"
    );

    // The sent message and its receipts share one thread.
    let r = wa.call(&ta, json!([
        ["Email/get", {"accountId": acc_a, "ids": [draft_id.clone()], "properties": ["threadId", "mailboxIds", "keywords"]}, "0"],
        ["Thread/get", {"accountId": acc_a, "#ids": {"resultOf": "0", "name": "Email/get", "path": "/list/*/threadId"}}, "1"],
        ["Email/get", {"accountId": acc_a, "#ids": {"resultOf": "1", "name": "Thread/get", "path": "/list/*/emailIds"}, "properties": ["pec", "subject"]}, "2"],
    ]));
    let sent = mailbox_with_role(&wa, &ta, &acc_a, "sent");
    assert_eq!(r[0][1]["list"][0]["mailboxIds"], json!({sent: true}));
    let thread: Vec<String> = r[2][1]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pec"]["kind"].as_str().unwrap().to_string())
        .collect();
    for k in ["ordinaria", "accettazione", "avvenuta-consegna"] {
        assert!(
            thread.iter().any(|t| t == k),
            "{k} not in the thread: {thread:?}"
        );
    }
    let consegna = r[2][1]["list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["pec"]["kind"] == "avvenuta-consegna")
        .unwrap();
    assert_eq!(consegna["pec"]["receiptForm"], "breve");
    assert_eq!(
        consegna["pec"]["verdict"]["verified"], true,
        "{}",
        consegna["pec"]
    );

    // Bob's side: the envelope is certified, signed by provider uno, found by
    // identificativo, and its original can be read through Email/parse.
    let ident = consegna["pec"]["identificativo"]
        .as_str()
        .unwrap()
        .to_string();
    let list = query_get(
        &wb,
        &tb,
        &acc_b,
        json!({"pecIdentificativo": format!("<{ident}>")}),
        json!(["subject", "pec", "blobId", "from"]),
    );
    assert_eq!(list.len(), 1, "{list:?}");
    let env = &list[0];
    assert_eq!(env["pec"]["kind"], "posta-certificata");
    assert_eq!(env["pec"]["verdict"]["verified"], true, "{}", env["pec"]);
    assert!(
        env["pec"]["verdict"]["provider"]
            .as_str()
            .unwrap()
            .contains("pec.uno.test")
    );
    assert_eq!(env["pec"]["daticert"]["mittente"], "alice@pec.uno.test");
    let pc = env["pec"]["postacertBlobId"].as_str().unwrap();
    let r = wb.call(
        &tb,
        json!([["Email/parse", {"accountId": acc_b, "blobIds": [pc], "fetchTextBodyValues": true,
        "properties": ["subject", "from", "textBody", "bodyValues"]}, "0"]]),
    );
    let orig = &r[0][1]["parsed"][pc];
    assert_eq!(orig["subject"], "Convocazione");
    let part = orig["textBody"][0]["partId"].as_str().unwrap();
    assert!(
        orig["bodyValues"][part]["value"]
            .as_str()
            .unwrap()
            .contains("Si convoca")
    );

    // The downloaded .eml is the exact stored message (its blob id is its SHA-256).
    let blob = env["blobId"].as_str().unwrap();
    let auth = format!("Authorization: Bearer {tb}");
    let r = wb.request(
        "GET",
        &format!("/jmap/download/{acc_b}/{blob}/busta.eml"),
        &["-H", &auth],
    );
    assert_eq!(r.status, 200);
    assert_eq!(format!("B{}", pecd::trace::sha256_hex(&r.body)), blob);

    // The evidence bundle of the message, from the webmail's download: it checks offline,
    // and one byte changed makes the check fail.
    let env_id = env["id"].as_str().unwrap();
    let ev = wb.request(
        "GET",
        &format!("/jmap/evidence/{acc_b}/{env_id}"),
        &["-H", &auth],
    );
    assert_eq!(ev.status, 200, "{}", String::from_utf8_lossy(&ev.body));
    assert_eq!(ev.header("content-type"), Some("application/zip"));
    assert!(
        ev.header("content-disposition")
            .unwrap()
            .starts_with("attachment")
    );
    let zip = b.dir.path().join("evidenza.zip");
    std::fs::write(&zip, &ev.body).unwrap();
    // Offline, as someone without the provider's configuration checks it: the provider's
    // signing certificate must be named (or --unchecked asked for), else exit 2.
    let cert = b.dir.path().join("certs/signing.pem");
    let none = b.dir.path().join("absent.toml");
    let check = |zip: &std::path::Path, extra: &[&str]| {
        let mut args = vec!["evidence", "verify", zip.to_str().unwrap()];
        args.extend(["--config", none.to_str().unwrap()]);
        args.extend(extra);
        common::server::pecd(&args)
    };
    let out = check(&zip, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--unchecked"));
    assert_eq!(check(&zip, &["--unchecked"]).status.code(), Some(0));
    let out = check(&zip, &["--cert", cert.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut bad = ev.body.clone();
    let at = bad
        .windows(10)
        .position(|w| w == b"Si convoca")
        .expect("the message is in the bundle");
    bad[at + 1] ^= 0x20;
    std::fs::write(&zip, &bad).unwrap();
    let out = check(&zip, &["--cert", cert.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Alice cannot fetch it through Bob's account, nor Bob's message through hers.
    let other = wa.request(
        "GET",
        &format!("/jmap/evidence/{acc_b}/{env_id}"),
        &["-H", &format!("Authorization: Bearer {ta}")],
    );
    assert_eq!(other.status, 404);

    // A tampered copy imported into the INBOX is not certified, and says why.
    let mut bytes = r.body.clone();
    let at = bytes
        .windows(10)
        .position(|w| w == b"Si convoca")
        .expect("the body is in the envelope");
    bytes[at] = b'X';
    let tampered_blob = wb.upload(&tb, &acc_b, &bytes);
    let inbox_b = mailbox_with_role(&wb, &tb, &acc_b, "inbox");
    let r = wb.call(&tb, json!([
        ["Email/import", {"accountId": acc_b, "emails": {"t": {"blobId": tampered_blob, "mailboxIds": {inbox_b: true}}}}, "0"],
        ["Email/get", {"accountId": acc_b, "ids": ["#t"], "properties": ["pec"]}, "1"],
    ]));
    let v = &r[1][1]["list"][0]["pec"]["verdict"];
    assert_eq!(v["verified"], false, "{v}");
    assert!(v["reason"].as_str().unwrap().contains("firma"), "{v}");
}

/// A real provider's receipt (Aruba, 2014) imported into a mailbox: the `pec` property
/// reads its real daticert and signer; it is not certified while Aruba's certificate is
/// not in our index, and is once the index lists it — judged at the time we say we
/// received it (the certificate has long expired since), never by where it was put.
#[test]
fn the_pec_property_on_a_real_provider_receipt_follows_the_index() {
    if !have_curl() {
        return;
    }
    let path = common::jmap::manifest("../shared/samples/oca-l10n-italy-7.0/message2_accettazione");
    let Ok(raw) = std::fs::read(&path) else {
        eprintln!(
            "SKIP: {} is absent (a clone without ../shared)",
            path.display()
        );
        return;
    };
    let mut s = Server::new(
        "pec.campione.test",
        &[("gina@pec.campione.test", "pw-gina-1")],
    );
    s.start();
    let web = Web::of(&s);
    let token = web.login("gina@pec.campione.test", "pw-gina-1");
    let acc = account(&web, &token);
    let inbox = mailbox_with_role(&web, &token, &acc, "inbox");
    let blob = web.upload(&token, &acc, &raw);
    let import = |received: &str| {
        web.call(&token, json!([
            ["Email/import", {"accountId": acc, "emails": {"a": {"blobId": blob, "mailboxIds": {inbox.clone(): true}, "receivedAt": received}}}, "0"],
            ["Email/get", {"accountId": acc, "ids": ["#a"], "properties": ["pec", "subject", "threadId"]}, "1"],
            ["Email/set", {"accountId": acc, "destroy": ["#a"]}, "2"],
        ]))
    };
    let r = import("2014-11-14T18:30:00Z");
    let pec = &r[1][1]["list"][0]["pec"];
    assert_eq!(pec["kind"], "accettazione");
    assert_eq!(
        pec["identificativo"],
        "opec275.20141114182632.23219.07.1.48@pec.aruba.it"
    );
    assert_eq!(pec["daticert"]["mittente"], "l.battistini@pec.it");
    assert_eq!(pec["verdict"]["verified"], false);
    assert!(
        pec["verdict"]["signer"]
            .as_str()
            .unwrap()
            .contains("ARUBA PEC"),
        "{pec}"
    );
    assert!(
        pec["verdict"]["reason"]
            .as_str()
            .unwrap()
            .contains("indice"),
        "{pec}"
    );

    // Aruba's signing certificate in the index (as the national index would list it).
    let check = pecd::pec::smime::verify_message(&raw, None);
    let signer = check.signer.expect("the sample is signed");
    use base64::Engine;
    let ldif = format!(
        "version: 1\n\ndn: providerName=Aruba PEC S.p.A.,o=postacert\nobjectclass: top\nobjectclass: provider\n\
providerName: Aruba PEC S.p.A.\nproviderCertificateHash: {}\nproviderCertificate;binary:: {}\n\
mailReceipt: posta-certificata@pec.it\nmanagedDomains: pec.it\n",
        signer.sha1.to_uppercase(),
        base64::engine::general_purpose::STANDARD.encode(&signer.der)
    );
    let lp = s.dir.path().join("aruba.ldif");
    std::fs::write(&lp, ldif).unwrap();
    s.admin(&["index", "import", lp.to_str().unwrap()]);
    let r = web.wait(30, || {
        let r = import("2014-11-14T18:30:00Z");
        (r[1][1]["list"][0]["pec"]["verdict"]["verified"] == true).then_some(r)
    });
    assert_eq!(
        r[1][1]["list"][0]["pec"]["verdict"]["provider"],
        "Aruba PEC S.p.A."
    );
    // Said to be received today, its (expired) certificate no longer vouches for it.
    let r = import("2026-12-01T10:00:00Z");
    let v = &r[1][1]["list"][0]["pec"]["verdict"];
    assert_eq!(v["verified"], false, "{v}");
    assert!(v["reason"].as_str().unwrap().contains("certificato"), "{v}");
}

/// The 12 h and 24 h notices (rules §4.12, identical in XML) as JMAP shows them: a PEC to
/// a provider that never answers is `queued`, `unknown` after the 12 h notice, and `no`
/// after the 24 h one; each notice is in the message's thread. The provider runs in this
/// process on a manual clock, so the hours pass in milliseconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_status_follows_the_12_and_24_hour_notices() {
    if !have_curl() {
        return;
    }
    use pecd::clock::ManualClock;
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    for (dir, domain) in [(&a, "pec.uno.test"), (&b, "pec.muto.test")] {
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
    }
    // The silent provider is in the index, routed to a port nobody listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = a.path().join("pecd.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let mut out = String::new();
    for line in text.lines() {
        let l = match line.split_once(" = ") {
            Some((k, _)) if k.trim() == "https" => "https = \"127.0.0.1:0\"".to_string(),
            Some((k, _))
                if ["smtp", "submission", "smtps", "imaps", "pop3s", "admin"]
                    .contains(&k.trim()) =>
            {
                format!("{} = \"off\"", k.trim())
            }
            _ if line == "[routes]" => {
                format!("[routes]\n\"pec.muto.test\" = \"127.0.0.1:{dead}\"")
            }
            _ => line.to_string(),
        };
        out.push_str(&l);
        out.push('\n');
    }
    std::fs::write(&cfg, out).unwrap();
    let ldif = b.path().join("muto.ldif");
    let bc = b.path().join("pecd.toml");
    let e = common::server::pecd(&[
        "index",
        "export",
        "--config",
        bc.to_str().unwrap(),
        "--out",
        ldif.to_str().unwrap(),
    ]);
    assert!(e.status.success());
    let i = common::server::pecd(&[
        "index",
        "import",
        ldif.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert!(i.status.success(), "{}", String::from_utf8_lossy(&i.stderr));

    let clock = std::sync::Arc::new(ManualClock::new(jiff::Timestamp::now()));
    let shared: pecd::clock::SharedClock = clock.clone();
    let c2 = cfg.clone();
    let gw = tokio::task::spawn_blocking(move || {
        pecd::gateway::Gateway::open(pecd::config::Config::load(&c2).unwrap(), shared).unwrap()
    })
    .await
    .unwrap();
    gw.store
        .add_mailbox(pecd::store::NewMailbox {
            address: pecd::pec::address::PecAddress::parse("alice@pec.uno.test").unwrap(),
            password: pecd::store::mailbox::Password::new("pw-alice-1"),
            quota_bytes: None,
            options: Default::default(),
            provisional: false,
        })
        .unwrap();
    let running = pecd::server::start(gw.clone()).await.unwrap();
    let port = running.addr("https").unwrap().port();
    let web = Web {
        base: format!("https://localhost:{port}"),
        ca: a.path().join("certs/ca.pem"),
        host: format!("localhost:{port}"),
    };
    let w = std::sync::Arc::new(web);
    let blocking = |f: Box<dyn FnOnce(&Web) -> Value + Send>| {
        let w = w.clone();
        async move { tokio::task::spawn_blocking(move || f(&w)).await.unwrap() }
    };
    let (token, acc) = {
        let v = blocking(Box::new(|w| {
            let t = w.login("alice@pec.uno.test", "pw-alice-1");
            json!([t.clone(), account(w, &t)])
        }))
        .await;
        (
            v[0].as_str().unwrap().to_string(),
            v[1].as_str().unwrap().to_string(),
        )
    };
    let (t2, a2) = (token.clone(), acc.clone());
    let r = blocking(Box::new(move |w| {
        json!(send(
            w,
            &t2,
            &a2,
            text_email(
                "alice@pec.uno.test",
                &["bob@pec.muto.test"],
                "Nessuna risposta",
                "x"
            )
        ))
    }))
    .await;
    let sub = r[1][1]["created"]["s"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{r}"))
        .to_string();
    let status = |token: String, acc: String, sub: String| {
        blocking(Box::new(move |w| {
            let r = w.call(
                &token,
                json!([["EmailSubmission/get", {"accountId": acc, "ids": [sub]}, "0"]]),
            );
            r[0][1]["list"][0]["deliveryStatus"]["bob@pec.muto.test"].clone()
        }))
    };
    assert_eq!(
        status(token.clone(), acc.clone(), sub.clone()).await["delivered"],
        "queued"
    );

    clock.advance(jiff::SignedDuration::from_hours(12) + jiff::SignedDuration::from_mins(1));
    assert_eq!(
        pecd::pipeline::timers::tick(&gw).await.unwrap(),
        1,
        "12 h notice"
    );
    let s = status(token.clone(), acc.clone(), sub.clone()).await;
    assert_eq!(s["delivered"], "unknown", "{s}");
    assert!(s["smtpReply"].as_str().unwrap().contains("12"), "{s}");

    clock.advance(jiff::SignedDuration::from_hours(12));
    assert!(
        pecd::pipeline::timers::tick(&gw).await.unwrap() >= 1,
        "24 h notice"
    );
    let s = status(token.clone(), acc.clone(), sub.clone()).await;
    assert_eq!(s["delivered"], "no", "{s}");
    let kinds: Vec<&str> = s["pecReceipts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|x| x["kind"].as_str())
        .collect();
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == "preavviso-errore-consegna")
            .count(),
        2,
        "{kinds:?}"
    );
    running.shutdown().await;
}
