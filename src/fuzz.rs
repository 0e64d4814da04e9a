//! The entry points of the cargo-fuzz targets in `fuzz/fuzz_targets/`. They live in the
//! library so that a stable-toolchain test (`tests/fuzz_entry.rs`) runs exactly the same
//! code over the real samples and mutations of them; the fuzz targets are one-line calls.
//!
//! The session entry points ([`imap_session`], [`pop3_session`]) run the sans-IO sessions
//! against a real store in the temporary directory, as the drivers do.
//!
//! Each entry point must never panic on any input; where a property holds (a parsed
//! daticert written back parses to the same value) it is asserted, so the fuzzer finds
//! violations too.

use crate::pec::daticert::Daticert;

/// Parses arbitrary bytes as a daticert; a parsed value must survive write → parse.
pub fn daticert(data: &[u8]) {
    if let Ok(d) = Daticert::parse(data) {
        let xml = d.to_xml();
        match Daticert::parse(xml.as_bytes()) {
            Ok(again) => assert_eq!(d, again, "daticert did not round-trip"),
            Err(e) => panic!("a daticert we wrote does not parse: {e}\n{xml}"),
        }
    }
}

/// Classifies and verifies arbitrary bytes as a mail message (the whole `pecd verify`
/// path: MIME, S/MIME split, CMS parsing, daticert, consistency checks).
pub fn classify(data: &[u8]) {
    let _ = crate::report::verify(data, None);
}

/// Parses arbitrary bytes as a provider index (LDIF).
pub fn ldif(data: &[u8]) {
    let _ = crate::pec::index::ProviderIndex::parse(data);
}

/// Drives an SMTP session (each role, with and without TLS) with arbitrary client bytes,
/// fed in pieces whose sizes come from the input, answering every decision it asks for.
pub fn smtp_session(data: &[u8]) {
    use crate::smtp::session::{Event, Role, Session, SessionConfig};
    for (role, tls) in [
        (Role::Submission, true),
        (Role::Submission, false),
        (Role::Incoming, false),
    ] {
        let cfg = SessionConfig {
            hostname: "fuzz.test".into(),
            role,
            max_message_bytes: 4096,
            max_recipients: 5,
            tls_available: true,
            local_domains: vec!["fuzz.test".into()],
            max_auth_failures: 3,
            max_line_length: 1000,
        };
        let (mut s, _) = Session::new(cfg, tls);
        if tls {
            s.offer_external();
        }
        if role == Role::Incoming {
            s.stream_data(64);
        }
        let step = 1 + data.first().copied().unwrap_or(7) as usize % 97;
        for chunk in data.chunks(step) {
            let mut events = s.feed(chunk);
            let mut rounds = 0;
            while rounds < 1000 {
                rounds += 1;
                let mut next = Vec::new();
                for e in events {
                    match e {
                        Event::Authenticate { username, .. } => next
                            .extend(s.auth_result((username.len() % 2 == 0).then_some(username))),
                        Event::AuthenticateExternal { authzid } => {
                            next.extend(s.auth_result(authzid.filter(|a| a.len() % 2 == 0)))
                        }
                        Event::Message(_) => next.extend(s.message_result(250, "2.0.0", "ok")),
                        Event::StartTls => s.tls_started(),
                        Event::Reply(r) => {
                            assert!(r.ends_with(b"\r\n"), "a reply line must end with CRLF")
                        }
                        Event::DataChunk(c) => {
                            assert!(!c.is_empty());
                            // Every other chunk cannot be kept, as when the budget is out.
                            if c.len() % 2 == 1 {
                                s.abort_data();
                            }
                        }
                        Event::Close | Event::Refused(_) | Event::DataDiscarded => {}
                    }
                }
                if next.is_empty() {
                    break;
                }
                events = next;
            }
            if s.is_closed() {
                break;
            }
        }
    }
}

/// A whole SMTP transaction on port 25 into the incoming point's judgement: the session in
/// the incoming role takes the client bytes (fed in pieces whose sizes come from the
/// input), and every message it hands on is classified, its signature checked, and, when
/// it is a formally correct transport envelope, its unsigned outer headers compared with
/// the signed content ([`crate::pec::outer`]), as [`crate::pipeline::incoming`] does
/// before it decides. Seeds: `fuzz/corpus/incoming` (transcripts around real and generated
/// PEC messages).
pub fn incoming(data: &[u8]) {
    use crate::smtp::session::{Event, Role, Session, SessionConfig};
    let cfg = SessionConfig {
        hostname: "fuzz.test".into(),
        role: Role::Incoming,
        max_message_bytes: 256 * 1024,
        max_recipients: 5,
        tls_available: true,
        local_domains: vec!["pec.test".into()],
        max_auth_failures: 3,
        max_line_length: 1000,
    };
    let (mut s, _) = Session::new(cfg, false);
    let step = 1 + data.first().copied().unwrap_or(0) as usize % 211;
    for chunk in data.get(1..).unwrap_or_default().chunks(step) {
        let mut events = s.feed(chunk);
        while !events.is_empty() {
            let mut next = Vec::new();
            for e in events {
                match e {
                    Event::Message(env) => {
                        judge(&env.data);
                        next.extend(s.message_result(250, "2.0.0", "ok"));
                    }
                    Event::StartTls => s.tls_started(),
                    Event::Authenticate { .. } => {
                        panic!("the incoming role never authenticates")
                    }
                    _ => {}
                }
            }
            events = next;
        }
        if s.is_closed() {
            break;
        }
    }
}

/// What the incoming point reads of a received message before deciding.
fn judge(data: &[u8]) {
    let Ok(c) = crate::pec::classify::classify(data) else {
        return;
    };
    // The pipeline's zero-copy variant finds the same parts. A fuzz oracle: this assert is
    // meant to stop the fuzzer on a disagreement (it runs only from the fuzz targets and
    // tests/fuzz_entry.rs, never in the server).
    let shared = crate::pec::classify::classify_shared(&std::sync::Arc::new(data.to_vec()));
    assert_eq!(
        shared.as_ref().map(|s| s.postacert.as_deref()).ok(),
        Some(c.postacert.as_deref()),
        "classify_shared and classify disagree"
    );
    let _ = crate::report::verify(data, None);
    if let (crate::pec::classify::Kind::TransportEnvelope, Ok(d)) = (&c.kind, c.certified()) {
        let (outer, _) = crate::pec::mime::split_header_body(data);
        let _ = crate::pec::outer::check(outer, d, c.postacert.as_deref().unwrap_or_default());
    }
}

/// The store the session entry points run against: one per entry point and process, in
/// the system temporary directory, with mailboxes `a@pec.test` and `b@pec.test` (the
/// names the transcripts use). It lives as long as the process, so what one input stores
/// is seen by the next: the sessions are fuzzed from more states that way, at the price
/// of a crash possibly needing the inputs before it to reproduce.
fn session_store(which: &'static str) -> &'static crate::store::Store {
    use std::sync::OnceLock;
    static IMAP: OnceLock<crate::store::Store> = OnceLock::new();
    static POP3: OnceLock<crate::store::Store> = OnceLock::new();
    let cell = if which == "imap" { &IMAP } else { &POP3 };
    cell.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("pecd-fuzz-{which}-{}", std::process::id()));
        // A directory left by an earlier process with the same id is stale.
        let _ = std::fs::remove_dir_all(&dir);
        let opened = crate::store::Store::open(
            &dir,
            crate::store::StoreOptions {
                // Small, so inputs that APPEND cannot grow the store without bound.
                default_quota_bytes: 256 * 1024,
                ..crate::store::StoreOptions::default()
            },
        );
        // Not input-dependent: without a store the entry point cannot run at all.
        let store = opened.unwrap_or_else(|e| panic!("fuzz store in {}: {e}", dir.display()));
        for who in ["a@pec.test", "b@pec.test"] {
            let Ok(address) = crate::pec::address::PecAddress::parse(who) else {
                continue;
            };
            let added = store.add_mailbox(crate::store::NewMailbox {
                address,
                password: crate::store::mailbox::Password::new("pw"),
                quota_bytes: None,
                options: Default::default(),
                provisional: false,
            });
            if let Err(e) = added {
                panic!("fuzz mailbox {who}: {e}");
            }
        }
        store
    })
}

/// Keeps two messages (one multipart) in `a@pec.test`'s INBOX, whatever earlier inputs
/// expunged or deleted.
fn seed_inbox(store: &crate::store::Store) {
    use crate::store::{Batch, Delivery};
    const MSGS: [&[u8]; 2] = [
        b"Subject: uno\r\nFrom: x@y.it\r\nMessage-ID: <1@y.it>\r\n\r\nriga 1\r\n.riga col punto\r\n",
        b"Subject: due\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nciao\r\n--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: dentro\r\n\r\ncorpo\r\n--b--\r\n",
    ];
    let Ok(a) = crate::pec::address::PecAddress::parse("a@pec.test") else {
        return;
    };
    let live = store
        .messages(&a, "INBOX")
        .map(|m| {
            m.iter()
                .filter(|r| !r.flags.iter().any(|f| f == crate::pop3::DELETED_KEYWORD))
                .count()
        })
        .unwrap_or(0);
    if live >= MSGS.len() {
        return;
    }
    for m in MSGS {
        if let Ok(blob) = store.blobs().put(m) {
            let d = Delivery::inbox(a.clone(), blob, jiff::Timestamp::now());
            // Over quota after many APPENDs: the session then runs on what is there.
            let _ = store.commit(Batch::new().deliver(d));
        }
    }
}

/// How many steps one chunk of input may cause before the session is deemed stuck.
const MAX_ROUNDS: usize = 100_000;

/// Drives an IMAP session (over TLS, then without) with arbitrary client bytes fed in
/// pieces whose sizes come from the input, against a real store ([`session_store`]):
/// logins succeed when the password is `pw`, every store command runs, IDLE is woken.
/// Each chunk must bring the session to wait for input or close in bounded steps.
pub fn imap_session(data: &[u8]) {
    use crate::imap::Limits;
    use crate::imap::session::{Action, Session};
    let store = session_store("imap");
    seed_inbox(store);
    for tls in [true, false] {
        let limits = Limits {
            max_command_bytes: 4096,
            max_literal_bytes: 16 * 1024,
            max_auth_failures: 3,
        };
        let mut s = Session::new(limits, tls);
        if tls {
            s.offer_external();
        }
        let step = 1 + data.first().copied().unwrap_or(7) as usize % 97;
        let mut closed = false;
        for chunk in data.chunks(step) {
            s.feed(chunk);
            let mut rounds = 0;
            loop {
                rounds += 1;
                assert!(rounds < MAX_ROUNDS, "IMAP session makes no progress");
                let action = s.next();
                let _ = s.take_output();
                match action {
                    Action::Authenticate { user, pass } => {
                        s.auth_result((pass == "pw").then_some(user))
                    }
                    // A card that opens what it names (any mailbox of the store).
                    Action::AuthenticateExternal { authzid } => s.auth_result(authzid),
                    Action::Execute => s.execute(store),
                    Action::Idle => {
                        s.idle_refresh(store);
                        s.idle_changed(store);
                        let _ = s.take_output();
                        break;
                    }
                    Action::NeedInput => break,
                    Action::Close => {
                        closed = true;
                        break;
                    }
                }
            }
            if closed {
                break;
            }
        }
        let _ = s.timeout();
    }
}

/// Drives a POP3 session (over TLS, then without) as [`imap_session`] does.
pub fn pop3_session(data: &[u8]) {
    use crate::pop3::session::{Action, Session};
    let store = session_store("pop3");
    seed_inbox(store);
    for tls in [true, false] {
        let mut s = Session::new(tls);
        if tls {
            s.offer_external();
        }
        let step = 1 + data.first().copied().unwrap_or(7) as usize % 97;
        let mut closed = false;
        for chunk in data.chunks(step) {
            s.feed(chunk);
            let mut rounds = 0;
            loop {
                rounds += 1;
                assert!(rounds < MAX_ROUNDS, "POP3 session makes no progress");
                let action = s.next();
                let _ = s.take_output();
                match action {
                    Action::Authenticate { user, pass } => {
                        s.auth_result((pass == "pw").then_some(user))
                    }
                    Action::AuthenticateExternal { authzid } => s.auth_result(authzid),
                    Action::Execute => s.execute(store),
                    Action::NeedInput => break,
                    Action::Close => {
                        closed = true;
                        break;
                    }
                }
            }
            if closed {
                break;
            }
        }
        let _ = s.timeout();
    }
}

/// Parses arbitrary bytes as a JMAP request (RFC 8620 §3.3) and, for each method call,
/// resolves its result references against answers shaped like real ones and checks and
/// evaluates any `filter` over a small account view: the untrusted part of the JMAP API
/// path up to the store.
pub fn jmap_request(data: &[u8]) {
    use crate::jmap::methods::query;
    use crate::jmap::request;
    let Ok(req) = request::parse(data, &crate::jmap::Limits::default()) else {
        return;
    };
    let responses = vec![(
        "Email/query".to_string(),
        serde_json::json!({"ids": ["Ma", "Mb"], "list": [{"threadId": "Tx", "emailIds": ["Ma"]}]}),
        "0".to_string(),
    )];
    let view = fuzz_view();
    for mut call in req.calls {
        let _ = request::resolve_references(&mut call.args, &responses);
        if let Some(f) = call.args.get("filter")
            && query::check(f, 0).is_ok()
        {
            for e in &view.emails {
                let _ = query::matches(&view, e, f, 0);
            }
        }
        if let Some(sort) = call.args.get("sort") {
            let mut hits: Vec<usize> = (0..view.emails.len()).collect();
            let _ = query::sort(&view, &mut hits, Some(sort));
        }
        if let Some(p) = call.args.get("path").and_then(serde_json::Value::as_str) {
            let _ = request::pointer(&responses[0].1, p);
        }
    }
}

/// Reads arbitrary bytes as a stored message the way JMAP does: the summary (headers,
/// preview, PEC facts) and every Email property that needs the content, with every
/// header form, and each body part's blob id followed.
pub fn jmap_email(data: &[u8]) {
    use crate::jmap::email;
    let _ = crate::jmap::summary::summarize(data);
    let Some(m) = email::parse(data) else { return };
    let props: Vec<String> = [
        "bodyStructure",
        "textBody",
        "htmlBody",
        "attachments",
        "headers",
        "bodyValues",
        "header:Subject:asText",
        "header:From:asAddresses",
        "header:To:asGroupedAddresses",
        "header:Message-ID:asMessageIds",
        "header:Date:asDate",
        "header:List-Post:asURLs",
        "header:X-Anything:asRaw:all",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let opts = email::BodyOptions {
        fetch_all: true,
        max_bytes: 1 + data.len() % 512,
        ..Default::default()
    };
    let mut out = serde_json::Map::new();
    email::content_properties(&m, "Bx", &props, &opts, &mut out);
}

fn fuzz_view() -> crate::jmap::account::View {
    use crate::jmap::account::{Entry, Location, View, email_id};
    let msgs: [&[u8]; 2] = [
        b"From: A <a@x.test>\r\nTo: b@y.test\r\nSubject: Fattura\r\nMessage-ID: <1@x>\r\n\r\ntesto\r\n",
        b"From: posta-certificata@pec.test\r\nX-Ricevuta: accettazione\r\nSubject: ACCETTAZIONE: x\r\n\r\n-\r\n",
    ];
    let mut v = View::default();
    for (i, raw) in msgs.iter().enumerate() {
        let blob = crate::store::BlobId::of(raw);
        let summary = std::sync::Arc::new(crate::jmap::summary::summarize(raw));
        v.emails.push(Entry {
            id: email_id(&blob),
            thread_id: crate::jmap::account::thread_id(&summary.thread_key),
            blob,
            size: raw.len() as u64,
            received: jiff::Timestamp::from_second(1_700_000_000 + i as i64).unwrap_or_default(),
            keywords: Default::default(),
            locations: vec![Location {
                folder: "INBOX".into(),
                folder_id: 0,
                uid: i as u32 + 1,
                flags: vec![],
            }],
            summary,
        });
    }
    v
}
