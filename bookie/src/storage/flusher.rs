//! The flusher thread: moves the write cache into entry logs, checkpoints the journal,
//! removes journal files the checkpoint has passed, collects garbage, compacts entry logs
//! and watches disk usage.
//!
//! Invariants:
//! - A flush's checkpoint is the journal's durable mark read *before* the cache swap, so it
//!   only covers entries in the snapshot (see `write_cache`). The entry log is fdatasynced
//!   before the index batch (locations + checkpoint) is written, synced, in one batch.
//! - A failed flush keeps its snapshot and checkpoint and is retried; the data stays in the
//!   journal meanwhile, and adds wait for cache space instead of being dropped.
//! - Garbage collection deletes an entry log only when no live ledger has bytes in it;
//!   compaction moves live entries first and repoints only index entries that still point
//!   at the old location, under the index lock that ledger deletion also takes.

use super::Shared;
use crate::entry_log::{self, EntryLogWriter, Location};
use crate::error::{BookieError, Result};
use crate::format::{self, FileKind};
use crate::index::IndexBatch;
use crate::journal::{self, JournalHandle, JournalPos, replay::examine};
use crate::write_cache::Generation;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

pub(super) enum Cmd {
    Flush(Option<oneshot::Sender<Result<()>>>),
    Gc(oneshot::Sender<Result<()>>),
    Shutdown(oneshot::Sender<Result<()>>),
}

/// The flush and garbage-collection machinery; used directly during recovery, then owned
/// by the flusher thread.
pub(super) struct Flusher {
    pub shared: Arc<Shared>,
    pub journal_dir: PathBuf,
    pub writer: Option<EntryLogWriter>,
    pub next_log_id: u64,
    /// A snapshot whose flush failed, with its checkpoint, to retry.
    pub pending: Option<(Arc<Generation>, JournalPos)>,
    pub last_checkpoint: Option<JournalPos>,
}

impl Flusher {
    fn writer(&mut self) -> Result<&mut EntryLogWriter> {
        let roll = self
            .writer
            .as_ref()
            .is_none_or(|w| w.size() >= self.shared.cfg.entry_log_max_bytes);
        if roll {
            if let Some(mut old) = self.writer.take() {
                old.sync()?;
            }
            let id = self.next_log_id;
            self.next_log_id += 1;
            self.writer = Some(self.shared.logs.create(id)?);
        }
        Ok(self.writer.as_mut().expect("writer just set"))
    }

    /// Flushes the cache and checkpoints the journal at `mark` (which must have been read
    /// before this call swaps the cache).
    pub fn flush(&mut self, mark: JournalPos) -> Result<()> {
        let (snap, mark) = match self.pending.take() {
            Some(p) => p,
            None => match self.shared.cache.swap() {
                Some(s) => (s, mark),
                None => {
                    // Nothing cached: every journaled entry before `mark` is indexed.
                    if self.last_checkpoint.is_none_or(|c| mark > c) {
                        let mut b = IndexBatch::default();
                        b.set_checkpoint(mark);
                        self.shared.index.write(b)?;
                        self.after_checkpoint(mark);
                    }
                    return Ok(());
                }
            },
        };
        match self.write_snapshot(&snap, mark) {
            Ok(()) => {
                self.shared.cache.flushed();
                self.after_checkpoint(mark);
                Ok(())
            }
            Err(e) => {
                self.pending = Some((snap, mark));
                Err(e)
            }
        }
    }

    fn write_snapshot(&mut self, snap: &Generation, mark: JournalPos) -> Result<()> {
        let mut placed: Vec<(u64, u64, Location)> = Vec::new();
        for (&ledger, entries) in &snap.ledgers {
            if self.shared.is_tombstoned(ledger) {
                continue;
            }
            for (&entry, e) in entries {
                let w = self.writer()?;
                placed.push((ledger, entry, w.append(ledger, entry, e.checksum, &e.payload)?));
            }
        }
        if let Some(w) = self.writer.as_mut() {
            w.sync()?;
        }
        let _g = self.shared.index_lock.lock().expect("index lock");
        let mut batch = IndexBatch::default();
        let mut touched: HashMap<(u64, u64), u64> = HashMap::new();
        for (ledger, entry, loc) in placed {
            if self.shared.is_tombstoned(ledger) {
                continue;
            }
            batch.put_location(ledger, entry, loc);
            *touched.entry((loc.log, ledger)).or_default() += loc.len as u64;
        }
        self.add_usage(&mut batch, touched)?;
        for &ledger in snap.lacs.keys() {
            if let Some(l) = self.shared.ledger(ledger) {
                batch.put_ledger(ledger, &l.meta());
            }
        }
        batch.set_checkpoint(mark);
        self.shared.index.write(batch)
    }

    /// Adds bytes to the usage of (log, ledger) pairs. Only this thread writes usage, so
    /// read-modify-write is safe.
    fn add_usage(&self, batch: &mut IndexBatch, touched: HashMap<(u64, u64), u64>) -> Result<()> {
        for ((log, ledger), bytes) in touched {
            let before = self.shared.index.usage_of(log, ledger)?;
            batch.add_usage(log, ledger, before + bytes);
        }
        Ok(())
    }

    /// Removes journal files wholly before the checkpoint.
    fn after_checkpoint(&mut self, mark: JournalPos) {
        self.last_checkpoint = Some(mark);
        match journal::list_files(&self.journal_dir) {
            Ok(files) => {
                for (id, path) in files.into_iter().filter(|(id, _)| *id < mark.file_id) {
                    match std::fs::remove_file(&path) {
                        Ok(()) => tracing::debug!(file_id = id, "removed checkpointed journal file"),
                        Err(e) => {
                            tracing::warn!(file = %path.display(), error = %e, "cannot remove checkpointed journal file")
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(dir = %self.journal_dir.display(), error = %e, "cannot list journal files"),
        }
    }

    /// Deletes entry logs without live data and compacts mostly-dead ones.
    pub fn gc(&mut self) -> Result<()> {
        let usage = self.shared.index.usage()?;
        let current = self.writer.as_ref().map(|w| w.id);
        let with_usage: Vec<u64> = usage.iter().map(|(l, _)| *l).collect();
        for log in self.shared.logs.ids() {
            if Some(log) != current && !with_usage.contains(&log) {
                // Written by a flush that crashed before its index batch: nothing points here.
                tracing::info!(log, "removing entry log that no index entry refers to");
                self.shared.logs.remove(log)?;
            }
        }
        for (log, ledgers) in usage {
            if Some(log) == current {
                continue;
            }
            let total: u64 = ledgers.iter().map(|(_, b)| b).sum();
            let live: u64 = ledgers
                .iter()
                .filter(|(l, _)| !self.shared.is_tombstoned(*l))
                .map(|(_, b)| b)
                .sum();
            if live == 0 {
                let _g = self.shared.index_lock.lock().expect("index lock");
                let mut b = IndexBatch::default();
                for (ledger, _) in &ledgers {
                    b.delete_usage(log, *ledger);
                }
                self.shared.index.write(b)?;
                if self.shared.logs.ids().contains(&log) {
                    self.shared.logs.remove(log)?;
                }
                tracing::info!(log, bytes = total, "garbage-collected entry log");
            } else if (live as f64) < (total as f64) * self.shared.cfg.compaction_threshold {
                match self.compact(log, &ledgers) {
                    Ok(moved) => tracing::info!(log, live, total, moved, "compacted entry log"),
                    Err(e) => tracing::error!(log, error = %e, "compaction failed; the entry log is kept"),
                }
            }
        }
        Ok(())
    }

    fn compact(&mut self, log: u64, ledgers: &[(u64, u64)]) -> Result<usize> {
        let data = self.shared.logs.read_all(log)?;
        format::decode_file_header(FileKind::EntryLog, &data)
            .map_err(|e| BookieError::Corruption(format!("entry log {log}: {e}")))?;
        let exam = examine(FileKind::EntryLog, &data, format::FILE_HEADER_LEN);
        if let Some(d) = &exam.damage
            && let Some(next) = d.valid_after
        {
            // Damage with good records after it: indexed entries may sit beyond it, so the
            // file must not go away. Leave it for an operator (`strata bookie inspect`).
            return Err(BookieError::Corruption(format!(
                "entry log {log} is damaged at offset {} ({}) with valid records from offset {next}; not compacting it",
                d.offset, d.error
            )));
        }
        let mut moved = Vec::new();
        let mut offset = format::FILE_HEADER_LEN as u64;
        for (body, end) in &exam.records {
            let old = Location {
                log,
                offset,
                len: (end - offset) as u32,
            };
            offset = *end;
            let e = entry_log::StoredEntry::decode(data.slice(body.clone())).map_err(BookieError::Corruption)?;
            if self.shared.is_tombstoned(e.ledger) {
                continue;
            }
            let w = self.writer()?;
            moved.push((
                e.ledger,
                e.entry,
                old,
                w.append(e.ledger, e.entry, e.checksum, &e.payload)?,
            ));
        }
        if let Some(d) = exam.damage {
            // A bad tail with nothing valid after it is what a crash mid-flush leaves, and
            // such records were never indexed.
            tracing::warn!(log, offset = d.offset, error = %d.error, "entry log has an unreadable tail; records there were never indexed");
        }
        if let Some(w) = self.writer.as_mut() {
            w.sync()?;
        }
        let _g = self.shared.index_lock.lock().expect("index lock");
        let mut batch = IndexBatch::default();
        let mut count = 0;
        let mut touched: HashMap<(u64, u64), u64> = HashMap::new();
        for (ledger, entry, old, new) in moved {
            if self.shared.is_tombstoned(ledger) || self.shared.index.location(ledger, entry)? != Some(old) {
                continue;
            }
            batch.put_location(ledger, entry, new);
            *touched.entry((new.log, ledger)).or_default() += new.len as u64;
            count += 1;
        }
        self.add_usage(&mut batch, touched)?;
        for (ledger, _) in ledgers {
            batch.delete_usage(log, *ledger);
        }
        self.shared.index.write(batch)?;
        self.shared.logs.remove(log)?;
        Ok(count)
    }
}

/// Switches read-only mode on or off from the disk's usage.
pub(super) fn check_disk(shared: &Shared, dir: &Path) {
    let Ok((free, total)) = super::disk_space(dir) else {
        return;
    };
    if total == 0 {
        return;
    }
    let used = 1.0 - free as f64 / total as f64;
    let cfg = &shared.cfg;
    let mut ro = shared.read_only.lock().expect("read-only lock");
    let reason = if used > cfg.disk_usage_threshold {
        Some(format!(
            "disk {:.1}% full, over disk_usage_threshold {:.1}%; {free} bytes free",
            used * 100.0,
            cfg.disk_usage_threshold * 100.0
        ))
    } else if free < cfg.min_free_bytes {
        Some(format!(
            "{free} bytes free, under min_free_bytes {}",
            cfg.min_free_bytes
        ))
    } else {
        None
    };
    match reason {
        Some(why) => {
            if ro.is_none() {
                tracing::warn!(reason = %why, "bookie is now read-only (reads still served)");
            }
            *ro = Some(why);
        }
        // Hysteresis: writable again only well clear of both limits.
        None if ro.is_some() && used < cfg.disk_usage_lwm && free >= cfg.min_free_bytes + cfg.min_free_bytes / 10 => {
            tracing::info!(used, free, "disk has room again; bookie is writable");
            *ro = None;
        }
        None => {}
    }
}

/// The async side of the flusher thread.
pub(super) struct FlusherHandle {
    tx: Mutex<mpsc::Sender<Cmd>>,
    requested: Arc<AtomicBool>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl FlusherHandle {
    /// Starts the thread.
    pub fn start(mut f: Flusher, journal: JournalHandle, data_dir: PathBuf) -> Result<Self> {
        let (tx, rx) = mpsc::channel();
        let requested = Arc::new(AtomicBool::new(false));
        let req = requested.clone();
        let thread = std::thread::Builder::new()
            .name("flusher".into())
            .spawn(move || run(&mut f, rx, &journal, &req, &data_dir))
            .map_err(|e| BookieError::io("spawning the flusher thread", e))?;
        Ok(Self {
            tx: Mutex::new(tx),
            requested,
            thread: Mutex::new(Some(thread)),
        })
    }

    fn send(&self, cmd: Cmd) -> bool {
        self.tx.lock().expect("flusher channel").send(cmd).is_ok()
    }

    /// Asks for a flush without waiting; repeated requests before it runs coalesce.
    pub fn request_flush(&self) {
        if !self.requested.swap(true, Ordering::AcqRel) {
            self.send(Cmd::Flush(None));
        }
    }

    pub async fn flush(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        if !self.send(Cmd::Flush(Some(tx))) {
            return Err(BookieError::ShuttingDown);
        }
        rx.await.map_err(|_| BookieError::ShuttingDown)?
    }

    pub async fn gc(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        if !self.send(Cmd::Gc(tx)) {
            return Err(BookieError::ShuttingDown);
        }
        rx.await.map_err(|_| BookieError::ShuttingDown)?
    }

    /// Final flush, then the thread stops.
    pub async fn shutdown(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        if !self.send(Cmd::Shutdown(tx)) {
            return Ok(());
        }
        let res = rx.await.map_err(|_| BookieError::ShuttingDown)?;
        let thread = self.thread.lock().expect("flusher thread").take();
        if let Some(t) = thread {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        res
    }
}

fn run(f: &mut Flusher, rx: mpsc::Receiver<Cmd>, journal: &JournalHandle, requested: &AtomicBool, data_dir: &Path) {
    let cfg = f.shared.cfg.clone();
    let flush_every = Duration::from_millis(cfg.flush_interval_ms);
    let gc_every = Duration::from_millis(cfg.gc_interval_ms);
    let disk_every = Duration::from_millis(cfg.disk_check_interval_ms);
    let (mut next_flush, mut next_gc, mut next_disk) = {
        let now = Instant::now();
        (now + flush_every, now + gc_every, now + disk_every)
    };
    let do_flush = |f: &mut Flusher| {
        requested.store(false, Ordering::Release);
        let r = f.flush(journal.durable_mark());
        if let Err(e) = &r {
            tracing::error!(error = %e, "flush to entry logs failed; entries stay in the journal and the flush is retried");
        }
        r
    };
    loop {
        let now = Instant::now();
        let wake = next_flush.min(next_gc).min(next_disk);
        match rx.recv_timeout(wake.saturating_duration_since(now)) {
            Ok(Cmd::Flush(done)) => {
                let r = do_flush(f);
                next_flush = Instant::now() + flush_every;
                if let Some(done) = done {
                    let _ = done.send(r);
                }
            }
            Ok(Cmd::Gc(done)) => {
                let r = f.gc();
                let _ = done.send(r);
            }
            Ok(Cmd::Shutdown(done)) => {
                let r = do_flush(f);
                let _ = done.send(r);
                break;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        let now = Instant::now();
        if now >= next_flush {
            let _ = do_flush(f);
            next_flush = Instant::now() + flush_every;
        }
        if now >= next_gc {
            if let Err(e) = f.gc() {
                tracing::error!(error = %e, "garbage collection failed");
            }
            next_gc = Instant::now() + gc_every;
        }
        if now >= next_disk {
            check_disk(&f.shared, data_dir);
            next_disk = Instant::now() + disk_every;
        }
    }
    tracing::debug!("flusher stopped");
}
