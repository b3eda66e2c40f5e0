//! B1 across bookies: a replicated ledger written through the ledger client, with
//! `--inflight` appends outstanding, against the bookies registered in the metadata store.

use super::report::{Summary, latency_histogram, random_pool};
use anyhow::{Context, bail};
use clap::Args;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use std::time::{Duration, Instant};
use strata_bookie::ledger::{LedgerClient, LedgerClientConfig};

#[derive(Args)]
pub struct LedgerPerfArgs {
    /// Metadata store the bookies registered in (etcd://host:port[,…], local:///path).
    #[arg(long)]
    metadata_url: String,
    /// Ensemble size E.
    #[arg(long, default_value_t = 3)]
    ensemble: u32,
    /// Write quorum Qw.
    #[arg(long, default_value_t = 3)]
    write_quorum: u32,
    /// Ack quorum Qa.
    #[arg(long, default_value_t = 2)]
    ack_quorum: u32,
    /// Entries to append.
    #[arg(long, default_value_t = 100_000)]
    entries: u64,
    /// Payload bytes per entry.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Appends outstanding at once.
    #[arg(long, default_value_t = 256)]
    inflight: usize,
    /// Print the result as one JSON line (BENCHMARK.md contract).
    #[arg(long)]
    json: bool,
}

pub async fn run(a: LedgerPerfArgs) -> anyhow::Result<()> {
    if a.entries == 0 || a.inflight == 0 {
        bail!("--entries and --inflight must be greater than 0");
    }
    let store = strata_meta::connect(&a.metadata_url)
        .await
        .with_context(|| format!("connecting to the metadata store {}", a.metadata_url))?;
    let client = LedgerClient::new(
        store,
        LedgerClientConfig {
            max_pending_entries: a.inflight,
            ..Default::default()
        },
    );
    let writer = client
        .create(a.ensemble, a.write_quorum, a.ack_quorum)
        .await
        .context("creating the ledger")?;
    let pool = random_pool(a.size, 0x9E37_79B9_7F4A_7C15u64 ^ a.size as u64);
    let mut hist = latency_histogram();
    let start = Instant::now();
    let mut inflight = FuturesUnordered::new();
    let (mut sent, mut done) = (0u64, 0u64);
    let mut last_progress = Instant::now();
    while done < a.entries {
        while sent < a.entries && inflight.len() < a.inflight {
            let off = (sent as usize * 8) % 4096;
            let t0 = Instant::now();
            let fut = writer.submit(pool.slice(off..off + a.size)).await?;
            inflight.push(async move { (fut.await, t0) });
            sent += 1;
        }
        let Some((r, t0)) = inflight.next().await else { break };
        r.context("append failed")?;
        hist.record((t0.elapsed().as_micros() as u64).max(1)).ok();
        done += 1;
        if last_progress.elapsed() >= Duration::from_secs(1) {
            eprintln!("progress: {done}/{} acknowledged", a.entries);
            last_progress = Instant::now();
        }
    }
    let elapsed = start.elapsed();
    writer.close().await.context("closing the ledger")?;
    let mut s = Summary::new("B1-ledger", a.entries, a.entries * a.size as u64, elapsed, &hist);
    s.extra.insert("entries_per_sec".into(), s.msgs_per_sec.into());
    s.extra.insert("size".into(), a.size.into());
    s.extra.insert("inflight".into(), a.inflight.into());
    s.extra.insert("ensemble".into(), a.ensemble.into());
    s.extra.insert("write_quorum".into(), a.write_quorum.into());
    s.extra.insert("ack_quorum".into(), a.ack_quorum.into());
    s.extra.insert("ledger".into(), writer.id().get().into());
    s.print(a.json);
    Ok(())
}
