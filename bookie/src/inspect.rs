//! `strata bookie inspect`: reads a data directory without changing it and reports what is
//! in the journal, the entry logs and the index, verifying every checksum (record CRCs and
//! the writers' entry checksums) and every index entry.
//!
//! Safe while a bookie runs on the directory (files are only read; the index is opened
//! read-only), though a running bookie may change things between reads.

use crate::entry_log::{self, StoredEntry};
use crate::error::Result;
use crate::format::{self, FileKind};
use crate::index::Index;
use crate::journal::{
    self, JournalAdd,
    replay::{Examination, examine},
};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::os::unix::fs::FileExt;
use std::path::Path;
use strata_common::{EntryId, LedgerId, ids::entry_checksum};

/// What inspection found.
#[derive(Debug, Default)]
pub struct Report {
    /// Human-readable description, one line per item.
    pub text: String,
    /// Every problem found; empty means everything verified.
    pub problems: Vec<String>,
    pub journal_records: u64,
    pub entry_log_records: u64,
    pub indexed_entries: u64,
}

fn checksum_ok(ledger: u64, entry: u64, checksum: u32, payload: &[u8]) -> bool {
    LedgerId::new(ledger).is_ok_and(|l| entry_checksum(l, EntryId::new(entry), payload) == checksum)
}

/// Inspects `data_dir`.
pub fn inspect(data_dir: &Path) -> Result<Report> {
    let mut r = Report::default();
    inspect_journal(&data_dir.join("journal"), &mut r);
    inspect_entry_logs(&data_dir.join("entrylogs"), &mut r);
    inspect_index(data_dir, &mut r)?;
    let _ = writeln!(
        r.text,
        "summary: {} journal records, {} entry log records, {} indexed entries, {} problems",
        r.journal_records,
        r.entry_log_records,
        r.indexed_entries,
        r.problems.len()
    );
    Ok(r)
}

/// Reads a file and walks its records; a file that cannot be read or has a bad header is
/// reported as a problem.
fn read_file(kind: FileKind, path: &Path, r: &mut Report) -> Option<(Bytes, Examination)> {
    let data = match std::fs::read(path) {
        Ok(d) => Bytes::from(d),
        Err(e) => {
            r.problems.push(format!("{}: cannot read: {e}", path.display()));
            return None;
        }
    };
    if let Err(e) = format::decode_file_header(kind, &data) {
        r.problems.push(format!("{}: bad header: {e}", path.display()));
        return None;
    }
    let exam = examine(kind, &data, format::FILE_HEADER_LEN);
    Some((data, exam))
}

fn inspect_journal(dir: &Path, r: &mut Report) {
    let files = match journal::list_files(dir) {
        Ok(f) => f,
        Err(e) => {
            r.problems
                .push(format!("cannot list journal directory {}: {e}", dir.display()));
            return;
        }
    };
    let _ = writeln!(r.text, "journal: {} file(s) in {}", files.len(), dir.display());
    let newest = files.last().map(|(id, _)| *id);
    for (id, path) in &files {
        let Some((data, exam)) = read_file(FileKind::Journal, path, r) else {
            continue;
        };
        let mut ledgers: BTreeMap<u64, (u64, u64, u64)> = BTreeMap::new();
        for (body, end) in &exam.records {
            match JournalAdd::decode(data.slice(body.clone())) {
                Ok(a) => {
                    if !checksum_ok(a.ledger, a.entry, a.checksum, &a.payload) {
                        r.problems.push(format!(
                            "{}: record ending at offset {end} (ledger {} entry {}): entry checksum mismatch",
                            path.display(),
                            a.ledger,
                            a.entry
                        ));
                    }
                    let e = ledgers.entry(a.ledger).or_insert((u64::MAX, 0, 0));
                    e.0 = e.0.min(a.entry);
                    e.1 = e.1.max(a.entry);
                    e.2 += 1;
                }
                Err(e) => r
                    .problems
                    .push(format!("{}: record ending at offset {end}: {e}", path.display())),
            }
        }
        r.journal_records += exam.records.len() as u64;
        let _ = writeln!(
            r.text,
            "  {} (file {id}): {} bytes, {} records, valid up to offset {}",
            path.display(),
            data.len(),
            exam.records.len(),
            exam.valid_end
        );
        for (l, (lo, hi, n)) in &ledgers {
            let _ = writeln!(r.text, "    ledger {l}: {n} records, entries {lo}..={hi}");
        }
        if let Some(d) = exam.damage {
            let torn = Some(*id) == newest && d.valid_after.is_none();
            let msg = format!(
                "{}: damaged at offset {}: {}{}",
                path.display(),
                d.offset,
                d.error,
                match d.valid_after {
                    Some(v) => format!(" (valid records follow at offset {v})"),
                    None => String::new(),
                }
            );
            if torn {
                let _ = writeln!(
                    r.text,
                    "    torn tail (a crash mid-write; truncated on next start): {msg}"
                );
            } else {
                r.problems.push(msg);
            }
        }
    }
}

fn inspect_entry_logs(dir: &Path, r: &mut Report) {
    let files = match entry_log::list_files(dir) {
        Ok(f) => f,
        Err(e) => {
            r.problems
                .push(format!("cannot list entry log directory {}: {e}", dir.display()));
            return;
        }
    };
    let _ = writeln!(r.text, "entry logs: {} file(s) in {}", files.len(), dir.display());
    for (id, path) in &files {
        let Some((data, exam)) = read_file(FileKind::EntryLog, path, r) else {
            continue;
        };
        let mut per_ledger: BTreeMap<u64, u64> = BTreeMap::new();
        for (body, end) in &exam.records {
            match StoredEntry::decode(data.slice(body.clone())) {
                Ok(e) => {
                    if !checksum_ok(e.ledger, e.entry, e.checksum, &e.payload) {
                        r.problems.push(format!(
                            "{}: record ending at offset {end} (ledger {} entry {}): entry checksum mismatch",
                            path.display(),
                            e.ledger,
                            e.entry
                        ));
                    }
                    *per_ledger.entry(e.ledger).or_default() += 1;
                }
                Err(e) => r
                    .problems
                    .push(format!("{}: record ending at offset {end}: {e}", path.display())),
            }
        }
        r.entry_log_records += exam.records.len() as u64;
        let _ = writeln!(
            r.text,
            "  {} (log {id}): {} bytes, {} records in {} ledger(s)",
            path.display(),
            data.len(),
            exam.records.len(),
            per_ledger.len()
        );
        if let Some(d) = exam.damage {
            // Only records after the last indexed one can be torn (a crash mid-flush);
            // index verification below reports any indexed record that is unreadable.
            let _ = writeln!(
                r.text,
                "    unreadable from offset {}: {} (records there were never indexed unless reported below)",
                d.offset, d.error
            );
        }
    }
}

fn inspect_index(data_dir: &Path, r: &mut Report) -> Result<()> {
    let index = Index::open_read_only(&data_dir.join("index"))?;
    let _ = writeln!(r.text, "index: checkpoint {:?}", index.checkpoint()?);
    let (live, dead) = index.ledgers()?;
    let locations = index.all_locations()?;
    let mut counts: BTreeMap<u64, u64> = BTreeMap::new();
    let logs_dir = data_dir.join("entrylogs");
    let mut open: BTreeMap<u64, Option<std::fs::File>> = BTreeMap::new();
    for (ledger, entry, loc) in &locations {
        *counts.entry(*ledger).or_default() += 1;
        let file = open
            .entry(loc.log)
            .or_insert_with(|| std::fs::File::open(logs_dir.join(entry_log::file_name(loc.log))).ok());
        let Some(file) = file else {
            r.problems.push(format!(
                "index: ledger {ledger} entry {entry} points into missing entry log {}",
                loc.log
            ));
            continue;
        };
        let len = loc.len as usize;
        if len > format::RECORD_HEADER_LEN + format::MAX_RECORD_BODY {
            r.problems.push(format!(
                "index: ledger {ledger} entry {entry} has impossible length {len}"
            ));
            continue;
        }
        let mut buf = vec![0u8; len];
        let verdict = file
            .read_exact_at(&mut buf, loc.offset)
            .map_err(|e| e.to_string())
            .and_then(|_| format::parse_record(FileKind::EntryLog, &buf).map_err(|e| e.to_string()))
            .and_then(|(body, _)| StoredEntry::decode(Bytes::from(buf[body].to_vec())))
            .and_then(|s| {
                if s.ledger != *ledger || s.entry != *entry {
                    Err(format!("record holds ledger {} entry {}", s.ledger, s.entry))
                } else if !checksum_ok(s.ledger, s.entry, s.checksum, &s.payload) {
                    Err("entry checksum mismatch".into())
                } else {
                    Ok(())
                }
            });
        if let Err(e) = verdict {
            r.problems.push(format!(
                "index: ledger {ledger} entry {entry} at entry log {} offset {}: {e}",
                loc.log, loc.offset
            ));
        }
    }
    r.indexed_entries = locations.len() as u64;
    let _ = writeln!(
        r.text,
        "  {} ledger(s), {} deleted (tombstones)",
        live.len(),
        dead.len()
    );
    for (id, m) in &live {
        let _ = writeln!(
            r.text,
            "  ledger {id}: fenced={} lac={} indexed entries={} token={} bytes",
            m.fenced,
            m.lac.map_or("none".into(), |l| l.to_string()),
            counts.get(id).copied().unwrap_or(0),
            m.token.len()
        );
    }
    Ok(())
}
