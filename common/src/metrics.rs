//! Prometheus text exposition (format 0.0.4), written by hand: a counter, a gauge and a
//! fixed-bucket histogram are all Strata needs, so no metrics crate is pulled in.
//!
//! Invariants: every family gets its `# HELP` and `# TYPE` line once, before its samples;
//! histogram buckets are cumulative and end with `+Inf` equal to the count.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Builds one exposition page.
#[derive(Default)]
pub struct TextWriter {
    out: String,
}

impl TextWriter {
    fn head(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.head(name, help, "counter");
        let _ = writeln!(self.out, "{name} {value}");
    }

    pub fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.head(name, help, "gauge");
        let _ = writeln!(self.out, "{name} {value}");
    }

    pub fn histogram(&mut self, name: &str, help: &str, h: &Histogram) {
        self.head(name, help, "histogram");
        let mut cumulative = 0;
        for (bound, n) in h.bounds.iter().zip(&h.counts) {
            cumulative += n.load(Ordering::Relaxed);
            let _ = writeln!(self.out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = h.count.load(Ordering::Relaxed);
        let _ = writeln!(self.out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(self.out, "{name}_sum {sum}\n{name}_count {count}");
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// A latency histogram in seconds with fixed upper bounds.
pub struct Histogram {
    bounds: &'static [f64],
    /// Per bucket (not cumulative); observations above the last bound only in `count`.
    counts: Vec<AtomicU64>,
    count: AtomicU64,
    sum_micros: AtomicU64,
}

/// Bounds for request latencies: 0.5 ms to 10 s.
pub const LATENCY_BOUNDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: std::time::Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = self.bounds.iter().position(|b| secs <= *b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn exposition_is_well_formed() {
        let h = Histogram::new(&[0.001, 0.01]);
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(5));
        h.observe(Duration::from_secs(1));
        let mut w = TextWriter::default();
        w.counter("strata_x_total", "Things.", 7);
        w.gauge("strata_up", "Up.", 1.0);
        w.histogram("strata_lat_seconds", "Latency.", &h);
        let text = w.finish();
        assert!(text.contains("# TYPE strata_x_total counter\nstrata_x_total 7\n"));
        assert!(text.contains("strata_lat_seconds_bucket{le=\"0.001\"} 1\n"));
        assert!(text.contains("strata_lat_seconds_bucket{le=\"0.01\"} 2\n"));
        assert!(text.contains("strata_lat_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("strata_lat_seconds_count 3\n"));
    }
}
