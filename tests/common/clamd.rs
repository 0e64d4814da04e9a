//! A real clamd (Debian's clamav-daemon) for the tests, with a signature database the test
//! writes itself (no freshclam, no network): an EICAR body signature. `start()` returns
//! `None`, after printing why, when clamd is not installed.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Clamd {
    child: Option<Child>,
    pub port: u16,
    _dir: tempfile::TempDir,
}

/// The EICAR test string, assembled at run time so this file is not flagged itself.
pub fn eicar() -> Vec<u8> {
    [
        r"X5O!P%@AP[4\PZX54(P^)7CC)7}$",
        "EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*",
    ]
    .concat()
    .into_bytes()
}

fn find() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PECD_CLAMD") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join("clamd"))
        .find(|p| p.is_file())
}

impl Clamd {
    pub fn start() -> Option<Clamd> {
        let Some(bin) = find() else {
            super::skip(
                "clamd is not installed (Debian package clamav-daemon); the antivirus test did not run",
            );
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        std::fs::create_dir_all(&db).unwrap();
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
        std::fs::write(
            db.join("pecd-test.ndb"),
            format!("Pecd.Test.EICAR:0:*:{}\n", hex::encode(eicar())),
        )
        .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let conf = dir.path().join("clamd.conf");
        let d = dir.path().display();
        std::fs::write(
            &conf,
            format!(
                "DatabaseDirectory {d}/db\nTCPSocket {port}\nTCPAddr 127.0.0.1\nForeground yes\nLogFile {d}/clamd.log\nPidFile {d}/clamd.pid\nTemporaryDirectory {d}/tmp\nStreamMaxLength 60M\nMaxFileSize 60M\nMaxScanSize 60M\nSelfCheck 0\n"
            ),
        )
        .unwrap();
        let child = Command::new(&bin)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start clamd");
        let c = Clamd {
            child: Some(child),
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                use std::io::{Read, Write};
                let _ = s.write_all(b"zPING\0");
                let mut buf = [0u8; 8];
                if s.read(&mut buf)
                    .map(|n| buf[..n].starts_with(b"PONG"))
                    .unwrap_or(false)
                {
                    return Some(c);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("clamd did not answer PING within 30 s");
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Clamd {
    fn drop(&mut self) {
        self.kill();
    }
}
