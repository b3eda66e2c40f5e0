//! A subscription's cursor: how far it has consumed a topic.
//!
//! State = the **mark-delete position** (this entry and everything before it is
//! acknowledged) plus the **individually acknowledged ranges** after it, kept as merged,
//! inclusive ranges so many acks with few holes stay small. When the range right after the
//! mark-delete position fills in, the mark-delete position jumps over it.
//!
//! Which position follows which depends on the topic's ledgers (entry `e` of a ledger is
//! followed by `e + 1`, its last entry by entry 0 of the next ledger), so operations take a
//! [`Layout`] of the topic.
//!
//! Persistence: the state is stored as JSON at `/strata/v1/cursors/<t>/<ns>/<topic>/<sub>`
//! with compare-and-set. Acks are persisted in batches ([`Cursor::persist`] is called by
//! the owner on a timer or after N acks), so a crash may redeliver recent acks — never lose
//! a message. A version conflict means another broker owns the topic now.

use crate::error::{BrokerError, Result};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use strata_common::{EntryId, LedgerId, Position, SubscriptionName, TopicName};
use strata_meta::{Condition, MetaError, MetadataStore, keys};

/// Format of [`CursorInfo`].
pub const CURSOR_FORMAT: u32 = 1;
/// Most acknowledged ranges persisted; beyond this the oldest holes are kept and the
/// newest ranges dropped (those messages may be redelivered after a crash, never lost).
pub const MAX_PERSISTED_RANGES: usize = 10_000;

/// The ledgers of a topic as (ledger id, entry count), oldest first; the last one may
/// still be growing (its count is then a lower bound, which is all ordering needs).
#[derive(Debug, Clone, Default)]
pub struct Layout {
    pub ledgers: Vec<(u64, u64)>,
}

impl Layout {
    /// The position right after `p`.
    pub fn next(&self, p: Position) -> Position {
        let (l, e) = (p.ledger.get(), p.entry.get());
        if let Some(i) = self.ledgers.iter().position(|(id, _)| *id == l)
            && let Some((count, next)) = self.ledgers.get(i).map(|x| x.1).zip(self.ledgers.get(i + 1))
            && e + 1 >= count
        {
            return Position {
                ledger: LedgerId::new(next.0).expect("stored ids are valid"),
                entry: EntryId::new(0),
            };
        }
        Position {
            ledger: p.ledger,
            entry: EntryId::new(e + 1),
        }
    }

    /// The position right before `p`, or `None` when `p` is the first of the topic.
    pub fn prev(&self, p: Position) -> Option<Position> {
        if p.entry.get() > 0 {
            return Some(Position {
                ledger: p.ledger,
                entry: EntryId::new(p.entry.get() - 1),
            });
        }
        let i = self.ledgers.iter().position(|(id, _)| *id == p.ledger.get())?;
        self.ledgers[..i]
            .iter()
            .rev()
            .find(|(_, n)| *n > 0)
            .map(|(id, n)| Position {
                ledger: LedgerId::new(*id).expect("stored ids are valid"),
                entry: EntryId::new(n - 1),
            })
    }

    /// The first position of the topic.
    pub fn first(&self) -> Option<Position> {
        self.ledgers.first().map(|(id, _)| Position {
            ledger: LedgerId::new(*id).expect("stored ids are valid"),
            entry: EntryId::new(0),
        })
    }
}

/// The stored form of a cursor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CursorInfo {
    pub format: u32,
    /// (ledger, entry) of the mark-delete position; `None` before anything was acked.
    pub mark_delete: Option<(u64, u64)>,
    /// Individually acknowledged inclusive ranges after the mark-delete position.
    pub acked: Vec<((u64, u64), (u64, u64))>,
    /// Subscription type name, so a reconnecting consumer of another type is refused.
    pub sub_type: String,
}

fn pos(t: (u64, u64)) -> Result<Position> {
    Ok(Position {
        ledger: LedgerId::new(t.0).map_err(|e| BrokerError::Corruption(format!("cursor: {e}")))?,
        entry: EntryId::new(t.1),
    })
}

fn raw(p: Position) -> (u64, u64) {
    (p.ledger.get(), p.entry.get())
}

/// Acknowledgement state of one subscription, in memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AckState {
    mark_delete: Option<Position>,
    /// start → end (inclusive), non-overlapping, non-adjacent, all after mark_delete.
    ranges: BTreeMap<Position, Position>,
}

impl AckState {
    pub fn mark_delete(&self) -> Option<Position> {
        self.mark_delete
    }

    /// Number of separate acknowledged ranges (holes + 1).
    pub fn range_count(&self) -> usize {
        self.ranges.len()
    }

    pub fn is_acked(&self, p: Position) -> bool {
        if self.mark_delete.is_some_and(|m| p <= m) {
            return true;
        }
        self.ranges.range(..=p).next_back().is_some_and(|(_, end)| p <= *end)
    }

    /// Acknowledges one position.
    pub fn ack(&mut self, p: Position, layout: &Layout) {
        if self.is_acked(p) {
            return;
        }
        let (mut start, mut end) = (p, p);
        // Merge with a range ending right before p.
        if let Some((&s, &e)) = self.ranges.range(..p).next_back()
            && layout.next(e) == p
        {
            self.ranges.remove(&s);
            start = s;
        }
        // Merge with a range starting right after p.
        let after = layout.next(end);
        if let Some(e) = self.ranges.remove(&after) {
            end = e;
        }
        self.ranges.insert(start, end);
        self.advance(layout);
    }

    /// Acknowledges everything up to and including `p`.
    pub fn ack_cumulative(&mut self, p: Position, layout: &Layout) {
        if self.mark_delete.is_some_and(|m| p <= m) {
            return;
        }
        self.mark_delete = Some(p);
        // Drop ranges wholly covered; a range straddling p now starts after it.
        let covered: Vec<Position> = self.ranges.range(..=p).map(|(s, _)| *s).collect();
        for s in covered {
            let e = self.ranges.remove(&s).expect("present");
            if e > p {
                self.ranges.insert(layout.next(p), e);
            }
        }
        self.advance(layout);
    }

    /// Moves the mark-delete position over a range that now touches it.
    fn advance(&mut self, layout: &Layout) {
        loop {
            let expected = match self.mark_delete {
                Some(m) => layout.next(m),
                None => match layout.first() {
                    Some(f) => f,
                    None => return,
                },
            };
            match self.ranges.remove(&expected) {
                Some(end) => self.mark_delete = Some(end),
                None => return,
            }
        }
    }

    fn to_info(&self, sub_type: &str) -> CursorInfo {
        CursorInfo {
            format: CURSOR_FORMAT,
            mark_delete: self.mark_delete.map(raw),
            acked: self
                .ranges
                .iter()
                .take(MAX_PERSISTED_RANGES)
                .map(|(s, e)| (raw(*s), raw(*e)))
                .collect(),
            sub_type: sub_type.to_string(),
        }
    }

    fn from_info(info: &CursorInfo) -> Result<Self> {
        let mut ranges = BTreeMap::new();
        for (s, e) in &info.acked {
            ranges.insert(pos(*s)?, pos(*e)?);
        }
        Ok(Self {
            mark_delete: info.mark_delete.map(pos).transpose()?,
            ranges,
        })
    }
}

/// A cursor: [`AckState`] plus its stored version. A non-durable cursor (a reader's) is
/// never written: its persistence calls are no-ops.
pub struct Cursor {
    key: String,
    durable: bool,
    store: Arc<dyn MetadataStore>,
    pub state: AckState,
    sub_type: String,
    version: u64,
    dirty: bool,
    /// Bumped on every change, so a write of an older state does not clear `dirty`.
    generation: u64,
}

impl Cursor {
    /// Loads the cursor, or creates it at `initial` (the position before the first message
    /// to deliver; `None` means from the beginning).
    pub async fn open(
        store: Arc<dyn MetadataStore>,
        topic: &TopicName,
        sub: &SubscriptionName,
        sub_type: &str,
        initial: Option<Position>,
    ) -> Result<Self> {
        let key = keys::cursor(&topic.path(), sub.as_str());
        loop {
            if let Some(v) = store.get(&key).await? {
                let info: CursorInfo = serde_json::from_slice(&v.value)
                    .map_err(|e| BrokerError::Corruption(format!("cursor {sub} of {topic}: {e}")))?;
                if info.format != CURSOR_FORMAT {
                    return Err(BrokerError::Corruption(format!(
                        "cursor {sub} of {topic} has format {}",
                        info.format
                    )));
                }
                return Ok(Self {
                    key,
                    durable: true,
                    store,
                    state: AckState::from_info(&info)?,
                    sub_type: info.sub_type,
                    version: v.version,
                    dirty: false,
                    generation: 0,
                });
            }
            let state = AckState {
                mark_delete: initial,
                ranges: BTreeMap::new(),
            };
            let value = Bytes::from(serde_json::to_vec(&state.to_info(sub_type)).expect("cursor serialises"));
            match store.put(&key, value, Condition::Absent).await {
                Ok(version) => {
                    return Ok(Self {
                        key,
                        durable: true,
                        store,
                        state,
                        sub_type: sub_type.to_string(),
                        version,
                        dirty: false,
                        generation: 0,
                    });
                }
                Err(MetaError::BadVersion(_)) => continue, // created concurrently: load it
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// A cursor kept in memory only (readers): starts after `initial` (`None`: from the
    /// beginning), never written to the metadata store.
    pub fn non_durable(store: Arc<dyn MetadataStore>, sub_type: &str, initial: Option<Position>) -> Self {
        Self {
            key: String::new(),
            durable: false,
            store,
            state: AckState {
                mark_delete: initial,
                ranges: BTreeMap::new(),
            },
            sub_type: sub_type.to_string(),
            version: 0,
            dirty: false,
            generation: 0,
        }
    }

    pub fn is_durable(&self) -> bool {
        self.durable
    }

    /// The subscription type the cursor was created with.
    pub fn sub_type(&self) -> &str {
        &self.sub_type
    }

    pub fn ack(&mut self, p: Position, layout: &Layout) {
        self.state.ack(p, layout);
        self.dirty = true;
        self.generation += 1;
    }

    pub fn ack_cumulative(&mut self, p: Position, layout: &Layout) {
        self.state.ack_cumulative(p, layout);
        self.dirty = true;
        self.generation += 1;
    }

    /// Writes the state if it changed since the last write. A version conflict means
    /// another broker now owns the topic.
    pub async fn persist(&mut self) -> Result<()> {
        if !self.dirty || !self.durable {
            return Ok(());
        }
        let value = Bytes::from(serde_json::to_vec(&self.state.to_info(&self.sub_type)).expect("cursor serialises"));
        match self.store.put(&self.key, value, Condition::Version(self.version)).await {
            Ok(v) => {
                self.version = v;
                self.dirty = false;
                Ok(())
            }
            Err(MetaError::BadVersion(_)) => Err(BrokerError::Fenced(
                self.key.clone(),
                "the cursor was updated by another broker".into(),
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// Seek: everything before `p` counts as acknowledged, nothing from `p` on.
    pub fn reset_before(&mut self, p: Position, layout: &Layout) {
        self.state = AckState {
            mark_delete: layout.prev(p),
            ranges: BTreeMap::new(),
        };
        self.dirty = true;
        self.generation += 1;
    }

    /// The serialized state and the version to compare against, if there is anything to
    /// write; with [`Cursor::persisted`], lets the caller write without holding a lock.
    pub fn to_persist(&self) -> Option<(String, Bytes, u64, u64)> {
        (self.dirty && self.durable).then(|| {
            (
                self.key.clone(),
                Bytes::from(serde_json::to_vec(&self.state.to_info(&self.sub_type)).expect("cursor serialises")),
                self.version,
                self.generation,
            )
        })
    }

    /// Records a successful write of the state of `generation` at `version`.
    pub fn persisted(&mut self, version: u64, generation: u64) {
        self.version = version;
        if self.generation == generation {
            self.dirty = false;
        }
    }

    pub fn store(&self) -> Arc<dyn MetadataStore> {
        self.store.clone()
    }

    /// Deletes the cursor (unsubscribe).
    pub async fn delete(self) -> Result<()> {
        if !self.durable {
            return Ok(());
        }
        self.store.delete(&self.key, Condition::Any).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(l: u64, e: u64) -> Position {
        Position {
            ledger: LedgerId::new(l).unwrap(),
            entry: EntryId::new(e),
        }
    }

    fn layout() -> Layout {
        // Ledger 1 has 5 entries, ledger 3 has 4, ledger 7 is current.
        Layout {
            ledgers: vec![(1, 5), (3, 4), (7, 0)],
        }
    }

    #[test]
    fn next_and_prev_cross_ledgers() {
        let l = layout();
        assert_eq!(l.prev(p(3, 0)), Some(p(1, 4)));
        assert_eq!(l.prev(p(1, 0)), None);
        assert_eq!(l.prev(p(7, 2)), Some(p(7, 1)));
        assert_eq!(l.next(p(1, 3)), p(1, 4));
        assert_eq!(l.next(p(1, 4)), p(3, 0));
        assert_eq!(l.next(p(3, 3)), p(7, 0));
        assert_eq!(l.next(p(7, 9)), p(7, 10));
    }

    #[test]
    fn individual_acks_merge_and_advance_the_mark_delete_position() {
        let l = layout();
        let mut s = AckState::default();
        s.ack(p(1, 2), &l);
        s.ack(p(1, 4), &l);
        s.ack(p(3, 0), &l);
        assert_eq!(s.mark_delete(), None);
        assert_eq!(s.range_count(), 2, "1:4 and 3:0 merged across the ledger boundary");
        assert!(s.is_acked(p(1, 2)) && !s.is_acked(p(1, 3)));
        s.ack(p(1, 0), &l);
        s.ack(p(1, 1), &l);
        assert_eq!(s.mark_delete(), Some(p(1, 2)));
        s.ack(p(1, 3), &l);
        assert_eq!(s.mark_delete(), Some(p(3, 0)));
        assert_eq!(s.range_count(), 0);
        // Acking again is a no-op.
        s.ack(p(1, 3), &l);
        assert_eq!(s.mark_delete(), Some(p(3, 0)));
    }

    #[test]
    fn cumulative_acks_swallow_ranges() {
        let l = layout();
        let mut s = AckState::default();
        s.ack(p(3, 2), &l);
        s.ack(p(7, 1), &l);
        s.ack(p(7, 2), &l);
        s.ack_cumulative(p(7, 1), &l);
        assert_eq!(s.mark_delete(), Some(p(7, 2)), "the straddling range joined");
        assert_eq!(s.range_count(), 0);
        s.ack_cumulative(p(1, 0), &l);
        assert_eq!(s.mark_delete(), Some(p(7, 2)), "never moves back");
    }

    #[test]
    fn many_acks_with_few_holes_stay_compact() {
        let l = Layout { ledgers: vec![(1, 0)] };
        let mut s = AckState::default();
        for e in 1..100_000u64 {
            if e % 10_000 != 0 {
                s.ack(p(1, e), &l);
            }
        }
        assert_eq!(s.mark_delete(), None, "entry 0 is not acked");
        assert_eq!(s.range_count(), 10);
        s.ack(p(1, 0), &l);
        assert_eq!(s.mark_delete(), Some(p(1, 9_999)));
        assert_eq!(s.range_count(), 9);
    }

    #[tokio::test]
    async fn persisted_state_survives_reopen_and_conflicts_fence() {
        let store = strata_meta::connect("memory://").await.unwrap();
        let topic = TopicName::parse("t/ns/x").unwrap();
        let sub = SubscriptionName::new("s").unwrap();
        let l = layout();
        let mut c = Cursor::open(store.clone(), &topic, &sub, "Shared", None).await.unwrap();
        c.ack(p(1, 0), &l);
        c.ack(p(1, 3), &l);
        c.persist().await.unwrap();
        let mut other = Cursor::open(store.clone(), &topic, &sub, "Exclusive", None)
            .await
            .unwrap();
        assert_eq!(other.sub_type(), "Shared", "the stored type wins");
        assert_eq!(other.state, c.state);
        other.ack(p(1, 1), &l);
        other.persist().await.unwrap();
        c.ack(p(1, 2), &l);
        assert!(matches!(c.persist().await, Err(BrokerError::Fenced(..))));
    }
}
