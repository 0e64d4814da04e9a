//! The systemd unit in `config/pecd.service` (issue #13): `systemd-analyze verify` accepts
//! it (run against the binary built here), and `systemd-analyze security --offline` rates
//! its exposure low: no new privileges, private /tmp, read-only system with only the state
//! directory writable, and `CAP_NET_BIND_SERVICE` as the only capability (for ports 25,
//! 465, 587, 993, 995, 443).

mod common;

use std::process::Command;

#[test]
fn the_unit_verifies_and_is_hardened() {
    if !common::have("systemd-analyze", "the unit is checked by systemd itself") {
        return;
    }
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let unit = std::fs::read_to_string(manifest.join("config/pecd.service")).unwrap();
    for line in [
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/pecd",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(unit.lines().any(|l| l == line), "missing {line}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pecd.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/pecd", common::server::BIN),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let level: f64 = text
        .lines()
        .find_map(|l| l.split("Overall exposure level for pecd.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no exposure level in: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert!(level <= 2.5, "exposure {level}:\n{text}");
}
