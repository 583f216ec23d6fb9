//! `tandem init`: create the partitioned target from the legacy definition, and its rule.

use std::process::ExitCode;

use super::{one_shot, table_arg, Conn};

/// `tandem init`.
#[derive(clap::Args)]
pub struct Args {
    /// Legacy table.
    #[arg(long)]
    table: String,
    /// Target table (default <table>_v2).
    #[arg(long)]
    target: Option<String>,
    /// list(<col>) | hash(<col>) <N> | range(<col>) monthly [months-ahead N] | list(<col>) range(<col>) monthly [months-ahead N]
    #[arg(long)]
    partition_by: String,
    /// No DEFAULT partition.
    #[arg(long)]
    no_default: bool,
    /// Print the DDL, create nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    conn: Conn,
}

/// Checks the arguments, creates (or prints) the target, and prints the DDL and index parity. `Err`: an exit before the work starts
/// (bad arguments or config).
pub fn run(args: Args) -> Result<ExitCode, ExitCode> {
    let config = args.conn.load()?;
    let table = table_arg(&args.table, "--table")?;
    let target = args
        .target
        .as_deref()
        .map(|t| table_arg(t, "--target"))
        .transpose()?;
    let layout = match tandem::ops::init::Layout::parse(&args.partition_by) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("tandem: --partition-by: {e}");
            return Err(ExitCode::from(2));
        }
    };
    let options = tandem::ops::init::Options {
        table,
        target,
        layout,
        no_default: args.no_default,
        dry_run: args.dry_run,
    };
    let runtime = one_shot()?;
    Ok(
        match runtime.block_on(tandem::ops::init::run(&config, &options)) {
            Ok(report) => {
                for statement in &report.ddl {
                    println!("{statement}");
                }
                println!("-- index parity:");
                for line in &report.index_parity {
                    println!("--   {line}");
                }
                if !report.foreign_keys.is_empty() {
                    println!(
                        "-- foreign keys referencing {} (target_only is refused until each is re-pointed):",
                        options.table
                    );
                    for line in &report.foreign_keys {
                        println!("--   {line}");
                    }
                }
                if report.applied {
                    println!(
                    "-- created {} and added its rule (mode off, key {}); next: tandem rules set {} --mode dual_write",
                    report.target,
                    report.key.join(", "),
                    options.table
                );
                    if let Some(guard) = &report.guard {
                        println!(
                            "-- guard {guard}; from dual_write on it catches writes made around the proxy: \
                             after each mode switch SHOW RULES must say guard_state = in place (docs/dual-write.md, The guard)"
                        );
                    }
                } else {
                    println!("-- dry run: nothing was created");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("tandem: {e}");
                ExitCode::FAILURE
            }
        },
    )
}
