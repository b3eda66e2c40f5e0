//! Strata's Kubernetes operator: `StrataCluster`, `Topic` and `Subscription` custom
//! resources (`strata.io/v1alpha1`). A StrataCluster is rendered into etcd, bookie and
//! broker workloads; Topics and Subscriptions are reconciled against Strata clusters
//! through the admin API.
//!
//! Layout, one module per kind in the controller-rs shape: [`cluster`] (validation,
//! rendering, rollout decisions and its reconciler), [`topic`] and [`subscription`]
//! hold each kind's resource types and its pure decisions (`sync`, `cleanup`) against the
//! [`strata::StrataAdmin`] trait; this module wires them into kube-runtime controllers,
//! writes status (server-side apply, field manager `strata-operator`) and Events, and
//! applies backoff. [`leader`] elects one active replica through a Lease; [`metrics`]
//! feeds `/metrics`.
//!
//! Invariants:
//! - Only the leader reconciles; a replica that loses its lease stops at once (the process
//!   exits and is restarted as a standby).
//! - One object's failure never delays another's: reconciles run concurrently (bounded),
//!   every call to a Strata cluster is time-bounded, and failures back off per object.
//! - Status writes do not trigger reconciles (only spec, annotation and finalizer changes
//!   do, plus the periodic resync), so a reconcile never feeds itself.

pub mod cluster;
pub mod common;
pub mod conditions;
pub mod helm;
pub mod leader;
pub mod metrics;
pub mod strata;
pub mod subscription;
pub mod topic;

use futures_util::StreamExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, predicates, reflector, watcher};
use kube::{CustomResourceExt, Resource, ResourceExt};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use strata::{Connector, StrataAdmin};
use tokio_util::sync::CancellationToken;

pub use cluster::StrataCluster;
pub use subscription::Subscription;
pub use topic::Topic;

/// Field manager of every write.
pub const MANAGER: &str = "strata-operator";

/// The CustomResourceDefinitions, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![StrataCluster::crd(), Topic::crd(), Subscription::crd()]
}

/// The CRDs as one multi-document YAML (what `strata operator crdgen` prints and
/// `crds/strata.io.yaml` holds).
pub fn crds_yaml() -> String {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd).expect("a CRD serialises"));
    }
    out
}

/// How the operator runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// How often every object is compared with its Strata cluster (drift).
    pub resync: Duration,
    /// Reconciles at a time, per kind.
    pub concurrency: u16,
    /// Longest wait between retries of a failing object.
    pub max_backoff: Duration,
    /// Only this namespace's objects; all namespaces if `None`.
    pub namespace: Option<String>,
    /// The leader Lease: its namespace and name.
    pub lease_namespace: String,
    pub lease_name: String,
    /// This replica's identity in the Lease (its pod name).
    pub identity: String,
    pub timing: leader::Timing,
    /// Timeouts of calls to Strata clusters.
    pub connect_timeout: Duration,
    pub operation_timeout: Duration,
    /// How often the broker autoscaler reads the load.
    pub autoscale_interval: Duration,
    /// `host:port` → `address:port` overrides for reaching Strata clusters.
    pub resolve: Vec<(String, String)>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            resync: Duration::from_secs(60),
            concurrency: 16,
            max_backoff: Duration::from_secs(30),
            namespace: None,
            lease_namespace: "default".into(),
            lease_name: "strata-operator".into(),
            identity: "strata-operator".into(),
            timing: leader::Timing::default(),
            connect_timeout: Duration::from_secs(5),
            operation_timeout: Duration::from_secs(15),
            autoscale_interval: Duration::from_secs(15),
            resolve: Vec::new(),
        }
    }
}

/// What the probes and `/metrics` read.
#[derive(Default)]
pub struct State {
    pub metrics: Metrics,
    /// The API server answered and the CRDs are installed.
    api_ready: AtomicBool,
    /// Why not ready, if not.
    not_ready: Mutex<String>,
}

pub use metrics::Metrics;

impl State {
    /// `Ok` when the operator can work (leader or standby), else why not.
    pub fn ready(&self) -> Result<(), String> {
        if self.api_ready.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(self.not_ready.lock().expect("state").clone())
        }
    }

    fn set_ready(&self, r: Result<(), String>) {
        match r {
            Ok(()) => self.api_ready.store(true, Ordering::SeqCst),
            Err(why) => {
                self.api_ready.store(false, Ordering::SeqCst);
                *self.not_ready.lock().expect("state") = why;
            }
        }
    }
}

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The Strata cluster could not be reached or refused.
    #[error("{0}")]
    Strata(String),
    /// Deletion waits (backlog, clients, an unreachable cluster).
    #[error("deletion blocked: {0}")]
    Blocked(String),
    /// The finalizer could not be added or removed, or the resource cache is not ready.
    #[error("{0}")]
    Finalizer(String),
}

impl Error {
    fn reason(&self) -> &'static str {
        match self {
            Error::Kube(_) => "KubernetesApi",
            Error::Strata(_) => "StrataCluster",
            Error::Blocked(_) => "DeletionBlocked",
            Error::Finalizer(_) => "Finalizer",
        }
    }
}

fn unwrap_finalizer(e: kube::runtime::finalizer::Error<Error>) -> Error {
    use kube::runtime::finalizer::Error as F;
    match e {
        F::ApplyFailed(e) | F::CleanupFailed(e) => e,
        other => Error::Finalizer(other.to_string()),
    }
}

/// The note last published for one (object, reason), the recorder that folds repeats of
/// it into one Event, and when it was last used.
type EventSeries = (String, Recorder, Instant);

/// Shared by every reconcile.
pub struct Context {
    client: kube::Client,
    connector: Arc<dyn Connector>,
    /// Events: a recorder per (object, reason) and the note it last published. A repeat of
    /// the same note is folded into that Event's series; a new note starts a new Event
    /// (kube's recorder would otherwise count it as a repeat of the first note).
    recorders: Mutex<HashMap<(String, String), EventSeries>>,
    reporter: Reporter,
    state: Arc<State>,
    cfg: Config,
    /// Consecutive failures per object, for backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// Every Topic resource (the controller's cache), to find two managing one topic.
    topics: reflector::Store<Topic>,
    /// The broker autoscaler's recommendations, per StrataCluster.
    autoscale: Mutex<HashMap<String, cluster::rollout::autoscale::History>>,
    /// When this replica started leading (the autoscaler's clock).
    started: Instant,
    /// Whether policy/v1 is served, and when that was last asked.
    policy_v1: tokio::sync::Mutex<Option<(Instant, bool)>>,
}

impl Context {
    fn backoff(&self, key: &str) -> Duration {
        let mut f = self.failures.lock().expect("failures");
        let n = f.entry(key.to_string()).or_default();
        *n = n.saturating_add(1);
        let d = Duration::from_millis(500u64.saturating_mul(1u64 << (*n).min(16)));
        d.min(self.cfg.max_backoff)
    }

    /// Whether the API server serves policy/v1 PodDisruptionBudgets (asked at most once a
    /// minute). An error counts as "not served" until the next try.
    async fn policy_v1_served(&self) -> bool {
        let mut cached = self.policy_v1.lock().await;
        if let Some((at, served)) = *cached
            && at.elapsed() < Duration::from_secs(60)
        {
            return served;
        }
        let served = match self.client.list_api_group_resources("policy/v1").await {
            Ok(list) => list.resources.iter().any(|r| r.name == "poddisruptionbudgets"),
            Err(e) => {
                tracing::debug!(error = %e, "policy/v1 not served");
                false
            }
        };
        *cached = Some((Instant::now(), served));
        served
    }

    fn succeeded(&self, key: &str) {
        self.failures.lock().expect("failures").remove(key);
    }

    async fn publish<K: Resource<DynamicType = ()>>(&self, obj: &K, notes: &[common::Note]) {
        for n in notes {
            let mut note = n.message.clone();
            if note.len() > 1000 {
                let mut end = 1000;
                while !note.is_char_boundary(end) {
                    end -= 1;
                }
                note.truncate(end);
            }
            let ev = KubeEvent {
                type_: if n.warning {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                reason: n.reason.clone(),
                note: None,
                action: n.reason.clone(),
                secondary: None,
            };
            let recorder = {
                let mut all = self.recorders.lock().expect("recorders");
                all.retain(|_, (_, _, at)| at.elapsed() < Duration::from_secs(3600));
                let key = (format!("{}/{}", K::kind(&()), key_of(obj)), n.reason.clone());
                match all.get_mut(&key) {
                    Some((last, r, at)) if *last == note => {
                        *at = Instant::now();
                        r.clone()
                    }
                    _ => {
                        let r = Recorder::new(self.client.clone(), self.reporter.clone());
                        all.insert(key, (note.clone(), r.clone(), Instant::now()));
                        r
                    }
                }
            };
            let ev = KubeEvent { note: Some(note), ..ev };
            if let Err(e) = recorder.publish(&ev, &obj.object_ref(&())).await {
                tracing::warn!(reason = %n.reason, error = %e, "event not published");
            }
        }
    }
}

fn key_of<K: Resource>(obj: &K) -> String {
    format!(
        "{}/{}",
        obj.meta().namespace.as_deref().unwrap_or_default(),
        obj.meta().name.as_deref().unwrap_or_default()
    )
}

fn condition_pairs(list: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]) -> Vec<(String, String)> {
    list.iter().map(|c| (c.type_.clone(), c.status.clone())).collect()
}

/// Writes `status` through the status subresource (server-side apply).
async fn write_status<K>(api: &Api<K>, name: &str, status: &impl serde::Serialize) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&patch))
        .await?;
    Ok(())
}

/// The cluster a resource names: its `serviceUrl`, or the service URL of the
/// StrataCluster its `clusterRef` names in namespace `ns`.
fn service_url(
    url: &Option<String>,
    cluster_ref: &Option<common::ClusterRef>,
    ns: &str,
) -> Result<String, common::SpecError> {
    match (url, cluster_ref) {
        (Some(u), Some(_)) if !u.trim().is_empty() => Err(common::SpecError::new(
            "spec.clusterRef",
            "give either serviceUrl or clusterRef, not both",
        )),
        (Some(u), _) if !u.trim().is_empty() => Ok(u.trim().to_string()),
        (_, Some(r)) if !r.name.trim().is_empty() => Ok(cluster::service_url(r.name.trim(), ns)),
        _ => Err(common::SpecError::new(
            "spec.serviceUrl",
            "is required (the Strata cluster's service URL), or spec.clusterRef naming a StrataCluster of this namespace",
        )),
    }
}

/// `Err` (reason, message) when `cluster_ref` names a StrataCluster that does not exist.
async fn check_cluster_ref(
    ctx: &Context,
    cluster_ref: &Option<common::ClusterRef>,
    ns: &str,
) -> Result<(), (&'static str, String)> {
    let Some(r) = cluster_ref else { return Ok(()) };
    let api: Api<StrataCluster> = Api::namespaced(ctx.client.clone(), ns);
    match api.get_opt(r.name.trim()).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err((
            "ClusterNotFound",
            format!("StrataCluster {} does not exist in namespace {ns}", r.name),
        )),
        Err(e) => Err(("KubernetesApi", format!("reading StrataCluster {}: {e}", r.name))),
    }
}

/// An admin client of the Strata cluster at `url`. When `url` is the service of a
/// StrataCluster, the operator reaches it as that cluster asks: with its operator token
/// when auth is on, over `https://` with the CA of its TLS Secret when TLS is on.
pub(crate) async fn connect(ctx: &Context, url: &str) -> Result<Arc<dyn StrataAdmin>, strata::AdminError> {
    let (url, access) = access_for(ctx, url).await?;
    ctx.connector.connect(&url, &access).await
}

/// [`connect`] with the token a resource of namespace `ns` names, if it names one.
async fn connect_as(
    ctx: &Context,
    url: &str,
    token_ref: Option<&common::TokenSecretRef>,
    ns: &str,
) -> Result<Arc<dyn StrataAdmin>, strata::AdminError> {
    let Some(r) = token_ref else {
        return connect(ctx, url).await;
    };
    let key = r.key.as_deref().unwrap_or("token");
    let token = secret_token(ctx, ns, &r.name, key, "named by tokenSecretRef").await?;
    let (url, access) = access_for(ctx, url).await?;
    let access = strata::Access {
        token: Some(token),
        ..access
    };
    ctx.connector.connect(&url, &access).await
}

/// The URL and [`strata::Access`] for `url`: for the service of a StrataCluster, the
/// `operator.token` of its auth Secret (auth on) and `https://` with the `ca.crt` of its
/// TLS Secret (TLS on); anything else as it is.
async fn access_for(ctx: &Context, url: &str) -> Result<(String, strata::Access), strata::AdminError> {
    let mut access = strata::Access::default();
    let Some((name, ns)) = cluster::cluster_of_service_url(url) else {
        return Ok((url.to_string(), access));
    };
    let clusters: Api<StrataCluster> = Api::namespaced(ctx.client.clone(), &ns);
    let sc = match clusters.get_opt(&name).await {
        Ok(Some(sc)) => sc,
        _ => return Ok((url.to_string(), access)),
    };
    if sc.spec.auth_enabled() {
        let secret = cluster::render::names::auth_secret(&name);
        access.token = Some(
            secret_token(
                ctx,
                &ns,
                &secret,
                cluster::render::OPERATOR_TOKEN,
                "made by the StrataCluster's reconcile; delete it to have it made again",
            )
            .await?,
        );
    }
    let mut url = url.to_string();
    if let Some(tls) = sc.spec.tls() {
        let secret = cluster::tls::secret_name(&name, tls);
        access.ca_pem = Some(
            secret_token(
                ctx,
                &ns,
                &secret,
                "ca.crt",
                "the StrataCluster's spec.security.tls Secret",
            )
            .await?,
        );
        if let Some(rest) = url.strip_prefix("http://") {
            url = format!("https://{rest}");
        }
    }
    Ok((url, access))
}

/// The text (trimmed) in key `key` of Secret `ns/name`: a token, or a CA certificate
/// (`about` says where the Secret comes from, for the error).
async fn secret_token(
    ctx: &Context,
    ns: &str,
    name: &str,
    key: &str,
    about: &str,
) -> Result<String, strata::AdminError> {
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(ctx.client.clone(), ns);
    let secret = secrets
        .get_opt(name)
        .await
        .map_err(|e| strata::AdminError::Unreachable(format!("reading Secret {ns}/{name}: {e}")))?
        .ok_or_else(|| strata::AdminError::Unreachable(format!("Secret {ns}/{name} ({about}) does not exist")))?;
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| String::from_utf8_lossy(&b.0).trim().to_string())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| strata::AdminError::Unreachable(format!("Secret {ns}/{name} ({about}) has no key {key:?}")))
}

// ------------------------------------------------------------------------------- Topic

async fn reconcile_topic(obj: Arc<Topic>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let key = key_of(&*obj);
    let result = reconcile_topic_inner(obj, &ctx).await;
    ctx.state
        .metrics
        .reconciled("Topic", started.elapsed(), result.as_ref().err().map(Error::reason));
    if result.is_ok() {
        ctx.succeeded(&key);
    }
    result
}

async fn reconcile_topic_inner(obj: Arc<Topic>, ctx: &Arc<Context>) -> Result<Action, Error> {
    let ns = obj.namespace().unwrap_or_default();
    let api: Api<Topic> = Api::namespaced(ctx.client.clone(), &ns);
    let ctx2 = ctx.clone();
    finalizer(&api, topic::FINALIZER, obj, |event| async move {
        match event {
            Finalizer::Apply(t) => apply_topic(&t, &ctx2).await,
            Finalizer::Cleanup(t) => cleanup_topic(&t, &ctx2).await,
        }
    })
    .await
    .map_err(unwrap_finalizer)
}

/// Another resource already manages `t`'s topic: this one reports it and does nothing.
/// Every Topic resource, from the controller's cache (which holds them all only once the
/// first list is complete: waited for).
async fn all_topics(ctx: &Context) -> Result<Vec<Arc<Topic>>, Error> {
    match tokio::time::timeout(Duration::from_secs(30), ctx.topics.wait_until_ready()).await {
        Ok(Ok(())) => Ok(ctx.topics.state()),
        _ => Err(Error::Finalizer(
            "the cache of Topic resources is not filled yet".into(),
        )),
    }
}

async fn conflict(t: &Topic, ctx: &Context) -> Result<Option<Action>, Error> {
    let all = all_topics(ctx).await?;
    let Some(first) = topic::conflicting(t, all.iter().map(|a| &**a)) else {
        return Ok(None);
    };
    let generation = t.metadata.generation;
    let mut status = t.status.clone().unwrap_or_default();
    let msg = format!(
        "the topic is managed by Topic {}/{} (created first); this resource does nothing while that one exists",
        first.namespace().unwrap_or_default(),
        first.name_any()
    );
    conditions::set_ready_and_synced(&mut status.conditions, Some(false), "Conflict", &msg, generation);
    status.observed_generation = generation;
    let api: Api<Topic> = Api::namespaced(ctx.client.clone(), &t.namespace().unwrap_or_default());
    write_status(&api, &t.name_any(), &status).await?;
    ctx.publish(t, &[common::Note::warning("Conflict", msg)]).await;
    ctx.state
        .metrics
        .observe("Topic", key_of(t), condition_pairs(&status.conditions));
    Ok(Some(Action::requeue(ctx.cfg.resync)))
}

async fn apply_topic(t: &Topic, ctx: &Context) -> Result<Action, Error> {
    if let Some(action) = conflict(t, ctx).await? {
        return Ok(action);
    }
    let name = t.name_any();
    let ns = t.namespace().unwrap_or_default();
    let api: Api<Topic> = Api::namespaced(ctx.client.clone(), &ns);
    let generation = t.metadata.generation;
    let url = match service_url(&t.spec.service_url, &t.spec.cluster_ref, &ns) {
        Ok(url) => check_cluster_ref(ctx, &t.spec.cluster_ref, &ns).await.map(|()| url),
        Err(e) => Err(("InvalidSpec", e.to_string())),
    };
    let outcome = match url {
        Err((reason, msg)) if reason != "InvalidSpec" => {
            let mut status = t.status.clone().unwrap_or_default();
            conditions::set_ready_and_synced(&mut status.conditions, Some(false), reason, &msg, generation);
            status.observed_generation = generation;
            topic::Outcome {
                status,
                notes: Vec::new(),
                failed: Some(msg),
            }
        }
        Err((_, msg)) => {
            let mut status = t.status.clone().unwrap_or_default();
            conditions::set_ready_and_synced(&mut status.conditions, Some(false), "InvalidSpec", &msg, generation);
            status.observed_generation = generation;
            topic::Outcome {
                status,
                notes: vec![common::Note::warning("InvalidSpec", msg)],
                failed: None,
            }
        }
        Ok(url) => match connect_as(ctx, &url, t.spec.token_secret_ref.as_ref(), &ns).await {
            Ok(admin) => topic::sync(t, &*admin).await,
            Err(e) => {
                let mut status = t.status.clone().unwrap_or_default();
                let msg = format!("cannot reach the Strata cluster at {url}: {e}");
                conditions::set_ready_and_synced(
                    &mut status.conditions,
                    Some(false),
                    "ClusterUnreachable",
                    &msg,
                    generation,
                );
                topic::Outcome {
                    status,
                    notes: Vec::new(),
                    failed: Some(msg),
                }
            }
        },
    };
    write_status(&api, &name, &outcome.status).await?;
    ctx.publish(t, &outcome.notes).await;
    ctx.state
        .metrics
        .observe("Topic", key_of(t), condition_pairs(&outcome.status.conditions));
    match outcome.failed {
        Some(m) => Err(Error::Strata(m)),
        None => Ok(Action::requeue(ctx.cfg.resync)),
    }
}

async fn cleanup_topic(t: &Topic, ctx: &Context) -> Result<Action, Error> {
    // Another resource manages the topic: deleting this one must not touch it.
    let all = all_topics(ctx).await?;
    if let Some(first) = topic::conflicting(t, all.iter().map(|a| &**a)) {
        let note = common::Note::normal(
            "Retained",
            format!(
                "the topic is managed by Topic {}/{}; only this resource is deleted",
                first.namespace().unwrap_or_default(),
                first.name_any()
            ),
        );
        ctx.publish(t, &[note]).await;
        ctx.state.metrics.forget("Topic", &key_of(t));
        return Ok(Action::await_change());
    }
    let name = t.name_any();
    let api: Api<Topic> = Api::namespaced(ctx.client.clone(), &t.namespace().unwrap_or_default());
    let admin = match service_url(
        &t.spec.service_url,
        &t.spec.cluster_ref,
        &t.namespace().unwrap_or_default(),
    ) {
        Ok(url) => connect_as(
            ctx,
            &url,
            t.spec.token_secret_ref.as_ref(),
            &t.namespace().unwrap_or_default(),
        )
        .await
        .ok(),
        Err(_) => None,
    };
    let result = topic::cleanup(t, admin.as_deref()).await;
    match result {
        topic::Cleanup::Done(note) => {
            ctx.publish(t, &note.into_iter().collect::<Vec<_>>()).await;
            ctx.state.metrics.forget("Topic", &key_of(t));
            Ok(Action::await_change())
        }
        topic::Cleanup::Blocked(status, note) => {
            write_status(&api, &name, &status).await?;
            ctx.publish(t, std::slice::from_ref(&note)).await;
            Err(Error::Blocked(note.message))
        }
        topic::Cleanup::Failed(status, msg) => {
            write_status(&api, &name, &status).await?;
            ctx.publish(t, &[common::Note::warning("DeletionBlocked", msg.clone())])
                .await;
            Err(Error::Blocked(msg))
        }
    }
}

// ------------------------------------------------------------------------ Subscription

async fn reconcile_subscription(obj: Arc<Subscription>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let key = key_of(&*obj);
    let ns = obj.namespace().unwrap_or_default();
    let api: Api<Subscription> = Api::namespaced(ctx.client.clone(), &ns);
    let ctx2 = ctx.clone();
    let result = finalizer(&api, subscription::FINALIZER, obj, |event| async move {
        match event {
            Finalizer::Apply(s) => apply_subscription(&s, &ctx2).await,
            Finalizer::Cleanup(s) => cleanup_subscription(&s, &ctx2).await,
        }
    })
    .await
    .map_err(unwrap_finalizer);
    ctx.state.metrics.reconciled(
        "Subscription",
        started.elapsed(),
        result.as_ref().err().map(Error::reason),
    );
    if result.is_ok() {
        ctx.succeeded(&key);
    }
    result
}

/// Where a Subscription's topic is: a full name with its own `serviceUrl`, or a Topic
/// resource of the namespace. `Err` is a condition to report (reason, message).
async fn resolve_target(s: &Subscription, ctx: &Context) -> Result<subscription::Target, (&'static str, String, bool)> {
    let spec = &s.spec;
    if spec.topic.contains('/') {
        let topic = topic::topic_name(Some(&spec.topic), "")
            .map_err(|e| ("InvalidSpec", format!("spec.topic: {}", e.message), false))?;
        let ns = s.namespace().unwrap_or_default();
        let url = service_url(&spec.service_url, &spec.cluster_ref, &ns).map_err(|e| {
            (
                "InvalidSpec",
                format!("{e} (spec.topic is a full topic name, so the cluster must be named)"),
                false,
            )
        })?;
        check_cluster_ref(ctx, &spec.cluster_ref, &ns)
            .await
            .map_err(|(reason, msg)| (reason, msg, true))?;
        return Ok(subscription::Target {
            topic,
            service_url: url,
            token_secret_ref: spec.token_secret_ref.clone(),
        });
    }
    let topics: Api<Topic> = Api::namespaced(ctx.client.clone(), &s.namespace().unwrap_or_default());
    let t = topics
        .get_opt(&spec.topic)
        .await
        .map_err(|e| ("KubernetesApi", format!("reading Topic {}: {e}", spec.topic), true))?
        .ok_or_else(|| {
            (
                "TopicNotFound",
                format!(
                    "Topic {} does not exist in this namespace; create it, or give a full topic name and serviceUrl",
                    spec.topic
                ),
                true,
            )
        })?;
    let topic = match (
        &t.status.as_ref().and_then(|st| st.topic_name.clone()),
        topic::topic_name(t.spec.name.as_deref(), &t.name_any()),
    ) {
        (Some(n), _) => n.clone(),
        (None, Ok(n)) => n,
        (None, Err(e)) => return Err(("TopicNotReady", format!("Topic {} is invalid: {e}", spec.topic), true)),
    };
    let url = match &spec.service_url {
        Some(u) if !u.trim().is_empty() => u.trim().to_string(),
        _ => match &spec.cluster_ref {
            Some(_) => {
                let ns = s.namespace().unwrap_or_default();
                check_cluster_ref(ctx, &spec.cluster_ref, &ns)
                    .await
                    .map_err(|(reason, msg)| (reason, msg, true))?;
                service_url(&None, &spec.cluster_ref, &ns).map_err(|e| ("InvalidSpec", e.to_string(), false))?
            }
            None => service_url(
                &t.spec.service_url,
                &t.spec.cluster_ref,
                &t.namespace().unwrap_or_default(),
            )
            .map_err(|e| ("TopicNotReady", format!("Topic {}: {e}", spec.topic), true))?,
        },
    };
    // The Subscription's own token, else the Topic's when its cluster is the Topic's.
    let token_secret_ref = spec.token_secret_ref.clone().or_else(|| {
        (spec.service_url.is_none() && spec.cluster_ref.is_none())
            .then(|| t.spec.token_secret_ref.clone())
            .flatten()
    });
    Ok(subscription::Target {
        topic,
        service_url: url,
        token_secret_ref,
    })
}

async fn apply_subscription(s: &Subscription, ctx: &Context) -> Result<Action, Error> {
    let name = s.name_any();
    let api: Api<Subscription> = Api::namespaced(ctx.client.clone(), &s.namespace().unwrap_or_default());
    let generation = s.metadata.generation;
    let mut current = s.clone();
    let outcome = loop {
        let outcome = match resolve_target(&current, ctx).await {
            Err((reason, msg, retry)) => {
                let mut status = current.status.clone().unwrap_or_default();
                conditions::set_ready_and_synced(&mut status.conditions, Some(false), reason, &msg, generation);
                subscription::Outcome {
                    status,
                    notes: if retry {
                        Vec::new()
                    } else {
                        vec![common::Note::warning(reason, msg.clone())]
                    },
                    failed: retry.then_some(msg),
                    checkpoint: false,
                }
            }
            Ok(target) => match connect_as(
                ctx,
                &target.service_url,
                target.token_secret_ref.as_ref(),
                &current.namespace().unwrap_or_default(),
            )
            .await
            {
                Ok(admin) => subscription::sync(&current, &target, &*admin).await,
                Err(e) => {
                    let mut status = current.status.clone().unwrap_or_default();
                    let msg = format!("cannot reach the Strata cluster at {}: {e}", target.service_url);
                    conditions::set_ready_and_synced(
                        &mut status.conditions,
                        Some(false),
                        "ClusterUnreachable",
                        &msg,
                        generation,
                    );
                    subscription::Outcome {
                        status,
                        notes: Vec::new(),
                        failed: Some(msg),
                        checkpoint: false,
                    }
                }
            },
        };
        if !outcome.checkpoint {
            break outcome;
        }
        // Recorded before it happens (a reset about to be applied): then go on.
        write_status(&api, &name, &outcome.status).await?;
        ctx.publish(s, &outcome.notes).await;
        current.status = Some(outcome.status);
    };
    write_status(&api, &name, &outcome.status).await?;
    ctx.publish(s, &outcome.notes).await;
    ctx.state
        .metrics
        .observe("Subscription", key_of(s), condition_pairs(&outcome.status.conditions));
    match outcome.failed {
        Some(m) => Err(Error::Strata(m)),
        None => Ok(Action::requeue(ctx.cfg.resync)),
    }
}

async fn cleanup_subscription(s: &Subscription, ctx: &Context) -> Result<Action, Error> {
    let name = s.name_any();
    let api: Api<Subscription> = Api::namespaced(ctx.client.clone(), &s.namespace().unwrap_or_default());
    let target = resolve_target(s, ctx).await.ok();
    // The Topic resource may be gone already (a namespace being deleted): the URL the
    // subscription was created through is in its status.
    let url = target
        .as_ref()
        .map(|t| t.service_url.clone())
        .or_else(|| s.spec.service_url.clone())
        .or_else(|| s.status.as_ref().and_then(|st| st.service_url.clone()));
    let admin = match url {
        Some(u) => connect_as(
            ctx,
            &u,
            target
                .as_ref()
                .and_then(|t| t.token_secret_ref.as_ref())
                .or(s.spec.token_secret_ref.as_ref()),
            &s.namespace().unwrap_or_default(),
        )
        .await
        .ok(),
        None => None,
    };
    match subscription::cleanup(s, target.as_ref(), admin.as_deref()).await {
        subscription::Cleanup::Done(note) => {
            ctx.publish(s, &note.into_iter().collect::<Vec<_>>()).await;
            ctx.state.metrics.forget("Subscription", &key_of(s));
            Ok(Action::await_change())
        }
        subscription::Cleanup::Blocked(status, note) => {
            write_status(&api, &name, &status).await?;
            ctx.publish(s, std::slice::from_ref(&note)).await;
            Err(Error::Blocked(note.message))
        }
        subscription::Cleanup::Failed(status, msg) => {
            write_status(&api, &name, &status).await?;
            ctx.publish(s, &[common::Note::warning("DeletionBlocked", msg.clone())])
                .await;
            Err(Error::Blocked(msg))
        }
    }
}

fn error_policy<K: Resource<DynamicType = ()>>(obj: Arc<K>, e: &Error, ctx: Arc<Context>) -> Action {
    let key = key_of(&*obj);
    let wait = ctx.backoff(&key);
    tracing::warn!(object = %key, kind = %K::kind(&()), error = %e, retry_in = ?wait, "reconcile failed");
    Action::requeue(wait)
}

// ------------------------------------------------------------------------------ running

/// Checks that the API server answers and serves both CRDs; the error says what is missing.
async fn check_api(client: &kube::Client) -> Result<(), String> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        match api.get_opt(&name).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                return Err(format!(
                    "CRD {name} is not installed: kubectl apply -f crds/ (or `strata operator crdgen | kubectl apply -f -`)"
                ));
            }
            Err(e) => return Err(format!("the Kubernetes API server cannot be reached: {e}")),
        }
    }
    Ok(())
}

/// Runs the operator until `shutdown`: leader election, then (while leading) both
/// controllers. Returns `Err` if leadership is lost (the process should exit and restart
/// as a standby).
pub async fn run(
    client: kube::Client,
    cfg: Config,
    state: Arc<State>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let connector: Arc<dyn Connector> = Arc::new(
        strata::SdkConnector::new(cfg.connect_timeout, cfg.operation_timeout).with_resolve(cfg.resolve.clone()),
    );
    run_with(client, cfg, state, connector, shutdown).await
}

/// [`run`] with another way to reach Strata clusters.
pub async fn run_with(
    client: kube::Client,
    cfg: Config,
    state: Arc<State>,
    connector: Arc<dyn Connector>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // Readiness: the API server answers and the CRDs exist, checked until shutdown.
    {
        let (client, state, shutdown) = (client.clone(), state.clone(), shutdown.clone());
        tokio::spawn(async move {
            loop {
                state.set_ready(check_api(&client).await);
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        });
    }

    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(client.clone(), &cfg.lease_namespace);
    let mut elector = leader::Elector::new(leases, &cfg.lease_name, &cfg.identity, cfg.timing);
    tracing::info!(lease = %cfg.lease_name, namespace = %cfg.lease_namespace, identity = %cfg.identity, "waiting to become leader");
    loop {
        if elector.try_acquire_or_renew().await {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(cfg.timing.retry) => {}
            _ = shutdown.cancelled() => return Ok(()),
        }
    }
    state.metrics.set_leader(true);

    let reporter = Reporter {
        controller: MANAGER.into(),
        instance: Some(cfg.identity.clone()),
    };
    let (topic_reader, topic_writer) = reflector::store();
    let ctx = Arc::new(Context {
        client: client.clone(),
        connector,
        recorders: Mutex::new(HashMap::new()),
        reporter,
        state: state.clone(),
        cfg: cfg.clone(),
        failures: Mutex::new(HashMap::new()),
        topics: topic_reader.clone(),
        autoscale: Mutex::new(HashMap::new()),
        started: Instant::now(),
        policy_v1: tokio::sync::Mutex::new(None),
    });
    // Stops the controllers: on shutdown, or when leadership is lost.
    let stop = shutdown.child_token();
    let controllers = tokio::spawn(run_controllers(
        client.clone(),
        ctx,
        (topic_reader, topic_writer),
        stop.clone(),
    ));

    let mut lost = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(cfg.timing.retry) => {}
            _ = shutdown.cancelled() => break,
        }
        if !elector.try_acquire_or_renew().await {
            lost = true;
            break;
        }
    }
    stop.cancel();
    let _ = controllers.await;
    state.metrics.set_leader(false);
    if lost {
        anyhow::bail!(
            "lost the leader lease {}/{}; exiting so a restart starts as a standby",
            cfg.lease_namespace,
            cfg.lease_name
        );
    }
    elector.release().await;
    Ok(())
}

fn api_for<K>(client: &kube::Client, ns: &Option<String>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match ns {
        Some(n) => Api::namespaced(client.clone(), n),
        None => Api::all(client.clone()),
    }
}

async fn run_controllers(
    client: kube::Client,
    ctx: Arc<Context>,
    (topic_reader, topic_writer): (reflector::Store<Topic>, reflector::store::Writer<Topic>),
    stop: CancellationToken,
) {
    let ns = ctx.cfg.namespace.clone();
    let controller_cfg = kube::runtime::controller::Config::default().concurrency(ctx.cfg.concurrency);
    let controller_cfg_clusters = controller_cfg.clone();
    // Reconcile on spec (generation), annotation (force-delete) and finalizer changes, not
    // on the operator's own status writes.
    fn interesting<K: Resource + 'static>() -> impl kube::runtime::Predicate<K> {
        use kube::runtime::Predicate;
        (predicates::generation as fn(&K) -> Option<u64>)
            .combine(predicates::annotations as fn(&K) -> Option<u64>)
            .combine(predicates::finalizers as fn(&K) -> Option<u64>)
    }

    let topics = watcher(api_for::<Topic>(&client, &ns), watcher::Config::default())
        .default_backoff()
        .reflect(topic_writer)
        .applied_objects()
        .predicate_filter(interesting(), Default::default());
    let topic_controller = Controller::for_stream(topics, topic_reader)
        .with_config(controller_cfg.clone())
        .graceful_shutdown_on(stop.clone().cancelled_owned())
        .run(reconcile_topic, error_policy, ctx.clone())
        .for_each(|_| async {});

    let (sub_reader, sub_writer) = reflector::store();
    let subs = watcher(api_for::<Subscription>(&client, &ns), watcher::Config::default())
        .default_backoff()
        .reflect(sub_writer)
        .applied_objects()
        .predicate_filter(interesting(), Default::default());
    let sub_store = sub_reader.clone();
    // A Topic changing (becoming ready, say) wakes the Subscriptions naming it.
    let sub_controller = Controller::for_stream(subs, sub_reader)
        .with_config(controller_cfg)
        .watches(
            api_for::<Topic>(&client, &ns),
            watcher::Config::default(),
            move |t: Topic| {
                let (tns, tname) = (t.namespace(), t.name_any());
                sub_store
                    .state()
                    .into_iter()
                    .filter(|s| s.namespace() == tns && s.spec.topic == tname)
                    .map(|s| ObjectRef::from_obj(&*s))
                    .collect::<Vec<_>>()
            },
        )
        .graceful_shutdown_on(stop.clone().cancelled_owned())
        .run(reconcile_subscription, error_policy, ctx.clone())
        .for_each(|_| async {});

    // StrataClusters, woken also by their workloads' status (rollouts, readiness).
    let (cluster_reader, cluster_writer) = reflector::store();
    let clusters = watcher(api_for::<StrataCluster>(&client, &ns), watcher::Config::default())
        .default_backoff()
        .reflect(cluster_writer)
        .applied_objects()
        .predicate_filter(interesting(), Default::default());
    let rendered = watcher::Config::default().labels("app.kubernetes.io/managed-by=strata-operator");
    let cluster_controller = Controller::for_stream(clusters, cluster_reader)
        .with_config(controller_cfg_clusters)
        .owns(
            api_for::<k8s_openapi::api::apps::v1::StatefulSet>(&client, &ns),
            rendered.clone(),
        )
        .owns(
            api_for::<k8s_openapi::api::apps::v1::Deployment>(&client, &ns),
            rendered,
        )
        .graceful_shutdown_on(stop.cancelled_owned())
        .run(cluster::reconcile::reconcile, error_policy, ctx)
        .for_each(|_| async {});
    tokio::join!(topic_controller, sub_controller, cluster_controller);
}
