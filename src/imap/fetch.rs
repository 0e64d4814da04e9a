//! FETCH, STORE, COPY and MOVE on the selected mailbox (RFC 3501 §6.4.5–§6.4.8, RFC 6851
//! MOVE, RFC 4315 COPYUID), and the dispatch of SEARCH to [`super::search`].
//!
//! Message bytes come from the blob store on the blocking pool; sections are byte ranges
//! of the stored message ([`super::mime`]), so what a client fetches is what was stored.
//! A non-PEEK body fetch sets `\Seen` (§6.4.5): each step commits it for the messages it
//! answered, before the driver writes them, and only adds the flag (other flags set by
//! another session meanwhile stay; a message expunged meanwhile is skipped), so a long
//! FETCH neither undoes other clients' changes nor loses the `\Seen` of what was already
//! sent when the client disconnects.
//!
//! FETCH is answered in steps ([`FetchJob`]): each step reads and answers messages until
//! [`FETCH_CHUNK_BYTES`] are pending (one message at least), and the driver writes them
//! before asking for the next, so `FETCH 1:* BODY[]` on a large mailbox holds at most
//! about one message in memory, not the whole answer.

use std::borrow::Cow;

use imap_codec::imap_types::command::CommandBody;
use imap_codec::imap_types::fetch::{MacroOrMessageDataItemNames, MessageDataItemName, Section};
use imap_codec::imap_types::flag::{StoreResponse, StoreType};

use super::exec::no;
use super::mime::{self, Part};
use super::session::State;
use super::wire::{Out, compact_set, date_time, flag_list, tagged};
use crate::store::{Batch, Blob, Delivery, Store};

/// Output a FETCH step stops at: a step answers messages until this much is pending,
/// so the driver writes the answer of a `FETCH 1:* BODY[]` in pieces of about this size
/// (or one message, when a message is larger) instead of holding it all.
pub const FETCH_CHUNK_BYTES: usize = 64 * 1024;

/// A FETCH being answered: the messages left, what to fetch for each, and the UIDs whose
/// `\Seen` the current step commits. The session keeps it between [`FetchJob::step`]s, during
/// which no other command runs, so the indexes into the view stay valid.
#[derive(Debug)]
pub struct FetchJob {
    tag: String,
    idx: Vec<usize>,
    /// Next position in `idx`.
    pos: usize,
    items: Vec<MessageDataItemName<'static>>,
    sets_seen: bool,
    /// UIDs answered in this step that were not `\Seen`.
    seen: Vec<u32>,
}

impl FetchJob {
    /// Answers messages until at least [`FETCH_CHUNK_BYTES`] are in `out` (always one
    /// message at least), or all of them and the tagged completion. Returns `true` when
    /// the command is complete.
    pub fn step(&mut self, store: &Store, state: &mut State, out: &mut Vec<u8>) -> bool {
        let State::Selected { user, view } = state else {
            out.extend(tagged(&self.tag, "BAD", "No mailbox selected"));
            return true;
        };
        let start = out.len();
        while let Some(&i) = self.idx.get(self.pos) {
            self.pos += 1;
            let Some(m) = view.msgs.get_mut(i) else {
                continue;
            };
            let mut flags_changed = false;
            if self.sets_seen && !m.flags.iter().any(|f| f.eq_ignore_ascii_case(SEEN)) {
                m.flags.push(SEEN.into());
                self.seen.push(m.uid);
                flags_changed = true;
            }
            if let Err(e) = fetch_one(store, m, i + 1, &self.items, flags_changed, out) {
                // What was answered before keeps its \Seen (not this one); the command
                // fails anyway, so a failure to commit it adds nothing to say.
                if flags_changed {
                    self.seen.pop();
                }
                let _ = self.commit_seen(store, user, view);
                out.extend(no(&self.tag, &e));
                return true;
            }
            if out.len() - start >= FETCH_CHUNK_BYTES && self.pos < self.idx.len() {
                if let Err(e) = self.commit_seen(store, user, view) {
                    out.extend(no(&self.tag, &e));
                    return true;
                }
                return false;
            }
        }
        if let Err(e) = self.commit_seen(store, user, view) {
            out.extend(no(&self.tag, &e));
            return true;
        }
        out.extend(tagged(&self.tag, "OK", "FETCH completed"));
        true
    }

    /// Commits the `\Seen` of the messages this step answered: an addition, so flags
    /// another session set since the view was loaded stay, and messages it expunged are
    /// skipped.
    fn commit_seen(
        &mut self,
        store: &Store,
        user: &crate::pec::address::PecAddress,
        view: &super::view::View,
    ) -> Result<(), crate::store::StoreError> {
        if self.seen.is_empty() {
            return Ok(());
        }
        let uids = std::mem::take(&mut self.seen);
        store
            .commit(Batch::new().add_flags(
                user.clone(),
                view.folder.clone(),
                view.uidvalidity,
                uids,
                vec![SEEN.into()],
            ))
            .map(drop)
    }
}

const SEEN: &str = "\\Seen";

/// Runs FETCH, STORE, COPY, MOVE or SEARCH; the state must be Selected. A valid FETCH
/// is not answered here: it is returned, for the caller to drive with [`FetchJob::step`].
pub fn run(
    store: &Store,
    state: &mut State,
    tag: &str,
    body: CommandBody<'static>,
    out: &mut Vec<u8>,
) -> Option<FetchJob> {
    let State::Selected { view, .. } = state else {
        out.extend(tagged(tag, "BAD", "No mailbox selected"));
        return None;
    };
    match body {
        CommandBody::Fetch {
            sequence_set,
            macro_or_item_names,
            uid,
            ..
        } => {
            let idx = match view.resolve(&sequence_set, uid) {
                Ok(i) => i,
                Err(e) => {
                    out.extend(tagged(tag, "BAD", &e.to_string()));
                    return None;
                }
            };
            let mut items = match macro_or_item_names {
                MacroOrMessageDataItemNames::Macro(m) => m
                    .expand()
                    .into_iter()
                    .map(|i| i.into_static_item())
                    .collect(),
                MacroOrMessageDataItemNames::MessageDataItemNames(v) => v,
            };
            if uid && !items.contains(&MessageDataItemName::Uid) {
                items.insert(0, MessageDataItemName::Uid);
            }
            if items.iter().any(|i| {
                matches!(
                    i,
                    MessageDataItemName::Binary { .. } | MessageDataItemName::BinarySize { .. }
                )
            }) {
                out.extend(tagged(tag, "BAD", "BINARY is not supported"));
                return None;
            }
            let sets_seen = !view.read_only
                && items.iter().any(|i| {
                    matches!(
                        i,
                        MessageDataItemName::BodyExt { peek: false, .. }
                            | MessageDataItemName::Rfc822
                            | MessageDataItemName::Rfc822Text
                    )
                });
            Some(FetchJob {
                tag: tag.to_string(),
                idx,
                pos: 0,
                items,
                sets_seen,
                seen: Vec::new(),
            })
        }
        other => {
            run_other(store, state, tag, other, out);
            None
        }
    }
}

/// SEARCH, STORE, COPY and MOVE: answered at once (their output is bounded by the
/// number of messages, not by their bytes).
fn run_other(
    store: &Store,
    state: &mut State,
    tag: &str,
    body: CommandBody<'static>,
    out: &mut Vec<u8>,
) {
    let State::Selected { user, view } = state else {
        return out.extend(tagged(tag, "BAD", "No mailbox selected"));
    };
    let user = user.clone();
    match body {
        CommandBody::Search {
            charset,
            criteria,
            uid,
        } => super::search::run(store, view, tag, charset, criteria, uid, out),
        CommandBody::Store {
            sequence_set,
            kind,
            response,
            flags,
            uid,
            ..
        } => {
            if view.read_only {
                return out.extend(tagged(tag, "NO", "[READ-ONLY] Mailbox is read-only"));
            }
            let idx = match view.resolve(&sequence_set, uid) {
                Ok(i) => i,
                Err(e) => return out.extend(tagged(tag, "BAD", &e.to_string())),
            };
            let given: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
            let mut batch = Batch::new();
            for &i in &idx {
                let m = &mut view.msgs[i];
                let mut new: Vec<String> = match kind {
                    StoreType::Replace => given.clone(),
                    StoreType::Add => {
                        let mut v = m.flags.clone();
                        v.extend(
                            given
                                .iter()
                                .filter(|g| !m.flags.iter().any(|f| f.eq_ignore_ascii_case(g)))
                                .cloned(),
                        );
                        v
                    }
                    StoreType::Remove => m
                        .flags
                        .iter()
                        .filter(|f| !given.iter().any(|g| g.eq_ignore_ascii_case(f)))
                        .cloned()
                        .collect(),
                };
                new.dedup();
                if new != m.flags {
                    batch = batch.set_flags(user.clone(), view.folder.clone(), m.uid, new.clone());
                    m.flags = new;
                }
            }
            if !batch.is_empty()
                && let Err(e) = store.commit(batch)
            {
                return out.extend(no(tag, &e));
            }
            if response == StoreResponse::Answer {
                for &i in &idx {
                    let m = &view.msgs[i];
                    let uid_part = if uid {
                        format!("UID {} ", m.uid)
                    } else {
                        String::new()
                    };
                    out.extend(
                        format!(
                            "* {} FETCH ({uid_part}FLAGS {})\r\n",
                            i + 1,
                            flag_list(&m.flags)
                        )
                        .into_bytes(),
                    );
                }
            }
            out.extend(tagged(tag, "OK", "STORE completed"));
        }
        CommandBody::Copy {
            sequence_set,
            mailbox,
            uid,
        } => copy_or_move(store, state, tag, &sequence_set, &mailbox, uid, false, out),
        CommandBody::Move {
            sequence_set,
            mailbox,
            uid,
        } => copy_or_move(store, state, tag, &sequence_set, &mailbox, uid, true, out),
        _ => out.extend(tagged(tag, "BAD", "Unexpected command")),
    }
}

trait StaticItem {
    fn into_static_item(self) -> MessageDataItemName<'static>;
}
impl StaticItem for MessageDataItemName<'_> {
    fn into_static_item(self) -> MessageDataItemName<'static> {
        use imap_codec::imap_types::IntoStatic;
        self.into_static()
    }
}

#[allow(clippy::too_many_arguments)]
fn copy_or_move(
    store: &Store,
    state: &mut State,
    tag: &str,
    set: &imap_codec::imap_types::sequence::SequenceSet,
    mailbox: &imap_codec::imap_types::mailbox::Mailbox<'_>,
    uid: bool,
    is_move: bool,
    out: &mut Vec<u8>,
) {
    let State::Selected { user, view } = state else {
        return;
    };
    if is_move && view.read_only {
        return out.extend(tagged(tag, "NO", "[READ-ONLY] Mailbox is read-only"));
    }
    let dest = match super::names::parse(mailbox) {
        Ok(n) => n,
        Err(e) => return out.extend(tagged(tag, "NO", &format!("[CANNOT] {e}"))),
    };
    let idx = match view.resolve(set, uid) {
        Ok(i) => i,
        Err(e) => return out.extend(tagged(tag, "BAD", &e.to_string())),
    };
    let dest_info = match store.folder(user, &dest) {
        Ok(Some(f)) => f,
        Ok(None) => return out.extend(tagged(tag, "NO", "[TRYCREATE] No such mailbox")),
        Err(e) => return out.extend(no(tag, &e)),
    };
    if idx.is_empty() {
        return out.extend(tagged(tag, "OK", "Nothing to do"));
    }
    // One commit: for MOVE the expunges come first, so moving within a full mailbox
    // does not count twice against the quota (RFC 6851 §3.3: atomic).
    let mut batch = Batch::new();
    if is_move {
        for &i in &idx {
            batch = batch.expunge(user.clone(), view.folder.clone(), view.msgs[i].uid);
        }
    }
    for &i in &idx {
        let m = &view.msgs[i];
        let d = Delivery {
            mailbox: user.clone(),
            folder: dest.clone(),
            blob: Blob {
                id: m.blob.clone(),
                size: m.size,
            },
            flags: m.flags.clone(),
            internal_date: m.internal_date,
            enforce_quota: true,
            facts: None,
            archive: false,
        };
        batch = batch.deliver(d);
    }
    let applied = match store.commit(batch) {
        Ok(a) => a,
        Err(e) => return out.extend(no(tag, &e)),
    };
    let src: Vec<u32> = idx.iter().map(|&i| view.msgs[i].uid).collect();
    let dst: Vec<u32> = applied.delivered.iter().map(|d| d.uid).collect();
    let code = format!(
        "[COPYUID {} {} {}]",
        dest_info.uidvalidity,
        compact_set(&src),
        compact_set(&dst)
    );
    if is_move {
        out.extend(format!("* OK {code} Moved\r\n").into_bytes());
        view.remove(&src, out);
        out.extend(tagged(tag, "OK", "MOVE completed"));
    } else {
        if dest == view.folder {
            let _ = view.refresh(store, user, out);
        }
        out.extend(tagged(tag, "OK", &format!("{code} COPY completed")));
    }
}

/// Writes `* n FETCH (...)` for one message.
fn fetch_one(
    store: &Store,
    m: &crate::store::MessageRecord,
    seq: usize,
    items: &[MessageDataItemName<'_>],
    with_flags: bool,
    out: &mut Vec<u8>,
) -> Result<(), crate::store::StoreError> {
    let needs_body = items.iter().any(|i| {
        !matches!(
            i,
            MessageDataItemName::Flags
                | MessageDataItemName::Uid
                | MessageDataItemName::InternalDate
                | MessageDataItemName::Rfc822Size
        )
    });
    let bytes = if needs_body {
        store.blobs().read(&m.blob)?
    } else {
        Vec::new()
    };
    let mut tree: Option<Part> = None;
    // Written straight into `out`: the message is not copied once more.
    let mut o = Out(std::mem::take(out));
    o.raw(&format!("* {seq} FETCH ("));
    let mut first = true;
    let mut sep = |o: &mut Out| {
        if !first {
            o.raw(" ");
        }
        first = false;
    };
    if with_flags && !items.contains(&MessageDataItemName::Flags) {
        sep(&mut o);
        o.raw(&format!("FLAGS {}", flag_list(&m.flags)));
    }
    for item in items {
        sep(&mut o);
        match item {
            MessageDataItemName::Flags => {
                o.raw(&format!("FLAGS {}", flag_list(&m.flags)));
            }
            MessageDataItemName::Uid => {
                o.raw(&format!("UID {}", m.uid));
            }
            MessageDataItemName::InternalDate => {
                o.raw(&format!("INTERNALDATE {}", date_time(m.internal_date)));
            }
            MessageDataItemName::Rfc822Size => {
                o.raw(&format!("RFC822.SIZE {}", bytes_len(m, &bytes)));
            }
            MessageDataItemName::Envelope => {
                let t = tree.get_or_insert_with(|| mime::parse(&bytes));
                o.raw("ENVELOPE ");
                mime::write_envelope(&bytes, t, &mut o);
            }
            MessageDataItemName::BodyStructure | MessageDataItemName::Body => {
                let t = tree.get_or_insert_with(|| mime::parse(&bytes));
                let ext = matches!(item, MessageDataItemName::BodyStructure);
                o.raw(if ext { "BODYSTRUCTURE " } else { "BODY " });
                t.write_structure(&bytes, &mut o, ext);
            }
            MessageDataItemName::Rfc822 => {
                o.raw("RFC822 ").literal(&bytes);
            }
            MessageDataItemName::Rfc822Header => {
                let t = tree.get_or_insert_with(|| mime::parse(&bytes));
                o.raw("RFC822.HEADER ").literal(&bytes[t.start..t.body]);
            }
            MessageDataItemName::Rfc822Text => {
                let t = tree.get_or_insert_with(|| mime::parse(&bytes));
                o.raw("RFC822.TEXT ").literal(&bytes[t.body..t.end]);
            }
            MessageDataItemName::BodyExt {
                section, partial, ..
            } => {
                let t = tree.get_or_insert_with(|| mime::parse(&bytes));
                let data = section_bytes(&bytes, t, section.as_ref());
                let label = section_label(section.as_ref());
                match partial {
                    Some((start, len)) => {
                        let s = (*start as usize).min(data.len());
                        let e = s.saturating_add(len.get() as usize).min(data.len());
                        o.raw(&format!("BODY[{label}]<{start}> "))
                            .literal(&data[s..e]);
                    }
                    None => {
                        o.raw(&format!("BODY[{label}] ")).literal(&data);
                    }
                }
            }
            _ => {
                o.raw("NIL NIL");
            }
        }
    }
    o.raw(")").crlf();
    *out = o.0;
    Ok(())
}

fn bytes_len(m: &crate::store::MessageRecord, bytes: &[u8]) -> u64 {
    if bytes.is_empty() {
        m.size
    } else {
        bytes.len() as u64
    }
}

fn part_path(p: &imap_codec::imap_types::fetch::Part) -> Vec<u32> {
    p.0.as_ref().iter().map(|n| n.get()).collect()
}

/// The bytes a section names; a section naming no part is empty.
/// Borrowed from the message except for HEADER.FIELDS, so a body fetch does not copy it.
fn section_bytes<'m>(msg: &'m [u8], t: &Part, section: Option<&Section<'_>>) -> Cow<'m, [u8]> {
    let range = |p: Option<&Part>, header: bool| -> Cow<'m, [u8]> {
        let r = match p {
            Some(p) if header => p.start..p.body,
            Some(p) => p.body..p.end,
            None => 0..0,
        };
        Cow::Borrowed(msg.get(r).unwrap_or_default())
    };
    match section {
        None => Cow::Borrowed(msg),
        Some(Section::Part(p)) => range(t.resolve(&part_path(p)), false),
        Some(Section::Header(p)) => range(
            t.message_at(&p.as_ref().map(part_path).unwrap_or_default()),
            true,
        ),
        Some(Section::Text(p)) => range(
            t.message_at(&p.as_ref().map(part_path).unwrap_or_default()),
            false,
        ),
        Some(Section::Mime(p)) => range(t.resolve(&part_path(p)), true),
        Some(Section::HeaderFields(p, names)) | Some(Section::HeaderFieldsNot(p, names)) => {
            let not = matches!(section, Some(Section::HeaderFieldsNot(..)));
            let Some(m) = t.message_at(&p.as_ref().map(part_path).unwrap_or_default()) else {
                return Cow::Borrowed(&[]);
            };
            let wanted: Vec<String> = names
                .as_ref()
                .iter()
                .map(|n| String::from_utf8_lossy(n.as_ref()).to_ascii_lowercase())
                .collect();
            let mut v = Vec::new();
            for (name, _, r) in mime::fields(msg, m.start, m.body) {
                if wanted.contains(&name) != not {
                    v.extend_from_slice(&msg[r]);
                }
            }
            v.extend_from_slice(b"\r\n");
            Cow::Owned(v)
        }
    }
}

/// The section as the response names it (RFC 3501 §7.4.2 `section`).
fn section_label(section: Option<&Section<'_>>) -> String {
    let path = |p: &imap_codec::imap_types::fetch::Part| {
        part_path(p)
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(".")
    };
    let prefixed = |p: &Option<imap_codec::imap_types::fetch::Part>, s: &str| match p {
        Some(p) => format!("{}.{s}", path(p)),
        None => s.to_string(),
    };
    let list =
        |names: &imap_codec::imap_types::core::Vec1<imap_codec::imap_types::core::AString<'_>>| {
            names
                .as_ref()
                .iter()
                .map(|n| String::from_utf8_lossy(n.as_ref()).to_ascii_uppercase())
                .collect::<Vec<_>>()
                .join(" ")
        };
    match section {
        None => String::new(),
        Some(Section::Part(p)) => path(p),
        Some(Section::Header(p)) => prefixed(p, "HEADER"),
        Some(Section::Text(p)) => prefixed(p, "TEXT"),
        Some(Section::Mime(p)) => format!("{}.MIME", path(p)),
        Some(Section::HeaderFields(p, n)) => prefixed(p, &format!("HEADER.FIELDS ({})", list(n))),
        Some(Section::HeaderFieldsNot(p, n)) => {
            prefixed(p, &format!("HEADER.FIELDS.NOT ({})", list(n)))
        }
    }
}

#[cfg(test)]
mod tests {
    //! `\Seen` of a streamed FETCH while another session works on the same folder.

    use super::super::Limits;
    use super::super::session::{Action, Session};
    use super::super::session_tests::{drive, store_with};
    use crate::pec::address::PecAddress;
    use crate::store::{Batch, Delivery, Store};

    const USER: &str = "a@pec.test";

    /// Six messages of 40 kB: a step answers two of them.
    fn mailbox() -> (tempfile::TempDir, Store) {
        let (d, store) = store_with(&[USER]);
        for i in 1..=6 {
            let mut m = format!("Subject: m{i}\r\n\r\n").into_bytes();
            m.resize(40_000, b'x');
            let blob = store.blobs().put(&m).expect("blob");
            let to = PecAddress::parse(USER).expect("address");
            store
                .commit(Batch::new().deliver(Delivery::inbox(to, blob, jiff::Timestamp::now())))
                .expect("deliver");
        }
        (d, store)
    }

    fn selected(store: &Store) -> Session {
        let mut s = Session::new(Limits::default(), true);
        let out = drive(
            &mut s,
            store,
            b"1 LOGIN a@pec.test pw\r\n2 SELECT INBOX\r\n",
        );
        let out = String::from_utf8_lossy(&out);
        assert!(out.contains("\r\n2 OK [READ-WRITE]"), "{out}");
        s
    }

    /// Starts `FETCH 1:* BODY[]` and runs its first step; returns that step's output.
    fn start_fetch(s: &mut Session, store: &Store) -> Vec<u8> {
        s.feed(b"3 FETCH 1:* BODY[]\r\n");
        assert!(matches!(s.next(), Action::Execute));
        s.execute(store);
        s.take_output()
    }

    /// Runs the remaining steps; returns their output.
    fn finish_fetch(s: &mut Session, store: &Store) -> Vec<u8> {
        let mut all = Vec::new();
        loop {
            let a = s.next();
            all.extend(s.take_output());
            match a {
                Action::Execute => s.execute(store),
                Action::NeedInput => return all,
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// UID → flags as stored.
    fn stored(store: &Store) -> Vec<(u32, Vec<String>)> {
        let a = PecAddress::parse(USER).expect("address");
        let mut v: Vec<_> = store
            .messages(&a, "INBOX")
            .expect("messages")
            .into_iter()
            .map(|m| (m.uid, m.flags))
            .collect();
        v.sort();
        v
    }

    fn has(flags: &[String], f: &str) -> bool {
        flags.iter().any(|x| x == f)
    }

    fn fetched(out: &[u8]) -> usize {
        out.windows(14).filter(|w| w == b" FETCH (FLAGS ").count()
    }

    #[test]
    fn flags_set_by_another_session_during_a_fetch_stay() {
        let (_d, store) = mailbox();
        let mut s = selected(&store);
        let first = start_fetch(&mut s, &store);
        assert_eq!(fetched(&first), 2, "one step answers two messages");
        // The first step's messages are \Seen as soon as the step is answered.
        let now = stored(&store);
        assert!(
            has(&now[0].1, "\\Seen") && has(&now[1].1, "\\Seen"),
            "{now:?}"
        );
        assert!(!has(&now[2].1, "\\Seen"), "{now:?}");

        // Meanwhile another client deletes a message already fetched and flags one not
        // fetched yet.
        let mut other = selected(&store);
        let out = drive(
            &mut other,
            &store,
            b"3 STORE 1 +FLAGS (\\Deleted)\r\n4 STORE 5 +FLAGS (\\Flagged)\r\n",
        );
        assert!(out.ends_with(b"4 OK STORE completed\r\n"), "{out:?}");

        let rest = finish_fetch(&mut s, &store);
        assert!(rest.ends_with(b"3 OK FETCH completed\r\n"));
        assert_eq!(fetched(&rest), 4);
        let end = stored(&store);
        assert!(end.iter().all(|(_, f)| has(f, "\\Seen")), "{end:?}");
        assert!(
            has(&end[0].1, "\\Deleted"),
            "the other client's \\Deleted was undone: {end:?}"
        );
        assert!(
            has(&end[4].1, "\\Flagged"),
            "the other client's \\Flagged was undone: {end:?}"
        );
    }

    #[test]
    fn a_message_expunged_during_a_fetch_does_not_fail_it() {
        let (_d, store) = mailbox();
        let mut s = selected(&store);
        start_fetch(&mut s, &store);
        // Another session expunges message 4, which this FETCH answers in its next step.
        let mut other = selected(&store);
        let out = drive(
            &mut other,
            &store,
            b"3 STORE 4 +FLAGS (\\Deleted)\r\n4 EXPUNGE\r\n",
        );
        assert!(
            out.ends_with(b"4 OK EXPUNGE completed\r\n"),
            "{:?}",
            String::from_utf8_lossy(&out)
        );

        let rest = finish_fetch(&mut s, &store);
        assert!(
            rest.ends_with(b"3 OK FETCH completed\r\n"),
            "{:?}",
            String::from_utf8_lossy(&rest[rest.len().saturating_sub(200)..])
        );
        let end = stored(&store);
        assert_eq!(end.iter().map(|m| m.0).collect::<Vec<_>>(), [1, 2, 3, 5, 6]);
        assert!(end.iter().all(|(_, f)| has(f, "\\Seen")), "{end:?}");
    }

    #[test]
    fn a_disconnect_keeps_the_seen_of_what_was_sent() {
        let (_d, store) = mailbox();
        let mut s = selected(&store);
        start_fetch(&mut s, &store);
        drop(s);
        let end = stored(&store);
        let seen: Vec<bool> = end.iter().map(|(_, f)| has(f, "\\Seen")).collect();
        assert_eq!(seen, [true, true, false, false, false, false]);
    }
}
