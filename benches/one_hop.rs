//! One hop, side by side with Postfix (issue #11's table): 20 concurrent SMTP clients
//! submit 10 KB messages; the server relays each to a counting SMTP sink on loopback;
//! reported is end-to-end messages/s (first submission to the sink's last 250) and the
//! submission latency. pecd does what a PEC provider does on that hop (SMTPS, AUTH, formal
//! checks, acceptance receipt and transport envelope signed, fsync'd group commit, trace
//! log, the relay to an ordinary recipient's host); Postfix is Debian's, as a plain relay
//! (no TLS, no AUTH: the baseline of the plumbing). Both run in the same process run, one
//! after the other, on the same cores.
//!
//! Run: `cargo bench --bench one_hop` (env PECD_BENCH_MESSAGES default 400,
//! PECD_BENCH_SESSIONS default 20, PECD_BENCH_SIZE default 10240,
//! PECD_BENCH_RELAY_PER_DOMAIN default 64 (pecd's `[relay] max_transactions_per_domain`),
//! PECD_BENCH_PER_CONNECTION default all of a session's messages: with 1, every message
//! gets a connection of its own, as mail clients send: TCP, TLS and AUTH each time for
//! pecd, TCP each time for Postfix; PECD_BENCH_LOGIN_CACHE_SECS sets pecd's
//! `limits.login_cache_secs`, 0 to turn the cache of verified logins off;
//! PECD_BENCH_TLS_RESUME=0 makes the clients never resume a TLS session, as Python's
//! smtplib; by default each client resumes from a session cache of its own, as
//! Thunderbird and Outlook do). Postfix comes from
//! `apt-get install postfix` (choose "No configuration"); without it only pecd runs.
//! Each side prints its CPU per message as well (see the README's Performance section).
//! This bench needs root for Postfix's own instance (queue owned by `postfix`).
//! `PECD_BENCH_STORE=postgres` keeps pecd's metadata in a PostgreSQL cluster the bench
//! starts (Debian's initdb and pg_ctl, loopback) instead of sled.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pecd::config::Config;
use pecd::gateway::Gateway;
use pecd::pec::address::{Domain, PecAddress};
use pecd::store::NewMailbox;
use pecd::store::mailbox::Password;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[path = "common/load.rs"]
mod load;
#[path = "common/pg.rs"]
mod pg;
#[path = "common/scratch.rs"]
mod scratch;
use load::{Job, env, pct};

/// A counting SMTP sink: accepts every message; the counter goes up at each final 250.
/// It offers PIPELINING (RFC 2920) as mail servers do, and reads commands a line at a time,
/// so a client may send MAIL, RCPT and DATA in one write (Postfix and pecd both do).
async fn sink(count: Arc<AtomicUsize>) -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            let _ = s.set_nodelay(true);
            let count = count.clone();
            tokio::spawn(async move {
                let (r, mut w) = s.into_split();
                let mut r = BufReader::new(r);
                let _ = w.write_all(b"220 sink ESMTP\r\n").await;
                let mut line = String::new();
                loop {
                    line.clear();
                    if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let cmd = line.get(..4).unwrap_or("").to_ascii_uppercase();
                    let answer: &[u8] = match cmd.as_str() {
                        "EHLO" => b"250-sink\r\n250-PIPELINING\r\n250 8BITMIME\r\n",
                        "DATA" => {
                            let _ = w.write_all(b"354 go on\r\n").await;
                            loop {
                                line.clear();
                                if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                                    return;
                                }
                                if line == ".\r\n" || line == ".\n" {
                                    break;
                                }
                            }
                            count.fetch_add(1, Ordering::SeqCst);
                            b"250 kept\r\n"
                        }
                        "QUIT" => {
                            let _ = w.write_all(b"221 bye\r\n").await;
                            return;
                        }
                        _ => b"250 ok\r\n",
                    };
                    if w.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A Postfix instance of its own in `dir`, listening on `port`, relaying everything to
/// the sink; stopped on drop.
struct Postfix(std::path::PathBuf);

impl Postfix {
    fn start(dir: &Path, port: u16, sink: u16) -> Option<Self> {
        if !Path::new("/usr/sbin/postfix").exists() {
            println!("postfix: not installed (apt-get install postfix): skipped");
            return None;
        }
        let etc = dir.join("etc");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::create_dir_all(dir.join("queue")).unwrap();
        std::fs::create_dir_all(dir.join("data")).unwrap();
        // Postfix's daemons run as `postfix`: they must reach the queue and own data/.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let _ = Command::new("chown")
            .arg("postfix")
            .arg(dir.join("data"))
            .output();
        let d = dir.display();
        std::fs::write(
            etc.join("main.cf"),
            format!(
                "compatibility_level = 3.6\nqueue_directory = {d}/queue\ndata_directory = {d}/data\n\
                 mail_owner = postfix\nsetgid_group = postdrop\nmyhostname = bench.localdomain\n\
                 mydestination =\ninet_interfaces = 127.0.0.1\ninet_protocols = ipv4\n\
                 mynetworks = 127.0.0.0/8\nrelayhost = [127.0.0.1]:{sink}\n\
                 smtp_dns_support_level = disabled\nsmtpd_relay_restrictions = permit_mynetworks, reject\n\
                 smtp_tls_security_level = none\nsmtpd_tls_security_level = none\n\
                 maillog_file = {d}/maillog\nmaillog_file_prefixes = {d}\ndefault_process_limit = 100\n\
                 smtpd_client_connection_count_limit = 0\nsmtp_destination_concurrency_limit = 20\n\
                 default_destination_concurrency_limit = 20\nin_flow_delay = 0\n"
            ),
        )
        .unwrap();
        let services = [
            ("127.0.0.1:PORT", "inet", "n", "-", "n", "-", "-", "smtpd"),
            ("pickup", "unix", "n", "-", "n", "60", "1", "pickup"),
            ("cleanup", "unix", "n", "-", "n", "-", "0", "cleanup"),
            ("qmgr", "unix", "n", "-", "n", "300", "1", "qmgr"),
            (
                "rewrite",
                "unix",
                "-",
                "-",
                "n",
                "-",
                "-",
                "trivial-rewrite",
            ),
            ("bounce", "unix", "-", "-", "n", "-", "0", "bounce"),
            ("defer", "unix", "-", "-", "n", "-", "0", "bounce"),
            ("trace", "unix", "-", "-", "n", "-", "0", "bounce"),
            ("verify", "unix", "-", "-", "n", "-", "1", "verify"),
            ("flush", "unix", "n", "-", "n", "1000?", "0", "flush"),
            ("proxymap", "unix", "-", "-", "n", "-", "-", "proxymap"),
            ("smtp", "unix", "-", "-", "n", "-", "-", "smtp"),
            ("relay", "unix", "-", "-", "n", "-", "-", "smtp"),
            ("showq", "unix", "n", "-", "n", "-", "-", "showq"),
            ("error", "unix", "-", "-", "n", "-", "-", "error"),
            ("retry", "unix", "-", "-", "n", "-", "-", "error"),
            ("discard", "unix", "-", "-", "n", "-", "-", "discard"),
            ("anvil", "unix", "-", "-", "n", "-", "1", "anvil"),
            ("scache", "unix", "-", "-", "n", "-", "1", "scache"),
            ("postlog", "unix-dgram", "n", "-", "n", "-", "1", "postlogd"),
        ];
        let master: String = services
            .iter()
            .map(|(a, b, c, d, e, f, g, h)| {
                format!(
                    "{} {b} {c} {d} {e} {f} {g} {h}\n",
                    a.replace("PORT", &port.to_string())
                )
            })
            .collect();
        std::fs::write(etc.join("master.cf"), master).unwrap();
        let out = Command::new("/usr/sbin/postfix")
            .args(["-c", etc.to_str().unwrap(), "start"])
            .output()
            .expect("postfix");
        if !out.status.success() {
            println!(
                "postfix: cannot start its own instance (root needed; see {}/maillog): {}",
                dir.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        Some(Self(etc))
    }
}

impl Postfix {
    /// CPU seconds used so far by this instance's master and the daemons it forked (its
    /// pid from `queue/pid/master.pid`); 0 if it cannot be read.
    fn cpu_seconds(&self) -> f64 {
        let pid_file = self.0.with_file_name("queue").join("pid/master.pid");
        std::fs::read_to_string(pid_file)
            .ok()
            .and_then(|p| p.trim().parse().ok())
            .map_or(0.0, load::tree_cpu_seconds)
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = Command::new("/usr/sbin/postfix")
            .args(["-c", self.0.to_str().unwrap(), "stop"])
            .output();
    }
}

/// `m` concurrent clients submit `job.n` messages each to `addr`, opening a connection
/// (TCP, TLS, EHLO, AUTH) for every `per_connection` messages; waits until the sink has
/// them all. Returns (end-to-end messages/s, submission latencies: from MAIL FROM, or
/// from the connect for a connection's first message when clients reconnect).
async fn run(
    addr: std::net::SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
    job: Job<'static>,
    m: usize,
    per_connection: usize,
    count: &AtomicUsize,
) -> (f64, Vec<Duration>) {
    let before = count.load(Ordering::SeqCst);
    let total = job.n * m;
    let job = Arc::new(job);
    let t0 = Instant::now();
    let resume = env("PECD_BENCH_TLS_RESUME", 1) != 0;
    let resumed = Arc::new(AtomicUsize::new(0));
    let handshakes = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..m)
        .map(|_| {
            // Each client with a session cache of its own, as mail clients have.
            let tls = tls.clone().map(|t| {
                let mut c = (*t).clone();
                c.resumption = if resume {
                    rustls::client::Resumption::default()
                } else {
                    rustls::client::Resumption::disabled()
                };
                Arc::new(c)
            });
            let job = job.clone();
            let (resumed, handshakes) = (resumed.clone(), handshakes.clone());
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(job.n);
                let mut left = job.n;
                while left > 0 {
                    let n = left.min(per_connection.max(1));
                    left -= n;
                    let part = Job { n, ..*job };
                    // Counted from the connect only when clients reconnect.
                    let opened = (per_connection < job.n).then(Instant::now);
                    let tcp = load::connect(addr).await;
                    lat.extend(match &tls {
                        Some(tls) => {
                            let s = tokio_rustls::TlsConnector::from(tls.clone())
                                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                                .await
                                .expect("tls");
                            handshakes.fetch_add(1, Ordering::Relaxed);
                            if s.get_ref().1.handshake_kind()
                                == Some(rustls::HandshakeKind::Resumed)
                            {
                                resumed.fetch_add(1, Ordering::Relaxed);
                            }
                            load::session_since(s, &part, opened).await
                        }
                        None => load::session_since(tcp, &part, opened).await,
                    });
                }
                lat
            })
        })
        .collect();
    let mut lat = Vec::new();
    for h in handles {
        lat.extend(h.await.expect("session"));
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    while count.load(Ordering::SeqCst) < before + total {
        assert!(
            Instant::now() < deadline,
            "the sink did not get every message"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let el = t0.elapsed().as_secs_f64();
    lat.sort();
    let handshakes = handshakes.load(Ordering::Relaxed);
    if handshakes > 0 {
        println!(
            "TLS: {} of {handshakes} handshakes resumed (PECD_BENCH_TLS_RESUME={})",
            resumed.load(Ordering::Relaxed),
            u8::from(resume)
        );
    }
    (total as f64 / el, lat)
}

fn report(
    who: &str,
    m: usize,
    per_connection: usize,
    total: usize,
    size: usize,
    rate: f64,
    lat: &[Duration],
) {
    let conn = if per_connection.saturating_mul(m) >= total {
        String::new()
    } else {
        format!(" (a new connection every {per_connection})")
    };
    println!(
        "{who:<8} {m} sessions{conn}, {total} messages of {size} bytes, submit → relay → sink: \
         {rate:.1} msg/s end to end; submission latency p50 {:.1} ms, p99 {:.1} ms",
        pct(lat, 0.5),
        pct(lat, 0.99)
    );
}

fn main() {
    bench();
    // The cluster a PostgreSQL run started (statics are never dropped).
    pg::shutdown();
}

fn bench() {
    let total: usize = env("PECD_BENCH_MESSAGES", 400);
    let size: usize = env("PECD_BENCH_SIZE", 10 * 1024);
    let m: usize = env("PECD_BENCH_SESSIONS", 20);
    let per = total.div_ceil(m);
    let per_connection: usize = env("PECD_BENCH_PER_CONNECTION", per).clamp(1, per.max(1));
    let login_cache_secs: Option<u64> = std::env::var("PECD_BENCH_LOGIN_CACHE_SECS")
        .ok()
        .map(|v| v.parse().expect("PECD_BENCH_LOGIN_CACHE_SECS: seconds"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let count = Arc::new(AtomicUsize::new(0));
    let sink_port = rt.block_on(sink(count.clone()));

    // pecd: the access point relaying an ordinary recipient's copy to the sink.
    let dir = scratch::tempdir();
    let domain = Domain::parse("pec.bench.test").unwrap();
    let init = pecd::pki::init_dir(dir.path(), &domain, Some("Bench PEC"), false).expect("init");
    let text = std::fs::read_to_string(&init.config).unwrap();
    let text: String = text
        .lines()
        .map(|l| match l.split_once(" = ") {
            Some((k, _)) if k == "smtps" => "smtps = \"127.0.0.1:0\"".to_string(),
            Some((k, _))
                if ["smtp", "submission", "imaps", "pop3s", "https", "admin"].contains(&k) =>
            {
                format!("{k} = \"off\"")
            }
            _ if let Some(relay) = load::relay_line(l) => relay,
            Some((k, _)) if k == "max_connections_per_ip" => {
                // The login cache off (0) or on for N seconds, to compare.
                match login_cache_secs {
                    Some(v) => format!("{k} = 1000\nlogin_cache_secs = {v}"),
                    None => format!("{k} = 1000"),
                }
            }
            Some(("backend", _)) => load::blobs_backend(),
            _ if l == "[routes]" => {
                format!("[routes]\n\"ext.bench.test\" = \"127.0.0.1:{sink_port}\"")
            }
            _ if l == "[store]" => pg::store_header().0,
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&init.config, text).unwrap();
    let config = Config::load(&init.config).expect("config");
    let gw = Gateway::open(config, pecd::clock::system()).expect("gateway");
    for u in ["a", "posta-certificata"] {
        gw.store
            .add_mailbox(NewMailbox {
                address: PecAddress::parse(&format!("{u}@pec.bench.test")).unwrap(),
                password: Password::new("bench-pw"),
                quota_bytes: Some(1 << 40),
                options: Default::default(),
                provisional: false,
            })
            .expect("mailbox");
    }
    let body: &'static [u8] =
        Box::leak(load::message("a@pec.bench.test", "x@ext.bench.test", size).into_boxed_slice());
    let tls = pecd::tls::client_config(&[dir.path().join("certs/ca.pem")], false).expect("tls");
    rt.block_on(async {
        let running = pecd::server::start(gw.clone()).await.expect("start");
        let addr = running.addr("smtps").expect("smtps");
        let job = Job {
            auth: Some(("a@pec.bench.test", "bench-pw")),
            from: "a@pec.bench.test",
            to: "x@ext.bench.test",
            n: per,
            body,
        };
        let c0 = load::cpu_seconds();
        let (rate, lat) = run(addr, Some(tls), job, m, per_connection, &count).await;
        let cpu = load::cpu_seconds() - c0;
        report("pecd", m, per_connection, per * m, body.len(), rate, &lat);
        println!(
            "pecd     CPU per message: {:.2} ms (this process: pecd, the clients and the sink)",
            cpu / (per * m) as f64 * 1e3
        );
        running.shutdown().await;
    });

    // Postfix, plain relay.
    let pdir = scratch::tempdir();
    let port = free_port();
    if let Some(pf) = Postfix::start(pdir.path(), port, sink_port) {
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        rt.block_on(async {
            // Wait for its smtpd.
            for _ in 0..200 {
                if tokio::net::TcpStream::connect(addr).await.is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let job = Job {
                auth: None,
                from: "a@bench.localdomain",
                to: "x@ext.bench.test",
                n: per,
                body,
            };
            let (c0, d0) = (load::cpu_seconds(), pf.cpu_seconds());
            let (rate, lat) = run(addr, None, job, m, per_connection, &count).await;
            let (ours, daemons) = (load::cpu_seconds() - c0, pf.cpu_seconds() - d0);
            report(
                "postfix",
                m,
                per_connection,
                per * m,
                body.len(),
                rate,
                &lat,
            );
            let per_msg = |s: f64| s / (per * m) as f64 * 1e3;
            println!(
                "postfix  CPU per message: {:.2} ms (its daemons {:.2} ms, the clients and the \
                 sink in this process {:.2} ms)",
                per_msg(ours + daemons),
                per_msg(daemons),
                per_msg(ours)
            );
        });
    }
}
