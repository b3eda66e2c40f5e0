//! Writes of a topic's state — its ledger list, its cursors, its deduplication snapshot —
//! fenced by ownership.
//!
//! A broker that lost its metadata session (paused past the TTL, say) may not notice for
//! a while, and a compare-and-set on a key's version does not stop it: the new owner may
//! not have written that key yet, so the old owner's version still matches and its stale
//! write lands — after which the new owner's own writes fail. So every such write also
//! checks, in the same transaction, that the topic's ownership key (its bundle's key) is
//! still the one this broker created ([`strata_meta::Guard`]). Once ownership moved, the
//! old owner can write nothing of the topic's state.
//!
//! Without a guard (tests of storage alone), writes are plain compare-and-sets.

use bytes::Bytes;
use std::sync::Arc;
use strata_meta::{Condition, Guard, MetadataStore};

/// The metadata store plus the ownership guard of one topic.
#[derive(Clone)]
pub struct OwnedStore {
    store: Arc<dyn MetadataStore>,
    guard: Option<Guard>,
}

impl OwnedStore {
    /// Writes are fenced by `guard` (the topic's ownership key at the version this broker
    /// created it with).
    pub fn new(store: Arc<dyn MetadataStore>, guard: Option<Guard>) -> Self {
        Self { store, guard }
    }

    /// The store, for reads.
    pub fn store(&self) -> &Arc<dyn MetadataStore> {
        &self.store
    }

    pub fn guard(&self) -> Option<&Guard> {
        self.guard.as_ref()
    }

    /// Writes `value` if `cond` holds and this broker still owns the topic.
    pub async fn put(&self, key: &str, value: Bytes, cond: Condition) -> strata_meta::Result<u64> {
        match &self.guard {
            Some(g) => self.store.put_guarded(key, value, cond, g).await,
            None => self.store.put(key, value, cond).await,
        }
    }
}
