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
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            advertised_url: "http://127.0.0.1:6650".into(),
            ledger: ManagedLedgerConfig::default(),
            max_message_bytes: crate::topic::DEFAULT_MAX_MESSAGE_BYTES,
            auto_create_topics: true,
            cursor_persist_interval: Duration::from_millis(100),
        }
    }
}

/// A running subscription and its dispatch task.
type RunningSubscription = (Arc<Subscription>, tokio::task::JoinHandle<Result<()>>);

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
        let runner = {
            let s = s.clone();
            let topic = self.topic.name().clone();
            tokio::spawn(async move {
                // A failed read (a bookie restarting, say) pauses delivery, never ends it;
                // losing the topic (fenced, closed) ends it.
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
        };
        subs.insert(name.clone(), (s.clone(), runner));
        Ok(s)
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

    /// Whether the topic exists (has storage).
    pub async fn topic_exists(&self, t: &TopicName) -> Result<bool> {
        Ok(self.store.get(&keys::topic(&t.path())).await?.is_some())
    }

    /// The loaded topic, loading (and, if allowed, creating) it.
    pub async fn topic(&self, name: &TopicName, create: bool) -> Result<Arc<LoadedTopic>> {
        let mut topics = self.topics.lock().await;
        if let Some(t) = topics.get(name) {
            return Ok(t.clone());
        }
        if let Some(v) = self.store.get(&keys::partitioned(&name.path())).await? {
            let n = String::from_utf8_lossy(&v.value).to_string();
            return Err(BrokerError::InvalidArgument(format!(
                "topic {name} is partitioned into {n} partitions; use its partitions {name}-partition-0 … -{}",
                n.parse::<u32>().unwrap_or(1).saturating_sub(1)
            )));
        }
        if !self.topic_exists(name).await? {
            if !(create && self.cfg.auto_create_topics) {
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
