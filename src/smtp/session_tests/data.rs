//! The DATA phase without sockets: size limits however the reads fall, pipelining, line
//! limits, streamed content and its refusals, and the end-of-data rules (SMTP smuggling).

use super::*;

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
