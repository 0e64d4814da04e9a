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
    // 1 admin record + 12 + 2 records + 3 checkpoint records, 3 checkpoints, the trailer.
    assert_eq!(ls.len(), 18 + 3 + 1);
    assert!(ls[ls.len() - 1].starts_with(br#"{"type":"trailer""#));

    let o = verify_file(&s, "intact.jsonl", &s.export);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(t.contains("18 records verified"), "{t}");
    assert!(t.contains("last signed checkpoint: seq 15"), "{t}");
    assert!(
        t.contains("signed export trailer verified: the export ends at seq 18"),
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

    // Cut at the end: the signed trailer names the last record, so neither removing it
    // nor removing records before it goes unnoticed; nor does an empty file.
    let n = ls.len();
    let mut cut: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "the trailer removed",
            join(&ls[..n - 1]),
            "missing signed export trailer after line 21 (seq 18)",
        ),
        (
            "the unsigned tail and the trailer removed",
            join(&ls[..n - 3]),
            "missing signed export trailer after line 19 (seq 16)",
        ),
        (
            "the empty file",
            Vec::new(),
            "the export is empty: no records and no signed export trailer",
        ),
    ];
    let mut tail_gone = ls[..n - 3].to_vec();
    tail_gone.push(ls[n - 1].clone());
    cut.push((
        "the last two records removed, trailer kept",
        join(&tail_gone),
        "line 20: seq 18: the signed export trailer says the export ends at seq 18, but the last record here is seq 16",
    ));
    // Cut at the start, right before a checkpoint: not a retention purge.
    let first_cp = ls.iter().position(|l| is_checkpoint(l)).unwrap();
    cut.push((
        "everything before the first checkpoint removed",
        join(&ls[first_cp..]),
        "line 1: seq 5: the log starts at checkpoint 5 as a retention anchor, but no Purged record names that checkpoint",
    ));
    for (what, content, want) in cut {
        let o = verify_file(&s, "cut.jsonl", &content);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(1), "{what}: {t}");
        assert!(
            t.contains("TAMPERED") && t.contains(want),
            "{what}: want {want:?} in {t}"
        );
    }

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

/// A self-signed certificate and key (PEM) standing for the signing certificate in use
/// before a renewal.
fn old_signing_identity(cn: &str) -> (Vec<u8>, Vec<u8>) {
    use openssl::asn1::Asn1Time;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::pkey::PKey;
    use openssl::x509::{X509, X509NameBuilder};
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", cn).unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(30).unwrap())
        .unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    (
        b.build().to_pem().unwrap(),
        key.private_key_to_pem_pkcs8().unwrap(),
    )
}

#[test]
fn checkpoints_signed_before_a_certificate_renewal_verify_with_the_previous_cert() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let o = pecd(&["init", "--dir", d, "--domain", "example.it"]);
    assert!(o.status.success(), "{}", text(&o));
    let config = dir.path().join("pecd.toml");
    let c = config.to_str().unwrap();
    let cfg = Config::load(&config).unwrap();
    let (old_pem, old_key) = old_signing_identity("pecd signing before renewal");
    let old_file = dir.path().join("old-signing.pem");
    std::fs::write(&old_file, &old_pem).unwrap();
    let old = Arc::new(pecd::pec::smime::Signer::from_pem(&old_pem, &old_key, b"").unwrap());
    let current = Arc::new(cfg.load_signer().unwrap());
    // Records and a checkpoint under the old certificate, then more under the new one.
    for signer in [old, current] {
        let opts = StoreOptions {
            signer: Some(signer),
            checkpoint_every: 1_000_000,
            checkpoint_interval: Duration::from_secs(1_000_000),
            ..StoreOptions::default()
        };
        let store = Store::open(&cfg.store.dir, opts).unwrap();
        for i in 0..3 {
            let ev = TraceEvent::new(EventKind::Delivered, jiff::Timestamp::now())
                .msgid(format!("m{i}@client"));
            store.commit(Batch::new().trace(ev)).unwrap();
        }
        store.checkpoint_now().unwrap().unwrap();
    }
    let file = dir.path().join("log.jsonl");
    let f = file.to_str().unwrap();
    let o = pecd(&["log", "export", f, "--config", c]);
    assert!(o.status.success(), "{}", text(&o));
    let old_cert = old_file.to_str().unwrap();

    // Without the previous certificate the old checkpoint reads as foreign...
    for args in [
        vec!["log", "verify", f, "--config", c],
        vec!["log", "verify", "--config", c],
    ] {
        let o = pecd(&args);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {t}");
        assert!(
            t.contains("seq 3: checkpoint: signed by certificate")
                && t.contains("not a trusted provider certificate"),
            "{args:?}: {t}"
        );
    }
    // ...with it (option, repeatable, or config key) the whole log verifies.
    let tls = cfg.tls.cert.to_str().unwrap();
    for args in [
        vec!["log", "verify", f, "--config", c, "--cert", old_cert],
        vec![
            "log", "verify", f, "--config", c, "--cert", tls, "--cert", old_cert,
        ],
        vec!["log", "verify", "--config", c, "--cert", old_cert],
    ] {
        let o = pecd(&args);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {t}");
        assert!(t.contains("2 checkpoint(s) verified"), "{args:?}: {t}");
    }
    let toml = std::fs::read_to_string(&config).unwrap();
    assert!(toml.contains("chain = []"), "{toml}");
    let toml = toml.replacen(
        "chain = []",
        &format!("chain = []\nprevious_certs = [{:?}]", old_cert),
        1,
    );
    std::fs::write(&config, toml).unwrap();
    let o = pecd(&["log", "verify", f, "--config", c]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

/// The `"time"` of the trailer (last line) of an export.
fn trailer_time(export: &[u8]) -> String {
    let ls = lines(export);
    let v: serde_json::Value = serde_json::from_slice(ls.last().unwrap()).unwrap();
    assert_eq!(v["type"], "trailer");
    v["time"].as_str().unwrap().to_string()
}

/// A newer export cut back to an older one's end, with the older trailer pasted on,
/// verifies (the trailer names that very record): the report shows the trailer's signed
/// time, which is the older export's, so the reader can notice.
#[test]
fn verify_shows_when_the_trailer_was_signed() {
    let s = setup();
    let old_time = trailer_time(&s.export);
    let o = verify_file(&s, "intact.jsonl", &s.export);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(t.contains(&format!("export made at {old_time} (")), "{t}");

    // Two more records, then a new export.
    let cfg = Config::load(&s.config).unwrap();
    {
        let store = Store::open(&cfg.store.dir, StoreOptions::default()).unwrap();
        for i in 0..2 {
            let ev = TraceEvent::new(EventKind::Relayed, jiff::Timestamp::now())
                .msgid(format!("later{i}"));
            store.commit(Batch::new().trace(ev)).unwrap();
        }
    }
    let c = s.config.to_str().unwrap();
    let file = s.config.parent().unwrap().join("newer.jsonl");
    let o = pecd(&["log", "export", file.to_str().unwrap(), "--config", c]);
    assert!(o.status.success(), "{}", text(&o));
    let newer = std::fs::read(&file).unwrap();
    let new_time = trailer_time(&newer);
    assert_ne!(new_time, old_time);

    // The newer export cut after seq 18, the old trailer pasted on.
    let ls = lines(&newer);
    let old = lines(&s.export);
    let mut pasted = ls[..old.len() - 1].to_vec();
    pasted.push(old[old.len() - 1].clone());
    assert_ne!(join(&pasted), join(&ls));
    let o = verify_file(&s, "pasted.jsonl", &join(&pasted));
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(t.contains("the export ends at seq 18"), "{t}");
    assert!(t.contains(&format!("export made at {old_time} (")), "{t}");
    assert!(!t.contains(&new_time), "{t}");

    let o = verify_file(&s, "newer.jsonl", &newer);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(t.contains(&format!("export made at {new_time} (")), "{t}");
}
