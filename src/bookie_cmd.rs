//! `strata bookie`: run a bookie, or `strata bookie inspect` its data directory.

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use strata_bookie::BookieConfig;
use tokio_util::sync::CancellationToken;

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BookieArgs {
    #[command(subcommand)]
    command: Option<BookieCommand>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum BookieCommand {
    /// Print what is in the journal, entry logs and index, verifying every checksum.
    /// Exits 1 if anything is damaged.
    Inspect {
        /// The bookie's data directory.
        #[arg(long, env = "STRATA_BOOKIE_DATA_DIR")]
        data_dir: PathBuf,
    },
}

#[derive(Args)]
struct RunArgs {
    /// TOML file with bookie settings (see docs/bookie.md); flags and STRATA_BOOKIE_*
    /// variables override it.
    #[arg(long, env = "STRATA_BOOKIE_CONFIG")]
    config: Option<PathBuf>,
    /// Directory for the journal, entry logs and index [default: ./data/bookie].
    #[arg(long, env = "STRATA_BOOKIE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Address to serve gRPC on [default: 127.0.0.1:3181].
    #[arg(long, env = "STRATA_BOOKIE_LISTEN")]
    listen: Option<String>,
    /// Register in this metadata store: etcd://host:port[,host:port…], local:///path or
    /// memory://. Without it the bookie runs unregistered.
    #[arg(long, env = "STRATA_METADATA_URL")]
    metadata_url: Option<String>,
    /// Address published in the registry for clients [default: the --listen address].
    #[arg(long, env = "STRATA_BOOKIE_ADVERTISED_ADDRESS")]
    advertised_address: Option<String>,
    /// Serve /healthz, /readyz and /metrics on this address (off unless given).
    #[arg(long, env = "STRATA_BOOKIE_HTTP_LISTEN")]
    http_listen: Option<String>,
    /// Truncate a damaged journal at the first bad record instead of refusing to start.
    /// Entries after the damage are lost: inspect first.
    #[arg(long)]
    repair: bool,
}

pub async fn run(args: BookieArgs) -> anyhow::Result<()> {
    match args.command {
        Some(BookieCommand::Inspect { data_dir }) => inspect(data_dir),
        None => serve(args.run).await,
    }
}

fn inspect(data_dir: PathBuf) -> anyhow::Result<()> {
    if !data_dir.is_dir() {
        bail!(
            "{} is not a directory; pass the bookie's --data-dir",
            data_dir.display()
        );
    }
    let report =
        strata_bookie::inspect::inspect(&data_dir).with_context(|| format!("inspecting {}", data_dir.display()))?;
    print!("{}", report.text);
    if report.problems.is_empty() {
        println!("all checksums verified");
        Ok(())
    } else {
        for p in &report.problems {
            println!("PROBLEM: {p}");
        }
        bail!("{} problem(s) found in {}", report.problems.len(), data_dir.display())
    }
}

async fn serve(args: RunArgs) -> anyhow::Result<()> {
    let mut cfg = match &args.config {
        Some(path) => BookieConfig::from_toml_file(path).map_err(anyhow::Error::msg)?,
        None => BookieConfig::default(),
    };
    if let Some(d) = args.data_dir {
        cfg.data_dir = d;
    }
    if let Some(l) = args.listen {
        cfg.listen = l;
    }
    cfg.repair |= args.repair;
    if args.metadata_url.is_some() {
        cfg.metadata_url = args.metadata_url;
    }
    if args.advertised_address.is_some() {
        cfg.advertised_address = args.advertised_address;
    }
    cfg.validate()
        .map_err(|e| anyhow::anyhow!("invalid bookie configuration: {e}"))?;
    strata_net::client::set_outgoing(strata_net::client::Outgoing {
        token: cfg.auth.own_token().map_err(anyhow::Error::msg)?,
        ..cfg.tls.outgoing().map_err(anyhow::Error::msg)?
    });
    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {} (is another process using it?)", cfg.listen))?;
    let shutdown = CancellationToken::new();
    spawn_signal_handler(shutdown.clone())?;
    let recovery_metrics = std::sync::Arc::new(strata_bookie::autorecovery::Metrics::default());
    // Opened once, for the bookie and its probes (an embedded local:// store can only be
    // opened once per process).
    let store = match &cfg.metadata_url {
        Some(url) => Some(
            strata_meta::connect(url)
                .await
                .with_context(|| format!("metadata store {url}"))?,
        ),
        None => None,
    };
    if let Some(addr) = &args.http_listen {
        let http = crate::http::bind(addr).await?;
        let store = store.clone();
        let probes = BookieProbes {
            listen: cfg.listen.clone(),
            advertised: cfg.advertised_address.clone().unwrap_or_else(|| cfg.listen.clone()),
            store,
            recovery: recovery_metrics.clone(),
            journal: cfg.journal_metrics.clone(),
        };
        let tls = crate::http::tls(&cfg.tls)?;
        tokio::spawn(crate::http::serve(
            http,
            std::sync::Arc::new(probes),
            shutdown.clone(),
            tls,
        ));
    }
    tracing::info!(data_dir = %cfg.data_dir.display(), listen = %cfg.listen, journal_sync = cfg.journal_sync, "starting bookie");
    strata_bookie::run_with_store(cfg, listener, shutdown, recovery_metrics, store)
        .await
        .context("bookie failed")
}

/// Cancels `token` on SIGTERM or SIGINT.
pub fn spawn_signal_handler(token: CancellationToken) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down gracefully"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down gracefully"),
        }
        token.cancel();
    });
    Ok(())
}

/// Probes of a bookie: ready once it accepts connections and (with a metadata store) is
/// registered; metrics from its registration (disk space, read-only).
struct BookieProbes {
    listen: String,
    advertised: String,
    store: Option<std::sync::Arc<dyn strata_meta::MetadataStore>>,
    recovery: std::sync::Arc<strata_bookie::autorecovery::Metrics>,
    journal: std::sync::Arc<strata_bookie::journal::JournalMetrics>,
}

impl BookieProbes {
    async fn registration(&self) -> Result<Option<strata_bookie::registration::BookieInfo>, String> {
        let Some(store) = &self.store else { return Ok(None) };
        match store.get(&strata_meta::keys::bookie(&self.advertised)).await {
            Ok(Some(v)) => serde_json::from_slice(&v.value).map(Some).map_err(|e| e.to_string()),
            Ok(None) => Err("not registered in the metadata store (yet)".into()),
            Err(e) => Err(e.to_string()),
        }
    }
}

impl crate::http::Probes for BookieProbes {
    fn ready(&self) -> futures_util::future::BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let addr = self.listen.replace("0.0.0.0:", "127.0.0.1:");
            tokio::net::TcpStream::connect(&addr)
                .await
                .map_err(|e| format!("not accepting connections on {addr}: {e}"))?;
            self.registration().await.map(drop)
        })
    }

    fn metrics(&self) -> futures_util::future::BoxFuture<'_, String> {
        Box::pin(async move {
            let mut w = strata_common::metrics::TextWriter::default();
            let ready = self.ready().await.is_ok();
            w.gauge(
                "strata_bookie_ready",
                "1 while the bookie serves and is registered.",
                f64::from(u8::from(ready)),
            );
            if let Ok(Some(info)) = self.registration().await {
                w.gauge(
                    "strata_bookie_read_only",
                    "1 while the bookie refuses writes.",
                    f64::from(u8::from(info.read_only)),
                );
                w.gauge(
                    "strata_bookie_disk_free_bytes",
                    "Free bytes on the data disk.",
                    info.free_bytes as f64,
                );
                w.gauge(
                    "strata_bookie_disk_total_bytes",
                    "Size of the data disk.",
                    info.total_bytes as f64,
                );
            }
            self.recovery.write(&mut w);
            self.journal.write(&mut w);
            w.process();
            w.finish()
        })
    }
}

/// `strata autorecovery`: an auditor candidate and a replication worker outside any bookie
/// (BookKeeper's separate auto-recovery daemon), for clusters that run bookies with
/// `autorecovery = false`.
#[derive(Args)]
pub struct AutoRecoveryArgs {
    /// The cluster's metadata store: etcd://host:port[,host:port…].
    #[arg(long, env = "STRATA_METADATA_URL")]
    metadata_url: String,
    /// A bookie TOML file whose `autorecovery_*` and `max_entry_bytes` settings apply
    /// (docs/bookie.md); the flags below override it.
    #[arg(long, env = "STRATA_BOOKIE_CONFIG")]
    config: Option<PathBuf>,
    /// Seconds a named bookie may stay unregistered before its ledgers are re-replicated.
    #[arg(long)]
    lost_grace_secs: Option<u64>,
    /// Seconds between audits.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    audit_interval_secs: Option<u64>,
    /// Copy rate limit in bytes per second (0: unlimited).
    #[arg(long)]
    max_bytes_per_sec: Option<u64>,
    /// Serve /healthz, /readyz and /metrics on this address (off unless given).
    #[arg(long, env = "STRATA_HTTP_LISTEN")]
    http_listen: Option<String>,
}

pub async fn autorecovery(args: AutoRecoveryArgs) -> anyhow::Result<()> {
    let mut cfg = match &args.config {
        Some(path) => BookieConfig::from_toml_file(path).map_err(anyhow::Error::msg)?,
        None => BookieConfig::default(),
    };
    if let Some(v) = args.lost_grace_secs {
        cfg.autorecovery_lost_grace_secs = v;
    }
    if let Some(v) = args.audit_interval_secs {
        cfg.autorecovery_audit_interval_secs = v;
    }
    if let Some(v) = args.max_bytes_per_sec {
        cfg.autorecovery_max_bytes_per_sec = v;
    }
    cfg.validate()
        .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    strata_net::client::set_outgoing(strata_net::client::Outgoing {
        token: cfg.auth.own_token().map_err(anyhow::Error::msg)?,
        ..cfg.tls.outgoing().map_err(anyhow::Error::msg)?
    });
    let store = strata_meta::connect(&args.metadata_url)
        .await
        .with_context(|| format!("metadata store {}", args.metadata_url))?;
    let id = format!(
        "autorecovery@{}:{}",
        std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into()),
        std::process::id()
    );
    let shutdown = CancellationToken::new();
    spawn_signal_handler(shutdown.clone())?;
    let metrics = std::sync::Arc::new(strata_bookie::autorecovery::Metrics::default());
    if let Some(addr) = &args.http_listen {
        let http = crate::http::bind(addr).await?;
        let probes = RecoveryProbes {
            store: store.clone(),
            metrics: metrics.clone(),
        };
        let tls = crate::http::tls(&cfg.tls)?;
        tokio::spawn(crate::http::serve(
            http,
            std::sync::Arc::new(probes),
            shutdown.clone(),
            tls,
        ));
    }
    let ledgers = strata_bookie::ledger::LedgerClient::new(
        store.clone(),
        strata_bookie::ledger::LedgerClientConfig {
            max_entry_bytes: cfg.max_entry_bytes,
            ..Default::default()
        },
    );
    tracing::info!(%id, "auto-recovery running");
    let tasks = strata_bookie::autorecovery::spawn(store, ledgers, cfg.autorecovery_config(&id), metrics, shutdown);
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}

struct RecoveryProbes {
    store: std::sync::Arc<dyn strata_meta::MetadataStore>,
    metrics: std::sync::Arc<strata_bookie::autorecovery::Metrics>,
}

impl crate::http::Probes for RecoveryProbes {
    fn ready(&self) -> futures_util::future::BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            self.store
                .get(&strata_meta::keys::auditor())
                .await
                .map(drop)
                .map_err(|e| format!("metadata store: {e}"))
        })
    }

    fn metrics(&self) -> futures_util::future::BoxFuture<'_, String> {
        Box::pin(async move {
            let mut w = strata_common::metrics::TextWriter::default();
            self.metrics.write(&mut w);
            w.process();
            w.finish()
        })
    }
}
