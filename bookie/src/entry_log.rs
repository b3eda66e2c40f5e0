//! Entry log files: where entries live after they leave the write cache.
//!
//! The flusher appends entries sorted by (ledger, entry), so a ledger's entries sit next to
//! each other and a catch-up read is mostly sequential. Files are named
//! `entrylog-<id>.log`, start with the common file header and hold records whose body is
//! `ledger u64 | entry u64 | writer checksum u32 | payload`.
//!
//! Invariants: the index only points at records that were fsynced before the index entry
//! was written; a read verifies the record CRC and that the record is the entry the index
//! said it is. Files are only removed by garbage collection once nothing points at them,
//! or at start-up when their header never made it to disk and the index points nowhere
//! into them; a damaged header of a file the index points into refuses to start.

use crate::direct::DirectAppender;
use crate::error::{BookieError, Result};
use crate::format::{self, FileKind};
use crate::index::Index;
use bytes::Bytes;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// Fixed part of an entry log record: ledger, entry, checksum.
pub const FIXED_LEN: usize = 8 + 8 + 4;
/// Write buffer of the appending writer: large sequential writes.
const WRITE_BUFFER: usize = 4 << 20;

/// Where an entry is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub log: u64,
    pub offset: u64,
    /// Whole record length, frame included.
    pub len: u32,
}

impl Location {
    pub fn encode(&self) -> [u8; 20] {
        let mut b = [0u8; 20];
        b[..8].copy_from_slice(&self.log.to_le_bytes());
        b[8..16].copy_from_slice(&self.offset.to_le_bytes());
        b[16..20].copy_from_slice(&self.len.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Option<Self> {
        if b.len() != 20 {
            return None;
        }
        Some(Self {
            log: u64::from_le_bytes(b[..8].try_into().ok()?),
            offset: u64::from_le_bytes(b[8..16].try_into().ok()?),
            len: u32::from_le_bytes(b[16..20].try_into().ok()?),
        })
    }
}

/// An entry as stored.
#[derive(Debug, Clone)]
pub struct StoredEntry {
    pub ledger: u64,
    pub entry: u64,
    pub checksum: u32,
    pub payload: Bytes,
}

impl StoredEntry {
    /// Decodes a checksummed record body.
    pub fn decode(body: Bytes) -> Result<Self, String> {
        let mut f = format::Fields::new(&body);
        let ledger = f.u64()?;
        let entry = f.u64()?;
        let checksum = f.u32()?;
        Ok(Self {
            ledger,
            entry,
            checksum,
            payload: body.slice(f.position()..),
        })
    }
}

/// Most bytes [`EntryLogs::read_run`] reads at once.
pub const MAX_RUN_BYTES: usize = 8 << 20;

/// Verifies the record `buf` read at `loc`, which must be entry `(ledger, entry)`.
fn parse_at(buf: Bytes, loc: Location, ledger: u64, entry: u64) -> Result<StoredEntry> {
    let (body, _) = format::parse_record(FileKind::EntryLog, &buf)
        .map_err(|e| BookieError::Corruption(format!("entry log {} offset {}: {e}", loc.log, loc.offset)))?;
    let stored = StoredEntry::decode(buf.slice(body)).map_err(BookieError::Corruption)?;
    if stored.ledger != ledger || stored.entry != entry {
        return Err(BookieError::Corruption(format!(
            "entry log {} offset {} holds ledger {} entry {}, index said ledger {ledger} entry {entry}",
            loc.log, loc.offset, stored.ledger, stored.entry
        )));
    }
    Ok(stored)
}

pub fn file_name(id: u64) -> String {
    format!("entrylog-{id:020}.log")
}

/// Lists entry log files in `dir` as (id, path), sorted by id.
pub fn list_files(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    format::list_numbered(dir, "entrylog-")
}

/// Read access to every entry log, shared by readers and the flusher.
pub struct EntryLogs {
    dir: PathBuf,
    files: RwLock<HashMap<u64, Arc<File>>>,
}

impl EntryLogs {
    /// Opens every entry log in `dir`, checking headers. Returns the highest id seen.
    ///
    /// A log whose header is not valid is removed only if `index` points nowhere into it:
    /// then it is a log that was being created when the bookie crashed. If the index does
    /// point into it, the header was damaged after the fact and the log holds acknowledged
    /// entries (checkpointed out of the journal, so possibly their only copy here): start-up
    /// refuses, naming the file, and removes nothing.
    pub fn open(dir: &Path, index: &Index) -> Result<(Self, u64)> {
        let mut files = HashMap::new();
        let mut headerless = Vec::new();
        let mut max_id = 0;
        for (id, path) in list_files(dir).map_err(|e| BookieError::io(format!("listing {}", dir.display()), e))? {
            // Also counts logs removed below, so their ids are never used again.
            max_id = max_id.max(id);
            let f = File::open(&path).map_err(|e| BookieError::io(format!("opening {}", path.display()), e))?;
            let mut header = [0u8; format::FILE_HEADER_LEN];
            let header_ok = f
                .read_exact_at(&mut header, 0)
                .map_err(|e| e.to_string())
                .and_then(|_| format::decode_file_header(FileKind::EntryLog, &header));
            match header_ok {
                Ok(hid) if hid == id => {
                    files.insert(id, Arc::new(f));
                }
                Ok(hid) => {
                    return Err(BookieError::Corruption(format!(
                        "entry log {} names itself {hid}, expected {id}",
                        path.display()
                    )));
                }
                Err(e) => headerless.push((id, path, e)),
            }
        }
        if !headerless.is_empty() {
            let ids: HashSet<u64> = headerless.iter().map(|(id, _, _)| *id).collect();
            let referenced = index.logs_referenced(&ids)?;
            if let Some((_, path, e)) = headerless.iter().find(|(id, _, _)| referenced.contains(id)) {
                return Err(BookieError::Corruption(format!(
                    "entry log {} has a damaged header ({e}), but the index points into it: it holds acknowledged entries, so it is not removed and the bookie refuses to start (--repair does not remove it either). Only the 32-byte file header failed its check, so the records may be intact: inspect with `strata bookie inspect --data-dir DIR`; with replication, other bookies still hold its entries",
                    path.display()
                )));
            }
            for (_, path, e) in headerless {
                tracing::warn!(file = %path.display(), error = %e, "entry log without a valid header and not indexed (being created when the bookie stopped); removing it");
                std::fs::remove_file(&path).map_err(|e| BookieError::io(format!("removing {}", path.display()), e))?;
            }
        }
        Ok((
            Self {
                dir: dir.to_path_buf(),
                files: RwLock::new(files),
            },
            max_id,
        ))
    }

    pub fn ids(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self.files.read().expect("entry log map").keys().copied().collect();
        v.sort();
        v
    }

    pub fn path(&self, id: u64) -> PathBuf {
        self.dir.join(file_name(id))
    }

    /// Reads and verifies the record at `loc`, which must be entry `(ledger, entry)`.
    /// Blocking: call from a blocking thread.
    pub fn read(&self, loc: Location, ledger: u64, entry: u64) -> Result<StoredEntry> {
        let len = loc.len as usize;
        if !(format::RECORD_HEADER_LEN + FIXED_LEN..=format::RECORD_HEADER_LEN + format::MAX_RECORD_BODY).contains(&len)
        {
            return Err(BookieError::Corruption(format!(
                "index points at a record of impossible length {len} in entry log {}",
                loc.log
            )));
        }
        let file = self
            .files
            .read()
            .expect("entry log map")
            .get(&loc.log)
            .cloned()
            .ok_or_else(|| BookieError::Corruption(format!("index points into missing entry log {}", loc.log)))?;
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, loc.offset)
            .map_err(|e| BookieError::io(format!("reading entry log {} at offset {}", loc.log, loc.offset), e))?;
        parse_at(Bytes::from(buf), loc, ledger, entry)
    }

    /// Reads and verifies records that follow each other in one entry log (each
    /// location starting where the previous one ends) with a single read: `run` lists
    /// (entry, location) of ledger `ledger`. A catch-up read is mostly such runs, and one
    /// large read costs the kernel a fraction of many small ones.
    /// Blocking: call from a blocking thread.
    pub fn read_run(&self, ledger: u64, run: &[(u64, Location)]) -> Result<Vec<StoredEntry>> {
        let (Some((_, first)), Some((_, last))) = (run.first(), run.last()) else {
            return Ok(Vec::new());
        };
        let contiguous = run
            .windows(2)
            .all(|w| w[1].1.log == first.log && w[0].1.offset.checked_add(w[0].1.len as u64) == Some(w[1].1.offset));
        let span = last.offset.saturating_add(last.len as u64).saturating_sub(first.offset) as usize;
        if !contiguous || span > MAX_RUN_BYTES {
            return Err(BookieError::InvalidArgument(format!(
                "entries {}..={} of ledger {ledger} are not one run of entry log {}",
                run[0].0,
                run[run.len() - 1].0,
                first.log
            )));
        }
        let file = self
            .files
            .read()
            .expect("entry log map")
            .get(&first.log)
            .cloned()
            .ok_or_else(|| BookieError::Corruption(format!("index points into missing entry log {}", first.log)))?;
        let mut buf = vec![0u8; span];
        file.read_exact_at(&mut buf, first.offset).map_err(|e| {
            BookieError::io(
                format!(
                    "reading entry log {} at offset {} ({span} bytes)",
                    first.log, first.offset
                ),
                e,
            )
        })?;
        let buf = Bytes::from(buf);
        run.iter()
            .map(|(entry, loc)| {
                let at = (loc.offset - first.offset) as usize;
                parse_at(buf.slice(at..at + loc.len as usize), *loc, ledger, *entry)
            })
            .collect()
    }

    /// Creates entry log `id` and returns its writer; readers can open it at once.
    pub fn create(&self, id: u64) -> Result<EntryLogWriter> {
        let path = self.path(id);
        let mut out = DirectAppender::create(&path, WRITE_BUFFER)
            .map_err(|e| BookieError::io(format!("creating entry log {}", path.display()), e))?;
        out.append(&[&format::encode_file_header(FileKind::EntryLog, id)])
            .and_then(|_| out.sync())
            .and_then(|_| File::open(&self.dir)?.sync_all())
            .map_err(|e| BookieError::io(format!("initialising entry log {}", path.display()), e))?;
        let reader = File::open(&path).map_err(|e| BookieError::io(format!("opening {}", path.display()), e))?;
        self.files.write().expect("entry log map").insert(id, Arc::new(reader));
        Ok(EntryLogWriter { id, out })
    }

    /// Removes entry log `id` from disk. Readers holding the file keep reading it.
    pub fn remove(&self, id: u64) -> Result<()> {
        self.files.write().expect("entry log map").remove(&id);
        let path = self.path(id);
        std::fs::remove_file(&path).map_err(|e| BookieError::io(format!("removing {}", path.display()), e))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| BookieError::io(format!("syncing {}", self.dir.display()), e))
    }

    /// Reads a whole entry log for compaction or inspection.
    pub fn read_all(&self, id: u64) -> Result<Bytes> {
        let path = self.path(id);
        std::fs::read(&path)
            .map(Bytes::from)
            .map_err(|e| BookieError::io(format!("reading {}", path.display()), e))
    }
}

/// Appends records to one entry log. Owned by the flusher thread.
pub struct EntryLogWriter {
    pub id: u64,
    out: DirectAppender,
}

impl EntryLogWriter {
    /// Bytes in the file once buffered data is written.
    pub fn size(&self) -> u64 {
        self.out.position()
    }

    /// Appends one entry; its location is valid once [`EntryLogWriter::sync`] returned.
    pub fn append(&mut self, ledger: u64, entry: u64, checksum: u32, payload: &[u8]) -> Result<Location> {
        let mut fixed = [0u8; FIXED_LEN];
        fixed[..8].copy_from_slice(&ledger.to_le_bytes());
        fixed[8..16].copy_from_slice(&entry.to_le_bytes());
        fixed[16..20].copy_from_slice(&checksum.to_le_bytes());
        let frame = format::encode_record_frame(FileKind::EntryLog, &fixed, payload);
        let offset = self.out.position();
        self.out
            .append(&[&frame, &fixed, payload])
            .map_err(|e| BookieError::io(format!("writing entry log {}", self.id), e))?;
        Ok(Location {
            log: self.id,
            offset,
            len: (self.out.position() - offset) as u32,
        })
    }

    /// Writes buffered records and fdatasyncs the file.
    pub fn sync(&mut self) -> Result<()> {
        self.out
            .sync()
            .map_err(|e| BookieError::io(format!("writing and syncing entry log {}", self.id), e))
    }
}
