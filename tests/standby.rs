//! Two pecd nodes of one provider on one PostgreSQL store and one S3 bucket
//! (`[store] standby = true`), each a real `pecd serve`, against a real cluster and a real
//! SeaweedFS started on loopback: the node that writes the store is killed (`kill -9`)
//! in the middle of a submission load and the standby takes over, every message that got
//! a 250 is delivered and receipted exactly once and the trace log exports and verifies
//! whole; a node frozen and cut off from the database while the standby takes over stops
//! by itself when it wakes, without committing anything.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::nodes::{
    Load, accepted, accepted_per_node, delivered_once_and_logged, export_and_verify, subjects,
};
use common::postgres::{cluster, psql};
use common::s3::S3Server;
use common::server::Server;

/// Two nodes of one provider, the second a standby.
fn two_nodes(
    domain: &str,
    pg: &common::postgres::PgCluster,
    s3: &S3Server,
    schema: &str,
    mailboxes: &[&str],
) -> (Server, Server) {
    common::nodes::two_nodes(domain, pg, s3, schema, mailboxes, "standby = true")
}

/// Sends `sig` (`-STOP`, `-CONT`) to process `pid`.
fn signal(sig: &str, pid: &str) {
    let sent = std::process::Command::new("kill")
        .args([sig, pid])
        .status()
        .is_ok_and(|s| s.success());
    assert!(sent, "kill {sig} {pid}");
}

#[test]
fn a_standby_takes_over_a_killed_node_and_nothing_is_lost_or_doubled() {
    let Some(pg) = cluster("two nodes, one killed") else {
        return;
    };
    let Some(s3) = S3Server::start() else {
        return;
    };
    let domain = "pec.due-nodi.test";
    let (a, b) = (
        format!("mittente@{domain}"),
        format!("destinatario@{domain}"),
    );
    let (mut n1, mut n2) = two_nodes(domain, &pg, &s3, "nodi", &[&a, &b]);
    n1.enable(&["imaps"]);
    n2.enable(&["imaps"]);
    n1.start();
    // The standby names the node that writes the store (pg_stat_activity's name).
    let said = n2.start_standby();
    let n1_pid = n1.pid().unwrap();
    assert!(
        said.contains(&format!("pecd {n1_pid}.")) && said.contains(" from 127.0.0.1"),
        "the standby names node 1 (pid {n1_pid}): {said}"
    );
    // Its admin listener: alive, not ready, naming the writer.
    let (code, body) = common::admin_get(n2.addr("admin"), "/healthz");
    assert_eq!(code, 200, "{body}");
    let (_, metrics) = common::admin_get(n2.addr("admin"), "/metrics");
    assert!(metrics.contains("\npecd_standby 1\n"), "{metrics}");
    let (code, body) = common::admin_get(n2.addr("admin"), "/readyz");
    assert!(
        code == 503 && body.contains("standby") && body.contains(&format!("pecd {n1_pid}.")),
        "{code} {body}"
    );

    // Four clients submit one message after another to whichever node serves.
    let target = Arc::new(Mutex::new(n1.addr("smtps")));
    let load = Load::start(&a, &b, n1.ca(), &vec![target.clone(); 4], 10);
    std::thread::sleep(Duration::from_secs(3));
    let killed_at = Instant::now();
    n1.kill();
    let took_over = n2.wait_took_over();
    let failover = killed_at.elapsed();
    *target.lock().unwrap() = n2.addr("smtps");
    let (code, body) = common::admin_get(n2.addr("admin"), "/readyz");
    assert_eq!(code, 200, "node 2 is ready once it took over: {body}");
    let (_, metrics) = common::admin_get(n2.addr("admin"), "/metrics");
    assert!(metrics.contains("\npecd_standby 0\n"), "{metrics}");
    let results = load.finish();

    // A 250 from either node; anything else is a failure the client sees (the dead
    // node's refused or cut connections): never a permanent refusal.
    let (ok, failed) = accepted(&results);
    let (n1_smtps, n2_smtps) = (results[0].1, n2.addr("smtps"));
    let ok_at = accepted_per_node(&results, n2_smtps);
    assert_ne!(n1_smtps, n2_smtps);
    assert!(
        ok_at[0] > 5 && ok_at[1] > 5,
        "both nodes accepted messages: {ok_at:?}"
    );

    // Everything accepted is delivered by the node alive (the envelope at b, the
    // acceptance and delivery receipts at a), each exactly once; what the killed node
    // accepted but had not delivered, the standby carried on.
    // A message whose 250 the kill swallowed may be there (once), never twice.
    let records = delivered_once_and_logged(&mut n2, &a, &b, &ok);
    eprintln!(
        "two nodes, one killed: {} submissions, {} accepted ({} by node 1, {} by node 2), {failed} failed at the kill; \
         node 2 served {:.1} s after the kill (its own start {:.1} s); chain of {records} records verified",
        results.len(),
        ok.len(),
        ok_at[0],
        ok_at[1],
        failover.as_secs_f64(),
        took_over.as_secs_f64(),
    );
}

#[test]
fn a_node_cut_off_while_the_standby_took_over_stops_by_itself() {
    cut_off_node("pec.isolato.test", "isolato", false);
}

/// The same, but the node that took over wrote and is gone too when the first wakes: the
/// lock is free, and taking it back would fork the trace chain from stale memory.
#[test]
fn a_node_cut_off_stops_even_when_the_node_that_took_over_is_gone_too() {
    cut_off_node("pec.isolato-due.test", "isolato_due", true);
}

/// Node 1 accepts message 1, freezes and loses its writer session; node 2 takes over and
/// accepts message 2 (and, if `writer_gone`, is killed once it delivered it); node 1
/// wakes: it accepts nothing (message 3) and exits 75. Then messages 1 and 2 are in b's
/// INBOX once each and the chain verifies.
fn cut_off_node(domain: &str, schema: &str, writer_gone: bool) {
    let Some(pg) = cluster("a node cut off from the database") else {
        return;
    };
    let Some(s3) = S3Server::start() else {
        return;
    };
    let (a, b) = (
        format!("mittente@{domain}"),
        format!("destinatario@{domain}"),
    );
    let (mut n1, mut n2) = two_nodes(domain, &pg, &s3, schema, &[&a, &b]);
    n2.enable(&["imaps"]);
    n1.start();
    n2.start_standby();
    let ca = n1.ca();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let submit = |addr: SocketAddr, n: u32| {
        let msg = format!(
            "From: <{a}>\r\nTo: <{b}>\r\nSubject: Isolato {n}\r\nMessage-ID: <isolato-{n}@mua.test>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0100\r\n\r\nCiao.\r\n"
        );
        rt.block_on(common::smtp::try_submit(
            addr,
            &ca,
            &a,
            "pw",
            &[&b],
            msg.as_bytes(),
        ))
    };
    assert_eq!(submit(n1.addr("smtps"), 1).map(|r| r.0), Ok(250));

    // Node 1 freezes (SIGSTOP) and the database drops its writer's session, as it would
    // after the keepalives of a silent host: the standby takes over.
    let pid = n1.pid().unwrap().to_string();
    signal("-STOP", &pid);
    let dropped = psql(
        &pg,
        &format!(
            "SELECT count(pg_terminate_backend(a.pid)) FROM pg_stat_activity a \
             JOIN pg_locks l ON l.pid = a.pid AND l.locktype = 'advisory' AND l.granted \
             WHERE a.application_name LIKE 'pecd {pid}.%'"
        ),
    );
    assert_eq!(dropped, "1", "node 1's writer session");
    n2.wait_took_over();
    assert_eq!(submit(n2.addr("smtps"), 2).map(|r| r.0), Ok(250));
    let delivered_to_b = |n: &Server, count: u64| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while n.mailbox_json(&b)["messages"].as_u64() != Some(count) {
            assert!(Instant::now() < deadline, "{}", n.mailbox_json(&b));
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    if writer_gone {
        delivered_to_b(&n2, 2);
        n2.kill();
    }

    // Node 1 wakes: its next commit finds the store taken and it stops (exit status 75),
    // having accepted nothing.
    signal("-CONT", &pid);
    let r = submit(n1.addr("smtps"), 3);
    assert!(
        !matches!(r, Ok((250, _))),
        "node 1 accepted a message after the takeover: {r:?}"
    );
    assert_eq!(
        n1.wait_exit(Duration::from_secs(10)),
        Some(75),
        "node 1 stops by itself"
    );

    // Node 2 (started again if it was gone) delivers both messages accepted by a writer,
    // once each; the third is nowhere.
    if writer_gone {
        n2.start();
    }
    delivered_to_b(&n2, 2);
    let at_b = subjects(&n2, &b);
    assert_eq!(
        at_b.keys().collect::<Vec<_>>(),
        [
            "POSTA CERTIFICATA: Isolato 1",
            "POSTA CERTIFICATA: Isolato 2"
        ],
        "{at_b:?}"
    );
    n2.stop();
    export_and_verify(&n2);
}

/// Node 1 runs in a network namespace of the test's own and is cut off silently (its
/// link taken down: no RST, no FIN), as when its machine freezes or loses its route:
/// PostgreSQL notices through the keepalives the writer's session set and drops it, node
/// 2 takes over and serves; when node 1's link comes back it finds the store taken over
/// and exits 75.
#[test]
fn a_writer_cut_off_silently_is_replaced_within_a_minute() {
    let Some(pg) = cluster("a writer cut off silently") else {
        return;
    };
    let Some(s3) = S3Server::start() else {
        return;
    };
    let Some(ns) = common::netns::Netns::create("a writer cut off silently") else {
        return;
    };
    pg.listen_also(&ns.host_ip, &ns.subnet).unwrap();
    let domain = "pec.silenzio.test";
    let (a, b) = (
        format!("mittente@{domain}"),
        format!("destinatario@{domain}"),
    );
    let (mut n1, mut n2) = two_nodes(domain, &pg, &s3, "silenzio", &[&a, &b]);
    // Node 1 reaches the database directly over the pair (so that PostgreSQL's own
    // keepalives are what notice the silence) and the bucket through a forwarder.
    let s3_port = ns.forward(format!("127.0.0.1:{}", s3.port).parse().unwrap());
    n1.edit_config(|t| {
        let moved = t
            .replace(
                &format!("host=127.0.0.1 port={}", pg.port()),
                &format!("host={} port={}", ns.host_ip, pg.port()),
            )
            .replace(
                &format!("http://127.0.0.1:{}", s3.port),
                &format!("http://{}:{s3_port}", ns.host_ip),
            );
        assert!(
            !moved.contains(&format!("host=127.0.0.1 port={}", pg.port()))
                && !moved.contains(&format!("http://127.0.0.1:{}", s3.port)),
            "{moved}"
        );
        moved
    });
    let wrapper = ns.wrapper();
    n1.start_in(&wrapper.iter().map(String::as_str).collect::<Vec<_>>());
    let said = n2.start_standby();
    assert!(said.contains(&format!("from {}", ns.ns_ip)), "{said}");

    let cut = std::time::Instant::now();
    ns.link(false);
    let took_over = n2.wait_took_over();
    let after = cut.elapsed();
    assert!(
        after < Duration::from_secs(60),
        "node 2 took over {:.0} s after node 1 went silent",
        after.as_secs_f64()
    );
    let ca = n2.ca();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let msg = format!(
        "From: <{a}>\r\nTo: <{b}>\r\nSubject: Silenzio\r\nMessage-ID: <silenzio@mua.test>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0100\r\n\r\nCiao.\r\n"
    );
    let r = rt.block_on(common::smtp::try_submit(
        n2.addr("smtps"),
        &ca,
        &a,
        "pw",
        &[&b],
        msg.as_bytes(),
    ));
    assert_eq!(r.map(|r| r.0), Ok(250));

    // The link comes back: node 1 learns it was replaced and stops.
    ns.link(true);
    assert_eq!(
        n1.wait_exit(Duration::from_secs(120)),
        Some(75),
        "node 1 stops once it can reach the database again"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while n2.mailbox_json(&b)["messages"].as_u64() != Some(1) {
        assert!(Instant::now() < deadline, "{}", n2.mailbox_json(&b));
        std::thread::sleep(Duration::from_millis(100));
    }
    n2.stop();
    export_and_verify(&n2);
    eprintln!(
        "a writer cut off silently: node 2 served {:.1} s after the cut (its own start {:.1} s)",
        after.as_secs_f64(),
        took_over.as_secs_f64()
    );
}

/// PostgreSQL restarts while node 1 writes (idle) and node 2 waits: node 1 takes its lock
/// back (it tries every second; the standby waits 10 s after losing the server) and goes
/// on serving; node 2 stays a standby.
#[test]
fn a_postgresql_restart_leaves_the_writer_in_place() {
    let Some(pg) = cluster("a PostgreSQL restart with a standby") else {
        return;
    };
    let Some(s3) = S3Server::start() else {
        return;
    };
    let domain = "pec.riavvio-nodi.test";
    let (a, b) = (
        format!("mittente@{domain}"),
        format!("destinatario@{domain}"),
    );
    let (mut n1, mut n2) = two_nodes(domain, &pg, &s3, "riavvio", &[&a, &b]);
    n1.start();
    n2.start_standby();
    pg.stop().unwrap();
    std::thread::sleep(Duration::from_secs(1));
    pg.restart().unwrap();
    // Past the standby's 10 s with no traffic at all: node 1 took its lock back by itself
    // (not at a commit), so the standby's second look found it writing.
    std::thread::sleep(Duration::from_secs(12));
    assert_eq!(n1.wait_exit(Duration::ZERO), None, "node 1 still runs");
    let (code, body) = common::admin_get(n2.addr("admin"), "/readyz");
    assert!(
        code == 503 && body.contains("standby"),
        "node 2 still waits: {code} {body}"
    );
    let msg = format!(
        "From: <{a}>\r\nTo: <{b}>\r\nSubject: Riavvio\r\nMessage-ID: <riavvio-nodi@mua.test>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0100\r\n\r\nCiao.\r\n"
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let r = rt.block_on(common::smtp::try_submit(
        n1.addr("smtps"),
        &n1.ca(),
        &a,
        "pw",
        &[&b],
        msg.as_bytes(),
    ));
    assert_eq!(r.map(|r| r.0), Ok(250), "node 1 serves after the restart");
    let deadline = Instant::now() + Duration::from_secs(60);
    while n1.mailbox_json(&b)["messages"].as_u64() != Some(1) {
        assert!(Instant::now() < deadline, "{}", n1.mailbox_json(&b));
        std::thread::sleep(Duration::from_millis(100));
    }
    n2.stop();
    n1.stop();
    export_and_verify(&n1);
}
