//! The README's first command on a fresh machine: `pecd serve` with no configuration in an
//! empty directory creates `./pecd-data/` (dev PKI, configuration, demo mailbox, 0600
//! credentials file), starts, and a mail client can use it at once: the demo user logs in
//! over SMTPS, sends a PEC message to itself, and finds the acceptance receipt over IMAPS.
//! A restart reuses everything and creates nothing again.
//!
//! The embedded default listens on fixed loopback ports (4465 SMTPS, 9993 IMAPS, ...): this
//! is the only test that uses them.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_pecd");

/// Starts `pecd serve` (no arguments) in `cwd`; returns the child and its start-up report.
fn serve(cwd: &Path) -> (Child, Vec<String>) {
    let mut child = Command::new(BIN)
        .arg("serve")
        .current_dir(cwd)
        .env("PECD_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn pecd serve");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let lines = report(&rx);
    (child, lines)
}

/// The lines up to the last line of the start-up report ("  store  DIR").
fn report(rx: &Receiver<String>) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut lines = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let Ok(line) = rx.recv_timeout(left) else {
            break;
        };
        let last = line.trim_start().starts_with("store ");
        lines.push(line);
        if last {
            return lines;
        }
    }
    panic!("pecd serve did not finish its start-up report: {lines:#?}");
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            assert!(status.success(), "pecd serve exited with {status}");
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    panic!("pecd serve did not stop on SIGTERM");
}

fn listener(lines: &[String], name: &str) -> String {
    lines
        .iter()
        .find_map(|l| {
            let p: Vec<&str> = l.split_whitespace().collect();
            (p.len() == 2 && p[0] == name).then(|| p[1].to_string())
        })
        .unwrap_or_else(|| panic!("no {name} listener in {lines:#?}"))
}

/// Sends demo → demo over SMTPS, then waits for the acceptance receipt over IMAPS;
/// prints the receipt's subject.
const CLIENT: &str = r#"
import imaplib, smtplib, ssl, sys, time
ca, smtps, imaps, user, password = sys.argv[1:6]
ctx = ssl.create_default_context(cafile=ca)
h, p = smtps.rsplit(":", 1)
with smtplib.SMTP_SSL(h, int(p), context=ctx) as s:
    s.login(user, password)
    msg = ("From: %s\r\nTo: %s\r\nSubject: Prima prova\r\nMessage-ID: <first-run@mua.test>\r\n"
           "\r\nCiao.\r\n") % (user, user)
    s.sendmail(user, [user], msg)
h, p = imaps.rsplit(":", 1)
m = imaplib.IMAP4_SSL(h, int(p), ssl_context=ctx)
m.login(user, password)
deadline = time.time() + 30
while True:
    m.select("INBOX")
    typ, data = m.search(None, "HEADER", "X-Ricevuta", "accettazione")
    if data[0].split():
        break
    if time.time() > deadline:
        sys.exit("no acceptance receipt in INBOX")
    time.sleep(0.2)
num = data[0].split()[0]
typ, data = m.fetch(num, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
print(data[0][1].decode().strip())
m.logout()
"#;

#[test]
fn first_run_creates_a_working_provider_and_a_restart_reuses_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (child, lines) = serve(tmp.path());
    let text = lines.join("\n");
    assert!(text.contains("First run: created"), "{text}");
    assert!(text.contains("demo@pec.demo.test"), "{text}");

    let data = tmp.path().join("pecd-data");
    for f in [
        "pecd.toml",
        "certs/ca.pem",
        "certs/signing.pem",
        "certs/tls.pem",
    ] {
        assert!(data.join(f).is_file(), "{f} was not created");
    }
    let creds_path = data.join("demo-credentials.txt");
    let mode = std::fs::metadata(&creds_path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the credentials file is private");
    let creds = std::fs::read_to_string(&creds_path).unwrap();
    let field = |name: &str| {
        creds
            .lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
            .unwrap_or_else(|| panic!("no {name} in {creds}"))
    };
    let (user, password) = (field("mailbox"), field("password"));
    assert_eq!(user, "demo@pec.demo.test");
    assert!(
        text.contains(&password),
        "the password is printed once, at first run"
    );

    let smtps = listener(&lines, "smtps");
    let imaps = listener(&lines, "imaps");
    let ca = data.join("certs/ca.pem");
    if common::have("python3", "SMTP and IMAP clients") {
        let out = Command::new("python3")
            .args(["-c", CLIENT])
            .args([ca.to_str().unwrap(), &smtps, &imaps, &user, &password])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "client: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let subject = String::from_utf8_lossy(&out.stdout);
        assert!(
            subject.contains("ACCETTAZIONE: Prima prova"),
            "the acceptance receipt: {subject}"
        );
    }
    // The webmail is at the printed address: its page, and the demo user's login.
    let webmail = lines
        .iter()
        .find_map(|l| l.trim_start().strip_prefix("webmail"))
        .map(|u| u.trim().trim_end_matches('/').to_string())
        .unwrap_or_else(|| panic!("no webmail address in {text}"));
    if common::have("curl", "the webmail over HTTPS") {
        let host = webmail.trim_start_matches("https://").to_string();
        let web = common::jmap::Web {
            base: webmail.clone(),
            ca: ca.clone(),
            host,
        };
        let page = web.request("GET", "/", &[]);
        assert_eq!(page.status, 200);
        assert!(
            page.header("content-type")
                .unwrap()
                .starts_with("text/html")
        );
        assert!(
            String::from_utf8_lossy(&page.body).contains("lang=\"it\""),
            "Italian first"
        );
        let token = web.login(&user, &password);
        assert_eq!(web.session(&token)["username"], user.as_str());
    }
    stop(child);

    // A restart finds everything in place: nothing is created again, same credentials.
    let (child, lines) = serve(tmp.path());
    let text = lines.join("\n");
    assert!(!text.contains("First run"), "{text}");
    assert!(
        !text.contains(&password),
        "the password is not printed again"
    );
    assert_eq!(std::fs::read_to_string(&creds_path).unwrap(), creds);
    stop(child);

    // A SIGTERM as soon as the start-up report ends is a graceful stop (exit status 0),
    // never the signal's default action: the handlers are in place before the report.
    for _ in 0..3 {
        let (child, _) = serve(tmp.path());
        stop(child);
    }
}
