//! `strata produce` and `strata consume`: the command-line producer and consumer, built
//! on the Rust SDK (`strata-client`), so they route partitioned topics, batch, apply
//! back-pressure and reconnect exactly as applications do.

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Args, ValueEnum};
use std::io::{BufRead, Write};
use std::time::Duration;
use strata_client::{InitialPosition, Message, ProducerMessage, SendFuture, SubscriptionType};
use tokio::sync::mpsc;

#[derive(Args)]
pub struct ProduceArgs {
    /// Topic, e.g. persistent://public/default/my-topic (or public/default/my-topic).
    topic: String,
    /// Messages to send; without them, one message per line of standard input.
    messages: Vec<String>,
    #[command(flatten)]
    conn: crate::conn_args::ConnArgs,
    /// Send N generated messages of --size bytes instead.
    #[arg(long)]
    count: Option<u64>,
    /// Size of generated messages.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Key of every message (partition routing and Key_Shared).
    #[arg(long)]
    key: Option<String>,
    /// A property of every message, NAME=VALUE (repeatable).
    #[arg(long = "property", value_name = "NAME=VALUE")]
    properties: Vec<String>,
    /// Give up on a message not acknowledged within this many seconds (0: never).
    #[arg(long, default_value_t = 30)]
    send_timeout: u64,
}

/// A subscription type on the command line: `exclusive`, `failover`, `shared` or
/// `key_shared` (also `key-shared`; any case, so `Key_Shared` works too).
#[derive(Clone, Copy, ValueEnum, PartialEq)]
pub enum SubscriptionTypeArg {
    Exclusive,
    Failover,
    Shared,
    #[value(name = "key_shared", alias = "key-shared")]
    KeyShared,
}

impl SubscriptionTypeArg {
    pub fn sdk(self) -> SubscriptionType {
        match self {
            SubscriptionTypeArg::Exclusive => SubscriptionType::Exclusive,
            SubscriptionTypeArg::Failover => SubscriptionType::Failover,
            SubscriptionTypeArg::Shared => SubscriptionType::Shared,
            SubscriptionTypeArg::KeyShared => SubscriptionType::KeyShared,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum InitialPositionArg {
    Earliest,
    Latest,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum OutputArg {
    /// The payload, one message per line.
    Text,
    /// One JSON object per line: id, key, properties, times, redelivery count, payload.
    Json,
}

#[derive(Args)]
pub struct ConsumeArgs {
    /// Topic to consume.
    topic: String,
    /// Subscription name.
    #[arg(short = 's', long)]
    subscription: String,
    /// Subscription type (of a new subscription; an existing one must match).
    #[arg(long = "type", value_enum, ignore_case = true, default_value = "exclusive")]
    sub_type: SubscriptionTypeArg,
    /// Where a new subscription starts.
    #[arg(long, value_enum, ignore_case = true, default_value = "latest")]
    initial_position: InitialPositionArg,
    /// Stop after N messages (default: run until interrupted).
    #[arg(long)]
    count: Option<u64>,
    /// Stop once no message arrived for this many seconds.
    #[arg(long)]
    idle_timeout: Option<u64>,
    /// Print payloads (text) or whole messages (json).
    #[arg(long, value_enum, default_value = "text")]
    output: OutputArg,
    /// Consumer name (orders Failover consumers; shown in stats).
    #[arg(long)]
    name: Option<String>,
    #[command(flatten)]
    conn: crate::conn_args::ConnArgs,
}

/// The messages to send: arguments, generated, or stdin lines (read as they come).
fn message_source(a: &ProduceArgs) -> mpsc::Receiver<std::io::Result<Bytes>> {
    let (tx, rx) = mpsc::channel(1024);
    if !a.messages.is_empty() {
        let msgs: Vec<Bytes> = a.messages.iter().map(|m| Bytes::from(m.clone())).collect();
        tokio::spawn(async move {
            for m in msgs {
                if tx.send(Ok(m)).await.is_err() {
                    return;
                }
            }
        });
    } else if let Some(n) = a.count {
        let size = a.size;
        let pool = crate::perf::random_pool(size, n);
        tokio::spawn(async move {
            for i in 0..n as usize {
                if tx.send(Ok(pool.slice(i % 4096..i % 4096 + size))).await.is_err() {
                    return;
                }
            }
        });
    } else {
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                if tx.blocking_send(line.map(Bytes::from)).is_err() {
                    return;
                }
            }
        });
    }
    rx
}

pub async fn produce(a: ProduceArgs) -> anyhow::Result<()> {
    let mut properties = Vec::new();
    for p in &a.properties {
        let Some((k, v)) = p.split_once('=') else {
            bail!("--property {p:?} must be NAME=VALUE");
        };
        properties.push((k.to_string(), v.to_string()));
    }
    let client = a.conn.connect().await?;
    let producer = client
        .producer(a.topic.clone())
        .send_timeout(Duration::from_secs(a.send_timeout))
        .create()
        .await
        .with_context(|| format!("cannot produce to {}", a.topic))?;
    // Receipts are awaited in order by a second task while sending goes on.
    let (receipts_tx, mut receipts) = mpsc::channel::<SendFuture>(10_000);
    let collector = tokio::spawn(async move {
        let (mut ok, mut failed, mut first_error) = (0u64, 0u64, None);
        while let Some(r) = receipts.recv().await {
            match r.await {
                Ok(_) => ok += 1,
                Err(e) => {
                    failed += 1;
                    first_error.get_or_insert(e);
                }
            }
        }
        (ok, failed, first_error)
    });
    let mut source = message_source(&a);
    while let Some(payload) = source.recv().await {
        let payload = payload.context("reading messages from standard input")?;
        let mut m = ProducerMessage::new(payload);
        if let Some(k) = &a.key {
            m = m.key(k.clone());
        }
        for (k, v) in &properties {
            m = m.property(k.clone(), v.clone());
        }
        let receipt = producer.send_async(m).await?;
        if receipts_tx.send(receipt).await.is_err() {
            break;
        }
    }
    drop(receipts_tx);
    let (ok, failed, first_error) = collector.await?;
    if let Some(e) = first_error {
        bail!("{failed} of {} messages failed; first error: {e}", ok + failed);
    }
    eprintln!("{ok} messages acknowledged");
    Ok(())
}

fn print(out: &mut impl Write, msg: &Message, format: OutputArg) -> std::io::Result<()> {
    match format {
        OutputArg::Text => {
            out.write_all(&msg.payload)?;
            out.write_all(b"\n")
        }
        OutputArg::Json => {
            let ms = |t: std::time::SystemTime| {
                t.duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64)
            };
            let v = serde_json::json!({
                "id": msg.id.to_string(),
                "topic": msg.topic,
                "key": msg.key,
                "properties": msg.properties,
                "publish_time_ms": ms(msg.publish_time),
                "event_time_ms": msg.event_time.map(ms),
                "producer_name": msg.producer_name,
                "redelivery_count": msg.redelivery_count,
                "payload": String::from_utf8_lossy(&msg.payload),
            });
            writeln!(out, "{v}")
        }
    }
}

pub async fn consume(a: ConsumeArgs) -> anyhow::Result<()> {
    let client = a.conn.connect().await?;
    let mut builder = client
        .consumer(a.topic.clone())
        .subscription(a.subscription.clone())
        .subscription_type(a.sub_type.sdk())
        .initial_position(match a.initial_position {
            InitialPositionArg::Earliest => InitialPosition::Earliest,
            InitialPositionArg::Latest => InitialPosition::Latest,
        });
    if let Some(n) = &a.name {
        builder = builder.consumer_name(n.clone());
    }
    if let Some(n) = a.count {
        builder = builder.receiver_queue_size(n.clamp(1, 1000) as u32);
    }
    let consumer = builder
        .subscribe()
        .await
        .with_context(|| format!("cannot subscribe {} to {}", a.subscription, a.topic))?;
    // On stderr, so scripts know when messages can no longer be missed (stdout stays payloads only).
    eprintln!("subscribed to {} as {}", a.topic, a.subscription);
    let want = a.count.unwrap_or(u64::MAX);
    let idle = a.idle_timeout.map(Duration::from_secs);
    let mut received = 0u64;
    let stdout = std::io::stdout();
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    while received < want {
        let next = async {
            match idle {
                Some(d) => tokio::time::timeout(d, consumer.receive()).await.ok(),
                None => Some(consumer.receive().await),
            }
        };
        let msg = tokio::select! {
            m = next => match m {
                Some(m) => m?,
                None => break, // idle timeout
            },
            _ = &mut interrupted => break,
        };
        {
            let mut out = stdout.lock();
            print(&mut out, &msg, a.output)?;
            out.flush()?;
        }
        consumer.ack(&msg).await?;
        received += 1;
    }
    // Sends the last acknowledgements and waits for the broker to take them.
    let _ = tokio::time::timeout(Duration::from_secs(5), consumer.close()).await;
    if let Some(n) = a.count
        && received < n
    {
        bail!("stopped after {received} of {n} messages");
    }
    Ok(())
}
