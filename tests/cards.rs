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

    // Without [cns], nothing can be associated.
    let (card_s, newer_s) = (p(&card), p(&newer));
    refused(
        &s,
        &["mailbox", "cert", "add", &a, &card_s],
        "smart-card login is off",
    );
    s.edit_config(|t| format!("{t}\n[cns]\nca = [\"{ca}\"]\ncrl_dir = \"{crl_dir}\"\n"));

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
