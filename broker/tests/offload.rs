//! Tiered offload of a managed ledger over real bookies (in-process, loopback) and real
//! object stores (memory and a local directory; S3 is covered by tests/offload.rs against
//! a real S3-compatible server): the round trip with bookie copies deleted, resuming an
//! interrupted attempt, damaged objects, trimming, and an unreachable endpoint.

use bytes::Bytes;
use object_store::ObjectStoreExt;
use std::sync::Arc;
use std::time::Duration;
use strata_bookie::ledger::{LedgerClient, LedgerClientConfig};
use strata_broker::managed_ledger::{ManagedLedger, ManagedLedgerConfig, ManagedLedgerInfo, OffloadInfo};
use strata_broker::offload::{ObjectKind, OffloadPolicy, OffloadSettings, Offloader};
use strata_common::{EntryId, ErrorCode, LedgerId, Position, TopicName};
use strata_meta::{Condition, keys};

mod common;

use common::bookies;

fn cfg(offload: &Arc<Offloader>) -> ManagedLedgerConfig {
    ManagedLedgerConfig {
        ensemble: 2,
        write_quorum: 2,
        ack_quorum: 2,
        max_entries_per_ledger: 10,
        offload: Some(offload.clone()),
        ..Default::default()
    }
}

/// Payloads of every size class: empty, small, and larger than the read-ahead chunk.
fn msg(i: u64) -> Bytes {
    match i % 7 {
        0 => Bytes::new(),
        3 => Bytes::from(vec![i as u8; 3000]),
        _ => Bytes::from(format!("message-{i}")),
    }
}

const NOW: OffloadPolicy = OffloadPolicy {
    threshold_bytes: None,
    threshold_age: None,
    deletion_lag: Duration::ZERO,
};

async fn read_all(ml: &ManagedLedger) -> Vec<(Position, Bytes)> {
    let mut out: Vec<(Position, Bytes)> = Vec::new();
    let Some(mut next) = ml.first_position().await else {
        return out;
    };
    loop {
        let batch = ml.read(next, 7).await.unwrap();
        let Some((last, _)) = batch.last().cloned() else { break };
        out.extend(batch);
        next = Position {
            ledger: last.ledger,
            entry: EntryId::new(last.entry.get() + 1),
        };
    }
    out
}

/// Small chunks, so reads cross chunk boundaries and use the read-ahead.
fn settings() -> OffloadSettings {
    OffloadSettings {
        read_ahead_bytes: 100,
        ..Default::default()
    }
}

fn offloaders() -> Vec<(Arc<Offloader>, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let file = OffloadSettings {
        url: Some(format!("file://{}", dir.path().display())),
        ..settings()
    }
    .build()
    .unwrap()
    .unwrap();
    vec![(Offloader::in_memory(settings()), None), (file, Some(dir))]
}

async fn objects(off: &Offloader, topic: &TopicName) -> Vec<String> {
    use futures_util::StreamExt;
    let mut names: Vec<String> = off
        .store()
        .list(Some(&off.topic_path(topic)))
        .map(|m| m.unwrap().location.filename().unwrap().to_string())
        .collect()
        .await;
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offloaded_ledgers_read_back_identical_once_their_bookie_copies_are_deleted() {
    for (off, _dir) in offloaders() {
        let b = bookies(2).await;
        let client = LedgerClient::new(b.store.clone(), LedgerClientConfig::default());
        let topic = TopicName::parse("persistent://t/ns/tiered").unwrap();
        let ml = ManagedLedger::open(topic.clone(), client.clone(), b.store.clone(), cfg(&off))
            .await
            .unwrap();
        let mut positions = Vec::new();
        for i in 0..35u64 {
            positions.push(ml.append(msg(i)).await.unwrap());
        }
        let before = read_all(&ml).await;
        assert_eq!(before.len(), 35);
        // Nothing is due under a policy without thresholds and without a request.
        assert_eq!(ml.run_offload(NOW).await.unwrap(), 0);
        ml.request_offload().await.unwrap();
        assert_eq!(ml.offload_pending(&NOW).len(), 3, "the three closed ledgers");
        assert_eq!(ml.run_offload(NOW).await.unwrap(), 3, "{}", off.url());
        let ledgers = ml.ledgers().await;
        for l in &ledgers[..3] {
            let o = l.offload.expect("offloaded");
            assert!(o.complete && o.bookie_deleted, "{l:?}");
            let gone = LedgerId::new(l.id).unwrap();
            assert_eq!(client.open(gone).await.err().unwrap().code(), ErrorCode::NoSuchLedger);
        }
        assert!(ledgers[3].offload.is_none(), "the open ledger stays");
        assert_eq!(
            objects(&off, &topic).await.len(),
            6,
            "one data and one index object per ledger"
        );
        assert_eq!(read_all(&ml).await, before, "read back from object storage");
        // A new owner reads them too (nothing cached).
        ml.close().await.unwrap();
        let ml = ManagedLedger::open(topic.clone(), client.clone(), b.store.clone(), cfg(&off))
            .await
            .unwrap();
        assert_eq!(read_all(&ml).await, before);
        assert_eq!(
            ml.run_offload(NOW).await.unwrap(),
            0,
            "the reopen closed a ledger nobody asked for"
        );
        ml.request_offload().await.unwrap();
        assert_eq!(ml.run_offload(NOW).await.unwrap(), 1);
        // Trimming deletes the objects of the trimmed ledgers.
        assert_eq!(ml.trim_before(positions[25]).await.unwrap(), 2);
        let left = objects(&off, &topic).await;
        let third = ledgers[2].id;
        assert_eq!(left.len(), 4, "{left:?}");
        assert!(left.iter().any(|n| n.starts_with(&format!("{third}-"))), "{left:?}");
        let got = read_all(&ml).await;
        assert_eq!(got.len(), 15);
        assert_eq!(got[0].1, msg(20));
        ml.close().await.unwrap();
        b.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_attempt_is_superseded_and_its_objects_deleted() {
    for (off, _dir) in offloaders() {
        let b = bookies(2).await;
        let client = LedgerClient::new(b.store.clone(), LedgerClientConfig::default());
        let topic = TopicName::parse("persistent://t/ns/resume").unwrap();
        let ml = ManagedLedger::open(topic.clone(), client.clone(), b.store.clone(), cfg(&off))
            .await
            .unwrap();
        for i in 0..25u64 {
            ml.append(msg(i)).await.unwrap();
        }
        let before = read_all(&ml).await;
        ml.close().await.unwrap();
        drop(ml);
        // A broker died mid-offload: ledger 1 fully uploaded but not recorded complete,
        // ledger 2 with a partial data object and no index.
        let key = keys::topic(&topic.path());
        let v = b.store.get(&key).await.unwrap().unwrap();
        let mut info: ManagedLedgerInfo = serde_json::from_slice(&v.value).unwrap();
        let (l1, l2) = (info.ledgers[0].id, info.ledgers[1].id);
        let reader = client.open(LedgerId::new(l1).unwrap()).await.unwrap();
        off.upload(&topic, &reader, 0xa).await.unwrap();
        off.store()
            .put(
                &off.object_path(&topic, l2, 0xb, ObjectKind::Data),
                Bytes::from_static(b"half").into(),
            )
            .await
            .unwrap();
        info.ledgers[0].offload = Some(OffloadInfo {
            attempt: 0xa,
            ..Default::default()
        });
        info.ledgers[1].offload = Some(OffloadInfo {
            attempt: 0xb,
            ..Default::default()
        });
        b.store
            .put(&key, info.encode(), Condition::Version(v.version))
            .await
            .unwrap();
        let ml = ManagedLedger::open(topic.clone(), client.clone(), b.store.clone(), cfg(&off))
            .await
            .unwrap();
        // Not readable from object storage until complete: reads still use the bookies.
        assert_eq!(read_all(&ml).await, before);
        // Unfinished attempts are resumed whatever the policy.
        assert_eq!(ml.run_offload(NOW).await.unwrap(), 2);
        let ledgers = ml.ledgers().await;
        let names = objects(&off, &topic).await;
        assert_eq!(names.len(), 4, "{names:?}");
        for l in &ledgers[..2] {
            let o = l.offload.unwrap();
            assert!(o.complete && o.bookie_deleted);
            assert!(o.attempt != 0xa && o.attempt != 0xb, "a new attempt");
            for kind in ["data", "index"] {
                let want = format!("{}-{:016x}.{kind}", l.id, o.attempt);
                assert!(names.contains(&want), "{want} in {names:?}");
            }
        }
        assert_eq!(read_all(&ml).await, before);
        ml.close().await.unwrap();
        b.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_object_gives_an_error_naming_the_ledger_and_object_never_bytes() {
    let (off, _dir) = offloaders().pop().unwrap();
    let b = bookies(2).await;
    let client = LedgerClient::new(b.store.clone(), LedgerClientConfig::default());
    let topic = TopicName::parse("persistent://t/ns/damaged").unwrap();
    let ml = ManagedLedger::open(topic.clone(), client.clone(), b.store.clone(), cfg(&off))
        .await
        .unwrap();
    for i in 0..15u64 {
        ml.append(msg(i)).await.unwrap();
    }
    ml.request_offload().await.unwrap();
    assert_eq!(ml.run_offload(NOW).await.unwrap(), 1);
    let l = ml.ledgers().await[0].clone();
    let o = l.offload.unwrap();
    let data = off.object_path(&topic, l.id, o.attempt, ObjectKind::Data);
    let mut bytes = off.store().get(&data).await.unwrap().bytes().await.unwrap().to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    off.store().put(&data, Bytes::from(bytes).into()).await.unwrap();
    ml.close().await.unwrap();
    let ml = ManagedLedger::open(topic.clone(), client, b.store.clone(), cfg(&off))
        .await
        .unwrap();
    let first = ml.first_position().await.unwrap();
    // Entries before the damaged one may be served; the damaged one never is.
    let mut next = first;
    let err = loop {
        match ml.read(next, 1).await {
            Ok(got) => {
                let (p, payload) = got[0].clone();
                assert_eq!(payload, msg(p.entry.get()), "only intact entries");
                next = Position {
                    ledger: p.ledger,
                    entry: EntryId::new(p.entry.get() + 1),
                };
            }
            Err(e) => break e.to_string(),
        }
    };
    assert!(err.contains(&format!("ledger {}", l.id)), "{err}");
    assert!(err.contains(&format!("{:016x}.data", o.attempt)), "{err}");
    assert!(err.contains("checksum mismatch"), "{err}");
    let status = ml.offload_status();
    assert_eq!(status.last_read_error.as_deref(), Some(err.as_str()));
    assert!(off.metrics.read_errors.load(std::sync::atomic::Ordering::Relaxed) > 0);
    ml.close().await.unwrap();
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_endpoint_fails_with_backoff_while_appends_go_on() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let off = OffloadSettings {
        url: Some("s3://bucket/strata".into()),
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        access_key_id: Some("key".into()),
        secret_access_key: Some("secret".into()),
        max_retries: 0,
        request_timeout_secs: 5,
        ..Default::default()
    }
    .build()
    .unwrap()
    .unwrap();
    let b = bookies(2).await;
    let client = LedgerClient::new(b.store.clone(), LedgerClientConfig::default());
    let topic = TopicName::parse("persistent://t/ns/unreachable").unwrap();
    let ml = ManagedLedger::open(topic.clone(), client, b.store.clone(), cfg(&off))
        .await
        .unwrap();
    for i in 0..15u64 {
        ml.append(msg(i)).await.unwrap();
    }
    ml.request_offload().await.unwrap();
    let err = ml.run_offload(NOW).await.unwrap_err().to_string();
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    let status = ml.offload_status();
    assert_eq!(status.failures, 1);
    assert_eq!(status.last_error.as_deref(), Some(err.as_str()));
    assert!(!ml.offload_due(), "backing off");
    assert_eq!(off.metrics.errors.load(std::sync::atomic::Ordering::Relaxed), 1);
    // Publishing and reading go on.
    for i in 15..30u64 {
        ml.append(msg(i)).await.unwrap();
    }
    assert_eq!(read_all(&ml).await.len(), 30);
    ml.close().await.unwrap();
    b.shutdown().await;
}
