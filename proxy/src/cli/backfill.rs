//! `tandem backfill`: copy the legacy rows dual-write has not copied yet; with `--reverse`,
//! re-sync the legacy table from the target after leaving `target_only`.

use std::process::ExitCode;

use tandem::config::Config;
use tandem::ops::backfill::{Direction, Options};

use super::{one_shot, table_arg, Conn};

/// `tandem backfill`.
#[derive(clap::Args)]
pub struct Args {
    /// Legacy table (`orders`, `public.orders`); its rule must be in dual_write or later.
    #[arg(long)]
    table: String,
    /// Copy the other way, target -> legacy: the re-sync the legacy table needs after the
    /// rule left target_only (SET RULE ... MODE cutover FORCE). Runs in cutover only;
    /// upserts every target row into legacy and deletes legacy rows the target lacks.
    #[arg(long, conflicts_with = "predicate")]
    reverse: bool,
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
    /// After the last batch, wait at most this long (`90s`, `5m`, `1h`; a bare number is
    /// seconds) for sessions holding snapshots older than the copies; then exit 1 naming
    /// them, the pending re-checks kept for the next run. Default: as long as it takes.
    #[arg(long, value_parser = parse_duration)]
    max_wait: Option<std::time::Duration>,
    /// Copy with this many workers in parallel, each on its own connection: the rows left
    /// are split once into as many key ranges, each resumable on its own. Several
    /// processes (or machines) running the same command share the run: each takes the
    /// ranges nobody holds. Not with --reverse.
    #[arg(long, default_value_t = 1, conflicts_with = "reverse")]
    jobs: usize,
    /// How often (`10s`, `1m`; a bare number is seconds) a whole-table run publishes on the
    /// rule the key up to which it has copied every row (`backfilled_to`, the watermark),
    /// so union reads take those rows from the target alone; also once when its copying
    /// stops. Each publication is a rule change every proxy instance reloads. 0: never.
    #[arg(long, value_parser = parse_duration, default_value = "10")]
    watermark_every: std::time::Duration,
    #[command(flatten)]
    conn: Conn,
}

/// Checks the arguments and runs the backfill. `Err`: an exit before the work starts
/// (bad arguments or config).
pub fn run(args: Args) -> Result<ExitCode, ExitCode> {
    let config = args.conn.load()?;
    let table = table_arg(&args.table, "--table")?;
    // Warnings that do not stop the run (a watermark that could not be published).
    super::init_logging("warn", tandem::config::LogFormat::Text);
    let options = Options {
        direction: if args.reverse {
            Direction::Reverse
        } else {
            Direction::Forward
        },
        batch_size: args.batch_size,
        max_batches: args.max_batches,
        predicate: args.predicate,
        throttle: std::time::Duration::from_millis(args.throttle_ms),
        dry_run: args.dry_run,
        restart: args.restart,
        max_wait: args.max_wait,
        jobs: args.jobs,
        watermark_every: args.watermark_every,
        ..Options::new(table)
    };
    Ok(backfill(config, options))
}

/// `90s`, `5m`, `1h`, `1500ms`, or a bare number of seconds.
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration: write e.g. 90s, 5m or 1h"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?}: use ms, s, m or h"
            ))
        }
    };
    std::time::Duration::try_from_secs_f64(seconds)
        .map_err(|_| format!("{text:?} is not a duration: write e.g. 90s, 5m or 1h"))
}

/// What the run says as it goes: its start, progress (redrawn on a terminal; otherwise the
/// first batch at once and then a line every 5 s), and every report of what its re-checks
/// wait for.
struct Narrator {
    terminal: bool,
    /// When a progress line was last printed (not on a terminal).
    last_line: Option<std::time::Instant>,
    /// A redrawn line is on screen (a new line must start before other output).
    redrawing: bool,
}

impl Narrator {
    fn event(&mut self, event: &tandem::ops::backfill::Event<'_>, options: &Options) {
        use std::io::Write;
        use tandem::ops::backfill::{progress_line, Event};
        let table = &options.table;
        let noun = options.direction.noun();
        match event {
            Event::Started(s) if s.only_rechecks => {
                eprintln!(
                    "{noun} of {table}: every row was copied before; re-checking the copies of {} batches an earlier run left",
                    s.pending_batches
                );
            }
            Event::Started(s) => {
                eprintln!(
                    "{noun} of {table} ({}): about {} rows to read (the planner's estimate, not a count), batches of {}, {}{}",
                    match options.direction {
                        Direction::Forward => format!("into {}", s.target),
                        Direction::Reverse => format!("from its target into {}", s.target),
                    },
                    s.estimated_rows,
                    options.batch_size,
                    match &s.resume_after {
                        Some(c) => format!("resuming after ({})", c.join(", ")),
                        None => "from the first key".into(),
                    },
                    if s.pending_batches > 0 {
                        format!(
                            "; {} batches of an earlier run still to re-check",
                            s.pending_batches
                        )
                    } else {
                        String::new()
                    }
                );
            }
            Event::Batch(p) if self.terminal => {
                eprint!("\r{}   ", progress_line(p));
                let _ = std::io::stderr().flush();
                self.redrawing = true;
            }
            Event::Batch(p) => {
                if self
                    .last_line
                    .is_none_or(|at| at.elapsed() >= std::time::Duration::from_secs(5))
                {
                    eprintln!("{}", progress_line(p));
                    self.last_line = Some(std::time::Instant::now());
                }
            }
            Event::Waiting(w) => {
                if self.redrawing {
                    eprintln!();
                    self.redrawing = false;
                }
                eprintln!("{noun}: {w}");
            }
        }
    }
}

/// Runs `tandem backfill` and prints its report.
fn backfill(config: Config, options: Options) -> ExitCode {
    use std::io::IsTerminal;
    use tandem::ops::backfill::{progress_line, Outcome};
    let runtime = match one_shot() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let mut narrator = Narrator {
        terminal: std::io::stderr().is_terminal(),
        last_line: None,
        redrawing: false,
    };
    let noun = options.direction.noun();
    let result = runtime.block_on(tandem::ops::backfill::run(&config, &options, &mut |e| {
        narrator.event(e, &options)
    }));
    if narrator.redrawing {
        eprintln!();
    }
    match result {
        Ok(Outcome::Plan(plan)) => {
            println!("table:          {}", options.table);
            println!(
                "estimated rows: ~{} (an estimate, not a count: {}; the run reads every row after the cursor, more or fewer as live writes add or remove rows)",
                plan.estimated_rows, plan.estimate_basis
            );
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
                "{noun} of {} already finished at {finished_at} ({copied} rows copied); nothing to do (--restart to run it again)",
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
            let deleted = match options.direction {
                Direction::Forward => String::new(),
                Direction::Reverse => format!(
                    "; stale legacy rows deleted: {} this run, {} in all",
                    p.deleted, report.total_deleted
                ),
            };
            let paused = match report.parts {
                Some(parts) if parts.finished < parts.total => format!(
                    "paused with {} of {} key ranges copied (--max-batches, or the rest held by another tandem backfill of this table)",
                    parts.finished, parts.total
                ),
                _ => "paused at --max-batches".to_string(),
            };
            let split = match report.parts {
                Some(parts) => format!(", {} key ranges", parts.total),
                None => String::new(),
            };
            println!(
                "{noun} of {}: {} ({}{split}{}); this run: {} copied, {} already present, {} batches, {:.1} s; all runs: {} copied, {} already present{deleted}",
                options.table,
                if finished { "finished" } else { paused.as_str() },
                if report.resumed { "resumed" } else { "fresh start" },
                if finished { "" } else { "; run again to continue" },
                p.copied,
                p.skipped,
                p.batches,
                p.elapsed.as_secs_f64(),
                report.total_copied,
                report.total_skipped
            );
            if let Some((target, took)) = &report.analyzed {
                println!(
                    "analysed {target} (ANALYZE, {:.1} s), so the planner has fresh statistics",
                    took.as_secs_f64()
                );
            }
            if finished && options.direction == Direction::Reverse {
                println!(
                    "the legacy table is re-synced and the cutover mirror keeps it current; check with tandem parity --table {} --strict before leaving cutover",
                    options.table
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tandem: {e}");
            ExitCode::FAILURE
        }
    }
}
