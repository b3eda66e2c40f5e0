//! Types and helpers both kinds share: where the cluster is, deletion and drift policies,
//! spec errors that name their field, Events to publish, subscription summaries.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use strata_client::SubscriptionStats;

/// The annotation that overrides deletion protection.
pub const FORCE_DELETE: &str = "strata.io/force-delete";

/// Whether the object carries `strata.io/force-delete: "true"`.
pub fn force_delete(annotations: Option<&BTreeMap<String, String>>) -> bool {
    annotations
        .and_then(|a| a.get(FORCE_DELETE))
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// A StrataCluster in the resource's namespace.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRef {
    /// The StrataCluster's name.
    #[schemars(length(min = 1))]
    pub name: String,
}

/// A key of a Secret in the resource's namespace holding a token (`strata token create`)
/// the operator sends to a cluster with authentication on.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenSecretRef {
    /// The Secret's name.
    #[schemars(length(min = 1))]
    pub name: String,
    /// The key holding the token; default `token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// What deleting the resource does to what it manages in Strata.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    /// Delete it once nothing is left unacknowledged and no client is connected (or at
    /// once with the `strata.io/force-delete: "true"` annotation).
    Delete,
    /// Keep it; only the resource goes.
    #[default]
    Retain,
}

/// What a change made outside the resource leads to.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq, JsonSchema)]
pub enum DriftPolicy {
    /// Set it back to the spec.
    #[default]
    Correct,
    /// Leave it and report it.
    Report,
}

/// A spec the operator cannot act on; the message starts with the field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    pub field: String,
    pub message: String,
}

impl SpecError {
    pub fn new(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.to_string(),
            message: message.into(),
        }
    }
}

/// An Event to publish on the object.
#[derive(Debug, Clone, PartialEq)]
pub struct Note {
    pub warning: bool,
    /// CamelCase, like `Created` or `DriftCorrected`.
    pub reason: String,
    pub message: String,
}

impl Note {
    pub fn normal(reason: &str, message: impl Into<String>) -> Self {
        Self {
            warning: false,
            reason: reason.into(),
            message: message.into(),
        }
    }

    pub fn warning(reason: &str, message: impl Into<String>) -> Self {
        Self {
            warning: true,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// A subscription as a Topic's status shows it.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionSummary {
    pub name: String,
    /// `Exclusive`, `Failover`, `Shared` or `Key_Shared`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Unacknowledged entries (producer batches), over every partition.
    pub backlog: u64,
    /// Consumers connected, over every partition.
    pub consumers: u32,
}

/// Per-subscription figures summed over partitions (a partitioned topic's stats list each
/// subscription once per partition), sorted by name.
pub fn summarize(stats: &[SubscriptionStats]) -> Vec<SubscriptionSummary> {
    let mut by_name: BTreeMap<&str, SubscriptionSummary> = BTreeMap::new();
    for s in stats {
        let e = by_name.entry(&s.name).or_insert_with(|| SubscriptionSummary {
            name: s.name.clone(),
            type_: s.r#type.clone(),
            ..Default::default()
        });
        e.backlog += s.backlog_entries;
        e.consumers += s.consumers;
    }
    by_name.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_of_a_subscription_add_up() {
        let s = |name: &str, backlog, consumers| SubscriptionStats {
            name: name.into(),
            r#type: "Shared".into(),
            backlog_entries: backlog,
            consumers,
        };
        let sum = summarize(&[s("b", 1, 1), s("a", 2, 0), s("b", 3, 1)]);
        assert_eq!(sum.len(), 2);
        assert_eq!((sum[0].name.as_str(), sum[0].backlog), ("a", 2));
        assert_eq!((sum[1].backlog, sum[1].consumers), (4, 2));
    }

    #[test]
    fn only_a_true_annotation_forces() {
        let a = |v: &str| BTreeMap::from([(FORCE_DELETE.to_string(), v.to_string())]);
        assert!(force_delete(Some(&a("true"))));
        assert!(force_delete(Some(&a("True"))));
        assert!(!force_delete(Some(&a("yes"))));
        assert!(!force_delete(None));
    }
}
