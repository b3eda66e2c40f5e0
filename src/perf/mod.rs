//! `strata perf`: the benchmark tool of BENCHMARK.md. Each workload prints a progress line
//! on stderr while it runs and its figures at the end; with `--json` the last stdout line
//! is one JSON object following BENCHMARK.md's output contract.

mod bookie;
mod report;

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
}

pub async fn run(args: PerfArgs) -> anyhow::Result<()> {
    match args.command {
        PerfCommand::Bookie(a) => bookie::run(a).await,
    }
}
