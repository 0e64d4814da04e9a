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
