//! The storage engine of one bookie: adds, reads, fencing, deletion and node state over
//! the journal, write cache, entry logs and index.
//!
//! Add path: validate → ledger checks (token, fence) and write-cache insert under the
//! ledger's lock → journal group commit → acknowledge. Read path: write cache → entry log
//! via the index. A flusher thread ([`flusher`]) moves the cache into entry logs,
//! checkpoints the journal and collects garbage.
//!
//! Invariants:
//! - An add is acknowledged only after its journal group's fdatasync returned.
//! - Fencing sets the flag under the ledger's lock, the same lock an add holds while it
//!   checks the flag and inserts into the cache, so once `fence` returns every later add of
//!   the old writer fails, and every earlier one is visible to reads. The flag is in the
//!   index (synced) before `fence` returns, so it survives restarts.
//! - A deleted ledger leaves a tombstone; replay and flushes skip tombstoned ledgers, so a
//!   deletion is never undone.
//! - Nothing here holds a lock across an await; RocksDB and file I/O run on blocking threads.

mod flusher;
mod recovery;

use crate::config::BookieConfig;
use crate::entry_log::{self, EntryLogs};
use crate::error::{BookieError, Result};
use crate::format;
use crate::index::{Index, LedgerMeta};
use crate::journal::{JournalAdd, JournalHandle};
use crate::write_cache::WriteCache;
use bytes::Bytes;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use strata_common::{EntryId, LedgerId, ids::entry_checksum};
use tokio::sync::{OnceCell, watch};

/// Longest writer token accepted (BookKeeper master keys are 20-byte digests).
pub const MAX_TOKEN_BYTES: usize = 64;
/// Default and maximum bytes of one read response.
pub const DEFAULT_READ_BYTES: usize = 4 << 20;
/// Most entries in one read response (many tiny entries must not make one huge response).
pub const MAX_READ_ENTRIES: usize = 10_000;
/// Longest a LAC long-poll may wait.
pub const MAX_LAC_WAIT: Duration = Duration::from_secs(60);

/// One add as the service hands it over.
#[derive(Debug, Clone)]
pub struct AddRequest {
    pub ledger: u64,
    pub entry: u64,
    pub token: Bytes,
    pub lac: Option<u64>,
    pub checksum: u32,
    pub payload: Bytes,
    pub recovery: bool,
}

/// An entry as read.
#[derive(Debug, Clone)]
pub struct ReadEntry {
    pub entry: u64,
    pub checksum: u32,
    pub payload: Bytes,
}

/// What a range read returns.
#[derive(Debug, Clone)]
pub struct ReadResult {
    pub entries: Vec<ReadEntry>,
    pub lac: Option<u64>,
    pub fenced: bool,
}

/// What fencing returns.
#[derive(Debug, Clone, Copy)]
pub struct FenceResult {
    pub lac: Option<u64>,
    pub last_entry: Option<u64>,
}

/// The node's state, for NodeInfo and registration.
#[derive(Debug, Clone)]
pub struct NodeState {
    pub free_bytes: u64,
    pub total_bytes: u64,
    pub read_only: Option<String>,
    pub ledger_count: u64,
}

struct LedgerInner {
    token: Bytes,
    fenced: bool,
    deleted: bool,
}

/// In-memory state of one ledger.
struct Ledger {
    inner: Mutex<LedgerInner>,
    lac: watch::Sender<Option<u64>>,
    /// Set once the ledger's state is durable in the index; adds of a new ledger wait for
    /// it before they can be acknowledged.
    persisted: OnceCell<()>,
}

impl Ledger {
    fn new(token: Bytes, fenced: bool, lac: Option<u64>) -> Self {
        Self {
            inner: Mutex::new(LedgerInner {
                token,
                fenced,
                deleted: false,
            }),
            lac: watch::Sender::new(lac),
            persisted: OnceCell::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LedgerInner> {
        self.inner.lock().expect("ledger lock")
    }

    fn meta(&self) -> LedgerMeta {
        let g = self.lock();
        LedgerMeta {
            fenced: g.fenced,
            lac: *self.lac.borrow(),
            token: g.token.clone(),
        }
    }

    fn advance_lac(&self, lac: u64) {
        self.lac.send_if_modified(|cur| {
            if cur.is_none_or(|c| lac > c) {
                *cur = Some(lac);
                true
            } else {
                false
            }
        });
    }
}

/// State shared by the async API, the flusher thread and the disk monitor.
pub(crate) struct Shared {
    cfg: BookieConfig,
    index: Index,
    logs: EntryLogs,
    cache: WriteCache,
    ledgers: RwLock<HashMap<u64, Arc<Ledger>>>,
    tombstones: RwLock<HashSet<u64>>,
    /// Serialises index writes of flushes and compaction against ledger deletion.
    index_lock: Mutex<()>,
    /// Why the bookie refuses adds (disk full), if it does.
    read_only: Mutex<Option<String>>,
}

impl Shared {
    fn ledger(&self, id: u64) -> Option<Arc<Ledger>> {
        self.ledgers.read().expect("ledger map").get(&id).cloned()
    }

    fn is_tombstoned(&self, id: u64) -> bool {
        self.tombstones.read().expect("tombstones").contains(&id)
    }

    /// Writes a ledger's current state to the index. The state is read under the index
    /// lock, the lock flushes also write ledger state under, so the last write always
    /// carries the newest flags (a fence is never overwritten by an older snapshot), and a
    /// deleted ledger is never written back. Blocking.
    fn persist_ledger(&self, id: u64, ledger: &Ledger) -> Result<()> {
        let _g = self.index_lock.lock().expect("index lock");
        if self.is_tombstoned(id) {
            return Err(BookieError::NoSuchLedger(id));
        }
        self.index.put_ledger(id, &ledger.meta())
    }

    /// Reads entries `first..=last` of `ledger` in order until `max_bytes` of payload
    /// (the entry crossing it included), [`MAX_READ_ENTRIES`] or the first entry this
    /// bookie does not have. Entries in the entry logs that follow each other on disk are
    /// read together ([`EntryLogs::read_run`]); a run that fails (compaction moved it, say)
    /// is read again entry by entry. Blocking.
    fn read_range(&self, ledger: u64, first: u64, last: u64, max_bytes: usize) -> Result<Vec<ReadEntry>> {
        /// Payload bytes of an entry log record of `len` bytes.
        fn payload_len(len: u32) -> usize {
            (len as usize).saturating_sub(format::RECORD_HEADER_LEN + entry_log::FIXED_LEN)
        }
        let mut out = Vec::new();
        let mut run: Vec<(u64, entry_log::Location)> = Vec::new();
        let mut bytes = 0usize;
        let mut e = first;
        // Reads the run into `out`; false if an entry of it is gone (the read ends there).
        let flush = |run: &mut Vec<(u64, entry_log::Location)>, out: &mut Vec<ReadEntry>| -> Result<bool> {
            let mut complete = true;
            match self.logs.read_run(ledger, run) {
                Ok(stored) => out.extend(stored.into_iter().map(|s| ReadEntry {
                    entry: s.entry,
                    checksum: s.checksum,
                    payload: s.payload,
                })),
                Err(_) => {
                    for (entry, _) in run.iter() {
                        match self.read_entry(ledger, *entry)? {
                            Some(r) => out.push(r),
                            None => {
                                complete = false;
                                break;
                            }
                        }
                    }
                }
            }
            run.clear();
            Ok(complete)
        };
        while e <= last && bytes < max_bytes && out.len() + run.len() < MAX_READ_ENTRIES {
            if let Some(c) = self.cache.get(ledger, e) {
                if !flush(&mut run, &mut out)? {
                    return Ok(out);
                }
                bytes += c.payload.len();
                out.push(ReadEntry {
                    entry: e,
                    checksum: c.checksum,
                    payload: c.payload,
                });
            } else {
                let Some(loc) = self.index.location(ledger, e)? else {
                    break;
                };
                if let Some((_, prev)) = run.last() {
                    let follows = prev.log == loc.log && prev.offset.checked_add(prev.len as u64) == Some(loc.offset);
                    let span = loc
                        .offset
                        .saturating_add(loc.len as u64)
                        .saturating_sub(run[0].1.offset);
                    if (!follows || span > entry_log::MAX_RUN_BYTES as u64) && !flush(&mut run, &mut out)? {
                        return Ok(out);
                    }
                }
                bytes += payload_len(loc.len);
                run.push((e, loc));
            }
            match e.checked_add(1) {
                Some(n) => e = n,
                None => break,
            }
        }
        flush(&mut run, &mut out)?;
        Ok(out)
    }

    /// Reads one entry from the cache or the entry logs. Blocking.
    fn read_entry(&self, ledger: u64, entry: u64) -> Result<Option<ReadEntry>> {
        if let Some(c) = self.cache.get(ledger, entry) {
            return Ok(Some(ReadEntry {
                entry,
                checksum: c.checksum,
                payload: c.payload,
            }));
        }
        // Compaction may move an entry between our index lookup and the read; look again
        // once if its old log is gone.
        for attempt in 0..2 {
            let Some(loc) = self.index.location(ledger, entry)? else {
                return Ok(None);
            };
            match self.logs.read(loc, ledger, entry) {
                Ok(s) => {
                    return Ok(Some(ReadEntry {
                        entry,
                        checksum: s.checksum,
                        payload: s.payload,
                    }));
                }
                Err(_) if attempt == 0 && !self.logs.ids().contains(&loc.log) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }
}

/// The storage engine. Cheap to share behind an `Arc`.
pub struct Storage {
    shared: Arc<Shared>,
    journal: JournalHandle,
    journal_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    flusher: flusher::FlusherHandle,
    shutting_down: AtomicBool,
    data_dir: PathBuf,
    /// Why new writes are refused while the bookie is decommissioned (see
    /// [`Storage::set_draining`]); recovery adds are still accepted.
    draining: Mutex<Option<String>>,
}

impl Storage {
    /// Opens (creating if needed) the bookie's data directory, replays the journal from
    /// the last checkpoint and starts the journal and flusher threads. Blocking: call from
    /// a blocking context.
    pub fn open(cfg: BookieConfig) -> Result<Self> {
        cfg.validate().map_err(BookieError::InvalidArgument)?;
        recovery::open(cfg)
    }

    pub fn config(&self) -> &BookieConfig {
        &self.shared.cfg
    }

    fn check_writable(&self) -> Result<()> {
        if self.shutting_down.load(Ordering::Acquire) {
            return Err(BookieError::ShuttingDown);
        }
        if self.journal.is_poisoned() {
            return Err(BookieError::ReadOnly(
                "the journal failed to write or fsync; restart the bookie after checking its disk".into(),
            ));
        }
        if let Some(why) = self.shared.read_only.lock().expect("read-only lock").clone() {
            return Err(BookieError::ReadOnly(why));
        }
        Ok(())
    }

    /// Refuses (or accepts again) new writes while the bookie is decommissioned. Unlike
    /// disk-full read-only mode, recovery adds are still accepted: a ledger recovery whose
    /// write set names this bookie may need its copy to reach an ack quorum, and the data
    /// is re-replicated elsewhere afterwards. Writers get `READ_ONLY` and replace it.
    pub fn set_draining(&self, why: Option<String>) {
        let mut d = self.draining.lock().expect("draining lock");
        if *d != why {
            match &why {
                Some(w) => tracing::info!(reason = %w, "refusing new writes"),
                None => tracing::info!("accepting new writes again"),
            }
            *d = why;
        }
    }

    fn validate_add(&self, a: &AddRequest) -> Result<()> {
        LedgerId::new(a.ledger).map_err(|e| BookieError::InvalidArgument(e.to_string()))?;
        if a.entry == u64::MAX {
            return Err(BookieError::InvalidArgument(format!(
                "entry id {} is reserved",
                u64::MAX
            )));
        }
        let max = self.shared.cfg.max_entry_bytes as usize;
        if a.payload.len() > max {
            return Err(BookieError::TooLarge {
                what: "entry payload",
                size: a.payload.len(),
                limit: max,
            });
        }
        if a.token.len() > MAX_TOKEN_BYTES {
            return Err(BookieError::InvalidArgument(format!(
                "writer_token is {} bytes, at most {MAX_TOKEN_BYTES} allowed",
                a.token.len()
            )));
        }
        let ledger = LedgerId::new(a.ledger).expect("checked above");
        let actual = entry_checksum(ledger, EntryId::new(a.entry), &a.payload);
        if actual != a.checksum {
            return Err(BookieError::BadChecksum {
                ledger: a.ledger,
                entry: a.entry,
                sent: a.checksum,
                actual,
            });
        }
        Ok(())
    }

    /// Finds a ledger, creating it (with this token) if the bookie has never seen it.
    /// Returns whether it was created by this call.
    fn ledger_for_write(&self, id: u64, token: &Bytes, fenced: bool) -> Result<Arc<Ledger>> {
        if let Some(l) = self.shared.ledger(id) {
            return Ok(l);
        }
        let mut map = self.shared.ledgers.write().expect("ledger map");
        if let Some(l) = map.get(&id) {
            return Ok(l.clone());
        }
        if self.shared.is_tombstoned(id) {
            return Err(BookieError::NoSuchLedger(id));
        }
        let l = Arc::new(Ledger::new(token.clone(), fenced, None));
        map.insert(id, l.clone());
        Ok(l)
    }

    /// Makes a ledger's state durable (once) before anything of it is acknowledged.
    async fn ensure_persisted(&self, id: u64, ledger: &Arc<Ledger>) -> Result<()> {
        ledger
            .persisted
            .get_or_try_init(|| async {
                let shared = self.shared.clone();
                let ledger = ledger.clone();
                tokio::task::spawn_blocking(move || shared.persist_ledger(id, &ledger))
                    .await
                    .map_err(|e| BookieError::io("index write task", e))?
            })
            .await
            .map(|_| ())
    }

    /// Adds a batch of entries. Returns one result per request, in order; `Ok` means the
    /// entry is durable in the journal.
    ///
    /// Cancellation: dropping the future after entries entered the write cache leaves them
    /// there (and later in entry logs) without an acknowledgement — the state of any add
    /// that was never acknowledged, which writers must tolerate anyway.
    pub async fn add(&self, reqs: Vec<AddRequest>) -> Vec<Result<()>> {
        let mut results: Vec<Result<()>> = Vec::with_capacity(reqs.len());
        let mut accepted: Vec<(usize, Arc<Ledger>)> = Vec::with_capacity(reqs.len());
        let writable = self.check_writable();
        let draining = self.draining.lock().expect("draining lock").clone();
        for (i, r) in reqs.iter().enumerate() {
            let res = writable
                .clone()
                .and_then(|_| match &draining {
                    Some(why) if !r.recovery => Err(BookieError::ReadOnly(why.clone())),
                    _ => Ok(()),
                })
                .and_then(|_| self.validate_add(r))
                .and_then(|_| self.ledger_for_write(r.ledger, &r.token, false));
            match res {
                Ok(l) => {
                    results.push(Ok(()));
                    accepted.push((i, l));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        if accepted.is_empty() {
            return results;
        }
        let bytes: u64 = accepted.iter().map(|(i, _)| reqs[*i].payload.len() as u64).sum();
        self.shared
            .cache
            .wait_for_space(bytes, || self.flusher.request_flush())
            .await;
        // Check and insert under each ledger's lock (see the module invariants).
        let mut journal = Vec::with_capacity(accepted.len());
        let mut journaled = Vec::with_capacity(accepted.len());
        for (i, ledger) in &accepted {
            let r = &reqs[*i];
            let g = ledger.lock();
            let verdict = if g.deleted {
                Err(BookieError::NoSuchLedger(r.ledger))
            } else if g.token != r.token {
                Err(BookieError::Unauthorized(r.ledger))
            } else if g.fenced && !r.recovery {
                Err(BookieError::Fenced(r.ledger))
            } else {
                Ok(())
            };
            match verdict {
                Ok(()) => {
                    self.shared
                        .cache
                        .insert(r.ledger, r.entry, r.checksum, r.payload.clone(), r.lac);
                    drop(g);
                    if let Some(lac) = r.lac {
                        ledger.advance_lac(lac);
                    }
                    journal.push(JournalAdd {
                        ledger: r.ledger,
                        entry: r.entry,
                        lac: r.lac.unwrap_or(u64::MAX),
                        checksum: r.checksum,
                        payload: r.payload.clone(),
                    });
                    journaled.push((*i, ledger.clone()));
                }
                Err(e) => results[*i] = Err(e),
            }
        }
        if self.shared.cache.active_bytes() >= self.shared.cfg.flush_threshold_bytes {
            self.flusher.request_flush();
        }
        if journaled.is_empty() {
            return results;
        }
        // New ledgers' tokens must be durable before their entries are acknowledged.
        let mut seen = HashSet::new();
        for (i, ledger) in &journaled {
            let id = reqs[*i].ledger;
            if seen.insert(id)
                && let Err(e) = self.ensure_persisted(id, ledger).await
            {
                for (j, _) in &journaled {
                    results[*j] = Err(e.clone());
                }
                return results;
            }
        }
        let outcome = self.journal.append(journal).await;
        if let Err(e) = outcome {
            for (i, _) in &journaled {
                results[*i] = Err(e.clone());
            }
        }
        results
    }

    /// Reads entries `first..=last` of a ledger, stopping at the first gap or once
    /// `max_bytes` is reached (at least one entry is returned). Every payload is checked
    /// against the writer's checksum before it is returned.
    pub async fn read(&self, ledger: u64, first: u64, last: u64, max_bytes: usize) -> Result<ReadResult> {
        let lid = LedgerId::new(ledger).map_err(|e| BookieError::InvalidArgument(e.to_string()))?;
        if last < first {
            return Err(BookieError::InvalidArgument(format!(
                "last_entry {last} is before first_entry {first}"
            )));
        }
        let l = self.shared.ledger(ledger).ok_or(BookieError::NoSuchLedger(ledger))?;
        let max_bytes = if max_bytes == 0 {
            DEFAULT_READ_BYTES
        } else {
            max_bytes.min(DEFAULT_READ_BYTES)
        };
        let shared = self.shared.clone();
        let entries = tokio::task::spawn_blocking(move || -> Result<Vec<ReadEntry>> {
            let out = shared.read_range(ledger, first, last, max_bytes)?;
            if out.is_empty() {
                if shared.ledger(ledger).is_none() {
                    return Err(BookieError::NoSuchLedger(ledger));
                }
                return Err(BookieError::NoSuchEntry(ledger, first));
            }
            for r in &out {
                let actual = entry_checksum(lid, EntryId::new(r.entry), &r.payload);
                if actual != r.checksum {
                    return Err(BookieError::Corruption(format!(
                        "ledger {ledger} entry {}: stored payload does not match its checksum",
                        r.entry
                    )));
                }
            }
            Ok(out)
        })
        .await
        .map_err(|e| BookieError::io("read task", e))??;
        let fenced = l.lock().fenced;
        let lac = *l.lac.borrow();
        Ok(ReadResult { entries, lac, fenced })
    }

    /// The LAC this bookie knows for a ledger; with `wait`, waits (at most `wait`) for it
    /// to pass `previous`.
    pub async fn read_lac(&self, ledger: u64, previous: Option<u64>, wait: Duration) -> Result<(Option<u64>, bool)> {
        LedgerId::new(ledger).map_err(|e| BookieError::InvalidArgument(e.to_string()))?;
        let l = self.shared.ledger(ledger).ok_or(BookieError::NoSuchLedger(ledger))?;
        let mut rx = l.lac.subscribe();
        let advanced = |v: &Option<u64>| match (v, previous) {
            (Some(v), Some(p)) => *v > p,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if !wait.is_zero() {
            let _ = tokio::time::timeout(wait.min(MAX_LAC_WAIT), rx.wait_for(advanced)).await;
        }
        let lac = *rx.borrow();
        let fenced = l.lock().fenced;
        Ok((lac, fenced))
    }

    /// Fences a ledger (creating it fenced if this bookie has never seen it).
    pub async fn fence(&self, ledger: u64, token: Bytes) -> Result<FenceResult> {
        LedgerId::new(ledger).map_err(|e| BookieError::InvalidArgument(e.to_string()))?;
        if token.len() > MAX_TOKEN_BYTES {
            return Err(BookieError::InvalidArgument(format!(
                "writer_token is {} bytes, at most {MAX_TOKEN_BYTES} allowed",
                token.len()
            )));
        }
        if self.shutting_down.load(Ordering::Acquire) {
            return Err(BookieError::ShuttingDown);
        }
        let l = self.ledger_for_write(ledger, &token, true)?;
        {
            let mut g = l.lock();
            if g.deleted {
                return Err(BookieError::NoSuchLedger(ledger));
            }
            if g.token != token {
                return Err(BookieError::Unauthorized(ledger));
            }
            // Set before persisting: every state write from here on carries the flag.
            g.fenced = true;
        }
        let shared = self.shared.clone();
        let state = l.clone();
        let last_entry = tokio::task::spawn_blocking(move || -> Result<Option<u64>> {
            shared.persist_ledger(ledger, &state)?;
            Ok(shared.cache.last_entry(ledger).max(shared.index.last_entry(ledger)?))
        })
        .await
        .map_err(|e| BookieError::io("fence task", e))??;
        let _ = l.persisted.set(());
        tracing::info!(ledger, ?last_entry, "ledger fenced");
        Ok(FenceResult {
            lac: *l.lac.borrow(),
            last_entry,
        })
    }

    /// Deletes a ledger. Returns whether it existed. Its space comes back at the next
    /// garbage collection.
    pub async fn delete_ledger(&self, ledger: u64) -> Result<bool> {
        LedgerId::new(ledger).map_err(|e| BookieError::InvalidArgument(e.to_string()))?;
        let shared = self.shared.clone();
        let existed = tokio::task::spawn_blocking(move || -> Result<bool> {
            let _g = shared.index_lock.lock().expect("index lock");
            // The map stays locked until the tombstone is in place, so no add can recreate
            // the ledger in between.
            let mut map = shared.ledgers.write().expect("ledger map");
            let removed = map.remove(&ledger);
            if removed.is_none() && shared.is_tombstoned(ledger) {
                return Ok(false);
            }
            if let Some(l) = &removed {
                l.lock().deleted = true;
            }
            if let Err(e) = shared.index.delete_ledger(ledger) {
                if let Some(l) = removed {
                    l.lock().deleted = false;
                    map.insert(ledger, l);
                }
                return Err(e);
            }
            shared.tombstones.write().expect("tombstones").insert(ledger);
            drop(map);
            shared.cache.remove_ledger(ledger);
            Ok(removed.is_some())
        })
        .await
        .map_err(|e| BookieError::io("delete task", e))??;
        tracing::info!(ledger, existed, "ledger deleted");
        Ok(existed)
    }

    /// Free space, read-only state and ledger count.
    pub fn node_state(&self) -> NodeState {
        let (free_bytes, total_bytes) = disk_space(&self.data_dir).unwrap_or((0, 0));
        let read_only = if self.journal.is_poisoned() {
            Some("the journal failed to write or fsync; restart the bookie after checking its disk".into())
        } else {
            let disk = self.shared.read_only.lock().expect("read-only lock").clone();
            disk.or_else(|| self.draining.lock().expect("draining lock").clone())
        };
        NodeState {
            free_bytes,
            total_bytes,
            read_only,
            ledger_count: self.shared.ledgers.read().expect("ledger map").len() as u64,
        }
    }

    /// Re-checks disk usage now and switches read-only mode on or off.
    pub fn check_disk(&self) {
        flusher::check_disk(&self.shared, &self.data_dir);
    }

    /// Flushes the write cache to entry logs and checkpoints the journal; returns once done.
    pub async fn flush(&self) -> Result<()> {
        self.flusher.flush().await
    }

    /// Runs garbage collection now; returns once done.
    pub async fn gc(&self) -> Result<()> {
        self.flusher.gc().await
    }

    /// Stops accepting adds, lets in-flight adds finish, flushes and checkpoints, and stops
    /// the threads. The caller must have stopped submitting work.
    pub async fn close(&self) -> Result<()> {
        self.shutting_down.store(true, Ordering::Release);
        let flushed = self.flusher.shutdown().await;
        self.journal.stop().await;
        let thread = self.journal_thread.lock().expect("journal thread").take();
        if let Some(t) = thread {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        flushed
    }
}

/// (free, total) bytes of the file system holding `path`.
pub fn disk_space(path: &std::path::Path) -> std::io::Result<(u64, u64)> {
    let s = rustix::fs::statvfs(path)?;
    Ok((s.f_bavail * s.f_frsize, s.f_blocks * s.f_frsize))
}
