//! Tiered offload end to end, as a user runs it: `strata standalone` processes with an
//! `[offload]` section, against a real S3-compatible server on loopback (moto) and against
//! a local directory (file://), driven by the SDK and the CLI.
//!
//! The suite (for each backend): 200,000 messages over many ledger rollovers are offloaded
//! on request; the broker is SIGKILLed mid-offload and the restarted one finishes with
//! exactly one pair of objects per ledger and nothing else in the bucket; every message is
//! consumed from earliest byte-identical with the bookie copies deleted; a seek by time
//! lands in the offloaded range; a damaged object gives an error naming the ledger and the
//! object and never a wrong byte. An unreachable endpoint, wrong credentials and a missing
//! bucket are reported in offload-status, the CLI and /metrics while clients keep
//! producing and consuming.

mod common;

use common::s3::Moto;
use common::{Standalone, free_port, http_get};
use futures_util::StreamExt;
use object_store::ObjectStoreExt;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use strata_broker::offload::{OffloadSettings, Offloader};
use strata_client::{Client, InitialPosition, OffloadStatus, SubscriptionType};

const TOPIC: &str = "public/default/tiered";
const MESSAGES: usize = 200_000;
const WAIT: Duration = Duration::from_secs(30);

/// Message `i`: 100 bytes, its index first.
fn message(i: usize) -> Vec<u8> {
    let mut m = format!("{i:08}|").into_bytes();
    m.resize(100, b"abcdefghijklmnopqrstuvwxyz"[i % 26]);
    m
}

/// Where offloaded ledgers go in one run of the suite.
struct Backend {
    /// The `[offload]` lines naming the store.
    config: String,
    /// The same store, opened by the test to list and damage objects.
    store: Arc<Offloader>,
    _moto: Option<Moto>,
}

impl Backend {
    async fn s3(dir: &Path) -> Self {
        let moto = Moto::start(dir).await;
        moto.create_bucket("strata-offload").await;
        let config = format!(
            "url = \"s3://strata-offload/cluster-a\"\nendpoint = \"{}\"\naccess_key_id = \"test\"\nsecret_access_key = \"test\"\n",
            moto.endpoint
        );
        let store = OffloadSettings {
            url: Some("s3://strata-offload/cluster-a".into()),
            endpoint: Some(moto.endpoint.clone()),
            access_key_id: Some("test".into()),
            secret_access_key: Some("test".into()),
            ..Default::default()
        }
        .build()
        .unwrap()
        .unwrap();
        Self {
            config,
            store,
            _moto: Some(moto),
        }
    }

    fn file(dir: &Path) -> Self {
        let url = format!("file://{}", dir.join("offload").display());
        let store = OffloadSettings {
            url: Some(url.clone()),
            ..Default::default()
        }
        .build()
        .unwrap()
        .unwrap();
        Self {
            config: format!("url = \"{url}\"\n"),
            store,
            _moto: None,
        }
    }

    /// Every object under the store's prefix, as full URLs.
    async fn objects(&self) -> BTreeSet<String> {
        let t = strata_common::TopicName::parse(TOPIC).unwrap();
        let prefix = self.store.topic_path(&t);
        self.store
            .store()
            .list(Some(&prefix))
            .map(|m| self.store.describe(&m.unwrap().location))
            .collect()
            .await
    }
}

fn config(offload: &str, extra: &str) -> String {
    // Small ledgers (25 entries of up to 200 messages), so 200,000 messages roll over
    // dozens of times; a bandwidth cap, so an offload lasts long enough to be killed.
    format!(
        "[broker]\nmax_entries_per_ledger = 25\nretention_time_secs = -1\nretention_bytes = -1\n\n\
         [offload]\n{offload}deletion_lag_secs = 0\ncheck_interval_secs = 1\nmax_bytes_per_sec = 4000000\n{extra}"
    )
}

async fn status(client: &Client) -> OffloadStatus {
    client.admin().offload_status(TOPIC).await.unwrap()
}

/// Polls the offload status until `done` holds (bounded).
async fn wait_status(
    client: &Client,
    what: &str,
    limit: Duration,
    done: impl Fn(&OffloadStatus) -> bool,
) -> OffloadStatus {
    let deadline = Instant::now() + limit;
    loop {
        let s = status(client).await;
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "{what}: not reached; status {s:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn produce(client: &Client) -> SystemTime {
    let producer = client.producer(TOPIC).batch_max_messages(200).create().await.unwrap();
    let mut pending = Vec::new();
    let mut middle = None;
    for i in 0..MESSAGES {
        if i == MESSAGES / 2 {
            for p in pending.drain(..) {
                let p: strata_client::SendFuture = p;
                p.await.unwrap();
            }
            // Later messages get later publish times.
            let t0 = SystemTime::now();
            while SystemTime::now().duration_since(t0).unwrap() < Duration::from_millis(20) {
                tokio::task::yield_now().await;
            }
            middle = Some(SystemTime::now());
        }
        pending.push(producer.send_async(message(i)).await.unwrap());
        if pending.len() >= 5000 {
            for p in pending.drain(..) {
                p.await.unwrap();
            }
        }
    }
    for p in pending {
        p.await.unwrap();
    }
    producer.close().await.unwrap();
    middle.unwrap()
}

/// Receives from `c` and checks each message is the next expected one, until `n` arrived
/// or nothing more comes for `quiet`; returns how many arrived.
async fn consume_checked(c: &strata_client::Consumer, from: usize, n: usize, quiet: Duration) -> usize {
    let mut got = 0;
    while got < n {
        match tokio::time::timeout(quiet, c.receive()).await {
            Ok(m) => {
                let m = m.unwrap();
                assert_eq!(
                    m.payload.as_ref(),
                    message(from + got).as_slice(),
                    "message {} must be byte-identical",
                    from + got
                );
                c.ack(&m).await.unwrap();
                got += 1;
            }
            Err(_) => break,
        }
    }
    got
}

async fn consumer(client: &Client, sub: &str) -> strata_client::Consumer {
    client
        .consumer(TOPIC)
        .subscription(sub)
        .subscription_type(SubscriptionType::Exclusive)
        .initial_position(InitialPosition::Earliest)
        .subscribe()
        .await
        .unwrap()
}

fn metric(page: &str, name: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

async fn suite(dir: &Path, backend: Backend) {
    let port = free_port();
    let http = format!("127.0.0.1:{}", free_port());
    let cfg = config(&backend.config, "");
    let args = ["--http-listen", http.as_str()];
    let mut s = Standalone::start_with_args(dir, port, Some(&cfg), &args).await;
    let client = Client::connect(s.url.clone()).await.unwrap();
    let middle = produce(&client).await;

    // Ask for an offload and kill the broker while it runs.
    let before = client.admin().offload_topic(TOPIC).await.unwrap();
    assert!(before.enabled, "{before:#?}");
    let requested: Vec<u64> = before
        .ledgers
        .iter()
        .filter(|l| l.state != "open" && l.entries > 0)
        .map(|l| l.ledger)
        .collect();
    assert!(requested.len() >= 20, "many rollovers: {before:#?}");
    wait_status(&client, "one ledger offloaded, more to go", WAIT, |st| {
        st.offloaded_ledgers >= 1 && st.pending_ledgers >= 1
    })
    .await;
    drop(client);
    s.sigkill();

    // The restarted broker finishes the recorded request.
    let s = Standalone::start_with_args(dir, port, Some(&cfg), &args).await;
    let client = Client::connect(s.url.clone()).await.unwrap();
    let done = wait_status(
        &client,
        "the request completed after the restart",
        Duration::from_secs(120),
        |st| {
            requested.iter().all(|id| {
                st.ledgers
                    .iter()
                    .any(|l| l.ledger == *id && l.state == "object-storage")
            })
        },
    )
    .await;
    // Exactly one data and one index object per offloaded ledger, and nothing else:
    // the killed attempt's objects were deleted, none is referenced twice.
    let referenced: BTreeSet<String> = done
        .ledgers
        .iter()
        .filter(|l| !l.data_object.is_empty() && l.state != "offloading")
        .flat_map(|l| [l.data_object.clone(), l.index_object.clone()])
        .collect();
    let offloaded = done.ledgers.iter().filter(|l| l.state == "object-storage").count();
    assert_eq!(referenced.len(), 2 * offloaded, "{done:#?}");
    let stored = wait_until_objects(&backend, &referenced).await;
    assert_eq!(stored, referenced);
    let stats = client.admin().topic_stats(TOPIC).await.unwrap();
    assert!(
        stats.offloaded_bytes > 0 && stats.bookie_bytes < stats.storage_bytes + 1,
        "{stats:?}"
    );
    assert_eq!(stats.offloaded_bytes, done.offloaded_bytes);

    // Every message from earliest, byte-identical, read back from object storage.
    let c = consumer(&client, "replay").await;
    assert_eq!(consume_checked(&c, 0, MESSAGES, WAIT).await, MESSAGES);
    let page = http_get(&http, "/metrics").await.unwrap().1;
    assert!(metric(&page, "strata_offload_read_bytes_total") > 0.0);
    assert!(metric(&page, "strata_offload_ledgers_total") >= 1.0);

    // A seek by time into the offloaded range.
    c.seek_time(middle).await.unwrap();
    let m = tokio::time::timeout(WAIT, c.receive()).await.unwrap().unwrap();
    assert_eq!(m.payload.as_ref(), message(MESSAGES / 2).as_slice());
    c.close().await.unwrap();

    // Damage one data object in the middle: reads stop before it with an error naming
    // the ledger and the object; no wrong byte is ever delivered.
    let victim = done
        .ledgers
        .iter()
        .filter(|l| l.state == "object-storage")
        .nth(offloaded / 2)
        .unwrap()
        .clone();
    let path = backend
        .store
        .store()
        .list(None)
        .map(|m| m.unwrap().location)
        .filter(|p| std::future::ready(backend.store.describe(p) == victim.data_object))
        .next()
        .await
        .unwrap();
    let mut bytes = backend
        .store
        .store()
        .get(&path)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x20;
    backend.store.store().put(&path, bytes.into()).await.unwrap();
    client.admin().unload_topic(TOPIC).await.unwrap();
    let c = consumer(&client, "after-damage").await;
    // Delivery stops before the damaged entry: everything delivered is intact.
    let got = consume_checked(&c, 0, MESSAGES, Duration::from_secs(3)).await;
    assert!(got < MESSAGES, "the damaged ledger's messages are not delivered");
    let damaged = wait_status(&client, "the damaged object reported", WAIT, |st| {
        !st.last_read_error.is_empty()
    })
    .await;
    let err = &damaged.last_read_error;
    assert!(err.contains(&format!("ledger {}", victim.ledger)), "{err}");
    assert!(err.contains(&victim.data_object), "{err}");
    assert!(err.contains("checksum mismatch"), "{err}");
    assert_eq!(
        consume_checked(&c, got, MESSAGES - got, Duration::from_secs(1)).await,
        0,
        "still nothing past the damage"
    );
    let page = http_get(&http, "/metrics").await.unwrap().1;
    assert!(metric(&page, "strata_offload_read_errors_total") >= 1.0);
    c.close().await.unwrap();

    // Deleting the topic deletes its objects.
    client.admin().delete_topic_with(TOPIC, true).await.unwrap();
    assert!(wait_until_objects(&backend, &BTreeSet::new()).await.is_empty());
}

/// The stored objects once they equal `want` (listing is eventually consistent on some
/// stores), or what is there at the deadline.
async fn wait_until_objects(backend: &Backend, want: &BTreeSet<String>) -> BTreeSet<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = backend.objects().await;
        if &got == want || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offload_to_an_s3_compatible_server_survives_a_crash_and_reads_back_identical() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::s3(dir.path()).await;
    suite(dir.path(), backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offload_to_a_local_directory_survives_a_crash_and_reads_back_identical() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::file(dir.path());
    suite(dir.path(), backend).await;
}

/// Produces a few ledgers' worth, asks for an offload that cannot work, and checks the
/// error is reported everywhere while clients keep working.
async fn failing_offload(dir: &Path, offload: &str, expect: &[&str]) {
    let port = free_port();
    let http = format!("127.0.0.1:{}", free_port());
    let cfg = config(offload, "max_retries = 0\nrequest_timeout_secs = 5\n");
    let s = Standalone::start_with_args(dir, port, Some(&cfg), &["--http-listen", &http]).await;
    let client = Client::connect(s.url.clone()).await.unwrap();
    let producer = client.producer(TOPIC).batch_max_messages(10).create().await.unwrap();
    for i in 0..1000 {
        producer.send_async(message(i)).await.unwrap();
    }
    producer.flush().await.unwrap();
    // The CLI waits for the offload and fails with the error.
    let out = s.cli(&["admin", "topics", "offload", TOPIC, "--timeout-secs", "60"], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    for e in expect {
        assert!(stderr.contains(e), "CLI error names {e:?}: {stderr}");
    }
    let st = wait_status(&client, "the failure recorded", WAIT, |st| st.consecutive_failures >= 1).await;
    for e in expect {
        assert!(st.last_error.contains(e), "status names {e:?}: {st:#?}");
    }
    assert!(st.next_retry_ms > 0, "a retry is scheduled");
    let page = http_get(&http, "/metrics").await.unwrap().1;
    assert!(metric(&page, "strata_offload_errors_total") >= 1.0);
    // Publishing and consuming go on meanwhile.
    for i in 1000..2000 {
        producer.send_async(message(i)).await.unwrap();
    }
    producer.flush().await.unwrap();
    let c = consumer(&client, "meanwhile").await;
    assert_eq!(consume_checked(&c, 0, 2000, WAIT).await, 2000);
    let stats = client.admin().topic_stats(TOPIC).await.unwrap();
    assert_eq!(stats.offloaded_bytes, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_endpoints_credentials_and_buckets_are_reported_while_clients_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start(dir.path()).await;
    let a = dir.path().join("missing-bucket");
    std::fs::create_dir_all(&a).unwrap();
    failing_offload(
        &a,
        &format!(
            "url = \"s3://no-such-bucket\"\nendpoint = \"{}\"\naccess_key_id = \"k\"\nsecret_access_key = \"s\"\n",
            moto.endpoint
        ),
        &["s3://no-such-bucket/", "NoSuchBucket"],
    )
    .await;
    let wrong = Moto::start_with(dir.path(), true).await;
    let c = dir.path().join("wrong-credentials");
    std::fs::create_dir_all(&c).unwrap();
    failing_offload(
        &c,
        &format!(
            "url = \"s3://bucket\"\nendpoint = \"{}\"\naccess_key_id = \"wrong\"\nsecret_access_key = \"wrong\"\n",
            wrong.endpoint
        ),
        &["s3://bucket/", "InvalidAccessKeyId"],
    )
    .await;
    let b = dir.path().join("unreachable");
    std::fs::create_dir_all(&b).unwrap();
    let closed = format!("127.0.0.1:{}", free_port());
    failing_offload(
        &b,
        &format!(
            "url = \"s3://bucket\"\nendpoint = \"http://{closed}\"\naccess_key_id = \"k\"\nsecret_access_key = \"s\"\n"
        ),
        &[closed.as_str()],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offload_without_a_configured_store_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(dir.path(), free_port()).await;
    let client = Client::connect(s.url.clone()).await.unwrap();
    client.producer(TOPIC).create().await.unwrap().send("x").await.unwrap();
    let out = s.cli(&["admin", "topics", "offload", TOPIC], None);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no [offload] url configured"), "{stderr}");
    let st = client.admin().offload_status(TOPIC).await.unwrap();
    assert!(!st.enabled);
    // A bad [offload] section stops standalone at start, naming the setting.
    let out = std::process::Command::new(common::STRATA)
        .args(["standalone", "--data-dir"])
        .arg(dir.path().join("other"))
        .args(["--listen", &format!("127.0.0.1:{}", free_port()), "--config"])
        .arg({
            let p = dir.path().join("bad.toml");
            std::fs::write(&p, "[offload]\nurl = \"ftp://x\"\n").unwrap();
            p
        })
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("offload.url"));
}
