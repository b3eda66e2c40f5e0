//! Connections: one gRPC channel per broker address (cached and shared), topic lookup, and
//! the reconnect backoff.
//!
//! A cached channel reconnects by itself when its broker comes back; lookups always go to
//! the service URL, so a topic that moved is found at its new owner.

use crate::error::{Error, Result};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use strata_proto::v1 as pb;
use tonic::transport::{Channel, Endpoint};

/// Largest gRPC message the SDK sends or accepts (a broker's batches stay well below).
pub(crate) const MAX_GRPC_MESSAGE: usize = 64 << 20;

/// Where a topic lives.
pub(crate) enum Lookup {
    Broker(String),
    Partitioned(u32),
}

pub(crate) struct Connections {
    service_url: String,
    connect_timeout: Duration,
    pub(crate) operation_timeout: Duration,
    backoff: (Duration, Duration),
    channels: Mutex<HashMap<String, Channel>>,
}

impl Connections {
    pub(crate) fn new(
        service_url: String,
        connect_timeout: Duration,
        operation_timeout: Duration,
        backoff: (Duration, Duration),
    ) -> Result<Self> {
        Endpoint::from_shared(service_url.clone()).map_err(|e| {
            Error::InvalidArgument(format!(
                "service URL {service_url:?} is not a URL like http://127.0.0.1:6650: {e}"
            ))
        })?;
        Ok(Self {
            service_url,
            connect_timeout,
            operation_timeout,
            backoff,
            channels: Mutex::new(HashMap::new()),
        })
    }

    pub(crate) fn service_url(&self) -> &str {
        &self.service_url
    }

    pub(crate) fn backoff(&self) -> Backoff {
        Backoff {
            next: self.backoff.0,
            initial: self.backoff.0,
            max: self.backoff.1,
        }
    }

    /// The channel to `url`, connecting if there is none yet.
    pub(crate) async fn channel(&self, url: &str) -> Result<Channel> {
        if let Some(c) = self.channels.lock().expect("channel cache").get(url) {
            return Ok(c.clone());
        }
        let endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|e| Error::InvalidArgument(format!("broker URL {url:?}: {e}")))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10));
        let channel = endpoint.connect().await.map_err(|e| Error::Connect {
            url: url.to_string(),
            message: format!(
                "{}; is a Strata broker listening there? (`strata standalone` serves {})",
                source_chain(&e),
                crate::DEFAULT_URL
            ),
        })?;
        self.channels
            .lock()
            .expect("channel cache")
            .entry(url.to_string())
            .or_insert(channel.clone());
        Ok(channel)
    }

    /// Forgets a channel (after a connection error), so the next use reconnects afresh.
    pub(crate) fn forget(&self, url: &str) {
        self.channels.lock().expect("channel cache").remove(url);
    }

    /// Which broker owns `topic`, or how many partitions it has.
    pub(crate) async fn lookup(&self, topic: &str) -> Result<Lookup> {
        let channel = self.channel(&self.service_url).await?;
        let mut client = pb::lookup_client::LookupClient::new(channel);
        let r = client
            .lookup_topic(pb::LookupTopicRequest {
                topic: topic.to_string(),
            })
            .await
            .map_err(|s| {
                let e = Error::from_status(&s);
                if matches!(e, Error::Transport(_)) {
                    self.forget(&self.service_url);
                }
                e
            })?
            .into_inner();
        Ok(if r.partitions > 0 {
            Lookup::Partitioned(r.partitions)
        } else {
            Lookup::Broker(r.broker_url)
        })
    }
}

/// The error of a failed stream call on `url`; a broken connection also drops the cached
/// channel, so the next attempt connects afresh.
pub(crate) fn stream_error(conns: &Connections, url: &str, s: tonic::Status) -> Error {
    let e = Error::from_status(&s);
    if matches!(e, Error::Transport(_)) {
        conns.forget(url);
    }
    e
}

/// The next message of an optional stream; never resolves without one (for `select!`).
pub(crate) async fn next_message<T>(stream: Option<&mut tonic::Streaming<T>>) -> Option<Result<T, tonic::Status>> {
    match stream {
        Some(s) => s.message().await.transpose(),
        None => std::future::pending().await,
    }
}

/// Awaits an optional future in place; never resolves without one (for `select!`).
pub(crate) async fn poll_optional<F: std::future::Future + Unpin>(f: &mut Option<F>) -> F::Output {
    match f {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `at`; never resolves without a time (for `select!`).
pub(crate) async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// The full chain of an error's sources on one line.
pub(crate) fn source_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Exponential reconnect backoff with jitter.
pub(crate) struct Backoff {
    next: Duration,
    initial: Duration,
    max: Duration,
}

impl Backoff {
    /// The delay before the next attempt.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        // Up to 20% jitter so many clients do not reconnect in lockstep.
        let jitter = d.mul_f64(0.2 * (random_u64() % 1000) as f64 / 1000.0);
        d + jitter
    }

    pub(crate) fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// A random u64 (std's randomly seeded hasher; enough for names and jitter).
pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    );
    h.finish()
}

/// The name of partition `i` of `topic`.
pub(crate) fn partition_name(topic: &str, i: u32) -> String {
    format!("{topic}-partition-{i}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_maximum_and_resets() {
        let mut b = Backoff {
            next: Duration::from_millis(100),
            initial: Duration::from_millis(100),
            max: Duration::from_millis(500),
        };
        let d: Vec<Duration> = (0..5).map(|_| b.next_delay()).collect();
        assert!(d[0] >= Duration::from_millis(100) && d[0] <= Duration::from_millis(120));
        assert!(d[1] >= Duration::from_millis(200) && d[1] <= Duration::from_millis(240));
        assert!(d[4] >= Duration::from_millis(500) && d[4] <= Duration::from_millis(600));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(120));
    }
}
