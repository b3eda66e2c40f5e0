//! The write cache: entries that are journaled (or about to be) but not yet in entry logs.
//!
//! Two generations: `active` takes new adds; when the flusher starts, `active` becomes the
//! read-only `flushing` snapshot and a fresh `active` begins. Reads look in both. The
//! flusher writes the snapshot sorted by (ledger, entry) — the maps are ordered for that
//! reason — and drops it once the index points at the entry logs.
//!
//! Invariants: an entry is in the cache before its journal record is submitted, so a
//! checkpoint taken as the journal's durable mark *before* a swap covers only entries in
//! the swapped snapshot. Memory is bounded by `max_bytes` (adds wait for space), give or
//! take the entries in flight at once.

use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// One cached entry.
#[derive(Debug, Clone)]
pub struct CachedEntry {
    pub checksum: u32,
    pub payload: Bytes,
}

/// A generation of cached entries, ordered by ledger then entry.
#[derive(Debug, Default)]
pub struct Generation {
    pub ledgers: BTreeMap<u64, BTreeMap<u64, CachedEntry>>,
    pub bytes: u64,
    /// Highest LAC piggybacked per ledger while this generation was active.
    pub lacs: BTreeMap<u64, u64>,
}

#[derive(Default)]
struct Inner {
    active: Generation,
    flushing: Option<Arc<Generation>>,
}

/// The cache shared by the add path, readers and the flusher.
pub struct WriteCache {
    inner: Mutex<Inner>,
    space: Notify,
    max_bytes: u64,
}

impl WriteCache {
    pub fn new(max_bytes: u64) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            space: Notify::new(),
            max_bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("write cache lock")
    }

    /// Bytes held by both generations.
    pub fn bytes(&self) -> u64 {
        let g = self.lock();
        g.active.bytes + g.flushing.as_ref().map_or(0, |f| f.bytes)
    }

    pub fn active_bytes(&self) -> u64 {
        self.lock().active.bytes
    }

    /// Waits until the cache has room for `len` more bytes. `on_full` is called (once per
    /// wait) so the caller can ask the flusher to make room.
    pub async fn wait_for_space(&self, len: u64, on_full: impl Fn()) {
        loop {
            let notified = self.space.notified();
            {
                let g = self.lock();
                let used = g.active.bytes + g.flushing.as_ref().map_or(0, |f| f.bytes);
                if used + len <= self.max_bytes || used == 0 {
                    return;
                }
            }
            on_full();
            notified.await;
        }
    }

    /// Inserts an entry (replacing one with the same id: the last write wins, as in
    /// BookKeeper).
    pub fn insert(&self, ledger: u64, entry: u64, checksum: u32, payload: Bytes, lac: Option<u64>) {
        let mut g = self.lock();
        let len = payload.len() as u64;
        let old = g
            .active
            .ledgers
            .entry(ledger)
            .or_default()
            .insert(entry, CachedEntry { checksum, payload });
        g.active.bytes = g.active.bytes + len - old.map_or(0, |o| o.payload.len() as u64);
        if let Some(lac) = lac {
            let e = g.active.lacs.entry(ledger).or_insert(lac);
            *e = (*e).max(lac);
        }
    }

    pub fn get(&self, ledger: u64, entry: u64) -> Option<CachedEntry> {
        let g = self.lock();
        if let Some(e) = g.active.ledgers.get(&ledger).and_then(|m| m.get(&entry)) {
            return Some(e.clone());
        }
        g.flushing
            .as_ref()
            .and_then(|f| f.ledgers.get(&ledger))
            .and_then(|m| m.get(&entry))
            .cloned()
    }

    /// Highest cached entry of a ledger.
    pub fn last_entry(&self, ledger: u64) -> Option<u64> {
        let g = self.lock();
        let a = g
            .active
            .ledgers
            .get(&ledger)
            .and_then(|m| m.keys().next_back().copied());
        let f = g
            .flushing
            .as_ref()
            .and_then(|f| f.ledgers.get(&ledger))
            .and_then(|m| m.keys().next_back().copied());
        a.max(f)
    }

    /// Starts a flush: `active` becomes the flushing snapshot. Returns `None` if a flush
    /// is already running or there is nothing to flush.
    pub fn swap(&self) -> Option<Arc<Generation>> {
        let mut g = self.lock();
        if g.flushing.is_some() || (g.active.bytes == 0 && g.active.ledgers.is_empty()) {
            return None;
        }
        let snap = Arc::new(std::mem::take(&mut g.active));
        g.flushing = Some(snap.clone());
        Some(snap)
    }

    /// Ends a flush: the snapshot is in entry logs and the index.
    pub fn flushed(&self) {
        self.lock().flushing = None;
        self.space.notify_waiters();
    }

    /// Drops a deleted ledger's entries from the active generation (the flusher skips
    /// deleted ledgers in its snapshot).
    pub fn remove_ledger(&self, ledger: u64) {
        let mut g = self.lock();
        if let Some(m) = g.active.ledgers.remove(&ledger) {
            g.active.bytes -= m.values().map(|e| e.payload.len() as u64).sum::<u64>();
        }
        g.active.lacs.remove(&ledger);
        drop(g);
        self.space.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_see_both_generations_and_swap_orders_entries() {
        let c = WriteCache::new(1 << 20);
        c.insert(2, 1, 0, Bytes::from_static(b"b"), None);
        c.insert(1, 5, 0, Bytes::from_static(b"a"), Some(4));
        let snap = c.swap().unwrap();
        assert!(c.swap().is_none(), "one flush at a time");
        c.insert(1, 6, 0, Bytes::from_static(b"c"), None);
        assert_eq!(&c.get(1, 5).unwrap().payload[..], b"a");
        assert_eq!(&c.get(1, 6).unwrap().payload[..], b"c");
        assert_eq!(c.last_entry(1), Some(6));
        let order: Vec<(u64, u64)> = snap
            .ledgers
            .iter()
            .flat_map(|(l, m)| m.keys().map(move |e| (*l, *e)))
            .collect();
        assert_eq!(order, vec![(1, 5), (2, 1)]);
        assert_eq!(snap.lacs.get(&1), Some(&4));
        c.flushed();
        assert!(c.get(1, 5).is_none());
        assert_eq!(c.bytes(), 1);
    }

    #[tokio::test]
    async fn adds_wait_for_space_until_a_flush_finishes() {
        let c = Arc::new(WriteCache::new(10));
        c.insert(1, 0, 0, Bytes::from(vec![0u8; 8]), None);
        c.swap().unwrap();
        let waiter = {
            let c = c.clone();
            tokio::spawn(async move { c.wait_for_space(5, || {}).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        c.flushed();
        waiter.await.unwrap();
    }
}
