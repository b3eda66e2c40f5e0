//! Reads of one offloaded ledger: ranged GETs of its data object in chunks of
//! `read_ahead_bytes`, the next chunk fetched in the background while the current one is
//! consumed.
//!
//! Invariants: every entry returned passed its id and writer-checksum check
//! ([`format::decode_records`]); a damaged object gives an error naming the ledger, the
//! entry and the object, never bytes. Memory per open ledger is bounded by two chunks
//! (the current one and the one read ahead), each at most `read_ahead_bytes` or one entry.

use super::format::{self, Index};
use super::{ObjectKind, Offloader};
use crate::error::BrokerError;
use bytes::Bytes;
use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;
use strata_common::{LedgerId, TopicName};
use tokio::sync::OnceCell;

/// Decoded entries `first..first + entries.len()` of a data object.
struct Chunk {
    first: u64,
    entries: Vec<(u64, Bytes)>,
}

impl Chunk {
    fn covers(&self, entry: u64) -> bool {
        entry >= self.first && entry < self.first + self.entries.len() as u64
    }
}

type Fetch = Arc<OnceCell<Result<Arc<Chunk>, BrokerError>>>;

#[derive(Default)]
struct Chunks {
    current: Option<Arc<Chunk>>,
    /// The chunk being read ahead, by its first entry.
    ahead: Option<(u64, Fetch)>,
}

/// An offloaded ledger open for reads.
pub struct OffloadedLedger {
    offloader: Arc<Offloader>,
    ledger: LedgerId,
    data: ObjectPath,
    index: Index,
    chunks: std::sync::Mutex<Chunks>,
}

impl OffloadedLedger {
    pub(super) async fn open(
        offloader: Arc<Offloader>,
        topic: &TopicName,
        ledger: LedgerId,
        attempt: u64,
        entries: u64,
    ) -> Result<Arc<Self>, BrokerError> {
        let index_path = offloader.object_path(topic, ledger.get(), attempt, ObjectKind::Index);
        let data = offloader.object_path(topic, ledger.get(), attempt, ObjectKind::Data);
        let started = Instant::now();
        let bytes = match offloader.store.get(&index_path).await {
            Ok(r) => r.bytes().await,
            Err(e) => Err(e),
        };
        offloader.metrics.read_latency.observe(started.elapsed());
        let bytes = bytes.map_err(|e| {
            offloader.metrics.read_errors.fetch_add(1, Ordering::Relaxed);
            offloader.error("cannot read", &index_path, e)
        })?;
        let bad = |what: String| {
            offloader.metrics.read_errors.fetch_add(1, Ordering::Relaxed);
            BrokerError::Offload(format!("{what} (object {})", offloader.describe(&index_path)))
        };
        let index = Index::decode(ledger, &bytes).map_err(|e| bad(e.to_string()))?;
        if index.entries() != entries {
            return Err(bad(format!(
                "offloaded index of ledger {ledger}: {} entries, the topic's ledger list says {entries}",
                index.entries()
            )));
        }
        Ok(Arc::new(Self {
            offloader,
            ledger,
            data,
            index,
            chunks: Default::default(),
        }))
    }

    pub fn entries(&self) -> u64 {
        self.index.entries()
    }

    /// Reads entries from `first` up to `last` (inclusive); may return fewer (up to the
    /// end of a chunk), never none when `first <= last < entries`.
    pub async fn read(self: &Arc<Self>, first: u64, last: u64) -> Result<Vec<(u64, Bytes)>, BrokerError> {
        if first > last || last >= self.entries() {
            return Err(BrokerError::InvalidArgument(format!(
                "entries {first}..={last} of offloaded ledger {} (it has {})",
                self.ledger,
                self.entries()
            )));
        }
        let chunk = self.chunk_at(first).await?;
        let from = (first - chunk.first) as usize;
        let to = ((last - chunk.first) as usize).min(chunk.entries.len() - 1);
        let out = chunk.entries[from..=to].to_vec();
        // Read ahead: the next chunk, unless it is already on its way.
        let next = chunk.first + chunk.entries.len() as u64;
        if next < self.entries() {
            let fetch = {
                let mut c = self.chunks.lock().expect("offload chunks");
                match &c.ahead {
                    Some((f, _)) if *f == next => None,
                    _ => {
                        let cell: Fetch = Arc::default();
                        c.ahead = Some((next, cell.clone()));
                        Some(cell)
                    }
                }
            };
            if let Some(cell) = fetch {
                let this = self.clone();
                tokio::spawn(async move {
                    let _ = cell.get_or_init(|| this.fetch(next)).await;
                });
            }
        }
        Ok(out)
    }

    /// The chunk holding `entry`: the current one, the one read ahead, or a new fetch.
    async fn chunk_at(self: &Arc<Self>, entry: u64) -> Result<Arc<Chunk>, BrokerError> {
        let cell = {
            let mut c = self.chunks.lock().expect("offload chunks");
            if let Some(cur) = c.current.as_ref().filter(|cur| cur.covers(entry)) {
                return Ok(cur.clone());
            }
            match c.ahead.take() {
                Some((f, cell)) if f == entry => cell,
                other => {
                    c.ahead = other;
                    Arc::default()
                }
            }
        };
        let chunk = cell.get_or_init(|| self.fetch(entry)).await.clone()?;
        if !chunk.covers(entry) {
            // A read-ahead chunk starting at `entry` always covers it; anything else is a bug.
            return Err(BrokerError::Offload(format!(
                "offloaded ledger {}: chunk from {} does not hold entry {entry}",
                self.ledger, chunk.first
            )));
        }
        self.chunks.lock().expect("offload chunks").current = Some(chunk.clone());
        Ok(chunk)
    }

    /// Fetches and checks the chunk starting at `first`.
    async fn fetch(&self, first: u64) -> Result<Arc<Chunk>, BrokerError> {
        let o = &self.offloader;
        let last = self.index.chunk_end(first, o.settings.read_ahead_bytes as u64);
        let range = self
            .index
            .range(first, last)
            .ok_or_else(|| BrokerError::Offload(format!("offloaded ledger {}: no entry {first}", self.ledger)))?;
        let started = Instant::now();
        let got = o.store.get_range(&self.data, range.clone()).await;
        o.metrics.read_latency.observe(started.elapsed());
        let bytes = got.map_err(|e| {
            o.metrics.read_errors.fetch_add(1, Ordering::Relaxed);
            o.error("cannot read", &self.data, e)
        })?;
        o.metrics.read_bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        let damaged = |what: String| {
            o.metrics.read_errors.fetch_add(1, Ordering::Relaxed);
            BrokerError::Offload(format!("{what} (object {})", o.describe(&self.data)))
        };
        if bytes.len() as u64 != range.end - range.start {
            return Err(damaged(format!(
                "offloaded data of ledger {}: {} bytes returned for a range of {}",
                self.ledger,
                bytes.len(),
                range.end - range.start
            )));
        }
        let entries = format::decode_records(self.ledger, first, bytes).map_err(|e| damaged(e.to_string()))?;
        if entries.len() as u64 != last - first + 1 {
            return Err(damaged(format!(
                "offloaded data of ledger {}: {} entries decoded, {} expected",
                self.ledger,
                entries.len(),
                last - first + 1
            )));
        }
        Ok(Arc::new(Chunk { first, entries }))
    }
}
