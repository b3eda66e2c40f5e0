//! The RocksDB index: where each entry lives, per-ledger state, the journal checkpoint and
//! per-entry-log usage for garbage collection.
//!
//! Key layout (format version [`INDEX_VERSION`], big-endian ids so keys sort by id):
//! - `v`                          → index format version (u32 LE)
//! - `c`                          → checkpoint: journal file id, offset (u64 LE each)
//! - `l` ledger                   → [`LedgerMeta`]
//! - `d` ledger                   → tombstone of a deleted ledger (never reused)
//! - `e` ledger entry             → [`Location`] of the entry in an entry log
//! - `u` log ledger               → bytes of `ledger` stored in entry log `log`
//!
//! Invariants: state changes that callers are told about (fence, delete, a new ledger's
//! token) are written with `sync = true` before the call returns; a flush writes its
//! locations, usage and the new checkpoint in one synced batch, so the checkpoint never
//! runs ahead of the index.

use crate::entry_log::Location;
use crate::error::{BookieError, Result};
use crate::journal::JournalPos;
use bytes::Bytes;
use rocksdb::{DB, Direction, IteratorMode, Options, WriteBatch, WriteOptions};
use std::collections::HashSet;
use std::path::Path;

/// Version of this key layout.
pub const INDEX_VERSION: u32 = 1;

/// Persistent state of one ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerMeta {
    pub fenced: bool,
    pub lac: Option<u64>,
    pub token: Bytes,
}

impl LedgerMeta {
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(11 + self.token.len());
        v.push(1);
        v.push(u8::from(self.fenced));
        v.extend_from_slice(&self.lac.unwrap_or(u64::MAX).to_le_bytes());
        v.push(self.token.len() as u8);
        v.extend_from_slice(&self.token);
        v
    }

    fn decode(b: &[u8]) -> Result<Self> {
        let bad = || BookieError::Corruption(format!("index: undecodable ledger state {b:?}"));
        if b.len() < 11 || b[0] != 1 {
            return Err(bad());
        }
        let lac = u64::from_le_bytes(b[2..10].try_into().map_err(|_| bad())?);
        let tlen = b[10] as usize;
        if b.len() != 11 + tlen {
            return Err(bad());
        }
        Ok(Self {
            fenced: b[1] != 0,
            lac: (lac != u64::MAX).then_some(lac),
            token: Bytes::copy_from_slice(&b[11..]),
        })
    }
}

fn key1(tag: u8, a: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = tag;
    k[1..].copy_from_slice(&a.to_be_bytes());
    k
}

fn key2(tag: u8, a: u64, b: u64) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = tag;
    k[1..9].copy_from_slice(&a.to_be_bytes());
    k[9..].copy_from_slice(&b.to_be_bytes());
    k
}

fn be(b: &[u8]) -> u64 {
    u64::from_be_bytes(b.try_into().expect("8-byte key part"))
}

/// Live ledgers with their state, and the ids of deleted ones.
pub type LedgerList = (Vec<(u64, LedgerMeta)>, Vec<u64>);
/// Per entry log: the bytes each ledger has in it.
pub type LogUsage = Vec<(u64, Vec<(u64, u64)>)>;

/// One write of index changes, applied atomically.
#[derive(Default)]
pub struct IndexBatch {
    batch: WriteBatch,
}

impl IndexBatch {
    pub fn put_location(&mut self, ledger: u64, entry: u64, loc: Location) {
        self.batch.put(key2(b'e', ledger, entry), loc.encode());
    }

    pub fn add_usage(&mut self, log: u64, ledger: u64, bytes: u64) {
        self.batch.put(key2(b'u', log, ledger), bytes.to_le_bytes());
    }

    pub fn delete_usage(&mut self, log: u64, ledger: u64) {
        self.batch.delete(key2(b'u', log, ledger));
    }

    pub fn put_ledger(&mut self, ledger: u64, meta: &LedgerMeta) {
        self.batch.put(key1(b'l', ledger), meta.encode());
    }

    pub fn set_checkpoint(&mut self, pos: JournalPos) {
        let mut v = [0u8; 16];
        v[..8].copy_from_slice(&pos.file_id.to_le_bytes());
        v[8..].copy_from_slice(&pos.offset.to_le_bytes());
        self.batch.put(b"c", v);
    }
}

/// The index database.
pub struct Index {
    db: DB,
}

impl Index {
    pub fn open(dir: &Path) -> Result<Self> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        // Few, small writes: keep memory modest for a standalone laptop install.
        opts.set_write_buffer_size(32 << 20);
        opts.set_max_background_jobs(2);
        let db = DB::open(&opts, dir).map_err(|e| {
            BookieError::Io(format!(
                "opening the index at {}: {e} (is another bookie using this data directory?)",
                dir.display()
            ))
        })?;
        let index = Self { db };
        match index.db.get(b"v")? {
            None => index.db.put(b"v", INDEX_VERSION.to_le_bytes())?,
            Some(v) if v.as_slice() == INDEX_VERSION.to_le_bytes() => {}
            Some(v) => {
                return Err(BookieError::Corruption(format!(
                    "index at {} has format version {v:?}; this build reads version {INDEX_VERSION}",
                    dir.display()
                )));
            }
        }
        Ok(index)
    }

    /// Opens an index read-only (for `inspect`, also while a bookie runs).
    pub fn open_read_only(dir: &Path) -> Result<Self> {
        let db = DB::open_for_read_only(&Options::default(), dir, false)
            .map_err(|e| BookieError::Io(format!("opening the index at {} read-only: {e}", dir.display())))?;
        Ok(Self { db })
    }

    fn synced() -> WriteOptions {
        let mut w = WriteOptions::default();
        w.set_sync(true);
        w
    }

    pub fn write(&self, batch: IndexBatch) -> Result<()> {
        Ok(self.db.write_opt(batch.batch, &Self::synced())?)
    }

    pub fn checkpoint(&self) -> Result<Option<JournalPos>> {
        Ok(self.db.get(b"c")?.and_then(|v| {
            (v.len() == 16).then(|| JournalPos {
                file_id: u64::from_le_bytes(v[..8].try_into().expect("8")),
                offset: u64::from_le_bytes(v[8..].try_into().expect("8")),
            })
        }))
    }

    pub fn put_ledger(&self, ledger: u64, meta: &LedgerMeta) -> Result<()> {
        Ok(self.db.put_opt(key1(b'l', ledger), meta.encode(), &Self::synced())?)
    }

    /// Every ledger's state and every tombstone.
    pub fn ledgers(&self) -> Result<LedgerList> {
        let mut live = Vec::new();
        for kv in self.db.iterator(IteratorMode::From(b"l", Direction::Forward)) {
            let (k, v) = kv?;
            if k[0] != b'l' {
                break;
            }
            live.push((be(&k[1..9]), LedgerMeta::decode(&v)?));
        }
        let mut dead = Vec::new();
        for kv in self.db.iterator(IteratorMode::From(b"d", Direction::Forward)) {
            let (k, _) = kv?;
            if k[0] != b'd' {
                break;
            }
            dead.push(be(&k[1..9]));
        }
        Ok((live, dead))
    }

    pub fn location(&self, ledger: u64, entry: u64) -> Result<Option<Location>> {
        match self.db.get_pinned(key2(b'e', ledger, entry))? {
            None => Ok(None),
            Some(v) => Location::decode(&v).map(Some).ok_or_else(|| {
                BookieError::Corruption(format!("index: bad location for ledger {ledger} entry {entry}"))
            }),
        }
    }

    /// The highest indexed entry of a ledger.
    pub fn last_entry(&self, ledger: u64) -> Result<Option<u64>> {
        let upper = key2(b'e', ledger, u64::MAX);
        let mut it = self.db.iterator(IteratorMode::From(&upper, Direction::Reverse));
        match it.next() {
            Some(kv) => {
                let (k, _) = kv?;
                Ok((k.len() == 17 && k[0] == b'e' && be(&k[1..9]) == ledger).then(|| be(&k[9..17])))
            }
            None => Ok(None),
        }
    }

    /// Every indexed (ledger, entry, location), for inspection.
    pub fn all_locations(&self) -> Result<Vec<(u64, u64, Location)>> {
        let mut out = Vec::new();
        for kv in self.db.iterator(IteratorMode::From(b"e", Direction::Forward)) {
            let (k, v) = kv?;
            if k[0] != b'e' {
                break;
            }
            let loc =
                Location::decode(&v).ok_or_else(|| BookieError::Corruption("index: undecodable location".into()))?;
            out.push((be(&k[1..9]), be(&k[9..17]), loc));
        }
        Ok(out)
    }

    /// Which of `logs` some entry location points into. Reads every location, so it is for
    /// start-up checks of damaged files, not for a hot path.
    pub fn logs_referenced(&self, logs: &HashSet<u64>) -> Result<HashSet<u64>> {
        let mut found = HashSet::new();
        for kv in self.db.iterator(IteratorMode::From(b"e", Direction::Forward)) {
            let (k, v) = kv?;
            if k[0] != b'e' || found.len() == logs.len() {
                break;
            }
            let loc =
                Location::decode(&v).ok_or_else(|| BookieError::Corruption("index: undecodable location".into()))?;
            if logs.contains(&loc.log) {
                found.insert(loc.log);
            }
        }
        Ok(found)
    }

    /// Deletes a ledger: its state and locations go, a tombstone stays so journal replay
    /// and in-flight flushes never bring it back.
    pub fn delete_ledger(&self, ledger: u64) -> Result<()> {
        let mut b = WriteBatch::default();
        b.delete(key1(b'l', ledger));
        b.put(key1(b'd', ledger), []);
        let end: Vec<u8> = match ledger.checked_add(1) {
            Some(next) => key1(b'e', next).to_vec(),
            None => b"f".to_vec(),
        };
        b.delete_range(key2(b'e', ledger, 0).to_vec(), end);
        Ok(self.db.write_opt(b, &Self::synced())?)
    }

    /// Bytes of `ledger` recorded in entry log `log`.
    pub fn usage_of(&self, log: u64, ledger: u64) -> Result<u64> {
        Ok(self
            .db
            .get_pinned(key2(b'u', log, ledger))?
            .and_then(|v| v.as_ref().try_into().ok().map(u64::from_le_bytes))
            .unwrap_or(0))
    }

    /// Usage of every entry log: log → [(ledger, bytes)].
    pub fn usage(&self) -> Result<LogUsage> {
        let mut out: LogUsage = Vec::new();
        for kv in self.db.iterator(IteratorMode::From(b"u", Direction::Forward)) {
            let (k, v) = kv?;
            if k[0] != b'u' {
                break;
            }
            let (log, ledger) = (be(&k[1..9]), be(&k[9..17]));
            let bytes = u64::from_le_bytes(v.as_ref().try_into().unwrap_or([0; 8]));
            match out.last_mut() {
                Some((l, v)) if *l == log => v.push((ledger, bytes)),
                _ => out.push((log, vec![(ledger, bytes)])),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_state_survives_reopen_and_delete_leaves_a_tombstone() {
        let d = tempfile::tempdir().unwrap();
        {
            let idx = Index::open(d.path()).unwrap();
            let meta = LedgerMeta {
                fenced: true,
                lac: Some(5),
                token: Bytes::from_static(b"tok"),
            };
            idx.put_ledger(7, &meta).unwrap();
            idx.put_ledger(8, &meta).unwrap();
            let mut b = IndexBatch::default();
            for e in 0..3 {
                b.put_location(
                    7,
                    e,
                    Location {
                        log: 1,
                        offset: 32 + e,
                        len: 40,
                    },
                );
            }
            b.set_checkpoint(JournalPos { file_id: 2, offset: 99 });
            idx.write(b).unwrap();
            assert_eq!(idx.last_entry(7).unwrap(), Some(2));
            assert_eq!(idx.last_entry(8).unwrap(), None);
            idx.delete_ledger(7).unwrap();
            assert_eq!(idx.location(7, 1).unwrap(), None);
        }
        let idx = Index::open(d.path()).unwrap();
        let (live, dead) = idx.ledgers().unwrap();
        assert_eq!(live.len(), 1);
        assert_eq!(live[0].0, 8);
        assert!(live[0].1.fenced);
        assert_eq!(live[0].1.lac, Some(5));
        assert_eq!(dead, vec![7]);
        assert_eq!(idx.checkpoint().unwrap(), Some(JournalPos { file_id: 2, offset: 99 }));
    }

    #[test]
    fn finds_the_entry_logs_locations_point_into() {
        let d = tempfile::tempdir().unwrap();
        let idx = Index::open(d.path()).unwrap();
        let mut b = IndexBatch::default();
        for (entry, log) in [(0, 3), (1, 3), (2, 5)] {
            b.put_location(
                9,
                entry,
                Location {
                    log,
                    offset: 32,
                    len: 40,
                },
            );
        }
        b.add_usage(4, 9, 100); // usage alone is no reference
        idx.write(b).unwrap();
        let asked: HashSet<u64> = [3, 4, 6].into();
        assert_eq!(idx.logs_referenced(&asked).unwrap(), [3].into());
        assert!(idx.logs_referenced(&HashSet::new()).unwrap().is_empty());
    }
}
