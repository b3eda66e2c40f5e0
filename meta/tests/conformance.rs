//! One conformance suite, run against every metadata store: a real etcd server (started
//! here on free loopback ports), the embedded RocksDB store, and the in-memory store.

use bytes::Bytes;
use std::sync::Arc;
use std::time::{Duration, Instant};
use strata_meta::testing::Etcd;
use strata_meta::{Condition, MetaError, MetadataStore, WatchEvent, connect};

async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn next_event(w: &mut strata_meta::Watch) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .expect("watch event in time")
        .expect("watch open")
}

/// The whole suite against one store.
async fn conformance(store: Arc<dyn MetadataStore>) {
    let b = |s: &str| Bytes::copy_from_slice(s.as_bytes());

    // Versions change on every write; get returns the latest.
    assert_eq!(store.get("/t/a").await.unwrap(), None);
    let v1 = store.put("/t/a", b("1"), Condition::Any).await.unwrap();
    let v2 = store.put("/t/a", b("2"), Condition::Any).await.unwrap();
    assert!(v2 > v1 && v1 > 0);
    let got = store.get("/t/a").await.unwrap().unwrap();
    assert_eq!((got.value, got.version), (b("2"), v2));

    // Compare-and-set conflicts.
    assert_eq!(
        store.put("/t/a", b("x"), Condition::Absent).await,
        Err(MetaError::BadVersion("/t/a".into()))
    );
    assert_eq!(
        store.put("/t/a", b("x"), Condition::Version(v1)).await,
        Err(MetaError::BadVersion("/t/a".into()))
    );
    let v3 = store.put("/t/a", b("3"), Condition::Version(v2)).await.unwrap();
    assert!(store.put("/t/new", b("n"), Condition::Absent).await.is_ok());
    assert!(matches!(
        store.put("/t/missing", b("x"), Condition::Version(v3)).await,
        Err(MetaError::BadVersion(_))
    ));
    // Two writers racing on the same version: exactly one wins.
    let (r1, r2) = tokio::join!(
        store.put("/t/a", b("w1"), Condition::Version(v3)),
        store.put("/t/a", b("w2"), Condition::Version(v3))
    );
    assert_eq!(r1.is_ok() as u8 + r2.is_ok() as u8, 1, "{r1:?} {r2:?}");

    // Deletes, conditional and not.
    let cur = store.get("/t/a").await.unwrap().unwrap().version;
    assert!(matches!(
        store.delete("/t/a", Condition::Version(v1)).await,
        Err(MetaError::BadVersion(_))
    ));
    assert!(store.delete("/t/a", Condition::Version(cur)).await.unwrap());
    assert!(!store.delete("/t/a", Condition::Any).await.unwrap());
    assert_eq!(store.get("/t/a").await.unwrap(), None);

    // List by prefix: sorted, and nothing outside the prefix.
    for k in ["/l/b", "/l/a", "/l/c/d", "/lx"] {
        store.put(k, b(k), Condition::Any).await.unwrap();
    }
    let keys: Vec<String> = store.list("/l/").await.unwrap().into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, vec!["/l/a", "/l/b", "/l/c/d"]);

    // Watches see every change under the prefix, in order, and nothing else.
    let mut w = store.watch("/w/").await.unwrap();
    let pv = store.put("/w/1", b("a"), Condition::Any).await.unwrap();
    store.put("/other", b("z"), Condition::Any).await.unwrap();
    store.delete("/w/1", Condition::Any).await.unwrap();
    store.put("/w/2", b("b"), Condition::Any).await.unwrap();
    assert_eq!(
        next_event(&mut w).await,
        WatchEvent::Put {
            key: "/w/1".into(),
            value: b("a"),
            version: pv
        }
    );
    assert_eq!(next_event(&mut w).await, WatchEvent::Delete { key: "/w/1".into() });
    assert!(matches!(next_event(&mut w).await, WatchEvent::Put { key, .. } if key == "/w/2"));

    // Ephemeral keys live with their session; expiry deletes them and is an event. Keep-alives
    // go every third of the TTL, so a TTL of 4 s rides out a stall of over 2 s of a loaded
    // machine (2 s left 1.3 s).
    let ttl = Duration::from_secs(4);
    let session = store.session(ttl).await.unwrap();
    store
        .put_ephemeral(&session, "/w/eph", b("e"), Condition::Absent)
        .await
        .unwrap();
    assert!(matches!(next_event(&mut w).await, WatchEvent::Put { key, .. } if key == "/w/eph"));
    // Kept alive, it outlives its TTL.
    tokio::time::sleep(ttl * 3 / 2).await;
    assert!(
        store.get("/w/eph").await.unwrap().is_some(),
        "a kept-alive session must not expire"
    );
    assert!(!session.is_lost());
    let started = Instant::now();
    session.stop_keepalive();
    tokio::time::timeout(Duration::from_secs(20), session.lost())
        .await
        .expect("session loss is reported");
    eventually("ephemeral key deleted", async || {
        store.get("/w/eph").await.unwrap().is_none()
    })
    .await;
    // At least the TTL less the keep-alive interval after the last keep-alive.
    assert!(started.elapsed() >= ttl / 2, "expired before its TTL");
    assert_eq!(next_event(&mut w).await, WatchEvent::Delete { key: "/w/eph".into() });
    assert_eq!(
        store.put_ephemeral(&session, "/w/eph2", b("e"), Condition::Any).await,
        Err(MetaError::SessionLost)
    );

    // Closing a session deletes its keys at once.
    let s2 = store.session(Duration::from_secs(30)).await.unwrap();
    store.put_ephemeral(&s2, "/e/x", b("x"), Condition::Any).await.unwrap();
    s2.close();
    eventually("closed session's key deleted", async || {
        store.get("/e/x").await.unwrap().is_none()
    })
    .await;

    // Guarded writes: only while the guard key is at its version (an ownership key).
    let s3 = store.session(Duration::from_secs(30)).await.unwrap();
    let owned = store
        .put_ephemeral(&s3, "/g/owner", b("me"), Condition::Absent)
        .await
        .unwrap();
    let guard = strata_meta::Guard {
        key: "/g/owner".into(),
        version: owned,
    };
    let g1 = store
        .put_guarded("/g/state", b("1"), Condition::Absent, &guard)
        .await
        .unwrap();
    let g2 = store
        .put_guarded("/g/state", b("2"), Condition::Version(g1), &guard)
        .await
        .unwrap();
    assert_eq!(
        store
            .put_guarded("/g/state", b("x"), Condition::Version(g1), &guard)
            .await,
        Err(MetaError::BadVersion("/g/state".into())),
        "the key's own condition still applies"
    );
    s3.close();
    eventually("the guard's session ended", async || {
        store.get("/g/owner").await.unwrap().is_none()
    })
    .await;
    assert_eq!(
        store
            .put_guarded("/g/state", b("x"), Condition::Version(g2), &guard)
            .await,
        Err(MetaError::GuardChanged("/g/owner".into())),
        "the guard is gone"
    );
    // Re-created by someone else: a new version, so the old guard still fails.
    store.put("/g/owner", b("other"), Condition::Absent).await.unwrap();
    assert_eq!(
        store.put_guarded("/g/state", b("x"), Condition::Any, &guard).await,
        Err(MetaError::GuardChanged("/g/owner".into()))
    );
    assert_eq!(store.get("/g/state").await.unwrap().unwrap().value, b("2"));

    // Bad input.
    assert!(matches!(
        store.get("no-slash").await,
        Err(MetaError::InvalidArgument(_))
    ));
    assert!(matches!(
        store.session(Duration::from_millis(10)).await,
        Err(MetaError::InvalidArgument(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_memory() {
    conformance(connect("memory://").await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_embedded_rocksdb() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("local://{}", dir.path().join("meta").display());
    conformance(connect(&url).await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_etcd() {
    let etcd = Etcd::start().await;
    conformance(connect(&etcd.url).await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_survives_restart_without_its_ephemeral_keys() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("local://{}", dir.path().join("meta").display());
    let version = {
        let store = connect(&url).await.unwrap();
        let s = store.session(Duration::from_secs(30)).await.unwrap();
        store
            .put_ephemeral(&s, "/eph", Bytes::from_static(b"e"), Condition::Any)
            .await
            .unwrap();
        store
            .put("/keep", Bytes::from_static(b"k"), Condition::Any)
            .await
            .unwrap()
    };
    let store = connect(&url).await.unwrap();
    let got = store.get("/keep").await.unwrap().unwrap();
    assert_eq!((got.value, got.version), (Bytes::from_static(b"k"), version));
    assert_eq!(store.get("/eph").await.unwrap(), None);
    // Versions keep increasing across restarts (CAS on an old version still fails).
    let v = store
        .put("/keep", Bytes::from_static(b"k2"), Condition::Version(version))
        .await
        .unwrap();
    assert!(v > version);
}

#[tokio::test]
async fn bad_urls_are_explained() {
    for url in ["etcd://", "local://relative", "zk://x", ""] {
        match connect(url).await {
            Err(MetaError::InvalidArgument(msg)) => assert!(msg.contains("URL"), "{msg}"),
            Err(e) => panic!("{url}: unexpected {e}"),
            Ok(_) => panic!("{url}: accepted"),
        }
    }
}
