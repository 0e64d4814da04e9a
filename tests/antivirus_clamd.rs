//! `pecd::antivirus` against a real clamd (Debian package `clamav-daemon`, binary
//! `/usr/sbin/clamd`), with a signature database this test writes itself: no freshclam,
//! no network. Skipped, with a printed reason, when clamd is not installed.
//!
//! The database (`pecd-test.ndb`, `pecd-test.hdb`):
//! - `Pecd.Test.EICAR-Body`: a body signature (`.ndb`, any file type) on the 68 bytes of
//!   the EICAR test string, wherever they appear; found raw in a text part and, decoded
//!   by clamd's MIME scanner, in a base64 attachment (whose encoded text does not contain
//!   the bytes).
//! - `Pecd.Test.Attachment-Hash`: an MD5 hash signature (`.hdb`, `md5:size:name`) of a
//!   whole attachment; found only if clamd decodes the attachment into its own file.
//!
//! clamd reports signatures from a non-official database as `<name>.UNOFFICIAL`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use openssl::hash::{MessageDigest, hash};
use pecd::antivirus::{ScanError, Scanner, Verdict};

/// The EICAR test string, assembled at run time so that this source file is not itself
/// flagged by a scanner on a developer's machine.
fn eicar() -> Vec<u8> {
    let a = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$";
    let b = "EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";
    let s = [a, b].concat().into_bytes();
    assert_eq!(s.len(), 68);
    s
}

/// A harmless attachment, known to the database only by its hash.
fn hashed_attachment() -> Vec<u8> {
    let mut v = b"%PDF-1.4 not really; pecd antivirus test attachment\n".to_vec();
    v.extend((0..4096u32).map(|i| (i * 7 % 256) as u8));
    v
}

const STREAM_MAX: usize = 8 << 20;

fn find_clamd() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PECD_CLAMD") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join("clamd"))
        .find(|p| p.is_file())
}

/// Kills and reaps clamd however the test ends.
struct Clamd {
    child: Option<Child>,
    log: PathBuf,
}

impl Clamd {
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_else(|e| format!("(no log: {e})"))
    }
}

impl Drop for Clamd {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn write_database(db: &Path) {
    std::fs::create_dir_all(db).unwrap();
    std::fs::write(
        db.join("pecd-test.ndb"),
        format!("Pecd.Test.EICAR-Body:0:*:{}\n", hex::encode(eicar())),
    )
    .unwrap();
    let att = hashed_attachment();
    let md5 = hash(MessageDigest::md5(), &att).unwrap();
    std::fs::write(
        db.join("pecd-test.hdb"),
        format!(
            "{}:{}:Pecd.Test.Attachment-Hash\n",
            hex::encode(md5),
            att.len()
        ),
    )
    .unwrap();
}

fn base64_lines(data: &[u8]) -> String {
    let b = base64::engine::general_purpose::STANDARD.encode(data);
    b.as_bytes()
        .chunks(76)
        .map(|l| format!("{}\r\n", String::from_utf8_lossy(l)))
        .collect()
}

fn message(text: &[u8], attachment: Option<(&str, &[u8])>) -> Vec<u8> {
    let mut m = b"From: mario.rossi@pec.example.it\r\n\
        To: anna.bianchi@pec.example.org\r\n\
        Subject: antivirus test\r\n\
        Date: Mon, 2 Jun 2025 10:00:00 +0200\r\n\
        Message-ID: <av-test@pec.example.it>\r\n\
        MIME-Version: 1.0\r\n\
        Content-Type: multipart/mixed; boundary=\"b1\"\r\n\
        \r\n\
        --b1\r\n\
        Content-Type: text/plain; charset=us-ascii\r\n\
        \r\n"
        .to_vec();
    m.extend_from_slice(text);
    m.extend_from_slice(b"\r\n");
    if let Some((name, data)) = attachment {
        m.extend_from_slice(
            format!(
                "--b1\r\n\
                 Content-Type: application/octet-stream; name=\"{name}\"\r\n\
                 Content-Transfer-Encoding: base64\r\n\
                 Content-Disposition: attachment; filename=\"{name}\"\r\n\
                 \r\n{}",
                base64_lines(data)
            )
            .as_bytes(),
        );
    }
    m.extend_from_slice(b"--b1--\r\n");
    m
}

fn assert_found(v: Result<Verdict, ScanError>, sig: &str, what: &str, clamd: &Clamd) {
    match v {
        Ok(Verdict::Infected(name)) => assert!(
            name == sig || name == format!("{sig}.UNOFFICIAL"),
            "{what}: found {name:?}, expected {sig}"
        ),
        other => panic!(
            "{what}: {other:?}, expected {sig}\nclamd log:\n{}",
            clamd.log()
        ),
    }
}

#[tokio::test]
async fn scans_with_a_real_clamd() {
    let Some(bin) = find_clamd() else {
        assert!(
            std::env::var_os("PECD_REQUIRE_TOOLS").is_none_or(|v| v.is_empty()),
            "clamd is not installed (PECD_REQUIRE_TOOLS is set: this must run here)"
        );
        eprintln!(
            "SKIP: clamd is not installed (looked in PATH and /usr/sbin; Debian package \
             clamav-daemon; or PECD_CLAMD names no file); the real-clamd antivirus test did not run"
        );
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let db = dir.join("db");
    write_database(&db);
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    let port = free_port();
    let sock = dir.join("clamd.sock");
    let conf = dir.join("clamd.conf");
    // No `User`: clamd keeps the identity it was started with (root in CI, or the developer).
    std::fs::write(
        &conf,
        format!(
            "DatabaseDirectory {db}\n\
             TCPSocket {port}\n\
             TCPAddr 127.0.0.1\n\
             LocalSocket {sock}\n\
             Foreground yes\n\
             LogFile {dir}/clamd.log\n\
             LogVerbose yes\n\
             PidFile {dir}/clamd.pid\n\
             TemporaryDirectory {dir}/tmp\n\
             StreamMaxLength {STREAM_MAX}\n\
             MaxFileSize {STREAM_MAX}\n\
             MaxScanSize {STREAM_MAX}\n\
             SelfCheck 0\n",
            db = db.display(),
            sock = sock.display(),
            dir = dir.display(),
        ),
    )
    .unwrap();

    let started = Instant::now();
    let child = Command::new(&bin)
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("clamd.stderr")).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let mut clamd = Clamd {
        child: Some(child),
        log: dir.join("clamd.log"),
    };

    let tcp = Scanner::from_config(&format!("127.0.0.1:{port}"))
        .unwrap()
        .with_timeouts(Duration::from_secs(5), Duration::from_secs(30));
    loop {
        if tcp.ping().await.is_ok() {
            break;
        }
        if let Some(st) = clamd.child.as_mut().unwrap().try_wait().unwrap() {
            panic!(
                "{} exited with {st} before answering PING\nstderr:\n{}\nlog:\n{}",
                bin.display(),
                std::fs::read_to_string(dir.join("clamd.stderr")).unwrap_or_default(),
                clamd.log()
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "clamd did not answer PING within 60 s\nlog:\n{}",
            clamd.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "clamd ({}) answered PING {:?} after start",
        bin.display(),
        started.elapsed()
    );

    // Clean mail, small and over several chunks.
    let clean = message(b"Buongiorno, in allegato il documento.", None);
    assert_eq!(tcp.scan(&clean).await, Ok(Verdict::Clean));
    let big_text = "Lorem ipsum dolor sit amet, consectetur adipiscing elit.\r\n".repeat(40_000);
    let big = message(big_text.as_bytes(), Some(("doc.bin", &[7u8; 300_000])));
    assert!(big.len() > 2_000_000 && big.len() < STREAM_MAX);
    assert_eq!(tcp.scan(&big).await, Ok(Verdict::Clean));
    assert_eq!(tcp.scan(b"").await, Ok(Verdict::Clean));

    // EICAR raw in the text part.
    let mut text = b"see the test string: ".to_vec();
    text.extend(eicar());
    let raw = message(&text, None);
    assert_found(
        tcp.scan(&raw).await,
        "Pecd.Test.EICAR-Body",
        "raw EICAR",
        &clamd,
    );

    // EICAR as a base64 attachment: only the decoded attachment contains the bytes.
    let att = message(b"in allegato", Some(("eicar.com", &eicar())));
    assert!(!att.windows(68).any(|w| w == eicar()));
    assert_found(
        tcp.scan(&att).await,
        "Pecd.Test.EICAR-Body",
        "base64 EICAR",
        &clamd,
    );

    // The hash signature of a whole attachment, decoded by clamd's MIME scanner.
    let hashed = message(b"fattura", Some(("fattura.pdf", &hashed_attachment())));
    assert_found(
        tcp.scan(&hashed).await,
        "Pecd.Test.Attachment-Hash",
        "hashed attachment",
        &clamd,
    );

    // The same clamd over its unix socket.
    let unix = Scanner::from_config(sock.to_str().unwrap()).unwrap();
    unix.ping().await.unwrap();
    assert_eq!(unix.scan(&clean).await, Ok(Verdict::Clean));
    assert_found(
        unix.scan(&att).await,
        "Pecd.Test.EICAR-Body",
        "unix socket",
        &clamd,
    );

    // Over StreamMaxLength: clamd stops reading and says so.
    let huge = vec![b'a'; STREAM_MAX + (1 << 20)];
    assert_eq!(tcp.scan(&huge).await, Err(ScanError::TooLarge(huge.len())));
    // ... and still serves the next scan.
    assert_eq!(tcp.scan(&clean).await, Ok(Verdict::Clean));

    // Concurrent scans.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..16 {
        let (s, m) = (
            tcp.clone(),
            if i % 2 == 0 {
                clean.clone()
            } else {
                att.clone()
            },
        );
        tasks.spawn(async move { (i, s.scan(&m).await) });
    }
    while let Some(r) = tasks.join_next().await {
        let (i, v) = r.unwrap();
        if i % 2 == 0 {
            assert_eq!(v, Ok(Verdict::Clean), "task {i}");
        } else {
            assert_found(v, "Pecd.Test.EICAR-Body", "concurrent", &clamd);
        }
    }

    // clamd killed: Unavailable, over TCP and over the (stale) unix socket.
    clamd.kill();
    for (what, s) in [("tcp", &tcp), ("unix", &unix)] {
        let e = s.scan(&clean).await.unwrap_err();
        assert!(matches!(e, ScanError::Unavailable(_)), "{what}: {e:?}");
        let e = s.ping().await.unwrap_err();
        assert!(matches!(e, ScanError::Unavailable(_)), "{what}: {e:?}");
    }
}
