//! JMAP over real HTTPS for the integration tests: two `pecd serve` providers wired to
//! each other (index entries exchanged, routes pinned, CAs trusted), and a small client
//! that speaks to the web listener with `curl` (an independent HTTP/TLS stack), checking
//! the server certificate against the provider's dev CA.
#![allow(dead_code)]

use super::ports::free_port;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::server::Server;

pub const USING: &[&str] = &[
    "urn:ietf:params:jmap:core",
    "urn:ietf:params:jmap:mail",
    "urn:ietf:params:jmap:submission",
    "urn:ietf:params:jmap:quota",
    "urn:pecd:params:jmap:pec",
];

/// Two providers that exchange PEC with each other over real SMTP with STARTTLS.
pub fn pair(a: (&str, &[(&str, &str)]), b: (&str, &[(&str, &str)])) -> (Server, Server) {
    let mut sa = Server::new(a.0, a.1);
    let mut sb = Server::new(b.0, b.1);
    let (pa, pb) = (free_port(), free_port());
    wire(&sa, pa, &sb, pb);
    wire(&sb, pb, &sa, pa);
    sa.start();
    sb.start();
    (sa, sb)
}

fn wire(me: &Server, my_port: u16, peer: &Server, peer_port: u16) {
    let peer_ca = peer.ca().display().to_string();
    me.edit_config(|text| {
        let mut out = String::new();
        for line in text.lines() {
            let l = match line.split_once(" = ") {
                Some((k, _)) if k.trim() == "smtp" => format!("smtp = \"127.0.0.1:{my_port}\""),
                Some((k, _)) if k.trim() == "trusted_ca" => {
                    format!("trusted_ca = [\"certs/ca.pem\", {peer_ca:?}]")
                }
                _ if line == "[routes]" => {
                    format!("[routes]\n\"{}\" = \"127.0.0.1:{peer_port}\"", peer.domain)
                }
                _ => line.to_string(),
            };
            out.push_str(&l);
            out.push('\n');
        }
        out
    });
    let ldif = me.dir.path().join("peer.ldif");
    peer.admin(&["index", "export", "--out", ldif.to_str().unwrap()]);
    me.admin(&["index", "import", ldif.to_str().unwrap()]);
}

/// What an HTTP exchange returned.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// A client of one provider's web listener.
pub struct Web {
    pub base: String,
    pub ca: std::path::PathBuf,
    pub host: String,
}

impl Web {
    pub fn of(s: &Server) -> Self {
        let a = s.addr("https");
        Web {
            base: format!("https://localhost:{}", a.port()),
            ca: s.ca(),
            host: format!("localhost:{}", a.port()),
        }
    }

    /// One request with curl: `extra` are curl arguments (headers, data...).
    pub fn request(&self, method: &str, path: &str, extra: &[&str]) -> Reply {
        let dir = tempfile::tempdir().unwrap();
        let head = dir.path().join("h");
        let body = dir.path().join("b");
        let out = Command::new("curl")
            .args(["-s", "--max-time", "60", "--cacert"])
            .arg(&self.ca)
            .args(["--resolve", &format!("{}:127.0.0.1", self.host)])
            .args(["-X", method, "-D"])
            .arg(&head)
            .arg("-o")
            .arg(&body)
            .args(extra)
            .arg(format!("{}{path}", self.base))
            .output()
            .expect("curl");
        assert!(
            out.status.success(),
            "curl {method} {path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let head = std::fs::read_to_string(&head).unwrap();
        // After interim answers (100 Continue), the last block is the response.
        let last = head.rfind("HTTP/").unwrap_or(0);
        let mut lines = head[last..].lines();
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        Reply {
            status,
            headers,
            body: std::fs::read(&body).unwrap_or_default(),
        }
    }

    /// A bearer token for `user`.
    pub fn login(&self, user: &str, password: &str) -> String {
        let r = self.login_reply(user, password);
        assert_eq!(r.status, 200, "login: {}", String::from_utf8_lossy(&r.body));
        r.json()["bearerToken"].as_str().unwrap().to_string()
    }

    /// The answer to a bearer login of `user`, whatever it is.
    pub fn login_reply(&self, user: &str, password: &str) -> Reply {
        let body = json!({"username": user, "password": password, "bearer": true});
        self.post_json(None, "/auth/login", &body)
    }

    /// `POST path` with a JSON `body`, as the bearer `token` when given.
    pub fn post_json(&self, token: Option<&str>, path: &str, body: &Value) -> Reply {
        let body = body.to_string();
        let auth = token.map(|t| format!("Authorization: Bearer {t}"));
        let mut args = vec![
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &body,
        ];
        if let Some(a) = &auth {
            args.extend(["-H", a.as_str()]);
        }
        self.request("POST", path, &args)
    }

    pub fn session(&self, token: &str) -> Value {
        let auth = format!("Authorization: Bearer {token}");
        let r = self.request("GET", "/jmap/session", &["-H", &auth]);
        assert_eq!(r.status, 200);
        r.json()
    }

    /// One JMAP request with all capabilities; returns the method responses.
    /// The id of the session's primary mail account.
    pub fn mail_account(&self, token: &str) -> String {
        self.session(token)["primaryAccounts"]["urn:ietf:params:jmap:mail"]
            .as_str()
            .expect("a primary mail account")
            .to_string()
    }

    pub fn call(&self, token: &str, calls: Value) -> Vec<Value> {
        let body = json!({"using": USING, "methodCalls": calls}).to_string();
        let r = self.raw_api(token, &body);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        r.json()["methodResponses"].as_array().unwrap().clone()
    }

    /// Uploads `bytes` to `account`; returns the blobId.
    pub fn upload(&self, token: &str, account: &str, bytes: &[u8]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("upload");
        std::fs::write(&file, bytes).unwrap();
        let auth = format!("Authorization: Bearer {token}");
        let data = format!("@{}", file.display());
        let r = self.request(
            "POST",
            &format!("/jmap/upload/{account}/"),
            &[
                "-H",
                &auth,
                "-H",
                "Content-Type: message/rfc822",
                "--data-binary",
                &data,
            ],
        );
        assert_eq!(
            r.status,
            201,
            "upload: {}",
            String::from_utf8_lossy(&r.body)
        );
        r.json()["blobId"].as_str().unwrap().to_string()
    }

    pub fn raw_api(&self, token: &str, body: &str) -> Reply {
        let auth = format!("Authorization: Bearer {token}");
        self.request(
            "POST",
            "/jmap/api",
            &[
                "-H",
                &auth,
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                body,
            ],
        )
    }

    /// Polls `f` until it returns `Some`, up to `secs`.
    pub fn wait<T>(&self, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The id of the mailbox with `role`.
pub fn mailbox_with_role(web: &Web, token: &str, account: &str, role: &str) -> String {
    let r = web.call(token, json!([["Mailbox/get", {"accountId": account}, "0"]]));
    r[0][1]["list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == role)
        .unwrap_or_else(|| panic!("no {role} mailbox"))["id"]
        .as_str()
        .unwrap()
        .to_string()
}

pub fn have_curl() -> bool {
    super::have("curl", "the JMAP tests speak HTTPS with curl")
}

pub fn manifest(p: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}
