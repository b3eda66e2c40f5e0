//! Registration of a bookie in the metadata store: an ephemeral key
//! (`/strata/v1/bookies/<address>`) holding [`BookieInfo`], bound to the bookie's session,
//! refreshed when its state changes. Ledger clients list and watch these keys to choose
//! ensembles.
//!
//! Invariants: the key exists only while the bookie's session is alive; a lost session is
//! re-established and the key re-created; on shutdown the session is closed so the key
//! disappears at once instead of after the TTL.
//!
//! Decommissioning (`/strata/v1/decommission/<address>`, see `autorecovery`) is followed
//! here too: while draining, the storage refuses new writes (published as read-only);
//! once done, the registration is removed and not made again while the mark exists.

use crate::autorecovery::{Decommission, DecommissionState};
use crate::storage::Storage;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use strata_meta::{Condition, MetadataStore, keys};
use tokio_util::sync::CancellationToken;

/// What a bookie publishes about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookieInfo {
    /// Address clients connect to (`host:port`); also the bookie's id.
    pub address: String,
    pub free_bytes: u64,
    pub total_bytes: u64,
    pub read_only: bool,
    /// Why it is read-only, empty otherwise.
    #[serde(default)]
    pub read_only_reason: String,
    pub version: String,
}

impl BookieInfo {
    pub fn decode(value: &[u8]) -> Option<Self> {
        serde_json::from_slice(value).ok()
    }
}

fn info(storage: &Storage, address: &str) -> BookieInfo {
    let s = storage.node_state();
    BookieInfo {
        address: address.to_string(),
        free_bytes: s.free_bytes,
        total_bytes: s.total_bytes,
        read_only: s.read_only.is_some(),
        read_only_reason: s.read_only.unwrap_or_default(),
        version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

/// Whether the state changed enough to write it again: any change of read-only state, or
/// free space moving by more than 1% of the disk (not every byte, which would write to the
/// metadata store every refresh under load).
fn worth_publishing(old: &BookieInfo, new: &BookieInfo) -> bool {
    old.read_only != new.read_only
        || old.read_only_reason != new.read_only_reason
        || old.free_bytes.abs_diff(new.free_bytes) > new.total_bytes / 100
}

/// How often the published state is compared with the current one.
const REFRESH: Duration = Duration::from_secs(2);

/// Keeps the bookie registered until `shutdown`; never returns an error (the metadata store
/// being away is waited out, with the reason logged).
pub async fn keep_registered(
    store: Arc<dyn MetadataStore>,
    storage: Arc<Storage>,
    address: String,
    ttl: Duration,
    shutdown: CancellationToken,
) {
    let key = keys::bookie(&address);
    let mut backoff = Duration::from_millis(100);
    while !shutdown.is_cancelled() {
        let session = match store.session(ttl).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot open a metadata session; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        let mut published: Option<BookieInfo> = None;
        loop {
            // An unreadable state keeps the last one: a metadata-store blip must not make a
            // draining bookie take writes again.
            let decommission = match store.get(&keys::decommission(&address)).await {
                Ok(v) => {
                    let d = v.and_then(|v| serde_json::from_slice::<Decommission>(&v.value).ok());
                    storage.set_draining(d.as_ref().map(|_| {
                        "this bookie is decommissioned: new writes go to other bookies (strata admin bookies list)"
                            .to_string()
                    }));
                    d
                }
                Err(e) => {
                    tracing::debug!(error = %e, "cannot read this bookie's decommission state");
                    None
                }
            };
            if decommission.is_some_and(|d| d.state == DecommissionState::Done) {
                if published.is_some() {
                    tracing::info!(%key, "decommission complete: unregistered; no ledger needs this bookie, so it can be stopped and its data directory deleted");
                }
                session.close();
                // Wait while decommissioned; register again only if the mark goes away.
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(REFRESH) => {}
                        _ = shutdown.cancelled() => return,
                    }
                    if let Ok(None) = store.get(&keys::decommission(&address)).await {
                        break;
                    }
                }
                break;
            }
            let now = info(&storage, &address);
            if published.as_ref().is_none_or(|p| worth_publishing(p, &now)) {
                let value = Bytes::from(serde_json::to_vec(&now).expect("bookie info serialises"));
                match store.put_ephemeral(&session, &key, value, Condition::Any).await {
                    Ok(_) => {
                        if published.is_none() {
                            tracing::info!(%key, "registered in the metadata store");
                        }
                        published = Some(now);
                        backoff = Duration::from_millis(100);
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot publish bookie state; retrying"),
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(REFRESH) => {}
                _ = session.lost() => {
                    tracing::warn!("metadata session lost; registering again");
                    break;
                }
                _ = shutdown.cancelled() => {
                    session.close();
                    return;
                }
            }
        }
    }
}
