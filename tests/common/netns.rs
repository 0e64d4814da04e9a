//! A network namespace of the test's own, joined to the host by a veth pair on a private
//! /30 (10.213.N.1 on the host side, .2 inside), so that a process started inside it
//! (`ip netns exec`) can be cut off from the host **silently** — the link taken down: no
//! RST, no FIN, packets just stop — as when a machine freezes or a route is lost. Needs
//! root and iproute2's `ip`: [`Netns::create`] reports the skip otherwise. Removed on drop.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::{Command, Stdio};

pub struct Netns {
    pub name: String,
    host_if: String,
    /// The host's address on the pair (reachable from inside).
    pub host_ip: String,
    /// The namespace's address on the pair.
    pub ns_ip: String,
    /// The pair's subnet (CIDR).
    pub subnet: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Netns {
    pub fn create(why: &str) -> Option<Netns> {
        sweep_stale();
        // A /30 no interface has yet (another run of this test, on this host, may hold one).
        let start = std::process::id() % 250;
        let n = (0..250)
            .map(|i| (start + i) % 250 + 1)
            .find(|n| {
                Command::new("ip")
                    .args([
                        "-4",
                        "-o",
                        "addr",
                        "show",
                        "to",
                        &format!("10.213.{n}.0/30"),
                    ])
                    .output()
                    .is_ok_and(|o| o.status.success() && o.stdout.is_empty())
            })
            .unwrap_or(start + 1);
        let ns = Netns {
            name: format!("pecd-test-{}", std::process::id()),
            host_if: format!("pecdh{}", std::process::id()),
            host_ip: format!("10.213.{n}.1"),
            ns_ip: format!("10.213.{n}.2"),
            subnet: format!("10.213.{n}.0/30"),
        };
        let inner = format!("pecdn{}", std::process::id());
        let made = (|| {
            ip(&["netns", "add", &ns.name])?;
            ip(&[
                "link",
                "add",
                &ns.host_if,
                "type",
                "veth",
                "peer",
                "name",
                &inner,
            ])?;
            ip(&["link", "set", &inner, "netns", &ns.name])?;
            ip(&[
                "addr",
                "add",
                &format!("{}/30", ns.host_ip),
                "dev",
                &ns.host_if,
            ])?;
            ip(&["link", "set", &ns.host_if, "up"])?;
            let exec = ["netns", "exec", &ns.name, "ip"];
            let in_ns = |more: &[&str]| {
                let args: Vec<&str> = exec.iter().copied().chain(more.iter().copied()).collect();
                ip(&args)
            };
            in_ns(&["addr", "add", &format!("{}/30", ns.ns_ip), "dev", &inner])?;
            in_ns(&["link", "set", &inner, "up"])?;
            in_ns(&["link", "set", "lo", "up"])
        })();
        match made {
            Ok(()) => Some(ns),
            Err(e) => {
                drop(ns);
                super::skip(&format!(
                    "({why}) cannot make a network namespace (root and iproute2 needed): {e}"
                ));
                None
            }
        }
    }

    /// The command prefix that runs a program inside the namespace.
    pub fn wrapper(&self) -> Vec<String> {
        vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            self.name.clone(),
        ]
    }

    /// Takes the link down (`false`: the namespace is cut off, silently) or up again.
    pub fn link(&self, up: bool) {
        ip(&["link", "set", &self.host_if, if up { "up" } else { "down" }]).unwrap();
    }

    /// Forwards TCP from `host_ip`:(a free port) to `to` on the host's loopback, for a
    /// service that listens on loopback only; the port it listens on.
    pub fn forward(&self, to: SocketAddr) -> u16 {
        let l = std::net::TcpListener::bind((self.host_ip.as_str(), 0)).unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for client in l.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = std::net::TcpStream::connect(to) else {
                    continue;
                };
                for (mut from, mut into) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut into);
                        let _ = into.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        port
    }
}

/// Removes the namespaces and links an earlier test process left behind (killed before
/// its drop ran): their names carry its pid, which no longer runs.
fn sweep_stale() {
    let dead = |pid: &str| !std::path::Path::new(&format!("/proc/{pid}")).exists();
    if let Ok(o) = Command::new("ip").args(["netns", "list"]).output() {
        for line in String::from_utf8_lossy(&o.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            if let Some(pid) = name.strip_prefix("pecd-test-")
                && dead(pid)
            {
                let _ = ip(&["netns", "del", name]);
            }
        }
    }
    if let Ok(o) = Command::new("ip").args(["-o", "link", "show"]).output() {
        for line in String::from_utf8_lossy(&o.stdout).lines() {
            let name = line.split(':').nth(1).unwrap_or("").trim();
            let name = name.split('@').next().unwrap_or("");
            if let Some(pid) = name.strip_prefix("pecdh")
                && dead(pid)
            {
                let _ = ip(&["link", "del", name]);
            }
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.host_if]);
        let _ = ip(&["netns", "del", &self.name]);
    }
}
