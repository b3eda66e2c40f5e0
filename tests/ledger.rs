//! Replicated ledgers end to end: a real etcd, real `strata bookie` processes registered in
//! it, and the ledger client — ensemble changes under SIGKILL, recovery and fencing,
//! concurrent recoveries, LAC-bounded and tailing reads, and bad input.

mod common;

use bytes::Bytes;
use common::{BookieProcess, payload};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use std::sync::Arc;
use std::time::{Duration, Instant};
use strata_bookie::ledger::{LedgerClient, LedgerClientConfig, LedgerState};
use strata_common::ErrorCode;
use strata_meta::testing::Etcd;
use strata_meta::{MetadataStore, keys};

/// Bookie configuration: a short session, so a SIGKILLed bookie leaves the registry soon,
/// but not so short that a bookie stalled on a loaded machine loses its registration
/// (keep-alives go every third of the TTL: 5 s rides out a stall of over 3 s).
const BOOKIE_CONFIG: &str = "session_ttl_ms = 5000\n";

struct Cluster {
    etcd: Etcd,
    store: Arc<dyn MetadataStore>,
    bookies: Vec<BookieProcess>,
    _dirs: Vec<tempfile::TempDir>,
}

impl Cluster {
    async fn start(n: usize) -> Self {
        Self::start_with(n, "").await
    }

    /// `n` bookies with `extra` added to their configuration.
    async fn start_with(n: usize, extra: &str) -> Self {
        let etcd = Etcd::start().await;
        let store = strata_meta::connect(&etcd.url).await.unwrap();
        let mut c = Cluster {
            etcd,
            store,
            bookies: Vec::new(),
            _dirs: Vec::new(),
        };
        for _ in 0..n {
            c.add_bookie_with(extra).await;
        }
        c
    }

    async fn add_bookie(&mut self) {
        self.add_bookie_with("").await
    }

    async fn add_bookie_with(&mut self, extra: &str) {
        let dir = tempfile::tempdir().unwrap();
        let config = format!("{BOOKIE_CONFIG}{extra}");
        let mut b = BookieProcess::start_with_args(dir.path(), &config, &["--metadata-url", &self.etcd.url]);
        b.ready().await;
        self._dirs.push(dir);
        self.bookies.push(b);
        let want = self.bookies.iter_mut().map(|b| b.is_running()).filter(|r| *r).count();
        self.wait_registered(want).await;
    }

    async fn wait_registered(&self, n: usize) {
        common::wait_registered(self.store.as_ref(), n).await;
    }

    fn client(&self) -> LedgerClient {
        LedgerClient::new(self.store.clone(), LedgerClientConfig::default())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_a_bookie_mid_stream_changes_the_ensemble_and_loses_nothing() {
    // Three bookies for E=3 plus one spare to replace the one we kill.
    let mut cluster = Cluster::start(4).await;
    let client = cluster.client();
    let writer = client.create(3, 3, 2).await.unwrap();
    let (md, _) = client.metadata(writer.id()).await.unwrap();
    let victim = md.fragments[0].bookies[1].clone();
    const N: u64 = 100_000;
    let mut inflight = FuturesUnordered::new();
    let mut acked = 0u64;
    let mut killed = false;
    for i in 0..N {
        let fut = writer.submit(payload(1, i, 100)).await.unwrap();
        inflight.push(async move { (i, fut.await) });
        while inflight.len() > 500 {
            let (i, r) = inflight.next().await.unwrap();
            assert_eq!(r.unwrap(), i, "entries are acknowledged with their own ids");
            acked += 1;
        }
        if i == N / 2 && !killed {
            let b = cluster.bookies.iter_mut().find(|b| b.addr == victim).unwrap();
            b.sigkill();
            killed = true;
        }
    }
    while let Some((i, r)) = inflight.next().await {
        assert_eq!(r.unwrap(), i);
        acked += 1;
    }
    assert_eq!(acked, N, "no append failed");
    assert_eq!(writer.close().await.unwrap(), Some(N - 1));
    let (md, _) = client.metadata(writer.id()).await.unwrap();
    assert_eq!(md.state, LedgerState::Closed);
    assert!(
        md.fragments.len() >= 2,
        "an ensemble change was recorded: {:?}",
        md.fragments
    );
    assert!(!md.last_fragment().bookies.contains(&victim));
    // Every entry is readable and byte-identical, from the surviving replicas.
    let reader = client.open(writer.id()).await.unwrap();
    let mut next = 0;
    while next < N {
        let last = (next + 5000).min(N) - 1;
        for e in reader.read(next, last).await.unwrap() {
            assert_eq!(e.payload, payload(1, e.entry, 100), "entry {} differs", e.entry);
        }
        next = last + 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_fences_the_old_writer_and_concurrent_recoveries_agree() {
    let cluster = Cluster::start(3).await;
    let old = cluster.client();
    let writer = old.create(3, 3, 2).await.unwrap();
    let id = writer.id();
    // The old writer streams appends and "dies" mid-stream: some are in flight when the
    // recovery starts.
    let mut last_acked = None;
    for i in 0..500u64 {
        last_acked = Some(writer.append(payload(2, i, 64)).await.unwrap());
    }
    let mut inflight = FuturesUnordered::new();
    for i in 500..700u64 {
        inflight.push(writer.submit(payload(2, i, 64)).await.unwrap());
    }
    // Two recoverers race.
    let (r1, r2) = (cluster.client(), cluster.client());
    let (a, b) = tokio::join!(r1.recover(id), r2.recover(id));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(a.is_closed() && b.is_closed());
    assert_eq!(a.last_readable(), b.last_readable(), "concurrent recoveries agree");
    let recovered = a.last_readable().unwrap();
    while let Some(r) = inflight.next().await {
        if let Ok(e) = r {
            last_acked = last_acked.max(Some(e));
        }
    }
    assert!(
        recovered >= last_acked.unwrap(),
        "recovered last entry {recovered} < acknowledged {last_acked:?}"
    );
    // Any add the old writer sends now fails: the ledger is fenced.
    let err = writer.append(Bytes::from_static(b"late")).await.unwrap_err();
    assert!(
        matches!(err.code(), ErrorCode::Fenced | ErrorCode::LedgerClosed),
        "{err}"
    );
    // And the bookies themselves refuse the old writer's token.
    let (md, _) = old.metadata(id).await.unwrap();
    for b in &md.last_fragment().bookies {
        let c = strata_bookie::client::BookieClient::connect(b).await.unwrap();
        let (tx, mut rx) = c.add_stream(md.token_bytes(), 1).await.unwrap();
        tx.send(vec![strata_bookie::client::NewEntry {
            ledger: id,
            entry: strata_common::EntryId::new(recovered + 1),
            payload: Bytes::from_static(b"late"),
            lac: None,
        }])
        .await
        .unwrap();
        let out = rx.next().await.unwrap().unwrap();
        assert_eq!(out[0].error.as_ref().map(|e| e.0), Some(ErrorCode::Fenced));
    }
    // Everything up to the recovered last entry reads back.
    let got = a.read(0, recovered).await.unwrap();
    assert_eq!(got.len() as u64, recovered + 1);
    for e in got {
        assert_eq!(e.payload, payload(2, e.entry, 64));
    }
    // Recovering a closed ledger again changes nothing.
    assert_eq!(
        cluster.client().recover(id).await.unwrap().last_readable(),
        Some(recovered)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_never_pass_the_lac_and_tailing_readers_follow_it() {
    let cluster = Cluster::start(3).await;
    let client = cluster.client();
    let writer = client.create(3, 2, 2).await.unwrap();
    for i in 0..10u64 {
        writer.append(payload(3, i, 32)).await.unwrap();
    }
    let mut reader = client.open(writer.id()).await.unwrap();
    // The LAC travels with the next add, so a reader sees at least up to entry 8.
    let limit = reader.last_readable().unwrap();
    assert!((8..=9).contains(&limit), "limit {limit}");
    assert_eq!(reader.read(0, limit).await.unwrap().len() as u64, limit + 1);
    let err = reader.read(0, limit + 1).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidArgument, "{err}");
    // A tailing reader waits (long-poll) and wakes when the writer confirms more. A poll
    // that is never woken returns after its full minute: anything much shorter was a
    // wake-up, however slow the machine.
    let poll = Duration::from_secs(60);
    let tail = tokio::spawn(async move {
        let t = Instant::now();
        let new = reader.wait_for_more(poll).await.unwrap();
        (new, t.elapsed(), reader)
    });
    // Gives the poll time to reach the bookies, so it is the wake-up that gets tested; a
    // poll that arrives after the appends answers at once, and the checks below still hold.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 10..20u64 {
        writer.append(payload(3, i, 32)).await.unwrap();
    }
    let (new, waited, reader) = tail.await.unwrap();
    assert!(new > Some(limit), "tailing reader saw the LAC advance");
    assert!(waited < poll / 2, "woken by the add, not the timeout ({waited:?})");
    let upto = new.unwrap();
    let got = reader.read(limit + 1, upto).await.unwrap();
    assert_eq!(got.last().unwrap().payload, payload(3, upto, 32));
    // Once closed, everything is readable.
    assert_eq!(writer.close().await.unwrap(), Some(19));
    let closed = client.open(writer.id()).await.unwrap();
    assert_eq!(closed.read(0, 19).await.unwrap().len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_errors() {
    let cluster = Cluster::start(3).await;
    let client = cluster.client();
    for (e, qw, qa, what) in [
        (2, 3, 2, "ensemble size"),
        (3, 1, 2, "write quorum"),
        (3, 3, 0, "ack quorum"),
    ] {
        let err = client.create(e, qw, qa).await.err().unwrap();
        assert_eq!(err.code(), ErrorCode::InvalidArgument);
        assert!(err.to_string().contains(what), "{err}");
    }
    let err = client.create(5, 3, 2).await.err().unwrap();
    assert_eq!(err.code(), ErrorCode::NotEnoughBookies);
    assert!(err.to_string().contains("5 needed, 3 available"), "{err}");
    let err = client
        .open(strata_common::LedgerId::new(424242).unwrap())
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), ErrorCode::NoSuchLedger);
    let writer = client.create(3, 3, 2).await.unwrap();
    writer.append(Bytes::from_static(b"x")).await.unwrap();
    writer.close().await.unwrap();
    let err = writer.append(Bytes::from_static(b"y")).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::LedgerClosed, "{err}");
    // Deleting removes metadata and bookie data.
    client.delete(writer.id()).await.unwrap();
    assert_eq!(
        client.open(writer.id()).await.err().unwrap().code(),
        ErrorCode::NoSuchLedger
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_every_bookie_would_refuse_fails_alone_and_changes_no_ensemble() {
    // Bookies accept entries of up to 64 KiB; one client is told so, one is not (a
    // misconfiguration: it believes in 1 MiB).
    let cluster = Cluster::start_with(3, "max_entry_bytes = 65536\n").await;
    let wrong = LedgerClient::new(
        cluster.store.clone(),
        LedgerClientConfig {
            max_entry_bytes: 1 << 20,
            ..LedgerClientConfig::default()
        },
    );
    let writer = wrong.create(2, 2, 2).await.unwrap();
    for e in 0..5u64 {
        assert_eq!(writer.append(payload(writer.id().get(), e, 100)).await.unwrap(), e);
    }
    let (before, _) = wrong.metadata(writer.id()).await.unwrap();
    // The bookies refuse the large entry: that append fails with their reason (a spare
    // bookie exists, but replacing one would be refused the same way) …
    let err = tokio::time::timeout(
        Duration::from_secs(30),
        writer.append(Bytes::from(vec![1u8; 100 << 10])),
    )
    .await
    .expect("a refused entry must fail, not be retried forever")
    .unwrap_err();
    assert_eq!(err.code(), ErrorCode::TooLarge, "{err}");
    // … and the writer stops (no later entry may complete past the refused one), without
    // changing its ensemble.
    let later = tokio::time::timeout(Duration::from_secs(30), writer.append(Bytes::from_static(b"later")))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(later.code(), ErrorCode::LedgerClosed, "{later}");
    let (after, _) = wrong.metadata(writer.id()).await.unwrap();
    assert_eq!(after.fragments, before.fragments, "no ensemble change");
    // Recovery closes the ledger where the confirmed entries end.
    let reader = cluster.client().recover(writer.id()).await.unwrap();
    assert_eq!(reader.last_readable(), Some(4));
    let entries = reader.read(0, 4).await.unwrap();
    assert_eq!(entries.len(), 5);

    // A client that knows the limit refuses the entry before giving it an id: only that
    // append fails, and the ledger goes on.
    let client = LedgerClient::new(
        cluster.store.clone(),
        LedgerClientConfig {
            max_entry_bytes: 65536,
            ..LedgerClientConfig::default()
        },
    );
    let writer = client.create(2, 2, 2).await.unwrap();
    assert_eq!(
        writer.append(Bytes::from(vec![2u8; 65536])).await.unwrap(),
        0,
        "exactly the limit"
    );
    let err = writer.append(Bytes::from(vec![2u8; 65537])).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::TooLarge, "{err}");
    assert_eq!(writer.append(Bytes::from_static(b"next")).await.unwrap(), 1);
    writer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookies_come_and_go_in_the_registry() {
    let mut cluster = Cluster::start(2).await;
    let bookies = cluster.store.list(&keys::bookies_prefix()).await.unwrap();
    let info = strata_bookie::registration::BookieInfo::decode(&bookies[0].1.value).unwrap();
    assert!(info.free_bytes > 0 && !info.read_only);
    // Graceful stop deregisters at once; SIGKILL after the session TTL.
    assert!(cluster.bookies[0].sigterm().success());
    cluster.wait_registered(1).await;
    cluster.add_bookie().await;
    cluster.bookies[1].sigkill();
    cluster.wait_registered(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_spare_bookie_a_restarted_bookie_gets_the_pending_entries_again() {
    // One bookie, E=Qw=Qa=1, as in standalone mode: nothing to replace it with.
    let mut cluster = Cluster::start(1).await;
    let client = cluster.client();
    let writer = client.create(1, 1, 1).await.unwrap();
    for i in 0..100u64 {
        writer.append(payload(5, i, 100)).await.unwrap();
    }
    let addr = cluster.bookies[0].addr.clone();
    cluster.bookies[0].sigkill();
    // Appends issued while the bookie is down complete once it is back.
    let mut inflight = FuturesUnordered::new();
    for i in 100..200u64 {
        inflight.push(writer.submit(payload(5, i, 100)).await.unwrap());
    }
    let dir = cluster._dirs[0].path().to_path_buf();
    let mut restarted = BookieProcess::start_at(&dir, BOOKIE_CONFIG, &["--metadata-url", &cluster.etcd.url], &addr);
    restarted.ready().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut done = 0;
    while let Some(r) = tokio::time::timeout_at(deadline.into(), inflight.next())
        .await
        .expect("appends resumed")
    {
        r.unwrap();
        done += 1;
    }
    assert_eq!(done, 100);
    assert_eq!(writer.close().await.unwrap(), Some(199));
    let reader = client.open(writer.id()).await.unwrap();
    let got = reader.read(0, 199).await.unwrap();
    assert_eq!(got.len(), 200);
    for e in got {
        assert_eq!(e.payload, payload(5, e.entry, 100));
    }
    cluster.bookies.push(restarted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_open_ledgers_on_one_bookie_all_make_progress() {
    // A broker with many topics keeps one add stream per open ledger and bookie: more
    // than one HTTP/2 connection carries (the bookie allows 256 streams each). Streams
    // beyond that must not wait for a slot until their adds time out.
    let cluster = Cluster::start(1).await;
    // Long, so that finishing in half of it separates "no stream stalled" (seconds, also on
    // a loaded machine) from "some stalled until the timeout" with a wide margin.
    let add_timeout = Duration::from_secs(300);
    let client = LedgerClient::new(
        cluster.store.clone(),
        LedgerClientConfig {
            add_timeout,
            ..LedgerClientConfig::default()
        },
    );
    let started = Instant::now();
    let writers: Vec<_> = futures_util::stream::iter(0..600u64)
        .map(|_| client.create(1, 1, 1))
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    // Every ledger's stream stays open while every other one appends.
    for round in 0..3u64 {
        let mut appends = FuturesUnordered::new();
        for (i, w) in writers.iter().enumerate() {
            appends.push(async move { w.append(payload(i as u64, round, 64)).await });
        }
        while let Some(r) = appends.next().await {
            assert_eq!(r.unwrap(), round);
        }
    }
    // Without enough connections the streams past the bookie's limit stall until the
    // add timeout replaces them; with them, everything is done long before.
    assert!(
        started.elapsed() < add_timeout / 2,
        "600 ledgers × 3 appends took {:?}",
        started.elapsed()
    );
    for w in &writers {
        assert_eq!(w.close().await.unwrap(), Some(2));
    }
}
