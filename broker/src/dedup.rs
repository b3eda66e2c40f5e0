//! Producer deduplication: a batch resent after a reconnect is not stored twice.
//!
//! Every batch carries its producer's name and a sequence id that grows with each batch
//! (the SDK resumes from `ProducerOpened.last_sequence_id`). Per producer the owner keeps
//! the highest sequence id accepted for storage (`pushed`), the highest stored
//! (`persisted`), and the positions of the most recent stored batches. A batch whose id is
//! not above `pushed` is a duplicate: answered with the original position once the
//! original is stored (waiting for it if it is still in flight), never appended again.
//!
//! Surviving an owner change: the state is snapshotted to
//! `/strata/v1/dedup/<tenant>/<ns>/<topic>` ([`Snapshot`]) every second, and a new owner
//! rebuilds it from the snapshot plus the entries stored after the snapshot's
//! `replay_from` — the topic's last position as of the *previous* snapshot, so receipts
//! that were lost just before a crash are covered by the replay. A topic written by a
//! build without snapshots replays at most its last [`MAX_REPLAY_ENTRIES`] entries.
//!
//! Invariants: `check` runs in stream order, before the append is started, so the
//! decision and the position order agree; a duplicate is never acknowledged before the
//! original is on an ack quorum.

use crate::entry_format;
use crate::error::{BrokerError, Result};
use crate::managed_ledger::ManagedLedger;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};
use strata_common::{EntryId, LedgerId, Position};
use strata_meta::{Condition, MetadataStore, keys};
use tokio::sync::watch;

/// Stored batches per producer whose positions are remembered for duplicate receipts.
/// The SDK has at most 10,000 messages (so at most 10,000 batches) in flight.
pub const RECENT_BATCHES: usize = 10_000;
/// Producer names remembered per topic (as Pulsar's
/// `brokerDeduplicationMaxNumberOfProducers`): a new name beyond it makes the least
/// recently active producer forgotten, so clients rotating names cannot grow the state
/// (or its snapshot) without bound.
pub const MAX_PRODUCERS: usize = 10_000;
/// Stored-batch positions remembered per topic, all producers together (about 32 MB):
/// beyond it the least recently active producers' positions are dropped. Their resends
/// are still recognised as duplicates (by sequence id), answered without a position.
pub const MAX_RECENT_TOTAL: usize = 1_000_000;
/// A producer not seen for this long is forgotten (Pulsar's default: 6 hours).
pub const PRODUCER_INACTIVITY_MS: u64 = 6 * 3600 * 1000;
/// Entries replayed at most when a topic has no snapshot.
pub const MAX_REPLAY_ENTRIES: u64 = 10_000;
/// How often a changed state is persisted.
pub const SNAPSHOT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
/// Format of [`Snapshot`].
const SNAPSHOT_FORMAT: u32 = 1;

/// The persisted form of the deduplication state.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Snapshot {
    pub format: u32,
    /// Replay stored entries from here (inclusive) on top of `producers`.
    pub replay_from: Option<(u64, u64)>,
    /// Producer name → (last stored sequence id, last activity in ms since the epoch).
    pub producers: HashMap<String, (u64, u64)>,
}

/// What to do with a batch.
#[derive(Debug)]
pub enum Check {
    /// Not seen before: store it.
    New,
    /// Already stored at `position` (as a batch of `count` messages).
    Stored { position: Position, count: u32 },
    /// The original is still being stored: wait, then ask again ([`Dedup::wait`]).
    Pending(watch::Receiver<Progress>),
    /// Stored long ago; its position is no longer known.
    StoredUnknown,
}

/// A producer's storage progress, for duplicates waiting on their original.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Progress {
    pub persisted: Option<u64>,
    /// An append of this producer failed: pending originals will not complete.
    pub failed: bool,
}

struct Producer {
    pushed: Option<u64>,
    recent: VecDeque<(u64, Position, u32)>,
    last_active_ms: u64,
    progress: watch::Sender<Progress>,
}

impl Producer {
    fn new(now: u64) -> Self {
        Self {
            pushed: None,
            recent: VecDeque::new(),
            last_active_ms: now,
            progress: watch::Sender::new(Progress::default()),
        }
    }

    fn persisted(&self) -> Option<u64> {
        self.progress.borrow().persisted
    }

    /// Records a stored batch; whether a position was added to `recent` (not replacing
    /// one).
    fn record(&mut self, seq: u64, position: Position, count: u32) -> bool {
        if self.recent.back().is_some_and(|(s, ..)| *s >= seq) {
            return false;
        }
        let full = self.recent.len() == RECENT_BATCHES;
        if full {
            self.recent.pop_front();
        }
        self.recent.push_back((seq, position, count));
        self.pushed = self.pushed.max(Some(seq));
        self.progress.send_modify(|p| p.persisted = p.persisted.max(Some(seq)));
        !full
    }
}

#[derive(Default)]
struct Inner {
    producers: HashMap<String, Producer>,
    /// Positions in every producer's `recent`.
    recent_total: usize,
    /// Something changed since the last snapshot.
    dirty: bool,
    /// The topic's last position when the previous snapshot was taken.
    previous_end: Option<Position>,
}

impl Inner {
    /// The least recently active producer other than `except`, among those `keep` selects.
    fn least_active(&self, except: &str, keep: impl Fn(&Producer) -> bool) -> Option<String> {
        self.producers
            .iter()
            .filter(|(n, p)| n.as_str() != except && keep(p))
            .min_by_key(|(_, p)| p.last_active_ms)
            .map(|(n, _)| n.clone())
    }

    /// Forgets producers, least recently active first, until a new one fits.
    fn make_room_for(&mut self, name: &str) {
        while self.producers.len() >= MAX_PRODUCERS {
            let Some(victim) = self.least_active(name, |_| true) else {
                break;
            };
            if let Some(p) = self.producers.remove(&victim) {
                self.recent_total -= p.recent.len();
                tracing::debug!(producer = %victim, "deduplication state full; forgot the least recently active producer");
            }
        }
    }

    /// Counts a position added to `recent` of `name`, dropping other producers' (least
    /// recently active first, then this one's oldest) while over [`MAX_RECENT_TOTAL`].
    fn added_recent(&mut self, name: &str) {
        self.recent_total += 1;
        while self.recent_total > MAX_RECENT_TOTAL {
            match self.least_active(name, |p| !p.recent.is_empty()) {
                Some(victim) => {
                    let p = self.producers.get_mut(&victim).expect("listed");
                    self.recent_total -= p.recent.len();
                    p.recent.clear();
                }
                None => {
                    let Some(p) = self.producers.get_mut(name) else { break };
                    if p.recent.pop_front().is_none() {
                        break;
                    }
                    self.recent_total -= 1;
                }
            }
        }
    }
}

/// One topic's deduplication state. Shared by its producers' streams.
pub struct Dedup {
    key: String,
    inner: Mutex<Inner>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn position(p: (u64, u64)) -> Result<Position> {
    Ok(Position {
        ledger: LedgerId::new(p.0).map_err(|e| BrokerError::Corruption(format!("dedup snapshot: {e}")))?,
        entry: EntryId::new(p.1),
    })
}

impl Dedup {
    /// Empty state for a topic (`path` is `tenant/namespace/topic`).
    pub fn new(path: &str) -> Self {
        Self {
            key: keys::dedup(path),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Rebuilds the state of an opened topic: its snapshot plus the entries after it.
    pub async fn load(ml: &ManagedLedger) -> Result<Self> {
        let d = Self::new(&ml.topic().path());
        let snapshot = match ml.store().get(&d.key).await? {
            Some(v) => Some(
                serde_json::from_slice::<Snapshot>(&v.value)
                    .map_err(|e| BrokerError::Corruption(format!("dedup snapshot {}: {e}", d.key)))?,
            ),
            None => None,
        };
        let now = now_ms();
        let from = match &snapshot {
            Some(s) => {
                {
                    let mut inner = d.inner.lock().expect("dedup state");
                    // Most recently active first, so a snapshot over the limit (an older
                    // build's) keeps the ones that matter.
                    let mut listed: Vec<_> = s.producers.iter().collect();
                    listed.sort_by_key(|(_, (_, active))| std::cmp::Reverse(*active));
                    for (name, (seq, active)) in listed.into_iter().take(MAX_PRODUCERS) {
                        let mut p = Producer::new(*active);
                        p.pushed = Some(*seq);
                        p.progress.send_modify(|g| g.persisted = Some(*seq));
                        inner.producers.insert(name.clone(), p);
                    }
                }
                match s.replay_from {
                    Some(p) => Some(position(p)?),
                    None => ml.first_position().await,
                }
            }
            None => replay_start(&ml.ledgers().await),
        };
        let (Some(end), Some(mut next)) = (ml.last_confirmed(), from) else {
            return Ok(d);
        };
        let mut replayed = 0u64;
        // `read` continues across ledgers and stops at the last confirmed entry.
        while next <= end {
            let entries = ml.read(next, 1000).await?;
            let Some((last, _)) = entries.last() else { break };
            next = Position {
                ledger: last.ledger,
                entry: EntryId::new(last.entry.get() + 1),
            };
            for (pos, payload) in &entries {
                d.replay(*pos, payload, now)?;
            }
            replayed += entries.len() as u64;
        }
        let mut inner = d.inner.lock().expect("dedup state");
        inner.previous_end = Some(end);
        inner.dirty = true;
        drop(inner);
        tracing::debug!(topic = %ml.topic(), replayed, "deduplication state rebuilt");
        Ok(d)
    }

    fn replay(&self, pos: Position, payload: &Bytes, now: u64) -> Result<()> {
        let batch = entry_format::decode(payload)?;
        if batch.producer_name.is_empty() {
            return Ok(());
        }
        let mut inner = self.inner.lock().expect("dedup state");
        let name = batch.producer_name;
        let p = Self::producer(&mut inner, &name, now);
        p.last_active_ms = p.last_active_ms.max(batch.publish_time_ms);
        if p.record(batch.sequence_id, pos, batch.messages.len() as u32) {
            inner.added_recent(&name);
        }
        Ok(())
    }

    /// Decides what to do with batch `seq` of `producer`; a [`Check::New`] batch counts
    /// as accepted from now on (report its outcome with [`Dedup::stored`] or
    /// [`Dedup::failed`]). Call in the order the producer sent its batches.
    pub fn check(&self, producer: &str, seq: u64) -> Check {
        let now = now_ms();
        let mut inner = self.inner.lock().expect("dedup state");
        let p = Self::producer(&mut inner, producer, now);
        p.last_active_ms = now;
        if p.pushed.is_none_or(|pushed| seq > pushed) {
            p.pushed = Some(seq);
            return Check::New;
        }
        if p.persisted().is_none_or(|persisted| seq > persisted) {
            return Check::Pending(p.progress.subscribe());
        }
        Self::lookup(p, seq)
    }

    fn lookup(p: &Producer, seq: u64) -> Check {
        match p.recent.binary_search_by_key(&seq, |(s, ..)| *s) {
            Ok(i) => Check::Stored {
                position: p.recent[i].1,
                count: p.recent[i].2,
            },
            Err(_) => Check::StoredUnknown,
        }
    }

    /// Waits for the original of a [`Check::Pending`] duplicate, then decides again.
    pub async fn wait(&self, producer: &str, seq: u64, mut rx: watch::Receiver<Progress>) -> Result<Check> {
        let progress = *rx
            .wait_for(|g| g.failed || g.persisted.is_some_and(|p| p >= seq))
            .await
            .map_err(|_| BrokerError::Closed(producer.to_string()))?;
        if progress.failed && progress.persisted.is_none_or(|p| p < seq) {
            return Err(BrokerError::Closed(format!(
                "the first copy of batch {seq} of producer {producer} was not stored; resend it"
            )));
        }
        let inner = self.inner.lock().expect("dedup state");
        Ok(match inner.producers.get(producer) {
            Some(p) => Self::lookup(p, seq),
            None => Check::StoredUnknown,
        })
    }

    /// Records that batch `seq` of `producer` is stored at `position`.
    pub fn stored(&self, producer: &str, seq: u64, position: Position, count: u32) {
        let now = now_ms();
        let mut inner = self.inner.lock().expect("dedup state");
        inner.dirty = true;
        if Self::producer(&mut inner, producer, now).record(seq, position, count) {
            inner.added_recent(producer);
        }
    }

    /// The state of `producer`, created on first use (without allocating its name on
    /// the per-batch path once it exists).
    fn producer<'a>(inner: &'a mut Inner, producer: &str, now: u64) -> &'a mut Producer {
        if !inner.producers.contains_key(producer) {
            inner.make_room_for(producer);
            inner.producers.insert(producer.to_string(), Producer::new(now));
        }
        inner.producers.get_mut(producer).expect("just inserted")
    }

    /// Records that storing a batch of `producer` failed: duplicates waiting on it fail
    /// too (the topic's storage fails every later append; the topic is reloaded).
    pub fn failed(&self, producer: &str) {
        let inner = self.inner.lock().expect("dedup state");
        if let Some(p) = inner.producers.get(producer) {
            p.progress.send_modify(|g| g.failed = true);
        }
    }

    /// The last stored sequence id of `producer`, if any.
    pub fn last_sequence(&self, producer: &str) -> Option<u64> {
        self.inner
            .lock()
            .expect("dedup state")
            .producers
            .get(producer)
            .and_then(Producer::persisted)
    }

    /// The state to persist, if it changed: `end` is the topic's last position now.
    fn take_snapshot(&self, end: Option<Position>) -> Option<Snapshot> {
        let now = now_ms();
        let mut inner = self.inner.lock().expect("dedup state");
        if !inner.dirty {
            return None;
        }
        inner.dirty = false;
        inner
            .producers
            .retain(|_, p| now.saturating_sub(p.last_active_ms) < PRODUCER_INACTIVITY_MS);
        inner.recent_total = inner.producers.values().map(|p| p.recent.len()).sum();
        let producers = inner
            .producers
            .iter()
            .filter_map(|(n, p)| p.persisted().map(|s| (n.clone(), (s, p.last_active_ms))))
            .collect();
        let replay_from = inner.previous_end.or(end).map(|p| (p.ledger.get(), p.entry.get()));
        inner.previous_end = end;
        Some(Snapshot {
            format: SNAPSHOT_FORMAT,
            replay_from,
            producers,
        })
    }

    /// Persists the state if it changed since the last call, only while this broker owns
    /// the topic (`store` is fenced by ownership: an old owner cannot overwrite the new
    /// owner's snapshot).
    pub async fn persist(&self, store: &crate::owned_store::OwnedStore, end: Option<Position>) -> Result<()> {
        let Some(s) = self.take_snapshot(end) else {
            return Ok(());
        };
        let value = Bytes::from(serde_json::to_vec(&s).expect("serializable"));
        match store.put(&self.key, value, Condition::Any).await {
            Ok(_) => Ok(()),
            Err(strata_meta::MetaError::GuardChanged(_)) => Err(BrokerError::Fenced(
                self.key.clone(),
                "this broker no longer owns the topic; the new owner keeps the deduplication state".into(),
            )),
            Err(e) => {
                self.inner.lock().expect("dedup state").dirty = true;
                Err(e.into())
            }
        }
    }

    /// Deletes the persisted state (the topic is being deleted).
    pub async fn delete(store: &dyn MetadataStore, path: &str) -> Result<()> {
        store.delete(&keys::dedup(path), Condition::Any).await?;
        Ok(())
    }
}

/// Where to replay from for a topic without a snapshot: at most the last
/// [`MAX_REPLAY_ENTRIES`] entries.
fn replay_start(ledgers: &[crate::managed_ledger::LedgerInfo]) -> Option<Position> {
    let mut budget = MAX_REPLAY_ENTRIES;
    let mut start = None;
    for l in ledgers.iter().rev() {
        if l.entries == 0 {
            continue;
        }
        let id = LedgerId::new(l.id).expect("stored ids are valid");
        if l.entries >= budget {
            return Some(Position {
                ledger: id,
                entry: EntryId::new(l.entries - budget),
            });
        }
        budget -= l.entries;
        start = Some(Position {
            ledger: id,
            entry: EntryId::new(0),
        });
    }
    start
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(l: u64, e: u64) -> Position {
        Position {
            ledger: LedgerId::new(l).unwrap(),
            entry: EntryId::new(e),
        }
    }

    #[test]
    fn a_resent_batch_is_a_duplicate_with_its_original_position() {
        let d = Dedup::new("t/n/x");
        assert!(matches!(d.check("p", 0), Check::New));
        d.stored("p", 0, pos(1, 0), 3);
        assert!(matches!(d.check("p", 1), Check::New));
        d.stored("p", 1, pos(1, 1), 2);
        match d.check("p", 0) {
            Check::Stored { position, count } => assert_eq!((position, count), (pos(1, 0), 3)),
            other => panic!("{other:?}"),
        }
        assert!(matches!(d.check("q", 0), Check::New), "producers are independent");
        assert_eq!(d.last_sequence("p"), Some(1));
        assert_eq!(d.last_sequence("nobody"), None);
    }

    #[test]
    fn producer_names_and_remembered_positions_are_bounded() {
        let d = Dedup::new("t/n/x");
        for i in 0..MAX_PRODUCERS + 5 {
            let n = format!("p{i}");
            assert!(matches!(d.check(&n, 0), Check::New));
            d.stored(&n, 0, pos(1, i as u64), 1);
        }
        {
            let inner = d.inner.lock().unwrap();
            assert_eq!(inner.producers.len(), MAX_PRODUCERS);
            assert_eq!(inner.recent_total, MAX_PRODUCERS);
            assert!(inner.producers.contains_key(&format!("p{}", MAX_PRODUCERS + 4)));
        }
        // Positions: 101 producers with a full window each pass the total.
        let d = Dedup::new("t/n/y");
        let producers = MAX_RECENT_TOTAL / RECENT_BATCHES + 1;
        for i in 0..producers {
            let n = format!("p{i}");
            for seq in 0..RECENT_BATCHES as u64 {
                d.check(&n, seq);
                d.stored(&n, seq, pos(1 + i as u64, seq), 1);
            }
        }
        let inner = d.inner.lock().unwrap();
        let held: usize = inner.producers.values().map(|p| p.recent.len()).sum();
        assert_eq!(held, inner.recent_total);
        assert!(held <= MAX_RECENT_TOTAL, "{held} positions held");
        drop(inner);
        // A producer whose positions were dropped still has its resends recognised.
        let trimmed = (0..producers)
            .map(|i| format!("p{i}"))
            .find(|n| d.inner.lock().unwrap().producers[n].recent.is_empty())
            .expect("some producer's positions were dropped");
        assert!(matches!(d.check(&trimmed, 5), Check::StoredUnknown));
        let last = format!("p{}", producers - 1);
        assert!(matches!(
            d.check(&last, RECENT_BATCHES as u64 - 1),
            Check::Stored { .. }
        ));
    }

    #[tokio::test]
    async fn a_duplicate_of_an_in_flight_batch_waits_for_it() {
        let d = std::sync::Arc::new(Dedup::new("t/n/x"));
        assert!(matches!(d.check("p", 5), Check::New));
        let Check::Pending(rx) = d.check("p", 5) else {
            panic!("in flight")
        };
        let d2 = d.clone();
        let waiter = tokio::spawn(async move { d2.wait("p", 5, rx).await });
        d.stored("p", 5, pos(2, 7), 1);
        match waiter.await.unwrap().unwrap() {
            Check::Stored { position, .. } => assert_eq!(position, pos(2, 7)),
            other => panic!("{other:?}"),
        }
        // A failed original fails its waiting duplicate.
        assert!(matches!(d.check("p", 6), Check::New));
        let Check::Pending(rx) = d.check("p", 6) else {
            panic!("in flight")
        };
        d.failed("p");
        assert!(d.wait("p", 6, rx).await.is_err());
    }

    #[test]
    fn snapshots_replay_from_the_previous_end_and_skip_when_unchanged() {
        let d = Dedup::new("t/n/x");
        assert!(matches!(d.check("p", 0), Check::New));
        d.stored("p", 0, pos(1, 0), 1);
        let s1 = d.take_snapshot(Some(pos(1, 0))).unwrap();
        assert_eq!(s1.replay_from, Some((1, 0)));
        assert_eq!(s1.producers["p"].0, 0);
        assert!(d.take_snapshot(Some(pos(1, 0))).is_none(), "nothing changed");
        assert!(matches!(d.check("p", 1), Check::New));
        d.stored("p", 1, pos(1, 1), 1);
        let s2 = d.take_snapshot(Some(pos(1, 1))).unwrap();
        assert_eq!(s2.replay_from, Some((1, 0)), "lags one snapshot behind");
        assert_eq!(s2.producers["p"].0, 1);
    }

    #[test]
    fn producers_idle_for_long_are_forgotten() {
        let d = Dedup::new("t/n/x");
        for name in ["old", "new"] {
            assert!(matches!(d.check(name, 0), Check::New));
            d.stored(name, 0, pos(1, 0), 1);
        }
        {
            // As restored from a snapshot: no recent positions, last seen long ago.
            let mut inner = d.inner.lock().unwrap();
            let old = inner.producers.get_mut("old").unwrap();
            old.last_active_ms = 0;
            old.recent.clear();
        }
        let s = d.take_snapshot(Some(pos(1, 0))).unwrap();
        assert_eq!(s.producers.keys().collect::<Vec<_>>(), ["new"]);
        assert_eq!(d.last_sequence("old"), None);
    }

    #[test]
    fn replay_without_snapshot_is_bounded() {
        use crate::managed_ledger::LedgerInfo;
        let l = |id, entries| LedgerInfo {
            id,
            entries,
            bytes: 0,
            created_ms: 0,
            offload: None,
        };
        assert_eq!(replay_start(&[l(1, 5), l(2, 7)]), Some(pos(1, 0)));
        assert_eq!(
            replay_start(&[l(1, 50_000), l(2, 7)]),
            Some(pos(1, 50_000 - (MAX_REPLAY_ENTRIES - 7)))
        );
        assert_eq!(replay_start(&[]), None);
    }
}
