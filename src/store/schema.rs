//! The store's schema version: what each version changed, the check at open (a store
//! of an unknown or newer version is refused before anything is written), and the
//! migrations from older versions, run at open with nobody else writing. What it
//! distrusts: the version and the data it finds (a database without a version but with
//! data, sealed files without a database).

use std::path::Path;

use jiff::Timestamp;

use super::kv::Db;
use super::{StoreError, Trees, archive, changes, flush_durably, keys, sealed};

/// Key of the schema version in the `meta` tree.
pub(crate) const SCHEMA_KEY: &[u8] = b"schema_version";

/// The schema this code reads and writes.
///
/// History: 1 = first release; 2 = the outbound queue's due index is split into a local
/// and a remote lane (a one-byte lane prefix on each due key). A version-1 store is
/// migrated at open (the due index is derived data, rebuilt from the queue items by
/// `queue::open_lanes` on every open) and then marked 2, so an older pecd refuses it
/// instead of misreading the new keys; 3 = the per-mailbox change log and blob index of
/// [`changes`] (JMAP `/changes`). A version-1 or -2 store is migrated at open: the blob
/// index is derived from the message records ([`changes::build_email_index`]), modseqs
/// start at 0 with an empty log; 4 = the security archive's folder names are reserved
/// ([`archive`]): a folder a user made at or under `Archivio di sicurezza` is renamed at
/// open by [`archive::migrate_user_folders`], and the email index is derived again after
/// it; 5 = trace records and message records are written in compact forms
/// ([`crate::trace::stored`], [`super::messages::encode_message`]). The JSON records of an older
/// store stay as they are and are read as before (a message record is rewritten compact
/// at its next change); the mark only makes an older pecd, which cannot read the compact
/// forms, refuse the store; 6 = trace records are written without their seq and
/// `prev_hash` (compact form 2 of [`crate::trace::stored`]) and indexed in one tree of
/// hashed keys (`trace_keys`, [`crate::trace::log`]). What an older store holds of the
/// trace log is read as before (its records in their form, its index entries in the
/// three older trees, which queries still read and purges still clear) and never
/// rewritten. Also in 6: idempotency claims are keyed by a hash of their text and blob
/// reference counts and the email index by the blob's raw digest ([`keys`],
/// [`changes`]); an older store's keys are rewritten at open (the email index rebuilt);
/// 7 = on sled, the trace log's older records are sealed into files beside the database
/// ([`crate::trace::segments`]; marked on PostgreSQL too, where nothing changes, so that
/// an older pecd refuses a sled store whose records it would not find); 8 = the
/// `trace_keys` entries of sealed records are grouped, one per key and segment
/// ([`crate::trace::postings`]), and their `trace_time` entries replaced by one time
/// span per segment ([`crate::trace::spans`]): an older pecd would read a group as one
/// seq and miss the sealed records in time queries. The entries of a schema-7 store's
/// sealed files are grouped at open; 9 = on sled, the `trace_keys` and `trace_time`
/// entries of the records not yet sealed are kept in memory ([`crate::trace::tail`],
/// built at open from the records in the tree) and only their segment's groups and time
/// span are written, at the seal. The entries an older store holds for its unsealed
/// records stay and are read as before (and removed when their segment is grouped):
/// nothing to migrate; the mark makes an older pecd, which would find the records
/// appended since neither by key nor by time, refuse the store (marked on PostgreSQL
/// too, where nothing changes); 10 = on fjall, message bodies of at most 64 KiB staged for
/// a commit are kept in the keyspace ([`super::blobs::keyspace`]), which an older pecd
/// would not look in (and whose partitions it would take for trees of the store): nothing
/// to migrate, the mark makes an older pecd refuse the store (marked on every engine,
/// where nothing else changes).
pub const SCHEMA_VERSION: u32 = 10;
/// Schemas this code can open (older ones are migrated to [`SCHEMA_VERSION`]).
pub const SUPPORTED_SCHEMAS: &[u32] = &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10];

/// Checks the stored schema version; returns it (a new store is created at the current one).
pub(super) fn check_schema(dir: &Path, db: &Db, trees: &Trees) -> Result<u32, StoreError> {
    match trees.meta.get(SCHEMA_KEY)? {
        Some(v) => {
            let found = <[u8; 4]>::try_from(v.as_ref())
                .map(u32::from_be_bytes)
                .map_err(|_| StoreError::Corrupt {
                    what: "schema version".into(),
                    detail: hex::encode(&v),
                })?;
            if !SUPPORTED_SCHEMAS.contains(&found) {
                return Err(StoreError::UnknownSchema {
                    dir: dir.to_path_buf(),
                    found,
                    supported: SUPPORTED_SCHEMAS.to_vec(),
                });
            }
            Ok(found)
        }
        None => {
            if crate::trace::segments::Segments::present(&dir.join("trace")) {
                return Err(StoreError::Corrupt {
                    what: "schema version".into(),
                    detail: format!(
                        "no database, but sealed trace segments in {}: restore the database \
                         with them, or move them away",
                        dir.join("trace").display()
                    ),
                });
            }
            if !trees.mailboxes.is_empty()? || !trees.trace.records.is_empty()? {
                return Err(StoreError::Corrupt {
                    what: "schema version".into(),
                    detail: "data present but no schema version: not a pecd store".into(),
                });
            }
            trees
                .meta
                .insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())?;
            flush_durably(dir, db)?;
            Ok(SCHEMA_VERSION)
        }
    }
}

/// Migrates a store of schema `found` to [`SCHEMA_VERSION`] (nothing when it is
/// current), each step durable before the next, and only then marks it current.
pub(super) fn migrate(
    dir: &Path,
    db: &Db,
    trees: &Trees,
    found: u32,
    now: Timestamp,
) -> Result<(), StoreError> {
    if found < 4 {
        let n = archive::migrate_user_folders(db, trees, now)?;
        // Durable, and visible to what reads next (PostgreSQL groups the moves).
        flush_durably(dir, db)?;
        tracing::info!(
            folders = n,
            "user folders moved out of the security archive's name"
        );
    }
    if found < 6 {
        // After the moves, whose messages are the mailbox's own Emails now; for a
        // schema-2 store this is the schema-3 migration itself, for a schema-3 to -5
        // one the index's keys in their schema-6 form. Idempotent.
        let n = changes::build_email_index(trees)?;
        tracing::info!(mailboxes = n, "email index built from the message records");
        let n = keys::migrate(trees)?;
        flush_durably(dir, db)?;
        tracing::info!(keys = n, "claim and blob reference keys rewritten");
    }
    if found < 8 {
        let n = sealed::group_index_entries(trees)?;
        if n > 0 {
            flush_durably(dir, db)?;
            tracing::info!(files = n, "index entries of sealed trace records grouped");
        }
    }
    if found < 9
        && let Some(sealed) = &trees.trace.sealed
    {
        // The records an older pecd appended have their own index entries in the
        // tree: only the next ones are indexed in memory.
        let last = trees
            .trace
            .records
            .last()?
            .and_then(|(k, _)| crate::trace::log::seq_of_index_key(&k))
            .unwrap_or(0)
            .max(sealed.upto());
        trees.trace.meta.insert(
            crate::trace::tail::FROM_KEY,
            &last.saturating_add(1).to_be_bytes(),
        )?;
    }
    if found != SCHEMA_VERSION {
        // Migrated above: only now may the store say it is of the current version.
        trees
            .meta
            .insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())?;
        flush_durably(dir, db)?;
        tracing::info!(dir = %dir.display(), from = found, to = SCHEMA_VERSION, "store schema migrated");
    }
    Ok(())
}
