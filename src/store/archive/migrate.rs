//! The schema-4 migration (issue #10): the security archive's name became reserved, so a
//! folder a user made under it before is moved out of its way at the first open.
//!
//! Distrusts: the folders and counters of a store written by older code (names in any
//! case, archive copies and user messages side by side); never overwrites a folder.

use jiff::Timestamp;

use super::super::changes::{ChangeSet, Kind};
use super::super::mailbox::MailboxRecord;
use super::super::messages::{FolderInfo, create_folder, decode, folder_key, folder_prefix};
use super::super::tx::{FOLDERS, MAILBOXES, Tx, abort, get_json, put_json};
use super::super::{StoreError, Trees};
use super::{ARCHIVE, RECEIVED, SENT, is_archive};

/// Where the schema-4 migration puts a folder a user made at or under [`ARCHIVE`] before
/// the name was reserved (`… (personale 2)` and so on when that is taken too).
pub const USER_ROOT: &str = "Archivio di sicurezza (personale)";

/// Migration to schema 4, where [`ARCHIVE`] became reserved: a folder a user made at or
/// under that name (any case) would otherwise turn read-only, its messages counted in
/// neither the mailbox nor the archive correctly. Each is renamed under [`USER_ROOT`]
/// (each spelling of the prefix under a root of its own: `… (personale 2)` and so on),
/// its messages, uids, flags and subscription going with it as in an IMAP RENAME, and
/// the JMAP change log records it. The archive's own folders stay: the root the archive
/// code made (its id carries the top bit, see [`apply_copy`]), [`RECEIVED`] and [`SENT`]
/// made with or after it (or, without such a root, while their messages are exactly the
/// mailbox's archived count); a kept child whose root was the user's gets a new root.
/// Then the mailbox's usage and the archive's are counted again from the folders, so
/// whatever was moved is counted where it now is. Idempotent (what it renames is no
/// longer under [`ARCHIVE`]), so a migration interrupted by a crash is done again at the
/// next open. Returns the folders renamed.
pub(crate) fn migrate_user_folders(
    db: &super::super::kv::Db,
    trees: &Trees,
    now: Timestamp,
) -> Result<u64, StoreError> {
    const MARK: u64 = 1 << 63;
    let all = super::super::tx::all_trees(trees);
    let mut renamed = 0;
    for kv in trees.mailboxes.iter() {
        let (k, v) = kv?;
        let mbkey = String::from_utf8_lossy(&k).into_owned();
        let mb: MailboxRecord = decode("mailbox", &v)?;
        let mut names = std::collections::BTreeSet::new();
        let mut under = Vec::new();
        // What stays outside the archive, counted for the mailbox's usage below.
        let (mut usage, mut messages) = (0, 0);
        for fv in trees.folders.scan_prefix(folder_prefix(&mbkey)) {
            let (_, fv) = fv?;
            let f: FolderInfo = decode("folder", &fv)?;
            names.insert(f.name.to_lowercase());
            if !is_archive(&f.name) {
                usage += f.bytes;
                messages += f.messages;
            }
            if is_archive(&f.name) {
                under.push(f);
            }
        }
        // The root the archive code made, and the id its first child got with it.
        let since = under
            .iter()
            .find(|f| f.name == ARCHIVE && f.id & MARK != 0)
            .map(|f| f.id ^ MARK);
        let archived: u64 = under
            .iter()
            .filter(|f| f.name == RECEIVED || f.name == SENT)
            .map(|f| f.messages)
            .sum();
        let own = |f: &FolderInfo| match since {
            Some(base) => {
                (f.name == ARCHIVE && f.id & MARK != 0)
                    || ((f.name == RECEIVED || f.name == SENT) && f.id >= base)
            }
            None => {
                (f.name == ARCHIVE && f.messages == 0)
                    || ((f.name == RECEIVED || f.name == SENT)
                        && mb.archive_messages > 0
                        && archived == mb.archive_messages)
            }
        };
        let (kept, moved): (Vec<FolderInfo>, Vec<FolderInfo>) =
            under.into_iter().partition(|f| own(f));
        if moved.is_empty() {
            continue;
        }
        // Usage counted again where each message now is.
        for f in &moved {
            usage += f.bytes;
            messages += f.messages;
        }
        let a_usage: u64 = kept.iter().map(|f| f.bytes).sum();
        let a_messages: u64 = kept.iter().map(|f| f.messages).sum();
        // Each spelling of the prefix gets the first root under which nothing collides.
        let mut roots: std::collections::BTreeMap<String, String> = Default::default();
        let mut taken = names.clone();
        for f in &moved {
            let spelling = f.name[..ARCHIVE.len()].to_string();
            if roots.contains_key(&spelling) {
                continue;
            }
            // `taken` is finite: among its len + 1 candidates one is free.
            let Some(root) = (1..=taken.len() + 1)
                .map(|n| match n {
                    1 => USER_ROOT.to_string(),
                    n => format!("Archivio di sicurezza (personale {n})"),
                })
                .find(|root| {
                    let r = root.to_lowercase();
                    taken
                        .iter()
                        .all(|n| !(*n == r || n.starts_with(&format!("{r}/"))))
                })
            else {
                return Err(StoreError::FolderExists {
                    mailbox: mbkey,
                    folder: USER_ROOT.into(),
                });
            };
            taken.insert(root.to_lowercase());
            roots.insert(spelling, root);
        }
        let target = |name: &str| {
            format!(
                "{}{}",
                roots[&name[..ARCHIVE.len()]],
                &name[ARCHIVE.len()..]
            )
        };
        let mut new_roots: Vec<(String, u64)> = Vec::new();
        for root in roots.values() {
            if !moved.iter().any(|f| target(&f.name) == *root) {
                new_roots.push((root.clone(), db.generate_id()?));
            }
        }
        // A kept child whose root was the user's (now moved) needs the archive's root back.
        let archive_root = (!kept.is_empty() && !kept.iter().any(|f| f.name == ARCHIVE))
            .then(|| db.generate_id().map(|id| id | MARK))
            .transpose()?;
        let res = db.transaction(&all, |t| {
            let tx = Tx {
                t,
                tail: None,
                floors: None,
            };
            let mut log = ChangeSet::default();
            for f in &moved {
                let mut f = f.clone();
                let to = target(&f.name);
                if tx.t[FOLDERS].get(folder_key(&mbkey, &to))?.is_some() {
                    // Never overwrite a folder: refuse to open rather than lose one.
                    return abort(StoreError::FolderExists {
                        mailbox: mbkey.clone(),
                        folder: to,
                    });
                }
                tx.t[FOLDERS].remove(folder_key(&mbkey, &f.name))?;
                f.name = to;
                put_json(&tx.t[FOLDERS], &folder_key(&mbkey, &f.name), &f)?;
                log.touch(&mbkey).folder(f.id, Kind::Updated);
            }
            for (root, id) in &new_roots {
                // The hierarchy keeps a parent (as IMAP CREATE of a child would make).
                let r = create_folder(&tx, &mbkey, root, *id, now, true)?;
                log.touch(&mbkey).folder(r.id, Kind::Created);
            }
            if let Some(id) = archive_root {
                create_folder(&tx, &mbkey, ARCHIVE, id, now, true)?;
            }
            let Some(mut rec) = get_json::<MailboxRecord>(&tx.t[MAILBOXES], mbkey.as_bytes())?
            else {
                return Ok(());
            };
            (rec.usage_bytes, rec.messages) = (usage, messages);
            (rec.archive_usage, rec.archive_messages) = (a_usage, a_messages);
            put_json(&tx.t[MAILBOXES], mbkey.as_bytes(), &rec)?;
            log.write(&tx)?;
            Ok(())
        });
        res?;
        for f in &moved {
            tracing::warn!(mailbox = %mbkey, from = %f.name, to = %target(&f.name), "a folder named like the security archive was renamed: the name is reserved");
        }
        renamed += moved.len() as u64;
    }
    Ok(renamed)
}
