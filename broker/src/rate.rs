//! Rate limits as token buckets: publish rate per topic and per producer, dispatch rate
//! per subscription (`[broker]` settings, 0 = unlimited).
//!
//! A limit throttles, it never fails a request: whoever exceeds it is simply served later.
//! A producer over its rate is not read from until its bucket has refilled, so HTTP/2 flow
//! control pushes back to the client, whose sends wait; a subscription over its rate is
//! not dispatched to until then.
//!
//! Invariants:
//! - a batch is admitted whole, as soon as the bucket is not in debt, and leaves the
//!   bucket in debt by what it overdrew; the next batch waits until the debt is repaid.
//!   So over any interval of length T the admitted amount is at most
//!   `burst + rate × T + one batch`, and a steady client gets `rate` on average;
//! - the burst is a tenth of a second of the rate (at least 1), so a bucket that sat idle
//!   lets at most that much through at once;
//! - buckets shared by several clients (one topic's producers) give them the rate
//!   together, not each.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A limit of messages and bytes per second; 0 means no limit on that measure.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rate {
    pub msgs_per_sec: u64,
    pub bytes_per_sec: u64,
}

impl Rate {
    pub fn is_unlimited(&self) -> bool {
        self.msgs_per_sec == 0 && self.bytes_per_sec == 0
    }
}

/// One token bucket (tokens may go negative: a debt).
#[derive(Debug)]
struct Bucket {
    per_sec: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(per_sec: u64, now: Instant) -> Self {
        let per_sec = per_sec as f64;
        let burst = (per_sec / 10.0).max(1.0);
        Self {
            per_sec,
            burst,
            tokens: burst,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now.max(self.last);
        self.tokens = (self.tokens + dt * self.per_sec).min(self.burst);
    }

    /// How long until the bucket is out of debt.
    fn wait(&mut self, now: Instant) -> Duration {
        self.refill(now);
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.per_sec)
        }
    }

    fn take(&mut self, n: u64, now: Instant) {
        self.refill(now);
        self.tokens -= n as f64;
    }
}

/// A message bucket and a byte bucket (either may be absent: unlimited).
#[derive(Debug)]
pub struct Limiter {
    rate: Rate,
    buckets: Mutex<(Option<Bucket>, Option<Bucket>)>,
}

impl Limiter {
    /// A limiter for `rate`, or `None` when it limits nothing.
    pub fn new(rate: Rate) -> Option<Self> {
        if rate.is_unlimited() {
            return None;
        }
        let now = Instant::now();
        let bucket = |r: u64| (r > 0).then(|| Bucket::new(r, now));
        Some(Self {
            rate,
            buckets: Mutex::new((bucket(rate.msgs_per_sec), bucket(rate.bytes_per_sec))),
        })
    }

    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// How long to wait before the next batch may be admitted (zero: now).
    pub fn wait(&self, now: Instant) -> Duration {
        let mut g = self.buckets.lock().expect("limiter lock");
        let (m, b) = &mut *g;
        let wm = m.as_mut().map_or(Duration::ZERO, |m| m.wait(now));
        let wb = b.as_mut().map_or(Duration::ZERO, |b| b.wait(now));
        wm.max(wb)
    }

    /// Counts an admitted batch of `msgs` messages and `bytes` bytes.
    pub fn take(&self, msgs: u64, bytes: u64, now: Instant) {
        let mut g = self.buckets.lock().expect("limiter lock");
        let (m, b) = &mut *g;
        if let Some(m) = m {
            m.take(msgs, now);
        }
        if let Some(b) = b {
            b.take(bytes, now);
        }
    }
}

/// The longest wait of several optional limiters.
pub fn wait_all(limiters: &[Option<&Limiter>], now: Instant) -> Duration {
    limiters
        .iter()
        .flatten()
        .map(|l| l.wait(now))
        .max()
        .unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Admits batches of `batch` messages as fast as the limiter lets them through, on a
    /// simulated clock, and counts what was admitted in `secs` seconds.
    fn admitted(l: &Limiter, batch: u64, bytes: u64, secs: f64, start: Instant) -> u64 {
        let end = start + Duration::from_secs_f64(secs);
        let mut now = start;
        let mut n = 0;
        loop {
            now += l.wait(now);
            if now >= end {
                return n;
            }
            l.take(batch, bytes, now);
            n += batch;
        }
    }

    #[test]
    fn a_steady_sender_gets_the_rate_within_a_burst_and_a_batch() {
        let start = Instant::now();
        for batch in [1, 7, 100, 1_000] {
            let l = Limiter::new(Rate {
                msgs_per_sec: 1_000,
                bytes_per_sec: 0,
            })
            .unwrap();
            let n = admitted(&l, batch, 0, 10.0, start);
            assert!(
                (10_000..=10_000 + 100 + batch).contains(&n),
                "batch {batch}: {n} admitted in 10 s at 1,000/s"
            );
        }
    }

    #[test]
    fn the_tighter_of_messages_and_bytes_wins() {
        let start = Instant::now();
        let l = Limiter::new(Rate {
            msgs_per_sec: 1_000_000,
            bytes_per_sec: 10_000,
        })
        .unwrap();
        // 100-byte messages at 10,000 B/s: 100 messages a second.
        let n = admitted(&l, 1, 100, 10.0, start);
        assert!((1_000..=1_012).contains(&n), "{n}");
    }

    #[test]
    fn an_idle_bucket_refills_only_up_to_the_burst() {
        let start = Instant::now();
        let l = Limiter::new(Rate {
            msgs_per_sec: 1_000,
            bytes_per_sec: 0,
        })
        .unwrap();
        let later = start + Duration::from_secs(3600);
        assert_eq!(l.wait(later), Duration::ZERO);
        l.take(100, 0, later);
        assert_eq!(l.wait(later), Duration::ZERO, "the burst is 100 messages");
        l.take(1, 0, later);
        assert!(l.wait(later) > Duration::ZERO);
        // A huge batch is admitted, and then the debt is repaid at the rate.
        l.take(5_000, 0, later);
        let w = l.wait(later);
        assert!(
            (Duration::from_millis(5_000)..Duration::from_millis(5_010)).contains(&w),
            "{w:?}"
        );
    }

    #[test]
    fn unlimited_rates_make_no_limiter_and_clocks_going_back_do_not_panic() {
        assert!(Limiter::new(Rate::default()).is_none());
        let l = Limiter::new(Rate {
            msgs_per_sec: 1,
            bytes_per_sec: 0,
        })
        .unwrap();
        let now = Instant::now();
        l.take(1, 0, now + Duration::from_secs(5));
        let _ = l.wait(now);
        assert_eq!(wait_all(&[None, None], now), Duration::ZERO);
    }
}
