//! Blobs just written that a queue worker is about to read back: the transport envelope
//! an acceptance queued for the relay (or for the local delivery point), a receipt queued
//! for the other provider. The worker takes the bytes from here instead of opening the
//! file on the blocking pool (one hand-off, an `openat`, a read and a close fewer per
//! message relayed).
//!
//! What it owns: a map of blob id → bytes, bounded in total bytes and in the size of one
//! entry; the oldest entries go first when a new one does not fit. An entry is removed
//! when it is taken, so in steady state it holds only what the queue has not reached
//! yet. What it must distrust: nothing outside the process reaches it, but it relies on
//! its callers to hand over a blob with its own bytes (checked in debug builds, and by
//! size always): the relay sends what it takes from here. A blob id is the SHA-256 of the
//! blob's exact bytes, so an entry is the blob's content whatever happened to the commit
//! that was to refer to it (an entry whose commit failed is never taken and ages out). It
//! is a cache, never the record: the store holds every blob durably before any queue item
//! refers to it, and a miss reads the file.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use crate::store::{Blob, BlobId};

/// Total bytes held at most. The e2e benchmark's backlog between acceptance and relay
/// (about 3 s of 300 messages/s of 14 KB envelopes) is ~13 MB.
pub const RECENT_MAX_BYTES: usize = 32 << 20;
/// Larger blobs are not held: the worker streams or reads them from the store.
pub const RECENT_MAX_ENTRY: usize = 1 << 20;

/// See the module doc.
pub struct RecentBlobs {
    max_bytes: usize,
    max_entry: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    bytes: usize,
    /// Each entry with the number of its `keep`.
    map: HashMap<BlobId, (Arc<Vec<u8>>, u64)>,
    /// Insertion order, with the number of the `keep`: an id whose entry was taken (or
    /// taken and kept again since) is skipped when it comes up.
    order: VecDeque<(BlobId, u64)>,
    kept: u64,
    taken: u64,
}

impl Default for RecentBlobs {
    fn default() -> Self {
        Self::new(RECENT_MAX_BYTES, RECENT_MAX_ENTRY)
    }
}

impl RecentBlobs {
    pub fn new(max_bytes: usize, max_entry: usize) -> Self {
        Self {
            max_bytes,
            max_entry: max_entry.min(max_bytes),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Holds `bytes`, the content of `blob`, for a worker to take; too large a blob is
    /// not held. Older entries make room.
    pub fn keep(&self, blob: &Blob, bytes: Arc<Vec<u8>>) {
        let len = bytes.len();
        if len > self.max_entry || blob.size != len as u64 {
            return;
        }
        debug_assert_eq!(BlobId::of(&bytes), blob.id, "a blob kept with other bytes");
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.map.contains_key(&blob.id) {
            return;
        }
        while inner.bytes + len > self.max_bytes {
            let Some((old, n)) = inner.order.pop_front() else {
                break;
            };
            if inner.map.get(&old).is_some_and(|(_, m)| *m == n)
                && let Some((gone, _)) = inner.map.remove(&old)
            {
                inner.bytes -= gone.len();
            }
        }
        inner.kept += 1;
        let n = inner.kept;
        inner.bytes += len;
        inner.map.insert(blob.id.clone(), (bytes, n));
        inner.order.push_back((blob.id.clone(), n));
        // Ids of taken entries stay in `order` until they come up; keep it from growing
        // past the live entries by more than their number.
        if inner.order.len() > 2 * inner.map.len() + 64 {
            let Inner { map, order, .. } = &mut *inner;
            order.retain(|(id, n)| map.get(id).is_some_and(|(_, m)| m == n));
        }
    }

    /// The bytes of `id`, if held; the entry is gone afterwards.
    pub fn take(&self, id: &BlobId) -> Option<Arc<Vec<u8>>> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (bytes, _) = inner.map.remove(id)?;
        inner.bytes -= bytes.len();
        inner.taken += 1;
        Some(bytes)
    }

    /// Blobs taken from here so far (reads of a file saved).
    pub fn taken(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).taken
    }

    /// Bytes held now.
    pub fn held_bytes(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(bytes: &[u8]) -> (Blob, Arc<Vec<u8>>) {
        (
            Blob {
                id: BlobId::of(bytes),
                size: bytes.len() as u64,
            },
            Arc::new(bytes.to_vec()),
        )
    }

    #[test]
    fn a_kept_blob_is_taken_once() {
        let r = RecentBlobs::new(1000, 100);
        let (b, bytes) = blob(b"envelope");
        r.keep(&b, bytes);
        assert_eq!(
            r.take(&b.id).as_deref().map(Vec::as_slice),
            Some(&b"envelope"[..])
        );
        assert!(r.take(&b.id).is_none(), "taken: gone");
        assert_eq!(r.held_bytes(), 0);
        assert_eq!(r.taken(), 1);
    }

    #[test]
    fn the_total_stays_bounded_and_the_oldest_go_first() {
        let r = RecentBlobs::new(250, 100);
        let blobs: Vec<_> = (0..10u8).map(|i| blob(&[i; 100])).collect();
        for (b, bytes) in &blobs {
            r.keep(b, bytes.clone());
            assert!(r.held_bytes() <= 250);
        }
        // Room for two of 100 bytes: the last two are held, the others aged out.
        assert!(r.take(&blobs[7].0.id).is_none());
        assert!(r.take(&blobs[8].0.id).is_some());
        assert!(r.take(&blobs[9].0.id).is_some());
        // Too large for one entry: not held.
        let (big, bytes) = blob(&[1; 101]);
        r.keep(&big, bytes);
        assert!(r.take(&big.id).is_none());
        // A size that is not the content's: not held.
        let (mut odd, bytes) = blob(b"x");
        odd.size = 2;
        r.keep(&odd, bytes);
        assert!(r.take(&odd.id).is_none());
    }

    #[test]
    fn an_entry_kept_again_after_it_was_taken_keeps_its_new_place() {
        let r = RecentBlobs::new(200, 100);
        let (a, a_bytes) = blob(&[1; 100]);
        let (b, b_bytes) = blob(&[2; 100]);
        r.keep(&a, a_bytes.clone());
        assert!(r.take(&a.id).is_some());
        r.keep(&b, b_bytes);
        // `a` again, newer than `b`: its old place in the order must not evict it.
        r.keep(&a, a_bytes);
        let (c, c_bytes) = blob(&[3; 100]);
        r.keep(&c, c_bytes);
        assert!(r.take(&b.id).is_none(), "the oldest live entry made room");
        assert!(
            r.take(&a.id).is_some(),
            "the entry kept again is still held"
        );
        assert!(r.take(&c.id).is_some());
    }

    #[test]
    fn taken_entries_do_not_pile_up_in_the_order() {
        let r = RecentBlobs::new(1 << 20, 100);
        for i in 0..10_000u32 {
            let (b, bytes) = blob(&i.to_be_bytes());
            r.keep(&b, bytes);
            assert!(r.take(&b.id).is_some());
        }
        // Nothing panicked while holding the lock in this test: it is not poisoned.
        let inner = r.inner.lock().unwrap();
        assert!(
            inner.order.len() <= 64 + 1,
            "{} ids kept",
            inner.order.len()
        );
        assert_eq!(inner.bytes, 0);
    }
}
