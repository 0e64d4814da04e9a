//! The owner's password (#10 "Passwords") against a real `pecd serve`: a mailbox the
//! administrator creates is unusable until its owner changes the provisional password
//! (IMAP `[ALERT]`, POP3 `-ERR [AUTH]`, SMTP 535, all naming the webmail; the web login
//! leads to the change and nothing else), the self-service change over HTTPS (current
//! password, strength rule with Italian reasons), and a change ending every other session
//! on every protocol at once, recorded in the trace; logins verified recently granted
//! without argon2 until the stored password changes. Clients: Python's imaplib, poplib
//! and smtplib, and curl.

mod common;

use std::io::{BufRead, BufReader, Write};

use common::jmap::{Reply, Web, have_curl};
use common::server::Server;
use serde_json::{Value, json};

const DOMAIN: &str = "pec.pw.test";

fn logins(s: &Server, user: &str, pw: &str) -> Value {
    common::probe::run(s, "logins", user, pw)
}

fn login(web: &Web, user: &str, pw: &str) -> Reply {
    web.login_reply(user, pw)
}

fn change(web: &Web, token: &str, current: &str, new: &str) -> Reply {
    let body = json!({"currentPassword": current, "newPassword": new});
    web.post_json(Some(token), "/auth/password", &body)
}

fn session_status(web: &Web, token: &str) -> Reply {
    let auth = format!("Authorization: Bearer {token}");
    web.request("GET", "/jmap/session", &["-H", &auth])
}

#[test]
fn a_provisional_password_must_be_changed_and_a_change_ends_every_session() {
    if !have_curl() || !common::have("python3", "password tests") {
        return;
    }
    let mut s = Server::new(DOMAIN, &[]);
    s.enable(&["imaps", "pop3s"]);
    let owner = format!("titolare@{DOMAIN}");
    // The administrator creates it: the password is provisional.
    s.admin(&["mailbox", "add", &owner, "--password", "Provvisoria-2026"]);
    s.start();
    let web = Web::of(&s);
    let url = format!("https://mail.{DOMAIN}:{}/", s.addr("https").port());

    // Every mail protocol refuses it and says where to change it.
    let r = logins(&s, &owner, "Provvisoria-2026");
    let imap = r["imap"].as_str().unwrap();
    assert!(
        imap.starts_with("[ALERT]") && imap.contains("provisional") && imap.contains(&url),
        "{r}"
    );
    assert!(
        r["pop3"].as_str().unwrap().starts_with("-ERR [AUTH]"),
        "{r}"
    );
    assert!(r["pop3"].as_str().unwrap().contains(&url), "{r}");
    assert!(r["smtp"].as_str().unwrap().starts_with("535 5.7.8"), "{r}");
    assert!(r["smtp"].as_str().unwrap().contains(&url), "{r}");

    // The web login works, but leads only to the change.
    let l = login(&web, &owner, "Provvisoria-2026");
    assert_eq!(l.status, 200);
    assert_eq!(l.json()["mustChangePassword"], true);
    let token = l.json()["bearerToken"].as_str().unwrap().to_string();
    let refused = session_status(&web, &token);
    assert_eq!(refused.status, 403);
    assert_eq!(
        refused.json()["type"],
        "urn:pecd:error:passwordChangeRequired"
    );
    // A second session opened with the provisional password, to be ended by the change.
    let other = login(&web, &owner, "Provvisoria-2026").json()["bearerToken"]
        .as_str()
        .unwrap()
        .to_string();

    // Bad changes are refused with a reason in English and Italian.
    let weak = change(&web, &token, "Provvisoria-2026", "corta");
    assert_eq!(weak.status, 422);
    assert_eq!(weak.json()["type"], "urn:pecd:error:weakPassword");
    assert!(
        weak.json()["motivo"]
            .as_str()
            .unwrap()
            .contains("almeno 10 caratteri"),
        "{}",
        weak.json()
    );
    let named = change(&web, &token, "Provvisoria-2026", "Titolare-12345");
    assert_eq!(named.status, 422, "the user name inside is refused");
    let wrong = change(&web, &token, "Sbagliata-2026", "Nuova-Password-77");
    assert_eq!(wrong.status, 403);
    assert_eq!(wrong.json()["type"], "urn:pecd:error:wrongPassword");

    // The change: the caller's session goes on, unrestricted; the other one ends.
    let ok = change(&web, &token, "Provvisoria-2026", "Nuova-Password-77");
    assert_eq!(ok.status, 200, "{}", String::from_utf8_lossy(&ok.body));
    assert_eq!(session_status(&web, &token).status, 200);
    assert_eq!(session_status(&web, &other).status, 401);

    // Every protocol at once: the new password works, the old one no longer does.
    let r = logins(&s, &owner, "Nuova-Password-77");
    assert_eq!(r, json!({"imap": "ok", "pop3": "ok", "smtp": "ok"}));
    let r = logins(&s, &owner, "Provvisoria-2026");
    assert!(
        r["imap"].as_str().unwrap().contains("AUTHENTICATIONFAILED"),
        "{r}"
    );
    assert!(r["smtp"].as_str().unwrap().starts_with("535"), "{r}");

    // Sessions open on IMAP, POP3 and SMTP end when the password changes again — also
    // those that logged in with the address in another case.
    let shouting = owner.to_uppercase();
    let mut held = common::probe::spawn(&s, "held", &shouting, "Nuova-Password-77");
    let mut out = BufReader::new(held.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), r#"{"ready": true}"#);
    let again = change(&web, &token, "Nuova-Password-77", "Terza-Password-88");
    assert_eq!(again.status, 200);
    held.stdin.take().unwrap().write_all(b"go\n").unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    held.wait().unwrap();
    let r: Value = serde_json::from_str(&line).unwrap();
    assert!(
        r["imap"].as_str().unwrap().contains("credentials changed"),
        "{r}"
    );
    assert!(
        r["pop3"].as_str().unwrap().contains("credentials changed"),
        "{r}"
    );
    assert!(
        r["smtp"].as_str().unwrap().starts_with("421 4.7.0")
            && r["smtp"].as_str().unwrap().contains("credentials changed"),
        "no message is sent after the change: {r}"
    );

    // A push stream (JMAP EventSource) open on the web session...
    let mut es = std::process::Command::new("curl")
        .args(["-sN", "--max-time", "60", "--cacert"])
        .arg(&web.ca)
        .args([
            "--resolve",
            &format!("{}:127.0.0.1", web.host),
            "-H",
            &format!("Authorization: Bearer {token}"),
            &format!("{}/jmap/eventsource?types=*&closeafter=no&ping=0", web.base),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut es_out = BufReader::new(es.stdout.take().unwrap());
    line.clear();
    es_out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "event: state", "the stream started");

    // An administrator's reset makes it provisional again, and ends the web session.
    s.admin(&[
        "mailbox",
        "passwd",
        &owner,
        "--password",
        "Reimpostata-2026",
    ]);
    assert_eq!(session_status(&web, &token).status, 401);
    // ... and the push stream with it, within seconds, not at curl's 60 s limit.
    let ended = std::time::Instant::now();
    let status = loop {
        if let Some(st) = es.try_wait().unwrap() {
            break st;
        }
        assert!(
            ended.elapsed() < std::time::Duration::from_secs(15),
            "the push stream outlived the password reset"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(status.success(), "the server ended the stream: {status}");
    let r = logins(&s, &owner, "Reimpostata-2026");
    assert!(r["imap"].as_str().unwrap().starts_with("[ALERT]"), "{r}");

    // The trace log has every change.
    let log = s.admin(&["log", "--mailbox", &owner]);
    assert_eq!(
        log.matches("password changed by the owner").count(),
        2,
        "{log}"
    );
    assert!(log.contains("password reset by the administrator"), "{log}");
    assert!(log.contains("mailbox added"), "{log}");
}

#[test]
fn the_forced_change_in_a_real_browser() -> Result<(), Box<dyn std::error::Error>> {
    if !common::web::have_browser_tools() || !have_curl() {
        return Ok(());
    }
    let mut s = Server::new(DOMAIN, &[]);
    s.enable(&["imaps", "pop3s"]);
    let owner = format!("ufficio@{DOMAIN}");
    s.admin(&["mailbox", "add", &owner, "--password", "Provvisoria-2026"]);
    // The notices' confirmation code goes nowhere: a loopback port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    s.edit_config(|t| {
        t.replace(
            "[routes]\n",
            &format!("[routes]\n\"example.test\" = \"127.0.0.1:{closed}\"\n"),
        )
    });
    s.start();
    let web = Web::of(&s);
    let (ok, out) = common::web::run_script(
        "account.mjs",
        &[
            ("PECD_URL", web.base.clone()),
            ("PECD_USER", owner.clone()),
            ("PECD_PASS", "Provvisoria-2026".into()),
            ("PECD_NEW_PASS", "Scelta-Dal-Titolare-9".into()),
        ],
    );
    println!("{out}");
    assert!(ok, "the account page's browser test failed:\n{out}");
    assert!(
        out.lines().any(|l| l.trim().ends_with("passed, 0 failed")),
        "no summary line:\n{out}"
    );
    // The browser's change took effect for the mail clients too.
    let r = logins(&s, &owner, "Scelta-Dal-Titolare-9");
    assert_eq!(r["smtp"], "ok", "{r}");
    Ok(())
}

/// The logins verified recently (`limits.login_cache_secs`): a client logging in again
/// with the right password is granted without an argon2 run, on every protocol (counted
/// in `pecd_password_checks_total`); a wrong password always costs its run; a password
/// reset by the administrator while the server runs ends the remembered login at once.
#[test]
fn a_verified_login_is_remembered_until_the_password_changes() {
    if !have_curl() || !common::have("python3", "login cache tests") {
        return;
    }
    let owner = format!("titolare@{DOMAIN}");
    let mut s = Server::new(DOMAIN, &[(owner.as_str(), "Prima-Password-2026")]);
    s.enable(&["imaps", "pop3s", "admin"]);
    s.start();
    let checks = |how: &str| {
        let (code, text) = common::admin_get(s.addr("admin"), "/metrics");
        assert_eq!(code, 200);
        common::metric_sample(
            &text,
            &format!("pecd_password_checks_total{{how=\"{how}\"}}"),
        )
        .unwrap_or(0.0)
    };
    let all_ok = |r: &Value| ["imap", "pop3", "smtp"].iter().all(|p| r[p] == "ok");

    // IMAP, then POP3 and SMTP: one argon2 run, then remembered.
    let r = logins(&s, &owner, "Prima-Password-2026");
    assert!(all_ok(&r), "{r}");
    assert_eq!((checks("argon2"), checks("cache")), (1.0, 2.0));
    // HTTP Basic on every JMAP request.
    let web = Web::of(&s);
    let basic = format!("{owner}:Prima-Password-2026");
    for _ in 0..3 {
        let r = web.request("GET", "/jmap/session", &["-u", &basic]);
        assert_eq!(r.status, 200);
    }
    assert_eq!((checks("argon2"), checks("cache")), (1.0, 5.0));

    // A wrong password is refused, each time after its own argon2 run (four: smtplib's
    // login() tries AUTH PLAIN and then AUTH LOGIN).
    let r = logins(&s, &owner, "Sbagliata-2026");
    assert!(["imap", "pop3", "smtp"].iter().all(|p| r[p] != "ok"), "{r}");
    assert_eq!((checks("argon2"), checks("cache")), (5.0, 5.0));

    // Reset by the administrator to the same words (a new hash): checked by argon2 again
    // once, then remembered again.
    let reset = |pw: &str| {
        s.admin(&[
            "mailbox",
            "passwd",
            &owner,
            "--password",
            pw,
            "--keep-password",
        ]);
    };
    reset("Prima-Password-2026");
    let r = logins(&s, &owner, "Prima-Password-2026");
    assert!(all_ok(&r), "{r}");
    assert_eq!((checks("argon2"), checks("cache")), (6.0, 7.0));
    // Reset to another password: the old one is refused at once, on every protocol.
    reset("Seconda-Password-2026");
    let r = logins(&s, &owner, "Prima-Password-2026");
    assert!(["imap", "pop3", "smtp"].iter().all(|p| r[p] != "ok"), "{r}");
    let r = logins(&s, &owner, "Seconda-Password-2026");
    assert!(all_ok(&r), "{r}");
    assert_eq!((checks("argon2"), checks("cache")), (11.0, 9.0));
}

/// The cache's one safeguard that does not rely on this process hearing of a change: a
/// remembered login counts only while the stored hash is the one it was checked against
/// (a password changed by another node of a PostgreSQL deployment, or in the store
/// directly, as here); a mailbox deleted has none. With `login_cache_secs = 0` nothing
/// is remembered. Logins with the same password arriving together take turns: one argon2
/// run for all of them.
#[test]
fn a_remembered_login_needs_the_stored_hash_it_was_checked_against() {
    use pecd::pec::address::{Domain, PecAddress};
    use pecd::store::NewMailbox;
    use pecd::store::mailbox::{Password, PasswordCheck};

    for cache_secs in [600, 0] {
        let dir = tempfile::tempdir().unwrap();
        let domain = Domain::parse(DOMAIN).unwrap();
        let init = pecd::pki::init_dir(dir.path(), &domain, None, false).unwrap();
        let text = std::fs::read_to_string(&init.config).unwrap().replace(
            "[limits]\n",
            &format!("[limits]\nlogin_cache_secs = {cache_secs}\n"),
        );
        std::fs::write(&init.config, text).unwrap();
        let config = pecd::config::Config::load(&init.config).unwrap();
        let gw = pecd::gateway::Gateway::open(config, pecd::clock::system()).unwrap();
        let a = PecAddress::parse(&format!("rossi@{DOMAIN}")).unwrap();
        gw.store
            .add_mailbox(NewMailbox {
                address: a.clone(),
                password: Password::new("Prima-Password-2026"),
                quota_bytes: None,
                options: Default::default(),
                provisional: false,
            })
            .unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let check = |pw: &str| rt.block_on(gw.check_password(a.clone(), pw.to_string()));
        // This process's counters (the only test here that checks passwords in-process).
        let counted = |how: &str| {
            let text = rt.block_on(pecd::ops::metrics::render(&gw));
            let series = format!("pecd_password_checks_total{{how=\"{how}\"}}");
            common::metric_sample(&text, &series).unwrap_or(0.0)
        };
        let hits = || counted("cache");
        // Eight clients of the mailbox logging in at once (after a restart): with the cache
        // they take turns, one argon2 run and seven answers from it; the same for eight
        // with the same wrong password (each still a failed login for the lockout).
        for (pw, want) in [
            ("Prima-Password-2026", PasswordCheck::Valid),
            ("Sbagliata-2026", PasswordCheck::Wrong),
        ] {
            let (hits_before, runs_before) = (hits(), counted("argon2"));
            let together = rt.block_on(async {
                let logins = (0..8).map(|_| {
                    let (gw, a) = (gw.clone(), a.clone());
                    tokio::spawn(async move { gw.check_password(a, pw.into()).await })
                });
                let mut answers = Vec::new();
                for l in logins.collect::<Vec<_>>() {
                    answers.push(l.await.unwrap());
                }
                answers
            });
            assert!(together.iter().all(|c| *c == Some(want)), "{together:?}");
            let (runs, answered) = if cache_secs > 0 {
                (1.0, 7.0)
            } else {
                (8.0, 0.0)
            };
            assert_eq!(
                (counted("argon2") - runs_before, hits() - hits_before),
                (runs, answered),
                "{pw}"
            );
        }
        // Remembered from then on (the cache's answer counted, when on).
        assert_eq!(check("Prima-Password-2026"), Some(PasswordCheck::Valid));
        let hits_before = hits();
        assert_eq!(check("Sbagliata-2026"), Some(PasswordCheck::Wrong));
        assert_eq!(
            gw.verified.len(),
            usize::from(cache_secs > 0),
            "only the right one"
        );
        // Changed in the store, not through this gateway (which never hears of it).
        gw.store
            .set_password(&a, &Password::new("Seconda-Password-2026"), false)
            .unwrap();
        assert_eq!(check("Prima-Password-2026"), Some(PasswordCheck::Wrong));
        assert_eq!(check("Seconda-Password-2026"), Some(PasswordCheck::Valid));
        assert_eq!(check("Seconda-Password-2026"), Some(PasswordCheck::Valid));
        let expected_hits = if cache_secs > 0 { 1.0 } else { 0.0 };
        assert_eq!(
            hits() - hits_before,
            expected_hits,
            "the second check was the cache's"
        );
        // A provisional reset: never granted from the cache, never remembered.
        gw.store
            .set_password(&a, &Password::new("Seconda-Password-2026"), true)
            .unwrap();
        assert_eq!(
            check("Seconda-Password-2026"),
            Some(PasswordCheck::MustChange)
        );
        gw.store
            .set_password(&a, &Password::new("Terza-Password-2026"), false)
            .unwrap();
        assert_eq!(check("Terza-Password-2026"), Some(PasswordCheck::Valid));
        gw.store.delete_mailbox(&a).unwrap();
        assert_eq!(check("Terza-Password-2026"), Some(PasswordCheck::Wrong));
        assert_eq!(hits() - hits_before, expected_hits, "no other check was");
        if cache_secs == 0 {
            assert!(gw.verified.is_empty());
        }
    }
}
