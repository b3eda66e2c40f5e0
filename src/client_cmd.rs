//! `strata produce` and `strata consume`: the command-line producer and consumer, speaking
//! the public gRPC API (`strata/v1/strata.proto`).

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Args, ValueEnum};
use std::io::{BufRead, Write};
use strata_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const DEFAULT_URL: &str = "http://127.0.0.1:6650";
/// Messages per batch when producing from stdin or `--count`.
const BATCH: usize = 100;
/// Permits a consumer grants at a time.
const PERMITS: u32 = 1000;

#[derive(Args)]
pub struct ProduceArgs {
    /// Topic, e.g. persistent://public/default/my-topic (or public/default/my-topic).
    topic: String,
    /// Messages to send; without them, one message per line of standard input.
    messages: Vec<String>,
    /// Broker (or any broker of a cluster).
    #[arg(long, default_value = DEFAULT_URL, env = "STRATA_URL")]
    url: String,
    /// Send N generated messages of --size bytes instead.
    #[arg(long)]
    count: Option<u64>,
    /// Size of generated messages.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Key of every message (routing and Key_Shared).
    #[arg(long)]
    key: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum SubscriptionTypeArg {
    Exclusive,
    Failover,
    Shared,
    KeyShared,
}

#[derive(Clone, Copy, ValueEnum)]
enum InitialPositionArg {
    Earliest,
    Latest,
}

#[derive(Args)]
pub struct ConsumeArgs {
    /// Topic to consume.
    topic: String,
    /// Subscription name.
    #[arg(short = 's', long)]
    subscription: String,
    #[arg(long = "type", value_enum, default_value = "exclusive")]
    sub_type: SubscriptionTypeArg,
    /// Where a new subscription starts.
    #[arg(long, value_enum, default_value = "latest")]
    initial_position: InitialPositionArg,
    /// Stop after N messages (default: run until interrupted).
    #[arg(long)]
    count: Option<u64>,
    #[arg(long, default_value = DEFAULT_URL, env = "STRATA_URL")]
    url: String,
}

fn explain(e: &pb::Error) -> String {
    let code =
        pb::ErrorCode::try_from(e.code).map_or_else(|_| format!("code {}", e.code), |c| c.as_str_name().to_string());
    format!("{code}: {}", e.message)
}

async fn owner_url(url: &str, topic: &str) -> anyhow::Result<String> {
    let mut lookup = pb::lookup_client::LookupClient::connect(url.to_string())
        .await
        .with_context(|| {
            format!("cannot reach Strata at {url}; is `strata standalone` running? (--url sets the address)")
        })?;
    let r = lookup
        .lookup_topic(pb::LookupTopicRequest {
            topic: topic.to_string(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("looking up {topic}: {}", s.message()))?;
    Ok(r.into_inner().broker_url)
}

/// Looks the topic up, opens a produce stream to its broker and waits for `opened`.
/// Returns the request sender (`buffer` requests deep) and the response stream.
pub async fn open_producer(
    url: &str,
    topic: &str,
    buffer: usize,
) -> anyhow::Result<(mpsc::Sender<pb::ProduceRequest>, tonic::Streaming<pb::ProduceResponse>)> {
    let url = owner_url(url, topic).await?;
    let mut client = pb::producer_client::ProducerClient::connect(url.clone())
        .await
        .with_context(|| format!("cannot reach the topic's broker at {url}"))?
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    let (tx, rx) = mpsc::channel(buffer);
    tx.send(pb::ProduceRequest {
        request: Some(pb::produce_request::Request::Open(pb::OpenProducer {
            topic: topic.to_string(),
            producer_name: String::new(),
        })),
    })
    .await?;
    let mut responses = client.produce(ReceiverStream::new(rx)).await?.into_inner();
    match responses.message().await? {
        Some(pb::ProduceResponse {
            response: Some(pb::produce_response::Response::Opened(_)),
        }) => Ok((tx, responses)),
        Some(pb::ProduceResponse {
            response: Some(pb::produce_response::Response::Error(e)),
        }) => bail!("cannot produce to {topic}: {}", explain(&e)),
        _ => bail!("the broker closed the produce stream"),
    }
}

pub async fn produce(a: ProduceArgs) -> anyhow::Result<()> {
    let payloads: Vec<Bytes> = if !a.messages.is_empty() {
        a.messages.iter().map(|m| Bytes::from(m.clone())).collect()
    } else if let Some(n) = a.count {
        let pool = crate::perf::random_pool(a.size, n);
        (0..n as usize)
            .map(|i| pool.slice(i % 4096..i % 4096 + a.size))
            .collect()
    } else {
        std::io::stdin()
            .lock()
            .lines()
            .map(|l| l.map(Bytes::from))
            .collect::<Result<_, _>>()
            .context("reading messages from standard input")?
    };
    let (tx, mut responses) = open_producer(&a.url, &a.topic, 64).await?;
    let total = payloads.len();
    let key = a.key.unwrap_or_default();
    let sender = tokio::spawn(async move {
        for (seq, chunk) in payloads.chunks(BATCH).enumerate() {
            let send = pb::SendBatch {
                sequence_id: seq as u64,
                messages: chunk
                    .iter()
                    .map(|p| pb::OutgoingMessage {
                        payload: p.clone(),
                        key: key.clone(),
                        ..Default::default()
                    })
                    .collect(),
            };
            if tx
                .send(pb::ProduceRequest {
                    request: Some(pb::produce_request::Request::Send(send)),
                })
                .await
                .is_err()
            {
                break;
            }
        }
        // Dropping the sender ends the request stream once everything is queued.
    });
    let (mut acked, mut failed) = (0usize, Vec::new());
    while acked + failed.len() < total.div_ceil(BATCH).max(1) && total > 0 {
        match responses.message().await? {
            Some(pb::ProduceResponse {
                response: Some(pb::produce_response::Response::Receipt(_)),
            }) => acked += 1,
            Some(pb::ProduceResponse {
                response: Some(pb::produce_response::Response::Error(e)),
            }) => failed.push(explain(&e)),
            Some(_) => {}
            None => bail!("the broker closed the stream before acknowledging every message"),
        }
    }
    sender.await?;
    if let Some(first) = failed.first() {
        bail!(
            "{} of {} batches failed; first error: {first}",
            failed.len(),
            total.div_ceil(BATCH)
        );
    }
    eprintln!("{total} messages acknowledged");
    Ok(())
}

/// Looks the topic up, opens a consume stream to its broker and waits for `subscribed`.
/// Returns the request sender (`buffer` requests deep) and the response stream.
pub async fn open_consumer(
    url: &str,
    subscribe: pb::Subscribe,
    buffer: usize,
) -> anyhow::Result<(mpsc::Sender<pb::ConsumeRequest>, tonic::Streaming<pb::ConsumeResponse>)> {
    let url = owner_url(url, &subscribe.topic).await?;
    let mut client = pb::consumer_client::ConsumerClient::connect(url.clone())
        .await
        .with_context(|| format!("cannot reach the topic's broker at {url}"))?
        .max_decoding_message_size(64 << 20);
    let (tx, rx) = mpsc::channel(buffer);
    let (topic, sub) = (subscribe.topic.clone(), subscribe.subscription.clone());
    tx.send(pb::ConsumeRequest {
        request: Some(pb::consume_request::Request::Subscribe(subscribe)),
    })
    .await?;
    let mut responses = client.consume(ReceiverStream::new(rx)).await?.into_inner();
    match responses.message().await? {
        Some(pb::ConsumeResponse {
            response: Some(pb::consume_response::Response::Subscribed(_)),
        }) => Ok((tx, responses)),
        Some(pb::ConsumeResponse {
            response: Some(pb::consume_response::Response::Error(e)),
        }) => bail!("cannot subscribe {sub} to {topic}: {}", explain(&e)),
        _ => bail!("the broker closed the consume stream"),
    }
}

pub async fn consume(a: ConsumeArgs) -> anyhow::Result<()> {
    let sub_type = match a.sub_type {
        SubscriptionTypeArg::Exclusive => pb::SubscriptionType::Exclusive,
        SubscriptionTypeArg::Failover => pb::SubscriptionType::Failover,
        SubscriptionTypeArg::Shared => pb::SubscriptionType::Shared,
        SubscriptionTypeArg::KeyShared => pb::SubscriptionType::KeyShared,
    };
    let initial = match a.initial_position {
        InitialPositionArg::Earliest => pb::InitialPosition::Earliest,
        InitialPositionArg::Latest => pb::InitialPosition::Latest,
    };
    let subscribe = pb::Subscribe {
        topic: a.topic.clone(),
        subscription: a.subscription.clone(),
        r#type: sub_type as i32,
        initial_position: initial as i32,
        consumer_name: String::new(),
        ack_timeout_ms: 0,
    };
    let (tx, mut responses) = open_consumer(&a.url, subscribe, 64).await?;
    let want = a.count.unwrap_or(u64::MAX);
    let flow = |permits: u32| pb::ConsumeRequest {
        request: Some(pb::consume_request::Request::Flow(pb::Flow { permits })),
    };
    let first_permits = PERMITS.min(want.min(u32::MAX as u64) as u32);
    tx.send(flow(first_permits)).await?;
    let (mut received, mut granted) = (0u64, first_permits as u64);
    let stdout = std::io::stdout();
    while received < want {
        let Some(resp) = responses.message().await? else {
            bail!("the broker closed the stream after {received} messages");
        };
        match resp.response {
            Some(pb::consume_response::Response::Messages(m)) => {
                let mut out = stdout.lock();
                let mut ids = Vec::with_capacity(m.messages.len());
                for msg in m.messages {
                    out.write_all(&msg.payload)?;
                    out.write_all(b"\n")?;
                    ids.extend(msg.id);
                    received += 1;
                }
                out.flush()?;
                tx.send(pb::ConsumeRequest {
                    request: Some(pb::consume_request::Request::Ack(pb::Ack { ids, cumulative: false })),
                })
                .await?;
                // Keep the consumer fed: grant more once half the permits are used.
                if granted - received < (PERMITS / 2) as u64 && granted < want {
                    let more = PERMITS.min((want - granted).min(u32::MAX as u64) as u32);
                    tx.send(flow(more)).await?;
                    granted += more as u64;
                }
            }
            Some(pb::consume_response::Response::Error(e)) => eprintln!("warning: {}", explain(&e)),
            _ => {}
        }
    }
    // Close our side and wait (bounded) for the broker to end the stream: it has then
    // processed every acknowledgement sent before.
    drop(tx);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while let Ok(Some(_)) = responses.message().await {}
    })
    .await;
    Ok(())
}
