//! Operations behind `strata admin bookies …` and `strata admin ledgers under-replicated`
//! (served by brokers, which hold the metadata store): listing bookies with their state,
//! starting, cancelling and following a decommission, listing under-replicated ledgers.

use super::auditor::{all_ledgers, named_bookies};
use super::{BookieView, Decommission, DecommissionState, UnderReplicated, decode, encode, now_ms};
use crate::error::{BookieError, Result};
use crate::registration::BookieInfo;
use std::collections::BTreeMap;
use strata_meta::{Condition, MetaError, MetadataStore, keys};

/// One bookie as `bookies list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookieEntry {
    pub address: String,
    /// Its registration, if it is registered.
    pub info: Option<BookieInfo>,
    /// Since when it has been named by ledgers but unregistered.
    pub lost_since_ms: Option<u64>,
    pub decommission: Option<Decommission>,
    /// Ledgers whose metadata names it.
    pub ledgers: u64,
}

impl BookieEntry {
    /// `writable`, `read-only`, `draining`, `decommissioned` or `lost`.
    pub fn state(&self) -> &'static str {
        match (&self.decommission, &self.info) {
            (Some(d), _) if d.state == DecommissionState::Done => "decommissioned",
            (Some(_), _) => "draining",
            (None, Some(i)) if i.read_only => "read-only",
            (None, Some(_)) => "writable",
            (None, None) => "lost",
        }
    }
}

/// Registered bookies, and bookies ledgers name that are not registered, by address.
pub async fn list_bookies(store: &dyn MetadataStore) -> Result<Vec<BookieEntry>> {
    let view = BookieView::read(store).await?;
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for (_, md) in all_ledgers(store).await? {
        for b in named_bookies(&md) {
            *counts.entry(b.to_string()).or_default() += 1;
        }
    }
    let mut addresses: Vec<String> = view
        .registered
        .keys()
        .chain(counts.keys())
        .chain(view.decommissions.keys())
        .cloned()
        .collect();
    addresses.sort();
    addresses.dedup();
    Ok(addresses
        .into_iter()
        .map(|a| BookieEntry {
            info: view.registered.get(&a).cloned(),
            lost_since_ms: view.lost.get(&a).map(|(l, _)| l.since_ms),
            decommission: view.decommissions.get(&a).map(|(d, _)| d.clone()),
            ledgers: counts.get(&a).copied().unwrap_or(0),
            address: a,
        })
        .collect())
}

/// Starts decommissioning `address` (or reports the one under way: safe to repeat).
///
/// Refused when the bookie is unknown, or when fewer writable bookies than the largest
/// ensemble in use — the ledgers' own, and `default_ensemble` for new ones — would remain:
/// a fragment's replacement must be a writable bookie outside it.
pub async fn start_decommission(
    store: &dyn MetadataStore,
    address: &str,
    default_ensemble: u32,
) -> Result<Decommission> {
    let key = keys::decommission(address);
    if let Some(v) = store.get(&key).await?
        && let Some(d) = decode::<Decommission>(&key, &v.value)
    {
        return Ok(d);
    }
    let view = BookieView::read(store).await?;
    let ledgers = all_ledgers(store).await?;
    let named = ledgers.iter().any(|(_, md)| named_bookies(md).contains(address));
    if !view.registered.contains_key(address) && !named {
        let known = view.registered.keys().cloned().collect::<Vec<_>>().join(", ");
        return Err(BookieError::InvalidArgument(format!(
            "bookie {address} is neither registered nor named by any ledger (registered: {})",
            if known.is_empty() { "none" } else { &known }
        )));
    }
    let largest = ledgers
        .iter()
        .map(|(_, md)| md.ensemble_size)
        .chain(std::iter::once(default_ensemble))
        .max()
        .unwrap_or(default_ensemble);
    let remaining: Vec<String> = view.writable().into_iter().filter(|b| b != address).collect();
    if (remaining.len() as u32) < largest {
        return Err(BookieError::InvalidArgument(format!(
            "cannot decommission bookie {address}: {} writable bookie(s) would remain ({}), but ensembles of {largest} bookies are in use; add a bookie first",
            remaining.len(),
            if remaining.is_empty() {
                "none".to_string()
            } else {
                remaining.join(", ")
            }
        )));
    }
    let d = Decommission {
        state: DecommissionState::Draining,
        started_ms: now_ms(),
        finished_ms: None,
        remaining_ledgers: None,
    };
    match store.put(&key, encode(&d), Condition::Absent).await {
        Ok(_) => {
            tracing::info!(bookie = %address, "decommission started");
            Ok(d)
        }
        // Someone else started it meanwhile: report theirs.
        Err(MetaError::BadVersion(_)) => decommission_status(store, address)
            .await?
            .0
            .ok_or_else(|| BookieError::Metadata(format!("decommission of {address} changed meanwhile; retry"))),
        Err(e) => Err(e.into()),
    }
}

/// Cancels a decommission that is still draining: the bookie takes writes again. A
/// finished one is forgotten instead, once the bookie has unregistered: its address may
/// then serve a new bookie (Kubernetes reuses a StatefulSet ordinal's identity; the new
/// pod should get a new, empty volume — the old data is no longer named by any ledger).
pub async fn cancel_decommission(store: &dyn MetadataStore, address: &str) -> Result<bool> {
    let key = keys::decommission(address);
    let Some(v) = store.get(&key).await? else {
        return Ok(false);
    };
    if let Some(d) = decode::<Decommission>(&key, &v.value)
        && d.state == DecommissionState::Done
        && store.get(&keys::bookie(address)).await?.is_some()
    {
        return Err(BookieError::InvalidArgument(format!(
            "bookie {address} finished decommissioning but is still registered; it unregisters within seconds, retry then"
        )));
    }
    match store.delete(&key, Condition::Version(v.version)).await {
        Ok(_) => {
            tracing::info!(bookie = %address, "decommission cancelled");
            Ok(true)
        }
        Err(MetaError::BadVersion(_)) => Err(BookieError::Metadata(format!(
            "decommission of {address} changed meanwhile; retry"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// The decommission of `address` (if any), and the number of ledgers naming it now.
pub async fn decommission_status(store: &dyn MetadataStore, address: &str) -> Result<(Option<Decommission>, u64)> {
    let key = keys::decommission(address);
    let d = match store.get(&key).await? {
        None => None,
        Some(v) => Some(
            decode::<Decommission>(&key, &v.value)
                .ok_or_else(|| BookieError::Corruption(format!("{key} is not a decommission state")))?,
        ),
    };
    let naming = all_ledgers(store)
        .await?
        .iter()
        .filter(|(_, md)| named_bookies(md).contains(address))
        .count() as u64;
    Ok((d, naming))
}

/// One under-replicated ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnderReplicatedLedger {
    pub ledger: u64,
    pub mark: UnderReplicated,
    /// The worker re-replicating it now, if any.
    pub worker: Option<String>,
}

/// Every under-replicated mark, by ledger id.
pub async fn under_replicated(store: &dyn MetadataStore) -> Result<Vec<UnderReplicatedLedger>> {
    let mut out = Vec::new();
    for (k, v) in store.list(&keys::under_replicated_prefix()).await? {
        let Some(ledger) = k.rsplit('/').next().and_then(|s| s.parse::<u64>().ok()) else {
            continue;
        };
        let Some(mark) = decode::<UnderReplicated>(&k, &v.value) else {
            continue;
        };
        let worker = store
            .get(&keys::replication_lock(ledger))
            .await?
            .map(|l| String::from_utf8_lossy(&l.value).into_owned());
        out.push(UnderReplicatedLedger { ledger, mark, worker });
    }
    Ok(out)
}
