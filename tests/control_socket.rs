//! The admin subcommands work while the server runs: the real server runs in-process (so the
//! test can look at its store and index), the real `pecd` binary is run against the same
//! configuration, finds the store locked and goes through `<store.dir>/control.sock`.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;

use pecd::config::Config;
use pecd::control::{Client, Request};
use pecd::gateway::Gateway;
use pecd::pec::address::{Domain, PecAddress};
use pecd::store::mailbox::PasswordCheck;

fn pecd_sync(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_pecd"))
        .args(args)
        .env("PECD_LOG", "warn")
        .output()
        .expect("running pecd")
}

/// Runs the binary off the runtime's threads, so the in-process server keeps serving.
async fn pecd(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        pecd_sync(&a)
    })
    .await
    .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `pecd init` into a fresh dir, listeners on loopback ports chosen by the OS or off.
fn init(dir: &Path, domain: &str) -> PathBuf {
    let o = pecd_sync(&["init", "--dir", dir.to_str().unwrap(), "--domain", domain]);
    assert!(o.status.success(), "init: {}", text(&o));
    let cfg = dir.join("pecd.toml");
    let t = std::fs::read_to_string(&cfg).unwrap();
    let mut out = String::new();
    for line in t.lines() {
        let l = match line.split_once(" = ") {
            Some(("smtps", _)) => "smtps = \"127.0.0.1:0\"".to_string(),
            Some((k, _))
                if ["smtp", "submission", "imaps", "pop3s", "https", "admin"].contains(&k) =>
            {
                format!("{k} = \"off\"")
            }
            _ => line.to_string(),
        };
        out.push_str(&l);
        out.push('\n');
    }
    std::fs::write(&cfg, out).unwrap();
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_subcommands_work_while_the_server_runs() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = init(dir.path(), "ctl.example");
    let cfg_s = cfg.to_str().unwrap().to_string();
    let c = cfg_s.as_str();

    let config = Config::load(&cfg).unwrap();
    let store_dir = config.store.dir.clone();
    let gw: Arc<Gateway> =
        tokio::task::spawn_blocking(move || Gateway::open(config, pecd::clock::system()).unwrap())
            .await
            .unwrap();
    let running = pecd::server::start(gw.clone()).await.unwrap();

    // The socket exists, owner-only.
    let sock = pecd::control::socket_path(&store_dir);
    let mode = {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(mode, 0o600, "socket mode");

    // mailbox add through the socket.
    let o = pecd(&[
        "mailbox",
        "add",
        "x@ctl.example",
        "--password",
        "p",
        "--config",
        c,
    ])
    .await;
    assert!(o.status.success(), "mailbox add: {}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.starts_with("added x@ctl.example (quota "),
        "{}",
        text(&o)
    );
    let x = PecAddress::parse("x@ctl.example").unwrap();
    let info = gw
        .store
        .mailbox(&x)
        .unwrap()
        .expect("the mailbox exists in the server");
    assert_eq!(
        gw.check_password(x.clone(), "p".into()).await,
        Some(PasswordCheck::MustChange),
        "the password works, and the owner must change it first"
    );
    assert!(info.password_provisional);

    // An error travels back: adding it again fails, non-zero, with the store's message.
    let o = pecd(&[
        "mailbox",
        "add",
        "x@ctl.example",
        "--password",
        "p",
        "--config",
        c,
    ])
    .await;
    assert!(!o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("adding x@ctl.example: mailbox x@ctl.example already exists"),
        "{}",
        text(&o)
    );
    let o = pecd(&[
        "mailbox",
        "add",
        "y@other.example",
        "--password",
        "p",
        "--config",
        c,
    ])
    .await;
    assert!(!o.status.success(), "foreign domain: {}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not served"),
        "{}",
        text(&o)
    );

    // quota, passwd.
    let o = pecd(&["mailbox", "quota", "x@ctl.example", "12345", "--config", c]).await;
    assert!(o.status.success(), "quota: {}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "quota of x@ctl.example set to 12345 bytes\n"
    );
    assert_eq!(gw.store.mailbox(&x).unwrap().unwrap().quota_bytes, 12345);
    // options: opting in to anomaly envelopes reaches the running server's store.
    let o = pecd(&[
        "mailbox",
        "options",
        "x@ctl.example",
        "--accept-anomalies",
        "true",
        "--config",
        c,
    ])
    .await;
    assert!(o.status.success(), "options: {}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "x@ctl.example: accept-anomalies=true\n"
    );
    assert!(
        gw.store
            .mailbox(&x)
            .unwrap()
            .unwrap()
            .options
            .accept_anomalies
    );
    let o = pecd(&[
        "mailbox",
        "passwd",
        "x@ctl.example",
        "--password",
        "q",
        "--keep-password",
        "--config",
        c,
    ])
    .await;
    assert!(o.status.success(), "passwd: {}", text(&o));
    assert_eq!(
        gw.check_password(x.clone(), "q".into()).await,
        Some(PasswordCheck::Valid),
        "--keep-password: usable at once"
    );

    // list --json: one object per line, as the store gives it.
    let o = pecd(&["mailbox", "list", "--json", "--config", c]).await;
    assert!(o.status.success(), "list: {}", text(&o));
    let listed: Vec<pecd::store::MailboxInfo> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mine = listed.iter().find(|m| m.address == x).expect("x is listed");
    assert_eq!(mine.created, info.created);
    assert_eq!(mine.quota_bytes, 12345);
    let o = pecd(&["mailbox", "list", "--config", c]).await;
    assert!(o.status.success(), "list: {}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("ADDRESS"));

    // log --json: the admin events are there.
    let o = pecd(&["log", "--json", "--config", c]).await;
    assert!(o.status.success(), "log: {}", text(&o));
    let records: Vec<pecd::trace::TraceRecord> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!records.is_empty(), "{}", text(&o));
    let o = pecd(&[
        "log",
        "--mailbox",
        "x@ctl.example",
        "--limit",
        "1",
        "--config",
        c,
    ])
    .await;
    assert!(o.status.success(), "log filtered: {}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).lines().count(),
        1,
        "{}",
        text(&o)
    );

    // log verify (live) and log export + verify of the export.
    let o = pecd(&["log", "verify", "--config", c]).await;
    assert_eq!(o.status.code(), Some(0), "log verify: {}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("intact: "));
    let export = dir.path().join("export.jsonl");
    let o = pecd(&["log", "export", export.to_str().unwrap(), "--config", c]).await;
    assert!(o.status.success(), "log export: {}", text(&o));
    let lines = std::fs::read_to_string(&export).unwrap().lines().count();
    assert!(lines >= records.len(), "{lines} lines");
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        format!("exported {lines} lines to {}\n", export.display())
    );
    let o = pecd(&["log", "verify", export.to_str().unwrap(), "--config", c]).await;
    assert_eq!(o.status.code(), Some(0), "verify export: {}", text(&o));

    // index import of another provider's entry takes effect without a restart.
    let other = tempfile::tempdir().unwrap();
    let other_cfg = init(other.path(), "other.example");
    let ldif = dir.path().join("other.ldif");
    let o = pecd(&[
        "index",
        "export",
        "--config",
        other_cfg.to_str().unwrap(),
        "--out",
        ldif.to_str().unwrap(),
    ])
    .await;
    assert!(o.status.success(), "index export: {}", text(&o));
    let other_domain = Domain::parse("other.example").unwrap();
    assert!(!gw.index().is_pec_domain(&other_domain));
    let o = pecd(&["index", "import", ldif.to_str().unwrap(), "--config", c]).await;
    assert!(o.status.success(), "index import: {}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("imported 1 provider entry"));
    assert!(
        gw.index().is_pec_domain(&other_domain),
        "the running server uses the import"
    );

    // del.
    let o = pecd(&["mailbox", "del", "x@ctl.example", "--config", c]).await;
    assert!(o.status.success(), "del: {}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "deleted x@ctl.example\n"
    );
    assert!(gw.store.mailbox(&x).unwrap().is_none());

    // Protocol edges, spoken directly: a bad request line gets an error and the connection
    // stays usable; an overlong line is refused.
    {
        use std::io::{BufRead, BufReader, Write};
        let sock = sock.clone();
        tokio::task::spawn_blocking(move || {
            let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            s.write_all(b"{\"op\":\"nonsense\"}\n").unwrap();
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            assert!(line.starts_with("{\"error\":\"bad request"), "{line}");
            s.write_all(b"{\"op\":\"index_reload\"}\n").unwrap();
            line.clear();
            r.read_line(&mut line).unwrap();
            assert_eq!(line, "{\"done\":{}}\n");
            let big = vec![b'x'; pecd::control::MAX_REQUEST_BYTES + 10];
            let _ = s.write_all(&big);
            line.clear();
            r.read_line(&mut line).unwrap();
            assert!(line.contains("longer than"), "{line}");
        })
        .await
        .unwrap();
    }
    let mut client = tokio::task::spawn_blocking({
        let d = store_dir.clone();
        move || Client::connect(&d).unwrap()
    })
    .await
    .unwrap();
    let r = tokio::task::spawn_blocking(move || {
        client
            .call(
                &Request::MailboxDel {
                    address: "nobody@ctl.example".into(),
                },
                |_| Ok(()),
            )
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await
    .unwrap();
    assert!(r.is_err(), "deleting a missing mailbox fails: {r:?}");

    running.shutdown().await;
    assert!(!sock.exists(), "the socket is removed at stop");
    drop(gw);

    // With the server stopped, the same commands open the store directly.
    let o = pecd(&["mailbox", "list", "--json", "--config", c]).await;
    assert!(o.status.success(), "list after stop: {}", text(&o));
}

/// A socket left by a crashed server is replaced at start; with no server, the CLI does not
/// try it (it opens the store directly).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_socket_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = init(dir.path(), "stale.example");
    let config = Config::load(&cfg).unwrap();
    let sock = pecd::control::socket_path(&config.store.dir);
    std::fs::create_dir_all(&config.store.dir).unwrap();
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    let c = cfg.to_str().unwrap().to_string();
    let o = pecd(&["mailbox", "list", "--config", &c]).await;
    assert!(o.status.success(), "no server: {}", text(&o));

    let gw =
        tokio::task::spawn_blocking(move || Gateway::open(config, pecd::clock::system()).unwrap())
            .await
            .unwrap();
    let running = pecd::server::start(gw.clone()).await.unwrap();
    let o = pecd(&[
        "mailbox",
        "add",
        "a@stale.example",
        "--password",
        "p",
        "--config",
        &c,
    ])
    .await;
    assert!(o.status.success(), "through the new socket: {}", text(&o));
    running.shutdown().await;
}
