//! Table-driven tests of the SMTP session, without sockets: the dialogue (EHLO, AUTH,
//! MAIL/RCPT rules, refusals, line limits) here, DATA in [`data`].

mod data;

use super::session::{DialogueRefusal, Event, Role, Session, SessionConfig};

fn cfg(role: Role) -> SessionConfig {
    SessionConfig {
        hostname: "mail.pec.test".into(),
        role,
        max_message_bytes: 1000,
        max_recipients: 3,
        tls_available: true,
        local_domains: vec!["pec.test".into()],
        max_auth_failures: 2,
        max_line_length: 1000,
    }
}

/// The refusals reported in a batch of events.
fn refusals(events: &[Event]) -> Vec<DialogueRefusal> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Refused(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
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
    authed(cfg(Role::Submission))
}

fn authed(cfg: SessionConfig) -> Session {
    let (mut s, _) = Session::new(cfg, true);
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
fn auth_external_needs_a_client_certificate() {
    let (mut s, _) = Session::new(cfg(Role::Submission), true);
    let t = text(&s.feed(b"EHLO c\r\nAUTH EXTERNAL =\r\n"));
    assert!(t.contains("AUTH PLAIN LOGIN\r\n"), "{t}");
    assert!(t.contains("535 5.7.8 EXTERNAL needs"), "{t}");
    let (mut s, _) = Session::new(cfg(Role::Submission), true);
    s.offer_external();
    let t = text(&s.feed(b"EHLO c\r\n"));
    assert!(t.contains("AUTH PLAIN LOGIN EXTERNAL"), "{t}");
    // The authzid in the initial response, then without one after a 334.
    let ev = s.feed(b"AUTH EXTERNAL YUBwZWMudGVzdA==\r\n");
    assert!(
        ev.iter().any(
            |e| matches!(e, Event::AuthenticateExternal { authzid: Some(a) } if a == "a@pec.test")
        ),
        "{ev:?}"
    );
    let t = text(&s.auth_result(None));
    assert!(t.starts_with("535"), "{t}");
    let t = text(&s.feed(b"AUTH EXTERNAL\r\n"));
    assert_eq!(t, "334 \r\n");
    let ev = s.feed(b"=\r\n");
    assert!(
        ev.iter()
            .any(|e| matches!(e, Event::AuthenticateExternal { authzid: None })),
        "{ev:?}"
    );
    let t = text(&s.auth_result(Some("a@pec.test".into())));
    assert!(t.starts_with("235"), "{t}");
    assert_eq!(s.authenticated(), Some("a@pec.test"));
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
    let big = vec![b'a'; 400];
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

#[test]
fn an_over_long_command_line_is_refused_and_its_tail_never_parsed() {
    let mut s = authed_session();
    // One line of 1500 octets whose tail looks like a command: one 500, nothing else.
    let mut line = b"NOOP ".to_vec();
    line.extend(std::iter::repeat_n(b'x', 1200));
    line.extend_from_slice(b" MAIL FROM:<a@pec.test>\r\nNOOP\r\n");
    let ev = s.feed(&line);
    assert_eq!(codes(&ev), vec![500, 250], "{}", text(&ev));
    assert!(text(&ev).contains("500 5.5.2 Line too long"));
    // The same, arriving in pieces: the refusal comes as soon as the limit is passed and
    // everything up to the LF is dropped, however many reads it takes.
    let ev = s.feed(&[b'y'; 999]);
    assert!(ev.is_empty(), "999 octets without LF may still be a line");
    assert_eq!(codes(&s.feed(b"y")), vec![500]);
    assert!(s.feed(&[b'z'; 5000]).is_empty());
    assert!(s.feed(b" RCPT TO:<b@x.it>").is_empty());
    assert_eq!(codes(&s.feed(b"\r\nMAIL FROM:<a@pec.test>\r\n")), vec![250]);
    // Byte by byte: a short command still works, a long one is cut at the limit.
    s.feed(b"RSET\r\n");
    let mut got = Vec::new();
    for b in b"NOOP\r\n" {
        got.extend(codes(&s.feed(&[*b])));
    }
    assert_eq!(got, vec![250]);
    for i in 0..999 {
        assert!(s.feed(b"w").is_empty(), "octet {i}");
    }
    assert_eq!(codes(&s.feed(b"w")), vec![500]);
    assert_eq!(codes(&s.feed(b"w\r\nNOOP\r\n")), vec![250]);
    // A line of exactly the limit, CRLF included, is a line.
    let mut exact = b"NOOP ".to_vec();
    exact.extend(std::iter::repeat_n(b'x', 1000 - 7));
    exact.extend_from_slice(b"\r\n");
    assert_eq!(exact.len(), 1000);
    assert_eq!(codes(&s.feed(&exact)), vec![250]);
}

#[test]
fn auth_lines_may_be_longer_up_to_rfc_4954_limit() {
    let (mut s, _) = Session::new(cfg(Role::Submission), true);
    s.feed(b"EHLO c\r\n");
    // A 3000-octet AUTH PLAIN response (long password) is an AUTH line, not "too long".
    let pass = "p".repeat(2200);
    let token = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("\0a@pec.test\0{pass}"),
    );
    let ev = s.feed(format!("AUTH PLAIN {token}\r\n").as_bytes());
    assert!(
        matches!(ev.as_slice(), [Event::Authenticate { password, .. }] if *password == pass),
        "{ev:?}"
    );
    assert_eq!(codes(&s.auth_result(None)), vec![535]);
    // Past 12288 octets the exchange line is refused and dropped up to its LF.
    assert_eq!(text(&s.feed(b"AUTH PLAIN\r\n")), "334 \r\n");
    assert_eq!(codes(&s.feed(&[b'Q'; 13_000])), vec![500]);
    assert_eq!(codes(&s.feed(b"QQQ NOOP\r\nNOOP\r\n")), vec![250]);
}

#[test]
fn an_over_long_data_line_refuses_the_message_at_the_dot() {
    let mut s = authed(SessionConfig {
        max_message_bytes: 10_000,
        ..cfg(Role::Submission)
    });
    s.feed(b"MAIL FROM:<a@pec.test>\r\nRCPT TO:<b@x.it>\r\nDATA\r\n");
    // 998 octets + CRLF is the RFC 5321 minimum and passes (limit 1000 here).
    let mut ok = b"Subject: x\r\n\r\n".to_vec();
    ok.extend(std::iter::repeat_n(b'a', 998));
    ok.extend_from_slice(b"\r\n.\r\n");
    let ev = s.feed(&ok);
    assert!(matches!(ev.last(), Some(Event::Message(_))), "{ev:?}");
    assert_eq!(codes(&s.message_result(250, "2.0.0", "OK")), vec![250]);
    // One octet more, split across reads: refused at the final dot, nothing delivered.
    s.feed(b"MAIL FROM:<a@pec.test>\r\nRCPT TO:<b@x.it>\r\nDATA\r\n");
    assert!(s.feed(b"Subject: x\r\n\r\n").is_empty());
    assert!(s.feed(&[b'a'; 600]).is_empty());
    assert!(s.feed(&[b'a'; 400]).is_empty());
    let ev = s.feed(b"\r\nshort\r\n.\r\nNOOP\r\n");
    assert_eq!(codes(&ev), vec![554, 250], "{}", text(&ev));
    assert!(text(&ev).contains("longer than 1000 octets"));
    assert!(!ev.iter().any(|e| matches!(e, Event::Message(_))));
    let r = refusals(&ev);
    assert_eq!(r.len(), 1);
    assert_eq!((r[0].code, r[0].user.as_deref()), (554, Some("a@pec.test")));
}

#[test]
fn endless_oversized_data_is_cut_off_with_552_and_close() {
    let mut s = authed_session();
    s.feed(b"MAIL FROM:<a@pec.test>\r\nRCPT TO:<b@x.it>\r\nDATA\r\n");
    // The limit is 1000 octets; a refused transfer is read up to 2000 octets in all.
    let line = [&[b'a'; 98][..], b"\r\n"].concat();
    let mut closed = None;
    for i in 0..100 {
        let ev = s.feed(&line);
        if !ev.is_empty() {
            closed = Some((i, ev));
            break;
        }
    }
    let (i, ev) = closed.expect("the session must stop reading");
    assert_eq!(i, 20, "cut off after 2000 octets, not before");
    assert_eq!(codes(&ev), vec![552]);
    assert!(text(&ev).contains("closing"));
    assert_eq!(ev.last(), Some(&Event::Close));
    assert_eq!(refusals(&ev).len(), 1);
    assert!(s.is_closed());
    assert!(s.feed(b".\r\nNOOP\r\n").is_empty(), "nothing more is read");
}

#[test]
fn refusals_are_reported_with_user_and_sender() {
    let mut s = authed_session();
    let ev = s.feed(b"MAIL FROM:<boss@pec.test>\r\n");
    assert_eq!(
        refusals(&ev),
        vec![DialogueRefusal {
            code: 553,
            enhanced: "5.7.1",
            reason: "Sender address <boss@pec.test> is not owned by the authenticated user \
                     a@pec.test"
                .into(),
            user: Some("a@pec.test".into()),
            mail_from: Some("boss@pec.test".into()),
        }]
    );
    let r = refusals(&s.feed(b"MAIL FROM:<a@pec.test> SIZE=5000\r\n"));
    assert_eq!((r[0].code, r[0].enhanced), (552, "5.3.4"));
    s.feed(b"MAIL FROM:<a@pec.test>\r\nRCPT TO:<b1@x.it>\r\nRCPT TO:<b2@x.it>\r\nRCPT TO:<b3@x.it>\r\n");
    let r = refusals(&s.feed(b"RCPT TO:<b4@x.it>\r\n"));
    assert_eq!(
        (r[0].code, r[0].mail_from.as_deref()),
        (452, Some("a@pec.test"))
    );
    // Without AUTH: 530, no user, the claimed sender kept.
    let (mut anon, _) = Session::new(cfg(Role::Submission), true);
    anon.feed(b"EHLO c\r\n");
    let r = refusals(&anon.feed(b"MAIL FROM:<x@elsewhere.example>\r\n"));
    assert_eq!(
        (r[0].code, r[0].user.clone(), r[0].mail_from.as_deref()),
        (530, None, Some("x@elsewhere.example"))
    );
    // Accepted commands report nothing.
    assert!(refusals(&authed_session().feed(b"MAIL FROM:<a@pec.test>\r\n")).is_empty());
}

#[test]
fn a_refused_auth_attempt_counts_as_a_failure() {
    let (mut s, _) = Session::new(cfg(Role::Submission), true);
    s.feed(b"EHLO c\r\n");
    s.feed(b"AUTH PLAIN AGFAcGVjLnRlc3QAc2VjcmV0\r\nNOOP\r\n");
    let ev = s.auth_refused(454, "4.7.0", "Too many failed logins, try later");
    assert_eq!(codes(&ev), vec![454, 250], "pipelined NOOP runs after");
    assert!(s.authenticated().is_none());
    s.feed(b"AUTH PLAIN AGFAcGVjLnRlc3QAc2VjcmV0\r\n");
    let ev = s.auth_refused(454, "4.7.0", "Too many failed logins, try later");
    assert_eq!(codes(&ev), vec![421]);
    assert!(s.is_closed());
}

#[test]
fn dot_stuffing_applies_from_the_first_line() {
    let mut s = authed_session();
    s.feed(b"MAIL FROM:<a@pec.test>\r\nRCPT TO:<b@x.it>\r\nDATA\r\n");
    // An empty message ends at once; a first line starting with a dot is unstuffed.
    let ev = s.feed(b".\r\n");
    let Some(Event::Message(env)) = ev.last() else {
        panic!("the final dot of an empty message was not seen: {ev:?}")
    };
    assert!(env.data.is_empty());
    s.message_result(554, "5.6.0", "no headers");
    s.feed(b"MAIL FROM:<a@pec.test>\r\nRCPT TO:<b@x.it>\r\nDATA\r\n");
    let ev = s.feed(b"..x\r\n.\r\n");
    let Some(Event::Message(env)) = ev.last() else {
        panic!("{ev:?}")
    };
    assert_eq!(env.data, b".x\r\n");
}
