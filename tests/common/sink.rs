//! A small independent SMTP receiver (tests/clients/smtp_sink.py) standing in for another
//! provider's or an ordinary domain's mail server: STARTTLS with the certificate of the dev
//! PKI in `pki_dir`, each message written to a file.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Sink {
    child: Child,
    pub port: u16,
    out: tempfile::TempDir,
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sink {
    pub fn start(pki_dir: &Path, delay_secs: f32) -> Sink {
        Sink::start_with(pki_dir, delay_secs, &[])
    }

    pub fn start_with(pki_dir: &Path, delay_secs: f32, env: &[(&str, &str)]) -> Sink {
        let out = tempfile::tempdir().unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/smtp_sink.py");
        let mut child = Command::new("python3")
            .envs(env.iter().copied())
            .arg(script)
            .arg(pki_dir.join("certs/tls.pem"))
            .arg(pki_dir.join("certs/tls.key"))
            .arg(out.path())
            .arg(delay_secs.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 sink");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().expect("sink port");
        Sink { child, port, out }
    }

    pub fn messages(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.out.path())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .collect();
        v.sort();
        v
    }

    /// The sink's notes on message `m`: whether TLS was on, the MAIL FROM parameters.
    pub fn meta(&self, m: &Path) -> String {
        std::fs::read_to_string(m.with_extension("meta")).unwrap()
    }

    /// The connections (numbered from 1 in accept order) that the client ended with QUIT.
    pub fn quits(&self) -> Vec<usize> {
        let mut v: Vec<usize> = std::fs::read_dir(self.out.path())
            .unwrap()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_prefix("conn-")?
                    .strip_suffix(".quit")?
                    .parse()
                    .ok()
            })
            .collect();
        v.sort();
        v
    }

    pub fn wait_for(&self, n: usize) -> Vec<PathBuf> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let m = self.messages();
            if m.len() >= n {
                return m;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the peer did not receive {n} message(s)");
    }
}
