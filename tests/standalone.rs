//! `strata standalone` end to end, through the CLI and the public gRPC API: produce and
//! consume, crash safety under SIGKILL, cursors across restarts, and bad input.

mod common;

use common::{CliProcess, Rng, Standalone, free_port, http_get, seed, signal};
use std::time::{Duration, Instant};
use strata_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

fn lines(out: &std::process::Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Stops `strata consume` processes run without `--count` (Ctrl-C, which they handle by
/// closing cleanly) once the subscriptions `subs` of `topic` have nothing left unacknowledged,
/// as `admin topics stats` reports it, and returns what each printed. A consumer prints a
/// message before acknowledging it, so by then everything was printed: unlike an idle
/// timeout, this holds however slow the machine is. Every consumer is in its receive loop
/// (where Ctrl-C is handled) by then: it has acknowledged messages, or it showed up as
/// connected in the stats before anything was produced.
async fn interrupt_when_drained(
    s: &Standalone,
    topic: &str,
    subs: &[&str],
    consumers: Vec<CliProcess>,
) -> Vec<std::process::Output> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = s.cli(&["admin", "topics", "stats", topic], None);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let drained = subs.iter().all(|sub| {
            stats["subscriptions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x["name"] == *sub && x["backlog_entries"] == 0)
        });
        if drained {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "subscriptions {subs:?} still have a backlog: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for c in &consumers {
        signal(c.child.id(), "INT");
    }
    consumers
        .into_iter()
        .map(|c| c.finish(Duration::from_secs(60)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_and_consume_with_the_cli_and_resume_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut s = Standalone::start(dir.path(), port).await;
    let out = s.cli(&["produce", "persistent://public/default/cli", "one", "two"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let input: String = (0..250).map(|i| format!("line-{i}\n")).collect();
    let out = s.cli(&["produce", "public/default/cli"], Some(&input));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = s.cli(
        &[
            "consume",
            "public/default/cli",
            "-s",
            "a",
            "--initial-position",
            "earliest",
            "--count",
            "100",
        ],
        None,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got = lines(&out);
    assert_eq!(got[..3], ["one", "two", "line-0"]);
    assert_eq!(got.len(), 100);
    // A second subscription gets everything too (broadcast).
    let out = s.cli(
        &[
            "consume",
            "public/default/cli",
            "-s",
            "b",
            "--initial-position",
            "earliest",
            "--count",
            "252",
        ],
        None,
    );
    assert_eq!(lines(&out).len(), 252);
    // Restart gracefully: subscription `a` resumes after what it acknowledged ("one",
    // "two", line-0..line-97). How the CLI batched the stdin lines depends on timing; a
    // batch only partly acknowledged comes back whole (at-least-once), so the redelivery
    // starts at the first line of the batch holding line-98 and runs on to line-249.
    assert!(s.sigterm().success());
    let s = Standalone::start(dir.path(), port).await;
    let consumer = s.spawn_cli(&["consume", "public/default/cli", "-s", "a"]);
    let out = interrupt_when_drained(&s, "public/default/cli", &["a"], vec![consumer])
        .await
        .remove(0);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got = lines(&out);
    let first: usize = got
        .first()
        .and_then(|l| l.strip_prefix("line-"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("redelivery after restart starts with {:?}", got.first()));
    assert!(
        first <= 98,
        "line-98 was never acknowledged but redelivery starts at line-{first}"
    );
    let want: Vec<String> = (first..250).map(|i| format!("line-{i}")).collect();
    assert_eq!(got, want);
}

/// The four subscription types through the CLI alone, as a user runs them: consumers
/// started first (`--type exclusive|failover|shared|key_shared`), then keyed messages
/// produced by several `strata produce` calls; every consumer's output is checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_consumers_of_the_four_subscription_types() {
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(dir.path(), free_port()).await;
    let topic = "persistent://public/default/cli-types";
    let out = s.cli(&["admin", "topics", "create", topic], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (keys, per_key) = (8usize, 25usize);
    let total = keys * per_key;
    let total_arg = total.to_string();
    let subs: [(&str, &str, usize); 4] = [
        ("ex", "exclusive", 1),
        ("fo", "failover", 2),
        ("sh", "shared", 2),
        ("ks", "key_shared", 2),
    ];
    let mut consumers = Vec::new();
    for (sub, ty, n) in subs {
        for _ in 0..n {
            // Exclusive stops at the count; the others are stopped once their subscriptions
            // are drained (a Failover standby gets nothing).
            let mut args = vec!["consume", topic, "-s", sub, "--type", ty, "--output", "json"];
            if sub == "ex" {
                args.extend(["--count", total_arg.as_str()]);
            }
            consumers.push((sub, s.spawn_cli(&args)));
        }
    }
    // Wait until every consumer is connected, as stats report it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = s.cli(&["admin", "topics", "stats", topic], None);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let connected = |name: &str| {
            stats["subscriptions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["name"] == name)
                .map_or(0, |x| x["consumers"].as_u64().unwrap()) as usize
        };
        if subs.iter().all(|(sub, _, n)| connected(sub) == *n) {
            break;
        }
        assert!(Instant::now() < deadline, "consumers did not all subscribe: {stats}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for k in 0..keys {
        let key = format!("k{k}");
        let payloads: Vec<String> = (k * per_key..(k + 1) * per_key).map(|i| i.to_string()).collect();
        let mut args = vec!["produce", topic, "--key", key.as_str()];
        args.extend(payloads.iter().map(String::as_str));
        let out = s.cli(&args, None);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let (exclusive, others): (Vec<_>, Vec<_>) = consumers.into_iter().partition(|(sub, _)| *sub == "ex");
    let names: Vec<&str> = others.iter().map(|(sub, _)| *sub).collect();
    let outputs = interrupt_when_drained(
        &s,
        topic,
        &["fo", "sh", "ks"],
        others.into_iter().map(|(_, child)| child).collect(),
    )
    .await;
    let finished = exclusive
        .into_iter()
        .map(|(sub, child)| (sub, child.finish(Duration::from_secs(60))))
        .chain(names.into_iter().zip(outputs));
    // (subscription, [(key, payload number)] of each consumer)
    let mut got: Vec<(&str, Vec<(String, usize)>)> = Vec::new();
    for (sub, out) in finished {
        assert!(out.status.success(), "{sub}: {}", String::from_utf8_lossy(&out.stderr));
        let msgs = lines(&out)
            .iter()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (
                    v["key"].as_str().unwrap().to_string(),
                    v["payload"].as_str().unwrap().parse().unwrap(),
                )
            })
            .collect();
        got.push((sub, msgs));
    }
    let of = |sub: &str| -> Vec<&Vec<(String, usize)>> { got.iter().filter(|g| g.0 == sub).map(|g| &g.1).collect() };
    let numbers = |v: &Vec<(String, usize)>| v.iter().map(|m| m.1).collect::<Vec<_>>();
    let in_order: Vec<usize> = (0..total).collect();
    // Exclusive: everything in publish order.
    assert_eq!(numbers(of("ex")[0]), in_order);
    // Failover: the active consumer gets everything in order, the standby nothing.
    let fo = of("fo");
    let (active, standby) = if fo[0].is_empty() {
        (fo[1], fo[0])
    } else {
        (fo[0], fo[1])
    };
    assert_eq!(numbers(active), in_order);
    assert!(
        standby.is_empty(),
        "the Failover standby got {} messages",
        standby.len()
    );
    // Shared: spread over both consumers, each message once.
    let sh = of("sh");
    assert!(sh.iter().all(|g| !g.is_empty()), "both Shared consumers get messages");
    let mut all: Vec<usize> = sh.iter().flat_map(|g| numbers(g)).collect();
    all.sort_unstable();
    assert_eq!(all, in_order);
    // Key_Shared: every key on one consumer, in publish order; each message once.
    let ks = of("ks");
    let mut all = Vec::new();
    for k in 0..keys {
        let key = format!("k{k}");
        let holders: Vec<Vec<usize>> = ks
            .iter()
            .map(|g| g.iter().filter(|m| m.0 == key).map(|m| m.1).collect::<Vec<_>>())
            .filter(|v| !v.is_empty())
            .collect();
        assert_eq!(holders.len(), 1, "key {key} went to {} consumers", holders.len());
        assert_eq!(
            holders[0],
            (k * per_key..(k + 1) * per_key).collect::<Vec<_>>(),
            "key {key}"
        );
        all.extend(holders[0].iter().copied());
    }
    assert_eq!(all.len(), total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_acknowledged_message() {
    let mut rng = Rng::new(seed("standalone_sigkill"));
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut s = Standalone::start(dir.path(), port).await;
    let mut producer = pb::producer_client::ProducerClient::connect(s.url.clone())
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(16);
    tx.send(pb::ProduceRequest {
        request: Some(pb::produce_request::Request::Open(pb::OpenProducer {
            topic: "public/default/crash".into(),
            producer_name: String::new(),
        })),
    })
    .await
    .unwrap();
    let mut resp = producer.produce(ReceiverStream::new(rx)).await.unwrap().into_inner();
    assert!(matches!(
        resp.message().await.unwrap().unwrap().response,
        Some(pb::produce_response::Response::Opened(_))
    ));
    let sender = tokio::spawn(async move {
        for seq in 0u64.. {
            let send = pb::SendBatch {
                sequence_id: seq,
                messages: (0..10)
                    .map(|i| pb::OutgoingMessage {
                        payload: format!("m{}", seq * 10 + i).into(),
                        ..Default::default()
                    })
                    .collect(),
            };
            if tx
                .send(pb::ProduceRequest {
                    request: Some(pb::produce_request::Request::Send(send)),
                })
                .await
                .is_err()
            {
                return;
            }
        }
    });
    // The kill comes at a random point, but not before the first receipt, however long that
    // takes (bounded): the check needs an acknowledged message.
    let kill_at = Instant::now() + Duration::from_millis(200 + rng.below(800));
    let first_receipt_by = Instant::now() + Duration::from_secs(60);
    let mut acked: Vec<u64> = Vec::new();
    loop {
        let until = if acked.is_empty() { first_receipt_by } else { kill_at };
        let msg = tokio::time::timeout_at(until.into(), resp.message()).await;
        match msg {
            Ok(Ok(Some(pb::ProduceResponse {
                response: Some(pb::produce_response::Response::Receipt(r)),
            }))) => acked.push(r.sequence_id),
            Ok(Ok(Some(other))) => panic!("unexpected {other:?}"),
            Ok(_) | Err(_) => break,
        }
    }
    s.sigkill();
    sender.abort();
    assert!(!acked.is_empty(), "nothing was acknowledged before the kill");
    let s = Standalone::start(dir.path(), port).await;
    let want = acked.len() as u64 * 10;
    let out = s.cli(
        &[
            "consume",
            "public/default/crash",
            "-s",
            "check",
            "--initial-position",
            "earliest",
            "--count",
            &want.to_string(),
        ],
        None,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got: std::collections::HashSet<String> = lines(&out).into_iter().collect();
    for seq in &acked {
        for i in 0..10 {
            let m = format!("m{}", seq * 10 + i);
            assert!(got.contains(&m), "acknowledged message {m} lost");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(dir.path(), free_port()).await;
    let out = s.cli(&["produce", "not a topic", "x"], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("persistent://tenant/namespace/topic"));
    let out = s.cli(&["produce", "nosuch/ns/t", "x"], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("namespace nosuch/ns does not exist"));
    // Oversized message.
    let big = "x".repeat(6 << 20) + "\n";
    let out = s.cli(&["produce", "public/default/big"], Some(&big));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("MESSAGE_TOO_LARGE"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A second consumer on an Exclusive subscription, and a type change, are refused.
    let mut c = pb::consumer_client::ConsumerClient::connect(s.url.clone())
        .await
        .unwrap();
    let subscribe = |t: pb::SubscriptionType| pb::ConsumeRequest {
        request: Some(pb::consume_request::Request::Subscribe(pb::Subscribe {
            topic: "public/default/ex".into(),
            subscription: "only".into(),
            r#type: t as i32,
            ..Default::default()
        })),
    };
    let (tx1, rx1) = mpsc::channel(4);
    tx1.send(subscribe(pb::SubscriptionType::Exclusive)).await.unwrap();
    let mut first = c.consume(ReceiverStream::new(rx1)).await.unwrap().into_inner();
    assert!(matches!(
        first.message().await.unwrap().unwrap().response,
        Some(pb::consume_response::Response::Subscribed(_))
    ));
    for (t, code) in [
        (pb::SubscriptionType::Exclusive, pb::ErrorCode::ConsumerBusy),
        (pb::SubscriptionType::Shared, pb::ErrorCode::SubscriptionTypeMismatch),
    ] {
        let (tx, rx) = mpsc::channel(4);
        tx.send(subscribe(t)).await.unwrap();
        let mut second = c.consume(ReceiverStream::new(rx)).await.unwrap().into_inner();
        match second.message().await.unwrap().unwrap().response {
            Some(pb::consume_response::Response::Error(e)) => assert_eq!(e.code, code as i32, "{}", e.message),
            other => panic!("expected an error, got {other:?}"),
        }
    }
    // Acks for unknown message ids are answered with an error, the stream goes on.
    tx1.send(pb::ConsumeRequest {
        request: Some(pb::consume_request::Request::Ack(pb::Ack {
            ids: vec![pb::MessageId {
                ledger_id: 999,
                entry_id: 1,
                batch_index: 0,
                partition: -1,
            }],
            cumulative: false,
            ranges: vec![],
        })),
    })
    .await
    .unwrap();
    match first.message().await.unwrap().unwrap().response {
        Some(pb::consume_response::Response::Error(e)) => assert_eq!(e.code, pb::ErrorCode::UnknownMessageId as i32),
        other => panic!("expected an error, got {other:?}"),
    }
    // Unloading the topic ends its consumers' streams (clients reconnect elsewhere).
    let mut admin = pb::admin_client::AdminClient::connect(s.url.clone()).await.unwrap();
    admin
        .unload_topic(pb::TopicRequest {
            topic: "public/default/ex".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(_)) = first.message().await {}
    })
    .await;
    assert!(end.is_ok(), "consumer stream did not end after unload");
    // The broker still serves.
    let out = s.cli(&["produce", "public/default/ok", "fine"], None);
    assert!(out.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_manages_tenants_namespaces_topics_and_subscriptions() {
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(dir.path(), free_port()).await;
    let ok = |args: &[&str]| {
        let out = s.cli(args, None);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        lines(&out)
    };
    let fails = |args: &[&str], what: &str| {
        let out = s.cli(args, None);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(err.contains(what), "{args:?}: {err}");
    };
    fails(
        &["admin", "namespaces", "create", "acme/orders"],
        "tenant acme does not exist",
    );
    ok(&["admin", "tenants", "create", "acme"]);
    fails(&["admin", "tenants", "create", "acme"], "ALREADY_EXISTS");
    assert!(ok(&["admin", "tenants", "list"]).contains(&"acme".to_string()));
    ok(&["admin", "namespaces", "create", "acme/orders"]);
    assert_eq!(ok(&["admin", "namespaces", "list", "acme"]), vec!["acme/orders"]);
    ok(&[
        "admin",
        "topics",
        "create",
        "persistent://acme/orders/new",
        "--partitions",
        "3",
    ]);
    ok(&["admin", "topics", "create", "acme/orders/plain"]);
    assert_eq!(
        ok(&["admin", "topics", "list", "acme/orders"]),
        vec!["persistent://acme/orders/new", "persistent://acme/orders/plain"]
    );
    // A partitioned topic is produced to and consumed as a whole (or by partition).
    ok(&["produce", "acme/orders/new", "x", "y", "z"]);
    ok(&["produce", "acme/orders/new-partition-1", "a", "b"]);
    let mut all = ok(&[
        "consume",
        "acme/orders/new",
        "-s",
        "whole",
        "--initial-position",
        "earliest",
        "--count",
        "5",
    ]);
    all.sort();
    assert_eq!(all, vec!["a", "b", "x", "y", "z"]);
    ok(&[
        "admin",
        "subscriptions",
        "create",
        "acme/orders/plain",
        "audit",
        "--initial-position",
        "earliest",
    ]);
    ok(&["produce", "acme/orders/plain", "p1", "p2", "p3"]);
    assert_eq!(
        ok(&["admin", "subscriptions", "list", "acme/orders/plain"]),
        vec!["audit"]
    );
    let stats: serde_json::Value =
        serde_json::from_str(&ok(&["admin", "topics", "stats", "acme/orders/plain"]).join("\n")).unwrap();
    assert_eq!(stats["entries"], 1, "{stats}");
    assert_eq!(stats["subscriptions"][0]["name"], "audit");
    assert_eq!(stats["subscriptions"][0]["backlog_entries"], 1);
    let stats: serde_json::Value =
        serde_json::from_str(&ok(&["admin", "topics", "stats", "acme/orders/new"]).join("\n")).unwrap();
    assert_eq!(stats["partitions"], 3);
    let entries = stats["entries"].as_u64().unwrap();
    assert!(
        (4..=5).contains(&entries),
        "one entry per keyless message routed round-robin, 1–2 for a, b: {stats}"
    );
    fails(&["admin", "namespaces", "delete", "acme/orders"], "NOT_EMPTY");
    fails(&["admin", "tenants", "delete", "acme"], "NOT_EMPTY");
    ok(&["admin", "topics", "unload", "acme/orders/plain"]);
    let got = ok(&["consume", "acme/orders/plain", "-s", "audit", "--count", "3"]);
    assert_eq!(got, vec!["p1", "p2", "p3"], "data and cursor survive an unload");
    ok(&["admin", "subscriptions", "delete", "acme/orders/plain", "audit"]);
    fails(
        &["admin", "subscriptions", "delete", "acme/orders/plain", "audit"],
        "NOT_FOUND",
    );
    ok(&["admin", "topics", "delete", "acme/orders/plain"]);
    ok(&["admin", "topics", "delete", "acme/orders/new"]);
    assert!(ok(&["admin", "topics", "list", "acme/orders"]).is_empty());
    ok(&["admin", "namespaces", "delete", "acme/orders"]);
    ok(&["admin", "tenants", "delete", "acme"]);
    fails(&["admin", "tenants", "create", "bad/name"], "invalid tenant");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundles_can_be_listed_split_and_unloaded() {
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(dir.path(), free_port()).await;
    let ok = |out: &std::process::Output| {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        lines(out)
    };
    ok(&s.cli(&["admin", "namespaces", "create", "public/b", "--bundles", "2"], None));
    let list = ok(&s.cli(&["admin", "bundles", "list", "public/b"], None));
    assert_eq!(list, ["0x00000000_0x80000000\t-", "0x80000000_0xffffffff\t-"]);
    ok(&s.cli(&["produce", "public/b/t", "x"], None));
    let owned: Vec<String> = ok(&s.cli(&["admin", "bundles", "list", "public/b"], None))
        .into_iter()
        .filter(|l| !l.ends_with("\t-"))
        .collect();
    assert_eq!(owned.len(), 1, "the topic's bundle is owned: {owned:?}");
    let range = owned[0].split('\t').next().unwrap().to_string();
    ok(&s.cli(&["admin", "bundles", "split", "public/b", &range], None));
    assert_eq!(ok(&s.cli(&["admin", "bundles", "list", "public/b"], None)).len(), 3);
    let first = ok(&s.cli(&["admin", "bundles", "list", "public/b"], None))[0]
        .split('\t')
        .next()
        .unwrap()
        .to_string();
    ok(&s.cli(&["admin", "bundles", "unload", "public/b", &first], None));
    // The topic loads again under the new layout; nothing was lost.
    let got = ok(&s.cli(
        &[
            "consume",
            "public/b/t",
            "-s",
            "s",
            "--initial-position",
            "earliest",
            "--count",
            "1",
        ],
        None,
    ));
    assert_eq!(got, ["x"]);
    // A range that is not (or no longer) a bundle is a clear error.
    let out = s.cli(&["admin", "bundles", "split", "public/b", &range], None);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bundles list"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = s.cli(&["admin", "bundles", "unload", "public/b", "nonsense"], None);
    assert!(String::from_utf8_lossy(&out.stderr).contains("0x00000000_0x40000000"));
    let cluster = ok(&s.cli(&["admin", "cluster", "--json"], None)).join("\n");
    let v: serde_json::Value = serde_json::from_str(&cluster).unwrap();
    assert_eq!(v["brokers"].as_array().unwrap().len(), 1);
    assert_eq!(v["bookies"].as_array().unwrap().len(), 1);
}

/// The last stdout line of `strata perf … --json`, checked against BENCHMARK.md's contract.
fn perf_json(out: &std::process::Output, workload: &str, messages: u64, size: u64) -> serde_json::Value {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let last = lines(out).pop().expect("perf printed nothing");
    let v: serde_json::Value = serde_json::from_str(&last).unwrap_or_else(|e| panic!("{e}: {last}"));
    assert_eq!(v["workload"], workload, "{v}");
    assert_eq!(v["messages"], messages, "{v}");
    assert_eq!(v["bytes"], messages * size, "{v}");
    for field in ["seconds", "msgs_per_sec"] {
        assert!(v[field].as_f64().unwrap() > 0.0, "{field}: {v}");
    }
    assert!(v["mb_per_sec"].as_f64().is_some(), "{v}");
    let l = &v["latency_ms"];
    let q = |k: &str| l[k].as_f64().unwrap_or_else(|| panic!("latency_ms.{k} missing: {v}"));
    assert!(
        0.0 < q("p50") && q("p50") <= q("p99") && q("p99") <= q("p999") && q("p999") <= q("max"),
        "{v}"
    );
    v
}

/// `strata perf` workloads against standalone follow the `--json` contract, with figures
/// that match what the broker counted; standalone serves /healthz, /readyz and /metrics
/// (with process memory and CPU) when asked to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn perf_workloads_and_the_operations_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let http = format!("127.0.0.1:{}", free_port());
    let s = Standalone::start_with_args(dir.path(), free_port(), None, &["--http-listen", &http]).await;
    assert_eq!(http_get(&http, "/healthz").await.unwrap().0, 200);
    assert_eq!(http_get(&http, "/readyz").await.unwrap().0, 200);
    let counter = |page: &str, name: &str| -> f64 {
        page.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics:\n{page}"))
    };
    let page = http_get(&http, "/metrics").await.unwrap().1;
    let in_before = counter(&page, "strata_broker_messages_in_total");
    assert!(counter(&page, "process_resident_memory_bytes") > 1e6);
    // CPU time counts in clock ticks: a process just started may not have used one yet, so
    // here it need only be there; it must have grown once the workloads below ran.
    let cpu_at_start = counter(&page, "process_cpu_seconds_total");
    assert!(cpu_at_start >= 0.0, "process_cpu_seconds_total {cpu_at_start}");

    let topic = "public/default/perf-w1";
    let out = s.cli(
        &[
            "perf",
            "produce",
            "--topic",
            topic,
            "--messages",
            "3000",
            "--size",
            "100",
            "--json",
        ],
        None,
    );
    perf_json(&out, "W1", 3000, 100);
    let out = s.cli(
        &["perf", "consume", "--topic", topic, "--messages", "3000", "--json"],
        None,
    );
    perf_json(&out, "W5", 3000, 100);
    let out = s.cli(
        &[
            "perf",
            "e2e",
            "--topic",
            "public/default/perf-w2",
            "--rate",
            "2000",
            "--messages",
            "2000",
            "--size",
            "100",
            "--json",
        ],
        None,
    );
    perf_json(&out, "W2", 2000, 100);
    let metrics_url = format!("http://{http}/metrics");
    let out = s.cli(
        &[
            "perf",
            "topics",
            "--prefix",
            "public/default/perf-w6",
            "--topics",
            "20",
            "--rate",
            "10",
            "--seconds",
            "2",
            "--size",
            "100",
            "--metrics-url",
            &metrics_url,
            "--json",
        ],
        None,
    );
    let v = perf_json(&out, "W6", 400, 100);
    let server = &v["servers"][0];
    assert!(server["rss_mb"].as_f64().unwrap() > 1.0, "{v}");
    assert!(server["cpu_seconds"].as_f64().unwrap() >= 0.0, "{v}");
    // The broker stored every message the tools say it acknowledged.
    let page = http_get(&http, "/metrics").await.unwrap().1;
    let stored = counter(&page, "strata_broker_messages_in_total") - in_before;
    assert_eq!(stored, (3000 + 2000 + 400) as f64, "messages the broker stored");
    // Serving 5,400 messages took CPU time (read from /proc on each scrape; polled, as the
    // kernel accounts it in whole ticks).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let page = http_get(&http, "/metrics").await.unwrap().1;
        let cpu = counter(&page, "process_cpu_seconds_total");
        if cpu > cpu_at_start {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "process_cpu_seconds_total stayed at {cpu} after the workloads"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = s.cli(&["admin", "topics", "list", "public/default"], None);
    let listed = lines(&out).iter().filter(|t| t.contains("perf-w6-")).count();
    assert_eq!(listed, 20);
    // Bad arguments are refused with a clear error.
    let out = s.cli(&["perf", "topics", "--topics", "0"], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("must be greater than 0"));
}
