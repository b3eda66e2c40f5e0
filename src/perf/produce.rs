//! W1 (BENCHMARK.md): peak durable publish rate — one SDK producer (batches of up to
//! 1000 messages / 128 KiB, 1 ms linger), up to `--inflight` messages outstanding, random
//! payloads. Latency is per message: `send_async` call → receipt. `--rate` paces sends
//! (for latency under a fixed load).

use super::report::{Summary, latency_histogram, random_pool};
use anyhow::bail;
use clap::Args;
use std::time::{Duration, Instant};
use strata_client::SendFuture;
use tokio::sync::mpsc;

#[derive(Args)]
pub struct ProducePerfArgs {
    #[command(flatten)]
    conn: crate::conn_args::ConnArgs,
    #[arg(long, default_value = "persistent://public/default/perf")]
    topic: String,
    #[arg(long, default_value_t = 500_000)]
    messages: u64,
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Messages outstanding at once (the producer's max pending messages); W1 is "up to
    /// 1,000 in flight".
    #[arg(long, default_value_t = 1_000)]
    inflight: usize,
    /// Most payload bytes per batch.
    #[arg(long, default_value_t = 128 * 1024)]
    batch_bytes: usize,
    /// Publish at this many messages per second (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    #[arg(long)]
    json: bool,
}

/// Waits until message `i` is due at `rate` msgs/s from `start` (no wait when rate is 0).
pub async fn pace(start: Instant, i: u64, rate: u64) {
    if rate > 0 {
        let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        }
    }
}

pub async fn run(a: ProducePerfArgs) -> anyhow::Result<()> {
    if a.messages == 0 || a.inflight == 0 || a.size == 0 {
        bail!("--messages, --inflight and --size must be greater than 0");
    }
    let client = a.conn.connect().await?;
    let producer = client
        .producer(a.topic.clone())
        .max_pending_messages(a.inflight)
        .batch_max_bytes(a.batch_bytes)
        .create()
        .await?;
    let pool = random_pool(a.size, 42);
    let (tx, mut rx) = mpsc::channel::<(Instant, SendFuture)>(a.inflight);
    let total = a.messages;
    let collector = tokio::spawn(async move {
        let mut hist = latency_histogram();
        let (mut done, mut last_progress) = (0u64, Instant::now());
        while let Some((sent, receipt)) = rx.recv().await {
            receipt.await?;
            hist.record((sent.elapsed().as_micros() as u64).max(1)).ok();
            done += 1;
            if last_progress.elapsed() >= Duration::from_secs(1) {
                eprintln!("progress: {done}/{total} acknowledged");
                last_progress = Instant::now();
            }
        }
        anyhow::Ok((done, hist))
    });
    let start = Instant::now();
    for i in 0..a.messages {
        pace(start, i, a.rate).await;
        let off = (i as usize * 8) % 4096;
        let sent = Instant::now();
        let receipt = producer.send_async(pool.slice(off..off + a.size)).await?;
        if tx.send((sent, receipt)).await.is_err() {
            break;
        }
    }
    drop(tx);
    let (done, hist) = collector.await??;
    let elapsed = start.elapsed();
    let mut s = Summary::new("W1", done, done * a.size as u64, elapsed, &hist);
    s.extra.insert("size".into(), a.size.into());
    s.extra.insert("inflight".into(), a.inflight.into());
    s.extra.insert("rate".into(), a.rate.into());
    s.extra.insert("topic".into(), a.topic.into());
    s.print(a.json);
    Ok(())
}
