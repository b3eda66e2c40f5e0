//! Start-up against damaged entry log files, in-process on real files and RocksDB.
//!
//! An entry log whose header fails its checksum may only be removed when the index points
//! nowhere into it (a log being created when the bookie crashed). When the index does point
//! into it, its entries were acknowledged and checkpointed out of the journal, so this is
//! the only copy on this bookie: start-up refuses, names the file and leaves it in place.

use bytes::Bytes;
use strata_bookie::format::{self, FileKind};
use strata_bookie::storage::AddRequest;
use strata_bookie::{BookieConfig, Storage, entry_log};
use strata_common::{EntryId, LedgerId, ids::entry_checksum};

const ENTRIES: u64 = 20;

fn req(entry: u64) -> AddRequest {
    let payload = Bytes::from(vec![entry as u8; 500]);
    AddRequest {
        ledger: 1,
        entry,
        token: Bytes::from_static(b"t"),
        lac: None,
        checksum: entry_checksum(LedgerId::new(1).unwrap(), EntryId::new(entry), &payload),
        payload,
        recovery: false,
    }
}

fn config(dir: &std::path::Path) -> BookieConfig {
    BookieConfig {
        data_dir: dir.to_path_buf(),
        // Only the explicit flush (and the one on close) moves entries to entry logs.
        flush_interval_ms: 3_600_000,
        gc_interval_ms: 3_600_000,
        ..BookieConfig::default()
    }
}

/// Writes ENTRIES entries of ledger 1, flushes (indexed, checkpointed) and closes.
/// Returns the entry log holding them.
async fn write_and_flush(dir: &std::path::Path) -> std::path::PathBuf {
    let storage = Storage::open(config(dir)).unwrap();
    let results = storage.add((0..ENTRIES).map(req).collect()).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    storage.flush().await.unwrap();
    storage.close().await.unwrap();
    drop(storage);
    let logs = entry_log::list_files(&dir.join("entrylogs")).unwrap();
    let (_, path) = logs
        .into_iter()
        .max_by_key(|(_, p)| std::fs::metadata(p).unwrap().len())
        .expect("an entry log");
    path
}

async fn assert_all_readable(storage: &Storage) {
    let r = storage.read(1, 0, ENTRIES - 1, 0).await.unwrap();
    assert_eq!(r.entries.len() as u64, ENTRIES);
    for e in r.entries {
        assert_eq!(e.payload, Bytes::from(vec![e.entry as u8; 500]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_header_of_an_indexed_entry_log_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let log = write_and_flush(dir.path()).await;
    let pristine = std::fs::read(&log).unwrap();
    // The journal was checkpointed: the entry log is the only copy of the entries.
    let mut damaged = pristine.clone();
    damaged[20] ^= 0x04; // a bit of the file id; the header checksum no longer matches
    assert!(format::decode_file_header(FileKind::EntryLog, &damaged).is_err());
    std::fs::write(&log, &damaged).unwrap();

    let err = match Storage::open(config(dir.path())) {
        Ok(_) => panic!("the bookie started with a damaged entry log the index points into"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains(&log.display().to_string()),
        "error must name the file: {err}"
    );
    assert!(err.contains("header"), "error must say what is wrong: {err}");
    assert_eq!(
        std::fs::read(&log).expect("the entry log must not be removed"),
        damaged,
        "the entry log must be left as it was"
    );

    // Nothing else was touched either: with the header restored every entry is back.
    std::fs::write(&log, &pristine).unwrap();
    let storage = Storage::open(config(dir.path())).unwrap();
    assert_all_readable(&storage).await;
    storage.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_log_without_a_valid_header_that_nothing_indexes_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let log = write_and_flush(dir.path()).await;
    // What a crash while creating the next log leaves: a file with a partial header.
    let next_id = entry_log::list_files(log.parent().unwrap()).unwrap().last().unwrap().0 + 1;
    let orphan = log.parent().unwrap().join(entry_log::file_name(next_id));
    std::fs::write(&orphan, &format::encode_file_header(FileKind::EntryLog, next_id)[..10]).unwrap();

    let storage = Storage::open(config(dir.path())).unwrap();
    assert!(!orphan.exists(), "the unindexed, headerless entry log is removed");
    assert!(log.exists());
    assert_all_readable(&storage).await;
    storage.close().await.unwrap();
}
