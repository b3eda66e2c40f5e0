//! The two delivery forms of the consume stream against a real `strata standalone`:
//! the per-message form a client generated from the unchanged .proto gets, and the entry
//! form (stored batches, split by the client) the Rust SDK asks for. Both redeliver
//! exactly what was not acknowledged (nack, consumer gone, a batch acknowledged in part),
//! both take acknowledgement ranges, and bad requests get clear errors.

mod common;

use common::{Standalone, eventually, free_port, raw_consume};
use prost::Message as _;
use std::collections::BTreeMap;
use std::time::Duration;
use strata_client::{Client, InitialPosition, SubscriptionType};
use strata_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const WAIT: Duration = Duration::from_secs(60);
const BATCH: u32 = 8;

/// Stores one producer batch of BATCH messages (one entry): payload `m<i>` of 1 KiB,
/// key `k<i>`, property `i`.
async fn produce_one_batch(url: &str, topic: &str) {
    let mut p = pb::producer_client::ProducerClient::connect(url.to_string())
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(4);
    tx.send(pb::ProduceRequest {
        request: Some(pb::produce_request::Request::Open(pb::OpenProducer {
            topic: topic.into(),
            producer_name: "batcher".into(),
        })),
    })
    .await
    .unwrap();
    let mut stream = p.produce(ReceiverStream::new(rx)).await.unwrap().into_inner();
    let opened = stream.message().await.unwrap().unwrap().response.unwrap();
    assert!(
        matches!(opened, pb::produce_response::Response::Opened(_)),
        "{opened:?}"
    );
    let messages = (0..BATCH)
        .map(|i| {
            let mut payload = format!("m{i}").into_bytes();
            payload.resize(1024, b'.');
            pb::OutgoingMessage {
                payload: payload.into(),
                key: format!("k{i}"),
                properties: [("i".to_string(), i.to_string())].into(),
                event_time_ms: 0,
            }
        })
        .collect();
    tx.send(pb::ProduceRequest {
        request: Some(pb::produce_request::Request::Send(pb::SendBatch {
            sequence_id: 1,
            messages,
        })),
    })
    .await
    .unwrap();
    let receipt = stream.message().await.unwrap().unwrap().response.unwrap();
    assert!(
        matches!(receipt, pb::produce_response::Response::Receipt(_)),
        "{receipt:?}"
    );
}

fn subscribe(topic: &str, form: i32) -> pb::Subscribe {
    pb::Subscribe {
        topic: topic.into(),
        subscription: "work".into(),
        r#type: pb::SubscriptionType::Shared as i32,
        initial_position: pb::InitialPosition::Earliest as i32,
        delivery_form: form,
        ..Default::default()
    }
}

fn req(r: pb::consume_request::Request) -> pb::ConsumeRequest {
    pb::ConsumeRequest { request: Some(r) }
}

fn flow(n: u32) -> pb::ConsumeRequest {
    req(pb::consume_request::Request::Flow(pb::Flow { permits: n }))
}

fn ack(ids: Vec<pb::MessageId>, ranges: Vec<(pb::MessageId, pb::MessageId)>) -> pb::ConsumeRequest {
    req(pb::consume_request::Request::Ack(pb::Ack {
        ids,
        cumulative: false,
        ranges: ranges
            .into_iter()
            .map(|(f, l)| pb::AckRange {
                first: Some(f),
                last: Some(l),
            })
            .collect(),
    }))
}

fn at(id: &pb::MessageId, index: u32) -> pb::MessageId {
    pb::MessageId {
        batch_index: index,
        ..*id
    }
}

/// The next response that is not `subscribed`.
async fn next(stream: &mut tonic::Streaming<pb::ConsumeResponse>) -> pb::consume_response::Response {
    loop {
        let r = tokio::time::timeout(WAIT, stream.message())
            .await
            .expect("a response in time")
            .expect("the stream is healthy")
            .expect("the stream goes on")
            .response
            .expect("a response");
        if !matches!(r, pb::consume_response::Response::Subscribed(_)) {
            return r;
        }
    }
}

/// A message as delivered, whatever the form: (batch index, payload prefix, key,
/// property, producer, redelivery count).
type Got = (u32, String, String, String, String, u32);

fn from_message(m: &pb::Message) -> Got {
    (
        m.id.unwrap().batch_index,
        String::from_utf8_lossy(&m.payload[..2]).into_owned(),
        m.key.clone(),
        m.properties["i"].clone(),
        m.producer_name.clone(),
        m.redelivery_count,
    )
}

fn from_entry(e: &pb::Entry) -> Vec<Got> {
    let batch = pb::EntryBatch::decode(e.batch.clone()).expect("an EntryBatch");
    assert_eq!(batch.messages.len() as u32, BATCH, "the whole stored batch is sent");
    let indexes: Vec<u32> = if e.indexes.is_empty() {
        (0..BATCH).collect()
    } else {
        e.indexes.clone()
    };
    indexes
        .into_iter()
        .map(|i| {
            let m = &batch.messages[i as usize];
            (
                i,
                String::from_utf8_lossy(&m.payload[..2]).into_owned(),
                m.key.clone(),
                m.properties["i"].clone(),
                batch.producer_name.clone(),
                e.redelivery_count,
            )
        })
        .collect()
}

fn expect(indexes: impl IntoIterator<Item = u32>, redelivery_count: u32) -> Vec<Got> {
    indexes
        .into_iter()
        .map(|i| {
            (
                i,
                format!("m{i}"),
                format!("k{i}"),
                i.to_string(),
                "batcher".to_string(),
                redelivery_count,
            )
        })
        .collect()
}

async fn backlog(url: &str, topic: &str) -> u64 {
    let mut admin = pb::admin_client::AdminClient::connect(url.to_string()).await.unwrap();
    let st = admin
        .get_topic_stats(pb::TopicRequest {
            topic: topic.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    st.subscriptions
        .iter()
        .find(|s| s.name == "work")
        .map_or(u64::MAX, |s| s.backlog_entries)
}

async fn backlog_reaches_zero(url: &str, topic: &str) {
    eventually(&format!("backlog of {topic} at 0"), async || {
        let b = backlog(url, topic).await;
        (b == 0, b)
    })
    .await;
}

/// Nacks batch index `index` of entry `id` and expects it back on its own, as a message
/// delivered `count` times before.
async fn nack_comes_back_alone(
    tx: &mpsc::Sender<pb::ConsumeRequest>,
    stream: &mut tonic::Streaming<pb::ConsumeResponse>,
    id: &pb::MessageId,
    index: u32,
    count: u32,
) {
    tx.send(req(pb::consume_request::Request::Nack(pb::Nack {
        ids: vec![at(id, index)],
    })))
    .await
    .unwrap();
    match next(stream).await {
        pb::consume_response::Response::Messages(m) => {
            let got: Vec<Got> = m.messages.iter().map(from_message).collect();
            assert_eq!(got, expect([index], count));
        }
        other => panic!("expected the nacked message {index}, got {other:?}"),
    }
}

/// A client generated from strata.proto as it was (it never sets `delivery_form`) gets
/// `Messages`, acknowledges by id and by range, and gets redeliveries after a nack and
/// after its stream is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_generated_from_the_proto_gets_messages_one_by_one() {
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(dir.path(), free_port()).await;
    let topic = "public/default/per-message";
    produce_one_batch(&s.url, topic).await;

    let (tx, mut stream) = raw_consume(&s.url, subscribe(topic, 0)).await;
    tx.send(flow(100)).await.unwrap();
    let mut got = Vec::new();
    let mut entry_id = None;
    while got.len() < BATCH as usize {
        match next(&mut stream).await {
            pb::consume_response::Response::Messages(m) => {
                for m in &m.messages {
                    entry_id.get_or_insert(m.id.unwrap());
                    got.push(from_message(m));
                }
            }
            other => panic!("the per-message form got {other:?}"),
        }
    }
    assert_eq!(got, expect(0..BATCH, 0));
    let id = entry_id.unwrap();

    // 0 and 1 by id, 2..=4 as a range; 5 negatively: it comes back, counted.
    tx.send(ack(vec![at(&id, 0), at(&id, 1)], vec![(at(&id, 2), at(&id, 4))]))
        .await
        .unwrap();
    nack_comes_back_alone(&tx, &mut stream, &id, 5, 1).await;
    assert_eq!(backlog(&s.url, topic).await, 1, "the batch is not all acknowledged");

    // The consumer goes: 5, 6 and 7 come to the next one, once more counted.
    drop((tx, stream));
    let (tx, mut stream) = raw_consume(&s.url, subscribe(topic, 0)).await;
    tx.send(flow(100)).await.unwrap();
    let mut again = Vec::new();
    while again.len() < 3 {
        match next(&mut stream).await {
            pb::consume_response::Response::Messages(m) => again.extend(m.messages.iter().map(from_message)),
            other => panic!("the per-message form got {other:?}"),
        }
    }
    again.sort();
    let mut want = expect([5], 2);
    want.extend(expect([6, 7], 1));
    assert_eq!(again, want);
    tx.send(ack(vec![], vec![(at(&id, 5), at(&id, 7))])).await.unwrap();
    backlog_reaches_zero(&s.url, topic).await;
}

/// The entry form sends the stored batch once, whole; what comes again after a consumer
/// is gone is only what it did not acknowledge: listed indexes of the same batch, or
/// single messages when they are a small part of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_entry_form_redelivers_only_what_a_partly_acknowledged_batch_still_holds() {
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(dir.path(), free_port()).await;
    let topic = "public/default/entries";
    produce_one_batch(&s.url, topic).await;
    let entries = pb::DeliveryForm::Entries as i32;

    let (tx, mut stream) = raw_consume(&s.url, subscribe(topic, entries)).await;
    tx.send(flow(100)).await.unwrap();
    let id = match next(&mut stream).await {
        pb::consume_response::Response::Entries(e) => {
            assert_eq!(e.entries.len(), 1);
            let entry = &e.entries[0];
            assert!(entry.indexes.is_empty(), "the whole batch: {:?}", entry.indexes);
            assert_eq!(from_entry(entry), expect(0..BATCH, 0));
            let batch = pb::EntryBatch::decode(entry.batch.clone()).unwrap();
            assert!(batch.publish_time_ms > 0);
            entry.id.unwrap()
        }
        other => panic!("the entry form got {other:?}"),
    };
    assert_eq!(id.batch_index, 0);

    // Two of eight acknowledged and one nacked, then the consumer is gone: 3..=7 come
    // again as the batch with their indexes, 2 (counted once more) on its own.
    tx.send(ack(vec![], vec![(at(&id, 0), at(&id, 1))])).await.unwrap();
    // A nack round trip first, so the acks are known to be applied before the stream ends.
    // (One message of eight goes on its own.)
    nack_comes_back_alone(&tx, &mut stream, &id, 2, 1).await;
    drop((tx, stream));
    let (tx, mut stream) = raw_consume(&s.url, subscribe(topic, entries)).await;
    tx.send(flow(100)).await.unwrap();
    let mut again = Vec::new();
    while again.len() < 6 {
        match next(&mut stream).await {
            pb::consume_response::Response::Entries(e) => {
                for entry in &e.entries {
                    assert!(!entry.indexes.is_empty(), "only part of the batch");
                    again.extend(from_entry(entry));
                }
            }
            pb::consume_response::Response::Messages(m) => again.extend(m.messages.iter().map(from_message)),
            other => panic!("unexpected {other:?}"),
        }
    }
    again.sort();
    let mut want = expect([2], 2);
    want.extend(expect(3..BATCH, 1));
    assert_eq!(again, want);

    // Five more acknowledged, the consumer gone again: the last message alone is an
    // eighth of the batch, so it comes as a message.
    tx.send(ack(vec![], vec![(at(&id, 2), at(&id, 6))])).await.unwrap();
    nack_comes_back_alone(&tx, &mut stream, &id, 7, 2).await;
    assert_eq!(backlog(&s.url, topic).await, 1);
    tx.send(ack(vec![at(&id, 7)], vec![])).await.unwrap();
    backlog_reaches_zero(&s.url, topic).await;
}

/// Bad delivery forms and acknowledgement ranges get INVALID_ARGUMENT naming what was
/// wrong; a bad range does not end the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_forms_and_ranges_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(dir.path(), free_port()).await;
    let topic = "public/default/bad-ranges";
    produce_one_batch(&s.url, topic).await;
    let error = |r: pb::consume_response::Response| match r {
        pb::consume_response::Response::Error(e) => {
            assert_eq!(e.code, pb::ErrorCode::InvalidArgument as i32, "{}", e.message);
            e.message
        }
        other => panic!("expected an error, got {other:?}"),
    };

    for form in [2, -1, i32::MAX] {
        let (_tx, mut stream) = raw_consume(&s.url, subscribe(topic, form)).await;
        let m = error(next(&mut stream).await);
        assert!(m.contains("delivery_form") && m.contains(&form.to_string()), "{m}");
    }

    let (tx, mut stream) = raw_consume(&s.url, subscribe(topic, pb::DeliveryForm::Entries as i32)).await;
    let id = pb::MessageId {
        ledger_id: 1,
        entry_id: 0,
        batch_index: 3,
        partition: -1,
    };
    tx.send(ack(vec![], vec![(at(&id, 5), at(&id, 2))])).await.unwrap();
    assert!(error(next(&mut stream).await).contains("not in order"));
    let mut other_partition = at(&id, 5);
    other_partition.partition = 2;
    tx.send(ack(vec![], vec![(at(&id, 1), other_partition)])).await.unwrap();
    assert!(error(next(&mut stream).await).contains("one partition"));
    tx.send(req(pb::consume_request::Request::Ack(pb::Ack {
        ids: vec![],
        cumulative: false,
        ranges: vec![pb::AckRange {
            first: Some(id),
            last: None,
        }],
    })))
    .await
    .unwrap();
    assert!(error(next(&mut stream).await).contains("`last`"));
    tx.send(req(pb::consume_request::Request::Ack(pb::Ack {
        ids: vec![id],
        cumulative: true,
        ranges: vec![pb::AckRange {
            first: Some(id),
            last: Some(id),
        }],
    })))
    .await
    .unwrap();
    assert!(error(next(&mut stream).await).contains("cumulative"));
    // Overlapping or unordered ranges (each would walk the pending messages again).
    for (a, b) in [((0, 4), (3, 6)), ((5, 6), (0, 1))] {
        tx.send(ack(
            vec![],
            vec![(at(&id, a.0), at(&id, a.1)), (at(&id, b.0), at(&id, b.1))],
        ))
        .await
        .unwrap();
        assert!(error(next(&mut stream).await).contains("without overlapping"));
    }
    // Extreme ids in a well-formed range acknowledge nothing and break nothing.
    let max = pb::MessageId {
        ledger_id: u64::MAX,
        entry_id: u64::MAX,
        batch_index: u32::MAX,
        partition: -1,
    };
    tx.send(ack(vec![], vec![(at(&id, 0), max)])).await.unwrap();

    // The stream still delivers.
    tx.send(flow(100)).await.unwrap();
    match next(&mut stream).await {
        pb::consume_response::Response::Entries(e) => assert_eq!(from_entry(&e.entries[0]), expect(0..BATCH, 0)),
        other => panic!("expected the batch, got {other:?}"),
    }
}

/// Through the SDK (entry form): a batch acknowledged in part by a consumer that then
/// closes is completed by the next consumer, which gets exactly the rest, and a nack
/// there redelivers that message once more; nothing is lost or delivered twice after an
/// acknowledgement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_completes_a_partly_acknowledged_batch_after_a_nack_and_a_lost_consumer() {
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(dir.path(), free_port()).await;
    let topic = "public/default/sdk-partial";
    produce_one_batch(&s.url, topic).await;
    let client = Client::connect(s.url.clone()).await.unwrap();
    let consumer = || {
        client
            .consumer(topic)
            .subscription("work")
            .subscription_type(SubscriptionType::Shared)
            .initial_position(InitialPosition::Earliest)
            .subscribe()
    };
    let receive = async |c: &strata_client::Consumer| {
        tokio::time::timeout(WAIT, c.receive())
            .await
            .expect("a message in time")
            .unwrap()
    };

    let first = consumer().await.unwrap();
    let mut acked = Vec::new();
    for i in 0..BATCH {
        let m = receive(&first).await;
        assert_eq!(m.id.batch_index, i, "in batch order");
        assert_eq!(m.key.as_deref(), Some(format!("k{i}").as_str()));
        assert_eq!(m.properties["i"], i.to_string());
        assert_eq!(m.producer_name, "batcher");
        if i % 2 == 0 {
            first.ack(&m).await.unwrap();
            acked.push(i);
        }
    }
    first.close().await.unwrap();

    let second = consumer().await.unwrap();
    let mut counts = BTreeMap::new();
    let m = receive(&second).await;
    assert_eq!(m.redelivery_count, 1);
    second.nack(&m).await.unwrap();
    counts.insert(m.id.batch_index, 1);
    let nacked = m.id.batch_index;
    let mut done = Vec::new();
    while done.len() < (BATCH / 2) as usize {
        let m = receive(&second).await;
        assert!(!acked.contains(&m.id.batch_index), "{} was acknowledged", m.id);
        let want = if m.id.batch_index == nacked { 2 } else { 1 };
        assert_eq!(m.redelivery_count, want, "{}", m.id);
        second.ack(&m).await.unwrap();
        done.push(m.id.batch_index);
    }
    done.sort();
    assert_eq!(done, vec![1, 3, 5, 7]);
    backlog_reaches_zero(&s.url, topic).await;
}
