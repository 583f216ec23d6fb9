//! `tandem partitions list|ensure|retire|skew`: keep a target's partitions ready.

use std::path::PathBuf;
use std::process::ExitCode;

use tandem::config::Config;

use super::{config_error, load_config, one_shot, table_arg};

/// `tandem partitions`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
    /// TOML config file (its upstream and store settings are used).
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// Upstream connection string, overriding the file's.
    #[arg(long, global = true)]
    upstream: Option<String>,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Every partition with its bound, estimated rows and bytes.
    List {
        /// Legacy table (its rule's target is listed) or any partitioned table.
        #[arg(long)]
        table: String,
    },
    /// Create missing partitions: a LIST value (--value / --all-known) or months ahead.
    Ensure {
        /// Legacy table (its rule's target) or any partitioned table.
        #[arg(long)]
        table: String,
        /// LIST: the value to give a partition (rows already in DEFAULT move into it).
        #[arg(long, conflicts_with_all = ["all_known", "months_ahead"])]
        value: Option<String>,
        /// LIST: every value present in the legacy table.
        #[arg(long, conflicts_with = "months_ahead")]
        all_known: bool,
        /// RANGE monthly: months after the current one.
        #[arg(long)]
        months_ahead: Option<u32>,
    },
    /// Detach and drop monthly partitions older than N months (dry run unless --apply).
    Retire {
        /// Legacy table (its rule's target) or any partitioned table.
        #[arg(long)]
        table: String,
        /// Months to keep before the current one.
        #[arg(long)]
        older_than: u32,
        /// Do it; without this, only the plan is printed.
        #[arg(long)]
        apply: bool,
        /// Also delete the legacy table's rows of those months (row by row) when its rule keeps it equal to the target.
        #[arg(long)]
        allow_delete: bool,
    },
    /// Exact rows and bytes per partition, skew ratio, hot and empty partitions, verdict.
    Skew {
        /// Legacy table (its rule's target) or any partitioned table.
        #[arg(long)]
        table: String,
        /// Skew ratio (max / mean) from which the verdict is WARNING.
        #[arg(long, default_value_t = 2.0)]
        warn: f64,
        /// Skew ratio from which the verdict is REBALANCE.
        #[arg(long, default_value_t = 5.0)]
        rebalance: f64,
    },
}

/// Loads the config and runs the action.
pub fn main(args: Args) -> ExitCode {
    let config = match load_config(args.config, None, args.upstream) {
        Ok(c) => c,
        Err(e) => return config_error(&e),
    };
    partitions(config, args.action)
}

/// Runs `tandem partitions ...`.
fn partitions(config: Config, action: Action) -> ExitCode {
    use tandem::ops::partitions::{self, Ensure};
    let table = match &action {
        Action::List { table }
        | Action::Ensure { table, .. }
        | Action::Retire { table, .. }
        | Action::Skew { table, .. } => table.clone(),
    };
    let table = match table_arg(&table, "--table") {
        Ok(t) => t,
        Err(code) => return code,
    };
    let runtime = match one_shot() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let result: Result<(), partitions::PartitionsError> = runtime.block_on(async {
        match action {
            Action::List { .. } => {
                let (target, parts) = partitions::list(&config, &table).await?;
                println!("{target}: {} partitions", parts.len());
                for p in parts {
                    println!(
                        "{}{}  {}  ~{} rows  {} bytes",
                        "  ".repeat(p.level as usize),
                        p.name,
                        p.bound,
                        p.rows,
                        p.bytes
                    );
                }
            }
            Action::Ensure {
                value,
                all_known,
                months_ahead,
                ..
            } => {
                let what = match (value, all_known, months_ahead) {
                    (Some(v), _, _) => Ensure::Value(v),
                    (None, true, _) => Ensure::AllKnown,
                    (None, false, Some(n)) => Ensure::MonthsAhead(n),
                    _ => {
                        return Err(partitions::PartitionsError::Refused(
                            "give --value, --all-known or --months-ahead".into(),
                        ))
                    }
                };
                let created = partitions::ensure(&config, &table, what).await?;
                if created.is_empty() {
                    println!("nothing to create");
                }
                for c in created {
                    println!("created {c}");
                }
            }
            Action::Retire {
                older_than,
                apply,
                allow_delete,
                ..
            } => match partitions::retire(&config, &table, older_than, apply, allow_delete).await {
                Ok(plan) => print_retire(&plan, older_than, apply),
                Err(partitions::PartitionsError::RowDeleteNotAllowed(plan)) => {
                    print_retire(&plan, older_than, false);
                    return Err(partitions::PartitionsError::RowDeleteNotAllowed(plan));
                }
                Err(e) => return Err(e),
            },
            Action::Skew {
                warn, rebalance, ..
            } => {
                let (target, s) = partitions::skew(&config, &table, warn, rebalance).await?;
                println!(
                    "{target}: {} ({} partitions, mean {:.0} rows, skew {:.2})",
                    s.verdict,
                    s.partitions.len(),
                    s.mean,
                    s.ratio
                );
                for p in &s.partitions {
                    println!("  {}  {} rows  {} bytes", p.name, p.rows, p.bytes);
                }
                if !s.hot.is_empty() {
                    println!("hot: {}", s.hot.join(", "));
                }
                if !s.empty.is_empty() {
                    println!("empty: {}", s.empty.join(", "));
                }
                if !s.droppable.is_empty() {
                    println!(
                        "candidates to drop (empty, no legacy row within their bounds, before the current month; e.g. made by auto_partition for a write that rolled back):"
                    );
                    for d in &s.droppable {
                        println!("  {}", d.sql());
                    }
                }
            }
        }
        Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tandem: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The plan of `retire` (always printed), and what happened.
fn print_retire(plan: &tandem::ops::partitions::Retired, older_than: u32, apply: bool) {
    if plan.is_empty() {
        println!(
            "nothing to retire: {} has no partition and no row with {} before {} ({older_than} months ago){}; nothing changed",
            plan.target,
            plan.column,
            plan.cutoff,
            match &plan.legacy {
                Some(l) => format!(", nor has {l}"),
                None => String::new(),
            }
        );
        return;
    }
    println!(
        "retire from {}{} every row with {} before {} ({older_than} months ago):",
        plan.target,
        match &plan.legacy {
            Some(l) => format!(" and {l}"),
            None => String::new(),
        },
        plan.column,
        plan.cutoff
    );
    for step in &plan.steps {
        println!("  {step}");
    }
    let mut what = vec![format!("{} partitions dropped", plan.partitions.len())];
    if plan.target_rows > 0 {
        what.push(format!(
            "{} target rows outside them deleted row by row",
            plan.target_rows
        ));
    }
    if plan.legacy_rows > 0 {
        what.push(format!(
            "{} legacy rows deleted row by row",
            plan.legacy_rows
        ));
    }
    let how = if plan.applied {
        "done".to_string()
    } else if apply {
        "refused, nothing changed".to_string()
    } else if plan.deletes_rows() {
        "dry run, nothing changed (--apply --allow-delete to run it: it deletes rows one by one)"
            .to_string()
    } else {
        "dry run, nothing changed (--apply to run it)".to_string()
    };
    println!("{}: {how}", what.join(", "));
}
