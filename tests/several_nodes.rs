//! Two pecd nodes of one provider writing one PostgreSQL store at once
//! (`[store] several_writers = true`) with their bodies in one S3 bucket, each a real
//! `pecd serve`, against a real cluster and a real SeaweedFS started on loopback. Both
//! accept submissions; one of them, elected, runs the queue. The elected one is killed
//! (`kill -9`) in the middle of the load: the other is elected, carries on its queue, and
//! every message that got a 250 from either node is delivered and receipted exactly once;
//! the trace log the two wrote together exports and verifies as one chain. And PostgreSQL
//! restarted under the same load: 4xx during the outage, one node elected again after
//! it, nothing lost or doubled.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::nodes::{
    Load, accepted, accepted_per_node, delivered_once_and_logged, export_and_verify, subjects,
    two_nodes,
};
use common::postgres::cluster;
use common::s3::S3Server;
use common::server::Server;

/// Whether `node` runs the single duties now (its `pecd_duties` metric).
fn runs_duties(node: &Server) -> bool {
    let (_, metrics) = common::admin_get(node.addr("admin"), "/metrics");
    metrics.contains("\npecd_duties 1\n")
}

/// Waits up to `within` for `node` to be elected; how long that took.
fn wait_elected(node: &Server, within: Duration) -> Duration {
    let started = Instant::now();
    while !runs_duties(node) {
        assert!(started.elapsed() < within, "not elected within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    started.elapsed()
}

/// Two writing nodes of provider `domain` (store schema `schema`, mailboxes `a` = the
/// sender and `b`), node 1 started and elected first, then node 2; `None` (skipped with
/// the reason) without PostgreSQL or SeaweedFS.
struct Pair {
    pg: common::postgres::PgCluster,
    _s3: S3Server,
    n1: Server,
    n2: Server,
    a: String,
    b: String,
}

fn pair(why: &str, domain: &str, schema: &str) -> Option<Pair> {
    let pg = cluster(why)?;
    let s3 = S3Server::start()?;
    let (a, b) = (
        format!("mittente@{domain}"),
        format!("destinatario@{domain}"),
    );
    let (mut n1, mut n2) = two_nodes(
        domain,
        &pg,
        &s3,
        schema,
        &[&a, &b],
        "several_writers = true\nlease_secs = 15",
    );
    n1.enable(&["imaps"]);
    n2.enable(&["imaps"]);
    n1.start();
    wait_elected(&n1, Duration::from_secs(20));
    // The second node serves at once (no standby wait), without the elected duties.
    n2.start();
    Some(Pair {
        pg,
        _s3: s3,
        n1,
        n2,
        a,
        b,
    })
}

#[test]
fn two_writing_nodes_share_the_load_and_one_carries_on_when_the_elected_one_is_killed() {
    let Some(Pair {
        pg: _pg,
        _s3,
        mut n1,
        mut n2,
        a,
        b,
    }) = pair(
        "two writing nodes, the elected one killed",
        "pec.due-scrittori.test",
        "scrittori",
    )
    else {
        return;
    };
    std::thread::sleep(Duration::from_secs(3));
    assert!(runs_duties(&n1) && !runs_duties(&n2), "one elected node");
    let (code, body) = common::admin_get(n2.addr("admin"), "/readyz");
    assert_eq!(code, 200, "node 2 is ready: {body}");
    // IMAP IDLE on node 2 hears a message appended through node 1 at once (its own poll
    // is 30 s or more: only the nodes' announcements can wake it this soon).
    let port1 = n1.addr("imaps").port().to_string();
    let idle = n2.imap("idle_elsewhere", &[&b, "pw", &port1]);
    assert_eq!(idle["idle_cont"], "+ idling", "{idle}");
    assert!(
        idle["idle_event"]
            .as_str()
            .unwrap_or("")
            .ends_with("EXISTS"),
        "{idle}"
    );
    assert!(idle["idle_secs"].as_f64().unwrap_or(99.0) < 5.0, "{idle}");
    eprintln!(
        "IDLE on node 2 woke {} s after an APPEND through node 1",
        idle["idle_secs"]
    );

    // Two clients on each node.
    let (t1, t2) = (
        Arc::new(Mutex::new(n1.addr("smtps"))),
        Arc::new(Mutex::new(n2.addr("smtps"))),
    );
    let targets = [t1.clone(), t1.clone(), t2.clone(), t2.clone()];
    let load = Load::start(&a, &b, n1.ca(), &targets, 10);
    std::thread::sleep(Duration::from_secs(4));
    // Deliveries go on while both nodes accept.
    let delivered_before = n2.mailbox_json(&b)["messages"].as_u64().unwrap();
    assert!(delivered_before > 0, "delivered while both accept");
    let killed_at = Instant::now();
    n1.kill();
    *t1.lock().unwrap() = n2.addr("smtps");
    wait_elected(&n2, Duration::from_secs(40));
    let failover = killed_at.elapsed();
    let results = load.finish();

    // A 250 from either node; anything else is a failure the client sees (the dead
    // node's refused or cut connections): never a permanent refusal.
    let (ok, failed) = accepted(&results);
    let ok_at = accepted_per_node(&results, n2.addr("smtps"));
    assert!(
        ok_at[0] > 5 && ok_at[1] > 5,
        "both nodes accepted messages: {ok_at:?}"
    );

    // Everything accepted is delivered, each exactly once: what node 1 had in hand node 2
    // carried on. One chain, both nodes' records in it.
    let records = delivered_once_and_logged(&mut n2, &a, &b, &ok);
    eprintln!(
        "two writing nodes, the elected one killed: {} submissions, {} accepted ({} by node 1, {} by node 2), \
         {failed} failed at the kill; node 2 elected {:.1} s after the kill; chain of {records} records verified",
        results.len(),
        ok.len(),
        ok_at[0],
        ok_at[1],
        failover.as_secs_f64(),
    );
}

#[test]
fn two_writing_nodes_ride_out_a_postgresql_restart_under_load() {
    let Some(Pair {
        pg,
        _s3,
        mut n1,
        mut n2,
        a,
        b,
    }) = pair(
        "two writing nodes, PostgreSQL restarted",
        "pec.riavvio-scrittori.test",
        "riavvio_scrittori",
    )
    else {
        return;
    };
    let targets: Vec<_> = [
        n1.addr("smtps"),
        n1.addr("smtps"),
        n2.addr("smtps"),
        n2.addr("smtps"),
    ]
    .into_iter()
    .map(|addr| Arc::new(Mutex::new(addr)))
    .collect();
    let load = Load::start(&a, &b, n1.ca(), &targets, 10);
    std::thread::sleep(Duration::from_secs(3));
    pg.stop().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    pg.restart().unwrap();
    let results = load.finish();
    // 250s before and after; 4xx (or a cut session) during the outage, never a 5xx.
    let (ok, failed) = accepted(&results);
    assert!(failed > 0, "the outage was seen by the clients");
    // After the restart one node, either, is elected again and runs the queue.
    let started = Instant::now();
    while !(runs_duties(&n1) ^ runs_duties(&n2)) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "one node elected again"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    common::delivery::wait_for_all(&n1, &a, &b, ok.len() as u64);
    common::delivery::assert_each_once(&ok, &subjects(&n2, &a), &subjects(&n1, &b));
    n1.stop();
    n2.stop();
    let records = export_and_verify(&n1);
    eprintln!(
        "two writing nodes, PostgreSQL restarted: {} submissions, {} accepted, {failed} failed during the outage; chain of {records} records verified",
        results.len(),
        ok.len(),
    );
}
