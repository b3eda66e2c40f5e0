//! A test kubelet (with the StatefulSet and Deployment controllers and kube-proxy it
//! implies): it runs the workloads the operator rendered on a real kube-apiserver as
//! local processes, as ../shared/OPERATOR.md describes.
//!
//! - Every pod gets its own loopback address (`127.N.x.y`), as a pod gets its own network
//!   namespace: `0.0.0.0` in its args means that address, so rendered ports stay as
//!   rendered. A StatefulSet pod's address is fixed by its ordinal (its stable identity).
//! - Service DNS names in args, env and mounted ConfigMaps are mapped to addresses: a
//!   StatefulSet pod's `<pod>.<service>.<ns>.svc[.cluster.local]` to the pod, a ClusterIP
//!   Service's `<svc>.<ns>.svc[.cluster.local]` to a proxy that forwards each connection
//!   to a ready pod the Service selects (kube-proxy).
//! - The container's command, args and env are used as rendered: `$(VAR)` expansion,
//!   `fieldRef` (pod name, namespace, pod IP), ConfigMap and Secret volumes written to a directory
//!   and volume claim templates as a directory per PersistentVolumeClaim (mount paths
//!   mapped to them). Claims are created as the StatefulSet controller does
//!   (`<template>-<pod>`) and never deleted by it; a claim deleted and created again is a
//!   new, empty directory.
//!   `strata` is the binary under test and `etcd` Debian's. A wrong flag, env var or
//!   config key makes the process exit, and the pod never becomes ready.
//! - Readiness is the rendered readiness probe (HTTP GET on the pod's address).
//! - StatefulSets roll one pod at a time, highest ordinal first, each ready before the
//!   next; Deployments surge one new pod, wait for it to be ready, then stop an old one.
//!   Stopping is SIGTERM, then SIGKILL after the grace period.
//! - Workload status (`replicas`, `readyReplicas`, `updatedReplicas`, revisions,
//!   `observedGeneration`) is written back through the status subresource.
//! - Pods created directly (no owner; what `helm test` creates) run once: their init
//!   containers in order, then their first container; the pod's `status.phase` becomes
//!   `Running`, then `Succeeded` or `Failed` by the exit status, as `helm test` awaits.
//! - A workload named with [`Kubelet::ignore`] is not run (a test runs it itself).

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, PersistentVolumeClaim, Pod as KubePod, PodTemplateSpec, Secret, Service,
};
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use std::collections::HashSet;
use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

static NETS: AtomicU8 = AtomicU8::new(0);

/// A process standing for one pod.
struct Pod {
    workload: String,
    ordinal: Option<i32>,
    ip: Ipv4Addr,
    digest: String,
    labels: BTreeMap<String, String>,
    /// The rendered container, kept to restart the process and to probe it.
    container: Container,
    template: PodTemplateSpec,
    child: Option<Child>,
    log: PathBuf,
    ready: bool,
    restarts: u32,
    exited_at: Option<Instant>,
    /// SIGTERM sent at; SIGKILL after the grace period.
    terminating: Option<(Instant, Duration)>,
}

#[derive(Default)]
struct State {
    pods: BTreeMap<String, Pod>,
    /// Stable index per StatefulSet (the third octet of its pods' addresses).
    sts_index: HashMap<String, u8>,
    /// ClusterIP Services: name → address of their proxy.
    services: BTreeMap<String, Ipv4Addr>,
    /// Proxies listening: (service, port).
    proxies: HashMap<(String, u16), ()>,
    next_deploy_ip: u32,
    deploy_counter: u64,
    /// What happened, in order: "start <pod> <digest>", "stop <pod>", "exit <pod> <status>".
    history: Vec<String>,
    /// PersistentVolumeClaims: name → uid (its directory).
    claims: HashMap<String, String>,
    /// Workloads not run here.
    ignored: HashSet<String>,
    /// Pods without an owner, by uid.
    bare: HashMap<String, BarePod>,
}

/// A pod created directly, run once: its init containers, then its container.
struct BarePod {
    name: String,
    pod: Pod,
    /// Init containers, then the first container.
    stages: Vec<Container>,
    stage: usize,
    /// The phase last written to the API (`Running`, `Succeeded`, `Failed`).
    phase: String,
}

pub struct Kubelet {
    inner: Arc<Inner>,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

struct Inner {
    client: kube::Client,
    ns: String,
    dir: PathBuf,
    net: u8,
    state: Mutex<State>,
}

fn digest(t: &PodTemplateSpec) -> String {
    let text = serde_json::to_string(t).unwrap();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

impl Kubelet {
    /// Starts playing the kubelet for namespace `ns`, with pod directories under `dir`.
    pub fn start(client: kube::Client, ns: &str, dir: &Path) -> Self {
        let net = 20 + NETS.fetch_add(1, Ordering::SeqCst) % 200;
        let inner = Arc::new(Inner {
            client,
            ns: ns.to_string(),
            dir: dir.to_path_buf(),
            net,
            state: Mutex::new(State::default()),
        });
        std::fs::create_dir_all(dir).unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(inner.clone(), stop.clone()));
        Self {
            inner,
            stop,
            task: Some(task),
        }
    }

    /// The address pod `ordinal` of StatefulSet `sts` has (or will have).
    pub fn pod_ip(&self, sts: &str, ordinal: i32) -> Ipv4Addr {
        let mut st = self.inner.state.lock().unwrap();
        sts_ip(&mut st, self.inner.net, sts, ordinal)
    }

    /// The address a ClusterIP Service `name` is (or will be) reachable at.
    pub fn service_ip(&self, name: &str) -> Ipv4Addr {
        let mut st = self.inner.state.lock().unwrap();
        service_ip(&mut st, self.inner.net, name)
    }

    /// `url` with the Service host names in it mapped as pods see them.
    pub fn map(&self, text: &str) -> String {
        let st = self.inner.state.lock().unwrap();
        map_names(&self.inner, &st, text)
    }

    /// Leaves workload `name` (a Deployment or StatefulSet) alone: the test runs it.
    pub fn ignore(&self, name: &str) {
        self.inner.state.lock().unwrap().ignored.insert(name.to_string());
    }

    /// The address of a running pod of workload `workload` (a Deployment's pods have
    /// generated names), if one runs.
    pub fn workload_pod_ip(&self, workload: &str) -> Option<Ipv4Addr> {
        let st = self.inner.state.lock().unwrap();
        st.pods
            .values()
            .find(|p| p.workload == workload && p.terminating.is_none() && p.ready)
            .map(|p| p.ip)
    }

    /// Every event so far ("start <pod> <digest>", "stop <pod>", "exit <pod> …").
    pub fn history(&self) -> Vec<String> {
        self.inner.state.lock().unwrap().history.clone()
    }

    /// Pod name → (ready, restarts) of the pods running now.
    pub fn pods(&self) -> BTreeMap<String, (bool, u32)> {
        let st = self.inner.state.lock().unwrap();
        st.pods
            .iter()
            .filter(|(_, p)| p.terminating.is_none())
            .map(|(n, p)| (n.clone(), (p.ready, p.restarts)))
            .collect()
    }

    /// What every pod is doing, with the end of each log: for failure messages.
    pub fn describe(&self) -> String {
        let st = self.inner.state.lock().unwrap();
        let mut out = String::new();
        for (name, p) in &st.pods {
            let log = std::fs::read_to_string(&p.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(8).collect();
            out.push_str(&format!(
                "\n--- pod {name} ({}) ip {} ready {} restarts {} terminating {}\n",
                p.workload,
                p.ip,
                p.ready,
                p.restarts,
                p.terminating.is_some()
            ));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        for b in st.bare.values() {
            let log = std::fs::read_to_string(&b.pod.log).unwrap_or_default();
            out.push_str(&format!(
                "\n--- bare pod {} stage {} phase {}\n",
                b.name, b.stage, b.phase
            ));
            for l in log.lines().rev().take(12).collect::<Vec<_>>().into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out.push_str(&format!("history: {:?}\n", st.history));
        out
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(t) = self.task.take() {
            t.abort();
        }
        let mut st = self.inner.state.lock().unwrap();
        for p in st.pods.values_mut() {
            if let Some(c) = p.child.as_mut() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

fn service_ip(st: &mut State, net: u8, name: &str) -> Ipv4Addr {
    let n = st.services.len() as u8;
    *st.services
        .entry(name.to_string())
        .or_insert_with(|| Ipv4Addr::new(127, net, 250, n + 1))
}

fn sts_ip(st: &mut State, net: u8, sts: &str, ordinal: i32) -> Ipv4Addr {
    let n = st.sts_index.len() as u8;
    let idx = *st.sts_index.entry(sts.to_string()).or_insert(n + 1);
    Ipv4Addr::new(127, net, idx, ordinal as u8 + 1)
}

/// Replaces ClusterIP Service DNS names with the addresses of their proxies.
fn map_names(inner: &Inner, st: &State, text: &str) -> String {
    let ns = &inner.ns;
    let mut pairs: Vec<(String, String)> = Vec::new();
    for (svc, ip) in &st.services {
        for suffix in ["svc.cluster.local", "svc"] {
            pairs.push((format!("{svc}.{ns}.{suffix}"), ip.to_string()));
        }
    }
    pairs.sort_by_key(|(k, _)| std::cmp::Reverse(k.len()));
    let mut out = text.to_string();
    for (k, v) in pairs {
        out = out.replace(&k, &v);
    }
    out
}

/// Names of StatefulSet pods that will exist, for mapping before they start.
fn reserve_sts_names(inner: &Inner, st: &mut State, sets: &[StatefulSet]) -> Vec<(String, Ipv4Addr, String)> {
    let mut out = Vec::new();
    for s in sets {
        let name = s.name_any();
        let svc = s
            .spec
            .as_ref()
            .map(|s| s.service_name.clone().unwrap_or_default())
            .unwrap_or_default();
        let replicas = s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        for i in 0..replicas.max(0) {
            let ip = sts_ip(st, inner.net, &name, i);
            out.push((format!("{name}-{i}"), ip, svc.clone()));
        }
    }
    out
}

fn expand(s: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = s.to_string();
    for (k, v) in env {
        out = out.replace(&format!("$({k})"), v);
    }
    out
}

/// What pods mount: the namespace's ConfigMaps and Secrets.
struct Mounted {
    configmaps: Vec<ConfigMap>,
    secrets: Vec<Secret>,
}

/// Starts the process of `pod` (again).
fn spawn(
    inner: &Inner,
    st: &State,
    name: &str,
    pod: &Pod,
    sts_names: &[(String, Ipv4Addr, String)],
    objects: &Mounted,
) -> Child {
    let configmaps = &objects.configmaps;
    let ns = &inner.ns;
    let c = &pod.container;
    let ip = pod.ip.to_string();
    let map = |text: &str| -> String {
        let mut t = map_names(inner, st, text);
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (pod_name, pod_ip, svc) in sts_names {
            for suffix in ["svc.cluster.local", "svc"] {
                pairs.push((format!("{pod_name}.{svc}.{ns}.{suffix}"), pod_ip.to_string()));
            }
        }
        pairs.sort_by_key(|(k, _)| std::cmp::Reverse(k.len()));
        for (k, v) in pairs {
            t = t.replace(&k, &v);
        }
        t.replace("0.0.0.0", &ip)
    };
    // Volumes: ConfigMaps written out, claims and emptyDirs as directories.
    let pod_dir = inner.dir.join(name);
    std::fs::create_dir_all(&pod_dir).unwrap();
    let mut mounts: Vec<(String, PathBuf)> = Vec::new();
    let mut cm_dirs: Vec<PathBuf> = Vec::new();
    let volumes = pod
        .template
        .spec
        .as_ref()
        .and_then(|s| s.volumes.clone())
        .unwrap_or_default();
    for m in c.volume_mounts.clone().unwrap_or_default() {
        let host = match volumes.iter().find(|v| v.name == m.name) {
            Some(v) if v.config_map.is_some() => {
                let cm_name = v.config_map.as_ref().unwrap().name.clone();
                let cm = configmaps
                    .iter()
                    .find(|c| c.name_any() == cm_name)
                    .unwrap_or_else(|| panic!("pod {name} mounts ConfigMap {cm_name}, which does not exist"));
                let d = pod_dir.join(format!("cm-{}", m.name));
                let _ = std::fs::remove_dir_all(&d);
                std::fs::create_dir_all(&d).unwrap();
                for (file, text) in cm.data.clone().unwrap_or_default() {
                    std::fs::write(d.join(file), map(&text)).unwrap();
                }
                cm_dirs.push(d.clone());
                d
            }
            Some(v) if v.secret.is_some() => {
                let secret_name = v.secret.as_ref().unwrap().secret_name.clone().unwrap_or_default();
                let secret = objects
                    .secrets
                    .iter()
                    .find(|s| s.name_any() == secret_name)
                    .unwrap_or_else(|| panic!("pod {name} mounts Secret {secret_name}, which does not exist"));
                let d = pod_dir.join(format!("secret-{}", m.name));
                let _ = std::fs::remove_dir_all(&d);
                std::fs::create_dir_all(&d).unwrap();
                for (file, bytes) in secret.data.clone().unwrap_or_default() {
                    std::fs::write(d.join(file), &bytes.0).unwrap();
                }
                d
            }
            Some(v) if v.empty_dir.is_some() => pod_dir.join(format!("empty-{}", m.name)),
            Some(v) => panic!("pod {name}: volume {} of an unsupported kind: {v:?}", m.name),
            // A volume claim template: its PVC's directory, kept across restarts.
            None => {
                let claim = format!("{}-{name}", m.name);
                let uid = st.claims.get(&claim).cloned().unwrap_or_default();
                inner.dir.join("pvc").join(format!("{claim}-{uid}"))
            }
        };
        std::fs::create_dir_all(&host).unwrap();
        mounts.push((m.mount_path.clone(), host));
    }
    mounts.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
    let unmount = |s: String| -> String {
        let mut s = s;
        for (path, host) in &mounts {
            s = s.replace(path.as_str(), host.to_str().unwrap());
        }
        s
    };
    // Paths in mounted config files (a Secret's files named in a TOML) are mapped too.
    for d in &cm_dirs {
        for f in std::fs::read_dir(d).unwrap().flatten() {
            let text = std::fs::read_to_string(f.path()).unwrap_or_default();
            std::fs::write(f.path(), unmount(text)).unwrap();
        }
    }
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for e in c.env.clone().unwrap_or_default() {
        let v = match (&e.value, &e.value_from) {
            (Some(v), _) => expand(v, &env),
            (None, Some(from)) => {
                let path = from
                    .field_ref
                    .as_ref()
                    .map(|f| f.field_path.as_str())
                    .unwrap_or_else(|| panic!("pod {name}: env {} has an unsupported source", e.name));
                match path {
                    "metadata.name" => name.to_string(),
                    "metadata.namespace" => ns.clone(),
                    "status.podIP" => ip.clone(),
                    other => panic!("pod {name}: env {} from unsupported field {other}", e.name),
                }
            }
            (None, None) => String::new(),
        };
        env.insert(e.name.clone(), v);
    }
    let command = c
        .command
        .clone()
        .unwrap_or_else(|| panic!("pod {name}: no command (the image's entrypoint is not known here)"));
    let program = match command[0].as_str() {
        "strata" => super::STRATA.to_string(),
        "etcd" => "etcd".to_string(),
        other => panic!("pod {name}: command {other} is not a program this kubelet runs"),
    };
    let args: Vec<String> = command[1..]
        .iter()
        .chain(c.args.clone().unwrap_or_default().iter())
        .map(|a| unmount(map(&expand(a, &env))))
        .collect();
    let mut cmd = Command::new(program);
    cmd.args(&args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    if let Ok(l) = std::env::var("RUST_LOG") {
        cmd.env("RUST_LOG", l);
    }
    for (k, v) in &env {
        cmd.env(k, unmount(map(v)));
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&pod.log)
        .unwrap();
    cmd.stdout(log.try_clone().unwrap()).stderr(log).stdin(Stdio::null());
    cmd.spawn()
        .unwrap_or_else(|e| panic!("pod {name}: starting {args:?}: {e}"))
}

fn container_port(c: &Container, port: &k8s_openapi::apimachinery::pkg::util::intstr::IntOrString) -> u16 {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    match port {
        IntOrString::Int(p) => *p as u16,
        IntOrString::String(name) => c
            .ports
            .clone()
            .unwrap_or_default()
            .iter()
            .find(|p| p.name.as_deref() == Some(name))
            .map(|p| p.container_port as u16)
            .unwrap_or_else(|| panic!("container {} has no port named {name}", c.name)),
    }
}

async fn probe(pod: &Pod) -> bool {
    let Some(get) = pod.container.readiness_probe.as_ref().and_then(|p| p.http_get.as_ref()) else {
        return true;
    };
    let port = container_port(&pod.container, &get.port);
    let addr = format!("{}:{port}", pod.ip);
    matches!(
        super::http_get(&addr, get.path.as_deref().unwrap_or("/")).await,
        Some((200, _))
    )
}

fn new_pod(workload: &str, ordinal: Option<i32>, ip: Ipv4Addr, template: &PodTemplateSpec, log: PathBuf) -> Pod {
    let container = template.spec.as_ref().expect("pod spec").containers[0].clone();
    Pod {
        workload: workload.to_string(),
        ordinal,
        ip,
        digest: digest(template),
        labels: template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default(),
        container,
        template: template.clone(),
        child: None,
        log,
        ready: false,
        restarts: 0,
        exited_at: None,
        terminating: None,
    }
}

fn terminate(st: &mut State, name: &str) {
    let Some(p) = st.pods.get_mut(name) else { return };
    if p.terminating.is_some() {
        return;
    }
    let grace = p
        .template
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(30);
    if let Some(c) = &p.child {
        super::signal(c.id(), "TERM");
    }
    p.ready = false;
    p.terminating = Some((Instant::now(), Duration::from_secs(grace as u64)));
    st.history.push(format!("stop {name}"));
}

async fn run(inner: Arc<Inner>, stop: CancellationToken) {
    loop {
        if let Err(e) = step(&inner).await {
            eprintln!("kubelet: {e}");
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = stop.cancelled() => return,
        }
    }
}

async fn step(inner: &Arc<Inner>) -> Result<(), kube::Error> {
    let ns = &inner.ns;
    let sts_api: Api<StatefulSet> = Api::namespaced(inner.client.clone(), ns);
    let dep_api: Api<Deployment> = Api::namespaced(inner.client.clone(), ns);
    let cm_api: Api<ConfigMap> = Api::namespaced(inner.client.clone(), ns);
    let svc_api: Api<Service> = Api::namespaced(inner.client.clone(), ns);
    let (sets, deps) = {
        let mut sets = sts_api.list(&ListParams::default()).await?.items;
        let mut deps = dep_api.list(&ListParams::default()).await?.items;
        let st = inner.state.lock().unwrap();
        sets.retain(|s| !st.ignored.contains(&s.name_any()));
        deps.retain(|d| !st.ignored.contains(&d.name_any()));
        (sets, deps)
    };
    // The StatefulSet controller's claims: one per template and pod, created before the pod.
    let pvc_api: Api<PersistentVolumeClaim> = Api::namespaced(inner.client.clone(), ns);
    let all_claims = pvc_api.list(&ListParams::default()).await?.items;
    // The PVC-protection controller: a deleted claim goes once no pod uses it.
    for c in all_claims.iter().filter(|c| c.metadata.deletion_timestamp.is_some()) {
        let name = c.name_any();
        let used = {
            let st = inner.state.lock().unwrap();
            st.pods.keys().any(|p| name.ends_with(&format!("-{p}")))
        };
        if !used && c.metadata.finalizers.as_ref().is_some_and(|f| !f.is_empty()) {
            let patch = serde_json::json!({"metadata": {"finalizers": null}});
            match pvc_api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
    }
    let mut claims: HashMap<String, String> = all_claims
        .into_iter()
        .filter(|c| c.metadata.deletion_timestamp.is_none())
        .map(|c| (c.name_any(), c.uid().unwrap_or_default()))
        .collect();
    for s in &sets {
        let spec = s.spec.clone().unwrap_or_default();
        for t in spec.volume_claim_templates.clone().unwrap_or_default() {
            for i in 0..spec.replicas.unwrap_or(1) {
                let name = format!("{}-{}-{i}", t.name_any(), s.name_any());
                if claims.contains_key(&name) {
                    continue;
                }
                let mut c = PersistentVolumeClaim {
                    metadata: t.metadata.clone(),
                    spec: t.spec.clone(),
                    status: None,
                };
                c.metadata.name = Some(name.clone());
                c.metadata.namespace = Some(ns.clone());
                let mut labels = c.metadata.labels.clone().unwrap_or_default();
                labels.extend(spec.selector.match_labels.clone().unwrap_or_default());
                c.metadata.labels = Some(labels);
                match pvc_api.create(&Default::default(), &c).await {
                    Ok(created) => {
                        claims.insert(name, created.uid().unwrap_or_default());
                    }
                    Err(kube::Error::Api(e)) if e.code == 409 => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    inner.state.lock().unwrap().claims = claims;
    let cms = Mounted {
        configmaps: cm_api.list(&ListParams::default()).await?.items,
        secrets: Api::<Secret>::namespaced(inner.client.clone(), ns)
            .list(&ListParams::default())
            .await?
            .items,
    };
    let svcs = svc_api.list(&ListParams::default()).await?.items;

    // Processes: reap exits, finish terminations, restart crashed pods.
    let probes: Vec<(String, bool)> = {
        let names: Vec<String> = inner.state.lock().unwrap().pods.keys().cloned().collect();
        let mut out = Vec::new();
        for n in names {
            let snapshot = {
                let st = inner.state.lock().unwrap();
                st.pods
                    .get(&n)
                    .filter(|p| p.terminating.is_none() && p.child.is_some())
                    .map(clone_pod)
            };
            if let Some(p) = snapshot {
                out.push((n, probe(&p).await));
            }
        }
        out
    };
    {
        let mut st = inner.state.lock().unwrap();
        for (n, ready) in probes {
            if let Some(p) = st.pods.get_mut(&n)
                && p.terminating.is_none()
            {
                p.ready = ready;
            }
        }
        let mut gone = Vec::new();
        let mut events = Vec::new();
        for (name, p) in st.pods.iter_mut() {
            if let Some(c) = p.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                events.push(format!("exit {name} {status}"));
                p.child = None;
                p.ready = false;
                p.exited_at = Some(Instant::now());
            }
            if let Some((since, grace)) = p.terminating {
                match p.child.as_mut() {
                    None => gone.push(name.clone()),
                    Some(c) if since.elapsed() > grace => {
                        let _ = c.kill();
                        let _ = c.wait();
                        events.push(format!("killed {name} after its grace period"));
                        gone.push(name.clone());
                    }
                    Some(_) => {}
                }
            }
        }
        st.history.extend(events);
        for g in gone {
            st.pods.remove(&g);
        }
    }

    // StatefulSets.
    let mut statuses: Vec<(String, serde_json::Value, bool)> = Vec::new();
    {
        let mut st = inner.state.lock().unwrap();
        let sts_names = reserve_sts_names(inner, &mut st, &sets);
        for s in &sets {
            let name = s.name_any();
            let spec = s.spec.clone().unwrap_or_default();
            let replicas = spec.replicas.unwrap_or(1);
            let d = digest(&spec.template);
            // Scale down: highest ordinals first.
            let extra: Vec<String> = st
                .pods
                .iter()
                .filter(|(_, p)| p.workload == name && p.ordinal.unwrap_or(0) >= replicas)
                .map(|(n, _)| n.clone())
                .collect();
            for n in extra {
                terminate(&mut st, &n);
            }
            // Rolling update: once every pod is ready, the highest outdated one goes.
            let mine: Vec<(String, bool, bool, i32)> = st
                .pods
                .iter()
                .filter(|(_, p)| p.workload == name && p.terminating.is_none())
                .map(|(n, p)| (n.clone(), p.ready, p.digest == d, p.ordinal.unwrap_or(0)))
                .collect();
            let any_terminating = st.pods.values().any(|p| p.workload == name && p.terminating.is_some());
            if !any_terminating
                && mine.len() as i32 == replicas
                && mine.iter().all(|(_, ready, _, _)| *ready)
                && let Some((n, ..)) = mine
                    .iter()
                    .filter(|(_, _, current, _)| !current)
                    .max_by_key(|(.., o)| *o)
            {
                let n = n.clone();
                terminate(&mut st, &n);
            }
            // Missing pods (all at once: podManagementPolicy Parallel).
            for i in 0..replicas {
                let pod_name = format!("{name}-{i}");
                if st.pods.contains_key(&pod_name) {
                    continue;
                }
                let ip = sts_ip(&mut st, inner.net, &name, i);
                let log = inner.dir.join(format!("{pod_name}.log"));
                let mut pod = new_pod(&name, Some(i), ip, &spec.template, log);
                let child = spawn(inner, &st, &pod_name, &pod, &sts_names, &cms);
                pod.child = Some(child);
                st.history.push(format!("start {pod_name} {d}"));
                st.pods.insert(pod_name, pod);
            }
            let mine: Vec<&Pod> = st
                .pods
                .values()
                .filter(|p| p.workload == name && p.terminating.is_none())
                .collect();
            let ready = mine.iter().filter(|p| p.ready).count() as i32;
            let updated = mine.iter().filter(|p| p.digest == d).count() as i32;
            let current_rev = if updated == mine.len() as i32 {
                d.clone()
            } else {
                "previous".to_string()
            };
            statuses.push((
                name,
                serde_json::json!({
                    "replicas": mine.len(),
                    "readyReplicas": ready,
                    "availableReplicas": ready,
                    "currentReplicas": mine.len() as i32 - updated,
                    "updatedReplicas": updated,
                    "currentRevision": current_rev,
                    "updateRevision": d,
                    "observedGeneration": s.metadata.generation,
                }),
                true,
            ));
        }

        // Deployments.
        for dep in &deps {
            let name = dep.name_any();
            let spec = dep.spec.clone().unwrap_or_default();
            let replicas = spec.replicas.unwrap_or(1);
            let d = digest(&spec.template);
            let live: Vec<(String, bool, bool)> = st
                .pods
                .iter()
                .filter(|(_, p)| p.workload == name && p.terminating.is_none())
                .map(|(n, p)| (n.clone(), p.ready, p.digest == d))
                .collect();
            let new: Vec<&(String, bool, bool)> = live.iter().filter(|p| p.2).collect();
            let old: Vec<&(String, bool, bool)> = live.iter().filter(|p| !p.2).collect();
            let ready_total = live.iter().filter(|p| p.1).count() as i32;
            let mut to_stop: Vec<String> = Vec::new();
            let mut to_start = 0;
            if !old.is_empty() {
                // maxSurge 1, maxUnavailable 0.
                if let Some(unready_old) = old.iter().find(|p| !p.1) {
                    to_stop.push(unready_old.0.clone());
                } else if ready_total > replicas {
                    to_stop.push(old[0].0.clone());
                } else if (new.len() as i32) < replicas && (live.len() as i32) < replicas + 1 && new.iter().all(|p| p.1)
                {
                    to_start = 1;
                }
            } else if (new.len() as i32) < replicas {
                to_start = replicas - new.len() as i32;
            } else if (new.len() as i32) > replicas {
                let mut extra: Vec<&&(String, bool, bool)> = new.iter().collect();
                extra.sort_by_key(|p| p.1);
                to_stop.extend(
                    extra
                        .iter()
                        .take((new.len() as i32 - replicas) as usize)
                        .map(|p| p.0.clone()),
                );
            }
            for n in to_stop {
                terminate(&mut st, &n);
            }
            for _ in 0..to_start {
                st.deploy_counter += 1;
                st.next_deploy_ip += 1;
                let k = st.next_deploy_ip;
                let ip = Ipv4Addr::new(127, inner.net, 100 + (k / 250) as u8, (k % 250) as u8 + 1);
                let pod_name = format!("{name}-{}-{}", &d[..6], st.deploy_counter);
                let log = inner.dir.join(format!("{pod_name}.log"));
                let mut pod = new_pod(&name, None, ip, &spec.template, log);
                let child = spawn(inner, &st, &pod_name, &pod, &sts_names, &cms);
                pod.child = Some(child);
                st.history.push(format!("start {pod_name} {d}"));
                st.pods.insert(pod_name, pod);
            }
            let mine: Vec<&Pod> = st
                .pods
                .values()
                .filter(|p| p.workload == name && p.terminating.is_none())
                .collect();
            let ready = mine.iter().filter(|p| p.ready).count() as i32;
            let updated = mine.iter().filter(|p| p.digest == d).count() as i32;
            statuses.push((
                name,
                serde_json::json!({
                    "replicas": mine.len(),
                    "readyReplicas": ready,
                    "availableReplicas": ready,
                    "unavailableReplicas": (mine.len() as i32 - ready).max(0),
                    "updatedReplicas": updated,
                    "observedGeneration": dep.metadata.generation,
                }),
                false,
            ));
        }

        // Crashed processes come back (restartPolicy Always), after a second.
        let crashed: Vec<String> = st
            .pods
            .iter()
            .filter(|(_, p)| {
                p.child.is_none()
                    && p.terminating.is_none()
                    && p.exited_at.is_some_and(|t| t.elapsed() > Duration::from_secs(1))
            })
            .map(|(n, _)| n.clone())
            .collect();
        for n in crashed {
            let pod = st.pods.get(&n).map(clone_pod).unwrap();
            let child = spawn(inner, &st, &n, &pod, &sts_names, &cms);
            let p = st.pods.get_mut(&n).unwrap();
            p.child = Some(child);
            p.restarts += 1;
            p.exited_at = None;
            st.history.push(format!("restart {n}"));
        }
    }
    for (name, status, is_sts) in statuses {
        let patch = Patch::Merge(serde_json::json!({ "status": status }));
        if is_sts {
            sts_api.patch_status(&name, &PatchParams::default(), &patch).await?;
        } else {
            dep_api.patch_status(&name, &PatchParams::default(), &patch).await?;
        }
    }

    bare_pods(inner, &cms).await?;

    // Services: a proxy per ClusterIP Service port.
    for svc in &svcs {
        let spec = svc.spec.clone().unwrap_or_default();
        if spec.cluster_ip.as_deref() == Some("None") {
            continue;
        }
        let name = svc.name_any();
        let ip = {
            let mut st = inner.state.lock().unwrap();
            service_ip(&mut st, inner.net, &name)
        };
        for port in spec.ports.clone().unwrap_or_default() {
            let key = (name.clone(), port.port as u16);
            if inner.state.lock().unwrap().proxies.contains_key(&key) {
                continue;
            }
            let listener = match tokio::net::TcpListener::bind((ip, port.port as u16)).await {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("kubelet: proxy for {name}:{} on {ip}: {e}", port.port);
                    continue;
                }
            };
            inner.state.lock().unwrap().proxies.insert(key, ());
            let selector = spec.selector.clone().unwrap_or_default();
            let target = port.target_port.clone();
            tokio::spawn(proxy(inner.clone(), listener, selector, target, port.port as u16));
        }
    }
    Ok(())
}

/// Runs pods without an owner once (init containers, then the container) and writes
/// their phase; forgets (and stops) those deleted from the API.
async fn bare_pods(inner: &Arc<Inner>, cms: &Mounted) -> Result<(), kube::Error> {
    let api: Api<KubePod> = Api::namespaced(inner.client.clone(), &inner.ns);
    let listed: Vec<KubePod> = api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|p| p.metadata.owner_references.as_ref().is_none_or(Vec::is_empty))
        .collect();
    let mut phases: Vec<(String, String, Ipv4Addr)> = Vec::new();
    {
        let mut st = inner.state.lock().unwrap();
        let live: HashSet<String> = listed.iter().filter_map(|p| p.uid()).collect();
        let gone: Vec<String> = st.bare.keys().filter(|u| !live.contains(*u)).cloned().collect();
        for uid in gone {
            if let Some(mut b) = st.bare.remove(&uid)
                && let Some(c) = b.pod.child.as_mut()
            {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        for p in &listed {
            let Some(uid) = p.uid() else { continue };
            let done = p
                .status
                .as_ref()
                .and_then(|s| s.phase.as_deref())
                .is_some_and(|ph| ph == "Succeeded" || ph == "Failed");
            if st.bare.contains_key(&uid) || done {
                continue;
            }
            let spec = p.spec.clone().unwrap_or_default();
            let mut stages = spec.init_containers.clone().unwrap_or_default();
            stages.extend(spec.containers.first().cloned());
            st.next_deploy_ip += 1;
            let k = st.next_deploy_ip;
            let ip = Ipv4Addr::new(127, inner.net, 100 + (k / 250) as u8, (k % 250) as u8 + 1);
            let template = PodTemplateSpec {
                metadata: Some(p.metadata.clone()),
                spec: Some(spec),
            };
            let name = p.name_any();
            let log = inner.dir.join(format!("{name}-{}.log", &uid[..8.min(uid.len())]));
            let pod = new_pod(&name, None, ip, &template, log);
            st.bare.insert(
                uid,
                BarePod {
                    name,
                    pod,
                    stages,
                    stage: 0,
                    phase: String::new(),
                },
            );
        }
        // Advance each: start the next stage once the previous one exited 0.
        let uids: Vec<String> = st.bare.keys().cloned().collect();
        for uid in uids {
            let exited = {
                let b = st.bare.get_mut(&uid).unwrap();
                match b.pod.child.as_mut() {
                    Some(c) => match c.try_wait() {
                        Ok(Some(status)) => {
                            b.pod.child = None;
                            Some(status.success())
                        }
                        _ => None,
                    },
                    None => None,
                }
            };
            let b = st.bare.get(&uid).unwrap();
            if matches!(b.phase.as_str(), "Succeeded" | "Failed") {
                continue;
            }
            let (start, phase) = match exited {
                Some(false) => (false, "Failed"),
                Some(true) if b.stage + 1 >= b.stages.len() => (false, "Succeeded"),
                Some(true) => (true, "Running"),
                None if b.pod.child.is_none() && b.stage == 0 && b.phase.is_empty() => (true, "Running"),
                None => (false, ""),
            };
            if start {
                let next = if exited == Some(true) { b.stage + 1 } else { 0 };
                let mut pod = clone_pod(&b.pod);
                pod.container = b.stages[next].clone();
                let child = spawn(inner, &st, &b.name, &pod, &[], cms);
                let b = st.bare.get_mut(&uid).unwrap();
                b.stage = next;
                b.pod.child = Some(child);
                let event = format!("start {} stage {next}", b.name);
                st.history.push(event);
            }
            if !phase.is_empty() {
                let b = st.bare.get_mut(&uid).unwrap();
                if b.phase != phase {
                    b.phase = phase.to_string();
                    phases.push((b.name.clone(), phase.to_string(), b.pod.ip));
                }
            }
        }
    }
    for (name, phase, ip) in phases {
        let patch = Patch::Merge(serde_json::json!({ "status": { "phase": phase, "podIP": ip.to_string() } }));
        match api.patch_status(&name, &PatchParams::default(), &patch).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn clone_pod(p: &Pod) -> Pod {
    Pod {
        workload: p.workload.clone(),
        ordinal: p.ordinal,
        ip: p.ip,
        digest: p.digest.clone(),
        labels: p.labels.clone(),
        container: p.container.clone(),
        template: p.template.clone(),
        child: None,
        log: p.log.clone(),
        ready: p.ready,
        restarts: p.restarts,
        exited_at: p.exited_at,
        terminating: p.terminating,
    }
}

/// kube-proxy for one Service port: each connection goes to a ready pod the selector
/// matches, round robin.
async fn proxy(
    inner: Arc<Inner>,
    listener: tokio::net::TcpListener,
    selector: BTreeMap<String, String>,
    target: Option<k8s_openapi::apimachinery::pkg::util::intstr::IntOrString>,
    port: u16,
) {
    let mut turn = 0usize;
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            return;
        };
        let backends: Vec<String> = {
            let st = inner.state.lock().unwrap();
            st.pods
                .values()
                .filter(|p| p.ready && selector.iter().all(|(k, v)| p.labels.get(k) == Some(v)))
                .map(|p| {
                    let port = match &target {
                        Some(t) => container_port(&p.container, t),
                        None => port,
                    };
                    format!("{}:{port}", p.ip)
                })
                .collect()
        };
        if backends.is_empty() {
            continue; // no endpoint: the connection is refused (dropped)
        }
        turn += 1;
        let backend = backends[turn % backends.len()].clone();
        tokio::spawn(async move {
            if let Ok(mut up) = tokio::net::TcpStream::connect(&backend).await {
                let _ = tokio::io::copy_bidirectional(&mut conn, &mut up).await;
            }
        });
    }
}
