//! StrataCluster end to end: a real kube-apiserver, a real `strata operator`, and the test
//! kubelet (tests/common/kubelet.rs) running every workload the operator renders as local
//! `strata` and `etcd` processes, exactly as rendered. Clients then produce and consume
//! through the rendered broker Service. Everything is awaited by polling with deadlines.

mod common;

use common::clusters::*;
use common::kubelet::Kubelet;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use strata_client::{Client, InitialPosition, SubscriptionType};
use strata_operator::StrataCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_runs_as_rendered_rolls_config_changes_without_client_errors_and_scales() {
    let env = Env::start("prod").await;
    let kubelet = Kubelet::start(env.client.clone(), &env.ns, &env.dir.path().join("kubelet"));
    let op = operator(&env, Some(&kubelet), &[]);
    // Durations are printed for docs/benchmarks.md (`-- --nocapture`), never asserted.
    let t0 = Instant::now();
    env.kube.apply(&cluster_yaml(
        &env.ns,
        "  image: strata:test
  metadataStore:
    managed:
      replicas: 1
  bookies:
    replicas: 3
    storage:
      size: 1Gi
    config:
      journalSync: true
      gcIntervalMs: 5000
      maxEntryBytes: 6291456
      autorecoveryAuditIntervalSecs: 2
      autorecoveryOpenLedgerGraceSecs: 2
  brokers:
    replicas: 2
    config:
      retentionTimeSecs: 60
      loadReportIntervalSecs: 1
  replication:
    ensembleSize: 3
    writeQuorum: 3
    ackQuorum: 2
",
    ));
    let sc = cluster_where(&env, Some(&kubelet), "the cluster ready", ready).await;
    eprintln!(
        "figure: apply to Ready, 1 etcd + 3 bookies + 2 brokers: {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let st = sc.status.clone().unwrap();
    assert_eq!(st.service_url.as_deref(), Some("http://demo-broker.prod.svc:6650"));
    assert_eq!(st.admin_url, st.service_url);
    assert_eq!(st.version.as_deref(), Some("strata:test"));
    assert_eq!(st.brokers.as_ref().unwrap().ready_replicas, 2);
    assert_eq!(st.bookies.as_ref().unwrap().ready_replicas, 3);
    assert_eq!(st.metadata_store.as_ref().unwrap().ready_replicas, 1);
    assert!(is(&sc, "Progressing", "False") && is(&sc, "Degraded", "False") && is(&sc, "ScaleDownBlocked", "False"));
    // The 1.20 test server has no policy/v1: discovered, reported, not a failure.
    assert_eq!(cond(&sc, "DisruptionBudgets").unwrap().reason, "PolicyV1NotServed");
    // Rendered objects carry the labels and owner.
    let sts: Api<StatefulSet> = env.api();
    let bookies = sts.get("demo-bookie").await.unwrap();
    let labels = bookies.metadata.labels.clone().unwrap();
    assert_eq!(labels["app.kubernetes.io/component"], "bookie");
    assert_eq!(labels["app.kubernetes.io/managed-by"], "strata-operator");
    assert_eq!(bookies.metadata.owner_references.unwrap()[0].kind, "StrataCluster");
    let cms: Api<ConfigMap> = env.api();
    let broker_toml = cms.get("demo-broker-config").await.unwrap().data.unwrap()["broker.toml"].clone();
    assert!(
        broker_toml.contains("ack_quorum = 2") && broker_toml.contains("retention_time_secs = 60"),
        "{broker_toml}"
    );

    // Clients through the rendered Service; entries land on all three bookies.
    let url = kubelet.map(st.service_url.as_deref().unwrap());
    let client = Client::connect(url.clone()).await.unwrap();
    let info = client.admin().cluster().await.unwrap();
    assert_eq!((info.brokers.len(), info.bookies.len()), (2, 3), "{info:?}");
    let producer = client.producer("public/default/k8s").create().await.unwrap();
    let consumer = client
        .consumer("public/default/k8s")
        .subscription("s")
        .subscription_type(SubscriptionType::Shared)
        .initial_position(InitialPosition::Earliest)
        .subscribe()
        .await
        .unwrap();
    for i in 0..50 {
        producer.send(format!("m{i}")).await.unwrap();
    }
    for _ in 0..50 {
        let m = tokio::time::timeout(WAIT, consumer.receive()).await.unwrap().unwrap();
        consumer.ack(&m).await.unwrap();
    }

    // A Topic resource naming the cluster by clusterRef.
    apply_topic_and_wait_ready(&env, &op, 2).await;
    assert_eq!(
        client
            .admin()
            .topic_stats("public/default/orders")
            .await
            .unwrap()
            .partitions,
        2
    );

    // A broker setting rolls the brokers, not the bookies, while clients keep working.
    let starts = |prefix: &str| {
        kubelet
            .history()
            .iter()
            .filter(|h| h.starts_with(&format!("start {prefix}")))
            .count()
    };
    let (bookie_starts, broker_starts) = (starts("demo-bookie-"), starts("demo-broker-"));
    assert_eq!((bookie_starts, broker_starts), (3, 2), "{:?}", kubelet.history());
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let load = {
        let (producer, stop, acked) = (Arc::new(producer), stop.clone(), acked.clone());
        tokio::spawn(async move {
            let mut sent = Vec::new();
            let mut errors = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                match producer.send(format!("r{i}")).await {
                    Ok(_) => {
                        sent.push(format!("r{i}"));
                        acked.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => errors.push(e.to_string()),
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (sent, errors)
        })
    };
    // Sends go through before, during and after the roll.
    let acked_at_least = |n: usize| {
        let acked = acked.clone();
        async move { (acked.load(Ordering::SeqCst) >= n).then_some(()) }
    };
    eventually("sends before the roll", String::new, || acked_at_least(5)).await;
    let generation = sc.metadata.generation.unwrap();
    let t0 = Instant::now();
    env.kube.kubectl(&[
        "patch",
        "stratacluster",
        "demo",
        "-n",
        &env.ns,
        "--type=merge",
        "-p",
        r#"{"spec":{"brokers":{"config":{"retentionTimeSecs":120}}}}"#,
    ]);
    cluster_where(&env, Some(&kubelet), "the broker roll complete", |s| {
        ready(s) && s.metadata.generation > Some(generation)
    })
    .await;
    eprintln!(
        "figure: broker config change to Ready (2 brokers rolled): {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let after = acked.load(Ordering::SeqCst) + 5;
    eventually("sends after the roll", String::new, || acked_at_least(after)).await;
    stop.store(true, Ordering::SeqCst);
    let (sent, errors) = load.await.unwrap();
    assert!(errors.is_empty(), "producer errors during the roll: {errors:?}");
    assert_eq!(starts("demo-bookie-"), 3, "bookies restarted: {:?}", kubelet.history());
    assert!(
        starts("demo-broker-") >= 4,
        "brokers did not roll: {:?}",
        kubelet.history()
    );
    let mut missing: std::collections::HashSet<String> = sent.into_iter().collect();
    while !missing.is_empty() {
        let m = tokio::time::timeout(WAIT, consumer.receive())
            .await
            .unwrap_or_else(|_| panic!("{} messages sent during the roll never arrived", missing.len()))
            .unwrap();
        consumer.ack(&m).await.unwrap();
        missing.remove(&String::from_utf8_lossy(&m.payload).to_string());
    }
    assert!(
        events(&env, "demo").await.iter().any(|(r, _)| r == "RollingUpdate"),
        "{:?}",
        events(&env, "demo").await
    );

    // A new image rolls everything in order: every bookie (one at a time, each ready before
    // the next) before any broker.
    let before = kubelet.history().len();
    let t0 = Instant::now();
    env.kube.kubectl(&[
        "patch",
        "stratacluster",
        "demo",
        "-n",
        &env.ns,
        "--type=merge",
        "-p",
        r#"{"spec":{"image":"strata:test2"}}"#,
    ]);
    let sc = cluster_where(&env, Some(&kubelet), "the image roll complete", |s| {
        ready(s) && s.status.as_ref().and_then(|st| st.version.as_deref()) == Some("strata:test2")
    })
    .await;
    eprintln!(
        "figure: image change to Ready (3 bookies, then 2 brokers rolled): {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let roll: Vec<String> = kubelet.history()[before..].to_vec();
    let pos = |pred: &dyn Fn(&String) -> bool| roll.iter().position(pred);
    let last_bookie_start = roll
        .iter()
        .rposition(|h| h.starts_with("start demo-bookie-"))
        .expect("bookies rolled");
    let first_broker_start = pos(&|h| h.starts_with("start demo-broker-")).expect("brokers rolled");
    assert!(
        last_bookie_start < first_broker_start,
        "brokers rolled before bookies finished: {roll:?}"
    );
    assert_eq!(
        roll.iter().filter(|h| h.starts_with("stop demo-bookie-")).count(),
        3,
        "{roll:?}"
    );
    // One bookie at a time: each stop follows the previous bookie's start.
    let bookie_events: Vec<&String> = roll
        .iter()
        .filter(|h| h.starts_with("stop demo-bookie-") || h.starts_with("start demo-bookie-"))
        .collect();
    for pair in bookie_events.chunks(2) {
        let stopped = pair[0].strip_prefix("stop ").expect("a stop first");
        assert!(pair[1].starts_with(&format!("start {stopped} ")), "{bookie_events:?}");
    }
    assert_eq!(
        pos(&|h| h.starts_with("start demo-metadata-")),
        None,
        "etcd does not run the Strata image"
    );
    let _ = sc;

    // What Kubernetes cannot change on a StatefulSet is refused with a condition, and the
    // rest of the spec still applies.
    env.kube.kubectl(&[
        "patch",
        "stratacluster",
        "demo",
        "-n",
        &env.ns,
        "--type=merge",
        "-p",
        r#"{"spec":{"bookies":{"storage":{"size":"2Gi"}}}}"#,
    ]);
    let sc = cluster_where(&env, Some(&kubelet), "SpecChangeBlocked", |s| {
        is(s, "SpecChangeBlocked", "True")
    })
    .await;
    let why = cond(&sc, "SpecChangeBlocked").unwrap().message;
    assert!(why.contains("--cascade=orphan") && why.contains("2Gi"), "{why}");
    let vct = sts
        .get("demo-bookie")
        .await
        .unwrap()
        .spec
        .unwrap()
        .volume_claim_templates
        .unwrap();
    assert_eq!(
        vct[0]
            .spec
            .as_ref()
            .unwrap()
            .resources
            .as_ref()
            .unwrap()
            .requests
            .as_ref()
            .unwrap()["storage"]
            .0,
        "1Gi"
    );
    env.kube.kubectl(&[
        "patch",
        "stratacluster",
        "demo",
        "-n",
        &env.ns,
        "--type=merge",
        "-p",
        r#"{"spec":{"bookies":{"storage":{"size":"1Gi"}}}}"#,
    ]);
    cluster_where(&env, Some(&kubelet), "SpecChangeBlocked cleared", |s| {
        is(s, "SpecChangeBlocked", "False")
    })
    .await;

    // `kubectl scale` sets the broker count through the scale subresource.
    let t0 = Instant::now();
    env.kube
        .kubectl(&["scale", "stratacluster/demo", "-n", &env.ns, "--replicas=3"]);
    cluster_where(&env, Some(&kubelet), "3 brokers ready", |s| {
        ready(s)
            && s.status
                .as_ref()
                .and_then(|st| st.brokers.as_ref())
                .is_some_and(|b| b.ready_replicas == 3)
    })
    .await;
    eprintln!(
        "figure: kubectl scale 2 -> 3 brokers to Ready: {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let deployments: Api<Deployment> = env.api();
    assert_eq!(
        deployments.get("demo-broker").await.unwrap().spec.unwrap().replicas,
        Some(3)
    );
    let scale = env.kube.kubectl(&[
        "get",
        "stratacluster/demo",
        "-n",
        &env.ns,
        "-o",
        "jsonpath={.status.brokers.selector}",
    ]);
    assert!(scale.contains("app.kubernetes.io/component=broker"), "{scale}");

    // Bookies scale up; scaling down decommissions the highest ordinal first (its ledgers
    // re-replicated), then stops it and deletes its volume, while clients keep working.
    // (Fewer than the ensemble is an invalid spec, so go up to 4 first.)
    let bookies_to = |n: u32| {
        env.kube.kubectl(&[
            "patch",
            "stratacluster",
            "demo",
            "-n",
            &env.ns,
            "--type=merge",
            "-p",
            &format!(r#"{{"spec":{{"bookies":{{"replicas":{n}}}}}}}"#),
        ]);
    };
    bookies_to(4);
    cluster_where(&env, Some(&kubelet), "4 bookies ready", |s| {
        ready(s)
            && s.status
                .as_ref()
                .and_then(|st| st.bookies.as_ref())
                .is_some_and(|b| b.ready_replicas == 4)
    })
    .await;
    assert_eq!(client.admin().cluster().await.unwrap().bookies.len(), 4);
    let pvcs: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> = env.api();
    assert!(pvcs.get_opt("data-demo-bookie-3").await.unwrap().is_some());
    // Messages kept unacknowledged by subscription `keep`, spread over all four bookies.
    let keep = client
        .consumer("public/default/k8s")
        .subscription("keep")
        .subscription_type(SubscriptionType::Exclusive)
        .initial_position(InitialPosition::Latest)
        .subscribe()
        .await
        .unwrap();
    let keeper = client.producer("public/default/k8s").create().await.unwrap();
    for i in 0..200 {
        keeper.send(format!("keep{i}")).await.unwrap();
    }
    let t_down = Instant::now();
    bookies_to(3);
    cluster_where(&env, Some(&kubelet), "bookie 3 decommissioned and removed", |s| {
        ready(s)
            && is(s, "Progressing", "False")
            && s.status
                .as_ref()
                .is_some_and(|st| st.decommissioning.is_empty() && st.bookies.as_ref().is_some_and(|b| b.replicas == 3))
    })
    .await;
    eprintln!(
        "figure: bookies 4 -> 3 (decommission, stop, volume deleted): {:.1} s",
        t_down.elapsed().as_secs_f64()
    );
    assert_eq!(sts.get("demo-bookie").await.unwrap().spec.unwrap().replicas, Some(3));
    // Deleted (gone once no pod uses it: the PVC-protection finalizer).
    eventually(
        "the volume of bookie 3 deleted",
        || op.log_text(),
        || async { pvcs.get_opt("data-demo-bookie-3").await.ok()?.is_none().then_some(()) },
    )
    .await;
    assert!(
        pvcs.get_opt("data-demo-bookie-2").await.unwrap().is_some(),
        "the others stay"
    );
    assert_eq!(client.admin().cluster().await.unwrap().bookies.len(), 3);
    let evs = events(&env, "demo").await;
    assert!(evs.iter().any(|(r, _)| r == "BookieRemoved"), "{evs:?}");
    // Every kept message still reads (from the three remaining bookies).
    for i in 0..200 {
        let m = tokio::time::timeout(WAIT, keep.receive()).await.unwrap().unwrap();
        assert_eq!(m.payload, format!("keep{i}").as_bytes());
        keep.ack(&m).await.unwrap();
    }
    // Up again: ordinal 3 comes back as a new, empty bookie that registers.
    bookies_to(4);
    cluster_where(&env, Some(&kubelet), "4 bookies again", |s| {
        ready(s)
            && s.status
                .as_ref()
                .and_then(|st| st.bookies.as_ref())
                .is_some_and(|b| b.ready_replicas == 4)
    })
    .await;
    eventually(
        "the new bookie 3 registered",
        || op.log_text(),
        || async { (client.admin().cluster().await.ok()?.bookies.len() == 4).then_some(()) },
    )
    .await;
    assert!(is(
        &cluster_where(&env, Some(&kubelet), "not blocked", ready).await,
        "ScaleDownBlocked",
        "False"
    ));
    // Nothing in the operator's log says it lacked a permission.
    assert!(!op.log_text().contains("forbidden"), "{}", op.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_specs_are_refused_with_a_condition_and_nothing_is_applied() {
    let env = Env::start("bad").await;
    // No kubelet: nothing runs; what matters is what gets applied.
    let op = operator(&env, None, &[]);
    let cases = [
        (
            "  image: strata:test\n  replication:\n    ensembleSize: 2\n    writeQuorum: 3\n    ackQuorum: 4\n",
            ["spec.replication.writeQuorum", "spec.replication.ackQuorum"].as_slice(),
        ),
        (
            "  image: strata:test\n  bookies:\n    replicas: 2\n  replication:\n    ensembleSize: 3\n",
            ["spec.replication.ensembleSize"].as_slice(),
        ),
        (
            "  image: strata:test\n  bookies:\n    storage:\n      size: -1Gi\n",
            ["spec.bookies.storage.size"].as_slice(),
        ),
    ];
    let api: Api<StrataCluster> = env.api();
    for (spec, fields) in cases {
        env.kube.apply(&cluster_yaml(&env.ns, spec));
        let generation = api.get("demo").await.unwrap().metadata.generation;
        let sc = eventually(
            "the spec refused",
            || op.log_text(),
            || async {
                api.get_opt("demo").await.ok().flatten().filter(|s| {
                    s.status.as_ref().and_then(|st| st.observed_generation) == generation
                        && cond(s, "Ready").is_some_and(|c| c.reason == "InvalidSpec")
                })
            },
        )
        .await;
        let ready = cond(&sc, "Ready").unwrap();
        assert_eq!(ready.status, "False");
        for f in fields {
            assert!(ready.message.contains(f), "{f} not named in {:?}", ready.message);
        }
        // Nothing of the cluster exists.
        let sts: Api<StatefulSet> = env.api();
        let deps: Api<Deployment> = env.api();
        let svcs: Api<Service> = env.api();
        let cms: Api<ConfigMap> = env.api();
        assert!(sts.list(&ListParams::default()).await.unwrap().items.is_empty());
        assert!(deps.list(&ListParams::default()).await.unwrap().items.is_empty());
        assert!(svcs.list(&ListParams::default()).await.unwrap().items.is_empty());
        assert!(
            cms.list(&ListParams::default())
                .await
                .unwrap()
                .items
                .iter()
                .all(|c| !c.name_any().starts_with("demo"))
        );
        eventually("an InvalidSpec event", String::new, || async {
            events(&env, "demo")
                .await
                .into_iter()
                .find(|(r, n)| r == "InvalidSpec" && fields.iter().all(|f| n.contains(f)))
        })
        .await;
    }
    // The example manifests are accepted by the schema and by the operator.
    for example in ["cluster.yaml", "cluster-production.yaml"] {
        env.kube.kubectl(&[
            "apply",
            "-f",
            &format!("{}/examples/kubernetes/{example}", env!("CARGO_MANIFEST_DIR")),
        ]);
    }
    let examples: Api<StrataCluster> = Api::namespaced(env.client.clone(), "strata");
    for name in ["demo", "prod"] {
        eventually(
            &format!("example {name} accepted"),
            || op.log_text(),
            || async {
                let sc = examples.get_opt(name).await.ok().flatten()?;
                is(&sc, "Progressing", "True").then_some(())
            },
        )
        .await;
    }
    let prod_etcd: Api<StatefulSet> = Api::namespaced(env.client.clone(), "strata");
    assert_eq!(
        prod_etcd.get("prod-metadata").await.unwrap().spec.unwrap().replicas,
        Some(3)
    );

    // Fixed, it is applied: the metadata store comes first (nothing runs it here, so the
    // bookies wait for it).
    env.kube.apply(&cluster_yaml(&env.ns, "  image: strata:test\n"));
    let sc = cluster_where(&env, None, "progressing on the metadata store", |s| {
        is(s, "Progressing", "True")
    })
    .await;
    assert!(cond(&sc, "Progressing").unwrap().message.contains("metadata store"));
    let sts: Api<StatefulSet> = env.api();
    assert!(sts.get_opt("demo-metadata").await.unwrap().is_some());
    assert!(
        sts.get_opt("demo-bookie").await.unwrap().is_none(),
        "bookies must wait for the metadata store"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_autoscaler_adds_a_broker_under_load_and_removes_it_after_the_window() {
    let env = Env::start("auto").await;
    let kubelet = Kubelet::start(env.client.clone(), &env.ns, &env.dir.path().join("kubelet"));
    let _op = operator(&env, Some(&kubelet), &["--autoscale-interval-secs", "1"]);
    env.kube.apply(&cluster_yaml(
        &env.ns,
        "  image: strata:test
  bookies:
    replicas: 1
  brokers:
    config:
      loadReportIntervalSecs: 1
    autoscaling:
      minReplicas: 1
      maxReplicas: 2
      targetLoad: 50
      stabilizationWindowSeconds: 5
",
    ));
    let sc = cluster_where(&env, Some(&kubelet), "the cluster ready with one broker", ready).await;
    assert_eq!(sc.status.unwrap().brokers.unwrap().ready_replicas, 1);
    let url = kubelet.map(&strata_operator::cluster::service_url("demo", &env.ns));
    let client = Client::connect(url).await.unwrap();
    let producer = client.producer("public/default/load").create().await.unwrap();
    // Load well above one broker's target until a second broker is asked for.
    let deployments: Api<Deployment> = env.api();
    let deadline = Instant::now() + WAIT;
    loop {
        let replicas = deployments.get("demo-broker").await.unwrap().spec.unwrap().replicas;
        if replicas == Some(2) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no second broker under load{}",
            kubelet.describe()
        );
        for i in 0..100 {
            producer.send_async(format!("x{i}")).await.unwrap();
        }
        producer.flush().await.unwrap();
    }
    drop(producer);
    let sc = cluster_where(&env, Some(&kubelet), "two brokers ready", |s| {
        ready(s)
            && s.status
                .as_ref()
                .and_then(|st| st.brokers.as_ref())
                .is_some_and(|b| b.ready_replicas == 2)
    })
    .await;
    let auto = sc.status.unwrap().autoscaler.unwrap();
    assert!(auto.last_scale_time.is_some(), "{auto:?}");
    // Idle: back to one after the window.
    cluster_where(&env, Some(&kubelet), "back to one broker", |s| {
        ready(s)
            && s.status
                .as_ref()
                .and_then(|st| st.brokers.as_ref())
                .is_some_and(|b| b.desired_replicas == 1 && b.ready_replicas == 1)
    })
    .await;
    let notes: Vec<String> = events(&env, "demo")
        .await
        .into_iter()
        .filter(|(r, _)| r == "Autoscaled")
        .map(|(_, n)| n)
        .collect();
    assert!(
        notes.iter().any(|n| n.contains("1 → 2")) && notes.iter().any(|n| n.contains("2 → 1")),
        "{notes:?}"
    );
}
