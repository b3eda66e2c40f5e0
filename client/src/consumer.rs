//! Consumers (readers, in `reader.rs`, are consumers of a non-durable subscription).
//!
//! Each partition (one for a non-partitioned topic) has a task that owns its consume
//! stream and feeds one queue the application [`Consumer::receive`]s from.
//!
//! Flow control: a partition never has more than `receiver_queue_size` messages granted
//! (permits the broker may still push) plus queued (received, not yet taken by the
//! application); it grants more once that falls to half. Memory is bounded by the queue.
//!
//! The stream uses the entry form: the broker sends stored producer batches and the
//! task splits them into messages (it takes the per-message form too).
//!
//! Acknowledgements are grouped (up to 1000 ids or 10 ms) and sent on the stream, runs
//! of ids with nothing between them as ranges.
//! After a reconnect the broker redelivers what was not acknowledged, so messages still
//! queued from the old stream are dropped (their redelivery takes their place) — a
//! consumer sees each unacknowledged message again, never loses one. A reader instead
//! resumes after the last message it queued.

use crate::Client;
use crate::connection::retrying;
use crate::connection::{
    Backoff, Connections, Lookup, MAX_GRPC_MESSAGE, next_message, partition_name, poll_optional, sleep_until,
    stream_error,
};
use crate::error::{Error, Result};
use crate::message::{Message, MessageId};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use strata_proto::v1 as pb;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;
use tokio_stream::wrappers::UnboundedReceiverStream;

/// How a subscription hands messages to its consumers.
///
/// ```
/// use strata_client::SubscriptionType;
/// assert_eq!(SubscriptionType::default(), SubscriptionType::Exclusive);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SubscriptionType {
    /// One consumer; a second is refused (CONSUMER_BUSY). In order.
    #[default]
    Exclusive,
    /// One active consumer, the others standing by to take over. In order.
    Failover,
    /// Messages spread across all consumers; no ordering.
    Shared,
    /// Messages with the same key go to the same consumer, in order.
    KeyShared,
}

impl SubscriptionType {
    pub(crate) fn to_wire(self) -> pb::SubscriptionType {
        match self {
            SubscriptionType::Exclusive => pb::SubscriptionType::Exclusive,
            SubscriptionType::Failover => pb::SubscriptionType::Failover,
            SubscriptionType::Shared => pb::SubscriptionType::Shared,
            SubscriptionType::KeyShared => pb::SubscriptionType::KeyShared,
        }
    }
}

/// Where a new subscription starts (an existing one resumes where it was).
///
/// ```
/// assert_eq!(strata_client::InitialPosition::default(), strata_client::InitialPosition::Latest);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InitialPosition {
    /// Only messages published from now on.
    #[default]
    Latest,
    /// Every message the topic still has.
    Earliest,
}

/// Settings of a [`Consumer`]; start from [`Client::consumer`].
///
/// ```no_run
/// # async fn example(client: strata_client::Client) -> strata_client::Result<()> {
/// use std::time::Duration;
/// use strata_client::{InitialPosition, SubscriptionType};
/// let consumer = client
///     .consumer("public/default/orders")
///     .subscription("billing")
///     .subscription_type(SubscriptionType::KeyShared)
///     .initial_position(InitialPosition::Earliest)
///     .ack_timeout(Duration::from_secs(30))
///     .receiver_queue_size(500)
///     .subscribe()
///     .await?;
/// # Ok(()) }
/// ```
pub struct ConsumerBuilder {
    client: Client,
    topic: String,
    subscription: Option<String>,
    sub_type: SubscriptionType,
    initial: InitialPosition,
    name: String,
    ack_timeout: Option<Duration>,
    queue: u32,
}

impl ConsumerBuilder {
    pub(crate) fn new(client: Client, topic: String) -> Self {
        Self {
            client,
            topic,
            subscription: None,
            sub_type: SubscriptionType::Exclusive,
            initial: InitialPosition::Latest,
            name: String::new(),
            ack_timeout: None,
            queue: 1000,
        }
    }

    /// The subscription's name (required).
    pub fn subscription(mut self, name: impl Into<String>) -> Self {
        self.subscription = Some(name.into());
        self
    }

    /// The subscription's type (default Exclusive). An existing subscription keeps its
    /// type; asking for another fails with SUBSCRIPTION_TYPE_MISMATCH.
    pub fn subscription_type(mut self, t: SubscriptionType) -> Self {
        self.sub_type = t;
        self
    }

    /// Where a new subscription starts (default Latest).
    pub fn initial_position(mut self, p: InitialPosition) -> Self {
        self.initial = p;
        self
    }

    /// The consumer's name (shown in stats; orders Failover consumers).
    pub fn consumer_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Redeliver messages not acknowledged within this time (default: never).
    pub fn ack_timeout(mut self, d: Duration) -> Self {
        self.ack_timeout = (!d.is_zero()).then_some(d);
        self
    }

    /// Messages buffered per partition ahead of [`Consumer::receive`] (default 1000).
    pub fn receiver_queue_size(mut self, n: u32) -> Self {
        self.queue = n.max(1);
        self
    }

    /// Subscribes every partition. Fails with the broker's error (invalid topic,
    /// CONSUMER_BUSY, SUBSCRIPTION_TYPE_MISMATCH, …) or after the operation timeout.
    pub async fn subscribe(self) -> Result<Consumer> {
        let Some(subscription) = self.subscription else {
            return Err(Error::InvalidArgument(
                "a consumer needs a subscription name (ConsumerBuilder::subscription)".into(),
            ));
        };
        let template = pb::Subscribe {
            topic: String::new(),
            subscription,
            r#type: self.sub_type.to_wire() as i32,
            initial_position: initial_wire(self.initial),
            consumer_name: self.name,
            ack_timeout_ms: self.ack_timeout.map_or(0, |d| d.as_millis().max(1) as u64),
            non_durable: false,
            start_message_id: None,
            // Stored batches as they are, split here: the broker re-encodes nothing.
            delivery_form: pb::DeliveryForm::Entries as i32,
        };
        Consumer::start(&self.client, self.topic, template, self.queue, None).await
    }
}

pub(crate) fn initial_wire(p: InitialPosition) -> i32 {
    let wire = match p {
        InitialPosition::Latest => pb::InitialPosition::Latest,
        InitialPosition::Earliest => pb::InitialPosition::Earliest,
    };
    wire as i32
}

/// Where a reader starts, for [`Consumer::start`].
#[derive(Clone, Copy)]
pub(crate) struct ReaderStart {
    pub(crate) from: Option<MessageId>,
    pub(crate) inclusive: bool,
}

struct Flow {
    /// Bumped when queued messages become stale (reconnect, seek); stale ones are dropped.
    epoch: u64,
    /// Messages of the current epoch in the application's queue.
    queued: u64,
}

struct Part {
    cmds: mpsc::UnboundedSender<Cmd>,
    flow: Arc<(std::sync::Mutex<Flow>, Notify)>,
}

struct Item {
    part: usize,
    epoch: u64,
    msg: Message,
}

enum Cmd {
    /// An id, and the size of its entry's batch when known (0: not known).
    Ack(MessageId, u32),
    AckCumulative(MessageId),
    Nack(MessageId),
    Seek(pb::Seek, Option<MessageId>, oneshot::Sender<Result<()>>),
    Close(oneshot::Sender<()>),
}

/// Receives messages from a subscription. Methods take `&self`, so one consumer can be
/// shared (in an `Arc`) between a receiving task and acknowledging tasks.
///
/// ```no_run
/// # async fn example(client: strata_client::Client) -> strata_client::Result<()> {
/// use strata_client::SubscriptionType;
/// let consumer = client
///     .consumer("public/default/orders")
///     .subscription("shipping")
///     .subscription_type(SubscriptionType::Shared)
///     .subscribe()
///     .await?;
/// loop {
///     let msg = consumer.receive().await?;
///     match std::str::from_utf8(&msg.payload) {
///         Ok(text) => {
///             println!("{text}");
///             consumer.ack(&msg).await?;
///         }
///         // Redelivered later with redelivery_count + 1.
///         Err(_) => consumer.nack(&msg).await?,
///     }
/// }
/// # }
/// ```
pub struct Consumer {
    topic: String,
    subscription: String,
    parts: Vec<Part>,
    queue: u32,
    rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<Item>>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("topic", &self.topic)
            .field("subscription", &self.subscription)
            .field("partitions", &self.parts.len())
            .finish_non_exhaustive()
    }
}

impl Consumer {
    pub(crate) async fn start(
        client: &Client,
        topic: String,
        template: pb::Subscribe,
        queue: u32,
        reader: Option<ReaderStart>,
    ) -> Result<Self> {
        let conns = client.conns.clone();
        let lookup = retrying(&conns, &format!("looking up {topic}"), || conns.lookup(&topic)).await?;
        let topics: Vec<String> = match lookup {
            Lookup::Broker(_) => vec![topic.clone()],
            Lookup::Partitioned(n) => (0..n).map(|i| partition_name(&topic, i)).collect(),
        };
        if let Some(ReaderStart { from: Some(id), .. }) = &reader
            && topics.len() > 1
            && (id.partition < 0 || id.partition as usize >= topics.len())
        {
            return Err(Error::InvalidArgument(format!(
                "message id {id} names no partition of {topic} ({} partitions)",
                topics.len()
            )));
        }
        let (out, rx) = mpsc::unbounded_channel();
        let mut parts = Vec::with_capacity(topics.len());
        let mut subscription = template.subscription.clone();
        for (i, t) in topics.iter().enumerate() {
            let mut sub = template.clone();
            sub.topic = t.clone();
            // A reader starting at a message id starts there in that id's partition only.
            let mut start = reader;
            if let Some(ReaderStart { from: Some(id), .. }) = reader
                && topics.len() > 1
                && id.partition as usize != i
            {
                start = None;
            }
            if let Some(ReaderStart { from: Some(id), .. }) = start {
                sub.start_message_id = Some(id.to_wire());
            }
            let (conn, name) = retrying(&conns, &format!("subscribing to {t}"), || {
                open(conns.clone(), sub.clone())
            })
            .await?;
            subscription = name;
            let flow = Arc::new((std::sync::Mutex::new(Flow { epoch: 0, queued: 0 }), Notify::new()));
            let (cmds, cmd_rx) = mpsc::unbounded_channel();
            let task = PartitionConsumer {
                conns: conns.clone(),
                topic: t.clone(),
                part: i,
                subscribe: sub,
                reader: reader.is_some(),
                skip: start.and_then(|s| s.from.map(|id| (id, s.inclusive))),
                last_queued: None,
                queue: queue as u64,
                out: out.clone(),
                flow: flow.clone(),
                cmds: cmd_rx,
                conn: Some(conn),
                connecting: None,
                reconnect_at: None,
                backoff: conns.backoff(),
                granted: 0,
                acks: Vec::new(),
                ack_deadline: None,
                closing: None,
                seeks: std::collections::VecDeque::new(),
                resume_seek: None,
            };
            tokio::spawn(task.run());
            parts.push(Part { cmds, flow });
        }
        Ok(Self {
            topic,
            subscription,
            parts,
            queue,
            rx: tokio::sync::Mutex::new(rx),
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The subscription's name.
    pub fn subscription(&self) -> &str {
        &self.subscription
    }

    /// The next message, waiting until one arrives. Fails with [`Error::Closed`] once the
    /// consumer is closed.
    pub async fn receive(&self) -> Result<Message> {
        let mut rx = self.rx.lock().await;
        loop {
            let item = rx.recv().await.ok_or(Error::Closed("consumer"))?;
            let (lock, notify) = &*self.parts[item.part].flow;
            let mut f = lock.lock().expect("flow state");
            if item.epoch != f.epoch {
                continue; // stale: redelivered on the new stream
            }
            f.queued = f.queued.saturating_sub(1);
            // Wake the partition's task at quarter marks so it can grant more permits.
            if f.queued % (self.queue as u64 / 4).max(1) == 0 {
                notify.notify_one();
            }
            return Ok(item.msg);
        }
    }

    fn part_of(&self, id: &MessageId) -> Result<&Part> {
        if self.parts.len() == 1 {
            return Ok(&self.parts[0]);
        }
        usize::try_from(id.partition)
            .ok()
            .and_then(|p| self.parts.get(p))
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "message id {id} names no partition of {} ({} partitions)",
                    self.topic,
                    self.parts.len()
                ))
            })
    }

    fn command(&self, id: &MessageId, cmd: Cmd) -> Result<()> {
        self.part_of(id)?.cmds.send(cmd).map_err(|_| Error::Closed("consumer"))
    }

    /// Acknowledges a message: it is not delivered to this subscription again.
    pub async fn ack(&self, msg: &Message) -> Result<()> {
        self.command(&msg.id, Cmd::Ack(msg.id, msg.batch_size))
    }

    /// Acknowledges a message by id.
    pub async fn ack_id(&self, id: MessageId) -> Result<()> {
        self.command(&id, Cmd::Ack(id, 0))
    }

    /// Acknowledges this message and every earlier one of its partition (Exclusive and
    /// Failover subscriptions only).
    pub async fn ack_cumulative(&self, msg: &Message) -> Result<()> {
        self.command(&msg.id, Cmd::AckCumulative(msg.id))
    }

    /// Negative acknowledgement: the message is redelivered (to this or another consumer)
    /// with its redelivery count incremented.
    pub async fn nack(&self, msg: &Message) -> Result<()> {
        self.command(&msg.id, Cmd::Nack(msg.id))
    }

    /// Moves the subscription so that the next message delivered is `id` (of its
    /// partition); everything before counts as acknowledged, everything from it on as not.
    /// Returns once the broker applied the seek: the next [`Consumer::receive`] returns
    /// `id`.
    pub async fn seek(&self, id: MessageId) -> Result<()> {
        let seek = pb::Seek {
            message_id: Some(id.to_wire()),
            publish_time_ms: 0,
        };
        let (tx, rx) = oneshot::channel();
        self.command(&id, Cmd::Seek(seek, Some(id), tx))?;
        rx.await.map_err(|_| Error::Closed("consumer"))?
    }

    /// Moves the subscription (every partition) to the first message published at or
    /// after `time`.
    pub async fn seek_time(&self, time: SystemTime) -> Result<()> {
        let ms = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let mut waits = Vec::new();
        for p in &self.parts {
            let seek = pb::Seek {
                message_id: None,
                publish_time_ms: ms,
            };
            let (tx, rx) = oneshot::channel();
            p.cmds
                .send(Cmd::Seek(seek, None, tx))
                .map_err(|_| Error::Closed("consumer"))?;
            waits.push(rx);
        }
        for w in waits {
            w.await.map_err(|_| Error::Closed("consumer"))??;
        }
        Ok(())
    }

    /// Sends pending acknowledgements and closes the streams; unacknowledged messages go
    /// to the subscription's other consumers (or the next one to connect).
    pub async fn close(&self) -> Result<()> {
        let mut waits = Vec::new();
        for p in &self.parts {
            let (tx, rx) = oneshot::channel();
            if p.cmds.send(Cmd::Close(tx)).is_ok() {
                waits.push(rx);
            }
        }
        for w in waits {
            let _ = w.await;
        }
        Ok(())
    }
}

struct Conn {
    tx: mpsc::UnboundedSender<pb::ConsumeRequest>,
    rx: tonic::Streaming<pb::ConsumeResponse>,
    url: String,
}

type Connecting = Pin<Box<dyn Future<Output = Result<(Conn, String)>> + Send>>;

/// Opens a consume stream on the broker owning `sub.topic`; returns it and the
/// subscription's name.
async fn open(conns: Arc<Connections>, sub: pb::Subscribe) -> Result<(Conn, String)> {
    let topic = sub.topic.clone();
    let url = match conns.lookup(&topic).await? {
        Lookup::Broker(url) => url,
        Lookup::Partitioned(_) => {
            return Err(Error::InvalidArgument(format!("{topic} became a partitioned topic")));
        }
    };
    let channel = conns.channel(&url).await?;
    let mut client = pb::consumer_client::ConsumerClient::new(channel)
        .max_decoding_message_size(MAX_GRPC_MESSAGE)
        .max_encoding_message_size(MAX_GRPC_MESSAGE);
    let (tx, rx) = mpsc::unbounded_channel();
    let _ = tx.send(pb::ConsumeRequest {
        request: Some(pb::consume_request::Request::Subscribe(sub)),
    });
    let transport = |s| stream_error(&conns, &url, s);
    let mut stream = client
        .consume(UnboundedReceiverStream::new(rx))
        .await
        .map_err(transport)?
        .into_inner();
    match stream.message().await.map_err(transport)? {
        Some(pb::ConsumeResponse {
            response: Some(pb::consume_response::Response::Subscribed(s)),
        }) => Ok((
            Conn {
                tx,
                rx: stream,
                url: url.clone(),
            },
            s.subscription,
        )),
        Some(pb::ConsumeResponse {
            response: Some(pb::consume_response::Response::Error(e)),
        }) => Err(Error::from_wire(&e)),
        _ => Err(Error::Transport(format!(
            "the broker closed the consume stream of {topic} before subscribing"
        ))),
    }
}

enum Event {
    Cmd(Option<Cmd>),
    Response(Option<Result<pb::ConsumeResponse, tonic::Status>>),
    Connected(Box<Result<(Conn, String)>>),
    Reconnect,
    FlushAcks,
    Consumed,
}

/// Acknowledgements as ids and ranges: sorted, and every run of ids with nothing between
/// them (the next batch index of an entry, or the first message of the next entry of the
/// ledger after an entry's last message, when its batch size is known) becomes one range.
/// A range names only messages acknowledged here, so the broker can apply it as a range.
fn coalesce_acks(mut acks: Vec<(MessageId, u32)>) -> (Vec<pb::MessageId>, Vec<pb::AckRange>) {
    acks.sort_unstable();
    acks.dedup_by_key(|(id, _)| *id);
    let follows = |(a, size): (MessageId, u32), b: MessageId| {
        a.partition == b.partition
            && a.ledger_id == b.ledger_id
            && ((a.entry_id == b.entry_id && a.batch_index.checked_add(1) == Some(b.batch_index))
                || (size > 0
                    && a.batch_index.checked_add(1) == Some(size)
                    && a.entry_id.checked_add(1) == Some(b.entry_id)
                    && b.batch_index == 0))
    };
    let mut ids = Vec::new();
    let mut ranges = Vec::new();
    let mut run: Option<(MessageId, (MessageId, u32))> = None;
    let mut close = |run: (MessageId, (MessageId, u32))| {
        let (first, (last, _)) = run;
        if first == last {
            ids.push(first.to_wire());
        } else {
            ranges.push(pb::AckRange {
                first: Some(first.to_wire()),
                last: Some(last.to_wire()),
            });
        }
    };
    for (id, size) in acks {
        run = match run {
            Some((first, last)) if follows(last, id) => Some((first, (id, size))),
            Some(r) => {
                close(r);
                Some((id, (id, size)))
            }
            None => Some((id, (id, size))),
        };
    }
    if let Some(r) = run {
        close(r);
    }
    (ids, ranges)
}

/// Most acknowledgements grouped into one request, and how long they may wait.
const ACK_GROUP: usize = 1000;
const ACK_DELAY: Duration = Duration::from_millis(10);

/// The task owning one partition's consume stream.
struct PartitionConsumer {
    conns: Arc<Connections>,
    topic: String,
    part: usize,
    subscribe: pb::Subscribe,
    reader: bool,
    /// Messages of this entry before the id (or up to it, when exclusive) are skipped:
    /// the broker delivers whole entries from a seek or reader start.
    skip: Option<(MessageId, bool)>,
    last_queued: Option<MessageId>,
    queue: u64,
    out: mpsc::UnboundedSender<Item>,
    flow: Arc<(std::sync::Mutex<Flow>, Notify)>,
    cmds: mpsc::UnboundedReceiver<Cmd>,
    conn: Option<Conn>,
    connecting: Option<Connecting>,
    reconnect_at: Option<Instant>,
    backoff: Backoff,
    /// Permits granted on the current stream and not yet used.
    granted: u64,
    /// Acknowledgements not sent yet, with their entry's batch size (0: not known).
    acks: Vec<(MessageId, u32)>,
    ack_deadline: Option<Instant>,
    closing: Option<oneshot::Sender<()>>,
    /// Seeks sent whose SeekDone has not arrived, oldest first, with the application's
    /// waiter (None for a reader's own re-seek). While any is pending, deliveries are
    /// stale and no permits are granted.
    seeks: std::collections::VecDeque<Option<oneshot::Sender<Result<()>>>>,
    /// A reader's last applied seek, replayed after a reconnect if nothing was read since.
    resume_seek: Option<pb::Seek>,
}

impl PartitionConsumer {
    async fn run(mut self) {
        self.grant();
        loop {
            let event = tokio::select! {
                c = self.cmds.recv(), if self.closing.is_none() => Event::Cmd(c),
                r = next_message(self.conn.as_mut().map(|c| &mut c.rx)) => Event::Response(r),
                r = poll_optional(&mut self.connecting), if self.connecting.is_some() => Event::Connected(Box::new(r)),
                _ = sleep_until(self.reconnect_at), if self.reconnect_at.is_some() => Event::Reconnect,
                _ = sleep_until(self.ack_deadline), if self.ack_deadline.is_some() => Event::FlushAcks,
                _ = self.flow.1.notified() => Event::Consumed,
            };
            match event {
                Event::Cmd(Some(Cmd::Ack(id, batch_size))) => {
                    self.acks.push((id, batch_size));
                    if self.acks.len() >= ACK_GROUP {
                        self.flush_acks();
                    } else if self.ack_deadline.is_none() {
                        self.ack_deadline = Some(Instant::now() + ACK_DELAY);
                    }
                }
                Event::Cmd(Some(Cmd::AckCumulative(id))) => {
                    self.flush_acks();
                    self.request(pb::consume_request::Request::Ack(pb::Ack {
                        ids: vec![id.to_wire()],
                        cumulative: true,
                        ranges: Vec::new(),
                    }));
                }
                Event::Cmd(Some(Cmd::Nack(id))) => {
                    self.flush_acks();
                    self.request(pb::consume_request::Request::Nack(pb::Nack {
                        ids: vec![id.to_wire()],
                    }));
                }
                Event::Cmd(Some(Cmd::Seek(seek, id, done))) => {
                    if self.conn.is_none() {
                        let _ = done.send(Err(Error::Transport(format!(
                            "not connected to the broker of {}; seek again once reconnected",
                            self.topic
                        ))));
                        continue;
                    }
                    self.flush_acks();
                    self.send_seek(seek, id, Some(done));
                }
                Event::Cmd(Some(Cmd::Close(done))) => {
                    self.flush_acks();
                    self.closing = Some(done);
                    match self.conn.as_mut() {
                        // Ending our side lets the broker finish with the acks sent.
                        Some(c) => {
                            let (dead, _) = mpsc::unbounded_channel();
                            c.tx = dead;
                        }
                        None => break,
                    }
                }
                Event::Cmd(None) => {
                    // The consumer was dropped.
                    self.flush_acks();
                    break;
                }
                Event::Response(r) => {
                    if self.closing.is_some() && !matches!(r, Some(Ok(_))) {
                        break;
                    }
                    self.on_response(r);
                }
                Event::Connected(r) => {
                    self.connecting = None;
                    self.on_connected(*r);
                }
                Event::Reconnect => {
                    self.reconnect_at = None;
                    let mut sub = self.subscribe.clone();
                    if self.reader {
                        if let Some(last) = self.last_queued {
                            sub.start_message_id = Some(last.to_wire());
                            self.skip = Some((last, false));
                        } else if let Some(id) = self.resume_seek.as_ref().and_then(|s| s.message_id) {
                            // Read nothing since seeking to `id`: start there again.
                            sub.start_message_id = Some(id);
                            self.skip = Some((MessageId::from_wire(&id), true));
                        }
                    }
                    let conns = self.conns.clone();
                    let timeout = conns.operation_timeout;
                    let topic = self.topic.clone();
                    self.connecting = Some(Box::pin(async move {
                        tokio::time::timeout(timeout, open(conns, sub))
                            .await
                            .map_err(|_| Error::Timeout(format!("resubscribing to {topic}")))?
                    }));
                }
                Event::FlushAcks => self.flush_acks(),
                Event::Consumed => self.grant(),
            }
        }
        if let Some(done) = self.closing.take() {
            let _ = done.send(());
        }
    }

    fn request(&mut self, r: pb::consume_request::Request) {
        if let Some(c) = &self.conn {
            let _ = c.tx.send(pb::ConsumeRequest { request: Some(r) });
        }
    }

    fn flush_acks(&mut self) {
        self.ack_deadline = None;
        if self.acks.is_empty() {
            return;
        }
        let (ids, ranges) = coalesce_acks(std::mem::take(&mut self.acks));
        self.request(pb::consume_request::Request::Ack(pb::Ack {
            ids,
            cumulative: false,
            ranges,
        }));
    }

    fn new_epoch(&mut self) {
        let mut f = self.flow.0.lock().expect("flow state");
        f.epoch += 1;
        f.queued = 0;
    }

    /// Grants permits so that granted + queued reaches the queue size, once it fell to
    /// half of it.
    fn grant(&mut self) {
        if self.conn.is_none() || self.closing.is_some() || !self.seeks.is_empty() {
            return;
        }
        let queued = self.flow.0.lock().expect("flow state").queued;
        let used = self.granted + queued;
        if used <= self.queue / 2 {
            let more = self.queue - used;
            self.granted += more;
            self.request(pb::consume_request::Request::Flow(pb::Flow {
                permits: more.min(u32::MAX as u64) as u32,
            }));
        }
    }

    fn on_response(&mut self, r: Option<Result<pb::ConsumeResponse, tonic::Status>>) {
        let resp = match r {
            Some(Ok(pb::ConsumeResponse { response: Some(resp) })) => resp,
            Some(Ok(_)) => return,
            Some(Err(s)) => {
                let e = Error::from_status(&s);
                tracing::debug!(topic = %self.topic, error = %e, "consume stream failed; reconnecting");
                if matches!(e, Error::Transport(_))
                    && let Some(c) = &self.conn
                {
                    self.conns.forget(&c.url);
                }
                return self.disconnected();
            }
            None => {
                tracing::debug!(topic = %self.topic, "consume stream ended; reconnecting");
                return self.disconnected();
            }
        };
        match resp {
            pb::consume_response::Response::Messages(m) if !self.seeks.is_empty() => {
                self.granted = self.granted.saturating_sub(m.messages.len() as u64);
            }
            pb::consume_response::Response::Entries(e) if !self.seeks.is_empty() => {
                // Stale, but their messages used permits.
                let n: usize = e
                    .entries
                    .into_iter()
                    .map(|e| match e.indexes.len() {
                        0 => Message::from_entry(&self.topic, e).map_or(0, |v| v.len()),
                        n => n,
                    })
                    .sum();
                self.granted = self.granted.saturating_sub(n as u64);
            }
            pb::consume_response::Response::Entries(e) => {
                let mut messages = Vec::new();
                for entry in e.entries {
                    match Message::from_entry(&self.topic, entry) {
                        Ok(v) => messages.extend(v),
                        Err(err) => {
                            // Nothing of this stream can be trusted now: what was not
                            // queued is redelivered on the next one.
                            tracing::warn!(topic = %self.topic, error = %err, "dropping the consume stream");
                            self.queue_messages(messages);
                            return self.disconnected();
                        }
                    }
                }
                self.queue_messages(messages);
            }
            pb::consume_response::Response::SeekDone(d) => {
                let waiter = self.seeks.pop_front().flatten();
                if let Some(e) = d.error {
                    // Nothing changed on the broker, but the queue was dropped: reconnect so
                    // the broker redelivers it.
                    if let Some(w) = waiter {
                        let _ = w.send(Err(Error::from_wire(&e)));
                    }
                    return self.disconnected();
                }
                if let Some(w) = waiter {
                    let _ = w.send(Ok(()));
                }
                if self.seeks.is_empty() {
                    // The broker reset this consumer's permits.
                    self.granted = 0;
                    self.backoff.reset();
                    self.grant();
                }
            }
            pb::consume_response::Response::Messages(m) => {
                let messages = m
                    .messages
                    .into_iter()
                    .map(|w| Message::from_wire(&self.topic, w))
                    .collect();
                self.queue_messages(messages);
            }
            pb::consume_response::Response::Error(e) => {
                let err = Error::from_wire(&e);
                if err.code() == Some(crate::ErrorCode::UnknownMessageId) {
                    tracing::debug!(topic = %self.topic, error = %err, "acknowledgement of a message no longer pending");
                } else {
                    tracing::warn!(topic = %self.topic, error = %err, "broker reported an error on the consume stream");
                }
            }
            pb::consume_response::Response::ActiveChange(a) => {
                tracing::debug!(topic = %self.topic, active = a.active, "failover consumer state");
            }
            pb::consume_response::Response::Subscribed(_) => {}
        }
    }

    /// Queues delivered messages for the application (dropping those before a seek or
    /// reader start of their entry), and grants more permits.
    fn queue_messages(&mut self, messages: Vec<Message>) {
        let mut last = None;
        let mut skipped = Vec::new();
        {
            let mut f = self.flow.0.lock().expect("flow state");
            for msg in messages {
                self.granted = self.granted.saturating_sub(1);
                if let Some((target, inclusive)) = self.skip {
                    if msg.id.same_entry(&target) {
                        let before = msg.id.batch_index < target.batch_index
                            || (!inclusive && msg.id.batch_index == target.batch_index);
                        if before {
                            skipped.push((msg.id, msg.batch_size));
                            continue;
                        }
                    } else {
                        self.skip = None;
                    }
                }
                last = Some(msg.id);
                f.queued += 1;
                let _ = self.out.send(Item {
                    part: self.part,
                    epoch: f.epoch,
                    msg,
                });
            }
        }
        if let Some(id) = last {
            self.last_queued = Some(id);
            self.backoff.reset();
        }
        if self.reader {
            // A reader acknowledges as it goes so the broker keeps nothing for it.
            if let Some(id) = last {
                self.request(pb::consume_request::Request::Ack(pb::Ack {
                    ids: vec![id.to_wire()],
                    cumulative: true,
                    ranges: Vec::new(),
                }));
            }
        } else if !skipped.is_empty() {
            // Before the seek target: acknowledged, like everything before it.
            self.acks.extend(skipped);
            self.flush_acks();
        }
        self.grant();
    }

    /// Sends a seek: queued messages, and those arriving until its SeekDone, are stale.
    fn send_seek(&mut self, seek: pb::Seek, id: Option<MessageId>, waiter: Option<oneshot::Sender<Result<()>>>) {
        if self.reader {
            self.last_queued = None;
            self.resume_seek = Some(seek);
        }
        self.request(pb::consume_request::Request::Seek(seek));
        self.skip = id.map(|id| (id, true));
        self.new_epoch();
        self.seeks.push_back(waiter);
    }

    fn disconnected(&mut self) {
        self.conn = None;
        for w in self.seeks.drain(..).flatten() {
            let _ = w.send(Err(Error::Transport(format!(
                "the connection to the broker of {} broke during a seek; seek again",
                self.topic
            ))));
        }
        self.acks.clear();
        self.ack_deadline = None;
        if self.connecting.is_none() && self.reconnect_at.is_none() {
            // Backoff resets only once a stream delivered something, so a broker that
            // accepts subscriptions and then fails them is not hammered.
            self.reconnect_at = Some(Instant::now() + self.backoff.next_delay());
        }
    }

    fn on_connected(&mut self, r: Result<(Conn, String)>) {
        match r {
            Ok((conn, _)) => {
                tracing::debug!(topic = %self.topic, "consumer reconnected");
                self.conn = Some(conn);
                self.granted = 0;
                if !self.reader {
                    self.new_epoch();
                }
                // A reader that seeked by time and read nothing since seeks again.
                if self.reader
                    && self.last_queued.is_none()
                    && let Some(seek) = self.resume_seek.filter(|s| s.message_id.is_none())
                {
                    self.send_seek(seek, None, None);
                }
                self.grant();
            }
            Err(e) => {
                let delay = self.backoff.next_delay();
                tracing::debug!(topic = %self.topic, error = %e, ?delay, "resubscribe failed; retrying");
                self.reconnect_at = Some(Instant::now() + delay);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use prost::Message as _;

    fn id(ledger: u64, entry: u64, index: u32) -> MessageId {
        MessageId {
            ledger_id: ledger,
            entry_id: entry,
            batch_index: index,
            partition: -1,
        }
    }

    fn ranges(r: &[pb::AckRange]) -> Vec<(MessageId, MessageId)> {
        r.iter()
            .map(|r| {
                (
                    MessageId::from_wire(r.first.as_ref().unwrap()),
                    MessageId::from_wire(r.last.as_ref().unwrap()),
                )
            })
            .collect()
    }

    #[test]
    fn acks_coalesce_into_ranges_only_over_what_was_acknowledged() {
        // Entry 5 of 3 messages whole, entry 6's first two (batch size known), a gap at
        // 6:2, then 6:3; 7:0 follows 6:3 only if 6 holds 4 (unknown here: ack_id).
        let acks = vec![
            (id(1, 6, 1), 4),
            (id(1, 5, 0), 3),
            (id(1, 5, 2), 3),
            (id(1, 5, 1), 3),
            (id(1, 6, 0), 4),
            (id(1, 6, 3), 0),
            (id(1, 7, 0), 1),
            (id(1, 5, 1), 3), // twice
        ];
        let (ids, r) = coalesce_acks(acks);
        assert_eq!(ranges(&r), vec![(id(1, 5, 0), id(1, 6, 1))]);
        let ids: Vec<MessageId> = ids.iter().map(MessageId::from_wire).collect();
        assert_eq!(ids, vec![id(1, 6, 3), id(1, 7, 0)]);
        // With 6's size known, 6:3 and 7:0 join; never across ledgers or partitions.
        let (ids, r) = coalesce_acks(vec![(id(1, 6, 3), 4), (id(1, 7, 0), 1), (id(2, 0, 0), 1)]);
        assert_eq!(ranges(&r), vec![(id(1, 6, 3), id(1, 7, 0))]);
        assert_eq!(ids.len(), 1);
        let mut other = id(1, 7, 1);
        other.partition = 3;
        let (ids, r) = coalesce_acks(vec![(id(1, 7, 0), 2), (other, 2)]);
        assert!(r.is_empty());
        assert_eq!(ids.len(), 2);
        // Extremes do not overflow.
        let top = id(u64::MAX, u64::MAX, u32::MAX);
        let (ids, r) = coalesce_acks(vec![(top, u32::MAX), (id(u64::MAX, u64::MAX, u32::MAX - 1), u32::MAX)]);
        assert_eq!(ranges(&r), vec![(id(u64::MAX, u64::MAX, u32::MAX - 1), top)]);
        assert!(ids.is_empty());
    }

    fn entry(indexes: Vec<u32>, messages: usize) -> pb::Entry {
        let batch = pb::EntryBatch {
            producer_name: "p".into(),
            sequence_id: 1,
            publish_time_ms: 1_000,
            messages: (0..messages)
                .map(|i| pb::EntryMessage {
                    payload: Bytes::from(format!("m{i}")),
                    key: if i % 2 == 0 { String::new() } else { format!("k{i}") },
                    properties: Default::default(),
                    event_time_ms: 0,
                })
                .collect(),
        };
        pb::Entry {
            id: Some(id(4, 9, 0).to_wire()),
            batch: Bytes::from(batch.encode_to_vec()),
            indexes,
            redelivery_count: 2,
        }
    }

    #[test]
    fn entries_split_into_the_listed_messages() {
        let all = Message::from_entry("t", entry(vec![], 3)).unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all[2].id, id(4, 9, 2));
        assert_eq!(all[1].key.as_deref(), Some("k1"));
        assert_eq!(all[0].key, None);
        assert!(
            all.iter()
                .all(|m| m.redelivery_count == 2 && m.batch_size == 3 && m.producer_name == "p")
        );
        let some = Message::from_entry("t", entry(vec![0, 2], 3)).unwrap();
        assert_eq!(
            some.iter().map(|m| &m.payload[..]).collect::<Vec<_>>(),
            vec![&b"m0"[..], &b"m2"[..]]
        );
        for bad in [vec![3], vec![2, 1], vec![1, 1], vec![u32::MAX]] {
            let e = Message::from_entry("t", entry(bad.clone(), 3)).unwrap_err().to_string();
            assert!(e.contains("4:9"), "{bad:?}: {e}");
        }
        let mut garbage = entry(vec![], 1);
        garbage.batch = Bytes::from_static(b"\xff\xff\xff");
        assert!(
            Message::from_entry("t", garbage)
                .unwrap_err()
                .to_string()
                .contains("undecodable")
        );
    }
}
