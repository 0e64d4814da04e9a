//! Table tests of the sans-IO session with a real store in a temporary directory (no
//! sockets), and the replay of the `C:`/`S:` transcripts under `tests/transcripts/`.

use std::path::Path;

use super::Limits;
use super::session::{Action, Session};
use crate::pec::address::PecAddress;
use crate::store::mailbox::Password;
use crate::store::{NewMailbox, Store, StoreOptions};

pub(crate) fn store_with(users: &[&str]) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(
        dir.path(),
        StoreOptions {
            default_quota_bytes: 1 << 20,
            ..StoreOptions::default()
        },
    )
    .expect("store");
    for u in users {
        let address = PecAddress::parse(u).expect("address");
        store
            .add_mailbox(NewMailbox {
                address,
                password: Password::new("pw"),
                quota_bytes: None,
                options: Default::default(),
                provisional: false,
            })
            .expect("mailbox");
    }
    (dir, store)
}

/// Drives a session the way the server does; credentials are right when the password is "pw".
pub(crate) fn drive(s: &mut Session, store: &Store, input: &[u8]) -> Vec<u8> {
    s.feed(input);
    let mut out = Vec::new();
    loop {
        let a = s.next();
        out.extend(s.take_output());
        match a {
            Action::Authenticate { user, pass } => s.auth_result((pass == "pw").then_some(user)),
            // A card that opens a@pec.test only.
            Action::AuthenticateExternal { authzid } => s.auth_result(
                Some(authzid.unwrap_or_else(|| "a@pec.test".into())).filter(|a| a == "a@pec.test"),
            ),
            Action::Execute => s.execute(store),
            Action::Idle => {
                s.idle_refresh(store);
                out.extend(s.take_output());
                return out;
            }
            Action::Close | Action::NeedInput => return out,
        }
    }
}

fn text(b: Vec<u8>) -> String {
    String::from_utf8_lossy(&b).into_owned()
}

#[test]
fn greeting_login_and_bad_commands() {
    let (_d, store) = store_with(&["a@pec.test"]);
    let mut s = Session::new(Limits::default(), true);
    let g = text(drive(&mut s, &store, b""));
    assert!(g.starts_with("* OK [CAPABILITY IMAP4rev1"), "{g}");
    let r = text(drive(&mut s, &store, b"1 SELECT INBOX\r\n"));
    assert!(r.contains("1 BAD Log in first"), "{r}");
    let r = text(drive(
        &mut s,
        &store,
        b"2 FOO\r\n3 LOGIN a@pec.test wrong\r\n",
    ));
    assert!(
        r.contains("2 BAD") && r.contains("3 NO [AUTHENTICATIONFAILED]"),
        "{r}"
    );
    let r = text(drive(
        &mut s,
        &store,
        b"\r\n)(*&\r\n4 LOGIN a@pec.test pw\r\n",
    ));
    assert!(r.contains("4 OK [CAPABILITY"), "{r}");
    let r = text(drive(
        &mut s,
        &store,
        b"5 FETCH 1 FLAGS\r\n6 SELECT \"../b@pec.test/INBOX\"\r\n",
    ));
    assert!(
        r.contains("5 BAD No mailbox selected") && r.contains("6 NO [CANNOT]"),
        "{r}"
    );
}

#[test]
fn plain_text_login_refused() {
    let (_d, store) = store_with(&["a@pec.test"]);
    let mut s = Session::new(Limits::default(), false);
    let r = text(drive(
        &mut s,
        &store,
        b"1 LOGIN a@pec.test pw\r\n2 AUTHENTICATE PLAIN AGFAcGVjLnRlc3QAcHc=\r\n",
    ));
    assert!(
        r.contains("1 NO [PRIVACYREQUIRED]") && r.contains("2 NO [PRIVACYREQUIRED]"),
        "{r}"
    );
}

#[test]
fn limits_answer_and_continue() {
    let (_d, store) = store_with(&["a@pec.test"]);
    let limits = Limits {
        max_command_bytes: 200,
        max_literal_bytes: 1000,
        ..Limits::default()
    };
    let mut s = Session::new(limits, true);
    drive(&mut s, &store, b"1 LOGIN a@pec.test pw\r\n");
    let r = text(drive(&mut s, &store, b"2 APPEND INBOX {5000}\r\n"));
    assert!(r.contains("2 NO [TOOBIG]"), "{r}");
    let r = text(drive(&mut s, &store, b"3 LOGIN {300}\r\n"));
    assert!(r.contains("3 NO [TOOBIG]"), "{r}");
    let r = text(drive(&mut s, &store, b"4 NOOP\r\n"));
    assert!(r.contains("4 OK"), "{r}");
    let long = format!("5 NOOP {}\r\n", "x".repeat(400));
    let r = text(drive(&mut s, &store, long.as_bytes()));
    assert!(r.contains("5 BAD Command too long"), "{r}");
    let r = text(drive(&mut s, &store, "x".repeat(400).as_bytes()));
    assert!(r.contains("* BYE"), "{r}");
}

#[test]
fn auth_plain_with_continuation() {
    let (_d, store) = store_with(&["a@pec.test"]);
    let mut s = Session::new(Limits::default(), true);
    let r = text(drive(&mut s, &store, b"1 AUTHENTICATE PLAIN\r\n"));
    assert!(r.ends_with("+ \r\n"), "{r}");
    // "\0a@pec.test\0pw"
    let r = text(drive(&mut s, &store, b"AGFAcGVjLnRlc3QAcHc=\r\n"));
    assert!(r.contains("1 OK"), "{r}");
}

#[test]
fn auth_external_only_with_a_client_certificate() {
    let (_d, store) = store_with(&["a@pec.test", "b@pec.test"]);
    // No certificate in the handshake: not offered, and refused with the reason.
    let mut s = Session::new(Limits::default(), true);
    let r = text(drive(
        &mut s,
        &store,
        b"1 CAPABILITY\r\n2 AUTHENTICATE EXTERNAL =\r\n",
    ));
    assert!(!r.contains("AUTH=EXTERNAL"), "{r}");
    assert!(
        r.contains("2 NO [AUTHENTICATIONFAILED] EXTERNAL needs"),
        "{r}"
    );
    // With one: offered in the greeting and CAPABILITY.
    let mut s = Session::new(Limits::default(), true);
    s.offer_external();
    let r = text(drive(&mut s, &store, b"1 CAPABILITY\r\n"));
    assert!(
        r.starts_with("* OK [CAPABILITY ") && r.contains("AUTH=PLAIN AUTH=EXTERNAL]"),
        "{r}"
    );
    assert!(
        r.contains("* CAPABILITY ") && r.matches("AUTH=EXTERNAL").count() == 2,
        "{r}"
    );
    // A mailbox the card does not open (authzid "b@pec.test"), then the empty one (SASL-IR).
    let r = text(drive(
        &mut s,
        &store,
        b"2 AUTHENTICATE EXTERNAL Yl9AcGVjLnRlc3Q=\r\n",
    ));
    assert!(r.contains("2 NO [AUTHENTICATIONFAILED]"), "{r}");
    let r = text(drive(&mut s, &store, b"3 AUTHENTICATE EXTERNAL =\r\n"));
    assert!(r.contains("3 OK"), "{r}");
    // Without SASL-IR: a continuation, then the authzid.
    let mut s = Session::new(Limits::default(), true);
    s.offer_external();
    let r = text(drive(&mut s, &store, b"1 AUTHENTICATE EXTERNAL\r\n"));
    assert!(r.ends_with("+ \r\n"), "{r}");
    let r = text(drive(&mut s, &store, b"YUBwZWMudGVzdA==\r\n"));
    assert!(r.contains("1 OK"), "{r}");
}

/// Replays every `tests/transcripts/imap_*.txt`: `C:` lines are sent, `S:` lines must
/// appear in order in the answers (`S:` lines may end in `*` to match a prefix).
#[test]
fn transcripts() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/transcripts");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("transcripts dir") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !name.starts_with("imap_") {
            continue;
        }
        n += 1;
        let (_d, store) = store_with(&["a@pec.test", "b@pec.test"]);
        let mut s = Session::new(Limits::default(), true);
        replay(
            &name,
            &std::fs::read_to_string(&path).expect("read"),
            |input| drive(&mut s, &store, input),
        );
    }
    assert!(n >= 3, "expected IMAP transcripts in {}", dir.display());
}

/// Shared by the IMAP and POP3 transcript tests.
pub(crate) fn replay(name: &str, script: &str, mut send: impl FnMut(&[u8]) -> Vec<u8>) {
    let mut got = text(send(b""));
    let mut pos = 0usize;
    for (ln, line) in script.lines().enumerate() {
        if let Some(c) = line.strip_prefix("C: ") {
            got.push_str(&text(send(format!("{c}\r\n").as_bytes())));
        } else if let Some(expect) = line.strip_prefix("S: ") {
            let (pattern, prefix) = match expect.strip_suffix('*') {
                Some(p) => (p.to_string(), true),
                None => (format!("{expect}\r\n"), false),
            };
            let rest = &got[pos..];
            let found = rest.split_inclusive("\r\n").scan(0usize, |off, l| {
                let at = *off;
                *off += l.len();
                Some((at, l))
            });
            let hit = found.into_iter().find(|(_, l)| glob(&pattern, l, prefix));
            match hit {
                Some((at, l)) => pos += at + l.len(),
                None => panic!(
                    "{name}:{}: expected {expect:?}, got after position {pos}:\n{rest}",
                    ln + 1
                ),
            }
        }
    }
}

/// `<*>` in an expected line matches any text; `prefix`: the line may go on.
fn glob(pattern: &str, line: &str, prefix: bool) -> bool {
    let parts: Vec<&str> = pattern.split("<*>").collect();
    let mut rest = line;
    for (i, p) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(p) else {
                return false;
            };
            rest = r;
        } else if i == parts.len() - 1 && !prefix {
            return rest.ends_with(p) && rest.len() >= p.len();
        } else {
            let Some(at) = rest.find(p) else { return false };
            rest = &rest[at + p.len()..];
        }
    }
    prefix || rest.is_empty()
}

fn deliver(store: &Store, to: &str, msg: &[u8]) {
    let blob = store.blobs().put(msg).expect("blob");
    let addr = PecAddress::parse(to).expect("address");
    store
        .commit(
            crate::store::Batch::new().deliver(crate::store::Delivery::inbox(
                addr,
                blob,
                jiff::Timestamp::now(),
            )),
        )
        .expect("deliver");
}

fn big_message(i: usize, body_bytes: usize) -> Vec<u8> {
    let mut m =
        format!("Subject: messaggio {i}\r\nMessage-ID: <m{i}@pec.test>\r\n\r\n").into_bytes();
    let line = format!("riga del messaggio {i} .......................................\r\n");
    while m.len() < body_bytes {
        m.extend_from_slice(line.as_bytes());
    }
    m
}

/// `FETCH 1:* BODY[]` is answered in steps, each written before the next is built: no
/// step holds more than one chunk or one message, and the bytes are the whole answer.
#[test]
fn fetch_is_streamed_message_by_message() {
    use super::fetch::FETCH_CHUNK_BYTES;
    let (_d, store) = store_with(&["a@pec.test"]);
    let msgs: Vec<Vec<u8>> = (1..=5).map(|i| big_message(i, 100_000 + i * 7)).collect();
    for m in &msgs {
        deliver(&store, "a@pec.test", m);
    }
    // Plus small ones, which share a step.
    let small: Vec<Vec<u8>> = (6..=40).map(|i| big_message(i, 300)).collect();
    for m in &small {
        deliver(&store, "a@pec.test", m);
    }
    let mut s = Session::new(Limits::default(), true);
    drive(
        &mut s,
        &store,
        b"1 LOGIN a@pec.test pw\r\n2 SELECT INBOX\r\n",
    );
    s.feed(b"3 FETCH 1:* BODY[]\r\n4 NOOP\r\n");
    let mut steps = Vec::new();
    let mut all = Vec::new();
    loop {
        let a = s.next();
        let out = s.take_output();
        steps.push(out.len());
        all.extend(out);
        match a {
            Action::Execute => s.execute(&store),
            Action::NeedInput => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    // The answer, as written before streaming: one FETCH per message, \Seen reported.
    let mut want = Vec::new();
    for (i, m) in msgs.iter().chain(&small).enumerate() {
        want.extend(
            format!(
                "* {} FETCH (FLAGS (\\Seen) BODY[] {{{}}}\r\n",
                i + 1,
                m.len()
            )
            .into_bytes(),
        );
        want.extend_from_slice(m);
        want.extend_from_slice(b")\r\n");
    }
    want.extend_from_slice(b"3 OK FETCH completed\r\n4 OK Completed\r\n");
    assert!(all == want, "FETCH answer differs:\n{}", text(all));
    let largest = msgs.iter().map(Vec::len).max().unwrap_or(0) + 100;
    assert!(
        steps.iter().all(|&n| n <= FETCH_CHUNK_BYTES + largest),
        "a step buffered too much: {steps:?}"
    );
    // Each big message went out on its own; the small ones were grouped.
    assert!(
        steps.iter().filter(|&&n| n > 100_000).count() >= 5,
        "{steps:?}"
    );
    assert!(steps.len() < 5 + small.len(), "{steps:?}");
    // The \Seen flags were committed at the end.
    let a = PecAddress::parse("a@pec.test").expect("address");
    let stored = store.messages(&a, "INBOX").expect("messages");
    assert!(stored.iter().all(|m| m.flags.iter().any(|f| f == "\\Seen")));
}

#[test]
fn list_pattern_is_capped() {
    let (_d, store) = store_with(&["a@pec.test"]);
    let mut s = Session::new(Limits::default(), true);
    drive(&mut s, &store, b"1 LOGIN a@pec.test pw\r\n");
    let long = "%*".repeat(super::names::MAX_PATTERN_BYTES / 2 + 1);
    let r = text(drive(
        &mut s,
        &store,
        format!("2 LIST \"\" \"{long}\"\r\n3 LSUB \"{long}\" \"%\"\r\n4 LIST \"\" \"*\"\r\n")
            .as_bytes(),
    ));
    assert!(
        r.contains("2 NO [LIMIT] LIST reference and pattern longer than 510 bytes"),
        "{r}"
    );
    assert!(r.contains("3 NO [LIMIT] LSUB"), "{r}");
    assert!(
        r.contains("* LIST (\\HasNoChildren) \"/\" INBOX")
            || r.contains("* LIST (\\HasNoChildren) \"/\" \"INBOX\""),
        "{r}"
    );
    assert!(r.contains("4 OK LIST completed"), "{r}");
}

/// APPEND stores the message and, in the same commit, a `MessageStored` trace record
/// with the SHA-256 of the bytes.
#[test]
fn append_is_traced() {
    let (_d, store) = store_with(&["a@pec.test"]);
    let mut s = Session::new(Limits::default(), true);
    drive(&mut s, &store, b"1 LOGIN a@pec.test pw\r\n");
    let msg = b"Message-ID: <bozza-1@client.test>\r\nSubject: bozza\r\n\r\ntesto\r\n";
    let cmd = format!("2 APPEND Drafts (\\Draft) {{{}+}}\r\n", msg.len());
    let mut input = cmd.into_bytes();
    input.extend_from_slice(msg);
    input.extend_from_slice(b"\r\n");
    let r = text(drive(&mut s, &store, &input));
    assert!(r.contains("2 OK [APPENDUID"), "{r}");
    let recs = store
        .trace()
        .query(&crate::trace::log::TraceQuery {
            mailbox: Some("a@pec.test".into()),
            ..Default::default()
        })
        .expect("trace query");
    let stored: Vec<_> = recs
        .iter()
        .filter(|r| r.kind == crate::trace::EventKind::MessageStored)
        .collect();
    assert_eq!(stored.len(), 1, "{recs:?}");
    assert_eq!(
        stored[0].sha256.as_deref(),
        Some(crate::trace::sha256_hex(msg).as_str())
    );
    assert_eq!(stored[0].msgid.as_deref(), Some("bozza-1@client.test"));
    assert_eq!(stored[0].subject.as_deref(), Some("bozza"));
    assert!(
        stored[0]
            .detail
            .as_deref()
            .is_some_and(|d| d.contains("Drafts"))
    );
    // A refused APPEND leaves no record.
    let r = text(drive(&mut s, &store, b"3 APPEND Nope {1+}\r\nx\r\n"));
    assert!(r.contains("3 NO [TRYCREATE]"), "{r}");
    let n = store
        .trace()
        .query(&crate::trace::log::TraceQuery::default())
        .expect("trace query")
        .iter()
        .filter(|r| r.kind == crate::trace::EventKind::MessageStored)
        .count();
    assert_eq!(n, 1);
}

/// Sequence-set keys in SEARCH are resolved once per command (they were resolved once per
/// message: quadratic); the results are unchanged.
#[test]
fn search_sequence_sets() {
    let (_d, store) = store_with(&["a@pec.test"]);
    for i in 1..=6 {
        deliver(&store, "a@pec.test", &big_message(i, 10));
    }
    let mut s = Session::new(Limits::default(), true);
    drive(
        &mut s,
        &store,
        b"1 LOGIN a@pec.test pw\r\n2 SELECT INBOX\r\n",
    );
    let r = text(drive(
        &mut s,
        &store,
        b"3 SEARCH 2:* NOT 4 OR 1 6\r\n4 UID SEARCH UID 2:3,5:*\r\n5 SEARCH 1:3 UID 3:*\r\n6 SEARCH 9\r\n",
    ));
    assert!(r.contains("* SEARCH 6\r\n3 OK"), "{r}");
    assert!(r.contains("* SEARCH 2 3 5 6\r\n4 OK"), "{r}");
    assert!(r.contains("* SEARCH 3\r\n5 OK"), "{r}");
    assert!(r.contains("* SEARCH\r\n6 OK"), "{r}");
}

/// The store publishes each durable change to a mailbox once, with its folder; a failed
/// commit publishes nothing. IDLE relies on this instead of polling.
#[test]
fn store_publishes_committed_mailbox_changes() {
    use crate::store::{Batch, MailboxChange};
    let (_d, store) = store_with(&["a@pec.test", "b@pec.test"]);
    let mut rx = store.subscribe_changes();
    deliver(&store, "a@pec.test", b"Subject: x\r\n\r\ny\r\n");
    // The delivery's copy in the security archive is a change of that folder too.
    let mut two = [
        rx.try_recv().expect("a change"),
        rx.try_recv().expect("two"),
    ];
    two.sort_by_key(|c| c.folder != Some("INBOX".into()));
    let [c, archived] = two;
    assert_eq!(
        archived.folder.as_deref(),
        Some(crate::store::archive::RECEIVED)
    );
    assert_eq!(
        c,
        MailboxChange {
            mailbox: "a@pec.test".into(),
            folder: Some("INBOX".into())
        }
    );
    assert!(c.concerns("a@pec.test", "INBOX") && !c.concerns("b@pec.test", "INBOX"));
    assert!(!c.concerns("a@pec.test", "Sent"));
    assert!(rx.try_recv().is_err(), "one change per (mailbox, folder)");
    let a = PecAddress::parse("a@pec.test").expect("address");
    store
        .commit(Batch::new().set_flags(a.clone(), "INBOX", 1, vec!["\\Seen".into()]))
        .expect("flags");
    assert_eq!(
        rx.try_recv().ok().and_then(|c| c.folder),
        Some("INBOX".to_string())
    );
    // Over quota (1 MiB): refused, so nothing to tell.
    let blob = store.blobs().put(&vec![b'x'; 2 << 20]).expect("blob");
    let refused = store.commit(Batch::new().deliver(crate::store::Delivery::inbox(
        a,
        blob,
        jiff::Timestamp::now(),
    )));
    assert!(refused.is_err());
    assert!(rx.try_recv().is_err(), "a failed commit published a change");
}

/// The `(attributes, name)` of each `* LSUB` (or `* LIST`) line, in order.
fn listed(r: &str, verb: &str) -> Vec<(String, String)> {
    let head = format!("* {verb} (");
    r.lines()
        .filter_map(|l| l.strip_prefix(&head))
        .filter_map(|l| {
            let (attrs, rest) = l.split_once(") \"/\" ")?;
            Some((attrs.to_string(), rest.trim_matches('"').to_string()))
        })
        .collect()
}

fn names(r: &str, verb: &str) -> Vec<String> {
    listed(r, verb).into_iter().map(|(_, n)| n).collect()
}

fn has(v: &[String], name: &str) -> bool {
    v.iter().any(|n| n == name)
}

#[test]
fn subscriptions_are_kept_per_user() {
    let (_d, store) = store_with(&["a@pec.test", "b@pec.test"]);
    let mut s = Session::new(Limits::default(), true);
    let login = text(drive(&mut s, &store, b"1 LOGIN a@pec.test pw\r\n"));
    assert!(login.contains("1 OK"), "{login}");
    let mut cmd = |c: &str| text(drive(&mut s, &store, format!("{c}\r\n").as_bytes()));

    // INBOX and the special-use folders made at first login are subscribed.
    let r = cmd("2 LSUB \"\" \"*\"");
    assert_eq!(
        names(&r, "LSUB"),
        ["INBOX", "Archive", "Drafts", "Junk", "Sent", "Trash"],
        "{r}"
    );
    assert!(
        r.contains("* LSUB (\\HasNoChildren \\Sent) \"/\" \"Sent\""),
        "{r}"
    );
    assert!(r.ends_with("2 OK LSUB completed\r\n"), "{r}");

    // A folder a client creates is listed but not subscribed until asked.
    assert!(cmd("3 CREATE Work").contains("3 OK"));
    assert!(has(&names(&cmd("4 LIST \"\" \"*\""), "LIST"), "Work"));
    assert!(!has(&names(&cmd("5 LSUB \"\" \"*\""), "LSUB"), "Work"));
    assert!(cmd("6 SUBSCRIBE Work").contains("6 OK SUBSCRIBE completed"));
    let r = cmd("7 LSUB \"\" \"W%\"");
    assert_eq!(
        listed(&r, "LSUB"),
        [("\\HasNoChildren".to_string(), "Work".to_string())],
        "{r}"
    );

    // A name with no folder can be subscribed; LSUB shows it \Noselect, LIST not at all.
    assert!(cmd("8 SUBSCRIBE Ghost").contains("8 OK"));
    let r = cmd("9 LSUB \"\" Ghost");
    assert_eq!(
        listed(&r, "LSUB"),
        [("\\Noselect".to_string(), "Ghost".to_string())],
        "{r}"
    );
    assert!(listed(&cmd("10 LIST \"\" Ghost"), "LIST").is_empty());

    // DELETE keeps the subscription; the folder created again is subscribed.
    assert!(cmd("11 DELETE Work").contains("11 OK"));
    let r = cmd("12 LSUB \"\" Work");
    assert_eq!(
        listed(&r, "LSUB"),
        [("\\Noselect".to_string(), "Work".to_string())],
        "{r}"
    );
    assert!(cmd("13 CREATE Work").contains("13 OK"));
    let r = cmd("14 LSUB \"\" Work");
    assert_eq!(
        listed(&r, "LSUB"),
        [("\\HasNoChildren".to_string(), "Work".to_string())],
        "{r}"
    );

    // RENAME moves the subscription (children too); the old names are not left behind.
    assert!(cmd("15 CREATE Work/2026").contains("15 OK"));
    assert!(cmd("16 SUBSCRIBE Work/2026").contains("16 OK"));
    assert!(cmd("17 RENAME Work Projects").contains("17 OK"));
    let r = cmd("18 LSUB \"\" \"*\"");
    let subs = names(&r, "LSUB");
    assert!(has(&subs, "Projects") && has(&subs, "Projects/2026"), "{r}");
    assert!(!subs.iter().any(|n| n.starts_with("Work")), "{r}");

    // UNSUBSCRIBE removes it from LSUB only; unsubscribing again is harmless.
    assert!(cmd("19 UNSUBSCRIBE Projects").contains("19 OK UNSUBSCRIBE completed"));
    assert!(cmd("20 UNSUBSCRIBE Projects").contains("20 OK"));
    assert!(cmd("21 UNSUBSCRIBE Trash").contains("21 OK"));
    let r = cmd("22 LSUB \"\" \"*\"");
    let subs = names(&r, "LSUB");
    assert!(!has(&subs, "Projects") && !has(&subs, "Trash"), "{r}");
    assert!(has(&subs, "Projects/2026"), "{r}");
    assert!(has(&names(&cmd("23 LIST \"\" \"*\""), "LIST"), "Trash"));

    // With '%', an unsubscribed superior of a subscribed name is shown \Noselect.
    let r = cmd("24 LSUB \"\" \"%\"");
    let top = listed(&r, "LSUB");
    assert!(
        top.contains(&("\\Noselect".to_string(), "Projects".to_string())),
        "{r}"
    );
    assert!(!top.iter().any(|(_, n)| n == "Projects/2026"), "{r}");

    // Names are checked like any other.
    assert!(cmd("25 SUBSCRIBE \"a//b\"").contains("25 NO [CANNOT]"));

    // Another session of the same user sees the same; another user has only its own.
    let mut s2 = Session::new(Limits::default(), true);
    let r = text(drive(
        &mut s2,
        &store,
        b"1 LOGIN a@pec.test pw\r\n2 LSUB \"\" \"*\"\r\n",
    ));
    let again = names(&r, "LSUB");
    assert!(has(&again, "Ghost") && !has(&again, "Trash"), "{r}");
    let mut s3 = Session::new(Limits::default(), true);
    let r = text(drive(
        &mut s3,
        &store,
        b"1 LOGIN b@pec.test pw\r\n2 LSUB \"\" \"*\"\r\n",
    ));
    assert_eq!(
        names(&r, "LSUB"),
        ["INBOX", "Archive", "Drafts", "Junk", "Sent", "Trash"],
        "{r}"
    );
}
