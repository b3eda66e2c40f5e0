//! What a StrataCluster becomes in Kubernetes: pure functions from the resource and its
//! [`Plan`] to the objects to apply with server-side apply.
//!
//! Every object carries the labels of `OPERATOR.md` and an owner reference to the
//! StrataCluster (controller), so deleting the cluster deletes them — but not the PVCs of
//! the StatefulSets, which Kubernetes never deletes with their StatefulSet.
//!
//! Invariants:
//! - Selectors, Service names and volume claim templates (what Kubernetes will not change
//!   on a live StatefulSet) depend only on the cluster's name and the storage spec.
//! - Each workload's pod template carries `strata.io/config-hash`, the hash of the config
//!   file it mounts, so the template changes exactly when that file does.

use super::{Plan, PodOverrides, StrataCluster};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use std::collections::BTreeMap;

pub const BROKER_PORT: u16 = 6650;
pub const BROKER_HTTP_PORT: u16 = 8080;
pub const BOOKIE_PORT: u16 = 3181;
pub const BOOKIE_HTTP_PORT: u16 = 8000;
pub const ETCD_CLIENT_PORT: u16 = 2379;
pub const ETCD_PEER_PORT: u16 = 2380;

/// The pod template annotation holding the hash of the component's config file.
pub const CONFIG_HASH: &str = "strata.io/config-hash";
/// The user and group the pods run as (the image's `strata` user).
pub const RUN_AS: i64 = 10001;
// Every port names its protocol: Kubernetes before 1.21 refuses a server-side apply of a
// port list whose entries leave it to the default.

/// Names of the rendered objects.
pub mod names {
    pub fn metadata(cluster: &str) -> String {
        format!("{cluster}-metadata")
    }
    pub fn bookie(cluster: &str) -> String {
        format!("{cluster}-bookie")
    }
    pub fn broker(cluster: &str) -> String {
        format!("{cluster}-broker")
    }
    pub fn bookie_config(cluster: &str) -> String {
        format!("{cluster}-bookie-config")
    }
    pub fn broker_config(cluster: &str) -> String {
        format!("{cluster}-broker-config")
    }
    /// The Secret of the cluster's signing key and tokens (auth on).
    pub fn auth_secret(cluster: &str) -> String {
        format!("{cluster}-auth")
    }
}

/// The pods' config hash: their config file and, with auth on, the signing key's hash.
fn config_hash(toml: &str, plan: &Plan) -> String {
    match &plan.auth_key_hash {
        None => hash(toml),
        Some(k) => hash(&format!("{toml}\n{k}")),
    }
}

/// The file of the operator's token in the auth Secret.
pub const OPERATOR_TOKEN: &str = "operator.token";

/// A new auth Secret for `sc`: `key` (the HS256 signing key, printable) and a token for
/// each of the node, operator and admin roles.
pub fn auth_secret(sc: &StrataCluster, key: &str) -> Result<k8s_openapi::api::core::v1::Secret, String> {
    use k8s_openapi::ByteString;
    let signing = strata_net::auth::SigningKey::Secret(key.as_bytes().to_vec());
    let token = |role: &str| {
        let claims = strata_net::auth::Claims {
            sub: role.into(),
            exp: None,
            iat: None,
            aud: None,
            iss: None,
        };
        strata_net::auth::create(&signing, &claims, None)
    };
    let mut data = BTreeMap::new();
    data.insert("secret".to_string(), ByteString(key.as_bytes().to_vec()));
    for (file, role) in [
        ("node.token", super::NODE_ROLE),
        (OPERATOR_TOKEN, super::OPERATOR_ROLE),
        ("admin.token", super::ADMIN_ROLE),
    ] {
        data.insert(file.to_string(), ByteString(token(role)?.into_bytes()));
    }
    Ok(k8s_openapi::api::core::v1::Secret {
        metadata: typed(meta(sc, &names::auth_secret(&sc.name_any()), "auth")),
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Default::default()
    })
}

/// Where brokers and bookies find the auth Secret's files.
pub const AUTH_DIR: &str = "/etc/strata-auth";

/// The `[auth]` section of brokers and bookies, if auth is on.
fn auth_toml(sc: &StrataCluster) -> String {
    let Some(s) = sc.spec.security.as_ref().filter(|s| s.auth.enabled) else {
        return String::new();
    };
    let mut roles = vec![
        super::NODE_ROLE.to_string(),
        super::OPERATOR_ROLE.to_string(),
        super::ADMIN_ROLE.to_string(),
    ];
    roles.extend(s.auth.superuser_roles.iter().cloned());
    let roles: Vec<String> = roles
        .iter()
        .map(|r| serde_json::to_string(r).expect("string"))
        .collect();
    format!(
        "\n[auth]\nenabled = true\nsecret_file = \"{AUTH_DIR}/secret\"\nsuperuser_roles = [{}]\ntoken_file = \"{AUTH_DIR}/node.token\"\n",
        roles.join(", ")
    )
}

/// The auth Secret's volume and mount, if auth is on.
fn auth_volume(sc: &StrataCluster) -> Option<(Value, Value)> {
    sc.spec.auth_enabled().then(|| {
        (
            json!({ "name": "auth", "secret": { "secretName": names::auth_secret(&sc.name_any()) } }),
            json!({ "name": "auth", "mountPath": AUTH_DIR, "readOnly": true }),
        )
    })
}

/// One component's objects.
#[derive(Debug, Clone)]
pub struct Tier<W> {
    pub config: Option<ConfigMap>,
    pub service: Service,
    pub workload: W,
    pub pdb: PodDisruptionBudget,
}

/// Everything a StrataCluster renders to.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub metadata: Option<Tier<StatefulSet>>,
    pub bookies: Tier<StatefulSet>,
    pub brokers: Tier<Deployment>,
    /// The headless Service naming each broker by its pod IP (what brokers advertise
    /// with TLS on: [`super::tls`]).
    pub broker_pods: Service,
}

/// The labels of everything rendered for `component` of `cluster`.
pub fn labels(cluster: &str, component: &str) -> BTreeMap<String, String> {
    let mut l = selector(cluster, component);
    l.insert("app.kubernetes.io/managed-by".into(), crate::MANAGER.into());
    l.insert("app.kubernetes.io/part-of".into(), "strata".into());
    l
}

/// The labels that select `component`'s pods (fixed for the life of the workload).
pub fn selector(cluster: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "strata".to_string()),
        ("app.kubernetes.io/instance".to_string(), cluster.to_string()),
        ("app.kubernetes.io/component".to_string(), component.to_string()),
    ])
}

/// `k=v,k=v` of [`selector`], as the scale subresource reports it.
pub fn selector_string(cluster: &str, component: &str) -> String {
    selector(cluster, component)
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// 64-bit FNV-1a: stable across Rust releases (unlike `DefaultHasher`), so an operator
/// upgrade does not roll every pod.
pub fn hash(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn snake(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 4);
    for c in camel.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// `key = value` lines of a config struct's set fields, keys in snake_case, sorted.
fn toml_lines(config: &impl serde::Serialize) -> Vec<String> {
    let Value::Object(map) = serde_json::to_value(config).expect("config serialises") else {
        return Vec::new();
    };
    let mut lines: Vec<String> = map
        .into_iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| format!("{} = {v}", snake(&k)))
        .collect();
    lines.sort();
    lines
}

/// The broker's `broker.toml`.
pub fn broker_toml(sc: &StrataCluster, plan: &Plan) -> String {
    let mut out = format!(
        "# Rendered by the Strata operator from StrataCluster {}/{}; edit the resource, not this.\n[broker]\n",
        sc.namespace().unwrap_or_default(),
        sc.name_any()
    );
    let mut lines = toml_lines(&sc.spec.brokers.config);
    lines.push(format!("ensemble_size = {}", plan.ensemble));
    lines.push(format!("write_quorum = {}", plan.write_quorum));
    lines.push(format!("ack_quorum = {}", plan.ack_quorum));
    if let Some(b) = sc.spec.bookies.config.max_entry_bytes {
        lines.push(format!("bookie_max_entry_bytes = {b}"));
    }
    lines.sort();
    for l in lines {
        out.push_str(&l);
        out.push('\n');
    }
    if let Some(o) = &sc.spec.offload {
        let mut o = o.clone();
        o.credentials_secret = None;
        out.push_str("\n[offload]\n");
        for l in toml_lines(&o) {
            out.push_str(&l);
            out.push('\n');
        }
    }
    out.push_str(&auth_toml(sc));
    out.push_str(&super::tls::toml(sc));
    out
}

/// The bookie's `bookie.toml`.
pub fn bookie_toml(sc: &StrataCluster) -> String {
    let mut out = format!(
        "# Rendered by the Strata operator from StrataCluster {}/{}; edit the resource, not this.\n",
        sc.namespace().unwrap_or_default(),
        sc.name_any()
    );
    for l in toml_lines(&sc.spec.bookies.config) {
        out.push_str(&l);
        out.push('\n');
    }
    out.push_str(&auth_toml(sc));
    out.push_str(&super::tls::toml(sc));
    out
}

fn meta(sc: &StrataCluster, name: &str, component: &str) -> Value {
    let owner = sc.controller_owner_ref(&()).map(|o| vec![o]).unwrap_or_default();
    json!({
        "name": name,
        "namespace": sc.namespace().unwrap_or_default(),
        "labels": labels(&sc.name_any(), component),
        "ownerReferences": owner,
    })
}

fn typed<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("a rendered object matches its Kubernetes type")
}

fn config_map(sc: &StrataCluster, name: &str, component: &str, file: &str, text: &str) -> ConfigMap {
    typed(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta(sc, name, component),
        "data": { file: text },
    }))
}

fn pdb(sc: &StrataCluster, name: &str, component: &str) -> PodDisruptionBudget {
    typed(json!({
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": meta(sc, name, component),
        "spec": {
            "maxUnavailable": 1,
            "selector": { "matchLabels": selector(&sc.name_any(), component) },
        },
    }))
}

fn headless(sc: &StrataCluster, name: &str, component: &str, ports: Value) -> Service {
    typed(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(sc, name, component),
        "spec": {
            "clusterIP": "None",
            // Members must find each other before they are ready (etcd's bootstrap, a
            // bookie's identity).
            "publishNotReadyAddresses": true,
            "selector": selector(&sc.name_any(), component),
            "ports": ports,
        },
    }))
}

/// The pod template of `component`: labels, annotations (with the config hash), security
/// and the user's overrides around `container`.
fn pod_template(
    sc: &StrataCluster,
    component: &str,
    overrides: &PodOverrides,
    config_hash: Option<String>,
    container: Value,
    volumes: Value,
    grace_secs: i64,
) -> Value {
    let mut labels_map = overrides.labels.clone();
    labels_map.extend(labels(&sc.name_any(), component));
    let mut annotations = overrides.annotations.clone();
    if let Some(h) = config_hash {
        annotations.insert(CONFIG_HASH.into(), h);
    }
    let mut spec = json!({
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "fsGroup": RUN_AS,
            "seccompProfile": { "type": "RuntimeDefault" },
        },
        "terminationGracePeriodSeconds": grace_secs,
        "containers": [container],
        "volumes": volumes,
    });
    let s = spec.as_object_mut().expect("object");
    if let Some(a) = &overrides.affinity {
        s.insert("affinity".into(), serde_json::to_value(a).expect("affinity"));
    }
    if !overrides.tolerations.is_empty() {
        s.insert(
            "tolerations".into(),
            serde_json::to_value(&overrides.tolerations).expect("tolerations"),
        );
    }
    if !overrides.node_selector.is_empty() {
        s.insert("nodeSelector".into(), json!(overrides.node_selector));
    }
    if let Some(p) = &overrides.priority_class_name {
        s.insert("priorityClassName".into(), json!(p));
    }
    if !sc.spec.image_pull_secrets.is_empty() {
        let secrets: Vec<Value> = sc
            .spec
            .image_pull_secrets
            .iter()
            .map(|n| json!({ "name": n }))
            .collect();
        s.insert("imagePullSecrets".into(), json!(secrets));
    }
    json!({
        "metadata": { "labels": labels_map, "annotations": annotations },
        "spec": spec,
    })
}

fn container_security() -> Value {
    json!({
        "allowPrivilegeEscalation": false,
        "readOnlyRootFilesystem": true,
        "capabilities": { "drop": ["ALL"] },
    })
}

fn container(
    sc: &StrataCluster,
    name: &str,
    image: &str,
    resources: &Option<k8s_openapi::api::core::v1::ResourceRequirements>,
) -> serde_json::Map<String, Value> {
    let mut c = json!({
        "name": name,
        "image": image,
        "securityContext": container_security(),
    });
    let m = c.as_object_mut().expect("object");
    if let Some(p) = &sc.spec.image_pull_policy {
        m.insert("imagePullPolicy".into(), json!(p));
    }
    if let Some(r) = resources {
        m.insert("resources".into(), serde_json::to_value(r).expect("resources"));
    }
    m.clone()
}

/// An HTTP GET probe; over HTTPS when `sc`'s HTTP ports serve TLS (`spec.security.tls.http`).
fn http_probe(sc: Option<&StrataCluster>, path: &str, port: &str, period: i64, failures: i64) -> Value {
    let mut get = json!({ "path": path, "port": port });
    if sc.is_some_and(|sc| sc.spec.tls().is_some_and(|t| t.http)) {
        get["scheme"] = json!("HTTPS");
    }
    json!({
        "httpGet": get,
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    })
}

fn volume_claim(storage: &super::Storage) -> Value {
    let mut spec = json!({
        "accessModes": ["ReadWriteOnce"],
        "resources": { "requests": { "storage": storage.size.0 } },
    });
    if let Some(class) = &storage.storage_class_name {
        spec.as_object_mut()
            .expect("object")
            .insert("storageClassName".into(), json!(class));
    }
    json!({ "metadata": { "name": "data" }, "spec": spec })
}

fn pod_name_env() -> Value {
    json!({ "name": "POD_NAME", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } })
}

fn metadata_tier(sc: &StrataCluster, m: &super::ManagedMetadata) -> Tier<StatefulSet> {
    let cluster = sc.name_any();
    let ns = sc.namespace().unwrap_or_default();
    let name = names::metadata(&cluster);
    let peer = |member: &str| format!("http://{member}.{name}.{ns}.svc:{ETCD_PEER_PORT}");
    let initial: Vec<String> = (0..m.replicas)
        .map(|i| {
            let member = format!("{name}-{i}");
            format!("{member}={}", peer(&member))
        })
        .collect();
    let mut c = container(
        sc,
        "etcd",
        m.image.as_deref().unwrap_or(super::DEFAULT_ETCD_IMAGE),
        &m.resources,
    );
    c.insert("command".into(), json!(["etcd"]));
    c.insert(
        "args".into(),
        json!([
            "--name=$(POD_NAME)",
            "--data-dir=/var/lib/etcd/data",
            format!("--listen-client-urls=http://0.0.0.0:{ETCD_CLIENT_PORT}"),
            format!("--advertise-client-urls=http://$(POD_NAME).{name}.{ns}.svc:{ETCD_CLIENT_PORT}"),
            format!("--listen-peer-urls=http://0.0.0.0:{ETCD_PEER_PORT}"),
            format!("--initial-advertise-peer-urls={}", peer("$(POD_NAME)")),
            format!("--initial-cluster={}", initial.join(",")),
            "--initial-cluster-state=new",
            format!("--initial-cluster-token={ns}-{cluster}"),
        ]),
    );
    c.insert("env".into(), json!([pod_name_env()]));
    c.insert(
        "ports".into(),
        json!([
            { "name": "client", "containerPort": ETCD_CLIENT_PORT, "protocol": "TCP" },
            { "name": "peer", "containerPort": ETCD_PEER_PORT, "protocol": "TCP" },
        ]),
    );
    c.insert("readinessProbe".into(), http_probe(None, "/health", "client", 5, 3));
    c.insert(
        "livenessProbe".into(),
        json!({ "tcpSocket": { "port": "client" }, "periodSeconds": 10, "failureThreshold": 6 }),
    );
    c.insert(
        "volumeMounts".into(),
        json!([{ "name": "data", "mountPath": "/var/lib/etcd" }]),
    );
    let template = pod_template(sc, "metadata", &m.pod_template, None, Value::Object(c), json!([]), 30);
    let sts = typed(json!({
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": meta(sc, &name, "metadata"),
        "spec": {
            "serviceName": name,
            "replicas": m.replicas,
            "podManagementPolicy": "Parallel",
            "selector": { "matchLabels": selector(&cluster, "metadata") },
            "updateStrategy": { "type": "RollingUpdate" },
            "template": template,
            "volumeClaimTemplates": [volume_claim(&m.storage)],
        },
    }));
    Tier {
        config: None,
        service: headless(
            sc,
            &name,
            "metadata",
            json!([
                { "name": "client", "port": ETCD_CLIENT_PORT, "targetPort": "client", "protocol": "TCP" },
                { "name": "peer", "port": ETCD_PEER_PORT, "targetPort": "peer", "protocol": "TCP" },
            ]),
        ),
        workload: sts,
        pdb: pdb(sc, &name, "metadata"),
    }
}

fn bookie_tier(sc: &StrataCluster, plan: &Plan, replicas: i32) -> Tier<StatefulSet> {
    let cluster = sc.name_any();
    let ns = sc.namespace().unwrap_or_default();
    let name = names::bookie(&cluster);
    let toml = bookie_toml(sc);
    let b = &sc.spec.bookies;
    let mut c = container(sc, "bookie", &sc.spec.image, &b.resources);
    c.insert("command".into(), json!(["strata"]));
    c.insert(
        "args".into(),
        json!([
            "bookie",
            "--config=/etc/strata/bookie.toml",
            "--data-dir=/var/lib/strata/bookie",
            format!("--listen=0.0.0.0:{BOOKIE_PORT}"),
            format!("--advertised-address=$(POD_NAME).{name}.{ns}.svc:{BOOKIE_PORT}"),
            format!("--metadata-url={}", plan.metadata_url),
            format!("--http-listen=0.0.0.0:{BOOKIE_HTTP_PORT}"),
        ]),
    );
    c.insert(
        "env".into(),
        json!([pod_name_env(), { "name": "STRATA_LOG_FORMAT", "value": "json" }]),
    );
    c.insert(
        "ports".into(),
        json!([
            { "name": "bookie", "containerPort": BOOKIE_PORT, "protocol": "TCP" },
            { "name": "http", "containerPort": BOOKIE_HTTP_PORT, "protocol": "TCP" },
        ]),
    );
    c.insert("readinessProbe".into(), http_probe(Some(sc), "/readyz", "http", 5, 3));
    c.insert("livenessProbe".into(), http_probe(Some(sc), "/healthz", "http", 10, 6));
    // Journal replay after a crash can take a while: liveness waits for it (30 min).
    c.insert("startupProbe".into(), http_probe(Some(sc), "/healthz", "http", 10, 180));
    let mut mounts = vec![
        json!({ "name": "config", "mountPath": "/etc/strata", "readOnly": true }),
        json!({ "name": "data", "mountPath": "/var/lib/strata" }),
    ];
    let mut volumes = vec![json!({ "name": "config", "configMap": { "name": names::bookie_config(&cluster) } })];
    for (v, m) in auth_volume(sc).into_iter().chain(super::tls::volume(sc)) {
        volumes.push(v);
        mounts.push(m);
    }
    c.insert("volumeMounts".into(), Value::Array(mounts));
    let volumes = Value::Array(volumes);
    let template = pod_template(
        sc,
        "bookie",
        &b.pod_template,
        Some(config_hash(&toml, plan)),
        Value::Object(c),
        volumes,
        60,
    );
    let sts = typed(json!({
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": meta(sc, &name, "bookie"),
        "spec": {
            "serviceName": name,
            "replicas": replicas,
            "podManagementPolicy": "Parallel",
            "selector": { "matchLabels": selector(&cluster, "bookie") },
            // One bookie at a time, each ready before the next (the StatefulSet
            // controller's rolling update).
            "updateStrategy": { "type": "RollingUpdate" },
            "template": template,
            "volumeClaimTemplates": [volume_claim(&b.storage)],
        },
    }));
    Tier {
        config: Some(config_map(
            sc,
            &names::bookie_config(&cluster),
            "bookie",
            "bookie.toml",
            &toml,
        )),
        service: headless(
            sc,
            &name,
            "bookie",
            json!([
                { "name": "bookie", "port": BOOKIE_PORT, "targetPort": "bookie", "protocol": "TCP" },
                { "name": "http", "port": BOOKIE_HTTP_PORT, "targetPort": "http", "protocol": "TCP" },
            ]),
        ),
        workload: sts,
        pdb: pdb(sc, &name, "bookie"),
    }
}

fn broker_tier(sc: &StrataCluster, plan: &Plan, replicas: i32) -> Tier<Deployment> {
    let cluster = sc.name_any();
    let name = names::broker(&cluster);
    let toml = broker_toml(sc, plan);
    let b = &sc.spec.brokers;
    let mut c = container(sc, "broker", &sc.spec.image, &b.resources);
    c.insert("command".into(), json!(["strata"]));
    let mut args = vec![
        "broker".to_string(),
        "--config=/etc/strata/broker.toml".into(),
        format!("--listen=0.0.0.0:{BROKER_PORT}"),
        format!("--advertised-address=$(POD_IP):{BROKER_PORT}"),
        format!("--http-listen=0.0.0.0:{BROKER_HTTP_PORT}"),
        format!("--metadata-url={}", plan.metadata_url),
    ];
    if sc.spec.tls().is_some() {
        // Each broker by a name its certificate can carry (module docs of `tls`).
        let ns = sc.namespace().unwrap_or_default();
        args.push(format!(
            "--advertised-ip-domain={}",
            super::tls::broker_domain(&cluster, &ns)
        ));
    }
    c.insert("args".into(), json!(args));
    c.insert(
        "env".into(),
        json!([
            { "name": "POD_IP", "valueFrom": { "fieldRef": { "fieldPath": "status.podIP" } } },
            { "name": "STRATA_LOG_FORMAT", "value": "json" },
        ]),
    );
    if let Some(secret) = sc.spec.offload.as_ref().and_then(|o| o.credentials_secret.as_ref()) {
        c.insert("envFrom".into(), json!([{ "secretRef": { "name": secret } }]));
    }
    c.insert(
        "ports".into(),
        json!([
            { "name": "client", "containerPort": BROKER_PORT, "protocol": "TCP" },
            { "name": "http", "containerPort": BROKER_HTTP_PORT, "protocol": "TCP" },
        ]),
    );
    c.insert("readinessProbe".into(), http_probe(Some(sc), "/readyz", "http", 5, 3));
    c.insert("livenessProbe".into(), http_probe(Some(sc), "/healthz", "http", 10, 6));
    let mut mounts = vec![json!({ "name": "config", "mountPath": "/etc/strata", "readOnly": true })];
    let mut volumes = vec![json!({ "name": "config", "configMap": { "name": names::broker_config(&cluster) } })];
    for (v, m) in auth_volume(sc).into_iter().chain(super::tls::volume(sc)) {
        volumes.push(v);
        mounts.push(m);
    }
    c.insert("volumeMounts".into(), Value::Array(mounts));
    let volumes = Value::Array(volumes);
    // A stopping broker hands its bundles over (closing topics cleanly) before it exits.
    let template = pod_template(
        sc,
        "broker",
        &b.pod_template,
        Some(config_hash(&toml, plan)),
        Value::Object(c),
        volumes,
        60,
    );
    let deployment = typed(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(sc, &name, "broker"),
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": selector(&cluster, "broker") },
            // A new broker is ready before an old one stops: capacity never dips.
            "strategy": { "type": "RollingUpdate", "rollingUpdate": { "maxSurge": 1, "maxUnavailable": 0 } },
            "template": template,
        },
    }));
    let service: Service = typed(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(sc, &name, "broker"),
        "spec": {
            "type": "ClusterIP",
            "selector": selector(&cluster, "broker"),
            "ports": [
                { "name": "client", "port": BROKER_PORT, "targetPort": "client", "protocol": "TCP" },
                { "name": "http", "port": BROKER_HTTP_PORT, "targetPort": "http", "protocol": "TCP" },
            ],
        },
    }));
    Tier {
        config: Some(config_map(
            sc,
            &names::broker_config(&cluster),
            "broker",
            "broker.toml",
            &toml,
        )),
        service,
        workload: deployment,
        pdb: pdb(sc, &name, "broker"),
    }
}

/// Renders the whole cluster with `bookies` and `brokers` replicas (as decided by
/// [`super::rollout`]).
pub fn render(sc: &StrataCluster, plan: &Plan, bookies: i32, brokers: i32) -> Rendered {
    Rendered {
        metadata: plan.managed_metadata.as_ref().map(|m| metadata_tier(sc, m)),
        bookies: bookie_tier(sc, plan, bookies),
        brokers: broker_tier(sc, plan, brokers),
        broker_pods: headless(
            sc,
            &super::tls::broker_pods_service(&sc.name_any()),
            "broker",
            json!([{ "name": "client", "port": BROKER_PORT, "targetPort": "client", "protocol": "TCP" }]),
        ),
    }
}

/// The cert-manager Certificate of `sc`, if its TLS names an issuer.
pub fn certificate(sc: &StrataCluster) -> Option<Value> {
    let name = super::tls::certificate_name(&sc.name_any());
    super::tls::certificate(sc, meta(sc, &name, "tls"))
}

/// The config hash a live pod template carries.
pub fn template_hash(template: Option<&k8s_openapi::api::core::v1::PodTemplateSpec>) -> Option<String> {
    template?
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get(CONFIG_HASH)
        .cloned()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::{StrataClusterSpec, validate};
    use super::*;

    pub(crate) fn cluster(spec: StrataClusterSpec) -> StrataCluster {
        let mut sc = StrataCluster::new("demo", spec);
        sc.metadata.namespace = Some("prod".into());
        sc.metadata.uid = Some("uid-1".into());
        sc
    }

    fn spec() -> StrataClusterSpec {
        StrataClusterSpec {
            image: "strata:1".into(),
            ..Default::default()
        }
    }

    #[test]
    fn every_object_is_labelled_and_owned_and_names_are_stable() {
        let sc = cluster(spec());
        let plan = validate(&sc.spec, "demo", "prod").unwrap();
        let r = render(&sc, &plan, 3, 2);
        let m = r.metadata.as_ref().unwrap();
        let metas = [
            &m.service.metadata,
            &m.workload.metadata,
            &m.pdb.metadata,
            &r.bookies.service.metadata,
            &r.bookies.workload.metadata,
            &r.bookies.pdb.metadata,
            &r.bookies.config.as_ref().unwrap().metadata,
            &r.brokers.service.metadata,
            &r.brokers.workload.metadata,
            &r.brokers.pdb.metadata,
            &r.brokers.config.as_ref().unwrap().metadata,
        ];
        for meta in metas {
            let l = meta.labels.as_ref().unwrap();
            assert_eq!(l["app.kubernetes.io/name"], "strata");
            assert_eq!(l["app.kubernetes.io/instance"], "demo");
            assert_eq!(l["app.kubernetes.io/managed-by"], "strata-operator");
            assert_eq!(l["app.kubernetes.io/part-of"], "strata");
            let owner = &meta.owner_references.as_ref().unwrap()[0];
            assert_eq!(
                (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
                ("StrataCluster", "uid-1", Some(true))
            );
            assert_eq!(meta.namespace.as_deref(), Some("prod"));
        }
        assert_eq!(r.bookies.workload.metadata.name.as_deref(), Some("demo-bookie"));
        assert_eq!(r.brokers.workload.metadata.name.as_deref(), Some("demo-broker"));
        assert_eq!(r.brokers.workload.spec.as_ref().unwrap().replicas, Some(2));
        assert_eq!(r.bookies.workload.spec.as_ref().unwrap().replicas, Some(3));
        assert_eq!(
            selector_string("demo", "broker"),
            "app.kubernetes.io/component=broker,app.kubernetes.io/instance=demo,app.kubernetes.io/name=strata"
        );
    }

    #[test]
    fn bookies_get_a_stable_identity_their_volume_and_the_metadata_store() {
        let sc = cluster(spec());
        let plan = validate(&sc.spec, "demo", "prod").unwrap();
        let r = render(&sc, &plan, 3, 2);
        let s = r.bookies.workload.spec.unwrap();
        assert_eq!(s.service_name.as_deref(), Some("demo-bookie"));
        let c = &s.template.spec.as_ref().unwrap().containers[0];
        let args = c.args.as_ref().unwrap();
        assert!(args.contains(&"--advertised-address=$(POD_NAME).demo-bookie.prod.svc:3181".to_string()));
        assert!(args.contains(&"--metadata-url=etcd://demo-metadata-0.demo-metadata.prod.svc:2379".to_string()));
        let vct = &s.volume_claim_templates.as_ref().unwrap()[0];
        assert_eq!(vct.metadata.name.as_deref(), Some("data"));
        assert_eq!(
            vct.spec
                .as_ref()
                .unwrap()
                .resources
                .as_ref()
                .unwrap()
                .requests
                .as_ref()
                .unwrap()["storage"]
                .0,
            "10Gi"
        );
        assert_eq!(
            r.bookies.service.spec.as_ref().unwrap().cluster_ip.as_deref(),
            Some("None")
        );
    }

    #[test]
    fn auth_renders_the_auth_section_the_secret_volume_and_valid_tokens() {
        let plan_of = |sc: &StrataCluster| super::super::validate(&sc.spec, "demo", "prod").unwrap();
        let plain = cluster(spec());
        assert!(!broker_toml(&plain, &plan_of(&plain)).contains("[auth]"));
        let mut s = spec();
        s.security = Some(super::super::Security {
            auth: super::super::Auth {
                enabled: true,
                superuser_roles: vec!["ops".into()],
            },
            ..Default::default()
        });
        let sc = cluster(s);
        let plan = plan_of(&sc);
        for toml in [broker_toml(&sc, &plan), bookie_toml(&sc)] {
            let section = toml.split("[auth]").nth(1).expect("an [auth] section");
            assert!(section.contains("enabled = true"), "{toml}");
            assert!(section.contains("secret_file = \"/etc/strata-auth/secret\""), "{toml}");
            assert!(
                section.contains("token_file = \"/etc/strata-auth/node.token\""),
                "{toml}"
            );
            assert!(
                section.contains(r#"superuser_roles = ["strata-node", "strata-operator", "admin", "ops"]"#),
                "{toml}"
            );
        }
        let r = render(&sc, &plan, 3, 2);
        for spec in [
            serde_json::to_value(&r.bookies.workload.spec).unwrap()["template"]["spec"].clone(),
            serde_json::to_value(&r.brokers.workload.spec).unwrap()["template"]["spec"].clone(),
        ] {
            assert!(
                spec["volumes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|v| v["secret"]["secretName"] == "demo-auth"),
                "{spec}"
            );
            assert!(
                spec["containers"][0]["volumeMounts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|m| m["mountPath"] == AUTH_DIR),
                "{spec}"
            );
        }
        // The Secret's tokens verify with its key, each with its role.
        let secret = auth_secret(&sc, "0123456789abcdef0123456789abcdef").unwrap();
        assert_eq!(
            secret.metadata.owner_references.as_ref().unwrap()[0].kind,
            "StrataCluster"
        );
        let data = secret.data.unwrap();
        let dir = std::env::temp_dir().join(format!("strata-auth-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("secret"), &data["secret"].0).unwrap();
        let verifier = strata_net::auth::AuthSettings {
            enabled: true,
            secret_file: Some(dir.join("secret")),
            ..Default::default()
        }
        .verifier()
        .unwrap()
        .unwrap();
        for (file, role) in [
            ("node.token", "strata-node"),
            ("operator.token", "strata-operator"),
            ("admin.token", "admin"),
        ] {
            let t = String::from_utf8(data[file].0.clone()).unwrap();
            assert_eq!(verifier.verify(&t).unwrap().sub, role);
        }
        let _ = std::fs::remove_dir_all(dir);
        assert_eq!(
            super::super::cluster_of_service_url(&super::super::service_url("demo", "prod")),
            Some(("demo".into(), "prod".into()))
        );
        for other in [
            "http://demo.prod.svc:6650",
            "http://10.0.0.1:6650",
            "http://x-broker.prod.example.com:6650",
        ] {
            assert_eq!(super::super::cluster_of_service_url(other), None, "{other}");
        }
    }

    #[test]
    fn config_lands_in_toml_and_its_hash_in_the_pod_template() {
        let mut s = spec();
        s.brokers.config.retention_time_secs = Some(3600);
        s.brokers.config.auto_create_topics = Some(false);
        s.bookies.config.max_entry_bytes = Some(8 << 20);
        s.bookies.config.compaction_threshold = Some(0.25);
        s.replication.ensemble_size = Some(3);
        s.replication.ack_quorum = Some(2);
        let sc = cluster(s);
        let plan = validate(&sc.spec, "demo", "prod").unwrap();
        let broker = broker_toml(&sc, &plan);
        for line in [
            "[broker]",
            "retention_time_secs = 3600",
            "auto_create_topics = false",
            "ensemble_size = 3",
            "write_quorum = 3",
            "ack_quorum = 2",
            "bookie_max_entry_bytes = 8388608",
        ] {
            assert!(broker.lines().any(|l| l == line), "{line} missing from\n{broker}");
        }
        // Offload: its own section, credentials from the Secret as environment only.
        let mut with_offload = sc.spec.clone();
        with_offload.offload = Some(crate::cluster::Offload {
            url: "s3://bucket/strata".into(),
            endpoint: Some("http://minio:9000".into()),
            credentials_secret: Some("s3-creds".into()),
            threshold_bytes: Some(0),
            ..Default::default()
        });
        let sc_off = cluster(with_offload);
        let toml = broker_toml(&sc_off, &plan);
        let offload_part = toml.split("[offload]").nth(1).expect("an [offload] section");
        for line in [
            "url = \"s3://bucket/strata\"",
            "endpoint = \"http://minio:9000\"",
            "threshold_bytes = 0",
        ] {
            assert!(offload_part.lines().any(|l| l == line), "{line} missing from\n{toml}");
        }
        assert!(!toml.contains("s3-creds") && !toml.contains("credentials"), "{toml}");
        let parsed: toml::Value = toml::from_str(&toml).unwrap();
        assert_eq!(parsed["offload"]["url"].as_str(), Some("s3://bucket/strata"));
        let r = render(&sc_off, &plan, 3, 2);
        let pod = serde_json::to_value(&r.brokers.workload.spec.as_ref().unwrap().template).unwrap();
        assert_eq!(
            pod["spec"]["containers"][0]["envFrom"][0]["secretRef"]["name"],
            "s3-creds"
        );
        let bookie = bookie_toml(&sc);
        assert!(bookie.lines().any(|l| l == "max_entry_bytes = 8388608"), "{bookie}");
        assert!(bookie.lines().any(|l| l == "compaction_threshold = 0.25"), "{bookie}");
        let r = render(&sc, &plan, 3, 2);
        assert_eq!(
            template_hash(Some(&r.brokers.workload.spec.as_ref().unwrap().template)),
            Some(hash(&broker))
        );
        assert_eq!(
            template_hash(Some(&r.bookies.workload.spec.as_ref().unwrap().template)),
            Some(hash(&bookie))
        );
        // A broker setting changes the broker template only.
        let mut s2 = sc.spec.clone();
        s2.brokers.config.retention_time_secs = Some(7200);
        let sc2 = cluster(s2);
        let r2 = render(&sc2, &plan, 3, 2);
        assert_ne!(
            r2.brokers.workload.spec.as_ref().unwrap().template,
            r.brokers.workload.spec.as_ref().unwrap().template
        );
        assert_eq!(
            r2.bookies.workload.spec.as_ref().unwrap().template,
            r.bookies.workload.spec.as_ref().unwrap().template
        );
    }

    #[test]
    fn overrides_reach_the_pod_but_never_replace_the_operators_labels() {
        let mut s = spec();
        s.brokers.pod_template.labels.insert("team".into(), "payments".into());
        s.brokers
            .pod_template
            .labels
            .insert("app.kubernetes.io/instance".into(), "other".into());
        s.brokers
            .pod_template
            .annotations
            .insert("prometheus.io/scrape".into(), "true".into());
        s.brokers.pod_template.tolerations = vec![k8s_openapi::api::core::v1::Toleration {
            key: Some("dedicated".into()),
            operator: Some("Exists".into()),
            ..Default::default()
        }];
        s.image_pull_secrets = vec!["regcred".into()];
        let sc = cluster(s);
        let plan = validate(&sc.spec, "demo", "prod").unwrap();
        let r = render(&sc, &plan, 3, 2);
        let t = &r.brokers.workload.spec.as_ref().unwrap().template;
        let m = t.metadata.as_ref().unwrap();
        assert_eq!(m.labels.as_ref().unwrap()["team"], "payments");
        assert_eq!(m.labels.as_ref().unwrap()["app.kubernetes.io/instance"], "demo");
        assert_eq!(m.annotations.as_ref().unwrap()["prometheus.io/scrape"], "true");
        let p = t.spec.as_ref().unwrap();
        assert_eq!(p.tolerations.as_ref().unwrap()[0].key.as_deref(), Some("dedicated"));
        assert_eq!(p.image_pull_secrets.as_ref().unwrap()[0].name, "regcred");
        // Bookies did not get the brokers' overrides.
        let b = r
            .bookies
            .workload
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap();
        assert!(b.tolerations.is_none());
    }

    #[test]
    fn an_external_store_renders_no_etcd() {
        let mut s = spec();
        s.metadata_store.external = Some(super::super::ExternalMetadata {
            endpoints: vec!["etcd.infra:2379".into()],
        });
        let sc = cluster(s);
        let plan = validate(&sc.spec, "demo", "prod").unwrap();
        let r = render(&sc, &plan, 3, 2);
        assert!(r.metadata.is_none());
        let args = r.brokers.workload.spec.unwrap().template.spec.unwrap().containers[0]
            .args
            .clone()
            .unwrap();
        assert!(args.contains(&"--metadata-url=etcd://etcd.infra:2379".to_string()));
    }
}
