//! Cluster membership and ownership: the broker registry with load reports, bundle
//! ownership, lookup with load-aware assignment, losing and renewing the metadata session,
//! leader election and load shedding.
//!
//! - **Registry**: each broker keeps `/strata/v1/brokers/<address>` ([`BrokerInfo`], with
//!   its [`LoadReport`]) on its session, refreshed every `load_report_interval` and at
//!   once when its bundles change. A broker shutting down deletes it first.
//! - **Ownership**: a bundle is owned through `/strata/v1/ownership/<t>/<ns>/<range>`
//!   ([`BundleOwner`]), created only if absent, on the owner's session. A broker serves a
//!   topic only while it owns the topic's bundle; the new owner of a topic recovers
//!   (fences) its last ledger before appending, so an old owner that has not noticed yet
//!   cannot append another entry.
//! - **Lookup** returns the owner; an unowned bundle is given to the registered broker
//!   owning the fewest bundles (ties broken at random), which takes ownership when the
//!   client arrives (or at once if it is the broker answering).
//! - **Session loss**: every topic is abandoned at once (no metadata writes; the next
//!   owner recovers), then a new session is opened and the broker registers again.
//! - **Leader**: one broker holds `/strata/v1/leader`; every `load_balance_interval` it
//!   asks the broker owning the most bundles to unload one when it owns at least two more
//!   than the least loaded broker. Clients of the unloaded bundle look it up again, which
//!   assigns it to the least loaded broker — so a new broker fills up without manual steps.

use crate::broker::{Broker, Owned};
use crate::bundles::{self, Bundle, BundleLayout};
use crate::error::{BrokerError, Result};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use strata_common::TopicName;
use strata_meta::{Condition, MetaError, keys};
use strata_proto::v1 as pb;

/// The value of a bundle's ownership key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleOwner {
    /// The owner's address (`host:port`), its registry id.
    pub broker: String,
    /// The URL clients connect to.
    pub url: String,
    /// The owner's session, so a restarted broker does not mistake an old key for its own.
    pub session: u64,
}

/// What a broker carries, published in its registration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    pub bundles: u32,
    pub topics: u32,
    pub producers: u32,
    pub consumers: u32,
    pub msg_rate_in: f64,
    pub msg_rate_out: f64,
    pub bytes_rate_in: f64,
    pub bytes_rate_out: f64,
}

/// A broker's registration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BrokerInfo {
    pub address: String,
    pub url: String,
    pub session: u64,
    pub started_ms: u64,
    pub version: String,
    pub load: LoadReport,
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, key: &str, v: &[u8]) -> Result<T> {
    serde_json::from_slice(v).map_err(|e| BrokerError::Corruption(format!("{what} {key}: {e}")))
}

fn encode<T: Serialize>(v: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(v).expect("serializable"))
}

impl Broker {
    fn info(&self, session: u64, load: LoadReport) -> BrokerInfo {
        BrokerInfo {
            address: self.address().to_string(),
            url: self.cfg.advertised_url.clone(),
            session,
            started_ms: self.started_ms,
            version: env!("CARGO_PKG_VERSION").to_string(),
            load,
        }
    }

    /// Registers this broker. A registration of the same address from an earlier process
    /// (killed before its session expired) is waited out, up to twice the session TTL;
    /// a live broker with the same address is an error.
    pub(crate) async fn register(&self) -> Result<()> {
        let key = keys::broker(self.address());
        let deadline = Instant::now() + self.cfg.session_ttl * 2 + Duration::from_secs(2);
        let mut logged = false;
        loop {
            let session = self.session();
            let info = self.info(session.id(), self.load_report().await);
            match self.store.get(&key).await? {
                Some(v) if decode::<BrokerInfo>("broker", &key, &v.value)?.session != session.id() => {
                    if Instant::now() > deadline {
                        return Err(BrokerError::InvalidArgument(format!(
                            "another broker is registered as {} and stays alive; give each broker its own \
                             --advertised-address",
                            self.address()
                        )));
                    }
                    if !logged {
                        tracing::info!(address = %self.address(), "waiting for an earlier registration of this address to expire");
                        logged = true;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                found => {
                    let cond = if found.is_some() {
                        Condition::Any
                    } else {
                        Condition::Absent
                    };
                    match self.store.put_ephemeral(&session, &key, encode(&info), cond).await {
                        Ok(_) => return Ok(()),
                        Err(MetaError::BadVersion(_)) => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
    }

    /// The current load of this broker.
    pub async fn load_report(&self) -> LoadReport {
        let topics = self.loaded_topics();
        let (mut producers, mut consumers) = (0, 0);
        for t in &topics {
            let (p, c) = t.client_counts().await;
            producers += p;
            consumers += c;
        }
        let rates = self.metrics.rates();
        LoadReport {
            bundles: self.owned.lock().expect("owned").len() as u32,
            topics: topics.len() as u32,
            producers,
            consumers,
            msg_rate_in: rates.msg_in,
            msg_rate_out: rates.msg_out,
            bytes_rate_in: rates.bytes_in,
            bytes_rate_out: rates.bytes_out,
        }
    }

    /// Whether this broker owns `bundle` (and is not releasing it).
    pub fn owns(&self, bundle: &Bundle) -> bool {
        self.owned
            .lock()
            .expect("owned")
            .get(bundle)
            .is_some_and(|o| !o.releasing)
    }

    /// The bundles this broker owns.
    pub fn owned_bundles(&self) -> Vec<Bundle> {
        let mut v: Vec<Bundle> = self.owned.lock().expect("owned").keys().cloned().collect();
        v.sort();
        v
    }

    /// A namespace's current bundle layout (read from the store).
    pub async fn layout(&self, tenant: &str, namespace: &str) -> Result<BundleLayout> {
        Ok(bundles::load_layout(&*self.store, tenant, namespace).await?.0)
    }

    /// The bundle `topic` belongs to under its namespace's current layout.
    pub async fn bundle_of(&self, topic: &TopicName) -> Result<Bundle> {
        Ok(bundles::bundle_of(
            &self.layout(topic.tenant(), topic.namespace()).await?,
            topic,
        ))
    }

    /// Owns the bundle of `topic` (taking it if nobody owns it); returns the bundle.
    pub async fn ensure_owned(&self, topic: &TopicName) -> Result<Bundle> {
        let bundle = self.bundle_of(topic).await?;
        self.own(&bundle).await.map_err(|e| match e {
            BrokerError::NotOwner(who) => BrokerError::NotOwner(format!("{topic} ({who})")),
            e => e,
        })?;
        Ok(bundle)
    }

    /// Owns `bundle`, taking it if nobody owns it.
    async fn own(&self, bundle: &Bundle) -> Result<()> {
        if self.owns(bundle) {
            return Ok(());
        }
        let _g = self.ownership.lock().await;
        self.acquire(bundle).await
    }

    /// Takes `bundle` if nobody owns it. Call with the ownership lock held.
    async fn acquire(&self, bundle: &Bundle) -> Result<()> {
        match self.owned.lock().expect("owned").get(bundle) {
            Some(o) if !o.releasing => return Ok(()),
            Some(_) => {
                return Err(BrokerError::NotOwner(format!(
                    "bundle {} is being unloaded",
                    bundle.id()
                )));
            }
            None => {}
        }
        if self.is_draining() {
            return Err(BrokerError::NotOwner(format!(
                "broker {} is shutting down and takes no bundles",
                self.address()
            )));
        }
        let session = self.session();
        if session.is_lost() {
            return Err(BrokerError::Unavailable(
                "this broker lost its metadata session and is renewing it".into(),
            ));
        }
        let key = bundle.owner_key();
        let me = BundleOwner {
            broker: self.address().to_string(),
            url: self.cfg.advertised_url.clone(),
            session: session.id(),
        };
        let version = match self
            .store
            .put_ephemeral(&session, &key, encode(&me), Condition::Absent)
            .await
        {
            Ok(v) => v,
            Err(MetaError::BadVersion(_)) => match self.store.get(&key).await? {
                Some(v) if decode::<BundleOwner>("bundle owner", &key, &v.value)? == me => v.version,
                Some(v) => {
                    let o: BundleOwner = decode("bundle owner", &key, &v.value)?;
                    return Err(BrokerError::NotOwner(format!(
                        "bundle {} is owned by {}",
                        bundle.id(),
                        o.broker
                    )));
                }
                None => {
                    return Err(BrokerError::NotOwner(format!(
                        "bundle {} changed hands; look it up again",
                        bundle.id()
                    )));
                }
            },
            Err(e) => return Err(e.into()),
        };
        // A split may have replaced the bundle meanwhile: then give it back.
        let layout = self.layout(&bundle.tenant, &bundle.namespace).await?;
        if !layout.ranges().any(|r| r == bundle.range) {
            let _ = self.store.delete(&key, Condition::Version(version)).await;
            return Err(BrokerError::NotOwner(format!("bundle {} was split", bundle.id())));
        }
        self.owned.lock().expect("owned").insert(
            bundle.clone(),
            Owned {
                version,
                releasing: false,
            },
        );
        tracing::info!(bundle = %bundle.id(), "bundle owned");
        self.report_now.notify_one();
        Ok(())
    }

    /// Hands `bundle` over: closes its topics cleanly (cursors, deduplication state and
    /// ledgers persisted), then deletes its ownership key. Returns whether it was owned.
    ///
    /// The ownership lock is held only to mark the bundle releasing and, afterwards, to
    /// forget it — not while its topics close (which waits for bookies, up to
    /// `managed_ledger::CLOSE_TIMEOUT`), so a lost session is acted on meanwhile.
    pub async fn release_bundle(&self, bundle: &Bundle) -> Result<bool> {
        let Some((version, topics)) = self.start_release(bundle).await else {
            return Ok(false);
        };
        futures_util::future::join_all(topics.iter().map(|t| t.close())).await;
        self.finish_release(bundle, version, topics.len()).await
    }

    /// Marks `bundle` releasing (no topic of it loads any more) and takes its topics.
    async fn start_release(&self, bundle: &Bundle) -> Option<(u64, Vec<Arc<crate::broker::LoadedTopic>>)> {
        let _g = self.ownership.lock().await;
        let version = match self.owned.lock().expect("owned").get_mut(bundle) {
            Some(o) => {
                o.releasing = true;
                o.version
            }
            None => return None,
        };
        Some((version, self.take_topics(|n| bundle.holds(n))))
    }

    /// Forgets `bundle` (owned at `version`) and deletes its ownership key — unless the
    /// session was lost meanwhile (the key is gone, or is a new one of a new session).
    async fn finish_release(&self, bundle: &Bundle, version: u64, topics: usize) -> Result<bool> {
        let _g = self.ownership.lock().await;
        {
            let mut owned = self.owned.lock().expect("owned");
            if owned.get(bundle).is_some_and(|o| o.version == version) {
                owned.remove(bundle);
            }
        }
        let r = self
            .store
            .delete(&bundle.owner_key(), Condition::Version(version))
            .await;
        tracing::info!(bundle = %bundle.id(), topics, "bundle released");
        self.report_now.notify_one();
        match r {
            Ok(_) | Err(MetaError::BadVersion(_)) => Ok(true),
            Err(e) => Err(e.into()),
        }
    }

    /// Splits `bundle` into two halves. Done by its owner (taking it first if nobody
    /// owns it): its topics are closed, the layout is changed, the bundle is released,
    /// and clients look the topics up again.
    pub async fn split_bundle_locally(&self, bundle: &Bundle) -> Result<()> {
        {
            let _g = self.ownership.lock().await;
            self.acquire(bundle).await?;
        }
        let (layout, version) = bundles::load_layout(&*self.store, &bundle.tenant, &bundle.namespace).await?;
        let split = layout.split(bundle.range)?;
        let Some((owned_version, topics)) = self.start_release(bundle).await else {
            return Err(BrokerError::NotOwner(format!(
                "bundle {} changed hands; retry",
                bundle.id()
            )));
        };
        futures_util::future::join_all(topics.iter().map(|t| t.close())).await;
        let stored = bundles::store_layout(&*self.store, &bundle.tenant, &bundle.namespace, &split, version).await;
        self.finish_release(bundle, owned_version, topics.len()).await?;
        stored?;
        tracing::info!(bundle = %bundle.id(), "bundle split");
        Ok(())
    }

    /// Who owns `bundle`, if anyone.
    pub async fn owner_of(&self, bundle: &Bundle) -> Result<Option<BundleOwner>> {
        let key = bundle.owner_key();
        match self.store.get(&key).await? {
            Some(v) => Ok(Some(decode("bundle owner", &key, &v.value)?)),
            None => Ok(None),
        }
    }

    /// The URL of the broker serving `topic`, assigning its bundle if nobody owns it.
    pub async fn lookup(&self, topic: &TopicName) -> Result<String> {
        let bundle = self.bundle_of(topic).await?;
        if let Some(o) = self.owner_of(&bundle).await?
            && !(o.broker == self.address() && self.is_draining())
        {
            return Ok(o.url);
        }
        let candidate = self.choose_broker().await?;
        if candidate.address != self.address() {
            return Ok(candidate.url);
        }
        match self.own(&bundle).await {
            Ok(()) => Ok(self.cfg.advertised_url.clone()),
            Err(BrokerError::NotOwner(_)) => match self.owner_of(&bundle).await? {
                Some(o) => Ok(o.url),
                None => Err(BrokerError::Unavailable(format!(
                    "the bundle of {topic} is changing hands; retry"
                ))),
            },
            Err(e) => Err(e),
        }
    }

    /// Registered brokers, by address.
    pub async fn brokers(&self) -> Result<Vec<BrokerInfo>> {
        let mut out = Vec::new();
        for (k, v) in self.store.list(&keys::brokers_prefix()).await? {
            out.push(decode("broker", &k, &v.value)?);
        }
        Ok(out)
    }

    /// Every owned bundle with its owner.
    pub async fn owners(&self) -> Result<Vec<(Bundle, BundleOwner)>> {
        let prefix = keys::ownership_prefix();
        let mut out = Vec::new();
        for (k, v) in self.store.list(&prefix).await? {
            let bundle = Bundle::parse(&k[prefix.len()..])?;
            out.push((bundle, decode("bundle owner", &k, &v.value)?));
        }
        Ok(out)
    }

    /// The leader's address, if one is elected.
    pub async fn leader(&self) -> Result<Option<String>> {
        Ok(self.store.get(&keys::leader()).await?.map(|v| leader_address(&v.value)))
    }

    /// The registered broker owning the fewest bundles (ties at random); never a broker
    /// that is shutting down.
    async fn choose_broker(&self) -> Result<BrokerInfo> {
        let brokers: Vec<BrokerInfo> = self
            .brokers()
            .await?
            .into_iter()
            .filter(|b| !(b.address == self.address() && self.is_draining()))
            .collect();
        if brokers.is_empty() {
            return Err(BrokerError::Unavailable(
                "no broker is registered to own the topic; are brokers running?".into(),
            ));
        }
        let counts = bundle_counts(&brokers, &self.owners().await?);
        let min = brokers.iter().map(|b| counts[&b.address]).min().expect("non-empty");
        let least: Vec<&BrokerInfo> = brokers.iter().filter(|b| counts[&b.address] == min).collect();
        let pick = least[(strata_bookie::ledger::random_u64() % least.len() as u64) as usize];
        Ok(pick.clone())
    }

    /// One round of load shedding (leader only): if the busiest broker owns at least two
    /// bundles more than the least busy, it unloads one. Returns the bundle moved.
    pub async fn balance_once(&self) -> Result<Option<Bundle>> {
        let brokers = self.brokers().await?;
        if brokers.len() < 2 {
            return Ok(None);
        }
        let owners = self.owners().await?;
        let counts = bundle_counts(&brokers, &owners);
        let busiest = brokers
            .iter()
            .max_by_key(|b| (counts[&b.address], &b.address))
            .expect("non-empty");
        let idlest = brokers
            .iter()
            .min_by_key(|b| (counts[&b.address], &b.address))
            .expect("non-empty");
        if counts[&busiest.address] < counts[&idlest.address] + 2 {
            return Ok(None);
        }
        // The bundle with the fewest topics moves (least disruption).
        let mut theirs: Vec<&Bundle> = owners
            .iter()
            .filter(|(_, o)| o.broker == busiest.address)
            .map(|(b, _)| b)
            .collect();
        theirs.sort();
        let Some(bundle) = theirs.first().map(|b| (*b).clone()) else {
            return Ok(None);
        };
        tracing::info!(bundle = %bundle.id(), from = %busiest.address, to = %idlest.address,
            "load balancing: unloading a bundle from the busiest broker");
        if busiest.address == self.address() {
            self.release_bundle(&bundle).await?;
        } else {
            unload_remote(&busiest.url, &bundle).await?;
        }
        Ok(Some(bundle))
    }
}

/// Bundles owned per registered broker (0 for brokers owning none).
fn bundle_counts(brokers: &[BrokerInfo], owners: &[(Bundle, BundleOwner)]) -> HashMap<String, usize> {
    let mut counts: HashMap<String, usize> = brokers.iter().map(|b| (b.address.clone(), 0)).collect();
    for (_, o) in owners {
        if let Some(c) = counts.get_mut(&o.broker) {
            *c += 1;
        }
    }
    counts
}

fn leader_address(v: &[u8]) -> String {
    let s = String::from_utf8_lossy(v);
    s.split_whitespace().next().unwrap_or_default().to_string()
}

/// Asks the broker at `url` to unload `bundle` (Admin.UnloadBundle).
pub async fn unload_remote(url: &str, bundle: &Bundle) -> Result<()> {
    let mut c = admin_client(url).await?;
    c.unload_bundle(bundle_request(bundle))
        .await
        .map_err(|s| BrokerError::Unavailable(format!("unloading {} on {url}: {}", bundle.id(), s.message())))?;
    Ok(())
}

/// Asks the broker at `url` to split `bundle` (Admin.SplitBundle).
pub async fn split_remote(url: &str, bundle: &Bundle) -> Result<()> {
    let mut c = admin_client(url).await?;
    c.split_bundle(bundle_request(bundle))
        .await
        .map_err(|s| BrokerError::Unavailable(format!("splitting {} on {url}: {}", bundle.id(), s.message())))?;
    Ok(())
}

fn bundle_request(b: &Bundle) -> pb::BundleRequest {
    pb::BundleRequest {
        namespace: format!("{}/{}", b.tenant, b.namespace),
        bundle: b.range.name(),
    }
}

/// An admin client of the broker at `url` (5 s to connect, 30 s per call).
/// An admin client of another broker, sending this node's token (if any).
pub(crate) type PeerAdmin = pb::admin_client::AdminClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, strata_net::auth::TokenInterceptor>,
>;

pub(crate) async fn admin_client(url: &str) -> Result<PeerAdmin> {
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_string())
        .map_err(|e| BrokerError::InvalidArgument(format!("broker URL {url:?}: {e}")))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30));
    let out = strata_net::client::outgoing();
    let channel = strata_net::client::connect(endpoint, Some(&out.tls))
        .await
        .map_err(|e| BrokerError::Unavailable(format!("cannot reach broker {url}: {e}")))?;
    let token = strata_net::auth::TokenInterceptor::new(out.token.as_deref()).map_err(BrokerError::InvalidArgument)?;
    Ok(pb::admin_client::AdminClient::with_interceptor(channel, token))
}

/// Releases every owned bundle (graceful shutdown).
pub(crate) async fn release_all(b: &Broker) {
    for bundle in b.owned_bundles() {
        if let Err(e) = b.release_bundle(&bundle).await {
            tracing::warn!(bundle = %bundle.id(), error = %e, "bundle not released cleanly; it frees when the session ends");
        }
    }
}

/// Abandons everything after the session was lost.
async fn lose_all(b: &Broker) {
    let _g = b.ownership.lock().await;
    let lost: Vec<Bundle> = b.owned.lock().expect("owned").drain().map(|(k, _)| k).collect();
    let topics = b.take_topics(|_| true);
    tracing::error!(
        bundles = lost.len(),
        topics = topics.len(),
        "metadata session lost: stopped serving every topic at once; renewing the session"
    );
    futures_util::future::join_all(topics.iter().map(|t| t.abandon())).await;
}

/// Starts the session watcher, the load reporter and the leader loop.
pub(crate) fn spawn_tasks(broker: &Arc<Broker>) {
    let weak = Arc::downgrade(broker);
    let stopped = broker.stopped().clone();
    // Session watcher: a lost session means every bundle is gone.
    tokio::spawn({
        let (weak, stopped) = (weak.clone(), stopped.clone());
        async move {
            loop {
                let Some(session) = weak.upgrade().map(|b| b.session()) else {
                    return;
                };
                tokio::select! {
                    _ = session.lost() => {}
                    _ = stopped.cancelled() => return,
                }
                let Some(b) = weak.upgrade() else { return };
                if b.is_draining() {
                    return;
                }
                b.set_ready(false);
                lose_all(&b).await;
                let mut delay = Duration::from_millis(200);
                loop {
                    let renewed = match b.store.session(b.cfg.session_ttl).await {
                        Ok(s) => {
                            b.set_session(s);
                            b.register().await
                        }
                        Err(e) => Err(e.into()),
                    };
                    match renewed {
                        Ok(()) => break,
                        Err(e) => {
                            tracing::warn!(error = %e, ?delay, "cannot renew the metadata session yet");
                            tokio::select! {
                                _ = tokio::time::sleep(delay) => {}
                                _ = stopped.cancelled() => return,
                            }
                            delay = (delay * 2).min(Duration::from_secs(5));
                        }
                    }
                }
                b.set_ready(true);
                tracing::info!("metadata session renewed; serving again");
            }
        }
    });
    // Load reporter.
    tokio::spawn({
        let (weak, stopped) = (weak.clone(), stopped.clone());
        async move {
            loop {
                let Some(b) = weak.upgrade() else { return };
                let every = b.cfg.load_report_interval;
                {
                    let notified = b.report_now.notified();
                    tokio::select! {
                        _ = tokio::time::sleep(every) => {}
                        _ = notified => {}
                        _ = stopped.cancelled() => return,
                    }
                }
                let session = b.session();
                if b.is_draining() || session.is_lost() {
                    continue;
                }
                let info = b.info(session.id(), b.load_report().await);
                if let Err(e) = b
                    .store
                    .put_ephemeral(&session, &keys::broker(b.address()), encode(&info), Condition::Any)
                    .await
                {
                    tracing::debug!(error = %e, "load report not published");
                }
            }
        }
    });
    // Leader election and load shedding.
    tokio::spawn(async move {
        loop {
            let Some(b) = weak.upgrade() else { return };
            let every = b.cfg.load_balance_interval;
            drop(b);
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stopped.cancelled() => return,
            }
            let Some(b) = weak.upgrade() else { return };
            if b.is_draining() || !b.is_ready() {
                continue;
            }
            match campaign(&b).await {
                Ok(true) => {
                    if let Err(e) = b.balance_once().await {
                        tracing::warn!(error = %e, "load balancing round failed");
                    }
                }
                Ok(false) => {}
                Err(e) => tracing::debug!(error = %e, "leader election round failed"),
            }
        }
    });
}

/// Tries to become (or stay) the leader; returns whether this broker leads.
async fn campaign(b: &Broker) -> Result<bool> {
    let session = b.session();
    let me = format!("{} {}", b.address(), session.id());
    match b
        .store
        .put_ephemeral(&session, &keys::leader(), Bytes::from(me.clone()), Condition::Absent)
        .await
    {
        Ok(_) => {
            tracing::info!(address = %b.address(), "elected load-balancing leader");
            Ok(true)
        }
        Err(MetaError::BadVersion(_)) => Ok(b.store.get(&keys::leader()).await?.is_some_and(|v| v.value == me)),
        Err(e) => Err(e.into()),
    }
}
