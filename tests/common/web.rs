//! The webmail's real-browser tests: finds the tools they need (Debian's `chromium`, `node`
//! and the npm packages of `tests/browser/`, installed by `npm ci --prefix tests/browser`)
//! and runs one of their scripts with the providers' URLs and mailboxes in its environment.
//! A missing tool is a printed skip locally and a failure under `PECD_REQUIRE_TOOLS`
//! ([`super::skip`]).
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

use super::jmap::manifest;

/// The chromium binary the scripts drive (`PECD_CHROMIUM` overrides).
pub fn chromium() -> PathBuf {
    std::env::var_os("PECD_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// True when chromium, node and the scripts' packages are all there; otherwise reports
/// the skip (or fails, under `PECD_REQUIRE_TOOLS`).
pub fn have_browser_tools() -> bool {
    let why = "the webmail's browser tests";
    if !chromium().is_file() {
        super::skip(&format!(
            "({why}) {} is missing: apt-get install chromium (.ci/run does)",
            chromium().display()
        ));
        return false;
    }
    if !super::have("node", why) {
        return false;
    }
    for pkg in ["playwright-core", "@axe-core/playwright"] {
        if !manifest("tests/browser/node_modules")
            .join(pkg)
            .join("package.json")
            .is_file()
        {
            super::skip(&format!(
                "({why}) tests/browser/node_modules/{pkg} is missing: npm ci --prefix tests/browser (.ci/run does)"
            ));
            return false;
        }
    }
    true
}

/// Where the scripts save one screenshot per screen: `target/webmail-screenshots/`.
pub fn screenshot_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest("target"))
        .join("webmail-screenshots")
}

/// Runs `node tests/browser/<script>` with `env`; returns (success, combined output).
pub fn run_script(script: &str, env: &[(&str, String)]) -> (bool, String) {
    let mut cmd = Command::new("node");
    cmd.arg(manifest("tests/browser").join(script))
        .current_dir(manifest("tests/browser"))
        .env("PECD_CHROMIUM", chromium())
        .env("PECD_SCREENSHOTS", screenshot_dir());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run node");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}
