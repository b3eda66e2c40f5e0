//! Auto-recovery: keeps every ledger at its write quorum when a bookie is lost or
//! decommissioned (BookKeeper's auditor and replication workers).
//!
//! - The **auditor** ([`auditor`]), one at a time (an ephemeral election key), compares the
//!   bookies ledger metadata names with the registered ones. A named bookie that is not
//!   registered gets a *lost* mark with the time it was first seen missing. Past the grace
//!   period — or at once for a decommissioning bookie — every ledger naming it gets an
//!   *under-replicated* mark. The auditor also finishes decommissions: once no ledger has
//!   named a draining bookie for two audits in a row, its state becomes `Done`.
//! - **Workers** ([`worker`]), in every bookie and in `strata autorecovery`, take marked
//!   ledgers under an ephemeral lock, copy each affected fragment's entries from surviving
//!   replicas (checksums verified on read) to a writable bookie outside the fragment with
//!   recovery adds, and then put that bookie in the fragment by compare-and-set.
//! - [`admin`]: what `strata admin bookies …` and `strata admin ledgers under-replicated`
//!   read and write, through a broker.
//!
//! Invariants:
//! - Metadata names the new bookie only after it acknowledged every entry of the fragment
//!   it is put in (acknowledged = in its fsynced journal).
//! - The last fragment of a ledger that is not Closed belongs to its writer and is never
//!   edited here. When a bad bookie stays in it past `open_ledger_grace`, the ledger is
//!   recovered first (fenced and closed, as a new topic owner would), so a live writer
//!   and a re-replication never produce two histories. The writer rebases its own metadata
//!   writes on the fragments before its current one (`ledger/writer.rs`), so neither
//!   undoes the other.
//! - Marks are hints: a worker re-reads the ledger's metadata and acts on what it says
//!   now; every step is safe to repeat after a crash of any party.

pub mod admin;
pub mod auditor;
pub mod worker;

use crate::error::Result;
use crate::registration::BookieInfo;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use strata_meta::{MetadataStore, keys};

/// Settings shared by the auditor and the workers.
#[derive(Debug, Clone)]
pub struct AutoRecoveryConfig {
    /// A bookie named by ledgers but unregistered this long is lost: its ledgers are
    /// re-replicated.
    pub lost_grace: Duration,
    /// How often the auditor compares ledgers with registered bookies; also bounds how
    /// often workers look for marked ledgers.
    pub audit_interval: Duration,
    /// How long a bad bookie may stay in the writer's fragment of an Open ledger before
    /// the ledger is recovered (closed) so it can be re-replicated.
    pub open_ledger_grace: Duration,
    /// Copy rate limit of one worker, bytes per second (0: unlimited).
    pub max_bytes_per_sec: u64,
    /// TTL of the auditor's and workers' metadata sessions.
    pub session_ttl: Duration,
    /// Who this process is (in the auditor key and the ledger locks).
    pub id: String,
}

impl Default for AutoRecoveryConfig {
    fn default() -> Self {
        Self {
            lost_grace: Duration::from_secs(300),
            audit_interval: Duration::from_secs(30),
            open_ledger_grace: Duration::from_secs(30),
            max_bytes_per_sec: 64 << 20,
            session_ttl: Duration::from_secs(10),
            id: String::new(),
        }
    }
}

/// `/strata/v1/autorecovery/under-replicated/<ledger>`: a ledger naming bad bookies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnderReplicated {
    /// The bad bookies it names.
    pub bookies: Vec<String>,
    /// When it was first marked (ms since the Unix epoch).
    pub since_ms: u64,
}

/// `/strata/v1/autorecovery/lost/<address>`: a bookie named by ledgers, not registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostBookie {
    pub since_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DecommissionState {
    /// Refusing new writes; its data is being re-replicated elsewhere.
    Draining,
    /// No ledger names it; it has unregistered and its data can be deleted.
    Done,
}

impl DecommissionState {
    pub fn as_str(self) -> &'static str {
        match self {
            DecommissionState::Draining => "draining",
            DecommissionState::Done => "done",
        }
    }
}

/// `/strata/v1/decommission/<address>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decommission {
    pub state: DecommissionState,
    pub started_ms: u64,
    #[serde(default)]
    pub finished_ms: Option<u64>,
    /// Ledgers naming the bookie at the last audit (`None` before the first).
    #[serde(default)]
    pub remaining_ledgers: Option<u64>,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(key: &str, value: &[u8]) -> Option<T> {
    match serde_json::from_slice(value) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(%key, error = %e, "ignoring an unreadable auto-recovery key");
            None
        }
    }
}

pub(crate) fn encode<T: Serialize>(v: &T) -> bytes::Bytes {
    bytes::Bytes::from(serde_json::to_vec(v).expect("auto-recovery state serialises"))
}

fn last_part(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or_default()
}

/// What the metadata store says about bookies, read at one moment.
#[derive(Debug, Default, Clone)]
pub struct BookieView {
    pub registered: HashMap<String, BookieInfo>,
    /// Lost marks and their versions.
    pub lost: HashMap<String, (LostBookie, u64)>,
    /// Decommission states and their versions.
    pub decommissions: HashMap<String, (Decommission, u64)>,
}

impl BookieView {
    pub async fn read(store: &dyn MetadataStore) -> Result<Self> {
        let mut v = BookieView::default();
        for (k, val) in store.list(&keys::bookies_prefix()).await? {
            if let Some(info) = decode::<BookieInfo>(&k, &val.value) {
                v.registered.insert(info.address.clone(), info);
            }
        }
        for (k, val) in store.list(&keys::lost_bookies_prefix()).await? {
            if let Some(l) = decode::<LostBookie>(&k, &val.value) {
                v.lost.insert(last_part(&k).to_string(), (l, val.version));
            }
        }
        for (k, val) in store.list(&keys::decommission_prefix()).await? {
            if let Some(d) = decode::<Decommission>(&k, &val.value) {
                v.decommissions.insert(last_part(&k).to_string(), (d, val.version));
            }
        }
        Ok(v)
    }

    /// Whether ledgers naming `bookie` must be re-replicated: it is being (or was)
    /// decommissioned, or it has been unregistered for at least `grace`.
    pub fn is_bad(&self, bookie: &str, now_ms: u64, grace: Duration) -> bool {
        if self.decommissions.contains_key(bookie) {
            return true;
        }
        !self.registered.contains_key(bookie)
            && self
                .lost
                .get(bookie)
                .is_some_and(|(l, _)| now_ms.saturating_sub(l.since_ms) >= grace.as_millis() as u64)
    }

    /// Registered bookies that take new data: writable and not decommissioned.
    pub fn writable(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .registered
            .values()
            .filter(|i| !i.read_only && !self.decommissions.contains_key(&i.address))
            .map(|i| i.address.clone())
            .collect();
        out.sort();
        out
    }
}

/// Counters and gauges of auto-recovery in this process (the gauges only while it is the
/// auditor).
#[derive(Debug, Default)]
pub struct Metrics {
    pub auditor: AtomicU64,
    pub under_replicated_ledgers: AtomicU64,
    pub oldest_under_replicated_ms: AtomicU64,
    pub lost_bookies: AtomicU64,
    pub rereplicated_bytes: AtomicU64,
    pub rereplicated_entries: AtomicU64,
    pub rereplicated_fragments: AtomicU64,
    pub recovered_open_ledgers: AtomicU64,
    pub errors: AtomicU64,
}

impl Metrics {
    pub fn write(&self, w: &mut strata_common::metrics::TextWriter) {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        w.gauge(
            "strata_autorecovery_auditor",
            "1 while this process is the auto-recovery auditor.",
            g(&self.auditor) as f64,
        );
        w.gauge(
            "strata_autorecovery_under_replicated_ledgers",
            "Ledgers naming a lost or decommissioning bookie (reported by the auditor).",
            g(&self.under_replicated_ledgers) as f64,
        );
        w.gauge(
            "strata_autorecovery_oldest_under_replicated_seconds",
            "Age of the oldest under-replicated mark (reported by the auditor).",
            g(&self.oldest_under_replicated_ms) as f64 / 1000.0,
        );
        w.gauge(
            "strata_autorecovery_lost_bookies",
            "Bookies named by ledgers but not registered (reported by the auditor).",
            g(&self.lost_bookies) as f64,
        );
        w.counter(
            "strata_autorecovery_rereplicated_bytes_total",
            "Entry bytes this process copied to replacement bookies.",
            g(&self.rereplicated_bytes),
        );
        w.counter(
            "strata_autorecovery_rereplicated_entries_total",
            "Entries this process copied to replacement bookies.",
            g(&self.rereplicated_entries),
        );
        w.counter(
            "strata_autorecovery_rereplicated_fragments_total",
            "Ledger fragments this process moved to a replacement bookie.",
            g(&self.rereplicated_fragments),
        );
        w.counter(
            "strata_autorecovery_recovered_open_ledgers_total",
            "Open ledgers this process recovered (closed) to re-replicate their last fragment.",
            g(&self.recovered_open_ledgers),
        );
        w.counter(
            "strata_autorecovery_errors_total",
            "Failed audits and re-replication attempts (retried).",
            g(&self.errors),
        );
    }
}

/// Starts the auditor and a worker until `shutdown`.
pub fn spawn(
    store: Arc<dyn MetadataStore>,
    ledgers: crate::ledger::LedgerClient,
    cfg: AutoRecoveryConfig,
    metrics: Arc<Metrics>,
    shutdown: tokio_util::sync::CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    vec![
        tokio::spawn(auditor::run(store, cfg.clone(), metrics.clone(), shutdown.clone())),
        tokio::spawn(worker::run(ledgers, cfg, metrics, shutdown)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(addr: &str, read_only: bool) -> BookieInfo {
        BookieInfo {
            address: addr.into(),
            free_bytes: 0,
            total_bytes: 0,
            read_only,
            read_only_reason: String::new(),
            version: String::new(),
        }
    }

    #[test]
    fn bad_bookies_are_decommissioned_or_lost_past_the_grace() {
        let mut v = BookieView::default();
        v.registered.insert("a".into(), info("a", false));
        v.registered.insert("b".into(), info("b", true));
        v.registered.insert("d".into(), info("d", false));
        v.lost.insert("c".into(), (LostBookie { since_ms: 1_000 }, 1));
        // A registered bookie with a stale lost mark is not bad.
        v.lost.insert("a".into(), (LostBookie { since_ms: 0 }, 1));
        v.decommissions.insert(
            "d".into(),
            (
                Decommission {
                    state: DecommissionState::Draining,
                    started_ms: 0,
                    finished_ms: None,
                    remaining_ledgers: None,
                },
                1,
            ),
        );
        let grace = Duration::from_secs(5);
        assert!(!v.is_bad("a", 10_000, grace));
        assert!(!v.is_bad("b", 10_000, grace), "read-only is not lost");
        assert!(!v.is_bad("c", 5_999, grace), "inside the grace period");
        assert!(v.is_bad("c", 6_000, grace), "exactly at the grace period");
        assert!(v.is_bad("d", 0, grace), "decommissioning is bad at once");
        assert!(!v.is_bad("e", u64::MAX, grace), "no lost mark yet: not bad");
        assert_eq!(v.writable(), vec!["a".to_string()]);
    }
}
