//! Drives NATS JetStream the way `strata perf` drives Strata, for side-by-side figures:
//!
//! - `produce N SIZE`: publishes N random SIZE-byte messages to stream `BENCH`
//!   (subject `bench`, file storage, R1), up to 1,000 publish acks outstanding (W1's shape);
//! - `consume N`: one durable pull consumer drains N messages from the start, fetching in
//!   batches of 1,000 and acknowledging every message (AckExplicit) — W5;
//! - `fanout N SIZE K`: K pull consumers created first, then a producer publishes N
//!   messages while each consumer reads all N, acknowledging each — W3; the figure is
//!   the total delivered (K × N) over the time until the last consumer has them all.
//!
//! Prints one JSON line (BENCHMARK.md's contract: workload, messages, bytes, seconds,
//! msgs_per_sec, mb_per_sec).
//! Usage: nats-bench URL produce|consume|fanout N [SIZE] [K]   (`ping 0`: connect only)

use async_nats::jetstream::{self, consumer::AckPolicy, consumer::pull, stream};
use bytes::Bytes;
use futures_util::StreamExt;
use std::collections::VecDeque;
use std::time::Instant;

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const STREAM: &str = "BENCH";
const SUBJECT: &str = "bench";

fn payloads(size: usize) -> Vec<Bytes> {
    // A pool of incompressible payloads (xorshift), cycled.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..64)
        .map(|_| {
            let mut v = Vec::with_capacity(size);
            while v.len() < size {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                v.extend_from_slice(&x.to_le_bytes());
            }
            v.truncate(size);
            Bytes::from(v)
        })
        .collect()
}

fn report(workload: &str, messages: u64, bytes: u64, started: Instant) {
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "workload": workload,
            "system": "nats-jetstream",
            "messages": messages,
            "bytes": bytes,
            "seconds": secs,
            "msgs_per_sec": messages as f64 / secs,
            "mb_per_sec": bytes as f64 / secs / 1e6,
        })
    );
}

async fn produce(js: &jetstream::Context, n: u64, size: usize) -> Res<()> {
    let pool = payloads(size);
    let mut acks = VecDeque::new();
    for i in 0..n {
        acks.push_back(js.publish(SUBJECT, pool[i as usize % pool.len()].clone()).await?);
        if acks.len() >= 1000 {
            acks.pop_front().expect("non-empty").await?;
        }
    }
    for a in acks {
        a.await?;
    }
    Ok(())
}

async fn drain(js: &jetstream::Context, name: &str, n: u64) -> Res<u64> {
    let s = js.get_stream(STREAM).await?;
    let consumer: pull::Stream = s
        .create_consumer(pull::Config {
            durable_name: Some(name.to_string()),
            ack_policy: AckPolicy::Explicit,
            ..Default::default()
        })
        .await?
        .stream()
        .max_messages_per_batch(1000)
        .messages()
        .await?;
    let mut consumer = consumer;
    let (mut got, mut bytes) = (0u64, 0u64);
    while got < n {
        let m = consumer.next().await.ok_or("the consumer's stream ended")??;
        bytes += m.payload.len() as u64;
        m.ack().await?;
        got += 1;
    }
    Ok(bytes)
}

#[tokio::main]
async fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: nats-bench URL produce|consume|fanout N [SIZE] [K]";
    let (url, mode) = (args.get(1).ok_or(usage)?, args.get(2).ok_or(usage)?);
    let n: u64 = args.get(3).ok_or(usage)?.parse()?;
    let size: usize = args.get(4).map_or(Ok(1024), |s| s.parse())?;
    let k: usize = args.get(5).map_or(Ok(4), |s| s.parse())?;
    let client = async_nats::connect(url.as_str()).await?;
    if mode == "ping" {
        return Ok(());
    }
    let js = jetstream::new(client);
    if mode == "produce" || mode == "fanout" {
        let _ = js.delete_stream(STREAM).await;
        js.create_stream(stream::Config {
            name: STREAM.into(),
            subjects: vec![SUBJECT.into()],
            storage: stream::StorageType::File,
            num_replicas: 1,
            ..Default::default()
        })
        .await?;
    }
    match mode.as_str() {
        "produce" => {
            let started = Instant::now();
            produce(&js, n, size).await?;
            report("W1", n, n * size as u64, started);
        }
        "consume" => {
            let started = Instant::now();
            let bytes = drain(&js, "w5", n).await?;
            report("W5", n, bytes, started);
        }
        "fanout" => {
            let started = Instant::now();
            let mut readers = Vec::new();
            for i in 0..k {
                let js = js.clone();
                readers.push(tokio::spawn(async move { drain(&js, &format!("w3-{i}"), n).await }));
            }
            produce(&js, n, size).await?;
            let mut bytes = 0;
            for r in readers {
                bytes += r.await.map_err(|e| e.to_string())??;
            }
            report("W3", n * k as u64, bytes, started);
        }
        _ => return Err(usage.into()),
    }
    Ok(())
}
