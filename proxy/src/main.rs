//! The `tandem` command: parses the command line and hands each subcommand to its module in
//! [`cli`]; the work itself is in the `tandem` library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;

#[derive(Parser)]
#[command(
    name = "tandem",
    version,
    about = "PostgreSQL proxy for zero-downtime table migrations"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Serve(cli::serve::Args),
    /// Start a throwaway local Postgres with a sample schema and run the proxy in front of it.
    Demo(cli::demo::Args),
    /// Show or change migration rules through a running proxy's admin console.
    Rules(cli::rules::Args),
    /// Copy the legacy rows dual-write has not copied yet, in resumable batches.
    Backfill(cli::backfill::Args),
    /// Compare legacy and target tables in one snapshot and say whether each is ready for cutover.
    Parity(cli::parity::Args),
    /// Create the partitioned target from the legacy table's definition, and its rule (mode off).
    Init(cli::init::Args),
    /// List, create or inspect a target's partitions.
    Partitions(cli::partitions::Args),
    /// Remove one scope from the legacy table and its target (dry run unless --apply).
    Purge(cli::purge::Args),
    /// Validate a config file and exit (0 when valid, 2 when not).
    CheckConfig(cli::serve::CheckArgs),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve(args) => cli::serve::main(args),
        Command::Demo(args) => cli::demo::main(args),
        Command::Rules(args) => cli::rules::main(args),
        Command::Backfill(args) => cli::backfill::run(args).unwrap_or_else(|code| code),
        Command::Parity(args) => cli::parity::run(args).unwrap_or_else(|code| code),
        Command::Init(args) => cli::init::run(args).unwrap_or_else(|code| code),
        Command::Partitions(args) => cli::partitions::main(args),
        Command::Purge(args) => cli::purge::run(args).unwrap_or_else(|code| code),
        Command::CheckConfig(args) => cli::serve::check(args),
    }
}
