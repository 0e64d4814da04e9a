//! Runs the fuzz targets' entry points (`pecd::fuzz`) on the stable toolchain: over the
//! real samples (when `../shared` is present), over our own generated messages, and over
//! deterministic mutations of both (truncations, bit flips, splices). Nothing may panic.

mod common;

use std::path::PathBuf;

fn seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/samples");
    match std::fs::read_dir(&dir) {
        Ok(subdirs) => {
            for sub in subdirs.flatten() {
                for f in std::fs::read_dir(sub.path())
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    if f.path().file_name().is_some_and(|n| n != "README.md")
                        && let Ok(b) = std::fs::read(f.path())
                    {
                        out.push(b);
                    }
                }
            }
        }
        Err(_) => eprintln!(
            "SKIP (real samples): {} is absent; fuzzing only our own messages",
            dir.display()
        ),
    }
    out
}

/// A small deterministic PRNG (xorshift), so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

fn mutations(seed: &[u8], rng: &mut Rng, n: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let mut m = seed.to_vec();
        match i % 4 {
            0 => m.truncate(rng.below(seed.len() + 1)),
            1 => {
                for _ in 0..1 + rng.below(8) {
                    let p = rng.below(m.len());
                    if let Some(b) = m.get_mut(p) {
                        *b ^= 1 << rng.below(8);
                    }
                }
            }
            2 => {
                let a = rng.below(m.len());
                let b = rng.below(m.len());
                let (lo, hi) = (a.min(b), a.max(b));
                let chunk = m[lo..hi].to_vec();
                let at = rng.below(m.len());
                m.splice(at..at, chunk);
            }
            _ => {
                let p = rng.below(m.len());
                m.splice(p..p, b"\r\n--\"<!ENTITY x>&x;=?utf-8?B?".iter().copied());
            }
        }
        out.push(m);
    }
    out
}

fn daticert_of(msg: &[u8]) -> Option<Vec<u8>> {
    let c = pecd::pec::classify::classify(msg).ok()?;
    c.daticert?.ok().map(|d| d.to_xml().into_bytes())
}

#[test]
fn classify_entry_point_survives_samples_and_mutations() {
    let pki = common::dev_pki("pec.fuzz.test");
    let mut corpus = seeds();
    let cert = pecd::pec::compose::Certification {
        mittente: "a@pec.fuzz.test".into(),
        destinatari: vec![pecd::pec::daticert::Destinatario {
            address: "b@pec.fuzz.test".into(),
            tipo: pecd::pec::daticert::TipoDestinatario::Certificato,
        }],
        risposte: "a@pec.fuzz.test".into(),
        oggetto: "fuzz".into(),
        identificativo: "opec-1@pec.fuzz.test".into(),
        msgid: Some("<m@x>".into()),
        ricevuta: pecd::pec::daticert::TipoRicevuta::Completa,
    };
    let at = pecd::pec::time::PecTime::italian(jiff::Timestamp::now());
    let env = pecd::pec::envelope::transport(
        &pki.identity,
        &pki.signer,
        &cert,
        b"Subject: x\r\n\r\nbody\r\n".to_vec(),
        at,
    )
    .unwrap();
    corpus.push(env.message.bytes);
    let mut rng = Rng(0x9e3779b97f4a7c15);
    let mut runs = 0;
    for seed in &corpus {
        pecd::fuzz::classify(seed);
        for m in mutations(seed, &mut rng, 60) {
            pecd::fuzz::classify(&m);
            runs += 1;
        }
    }
    assert!(runs >= 60, "the corpus must not be empty");
}

#[test]
fn daticert_entry_point_survives_samples_and_mutations() {
    let mut corpus: Vec<Vec<u8>> = seeds().iter().filter_map(|m| daticert_of(m)).collect();
    corpus.push(br#"<?xml version="1.0"?><!DOCTYPE postacert PUBLIC "x" "http://x/y.dtd"><postacert tipo="presa-in-carico" errore="nessuno"><intestazione><mittente>a@b</mittente><destinatari tipo="esterno">c@d</destinatari><risposte>a@b</risposte></intestazione><dati><gestore-emittente>G</gestore-emittente><data zona="+0200"><giorno>01/06/2025</giorno><ora>10:00:00</ora></data><identificativo>i@b</identificativo><ricezione>c@d</ricezione><ricezione>e@f</ricezione></dati></postacert>"#.to_vec());
    let mut rng = Rng(0x2545f4914f6cdd1d);
    for seed in &corpus {
        pecd::fuzz::daticert(seed);
        for m in mutations(seed, &mut rng, 200) {
            pecd::fuzz::daticert(&m);
        }
    }
}

#[test]
fn smtp_session_entry_point_survives_transcripts_and_mutations() {
    let seeds: Vec<&[u8]> = vec![
        b"EHLO x\r\nAUTH PLAIN AGFAZnV6ei50ZXN0AHB3\r\nMAIL FROM:<a@fuzz.test> SIZE=10\r\nRCPT TO:<b@fuzz.test>\r\nDATA\r\nSubject: x\r\n\r\n..body\r\n.\r\nRSET\r\nQUIT\r\n",
        b"EHLO x\r\nSTARTTLS\r\nEHLO y\r\nAUTH LOGIN\r\nYUBmdXp6LnRlc3Q=\r\ncHc=\r\nMAIL FROM:<a@fuzz.test>\r\n",
        b"HELO x\r\nMAIL FROM:<>\r\nRCPT TO:<postmaster@fuzz.test>\r\nDATA\r\n.\r\nNOOP\r\nVRFY x\r\nBDAT 10 LAST\r\n",
    ];
    let mut rng = Rng(0x51afd7ed558ccd);
    for seed in seeds {
        pecd::fuzz::smtp_session(seed);
        for m in mutations(seed, &mut rng, 300) {
            pecd::fuzz::smtp_session(&m);
        }
    }
}

#[test]
fn ldif_entry_point_survives_mutations() {
    let dir = tempfile::tempdir().unwrap();
    let d = pecd::pec::address::Domain::parse("pec.fuzz.test").unwrap();
    let report = pecd::pki::init_dir(dir.path(), &d, None, false).unwrap();
    let config = pecd::config::Config::load(&report.config).unwrap();
    let signer = config.load_signer().unwrap();
    let own =
        pecd::pec::index::ProviderRecord::for_this_provider(&config, signer.certificate()).unwrap();
    let seed = own.to_ldif().unwrap().into_bytes();
    assert!(pecd::pec::index::ProviderIndex::parse(&seed).is_ok());
    let mut rng = Rng(0x9e3779b97f4a7c15);
    for m in mutations(&seed, &mut rng, 400) {
        pecd::fuzz::ldif(&m);
    }
}

/// The client lines (`C:`) of the transcripts whose name starts with `prefix`, as sent.
fn transcript_inputs(prefix: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/transcripts");
    let mut out = Vec::new();
    for f in std::fs::read_dir(&dir).expect("transcripts").flatten() {
        let name = f.file_name().to_string_lossy().into_owned();
        if !name.starts_with(prefix) {
            continue;
        }
        let text = std::fs::read_to_string(f.path()).expect("transcript");
        let mut input = Vec::new();
        for line in text.lines().filter_map(|l| l.strip_prefix("C: ")) {
            input.extend_from_slice(line.as_bytes());
            input.extend_from_slice(b"\r\n");
        }
        out.push(input);
    }
    assert!(
        !out.is_empty(),
        "no {prefix}* transcripts in {}",
        dir.display()
    );
    out
}

#[test]
fn imap_session_entry_point_survives_transcripts_and_mutations() {
    let mut seeds = transcript_inputs("imap_");
    seeds.push(
        b"1 LOGIN a@pec.test pw\r\n2 SELECT INBOX\r\n3 FETCH 1:* (FLAGS UID ENVELOPE BODYSTRUCTURE BODY[] BODY.PEEK[1.MIME] BODY[2.1.HEADER] BODY[HEADER.FIELDS (SUBJECT)]<0.10>)\r\n4 UID STORE 1:* +FLAGS (\\Deleted $x)\r\n5 SEARCH OR SUBJECT uno NOT SEEN\r\n6 APPEND Trash {12+}\r\nSubject: x\r\n\r\n7 IDLE\r\nDONE\r\n8 COPY 1:* Trash\r\n9 UID MOVE 1 Archive\r\n10 EXPUNGE\r\n11 LIST \"\" \"%*%\"\r\n12 STATUS INBOX (MESSAGES UIDNEXT)\r\n13 GETQUOTAROOT INBOX\r\n14 FETCH 1,1:*,*:1 FLAGS\r\n15 CLOSE\r\n16 LOGOUT\r\n"
            .to_vec(),
    );
    seeds.push(b"1 AUTHENTICATE PLAIN\r\nAGFAcGVjLnRlc3QAcHc=\r\n2 CREATE a/b/c\r\n3 RENAME a/b x\r\n4 DELETE x/c\r\n5 EXAMINE Sent\r\n6 FETCH 1 RFC822\r\n".to_vec());
    let mut rng = Rng(0x3c6ef372fe94f82b);
    let mut runs = 0;
    for seed in &seeds {
        pecd::fuzz::imap_session(seed);
        for m in mutations(seed, &mut rng, 150) {
            pecd::fuzz::imap_session(&m);
            runs += 1;
        }
    }
    assert!(runs >= 150 * 3);
}

#[test]
fn pop3_session_entry_point_survives_transcripts_and_mutations() {
    let mut seeds = transcript_inputs("pop3_");
    seeds.push(b"CAPA\r\nUSER a@pec.test\r\nPASS pw\r\nSTAT\r\nLIST\r\nUIDL 1\r\nTOP 2 1\r\nRETR 1\r\nDELE 2\r\nRSET\r\nDELE 1\r\nNOOP\r\nQUIT\r\n".to_vec());
    seeds.push(
        b"AUTH PLAIN\r\nAGFAcGVjLnRlc3QAcHc=\r\nRETR 2\r\nTOP 1 99999999999999999999\r\nQUIT\r\n"
            .to_vec(),
    );
    let mut rng = Rng(0xa54ff53a5f1d36f1);
    let mut runs = 0;
    for seed in &seeds {
        pecd::fuzz::pop3_session(seed);
        for m in mutations(seed, &mut rng, 200) {
            pecd::fuzz::pop3_session(&m);
            runs += 1;
        }
    }
    assert!(runs >= 200 * 3);
}

#[test]
fn jmap_request_entry_point_survives_requests_and_mutations() {
    let seeds: Vec<Vec<u8>> = vec![
        br##"{"using":["urn:ietf:params:jmap:core","urn:ietf:params:jmap:mail","urn:pecd:params:jmap:pec"],"methodCalls":[["Email/query",{"accountId":"A1","filter":{"operator":"AND","conditions":[{"inMailbox":"F0"},{"operator":"NOT","conditions":[{"hasKeyword":"$seen"}]},{"text":"fattura"},{"pecIdentificativo":"<opec@x>"}]},"sort":[{"property":"receivedAt","isAscending":false},{"property":"subject"}],"position":0,"limit":50,"collapseThreads":true},"0"],["Email/get",{"accountId":"A1","#ids":{"resultOf":"0","name":"Email/query","path":"/ids"},"properties":["pec","subject"]},"1"],["Thread/get",{"#ids":{"resultOf":"0","name":"Email/query","path":"/list/*/emailIds"}},"2"]]}"##.to_vec(),
        br##"{"using":["urn:ietf:params:jmap:core"],"methodCalls":[["Core/echo",{"hello":[1,2.5,null,true,{"a":"\u00e8"}]},"e"]],"createdIds":{"x":"M1"}}"##.to_vec(),
        br##"{"using":[],"methodCalls":[["Email/set",{"create":{"d":{"mailboxIds":{"#m":true},"keywords":{"$draft":true},"header:X-TipoRicevuta:asText":"breve","bodyValues":{"t":{"value":"x"}}}},"update":{"#d":{"keywords/$seen":true}}},"s"]]}"##.to_vec(),
    ];
    let mut rng = Rng(0x510e527fade682d1);
    let mut runs = 0;
    for seed in &seeds {
        pecd::fuzz::jmap_request(seed);
        for m in mutations(seed, &mut rng, 300) {
            pecd::fuzz::jmap_request(&m);
            runs += 1;
        }
    }
    assert!(runs >= 900);
}

#[test]
fn jmap_email_entry_point_survives_samples_and_mutations() {
    let seeds = seeds();
    let mut rng = Rng(0x9b05688c2b3e6c1f);
    for seed in &seeds {
        pecd::fuzz::jmap_email(seed);
        for m in mutations(seed, &mut rng, 20) {
            pecd::fuzz::jmap_email(&m);
        }
    }
}

/// The port-25 target (`pecd::fuzz::incoming`) over its committed seeds (transcripts
/// around signed PEC messages) and mutations of them.
#[test]
fn incoming_entry_point_survives_seeds_and_mutations() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/incoming");
    let mut rng = Rng(0x6a09e667f3bcc909);
    let mut runs = 0;
    for f in std::fs::read_dir(&dir)
        .expect("fuzz/seeds/incoming")
        .flatten()
    {
        let seed = std::fs::read(f.path()).unwrap();
        pecd::fuzz::incoming(&seed);
        for m in mutations(&seed, &mut rng, 40) {
            pecd::fuzz::incoming(&m);
            runs += 1;
        }
    }
    assert!(runs >= 200, "{runs}");
}
