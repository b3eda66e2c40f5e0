//! Hostile and buggy clients against a real `strata standalone` process, through the
//! public gRPC API (raw, as a client generated from the .proto files would send it) and
//! the SDK. Each test reproduces one attack of issue 15 and checks that the broker stays
//! up, the attacker gets a clear error, and other clients are unaffected.
//! (Forwarded-header spoofing needs two brokers: it is in `tests/cluster.rs`.)

mod common;

use common::{Standalone, eventually, free_port, http_get, raw_consume};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use strata_client::{Client, ErrorCode, InitialPosition, ProducerMessage, SubscriptionType};
use strata_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const WAIT: Duration = Duration::from_secs(60);

/// Creates `topic`'s producer named `name`, retrying while the name is still held
/// (PRODUCER_BUSY: its previous holder's stream is still closing).
async fn producer_when_free(client: &Client, topic: &str, name: &str) -> strata_client::Producer {
    let deadline = Instant::now() + WAIT;
    loop {
        match client.producer(topic).name(name).create().await {
            Ok(p) => return p,
            Err(e) => {
                assert_eq!(e.code(), Some(ErrorCode::ProducerBusy), "{e}");
                assert!(Instant::now() < deadline, "{name} still busy: {e}");
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A raw produce stream opened as `name`: the broker's first answer, and the stream.
async fn raw_produce(
    url: &str,
    topic: &str,
    name: &str,
) -> (
    pb::produce_response::Response,
    mpsc::Sender<pb::ProduceRequest>,
    tonic::Streaming<pb::ProduceResponse>,
) {
    let mut p = pb::producer_client::ProducerClient::connect(url.to_string())
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(16);
    tx.send(pb::ProduceRequest {
        request: Some(pb::produce_request::Request::Open(pb::OpenProducer {
            topic: topic.into(),
            producer_name: name.into(),
        })),
    })
    .await
    .unwrap();
    let mut stream = p.produce(ReceiverStream::new(rx)).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().unwrap().response.unwrap();
    (first, tx, stream)
}

fn wire_error(r: &pb::produce_response::Response) -> (pb::ErrorCode, String) {
    match r {
        pb::produce_response::Response::Error(e) => (pb::ErrorCode::try_from(e.code).unwrap(), e.message.clone()),
        other => panic!("expected an error, got {other:?}"),
    }
}

/// Item 5: a consumer granting u32::MAX permits and never reading its stream gets only
/// up to its unacknowledged limit; the subscription's other consumer gets the rest, and
/// everything once the stalled one goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_stops_reading_holds_only_its_unacked_limit() {
    stalled_consumer_holds_only_its_unacked_limit(pb::DeliveryForm::Messages).await;
}

/// The same with the entry form (stored batches, as the Rust SDK asks for).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_of_entries_that_stops_reading_holds_only_its_unacked_limit() {
    stalled_consumer_holds_only_its_unacked_limit(pb::DeliveryForm::Entries).await;
}

async fn stalled_consumer_holds_only_its_unacked_limit(form: pb::DeliveryForm) {
    let dir = tempfile::tempdir().unwrap();
    // 1 MiB per consumer; 400 messages of 64 KiB are 25 MiB.
    let s = Standalone::start_with_config(
        dir.path(),
        free_port(),
        Some("[broker]\nmax_unacked_bytes_per_consumer = 1048576\n"),
    )
    .await;
    let client = Client::connect(s.url.clone()).await.unwrap();
    let topic = "public/default/stalled";
    let producer = client.producer(topic).create().await.unwrap();
    let total = 400usize;
    for i in 0..total {
        let mut payload = vec![b'.'; 64 << 10];
        payload[..8].copy_from_slice(&(i as u64).to_be_bytes());
        producer.send_async(ProducerMessage::new(payload)).await.unwrap();
    }
    producer.flush().await.unwrap();

    // The attacker: Shared, u32::MAX permits, never reads a response.
    let (stalled_tx, stalled_stream) = raw_consume(
        &s.url,
        pb::Subscribe {
            topic: topic.into(),
            subscription: "work".into(),
            r#type: pb::SubscriptionType::Shared as i32,
            initial_position: pb::InitialPosition::Earliest as i32,
            delivery_form: form as i32,
            ..Default::default()
        },
    )
    .await;
    stalled_tx
        .send(pb::ConsumeRequest {
            request: Some(pb::consume_request::Request::Flow(pb::Flow { permits: u32::MAX })),
        })
        .await
        .unwrap();
    let admin = client.admin();
    eventually("the stalled consumer is connected", async || {
        let st = admin.topic_stats(topic).await.unwrap();
        let n = st
            .subscriptions
            .iter()
            .find(|x| x.name == "work")
            .map_or(0, |x| x.consumers);
        (n == 1, n)
    })
    .await;

    // A well-behaved consumer of the same subscription gets everything the stalled one
    // was not given: all but (at most) the 17 messages making its 1 MiB.
    let healthy = client
        .consumer(topic)
        .subscription("work")
        .subscription_type(SubscriptionType::Shared)
        .subscribe()
        .await
        .unwrap();
    let mut got = BTreeSet::new();
    while got.len() < total - 17 {
        let m = tokio::time::timeout(WAIT, healthy.receive())
            .await
            .unwrap_or_else(|_| panic!("healthy consumer stuck at {} of {total}", got.len()))
            .unwrap();
        healthy.ack(&m).await.unwrap();
        got.insert(u64::from_be_bytes(m.payload[..8].try_into().unwrap()));
    }
    // The stalled consumer leaves: what it held comes to the healthy one.
    drop(stalled_tx);
    drop(stalled_stream);
    while got.len() < total {
        let m = tokio::time::timeout(WAIT, healthy.receive())
            .await
            .unwrap_or_else(|_| panic!("healthy consumer stuck at {} of {total} after the stall", got.len()))
            .unwrap();
        healthy.ack(&m).await.unwrap();
        got.insert(u64::from_be_bytes(m.payload[..8].try_into().unwrap()));
    }
    assert_eq!(got, (0..total as u64).collect::<BTreeSet<_>>());
}

/// Item 3: a producer name is held by one producer at a time, and sequence id u64::MAX
/// is refused, so no client can make another producer's sends count as duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_name_cannot_be_hijacked() {
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(dir.path(), free_port()).await;
    let client = Client::connect(s.url.clone()).await.unwrap();
    let topic = "public/default/names";
    let victim = client.producer(topic).name("victim").create().await.unwrap();
    victim.send("before").await.unwrap();

    // The same name from the SDK and from a raw client: PRODUCER_BUSY, naming it.
    let e = client.producer(topic).name("victim").create().await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::ProducerBusy), "{e}");
    assert!(e.to_string().contains("\"victim\""), "{e}");
    let (first, _tx, _stream) = raw_produce(&s.url, topic, "victim").await;
    let (code, message) = wire_error(&first);
    assert_eq!(code, pb::ErrorCode::ProducerBusy, "{message}");

    // Another name may not push the sequence to u64::MAX either.
    let (first, tx, mut stream) = raw_produce(&s.url, topic, "attacker").await;
    assert!(matches!(first, pb::produce_response::Response::Opened(_)), "{first:?}");
    tx.send(pb::ProduceRequest {
        request: Some(pb::produce_request::Request::Send(pb::SendBatch {
            sequence_id: u64::MAX,
            messages: vec![pb::OutgoingMessage {
                payload: "x".into(),
                ..Default::default()
            }],
        })),
    })
    .await
    .unwrap();
    let r = stream.message().await.unwrap().unwrap().response.unwrap();
    let (code, message) = wire_error(&r);
    assert_eq!(code, pb::ErrorCode::InvalidArgument);
    assert!(message.contains("u64::MAX"), "{message}");
    drop((tx, stream));

    // The victim is unaffected: every send stored, once, in order.
    for i in 0..10 {
        victim.send(format!("m{i}")).await.unwrap();
    }
    let c = client
        .consumer(topic)
        .subscription("check")
        .initial_position(InitialPosition::Earliest)
        .subscribe()
        .await
        .unwrap();
    let mut got = Vec::new();
    while got.len() < 11 {
        let m = tokio::time::timeout(WAIT, c.receive()).await.unwrap().unwrap();
        c.ack(&m).await.unwrap();
        got.push(String::from_utf8(m.payload.to_vec()).unwrap());
    }
    let want: Vec<String> = std::iter::once("before".to_string())
        .chain((0..10).map(|i| format!("m{i}")))
        .collect();
    assert_eq!(got, want);
    assert_eq!(
        admin_producers(&client, topic).await,
        1,
        "the refused ones are not counted"
    );

    // Once the victim closes, the name is free again.
    victim.close().await.unwrap();
    let again = producer_when_free(&client, topic, "victim").await;
    again.send("after").await.unwrap();
}

async fn admin_producers(client: &Client, topic: &str) -> u32 {
    client.admin().topic_stats(topic).await.unwrap().producers
}

/// Item 6: producers, subscriptions and consumers per topic are bounded; the refusal
/// names the setting, and a freed slot can be taken again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producers_subscriptions_and_consumers_are_limited() {
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start_with_config(
        dir.path(),
        free_port(),
        Some(
            "[broker]\nmax_producers_per_topic = 2\nmax_subscriptions_per_topic = 2\nmax_consumers_per_subscription = 2\n\
             max_topics_per_namespace = 4\n",
        ),
    )
    .await;
    let client = Client::connect(s.url.clone()).await.unwrap();
    let topic = "public/default/limited";
    let p1 = client.producer(topic).create().await.unwrap();
    let _p2 = client.producer(topic).create().await.unwrap();
    let e = client.producer(topic).create().await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::LimitExceeded), "{e}");
    assert!(e.to_string().contains("max_producers_per_topic"), "{e}");
    p1.send("still works").await.unwrap();

    let shared = |sub: &str| {
        client
            .consumer(topic)
            .subscription(sub)
            .subscription_type(SubscriptionType::Shared)
            .initial_position(InitialPosition::Earliest)
            .subscribe()
    };
    let a1 = shared("a").await.unwrap();
    let a2 = shared("a").await.unwrap();
    let e = shared("a").await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::LimitExceeded), "{e}");
    assert!(e.to_string().contains("max_consumers_per_subscription"), "{e}");
    let _b = shared("b").await.unwrap();
    let e = shared("c").await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::LimitExceeded), "{e}");
    assert!(e.to_string().contains("max_subscriptions_per_topic"), "{e}");
    // A reader counts as a subscription too.
    let e = client.reader(topic).create().await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::LimitExceeded), "{e}");
    // A consumer slot freed is taken again.
    a2.close().await.unwrap();
    let deadline = Instant::now() + WAIT;
    let a3 = loop {
        match shared("a").await {
            Ok(c) => break c,
            Err(e) => {
                assert_eq!(e.code(), Some(ErrorCode::LimitExceeded), "{e}");
                assert!(Instant::now() < deadline, "the consumer slot was never freed");
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // It works: with the other consumer gone, what that one held comes to it.
    a1.close().await.unwrap();
    let m = tokio::time::timeout(WAIT, a3.receive()).await.unwrap().unwrap();
    assert_eq!(&m.payload[..], b"still works");

    // Topics per namespace, partitions counting one each, created or auto-created.
    let admin = client.admin();
    let e = admin.create_topic("public/default/wide", 4).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::LimitExceeded), "{e}");
    assert!(e.to_string().contains("max_topics_per_namespace"), "{e}");
    admin.create_topic("public/default/wide", 2).await.unwrap();
    client.producer("public/default/fourth").create().await.unwrap();
    let e = client.producer("public/default/fifth").create().await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::LimitExceeded), "{e}");
    let e = admin.update_partitions("public/default/wide", 3).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::LimitExceeded), "{e}");
    assert_eq!(admin.topic_stats("public/default/wide").await.unwrap().partitions, 2);
    // Another namespace has its own count.
    admin.create_namespace("public/other").await.unwrap();
    client.producer("public/other/first").create().await.unwrap();
}

/// Item 4 of the smaller ones: a reader cannot take a durable subscription's name while
/// that subscription is not loaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_cannot_take_a_durable_subscriptions_name() {
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(dir.path(), free_port()).await;
    let client = Client::connect(s.url.clone()).await.unwrap();
    let topic = "public/default/names-of-subs";
    let producer = client.producer(topic).create().await.unwrap();
    for i in 0..5 {
        producer.send(format!("m{i}")).await.unwrap();
    }
    client
        .admin()
        .create_subscription(topic, "durable", InitialPosition::Earliest)
        .await
        .unwrap();
    client.admin().unload_topic(topic).await.unwrap();
    let reader = |name: &str| pb::Subscribe {
        topic: topic.into(),
        subscription: name.into(),
        non_durable: true,
        initial_position: pb::InitialPosition::Earliest as i32,
        ..Default::default()
    };
    let (_tx, mut stream) = raw_consume(&s.url, reader("durable")).await;
    match stream.message().await.unwrap().unwrap().response.unwrap() {
        pb::consume_response::Response::Error(e) => {
            assert_eq!(e.code, pb::ErrorCode::AlreadyExists as i32, "{}", e.message);
            assert!(e.message.contains("durable"), "{}", e.message);
        }
        other => panic!("a reader took the durable subscription's name: {other:?}"),
    }
    // The durable subscription still has its backlog, and delivers it.
    let c = client
        .consumer(topic)
        .subscription("durable")
        .subscribe()
        .await
        .unwrap();
    for i in 0..5 {
        let m = tokio::time::timeout(WAIT, c.receive()).await.unwrap().unwrap();
        assert_eq!(&m.payload[..], format!("m{i}").as_bytes());
        c.ack(&m).await.unwrap();
    }
}

/// Smaller ones: a deleted topic's producer history does not pass to a topic created
/// again under its name (its first sends would be taken as resends and dropped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_created_again_does_not_inherit_deduplication_state() {
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(dir.path(), free_port()).await;
    let client = Client::connect(s.url.clone()).await.unwrap();
    let topic = "public/default/reborn";
    let admin = client.admin();
    admin.create_topic(topic, 0).await.unwrap();
    let p = client.producer(topic).name("p").create().await.unwrap();
    for i in 0..20 {
        p.send(format!("old{i}")).await.unwrap();
    }
    p.close().await.unwrap();
    eventually("the producer is gone", async || {
        let n = admin_producers(&client, topic).await;
        (n == 0, n)
    })
    .await;
    admin.delete_topic_with(topic, true).await.unwrap();
    admin.create_topic(topic, 0).await.unwrap();
    let (first, tx, stream) = raw_produce(&s.url, topic, "p").await;
    match first {
        pb::produce_response::Response::Opened(o) => {
            assert_eq!(o.last_sequence_id, None, "no history for the new topic")
        }
        other => panic!("{other:?}"),
    }
    drop((tx, stream));
    let p = producer_when_free(&client, topic, "p").await;
    let id = p.send("new0").await.unwrap();
    let c = client
        .consumer(topic)
        .subscription("s")
        .initial_position(InitialPosition::Earliest)
        .subscribe()
        .await
        .unwrap();
    let m = tokio::time::timeout(WAIT, c.receive()).await.unwrap().unwrap();
    assert_eq!(&m.payload[..], b"new0");
    assert_eq!(m.id, id);
}

/// Smaller ones: `x-partition-0` is not auto-created before `x` is a partitioned topic,
/// nor created by the admin API; once `x` is created with partitions, its partitions work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_name_is_not_auto_created_before_its_topic() {
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(dir.path(), free_port()).await;
    let client = Client::connect(s.url.clone()).await.unwrap();
    let (first, _, _) = raw_produce(&s.url, "public/default/x-partition-0", "").await;
    let (code, message) = wire_error(&first);
    assert_eq!(code, pb::ErrorCode::InvalidArgument);
    assert!(message.contains("partition 0 of"), "{message}");
    let e = client
        .admin()
        .create_topic("public/default/x-partition-0", 0)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidTopicName), "{e}");
    client.admin().create_topic("public/default/x", 2).await.unwrap();
    let p = client.producer("public/default/x-partition-1").create().await.unwrap();
    p.send("in partition 1").await.unwrap();
    let (first, _, _) = raw_produce(&s.url, "public/default/x-partition-2", "").await;
    assert_eq!(
        wire_error(&first).0,
        pb::ErrorCode::InvalidArgument,
        "past the partition count"
    );
}

/// Smaller ones: the HTTP probe port serves a bounded number of connections; more get
/// 503 at once, and the port serves again once they close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_port_bounds_its_connections() {
    let dir = tempfile::tempdir().unwrap();
    let http = format!("127.0.0.1:{}", free_port());
    let s = Standalone::start_with_args(dir.path(), free_port(), None, &["--http-listen", &http]).await;
    let _client = Client::connect(s.url.clone()).await.unwrap();
    eventually("probes answer", async || {
        let r = http_get(&http, "/healthz").await;
        (r.as_ref().is_some_and(|(c, _)| *c == 200), r)
    })
    .await;
    // Idle connections that never send a request, up to the limit (64) and beyond.
    let mut idle = Vec::new();
    for _ in 0..70 {
        idle.push(tokio::net::TcpStream::connect(&http).await.unwrap());
    }
    let busy = eventually("a connection over the limit is refused", async || {
        let r = http_get(&http, "/healthz").await;
        (r.as_ref().is_some_and(|(c, _)| *c == 503), r)
    })
    .await;
    assert!(busy.unwrap().1.contains("too many connections"));
    drop(idle);
    eventually("probes answer again", async || {
        let r = http_get(&http, "/healthz").await;
        (r.as_ref().is_some_and(|(c, _)| *c == 200), r)
    })
    .await;
}

/// Sends on `producer` as fast as it takes them until `until`; every send must succeed
/// (a rate limit slows producers down, it never fails them). Returns how many were sent.
async fn send_flat_out(producer: strata_client::Producer, until: Instant) -> u64 {
    let mut acks = Vec::new();
    let mut n = 0u64;
    while Instant::now() < until {
        acks.push(producer.send_async(format!("m-{n}")).await.unwrap());
        n += 1;
    }
    for a in acks {
        a.await.expect("a throttled send fails");
    }
    n
}

/// Reads `topic` from the start and returns each message's producer and publish time
/// (ms), in order.
async fn publish_times(client: &Client, topic: &str, expected: u64) -> Vec<(String, u64)> {
    let c = client
        .consumer(topic)
        .subscription("count")
        .initial_position(InitialPosition::Earliest)
        .subscribe()
        .await
        .unwrap();
    let mut out = Vec::new();
    while (out.len() as u64) < expected {
        let m = tokio::time::timeout(WAIT, c.receive()).await.unwrap().unwrap();
        let t = m
            .publish_time
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        out.push((m.producer_name.clone(), t));
        c.ack(&m).await.unwrap();
    }
    out
}

/// Messages published in the 10 s starting 1 s after the first.
fn in_window(times: &[(String, u64)], producer: Option<&str>) -> u64 {
    in_window_of(times, producer, 10_000)
}

/// Messages published in the `ms` milliseconds starting 1 s after the first.
fn in_window_of(times: &[(String, u64)], producer: Option<&str>, ms: u64) -> u64 {
    let start = times[0].1 + 1_000;
    times
        .iter()
        .filter(|(p, t)| (start..start + ms).contains(t) && producer.is_none_or(|x| x == p))
        .count() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_rate_slows_producers_down_and_is_shared_by_a_topics_producers() {
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start_with_config(
        dir.path(),
        free_port(),
        Some("[broker]\npublish_rate_per_topic_msgs = 1000\n"),
    )
    .await;
    let client = Client::connect(s.url.clone()).await.unwrap();
    // Small batches, so the rate is measured finely; the queue holds a second's worth, so
    // the producers always have messages waiting.
    let producer = |topic: &'static str, name: &'static str| {
        client
            .producer(topic)
            .name(name)
            .batch_max_messages(10)
            .max_pending_messages(1_000)
            .create()
    };
    // Counted by the broker's publish times (when each batch was admitted), so how
    // quickly this test's process runs does not matter: the producers only need to keep
    // messages waiting, 12 s long.
    let one = "public/default/rate-one";
    let p = producer(one, "solo").await.unwrap();
    let sent = send_flat_out(p, Instant::now() + Duration::from_secs(12)).await;
    let times = publish_times(&client, one, sent).await;
    let n = in_window(&times, None);
    eprintln!("one producer at 1,000 msgs/s: {n} published in 10 s");
    assert!(
        (9_000..=11_000).contains(&n),
        "{n} messages in 10 s at 1,000/s (sent {sent})"
    );

    // Two producers on one topic share its rate.
    let two = "public/default/rate-two";
    let (a, b) = (producer(two, "a").await.unwrap(), producer(two, "b").await.unwrap());
    let until = Instant::now() + Duration::from_secs(12);
    let (sa, sb) = tokio::join!(send_flat_out(a, until), send_flat_out(b, until));
    let times = publish_times(&client, two, sa + sb).await;
    let (n, na, nb) = (
        in_window(&times, None),
        in_window(&times, Some("a")),
        in_window(&times, Some("b")),
    );
    eprintln!("two producers sharing 1,000 msgs/s: {n} published in 10 s ({na} + {nb})");
    assert!(
        (9_000..=11_000).contains(&n),
        "{n} messages in 10 s from two producers at 1,000/s"
    );
    assert!(
        na >= 2_000 && nb >= 2_000,
        "one producer starved the other: {na} / {nb}"
    );

    // Other topics are not slowed: each topic has its own budget.
    let other = client.producer("public/default/rate-other").create().await.unwrap();
    other.send("unaffected").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatch_rate_paces_a_subscription() {
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start_with_config(
        dir.path(),
        free_port(),
        Some("[broker]\ndispatch_rate_per_subscription_msgs = 2000\n"),
    )
    .await;
    let client = Client::connect(s.url.clone()).await.unwrap();
    let topic = "public/default/paced";
    let p = client.producer(topic).batch_max_messages(10).create().await.unwrap();
    let total = 6_000u64;
    let mut acks = Vec::new();
    for i in 0..total {
        acks.push(p.send_async(format!("m-{i}")).await.unwrap());
    }
    for a in acks {
        a.await.unwrap();
    }
    let started = Instant::now();
    let times = publish_times(&client, topic, total).await;
    let took = started.elapsed();
    assert_eq!(times.len() as u64, total);
    // At 2,000/s, after a burst of 200 and at most one dispatch round (the consumer's
    // 1,000 permits) ahead: never faster than that (slower only if this machine is slow).
    let floor = Duration::from_secs_f64((total - 200 - 1_000) as f64 / 2_000.0);
    eprintln!("{total} messages dispatched at 2,000 msgs/s in {took:?}");
    assert!(
        took >= floor,
        "{total} messages dispatched in {took:?}, faster than 2,000/s allows"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_policies_override_the_brokers_limits() {
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(dir.path(), free_port()).await;
    let client = Client::connect(s.url.clone()).await.unwrap();
    let admin = client.admin();
    admin.create_namespace("public/slow").await.unwrap();
    let cli = |args: &[&str]| s.cli(args, None);
    let out = cli(&[
        "admin",
        "namespaces",
        "set-policies",
        "public/slow",
        "--publish-rate-per-topic-msgs",
        "500",
        "--max-topics",
        "2",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = cli(&["admin", "namespaces", "get-policies", "public/slow"]);
    let shown = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        shown.contains("\"publish_rate_per_topic_msgs\": 500") && shown.contains("\"max_topics\": 2"),
        "{shown}"
    );

    // The namespace's rate applies to its topics, counted by the broker's publish times.
    let topic = "public/slow/a";
    let p = client
        .producer(topic)
        .batch_max_messages(5)
        .max_pending_messages(500)
        .create()
        .await
        .unwrap();
    let sent = send_flat_out(p, Instant::now() + Duration::from_secs(7)).await;
    let times = publish_times(&client, topic, sent).await;
    let n = in_window_of(&times, None, 5_000);
    eprintln!("namespace rate 500 msgs/s: {n} published in 5 s");
    assert!((2_250..=2_750).contains(&n), "{n} messages in 5 s at 500/s");

    // Its topic count: a second topic fits, a third does not; other namespaces are free.
    admin.create_topic("public/slow/b", 0).await.unwrap();
    let e = client.producer("public/slow/c").create().await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::LimitExceeded), "{e}");
    assert!(e.to_string().contains("max_topics"), "{e}");
    for i in 0..3 {
        admin
            .create_topic(&format!("public/default/free-{i}"), 0)
            .await
            .unwrap();
    }

    // Bad values are refused by name; no flags at all go back to the brokers' settings.
    let out = cli(&[
        "admin",
        "namespaces",
        "set-policies",
        "public/slow",
        "--max-producers-per-topic",
        "0",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("max_producers_per_topic"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(&["admin", "namespaces", "set-policies", "public/slow"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        admin.namespace_policies("public/slow").await.unwrap(),
        Default::default()
    );
    client.producer("public/slow/c").create().await.unwrap();
    let e = admin.namespace_policies("public/nope").await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotFound), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_change_reaches_topics_already_loaded_and_their_live_producers() {
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(dir.path(), free_port()).await;
    let client = Client::connect(s.url.clone()).await.unwrap();
    let admin = client.admin();
    admin.create_namespace("public/live").await.unwrap();
    let topic = "public/live/t";
    // Loaded, with a producer connected, before any policy exists.
    let p = client
        .producer(topic)
        .batch_max_messages(5)
        .max_pending_messages(500)
        .create()
        .await
        .unwrap();
    p.send("before").await.unwrap();
    let second = client.producer(topic).create().await.unwrap();
    drop(second);

    let policies = strata_client::NamespacePolicies {
        max_producers_per_topic: Some(1),
        publish_rate_per_producer_msgs: Some(500),
        ..Default::default()
    };
    admin.set_namespace_policies("public/live", policies).await.unwrap();

    // No unload: the loaded topic takes the new count (a second producer is refused)...
    let deadline = Instant::now() + Duration::from_secs(30);
    let refused = loop {
        match client.producer(topic).create().await {
            Err(e) => break e,
            Ok(extra) => drop(extra),
        }
        assert!(
            Instant::now() < deadline,
            "the loaded topic never took the new producer limit"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(refused.code(), Some(ErrorCode::LimitExceeded), "{refused}");
    assert!(refused.to_string().contains("max_producers"), "{refused}");

    // ...and the producer connected before the change is held to the new rate.
    let sent = send_flat_out(p, Instant::now() + Duration::from_secs(7)).await;
    let times = publish_times(&client, topic, sent + 1).await;
    let times: Vec<(String, u64)> = times.into_iter().skip(1).collect();
    let n = in_window_of(&times, None, 5_000);
    eprintln!("live producer at a new 500 msgs/s: {n} published in 5 s");
    assert!((2_250..=2_750).contains(&n), "{n} messages in 5 s at 500/s");

    // Back to the brokers' settings: two producers again.
    admin
        .set_namespace_policies("public/live", Default::default())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let (_a, _b) = loop {
        let a = client.producer(topic).create().await;
        let b = client.producer(topic).create().await;
        if let (Ok(a), Ok(b)) = (a, b) {
            break (a, b);
        }
        assert!(Instant::now() < deadline, "the limit was never lifted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
}
