//! Opening a bookie's data directory: load the index, replay the journal from the last
//! checkpoint into the write cache, flush it to entry logs, then start the threads.
//!
//! Safe to run after a crash at any point, and twice: replay is idempotent (re-indexing an
//! entry writes the same location or a newer copy of the same bytes), files wholly before
//! the checkpoint are removed, and a torn journal tail is truncated on disk before the new
//! journal file is created.

use super::flusher::{Flusher, FlusherHandle};
use super::{Ledger, Shared, Storage};
use crate::config::BookieConfig;
use crate::entry_log::EntryLogs;
use crate::error::{BookieError, Result};
use crate::index::Index;
use crate::journal::{self, JournalOptions, JournalPos, replay};
use crate::write_cache::WriteCache;
use bytes::Bytes;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, RwLock};

pub(super) fn open(cfg: BookieConfig) -> Result<Storage> {
    let data_dir = cfg.data_dir.clone();
    let journal_dir = data_dir.join("journal");
    let logs_dir = data_dir.join("entrylogs");
    for d in [&journal_dir, &logs_dir] {
        std::fs::create_dir_all(d).map_err(|e| BookieError::io(format!("creating {}", d.display()), e))?;
    }
    let index = Index::open(&data_dir.join("index"))?;
    let (live, dead) = index.ledgers()?;
    let tombstones: HashSet<u64> = dead.into_iter().collect();
    let ledgers: HashMap<u64, Arc<Ledger>> = live
        .into_iter()
        .filter(|(id, _)| !tombstones.contains(id))
        .map(|(id, m)| {
            let l = Ledger::new(m.token, m.fenced, m.lac);
            let _ = l.persisted.set(());
            (id, Arc::new(l))
        })
        .collect();
    let (logs, max_log) = EntryLogs::open(&logs_dir, &index)?;
    let checkpoint = index.checkpoint()?;
    let shared = Arc::new(Shared {
        cache: WriteCache::new(cfg.write_cache_max_bytes),
        cfg: cfg.clone(),
        index,
        logs,
        ledgers: RwLock::new(ledgers),
        tombstones: RwLock::new(tombstones),
        index_lock: Mutex::new(()),
        read_only: Mutex::new(None),
    });
    let mut flusher = Flusher {
        shared: shared.clone(),
        journal_dir: journal_dir.clone(),
        writer: None,
        next_log_id: max_log + 1,
        pending: None,
        last_checkpoint: checkpoint,
    };

    let mark = replay_journal(&shared, &mut flusher, &journal_dir, checkpoint, cfg.repair)?;
    // Everything replayed is now in entry logs and checkpointed.
    flusher.flush(mark)?;

    let next_journal = journal::list_files(&journal_dir)
        .map_err(|e| BookieError::io(format!("listing {}", journal_dir.display()), e))?
        .last()
        .map_or(0, |(id, _)| *id)
        .max(mark.file_id)
        + 1;
    let (journal, journal_thread) = journal::start(
        JournalOptions {
            dir: journal_dir,
            sync: cfg.journal_sync,
            max_file_bytes: cfg.journal_max_file_bytes,
            max_group_bytes: cfg.journal_max_group_bytes,
            metrics: cfg.journal_metrics.clone(),
        },
        next_journal,
    )?;
    super::flusher::check_disk(&shared, &data_dir);
    let flusher = FlusherHandle::start(flusher, journal.clone(), data_dir.clone())?;
    if !cfg.journal_sync {
        tracing::warn!(
            "journal_sync is off: acknowledged entries can be lost on power failure; use only for benchmarks"
        );
    }
    Ok(Storage {
        shared,
        journal,
        journal_thread: Mutex::new(Some(journal_thread)),
        flusher,
        shutting_down: AtomicBool::new(false),
        data_dir,
        draining: Mutex::new(None),
    })
}

/// Replays every journal record after the checkpoint; returns the position replay ended
/// at (the new checkpoint).
fn replay_journal(
    shared: &Shared,
    flusher: &mut Flusher,
    dir: &std::path::Path,
    checkpoint: Option<JournalPos>,
    repair: bool,
) -> Result<JournalPos> {
    let files = journal::list_files(dir).map_err(|e| BookieError::io(format!("listing {}", dir.display()), e))?;
    let cp = checkpoint.unwrap_or(JournalPos { file_id: 0, offset: 0 });
    let mut mark = cp;
    let newest = files.last().map(|(id, _)| *id);
    let mut replayed = 0u64;
    for (id, path) in &files {
        if *id < cp.file_id {
            // A crash between checkpoint and clean-up: the checkpoint covers this file.
            std::fs::remove_file(path).map_err(|e| BookieError::io(format!("removing {}", path.display()), e))?;
            continue;
        }
        let start = if *id == cp.file_id { cp.offset } else { 0 };
        let r = replay::replay_file(path, *id, start, Some(*id) == newest, repair)?;
        for (add, end) in r.adds {
            if shared.is_tombstoned(add.ledger) {
                continue;
            }
            let ledger = {
                let mut map = shared.ledgers.write().expect("ledger map");
                map.entry(add.ledger)
                    .or_insert_with(|| {
                        // Cannot happen (a ledger's state is synced before its first add is
                        // journaled) unless the index was lost; keep the data reachable.
                        tracing::warn!(ledger = add.ledger, "journal holds entries of a ledger the index does not know; recreating it with an empty writer token");
                        Arc::new(Ledger::new(Bytes::new(), false, None))
                    })
                    .clone()
            };
            let lac = (add.lac != u64::MAX).then_some(add.lac);
            if let Some(lac) = lac {
                ledger.advance_lac(lac);
            }
            shared
                .cache
                .insert(add.ledger, add.entry, add.checksum, add.payload, lac);
            replayed += 1;
            mark = JournalPos {
                file_id: *id,
                offset: end,
            };
            if shared.cache.active_bytes() >= shared.cfg.flush_threshold_bytes {
                flusher.flush(mark)?;
            }
        }
        if r.valid_end > 0 {
            mark = mark.max(JournalPos {
                file_id: *id,
                offset: r.valid_end,
            });
        }
    }
    if replayed > 0 {
        tracing::info!(entries = replayed, ?mark, "replayed journal");
    }
    // Ledgers recreated above must be durable too. (Collected first: the index lock is
    // never taken while holding the ledger map.)
    let unpersisted: Vec<(u64, Arc<Ledger>)> = shared
        .ledgers
        .read()
        .expect("ledger map")
        .iter()
        .filter(|(_, l)| l.persisted.get().is_none())
        .map(|(id, l)| (*id, l.clone()))
        .collect();
    for (id, l) in &unpersisted {
        shared.persist_ledger(*id, l)?;
        let _ = l.persisted.set(());
    }
    Ok(mark)
}
