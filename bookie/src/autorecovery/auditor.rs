//! The auditor: one per cluster (elected through an ephemeral key), it finds ledgers that
//! name lost or decommissioning bookies and marks them under-replicated, keeps the lost
//! marks, and finishes decommissions. Everything it writes is derived again on the next
//! audit, so a new auditor after a failover simply carries on.

use super::{
    AutoRecoveryConfig, BookieView, Decommission, DecommissionState, LostBookie, Metrics, UnderReplicated, decode,
    encode, now_ms,
};
use crate::error::Result;
use crate::ledger::LedgerMetadata;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use strata_meta::{Condition, MetaError, MetadataStore, keys};
use tokio_util::sync::CancellationToken;

/// What one audit found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct AuditReport {
    /// Ledger id → the bad bookies it names.
    pub under_replicated: BTreeMap<u64, Vec<String>>,
    /// Bookies named by ledgers and not registered.
    pub unregistered: BTreeSet<String>,
    pub oldest_mark_ms: Option<u64>,
    /// A draining bookie was first seen named by no ledger: the confirming audit should
    /// come soon, not a whole interval later.
    pub confirm_soon: bool,
}

/// Wait before the audit that confirms a decommission (a ledger created from a bookie
/// list read just before the decommission began is in the metadata store by then).
const CONFIRM_AFTER: Duration = Duration::from_secs(1);

/// Campaigns for the auditor key and audits every `audit_interval` while holding it.
pub async fn run(
    store: Arc<dyn MetadataStore>,
    cfg: AutoRecoveryConfig,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(200);
    while !shutdown.is_cancelled() {
        let session = match store.session(cfg.session_ttl).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "auditor: cannot open a metadata session; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(200);
        // Campaign until elected or the session is lost.
        loop {
            match store
                .put_ephemeral(
                    &session,
                    &keys::auditor(),
                    bytes::Bytes::from(cfg.id.clone()),
                    Condition::Absent,
                )
                .await
            {
                Ok(_) => break,
                Err(MetaError::BadVersion(_)) => {}
                Err(e) => tracing::warn!(error = %e, "auditor: election failed; retrying"),
            }
            tokio::select! {
                _ = tokio::time::sleep(cfg.audit_interval) => {}
                _ = session.lost() => break,
                _ = shutdown.cancelled() => { session.close(); return; }
            }
        }
        if session.is_lost() {
            continue;
        }
        tracing::info!(id = %cfg.id, "elected auto-recovery auditor");
        metrics.auditor.store(1, Ordering::Relaxed);
        // A decommission started or cancelled is audited at once, not at the next interval.
        let mut decommissions = store.watch(&keys::decommission_prefix()).await.ok();
        loop {
            let mut wait = cfg.audit_interval;
            match audit(store.as_ref(), &cfg).await {
                Ok(r) => {
                    if r.confirm_soon {
                        wait = wait.min(CONFIRM_AFTER);
                    }
                    let now = now_ms();
                    metrics
                        .under_replicated_ledgers
                        .store(r.under_replicated.len() as u64, Ordering::Relaxed);
                    metrics
                        .oldest_under_replicated_ms
                        .store(r.oldest_mark_ms.map_or(0, |s| now.saturating_sub(s)), Ordering::Relaxed);
                    metrics
                        .lost_bookies
                        .store(r.unregistered.len() as u64, Ordering::Relaxed);
                }
                Err(e) => {
                    metrics.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "audit failed; retrying at the next interval");
                }
            }
            let changed = async {
                match decommissions.as_mut() {
                    Some(w) => w.next().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                ev = changed => {
                    if ev.is_none() {
                        decommissions = None; // the watch ended: intervals only
                    }
                }
                _ = session.lost() => break,
                _ = shutdown.cancelled() => {
                    metrics.auditor.store(0, Ordering::Relaxed);
                    session.close();
                    return;
                }
            }
        }
        metrics.auditor.store(0, Ordering::Relaxed);
        tracing::warn!("auditor: metadata session lost; campaigning again");
    }
}

/// Every ledger's metadata, skipping (and logging) undecodable ones.
pub(crate) async fn all_ledgers(store: &dyn MetadataStore) -> Result<Vec<(u64, LedgerMetadata)>> {
    let mut out = Vec::new();
    for (k, v) in store.list(&keys::ledgers_prefix()).await? {
        let Some(id) = k.rsplit('/').next().and_then(|s| s.parse::<u64>().ok()) else {
            continue;
        };
        match LedgerMetadata::decode(id, &v.value) {
            Ok(md) => out.push((id, md)),
            Err(e) => tracing::warn!(ledger = id, error = %e, "skipping unreadable ledger metadata"),
        }
    }
    Ok(out)
}

/// Every bookie a ledger names, deduplicated.
pub(crate) fn named_bookies(md: &LedgerMetadata) -> BTreeSet<&str> {
    md.fragments
        .iter()
        .flat_map(|f| f.bookies.iter().map(String::as_str))
        .collect()
}

/// One audit: lost marks, under-replicated marks, decommission progress.
pub async fn audit(store: &dyn MetadataStore, cfg: &AutoRecoveryConfig) -> Result<AuditReport> {
    let now = now_ms();
    let mut view = BookieView::read(store).await?;
    let ledgers = all_ledgers(store).await?;
    let mut naming: BTreeMap<String, u64> = BTreeMap::new();
    for (_, md) in &ledgers {
        for b in named_bookies(md) {
            *naming.entry(b.to_string()).or_default() += 1;
        }
    }
    let mut report = AuditReport::default();

    // Lost marks: created for named, unregistered bookies; removed once they are back or
    // no longer named.
    for b in naming.keys() {
        if view.registered.contains_key(b) {
            continue;
        }
        report.unregistered.insert(b.clone());
        if !view.lost.contains_key(b) {
            let mark = LostBookie { since_ms: now };
            match store.put(&keys::lost_bookie(b), encode(&mark), Condition::Absent).await {
                Ok(v) => {
                    tracing::warn!(bookie = %b, grace = ?cfg.lost_grace, "a bookie named by ledgers is not registered; its ledgers are re-replicated if it stays away");
                    view.lost.insert(b.clone(), (mark, v));
                }
                Err(MetaError::BadVersion(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    for (b, (_, version)) in &view.lost {
        if view.registered.contains_key(b) || !naming.contains_key(b) {
            match store.delete(&keys::lost_bookie(b), Condition::Version(*version)).await {
                Ok(_) | Err(MetaError::BadVersion(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    // Under-replicated marks.
    let mut marks: BTreeMap<u64, (UnderReplicated, u64)> = BTreeMap::new();
    for (k, v) in store.list(&keys::under_replicated_prefix()).await? {
        if let Some(id) = k.rsplit('/').next().and_then(|s| s.parse::<u64>().ok())
            && let Some(m) = decode::<UnderReplicated>(&k, &v.value)
        {
            marks.insert(id, (m, v.version));
        }
    }
    for (id, md) in &ledgers {
        let bad: Vec<String> = named_bookies(md)
            .into_iter()
            .filter(|b| view.is_bad(b, now, cfg.lost_grace))
            .map(str::to_string)
            .collect();
        let key = keys::under_replicated(*id);
        match (bad.is_empty(), marks.remove(id)) {
            (true, None) => {}
            (true, Some((_, version))) => match store.delete(&key, Condition::Version(version)).await {
                Ok(_) | Err(MetaError::BadVersion(_)) => {}
                Err(e) => return Err(e.into()),
            },
            (false, None) => {
                let mark = UnderReplicated {
                    bookies: bad.clone(),
                    since_ms: now,
                };
                match store.put(&key, encode(&mark), Condition::Absent).await {
                    Ok(_) => {
                        tracing::info!(ledger = id, bookies = ?bad, "ledger is under-replicated");
                        report.oldest_mark_ms = Some(report.oldest_mark_ms.map_or(now, |o| o.min(now)));
                    }
                    Err(MetaError::BadVersion(_)) => {}
                    Err(e) => return Err(e.into()),
                }
                report.under_replicated.insert(*id, bad);
            }
            (false, Some((mark, version))) => {
                if mark.bookies != bad {
                    let updated = UnderReplicated {
                        bookies: bad.clone(),
                        since_ms: mark.since_ms,
                    };
                    match store.put(&key, encode(&updated), Condition::Version(version)).await {
                        Ok(_) | Err(MetaError::BadVersion(_)) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                report.oldest_mark_ms = Some(report.oldest_mark_ms.map_or(mark.since_ms, |o| o.min(mark.since_ms)));
                report.under_replicated.insert(*id, bad);
            }
        }
    }
    // Marks of ledgers that no longer exist.
    for (id, (_, version)) in marks {
        match store
            .delete(&keys::under_replicated(id), Condition::Version(version))
            .await
        {
            Ok(_) | Err(MetaError::BadVersion(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }

    // Decommissions: done once no ledger named the bookie at two audits in a row (a
    // ledger created from a bookie list read just before the decommission began is caught
    // by the second).
    for (b, (d, version)) in &view.decommissions {
        if d.state != DecommissionState::Draining {
            continue;
        }
        let remaining = naming.get(b).copied().unwrap_or(0);
        let next = if remaining == 0 && d.remaining_ledgers == Some(0) {
            tracing::info!(bookie = %b, "decommission complete: no ledger names the bookie");
            Decommission {
                state: DecommissionState::Done,
                finished_ms: Some(now),
                remaining_ledgers: Some(0),
                ..d.clone()
            }
        } else if d.remaining_ledgers != Some(remaining) {
            report.confirm_soon |= remaining == 0;
            Decommission {
                remaining_ledgers: Some(remaining),
                ..d.clone()
            }
        } else {
            continue;
        };
        match store
            .put(&keys::decommission(b), encode(&next), Condition::Version(*version))
            .await
        {
            Ok(_) | Err(MetaError::BadVersion(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(report)
}
