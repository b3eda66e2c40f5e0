//! W5 (BENCHMARK.md): catch-up read — one consumer drains a backlog from the earliest
//! position. Latency is end to end (publish time → delivery), which for a backlog mostly
//! measures its age; the figure that matters is msgs/s.

use super::report::{Summary, latency_histogram};
use anyhow::bail;
use clap::Args;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use strata_proto::v1 as pb;

#[derive(Args)]
pub struct ConsumePerfArgs {
    #[arg(long, default_value = "http://127.0.0.1:6650", env = "STRATA_URL")]
    url: String,
    #[arg(long, default_value = "persistent://public/default/perf")]
    topic: String,
    /// Messages to receive.
    #[arg(long, default_value_t = 1_000_000)]
    messages: u64,
    /// Subscription (a new name starts from the earliest message).
    #[arg(long, default_value = "perf-consume")]
    subscription: String,
    /// Permits granted at a time.
    #[arg(long, default_value_t = 20_000)]
    permits: u32,
    #[arg(long)]
    json: bool,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub async fn run(a: ConsumePerfArgs) -> anyhow::Result<()> {
    if a.messages == 0 || a.permits == 0 {
        bail!("--messages and --permits must be greater than 0");
    }
    let subscribe = pb::Subscribe {
        topic: a.topic.clone(),
        subscription: a.subscription.clone(),
        r#type: pb::SubscriptionType::Exclusive as i32,
        initial_position: pb::InitialPosition::Earliest as i32,
        consumer_name: "perf".into(),
        ack_timeout_ms: 0,
    };
    let (tx, mut resp) = crate::client_cmd::open_consumer(&a.url, subscribe, 1024).await?;
    let flow = |permits| pb::ConsumeRequest {
        request: Some(pb::consume_request::Request::Flow(pb::Flow { permits })),
    };
    tx.send(flow(a.permits)).await?;
    let mut hist = latency_histogram();
    let (mut received, mut bytes, mut granted) = (0u64, 0u64, a.permits as u64);
    let start = Instant::now();
    let mut last_progress = Instant::now();
    while received < a.messages {
        let Some(r) = resp.message().await? else {
            bail!("the broker closed the stream after {received} messages");
        };
        let Some(pb::consume_response::Response::Messages(m)) = r.response else {
            continue;
        };
        let now = now_ms();
        let last = m.messages.last().and_then(|x| x.id);
        for msg in &m.messages {
            hist.record(now.saturating_sub(msg.publish_time_ms).max(1) * 1000).ok();
            bytes += msg.payload.len() as u64;
        }
        received += m.messages.len() as u64;
        // One cumulative ack per delivery batch.
        if let Some(id) = last {
            tx.send(pb::ConsumeRequest {
                request: Some(pb::consume_request::Request::Ack(pb::Ack {
                    ids: vec![id],
                    cumulative: true,
                })),
            })
            .await?;
        }
        if granted - received < (a.permits / 2) as u64 {
            tx.send(flow(a.permits)).await?;
            granted += a.permits as u64;
        }
        if last_progress.elapsed() >= Duration::from_secs(1) {
            eprintln!("progress: {received}/{} received", a.messages);
            last_progress = Instant::now();
        }
    }
    let elapsed = start.elapsed();
    let mut s = Summary::new("W5", received, bytes, elapsed, &hist);
    s.extra.insert("topic".into(), a.topic.into());
    s.print(a.json);
    Ok(())
}
