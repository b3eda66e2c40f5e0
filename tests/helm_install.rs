//! `helm install` of the chart on a real kube-apiserver (tests/common/kube.rs): the chart's
//! operator, run as a local process with its rendered args and its service account's RBAC,
//! reconciles the chart's StrataCluster, whose workloads the test kubelet runs; a client
//! and `helm test` produce and consume through the Service; every metric the Grafana
//! dashboard queries is on the live pages, and the per-topic and per-subscription series
//! agree with the admin API; `helm upgrade` rescales brokers and changes a setting without
//! errors; `helm uninstall` leaves the CRDs and the volumes.

mod common;

use common::helm::{Helm, ROOT, WAIT, chart, default_service_account};
use common::kube::KubeApiServer;
use common::kubelet::Kubelet;
use common::{STRATA, free_port};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim};
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use strata_client::{Client, InitialPosition, SubscriptionType};
use strata_operator::StrataCluster;

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

    // A client through the Service; a second subscription that never acknowledges.
    let strata = Client::connect(kubelet.map(&url)).await.unwrap();
    let lagging = strata
        .consumer("public/default/chart")
        .subscription("lagging")
        .initial_position(InitialPosition::Earliest)
        .subscribe()
        .await
        .unwrap();
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

    // The per-topic and per-subscription series agree with what was sent and with the
    // admin API's backlog.
    let topic = "topic=\"persistent://public/default/chart\"";
    let (s_label, lagging_label) = (
        format!("{topic},subscription=\"s\""),
        format!("{topic},subscription=\"lagging\""),
    );
    // Acknowledgements reach the broker asynchronously: poll until `s` is caught up.
    let deadline = Instant::now() + WAIT;
    let broker_page = loop {
        let page = metrics_page(&format!("{broker_ip}:8080")).await;
        if page.contains(&format!("strata_subscription_backlog_entries{{{s_label}}} 0\n")) {
            break page;
        }
        assert!(Instant::now() < deadline, "subscription s never caught up:\n{page}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(
        sample(&broker_page, "strata_topic_messages_in_total{", topic),
        20.0,
        "{broker_page}"
    );
    assert!(sample(&broker_page, "strata_topic_messages_out_total{", topic) >= 20.0);
    let stats = strata.admin().topic_stats("public/default/chart").await.unwrap();
    let unacked = stats
        .subscriptions
        .iter()
        .find(|s| s.name == "lagging")
        .unwrap()
        .backlog_entries;
    assert!(unacked > 0, "{stats:?}");
    assert_eq!(
        sample(&broker_page, "strata_subscription_backlog_entries{", &lagging_label),
        unacked as f64
    );
    for label in [&s_label, &lagging_label] {
        assert_eq!(
            sample(&broker_page, "strata_subscription_consumers{", label),
            1.0,
            "{label}"
        );
    }
    drop(lagging);

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
