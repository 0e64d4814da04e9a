//! Tamper tests on an exported trace log, through the real `pecd` binary (and, for the
//! exhaustive single-byte sweep, the library verifier it uses).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use pecd::config::Config;
use pecd::store::{Batch, Store, StoreOptions};
use pecd::trace::checkpoint::cert_sha256;
use pecd::trace::verify::verify_export;
use pecd::trace::{EventKind, TraceEvent};

fn pecd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pecd"))
        .args(args)
        .env("PECD_LOG", "warn")
        .output()
        .expect("run pecd")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

struct Setup {
    _dir: tempfile::TempDir,
    config: PathBuf,
    export: Vec<u8>,
    signer_sha: String,
}

/// `pecd init`, a mailbox via the CLI, then 12 records with checkpoints every 4 and a
/// tail of 2 unsigned records, exported by `pecd log export`.
fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let o = pecd(&["init", "--dir", d, "--domain", "example.it"]);
    assert!(o.status.success(), "{}", text(&o));
    let config = dir.path().join("pecd.toml");
    let c = config.to_str().unwrap();
    let o = pecd(&[
        "mailbox",
        "add",
        "user@example.it",
        "--password",
        "pw",
        "--config",
        c,
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let cfg = Config::load(&config).unwrap();
    let signer = Arc::new(cfg.load_signer().unwrap());
    let signer_sha = cert_sha256(signer.certificate());
    {
        let opts = StoreOptions {
            signer: Some(signer),
            checkpoint_every: 1_000_000,
            checkpoint_interval: Duration::from_secs(1_000_000),
            ..StoreOptions::default()
        };
        let store = Store::open(&cfg.store.dir, opts).unwrap();
        for i in 0..12u32 {
            let ev = TraceEvent::new(EventKind::Delivered, jiff::Timestamp::now())
                .msgid(format!("m{i}@client"))
                .ident(format!("opec-{i}"))
                .sender("alice@example.it")
                .recipient("user@example.it")
                .subject(format!("Fattura n. {i} — àèìòù"))
                .message_bytes(format!("body {i}").as_bytes());
            store.commit(Batch::new().trace(ev)).unwrap();
            if i % 4 == 3 {
                store.checkpoint_now().unwrap().unwrap();
            }
        }
        for i in 0..2 {
            store
                .commit(
                    Batch::new().trace(
                        TraceEvent::new(EventKind::Relayed, jiff::Timestamp::now())
                            .msgid(format!("t{i}")),
                    ),
                )
                .unwrap();
        }
    }
    let file = dir.path().join("log.jsonl");
    let o = pecd(&["log", "export", file.to_str().unwrap(), "--config", c]);
    assert!(o.status.success(), "{}", text(&o));
    let export = std::fs::read(&file).unwrap();
    Setup {
        _dir: dir,
        config,
        export,
        signer_sha,
    }
}

fn verify_file(s: &Setup, name: &str, content: &[u8]) -> Output {
    let p = s.config.parent().unwrap().join(name);
    std::fs::write(&p, content).unwrap();
    pecd(&[
        "log",
        "verify",
        p.to_str().unwrap(),
        "--config",
        s.config.to_str().unwrap(),
    ])
}

fn lines(b: &[u8]) -> Vec<Vec<u8>> {
    b.split(|&c| c == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

fn join(ls: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for l in ls {
        out.extend_from_slice(l);
        out.push(b'\n');
    }
    out
}

fn is_checkpoint(l: &[u8]) -> bool {
    l.starts_with(br#"{"type":"checkpoint""#)
}

#[test]
fn tampering_is_detected_and_located() {
    let s = setup();
    let ls = lines(&s.export);
    // 1 admin record + 12 + 2 records + 3 checkpoint records, 3 checkpoints.
    assert_eq!(ls.len(), 18 + 3);

    let o = verify_file(&s, "intact.jsonl", &s.export);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(t.contains("18 records verified"), "{t}");
    assert!(t.contains("last signed checkpoint: seq 15"), "{t}");
    assert!(
        t.contains("3 record(s) after the last checkpoint are only hash-chained"),
        "{t}"
    );

    // Line numbers are 1-based; find the lines by content.
    let rec_line = ls
        .iter()
        .position(|l| l.windows(9).any(|w| w == b"m6@client"))
        .unwrap();
    let cp_line = ls.iter().position(|l| is_checkpoint(l)).unwrap();
    let mut cases: Vec<(&str, Vec<Vec<u8>>, String)> = Vec::new();

    let mut changed = ls.clone();
    let pos = changed[rec_line]
        .windows(7)
        .position(|w| w == b"Fattura")
        .unwrap();
    changed[rec_line][pos] = b'f';
    cases.push((
        "one byte in a record",
        changed,
        format!("line {}: seq", rec_line + 1),
    ));

    let mut changed = ls.clone();
    let sig = changed[cp_line]
        .windows(13)
        .position(|w| w == br#""signature":""#)
        .unwrap()
        + 40;
    changed[cp_line][sig] = if changed[cp_line][sig] == b'A' {
        b'B'
    } else {
        b'A'
    };
    cases.push((
        "one byte in a checkpoint signature",
        changed,
        format!("line {}: seq", cp_line + 1),
    ));

    let mut deleted = ls.clone();
    deleted.remove(rec_line);
    cases.push((
        "a record line deleted",
        deleted,
        format!("line {}: seq", rec_line + 1),
    ));

    let mut deleted = ls.clone();
    deleted.remove(cp_line);
    // Caught by the chain record that binds the deleted checkpoint.
    let binding = deleted
        .iter()
        .position(|l| l.windows(19).any(|w| w == br#""kind":"Checkpoint""#))
        .unwrap();
    cases.push((
        "a checkpoint line deleted",
        deleted,
        format!("line {}: seq", binding + 1),
    ));

    let mut last_cp_gone = ls.clone();
    let last_cp = last_cp_gone.iter().rposition(|l| is_checkpoint(l)).unwrap();
    last_cp_gone.remove(last_cp);
    cases.push((
        "the last checkpoint line deleted",
        last_cp_gone,
        "which is missing".into(),
    ));

    let mut swapped = ls.clone();
    swapped.swap(rec_line, rec_line + 1);
    cases.push((
        "two lines swapped",
        swapped,
        format!("line {}: seq", rec_line + 1),
    ));

    let mut first_gone = ls.clone();
    first_gone.remove(0);
    cases.push(("the first line deleted", first_gone, "line 1: seq 2".into()));

    for (what, content, place) in cases {
        let o = verify_file(&s, "t.jsonl", &join(&content));
        let t = text(&o);
        assert_eq!(o.status.code(), Some(1), "{what}: {t}");
        assert!(
            t.contains("TAMPERED") && t.contains(&place),
            "{what}: want {place:?} in {t}"
        );
    }

    // Truncation of the unsigned tail is not provable by the chain: verify says what
    // is covered by a signature.
    let o = verify_file(&s, "trunc.jsonl", &join(&ls[..ls.len() - 1]));
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(
        t.contains("2 record(s) after the last checkpoint are only hash-chained"),
        "{t}"
    );

    let missing = s.config.parent().unwrap().join("nope.jsonl");
    let o = pecd(&[
        "log",
        "verify",
        missing.to_str().unwrap(),
        "--config",
        s.config.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));

    // The live log verifies too.
    let o = pecd(&["log", "verify", "--config", s.config.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

#[test]
fn every_single_byte_change_is_detected() {
    let s = setup();
    let e = &s.export;
    assert!(
        verify_export(&e[..], Some(s.signer_sha.clone()))
            .unwrap()
            .intact()
    );
    let mut missed = Vec::new();
    for i in 0..e.len() {
        let mut t = e.clone();
        t[i] = if t[i] == b'0' {
            b'1'
        } else if t[i].is_ascii_alphanumeric() {
            b'0'
        } else {
            b'x'
        };
        if i + 1 == e.len() {
            continue; // the final newline: removing/changing it leaves the same lines
        }
        let r = verify_export(&t[..], Some(s.signer_sha.clone())).unwrap();
        if r.intact() {
            missed.push(i);
        }
    }
    assert!(
        missed.is_empty(),
        "undetected changes at byte offsets {missed:?}"
    );
}

#[test]
fn queries_through_the_cli() {
    let s = setup();
    let c = s.config.to_str().unwrap();
    let o = pecd(&["log", "--config", c, "--msgid", "<m3@client>", "--json"]);
    let t = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(t.lines().count(), 1, "{t}");
    assert!(t.contains(r#""ident":"opec-3""#), "{t}");
    let o = pecd(&[
        "log",
        "--config",
        c,
        "--mailbox",
        "USER@example.it",
        "--since",
        "2000-01-01",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).lines().count(),
        13,
        "{}",
        text(&o)
    );
    let o = pecd(&["log", "--config", c, "--id", "opec-7"]);
    let t = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(t.contains("Delivered") && t.contains("m7@client"), "{t}");
    let o = pecd(&["log", "--config", c, "--until", "2000-01-01"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 0);
    let _ = Path::new(c);
}
