//! What a backfill run tells its caller: its start, progress after each batch, what its
//! re-checks wait for, how it ended, and the progress line the command prints.

use std::time::Duration;

use super::{Direction, Wait};

/// Progress after each batch.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// Batches committed in this run.
    pub batches: u64,
    /// Rows copied in this run.
    pub copied: i64,
    /// Rows already present in the target (skipped) in this run.
    pub skipped: i64,
    /// Time since the run started.
    pub elapsed: Duration,
    /// Rows still to go, estimated by the planner at the start (0 when unknown).
    pub estimated_total: i64,
    /// Copies removed again because a concurrent DELETE removed their legacy row (see
    /// the module doc): each would otherwise have been a row resurrected in the target.
    pub removed: i64,
    /// Batches whose re-check waits for an older snapshot (this run's and earlier runs').
    pub pending_batches: i64,
    /// Which way the run copies.
    pub direction: Direction,
    /// Reverse only: stale legacy rows deleted (their key is no longer in the target).
    pub deleted: i64,
}

/// How a run starts (reported once, before the first batch).
#[derive(Debug, Clone)]
pub struct Start {
    /// The table written: the target (the legacy table for `--reverse`).
    pub target: String,
    /// The planner's estimate of the rows left to read (not a count).
    pub estimated_rows: i64,
    /// Where it resumes (the stored cursor), if it does.
    pub resume_after: Option<Vec<String>>,
    /// Batches of earlier runs whose re-check is still pending.
    pub pending_batches: i64,
    /// Every row was copied before: this run only does the pending re-checks.
    pub only_rechecks: bool,
}

/// What a run reports as it goes.
#[derive(Debug, Clone)]
pub enum Event<'a> {
    /// Before the first batch.
    Started(&'a Start),
    /// After each batch.
    Batch(&'a Progress),
    /// Every few seconds while re-checks wait for sessions holding older snapshots.
    Waiting(&'a Wait),
}

/// How a run ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Every row is copied (in this run or before, when resuming), every copy re-checked.
    Finished(Report),
    /// `--max-batches` reached; run again to continue.
    Paused(Report),
    /// The run had finished before; nothing was done (use `--restart`).
    AlreadyFinished {
        /// When it finished.
        finished_at: String,
        /// Rows it copied in total.
        copied: i64,
    },
    /// `--dry-run`: what would run.
    Plan(DryRun),
}

/// The final report of a run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// This run's progress.
    pub progress: Progress,
    /// Totals over every run of this backfill (resumed runs add up).
    pub total_copied: i64,
    /// Totals over every run of this backfill.
    pub total_skipped: i64,
    /// Totals over every run: stale rows deleted (reverse only).
    pub total_deleted: i64,
    /// Whether this run resumed an earlier one.
    pub resumed: bool,
    /// The table written, and how long its `ANALYZE` took (finished runs only).
    pub analyzed: Option<(String, Duration)>,
    /// A run in parts (`--jobs`): how many there are and how many are copied.
    pub parts: Option<super::PartsDone>,
}

/// `--dry-run`'s plan.
#[derive(Debug, Clone)]
pub struct DryRun {
    /// Planner's estimate of the rows left to read: an estimate, not a count.
    pub estimated_rows: i64,
    /// How the estimate was made (which statistics, how old), in words.
    pub estimate_basis: String,
    /// Batches that makes.
    pub batches: i64,
    /// Where a run would start (the stored cursor), if it would resume.
    pub resume_after: Option<Vec<String>>,
    /// The statement each batch runs.
    pub sql: String,
}

/// One progress line: rows, rate, ETA.
pub fn progress_line(p: &Progress) -> String {
    let secs = p.elapsed.as_secs_f64().max(0.001);
    let done = p.copied + p.skipped;
    let rate = done as f64 / secs;
    let eta = if p.estimated_total > done && rate > 0.0 {
        format!(
            ", ETA ~{:.0} s (from the planner's estimate of {} rows)",
            (p.estimated_total - done) as f64 / rate,
            p.estimated_total
        )
    } else {
        String::new()
    };
    let removed = if p.removed > 0 {
        format!(
            ", {} copies removed again after a concurrent delete",
            p.removed
        )
    } else {
        String::new()
    };
    let pending = if p.pending_batches > 0 {
        format!(
            ", {} batches' re-check waiting for an older snapshot",
            p.pending_batches
        )
    } else {
        String::new()
    };
    match p.direction {
        Direction::Forward => format!(
            "backfill: {done} rows read ({} copied, {} already there{removed}) in {} batches, {:.0} rows/s{eta}{pending}",
            p.copied, p.skipped, p.batches, rate
        ),
        Direction::Reverse => format!(
            "re-sync: {done} target rows read ({} copied or updated into legacy, {} already equal, {} stale legacy rows deleted{removed}) in {} batches, {:.0} rows/s{eta}{pending}",
            p.copied, p.skipped, p.deleted, p.batches, rate
        ),
    }
}
