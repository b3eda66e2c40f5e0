//! Namespace policies: per-namespace overrides of the brokers' client limits and rates,
//! kept in the metadata store at `keys::namespace_policies` (JSON).
//!
//! Invariants: an unset field means "the brokers' setting", so a policy never freezes a
//! default the cluster's operator later changes; values are validated (the error names
//! the field) before they are stored; topics take them when they load, and every broker
//! watches the policies' keys ([`spawn_watch`]) to apply a change to the topics it has
//! loaded; the topic count is checked on every creation.

use crate::broker::Broker;
use crate::error::{BrokerError, Result};
use crate::rate::Rate;
use crate::topic::ClientLimits;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use strata_meta::{MetadataStore, WatchEvent, keys};

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

/// Keeps the client limits of `broker`'s loaded topics equal to their namespace's
/// policies: a watch on every namespace's policies applies a change to the loaded topics
/// of that namespace at once. Whenever the watch is (re-)established or lagged, every
/// loaded topic is refreshed, so nothing missed while not watching stays stale; a full
/// refresh also runs every [`REFRESH`] (a topic that loaded while its policies changed).
pub(crate) fn spawn_watch(broker: &Arc<Broker>) {
    let weak = Arc::downgrade(broker);
    let stopped = broker.stopped().clone();
    tokio::spawn(async move {
        loop {
            let Some(b) = weak.upgrade() else { return };
            let watch = b.store().watch(&keys::namespace_policies_prefix()).await;
            refresh(&b, None).await;
            drop(b);
            let mut watch = match watch {
                Ok(w) => w,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch namespace policies; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => continue,
                        _ = stopped.cancelled() => return,
                    }
                }
            };
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + REFRESH, REFRESH);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let event = tokio::select! {
                    e = watch.next() => e,
                    _ = tick.tick() => Some(WatchEvent::Resync),
                    _ = stopped.cancelled() => return,
                };
                let Some(b) = weak.upgrade() else { return };
                match event {
                    Some(WatchEvent::Put { key, .. } | WatchEvent::Delete { key }) => {
                        let ns = key
                            .strip_prefix(&keys::namespace_policies_prefix())
                            .and_then(|rest| rest.split_once('/'))
                            .map(|(t, n)| (t.to_string(), n.to_string()));
                        if let Some(ns) = ns {
                            refresh(&b, Some(ns)).await;
                        }
                    }
                    Some(WatchEvent::Resync) => refresh(&b, None).await,
                    // The store's watch ended: watch again.
                    None => break,
                }
            }
        }
    });
}

/// How often every loaded topic's limits are refreshed besides the watch.
pub const REFRESH: std::time::Duration = std::time::Duration::from_secs(30);

/// Applies the current policies to the loaded topics of namespace `only` (every
/// namespace if `None`), reading each namespace's policies once.
async fn refresh(broker: &Broker, only: Option<(String, String)>) {
    let mut by_ns: std::collections::HashMap<(String, String), Vec<Arc<crate::broker::LoadedTopic>>> =
        std::collections::HashMap::new();
    for t in broker.loaded_topics() {
        let name = t.topic.name();
        let ns = (name.tenant().to_string(), name.namespace().to_string());
        if only.as_ref().is_none_or(|o| *o == ns) {
            by_ns.entry(ns).or_default().push(t);
        }
    }
    let base = broker.limits().clients;
    for ((tenant, namespace), topics) in by_ns {
        match load(&**broker.store(), &tenant, &namespace).await {
            Ok(p) => {
                let limits = p.apply(base);
                for t in topics {
                    if t.topic.client_limits() != limits {
                        t.topic.set_client_limits(limits);
                        tracing::info!(topic = %t.topic.name(), "namespace policies changed; applied");
                    }
                }
            }
            Err(e) => {
                tracing::warn!(namespace = %format!("{tenant}/{namespace}"), error = %e, "namespace policies not read; limits unchanged")
            }
        }
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
