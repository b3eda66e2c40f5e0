//! W6 (BENCHMARK.md): many topics — `--topics` producers, one per topic, each publishing
//! `--rate` messages per second for `--seconds`. Reports publish latency (send call →
//! receipt) over every message and, for each `--metrics-url` (a broker's, a bookie's or
//! standalone's `/metrics`), the server's resident memory once the producers are open and
//! at the end, and the CPU seconds it spent during the run (from the standard `process_*`
//! metrics).
//!
//! Producers start spread over one message interval so the load is even, not in lock-step.

use super::produce::pace;
use super::report::{Summary, latency_histogram, random_pool};
use anyhow::{Context, bail};
use clap::Args;
use futures_util::{StreamExt, TryStreamExt};
use std::time::{Duration, Instant};
use strata_client::SendFuture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

#[derive(Args)]
pub struct TopicsPerfArgs {
    #[command(flatten)]
    conn: crate::conn_args::ConnArgs,
    /// Topics are `<prefix>-0` … `<prefix>-<topics-1>`.
    #[arg(long, default_value = "persistent://public/default/w6")]
    prefix: String,
    #[arg(long, default_value_t = 1000)]
    topics: u32,
    /// Messages per second of each producer.
    #[arg(long, default_value_t = 10)]
    rate: u32,
    #[arg(long, default_value_t = 60)]
    seconds: u32,
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// A server's Prometheus page to sample before and after the run (repeatable), e.g.
    /// `http://127.0.0.1:8080/metrics`.
    #[arg(long = "metrics-url")]
    metrics_urls: Vec<String>,
    #[arg(long)]
    json: bool,
}

/// Resident bytes and CPU seconds from a server's `/metrics`.
async fn sample(url: &str) -> anyhow::Result<(f64, f64)> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("--metrics-url {url}: only http:// URLs are supported"))?;
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/metrics".to_string()), |(h, p)| (h, format!("/{p}")));
    let fetch = async {
        let mut conn = tokio::net::TcpStream::connect(host).await?;
        conn.write_all(format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
            .await?;
        let mut body = String::new();
        conn.read_to_string(&mut body).await?;
        std::io::Result::Ok(body)
    };
    let page = tokio::time::timeout(Duration::from_secs(10), fetch)
        .await
        .with_context(|| format!("{url} did not answer within 10 s"))?
        .with_context(|| format!("cannot read {url}"))?;
    let value = |name: &str| {
        page.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<f64>().ok())
            .with_context(|| format!("{url} has no {name} (is it a Strata /metrics page?)"))
    };
    Ok((
        value("process_resident_memory_bytes")?,
        value("process_cpu_seconds_total")?,
    ))
}

pub async fn run(a: TopicsPerfArgs) -> anyhow::Result<()> {
    if a.topics == 0 || a.rate == 0 || a.seconds == 0 || a.size == 0 {
        bail!("--topics, --rate, --seconds and --size must be greater than 0");
    }
    let client = a.conn.connect().await?;
    eprintln!("opening {} producers", a.topics);
    let producers: Vec<_> = futures_util::stream::iter(0..a.topics)
        .map(|i| {
            let topic = format!("{}-{i}", a.prefix);
            let client = client.clone();
            async move {
                client
                    .producer(topic.clone())
                    .create()
                    .await
                    .with_context(|| format!("cannot open a producer on {topic}"))
            }
        })
        .buffered(64)
        .try_collect()
        .await?;
    let mut before = Vec::new();
    for url in &a.metrics_urls {
        before.push(sample(url).await?);
    }
    let per_topic = u64::from(a.rate) * u64::from(a.seconds);
    let pool = random_pool(a.size, 6);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (i, producer) in producers.into_iter().enumerate() {
        let (tx, mut rx) = mpsc::channel::<(Instant, SendFuture)>(1024);
        let collector = tokio::spawn(async move {
            let mut hist = latency_histogram();
            while let Some((sent, receipt)) = rx.recv().await {
                receipt.await?;
                hist.record((sent.elapsed().as_micros() as u64).max(1)).ok();
            }
            anyhow::Ok(hist)
        });
        let pool = pool.clone();
        let (rate, size, topics) = (u64::from(a.rate), a.size, u64::from(a.topics));
        let sender = tokio::spawn(async move {
            // Spread over one message interval, so the load is even and the run lasts
            // `--seconds`.
            let first = start + Duration::from_secs_f64(i as f64 / topics as f64 / rate as f64);
            for n in 0..per_topic {
                pace(first, n, rate).await;
                let off = (i * 8 + n as usize * 64) % 4096;
                let sent = Instant::now();
                let receipt = producer.send_async(pool.slice(off..off + size)).await?;
                if tx.send((sent, receipt)).await.is_err() {
                    break;
                }
            }
            anyhow::Ok(())
        });
        tasks.push((sender, collector));
    }
    let progress = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            eprintln!("progress: {} s", start.elapsed().as_secs());
        }
    });
    let mut hist = latency_histogram();
    for (sender, collector) in tasks {
        sender.await??;
        hist.add(collector.await??).ok();
    }
    progress.abort();
    let elapsed = start.elapsed();
    let done = hist.len();
    let mut s = Summary::new("W6", done, done * a.size as u64, elapsed, &hist);
    s.extra.insert("topics".into(), a.topics.into());
    s.extra.insert("rate_per_topic".into(), a.rate.into());
    s.extra.insert("size".into(), a.size.into());
    let mut servers = Vec::new();
    let mb = |b: f64| (b / 1e6 * 10.0).round() / 10.0;
    for (url, (rss0, cpu0)) in a.metrics_urls.iter().zip(before) {
        let (rss, cpu1) = sample(url).await?;
        servers.push(serde_json::json!({
            "metrics_url": url,
            "rss_mb_before": mb(rss0),
            "rss_mb": mb(rss),
            "cpu_seconds": ((cpu1 - cpu0) * 100.0).round() / 100.0,
        }));
    }
    s.extra.insert("servers".into(), servers.into());
    s.print(a.json);
    Ok(())
}
