//! The operator's view of a Strata cluster: the admin operations it needs, behind a trait
//! so the reconcile decisions can be unit-tested against an in-memory cluster
//! ([`fake::FakeCluster`]), and the real implementation over the SDK's admin client.
//!
//! Invariant: every call is bounded in time (the SDK's connect and operation timeouts), so
//! one unreachable cluster delays only the objects that point at it.

use futures_util::future::BoxFuture;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use strata_client::{ErrorCode, ResetTo, SubscriptionStart, SubscriptionType, TopicPolicies, TopicStats};

/// Why a call to a Strata cluster failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AdminError {
    /// The cluster could not be reached (or did not answer in time).
    #[error("{0}")]
    Unreachable(String),
    /// The cluster refused the request.
    #[error("{message}")]
    Refused { code: Option<ErrorCode>, message: String },
}

impl AdminError {
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            AdminError::Refused { code, .. } => *code,
            AdminError::Unreachable(_) => None,
        }
    }

    fn from_sdk(e: strata_client::Error) -> Self {
        match &e {
            strata_client::Error::Broker { code, .. } if !is_unavailable(*code) => AdminError::Refused {
                code: Some(*code),
                message: e.to_string(),
            },
            strata_client::Error::InvalidArgument(_) => AdminError::Refused {
                code: Some(ErrorCode::InvalidArgument),
                message: e.to_string(),
            },
            _ => AdminError::Unreachable(e.to_string()),
        }
    }
}

fn is_unavailable(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::ServiceNotReady | ErrorCode::StorageError | ErrorCode::NotOwner
    )
}

pub type AdminResult<T> = Result<T, AdminError>;

/// A topic as it is in the cluster.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LiveTopic {
    /// 0 for a non-partitioned topic.
    pub partitions: u32,
    pub policies: TopicPolicies,
    pub stats: TopicStats,
}

/// The admin operations the operator uses, on one cluster.
pub trait StrataAdmin: Send + Sync {
    /// The topic, or `None` if it does not exist.
    fn topic(&self, name: &str) -> BoxFuture<'_, AdminResult<Option<LiveTopic>>>;
    fn create_topic(&self, name: &str, partitions: u32) -> BoxFuture<'_, AdminResult<()>>;
    fn update_partitions(&self, name: &str, partitions: u32) -> BoxFuture<'_, AdminResult<()>>;
    fn set_policies(&self, name: &str, policies: TopicPolicies) -> BoxFuture<'_, AdminResult<()>>;
    fn delete_topic(&self, name: &str, force: bool) -> BoxFuture<'_, AdminResult<()>>;
    /// Creates the subscription if missing (on every partition); `true` if anything was
    /// created, `false` if it existed everywhere.
    fn create_subscription(
        &self,
        topic: &str,
        name: &str,
        sub_type: SubscriptionType,
        start: SubscriptionStart,
    ) -> BoxFuture<'_, AdminResult<bool>>;
    fn reset_subscription(&self, topic: &str, name: &str, to: ResetTo) -> BoxFuture<'_, AdminResult<()>>;
    /// `false` if it did not exist.
    fn delete_subscription(&self, topic: &str, name: &str) -> BoxFuture<'_, AdminResult<bool>>;
    /// Each registered broker's load: messages per second, published plus delivered.
    fn broker_loads(&self) -> BoxFuture<'_, AdminResult<Vec<f64>>>;
    /// Starts (or reports, if under way) the decommission of the bookie with identity
    /// `address` (`host:port`).
    fn decommission_bookie(&self, address: &str) -> BoxFuture<'_, AdminResult<BookieDrain>>;
    /// Cancels a decommission still draining, or forgets a finished one (so the identity
    /// can serve a new, empty bookie).
    fn cancel_decommission(&self, address: &str) -> BoxFuture<'_, AdminResult<()>>;
    /// A decommission's progress (state `none` if there is none), with how many ledgers
    /// name the bookie and whether it is registered either way.
    fn decommission_status(&self, address: &str) -> BoxFuture<'_, AdminResult<BookieDrain>>;
}

/// A bookie decommission's progress.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BookieDrain {
    /// `draining`, `done` or `none`.
    pub state: String,
    pub remaining_ledgers: u64,
    pub registered: bool,
}

impl From<strata_client::DecommissionStatus> for BookieDrain {
    fn from(s: strata_client::DecommissionStatus) -> Self {
        Self {
            state: s.state,
            remaining_ledgers: s.remaining_ledgers,
            registered: s.registered,
        }
    }
}

impl BookieDrain {
    /// No ledger names the bookie and it has unregistered: its pod and volume can go.
    pub fn complete(&self) -> bool {
        self.state == "done" && !self.registered
    }
}

/// What the operator needs to reach a cluster besides its URL.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Access {
    /// Sent with every call (a cluster with authentication on).
    pub token: Option<String>,
    /// The CA (PEM) an `https://` cluster's certificate is checked against; the system's
    /// roots when unset.
    pub ca_pem: Option<String>,
}

/// Finds the cluster behind a service URL.
pub trait Connector: Send + Sync {
    fn connect<'a>(&'a self, url: &'a str, access: &'a Access) -> BoxFuture<'a, AdminResult<Arc<dyn StrataAdmin>>>;
}

/// The real thing: SDK clients, one per service URL and access, kept while they work.
pub struct SdkConnector {
    clients: Mutex<HashMap<(String, Access), strata_client::Client>>,
    connect_timeout: Duration,
    operation_timeout: Duration,
    /// `host:port` → `address:port` to connect to instead (`--resolve`), for an operator
    /// running outside the Kubernetes cluster whose service names it cannot resolve.
    resolve: Vec<(String, String)>,
}

impl SdkConnector {
    pub fn new(connect_timeout: Duration, operation_timeout: Duration) -> Self {
        Self {
            clients: Mutex::new(HashMap::new()),
            connect_timeout,
            operation_timeout,
            resolve: Vec::new(),
        }
    }

    /// Connects to `to` whenever a URL names `from` (both `host:port`).
    pub fn with_resolve(mut self, resolve: Vec<(String, String)>) -> Self {
        self.resolve = resolve;
        self
    }
}

impl Connector for SdkConnector {
    fn connect<'a>(&'a self, url: &'a str, access: &'a Access) -> BoxFuture<'a, AdminResult<Arc<dyn StrataAdmin>>> {
        let key = (url.to_string(), access.clone());
        Box::pin(async move {
            let cached = self.clients.lock().expect("client cache").get(&key).cloned();
            let client = match cached {
                Some(c) => c,
                None => {
                    // `--resolve` entries connect elsewhere but keep the URL's host as
                    // the server's name, so TLS certificates are still checked.
                    let mut b = strata_client::Client::builder(url)
                        .connect_timeout(self.connect_timeout)
                        .operation_timeout(self.operation_timeout);
                    for (from, to) in &self.resolve {
                        b = b.resolve(from, to);
                    }
                    if let Some(t) = &access.token {
                        b = b.token(t);
                    }
                    if let Some(ca) = &access.ca_pem {
                        b = b.tls_ca_pem(ca);
                    }
                    let c = b.build().await.map_err(|e| AdminError::Unreachable(e.to_string()))?;
                    self.clients.lock().expect("client cache").insert(key, c.clone());
                    c
                }
            };
            Ok(Arc::new(SdkAdmin(client.admin(), self.resolve.clone())) as Arc<dyn StrataAdmin>)
        })
    }
}

/// The admin client, and the `--resolve` entries (bookie identities are resolved by
/// them too: an operator outside the cluster sees bookies by the addresses they map to).
struct SdkAdmin(strata_client::Admin, Vec<(String, String)>);

impl SdkAdmin {
    fn bookie(&self, address: &str) -> String {
        self.1
            .iter()
            .find(|(from, _)| from == address)
            .map_or_else(|| address.to_string(), |(_, to)| to.clone())
    }
}

impl StrataAdmin for SdkAdmin {
    fn topic(&self, name: &str) -> BoxFuture<'_, AdminResult<Option<LiveTopic>>> {
        let name = name.to_string();
        Box::pin(async move {
            let stats = match self.0.topic_stats(&name).await {
                Ok(s) => s,
                Err(e) if e.code() == Some(ErrorCode::TopicNotFound) => return Ok(None),
                Err(e) => return Err(AdminError::from_sdk(e)),
            };
            let policies = self.0.topic_policies(&name).await.map_err(AdminError::from_sdk)?;
            Ok(Some(LiveTopic {
                partitions: stats.partitions,
                policies,
                stats,
            }))
        })
    }

    fn create_topic(&self, name: &str, partitions: u32) -> BoxFuture<'_, AdminResult<()>> {
        let name = name.to_string();
        Box::pin(async move {
            self.0
                .create_topic(&name, partitions)
                .await
                .map_err(AdminError::from_sdk)
        })
    }

    fn update_partitions(&self, name: &str, partitions: u32) -> BoxFuture<'_, AdminResult<()>> {
        let name = name.to_string();
        Box::pin(async move {
            self.0
                .update_partitions(&name, partitions)
                .await
                .map_err(AdminError::from_sdk)
        })
    }

    fn set_policies(&self, name: &str, policies: TopicPolicies) -> BoxFuture<'_, AdminResult<()>> {
        let name = name.to_string();
        Box::pin(async move {
            self.0
                .set_topic_policies(&name, policies)
                .await
                .map_err(AdminError::from_sdk)
        })
    }

    fn delete_topic(&self, name: &str, force: bool) -> BoxFuture<'_, AdminResult<()>> {
        let name = name.to_string();
        Box::pin(async move {
            match self.0.delete_topic_with(&name, force).await {
                Ok(()) => Ok(()),
                Err(e) if e.code() == Some(ErrorCode::TopicNotFound) => Ok(()),
                Err(e) => Err(AdminError::from_sdk(e)),
            }
        })
    }

    fn create_subscription(
        &self,
        topic: &str,
        name: &str,
        sub_type: SubscriptionType,
        start: SubscriptionStart,
    ) -> BoxFuture<'_, AdminResult<bool>> {
        let (topic, name) = (topic.to_string(), name.to_string());
        Box::pin(async move {
            match self.0.create_subscription_with(&topic, &name, sub_type, start).await {
                Ok(()) => Ok(true),
                Err(e) if e.code() == Some(ErrorCode::AlreadyExists) => Ok(false),
                Err(e) => Err(AdminError::from_sdk(e)),
            }
        })
    }

    fn reset_subscription(&self, topic: &str, name: &str, to: ResetTo) -> BoxFuture<'_, AdminResult<()>> {
        let (topic, name) = (topic.to_string(), name.to_string());
        Box::pin(async move {
            self.0
                .reset_subscription(&topic, &name, to)
                .await
                .map_err(AdminError::from_sdk)
        })
    }

    fn delete_subscription(&self, topic: &str, name: &str) -> BoxFuture<'_, AdminResult<bool>> {
        let (topic, name) = (topic.to_string(), name.to_string());
        Box::pin(async move {
            match self.0.delete_subscription(&topic, &name).await {
                Ok(()) => Ok(true),
                Err(e) if matches!(e.code(), Some(ErrorCode::NotFound | ErrorCode::TopicNotFound)) => Ok(false),
                Err(e) => Err(AdminError::from_sdk(e)),
            }
        })
    }

    fn broker_loads(&self) -> BoxFuture<'_, AdminResult<Vec<f64>>> {
        Box::pin(async move {
            let info = self.0.cluster().await.map_err(AdminError::from_sdk)?;
            Ok(info.brokers.iter().map(|b| b.msg_rate_in + b.msg_rate_out).collect())
        })
    }

    fn decommission_bookie(&self, address: &str) -> BoxFuture<'_, AdminResult<BookieDrain>> {
        let address = self.bookie(address);
        Box::pin(async move {
            self.0
                .decommission_bookie(&address)
                .await
                .map(BookieDrain::from)
                .map_err(AdminError::from_sdk)
        })
    }

    fn cancel_decommission(&self, address: &str) -> BoxFuture<'_, AdminResult<()>> {
        let address = self.bookie(address);
        Box::pin(async move {
            self.0
                .cancel_decommission(&address)
                .await
                .map(drop)
                .map_err(AdminError::from_sdk)
        })
    }

    fn decommission_status(&self, address: &str) -> BoxFuture<'_, AdminResult<BookieDrain>> {
        let address = self.bookie(address);
        Box::pin(async move {
            self.0
                .decommission_status(&address)
                .await
                .map(BookieDrain::from)
                .map_err(AdminError::from_sdk)
        })
    }
}

/// An in-memory Strata cluster for unit tests of the reconcile decisions.
#[cfg(test)]
pub mod fake {
    use super::*;
    use strata_client::SubscriptionStats;

    #[derive(Default)]
    pub struct FakeCluster {
        pub topics: Mutex<HashMap<String, LiveTopic>>,
        /// Every mutating call, in order, for assertions.
        pub calls: Mutex<Vec<String>>,
        /// When set, every call fails as unreachable.
        pub down: std::sync::atomic::AtomicBool,
        /// What `broker_loads` answers.
        pub loads: Mutex<Vec<f64>>,
        /// Decommissions by bookie address.
        pub drains: Mutex<HashMap<String, BookieDrain>>,
    }

    impl FakeCluster {
        fn check(&self) -> AdminResult<()> {
            if self.down.load(std::sync::atomic::Ordering::SeqCst) {
                Err(AdminError::Unreachable("cannot connect to http://fake: refused".into()))
            } else {
                Ok(())
            }
        }

        fn record(&self, call: String) {
            self.calls.lock().unwrap().push(call);
        }

        pub fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }

        pub fn refused(code: ErrorCode, message: &str) -> AdminError {
            AdminError::Refused {
                code: Some(code),
                message: message.into(),
            }
        }
    }

    impl StrataAdmin for FakeCluster {
        fn topic(&self, name: &str) -> BoxFuture<'_, AdminResult<Option<LiveTopic>>> {
            let r = self.check().map(|_| self.topics.lock().unwrap().get(name).cloned());
            Box::pin(async move { r })
        }

        fn create_topic(&self, name: &str, partitions: u32) -> BoxFuture<'_, AdminResult<()>> {
            let r = self.check().and_then(|_| {
                self.record(format!("create {name} {partitions}"));
                let mut t = self.topics.lock().unwrap();
                if t.contains_key(name) {
                    return Err(Self::refused(ErrorCode::AlreadyExists, "exists"));
                }
                t.insert(
                    name.to_string(),
                    LiveTopic {
                        partitions,
                        ..Default::default()
                    },
                );
                Ok(())
            });
            Box::pin(async move { r })
        }

        fn update_partitions(&self, name: &str, partitions: u32) -> BoxFuture<'_, AdminResult<()>> {
            let r = self.check().and_then(|_| {
                self.record(format!("grow {name} {partitions}"));
                let mut t = self.topics.lock().unwrap();
                let topic = t.get_mut(name).ok_or(Self::refused(ErrorCode::TopicNotFound, name))?;
                if partitions < topic.partitions {
                    return Err(Self::refused(ErrorCode::InvalidArgument, "partitions can only grow"));
                }
                topic.partitions = partitions;
                Ok(())
            });
            Box::pin(async move { r })
        }

        fn set_policies(&self, name: &str, policies: TopicPolicies) -> BoxFuture<'_, AdminResult<()>> {
            let r = self.check().and_then(|_| {
                self.record(format!(
                    "policies {name} {:?} {:?}",
                    policies.retention_time_secs, policies.retention_bytes
                ));
                let mut t = self.topics.lock().unwrap();
                let topic = t.get_mut(name).ok_or(Self::refused(ErrorCode::TopicNotFound, name))?;
                topic.policies = policies;
                Ok(())
            });
            Box::pin(async move { r })
        }

        fn delete_topic(&self, name: &str, force: bool) -> BoxFuture<'_, AdminResult<()>> {
            let r = self.check().map(|_| {
                self.record(format!("delete {name} force={force}"));
                self.topics.lock().unwrap().remove(name);
            });
            Box::pin(async move { r })
        }

        fn create_subscription(
            &self,
            topic: &str,
            name: &str,
            sub_type: SubscriptionType,
            start: SubscriptionStart,
        ) -> BoxFuture<'_, AdminResult<bool>> {
            let r = self.check().and_then(|_| {
                let mut t = self.topics.lock().unwrap();
                let live = t.get_mut(topic).ok_or(Self::refused(ErrorCode::TopicNotFound, topic))?;
                if live.stats.subscriptions.iter().any(|s| s.name == name) {
                    return Ok(false);
                }
                self.record(format!("subscribe {topic} {name} {sub_type:?} {start:?}"));
                live.stats.subscriptions.push(SubscriptionStats {
                    name: name.to_string(),
                    r#type: format!("{sub_type:?}"),
                    ..Default::default()
                });
                Ok(true)
            });
            Box::pin(async move { r })
        }

        fn reset_subscription(&self, topic: &str, name: &str, to: ResetTo) -> BoxFuture<'_, AdminResult<()>> {
            let r = self
                .check()
                .map(|_| self.record(format!("reset {topic} {name} {to:?}")));
            Box::pin(async move { r })
        }

        fn delete_subscription(&self, topic: &str, name: &str) -> BoxFuture<'_, AdminResult<bool>> {
            let r = self.check().map(|_| {
                self.record(format!("unsubscribe {topic} {name}"));
                let mut t = self.topics.lock().unwrap();
                match t.get_mut(topic) {
                    Some(live) => {
                        let before = live.stats.subscriptions.len();
                        live.stats.subscriptions.retain(|s| s.name != name);
                        before != live.stats.subscriptions.len()
                    }
                    None => false,
                }
            });
            Box::pin(async move { r })
        }

        fn broker_loads(&self) -> BoxFuture<'_, AdminResult<Vec<f64>>> {
            let r = self.check().map(|_| self.loads.lock().unwrap().clone());
            Box::pin(async move { r })
        }

        fn decommission_bookie(&self, address: &str) -> BoxFuture<'_, AdminResult<BookieDrain>> {
            let r = self.check().map(|_| {
                self.record(format!("decommission {address}"));
                self.drains
                    .lock()
                    .unwrap()
                    .entry(address.to_string())
                    .or_insert_with(|| BookieDrain {
                        state: "draining".into(),
                        remaining_ledgers: 1,
                        registered: true,
                    })
                    .clone()
            });
            Box::pin(async move { r })
        }

        fn cancel_decommission(&self, address: &str) -> BoxFuture<'_, AdminResult<()>> {
            let r = self.check().map(|_| {
                self.record(format!("cancel {address}"));
                self.drains.lock().unwrap().remove(address);
            });
            Box::pin(async move { r })
        }

        fn decommission_status(&self, address: &str) -> BoxFuture<'_, AdminResult<BookieDrain>> {
            let r = self.check().map(|_| {
                self.drains
                    .lock()
                    .unwrap()
                    .get(address)
                    .cloned()
                    .unwrap_or(BookieDrain {
                        state: "none".into(),
                        ..Default::default()
                    })
            });
            Box::pin(async move { r })
        }
    }

    impl Connector for Arc<FakeCluster> {
        fn connect<'a>(
            &'a self,
            _url: &'a str,
            _access: &'a super::Access,
        ) -> BoxFuture<'a, AdminResult<Arc<dyn StrataAdmin>>> {
            let c = self.clone() as Arc<dyn StrataAdmin>;
            Box::pin(async move { Ok(c) })
        }
    }
}
