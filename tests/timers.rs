//! The 12 h / 24 h timeout notices (rule §6.4) on a fast clock: the gateway runs with a
//! ManualClock, the access point accepts a message for a certified recipient whose
//! delivery does not happen (the local delivery worker is not running: the receiving side
//! is "down"), and the test moves time forward and runs the timer pass.

use std::sync::Arc;

use jiff::SignedDuration;
use pecd::clock::{Clock, ManualClock};
use pecd::config::Config;
use pecd::gateway::Gateway;
use pecd::pec::address::{Domain, PecAddress};
use pecd::pec::classify::classify;
use pecd::pec::daticert::Tipo;
use pecd::pipeline::{access, delivery, timers};
use pecd::smtp::session::Envelope;
use pecd::store::NewMailbox;
use pecd::store::mailbox::Password;

struct Setup {
    _dir: tempfile::TempDir,
    gw: Arc<Gateway>,
    clock: Arc<ManualClock>,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let domain = Domain::parse("pec.alfa.test").unwrap();
    let report = pecd::pki::init_dir(dir.path(), &domain, None, false).unwrap();
    let clock = Arc::new(ManualClock::new("2026-11-23T09:00:00Z".parse().unwrap()));
    let gw = Gateway::open(Config::load(&report.config).unwrap(), clock.clone()).unwrap();
    for u in ["a", "b", "posta-certificata"] {
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
    Setup {
        _dir: dir,
        gw,
        clock,
    }
}

async fn send(gw: &Arc<Gateway>) {
    let data = b"From: a@pec.alfa.test\r\nTo: b@pec.alfa.test\r\nSubject: Scadenze\r\nMessage-ID: <t-1@mua>\r\n\r\nciao\r\n".to_vec();
    let env = Envelope {
        mail_from: "a@pec.alfa.test".into(),
        rcpt_to: vec!["b@pec.alfa.test".into()],
        data,
        authenticated: Some("a@pec.alfa.test".into()),
        helo: "t".into(),
        tls: true,
    };
    let r = access::submit(gw, env).await.unwrap();
    assert_eq!(r.code, 250, "{r:?}");
}

/// The daticert tipo of each message in a's INBOX, with the text variant of timeouts.
fn sender_inbox(gw: &Gateway) -> Vec<String> {
    let a = PecAddress::parse("a@pec.alfa.test").unwrap();
    gw.store
        .messages(&a, "INBOX")
        .unwrap()
        .into_iter()
        .map(|m| {
            let bytes = gw.store.blobs().read(&m.blob).unwrap();
            let r = pecd::report::verify(&bytes, None).unwrap();
            assert!(r.signature.valid, "{:?}", r.signature.reason);
            let d = classify(&bytes).unwrap().daticert.unwrap().unwrap();
            let text = String::from_utf8_lossy(&bytes).into_owned();
            match d.tipo {
                Tipo::PreavvisoErroreConsegna if text.contains("12 ore") => {
                    "preavviso-12h".to_string()
                }
                Tipo::PreavvisoErroreConsegna => "preavviso-24h".to_string(),
                t => t.as_str().to_string(),
            }
        })
        .collect()
}

fn advance_to(clock: &ManualClock, start: jiff::Timestamp, hours: i64, secs: i64) {
    clock.set(
        start
            .checked_add(SignedDuration::from_hours(hours) + SignedDuration::from_secs(secs))
            .unwrap(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_ever_arrives_both_notices_then_silence() {
    let s = setup();
    let t0 = s.clock.now();
    send(&s.gw).await;
    advance_to(&s.clock, t0, 11, 3599);
    assert_eq!(timers::tick(&s.gw).await.unwrap(), 0, "nothing before 12 h");
    advance_to(&s.clock, t0, 12, 1);
    assert_eq!(timers::tick(&s.gw).await.unwrap(), 1, "the 12 h notice");
    assert_eq!(timers::tick(&s.gw).await.unwrap(), 0, "only once");
    advance_to(&s.clock, t0, 23, 0);
    assert_eq!(timers::tick(&s.gw).await.unwrap(), 0);
    advance_to(&s.clock, t0, 24, 1);
    assert_eq!(timers::tick(&s.gw).await.unwrap(), 1, "the 24 h notice");
    advance_to(&s.clock, t0, 48, 0);
    assert_eq!(timers::tick(&s.gw).await.unwrap(), 0, "tracking stopped");
    assert_eq!(
        sender_inbox(&s.gw),
        vec!["accettazione", "preavviso-12h", "preavviso-24h"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_between_12_and_24_hours_gives_only_the_12h_notice() {
    let s = setup();
    let t0 = s.clock.now();
    send(&s.gw).await;
    advance_to(&s.clock, t0, 13, 0);
    assert_eq!(timers::tick(&s.gw).await.unwrap(), 1);
    // The receiving side comes back: take-charge and delivery happen now.
    assert!(delivery::pass(&s.gw).await);
    advance_to(&s.clock, t0, 30, 0);
    assert_eq!(
        timers::tick(&s.gw).await.unwrap(),
        0,
        "no 24 h notice after the delivery receipt"
    );
    assert_eq!(
        sender_inbox(&s.gw),
        vec!["accettazione", "preavviso-12h", "avvenuta-consegna"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timely_delivery_gives_no_notice() {
    let s = setup();
    let t0 = s.clock.now();
    send(&s.gw).await;
    assert!(delivery::pass(&s.gw).await);
    advance_to(&s.clock, t0, 30, 0);
    assert_eq!(timers::tick(&s.gw).await.unwrap(), 0);
    assert_eq!(
        sender_inbox(&s.gw),
        vec!["accettazione", "avvenuta-consegna"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_jump_past_24_hours_gives_both_notices_in_order() {
    let s = setup();
    let t0 = s.clock.now();
    send(&s.gw).await;
    // No pass ran between 12 h and 24 h (the host was suspended, say).
    advance_to(&s.clock, t0, 30, 0);
    assert_eq!(
        timers::tick(&s.gw).await.unwrap(),
        2,
        "the 12 h notice is still owed"
    );
    assert_eq!(timers::tick(&s.gw).await.unwrap(), 0, "only once");
    assert_eq!(
        sender_inbox(&s.gw),
        vec!["accettazione", "preavviso-12h", "preavviso-24h"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_pass_handles_more_deadlines_than_one_batch() {
    let s = setup();
    let t0 = s.clock.now();
    let n = timers::BATCH + 20;
    let mut batch = pecd::store::Batch::new();
    for i in 0..n {
        batch = batch.pending_put(pecd::store::PendingEntry {
            ident: format!("opec-{i}@pec.alfa.test"),
            recipient: "b@pec.alfa.test".into(),
            awaiting: pecd::store::Awaiting::DeliveryReceipt,
            sender: "a@pec.alfa.test".into(),
            msgid: Some(format!("m{i}@mua")),
            subject: Some("Molti".into()),
            sent_at: t0,
            deadline_12h: t0 + SignedDuration::from_hours(12),
            deadline_24h: t0 + SignedDuration::from_hours(24),
            notice_12h_sent: true,
        });
    }
    s.gw.store.commit(batch).unwrap();
    advance_to(&s.clock, t0, 24, 1);
    assert_eq!(timers::tick(&s.gw).await.unwrap(), n, "all in one pass");
    assert_eq!(timers::tick(&s.gw).await.unwrap(), 0);
    let inbox = sender_inbox(&s.gw);
    assert_eq!(inbox.len(), n);
    assert!(inbox.iter().all(|t| t == "preavviso-24h"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_survive_a_gateway_restart() {
    let s = setup();
    let t0 = s.clock.now();
    send(&s.gw).await;
    let config = s.gw.config.clone();
    let Setup { _dir, gw, clock } = s;
    drop(gw);
    let gw = tokio::task::spawn_blocking(move || {
        Gateway::open((*config).clone(), clock.clone()).map(|g| (g, clock))
    })
    .await
    .unwrap()
    .unwrap();
    let (gw, clock) = gw;
    advance_to(&clock, t0, 12, 1);
    assert_eq!(
        timers::tick(&gw).await.unwrap(),
        1,
        "the 12 h notice after the restart"
    );
    advance_to(&clock, t0, 24, 1);
    assert_eq!(
        timers::tick(&gw).await.unwrap(),
        1,
        "the 24 h notice after the restart"
    );
    assert_eq!(
        sender_inbox(&gw),
        vec!["accettazione", "preavviso-12h", "preavviso-24h"]
    );
    drop(_dir);
}

/// The notices' daticert repeats the acceptance's certification data (issue #13 item 7):
/// every recipient with its kind and the original's Reply-To as `risposte`, while
/// `consegna` names the recipient the notice is about. The shared record goes with the
/// message's last pending entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_notices_list_every_recipient_and_the_reply_to() {
    let s = setup();
    let t0 = s.clock.now();
    let data = b"From: a@pec.alfa.test\r\nTo: b@pec.alfa.test\r\nCc: c@pec.alfa.test\r\n\
Reply-To: segreteria@pec.alfa.test\r\nSubject: Scadenze\r\nMessage-ID: <t-2@mua>\r\n\r\nciao\r\n";
    let env = Envelope {
        mail_from: "a@pec.alfa.test".into(),
        rcpt_to: vec!["b@pec.alfa.test".into(), "c@pec.alfa.test".into()],
        data: data.to_vec(),
        authenticated: Some("a@pec.alfa.test".into()),
        helo: "t".into(),
        tls: true,
    };
    assert_eq!(access::submit(&s.gw, env).await.unwrap().code, 250);
    advance_to(&s.clock, t0, 24, 1);
    assert_eq!(
        timers::tick(&s.gw).await.unwrap(),
        4,
        "12 h and 24 h, for each"
    );
    let a = PecAddress::parse("a@pec.alfa.test").unwrap();
    let mut consegna = Vec::new();
    let mut ident = String::new();
    for m in s.gw.store.messages(&a, "INBOX").unwrap() {
        let bytes = s.gw.store.blobs().read(&m.blob).unwrap();
        let d = classify(&bytes).unwrap().daticert.unwrap().unwrap();
        if d.tipo != Tipo::PreavvisoErroreConsegna {
            continue;
        }
        let listed: Vec<_> = d.destinatari.iter().map(|x| x.address.as_str()).collect();
        assert_eq!(listed, ["b@pec.alfa.test", "c@pec.alfa.test"]);
        assert_eq!(d.risposte, "segreteria@pec.alfa.test");
        consegna.push(d.consegna.clone().unwrap());
        ident = d.identificativo.clone();
    }
    consegna.sort();
    assert_eq!(
        consegna,
        [
            "b@pec.alfa.test",
            "b@pec.alfa.test",
            "c@pec.alfa.test",
            "c@pec.alfa.test"
        ]
    );
    assert!(s.gw.store.pending_message(&ident).unwrap().is_none());
}
