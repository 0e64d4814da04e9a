//! `tests/clients/login_probe.py` against a running [`Server`]: logins as Python's
//! imaplib, poplib and smtplib make them (passwords, smart cards, held sessions).
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::server::Server;

/// Starts the probe (stdin and stdout piped, for the `held` scenario).
pub fn spawn(s: &Server, scenario: &str, user: &str, pw: &str) -> Child {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/login_probe.py");
    Command::new("python3")
        .arg(script)
        .arg(scenario)
        .arg("127.0.0.1")
        .args([
            s.addr("imaps").port().to_string(),
            s.addr("pop3s").port().to_string(),
            s.addr("smtps").port().to_string(),
        ])
        .arg(s.ca())
        .args([user, pw])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3")
}

/// Runs a scenario to its end; its JSON answer.
pub fn run(s: &Server, scenario: &str, user: &str, pw: &str) -> serde_json::Value {
    let out = spawn(s, scenario, user, pw).wait_with_output().unwrap();
    assert!(out.status.success(), "login_probe {scenario} failed");
    serde_json::from_slice(&out.stdout).unwrap()
}
