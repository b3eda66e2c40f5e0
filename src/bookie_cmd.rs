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
    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {} (is another process using it?)", cfg.listen))?;
    let shutdown = CancellationToken::new();
    spawn_signal_handler(shutdown.clone())?;
    tracing::info!(data_dir = %cfg.data_dir.display(), listen = %cfg.listen, journal_sync = cfg.journal_sync, "starting bookie");
    strata_bookie::run(cfg, listener, shutdown)
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
