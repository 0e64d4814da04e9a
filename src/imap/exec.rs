//! The IMAP commands that read or change the store (RFC 3501 §6.3, §6.4; RFC 9208 QUOTA;
//! RFC 4315 UIDPLUS response codes). Synchronous: the driver runs them on the blocking
//! pool, where store reads, blob files and commit waits are allowed.
//!
//! Every store call is made with the session's authenticated address (isolation), every
//! folder name goes through [`super::names`]. Failures map to response codes of RFC 5530:
//! `OVERQUOTA`, `TRYCREATE`/`NONEXISTENT`, `ALREADYEXISTS`, `CANNOT`, `UNAVAILABLE`.

use std::sync::Arc;

use imap_codec::imap_types::command::CommandBody;

use super::folders;
use super::names;
use super::session::State;
use super::view::View;
use super::wire::{Out, tagged, untagged};
use crate::pec::address::PecAddress;
use crate::store::{Batch, Delivery, Store, StoreError};
use crate::trace::{EventKind, TraceEvent};

use crate::store::archive::ARCHIVE;

/// Flags a client may set (RFC 3501 §2.3.2); keywords are allowed too.
pub const FLAGS: &str = "(\\Answered \\Flagged \\Deleted \\Seen \\Draft)";

/// Creates the special-use folders a new mailbox lacks (RFC 6154), subscribed; failures
/// are logged only.
pub fn ensure_special_folders(store: &Store, user: &PecAddress) {
    let existing = match store.folders(user) {
        Ok(f) => f,
        Err(e) => return tracing::warn!(error = %e, "listing folders"),
    };
    let mut batch = Batch::new();
    for (name, _) in names::SPECIAL_USE {
        if !existing.iter().any(|f| f.name == *name) {
            batch = batch
                .create_folder(user.clone(), *name)
                .subscribe(user.clone(), *name);
        }
    }
    if !batch.is_empty() {
        // A concurrent login may have created them first: that is fine.
        if let Err(e) = store.commit(batch) {
            tracing::debug!(error = %e, "creating special-use folders");
        }
    }
}

/// The `NO` line for a store failure.
pub fn no(tag: &str, e: &StoreError) -> Vec<u8> {
    let (code, text) = match e {
        StoreError::QuotaExceeded { .. } => ("[OVERQUOTA] ", "Quota exceeded".to_string()),
        StoreError::NoSuchFolder { .. } => ("[TRYCREATE] ", "No such mailbox".to_string()),
        StoreError::FolderExists { .. } => {
            ("[ALREADYEXISTS] ", "Mailbox already exists".to_string())
        }
        StoreError::NoSuchMessage { .. } => {
            ("[EXPUNGEISSUED] ", "Message was expunged".to_string())
        }
        StoreError::ReadOnlyFolder { .. } => (
            "[NOPERM] ",
            "The security archive (Archivio di sicurezza) is read-only".to_string(),
        ),
        other => {
            tracing::error!(error = %other, "IMAP store operation failed");
            ("[UNAVAILABLE] ", "Temporary failure, try again".to_string())
        }
    };
    tagged(tag, "NO", &format!("{code}{text}"))
}

/// Runs one command in an authenticated or selected state. A FETCH is returned to be
/// answered step by step ([`super::fetch::FetchJob`]); every other command is answered
/// in `out`.
pub fn run(
    store: &Store,
    state: &mut State,
    tag: &str,
    body: CommandBody<'static>,
    out: &mut Vec<u8>,
) -> Option<super::fetch::FetchJob> {
    if matches!(body, CommandBody::Fetch { .. }) {
        return super::fetch::run(store, state, tag, body, out);
    }
    run_answered(store, state, tag, body, out);
    None
}

fn run_answered(
    store: &Store,
    state: &mut State,
    tag: &str,
    body: CommandBody<'static>,
    out: &mut Vec<u8>,
) {
    let Some(user) = state.user().cloned() else {
        out.extend(tagged(tag, "BAD", "Log in first"));
        return;
    };
    macro_rules! name {
        ($m:expr) => {
            match names::parse($m) {
                Ok(n) => n,
                Err(e) => return out.extend(tagged(tag, "NO", &format!("[CANNOT] {e}"))),
            }
        };
    }
    let body_is_lsub = matches!(body, CommandBody::Lsub { .. });
    match body {
        CommandBody::Noop | CommandBody::Check => {
            if let State::Selected { view, .. } = state
                && let Err(e) = view.refresh(store, &user, out)
            {
                return out.extend(no(tag, &e));
            }
            out.extend(tagged(tag, "OK", "Completed"));
        }
        CommandBody::Select { mailbox, .. } => {
            select(store, state, tag, user, name!(&mailbox), false, out)
        }
        CommandBody::Examine { mailbox, .. } => {
            select(store, state, tag, user, name!(&mailbox), true, out)
        }
        CommandBody::Close | CommandBody::Unselect => {
            let expunge = matches!(body, CommandBody::Close);
            if let State::Selected { view, .. } = &*state
                && expunge
                && !view.read_only
            {
                let deleted: Vec<u32> = view
                    .msgs
                    .iter()
                    .filter(|m| is_deleted(&m.flags))
                    .map(|m| m.uid)
                    .collect();
                if let Err(e) = expunge_uids(store, &user, &view.folder, &deleted) {
                    return out.extend(no(tag, &e));
                }
            }
            *state = State::Authenticated { user };
            out.extend(tagged(tag, "OK", "Completed"));
        }
        CommandBody::Expunge | CommandBody::ExpungeUid { .. } => {
            let State::Selected { view, .. } = state else {
                return out.extend(tagged(tag, "BAD", "No mailbox selected"));
            };
            if view.read_only {
                return out.extend(tagged(tag, "NO", "[READ-ONLY] Mailbox is read-only"));
            }
            let within = match &body {
                CommandBody::ExpungeUid { sequence_set } => {
                    match view.resolve(sequence_set, true) {
                        Ok(i) => Some(i),
                        Err(e) => return out.extend(tagged(tag, "BAD", &e.to_string())),
                    }
                }
                _ => None,
            };
            let deleted: Vec<u32> = view
                .msgs
                .iter()
                .enumerate()
                .filter(|(i, m)| {
                    is_deleted(&m.flags)
                        && within.as_ref().is_none_or(|w| w.binary_search(i).is_ok())
                })
                .map(|(_, m)| m.uid)
                .collect();
            if let Err(e) = expunge_uids(store, &user, &view.folder, &deleted) {
                return out.extend(no(tag, &e));
            }
            view.remove(&deleted, out);
            out.extend(tagged(tag, "OK", "EXPUNGE completed"));
        }
        CommandBody::Create { mailbox } => folders::create(store, tag, &user, name!(&mailbox), out),
        CommandBody::Delete { mailbox } => {
            folders::delete(store, state, tag, &user, name!(&mailbox), out)
        }
        CommandBody::Rename { from, to } => {
            folders::rename(store, tag, &user, name!(&from), name!(&to), out)
        }
        CommandBody::Subscribe { mailbox } => {
            folders::subscribe(store, tag, &user, name!(&mailbox), true, out)
        }
        CommandBody::Unsubscribe { mailbox } => {
            folders::subscribe(store, tag, &user, name!(&mailbox), false, out)
        }
        CommandBody::List {
            reference,
            mailbox_wildcard,
        }
        | CommandBody::Lsub {
            reference,
            mailbox_wildcard,
        } => {
            let lsub = body_is_lsub;
            let reference = match &reference {
                imap_codec::imap_types::mailbox::Mailbox::Inbox => "INBOX".to_string(),
                imap_codec::imap_types::mailbox::Mailbox::Other(o) => {
                    String::from_utf8_lossy(o.as_ref()).into_owned()
                }
            };
            let pattern = match &mailbox_wildcard {
                imap_codec::imap_types::mailbox::ListMailbox::Token(t) => {
                    String::from_utf8_lossy(t.as_ref()).into_owned()
                }
                imap_codec::imap_types::mailbox::ListMailbox::String(s) => {
                    String::from_utf8_lossy(s.as_ref()).into_owned()
                }
            };
            folders::list(store, tag, &user, &reference, &pattern, lsub, out);
        }
        CommandBody::Status {
            mailbox,
            item_names,
        } => folders::status(store, tag, &user, name!(&mailbox), &item_names, out),
        CommandBody::Append {
            mailbox,
            flags,
            date,
            message,
        } => {
            let folder = name!(&mailbox);
            let bytes = match &message {
                imap_codec::imap_types::extensions::binary::LiteralOrLiteral8::Literal(l) => {
                    l.data().to_vec()
                }
                imap_codec::imap_types::extensions::binary::LiteralOrLiteral8::Literal8(l) => {
                    l.data.to_vec()
                }
            };
            let flags: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
            let when = date
                .and_then(|d| jiff::Timestamp::from_second(d.as_ref().timestamp()).ok())
                .unwrap_or_else(jiff::Timestamp::now);
            append(store, state, tag, &user, folder, bytes, flags, when, out);
        }
        CommandBody::GetQuota { root } => {
            let root = String::from_utf8_lossy(root.as_ref()).into_owned();
            if !root.is_empty() && root != ARCHIVE {
                return out.extend(tagged(tag, "NO", "[NONEXISTENT] No such quota root"));
            }
            match quota_line(store, &user, &root) {
                Ok(q) => {
                    out.extend(q);
                    out.extend(tagged(tag, "OK", "GETQUOTA completed"));
                }
                Err(e) => out.extend(no(tag, &e)),
            }
        }
        CommandBody::GetQuotaRoot { mailbox } => {
            let folder = name!(&mailbox);
            // The security archive has a quota root of its own.
            let root = if crate::store::archive::is_archive(&folder) {
                ARCHIVE
            } else {
                ""
            };
            match (store.folder(&user, &folder), quota_line(store, &user, root)) {
                (Ok(Some(_)), Ok(q)) => {
                    let mut o = Out::new();
                    o.raw("* QUOTAROOT ")
                        .string(folder.as_bytes())
                        .raw(" ")
                        .string(root.as_bytes())
                        .raw("\r\n");
                    out.extend(o.0);
                    out.extend(q);
                    out.extend(tagged(tag, "OK", "GETQUOTAROOT completed"));
                }
                (Ok(None), _) => out.extend(tagged(tag, "NO", "[NONEXISTENT] No such mailbox")),
                (Err(e), _) | (_, Err(e)) => out.extend(no(tag, &e)),
            }
        }
        CommandBody::SetQuota { .. } => {
            out.extend(tagged(tag, "NO", "[NOPERM] Quotas are set by the provider"))
        }
        CommandBody::Search { .. }
        | CommandBody::Fetch { .. }
        | CommandBody::Store { .. }
        | CommandBody::Copy { .. }
        | CommandBody::Move { .. } => {
            // FETCH never gets here (see `run`): nothing is returned.
            let _ = super::fetch::run(store, state, tag, body, out);
        }
        _ => out.extend(tagged(tag, "BAD", "Command not supported")),
    }
}

pub fn is_deleted(flags: &[String]) -> bool {
    flags.iter().any(|f| f.eq_ignore_ascii_case("\\Deleted"))
}

/// Expunges UIDs of a folder in one commit.
pub fn expunge_uids(
    store: &Store,
    user: &PecAddress,
    folder: &str,
    uids: &[u32],
) -> Result<(), StoreError> {
    if uids.is_empty() {
        return Ok(());
    }
    let mut b = Batch::new();
    for &u in uids {
        b = b.expunge(user.clone(), folder, u);
    }
    store.commit(b)?;
    Ok(())
}

fn select(
    store: &Store,
    state: &mut State,
    tag: &str,
    user: PecAddress,
    folder: String,
    read_only: bool,
    out: &mut Vec<u8>,
) {
    // A failed SELECT leaves no mailbox selected (RFC 3501 §6.3.1).
    *state = State::Authenticated { user: user.clone() };
    // The security archive is only ever examined.
    let read_only = read_only || crate::store::archive::is_archive(&folder);
    let view = match View::load(store, &user, &folder, read_only) {
        Ok(Some(v)) => v,
        Ok(None) => return out.extend(tagged(tag, "NO", "[NONEXISTENT] No such mailbox")),
        Err(e) => return out.extend(no(tag, &e)),
    };
    let (unseen, first) = view.unseen();
    let _ = unseen;
    out.extend(untagged(&format!("FLAGS {FLAGS}")));
    if read_only {
        out.extend(untagged("OK [PERMANENTFLAGS ()] Read-only"));
    } else {
        out.extend(untagged("OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Flags permitted"));
    }
    out.extend(untagged(&format!("{} EXISTS", view.msgs.len())));
    out.extend(untagged("0 RECENT"));
    if let Some(n) = first {
        out.extend(untagged(&format!("OK [UNSEEN {n}] First unseen")));
    }
    out.extend(untagged(&format!(
        "OK [UIDVALIDITY {}] UIDs valid",
        view.uidvalidity
    )));
    out.extend(untagged(&format!(
        "OK [UIDNEXT {}] Predicted next UID",
        view.uidnext
    )));
    let code = if read_only {
        "[READ-ONLY]"
    } else {
        "[READ-WRITE]"
    };
    out.extend(tagged(
        tag,
        "OK",
        &format!(
            "{code} {} completed",
            if read_only { "EXAMINE" } else { "SELECT" }
        ),
    ));
    *state = State::Selected { user, view };
}

/// `* QUOTA "" (STORAGE used limit)`, in units of 1024 octets (RFC 9208 §5.1).
/// The `* QUOTA` line of root `""` (the mailbox) or [`ARCHIVE`] (its security archive).
fn quota_line(store: &Store, user: &PecAddress, root: &str) -> Result<Vec<u8>, StoreError> {
    let (used, limit) = if root == ARCHIVE {
        let a = store
            .archive_state(user)?
            .ok_or_else(|| StoreError::NoSuchMailbox(user.to_string()))?;
        (a.usage_bytes, a.quota_bytes)
    } else {
        let mb = store
            .mailbox(user)?
            .ok_or_else(|| StoreError::NoSuchMailbox(user.to_string()))?;
        (mb.usage_bytes, mb.quota_bytes)
    };
    let mut o = Out::new();
    o.raw("* QUOTA ").string(root.as_bytes()).raw(&format!(
        " (STORAGE {} {})\r\n",
        used.div_ceil(1024),
        limit / 1024
    ));
    Ok(o.0)
}

/// The `MessageStored` record of an APPEND: the mailbox, the folder, the SHA-256 of the
/// bytes and, when the message has them, its Message-ID and subject (the fields the
/// trace log keeps per operation, PEC rules §9).
pub(crate) fn append_trace(
    store: &Store,
    user: &PecAddress,
    folder: &str,
    bytes: &[u8],
    how: &str,
) -> TraceEvent {
    let mut e = TraceEvent::new(EventKind::MessageStored, store.options().clock.now())
        .recipient(user.to_string())
        .detail(format!("{how} to folder {folder}"))
        .message_bytes(bytes);
    let header_end = super::mime::parse(bytes).body;
    for (name, value, _) in super::mime::fields(bytes, 0, header_end) {
        match name.as_str() {
            "message-id" if e.msgid.is_none() => {
                let id = crate::pec::ids::bare(&value);
                if !id.is_empty() {
                    e = e.msgid(id.to_string());
                }
            }
            "subject" if e.subject.is_none() => e = e.subject(value),
            _ => {}
        }
    }
    e
}

#[allow(clippy::too_many_arguments)]
fn append(
    store: &Store,
    state: &mut State,
    tag: &str,
    user: &PecAddress,
    folder: String,
    bytes: Vec<u8>,
    flags: Vec<String>,
    when: jiff::Timestamp,
    out: &mut Vec<u8>,
) {
    match store.folder(user, &folder) {
        Ok(Some(_)) => {}
        Ok(None) => return out.extend(tagged(tag, "NO", "[TRYCREATE] No such mailbox")),
        Err(e) => return out.extend(no(tag, &e)),
    }
    // Checked before writing the blob; the commit checks again, exactly (single writer).
    if let Ok(Some(mb)) = store.mailbox(user)
        && mb.usage_bytes.saturating_add(bytes.len() as u64) > mb.quota_bytes
    {
        return out.extend(tagged(tag, "NO", "[OVERQUOTA] Quota exceeded"));
    }
    let bytes = Arc::new(bytes);
    let blob = match store.blobs().put_staged(&bytes) {
        Ok(b) => b,
        Err(e) => return out.extend(no(tag, &e)),
    };
    let flags = flags
        .into_iter()
        .filter(|f| !f.eq_ignore_ascii_case("\\Recent"))
        .collect();
    let d = Delivery {
        mailbox: user.clone(),
        folder: folder.clone(),
        blob,
        flags,
        internal_date: when,
        enforce_quota: true,
        facts: None,
        archive: false,
    };
    // The message and its trace record commit together (design principle 10): the log
    // shows who stored which bytes in which folder, even though no PEC step was taken.
    let trace = append_trace(store, user, &folder, &bytes, "IMAP APPEND");
    match store.commit(Batch::new().deliver(d).trace(trace)) {
        Ok(applied) => {
            if let State::Selected { view, .. } = state
                && view.folder == folder
            {
                let _ = view.refresh(store, user, out);
            }
            let code = applied
                .delivered
                .first()
                .map(|d| format!("[APPENDUID {} {}] ", d.uidvalidity, d.uid))
                .unwrap_or_default();
            out.extend(tagged(tag, "OK", &format!("{code}APPEND completed")));
        }
        Err(e) => out.extend(no(tag, &e)),
    }
}
