//! The read cache of a topic: its newest confirmed entries, so consumers keeping up are
//! served from memory instead of the bookies.
//!
//! Invariants: each topic's cache stays within its own limit, all topics' caches together
//! within the broker-wide [`CacheBudget`] (taken on insert, given back on eviction and on
//! drop), and no entry stays longer than [`CACHE_TTL`]. It does not decide what to cache:
//! the managed ledger inserts only while the topic is being read.

use bytes::Bytes;
use std::sync::Arc;
use std::time::{Duration, Instant};
use strata_common::Position;

/// Default of the broker-wide read cache bound (256 MiB).
pub const DEFAULT_CACHE_BUDGET: usize = 256 << 20;
/// Cached entries older than this are dropped: a consumer keeping up reads an entry
/// within milliseconds; one further behind reads from the bookies.
pub const CACHE_TTL: Duration = Duration::from_secs(5);

/// Read-cache bytes of every topic of a broker together, bounded: a topic that would pass
/// the bound evicts its own oldest entries, or does not cache.
#[derive(Debug)]
pub struct CacheBudget {
    limit: usize,
    used: std::sync::atomic::AtomicUsize,
}

impl CacheBudget {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: Default::default(),
        })
    }

    /// Bytes cached by every topic together.
    pub fn used(&self) -> usize {
        self.used.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    fn try_take(&self, n: usize) -> bool {
        self.used
            .fetch_update(
                std::sync::atomic::Ordering::Relaxed,
                std::sync::atomic::Ordering::Relaxed,
                |used| used.checked_add(n).filter(|u| *u <= self.limit),
            )
            .is_ok()
    }

    fn give_back(&self, n: usize) {
        self.used.fetch_sub(n, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The newest confirmed entries of a topic, so consumers keeping up are served from
/// memory instead of the bookies. Bounded three ways, oldest evicted first: the topic's
/// `limit`, the broker-wide [`CacheBudget`] (taken on insert, given back on eviction and
/// drop), and [`CACHE_TTL`].
pub(crate) struct EntryCache {
    entries: std::collections::BTreeMap<Position, (Bytes, Instant)>,
    pub(crate) bytes: usize,
    limit: usize,
    budget: Arc<CacheBudget>,
}

impl EntryCache {
    pub(crate) fn new(limit: usize, budget: Arc<CacheBudget>) -> Self {
        Self {
            entries: Default::default(),
            bytes: 0,
            limit,
            budget,
        }
    }

    pub(crate) fn insert(&mut self, pos: Position, payload: Bytes, now: Instant) {
        self.expire(now);
        if payload.len() > self.limit {
            return;
        }
        if let Some((old, _)) = self.entries.remove(&pos) {
            self.release(old.len());
        }
        while self.bytes + payload.len() > self.limit && self.pop_oldest() {}
        while !self.budget.try_take(payload.len()) {
            if !self.pop_oldest() {
                return; // the other topics hold the whole budget
            }
        }
        self.bytes += payload.len();
        self.entries.insert(pos, (payload, now));
    }

    fn release(&mut self, n: usize) {
        self.bytes -= n;
        self.budget.give_back(n);
    }

    fn pop_oldest(&mut self) -> bool {
        match self.entries.pop_first() {
            Some((_, (b, _))) => {
                self.release(b.len());
                true
            }
            None => false,
        }
    }

    /// Drops entries cached longer than [`CACHE_TTL`] (insertion order is position order).
    pub(crate) fn expire(&mut self, now: Instant) {
        while self
            .entries
            .first_key_value()
            .is_some_and(|(_, (_, at))| now.duration_since(*at) > CACHE_TTL)
        {
            self.pop_oldest();
        }
    }

    /// Drops the entries of these ledgers (deleted).
    pub(crate) fn forget_ledgers(&mut self, ledgers: &[u64]) {
        let doomed: Vec<Position> = self
            .entries
            .keys()
            .filter(|p| ledgers.contains(&p.ledger.get()))
            .copied()
            .collect();
        for p in doomed {
            if let Some((b, _)) = self.entries.remove(&p) {
                self.release(b.len());
            }
        }
    }

    /// Up to `max` consecutive entries of `from`'s ledger starting at `from`, if cached.
    pub(crate) fn run(&self, from: Position, max: usize) -> Vec<(Position, Bytes)> {
        let mut out = Vec::new();
        for (next, (p, (b, _))) in (from.entry.get()..).zip(self.entries.range(from..)) {
            if out.len() >= max || p.ledger != from.ledger || p.entry.get() != next {
                break;
            }
            out.push((*p, b.clone()));
        }
        out
    }
}

impl Drop for EntryCache {
    fn drop(&mut self) {
        self.budget.give_back(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_common::{EntryId, LedgerId};

    fn pos(ledger: u64, entry: u64) -> Position {
        Position {
            ledger: LedgerId::new(ledger).unwrap(),
            entry: EntryId::new(entry),
        }
    }

    fn bytes(n: usize) -> Bytes {
        Bytes::from(vec![7u8; n])
    }

    #[test]
    fn the_cache_respects_its_topic_limit_and_the_broker_budget() {
        let budget = CacheBudget::new(1000);
        let now = Instant::now();
        let mut a = EntryCache::new(600, budget.clone());
        let mut b = EntryCache::new(600, budget.clone());
        for e in 0..10 {
            a.insert(pos(1, e), bytes(100), now);
        }
        // The topic's own limit: the newest 6 entries.
        assert_eq!((a.bytes, budget.used()), (600, 600));
        assert_eq!(a.run(pos(1, 4), 100).len(), 6);
        assert!(a.run(pos(1, 3), 100).is_empty(), "evicted oldest first");
        // The budget: topic b gets what is left, then evicts its own entries.
        for e in 0..6 {
            b.insert(pos(2, e), bytes(100), now);
        }
        assert_eq!((b.bytes, budget.used()), (400, 1000));
        assert_eq!(b.run(pos(2, 2), 100).len(), 4);
        // A topic with nothing cached cannot take from the others: it does not cache.
        let mut c = EntryCache::new(600, budget.clone());
        c.insert(pos(3, 0), bytes(100), now);
        assert_eq!((c.bytes, budget.used()), (0, 1000));
        // Dropping a cache (topic unloaded) and forgetting ledgers give the budget back.
        drop(a);
        assert_eq!(budget.used(), 400);
        b.forget_ledgers(&[2]);
        assert_eq!((b.bytes, budget.used()), (0, 0));
    }

    #[test]
    fn cached_entries_expire() {
        let budget = CacheBudget::new(1 << 20);
        let t0 = Instant::now();
        let mut c = EntryCache::new(1 << 20, budget.clone());
        c.insert(pos(1, 0), bytes(10), t0);
        c.insert(pos(1, 1), bytes(10), t0 + CACHE_TTL / 2);
        c.expire(t0 + CACHE_TTL + Duration::from_millis(1));
        assert_eq!(c.run(pos(1, 0), 10).len(), 0);
        assert_eq!(c.run(pos(1, 1), 10).len(), 1);
        assert_eq!(budget.used(), 10);
        // An insert expires too, and a re-inserted position is counted once.
        c.insert(pos(1, 1), bytes(20), t0 + CACHE_TTL);
        assert_eq!((c.bytes, budget.used()), (20, 20));
        c.insert(pos(1, 2), bytes(10), t0 + 3 * CACHE_TTL);
        assert_eq!((c.bytes, budget.used()), (10, 10));
        // Larger than the topic's limit: not cached.
        let mut small = EntryCache::new(5, budget.clone());
        small.insert(pos(2, 0), bytes(10), t0);
        assert_eq!((small.bytes, budget.used()), (0, 10));
    }
}
