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
//!   read, so it wins;
//! - `FOR KEY SHARE` on the legacy rows: a DELETE of one of them (which, through Tandem,
//!   also deletes the target's copy) either commits before the batch reads the row — the
//!   batch then skips it — or waits for the batch to commit and deletes the copy the batch
//!   made. Without the lock the batch could read a row being deleted and copy it after the
//!   delete committed, resurrecting it in the target;
//!   But a DELETE whose snapshot predates the batch's commit and that reaches the row
//!   just after the batch released it would still miss the copy (its mirror finds target
//!   rows with that old snapshot); so each batch's copies are re-checked once no older
//!   snapshot remains, and a copy whose legacy row is gone is deleted (see [`Pending`]).
//!   This needs the role to see other sessions' `backend_xmin` (`pg_read_all_stats`);
//! - the cursor (the last key copied) and the counters are updated in the same transaction
//!   as the batch, in `tandem.backfill_state`, so a killed run resumes after its last
//!   committed batch, and a finished run is not re-run unless asked (`--restart`).
//!
//! The rule must be in `dual_write`, `union_read` or `cutover`: copying rows that later
//! writes do not keep current would create divergence.

use std::time::{Duration, Instant};

use tandem_rules::{quote_ident, Mode, ResolvedRule, TableName};
use tokio_postgres::Client;

use crate::config::Config;
use crate::control::catalog::{self, CatalogError};
use crate::control::store::{self, Store, StoreError};

/// What `tandem backfill` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// Legacy table.
    pub table: TableName,
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
    /// `--where` is not one SQL expression.
    #[error("--where: {0}")]
    Predicate(String),
    /// The role cannot see other sessions' snapshots, which the race protection needs.
    #[error("the backfill role {0} cannot see other sessions' snapshots (pg_stat_activity.backend_xmin), which it needs to make sure no concurrent DELETE leaves a copied row behind; GRANT pg_read_all_stats TO {0}")]
    Privilege(String),
    /// `--batch-size` out of range.
    #[error("--batch-size must be between 1 and 1000000")]
    BatchSize,
}

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
}

/// How a run ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Every row is copied (in this run or before, when resuming).
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
    /// Whether this run resumed an earlier one.
    pub resumed: bool,
}

/// `--dry-run`'s plan.
#[derive(Debug, Clone)]
pub struct DryRun {
    /// Planner's estimate of the rows left to read.
    pub estimated_rows: i64,
    /// Batches that makes.
    pub batches: i64,
    /// Where a run would start (the stored cursor), if it would resume.
    pub resume_after: Option<Vec<String>>,
    /// The statement each batch runs.
    pub sql: String,
}

/// The statements a backfill of one rule runs.
struct Statements {
    batch: String,
    /// Finds copied keys whose legacy row is gone (see [`Pending`]).
    recheck: String,
    /// Deletes those copies.
    remove: String,
    remaining_estimate: String,
}

fn statements(rule: &ResolvedRule, predicate: Option<&str>, batch_size: i64) -> Statements {
    let key: Vec<String> = rule.rule.key.iter().map(|k| quote_ident(k)).collect();
    let key_list = key.join(", ");
    // `(k1, k2) > (($1::text[])[1]::type1, ...)`: the cursor comes back typed.
    let typed: Vec<String> = rule
        .rule
        .key
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let ty = rule
                .shape
                .legacy_table
                .iter()
                .find(|c| &c.name == k)
                .map(|c| c.sql_type.clone())
                .unwrap_or_else(|| "text".into());
            format!("($1::text[])[{}]::{ty}", i + 1)
        })
        .collect();
    let mut conditions = vec![format!(
        "($1::text[] IS NULL OR ({key_list}) > ({}))",
        typed.join(", ")
    )];
    if let Some(p) = predicate {
        conditions.push(format!("({p})"));
    }
    let where_clause = conditions.join(" AND ");
    let mirrored = &rule.shape.mirrored_columns;
    let columns: Vec<String> = mirrored
        .iter()
        .map(|c| quote_ident(c))
        .chain(rule.rule.set.iter().map(|(c, _)| quote_ident(c)))
        .collect();
    let values: Vec<String> = mirrored
        .iter()
        .map(|c| quote_ident(c))
        .chain(rule.rule.set.iter().map(|(_, e)| format!("({e})")))
        .collect();
    let last_key = rule
        .rule
        .key
        .iter()
        .map(|k| format!("{}::text", quote_ident(k)))
        .collect::<Vec<_>>()
        .join(", ");
    let desc = key
        .iter()
        .map(|k| format!("{k} DESC"))
        .collect::<Vec<_>>()
        .join(", ");
    // The copied keys, one text array per key column, for the deferred re-check.
    let copied_keys = key
        .iter()
        .map(|k| format!("(SELECT array_agg({k}::text) FROM copied)"))
        .collect::<Vec<_>>()
        .join(", ");
    let batch = format!(
        "WITH batch AS (SELECT * FROM {legacy} WHERE {where_clause} ORDER BY {key_list} \
           LIMIT {batch_size} FOR KEY SHARE), \
         copied AS (INSERT INTO {target} ({cols}) SELECT {vals} FROM batch \
           ON CONFLICT ({key_list}) DO NOTHING RETURNING {key_list}) \
         SELECT (SELECT count(*) FROM batch)::int8, (SELECT count(*) FROM copied)::int8, \
           (SELECT ARRAY[{last_key}] FROM batch ORDER BY {desc} LIMIT 1), \
           (pg_current_xact_id()::text::int8 % 4294967296)::int8, {copied_keys}",
        legacy = rule.rule.table,
        target = rule.rule.target,
        cols = columns.join(", "),
        vals = values.join(", "),
    );
    // `$1..$n`: the copied keys, one text array per key column.
    let unnest_args = (1..=key.len())
        .map(|i| format!("${i}::text[]"))
        .collect::<Vec<_>>()
        .join(", ");
    let alias_cols = (1..=key.len())
        .map(|i| format!("c{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let key_types: Vec<String> = rule
        .rule
        .key
        .iter()
        .map(|k| {
            rule.shape
                .legacy_table
                .iter()
                .find(|c| &c.name == k)
                .map(|c| c.sql_type.clone())
                .unwrap_or_else(|| "text".into())
        })
        .collect();
    let match_copied = key
        .iter()
        .zip(&key_types)
        .enumerate()
        .map(|(i, (k, ty))| format!("t.{k} = k.c{}::{ty}", i + 1))
        .collect::<Vec<_>>()
        .join(" AND ");
    let match_legacy = key
        .iter()
        .map(|k| format!("l.{k} = t.{k}"))
        .collect::<Vec<_>>()
        .join(" AND ");
    // Two steps, so the common case (no copy outlived its row) costs one index probe of
    // the legacy table per copied key and never touches the target: `recheck` finds the
    // copied keys whose legacy row is gone, `remove` deletes just those copies.
    let match_gone = key
        .iter()
        .zip(&key_types)
        .enumerate()
        .map(|(i, (k, ty))| format!("l.{k} = k.c{}::{ty}", i + 1))
        .collect::<Vec<_>>()
        .join(" AND ");
    let recheck = format!(
        "SELECT {alias_cols} FROM unnest({unnest_args}) AS k({alias_cols}) \
         WHERE NOT EXISTS (SELECT 1 FROM {legacy} AS l WHERE {match_gone})",
        legacy = rule.rule.table,
    );
    let remove = format!(
        "WITH gone AS (DELETE FROM {target} AS t USING unnest({unnest_args}) AS k({alias_cols}) \
           WHERE {match_copied} AND NOT EXISTS (SELECT 1 FROM {legacy} AS l WHERE {match_legacy}) \
           RETURNING 1) SELECT count(*)::int8 FROM gone",
        legacy = rule.rule.table,
        target = rule.rule.target,
    );
    let remaining_estimate = format!(
        "EXPLAIN (FORMAT JSON) SELECT 1 FROM {legacy} WHERE {where_clause}",
        legacy = rule.rule.table
    );
    Statements {
        batch,
        recheck,
        remove,
        remaining_estimate,
    }
}

/// The saved state of a backfill.
struct State {
    cursor: Option<Vec<String>>,
    copied: i64,
    skipped: i64,
    status: String,
    finished_at: Option<String>,
}

/// Runs (or plans) a backfill; `progress` is called after every batch.
pub async fn run(
    config: &Config,
    options: &Options,
    progress: &mut (dyn FnMut(&Progress) + Send),
) -> Result<Outcome, BackfillError> {
    if !(1..=1_000_000).contains(&options.batch_size) {
        return Err(BackfillError::BatchSize);
    }
    if let Some(p) = &options.predicate {
        tandem_rules::check_expression(p).map_err(BackfillError::Predicate)?;
    }
    let store::Opened {
        client,
        names,
        snapshot,
    } = store::open(config).await?;
    let stored = store::find(&snapshot, &options.table)
        .ok_or_else(|| BackfillError::NoRule(options.table.clone()))?;
    let mode = stored.rule.mode;
    if !matches!(mode, Mode::DualWrite | Mode::UnionRead | Mode::Cutover) {
        return Err(BackfillError::Mode(options.table.clone(), mode));
    }
    let set = catalog::resolve(&client, std::slice::from_ref(&stored.rule), 0).await?;
    let Some(rule) = set.rules.into_iter().next() else {
        return Err(BackfillError::NoRule(options.table.clone()));
    };
    let predicate = options.predicate.as_deref();
    let sql = statements(&rule, predicate, options.batch_size);
    let query_error = |source| BackfillError::Query {
        table: options.table.clone(),
        source,
    };
    let predicate_key = predicate.unwrap_or("").to_string();
    let table_key = options.table.to_string();
    let state = load_state(&client, &names, &table_key, &predicate_key)
        .await
        .map_err(query_error)?;
    let resume = match &state {
        Some(s) if !options.restart => s.cursor.clone(),
        _ => None,
    };
    if let Some(s) = &state {
        if s.status == "finished" && !options.restart && !options.dry_run {
            return Ok(Outcome::AlreadyFinished {
                finished_at: s.finished_at.clone().unwrap_or_default(),
                copied: s.copied,
            });
        }
    }
    let estimated = estimate(&client, &sql.remaining_estimate, &resume)
        .await
        .map_err(query_error)?;
    if options.dry_run {
        return Ok(Outcome::Plan(DryRun {
            estimated_rows: estimated,
            batches: (estimated + options.batch_size - 1) / options.batch_size.max(1),
            resume_after: resume,
            sql: sql.batch,
        }));
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
        return Err(BackfillError::Privilege(current_user(&client).await));
    }
    let resumed = resume.is_some();
    if state.is_none() || options.restart {
        client
            .execute(
                &format!(
                    "INSERT INTO {} (table_name, predicate, target, key) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (table_name, predicate) DO UPDATE SET target = EXCLUDED.target, \
                       key = EXCLUDED.key, cursor = NULL, rows_copied = 0, rows_skipped = 0, \
                       batches = 0, status = 'running', last_error = NULL, started_at = now(), \
                       updated_at = now(), finished_at = NULL",
                    names.backfill_state()
                ),
                &[
                    &table_key,
                    &predicate_key,
                    &rule.rule.target.to_string(),
                    &rule.rule.key,
                ],
            )
            .await
            .map_err(query_error)?;
    }
    let (mut total_copied, mut total_skipped) = match &state {
        Some(s) if !options.restart => (s.copied, s.skipped),
        _ => (0, 0),
    };
    let mut cursor = resume;
    let started = Instant::now();
    let mut now = Progress {
        estimated_total: estimated,
        ..Progress::default()
    };
    let mut client = client;
    let mut pending: Vec<Pending> = Vec::new();
    loop {
        let step = batch(
            &mut client,
            &names,
            &sql.batch,
            &table_key,
            &predicate_key,
            &cursor,
            options.batch_size,
        )
        .await;
        let step = match step {
            Ok(b) => b,
            Err(e) => {
                let _ = client
                    .execute(
                        &format!(
                            "UPDATE {} SET status = 'failed', last_error = $3, updated_at = now() \
                             WHERE table_name = $1 AND predicate = $2",
                            names.backfill_state()
                        ),
                        &[&table_key, &predicate_key, &e.to_string()],
                    )
                    .await;
                return Err(query_error(e));
            }
        };
        let (read, copied) = (step.read, step.copied);
        pending.push(step.pending);
        now.removed += settle(&client, &sql, &mut pending, false)
            .await
            .map_err(query_error)?;
        now.batches += 1;
        now.copied += copied;
        now.skipped += read - copied;
        now.elapsed = started.elapsed();
        total_copied += copied;
        total_skipped += read - copied;
        progress(&now);
        let finished = read < options.batch_size || step.last.is_none();
        let paused = options.max_batches > 0 && now.batches >= options.max_batches;
        if finished || paused {
            now.removed += settle(&client, &sql, &mut pending, true)
                .await
                .map_err(query_error)?;
            now.elapsed = started.elapsed();
            let report = Report {
                progress: now,
                total_copied,
                total_skipped,
                resumed,
            };
            return Ok(if finished {
                Outcome::Finished(report)
            } else {
                Outcome::Paused(report)
            });
        }
        cursor = step.last;
        if !options.throttle.is_zero() {
            tokio::time::sleep(options.throttle).await;
        }
    }
}

/// What one committed batch did.
struct Batch {
    read: i64,
    copied: i64,
    last: Option<Vec<String>>,
    /// The batch transaction's xid (32-bit), and the keys it copied (one array per key
    /// column): re-checked once no older snapshot is left (see [`settle`]).
    pending: Pending,
}

/// Copies made by a committed batch that a concurrent DELETE may not have seen.
///
/// A DELETE through Tandem removes the legacy row and, in the same statement, the target's
/// copy — found with the statement's snapshot. A DELETE whose snapshot was taken before the
/// batch committed, and which reaches the legacy row after the batch released it, deletes
/// the legacy row but cannot see the batch's copy: the copy would outlive its row. So once
/// every snapshot older than the batch is gone (no backend's `backend_xmin` is at or before
/// the batch's xid), Tandem deletes the batch's copies whose legacy row no longer exists;
/// any later DELETE sees the copy and removes it itself.
struct Pending {
    xid: i64,
    keys: Vec<Vec<String>>,
}

/// One batch and its state update, in one transaction; marks the backfill finished when
/// the batch came back short.
async fn batch(
    client: &mut Client,
    names: &Store,
    sql: &str,
    table: &str,
    predicate: &str,
    cursor: &Option<Vec<String>>,
    batch_size: i64,
) -> Result<Batch, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    let row = tx.query_one(sql, &[cursor]).await?;
    let read: i64 = row.get(0);
    let copied: i64 = row.get(1);
    let last: Option<Vec<String>> = row.get(2);
    let xid: i64 = row.get(3);
    let keys: Vec<Vec<String>> = (4..row.len())
        .map(|i| row.get::<_, Option<Vec<String>>>(i).unwrap_or_default())
        .collect();
    let done = last.is_none() || read < batch_size;
    tx.execute(
        &format!(
            "UPDATE {} SET cursor = coalesce($3, cursor), rows_copied = rows_copied + $4, \
               rows_skipped = rows_skipped + $5, batches = batches + 1, updated_at = now(), \
               status = CASE WHEN $6 THEN 'finished' ELSE 'running' END, \
               finished_at = CASE WHEN $6 THEN now() END, last_error = NULL \
             WHERE table_name = $1 AND predicate = $2",
            names.backfill_state()
        ),
        &[&table, &predicate, &last, &copied, &(read - copied), &done],
    )
    .await?;
    tx.commit().await?;
    Ok(Batch {
        read,
        copied,
        last,
        pending: Pending { xid, keys },
    })
}

/// Re-checks the pending batches that no older snapshot can still affect; with `wait`,
/// waits until all are re-checked. Returns how many copies were removed.
async fn settle(
    client: &Client,
    sql: &Statements,
    pending: &mut Vec<Pending>,
    wait: bool,
) -> Result<i64, tokio_postgres::Error> {
    let mut removed = 0;
    let started = Instant::now();
    let mut warned = false;
    loop {
        let mut still = Vec::new();
        for p in pending.drain(..) {
            let older: bool = client
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM pg_stat_activity \
                       WHERE datname = current_database() AND pid <> pg_backend_pid() \
                         AND backend_xmin IS NOT NULL \
                         AND age(backend_xmin) >= age($1::text::xid))",
                    &[&p.xid.to_string()],
                )
                .await?
                .get(0);
            if older {
                still.push(p);
                continue;
            }
            if p.keys.first().is_some_and(|k| !k.is_empty()) {
                let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = p
                    .keys
                    .iter()
                    .map(|k| k as &(dyn tokio_postgres::types::ToSql + Sync))
                    .collect();
                let gone = client.query(&sql.recheck, &params).await?;
                if !gone.is_empty() {
                    let keys: Vec<Vec<String>> = (0..p.keys.len())
                        .map(|i| gone.iter().map(|r| r.get::<_, String>(i)).collect())
                        .collect();
                    let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = keys
                        .iter()
                        .map(|k| k as &(dyn tokio_postgres::types::ToSql + Sync))
                        .collect();
                    let n: i64 = client.query_one(&sql.remove, &params).await?.get(0);
                    removed += n;
                }
            }
        }
        *pending = still;
        if pending.is_empty() || !wait {
            return Ok(removed);
        }
        if !warned && started.elapsed() > Duration::from_secs(5) {
            warned = true;
            tracing::warn!(
                batches = pending.len(),
                "backfill: waiting for transactions older than the last batches to finish"
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn load_state(
    client: &Client,
    names: &Store,
    table: &str,
    predicate: &str,
) -> Result<Option<State>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            &format!(
                "SELECT cursor, rows_copied, rows_skipped, status, finished_at::text FROM {} \
                 WHERE table_name = $1 AND predicate = $2",
                names.backfill_state()
            ),
            &[&table, &predicate],
        )
        .await?;
    Ok(row.map(|r| State {
        cursor: r.get(0),
        copied: r.get(1),
        skipped: r.get(2),
        status: r.get(3),
        finished_at: r.get(4),
    }))
}

async fn current_user(client: &Client) -> String {
    client
        .query_one("SELECT current_user::text", &[])
        .await
        .map(|r| r.get(0))
        .unwrap_or_else(|_| "the upstream user".into())
}

/// The planner's estimate of the rows left (after `cursor`). EXPLAIN's JSON comes back as
/// `json`, so it is read over the simple protocol (text), with the cursor as a literal.
async fn estimate(
    client: &Client,
    explain: &str,
    cursor: &Option<Vec<String>>,
) -> Result<i64, tokio_postgres::Error> {
    let literal = match cursor {
        None => "NULL::text[]".to_string(),
        Some(values) => format!(
            "ARRAY[{}]::text[]",
            values
                .iter()
                .map(|v| store::quote_literal(v))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let text = explain.replace("$1::text[]", &literal);
    let messages = client.simple_query(&text).await?;
    let json = messages.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
        _ => None,
    });
    let value: serde_json::Value =
        serde_json::from_str(json.as_deref().unwrap_or("null")).unwrap_or_default();
    Ok(value
        .pointer("/0/Plan/Plan Rows")
        .and_then(|v| v.as_f64())
        .map(|f| f as i64)
        .unwrap_or(0))
}

/// One progress line: rows, rate, ETA.
pub fn progress_line(p: &Progress) -> String {
    let secs = p.elapsed.as_secs_f64().max(0.001);
    let done = p.copied + p.skipped;
    let rate = done as f64 / secs;
    let eta = if p.estimated_total > done && rate > 0.0 {
        format!(", ETA {:.0} s", (p.estimated_total - done) as f64 / rate)
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
    format!(
        "backfill: {done} rows read ({} copied, {} already there{removed}) in {} batches, {:.0} rows/s{eta}",
        p.copied, p.skipped, p.batches, rate
    )
}

impl From<store::OpenError> for BackfillError {
    fn from(e: store::OpenError) -> Self {
        match e {
            store::OpenError::Catalog(c) => Self::Catalog(c),
            store::OpenError::Store(s) => Self::Store(s),
        }
    }
}
