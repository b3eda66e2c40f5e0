//! The broker's counters, its Prometheus page and the message rates in its load report.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use strata_common::metrics::{Histogram, LATENCY_BOUNDS, TextWriter};

/// Counters updated on the publish and dispatch paths (relaxed atomics).
pub struct BrokerMetrics {
    pub msgs_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub msgs_out: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Batches answered as duplicates (not stored again).
    pub duplicates: AtomicU64,
    pub publish_errors: AtomicU64,
    pub lookups: AtomicU64,
    /// From receiving a batch to its receipt.
    pub publish_latency: Histogram,
    last: Mutex<(Instant, [u64; 4], Rates)>,
}

/// The stages of the consume path, timed on `/metrics` as
/// `strata_broker_consume_seconds_total{stage}`: where a catch-up read spends its time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumeStage {
    /// Reading entries for subscriptions: bookie reads (or cache) and decoding.
    Read,
    /// Choosing consumers for messages (the subscription's dispatcher, under its lock).
    Dispatch,
    /// Building responses (the per-message or the entry form).
    Encode,
    /// Waiting to hand a response to the consumer's stream (a slow consumer, or the
    /// network, shows here).
    Send,
    /// Applying acknowledgements (dispatcher and cursor).
    Ack,
}

/// Time spent in each [`ConsumeStage`], nanoseconds. Process-wide (a process runs one
/// broker; in tests running several, their times add up).
static CONSUME_NS: [AtomicU64; ConsumeStage::ALL.len()] = [const { AtomicU64::new(0) }; ConsumeStage::ALL.len()];

impl ConsumeStage {
    /// Adds the time since `since` to this stage.
    pub fn time(self, since: Instant) {
        CONSUME_NS[self as usize].fetch_add(since.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }

    pub const ALL: [ConsumeStage; 5] = [
        ConsumeStage::Read,
        ConsumeStage::Dispatch,
        ConsumeStage::Encode,
        ConsumeStage::Send,
        ConsumeStage::Ack,
    ];

    fn name(self) -> &'static str {
        match self {
            ConsumeStage::Read => "read",
            ConsumeStage::Dispatch => "dispatch",
            ConsumeStage::Encode => "encode",
            ConsumeStage::Send => "send",
            ConsumeStage::Ack => "ack",
        }
    }
}

/// One topic's messages and bytes in (stored) and out (delivered) since it was loaded on
/// this broker; on `/metrics` as `strata_topic_*_total{topic}` (counters restart when the
/// topic moves, which Prometheus' `rate` handles).
#[derive(Debug, Default)]
pub struct TopicCounters {
    pub msgs_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub msgs_out: AtomicU64,
    pub bytes_out: AtomicU64,
}

/// Messages and bytes per second, in and out.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rates {
    pub msg_in: f64,
    pub msg_out: f64,
    pub bytes_in: f64,
    pub bytes_out: f64,
}

impl Default for BrokerMetrics {
    fn default() -> Self {
        Self {
            msgs_in: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            msgs_out: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            publish_errors: AtomicU64::new(0),
            lookups: AtomicU64::new(0),
            publish_latency: Histogram::new(LATENCY_BOUNDS),
            last: Mutex::new((Instant::now(), [0; 4], Rates::default())),
        }
    }
}

impl BrokerMetrics {
    fn totals(&self) -> [u64; 4] {
        [
            self.msgs_in.load(Ordering::Relaxed),
            self.msgs_out.load(Ordering::Relaxed),
            self.bytes_in.load(Ordering::Relaxed),
            self.bytes_out.load(Ordering::Relaxed),
        ]
    }

    /// Rates over the time since the previous sample (at least a second apart).
    pub fn rates(&self) -> Rates {
        let mut last = self.last.lock().expect("rates");
        let elapsed = last.0.elapsed();
        if elapsed < Duration::from_secs(1) {
            return last.2;
        }
        let now = self.totals();
        let per_sec = |i: usize| (now[i] - last.1[i]) as f64 / elapsed.as_secs_f64();
        let r = Rates {
            msg_in: per_sec(0),
            msg_out: per_sec(1),
            bytes_in: per_sec(2),
            bytes_out: per_sec(3),
        };
        *last = (Instant::now(), now, r);
        r
    }

    /// Appends the broker's counters to a Prometheus page.
    pub fn write(&self, w: &mut TextWriter) {
        let [mi, mo, bi, bo] = self.totals();
        w.counter("strata_broker_messages_in_total", "Messages stored.", mi);
        w.counter(
            "strata_broker_messages_out_total",
            "Messages delivered to consumers.",
            mo,
        );
        w.counter("strata_broker_bytes_in_total", "Payload bytes stored.", bi);
        w.counter("strata_broker_bytes_out_total", "Payload bytes delivered.", bo);
        w.counter(
            "strata_broker_duplicate_batches_total",
            "Resent batches answered without storing them again.",
            self.duplicates.load(Ordering::Relaxed),
        );
        w.counter(
            "strata_broker_publish_errors_total",
            "Batches answered with an error.",
            self.publish_errors.load(Ordering::Relaxed),
        );
        w.counter(
            "strata_broker_lookups_total",
            "Topic lookups answered.",
            self.lookups.load(Ordering::Relaxed),
        );
        w.family(
            "strata_broker_consume_seconds_total",
            "Time spent in each stage of delivering messages (summed over tasks).",
            "counter",
        );
        for stage in ConsumeStage::ALL {
            let ns = CONSUME_NS[stage as usize].load(Ordering::Relaxed);
            w.sample(
                "strata_broker_consume_seconds_total",
                &[("stage", stage.name())],
                ns as f64 / 1e9,
            );
        }
        w.histogram(
            "strata_broker_publish_latency_seconds",
            "Time from receiving a batch to sending its receipt.",
            &self.publish_latency,
        );
    }
}
