//! `tandem purge`: remove one scope from the legacy table and its target.

use std::process::ExitCode;

use tandem::ops::purge::{self, PurgeMode};

use super::{one_shot, table_arg, Conn};

/// `tandem purge`.
#[derive(clap::Args)]
pub struct Args {
    /// Legacy table.
    #[arg(long)]
    table: String,
    /// The scope: <column> = <value>.
    #[arg(long = "where")]
    scope: String,
    /// auto (partitions when possible, else batched deletes), partition, or delete.
    #[arg(long, default_value = "auto", value_parser = ["auto", "partition", "delete"])]
    mode: String,
    /// Do it; without this, only the plan is printed.
    #[arg(long)]
    apply: bool,
    /// Refuse plans that delete row by row.
    #[arg(long)]
    fail_on_delete: bool,
    /// Rows per delete batch.
    #[arg(long, default_value_t = 5000)]
    batch_size: i64,
    #[command(flatten)]
    conn: Conn,
}

/// Checks the arguments and prints (or carries out) the purge plan. `Err`: an exit before the work starts
/// (bad arguments or config).
pub fn run(args: Args) -> Result<ExitCode, ExitCode> {
    let config = args.conn.load()?;
    let table = table_arg(&args.table, "--table")?;
    let (column, value) = match purge::parse_scope(&args.scope) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tandem: --where: {e}");
            return Err(ExitCode::from(2));
        }
    };
    let mode = match args.mode.as_str() {
        "partition" => PurgeMode::Partition,
        "delete" => PurgeMode::Delete,
        _ => PurgeMode::Auto,
    };
    let options = purge::Options {
        table,
        column,
        value,
        mode,
        apply: args.apply,
        fail_on_delete: args.fail_on_delete,
        batch_size: args.batch_size,
    };
    let runtime = one_shot()?;
    Ok(match runtime.block_on(purge::run(&config, &options)) {
        Ok(report) => {
            println!(
                "scope {} = {}: {} legacy rows, {} target rows",
                options.column, options.value, report.legacy_rows, report.target_rows
            );
            for step in &report.steps {
                println!("  {step}");
            }
            println!(
                "{}",
                if report.applied {
                    "done"
                } else {
                    "dry run: nothing changed (--apply to run it)"
                }
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tandem: {e}");
            ExitCode::FAILURE
        }
    })
}
