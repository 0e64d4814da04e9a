//! The operator's view (issue #13, "for the operator"): the admin listener's `/metrics`
//! checked by the real `promtool check metrics` (Debian's `prometheus` package) and read
//! for what a user of it cares about after real traffic (a PEC sent and delivered, a failed
//! login, a broken TLS handshake); `/healthz`; `/readyz` ready, and not ready with the
//! failing check named when the disk keeps less than `limits.min_free_bytes`.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::server::Server;
use tokio::io::AsyncWriteExt;

const DOMAIN: &str = "pec.ops.test";

use common::admin_get as get;
use common::metric_sample as sample;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_and_count_real_traffic() {
    if !common::jmap::have_curl()
        || !common::have(
            "promtool",
            "the metrics are checked by Prometheus' own linter",
        )
    {
        return;
    }
    let (a, b) = (format!("a@{DOMAIN}"), format!("b@{DOMAIN}"));
    let mut s = Server::new(DOMAIN, &[(&a, "pw"), (&b, "pw")]);
    s.start();
    let admin = s.addr("admin");
    assert_eq!(get(admin, "/healthz"), (200, "ok\n".to_string()));

    // Traffic: a PEC from a to b (delivered locally), a wrong password, a bad handshake.
    let msg = format!(
        "From: {a}\r\nTo: {b}\r\nSubject: metriche\r\nDate: Fri, 4 Dec 2026 10:00:00 +0100\r\n\
         Message-ID: <m1@mua.test>\r\n\r\nciao\r\n"
    );
    let r = common::smtp::submit(s.addr("smtps"), &s.ca(), &a, "pw", &[&b], msg.as_bytes()).await;
    assert_eq!(r.0, 250, "{r:?}");
    let mut bad = tokio::net::TcpStream::connect(s.addr("smtps"))
        .await
        .unwrap();
    bad.write_all(b"EHLO not-tls\r\n\r\n\r\n").await.unwrap();
    drop(bad);
    let wrong = common::jmap::Web::of(&s).request(
        "POST",
        "/auth/login",
        &[
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &format!(r#"{{"username":"{a}","password":"sbagliata","bearer":true}}"#),
        ],
    );
    assert_eq!(
        wrong.status,
        401,
        "{}",
        String::from_utf8_lossy(&wrong.body)
    );

    // Wait for the delivery receipt (the local lane works in the background).
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        let (code, text) = get(admin, "/metrics");
        assert_eq!(code, 200);
        if sample(
            &text,
            r#"pecd_receipts_issued_total{kind="avvenuta-consegna"}"#,
        ) == Some(1.0)
            && sample(
                &text,
                r#"pecd_tls_handshake_failures_total{listener="smtps"}"#,
            )
            .is_some()
        {
            break text;
        }
        assert!(Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // Prometheus' linter accepts the exposition.
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let want = [
        (
            r#"pecd_messages_total{code="250",enhanced="2.0.0",outcome="accepted",point="access"}"#,
            1.0,
        ),
        (r#"pecd_receipts_issued_total{kind="accettazione"}"#, 1.0),
        (r#"pecd_receipts_issued_total{kind="presa-in-carico"}"#, 1.0),
        (
            r#"pecd_receipts_issued_total{kind="avvenuta-consegna"}"#,
            1.0,
        ),
        (r#"pecd_trace_events_total{kind="LoginFailed"}"#, 1.0),
        (
            r#"pecd_tls_handshake_failures_total{listener="smtps"}"#,
            1.0,
        ),
        (r#"pecd_queue_items{lane="local"}"#, 0.0),
        (r#"pecd_queue_items{lane="remote"}"#, 0.0),
        // The envelope handed to the local delivery point in memory was taken.
        ("pecd_queue_handover_bytes", 0.0),
    ];
    for (series, value) in want {
        assert_eq!(sample(&text, series), Some(value), "{series}\n{text}");
    }
    assert!(sample(&text, "pecd_store_commit_seconds_count").unwrap() >= 3.0);
    assert!(sample(&text, "pecd_trace_head_seq").unwrap() >= 5.0);
    // A young sled store has sealed nothing yet: every record's index entries are in memory.
    let in_memory = sample(&text, "pecd_trace_records_in_memory").unwrap();
    assert!((5.0..8192.0).contains(&in_memory), "{in_memory}");
    assert!(sample(&text, "pecd_store_free_bytes").unwrap() > 0.0);
    assert!(
        sample(&text, r#"pecd_connections{listener="smtps"}"#).is_some(),
        "{text}"
    );

    // Ready: every check passes.
    let (code, body) = get(admin, "/readyz");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ready"], true);
    let names: Vec<&str> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["store writable", "signing key", "free space", "listeners"]
    );
    s.stop();

    // A disk that keeps less than the reserve: not ready, and it says why.
    s.limits("min_free_bytes = 4611686018427387903");
    s.start();
    let (code, body) = get(s.addr("admin"), "/readyz");
    assert_eq!(code, 503, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let failed: Vec<&serde_json::Value> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .collect();
    assert_eq!(failed.len(), 1, "{body}");
    assert_eq!(failed[0]["name"], "free space");
    assert!(
        failed[0]["detail"]
            .as_str()
            .unwrap()
            .contains("min_free_bytes"),
        "{body}"
    );
    assert_eq!(get(s.addr("admin"), "/healthz").0, 200);
    s.stop();
}

/// `--log-format json` (here through `PECD_LOG_FORMAT`): every log line is one JSON object,
/// and the lines about a message carry its identificativo (the span field), from the access
/// point through the local delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_identificativo() {
    let (a, b) = (format!("a@{DOMAIN}"), format!("b@{DOMAIN}"));
    let mut s = Server::new(DOMAIN, &[(&a, "pw"), (&b, "pw")]);
    let logs = s.start_json_logs();
    let msg = format!(
        "From: {a}\r\nTo: {b}\r\nSubject: log\r\nDate: Fri, 4 Dec 2026 10:00:00 +0100\r\n\
         Message-ID: <l1@mua.test>\r\n\r\nciao\r\n"
    );
    let r = common::smtp::submit(s.addr("smtps"), &s.ca(), &a, "pw", &[&b], msg.as_bytes()).await;
    assert_eq!(r.0, 250, "{r:?}");
    let ident = r.1.rsplit(' ').next().unwrap().to_string();
    let mut about = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let Ok(line) = logs.recv_timeout(Duration::from_millis(200)) else {
            if about.iter().any(|m: &String| m.contains("deliver")) {
                break;
            }
            continue;
        };
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
        if v["span"]["identificativo"] == ident.as_str() {
            about.push(v["fields"]["message"].as_str().unwrap_or("").to_string());
        }
    }
    assert!(
        about.iter().any(|m| m == "message accepted"),
        "{ident}: {about:?}"
    );
    assert!(about.len() >= 2, "{about:?}");
    s.stop();
}
