//! Producers: batching, bounded sends in flight, partition routing, send timeouts and
//! reconnect with resend.
//!
//! Each partition (one for a non-partitioned topic) has a task that owns its gRPC stream.
//! Messages are collected into a batch until it holds `batch_max_messages`, reaches
//! `batch_max_bytes`, or `batch_max_delay` passed since its first message; the batch is
//! then sent as one entry with the next sequence id. Batches stay in flight — kept for
//! resending — until the broker's receipt, which answers every message's [`SendFuture`]
//! with its id.
//!
//! Invariants:
//! - Memory is bounded: a send waits (back-pressure) while `max_pending_messages` messages
//!   or `max_pending_bytes` payload bytes are unacknowledged.
//! - Order: batches of one partition are sent, resent and acknowledged in sequence order.
//! - A lost connection (broker restart, topic moved or unloaded) is re-established with
//!   backoff; every unacknowledged batch is resent in order with its sequence id. Until the
//!   broker deduplicates by sequence id, a batch stored just before a connection broke may
//!   be stored twice (at-least-once).
//! - A message not acknowledged within `send_timeout` fails with [`Error::Timeout`]; it
//!   may still have been stored.

use crate::Client;
use crate::connection::retrying;
use crate::connection::{
    Backoff, Connections, Lookup, MAX_GRPC_MESSAGE, next_message, partition_name, poll_optional, random_u64,
    sleep_until, stream_error,
};
use crate::error::{Error, ErrorCode, Result};
use crate::message::{MessageId, ProducerMessage};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use strata_proto::v1 as pb;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::time::Instant;
use tokio_stream::wrappers::UnboundedReceiverStream;

/// Where messages without a key go on a partitioned topic. Messages with a key always go
/// to partition `crc32c(key) % partitions`, so one key keeps its order.
///
/// ```
/// let mode = strata_client::RoutingMode::RoundRobin;
/// assert_eq!(mode, strata_client::RoutingMode::default());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RoutingMode {
    /// Each message to the next partition (default).
    #[default]
    RoundRobin,
    /// Every message to one partition, chosen at random when the producer is created.
    SinglePartition,
}

/// Settings of a [`Producer`]; start from [`Client::producer`].
///
/// ```no_run
/// # async fn example(client: strata_client::Client) -> strata_client::Result<()> {
/// use std::time::Duration;
/// let producer = client
///     .producer("public/default/events")
///     .name("ingest-1")
///     .batch_max_messages(500)
///     .batch_max_delay(Duration::from_millis(5))
///     .max_pending_messages(5_000)
///     .send_timeout(Duration::from_secs(10))
///     .create()
///     .await?;
/// # Ok(()) }
/// ```
pub struct ProducerBuilder {
    client: Client,
    topic: String,
    name: Option<String>,
    batch: BatchConfig,
    max_pending_messages: usize,
    max_pending_bytes: usize,
    send_timeout: Duration,
    routing: RoutingMode,
}

#[derive(Debug, Clone, Copy)]
struct BatchConfig {
    max_messages: usize,
    max_bytes: usize,
    max_delay: Duration,
}

impl ProducerBuilder {
    pub(crate) fn new(client: Client, topic: String) -> Self {
        Self {
            client,
            topic,
            name: None,
            batch: BatchConfig {
                max_messages: 1000,
                max_bytes: 128 << 10,
                max_delay: Duration::from_millis(1),
            },
            max_pending_messages: 10_000,
            max_pending_bytes: 64 << 20,
            send_timeout: Duration::from_secs(30),
            routing: RoutingMode::RoundRobin,
        }
    }

    /// The producer's name, unique per topic (default: a random one).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Most messages per batch (default 1000; 1 disables batching).
    pub fn batch_max_messages(mut self, n: usize) -> Self {
        self.batch.max_messages = n.clamp(1, 100_000);
        self
    }

    /// Most payload bytes per batch (default 128 KiB; never above the broker's maximum).
    pub fn batch_max_bytes(mut self, n: usize) -> Self {
        self.batch.max_bytes = n.max(1);
        self
    }

    /// Longest a message waits for its batch to fill (default 1 ms; zero sends at once).
    pub fn batch_max_delay(mut self, d: Duration) -> Self {
        self.batch.max_delay = d;
        self
    }

    /// Most messages sent and not yet acknowledged before sends wait (default 10,000).
    pub fn max_pending_messages(mut self, n: usize) -> Self {
        self.max_pending_messages = n.max(1);
        self
    }

    /// Most payload bytes sent and not yet acknowledged before sends wait (default 64 MiB).
    pub fn max_pending_bytes(mut self, n: usize) -> Self {
        self.max_pending_bytes = n.clamp(1, u32::MAX as usize);
        self
    }

    /// A message not acknowledged in this time fails with [`Error::Timeout`] (default 30 s;
    /// zero waits forever).
    pub fn send_timeout(mut self, d: Duration) -> Self {
        self.send_timeout = d;
        self
    }

    /// Where keyless messages go on a partitioned topic (default round-robin).
    pub fn routing_mode(mut self, m: RoutingMode) -> Self {
        self.routing = m;
        self
    }

    /// Looks the topic up and connects to its partitions. Fails with the broker's error
    /// (an invalid topic name, a missing namespace, …) or after the operation timeout.
    pub async fn create(self) -> Result<Producer> {
        let conns = self.client.conns.clone();
        let name = self
            .name
            .clone()
            .unwrap_or_else(|| format!("producer-{:016x}", random_u64()));
        let lookup = retrying(&conns, &format!("looking up {}", self.topic), || {
            conns.lookup(&self.topic)
        })
        .await?;
        let topics: Vec<String> = match lookup {
            Lookup::Broker(_) => vec![self.topic.clone()],
            Lookup::Partitioned(n) => (0..n).map(|i| partition_name(&self.topic, i)).collect(),
        };
        let mut parts = Vec::with_capacity(topics.len());
        for topic in topics {
            let (conn, opened) = retrying(&conns, &format!("opening a producer on {topic}"), || {
                open(conns.clone(), topic.clone(), name.clone())
            })
            .await?;
            let next_seq = match opened.last_sequence_id {
                None => 0,
                Some(last) => last.checked_add(1).ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "producer name {name:?} on {topic} has used every sequence id; use another name"
                    ))
                })?,
            };
            let (tx, rx) = mpsc::unbounded_channel();
            let task = PartitionProducer {
                conns: conns.clone(),
                topic,
                name: name.clone(),
                batch_cfg: BatchConfig {
                    max_bytes: self.batch.max_bytes.min(opened.max_message_bytes.max(1) as usize),
                    ..self.batch
                },
                send_timeout: self.send_timeout,
                cmds: rx,
                cmds_done: false,
                conn: Some(conn),
                connecting: None,
                reconnect_at: None,
                backoff: conns.backoff(),
                batch: Vec::new(),
                batch_msgs: Vec::new(),
                batch_bytes: 0,
                batch_deadline: None,
                inflight: VecDeque::new(),
                next_seq,
                flush_waiters: Vec::new(),
            };
            tokio::spawn(task.run());
            parts.push(tx);
        }
        let n = parts.len();
        Ok(Producer {
            shared: Arc::new(Shared {
                topic: self.topic,
                name,
                parts,
                routing: self.routing,
                next: AtomicUsize::new(random_u64() as usize % n),
                single: random_u64() as usize % n,
                count: Arc::new(Semaphore::new(self.max_pending_messages)),
                bytes: Arc::new(Semaphore::new(self.max_pending_bytes)),
                max_pending_bytes: self.max_pending_bytes,
                send_timeout: self.send_timeout,
                closed: AtomicBool::new(false),
            }),
        })
    }
}

struct Shared {
    topic: String,
    name: String,
    parts: Vec<mpsc::UnboundedSender<Cmd>>,
    routing: RoutingMode,
    next: AtomicUsize,
    single: usize,
    count: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    max_pending_bytes: usize,
    send_timeout: Duration,
    closed: AtomicBool,
}

/// What a message counts against the broker's `max_message_bytes`: its payload, key and
/// property keys and values.
fn batch_size(m: &pb::OutgoingMessage) -> usize {
    m.payload.len() + m.key.len() + m.properties.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
}

/// Sends messages to a topic. Cheap to clone; clones share the producer.
///
/// ```no_run
/// # async fn example(client: strata_client::Client) -> strata_client::Result<()> {
/// use strata_client::ProducerMessage;
/// let producer = client.producer("public/default/orders").create().await?;
///
/// // One at a time: waits until the message is stored.
/// let id = producer.send(ProducerMessage::new("order 1").key("customer-17")).await?;
///
/// // Many in flight: `send_async` waits only for room (back-pressure), the receipts
/// // are collected afterwards.
/// let mut receipts = Vec::new();
/// for i in 0..10_000 {
///     receipts.push(producer.send_async(format!("order {i}")).await?);
/// }
/// for r in receipts {
///     r.await?;
/// }
/// producer.close().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Producer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("topic", &self.shared.topic)
            .field("name", &self.shared.name)
            .field("partitions", &self.shared.parts.len())
            .finish_non_exhaustive()
    }
}

impl Producer {
    /// The topic as given to [`Client::producer`].
    pub fn topic(&self) -> &str {
        &self.shared.topic
    }

    /// The producer's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Partitions written to (1 for a non-partitioned topic).
    pub fn partitions(&self) -> usize {
        self.shared.parts.len()
    }

    /// Sends a message and waits until it is stored; returns its id.
    pub async fn send(&self, msg: impl Into<ProducerMessage>) -> Result<MessageId> {
        self.send_async(msg).await?.await
    }

    /// Queues a message for sending, waiting only while too many messages or bytes are
    /// pending; the returned future resolves to the id once the message is stored.
    pub async fn send_async(&self, msg: impl Into<ProducerMessage>) -> Result<SendFuture> {
        let s = &self.shared;
        if s.closed.load(Ordering::Acquire) {
            return Err(Error::Closed("producer"));
        }
        let msg: ProducerMessage = msg.into();
        let size = msg.inner.payload.len().clamp(1, s.max_pending_bytes);
        let count = s
            .count
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Closed("producer"))?;
        let bytes = s
            .bytes
            .clone()
            .acquire_many_owned(size as u32)
            .await
            .map_err(|_| Error::Closed("producer"))?;
        let n = s.parts.len();
        let p = if !msg.inner.key.is_empty() {
            crc32c::crc32c(msg.inner.key.as_bytes()) as usize % n
        } else {
            match s.routing {
                RoutingMode::RoundRobin => s.next.fetch_add(1, Ordering::Relaxed) % n,
                RoutingMode::SinglePartition => s.single,
            }
        };
        let (reply, rx) = oneshot::channel();
        let pending = Pending {
            reply,
            deadline: (!s.send_timeout.is_zero()).then(|| Instant::now() + s.send_timeout),
            _permits: (count, bytes),
        };
        s.parts[p]
            .send(Cmd::Send(msg.inner, pending))
            .map_err(|_| Error::Closed("producer"))?;
        Ok(SendFuture { rx })
    }

    /// Sends every queued message now and waits until all sent so far are acknowledged
    /// (or failed).
    pub async fn flush(&self) -> Result<()> {
        let mut waits = Vec::new();
        for p in &self.shared.parts {
            let (tx, rx) = oneshot::channel();
            p.send(Cmd::Flush(tx)).map_err(|_| Error::Closed("producer"))?;
            waits.push(rx);
        }
        for w in waits {
            w.await.map_err(|_| Error::Closed("producer"))?;
        }
        Ok(())
    }

    /// Flushes, then closes the producer: its streams end (the broker stops counting it)
    /// and later sends fail with [`Error::Closed`].
    pub async fn close(&self) -> Result<()> {
        self.flush().await?;
        self.shared.closed.store(true, Ordering::Release);
        for p in &self.shared.parts {
            let _ = p.send(Cmd::Close);
        }
        Ok(())
    }
}

/// The receipt of a queued message: resolves to its id once stored, or to the error that
/// failed it.
///
/// ```no_run
/// # async fn example(producer: strata_client::Producer) -> strata_client::Result<()> {
/// let receipt = producer.send_async("hello").await?;
/// // … queue more …
/// let id = receipt.await?;
/// # Ok(()) }
/// ```
pub struct SendFuture {
    rx: oneshot::Receiver<Result<MessageId>>,
}

impl Future for SendFuture {
    type Output = Result<MessageId>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(Error::Closed("producer"))))
    }
}

struct Pending {
    reply: oneshot::Sender<Result<MessageId>>,
    deadline: Option<Instant>,
    /// Released when the message is answered: the back-pressure budget.
    _permits: (OwnedSemaphorePermit, OwnedSemaphorePermit),
}

enum Cmd {
    Send(pb::OutgoingMessage, Pending),
    Flush(oneshot::Sender<()>),
    /// End the stream once everything sent is answered (the producer was closed).
    Close,
}

struct Inflight {
    wire: pb::SendBatch,
    pending: Vec<Pending>,
}

struct Conn {
    tx: mpsc::UnboundedSender<pb::ProduceRequest>,
    rx: tonic::Streaming<pb::ProduceResponse>,
    url: String,
}

type Connecting = Pin<Box<dyn Future<Output = Result<(Conn, pb::ProducerOpened)>> + Send>>;

/// Opens a produce stream on the broker owning `topic`.
async fn open(conns: Arc<Connections>, topic: String, name: String) -> Result<(Conn, pb::ProducerOpened)> {
    let url = match conns.lookup(&topic).await? {
        Lookup::Broker(url) => url,
        Lookup::Partitioned(_) => {
            return Err(Error::InvalidArgument(format!("{topic} became a partitioned topic")));
        }
    };
    let channel = conns.channel(&url).await?;
    let mut client = pb::producer_client::ProducerClient::new(channel)
        .max_decoding_message_size(MAX_GRPC_MESSAGE)
        .max_encoding_message_size(MAX_GRPC_MESSAGE);
    let (tx, rx) = mpsc::unbounded_channel();
    let _ = tx.send(pb::ProduceRequest {
        request: Some(pb::produce_request::Request::Open(pb::OpenProducer {
            topic: topic.clone(),
            producer_name: name,
        })),
    });
    let transport = |s| stream_error(&conns, &url, s);
    let mut rx_stream = client
        .produce(UnboundedReceiverStream::new(rx))
        .await
        .map_err(transport)?
        .into_inner();
    match rx_stream.message().await.map_err(transport)? {
        Some(pb::ProduceResponse {
            response: Some(pb::produce_response::Response::Opened(o)),
        }) => Ok((
            Conn {
                tx,
                rx: rx_stream,
                url: url.clone(),
            },
            o,
        )),
        Some(pb::ProduceResponse {
            response: Some(pb::produce_response::Response::Error(e)),
        }) => Err(Error::from_wire(&e)),
        _ => Err(Error::Transport(format!(
            "the broker closed the produce stream of {topic} before opening it"
        ))),
    }
}

enum Event {
    Cmd(Option<Cmd>),
    Linger,
    Response(Option<Result<pb::ProduceResponse, tonic::Status>>),
    Connected(Box<Result<(Conn, pb::ProducerOpened)>>),
    Reconnect,
    Tick,
}

/// The task owning one partition's stream.
struct PartitionProducer {
    conns: Arc<Connections>,
    topic: String,
    name: String,
    batch_cfg: BatchConfig,
    send_timeout: Duration,
    cmds: mpsc::UnboundedReceiver<Cmd>,
    cmds_done: bool,
    conn: Option<Conn>,
    connecting: Option<Connecting>,
    reconnect_at: Option<Instant>,
    backoff: Backoff,
    batch: Vec<pb::OutgoingMessage>,
    batch_msgs: Vec<Pending>,
    batch_bytes: usize,
    batch_deadline: Option<Instant>,
    inflight: VecDeque<Inflight>,
    next_seq: u64,
    /// Flushes waiting for every batch with a sequence id below theirs to be answered.
    flush_waiters: Vec<(u64, oneshot::Sender<()>)>,
}

impl PartitionProducer {
    async fn run(mut self) {
        let tick_every = (self.send_timeout / 10).clamp(Duration::from_millis(10), Duration::from_secs(1));
        let mut tick = tokio::time::interval(tick_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.cmds_done && self.batch.is_empty() && self.inflight.is_empty() {
                break;
            }
            let event = tokio::select! {
                c = self.cmds.recv(), if !self.cmds_done => Event::Cmd(c),
                _ = sleep_until(self.batch_deadline), if self.batch_deadline.is_some() => Event::Linger,
                r = next_message(self.conn.as_mut().map(|c| &mut c.rx)), if self.conn.is_some() => Event::Response(r),
                r = poll_optional(&mut self.connecting), if self.connecting.is_some() => Event::Connected(Box::new(r)),
                _ = sleep_until(self.reconnect_at), if self.reconnect_at.is_some() => Event::Reconnect,
                _ = tick.tick(), if !self.send_timeout.is_zero() => Event::Tick,
            };
            match event {
                Event::Cmd(Some(Cmd::Send(msg, pending))) => self.add(msg, pending),
                Event::Cmd(Some(Cmd::Flush(w))) => {
                    self.send_batch();
                    // Answered once every batch sent so far is answered, whatever is sent
                    // after it.
                    self.flush_waiters.push((self.next_seq, w));
                }
                Event::Cmd(None | Some(Cmd::Close)) => {
                    self.send_batch();
                    self.cmds_done = true;
                }
                Event::Linger => self.send_batch(),
                Event::Response(r) => self.on_response(r),
                Event::Connected(r) => {
                    self.connecting = None;
                    self.on_connected(*r);
                }
                Event::Reconnect => {
                    self.reconnect_at = None;
                    let (conns, topic, name) = (self.conns.clone(), self.topic.clone(), self.name.clone());
                    let timeout = conns.operation_timeout;
                    self.connecting = Some(Box::pin(async move {
                        tokio::time::timeout(timeout, open(conns, topic.clone(), name))
                            .await
                            .map_err(|_| Error::Timeout(format!("reconnecting the producer of {topic}")))?
                    }));
                }
                Event::Tick => self.expire(),
            }
            let done_below = self.inflight.front().map_or(u64::MAX, |b| b.wire.sequence_id);
            if self.flush_waiters.iter().any(|(target, _)| *target <= done_below) {
                let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.flush_waiters)
                    .into_iter()
                    .partition(|(target, _)| *target <= done_below);
                self.flush_waiters = waiting;
                for (_, w) in done {
                    let _ = w.send(());
                }
            }
        }
        for (_, w) in self.flush_waiters.drain(..) {
            let _ = w.send(());
        }
    }

    fn add(&mut self, msg: pb::OutgoingMessage, pending: Pending) {
        let size = batch_size(&msg);
        if !self.batch.is_empty() && self.batch_bytes + size > self.batch_cfg.max_bytes {
            self.send_batch();
        }
        self.batch_bytes += size;
        self.batch.push(msg);
        self.batch_msgs.push(pending);
        if self.batch.len() >= self.batch_cfg.max_messages
            || self.batch_bytes >= self.batch_cfg.max_bytes
            || self.batch_cfg.max_delay.is_zero()
        {
            self.send_batch();
        } else if self.batch_deadline.is_none() {
            self.batch_deadline = Some(Instant::now() + self.batch_cfg.max_delay);
        }
    }

    /// Closes the current batch: it gets the next sequence id and is sent (or kept for
    /// sending once connected).
    fn send_batch(&mut self) {
        self.batch_deadline = None;
        if self.batch.is_empty() {
            return;
        }
        let wire = pb::SendBatch {
            sequence_id: self.next_seq,
            messages: std::mem::take(&mut self.batch),
        };
        self.next_seq = self.next_seq.saturating_add(1);
        self.batch_bytes = 0;
        if let Some(c) = &self.conn {
            let _ = c.tx.send(send_request(&wire));
        }
        self.inflight.push_back(Inflight {
            wire,
            pending: std::mem::take(&mut self.batch_msgs),
        });
    }

    fn on_response(&mut self, r: Option<Result<pb::ProduceResponse, tonic::Status>>) {
        let resp = match r {
            Some(Ok(pb::ProduceResponse { response: Some(resp) })) => resp,
            Some(Ok(_)) => return,
            Some(Err(s)) => {
                let e = Error::from_status(&s);
                tracing::debug!(topic = %self.topic, error = %e, "produce stream failed; reconnecting");
                return self.disconnected(matches!(e, Error::Transport(_)));
            }
            None => {
                tracing::debug!(topic = %self.topic, "produce stream ended; reconnecting");
                return self.disconnected(false);
            }
        };
        match resp {
            pb::produce_response::Response::Receipt(r) => {
                self.backoff.reset();
                let Some(batch) = self.take_inflight(r.sequence_id) else {
                    return;
                };
                let first = r.first_id.as_ref().map(MessageId::from_wire);
                for (i, p) in batch.pending.into_iter().enumerate() {
                    let id = first.map(|f| MessageId {
                        batch_index: f.batch_index + i as u32,
                        ..f
                    });
                    let _ = p.reply.send(id.ok_or(if r.duplicate {
                        Error::StoredEarlier
                    } else {
                        Error::Transport("receipt without a message id".into())
                    }));
                }
            }
            pb::produce_response::Response::Error(e) => {
                let err = Error::from_wire(&e);
                match e.sequence_id {
                    // Topic lost or storage hiccup: resend after reconnecting.
                    _ if err.is_retriable() => {
                        tracing::debug!(topic = %self.topic, error = %err, "send refused; reconnecting to resend");
                        self.disconnected(false);
                    }
                    Some(seq) => {
                        if let Some(batch) = self.take_inflight(seq) {
                            for p in batch.pending {
                                let _ = p.reply.send(Err(err.clone()));
                            }
                        }
                    }
                    None => {
                        tracing::warn!(topic = %self.topic, error = %err, "producer stream error; reconnecting");
                        self.disconnected(false);
                    }
                }
            }
            pb::produce_response::Response::Opened(_) => {}
        }
    }

    /// The in-flight batch `seq`, if still pending (an expired one is gone).
    fn take_inflight(&mut self, seq: u64) -> Option<Inflight> {
        match self.inflight.front() {
            Some(f) if f.wire.sequence_id == seq => self.inflight.pop_front(),
            _ => {
                let i = self.inflight.iter().position(|b| b.wire.sequence_id == seq)?;
                self.inflight.remove(i)
            }
        }
    }

    fn disconnected(&mut self, forget_channel: bool) {
        if forget_channel && let Some(c) = &self.conn {
            // The broker's connection broke: the next attempt connects afresh.
            self.conns.forget(&c.url);
        }
        self.conn = None;
        if self.connecting.is_none() && self.reconnect_at.is_none() {
            // Backoff resets only on a receipt, so a broker that accepts the stream and
            // then refuses every send is not hammered.
            self.reconnect_at = Some(Instant::now() + self.backoff.next_delay());
        }
    }

    fn on_connected(&mut self, r: Result<(Conn, pb::ProducerOpened)>) {
        match r {
            Ok((conn, opened)) => {
                if let Some(last) = opened.last_sequence_id
                    && last >= self.next_seq
                {
                    // Sequence ids this producer never used were stored under its name
                    // while it was away: resending would have its batches taken as
                    // duplicates and dropped. Fail them instead, and go on after `last`.
                    let err = Error::Broker {
                        code: ErrorCode::ProducerBusy,
                        message: format!(
                            "another producer named {:?} stored sequence ids up to {last} on {} while this one was reconnecting; \
                             the messages in flight were not stored (resend them, or give each producer its own name)",
                            self.name, self.topic
                        ),
                    };
                    tracing::warn!(topic = %self.topic, error = %err, "producer name used elsewhere");
                    for b in self.inflight.drain(..) {
                        for p in b.pending {
                            let _ = p.reply.send(Err(err.clone()));
                        }
                    }
                    // At u64::MAX no id is left: the broker refuses every later send.
                    self.next_seq = last.saturating_add(1);
                }
                tracing::debug!(topic = %self.topic, resend = self.inflight.len(), "producer reconnected");
                for b in &self.inflight {
                    let _ = conn.tx.send(send_request(&b.wire));
                }
                self.conn = Some(conn);
            }
            Err(e) => {
                let delay = self.backoff.next_delay();
                tracing::debug!(topic = %self.topic, error = %e, ?delay, "producer reconnect failed; retrying");
                self.reconnect_at = Some(Instant::now() + delay);
            }
        }
    }

    /// Fails messages whose send timeout passed: queued ones individually, in-flight
    /// batches whole (oldest first).
    fn expire(&mut self) {
        let now = Instant::now();
        let late = |p: &Pending| p.deadline.is_some_and(|d| d <= now);
        while self.inflight.front().is_some_and(|b| b.pending.iter().any(late)) {
            let b = self.inflight.pop_front().expect("front exists");
            for p in b.pending {
                let _ = p.reply.send(Err(Error::Timeout(format!(
                    "message to {} not acknowledged within the send timeout",
                    self.topic
                ))));
            }
        }
        if self.batch_msgs.iter().any(late) {
            let mut kept = (Vec::new(), Vec::new());
            self.batch_bytes = 0;
            for (m, p) in std::mem::take(&mut self.batch)
                .into_iter()
                .zip(std::mem::take(&mut self.batch_msgs))
            {
                if late(&p) {
                    let _ = p.reply.send(Err(Error::Timeout(format!(
                        "message to {} not sent within the send timeout",
                        self.topic
                    ))));
                } else {
                    self.batch_bytes += batch_size(&m);
                    kept.0.push(m);
                    kept.1.push(p);
                }
            }
            (self.batch, self.batch_msgs) = kept;
        }
    }
}

fn send_request(b: &pb::SendBatch) -> pb::ProduceRequest {
    pb::ProduceRequest {
        request: Some(pb::produce_request::Request::Send(b.clone())),
    }
}
