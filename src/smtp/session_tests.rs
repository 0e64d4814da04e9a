//! Table-driven tests of the SMTP session, without sockets.

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

/// A session in the role given, after EHLO (and AUTH for submission), inside DATA.
fn in_data(cfg: SessionConfig) -> Session {
    let role = cfg.role;
    let mut s = match role {
        Role::Submission => authed(cfg),
        Role::Incoming => {
            let (mut s, _) = Session::new(cfg, true);
            assert_eq!(codes(&s.feed(b"EHLO other.provider\r\n")), vec![250]);
            s
        }
    };
    let (from, to): (&[u8], &[u8]) = match role {
        Role::Submission => (b"a@pec.test", b"b@x.it"),
        Role::Incoming => (b"x@other.it", b"b@pec.test"),
    };
    let cmds = [
        &b"MAIL FROM:<"[..],
        from,
        b">\r\nRCPT TO:<",
        to,
        b">\r\nDATA\r\n",
    ]
    .concat();
    assert_eq!(codes(&s.feed(&cmds)), vec![250, 250, 354]);
    s
}

/// Message content of exactly `len` octets (CRLF lines of at most 100 octets, none
/// starting with a dot), ending with CRLF.
fn content_of_len(len: usize) -> Vec<u8> {
    let mut c = b"Subject: size\r\n\r\n".to_vec();
    while c.len() + 100 <= len {
        c.extend(std::iter::repeat_n(b'a', 98));
        c.extend_from_slice(b"\r\n");
    }
    let rest = len - c.len();
    assert!((2..100).contains(&rest));
    c.extend(std::iter::repeat_n(b'b', rest - 2));
    c.extend_from_slice(b"\r\n");
    assert_eq!(c.len(), len);
    c
}

#[test]
fn a_message_of_exactly_the_size_limit_is_accepted_however_the_reads_fall() {
    // The limit is 1000 octets of content (dot-unstuffed, final CRLF.CRLF excluded but
    // the CRLF before the dot included, as delivered in the envelope).
    let exact = [content_of_len(1000), b".\r\nNOOP\r\n".to_vec()].concat();
    let over = [content_of_len(1001), b".\r\nNOOP\r\n".to_vec()].concat();
    let end = exact.len() - b"NOOP\r\n".len();
    // Every split point within the last 8 octets of the message, the final dot included
    // (a read ending just after the final dot's CR is the case that used to fail).
    for cut in end - 8..=end {
        let mut s = in_data(cfg(Role::Submission));
        let mut ev = s.feed(&exact[..cut]);
        ev.extend(s.feed(&exact[cut..]));
        let Some(Event::Message(env)) = ev.last() else {
            panic!("cut at {cut}: {}", text(&ev))
        };
        assert_eq!(env.data.len(), 1000, "cut at {cut}");
        assert_eq!(env.data, exact[..1000], "cut at {cut}");
        assert_eq!(
            codes(&s.message_result(250, "2.0.0", "OK")),
            vec![250, 250],
            "cut at {cut}: the pipelined NOOP follows"
        );

        let mut s = in_data(cfg(Role::Submission));
        let over_cut = cut + 1;
        let mut ev = s.feed(&over[..over_cut]);
        ev.extend(s.feed(&over[over_cut..]));
        assert_eq!(
            codes(&ev),
            vec![552, 250],
            "cut at {over_cut}: {}",
            text(&ev)
        );
        assert!(!ev.iter().any(|e| matches!(e, Event::Message(_))));
    }
    // The tail one octet per read, for both.
    for (input, limit_ok) in [(&exact, true), (&over, false)] {
        let mut s = in_data(cfg(Role::Submission));
        let start = input.len() - 12;
        let mut ev = s.feed(&input[..start]);
        for b in &input[start..] {
            ev.extend(s.feed(&[*b]));
        }
        if limit_ok {
            let Some(Event::Message(env)) = ev.last() else {
                panic!("{}", text(&ev))
            };
            assert_eq!(env.data.len(), 1000);
        } else {
            assert_eq!(codes(&ev), vec![552, 250], "{}", text(&ev));
        }
    }
}

#[test]
fn a_thousand_pipelined_commands_in_one_read_are_all_answered_in_order() {
    let mut s = authed_session();
    let mut input = Vec::new();
    for _ in 0..250 {
        input.extend_from_slice(b"MAIL FROM:<a@pec.test>\r\nRCPT TO:<b@x.it>\r\nRSET\r\nNOOP\r\n");
    }
    // A transaction in the same read: processing stops at the message until the decision,
    // and what follows it (a command and half of the next) stays buffered.
    input.extend_from_slice(b"MAIL FROM:<a@pec.test>\r\nRCPT TO:<b@x.it>\r\nDATA\r\n");
    input.extend_from_slice(b"Subject: p\r\n\r\nbody\r\n.\r\nRSET\r\nNO");
    let ev = s.feed(&input);
    let c = codes(&ev);
    assert_eq!(c.len(), 1003, "{:?}", &c[c.len().saturating_sub(5)..]);
    for (i, chunk) in c[..1000].chunks(4).enumerate() {
        assert_eq!(chunk, [250, 250, 250, 250], "round {i}");
    }
    assert_eq!(c[1000..], [250, 250, 354]);
    let Some(Event::Message(env)) = ev.last() else {
        panic!("{ev:?}")
    };
    assert_eq!(env.data, b"Subject: p\r\n\r\nbody\r\n");
    let ev = s.message_result(250, "2.0.0", "OK");
    assert_eq!(
        codes(&ev),
        vec![250, 250],
        "the decision, then the buffered RSET"
    );
    assert!(text(&ev).contains("Reset"));
    // The half command waited in the buffer and completes with the next read.
    assert_eq!(codes(&s.feed(b"OP\r\n")), vec![250]);
    // A line arriving in many small reads is still one command.
    for b in b"MAIL FROM:<a@pec.test" {
        assert!(s.feed(&[*b]).is_empty());
    }
    assert_eq!(codes(&s.feed(b">\r\n")), vec![250]);
}

/// One DATA line of 5000 octets (CRLF included), in a message well within the size limit.
fn long_line_message() -> Vec<u8> {
    long_line_message_of(4998)
}

/// A message with one line of `n` octets (plus CRLF), then the final dot and a NOOP.
fn long_line_message_of(n: usize) -> Vec<u8> {
    let mut m = b"Subject: long\r\n\r\n".to_vec();
    m.extend(std::iter::repeat_n(b'a', n));
    m.extend_from_slice(b"\r\nend\r\n.\r\nNOOP\r\n");
    m
}

#[test]
fn the_data_line_limit_applies_to_submission_only() {
    let big = |role| SessionConfig {
        max_message_bytes: 20_000,
        max_line_length: 4096,
        ..cfg(role)
    };
    // Submission (465/587): our users' mail leaves for other providers, so it must keep
    // to RFC 5321 §4.5.3.1.6's 1000 octets whatever the command-line limit: 998 + CRLF
    // passes, 999 + CRLF does not.
    let mut s = in_data(big(Role::Submission));
    let ev = s.feed(&long_line_message());
    assert_eq!(codes(&ev), vec![554, 250], "{}", text(&ev));
    assert!(
        text(&ev).contains("longer than 1000 octets"),
        "{}",
        text(&ev)
    );
    assert!(!ev.iter().any(|e| matches!(e, Event::Message(_))));
    let mut s = in_data(big(Role::Submission));
    let ev = s.feed(&long_line_message_of(999));
    assert_eq!(codes(&ev), vec![554, 250], "{}", text(&ev));
    let mut s = in_data(big(Role::Submission));
    let ev = s.feed(&long_line_message_of(998));
    assert!(
        matches!(ev.last(), Some(Event::Message(_))),
        "{}",
        text(&ev)
    );
    // Incoming (25): other providers and Internet mail with long lines are accepted,
    // whole, in one read or in many.
    let msg = long_line_message();
    let body_end = msg.len() - b".\r\nNOOP\r\n".len();
    for step in [msg.len(), 1000, 7] {
        let mut s = in_data(big(Role::Incoming));
        let mut ev = Vec::new();
        for chunk in msg.chunks(step) {
            ev.extend(s.feed(chunk));
        }
        let Some(Event::Message(env)) = ev.last() else {
            panic!("reads of {step}: {}", text(&ev))
        };
        assert_eq!(env.data, msg[..body_end], "reads of {step}");
        assert!(refusals(&ev).is_empty());
        assert_eq!(codes(&s.message_result(250, "2.0.0", "OK")), vec![250, 250]);
    }
    // The size limit still holds on port 25, long lines or not.
    let mut s = in_data(SessionConfig {
        max_message_bytes: 4000,
        ..cfg(Role::Incoming)
    });
    assert_eq!(codes(&s.feed(&long_line_message())), vec![552, 250]);
    // Command lines keep the limit on both roles.
    for role in [Role::Submission, Role::Incoming] {
        let (mut s, _) = Session::new(cfg(role), true);
        let mut line = b"EHLO ".to_vec();
        line.extend(std::iter::repeat_n(b'h', 1200));
        line.extend_from_slice(b"\r\nNOOP\r\n");
        assert_eq!(codes(&s.feed(&line)), vec![500, 250], "{role:?}");
    }
}

/// Streamed DATA (issue #13): the content leaves the session in chunks while it arrives;
/// chunks plus the message event's rest are exactly the dot-unstuffed content, however the
/// input is cut (also inside the final `CRLF.CRLF` and after a stuffed dot), and the
/// session never holds much more than one chunk.
#[test]
fn streamed_data_is_the_content_in_chunks() {
    let mut content = Vec::new();
    for i in 0..300 {
        content.extend_from_slice(format!("line {i} of the message\r\n").as_bytes());
        if i % 7 == 0 {
            content.extend_from_slice(b".stuffed\r\n\r\n");
        }
    }
    let mut wire = Vec::new();
    for line in content.split_inclusive(|&b| b == b'\n') {
        if line.first() == Some(&b'.') {
            wire.push(b'.');
        }
        wire.extend_from_slice(line);
    }
    wire.extend_from_slice(b".\r\nNOOP\r\n");
    let big = SessionConfig {
        max_message_bytes: 20_000,
        ..cfg(Role::Incoming)
    };
    for step in [1, 2, 3, 64, 1000, wire.len()] {
        let mut s = in_data(big.clone());
        s.stream_data(100);
        let (mut got, mut chunks, mut ev) = (Vec::new(), 0, Vec::new());
        for piece in wire.chunks(step) {
            for e in s.feed(piece) {
                match e {
                    Event::DataChunk(c) => {
                        assert!(c.len() < 100 + step.max(1) + 1, "chunk of {}", c.len());
                        got.extend_from_slice(&c);
                        chunks += 1;
                    }
                    Event::Message(env) => {
                        assert!(env.data.len() <= 100 + step, "rest of {}", env.data.len());
                        got.extend_from_slice(&env.data);
                        ev.push(Event::Message(env));
                    }
                    other => ev.push(other),
                }
            }
        }
        assert!(
            matches!(ev.last(), Some(Event::Message(_))),
            "reads of {step}"
        );
        assert_eq!(got, content, "reads of {step}");
        if step <= 64 {
            assert!(chunks >= 5, "reads of {step}: {chunks} chunks");
        }
        assert_eq!(codes(&s.message_result(250, "2.0.0", "OK")), vec![250, 250]);
    }
}

/// Too big while streaming: the chunks already handed out are dropped (`DataDiscarded`),
/// the final dot gets 552; a driver that cannot keep a chunk makes the dot get 452 4.3.1,
/// and the next transaction works.
#[test]
fn streamed_data_refusals() {
    let body: Vec<u8> = b"0123456789abcdef\r\n".repeat(100);
    let mut s = in_data(cfg(Role::Incoming));
    s.stream_data(100);
    let mut ev = Vec::new();
    for piece in body.chunks(150) {
        ev.extend(s.feed(piece));
    }
    ev.extend(s.feed(b".\r\n"));
    assert!(ev.iter().any(|e| matches!(e, Event::DataChunk(_))));
    assert!(ev.iter().any(|e| matches!(e, Event::DataDiscarded)));
    assert_eq!(codes(&ev), vec![552]);

    let mut s = in_data(cfg(Role::Incoming));
    s.stream_data(100);
    let ev = s.feed(&body[..180]);
    assert!(matches!(ev.last(), Some(Event::DataChunk(_))));
    assert!(s.abort_data());
    let mut ev = s.feed(&body[180..360]);
    ev.extend(s.feed(b".\r\nMAIL FROM:<x@other.it>\r\n"));
    assert!(
        !ev.iter()
            .any(|e| matches!(e, Event::DataChunk(_) | Event::Message(_)))
    );
    assert_eq!(codes(&ev), vec![452, 250]);
    assert!(text(&ev).starts_with("452 4.3.1 "), "{}", text(&ev));
    assert!(!s.abort_data(), "no transfer under way");
}

/// Every end-of-data variant of the 2023 SMTP-smuggling reports, on both ports, whatever
/// the reads: only `<CRLF>.<CRLF>` ends the DATA; bare LF variants are content; any bare
/// CR refuses the message with 554 and closes, so the commands smuggled after it are never
/// read (and nothing is handed to the pipeline).
#[test]
fn only_crlf_dot_crlf_ends_data_and_a_bare_cr_closes() {
    let smuggled: &[u8] = b"MAIL FROM:<ceo@pec.test>\r\nRCPT TO:<b@pec.test>\r\nDATA\r\n\
        From: ceo@pec.test\r\n\r\nforged\r\n";
    let content = |end: &[u8]| [&b"Subject: s\r\n\r\nbody"[..], end, smuggled].concat();
    // Bare LF: content (the dot stays, or is unstuffed when a CRLF precedes it).
    let as_content: [(&[u8], &[u8]); 3] = [
        (b"\n.\n", b"\n.\n"),
        (b"\n.\r\n", b"\n.\r\n"),
        (b"\r\n.\n", b"\r\n\n"),
    ];
    let bare_cr: [&[u8]; 5] = [
        b"\r.\r",
        b"\r.\r\n",
        b"\r\n.\r\r\n",
        b"\r\n.\r",
        b"\r\r\n.\r\n",
    ];
    for role in [Role::Submission, Role::Incoming] {
        let big = SessionConfig {
            max_message_bytes: 20_000,
            ..cfg(role)
        };
        for (step, chunk) in [1, 2, 3, 7, 1000]
            .into_iter()
            .flat_map(|s| [(s, None), (s, Some(5))])
        {
            for (end, kept) in as_content {
                let mut s = in_data(big.clone());
                if let Some(n) = chunk {
                    s.stream_data(n);
                }
                let wire = [&content(end)[..], b".\r\nNOOP\r\n"].concat();
                let ev: Vec<Event> = wire.chunks(step).flat_map(|p| s.feed(p)).collect();
                let mut got = Vec::new();
                let mut msgs = Vec::new();
                for e in &ev {
                    match e {
                        Event::DataChunk(c) => got.extend_from_slice(c),
                        Event::Message(env) => {
                            got.extend_from_slice(&env.data);
                            msgs.push(std::mem::take(&mut got));
                        }
                        _ => {}
                    }
                }
                let want = [&b"Subject: s\r\n\r\nbody"[..], kept, smuggled].concat();
                assert_eq!(msgs, vec![want], "{role:?} {end:?} reads of {step}");
                assert!(!ev.contains(&Event::Close), "{role:?} {end:?}");
                assert!(codes(&ev).is_empty(), "{role:?} {end:?}: {}", text(&ev));
            }
            for end in bare_cr {
                let mut s = in_data(big.clone());
                if let Some(n) = chunk {
                    s.stream_data(n);
                }
                let wire = [&content(end)[..], b".\r\nNOOP\r\n"].concat();
                let ev: Vec<Event> = wire.chunks(step).flat_map(|p| s.feed(p)).collect();
                assert!(
                    !ev.iter().any(|e| matches!(e, Event::Message(_))),
                    "{role:?} {end:?} reads of {step}: a message was handed on"
                );
                assert_eq!(codes(&ev), vec![554], "{role:?} {end:?}: {}", text(&ev));
                assert!(text(&ev).contains("bare CR"), "{}", text(&ev));
                assert_eq!(ev.last(), Some(&Event::Close), "{role:?} {end:?}");
                assert_eq!(refusals(&ev).len(), 1);
                assert!(s.feed(b"NOOP\r\n").is_empty(), "the session is closed");
            }
        }
    }
}
