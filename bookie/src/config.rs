//! Bookie configuration: one serde struct, every field with a default that works on a
//! laptop and a reason for it, validated at start-up with errors that name the field.

use serde::Deserialize;
use std::path::PathBuf;

/// Everything a bookie can be told. Read from a TOML file (`--config`), then overridden by
/// command-line flags and `STRATA_BOOKIE_*` environment variables.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BookieConfig {
    /// Where the journal, entry logs and index live.
    pub data_dir: PathBuf,
    /// Address the gRPC service listens on. 3181 is BookKeeper's customary bookie port.
    pub listen: String,
    /// fdatasync the journal before acknowledging. Never turn off outside benchmarks:
    /// without it an acknowledged entry can be lost on power failure.
    pub journal_sync: bool,
    /// Roll to a new journal file past this size. 256 MiB keeps replay after a crash short
    /// while making file creation rare.
    pub journal_max_file_bytes: u64,
    /// Upper bound of one group commit. 4 MiB is enough to reach the disk's sequential
    /// bandwidth with one fdatasync, and bounds the latency one group adds.
    pub journal_max_group_bytes: u64,
    /// Memory for entries not yet in entry logs. Adds wait when it is full.
    pub write_cache_max_bytes: u64,
    /// Flush the write cache to entry logs once it holds this much (or every
    /// `flush_interval_ms`). Half of the cache, so adds continue while one half flushes.
    pub flush_threshold_bytes: u64,
    /// Flush at least this often, so the journal that must be replayed after a crash stays
    /// small. One second, as BookKeeper's default.
    pub flush_interval_ms: u64,
    /// Roll to a new entry log past this size. 512 MiB: large enough for sequential I/O,
    /// small enough that garbage collection reclaims space in useful steps.
    pub entry_log_max_bytes: u64,
    /// How often to look for entry logs to delete or compact. Space from deleted ledgers
    /// returns within about this long.
    pub gc_interval_ms: u64,
    /// Compact an entry log once less than this fraction of it is live data.
    pub compaction_threshold: f64,
    /// Largest entry payload accepted ([`DEFAULT_MAX_ENTRY_BYTES`], 6 MiB). Brokers must
    /// know it (their ledger client's `max_entry_bytes`): they refuse batches that would
    /// encode to more.
    pub max_entry_bytes: u64,
    /// Turn read-only once the data directory's disk is fuller than this fraction. 0.95
    /// like Pulsar, leaving room for compaction to run.
    pub disk_usage_threshold: f64,
    /// Become writable again once usage drops below this fraction (hysteresis, so the
    /// bookie does not flap at the threshold).
    pub disk_usage_lwm: f64,
    /// Also turn read-only when fewer than this many bytes are free (0: only the fraction
    /// above decides). Useful on large disks where 5% is still plenty.
    pub min_free_bytes: u64,
    /// How often disk usage is checked.
    pub disk_check_interval_ms: u64,
    /// Metadata store to register in (`etcd://…`, `local:///…`, `memory://`); none means
    /// the bookie runs unregistered (tests, single-node tools).
    pub metadata_url: Option<String>,
    /// Address published for clients; defaults to `listen`. Set it when listening on
    /// 0.0.0.0 or behind NAT.
    pub advertised_address: Option<String>,
    /// TTL of the bookie's metadata session: a dead bookie disappears from the registry
    /// this long after it stops. 10 s, like Pulsar's ZooKeeper session default.
    pub session_ttl_ms: u64,
    /// On start, truncate a damaged journal at the first bad record instead of refusing to
    /// start. Entries after the damage are lost; use only after inspecting the damage.
    pub repair: bool,
    /// Run an auto-recovery auditor candidate and replication worker in this bookie (with
    /// a metadata store): ledgers of lost and decommissioned bookies are copied to others.
    pub autorecovery: bool,
    /// A bookie ledgers name that stays unregistered this long is lost, and its ledgers
    /// are re-replicated. 5 minutes, like BookKeeper's lost-bookie delay: long enough for
    /// a restart or a rescheduled pod, short enough that a second failure rarely comes
    /// first.
    pub autorecovery_lost_grace_secs: u64,
    /// How often the auditor compares ledger metadata with the registered bookies.
    pub autorecovery_audit_interval_secs: u64,
    /// How long an idle writer's open fragment may name a bad bookie before the ledger is
    /// recovered (closed) so it can be re-replicated; active writers move off on their next
    /// add. 30 s, like BookKeeper's open-ledger grace.
    pub autorecovery_open_ledger_grace_secs: u64,
    /// Copy rate of this bookie's replication worker, bytes per second (0: unlimited).
    /// 64 MiB/s leaves most of a disk to clients.
    pub autorecovery_max_bytes_per_sec: u64,
    /// Where the journal writer records its group commits for `/metrics` (not a setting:
    /// the process hands its own in, so it can render them).
    #[serde(skip)]
    pub journal_metrics: std::sync::Arc<crate::journal::JournalMetrics>,
    /// TLS of the gRPC port, and how this bookie reaches its peers (auto-recovery).
    pub tls: strata_net::tls::TlsSettings,
    /// Token authentication of the gRPC port: with `enabled`, only requests carrying a
    /// valid token of a `superuser_roles` role (the brokers' and bookies' own) are served;
    /// `token_file` is what this bookie sends to its peers (auto-recovery).
    pub auth: strata_net::auth::AuthSettings,
}

/// Default largest entry a bookie accepts: 6 MiB, the broker's default largest batch
/// (5 MiB of payloads, keys and properties, Pulsar's default) plus 1 MiB for the batch's
/// framing (producer name, per-message headers), so a batch at the broker's limit is
/// always storable.
pub const DEFAULT_MAX_ENTRY_BYTES: u64 = 6 << 20;

impl Default for BookieConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data/bookie"),
            listen: "127.0.0.1:3181".into(),
            journal_sync: true,
            journal_max_file_bytes: 256 << 20,
            journal_max_group_bytes: 4 << 20,
            write_cache_max_bytes: 256 << 20,
            flush_threshold_bytes: 128 << 20,
            flush_interval_ms: 1000,
            entry_log_max_bytes: 512 << 20,
            gc_interval_ms: 60_000,
            compaction_threshold: 0.5,
            max_entry_bytes: DEFAULT_MAX_ENTRY_BYTES,
            disk_usage_threshold: 0.95,
            disk_usage_lwm: 0.90,
            min_free_bytes: 0,
            disk_check_interval_ms: 5_000,
            repair: false,
            metadata_url: None,
            advertised_address: None,
            session_ttl_ms: 10_000,
            autorecovery: true,
            autorecovery_lost_grace_secs: 300,
            autorecovery_audit_interval_secs: 30,
            autorecovery_open_ledger_grace_secs: 30,
            autorecovery_max_bytes_per_sec: 64 << 20,
            journal_metrics: Default::default(),
            tls: Default::default(),
            auth: Default::default(),
        }
    }
}

impl BookieConfig {
    /// The auto-recovery settings, for a process identified as `id`.
    pub fn autorecovery_config(&self, id: &str) -> crate::autorecovery::AutoRecoveryConfig {
        use std::time::Duration;
        crate::autorecovery::AutoRecoveryConfig {
            lost_grace: Duration::from_secs(self.autorecovery_lost_grace_secs),
            audit_interval: Duration::from_secs(self.autorecovery_audit_interval_secs),
            open_ledger_grace: Duration::from_secs(self.autorecovery_open_ledger_grace_secs),
            max_bytes_per_sec: self.autorecovery_max_bytes_per_sec,
            session_ttl: Duration::from_millis(self.session_ttl_ms),
            id: id.to_string(),
        }
    }

    /// Checks every field; the error names the field and what is wrong with it.
    pub fn validate(&self) -> Result<(), String> {
        self.tls.validate()?;
        self.auth.verifier().map_err(|e| format!("auth: {e}"))?;
        self.auth.own_token().map_err(|e| format!("auth: {e}"))?;
        fn positive(name: &str, v: u64) -> Result<(), String> {
            if v == 0 {
                return Err(format!("{name} must be greater than 0"));
            }
            Ok(())
        }
        positive("journal_max_file_bytes", self.journal_max_file_bytes)?;
        positive("journal_max_group_bytes", self.journal_max_group_bytes)?;
        positive("write_cache_max_bytes", self.write_cache_max_bytes)?;
        positive("flush_threshold_bytes", self.flush_threshold_bytes)?;
        positive("flush_interval_ms", self.flush_interval_ms)?;
        positive("entry_log_max_bytes", self.entry_log_max_bytes)?;
        positive("gc_interval_ms", self.gc_interval_ms)?;
        positive("max_entry_bytes", self.max_entry_bytes)?;
        positive("disk_check_interval_ms", self.disk_check_interval_ms)?;
        positive(
            "autorecovery_audit_interval_secs",
            self.autorecovery_audit_interval_secs,
        )?;
        if self.session_ttl_ms < 1000 {
            return Err("session_ttl_ms must be at least 1000".into());
        }
        let max_body = crate::format::MAX_RECORD_BODY as u64 - 1024;
        if self.max_entry_bytes > max_body {
            return Err(format!("max_entry_bytes must be at most {max_body}"));
        }
        if self.flush_threshold_bytes > self.write_cache_max_bytes {
            return Err("flush_threshold_bytes must not exceed write_cache_max_bytes".into());
        }
        if self.write_cache_max_bytes < self.max_entry_bytes {
            return Err("write_cache_max_bytes must be at least max_entry_bytes".into());
        }
        if !(0.0..=1.0).contains(&self.compaction_threshold) {
            return Err("compaction_threshold must be between 0 and 1".into());
        }
        if !(0.0..=1.0).contains(&self.disk_usage_threshold) {
            return Err("disk_usage_threshold must be between 0 and 1".into());
        }
        if !(0.0..=1.0).contains(&self.disk_usage_lwm) || self.disk_usage_lwm > self.disk_usage_threshold {
            return Err("disk_usage_lwm must be between 0 and disk_usage_threshold".into());
        }
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(format!(
                "listen must be an IP:port address such as 127.0.0.1:3181, got {:?}",
                self.listen
            ));
        }
        Ok(())
    }

    /// Reads a TOML file; unknown keys are errors so a typo does not pass silently.
    pub fn from_toml_file(path: &std::path::Path) -> Result<Self, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("config file {}: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        BookieConfig::default().validate().unwrap();
    }

    #[test]
    fn errors_name_the_field() {
        let c = BookieConfig {
            flush_interval_ms: 0,
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().contains("flush_interval_ms"));
        let c = BookieConfig {
            listen: "nope".into(),
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().contains("listen"));
    }

    #[test]
    fn toml_unknown_keys_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.toml");
        std::fs::write(&p, "journal_sync = false\nmax_entry_byte = 3\n").unwrap();
        let err = BookieConfig::from_toml_file(&p).unwrap_err();
        assert!(err.contains("max_entry_byte"), "{err}");
        std::fs::write(&p, "journal_sync = false\n").unwrap();
        assert!(!BookieConfig::from_toml_file(&p).unwrap().journal_sync);
    }
}
