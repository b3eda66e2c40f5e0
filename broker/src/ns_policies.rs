//! Namespace policies: per-namespace overrides of the brokers' client limits and rates,
//! kept in the metadata store at `keys::namespace_policies` (JSON).
//!
//! Invariants: an unset field means "the brokers' setting", so a policy never freezes a
//! default the cluster's operator later changes; values are validated (the error names
//! the field) before they are stored; topics take them when they load, and the topic
//! count is checked on every creation.

use crate::error::{BrokerError, Result};
use crate::rate::Rate;
use crate::topic::ClientLimits;
use serde::{Deserialize, Serialize};
use strata_meta::{MetadataStore, keys};

/// A namespace's own policies, as stored and as the admin API carries them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespacePolicies {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_rate_per_topic_msgs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_rate_per_topic_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_rate_per_producer_msgs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_rate_per_producer_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispatch_rate_per_subscription_msgs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispatch_rate_per_subscription_bytes: Option<u64>,
    /// Topics (each partition counting one); 0 unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_topics: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_producers_per_topic: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_subscriptions_per_topic: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_consumers_per_subscription: Option<u64>,
}

impl NamespacePolicies {
    /// Checks every field's range; the error names the field.
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("max_producers_per_topic", self.max_producers_per_topic),
            ("max_subscriptions_per_topic", self.max_subscriptions_per_topic),
            ("max_consumers_per_subscription", self.max_consumers_per_subscription),
        ] {
            if v == Some(0) {
                return Err(BrokerError::InvalidArgument(format!(
                    "{name} is 0: nobody could connect; use at least 1, or leave it unset for the brokers' setting"
                )));
            }
        }
        Ok(())
    }

    /// `base` (the brokers' limits) with these policies applied.
    pub fn apply(&self, base: ClientLimits) -> ClientLimits {
        let rate = |r: Rate, msgs: Option<u64>, bytes: Option<u64>| Rate {
            msgs_per_sec: msgs.unwrap_or(r.msgs_per_sec),
            bytes_per_sec: bytes.unwrap_or(r.bytes_per_sec),
        };
        let count = |v: Option<u64>, d: usize| v.map_or(d, |v| usize::try_from(v).unwrap_or(usize::MAX));
        ClientLimits {
            publish_rate_per_topic: rate(
                base.publish_rate_per_topic,
                self.publish_rate_per_topic_msgs,
                self.publish_rate_per_topic_bytes,
            ),
            publish_rate_per_producer: rate(
                base.publish_rate_per_producer,
                self.publish_rate_per_producer_msgs,
                self.publish_rate_per_producer_bytes,
            ),
            dispatch_rate_per_subscription: rate(
                base.dispatch_rate_per_subscription,
                self.dispatch_rate_per_subscription_msgs,
                self.dispatch_rate_per_subscription_bytes,
            ),
            max_topics_per_namespace: self.max_topics.unwrap_or(base.max_topics_per_namespace),
            max_producers: count(self.max_producers_per_topic, base.max_producers),
            max_subscriptions: count(self.max_subscriptions_per_topic, base.max_subscriptions),
            max_consumers_per_subscription: count(
                self.max_consumers_per_subscription,
                base.max_consumers_per_subscription,
            ),
            unacked: base.unacked,
        }
    }
}

/// The policies stored for `tenant/namespace` (empty if none).
pub async fn load(store: &dyn MetadataStore, tenant: &str, namespace: &str) -> Result<NamespacePolicies> {
    match store.get(&keys::namespace_policies(tenant, namespace)).await? {
        None => Ok(NamespacePolicies::default()),
        Some(v) => serde_json::from_slice(&v.value)
            .map_err(|e| BrokerError::Corruption(format!("policies of namespace {tenant}/{namespace}: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_fields_keep_the_brokers_limits_and_set_ones_override_them() {
        let base = ClientLimits::default();
        assert_eq!(NamespacePolicies::default().apply(base), base);
        let p = NamespacePolicies {
            publish_rate_per_topic_msgs: Some(500),
            max_topics: Some(10),
            max_producers_per_topic: Some(u64::MAX),
            ..Default::default()
        };
        let l = p.apply(base);
        assert_eq!(l.publish_rate_per_topic.msgs_per_sec, 500);
        assert_eq!(l.publish_rate_per_topic.bytes_per_sec, 0);
        assert_eq!(l.max_topics_per_namespace, 10);
        assert_eq!(l.max_producers, usize::MAX);
        assert_eq!(l.max_subscriptions, base.max_subscriptions);
        assert_eq!(serde_json::to_string(&NamespacePolicies::default()).unwrap(), "{}");
        let e = NamespacePolicies {
            max_consumers_per_subscription: Some(0),
            ..Default::default()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(e.contains("max_consumers_per_subscription"), "{e}");
    }
}
