//! The stored keys of two trees that grow with every message, and their migration from
//! the forms of schema 5 and older:
//!
//! - `idem` (idempotency claims, [`super::Batch::claim`]): the key is `0x00` followed by
//!   the first 16 bytes of the SHA-256 of the claim text (17 bytes; the texts, such as
//!   `deliver:IDENT:ADDRESS`, were 60–100). A claim is only ever tested for presence, so
//!   the text is not needed back; 128 bits leave a collision (which would make a claim
//!   look taken) out of reach. Older stores keyed claims by their text, which never
//!   starts with `0x00`.
//! - `blobrefs` (reference counts of blob bodies): the key is the blob's 32-byte SHA-256
//!   ([`BlobId::raw`]), not its 64 hex digits.
//!
//! [`migrate`] rewrites the keys of an older store in place at open, in chunks, each
//! chunk one atomic batch (a new key in, its old key out), so an interrupted migration is
//! simply continued at the next open. What it must distrust: the stored keys (a key of
//! neither form is left alone and reported by the readers that meet it).

use openssl::sha::sha256;

use super::kv::{Batch, Tree};
use super::{BlobId, StoreError, Trees};

/// Keys rewritten per atomic batch by [`migrate`].
const CHUNK: usize = 10_000;

/// The `idem` key of the claim `text`.
pub(crate) fn claim_key(text: &str) -> [u8; 17] {
    let digest = sha256(text.as_bytes());
    let mut k = [0u8; 17];
    k[1..].copy_from_slice(&digest[..16]);
    k
}

/// The `blobrefs` key of `id`.
pub(crate) fn blobref_key(id: &BlobId) -> [u8; 32] {
    id.raw()
}

/// Rewrites the keys of the older forms in `idem` and `blobrefs`; returns how many.
pub(crate) fn migrate(trees: &Trees) -> Result<u64, StoreError> {
    Ok(migrate_claims(&trees.idem)? + migrate_blobrefs(&trees.blobrefs)?)
}

fn migrate_claims(idem: &Tree) -> Result<u64, StoreError> {
    // A claim is only tested for presence: either value will do.
    rewrite(
        idem,
        |k| (k.first() != Some(&0)).then(|| claim_key(&String::from_utf8_lossy(k)).to_vec()),
        |_, old| old.to_vec(),
    )
}

fn migrate_blobrefs(blobrefs: &Tree) -> Result<u64, StoreError> {
    // Counts under both forms (which only a store written by two versions at once can
    // hold) are added up, so that no reference is lost.
    rewrite(
        blobrefs,
        |k| {
            let hex = std::str::from_utf8(k).ok()?;
            Some(blobref_key(&BlobId::parse(hex).ok()?).to_vec())
        },
        |new, old| {
            let n = new.map_or(0, super::tx::be_u64);
            n.saturating_add(super::tx::be_u64(old))
                .to_be_bytes()
                .to_vec()
        },
    )
}

/// Replaces each key for which `new_key` gives a new one, its value `merge(value
/// already under the new key, its own)`. The scan goes on after the last key replaced
/// (new keys met on the way are not replaced again), so the whole tree is read once.
fn rewrite(
    tree: &Tree,
    new_key: impl Fn(&[u8]) -> Option<Vec<u8>>,
    merge: impl Fn(Option<&[u8]>, &[u8]) -> Vec<u8>,
) -> Result<u64, StoreError> {
    use std::ops::Bound::{Excluded, Unbounded};
    let mut done = 0;
    let mut after: Option<Vec<u8>> = None;
    loop {
        let mut batch = Batch::default();
        let mut n = 0;
        let scan = match after.take() {
            None => tree.iter(),
            Some(k) => tree.range::<Vec<u8>, _>((Excluded(k), Unbounded)),
        };
        for kv in scan {
            let (k, v) = kv?;
            if let Some(new) = new_key(&k) {
                let there = tree.get(&new)?;
                batch.insert(new, merge(there.as_deref(), &v));
                batch.remove(k.to_vec());
                n += 1;
                if n == CHUNK {
                    after = Some(k.to_vec());
                    break;
                }
            }
        }
        if n > 0 {
            tree.apply_batch(batch)?;
            done += n as u64;
        }
        if after.is_none() {
            return Ok(done);
        }
    }
}

#[cfg(test)]
mod tests {
    //! Unit tests: their unwraps see only values built here.
    use super::*;

    #[test]
    fn a_claim_key_is_short_and_never_a_text_key() {
        let k = claim_key("deliver:opec.1@pec.x.it:bob@pec.y.it");
        assert_eq!(k.len(), 17);
        assert_eq!(k[0], 0);
        assert_ne!(k, claim_key("deliver:opec.1@pec.x.it:bob@pec.y.iT"));
        let id = BlobId::of(b"body");
        assert_eq!(hex::encode(blobref_key(&id)), id.as_str());
    }

    /// A store written with the keys of schema 5: claim texts, hex blob ids in
    /// `blobrefs` and in the email index.
    #[test]
    fn the_keys_of_a_schema_5_store_are_rewritten_at_open_and_mean_the_same() {
        use crate::pec::address::PecAddress;
        use crate::store::mailbox::Password;
        use crate::store::{Batch, Delivery, NewMailbox, SCHEMA_KEY, Store, StoreOptions};

        let dir = tempfile::tempdir().unwrap();
        let open = || Store::open(dir.path(), StoreOptions::default()).unwrap();
        let a = PecAddress::parse("keys@example.it").unwrap();
        let claims: Vec<String> = (0..25).map(|i| format!("deliver:opec.{i}:{a}")).collect();
        let (body, refs);
        {
            let s = open();
            s.add_mailbox(NewMailbox {
                address: a.clone(),
                password: Password::new("pw"),
                quota_bytes: None,
                options: Default::default(),
                provisional: false,
            })
            .unwrap();
            body = s.blobs().put(b"the body").unwrap();
            let t0 = jiff::Timestamp::UNIX_EPOCH;
            let mut b = Batch::new();
            for _ in 0..2 {
                b = b.deliver(Delivery::inbox(a.clone(), body.clone(), t0));
            }
            for c in &claims {
                b = b.claim(c.clone());
            }
            s.commit(b).unwrap();
            refs = s.blob_refs(&body.id).unwrap();
            assert!(refs >= 2, "{refs}");
            let t = s.trees();
            // Back to the older forms.
            for c in &claims {
                let v = t.idem.get(claim_key(c)).unwrap().unwrap();
                t.idem.remove(claim_key(c)).unwrap();
                t.idem.insert(c.as_bytes(), v).unwrap();
            }
            let v = t.blobrefs.get(blobref_key(&body.id)).unwrap().unwrap();
            t.blobrefs.remove(blobref_key(&body.id)).unwrap();
            t.blobrefs.insert(body.id.as_str(), v).unwrap();
            t.email_index.clear().unwrap();
            let mut old_index = crate::store::changes::mailbox_prefix(&a.to_string());
            old_index.extend_from_slice(body.id.as_str().as_bytes());
            t.email_index
                .insert(old_index, &2u32.to_be_bytes())
                .unwrap();
            t.meta.insert(SCHEMA_KEY, &5u32.to_be_bytes()).unwrap();
            s.flush().unwrap();
        }
        let s = open();
        let t = s.trees();
        for kv in t.idem.iter() {
            assert_eq!(kv.unwrap().0.len(), 17);
        }
        assert_eq!(t.idem.len().unwrap(), claims.len());
        for c in &claims {
            assert!(s.is_claimed(c).unwrap(), "{c}");
            let again = s.commit(Batch::new().claim(c.clone()));
            assert!(
                matches!(again, Err(StoreError::AlreadyClaimed(_))),
                "{again:?}"
            );
        }
        assert!(!s.is_claimed("deliver:opec.99").unwrap());
        assert_eq!(s.blob_refs(&body.id).unwrap(), refs);
        let index = s.email_index(&a).unwrap();
        assert_eq!(index.get(&body.id), Some(&2), "{index:?}");
        assert_eq!(index.len(), 1);
        // The body is still referenced: a sweep keeps it.
        s.sweep_blobs(std::time::Duration::ZERO).unwrap();
        assert!(s.blobs().open_blob(&body.id).is_ok());
    }

    fn sled_tree(dir: &std::path::Path, name: &str) -> Tree {
        let db = sled::Config::new().path(dir).open().unwrap();
        crate::store::kv::Db::Sled(db).open_tree(name).unwrap()
    }

    #[test]
    fn a_rewrite_crosses_chunks_reading_the_tree_once() {
        let dir = tempfile::tempdir().unwrap();
        let tree = sled_tree(dir.path(), "idem");
        let n = 2 * CHUNK + 7;
        for i in 0..n {
            tree.insert(format!("claim:{i}"), &[1]).unwrap();
        }
        assert_eq!(migrate_claims(&tree).unwrap(), n as u64);
        assert_eq!(tree.len().unwrap(), n);
        for i in [0, CHUNK - 1, CHUNK, n - 1] {
            assert!(tree.contains_key(claim_key(&format!("claim:{i}"))).unwrap());
        }
        assert_eq!(
            migrate_claims(&tree).unwrap(),
            0,
            "nothing left of the older form"
        );
    }

    /// Raw keys sort anywhere among the hex ones: the cursor must neither skip a hex key
    /// nor rewrite a raw one; a count under both forms is added up.
    #[test]
    fn blob_counts_cross_chunks_and_add_up_when_both_forms_are_there() {
        let dir = tempfile::tempdir().unwrap();
        let tree = sled_tree(dir.path(), "blobrefs");
        let n = 2 * CHUNK + 7;
        let ids: Vec<BlobId> = (0..n).map(|i| BlobId::of(&i.to_be_bytes())).collect();
        for (i, id) in ids.iter().enumerate() {
            tree.insert(id.as_str(), &(i as u64 + 1).to_be_bytes())
                .unwrap();
        }
        // Five blobs also counted under the new form already.
        for id in &ids[..5] {
            tree.insert(blobref_key(id), &10u64.to_be_bytes()).unwrap();
        }
        assert_eq!(migrate_blobrefs(&tree).unwrap(), n as u64);
        assert_eq!(tree.len().unwrap(), n);
        for (i, id) in ids.iter().enumerate() {
            let v = tree.get(blobref_key(id)).unwrap().unwrap();
            let want = i as u64 + 1 + if i < 5 { 10 } else { 0 };
            assert_eq!(crate::store::tx::be_u64(&v), want, "blob {i}");
        }
        assert_eq!(migrate_blobrefs(&tree).unwrap(), 0);
    }
}
