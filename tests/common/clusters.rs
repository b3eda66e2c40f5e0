//! What the StrataCluster end-to-end tests share: a namespace on a real kube-apiserver,
//! the `strata operator` process with the example's RBAC, and polling helpers that fail
//! with the cluster's status, the kubelet's pods and the operator's log.

use super::kube::{KubeApiServer, OperatorProcess};
use super::kubelet::Kubelet;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, ListParams};
use std::future::Future;
use std::time::{Duration, Instant};
use strata_operator::StrataCluster;

pub const WAIT: Duration = Duration::from_secs(150);

pub struct Env {
    pub dir: tempfile::TempDir,
    pub kube: KubeApiServer,
    pub client: kube::Client,
    pub ns: String,
}

impl Env {
    pub async fn start(ns: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let kube = KubeApiServer::start(dir.path()).await;
        kube.namespace(ns).await;
        let client = kube.client().await;
        Self {
            dir,
            kube,
            client,
            ns: ns.to_string(),
        }
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }
}

/// Polls `f` until it returns `Some`; on timeout fails with `what` and `context()`.
pub async fn eventually<T, F, Fut>(what: &str, context: impl Fn() -> String, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}{}", context());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub fn cond(sc: &StrataCluster, t: &str) -> Option<Condition> {
    sc.status.as_ref()?.conditions.iter().find(|c| c.type_ == t).cloned()
}

pub fn is(sc: &StrataCluster, t: &str, status: &str) -> bool {
    cond(sc, t).is_some_and(|c| c.status == status)
}

/// Ready at the current generation.
pub fn ready(sc: &StrataCluster) -> bool {
    is(sc, "Ready", "True") && sc.status.as_ref().and_then(|s| s.observed_generation) == sc.metadata.generation
}

/// Polls StrataCluster `demo` until `pred` holds; on timeout the failure shows its last
/// status and every pod of the kubelet with the end of its log.
pub async fn cluster_where(
    env: &Env,
    kubelet: Option<&Kubelet>,
    what: &str,
    pred: impl Fn(&StrataCluster) -> bool,
) -> StrataCluster {
    let api: Api<StrataCluster> = env.api();
    let deadline = Instant::now() + WAIT;
    let mut last = None;
    loop {
        if let Some(s) = api.get_opt("demo").await.ok().flatten() {
            if pred(&s) {
                return s;
            }
            last = s.status;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for: {what}\nstatus: {last:#?}\n{}{}",
            kubelet.map(Kubelet::describe).unwrap_or_default(),
            operator_logs(env)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The end of every operator log of the test, for failure messages.
pub fn operator_logs(env: &Env) -> String {
    let mut out = String::new();
    for e in std::fs::read_dir(&env.kube.dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with("operator-") {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            out.push_str(&format!("\n--- {name}\n"));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
    }
    out
}

/// Events about `name`: (reason, note).
pub async fn events(env: &Env, name: &str) -> Vec<(String, String)> {
    let api: Api<Event> = env.api();
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect()
}

/// The operator, as the example's service account, reaching cluster `demo`'s brokers
/// through the kubelet's Service proxy (`--resolve`).
pub fn operator(env: &Env, kubelet: Option<&Kubelet>, extra: &[&str]) -> OperatorProcess {
    // The broker Service, and each bookie identity, as this test's kubelet maps them.
    let mut resolve: Vec<String> = Vec::new();
    if let Some(k) = kubelet {
        resolve.push(format!(
            "demo-broker.{}.svc:6650={}:6650",
            env.ns,
            k.service_ip("demo-broker")
        ));
        for i in 0..6 {
            resolve.push(format!(
                "demo-bookie-{i}.demo-bookie.{}.svc:3181={}:3181",
                env.ns,
                k.pod_ip("demo-bookie", i)
            ));
        }
    }
    let mut args: Vec<&str> = Vec::new();
    for r in &resolve {
        args.extend(["--resolve", r.as_str()]);
    }
    args.extend_from_slice(extra);
    // The operator runs as the example's service account, with only its RBAC.
    env.kube.kubectl(&[
        "apply",
        "-f",
        concat!(env!("CARGO_MANIFEST_DIR"), "/examples/kubernetes/operator.yaml"),
    ]);
    OperatorProcess::start_as(&env.kube, &env.kube.operator_kubeconfig, "op", 2, "strata", &args)
}

pub fn cluster_yaml(ns: &str, spec: &str) -> String {
    format!(
        "apiVersion: strata.io/v1alpha1\nkind: StrataCluster\nmetadata:\n  name: demo\n  namespace: {ns}\nspec:\n{spec}"
    )
}

/// Applies Topic `orders` of StrataCluster `demo` (by clusterRef) with `partitions`, and
/// waits until the operator reports it Ready.
pub async fn apply_topic_and_wait_ready(env: &Env, op: &OperatorProcess, partitions: u32) {
    env.kube.apply(&format!(
        "apiVersion: strata.io/v1alpha1\nkind: Topic\nmetadata:\n  name: orders\n  namespace: {}\nspec:\n  clusterRef:\n    name: demo\n  partitions: {partitions}\n",
        env.ns
    ));
    let topics: Api<strata_operator::Topic> = env.api();
    eventually(
        "Topic orders Ready",
        || op.log_text(),
        || async {
            let t = topics.get_opt("orders").await.ok().flatten()?;
            t.status
                .as_ref()?
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
                .then_some(())
        },
    )
    .await;
}
