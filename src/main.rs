//! `strata`: the one binary. Parses the command line, installs logging, and hands over to
//! the libraries; no server logic lives here.

mod admin_cmd;
mod bookie_cmd;
mod broker_cmd;
mod client_cmd;
mod conn_args;
mod http;
mod logging;
mod operator_cmd;
mod perf;
mod standalone;
mod token_cmd;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "strata", version, about = "Strata: durable message streaming and queuing")]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = logging::LogFormat::Text, env = "STRATA_LOG_FORMAT")]
    log_format: logging::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a broker, a bookie and the embedded metadata store in one process.
    Standalone(standalone::StandaloneArgs),
    /// Publish messages (arguments, stdin lines, or generated) and wait for every receipt.
    Produce(client_cmd::ProduceArgs),
    /// Subscribe and print each message payload, one per line.
    Consume(client_cmd::ConsumeArgs),
    /// Manage tenants, namespaces, topics and subscriptions.
    Admin(admin_cmd::AdminArgs),
    /// Run a broker of a cluster (topics, ownership, dispatch) against etcd.
    Broker(broker_cmd::BrokerArgs),
    /// Run a bookie (ledger storage node), or inspect a bookie's data directory.
    Bookie(bookie_cmd::BookieArgs),
    /// Re-replicate the ledgers of lost and decommissioned bookies (an auditor candidate
    /// and a worker; bookies run the same unless `autorecovery = false`).
    Autorecovery(bookie_cmd::AutoRecoveryArgs),
    /// The Kubernetes operator (StrataCluster, Topic and Subscription resources); `crdgen`
    /// prints its CRDs.
    Operator(operator_cmd::OperatorArgs),
    /// Make and check authentication tokens (JWT) for brokers with `[auth]` on.
    Token(token_cmd::TokenArgs),
    /// Benchmarks (BENCHMARK.md): bookie, ledger, produce (W1), e2e (W2/W3), consume (W4/W5), topics (W6).
    Perf(perf::PerfArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Standalone(args) => standalone::run(args).await,
            Command::Produce(args) => client_cmd::produce(args).await,
            Command::Consume(args) => client_cmd::consume(args).await,
            Command::Admin(args) => admin_cmd::run(args).await,
            Command::Broker(args) => broker_cmd::run(args).await,
            Command::Bookie(args) => bookie_cmd::run(args).await,
            Command::Autorecovery(args) => bookie_cmd::autorecovery(args).await,
            Command::Operator(args) => operator_cmd::run(args).await,
            Command::Perf(args) => perf::run(args).await,
            Command::Token(args) => token_cmd::run(args),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
