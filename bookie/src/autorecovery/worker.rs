//! The replication worker: takes under-replicated ledgers one at a time (an ephemeral lock
//! per ledger, so two workers never copy the same one) and moves every fragment off its
//! bad bookies.
//!
//! For one fragment and one bad bookie in it: choose a writable bookie outside the
//! fragment; copy the entries the bad bookie held (its write-set stripes) from the other
//! replicas — or from the bad bookie itself when it still answers (a draining one does),
//! so a ledger with a single copy can be decommissioned too — checking each entry's
//! checksum on read; write them with recovery adds and wait for every acknowledgement;
//! only then replace the bookie in the fragment by compare-and-set.

use super::{AutoRecoveryConfig, BookieView, Metrics, UnderReplicated, decode, now_ms};
use crate::client::NewEntry;
use crate::error::{BookieError, Result};
use crate::ledger::{LedgerClient, LedgerMetadata, LedgerState};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use strata_common::{EntryId, ErrorCode, LedgerId};
use strata_meta::{Condition, MetaError, keys};
use tokio_util::sync::CancellationToken;

/// Entries copied per round trip (and bytes, whichever comes first).
const CHUNK_ENTRIES: usize = 1024;
const CHUNK_BYTES: u64 = 8 << 20;
/// Chunks written but not yet acknowledged while the next is read.
const CHUNKS_IN_FLIGHT: usize = 3;

/// Rate limit in bytes per second (0: none).
struct Throttle {
    rate: u64,
    next: Instant,
}

impl Throttle {
    async fn take(&mut self, bytes: u64) {
        if self.rate == 0 {
            return;
        }
        let now = Instant::now();
        let start = self.next.max(now);
        self.next = start + Duration::from_secs_f64(bytes as f64 / self.rate as f64);
        tokio::time::sleep_until(start.into()).await;
    }
}

/// Takes and repairs marked ledgers until `shutdown`.
pub async fn run(client: LedgerClient, cfg: AutoRecoveryConfig, metrics: Arc<Metrics>, shutdown: CancellationToken) {
    let store = client.store.clone();
    let poll = cfg
        .audit_interval
        .clamp(Duration::from_millis(200), Duration::from_secs(5));
    let mut throttle = Throttle {
        rate: cfg.max_bytes_per_sec,
        next: Instant::now(),
    };
    let mut session = None;
    while !shutdown.is_cancelled() {
        if session.as_ref().is_none_or(|s: &strata_meta::Session| s.is_lost()) {
            session = match store.session(cfg.session_ttl).await {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, "replication worker: cannot open a metadata session; retrying");
                    None
                }
            };
        }
        if let Some(s) = &session
            && let Err(e) = pass(&client, &cfg, &metrics, s, &mut throttle, &shutdown).await
        {
            metrics.errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "replication worker: pass failed; retrying");
        }
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            _ = shutdown.cancelled() => {}
        }
    }
    if let Some(s) = session {
        s.close();
    }
}

/// One look at the marks: repairs every ledger it can lock.
async fn pass(
    client: &LedgerClient,
    cfg: &AutoRecoveryConfig,
    metrics: &Metrics,
    session: &strata_meta::Session,
    throttle: &mut Throttle,
    shutdown: &CancellationToken,
) -> Result<()> {
    let store = client.store.clone();
    let marks = store.list(&keys::under_replicated_prefix()).await?;
    if marks.is_empty() {
        return Ok(());
    }
    let view = BookieView::read(store.as_ref()).await?;
    for (key, v) in marks {
        if shutdown.is_cancelled() || session.is_lost() {
            break;
        }
        let Some(id) = key.rsplit('/').next().and_then(|s| s.parse::<u64>().ok()) else {
            continue;
        };
        let Ok(ledger) = LedgerId::new(id) else { continue };
        let Some(mark) = decode::<UnderReplicated>(&key, &v.value) else {
            continue;
        };
        let lock = keys::replication_lock(id);
        match store
            .put_ephemeral(session, &lock, bytes::Bytes::from(cfg.id.clone()), Condition::Absent)
            .await
        {
            Ok(_) => {}
            Err(MetaError::BadVersion(_)) => continue, // another worker has it
            Err(e) => return Err(e.into()),
        }
        // Dropping a copy half-way is safe (nothing names the target yet), so shutdown
        // does not wait for a large fragment.
        let res = tokio::select! {
            r = repair_ledger(client, ledger, &mark, &view, cfg, metrics, throttle) => r,
            _ = shutdown.cancelled() => Err(BookieError::ShuttingDown),
        };
        let _ = store.delete(&lock, Condition::Any).await;
        match res {
            Ok(true) => match store.delete(&key, Condition::Version(v.version)).await {
                Ok(_) | Err(MetaError::BadVersion(_)) => {}
                Err(e) => return Err(e.into()),
            },
            Ok(false) => {}
            Err(e) => {
                metrics.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(ledger = %ledger, error = %e, "re-replication failed; retrying later");
            }
        }
    }
    Ok(())
}

/// Moves every fragment of `id` off its bad bookies. `Ok(true)`: the ledger no longer
/// names a bad bookie (or is gone); `Ok(false)`: something must wait (a writer's open
/// fragment inside its grace period).
async fn repair_ledger(
    client: &LedgerClient,
    id: LedgerId,
    mark: &UnderReplicated,
    view: &BookieView,
    cfg: &AutoRecoveryConfig,
    metrics: &Metrics,
    throttle: &mut Throttle,
) -> Result<bool> {
    let mut recovered = false;
    loop {
        let md = match client.metadata(id).await {
            Ok((md, _)) => md,
            Err(BookieError::NoSuchLedger(_)) => return Ok(true),
            Err(e) => return Err(e),
        };
        let now = now_ms();
        let bad = |b: &str| view.is_bad(b, now, cfg.lost_grace);
        let n = md.fragments.len();
        let mut clean = true;
        let mut must_recover = false;
        for k in 0..n {
            let frag = &md.fragments[k];
            let writers = k + 1 == n && md.state != LedgerState::Closed;
            for (i, b) in frag.bookies.iter().enumerate() {
                if !bad(b) {
                    continue;
                }
                if writers {
                    // The writer's fragment: its own ensemble change moves it off a bad
                    // bookie on its next add; an idle writer is closed after the grace.
                    if now.saturating_sub(mark.since_ms) >= cfg.open_ledger_grace.as_millis() as u64 && !recovered {
                        must_recover = true;
                    } else {
                        clean = false;
                    }
                    continue;
                }
                let end = match md.fragments.get(k + 1) {
                    Some(next) => next.first_entry.checked_sub(1),
                    None => md.last_entry,
                };
                replace_in_fragment(client, id, &md, k, i, end, view, now, cfg, metrics, throttle).await?;
            }
        }
        if must_recover {
            tracing::info!(ledger = %id, "recovering an open ledger whose writer still names a bad bookie, to re-replicate it");
            client.recover(id).await?;
            metrics.recovered_open_ledgers.fetch_add(1, Ordering::Relaxed);
            recovered = true;
            continue;
        }
        return Ok(clean);
    }
}

/// Copies the entries bookie `i` of fragment `k` holds to a new bookie and puts that
/// bookie in its place. `end` is the fragment's last entry (`None` or below its first
/// entry: no entries).
#[allow(clippy::too_many_arguments)]
async fn replace_in_fragment(
    client: &LedgerClient,
    id: LedgerId,
    md: &LedgerMetadata,
    k: usize,
    i: usize,
    end: Option<u64>,
    view: &BookieView,
    now: u64,
    cfg: &AutoRecoveryConfig,
    metrics: &Metrics,
    throttle: &mut Throttle,
) -> Result<()> {
    let frag = &md.fragments[k];
    let old = frag.bookies[i].clone();
    let candidates: Vec<String> = view
        .writable()
        .into_iter()
        .filter(|b| !frag.bookies.contains(b))
        .collect();
    if candidates.is_empty() {
        return Err(BookieError::NotEnoughBookies {
            needed: 1,
            available: 0,
        });
    }
    let target = candidates[(crate::ledger::random_u64() % candidates.len() as u64) as usize].clone();
    let started = Instant::now();
    let mut copied_entries = 0u64;
    let mut copied_bytes = 0u64;
    if let Some(end) = end.filter(|e| *e >= frag.first_entry) {
        // Entries bookie `i` holds: those whose write set includes index `i`.
        let e = md.ensemble_size as u64;
        let qw = md.write_quorum as u64;
        let holds = |entry: u64| (i as u64 + e - entry % e) % e < qw;
        // Sources in order of preference: good replicas, then bad ones still answering.
        let sources = |entry: u64| -> Vec<String> {
            let mut s: Vec<String> = md.write_set(entry).into_iter().filter(|b| *b != target).collect();
            s.sort_by_key(|b| view.is_bad(b, now, cfg.lost_grace));
            s
        };
        let dest = client.pool.get(&target).await?;
        let (tx, mut rx) = dest.add_stream_with(md.token_bytes(), 4, true).await?;
        let mut in_flight: std::collections::VecDeque<(usize, usize, u64)> = Default::default();
        let mut next = frag.first_entry;
        while next <= end {
            // Gather one chunk.
            let mut chunk: Vec<NewEntry> = Vec::new();
            let mut bytes = 0u64;
            while next <= end && chunk.len() < CHUNK_ENTRIES && bytes < CHUNK_BYTES {
                if !holds(next) {
                    next += 1;
                    continue;
                }
                let run_end = if md.write_quorum == md.ensemble_size {
                    end.min(next + (CHUNK_ENTRIES - chunk.len()) as u64 - 1)
                } else {
                    next
                };
                let got = read_run(client, id, next, run_end, &sources(next)).await?;
                for entry in got {
                    bytes += entry.payload.len() as u64;
                    next = entry.entry + 1;
                    chunk.push(NewEntry {
                        ledger: id,
                        entry: EntryId::new(entry.entry),
                        payload: entry.payload,
                        lac: None,
                    });
                }
            }
            if chunk.is_empty() {
                continue;
            }
            throttle.take(bytes).await;
            let n = chunk.len();
            tx.send(chunk).await?;
            copied_entries += n as u64;
            copied_bytes += bytes;
            in_flight.push_back((n, n, bytes));
            // Read the next chunk while these are written; at most a few chunks unanswered.
            while in_flight.len() > CHUNKS_IN_FLIGHT {
                await_chunk(&mut rx, &mut in_flight, &target, id, metrics).await?;
            }
        }
        while !in_flight.is_empty() {
            await_chunk(&mut rx, &mut in_flight, &target, id, metrics).await?;
        }
        drop(tx);
    }
    // Every entry is durable on the target: name it in the fragment.
    let key = keys::ledger(id.get());
    loop {
        let (mut cur, version) = match client.metadata(id).await {
            Ok(x) => x,
            Err(BookieError::NoSuchLedger(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let still_ours = cur.fragments.get(k).is_some_and(|f| {
            f.first_entry == frag.first_entry && f.bookies.get(i) == Some(&old) && !f.bookies.contains(&target)
        }) && (k + 1 < cur.fragments.len() || cur.state == LedgerState::Closed);
        if !still_ours {
            return Ok(()); // changed meanwhile; the next pass looks again
        }
        cur.fragments[k].bookies[i] = target.clone();
        match client.store.put(&key, cur.encode(), Condition::Version(version)).await {
            Ok(_) => break,
            Err(MetaError::BadVersion(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    metrics.rereplicated_fragments.fetch_add(1, Ordering::Relaxed);
    tracing::info!(ledger = %id, fragment_first_entry = frag.first_entry, from = %old, to = %target,
        entries = copied_entries, bytes = copied_bytes, elapsed = ?started.elapsed(), "fragment re-replicated");
    Ok(())
}

/// Waits until the oldest chunk in flight (entries, entries unanswered, bytes) is
/// acknowledged in full by the target; any refused entry fails the copy.
async fn await_chunk(
    rx: &mut crate::client::AddReceiver,
    in_flight: &mut std::collections::VecDeque<(usize, usize, u64)>,
    target: &str,
    id: LedgerId,
    metrics: &Metrics,
) -> Result<()> {
    let want = in_flight.len().saturating_sub(1);
    while in_flight.len() > want {
        let Some(outcomes) = rx.next().await? else {
            return Err(BookieError::Transport(format!(
                "bookie {target} ended the add stream while copying ledger {id}"
            )));
        };
        if let Some(o) = outcomes.iter().find(|o| o.error.is_some()) {
            let (code, msg) = o.error.clone().expect("checked");
            return Err(BookieError::Transport(format!(
                "bookie {target} refused entry {} of ledger {id} ({code:?}): {msg}",
                o.entry
            )));
        }
        // Answers come in order of the adds.
        let mut got = outcomes.len();
        while got > 0 {
            let Some(front) = in_flight.front_mut() else {
                return Err(BookieError::Transport(format!(
                    "bookie {target} answered more adds than were sent for ledger {id}"
                )));
            };
            let t = got.min(front.1);
            front.1 -= t;
            got -= t;
            if front.1 == 0 {
                let (n, _, bytes) = in_flight.pop_front().expect("front exists");
                metrics.rereplicated_entries.fetch_add(n as u64, Ordering::Relaxed);
                metrics.rereplicated_bytes.fetch_add(bytes, Ordering::Relaxed);
            }
        }
    }
    Ok(())
}

/// Reads entries `first..=last` (at least `first`) from the first source that has them,
/// each checked against its checksum by the bookie client.
async fn read_run(
    client: &LedgerClient,
    id: LedgerId,
    first: u64,
    last: u64,
    sources: &[String],
) -> Result<Vec<crate::client::Entry>> {
    let mut last_err = None;
    for b in sources {
        let res = match client.pool.get(b).await {
            Ok(c) => c.read(id, first, last).await,
            Err(e) => Err(e),
        };
        match res {
            Ok(entries) if entries.first().is_some_and(|e| e.entry == first) => return Ok(entries),
            Ok(_) => last_err = Some(BookieError::NoSuchEntry(id.get(), first)),
            Err(e) => {
                if e.code() != ErrorCode::NoSuchEntry {
                    client.pool.evict(b);
                }
                tracing::debug!(ledger = %id, bookie = %b, entry = first, error = %e, "copy read failed; trying the next replica");
                last_err = Some(e);
            }
        }
    }
    Err(last_err.unwrap_or(BookieError::NoSuchEntry(id.get(), first)))
}
