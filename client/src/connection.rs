//! Connections: one gRPC channel per broker address (cached and shared), topic lookup, and
//! the reconnect backoff.
//!
//! A cached channel reconnects by itself when its broker comes back; lookups always go to
//! the service URL, so a topic that moved is found at its new owner. The service URL may
//! name several brokers (`http://b1:6650,b2:6650`): lookups and admin calls go to the
//! last one that answered and move on to the next when it cannot be reached.

use crate::error::{Error, Result};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use strata_proto::v1 as pb;
use tonic::service::interceptor::InterceptedService;
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
    /// The brokers the service URL names, each as a URL.
    service_urls: Vec<String>,
    /// Index into `service_urls` of the broker used for lookups now.
    current: std::sync::atomic::AtomicUsize,
    connect_timeout: Duration,
    pub(crate) operation_timeout: Duration,
    backoff: (Duration, Duration),
    channels: Mutex<HashMap<String, Channel>>,
    /// For `https://` brokers: the CA to trust (the system's roots if `None`) and the
    /// client certificate to present.
    tls: Option<strata_net::tls::ClientTls>,
    /// Adds the client's token (if any) to every request.
    token: strata_net::auth::TokenInterceptor,
    /// `host:port` → the address to connect to instead (`ClientBuilder::resolve`).
    resolve: Vec<(String, String)>,
}

/// A channel to one broker whose requests carry the client's token.
pub(crate) type Chan = InterceptedService<Channel, strata_net::auth::TokenInterceptor>;

/// Splits a service URL naming one or more brokers into one URL per broker:
/// `http://a:1,b:2` and `http://a:1,http://b:2` both give `http://a:1` and `http://b:2`.
pub(crate) fn split_service_url(url: &str) -> Result<Vec<String>> {
    let bad = |why: String| {
        Error::InvalidArgument(format!(
            "service URL {url:?} is not like http://127.0.0.1:6650 or http://broker-1:6650,broker-2:6650: {why}"
        ))
    };
    let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("no scheme".into()))?;
    let mut out = Vec::new();
    for part in rest.trim_end_matches('/').split(',') {
        let part = part.trim();
        if part.is_empty() {
            return Err(bad("an empty host".into()));
        }
        let u = if part.contains("://") {
            part.to_string()
        } else {
            format!("{scheme}://{part}")
        };
        Endpoint::from_shared(u.clone()).map_err(|e| bad(e.to_string()))?;
        out.push(u);
    }
    Ok(out)
}

impl Connections {
    pub(crate) fn new(
        service_url: String,
        connect_timeout: Duration,
        operation_timeout: Duration,
        backoff: (Duration, Duration),
        tls: Option<strata_net::tls::ClientTls>,
        token: Option<String>,
        resolve: Vec<(String, String)>,
    ) -> Result<Self> {
        let token = strata_net::auth::TokenInterceptor::new(token.as_deref()).map_err(Error::InvalidArgument)?;
        let service_urls = split_service_url(&service_url)?;
        Ok(Self {
            service_url,
            current: std::sync::atomic::AtomicUsize::new(random_u64() as usize % service_urls.len()),
            service_urls,
            connect_timeout,
            operation_timeout,
            backoff,
            channels: Mutex::new(HashMap::new()),
            tls,
            token,
            resolve,
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
    pub(crate) async fn channel(&self, url: &str) -> Result<Chan> {
        if let Some(c) = self.channels.lock().expect("channel cache").get(url) {
            return Ok(InterceptedService::new(c.clone(), self.token.clone()));
        }
        let endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|e| Error::InvalidArgument(format!("broker URL {url:?}: {e}")))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            // A frozen or cut-off broker is noticed within ~15 s even while idle.
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true);
        let authority = endpoint.uri().authority().map(|a| a.as_str().to_string());
        let addr = self
            .resolve
            .iter()
            .find(|(from, _)| Some(from) == authority.as_ref())
            .map(|(_, to)| to.as_str());
        let channel = strata_net::client::connect_to(endpoint, self.tls.as_ref(), addr)
            .await
            .map_err(|e| Error::Connect {
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
        Ok(InterceptedService::new(channel, self.token.clone()))
    }

    /// Forgets a channel (after a connection error), so the next use reconnects afresh.
    pub(crate) fn forget(&self, url: &str) {
        self.channels.lock().expect("channel cache").remove(url);
    }

    /// Runs `call` against the service URL's brokers: the current one first, then each
    /// other one while the broker cannot be reached (a broker's own errors are final).
    pub(crate) async fn on_service<T, F, Fut>(&self, call: F) -> Result<T>
    where
        F: Fn(Chan) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let n = self.service_urls.len();
        let first = self.current.load(std::sync::atomic::Ordering::Relaxed);
        let mut last_err = None;
        for i in 0..n {
            let idx = (first + i) % n;
            let url = &self.service_urls[idx];
            let result = match self.channel(url).await {
                Ok(ch) => call(ch).await.map_err(|s| Error::from_status(&s)),
                Err(e) => Err(e),
            };
            match result {
                Err(e @ (Error::Transport(_) | Error::Connect { .. })) => {
                    self.forget(url);
                    last_err = Some(e);
                }
                r => {
                    self.current.store(idx, std::sync::atomic::Ordering::Relaxed);
                    return r;
                }
            }
        }
        Err(last_err.expect("at least one service URL"))
    }

    /// Which broker owns `topic`, or how many partitions it has.
    pub(crate) async fn lookup(&self, topic: &str) -> Result<Lookup> {
        let r = self
            .on_service(|channel| async move {
                pb::lookup_client::LookupClient::new(channel)
                    .lookup_topic(pb::LookupTopicRequest {
                        topic: topic.to_string(),
                    })
                    .await
                    .map(|r| r.into_inner())
            })
            .await?;
        Ok(if r.partitions > 0 {
            Lookup::Partitioned(r.partitions)
        } else {
            Lookup::Broker(r.broker_url)
        })
    }
}

/// Runs `attempt` until it succeeds, fails for good, or the operation timeout passes;
/// retriable failures (the topic is moving between brokers, its owner is unreachable)
/// are retried with backoff. `what` names the operation in a timeout error.
pub(crate) async fn retrying<T, F, Fut>(conns: &Connections, what: &str, mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let deadline = tokio::time::Instant::now() + conns.operation_timeout;
    let mut backoff = conns.backoff();
    loop {
        let r = match tokio::time::timeout_at(deadline, attempt()).await {
            Ok(r) => r,
            Err(_) => return Err(Error::Timeout(what.to_string())),
        };
        match r {
            Err(e) if e.is_retriable() && !matches!(e, Error::Timeout(_)) => {
                let at = tokio::time::Instant::now() + backoff.next_delay();
                if at >= deadline {
                    return Err(e);
                }
                tracing::debug!(error = %e, "{what}: retrying");
                tokio::time::sleep_until(at).await;
            }
            r => return r,
        }
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
    fn service_urls_may_name_several_brokers() {
        assert_eq!(split_service_url("http://a:1").unwrap(), ["http://a:1"]);
        assert_eq!(
            split_service_url("http://a:1,b:2").unwrap(),
            ["http://a:1", "http://b:2"]
        );
        assert_eq!(
            split_service_url("http://a:1, http://b:2/").unwrap(),
            ["http://a:1", "http://b:2"]
        );
        assert!(split_service_url("a:1").is_err());
        assert!(split_service_url("http://a:1,,b:2").is_err());
    }

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
