//! The ledger writer: one task (an actor) owns the ledger's write state; appends, bookie
//! acknowledgements and failures arrive as messages, so no lock is shared with the network.
//!
//! - Entries get consecutive ids and go to their write set on one add stream per bookie,
//!   each carrying the current LAC (piggybacked).
//! - An entry completes once Qa bookies of its *current* write set acknowledged it and every
//!   earlier entry completed; the LAC is the last completed entry.
//! - A bookie that fails (stream error, error reply other than FENCED, or no answer within
//!   `add_timeout`) is replaced: a new fragment starting at LAC+1 names a replacement, the
//!   metadata is updated by compare-and-set, and every pending entry whose write set now
//!   includes the replacement is sent to it. Appends do not see the failure.
//! - FENCED from any bookie, or a compare-and-set that finds the ledger no longer Open,
//!   means a recovery took the ledger over: every pending and later append fails with
//!   `Fenced`.
//! - An error reply no other bookie would answer differently (TOO_LARGE, INVALID_ARGUMENT,
//!   BAD_CHECKSUM, UNAUTHORIZED: the entry or the writer is at fault, not the bookie) is
//!   not a bookie failure: replacing the bookie or resending would be refused the same
//!   way, forever, and every later entry would wait behind it. The writer stops instead:
//!   that append fails with the bookie's error, every other pending or later one fails
//!   too (entries complete in order, so none after it may), and the ledger stays Open for
//!   a recovery to close where its confirmed entries end. Appends larger than
//!   `max_entry_bytes` are refused before they get an entry id, so they never get here.
//! - A failed bookie with no replacement is reconnected and resent to at most every
//!   `UNREPLACED_RETRY`, never in a loop driven by its own error replies.

use super::LedgerClient;
use super::metadata::{Fragment, LedgerMetadata, LedgerState};
use crate::client::{AddSender, NewEntry};
use crate::error::{BookieError, Result};
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use strata_common::{EntryId, ErrorCode, LedgerId};
use strata_meta::{Condition, MetaError, keys};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};

enum Cmd {
    Append {
        payload: Bytes,
        done: oneshot::Sender<Result<u64>>,
        permit: OwnedSemaphorePermit,
    },
    Close {
        done: oneshot::Sender<Result<Option<u64>>>,
    },
}

enum Event {
    Ack {
        bookie: String,
        entry: u64,
        error: Option<(ErrorCode, String)>,
    },
    StreamFailed {
        bookie: String,
        /// Which stream to that bookie failed (an old one must not tear down its successor).
        generation: u64,
        error: String,
    },
}

/// How often a failed bookie without a replacement is reconnected.
const UNREPLACED_RETRY: Duration = Duration::from_secs(2);
/// How long a failed bookie is not chosen again as a replacement.
const FAILED_BOOKIE_QUARANTINE: Duration = Duration::from_secs(60);

/// Error replies that blame the entry or the writer, not the bookie (see the module doc).
fn is_entry_fault(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::TooLarge | ErrorCode::InvalidArgument | ErrorCode::BadChecksum | ErrorCode::Unauthorized
    )
}

/// Writes one ledger. Cheap to clone; appends from clones are ordered by arrival.
#[derive(Clone)]
pub struct LedgerWriter {
    id: LedgerId,
    tx: mpsc::Sender<Cmd>,
    permits: Arc<Semaphore>,
    lac: watch::Receiver<Option<u64>>,
    /// The metadata as of the last ensemble change, for reads through the writer.
    md: watch::Receiver<LedgerMetadata>,
    client: LedgerClient,
}

impl LedgerWriter {
    pub(super) fn start(client: LedgerClient, id: LedgerId, md: LedgerMetadata, version: u64) -> Self {
        let (tx, rx) = mpsc::channel(1024);
        // Acks are bounded by pending entries × Qw (pending entries are bounded by
        // `max_pending_entries`), so this channel cannot grow without limit.
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let (lac_tx, lac) = watch::channel(None);
        let (md_tx, md_rx) = watch::channel(md.clone());
        let permits = Arc::new(Semaphore::new(client.cfg.max_pending_entries));
        let handle_client = client.clone();
        let actor = Actor {
            md_tx,
            token: md.token_bytes(),
            client,
            id,
            md,
            version,
            next_entry: 0,
            lac: None,
            lac_tx,
            pending: BTreeMap::new(),
            streams: HashMap::new(),
            next_generation: 0,
            unreplaced: HashSet::new(),
            quarantine: HashMap::new(),
            fatal: None,
            closing: None,
            bytes: 0,
            ev_tx,
        };
        tokio::spawn(actor.run(rx, ev_rx));
        Self {
            id,
            tx,
            permits,
            lac,
            md: md_rx,
            client: handle_client,
        }
    }

    /// Reads confirmed entries (`last` at most the LAC) of the ledger being written, from
    /// its bookies. The writer knows its own LAC, so it reads one entry further than a
    /// separate reader (which learns the LAC from the next add).
    pub async fn read(&self, first: u64, last: u64) -> Result<Vec<crate::client::Entry>> {
        let md = self.md.borrow().clone();
        super::reader::LedgerReader::with_limit(self.client.clone(), self.id, md, self.lac())
            .read(first, last)
            .await
    }

    /// Resolves once the LAC passes `previous` (or right away if it already has).
    pub async fn wait_for_lac(&self, previous: Option<u64>) -> Option<u64> {
        let mut rx = self.lac.clone();
        let _ = rx.wait_for(|l| *l > previous).await;
        *rx.borrow()
    }

    pub fn id(&self) -> LedgerId {
        self.id
    }

    /// The last entry confirmed (written to an ack quorum, with all before it).
    pub fn lac(&self) -> Option<u64> {
        *self.lac.borrow()
    }

    /// Queues an append and returns a future of its entry id, resolved once the entry is
    /// on an ack quorum. Waits only when `max_pending_entries` are outstanding.
    pub async fn submit(&self, payload: Bytes) -> Result<impl std::future::Future<Output = Result<u64>> + use<>> {
        let limit = self.client.cfg.max_entry_bytes;
        if payload.len() as u64 > limit {
            return Err(BookieError::TooLarge {
                what: "entry",
                size: payload.len(),
                limit: limit as usize,
            });
        }
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| BookieError::LedgerClosed(self.id.get()))?;
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Append { payload, done, permit })
            .await
            .map_err(|_| BookieError::LedgerClosed(self.id.get()))?;
        let id = self.id.get();
        Ok(async move { rx.await.map_err(|_| BookieError::LedgerClosed(id))? })
    }

    /// Appends and waits until the entry is on an ack quorum; returns its entry id.
    pub async fn append(&self, payload: Bytes) -> Result<u64> {
        self.submit(payload).await?.await
    }

    /// Waits for pending appends, then closes the ledger (metadata state Closed with its
    /// last entry). Returns the last entry.
    pub async fn close(&self) -> Result<Option<u64>> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Close { done })
            .await
            .map_err(|_| BookieError::LedgerClosed(self.id.get()))?;
        rx.await.map_err(|_| BookieError::LedgerClosed(self.id.get()))?
    }
}

struct Pending {
    payload: Bytes,
    acked: Vec<String>,
    done: Option<oneshot::Sender<Result<u64>>>,
    sent_at: Instant,
    _permit: OwnedSemaphorePermit,
}

struct Actor {
    md_tx: watch::Sender<LedgerMetadata>,
    client: LedgerClient,
    id: LedgerId,
    md: LedgerMetadata,
    version: u64,
    token: Bytes,
    next_entry: u64,
    lac: Option<u64>,
    lac_tx: watch::Sender<Option<u64>>,
    pending: BTreeMap<u64, Pending>,
    /// One add stream per bookie, with its generation.
    streams: HashMap<String, (AddSender, u64)>,
    next_generation: u64,
    /// Failed bookies no replacement could be found for yet (retried every tick).
    unreplaced: HashSet<String>,
    /// Bookies that failed recently, not to be chosen as replacements.
    quarantine: HashMap<String, Instant>,
    fatal: Option<BookieError>,
    closing: Option<oneshot::Sender<Result<Option<u64>>>>,
    bytes: u64,
    ev_tx: mpsc::UnboundedSender<Event>,
}

impl Actor {
    async fn run(mut self, mut cmds: mpsc::Receiver<Cmd>, mut events: mpsc::UnboundedReceiver<Event>) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let mut cmds_open = true;
        loop {
            tokio::select! {
                biased;
                Some(ev) = events.recv() => {
                    self.on_event(ev).await;
                    while let Ok(ev) = events.try_recv() {
                        self.on_event(ev).await;
                    }
                    self.complete();
                }
                cmd = cmds.recv(), if cmds_open && self.closing.is_none() => match cmd {
                    Some(first) => {
                        let mut appends = Vec::new();
                        let mut next = Some(first);
                        while let Some(cmd) = next.take() {
                            match cmd {
                                Cmd::Append { payload, done, permit } => appends.push((payload, done, permit)),
                                Cmd::Close { done } => {
                                    self.closing = Some(done);
                                    break;
                                }
                            }
                            if appends.len() >= 256 {
                                break;
                            }
                            next = cmds.try_recv().ok();
                        }
                        if !appends.is_empty() {
                            self.append(appends).await;
                        }
                        self.complete();
                    }
                    None => cmds_open = false,
                },
                _ = tick.tick() => {
                    self.check_timeouts().await;
                    self.complete();
                }
            }
            if self.closing.is_some() && (self.pending.is_empty() || self.fatal.is_some()) {
                let done = self.closing.take().expect("closing");
                let _ = done.send(self.finish_close().await);
                return;
            }
            if !cmds_open && self.pending.is_empty() {
                // Every handle is gone (the writer crashed or was dropped): stop without
                // closing; a later recovery closes the ledger.
                return;
            }
        }
    }

    async fn append(&mut self, appends: Vec<(Bytes, oneshot::Sender<Result<u64>>, OwnedSemaphorePermit)>) {
        let mut sends: HashMap<String, Vec<u64>> = HashMap::new();
        for (payload, done, permit) in appends {
            if let Some(e) = &self.fatal {
                let _ = done.send(Err(e.clone()));
                continue;
            }
            let entry = self.next_entry;
            self.next_entry += 1;
            self.bytes += payload.len() as u64;
            for b in self.md.write_set(entry) {
                sends.entry(b).or_default().push(entry);
            }
            self.pending.insert(
                entry,
                Pending {
                    payload,
                    acked: Vec::new(),
                    done: Some(done),
                    sent_at: Instant::now(),
                    _permit: permit,
                },
            );
        }
        for (bookie, entries) in sends {
            self.send(&bookie, &entries).await;
        }
    }

    /// Sends `entries` to `bookie`, opening its stream if needed; a failure triggers an
    /// ensemble change.
    async fn send(&mut self, bookie: &str, entries: &[u64]) {
        if let Err(e) = self.try_send(bookie, entries).await {
            self.bookie_failed(bookie, &e.to_string()).await;
        }
    }

    /// Sends without reacting to failure. Never blocks on a slow bookie: a full stream
    /// buffer is an error, so the actor keeps serving acks and ticks.
    async fn try_send(&mut self, bookie: &str, entries: &[u64]) -> Result<()> {
        if !self.streams.contains_key(bookie) {
            let s = self.open_stream(bookie).await?;
            self.streams.insert(bookie.to_string(), s);
        }
        let batch: Vec<NewEntry> = entries
            .iter()
            .filter_map(|e| {
                self.pending.get(e).map(|p| NewEntry {
                    ledger: self.id,
                    entry: EntryId::new(*e),
                    payload: p.payload.clone(),
                    lac: self.lac,
                })
            })
            .collect();
        if batch.is_empty() {
            return Ok(());
        }
        let (stream, _) = self.streams.get(bookie).expect("stream just opened");
        stream.try_send(batch)
    }

    async fn open_stream(&mut self, bookie: &str) -> Result<(AddSender, u64)> {
        let timeout = self.client.cfg.add_timeout;
        let opened = tokio::time::timeout(timeout, async {
            let (client, slot) = self.client.pool.get_for_stream(bookie).await?;
            Ok::<_, BookieError>((client.add_stream(self.token.clone(), 1024).await?, slot))
        })
        .await
        .map_err(|_| BookieError::Transport(format!("no add stream to {bookie} within {timeout:?}")))?;
        let ((tx, mut rx), slot) = opened?;
        self.next_generation += 1;
        let generation = self.next_generation;
        let events = self.ev_tx.clone();
        let name = bookie.to_string();
        tokio::spawn(async move {
            // The stream counts against its connection until it ends.
            let _slot = slot;
            loop {
                match rx.next().await {
                    Ok(Some(outcomes)) => {
                        for o in outcomes {
                            let _ = events.send(Event::Ack {
                                bookie: name.clone(),
                                entry: o.entry,
                                error: o.error,
                            });
                        }
                    }
                    Ok(None) => {
                        let _ = events.send(Event::StreamFailed {
                            bookie: name,
                            generation,
                            error: "stream closed by the bookie".into(),
                        });
                        return;
                    }
                    Err(e) => {
                        let _ = events.send(Event::StreamFailed {
                            bookie: name,
                            generation,
                            error: e.to_string(),
                        });
                        return;
                    }
                }
            }
        });
        Ok((tx, generation))
    }

    async fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Ack {
                bookie,
                entry,
                error: None,
            } => {
                if let Some(p) = self.pending.get_mut(&entry)
                    && self.md.write_set(entry).contains(&bookie)
                    && !p.acked.contains(&bookie)
                {
                    p.acked.push(bookie);
                }
            }
            Event::Ack {
                error: Some((ErrorCode::Fenced, msg)),
                ..
            } => {
                tracing::warn!(ledger = %self.id, %msg, "ledger fenced by a recovery; this writer stops");
                self.fail_all(BookieError::Fenced(self.id.get()));
            }
            Event::Ack {
                bookie,
                entry,
                error: Some((code, msg)),
            } if is_entry_fault(code) => {
                if !self.pending.contains_key(&entry) {
                    return; // already completed or failed
                }
                tracing::error!(ledger = %self.id, %bookie, entry, %code, %msg,
                    "bookie refused an add for a reason no other bookie would answer differently; this writer stops");
                let refused = BookieError::Remote {
                    code,
                    message: format!("bookie {bookie} refused entry {entry} of ledger {}: {msg}", self.id),
                };
                self.fail_entry_and_stop(entry, refused);
            }
            Event::Ack {
                bookie,
                entry,
                error: Some((code, msg)),
            } => {
                tracing::warn!(ledger = %self.id, %bookie, entry, %code, %msg, "bookie rejected an add; replacing it");
                self.bookie_failed(&bookie, &msg).await;
            }
            Event::StreamFailed {
                bookie,
                generation,
                error,
            } => {
                if self.streams.get(&bookie).is_some_and(|(_, g)| *g == generation) {
                    self.bookie_failed(&bookie, &error).await;
                }
            }
        }
    }

    /// Completes entries in order while the first pending one has an ack quorum.
    fn complete(&mut self) {
        let qa = self.md.ack_quorum as usize;
        let mut completed = Vec::new();
        while let Some(mut first) = self.pending.first_entry() {
            if first.get().acked.len() < qa {
                break;
            }
            let entry = *first.key();
            completed.push((first.get_mut().done.take(), entry));
            first.remove();
            self.lac = Some(entry);
        }
        if completed.is_empty() {
            return;
        }
        // The LAC first: whoever learns that an append completed may read it at once
        // (through `lac()`), so the LAC must already cover it.
        self.lac_tx.send_replace(self.lac);
        for (done, entry) in completed {
            if let Some(done) = done {
                let _ = done.send(Ok(entry));
            }
        }
    }

    /// Fails `entry` with `e` and stops the writer: every other pending and later append
    /// fails with [`BookieError::LedgerStopped`].
    fn fail_entry_and_stop(&mut self, entry: u64, e: BookieError) {
        if let Some(done) = self.pending.get_mut(&entry).and_then(|p| p.done.take()) {
            let _ = done.send(Err(e.clone()));
        }
        self.fail_all(BookieError::LedgerStopped(self.id.get(), e.to_string()));
    }

    fn fail_all(&mut self, e: BookieError) {
        for (_, mut p) in std::mem::take(&mut self.pending) {
            if let Some(done) = p.done.take() {
                let _ = done.send(Err(e.clone()));
            }
        }
        self.fatal = Some(e);
        self.streams.clear();
    }

    /// Suspects every bookie that has not acknowledged an entry sent to it more than
    /// `add_timeout` ago (not only for the oldest entry: a slow bookie behind a quorum of
    /// fast ones must be noticed too), and retries unreplaced bookies.
    async fn check_timeouts(&mut self) {
        let timeout = self.client.cfg.add_timeout;
        // Unreplaced bookies are retried at most every UNREPLACED_RETRY (a reconnect to a
        // partitioned host can take seconds, during which the actor serves nothing else).
        let mut suspects: Vec<String> = self
            .unreplaced
            .iter()
            .filter(|b| self.quarantine.get(*b).is_none_or(|t| t.elapsed() >= UNREPLACED_RETRY))
            .cloned()
            .collect();
        for (&entry, p) in &self.pending {
            if p.sent_at.elapsed() < timeout {
                continue;
            }
            for b in self.md.write_set(entry) {
                if !p.acked.contains(&b) && !suspects.contains(&b) {
                    suspects.push(b);
                }
            }
        }
        self.quarantine.retain(|_, t| t.elapsed() < FAILED_BOOKIE_QUARANTINE);
        for b in suspects {
            self.bookie_failed(&b, "no answer within add_timeout").await;
        }
    }

    /// Replaces `bookie` in the current ensemble (ensemble change).
    async fn bookie_failed(&mut self, bookie: &str, why: &str) {
        if self.fatal.is_some() {
            return;
        }
        self.streams.remove(bookie);
        self.client.pool.evict(bookie);
        let Some(index) = self.md.last_fragment().bookies.iter().position(|b| b == bookie) else {
            return; // already replaced
        };
        // Already failed without a replacement moments ago: the tick retries it after
        // UNREPLACED_RETRY (resending now would let its error replies drive a loop).
        if self.unreplaced.contains(bookie)
            && self
                .quarantine
                .get(bookie)
                .is_some_and(|t| t.elapsed() < UNREPLACED_RETRY)
        {
            return;
        }
        self.quarantine.insert(bookie.to_string(), Instant::now());
        let exclude: Vec<String> = self
            .md
            .last_fragment()
            .bookies
            .iter()
            .cloned()
            .chain(self.unreplaced.iter().cloned())
            .chain(self.quarantine.keys().cloned())
            .collect();
        let replacement = match self.client.choose_bookies(1, &exclude).await {
            Ok(mut v) => v.remove(0),
            Err(e) => {
                // No spare bookie: keep the ensemble, reconnect to this bookie and resend
                // what it has not acknowledged (it may have restarted). Retried every tick.
                self.unreplaced.insert(bookie.to_string());
                let resend: Vec<u64> = self
                    .pending
                    .iter()
                    .filter(|(e, p)| {
                        !p.acked.iter().any(|b| b == bookie) && self.md.write_set(**e).iter().any(|b| b == bookie)
                    })
                    .map(|(e, _)| *e)
                    .collect();
                match self.try_send(bookie, &resend).await {
                    Ok(()) => {
                        self.unreplaced.remove(bookie);
                        tracing::info!(ledger = %self.id, %bookie, resent = resend.len(), "no replacement bookie; reconnected to the same one");
                    }
                    Err(send_err) => {
                        self.streams.remove(bookie);
                        tracing::warn!(ledger = %self.id, %bookie, error = %e, reconnect = %send_err, "no replacement bookie yet; writing to the rest of the ensemble");
                    }
                }
                for e in &resend {
                    if let Some(p) = self.pending.get_mut(e) {
                        p.sent_at = Instant::now();
                    }
                }
                return;
            }
        };
        let first = self.lac.map_or(0, |l| l + 1);
        let mut md = self.md.clone();
        let last = md.fragments.last_mut().expect("fragment");
        if last.first_entry == first {
            last.bookies[index] = replacement.clone();
        } else {
            let mut bookies = last.bookies.clone();
            bookies[index] = replacement.clone();
            md.fragments.push(Fragment {
                first_entry: first,
                bookies,
            });
        }
        match self.store_metadata(md).await {
            Ok(()) => {}
            Err(e) => {
                self.fail_all(e);
                return;
            }
        }
        self.unreplaced.remove(bookie);
        tracing::info!(ledger = %self.id, failed = %bookie, %replacement, from_entry = first, %why, "ensemble changed");
        // Acks from the replaced bookie no longer count; resend what the replacement holds.
        let mut resend = Vec::new();
        for (&e, p) in self.pending.iter_mut() {
            p.acked.retain(|b| b != bookie);
            if e >= first && self.md.write_set(e).contains(&replacement) {
                p.sent_at = Instant::now();
                resend.push(e);
            }
        }
        if !resend.is_empty()
            && let Err(e) = self.try_send(&replacement, &resend).await
        {
            // Not recursing here: the tick retries via the timeout of these entries.
            tracing::warn!(ledger = %self.id, %replacement, error = %e, "replacement bookie failed at once; it will be replaced on timeout");
            self.streams.remove(&replacement);
        }
    }

    /// Compare-and-set of the metadata; a ledger that is no longer Open was taken over.
    ///
    /// Another party may change an Open ledger's metadata: auto-recovery replaces a lost
    /// or decommissioned bookie in fragments *before* the writer's current one (never in
    /// it). On a version conflict those fragments are taken from the stored metadata and
    /// the writer's own change (its current fragment, a new fragment, the close) is
    /// applied on top, so neither change undoes the other.
    async fn store_metadata(&mut self, mut md: LedgerMetadata) -> Result<()> {
        let key = keys::ledger(self.id.get());
        loop {
            match self
                .client
                .store
                .put(&key, md.encode(), Condition::Version(self.version))
                .await
            {
                Ok(v) => {
                    self.version = v;
                    self.md_tx.send_replace(md.clone());
                    self.md = md;
                    return Ok(());
                }
                Err(MetaError::BadVersion(_)) => {
                    let (current, version) = self.client.metadata(self.id).await?;
                    if current.state != LedgerState::Open {
                        return Err(BookieError::Fenced(self.id.get()));
                    }
                    let writer_fragments = self.md.fragments.len();
                    rebase_settled_fragments(&mut md, &current, writer_fragments);
                    rebase_settled_fragments(&mut self.md, &current, writer_fragments);
                    self.version = version;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn finish_close(&mut self) -> Result<Option<u64>> {
        if let Some(e) = &self.fatal {
            return Err(e.clone());
        }
        let mut md = self.md.clone();
        md.state = LedgerState::Closed;
        md.last_entry = self.lac;
        md.length = self.bytes;
        let result = self.store_metadata(md).await;
        self.streams.clear();
        result.map(|_| self.lac)
    }
}

/// Copies into `md` the bookies of the fragments the writer no longer writes to (the
/// first `writer_fragments - 1`), from `stored`, where both name a fragment starting at the
/// same entry. The writer's current (last) fragment is its own and is never taken.
fn rebase_settled_fragments(md: &mut LedgerMetadata, stored: &LedgerMetadata, writer_fragments: usize) {
    let settled = writer_fragments.saturating_sub(1);
    for (mine, theirs) in md.fragments.iter_mut().zip(&stored.fragments).take(settled) {
        if mine.first_entry == theirs.first_entry && mine.bookies.len() == theirs.bookies.len() {
            mine.bookies.clone_from(&theirs.bookies);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(fragments: &[(u64, [&str; 3])]) -> LedgerMetadata {
        LedgerMetadata {
            format: 1,
            ensemble_size: 3,
            write_quorum: 3,
            ack_quorum: 2,
            state: LedgerState::Open,
            last_entry: None,
            length: 0,
            fragments: fragments
                .iter()
                .map(|(first, b)| Fragment {
                    first_entry: *first,
                    bookies: b.iter().map(|s| s.to_string()).collect(),
                })
                .collect(),
            token: "00".into(),
            created_ms: 0,
            custom: Default::default(),
        }
    }

    #[test]
    fn a_writers_metadata_write_keeps_re_replicated_fragments_and_its_own() {
        // Stored: auto-recovery replaced `a` by `x` in the first fragment.
        let stored = md(&[(0, ["x", "b", "c"]), (10, ["d", "b", "c"])]);
        // The writer (two fragments known) adds a third fragment after replacing `b`.
        let mut mine = md(&[(0, ["a", "b", "c"]), (10, ["d", "b", "c"]), (20, ["d", "e", "c"])]);
        rebase_settled_fragments(&mut mine, &stored, 2);
        assert_eq!(mine.fragments[0].bookies, ["x", "b", "c"], "the re-replication stays");
        assert_eq!(
            mine.fragments[1].bookies,
            ["d", "b", "c"],
            "the writer's fragment is its own"
        );
        assert_eq!(mine.fragments[2].bookies, ["d", "e", "c"]);
        // An edit in place of the writer's current fragment is never overwritten.
        let mut mine = md(&[(0, ["a", "b", "c"]), (10, ["d", "e", "c"])]);
        rebase_settled_fragments(&mut mine, &stored, 2);
        assert_eq!(mine.fragments[1].bookies, ["d", "e", "c"]);
        // A fragment starting elsewhere is not taken.
        let other = md(&[(5, ["y", "b", "c"]), (10, ["d", "b", "c"])]);
        let mut mine = md(&[(0, ["a", "b", "c"]), (10, ["d", "b", "c"])]);
        rebase_settled_fragments(&mut mine, &other, 2);
        assert_eq!(mine.fragments[0].bookies, ["a", "b", "c"]);
    }
}
