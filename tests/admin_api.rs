//! The admin API the operator builds on, against a real `strata standalone` process and
//! through the public CLI: growing partitions, topic policies (retention per topic),
//! subscriptions created at a time and with a type, cursor resets by time and message id,
//! and stats with connected clients. Edge inputs get clear errors and change nothing.

mod common;

use common::{Standalone, free_port};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use strata_client::{
    Client, ErrorCode, InitialPosition, Message, MessageId, ResetTo, SubscriptionStart, SubscriptionType, TopicPolicies,
};

const WAIT: Duration = Duration::from_secs(30);

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

fn text(m: &Message) -> String {
    String::from_utf8_lossy(&m.payload).to_string()
}

/// The next `n` payloads a consumer receives (acking each).
async fn take(c: &strata_client::Consumer, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    while got.len() < n {
        let m = tokio::time::timeout(WAIT, c.receive())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} messages: {got:?}", got.len()))
            .unwrap();
        c.ack(&m).await.unwrap();
        got.push(text(&m));
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_grow_and_never_shrink() {
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(dir.path(), free_port()).await;
    let client = Client::connect(s.url.clone()).await.unwrap();
    let admin = client.admin();
    let t = "public/default/grows";
    admin.create_topic(t, 3).await.unwrap();
    admin
        .create_subscription(t, "audit", InitialPosition::Earliest)
        .await
        .unwrap();

    let out = s.cli(&["admin", "topics", "update-partitions", t, "--partitions", "6"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(admin.topic_stats(t).await.unwrap().partitions, 6);
    // The same count again changes nothing.
    admin.update_partitions(t, 6).await.unwrap();
    // A producer reaches the new partitions.
    let p = client.producer(t).batch_max_messages(1).create().await.unwrap();
    for i in 0..12 {
        p.send_async(format!("{i}")).await.unwrap();
    }
    p.flush().await.unwrap();
    let stats = admin.topic_stats(t).await.unwrap();
    assert_eq!(stats.entries, 12, "{stats:?}");

    for bad in [5, 0] {
        let e = admin.update_partitions(t, bad).await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::InvalidArgument), "{e}");
        assert!(e.to_string().contains("only grow"), "{e}");
    }
    let e = admin.update_partitions(t, u32::MAX).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidArgument), "{e}");
    assert_eq!(admin.topic_stats(t).await.unwrap().partitions, 6);

    admin.create_topic("public/default/flat", 0).await.unwrap();
    let e = admin.update_partitions("public/default/flat", 4).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidArgument), "{e}");
    assert!(e.to_string().contains("not partitioned"), "{e}");
    let e = admin.update_partitions("public/default/missing", 4).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::TopicNotFound), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_policies_override_the_broker_retention() {
    let dir = tempfile::tempdir().unwrap();
    let config = "[broker]\nmax_entries_per_ledger = 10\nretention_check_interval_secs = 1\n";
    let s = Standalone::start_with_config(dir.path(), free_port(), Some(config)).await;
    let client = Client::connect(s.url.clone()).await.unwrap();
    let admin = client.admin();
    let (kept, trimmed) = ("public/default/kept-by-policy", "public/default/trimmed-by-default");
    for t in [kept, trimmed] {
        admin.create_topic(t, 0).await.unwrap();
    }
    assert_eq!(admin.topic_policies(kept).await.unwrap(), TopicPolicies::default());
    let out = s.cli(
        &[
            "admin",
            "topics",
            "set-policies",
            kept,
            "--retention-time-secs",
            "-1",
            "--retention-bytes",
            "-1",
        ],
        None,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = s.cli(&["admin", "topics", "get-policies", kept], None);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v, serde_json::json!({"retention_time_secs": -1, "retention_bytes": -1}));

    for t in [kept, trimmed] {
        let c = client
            .consumer(t)
            .subscription("s")
            .initial_position(InitialPosition::Earliest)
            .subscribe()
            .await
            .unwrap();
        let p = client.producer(t).batch_max_messages(1).create().await.unwrap();
        for i in 0..50 {
            p.send_async(format!("{i}")).await.unwrap();
        }
        p.flush().await.unwrap();
        take(&c, 50).await;
        c.close().await.unwrap();
    }
    let deadline = Instant::now() + WAIT;
    while admin.topic_stats(trimmed).await.unwrap().ledgers > 2 {
        assert!(
            Instant::now() < deadline,
            "the default retention never trimmed {trimmed}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Several more retention rounds (1 s apart) keep the topic with its own policy whole.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        assert!(admin.topic_stats(kept).await.unwrap().ledgers >= 5);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Back to the default: the policy removed, its acknowledged ledgers go too.
    admin.set_topic_policies(kept, TopicPolicies::default()).await.unwrap();
    let deadline = Instant::now() + WAIT;
    while admin.topic_stats(kept).await.unwrap().ledgers > 2 {
        assert!(
            Instant::now() < deadline,
            "retention back at the default never trimmed {kept}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Bad values name the field; partitions take their topic's policies; unknown topics.
    let bad = TopicPolicies {
        retention_bytes: Some(-2),
        ..Default::default()
    };
    let e = admin.set_topic_policies(kept, bad).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidArgument), "{e}");
    assert!(e.to_string().contains("retention_bytes"), "{e}");
    admin.create_topic("public/default/parted", 2).await.unwrap();
    let e = admin
        .set_topic_policies("public/default/parted-partition-1", TopicPolicies::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidArgument), "{e}");
    let e = admin.topic_policies("public/default/none").await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::TopicNotFound), "{e}");
    // Deleting a topic deletes its policies: a topic re-created under the name starts clean.
    let p = TopicPolicies {
        retention_time_secs: Some(60),
        ..Default::default()
    };
    admin.set_topic_policies("public/default/parted", p).await.unwrap();
    admin.delete_topic("public/default/parted").await.unwrap();
    admin.create_topic("public/default/parted", 2).await.unwrap();
    assert_eq!(
        admin.topic_policies("public/default/parted").await.unwrap(),
        TopicPolicies::default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_start_at_a_time_and_reset_to_a_time_or_an_id() {
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(dir.path(), free_port()).await;
    let client = Client::connect(s.url.clone()).await.unwrap();
    let admin = client.admin();
    let t = "public/default/timed";
    admin.create_topic(t, 0).await.unwrap();
    let p = client.producer(t).batch_max_messages(1).create().await.unwrap();
    for i in 0..5 {
        p.send(format!("old-{i}")).await.unwrap();
    }
    // Publish times are stamped by the broker in milliseconds: step past the last one.
    let cut = now_ms() + 1;
    while now_ms() <= cut {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(p.send(format!("new-{i}")).await.unwrap());
    }

    // Created at a time, Shared, before any consumer: it starts at the first new message.
    let out = s.cli(
        &[
            "admin",
            "subscriptions",
            "create",
            t,
            "from-cut",
            "--start-time-ms",
            &cut.to_string(),
            "--type",
            "shared",
        ],
        None,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stats = admin.topic_stats(t).await.unwrap();
    let sub = stats.subscriptions.iter().find(|x| x.name == "from-cut").unwrap();
    assert_eq!((sub.r#type.as_str(), sub.backlog_entries), ("Shared", 5), "{stats:?}");
    let c = client
        .consumer(t)
        .subscription("from-cut")
        .subscription_type(SubscriptionType::Shared)
        .subscribe()
        .await
        .unwrap();
    assert_eq!(
        take(&c, 5).await,
        (0..5).map(|i| format!("new-{i}")).collect::<Vec<_>>()
    );
    // Creating it again: ALREADY_EXISTS, and it stays where it is.
    let e = admin
        .create_subscription_with(t, "from-cut", SubscriptionType::Shared, SubscriptionStart::Earliest)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::AlreadyExists), "{e}");

    // Reset to a time while the consumer is connected: it reconnects and is redelivered
    // from there.
    admin
        .reset_subscription(t, "from-cut", ResetTo::Time(cut))
        .await
        .unwrap();
    assert_eq!(
        take(&c, 5).await,
        (0..5).map(|i| format!("new-{i}")).collect::<Vec<_>>()
    );
    c.close().await.unwrap();

    // Reset to a message id through the CLI, in the form consumers print it.
    let out = s.cli(
        &[
            "admin",
            "subscriptions",
            "reset",
            t,
            "from-cut",
            "--message-id",
            &ids[3].to_string(),
        ],
        None,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stats = admin.topic_stats(t).await.unwrap();
    let sub = stats.subscriptions.iter().find(|x| x.name == "from-cut").unwrap();
    assert_eq!(sub.backlog_entries, 2, "{stats:?}");

    // Ids that never existed are refused and move nothing.
    for (l, e) in [
        (u64::MAX, 0),
        (ids[4].ledger_id, u64::MAX),
        (ids[4].ledger_id, ids[4].entry_id + 2),
    ] {
        let id = MessageId {
            ledger_id: l,
            entry_id: e,
            batch_index: 0,
            partition: -1,
        };
        let err = admin
            .reset_subscription(t, "from-cut", ResetTo::Message(id))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::InvalidArgument), "{err}");
    }
    let id0 = MessageId { ledger_id: 0, ..ids[0] };
    let err = admin
        .reset_subscription(t, "from-cut", ResetTo::Message(id0))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidArgument), "{err}");
    let stats = admin.topic_stats(t).await.unwrap();
    assert_eq!(stats.subscriptions[0].backlog_entries, 2, "{stats:?}");
    // A time after the last message: the end (nothing left), and u64::MAX is such a time.
    admin
        .reset_subscription(t, "from-cut", ResetTo::Time(u64::MAX))
        .await
        .unwrap();
    let stats = admin.topic_stats(t).await.unwrap();
    assert_eq!(stats.subscriptions[0].backlog_entries, 0, "{stats:?}");
    let err = admin.reset_subscription(t, "nope", ResetTo::Time(0)).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotFound), "{err}");

    // Stats count connected producers (the one above is still open).
    assert_eq!(admin.topic_stats(t).await.unwrap().producers, 1);
    p.close().await.unwrap();
    let deadline = Instant::now() + WAIT;
    while admin.topic_stats(t).await.unwrap().producers != 0 {
        assert!(Instant::now() < deadline, "a closed producer is still counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_of_a_partitioned_topic_cover_every_partition() {
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(dir.path(), free_port()).await;
    let client = Client::connect(s.url.clone()).await.unwrap();
    let admin = client.admin();
    let t = "public/default/parts";
    admin.create_topic(t, 3).await.unwrap();
    admin
        .create_subscription_with(t, "all", SubscriptionType::Failover, SubscriptionStart::Earliest)
        .await
        .unwrap();
    assert_eq!(admin.list_subscriptions(t).await.unwrap(), vec!["all".to_string()]);
    for i in 0..3 {
        let names = admin.list_subscriptions(&format!("{t}-partition-{i}")).await.unwrap();
        assert_eq!(names, vec!["all".to_string()], "partition {i}");
    }
    // Partitions added later get it when it is created again (the operator's resync).
    admin.update_partitions(t, 4).await.unwrap();
    admin
        .create_subscription_with(t, "all", SubscriptionType::Failover, SubscriptionStart::Earliest)
        .await
        .unwrap();
    assert_eq!(
        admin.list_subscriptions(&format!("{t}-partition-3")).await.unwrap(),
        vec!["all".to_string()]
    );
    let p = client.producer(t).create().await.unwrap();
    for i in 0..20 {
        p.send_async(format!("{i}")).await.unwrap();
    }
    p.flush().await.unwrap();
    let stats = admin.topic_stats(t).await.unwrap();
    let backlog: u64 = stats.subscriptions.iter().map(|x| x.backlog_entries).sum();
    assert_eq!(backlog, stats.entries, "{stats:?}");
    // A message id reset needs a partition in range.
    let id = MessageId {
        ledger_id: 1,
        entry_id: 0,
        batch_index: 0,
        partition: 7,
    };
    let e = admin
        .reset_subscription(t, "all", ResetTo::Message(id))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidArgument), "{e}");
    assert!(e.to_string().contains("partition"), "{e}");
    admin
        .reset_subscription(t, "all", ResetTo::Time(u64::MAX))
        .await
        .unwrap();
    let stats = admin.topic_stats(t).await.unwrap();
    assert!(stats.subscriptions.iter().all(|x| x.backlog_entries == 0), "{stats:?}");

    admin.delete_subscription(t, "all").await.unwrap();
    assert!(admin.list_subscriptions(t).await.unwrap().is_empty());
    let e = admin.delete_subscription(t, "all").await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotFound), "{e}");
}
