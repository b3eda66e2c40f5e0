//! Readers: a non-durable subscription per partition, read from a chosen position, that
//! leaves nothing behind (no stored position, no retention held back).

use crate::Client;
use crate::consumer::{Consumer, InitialPosition, ReaderStart, initial_wire};
use crate::error::Result;
use crate::message::{Message, MessageId};
use std::time::SystemTime;
use strata_proto::v1 as pb;

/// Where a [`Reader`] starts.
///
/// ```
/// use strata_client::{MessageId, StartPosition};
/// let from_id = StartPosition::MessageId("7:42:0:-1".parse::<MessageId>().unwrap());
/// assert_ne!(from_id, StartPosition::Earliest);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartPosition {
    Earliest,
    Latest,
    /// After this message (or at it, with [`ReaderBuilder::start_inclusive`]).
    MessageId(MessageId),
}

/// Settings of a [`Reader`]; start from [`Client::reader`].
///
/// ```no_run
/// # async fn example(client: strata_client::Client) -> strata_client::Result<()> {
/// use strata_client::StartPosition;
/// let reader = client
///     .reader("public/default/audit")
///     .start(StartPosition::Earliest)
///     .create()
///     .await?;
/// # Ok(()) }
/// ```
pub struct ReaderBuilder {
    client: Client,
    topic: String,
    start: StartPosition,
    inclusive: bool,
    queue: u32,
}

impl ReaderBuilder {
    pub(crate) fn new(client: Client, topic: String) -> Self {
        Self {
            client,
            topic,
            start: StartPosition::Earliest,
            inclusive: false,
            queue: 1000,
        }
    }

    /// Where reading starts (default Earliest).
    pub fn start(mut self, s: StartPosition) -> Self {
        self.start = s;
        self
    }

    /// With [`StartPosition::MessageId`]: include that message (default: start after it).
    pub fn start_inclusive(mut self, inclusive: bool) -> Self {
        self.inclusive = inclusive;
        self
    }

    /// Messages buffered per partition (default 1000).
    pub fn receiver_queue_size(mut self, n: u32) -> Self {
        self.queue = n.max(1);
        self
    }

    /// Opens the reader (a non-durable subscription on every partition).
    pub async fn create(self) -> Result<Reader> {
        let (initial, from) = match self.start {
            StartPosition::Earliest => (InitialPosition::Earliest, None),
            StartPosition::Latest => (InitialPosition::Latest, None),
            StartPosition::MessageId(id) => (InitialPosition::Earliest, Some(id)),
        };
        let template = pb::Subscribe {
            topic: String::new(),
            subscription: String::new(),
            r#type: pb::SubscriptionType::Exclusive as i32,
            initial_position: initial_wire(initial),
            consumer_name: String::new(),
            ack_timeout_ms: 0,
            non_durable: true,
            start_message_id: None,
            // Stored batches as they are, split here: the broker re-encodes nothing.
            delivery_form: pb::DeliveryForm::Entries as i32,
        };
        let start = ReaderStart {
            from,
            inclusive: self.inclusive,
        };
        let consumer = Consumer::start(&self.client, self.topic, template, self.queue, Some(start)).await?;
        Ok(Reader { consumer })
    }
}

/// Reads a topic from a position, without a durable subscription: nothing it reads is
/// acknowledged for anyone else, nothing is kept for it after it closes.
///
/// ```no_run
/// # async fn example(client: strata_client::Client) -> strata_client::Result<()> {
/// let reader = client.reader("public/default/audit").create().await?;
/// while let Ok(msg) = tokio::time::timeout(std::time::Duration::from_secs(1), reader.read_next()).await {
///     let msg = msg?;
///     println!("{}: {}", msg.id, String::from_utf8_lossy(&msg.payload));
/// }
/// # Ok(()) }
/// ```
pub struct Reader {
    consumer: Consumer,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("topic", &self.consumer.topic())
            .finish_non_exhaustive()
    }
}

impl Reader {
    /// The next message, waiting until one arrives.
    pub async fn read_next(&self) -> Result<Message> {
        self.consumer.receive().await
    }

    /// Moves the reader to the first message published at or after `time`.
    pub async fn seek_time(&self, time: SystemTime) -> Result<()> {
        self.consumer.seek_time(time).await
    }

    /// Moves the reader so the next message read is `id`.
    pub async fn seek(&self, id: MessageId) -> Result<()> {
        self.consumer.seek(id).await
    }

    pub async fn close(&self) -> Result<()> {
        self.consumer.close().await
    }
}
