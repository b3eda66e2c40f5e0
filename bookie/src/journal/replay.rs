//! Reading journal files back: on start-up (replay from the last checkpoint) and for
//! `strata bookie inspect`.
//!
//! Recovery rule (STYLE §15): a process crash leaves a *prefix* of what was written in the
//! page cache, so the only damage a crash can cause is a torn **last** record of the
//! **newest** file. Such a tail is truncated with a warning naming the file and offset.
//! Anything else — a bad record with valid records after it, or damage in an older file —
//! means bytes that were fsynced (and maybe acknowledged) changed; the bookie refuses to
//! start unless the operator passes `repair`, which truncates at the damage.
//!
//! "Valid records after it" means after the damaged record's **extent**, never inside it:
//! an entry's payload may be any bytes, a complete journal record included, so the bytes of
//! a torn record prove nothing. See [`damaged_extent`] for how the extent is found when
//! the damage may be in the record's own length field.

use crate::error::{BookieError, Result};
use crate::format::{self, FileKind, MAX_RECORD_BODY, RECORD_HEADER_LEN, RecordError};
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
    /// Offset of a valid record after the damaged record's extent, if there is one (then
    /// the damage is not a torn tail).
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
                let after = damaged_extent(buf, pos, &error);
                // `find_valid_record_after` searches strictly after its `from`.
                let valid_after = (after < buf.len())
                    .then(|| format::find_valid_record_after(kind, buf, after - 1))
                    .flatten()
                    .map(|p| p as u64);
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

/// Where the search for valid records after the damaged record at `pos` starts: the end of
/// that record, as far as it can be known.
///
/// - If the record is intact but for one flipped bit in its length field (or its magic),
///   its CRC finds its true end: a crash tears records (it leaves a prefix of what was
///   written), it does not flip bits, so a record that becomes valid by restoring one bit
///   was written whole and then damaged. Without this, a flipped length that points past
///   the later records (or past the end of the file) would pass for a torn last record
///   and silently drop acknowledged entries after it.
/// - Otherwise, if the frame holds the record magic and a bounded length, the record ends
///   where its length says, also when that is past the end of the file (a record cut
///   short): everything up to there is its payload, whatever it looks like.
/// - Otherwise (no magic, or an impossible length) the extent is unknown and the search
///   starts at the next byte. A torn write leaves true bytes (or zeros), never an
///   impossible length, so any valid record after such a frame means real damage. The
///   residue: damage to several bits of a length field alone, leaving it bounded, still
///   reads as a longer record; nothing in the file can tell that apart from a genuine one.
fn damaged_extent(buf: &[u8], pos: usize, error: &RecordError) -> usize {
    let Some(frame) = buf.get(pos..pos + RECORD_HEADER_LEN) else {
        return buf.len(); // Not even a whole frame: nothing can follow.
    };
    let declared = u32::from_le_bytes(frame[4..8].try_into().expect("4 bytes"));
    if let Some(len) = restored_length(buf, pos, declared) {
        return pos + RECORD_HEADER_LEN + len;
    }
    match error {
        RecordError::BadChecksum | RecordError::Truncated { .. } => {
            pos.saturating_add(RECORD_HEADER_LEN + declared as usize)
        }
        RecordError::BadMagic(_) | RecordError::BadLength(_) => pos + 1,
    }
}

/// The body length, `declared` or `declared` with one bit flipped, for which the record at
/// `pos` passes its CRC (magic not checked: it is outside the CRC), if there is one.
///
/// Cost: one pass over at most [`MAX_RECORD_BODY`] bytes (the candidate body CRCs are
/// extended in order of length and joined with each length's CRC), only on damage.
fn restored_length(buf: &[u8], pos: usize, declared: u32) -> Option<usize> {
    let stored_crc = u32::from_le_bytes(buf[pos + 8..pos + 12].try_into().expect("4 bytes"));
    let body = &buf[pos + RECORD_HEADER_LEN..];
    let mut candidates: Vec<u32> = std::iter::once(declared)
        .chain((0..32).map(|bit| declared ^ (1 << bit)))
        .filter(|l| (*l as usize) <= MAX_RECORD_BODY.min(body.len()))
        .collect();
    candidates.sort_unstable();
    let mut body_crc = crc32c::crc32c(&[]);
    let mut done = 0;
    for len in candidates {
        let len_usize = len as usize;
        body_crc = crc32c::crc32c_append(body_crc, &body[done..len_usize]);
        done = len_usize;
        let crc = crc32c::crc32c_combine(crc32c::crc32c(&len.to_le_bytes()), body_crc, len_usize);
        if crc == stored_crc {
            return Some(len_usize);
        }
    }
    None
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

    /// A journal of three ordinary records and a last one whose payload holds a complete,
    /// valid journal record (an entry's bytes may be anything, journal bytes included).
    /// Returns the file, the last record's start, and where the embedded record ends.
    fn journal_with_embedded_record(dir: &Path) -> (std::path::PathBuf, usize, usize) {
        let (p, _) = journal(dir, 1, 3);
        let mut buf = std::fs::read(&p).unwrap();
        let mut payload = vec![0xaa; 40];
        payload.extend(add(99, b"an entry inside an entry"));
        let embedded_end = payload.len();
        payload.extend([0xbb; 60]);
        let last = buf.len();
        buf.extend(add(3, &payload));
        std::fs::write(&p, &buf).unwrap();
        let embedded_end = last + format::RECORD_HEADER_LEN + ADD_FIXED_LEN + embedded_end;
        (p, last, embedded_end)
    }

    #[test]
    fn a_torn_last_record_holding_a_valid_record_is_still_a_torn_tail() {
        let d = tempfile::tempdir().unwrap();
        let (p, last, embedded_end) = journal_with_embedded_record(d.path());
        let full = std::fs::read(&p).unwrap();
        // Cut short anywhere after the embedded record (also right at its end): the
        // record's declared length runs past the end, so all of it is the torn record.
        for cut in [embedded_end, embedded_end + 1, embedded_end + 30, full.len() - 1] {
            std::fs::write(&p, &full[..cut]).unwrap();
            let r = replay_file(&p, 1, 0, true, false).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
            assert_eq!(r.adds.len(), 3, "cut at {cut}");
            assert!(r.adds.iter().all(|(a, _)| a.entry < 3), "cut at {cut}");
            assert_eq!(r.valid_end, last as u64);
            assert_eq!(
                std::fs::metadata(&p).unwrap().len(),
                last as u64,
                "truncated at the torn record"
            );
        }
        // Whole length on disk, but the end never written (zeros) or damaged: the checksum
        // fails, and the search for later records starts after the record's extent.
        let mut zeroed = full.clone();
        zeroed[embedded_end..].fill(0);
        let mut flipped = full.clone();
        flipped[full.len() - 5] ^= 0x01;
        for bad in [zeroed, flipped] {
            std::fs::write(&p, &bad).unwrap();
            let r = replay_file(&p, 1, 0, true, false).unwrap();
            assert_eq!(r.adds.len(), 3);
            assert_eq!(std::fs::metadata(&p).unwrap().len(), last as u64);
        }
        // A flipped bit in its magic or length field: still the last record, still a tail.
        for at in [last + 1, last + 4, last + 6] {
            let mut bad = full.clone();
            bad[at] ^= 0x20;
            std::fs::write(&p, &bad).unwrap();
            let r = replay_file(&p, 1, 0, true, false).unwrap_or_else(|e| panic!("flip at {at}: {e}"));
            assert_eq!(r.adds.len(), 3, "flip at {at}");
        }
    }

    #[test]
    fn a_flipped_length_bit_in_an_older_record_refuses_to_start() {
        let d = tempfile::tempdir().unwrap();
        let (p, starts) = journal(d.path(), 1, 4);
        let full = std::fs::read(&p).unwrap();
        for bit in 0..32 {
            let mut bad = full.clone();
            bad[starts[1] + 4 + bit / 8] ^= 1 << (bit % 8);
            std::fs::write(&p, &bad).unwrap();
            // Whatever the flipped length claims (past the end of the file, over the
            // later records, or shorter), the records after it were written and synced.
            let err = replay_file(&p, 1, 0, true, false)
                .map(|r| r.adds.len())
                .expect_err(&format!("length bit {bit} flipped: mistaken for a torn tail"))
                .to_string();
            assert!(err.contains(&format!("damaged at offset {}", starts[1])), "{err}");
            assert!(
                err.contains(&format!("valid records follow at offset {}", starts[2])),
                "{err}"
            );
        }
        // The same flips in the last record leave it the last record: a tail, truncated.
        for bit in 0..32 {
            let mut bad = full.clone();
            bad[starts[3] + 4 + bit / 8] ^= 1 << (bit % 8);
            std::fs::write(&p, &bad).unwrap();
            let r = replay_file(&p, 1, 0, true, false).unwrap_or_else(|e| panic!("bit {bit}: {e}"));
            assert_eq!(r.adds.len(), 3, "bit {bit}");
        }
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
