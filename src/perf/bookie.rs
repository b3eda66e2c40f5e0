//! B1: how fast one bookie makes entries durable. Drives a running bookie with pipelined
//! adds on one stream, keeping `--inflight` entries outstanding, striped over `--ledgers`
//! ledgers, with random (incompressible) payloads.

use super::report::{Summary, latency_histogram, random_pool};
use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Args;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use strata_bookie::client::{BookieClient, NewEntry};
use strata_common::{EntryId, LedgerId};
use tokio::sync::Semaphore;

#[derive(Args)]
pub struct BookiePerfArgs {
    /// Bookie address (host:port).
    #[arg(long)]
    target: String,
    /// Entries to add in total.
    #[arg(long, default_value_t = 100_000)]
    entries: u64,
    /// Payload bytes per entry.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Adds outstanding at once.
    #[arg(long, default_value_t = 256)]
    inflight: usize,
    /// Ledgers to stripe entries over.
    #[arg(long, default_value_t = 1)]
    ledgers: u64,
    /// Print the result as one JSON line (BENCHMARK.md contract).
    #[arg(long)]
    json: bool,
}

/// Most entries put in one AddRequest: enough to amortise per-message costs, small enough
/// to keep the pipeline smooth.
const MAX_BATCH: usize = 64;

pub async fn run(a: BookiePerfArgs) -> anyhow::Result<()> {
    if a.entries == 0 || a.inflight == 0 || a.ledgers == 0 {
        bail!("--entries, --inflight and --ledgers must be greater than 0");
    }
    let client = BookieClient::connect(&a.target).await?;
    let info = client
        .node_info()
        .await
        .context("asking the bookie for its node info")?;
    if info.read_only {
        bail!("bookie {} is read-only: {}", a.target, info.read_only_reason);
    }
    if a.size as u64 > info.max_entry_bytes {
        bail!(
            "--size {} is over the bookie's max_entry_bytes {}",
            a.size,
            info.max_entry_bytes
        );
    }
    // Ledger ids unique to this run, so repeated runs never collide.
    let base = SystemTime::now().duration_since(UNIX_EPOCH)?.as_micros() as u64 * 1000;
    let ledgers: Vec<LedgerId> = (0..a.ledgers)
        .map(|i| LedgerId::new(base + i + 1))
        .collect::<Result<_, _>>()?;
    // A random pool: each entry takes a window at a different offset.
    let pool = random_pool(a.size, base | 1);
    let (tx, mut rx) = client.add_stream(Bytes::from_static(b"strata-perf"), 1024).await?;
    let sent_at: Arc<Vec<AtomicU64>> = Arc::new((0..a.entries).map(|_| AtomicU64::new(0)).collect());
    let permits = Arc::new(Semaphore::new(a.inflight));
    let start = Instant::now();
    let nl = a.ledgers;
    let sender = {
        let sent_at = sent_at.clone();
        let permits = permits.clone();
        let (total, size) = (a.entries, a.size);
        tokio::spawn(async move {
            let mut seq = 0u64;
            while seq < total {
                let first = permits.acquire().await.expect("semaphore open");
                first.forget();
                let mut n = 1;
                while n < MAX_BATCH && seq + (n as u64) < total {
                    match permits.try_acquire() {
                        Ok(p) => {
                            p.forget();
                            n += 1;
                        }
                        Err(_) => break,
                    }
                }
                let now = start.elapsed().as_nanos() as u64;
                let batch: Vec<NewEntry> = (0..n as u64)
                    .map(|k| {
                        let s = seq + k;
                        sent_at[s as usize].store(now.max(1), Ordering::Relaxed);
                        let off = (s as usize * 8) % 4096;
                        NewEntry {
                            ledger: ledgers[(s % nl) as usize],
                            entry: EntryId::new(s / nl),
                            payload: pool.slice(off..off + size),
                            lac: (s / nl).checked_sub(1),
                        }
                    })
                    .collect();
                seq += n as u64;
                tx.send(batch).await?;
            }
            anyhow::Ok(tx)
        })
    };
    let mut hist = latency_histogram();
    let mut done = 0u64;
    let mut errors = 0u64;
    let mut first_error = None;
    let mut last_progress = Instant::now();
    let mut last_done = 0u64;
    while done < a.entries {
        let Some(outcomes) = rx.next().await? else {
            bail!(
                "the bookie closed the add stream after {done} of {} acknowledgements",
                a.entries
            );
        };
        let now = start.elapsed().as_nanos() as u64;
        let n = outcomes.len();
        for o in outcomes {
            let s = o.entry * nl + (o.ledger - base - 1);
            let t0 = sent_at.get(s as usize).map_or(0, |t| t.load(Ordering::Relaxed));
            hist.record(((now.saturating_sub(t0)) / 1000).max(1)).ok();
            if let Some((code, msg)) = o.error {
                errors += 1;
                first_error.get_or_insert(format!("{code}: {msg}"));
            }
        }
        done += n as u64;
        permits.add_permits(n);
        if last_progress.elapsed() >= Duration::from_secs(1) {
            let rate = (done - last_done) as f64 / last_progress.elapsed().as_secs_f64();
            eprintln!("progress: {done}/{} acknowledged, {rate:.0} entries/s", a.entries);
            last_progress = Instant::now();
            last_done = done;
        }
    }
    let elapsed = start.elapsed();
    drop(sender.await??);
    if let Some(e) = first_error {
        bail!("{errors} of {} adds failed; first: {e}", a.entries);
    }
    let mut s = Summary::new("B1", a.entries, a.entries * a.size as u64, elapsed, &hist);
    s.extra.insert("entries_per_sec".into(), s.msgs_per_sec.into());
    s.extra.insert("size".into(), a.size.into());
    s.extra.insert("inflight".into(), a.inflight.into());
    s.extra.insert("ledgers".into(), a.ledgers.into());
    s.print(a.json);
    Ok(())
}
