//! W4 and W5 (BENCHMARK.md): consumers drain a backlog from the earliest position.
//! W5: one consumer (Exclusive, cumulative acks every 1000 messages). W4: `--consumers N
//! --type shared`, every message acknowledged individually. The figure is acknowledged
//! msgs/s; latency is publish → delivery, which for a backlog mostly measures its age.

use super::report::{Summary, latency_histogram};
use crate::client_cmd::SubscriptionTypeArg;
use anyhow::bail;
use clap::Args;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};
use strata_client::InitialPosition;

#[derive(Args)]
pub struct ConsumePerfArgs {
    #[command(flatten)]
    conn: crate::conn_args::ConnArgs,
    #[arg(long, default_value = "persistent://public/default/perf")]
    topic: String,
    /// Messages to receive (in total, over all consumers).
    #[arg(long, default_value_t = 1_000_000)]
    messages: u64,
    /// Subscription (a new name starts from the earliest message).
    #[arg(long, default_value = "perf-consume")]
    subscription: String,
    #[arg(long = "type", value_enum, ignore_case = true, default_value = "exclusive")]
    sub_type: SubscriptionTypeArg,
    /// Consumers on the subscription.
    #[arg(long, default_value_t = 1)]
    consumers: u32,
    /// Each consumer's receiver queue.
    #[arg(long, default_value_t = 5000)]
    queue: u32,
    #[arg(long)]
    json: bool,
}

pub fn age_us(publish: SystemTime) -> u64 {
    SystemTime::now()
        .duration_since(publish)
        .map_or(1, |d| d.as_micros() as u64)
        .max(1)
}

pub async fn run(a: ConsumePerfArgs) -> anyhow::Result<()> {
    if a.messages == 0 || a.consumers == 0 {
        bail!("--messages and --consumers must be greater than 0");
    }
    if a.consumers > 1 && matches!(a.sub_type, SubscriptionTypeArg::Exclusive) {
        bail!("an Exclusive subscription takes one consumer; use --type shared or key_shared with --consumers");
    }
    let client = a.conn.connect().await?;
    let received = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let cumulative = matches!(
        a.sub_type,
        SubscriptionTypeArg::Exclusive | SubscriptionTypeArg::Failover
    );
    let mut consumers = Vec::new();
    for i in 0..a.consumers {
        consumers.push(
            client
                .consumer(a.topic.clone())
                .subscription(a.subscription.clone())
                .subscription_type(a.sub_type.sdk())
                .initial_position(InitialPosition::Earliest)
                .consumer_name(format!("perf-{i}"))
                .receiver_queue_size(a.queue)
                .subscribe()
                .await?,
        );
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    // Set once the total is received, so every consumer stops waiting (no timer per
    // message: that showed in profiles of W5).
    let done = tokio_util::sync::CancellationToken::new();
    for c in consumers {
        let (received, bytes, total, done) = (received.clone(), bytes.clone(), a.messages, done.clone());
        tasks.push(tokio::spawn(async move {
            let mut hist = latency_histogram();
            let (mut since_ack, mut last) = (0u32, None);
            while received.load(Ordering::Relaxed) < total {
                let m = tokio::select! {
                    m = c.receive() => m?,
                    _ = done.cancelled() => continue, // re-check the total
                };
                hist.record(age_us(m.publish_time)).ok();
                bytes.fetch_add(m.payload.len() as u64, Ordering::Relaxed);
                if cumulative {
                    since_ack += 1;
                    if since_ack >= 1000 {
                        c.ack_cumulative(&m).await?;
                        since_ack = 0;
                    } else {
                        last = Some(m);
                    }
                } else {
                    c.ack(&m).await?;
                }
                if received.fetch_add(1, Ordering::Relaxed) + 1 >= total {
                    done.cancel();
                }
            }
            if let Some(m) = last.filter(|_| since_ack > 0) {
                c.ack_cumulative(&m).await?;
            }
            c.close().await?;
            anyhow::Ok(hist)
        }));
    }
    let progress = {
        let (received, total) = (received.clone(), a.messages);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                eprintln!("progress: {}/{total} received", received.load(Ordering::Relaxed));
            }
        })
    };
    let mut hist = latency_histogram();
    for t in tasks {
        hist.add(t.await??).ok();
    }
    progress.abort();
    let elapsed = start.elapsed();
    let n = received.load(Ordering::Relaxed);
    let workload = if a.consumers > 1 { "W4" } else { "W5" };
    let mut s = Summary::new(workload, n, bytes.load(Ordering::Relaxed), elapsed, &hist);
    s.extra.insert("consumers".into(), a.consumers.into());
    s.extra.insert("topic".into(), a.topic.into());
    s.print(a.json);
    Ok(())
}
