//! Relaying through the durable queue: to another provider over SMTP with STARTTLS required
//! and verified (partial refusals, a process killed between the 250 and the relay), to an
//! ordinary mail server with opportunistic TLS, the 24 h give-up measured from acceptance
//! on a manual clock, and 8BITMIME. The peer is a small independent SMTP receiver
//! (tests/clients/smtp_sink.py) using a certificate of another dev PKI, trusted through
//! `[relay] trusted_ca`.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::server::{Server, pecd};
use common::sink::Sink;
use jiff::SignedDuration;
use pecd::clock::{Clock, ManualClock};
use pecd::config::Config;
use pecd::gateway::Gateway;
use pecd::pec::address::{Domain, PecAddress};
use pecd::pec::classify::classify;
use pecd::pec::daticert::{Daticert, Tipo, TipoDestinatario};
use pecd::pec::smime::TrustAnchors;
use pecd::pipeline::{access, delivery, relay, timers};
use pecd::smtp::client;
use pecd::smtp::session::Envelope;
use pecd::store::mailbox::Password;
use pecd::store::{NewMailbox, Store, StoreOptions};
use pecd::trace::{EventKind, TraceQuery};

fn provider_a(peer_pki: &Path, port: u16) -> Server {
    let srv = Server::new("pec.alfa.test", &[("a@pec.alfa.test", "pw-a")]);
    let peer_ca = peer_pki.join("certs/ca.pem");
    srv.edit_config(|t| {
        t.replace(
            "[routes]\n",
            &format!("[routes]\n\"pec.beta.test\" = \"127.0.0.1:{port}\"\n"),
        )
        .replace(
            "trusted_ca = [\"certs/ca.pem\"]",
            &format!(
                "trusted_ca = [\"certs/ca.pem\", {:?}]",
                peer_ca.display().to_string()
            ),
        )
    });
    // beta is a PEC provider: in the index, so the relay requires and verifies TLS.
    import_index(peer_pki, &srv.config());
    srv
}

/// Imports the index entry exported by the provider configured in `peer_dir` into the
/// config `into`: its domain becomes a PEC domain (certified recipients, verified TLS).
fn import_index(peer_dir: &Path, into: &Path) {
    let ldif = peer_dir.join("peer.ldif");
    let e = pecd(&[
        "index",
        "export",
        "--config",
        peer_dir.join("pecd.toml").to_str().unwrap(),
        "--out",
        ldif.to_str().unwrap(),
    ]);
    assert!(e.status.success(), "{}", String::from_utf8_lossy(&e.stderr));
    let i = pecd(&[
        "index",
        "import",
        ldif.to_str().unwrap(),
        "--config",
        into.to_str().unwrap(),
    ]);
    assert!(i.status.success(), "{}", String::from_utf8_lossy(&i.stderr));
}

fn peer_pki() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let out = pecd(&[
        "init",
        "--dir",
        d.path().to_str().unwrap(),
        "--domain",
        "pec.beta.test",
    ]);
    assert!(out.status.success());
    d
}

fn have_python() -> bool {
    let ok = Command::new("python3").arg("--version").output().is_ok();
    if !ok {
        common::skip("python3 is not installed");
    }
    ok
}

#[test]
fn relays_signed_envelope_with_starttls_and_records_refusals() {
    if !have_python() {
        return;
    }
    let beta = peer_pki();
    let sink = Sink::start(beta.path(), 0.0);
    let mut a = provider_a(beta.path(), sink.port);
    a.start();
    let r = a.smtp(
        "send",
        &[
            "a@pec.alfa.test",
            "pw-a",
            "x@pec.beta.test,reject1@pec.beta.test",
            "-",
            "Verso beta",
            "-",
        ],
    );
    assert_eq!(r["refused"].as_array().unwrap().len(), 0, "{r}");
    let msgs = sink.wait_for(1);
    a.stop();

    assert!(sink.meta(&msgs[0]).contains("tls=1"), "over STARTTLS");
    let env = std::fs::read(msgs[0].with_extension("env")).unwrap();
    let env = String::from_utf8(env).unwrap();
    assert_eq!(
        env.lines().collect::<Vec<_>>(),
        vec!["a@pec.alfa.test", "x@pec.beta.test"],
        "original reverse/forward paths"
    );
    let bytes = std::fs::read(&msgs[0]).unwrap();
    let trust = TrustAnchors::from_pem(&std::fs::read(a.ca()).unwrap()).unwrap();
    let rep = pecd::report::verify(&bytes, Some(&trust)).unwrap();
    assert_eq!(rep.kind, "transport-envelope");
    assert!(rep.ok, "{:?}", rep.reasons);
    if common::have("openssl", "openssl cms -verify") {
        let (ok, err) = common::openssl_verify(&bytes, &a.ca());
        assert!(ok, "{err}");
    }
    let out = a.admin(&["log", "--json"]);
    assert!(out.contains("Relayed"), "{out}");
    assert!(
        out.contains("RelayFailed") && out.contains("reject1@pec.beta.test"),
        "{out}"
    );
}

#[test]
fn nothing_is_lost_when_killed_between_250_and_relay() {
    if !have_python() {
        return;
    }
    let beta = peer_pki();
    // The peer is slow to greet: the relay is in flight when the process is killed.
    let sink = Sink::start(beta.path(), 3.0);
    let mut a = provider_a(beta.path(), sink.port);
    a.start();
    let r = a.smtp(
        "send",
        &[
            "a@pec.alfa.test",
            "pw-a",
            "y@pec.beta.test",
            "-",
            "Sopravvivo",
            "-",
        ],
    );
    assert_eq!(r["refused"].as_array().unwrap().len(), 0, "{r}");
    a.kill();
    assert!(
        sink.messages().is_empty(),
        "nothing relayed before the kill"
    );

    a.start();
    let msgs = sink.wait_for(1);
    a.stop();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sink.messages().len(), 1, "relayed exactly once: {msgs:?}");

    let store = Store::open(a.data_dir(), StoreOptions::default()).unwrap();
    let inbox = store
        .messages(&PecAddress::parse("a@pec.alfa.test").unwrap(), "INBOX")
        .unwrap();
    assert_eq!(
        inbox.len(),
        1,
        "one acceptance receipt, not repeated by the restart"
    );
    assert_eq!(store.queue_len().unwrap(), 0, "the queue is empty");
}

/// Provider alfa as a library gateway on a manual clock: `routes` pins domains to sink
/// ports, the peer PKI's CA is trusted, and beta's index entry is imported when `beta_pec`.
struct Lib {
    _dir: tempfile::TempDir,
    gw: Arc<Gateway>,
    clock: Arc<ManualClock>,
    tls: relay::RelayTls,
}

const T0: &str = "2026-11-23T09:00:00Z";

fn lib_gateway(peer: &Path, routes: &[(&str, u16)], beta_pec: bool) -> Lib {
    lib_gateway_with(peer, routes, beta_pec, "")
}

/// [`lib_gateway`] with `relay` (lines of TOML) added to its `[relay]` section.
fn lib_gateway_with(peer: &Path, routes: &[(&str, u16)], beta_pec: bool, relay: &str) -> Lib {
    let dir = tempfile::tempdir().unwrap();
    let domain = Domain::parse("pec.alfa.test").unwrap();
    let report = pecd::pki::init_dir(dir.path(), &domain, None, false).unwrap();
    let text = std::fs::read_to_string(&report.config).unwrap();
    let mut pinned = String::from("[routes]\n");
    for (d, port) in routes {
        pinned.push_str(&format!("\"{d}\" = \"127.0.0.1:{port}\"\n"));
    }
    let text = text.replacen("[routes]\n", &pinned, 1).replacen(
        "trusted_ca = [\"certs/ca.pem\"]",
        &format!(
            "trusted_ca = [\"certs/ca.pem\", {:?}]\n{relay}",
            peer.join("certs/ca.pem").display().to_string()
        ),
        1,
    );
    std::fs::write(&report.config, text).unwrap();
    if beta_pec {
        import_index(peer, &report.config);
    }
    let clock = Arc::new(ManualClock::new(T0.parse().unwrap()));
    let gw = Gateway::open(Config::load(&report.config).unwrap(), clock.clone()).unwrap();
    for u in ["a", "posta-certificata"] {
        gw.store
            .add_mailbox(NewMailbox {
                address: PecAddress::parse(&format!("{u}@pec.alfa.test")).unwrap(),
                password: Password::new("pw"),
                quota_bytes: None,
                options: Default::default(),
                provisional: false,
            })
            .unwrap();
    }
    let tls = relay::RelayTls::from_gateway(&gw).unwrap();
    Lib {
        _dir: dir,
        gw,
        clock,
        tls,
    }
}

impl Lib {
    /// Submits a message from a@pec.alfa.test; returns the acceptance receipt's daticert.
    async fn submit(&self, rcpts: &[&str], body: &str) -> Daticert {
        let data = format!(
            "From: a@pec.alfa.test\r\nTo: {}\r\nSubject: Prova\r\nMessage-ID: <r-{}@mua>\r\n\r\n{body}\r\n",
            rcpts.join(", "),
            self.gw.store.queue_len().unwrap()
        );
        let env = Envelope {
            mail_from: "a@pec.alfa.test".into(),
            rcpt_to: rcpts.iter().map(|r| r.to_string()).collect(),
            data: data.into_bytes(),
            authenticated: Some("a@pec.alfa.test".into()),
            helo: "t".into(),
            tls: true,
        };
        let r = access::submit(&self.gw, env).await.unwrap();
        assert_eq!(r.code, 250, "{r:?}");
        let a = PecAddress::parse("a@pec.alfa.test").unwrap();
        let last = self.gw.store.messages(&a, "INBOX").unwrap().pop().unwrap();
        let bytes = self.gw.store.blobs().read(&last.blob).unwrap();
        let d = classify(&bytes).unwrap().daticert.unwrap().unwrap();
        assert_eq!(d.tipo, Tipo::Accettazione);
        d
    }

    fn trace(&self, ident: &str) -> Vec<(EventKind, Vec<String>, String)> {
        let q = TraceQuery {
            ident: Some(ident.to_string()),
            ..Default::default()
        };
        self.gw
            .store
            .trace()
            .query(&q)
            .unwrap()
            .into_iter()
            .map(|r| (r.kind, r.recipients, r.detail.unwrap_or_default()))
            .collect()
    }

    fn at(&self, hours: i64, secs: i64) {
        let t0: jiff::Timestamp = T0.parse().unwrap();
        self.clock
            .set(t0 + SignedDuration::from_hours(hours) + SignedDuration::from_secs(secs));
    }
}

fn tipo_of(d: &Daticert, rcpt: &str) -> TipoDestinatario {
    d.destinatari
        .iter()
        .find(|x| x.address.eq_ignore_ascii_case(rcpt))
        .unwrap_or_else(|| panic!("{rcpt} not in {:?}", d.destinatari))
        .tipo
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordinary_mail_reaches_a_server_without_starttls() {
    if !have_python() {
        return;
    }
    let beta = peer_pki();
    let sink = Sink::start_with(beta.path(), 0.0, &[("SINK_STARTTLS", "0")]);
    let lib = lib_gateway(beta.path(), &[("mail.example.org", sink.port)], false);
    let d = lib.submit(&["x@mail.example.org"], "ciao").await;
    assert_eq!(tipo_of(&d, "x@mail.example.org"), TipoDestinatario::Esterno);
    assert!(
        lib.gw
            .store
            .pending(&d.identificativo, "x@mail.example.org")
            .unwrap()
            .is_none(),
        "no 12/24 h deadline for an esterno recipient (rule §6.5)"
    );
    assert!(relay::pass(&lib.gw, &lib.tls).await);
    let msgs = sink.wait_for(1);
    let env = std::fs::read_to_string(msgs[0].with_extension("env")).unwrap();
    assert_eq!(
        env.lines().collect::<Vec<_>>(),
        vec!["a@pec.alfa.test", "x@mail.example.org"]
    );
    assert!(
        sink.meta(&msgs[0]).contains("tls=0"),
        "clear text: not offered"
    );
    assert_eq!(lib.gw.store.queue_len().unwrap(), 0);
    // Nothing more to the sender than the acceptance: no timeout notices, ever.
    lib.at(25, 0);
    assert_eq!(timers::tick(&lib.gw).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordinary_mail_uses_starttls_when_offered_even_with_an_unknown_certificate() {
    if !have_python() {
        return;
    }
    // The sink's certificate is from a CA alfa does not trust (a fresh PKI).
    let stranger = peer_pki();
    let beta = peer_pki();
    let sink = Sink::start(stranger.path(), 0.0);
    let lib = lib_gateway(beta.path(), &[("mail.example.org", sink.port)], false);
    lib.submit(&["x@mail.example.org"], "ciao").await;
    assert!(relay::pass(&lib.gw, &lib.tls).await);
    let msgs = sink.wait_for(1);
    assert!(
        sink.meta(&msgs[0]).contains("tls=1"),
        "opportunistic STARTTLS"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordinary_mail_falls_back_to_clear_text_when_the_handshake_fails() {
    if !have_python() {
        return;
    }
    let beta = peer_pki();
    let sink = Sink::start_with(beta.path(), 0.0, &[("SINK_BROKEN_TLS", "1")]);
    let lib = lib_gateway(beta.path(), &[("mail.example.org", sink.port)], false);
    lib.submit(&["x@mail.example.org"], "ciao").await;
    assert!(relay::pass(&lib.gw, &lib.tls).await);
    let msgs = sink.wait_for(1);
    assert!(sink.meta(&msgs[0]).contains("tls=0"), "RFC 7435 fallback");
    assert_eq!(lib.gw.store.queue_len().unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pec_peer_without_starttls_is_refused_and_the_timers_speak() {
    if !have_python() {
        return;
    }
    let beta = peer_pki();
    let sink = Sink::start_with(beta.path(), 0.0, &[("SINK_STARTTLS", "0")]);
    let lib = lib_gateway(beta.path(), &[("pec.beta.test", sink.port)], true);
    let d = lib.submit(&["x@pec.beta.test"], "ciao").await;
    assert_eq!(
        tipo_of(&d, "x@pec.beta.test"),
        TipoDestinatario::Certificato
    );
    assert!(relay::pass(&lib.gw, &lib.tls).await);
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        sink.messages().is_empty(),
        "never in clear text between providers"
    );
    assert_eq!(
        lib.gw.store.queue_len().unwrap(),
        0,
        "a permanent failure: not retried"
    );
    let t = lib.trace(&d.identificativo);
    assert!(
        t.iter().any(|(k, r, why)| *k == EventKind::RelayFailed
            && r == &vec!["x@pec.beta.test".to_string()]
            && why.contains("STARTTLS")),
        "{t:?}"
    );
    // Rule §6.4/§4.11: the sender's provider issues no non-delivery notice of its own;
    // the deadlines stay armed and both timeout notices follow.
    assert!(
        lib.gw
            .store
            .pending(&d.identificativo, "x@pec.beta.test")
            .unwrap()
            .is_some()
    );
    lib.at(24, 1);
    assert_eq!(timers::tick(&lib.gw).await.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gives_up_24_hours_after_acceptance_despite_a_partial_delivery() {
    if !have_python() {
        return;
    }
    let beta = peer_pki();
    let sink = Sink::start(beta.path(), 0.0);
    let lib = lib_gateway(beta.path(), &[("pec.beta.test", sink.port)], true);
    let d = lib
        .submit(&["x@pec.beta.test", "later1@pec.beta.test"], "ciao")
        .await;
    assert!(relay::pass(&lib.gw, &lib.tls).await);
    let msgs = sink.wait_for(1);
    assert!(sink.meta(&msgs[0]).contains("tls=1"));
    let due = |lib: &Lib| {
        lib.gw
            .store
            .queue_due(lib.clock.now() + SignedDuration::from_hours(48), 10)
            .unwrap()
    };
    let q = due(&lib);
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].rcpt_to, vec!["later1@pec.beta.test".to_string()]);
    assert_eq!(
        q[0].attempts, 1,
        "the partial delivery counts as an attempt"
    );
    assert_eq!(q[0].accepted_at, Some(T0.parse().unwrap()));
    // Retries come and go; at 23:59 the item is still queued...
    lib.at(23, 3540);
    assert!(relay::pass(&lib.gw, &lib.tls).await);
    let q = due(&lib);
    assert_eq!(q.len(), 1);
    assert!(
        q[0].next_attempt
            <= T0.parse::<jiff::Timestamp>().unwrap() + SignedDuration::from_hours(24),
        "the next attempt is not later than the give-up instant"
    );
    // ...and at 24 h it is given up, not a minute later.
    lib.at(24, 0);
    assert!(relay::pass(&lib.gw, &lib.tls).await);
    assert_eq!(lib.gw.store.queue_len().unwrap(), 0);
    let t = lib.trace(&d.identificativo);
    assert!(
        t.iter().any(|(k, r, why)| *k == EventKind::RelayFailed
            && r == &vec!["later1@pec.beta.test".to_string()]
            && why.contains("given up after 24 hours")),
        "{t:?}"
    );
    assert_eq!(sink.messages().len(), 1, "x got it once, later1 never");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_bit_data_needs_8bitmime() {
    if !have_python() {
        return;
    }
    let beta = peer_pki();
    let tls = client::opportunistic_tls().unwrap();
    let data = "From: a@pec.alfa.test\r\nTo: x@mail.example.org\r\nSubject: accenti\r\n\r\nperché così\r\n";
    let rcpt = vec!["x@mail.example.org".to_string()];
    let msg = client::Outgoing {
        helo: "pec.alfa.test",
        mail_from: "a@pec.alfa.test",
        rcpt_to: &rcpt,
        data: data.as_bytes(),
    };
    let peer = |port| client::Peer {
        host: "127.0.0.1".into(),
        port,
        tls_name: "127.0.0.1".into(),
        tls: tls.clone(),
        timeout: Duration::from_secs(10),
    };

    let with = Sink::start(beta.path(), 0.0);
    let r = client::send_with(&peer(with.port), &msg, client::TlsPolicy::Opportunistic)
        .await
        .unwrap();
    assert_eq!(r[0].1, client::RcptOutcome::Accepted);
    let msgs = with.wait_for(1);
    assert!(with.meta(&msgs[0]).contains("params=BODY=8BITMIME"));

    let without = Sink::start_with(beta.path(), 0.0, &[("SINK_8BITMIME", "0")]);
    let e = client::send_with(&peer(without.port), &msg, client::TlsPolicy::Opportunistic)
        .await
        .unwrap_err();
    assert!(matches!(e, client::ClientError::No8BitMime), "{e}");
    assert!(
        !e.is_temporary(),
        "RFC 6152: not sent, reported as a failure"
    );
    assert!(without.messages().is_empty());

    // 7-bit data goes without the parameter, to either.
    let ascii = client::Outgoing {
        data: b"Subject: a\r\n\r\nplain\r\n",
        ..msg.clone()
    };
    client::send_with(
        &peer(without.port),
        &ascii,
        client::TlsPolicy::Opportunistic,
    )
    .await
    .unwrap();
    let msgs = without.wait_for(1);
    assert!(without.meta(&msgs[0]).contains("params=\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_delivery_is_not_starved_by_remote_retries() {
    let beta = peer_pki();
    // A peer that is down: nothing listens on port 1.
    let lib = lib_gateway(beta.path(), &[("down.example", 1)], false);
    let now = lib.clock.now();
    let blob = lib.gw.store.blobs().put(b"stuck").unwrap();
    let mut batch = pecd::store::Batch::new();
    for i in 0..100 {
        batch = batch.enqueue(pecd::store::NewQueueItem {
            domain: Domain::parse("down.example").unwrap(),
            mail_from: "a@pec.alfa.test".into(),
            rcpt_to: vec![format!("u{i}@down.example")],
            blob: blob.clone(),
            ident: None,
            next_attempt: now,
        });
    }
    lib.gw.store.commit(batch).unwrap();
    lib.clock.set(now + SignedDuration::from_secs(1));
    // A message to our own domain, queued after the whole remote backlog.
    lib.submit(&["a@pec.alfa.test"], "a me").await;
    assert!(
        delivery::pass(&lib.gw).await,
        "the local worker finds its item"
    );
    let a = PecAddress::parse("a@pec.alfa.test").unwrap();
    let kinds: Vec<pecd::pec::classify::Kind> = lib
        .gw
        .store
        .messages(&a, "INBOX")
        .unwrap()
        .into_iter()
        .map(|m| {
            let bytes = lib.gw.store.blobs().read(&m.blob).unwrap();
            classify(&bytes).unwrap().kind
        })
        .collect();
    assert!(
        kinds.contains(&pecd::pec::classify::Kind::TransportEnvelope),
        "delivered to the local mailbox: {kinds:?}"
    );
    assert_eq!(
        lib.gw.store.queue_len().unwrap(),
        100,
        "only the remote backlog is left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordinary_mail_goes_on_in_clear_when_starttls_is_refused() {
    if !have_python() {
        return;
    }
    let beta = peer_pki();
    // Offers STARTTLS, then answers the command with 454.
    let sink = Sink::start_with(beta.path(), 0.0, &[("SINK_REFUSE_TLS", "1")]);
    let lib = lib_gateway(beta.path(), &[("mail.example.org", sink.port)], false);
    lib.submit(&["x@mail.example.org"], "ciao").await;
    assert!(relay::pass(&lib.gw, &lib.tls).await);
    let msgs = sink.wait_for(1);
    assert!(
        sink.meta(&msgs[0]).contains("tls=0"),
        "RFC 7435: clear text on the same session"
    );
    assert_eq!(
        lib.gw.store.queue_len().unwrap(),
        0,
        "delivered, not retried"
    );

    // Between PEC providers the same refusal never means clear text.
    let rcpt = vec!["x@pec.beta.test".to_string()];
    let msg = client::Outgoing {
        helo: "pec.alfa.test",
        mail_from: "a@pec.alfa.test",
        rcpt_to: &rcpt,
        data: b"Subject: a\r\n\r\nplain\r\n",
    };
    let peer = client::Peer {
        host: "127.0.0.1".into(),
        port: sink.port,
        tls_name: "127.0.0.1".into(),
        tls: pecd::tls::client_config(&[beta.path().join("certs/ca.pem")], false).unwrap(),
        timeout: Duration::from_secs(10),
    };
    let e = client::send(&peer, &msg).await.unwrap_err();
    assert!(
        matches!(e, client::ClientError::Reply { code: 454, .. }),
        "{e}"
    );
    assert!(e.is_temporary());
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(sink.messages().len(), 1, "nothing sent in clear");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_specific_refusal_moves_on_to_the_next_mx() {
    if !have_python() {
        return;
    }
    let beta = peer_pki();
    let no8bit = Sink::start_with(beta.path(), 0.0, &[("SINK_8BITMIME", "0")]);
    let no8bit2 = Sink::start_with(beta.path(), 0.0, &[("SINK_8BITMIME", "0")]);
    let clear = Sink::start_with(beta.path(), 0.0, &[("SINK_STARTTLS", "0")]);
    let good = Sink::start(beta.path(), 0.0);
    let rcpt = vec!["x@pec.beta.test".to_string()];
    let data = "From: a@pec.alfa.test\r\nSubject: accenti\r\n\r\nperché così\r\n";
    let msg = client::Outgoing {
        helo: "pec.alfa.test",
        mail_from: "a@pec.alfa.test",
        rcpt_to: &rcpt,
        data: data.as_bytes(),
    };
    let verified = pecd::tls::client_config(&[beta.path().join("certs/ca.pem")], false).unwrap();
    let peer = |port| client::Peer {
        host: "127.0.0.1".into(),
        port,
        tls_name: "127.0.0.1".into(),
        tls: verified.clone(),
        timeout: Duration::from_secs(10),
    };
    let required = client::TlsPolicy::Required;

    // No 8BITMIME on the first MX, no STARTTLS on the second: the third takes it.
    let r = relay::send_via(
        &[peer(no8bit.port), peer(clear.port), peer(good.port)],
        &msg,
        required,
    )
    .await
    .unwrap();
    assert_eq!(r, vec![(rcpt[0].clone(), client::RcptOutcome::Accepted)]);
    let msgs = good.wait_for(1);
    assert!(good.meta(&msgs[0]).contains("tls=1"));
    assert!(good.meta(&msgs[0]).contains("params=BODY=8BITMIME"));
    assert!(no8bit.messages().is_empty() && clear.messages().is_empty());

    // Every MX refuses for good: permanent, each host's reason kept.
    let e = relay::send_via(
        &[peer(no8bit.port), peer(no8bit2.port), peer(clear.port)],
        &msg,
        required,
    )
    .await
    .unwrap_err();
    assert!(e.permanent, "{e:?}");
    assert!(
        e.error.contains("8BITMIME") && e.error.contains("STARTTLS"),
        "{e:?}"
    );

    // One MX refuses for good, another is down for now: retried later, not given up.
    let e = relay::send_via(&[peer(no8bit.port), peer(1)], &msg, required)
        .await
        .unwrap_err();
    assert!(!e.permanent, "{e:?}");
    assert!(no8bit.messages().is_empty() && no8bit2.messages().is_empty());
}

/// SMTP smuggling on the relay's output (issue #13 item 6): a message whose content holds
/// every end-of-data look-alike that is content (bare-LF variants, a line that is a lone
/// dot, lines starting with dots) reaches the peer as one message, and the DATA on the
/// wire has CR and LF only as CRLF, every leading dot stuffed, and one `<CRLF>.<CRLF>`: at
/// its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayed_data_has_one_end_of_data_and_only_crlf() {
    if !have_python() {
        return;
    }
    let beta = peer_pki();
    let sink = Sink::start_with(beta.path(), 0.0, &[("SINK_STARTTLS", "0")]);
    let lib = lib_gateway(beta.path(), &[("mail.example.org", sink.port)], false);
    let body =
        "one\n.\nMAIL FROM:<x@y>\r\ntwo\n.\r\nthree\r\n.\nfour\r\n.\r\n..five\r\n.six\r\nend";
    lib.submit(&["x@mail.example.org"], body).await;
    assert!(relay::pass(&lib.gw, &lib.tls).await);
    let msgs = sink.wait_for(1);
    let wire = std::fs::read(msgs[0].with_extension("wire")).unwrap();
    for (i, &b) in wire.iter().enumerate() {
        match b {
            b'\r' => assert_eq!(wire.get(i + 1), Some(&b'\n'), "bare CR at {i}"),
            b'\n' => assert!(i > 0 && wire[i - 1] == b'\r', "bare LF at {i}"),
            _ => {}
        }
    }
    let ends = wire.windows(5).filter(|w| *w == b"\r\n.\r\n").count();
    assert_eq!(ends, 1, "{}", String::from_utf8_lossy(&wire));
    assert!(wire.ends_with(b"\r\n.\r\n"));
    // The peer got it whole: the look-alikes are content of the one message.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sink.messages().len(), 1);
    let got = std::fs::read(&msgs[0]).unwrap();
    let got = String::from_utf8_lossy(&got);
    for part in [
        "MAIL FROM:<x@y>",
        "two",
        "three",
        "four",
        "..five",
        ".six",
        "end",
    ] {
        assert!(got.contains(part), "{part:?} missing from {got}");
    }
}

/// A peer that accepts connections and never says a word; the connections it took.
async fn hung_peer() -> (u16, Arc<AtomicUsize>) {
    let hung = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = hung.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = hung.accept().await {
            held.push(s);
            counted.fetch_add(1, Ordering::SeqCst);
        }
    });
    (port, connections)
}

/// A gateway (with `relay` added to its `[relay]` section) routing slow.example.org to a
/// hung peer and mail.example.org to a sink without STARTTLS; the peer PKI it trusts, the
/// sink, the hung peer's connections so far, the gateway.
async fn hung_and_healthy(relay: &str) -> (tempfile::TempDir, Sink, Arc<AtomicUsize>, Lib) {
    let beta = peer_pki();
    let sink = Sink::start_with(beta.path(), 0.0, &[("SINK_STARTTLS", "0")]);
    let (hung_port, connections) = hung_peer().await;
    let routes = [
        ("mail.example.org", sink.port),
        ("slow.example.org", hung_port),
    ];
    let lib = lib_gateway_with(beta.path(), &routes, false, relay);
    (beta, sink, connections, lib)
}

/// Waits (20 s at most) until the hung peer took `n` connections.
async fn connections_reach(connections: &AtomicUsize, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while connections.load(Ordering::SeqCst) < n {
        assert!(
            std::time::Instant::now() < deadline,
            "the worker connects to the hung peer"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Submits three messages to y@mail.example.org.
async fn submit_three(lib: &Lib) {
    for i in 0..3 {
        lib.submit(&["y@mail.example.org"], &format!("messaggio {i}"))
            .await;
    }
}

/// Waits (30 s at most, failing with `why`) until `sink` has three messages.
async fn sink_gets_three(sink: Sink, why: &str) -> Sink {
    let sink_done = tokio::task::spawn_blocking(move || {
        sink.wait_for(3);
        sink
    });
    tokio::time::timeout(Duration::from_secs(30), sink_done)
        .await
        .expect(why)
        .unwrap()
}

/// A peer that hangs (accepts the connection, never greets) holds up only its own
/// transaction: messages to other domains queued after it are relayed at once by the
/// running worker, not after the hung one's command timeout (5 minutes by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_peer_does_not_hold_up_the_rest_of_the_queue() {
    if !have_python() {
        return;
    }
    let (_beta, sink, connections, lib) = hung_and_healthy("").await;
    lib.submit(&["x@slow.example.org"], "al server che non risponde")
        .await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn(relay::run(lib.gw.clone(), stopped));
    connections_reach(&connections, 1).await;
    submit_three(&lib).await;
    let _sink = sink_gets_three(sink, "the other messages are not held up by the hung peer").await;
    // The hung transaction is still in flight: its item is queued, neither done nor failed.
    assert_eq!(lib.gw.store.queue_len().unwrap(), 1);
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), worker).await;
}

/// `[relay]` limits: no more transactions to one domain than `max_transactions_per_domain`
/// (a hung peer gets exactly that many connections, however many of its messages wait),
/// and no more in all than `max_transactions`: with everything queued before the worker
/// starts, the other domain's three messages go out one after the other through the one
/// slot left, on one session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_are_limited_per_domain_and_in_all() {
    if !have_python() {
        return;
    }
    let (_beta, sink, connections, lib) =
        hung_and_healthy("max_transactions = 3\nmax_transactions_per_domain = 2\n").await;
    for i in 0..5 {
        let body = format!("al server che non risponde {i}");
        lib.submit(&["x@slow.example.org"], &body).await;
    }
    submit_three(&lib).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn(relay::run(lib.gw.clone(), stopped));
    let sink = sink_gets_three(
        sink,
        "the other domain's messages go out through the slot left",
    )
    .await;
    let conns: std::collections::BTreeSet<String> = sink
        .messages()
        .iter()
        .map(|m| {
            let meta = sink.meta(m);
            meta.lines()
                .find(|l| l.starts_with("conn="))
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(conns.len(), 1, "{conns:?}");
    // Three more of the hung domain's messages are due all along: still two connections.
    connections_reach(&connections, 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(connections.load(Ordering::SeqCst), 2);
    assert_eq!(lib.gw.store.queue_len().unwrap(), 5);
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), worker).await;
}

/// The relay keeps its session with a peer for the next transaction (one TCP connection,
/// one TLS handshake for several messages), and when the peer has closed the idle
/// session, the next message goes out on a new one instead of failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_reused_and_a_closed_one_is_replaced() {
    if !have_python() {
        return;
    }
    let beta = peer_pki();
    for (closing, env) in [
        (false, vec![]),
        (true, vec![("SINK_CLOSE_AFTER_MESSAGE", "1")]),
    ] {
        let sink = Sink::start_with(beta.path(), 0.0, &env);
        let lib = lib_gateway(beta.path(), &[("pec.beta.test", sink.port)], true);
        for i in 0..3 {
            lib.submit(&["b@pec.beta.test"], &format!("messaggio {i}"))
                .await;
            assert!(relay::pass(&lib.gw, &lib.tls).await);
            assert_eq!(lib.gw.store.queue_len().unwrap(), 0, "relayed at once");
        }
        let msgs = sink.wait_for(3);
        let metas: Vec<String> = msgs.iter().map(|m| sink.meta(m)).collect();
        assert!(metas.iter().all(|m| m.contains("tls=1")), "{metas:?}");
        let conns: std::collections::BTreeSet<&str> = metas
            .iter()
            .map(|m| m.lines().find(|l| l.starts_with("conn=")).unwrap())
            .collect();
        if closing {
            assert_eq!(
                conns.len(),
                3,
                "a new session after each hang-up: {metas:?}"
            );
            assert_eq!(lib.tls.sessions.idle(), 1);
        } else {
            assert_eq!(
                conns.len(),
                1,
                "one session for the three messages: {metas:?}"
            );
            assert_eq!(lib.tls.sessions.idle(), 1);
        }
    }
}

/// RFC 2920 PIPELINING: offered, MAIL, the RCPTs and DATA go in one write and every reply
/// is read in order (a recipient refused among accepted ones; all refused, with DATA
/// refused, or answered 354 by a server that does so: then the lone dot; then RSET, and
/// the session serves the next message); not offered, one command at a time, with the
/// same outcomes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelining_is_used_when_offered_and_every_reply_is_read() {
    if !have_python() {
        return;
    }
    let beta = peer_pki();
    fn peer_of(port: u16, tls: &Arc<rustls::ClientConfig>) -> client::Peer {
        client::Peer {
            host: "127.0.0.1".into(),
            port,
            tls_name: "127.0.0.1".into(),
            tls: tls.clone(),
            timeout: Duration::from_secs(10),
        }
    }
    async fn send(
        (cache, tls): (&client::ConnCache, &Arc<rustls::ClientConfig>),
        port: u16,
        rcpt: &[&str],
        subject: &str,
    ) -> Vec<(String, client::RcptOutcome)> {
        let peer = peer_of(port, tls);
        let rcpt: Vec<String> = rcpt.iter().map(|r| r.to_string()).collect();
        let data = format!("From: a@pec.alfa.test\r\nSubject: {subject}\r\n\r\ncorpo\r\n");
        let msg = client::Outgoing {
            helo: "pec.alfa.test",
            mail_from: "a@pec.alfa.test",
            rcpt_to: &rcpt,
            data: data.as_bytes(),
        };
        client::send_cached(cache, &peer, &msg, client::TlsPolicy::Opportunistic)
            .await
            .unwrap()
    }
    for (offered, data_without_rcpt) in [(true, false), (true, true), (false, false)] {
        let mut env = vec![("SINK_PIPELINING", if offered { "1" } else { "0" })];
        if data_without_rcpt {
            env.push(("SINK_DATA_WITHOUT_RCPT", "1"));
        }
        let sink = Sink::start_with(beta.path(), 0.0, &env);
        let (cache, tls) = (
            client::ConnCache::default(),
            client::opportunistic_tls().unwrap(),
        );
        let cache = (&cache, &tls);
        let r = send(
            cache,
            sink.port,
            &["x@example.org", "reject1@example.org", "later1@example.org"],
            "uno",
        )
        .await;
        assert_eq!(r[0].1, client::RcptOutcome::Accepted, "{r:?}");
        assert!(
            matches!(&r[1].1, client::RcptOutcome::Permanent(t) if t.starts_with("550")),
            "{r:?}"
        );
        assert!(
            matches!(&r[2].1, client::RcptOutcome::Temporary(t) if t.starts_with("451")),
            "{r:?}"
        );
        let msgs = sink.wait_for(1);
        let meta = sink.meta(&msgs[0]);
        assert!(
            meta.contains(&format!("pipelined={}", u8::from(offered))),
            "{meta}"
        );
        let env_file = std::fs::read_to_string(msgs[0].with_extension("env")).unwrap();
        assert_eq!(env_file, "a@pec.alfa.test\nx@example.org\n");
        // Every recipient refused.
        let r = send(cache, sink.port, &["reject2@example.org"], "due").await;
        assert!(
            matches!(&r[0].1, client::RcptOutcome::Permanent(_)),
            "{r:?}"
        );
        // The next message goes out on the same session, whole.
        send(cache, sink.port, &["y@example.org"], "tre").await;
        let msgs = sink.wait_for(if data_without_rcpt { 3 } else { 2 });
        let last = msgs.last().unwrap();
        assert!(
            std::fs::read_to_string(last)
                .unwrap()
                .contains("Subject: tre")
        );
        assert!(sink.meta(last).contains("conn=1"), "{}", sink.meta(last));
        // A refused sender: nothing goes, and the session ends with QUIT answered (the
        // pipelined RCPT and DATA replies read first).
        let refused = client::Outgoing {
            helo: "pec.alfa.test",
            mail_from: "reject@pec.alfa.test",
            rcpt_to: &["z@example.org".to_string()],
            data: b"Subject: no\r\n\r\nno\r\n",
        };
        let e = client::send_cached(
            cache.0,
            &peer_of(sink.port, cache.1),
            &refused,
            client::TlsPolicy::Opportunistic,
        )
        .await
        .unwrap_err();
        assert!(
            matches!(e, client::ClientError::Reply { code: 550, .. }),
            "{e}"
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !sink.quits().contains(&1) {
            assert!(
                std::time::Instant::now() < deadline,
                "no QUIT on the refused session"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            sink.messages().len(),
            msgs.len(),
            "nothing sent for a refused sender"
        );
        if data_without_rcpt {
            // The sink answered DATA 354 with no recipient: the client sent the lone dot
            // (an empty message), not the content.
            let empty = &msgs[1];
            assert_eq!(std::fs::read(empty).unwrap(), b"");
            assert_eq!(
                std::fs::read_to_string(empty.with_extension("env")).unwrap(),
                "a@pec.alfa.test\n\n"
            );
        }
    }
}

/// Stopping the relay worker lets a transaction in flight finish and record its outcome:
/// a message the peer took is not left queued to be sent again at the next start (an
/// ordinary mail server has no duplicate detection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_in_flight_finishes_when_the_worker_stops() {
    if !have_python() {
        return;
    }
    let beta = peer_pki();
    // The peer greets after a second: the transaction is in flight when the stop comes.
    let sink = Sink::start_with(beta.path(), 1.0, &[("SINK_STARTTLS", "0")]);
    let lib = lib_gateway(beta.path(), &[("mail.example.org", sink.port)], false);
    lib.submit(&["x@mail.example.org"], "in volo").await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn(relay::run(lib.gw.clone(), stopped));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(lib.gw.store.queue_len().unwrap(), 1, "still in flight");
    stop.send(true).unwrap();
    tokio::time::timeout(relay::SHUTDOWN_DRAIN + Duration::from_secs(2), worker)
        .await
        .expect("the worker stops within its drain time")
        .unwrap();
    assert_eq!(
        lib.gw.store.queue_len().unwrap(),
        0,
        "its outcome was recorded"
    );
    assert_eq!(sink.messages().len(), 1);
}
