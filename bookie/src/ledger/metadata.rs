//! Ledger metadata as stored in the metadata store (`/strata/v1/ledgers/<id>`, JSON).
//!
//! A ledger is a sequence of fragments; each fragment names the ensemble of bookies that
//! holds entries from its first entry on. Entry `e` of a fragment with ensemble `B` is
//! stored on its write set `B[(e + i) % E]` for `i in 0..Qw`.
//!
//! Every change is a compare-and-set on the key's version, so a writer's ensemble change
//! and a recoverer's close can never both win.

use crate::error::{BookieError, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Current format of [`LedgerMetadata`].
pub const METADATA_FORMAT: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LedgerState {
    Open,
    InRecovery,
    Closed,
}

/// Entries from `first_entry` on live on `bookies` (until the next fragment starts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fragment {
    pub first_entry: u64,
    pub bookies: Vec<String>,
}

/// Everything known about a ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerMetadata {
    pub format: u32,
    pub ensemble_size: u32,
    pub write_quorum: u32,
    pub ack_quorum: u32,
    pub state: LedgerState,
    /// The last entry, once closed (`None` for a closed empty ledger).
    pub last_entry: Option<u64>,
    /// Payload bytes, once closed.
    pub length: u64,
    pub fragments: Vec<Fragment>,
    /// The writer token (hex) bookies check on adds and fences.
    pub token: String,
    /// Milliseconds since the Unix epoch.
    pub created_ms: u64,
    #[serde(default)]
    pub custom: BTreeMap<String, String>,
}

/// Checks E ≥ Qw ≥ Qa ≥ 1 (and a sane upper bound), naming what is wrong.
pub fn validate_quorum(e: u32, qw: u32, qa: u32) -> Result<()> {
    if qa < 1 {
        return Err(BookieError::InvalidArgument("ack quorum must be at least 1".into()));
    }
    if qw < qa {
        return Err(BookieError::InvalidArgument(format!(
            "write quorum {qw} must be at least the ack quorum {qa}"
        )));
    }
    if e < qw {
        return Err(BookieError::InvalidArgument(format!(
            "ensemble size {e} must be at least the write quorum {qw}"
        )));
    }
    if e > 64 {
        return Err(BookieError::InvalidArgument(format!(
            "ensemble size {e} is over the limit of 64"
        )));
    }
    Ok(())
}

impl LedgerMetadata {
    pub fn encode(&self) -> bytes::Bytes {
        bytes::Bytes::from(serde_json::to_vec(self).expect("ledger metadata serialises"))
    }

    pub fn decode(id: u64, b: &[u8]) -> Result<Self> {
        let md: Self =
            serde_json::from_slice(b).map_err(|e| BookieError::Corruption(format!("metadata of ledger {id}: {e}")))?;
        if md.format != METADATA_FORMAT {
            return Err(BookieError::Corruption(format!(
                "metadata of ledger {id} has format {}; this build reads {METADATA_FORMAT}",
                md.format
            )));
        }
        md.validate()
            .map_err(|e| BookieError::Corruption(format!("metadata of ledger {id}: {e}")))?;
        Ok(md)
    }

    /// Checks what every other method relies on: valid quorums, at least one fragment,
    /// each naming exactly E distinct bookies, starting at increasing entries, a hex token.
    fn validate(&self) -> Result<(), String> {
        validate_quorum(self.ensemble_size, self.write_quorum, self.ack_quorum).map_err(|e| e.to_string())?;
        if self.fragments.is_empty() {
            return Err("no fragments".into());
        }
        let mut prev: Option<u64> = None;
        for f in &self.fragments {
            if f.bookies.len() != self.ensemble_size as usize {
                return Err(format!(
                    "fragment at entry {} names {} bookies, not {}",
                    f.first_entry,
                    f.bookies.len(),
                    self.ensemble_size
                ));
            }
            let mut distinct = f.bookies.clone();
            distinct.sort();
            distinct.dedup();
            if distinct.len() != f.bookies.len() {
                return Err(format!("fragment at entry {} names a bookie twice", f.first_entry));
            }
            if prev.is_some_and(|p| f.first_entry <= p) {
                return Err("fragments do not start at increasing entries".into());
            }
            prev = Some(f.first_entry);
        }
        if !self.token.len().is_multiple_of(2) || !self.token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("writer token is not hex".into());
        }
        Ok(())
    }

    /// The fragment holding `entry`.
    pub fn fragment_of(&self, entry: u64) -> &Fragment {
        self.fragments
            .iter()
            .rev()
            .find(|f| f.first_entry <= entry)
            .unwrap_or(&self.fragments[0])
    }

    /// Indexes (into the fragment's bookies) of `entry`'s write set.
    pub fn write_set_indexes(&self, entry: u64) -> impl Iterator<Item = usize> + '_ {
        let e = self.ensemble_size as u64;
        (0..self.write_quorum as u64).map(move |i| ((entry + i) % e) as usize)
    }

    /// Addresses of the bookies holding `entry`.
    pub fn write_set(&self, entry: u64) -> Vec<String> {
        let f = self.fragment_of(entry);
        self.write_set_indexes(entry).map(|i| f.bookies[i].clone()).collect()
    }

    pub fn last_fragment(&self) -> &Fragment {
        self.fragments.last().expect("a ledger has at least one fragment")
    }

    pub fn token_bytes(&self) -> bytes::Bytes {
        bytes::Bytes::from(hex_decode(&self.token))
    }
}

pub fn hex_encode(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .filter_map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_rules() {
        assert!(validate_quorum(3, 3, 2).is_ok());
        assert!(validate_quorum(5, 3, 2).is_ok());
        assert!(
            validate_quorum(2, 3, 2)
                .unwrap_err()
                .to_string()
                .contains("ensemble size 2")
        );
        assert!(
            validate_quorum(3, 1, 2)
                .unwrap_err()
                .to_string()
                .contains("write quorum 1")
        );
        assert!(validate_quorum(3, 3, 0).is_err());
    }

    #[test]
    fn write_sets_stripe_round_robin_and_follow_fragments() {
        let md = LedgerMetadata {
            format: METADATA_FORMAT,
            ensemble_size: 3,
            write_quorum: 2,
            ack_quorum: 2,
            state: LedgerState::Open,
            last_entry: None,
            length: 0,
            fragments: vec![
                Fragment {
                    first_entry: 0,
                    bookies: vec!["a".into(), "b".into(), "c".into()],
                },
                Fragment {
                    first_entry: 10,
                    bookies: vec!["a".into(), "d".into(), "c".into()],
                },
            ],
            token: hex_encode(b"tok"),
            created_ms: 0,
            custom: BTreeMap::new(),
        };
        assert_eq!(md.write_set(0), vec!["a", "b"]);
        assert_eq!(md.write_set(1), vec!["b", "c"]);
        assert_eq!(md.write_set(2), vec!["c", "a"]);
        assert_eq!(md.write_set(10), vec!["d", "c"]);
        assert_eq!(&md.token_bytes()[..], b"tok");
        let round = LedgerMetadata::decode(1, &md.encode()).unwrap();
        assert_eq!(round, md);
    }
}
