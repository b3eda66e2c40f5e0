//! The object layout of an offloaded ledger: one **data object** holding every entry, and
//! one **index object** saying where each entry starts. Pure encoding and decoding, no I/O.
//!
//! Data object: one record per entry, in entry order from entry 0:
//!
//! ```text
//! entry id u64 LE | payload length u32 LE | checksum u32 LE | payload
//! ```
//!
//! The checksum is the writer checksum bookies store with the entry
//! (`strata_common::ids::entry_checksum` over ledger id, entry id and payload), so a byte
//! read back from object storage is checked against the checksum computed when it was
//! first written, not one computed at offload time.
//!
//! Index object:
//!
//! ```text
//! magic "STIX" | format u32 LE (= 1) | ledger u64 | entries u64 | data bytes u64 |
//! payload bytes u64 | entries × record offset u64 | crc32c u32 of everything before it
//! ```
//!
//! Invariants: record `i` spans `offset[i]..offset[i + 1]` (the last ends at the data
//! size); every decode checks lengths before allocating, the index's own CRC, the ledger
//! id, the entry ids and every checksum, and an error names the ledger, the entry and what
//! was wrong. Bytes that fail a check are never returned.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use strata_common::ids::entry_checksum;
use strata_common::{EntryId, LedgerId};

/// Format version written in the index and in each object's metadata.
pub const FORMAT: u32 = 1;
const MAGIC: &[u8; 4] = b"STIX";
/// Record header: entry id, length, checksum.
pub const RECORD_HEADER: u64 = 16;
const INDEX_HEADER: usize = 4 + 4 + 8 * 4;

/// Why offloaded bytes cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("offloaded index of ledger {ledger}: {what}")]
    Index { ledger: u64, what: String },
    #[error("offloaded data of ledger {ledger}, entry {entry}: {what}")]
    Data { ledger: u64, entry: u64, what: String },
}

/// Appends one entry's record to a data object being built.
pub fn put_record(buf: &mut BytesMut, ledger: LedgerId, entry: u64, payload: &[u8]) {
    buf.reserve(RECORD_HEADER as usize + payload.len());
    buf.put_u64_le(entry);
    buf.put_u32_le(payload.len() as u32);
    buf.put_u32_le(entry_checksum(ledger, EntryId::new(entry), payload));
    buf.put_slice(payload);
}

/// Collects record offsets while a data object is written; [`IndexBuilder::finish`] gives
/// the index object.
#[derive(Debug, Clone)]
pub struct IndexBuilder {
    ledger: LedgerId,
    offsets: Vec<u64>,
    data_bytes: u64,
    payload_bytes: u64,
}

impl IndexBuilder {
    pub fn new(ledger: LedgerId) -> Self {
        Self {
            ledger,
            offsets: Vec::new(),
            data_bytes: 0,
            payload_bytes: 0,
        }
    }

    /// Records the next entry (entry ids are consecutive from 0) of `payload_len` bytes.
    pub fn push(&mut self, payload_len: usize) {
        self.offsets.push(self.data_bytes);
        self.data_bytes += RECORD_HEADER + payload_len as u64;
        self.payload_bytes += payload_len as u64;
    }

    pub fn entries(&self) -> u64 {
        self.offsets.len() as u64
    }

    pub fn data_bytes(&self) -> u64 {
        self.data_bytes
    }

    pub fn finish(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(INDEX_HEADER + self.offsets.len() * 8 + 4);
        b.put_slice(MAGIC);
        b.put_u32_le(FORMAT);
        b.put_u64_le(self.ledger.get());
        b.put_u64_le(self.offsets.len() as u64);
        b.put_u64_le(self.data_bytes);
        b.put_u64_le(self.payload_bytes);
        for o in &self.offsets {
            b.put_u64_le(*o);
        }
        let crc = crc32c::crc32c(&b);
        b.put_u32_le(crc);
        b.freeze()
    }
}

/// A decoded index object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    pub ledger: LedgerId,
    pub data_bytes: u64,
    pub payload_bytes: u64,
    offsets: Vec<u64>,
}

impl Index {
    /// Decodes and checks an index object of `ledger`.
    pub fn decode(ledger: LedgerId, mut b: &[u8]) -> Result<Self, FormatError> {
        let bad = |what: String| FormatError::Index {
            ledger: ledger.get(),
            what,
        };
        if b.len() < INDEX_HEADER + 4 {
            return Err(bad(format!("{} bytes, shorter than its header", b.len())));
        }
        let (body, crc) = b.split_at(b.len() - 4);
        let stored = u32::from_le_bytes(crc.try_into().expect("4 bytes"));
        if crc32c::crc32c(body) != stored {
            return Err(bad("checksum mismatch (the object is damaged)".into()));
        }
        if &b[..4] != MAGIC {
            return Err(bad("not an index object (bad magic)".into()));
        }
        b.advance(4);
        let format = b.get_u32_le();
        if format != FORMAT {
            return Err(bad(format!("format {format}; this build reads {FORMAT}")));
        }
        let id = b.get_u64_le();
        if id != ledger.get() {
            return Err(bad(format!("it belongs to ledger {id}")));
        }
        let entries = b.get_u64_le();
        let data_bytes = b.get_u64_le();
        let payload_bytes = b.get_u64_le();
        if entries.checked_mul(8) != Some((body.len() - INDEX_HEADER) as u64) {
            return Err(bad(format!(
                "says {entries} entries but holds {} offsets",
                (body.len() - INDEX_HEADER) / 8
            )));
        }
        let offsets: Vec<u64> = (0..entries).map(|_| b.get_u64_le()).collect();
        let mut prev: Option<u64> = None;
        for (i, o) in offsets.iter().enumerate() {
            let floor = prev.map_or(0, |p| p + RECORD_HEADER);
            if (i == 0 && *o != 0) || *o < floor || *o + RECORD_HEADER > data_bytes {
                return Err(bad(format!(
                    "offset of entry {i} ({o}) is out of order or past the data"
                )));
            }
            prev = Some(*o);
        }
        if entries > 0 && data_bytes - payload_bytes != entries * RECORD_HEADER {
            return Err(bad("data and payload sizes disagree with the entry count".into()));
        }
        Ok(Self {
            ledger,
            data_bytes,
            payload_bytes,
            offsets,
        })
    }

    pub fn entries(&self) -> u64 {
        self.offsets.len() as u64
    }

    /// The last entry of a read of at most `max_bytes` of records from `first` (at least
    /// `first` itself, however large). `first` must be an entry of the ledger.
    pub fn chunk_end(&self, first: u64, max_bytes: u64) -> u64 {
        let i = first as usize;
        let start = self.offsets[i];
        let rest = &self.offsets[i + 1..];
        // Entries first..first + k end within the budget (entry j ends where j + 1 starts).
        let k = rest.partition_point(|o| o - start <= max_bytes);
        if k == rest.len() && self.data_bytes - start <= max_bytes {
            self.entries() - 1
        } else {
            first + (k as u64).saturating_sub(1)
        }
    }

    /// The byte range of the data object holding entries `first..=last`.
    pub fn range(&self, first: u64, last: u64) -> Option<std::ops::Range<u64>> {
        if first > last || last >= self.entries() {
            return None;
        }
        let start = self.offsets[first as usize];
        let end = self.offsets.get(last as usize + 1).copied().unwrap_or(self.data_bytes);
        Some(start..end)
    }
}

/// Decodes the records of entries `first..` in `bytes` (a range of the data object that
/// [`Index::range`] gave), checking each entry id and checksum.
pub fn decode_records(ledger: LedgerId, first: u64, mut bytes: Bytes) -> Result<Vec<(u64, Bytes)>, FormatError> {
    let mut out = Vec::new();
    let mut expect = first;
    while bytes.has_remaining() {
        let bad = |what: String| FormatError::Data {
            ledger: ledger.get(),
            entry: expect,
            what,
        };
        if (bytes.remaining() as u64) < RECORD_HEADER {
            return Err(bad(format!(
                "{} bytes left, shorter than a record header",
                bytes.remaining()
            )));
        }
        let id = bytes.get_u64_le();
        let len = bytes.get_u32_le() as usize;
        let checksum = bytes.get_u32_le();
        if id != expect {
            return Err(bad(format!("the record says entry {id}")));
        }
        if bytes.remaining() < len {
            return Err(bad(format!(
                "{len} payload bytes announced, {} present",
                bytes.remaining()
            )));
        }
        let payload = bytes.split_to(len);
        if entry_checksum(ledger, EntryId::new(id), &payload) != checksum {
            return Err(bad("checksum mismatch (the object is damaged)".into()));
        }
        out.push((id, payload));
        expect += 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(ledger: LedgerId, payloads: &[&[u8]]) -> (Bytes, Bytes) {
        let mut data = BytesMut::new();
        let mut index = IndexBuilder::new(ledger);
        for (e, p) in payloads.iter().enumerate() {
            put_record(&mut data, ledger, e as u64, p);
            index.push(p.len());
        }
        assert_eq!(index.data_bytes(), data.len() as u64);
        (data.freeze(), index.finish())
    }

    #[test]
    fn entries_round_trip_through_ranges() {
        let l = LedgerId::new(7).unwrap();
        let payloads: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; i as usize * 3]).collect();
        let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        let (data, index) = build(l, &refs);
        let ix = Index::decode(l, &index).unwrap();
        assert_eq!(ix.entries(), 10);
        for (first, last) in [(0, 0), (0, 9), (3, 5), (9, 9)] {
            let r = ix.range(first, last).unwrap();
            let got = decode_records(l, first, data.slice(r.start as usize..r.end as usize)).unwrap();
            let want: Vec<(u64, Bytes)> = (first..=last)
                .map(|e| (e, Bytes::from(payloads[e as usize].clone())))
                .collect();
            assert_eq!(got, want);
        }
        assert_eq!(ix.range(5, 10), None, "past the last entry");
        assert_eq!(ix.range(6, 5), None);
    }

    #[test]
    fn chunks_stay_within_the_budget_and_hold_at_least_one_entry() {
        let l = LedgerId::new(5).unwrap();
        // Records of 16 + 10 = 26 bytes each, and one of 16 + 100.
        let mut payloads: Vec<Vec<u8>> = vec![vec![1; 10]; 6];
        payloads[3] = vec![2; 100];
        let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        let (_, index) = build(l, &refs);
        let ix = Index::decode(l, &index).unwrap();
        assert_eq!(ix.chunk_end(0, 26), 0);
        assert_eq!(ix.chunk_end(0, 51), 0);
        assert_eq!(ix.chunk_end(0, 52), 1);
        assert_eq!(ix.chunk_end(0, 78), 2);
        assert_eq!(ix.chunk_end(3, 1), 3, "one entry even over the budget");
        assert_eq!(ix.chunk_end(4, 52), 5, "exactly the rest");
        assert_eq!(ix.chunk_end(4, 51), 4);
        assert_eq!(ix.chunk_end(0, u64::MAX), 5);
        assert_eq!(ix.chunk_end(5, 0), 5);
    }

    #[test]
    fn an_empty_ledger_has_an_empty_index() {
        let l = LedgerId::new(1).unwrap();
        let (data, index) = build(l, &[]);
        assert!(data.is_empty());
        let ix = Index::decode(l, &index).unwrap();
        assert_eq!(ix.entries(), 0);
        assert_eq!(ix.range(0, 0), None);
    }

    #[test]
    fn damage_is_detected_and_named() {
        let l = LedgerId::new(42).unwrap();
        let (data, index) = build(l, &[b"alpha", b"beta", b"gamma"]);
        // A flipped payload byte: the checksum written with the entry catches it.
        let mut d = data.to_vec();
        let ix = Index::decode(l, &index).unwrap();
        let r = ix.range(1, 1).unwrap();
        d[(r.end - 1) as usize] ^= 1;
        let err = decode_records(l, 0, Bytes::from(d)).unwrap_err();
        assert_eq!(
            err,
            FormatError::Data {
                ledger: 42,
                entry: 1,
                what: "checksum mismatch (the object is damaged)".into()
            }
        );
        assert!(err.to_string().contains("ledger 42, entry 1"));
        // Truncated data.
        let err = decode_records(l, 0, data.slice(..data.len() - 2)).unwrap_err();
        assert!(err.to_string().contains("entry 2"), "{err}");
        // A range decoded as the wrong first entry.
        assert!(decode_records(l, 1, data.clone()).is_err());
        // Another ledger's data (its checksums cover the ledger id).
        assert!(decode_records(LedgerId::new(43).unwrap(), 0, data).is_err());
        // A damaged index, an index of another ledger, a truncated one, a future format.
        let mut i = index.to_vec();
        i[20] ^= 1;
        assert!(
            Index::decode(l, &i)
                .unwrap_err()
                .to_string()
                .contains("checksum mismatch")
        );
        assert!(
            Index::decode(LedgerId::new(9).unwrap(), &index)
                .unwrap_err()
                .to_string()
                .contains("belongs to ledger 42")
        );
        assert!(Index::decode(l, &index[..10]).is_err());
        let mut i = index[..index.len() - 4].to_vec();
        i[4..8].copy_from_slice(&2u32.to_le_bytes());
        let crc = crc32c::crc32c(&i);
        i.extend_from_slice(&crc.to_le_bytes());
        assert!(Index::decode(l, &i).unwrap_err().to_string().contains("format 2"));
    }

    #[test]
    fn a_lying_index_is_refused_before_use() {
        let l = LedgerId::new(3).unwrap();
        // Claims u64::MAX entries: refused without allocating.
        let mut b = BytesMut::new();
        b.put_slice(MAGIC);
        b.put_u32_le(FORMAT);
        b.put_u64_le(3);
        b.put_u64_le(u64::MAX);
        b.put_u64_le(0);
        b.put_u64_le(0);
        let crc = crc32c::crc32c(&b);
        b.put_u32_le(crc);
        assert!(Index::decode(l, &b).unwrap_err().to_string().contains("offsets"));
        // Offsets past the data.
        let mut ib = IndexBuilder::new(l);
        ib.push(4);
        ib.data_bytes = 8; // shorter than the record it announces
        ib.payload_bytes = 0;
        assert!(Index::decode(l, &ib.finish()).is_err());
    }
}
