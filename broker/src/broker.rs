//! The broker: loads topics it owns, and keeps their subscriptions running.
//!
//! Ownership goes through the metadata store even with a single broker
//! (`/strata/v1/ownership/<tenant>/<ns>/<topic>`, an ephemeral key on the broker's
//! session), so cluster mode reuses the same path. Loading a topic = taking ownership, then
//! opening its managed ledger (which fences any previous owner's ledger).
//!
//! Namespaces must exist before topics are created in them (`public/default` is created by
//! standalone mode); topics are auto-created on first use unless `auto_create_topics` is off.

use crate::error::{BrokerError, Result};
use crate::managed_ledger::{ManagedLedger, ManagedLedgerConfig};
use crate::subscription::Subscription;
use crate::topic::Topic;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use strata_bookie::ledger::LedgerClient;
use strata_common::{SubscriptionName, TopicName};
use strata_meta::{Condition, MetaError, MetadataStore, Session, keys};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

/// Broker settings.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// gRPC URL clients are sent to for topics this broker owns.
    pub advertised_url: String,
    pub ledger: ManagedLedgerConfig,
    pub max_message_bytes: usize,
    /// Create topics on first produce or consume.
    pub auto_create_topics: bool,
    /// How often cursors are written to the metadata store.
    pub cursor_persist_interval: Duration,
    /// Acknowledged data is kept this long (`None`: forever) …
    pub retention_time: Option<Duration>,
    /// … and up to this many bytes per topic (`None`: unlimited). A closed ledger every
    /// subscription has acknowledged is deleted once it is outside either limit.
    pub retention_bytes: Option<u64>,
    /// How often retention is applied.
    pub retention_check_interval: Duration,
    /// TTL of the broker's metadata session: a broker that cannot renew it for this long
    /// loses its bundles, and other brokers may take them over.
    pub session_ttl: Duration,
    /// How often the broker refreshes its load report in the registry.
    pub load_report_interval: Duration,
    /// How often the leader looks for overloaded brokers and moves one bundle away.
    pub load_balance_interval: Duration,
    /// Bundles of a namespace created without a count.
    pub default_bundles: u32,
    /// What clients may open or hold per topic.
    pub client_limits: crate::topic::ClientLimits,
    /// Connections and streams of the client port.
    pub net_limits: NetLimits,
}

/// Bounds on the client port's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetLimits {
    /// Connections open at once; more are closed on accept.
    pub max_connections: usize,
    /// Concurrent streams (producers, consumers, calls) per connection.
    pub max_streams_per_connection: u32,
}

impl Default for NetLimits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_streams_per_connection: 1_000,
        }
    }
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            advertised_url: "http://127.0.0.1:6650".into(),
            ledger: ManagedLedgerConfig::default(),
            max_message_bytes: crate::topic::DEFAULT_MAX_MESSAGE_BYTES,
            auto_create_topics: true,
            cursor_persist_interval: Duration::from_millis(100),
            retention_time: Some(Duration::ZERO),
            retention_bytes: Some(0),
            retention_check_interval: Duration::from_secs(60),
            session_ttl: Duration::from_secs(10),
            load_report_interval: Duration::from_secs(5),
            load_balance_interval: Duration::from_secs(30),
            default_bundles: crate::bundles::DEFAULT_BUNDLES,
            client_limits: Default::default(),
            net_limits: Default::default(),
        }
    }
}

/// A running subscription and its dispatch task.
type RunningSubscription = (Arc<Subscription>, tokio::task::JoinHandle<Result<()>>);

/// Runs a subscription's delivery loop. A failed read (a bookie restarting, say) pauses
/// delivery, never ends it; losing the topic (fenced, closed) ends it.
fn spawn_delivery(topic: TopicName, s: Arc<Subscription>) -> tokio::task::JoinHandle<Result<()>> {
    tokio::spawn(async move {
        loop {
            match s.clone().run().await {
                Ok(()) => return Ok(()),
                Err(e @ (BrokerError::Fenced(..) | BrokerError::Closed(_))) => return Err(e),
                Err(e) => {
                    tracing::warn!(%topic, sub = %s.name(), error = %e, "delivery paused; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    })
}

/// A loaded topic and its running subscriptions.
pub struct LoadedTopic {
    pub topic: Arc<Topic>,
    subs: Mutex<HashMap<SubscriptionName, RunningSubscription>>,
    closed: CancellationToken,
}

impl LoadedTopic {
    fn new(topic: Topic) -> Self {
        Self {
            topic: Arc::new(topic),
            subs: Mutex::new(HashMap::new()),
            closed: CancellationToken::new(),
        }
    }

    /// Resolves once the topic is closed or abandoned on this broker (producer streams
    /// then end so their clients look the topic up again).
    pub fn closed(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.closed.cancelled()
    }

    /// A running subscription: opened (or created) and its dispatch loop started.
    pub async fn subscription(
        &self,
        name: &SubscriptionName,
        sub_type: crate::dispatch::SubType,
        initial: crate::subscription::InitialPosition,
    ) -> Result<Arc<Subscription>> {
        let mut subs = self.subs.lock().await;
        if let Some((s, _)) = subs.get(name) {
            if !s.is_durable().await {
                return Err(BrokerError::AlreadyExists(format!(
                    "a reader named {name} is open on {}; use another subscription name",
                    self.topic.name()
                )));
            }
            if s.sub_type().await != sub_type {
                return Err(BrokerError::SubscriptionTypeMismatch(format!(
                    "subscription {name} on {} is {}, not {}; use the same type or another subscription name",
                    self.topic.name(),
                    s.sub_type().await.name(),
                    sub_type.name()
                )));
            }
            return Ok(s.clone());
        }
        let store = self.topic.managed_ledger().store();
        let path = self.topic.name().path();
        if store
            .get(&strata_meta::keys::cursor(&path, name.as_str()))
            .await?
            .is_none()
        {
            self.check_subscription_limit(&subs).await?;
        }
        let s = Subscription::open(self.topic.clone(), name.clone(), sub_type, initial).await?;
        let runner = spawn_delivery(self.topic.name().clone(), s.clone());
        subs.insert(name.clone(), (s.clone(), runner));
        Ok(s)
    }

    /// A reader's non-durable subscription (see [`Subscription::open_non_durable`]),
    /// registered so that closing the topic ends it; remove it with
    /// [`LoadedTopic::remove_subscription`] when its consumer goes.
    pub async fn reader(
        &self,
        name: Option<SubscriptionName>,
        start: Option<strata_common::Position>,
        initial: crate::subscription::InitialPosition,
    ) -> Result<Arc<Subscription>> {
        let name = match name {
            Some(n) => n,
            None => SubscriptionName::new(&format!("reader-{:016x}", strata_bookie::ledger::random_u64()))
                .expect("valid generated name"),
        };
        let mut subs = self.subs.lock().await;
        let durable = self
            .topic
            .managed_ledger()
            .store()
            .get(&strata_meta::keys::cursor(&self.topic.name().path(), name.as_str()))
            .await?
            .is_some();
        if durable || subs.contains_key(&name) {
            return Err(BrokerError::AlreadyExists(format!(
                "subscription {name} on {} exists; readers need a name of their own (or none)",
                self.topic.name()
            )));
        }
        self.check_subscription_limit(&subs).await?;
        let s = Subscription::open_non_durable(self.topic.clone(), name.clone(), start, initial).await;
        let runner = spawn_delivery(self.topic.name().clone(), s.clone());
        subs.insert(name, (s.clone(), runner));
        Ok(s)
    }

    /// Refuses a new subscription (durable or reader) once the topic has
    /// `max_subscriptions` of them.
    async fn check_subscription_limit(&self, running: &HashMap<SubscriptionName, RunningSubscription>) -> Result<()> {
        let max = self.topic.client_limits().max_subscriptions;
        let mut names: std::collections::HashSet<String> = running.keys().map(|n| n.as_str().to_string()).collect();
        if names.len() < max {
            let stored = self
                .topic
                .managed_ledger()
                .store()
                .list(&strata_meta::keys::cursors_prefix(&self.topic.name().path()))
                .await?;
            names.extend(
                stored
                    .into_iter()
                    .map(|(k, _)| k.rsplit('/').next().unwrap_or(&k).to_string()),
            );
        }
        if names.len() >= max {
            return Err(BrokerError::LimitExceeded(format!(
                "{} already has {max} subscriptions (broker setting max_subscriptions_per_topic); delete unused ones with `strata admin subscriptions delete`",
                self.topic.name()
            )));
        }
        Ok(())
    }

    /// Deletes closed ledgers every durable subscription has acknowledged and that lie
    /// outside retention. Uses the cursors as persisted, so nothing unacknowledged (or
    /// acknowledged but not yet persisted) is ever deleted. A topic without subscriptions
    /// keeps its data. Returns the number of ledgers deleted.
    pub async fn apply_retention(&self, time: Option<Duration>, bytes: Option<u64>) -> Result<usize> {
        let ml = self.topic.managed_ledger();
        let store = ml.store();
        let cursors = store
            .list(&strata_meta::keys::cursors_prefix(&self.topic.name().path()))
            .await?;
        if cursors.is_empty() {
            return Ok(0);
        }
        let mut oldest: Option<(u64, u64)> = None;
        for (k, v) in cursors {
            let c: crate::cursor::CursorInfo =
                serde_json::from_slice(&v.value).map_err(|e| BrokerError::Corruption(format!("cursor {k}: {e}")))?;
            let Some(md) = c.mark_delete else { return Ok(0) };
            oldest = Some(oldest.map_or(md, |o| o.min(md)));
        }
        // A running subscription may be behind what it persisted (a seek back): the
        // older of the two counts.
        let running: Vec<Arc<Subscription>> = self.subs.lock().await.values().map(|(s, _)| s.clone()).collect();
        for s in running {
            if !s.is_durable().await {
                continue;
            }
            let Some(md) = s.mark_delete().await else { return Ok(0) };
            let md = (md.ledger.get(), md.entry.get());
            oldest = Some(oldest.map_or(md, |o| o.min(md)));
        }
        let Some((md_ledger, md_entry)) = oldest else {
            return Ok(0);
        };
        let ledgers = ml.ledgers().await;
        // Closed ledgers wholly acknowledged, oldest first, each with the time its last
        // entry was written at the latest (the next ledger's creation).
        let mut consumed = Vec::new();
        for (i, l) in ledgers.iter().enumerate() {
            let Some(next) = ledgers.get(i + 1) else { break };
            // A closed empty ledger holds nothing to consume (and positions skip it).
            let whole =
                l.entries == 0 || l.id < md_ledger || (l.id == md_ledger && md_entry.saturating_add(1) >= l.entries);
            if !whole {
                break;
            }
            consumed.push((l, next.created_ms, next.id));
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut kept_bytes: u64 = consumed.iter().map(|(l, ..)| l.bytes).sum();
        let mut trim_to = None;
        for (l, closed_ms, next_id) in consumed {
            let too_old = time.is_some_and(|t| now.saturating_sub(closed_ms) >= t.as_millis() as u64);
            let too_big = bytes.is_some_and(|b| kept_bytes > b);
            if !(too_old || too_big) {
                break;
            }
            kept_bytes -= l.bytes;
            trim_to = Some(next_id);
        }
        let Some(next_id) = trim_to else { return Ok(0) };
        let pos = strata_common::Position {
            ledger: strata_common::LedgerId::new(next_id).expect("stored ids are valid"),
            entry: strata_common::EntryId::new(0),
        };
        let n = ml.trim_before(pos).await?;
        if n > 0 {
            tracing::info!(topic = %self.topic.name(), ledgers = n, "retention deleted acknowledged ledgers");
        }
        Ok(n)
    }

    /// Names of running subscriptions with their consumer counts.
    pub async fn consumer_counts(&self) -> HashMap<String, u32> {
        let subs: Vec<Arc<Subscription>> = self.subs.lock().await.values().map(|(s, _)| s.clone()).collect();
        let mut out = HashMap::new();
        for s in subs {
            out.insert(s.name().to_string(), s.consumer_count().await as u32);
        }
        out
    }

    /// Every subscription of the topic as (name, backlog in entries, consumers): the
    /// persisted cursors, with a running subscription's (or reader's) position in memory
    /// over its persisted one. For `/metrics`.
    pub async fn subscription_backlogs(&self) -> Result<Vec<(String, u64, u32)>> {
        let ml = self.topic.managed_ledger();
        let counts = ml.ledger_counts().await;
        let mut out: std::collections::BTreeMap<String, (u64, u32)> = std::collections::BTreeMap::new();
        for (k, v) in ml
            .store()
            .list(&strata_meta::keys::cursors_prefix(&self.topic.name().path()))
            .await?
        {
            let c: crate::cursor::CursorInfo =
                serde_json::from_slice(&v.value).map_err(|e| BrokerError::Corruption(format!("cursor {k}: {e}")))?;
            let name = k.rsplit('/').next().unwrap_or(&k).to_string();
            out.insert(name, (crate::cursor::backlog_entries(&counts, c.mark_delete), 0));
        }
        let running: Vec<Arc<Subscription>> = self.subs.lock().await.values().map(|(s, _)| s.clone()).collect();
        for s in running {
            let md = s.mark_delete().await.map(|p| (p.ledger.get(), p.entry.get()));
            let consumers = s.consumer_count().await as u32;
            out.insert(
                s.name().to_string(),
                (crate::cursor::backlog_entries(&counts, md), consumers),
            );
        }
        Ok(out.into_iter().map(|(n, (b, c))| (n, b, c)).collect())
    }

    /// Stops a subscription with no consumers (before its cursor is deleted).
    pub async fn remove_subscription(&self, name: &SubscriptionName) -> Result<()> {
        let mut subs = self.subs.lock().await;
        if let Some((s, _)) = subs.get(name)
            && s.consumer_count().await > 0
        {
            return Err(BrokerError::NotEmpty(format!(
                "subscription {name} has connected consumers; disconnect them first"
            )));
        }
        if let Some((_, runner)) = subs.remove(name) {
            runner.abort();
        }
        Ok(())
    }

    /// Persists every subscription's cursor. `Err` means this broker no longer owns the
    /// topic (a write was refused by the ownership guard): stop serving it.
    pub async fn persist_cursors(&self) -> Result<()> {
        let subs: Vec<Arc<Subscription>> = self.subs.lock().await.values().map(|(s, _)| s.clone()).collect();
        let mut lost = Ok(());
        for s in subs {
            match s.persist().await {
                Ok(()) => {}
                Err(e @ BrokerError::Fenced(..)) => {
                    tracing::warn!(topic = %self.topic.name(), sub = %s.name(), error = %e, "cursor not persisted: the topic moved to another broker");
                    lost = Err(e);
                }
                Err(e) => {
                    tracing::warn!(topic = %self.topic.name(), sub = %s.name(), error = %e, "cursor not persisted");
                }
            }
        }
        lost
    }

    /// Stops dispatching, persists cursors and the deduplication state, and closes the
    /// ledger (unload, shutdown: the next owner finds everything in order).
    pub async fn close(&self) {
        self.closed.cancel();
        let _ = self.persist_cursors().await;
        for (_, (sub, runner)) in self.subs.lock().await.drain() {
            runner.abort();
            sub.disconnect_all().await;
        }
        let ml = self.topic.managed_ledger();
        if let Err(e) = ml.close().await {
            tracing::warn!(topic = %self.topic.name(), error = %e, "closing topic");
        }
        if let Err(e) = self.topic.dedup().persist(&ml.owned_store(), ml.last_confirmed()).await {
            tracing::warn!(topic = %self.topic.name(), error = %e, "deduplication state not persisted");
        }
    }

    /// Stops serving at once without writing any metadata: ownership was lost, and the
    /// new owner's recovery decides where the topic ends (fencing our ledger).
    pub async fn abandon(&self) {
        self.closed.cancel();
        self.topic.managed_ledger().abandon();
        for (_, (sub, runner)) in self.subs.lock().await.drain() {
            runner.abort();
            sub.disconnect_all().await;
        }
    }

    /// Producers and consumers connected, for load reports.
    pub async fn client_counts(&self) -> (u32, u32) {
        let consumers = self.consumer_counts().await.values().sum();
        (self.topic.producer_count(), consumers)
    }
}

/// A bundle this broker owns: the version of its ownership key, and whether it is being
/// released (no topic of it may load meanwhile).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Owned {
    pub(crate) version: u64,
    pub(crate) releasing: bool,
}

/// A topic being loaded or loaded; concurrent loads of one topic share the cell, loads of
/// different topics run in parallel.
type TopicCell = Arc<tokio::sync::OnceCell<Arc<LoadedTopic>>>;

/// The broker.
pub struct Broker {
    pub cfg: BrokerConfig,
    pub(crate) store: Arc<dyn MetadataStore>,
    client: LedgerClient,
    /// The current metadata session; replaced after a loss.
    session: std::sync::RwLock<Session>,
    topics: std::sync::Mutex<HashMap<TopicName, TopicCell>>,
    pub(crate) owned: std::sync::Mutex<HashMap<crate::bundles::Bundle, Owned>>,
    /// Serialises taking and releasing bundle ownership.
    pub(crate) ownership: Mutex<()>,
    draining: std::sync::atomic::AtomicBool,
    /// Registered with a live session (readiness).
    ready: std::sync::atomic::AtomicBool,
    pub metrics: crate::metrics::BrokerMetrics,
    /// Cancelled when the broker is closed: background tasks end.
    stopped: CancellationToken,
    /// Wakes the load reporter (ownership changed).
    pub(crate) report_now: tokio::sync::Notify,
    pub(crate) started_ms: u64,
}

impl Broker {
    /// Starts a broker: opens its metadata session, registers it (waiting for a previous
    /// registration of the same address to expire), and starts its background tasks
    /// (cursor and deduplication persistence, retention, load reports, session renewal,
    /// leader election and load balancing).
    pub async fn new(cfg: BrokerConfig, store: Arc<dyn MetadataStore>, client: LedgerClient) -> Result<Arc<Self>> {
        let session = store.session(cfg.session_ttl).await?;
        let broker = Arc::new(Self {
            cfg,
            store,
            client,
            session: std::sync::RwLock::new(session),
            topics: std::sync::Mutex::new(HashMap::new()),
            owned: std::sync::Mutex::new(HashMap::new()),
            ownership: Mutex::new(()),
            draining: std::sync::atomic::AtomicBool::new(false),
            ready: std::sync::atomic::AtomicBool::new(false),
            metrics: Default::default(),
            stopped: CancellationToken::new(),
            report_now: tokio::sync::Notify::new(),
            started_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        });
        let limits = broker.limits();
        if limits.max_message_bytes < broker.cfg.max_message_bytes {
            tracing::warn!(
                configured = broker.cfg.max_message_bytes,
                in_force = limits.max_message_bytes,
                bookie_max_entry_bytes = limits.max_entry_bytes,
                "max_message_bytes lowered to leave room for batch framing under what the bookies accept"
            );
        }
        broker.register().await?;
        broker.ready.store(true, std::sync::atomic::Ordering::Release);
        crate::ns_policies::spawn_watch(&broker);
        let weak = Arc::downgrade(&broker);
        broker.spawn_periodic(broker.cfg.cursor_persist_interval, move |t| {
            let weak = weak.clone();
            async move {
                if t.persist_cursors().await.is_err()
                    && let Some(b) = weak.upgrade()
                {
                    b.drop_lost_topic(t.topic.name()).await;
                }
            }
        });
        let weak = Arc::downgrade(&broker);
        broker.spawn_periodic(crate::dedup::SNAPSHOT_INTERVAL, move |t| {
            let weak = weak.clone();
            async move {
                let ml = t.topic.managed_ledger();
                match t.topic.dedup().persist(&ml.owned_store(), ml.last_confirmed()).await {
                    Ok(()) => {}
                    Err(BrokerError::Fenced(..)) => {
                        if let Some(b) = weak.upgrade() {
                            b.drop_lost_topic(t.topic.name()).await;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(topic = %t.topic.name(), error = %e, "deduplication state not persisted");
                    }
                }
            }
        });
        broker.spawn_periodic(Duration::from_secs(1), |t| async move {
            t.topic.managed_ledger().expire_cache();
        });
        let default = crate::policies::Retention {
            time: broker.cfg.retention_time,
            bytes: broker.cfg.retention_bytes,
        };
        broker.spawn_periodic(broker.cfg.retention_check_interval, move |t| async move {
            // The topic's own policies, read each round, so a change applies within one
            // interval on whichever broker owns the topic.
            let store = t.topic.managed_ledger().store();
            let result = match crate::policies::effective(&*store, t.topic.name()).await {
                Ok(p) => {
                    let r = p.retention(default);
                    t.apply_retention(r.time, r.bytes).await.map(|_| ())
                }
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                tracing::warn!(topic = %t.topic.name(), error = %e, "retention not applied");
            }
        });
        if let Some(off) = broker.offloader().cloned() {
            let default = off.settings().policy();
            broker.spawn_periodic(
                Duration::from_secs(off.settings().check_interval_secs),
                move |t| async move {
                    let ml = t.topic.managed_ledger().clone();
                    if !ml.offload_due() {
                        return;
                    }
                    match crate::policies::effective(&*ml.store(), t.topic.name()).await {
                        Ok(p) => ml.start_offload(p.offload(default)),
                        Err(e) => {
                            tracing::warn!(topic = %t.topic.name(), error = %e, "offload policies not read; offload skipped");
                        }
                    }
                },
            );
        }
        crate::cluster::spawn_tasks(&broker);
        Ok(broker)
    }

    /// Runs `f` on every loaded topic every `every`, until the broker stops.
    fn spawn_periodic<F, Fut>(self: &Arc<Self>, every: Duration, f: F)
    where
        F: Fn(Arc<LoadedTopic>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let weak = Arc::downgrade(self);
        let stopped = self.stopped.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stopped.cancelled() => return,
                }
                let Some(b) = weak.upgrade() else { return };
                let topics = b.loaded_topics();
                drop(b);
                for t in topics {
                    f(t).await;
                }
            }
        });
    }

    pub fn store(&self) -> &Arc<dyn MetadataStore> {
        &self.store
    }

    /// The batch size limits in force: `max_message_bytes`, lowered if needed to leave
    /// room for batch framing under what the bookies accept.
    pub fn limits(&self) -> crate::topic::Limits {
        crate::topic::Limits {
            clients: self.cfg.client_limits,
            ..crate::topic::Limits::new(self.cfg.max_message_bytes, self.client.max_entry_bytes() as usize)
        }
    }

    /// The client limits of `t`'s namespace: the brokers' settings with the namespace's
    /// policies applied.
    pub async fn limits_of_namespace(&self, t: &TopicName) -> Result<crate::topic::ClientLimits> {
        let p = crate::ns_policies::load(&*self.store, t.tenant(), t.namespace()).await?;
        Ok(p.apply(self.cfg.client_limits))
    }

    /// The client port's connection limits.
    pub fn net_limits(&self) -> NetLimits {
        self.cfg.net_limits
    }

    /// The current metadata session.
    pub(crate) fn session(&self) -> Session {
        self.session.read().expect("session lock").clone()
    }

    pub(crate) fn set_session(&self, s: Session) {
        *self.session.write().expect("session lock") = s;
    }

    pub(crate) fn stopped(&self) -> &CancellationToken {
        &self.stopped
    }

    /// This broker's address (`host:port`), its id in the registry.
    pub fn address(&self) -> &str {
        self.cfg
            .advertised_url
            .split_once("://")
            .map_or(self.cfg.advertised_url.as_str(), |(_, a)| a)
    }

    /// Shutting down: takes no new ownership.
    pub fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Registered with a live metadata session and not shutting down.
    pub fn is_ready(&self) -> bool {
        self.ready.load(std::sync::atomic::Ordering::Acquire) && !self.is_draining() && !self.session().is_lost()
    }

    pub(crate) fn set_ready(&self, ready: bool) {
        self.ready.store(ready, std::sync::atomic::Ordering::Release);
    }

    /// Every fully loaded topic.
    pub fn loaded_topics(&self) -> Vec<Arc<LoadedTopic>> {
        self.topics
            .lock()
            .expect("topics")
            .values()
            .filter_map(|c| c.get().cloned())
            .collect()
    }

    /// Creates a namespace (`tenant/ns`) and its tenant if needed; idempotent.
    pub async fn ensure_namespace(&self, tenant: &str, namespace: &str) -> Result<()> {
        for key in [keys::tenant(tenant), keys::namespace(tenant, namespace)] {
            match self.store.put(&key, Bytes::from_static(b"{}"), Condition::Absent).await {
                Ok(_) | Err(MetaError::BadVersion(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Refuses (LIMIT_EXCEEDED) to create `adding` more topics (partitions count one each)
    /// in `t`'s namespace when that would pass `max_topics_per_namespace`. Checked when
    /// topics are created, so creations racing each other may pass it by a few.
    pub async fn check_topic_room(&self, t: &TopicName, adding: u64) -> Result<()> {
        let max = self.limits_of_namespace(t).await?.max_topics_per_namespace;
        self.check_topic_room_within(t, adding, max).await
    }

    /// [`Self::check_topic_room`] against a known limit `max` (0: unlimited).
    async fn check_topic_room_within(&self, t: &TopicName, adding: u64, max: u64) -> Result<()> {
        if max == 0 {
            return Ok(());
        }
        let have = self
            .store
            .list(&keys::topics_prefix(t.tenant(), t.namespace()))
            .await?
            .len() as u64;
        if have + adding > max {
            return Err(BrokerError::LimitExceeded(format!(
                "namespace {}/{} has {have} topics (each partition counts), and {adding} more would pass \
                 the limit of {max} (the namespace's max_topics policy, or the broker setting \
                 max_topics_per_namespace)",
                t.tenant(),
                t.namespace()
            )));
        }
        Ok(())
    }

    async fn namespace_exists(&self, t: &TopicName) -> Result<bool> {
        Ok(self
            .store
            .get(&keys::namespace(t.tenant(), t.namespace()))
            .await?
            .is_some())
    }

    /// The partition count of a partitioned topic; 0 for any other name.
    pub async fn partitions(&self, t: &TopicName) -> Result<u32> {
        Ok(match self.store.get(&keys::partitioned(&t.path())).await? {
            Some(v) => std::str::from_utf8(&v.value)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| BrokerError::Corruption(format!("partition count of {t}")))?,
            None => 0,
        })
    }

    /// Whether the topic exists (has storage).
    pub async fn topic_exists(&self, t: &TopicName) -> Result<bool> {
        Ok(self.store.get(&keys::topic(&t.path())).await?.is_some())
    }

    /// The loaded topic, loading it and, if `create` and auto-creation is on, creating it.
    pub async fn topic(&self, name: &TopicName, create: bool) -> Result<Arc<LoadedTopic>> {
        self.load(name, create && self.cfg.auto_create_topics).await
    }

    /// Creates (or loads) a topic whatever the auto-creation setting (admin creation).
    pub async fn create_topic(&self, name: &TopicName) -> Result<Arc<LoadedTopic>> {
        self.load(name, true).await
    }

    async fn load(&self, name: &TopicName, create: bool) -> Result<Arc<LoadedTopic>> {
        let cell = self
            .topics
            .lock()
            .expect("topics")
            .entry(name.clone())
            .or_default()
            .clone();
        let r = cell.get_or_try_init(|| self.open_topic(name, create)).await.cloned();
        let current = {
            let mut topics = self.topics.lock().expect("topics");
            let current = topics.get(name).is_some_and(|c| Arc::ptr_eq(c, &cell));
            if r.is_err() && current {
                topics.remove(name);
            }
            current
        };
        let t = r?;
        if !current {
            // Unloaded while it loaded (its bundle was released or lost).
            t.close().await;
            return Err(BrokerError::NotOwner(name.to_string()));
        }
        Ok(t)
    }

    async fn open_topic(&self, name: &TopicName, create: bool) -> Result<Arc<LoadedTopic>> {
        let n = self.partitions(name).await?;
        if n > 0 {
            return Err(BrokerError::InvalidArgument(format!(
                "topic {name} is partitioned into {n} partitions; produce and consume it with the SDK or CLI \
                 (they route to its partitions), or use a partition {name}-partition-0 … -{}",
                n - 1
            )));
        }
        // The namespace's limits, read once: the topic count below and the topic's own.
        let clients = self.limits_of_namespace(name).await?;
        if !self.topic_exists(name).await? {
            if !create {
                return Err(BrokerError::TopicNotFound(name.to_string()));
            }
            // A partition exists only as part of its partitioned topic: auto-creating
            // `x-partition-0` first would leave its data inside a later `x`'s partition 0.
            if let Some((base, i)) = name.partition_of()
                && self.partitions(&base).await? <= i
            {
                return Err(BrokerError::InvalidArgument(format!(
                    "{name} is named as partition {i} of {base}, which is not a partitioned topic with more than {i} partitions; \
                     create it with `strata admin topics create {base} --partitions N`, or use a name without the -partition-N suffix"
                )));
            }
            if !self.namespace_exists(name).await? {
                return Err(BrokerError::NotFound(format!(
                    "namespace {}/{} does not exist; create it with `strata admin namespaces create {}/{}`",
                    name.tenant(),
                    name.namespace(),
                    name.tenant(),
                    name.namespace()
                )));
            }
            self.check_topic_room_within(name, 1, clients.max_topics_per_namespace)
                .await?;
        }
        // Own the topic's bundle (an ephemeral key on our session), then open the ledger:
        // recovery fences the previous owner's last ledger before we append.
        let bundle = self.ensure_owned(name).await?;
        // Every write of the topic's state is fenced by this ownership key's version.
        let guard = self
            .owned
            .lock()
            .expect("owned")
            .get(&bundle)
            .filter(|o| !o.releasing)
            .map(|o| strata_meta::Guard {
                key: bundle.owner_key(),
                version: o.version,
            })
            .ok_or_else(|| BrokerError::NotOwner(name.to_string()))?;
        let ml = ManagedLedger::open_owned(
            name.clone(),
            self.client.clone(),
            crate::owned_store::OwnedStore::new(self.store.clone(), Some(guard)),
            self.cfg.ledger.clone(),
        )
        .await?;
        let dedup = match crate::dedup::Dedup::load(&ml).await {
            Ok(d) => Arc::new(d),
            Err(e) => {
                ml.abandon();
                return Err(e);
            }
        };
        let limits = crate::topic::Limits {
            clients,
            ..self.limits()
        };
        let loaded = Arc::new(LoadedTopic::new(Topic::with_dedup(ml, limits, dedup)));
        if !self.owns(&bundle) {
            loaded.abandon().await;
            return Err(BrokerError::NotOwner(name.to_string()));
        }
        tracing::info!(topic = %name, bundle = %bundle.id(), "topic loaded");
        Ok(loaded)
    }

    /// The topic if this broker has it loaded.
    pub async fn loaded(&self, name: &TopicName) -> Option<Arc<LoadedTopic>> {
        let cell = self.topics.lock().expect("topics").get(name).cloned()?;
        cell.get().cloned()
    }

    /// Removes topics matching `pred` from the loaded set; returns the loaded ones.
    pub(crate) fn take_topics(&self, pred: impl Fn(&TopicName) -> bool) -> Vec<Arc<LoadedTopic>> {
        let mut topics = self.topics.lock().expect("topics");
        let names: Vec<TopicName> = topics.keys().filter(|n| pred(n)).cloned().collect();
        names
            .into_iter()
            .filter_map(|n| topics.remove(&n))
            .filter_map(|c| c.get().cloned())
            .collect()
    }

    /// Stops serving a topic whose ownership moved to another broker (a write of its
    /// state was refused by the ownership guard): abandoned, with no metadata writes.
    pub async fn drop_lost_topic(&self, name: &TopicName) {
        let taken = self.take_topics(|n| n == name);
        for t in &taken {
            tracing::warn!(topic = %name, "this broker no longer owns the topic; stopped serving it");
            t.abandon().await;
        }
    }

    /// Unloads a topic whose storage failed for good (see `ManagedLedger::is_failed`), so
    /// the next producer or consumer loads it afresh (recovering its last ledger).
    pub async fn unload_if_failed(&self, name: &TopicName) {
        let Some(t) = self.loaded(name).await else { return };
        if !t.topic.managed_ledger().is_failed().await {
            return;
        }
        tracing::warn!(topic = %name, "storage failed; unloading the topic so clients reload it");
        self.unload(name).await;
    }

    /// Closes a topic (unload); clients look it up again and this broker, still owning
    /// its bundle, loads it afresh. Returns whether it was loaded.
    pub async fn unload(&self, name: &TopicName) -> bool {
        let taken = self.take_topics(|n| n == name);
        for t in &taken {
            t.close().await;
        }
        !taken.is_empty()
    }

    /// Where closed ledgers are offloaded (`None`: no `[offload]` url configured).
    pub fn offloader(&self) -> Option<&Arc<crate::offload::Offloader>> {
        self.cfg.ledger.offload.as_ref()
    }

    /// The offload policy of topic `t`: its policies over the broker's defaults.
    pub async fn offload_policy(&self, t: &TopicName) -> Result<Option<crate::offload::OffloadPolicy>> {
        let Some(off) = self.offloader() else { return Ok(None) };
        let p = crate::policies::effective(&**self.store(), t).await?;
        Ok(Some(p.offload(off.settings().policy())))
    }

    pub fn ledger_client(&self) -> &LedgerClient {
        &self.client
    }

    /// Graceful shutdown: stops taking ownership, leaves the registry (so lookups send
    /// clients elsewhere), hands every bundle over (closing its topics cleanly and
    /// releasing its key), then ends the session.
    pub async fn close(&self) {
        self.draining.store(true, std::sync::atomic::Ordering::Release);
        let _ = self.store.delete(&keys::broker(self.address()), Condition::Any).await;
        crate::cluster::release_all(self).await;
        // Topics loaded outside any owned bundle (none normally).
        for t in self.take_topics(|_| true) {
            t.close().await;
        }
        self.stopped.cancel();
        self.session().close();
    }
}
