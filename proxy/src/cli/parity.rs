//! `tandem parity`: compare legacy and target in one snapshot and gate cutover.

use std::path::PathBuf;
use std::process::ExitCode;

use tandem::config::Config;

use super::{one_shot, table_arg, Conn};

/// `tandem parity`.
#[derive(clap::Args)]
pub struct Args {
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
    #[arg(long, default_value_t = tandem::ops::parity::GATE_MIN_SAMPLES)]
    min_samples: i64,
    /// Share of the top-K read shapes (shadow.top_k) that must have shadow.min_comparisons
    /// comparisons at full overlap (0 skips the check).
    #[arg(long, default_value_t = tandem::ops::parity::GATE_MIN_COVERAGE)]
    min_coverage: f64,
    /// No top-K read shape may be slower on the target than this factor, by median
    /// statement time (0 skips the check).
    #[arg(long, default_value_t = tandem::ops::parity::GATE_MAX_SLOWDOWN)]
    max_slowdown: f64,
    /// Median time differences below this many milliseconds are not a slowdown.
    #[arg(long, default_value_t = tandem::ops::parity::GATE_SLOWDOWN_FLOOR_MS)]
    slowdown_floor_ms: f64,
    /// Example keys shown per kind of mismatch.
    #[arg(long, default_value_t = 20)]
    sample_limit: usize,
    /// Fail the constraints check on a legacy index with no counterpart on the target
    /// (default: a warning).
    #[arg(long)]
    strict_indexes: bool,
    /// Folder for <run_id>/summary.json and report.html.
    #[arg(long, default_value = "artifacts/parity")]
    out: PathBuf,
    /// stdout format.
    #[arg(long, default_value = "table", value_parser = ["table", "json"])]
    format: String,
    #[command(flatten)]
    conn: Conn,
}

/// Checks the arguments and runs the report. `Err`: an exit before the work starts
/// (bad arguments or config).
pub fn run(args: Args) -> Result<ExitCode, ExitCode> {
    let config = args.conn.load()?;
    let tables = args
        .tables
        .iter()
        .map(|t| table_arg(t, "--table"))
        .collect::<Result<_, _>>()?;
    if !(0.0..=1.0).contains(&args.min_coverage) {
        eprintln!(
            "tandem: --min-coverage {} is not between 0 and 1",
            args.min_coverage
        );
        return Err(ExitCode::from(2));
    }
    if args.max_slowdown != 0.0 && (args.max_slowdown.is_nan() || args.max_slowdown < 1.0) {
        eprintln!(
            "tandem: --max-slowdown {} must be 0 (off) or at least 1",
            args.max_slowdown
        );
        return Err(ExitCode::from(2));
    }
    let options = tandem::ops::parity::Options {
        tables,
        min_overlap: args.min_overlap,
        min_samples: args.min_samples,
        sample_limit: args.sample_limit,
        strict_indexes: args.strict_indexes,
        min_coverage: args.min_coverage,
        max_slowdown: args.max_slowdown,
        slowdown_floor_ms: args.slowdown_floor_ms,
    };
    Ok(parity(
        config,
        options,
        args.strict,
        &args.out,
        &args.format,
    ))
}

/// Runs `tandem parity`: prints the report, writes summary.json and report.html.
fn parity(
    config: Config,
    options: tandem::ops::parity::Options,
    strict: bool,
    out: &std::path::Path,
    format: &str,
) -> ExitCode {
    let runtime = match one_shot() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let report = match runtime.block_on(tandem::ops::parity::run(&config, &options)) {
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
        print!("{}", tandem::ops::parity::text(&report));
    }
    match tandem::ops::parity::write(&report, out) {
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
