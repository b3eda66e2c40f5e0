//! Torn and corrupt journal tails, against the real `strata bookie` process.
//!
//! A torn tail of the newest journal file (truncation at any offset, or flipped bytes in
//! its last record) is recovered up to the last good record, with a warning naming the
//! file and offset — also when the torn record's payload holds a complete journal record.
//! Damage to an earlier record makes the bookie refuse to start with a message saying what
//! and where — unless `--repair` is given.

mod common;

use bytes::Bytes;
use common::{BookieProcess, Rng, payload, seed};
use std::path::{Path, PathBuf};
use std::time::Duration;
use strata_bookie::client::NewEntry;
use strata_bookie::format::{self, FileKind};
use strata_bookie::journal::{self, ADD_FIXED_LEN, JournalAdd, replay::examine};
use strata_common::{EntryId, ErrorCode, LedgerId, ids::entry_checksum};

const ENTRIES: u64 = 30;
/// Nothing is flushed or checkpointed during the test, so every entry lives only in the
/// journal when the bookie is killed.
const CONFIG: &str = "flush_interval_ms = 3600000\ngc_interval_ms = 3600000\n";

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let dest = to.join(e.file_name());
        if e.metadata().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// Writes ENTRIES entries, one acknowledged group each, then SIGKILLs. Returns the pristine
/// directory (config + data) and the newest journal file's path relative to it.
async fn prepare(root: &Path) -> (PathBuf, PathBuf) {
    prepare_with_last(root, None).await
}

/// [`prepare`], with one more entry (entry ENTRIES) of payload `last` if given.
async fn prepare_with_last(root: &Path, last: Option<Bytes>) -> (PathBuf, PathBuf) {
    let pristine = root.join("pristine");
    std::fs::create_dir_all(&pristine).unwrap();
    let mut bookie = BookieProcess::start(&pristine, CONFIG);
    let client = bookie.ready().await;
    let (tx, mut rx) = client.add_stream(Bytes::from_static(b"t"), 4).await.unwrap();
    let payloads = (0..ENTRIES).map(|e| payload(1, e, 200)).chain(last);
    for (e, payload) in (0..).zip(payloads) {
        tx.send(vec![NewEntry {
            ledger: LedgerId::new(1).unwrap(),
            entry: EntryId::new(e),
            payload,
            lac: None,
        }])
        .await
        .unwrap();
        let out = rx.next().await.unwrap().unwrap();
        assert!(out[0].error.is_none());
    }
    bookie.sigkill();
    let files = journal::list_files(&pristine.join("data/journal")).unwrap();
    let newest = files.last().unwrap().1.strip_prefix(&pristine).unwrap().to_path_buf();
    (pristine, newest)
}

/// (record start, record end) of every record in a journal file.
fn records(path: &Path) -> Vec<(u64, u64)> {
    let data = std::fs::read(path).unwrap();
    let exam = examine(FileKind::Journal, &data, format::FILE_HEADER_LEN);
    assert!(exam.damage.is_none());
    exam.records
        .iter()
        .map(|(body, end)| ((body.start - format::RECORD_HEADER_LEN) as u64, *end))
        .collect()
}

/// Starts a bookie on a copy and returns how many leading entries of ledger 1 it serves.
async fn surviving_entries(trial: &Path) -> (u64, String) {
    let mut bookie = BookieProcess::start(trial, CONFIG);
    let client = bookie.ready().await;
    let lid = LedgerId::new(1).unwrap();
    let mut n = 0;
    loop {
        match client.read(lid, n, ENTRIES).await {
            Ok(entries) => {
                for e in entries {
                    assert_eq!(e.entry, n);
                    assert_eq!(e.payload, payload(1, n, 200), "entry {n} corrupt after recovery");
                    n += 1;
                }
            }
            Err(e) if e.code() == ErrorCode::NoSuchEntry => break,
            Err(e) => panic!("read failed: {e}"),
        }
    }
    assert!(bookie.sigterm().success());
    (n, bookie.log_text())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_tails_recover_to_the_last_good_record() {
    let mut rng = Rng::new(seed("torn_tails"));
    let root = tempfile::tempdir().unwrap();
    let (pristine, newest) = prepare(root.path()).await;
    let recs = records(&pristine.join(&newest));
    assert_eq!(recs.len() as u64, ENTRIES);
    let len = recs.last().unwrap().1;
    // Truncation at random offsets, plus the edges: inside the header, inside the first
    // record's frame, one byte short of the end.
    let mut cuts: Vec<u64> = (0..6).map(|_| rng.below(len)).collect();
    cuts.extend([3, format::FILE_HEADER_LEN as u64 + 5, len - 1]);
    for (i, cut) in cuts.into_iter().enumerate() {
        let trial = root.path().join(format!("cut-{i}"));
        copy_dir(&pristine, &trial);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(trial.join(&newest))
            .unwrap();
        f.set_len(cut).unwrap();
        let expect = recs.iter().filter(|(_, end)| *end <= cut).count() as u64;
        let (got, log) = surviving_entries(&trial).await;
        assert_eq!(got, expect, "truncated at {cut}: expected {expect} entries to survive");
        // A cut inside a record (not on a boundary) must be reported.
        if let Some(&(torn_at, _)) = recs.iter().find(|(s, e)| *s < cut && cut < *e) {
            assert!(log.contains("torn journal tail"), "no warning for cut {cut}:\n{log}");
            assert!(
                log.contains(&newest.file_name().unwrap().to_string_lossy().to_string()),
                "warning must name the file:\n{log}"
            );
            assert!(
                log.contains(&format!("offset={torn_at}")),
                "warning must name offset {torn_at}:\n{log}"
            );
        }
    }
    // Flipped bytes in the last record: everything before it survives.
    for i in 0..3 {
        let trial = root.path().join(format!("flip-{i}"));
        copy_dir(&pristine, &trial);
        let p = trial.join(&newest);
        let mut data = std::fs::read(&p).unwrap();
        let (s, e) = *recs.last().unwrap();
        let at = s + rng.below(e - s);
        data[at as usize] ^= 1 << rng.below(8);
        std::fs::write(&p, &data).unwrap();
        let (got, log) = surviving_entries(&trial).await;
        assert_eq!(got, ENTRIES - 1, "flip at {at}");
        assert!(
            log.contains(&format!("offset={s}")),
            "warning must name offset {s}:\n{log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_in_an_older_record_refuses_to_start_unless_repair() {
    let mut rng = Rng::new(seed("older_damage"));
    let root = tempfile::tempdir().unwrap();
    let (pristine, newest) = prepare(root.path()).await;
    let recs = records(&pristine.join(&newest));
    let victim = rng.below(ENTRIES - 2) as usize;
    let (s, e) = recs[victim];
    let trial = root.path().join("damaged");
    copy_dir(&pristine, &trial);
    let p = trial.join(&newest);
    let mut data = std::fs::read(&p).unwrap();
    data[(s + rng.below(e - s)) as usize] ^= 0x40;
    std::fs::write(&p, &data).unwrap();

    let mut bookie = BookieProcess::start(&trial, CONFIG);
    let status = bookie.wait_exit(Duration::from_secs(60));
    let log = bookie.log_text();
    assert!(!status.success(), "bookie started on a damaged journal:\n{log}");
    assert!(
        log.contains(&p.display().to_string()),
        "error must name the file:\n{log}"
    );
    assert!(
        log.contains(&format!("damaged at offset {s}")),
        "error must name offset {s}:\n{log}"
    );
    assert!(log.contains("--repair"), "error must say how to proceed:\n{log}");

    // Inspection reports the damage and exits non-zero.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["bookie", "inspect", "--data-dir"])
        .arg(trial.join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("damaged at offset {s}")));

    // With --repair it starts, keeping the entries before the damage.
    let mut bookie = BookieProcess::start_with_args(&trial, CONFIG, &["--repair"]);
    let client = bookie.ready().await;
    let lid = LedgerId::new(1).unwrap();
    let kept = client.read(lid, 0, ENTRIES).await.map(|v| v.len()).unwrap_or(0);
    assert_eq!(kept, victim, "entries before the damaged record survive");
    assert!(bookie.sigterm().success());
}

/// A complete, valid journal record of `ledger`/`entry` (what a journal file holds).
fn journal_record(ledger: u64, entry: u64, payload: Bytes) -> Vec<u8> {
    let add = JournalAdd {
        ledger,
        entry,
        lac: u64::MAX,
        checksum: entry_checksum(LedgerId::new(ledger).unwrap(), EntryId::new(entry), &payload),
        payload,
    };
    let fixed = add.encode_fixed();
    let mut v = format::encode_record_frame(FileKind::Journal, &fixed, &add.payload).to_vec();
    v.extend_from_slice(&fixed);
    v.extend_from_slice(&add.payload);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_last_record_whose_payload_holds_a_journal_record_is_truncated() {
    let root = tempfile::tempdir().unwrap();
    // The last entry's payload carries a complete journal record, of the very entry the
    // torn record is: if recovery read it as a record, entry ENTRIES would be served.
    let embedded = journal_record(1, ENTRIES, payload(1, ENTRIES, 200));
    let prefix = 64;
    let mut last = vec![0x5a; prefix];
    last.extend_from_slice(&embedded);
    last.extend_from_slice(&[0xa5; 100]);
    let (pristine, newest) = prepare_with_last(root.path(), Some(Bytes::from(last))).await;
    let recs = records(&pristine.join(&newest));
    assert_eq!(recs.len() as u64, ENTRIES + 1);
    let (torn_at, end) = *recs.last().unwrap();
    let embedded_end = torn_at as usize + format::RECORD_HEADER_LEN + ADD_FIXED_LEN + prefix + embedded.len();
    // Cut short right after the embedded record, and inside the bytes after it.
    for (i, cut) in [embedded_end as u64, embedded_end as u64 + 40, end - 1]
        .into_iter()
        .enumerate()
    {
        let trial = root.path().join(format!("embedded-{i}"));
        copy_dir(&pristine, &trial);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(trial.join(&newest))
            .unwrap();
        f.set_len(cut).unwrap();
        let (got, log) = surviving_entries(&trial).await;
        assert_eq!(
            got, ENTRIES,
            "cut at {cut}: every earlier entry, and nothing from the torn one"
        );
        assert!(log.contains("torn journal tail"), "no warning for cut {cut}:\n{log}");
        assert!(
            log.contains(&format!("offset={torn_at}")),
            "warning must name offset {torn_at}:\n{log}"
        );
    }
}
