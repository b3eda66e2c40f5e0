//! The journal: the write-ahead log that makes an add durable before it is acknowledged.
//!
//! One writer thread owns the current journal file. Adds arrive over a bounded channel;
//! the thread takes everything that is waiting (up to `journal_max_group_bytes`), writes
//! it (direct I/O through an aligned buffer, see [`crate::direct`]), issues **one** `fdatasync`
//! for the group, and only then completes every add in it (group commit). While one group
//! syncs, the next one accumulates in the channel, so batching adapts to load without a
//! timer.
//!
//! Invariants:
//! - An add's completion fires only after the fdatasync covering its bytes returned Ok.
//! - An error from write or fdatasync **poisons** the journal: that group and every later
//!   add fail with an I/O error until the bookie restarts (the page cache state after a
//!   failed fsync is unknowable, so retrying could acknowledge lost data).
//! - [`JournalHandle::durable_mark`] only moves forward, and everything before it is on disk.
//!
//! Not here: replay and torn-tail handling ([`replay`]), deciding what to checkpoint
//! (the storage engine).

pub mod replay;

use crate::direct::DirectAppender;
use crate::error::{BookieError, Result};
use crate::format::{self, FileKind};
use bytes::Bytes;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

/// Record kind byte of an add.
pub const RECORD_ADD: u8 = 1;
/// Size of an add record's fixed fields: kind, ledger, entry, lac, checksum.
pub const ADD_FIXED_LEN: usize = 1 + 8 + 8 + 8 + 4;
/// How many add batches may wait for the writer thread before senders wait.
const QUEUE_DEPTH: usize = 8192;

/// A position in the journal: file id and byte offset within it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct JournalPos {
    pub file_id: u64,
    pub offset: u64,
}

/// One entry as journaled.
#[derive(Debug, Clone)]
pub struct JournalAdd {
    pub ledger: u64,
    pub entry: u64,
    /// `u64::MAX` when the writer sent no LAC.
    pub lac: u64,
    pub checksum: u32,
    pub payload: Bytes,
}

impl JournalAdd {
    pub fn encode_fixed(&self) -> [u8; ADD_FIXED_LEN] {
        let mut f = [0u8; ADD_FIXED_LEN];
        f[0] = RECORD_ADD;
        f[1..9].copy_from_slice(&self.ledger.to_le_bytes());
        f[9..17].copy_from_slice(&self.entry.to_le_bytes());
        f[17..25].copy_from_slice(&self.lac.to_le_bytes());
        f[25..29].copy_from_slice(&self.checksum.to_le_bytes());
        f
    }

    /// Decodes a checksummed record body; `body` is a slice of a shared buffer so the
    /// payload is not copied.
    pub fn decode(body: Bytes) -> Result<Self, String> {
        let mut f = format::Fields::new(&body);
        let kind = f.u8()?;
        if kind != RECORD_ADD {
            return Err(format!("unknown journal record kind {kind}"));
        }
        let ledger = f.u64()?;
        let entry = f.u64()?;
        let lac = f.u64()?;
        let checksum = f.u32()?;
        let payload = body.slice(f.position()..);
        Ok(Self {
            ledger,
            entry,
            lac,
            checksum,
            payload,
        })
    }

    fn record_len(&self) -> usize {
        format::RECORD_HEADER_LEN + ADD_FIXED_LEN + self.payload.len()
    }
}

/// The file name of journal file `id`; ids sort the same as names.
pub fn file_name(id: u64) -> String {
    format!("journal-{id:020}.log")
}

/// Lists journal files in `dir` as (id, path), sorted by id.
pub fn list_files(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    format::list_numbered(dir, "journal-")
}

struct Batch {
    adds: Vec<JournalAdd>,
    done: oneshot::Sender<Result<()>>,
}

enum Msg {
    Append(Batch),
    /// Stop after everything queued before it; answered once the thread stops writing.
    Stop(oneshot::Sender<()>),
}

/// The async side of the journal: submit adds, learn how far the journal is durable.
#[derive(Clone)]
pub struct JournalHandle {
    tx: mpsc::Sender<Msg>,
    poisoned: Arc<AtomicBool>,
    durable: Arc<Mutex<JournalPos>>,
}

impl JournalHandle {
    /// Appends the adds and waits until they are durable. Cancel-safe in the sense that a
    /// drop leaves the adds either queued or written; they are simply not acknowledged.
    pub async fn append(&self, adds: Vec<JournalAdd>) -> Result<()> {
        if self.is_poisoned() {
            return Err(poisoned_error());
        }
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Msg::Append(Batch { adds, done }))
            .await
            .map_err(|_| BookieError::ShuttingDown)?;
        rx.await.map_err(|_| BookieError::ShuttingDown)?
    }

    /// Stops the writer thread once everything queued so far is written.
    pub async fn stop(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Stop(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Everything before this position is durable on disk.
    pub fn durable_mark(&self) -> JournalPos {
        *self.durable.lock().expect("journal mark lock")
    }

    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }
}

fn poisoned_error() -> BookieError {
    BookieError::Io(
        "journal is poisoned by an earlier write or fsync failure; restart the bookie after checking its disk".into(),
    )
}

/// What the writer thread measures: each group commit's write-and-fdatasync time and its
/// bytes (`strata_bookie_journal_*` on `/metrics`).
pub struct JournalMetrics {
    pub sync_latency: strata_common::metrics::Histogram,
    pub bytes: std::sync::atomic::AtomicU64,
}

impl Default for JournalMetrics {
    fn default() -> Self {
        Self {
            sync_latency: strata_common::metrics::Histogram::new(strata_common::metrics::LATENCY_BOUNDS),
            bytes: Default::default(),
        }
    }
}

impl std::fmt::Debug for JournalMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournalMetrics").finish_non_exhaustive()
    }
}

impl JournalMetrics {
    pub fn write(&self, w: &mut strata_common::metrics::TextWriter) {
        w.histogram(
            "strata_bookie_journal_sync_latency_seconds",
            "Time to write one journal group commit and fdatasync it (adds wait for this).",
            &self.sync_latency,
        );
        w.counter(
            "strata_bookie_journal_bytes_total",
            "Bytes of records written to the journal.",
            self.bytes.load(Ordering::Relaxed),
        );
    }
}

/// Settings of the writer thread.
#[derive(Debug, Clone)]
pub struct JournalOptions {
    pub dir: PathBuf,
    pub sync: bool,
    pub max_file_bytes: u64,
    pub max_group_bytes: u64,
    pub metrics: Arc<JournalMetrics>,
}

/// Starts the writer thread on a new journal file `first_file_id`. The thread exits once
/// every [`JournalHandle`] is dropped and the queue is drained.
pub fn start(opts: JournalOptions, first_file_id: u64) -> Result<(JournalHandle, std::thread::JoinHandle<()>)> {
    let out = create_file(&opts.dir, first_file_id, opts.max_group_bytes as usize)?;
    let durable = Arc::new(Mutex::new(JournalPos {
        file_id: first_file_id,
        offset: format::FILE_HEADER_LEN as u64,
    }));
    let poisoned = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
    let mut writer = Writer {
        opts,
        out,
        file_id: first_file_id,
        durable: durable.clone(),
        poisoned: poisoned.clone(),
    };
    let thread = std::thread::Builder::new()
        .name("journal-writer".into())
        .spawn(move || writer.run(rx))
        .map_err(|e| BookieError::io("spawning the journal thread", e))?;
    Ok((JournalHandle { tx, poisoned, durable }, thread))
}

/// Creates journal file `id` with its header, durable (file and directory fsynced).
fn create_file(dir: &Path, id: u64, buffer: usize) -> Result<DirectAppender> {
    let path = dir.join(file_name(id));
    let mut out = DirectAppender::create(&path, buffer)
        .map_err(|e| BookieError::io(format!("creating journal file {}", path.display()), e))?;
    out.append(&[&format::encode_file_header(FileKind::Journal, id)])
        .and_then(|_| out.sync())
        .and_then(|_| File::open(dir)?.sync_all())
        .map_err(|e| BookieError::io(format!("initialising journal file {}", path.display()), e))?;
    Ok(out)
}

struct Writer {
    opts: JournalOptions,
    out: DirectAppender,
    file_id: u64,
    durable: Arc<Mutex<JournalPos>>,
    poisoned: Arc<AtomicBool>,
}

impl Writer {
    fn run(&mut self, mut rx: mpsc::Receiver<Msg>) {
        let mut group: Vec<Batch> = Vec::new();
        let mut stop: Option<oneshot::Sender<()>> = None;
        while stop.is_none() {
            let first = match rx.blocking_recv() {
                Some(Msg::Append(b)) => b,
                Some(Msg::Stop(s)) => {
                    stop = Some(s);
                    break;
                }
                None => break,
            };
            let mut bytes: usize = first.adds.iter().map(JournalAdd::record_len).sum();
            group.push(first);
            while (bytes as u64) < self.opts.max_group_bytes {
                match rx.try_recv() {
                    Ok(Msg::Append(b)) => {
                        bytes += b.adds.iter().map(JournalAdd::record_len).sum::<usize>();
                        group.push(b);
                    }
                    Ok(Msg::Stop(s)) => {
                        stop = Some(s);
                        break;
                    }
                    Err(_) => break,
                }
            }
            let result = if self.poisoned.load(Ordering::Acquire) {
                Err(poisoned_error())
            } else {
                self.commit(&group, bytes)
            };
            if let Err(e) = &result {
                tracing::error!(error = %e, file_id = self.file_id, "journal write failed; journal poisoned, no further adds will be acknowledged");
                self.poisoned.store(true, Ordering::Release);
            }
            for b in group.drain(..) {
                let _ = b.done.send(result.clone());
            }
        }
        rx.close();
        // Anything still queued after a stop is refused, never silently dropped.
        while let Ok(msg) = rx.try_recv() {
            match msg {
                Msg::Append(b) => {
                    let _ = b.done.send(Err(BookieError::ShuttingDown));
                }
                Msg::Stop(s) => {
                    let _ = s.send(());
                }
            }
        }
        if let Some(s) = stop {
            let _ = s.send(());
        }
        tracing::debug!("journal writer stopped");
    }

    /// Writes one group and syncs it; on success advances the durable mark.
    fn commit(&mut self, group: &[Batch], bytes: usize) -> Result<()> {
        let header = format::FILE_HEADER_LEN as u64;
        if self.out.position() + bytes as u64 > self.opts.max_file_bytes && self.out.position() > header {
            self.roll()?;
        }
        // Records are staged in an aligned buffer and written with direct I/O (see
        // `direct`): one copy in user space instead of a page-cache copy in the kernel.
        for add in group.iter().flat_map(|b| b.adds.iter()) {
            let fixed = add.encode_fixed();
            let frame = format::encode_record_frame(FileKind::Journal, &fixed, &add.payload);
            self.out
                .append(&[&frame, &fixed, &add.payload])
                .map_err(|e| BookieError::io(format!("writing journal file {}", self.file_id), e))?;
        }
        let started = std::time::Instant::now();
        let written = if self.opts.sync {
            self.out.sync()
        } else {
            self.out.write_out()
        };
        written.map_err(|e| BookieError::io(format!("writing and fdatasync of journal file {}", self.file_id), e))?;
        self.opts.metrics.sync_latency.observe(started.elapsed());
        self.opts.metrics.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        *self.durable.lock().expect("journal mark lock") = JournalPos {
            file_id: self.file_id,
            offset: self.out.position(),
        };
        Ok(())
    }

    fn roll(&mut self) -> Result<()> {
        let next = self.file_id + 1;
        self.out = create_file(&self.opts.dir, next, self.opts.max_group_bytes as usize)?;
        self.file_id = next;
        *self.durable.lock().expect("journal mark lock") = JournalPos {
            file_id: next,
            offset: self.out.position(),
        };
        tracing::debug!(file_id = next, "rolled to a new journal file");
        Ok(())
    }
}
