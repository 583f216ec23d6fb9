//! `tandem parity`: is each table ready for cutover? Evidence from one consistent snapshot.
//!
//! For every ruled table (or the ones asked for), inside one `REPEATABLE READ READ ONLY`
//! transaction so that concurrent traffic cannot create false mismatches:
//!
//! 1. row counts of the legacy table and the target (the delta is the cutover gap);
//! 2. a row-level diff by key, chunked: both tables are summarised into 1024 buckets by a
//!    hash of the key (row count and XOR of a 64-bit hash of the row's mirrored columns,
//!    target columns cast to the legacy types so equal values hash equally), and only the
//!    buckets whose summaries differ are compared row by row (a FULL JOIN on the key). Each
//!    mismatch is *missing* (in legacy, not in the target), *extra* (only in the target) or
//!    *different*; missing rows beyond the backfill cursor (or before any backfill ran) are
//!    *not yet backfilled*, everything else is *divergence*;
//! 3. unresolved drift records (`tandem.drift`), the guard's own drift rows apart (changes
//!    made around the proxy, `source = 'guard'`), backfill progress, and shadow-read
//!    statistics when there are samples;
//! 4. the state of the rule's guard in the database (read just before the snapshot), and
//!    the column differences between the two tables (legacy columns the target lacks,
//!    columns whose types differ), reported without gating.
//!
//! Then a readiness verdict with the reason for every failed check. The report is printed
//! as a table or JSON, and written to `<out>/<run_id>/summary.json` (schema in
//! docs/parity.md) and a self-contained `report.html`.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tandem_rules::{quote_ident, Mode, ResolvedRule, TableName};
use tokio_postgres::{IsolationLevel, Transaction};

use crate::config::Config;
use crate::control::catalog::{self, CatalogError};
use crate::control::guard::{self, GuardState};
use crate::control::store::{self, Store, StoreError};
use crate::control::triggers::TriggerPair;

mod columns;
mod render;
pub mod schema;
pub mod shapes;
pub(crate) use columns::{column_differences, set_columns};
pub use columns::{ColumnDifferences, MissingValues, SetColumn, TypeDifference};
pub use render::{html, text, write};

/// Buckets of the first, summarising pass.
const BUCKETS: i32 = 1024;

/// Latest guard drift rows shown per table.
const GUARD_DRIFT_SHOWN: i64 = 5;

/// Characters of a guard drift row's statement shown.
const STATEMENT_CHARS: i32 = 200;

/// Shadow-read samples the `shadow_overlap` check needs by default (`--min-samples`).
pub const GATE_MIN_SAMPLES: i64 = 20;

/// Share of the top-K read shapes the `shape_coverage` check needs by default.
pub const GATE_MIN_COVERAGE: f64 = 1.0;

/// How much slower on the target a top-K shape may be by default (`--max-slowdown`).
pub const GATE_MAX_SLOWDOWN: f64 = 2.0;

/// Median differences below this many milliseconds are not a slowdown by default.
pub const GATE_SLOWDOWN_FLOOR_MS: f64 = 1.0;

/// What `tandem parity` was asked.
#[derive(Debug, Clone)]
pub struct Options {
    /// Tables to check (empty: every rule not in `off`).
    pub tables: Vec<TableName>,
    /// Smallest acceptable mean shadow-read overlap.
    pub min_overlap: f64,
    /// Shadow-read samples needed before the overlap counts (0: the check is skipped).
    pub min_samples: i64,
    /// Example keys kept per kind of mismatch.
    pub sample_limit: usize,
    /// A legacy index with no counterpart on the target fails the `constraints` check
    /// (else it is a warning: reads get slower, nothing is lost).
    pub strict_indexes: bool,
    /// Share of the top-K read shapes that must have `shadow.min_comparisons`
    /// comparisons at full overlap (0: the `shape_coverage` check is skipped).
    pub min_coverage: f64,
    /// No top-K shape may be slower on the target than this factor, by median times
    /// (0: the `shape_slowdown` check is skipped).
    pub max_slowdown: f64,
    /// Median differences below this many milliseconds are not a slowdown.
    pub slowdown_floor_ms: f64,
}

impl Default for Options {
    /// Every rule not in `off`, the gate's defaults, indexes warned about.
    fn default() -> Self {
        Self {
            tables: Vec::new(),
            min_overlap: 0.95,
            min_samples: GATE_MIN_SAMPLES,
            sample_limit: 20,
            strict_indexes: false,
            min_coverage: GATE_MIN_COVERAGE,
            max_slowdown: GATE_MAX_SLOWDOWN,
            slowdown_floor_ms: GATE_SLOWDOWN_FLOOR_MS,
        }
    }
}

/// Why the report could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ParityError {
    /// Reaching or reading the database failed.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The rule store could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A query failed.
    #[error("parity check failed: {}", catalog::describe(.0))]
    Query(#[from] tokio_postgres::Error),
    /// A table asked for has no rule.
    #[error("no rule for {0} in the rule store")]
    NoRule(TableName),
}

/// One readiness check.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Short name (`mode`, `guard`, `backfill`, `divergence`, `drift`, `shadow_overlap`).
    pub name: &'static str,
    /// Whether it passed.
    pub ok: bool,
    /// What was found.
    pub detail: String,
}

/// Mismatches of one kind.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Mismatches {
    /// How many.
    pub count: i64,
    /// Up to `sample_limit` keys, as `ROW(key)::text`.
    pub sample_keys: Vec<String>,
}

/// Shadow-read figures for one table.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Shadow {
    /// Samples recorded.
    pub samples: i64,
    /// Mean overlap.
    pub mean_overlap: Option<f64>,
    /// Lowest overlap.
    pub min_overlap: Option<f64>,
    /// 5th percentile of the overlap.
    pub p05_overlap: Option<f64>,
    /// Samples below the threshold.
    pub below_threshold: i64,
    /// Overlap over time, oldest first: (unix seconds, overlap), at most 500 points.
    pub series: Vec<(f64, f64)>,
}

/// Backfill progress for one table.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Backfill {
    /// `running`, `finished`, `failed`, or `none` when it never ran.
    pub status: String,
    /// Rows copied so far.
    pub rows_copied: i64,
    /// The cursor (last key copied).
    pub cursor: Option<Vec<String>>,
    /// Batches whose copies still wait for their re-check (a run stopped by `--max-wait`
    /// or killed): a copy among them may have outlived its legacy row.
    pub pending_rechecks: i64,
}

/// The rule's guard in the database.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Guard {
    /// The rule's policy: `mirror`, `fail`, `record` or `off`.
    pub policy: String,
    /// `in place`, `idle`, `off`, `missing` or `stale` (see `tandem.guard_report`).
    pub state: String,
    /// Whether column changes are followed on the mirror (the DDL event trigger exists).
    pub follows_ddl: bool,
}

/// One unresolved drift row the guard recorded.
#[derive(Debug, Clone, Serialize)]
pub struct GuardDriftRow {
    /// When, UTC (`YYYY-MM-DD HH:MM:SS`).
    pub at: String,
    /// `insert`, `update`, `delete` or `truncate`.
    pub operation: String,
    /// Keys the statement touched whose rows differed from the mirror (when known).
    pub rows: Option<i64>,
    /// The writer's session role.
    pub role: Option<String>,
    /// The writer's `application_name`.
    pub application_name: Option<String>,
    /// The top-level statement, cut to 200 characters.
    pub statement: Option<String>,
}

/// Drift the guard recorded: changes made around the proxy.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GuardDrift {
    /// Unresolved `source = 'guard'` rows (counted in `unresolved_drift` too).
    pub unresolved: i64,
    /// The latest few, newest first.
    pub latest: Vec<GuardDriftRow>,
}

/// The report for one table.
#[derive(Debug, Clone, Serialize)]
pub struct TableReport {
    /// Legacy table.
    pub table: String,
    /// Target table.
    pub target: String,
    /// The rule's mode.
    pub mode: String,
    /// Rows in the legacy table.
    pub legacy_rows: i64,
    /// Rows in the target.
    pub target_rows: i64,
    /// legacy_rows - target_rows: the cutover gap.
    pub delta: i64,
    /// Legacy rows absent from the target.
    pub missing: Mismatches,
    /// Target rows absent from legacy.
    pub extra: Mismatches,
    /// Rows in both whose mirrored columns differ.
    pub different: Mismatches,
    /// Of the missing rows, those the backfill has not reached yet.
    pub not_yet_backfilled: i64,
    /// Everything that should not differ: missing rows behind the backfill, extra, different.
    pub divergence: i64,
    /// Unresolved rows of `tandem.drift` for this table (the guard's included).
    pub unresolved_drift: i64,
    /// The unresolved drift the guard recorded.
    pub guard_drift: GuardDrift,
    /// The rule's guard.
    pub guard: Guard,
    /// Column differences between legacy and target.
    pub columns: ColumnDifferences,
    /// Access rules (row level security, policies, privileges, owner) the two tables do not
    /// share: the `access` check fails while there is any.
    pub access: Vec<String>,
    /// Foreign keys the move to the target would break (referencing the legacy table) or
    /// lose (the legacy table's own, missing on the target).
    pub foreign_keys: Vec<crate::control::foreign_keys::ForeignKeyProblem>,
    /// NOT NULL, CHECK, unique rules and indexes of the legacy table the target lacks.
    pub constraints: crate::ops::constraints::MissingRules,
    /// Each legacy trigger with its counterpart on the target.
    pub triggers: Vec<TriggerPair>,
    /// Whether the target keeps the legacy table's shape: columns, data rules, triggers,
    /// access rules and foreign keys (the checks of the same names).
    pub schema: schema::Schema,
    /// Backfill progress.
    pub backfill: Backfill,
    /// The re-sync of the legacy table from the target a FORCEd exit from `target_only`
    /// owes (`tandem backfill --reverse`); `None` when none was ever owed.
    pub resync: Option<crate::control::store::resync::Resync>,
    /// Shadow-read figures.
    pub shadow: Shadow,
    /// The table's read shapes: same rows, and time on each side.
    pub shapes: shapes::ReadShapes,
    /// Readiness checks.
    pub checks: Vec<Check>,
    /// All checks passed.
    pub ready: bool,
    /// Time the diff took, seconds.
    pub seconds: f64,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `YYYYMMDD-HHMMSS-<millis>`.
    pub run_id: String,
    /// Unix seconds at the start.
    pub started_at: f64,
    /// Whole run, seconds.
    pub seconds: f64,
    /// The thresholds used.
    pub min_overlap: f64,
    /// Samples needed for the overlap check.
    pub min_samples: i64,
    /// Share of top-K shapes the coverage check needs (0: skipped).
    pub min_coverage: f64,
    /// Slowdown a top-K shape may have on the target (0: skipped).
    pub max_slowdown: f64,
    /// One per table.
    pub tables: Vec<TableReport>,
    /// Every table ready.
    pub ready: bool,
}

/// Builds the report.
pub async fn run(config: &Config, options: &Options) -> Result<Report, ParityError> {
    let started = Instant::now();
    let started_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    let store::Opened {
        mut client,
        names,
        snapshot,
    } = store::open(config).await?;
    let wanted: Vec<_> = if options.tables.is_empty() {
        snapshot
            .rules
            .iter()
            .filter(|r| r.rule.mode != Mode::Off)
            .map(|r| r.rule.clone())
            .collect()
    } else {
        options
            .tables
            .iter()
            .map(|t| {
                store::find(&snapshot, t)
                    .map(|r| r.rule.clone())
                    .ok_or_else(|| ParityError::NoRule(t.clone()))
            })
            .collect::<Result<_, _>>()?
    };
    let mut resolved = Vec::new();
    for rule in &wanted {
        let mut active = rule.clone();
        if active.mode == Mode::Off {
            active.mode = Mode::DualWrite; // to read its shape; the mode check reports off
        }
        let set = catalog::resolve(&client, std::slice::from_ref(&active), 0).await?;
        if let Some(mut r) = set.rules.into_iter().next() {
            r.rule.mode = rule.mode;
            resolved.push(r);
        }
    }
    // What the rules' `set` columns read and whether they are immutable (asked of the
    // server with temporary objects, so before the read-only snapshot).
    let mut set_probes = HashMap::new();
    for rule in &resolved {
        set_probes.insert(
            rule.rule.table.to_string(),
            columns::set_columns(&mut client, rule).await?,
        );
    }
    // The guard's state, just before the snapshot (guard_report reads the catalog).
    let guards = guard::states(&client, &names).await?;
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let mut tables = Vec::new();
    for rule in &resolved {
        let state = guards.get(&rule.rule.table.to_string()).cloned();
        let set_columns = set_probes
            .remove(&rule.rule.table.to_string())
            .unwrap_or_default();
        tables.push(
            table_report(
                &tx,
                &names,
                rule,
                state,
                set_columns,
                options,
                &config.shadow,
            )
            .await?,
        );
    }
    tx.commit().await?;
    let ready = !tables.is_empty() && tables.iter().all(|t| t.ready);
    let secs = started_at.as_secs();
    Ok(Report {
        run_id: format!("{}-{:03}", secs, started_at.subsec_millis()),
        started_at: started_at.as_secs_f64(),
        seconds: started.elapsed().as_secs_f64(),
        min_overlap: options.min_overlap,
        min_samples: options.min_samples,
        min_coverage: options.min_coverage,
        max_slowdown: options.max_slowdown,
        tables,
        ready,
    })
}

/// SQL pieces for one rule: the key and the row, as text, in legacy types on both sides.
struct Shape {
    legacy_key: String,
    legacy_row: String,
    target_key: String,
    target_row: String,
    /// `(k1, k2) > (cursor typed)` over the legacy alias `l`, with `$1` the cursor.
    beyond_cursor: String,
}

fn shape(rule: &ResolvedRule, columns: &ColumnDifferences) -> Shape {
    let ty = |name: &str| {
        rule.shape
            .legacy_table
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.sql_type.clone())
            .unwrap_or_else(|| "text".into())
    };
    let cast = |alias: &str, c: &String| format!("{alias}.{}::{}", quote_ident(c), ty(c));
    let list = |alias: &str, cols: &[String]| {
        cols.iter()
            .map(|c| cast(alias, c))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let key = &rule.rule.key;
    // Every legacy column with a counterpart of its name, in legacy types; then each
    // compared `set` column, the expression over the legacy row against the target's
    // value, both in the target column's type.
    let same_name: Vec<String> = rule
        .shape
        .legacy_table
        .iter()
        .filter(|c| rule.shape.target_column(&c.name).is_some())
        .map(|c| c.name.clone())
        .collect();
    let computed: Vec<(String, String, String)> = columns
        .set_columns
        .iter()
        .filter(|c| c.not_compared.is_none())
        .filter_map(|c| {
            let ty = rule.shape.target_column(&c.column)?.sql_type.clone();
            Some((c.column.clone(), c.expr.clone(), ty))
        })
        .collect();
    let row = |alias: &str| {
        let mut parts: Vec<String> = same_name.iter().map(|c| cast(alias, c)).collect();
        parts.extend(computed.iter().map(|(column, expr, ty)| {
            if alias == "l" {
                format!("({expr})::{ty}")
            } else {
                format!("{alias}.{}::{ty}", quote_ident(column))
            }
        }));
        format!("ROW({})::text", parts.join(", "))
    };
    let key_cols = key
        .iter()
        .map(|k| format!("l.{}", quote_ident(k)))
        .collect::<Vec<_>>()
        .join(", ");
    let typed = key
        .iter()
        .enumerate()
        .map(|(i, k)| format!("($1::text[])[{}]::{}", i + 1, ty(k)))
        .collect::<Vec<_>>()
        .join(", ");
    Shape {
        legacy_key: format!("ROW({})::text", list("l", key)),
        legacy_row: row("l"),
        target_key: format!("ROW({})::text", list("t", key)),
        target_row: row("t"),
        beyond_cursor: format!("($1::text[] IS NULL OR ({key_cols}) > ({typed}))"),
    }
}

/// An order-independent aggregate of the int8 row hashes `hash`: `bit_xor`, or on
/// PostgreSQL 13, which lacks it, their sum modulo 2^63 - 1 (as wide, and as blind to order).
fn combined_hash(server_version_num: i32, hash: &str) -> String {
    if server_version_num >= 140_000 {
        format!("bit_xor({hash})::int8")
    } else {
        format!("(sum(({hash})::numeric) % 9223372036854775807)::int8")
    }
}

async fn table_report(
    tx: &Transaction<'_>,
    names: &Store,
    rule: &ResolvedRule,
    guard_state: Option<GuardState>,
    set_columns: Vec<SetColumn>,
    options: &Options,
    shadow_config: &crate::config::ShadowConfig,
) -> Result<TableReport, ParityError> {
    let started = Instant::now();
    let columns = column_differences(rule).with_set_columns(set_columns);
    let s = shape(rule, &columns);
    let legacy = &rule.rule.table;
    let target = &rule.rule.target;
    let version: i32 = tx
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await?
        .get(0);
    let summary = |table: &TableName, alias: &str, key: &str, row: &str| {
        format!(
            "SELECT (abs(hashtextextended({key}, 0)) % {BUCKETS})::int4, count(*)::int8, \
               {} FROM {table} AS {alias} GROUP BY 1",
            combined_hash(version, &format!("hashtextextended({row}, 0)"))
        )
    };
    let sums = |rows: Vec<tokio_postgres::Row>| {
        rows.iter()
            .map(|r| (r.get::<_, i32>(0), (r.get::<_, i64>(1), r.get::<_, i64>(2))))
            .collect::<HashMap<_, _>>()
    };
    let left = sums(
        tx.query(&summary(legacy, "l", &s.legacy_key, &s.legacy_row), &[])
            .await?,
    );
    let right = sums(
        tx.query(&summary(target, "t", &s.target_key, &s.target_row), &[])
            .await?,
    );
    let legacy_rows: i64 = left.values().map(|v| v.0).sum();
    let target_rows: i64 = right.values().map(|v| v.0).sum();
    let mut buckets: Vec<i32> = left
        .keys()
        .chain(right.keys())
        .copied()
        .filter(|b| left.get(b) != right.get(b))
        .collect();
    buckets.sort_unstable();
    buckets.dedup();

    let state = tx
        .query_opt(
            &format!(
                "SELECT status, rows_copied, cursor, (SELECT count(*)::int8 FROM {} p \
                   WHERE p.table_name = s.table_name AND p.predicate = s.predicate \
                     AND p.direction = s.direction) \
                 FROM {} s WHERE table_name = $1 AND predicate = '' AND direction = 'forward'",
                names.backfill_pending(),
                names.backfill_state()
            ),
            &[&legacy.to_string()],
        )
        .await?;
    let backfill = match &state {
        Some(r) => Backfill {
            status: r.get(0),
            rows_copied: r.get(1),
            cursor: r.get(2),
            pending_rechecks: r.get(3),
        },
        None => Backfill {
            status: "none".into(),
            ..Backfill::default()
        },
    };
    // Missing rows the backfill has not reached: all of them before it starts, those
    // beyond its cursor while it runs, none once it finished.
    let cursor_param: Option<Vec<String>> = match backfill.status.as_str() {
        "finished" => None,
        _ => backfill.cursor.clone(),
    };
    let unreached = match backfill.status.as_str() {
        // `$1` must appear for its type to be known.
        "finished" => "(false AND $1::text[] IS NULL)".to_string(),
        _ => s.beyond_cursor.clone(),
    };

    let mut missing = Mismatches::default();
    let mut extra = Mismatches::default();
    let mut different = Mismatches::default();
    let mut not_yet = 0;
    if !buckets.is_empty() {
        let diff = format!(
            "WITH l AS (SELECT {lk} AS k, {lr} AS r, {unreached} AS unreached FROM {legacy} AS l \
               WHERE (abs(hashtextextended({lk}, 0)) % {BUCKETS})::int4 = ANY($2)), \
             t AS (SELECT {tk} AS k, {tr} AS r FROM {target} AS t \
               WHERE (abs(hashtextextended({tk}, 0)) % {BUCKETS})::int4 = ANY($2)) \
             SELECT coalesce(l.k, t.k), \
               CASE WHEN t.k IS NULL THEN 'missing' WHEN l.k IS NULL THEN 'extra' ELSE 'different' END, \
               coalesce(l.unreached, false) \
             FROM l FULL JOIN t ON l.k = t.k WHERE l.r IS DISTINCT FROM t.r ORDER BY 1",
            lk = s.legacy_key,
            lr = s.legacy_row,
            tk = s.target_key,
            tr = s.target_row,
        );
        for row in tx.query(&diff, &[&cursor_param, &buckets]).await? {
            let key: String = row.get(0);
            let kind: String = row.get(1);
            let unreached: bool = row.get(2);
            let bucket = match kind.as_str() {
                "missing" => {
                    if unreached {
                        not_yet += 1;
                    }
                    &mut missing
                }
                "extra" => &mut extra,
                _ => &mut different,
            };
            bucket.count += 1;
            if bucket.sample_keys.len() < options.sample_limit {
                bucket.sample_keys.push(key);
            }
        }
    }
    let divergence = missing.count - not_yet + extra.count + different.count;
    let unresolved_drift: i64 = tx
        .query_one(
            "SELECT count(*)::int8 FROM tandem.drift WHERE rule_table = $1 AND NOT resolved",
            &[&legacy.to_string()],
        )
        .await?
        .get(0);
    let guard_drift = guard_drift(tx, legacy).await?;
    let resync = crate::control::store::resync::state(tx, names, &legacy.to_string()).await?;
    let shadow = shadow_stats(tx, names, legacy, options.min_overlap).await?;
    let read_shapes = shapes::of_table(tx, names, legacy, options, shadow_config).await?;
    let guard = Guard {
        policy: rule.rule.guard.as_str().to_string(),
        state: guard_state
            .as_ref()
            .map(|g| g.state.clone())
            .unwrap_or_else(|| "missing".into()),
        follows_ddl: guard_state.as_ref().is_some_and(|g| g.follows_ddl),
    };
    let schema_started = Instant::now();
    let facts = schema::facts(tx, rule, columns, true).await?;
    let schema_seconds = schema_started.elapsed().as_secs_f64();
    let mode = rule.rule.mode;
    let mut checks = vec![
        Check {
            name: "mode",
            ok: mode != Mode::Off,
            detail: format!("mode is {mode}"),
        },
        guard_check(rule, &guard),
    ];
    checks.extend(facts.checks(rule, options.strict_indexes));
    checks.extend([
        Check {
            name: "backfill",
            ok: backfill.status == "finished" && backfill.pending_rechecks == 0,
            detail: match backfill.status.as_str() {
                "finished" if backfill.pending_rechecks > 0 => format!(
                    "finished, {} rows copied, but the copies of {} batches are not re-checked yet (a session held an older snapshot): run tandem backfill again once it ends",
                    backfill.rows_copied, backfill.pending_rechecks
                ),
                "finished" => format!("finished, {} rows copied", backfill.rows_copied),
                "none" => "never ran: run tandem backfill".into(),
                other => format!(
                    "{other}, {} rows copied so far, {not_yet} legacy rows not reached yet",
                    backfill.rows_copied
                ),
            },
        },
    ]);
    if let Some(owed) = &resync {
        checks.push(Check {
            name: "resync",
            ok: owed.done(),
            detail: if owed.done() {
                format!("legacy re-synced from the target after target_only: {}", owed.describe())
            } else {
                format!(
                    "the legacy table came back from target_only and its re-sync from the target is {}: run tandem backfill --table {legacy} --reverse (the divergence below is what it has still to fix)",
                    owed.describe()
                )
            },
        });
    }
    checks.extend([
        Check {
            name: "divergence",
            ok: divergence == 0,
            detail: format!(
                "{divergence} rows diverge ({} missing behind the backfill, {} extra in target, {} different)",
                missing.count - not_yet,
                extra.count,
                different.count
            ),
        },
        Check {
            name: "drift",
            ok: unresolved_drift == 0,
            detail: if guard_drift.unresolved > 0 {
                format!(
                    "{unresolved_drift} unresolved drift records ({} recorded by the guard: changes made around the proxy)",
                    guard_drift.unresolved
                )
            } else {
                format!("{unresolved_drift} unresolved drift records")
            },
        },
    ]);
    if options.min_samples > 0 {
        let ok = shadow.samples >= options.min_samples
            && shadow.mean_overlap.unwrap_or(0.0) >= options.min_overlap;
        checks.push(Check {
            name: "shadow_overlap",
            ok,
            detail: match shadow.mean_overlap {
                Some(mean) => format!(
                    "{} samples (need {}), mean overlap {mean:.3} (need {:.2}), {} below",
                    shadow.samples, options.min_samples, options.min_overlap, shadow.below_threshold
                ),
                None if rule.rule.sample_rate > 0.0 => format!(
                    "no shadow-read samples yet (need {}); at sample rate {} that takes about {:.0} reads of the table through Tandem",
                    options.min_samples,
                    rule.rule.sample_rate,
                    options.min_samples as f64 / rule.rule.sample_rate
                ),
                None => format!(
                    "no shadow-read samples yet (need {}); set the rule's sample rate (SET RULE ... SAMPLE)",
                    options.min_samples
                ),
            },
        });
    }
    if options.min_samples > 0 {
        checks.extend(shapes::checks(
            &read_shapes,
            options.min_coverage,
            options.max_slowdown,
            options.slowdown_floor_ms,
        ));
    }
    let ready = checks.iter().all(|c| c.ok);
    Ok(TableReport {
        table: legacy.to_string(),
        target: target.to_string(),
        mode: mode.to_string(),
        legacy_rows,
        target_rows,
        delta: legacy_rows - target_rows,
        missing,
        extra,
        different,
        not_yet_backfilled: not_yet,
        divergence,
        unresolved_drift,
        guard_drift,
        guard,
        schema: schema::Schema {
            seconds: schema_seconds,
            ..schema::Schema::from_checks(&checks, &facts.constraints)
        },
        columns: facts.columns,
        access: facts.access,
        foreign_keys: facts.foreign_keys,
        constraints: facts.constraints,
        triggers: facts.triggers,
        backfill,
        resync,
        shadow,
        shapes: read_shapes,
        checks,
        ready,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The `guard` check: in a mode that guards a table (`dual_write`, `union_read`, `cutover`)
/// a guard the rule asks for must be in place. `guard = off` passes: the operator chose it,
/// and the detail says what it leaves uncaught.
fn guard_check(rule: &ResolvedRule, guard: &Guard) -> Check {
    let table = &rule.rule.table;
    let policy = &guard.policy;
    let guarded = matches!(
        rule.rule.mode,
        Mode::DualWrite | Mode::UnionRead | Mode::Cutover
    );
    let (ok, detail) = if policy == "off" {
        let mut detail = "guard off: changes made around the proxy are not caught".to_string();
        if guard.state != "off" {
            detail.push_str(&format!(
                " (a guard is still installed: {}; SET RULE {table} GUARD off removes it)",
                guard.state
            ));
        }
        (true, detail)
    } else if !guarded {
        (
            true,
            format!(
                "mode {} guards neither table (guard {policy}: {})",
                rule.rule.mode, guard.state
            ),
        )
    } else if guard.state == "in place" {
        let mut detail = format!("guard {policy} in place");
        if !guard.follows_ddl {
            detail.push_str(
                "; column changes are not followed (no event trigger: it needs a superuser)",
            );
        }
        (true, detail)
    } else {
        (
            false,
            format!(
                "guard {policy} is {}: changes made around the proxy are not caught; \
                 SET RULE {table} GUARD {policy} installs it again (or restart the proxy)",
                guard.state
            ),
        )
    };
    Check {
        name: "guard",
        ok,
        detail,
    }
}

/// The unresolved drift the guard recorded for `table`: the count and the latest rows.
async fn guard_drift(tx: &Transaction<'_>, table: &TableName) -> Result<GuardDrift, ParityError> {
    let table = table.to_string();
    let unresolved: i64 = tx
        .query_one(
            "SELECT count(*)::int8 FROM tandem.drift \
             WHERE rule_table = $1 AND NOT resolved AND source = 'guard'",
            &[&table],
        )
        .await?
        .get(0);
    let latest = if unresolved == 0 {
        Vec::new()
    } else {
        tx.query(
            &format!(
                "SELECT to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'), operation, rows, \
                   role, application_name, left(statement, {STATEMENT_CHARS}) \
                 FROM tandem.drift WHERE rule_table = $1 AND NOT resolved AND source = 'guard' \
                 ORDER BY id DESC LIMIT {GUARD_DRIFT_SHOWN}"
            ),
            &[&table],
        )
        .await?
        .iter()
        .map(|r| GuardDriftRow {
            at: r.get(0),
            operation: r.get(1),
            rows: r.get(2),
            role: r.get(3),
            application_name: r.get(4),
            statement: r.get(5),
        })
        .collect()
    };
    Ok(GuardDrift { unresolved, latest })
}

/// Shadow-read figures from `<store>.shadow_samples`, when that table exists.
async fn shadow_stats(
    tx: &Transaction<'_>,
    names: &Store,
    table: &TableName,
    threshold: f64,
) -> Result<Shadow, ParityError> {
    let samples = names.qualified("shadow_samples");
    let exists: bool = tx
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&samples])
        .await?
        .get(0);
    if !exists {
        return Ok(Shadow::default());
    }
    let row = tx
        .query_one(
            &format!(
                "SELECT count(*)::int8, avg(overlap)::float8, min(overlap)::float8, \
                   (percentile_cont(0.05) WITHIN GROUP (ORDER BY overlap))::float8, \
                   count(*) FILTER (WHERE overlap < $2)::int8 \
                 FROM {samples} WHERE rule_table = $1"
            ),
            &[&table.to_string(), &threshold],
        )
        .await?;
    let series = tx
        .query(
            &format!(
                "SELECT extract(epoch FROM at)::float8, overlap::float8 FROM \
                   (SELECT at, overlap FROM {samples} WHERE rule_table = $1 ORDER BY at DESC LIMIT 500) s \
                 ORDER BY at"
            ),
            &[&table.to_string()],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    Ok(Shadow {
        samples: row.get(0),
        mean_overlap: row.get(1),
        min_overlap: row.get(2),
        p05_overlap: row.get(3),
        below_threshold: row.get(4),
        series,
    })
}

impl From<store::OpenError> for ParityError {
    fn from(e: store::OpenError) -> Self {
        match e {
            store::OpenError::Catalog(c) => Self::Catalog(c),
            store::OpenError::Store(s) => Self::Store(s),
        }
    }
}
