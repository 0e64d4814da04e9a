//! Table-driven tests of the SMTP session, without sockets.

use super::session::{Event, Role, Session, SessionConfig};

fn cfg(role: Role) -> SessionConfig {
    SessionConfig {
        hostname: "mail.pec.test".into(),
        role,
        max_message_bytes: 1000,
        max_recipients: 3,
        tls_available: true,
        local_domains: vec!["pec.test".into()],
        max_auth_failures: 2,
    }
}

/// Concatenated reply text of a batch of events.
fn text(events: &[Event]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Reply(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        })
        .collect()
}

fn codes(events: &[Event]) -> Vec<u16> {
    text(events)
        .lines()
        .filter(|l| l.as_bytes().get(3) == Some(&b' '))
        .filter_map(|l| l[..3].parse().ok())
        .collect()
}

fn authed_session() -> Session {
    let (mut s, _) = Session::new(cfg(Role::Submission), true);
    s.feed(b"EHLO client\r\n");
    let ev = s.feed(b"AUTH PLAIN AGFAcGVjLnRlc3QAc2VjcmV0\r\n"); // \0a@pec.test\0secret
    assert_eq!(
        ev,
        vec![Event::Authenticate {
            username: "a@pec.test".into(),
            password: "secret".into()
        }]
    );
    assert_eq!(codes(&s.auth_result(Some("a@pec.test".into()))), vec![235]);
    s
}

#[test]
fn ehlo_advertises_only_what_is_allowed() {
    let (mut clear, greeting) = Session::new(cfg(Role::Submission), false);
    assert!(text(&[greeting]).starts_with("220 mail.pec.test"));
    let t = text(&clear.feed(b"EHLO c\r\n"));
    assert!(
        t.contains("STARTTLS")
            && t.contains("SIZE 1000")
            && t.contains("PIPELINING")
            && t.contains("ENHANCEDSTATUSCODES")
    );
    assert!(!t.contains("AUTH"), "no AUTH before TLS");
    let (mut tls, _) = Session::new(cfg(Role::Submission), true);
    let t = text(&tls.feed(b"EHLO c\r\n"));
    assert!(t.contains("AUTH PLAIN LOGIN") && !t.contains("STARTTLS"));
    let (mut incoming, _) = Session::new(cfg(Role::Incoming), true);
    assert!(!text(&incoming.feed(b"EHLO c\r\n")).contains("AUTH"));
}

#[test]
fn auth_before_tls_is_refused_and_starttls_resets() {
    let (mut s, _) = Session::new(cfg(Role::Submission), false);
    s.feed(b"EHLO c\r\n");
    assert_eq!(
        codes(&s.feed(b"AUTH PLAIN AGFAcGVjLnRlc3QAc2VjcmV0\r\n")),
        vec![538]
    );
    assert_eq!(codes(&s.feed(b"MAIL FROM:<a@pec.test>\r\n")), vec![530]);
    // Commands pipelined after STARTTLS are discarded (RFC 3207 §4.2).
    let ev = s.feed(b"STARTTLS\r\nMAIL FROM:<a@pec.test>\r\n");
    assert_eq!(codes(&ev), vec![220]);
    assert_eq!(ev.last(), Some(&Event::StartTls));
    s.tls_started();
    assert!(s.is_tls());
    assert_eq!(
        codes(&s.feed(b"MAIL FROM:<a@pec.test>\r\n")),
        vec![503],
        "EHLO required again"
    );
}

#[test]
fn auth_login_and_failures_close_the_session() {
    let (mut s, _) = Session::new(cfg(Role::Submission), true);
    s.feed(b"EHLO c\r\n");
    assert_eq!(text(&s.feed(b"AUTH LOGIN\r\n")), "334 VXNlcm5hbWU6\r\n");
    assert_eq!(
        text(&s.feed(b"YUBwZWMudGVzdA==\r\n")),
        "334 UGFzc3dvcmQ6\r\n"
    );
    assert_eq!(
        s.feed(b"d3Jvbmc=\r\n"),
        vec![Event::Authenticate {
            username: "a@pec.test".into(),
            password: "wrong".into()
        }]
    );
    assert_eq!(codes(&s.auth_result(None)), vec![535]);
    s.feed(b"AUTH PLAIN AGFAcGVjLnRlc3QAd3Jvbmc=\r\n");
    let ev = s.auth_result(None);
    assert_eq!(codes(&ev), vec![421]);
    assert_eq!(ev.last(), Some(&Event::Close));
    assert!(s.is_closed());
}

#[test]
fn sender_must_be_the_authenticated_mailbox() {
    let mut s = authed_session();
    let ev = s.feed(b"MAIL FROM:<boss@pec.test>\r\n");
    assert_eq!(codes(&ev), vec![553]);
    assert!(text(&ev).contains("not owned"));
    assert_eq!(codes(&s.feed(b"MAIL FROM:<A@PEC.TEST>\r\n")), vec![250]);
}

#[test]
fn limits_on_size_and_recipients() {
    let mut s = authed_session();
    assert_eq!(
        codes(&s.feed(b"MAIL FROM:<a@pec.test> SIZE=1001\r\n")),
        vec![552]
    );
    assert_eq!(
        codes(&s.feed(b"MAIL FROM:<a@pec.test> SIZE=10\r\n")),
        vec![250]
    );
    let ev = s.feed(
        b"RCPT TO:<b1@x.it>\r\nRCPT TO:<b2@x.it>\r\nRCPT TO:<b3@x.it>\r\nRCPT TO:<b4@x.it>\r\n",
    );
    assert_eq!(codes(&ev), vec![250, 250, 250, 452]);
    // Actual bytes over the limit: the rest is read and dropped, then 552.
    assert_eq!(codes(&s.feed(b"DATA\r\n")), vec![354]);
    let big = vec![b'a'; 700];
    let mut data = Vec::new();
    for _ in 0..3 {
        data.extend_from_slice(&big);
        data.extend_from_slice(b"\r\n");
    }
    assert!(s.feed(&data).is_empty());
    assert_eq!(codes(&s.feed(b".\r\nNOOP\r\n")), vec![552, 250]);
}

#[test]
fn a_message_waits_for_the_pipeline_decision() {
    let mut s = authed_session();
    let ev = s.feed(b"MAIL FROM:<a@pec.test>\r\nRCPT TO:<b@x.it>\r\nDATA\r\n");
    assert_eq!(codes(&ev), vec![250, 250, 354]);
    let ev = s.feed(b"Subject: hi\r\n\r\n..dot\r\n.\r\nNOOP\r\n");
    let Some(Event::Message(env)) = ev.last() else {
        panic!("{ev:?}")
    };
    assert_eq!(env.mail_from, "a@pec.test");
    assert_eq!(env.rcpt_to, vec!["b@x.it".to_string()]);
    assert_eq!(env.data, b"Subject: hi\r\n\r\n.dot\r\n");
    assert!(s.is_waiting());
    assert!(
        s.feed(b"").is_empty(),
        "the pipelined NOOP waits for the decision"
    );
    assert_eq!(
        codes(&s.message_result(250, "2.0.0", "OK queued")),
        vec![250, 250]
    );
}

#[test]
fn incoming_role_accepts_only_local_domains() {
    let (mut s, _) = Session::new(cfg(Role::Incoming), false);
    s.feed(b"EHLO other.provider\r\n");
    assert_eq!(codes(&s.feed(b"MAIL FROM:<x@other.it>\r\n")), vec![250]);
    assert_eq!(codes(&s.feed(b"RCPT TO:<b@elsewhere.it>\r\n")), vec![550]);
    assert_eq!(codes(&s.feed(b"RCPT TO:<b@PEC.test>\r\n")), vec![250]);
    assert_eq!(
        codes(&s.feed(b"AUTH PLAIN AGFAcGVjLnRlc3QAc2VjcmV0\r\n")),
        vec![502]
    );
}

#[test]
fn garbage_gets_errors_and_the_session_goes_on() {
    let (mut s, _) = Session::new(cfg(Role::Submission), true);
    let mut input = Vec::new();
    input
        .extend_from_slice(b"HELLO\r\n\x00\xff\xfe\r\nMAIL FROM:<bad\r\nRCPT TO:<x@y>\r\nDATA\r\n");
    input.extend_from_slice(&vec![b'x'; 10_000]);
    input.extend_from_slice(b"\r\nNOOP\r\n");
    let ev = s.feed(&input);
    let c = codes(&ev);
    assert!(c.iter().all(|&c| c >= 500 || c == 250), "{c:?}");
    assert_eq!(c.last(), Some(&250), "NOOP still answered: {c:?}");
    assert!(!s.is_closed());
}
