//! Topic policies: per-topic overrides of broker defaults, kept in the metadata store at
//! `keys::topic_policies` (JSON). A partitioned topic's policies are stored once, under
//! its own name, and apply to every partition.
//!
//! Invariant: an unset field means "the broker's default", so a policy set on a topic
//! never freezes a default that the operator of the cluster later changes.

use crate::error::{BrokerError, Result};
use crate::offload::OffloadPolicy;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use strata_common::TopicName;
use strata_meta::{MetadataStore, keys};

/// A topic's own policies, as stored and as the admin API carries them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicPolicies {
    /// Offload closed ledgers while more than this many bytes stay on bookies; -1 never
    /// by size, 0 every closed ledger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offload_threshold_bytes: Option<i64>,
    /// Offload ledgers closed this many seconds ago; -1 never by age.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offload_threshold_secs: Option<i64>,
    /// Delete the bookie copy of an offloaded ledger this many seconds after its upload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offload_deletion_lag_secs: Option<i64>,
    /// Seconds acknowledged messages are kept; -1 forever, 0 not at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_time_secs: Option<i64>,
    /// Bytes of acknowledged messages kept; -1 no limit, 0 none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_bytes: Option<i64>,
}

/// Retention as applied: `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub time: Option<Duration>,
    pub bytes: Option<u64>,
}

fn limit(field: &str, v: i64) -> Result<Option<u64>> {
    match v {
        -1 => Ok(None),
        v if v >= 0 => Ok(Some(v as u64)),
        v => Err(BrokerError::InvalidArgument(format!(
            "{field} is {v}: use -1 (unlimited), 0 (none) or a positive number"
        ))),
    }
}

impl TopicPolicies {
    /// Checks every field's range; the error names the field.
    pub fn validate(&self) -> Result<()> {
        if let Some(v) = self.retention_time_secs {
            limit("retention_time_secs", v)?;
        }
        if let Some(v) = self.retention_bytes {
            limit("retention_bytes", v)?;
        }
        if let Some(v) = self.offload_threshold_bytes {
            limit("offload_threshold_bytes", v)?;
        }
        if let Some(v) = self.offload_threshold_secs {
            limit("offload_threshold_secs", v)?;
        }
        if let Some(v) = self.offload_deletion_lag_secs
            && v < 0
        {
            return Err(BrokerError::InvalidArgument(format!(
                "offload_deletion_lag_secs is {v}: use 0 or a positive number of seconds"
            )));
        }
        Ok(())
    }

    /// Retention for a topic with these policies on a broker whose default is `default`.
    pub fn retention(&self, default: Retention) -> Retention {
        Retention {
            time: match self.retention_time_secs.map(|v| limit("", v)) {
                Some(Ok(v)) => v.map(Duration::from_secs),
                _ => default.time,
            },
            bytes: match self.retention_bytes.map(|v| limit("", v)) {
                Some(Ok(v)) => v,
                _ => default.bytes,
            },
        }
    }

    /// Offload for a topic with these policies on a broker whose default is `default`.
    pub fn offload(&self, default: OffloadPolicy) -> OffloadPolicy {
        OffloadPolicy {
            threshold_bytes: match self.offload_threshold_bytes.map(|v| limit("", v)) {
                Some(Ok(v)) => v,
                _ => default.threshold_bytes,
            },
            threshold_age: match self.offload_threshold_secs.map(|v| limit("", v)) {
                Some(Ok(v)) => v.map(Duration::from_secs),
                _ => default.threshold_age,
            },
            deletion_lag: match self.offload_deletion_lag_secs {
                Some(v) if v >= 0 => Duration::from_secs(v as u64),
                _ => default.deletion_lag,
            },
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Where `t`'s policies live: under the partitioned topic for a partition of one.
pub async fn owner_of_policies(store: &dyn MetadataStore, t: &TopicName) -> Result<TopicName> {
    if let Some((parent, _)) = t.partition_of()
        && store.get(&keys::partitioned(&parent.path())).await?.is_some()
    {
        return Ok(parent);
    }
    Ok(t.clone())
}

/// The policies stored for `t` itself (empty if none).
pub async fn load(store: &dyn MetadataStore, t: &TopicName) -> Result<TopicPolicies> {
    match store.get(&keys::topic_policies(&t.path())).await? {
        None => Ok(TopicPolicies::default()),
        Some(v) => {
            serde_json::from_slice(&v.value).map_err(|e| BrokerError::Corruption(format!("policies of {t}: {e}")))
        }
    }
}

/// The policies that apply to `t` (a partition's are its partitioned topic's).
pub async fn effective(store: &dyn MetadataStore, t: &TopicName) -> Result<TopicPolicies> {
    let owner = owner_of_policies(store, t).await?;
    load(store, &owner).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_fields_take_the_default_and_set_ones_override_it() {
        let default = Retention {
            time: Some(Duration::ZERO),
            bytes: Some(0),
        };
        assert_eq!(TopicPolicies::default().retention(default), default);
        let p = TopicPolicies {
            retention_time_secs: Some(-1),
            retention_bytes: Some(1024),
            ..Default::default()
        };
        assert_eq!(
            p.retention(default),
            Retention {
                time: None,
                bytes: Some(1024)
            }
        );
        let stored = serde_json::to_string(&TopicPolicies::default()).unwrap();
        assert_eq!(stored, "{}");
        let off = OffloadPolicy {
            threshold_bytes: None,
            threshold_age: Some(Duration::from_secs(60)),
            deletion_lag: Duration::from_secs(3600),
        };
        assert_eq!(TopicPolicies::default().offload(off), off);
        let p = TopicPolicies {
            offload_threshold_bytes: Some(0),
            offload_threshold_secs: Some(-1),
            offload_deletion_lag_secs: Some(0),
            ..Default::default()
        };
        assert_eq!(
            p.offload(off),
            OffloadPolicy {
                threshold_bytes: Some(0),
                threshold_age: None,
                deletion_lag: Duration::ZERO
            }
        );
        for bad in [
            TopicPolicies {
                offload_threshold_bytes: Some(-5),
                ..Default::default()
            },
            TopicPolicies {
                offload_deletion_lag_secs: Some(-1),
                ..Default::default()
            },
        ] {
            assert!(bad.validate().unwrap_err().to_string().contains("offload_"));
        }
    }

    #[test]
    fn out_of_range_values_are_refused_by_name() {
        let p = TopicPolicies {
            retention_bytes: Some(-2),
            ..Default::default()
        };
        let e = p.validate().unwrap_err().to_string();
        assert!(e.contains("retention_bytes"), "{e}");
        assert!(
            TopicPolicies {
                retention_time_secs: Some(i64::MAX),
                retention_bytes: Some(-1),
                ..Default::default()
            }
            .validate()
            .is_ok()
        );
    }
}
