//! Identifiers of ledgers and entries.
//!
//! A [`LedgerId`] is never 0 (0 is what an unset protobuf field decodes to, so accepting
//! it would turn a forgotten field into a real ledger). Entry ids start at 0.

use std::fmt;

/// Why an identifier was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("ledger id must be > 0 (0 means the field was not set)")]
    ZeroLedgerId,
}

/// The id of a ledger: a positive integer assigned by the metadata store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LedgerId(u64);

impl LedgerId {
    /// Validates a raw id.
    pub fn new(raw: u64) -> Result<Self, IdError> {
        if raw == 0 {
            return Err(IdError::ZeroLedgerId);
        }
        Ok(Self(raw))
    }

    /// The raw value, for encoding.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for LedgerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The position of an entry within its ledger, starting at 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryId(u64);

impl EntryId {
    pub fn new(raw: u64) -> Self {
        Self(raw)
    }

    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The checksum a writer attaches to an entry: CRC32C over the ledger id and entry id (each
/// 8 bytes little-endian) followed by the payload. Binding the position into the checksum
/// means an entry served for the wrong position fails verification too.
pub fn entry_checksum(ledger: LedgerId, entry: EntryId, payload: &[u8]) -> u32 {
    let mut head = [0u8; 16];
    head[..8].copy_from_slice(&ledger.get().to_le_bytes());
    head[8..].copy_from_slice(&entry.get().to_le_bytes());
    crc32c_append(crc32c_append(0, &head), payload)
}

// Kept behind one function so the checksum definition lives in one place.
fn crc32c_append(crc: u32, data: &[u8]) -> u32 {
    crc32c::crc32c_append(crc, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_ledger_id_is_rejected() {
        assert_eq!(LedgerId::new(0), Err(IdError::ZeroLedgerId));
        assert_eq!(LedgerId::new(7).unwrap().get(), 7);
    }

    #[test]
    fn checksum_binds_position() {
        let l = LedgerId::new(1).unwrap();
        let a = entry_checksum(l, EntryId::new(0), b"hello");
        let b = entry_checksum(l, EntryId::new(1), b"hello");
        let c = entry_checksum(LedgerId::new(2).unwrap(), EntryId::new(0), b"hello");
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_eq!(a, entry_checksum(l, EntryId::new(0), b"hello"));
    }
}
