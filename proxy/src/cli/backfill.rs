//! `tandem backfill`: copy the legacy rows dual-write has not copied yet.

use std::process::ExitCode;

use tandem::config::Config;

use super::{one_shot, table_arg, Conn};

/// `tandem backfill`.
#[derive(clap::Args)]
pub struct Args {
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
    #[command(flatten)]
    conn: Conn,
}

/// Checks the arguments and runs the backfill. `Err`: an exit before the work starts
/// (bad arguments or config).
pub fn run(args: Args) -> Result<ExitCode, ExitCode> {
    let config = args.conn.load()?;
    let table = table_arg(&args.table, "--table")?;
    let options = tandem::ops::backfill::Options {
        table,
        batch_size: args.batch_size,
        max_batches: args.max_batches,
        predicate: args.predicate,
        throttle: std::time::Duration::from_millis(args.throttle_ms),
        dry_run: args.dry_run,
        restart: args.restart,
    };
    Ok(backfill(config, options))
}

/// Runs `tandem backfill`: a progress line on a terminal, log lines otherwise, a report.
fn backfill(config: Config, options: tandem::ops::backfill::Options) -> ExitCode {
    use std::io::{IsTerminal, Write};
    use tandem::ops::backfill::{progress_line, Outcome};
    let runtime = match one_shot() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let terminal = std::io::stderr().is_terminal();
    let mut last_line = std::time::Instant::now();
    let mut on_progress = |p: &tandem::ops::backfill::Progress| {
        if terminal {
            eprint!("\r{}   ", progress_line(p));
            let _ = std::io::stderr().flush();
        } else if last_line.elapsed() >= std::time::Duration::from_secs(5) {
            eprintln!("{}", progress_line(p));
            last_line = std::time::Instant::now();
        }
    };
    let result = runtime.block_on(tandem::ops::backfill::run(
        &config,
        &options,
        &mut on_progress,
    ));
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
