//! Strata's metadata store: the small, strongly consistent key-value state the cluster
//! shares (bookies, ledgers, topics, cursors, ownership).
//!
//! One interface, [`MetadataStore`], three implementations behind one conformance suite:
//! - `etcd://host:port[,host:port…]` — etcd v3, for clusters ([`etcd::EtcdStore`]);
//! - `local:///path` — an embedded store on RocksDB for standalone mode; data survives
//!   restarts, sessions are emulated in-process ([`local::LocalStore`]);
//! - `memory://` — the same engine without persistence, for unit tests.
//!
//! Semantics every implementation keeps:
//! - Every key has a **version** that changes on every write (etcd's mod revision). Writes
//!   take a [`Condition`]; a failed condition is [`MetaError::BadVersion`], never a silent
//!   overwrite.
//! - **Ephemeral** keys belong to a [`Session`] with a TTL. When the session is lost (its
//!   keep-alives stop reaching the store for a TTL), its keys are deleted and the session
//!   reports it through [`Session::lost`]; losing a session is an event, not a log line.
//! - **Watches** deliver every change under a prefix after the watch started, in order.
//!   A watcher that falls too far behind receives [`WatchEvent::Resync`] and must re-list.

pub mod etcd;
mod etcd_tls;
pub mod keys;
pub mod local;
#[cfg(feature = "testing")]
pub mod testing;

use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// What can go wrong, as decisions a caller makes.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum MetaError {
    /// A conditional write found a different version (or presence) than expected.
    #[error("version conflict on {0}: the key changed since it was read")]
    BadVersion(String),
    /// The session is gone; ephemeral writes with it are refused.
    #[error("metadata session lost")]
    SessionLost,
    /// The store cannot be reached or failed; retrying later may work.
    #[error("metadata store unavailable: {0}")]
    Unavailable(String),
    /// The request is malformed (bad URL, bad key).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Stored data could not be decoded.
    #[error("corrupt metadata: {0}")]
    Corruption(String),
    /// A guarded write found its guard key changed or gone (see [`Guard`]): whatever the
    /// guard stood for (ownership of a topic, say) no longer holds, so nothing was written.
    #[error("{0} changed: the write depended on it and was not made")]
    GuardChanged(String),
}

pub type Result<T, E = MetaError> = std::result::Result<T, E>;

/// A value with the version it was read at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub value: Bytes,
    /// Changes on every write of the key; never 0 for a present key.
    pub version: u64,
}

/// When a write may happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// Always.
    Any,
    /// Only if the key does not exist (create).
    Absent,
    /// Only if the key exists at exactly this version (compare-and-set).
    Version(u64),
}

/// A key a write depends on: a guarded write happens only while `key` still exists at
/// exactly `version`, checked atomically with the write. Brokers guard every write of a
/// topic's state with the topic's ownership key, so a broker that lost ownership (its
/// session expired while it was paused, say) cannot overwrite the new owner's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guard {
    pub key: String,
    pub version: u64,
}

/// A change under a watched prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    Put {
        key: String,
        value: Bytes,
        version: u64,
    },
    Delete {
        key: String,
    },
    /// Events were dropped (the watcher fell behind, or the connection was re-established):
    /// list the prefix again.
    Resync,
}

/// A stream of watch events; dropping it cancels the watch.
pub struct Watch {
    rx: mpsc::Receiver<WatchEvent>,
}

impl Watch {
    /// The next event; `None` once the store shut down.
    pub async fn next(&mut self) -> Option<WatchEvent> {
        self.rx.recv().await
    }
}

/// Buffer of a watch before it is declared lagging.
pub(crate) const WATCH_BUFFER: usize = 4096;

/// A lease that ephemeral keys are bound to. Kept alive in the background until dropped,
/// closed, or lost.
#[derive(Clone)]
pub struct Session {
    pub(crate) id: u64,
    pub(crate) lost: watch::Receiver<bool>,
    pub(crate) control: Arc<dyn SessionControl>,
}

pub(crate) trait SessionControl: Send + Sync {
    /// Stops keep-alives (the session expires after its TTL). For tests of expiry.
    fn stop_keepalive(&self);
    /// Ends the session now, deleting its keys.
    fn close(&self);
}

impl Session {
    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// Resolves once the session is lost.
    pub async fn lost(&self) {
        let mut rx = self.lost.clone();
        let _ = rx.wait_for(|l| *l).await;
    }

    /// Stops sending keep-alives, as a frozen or partitioned process would; the store
    /// expires the session after its TTL.
    pub fn stop_keepalive(&self) {
        self.control.stop_keepalive();
    }

    /// Ends the session at once; its ephemeral keys are deleted.
    pub fn close(&self) {
        self.control.close();
    }
}

/// The metadata store interface.
#[async_trait::async_trait]
pub trait MetadataStore: Send + Sync {
    async fn get(&self, key: &str) -> Result<Option<Versioned>>;
    /// Writes `value` if `cond` holds; returns the new version.
    async fn put(&self, key: &str, value: Bytes, cond: Condition) -> Result<u64>;
    /// Writes `value` if `cond` holds and `guard` is unchanged, atomically; returns the new
    /// version. A changed guard is [`MetaError::GuardChanged`] (checked before `cond`).
    async fn put_guarded(&self, key: &str, value: Bytes, cond: Condition, guard: &Guard) -> Result<u64>;
    /// Writes an ephemeral key bound to `session`; returns the new version.
    async fn put_ephemeral(&self, session: &Session, key: &str, value: Bytes, cond: Condition) -> Result<u64>;
    /// Deletes `key` if `cond` holds; returns whether it existed.
    async fn delete(&self, key: &str, cond: Condition) -> Result<bool>;
    /// Every key under `prefix`, sorted by key.
    async fn list(&self, prefix: &str) -> Result<Vec<(String, Versioned)>>;
    /// Watches every change under `prefix` from now on.
    async fn watch(&self, prefix: &str) -> Result<Watch>;
    /// Starts a session whose ephemeral keys live while it is kept alive. TTL at least 1 s.
    async fn session(&self, ttl: Duration) -> Result<Session>;
}

/// The TLS of an `etcds://` URL, from its query: `ca_file` (required: the CA etcd's
/// certificate is checked against), and `cert_file` with `key_file` when etcd asks for
/// client certificates (`--client-cert-auth`).
fn etcd_tls(url: &str, query: &str) -> Result<strata_net::tls::ClientTls> {
    let bad = |why: String| MetaError::InvalidArgument(format!("metadata URL {url:?}: {why}"));
    let (mut ca, mut cert, mut key) = (None, None, None);
    for kv in query.split('&').filter(|s| !s.is_empty()) {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| bad(format!("{kv:?} is not key=value")))?;
        let slot = match k {
            "ca_file" => &mut ca,
            "cert_file" => &mut cert,
            "key_file" => &mut key,
            _ => {
                return Err(bad(format!(
                    "unknown parameter {k:?}; use ca_file, cert_file, key_file"
                )));
            }
        };
        *slot = Some(std::path::PathBuf::from(v));
    }
    let ca = ca.ok_or_else(|| bad("etcds:// needs ?ca_file=/path/to/ca.crt (the CA of etcd's certificate)".into()))?;
    let tls = strata_net::tls::ClientTls::with_ca_file(&ca).map_err(|e| bad(format!("ca_file: {e}")))?;
    match (cert, key) {
        (Some(c), Some(k)) => tls
            .with_identity_files(&c, &k)
            .map_err(|e| bad(format!("cert_file / key_file: {e}"))),
        (None, None) => Ok(tls),
        _ => Err(bad("give both cert_file and key_file, or neither".into())),
    }
}

/// Opens a store from its URL: `etcd://h:p[,h:p…]`, `etcds://h:p[,h:p…]?ca_file=…[&cert_file=…&key_file=…]`
/// (etcd over TLS), `local:///path` or `memory://`.
pub async fn connect(url: &str) -> Result<Arc<dyn MetadataStore>> {
    let etcd = match (url.strip_prefix("etcd://"), url.strip_prefix("etcds://")) {
        (Some(rest), _) => Some((rest, None)),
        (_, Some(rest)) => {
            let (hosts, query) = rest.split_once('?').unwrap_or((rest, ""));
            Some((hosts, Some(etcd_tls(url, query)?)))
        }
        _ => None,
    };
    if let Some((hosts, tls)) = etcd {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let endpoints: Vec<String> = hosts
            .trim_end_matches('/')
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| format!("{scheme}://{s}"))
            .collect();
        if endpoints.is_empty() {
            return Err(MetaError::InvalidArgument(format!(
                "metadata URL {url:?} names no etcd endpoint; use etcd://host:port[,host:port…]"
            )));
        }
        return Ok(Arc::new(etcd::EtcdStore::connect(&endpoints, tls).await?));
    }
    if let Some(path) = url.strip_prefix("local://") {
        if path.is_empty() || !path.starts_with('/') {
            return Err(MetaError::InvalidArgument(format!(
                "metadata URL {url:?} needs an absolute path: local:///var/lib/strata/meta"
            )));
        }
        let path = std::path::PathBuf::from(path);
        return Ok(Arc::new(
            tokio::task::spawn_blocking(move || local::LocalStore::open(&path))
                .await
                .map_err(|e| MetaError::Unavailable(e.to_string()))??,
        ));
    }
    if url == "memory://" || url == "memory:" {
        return Ok(Arc::new(local::LocalStore::memory()));
    }
    Err(MetaError::InvalidArgument(format!(
        "unknown metadata URL {url:?}; expected etcd://host:port[,host:port…], etcds://host:port?ca_file=…, local:///path or memory://"
    )))
}

pub(crate) fn check_key(key: &str) -> Result<()> {
    if key.is_empty() || !key.starts_with('/') {
        return Err(MetaError::InvalidArgument(format!(
            "metadata key {key:?} must start with '/'"
        )));
    }
    Ok(())
}

pub(crate) fn check_ttl(ttl: Duration) -> Result<()> {
    if ttl < Duration::from_secs(1) {
        return Err(MetaError::InvalidArgument(format!(
            "session TTL {ttl:?} is below the 1 s minimum"
        )));
    }
    Ok(())
}
