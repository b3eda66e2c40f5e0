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

    /// Starts a family of labelled samples (`kind` is `counter` or `gauge`); its samples
    /// follow with [`Self::sample`]. The family is listed even with no sample, so a
    /// dashboard's query names a metric that exists before the first topic does.
    pub fn family(&mut self, name: &str, help: &str, kind: &str) {
        self.head(name, help, kind);
    }

    /// One sample of the family last started: `name{label="value",…} value`, label
    /// values escaped as the exposition format requires.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(k);
                self.out.push_str("=\"");
                for c in v.chars() {
                    match c {
                        '\\' => self.out.push_str("\\\\"),
                        '"' => self.out.push_str("\\\""),
                        '\n' => self.out.push_str("\\n"),
                        c => self.out.push(c),
                    }
                }
                self.out.push('"');
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// What the process uses, read from Linux's `/proc/self` (None elsewhere).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    pub resident_bytes: u64,
    /// User plus system CPU time since the process started.
    pub cpu_seconds: f64,
    pub open_fds: u64,
    pub threads: u64,
}

/// Reads [`ProcessStats`] of this process.
pub fn process_stats() -> Option<ProcessStats> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    parse_process(&stat, &status, open_fds)
}

/// `stat` is `/proc/<pid>/stat`, `status` is `/proc/<pid>/status`.
fn parse_process(stat: &str, status: &str, open_fds: u64) -> Option<ProcessStats> {
    // The command name (field 2) may hold spaces and parentheses: fields are counted after
    // its closing parenthesis, which starts with field 3 (state).
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 1..)?.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    // utime (14) and stime (15) are in USER_HZ, which Linux fixes at 100 for /proc.
    let cpu_seconds = (field(14)? + field(15)?) as f64 / 100.0;
    let threads = field(20)?;
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some(ProcessStats {
        resident_bytes: kib("VmRSS:")? * 1024,
        cpu_seconds,
        open_fds,
        threads,
    })
}

impl TextWriter {
    /// The standard Prometheus process metrics (resident memory, CPU seconds, open file
    /// descriptors, threads), when `/proc` can be read.
    pub fn process(&mut self) {
        let Some(p) = process_stats() else { return };
        self.gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            p.resident_bytes as f64,
        );
        self.head(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
            "counter",
        );
        let _ = writeln!(self.out, "process_cpu_seconds_total {}", p.cpu_seconds);
        self.gauge(
            "process_open_fds",
            "Number of open file descriptors.",
            p.open_fds as f64,
        );
        self.gauge("process_threads", "Number of OS threads.", p.threads as f64);
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
    fn process_stats_parse_proc_files() {
        // A command name with a space and a parenthesis must not shift the fields.
        let stat = "4242 (str ata) x) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 130 0 0 20 0 7 0 \
                    12345 987654321 5000 18446744073709551615";
        let status = "Name:\tstrata\nVmPeak:\t  900 kB\nVmRSS:\t   20480 kB\nThreads:\t7\n";
        let p = parse_process(stat, status, 12).unwrap();
        assert_eq!(p.resident_bytes, 20480 * 1024);
        assert!((p.cpu_seconds - 3.8).abs() < 1e-9, "{}", p.cpu_seconds);
        assert_eq!((p.threads, p.open_fds), (7, 12));
        assert!(parse_process("garbage", status, 0).is_none());
        // This process, on Linux.
        let me = process_stats().unwrap();
        assert!(me.resident_bytes > 0 && me.threads >= 1 && me.open_fds >= 3);
        let mut w = TextWriter::default();
        w.process();
        let page = w.finish();
        assert!(page.contains("# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total "));
    }

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

    #[test]
    fn labelled_samples_escape_their_values() {
        let mut w = TextWriter::default();
        w.family("strata_topic_x_total", "Per topic.", "counter");
        w.sample("strata_topic_x_total", &[("topic", "a\"b\\c\nd"), ("s", "e")], 3.0);
        w.sample("strata_topic_x_total", &[], 1.0);
        let text = w.finish();
        assert!(text.starts_with("# HELP strata_topic_x_total Per topic.\n# TYPE strata_topic_x_total counter\n"));
        assert!(
            text.contains("strata_topic_x_total{topic=\"a\\\"b\\\\c\\nd\",s=\"e\"} 3\n"),
            "{text}"
        );
        assert!(text.ends_with("strata_topic_x_total 1\n"));
    }
}
