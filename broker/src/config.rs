//! Broker settings as an operator writes them (TOML, `[broker]` section), with
//! validation and conversion to [`BrokerConfig`].

use crate::broker::BrokerConfig;
use crate::managed_ledger::ManagedLedgerConfig;
use serde::Deserialize;
use std::time::Duration;

/// The `[broker]` section of a configuration file. Every field is optional.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerSettings {
    /// Create topics on first produce or consume (true). Off: only `strata admin topics
    /// create` creates them, and clients get TOPIC_NOT_FOUND.
    pub auto_create_topics: bool,
    /// Largest message batch a producer may send, in bytes (5 MiB): its payloads, keys
    /// and property keys and values. Lowered if needed to stay 1 MiB (batch framing; an
    /// eighth of it if that is less) under `bookie_max_entry_bytes`; producers are told the
    /// limit in force.
    pub max_message_bytes: usize,
    /// Largest entry the bookies accept: their `max_entry_bytes` (6 MiB, the bookies'
    /// default). `strata broker` only; standalone takes its bookie's setting.
    pub bookie_max_entry_bytes: u64,
    /// How long acknowledged data is kept, in seconds (0: deleted once every subscription
    /// acknowledged it and its ledger is closed; -1: forever).
    pub retention_time_secs: i64,
    /// How many bytes of acknowledged data a topic keeps (0: none; -1: unlimited).
    pub retention_bytes: i64,
    /// How often retention runs, in seconds (60).
    pub retention_check_interval_secs: u64,
    /// How often cursors are persisted, in milliseconds (100).
    pub cursor_persist_interval_ms: u64,
    /// Bookies per ledger, copies per entry, acknowledgements awaited (1/1/1 in
    /// standalone mode, 2/2/2 for `strata broker`, as in Pulsar).
    pub ensemble_size: Option<u32>,
    pub write_quorum: Option<u32>,
    pub ack_quorum: Option<u32>,
    /// A topic's ledger is closed and a new one started past 50,000 entries, 2 GiB or
    /// 4 hours — the units retention deletes.
    pub max_entries_per_ledger: u64,
    pub max_ledger_bytes: u64,
    pub max_ledger_age_secs: u64,
    /// Newest entries kept in memory per topic for consumers keeping up (16 MiB; 0: off).
    /// Only topics being read cache, and entries leave the cache after 5 seconds.
    pub read_cache_bytes_per_topic: usize,
    /// The read caches of all topics of the broker together (256 MiB).
    pub read_cache_bytes: usize,
    /// TTL of the broker's metadata session, in seconds (10): how long a frozen or cut
    /// off broker keeps its bundles before other brokers take them over.
    pub session_ttl_secs: u64,
    /// How often the broker publishes its load report, in seconds (5).
    pub load_report_interval_secs: u64,
    /// How often the leader sheds load from the busiest broker, in milliseconds (30,000).
    pub load_balance_interval_ms: u64,
    /// Bundles of a namespace created without a count (4).
    pub default_bundles: u32,
    /// A consumer is sent nothing more while it holds this many delivered and
    /// unacknowledged messages (50,000) or bytes (64 MiB); it always gets one message
    /// when it holds none.
    pub max_unacked_messages_per_consumer: usize,
    pub max_unacked_bytes_per_consumer: usize,
    /// Producers connected to one topic at once (1,000).
    pub max_producers_per_topic: usize,
    /// Subscriptions of one topic, durable and readers (1,000).
    pub max_subscriptions_per_topic: usize,
    /// Consumers of one subscription connected at once (1,000).
    pub max_consumers_per_subscription: usize,
    /// Client connections open at once (10,000); more are closed as they arrive.
    pub max_connections: usize,
    /// Concurrent streams per client connection: producers, consumers and calls
    /// multiplexed on it (1,000).
    pub max_streams_per_connection: u32,
    /// Publish rate of each topic (each partition of a partitioned topic), its producers
    /// together, in messages and payload bytes per second (0: unlimited, the default).
    /// Producers over a rate are slowed down (their sends wait), never refused.
    pub publish_rate_per_topic_msgs: u64,
    pub publish_rate_per_topic_bytes: u64,
    /// Publish rate of each producer (0: unlimited).
    pub publish_rate_per_producer_msgs: u64,
    pub publish_rate_per_producer_bytes: u64,
    /// Topics of one namespace, each partition counting one (0: unlimited, the
    /// default). Creating more, by the admin API or by auto-creation, is LIMIT_EXCEEDED.
    pub max_topics_per_namespace: u64,
    /// Dispatch rate of each subscription, its consumers together (0: unlimited).
    pub dispatch_rate_per_subscription_msgs: u64,
    pub dispatch_rate_per_subscription_bytes: u64,
}

impl Default for BrokerSettings {
    fn default() -> Self {
        let b = BrokerConfig::default();
        let l = ManagedLedgerConfig::default();
        Self {
            auto_create_topics: b.auto_create_topics,
            max_message_bytes: b.max_message_bytes,
            bookie_max_entry_bytes: strata_bookie::config::DEFAULT_MAX_ENTRY_BYTES,
            retention_time_secs: b.retention_time.map_or(-1, |d| d.as_secs() as i64),
            retention_bytes: b.retention_bytes.map_or(-1, |n| n as i64),
            retention_check_interval_secs: b.retention_check_interval.as_secs(),
            cursor_persist_interval_ms: b.cursor_persist_interval.as_millis() as u64,
            ensemble_size: None,
            write_quorum: None,
            ack_quorum: None,
            max_entries_per_ledger: l.max_entries_per_ledger,
            max_ledger_bytes: l.max_ledger_bytes,
            max_ledger_age_secs: l.max_ledger_age.as_secs(),
            read_cache_bytes_per_topic: l.cache_bytes,
            read_cache_bytes: l.cache_budget.limit(),
            session_ttl_secs: b.session_ttl.as_secs(),
            load_report_interval_secs: b.load_report_interval.as_secs(),
            load_balance_interval_ms: b.load_balance_interval.as_millis() as u64,
            default_bundles: b.default_bundles,
            max_unacked_messages_per_consumer: b.client_limits.unacked.messages,
            max_unacked_bytes_per_consumer: b.client_limits.unacked.bytes,
            max_producers_per_topic: b.client_limits.max_producers,
            max_subscriptions_per_topic: b.client_limits.max_subscriptions,
            max_consumers_per_subscription: b.client_limits.max_consumers_per_subscription,
            max_connections: b.net_limits.max_connections,
            max_streams_per_connection: b.net_limits.max_streams_per_connection,
            max_topics_per_namespace: b.client_limits.max_topics_per_namespace,
            publish_rate_per_topic_msgs: b.client_limits.publish_rate_per_topic.msgs_per_sec,
            publish_rate_per_topic_bytes: b.client_limits.publish_rate_per_topic.bytes_per_sec,
            publish_rate_per_producer_msgs: b.client_limits.publish_rate_per_producer.msgs_per_sec,
            publish_rate_per_producer_bytes: b.client_limits.publish_rate_per_producer.bytes_per_sec,
            dispatch_rate_per_subscription_msgs: b.client_limits.dispatch_rate_per_subscription.msgs_per_sec,
            dispatch_rate_per_subscription_bytes: b.client_limits.dispatch_rate_per_subscription.bytes_per_sec,
        }
    }
}

impl BrokerSettings {
    /// Validates and converts; the error names the offending setting. `quorum` is the
    /// ensemble / write quorum / ack quorum used where the settings give none.
    pub fn to_config(&self, advertised_url: String, quorum: (u32, u32, u32)) -> Result<BrokerConfig, String> {
        let ensemble = self.ensemble_size.unwrap_or(quorum.0);
        let write_quorum = self.write_quorum.unwrap_or(quorum.1.min(ensemble));
        let ack_quorum = self.ack_quorum.unwrap_or(quorum.2.min(write_quorum));
        let positive = |name: &str, v: u64| {
            if v == 0 {
                Err(format!("broker.{name} must be greater than 0"))
            } else {
                Ok(())
            }
        };
        positive("max_message_bytes", self.max_message_bytes as u64)?;
        positive("bookie_max_entry_bytes", self.bookie_max_entry_bytes)?;
        positive("retention_check_interval_secs", self.retention_check_interval_secs)?;
        positive("cursor_persist_interval_ms", self.cursor_persist_interval_ms)?;
        positive("max_entries_per_ledger", self.max_entries_per_ledger)?;
        positive("max_ledger_bytes", self.max_ledger_bytes)?;
        positive("max_ledger_age_secs", self.max_ledger_age_secs)?;
        if self.max_message_bytes > 64 << 20 {
            return Err("broker.max_message_bytes must be at most 64 MiB".into());
        }
        if !(ensemble >= write_quorum && write_quorum >= ack_quorum && ack_quorum >= 1) {
            return Err(format!(
                "broker: need ensemble_size ≥ write_quorum ≥ ack_quorum ≥ 1, got {ensemble}/{write_quorum}/{ack_quorum}"
            ));
        }
        positive("session_ttl_secs", self.session_ttl_secs)?;
        positive("load_report_interval_secs", self.load_report_interval_secs)?;
        positive("load_balance_interval_ms", self.load_balance_interval_ms)?;
        if self.default_bundles == 0 || self.default_bundles > crate::bundles::MAX_BUNDLES {
            return Err(format!(
                "broker.default_bundles must be 1 to {}",
                crate::bundles::MAX_BUNDLES
            ));
        }
        positive(
            "max_unacked_messages_per_consumer",
            self.max_unacked_messages_per_consumer as u64,
        )?;
        positive(
            "max_unacked_bytes_per_consumer",
            self.max_unacked_bytes_per_consumer as u64,
        )?;
        positive("max_producers_per_topic", self.max_producers_per_topic as u64)?;
        positive("max_subscriptions_per_topic", self.max_subscriptions_per_topic as u64)?;
        positive(
            "max_consumers_per_subscription",
            self.max_consumers_per_subscription as u64,
        )?;
        positive("max_connections", self.max_connections as u64)?;
        positive("max_streams_per_connection", u64::from(self.max_streams_per_connection))?;
        let limit = |name: &str, v: i64| match v {
            -1 => Ok(None),
            v if v >= 0 => Ok(Some(v as u64)),
            _ => Err(format!("broker.{name} must be -1 (unlimited) or at least 0")),
        };
        Ok(BrokerConfig {
            advertised_url,
            ledger: ManagedLedgerConfig {
                ensemble,
                write_quorum,
                ack_quorum,
                max_entries_per_ledger: self.max_entries_per_ledger,
                max_ledger_bytes: self.max_ledger_bytes,
                max_ledger_age: Duration::from_secs(self.max_ledger_age_secs),
                cache_bytes: self.read_cache_bytes_per_topic,
                cache_budget: crate::managed_ledger::CacheBudget::new(self.read_cache_bytes),
                // Set from the `[offload]` section by the command that starts the broker.
                offload: None,
            },
            max_message_bytes: self.max_message_bytes,
            auto_create_topics: self.auto_create_topics,
            cursor_persist_interval: Duration::from_millis(self.cursor_persist_interval_ms),
            retention_time: limit("retention_time_secs", self.retention_time_secs)?.map(Duration::from_secs),
            retention_bytes: limit("retention_bytes", self.retention_bytes)?,
            retention_check_interval: Duration::from_secs(self.retention_check_interval_secs),
            session_ttl: Duration::from_secs(self.session_ttl_secs),
            load_report_interval: Duration::from_secs(self.load_report_interval_secs),
            load_balance_interval: Duration::from_millis(self.load_balance_interval_ms),
            default_bundles: self.default_bundles,
            client_limits: crate::topic::ClientLimits {
                unacked: crate::dispatch::UnackedLimits {
                    messages: self.max_unacked_messages_per_consumer,
                    bytes: self.max_unacked_bytes_per_consumer,
                },
                max_producers: self.max_producers_per_topic,
                max_subscriptions: self.max_subscriptions_per_topic,
                max_consumers_per_subscription: self.max_consumers_per_subscription,
                max_topics_per_namespace: self.max_topics_per_namespace,
                publish_rate_per_topic: crate::rate::Rate {
                    msgs_per_sec: self.publish_rate_per_topic_msgs,
                    bytes_per_sec: self.publish_rate_per_topic_bytes,
                },
                publish_rate_per_producer: crate::rate::Rate {
                    msgs_per_sec: self.publish_rate_per_producer_msgs,
                    bytes_per_sec: self.publish_rate_per_producer_bytes,
                },
                dispatch_rate_per_subscription: crate::rate::Rate {
                    msgs_per_sec: self.dispatch_rate_per_subscription_msgs,
                    bytes_per_sec: self.dispatch_rate_per_subscription_bytes,
                },
            },
            net_limits: crate::broker::NetLimits {
                max_connections: self.max_connections,
                max_streams_per_connection: self.max_streams_per_connection,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_convert_and_bad_values_are_named() {
        let c = BrokerSettings::default()
            .to_config("http://x:1".into(), (1, 1, 1))
            .unwrap();
        assert!(c.auto_create_topics);
        assert_eq!(c.retention_time, Some(Duration::ZERO));
        let bad = BrokerSettings {
            write_quorum: Some(2),
            ..Default::default()
        };
        assert!(
            bad.to_config(String::new(), (1, 1, 1))
                .unwrap_err()
                .contains("write_quorum")
        );
        let cluster = BrokerSettings::default().to_config(String::new(), (2, 2, 2)).unwrap();
        assert_eq!(cluster.ledger.ensemble, 2);
        let bad = BrokerSettings {
            retention_bytes: -2,
            ..Default::default()
        };
        assert!(
            bad.to_config(String::new(), (1, 1, 1))
                .unwrap_err()
                .contains("retention_bytes")
        );
        let forever = BrokerSettings {
            retention_time_secs: -1,
            ..Default::default()
        };
        assert_eq!(
            forever.to_config(String::new(), (1, 1, 1)).unwrap().retention_time,
            None
        );
    }
}
