//! Auto-recovery and decommissioning end to end: a real etcd, four `strata bookie`
//! processes (each running an auditor candidate and a replication worker), a `strata
//! broker` for the admin CLI, real SIGKILL.
//!
//! - A bookie SIGKILLed and kept down past the grace period: every ledger — closed ones,
//!   and an open one whose idle writer still names the dead bookie — is back to three
//!   copies on live bookies, verified by reading every entry from every replica the
//!   metadata names; after a second bookie dies, everything acknowledged still reads.
//! - `strata autorecovery` as its own process (bookies with `autorecovery = false`)
//!   re-replicates a dead bookie's ledgers once it is decommissioned, without waiting for
//!   the lost-bookie grace.
//! - A bookie decommissioned under produce/consume load: no client-visible error, no
//!   ledger names it afterwards, its data directory can be deleted, and every message
//!   still reads from the start; a decommission that would leave too few bookies is
//!   refused, as is an unknown bookie.

mod common;

use common::{BookieProcess, BrokerProcess, STRATA, free_port, http_get, payload};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use std::collections::BTreeSet;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use strata_bookie::client::BookieClient;
use strata_bookie::ledger::{LedgerClient, LedgerClientConfig, LedgerMetadata, LedgerState};
use strata_client::{Client, ProducerMessage, SubscriptionType};
use strata_common::LedgerId;
use strata_meta::testing::Etcd;
use strata_meta::{MetadataStore, keys};

/// Short session (a killed bookie leaves the registry within 5 s, yet a bookie stalled on
/// a loaded machine keeps its registration), quick audits, a lost-bookie grace long
/// enough to observe the lost state, no copy throttle.
const BOOKIE_CONFIG: &str = "session_ttl_ms = 5000\nautorecovery_lost_grace_secs = 8\nautorecovery_audit_interval_secs = 1\nautorecovery_open_ledger_grace_secs = 2\nautorecovery_max_bytes_per_sec = 0\n";

struct Cluster {
    etcd: Etcd,
    store: Arc<dyn MetadataStore>,
    bookies: Vec<BookieProcess>,
    /// Each bookie's /metrics address.
    http: Vec<String>,
    broker: Option<BrokerProcess>,
    dir: tempfile::TempDir,
}

impl Cluster {
    async fn start(bookies: usize, broker_config: &str) -> Self {
        Self::start_with(bookies, broker_config, BOOKIE_CONFIG).await
    }

    async fn start_with(bookies: usize, broker_config: &str, bookie_config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let etcd = Etcd::start().await;
        let store = strata_meta::connect(&etcd.url).await.unwrap();
        let mut c = Cluster {
            etcd,
            store,
            bookies: Vec::new(),
            http: Vec::new(),
            broker: None,
            dir,
        };
        for i in 0..bookies {
            let d = c.dir.path().join(format!("bookie{i}"));
            std::fs::create_dir_all(&d).unwrap();
            let http = format!("127.0.0.1:{}", free_port());
            let mut b = BookieProcess::start_with_args(
                &d,
                bookie_config,
                &["--metadata-url", &c.etcd.url, "--http-listen", &http],
            );
            b.ready().await;
            c.bookies.push(b);
            c.http.push(http);
        }
        c.wait_registered(bookies).await;
        let mut broker = BrokerProcess::start(
            c.dir.path(),
            &c.etcd.url,
            &format!(
                "ensemble_size = 3\nwrite_quorum = 3\nack_quorum = 2\nretention_time_secs = -1\nretention_bytes = -1\n{broker_config}"
            ),
        );
        broker.ready().await;
        c.broker = Some(broker);
        c
    }

    async fn wait_registered(&self, n: usize) {
        common::wait_registered(self.store.as_ref(), n).await;
    }

    fn url(&self) -> String {
        self.broker.as_ref().unwrap().url()
    }

    /// `strata admin …` against the broker.
    fn admin(&self, args: &[&str]) -> std::process::Output {
        Command::new(STRATA)
            .args(["admin", "--url", &self.url()])
            .args(args)
            .output()
            .unwrap()
    }

    fn admin_ok(&self, args: &[&str]) -> String {
        let out = self.admin(args);
        assert!(
            out.status.success(),
            "strata admin {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `bookies list --json`, as (address, state, registered) triples.
    fn bookie_states(&self) -> Vec<(String, String, bool)> {
        let out = self.admin_ok(&["bookies", "list", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|b| {
                (
                    b["address"].as_str().unwrap().to_string(),
                    b["state"].as_str().unwrap().to_string(),
                    b["registered"].as_bool().unwrap(),
                )
            })
            .collect()
    }

    /// Every ledger's metadata.
    async fn ledgers(&self) -> Vec<(u64, LedgerMetadata)> {
        let mut out = Vec::new();
        for (k, v) in self.store.list(&keys::ledgers_prefix()).await.unwrap() {
            let id: u64 = k.rsplit('/').next().unwrap().parse().unwrap();
            out.push((id, LedgerMetadata::decode(id, &v.value).unwrap()));
        }
        out
    }

    /// Ledgers whose metadata names `bookie`.
    async fn naming(&self, bookie: &str) -> Vec<u64> {
        self.ledgers()
            .await
            .into_iter()
            .filter(|(_, md)| md.fragments.iter().any(|f| f.bookies.iter().any(|b| b == bookie)))
            .map(|(id, _)| id)
            .collect()
    }

    async fn metric_sum(&mut self, name: &str) -> f64 {
        let mut sum = 0.0;
        for (i, h) in self.http.iter().enumerate() {
            if !self.bookies[i].is_running() {
                continue;
            }
            if let Some((200, body)) = http_get(h, "/metrics").await {
                sum += body
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("{name} ")))
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .unwrap_or(0.0);
            }
        }
        sum
    }

    fn logs(&self) -> String {
        let mut s: String = self
            .bookies
            .iter()
            .map(|b| format!("--- bookie {} ---\n{}", b.addr, tail(&b.log_text())))
            .collect();
        if let Some(b) = &self.broker {
            s += &format!("--- broker ---\n{}", tail(&b.log_text()));
        }
        s
    }
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n") + "\n"
}

const ENTRY_BYTES: usize = 1024;

/// Reads every entry of `md` from every bookie its metadata names for it, comparing
/// the bytes with what was written.
async fn verify_every_replica(id: u64, md: &LedgerMetadata) -> usize {
    let ledger = LedgerId::new(id).unwrap();
    let Some(last) = md.last_entry else { return 0 };
    let mut checked = 0;
    for (k, f) in md.fragments.iter().enumerate() {
        let end = md.fragments.get(k + 1).map_or(last, |n| n.first_entry - 1);
        if end < f.first_entry {
            continue;
        }
        for b in &f.bookies {
            let c = BookieClient::connect(b).await.unwrap();
            let mut next = f.first_entry;
            while next <= end {
                let got = c
                    .read(ledger, next, end)
                    .await
                    .unwrap_or_else(|e| panic!("ledger {id} entry {next} on {b}: {e}"));
                assert!(!got.is_empty(), "ledger {id}: {b} returned nothing from entry {next}");
                for e in got {
                    assert_eq!(e.entry, next);
                    assert_eq!(
                        e.payload,
                        payload(id, next, ENTRY_BYTES),
                        "ledger {id} entry {next} on {b} differs"
                    );
                    next += 1;
                    checked += 1;
                }
            }
        }
    }
    checked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_bookie_is_re_replicated_and_a_second_loss_loses_nothing() {
    let mut c = Cluster::start(4, "").await;
    let client = LedgerClient::new(c.store.clone(), LedgerClientConfig::default());

    // 50,000 entries over five ledgers; four closed, the last left open (its writer
    // moves off the dead bookie itself, when its stream to it breaks).
    const LEDGERS: u64 = 5;
    const PER_LEDGER: u64 = 10_000;
    let mut writers = Vec::new();
    for l in 0..LEDGERS {
        let w = client.create(3, 3, 2).await.unwrap();
        let id = w.id().get();
        let mut inflight = FuturesUnordered::new();
        for e in 0..PER_LEDGER {
            let fut = w.submit(payload(id, e, ENTRY_BYTES)).await.unwrap();
            inflight.push(fut);
            while inflight.len() > 500 {
                inflight.next().await.unwrap().unwrap();
            }
        }
        while let Some(r) = inflight.next().await {
            r.unwrap();
        }
        if l + 1 < LEDGERS {
            assert_eq!(w.close().await.unwrap(), Some(PER_LEDGER - 1));
        }
        writers.push(w);
    }
    let open = writers.last().unwrap().id().get();
    let (md, _) = client.metadata(LedgerId::new(open).unwrap()).await.unwrap();
    assert_eq!(md.state, LedgerState::Open);
    let victim = md.fragments[0].bookies[0].clone();
    let named_before = c.naming(&victim).await;
    assert!(named_before.contains(&open));

    let v = c.bookies.iter().position(|b| b.addr == victim).unwrap();
    c.bookies[v].sigkill();
    let killed_at = Instant::now();

    // The victim shows as lost (the grace period is 8 s, so this state lasts a while).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let states = c.bookie_states();
        if states.iter().any(|(a, s, r)| *a == victim && s == "lost" && !r) {
            break;
        }
        assert!(Instant::now() < deadline, "victim never listed as lost: {states:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Every ledger moves off the victim, and no mark is left.
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let naming = c.naming(&victim).await;
        let marks = c.store.list(&keys::under_replicated_prefix()).await.unwrap();
        if naming.is_empty() && marks.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still naming {victim}: {naming:?}; marks {}\n{}",
            marks.len(),
            c.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let repaired_in = killed_at.elapsed();
    assert!(
        c.admin_ok(&["ledgers", "under-replicated"])
            .contains("no under-replicated ledgers"),
        "the CLI agrees"
    );
    assert!(
        !c.bookie_states().iter().any(|(a, _, _)| *a == victim),
        "no ledger names the victim, so it is no longer listed"
    );

    // Three copies of everything on live bookies, each entry read from each replica.
    let live: BTreeSet<String> = c
        .bookies
        .iter_mut()
        .filter_map(|b| b.is_running().then(|| b.addr.clone()))
        .collect();
    // The open ledger's writer replaced the dead bookie in its own fragment and goes on;
    // re-replication fixed the fragments before it. Close it to check everything.
    let (md, _) = client.metadata(LedgerId::new(open).unwrap()).await.unwrap();
    if md.state == LedgerState::Open {
        assert_eq!(writers.last().unwrap().close().await.unwrap(), Some(PER_LEDGER - 1));
    }
    let mut checked = 0;
    for (id, md) in c.ledgers().await {
        assert_eq!(md.state, LedgerState::Closed, "ledger {id}");
        assert_eq!(md.last_entry, Some(PER_LEDGER - 1), "ledger {id} kept every entry");
        for f in &md.fragments {
            assert_eq!(f.bookies.len(), 3);
            assert!(
                f.bookies.iter().all(|b| live.contains(b)),
                "ledger {id}: {:?}",
                f.bookies
            );
        }
        checked += verify_every_replica(id, &md).await;
    }
    assert_eq!(
        checked as u64,
        LEDGERS * PER_LEDGER * 3,
        "every entry on three replicas"
    );
    let copied = c.metric_sum("strata_autorecovery_rereplicated_bytes_total").await;
    assert!(
        copied >= (named_before.len() as u64 * PER_LEDGER * ENTRY_BYTES as u64) as f64,
        "copied {copied} bytes"
    );
    assert_eq!(c.metric_sum("strata_autorecovery_auditor").await, 1.0, "one auditor");
    eprintln!(
        "re-replicated {} ledgers ({copied} bytes) within {repaired_in:?} of the SIGKILL (8 s grace, 5 s session)",
        named_before.len()
    );

    // A second original bookie dies: everything acknowledged still reads.
    let second = c.bookies.iter_mut().position(|b| b.is_running()).unwrap();
    c.bookies[second].sigkill();
    let mut read = 0u64;
    for (id, _) in c.ledgers().await {
        let r = client.open(LedgerId::new(id).unwrap()).await.unwrap();
        let mut next = 0;
        while next < PER_LEDGER {
            let last = (next + 999).min(PER_LEDGER - 1);
            for e in r.read(next, last).await.unwrap() {
                assert_eq!(e.payload, payload(id, e.entry, ENTRY_BYTES));
                read += 1;
            }
            next = last + 1;
        }
    }
    assert_eq!(read, LEDGERS * PER_LEDGER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decommission_under_load_moves_every_ledger_and_refuses_too_few_bookies() {
    // Small ledgers, so the bookie holds many closed ones as well as the open one.
    let mut c = Cluster::start(4, "max_entries_per_ledger = 300\n").await;
    let topic = "public/default/decommission";
    let client = Client::builder(c.url())
        .reconnect_backoff(Duration::from_millis(50), Duration::from_secs(1))
        .operation_timeout(Duration::from_secs(60))
        .build()
        .await
        .unwrap();
    let consumer = client
        .consumer(topic)
        .subscription("sub")
        .subscription_type(SubscriptionType::Exclusive)
        .initial_position(strata_client::InitialPosition::Earliest)
        .subscribe()
        .await
        .unwrap();
    let producer = client
        .producer(topic)
        .send_timeout(Duration::from_secs(120))
        .create()
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<String>>> = Default::default();
    let errors: Arc<Mutex<Vec<String>>> = Default::default();
    let received: Arc<Mutex<BTreeSet<String>>> = Default::default();
    let prod = {
        let (stop, acked, errors) = (stop.clone(), acked.clone(), errors.clone());
        tokio::spawn(async move {
            let mut seq = 0u64;
            while !stop.load(Ordering::Acquire) {
                let mut receipts = Vec::new();
                for _ in 0..20 {
                    let m = format!("m{seq:08}");
                    seq += 1;
                    match producer.send_async(ProducerMessage::new(m.clone())).await {
                        Ok(r) => receipts.push((m, r)),
                        Err(e) => errors.lock().unwrap().push(format!("{m}: {e}")),
                    }
                }
                for (m, r) in receipts {
                    match r.await {
                        Ok(_) => acked.lock().unwrap().push(m),
                        Err(e) => errors.lock().unwrap().push(format!("{m}: {e}")),
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            producer.close().await.unwrap();
        })
    };
    let cons = {
        let (stop, received, errors) = (stop.clone(), received.clone(), errors.clone());
        tokio::spawn(async move {
            loop {
                match tokio::time::timeout(Duration::from_millis(200), consumer.receive()).await {
                    Ok(Ok(m)) => {
                        if let Err(e) = consumer.ack(&m).await {
                            errors.lock().unwrap().push(format!("ack: {e}"));
                        }
                        received
                            .lock()
                            .unwrap()
                            .insert(String::from_utf8_lossy(&m.payload).into_owned());
                    }
                    Ok(Err(e)) => errors.lock().unwrap().push(format!("receive: {e}")),
                    Err(_) if stop.load(Ordering::Acquire) => return,
                    Err(_) => {}
                }
            }
        })
    };
    let wait_acked = |n: usize| {
        let acked = acked.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(120);
            while acked.lock().unwrap().len() < n {
                assert!(Instant::now() < deadline, "fewer than {n} receipts");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    wait_acked(1500).await;

    // An idle topic: its open ledger's writer never adds again, so it cannot move off the
    // decommissioned bookie by itself; auto-recovery closes (recovers) that ledger after
    // the open-ledger grace. The victim is a bookie that ledger names.
    let idle_topic = "public/default/idle";
    let idle = client.producer(idle_topic).create().await.unwrap();
    for i in 0..50 {
        idle.send(ProducerMessage::new(format!("idle{i:03}"))).await.unwrap();
    }
    let info = c.store.get(&keys::topic(idle_topic)).await.unwrap().unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.value).unwrap();
    let idle_ledger = info["ledgers"].as_array().unwrap().last().unwrap()["id"]
        .as_u64()
        .unwrap();
    let (md, _) = LedgerClient::new(c.store.clone(), LedgerClientConfig::default())
        .metadata(LedgerId::new(idle_ledger).unwrap())
        .await
        .unwrap();
    assert_eq!(md.state, LedgerState::Open);
    let victim = md.last_fragment().bookies[0].clone();
    let victim_index = c.bookies.iter().position(|b| b.addr == victim).unwrap();

    // Unknown bookies are refused, naming what is known.
    let out = c.admin(&["bookies", "decommission", "127.0.0.1:1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("neither registered nor named"), "{err}");

    // Starting and cancelling a decommission: the bookie takes writes again.
    let other = c.bookies[(victim_index + 1) % 4].addr.clone();
    c.admin_ok(&["bookies", "decommission", &other, "--no-wait"]);
    assert!(c.bookie_states().iter().any(|(a, s, _)| *a == other && s == "draining"));
    let out = c.admin_ok(&["bookies", "decommission", &other, "--cancel"]);
    assert!(out.contains("cancelled"), "{out}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !c.bookie_states().iter().any(|(a, s, _)| *a == other && s == "writable") {
        assert!(Instant::now() < deadline, "{other} did not become writable again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Decommission one bookie while producing and consuming.
    assert!(!c.naming(&victim).await.is_empty(), "the victim holds ledgers");
    let out = c.admin_ok(&["bookies", "decommission", &victim, "--timeout-secs", "180"]);
    assert!(out.contains("is decommissioned"), "{out}");
    assert!(c.naming(&victim).await.is_empty(), "no ledger names {victim}");
    let states = c.bookie_states();
    assert!(
        states
            .iter()
            .any(|(a, s, r)| *a == victim && s == "decommissioned" && !r),
        "{states:?}"
    );
    // Safe to repeat.
    let again = c.admin_ok(&["bookies", "decommission", &victim]);
    assert!(again.contains("is decommissioned"), "{again}");

    // Load keeps flowing afterwards, and the idle topic takes messages again (its producer
    // rides over the ledger recovery).
    let n = acked.lock().unwrap().len();
    wait_acked(n + 1000).await;
    for i in 50..60 {
        idle.send(ProducerMessage::new(format!("idle{i:03}"))).await.unwrap();
    }
    let (md, _) = LedgerClient::new(c.store.clone(), LedgerClientConfig::default())
        .metadata(LedgerId::new(idle_ledger).unwrap())
        .await
        .unwrap();
    assert_eq!(md.state, LedgerState::Closed, "the idle ledger was recovered");
    assert_eq!(md.last_entry, Some(49), "with every acknowledged entry");

    // Too few bookies would remain: three writable, ensembles of three.
    let out = c.admin(&["bookies", "decommission", &other]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot decommission") && err.contains("add a bookie first"),
        "{err}"
    );

    stop.store(true, Ordering::Release);
    prod.await.unwrap();
    let acked: Vec<String> = acked.lock().unwrap().clone();
    let deadline = Instant::now() + Duration::from_secs(120);
    while received.lock().unwrap().len() < acked.len() {
        assert!(
            Instant::now() < deadline,
            "received {} of {}",
            received.lock().unwrap().len(),
            acked.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cons.await.unwrap();
    let errors = errors.lock().unwrap().clone();
    assert!(errors.is_empty(), "client-visible errors: {errors:?}\n{}", c.logs());
    let received = received.lock().unwrap().clone();
    for m in &acked {
        assert!(received.contains(m), "{m} acknowledged but never delivered");
    }

    // The decommissioned bookie's data is not needed: kill it, delete it, read everything.
    let data = c.bookies[victim_index].data_dir.clone();
    c.bookies[victim_index].sigkill();
    std::fs::remove_dir_all(&data).unwrap();
    let reader = client
        .consumer(topic)
        .subscription("after")
        .subscription_type(SubscriptionType::Exclusive)
        .initial_position(strata_client::InitialPosition::Earliest)
        .subscribe()
        .await
        .unwrap();
    let mut again = BTreeSet::new();
    while again.len() < acked.len() {
        let m = tokio::time::timeout(Duration::from_secs(60), reader.receive())
            .await
            .expect("every message reads after the data directory is gone")
            .unwrap();
        reader.ack(&m).await.unwrap();
        again.insert(String::from_utf8_lossy(&m.payload).into_owned());
    }
    for m in &acked {
        assert!(again.contains(m), "{m} unreadable after the decommission");
    }
    let idle_reader = client
        .consumer(idle_topic)
        .subscription("after")
        .initial_position(strata_client::InitialPosition::Earliest)
        .subscribe()
        .await
        .unwrap();
    for i in 0..60 {
        let m = tokio::time::timeout(Duration::from_secs(60), idle_reader.receive())
            .await
            .expect("the idle topic reads")
            .unwrap();
        assert_eq!(m.payload, format!("idle{i:03}").as_bytes());
        idle_reader.ack(&m).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_separate_autorecovery_process_repairs_and_a_dead_bookie_can_be_decommissioned() {
    // Bookies without auto-recovery, a lost-bookie grace far beyond the test, and one
    // `strata autorecovery` process doing the work.
    let config = "session_ttl_ms = 5000\nautorecovery = false\n";
    let mut c = Cluster::start_with(4, "", config).await;
    let http = format!("127.0.0.1:{}", free_port());
    let log = c.dir.path().join("autorecovery.log");
    let _recovery = KillOnDrop(
        Command::new(STRATA)
            .args([
                "autorecovery",
                "--metadata-url",
                &c.etcd.url,
                "--audit-interval-secs",
                "1",
                "--lost-grace-secs",
                "3600",
                "--http-listen",
                &http,
            ])
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let client = LedgerClient::new(c.store.clone(), LedgerClientConfig::default());
    let mut ids = Vec::new();
    for _ in 0..3 {
        let w = client.create(3, 3, 2).await.unwrap();
        let id = w.id().get();
        for e in 0..2000 {
            w.append(payload(id, e, ENTRY_BYTES)).await.unwrap();
        }
        w.close().await.unwrap();
        ids.push(id);
    }
    let (md, _) = client.metadata(LedgerId::new(ids[0]).unwrap()).await.unwrap();
    let victim = md.fragments[0].bookies[0].clone();
    let v = c.bookies.iter().position(|b| b.addr == victim).unwrap();
    c.bookies[v].sigkill();
    c.wait_registered(3).await;

    // Lost, but far inside the grace: nothing moves until it is decommissioned.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !c.bookie_states().iter().any(|(a, s, _)| *a == victim && s == "lost") {
        assert!(Instant::now() < deadline, "the victim is never listed as lost");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!c.naming(&victim).await.is_empty());
    let out = c.admin_ok(&["bookies", "decommission", &victim, "--timeout-secs", "120"]);
    assert!(
        out.contains("is decommissioned"),
        "{out}\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(c.naming(&victim).await.is_empty());
    for id in &ids {
        let (md, _) = client.metadata(LedgerId::new(*id).unwrap()).await.unwrap();
        assert_eq!(verify_every_replica(*id, &md).await, 2000 * 3);
    }
    // The separate process did it: it is the auditor and copied the bytes.
    let (_, metrics) = http_get(&http, "/metrics").await.unwrap();
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    assert_eq!(value("strata_autorecovery_auditor"), 1.0, "{metrics}");
    assert!(value("strata_autorecovery_rereplicated_bytes_total") >= (2000 * ENTRY_BYTES) as f64);
}

/// A child process stopped (SIGKILL) when the test ends, also when it fails.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
