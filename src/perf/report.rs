//! Latency recording and the result printed by every perf workload.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::time::Duration;

/// Random (incompressible) bytes: `size` plus 4 KiB, so each message can take a window at
/// a different offset without generating data per message.
pub fn random_pool(size: usize, seed: u64) -> bytes::Bytes {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(size + 4096 + 8);
    while v.len() < size + 4096 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    bytes::Bytes::from(v)
}

/// Per-message latencies in microseconds, 1 µs to 10 minutes, 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

#[derive(Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Latency {
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| (us as f64 / 1000.0 * 1000.0).round() / 1000.0;
        Self {
            p50: ms(h.value_at_quantile(0.50)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

/// The BENCHMARK.md output contract, plus workload-specific fields.
#[derive(Serialize)]
pub struct Summary {
    pub workload: &'static str,
    pub messages: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub msgs_per_sec: f64,
    pub mb_per_sec: f64,
    pub latency_ms: Latency,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Summary {
    pub fn new(workload: &'static str, messages: u64, bytes: u64, elapsed: Duration, h: &Histogram<u64>) -> Self {
        let seconds = elapsed.as_secs_f64();
        let round = |v: f64| (v * 10.0).round() / 10.0;
        Self {
            workload,
            messages,
            bytes,
            seconds: (seconds * 1000.0).round() / 1000.0,
            msgs_per_sec: round(messages as f64 / seconds),
            mb_per_sec: round(bytes as f64 / 1e6 / seconds),
            latency_ms: Latency::from_histogram(h),
            extra: serde_json::Map::new(),
        }
    }

    /// Prints for a person, or as the final JSON line.
    pub fn print(&self, json: bool) {
        if json {
            println!("{}", serde_json::to_string(self).expect("summary serialises"));
        } else {
            println!(
                "{}: {} messages, {:.1} MB in {:.2} s: {:.0} msgs/s, {:.1} MB/s; latency ms p50 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}",
                self.workload,
                self.messages,
                self.bytes as f64 / 1e6,
                self.seconds,
                self.msgs_per_sec,
                self.mb_per_sec,
                self.latency_ms.p50,
                self.latency_ms.p99,
                self.latency_ms.p999,
                self.latency_ms.max
            );
            let extra: Vec<String> = self.extra.iter().map(|(k, v)| format!("{k}={v}")).collect();
            if !extra.is_empty() {
                println!("  {}", extra.join(" "));
            }
        }
    }
}
