//! The operator's Prometheus metrics: reconciles, errors and durations per kind, objects
//! per condition, and leadership. Rendered as the text exposition format for `/metrics`.
//!
//! Invariant: memory is bounded by the objects that exist — an object's entry goes when
//! the object does ([`Metrics::forget`]).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Histogram bucket bounds for reconcile durations, in seconds.
const BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
struct Inner {
    /// (kind, outcome) → count; outcome is `ok` or `error`.
    reconciles: BTreeMap<(String, &'static str), u64>,
    /// (kind, reason) → count.
    errors: BTreeMap<(String, String), u64>,
    durations: BTreeMap<String, Histogram>,
    /// (kind, namespace/name) → its conditions as (type, status).
    objects: HashMap<(String, String), Vec<(String, String)>>,
}

#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
    leader: AtomicBool,
}

impl Metrics {
    pub fn reconciled(&self, kind: &str, took: Duration, error: Option<&str>) {
        let mut g = self.inner.lock().expect("metrics");
        let outcome = if error.is_some() { "error" } else { "ok" };
        *g.reconciles.entry((kind.to_string(), outcome)).or_default() += 1;
        if let Some(reason) = error {
            *g.errors.entry((kind.to_string(), reason.to_string())).or_default() += 1;
        }
        let h = g.durations.entry(kind.to_string()).or_default();
        let secs = took.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }

    /// Records an object's current conditions.
    pub fn observe(&self, kind: &str, key: String, conditions: Vec<(String, String)>) {
        self.inner
            .lock()
            .expect("metrics")
            .objects
            .insert((kind.to_string(), key), conditions);
    }

    /// The object is gone.
    pub fn forget(&self, kind: &str, key: &str) {
        self.inner
            .lock()
            .expect("metrics")
            .objects
            .remove(&(kind.to_string(), key.to_string()));
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.store(leader, Ordering::SeqCst);
    }

    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::SeqCst)
    }

    pub fn render(&self) -> String {
        let g = self.inner.lock().expect("metrics");
        let mut out = String::new();
        out.push_str("# HELP strata_operator_reconciles_total Reconciles by kind and outcome.\n");
        out.push_str("# TYPE strata_operator_reconciles_total counter\n");
        for ((kind, outcome), n) in &g.reconciles {
            let _ = writeln!(
                out,
                "strata_operator_reconciles_total{{kind=\"{kind}\",outcome=\"{outcome}\"}} {n}"
            );
        }
        out.push_str("# HELP strata_operator_reconcile_errors_total Failed reconciles by kind and reason.\n");
        out.push_str("# TYPE strata_operator_reconcile_errors_total counter\n");
        for ((kind, reason), n) in &g.errors {
            let _ = writeln!(
                out,
                "strata_operator_reconcile_errors_total{{kind=\"{kind}\",reason=\"{reason}\"}} {n}"
            );
        }
        out.push_str("# HELP strata_operator_reconcile_duration_seconds Time one reconcile took.\n");
        out.push_str("# TYPE strata_operator_reconcile_duration_seconds histogram\n");
        for (kind, h) in &g.durations {
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "strata_operator_reconcile_duration_seconds_bucket{{kind=\"{kind}\",le=\"{b}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "strata_operator_reconcile_duration_seconds_bucket{{kind=\"{kind}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "strata_operator_reconcile_duration_seconds_sum{{kind=\"{kind}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "strata_operator_reconcile_duration_seconds_count{{kind=\"{kind}\"}} {}",
                h.count
            );
        }
        let mut per: BTreeMap<(&str, &str, &str), u64> = BTreeMap::new();
        for ((kind, _), conds) in &g.objects {
            for (t, s) in conds {
                *per.entry((kind.as_str(), t.as_str(), s.as_str())).or_default() += 1;
            }
        }
        out.push_str("# HELP strata_operator_objects Objects by kind and condition status.\n");
        out.push_str("# TYPE strata_operator_objects gauge\n");
        for ((kind, t, s), n) in per {
            let _ = writeln!(
                out,
                "strata_operator_objects{{kind=\"{kind}\",condition=\"{t}\",status=\"{s}\"}} {n}"
            );
        }
        out.push_str("# HELP strata_operator_leader Whether this replica holds the leader lease.\n");
        out.push_str("# TYPE strata_operator_leader gauge\n");
        let _ = writeln!(out, "strata_operator_leader {}", u8::from(self.is_leader()));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_durations_and_conditions_render() {
        let m = Metrics::default();
        m.reconciled("Topic", Duration::from_millis(20), None);
        m.reconciled("Topic", Duration::from_secs(2), Some("ClusterUnreachable"));
        m.observe("Topic", "a/x".into(), vec![("Ready".into(), "True".into())]);
        m.observe("Topic", "a/y".into(), vec![("Ready".into(), "True".into())]);
        m.observe("Topic", "a/z".into(), vec![("Ready".into(), "False".into())]);
        m.forget("Topic", "a/z");
        let text = m.render();
        assert!(
            text.contains("strata_operator_reconciles_total{kind=\"Topic\",outcome=\"ok\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("strata_operator_reconcile_errors_total{kind=\"Topic\",reason=\"ClusterUnreachable\"} 1")
        );
        assert!(text.contains("strata_operator_reconcile_duration_seconds_bucket{kind=\"Topic\",le=\"0.025\"} 1"));
        assert!(text.contains("strata_operator_reconcile_duration_seconds_count{kind=\"Topic\"} 2"));
        assert!(text.contains("strata_operator_objects{kind=\"Topic\",condition=\"Ready\",status=\"True\"} 2"));
        assert!(!text.contains("status=\"False\""));
        assert!(text.contains("strata_operator_leader 0"));
    }
}
