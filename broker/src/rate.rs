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
use std::sync::atomic::{AtomicBool, Ordering};
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

/// A message bucket and a byte bucket (either may be absent: unlimited), whose rate can
/// change while it is in use (a namespace policy changed).
#[derive(Debug)]
pub struct Limiter {
    /// Whether any bucket exists: the unlimited case takes no lock.
    limited: AtomicBool,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    rate: Rate,
    msgs: Option<Bucket>,
    bytes: Option<Bucket>,
}

impl Limiter {
    /// A limiter for `rate` (one that limits nothing when `rate` is unlimited).
    pub fn new(rate: Rate) -> Self {
        let l = Self {
            limited: AtomicBool::new(false),
            state: Mutex::new(State {
                rate: Rate::default(),
                msgs: None,
                bytes: None,
            }),
        };
        l.set_rate(rate);
        l
    }

    pub fn rate(&self) -> Rate {
        self.state.lock().expect("limiter lock").rate
    }

    /// Whether the rate limits anything.
    pub fn is_limited(&self) -> bool {
        self.limited.load(Ordering::Relaxed)
    }

    /// Changes the rate (nothing if it is the same): the buckets start again full, so a
    /// change never adds a wait of its own.
    pub fn set_rate(&self, rate: Rate) {
        let mut g = self.state.lock().expect("limiter lock");
        if g.rate == rate && (g.msgs.is_some() || g.bytes.is_some() || rate.is_unlimited()) {
            return;
        }
        let now = Instant::now();
        let bucket = |r: u64| (r > 0).then(|| Bucket::new(r, now));
        *g = State {
            rate,
            msgs: bucket(rate.msgs_per_sec),
            bytes: bucket(rate.bytes_per_sec),
        };
        self.limited.store(!rate.is_unlimited(), Ordering::Relaxed);
    }

    /// How long to wait before the next batch may be admitted (zero: now).
    pub fn wait(&self, now: Instant) -> Duration {
        if !self.is_limited() {
            return Duration::ZERO;
        }
        let mut g = self.state.lock().expect("limiter lock");
        let State { msgs, bytes, .. } = &mut *g;
        let wm = msgs.as_mut().map_or(Duration::ZERO, |m| m.wait(now));
        let wb = bytes.as_mut().map_or(Duration::ZERO, |b| b.wait(now));
        wm.max(wb)
    }

    /// Counts an admitted batch of `msgs` messages and `bytes` bytes.
    pub fn take(&self, msgs: u64, bytes: u64, now: Instant) {
        if !self.is_limited() {
            return;
        }
        let mut g = self.state.lock().expect("limiter lock");
        if let Some(m) = &mut g.msgs {
            m.take(msgs, now);
        }
        if let Some(b) = &mut g.bytes {
            b.take(bytes, now);
        }
    }
}

/// The longest wait of several limiters.
pub fn wait_all(limiters: &[&Limiter], now: Instant) -> Duration {
    limiters.iter().map(|l| l.wait(now)).max().unwrap_or(Duration::ZERO)
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
            });
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
        });
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
        });
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
    fn unlimited_rates_limit_nothing_and_clocks_going_back_do_not_panic() {
        let unlimited = Limiter::new(Rate::default());
        assert!(!unlimited.is_limited());
        let now = Instant::now();
        unlimited.take(1_000_000, 1 << 40, now);
        assert_eq!(unlimited.wait(now), Duration::ZERO);
        let l = Limiter::new(Rate {
            msgs_per_sec: 1,
            bytes_per_sec: 0,
        });
        l.take(1, 0, now + Duration::from_secs(5));
        let _ = l.wait(now);
        assert_eq!(wait_all(&[&unlimited, &unlimited], now), Duration::ZERO);
    }

    #[test]
    fn a_rate_changes_in_place_and_back_to_unlimited() {
        let start = Instant::now();
        let l = Limiter::new(Rate::default());
        l.set_rate(Rate {
            msgs_per_sec: 1_000,
            bytes_per_sec: 0,
        });
        assert!(l.is_limited());
        let n = admitted(&l, 10, 0, 10.0, start);
        assert!((10_000..=10_110).contains(&n), "{n} at 1,000/s");
        // A lower rate applies from now on, without inheriting the old bucket's debt.
        l.take(1_000_000, 0, start);
        l.set_rate(Rate {
            msgs_per_sec: 100,
            bytes_per_sec: 0,
        });
        let later = Instant::now();
        assert_eq!(l.wait(later), Duration::ZERO);
        let n = admitted(&l, 1, 0, 10.0, later);
        assert!((1_000..=1_011).contains(&n), "{n} at 100/s");
        // Setting the same rate keeps the bucket (its debt stays).
        l.take(1_000, 0, later);
        l.set_rate(l.rate());
        assert!(l.wait(later) > Duration::ZERO);
        l.set_rate(Rate::default());
        assert!(!l.is_limited());
        assert_eq!(l.wait(later), Duration::ZERO);
    }
}
