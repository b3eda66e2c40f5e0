//! The Rust SDK of Strata.
//!
//! A [`Client`] connects to any broker (`http://127.0.0.1:6650` for `strata standalone`)
//! and hands out [`Producer`]s, [`Consumer`]s, [`Reader`]s and an [`Admin`] client. Each
//! looks its topic up, talks to the broker that owns it, and reconnects on its own — with
//! backoff, following the topic wherever it moves — after a broker restart or an ownership
//! change. Partitioned topics are handled as a whole: producers route messages to
//! partitions (key hash, else round-robin) and consumers read every partition.
//!
//! ```no_run
//! use strata_client::{Client, SubscriptionType, InitialPosition};
//!
//! # async fn example() -> strata_client::Result<()> {
//! let client = Client::connect("http://127.0.0.1:6650").await?;
//! let producer = client.producer("public/default/orders").create().await?;
//! let id = producer.send("order 1").await?;
//! println!("stored as {id}");
//!
//! let consumer = client
//!     .consumer("public/default/orders")
//!     .subscription("billing")
//!     .subscription_type(SubscriptionType::Shared)
//!     .initial_position(InitialPosition::Earliest)
//!     .subscribe()
//!     .await?;
//! let msg = consumer.receive().await?;
//! consumer.ack(&msg).await?;
//! # Ok(()) }
//! ```
//!
//! Delivery is at-least-once: a message is stored durably before `send` returns its id,
//! and redelivered until it is acknowledged.

mod admin;
mod connection;
mod consumer;
mod error;
mod message;
mod producer;
mod reader;

pub use admin::{
    Admin, AuthAction, BookieStatus, BundleInfo, ClusterInfo, DecommissionStatus, NamespacePolicies, OffloadStatus,
    Permission, ResetTo, Resource, SubscriptionStart, SubscriptionStats, TopicPolicies, TopicStats,
    UnderReplicatedLedger,
};
pub use consumer::{Consumer, ConsumerBuilder, InitialPosition, SubscriptionType};
pub use error::{Error, ErrorCode, Result};
pub use message::{Message, MessageId, ProducerMessage};
pub use producer::{Producer, ProducerBuilder, RoutingMode, SendFuture};
pub use reader::{Reader, ReaderBuilder, StartPosition};

/// The generated gRPC types and clients of `strata.proto`, for what the SDK does not wrap.
pub use strata_proto::v1 as proto;

use connection::Connections;
use std::sync::Arc;
use std::time::Duration;

/// Default service URL: `strata standalone` on this machine.
pub const DEFAULT_URL: &str = "http://127.0.0.1:6650";

/// A connection to a Strata cluster (or standalone broker). Cheap to clone; every clone
/// shares the connections.
///
/// ```no_run
/// # async fn example() -> strata_client::Result<()> {
/// use std::time::Duration;
/// let client = strata_client::Client::builder("http://127.0.0.1:6650")
///     .operation_timeout(Duration::from_secs(10))
///     .build()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    pub(crate) conns: Arc<Connections>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.url())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects with default settings.
    pub async fn connect(url: impl Into<String>) -> Result<Self> {
        Self::builder(url).build().await
    }

    /// A builder for settings other than the defaults.
    pub fn builder(url: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            url: url.into(),
            connect_timeout: Duration::from_secs(10),
            operation_timeout: Duration::from_secs(30),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            tls: Ok(None),
            token: None,
            resolve: Vec::new(),
        }
    }

    /// A producer for `topic` (`persistent://tenant/ns/topic` or `tenant/ns/topic`).
    pub fn producer(&self, topic: impl Into<String>) -> ProducerBuilder {
        ProducerBuilder::new(self.clone(), topic.into())
    }

    /// A consumer for `topic`; name its subscription with [`ConsumerBuilder::subscription`].
    pub fn consumer(&self, topic: impl Into<String>) -> ConsumerBuilder {
        ConsumerBuilder::new(self.clone(), topic.into())
    }

    /// A reader of `topic`: reads from a position without a durable subscription.
    pub fn reader(&self, topic: impl Into<String>) -> ReaderBuilder {
        ReaderBuilder::new(self.clone(), topic.into())
    }

    /// The admin client (tenants, namespaces, topics, subscriptions).
    pub fn admin(&self) -> Admin {
        Admin::new(self.clone())
    }

    /// The service URL this client was built with.
    pub fn url(&self) -> &str {
        self.conns.service_url()
    }
}

/// Settings of a [`Client`].
///
/// ```no_run
/// # async fn example() -> strata_client::Result<()> {
/// use std::time::Duration;
/// let client = strata_client::Client::builder("http://broker-0.strata:6650")
///     .connect_timeout(Duration::from_secs(5))
///     .reconnect_backoff(Duration::from_millis(50), Duration::from_secs(10))
///     .build()
///     .await?;
/// # Ok(()) }
/// ```
pub struct ClientBuilder {
    url: String,
    connect_timeout: Duration,
    operation_timeout: Duration,
    backoff_initial: Duration,
    backoff_max: Duration,
    /// TLS settings, or why they could not be loaded (reported by `build`).
    tls: std::result::Result<Option<strata_net::tls::ClientTls>, String>,
    token: Option<String>,
    resolve: Vec<(String, String)>,
}

impl ClientBuilder {
    /// How long establishing a TCP/HTTP2 connection may take (default 10 s).
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// How long creating a producer/consumer or an admin call may take, retries
    /// included (default 30 s).
    pub fn operation_timeout(mut self, d: Duration) -> Self {
        self.operation_timeout = d;
        self
    }

    /// Reconnect delays: from `initial`, doubling up to `max` (defaults 100 ms and 5 s).
    pub fn reconnect_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff_initial = initial;
        self.backoff_max = max.max(initial);
        self
    }

    /// For `https://` URLs: trust the CA certificates of this PEM file instead of the
    /// system's roots.
    pub fn tls_ca_file(mut self, path: impl AsRef<std::path::Path>) -> Self {
        let identity = self.tls.as_ref().ok().cloned().flatten();
        self.tls = strata_net::tls::ClientTls::with_ca_file(path.as_ref()).map(|ca| Some(keep_identity(ca, identity)));
        self
    }

    /// For `https://` URLs: trust the CA certificates of this PEM text.
    pub fn tls_ca_pem(mut self, pem: impl AsRef<[u8]>) -> Self {
        let identity = self.tls.as_ref().ok().cloned().flatten();
        self.tls = strata_net::tls::ClientTls::with_ca_pem(pem.as_ref()).map(|ca| Some(keep_identity(ca, identity)));
        self
    }

    /// For brokers requiring client certificates (mutual TLS): present this certificate
    /// chain and private key (PEM files).
    pub fn tls_client_cert_files(
        mut self,
        cert: impl AsRef<std::path::Path>,
        key: impl AsRef<std::path::Path>,
    ) -> Self {
        self.tls = self.tls.and_then(|t| {
            t.unwrap_or_default()
                .with_identity_files(cert.as_ref(), key.as_ref())
                .map(Some)
        });
        self
    }

    /// Authenticates with this token (a JWT, as `strata token create` makes) on every
    /// request, for brokers with authentication on.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Connects to `addr` (`host:port`) whenever a URL — the service URL or a broker URL
    /// a lookup returns — names `host_port` (like curl's `--resolve`). The URL's host still
    /// names the server, so TLS certificates are checked against it: for reaching a
    /// cluster's DNS names through `kubectl port-forward` or from outside its network.
    pub fn resolve(mut self, host_port: impl Into<String>, addr: impl Into<String>) -> Self {
        self.resolve.push((host_port.into(), addr.into()));
        self
    }

    /// Connects to the service URL (failing fast if nothing listens there).
    pub async fn build(self) -> Result<Client> {
        let tls = self.tls.map_err(Error::InvalidArgument)?;
        let conns = Connections::new(
            self.url,
            self.connect_timeout,
            self.operation_timeout,
            (self.backoff_initial, self.backoff_max),
            tls,
            self.token,
            self.resolve,
        )?;
        conns.on_service(|_| async { Ok(()) }).await?;
        Ok(Client { conns: Arc::new(conns) })
    }
}

/// `ca` with the client certificate of `previous`, if it had one (builder calls in any
/// order).
fn keep_identity(
    ca: strata_net::tls::ClientTls,
    previous: Option<strata_net::tls::ClientTls>,
) -> strata_net::tls::ClientTls {
    match previous {
        Some(p) => ca.with_identity_of(&p),
        None => ca,
    }
}

#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
