//! pecd on the PostgreSQL metadata backend (`[store] backend = "postgres"`), against a
//! real cluster each test starts in a temporary directory (initdb, pg_ctl on loopback):
//! a provider's whole PEC flow on it, `pecd store migrate` from sled to PostgreSQL and
//! back with identical trace log exports, and PostgreSQL restarted in the middle of a
//! submission load (4xx during the outage, nothing lost or doubled after it).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::postgres::{cluster, on_postgres, psql};
use common::server::{
    Server, digests, exported, migrate, migrate_refused, one_pec_message, second_message_on,
};
use pecd::pec::address::PecAddress;
use pecd::store::{PgOptions, Store, StoreBackend, StoreOptions};

#[test]
fn a_provider_runs_on_postgresql_and_migrates_there_and_back() {
    let Some(pg) = cluster("pecd on PostgreSQL") else {
        return;
    };
    let domain = "pec.trasloco-pg.test";
    let (a, b) = (
        format!("mittente@{domain}"),
        format!("destinatario@{domain}"),
    );
    let mut s = Server::new(domain, &[(a.as_str(), "pw"), (b.as_str(), "pw")]);
    s.enable(&["imaps"]);
    let on_sled = std::fs::read_to_string(s.config()).unwrap();
    let on_pg = on_postgres(&on_sled, &pg, &s.data_dir(), "provider");
    let (sled_config, pg_config) = (
        s.dir.path().join("pecd-sled.toml"),
        s.dir.path().join("pecd-pg.toml"),
    );
    std::fs::write(&sled_config, &on_sled).unwrap();
    std::fs::write(&pg_config, &on_pg).unwrap();
    let digests = |s: &Server| digests(s, &[&a, &b]);

    // On sled: one PEC message, its receipts.
    let (on_sled_digests, sled_export) = one_pec_message(&mut s, &a, &b, (2, 1), None);

    // sled → PostgreSQL: every tree compared, the chain verified on the target.
    let r = migrate(&sled_config, &pg_config, &[]);
    assert!(r["metadata"]["entries"].as_u64().unwrap() > 20, "{r}");
    assert_eq!(r["metadata"]["cleared_earlier_copy"], false, "{r}");
    let records = r["trace_records_verified"].as_u64().unwrap();
    assert!(records >= 5, "{r}");
    assert!(
        psql(&pg, "SELECT count(*) FROM provider.pecd_kv")
            .parse::<u64>()
            .unwrap()
            > 20
    );

    // The provider on PostgreSQL: the same mailboxes, and a second message end to end.
    let (on_pg_digests, pg_export) = second_message_on(
        &mut s,
        &pg_config,
        (&a, &b),
        (&on_sled_digests, &sled_export),
        "PostgreSQL",
    );

    // And back: the old sled store in the same directory is this same store, older; it
    // is overwritten only when asked.
    let err = migrate_refused(&pg_config, &sled_config);
    assert!(err.contains("--replace"), "{err}");
    let r = migrate(&pg_config, &sled_config, &["--replace"]);
    assert_eq!(r["metadata"]["cleared_earlier_copy"], true, "{r}");
    std::fs::copy(&sled_config, s.config()).unwrap();
    assert_eq!(
        exported(&s),
        pg_export,
        "identical exports after the way back"
    );
    s.start();
    assert_eq!(
        digests(&s),
        on_pg_digests,
        "the same messages, from sled again"
    );
    s.stop();

    // A migration into a database holding another store is refused, naming the reason.
    let other = s.dir.path().join("pecd-other.toml");
    std::fs::write(&other, on_postgres(&on_sled, &pg, &s.data_dir(), "altro")).unwrap();
    let stranger = tempfile::tempdir().unwrap();
    let foreign = on_sled.replace(
        "dir = \"data\"",
        &format!("dir = \"{}\"", stranger.path().display()),
    );
    assert_ne!(foreign, on_sled, "the store.dir line was found");
    let foreign_config = s.dir.path().join("pecd-foreign.toml");
    std::fs::write(&foreign_config, &foreign).unwrap();
    // A fresh store of its own in `altro`...
    let out = common::server::pecd(&[
        "mailbox",
        "add",
        &format!("terzo@{domain}"),
        "--password",
        "pw",
        "--keep-password",
        "--config",
        other.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // ...is not overwritten by this one.
    let out = common::server::pecd(&[
        "store",
        "migrate",
        "--config",
        sled_config.to_str().unwrap(),
        "--to",
        other.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already holds another store"), "{err}");
}

#[test]
fn postgresql_restarted_under_load_loses_and_doubles_nothing() {
    let Some(pg) = cluster("PostgreSQL restarted under load") else {
        return;
    };
    let domain = "pec.riavvio-pg.test";
    let (a, b) = (
        format!("mittente@{domain}"),
        format!("destinatario@{domain}"),
    );
    let mut s = Server::new(domain, &[]);
    let data = s.data_dir();
    s.edit_config(|t| on_postgres(&t, &pg, &data, "carico"));
    s.admin(&["mailbox", "add", &a, "--password", "pw", "--keep-password"]);
    s.admin(&["mailbox", "add", &b, "--password", "pw", "--keep-password"]);
    s.start();
    let (smtps, ca) = (s.addr("smtps"), s.ca());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let stop_at = Instant::now() + Duration::from_secs(9);
    // Four clients submit one message after another until `stop_at`.
    let load = (0..4u32).map(|c| {
        let (a, b, ca) = (a.clone(), b.clone(), ca.clone());
        rt.spawn(async move {
            let mut results = Vec::new();
            for n in 0u32.. {
                if Instant::now() >= stop_at {
                    break;
                }
                let subject = format!("Carico {c}-{n}");
                let msg = format!(
                    "From: <{a}>\r\nTo: <{b}>\r\nSubject: {subject}\r\nMessage-ID: <carico-{c}-{n}@mua.test>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0100\r\n\r\nCiao.\r\n"
                );
                let r = common::smtp::try_submit(smtps, &ca, &a, "pw", &[&b], msg.as_bytes()).await;
                results.push((subject, r));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            results
        })
    });
    let load: Vec<_> = load.collect();
    std::thread::sleep(Duration::from_secs(2));
    pg.stop().unwrap();
    std::thread::sleep(Duration::from_secs(1));
    // The operator sees it: not ready, the database down.
    let (code, body) = common::admin_get(s.addr("admin"), "/readyz");
    assert!(code == 503 && body.contains("database"), "{code} {body}");
    let (_, metrics) = common::admin_get(s.addr("admin"), "/metrics");
    assert!(
        metrics.contains("pecd_dependency_up{name=\"postgres\"} 0"),
        "{metrics}"
    );
    std::thread::sleep(Duration::from_secs(2));
    pg.restart().unwrap();
    let (code, body) = common::admin_get(s.addr("admin"), "/readyz");
    assert_eq!(code, 200, "{body}");
    let (_, metrics) = common::admin_get(s.addr("admin"), "/metrics");
    assert!(metrics.contains("pecd_dependency_up{name=\"postgres\"} 1"));
    let mut results = Vec::new();
    for h in load {
        results.extend(rt.block_on(h).unwrap());
    }
    // Every answer is a 250 or a temporary failure: never a permanent refusal, never a
    // dropped connection.
    let (mut ok, mut temporary) = (Vec::new(), 0);
    for (subject, r) in &results {
        match r {
            Ok((250, _)) => ok.push(subject.clone()),
            Ok((code, text)) | Err((_, (code, text))) if (400..500).contains(code) => {
                temporary += 1;
                let _ = text;
            }
            other => panic!("{subject}: {other:?}"),
        }
    }
    assert!(temporary > 0, "the outage was seen by the clients");
    assert!(ok.len() > 10, "messages were accepted: {}", ok.len());
    let last_ok = results
        .iter()
        .rposition(|(_, r)| matches!(r, Ok((250, _))))
        .unwrap();
    assert!(
        results[..=last_ok].len() > temporary,
        "messages were accepted after the restart"
    );
    // Everything accepted is delivered (envelope at b; acceptance and delivery receipts
    // at a), each exactly once.
    common::delivery::wait_for_all(&s, &a, &b, ok.len() as u64);
    s.stop();
    let store = Store::open(
        &data,
        StoreOptions {
            backend: StoreBackend::Postgres(PgOptions {
                url: format!("{} options=-csearch_path=carico", pg.url()),
                password: None,
                pool_size: 2,
                ca_file: None,
                several_writers: false,
            }),
            lock_wait: Duration::from_secs(10),
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let subjects = |who: &str| -> BTreeMap<String, u32> {
        let mut out = BTreeMap::new();
        for m in store
            .messages(&PecAddress::parse(who).unwrap(), "INBOX")
            .unwrap()
        {
            let body = store.blobs().read(&m.blob).unwrap();
            let text = String::from_utf8_lossy(&body);
            let subject = text
                .lines()
                .find_map(|l| l.strip_prefix("Subject: "))
                .unwrap_or("")
                .to_string();
            *out.entry(subject).or_default() += 1;
        }
        out
    };
    let (at_a, at_b) = (subjects(&a), subjects(&b));
    common::delivery::assert_each_once(&ok, &at_a, &at_b);
    let report = store.trace().verify(None).unwrap();
    assert!(report.intact(), "{:?}", report.problem);
    eprintln!(
        "PostgreSQL restarted under load: {} submissions, {} accepted, {temporary} temporary failures; chain of {} records intact",
        results.len(),
        ok.len(),
        report.records
    );
}

#[test]
fn the_store_reaches_postgresql_over_tls_checking_its_certificate() {
    let Some(pg) = cluster("PostgreSQL over TLS") else {
        return;
    };
    // A server certificate for 127.0.0.1 from a development CA of the test's own.
    let pki = tempfile::tempdir().unwrap();
    let domain = pecd::pec::address::Domain::parse("db.test").unwrap();
    pecd::pki::generate_dev_pki(pki.path(), &domain, "Test PostgreSQL", false).expect("PKI");
    pg.require_tls(&pki.path().join("tls.pem"), &pki.path().join("tls.key"))
        .unwrap();
    let url = pg.url().replace("sslmode=disable", "sslmode=require");
    let open = |url: &str, ca_file: Option<std::path::PathBuf>| {
        let dir = tempfile::tempdir().unwrap();
        let r = Store::open(
            dir.path(),
            StoreOptions {
                backend: StoreBackend::Postgres(PgOptions {
                    url: url.into(),
                    password: None,
                    pool_size: 2,
                    ca_file,
                    several_writers: false,
                }),
                ..StoreOptions::default()
            },
        );
        (dir, r)
    };

    // In clear: refused by the server (hostssl only), so a success below was TLS.
    let (_d, r) = open(&pg.url(), None);
    let e = r.expect_err("a connection in clear is refused").to_string();
    assert!(e.contains("no encryption") || e.contains("pg_hba"), "{e}");
    // TLS without the CA that signed the server's certificate: refused by pecd.
    let (_d, r) = open(&url, None);
    let e = r
        .expect_err("an unknown certificate is refused")
        .to_string();
    assert!(e.contains("certificate verify failed"), "{e}");
    // With ca_file: a store on it, a mailbox written and read back.
    let (_d, r) = open(&url, Some(pki.path().join("ca.pem")));
    let store = r.expect("the store over TLS");
    let who = PecAddress::parse("cifrato@pec.tls-pg.test").unwrap();
    store
        .add_mailbox(pecd::store::NewMailbox {
            address: who.clone(),
            password: pecd::store::mailbox::Password::new("pw".to_string()),
            quota_bytes: None,
            options: Default::default(),
            provisional: false,
        })
        .unwrap();
    assert!(store.mailbox(&who).unwrap().is_some());
    let encrypted: u32 = psql(
        &pg,
        "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.application_name LIKE 'pecd %' AND s.ssl",
    )
    .parse()
    .unwrap();
    assert!(encrypted >= 1, "pecd's connections are encrypted");
}

#[test]
fn a_commit_whose_answer_is_lost_is_known_committed_and_not_failed() {
    let Some(pg) = cluster("a lost answer to COMMIT") else {
        return;
    };
    let cutter = common::postgres::CommitCutter::start(&pg);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        dir.path(),
        StoreOptions {
            backend: StoreBackend::Postgres(PgOptions {
                url: cutter.url(&pg),
                password: None,
                pool_size: 2,
                ca_file: None,
                several_writers: false,
            }),
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let add = |who: &str| {
        store.add_mailbox(pecd::store::NewMailbox {
            address: PecAddress::parse(who).unwrap(),
            password: pecd::store::mailbox::Password::new("pw".to_string()),
            quota_bytes: None,
            options: Default::default(),
            provisional: false,
        })
    };
    add("prima@pec.commit-perso.test").unwrap();
    // The answer to this one's COMMIT never arrives: the store asks the server, which
    // committed it, and says so, instead of a failure the caller would retry as a
    // second mailbox (here refused as existing; for mail, a second message).
    cutter.arm();
    let r = add("seconda@pec.commit-perso.test");
    assert_eq!(cutter.cuts(), 1, "the COMMIT's connection was cut");
    r.expect("the group was committed: not reported as failed");
    // The store goes on (its writer connects again) and the chain holds both.
    add("terza@pec.commit-perso.test").unwrap();
    let names: Vec<String> = store
        .list_mailboxes()
        .unwrap()
        .iter()
        .map(|m| m.address.to_string())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    let report = store.trace().verify(None).unwrap();
    assert!(report.intact(), "{:?}", report.problem);
}
