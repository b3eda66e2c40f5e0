//! Request validation under fuzzing (bounded, proptest) against a real `strata standalone`
//! process: arbitrary produce streams, consume streams and admin calls, as a hostile
//! client generated from the .proto files could send them — names of any length and
//! alphabet, u64::MAX ids, made-up positions, unknown enum values, oversized batches.
//!
//! Each request must be answered: a success, or an error carrying a code and a message
//! (never a dropped connection or an `UNKNOWN`/`INTERNAL` status, which is what a panic in
//! a handler would give), and every stream must end once the client ends its side.
//! Afterwards the node still serves an ordinary producer and consumer.

mod common;

use common::{Standalone, free_port};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use strata_client::{Client, InitialPosition};
use strata_proto::v1 as pb;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

/// How long one request may take to be answered (generous: a loaded 2-core machine).
const ANSWER: Duration = Duration::from_secs(30);

/// How many fuzzed requests got through validation (stored, subscribed, done), so the
/// run shows it reached past the first checks rather than only being refused.
static STORED: AtomicU64 = AtomicU64::new(0);
static SUBSCRIBED: AtomicU64 = AtomicU64::new(0);
static ADMIN_OK: AtomicU64 = AtomicU64::new(0);

fn topic() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "(persistent://)?public/default/f[0-3]",
        1 => "public/default/f0-partition-[0-9]{1,4}",
        1 => "public/(default|nope)/[a-z]{1,300}",
        1 => ".{0,80}",
        1 => "[a-z/:]{0,20}",
    ]
}

fn id() -> impl Strategy<Value = pb::MessageId> {
    (
        prop_oneof![Just(0u64), Just(u64::MAX), 0u64..20, any::<u64>()],
        prop_oneof![Just(0u64), Just(u64::MAX), 0u64..20, any::<u64>()],
        any::<u32>(),
        prop_oneof![Just(-1i32), 0i32..4, any::<i32>()],
    )
        .prop_map(|(ledger_id, entry_id, batch_index, partition)| pb::MessageId {
            ledger_id,
            entry_id,
            batch_index,
            partition,
        })
}

fn message() -> impl Strategy<Value = pb::OutgoingMessage> {
    (
        prop_oneof![
            4 => proptest::collection::vec(any::<u8>(), 0..64),
            1 => proptest::collection::vec(any::<u8>(), 0..200_000),
        ],
        ".{0,20}",
        proptest::collection::hash_map(".{0,300}", ".{0,20}", 0..3),
        any::<u64>(),
    )
        .prop_map(|(payload, key, properties, event_time_ms)| pb::OutgoingMessage {
            payload: payload.into(),
            key,
            properties,
            event_time_ms,
        })
}

/// An open followed by a few sends (or, sometimes, requests out of order).
fn produce_stream() -> impl Strategy<Value = Vec<pb::ProduceRequest>> {
    use pb::produce_request::Request as R;
    let open = (topic(), prop_oneof![3 => ".{0,20}", 1 => "[a-z]{1000,2000}"])
        .prop_map(|(topic, producer_name)| R::Open(pb::OpenProducer { topic, producer_name }))
        .boxed();
    let send = (
        prop_oneof![Just(u64::MAX), Just(u64::MAX - 1), 0u64..10, any::<u64>()],
        proptest::collection::vec(message(), 0..50),
    )
        .prop_map(|(sequence_id, messages)| R::Send(pb::SendBatch { sequence_id, messages }))
        .boxed();
    (
        prop_oneof![5 => open.clone(), 1 => send.clone()],
        proptest::collection::vec(prop_oneof![5 => send, 1 => open], 0..4),
    )
        .prop_map(|(first, rest)| {
            std::iter::once(first)
                .chain(rest)
                .map(|r| pb::ProduceRequest { request: Some(r) })
                .collect()
        })
}

fn consume_stream() -> impl Strategy<Value = Vec<pb::ConsumeRequest>> {
    use pb::consume_request::Request as R;
    let subscribe = (
        topic(),
        prop_oneof![4 => "s[0-2]", 1 => ".{0,40}", 1 => "[a-z]{300,400}"],
        prop_oneof![4 => 0i32..4, 1 => any::<i32>()],
        prop_oneof![4 => 0i32..2, 1 => any::<i32>()],
        any::<u64>(),
        any::<bool>(),
        proptest::option::of(id()),
        prop_oneof![4 => 0i32..2, 1 => any::<i32>()],
    )
        .prop_map(
            |(
                topic,
                subscription,
                r#type,
                initial_position,
                ack_timeout_ms,
                non_durable,
                start_message_id,
                delivery_form,
            )| {
                R::Subscribe(pb::Subscribe {
                    topic,
                    subscription,
                    r#type,
                    initial_position,
                    consumer_name: String::new(),
                    ack_timeout_ms,
                    non_durable,
                    start_message_id,
                    delivery_form,
                })
            },
        );
    let other = prop_oneof![
        any::<u32>().prop_map(|permits| R::Flow(pb::Flow { permits })),
        (
            proptest::collection::vec(id(), 0..4),
            any::<bool>(),
            proptest::collection::vec((proptest::option::of(id()), proptest::option::of(id())), 0..3)
        )
            .prop_map(|(ids, cumulative, ranges)| R::Ack(pb::Ack {
                ids,
                cumulative,
                ranges: ranges
                    .into_iter()
                    .map(|(first, last)| pb::AckRange { first, last })
                    .collect()
            })),
        proptest::collection::vec(id(), 0..4).prop_map(|ids| R::Nack(pb::Nack { ids })),
        (proptest::option::of(id()), any::<u64>()).prop_map(|(message_id, publish_time_ms)| R::Seek(pb::Seek {
            message_id,
            publish_time_ms
        })),
    ]
    .boxed();
    (
        prop_oneof![5 => subscribe, 1 => other.clone()],
        proptest::collection::vec(other, 0..5),
    )
        .prop_map(|(first, rest)| {
            std::iter::once(first)
                .chain(rest)
                .map(|r| pb::ConsumeRequest { request: Some(r) })
                .collect()
        })
}

#[derive(Debug, Clone)]
enum AdminCall {
    CreateTopic(String, u32),
    DeleteTopic(String, bool),
    Stats(String),
    Policies(String, [Option<i64>; 5]),
    Subscription(String, String, i32, i32),
    Reset(String, String, Option<pb::reset_subscription_request::To>),
    Partitions(String, u32),
    Namespace(String, u32),
    NamespacePolicies(String, [Option<u64>; 10]),
    Bundle(String, String),
    Decommission(String, bool),
    Grant(String, String, String, String, Vec<i32>),
}

fn admin_call() -> impl Strategy<Value = AdminCall> {
    let i64s = proptest::array::uniform5(proptest::option::of(prop_oneof![
        Just(i64::MIN),
        Just(-2i64),
        Just(-1i64),
        Just(0i64),
        Just(i64::MAX),
        any::<i64>()
    ]));
    let ns = prop_oneof!["public/[a-z]{1,3}", ".{0,30}"];
    prop_oneof![
        (topic(), prop_oneof![Just(0u32), 1u32..5, Just(u32::MAX), any::<u32>()])
            .prop_map(|(t, n)| AdminCall::CreateTopic(t, n)),
        (topic(), any::<bool>()).prop_map(|(t, f)| AdminCall::DeleteTopic(t, f)),
        topic().prop_map(AdminCall::Stats),
        (topic(), i64s).prop_map(|(t, p)| AdminCall::Policies(t, p)),
        (topic(), ".{0,20}", any::<i32>(), any::<i32>()).prop_map(|(t, s, k, p)| AdminCall::Subscription(t, s, k, p)),
        (
            topic(),
            "s[0-2]",
            proptest::option::of(prop_oneof![
                id().prop_map(pb::reset_subscription_request::To::MessageId),
                any::<u64>().prop_map(pb::reset_subscription_request::To::TimestampMs),
            ])
        )
            .prop_map(|(t, s, to)| AdminCall::Reset(t, s, to)),
        (topic(), any::<u32>()).prop_map(|(t, n)| AdminCall::Partitions(t, n)),
        (ns.clone(), prop_oneof![Just(0u32), Just(u32::MAX), any::<u32>()])
            .prop_map(|(n, b)| AdminCall::Namespace(n, b)),
        (
            ns.clone(),
            proptest::array::uniform10(proptest::option::of(prop_oneof![
                Just(0u64),
                Just(1u64),
                Just(u64::MAX),
                any::<u64>()
            ]))
        )
            .prop_map(|(n, p)| AdminCall::NamespacePolicies(n, p)),
        (ns, ".{0,40}").prop_map(|(n, b)| AdminCall::Bundle(n, b)),
        (".{0,300}", any::<bool>()).prop_map(|(a, c)| AdminCall::Decommission(a, c)),
        (
            ".{0,10}",
            ".{0,20}",
            ".{0,20}",
            prop_oneof![".{0,20}", "[a-z]{250,300}"],
            proptest::collection::vec(any::<i32>(), 0..4)
        )
            .prop_map(|(t, n, x, r, a)| AdminCall::Grant(t, n, x, r, a)),
    ]
}

/// The error a response carries, checked to be a clear one.
fn check_error(what: &str, e: &pb::Error) {
    assert!(
        e.code != pb::ErrorCode::Unspecified as i32 && !e.message.is_empty(),
        "{what}: an error without a code or a message: {e:?}"
    );
}

/// A status from a call: answered, not a crash.
fn check_status(what: &str, s: &tonic::Status) {
    assert!(
        !matches!(
            s.code(),
            tonic::Code::Unknown | tonic::Code::Internal | tonic::Code::Unavailable
        ) && !s.message().is_empty(),
        "{what}: {s:?}"
    );
}

async fn produce(ch: &Channel, reqs: Vec<pb::ProduceRequest>) {
    let mut c = pb::producer_client::ProducerClient::new(ch.clone()).max_decoding_message_size(64 << 20);
    let what = format!("produce {:?}", reqs.first());
    let mut stream = match tokio::time::timeout(ANSWER, c.produce(tokio_stream::iter(reqs))).await {
        Ok(Ok(r)) => r.into_inner(),
        Ok(Err(s)) => return check_status(&what, &s),
        Err(_) => panic!("{what}: not answered"),
    };
    loop {
        match tokio::time::timeout(ANSWER, stream.next()).await {
            Err(_) => panic!("{what}: the stream did not end after the client ended its side"),
            Ok(None) => return,
            Ok(Some(Err(s))) => return check_status(&what, &s),
            Ok(Some(Ok(r))) => match &r.response {
                Some(pb::produce_response::Response::Error(e)) => check_error(&what, e),
                Some(pb::produce_response::Response::Receipt(_)) => {
                    STORED.fetch_add(1, Relaxed);
                }
                _ => {}
            },
        }
    }
}

async fn consume(ch: &Channel, reqs: Vec<pb::ConsumeRequest>) {
    let mut c = pb::consumer_client::ConsumerClient::new(ch.clone()).max_decoding_message_size(64 << 20);
    let what = format!("consume {:?}", reqs.first());
    let mut stream = match tokio::time::timeout(ANSWER, c.consume(tokio_stream::iter(reqs))).await {
        Ok(Ok(r)) => r.into_inner(),
        Ok(Err(s)) => return check_status(&what, &s),
        Err(_) => panic!("{what}: not answered"),
    };
    loop {
        match tokio::time::timeout(ANSWER, stream.next()).await {
            Err(_) => panic!("{what}: the stream did not end after the client ended its side"),
            Ok(None) => return,
            Ok(Some(Err(s))) => return check_status(&what, &s),
            Ok(Some(Ok(r))) => match &r.response {
                Some(pb::consume_response::Response::Error(e)) => check_error(&what, e),
                Some(pb::consume_response::Response::SeekDone(pb::SeekDone { error: Some(e) })) => {
                    check_error(&what, e)
                }
                Some(pb::consume_response::Response::Subscribed(_)) => {
                    SUBSCRIBED.fetch_add(1, Relaxed);
                }
                _ => {}
            },
        }
    }
}

async fn admin(ch: &Channel, call: AdminCall) {
    use AdminCall::*;
    let mut c = pb::admin_client::AdminClient::new(ch.clone());
    let what = format!("{call:?}");
    let topic_req = |topic: String, force: bool| pb::TopicRequest { topic, force };
    let fut = async {
        match call {
            CreateTopic(topic, partitions) => c
                .create_topic(pb::CreateTopicRequest { topic, partitions })
                .await
                .map(drop),
            DeleteTopic(t, f) => c.delete_topic(topic_req(t, f)).await.map(drop),
            Stats(t) => c.get_topic_stats(topic_req(t, false)).await.map(drop),
            Policies(topic, p) => c
                .set_topic_policies(pb::SetTopicPoliciesRequest {
                    topic,
                    policies: Some(pb::TopicPolicies {
                        retention_time_secs: p[0],
                        retention_bytes: p[1],
                        offload_threshold_bytes: p[2],
                        offload_threshold_secs: p[3],
                        offload_deletion_lag_secs: p[4],
                    }),
                })
                .await
                .map(drop),
            Subscription(topic, subscription, r#type, initial_position) => c
                .create_subscription(pb::SubscriptionRequest {
                    topic,
                    subscription,
                    r#type,
                    initial_position,
                    ..Default::default()
                })
                .await
                .map(drop),
            Reset(topic, subscription, to) => c
                .reset_subscription(pb::ResetSubscriptionRequest {
                    topic,
                    subscription,
                    to,
                })
                .await
                .map(drop),
            Partitions(topic, partitions) => c
                .update_partitions(pb::CreateTopicRequest { topic, partitions })
                .await
                .map(drop),
            Namespace(namespace, bundles) => c
                .create_namespace(pb::NamespaceRequest { namespace, bundles })
                .await
                .map(drop),
            NamespacePolicies(namespace, p) => c
                .set_namespace_policies(pb::SetNamespacePoliciesRequest {
                    namespace,
                    policies: Some(pb::NamespacePolicies {
                        publish_rate_per_topic_msgs: p[0],
                        publish_rate_per_topic_bytes: p[1],
                        publish_rate_per_producer_msgs: p[2],
                        publish_rate_per_producer_bytes: p[3],
                        dispatch_rate_per_subscription_msgs: p[4],
                        dispatch_rate_per_subscription_bytes: p[5],
                        max_topics: p[6],
                        max_producers_per_topic: p[7],
                        max_subscriptions_per_topic: p[8],
                        max_consumers_per_subscription: p[9],
                    }),
                })
                .await
                .map(drop),
            Bundle(namespace, bundle) => c.unload_bundle(pb::BundleRequest { namespace, bundle }).await.map(drop),
            Decommission(address, cancel) => c
                .decommission_bookie(pb::DecommissionBookieRequest { address, cancel })
                .await
                .map(drop),
            Grant(tenant, namespace, topic, role, actions) => c
                .grant_permission(pb::PermissionRequest {
                    tenant,
                    namespace,
                    topic,
                    role,
                    actions,
                })
                .await
                .map(drop),
        }
    };
    match tokio::time::timeout(ANSWER, fut).await {
        Err(_) => panic!("{what}: not answered"),
        Ok(Ok(())) => {
            ADMIN_OK.fetch_add(1, Relaxed);
        }
        Ok(Err(s)) => check_status(&what, &s),
    }
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        // A failing case is already a minimal story; shrinking against a live node would
        // take long and change its state.
        max_shrink_iters: 0,
        ..Config::default()
    })
}

#[test]
fn arbitrary_requests_are_answered_and_the_node_keeps_serving() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut s = rt.block_on(Standalone::start(dir.path(), free_port()));
    let ch = rt.block_on(async { Channel::from_shared(s.url.clone()).unwrap().connect().await.unwrap() });

    runner(150)
        .run(&produce_stream(), |reqs| {
            rt.block_on(produce(&ch, reqs));
            Ok(())
        })
        .unwrap();
    runner(150)
        .run(&consume_stream(), |reqs| {
            rt.block_on(consume(&ch, reqs));
            Ok(())
        })
        .unwrap();
    runner(200)
        .run(&admin_call(), |call| {
            rt.block_on(admin(&ch, call));
            Ok(())
        })
        .unwrap();

    assert!(
        s.child.try_wait().unwrap().is_none(),
        "the node exited:\n{}",
        s.log_text()
    );
    let (stored, subscribed, admin_ok) = (STORED.load(Relaxed), SUBSCRIBED.load(Relaxed), ADMIN_OK.load(Relaxed));
    eprintln!(
        "fuzzed requests that passed validation: {stored} batches stored, {subscribed} subscriptions, {admin_ok} admin calls"
    );
    assert!(
        stored > 0 && subscribed > 0 && admin_ok > 0,
        "the fuzzing never got past validation: {stored} stored, {subscribed} subscribed, {admin_ok} admin calls done"
    );
    rt.block_on(async {
        let client = Client::connect(s.url.clone()).await.unwrap();
        let topic = "public/default/after-fuzzing";
        let c = client
            .consumer(topic)
            .subscription("after")
            .initial_position(InitialPosition::Earliest)
            .subscribe()
            .await
            .unwrap();
        client
            .producer(topic)
            .create()
            .await
            .unwrap()
            .send("still here")
            .await
            .unwrap();
        let m = tokio::time::timeout(ANSWER, c.receive()).await.unwrap().unwrap();
        assert_eq!(&m.payload[..], b"still here");
    });
}
