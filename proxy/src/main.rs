//! The `tandem` command: `serve` runs the proxy, `demo` runs it against a throwaway Postgres.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tandem::config::Config;
use tandem::Proxy;
use tokio::net::TcpListener;

mod demo;

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
    Serve {
        /// TOML config file (see docs/config.md); defaults apply without one.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Listen address, overriding the file's `listen`.
        #[arg(long)]
        listen: Option<String>,
        /// Upstream connection string, overriding the file's `upstream`.
        #[arg(long)]
        upstream: Option<String>,
        /// Session threads, overriding the file's `workers` (0 = one per CPU, 1 = one event loop for everything).
        #[arg(long)]
        workers: Option<usize>,
    },
    /// Start a throwaway local Postgres with a sample schema and run the proxy in front of it.
    Demo {
        /// Listen address for the proxy.
        #[arg(long, default_value = "127.0.0.1:6432")]
        listen: String,
    },
    /// Show or change migration rules through a running proxy's admin console.
    Rules {
        /// Admin console URL, e.g. postgres://admin:secret@127.0.0.1:6432/tandem.
        #[arg(long, env = "TANDEM_ADMIN_URL", global = true, hide_env_values = true)]
        admin: Option<String>,
        #[command(subcommand)]
        action: RulesAction,
    },
    /// Copy the legacy rows dual-write has not copied yet, in resumable batches.
    Backfill {
        /// Legacy table (`orders`, `public.orders`); its rule must be in dual_write or later.
        #[arg(long)]
        table: String,
        /// Rows per batch.
        #[arg(long, default_value_t = 5000)]
        batch_size: i64,
        /// Stop after this many batches (0 = no cap); run again to continue.
        #[arg(long, default_value_t = 0)]
        max_batches: u64,
        /// Only rows matching this SQL predicate (one tenant or scope); it has its own cursor.
        #[arg(long = "where")]
        predicate: Option<String>,
        /// Pause between batches (ms).
        #[arg(long, default_value_t = 0)]
        throttle_ms: u64,
        /// Print the plan (estimated rows, batches, SQL) and write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Start over, even after a finished run.
        #[arg(long)]
        restart: bool,
        /// TOML config file (its upstream and store settings are used).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Upstream connection string, overriding the file's.
        #[arg(long)]
        upstream: Option<String>,
    },
    /// Compare legacy and target tables in one snapshot and say whether each is ready for cutover.
    Parity {
        /// Tables to check (repeatable); default: every rule not in off.
        #[arg(long = "table")]
        tables: Vec<String>,
        /// Exit 1 when any readiness check fails.
        #[arg(long)]
        strict: bool,
        /// Smallest acceptable mean shadow-read overlap.
        #[arg(long, default_value_t = 0.95)]
        min_overlap: f64,
        /// Shadow-read samples needed for the overlap check (0 skips the check).
        #[arg(long, default_value_t = 20)]
        min_samples: i64,
        /// Example keys shown per kind of mismatch.
        #[arg(long, default_value_t = 20)]
        sample_limit: usize,
        /// Folder for <run_id>/summary.json and report.html.
        #[arg(long, default_value = "artifacts/parity")]
        out: PathBuf,
        /// stdout format.
        #[arg(long, default_value = "table", value_parser = ["table", "json"])]
        format: String,
        /// TOML config file (its upstream and store settings are used).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Upstream connection string, overriding the file's.
        #[arg(long)]
        upstream: Option<String>,
    },
    /// Create the partitioned target from the legacy table's definition, and its rule (mode off).
    Init {
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
        /// TOML config file (its upstream and store settings are used).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Upstream connection string, overriding the file's.
        #[arg(long)]
        upstream: Option<String>,
    },
    /// List, create or inspect a target's partitions.
    Partitions {
        #[command(subcommand)]
        action: PartitionsAction,
        /// TOML config file (its upstream and store settings are used).
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        /// Upstream connection string, overriding the file's.
        #[arg(long, global = true)]
        upstream: Option<String>,
    },
    /// Remove one scope from the legacy table and its target (dry run unless --apply).
    Purge {
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
        /// TOML config file (its upstream and store settings are used).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Upstream connection string, overriding the file's.
        #[arg(long)]
        upstream: Option<String>,
    },
    /// Validate a config file and exit (0 when valid, 2 when not).
    CheckConfig {
        /// TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum PartitionsAction {
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

#[derive(Subcommand)]
enum RulesAction {
    /// SHOW RULES.
    List,
    /// ADD RULE: start migrating a table (mode off unless --mode says otherwise).
    Add {
        /// Legacy table (`orders`, `public.orders`).
        table: String,
        /// Target table (default `<table>_v2`).
        #[arg(long)]
        target: Option<String>,
        /// Key columns, comma-separated (default: the legacy primary key plus the target's partition key).
        #[arg(long, value_delimiter = ',')]
        key: Vec<String>,
        /// Initial mode.
        #[arg(long)]
        mode: Option<String>,
    },
    /// SET RULE: change a rule's mode or sample rate.
    Set {
        /// Legacy table.
        table: String,
        /// New mode: off, dual_write, union_read, cutover, target_only.
        #[arg(long, conflicts_with = "sample", required_unless_present = "sample")]
        mode: Option<String>,
        /// Leave target_only anyway.
        #[arg(long, requires = "mode")]
        force: bool,
        /// Share of reads sampled for shadow comparison, 0..1.
        #[arg(long)]
        sample: Option<f64>,
    },
    /// DROP RULE.
    Drop {
        /// Legacy table.
        table: String,
        /// Drop a rule in target_only anyway.
        #[arg(long)]
        force: bool,
    },
    /// RELOAD: re-read the store on that instance now.
    Reload,
}

impl RulesAction {
    /// The console command for this action.
    fn command(&self) -> String {
        match self {
            RulesAction::List => "SHOW RULES".into(),
            RulesAction::Add {
                table,
                target,
                key,
                mode,
            } => {
                let mut c = format!("ADD RULE {table}");
                if let Some(t) = target {
                    c.push_str(&format!(" TARGET {t}"));
                }
                if !key.is_empty() {
                    c.push_str(&format!(" KEY ({})", key.join(", ")));
                }
                if let Some(m) = mode {
                    c.push_str(&format!(" MODE {m}"));
                }
                c
            }
            RulesAction::Set {
                table,
                mode: Some(mode),
                force,
                ..
            } => format!(
                "SET RULE {table} MODE {mode}{}",
                if *force { " FORCE" } else { "" }
            ),
            RulesAction::Set {
                table,
                sample: Some(rate),
                ..
            } => format!("SET RULE {table} SAMPLE {rate}"),
            RulesAction::Set { table, .. } => format!("SET RULE {table}"),
            RulesAction::Drop { table, force } => {
                format!("DROP RULE {table}{}", if *force { " FORCE" } else { "" })
            }
            RulesAction::Reload => "RELOAD".into(),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            config,
            listen,
            upstream,
            workers,
        } => {
            let mut config = match load_config(config, listen, upstream) {
                Ok(c) => c,
                Err(e) => return config_error(&e),
            };
            if let Some(w) = workers {
                config.workers = w;
            }
            init_logging(&config.log_level);
            run(async move { serve(config).await })
        }
        Command::CheckConfig { config } => match Config::load(&config) {
            Ok(_) => {
                println!("{}: ok", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => config_error(&e),
        },
        Command::Rules { admin, action } => {
            let Some(admin) = admin else {
                eprintln!("tandem: give --admin <url> or set TANDEM_ADMIN_URL");
                return ExitCode::from(2);
            };
            let command = action.command();
            let runtime = match one_shot() {
                Ok(r) => r,
                Err(code) => return code,
            };
            let result = runtime.block_on(tandem::admin::cli::run(&admin, &command));
            match result {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("tandem: {}", e.message);
                    if let Some(hint) = e.hint {
                        eprintln!("hint: {hint}");
                    }
                    ExitCode::FAILURE
                }
            }
        }
        Command::Backfill {
            table,
            batch_size,
            max_batches,
            predicate,
            throttle_ms,
            dry_run,
            restart,
            config,
            upstream,
        } => {
            let config = match load_config(config, None, upstream) {
                Ok(c) => c,
                Err(e) => return config_error(&e),
            };
            let table = match table_arg(&table, "--table") {
                Ok(t) => t,
                Err(code) => return code,
            };
            let options = tandem::backfill::Options {
                table,
                batch_size,
                max_batches,
                predicate,
                throttle: std::time::Duration::from_millis(throttle_ms),
                dry_run,
                restart,
            };
            backfill(config, options)
        }
        Command::Parity {
            tables,
            strict,
            min_overlap,
            min_samples,
            sample_limit,
            out,
            format,
            config,
            upstream,
        } => {
            let config = match load_config(config, None, upstream) {
                Ok(c) => c,
                Err(e) => return config_error(&e),
            };
            let mut names = Vec::new();
            for t in &tables {
                match table_arg(t, "--table") {
                    Ok(name) => names.push(name),
                    Err(code) => return code,
                }
            }
            let options = tandem::parity::Options {
                tables: names,
                min_overlap,
                min_samples,
                sample_limit,
            };
            parity(config, options, strict, &out, &format)
        }
        Command::Init {
            table,
            target,
            partition_by,
            no_default,
            dry_run,
            config,
            upstream,
        } => {
            let config = match load_config(config, None, upstream) {
                Ok(c) => c,
                Err(e) => return config_error(&e),
            };
            let name = |t: &str| {
                tandem_rules::TableName::parse(t).map(|mut n| {
                    if n.schema.is_none() {
                        n.schema = Some(tandem_rules::rule::DEFAULT_SCHEMA.to_string());
                    }
                    n
                })
            };
            let (table, target) = match (name(&table), target.as_deref().map(name).transpose()) {
                (Ok(t), Ok(g)) => (t, g),
                (Err(e), _) | (_, Err(e)) => {
                    eprintln!("tandem: {e}");
                    return ExitCode::from(2);
                }
            };
            let layout = match tandem::init::Layout::parse(&partition_by) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("tandem: --partition-by: {e}");
                    return ExitCode::from(2);
                }
            };
            let options = tandem::init::Options {
                table,
                target,
                layout,
                no_default,
                dry_run,
            };
            let runtime = match one_shot() {
                Ok(r) => r,
                Err(code) => return code,
            };
            let result = runtime.block_on(tandem::init::run(&config, &options));
            match result {
                Ok(report) => {
                    for statement in &report.ddl {
                        println!("{statement}");
                    }
                    println!("-- index parity:");
                    for line in &report.index_parity {
                        println!("--   {line}");
                    }
                    if report.applied {
                        println!(
                            "-- created {} and added its rule (mode off, key {}); next: tandem rules set {} --mode dual_write",
                            report.target,
                            report.key.join(", "),
                            options.table
                        );
                    } else {
                        println!("-- dry run: nothing was created");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("tandem: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Partitions {
            action,
            config,
            upstream,
        } => {
            let config = match load_config(config, None, upstream) {
                Ok(c) => c,
                Err(e) => return config_error(&e),
            };
            partitions(config, action)
        }
        Command::Purge {
            table,
            scope,
            mode,
            apply,
            fail_on_delete,
            batch_size,
            config,
            upstream,
        } => {
            let config = match load_config(config, None, upstream) {
                Ok(c) => c,
                Err(e) => return config_error(&e),
            };
            let table = match table_arg(&table, "--table") {
                Ok(t) => t,
                Err(code) => return code,
            };
            let (column, value) = match tandem::purge::parse_scope(&scope) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("tandem: --where: {e}");
                    return ExitCode::from(2);
                }
            };
            let mode = match mode.as_str() {
                "partition" => tandem::purge::PurgeMode::Partition,
                "delete" => tandem::purge::PurgeMode::Delete,
                _ => tandem::purge::PurgeMode::Auto,
            };
            let options = tandem::purge::Options {
                table,
                column,
                value,
                mode,
                apply,
                fail_on_delete,
                batch_size,
            };
            let runtime = match one_shot() {
                Ok(r) => r,
                Err(code) => return code,
            };
            let result = runtime.block_on(tandem::purge::run(&config, &options));
            match result {
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
            }
        }
        Command::Demo { listen } => {
            init_logging("info");
            run(async move { demo::run(listen).await })
        }
    }
}

/// Runs `tandem backfill`: a progress line on a terminal, log lines otherwise, a report.
fn backfill(config: Config, options: tandem::backfill::Options) -> ExitCode {
    use std::io::{IsTerminal, Write};
    use tandem::backfill::{progress_line, Outcome};
    let runtime = match one_shot() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let terminal = std::io::stderr().is_terminal();
    let mut last_line = std::time::Instant::now();
    let mut on_progress = |p: &tandem::backfill::Progress| {
        if terminal {
            eprint!("\r{}   ", progress_line(p));
            let _ = std::io::stderr().flush();
        } else if last_line.elapsed() >= std::time::Duration::from_secs(5) {
            eprintln!("{}", progress_line(p));
            last_line = std::time::Instant::now();
        }
    };
    let result = runtime.block_on(tandem::backfill::run(&config, &options, &mut on_progress));
    if terminal {
        eprintln!();
    }
    match result {
        Ok(Outcome::Plan(plan)) => {
            println!("table:          {}", options.table);
            println!("estimated rows: {}", plan.estimated_rows);
            println!(
                "batches:        {} (batch size {})",
                plan.batches, options.batch_size
            );
            match &plan.resume_after {
                Some(c) => println!("resumes after:  ({})", c.join(", ")),
                None => println!("starts at:      the first key"),
            }
            println!("each batch runs (with $1 = the cursor):\n{}", plan.sql);
            println!("dry run: nothing was written");
            ExitCode::SUCCESS
        }
        Ok(Outcome::AlreadyFinished {
            finished_at,
            copied,
        }) => {
            println!(
                "backfill of {} already finished at {finished_at} ({copied} rows copied); nothing to do (--restart to run it again)",
                options.table
            );
            ExitCode::SUCCESS
        }
        Ok(outcome @ (Outcome::Finished(_) | Outcome::Paused(_))) => {
            let finished = matches!(outcome, Outcome::Finished(_));
            let (Outcome::Finished(report) | Outcome::Paused(report)) = outcome else {
                return ExitCode::FAILURE;
            };
            let p = &report.progress;
            println!("{}", progress_line(p));
            println!(
                "backfill of {}: {} ({}{}); this run: {} copied, {} already present, {} batches, {:.1} s; all runs: {} copied, {} already present",
                options.table,
                if finished { "finished" } else { "paused at --max-batches" },
                if report.resumed { "resumed" } else { "fresh start" },
                if finished { "" } else { "; run again to continue" },
                p.copied,
                p.skipped,
                p.batches,
                p.elapsed.as_secs_f64(),
                report.total_copied,
                report.total_skipped
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tandem: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `tandem parity`: prints the report, writes summary.json and report.html.
fn parity(
    config: Config,
    options: tandem::parity::Options,
    strict: bool,
    out: &std::path::Path,
    format: &str,
) -> ExitCode {
    let runtime = match one_shot() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let report = match runtime.block_on(tandem::parity::run(&config, &options)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tandem: {e}");
            return ExitCode::from(2);
        }
    };
    if format == "json" {
        match serde_json::to_string_pretty(&report) {
            Ok(j) => println!("{j}"),
            Err(e) => eprintln!("tandem: {e}"),
        }
    } else {
        print!("{}", tandem::parity::text(&report));
    }
    match tandem::parity::write(&report, out) {
        Ok(dir) => eprintln!("tandem: report written to {}", dir.display()),
        Err(e) => eprintln!(
            "tandem: cannot write the report under {}: {e}",
            out.display()
        ),
    }
    if strict && !report.ready {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Runs `tandem partitions ...`.
fn partitions(config: Config, action: PartitionsAction) -> ExitCode {
    use tandem::partitions::{self, Ensure};
    let table = match &action {
        PartitionsAction::List { table }
        | PartitionsAction::Ensure { table, .. }
        | PartitionsAction::Retire { table, .. }
        | PartitionsAction::Skew { table, .. } => table.clone(),
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
            PartitionsAction::List { .. } => {
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
            PartitionsAction::Ensure {
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
            PartitionsAction::Retire {
                older_than,
                apply,
                allow_delete,
                ..
            } => {
                let r =
                    partitions::retire(&config, &table, older_than, apply, allow_delete).await?;
                if r.steps.is_empty() {
                    println!("no partition older than {older_than} months");
                }
                for step in &r.steps {
                    println!("  {step}");
                }
                println!(
                    "{} partitions{}: {}",
                    r.partitions.len(),
                    if r.legacy_rows > 0 {
                        format!(", {} legacy rows", r.legacy_rows)
                    } else {
                        String::new()
                    },
                    if r.applied {
                        "done"
                    } else {
                        "dry run: nothing changed (--apply to run it)"
                    }
                );
            }
            PartitionsAction::Skew {
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

/// A table name from the command line; a bare name is in `public`, as in the config.
fn table_arg(text: &str, flag: &str) -> Result<tandem_rules::TableName, ExitCode> {
    match tandem_rules::TableName::parse(text) {
        Ok(mut t) => {
            if t.schema.is_none() {
                t.schema = Some(tandem_rules::rule::DEFAULT_SCHEMA.to_string());
            }
            Ok(t)
        }
        Err(e) => {
            eprintln!("tandem: {flag}: {e}");
            Err(ExitCode::from(2))
        }
    }
}

/// For one-shot commands whose output may go to `head` and the like: a closed stdout ends
/// the process quietly, as for any Unix tool, instead of a panic in `println!`. (Rust
/// ignores SIGPIPE by default; `serve` keeps it that way, its sockets need EPIPE.)
fn quiet_on_closed_stdout() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: restoring the default disposition installs no Rust handler.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}

/// The runtime a one-shot command (backfill, parity, ...) runs on.
fn one_shot() -> Result<tokio::runtime::Runtime, ExitCode> {
    quiet_on_closed_stdout();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("tandem: cannot start runtime: {e}");
            ExitCode::FAILURE
        })
}

fn config_error(e: &tandem::config::ConfigError) -> ExitCode {
    eprintln!("tandem: bad config: {e}");
    ExitCode::from(2)
}

fn load_config(
    path: Option<PathBuf>,
    listen: Option<String>,
    upstream: Option<String>,
) -> Result<Config, tandem::config::ConfigError> {
    let mut config = match &path {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    if let Some(l) = listen {
        config.listen = l;
    }
    if let Some(u) = upstream {
        config.upstream = u;
    }
    config.validate()?;
    Ok(config)
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
}

/// Runs `fut` on a single-threaded runtime: it accepts connections and runs side tasks;
/// sessions run on the worker pool (see `tandem::workers`) unless `workers = 1`.
fn run(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let built = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let runtime = match built {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tandem: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tandem: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let addr = config.listen_addr()?;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let proxy = Proxy::new(config).await?;
    proxy.serve(listener, shutdown_signal()).await?;
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the process still stops on the default action.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
