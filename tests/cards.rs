//! Smart cards (CNS) associated with mailboxes (#10), against a real `pecd` and a CNS PKI
//! made with the `openssl` command: `pecd mailbox cert add | del | list` on the store
//! directly and through a running server's control socket; several cards per mailbox and
//! one card for several mailboxes; only a card that could log in now is accepted (a CA of
//! `[cns] ca`, within its validity, for client authentication, not on a CRL of
//! `[cns] crl_dir`, with a codice fiscale in either CNS form), each refusal naming the file
//! and the problem; every change in the trace log.

mod common;

use common::cns::CnsPki;
use common::server::{Server, pecd};

const DOMAIN: &str = "pec.carte.test";

fn try_admin(s: &Server, args: &[&str]) -> (bool, String) {
    let cfg = s.config();
    let mut a = args.to_vec();
    a.extend(["--config", cfg.to_str().unwrap()]);
    let o = pecd(&a);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

fn refused(s: &Server, args: &[&str], why: &str) {
    let (ok, text) = try_admin(s, args);
    assert!(!ok, "{args:?} should fail: {text}");
    assert!(text.contains(why), "{args:?}: expected {why:?} in: {text}");
}

#[test]
fn cards_are_associated_only_when_they_could_log_in() {
    if !common::have("openssl", "CNS PKI") {
        return;
    }
    let mut s = Server::new(
        DOMAIN,
        &[
            (&format!("a@{DOMAIN}"), "pw"),
            (&format!("b@{DOMAIN}"), "pw"),
        ],
    );
    let (a, b) = (format!("a@{DOMAIN}"), format!("b@{DOMAIN}"));
    let pki = CnsPki::new(s.dir.path(), "Test CNS CA");
    let other = CnsPki::new(s.dir.path(), "Other CA");
    // Trusted, but its CRL is missing from crl_dir: its cards cannot be checked.
    let third = CnsPki::new(s.dir.path(), "Third CA");
    let unchecked = third.card("unchecked", "/C=IT/CN=RSSMRA80A01H501U\\/6.x", None);
    let card = pki.card(
        "card",
        "/C=IT/O=Regione Test/CN=RSSMRA80A01H501U\\/7420071234567.abCdEf==",
        None,
    );
    let newer = pki.card(
        "newer",
        "/C=IT/CN=Laura Bianchi/serialNumber=TINIT-BNCLRA85T41F205Y",
        None,
    );
    let revoked = pki.card("revoked", "/C=IT/CN=VRDGPP13R10B293P\\/1.x", None);
    let expired = pki.card(
        "expired",
        "/C=IT/CN=VRDGPP13R10B293P\\/2.x",
        Some(("20200101000000Z", "20210101000000Z")),
    );
    let no_cf = pki.card("nocf", "/C=IT/CN=Mario Rossi", None);
    let bad_check = pki.card("badcheck", "/C=IT/CN=RSSMRA80A01H501A\\/3.x", None);
    let foreign = other.card("foreign", "/C=IT/CN=RSSMRA80A01H501U\\/4.x", None);
    let server = pki.server_cert("server", "/C=IT/CN=RSSMRA80A01H501U\\/5.x");
    let crls = s.dir.path().join("cns-crl");
    pki.revoke("revoked", &crls);
    let p = |x: &std::path::Path| x.to_str().unwrap().to_string();
    let (ca, crl_dir) = (p(&pki.ca()), p(&crls));
    let ca3 = p(&third.ca());

    // Without [cns], nothing can be associated.
    let (card_s, newer_s) = (p(&card), p(&newer));
    refused(
        &s,
        &["mailbox", "cert", "add", &a, &card_s],
        "smart-card login is off",
    );
    s.edit_config(|t| format!("{t}\n[cns]\nca = [\"{ca}\", \"{ca3}\"]\ncrl_dir = \"{crl_dir}\"\n"));

    // On the store directly (no server running).
    let out = s.admin(&["mailbox", "cert", "add", &a, &card_s]);
    assert!(out.contains("codice fiscale RSSMRA80A01H501U"), "{out}");
    assert!(out.contains(&format!("may now log in to {a}")), "{out}");

    // Through the running server's control socket.
    s.start();
    let out = s.admin(&["mailbox", "cert", "add", &a, &newer_s]);
    assert!(
        out.contains("codice fiscale BNCLRA85T41F205Y"),
        "TINIT- form: {out}"
    );
    s.admin(&["mailbox", "cert", "add", &b, &card_s]);
    refused(
        &s,
        &["mailbox", "cert", "add", &a, &card_s],
        "already associated",
    );

    // Each refusal says why.
    for (file, why) in [
        (&revoked, "revoked on"),
        (&expired, "expired on 2021-01-01"),
        (&no_cf, "carries no codice fiscale"),
        (&bad_check, "carries no codice fiscale"),
        (
            &foreign,
            "not issued by a trusted CNS certification authority",
        ),
        (&server, "not a certificate for client authentication"),
        (&unchecked, "no CRL of its issuer"),
    ] {
        refused(&s, &["mailbox", "cert", "add", &a, &p(file)], why);
    }
    let cfg = p(&s.config());
    let (ok, text) = try_admin(&s, &["mailbox", "cert", "add", &a, &cfg]);
    assert!(
        !ok && text.contains(&cfg) && text.contains("no PEM certificate"),
        "{text}"
    );
    refused(
        &s,
        &["mailbox", "cert", "add", &format!("x@{DOMAIN}"), &card_s],
        "no mailbox",
    );

    // list, del.
    let list = s.admin(&["mailbox", "cert", "list", &a, "--json"]);
    let cards: Vec<serde_json::Value> = list
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(cards.len(), 2, "{list}");
    let mut cfs: Vec<&str> = cards
        .iter()
        .map(|c| c["codice_fiscale"].as_str().unwrap())
        .collect();
    cfs.sort();
    assert_eq!(cfs, ["BNCLRA85T41F205Y", "RSSMRA80A01H501U"]);
    let sha = cards
        .iter()
        .find(|c| c["codice_fiscale"] == "BNCLRA85T41F205Y")
        .unwrap()["sha256"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(sha.len(), 64);
    s.admin(&["mailbox", "cert", "del", &a, &sha]);
    assert_eq!(
        s.admin(&["mailbox", "cert", "list", &a, "--json"])
            .lines()
            .count(),
        1
    );
    refused(&s, &["mailbox", "cert", "del", &a, &sha], "no card");

    // Deleting a mailbox removes its cards; the other mailbox keeps the same card.
    s.admin(&["mailbox", "del", &b]);
    assert_eq!(
        s.admin(&["mailbox", "cert", "list", &b, "--json"])
            .lines()
            .count(),
        0
    );
    assert_eq!(
        s.admin(&["mailbox", "cert", "list", &a, "--json"])
            .lines()
            .count(),
        1
    );

    let log = s.admin(&["log", "--mailbox", &a]);
    assert_eq!(log.matches("smart card associated").count(), 2, "{log}");
    assert!(
        log.contains(&format!("smart card removed: certificate SHA-256 {sha}")),
        "{log}"
    );
}

/// A curl request to `base` with an optional client certificate `(cert, key)`.
fn curl(
    s: &Server,
    base: &str,
    method: &str,
    path: &str,
    card: Option<(&std::path::Path, &std::path::Path)>,
    extra: &[&str],
) -> common::jmap::Reply {
    let port = base.rsplit(':').next().unwrap().trim_end_matches('/');
    let web = common::jmap::Web {
        base: format!("https://localhost:{port}"),
        ca: s.ca(),
        host: format!("localhost:{port}"),
    };
    let mut args: Vec<String> = Vec::new();
    if let Some((c, k)) = card {
        args.extend([
            "--cert".into(),
            c.to_str().unwrap().into(),
            "--key".into(),
            k.to_str().unwrap().into(),
        ]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    web.request(method, path, &a)
}

#[test]
fn cards_log_in_on_every_protocol() {
    if !common::have("openssl", "CNS PKI")
        || !common::have("python3", "mail clients")
        || !common::jmap::have_curl()
    {
        return;
    }
    let (a, b, c) = (
        format!("a@{DOMAIN}"),
        format!("b@{DOMAIN}"),
        format!("c@{DOMAIN}"),
    );
    let mut s = Server::new(DOMAIN, &[(&a, "pw"), (&b, "pw"), (&c, "pw")]);
    s.enable(&["imaps", "pop3s"]);
    // This test fails many logins from one address on purpose.
    s.limits("auth_max_failures = 1000");
    let pki = CnsPki::new(s.dir.path(), "Test CNS CA");
    let mine = pki.card("mine", "/C=IT/CN=RSSMRA80A01H501U\\/1.a", None);
    let shared = pki.card(
        "shared",
        "/C=IT/serialNumber=TINIT-BNCLRA85T41F205Y/CN=B",
        None,
    );
    let lost = pki.card("lost", "/C=IT/CN=VRDGPP13R10B293P\\/3.c", None);
    let stranger = pki.card("stranger", "/C=IT/CN=RSSMRA80A01H50MM\\/4.d", None);
    let crls = s.dir.path().join("cns-crl");
    pki.write_crl(&crls);
    let (ca, crl_dir) = (
        pki.ca().to_str().unwrap().to_string(),
        crls.to_str().unwrap().to_string(),
    );
    s.edit_config(|t| {
        let t = t.replace("[listen]\n", "[listen]\nhttps_cns = \"127.0.0.1:0\"\n");
        format!("{t}\n[cns]\nca = [\"{ca}\"]\ncrl_dir = \"{crl_dir}\"\n")
    });
    let p = |x: &std::path::Path| x.to_str().unwrap().to_string();
    s.admin(&["mailbox", "cert", "add", &a, &p(&mine)]);
    s.admin(&["mailbox", "cert", "add", &b, &p(&shared)]);
    s.admin(&["mailbox", "cert", "add", &c, &p(&shared)]);
    s.admin(&["mailbox", "cert", "add", &a, &p(&lost)]);
    // The lost card is revoked after it was associated.
    pki.revoke("lost", &crls);
    s.start();
    let key = |x: &std::path::Path| x.with_extension("key");
    let card = |x: &std::path::Path| format!("{}:{}", p(x), p(&key(x)));

    // One card, one mailbox: no need to name it.
    let r = common::probe::run(&s, "card", "", &card(&mine));
    assert_eq!(r["imap"], "ok", "{r}");
    assert_eq!(r["pop3"], "ok", "{r}");
    assert_eq!(r["smtp"], "ok", "{r}");
    assert!(
        r["imap_caps"].as_str().unwrap().contains("AUTH=EXTERNAL"),
        "{r}"
    );
    assert!(r["smtp_auth"].as_str().unwrap().contains("EXTERNAL"), "{r}");
    // Naming a mailbox the card does not open.
    let r = common::probe::run(&s, "card", &b, &card(&mine));
    assert!(
        r["imap"].as_str().unwrap().contains("AUTHENTICATIONFAILED"),
        "{r}"
    );
    assert!(r["pop3"].as_str().unwrap().starts_with("-ERR"), "{r}");
    assert!(r["smtp"].as_str().unwrap().starts_with("535"), "{r}");
    // A card for two mailboxes must name one.
    let r = common::probe::run(&s, "card", "", &card(&shared));
    assert!(
        r["imap"].as_str().unwrap().contains("AUTHENTICATIONFAILED"),
        "{r}"
    );
    let r = common::probe::run(&s, "card", &c, &card(&shared));
    assert_eq!(
        (&r["imap"], &r["pop3"], &r["smtp"]),
        (&"ok".into(), &"ok".into(), &"ok".into()),
        "{r}"
    );
    // Revoked, and never associated.
    for who in [&lost, &stranger] {
        let r = common::probe::run(&s, "card", "", &card(who));
        assert!(
            r["imap"].as_str().unwrap().contains("AUTHENTICATIONFAILED"),
            "{r}"
        );
        assert!(r["smtp"].as_str().unwrap().starts_with("535"), "{r}");
    }
    // Without a certificate, EXTERNAL is not offered.
    let r = common::probe::run(&s, "card", "", "");
    assert!(
        !r["imap_caps"].as_str().unwrap().contains("EXTERNAL"),
        "{r}"
    );
    assert!(
        r["imap"].as_str().unwrap().contains("EXTERNAL needs"),
        "{r}"
    );

    // Every refusal is in the trace with its reason.
    let log = s.admin(&["log", "--mailbox", &a]);
    assert!(log.contains("certificate refused: revoked on"), "{log}");
    let log = s.admin(&["log", "--mailbox", &b]);
    assert!(
        log.contains("is not associated with b@pec.carte.test"),
        "{log}"
    );

    // The web: the card listener asks for the card; the session also works on the
    // ordinary listener.
    let cns = format!("https://localhost:{}", s.addr("https_cns").port());
    let main = format!("https://localhost:{}", s.addr("https").port());
    let json_body = ["-H", "Content-Type: application/json", "--data-binary"];
    let o = curl(&s, &main, "GET", "/auth/options", None, &[]);
    assert_eq!(o.json()["card"]["here"], false);
    assert_eq!(o.json()["card"]["port"], s.addr("https_cns").port());
    let login = |who: Option<&std::path::Path>, body: &str| {
        let k = who.map(key);
        let mut extra = json_body.to_vec();
        extra.push(body);
        curl(
            &s,
            &cns,
            "POST",
            "/auth/card",
            who.zip(k.as_deref()),
            &extra,
        )
    };
    let r = login(Some(&mine), r#"{"bearer": true}"#);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["username"], a.as_str());
    let token = r.json()["bearerToken"].as_str().unwrap().to_string();
    let auth = format!("Authorization: Bearer {token}");
    let sess = curl(&s, &main, "GET", "/jmap/session", None, &["-H", &auth]);
    assert_eq!(sess.status, 200);
    let cookie = login(Some(&mine), "{}");
    let set = cookie.header("set-cookie").unwrap_or_default().to_string();
    assert!(
        set.starts_with("__Host-pecd_session=") && set.contains("HttpOnly"),
        "{set}"
    );
    assert_eq!(login(Some(&lost), "{}").status, 401);
    assert_eq!(
        login(Some(&shared), "{}").status,
        401,
        "must name the mailbox"
    );
    let named = login(Some(&shared), &format!(r#"{{"username": "{b}"}}"#));
    assert_eq!(named.json()["username"], b.as_str());
    let none = login(None, "{}");
    assert_eq!(none.status, 401);
    assert!(
        String::from_utf8_lossy(&none.body).contains("no smart-card certificate"),
        "{}",
        String::from_utf8_lossy(&none.body)
    );
    // Not on the ordinary listener.
    let mut extra = json_body.to_vec();
    extra.push("{}");
    assert_eq!(
        curl(&s, &main, "POST", "/auth/card", None, &extra).status,
        404
    );

    // Removing the card ends its sessions and its logins.
    let sha = s.admin(&["mailbox", "cert", "list", &a, "--json"]);
    let sha = sha
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|c| c["codice_fiscale"] == "RSSMRA80A01H501U")
        .unwrap()["sha256"]
        .as_str()
        .unwrap()
        .to_string();
    s.admin(&["mailbox", "cert", "del", &a, &sha]);
    let sess = curl(&s, &main, "GET", "/jmap/session", None, &["-H", &auth]);
    assert_eq!(sess.status, 401, "the card's session ended");
    let r = common::probe::run(&s, "card", "", &card(&mine));
    assert!(
        r["imap"].as_str().unwrap().contains("AUTHENTICATIONFAILED"),
        "{r}"
    );
}

#[test]
fn cards_in_a_real_browser() {
    if !common::web::have_browser_tools()
        || !common::jmap::have_curl()
        || !common::have("openssl", "CNS PKI")
    {
        return;
    }
    let a = format!("a@{DOMAIN}");
    let mut s = Server::new(DOMAIN, &[(&a, "Password-Di-Prova-1")]);
    let pki = CnsPki::new(s.dir.path(), "Test CNS CA");
    let card = pki.card("mine", "/C=IT/CN=RSSMRA80A01H501U\\/1.a", None);
    let ca = pki.ca().to_str().unwrap().to_string();
    s.edit_config(|t| {
        let t = t.replace("[listen]\n", "[listen]\nhttps_cns = \"127.0.0.1:0\"\n");
        format!("{t}\n[cns]\nca = [\"{ca}\"]\n")
    });
    s.start();
    let (ok, out) = common::web::run_script(
        "cards.mjs",
        &[
            (
                "PECD_URL",
                format!("https://localhost:{}", s.addr("https").port()),
            ),
            (
                "PECD_CARD_URL",
                format!("https://localhost:{}", s.addr("https_cns").port()),
            ),
            ("PECD_USER", a.clone()),
            ("PECD_PASS", "Password-Di-Prova-1".into()),
            ("PECD_CARD_CERT", card.to_str().unwrap().into()),
            (
                "PECD_CARD_KEY",
                card.with_extension("key").to_str().unwrap().into(),
            ),
        ],
    );
    println!("{out}");
    assert!(ok, "the smart-card browser test failed:\n{out}");
    assert!(
        out.lines().any(|l| l.trim().ends_with("passed, 0 failed")),
        "no summary line:\n{out}"
    );
    // The association made in the browser is in the store and the trace.
    let list = s.admin(&["mailbox", "cert", "list", &a]);
    assert!(list.contains("RSSMRA80A01H501U"), "{list}");
}
