//! Test support: a real PostgreSQL cluster of the test's own, made with Debian's
//! `initdb` in a temporary directory and started with `pg_ctl` on a loopback port, as the
//! tests do for slapd and clamd. Stopped (immediate mode) and removed on drop.
//!
//! Standalone (std and `tempfile` only) so that the library's unit tests and the
//! integration tests (`tests/common`) include this same file.
//!
//! Run as root (CI), the cluster belongs to the `postgres` user the Debian package makes:
//! `initdb` refuses root.
#![allow(dead_code)] // each includer uses part of it

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A running cluster; user `pecd` (superuser, trust authentication on loopback only).
pub struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

/// Where Debian's PostgreSQL binaries are (`PECD_PG_BIN` overrides): the newest
/// `/usr/lib/postgresql/<version>/bin`.
pub fn pg_bin() -> Option<PathBuf> {
    if let Some(b) = std::env::var_os("PECD_PG_BIN") {
        return Some(PathBuf::from(b));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, b)| b)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(54329)
}

impl PgCluster {
    /// Makes and starts a cluster. `Err` says why it cannot run here (no PostgreSQL
    /// installed, no `postgres` user as root) or what failed.
    pub fn start() -> Result<Self, String> {
        let bin = pg_bin().ok_or(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb; .ci/run installs it)",
        )?;
        let as_postgres = std::fs::metadata("/proc/self")
            .map(|m| m.uid() == 0)
            .unwrap_or(false);
        let dir = tempfile::Builder::new()
            .prefix("pecd-pg")
            .tempdir()
            .map_err(|e| format!("temporary directory: {e}"))?;
        if as_postgres {
            let st = Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(dir.path())
                .status()
                .map_err(|e| format!("chown: {e}"))?;
            if !st.success() {
                return Err("running as root and no `postgres` user to own the cluster".into());
            }
        }
        let mut c = PgCluster {
            dir,
            bin,
            port: 0,
            as_postgres,
        };
        let data = c.dir.path().join("data");
        c.run(
            "initdb",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-U".as_ref(),
                "pecd".as_ref(),
                "--auth=trust".as_ref(),
                "-E".as_ref(),
                "UTF8".as_ref(),
                "--locale=C".as_ref(),
                "--no-sync".as_ref(),
            ],
        )?;
        let conf = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).map_err(|e| e.to_string())?;
        text.push_str("\nlisten_addresses = '127.0.0.1'\n");
        std::fs::write(&conf, text).map_err(|e| e.to_string())?;
        // A port taken meanwhile by another test: try again with another.
        let mut last = String::new();
        for _ in 0..5 {
            c.port = free_port();
            match c.restart() {
                Ok(()) => return Ok(c),
                Err(e) => {
                    let log = std::fs::read_to_string(c.dir.path().join("log")).unwrap_or_default();
                    last = format!("{e}\n{log}");
                }
            }
        }
        Err(last)
    }

    fn run(&self, tool: &str, args: &[&std::ffi::OsStr]) -> Result<(), String> {
        let exe = self.bin.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let out = cmd
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .map_err(|e| format!("{}: {e}", exe.display()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{tool} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A key=value connection string to database `postgres` over TCP on loopback.
    pub fn url(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=pecd dbname=postgres sslmode=disable",
            self.port
        )
    }

    /// The cluster's directory (its data in `data/`, its log in `log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops the server now (fast shutdown), as an operator's restart would.
    pub fn stop(&self) -> Result<(), String> {
        let data = self.dir.path().join("data");
        self.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-m".as_ref(),
                "fast".as_ref(),
                "-w".as_ref(),
                "stop".as_ref(),
            ],
        )
    }

    /// Starts the server on its port (again, after [`PgCluster::stop`]).
    pub fn restart(&self) -> Result<(), String> {
        let data = self.dir.path().join("data");
        let log = self.dir.path().join("log");
        // listen_addresses is in postgresql.conf (written at start, widened by
        // `listen_also`), not here: a command-line setting would win over the file.
        let opts = format!(
            "-p {} -k {} -c max_connections=200 -c shared_buffers=32MB",
            self.port,
            self.dir.path().display()
        );
        self.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-l".as_ref(),
                log.as_os_str(),
                "-w".as_ref(),
                "-o".as_ref(),
                opts.as_ref(),
                "start".as_ref(),
            ],
        )
    }
}

impl PgCluster {
    /// Serves TLS only (`hostssl` in pg_hba.conf: a connection in clear is refused) with
    /// the certificate `cert` and its key `key` (PEM), copied into the cluster; restarts.
    pub fn require_tls(&self, cert: &Path, key: &Path) -> Result<(), String> {
        let data = self.dir.path().join("data");
        let copy = |from: &Path, name: &str| -> Result<(), String> {
            let to = data.join(name);
            std::fs::copy(from, &to).map_err(|e| format!("{}: {e}", from.display()))?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| format!("{}: {e}", to.display()))?;
            if self.as_postgres {
                let ok = Command::new("chown")
                    .arg("postgres:")
                    .arg(&to)
                    .status()
                    .is_ok_and(|s| s.success());
                if !ok {
                    return Err(format!("chown postgres {}", to.display()));
                }
            }
            Ok(())
        };
        copy(cert, "server.crt")?;
        copy(key, "server.key")?;
        let conf = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).map_err(|e| e.to_string())?;
        text.push_str("\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        std::fs::write(&conf, text).map_err(|e| e.to_string())?;
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
        )
        .map_err(|e| e.to_string())?;
        self.stop()?;
        self.restart()
    }
}

impl PgCluster {
    /// Listens on `ip` too and lets `subnet` (CIDR) connect (trust); restarts. For a
    /// client in a network namespace of the test's own, reached over a veth pair.
    pub fn listen_also(&self, ip: &str, subnet: &str) -> Result<(), String> {
        let data = self.dir.path().join("data");
        let conf = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).map_err(|e| e.to_string())?;
        text.push_str(&format!("\nlisten_addresses = '127.0.0.1,{ip}'\n"));
        std::fs::write(&conf, text).map_err(|e| e.to_string())?;
        let hba = data.join("pg_hba.conf");
        let mut text = std::fs::read_to_string(&hba).map_err(|e| e.to_string())?;
        text.push_str(&format!("\nhost all all {subnet} trust\n"));
        std::fs::write(&hba, text).map_err(|e| e.to_string())?;
        self.stop()?;
        self.restart()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = self.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-m".as_ref(),
                "immediate".as_ref(),
                "stop".as_ref(),
            ],
        );
    }
}
