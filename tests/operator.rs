//! The Kubernetes operator end to end: a real kube-apiserver and etcd, a real `strata
//! standalone`, and real `strata operator` processes, driven with kubectl as a user would.
//! The operator runs with a 2 s resync and a 6 s lease so drift and takeover show up in
//! seconds; everything is awaited by polling with deadlines.

mod common;

use common::kube::{KubeApiServer, OperatorProcess};
use common::{STRATA, Standalone, free_port};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, ListParams};
use std::future::Future;
use std::time::{Duration, Instant};
use strata_client::{Client, ErrorCode, InitialPosition, SubscriptionType};
use strata_operator::{Subscription, Topic};

const WAIT: Duration = Duration::from_secs(90);

/// Polls `f` until it returns `Some`, failing with `what` after [`WAIT`].
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn cond(conds: &[Condition], t: &str) -> Option<Condition> {
    conds.iter().find(|c| c.type_ == t).cloned()
}

fn topic_cond(t: &Topic, ty: &str) -> Option<Condition> {
    cond(&t.status.as_ref()?.conditions, ty)
}

async fn topic_where(api: &Api<Topic>, name: &str, what: &str, pred: impl Fn(&Topic) -> bool) -> Topic {
    eventually(what, || async {
        api.get_opt(name).await.ok().flatten().filter(|t| pred(t))
    })
    .await
}

fn ready(t: &Topic) -> bool {
    topic_cond(t, "Ready").is_some_and(|c| c.status == "True")
        && t.status.as_ref().and_then(|s| s.observed_generation) == t.metadata.generation
}

/// Events about object `name` in `ns`: (reason, note, reporting instance).
async fn events(client: &kube::Client, ns: &str, name: &str) -> Vec<(String, String, String)> {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .map(|e| {
            (
                e.reason.unwrap_or_default(),
                e.note.unwrap_or_default(),
                e.reporting_instance.unwrap_or_default(),
            )
        })
        .collect()
}

async fn event_with(client: &kube::Client, ns: &str, name: &str, reason: &str) -> (String, String, String) {
    eventually(&format!("event {reason} on {name}"), || async {
        events(client, ns, name).await.into_iter().find(|e| e.0 == reason)
    })
    .await
}

fn topic_yaml(ns: &str, name: &str, url: &str, extra: &str) -> String {
    format!(
        "apiVersion: strata.io/v1alpha1\nkind: Topic\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  serviceUrl: {url}\n{extra}"
    )
}

struct Env {
    _dir: tempfile::TempDir,
    kube: KubeApiServer,
    strata: Standalone,
    strata_port: u16,
    client: kube::Client,
}

impl Env {
    async fn start(ns: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let strata_port = free_port();
        let strata = Standalone::start(dir.path(), strata_port).await;
        let kube = KubeApiServer::start(dir.path()).await;
        kube.namespace(ns).await;
        let client = kube.client().await;
        Self {
            _dir: dir,
            kube,
            strata,
            strata_port,
            client,
        }
    }

    async fn strata(&self) -> strata_client::Admin {
        Client::connect(self.strata.url.clone()).await.unwrap().admin()
    }
}

#[test]
fn the_crds_in_the_repository_are_what_crdgen_prints_and_the_docs_list_every_field() {
    let out = std::process::Command::new(STRATA)
        .args(["operator", "crdgen"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).unwrap();
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/crds/strata.io.yaml");
    let stored = std::fs::read_to_string(file).unwrap_or_default();
    assert!(
        printed == stored,
        "crds/strata.io.yaml is stale: regenerate it with `strata operator crdgen > crds/strata.io.yaml`"
    );
    for forbidden in ["x-kubernetes-validations", "x-kubernetes-preserve-unknown-fields"] {
        assert!(!printed.contains(forbidden), "the CRDs must not use {forbidden}");
    }
    // Every spec and status field, as a dotted path, appears in docs/kubernetes.md.
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/kubernetes.md")).unwrap();
    fn walk(prefix: &str, schema: &serde_json::Value, out: &mut Vec<String>) {
        let props = schema
            .get("properties")
            .or_else(|| schema.get("items").and_then(|i| i.get("properties")));
        if let Some(props) = props.and_then(|p| p.as_object()) {
            for (k, v) in props {
                let path = format!("{prefix}.{k}");
                out.push(path.clone());
                // Kubernetes' own types (affinity, tolerations, resources) are documented
                // by Kubernetes; the field itself is documented here.
                if !["affinity", "tolerations", "resources"].contains(&k.as_str()) {
                    walk(&path, v, out);
                }
            }
        }
    }
    for crd in strata_operator::crds() {
        let v = serde_json::to_value(&crd).unwrap();
        let kind = v["spec"]["names"]["kind"].as_str().unwrap().to_string();
        let schema = &v["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        let mut fields = Vec::new();
        walk("spec", &schema["properties"]["spec"], &mut fields);
        walk("status", &schema["properties"]["status"], &mut fields);
        for f in fields {
            // Conditions have the standard Kubernetes shape, documented once.
            if f.starts_with("status.conditions.") {
                continue;
            }
            assert!(
                docs.contains(&format!("`{f}`")),
                "docs/kubernetes.md does not document {kind} field `{f}`"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_are_created_grown_corrected_adopted_and_protected_from_deletion() {
    let ns = "topics";
    let env = Env::start(ns).await;
    let url = env.strata.url.clone();
    let _op = OperatorProcess::start(&env.kube, "op-1", &[]);
    let api: Api<Topic> = Api::namespaced(env.client.clone(), ns);
    let admin = env.strata().await;

    // The schema refuses what it can: a negative count, an unknown policy, a bad duration.
    for bad in [
        "  partitions: -1\n",
        "  deletionPolicy: Sometimes\n",
        "  retention:\n    time: 3 days\n",
    ] {
        let path = env.kube.dir.join("bad.yaml");
        std::fs::write(&path, topic_yaml(ns, "bad", &url, bad)).unwrap();
        let out = env.kube.kubectl_output(&["apply", "-f", path.to_str().unwrap()]);
        assert!(!out.status.success(), "accepted: {bad}");
    }

    // Created with 3 partitions, grown to 6.
    env.kube.apply(&topic_yaml(
        ns,
        "orders",
        &url,
        "  partitions: 3\n  deletionPolicy: Delete\n",
    ));
    let t = topic_where(&api, "orders", "orders ready", ready).await;
    let st = t.status.unwrap();
    assert_eq!(
        (st.partitions, st.topic_name.as_deref()),
        (Some(3), Some("persistent://public/default/orders"))
    );
    assert_eq!(admin.topic_stats("public/default/orders").await.unwrap().partitions, 3);
    event_with(&env.client, ns, "orders", "Created").await;
    env.kube.apply(&topic_yaml(
        ns,
        "orders",
        &url,
        "  partitions: 6\n  deletionPolicy: Delete\n",
    ));
    topic_where(&api, "orders", "orders grown", |t| {
        ready(t) && t.status.as_ref().unwrap().partitions == Some(6)
    })
    .await;
    assert_eq!(admin.topic_stats("public/default/orders").await.unwrap().partitions, 6);

    // Shrinking is refused with a condition naming the field; nothing changes.
    env.kube.apply(&topic_yaml(
        ns,
        "orders",
        &url,
        "  partitions: 2\n  deletionPolicy: Delete\n",
    ));
    let t = topic_where(&api, "orders", "shrink refused", |t| {
        topic_cond(t, "Ready").is_some_and(|c| c.reason == "InvalidSpec")
    })
    .await;
    assert!(topic_cond(&t, "Ready").unwrap().message.starts_with("spec.partitions"));
    assert_eq!(admin.topic_stats("public/default/orders").await.unwrap().partitions, 6);

    // Drift, Correct: a manual change is set back within a resync, with Event and condition.
    env.kube.apply(&topic_yaml(
        ns,
        "orders",
        &url,
        "  partitions: 6\n  deletionPolicy: Delete\n  retention:\n    time: 7d\n",
    ));
    topic_where(&api, "orders", "retention applied", ready).await;
    assert_eq!(
        admin
            .topic_policies("public/default/orders")
            .await
            .unwrap()
            .retention_time_secs,
        Some(604_800)
    );
    let out = env.strata.cli(
        &[
            "admin",
            "topics",
            "set-policies",
            "public/default/orders",
            "--retention-time-secs",
            "60",
        ],
        None,
    );
    assert!(out.status.success());
    let t = topic_where(&api, "orders", "drift corrected", |t| {
        topic_cond(t, "Drifted").is_some_and(|c| c.reason == "DriftCorrected")
    })
    .await;
    assert!(topic_cond(&t, "Drifted").unwrap().message.contains("retention time"));
    assert_eq!(
        admin
            .topic_policies("public/default/orders")
            .await
            .unwrap()
            .retention_time_secs,
        Some(604_800)
    );
    event_with(&env.client, ns, "orders", "DriftCorrected").await;

    // Drift, Report: left as changed, reported.
    env.kube.apply(&topic_yaml(
        ns,
        "reported",
        &url,
        "  driftPolicy: Report\n  retention:\n    size: 1Gi\n",
    ));
    topic_where(&api, "reported", "reported ready", ready).await;
    let out = env.strata.cli(
        &[
            "admin",
            "topics",
            "set-policies",
            "public/default/reported",
            "--retention-bytes",
            "5",
        ],
        None,
    );
    assert!(out.status.success());
    let t = topic_where(&api, "reported", "drift reported", |t| {
        topic_cond(t, "Drifted").is_some_and(|c| c.status == "True")
    })
    .await;
    assert!(topic_cond(&t, "Drifted").unwrap().message.contains("retention size"));
    event_with(&env.client, ns, "reported", "DriftDetected").await;
    assert_eq!(
        admin
            .topic_policies("public/default/reported")
            .await
            .unwrap()
            .retention_bytes,
        Some(5)
    );

    // Adoption of a topic a producer auto-created: no error, its data kept.
    let out = env.strata.cli(&["produce", "public/default/auto", "one", "two"], None);
    assert!(out.status.success());
    env.kube.apply(&topic_yaml(ns, "auto", &url, ""));
    topic_where(&api, "auto", "auto adopted", ready).await;
    event_with(&env.client, ns, "auto", "Adopted").await;
    assert_eq!(admin.topic_stats("public/default/auto").await.unwrap().entries, 1);

    // Deletion with a backlog: stays Terminating with the reason, the topic kept.
    admin
        .create_subscription("public/default/orders", "audit", InitialPosition::Earliest)
        .await
        .unwrap();
    let out = env
        .strata
        .cli(&["produce", "public/default/orders", "a", "b", "c"], None);
    assert!(out.status.success());
    env.kube
        .kubectl(&["delete", "topic.strata.io", "orders", "-n", ns, "--wait=false"]);
    let t = topic_where(&api, "orders", "deletion blocked", |t| {
        topic_cond(t, "DeletionBlocked").is_some_and(|c| c.status == "True")
    })
    .await;
    assert!(t.metadata.deletion_timestamp.is_some());
    let msg = topic_cond(&t, "DeletionBlocked").unwrap().message;
    assert!(
        msg.contains("unacknowledged") && msg.contains("strata.io/force-delete"),
        "{msg}"
    );
    event_with(&env.client, ns, "orders", "DeletionBlocked").await;
    assert_eq!(admin.topic_stats("public/default/orders").await.unwrap().partitions, 6);

    // Forced: the topic goes, then the resource.
    env.kube.kubectl(&[
        "annotate",
        "topic.strata.io",
        "orders",
        "-n",
        ns,
        "strata.io/force-delete=true",
    ]);
    eventually("orders resource gone", || async {
        api.get_opt("orders").await.unwrap().is_none().then_some(())
    })
    .await;
    let e = admin.topic_stats("public/default/orders").await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::TopicNotFound), "{e}");

    // Retain (the default): the resource goes, the topic stays.
    env.kube
        .kubectl(&["delete", "topic.strata.io", "auto", "-n", ns, "--wait=false"]);
    eventually("auto resource gone", || async {
        api.get_opt("auto").await.unwrap().is_none().then_some(())
    })
    .await;
    assert_eq!(admin.topic_stats("public/default/auto").await.unwrap().entries, 1);

    // A second resource for a managed topic: refused with a condition, and deleting it
    // (even with deletionPolicy Delete) leaves the topic to the first.
    env.kube.apply(&topic_yaml(
        ns,
        "twin",
        &url,
        "  name: public/default/reported\n  deletionPolicy: Delete\n",
    ));
    let t = topic_where(&api, "twin", "twin in conflict", |t| {
        topic_cond(t, "Ready").is_some_and(|c| c.reason == "Conflict")
    })
    .await;
    assert!(topic_cond(&t, "Ready").unwrap().message.contains("topics/reported"));
    env.kube
        .kubectl(&["delete", "topic.strata.io", "twin", "-n", ns, "--wait=false"]);
    eventually("twin gone", || async {
        api.get_opt("twin").await.unwrap().is_none().then_some(())
    })
    .await;
    assert!(admin.topic_stats("public/default/reported").await.is_ok());

    // `kubectl get strata` lists the kinds of the category.
    let listed = env.kube.kubectl(&["get", "strata", "-n", ns]);
    assert!(listed.contains("reported"), "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_exist_before_consumers_and_reset_once_per_change() {
    let ns = "subs";
    let env = Env::start(ns).await;
    let url = env.strata.url.clone();
    let mut op = OperatorProcess::start(&env.kube, "op-1", &[]);
    let topics: Api<Topic> = Api::namespaced(env.client.clone(), ns);
    let subs: Api<Subscription> = Api::namespaced(env.client.clone(), ns);
    let strata = Client::connect(url.clone()).await.unwrap();

    env.kube.apply(&topic_yaml(ns, "events", &url, ""));
    topic_where(&topics, "events", "events ready", ready).await;
    let producer = strata.producer("public/default/events").create().await.unwrap();
    producer.send("before-0").await.unwrap();
    env.kube.apply(&format!(
        "apiVersion: strata.io/v1alpha1\nkind: Subscription\nmetadata:\n  name: audit\n  namespace: {ns}\nspec:\n  topic: events\n  initialPosition: Earliest\n  type: Shared\n---\napiVersion: strata.io/v1alpha1\nkind: Subscription\nmetadata:\n  name: late\n  namespace: {ns}\nspec:\n  topic: public/default/events\n  serviceUrl: {url}\n"
    ));
    for name in ["audit", "late"] {
        eventually(&format!("subscription {name} ready"), || async {
            let s = subs.get_opt(name).await.ok().flatten()?;
            cond(&s.status.as_ref()?.conditions, "Ready")
                .filter(|c| c.status == "True")
                .map(|_| ())
        })
        .await;
    }
    // Messages published now are kept for both, with no consumer connected.
    for i in 0..3 {
        producer.send(format!("after-{i}")).await.unwrap();
    }
    let stats = strata.admin().topic_stats("public/default/events").await.unwrap();
    let backlog = |n: &str| {
        stats
            .subscriptions
            .iter()
            .find(|s| s.name == n)
            .unwrap()
            .backlog_entries
    };
    assert_eq!((backlog("audit"), backlog("late")), (4, 3), "{stats:?}");
    let sub = eventually("status backlog", || async {
        let s = subs.get_opt("audit").await.ok().flatten()?;
        (s.status.as_ref()?.backlog == Some(4)).then_some(s)
    })
    .await;
    assert_eq!(
        sub.status.unwrap().topic_name.as_deref(),
        Some("persistent://public/default/events")
    );

    let consumer = strata
        .consumer("public/default/events")
        .subscription("audit")
        .subscription_type(SubscriptionType::Shared)
        .subscribe()
        .await
        .unwrap();
    let mut got = Vec::new();
    while got.len() < 4 {
        let m = tokio::time::timeout(WAIT, consumer.receive()).await.unwrap().unwrap();
        consumer.ack(&m).await.unwrap();
        got.push(String::from_utf8_lossy(&m.payload).to_string());
    }
    assert_eq!(got, ["before-0", "after-0", "after-1", "after-2"]);

    // resetTo a time: redelivered from there, once. (Acknowledgements are persisted
    // shortly after they are sent.)
    eventually("acknowledgements persisted", || async {
        let stats = strata.admin().topic_stats("public/default/events").await.ok()?;
        (stats.subscriptions.iter().find(|s| s.name == "audit")?.backlog_entries == 0).then_some(())
    })
    .await;
    let ts = k8s_openapi::jiff::Timestamp::from_millisecond(0).unwrap().to_string();
    env.kube.apply(&format!(
        "apiVersion: strata.io/v1alpha1\nkind: Subscription\nmetadata:\n  name: audit\n  namespace: {ns}\nspec:\n  topic: events\n  initialPosition: Earliest\n  type: Shared\n  resetTo:\n    timestamp: \"{ts}\"\n"
    ));
    let mut again = Vec::new();
    while again.len() < 4 {
        let m = tokio::time::timeout(WAIT, consumer.receive()).await.unwrap().unwrap();
        consumer.ack(&m).await.unwrap();
        again.push(String::from_utf8_lossy(&m.payload).to_string());
    }
    assert_eq!(again, got);
    eventually("reset recorded", || async {
        let s = subs.get_opt("audit").await.ok().flatten()?;
        (s.status.as_ref()?.reset.as_ref()?.state == "Applied").then_some(())
    })
    .await;

    // After a restart of the operator (and resyncs by the new one), no second reset.
    op.sigkill();
    let restarted = k8s_openapi::jiff::Timestamp::now();
    let _op2 = OperatorProcess::start(&env.kube, "op-2", &[]);
    for _ in 0..2 {
        let seen = eventually("a resync by the restarted operator", || async {
            let s = subs.get_opt("audit").await.ok().flatten()?;
            let t = s.status.as_ref()?.last_sync_time.as_ref()?.0;
            (t.as_second() > restarted.as_second()).then_some(t)
        })
        .await;
        eventually("another resync", || async {
            let s = subs.get_opt("audit").await.ok().flatten()?;
            (s.status.as_ref()?.last_sync_time.as_ref()?.0 > seen).then_some(())
        })
        .await;
    }
    let extra = tokio::time::timeout(Duration::from_millis(500), consumer.receive()).await;
    assert!(extra.is_err(), "a message was redelivered after the restart: {extra:?}");
    let resets = events(&env.client, ns, "audit")
        .await
        .into_iter()
        .filter(|e| e.0 == "Reset")
        .count();
    assert_eq!(resets, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_acts_a_standby_takes_over_and_outages_heal() {
    let ns = "faults";
    let mut env = Env::start(ns).await;
    let url = env.strata.url.clone();
    let topics: Api<Topic> = Api::namespaced(env.client.clone(), ns);
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), "default");
    let mut a = OperatorProcess::start(&env.kube, "op-a", &[]);
    let mut b = OperatorProcess::start(&env.kube, "op-b", &[]);

    let holder = || async {
        leases
            .get_opt("strata-operator")
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec?.holder_identity)
    };
    let first = eventually("a lease holder", holder).await;
    env.kube.apply(&topic_yaml(ns, "t1", &url, ""));
    topic_where(&topics, "t1", "t1 ready", ready).await;
    // Only the leader acted: its identity reported the Event; the standby reconciled nothing.
    let created = event_with(&env.client, ns, "t1", "Created").await;
    assert_eq!(created.2, first);
    let (leader, standby) = if first == "op-a" {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    let standby_metrics = eventually("standby metrics", || standby.metrics()).await;
    assert!(
        standby_metrics.contains("strata_operator_leader 0"),
        "{standby_metrics}"
    );
    assert!(
        !standby_metrics.contains("strata_operator_reconciles_total{"),
        "{standby_metrics}"
    );
    let leader_metrics = eventually("leader metrics", || leader.metrics()).await;
    assert!(leader_metrics.contains("strata_operator_leader 1"));
    assert!(leader_metrics.contains("strata_operator_objects{kind=\"Topic\",condition=\"Ready\",status=\"True\"} 1"));

    // The leader dies: the standby takes the lease and acts.
    leader.sigkill();
    let standby_id = standby.identity.clone();
    eventually("the standby holds the lease", || async {
        (holder().await.as_deref() == Some(standby_id.as_str())).then_some(())
    })
    .await;
    env.kube.apply(&topic_yaml(ns, "t2", &url, "  partitions: 2\n"));
    topic_where(&topics, "t2", "t2 ready after takeover", ready).await;

    // Killed mid-reconcile of many topics, restarted: every topic exactly once.
    let mut many = String::new();
    for i in 0..30 {
        many.push_str(&topic_yaml(ns, &format!("m{i}"), &url, "  partitions: 2\n"));
        many.push_str("\n---\n");
    }
    env.kube.apply(&many);
    eventually("some of many ready", || async {
        let l = topics.list(&ListParams::default()).await.ok()?;
        l.items
            .iter()
            .any(|t| t.metadata.name.as_deref().unwrap().starts_with('m') && ready(t))
            .then_some(())
    })
    .await;
    standby.sigkill();
    let _c = OperatorProcess::start(&env.kube, "op-c", &[]);
    eventually("all of many ready", || async {
        let l = topics.list(&ListParams::default()).await.ok()?;
        (l.items.iter().filter(|t| ready(t)).count() == 32).then_some(())
    })
    .await;
    let admin = env.strata().await;
    let listed = admin.list_topics("public/default").await.unwrap();
    assert_eq!(listed.len(), 32, "{listed:?}");
    for i in 0..30 {
        let s = admin.topic_stats(&format!("public/default/m{i}")).await.unwrap();
        assert_eq!(s.partitions, 2);
    }

    // The Strata cluster goes down: conditions say so; it comes back: healed by itself.
    env.strata.sigkill();
    topic_where(&topics, "t1", "t1 unreachable", |t| {
        topic_cond(t, "Ready").is_some_and(|c| c.status == "False" && c.reason == "ClusterUnreachable")
    })
    .await;
    env.strata = Standalone::start(env._dir.path(), env.strata_port).await;
    topic_where(&topics, "t1", "t1 ready again", |t| {
        topic_cond(t, "Ready").is_some_and(|c| c.status == "True")
    })
    .await;
}

/// Benchmark (run with `--ignored --nocapture`): time from creating a Topic to its `Ready`
/// condition, one at a time (p50/p99 over 100), then 1,000 Topics created at once until
/// all are Ready. The operator runs with its defaults (60 s resync). Prints figures; asserts
/// only that every topic became Ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run explicitly, figures go to docs/benchmarks.md"]
async fn benchmark_topic_ready_latency_and_a_thousand_at_once() {
    use kube::api::PostParams;
    let ns = "bench";
    let env = Env::start(ns).await;
    let url = env.strata.url.clone();
    let _op = OperatorProcess::start_with_resync(&env.kube, "op-1", 60, &[]);
    let api: Api<Topic> = Api::namespaced(env.client.clone(), ns);
    let topic = |name: &str| -> Topic {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "strata.io/v1alpha1", "kind": "Topic",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"serviceUrl": url},
        }))
        .unwrap()
    };
    // Warm-up: the operator's first reconcile connects to Strata.
    api.create(&PostParams::default(), &topic("warmup")).await.unwrap();
    topic_where(&api, "warmup", "warm-up ready", ready).await;

    let mut took = Vec::new();
    for i in 0..100 {
        let name = format!("one-{i}");
        let started = Instant::now();
        api.create(&PostParams::default(), &topic(&name)).await.unwrap();
        loop {
            if api.get_opt(&name).await.unwrap().is_some_and(|t| ready(&t)) {
                break;
            }
            assert!(started.elapsed() < WAIT, "{name} not ready");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        took.push(started.elapsed());
    }
    took.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "apply → Ready, one at a time (100): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        ms(took[49]),
        ms(took[98]),
        ms(took[99])
    );

    let started = Instant::now();
    let mut creates = Vec::new();
    for i in 0..1000 {
        let (api, t) = (api.clone(), topic(&format!("many-{i}")));
        creates.push(tokio::spawn(async move {
            api.create(&PostParams::default(), &t).await.map(drop)
        }));
    }
    for c in creates {
        c.await.unwrap().unwrap();
    }
    let created = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let l = api.list(&ListParams::default()).await.unwrap();
        let n = l
            .items
            .iter()
            .filter(|t| t.metadata.name.as_deref().unwrap().starts_with("many-") && ready(t))
            .count();
        if n == 1000 {
            break;
        }
        assert!(Instant::now() < deadline, "only {n} of 1000 ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "1,000 Topics created at once: all created in {:.1} s, all Ready after {:.1} s",
        created.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

/// The operator works with exactly the RBAC of examples/kubernetes/operator.yaml: it runs
/// authenticated as that service account, whose only permissions are what the example
/// grants, and does the whole lifecycle (finalizers, status, Events, leases, readiness).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_rbac_is_all_the_operator_needs() {
    let ns = "apps";
    let env = Env::start(ns).await;
    let url = env.strata.url.clone();
    env.kube.kubectl(&[
        "apply",
        "-f",
        concat!(env!("CARGO_MANIFEST_DIR"), "/examples/kubernetes/operator.yaml"),
    ]);
    // The service account cannot do what the example does not grant.
    let denied = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&env.kube.operator_kubeconfig)
        .args(["get", "secrets", "-n", ns])
        .output()
        .unwrap();
    assert!(!denied.status.success());
    assert!(String::from_utf8_lossy(&denied.stderr).contains("forbidden"));

    let op = OperatorProcess::start_as(&env.kube, &env.kube.operator_kubeconfig, "sa-op", 2, "strata", &[]);
    eventually("the restricted operator is ready", || async {
        common::http_get(&op.http, "/readyz")
            .await
            .filter(|(code, _)| *code == 200)
            .map(|_| ())
    })
    .await;
    let topics: Api<Topic> = Api::namespaced(env.client.clone(), ns);
    let subs: Api<Subscription> = Api::namespaced(env.client.clone(), ns);
    env.kube.apply(&topic_yaml(
        ns,
        "t",
        &url,
        "  partitions: 2\n  deletionPolicy: Delete\n",
    ));
    env.kube.apply(&format!(
        "apiVersion: strata.io/v1alpha1\nkind: Subscription\nmetadata:\n  name: s\n  namespace: {ns}\nspec:\n  topic: t\n  deletionPolicy: Delete\n"
    ));
    topic_where(&topics, "t", "t ready", ready).await;
    eventually("s ready", || async {
        let s = subs.get_opt("s").await.ok().flatten()?;
        cond(&s.status.as_ref()?.conditions, "Ready")
            .filter(|c| c.status == "True")
            .map(|_| ())
    })
    .await;
    event_with(&env.client, ns, "t", "Created").await;
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), "strata");
    let lease = leases.get("strata-operator").await.unwrap();
    assert_eq!(lease.spec.unwrap().holder_identity.as_deref(), Some("sa-op"));
    // Deletion (finalizers removed by the restricted identity).
    env.kube
        .kubectl(&["delete", "subscription.strata.io", "s", "-n", ns, "--wait=false"]);
    env.kube
        .kubectl(&["delete", "topic.strata.io", "t", "-n", ns, "--wait=false"]);
    eventually("both resources gone", || async {
        (subs.get_opt("s").await.ok()?.is_none() && topics.get_opt("t").await.ok()?.is_none()).then_some(())
    })
    .await;
    let e = env.strata().await.topic_stats("public/default/t").await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::TopicNotFound), "{e}");
    assert!(!op.log_text().contains("forbidden"), "{}", op.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_secret_lets_the_operator_manage_a_cluster_with_auth_on() {
    use strata_client::{AuthAction, Resource};
    use strata_net::auth::{Claims, SigningKey};
    let ns = "secured";
    let env = Env::start(ns).await;
    // A Strata with token authentication; the operator's role is not a superuser, only
    // admin of public/default.
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, [5u8; 32]).unwrap();
    let key = SigningKey::secret_file(&secret).unwrap();
    let token = |role: &str| {
        let claims = Claims {
            sub: role.into(),
            exp: None,
            iat: None,
            aud: None,
            iss: None,
        };
        strata_net::auth::create(&key, &claims, None).unwrap()
    };
    let mut strata = Standalone::spawn(
        dir.path(),
        free_port(),
        Some(&format!(
            "[auth]\nenabled = true\nsecret_file = {:?}\nsuperuser_roles = [\"admin\"]\n",
            secret.to_str().unwrap()
        )),
        &[],
    );
    let admin_token = token("admin");
    let deadline = Instant::now() + WAIT;
    let admin = loop {
        assert!(strata.child.try_wait().unwrap().is_none(), "{}", strata.log_text());
        if let Ok(c) = Client::builder(strata.url.clone()).token(&admin_token).build().await
            && c.admin().list_tenants().await.is_ok()
        {
            break c.admin();
        }
        assert!(Instant::now() < deadline, "not ready:\n{}", strata.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    admin
        .grant_permission(
            &Resource::Namespace("public/default".into()),
            "k8s-operator",
            &[AuthAction::Admin],
        )
        .await
        .unwrap();
    env.kube.apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: strata-token\n  namespace: {ns}\nstringData:\n  token: {}\n",
        token("k8s-operator")
    ));
    let _op = OperatorProcess::start(&env.kube, "op-1", &[]);
    let api: Api<Topic> = Api::namespaced(env.client.clone(), ns);
    let url = strata.url.clone();

    // Without a token the cluster refuses the operator, and the condition says so.
    env.kube.apply(&topic_yaml(ns, "anonymous", &url, ""));
    let t = topic_where(&api, "anonymous", "refused without a token", |t| {
        topic_cond(t, "Ready").is_some_and(|c| c.status == "False" && c.message.contains("UNAUTHENTICATED"))
    })
    .await;
    assert!(!ready(&t));

    // With its token Secret, the Topic is made, and a Subscription of it uses the same token.
    env.kube.apply(&topic_yaml(
        ns,
        "orders",
        &url,
        "  partitions: 2\n  tokenSecretRef:\n    name: strata-token\n",
    ));
    topic_where(&api, "orders", "orders ready with its token", ready).await;
    assert_eq!(admin.topic_stats("public/default/orders").await.unwrap().partitions, 2);
    env.kube.apply(&format!(
        "apiVersion: strata.io/v1alpha1\nkind: Subscription\nmetadata:\n  name: audit\n  namespace: {ns}\nspec:\n  topic: orders\n"
    ));
    eventually("subscription audit made with the Topic's token", || async {
        let subs = admin
            .list_subscriptions("public/default/orders-partition-0")
            .await
            .ok()?;
        subs.iter().any(|s| s == "audit").then_some(())
    })
    .await;
}
