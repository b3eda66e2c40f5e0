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
}

impl LoadedTopic {
    /// A running subscription: opened (or created) and its dispatch loop started.
    pub async fn subscription(
        &self,
        name: &SubscriptionName,
        sub_type: crate::dispatch::SubType,
        initial: crate::subscription::InitialPosition,
    ) -> Result<Arc<Subscription>> {
        let mut subs = self.subs.lock().await;
        if let Some((s, _)) = subs.get(name) {
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
        if subs.contains_key(&name) {
            return Err(BrokerError::AlreadyExists(format!(
                "subscription {name} on {} is open; readers need a name of their own (or none)",
                self.topic.name()
            )));
        }
        let s = Subscription::open_non_durable(self.topic.clone(), name.clone(), start, initial).await;
        let runner = spawn_delivery(self.topic.name().clone(), s.clone());
        subs.insert(name, (s.clone(), runner));
        Ok(s)
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
        let current = ml.last_confirmed().map(|p| p.ledger.get());
        // Closed ledgers wholly acknowledged, oldest first, each with the time its last
        // entry was written at the latest (the next ledger's creation).
        let mut consumed = Vec::new();
        for (i, l) in ledgers.iter().enumerate() {
            let Some(next) = ledgers.get(i + 1) else { break };
            let whole = l.id < md_ledger || (l.id == md_ledger && l.entries > 0 && md_entry + 1 >= l.entries);
            if !whole || Some(l.id) == current {
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

    /// Persists every subscription's cursor.
    pub async fn persist_cursors(&self) {
        let subs: Vec<Arc<Subscription>> = self.subs.lock().await.values().map(|(s, _)| s.clone()).collect();
        for s in subs {
            if let Err(e) = s.persist().await {
                tracing::warn!(topic = %self.topic.name(), sub = %s.name(), error = %e, "cursor not persisted");
            }
        }
    }

    /// Stops dispatching, persists cursors and closes the ledger.
    pub async fn close(&self) {
        self.persist_cursors().await;
        for (_, (sub, runner)) in self.subs.lock().await.drain() {
            runner.abort();
            sub.disconnect_all().await;
        }
        if let Err(e) = self.topic.managed_ledger().close().await {
            tracing::warn!(topic = %self.topic.name(), error = %e, "closing topic");
        }
    }
}

/// The broker.
pub struct Broker {
    pub cfg: BrokerConfig,
    store: Arc<dyn MetadataStore>,
    client: LedgerClient,
    session: Session,
    topics: Mutex<HashMap<TopicName, Arc<LoadedTopic>>>,
}

impl Broker {
    pub async fn new(cfg: BrokerConfig, store: Arc<dyn MetadataStore>, client: LedgerClient) -> Result<Arc<Self>> {
        let session = store.session(Duration::from_secs(10)).await?;
        let broker = Arc::new(Self {
            cfg,
            store,
            client,
            session,
            topics: Mutex::new(HashMap::new()),
        });
        let weak = Arc::downgrade(&broker);
        tokio::spawn(async move {
            loop {
                let Some(b) = weak.upgrade() else { return };
                let every = b.cfg.cursor_persist_interval;
                let topics: Vec<Arc<LoadedTopic>> = b.topics.lock().await.values().cloned().collect();
                drop(b);
                for t in topics {
                    t.persist_cursors().await;
                }
                tokio::time::sleep(every).await;
            }
        });
        let weak = Arc::downgrade(&broker);
        tokio::spawn(async move {
            loop {
                let Some(b) = weak.upgrade() else { return };
                let (every, time, bytes) = (
                    b.cfg.retention_check_interval,
                    b.cfg.retention_time,
                    b.cfg.retention_bytes,
                );
                let topics: Vec<Arc<LoadedTopic>> = b.topics.lock().await.values().cloned().collect();
                drop(b);
                for t in topics {
                    if let Err(e) = t.apply_retention(time, bytes).await {
                        tracing::warn!(topic = %t.topic.name(), error = %e, "retention not applied");
                    }
                }
                tokio::time::sleep(every).await;
            }
        });
        Ok(broker)
    }

    pub fn store(&self) -> &Arc<dyn MetadataStore> {
        &self.store
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
        let mut topics = self.topics.lock().await;
        if let Some(t) = topics.get(name) {
            return Ok(t.clone());
        }
        let n = self.partitions(name).await?;
        if n > 0 {
            return Err(BrokerError::InvalidArgument(format!(
                "topic {name} is partitioned into {n} partitions; produce and consume it with the SDK or CLI \
                 (they route to its partitions), or use a partition {name}-partition-0 … -{}",
                n - 1
            )));
        }
        if !self.topic_exists(name).await? {
            if !create {
                return Err(BrokerError::TopicNotFound(name.to_string()));
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
        }
        // Take ownership (an ephemeral key on our session), then open the ledger.
        let owner_key = keys::ownership(&name.path());
        let value = Bytes::from(self.cfg.advertised_url.clone());
        match self
            .store
            .put_ephemeral(&self.session, &owner_key, value.clone(), Condition::Absent)
            .await
        {
            Ok(_) => {}
            Err(MetaError::BadVersion(_)) => {
                let holder = self.store.get(&owner_key).await?;
                if holder.as_ref().map(|v| &v.value) != Some(&value) {
                    return Err(BrokerError::NotOwner(name.to_string()));
                }
            }
            Err(e) => return Err(e.into()),
        }
        let ml = ManagedLedger::open(
            name.clone(),
            self.client.clone(),
            self.store.clone(),
            self.cfg.ledger.clone(),
        )
        .await?;
        let loaded = Arc::new(LoadedTopic {
            topic: Arc::new(Topic::new(ml, self.cfg.max_message_bytes)),
            subs: Mutex::new(HashMap::new()),
        });
        topics.insert(name.clone(), loaded.clone());
        tracing::info!(topic = %name, "topic loaded");
        Ok(loaded)
    }

    /// The topic if this broker has it loaded.
    pub async fn loaded(&self, name: &TopicName) -> Option<Arc<LoadedTopic>> {
        self.topics.lock().await.get(name).cloned()
    }

    /// Unloads a topic whose storage failed for good (see `ManagedLedger::is_failed`), so
    /// the next producer or consumer loads it afresh (recovering its last ledger). A topic
    /// taken over by another broker is only dropped here: its ownership key is theirs.
    pub async fn unload_if_failed(&self, name: &TopicName) {
        let Some(t) = self.loaded(name).await else { return };
        if !t.topic.managed_ledger().is_failed().await {
            return;
        }
        tracing::warn!(topic = %name, "storage failed; unloading the topic so clients reload it");
        let taken_over = match self.store.get(&keys::ownership(&name.path())).await {
            Ok(Some(v)) => v.value != self.cfg.advertised_url.as_bytes(),
            _ => false,
        };
        if taken_over {
            let dropped = self.topics.lock().await.remove(name);
            if let Some(t) = dropped {
                t.close().await;
            }
        } else {
            self.unload(name).await;
        }
    }

    /// Closes a topic and releases its ownership (unload).
    pub async fn unload(&self, name: &TopicName) -> bool {
        let t = self.topics.lock().await.remove(name);
        if let Some(t) = &t {
            t.close().await;
            let _ = self.store.delete(&keys::ownership(&name.path()), Condition::Any).await;
        }
        t.is_some()
    }

    pub fn ledger_client(&self) -> &LedgerClient {
        &self.client
    }

    /// Closes every topic and releases ownership (graceful shutdown).
    pub async fn close(&self) {
        let topics: Vec<(TopicName, Arc<LoadedTopic>)> = self.topics.lock().await.drain().collect();
        for (name, t) in topics {
            t.close().await;
            let _ = self.store.delete(&keys::ownership(&name.path()), Condition::Any).await;
        }
        self.session.close();
    }
}
