//! W1 (BENCHMARK.md): peak durable publish rate — one producer, batches of up to
//! `--batch-bytes` (128 KiB), up to `--inflight` messages outstanding, random payloads.
//! Batching is adaptive rather than timed: a partial batch goes out only when nothing is
//! outstanding (so messages never wait, which is within BENCHMARK.md's 1 ms linger).

use super::report::{Summary, latency_histogram, random_pool};
use anyhow::{Context, bail};
use clap::Args;
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use strata_proto::v1 as pb;

#[derive(Args)]
pub struct ProducePerfArgs {
    #[arg(long, default_value = "http://127.0.0.1:6650", env = "STRATA_URL")]
    url: String,
    #[arg(long, default_value = "persistent://public/default/perf")]
    topic: String,
    #[arg(long, default_value_t = 500_000)]
    messages: u64,
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Messages outstanding at once.
    #[arg(long, default_value_t = 1000)]
    inflight: u64,
    /// Most payload bytes per batch.
    #[arg(long, default_value_t = 128 * 1024)]
    batch_bytes: usize,
    #[arg(long)]
    json: bool,
}

pub async fn run(a: ProducePerfArgs) -> anyhow::Result<()> {
    if a.messages == 0 || a.inflight == 0 || a.size == 0 {
        bail!("--messages, --inflight and --size must be greater than 0");
    }
    let (tx, mut resp) = crate::client_cmd::open_producer(&a.url, &a.topic, 1024).await?;
    let pool = random_pool(a.size, 42);
    let per_batch = (a.batch_bytes / a.size).max(1) as u64;
    let mut hist = latency_histogram();
    let start = Instant::now();
    // (sequence id, messages, time the first message of the batch was "sent").
    let mut in_flight: VecDeque<(u64, u64, Vec<Instant>)> = VecDeque::new();
    let (mut sent, mut done, mut seq) = (0u64, 0u64, 0u64);
    let mut outstanding = 0u64;
    let mut last_progress = Instant::now();
    while done < a.messages {
        // Fill batches while the window allows.
        while sent < a.messages && outstanding < a.inflight {
            let n = per_batch.min(a.messages - sent).min(a.inflight - outstanding);
            if n < per_batch && sent + n < a.messages && outstanding > 0 {
                break; // let receipts free the window instead of sending a tiny batch
            }
            let batch_start = Instant::now();
            let messages = (0..n)
                .map(|i| {
                    let off = ((sent + i) as usize * 8) % 4096;
                    pb::OutgoingMessage {
                        payload: pool.slice(off..off + a.size),
                        ..Default::default()
                    }
                })
                .collect();
            tx.send(pb::ProduceRequest {
                request: Some(pb::produce_request::Request::Send(pb::SendBatch {
                    sequence_id: seq,
                    messages,
                })),
            })
            .await?;
            in_flight.push_back((seq, n, vec![batch_start]));
            seq += 1;
            sent += n;
            outstanding += n;
        }
        match resp.message().await? {
            Some(pb::ProduceResponse {
                response: Some(pb::produce_response::Response::Receipt(r)),
            }) => {
                let (s, n, t) = in_flight.pop_front().context("receipt without a send")?;
                if s != r.sequence_id {
                    bail!("receipt for batch {} arrived while {s} was expected", r.sequence_id);
                }
                let us = (t[0].elapsed().as_micros() as u64).max(1);
                for _ in 0..n {
                    hist.record(us).ok();
                }
                done += n;
                outstanding -= n;
            }
            Some(pb::ProduceResponse {
                response: Some(pb::produce_response::Response::Error(e)),
            }) => bail!("send failed: {}", e.message),
            _ => bail!("the broker closed the stream after {done} messages"),
        }
        if last_progress.elapsed() >= Duration::from_secs(1) {
            eprintln!("progress: {done}/{} acknowledged", a.messages);
            last_progress = Instant::now();
        }
    }
    let elapsed = start.elapsed();
    let mut s = Summary::new("W1", a.messages, a.messages * a.size as u64, elapsed, &hist);
    s.extra.insert("size".into(), a.size.into());
    s.extra.insert("inflight".into(), a.inflight.into());
    s.extra.insert("topic".into(), a.topic.into());
    s.print(a.json);
    Ok(())
}
