//! The storage engine in-process, on real files and RocksDB: compaction moves live entries
//! out of mostly-dead entry logs, and everything survives reopening.

use bytes::Bytes;
use strata_bookie::storage::AddRequest;
use strata_bookie::{BookieConfig, Storage, entry_log};
use strata_common::{EntryId, LedgerId, ids::entry_checksum};

fn req(ledger: u64, entry: u64, size: usize) -> AddRequest {
    let payload = Bytes::from(vec![(ledger * 31 + entry) as u8; size]);
    AddRequest {
        ledger,
        entry,
        token: Bytes::from_static(b"t"),
        lac: None,
        checksum: entry_checksum(LedgerId::new(ledger).unwrap(), EntryId::new(entry), &payload),
        payload,
        recovery: false,
    }
}

fn config(dir: &std::path::Path) -> BookieConfig {
    BookieConfig {
        data_dir: dir.to_path_buf(),
        entry_log_max_bytes: 256 * 1024,
        write_cache_max_bytes: 1 << 20,
        flush_threshold_bytes: 1 << 20,
        max_entry_bytes: 1 << 20,
        // Only explicit flushes and GC runs in this test.
        flush_interval_ms: 3_600_000,
        gc_interval_ms: 3_600_000,
        ..BookieConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_keeps_live_entries_and_frees_dead_logs() {
    let dir = tempfile::tempdir().unwrap();
    let logs_dir = dir.path().join("entrylogs");
    let storage = Storage::open(config(dir.path())).unwrap();
    // Ledger 1 (kept) has one small entry for every nine large ones of ledger 2 (deleted),
    // so each entry log ends up mostly dead.
    for round in 0..8u64 {
        let mut batch = vec![req(1, round, 1000)];
        batch.extend((0..9).map(|i| req(2, round * 9 + i, 8 * 1024)));
        assert!(storage.add(batch).await.iter().all(Result::is_ok));
        storage.flush().await.unwrap();
    }
    // Fill a further log so the ones above are sealed.
    assert!(storage.add(vec![req(3, 0, 300 * 1024)]).await[0].is_ok());
    storage.flush().await.unwrap();
    let size = |files: &[(u64, std::path::PathBuf)]| -> u64 {
        files.iter().map(|(_, p)| std::fs::metadata(p).unwrap().len()).sum()
    };
    let before = entry_log::list_files(&logs_dir).unwrap();
    let before_bytes = size(&before);
    assert!(storage.delete_ledger(2).await.unwrap());
    storage.gc().await.unwrap();
    let after = entry_log::list_files(&logs_dir).unwrap();
    // Ledger 3's 300 KiB stays; ledger 2's ~590 KiB goes, ledger 1's 8 KB moves.
    assert!(
        size(&after) < before_bytes * 2 / 3,
        "entry logs {before_bytes} bytes before, {} after compaction",
        size(&after)
    );
    assert!(before.iter().any(|b| !after.contains(b)), "some entry log was removed");
    check_ledger_1(&storage).await;
    storage.close().await.unwrap();
    drop(storage);
    let storage = Storage::open(config(dir.path())).unwrap();
    check_ledger_1(&storage).await;
    storage.close().await.unwrap();
}

async fn check_ledger_1(s: &Storage) {
    let r = s.read(1, 0, 7, 0).await.unwrap();
    assert_eq!(r.entries.len(), 8);
    for e in r.entries {
        assert_eq!(e.payload, Bytes::from(vec![(31 + e.entry) as u8; 1000]));
    }
    assert!(s.read(2, 0, 0, 0).await.is_err(), "deleted ledger is gone");
}

/// Range reads take entries that follow each other in an entry log with one read each
/// run; the result is the same as entry by entry: in order across entry logs, flushes and
/// the write cache, up to the byte limit (the entry crossing it included), ending at the
/// first entry the bookie does not have.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_reads_cross_entry_logs_flushes_and_the_write_cache() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(config(dir.path())).unwrap();
    let size = 10_000;
    // Entries 0..20 in one flush (over 256 KiB: two entry logs), 20..30 mixed with
    // another ledger's in a second flush, 30..40 left in the write cache.
    assert!(
        storage
            .add((0..20).map(|e| req(1, e, size)).collect())
            .await
            .iter()
            .all(Result::is_ok)
    );
    storage.flush().await.unwrap();
    let mixed: Vec<AddRequest> = (20..30).flat_map(|e| [req(2, e, 3000), req(1, e, size)]).collect();
    assert!(storage.add(mixed).await.iter().all(Result::is_ok));
    storage.flush().await.unwrap();
    assert!(
        storage
            .add((30..40).map(|e| req(1, e, size)).collect())
            .await
            .iter()
            .all(Result::is_ok)
    );
    assert!(entry_log::list_files(&dir.path().join("entrylogs")).unwrap().len() >= 2);

    let check = |entries: &[strata_bookie::storage::ReadEntry], from: u64| {
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(e.entry, from + i as u64);
            assert_eq!(
                e.payload,
                Bytes::from(vec![(31 + e.entry) as u8; size]),
                "entry {}",
                e.entry
            );
        }
    };
    let all = storage.read(1, 0, 39, 0).await.unwrap().entries;
    assert_eq!(all.len(), 40);
    check(&all, 0);
    // Byte limit: 25,000 bytes are reached by the third entry.
    let some = storage.read(1, 5, 39, 25_000).await.unwrap().entries;
    assert_eq!(some.len(), 3);
    check(&some, 5);
    // A range past what is stored ends at the last entry; one starting past it fails.
    let tail = storage.read(1, 35, 50, 0).await.unwrap().entries;
    assert_eq!(tail.len(), 5);
    check(&tail, 35);
    assert!(storage.read(1, 40, 45, 0).await.is_err());
    assert!(storage.read(1, u64::MAX, u64::MAX, 0).await.is_err());
    // After reopening (the cache replayed from the journal), the same.
    storage.close().await.unwrap();
    drop(storage);
    let storage = Storage::open(config(dir.path())).unwrap();
    let all = storage.read(1, 0, 39, 0).await.unwrap().entries;
    assert_eq!(all.len(), 40);
    check(&all, 0);
    storage.close().await.unwrap();
}
