//! The ledger client: writes ledgers to a quorum of bookies and reads and recovers them
//! (BookKeeper's protocol). Used by brokers, never by applications.
//!
//! - [`LedgerClient::create`] picks E writable bookies from the registry, stores the
//!   metadata (compare-and-set) and returns a [`LedgerWriter`].
//! - The writer stripes entries round-robin, acknowledges an entry once Qa bookies of its
//!   write set have it durably and every earlier entry is acknowledged (LAC), piggybacks the
//!   LAC on adds, and replaces failed bookies (ensemble change) without failing appends.
//! - [`LedgerClient::open`] reads, never past the LAC of an open ledger.
//! - [`LedgerClient::recover`] fences the last fragment, finds the last entry an ack quorum
//!   may hold, re-replicates the tail and closes the ledger; compare-and-set on the metadata
//!   makes concurrent recoveries agree.
//!
//! Invariants (DESIGN.md §5): an append completes only after Qa bookies of its write set
//! acknowledged it; after a recovery fenced a ledger no add of the old writer reaches an ack
//! quorum; a reader of an open ledger never gets an entry past the LAC.

mod metadata;
mod reader;
mod recovery;
mod writer;

pub use metadata::{Fragment, LedgerMetadata, LedgerState, validate_quorum};
pub use reader::LedgerReader;
pub use writer::LedgerWriter;

use crate::client::BookieClient;
use crate::error::{BookieError, Result};
use crate::registration::BookieInfo;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use strata_common::LedgerId;
use strata_meta::{Condition, MetaError, MetadataStore, keys};

impl From<MetaError> for BookieError {
    fn from(e: MetaError) -> Self {
        BookieError::Metadata(e.to_string())
    }
}

/// Settings of the ledger client.
#[derive(Debug, Clone)]
pub struct LedgerClientConfig {
    /// A bookie that has not acknowledged an add for this long is replaced.
    pub add_timeout: Duration,
    /// Appends outstanding per writer before `append` waits (back-pressure).
    pub max_pending_entries: usize,
    /// Largest entry the bookies accept (their `max_entry_bytes`). A larger append is
    /// refused with `TooLarge` before it is given an entry id, so it never reaches a
    /// bookie (which would refuse it after later entries were already sent).
    pub max_entry_bytes: u64,
}

impl Default for LedgerClientConfig {
    fn default() -> Self {
        Self {
            add_timeout: Duration::from_secs(10),
            max_pending_entries: 10_000,
            max_entry_bytes: crate::config::DEFAULT_MAX_ENTRY_BYTES,
        }
    }
}

/// Long-lived add streams carried by one pooled connection: below the bookie's limit of
/// concurrent HTTP/2 streams per connection (256), leaving room for reads. A stream
/// beyond that limit would wait for a free slot, its adds timing out meanwhile.
const ADD_STREAMS_PER_CONNECTION: usize = 192;

struct Pooled {
    client: BookieClient,
    /// One clone per open add stream on this connection (see [`StreamSlot`]).
    add_streams: Arc<()>,
}

impl Pooled {
    fn open_streams(&self) -> usize {
        Arc::strong_count(&self.add_streams) - 1
    }
}

/// Counts an open add stream against its connection; dropped with the stream.
pub(crate) struct StreamSlot {
    _held: Arc<()>,
}

/// Connections to bookies, opened on first use and shared. Each bookie gets as many
/// connections as its open add streams need ([`ADD_STREAMS_PER_CONNECTION`] each); short
/// calls (reads, recovery) use the first.
#[derive(Default)]
pub(crate) struct BookiePool {
    clients: Mutex<HashMap<String, Vec<Pooled>>>,
}

impl BookiePool {
    pub async fn get(&self, addr: &str) -> Result<BookieClient> {
        if let Some(p) = self.clients.lock().expect("pool").get(addr).and_then(|v| v.first()) {
            return Ok(p.client.clone());
        }
        Ok(self.connect(addr).await?.0)
    }

    /// A connection with room for one more add stream, and the slot to hold while the
    /// stream is open; opens another connection when every one is full.
    pub async fn get_for_stream(&self, addr: &str) -> Result<(BookieClient, StreamSlot)> {
        {
            let mut map = self.clients.lock().expect("pool");
            if let Some(conns) = map.get_mut(addr) {
                // Extra connections whose streams all closed are let go.
                let mut i = 0;
                conns.retain(|p| {
                    i += 1;
                    i == 1 || p.open_streams() > 0
                });
                if let Some(p) = conns.iter().find(|p| p.open_streams() < ADD_STREAMS_PER_CONNECTION) {
                    return Ok((
                        p.client.clone(),
                        StreamSlot {
                            _held: p.add_streams.clone(),
                        },
                    ));
                }
            }
        }
        let (client, slot) = self.connect(addr).await?;
        Ok((client, StreamSlot { _held: slot }))
    }

    async fn connect(&self, addr: &str) -> Result<(BookieClient, Arc<()>)> {
        let client = BookieClient::connect(addr).await?;
        let slot = Arc::new(());
        self.clients
            .lock()
            .expect("pool")
            .entry(addr.to_string())
            .or_default()
            .push(Pooled {
                client: client.clone(),
                add_streams: slot.clone(),
            });
        Ok((client, slot))
    }

    /// Forgets a bookie's connections after a failure, so the next use reconnects.
    pub fn evict(&self, addr: &str) {
        self.clients.lock().expect("pool").remove(addr);
    }
}

/// Entry point of the ledger protocol.
#[derive(Clone)]
pub struct LedgerClient {
    pub(crate) store: Arc<dyn MetadataStore>,
    pub(crate) pool: Arc<BookiePool>,
    pub(crate) cfg: LedgerClientConfig,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A random number without a dependency (hashes the clock and a counter with a randomly
/// keyed hasher): for ids and tokens, not for cryptography.
pub fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(now_ms());
    h.write_u64(COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    h.finish()
}

impl LedgerClient {
    /// The largest entry the bookies accept, as configured ([`LedgerClientConfig`]).
    pub fn max_entry_bytes(&self) -> u64 {
        self.cfg.max_entry_bytes
    }
}

impl LedgerClient {
    pub fn new(store: Arc<dyn MetadataStore>, cfg: LedgerClientConfig) -> Self {
        Self {
            store,
            pool: Arc::new(BookiePool::default()),
            cfg,
        }
    }

    /// Registered bookies that accept writes: not read-only, not being decommissioned
    /// (the decommission key is checked too, so a bookie is never chosen in the moments
    /// before it notices and turns read-only).
    pub async fn writable_bookies(&self) -> Result<Vec<String>> {
        let decommissioned: Vec<String> = self
            .store
            .list(&keys::decommission_prefix())
            .await?
            .into_iter()
            .map(|(k, _)| k.rsplit('/').next().unwrap_or_default().to_string())
            .collect();
        let mut out = Vec::new();
        for (_, v) in self.store.list(&keys::bookies_prefix()).await? {
            if let Some(info) = BookieInfo::decode(&v.value)
                && !info.read_only
                && !decommissioned.contains(&info.address)
            {
                out.push(info.address);
            }
        }
        Ok(out)
    }

    /// Picks `n` writable bookies not in `exclude`, at random.
    pub(crate) async fn choose_bookies(&self, n: usize, exclude: &[String]) -> Result<Vec<String>> {
        let mut candidates: Vec<String> = self
            .writable_bookies()
            .await?
            .into_iter()
            .filter(|b| !exclude.contains(b))
            .collect();
        if candidates.len() < n {
            return Err(BookieError::NotEnoughBookies {
                needed: n,
                available: candidates.len(),
            });
        }
        let mut chosen = Vec::with_capacity(n);
        for _ in 0..n {
            let i = (random_u64() % candidates.len() as u64) as usize;
            chosen.push(candidates.swap_remove(i));
        }
        Ok(chosen)
    }

    async fn next_ledger_id(&self) -> Result<LedgerId> {
        let key = keys::ledger_id_counter();
        loop {
            let (next, cond) = match self.store.get(&key).await? {
                None => (1u64, Condition::Absent),
                Some(v) => {
                    let cur: u64 = std::str::from_utf8(&v.value)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(|| BookieError::Corruption(format!("{key} is not a number")))?;
                    (cur + 1, Condition::Version(v.version))
                }
            };
            match self.store.put(&key, Bytes::from(next.to_string()), cond).await {
                Ok(_) => return Ok(LedgerId::new(next).expect("ids start at 1")),
                Err(MetaError::BadVersion(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Creates a ledger on E writable bookies and returns its writer.
    pub async fn create(&self, ensemble: u32, write_quorum: u32, ack_quorum: u32) -> Result<LedgerWriter> {
        validate_quorum(ensemble, write_quorum, ack_quorum)?;
        let bookies = self.choose_bookies(ensemble as usize, &[]).await?;
        let id = self.next_ledger_id().await?;
        let token: Vec<u8> = random_u64()
            .to_le_bytes()
            .into_iter()
            .chain(random_u64().to_le_bytes())
            .collect();
        let md = LedgerMetadata {
            format: metadata::METADATA_FORMAT,
            ensemble_size: ensemble,
            write_quorum,
            ack_quorum,
            state: LedgerState::Open,
            last_entry: None,
            length: 0,
            fragments: vec![Fragment {
                first_entry: 0,
                bookies,
            }],
            token: metadata::hex_encode(&token),
            created_ms: now_ms(),
            custom: Default::default(),
        };
        let version = self
            .store
            .put(&keys::ledger(id.get()), md.encode(), Condition::Absent)
            .await?;
        tracing::debug!(ledger = %id, ?md.fragments, "ledger created");
        Ok(writer::LedgerWriter::start(self.clone(), id, md, version))
    }

    /// Reads a ledger's metadata and its version.
    pub async fn metadata(&self, id: LedgerId) -> Result<(LedgerMetadata, u64)> {
        let v = self
            .store
            .get(&keys::ledger(id.get()))
            .await?
            .ok_or(BookieError::NoSuchLedger(id.get()))?;
        Ok((LedgerMetadata::decode(id.get(), &v.value)?, v.version))
    }

    /// Opens a ledger for reading without disturbing its writer.
    pub async fn open(&self, id: LedgerId) -> Result<LedgerReader> {
        LedgerReader::open(self.clone(), id).await
    }

    /// Recovers a ledger: fences it, closes it at the last entry that may have been
    /// acknowledged, and returns a reader of the closed ledger. Safe to run concurrently
    /// and repeatedly.
    pub async fn recover(&self, id: LedgerId) -> Result<LedgerReader> {
        recovery::recover(self, id).await?;
        LedgerReader::open(self.clone(), id).await
    }

    /// Deletes a ledger: its metadata first (compare-and-set, so a concurrent writer or
    /// recovery makes the delete fail rather than leave metadata pointing at deleted
    /// entries), then its entries on the bookies (best effort: unreachable bookies are
    /// logged; their space is reclaimed when an operator deletes the ledger there).
    pub async fn delete(&self, id: LedgerId) -> Result<()> {
        let (md, version) = self.metadata(id).await?;
        match self
            .store
            .delete(&keys::ledger(id.get()), Condition::Version(version))
            .await
        {
            Ok(_) => {}
            Err(MetaError::BadVersion(_)) => {
                return Err(BookieError::Metadata(format!(
                    "ledger {id} changed while being deleted; retry"
                )));
            }
            Err(e) => return Err(e.into()),
        }
        let mut bookies: Vec<&String> = md.fragments.iter().flat_map(|f| f.bookies.iter()).collect();
        bookies.sort();
        bookies.dedup();
        for b in bookies {
            let res = match self.pool.get(b).await {
                Ok(c) => c.delete_ledger(id).await.map(|_| ()),
                Err(e) => Err(e),
            };
            if let Err(e) = res {
                tracing::warn!(ledger = %id, bookie = %b, error = %e, "could not delete ledger on bookie");
            }
        }
        Ok(())
    }
}
