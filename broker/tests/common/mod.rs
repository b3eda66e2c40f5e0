//! Shared by the broker's integration tests: bookies served in this process on loopback,
//! registered in an in-memory metadata store.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;
use strata_bookie::{BookieConfig, Storage};
use strata_meta::{MetadataStore, keys};
use tokio_util::sync::CancellationToken;

pub struct Bookies {
    pub store: Arc<dyn MetadataStore>,
    stop: CancellationToken,
    servers: Vec<tokio::task::JoinHandle<strata_bookie::Result<()>>>,
    _dirs: Vec<tempfile::TempDir>,
}

impl Bookies {
    /// Stops every bookie and waits until each flushed and closed its storage (RocksDB
    /// must not be torn down by process exit while its threads run).
    pub async fn shutdown(self) {
        self.stop.cancel();
        for s in self.servers {
            s.await.unwrap().unwrap();
        }
    }
}

/// Serves `n` bookies in this process, registered in a shared in-memory store.
pub async fn bookies(n: usize) -> Bookies {
    let store = strata_meta::connect("memory://").await.unwrap();
    let stop = CancellationToken::new();
    let mut dirs = Vec::new();
    let mut servers = Vec::new();
    for _ in 0..n {
        let dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let cfg = BookieConfig {
            data_dir: dir.path().to_path_buf(),
            ..BookieConfig::default()
        };
        let storage = Arc::new(
            tokio::task::spawn_blocking(move || Storage::open(cfg))
                .await
                .unwrap()
                .unwrap(),
        );
        tokio::spawn(strata_bookie::registration::keep_registered(
            store.clone(),
            storage.clone(),
            addr,
            Duration::from_secs(10),
            stop.clone(),
        ));
        servers.push(tokio::spawn(strata_bookie::service::serve(
            storage,
            listener,
            stop.clone(),
        )));
        dirs.push(dir);
    }
    // Wait (bounded) until all are registered.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.list(&keys::bookies_prefix()).await.unwrap().len() < n {
        assert!(std::time::Instant::now() < deadline, "bookies did not register");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Bookies {
        store,
        stop,
        servers,
        _dirs: dirs,
    }
}
