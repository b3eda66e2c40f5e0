//! Edges of a topic's life against a real `strata standalone` process: messages exactly at
//! and just over the size limit (payload, key, properties, producer name), and subscriptions
//! whose mark-delete position must keep advancing through produce / acknowledge / idle /
//! unload cycles while retention deletes what was consumed.

mod common;

use bytes::Bytes;
use common::{Standalone, eventually, free_port};
use std::time::{Duration, Instant};
use strata_client::{Client, ErrorCode, InitialPosition, ProducerMessage, SubscriptionType};

const WAIT: Duration = Duration::from_secs(60);
const MAX: usize = 5 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_at_the_size_limit_is_stored_and_larger_ones_are_refused_without_wedging_the_topic() {
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(dir.path(), free_port()).await;
    let client = Client::connect(s.url.clone()).await.unwrap();
    let topic = "public/default/at-the-limit";
    let producer = client.producer(topic).send_timeout(WAIT).create().await.unwrap();
    let send = |m: ProducerMessage| {
        let p = producer.clone();
        async move {
            tokio::time::timeout(WAIT, p.send(m))
                .await
                .expect("a send must be answered, not hang")
        }
    };
    // Exactly the limit (5 MiB of payload): stored.
    let at_limit = Bytes::from(vec![7u8; MAX]);
    send(ProducerMessage::new(at_limit.clone())).await.unwrap();
    // One byte over, as payload, as key or as a property: refused, naming the sizes.
    let over = [
        ProducerMessage::new(vec![7u8; MAX + 1]),
        ProducerMessage::new("small").key("k".repeat(MAX)),
        ProducerMessage::new("small").property("big", "v".repeat(MAX)),
    ];
    for m in over {
        let e = send(m).await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::MessageTooLarge), "{e}");
        assert!(e.to_string().contains(&MAX.to_string()), "the limit is named: {e}");
    }
    // The topic still takes messages, and unloads promptly (nothing waits on a stuck append).
    send(ProducerMessage::new("after")).await.unwrap();
    let admin = client.admin();
    tokio::time::timeout(WAIT, admin.unload_topic(topic))
        .await
        .expect("unload must not hang")
        .unwrap();
    send(ProducerMessage::new("after unload")).await.unwrap();
    // Everything stored reads back intact.
    let c = client
        .consumer(topic)
        .subscription("s")
        .subscription_type(SubscriptionType::Exclusive)
        .initial_position(InitialPosition::Earliest)
        .subscribe()
        .await
        .unwrap();
    let mut got = Vec::new();
    while got.len() < 3 {
        let m = tokio::time::timeout(WAIT, c.receive()).await.unwrap().unwrap();
        c.ack(&m).await.unwrap();
        got.push(m.payload);
    }
    assert_eq!(got, vec![at_limit, Bytes::from("after"), Bytes::from("after unload")]);
    // A producer name of megabytes (stored with every batch) is refused when opening.
    let e = client
        .producer(topic)
        .name("n".repeat(2 << 20))
        .create()
        .await
        .expect_err("refused");
    assert_eq!(e.code(), Some(ErrorCode::InvalidArgument), "{e}");
    assert!(e.to_string().contains("producer_name"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mark_delete_position_keeps_advancing_through_produce_ack_idle_unload_cycles() {
    let dir = tempfile::tempdir().unwrap();
    let config = "[broker]\nmax_entries_per_ledger = 10\nretention_check_interval_secs = 1\n";
    let s = Standalone::start_with_config(dir.path(), free_port(), Some(config)).await;
    let client = Client::connect(s.url.clone()).await.unwrap();
    let admin = client.admin();
    let topic = "public/default/cycles";
    let c = client
        .consumer(topic)
        .subscription("s")
        .subscription_type(SubscriptionType::Shared)
        .initial_position(InitialPosition::Earliest)
        .subscribe()
        .await
        .unwrap();
    let producer = client.producer(topic).batch_max_messages(1).create().await.unwrap();
    let stats = async || admin.topic_stats(topic).await.unwrap();
    for cycle in 0..6 {
        // Produce 25 entries (3 ledgers' worth), consume and acknowledge them all.
        for i in 0..25 {
            producer.send_async(format!("{cycle}-{i}")).await.unwrap();
        }
        producer.flush().await.unwrap();
        for _ in 0..25 {
            let m = tokio::time::timeout(WAIT, c.receive()).await.unwrap().unwrap();
            c.ack(&m).await.unwrap();
        }
        // The persisted mark-delete position covers everything …
        eventually(&format!("cycle {cycle}: backlog"), async || {
            let st = stats().await;
            let backlog = st.subscriptions.iter().map(|s| s.backlog_entries).sum::<u64>();
            (backlog == 0, backlog)
        })
        .await;
        // … then the topic idles through unloads with no append in between (as bundle
        // shedding moves idle topics): each load starts a ledger that closes empty.
        for _ in 0..2 {
            admin.unload_topic(topic).await.unwrap();
            // The consumer reconnects, which loads the topic again.
            eventually(&format!("cycle {cycle}: consumer back"), async || {
                let st = stats().await;
                let n = st.subscriptions.iter().map(|s| s.consumers).sum::<u32>();
                (n == 1, n)
            })
            .await;
        }
        // Retention deletes every consumed ledger: the count stays bounded.
        eventually(&format!("cycle {cycle}: consumed ledgers deleted"), async || {
            let st = stats().await;
            (st.ledgers <= 2, st.ledgers)
        })
        .await;
    }
    // And what was acknowledged is never delivered again.
    producer.send("last").await.unwrap();
    let m = tokio::time::timeout(WAIT, c.receive()).await.unwrap().unwrap();
    assert_eq!(m.payload, Bytes::from("last"));
}

/// A seek (by a consumer, or `strata admin subscriptions reset`) to a made-up position past
/// the end is refused with an error naming it: it used to persist a mark-delete beyond
/// every entry, so stats showed no backlog and retention deleted unread data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seek_past_the_end_is_refused_and_the_subscription_keeps_its_backlog() {
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(dir.path(), free_port()).await;
    let client = Client::connect(s.url.clone()).await.unwrap();
    let topic = "public/default/made-up-seek";
    let consumer = client
        .consumer(topic)
        .subscription("victim")
        .subscription_type(SubscriptionType::Exclusive)
        .initial_position(InitialPosition::Earliest)
        .subscribe()
        .await
        .unwrap();
    let producer = client.producer(topic).create().await.unwrap();
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(producer.send(format!("m{i}")).await.unwrap());
    }
    let last = *ids.last().unwrap();
    for bad in [
        strata_client::MessageId {
            ledger_id: u64::MAX,
            ..last
        },
        strata_client::MessageId {
            entry_id: u64::MAX,
            ..last
        },
        strata_client::MessageId {
            ledger_id: last.ledger_id + 1,
            entry_id: 0,
            ..last
        },
    ] {
        // A refused seek makes the consumer reconnect (its queue is redelivered); a seek
        // while it reconnects is refused as "not connected": try again.
        let deadline = Instant::now() + WAIT;
        let text = loop {
            let e = tokio::time::timeout(WAIT, consumer.seek(bad))
                .await
                .unwrap()
                .unwrap_err();
            let text = e.to_string();
            if !text.contains("not connected") {
                break text;
            }
            assert!(Instant::now() < deadline, "{text}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(
            text.contains("no such position") && text.contains(&format!("{}:{}", bad.ledger_id, bad.entry_id)),
            "{bad:?}: {text}"
        );
    }
    // The same through the admin API, as `strata admin subscriptions reset` sends it.
    let out = s.cli(
        &[
            "admin",
            "subscriptions",
            "reset",
            topic,
            "victim",
            "--message-id",
            &format!("{}:0", u64::MAX),
        ],
        None,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no such") && err.contains(&format!("{}:0", u64::MAX)),
        "{err}"
    );
    // Nothing moved: the backlog is all ten messages, and all ten are delivered in order.
    let stats = client.admin().topic_stats(topic).await.unwrap();
    let victim = stats.subscriptions.iter().find(|s| s.name == "victim").unwrap();
    assert!(victim.backlog_entries >= 1, "{stats:?}");
    for i in 0..10 {
        let m = tokio::time::timeout(WAIT, consumer.receive()).await.unwrap().unwrap();
        assert_eq!(m.payload, Bytes::from(format!("m{i}")));
        consumer.ack(&m).await.unwrap();
    }
    // A seek to the end itself (the next message) is valid: nothing more is delivered
    // until something is sent.
    let end = strata_client::MessageId {
        entry_id: last.entry_id + 1,
        ..last
    };
    let deadline = Instant::now() + WAIT;
    while let Err(e) = consumer.seek(end).await {
        assert!(
            e.to_string().contains("not connected") && Instant::now() < deadline,
            "{e}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    producer.send("after").await.unwrap();
    let m = tokio::time::timeout(WAIT, consumer.receive()).await.unwrap().unwrap();
    assert_eq!(m.payload, Bytes::from_static(b"after"));
}

/// One batch of 100,000 empty messages from a producer with the longest name allowed
/// (1,024 bytes), consumed by a consumer granting 100,000 permits: every message carries
/// the name on the wire, so responses are sized by the whole encoded message. They used
/// to be sized by payload alone: one response of over 100 MB, above any client's limit,
/// so the consumer could never receive it (and the broker copied the name per message).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_batch_of_empty_messages_with_a_long_producer_name_is_delivered_in_bounded_responses() {
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(dir.path(), free_port()).await;
    let client = Client::connect(s.url.clone()).await.unwrap();
    let topic = "public/default/many-empty";
    const N: usize = 100_000;
    let consumer = client
        .consumer(topic)
        .subscription("all")
        .initial_position(InitialPosition::Earliest)
        .receiver_queue_size(N as u32)
        .subscribe()
        .await
        .unwrap();
    let producer = client
        .producer(topic)
        .name("p".repeat(1024))
        .batch_max_messages(N)
        .batch_max_delay(Duration::from_secs(2))
        .max_pending_messages(N)
        .send_timeout(WAIT)
        .create()
        .await
        .unwrap();
    let mut receipts = Vec::with_capacity(N);
    for _ in 0..N {
        receipts.push(producer.send_async(Bytes::new()).await.unwrap());
    }
    let mut entries = std::collections::BTreeSet::new();
    for r in receipts {
        let id = tokio::time::timeout(WAIT, r).await.unwrap().unwrap();
        entries.insert((id.ledger_id, id.entry_id));
    }
    assert!(
        entries.len() < 10,
        "the messages were not batched: {} entries",
        entries.len()
    );
    let mut got = 0;
    while got < N {
        let m = tokio::time::timeout(WAIT, consumer.receive())
            .await
            .unwrap_or_else(|_| panic!("stuck after {got} of {N} messages"))
            .unwrap();
        assert!(m.payload.is_empty());
        got += 1;
        // Acknowledged as it goes: a consumer holding 50,000 unacknowledged messages
        // (max_unacked_messages_per_consumer) is sent nothing more.
        if got % 10_000 == 0 {
            consumer.ack_cumulative(&m).await.unwrap();
        }
    }
    // The broker is still serving.
    producer.send("last").await.unwrap();
}
