//! A real spamd (Debian's SpamAssassin 4, packages `spamd` and `spamassassin`) for the
//! tests: local rules only (`--local`, no DNS or network tests), Bayes off, its own site
//! configuration and home in a temporary directory. `start()` returns `None`, after the
//! printed skip, when spamd is not installed.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Spamd {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

/// The GTUBE line (SpamAssassin's "Generic Test for Unsolicited Bulk Email").
pub const GTUBE: &str = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";

fn find() -> Option<PathBuf> {
    ["/usr/sbin/spamd", "/usr/bin/spamd", "/usr/local/bin/spamd"]
        .map(PathBuf::from)
        .into_iter()
        .find(|p| p.is_file())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

impl Spamd {
    pub fn start() -> Option<Spamd> {
        let Some(bin) = find() else {
            super::skip(
                "spamd is not installed (Debian packages spamd, spamassassin); the antispam \
                 test did not run",
            );
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        // The site configuration: the plugin loaders (*.pre) of the installed SpamAssassin,
        // and a local.cf that keeps the test hermetic.
        let site = dir.path().join("site");
        std::fs::create_dir_all(&site).unwrap();
        for e in std::fs::read_dir("/etc/spamassassin").unwrap().flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "pre") {
                std::fs::copy(&p, site.join(e.file_name())).unwrap();
            }
        }
        std::fs::write(
            site.join("local.cf"),
            "use_bayes 0\nbayes_auto_learn 0\nskip_rbl_checks 1\nrequired_score 5.0\n",
        )
        .unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cmd = Command::new(&bin);
        cmd.arg(format!("--listen=127.0.0.1:{port}"))
            .args([
                "--local",
                "--nouser-config",
                "--max-children=2",
                "--min-children=1",
            ])
            .arg(format!("--siteconfigpath={}", site.display()))
            .arg(format!("--helper-home-dir={}", home.display()))
            .arg(format!(
                "--pidfile={}",
                dir.path().join("spamd.pid").display()
            ))
            .arg("--syslog=stderr")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("spamd.log")).unwrap());
        if is_root() {
            // spamd will not scan as root; its home is the temporary directory.
            let _ = Command::new("chmod")
                .arg("-R")
                .arg("a+rwX")
                .arg(dir.path())
                .status();
            cmd.args(["-u", "nobody"]);
        }
        let child = cmd.spawn().expect("start spamd");
        let s = Spamd {
            child: Some(child),
            port,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        while Instant::now() < deadline {
            if s.pings() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "spamd did not answer PING within 90 s: {}",
            std::fs::read_to_string(s.log()).unwrap_or_default()
        );
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("spamd.log")
    }

    /// spamd's own log so far (for failure messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    /// True when spamd answers `PING` with `PONG`.
    pub fn pings(&self) -> bool {
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = s.write_all(b"PING SPAMC/1.5\r\n\r\n");
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        buf.windows(4).any(|w| w == b"PONG")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops spamd with SIGTERM, on which the preforking parent stops its children too
    /// (a SIGKILL would leave them serving the listening socket).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
            let deadline = Instant::now() + Duration::from_secs(15);
            while self.pings() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

impl Drop for Spamd {
    fn drop(&mut self) {
        self.kill();
    }
}
