//! Reading a ledger: never past the LAC of an open ledger (nor past the last entry of a
//! closed one), each entry from its write set, trying the next replica when one fails.
//! Tailing readers wait for the LAC to advance with a long-poll on the bookies, not a loop.

use super::LedgerClient;
use super::metadata::{LedgerMetadata, LedgerState};
use crate::client::Entry;
use crate::error::{BookieError, Result};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use std::time::Duration;
use strata_common::LedgerId;

/// A reader of one ledger.
pub struct LedgerReader {
    client: LedgerClient,
    id: LedgerId,
    md: LedgerMetadata,
    /// Highest entry that may be read: the LAC (open) or the last entry (closed).
    limit: Option<u64>,
}

impl LedgerReader {
    pub(super) async fn open(client: LedgerClient, id: LedgerId) -> Result<Self> {
        let (md, _) = client.metadata(id).await?;
        let mut r = Self {
            client,
            id,
            md,
            limit: None,
        };
        r.limit = r.current_limit(None, Duration::ZERO).await?;
        Ok(r)
    }

    /// A reader bounded by a limit the caller knows (the writer's own LAC).
    pub(super) fn with_limit(client: LedgerClient, id: LedgerId, md: LedgerMetadata, limit: Option<u64>) -> Self {
        Self { client, id, md, limit }
    }

    pub fn id(&self) -> LedgerId {
        self.id
    }

    pub fn metadata(&self) -> &LedgerMetadata {
        &self.md
    }

    pub fn is_closed(&self) -> bool {
        self.md.state == LedgerState::Closed
    }

    /// The last readable entry: the last entry of a closed ledger, the LAC of an open one.
    pub fn last_readable(&self) -> Option<u64> {
        self.limit
    }

    /// For a closed ledger its last entry; for an open one the highest LAC any bookie of
    /// the last fragment reports (each bookie's LAC is one the writer confirmed), waiting
    /// up to `wait` for it to pass `previous`.
    async fn current_limit(&self, previous: Option<u64>, wait: Duration) -> Result<Option<u64>> {
        if self.md.state == LedgerState::Closed {
            return Ok(self.md.last_entry);
        }
        let mut polls: FuturesUnordered<_> = self
            .md
            .last_fragment()
            .bookies
            .iter()
            .map(|b| {
                let (pool, id, b) = (self.client.pool.clone(), self.id, b.clone());
                async move {
                    let c = pool.get(&b).await?;
                    c.read_lac(id, previous, wait).await
                }
            })
            .collect();
        let mut best = previous;
        let mut answered = false;
        while let Some(r) = polls.next().await {
            match r {
                Ok(lac) => {
                    answered = true;
                    best = best.max(lac);
                    if wait > Duration::ZERO && best > previous {
                        break; // one bookie saw it advance: enough for a long-poll
                    }
                }
                // A bookie that never received an entry of this ledger knows no LAC.
                Err(e) if e.code() == strata_common::ErrorCode::NoSuchLedger => answered = true,
                Err(e) => tracing::debug!(ledger = %self.id, error = %e, "read_lac failed on one bookie"),
            }
        }
        if !answered {
            return Err(BookieError::Transport(format!(
                "no bookie of ledger {} answered for its LAC",
                self.id
            )));
        }
        Ok(best)
    }

    /// Waits up to `wait` for more entries to become readable; returns the new limit.
    /// Also notices when the ledger gets closed.
    pub async fn wait_for_more(&mut self, wait: Duration) -> Result<Option<u64>> {
        let before = self.limit;
        self.limit = self.current_limit(before, wait).await?;
        if self.limit == before && self.md.state != LedgerState::Closed {
            let (md, _) = self.client.metadata(self.id).await?;
            self.md = md;
            if self.md.state == LedgerState::Closed {
                self.limit = self.md.last_entry;
            }
        }
        Ok(self.limit)
    }

    /// Reads entries `first..=last`. Refuses anything past the readable limit.
    pub async fn read(&self, first: u64, last: u64) -> Result<Vec<Entry>> {
        if last < first {
            return Err(BookieError::InvalidArgument(format!(
                "last entry {last} is before first entry {first}"
            )));
        }
        match self.limit {
            Some(limit) if last <= limit => {}
            _ => {
                return Err(BookieError::InvalidArgument(format!(
                    "entries up to {last} requested from ledger {} but only up to {:?} are readable (LAC)",
                    self.id, self.limit
                )));
            }
        }
        let mut out = Vec::with_capacity((last - first + 1) as usize);
        let mut next = first;
        while next <= last {
            let got = self.read_from_replicas(next, last).await?;
            next += got.len() as u64;
            out.extend(got);
        }
        Ok(out)
    }

    /// Reads a run starting at `first` from one replica of `first`'s write set, trying the
    /// others in turn. Returns at least one entry.
    async fn read_from_replicas(&self, first: u64, last: u64) -> Result<Vec<Entry>> {
        let frag_end = self
            .md
            .fragments
            .iter()
            .find(|f| f.first_entry > first)
            .map_or(last, |f| (f.first_entry - 1).min(last));
        // With Qw == E every bookie of a fragment holds all of its entries, so one range
        // read serves the run; otherwise read one entry at a time.
        let run_end = if self.md.write_quorum == self.md.ensemble_size {
            frag_end
        } else {
            first
        };
        let mut last_err = None;
        for bookie in self.md.write_set(first) {
            let res = match self.client.pool.get(&bookie).await {
                Ok(c) => c.read(self.id, first, run_end).await,
                Err(e) => Err(e),
            };
            match res {
                Ok(entries) if !entries.is_empty() && entries[0].entry == first => return Ok(entries),
                Ok(_) => last_err = Some(BookieError::NoSuchEntry(self.id.get(), first)),
                Err(e) => {
                    tracing::debug!(ledger = %self.id, %bookie, entry = first, error = %e, "read failed; trying the next replica");
                    last_err = Some(e);
                }
            }
        }
        Err(last_err.unwrap_or(BookieError::NoSuchEntry(self.id.get(), first)))
    }
}
