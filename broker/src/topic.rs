//! A topic on its owning broker: the managed ledger plus publishing (one producer batch =
//! one entry) and reading back messages with their ids.
//!
//! Invariants: a publish returns only after its entry is on an ack quorum (the managed
//! ledger's append); message ids are assigned by position, so publish order is id order.

use crate::dedup::{Check, Dedup};
use crate::entry_format;
use crate::error::{BrokerError, Result};
use crate::managed_ledger::ManagedLedger;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use strata_common::{EntryId, LedgerId, MessageId, Position, TopicName};
use strata_proto::broker::v1::{StoredBatch, StoredMessage};

/// 5 MiB, Pulsar's default maximum message (batch) size.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 5 << 20;
/// Room kept between `max_message_bytes` (payloads, keys, properties) and the largest
/// entry the bookies accept, for what a stored batch adds: the producer name, sequence
/// id, publish time and per-message framing (1 MiB: a batch of 100,000 small messages
/// adds ~1.2 MB at worst, and is then refused by the exact check).
pub const ENTRY_FRAMING_HEADROOM: usize = 1 << 20;
/// Longest producer name accepted (it is stored with every batch).
pub const MAX_PRODUCER_NAME_BYTES: usize = 1024;

/// Size limits of a topic's batches, and how much its clients may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest batch as producers count it: payloads, keys and property keys and values.
    pub max_message_bytes: usize,
    /// Largest stored entry (what the bookies accept): the encoded batch is checked
    /// against it exactly, so nothing a bookie would refuse is ever appended.
    pub max_entry_bytes: usize,
    pub clients: ClientLimits,
}

/// Bounds on what clients may open or hold on one topic (`[broker]` settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientLimits {
    /// Delivered but unacknowledged, per consumer.
    pub unacked: crate::dispatch::UnackedLimits,
    /// Producers connected at once.
    pub max_producers: usize,
    /// Subscriptions (durable and readers).
    pub max_subscriptions: usize,
    /// Consumers of one subscription connected at once.
    pub max_consumers_per_subscription: usize,
    /// Publish rate of the topic (each partition of a partitioned one), all producers
    /// together; unlimited by default.
    pub publish_rate_per_topic: crate::rate::Rate,
    /// Publish rate of each producer.
    pub publish_rate_per_producer: crate::rate::Rate,
    /// Dispatch rate of each subscription (to all its consumers together).
    pub dispatch_rate_per_subscription: crate::rate::Rate,
    /// Topics of one namespace, each partition counting one (0: unlimited).
    pub max_topics_per_namespace: u64,
}

impl Default for ClientLimits {
    fn default() -> Self {
        Self {
            unacked: Default::default(),
            max_producers: 1_000,
            max_subscriptions: 1_000,
            max_consumers_per_subscription: 1_000,
            publish_rate_per_topic: Default::default(),
            publish_rate_per_producer: Default::default(),
            dispatch_rate_per_subscription: Default::default(),
            max_topics_per_namespace: 0,
        }
    }
}

impl Limits {
    /// The limits for a broker configured with `max_message_bytes` writing to bookies
    /// that accept entries of up to `max_entry_bytes`: the message limit is lowered, if
    /// needed, to leave [`ENTRY_FRAMING_HEADROOM`] (or an eighth of the entry limit, if
    /// that is less: bookies configured for small entries) under the entry limit.
    pub fn new(max_message_bytes: usize, max_entry_bytes: usize) -> Self {
        let headroom = ENTRY_FRAMING_HEADROOM.min(max_entry_bytes / 8);
        Self {
            max_message_bytes: max_message_bytes.min(max_entry_bytes - headroom).max(1),
            max_entry_bytes,
            clients: ClientLimits::default(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::new(
            DEFAULT_MAX_MESSAGE_BYTES,
            strata_bookie::config::DEFAULT_MAX_ENTRY_BYTES as usize,
        )
    }
}

/// A stored message with its id and batch-level metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadMessage {
    pub id: MessageId,
    /// Messages in this message's entry (its batch), for entry-level acknowledgement.
    pub batch_size: u32,
    pub message: StoredMessage,
    /// Shared by every message of the entry: a batch of many small messages from a
    /// producer with a long name must not copy the name per message.
    pub producer_name: std::sync::Arc<str>,
    pub publish_time_ms: u64,
    /// The whole entry's encoded batch (after the format header), shared by its
    /// messages: consumers of the entry form get it as stored.
    pub entry: bytes::Bytes,
}

/// What a message counts against `max_message_bytes`: payload, key, property keys and
/// values.
pub fn batch_size(m: &StoredMessage) -> usize {
    m.payload.len() + m.key.len() + m.properties.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
}

pub struct Topic {
    ml: Arc<ManagedLedger>,
    partition: i32,
    limits: Limits,
    /// The client limits in force: `limits.clients` until a namespace policy changes
    /// them ([`Topic::set_client_limits`]).
    clients: std::sync::RwLock<ClientLimits>,
    dedup: Arc<Dedup>,
    /// Names of the producers connected now.
    producers: Arc<std::sync::Mutex<std::collections::HashSet<Arc<str>>>>,
    counters: crate::metrics::TopicCounters,
    /// The topic's publish rate limit, shared by its producers.
    publish_limiter: crate::rate::Limiter,
}

/// Holds a producer name on its topic while alive (see [`Topic::producer_connected`]).
pub struct ProducerGuard {
    names: Arc<std::sync::Mutex<std::collections::HashSet<Arc<str>>>>,
    name: Arc<str>,
}

impl Drop for ProducerGuard {
    fn drop(&mut self) {
        self.names.lock().expect("producer names").remove(&self.name);
    }
}

/// A publish's outcome: the id of the batch's first message, and whether the batch was a
/// resend of one already stored (then nothing was appended).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Published {
    /// `None` only for a duplicate stored too long ago for its position to be known.
    pub first: Option<MessageId>,
    pub duplicate: bool,
}

impl Topic {
    /// A topic with empty deduplication state (a new topic, or tests).
    pub fn new(ml: Arc<ManagedLedger>, limits: Limits) -> Self {
        let dedup = Arc::new(Dedup::new(&ml.topic().path()));
        Self::with_dedup(ml, limits, dedup)
    }

    /// A topic with deduplication state rebuilt by [`Dedup::load`].
    pub fn with_dedup(ml: Arc<ManagedLedger>, limits: Limits, dedup: Arc<Dedup>) -> Self {
        let partition = ml.topic().partition_of().map_or(-1, |(_, i)| i as i32);
        Self {
            ml,
            partition,
            limits,
            clients: std::sync::RwLock::new(limits.clients),
            dedup,
            producers: Default::default(),
            counters: Default::default(),
            publish_limiter: crate::rate::Limiter::new(limits.clients.publish_rate_per_topic),
        }
    }

    /// Registers a connected producer until the guard is dropped. A name is held by one
    /// producer at a time (`ProducerBusy`): another client taking it could otherwise
    /// push the name's sequence ids ahead and have the owner's sends taken as resends.
    pub fn producer_connected(&self, name: &str) -> Result<ProducerGuard> {
        let mut names = self.producers.lock().expect("producer names");
        if names.contains(name) {
            return Err(BrokerError::ProducerBusy(format!(
                "a producer named {name:?} is already connected to {}; use another name, or retry once it has disconnected",
                self.name()
            )));
        }
        let max = self.client_limits().max_producers;
        if names.len() >= max {
            return Err(BrokerError::LimitExceeded(format!(
                "{} already has {max} producers connected (broker setting max_producers_per_topic)",
                self.name()
            )));
        }
        let name: Arc<str> = name.into();
        names.insert(name.clone());
        Ok(ProducerGuard {
            names: self.producers.clone(),
            name,
        })
    }

    /// Producers connected now.
    /// Messages and bytes in and out of this topic on this broker since it was loaded.
    pub fn counters(&self) -> &crate::metrics::TopicCounters {
        &self.counters
    }

    pub fn producer_count(&self) -> u32 {
        self.producers.lock().expect("producer names").len() as u32
    }

    pub fn name(&self) -> &TopicName {
        self.ml.topic()
    }

    pub fn managed_ledger(&self) -> &Arc<ManagedLedger> {
        &self.ml
    }

    pub fn dedup(&self) -> &Arc<Dedup> {
        &self.dedup
    }

    /// Stores a producer batch as one entry, unless it is a resend of a batch already
    /// stored (same producer name, sequence id not above the last one accepted). The
    /// decision is taken when this is called, so call it in the producer's send order;
    /// the returned future stores (or waits for the original) and needs no borrow.
    pub fn publish(
        &self,
        producer: &str,
        sequence_id: u64,
        messages: Vec<StoredMessage>,
    ) -> impl std::future::Future<Output = Result<Published>> + Send + 'static {
        // Every size check comes before deduplication counts the batch as accepted.
        let batch = self.check_batch(&messages).map(|()| StoredBatch {
            producer_name: producer.to_string(),
            sequence_id,
            publish_time_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            messages,
        });
        let batch = batch.and_then(|b| {
            let size = entry_format::encoded_len(&b);
            if size > self.limits.max_entry_bytes {
                return Err(BrokerError::TooLarge {
                    what: "message batch as stored (with its producer name and per-message framing)",
                    size,
                    limit: self.limits.max_entry_bytes,
                });
            }
            Ok(b)
        });
        let decision = match &batch {
            Ok(_) if !producer.is_empty() => Some(self.dedup.check(producer, sequence_id)),
            _ => None,
        };
        let (ml, dedup, partition) = (self.ml.clone(), self.dedup.clone(), self.partition);
        let producer = producer.to_string();
        let at = move |position| MessageId {
            position,
            batch_index: 0,
            partition,
        };
        async move {
            let batch = batch?;
            let decision = match decision {
                Some(Check::Pending(rx)) => dedup.wait(&producer, sequence_id, rx).await?,
                Some(d) => d,
                None => Check::New,
            };
            match decision {
                Check::Stored { position, .. } => {
                    return Ok(Published {
                        first: Some(at(position)),
                        duplicate: true,
                    });
                }
                Check::StoredUnknown => {
                    return Ok(Published {
                        first: None,
                        duplicate: true,
                    });
                }
                Check::Pending(_) => unreachable!("`wait` resolves pending duplicates"),
                Check::New => {}
            }
            let count = batch.messages.len() as u32;
            let entry = entry_format::encode(&batch);
            match ml.append(entry).await {
                Ok(position) => {
                    if !producer.is_empty() {
                        dedup.stored(&producer, sequence_id, position, count);
                    }
                    Ok(Published {
                        first: Some(at(position)),
                        duplicate: false,
                    })
                }
                Err(e) => {
                    dedup.failed(&producer);
                    Err(e)
                }
            }
        }
    }

    fn check_batch(&self, messages: &[StoredMessage]) -> Result<()> {
        if messages.is_empty() {
            return Err(BrokerError::InvalidArgument(
                "a batch needs at least one message".into(),
            ));
        }
        if messages.len() > entry_format::MAX_BATCH_MESSAGES {
            return Err(BrokerError::InvalidArgument(format!(
                "a batch holds at most {} messages, got {}",
                entry_format::MAX_BATCH_MESSAGES,
                messages.len()
            )));
        }
        let size: usize = messages.iter().map(batch_size).sum();
        if size > self.limits.max_message_bytes {
            return Err(BrokerError::TooLarge {
                what: "message batch (payloads, keys and properties)",
                size,
                limit: self.limits.max_message_bytes,
            });
        }
        Ok(())
    }

    /// The batch size limits, and the client limits in force now.
    pub fn limits(&self) -> Limits {
        Limits {
            clients: self.client_limits(),
            ..self.limits
        }
    }

    /// The client limits in force now.
    pub fn client_limits(&self) -> ClientLimits {
        *self.clients.read().expect("client limits")
    }

    /// Changes the client limits of the loaded topic (its namespace's policies changed).
    /// The topic's publish rate changes at once; producers and subscriptions follow their
    /// rates on their next batch; counts apply to clients connecting from now on.
    pub fn set_client_limits(&self, clients: ClientLimits) {
        *self.clients.write().expect("client limits") = clients;
        self.publish_limiter.set_rate(clients.publish_rate_per_topic);
    }

    /// The topic's publish rate limit (all producers together).
    pub fn publish_limiter(&self) -> &crate::rate::Limiter {
        &self.publish_limiter
    }

    /// How much each consumer of this topic may hold unacknowledged.
    pub fn unacked_limits(&self) -> crate::dispatch::UnackedLimits {
        self.client_limits().unacked
    }

    /// Reads the messages of up to `max_entries` entries from `from` on.
    pub async fn read(&self, from: Position, max_entries: usize) -> Result<Vec<ReadMessage>> {
        let mut out = Vec::new();
        for (position, payload) in self.ml.read(from, max_entries).await? {
            let batch = entry_format::decode(&payload).map_err(|e| match e {
                BrokerError::Corruption(m) => BrokerError::Corruption(format!("{} entry {position}: {m}", self.name())),
                other => other,
            })?;
            let batch_size = batch.messages.len() as u32;
            let producer_name: std::sync::Arc<str> = batch.producer_name.into();
            let entry = entry_format::body(&payload);
            for (i, message) in batch.messages.into_iter().enumerate() {
                out.push(ReadMessage {
                    batch_size,
                    id: MessageId {
                        position,
                        batch_index: i as u32,
                        partition: self.partition,
                    },
                    message,
                    producer_name: producer_name.clone(),
                    publish_time_ms: batch.publish_time_ms,
                    entry: entry.clone(),
                });
            }
        }
        Ok(out)
    }

    /// The first entry stored at or after `time_ms` (publish time), or the position after
    /// the last entry if none is. Binary search, reading one entry per probe; publish times
    /// are assumed not to decrease along the topic (one owner stamps them at a time).
    pub async fn find_by_publish_time(&self, time_ms: u64) -> Result<Position> {
        let lac = self.ml.last_confirmed();
        let segments: Vec<(LedgerId, u64)> = self
            .ml
            .ledgers()
            .await
            .into_iter()
            .map(|l| {
                let id = LedgerId::new(l.id).expect("stored ids are valid");
                let count = match lac {
                    Some(p) if p.ledger == id && l.entries == 0 => p.entry.get() + 1,
                    _ => l.entries,
                };
                (id, count)
            })
            .collect();
        let Some(&(last_ledger, last_count)) = segments.last() else {
            return Err(BrokerError::Closed(format!("{} has no ledgers", self.name())));
        };
        let at = |mut idx: u64| {
            for &(ledger, count) in &segments {
                if idx < count {
                    return Position {
                        ledger,
                        entry: EntryId::new(idx),
                    };
                }
                idx -= count;
            }
            Position {
                ledger: last_ledger,
                entry: EntryId::new(last_count),
            }
        };
        let (mut lo, mut hi) = (0u64, segments.iter().map(|s| s.1).sum::<u64>());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let pos = at(mid);
            let entry = self.ml.read(pos, 1).await?;
            let Some((_, payload)) = entry.first() else {
                // Trimmed meanwhile: treat as older than anything asked for.
                lo = mid + 1;
                continue;
            };
            let batch = entry_format::decode(payload)?;
            if batch.publish_time_ms >= time_ms {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        Ok(at(lo))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_limit_leaves_room_for_framing_under_the_entry_limit() {
        // Defaults: 5 MiB of messages under 6 MiB entries.
        assert_eq!(Limits::default().max_message_bytes, 5 << 20);
        assert_eq!(Limits::default().max_entry_bytes, 6 << 20);
        // Bookies at 5 MiB: the message limit drops by an eighth (640 KiB).
        assert_eq!(Limits::new(5 << 20, 5 << 20).max_message_bytes, (5 << 20) - (5 << 17));
        // Large entries: 1 MiB of headroom at most.
        assert_eq!(Limits::new(64 << 20, 32 << 20).max_message_bytes, 31 << 20);
        // Small entries keep an eighth as headroom, never a useless limit.
        assert_eq!(Limits::new(5 << 20, 1 << 20).max_message_bytes, (1 << 20) - (1 << 17));
        assert_eq!(Limits::new(5 << 20, 1).max_message_bytes, 1);
        // A smaller configured message limit stands.
        assert_eq!(Limits::new(1000, 6 << 20).max_message_bytes, 1000);
    }
}
