//! `strata perf`: the benchmark tool of BENCHMARK.md. Each workload prints a progress line
//! on stderr while it runs and its figures at the end; with `--json` the last stdout line
//! is one JSON object following BENCHMARK.md's output contract.

mod bookie;
mod consume;
mod e2e;
mod ledger;
mod produce;
mod report;
mod topics;

pub use report::random_pool;

use clap::{Args, Subcommand};

#[derive(Args)]
pub struct PerfArgs {
    #[command(subcommand)]
    command: PerfCommand,
}

#[derive(Subcommand)]
enum PerfCommand {
    /// B1: pipelined adds against one running bookie.
    Bookie(bookie::BookiePerfArgs),
    /// B1 across bookies: a replicated ledger (E/Qw/Qa) through the ledger client.
    Ledger(ledger::LedgerPerfArgs),
    /// W1: peak durable publish rate through a broker (`--rate` for a fixed load).
    Produce(produce::ProducePerfArgs),
    /// W4/W5: consumers drain a backlog from the earliest message.
    Consume(consume::ConsumePerfArgs),
    /// W2/W3: a producer and tailing subscriptions at once; end-to-end latency.
    E2e(e2e::E2ePerfArgs),
    /// W6: many topics, one slow producer each; latency and the servers' memory and CPU.
    Topics(topics::TopicsPerfArgs),
}

pub async fn run(args: PerfArgs) -> anyhow::Result<()> {
    match args.command {
        PerfCommand::Bookie(a) => bookie::run(a).await,
        PerfCommand::Ledger(a) => ledger::run(a).await,
        PerfCommand::Produce(a) => produce::run(a).await,
        PerfCommand::Consume(a) => consume::run(a).await,
        PerfCommand::E2e(a) => e2e::run(a).await,
        PerfCommand::Topics(a) => topics::run(a).await,
    }
}
