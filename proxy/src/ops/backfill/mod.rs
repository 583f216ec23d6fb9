//! `tandem backfill`: copy the legacy rows dual-write has not copied, safely under live
//! traffic, in resumable batches.
//!
//! Dual-write keeps every row written since it started equal in both tables; the rows from
//! before need copying. Each batch is one statement in its own transaction:
//!
//! ```sql
//! WITH batch AS (SELECT * FROM legacy WHERE (k1, k2) > (<cursor>) [AND (<where>)]
//!                ORDER BY k1, k2 LIMIT <n> FOR KEY SHARE),
//!      copied AS (INSERT INTO target (...) SELECT ... FROM batch
//!                 ON CONFLICT (k1, k2) DO NOTHING RETURNING 1)
//! SELECT count(*) FROM batch, count(*) FROM copied, <last key of batch>, <xid>, <copied keys>
//! ```
//!
//! - keyset pagination on the rule's key, so each batch is an index range scan however far
//!   the run has got;
//! - `ON CONFLICT DO NOTHING`: a row dual-write already copied is newer than the backfill's
//!   read, so it wins. Each batch is tried first as a plain INSERT, in a savepoint: most
//!   rows of a forward batch are not in the target yet, and a plain insert skips the
//!   speculative insertion `ON CONFLICT` pays per row (about a quarter of a batch's time);
//!   a unique violation rolls the try back and the batch runs as above, and so do the next
//!   16 batches (a stretch of keys dual-write has copied costs one wasted try per 16);
//! - `FOR KEY SHARE` on the legacy rows: a DELETE of one of them (which, through Tandem,
//!   also deletes the target's copy) either commits before the batch reads the row — the
//!   batch then skips it — or waits for the batch to commit and deletes the copy the batch
//!   made. Without the lock the batch could read a row being deleted and copy it after the
//!   delete committed, resurrecting it in the target;
//!   But a DELETE whose snapshot predates the batch's commit and that reaches the row
//!   just after the batch released it would still miss the copy (its mirror finds target
//!   rows with that old snapshot); so each batch's copies are re-checked once no older
//!   snapshot remains, and a copy whose legacy row is gone is deleted (see [`recheck`]):
//!   batches go on meanwhile, the pending re-checks are kept in the store, and the end of
//!   the run waits for them, saying what it waits for, at most `--max-wait`.
//!   This needs the role to see other sessions' `backend_xmin` (`pg_read_all_stats`);
//! - the cursor (the last key copied) and the counters are updated in the same transaction
//!   as the batch, in `tandem.backfill_state`, so a killed run resumes after its last
//!   committed batch, and a finished run is not re-run unless asked (`--restart`);
//! - a finished run ends with `ANALYZE` of the target: autovacuum never analyses a
//!   partitioned table, and without statistics the union read's anti join is planned badly.
//!
//! - with `--jobs N` the rows left are split into key ranges copied by N workers in
//!   parallel, each range with its own cursor, shared by every process running the same
//!   command (see [`parts`]).
//! - while it runs, a whole-table run publishes on the rule how far it has copied (the
//!   watermark, `rules.backfilled_to`) every `--watermark-every`, and once more when its
//!   copying stops, so union reads take the copied keys from the target alone (see
//!   [`watermark`]).
//!
//! The rule must be in `dual_write`, `union_read` or `cutover`: copying rows that later
//! writes do not keep current would create divergence.
//!
//! `--reverse` runs the same machinery the other way, target -> legacy: the re-sync a
//! FORCEd exit from `target_only` owes (see [`crate::control::store::resync`]). It runs in
//! `cutover` only, where every write goes to the target and is mirrored back into legacy,
//! so rows it copies stay current. Each batch upserts the next target rows into legacy
//! (updating rows that differ), locked `FOR SHARE` so a concurrent UPDATE cannot be
//! overwritten by the batch's older read, and deletes the legacy rows of its key range
//! whose key the target lacks (see [`statements`]); its copies are re-checked as the
//! forward ones are, so a row a concurrent DELETE removed from the target is not
//! resurrected in legacy. Its state is the `reverse` row of `backfill_state`. Every batch,
//! in either direction, reads the rule's mode under a row lock, so no mode change commits
//! while a batch runs and a run stops at the first batch after one.

mod parts;
mod recheck;
mod report;
mod state;
mod statements;
mod watermark;

use std::time::{Duration, Instant};

use tandem_rules::{Mode, TableName};

use crate::config::Config;
use crate::control::catalog::{self, CatalogError};
use crate::control::store::{self, resync, StoreError};

pub use parts::PartsDone;
pub use recheck::{Blocked, Blocker, Wait};
use recheck::{SettleError, WaitPolicy};
pub use report::{progress_line, DryRun, Event, Outcome, Progress, Report, Start};
use state::{BatchError, Key, Range};
use statements::statements;
use watermark::Watermark;

/// Which way a backfill copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    /// Legacy -> target (`tandem backfill`).
    #[default]
    Forward,
    /// Target -> legacy (`tandem backfill --reverse`): the re-sync after leaving
    /// `target_only`.
    Reverse,
}

impl Direction {
    /// The store's spelling (`backfill_state.direction`).
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Forward => resync::FORWARD,
            Direction::Reverse => resync::REVERSE,
        }
    }

    /// Whether a run in this direction may copy in `mode` (the store's spelling): only
    /// where later writes keep the copied rows current.
    fn runs_in(self, mode: &str) -> bool {
        match self {
            Direction::Forward => matches!(mode, "dual_write" | "union_read" | "cutover"),
            Direction::Reverse => mode == "cutover",
        }
    }

    /// What the command calls a run, for messages.
    pub fn noun(self) -> &'static str {
        match self {
            Direction::Forward => "backfill",
            Direction::Reverse => "re-sync",
        }
    }
}

/// What `tandem backfill` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// Legacy table.
    pub table: TableName,
    /// Legacy -> target, or target -> legacy (`--reverse`).
    pub direction: Direction,
    /// Rows per batch.
    pub batch_size: i64,
    /// Stop after this many batches (0: no cap); the run stays resumable.
    pub max_batches: u64,
    /// Only rows matching this SQL predicate (one scope or tenant).
    pub predicate: Option<String>,
    /// Pause between batches.
    pub throttle: Duration,
    /// Print the plan, write nothing.
    pub dry_run: bool,
    /// Start over even if a run exists (finished or not).
    pub restart: bool,
    /// After the last batch, wait at most this long for sessions holding older snapshots
    /// before giving up with [`BackfillError::Blocked`] (`None`: as long as it takes).
    pub max_wait: Option<Duration>,
    /// How often to report what the re-checks wait for.
    pub report_every: Duration,
    /// Report only once the oldest pending re-check has waited this long (ordinary short
    /// transactions hold each new batch back for milliseconds).
    pub report_after: Duration,
    /// Workers copying key ranges in parallel, each on its own connection (1: one stream;
    /// see [`parts`]). A run split by an earlier `--jobs` run goes on in parts.
    pub jobs: usize,
    /// How often a whole-table run publishes its watermark on the rule (zero: never; see
    /// [`watermark`]).
    pub watermark_every: Duration,
}

impl Options {
    /// A backfill of `table` with the command's defaults.
    pub fn new(table: TableName) -> Self {
        Self {
            table,
            direction: Direction::Forward,
            batch_size: 5000,
            max_batches: 0,
            predicate: None,
            throttle: Duration::ZERO,
            dry_run: false,
            restart: false,
            max_wait: None,
            report_every: Duration::from_secs(5),
            report_after: Duration::from_secs(1),
            jobs: 1,
            watermark_every: Duration::from_secs(10),
        }
    }
}

/// Why a backfill could not run or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackfillError {
    /// Reaching or reading the database failed.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The rule store could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A query failed.
    #[error("backfill of {table} failed: {}", catalog::describe(.source))]
    Query {
        /// The legacy table.
        table: TableName,
        /// The server's error.
        source: tokio_postgres::Error,
    },
    /// No rule names the table.
    #[error("no rule for {0} in the rule store; add one first (ADD RULE ...)")]
    NoRule(TableName),
    /// The rule's mode does not keep copied rows current.
    #[error("the rule for {0} is in mode {1}; set it to dual_write first, so that rows changed after they are copied stay current")]
    Mode(TableName, Mode),
    /// A reverse re-sync outside `cutover`.
    #[error("the rule for {0} is in mode {1}; tandem backfill --reverse runs in cutover only, where every write goes to {0}'s target and is mirrored back into {0}, so the rows it copies stay current: SET RULE {0} MODE cutover first (from target_only: SET RULE {0} MODE cutover FORCE)")]
    ReverseMode(TableName, Mode),
    /// A forward backfill while the legacy table owes a re-sync from the target.
    #[error("{0} came back from target_only and has not been re-synced from its target yet ({1}); a forward backfill would copy its stale rows (rows the target has since changed or deleted) back into the target: run tandem backfill --table {0} --reverse first")]
    ResyncOwed(TableName, String),
    /// The rule's mode changed while the run went on (checked by every batch).
    #[error("the {noun} of {table} stopped: the rule is now in mode {mode}, where the rows it copies would not stay current; its place is kept (run it again once the rule is back in {wanted})")]
    ModeChanged {
        /// The legacy table.
        table: TableName,
        /// `backfill` or `re-sync`.
        noun: &'static str,
        /// The mode the store now has.
        mode: String,
        /// Where the run may go on.
        wanted: &'static str,
    },
    /// `--where` with `--reverse`.
    #[error("--where cannot be combined with --reverse: the legacy table missed inserts, updates and deletes anywhere in target_only, so the re-sync covers the whole table")]
    ReverseWhere,
    /// `--where` is not one SQL expression.
    #[error("--where: {0}")]
    Predicate(String),
    /// The role cannot see other sessions' snapshots, which the race protection needs.
    #[error("the backfill role {0} cannot see other sessions' snapshots (pg_stat_activity.backend_xmin), which it needs to make sure no concurrent DELETE leaves a copied row behind; GRANT pg_read_all_stats TO {0}")]
    Privilege(String),
    /// `--batch-size` out of range.
    #[error("--batch-size must be between 1 and 1000000")]
    BatchSize,
    /// `--jobs` out of range.
    #[error("--jobs must be between 1 and 64")]
    Jobs,
    /// `--jobs` with `--reverse`.
    #[error("--jobs cannot be combined with --reverse: the re-sync deletes stale legacy rows range by range behind one cursor, so it runs in one stream")]
    ParallelReverse,
    /// `--max-wait` passed while sessions still held snapshots older than copied batches;
    /// their re-checks are kept for the next run.
    #[error("{0}")]
    Blocked(Box<Blocked>),
    /// A row of the pending re-checks is not what a batch writes (edited by hand?).
    #[error("row id {id} of {table} is not a backfill's record of copied keys (edited by hand?); delete it, run tandem backfill again, and check with tandem parity that no copy outlived its legacy row")]
    BadPending {
        /// The store table.
        table: String,
        /// The row's id.
        id: i64,
    },
}

/// Runs (or plans) a backfill; `events` hears its start, every batch, and what its
/// re-checks wait for.
pub async fn run(
    config: &Config,
    options: &Options,
    events: &mut (dyn FnMut(&Event<'_>) + Send),
) -> Result<Outcome, BackfillError> {
    if !(1..=1_000_000).contains(&options.batch_size) {
        return Err(BackfillError::BatchSize);
    }
    if !(1..=64).contains(&options.jobs) {
        return Err(BackfillError::Jobs);
    }
    if options.jobs > 1 && options.direction == Direction::Reverse {
        return Err(BackfillError::ParallelReverse);
    }
    if let Some(p) = &options.predicate {
        if options.direction == Direction::Reverse {
            return Err(BackfillError::ReverseWhere);
        }
        tandem_rules::check_expression(p).map_err(BackfillError::Predicate)?;
    }
    let direction = options.direction;
    let store::Opened {
        client,
        names,
        snapshot,
    } = store::open(config).await?;
    let stored = store::find(&snapshot, &options.table)
        .ok_or_else(|| BackfillError::NoRule(options.table.clone()))?;
    let mode = stored.rule.mode;
    if !direction.runs_in(mode.as_str()) {
        return Err(match direction {
            Direction::Forward => BackfillError::Mode(options.table.clone(), mode),
            Direction::Reverse => BackfillError::ReverseMode(options.table.clone(), mode),
        });
    }
    if direction == Direction::Forward {
        let owed = resync::state(&client, &names, &options.table.to_string())
            .await
            .map_err(|source| BackfillError::Query {
                table: options.table.clone(),
                source,
            })?;
        if let Some(owed) = owed.filter(|r| r.status != "finished") {
            return Err(BackfillError::ResyncOwed(
                options.table.clone(),
                owed.describe(),
            ));
        }
    }
    let set = catalog::resolve(&client, std::slice::from_ref(&stored.rule), 0).await?;
    let Some(rule) = set.rules.into_iter().next() else {
        return Err(BackfillError::NoRule(options.table.clone()));
    };
    let predicate = options.predicate.as_deref();
    let sql = statements(&rule, predicate, options.batch_size, direction);
    let query_error = |source| BackfillError::Query {
        table: options.table.clone(),
        source,
    };
    let table_key = options.table.to_string();
    let target = sql.dest.clone();
    let key = Key {
        names: &names,
        table: &table_key,
        predicate: predicate.unwrap_or(""),
        direction,
    };
    let state = state::load(&client, &key).await.map_err(query_error)?;
    // A re-sync a FORCEd exit from target_only wrote as `required` has not started.
    let fresh = options.restart || state.as_ref().is_none_or(|s| s.status == "required");
    let resume = match &state {
        Some(s) if !fresh => s.cursor.clone(),
        _ => None,
    };
    if options.dry_run {
        let estimated = state::estimate(&client, &sql.remaining_estimate, &resume)
            .await
            .map_err(query_error)?;
        return Ok(Outcome::Plan(DryRun {
            estimated_rows: estimated,
            estimate_basis: state::estimate_basis(&client, &sql.source)
                .await
                .map_err(query_error)?,
            batches: (estimated + options.batch_size - 1) / options.batch_size.max(1),
            resume_after: resume,
            sql: sql.batch,
        }));
    }
    let pending_before = recheck::outstanding(&client, &key)
        .await
        .map_err(query_error)?
        .batches;
    // Every row copied before: only the re-checks an earlier run left (if any) remain.
    let only_rechecks = !fresh && state.as_ref().is_some_and(|s| s.status == "finished");
    if let Some(s) = state
        .as_ref()
        .filter(|_| only_rechecks && pending_before == 0)
    {
        return Ok(Outcome::AlreadyFinished {
            finished_at: s.finished_at.clone().unwrap_or_default(),
            copied: s.copied,
        });
    }
    let can_see: bool = client
        .query_one(
            "SELECT rolsuper OR pg_has_role(current_user, 'pg_read_all_stats', 'member') \
             FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .map_err(query_error)?
        .get(0);
    if !can_see {
        return Err(BackfillError::Privilege(state::current_user(&client).await));
    }
    let estimated = if only_rechecks {
        0
    } else {
        state::estimate(&client, &sql.remaining_estimate, &resume)
            .await
            .map_err(query_error)?
    };
    let resumed = resume.is_some() || only_rechecks;
    if fresh {
        // One transaction: another process publishing its watermark (see
        // `state::publish_watermark`) between these would set the old run's cursor again.
        client.batch_execute("BEGIN").await.map_err(query_error)?;
        let restarted = restart(&client, &key, &rule).await;
        let ended = match restarted {
            Ok(()) => client.batch_execute("COMMIT").await,
            Err(e) => {
                let _ = client.batch_execute("ROLLBACK").await;
                Err(e)
            }
        };
        ended.map_err(query_error)?;
    }
    let parallel = direction == Direction::Forward
        && (options.jobs > 1 || parts::exist(&client, &key).await.map_err(query_error)?);
    events(&Event::Started(&Start {
        target: target.clone(),
        estimated_rows: estimated,
        resume_after: resume.clone(),
        pending_batches: pending_before,
        only_rechecks,
    }));
    let (mut total_copied, mut total_skipped, mut total_deleted) = match &state {
        Some(s) if !fresh => (s.copied, s.skipped, s.removed),
        _ => (0, 0, 0),
    };
    let mut cursor = resume;
    let started = Instant::now();
    let mut now = Progress {
        estimated_total: estimated,
        pending_batches: pending_before,
        direction,
        ..Progress::default()
    };
    let mut client = client;
    let mut last_report = None;
    let settle_error = |e: SettleError| match e {
        SettleError::Query(source) => query_error(source),
        SettleError::BadRow(id) => BackfillError::BadPending {
            table: names.backfill_pending(),
            id,
        },
        SettleError::Blocked(b) => BackfillError::Blocked(Box::new(b)),
    };
    let mut finished = only_rechecks;
    let mut parts_done = None;
    let mut watermark = Watermark::new(options.watermark_every);
    if parallel && !only_rechecks {
        parts::split(&mut client, &key, &sql, &cursor, options.jobs, estimated)
            .await
            .map_err(query_error)?;
        let shared = parts::Shared::new(now, started, &mut *events);
        let copied = parts::copy(
            &client,
            &parts::Run {
                config,
                key: &key,
                sql: &sql,
                batch_size: options.batch_size,
                max_batches: options.max_batches,
                throttle: options.throttle,
                jobs: options.jobs,
                report_every: options.report_every,
                report_after: options.report_after,
            },
            &shared,
            &mut watermark,
        )
        .await;
        now = shared
            .progress
            .into_inner()
            .unwrap_or_else(|p| p.into_inner());
        if let Err(stop) = copied {
            let e = match stop {
                parts::Stop::Batch(e) => {
                    batch_error(&client, &key, options, &names, &table_key, e).await
                }
                parts::Stop::Query(e) => query_error(e),
                parts::Stop::Connect(e) => BackfillError::Catalog(e),
                parts::Stop::Settle(e) => settle_error(e),
            };
            return Err(e);
        }
        total_copied += now.copied;
        total_skipped += now.skipped;
        let done = parts::done(&client, &key).await.map_err(query_error)?;
        finished = done.finished == done.total;
        parts_done = Some(done);
    }
    // Batches, unless every row was copied before.
    if !only_rechecks && !parallel {
        loop {
            let step = match state::batch(
                &mut client,
                &key,
                &sql,
                Range {
                    cursor: &cursor,
                    upper: &None,
                    part: None,
                },
                options.batch_size,
            )
            .await
            {
                Ok(b) => b,
                Err(e) => {
                    return Err(batch_error(&client, &key, options, &names, &table_key, e).await)
                }
            };
            let (read, copied) = (step.read, step.copied);
            let settled = recheck::settle(
                &client,
                &sql,
                &key,
                WaitPolicy {
                    until_done: false,
                    max_wait: None,
                    report_every: options.report_every,
                    report_after: options.report_after,
                    last_report: &mut last_report,
                },
                &mut |w| events(&Event::Waiting(w)),
            )
            .await
            .map_err(settle_error)?;
            now.removed += settled.removed;
            now.pending_batches = settled.pending_batches;
            now.batches += 1;
            now.copied += copied;
            now.skipped += read - copied;
            now.deleted += step.removed;
            total_deleted += step.removed;
            now.elapsed = started.elapsed();
            total_copied += copied;
            total_skipped += read - copied;
            events(&Event::Batch(&now));
            finished = read < options.batch_size || step.last.is_none();
            let paused = options.max_batches > 0 && now.batches >= options.max_batches;
            if finished || paused {
                break;
            }
            watermark.tick(&client, &key).await;
            cursor = step.last;
            if !options.throttle.is_zero() {
                tokio::time::sleep(options.throttle).await;
            }
        }
    }
    // How far the copying got, paused or done: the last re-checks may wait long.
    watermark.publish(&client, &key).await;
    // Every copy is re-checked before the run ends (or, past --max-wait, left recorded).
    let settled = recheck::settle(
        &client,
        &sql,
        &key,
        WaitPolicy {
            until_done: true,
            max_wait: options.max_wait,
            report_every: options.report_every,
            report_after: options.report_after,
            last_report: &mut last_report,
        },
        &mut |w| events(&Event::Waiting(w)),
    )
    .await;
    let settled = match settled.map_err(settle_error) {
        Ok(s) => s,
        Err(e) => {
            if let BackfillError::Blocked(_) = &e {
                state::record_error(&client, &key, false, &e.to_string()).await;
            }
            return Err(e);
        }
    };
    now.removed += settled.removed;
    now.pending_batches = 0;
    now.elapsed = started.elapsed();
    if parallel && finished {
        // Every part is copied and every copy re-checked: the run is.
        finished = parts::finish(&client, &key).await.map_err(query_error)?;
    }
    let analyzed = if finished {
        state::mark_backfilled(&client, &key, true)
            .await
            .map_err(query_error)?;
        let at = Instant::now();
        client
            .batch_execute(&format!("ANALYZE {target}"))
            .await
            .map_err(query_error)?;
        Some((target, at.elapsed()))
    } else {
        None
    };
    let report = Report {
        progress: now,
        total_copied,
        total_skipped,
        total_deleted,
        resumed,
        analyzed,
        parts: parts_done,
    };
    Ok(if finished {
        Outcome::Finished(report)
    } else {
        Outcome::Paused(report)
    })
}

/// A run starting over, in the caller's transaction: the run's state reset, the rule's
/// `backfilled` and watermark cleared, the parts of an earlier parallel run forgotten.
async fn restart(
    client: &tokio_postgres::Client,
    key: &Key<'_>,
    rule: &tandem_rules::ResolvedRule,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            &format!(
                "INSERT INTO {} (table_name, predicate, direction, target, key) \
                 VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (table_name, predicate, direction) DO UPDATE SET \
                   target = EXCLUDED.target, key = EXCLUDED.key, cursor = NULL, \
                   rows_copied = 0, rows_skipped = 0, rows_removed = 0, batches = 0, \
                   status = 'running', last_error = NULL, started_at = now(), \
                   updated_at = now(), finished_at = NULL",
                key.names.backfill_state()
            ),
            &[
                &key.table,
                &key.predicate,
                &key.direction.as_str(),
                &rule.rule.target.to_string(),
                &rule.rule.key,
            ],
        )
        .await?;
    state::mark_backfilled(client, key, false).await?;
    parts::forget(client, key).await
}

/// What a failed batch means for the run, recorded in its state row.
async fn batch_error(
    client: &tokio_postgres::Client,
    key: &Key<'_>,
    options: &Options,
    names: &store::Store,
    table_key: &str,
    e: BatchError,
) -> BackfillError {
    let direction = options.direction;
    let e = match e {
        BatchError::Query(e) => {
            state::record_error(client, key, true, &catalog::describe(&e)).await;
            return BackfillError::Query {
                table: options.table.clone(),
                source: e,
            };
        }
        BatchError::NoRule => BackfillError::NoRule(options.table.clone()),
        BatchError::Mode(mode) => BackfillError::ModeChanged {
            table: options.table.clone(),
            noun: direction.noun(),
            mode,
            wanted: match direction {
                Direction::Forward => "dual_write, union_read or cutover",
                Direction::Reverse => "cutover",
            },
        },
        BatchError::ResyncOwed => {
            let owed = resync::state(client, names, table_key)
                .await
                .ok()
                .flatten()
                .map(|r| r.describe())
                .unwrap_or_else(|| "required".into());
            BackfillError::ResyncOwed(options.table.clone(), owed)
        }
    };
    state::record_error(client, key, false, &e.to_string()).await;
    e
}

impl From<store::OpenError> for BackfillError {
    fn from(e: store::OpenError) -> Self {
        match e {
            store::OpenError::Catalog(c) => Self::Catalog(c),
            store::OpenError::Store(s) => Self::Store(s),
        }
    }
}
