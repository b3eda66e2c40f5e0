//! Namespace bundles: the unit of ownership. A namespace's 32-bit hash space is cut into
//! contiguous ranges ("bundles"); a topic belongs to the bundle holding the CRC-32C of its
//! `tenant/namespace/topic` path (partitions hash their own names, so they spread).
//!
//! The layout lives at `/strata/v1/bundles/<tenant>/<ns>` ([`BundleLayout`]); a namespace
//! without one has [`DEFAULT_BUNDLES`] equal bundles. Splitting a bundle replaces it by
//! its two halves (compare-and-set on the layout).
//!
//! Invariants: boundaries start at 0, end at 2^32 and strictly increase, so every hash is
//! in exactly one bundle; bundle names (`0x00000000_0x40000000`) are the ranges, so an
//! ownership key names exactly the hashes it covers.

use crate::error::{BrokerError, Result};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use strata_common::TopicName;
use strata_meta::{Condition, MetaError, MetadataStore, keys};

/// Bundles of a namespace that never set its own count (Pulsar's default).
pub const DEFAULT_BUNDLES: u32 = 4;
/// Most bundles a namespace may have.
pub const MAX_BUNDLES: u32 = 4096;
const END: u64 = 1 << 32;

/// A hash range `[start, end)` of a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Range {
    pub start: u64,
    pub end: u64,
}

impl Range {
    /// `0x00000000_0x40000000`: the name used in keys, admin commands and reports.
    pub fn name(&self) -> String {
        // The last range ends at 2^32, written as 0xffffffff (no boundary is ever
        // 0xffffffff: splits keep ranges at least 4 wide).
        format!("0x{:08x}_0x{:08x}", self.start, self.end.min(END - 1))
    }

    /// Parses a bundle name.
    pub fn parse(s: &str) -> Result<Range> {
        let bad = || {
            BrokerError::InvalidArgument(format!(
                "bundle {s:?} is not a range like 0x00000000_0x40000000 (see `strata admin bundles list`)"
            ))
        };
        let (a, b) = s.split_once('_').ok_or_else(bad)?;
        let hex = |x: &str| u64::from_str_radix(x.strip_prefix("0x").ok_or_else(bad)?, 16).map_err(|_| bad());
        let (start, mut end) = (hex(a)?, hex(b)?);
        if end == END - 1 {
            end = END;
        }
        if start >= end || end > END {
            return Err(bad());
        }
        Ok(Range { start, end })
    }

    pub fn contains(&self, hash: u32) -> bool {
        (self.start..self.end).contains(&u64::from(hash))
    }
}

/// A bundle: a namespace and one of its ranges.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Bundle {
    pub tenant: String,
    pub namespace: String,
    pub range: Range,
}

impl Bundle {
    /// `tenant/ns/0x00000000_0x40000000`.
    pub fn id(&self) -> String {
        format!("{}/{}/{}", self.tenant, self.namespace, self.range.name())
    }

    /// Parses `tenant/ns/0x00000000_0x40000000`.
    pub fn parse(s: &str) -> Result<Bundle> {
        let mut parts = s.splitn(3, '/');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(t), Some(n), Some(r)) if !t.is_empty() && !n.is_empty() => Ok(Bundle {
                tenant: t.into(),
                namespace: n.into(),
                range: Range::parse(r)?,
            }),
            _ => Err(BrokerError::InvalidArgument(format!(
                "bundle {s:?} must be tenant/namespace/0xSTART_0xEND"
            ))),
        }
    }

    /// The ownership key of this bundle.
    pub fn owner_key(&self) -> String {
        keys::bundle_owner(&self.tenant, &self.namespace, &self.range.name())
    }

    /// Whether `topic` belongs to this bundle.
    pub fn holds(&self, topic: &TopicName) -> bool {
        topic.tenant() == self.tenant && topic.namespace() == self.namespace && self.range.contains(topic_hash(topic))
    }
}

/// The hash that places a topic in a bundle.
pub fn topic_hash(topic: &TopicName) -> u32 {
    crc32c::crc32c(topic.path().as_bytes())
}

/// A namespace's bundles, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleLayout {
    /// `n + 1` increasing boundaries from 0 to 2^32 for `n` bundles.
    pub boundaries: Vec<u64>,
}

impl BundleLayout {
    /// `n` equal bundles.
    pub fn even(n: u32) -> Result<Self> {
        if n == 0 || n > MAX_BUNDLES {
            return Err(BrokerError::InvalidArgument(format!(
                "a namespace has 1 to {MAX_BUNDLES} bundles, not {n}"
            )));
        }
        let n = u64::from(n);
        Ok(Self {
            boundaries: (0..=n).map(|i| i * END / n).collect(),
        })
    }

    fn validate(&self) -> Result<()> {
        let b = &self.boundaries;
        let ok = b.len() >= 2
            && b.len() as u32 <= MAX_BUNDLES + 1
            && b[0] == 0
            && *b.last().expect("non-empty") == END
            && b.windows(2).all(|w| w[0] < w[1]);
        if ok {
            Ok(())
        } else {
            Err(BrokerError::Corruption(format!(
                "bundle layout {b:?} does not cover 0..2^32"
            )))
        }
    }

    pub fn ranges(&self) -> impl Iterator<Item = Range> + '_ {
        self.boundaries.windows(2).map(|w| Range { start: w[0], end: w[1] })
    }

    /// The range holding `hash`.
    pub fn range_of(&self, hash: u32) -> Range {
        let h = u64::from(hash);
        let i = self.boundaries.partition_point(|b| *b <= h) - 1;
        Range {
            start: self.boundaries[i],
            end: self.boundaries[i + 1],
        }
    }

    /// The layout with `range` split into two halves.
    pub fn split(&self, range: Range) -> Result<Self> {
        if !self.ranges().any(|r| r == range) {
            return Err(BrokerError::NotFound(format!(
                "bundle {} (the namespace's bundles changed? list them again)",
                range.name()
            )));
        }
        if range.end - range.start < 8 {
            return Err(BrokerError::InvalidArgument(format!(
                "bundle {} is too small to split",
                range.name()
            )));
        }
        if self.boundaries.len() as u32 > MAX_BUNDLES {
            return Err(BrokerError::InvalidArgument(format!(
                "the namespace already has the maximum of {MAX_BUNDLES} bundles"
            )));
        }
        let mut boundaries = self.boundaries.clone();
        let at = boundaries.binary_search(&range.start).expect("range is in the layout") + 1;
        boundaries.insert(at, range.start + (range.end - range.start) / 2);
        Ok(Self { boundaries })
    }
}

/// Reads a namespace's layout (the default one if it never stored its own), with the
/// version to compare-and-set against (0: not stored).
pub async fn load_layout(store: &dyn MetadataStore, tenant: &str, namespace: &str) -> Result<(BundleLayout, u64)> {
    match store.get(&keys::bundles(tenant, namespace)).await? {
        Some(v) => {
            let l: BundleLayout = serde_json::from_slice(&v.value)
                .map_err(|e| BrokerError::Corruption(format!("bundle layout of {tenant}/{namespace}: {e}")))?;
            l.validate()?;
            Ok((l, v.version))
        }
        None => Ok((BundleLayout::even(DEFAULT_BUNDLES)?, 0)),
    }
}

/// Stores a namespace's layout if it is still at `version` (0: not stored yet).
pub async fn store_layout(
    store: &dyn MetadataStore,
    tenant: &str,
    namespace: &str,
    layout: &BundleLayout,
    version: u64,
) -> Result<()> {
    layout.validate()?;
    let cond = if version == 0 {
        Condition::Absent
    } else {
        Condition::Version(version)
    };
    let value = Bytes::from(serde_json::to_vec(layout).expect("serializable"));
    match store.put(&keys::bundles(tenant, namespace), value, cond).await {
        Ok(_) => Ok(()),
        Err(MetaError::BadVersion(_)) => Err(BrokerError::Metadata(format!(
            "the bundles of {tenant}/{namespace} changed meanwhile; try again"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// The bundle `topic` belongs to under `layout`.
pub fn bundle_of(layout: &BundleLayout, topic: &TopicName) -> Bundle {
    Bundle {
        tenant: topic.tenant().to_string(),
        namespace: topic.namespace().to_string(),
        range: layout.range_of(topic_hash(topic)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_hash_is_in_exactly_one_bundle() {
        let l = BundleLayout::even(4).unwrap();
        assert_eq!(l.ranges().count(), 4);
        for h in [0u32, 1, 0x3fff_ffff, 0x4000_0000, 0x8000_0001, u32::MAX] {
            let r = l.range_of(h);
            assert!(r.contains(h));
            assert_eq!(l.ranges().filter(|x| x.contains(h)).count(), 1);
        }
        let l = BundleLayout::even(3).unwrap();
        assert_eq!(l.range_of(u32::MAX).end, END);
        assert!(BundleLayout::even(0).is_err());
        assert!(BundleLayout::even(MAX_BUNDLES + 1).is_err());
    }

    #[test]
    fn names_round_trip() {
        let l = BundleLayout::even(4).unwrap();
        let names: Vec<String> = l.ranges().map(|r| r.name()).collect();
        assert_eq!(names[0], "0x00000000_0x40000000");
        assert_eq!(names[3], "0xc0000000_0xffffffff");
        for r in l.ranges() {
            assert_eq!(Range::parse(&r.name()).unwrap(), r);
        }
        assert!(Range::parse("0x10_0x05").is_err());
        assert!(Range::parse("nonsense").is_err());
        let b = Bundle::parse("acme/ns/0x00000000_0x40000000").unwrap();
        assert_eq!(b.id(), "acme/ns/0x00000000_0x40000000");
        assert!(Bundle::parse("acme/0x00000000_0x40000000").is_err());
    }

    #[test]
    fn split_halves_a_bundle() {
        let l = BundleLayout::even(2).unwrap();
        let first = l.ranges().next().unwrap();
        let s = l.split(first).unwrap();
        assert_eq!(s.boundaries, vec![0, 1 << 30, 1 << 31, 1 << 32]);
        s.validate().unwrap();
        assert!(s.split(first).is_err(), "the old range is gone");
    }

    #[test]
    fn topics_spread_over_bundles() {
        let l = BundleLayout::even(4).unwrap();
        let mut seen = std::collections::HashSet::new();
        for i in 0..64 {
            let t = TopicName::parse(&format!("public/default/t{i}")).unwrap();
            let b = bundle_of(&l, &t);
            assert!(b.holds(&t));
            seen.insert(b.range);
        }
        assert_eq!(seen.len(), 4);
    }
}
