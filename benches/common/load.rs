//! The SMTP load generator shared by the benchmarks: one client session submitting `n`
//! messages over any stream (TLS or not, with or without AUTH PLAIN), latency per message
//! from MAIL FROM to the 250 after the dot.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use base64::Engine;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

pub fn env<T: std::str::FromStr>(k: &str, d: T) -> T {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

/// The code of the next (possibly multi-line) reply; 0 at end of stream.
pub async fn reply<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> u16 {
    loop {
        let mut l = String::new();
        if r.read_line(&mut l).await.unwrap_or(0) == 0 {
            return 0;
        }
        if l.as_bytes().get(3) != Some(&b'-') {
            return l.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
        }
    }
}

/// What one session sends.
pub struct Job<'a> {
    /// `Some((user, password))`: AUTH PLAIN after EHLO.
    pub auth: Option<(&'a str, &'a str)>,
    pub from: &'a str,
    pub to: &'a str,
    pub n: usize,
    /// The message, dot-stuffed, ending with CRLF.
    pub body: &'a [u8],
}

/// A TCP connection to `addr` with Nagle's algorithm off (the load generator writes each
/// command group and each message whole; waiting for ACKs would only slow the client).
pub async fn connect(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).expect("TCP_NODELAY");
    tcp
}

/// Runs `job` on an established stream (after the TLS handshake, if any).
pub async fn session<S: AsyncRead + AsyncWrite + Unpin>(stream: S, job: &Job<'_>) -> Vec<Duration> {
    session_since(stream, job, None).await
}

/// [`session`], the first message's latency counted from `opened` (when the client began
/// to connect) when given: what a client opening a connection per message waits.
pub async fn session_since<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    job: &Job<'_>,
    opened: Option<Instant>,
) -> Vec<Duration> {
    let mut s = BufReader::new(stream);
    assert_eq!(reply(&mut s).await, 220);
    s.get_mut().write_all(b"EHLO bench\r\n").await.unwrap();
    assert_eq!(reply(&mut s).await, 250);
    if let Some((u, p)) = job.auth {
        let tok = base64::engine::general_purpose::STANDARD.encode(format!("\0{u}\0{p}"));
        s.get_mut()
            .write_all(format!("AUTH PLAIN {tok}\r\n").as_bytes())
            .await
            .unwrap();
        assert_eq!(reply(&mut s).await, 235);
    }
    let envelope = format!(
        "MAIL FROM:<{}>\r\nRCPT TO:<{}>\r\nDATA\r\n",
        job.from, job.to
    );
    // The message and its terminator in one write, as real clients send them (smtplib's
    // `data()` does): two writes would leave the dot to Nagle's algorithm, waiting on the
    // server's delayed ACK (40 ms on Linux), and measure the client instead of the server.
    let mut data = Vec::with_capacity(job.body.len() + 3);
    data.extend_from_slice(job.body);
    data.extend_from_slice(b".\r\n");
    let mut lat = Vec::with_capacity(job.n);
    for i in 0..job.n {
        let t = match opened {
            Some(o) if i == 0 => o,
            _ => Instant::now(),
        };
        s.get_mut().write_all(envelope.as_bytes()).await.unwrap();
        assert_eq!(reply(&mut s).await, 250);
        assert_eq!(reply(&mut s).await, 250);
        assert_eq!(reply(&mut s).await, 354);
        s.get_mut().write_all(&data).await.unwrap();
        assert_eq!(reply(&mut s).await, 250, "message not accepted");
        lat.push(t.elapsed());
    }
    let _ = s.get_mut().write_all(b"QUIT\r\n").await;
    lat
}

/// The `p` percentile of sorted latencies, in ms.
pub fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

/// A message of at least `size` bytes with these headers.
pub fn message(from: &str, to: &str, size: usize) -> Vec<u8> {
    let mut body =
        format!("From: {from}\r\nTo: {to}\r\nSubject: bench\r\nMessage-ID: <bench@x>\r\n\r\n")
            .into_bytes();
    while body.len() < size {
        body.extend_from_slice(
            b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\r\n",
        );
    }
    body
}

/// `openssl speed` RSA-2048 signatures per second on this machine now, by `processes`
/// processes at once (`-multi`), the bound a signing provider is measured against;
/// `None` without the `openssl` command.
pub fn openssl_rsa2048_signs_per_sec(processes: usize) -> Option<f64> {
    let mut cmd = std::process::Command::new("openssl");
    cmd.args(["speed", "-seconds", "3"]);
    if processes > 1 {
        cmd.args(["-multi", &processes.to_string()]);
    }
    let out = cmd.arg("rsa2048").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().rev().find(|l| l.starts_with("rsa 2048"))?;
    // "rsa 2048 bits 0.000262s 0.000008s   3811.4 127000.0"
    line.split_whitespace().nth(5)?.parse().ok()
}

/// CPU seconds (user + system) this process has used so far, all threads, from
/// `/proc/self/stat` (in clock ticks of 1/100 s, Linux's `USER_HZ`). Less noisy than a
/// rate on a shared machine: another tenant slows a run down but adds no CPU time to it.
pub fn cpu_seconds() -> f64 {
    proc_cpu("self").map_or(0.0, |c| c.own)
}

/// What `/proc/<pid>/stat` says of a process's CPU, in seconds.
pub struct ProcCpu {
    pub ppid: u32,
    /// user + system of the process itself (all its threads).
    pub own: f64,
    /// user + system of its children that exited and that it waited for.
    pub reaped: f64,
}

/// The CPU `/proc/<pid>/stat` reports (clock ticks of 1/100 s, Linux's `USER_HZ`); `None`
/// once the process is gone.
pub fn proc_cpu(pid: &str) -> Option<ProcCpu> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 4 (ppid) and 14–17 (utime, stime, cutime, cstime) of proc_pid_stat(5); field
    // 3 comes first here.
    Some(ProcCpu {
        ppid: f.get(1).and_then(|v| v.parse().ok()).unwrap_or(0),
        own: (tick(11) + tick(12)) / 100.0,
        reaped: (tick(13) + tick(14)) / 100.0,
    })
}

/// CPU seconds used so far by process `pid` and its children, the exited ones it waited
/// for included (a daemon's master and the workers it forks: Postfix).
pub fn tree_cpu_seconds(pid: u32) -> f64 {
    let Some(top) = proc_cpu(&pid.to_string()) else {
        return 0.0;
    };
    let live: f64 = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter_map(|p| proc_cpu(&p.to_string()))
        .filter(|c| c.ppid == pid)
        .map(|c| c.own + c.reaped)
        .sum();
    top.own + top.reaped + live
}

/// Bytes allocated on disk (`st_blocks` × 512) and the number of files under `dir`.
pub fn disk_usage(dir: &std::path::Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let (mut bytes, mut files) = (0, 0);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (0, 0);
    };
    for e in entries.flatten() {
        let Ok(m) = e.metadata() else { continue };
        if m.is_dir() {
            let (b, f) = disk_usage(&e.path());
            bytes += b + m.blocks() * 512;
            files += f;
        } else {
            bytes += m.blocks() * 512;
            files += 1;
        }
    }
    (bytes, files)
}

/// One line: a store's metadata (the embedded database, sled's or fjall's: mailboxes,
/// queue, trace log, indexes; and the trace log's sealed segments) and blobs on disk, in
/// total and per message. On fjall the bodies kept in the keyspace (its `pecd_bodies` and
/// `pecd_body_times` partitions) count as blobs, and the journal, which holds what the
/// partitions have not yet written into their segments, bodies included, is shown apart.
pub fn disk_report(label: &str, store_dir: &std::path::Path, messages: usize) {
    let fjall = store_dir.join("fjall");
    let engine = if fjall.exists() { "fjall" } else { "sled" };
    let (db_bytes, _) = disk_usage(&store_dir.join(if engine == "fjall" { "fjall" } else { "db" }));
    let (mut kept, mut kept_files) = (0, 0);
    for p in ["pecd_bodies", "pecd_body_times"] {
        let (b, f) = disk_usage(&fjall.join("partitions").join(p));
        kept += b;
        kept_files += f;
    }
    let (journal, _) = disk_usage(&fjall.join("journals"));
    let engine_bytes = db_bytes - kept - journal;
    // The sealed segments of the trace log.
    let (sealed, _) = disk_usage(&store_dir.join("trace"));
    let db = engine_bytes + sealed;
    let (files_bytes, files) = disk_usage(&store_dir.join("blobs"));
    let blobs = files_bytes + kept;
    let n = messages.max(1) as f64;
    let (kept_note, journal_note) = if engine == "fjall" {
        (
            format!(" + {kept_files} files of the keyspace's body partitions"),
            format!(", journal {:.1} MB", journal as f64 / 1e6),
        )
    } else {
        (String::new(), String::new())
    };
    println!(
        "{label}: metadata {:.1} MB ({:.1} KB/message: {engine} {:.1}, sealed trace {:.1}), blobs {:.1} MB in {files} files{kept_note} ({:.1} KB/message){journal_note}",
        db as f64 / 1e6,
        db as f64 / n / 1e3,
        engine_bytes as f64 / n / 1e3,
        sealed as f64 / n / 1e3,
        blobs as f64 / 1e6,
        blobs as f64 / n / 1e3,
    );
}

/// The `[blobs] backend = …` lines of a bench provider's configuration: the directory, or
/// with `PECD_BENCH_S3_ENDPOINT` set an S3 bucket (`PECD_BENCH_S3_BUCKET`, default `pecd`;
/// credentials from `PECD_S3_ACCESS_KEY_ID` / `PECD_S3_SECRET_ACCESS_KEY`), each provider
/// under a key prefix of its own.
pub fn blobs_backend() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    match std::env::var("PECD_BENCH_S3_ENDPOINT") {
        Ok(endpoint) if !endpoint.is_empty() => {
            let bucket = std::env::var("PECD_BENCH_S3_BUCKET").unwrap_or_else(|_| "pecd".into());
            let n = N.fetch_add(1, Ordering::Relaxed);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            format!(
                "backend = \"s3\"\nendpoint = \"{endpoint}\"\nbucket = \"{bucket}\"\nprefix = \"bench-{nanos}-{n}/\""
            )
        }
        _ => "backend = \"dir\"".into(),
    }
}

/// `[relay] max_transactions_per_domain` for the bench's gateways (env
/// `PECD_BENCH_RELAY_PER_DOMAIN`, default 64): set explicitly, as the connection limits
/// are, since the sink and the other provider take that many connections from one address.
pub fn relay_per_domain() -> usize {
    env("PECD_BENCH_RELAY_PER_DOMAIN", 64)
}

/// The `[relay]` lines of a bench's gateway in place of the template's commented
/// `line`: the per-domain limit above, and a total no lower.
pub fn relay_line(line: &str) -> Option<String> {
    let per = relay_per_domain();
    match line.split_once(" = ")?.0 {
        "# max_transactions_per_domain" => Some(format!("max_transactions_per_domain = {per}")),
        "# max_transactions" => Some(format!("max_transactions = {}", per.max(100))),
        _ => None,
    }
}
