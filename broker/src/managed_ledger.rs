//! The managed ledger: one topic's storage as an ordered list of replicated ledgers, the
//! last one open for appends (Pulsar's ManagedLedger).
//!
//! The list lives at `/strata/v1/topics/<tenant>/<ns>/<topic>` ([`ManagedLedgerInfo`]) and
//! every change to it is a compare-and-set, so two brokers can never both extend it.
//!
//! Opening a topic is how ownership changes hands safely (DESIGN.md §3): the new owner
//! first **recovers** the last ledger — fencing it on its bookies so the old owner cannot
//! append another entry — and only then adds a new ledger of its own. An old owner that
//! tries to append afterwards gets `Fenced` from its bookies, or a version conflict on the
//! list, and must stop serving the topic.
//!
//! Rollover: the current ledger is closed and a new one started once it holds
//! `max_entries_per_ledger` entries, `max_ledger_bytes` bytes, or is older than
//! `max_ledger_age`. Appends wait during a rollover; none fails because of it.
//!
//! Locking:
//! - the state (list, current writer, failure) sits behind a std mutex, never held across
//!   an await, so reads, retention, failure checks and close never wait for bookies;
//! - appends take turns on an async queue (`appends`), which orders them: a turn lasts
//!   until the entry is handed to the writer (waiting only for the writer's back-pressure),
//!   or through a rollover, so appends wait for the new ledger instead of racing it — but
//!   never across the wait for an append's durability, so appends stay pipelined;
//! - changes of the stored list (rollover, trim, close) are serialised by `list`, held
//!   across metadata writes only.
//!
//! Offload (`crate::offload`, docs/storage.md): [`ManagedLedger::run_offload`] copies
//! closed ledgers to object storage. Each ledger's [`OffloadInfo`] in the list names its
//! attempt before the upload starts, is marked complete only after the objects were read
//! back, and records the deletion of the bookie copy; reads of a ledger use object storage
//! once it is complete and its bookie copy is gone or unreadable.
//!
//! Writes of the list are fenced by ownership ([`OwnedStore`]): once another broker owns
//! the topic, they fail and the topic fails with `Fenced`. A write that fails ambiguously
//! (timeout: it may have committed) is read back before anything is undone.

mod offload;

pub use offload::offload_candidates;

use crate::entry_cache::EntryCache;
pub use crate::entry_cache::{CACHE_TTL, CacheBudget, DEFAULT_CACHE_BUDGET};
use crate::error::{BrokerError, Result};
use crate::offload::{OffloadPolicy, OffloadedLedger, Offloader};
use crate::owned_store::OwnedStore;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use strata_bookie::BookieError;
use strata_bookie::ledger::{LedgerClient, LedgerReader, LedgerState, LedgerWriter};
use strata_common::{EntryId, ErrorCode, LedgerId, Position, TopicName};
use strata_meta::{Condition, MetaError, MetadataStore, keys};
use tokio::sync::{Mutex, watch};

/// Format of [`ManagedLedgerInfo`].
pub const INFO_FORMAT: u32 = 1;

/// How a topic's ledgers are created and rolled.
#[derive(Debug, Clone)]
pub struct ManagedLedgerConfig {
    pub ensemble: u32,
    pub write_quorum: u32,
    pub ack_quorum: u32,
    /// 50,000 entries (batches) per ledger, Pulsar's default.
    pub max_entries_per_ledger: u64,
    /// 2 GiB per ledger: bounds recovery and offload units.
    pub max_ledger_bytes: u64,
    /// 4 hours per ledger, so retention can delete old data in steps.
    pub max_ledger_age: Duration,
    /// Bytes of the newest entries kept in memory for tailing readers (16 MiB; 0 turns
    /// the cache off). Older entries are read from the bookies.
    pub cache_bytes: usize,
    /// The broker-wide bound shared by every topic's cache.
    pub cache_budget: Arc<CacheBudget>,
    /// Where closed ledgers are offloaded to and read back from (`None`: offload is off).
    pub offload: Option<Arc<Offloader>>,
}

impl Default for ManagedLedgerConfig {
    fn default() -> Self {
        Self {
            ensemble: 1,
            write_quorum: 1,
            ack_quorum: 1,
            max_entries_per_ledger: 50_000,
            max_ledger_bytes: 2 << 30,
            max_ledger_age: Duration::from_secs(4 * 3600),
            cache_bytes: 16 << 20,
            cache_budget: CacheBudget::new(DEFAULT_CACHE_BUDGET),
            offload: None,
        }
    }
}

/// One ledger of a topic.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerInfo {
    pub id: u64,
    /// Entries in the ledger; final once the ledger is closed (0 while it is current).
    pub entries: u64,
    /// Payload bytes, when known (ledgers closed by their writer).
    pub bytes: u64,
    pub created_ms: u64,
    /// Its copy in object storage, once an offload of it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offload: Option<OffloadInfo>,
}

/// The offload of one ledger: the attempt whose objects hold it, and how far it got.
///
/// Invariants: `complete` is set only after both objects of `attempt` were written and
/// read back; `bookie_deleted` only after `complete`; an incomplete attempt is superseded
/// (its objects deleted) by the next one, never completed by another broker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffloadInfo {
    /// Names the objects: `<ledger>-<attempt as 16 hex digits>.data` / `.index`.
    pub attempt: u64,
    pub started_ms: u64,
    /// The objects are complete and verified; reads may use them.
    #[serde(default)]
    pub complete: bool,
    #[serde(default)]
    pub completed_ms: u64,
    /// Size of the data object.
    #[serde(default)]
    pub data_bytes: u64,
    /// The bookie copy is deleted: reads go to object storage only.
    #[serde(default)]
    pub bookie_deleted: bool,
}

impl OffloadInfo {
    /// Whether reads may be served from object storage.
    pub fn readable(&self) -> bool {
        self.complete
    }
}

/// The stored list of a topic's ledgers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagedLedgerInfo {
    pub format: u32,
    pub ledgers: Vec<LedgerInfo>,
    /// `strata admin topics offload` asked for every ledger up to this id to be offloaded;
    /// stored so that the next owner finishes the request after a crash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offload_requested_upto: Option<u64>,
}

impl ManagedLedgerInfo {
    fn decode(topic: &TopicName, b: &[u8]) -> Result<Self> {
        let info: Self =
            serde_json::from_slice(b).map_err(|e| BrokerError::Corruption(format!("ledger list of {topic}: {e}")))?;
        if info.format != INFO_FORMAT {
            return Err(BrokerError::Corruption(format!(
                "ledger list of {topic} has format {}; this build reads {INFO_FORMAT}",
                info.format
            )));
        }
        Ok(info)
    }

    pub fn encode(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).expect("managed ledger info serialises"))
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

struct State {
    info: ManagedLedgerInfo,
    version: u64,
    /// The current ledger's writer; stays here (closed) until the next one replaces it.
    writer: Option<LedgerWriter>,
    entries: u64,
    bytes: u64,
    created: Instant,
    /// Set once the topic was taken over or closed, or its storage failed; every later
    /// append fails with it.
    failed: Option<BrokerError>,
}

/// How long [`ManagedLedger::close`] waits for the appends in flight and the ledger's
/// close: the ledger client's default add timeout (a bookie silent that long is replaced).
/// Past it the topic is abandoned instead: its ledger stays Open and the next owner's
/// recovery closes it where its confirmed entries end, so nothing acknowledged is lost.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// A topic's storage. Share it behind an `Arc`.
pub struct ManagedLedger {
    topic: TopicName,
    key: String,
    client: LedgerClient,
    owned: OwnedStore,
    cfg: ManagedLedgerConfig,
    /// The ledger list, the current writer and the failure. A std mutex: never held
    /// across an await.
    state: std::sync::Mutex<State>,
    /// The queue of appends: an append holds it from its turn until its entry is handed
    /// to the writer (waiting there only for the writer's back-pressure), and a rollover
    /// holds it while the full ledger closes and the next one starts. Nothing else takes
    /// it but [`ManagedLedger::close`] (bounded by [`CLOSE_TIMEOUT`]): reads, the ledger
    /// list, retention and failure checks never wait behind an append.
    appends: Mutex<()>,
    /// Serialises changes of the stored ledger list (compare-and-set on its version);
    /// held across metadata writes only, never across a wait for bookies.
    list: Mutex<()>,
    /// The last appended (confirmed) position, for tailing readers.
    last_confirmed: watch::Sender<Option<Position>>,
    readers: std::sync::Mutex<HashMap<u64, Arc<LedgerReader>>>,
    cache: std::sync::Mutex<EntryCache>,
    /// When [`Self::read`] last ran, in ms since `opened`: appends are cached only while
    /// someone reads (a topic nobody consumes caches nothing).
    last_read_ms: std::sync::atomic::AtomicU64,
    opened: Instant,
    /// Ownership was lost: every append fails at once.
    abandoned: std::sync::atomic::AtomicBool,
    /// Offloaded ledgers open for reads (at most [`MAX_OPEN_OFFLOADED`]).
    offloaded: std::sync::Mutex<Vec<(u64, Arc<OffloadedLedger>)>>,
    /// Held by the one offload run of the topic.
    offload_run: Mutex<()>,
    offload_status: std::sync::Mutex<OffloadRunStatus>,
    /// Cancelled when the topic closes or is abandoned: stops its offload run.
    stopped: tokio_util::sync::CancellationToken,
}

/// Offloaded ledgers a topic keeps open for reads (each holds up to two read chunks).
const MAX_OPEN_OFFLOADED: usize = 4;

/// The last outcome of a topic's offload runs, and when the next may start.
#[derive(Debug, Clone, Default)]
pub struct OffloadRunStatus {
    pub running: bool,
    /// The last failed run (upload, verification, deletion), until a run succeeds.
    pub last_error: Option<String>,
    pub last_error_ms: u64,
    /// Failed runs in a row: the backoff doubles with each, up to [`MAX_OFFLOAD_BACKOFF`].
    pub failures: u32,
    /// No run starts before this (ms since the epoch; 0: now).
    pub next_try_ms: u64,
    /// The last read of offloaded data that failed (a damaged or missing object).
    pub last_read_error: Option<String>,
    pub last_read_error_ms: u64,
}

/// The longest wait between failed offload runs.
pub const MAX_OFFLOAD_BACKOFF: Duration = Duration::from_secs(300);

impl ManagedLedger {
    /// Opens (creating if needed) a topic's managed ledger without an ownership guard
    /// (tests of storage alone); brokers use [`ManagedLedger::open_owned`].
    pub async fn open(
        topic: TopicName,
        client: LedgerClient,
        store: Arc<dyn MetadataStore>,
        cfg: ManagedLedgerConfig,
    ) -> Result<Arc<Self>> {
        Self::open_owned(topic, client, OwnedStore::new(store, None), cfg).await
    }

    /// Opens (creating if needed) a topic's managed ledger: recovers the previous owner's
    /// last ledger, then starts a new one. Every write of the topic's state goes through
    /// `owned`, so it fails once this broker no longer owns the topic. Fails with `Fenced`
    /// if another broker opened the topic concurrently.
    pub async fn open_owned(
        topic: TopicName,
        client: LedgerClient,
        owned: OwnedStore,
        cfg: ManagedLedgerConfig,
    ) -> Result<Arc<Self>> {
        strata_bookie::ledger::validate_quorum(cfg.ensemble, cfg.write_quorum, cfg.ack_quorum)?;
        let store = owned.store().clone();
        let key = keys::topic(&topic.path());
        let (mut info, version) = loop {
            match store.get(&key).await? {
                Some(v) => break (ManagedLedgerInfo::decode(&topic, &v.value)?, v.version),
                None => {
                    let info = ManagedLedgerInfo {
                        format: INFO_FORMAT,
                        ledgers: Vec::new(),
                        offload_requested_upto: None,
                    };
                    match owned.put(&key, info.encode(), Condition::Absent).await {
                        Ok(v) => break (info, v),
                        Err(MetaError::BadVersion(_)) => continue,
                        Err(e) => return Err(lost_or(&topic, e)),
                    }
                }
            }
        };
        // Close the previous owner's ledger where it really ends (fencing it first).
        if let Some(last) = info.ledgers.last_mut() {
            let id = LedgerId::new(last.id).map_err(|e| BrokerError::Corruption(e.to_string()))?;
            let reader = match client.metadata(id).await {
                Ok((md, _)) if md.state == LedgerState::Closed => client.open(id).await?,
                Ok(_) => {
                    tracing::info!(%topic, ledger = %id, "recovering the previous owner's ledger");
                    client.recover(id).await?
                }
                Err(e) => return Err(e.into()),
            };
            last.entries = reader.last_readable().map_or(0, |e| e + 1);
            if reader.metadata().length > 0 {
                last.bytes = reader.metadata().length;
            }
        }
        let last_confirmed = info.ledgers.iter().rev().find(|l| l.entries > 0).map(|l| Position {
            ledger: LedgerId::new(l.id).expect("stored ids are valid"),
            entry: EntryId::new(l.entries - 1),
        });
        let cache = EntryCache::new(cfg.cache_bytes, cfg.cache_budget.clone());
        let ml = Arc::new(Self {
            topic,
            key,
            client,
            owned,
            cfg,
            state: std::sync::Mutex::new(State {
                info,
                version,
                writer: None,
                entries: 0,
                bytes: 0,
                created: Instant::now(),
                failed: None,
            }),
            appends: Mutex::new(()),
            list: Mutex::new(()),
            last_confirmed: watch::Sender::new(last_confirmed),
            readers: std::sync::Mutex::new(HashMap::new()),
            cache: std::sync::Mutex::new(cache),
            last_read_ms: std::sync::atomic::AtomicU64::new(u64::MAX),
            opened: Instant::now(),
            abandoned: std::sync::atomic::AtomicBool::new(false),
            offloaded: std::sync::Mutex::new(Vec::new()),
            offload_run: Mutex::new(()),
            offload_status: Default::default(),
            stopped: tokio_util::sync::CancellationToken::new(),
        });
        ml.start_ledger().await?;
        Ok(ml)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("managed ledger state")
    }

    pub fn topic(&self) -> &TopicName {
        &self.topic
    }

    /// The metadata store the topic lives in (for reads; write the topic's state through
    /// [`Self::owned_store`]).
    pub fn store(&self) -> Arc<dyn MetadataStore> {
        self.owned.store().clone()
    }

    /// The store fenced by this broker's ownership of the topic: cursors and the
    /// deduplication snapshot are written through it.
    pub fn owned_store(&self) -> OwnedStore {
        self.owned.clone()
    }

    /// The ledgers of the topic, oldest first.
    pub async fn ledgers(&self) -> Vec<LedgerInfo> {
        self.state().info.ledgers.clone()
    }

    /// The ledgers as (id, entries), oldest first, the current one counted up to its
    /// last confirmed entry: the layout positions are checked against.
    pub async fn ledger_counts(&self) -> Vec<(u64, u64)> {
        let lac = self.last_confirmed();
        self.ledgers()
            .await
            .into_iter()
            .map(|l| match lac {
                Some(p) if p.ledger.get() == l.id && l.entries == 0 => (l.id, p.entry.get() + 1),
                _ => (l.id, l.entries),
            })
            .collect()
    }

    /// The last confirmed position, if any entry was ever written.
    pub fn last_confirmed(&self) -> Option<Position> {
        *self.last_confirmed.borrow()
    }

    /// Resolves once an entry after `after` is confirmed.
    pub async fn wait_for_entries_after(&self, after: Option<Position>) {
        let mut rx = self.last_confirmed.subscribe();
        let _ = rx.wait_for(|p| *p > after).await;
    }

    /// Starts a new ledger and records it in the list (compare-and-set).
    ///
    /// A write of the list that fails ambiguously (the store timed out or went away: the
    /// write may still have committed) never leads to deleting the new ledger while the
    /// list may name it — a listed ledger without metadata could never be loaded again.
    /// The list is read back: if it names the ledger, the write committed and the ledger
    /// is used; if not, the list is rewritten unchanged at the version read, so the lost
    /// write can no longer commit, and only then is the ledger deleted.
    async fn start_ledger(&self) -> Result<()> {
        let writer = self
            .client
            .create(self.cfg.ensemble, self.cfg.write_quorum, self.cfg.ack_quorum)
            .await?;
        let id = writer.id();
        let _list = self.list.lock().await;
        let stored = {
            let st = self.state();
            match &st.failed {
                // Closed or taken over while the ledger was created: never listed.
                Some(e) => Err(e.clone()),
                None => {
                    let mut info = st.info.clone();
                    info.ledgers.push(LedgerInfo {
                        id: id.get(),
                        created_ms: now_ms(),
                        ..Default::default()
                    });
                    Ok(info)
                }
            }
        };
        let result = match stored {
            Ok(info) => self.store_info(info).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {}
            Err(e @ (BrokerError::Metadata(_) | BrokerError::Unavailable(_))) => {
                match self.settle_ambiguous(id).await {
                    Settled::Listed => {
                        tracing::info!(topic = %self.topic, ledger = %id, "the ledger list was written after all (an ambiguous failure)");
                    }
                    Settled::NotListed => {
                        let _ = self.client.delete(id).await;
                        return Err(e);
                    }
                    Settled::Unknown => {
                        tracing::warn!(topic = %self.topic, ledger = %id, error = %e,
                        "cannot tell whether the ledger list names the new ledger; keeping the ledger");
                        self.state().failed.get_or_insert(e.clone());
                        return Err(e);
                    }
                }
            }
            Err(e) => {
                // Refused for sure (taken over, closed): the list does not name it.
                let _ = self.client.delete(id).await;
                return Err(e);
            }
        }
        let mut st = self.state();
        st.writer = Some(writer);
        st.entries = 0;
        st.bytes = 0;
        st.created = Instant::now();
        Ok(())
    }

    /// After an ambiguous failure to list ledger `id`: finds out whether the list names
    /// it, making sure a lost write cannot commit later. Call with the list lock held.
    async fn settle_ambiguous(&self, id: LedgerId) -> Settled {
        for _ in 0..3 {
            let Ok(current) = self.owned.store().get(&self.key).await else {
                return Settled::Unknown;
            };
            let Some(v) = current else { return Settled::Unknown };
            let Ok(info) = ManagedLedgerInfo::decode(&self.topic, &v.value) else {
                return Settled::Unknown;
            };
            if info.ledgers.iter().any(|l| l.id == id.get()) {
                let mut st = self.state();
                st.info = info;
                st.version = v.version;
                return Settled::Listed;
            }
            // Not listed yet: bump the version, so the lost write (conditional on the
            // version we had) can never commit.
            match self
                .owned
                .put(&self.key, v.value.clone(), Condition::Version(v.version))
                .await
            {
                Ok(version) => {
                    let mut st = self.state();
                    st.info = info;
                    st.version = version;
                    return Settled::NotListed;
                }
                Err(MetaError::BadVersion(_)) => continue,
                Err(_) => return Settled::Unknown,
            }
        }
        Settled::Unknown
    }

    /// Writes the list (compare-and-set on the version last seen). Call with the list
    /// lock held. A write that fails ambiguously but is found stored is a success.
    async fn store_info(&self, info: ManagedLedgerInfo) -> Result<()> {
        let version = self.state().version;
        let encoded = info.encode();
        let written = match self
            .owned
            .put(&self.key, encoded.clone(), Condition::Version(version))
            .await
        {
            Ok(v) => Ok(v),
            Err(e @ MetaError::GuardChanged(_)) => {
                let e = lost_or(&self.topic, e);
                self.state().failed = Some(e.clone());
                return Err(e);
            }
            // Our own earlier write (a conflict), or this one (an unavailable store), may
            // have committed without an answer: then the stored list is exactly ours.
            Err(e) => match self.owned.store().get(&self.key).await {
                Ok(Some(v)) if v.value == encoded => Ok(v.version),
                _ => Err(e),
            },
        };
        match written {
            Ok(v) => {
                let mut st = self.state();
                st.version = v;
                st.info = info;
                Ok(())
            }
            Err(MetaError::BadVersion(_)) => {
                let e = BrokerError::Fenced(
                    self.topic.to_string(),
                    "its ledger list was changed by another broker".into(),
                );
                self.state().failed = Some(e.clone());
                Err(e)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Records ledger `id` closed with `last` as its last entry.
    async fn record_closed(&self, id: LedgerId, last: Option<u64>) -> Result<()> {
        let _list = self.list.lock().await;
        let info = {
            let st = self.state();
            let mut info = st.info.clone();
            if let Some(l) = info.ledgers.iter_mut().find(|l| l.id == id.get()) {
                l.entries = last.map_or(0, |e| e + 1);
                l.bytes = st.bytes;
            }
            info
        };
        self.store_info(info).await
    }

    fn storage_error(&self, e: BookieError) -> BrokerError {
        match e {
            BookieError::Fenced(_) => {
                BrokerError::Fenced(self.topic.to_string(), "another broker recovered its ledger".into())
            }
            BookieError::TooLarge { what, size, limit } => BrokerError::TooLarge { what, size, limit },
            e if e.code() == ErrorCode::Fenced => {
                BrokerError::Fenced(self.topic.to_string(), "another broker recovered its ledger".into())
            }
            e => BrokerError::Storage(e),
        }
    }

    /// Marks the topic failed (appends after a failed one must not be stored ahead of it;
    /// the owner unloads the topic and the next load recovers it).
    fn fail(&self, e: BrokerError) -> BrokerError {
        self.state().failed.get_or_insert(e.clone());
        e
    }

    /// Appends one entry; returns its position once it is on an ack quorum. Appends are
    /// positioned in call order (the first poll of the returned future).
    ///
    /// Cancellation: dropped before its turn, nothing happened; dropped after the entry
    /// was handed to the writer, the entry may still be stored.
    pub async fn append(&self, payload: Bytes) -> Result<Position> {
        if self.abandoned.load(std::sync::atomic::Ordering::Acquire) {
            return Err(BrokerError::Closed(self.topic.to_string()));
        }
        let (ledger, pending) = {
            let _turn = self.appends.lock().await;
            let writer = {
                let st = self.state();
                if let Some(e) = &st.failed {
                    return Err(e.clone());
                }
                let full = st.entries >= self.cfg.max_entries_per_ledger
                    || st.bytes >= self.cfg.max_ledger_bytes
                    || st.created.elapsed() >= self.cfg.max_ledger_age;
                st.writer.clone().filter(|_| !full)
            };
            let writer = match writer {
                Some(w) => w,
                None => {
                    // Rollover, holding only the append queue.
                    if let Err(e) = self.roll().await {
                        return Err(self.fail(e));
                    }
                    match self.state().writer.clone() {
                        Some(w) => w,
                        None => return Err(self.fail(BrokerError::Closed(self.topic.to_string()))),
                    }
                }
            };
            match writer.submit(payload.clone()).await {
                Ok(pending) => {
                    let mut st = self.state();
                    st.entries += 1;
                    st.bytes += payload.len() as u64;
                    (writer.id(), pending)
                }
                // Refused before it was given an entry id: only this append fails.
                Err(e @ BookieError::TooLarge { .. }) => return Err(self.storage_error(e)),
                Err(e) => return Err(self.fail(self.storage_error(e))),
            }
        };
        match pending.await {
            Ok(entry) => {
                let pos = Position {
                    ledger,
                    entry: EntryId::new(entry),
                };
                // Cached before readers are told about it, so a tailing read finds it.
                if self.read_recently() {
                    self.cache
                        .lock()
                        .expect("entry cache")
                        .insert(pos, payload, Instant::now());
                }
                self.last_confirmed.send_if_modified(|cur| {
                    if *cur < Some(pos) {
                        *cur = Some(pos);
                        true
                    } else {
                        false
                    }
                });
                Ok(pos)
            }
            Err(e) => Err(self.fail(self.storage_error(e))),
        }
    }

    /// Closes the current ledger (waiting for its appends) and starts the next one. Call
    /// holding the append queue.
    async fn roll(&self) -> Result<()> {
        let current = self.state().writer.clone();
        if let Some(w) = current {
            let last = w.close().await.map_err(|e| self.storage_error(e))?;
            self.record_closed(w.id(), last).await?;
        }
        self.start_ledger().await
    }

    /// Whether [`Self::read`] ran within the last [`CACHE_TTL`].
    fn read_recently(&self) -> bool {
        let last = self.last_read_ms.load(std::sync::atomic::Ordering::Relaxed);
        last != u64::MAX
            && (self.opened.elapsed().as_millis() as u64).saturating_sub(last) <= CACHE_TTL.as_millis() as u64
    }

    /// Drops cached entries older than [`CACHE_TTL`] (run periodically, so a topic that
    /// went quiet gives its share of the budget back).
    pub fn expire_cache(&self) {
        self.cache.lock().expect("entry cache").expire(Instant::now());
    }

    /// Bytes this topic has cached.
    pub fn cached_bytes(&self) -> usize {
        self.cache.lock().expect("entry cache").bytes
    }

    /// Whether appends fail for good (taken over, closed, or a storage failure): the owner
    /// should unload the topic so the next load recovers it.
    pub async fn is_failed(&self) -> bool {
        self.abandoned.load(std::sync::atomic::Ordering::Acquire) || self.state().failed.is_some()
    }

    /// Stops appending for good without closing the ledger or writing metadata: the
    /// topic's ownership was lost and the next owner recovers (fences) the ledger.
    pub fn abandon(&self) {
        self.stopped.cancel();
        self.abandoned.store(true, std::sync::atomic::Ordering::Release);
        self.state()
            .failed
            .get_or_insert(BrokerError::Closed(self.topic.to_string()));
    }

    /// Reads up to `max` entries from `from` on (inclusive), across ledgers, never past
    /// the last confirmed position.
    pub async fn read(&self, from: Position, max: usize) -> Result<Vec<(Position, Bytes)>> {
        self.last_read_ms.store(
            self.opened.elapsed().as_millis() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        let cached = self.cache.lock().expect("entry cache").run(from, max);
        if !cached.is_empty() {
            return Ok(cached);
        }
        let (ledgers, current) = {
            let st = self.state();
            (st.info.ledgers.clone(), st.writer.clone())
        };
        let mut out = Vec::new();
        let mut idx = match ledgers.iter().position(|l| l.id >= from.ledger.get()) {
            Some(i) => i,
            None => return Ok(out),
        };
        let mut first = if ledgers[idx].id == from.ledger.get() {
            from.entry.get()
        } else {
            0
        };
        while out.len() < max && idx < ledgers.len() {
            let info = &ledgers[idx];
            let id = LedgerId::new(info.id).expect("stored ids are valid");
            let want = (max - out.len()) as u64;
            let entries = match current.as_ref().filter(|w| w.id() == id) {
                Some(w) => match w.lac() {
                    Some(lac) if first <= lac => w
                        .read(first, lac.min(first + want - 1))
                        .await?
                        .into_iter()
                        .map(|e| (e.entry, e.payload))
                        .collect(),
                    _ => Vec::new(),
                },
                None if first < info.entries => {
                    self.read_closed(info, first, (info.entries - 1).min(first + want - 1))
                        .await?
                }
                None => Vec::new(),
            };
            let n = entries.len() as u64;
            out.extend(entries.into_iter().map(|(e, payload)| {
                (
                    Position {
                        ledger: id,
                        entry: EntryId::new(e),
                    },
                    payload,
                )
            }));
            if n == 0 || current.as_ref().is_some_and(|w| w.id() == id) {
                if n == 0 {
                    idx += 1;
                    first = 0;
                    continue;
                }
                break;
            }
            first += n;
            if first >= info.entries {
                idx += 1;
                first = 0;
            }
        }
        Ok(out)
    }

    /// Reads entries `first..=last` of closed ledger `info`: from its bookies, or from
    /// object storage once it is offloaded and its bookie copy is gone (or unreadable).
    async fn read_closed(&self, info: &LedgerInfo, first: u64, last: u64) -> Result<Vec<(u64, Bytes)>> {
        let id = LedgerId::new(info.id).expect("stored ids are valid");
        let offloaded = info.offload.filter(OffloadInfo::readable);
        if let Some(o) = offloaded.filter(|o| o.bookie_deleted) {
            return self.read_offloaded(info, o, first, last).await;
        }
        let from_bookies = async {
            let reader = self.reader(id).await?;
            Ok::<_, BrokerError>(
                reader
                    .read(first, last)
                    .await?
                    .into_iter()
                    .map(|e| (e.entry, e.payload))
                    .collect(),
            )
        }
        .await;
        match (from_bookies, offloaded) {
            (Ok(v), _) => Ok(v),
            (Err(e), Some(o)) => {
                tracing::debug!(topic = %self.topic, ledger = info.id, error = %e, "bookie copy unreadable; reading the offloaded copy");
                self.read_offloaded(info, o, first, last).await
            }
            (Err(e), None) => Err(e),
        }
    }

    async fn read_offloaded(
        &self,
        info: &LedgerInfo,
        o: OffloadInfo,
        first: u64,
        last: u64,
    ) -> Result<Vec<(u64, Bytes)>> {
        let read = async {
            let ledger = self.open_offloaded(info, o).await?;
            ledger.read(first, last).await
        }
        .await;
        read.map_err(|e| {
            if matches!(e, BrokerError::Offload(_)) {
                let mut st = self.offload_status.lock().expect("offload status");
                st.last_read_error = Some(e.to_string());
                st.last_read_error_ms = now_ms();
            }
            e
        })
    }

    async fn open_offloaded(&self, info: &LedgerInfo, o: OffloadInfo) -> Result<Arc<OffloadedLedger>> {
        if let Some((_, l)) = self.offloaded_ledgers().iter().find(|(id, _)| *id == info.id) {
            return Ok(l.clone());
        }
        let Some(off) = &self.cfg.offload else {
            return Err(BrokerError::Offload(format!(
                "ledger {} of {} is in object storage, but this broker has no [offload] url configured",
                info.id, self.topic
            )));
        };
        let id = LedgerId::new(info.id).expect("stored ids are valid");
        let l = off.open(&self.topic, id, o.attempt, info.entries).await?;
        let mut open = self.offloaded_ledgers();
        if !open.iter().any(|(id, _)| *id == info.id) {
            open.push((info.id, l.clone()));
            if open.len() > MAX_OPEN_OFFLOADED {
                open.remove(0);
            }
        }
        Ok(l)
    }

    fn offloaded_ledgers(&self) -> std::sync::MutexGuard<'_, Vec<(u64, Arc<OffloadedLedger>)>> {
        self.offloaded.lock().expect("offloaded ledgers")
    }

    async fn reader(&self, id: LedgerId) -> Result<Arc<LedgerReader>> {
        if let Some(r) = self.readers.lock().expect("reader cache").get(&id.get()) {
            return Ok(r.clone());
        }
        let r = Arc::new(self.client.open(id).await?);
        self.readers.lock().expect("reader cache").insert(id.get(), r.clone());
        Ok(r)
    }

    /// The first position of the topic (oldest retained entry), if any.
    pub async fn first_position(&self) -> Option<Position> {
        let st = self.state();
        st.info
            .ledgers
            .iter()
            .find(|l| l.entries > 0 || st.writer.as_ref().is_some_and(|w| w.id().get() == l.id))
            .map(|l| Position {
                ledger: LedgerId::new(l.id).expect("stored ids are valid"),
                entry: EntryId::new(0),
            })
    }

    /// Deletes every closed ledger that lies wholly before `pos` (all cursors have passed
    /// it): removed from the list first (compare-and-set), then from the bookies.
    pub async fn trim_before(&self, pos: Position) -> Result<usize> {
        let doomed: Vec<LedgerInfo> = {
            let _list = self.list.lock().await;
            let (doomed, info) = {
                let st = self.state();
                let current = st.writer.as_ref().map(|w| w.id().get());
                let doomed: Vec<LedgerInfo> = st
                    .info
                    .ledgers
                    .iter()
                    .filter(|l| l.id < pos.ledger.get() && Some(l.id) != current)
                    .cloned()
                    .collect();
                let mut info = st.info.clone();
                info.ledgers.retain(|l| !doomed.iter().any(|d| d.id == l.id));
                (doomed, info)
            };
            if doomed.is_empty() {
                return Ok(0);
            }
            self.store_info(info).await?;
            doomed
        };
        let ids: Vec<u64> = doomed.iter().map(|l| l.id).collect();
        self.cache.lock().expect("entry cache").forget_ledgers(&ids);
        self.offloaded_ledgers().retain(|(id, _)| !ids.contains(id));
        for l in &doomed {
            self.readers.lock().expect("reader cache").remove(&l.id);
            delete_ledger_copies(&self.topic, &self.client, self.cfg.offload.as_deref(), l).await;
        }
        Ok(doomed.len())
    }

    /// Closes the current ledger cleanly (unload, shutdown): later appends fail at once,
    /// the ones in flight are waited for, and the ledger is closed and recorded. Bounded
    /// by [`CLOSE_TIMEOUT`]: past it (bookies unreachable, say) the topic is abandoned
    /// instead and the next owner's recovery closes the ledger.
    pub async fn close(&self) -> Result<()> {
        self.stopped.cancel();
        self.state()
            .failed
            .get_or_insert(BrokerError::Closed(self.topic.to_string()));
        let closed = tokio::time::timeout(CLOSE_TIMEOUT, async {
            let _turn = self.appends.lock().await;
            let current = self.state().writer.clone();
            match current {
                Some(w) => {
                    let last = w.close().await.map_err(|e| self.storage_error(e))?;
                    self.record_closed(w.id(), last).await
                }
                None => Ok(()),
            }
        })
        .await;
        match closed {
            Ok(r) => r,
            Err(_) => {
                self.abandon();
                Err(BrokerError::Unavailable(format!(
                    "closing {} took longer than {CLOSE_TIMEOUT:?}; its ledger is left for the next owner to recover",
                    self.topic
                )))
            }
        }
    }
}

/// Deletes a ledger the topic's list no longer names: its bookie copy (unless already
/// deleted) and its offloaded objects. Failures are logged: the ledger is unreferenced.
pub async fn delete_ledger_copies(
    topic: &TopicName,
    client: &LedgerClient,
    offload: Option<&Offloader>,
    l: &LedgerInfo,
) {
    let Ok(id) = LedgerId::new(l.id) else { return };
    if !l.offload.is_some_and(|o| o.bookie_deleted) {
        match client.delete(id).await {
            Ok(()) | Err(BookieError::NoSuchLedger(_)) => {}
            Err(e) => {
                tracing::warn!(%topic, ledger = l.id, error = %e, "ledger removed from the topic but not deleted from bookies");
            }
        }
    }
    let Some(o) = l.offload else { return };
    match offload {
        Some(off) => {
            if let Err(e) = off.delete_attempt(topic, l.id, o.attempt).await {
                tracing::warn!(%topic, ledger = l.id, error = %e, "ledger removed from the topic but its offloaded objects were not deleted");
            }
        }
        None => {
            tracing::warn!(%topic, ledger = l.id, attempt = format!("{:016x}", o.attempt),
                "ledger removed from the topic; its offloaded objects stay in object storage (no [offload] configured)");
        }
    }
}

/// The outcome of [`ManagedLedger::settle_ambiguous`].
enum Settled {
    /// The write committed: the list names the ledger.
    Listed,
    /// The list does not name the ledger and never will (the lost write can no longer
    /// commit): safe to delete it.
    NotListed,
    /// Could not tell: keep the ledger (a leaked empty ledger costs a key; a deleted
    /// listed one would make the topic unloadable).
    Unknown,
}

/// A metadata error of a topic's write: a changed ownership guard means another broker
/// owns the topic now.
fn lost_or(topic: &TopicName, e: MetaError) -> BrokerError {
    match e {
        MetaError::GuardChanged(_) => BrokerError::Fenced(
            topic.to_string(),
            "this broker no longer owns the topic's bundle".into(),
        ),
        e => e.into(),
    }
}
