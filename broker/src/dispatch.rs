//! Dispatch: which consumer of a subscription gets which message, as a state machine with
//! no I/O (the subscription feeds it messages read from the topic and sends what it
//! returns), so every rule is unit-tested.
//!
//! Rules by subscription type:
//! - **Exclusive**: one consumer; a second is refused (`ConsumerBusy`). In order.
//! - **Failover**: many consumers, the first connected is active and gets everything in
//!   order; when it leaves, the next one takes over (its unacked messages are redelivered).
//! - **Shared**: round-robin over consumers with permits, by entry (a consumer takes the
//!   rest of an entry while it has permits); no ordering.
//! - **Key_Shared**: a key's messages go to one consumer, in order. A key is assigned by
//!   hash over the consumers, but stays with the consumer that holds unacknowledged
//!   messages of it until they are acknowledged or redelivered, so a consumer joining or
//!   leaving never reorders a key.
//!
//! Everywhere: a consumer receives at most as many messages as it granted permits, and
//! nothing more once it holds [`UnackedLimits`] unacknowledged messages or bytes (a
//! consumer that never acknowledges, or never reads its stream, cannot make the broker
//! hold a whole backlog for it; one message always goes out to a consumer holding none);
//! redeliveries (negative ack, ack timeout, consumer gone) go out before new messages, in
//! id order, with their redelivery count incremented; a message is pending (delivered,
//! unacknowledged) on exactly one consumer.

use crate::topic::ReadMessage;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};
use strata_common::MessageId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubType {
    Exclusive,
    Failover,
    Shared,
    KeyShared,
}

impl SubType {
    pub fn name(self) -> &'static str {
        match self {
            SubType::Exclusive => "Exclusive",
            SubType::Failover => "Failover",
            SubType::Shared => "Shared",
            SubType::KeyShared => "Key_Shared",
        }
    }

    /// The type [`SubType::name`] names.
    pub fn from_name(name: &str) -> Option<SubType> {
        [
            SubType::Exclusive,
            SubType::Failover,
            SubType::Shared,
            SubType::KeyShared,
        ]
        .into_iter()
        .find(|t| t.name() == name)
    }
}

pub type ConsumerId = u64;

/// Why a dispatcher call was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DispatchError {
    #[error("the Exclusive subscription already has a consumer")]
    ConsumerBusy,
    #[error("cumulative acknowledgement is not allowed on {0} subscriptions")]
    CumulativeNotAllowed(&'static str),
    #[error("message {0} is not pending on this consumer")]
    UnknownMessage(MessageId),
    #[error("unknown consumer {0}")]
    UnknownConsumer(ConsumerId),
}

/// A message handed to a consumer.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub message: ReadMessage,
    pub redelivery_count: u32,
}

/// How much one consumer may hold delivered and unacknowledged before it gets more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnackedLimits {
    pub messages: usize,
    pub bytes: usize,
}

impl Default for UnackedLimits {
    /// 50,000 messages (Pulsar's `maxUnackedMessagesPerConsumer`) or 64 MiB.
    fn default() -> Self {
        Self {
            messages: 50_000,
            bytes: 64 << 20,
        }
    }
}

/// What a delivered message costs its consumer's [`UnackedLimits`]: payload, key,
/// properties and a fixed overhead for the rest.
pub fn held_bytes(m: &ReadMessage) -> usize {
    crate::topic::batch_size(&m.message) + 64
}

struct Pending {
    consumer: ConsumerId,
    delivery: Delivery,
    /// When it is redelivered if still unacknowledged (its consumer's ack timeout).
    deadline: Option<Instant>,
}

struct ConsumerState {
    id: ConsumerId,
    permits: u32,
    ack_timeout: Option<Duration>,
    unacked: usize,
    unacked_bytes: usize,
}

impl ConsumerState {
    fn new(id: ConsumerId, ack_timeout: Option<Duration>) -> Self {
        Self {
            id,
            permits: 0,
            ack_timeout,
            unacked: 0,
            unacked_bytes: 0,
        }
    }

    /// Whether it may be sent one more message now.
    fn can_take(&self, limits: &UnackedLimits) -> bool {
        self.permits > 0 && (self.unacked == 0 || (self.unacked < limits.messages && self.unacked_bytes < limits.bytes))
    }
}

fn key_hash(key: &str) -> u64 {
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
}

/// The dispatch state of one subscription.
pub struct Dispatcher {
    sub_type: SubType,
    consumers: Vec<ConsumerState>,
    pending: BTreeMap<MessageId, Pending>,
    /// To deliver again before new messages, in id order.
    replay: BTreeMap<MessageId, Delivery>,
    /// Key_Shared: key hash → (consumer holding its unacked messages, how many).
    key_owner: HashMap<u64, (ConsumerId, u32)>,
    next_round_robin: usize,
    /// Shared: the entry of the last message delivered and its consumer, which takes the
    /// rest of the entry while it can (entries stay whole, as the entry form sends them).
    last_entry: Option<(strata_common::Position, ConsumerId)>,
    limits: UnackedLimits,
}

impl Dispatcher {
    pub fn new(sub_type: SubType) -> Self {
        Self::with_limits(sub_type, UnackedLimits::default())
    }

    pub fn with_limits(sub_type: SubType, limits: UnackedLimits) -> Self {
        Self {
            sub_type,
            consumers: Vec::new(),
            pending: BTreeMap::new(),
            replay: BTreeMap::new(),
            key_owner: HashMap::new(),
            next_round_robin: 0,
            last_entry: None,
            limits,
        }
    }

    /// Forgets every delivery, acknowledgement and consumer but `keep` (a seek): `keep`
    /// stays with its ack timeout and no permits.
    pub fn reset(&mut self, keep: Option<ConsumerId>) {
        let kept = keep
            .and_then(|k| self.consumers.iter().find(|c| c.id == k))
            .map(|c| (c.id, c.ack_timeout));
        *self = Self::with_limits(self.sub_type, self.limits);
        if let Some((id, t)) = kept {
            self.consumers.push(ConsumerState::new(id, t));
        }
    }

    pub fn sub_type(&self) -> SubType {
        self.sub_type
    }

    pub fn consumer_count(&self) -> usize {
        self.consumers.len()
    }

    /// Messages delivered and not yet acknowledged.
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    /// Adds a consumer (in join order). Its messages unacknowledged after `ack_timeout`
    /// are redelivered (its own setting: other consumers keep theirs).
    pub fn add_consumer(&mut self, id: ConsumerId, ack_timeout: Option<Duration>) -> Result<(), DispatchError> {
        if self.sub_type == SubType::Exclusive && !self.consumers.is_empty() {
            return Err(DispatchError::ConsumerBusy);
        }
        self.consumers.push(ConsumerState::new(id, ack_timeout));
        Ok(())
    }

    /// Whether some consumer has permits but may take nothing until it acknowledges.
    pub fn held_back(&self) -> bool {
        self.consumers
            .iter()
            .any(|c| c.permits > 0 && !c.can_take(&self.limits))
    }

    /// Removes `id` from pending, releasing what it cost its consumer.
    fn take_pending(&mut self, id: &MessageId) -> Option<Pending> {
        let p = self.pending.remove(id)?;
        if let Some(c) = self.consumers.iter_mut().find(|c| c.id == p.consumer) {
            c.unacked -= 1;
            c.unacked_bytes -= held_bytes(&p.delivery.message);
        }
        Some(p)
    }

    /// Removes a consumer; everything it had not acknowledged is redelivered to others.
    pub fn remove_consumer(&mut self, id: ConsumerId) {
        self.consumers.retain(|c| c.id != id);
        let theirs: Vec<MessageId> = self
            .pending
            .iter()
            .filter(|(_, p)| p.consumer == id)
            .map(|(m, _)| *m)
            .collect();
        for m in theirs {
            self.requeue(m);
        }
        if self.next_round_robin >= self.consumers.len() {
            self.next_round_robin = 0;
        }
    }

    /// The consumer that receives messages on Exclusive and Failover subscriptions.
    pub fn active_consumer(&self) -> Option<ConsumerId> {
        self.consumers.first().map(|c| c.id)
    }

    pub fn add_permits(&mut self, id: ConsumerId, n: u32) -> Result<(), DispatchError> {
        let c = self
            .consumers
            .iter_mut()
            .find(|c| c.id == id)
            .ok_or(DispatchError::UnknownConsumer(id))?;
        c.permits = c.permits.saturating_add(n);
        Ok(())
    }

    /// Whether any consumer could take a message now (so reading more is useful).
    pub fn has_permits(&self) -> bool {
        let l = &self.limits;
        match self.sub_type {
            SubType::Exclusive | SubType::Failover => self.consumers.first().is_some_and(|c| c.can_take(l)),
            SubType::Shared | SubType::KeyShared => self.consumers.iter().any(|c| c.can_take(l)),
        }
    }

    /// Moves a pending message back to the replay queue with its count incremented.
    fn requeue(&mut self, id: MessageId) {
        if let Some(p) = self.take_pending(&id) {
            self.release_key(&p.delivery.message);
            let mut d = p.delivery;
            d.redelivery_count += 1;
            self.replay.insert(id, d);
        }
    }

    fn release_key(&mut self, m: &ReadMessage) {
        if self.sub_type != SubType::KeyShared {
            return;
        }
        let h = key_hash(&m.message.key);
        if let Some((_, n)) = self.key_owner.get_mut(&h) {
            *n -= 1;
            if *n == 0 {
                self.key_owner.remove(&h);
            }
        }
    }

    /// Chooses the consumer for a message, if one can take it now.
    fn choose(&mut self, m: &ReadMessage) -> Option<usize> {
        let l = self.limits;
        match self.sub_type {
            SubType::Exclusive | SubType::Failover => {
                (self.consumers.first().is_some_and(|c| c.can_take(&l))).then_some(0)
            }
            SubType::Shared => {
                if let Some((position, id)) = self.last_entry
                    && position == m.id.position
                    && let Some(i) = self.consumers.iter().position(|c| c.id == id)
                    && self.consumers[i].can_take(&l)
                {
                    return Some(i);
                }
                let n = self.consumers.len();
                for k in 0..n {
                    let i = (self.next_round_robin + k) % n;
                    if self.consumers[i].can_take(&l) {
                        self.next_round_robin = (i + 1) % n;
                        return Some(i);
                    }
                }
                None
            }
            SubType::KeyShared => {
                let h = key_hash(&m.message.key);
                let owner = match self.key_owner.get(&h) {
                    Some((c, _)) => *c,
                    None => {
                        let n = self.consumers.len();
                        if n == 0 {
                            return None;
                        }
                        // Rendezvous hashing: a consumer leaving moves only its keys.
                        self.consumers
                            .iter()
                            .max_by_key(|c| {
                                let mut s = DefaultHasher::new();
                                (h, c.id).hash(&mut s);
                                s.finish()
                            })
                            .expect("consumers")
                            .id
                    }
                };
                let i = self.consumers.iter().position(|c| c.id == owner)?;
                self.consumers[i].can_take(&l).then_some(i)
            }
        }
    }

    fn deliver(&mut self, i: usize, d: Delivery, out: &mut HashMap<ConsumerId, Vec<Delivery>>, now: Instant) {
        let c = &mut self.consumers[i];
        c.permits -= 1;
        c.unacked += 1;
        c.unacked_bytes += held_bytes(&d.message);
        let id = c.id;
        let deadline = c.ack_timeout.map(|t| now + t);
        if self.sub_type == SubType::Shared {
            self.last_entry = Some((d.message.id.position, id));
        }
        if self.sub_type == SubType::KeyShared {
            let e = self
                .key_owner
                .entry(key_hash(&d.message.message.key))
                .or_insert((id, 0));
            e.1 += 1;
        }
        self.pending.insert(
            d.message.id,
            Pending {
                consumer: id,
                delivery: d.clone(),
                deadline,
            },
        );
        out.entry(id).or_default().push(d);
    }

    /// Hands out replays and then messages from `fresh` (in order) as permits allow.
    /// Messages that cannot go out yet stay at the front of `fresh`, in order.
    pub fn dispatch(&mut self, fresh: &mut VecDeque<ReadMessage>) -> HashMap<ConsumerId, Vec<Delivery>> {
        let now = Instant::now();
        let mut out: HashMap<ConsumerId, Vec<Delivery>> = HashMap::new();
        // Keys (Key_Shared) or the whole stream (ordered types) that must wait: nothing
        // may overtake a message that is waiting.
        let mut blocked_keys: HashSet<u64> = HashSet::new();
        let ordered = matches!(self.sub_type, SubType::Exclusive | SubType::Failover);
        let replays: Vec<MessageId> = self.replay.keys().copied().collect();
        let mut stream_blocked = false;
        for id in replays {
            let d = self.replay.get(&id).expect("listed").clone();
            let h = key_hash(&d.message.message.key);
            if stream_blocked || blocked_keys.contains(&h) {
                continue;
            }
            match self.choose(&d.message) {
                Some(i) => {
                    self.replay.remove(&id);
                    self.deliver(i, d, &mut out, now);
                }
                None if ordered => stream_blocked = true,
                None => {
                    blocked_keys.insert(h);
                }
            }
        }
        if stream_blocked
            || (!self.replay.is_empty() && self.sub_type != SubType::KeyShared && self.sub_type != SubType::Shared)
        {
            return out;
        }
        let mut waiting = VecDeque::new();
        while let Some(m) = fresh.pop_front() {
            let h = key_hash(&m.message.key);
            let must_wait = match self.sub_type {
                SubType::KeyShared => blocked_keys.contains(&h),
                _ => false,
            };
            if must_wait {
                waiting.push_back(m);
                continue;
            }
            match self.choose(&m) {
                Some(i) => self.deliver(
                    i,
                    Delivery {
                        message: m,
                        redelivery_count: 0,
                    },
                    &mut out,
                    now,
                ),
                None if self.sub_type == SubType::KeyShared => {
                    blocked_keys.insert(h);
                    waiting.push_back(m);
                }
                None => {
                    waiting.push_back(m);
                    break;
                }
            }
            if !self.has_permits() && self.sub_type != SubType::KeyShared {
                break;
            }
        }
        // Put back what could not go out, ahead of the rest, in the original order.
        while let Some(m) = waiting.pop_back() {
            fresh.push_front(m);
        }
        out
    }

    /// Acknowledges one message delivered to `consumer`. Returns it (for entry-level
    /// acknowledgement of its batch).
    pub fn ack(&mut self, consumer: ConsumerId, id: MessageId) -> Result<ReadMessage, DispatchError> {
        match self.pending.get(&id) {
            Some(p) if p.consumer == consumer => {
                let p = self.take_pending(&id).expect("present");
                self.release_key(&p.delivery.message);
                Ok(p.delivery.message)
            }
            _ => Err(DispatchError::UnknownMessage(id)),
        }
    }

    /// Acknowledges every message from `first` to `last` (both included) pending on
    /// `consumer`; those pending on others, or on none, are left alone (a client sends a
    /// range only over messages it acknowledges one by one). Returns the acknowledged.
    pub fn ack_range(&mut self, consumer: ConsumerId, first: MessageId, last: MessageId) -> Vec<ReadMessage> {
        if first > last {
            return Vec::new();
        }
        let ids: Vec<MessageId> = self
            .pending
            .range(first..=last)
            .filter(|(_, p)| p.consumer == consumer)
            .map(|(m, _)| *m)
            .collect();
        ids.into_iter()
            .map(|m| {
                let p = self.take_pending(&m).expect("listed");
                self.release_key(&p.delivery.message);
                p.delivery.message
            })
            .collect()
    }

    /// Acknowledges every pending message of `consumer` up to and including `id`
    /// (Exclusive and Failover only).
    pub fn ack_cumulative(&mut self, consumer: ConsumerId, id: MessageId) -> Result<Vec<ReadMessage>, DispatchError> {
        if matches!(self.sub_type, SubType::Shared | SubType::KeyShared) {
            return Err(DispatchError::CumulativeNotAllowed(self.sub_type.name()));
        }
        if self.pending.get(&id).is_none_or(|p| p.consumer != consumer) {
            return Err(DispatchError::UnknownMessage(id));
        }
        let ids: Vec<MessageId> = self
            .pending
            .range(..=id)
            .filter(|(_, p)| p.consumer == consumer)
            .map(|(m, _)| *m)
            .collect();
        Ok(ids
            .into_iter()
            .map(|m| self.take_pending(&m).expect("listed").delivery.message)
            .collect())
    }

    /// Negative acknowledgement: redeliver these (to any eligible consumer).
    /// Every known id is requeued even if some are not; the first unknown is reported.
    pub fn nack(&mut self, consumer: ConsumerId, ids: &[MessageId]) -> Result<(), DispatchError> {
        let mut unknown = None;
        for id in ids {
            if self.pending.get(id).is_none_or(|p| p.consumer != consumer) {
                unknown.get_or_insert(DispatchError::UnknownMessage(*id));
            } else {
                self.requeue(*id);
            }
        }
        unknown.map_or(Ok(()), Err)
    }

    /// Redelivers messages pending past their consumer's ack timeout. Returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        // Only present consumers have pending messages (a leaving one's are requeued).
        if self.consumers.iter().all(|c| c.ack_timeout.is_none()) {
            return 0;
        }
        let expired: Vec<MessageId> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline.is_some_and(|d| d <= now))
            .map(|(m, _)| *m)
            .collect();
        for m in &expired {
            self.requeue(*m);
        }
        expired.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use strata_common::{EntryId, LedgerId, Position};
    use strata_proto::broker::v1::StoredMessage;

    fn msg(n: u64, key: &str) -> ReadMessage {
        ReadMessage {
            id: MessageId {
                position: Position {
                    ledger: LedgerId::new(1).unwrap(),
                    entry: EntryId::new(n),
                },
                batch_index: 0,
                partition: -1,
            },
            batch_size: 1,
            message: StoredMessage {
                payload: Bytes::from(n.to_string()),
                key: key.to_string(),
                ..Default::default()
            },
            producer_name: "p".into(),
            publish_time_ms: 0,
            entry: Bytes::new(),
        }
    }

    fn queue(n: u64, keys: &[&str]) -> VecDeque<ReadMessage> {
        (0..n).map(|i| msg(i, keys[(i as usize) % keys.len()])).collect()
    }

    fn ids(v: &[Delivery]) -> Vec<u64> {
        v.iter().map(|d| d.message.id.position.entry.get()).collect()
    }

    #[test]
    fn exclusive_refuses_a_second_consumer_and_respects_permits() {
        let mut d = Dispatcher::new(SubType::Exclusive);
        d.add_consumer(1, None).unwrap();
        assert_eq!(d.add_consumer(2, None), Err(DispatchError::ConsumerBusy));
        let mut q = queue(10, &[""]);
        assert!(d.dispatch(&mut q).is_empty(), "no permits, nothing sent");
        d.add_permits(1, 4).unwrap();
        let out = d.dispatch(&mut q);
        assert_eq!(ids(&out[&1]), vec![0, 1, 2, 3]);
        assert_eq!(q.len(), 6);
        assert_eq!(q[0].id.position.entry.get(), 4, "the rest waits in order");
    }

    #[test]
    fn failover_moves_to_the_next_consumer_with_redelivery_in_order() {
        let mut d = Dispatcher::new(SubType::Failover);
        d.add_consumer(1, None).unwrap();
        d.add_consumer(2, None).unwrap();
        d.add_permits(1, 3).unwrap();
        d.add_permits(2, 100).unwrap();
        let mut q = queue(6, &[""]);
        let out = d.dispatch(&mut q);
        assert_eq!(ids(&out[&1]), vec![0, 1, 2]);
        assert!(!out.contains_key(&2), "standby gets nothing");
        d.ack(1, msg(0, "").id).unwrap();
        d.remove_consumer(1);
        assert_eq!(d.active_consumer(), Some(2));
        let out = d.dispatch(&mut q);
        assert_eq!(ids(&out[&2]), vec![1, 2, 3, 4, 5], "unacked first, then new, in order");
        assert_eq!(out[&2][0].redelivery_count, 1);
        assert_eq!(out[&2][2].redelivery_count, 0);
    }

    #[test]
    fn shared_spreads_round_robin_and_nacks_come_back_counted() {
        let mut d = Dispatcher::new(SubType::Shared);
        for c in 1..=3 {
            d.add_consumer(c, None).unwrap();
            d.add_permits(c, 10).unwrap();
        }
        let mut q = queue(9, &[""]);
        let out = d.dispatch(&mut q);
        for c in 1..=3 {
            assert_eq!(out[&c].len(), 3, "evenly spread");
        }
        let first_of_2 = out[&2][0].message.id;
        d.nack(2, &[first_of_2]).unwrap();
        assert_eq!(d.nack(1, &[first_of_2]), Err(DispatchError::UnknownMessage(first_of_2)));
        let out = d.dispatch(&mut VecDeque::new());
        let again: Vec<&Delivery> = out.values().flatten().collect();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].message.id, first_of_2);
        assert_eq!(again[0].redelivery_count, 1);
        assert!(matches!(
            d.ack_cumulative(1, first_of_2),
            Err(DispatchError::CumulativeNotAllowed(_))
        ));
    }

    /// `entries` entries of `per` messages each.
    fn batches(entries: u64, per: u32) -> VecDeque<ReadMessage> {
        let mut q = VecDeque::new();
        for e in 0..entries {
            for i in 0..per {
                let mut m = msg(e, "");
                m.id.batch_index = i;
                m.batch_size = per;
                q.push_back(m);
            }
        }
        q
    }

    #[test]
    fn shared_hands_out_whole_entries_while_permits_last() {
        let mut d = Dispatcher::new(SubType::Shared);
        d.add_consumer(1, None).unwrap();
        d.add_consumer(2, None).unwrap();
        d.add_permits(1, 6).unwrap();
        d.add_permits(2, 100).unwrap();
        let mut q = batches(4, 4);
        let out = d.dispatch(&mut q);
        let entries = |c: ConsumerId| {
            let mut v: Vec<(u64, u32)> = out[&c]
                .iter()
                .map(|d| (d.message.id.position.entry.get(), d.message.id.batch_index))
                .collect();
            v.sort();
            v
        };
        // Consumer 1 takes entry 0 whole, then entry 2 until its 6 permits run out (two
        // messages); consumer 2 takes entries 1 and 3 whole and the rest of entry 2.
        assert_eq!(entries(1), vec![(0, 0), (0, 1), (0, 2), (0, 3), (2, 0), (2, 1)]);
        assert_eq!(out[&2].len(), 10);
        assert!(q.is_empty());
    }

    #[test]
    fn an_ack_range_takes_only_what_is_pending_on_its_consumer() {
        let mut d = Dispatcher::new(SubType::Shared);
        d.add_consumer(1, None).unwrap();
        d.add_consumer(2, None).unwrap();
        d.add_permits(1, 100).unwrap();
        d.add_permits(2, 100).unwrap();
        let out = d.dispatch(&mut batches(4, 3));
        // Entries alternate: 0 and 2 on consumer 1, 1 and 3 on consumer 2.
        assert_eq!(out[&1].len(), 6);
        let first = out[&1][0].message.id;
        let last = out[&1][5].message.id;
        let acked = d.ack_range(1, first, last);
        assert_eq!(acked.len(), 6, "entry 1, pending on consumer 2, stays");
        assert_eq!(d.pending_count(), 6);
        assert!(d.ack_range(1, first, last).is_empty(), "nothing left to take twice");
        assert!(d.ack_range(2, last, first).is_empty(), "a reversed range takes nothing");
        let (a, b) = (out[&2][0].message.id, out[&2][5].message.id);
        assert_eq!(d.ack_range(2, a, b).len(), 6);
        assert_eq!(d.pending_count(), 0);
    }

    #[test]
    fn key_shared_keeps_each_key_on_one_consumer_in_order_across_joins() {
        let mut d = Dispatcher::new(SubType::KeyShared);
        d.add_consumer(1, None).unwrap();
        d.add_permits(1, 1000).unwrap();
        let keys = ["a", "b", "c", "d", "e", "f"];
        let mut q = queue(30, &keys);
        let out = d.dispatch(&mut q);
        assert_eq!(out[&1].len(), 30);
        // A second consumer joins while everything is unacked: no key may move yet.
        d.add_consumer(2, None).unwrap();
        d.add_permits(2, 1000).unwrap();
        let mut q: VecDeque<ReadMessage> = (30..60).map(|i| msg(i, keys[(i % 6) as usize])).collect();
        let out = d.dispatch(&mut q);
        assert!(!out.contains_key(&2), "keys with unacked messages stay put");
        // Once consumer 1 acks everything, new messages of some keys may go to 2, and each
        // key still has one consumer.
        for i in 0..60 {
            let _ = d.ack(1, msg(i, "").id);
        }
        let mut q: VecDeque<ReadMessage> = (60..120).map(|i| msg(i, keys[(i % 6) as usize])).collect();
        let out = d.dispatch(&mut q);
        let mut owner: HashMap<String, ConsumerId> = HashMap::new();
        for (c, ds) in &out {
            let mut last: HashMap<String, u64> = HashMap::new();
            for x in ds {
                let k = x.message.message.key.clone();
                assert_eq!(*owner.entry(k.clone()).or_insert(*c), *c, "key {k} on two consumers");
                let n = x.message.id.position.entry.get();
                assert!(last.insert(k, n).is_none_or(|p| p < n), "per-key order");
            }
        }
        assert!(out.len() == 2, "both consumers get keys: {:?}", out.keys());
    }

    #[test]
    fn key_shared_waits_for_a_busy_owner_without_blocking_other_keys() {
        let mut d = Dispatcher::new(SubType::KeyShared);
        d.add_consumer(1, None).unwrap();
        d.add_permits(1, 1).unwrap();
        let mut q: VecDeque<ReadMessage> = vec![msg(0, "a"), msg(1, "a"), msg(2, "b")].into();
        let out = d.dispatch(&mut q);
        assert_eq!(ids(&out[&1]), vec![0]);
        assert_eq!(q.len(), 2);
        assert_eq!(q[0].id.position.entry.get(), 1, "order kept in the queue");
        d.add_permits(1, 5).unwrap();
        let out = d.dispatch(&mut q);
        assert_eq!(ids(&out[&1]), vec![1, 2]);
    }

    #[test]
    fn a_consumer_holding_its_unacked_limit_gets_nothing_more_and_the_others_get_the_rest() {
        // Each test message holds 1 + 64 bytes: 3 messages reach 195 bytes.
        let limits = UnackedLimits {
            messages: 100,
            bytes: 195,
        };
        let mut d = Dispatcher::with_limits(SubType::Shared, limits);
        d.add_consumer(1, None).unwrap();
        d.add_permits(1, u32::MAX).unwrap();
        let mut q = queue(10, &[""]);
        let out = d.dispatch(&mut q);
        assert_eq!(ids(&out[&1]), vec![0, 1, 2], "held back at the byte limit");
        assert!(d.held_back() && !d.has_permits());
        d.add_consumer(2, None).unwrap();
        d.add_permits(2, 100).unwrap();
        let out = d.dispatch(&mut q);
        assert!(!out.contains_key(&1));
        assert_eq!(out[&2].len(), 3, "the other consumer is served up to its own limit");
        // An ack frees room for exactly one more.
        d.ack(1, msg(0, "").id).unwrap();
        let mut more = queue(20, &[""]).split_off(10);
        let out = d.dispatch(&mut more);
        assert_eq!(out[&1].len(), 1);
        // The message limit holds too, and one message always goes out to a consumer
        // holding none, whatever its size.
        let mut d = Dispatcher::with_limits(SubType::Exclusive, UnackedLimits { messages: 2, bytes: 1 });
        d.add_consumer(1, None).unwrap();
        d.add_permits(1, 10).unwrap();
        let mut q = queue(5, &[""]);
        assert_eq!(ids(&d.dispatch(&mut q)[&1]), vec![0]);
        let mut d = Dispatcher::with_limits(
            SubType::Exclusive,
            UnackedLimits {
                messages: 2,
                bytes: 1 << 20,
            },
        );
        d.add_consumer(1, None).unwrap();
        d.add_permits(1, 10).unwrap();
        let mut q = queue(5, &[""]);
        assert_eq!(ids(&d.dispatch(&mut q)[&1]), vec![0, 1]);
        // Redelivery releases what a nacked message held.
        d.nack(1, &[msg(0, "").id]).unwrap();
        assert_eq!(ids(&d.dispatch(&mut q)[&1]), vec![0]);
    }

    #[test]
    fn each_consumer_has_its_own_ack_timeout() {
        let mut d = Dispatcher::new(SubType::Shared);
        d.add_consumer(1, None).unwrap();
        d.add_consumer(2, Some(Duration::ZERO)).unwrap();
        d.add_permits(1, 2).unwrap();
        d.add_permits(2, 2).unwrap();
        let mut q = queue(4, &[""]);
        let out = d.dispatch(&mut q);
        let of_2: Vec<MessageId> = out[&2].iter().map(|x| x.message.id).collect();
        assert_eq!(
            d.expire(Instant::now() + Duration::from_secs(3600)),
            2,
            "only consumer 2's messages expire, however long consumer 1 holds its own"
        );
        for id in &of_2 {
            assert_eq!(d.ack(2, *id), Err(DispatchError::UnknownMessage(*id)));
        }
        for x in &out[&1] {
            d.ack(1, x.message.id).unwrap();
        }
    }

    #[test]
    fn ack_timeout_and_cumulative_acks() {
        let mut d = Dispatcher::new(SubType::Exclusive);
        d.add_consumer(7, Some(Duration::ZERO)).unwrap();
        d.add_permits(7, 10).unwrap();
        let mut q = queue(5, &[""]);
        d.dispatch(&mut q);
        let acked = d.ack_cumulative(7, msg(2, "").id).unwrap();
        assert_eq!(acked.len(), 3);
        assert_eq!(d.pending_count(), 2);
        assert_eq!(d.expire(Instant::now()), 2);
        let out = d.dispatch(&mut VecDeque::new());
        assert_eq!(ids(&out[&7]), vec![3, 4]);
        assert!(out[&7].iter().all(|x| x.redelivery_count == 1));
        assert_eq!(
            d.ack(7, msg(0, "").id),
            Err(DispatchError::UnknownMessage(msg(0, "").id))
        );
    }
}
