//! POP3 session tests without sockets, and the replay of `tests/transcripts/pop3_*.txt`.

use std::path::Path;

use super::session::{Action, Session};
use crate::imap::session_tests::{replay, store_with};
use crate::pec::address::PecAddress;
use crate::store::{Batch, Delivery, Store};

fn drive(s: &mut Session, store: &Store, input: &[u8]) -> Vec<u8> {
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
            Action::Close | Action::NeedInput => return out,
        }
    }
}

fn deliver(store: &Store, to: &str, msg: &[u8]) {
    let blob = store.blobs().put(msg).expect("blob");
    let addr = PecAddress::parse(to).expect("address");
    store
        .commit(Batch::new().deliver(Delivery::inbox(addr, blob, jiff::Timestamp::now())))
        .expect("deliver");
}

const MSG1: &[u8] = b"Subject: uno\r\nFrom: x@y.it\r\n\r\nriga 1\r\n.riga col punto\r\nriga 3\r\n";
const MSG2: &[u8] = b"Subject: due\r\n\r\nciao\r\n";

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
        if !name.starts_with("pop3_") {
            continue;
        }
        n += 1;
        let (_d, store) = store_with(&["a@pec.test", "b@pec.test"]);
        deliver(&store, "a@pec.test", MSG1);
        deliver(&store, "a@pec.test", MSG2);
        deliver(&store, "b@pec.test", b"Subject: di b\r\n\r\nsegreto\r\n");
        let mut s = Session::new(true);
        replay(
            &name,
            &std::fs::read_to_string(&path).expect("read"),
            |input| drive(&mut s, &store, input),
        );
        if name == "pop3_dele.txt" {
            // DELE kept the message, flagged, and hid it from the next POP3 session.
            let a = PecAddress::parse("a@pec.test").expect("address");
            let msgs = store.messages(&a, "INBOX").expect("messages");
            assert_eq!(msgs.len(), 2);
            assert!(msgs[0].flags.iter().any(|f| f == super::DELETED_KEYWORD));
            let mut s = Session::new(true);
            let out = String::from_utf8_lossy(&drive(
                &mut s,
                &store,
                b"USER a@pec.test\r\nPASS pw\r\nSTAT\r\n",
            ))
            .into_owned();
            assert!(out.contains("+OK 1 "), "{out}");
        }
    }
    assert!(n >= 2);
}

#[test]
fn plain_text_refused_and_garbage_answered() {
    let (_d, store) = store_with(&["a@pec.test"]);
    let mut s = Session::new(false);
    let out = String::from_utf8_lossy(&drive(
        &mut s,
        &store,
        b"USER a@pec.test\r\n\xff\xfe\r\nRETR 1\r\n",
    ))
    .into_owned();
    assert!(out.contains("-ERR [SYS/PERM]"), "{out}");
    assert_eq!(out.matches("-ERR").count(), 3, "{out}");
    let out = String::from_utf8_lossy(&drive(&mut s, &store, &[b'x'; 5000])).into_owned();
    assert!(out.contains("-ERR Line too long"), "{out}");
}

/// PASS takes the rest of the line verbatim (RFC 1939 §7): doubled, leading and trailing
/// spaces are part of the password.
#[test]
fn pass_keeps_spaces_verbatim() {
    for pass in ["a  b", " lead", "trail ", "  ", "one two  three   "] {
        let mut s = Session::new(true);
        s.feed(format!("USER a@pec.test\r\nPASS {pass}\r\n").as_bytes());
        let got = loop {
            match s.next() {
                Action::Authenticate { user, pass } => break Some((user, pass)),
                Action::NeedInput | Action::Close | Action::AuthenticateExternal { .. } => {
                    break None;
                }
                Action::Execute => {}
            }
        };
        assert_eq!(
            got,
            Some(("a@pec.test".to_string(), pass.to_string())),
            "PASS {pass:?}"
        );
        assert!(!s.is_authenticated());
    }
}

#[test]
fn authenticated_after_login() {
    let (_d, store) = store_with(&["a@pec.test"]);
    let mut s = Session::new(true);
    drive(&mut s, &store, b"USER a@pec.test\r\n");
    assert!(!s.is_authenticated());
    let out = String::from_utf8_lossy(&drive(&mut s, &store, b"PASS pw\r\n")).into_owned();
    assert!(out.contains("+OK 0 messages"), "{out}");
    assert!(s.is_authenticated());
}

#[test]
fn auth_external_only_with_a_client_certificate() {
    let (_d, store) = store_with(&["a@pec.test"]);
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    let mut s = Session::new(true);
    let r = text(drive(&mut s, &store, b"CAPA\r\nAUTH EXTERNAL =\r\n"));
    assert!(r.contains("SASL PLAIN\r\n"), "{r}");
    assert!(r.contains("-ERR [AUTH] EXTERNAL needs"), "{r}");
    let mut s = Session::new(true);
    s.offer_external();
    let r = text(drive(&mut s, &store, b"CAPA\r\nAUTH\r\n"));
    assert!(
        r.contains("SASL PLAIN EXTERNAL\r\n") && r.contains("EXTERNAL\r\n.\r\n"),
        "{r}"
    );
    let r = text(drive(&mut s, &store, b"AUTH EXTERNAL\r\n"));
    assert!(r.ends_with("+ \r\n"), "{r}");
    let r = text(drive(&mut s, &store, b"=\r\n"));
    assert!(r.starts_with("+OK"), "{r}");
    assert!(s.is_authenticated());
}
