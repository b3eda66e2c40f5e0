//! `strata standalone`: a bookie, a broker and the embedded metadata store in one process,
//! with data under one directory. For laptops and tests; the same code runs as a cluster.

use anyhow::Context;
use clap::Args;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use strata_bookie::ledger::{LedgerClient, LedgerClientConfig};
use strata_bookie::{BookieConfig, Storage};
use strata_broker::broker::Broker;
use strata_broker::config::BrokerSettings;
use tokio_util::sync::CancellationToken;

#[derive(Args)]
pub struct StandaloneArgs {
    /// Where metadata, journal, entry logs and index live.
    #[arg(long, default_value = "./data", env = "STRATA_DATA_DIR")]
    data_dir: PathBuf,
    /// Address clients connect to.
    #[arg(long, default_value = "127.0.0.1:6650", env = "STRATA_LISTEN")]
    listen: String,
    /// TOML file with `[broker]` and `[bookie]` settings (docs/configuration.md).
    #[arg(long, env = "STRATA_CONFIG")]
    config: Option<PathBuf>,
    /// Also serve `/healthz`, `/readyz` and `/metrics` (Prometheus) over HTTP here, e.g.
    /// 127.0.0.1:8080 (off by default).
    #[arg(long, env = "STRATA_HTTP_LISTEN")]
    http_listen: Option<String>,
}

/// The configuration file of `strata standalone`.
#[derive(Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
struct StandaloneConfig {
    broker: BrokerSettings,
    /// The embedded bookie; its data directory and address are chosen by standalone.
    bookie: BookieConfig,
    /// Tiered offload to object storage (off unless `url` is set).
    offload: strata_broker::offload::OffloadSettings,
    /// TLS of the client port (the embedded bookie stays on loopback, in plain text).
    tls: strata_net::tls::TlsSettings,
    /// Token authentication of the client port (off unless `enabled`).
    auth: strata_net::auth::AuthSettings,
}

fn load_config(path: Option<&std::path::Path>) -> anyhow::Result<StandaloneConfig> {
    let Some(path) = path else {
        return Ok(StandaloneConfig::default());
    };
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))
}

pub async fn run(args: StandaloneArgs) -> anyhow::Result<()> {
    let config = load_config(args.config.as_deref())?;
    // Checked before anything starts, so a bad file fails fast and names the setting.
    config
        .broker
        .to_config(String::new(), (1, 1, 1))
        .map_err(anyhow::Error::msg)?;
    let offload = config.offload.build().map_err(anyhow::Error::msg)?;
    config.tls.validate().map_err(|e| anyhow::anyhow!("[tls]: {e}"))?;
    if config.bookie.tls != strata_net::tls::TlsSettings::default() {
        anyhow::bail!(
            "[bookie.tls] is not used in standalone mode (its bookie is internal, on loopback); set [tls] for the client port"
        );
    }
    if config.bookie.auth != strata_net::auth::AuthSettings::default() {
        anyhow::bail!(
            "[bookie.auth] is not used in standalone mode (its bookie is internal, not on the network); set [auth] for the client port"
        );
    }
    let tls = match config.tls.server_files() {
        Some(files) => Some(strata_net::server::ServerTls::load(files).map_err(anyhow::Error::msg)?),
        None => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let http_tls = crate::http::tls(&config.tls)?;
    let auth = config.auth.verifier().map_err(|e| anyhow::anyhow!("[auth]: {e}"))?;
    if config.broker.ensemble_size.is_some_and(|n| n != 1) {
        anyhow::bail!("broker.ensemble_size must be 1 in standalone mode (one bookie)");
    }
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create the data directory {}", args.data_dir.display()))?;
    let data_dir = args.data_dir.canonicalize()?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {} (is another Strata running?)", args.listen))?;
    let http = match &args.http_listen {
        Some(addr) => Some(crate::http::bind(addr).await?),
        None => None,
    };
    let store = strata_meta::connect(&format!("local://{}", data_dir.join("meta").display()))
        .await
        .context("opening the embedded metadata store")?;

    // The bookie, on an internal loopback port. Ledger metadata names bookies by address,
    // so the port chosen on first start is kept in the data directory and reused.
    let bookie_listener = bind_bookie(&data_dir).await?;
    let bookie_addr = bookie_listener.local_addr()?.to_string();
    let bookie_cfg = BookieConfig {
        data_dir: data_dir.join("bookie"),
        listen: bookie_addr.clone(),
        ..config.bookie
    };
    bookie_cfg
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid [bookie] configuration: {e}"))?;
    let bookie_max_entry_bytes = bookie_cfg.max_entry_bytes;
    let storage = Arc::new(
        tokio::task::spawn_blocking(move || Storage::open(bookie_cfg))
            .await?
            .context("opening the bookie's storage")?,
    );
    let bookie_stop = CancellationToken::new();
    tokio::spawn(strata_bookie::registration::keep_registered(
        store.clone(),
        storage.clone(),
        bookie_addr.clone(),
        Duration::from_secs(10),
        bookie_stop.clone(),
    ));
    let bookie = tokio::spawn(strata_bookie::service::serve(
        storage,
        bookie_listener,
        bookie_stop.clone(),
    ));
    // Wait until the bookie is registered, so the first topic can create its ledger.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while store
        .list(&strata_meta::keys::bookies_prefix())
        .await?
        .iter()
        .all(|(k, _)| !k.ends_with(&bookie_addr))
    {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the bookie did not register in time"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let mut broker_cfg = config
        .broker
        .to_config(format!("{scheme}://{}", listener.local_addr()?), (1, 1, 1))
        .map_err(anyhow::Error::msg)?;
    broker_cfg.ledger.offload = offload;
    // The broker never appends an entry its bookie would refuse (MESSAGE_TOO_LARGE instead).
    let client = LedgerClient::new(
        store.clone(),
        LedgerClientConfig {
            max_entry_bytes: bookie_max_entry_bytes,
            ..LedgerClientConfig::default()
        },
    );
    let broker = Broker::new(broker_cfg, store.clone(), client).await?;
    broker.ensure_namespace("public", "default").await?;
    let stop = CancellationToken::new();
    crate::bookie_cmd::spawn_signal_handler(stop.clone())?;
    let http_stop = CancellationToken::new();
    if let Some(http) = http {
        tracing::info!(http = %http.local_addr()?, "serving /healthz, /readyz and /metrics");
        let probes = Arc::new(crate::broker_cmd::BrokerProbes(broker.clone()));
        tokio::spawn(crate::http::serve(http, probes, http_stop.clone(), http_tls));
    }
    tracing::info!(listen = %listener.local_addr()?, data_dir = %data_dir.display(), "Strata standalone ready");
    let served = strata_broker::service::serve_with(
        broker,
        listener,
        stop,
        strata_broker::service::ServeOptions { tls, auth },
    )
    .await;
    http_stop.cancel();
    served?;
    bookie_stop.cancel();
    bookie.await?.context("stopping the bookie")?;
    tracing::info!("Strata standalone stopped cleanly");
    Ok(())
}

/// Binds the standalone bookie's port: the one recorded in `<data>/bookie.address`, or a
/// free one on first start (then recorded).
async fn bind_bookie(data_dir: &std::path::Path) -> anyhow::Result<tokio::net::TcpListener> {
    let file = data_dir.join("bookie.address");
    if let Ok(addr) = std::fs::read_to_string(&file) {
        let addr = addr.trim();
        return tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!(
                "cannot listen on {addr}, the internal bookie address recorded in {} (its ledgers name it); free that port",
                file.display()
            )
        });
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, listener.local_addr()?.to_string())?;
    std::fs::rename(&tmp, &file)?;
    Ok(listener)
}
