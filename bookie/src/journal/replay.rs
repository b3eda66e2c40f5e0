//! Reading journal files back: on start-up (replay from the last checkpoint) and for
//! `strata bookie inspect`.
//!
//! Recovery rule (STYLE §15): a process crash leaves a *prefix* of what was written in the
//! page cache, so the only damage a crash can cause is a torn **last** record of the
//! **newest** file. Such a tail is truncated with a warning naming the file and offset.
//! Anything else — a bad record with valid records after it, or damage in an older file —
//! means bytes that were fsynced (and maybe acknowledged) changed; the bookie refuses to
//! start unless the operator passes `repair`, which truncates at the damage.

use crate::error::{BookieError, Result};
use crate::format::{self, FileKind, RecordError};
use crate::journal::JournalAdd;
use bytes::Bytes;
use std::ops::Range;
use std::path::Path;

/// Where a file stops being readable.
#[derive(Debug, Clone)]
pub struct Damage {
    /// Offset of the first bad record.
    pub offset: u64,
    pub error: RecordError,
    /// Offset of a valid record after the damage, if there is one (then the damage is not
    /// a torn tail).
    pub valid_after: Option<u64>,
}

/// The records of one file (or the part after a start offset), and where they stop.
#[derive(Debug)]
pub struct Examination {
    /// Body ranges of the valid records, in file order, with each record's end offset.
    pub records: Vec<(Range<usize>, u64)>,
    /// End offset of the last valid record (where appending would continue).
    pub valid_end: u64,
    pub damage: Option<Damage>,
}

/// Walks the records of `buf` from `start`.
pub fn examine(kind: FileKind, buf: &[u8], start: usize) -> Examination {
    let mut pos = start;
    let mut records = Vec::new();
    while pos < buf.len() {
        match format::parse_record(kind, &buf[pos..]) {
            Ok((body, total)) => {
                records.push(((pos + body.start)..(pos + body.end), (pos + total) as u64));
                pos += total;
            }
            Err(error) => {
                // Zero fill after the last record (a preallocated or extended file) is a
                // clean end, not damage.
                if buf[pos..].iter().all(|b| *b == 0) {
                    break;
                }
                let valid_after = format::find_valid_record_after(kind, buf, pos).map(|p| p as u64);
                return Examination {
                    records,
                    valid_end: pos as u64,
                    damage: Some(Damage {
                        offset: pos as u64,
                        error,
                        valid_after,
                    }),
                };
            }
        }
    }
    Examination {
        records,
        valid_end: pos as u64,
        damage: None,
    }
}

/// The outcome of replaying one journal file.
#[derive(Debug)]
pub struct Replayed {
    pub adds: Vec<(JournalAdd, u64)>,
    /// Where the valid records end (the file is truncated here if it had a torn tail).
    pub valid_end: u64,
}

/// Verifies journal file `path` and returns the adds recorded after `start` (a checkpoint
/// offset, or 0 for the whole file), applying the recovery rule. `newest` says whether this is the last journal file.
/// Truncates a torn tail (or, with `repair`, any damage) on disk so the next start does
/// not meet it again.
pub fn replay_file(path: &Path, expected_id: u64, start: u64, newest: bool, repair: bool) -> Result<Replayed> {
    let data =
        std::fs::read(path).map_err(|e| BookieError::io(format!("reading journal file {}", path.display()), e))?;
    let data = Bytes::from(data);
    let header = format::decode_file_header(FileKind::Journal, &data);
    match header {
        Ok(id) if id == expected_id => {}
        Ok(id) => {
            return Err(BookieError::Corruption(format!(
                "journal file {} names itself file {id}, expected {expected_id}; refusing to start",
                path.display()
            )));
        }
        Err(e) if repair || (newest && data.iter().skip(format::FILE_HEADER_LEN).all(|b| *b == 0)) => {
            // A crash while creating the newest file can leave it without a full header;
            // with nothing after the header, nothing in it was ever acknowledged.
            tracing::warn!(file = %path.display(), error = %e, "journal file has no valid header; it holds no acknowledged entries, removing it");
            std::fs::remove_file(path).map_err(|e| BookieError::io(format!("removing {}", path.display()), e))?;
            return Ok(Replayed {
                adds: Vec::new(),
                valid_end: 0,
            });
        }
        Err(e) => {
            return Err(BookieError::Corruption(format!(
                "journal file {} has a damaged header ({e}) and holds records (or is not the newest journal file); refusing to start. Inspect with `strata bookie inspect`; start with --repair to drop the file",
                path.display()
            )));
        }
    }
    // The whole file is verified, also the part before the checkpoint: damage there means
    // fsynced bytes changed, which an operator must hear about. Only records after `start`
    // are replayed.
    let exam = examine(FileKind::Journal, &data, format::FILE_HEADER_LEN);
    let mut adds = Vec::with_capacity(exam.records.len());
    for (body, end) in exam.records.iter().filter(|(_, end)| *end > start) {
        let add = JournalAdd::decode(data.slice(body.clone())).map_err(|e| {
            BookieError::Corruption(format!(
                "journal file {} record ending at offset {end}: {e}",
                path.display()
            ))
        })?;
        adds.push((add, *end));
    }
    if let Some(d) = &exam.damage {
        let torn_tail = newest && d.valid_after.is_none();
        if torn_tail || repair {
            if torn_tail {
                tracing::warn!(file = %path.display(), offset = d.offset, error = %d.error, "torn journal tail (unacknowledged entries of a crash); truncating the journal here");
            } else {
                tracing::warn!(file = %path.display(), offset = d.offset, error = %d.error, valid_after = ?d.valid_after, "--repair: truncating a damaged journal file; entries after this offset are LOST");
            }
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| BookieError::io(format!("opening {} to truncate", path.display()), e))?;
            f.set_len(d.offset)
                .and_then(|_| f.sync_all())
                .map_err(|e| BookieError::io(format!("truncating {}", path.display()), e))?;
        } else {
            let why = match d.valid_after {
                Some(v) => format!("valid records follow at offset {v}, so this is not a torn tail"),
                None => "it is not the newest journal file, so it was complete and fsynced".into(),
            };
            return Err(BookieError::Corruption(format!(
                "journal file {} is damaged at offset {}: {}; {why}. Acknowledged entries may be affected, so the bookie refuses to start. Inspect with `strata bookie inspect --data-dir DIR`; start with --repair to truncate the journal at offset {} (entries after it are lost)",
                path.display(),
                d.offset,
                d.error,
                d.offset
            )));
        }
    }
    Ok(Replayed {
        adds,
        valid_end: exam.valid_end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{ADD_FIXED_LEN, file_name};

    fn add(entry: u64, payload: &[u8]) -> Vec<u8> {
        let a = JournalAdd {
            ledger: 1,
            entry,
            lac: u64::MAX,
            checksum: 0,
            payload: Bytes::copy_from_slice(payload),
        };
        let fixed = a.encode_fixed();
        let mut v = format::encode_record_frame(FileKind::Journal, &fixed, payload).to_vec();
        v.extend_from_slice(&fixed);
        v.extend_from_slice(payload);
        v
    }

    fn journal(dir: &Path, id: u64, records: usize) -> (std::path::PathBuf, Vec<usize>) {
        let mut buf = format::encode_file_header(FileKind::Journal, id).to_vec();
        let mut starts = Vec::new();
        for i in 0..records {
            starts.push(buf.len());
            buf.extend(add(i as u64, &[i as u8; 100]));
        }
        let p = dir.join(file_name(id));
        std::fs::write(&p, &buf).unwrap();
        (p, starts)
    }

    #[test]
    fn clean_file_replays_everything() {
        let d = tempfile::tempdir().unwrap();
        let (p, _) = journal(d.path(), 3, 5);
        let r = replay_file(&p, 3, 0, true, false).unwrap();
        assert_eq!(r.adds.len(), 5);
        assert_eq!(r.adds[4].0.entry, 4);
        assert_eq!(&r.adds[2].0.payload[..], &[2u8; 100][..]);
    }

    #[test]
    fn every_truncation_of_the_newest_file_recovers_the_prefix() {
        let d = tempfile::tempdir().unwrap();
        let (p, starts) = journal(d.path(), 1, 4);
        let full = std::fs::read(&p).unwrap();
        for cut in format::FILE_HEADER_LEN..full.len() {
            std::fs::write(&p, &full[..cut]).unwrap();
            let r = replay_file(&p, 1, 0, true, false).unwrap();
            let complete = starts.iter().skip(1).filter(|s| **s <= cut).count() + usize::from(cut == full.len());
            assert_eq!(r.adds.len(), complete, "cut at {cut}");
            assert_eq!(
                std::fs::metadata(&p).unwrap().len(),
                r.valid_end,
                "file truncated to the last good record"
            );
        }
    }

    #[test]
    fn flipped_last_record_is_a_torn_tail_but_older_damage_refuses() {
        let d = tempfile::tempdir().unwrap();
        let (p, starts) = journal(d.path(), 1, 4);
        let full = std::fs::read(&p).unwrap();
        // Damage inside the last record: truncated there, three entries survive.
        let mut bad = full.clone();
        bad[starts[3] + format::RECORD_HEADER_LEN + ADD_FIXED_LEN + 10] ^= 0xff;
        std::fs::write(&p, &bad).unwrap();
        let r = replay_file(&p, 1, 0, true, false).unwrap();
        assert_eq!(r.adds.len(), 3);
        // Damage in the second record: valid records follow, so refuse.
        let mut bad = full.clone();
        bad[starts[1] + 20] ^= 0xff;
        std::fs::write(&p, &bad).unwrap();
        let err = replay_file(&p, 1, 0, true, false).unwrap_err().to_string();
        assert!(err.contains(&format!("offset {}", starts[1])), "{err}");
        assert!(err.contains(&p.display().to_string()), "{err}");
        // Same file with repair: truncated at the damage.
        let r = replay_file(&p, 1, 0, true, true).unwrap();
        assert_eq!(r.adds.len(), 1);
        // Damage to the last record of an older file also refuses.
        let (p2, starts2) = journal(d.path(), 2, 2);
        let mut bad = std::fs::read(&p2).unwrap();
        bad[starts2[1] + 15] ^= 0xff;
        std::fs::write(&p2, &bad).unwrap();
        assert!(replay_file(&p2, 2, 0, false, false).is_err());
    }

    #[test]
    fn a_damaged_header_only_drops_a_file_that_holds_nothing() {
        let d = tempfile::tempdir().unwrap();
        let (p, _) = journal(d.path(), 1, 3);
        let mut data = std::fs::read(&p).unwrap();
        data[3] ^= 0xff;
        std::fs::write(&p, &data).unwrap();
        let err = replay_file(&p, 1, 0, true, false).unwrap_err().to_string();
        assert!(err.contains("damaged header"), "{err}");
        // A header-only (or zero-filled) newest file held nothing: removed with a warning.
        let mut empty = data[..format::FILE_HEADER_LEN].to_vec();
        empty.extend([0u8; 100]);
        std::fs::write(&p, &empty).unwrap();
        assert_eq!(replay_file(&p, 1, 0, true, false).unwrap().adds.len(), 0);
        assert!(!p.exists());
    }
}
