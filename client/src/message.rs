//! Messages as applications see them: [`MessageId`], [`ProducerMessage`] (what a producer
//! sends) and [`Message`] (what a consumer receives).

use crate::error::{Error, Result};
use bytes::Bytes;
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use strata_proto::v1 as pb;

/// Identifies a message: the entry holding it (`ledger_id`, `entry_id`), its index in
/// the entry's batch, and its partition (-1 for a non-partitioned topic). Ordered within a
/// partition in publish order. Written `ledger:entry:batch_index:partition`; parsing also
/// takes `ledger:entry` and `ledger:entry:batch_index` (batch index 0, partition -1).
///
/// ```
/// use strata_client::MessageId;
/// let id: MessageId = "7:42:3:-1".parse().unwrap();
/// assert_eq!((id.ledger_id, id.entry_id, id.batch_index, id.partition), (7, 42, 3, -1));
/// assert_eq!(id.to_string(), "7:42:3:-1");
/// assert!(id < "7:43:0:-1".parse().unwrap());
/// assert_eq!("7:42".parse::<MessageId>().unwrap(), "7:42:0:-1".parse().unwrap());
/// assert!("7".parse::<MessageId>().is_err() && "1:2:3:4:5".parse::<MessageId>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId {
    pub ledger_id: u64,
    pub entry_id: u64,
    pub batch_index: u32,
    pub partition: i32,
}

impl MessageId {
    pub(crate) fn from_wire(id: &pb::MessageId) -> Self {
        Self {
            ledger_id: id.ledger_id,
            entry_id: id.entry_id,
            batch_index: id.batch_index,
            partition: id.partition,
        }
    }

    pub(crate) fn to_wire(self) -> pb::MessageId {
        pb::MessageId {
            ledger_id: self.ledger_id,
            entry_id: self.entry_id,
            batch_index: self.batch_index,
            partition: self.partition,
        }
    }

    /// Whether both ids name the same entry (producer batch).
    pub(crate) fn same_entry(&self, other: &MessageId) -> bool {
        self.ledger_id == other.ledger_id && self.entry_id == other.entry_id
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}:{}",
            self.ledger_id, self.entry_id, self.batch_index, self.partition
        )
    }
}

impl FromStr for MessageId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::InvalidArgument(format!(
                "message id {s:?} is not ledger:entry[:batch_index[:partition]]"
            ))
        };
        let parts: Vec<&str> = s.split(':').collect();
        if !(2..=4).contains(&parts.len()) {
            return Err(bad());
        }
        Ok(Self {
            ledger_id: parts[0].parse().map_err(|_| bad())?,
            entry_id: parts[1].parse().map_err(|_| bad())?,
            batch_index: parts.get(2).map_or(Ok(0), |b| b.parse()).map_err(|_| bad())?,
            partition: parts.get(3).map_or(Ok(-1), |p| p.parse()).map_err(|_| bad())?,
        })
    }
}

fn to_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A message to send: payload plus optional key, properties and event time.
///
/// ```
/// use strata_client::ProducerMessage;
/// let m = ProducerMessage::new("order created")
///     .key("customer-17")
///     .property("source", "web")
///     .event_time(std::time::SystemTime::now());
/// assert_eq!(m.payload(), &b"order created"[..]);
/// let plain: ProducerMessage = "just a payload".into();
/// ```
#[derive(Debug, Clone, Default)]
pub struct ProducerMessage {
    pub(crate) inner: pb::OutgoingMessage,
}

impl ProducerMessage {
    pub fn new(payload: impl Into<Bytes>) -> Self {
        Self {
            inner: pb::OutgoingMessage {
                payload: payload.into(),
                ..Default::default()
            },
        }
    }

    /// The key: messages with the same key go to the same partition and, on Key_Shared
    /// subscriptions, to the same consumer in order.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.inner.key = key.into();
        self
    }

    /// Adds an application property.
    pub fn property(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.inner.properties.insert(name.into(), value.into());
        self
    }

    /// The application's event time (kept with the message, not interpreted).
    pub fn event_time(mut self, t: SystemTime) -> Self {
        self.inner.event_time_ms = to_ms(t);
        self
    }

    pub fn payload(&self) -> &Bytes {
        &self.inner.payload
    }
}

impl From<Bytes> for ProducerMessage {
    fn from(b: Bytes) -> Self {
        Self::new(b)
    }
}

impl From<Vec<u8>> for ProducerMessage {
    fn from(b: Vec<u8>) -> Self {
        Self::new(b)
    }
}

impl From<&'static str> for ProducerMessage {
    fn from(s: &'static str) -> Self {
        Self::new(Bytes::from_static(s.as_bytes()))
    }
}

impl From<String> for ProducerMessage {
    fn from(s: String) -> Self {
        Self::new(s)
    }
}

/// A received message.
///
/// ```no_run
/// # async fn example(consumer: strata_client::Consumer) -> strata_client::Result<()> {
/// let msg = consumer.receive().await?;
/// println!(
///     "{} from {} (key {:?}, delivered {} times before): {}",
///     msg.id,
///     msg.producer_name,
///     msg.key,
///     msg.redelivery_count,
///     String::from_utf8_lossy(&msg.payload)
/// );
/// consumer.ack(&msg).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Message {
    pub id: MessageId,
    /// The topic (the partition's name for partitioned topics).
    pub topic: String,
    pub payload: Bytes,
    pub key: Option<String>,
    pub properties: HashMap<String, String>,
    /// When the broker stored the message.
    pub publish_time: SystemTime,
    pub event_time: Option<SystemTime>,
    pub producer_name: String,
    /// Deliveries before this one (negative acks, ack timeouts, consumers gone).
    pub redelivery_count: u32,
    /// Messages in this message's entry (producer batch); 0 when not known (the
    /// per-message form does not say). Lets acknowledgements coalesce across entries.
    pub(crate) batch_size: u32,
}

impl Message {
    pub(crate) fn from_wire(topic: &str, m: pb::Message) -> Self {
        let at = |ms: u64| UNIX_EPOCH + Duration::from_millis(ms);
        Self {
            id: m.id.as_ref().map(MessageId::from_wire).unwrap_or(MessageId {
                ledger_id: 0,
                entry_id: 0,
                batch_index: 0,
                partition: -1,
            }),
            topic: topic.to_string(),
            payload: m.payload,
            key: (!m.key.is_empty()).then_some(m.key),
            properties: m.properties,
            publish_time: at(m.publish_time_ms),
            event_time: (m.event_time_ms > 0).then(|| at(m.event_time_ms)),
            producer_name: m.producer_name,
            redelivery_count: m.redelivery_count,
            batch_size: 0,
        }
    }

    /// The messages an `Entry` delivers (the entry form): its stored batch split, keeping
    /// the listed batch indexes (all when none is listed), in batch order.
    pub(crate) fn from_entry(topic: &str, entry: pb::Entry) -> Result<Vec<Self>> {
        use prost::Message as _;
        let id = entry
            .id
            .as_ref()
            .map(MessageId::from_wire)
            .ok_or_else(|| Error::Transport(format!("the broker sent an entry of {topic} without an id")))?;
        let batch = pb::EntryBatch::decode(entry.batch)
            .map_err(|e| Error::Transport(format!("the broker sent an undecodable entry {id} of {topic}: {e}")))?;
        let n = batch.messages.len();
        if let Some(bad) = entry.indexes.iter().find(|i| **i as usize >= n) {
            return Err(Error::Transport(format!(
                "the broker delivered message {bad} of entry {id} of {topic}, which holds {n}"
            )));
        }
        let at = |ms: u64| UNIX_EPOCH + Duration::from_millis(ms);
        let publish_time = at(batch.publish_time_ms);
        let mut wanted = entry.indexes.iter().map(|i| *i as usize).peekable();
        let all = entry.indexes.is_empty();
        let mut out = Vec::with_capacity(if all { n } else { entry.indexes.len() });
        for (i, m) in batch.messages.into_iter().enumerate() {
            if !all {
                if wanted.peek() != Some(&i) {
                    continue;
                }
                wanted.next();
            }
            out.push(Self {
                id: MessageId {
                    batch_index: i as u32,
                    ..id
                },
                topic: topic.to_string(),
                payload: m.payload,
                key: (!m.key.is_empty()).then_some(m.key),
                properties: m.properties,
                publish_time,
                event_time: (m.event_time_ms > 0).then(|| at(m.event_time_ms)),
                producer_name: batch.producer_name.clone(),
                redelivery_count: entry.redelivery_count,
                batch_size: n as u32,
            });
        }
        if wanted.next().is_some() {
            return Err(Error::Transport(format!(
                "the broker listed the messages of entry {id} of {topic} out of order"
            )));
        }
        Ok(out)
    }
}
