//! W2 and W3 (BENCHMARK.md): a producer and tailing consumers at once.
//! W2: `--rate 20000` for 30 s with one subscription — end-to-end latency (send call →
//! receipt by the consumer; the send time travels in the payload's first 8 bytes).
//! W3: `--subscriptions 4` at full speed — total delivered msgs/s over all subscriptions.
//! Subscriptions are created (at the latest position) before the first send.

use super::produce::pace;
use super::report::{Summary, latency_histogram, random_pool};
use crate::client_cmd::SubscriptionTypeArg;
use anyhow::bail;
use clap::Args;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use strata_client::{InitialPosition, SendFuture};
use tokio::sync::mpsc;

#[derive(Args)]
pub struct E2ePerfArgs {
    #[command(flatten)]
    conn: crate::conn_args::ConnArgs,
    #[arg(long, default_value = "persistent://public/default/perf-e2e")]
    topic: String,
    /// Messages to publish.
    #[arg(long, default_value_t = 600_000)]
    messages: u64,
    /// Payload bytes (at least 8: the send time).
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Publish at this many messages per second (0: as fast as possible).
    #[arg(long, default_value_t = 20_000)]
    rate: u64,
    /// Subscriptions, each receiving every message.
    #[arg(long, default_value_t = 1)]
    subscriptions: u32,
    #[arg(long = "type", value_enum, ignore_case = true, default_value = "exclusive")]
    sub_type: SubscriptionTypeArg,
    /// Producer's outstanding messages.
    #[arg(long, default_value_t = 10_000)]
    inflight: usize,
    #[arg(long)]
    json: bool,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

pub async fn run(a: E2ePerfArgs) -> anyhow::Result<()> {
    if a.messages == 0 || a.subscriptions == 0 || a.size < 8 {
        bail!("--messages and --subscriptions must be greater than 0 and --size at least 8");
    }
    let client = a.conn.connect().await?;
    let run_id = format!("{:x}", now_us());
    let mut consumers = Vec::new();
    for i in 0..a.subscriptions {
        consumers.push(
            client
                .consumer(a.topic.clone())
                .subscription(format!("perf-e2e-{run_id}-{i}"))
                .subscription_type(a.sub_type.sdk())
                .initial_position(InitialPosition::Latest)
                .receiver_queue_size(5000)
                .subscribe()
                .await?,
        );
    }
    let producer = client
        .producer(a.topic.clone())
        .max_pending_messages(a.inflight)
        .create()
        .await?;
    let delivered = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in consumers {
        let (delivered, total) = (delivered.clone(), a.messages);
        tasks.push(tokio::spawn(async move {
            let mut hist = latency_histogram();
            let mut n = 0u64;
            while n < total {
                let m = c.receive().await?;
                let sent = u64::from_le_bytes(m.payload[..8].try_into().expect("8 bytes"));
                hist.record(now_us().saturating_sub(sent).max(1)).ok();
                c.ack(&m).await?;
                n += 1;
                delivered.fetch_add(1, Ordering::Relaxed);
            }
            c.close().await?;
            anyhow::Ok(hist)
        }));
    }
    let pool = random_pool(a.size, 7);
    let (tx, mut rx) = mpsc::channel::<SendFuture>(a.inflight);
    let receipts = tokio::spawn(async move {
        while let Some(r) = rx.recv().await {
            r.await?;
        }
        anyhow::Ok(())
    });
    let progress = {
        let (delivered, total) = (delivered.clone(), a.messages * a.subscriptions as u64);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                eprintln!("progress: {}/{total} delivered", delivered.load(Ordering::Relaxed));
            }
        })
    };
    let start = Instant::now();
    for i in 0..a.messages {
        pace(start, i, a.rate).await;
        let off = (i as usize * 8) % 4096;
        let mut payload = pool[off..off + a.size].to_vec();
        payload[..8].copy_from_slice(&now_us().to_le_bytes());
        if tx.send(producer.send_async(payload).await?).await.is_err() {
            break;
        }
    }
    drop(tx);
    receipts.await??;
    let mut hist = latency_histogram();
    for t in tasks {
        hist.add(t.await??).ok();
    }
    progress.abort();
    let elapsed = start.elapsed();
    let n = delivered.load(Ordering::Relaxed);
    let workload = if a.subscriptions > 1 { "W3" } else { "W2" };
    let mut s = Summary::new(workload, n, n * a.size as u64, elapsed, &hist);
    s.extra.insert("rate".into(), a.rate.into());
    s.extra.insert("subscriptions".into(), a.subscriptions.into());
    s.extra.insert("published".into(), a.messages.into());
    s.extra.insert("topic".into(), a.topic.into());
    s.print(a.json);
    Ok(())
}
