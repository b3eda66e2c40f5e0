//! The Rust SDK (`strata-client`) against a real `strata standalone` process: the four
//! subscription types, at-least-once redelivery (consumers gone before acking, negative
//! acks, ack timeouts), partitioned topics, readers and seeks, reconnects across unloads
//! and restarts, send timeouts and back-pressure, retention, and auto-creation off.

mod common;

use common::{STRATA, Standalone, free_port};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};
use strata_client::{
    Client, Consumer, ErrorCode, InitialPosition, Message, ProducerMessage, StartPosition, SubscriptionType,
};

const WAIT: Duration = Duration::from_secs(30);

/// A child process SIGKILLed when the test ends, passing or not.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn consumer(client: &Client, topic: &str, sub: &str, t: SubscriptionType) -> Consumer {
    client
        .consumer(topic)
        .subscription(sub)
        .subscription_type(t)
        .initial_position(InitialPosition::Earliest)
        .subscribe()
        .await
        .unwrap()
}

async fn recv(c: &Consumer) -> Option<Message> {
    tokio::time::timeout(Duration::from_secs(2), c.receive())
        .await
        .ok()
        .map(|m| m.unwrap())
}

fn text(m: &Message) -> String {
    String::from_utf8_lossy(&m.payload).to_string()
}

/// Receives (and acks) from all consumers until `n` messages in total or the deadline.
async fn drain(consumers: &[&Consumer], n: usize) -> Vec<Vec<Message>> {
    let mut got: Vec<Vec<Message>> = consumers.iter().map(|_| Vec::new()).collect();
    let deadline = Instant::now() + WAIT;
    while got.iter().map(Vec::len).sum::<usize>() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} messages",
            got.iter().map(Vec::len).sum::<usize>()
        );
        for (i, c) in consumers.iter().enumerate() {
            while let Ok(Ok(m)) = tokio::time::timeout(Duration::from_millis(20), c.receive()).await {
                c.ack(&m).await.unwrap();
                got[i].push(m);
            }
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_types_keep_their_promises() {
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(dir.path(), free_port()).await;
    let client = Client::connect(s.url.clone()).await.unwrap();
    let topic = "public/default/types";
    // Every consumer is connected before the first message, so Shared and Key_Shared
    // have all their consumers to spread over.
    let ex = consumer(&client, topic, "ex", SubscriptionType::Exclusive).await;
    let f1 = consumer(&client, topic, "fo", SubscriptionType::Failover).await;
    let f2 = consumer(&client, topic, "fo", SubscriptionType::Failover).await;
    let mut shared = Vec::new();
    let mut ks = Vec::new();
    for _ in 0..3 {
        shared.push(consumer(&client, topic, "sh", SubscriptionType::Shared).await);
        ks.push(consumer(&client, topic, "ks", SubscriptionType::KeyShared).await);
    }
    let producer = client.producer(topic).batch_max_messages(10).create().await.unwrap();
    let mut receipts = Vec::new();
    for i in 0..300 {
        let m = ProducerMessage::new(format!("{i}")).key(format!("k{}", i % 5));
        receipts.push(producer.send_async(m).await.unwrap());
    }
    let mut ids = Vec::new();
    for r in receipts {
        ids.push(r.await.unwrap());
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids follow publish order");
    let expected: Vec<String> = (0..300).map(|i| i.to_string()).collect();

    // Exclusive: publish order; a second consumer is refused.
    let busy = client.consumer(topic).subscription("ex").subscribe().await;
    assert_eq!(busy.err().and_then(|e| e.code()), Some(ErrorCode::ConsumerBusy));
    let wrong = client
        .consumer(topic)
        .subscription("ex")
        .subscription_type(SubscriptionType::Shared)
        .subscribe()
        .await;
    assert_eq!(
        wrong.err().and_then(|e| e.code()),
        Some(ErrorCode::SubscriptionTypeMismatch)
    );
    let got = drain(&[&ex], 300).await;
    assert_eq!(got[0].iter().map(text).collect::<Vec<_>>(), expected);
    assert_eq!(got[0].iter().map(|m| m.id).collect::<Vec<_>>(), ids);

    // Failover: one active consumer gets everything, in order.
    let got = drain(&[&f1, &f2], 300).await;
    let mut merged: Vec<&Message> = got.iter().flatten().collect();
    assert!(
        got.iter().any(|g| g.len() == 300),
        "one active consumer: {} / {}",
        got[0].len(),
        got[1].len()
    );
    merged.sort_by_key(|m| m.id);
    assert_eq!(merged.iter().map(|m| text(m)).collect::<Vec<_>>(), expected);

    // Shared: spread over every consumer, each message once.
    let got = drain(&shared.iter().collect::<Vec<_>>(), 300).await;
    assert!(
        got.iter().all(|g| !g.is_empty()),
        "every Shared consumer got some: {:?}",
        got.iter().map(Vec::len).collect::<Vec<_>>()
    );
    let mut all: Vec<String> = got.iter().flatten().map(text).collect();
    all.sort_by_key(|x| x.parse::<u32>().unwrap());
    assert_eq!(all, expected);

    // Key_Shared: each key on one consumer, in publish order.
    let got = drain(&ks.iter().collect::<Vec<_>>(), 300).await;
    let mut owner: HashMap<String, usize> = HashMap::new();
    for (i, g) in got.iter().enumerate() {
        let mut last: HashMap<String, u32> = HashMap::new();
        for m in g {
            let key = m.key.clone().unwrap();
            assert_eq!(*owner.entry(key.clone()).or_insert(i), i, "key {key} on two consumers");
            let n: u32 = text(m).parse().unwrap();
            if let Some(prev) = last.insert(key.clone(), n) {
                assert!(prev < n, "key {key}: {n} after {prev}");
            }
        }
    }
    assert_eq!(got.iter().map(Vec::len).sum::<usize>(), 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_messages_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(dir.path(), free_port()).await;
    let client = Client::connect(s.url.clone()).await.unwrap();
    let topic = "public/default/redeliver";
    let producer = client.producer(topic).batch_max_messages(5).create().await.unwrap();
    // The subscription exists before the messages do.
    let survivor = consumer(&client, topic, "work", SubscriptionType::Shared).await;
    // A CLI consumer on the same subscription, SIGKILLed after its first messages.
    let mut cli = KillOnDrop(
        Command::new(STRATA)
            .args(["consume", topic, "-s", "work", "--type", "shared", "--url", &s.url])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = cli.0.stdout.take().unwrap();
    let (line_tx, line_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if line_tx.send(l).is_err() {
                return;
            }
        }
    });
    // An SDK consumer that receives and never acknowledges, then goes away.
    let quitter = consumer(&client, topic, "work", SubscriptionType::Shared).await;
    let deadline = Instant::now() + WAIT;
    while client.admin().topic_stats(topic).await.unwrap().subscriptions[0].consumers < 3 {
        assert!(Instant::now() < deadline, "the CLI consumer did not subscribe");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let n = 600;
    for i in 0..n {
        producer.send_async(format!("m{i}")).await.unwrap();
    }
    producer.flush().await.unwrap();
    let mut quitter_got = Vec::new();
    while quitter_got.len() < 20 {
        match tokio::time::timeout(WAIT, quitter.receive()).await {
            Ok(m) => quitter_got.push(text(&m.unwrap())),
            Err(_) => panic!(
                "the quitting consumer got {} messages, not its share",
                quitter_got.len()
            ),
        }
    }
    let first = line_rx.recv_timeout(WAIT).expect("the CLI consumer printed a message");
    let _ = cli.0.kill();
    let _ = cli.0.wait();
    // Everything it printed (it prints before acknowledging), also what the reader thread
    // had not passed on yet when it died: read to the end of its output.
    let mut cli_printed: HashSet<String> = HashSet::from([first]);
    loop {
        match line_rx.recv_timeout(WAIT) {
            Ok(l) => {
                cli_printed.insert(l);
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(e) => panic!("the killed CLI consumer's output did not end: {e}"),
        }
    }
    // Only now does the quitter leave: had it left while the CLI consumer still ran, its
    // messages could have been redelivered to the CLI consumer instead of the survivor.
    drop(quitter);

    let mut seen: HashSet<String> = HashSet::new();
    let deadline = Instant::now() + WAIT;
    // Everything the quitter held, and everything the CLI did not acknowledge, reaches
    // the survivor.
    while (0..n).any(|i| {
        let m = format!("m{i}");
        !seen.contains(&m) && !cli_printed.contains(&m)
    }) {
        assert!(Instant::now() < deadline, "messages never redelivered");
        if let Some(m) = recv(&survivor).await {
            survivor.ack(&m).await.unwrap();
            seen.insert(text(&m));
        }
    }
    for q in &quitter_got {
        assert!(
            seen.contains(q),
            "{q} held unacknowledged by a consumer that left was not redelivered"
        );
    }

    // Negative acks come back with a growing redelivery count.
    let topic = "public/default/nack";
    let p = client.producer(topic).create().await.unwrap();
    let c = consumer(&client, topic, "n", SubscriptionType::Shared).await;
    p.send("poison").await.unwrap();
    for expected in 0..3 {
        let m = tokio::time::timeout(WAIT, c.receive()).await.unwrap().unwrap();
        assert_eq!((text(&m).as_str(), m.redelivery_count), ("poison", expected));
        c.nack(&m).await.unwrap();
    }
    let m = tokio::time::timeout(WAIT, c.receive()).await.unwrap().unwrap();
    assert_eq!(m.redelivery_count, 3);
    c.ack(&m).await.unwrap();

    // Ack timeout: not acknowledged in time, redelivered.
    let topic = "public/default/ack-timeout";
    let p = client.producer(topic).create().await.unwrap();
    let c = client
        .consumer(topic)
        .subscription("t")
        .ack_timeout(Duration::from_millis(500))
        .initial_position(InitialPosition::Earliest)
        .subscribe()
        .await
        .unwrap();
    p.send("slow").await.unwrap();
    let m = tokio::time::timeout(WAIT, c.receive()).await.unwrap().unwrap();
    assert_eq!(m.redelivery_count, 0);
    let again = tokio::time::timeout(WAIT, c.receive()).await.unwrap().unwrap();
    assert_eq!((again.id, again.redelivery_count), (m.id, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_topics_route_by_key_and_round_robin() {
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(dir.path(), free_port()).await;
    let client = Client::connect(s.url.clone()).await.unwrap();
    let topic = "public/default/parts";
    client.admin().create_topic(topic, 4).await.unwrap();
    let c = consumer(&client, topic, "all", SubscriptionType::Exclusive).await;
    let producer = client.producer(topic).create().await.unwrap();
    assert_eq!(producer.partitions(), 4);
    let mut key_partition: HashMap<String, i32> = HashMap::new();
    for i in 0..200 {
        let key = format!("key-{}", i % 7);
        let id = producer
            .send(ProducerMessage::new(format!("{key}:{i}")).key(key.clone()))
            .await
            .unwrap();
        assert!((0..4).contains(&id.partition));
        assert_eq!(
            *key_partition.entry(key).or_insert(id.partition),
            id.partition,
            "a key stays on one partition"
        );
    }
    let mut keyless = HashSet::new();
    for i in 0..40 {
        keyless.insert(producer.send(format!("nokey:{i}")).await.unwrap().partition);
    }
    assert_eq!(keyless.len(), 4, "round-robin reaches every partition");
    let got = drain(&[&c], 240).await;
    let mut per_key: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for m in &got[0] {
        assert!(m.topic.starts_with("public/default/parts-partition-"), "{}", m.topic);
        let t = text(m);
        let (k, i) = t.split_once(':').unwrap();
        per_key.entry(k.to_string()).or_default().push(i.parse().unwrap());
    }
    for (k, v) in &per_key {
        if k.starts_with("key-") {
            assert!(v.windows(2).all(|w| w[0] < w[1]), "{k} out of order: {v:?}");
        }
    }
    assert_eq!(per_key.values().map(Vec::len).sum::<usize>(), 240);
    let stats = client.admin().topic_stats(topic).await.unwrap();
    assert_eq!(stats.partitions, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_and_seeks() {
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(dir.path(), free_port()).await;
    let client = Client::connect(s.url.clone()).await.unwrap();
    let topic = "public/default/history";
    let producer = client
        .producer(topic)
        .batch_max_delay(Duration::ZERO)
        .create()
        .await
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(producer.send(format!("a{i}")).await.unwrap());
    }
    // Let the clock move on, so the second wave has later publish times.
    let t0 = SystemTime::now();
    while SystemTime::now().duration_since(t0).unwrap() < Duration::from_millis(20) {
        tokio::task::yield_now().await;
    }
    let middle = SystemTime::now();
    for i in 0..5 {
        ids.push(producer.send(format!("b{i}")).await.unwrap());
    }
    let read_all = |r: strata_client::Reader, n: usize| async move {
        let mut v = Vec::new();
        for _ in 0..n {
            v.push(text(&tokio::time::timeout(WAIT, r.read_next()).await.unwrap().unwrap()));
        }
        assert!(
            tokio::time::timeout(Duration::from_millis(300), r.read_next())
                .await
                .is_err(),
            "nothing more"
        );
        v
    };
    let r = client
        .reader(topic)
        .start(StartPosition::Earliest)
        .create()
        .await
        .unwrap();
    assert_eq!(
        read_all(r, 10).await,
        ["a0", "a1", "a2", "a3", "a4", "b0", "b1", "b2", "b3", "b4"]
    );
    let r = client
        .reader(topic)
        .start(StartPosition::MessageId(ids[3]))
        .create()
        .await
        .unwrap();
    assert_eq!(read_all(r, 6).await, ["a4", "b0", "b1", "b2", "b3", "b4"]);
    let r = client
        .reader(topic)
        .start(StartPosition::MessageId(ids[3]))
        .start_inclusive(true)
        .create()
        .await
        .unwrap();
    assert_eq!(read_all(r, 7).await[0], "a3");
    let r = client
        .reader(topic)
        .start(StartPosition::Latest)
        .create()
        .await
        .unwrap();
    producer.send("new").await.unwrap();
    assert_eq!(read_all(r, 1).await, ["new"]);
    assert!(
        client.admin().list_subscriptions(topic).await.unwrap().is_empty(),
        "readers leave no subscription behind"
    );

    // Seek a durable subscription by message id and by publish time.
    let c = consumer(&client, topic, "s", SubscriptionType::Exclusive).await;
    let got = drain(&[&c], 11).await;
    assert_eq!(got[0].len(), 11);
    c.seek(ids[7]).await.unwrap();
    let m = tokio::time::timeout(WAIT, c.receive()).await.unwrap().unwrap();
    assert_eq!(text(&m), "b2");
    c.seek_time(middle).await.unwrap();
    let m = tokio::time::timeout(WAIT, c.receive()).await.unwrap().unwrap();
    assert_eq!(text(&m), "b0", "first message published at or after the time");

    // A seek by one consumer of a Shared subscription moves the subscription for all: the
    // others are disconnected and come back at the new position, not stalled.
    let sh1 = consumer(&client, topic, "shared-seek", SubscriptionType::Shared).await;
    let sh2 = consumer(&client, topic, "shared-seek", SubscriptionType::Shared).await;
    assert_eq!(drain(&[&sh1, &sh2], 11).await.iter().map(Vec::len).sum::<usize>(), 11);
    sh1.seek(ids[0]).await.unwrap();
    sh1.close().await.unwrap();
    producer.send("after-seek").await.unwrap();
    let again: HashSet<String> = drain(&[&sh2], 12).await[0].iter().map(text).collect();
    assert!(again.contains("a0") && again.contains("after-seek"), "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_ride_through_unloads_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut s = Standalone::start(dir.path(), port).await;
    let client = Client::builder(s.url.clone())
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(500))
        .build()
        .await
        .unwrap();
    let topic = "public/default/moving";
    let c = consumer(&client, topic, "s", SubscriptionType::Shared).await;
    let producer = client.producer(topic).create().await.unwrap();
    let n = 3000;
    let sender = {
        let producer = producer.clone();
        tokio::spawn(async move {
            let mut receipts = Vec::new();
            for i in 0..n {
                receipts.push(producer.send_async(format!("{i}")).await.unwrap());
                if i % 100 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            let mut errors = Vec::new();
            for r in receipts {
                if let Err(e) = r.await {
                    errors.push(e.to_string());
                }
            }
            errors
        })
    };
    let mut seen = HashSet::new();
    let mut unloads = 0;
    let mut restarted = false;
    let deadline = Instant::now() + Duration::from_secs(90);
    while seen.len() < n {
        assert!(Instant::now() < deadline, "only {} of {n} delivered", seen.len());
        if let Ok(Ok(m)) = tokio::time::timeout(Duration::from_millis(100), c.receive()).await {
            c.ack(&m).await.unwrap();
            seen.insert(text(&m));
        }
        if seen.len() > 500 * (unloads + 1) && unloads < 2 {
            client.admin().unload_topic(topic).await.unwrap();
            unloads += 1;
        }
        if seen.len() > 1500 && !restarted {
            assert!(s.sigterm().success());
            s = Standalone::start(dir.path(), port).await;
            restarted = true;
        }
    }
    let errors = sender.await.unwrap();
    assert!(
        errors.is_empty(),
        "sends failed across unloads and a restart: {errors:?}"
    );
    assert!(restarted && unloads == 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_timeouts_and_back_pressure() {
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(dir.path(), free_port()).await;
    let client = Client::connect(s.url.clone()).await.unwrap();
    let fast_fail = client
        .producer("public/default/stalled")
        .send_timeout(Duration::from_millis(800))
        .create()
        .await
        .unwrap();
    let bounded = client
        .producer("public/default/bounded")
        .max_pending_messages(5)
        .create()
        .await
        .unwrap();
    bounded.send("warm-up").await.unwrap();
    let pid = s.child.id().to_string();
    assert!(Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
    let started = Instant::now();
    let err = fast_fail.send("lost in time").await.unwrap_err();
    assert!(matches!(err, strata_client::Error::Timeout(_)), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // Five sends fit; the sixth waits for room instead of buffering without bound.
    let mut receipts = Vec::new();
    for i in 0..5 {
        receipts.push(bounded.send_async(format!("{i}")).await.unwrap());
    }
    let sixth = tokio::time::timeout(Duration::from_millis(500), bounded.send_async("6")).await;
    assert!(sixth.is_err(), "the sixth send must wait while five are pending");
    assert!(Command::new("kill").args(["-CONT", &pid]).status().unwrap().success());
    for r in receipts {
        tokio::time::timeout(WAIT, r).await.unwrap().unwrap();
    }
    tokio::time::timeout(WAIT, bounded.send("7")).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_acknowledged_ledgers_and_auto_creation_can_be_off() {
    let dir = tempfile::tempdir().unwrap();
    let config =
        "[broker]\nauto_create_topics = false\nmax_entries_per_ledger = 10\nretention_check_interval_secs = 1\n";
    let s = Standalone::start_with_config(dir.path(), free_port(), Some(config)).await;
    let client = Client::connect(s.url.clone()).await.unwrap();
    let err = client.producer("public/default/nope").create().await.err().unwrap();
    assert_eq!(err.code(), Some(ErrorCode::TopicNotFound), "{err}");
    let out = s.cli(&["produce", "public/default/nope", "x"], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("TOPIC_NOT_FOUND"));

    let admin = client.admin();
    for t in ["public/default/kept", "public/default/trimmed"] {
        admin.create_topic(t, 0).await.unwrap();
    }
    let c = consumer(&client, "public/default/trimmed", "s", SubscriptionType::Exclusive).await;
    for t in ["public/default/kept", "public/default/trimmed"] {
        let p = client.producer(t).batch_max_messages(1).create().await.unwrap();
        for i in 0..100 {
            p.send_async(format!("{i}")).await.unwrap();
        }
        p.flush().await.unwrap();
    }
    assert!(admin.topic_stats("public/default/trimmed").await.unwrap().ledgers >= 10);
    let got = drain(&[&c], 100).await;
    assert_eq!(got[0].len(), 100);
    let deadline = Instant::now() + WAIT;
    loop {
        let ledgers = admin.topic_stats("public/default/trimmed").await.unwrap().ledgers;
        if ledgers <= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "acknowledged ledgers not deleted: {ledgers} left"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // No subscription: nothing was acknowledged, so everything is kept.
    assert!(admin.topic_stats("public/default/kept").await.unwrap().ledgers >= 10);
    let r = client.reader("public/default/kept").create().await.unwrap();
    for i in 0..100 {
        let m = tokio::time::timeout(WAIT, r.read_next()).await.unwrap().unwrap();
        assert_eq!(text(&m), i.to_string());
    }
}
