//! The fuzz targets' seed corpora and dictionaries under `fuzz/seeds` and `fuzz/dict` (issue #13 item 9).
//!
//! `committed_corpora_run_clean` runs every committed seed through its target's entry point
//! on the stable toolchain (so CI keeps them meaningful: a seed that panics fails here) and
//! checks that each session target's seeds reach the states they are there for (a
//! transaction accepted, a login done). `write_seed_corpora` (ignored; run it with
//! `cargo test --test fuzz_corpus -- --ignored`) regenerates the seeds: real protocol
//! transcripts for the sessions, and PEC messages signed by a throw-away provider for the
//! message parsers. Nothing in them comes from the AGPL samples of `../shared`.

mod common;

use std::path::PathBuf;

use base64::Engine;
use pecd::pec::compose::Certification;
use pecd::pec::daticert::{Destinatario, TipoDestinatario, TipoRicevuta};
use pecd::pec::time::PecTime;

fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// A fuzz target's entry point.
type Entry = fn(&[u8]);

/// Every target and its entry point.
const TARGETS: [(&str, Entry); 9] = [
    ("daticert", pecd::fuzz::daticert),
    ("classify", pecd::fuzz::classify),
    ("ldif", pecd::fuzz::ldif),
    ("smtp_session", pecd::fuzz::smtp_session),
    ("incoming", pecd::fuzz::incoming),
    ("imap_session", pecd::fuzz::imap_session),
    ("pop3_session", pecd::fuzz::pop3_session),
    ("jmap_request", pecd::fuzz::jmap_request),
    ("jmap_email", pecd::fuzz::jmap_email),
];

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = fuzz_dir().join("seeds").join(target);
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|f| {
            let p = f.path();
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn committed_corpora_run_clean() {
    for (target, entry) in TARGETS {
        let seeds = corpus(target);
        assert!(seeds.len() >= 3, "{target}: {} seeds", seeds.len());
        let bytes: usize = seeds.iter().map(|(_, b)| b.len()).sum();
        assert!(
            bytes < 512 * 1024,
            "{target}: keep the corpus small ({bytes} bytes)"
        );
        for (path, seed) in &seeds {
            entry(seed);
            assert!(!seed.is_empty(), "{}", path.display());
        }
        let dict = fuzz_dir().join("dict").join(format!("{target}.dict"));
        let text =
            std::fs::read_to_string(&dict).unwrap_or_else(|e| panic!("{}: {e}", dict.display()));
        let entries = text
            .lines()
            .filter(|l| l.starts_with('"') && l.ends_with('"'))
            .count();
        assert!(entries >= 10, "{}: {entries} entries", dict.display());
    }
}

/// Every input a fuzzer ever crashed on (`fuzz/regressions/TARGET/`) runs clean now.
/// `*/mail-parser-invalid-part-id` (classify, incoming, jmap_email all found it within
/// seconds of a debug-assertions build): a `debug_assert!` inside mail-parser 0.11 on
/// malformed multipart nesting, which release builds skip and which every pecd build now
/// skips too (`[profile.dev.package.mail-parser]`; the fuzz builds use `-O`).
/// `jmap_email/mail-parser-part-cycle-oom`: a 6 KB message whose parsed part list refers
/// back to parts; the JMAP body structure grew exponentially (8 GB) until each part was
/// allowed once (`jmap::email::body_part`).
#[test]
fn fuzz_regressions_run_clean() {
    let dir = fuzz_dir().join("regressions");
    let mut ran = 0;
    for (target, entry) in TARGETS {
        for f in std::fs::read_dir(dir.join(target))
            .into_iter()
            .flatten()
            .flatten()
        {
            entry(&std::fs::read(f.path()).unwrap());
            ran += 1;
        }
    }
    assert!(ran >= 1, "no regression inputs under {}", dir.display());
}

/// The session seeds reach the states they are for: a message handed on after AUTH
/// (submission) and after a plain transaction (port 25); a login on IMAP and POP3.
#[test]
fn session_seeds_reach_their_states() {
    use pecd::smtp::session::{Event, Role, Session, SessionConfig};
    let run = |role, tls, wire: &[u8]| {
        let (mut s, _) = Session::new(
            SessionConfig {
                hostname: "fuzz.test".into(),
                role,
                max_message_bytes: 256 * 1024,
                max_recipients: 5,
                tls_available: true,
                local_domains: vec!["fuzz.test".into(), "pec.test".into()],
                max_auth_failures: 3,
                max_line_length: 1000,
            },
            tls,
        );
        let mut messages = 0;
        let mut events = s.feed(wire);
        while !events.is_empty() {
            let mut next = Vec::new();
            for e in events {
                match e {
                    Event::Authenticate { username, .. } => {
                        next.extend(s.auth_result((username.len() % 2 == 0).then_some(username)))
                    }
                    Event::Message(_) => {
                        messages += 1;
                        next.extend(s.message_result(250, "2.0.0", "ok"));
                    }
                    Event::StartTls => s.tls_started(),
                    _ => {}
                }
            }
            events = next;
        }
        messages
    };
    let smtp = corpus("smtp_session");
    assert!(
        smtp.iter().any(|(_, w)| run(Role::Submission, true, w) > 0),
        "no smtp_session seed gets a message past AUTH"
    );
    assert!(
        smtp.iter().any(|(_, w)| run(Role::Incoming, false, w) > 0),
        "no smtp_session seed gets a message in on port 25"
    );
    for (p, w) in corpus("incoming") {
        let delivered = run(Role::Incoming, false, w.get(1..).unwrap_or_default());
        assert_eq!(delivered, 1, "{}", p.display());
    }
    for (target, login) in [
        ("imap_session", &b"LOGIN a@pec.test pw"[..]),
        ("pop3_session", b"PASS pw"),
    ] {
        assert!(
            corpus(target)
                .iter()
                .any(|(_, w)| w.windows(login.len()).any(|x| x == login)),
            "{target}: no seed logs in"
        );
    }
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = fuzz_dir().join("seeds").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

/// `data` as DATA content, then the final dot.
fn stuffed(data: &[u8]) -> Vec<u8> {
    pecd::smtp::client::dot_stuff(data)
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// PEC messages signed by a throw-away provider: an envelope, receipts, an anomaly.
fn pec_messages() -> Vec<(&'static str, Vec<u8>)> {
    let pki = common::dev_pki("pec.fuzz.test");
    let cert = Certification {
        mittente: "a@pec.fuzz.test".into(),
        destinatari: vec![
            Destinatario {
                address: "b@pec.test".into(),
                tipo: TipoDestinatario::Certificato,
            },
            Destinatario {
                address: "c@example.org".into(),
                tipo: TipoDestinatario::Esterno,
            },
        ],
        risposte: "a@pec.fuzz.test".into(),
        oggetto: "Prova è".into(),
        identificativo: "opec-1.20261204@pec.fuzz.test".into(),
        msgid: Some("<m1@mua.test>".into()),
        ricevuta: TipoRicevuta::Breve,
    };
    let at = PecTime::italian("2026-12-04T10:00:00Z".parse().unwrap());
    let original = b"From: a@pec.fuzz.test\r\nTo: b@pec.test\r\nCc: c@example.org\r\n\
Subject: =?utf-8?q?Prova_=C3=A8?=\r\nMessage-ID: <m1@mua.test>\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"x\"\r\n\r\n--x\r\nContent-Type: text/plain\r\n\r\n\
ciao\r\n--x\r\nContent-Type: application/pdf; name=\"a.pdf\"\r\n\
Content-Disposition: attachment; filename=\"a.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n\
JVBERi0xLjQK\r\n--x--\r\n";
    let env =
        pecd::pec::envelope::transport(&pki.identity, &pki.signer, &cert, original.to_vec(), at)
            .unwrap();
    let postacert = pecd::pec::envelope::rewrite_original(
        original.to_vec(),
        &cert.identificativo,
        cert.msgid.as_deref(),
    );
    let build = |n| {
        pecd::pec::receipt::build(&pki.identity, &pki.signer, &cert, n, at)
            .unwrap()
            .bytes
    };
    use pecd::pec::receipt::Notice;
    let anomaly = pecd::pec::envelope::anomaly(
        &pki.identity,
        &pki.signer,
        b"From: x@example.org\r\nTo: b@pec.test\r\nSubject: hi\r\n\r\nciao\r\n",
        "x@example.org",
        &["b@pec.test".to_string()],
        "non PEC",
        at,
    )
    .unwrap()
    .bytes;
    vec![
        ("envelope.eml", env.message.bytes.clone()),
        ("accettazione.eml", build(Notice::Accettazione)),
        (
            "presa-in-carico.eml",
            build(Notice::PresaInCarico {
                ricezione: &["b@pec.test".to_string()],
                to: "posta-certificata@pec.fuzz.test",
            }),
        ),
        (
            "consegna-breve.eml",
            build(Notice::AvvenutaConsegna {
                consegna: "b@pec.test",
                form: TipoRicevuta::Breve,
                postacert: Some(&postacert),
            }),
        ),
        ("anomalia.eml", anomaly),
        (
            "plain.eml",
            b"From: x@example.org\r\nTo: b@pec.test\r\nSubject: plain\r\n\r\nciao\r\n".to_vec(),
        ),
    ]
}

#[test]
#[ignore = "regenerates fuzz/seeds; run by hand"]
fn write_seed_corpora() {
    let _ = std::fs::remove_dir_all(fuzz_dir().join("seeds"));
    let msgs = pec_messages();
    for (name, m) in &msgs {
        write("classify", name, m);
        write("jmap_email", name, m);
        if let Some(Ok(d)) = pecd::pec::classify::classify(m).unwrap().daticert {
            write(
                "daticert",
                &name.replace(".eml", ".xml"),
                d.to_xml().as_bytes(),
            );
        }
        // Port 25: one transaction per message (the first byte picks the read size).
        let mut t = vec![200u8];
        t.extend_from_slice(
            b"EHLO mx.pec.fuzz.test\r\nMAIL FROM:<a@pec.fuzz.test> BODY=8BITMIME SIZE=9000\r\n\
RCPT TO:<b@pec.test>\r\nDATA\r\n",
        );
        t.extend_from_slice(&stuffed(m));
        t.extend_from_slice(b"QUIT\r\n");
        write("incoming", name, &t);
    }

    // SMTP: submission with AUTH PLAIN / LOGIN (the target accepts even-length user
    // names), STARTTLS, port-25 dialogues, errors and the end-of-data variants.
    let user = "ab@fuzz.test";
    let plain = b64(&format!("\0{user}\0pw"));
    let msg = "From: ab@fuzz.test\r\nTo: b@x.it\r\nSubject: s\r\n\r\n..dot\r\nbody\r\n.\r\n";
    let smtp: [(&str, String); 6] = [
        (
            "submission-plain",
            format!(
                "EHLO c\r\nAUTH PLAIN {plain}\r\nMAIL FROM:<{user}> SIZE=100 BODY=8BITMIME\r\n\
RCPT TO:<b@x.it>\r\nRCPT TO:<c@fuzz.test>\r\nDATA\r\n{msg}RSET\r\nNOOP\r\nQUIT\r\n"
            ),
        ),
        (
            "submission-login",
            format!(
                "EHLO c\r\nAUTH LOGIN\r\n{}\r\n{}\r\nMAIL FROM:<{user}>\r\nRCPT TO:<d@y.it>\r\n\
DATA\r\n{msg}MAIL FROM:<{user}>\r\nRCPT TO:<e@y.it>\r\nDATA\r\n{}\r\n.\r\nQUIT\r\n",
                b64(user),
                b64("pw"),
                "L".repeat(1200)
            ),
        ),
        (
            "starttls",
            format!(
                "EHLO c\r\nSTARTTLS\r\nEHLO c\r\nAUTH PLAIN\r\n{plain}\r\n\
MAIL FROM:<{user}>\r\nRCPT TO:<b@x.it>\r\nDATA\r\n{msg}QUIT\r\n"
            ),
        ),
        (
            "incoming",
            "HELO mx.other.it\r\nMAIL FROM:<>\r\nRCPT TO:<b@fuzz.test>\r\n\
RCPT TO:<nobody@elsewhere.it>\r\nDATA\r\nSubject: x\r\n\r\nbody\r\n.\r\nVRFY b\r\nEXPN x\r\n\
HELP\r\nBDAT 5 LAST\r\nQUIT\r\n"
                .to_string(),
        ),
        (
            "smuggling",
            format!(
                "EHLO c\r\nMAIL FROM:<x@o.it>\r\nRCPT TO:<b@fuzz.test>\r\nDATA\r\na\n.\nb\r\n.\r\n\
MAIL FROM:<x@o.it>\r\nRCPT TO:<b@fuzz.test>\r\nDATA\r\nc\r.\rd\r\n.\r\nAUTH PLAIN {plain}\r\n"
            ),
        ),
        (
            "errors",
            format!(
                "MAIL FROM:<x>\r\nDATA\r\nEHLO {}\r\nEHLO c\r\nAUTH PLAIN =\r\nAUTH CRAM-MD5\r\n*\r\n\
RCPT TO:<a>\r\nMAIL FROM:<{user}> SIZE=999999999\r\nSTARTTLS\r\n",
                "h".repeat(1100)
            ),
        ),
    ];
    for (name, t) in smtp {
        write("smtp_session", name, t.as_bytes());
    }

    // IMAP and POP3: the client side of the transcripts the session tests replay.
    let transcripts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/transcripts");
    for f in std::fs::read_dir(&transcripts).unwrap().flatten() {
        let name = f.file_name().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(f.path()).unwrap();
        let mut input = Vec::new();
        for line in text.lines().filter_map(|l| l.strip_prefix("C: ")) {
            input.extend_from_slice(line.as_bytes());
            input.extend_from_slice(b"\r\n");
        }
        let target = if name.starts_with("imap") {
            "imap_session"
        } else {
            "pop3_session"
        };
        write(target, name.trim_end_matches(".txt"), &input);
    }
    write(
        "pop3_session",
        "apop-top-uidl",
        b"CAPA\r\nAUTH PLAIN\r\nAGFAcGVjLnRlc3QAcHc=\r\nSTAT\r\nUIDL 1\r\nTOP 2 0\r\nRETR 1\r\n\
DELE 1\r\nRSET\r\nNOOP\r\nLIST 9\r\nQUIT\r\n",
    );

    // JMAP requests: every method family and result references.
    let using = r#""using":["urn:ietf:params:jmap:core","urn:ietf:params:jmap:mail","urn:ietf:params:jmap:submission","urn:pecd:params:jmap:pec"]"#;
    let jmap = [
        (
            "echo",
            format!(r#"{{{using},"methodCalls":[["Core/echo",{{"hello":[1,true,null]}},"0"]]}}"#),
        ),
        (
            "query-get",
            format!(
                r##"{{{using},"methodCalls":[["Email/query",{{"accountId":"A1","filter":{{"operator":"AND","conditions":[{{"inMailbox":"F1"}},{{"text":"prova","pecKind":"posta-certificata"}},{{"operator":"NOT","conditions":[{{"hasKeyword":"$seen"}}]}}]}},"sort":[{{"property":"receivedAt","isAscending":false}}],"position":0,"limit":50,"collapseThreads":true}},"q"],["Email/get",{{"accountId":"A1","#ids":{{"resultOf":"q","name":"Email/query","path":"/ids"}},"properties":["subject","from","pec","header:X-Ricevuta:asText"],"fetchTextBodyValues":true}},"g"],["Thread/get",{{"accountId":"A1","#ids":{{"resultOf":"g","name":"Email/get","path":"/list/*/threadId"}}}},"t"]]}}"##
            ),
        ),
        (
            "set",
            format!(
                r#"{{{using},"methodCalls":[["Mailbox/set",{{"accountId":"A1","create":{{"m":{{"name":"Pratiche","parentId":null}}}},"destroy":["F3"]}},"0"],["Email/set",{{"accountId":"A1","update":{{"Mabc":{{"keywords/$seen":true,"mailboxIds/F2":true}}}},"ifInState":"1"}},"1"]]}}"#
            ),
        ),
        (
            "submission",
            format!(
                r##"{{{using},"methodCalls":[["Email/set",{{"accountId":"A1","create":{{"e":{{"from":[{{"email":"a@pec.test"}}],"to":[{{"email":"b@pec.test"}}],"subject":"s","bodyValues":{{"1":{{"value":"ciao"}}}},"textBody":[{{"partId":"1","type":"text/plain"}}],"header:X-TipoRicevuta":" breve"}}}}}},"0"],["EmailSubmission/set",{{"accountId":"A1","create":{{"s":{{"emailId":"#e","identityId":"I1"}}}}}},"1"],["EmailSubmission/changes",{{"accountId":"A1","sinceState":"0","maxChanges":5}},"2"]]}}"##
            ),
        ),
    ];
    for (name, body) in jmap {
        write("jmap_request", name, body.as_bytes());
    }

    // The provider index: this provider's own entry, as `pecd index export` writes it.
    let dir = tempfile::tempdir().unwrap();
    let d = pecd::pec::address::Domain::parse("pec.fuzz.test").unwrap();
    let report = pecd::pki::init_dir(dir.path(), &d, None, false).unwrap();
    let config = pecd::config::Config::load(&report.config).unwrap();
    let signer = config.load_signer().unwrap();
    let own =
        pecd::pec::index::ProviderRecord::for_this_provider(&config, signer.certificate()).unwrap();
    let ldif = own.to_ldif().unwrap();
    write("ldif", "own.ldif", ldif.as_bytes());
    write(
        "ldif",
        "two.ldif",
        format!(
            "{ldif}\n{}",
            ldif.replace("pec.fuzz.test", "pec.altro.test")
        )
        .as_bytes(),
    );
    write(
        "ldif",
        "folded.ldif",
        b"version: 1\n\ndn: providerName=X,o=postacert\nobjectclass: provider\nproviderName: X\n\
mailReceipt: posta-certificata@x.it\nmanagedDomains: x.it\nmanagedDomains: y.\n it\n\
providerCertificateHash: 00\nLDAPServiceUrl:: bGRhcDovL3g=\n",
    );
}
