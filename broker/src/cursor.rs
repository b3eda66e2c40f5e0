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
//! with compare-and-set, fenced by the topic's ownership ([`OwnedStore`]): a broker that
//! lost the topic cannot write it any more. Acks are persisted in batches (the owner calls
//! [`Cursor::persist`] on a timer), so a crash may redeliver recent acks — never lose a
//! message. A version conflict while still owning the topic can only come from this
//! broker's own write that committed without an answer: the owner's in-memory state is
//! the truth, so the stored version is re-read and the write retried (see
//! [`Cursor::persist`]); the cursor never stops being persisted.

use crate::error::{BrokerError, Result};
use crate::owned_store::OwnedStore;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use strata_common::{EntryId, LedgerId, Position, SubscriptionName, TopicName};
use strata_meta::{Condition, MetaError, keys};

/// Format of [`CursorInfo`].
pub const CURSOR_FORMAT: u32 = 1;
/// Most acknowledged ranges persisted; beyond this the oldest holes are kept and the
/// newest ranges dropped (those messages may be redelivered after a crash, never lost).
pub const MAX_PERSISTED_RANGES: usize = 10_000;

/// The ledgers of a topic as (ledger id, entry count), oldest first; the last one may
/// still be growing (its count is then a lower bound, which is all ordering needs).
///
/// Positions never land in a ledger that holds no entry: a closed empty ledger (a topic
/// loaded and unloaded with no append in between) and a ledger no longer listed (trimmed
/// by retention) are skipped, so the position after an acknowledged entry is always one
/// that can be delivered and acknowledged — otherwise the mark-delete position would wait
/// for it forever and retention would stop.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    pub ledgers: Vec<(u64, u64)>,
}

impl Layout {
    fn at(id: u64, entry: u64) -> Position {
        Position {
            ledger: LedgerId::new(id).expect("stored ids are valid"),
            entry: EntryId::new(entry),
        }
    }

    /// Entry 0 of the first ledger from index `i` on that holds entries or is the last
    /// (growing) one.
    fn first_from(&self, i: usize) -> Option<Position> {
        let last = self.ledgers.len().checked_sub(1)?;
        self.ledgers[i.min(self.ledgers.len())..]
            .iter()
            .enumerate()
            .find(|(j, (_, n))| *n > 0 || i + j == last)
            .map(|(_, (id, _))| Self::at(*id, 0))
    }

    /// The position right after `p`.
    pub fn next(&self, p: Position) -> Position {
        let (l, e) = (p.ledger.get(), p.entry.get());
        let successor = Self::at(l, e.saturating_add(1));
        match self.ledgers.iter().position(|(id, _)| *id == l) {
            // The last ledger grows: its next entry is next.
            Some(i) if i + 1 == self.ledgers.len() => successor,
            Some(i) if e.saturating_add(1) < self.ledgers[i].1 => successor,
            Some(i) => self.first_from(i + 1).unwrap_or(successor),
            // Not listed (trimmed): the first entry of the ledgers after it.
            None => match self.ledgers.iter().position(|(id, _)| *id > l) {
                Some(i) => self.first_from(i).unwrap_or(successor),
                None => successor,
            },
        }
    }

    /// Where a position a user gave (a reset to a message id) lands: itself when it is
    /// an entry of a listed ledger or the next entry of the last one; the first entry
    /// after it when its ledger was trimmed or it is just past a closed ledger's end.
    /// `None` for a position that never existed: beyond the last ledger, or beyond a
    /// ledger's end.
    pub fn resolve(&self, p: Position) -> Option<Position> {
        let (l, e) = (p.ledger.get(), p.entry.get());
        let &(last, _) = self.ledgers.last()?;
        if l > last {
            return None;
        }
        match self.ledgers.iter().position(|(id, _)| *id == l) {
            Some(i) => {
                let n = self.ledgers[i].1;
                if i + 1 == self.ledgers.len() {
                    (e <= n).then_some(p)
                } else if e < n {
                    Some(p)
                } else if e == n {
                    self.first_from(i + 1)
                } else {
                    None
                }
            }
            None => self.first_from(self.ledgers.iter().position(|(id, _)| *id > l)?),
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
        let i = self
            .ledgers
            .iter()
            .position(|(id, _)| *id >= p.ledger.get())
            .unwrap_or(self.ledgers.len());
        self.ledgers[..i]
            .iter()
            .rev()
            .find(|(_, n)| *n > 0)
            .map(|(id, n)| Self::at(*id, n - 1))
    }

    /// The first position of the topic: entry 0 of its first ledger holding entries (or
    /// of the growing last one).
    pub fn first(&self) -> Option<Position> {
        self.first_from(0)
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

/// Writes a cursor's state at `version` while this broker owns the topic; returns the
/// new version.
///
/// - The topic's ownership moved: [`BrokerError::Fenced`], nothing written.
/// - A version conflict while still owning it: only this broker writes the key while it
///   owns the topic (admin commands only delete it), so the stored value is an earlier
///   state of ours whose write committed without an answer. The key is re-read and the
///   write made again at the version found: the owner's in-memory state is the truth,
///   and it covers everything the stored one acknowledged.
/// - The key is gone (the subscription was deleted): [`BrokerError::NotFound`].
pub async fn write(store: &OwnedStore, key: &str, value: Bytes, version: u64) -> Result<u64> {
    match store.put(key, value.clone(), Condition::Version(version)).await {
        Ok(v) => Ok(v),
        Err(MetaError::BadVersion(_)) => match store.store().get(key).await? {
            Some(found) => {
                tracing::info!(
                    cursor = key,
                    expected = version,
                    found = found.version,
                    "cursor version moved under this owner (an earlier write committed without an answer); writing again"
                );
                store
                    .put(key, value, Condition::Version(found.version))
                    .await
                    .map_err(|e| persist_error(key, e))
            }
            None => Err(BrokerError::NotFound(format!("cursor {key} was deleted"))),
        },
        Err(e) => Err(persist_error(key, e)),
    }
}

/// Entries after `mark_delete` (all of them without one), given the ledgers as
/// (id, entries) oldest first: a subscription's backlog in entries.
pub fn backlog_entries(counts: &[(u64, u64)], mark_delete: Option<(u64, u64)>) -> u64 {
    counts
        .iter()
        .map(|&(id, n)| match mark_delete {
            None => n,
            Some((ml, _)) if id < ml => 0,
            Some((ml, me)) if id == ml => n.saturating_sub(me.saturating_add(1)),
            Some(_) => n,
        })
        .sum()
}

fn persist_error(key: &str, e: MetaError) -> BrokerError {
    match e {
        MetaError::GuardChanged(_) => BrokerError::Fenced(
            key.to_string(),
            "this broker no longer owns the topic; the new owner keeps the cursor".into(),
        ),
        MetaError::BadVersion(_) => {
            BrokerError::Metadata(format!("cursor {key} changed while it was written; retried"))
        }
        e => e.into(),
    }
}

/// A cursor: [`AckState`] plus its stored version. A non-durable cursor (a reader's) is
/// never written: its persistence calls are no-ops.
pub struct Cursor {
    key: String,
    durable: bool,
    store: OwnedStore,
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
        store: OwnedStore,
        topic: &TopicName,
        sub: &SubscriptionName,
        sub_type: &str,
        initial: Option<Position>,
    ) -> Result<Self> {
        let key = keys::cursor(&topic.path(), sub.as_str());
        loop {
            if let Some(v) = store.store().get(&key).await? {
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
                Err(e) => return Err(persist_error(&key, e)),
            }
        }
    }

    /// A cursor kept in memory only (readers): starts after `initial` (`None`: from the
    /// beginning), never written to the metadata store.
    pub fn non_durable(store: OwnedStore, sub_type: &str, initial: Option<Position>) -> Self {
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

    /// Writes the state if it changed since the last write (see [`write`]).
    pub async fn persist(&mut self) -> Result<()> {
        let Some((key, value, version, generation)) = self.to_persist() else {
            return Ok(());
        };
        let v = write(&self.store, &key, value, version).await?;
        self.persisted(v, generation);
        Ok(())
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

    pub fn store(&self) -> OwnedStore {
        self.store.clone()
    }

    /// Deletes the cursor (unsubscribe).
    pub async fn delete(self) -> Result<()> {
        if !self.durable {
            return Ok(());
        }
        self.store.store().delete(&self.key, Condition::Any).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backlog_counts_entries_after_the_mark_delete_position() {
        let counts = [(3, 10), (5, 0), (7, 4)];
        assert_eq!(backlog_entries(&counts, None), 14);
        assert_eq!(backlog_entries(&counts, Some((3, 4))), 9);
        assert_eq!(backlog_entries(&counts, Some((3, 9))), 4);
        assert_eq!(backlog_entries(&counts, Some((7, 3))), 0);
        // A position past everything (or an entry id of u64::MAX) never underflows.
        assert_eq!(backlog_entries(&counts, Some((u64::MAX, u64::MAX))), 0);
        assert_eq!(backlog_entries(&counts, Some((3, u64::MAX))), 4);
        assert_eq!(backlog_entries(&[], None), 0);
    }

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
    fn a_user_given_position_resolves_only_if_it_ever_existed() {
        let l = Layout {
            ledgers: vec![(3, 4), (5, 0), (7, 2)],
        };
        assert_eq!(l.resolve(p(3, 2)), Some(p(3, 2)));
        // Just past a closed ledger: the next entry that exists.
        assert_eq!(l.resolve(p(3, 4)), Some(p(7, 0)));
        assert_eq!(l.resolve(p(3, 5)), None);
        // Trimmed ledgers, below the first and between listed ones.
        assert_eq!(l.resolve(p(1, 99)), Some(p(3, 0)));
        assert_eq!(l.resolve(p(4, 0)), Some(p(7, 0)));
        // The growing ledger: up to its next entry.
        assert_eq!(l.resolve(p(7, 2)), Some(p(7, 2)));
        assert_eq!(l.resolve(p(7, 3)), None);
        assert_eq!(l.resolve(p(u64::MAX, u64::MAX)), None);
        assert_eq!(l.resolve(p(7, u64::MAX)), None);
        assert_eq!(Layout::default().resolve(p(1, 0)), None);
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

    #[test]
    fn positions_skip_empty_and_trimmed_ledgers() {
        // Ledger 2 closed empty (a load and unload with no append), ledger 4 empty too,
        // ledger 5 current (growing, count 0).
        let l = Layout {
            ledgers: vec![(1, 3), (2, 0), (3, 2), (4, 0), (5, 0)],
        };
        assert_eq!(l.next(p(1, 2)), p(3, 0), "over the empty ledger 2");
        assert_eq!(l.next(p(3, 1)), p(5, 0), "over the empty ledger 4 to the growing one");
        assert_eq!(l.next(p(5, 7)), p(5, 8));
        assert_eq!(l.prev(p(3, 0)), Some(p(1, 2)));
        assert_eq!(l.prev(p(5, 0)), Some(p(3, 1)));
        // The first ledgers empty: the first position is in the first one with entries.
        let l2 = Layout {
            ledgers: vec![(2, 0), (3, 2), (5, 0)],
        };
        assert_eq!(l2.first(), Some(p(3, 0)));
        // Only empty closed ledgers and the growing one: entry 0 of the growing one.
        let l3 = Layout {
            ledgers: vec![(2, 0), (4, 0), (5, 0)],
        };
        assert_eq!(l3.first(), Some(p(5, 0)));
        assert_eq!(l3.next(p(1, 9)), p(5, 0), "a trimmed mark-delete ledger");
        // The mark-delete ledger was trimmed: next is the first entry after it.
        assert_eq!(l2.next(p(1, 2)), p(3, 0));
        assert_eq!(l2.prev(p(3, 0)), None);
        // u64::MAX ids and entries do not overflow.
        let big = Layout {
            ledgers: vec![(u64::MAX - 1, 0)],
        };
        assert_eq!(big.next(p(u64::MAX - 1, u64::MAX)), p(u64::MAX - 1, u64::MAX));
    }

    #[test]
    fn the_mark_delete_position_advances_over_empty_and_trimmed_ledgers() {
        // Acked through 1:2; then ledger 2 closed empty and 3 holds two entries.
        let mut s = AckState::default();
        let before = Layout {
            ledgers: vec![(1, 3), (2, 0)],
        };
        for e in 0..3 {
            s.ack(p(1, e), &before);
        }
        assert_eq!(s.mark_delete(), Some(p(1, 2)));
        let l = Layout {
            ledgers: vec![(1, 3), (2, 0), (3, 2), (6, 0)],
        };
        s.ack(p(3, 0), &l);
        assert_eq!(s.mark_delete(), Some(p(3, 0)), "moved over the empty ledger");
        // Retention trims 1..3 while the mark sits on 3's last entry.
        s.ack(p(3, 1), &l);
        assert_eq!(s.mark_delete(), Some(p(3, 1)));
        let trimmed = Layout {
            ledgers: vec![(6, 4), (9, 0)],
        };
        s.ack(p(6, 1), &trimmed);
        s.ack(p(6, 0), &trimmed);
        assert_eq!(s.mark_delete(), Some(p(6, 1)), "moved on although its ledger is gone");
        assert_eq!(s.range_count(), 0);
        // Nothing acked yet and the first ledgers empty: the first real entry counts.
        let mut fresh = AckState::default();
        let empty_first = Layout {
            ledgers: vec![(2, 0), (3, 2), (6, 0)],
        };
        fresh.ack(p(3, 0), &empty_first);
        assert_eq!(fresh.mark_delete(), Some(p(3, 0)));
    }

    #[tokio::test]
    async fn cursor_writes_are_fenced_by_ownership_and_survive_an_ambiguous_write() {
        let store = strata_meta::connect("memory://").await.unwrap();
        let topic = TopicName::parse("t/ns/x").unwrap();
        let sub = SubscriptionName::new("s").unwrap();
        let l = layout();
        let owner_key = "/strata/v1/ownership/t/ns/0x00000000_0xffffffff";
        let v1 = store
            .put(owner_key, Bytes::from_static(b"a"), Condition::Absent)
            .await
            .unwrap();
        let guard = |version| strata_meta::Guard {
            key: owner_key.into(),
            version,
        };
        let old = OwnedStore::new(store.clone(), Some(guard(v1)));
        let mut c = Cursor::open(old, &topic, &sub, "Shared", None).await.unwrap();
        c.ack(p(1, 0), &l);
        c.persist().await.unwrap();

        // Ownership moves (the old owner's session expired; another broker took the bundle).
        store.delete(owner_key, Condition::Any).await.unwrap();
        let v2 = store
            .put(owner_key, Bytes::from_static(b"b"), Condition::Absent)
            .await
            .unwrap();
        let mut new = Cursor::open(
            OwnedStore::new(store.clone(), Some(guard(v2))),
            &topic,
            &sub,
            "Exclusive",
            None,
        )
        .await
        .unwrap();
        assert_eq!(new.sub_type(), "Shared", "the stored type wins");
        assert_eq!(new.state, c.state);
        // The old owner, not knowing yet, acks more: its write is refused.
        c.ack(p(1, 1), &l);
        assert!(matches!(c.persist().await, Err(BrokerError::Fenced(..))));
        // The new owner persists as usual …
        new.ack(p(1, 2), &l);
        new.persist().await.unwrap();
        // … also after one of its writes committed without an answer (the version moved).
        let key = keys::cursor(&topic.path(), sub.as_str());
        let stored = store.get(&key).await.unwrap().unwrap();
        store.put(&key, stored.value, Condition::Any).await.unwrap();
        new.ack(p(1, 3), &l);
        new.persist().await.unwrap();
        let reopened = Cursor::open(
            OwnedStore::new(store.clone(), Some(guard(v2))),
            &topic,
            &sub,
            "Shared",
            None,
        )
        .await
        .unwrap();
        assert_eq!(reopened.state, new.state);
        assert!(reopened.state.is_acked(p(1, 3)) && !reopened.state.is_acked(p(1, 1)));
        // Deleted (unsubscribed): persisting says so instead of re-creating it.
        store.delete(&key, Condition::Any).await.unwrap();
        new.ack(p(3, 0), &l);
        assert!(matches!(new.persist().await, Err(BrokerError::NotFound(_))));
    }
}
