//! IMAPS and POP3S end to end: the real gateway (SMTP submission, PEC signing, local
//! delivery) started in-process through `pecd::server::start`, the IMAP and POP3 drivers on
//! loopback ports, and independent clients: Python's imaplib, poplib and smtplib
//! (tests/clients/imap_scenarios.py) and curl, all over TLS trusting only the dev CA.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use pecd::config::Config;
use pecd::gateway::Gateway;
use pecd::imap::ImapListenerConfig;
use pecd::pec::address::PecAddress;
use pecd::pop3::Pop3ListenerConfig;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_pecd");
const DOMAIN: &str = "pec.imap.test";

fn pecd(args: &[&str]) {
    let out = Command::new(BIN).args(args).output().expect("run pecd");
    assert!(
        out.status.success(),
        "pecd {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `pecd init`, only `smtps` on a free port (IMAP and POP3 are started by the test),
/// three mailboxes (c with a 20 kB quota).
fn init() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    pecd(&[
        "init",
        "--dir",
        dir.path().to_str().unwrap_or_default(),
        "--domain",
        DOMAIN,
    ]);
    let cfg = dir.path().join("pecd.toml");
    let text = std::fs::read_to_string(&cfg).expect("config");
    let mut edited = String::new();
    for line in text.lines() {
        let l = match line.split_once(" = ") {
            Some((k, _)) if k.trim() == "smtps" => format!("{k} = \"127.0.0.1:0\""),
            Some((k, _))
                if ["smtp", "submission", "imaps", "pop3s", "https", "admin"]
                    .contains(&k.trim())
                    && line.contains("127.0.0.1:") =>
            {
                format!("{k} = \"off\"")
            }
            _ => line.to_string(),
        };
        edited.push_str(&l);
        edited.push('\n');
    }
    std::fs::write(&cfg, edited).expect("write config");
    let c = cfg.to_str().unwrap_or_default();
    for (who, quota) in [("a", None), ("b", None), ("c", Some("20000"))] {
        let addr = format!("{who}@{DOMAIN}");
        let mut args = vec![
            "mailbox",
            "add",
            addr.as_str(),
            "--password",
            "pw",
            "--keep-password",
            "--config",
            c,
        ];
        if let Some(q) = quota {
            args.extend(["--quota", q]);
        }
        pecd(&args);
    }
    (dir, cfg)
}

struct Ports {
    imap: SocketAddr,
    pop3: SocketAddr,
    smtps: SocketAddr,
    ca: PathBuf,
}

fn scenario(p: &Ports, name: &str, args: &[&str]) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/imap_scenarios.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(name)
        .arg(p.imap.ip().to_string())
        .args([
            p.imap.port().to_string(),
            p.pop3.port().to_string(),
            p.smtps.port().to_string(),
        ])
        .arg(&p.ca)
        .args(args)
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{name}: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{name}: {e}: {stdout}"))
}

async fn run_blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

/// The gateway (SMTP submission, pipeline, local delivery) with IMAP and POP3 on
/// loopback ports; IDLE keeps its default fallback poll, so a prompt IDLE wake-up can
/// only come from the store's change notification.
struct Harness {
    _dir: tempfile::TempDir,
    gw: Arc<Gateway>,
    running: pecd::server::Running,
    ports: Arc<Ports>,
    stop_tx: tokio::sync::watch::Sender<bool>,
}

impl Harness {
    async fn start() -> Self {
        let (dir, cfg) = init();
        let config = Config::load(&cfg).expect("config");
        let gw = Gateway::open(config, pecd::clock::system()).expect("gateway");
        let service = gw.config.provider.receipt_mailbox.clone();
        let store = gw.store.clone();
        run_blocking(move || {
            if store.mailbox(&service).ok().flatten().is_none() {
                let m = pecd::store::NewMailbox {
                    address: service,
                    password: pecd::store::mailbox::Password::new("service-pw"),
                    quota_bytes: None,
                    options: Default::default(),
                    provisional: false,
                };
                store.add_mailbox(m).expect("service mailbox");
            }
        })
        .await;
        let running = pecd::server::start(gw.clone()).await.expect("start");
        let (tls, _) =
            pecd::tls::server_config(&gw.config.tls.cert, &gw.config.tls.key).expect("tls");
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let imap_l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let pop_l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let ports = Arc::new(Ports {
            imap: imap_l.local_addr().expect("addr"),
            pop3: pop_l.local_addr().expect("addr"),
            smtps: running.addr("smtps").expect("smtps"),
            ca: dir.path().join("certs/ca.pem"),
        });
        let mut icfg = ImapListenerConfig::from_config(&gw, tls.clone());
        assert!(
            icfg.idle_poll >= Duration::from_secs(30),
            "IDLE tests must not rely on a short poll"
        );
        icfg.auth_failure_delay = Duration::from_millis(50);
        tokio::spawn(pecd::imap::serve(imap_l, icfg, gw.clone(), stop.clone()));
        let mut pcfg = Pop3ListenerConfig::from_config(&gw, tls);
        pcfg.auth_failure_delay = Duration::from_millis(50);
        tokio::spawn(pecd::pop3::serve(pop_l, pcfg, gw.clone(), stop.clone()));
        Self {
            _dir: dir,
            gw,
            running,
            ports,
            stop_tx,
        }
    }

    async fn stop(self) {
        let _ = self.stop_tx.send(true);
        self.running.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_and_pop3_with_independent_clients() {
    let h = Harness::start().await;
    let (gw, ports) = (h.gw.clone(), h.ports.clone());
    let (a, b, c) = (
        format!("a@{DOMAIN}"),
        format!("b@{DOMAIN}"),
        format!("c@{DOMAIN}"),
    );

    // A PEC from a to b: the envelope read over IMAP is the stored one, byte for byte.
    let p = ports.clone();
    let (a2, b2) = (a.clone(), b.clone());
    let pec = run_blocking(move || scenario(&p, "pec", &[&a2, "pw", &b2, "pw"])).await;
    let baddr = PecAddress::parse(&b).expect("b");
    let stored = gw.store.messages(&baddr, "INBOX").expect("messages");
    assert!(
        stored
            .iter()
            .any(|m| Some(m.blob.as_str()) == pec["sha256"].as_str()),
        "BODY[] differs from the stored message: {pec}"
    );
    let list = pec["list"].to_string();
    for f in [
        "\\\\Sent",
        "\\\\Drafts",
        "\\\\Trash",
        "\\\\Archive",
        "\\\\Junk",
        "INBOX",
    ] {
        assert!(list.contains(f), "LIST lacks {f}: {list}");
    }
    assert!(
        !list.contains(&a),
        "another user's folders are visible: {list}"
    );
    let parts = pec["parts"].as_array().expect("parts");
    for name in ["daticert.xml", "smime.p7s", "postacert.eml"] {
        let part = parts
            .iter()
            .find(|p| p["filename"] == name)
            .unwrap_or_else(|| panic!("no {name} part: {pec}"));
        assert_eq!(part["in_whole"], true, "{name}: {part}");
        assert_eq!(part["decoded_equal"], true, "{name}: {part}");
        assert_eq!(part["mime_in_whole"], true, "{name}: {part}");
    }
    assert!(parts.iter().all(|p| p["decoded_equal"] == true), "{pec}");
    assert_eq!(pec["partial_ok"], true);
    let meta = pec["meta"].as_str().unwrap_or_default();
    assert!(
        meta.contains("ENVELOPE (")
            && meta.contains("BODYSTRUCTURE ((")
            && meta.contains("\"SIGNED\""),
        "{meta}"
    );
    assert!(
        pec["flags"]
            .as_str()
            .unwrap_or_default()
            .contains("\\Flagged $Etichetta"),
        "{pec}"
    );
    assert!(
        !pec["flags_after"]
            .as_str()
            .unwrap_or_default()
            .contains("\\Flagged"),
        "{pec}"
    );
    assert!(
        !pec["search_subject"]
            .as_str()
            .unwrap_or_default()
            .is_empty(),
        "{pec}"
    );
    assert_eq!(pec["search_none"], "");
    assert!(pec["ref"].is_string(), "no X-Riferimento-Message-ID: {pec}");
    assert!(
        !pec["search_ref"].as_str().unwrap_or_default().is_empty(),
        "{pec}"
    );

    // Folders, MOVE, EXPUNGE, quota, isolation, IDLE.
    let p = ports.clone();
    let (a2, b2) = (a.clone(), b.clone());
    let mb = run_blocking(move || scenario(&p, "mailbox", &[&a2, "pw", &b2])).await;
    assert_eq!(mb["move"], "OK", "{mb}");
    assert!(mb["move_data"].to_string().contains("COPYUID"), "{mb}");
    assert_eq!(mb["archive"], "1", "{mb}");
    assert!(
        !mb["expunge"].as_array().is_none_or(|v| v.is_empty()),
        "{mb}"
    );
    assert!(mb["quota"].to_string().contains("STORAGE"), "{mb}");
    assert_ne!(mb["other_select"], "OK", "{mb}");
    assert_ne!(mb["escape_select"], "OK", "{mb}");
    assert!(!mb["list"].to_string().contains(&b), "{mb}");
    assert_eq!(mb["idle_cont"], "+ idling", "{mb}");
    assert!(
        mb["idle_event"]
            .as_str()
            .unwrap_or_default()
            .ends_with("EXISTS"),
        "{mb}"
    );
    assert!(
        mb["idle_secs"].as_f64().unwrap_or(99.0) < 2.0,
        "IDLE woke late: {mb}"
    );
    assert!(
        mb["idle_done"]
            .as_str()
            .unwrap_or_default()
            .ends_with("OK IDLE terminated"),
        "{mb}"
    );
    println!("IDLE woke after {}s", mb["idle_secs"]);

    // Subscriptions: kept across connections, independent of the folder's existence.
    let p = ports.clone();
    let a2 = a.clone();
    let sb = run_blocking(move || scenario(&p, "subscriptions", &[&a2, "pw"])).await;
    for k in [
        "create",
        "subscribe",
        "subscribe_missing",
        "delete",
        "unsubscribe",
    ] {
        assert_eq!(sb[k], "OK", "{k}: {sb}");
    }
    let lines = |k: &str| -> Vec<String> {
        sb[k]
            .as_array()
            .map(|v| {
                v.iter()
                    .filter_map(|l| l.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let has = |k: &str, line: &str| lines(k).iter().any(|l| l == line);
    assert!(
        has("lsub_before", "(\\HasNoChildren \\Sent) \"/\" \"Sent\""),
        "{sb}"
    );
    assert!(
        !lines("lsub_before").iter().any(|l| l.contains("Progetti")),
        "{sb}"
    );
    assert!(
        has("lsub_subscribed", "(\\HasNoChildren) \"/\" \"Progetti\""),
        "{sb}"
    );
    assert!(
        has("lsub_subscribed", "(\\Noselect) \"/\" \"Fantasma\""),
        "{sb}"
    );
    assert!(
        has("lsub_after_delete", "(\\Noselect) \"/\" \"Progetti\""),
        "{sb}"
    );
    assert!(
        has("lsub_after_delete", "(\\Noselect) \"/\" \"Fantasma\""),
        "{sb}"
    );
    assert!(
        !lines("lsub_after_unsubscribe")
            .iter()
            .any(|l| l.contains("Fantasma")),
        "{sb}"
    );
    assert!(
        has("lsub_after_unsubscribe", "(\\Noselect) \"/\" \"Progetti\""),
        "{sb}"
    );
    assert!(
        !lines("list")
            .iter()
            .any(|l| l.contains("Progetti") || l.contains("Fantasma")),
        "{sb}"
    );

    // Quota enforced on APPEND with the RFC 9208 response code.
    let p = ports.clone();
    let c2 = c.clone();
    let oq = run_blocking(move || scenario(&p, "overquota", &[&c2, "pw"])).await;
    assert!(oq["append"].to_string().contains("OVERQUOTA"), "{oq}");
    assert!(oq["quota"].to_string().contains("STORAGE 0 19"), "{oq}");

    // Wrong password refused; nothing is ever said in clear text.
    let p = ports.clone();
    let a2 = a.clone();
    let rf = run_blocking(move || scenario(&p, "refusals", &[&a2, "pw"])).await;
    assert!(
        rf["wrong_password"]
            .as_str()
            .unwrap_or_default()
            .contains("AUTHENTICATIONFAILED"),
        "{rf}"
    );
    assert!(
        !rf["plain_reply"]
            .as_str()
            .unwrap_or_default()
            .contains("OK"),
        "{rf}"
    );

    // POP3: the same message bytes; DELE hides from POP3 and keeps the evidence.
    let p = ports.clone();
    let b2 = b.clone();
    let pop = run_blocking(move || scenario(&p, "pop3", &[&b2, "pw"])).await;
    let count = pop["stat"][0].as_u64().unwrap_or(0);
    assert!(count >= 1, "{pop}");
    assert_eq!(pop["stat_after"][0].as_u64(), Some(count - 1), "{pop}");
    assert!(
        stored
            .iter()
            .any(|m| Some(m.blob.as_str()) == pop["retr_sha256"].as_str()),
        "RETR differs from the stored message: {pop}"
    );
    assert_eq!(pop["top_has_subject"], true);
    assert!(
        pop["wrong_password"]
            .as_str()
            .unwrap_or_default()
            .contains("-ERR"),
        "{pop}"
    );
    let after = gw.store.messages(&baddr, "INBOX").expect("messages");
    assert_eq!(
        after.len(),
        stored.len(),
        "POP3 DELE must not remove the message"
    );
    assert!(
        after
            .iter()
            .any(|m| m.flags.iter().any(|f| f == pecd::pop3::DELETED_KEYWORD))
    );

    // curl, a third independent client.
    let p = ports.clone();
    let b2 = b.clone();
    let curl = run_blocking(move || curl_checks(&p, &b2)).await;
    println!("{curl}");

    h.stop().await;
}

fn curl_checks(p: &Ports, user: &str) -> String {
    if Command::new("curl").arg("--version").output().is_err() {
        assert!(
            std::env::var_os("PECD_REQUIRE_TOOLS").is_none_or(|v| v.is_empty()),
            "curl is not installed (PECD_REQUIRE_TOOLS is set: this must run here)"
        );
        return "curl not installed: curl checks skipped".into();
    }
    let run = |url: String, extra: &[&str]| {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "30", "--cacert"])
            .arg(&p.ca)
            .args(["-u", &format!("{user}:pw")])
            .args(extra)
            .arg(url)
            .output()
            .expect("curl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, list, err) = run(format!("imaps://127.0.0.1:{}/", p.imap.port()), &[]);
    assert!(
        ok && list.contains("INBOX") && list.contains("Archive"),
        "curl LIST: {list} {err}"
    );
    let (ok, msg, err) = run(
        format!("imaps://127.0.0.1:{}/INBOX;UID=1", p.imap.port()),
        &[],
    );
    assert!(ok && msg.contains("POSTA CERTIFICATA"), "curl FETCH: {err}");
    let (ok, pop, err) = run(format!("pop3s://127.0.0.1:{}/", p.pop3.port()), &[]);
    assert!(ok, "curl POP3 LIST: {pop} {err}");
    "curl: IMAP LIST, IMAP FETCH and POP3 LIST passed".into()
}

/// b IDLEs on INBOX; a submits a PEC to b over SMTPS (smtplib). The delivery point stores
/// the transport envelope and the store's change notification wakes the IDLE: EXISTS
/// arrives at once, although the fallback poll is a minute. Then another session of b
/// flags the message and the IDLE-ing one is told the new FLAGS (a flag-only change).
const IDLE_DELIVERY: &str = r#"
import imaplib, json, smtplib, ssl, sys, time
host, imap_port, smtps_port, ca, a, b = sys.argv[1:7]
ctx = ssl.create_default_context(cafile=ca)
ctx.check_hostname = False
out = {}
m = imaplib.IMAP4_SSL(host, int(imap_port), ssl_context=ctx, timeout=60)
m.login(b, "pw")
typ, data = m.select("INBOX")
out["before"] = int(data[0])
tag = m._new_tag().decode()
m.send(f"{tag} IDLE\r\n".encode())
out["idle_cont"] = m.readline().decode().strip()
smtp = smtplib.SMTP_SSL(host, int(smtps_port), context=ctx, timeout=60)
smtp.login(a, "pw")
body = (f"From: <{a}>\r\nTo: <{b}>\r\nSubject: Prova IDLE\r\nMessage-ID: <idle-1@mua.test>\r\n"
        "Date: Mon, 23 Nov 2026 10:00:00 +0100\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nCiao.\r\n")
smtp.sendmail(a, [b], body.encode())
t0 = time.time()
smtp.quit()
m.sock.settimeout(20)
lines = []
try:
    while True:
        line = m.readline().decode().strip()
        lines.append(line)
        if line.endswith("EXISTS") or not line:
            break
except Exception as e:
    lines.append("error: " + repr(e))
out["exists_secs"] = round(time.time() - t0, 3)
out["lines"] = lines
other = imaplib.IMAP4_SSL(host, int(imap_port), ssl_context=ctx, timeout=60)
other.login(b, "pw")
other.select("INBOX")
typ, data = other.store("1", "+FLAGS", "(\\Flagged)")
out["store"] = typ
t1 = time.time()
flag_lines = []
try:
    while True:
        line = m.readline().decode().strip()
        flag_lines.append(line)
        if "FETCH" in line or not line:
            break
except Exception as e:
    flag_lines.append("error: " + repr(e))
out["flags_secs"] = round(time.time() - t1, 3)
out["flag_lines"] = flag_lines
m.send(b"DONE\r\n")
out["idle_done"] = m.readline().decode().strip()
other.logout()
m.logout()
print(json.dumps(out))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_is_woken_by_pipeline_delivery_and_flag_changes() {
    let h = Harness::start().await;
    let p = h.ports.clone();
    let (a, b) = (format!("a@{DOMAIN}"), format!("b@{DOMAIN}"));
    let out = run_blocking(move || {
        let out = Command::new("python3")
            .arg("-c")
            .arg(IDLE_DELIVERY)
            .arg(p.imap.ip().to_string())
            .arg(p.imap.port().to_string())
            .arg(p.smtps.port().to_string())
            .arg(&p.ca)
            .args([&a, &b])
            .output()
            .expect("python3");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{}\n{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str::<Value>(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    })
    .await;
    println!("{out}");
    assert_eq!(out["before"], 0, "{out}");
    assert_eq!(out["idle_cont"], "+ idling", "{out}");
    let lines = out["lines"].as_array().expect("lines");
    assert_eq!(
        lines.last().and_then(Value::as_str),
        Some("* 1 EXISTS"),
        "{out}"
    );
    // The poll would take a minute; the notification takes the delivery time.
    assert!(
        out["exists_secs"].as_f64().unwrap_or(99.0) < 10.0,
        "IDLE woke late: {out}"
    );
    assert_eq!(out["store"], "OK", "{out}");
    let flag_line = out["flag_lines"]
        .as_array()
        .and_then(|l| l.last())
        .and_then(Value::as_str)
        .unwrap_or_default();
    assert!(
        flag_line.starts_with("* 1 FETCH (") && flag_line.contains("\\Flagged"),
        "{out}"
    );
    assert!(
        out["flags_secs"].as_f64().unwrap_or(99.0) < 5.0,
        "flag change reported late: {out}"
    );
    assert_eq!(
        out["idle_done"]
            .as_str()
            .map(|s| s.ends_with("OK IDLE terminated")),
        Some(true),
        "{out}"
    );
    // What IDLE announced is in the store: the PEC transport envelope.
    let baddr = PecAddress::parse(&format!("b@{DOMAIN}")).expect("b");
    let stored = h.gw.store.messages(&baddr, "INBOX").expect("messages");
    assert_eq!(stored.len(), 1);
    h.stop().await;
}

/// Sessions waiting for their client are told and closed when the server stops (IMAP
/// `* BYE`, POP3 `-ERR [SYS/TEMP]`, without the UPDATE state): an idle client never keeps
/// a stopped server, and its store, alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_are_closed_at_shutdown() {
    use tokio::io::AsyncBufReadExt;
    let h = Harness::start().await;
    let tls = pecd::tls::client_config(std::slice::from_ref(&h.ports.ca), false).expect("tls");
    let mut sessions = Vec::new();
    for addr in [h.ports.imap, h.ports.pop3] {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let s = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(
                rustls::pki_types::ServerName::try_from("localhost").unwrap(),
                tcp,
            )
            .await
            .expect("handshake");
        let mut s = tokio::io::BufReader::new(s);
        let mut greeting = String::new();
        s.read_line(&mut greeting).await.expect("greeting");
        assert!(
            greeting.starts_with("* OK") || greeting.starts_with("+OK"),
            "{greeting}"
        );
        sessions.push(s);
    }
    h.stop().await;
    for (mut s, expected) in sessions.into_iter().zip(["* BYE ", "-ERR [SYS/TEMP] "]) {
        let mut bye = String::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_line(&mut bye))
            .await
            .expect("closed at shutdown")
            .expect("read");
        assert!(bye.starts_with(expected), "{bye}");
    }
}
