//! Ledger recovery: close a ledger whose writer is gone, at an entry no lower than the last
//! one the writer could have acknowledged.
//!
//! 1. Mark the metadata InRecovery (compare-and-set; the old writer's next ensemble change
//!    then fails, and it stops).
//! 2. Fence the last fragment on at least E − Qa + 1 bookies: every write set then has fewer
//!    than Qa unfenced bookies, so no add of the old writer can reach an ack quorum.
//! 3. From the highest LAC the fenced bookies report, read forward. An entry any replica
//!    returns is kept; the first entry that at least Qw − Qa + 1 replicas do not have
//!    cannot have been acknowledged, and ends the ledger. Too few answers → retry later.
//! 4. Re-replicate the kept tail to its whole write set with recovery adds (allowed on
//!    fenced ledgers), at least Qa copies each.
//! 5. Close the metadata by compare-and-set. If another recoverer closed it first, its
//!    result stands — concurrent recoveries agree on one last entry.
//!
//! Safe to run twice, concurrently, or after a previous attempt died at any step.

use super::LedgerClient;
use super::metadata::LedgerState;
use crate::client::NewEntry;
use crate::error::{BookieError, Result};
use bytes::Bytes;
use futures_util::future::join_all;
use std::collections::HashMap;
use strata_common::{EntryId, ErrorCode, LedgerId};
use strata_meta::{Condition, MetaError, keys};

pub(super) async fn recover(client: &LedgerClient, id: LedgerId) -> Result<()> {
    let key = keys::ledger(id.get());
    loop {
        let (mut md, mut version) = client.metadata(id).await?;
        match md.state {
            LedgerState::Closed => return Ok(()),
            LedgerState::Open => {
                md.state = LedgerState::InRecovery;
                match client.store.put(&key, md.encode(), Condition::Version(version)).await {
                    Ok(v) => version = v,
                    Err(MetaError::BadVersion(_)) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            LedgerState::InRecovery => {} // another recoverer started, or died: carry on
        }
        let frag = md.last_fragment().clone();
        let token = md.token_bytes();
        let timeout = client.cfg.add_timeout;
        let (e, qw, qa) = (
            md.ensemble_size as usize,
            md.write_quorum as usize,
            md.ack_quorum as usize,
        );

        // 2. Fence.
        let fences = join_all(frag.bookies.iter().map(|b| {
            let (pool, token, b) = (client.pool.clone(), token.clone(), b.clone());
            bounded(timeout, async move {
                let c = pool.get(&b).await?;
                c.fence(id, token).await
            })
        }))
        .await;
        let mut fenced = 0;
        let mut max_lac: Option<u64> = None;
        for (b, r) in frag.bookies.iter().zip(&fences) {
            match r {
                Ok(resp) => {
                    fenced += 1;
                    max_lac = max_lac.max(resp.lac);
                }
                Err(err) => tracing::warn!(ledger = %id, bookie = %b, error = %err, "could not fence ledger on bookie"),
            }
        }
        if fenced < e - qa + 1 {
            return Err(BookieError::NotEnoughBookies {
                needed: e - qa + 1,
                available: fenced,
            });
        }

        // 3. Find the last entry an ack quorum may hold.
        let mut next = max_lac.map_or(0, |l| l + 1).max(frag.first_entry);
        let mut tail: Vec<(u64, Bytes)> = Vec::new();
        loop {
            let ws = md.write_set(next);
            let reads = join_all(ws.iter().map(|b| {
                let (pool, b) = (client.pool.clone(), b.clone());
                bounded(timeout, async move {
                    let c = pool.get(&b).await?;
                    c.read(id, next, next).await
                })
            }))
            .await;
            let mut found = None;
            let mut missing = 0;
            for r in reads {
                match r {
                    Ok(entries) if entries.first().is_some_and(|x| x.entry == next) => {
                        found = Some(entries[0].payload.clone());
                    }
                    Ok(_) => missing += 1,
                    Err(err) if matches!(err.code(), ErrorCode::NoSuchEntry | ErrorCode::NoSuchLedger) => missing += 1,
                    Err(err) => {
                        tracing::debug!(ledger = %id, entry = next, error = %err, "recovery read failed on one replica")
                    }
                }
            }
            match found {
                Some(p) => {
                    tail.push((next, p));
                    next += 1;
                }
                None if missing > qw - qa => break,
                None => {
                    return Err(BookieError::Transport(format!(
                        "recovery of ledger {id}: only {missing} of {qw} replicas answered for entry {next}; need {} to know it was never acknowledged",
                        qw - qa + 1
                    )));
                }
            }
        }

        // 4. Re-replicate the tail.
        if !tail.is_empty() {
            replicate(client, id, &md, &token, &tail).await?;
        }
        let last_entry = next.checked_sub(1);

        // 5. Close.
        md.state = LedgerState::Closed;
        md.last_entry = last_entry;
        match client.store.put(&key, md.encode(), Condition::Version(version)).await {
            Ok(_) => {
                tracing::info!(ledger = %id, ?last_entry, recovered_tail = tail.len(), "ledger recovered and closed");
                return Ok(());
            }
            Err(MetaError::BadVersion(_)) => continue, // re-read: maybe another recoverer closed it
            Err(err) => return Err(err.into()),
        }
    }
}

/// Writes `tail` to every bookie of each entry's write set with recovery adds; each entry
/// must reach at least Qa of them.
async fn replicate(
    client: &LedgerClient,
    id: LedgerId,
    md: &super::LedgerMetadata,
    token: &Bytes,
    tail: &[(u64, Bytes)],
) -> Result<()> {
    let mut per_bookie: HashMap<String, Vec<NewEntry>> = HashMap::new();
    for (e, payload) in tail {
        for b in md.write_set(*e) {
            per_bookie.entry(b).or_default().push(NewEntry {
                ledger: id,
                entry: EntryId::new(*e),
                payload: payload.clone(),
                lac: None,
            });
        }
    }
    let timeout = client.cfg.add_timeout;
    let results = join_all(per_bookie.into_iter().map(|(b, entries)| {
        let (pool, token) = (client.pool.clone(), token.clone());
        bounded(timeout, async move {
            let n = entries.len();
            let c = pool.get(&b).await?;
            let (tx, mut rx) = c.add_stream_with(token, 4, true).await?;
            tx.send(entries).await?;
            drop(tx); // the bookie ends the stream once it answered everything
            let (mut answered, mut ok) = (0, Vec::new());
            while answered < n {
                let Some(outcomes) = rx.next().await? else { break };
                answered += outcomes.len();
                ok.extend(outcomes.into_iter().filter(|o| o.error.is_none()).map(|o| o.entry));
            }
            Ok::<Vec<u64>, BookieError>(ok)
        })
    }))
    .await;
    let mut copies: HashMap<u64, usize> = HashMap::new();
    for r in results {
        match r {
            Ok(entries) => {
                for e in entries {
                    *copies.entry(e).or_default() += 1;
                }
            }
            Err(err) => tracing::warn!(ledger = %id, error = %err, "recovery add to one bookie failed"),
        }
    }
    let qa = md.ack_quorum as usize;
    for (e, _) in tail {
        let n = copies.get(e).copied().unwrap_or(0);
        if n < qa {
            return Err(BookieError::Transport(format!(
                "recovery of ledger {id}: entry {e} reached {n} bookies, {qa} needed"
            )));
        }
    }
    Ok(())
}

/// Runs a bookie call with a deadline, so one unreachable bookie cannot stall recovery.
async fn bounded<T>(timeout: std::time::Duration, f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(timeout, f)
        .await
        .map_err(|_| BookieError::Transport(format!("no answer within {timeout:?}")))?
}
