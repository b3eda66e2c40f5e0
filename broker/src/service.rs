//! The public gRPC services of a broker (`strata/v1/strata.proto`): Lookup, Producer and
//! Consumer, over [`Broker`]. Wire ↔ domain conversions happen here and nowhere else;
//! every error reaches the client as a public `ErrorCode` with a message naming what to do.
//!
//! Streams: a producer's receipts come back in send order while many sends are in flight
//! (bounded); a consumer gets at most the permits it granted. A failed send or ack is
//! reported and the stream goes on; a failed open ends it.
//!
//! A consumer gets messages in the form it subscribed with: `Messages` (the default, for
//! clients generated from the .proto) or `Entries` (stored batches as read, split by the
//! client; runs of less than half a batch still go as messages). Either way each message
//! takes one permit and is pending and acknowledged on its own; acknowledgements may name
//! ranges.

use crate::authz::{Action, Resource};
use crate::broker::Broker;
use crate::dispatch::{Delivery, DispatchError, SubType, held_bytes};
use crate::error::BrokerError;
use crate::metrics::ConsumeStage;
use crate::subscription::InitialPosition;
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use strata_common::{EntryId, LedgerId, MessageId, Position, SubscriptionName, TopicName};
use strata_net::auth::Principal;
use strata_proto::broker::v1::StoredMessage;
use strata_proto::v1 as pb;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status, Streaming};

/// Largest payload total of one Messages response.
const RESPONSE_BYTES: usize = 4 << 20;
/// Sends one producer may have in flight before the broker stops reading its stream.
const MAX_PENDING_SENDS: usize = 1000;
/// gRPC metadata key carrying the numeric public error code.
pub const ERROR_CODE_METADATA_KEY: &str = "strata-error-code";

pub(crate) fn code_of(e: &BrokerError) -> pb::ErrorCode {
    match e {
        BrokerError::TopicNotFound(_) => pb::ErrorCode::TopicNotFound,
        BrokerError::AlreadyExists(_) => pb::ErrorCode::AlreadyExists,
        BrokerError::NotEmpty(_) => pb::ErrorCode::NotEmpty,
        BrokerError::NotFound(_) => pb::ErrorCode::NotFound,
        BrokerError::NotOwner(_) | BrokerError::Fenced(..) => pb::ErrorCode::NotOwner,
        BrokerError::Closed(_) | BrokerError::Unavailable(_) => pb::ErrorCode::ServiceNotReady,
        BrokerError::TooLarge { .. } => pb::ErrorCode::MessageTooLarge,
        BrokerError::InvalidArgument(_) => pb::ErrorCode::InvalidArgument,
        BrokerError::ProducerBusy(_) => pb::ErrorCode::ProducerBusy,
        BrokerError::LimitExceeded(_) => pb::ErrorCode::LimitExceeded,
        BrokerError::PermissionDenied(_) => pb::ErrorCode::PermissionDenied,
        BrokerError::SubscriptionTypeMismatch(_) => pb::ErrorCode::SubscriptionTypeMismatch,
        BrokerError::Dispatch(DispatchError::ConsumerBusy) => pb::ErrorCode::ConsumerBusy,
        BrokerError::Dispatch(DispatchError::UnknownMessage(_)) => pb::ErrorCode::UnknownMessageId,
        BrokerError::Dispatch(_) => pb::ErrorCode::InvalidArgument,
        BrokerError::Metadata(_) | BrokerError::Corruption(_) | BrokerError::Storage(_) | BrokerError::Offload(_) => {
            pb::ErrorCode::StorageError
        }
    }
}

fn error(code: pb::ErrorCode, message: impl Into<String>, sequence_id: Option<u64>) -> pb::Error {
    pb::Error {
        code: code as i32,
        message: message.into(),
        sequence_id,
    }
}

fn broker_error(e: &BrokerError, sequence_id: Option<u64>) -> pb::Error {
    error(code_of(e), e.to_string(), sequence_id)
}

pub(crate) fn status(code: pb::ErrorCode, message: String) -> Status {
    let grpc = match code {
        pb::ErrorCode::TopicNotFound | pb::ErrorCode::NotFound => tonic::Code::NotFound,
        pb::ErrorCode::AlreadyExists => tonic::Code::AlreadyExists,
        pb::ErrorCode::NotEmpty | pb::ErrorCode::ProducerBusy => tonic::Code::FailedPrecondition,
        pb::ErrorCode::LimitExceeded => tonic::Code::ResourceExhausted,
        pb::ErrorCode::Unauthenticated => tonic::Code::Unauthenticated,
        pb::ErrorCode::PermissionDenied => tonic::Code::PermissionDenied,
        pb::ErrorCode::ServiceNotReady | pb::ErrorCode::StorageError => tonic::Code::Unavailable,
        _ => tonic::Code::InvalidArgument,
    };
    let mut s = Status::new(grpc, message);
    if let Ok(v) = (code as i32).to_string().parse() {
        s.metadata_mut().insert(ERROR_CODE_METADATA_KEY, v);
    }
    s
}

fn parse_topic(s: &str) -> Result<TopicName, pb::Error> {
    TopicName::parse(s).map_err(|e| error(pb::ErrorCode::InvalidTopicName, e.to_string(), None))
}

fn to_wire_id(id: MessageId) -> pb::MessageId {
    pb::MessageId {
        ledger_id: id.position.ledger.get(),
        entry_id: id.position.entry.get(),
        batch_index: id.batch_index,
        partition: id.partition,
    }
}

pub(crate) fn from_wire_id(id: &pb::MessageId) -> Result<MessageId, pb::Error> {
    let ledger = LedgerId::new(id.ledger_id)
        .map_err(|e| error(pb::ErrorCode::InvalidArgument, format!("message id: {e}"), None))?;
    Ok(MessageId {
        position: Position {
            ledger,
            entry: EntryId::new(id.entry_id),
        },
        batch_index: id.batch_index,
        partition: id.partition,
    })
}

/// The service implementation.
#[derive(Clone)]
pub struct BrokerService {
    broker: Arc<Broker>,
    shutdown: CancellationToken,
}

impl BrokerService {
    pub fn new(broker: Arc<Broker>, shutdown: CancellationToken) -> Self {
        Self { broker, shutdown }
    }
}

#[tonic::async_trait]
impl pb::lookup_server::Lookup for BrokerService {
    async fn lookup_topic(
        &self,
        request: Request<pb::LookupTopicRequest>,
    ) -> Result<Response<pb::LookupTopicResponse>, Status> {
        let principal = request.extensions().get::<Principal>().cloned();
        let r = request.into_inner();
        let topic = parse_topic(&r.topic).map_err(|e| status(pb::ErrorCode::InvalidTopicName, e.message))?;
        authorize(
            &self.broker,
            principal.as_ref(),
            &[Action::Produce, Action::Consume],
            &topic,
        )
        .await
        .map_err(|e| status(code_of(&e), e.to_string()))?;
        let partitions = self
            .broker
            .partitions(&topic)
            .await
            .map_err(|e| status(code_of(&e), e.to_string()))?;
        if partitions > 0 {
            return Ok(Response::new(pb::LookupTopicResponse {
                broker_url: String::new(),
                partitions,
            }));
        }
        self.broker
            .metrics
            .lookups
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let broker_url = self
            .broker
            .lookup(&topic)
            .await
            .map_err(|e| status(code_of(&e), e.to_string()))?;
        Ok(Response::new(pb::LookupTopicResponse {
            broker_url,
            partitions: 0,
        }))
    }
}

type ProduceStream = ReceiverStream<Result<pb::ProduceResponse, Status>>;
type ConsumeStream = ReceiverStream<Result<pb::ConsumeResponse, Status>>;

fn produce_error(e: pb::Error) -> pb::ProduceResponse {
    pb::ProduceResponse {
        response: Some(pb::produce_response::Response::Error(e)),
    }
}

fn consume_error(e: pb::Error) -> pb::ConsumeResponse {
    pb::ConsumeResponse {
        response: Some(pb::consume_response::Response::Error(e)),
    }
}

#[tonic::async_trait]
impl pb::producer_server::Producer for BrokerService {
    type ProduceStream = ProduceStream;

    async fn produce(
        &self,
        request: Request<Streaming<pb::ProduceRequest>>,
    ) -> Result<Response<ProduceStream>, Status> {
        let principal = request.extensions().get::<Principal>().cloned();
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(256);
        let broker = self.broker.clone();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let open = match inbound.message().await {
                Ok(Some(pb::ProduceRequest {
                    request: Some(pb::produce_request::Request::Open(o)),
                })) => o,
                Ok(_) => {
                    let _ = tx
                        .send(Ok(produce_error(error(
                            pb::ErrorCode::InvalidArgument,
                            "the first request of a produce stream must be `open`",
                            None,
                        ))))
                        .await;
                    return;
                }
                Err(_) => return,
            };
            let topic = match parse_topic(&open.topic) {
                Ok(t) => t,
                Err(e) => {
                    let _ = tx.send(Ok(produce_error(e))).await;
                    return;
                }
            };
            if let Err(e) = authorize(&broker, principal.as_ref(), &[Action::Produce], &topic).await {
                let _ = tx.send(Ok(produce_error(broker_error(&e, None)))).await;
                return;
            }
            let loaded = match broker.topic(&topic, true).await {
                Ok(t) => t,
                Err(e) => {
                    let _ = tx.send(Ok(produce_error(broker_error(&e, None)))).await;
                    return;
                }
            };
            if open.producer_name.len() > crate::topic::MAX_PRODUCER_NAME_BYTES {
                let e = error(
                    pb::ErrorCode::InvalidArgument,
                    format!(
                        "producer_name is {} bytes; at most {} are allowed (it is stored with every batch)",
                        open.producer_name.len(),
                        crate::topic::MAX_PRODUCER_NAME_BYTES
                    ),
                    None,
                );
                let _ = tx.send(Ok(produce_error(e))).await;
                return;
            }
            let name = if open.producer_name.is_empty() {
                format!("producer-{:016x}", strata_bookie::ledger::random_u64())
            } else {
                open.producer_name
            };
            let _connected = match loaded.topic.producer_connected(&name) {
                Ok(g) => g,
                Err(e) => {
                    let _ = tx.send(Ok(produce_error(broker_error(&e, None)))).await;
                    return;
                }
            };
            let opened = pb::ProduceResponse {
                response: Some(pb::produce_response::Response::Opened(pb::ProducerOpened {
                    producer_name: name.clone(),
                    last_sequence_id: loaded.topic.dedup().last_sequence(&name),
                    max_message_bytes: loaded.topic.limits().max_message_bytes as u64,
                })),
            };
            if tx.send(Ok(opened)).await.is_err() {
                return;
            }
            let mut pending = FuturesOrdered::new();
            let mut reading = true;
            // Over a publish rate (the topic's or this producer's), the stream is not read
            // until then: flow control makes the client's sends wait, none fails.
            let producer_limiter = crate::rate::Limiter::new(loaded.topic.client_limits().publish_rate_per_producer);
            let mut resume_at: Option<tokio::time::Instant> = None;
            // Once the client is gone, the sends already started are still driven to the
            // end (never dropped half-way), so deduplication learns where they landed.
            let mut client_gone = false;
            let mut closed = std::pin::pin!(loaded.closed());
            loop {
                tokio::select! {
                    Some((seq, count, bytes, started, r)) = pending.next(), if !pending.is_empty() => {
                        let m = &broker.metrics;
                        m.publish_latency.observe(std::time::Instant::elapsed(&started));
                        let r: Result<crate::topic::Published, BrokerError> = r;
                        match &r {
                            Ok(p) if p.duplicate => {
                                m.duplicates.fetch_add(1, Relaxed);
                            }
                            Ok(_) => {
                                m.msgs_in.fetch_add(u64::from(count), Relaxed);
                                m.bytes_in.fetch_add(bytes, Relaxed);
                                let t = loaded.topic.counters();
                                t.msgs_in.fetch_add(u64::from(count), Relaxed);
                                t.bytes_in.fetch_add(bytes, Relaxed);
                            }
                            Err(_) => {
                                m.publish_errors.fetch_add(1, Relaxed);
                            }
                        }
                        // Losing the topic (unloaded, taken over) or its storage ends the
                        // stream after the sends in flight are answered, so the client
                        // reconnects and resends in order; a topic whose storage failed is
                        // unloaded so that reconnect loads it afresh.
                        if let Err(e) = &r
                            && !matches!(e, BrokerError::TooLarge { .. } | BrokerError::InvalidArgument(_))
                        {
                            reading = false;
                            let (broker, name) = (broker.clone(), loaded.topic.name().clone());
                            tokio::spawn(async move { broker.unload_if_failed(&name).await });
                        }
                        let resp = match r {
                            Ok(p) => pb::ProduceResponse {
                                response: Some(pb::produce_response::Response::Receipt(pb::SendReceipt {
                                    sequence_id: seq,
                                    first_id: p.first.map(to_wire_id),
                                    count,
                                    duplicate: p.duplicate,
                                })),
                            },
                            Err(e) => produce_error(broker_error(&e, Some(seq))),
                        };
                        if !client_gone && tx.send(Ok(resp)).await.is_err() {
                            client_gone = true;
                            reading = false;
                        }
                    }
                    _ = shutdown.cancelled(), if reading => reading = false,
                    // The topic was unloaded (handed over): stop taking sends; the stream
                    // ends once those in flight are answered and the client reconnects.
                    _ = &mut closed, if reading => reading = false,
                    _ = tokio::time::sleep_until(resume_at.unwrap_or_else(tokio::time::Instant::now)), if resume_at.is_some() => {
                        // Another producer may have used the topic's budget meanwhile.
                        let wait = crate::rate::wait_all(
                            &[loaded.topic.publish_limiter(), &producer_limiter],
                            std::time::Instant::now(),
                        );
                        resume_at = (!wait.is_zero()).then(|| tokio::time::Instant::now() + wait);
                    }
                    msg = inbound.message(), if reading && resume_at.is_none() && pending.len() < MAX_PENDING_SENDS => match msg {
                        Ok(Some(pb::ProduceRequest { request: Some(pb::produce_request::Request::Send(send)) })) => {
                            let count = send.messages.len() as u32;
                            let messages: Vec<StoredMessage> = send
                                .messages
                                .into_iter()
                                .map(|m| StoredMessage {
                                    payload: m.payload,
                                    key: m.key,
                                    properties: m.properties,
                                    event_time_ms: m.event_time_ms,
                                })
                                .collect();
                            let seq = send.sequence_id;
                            let bytes: u64 = messages.iter().map(|m| m.payload.len() as u64).sum();
                            let started = std::time::Instant::now();
                            // The producer's rate follows its namespace's policies.
                            producer_limiter.set_rate(loaded.topic.client_limits().publish_rate_per_producer);
                            let limiters = [loaded.topic.publish_limiter(), &producer_limiter];
                            if limiters.iter().any(|l| l.is_limited()) {
                                for l in limiters {
                                    l.take(u64::from(count), bytes, started);
                                }
                                let wait = crate::rate::wait_all(&limiters, started);
                                resume_at = (!wait.is_zero()).then(|| tokio::time::Instant::now() + wait);
                            }
                            // u64::MAX is never stored: the SDK resumes at the last id + 1.
                            let publish = (seq != u64::MAX).then(|| loaded.topic.publish(&name, seq, messages));
                            pending.push_back(async move {
                                let r = match publish {
                                    Some(p) => p.await,
                                    None => Err(BrokerError::InvalidArgument(
                                        "sequence_id 18446744073709551615 (u64::MAX) is reserved; sequence ids count up from 0".into(),
                                    )),
                                };
                                (seq, count, bytes, started, r)
                            });
                        }
                        Ok(Some(_)) => {
                            let _ = tx.send(Ok(produce_error(error(
                                pb::ErrorCode::InvalidArgument,
                                "after `open`, a produce stream carries only `send` requests",
                                None,
                            )))).await;
                            reading = false;
                        }
                        Ok(None) | Err(_) => reading = false,
                    },
                    else => break,
                }
                if !reading && pending.is_empty() {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

pub(crate) fn sub_type(t: i32) -> Result<SubType, pb::Error> {
    match pb::SubscriptionType::try_from(t) {
        Ok(pb::SubscriptionType::Exclusive) => Ok(SubType::Exclusive),
        Ok(pb::SubscriptionType::Failover) => Ok(SubType::Failover),
        Ok(pb::SubscriptionType::Shared) => Ok(SubType::Shared),
        Ok(pb::SubscriptionType::KeyShared) => Ok(SubType::KeyShared),
        Err(_) => Err(error(
            pb::ErrorCode::InvalidArgument,
            format!("unknown subscription type {t}"),
            None,
        )),
    }
}

/// Acknowledgement ranges from the wire: both ends present, in order, of one partition;
/// the ranges in increasing order without overlapping, so applying them walks each
/// pending message at most once however many ranges a request carries.
fn from_wire_ranges(ranges: &[pb::AckRange], cumulative: bool) -> Result<Vec<(MessageId, MessageId)>, pb::Error> {
    if cumulative && !ranges.is_empty() {
        return Err(error(
            pb::ErrorCode::InvalidArgument,
            "a cumulative ack cannot carry ranges",
            None,
        ));
    }
    ranges
        .iter()
        .map(|r| {
            let (Some(first), Some(last)) = (&r.first, &r.last) else {
                return Err(error(
                    pb::ErrorCode::InvalidArgument,
                    "an acknowledgement range needs both `first` and `last`",
                    None,
                ));
            };
            let (first, last) = (from_wire_id(first)?, from_wire_id(last)?);
            if first > last || first.partition != last.partition {
                return Err(error(
                    pb::ErrorCode::InvalidArgument,
                    format!("acknowledgement range {first}..{last} is not in order within one partition"),
                    None,
                ));
            }
            Ok((first, last))
        })
        .collect::<Result<Vec<_>, _>>()
        .and_then(|ranges| match ranges.windows(2).find(|w| w[1].0 <= w[0].1) {
            Some(w) => Err(error(
                pb::ErrorCode::InvalidArgument,
                format!(
                    "acknowledgement ranges must be in increasing order without overlapping: {}..{} then {}..{}",
                    w[0].0, w[0].1, w[1].0, w[1].1
                ),
                None,
            )),
            None => Ok(ranges),
        })
}

fn wire_message(d: Delivery) -> pb::Message {
    pb::Message {
        id: Some(to_wire_id(d.message.id)),
        payload: d.message.message.payload,
        key: d.message.message.key,
        properties: d.message.message.properties,
        publish_time_ms: d.message.publish_time_ms,
        event_time_ms: d.message.message.event_time_ms,
        producer_name: d.message.producer_name.to_string(),
        redelivery_count: d.redelivery_count,
    }
}

/// Builds the responses carrying one dispatch to a consumer, in order, each under
/// [`RESPONSE_BYTES`] (a consumer may grant many permits at once; one message or one
/// entry always goes, whatever its size).
#[derive(Default)]
struct Responses {
    out: Vec<pb::ConsumeResponse>,
    messages: Vec<pb::Message>,
    entries: Vec<pb::Entry>,
    size: usize,
}

impl Responses {
    fn flush(&mut self) {
        let response = if !self.messages.is_empty() {
            pb::consume_response::Response::Messages(pb::Messages {
                messages: std::mem::take(&mut self.messages),
            })
        } else if !self.entries.is_empty() {
            pb::consume_response::Response::Entries(pb::Entries {
                entries: std::mem::take(&mut self.entries),
            })
        } else {
            return;
        };
        self.out.push(pb::ConsumeResponse {
            response: Some(response),
        });
        self.size = 0;
    }

    /// Before adding `len` bytes of one kind: flushes what is pending of the other kind
    /// (a response carries one kind, and order is kept), or of this kind when `len` more
    /// would not fit.
    fn room(&mut self, len: usize, other_kind_pending: bool, same_kind_pending: bool) {
        if other_kind_pending || (same_kind_pending && self.size + len > RESPONSE_BYTES) {
            self.flush();
        }
        self.size += len;
    }

    fn message(&mut self, message: pb::Message) {
        // The whole encoded message counts (a batch of empty payloads still carries ids,
        // keys and the producer name).
        let len = prost::Message::encoded_len(&message) + 8;
        self.room(len, !self.entries.is_empty(), !self.messages.is_empty());
        self.messages.push(message);
    }

    fn entry(&mut self, entry: pb::Entry) {
        let len = entry.batch.len() + 5 * entry.indexes.len() + 40;
        self.room(len, !self.messages.is_empty(), !self.entries.is_empty());
        self.entries.push(entry);
    }

    fn finish(mut self) -> Vec<pb::ConsumeResponse> {
        self.flush();
        self.out
    }
}

/// Responses carrying `batch` in the per-message form.
fn message_responses(batch: Vec<Delivery>) -> Vec<pb::ConsumeResponse> {
    let mut r = Responses::default();
    for d in batch {
        r.message(wire_message(d));
    }
    r.finish()
}

/// Responses carrying `batch` in the entry form: each run of messages of one entry with
/// one redelivery count becomes an `Entry` holding the stored batch as read (no message
/// is re-encoded) and, unless the run is the whole entry, the batch indexes it delivers.
/// A run carrying less than half the entry's bytes (a Key_Shared consumer's keys, or the
/// rest of a partly acknowledged batch) goes as messages instead, so a consumer is not
/// sent the whole batch for a few of its messages.
fn entry_responses(batch: Vec<Delivery>) -> Vec<pb::ConsumeResponse> {
    let mut r = Responses::default();
    let mut deliveries = batch.into_iter().peekable();
    let mut run = Vec::new();
    while let Some(d) = deliveries.next() {
        let (position, count) = (d.message.id.position, d.redelivery_count);
        run.push(d);
        while let Some(next) = deliveries.peek()
            && next.message.id.position == position
            && next.redelivery_count == count
        {
            run.push(deliveries.next().expect("peeked"));
        }
        let whole = run.len() as u32 == run[0].message.batch_size;
        let run_bytes: usize = run.iter().map(|d| held_bytes(&d.message)).sum();
        if !whole && run_bytes * 2 < run[0].message.entry.len() {
            for d in run.drain(..) {
                r.message(wire_message(d));
            }
            continue;
        }
        let indexes = if whole {
            Vec::new()
        } else {
            run.iter().map(|d| d.message.id.batch_index).collect()
        };
        let first = run.swap_remove(0).message;
        run.clear();
        r.entry(pb::Entry {
            id: Some(to_wire_id(MessageId {
                batch_index: 0,
                ..first.id
            })),
            batch: first.entry,
            indexes,
            redelivery_count: count,
        });
    }
    r.finish()
}

#[tonic::async_trait]
impl pb::consumer_server::Consumer for BrokerService {
    type ConsumeStream = ConsumeStream;

    async fn consume(
        &self,
        request: Request<Streaming<pb::ConsumeRequest>>,
    ) -> Result<Response<ConsumeStream>, Status> {
        let principal = request.extensions().get::<Principal>().cloned();
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(256);
        let broker = self.broker.clone();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let fail = |e: pb::Error| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(Ok(consume_error(e))).await;
                }
            };
            let sub = match inbound.message().await {
                Ok(Some(pb::ConsumeRequest {
                    request: Some(pb::consume_request::Request::Subscribe(s)),
                })) => s,
                Ok(_) => {
                    fail(error(
                        pb::ErrorCode::InvalidArgument,
                        "the first request of a consume stream must be `subscribe`",
                        None,
                    ))
                    .await;
                    return;
                }
                Err(_) => return,
            };
            let parsed = parse_topic(&sub.topic).and_then(|t| {
                let name = if sub.non_durable && sub.subscription.is_empty() {
                    None
                } else {
                    Some(
                        SubscriptionName::new(&sub.subscription)
                            .map_err(|e| error(pb::ErrorCode::InvalidArgument, e.to_string(), None))?,
                    )
                };
                let start = sub.start_message_id.as_ref().map(from_wire_id).transpose()?;
                Ok((t, name, sub_type(sub.r#type)?, start))
            });
            let (topic, name, kind, start) = match parsed {
                Ok(v) => v,
                Err(e) => return fail(e).await,
            };
            if let Err(e) = authorize(&broker, principal.as_ref(), &[Action::Consume], &topic).await {
                return fail(broker_error(&e, None)).await;
            }
            let initial = if sub.initial_position == pb::InitialPosition::Earliest as i32 {
                InitialPosition::Earliest
            } else {
                InitialPosition::Latest
            };
            let loaded = match broker.topic(&topic, true).await {
                Ok(l) => l,
                Err(e) => return fail(broker_error(&e, None)).await,
            };
            let subscription = match (&name, sub.non_durable) {
                (_, true) => loaded.reader(name.clone(), start.map(|id| id.position), initial).await,
                (Some(n), false) => loaded.subscription(n, kind, initial).await,
                (None, false) => Err(BrokerError::InvalidArgument("a subscription needs a name".into())),
            };
            let subscription = match subscription {
                Ok(s) => s,
                Err(e) => return fail(broker_error(&e, None)).await,
            };
            let entry_form = sub.delivery_form == pb::DeliveryForm::Entries as i32;
            if !entry_form && sub.delivery_form != pb::DeliveryForm::Messages as i32 {
                let e = format!("unknown delivery_form {} (0: MESSAGES, 1: ENTRIES)", sub.delivery_form);
                return fail(error(pb::ErrorCode::InvalidArgument, e, None)).await;
            }
            let ack_timeout = (sub.ack_timeout_ms > 0).then(|| Duration::from_millis(sub.ack_timeout_ms));
            let (cid, mut deliveries) = match subscription.add_consumer(ack_timeout).await {
                Ok(v) => v,
                Err(e) => return fail(broker_error(&e, None)).await,
            };
            let subscribed = pb::ConsumeResponse {
                response: Some(pb::consume_response::Response::Subscribed(pb::Subscribed {
                    consumer_name: sub.consumer_name.clone(),
                    subscription: subscription.name().to_string(),
                })),
            };
            if tx.send(Ok(subscribed)).await.is_ok() {
                loop {
                    tokio::select! {
                        d = deliveries.recv() => {
                            let Some(batch) = d else { break };
                            let counters = loaded.topic.counters();
                            let n = batch.len() as u64;
                            let bytes: u64 = batch.iter().map(|d| d.message.message.payload.len() as u64).sum();
                            broker.metrics.msgs_out.fetch_add(n, Relaxed);
                            counters.msgs_out.fetch_add(n, Relaxed);
                            broker.metrics.bytes_out.fetch_add(bytes, Relaxed);
                            counters.bytes_out.fetch_add(bytes, Relaxed);
                            let start = Instant::now();
                            let responses = if entry_form { entry_responses(batch) } else { message_responses(batch) };
                            ConsumeStage::Encode.time(start);
                            let start = Instant::now();
                            let mut closed = false;
                            for r in responses {
                                if tx.send(Ok(r)).await.is_err() {
                                    closed = true;
                                    break;
                                }
                            }
                            ConsumeStage::Send.time(start);
                            if closed {
                                break;
                            }
                        }
                        msg = inbound.message() => {
                            let req = match msg {
                                Ok(Some(pb::ConsumeRequest { request: Some(r) })) => r,
                                Ok(Some(_)) => continue,
                                Ok(None) | Err(_) => break,
                            };
                            let result = match req {
                                pb::consume_request::Request::Flow(f) => subscription.add_permits(cid, f.permits).await,
                                pb::consume_request::Request::Ack(a) => {
                                    let parsed = a.ids.iter().map(from_wire_id).collect::<Result<Vec<_>, _>>()
                                        .and_then(|ids| Ok((ids, from_wire_ranges(&a.ranges, a.cumulative)?)));
                                    match parsed {
                                        Ok((ids, ranges)) => {
                                            let r = if ids.is_empty() && !a.cumulative { Ok(()) } else { subscription.ack(cid, &ids, a.cumulative).await };
                                            if !ranges.is_empty() {
                                                subscription.ack_ranges(cid, &ranges).await;
                                            }
                                            r
                                        }
                                        Err(e) => { fail(e).await; continue; }
                                    }
                                }
                                pb::consume_request::Request::Nack(n) => {
                                    match n.ids.iter().map(from_wire_id).collect::<Result<Vec<_>, _>>() {
                                        Ok(ids) => subscription.nack(cid, &ids).await,
                                        Err(e) => { fail(e).await; continue; }
                                    }
                                }
                                pb::consume_request::Request::Seek(s) => {
                                    let r = match s.message_id.as_ref().map(from_wire_id) {
                                        Some(Ok(id)) => subscription.seek(cid, id.position).await.map_err(|e| broker_error(&e, None)),
                                        Some(Err(e)) => Err(e),
                                        None => subscription.seek_time(cid, s.publish_time_ms).await.map_err(|e| broker_error(&e, None)),
                                    };
                                    if r.is_ok() {
                                        // Deliveries made before the seek are stale: drop them,
                                        // then mark where the new position starts.
                                        while deliveries.try_recv().is_ok() {}
                                    }
                                    let done = pb::ConsumeResponse {
                                        response: Some(pb::consume_response::Response::SeekDone(pb::SeekDone {
                                            error: r.err(),
                                        })),
                                    };
                                    if tx.send(Ok(done)).await.is_err() {
                                        break;
                                    }
                                    Ok(())
                                }
                                pb::consume_request::Request::Subscribe(_) => {
                                    Err(BrokerError::InvalidArgument("already subscribed on this stream".into()))
                                }
                            };
                            if let Err(e) = result {
                                fail(broker_error(&e, None)).await;
                            }
                        }
                        _ = shutdown.cancelled() => break,
                    }
                }
            }
            subscription.remove_consumer(cid).await;
            if sub.non_durable {
                let _ = loaded.remove_subscription(subscription.name()).await;
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Serves the public services on `listener` until `shutdown`; then hands every bundle
/// over (see [`Broker::close`]: streams end, clients look their topics up again and move
/// to other brokers) while still answering lookups, and only then stops serving.
pub async fn serve(broker: Arc<Broker>, listener: TcpListener, shutdown: CancellationToken) -> Result<(), BrokerError> {
    serve_with(broker, listener, shutdown, ServeOptions::default()).await
}

/// How [`serve_with`] serves the client port: TLS and token authentication (both off by
/// default).
#[derive(Clone, Default)]
pub struct ServeOptions {
    pub tls: Option<Arc<strata_net::server::ServerTls>>,
    pub auth: Option<Arc<strata_net::auth::Verifier>>,
}

/// The interceptor of every public service: with auth on, verifies the request's token
/// and stores its [`Principal`] (UNAUTHENTICATED otherwise, with the reason). What the
/// principal may do is checked by each handler ([`crate::authz`]).
fn authenticate(
    auth: Option<Arc<strata_net::auth::Verifier>>,
) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |mut req: Request<()>| {
        let Some(v) = &auth else {
            return Ok(req);
        };
        let p = v
            .principal(&req)
            .map_err(|s| status(pb::ErrorCode::Unauthenticated, s.message().to_string()))?;
        req.extensions_mut().insert(p);
        Ok(req)
    }
}

/// Whether the caller (`None`: auth off) may do one of `any_of` on `topic`.
async fn authorize(
    broker: &Broker,
    p: Option<&Principal>,
    any_of: &[Action],
    topic: &TopicName,
) -> Result<(), BrokerError> {
    crate::authz::check(&**broker.store(), p, any_of, &Resource::Topic(topic.clone())).await
}

/// [`serve`] with TLS and authentication as `opts` say.
pub async fn serve_with(
    broker: Arc<Broker>,
    listener: TcpListener,
    shutdown: CancellationToken,
    opts: ServeOptions,
) -> Result<(), BrokerError> {
    let ServeOptions { tls, auth } = opts;
    // Producer streams end on their own when their topic closes; this token is only the
    // last resort for streams of topics that were never closed.
    let streams_stop = CancellationToken::new();
    let svc = BrokerService::new(broker.clone(), streams_stop.clone());
    let net = broker.net_limits();
    let incoming = strata_net::server::incoming(listener, net.max_connections, "broker", tls);
    // A Send carries at most one batch; room for a batch at the entry limit, twice over.
    let max = broker.limits().max_entry_bytes * 2 + (1 << 20);
    let server_stop = CancellationToken::new();
    let server = strata_net::server::builder(net.max_streams_per_connection)
        .add_service(InterceptedService::new(
            pb::lookup_server::LookupServer::new(svc.clone()),
            authenticate(auth.clone()),
        ))
        .add_service(InterceptedService::new(
            pb::admin_server::AdminServer::new(crate::admin::AdminService::new(broker.clone())),
            authenticate(auth.clone()),
        ))
        .add_service(InterceptedService::new(
            pb::producer_server::ProducerServer::new(svc.clone())
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
            authenticate(auth.clone()),
        ))
        .add_service(InterceptedService::new(
            pb::consumer_server::ConsumerServer::new(svc)
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
            authenticate(auth),
        ))
        .serve_with_incoming_shutdown(incoming, server_stop.clone().cancelled_owned());
    let handover = async {
        shutdown.cancelled().await;
        let started = std::time::Instant::now();
        broker.close().await;
        tracing::info!(took = ?started.elapsed(), "bundles handed over");
        streams_stop.cancel();
        server_stop.cancel();
        // Clients had their streams ended; give them a moment to close, then stop.
        tokio::time::sleep(Duration::from_secs(5)).await;
    };
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => r.map_err(|e| BrokerError::InvalidArgument(format!("gRPC server: {e}")))?,
        _ = handover => tracing::warn!("clients did not close their streams in time; closing them"),
    }
    broker.close().await;
    Ok(())
}
