//! The managed ledger over real bookies (served in-process on loopback) and the in-memory
//! metadata store: rollover, reads across ledgers, reopen, takeover by a new owner (the old
//! one is fenced), trimming.

use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use strata_bookie::ledger::{LedgerClient, LedgerClientConfig};
use strata_broker::managed_ledger::{ManagedLedger, ManagedLedgerConfig};
use strata_broker::topic::Limits;
use strata_common::{EntryId, ErrorCode, Position, TopicName};
use strata_meta::{MetadataStore, keys};

mod common;

use common::{Bookies, bookies};

fn cfg(max_entries: u64) -> ManagedLedgerConfig {
    ManagedLedgerConfig {
        ensemble: 2,
        write_quorum: 2,
        ack_quorum: 2,
        max_entries_per_ledger: max_entries,
        ..Default::default()
    }
}

fn msg(i: u64) -> Bytes {
    Bytes::from(format!("message-{i}"))
}

async fn read_all(ml: &ManagedLedger, from: Position) -> Vec<(Position, Bytes)> {
    let mut out: Vec<(Position, Bytes)> = Vec::new();
    let mut next = from;
    loop {
        let batch = ml.read(next, 37).await.unwrap();
        let Some((last, _)) = batch.last().cloned() else { break };
        out.extend(batch);
        next = Position {
            ledger: last.ledger,
            entry: EntryId::new(last.entry.get() + 1),
        };
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_roll_over_and_read_back_in_order_across_reopen() {
    let b = bookies(2).await;
    let client = LedgerClient::new(b.store.clone(), LedgerClientConfig::default());
    let topic = TopicName::parse("persistent://t/ns/orders").unwrap();
    let ml = ManagedLedger::open(topic.clone(), client.clone(), b.store.clone(), cfg(100))
        .await
        .unwrap();
    let mut positions = Vec::new();
    for i in 0..350u64 {
        positions.push(ml.append(msg(i)).await.unwrap());
    }
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "positions increase");
    assert_eq!(ml.ledgers().await.len(), 4, "rolled over every 100 entries");
    assert_eq!(ml.last_confirmed(), positions.last().copied());
    let first = ml.first_position().await.unwrap();
    let got = read_all(&ml, first).await;
    assert_eq!(got.len(), 350);
    for (i, (pos, payload)) in got.iter().enumerate() {
        assert_eq!(*pos, positions[i]);
        assert_eq!(*payload, msg(i as u64));
    }
    ml.close().await.unwrap();
    assert!(ml.append(msg(0)).await.is_err(), "closed topics take no appends");

    // Reopen: everything is there, and appends continue in a new ledger.
    let ml = ManagedLedger::open(topic, client, b.store.clone(), cfg(100))
        .await
        .unwrap();
    let p = ml.append(msg(350)).await.unwrap();
    assert!(p > positions[349]);
    let got = read_all(&ml, first).await;
    assert_eq!(got.len(), 351);
    assert_eq!(got[350].1, msg(350));
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_is_readable_as_soon_as_its_append_returns() {
    // A tailing subscription reads right after an append completes; with the read cache
    // off every read goes to the ledger writer, whose LAC must already cover the entry.
    let b = bookies(2).await;
    let client = LedgerClient::new(b.store.clone(), LedgerClientConfig::default());
    let cfg = ManagedLedgerConfig {
        cache_bytes: 0,
        ..cfg(1000)
    };
    let ml = ManagedLedger::open(
        TopicName::parse("persistent://t/ns/tail").unwrap(),
        client,
        b.store.clone(),
        cfg,
    )
    .await
    .unwrap();
    for i in 0..300u64 {
        let pos = ml.append(msg(i)).await.unwrap();
        assert_eq!(ml.read(pos, 10).await.unwrap(), vec![(pos, msg(i))], "entry {i}");
    }
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_topics_being_read_cache_within_the_broker_budget() {
    let b = bookies(2).await;
    let client = LedgerClient::new(b.store.clone(), LedgerClientConfig::default());
    let budget = strata_broker::managed_ledger::CacheBudget::new(3000);
    let open = |name: &str| {
        let cfg = ManagedLedgerConfig {
            cache_budget: budget.clone(),
            ..cfg(1000)
        };
        ManagedLedger::open(TopicName::parse(name).unwrap(), client.clone(), b.store.clone(), cfg)
    };
    let unread = open("persistent://t/ns/unread").await.unwrap();
    let tailed = open("persistent://t/ns/tailed").await.unwrap();
    let payload = Bytes::from(vec![1u8; 100]);
    for _ in 0..20 {
        unread.append(payload.clone()).await.unwrap();
    }
    assert_eq!(unread.cached_bytes(), 0, "nobody reads this topic: nothing cached");
    // A reader keeping up: what is appended from then on is cached, up to the budget.
    let first = tailed.append(payload.clone()).await.unwrap();
    assert_eq!(tailed.read(first, 10).await.unwrap().len(), 1);
    let mut last = first;
    for _ in 0..50 {
        last = tailed.append(payload.clone()).await.unwrap();
    }
    assert_eq!((tailed.cached_bytes(), budget.used()), (3000, 3000));
    let newest = tailed.read(last, 10).await.unwrap();
    assert_eq!(newest, vec![(last, payload.clone())]);
    // Everything reads back, from the bookies where not cached.
    assert_eq!(read_all(&tailed, first).await.len(), 51);
    // Closing the topic hands its share back.
    tailed.close().await.unwrap();
    drop(tailed);
    assert_eq!(budget.used(), 0);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_owner_fences_the_old_one_and_keeps_its_acknowledged_entries() {
    let b = bookies(2).await;
    let topic = TopicName::parse("persistent://t/ns/takeover").unwrap();
    let old = ManagedLedger::open(
        topic.clone(),
        LedgerClient::new(b.store.clone(), LedgerClientConfig::default()),
        b.store.clone(),
        cfg(1000),
    )
    .await
    .unwrap();
    let mut acked = Vec::new();
    for i in 0..50u64 {
        acked.push(old.append(msg(i)).await.unwrap());
    }
    // A second broker opens the topic: it recovers (fences) the old owner's ledger.
    let new = ManagedLedger::open(
        topic,
        LedgerClient::new(b.store.clone(), LedgerClientConfig::default()),
        b.store.clone(),
        cfg(1000),
    )
    .await
    .unwrap();
    let err = old.append(msg(999)).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Fenced, "{err}");
    assert!(old.append(msg(999)).await.is_err(), "stays fenced");
    let p = new.append(msg(50)).await.unwrap();
    let got = read_all(&new, acked[0]).await;
    assert_eq!(got.len(), 51);
    assert_eq!(got.last().unwrap().0, p);
    for (i, (_, payload)) in got.iter().enumerate() {
        assert_eq!(*payload, msg(i as u64));
    }
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trimming_deletes_ledgers_wholly_before_a_position() {
    let b = bookies(2).await;
    let client = LedgerClient::new(b.store.clone(), LedgerClientConfig::default());
    let topic = TopicName::parse("persistent://t/ns/trim").unwrap();
    let ml = ManagedLedger::open(topic, client.clone(), b.store.clone(), cfg(10))
        .await
        .unwrap();
    let mut positions = Vec::new();
    for i in 0..35u64 {
        positions.push(ml.append(msg(i)).await.unwrap());
    }
    let before = ml.ledgers().await;
    assert_eq!(before.len(), 4);
    // Everything before entry 25 is consumed: the first two ledgers can go.
    let removed = ml.trim_before(positions[25]).await.unwrap();
    assert_eq!(removed, 2);
    let after = ml.ledgers().await;
    assert_eq!(after.len(), 2);
    let gone = strata_common::LedgerId::new(before[0].id).unwrap();
    assert_eq!(client.open(gone).await.err().unwrap().code(), ErrorCode::NoSuchLedger);
    let got = read_all(&ml, ml.first_position().await.unwrap()).await;
    assert_eq!(got.len(), 15);
    assert_eq!(got[0].1, msg(20));
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_store_batches_and_read_back_messages_in_publish_order() {
    use strata_broker::topic::Topic;
    use strata_proto::broker::v1::StoredMessage;
    let b = bookies(2).await;
    let client = LedgerClient::new(b.store.clone(), LedgerClientConfig::default());
    let name = TopicName::parse("persistent://t/ns/events-partition-2").unwrap();
    let ml = ManagedLedger::open(name, client, b.store.clone(), cfg(4))
        .await
        .unwrap();
    let topic = Topic::new(
        ml,
        Limits {
            max_message_bytes: 1024,
            max_entry_bytes: 4096,
            clients: Default::default(),
        },
    );
    let mut firsts = Vec::new();
    for batch in 0..10u64 {
        let messages = (0..3)
            .map(|i| StoredMessage {
                payload: Bytes::from(format!("b{batch}m{i}")),
                key: format!("k{i}"),
                ..Default::default()
            })
            .collect();
        firsts.push(
            topic
                .publish("producer-1", batch, messages)
                .await
                .unwrap()
                .first
                .unwrap(),
        );
    }
    assert!(firsts.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(firsts[0].partition, 2, "partition index comes from the name");
    let mut got = Vec::new();
    let mut from = firsts[0].position;
    loop {
        let batch = topic.read(from, 3).await.unwrap();
        let Some(last) = batch.last() else { break };
        from = Position {
            ledger: last.id.position.ledger,
            entry: EntryId::new(last.id.position.entry.get() + 1),
        };
        got.extend(batch);
    }
    assert_eq!(got.len(), 30);
    for (n, m) in got.iter().enumerate() {
        let (batch, i) = (n / 3, n % 3);
        assert_eq!(m.message.payload, Bytes::from(format!("b{batch}m{i}")));
        assert_eq!(m.id.position, firsts[batch].position);
        assert_eq!(m.id.batch_index, i as u32);
        assert_eq!(&*m.producer_name, "producer-1");
    }
    assert!(got.windows(2).all(|w| w[0].id < w[1].id), "ids follow publish order");
    // Bad input: an empty batch, an oversized one.
    assert_eq!(
        topic.publish("p", 99, vec![]).await.unwrap_err().code(),
        ErrorCode::InvalidArgument
    );
    let big = StoredMessage {
        payload: Bytes::from(vec![0u8; 1025]),
        ..Default::default()
    };
    assert_eq!(
        topic.publish("p", 99, vec![big]).await.unwrap_err().code(),
        ErrorCode::TooLarge
    );
    // Keys and properties count too; exactly at the limit is accepted.
    let sized = |payload: usize, key: usize, prop: usize| StoredMessage {
        payload: Bytes::from(vec![1u8; payload]),
        key: "k".repeat(key),
        properties: [("p".to_string(), "v".repeat(prop))].into(),
        ..Default::default()
    };
    assert!(
        topic.publish("p", 100, vec![sized(1000, 10, 13)]).await.is_ok(),
        "1000+10+1+13 = 1024"
    );
    for (seq, m) in [(101, sized(1000, 11, 13)), (102, sized(1, 1000, 100))] {
        assert_eq!(
            topic.publish("p", seq, vec![m]).await.unwrap_err().code(),
            ErrorCode::TooLarge
        );
    }
    // Under the message limit but over the entry limit once stored (framing of many
    // tiny messages): refused before it reaches the ledger.
    let many: Vec<StoredMessage> = (0..1000)
        .map(|_| StoredMessage {
            key: "k".into(),
            ..Default::default()
        })
        .collect();
    let e = topic.publish("p", 103, many).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::TooLarge, "{e}");
    assert!(e.to_string().contains("as stored"), "{e}");
    // None of the refusals wedged the topic or the producer's sequence.
    assert!(!topic.publish("p", 104, vec![sized(10, 0, 0)]).await.unwrap().duplicate);
    assert!(topic.publish("p", 104, vec![sized(10, 0, 0)]).await.unwrap().duplicate);
    b.shutdown().await;
}

#[tokio::test]
async fn resent_batches_are_stored_once_also_under_a_new_owner() {
    use strata_broker::dedup::Dedup;
    use strata_broker::topic::Topic;
    use strata_proto::broker::v1::StoredMessage;
    let b = bookies(2).await;
    let name = TopicName::parse("persistent://t/ns/dedup").unwrap();
    let open = || async {
        let client = LedgerClient::new(b.store.clone(), LedgerClientConfig::default());
        let ml = ManagedLedger::open(name.clone(), client, b.store.clone(), cfg(4))
            .await
            .unwrap();
        let dedup = Arc::new(Dedup::load(&ml).await.unwrap());
        Topic::with_dedup(ml, Limits::default(), dedup)
    };
    let msg = |s: &str| {
        vec![StoredMessage {
            payload: Bytes::from(s.to_string()),
            ..Default::default()
        }]
    };
    let topic = open().await;
    let mut ids = Vec::new();
    for seq in 0..6u64 {
        let p = topic.publish("p", seq, msg(&format!("m{seq}"))).await.unwrap();
        assert!(!p.duplicate);
        ids.push(p.first.unwrap());
    }
    // A resend of batch 4 (the receipt was lost) is answered with the original id.
    let again = topic.publish("p", 4, msg("m4")).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(again.first, Some(ids[4]));
    // Persist the state once (as the owner does every second), then store two more
    // batches the snapshot does not know about, and "crash" (no clean close).
    topic
        .dedup()
        .persist(
            &topic.managed_ledger().owned_store(),
            topic.managed_ledger().last_confirmed(),
        )
        .await
        .unwrap();
    for seq in 6..8u64 {
        ids.push(
            topic
                .publish("p", seq, msg(&format!("m{seq}")))
                .await
                .unwrap()
                .first
                .unwrap(),
        );
    }
    let last_before = topic.managed_ledger().last_confirmed().unwrap();
    drop(topic);
    // A new owner recovers the ledger and rebuilds the state: resends of 5..=7 are
    // duplicates with their original ids (7 was never in a snapshot), 8 is new.
    let topic = open().await;
    assert_eq!(topic.dedup().last_sequence("p"), Some(7));
    for seq in 5..8u64 {
        let p = topic.publish("p", seq, msg(&format!("m{seq}"))).await.unwrap();
        assert!(p.duplicate, "batch {seq} stored twice");
        assert_eq!(p.first, Some(ids[seq as usize]));
    }
    assert_eq!(
        topic.managed_ledger().last_confirmed().unwrap(),
        last_before,
        "nothing appended"
    );
    let p = topic.publish("p", 8, msg("m8")).await.unwrap();
    assert!(!p.duplicate);
    // Another producer name has its own sequence.
    assert!(!topic.publish("q", 0, msg("q0")).await.unwrap().duplicate);
    b.shutdown().await;
}

mod subscriptions {
    use super::*;
    use strata_broker::dispatch::{Delivery, SubType};
    use strata_broker::subscription::{InitialPosition, Subscription};
    use strata_broker::topic::Topic;
    use strata_common::SubscriptionName;
    use strata_proto::broker::v1::StoredMessage;

    async fn topic(b: &Bookies, name: &str) -> Arc<Topic> {
        let client = LedgerClient::new(b.store.clone(), LedgerClientConfig::default());
        let ml = ManagedLedger::open(TopicName::parse(name).unwrap(), client, b.store.clone(), cfg(7))
            .await
            .unwrap();
        Arc::new(Topic::new(ml, Limits::default()))
    }

    async fn publish(t: &Topic, from: u64, to: u64, keys: &[&str]) {
        // Batches of up to 3 messages, so entries hold several messages.
        let mut i = from;
        while i < to {
            let n = (to - i).min(3);
            let messages = (i..i + n)
                .map(|j| StoredMessage {
                    payload: Bytes::from(format!("m{j}")),
                    key: keys[(j as usize) % keys.len()].to_string(),
                    ..Default::default()
                })
                .collect();
            t.publish("p", i, messages).await.unwrap();
            i += n;
        }
    }

    async fn recv(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Vec<Delivery>>, n: usize) -> Vec<Delivery> {
        let mut out = Vec::new();
        while out.len() < n {
            let batch = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("deliveries in time")
                .expect("channel open");
            out.extend(batch);
        }
        out
    }

    fn payloads(v: &[Delivery]) -> Vec<String> {
        v.iter()
            .map(|d| String::from_utf8(d.message.message.payload.to_vec()).unwrap())
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn exclusive_delivers_in_order_and_resumes_from_the_persisted_cursor() {
        let b = bookies(2).await;
        let t = topic(&b, "t/ns/excl").await;
        publish(&t, 0, 40, &[""]).await;
        let name = SubscriptionName::new("s").unwrap();
        let sub = Subscription::open(t.clone(), name.clone(), SubType::Exclusive, InitialPosition::Earliest)
            .await
            .unwrap();
        let runner = tokio::spawn(sub.clone().run());
        let (c, mut rx) = sub.add_consumer(None).await.unwrap();
        assert!(
            sub.add_consumer(None).await.is_err(),
            "exclusive refuses a second consumer"
        );
        sub.add_permits(c, 25).await.unwrap();
        let got = recv(&mut rx, 25).await;
        assert_eq!(payloads(&got), (0..25).map(|i| format!("m{i}")).collect::<Vec<_>>());
        // Cumulative ack of the first 20, then persist and stop.
        sub.ack(c, &[got[19].message.id], true).await.unwrap();
        sub.persist().await.unwrap();
        runner.abort();
        // A new instance (another broker, a restart) resumes after the acknowledged ones:
        // the batch holding m18..m20 was only partly acknowledged, so it comes back whole.
        let sub = Subscription::open(t.clone(), name, SubType::Exclusive, InitialPosition::Latest)
            .await
            .unwrap();
        let runner = tokio::spawn(sub.clone().run());
        let (c, mut rx) = sub.add_consumer(None).await.unwrap();
        sub.add_permits(c, 100).await.unwrap();
        let got = recv(&mut rx, 22).await;
        assert_eq!(payloads(&got)[0], "m18");
        assert_eq!(payloads(&got).last().unwrap(), "m39");
        // Messages published now arrive too (tailing).
        publish(&t, 40, 45, &[""]).await;
        let more = recv(&mut rx, 5).await;
        assert_eq!(payloads(&more), vec!["m40", "m41", "m42", "m43", "m44"]);
        runner.abort();
        b.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_subscription_catching_up_reads_ahead_in_order_and_a_seek_drops_what_was_read_ahead() {
        let b = bookies(2).await;
        let t = topic(&b, "t/ns/ahead").await;
        // 300 entries of 3 messages: three read batches (READ_BATCH entries each).
        publish(&t, 0, 900, &[""]).await;
        let name = SubscriptionName::new("s").unwrap();
        let sub = Subscription::open(t.clone(), name, SubType::Exclusive, InitialPosition::Earliest)
            .await
            .unwrap();
        let runner = tokio::spawn(sub.clone().run());
        let (c, mut rx) = sub.add_consumer(None).await.unwrap();
        // Part way into the second batch: the third is being (or has been) read ahead.
        sub.add_permits(c, 400).await.unwrap();
        let got = recv(&mut rx, 400).await;
        assert_eq!(payloads(&got), (0..400).map(|i| format!("m{i}")).collect::<Vec<_>>());
        // Back to the start: what was read ahead from the old position is not delivered.
        sub.seek(c, got[0].message.id.position).await.unwrap();
        sub.add_permits(c, 2_000).await.unwrap();
        let again = recv(&mut rx, 900).await;
        assert_eq!(payloads(&again), (0..900).map(|i| format!("m{i}")).collect::<Vec<_>>());
        // And nothing more than the topic holds.
        assert!(
            tokio::time::timeout(Duration::from_millis(300), rx.recv())
                .await
                .is_err(),
            "no duplicate after the seek"
        );
        runner.abort();
        b.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shared_spreads_and_redelivers_what_a_leaving_consumer_did_not_ack() {
        let b = bookies(2).await;
        let t = topic(&b, "t/ns/shared").await;
        let name = SubscriptionName::new("work").unwrap();
        let sub = Subscription::open(t.clone(), name, SubType::Shared, InitialPosition::Earliest)
            .await
            .unwrap();
        let runner = tokio::spawn(sub.clone().run());
        let (c1, mut rx1) = sub.add_consumer(None).await.unwrap();
        let (c2, mut rx2) = sub.add_consumer(None).await.unwrap();
        sub.add_permits(c1, 10).await.unwrap();
        sub.add_permits(c2, 100).await.unwrap();
        publish(&t, 0, 30, &[""]).await;
        let a = recv(&mut rx1, 10).await;
        let bb = recv(&mut rx2, 20).await;
        let mut all: Vec<String> = payloads(&a).into_iter().chain(payloads(&bb)).collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 30, "every message once");
        // Consumer 1 acks half and leaves: the other half goes to consumer 2, counted.
        let half: Vec<_> = a[..5].iter().map(|d| d.message.id).collect();
        sub.ack(c1, &half, false).await.unwrap();
        sub.remove_consumer(c1).await;
        let again = recv(&mut rx2, 5).await;
        assert!(again.iter().all(|d| d.redelivery_count == 1));
        assert_eq!(payloads(&again), payloads(&a[5..]));
        // A nacked message comes back with its count incremented again.
        sub.nack(c2, &[again[0].message.id]).await.unwrap();
        let back = recv(&mut rx2, 1).await;
        assert_eq!(back[0].message.id, again[0].message.id);
        assert_eq!(back[0].redelivery_count, 2);
        // Unknown ids are refused by name.
        assert!(sub.ack(c2, &half, false).await.is_err());
        runner.abort();
        b.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn key_shared_keeps_per_key_order_and_types_cannot_change() {
        let b = bookies(2).await;
        let t = topic(&b, "t/ns/keys").await;
        let name = SubscriptionName::new("k").unwrap();
        let sub = Subscription::open(t.clone(), name.clone(), SubType::KeyShared, InitialPosition::Earliest)
            .await
            .unwrap();
        let runner = tokio::spawn(sub.clone().run());
        let (c1, mut rx1) = sub.add_consumer(None).await.unwrap();
        let (c2, mut rx2) = sub.add_consumer(None).await.unwrap();
        sub.add_permits(c1, 1000).await.unwrap();
        sub.add_permits(c2, 1000).await.unwrap();
        let keys = ["a", "b", "c", "d", "e", "f", "g", "h"];
        publish(&t, 0, 80, &keys).await;
        let mut got: Vec<(u64, Delivery)> = Vec::new();
        while got.len() < 80 {
            tokio::select! {
                Some(v) = rx1.recv() => got.extend(v.into_iter().map(|d| (c1, d))),
                Some(v) = rx2.recv() => got.extend(v.into_iter().map(|d| (c2, d))),
            }
        }
        let mut owner: HashMap<String, u64> = HashMap::new();
        let mut last: HashMap<String, MessageOrder> = HashMap::new();
        for (c, d) in &got {
            let k = d.message.message.key.clone();
            assert_eq!(
                *owner.entry(k.clone()).or_insert(*c),
                *c,
                "key {k} went to two consumers"
            );
            let id = d.message.id;
            if let Some(prev) = last.insert(k.clone(), MessageOrder(id)) {
                assert!(prev.0 < id, "key {k} out of order");
            }
        }
        assert_eq!(
            owner.values().collect::<std::collections::HashSet<_>>().len(),
            2,
            "both consumers used"
        );
        runner.abort();
        // The same subscription cannot be reopened as another type.
        let err = Subscription::open(t, name, SubType::Shared, InitialPosition::Earliest)
            .await
            .err()
            .unwrap();
        assert!(err.to_string().contains("is Key_Shared, not Shared"), "{err}");
        b.shutdown().await;
    }

    use std::collections::HashMap;

    struct MessageOrder(strata_common::MessageId);
}

/// A metadata store that, when armed, applies the next write of one key and then reports
/// it failed (`Unavailable`), as etcd does when a request times out after it committed
/// — or, with `apply: false`, loses the write and reports the same.
struct Ambiguous {
    inner: Arc<dyn MetadataStore>,
    /// (key, writes of it to let through first, apply the failing one?)
    armed: std::sync::Mutex<Option<(String, usize, bool)>>,
}

impl Ambiguous {
    fn arm(&self, key: &str, after: usize, apply: bool) {
        *self.armed.lock().unwrap() = Some((key.to_string(), after, apply));
    }

    /// Whether this write of `key` is the one to fail, and whether to apply it.
    fn take(&self, key: &str) -> Option<bool> {
        let mut armed = self.armed.lock().unwrap();
        match armed.as_mut() {
            Some((k, after, _)) if k == key && *after > 0 => {
                *after -= 1;
                None
            }
            Some((k, _, apply)) if k == key => {
                let apply = *apply;
                *armed = None;
                Some(apply)
            }
            _ => None,
        }
    }
}

#[async_trait::async_trait]
impl MetadataStore for Ambiguous {
    async fn get(&self, key: &str) -> strata_meta::Result<Option<strata_meta::Versioned>> {
        self.inner.get(key).await
    }
    async fn put(&self, key: &str, value: Bytes, cond: strata_meta::Condition) -> strata_meta::Result<u64> {
        match self.take(key) {
            Some(apply) => {
                if apply {
                    self.inner.put(key, value, cond).await?;
                }
                Err(strata_meta::MetaError::Unavailable("request timed out".into()))
            }
            None => self.inner.put(key, value, cond).await,
        }
    }
    async fn put_guarded(
        &self,
        key: &str,
        value: Bytes,
        cond: strata_meta::Condition,
        guard: &strata_meta::Guard,
    ) -> strata_meta::Result<u64> {
        self.inner.put_guarded(key, value, cond, guard).await
    }
    async fn put_ephemeral(
        &self,
        session: &strata_meta::Session,
        key: &str,
        value: Bytes,
        cond: strata_meta::Condition,
    ) -> strata_meta::Result<u64> {
        self.inner.put_ephemeral(session, key, value, cond).await
    }
    async fn delete(&self, key: &str, cond: strata_meta::Condition) -> strata_meta::Result<bool> {
        self.inner.delete(key, cond).await
    }
    async fn list(&self, prefix: &str) -> strata_meta::Result<Vec<(String, strata_meta::Versioned)>> {
        self.inner.list(prefix).await
    }
    async fn watch(&self, prefix: &str) -> strata_meta::Result<strata_meta::Watch> {
        self.inner.watch(prefix).await
    }
    async fn session(&self, ttl: Duration) -> strata_meta::Result<strata_meta::Session> {
        self.inner.session(ttl).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ambiguous_ledger_list_write_at_rollover_never_deletes_a_listed_ledger() {
    let b = bookies(2).await;
    let client = LedgerClient::new(b.store.clone(), LedgerClientConfig::default());
    let store = Arc::new(Ambiguous {
        inner: b.store.clone(),
        armed: Default::default(),
    });
    let topic = TopicName::parse("persistent://t/ns/ambiguous").unwrap();
    let key = keys::topic(&topic.path());
    let ml = ManagedLedger::open(topic.clone(), client.clone(), store.clone(), cfg(4))
        .await
        .unwrap();
    let mut positions = Vec::new();
    for i in 0..4u64 {
        positions.push(ml.append(msg(i)).await.unwrap());
    }
    // The 5th append rolls over: the list is written twice (the full ledger closed, the
    // new one added); the second write commits but reports a failure.
    store.arm(&key, 1, true);
    positions.push(ml.append(msg(4)).await.unwrap());
    let ledgers = ml.ledgers().await;
    assert_eq!(ledgers.len(), 2);
    for l in &ledgers {
        let id = strata_common::LedgerId::new(l.id).unwrap();
        assert!(client.metadata(id).await.is_ok(), "listed ledger {id} has its metadata");
    }
    // The write that is lost: the new ledger is not listed, so it may go; the topic
    // fails and loads again.
    for i in 5..8u64 {
        positions.push(ml.append(msg(i)).await.unwrap());
    }
    store.arm(&key, 1, false);
    assert!(ml.append(msg(8)).await.is_err());
    drop(ml);
    // A new owner loads the topic: every listed ledger exists, every entry reads back.
    let ml = ManagedLedger::open(topic, client.clone(), b.store.clone(), cfg(4))
        .await
        .unwrap();
    for l in ml.ledgers().await {
        let id = strata_common::LedgerId::new(l.id).unwrap();
        assert!(client.metadata(id).await.is_ok(), "listed ledger {id} has its metadata");
    }
    let got = read_all(&ml, positions[0]).await;
    let payloads: Vec<Bytes> = got.into_iter().map(|(_, p)| p).collect();
    assert_eq!(payloads, (0..8).map(msg).collect::<Vec<_>>());
    b.shutdown().await;
}
