//! A real `pecd serve` child process on loopback for integration tests: its own directory
//! (made by `pecd init`), listeners on free ports (port 0, read back from its start-up
//! report), mailboxes made with `pecd mailbox add`, stopped with SIGTERM.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_pecd");

pub struct Server {
    pub dir: tempfile::TempDir,
    pub domain: String,
    pub child: Option<Child>,
    pub addrs: Vec<(String, SocketAddr)>,
    /// A standby's output, until it takes over and its start-up report is read.
    pub standby: Option<std::sync::mpsc::Receiver<String>>,
}

/// Copies the files and directories under `from` into `to` (sockets and the like
/// skipped).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let kind = entry.file_type().unwrap();
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copy_tree(&entry.path(), &target);
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

pub fn pecd(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().expect("run pecd")
}

impl Server {
    /// `pecd init` for `domain`, listeners on free loopback ports, the given mailboxes.
    pub fn new(domain: &str, mailboxes: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = pecd(&[
            "init",
            "--dir",
            dir.path().to_str().unwrap(),
            "--domain",
            domain,
        ]);
        assert!(
            out.status.success(),
            "init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cfg = dir.path().join("pecd.toml");
        let text = std::fs::read_to_string(&cfg).unwrap();
        let mut edited = String::new();
        for line in text.lines() {
            let l = match line.split_once(" = ") {
                Some((k, _))
                    if ["smtps", "submission", "https", "admin"].contains(&k.trim())
                        && line.contains("127.0.0.1:") =>
                {
                    format!("{k} = \"127.0.0.1:0\"")
                }
                Some((k, _))
                    if ["smtp", "imaps", "pop3s"].contains(&k.trim())
                        && line.contains("127.0.0.1:") =>
                {
                    format!("{k} = \"off\"")
                }
                _ => line.to_string(),
            };
            edited.push_str(&l);
            edited.push('\n');
        }
        std::fs::write(&cfg, edited).unwrap();
        let s = Self {
            dir,
            domain: domain.into(),
            child: None,
            addrs: Vec::new(),
            standby: None,
        };
        for (addr, pw) in mailboxes {
            s.admin(&["mailbox", "add", addr, "--password", pw, "--keep-password"]);
        }
        s
    }

    /// Turns listeners that `new` switched off back on, on free loopback ports.
    pub fn enable(&self, listeners: &[&str]) {
        self.edit_config(|text| {
            text.lines()
                .map(|line| match line.split_once(" = ") {
                    Some((k, "\"off\"")) if listeners.contains(&k.trim()) => {
                        format!("{k} = \"127.0.0.1:0\"\n")
                    }
                    _ => format!("{line}\n"),
                })
                .collect()
        });
    }

    /// Sets keys of `[limits]` (`key = value` lines), replacing those already there.
    pub fn limits(&self, lines: &str) {
        self.edit_config(|mut text| {
            for set in lines.lines().filter(|l| !l.trim().is_empty()) {
                let key = set.split_once(" = ").map_or(set, |(k, _)| k).trim();
                text = text
                    .lines()
                    .filter(|l| !l.starts_with(&format!("{key} = ")))
                    .map(|l| format!("{l}\n"))
                    .collect();
                text = text.replacen("[limits]\n", &format!("[limits]\n{set}\n"), 1);
            }
            text
        });
    }

    /// The server's resident set size, from `/proc/PID/status` (Linux).
    pub fn rss_bytes(&self) -> Option<u64> {
        self.proc_status_bytes("VmRSS:")
    }

    /// The server's peak resident set size (its high-water mark, `VmHWM`): nothing
    /// between two looks is missed.
    pub fn peak_rss_bytes(&self) -> Option<u64> {
        self.proc_status_bytes("VmHWM:")
    }

    fn proc_status_bytes(&self, field: &str) -> Option<u64> {
        let pid = self.child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with(field))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// Rewrites the configuration file.
    pub fn edit_config(&self, f: impl FnOnce(String) -> String) {
        let text = std::fs::read_to_string(self.config()).unwrap();
        std::fs::write(self.config(), f(text)).unwrap();
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("pecd.toml")
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("certs/ca.pem")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Runs an admin subcommand with `--config`; panics on failure.
    pub fn admin(&self, args: &[&str]) -> String {
        let mut a: Vec<&str> = args.to_vec();
        let cfg = self.config();
        a.extend(["--config", cfg.to_str().unwrap()]);
        let out = pecd(&a);
        assert!(
            out.status.success(),
            "pecd {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn start(&mut self) {
        self.start_in(&[]);
    }

    /// Starts `pecd serve` through `wrapper` (a command that ends by running the arguments
    /// it is given, e.g. `unshare -m sh -c '...; exec "$@"' sh`); `&[]` runs it directly.
    pub fn start_in(&mut self, wrapper: &[&str]) {
        self.spawn(wrapper, false);
    }

    /// Starts `pecd --log-format json serve` logging at `info`; returns its log lines.
    pub fn start_json_logs(&mut self) -> std::sync::mpsc::Receiver<String> {
        self.spawn(&[], true).expect("the log lines")
    }

    fn spawn(
        &mut self,
        wrapper: &[&str],
        json_logs: bool,
    ) -> Option<std::sync::mpsc::Receiver<String>> {
        let (child, stdout, logs) = self.launch(wrapper, json_logs);
        self.child = Some(child);
        self.read_report(&stdout);
        logs
    }

    /// Starts `pecd serve` on a store another node writes (`[store] standby = true`):
    /// returns the line in which it says it waits, naming that node; its start-up report
    /// is read once it took over ([`Server::wait_took_over`]).
    pub fn start_standby(&mut self) -> String {
        let (child, stdout, _) = self.launch(&[], false);
        self.child = Some(child);
        let mut seen = Vec::new();
        self.addrs.clear();
        let line = loop {
            let line = stdout
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("the standby said it waits; it said {seen:?}"));
            if line.trim_start().starts_with("standby") {
                break line;
            }
            // Its admin listener (health), open while it waits.
            if let Some(addr) = line.trim_start().strip_prefix("admin") {
                self.addrs
                    .push(("admin".into(), addr.trim().parse().unwrap()));
            }
            seen.push(line);
        };
        self.standby = Some(stdout);
        line
    }

    /// Waits for a standby to take over (its start-up report); how long that took.
    pub fn wait_took_over(&mut self) -> Duration {
        let started = Instant::now();
        let stdout = self.standby.take().expect("a standby");
        self.read_report(&stdout);
        started.elapsed()
    }

    fn launch(
        &self,
        wrapper: &[&str],
        json_logs: bool,
    ) -> (
        Child,
        std::sync::mpsc::Receiver<String>,
        Option<std::sync::mpsc::Receiver<String>>,
    ) {
        let cfg = self.config();
        let serve = [BIN, "serve", "--config", cfg.to_str().unwrap()];
        let argv: Vec<&str> = wrapper.iter().copied().chain(serve).collect();
        let mut cmd = Command::new(argv[0]);
        cmd.args(&argv[1..]).stdout(Stdio::piped());
        if json_logs {
            cmd.env("PECD_LOG", "info")
                .env("PECD_LOG_FORMAT", "json")
                .stderr(Stdio::piped());
        } else {
            cmd.env("PECD_LOG", "warn").stderr(Stdio::inherit());
        }
        let mut child = cmd.spawn().expect("spawn pecd serve");
        let logs = child.stderr.take().map(|stderr| {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            rx
        });
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        (child, rx, logs)
    }

    /// Reads the start-up report: the listeners' addresses, up to its last line.
    fn read_report(&mut self, rx: &std::sync::mpsc::Receiver<String>) {
        self.addrs.clear();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let Ok(line) = rx.recv_timeout(Duration::from_secs(60)) else {
                break;
            };
            let parts: Vec<&str> = line.split_whitespace().collect();
            if parts.len() == 2
                && [
                    "smtps",
                    "submission",
                    "smtp",
                    "imaps",
                    "pop3s",
                    "https",
                    "admin",
                    "https_cns",
                ]
                .contains(&parts[0])
            {
                self.addrs
                    .push((parts[0].into(), parts[1].parse().unwrap()));
            }
            if line.trim_start().starts_with("store ") {
                break;
            }
        }
        assert!(
            !self.addrs.is_empty(),
            "pecd serve did not report its listeners"
        );
    }

    /// A second node of this provider: a directory of its own holding a copy of this
    /// one's (configuration, keys, certificates, store.dir as it is now), so the same
    /// configuration file describes it; listeners on their own free ports.
    pub fn another_node(&self) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        copy_tree(self.dir.path(), dir.path());
        Server {
            dir,
            domain: self.domain.clone(),
            child: None,
            addrs: Vec::new(),
            standby: None,
        }
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Waits up to `within` for the server to exit on its own; its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        let c = self.child.as_mut()?;
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                self.child = None;
                return status.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn addr(&self, name: &str) -> SocketAddr {
        self.addrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
            .expect(name)
    }

    /// SIGTERM and wait: the server drains its local work and flushes the store.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    panic!("pecd serve did not stop on SIGTERM");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// SIGKILL: no chance to flush or drain.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The mailbox `who` as `pecd mailbox list --json` shows it.
    pub fn mailbox_json(&self, who: &str) -> serde_json::Value {
        self.admin(&["mailbox", "list", "--json"])
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a JSON line"))
            .find(|m| m["address"] == who)
            .unwrap_or_else(|| panic!("{who} is listed"))
    }

    /// Runs a scenario of tests/clients/imap_scenarios.py (needs `imaps` and `smtps`);
    /// returns its JSON.
    pub fn imap(&self, scenario: &str, args: &[&str]) -> serde_json::Value {
        let imaps = self.addr("imaps");
        let pop3 = self
            .addrs
            .iter()
            .find(|(n, _)| n == "pop3s")
            .map_or(0, |(_, a)| a.port());
        let ports = [
            imaps.port().to_string(),
            pop3.to_string(),
            self.addr("smtps").port().to_string(),
        ];
        self.client("imap_scenarios.py", scenario, imaps, &ports, args)
    }

    /// Runs a scenario of tests/clients/smtp_scenarios.py; returns its JSON.
    pub fn smtp(&self, scenario: &str, args: &[&str]) -> serde_json::Value {
        let smtps = self.addr("smtps");
        let ports = [
            smtps.port().to_string(),
            self.addr("submission").port().to_string(),
        ];
        self.client("smtp_scenarios.py", scenario, smtps, &ports, args)
    }

    /// `python3 tests/clients/SCRIPT SCENARIO HOST PORTS... CA ARGS...`, its stdout as JSON.
    fn client(
        &self,
        script: &str,
        scenario: &str,
        host: SocketAddr,
        ports: &[String],
        args: &[&str],
    ) -> serde_json::Value {
        let script = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/clients")
            .join(script);
        let out = Command::new("python3")
            .arg(script)
            .arg(scenario)
            .arg(host.ip().to_string())
            .args(ports)
            .arg(self.ca())
            .args(args)
            .output()
            .expect("python3");
        assert!(
            out.status.success(),
            "{scenario}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{scenario}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `pecd log export` of the server's store, without its last line (the trailer, signed
/// at export time).
pub fn exported(s: &Server) -> Vec<String> {
    let file = s.dir.path().join("export.jsonl");
    s.admin(&["log", "export", file.to_str().unwrap()]);
    let text = std::fs::read_to_string(&file).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let trailer = lines.pop().expect("a trailer");
    assert!(trailer.to_lowercase().contains("trailer"), "{trailer}");
    lines
}

/// [`exported`], and `pecd log verify` of that export, which must pass.
pub fn exported_and_verified(s: &Server) -> Vec<String> {
    let lines = exported(s);
    let file = s.dir.path().join("export.jsonl");
    let out = pecd(&[
        "log",
        "verify",
        file.to_str().unwrap(),
        "--config",
        s.config().to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    lines
}

/// The SHA-256 digests of every message of each mailbox in `who` (password "pw"), read
/// over IMAP.
pub fn digests(s: &Server, who: &[&str]) -> Vec<serde_json::Value> {
    who.iter()
        .map(|w| s.imap("digests", &[w, "pw"])["sha256"].clone())
        .collect()
}

/// Waits (up to a minute) until mailbox `who` holds `n` messages.
pub fn wait_for_messages(s: &Server, who: &str, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while s.mailbox_json(who)["messages"].as_u64() != Some(n) {
        assert!(
            Instant::now() < deadline,
            "{who}: {}",
            s.mailbox_json(who)["messages"]
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts the server (checking first, with `before`, that the two mailboxes hold the
/// messages of those digests), sends one PEC message from `a` to `b` (password "pw") with
/// the test PEC client, waits until `a` holds `a_holds` messages and `b` `b_holds`, stops
/// it; the two mailboxes' digests and the exported trace log ([`exported`]).
pub fn one_pec_message(
    s: &mut Server,
    a: &str,
    b: &str,
    (a_holds, b_holds): (u64, u64),
    before: Option<(&[serde_json::Value], &str)>,
) -> (Vec<serde_json::Value>, Vec<String>) {
    s.start();
    if let Some((digested, what)) = before {
        assert_eq!(digests(s, &[a, b]), digested, "{what}");
    }
    s.imap("pec", &[a, "pw", b, "pw"]);
    wait_for_messages(s, a, a_holds);
    wait_for_messages(s, b, b_holds);
    let d = digests(s, &[a, b]);
    s.stop();
    (d, exported(s))
}

/// The server moved onto `config` (its store migrated there): the mailboxes hold the
/// messages of `before` at start, a second PEC message goes from `a` to `b`, and the trace
/// log, exported and verified, continues `before_export`. `on` names the new engine in
/// the messages of failed checks. Its digests and export.
pub fn second_message_on(
    s: &mut Server,
    config: &Path,
    (a, b): (&str, &str),
    (before, before_export): (&[serde_json::Value], &[String]),
    on: &str,
) -> (Vec<serde_json::Value>, Vec<String>) {
    std::fs::copy(config, s.config()).unwrap();
    let (d, export) = one_pec_message(
        s,
        a,
        b,
        (4, 2),
        Some((before, &format!("the same messages, from {on}"))),
    );
    assert_eq!(exported_and_verified(s), export);
    assert!(
        export.len() > before_export.len() && export.starts_with(before_export),
        "the chain continued on {on} from where it was left"
    );
    (d, export)
}

/// `pecd store migrate --config FROM --to TO EXTRA...`.
fn run_migrate(from: &Path, to: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "store",
        "migrate",
        "--config",
        from.to_str().unwrap(),
        "--to",
        to.to_str().unwrap(),
    ];
    args.extend(extra);
    pecd(&args)
}

/// `pecd store migrate --config FROM --to TO`, which must fail; its standard error.
#[allow(dead_code)]
pub fn migrate_refused(from: &Path, to: &Path) -> String {
    let out = run_migrate(from, to, &[]);
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `pecd store migrate --config FROM --to TO --json EXTRA...`, which must succeed; its
/// JSON report.
pub fn migrate(from: &Path, to: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["--json"];
    args.extend(extra);
    let out = run_migrate(from, to, &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Blob files under a `dir`-backend layout (`blobs/ab/<64 hex>`) in the store directory
/// `data`.
#[allow(dead_code)]
pub fn local_blob_files(data: &Path) -> usize {
    let Ok(d1s) = std::fs::read_dir(data.join("blobs")) else {
        return 0;
    };
    d1s.flatten()
        .filter(|e| e.file_name().len() == 2)
        .flat_map(|d1| std::fs::read_dir(d1.path()).into_iter().flatten().flatten())
        .filter(|f| f.file_name().len() == 64)
        .count()
}
