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
    /// Largest message batch a producer may send, in bytes (5 MiB).
    pub max_message_bytes: usize,
    /// How long acknowledged data is kept, in seconds (0: deleted once every subscription
    /// acknowledged it and its ledger is closed; -1: forever).
    pub retention_time_secs: i64,
    /// How many bytes of acknowledged data a topic keeps (0: none; -1: unlimited).
    pub retention_bytes: i64,
    /// How often retention runs, in seconds (60).
    pub retention_check_interval_secs: u64,
    /// How often cursors are persisted, in milliseconds (100).
    pub cursor_persist_interval_ms: u64,
    /// Bookies per ledger, copies per entry, acknowledgements awaited (1/1/1 standalone).
    pub ensemble_size: u32,
    pub write_quorum: u32,
    pub ack_quorum: u32,
    /// A topic's ledger is closed and a new one started past 50,000 entries, 2 GiB or
    /// 4 hours — the units retention deletes.
    pub max_entries_per_ledger: u64,
    pub max_ledger_bytes: u64,
    pub max_ledger_age_secs: u64,
    /// Newest entries kept in memory per topic for consumers keeping up (16 MiB; 0: off).
    pub read_cache_bytes_per_topic: usize,
}

impl Default for BrokerSettings {
    fn default() -> Self {
        let b = BrokerConfig::default();
        let l = ManagedLedgerConfig::default();
        Self {
            auto_create_topics: b.auto_create_topics,
            max_message_bytes: b.max_message_bytes,
            retention_time_secs: b.retention_time.map_or(-1, |d| d.as_secs() as i64),
            retention_bytes: b.retention_bytes.map_or(-1, |n| n as i64),
            retention_check_interval_secs: b.retention_check_interval.as_secs(),
            cursor_persist_interval_ms: b.cursor_persist_interval.as_millis() as u64,
            ensemble_size: l.ensemble,
            write_quorum: l.write_quorum,
            ack_quorum: l.ack_quorum,
            max_entries_per_ledger: l.max_entries_per_ledger,
            max_ledger_bytes: l.max_ledger_bytes,
            max_ledger_age_secs: l.max_ledger_age.as_secs(),
            read_cache_bytes_per_topic: l.cache_bytes,
        }
    }
}

impl BrokerSettings {
    /// Validates and converts; the error names the offending setting.
    pub fn to_config(&self, advertised_url: String) -> Result<BrokerConfig, String> {
        let positive = |name: &str, v: u64| {
            if v == 0 {
                Err(format!("broker.{name} must be greater than 0"))
            } else {
                Ok(())
            }
        };
        positive("max_message_bytes", self.max_message_bytes as u64)?;
        positive("retention_check_interval_secs", self.retention_check_interval_secs)?;
        positive("cursor_persist_interval_ms", self.cursor_persist_interval_ms)?;
        positive("max_entries_per_ledger", self.max_entries_per_ledger)?;
        positive("max_ledger_bytes", self.max_ledger_bytes)?;
        positive("max_ledger_age_secs", self.max_ledger_age_secs)?;
        if self.max_message_bytes > 64 << 20 {
            return Err("broker.max_message_bytes must be at most 64 MiB".into());
        }
        if !(self.ensemble_size >= self.write_quorum && self.write_quorum >= self.ack_quorum && self.ack_quorum >= 1) {
            return Err(format!(
                "broker: need ensemble_size ≥ write_quorum ≥ ack_quorum ≥ 1, got {}/{}/{}",
                self.ensemble_size, self.write_quorum, self.ack_quorum
            ));
        }
        let limit = |name: &str, v: i64| match v {
            -1 => Ok(None),
            v if v >= 0 => Ok(Some(v as u64)),
            _ => Err(format!("broker.{name} must be -1 (unlimited) or at least 0")),
        };
        Ok(BrokerConfig {
            advertised_url,
            ledger: ManagedLedgerConfig {
                ensemble: self.ensemble_size,
                write_quorum: self.write_quorum,
                ack_quorum: self.ack_quorum,
                max_entries_per_ledger: self.max_entries_per_ledger,
                max_ledger_bytes: self.max_ledger_bytes,
                max_ledger_age: Duration::from_secs(self.max_ledger_age_secs),
                cache_bytes: self.read_cache_bytes_per_topic,
            },
            max_message_bytes: self.max_message_bytes,
            auto_create_topics: self.auto_create_topics,
            cursor_persist_interval: Duration::from_millis(self.cursor_persist_interval_ms),
            retention_time: limit("retention_time_secs", self.retention_time_secs)?.map(Duration::from_secs),
            retention_bytes: limit("retention_bytes", self.retention_bytes)?,
            retention_check_interval: Duration::from_secs(self.retention_check_interval_secs),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_convert_and_bad_values_are_named() {
        let c = BrokerSettings::default().to_config("http://x:1".into()).unwrap();
        assert!(c.auto_create_topics);
        assert_eq!(c.retention_time, Some(Duration::ZERO));
        let bad = BrokerSettings {
            write_quorum: 2,
            ..Default::default()
        };
        assert!(bad.to_config(String::new()).unwrap_err().contains("write_quorum"));
        let bad = BrokerSettings {
            retention_bytes: -2,
            ..Default::default()
        };
        assert!(bad.to_config(String::new()).unwrap_err().contains("retention_bytes"));
        let forever = BrokerSettings {
            retention_time_secs: -1,
            ..Default::default()
        };
        assert_eq!(forever.to_config(String::new()).unwrap().retention_time, None);
    }
}
