//! A subscription on its topic's owning broker: cursor + dispatcher + a dispatch loop that
//! reads the topic and pushes messages to consumers as their permits allow.
//!
//! - Reading starts after the cursor's mark-delete position and skips entries that were
//!   acknowledged individually. Messages are read ahead only while some consumer has
//!   permits (flow control), at most [`READ_BATCH`] entries and about [`READ_BYTES`] at a
//!   time (the entry count follows the last batch's entry size). While messages
//!   are in hand (a consumer catching up), the next batch is read by a task of its own,
//!   so reading (bookie reads, decoding) overlaps dispatching what is in hand: at most one
//!   batch ahead, so a subscription holds at most two batches; one begun before a seek is
//!   dropped unused.
//! - A message is acknowledged per message (or in ranges of messages pending on the
//!   consumer); an entry (a producer batch) is acknowledged in the cursor once every
//!   message of it is. Batch-level progress is in memory only: after
//!   a crash a partly acknowledged batch is redelivered whole (at-least-once).
//! - The cursor is persisted in batches by [`Subscription::persist`], which the owner calls
//!   on a timer and on close.
//! - Consumers receive deliveries on a channel holding only what is pending on them, which
//!   the dispatcher bounds by the permits they granted and by the topic's
//!   [`crate::dispatch::UnackedLimits`]: a consumer that never acknowledges or never reads
//!   cannot make the broker buffer a backlog for it.

use crate::cursor::{Cursor, Layout};
use crate::dispatch::{ConsumerId, Delivery, Dispatcher, SubType};
use crate::error::{BrokerError, Result};
use crate::metrics::ConsumeStage;
use crate::topic::{ReadMessage, Topic};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use strata_common::{MessageId, Position, SubscriptionName};
use tokio::sync::{Mutex, Notify, mpsc};

/// Entries read from the topic per round.
pub const READ_BATCH: usize = 100;

/// About how many payload bytes a read brings in: large entries make smaller batches, so
/// a subscription holds a bounded amount (two batches with one read ahead).
pub const READ_BYTES: usize = 16 << 20;

/// Entries of a subscription's first read, before any entry size is known.
pub const FIRST_READ: usize = 8;

/// Entries to read next, given the last batch held `entries` entries of `bytes` payload
/// bytes: as many as fit [`READ_BYTES`] at that size, between 1 and [`READ_BATCH`].
fn batch_entries(entries: usize, bytes: usize) -> usize {
    if entries == 0 {
        return FIRST_READ;
    }
    let per_entry = (bytes / entries).max(1);
    (READ_BYTES / per_entry).clamp(1, READ_BATCH)
}

/// Entries and payload bytes of a read batch (messages of an entry are adjacent).
fn batch_size(batch: &[ReadMessage]) -> (usize, usize) {
    let mut entries = 0;
    let mut last = None;
    let mut bytes = 0;
    for m in batch {
        if last != Some(m.id.position) {
            entries += 1;
            last = Some(m.id.position);
        }
        bytes += m.message.payload.len() + m.message.key.len();
    }
    (entries, bytes)
}

/// Reads for a subscription, timed as [`ConsumeStage::Read`].
async fn timed_read(topic: &Topic, from: Position, entries: usize) -> Result<Vec<ReadMessage>> {
    let start = std::time::Instant::now();
    let r = topic.read(from, entries).await;
    ConsumeStage::Read.time(start);
    r
}

/// A batch being read ahead, from `from`; the read stops if this is dropped.
struct ReadAhead {
    from: Position,
    task: tokio::task::JoinHandle<Result<Vec<ReadMessage>>>,
}

impl ReadAhead {
    fn start(topic: &Arc<Topic>, from: Position, entries: usize) -> Self {
        let topic = topic.clone();
        Self {
            from,
            task: tokio::spawn(async move { timed_read(&topic, from, entries).await }),
        }
    }

    async fn result(mut self) -> Result<Vec<ReadMessage>> {
        match (&mut self.task).await {
            Ok(r) => r,
            Err(e) => Err(BrokerError::Unavailable(format!("reading ahead stopped: {e}"))),
        }
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Where a new subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitialPosition {
    Latest,
    Earliest,
    /// The next message delivered is the first of this entry (admin-created
    /// subscriptions starting at a time).
    At(Position),
}

struct Inner {
    cursor: Cursor,
    dispatcher: Dispatcher,
    /// Next entry to read from the topic.
    read_position: Option<Position>,
    fresh: VecDeque<ReadMessage>,
    /// Entries with some (not all) messages acknowledged: acknowledged batch indexes.
    partial: HashMap<Position, BTreeSet<u32>>,
    consumers: HashMap<ConsumerId, mpsc::UnboundedSender<Vec<Delivery>>>,
    next_consumer: ConsumerId,
}

/// A subscription. Share it behind an `Arc`; [`Subscription::run`] drives delivery.
pub struct Subscription {
    name: SubscriptionName,
    topic: Arc<Topic>,
    inner: Mutex<Inner>,
    wake: Notify,
    /// The dispatch rate limit (all consumers together), if any.
    limiter: crate::rate::Limiter,
}

/// Refuses a seek to a position no entry of the topic has or will next have: past the
/// end (the next entry to be written), or past the last entry of a listed closed ledger.
/// Such a position would become a mark-delete beyond unread entries: the backlog would
/// read 0 and retention would delete what was never consumed. `counts` are the ledgers
/// as (id, entries), oldest first, the last one counted up to its last confirmed entry.
fn check_seek(topic: &strata_common::TopicName, counts: &[(u64, u64)], p: Position) -> Result<()> {
    let (ledger, entry) = (p.ledger.get(), p.entry.get());
    let end = counts.last().copied().unwrap_or((0, 0));
    let within_ledger = counts
        .iter()
        .find(|(id, _)| *id == ledger)
        .is_none_or(|(_, n)| entry <= *n);
    if (ledger, entry) > end || !within_ledger {
        return Err(BrokerError::InvalidArgument(format!(
            "cannot seek {topic} to {ledger}:{entry}: no such position (its next message will be {}:{})",
            end.0, end.1
        )));
    }
    Ok(())
}

async fn layout(topic: &Topic) -> Layout {
    Layout {
        ledgers: topic
            .managed_ledger()
            .ledgers()
            .await
            .into_iter()
            .map(|l| (l.id, l.entries))
            .collect(),
    }
}

impl Subscription {
    /// Opens (creating if needed) a subscription. An existing one keeps its type; asking
    /// for another type is an error.
    pub async fn open(
        topic: Arc<Topic>,
        name: SubscriptionName,
        sub_type: SubType,
        initial: InitialPosition,
    ) -> Result<Arc<Self>> {
        let ml = topic.managed_ledger().clone();
        let start = match initial {
            InitialPosition::Latest => ml.last_confirmed(),
            InitialPosition::Earliest => None,
            InitialPosition::At(p) => layout(&topic).await.prev(p),
        };
        let store = ml_store(&topic);
        let cursor = Cursor::open(store, topic.name(), &name, sub_type.name(), start).await?;
        if cursor.sub_type() != sub_type.name() {
            return Err(BrokerError::SubscriptionTypeMismatch(format!(
                "subscription {name} on {} is {}, not {}; use the same type or another subscription name",
                topic.name(),
                cursor.sub_type(),
                sub_type.name()
            )));
        }
        Ok(Self::with_cursor(topic, name, sub_type, cursor).await)
    }

    /// A non-durable (reader's) Exclusive subscription: kept in memory only, starting at
    /// the entry `start` (`None`: at `initial`).
    pub async fn open_non_durable(
        topic: Arc<Topic>,
        name: SubscriptionName,
        start: Option<Position>,
        initial: InitialPosition,
    ) -> Arc<Self> {
        let ml = topic.managed_ledger().clone();
        let l = layout(&topic).await;
        let before = match (start, initial) {
            (Some(p), _) => l.prev(p),
            (None, InitialPosition::Latest) => ml.last_confirmed(),
            (None, InitialPosition::Earliest) => None,
            (None, InitialPosition::At(p)) => l.prev(p),
        };
        let cursor = Cursor::non_durable(ml_store(&topic), SubType::Exclusive.name(), before);
        Self::with_cursor(topic, name, SubType::Exclusive, cursor).await
    }

    async fn with_cursor(topic: Arc<Topic>, name: SubscriptionName, sub_type: SubType, cursor: Cursor) -> Arc<Self> {
        let l = layout(&topic).await;
        let read_position = match cursor.state.mark_delete() {
            Some(m) => Some(l.next(m)),
            None => l.first(),
        };
        let limits = topic.unacked_limits();
        let topic_limits = topic.client_limits();
        Arc::new(Self {
            name,
            topic,
            inner: Mutex::new(Inner {
                cursor,
                dispatcher: Dispatcher::with_limits(sub_type, limits),
                read_position,
                fresh: VecDeque::new(),
                partial: HashMap::new(),
                consumers: HashMap::new(),
                next_consumer: 1,
            }),
            wake: Notify::new(),
            limiter: crate::rate::Limiter::new(topic_limits.dispatch_rate_per_subscription),
        })
    }

    /// Whether the cursor is persisted (false for readers).
    pub async fn is_durable(&self) -> bool {
        self.inner.lock().await.cursor.is_durable()
    }

    /// The mark-delete position (everything up to it acknowledged), for retention.
    pub async fn mark_delete(&self) -> Option<Position> {
        self.inner.lock().await.cursor.state.mark_delete()
    }

    pub fn name(&self) -> &SubscriptionName {
        &self.name
    }

    /// Adds a consumer; returns its id and the channel its deliveries arrive on. Its
    /// unacknowledged messages are redelivered after `ack_timeout` (its own: other
    /// consumers of the subscription keep theirs).
    pub async fn add_consumer(
        &self,
        ack_timeout: Option<Duration>,
    ) -> Result<(ConsumerId, mpsc::UnboundedReceiver<Vec<Delivery>>)> {
        let mut g = self.inner.lock().await;
        let max = self.topic.client_limits().max_consumers_per_subscription;
        if g.dispatcher.consumer_count() >= max {
            return Err(BrokerError::LimitExceeded(format!(
                "subscription {} on {} already has {max} consumers (broker setting max_consumers_per_subscription)",
                self.name,
                self.topic.name()
            )));
        }
        let id = g.next_consumer;
        g.dispatcher.add_consumer(id, ack_timeout)?;
        g.next_consumer += 1;
        // Unbounded only in type: everything sent on it is pending on the consumer, which
        // the dispatcher bounds by permits and by its unacknowledged limits.
        let (tx, rx) = mpsc::unbounded_channel();
        g.consumers.insert(id, tx);
        drop(g);
        self.wake.notify_one();
        Ok((id, rx))
    }

    /// Removes a consumer; its unacknowledged messages go to the others.
    pub async fn remove_consumer(&self, id: ConsumerId) {
        let mut g = self.inner.lock().await;
        g.dispatcher.remove_consumer(id);
        g.consumers.remove(&id);
        drop(g);
        self.wake.notify_one();
    }

    /// Ends every consumer's delivery stream (topic unloaded or closing): clients see the
    /// stream end and reconnect. Unacknowledged messages stay unacknowledged in the cursor.
    pub async fn disconnect_all(&self) {
        self.inner.lock().await.consumers.clear();
    }

    pub async fn sub_type(&self) -> SubType {
        self.inner.lock().await.dispatcher.sub_type()
    }

    pub async fn consumer_count(&self) -> usize {
        self.inner.lock().await.dispatcher.consumer_count()
    }

    pub async fn add_permits(&self, id: ConsumerId, n: u32) -> Result<()> {
        self.inner.lock().await.dispatcher.add_permits(id, n)?;
        self.wake.notify_one();
        Ok(())
    }

    /// Acknowledges messages (individually or cumulatively).
    pub async fn ack(&self, consumer: ConsumerId, ids: &[MessageId], cumulative: bool) -> Result<()> {
        let l = layout(&self.topic).await;
        let mut g = self.inner.lock().await;
        let start = std::time::Instant::now();
        // A consumer held back by its unacknowledged limits may take more after this.
        let held_back = g.dispatcher.held_back();
        let mut unknown = None;
        let acked: Vec<ReadMessage> = if cumulative {
            let [id] = ids else {
                return Err(BrokerError::InvalidArgument(
                    "a cumulative ack names exactly one message id".into(),
                ));
            };
            g.dispatcher.ack_cumulative(consumer, *id)?
        } else {
            // Every known id is acknowledged even if some are not (stale after a
            // reconnect, say); the first unknown one is reported afterwards.
            let mut v = Vec::with_capacity(ids.len());
            for id in ids {
                match g.dispatcher.ack(consumer, *id) {
                    Ok(m) => v.push(m),
                    Err(e) => {
                        unknown.get_or_insert(e);
                    }
                }
            }
            v
        };
        Self::apply_acks(&mut g, acked, &l);
        drop(g);
        ConsumeStage::Ack.time(start);
        if held_back {
            self.wake.notify_one();
        }
        match unknown {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// Acknowledges every message pending on `consumer` in each range (first, last), both
    /// included (a reversed range takes nothing; the service refuses malformed ones).
    pub async fn ack_ranges(&self, consumer: ConsumerId, ranges: &[(MessageId, MessageId)]) {
        let l = layout(&self.topic).await;
        let mut g = self.inner.lock().await;
        let start = std::time::Instant::now();
        let held_back = g.dispatcher.held_back();
        for (first, last) in ranges {
            let acked = g.dispatcher.ack_range(consumer, *first, *last);
            Self::apply_acks(&mut g, acked, &l);
        }
        drop(g);
        ConsumeStage::Ack.time(start);
        if held_back {
            self.wake.notify_one();
        }
    }

    /// Records acknowledged messages: an entry is acknowledged in the cursor once every
    /// message of it is.
    fn apply_acks(g: &mut Inner, acked: Vec<ReadMessage>, l: &Layout) {
        for m in acked {
            let pos = m.id.position;
            if m.batch_size == 1 {
                g.cursor.ack(pos, l);
                continue;
            }
            let done = {
                let set = g.partial.entry(pos).or_default();
                set.insert(m.id.batch_index);
                set.len() as u32 >= m.batch_size
            };
            if done {
                g.partial.remove(&pos);
                g.cursor.ack(pos, l);
            }
        }
    }

    /// Negative acknowledgement: redeliver with an incremented redelivery count.
    pub async fn nack(&self, consumer: ConsumerId, ids: &[MessageId]) -> Result<()> {
        self.inner.lock().await.dispatcher.nack(consumer, ids)?;
        self.wake.notify_one();
        Ok(())
    }

    /// Writes the cursor if it changed (without holding the subscription's lock across
    /// the metadata write; see [`crate::cursor::write`]). `Fenced` means this broker no
    /// longer owns the topic.
    pub async fn persist(&self) -> Result<()> {
        let (store, prepared) = {
            let g = self.inner.lock().await;
            (g.cursor.store(), g.cursor.to_persist())
        };
        let Some((key, value, version, generation)) = prepared else {
            return Ok(());
        };
        let v = crate::cursor::write(&store, &key, value, version).await?;
        self.inner.lock().await.cursor.persisted(v, generation);
        Ok(())
    }

    /// Moves the subscription to `position` (the next message delivered is the first of
    /// that entry): forgets deliveries and acknowledgements after it. The consumer `by`
    /// stays connected (its stream marks the switch with SeekDone); every other consumer
    /// is disconnected — its deliveries are stale and its permits gone — and reconnects.
    pub async fn seek(&self, by: ConsumerId, position: Position) -> Result<()> {
        let counts = self.topic.managed_ledger().ledger_counts().await;
        check_seek(self.topic.name(), &counts, position)?;
        let l = layout(&self.topic).await;
        let mut g = self.inner.lock().await;
        g.consumers.retain(|id, _| *id == by);
        let keep = g.consumers.contains_key(&by).then_some(by);
        g.dispatcher.reset(keep);
        g.fresh.clear();
        g.partial.clear();
        g.read_position = Some(position);
        g.cursor.reset_before(position, &l);
        drop(g);
        self.wake.notify_one();
        Ok(())
    }

    /// Seek by publish time: moves to the first entry stored at or after `time_ms`.
    pub async fn seek_time(&self, by: ConsumerId, time_ms: u64) -> Result<()> {
        let position = self.topic.find_by_publish_time(time_ms).await?;
        self.seek(by, position).await
    }

    /// Delivers messages until the topic is closed or fenced. Run it as a task.
    pub async fn run(self: Arc<Self>) -> Result<()> {
        let ml = self.topic.managed_ledger().clone();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut ahead: Option<ReadAhead> = None;
        // Until a batch shows the entry size, read a few (entries may be megabytes).
        let mut entries = FIRST_READ;
        loop {
            // Over its dispatch rate, the subscription waits (acks and consumers still
            // come and go: they only take the lock).
            // The rate follows the namespace's policies.
            self.limiter
                .set_rate(self.topic.client_limits().dispatch_rate_per_subscription);
            let wait = self.limiter.wait(std::time::Instant::now());
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
                continue;
            }
            let (need_read, read_from) = {
                let mut g = self.inner.lock().await;
                let start = std::time::Instant::now();
                g.dispatcher.expire(start);
                let out = {
                    let Inner { dispatcher, fresh, .. } = &mut *g;
                    dispatcher.dispatch(fresh)
                };
                if self.limiter.is_limited() {
                    let l = &self.limiter;
                    let (msgs, bytes) = out.values().flatten().fold((0u64, 0u64), |(m, b), d| {
                        (m + 1, b + d.message.message.payload.len() as u64)
                    });
                    l.take(msgs, bytes, std::time::Instant::now());
                }
                for (c, deliveries) in out {
                    if let Some(tx) = g.consumers.get(&c) {
                        let _ = tx.send(deliveries);
                    }
                }
                ConsumeStage::Dispatch.time(start);
                // Read ahead only with something in hand to dispatch meanwhile (a consumer
                // catching up, not one tailing the topic, which reads as entries arrive).
                let in_hand = !g.fresh.is_empty();
                (
                    g.dispatcher.has_permits() && g.fresh.is_empty(),
                    (g.read_position, in_hand),
                )
            };
            let (read_from, in_hand) = read_from;
            if in_hand
                && let Some(from) = read_from
                && ahead.as_ref().is_none_or(|a| a.from != from)
            {
                ahead = Some(ReadAhead::start(&self.topic, from, entries));
            }
            if need_read && let Some(from) = read_from {
                let batch = match ahead.take() {
                    Some(a) if a.from == from => a.result().await?,
                    _ => timed_read(&self.topic, from, entries).await?,
                };
                if !batch.is_empty() {
                    let (n, bytes) = batch_size(&batch);
                    entries = batch_entries(n, bytes);
                    let l = layout(&self.topic).await;
                    let mut g = self.inner.lock().await;
                    // A seek while reading makes this batch stale.
                    if g.read_position == Some(from) {
                        let last = batch.last().expect("non-empty").id.position;
                        g.read_position = Some(l.next(last));
                        let skip_acked: Vec<ReadMessage> = batch
                            .into_iter()
                            .filter(|m| !g.cursor.state.is_acked(m.id.position))
                            .collect();
                        g.fresh.extend(skip_acked);
                    }
                    continue;
                }
                // Nothing new: wait for an append, a wake-up, or the tick.
                let last = ml.last_confirmed();
                let caught_up = match (last, from) {
                    (Some(l), f) => l < f,
                    (None, _) => true,
                };
                if caught_up {
                    tokio::select! {
                        _ = ml.wait_for_entries_after(last) => {}
                        _ = self.wake.notified() => {}
                        _ = tick.tick() => {}
                    }
                    continue;
                }
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tick.tick() => {}
            }
        }
    }
}

fn ml_store(topic: &Topic) -> crate::owned_store::OwnedStore {
    topic.managed_ledger().owned_store()
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_common::{EntryId, LedgerId, TopicName};

    fn at(l: u64, e: u64) -> Position {
        Position {
            ledger: LedgerId::new(l).unwrap(),
            entry: EntryId::new(e),
        }
    }

    #[test]
    fn reads_bring_in_about_read_bytes_whatever_the_entry_size() {
        // 128 KiB producer batches: the full 100 entries (12.5 MiB).
        assert_eq!(batch_entries(100, 100 << 17), READ_BATCH);
        // 5 MiB entries: 3 at a time (15 MiB), never 100 (500 MiB).
        assert_eq!(batch_entries(3, 15 << 20), 3);
        // An entry larger than the budget: still one at a time.
        assert_eq!(batch_entries(1, 64 << 20), 1);
        // Tiny or empty entries: the entry count caps; nothing read yet: a few.
        assert_eq!(batch_entries(100, 0), READ_BATCH);
        assert_eq!(batch_entries(0, 0), FIRST_READ);
    }

    #[test]
    fn seeks_are_refused_past_the_end_or_past_a_closed_ledger() {
        let t = TopicName::parse("persistent://public/default/t").unwrap();
        // Ledger 3 closed with 10 entries, ledger 7 current with 4 so far.
        let counts = [(3, 10), (7, 4)];
        for ok in [at(3, 0), at(3, 9), at(3, 10), at(5, 100), at(7, 0), at(7, 4), at(1, 0)] {
            check_seek(&t, &counts, ok).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
        }
        for bad in [at(7, 5), at(8, 0), at(u64::MAX, 0), at(3, 11), at(7, u64::MAX)] {
            let e = check_seek(&t, &counts, bad).unwrap_err().to_string();
            assert!(e.contains("no such position") && e.contains("7:4"), "{bad:?}: {e}");
        }
        // A topic with no ledger yet: nothing to seek to.
        check_seek(&t, &[], at(1, 0)).unwrap_err();
    }
}
