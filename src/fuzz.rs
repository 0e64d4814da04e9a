//! The entry points of the cargo-fuzz targets in `fuzz/fuzz_targets/`. They live in the
//! library so that a stable-toolchain test (`tests/fuzz_entry.rs`) runs exactly the same
//! code over the real samples and mutations of them; the fuzz targets are one-line calls.
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
        };
        let (mut s, _) = Session::new(cfg, tls);
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
                        Event::Message(_) => next.extend(s.message_result(250, "2.0.0", "ok")),
                        Event::StartTls => s.tls_started(),
                        Event::Reply(r) => {
                            assert!(r.ends_with(b"\r\n"), "a reply line must end with CRLF")
                        }
                        Event::Close => {}
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
