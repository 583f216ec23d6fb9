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

/// Buckets of the first, summarising pass.
const BUCKETS: i32 = 1024;

/// Latest guard drift rows shown per table.
const GUARD_DRIFT_SHOWN: i64 = 5;

/// Characters of a guard drift row's statement shown.
const STATEMENT_CHARS: i32 = 200;

/// Shadow-read samples the `shadow_overlap` check needs by default (`--min-samples`).
pub const GATE_MIN_SAMPLES: i64 = 20;

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

/// A column both tables have, with different types.
#[derive(Debug, Clone, Serialize)]
pub struct TypeDifference {
    /// Column name.
    pub column: String,
    /// `format_type` in the legacy table.
    pub legacy_type: String,
    /// `format_type` in the target.
    pub target_type: String,
}

/// How the two tables' columns differ (the `columns` check gates on missing and narrowed ones).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ColumnDifferences {
    /// Legacy columns the target does not have (not mirrored), in legacy order.
    pub missing_in_target: Vec<String>,
    /// Columns in both whose types differ, in legacy order.
    pub type_differs: Vec<TypeDifference>,
    /// Of those, the ones whose target type does not hold every value of the legacy type
    /// (see [`crate::ops::widening`]).
    pub narrowed: Vec<String>,
    /// Non-null legacy values of each missing column: what cutting over would lose.
    pub missing_values: Vec<MissingValues>,
    /// Missing columns the rule declares left behind on purpose (`drop_columns`): listed,
    /// not failed.
    pub dropped: Vec<String>,
}

/// A legacy column the target lacks, and how many non-null values it holds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MissingValues {
    /// Column name.
    pub column: String,
    /// `count(column)` in the legacy table, in the report's snapshot.
    pub non_null: i64,
}

impl ColumnDifferences {
    /// A sentence for each column the target narrows.
    pub fn narrowing_problems(&self) -> Vec<String> {
        self.type_differs
            .iter()
            .filter(|t| self.narrowed.contains(&t.column))
            .map(|t| {
                format!(
                    "column {} is {} on the target, which does not hold every {} value",
                    t.column, t.target_type, t.legacy_type
                )
            })
            .collect()
    }

    /// No difference.
    pub fn is_empty(&self) -> bool {
        self.missing_in_target.is_empty() && self.type_differs.is_empty()
    }
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
    /// Backfill progress.
    pub backfill: Backfill,
    /// Shadow-read figures.
    pub shadow: Shadow,
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
        tables.push(table_report(&tx, &names, rule, state, options).await?);
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

fn shape(rule: &ResolvedRule) -> Shape {
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
    let cols = &rule.shape.mirrored_columns;
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
        legacy_row: format!("ROW({})::text", list("l", cols)),
        target_key: format!("ROW({})::text", list("t", key)),
        target_row: format!("ROW({})::text", list("t", cols)),
        beyond_cursor: format!("($1::text[] IS NULL OR ({key_cols}) > ({typed}))"),
    }
}

async fn table_report(
    tx: &Transaction<'_>,
    names: &Store,
    rule: &ResolvedRule,
    guard_state: Option<GuardState>,
    options: &Options,
) -> Result<TableReport, ParityError> {
    let started = Instant::now();
    let s = shape(rule);
    let legacy = &rule.rule.table;
    let target = &rule.rule.target;
    let summary = |table: &TableName, alias: &str, key: &str, row: &str| {
        format!(
            "SELECT (abs(hashtextextended({key}, 0)) % {BUCKETS})::int4, count(*)::int8, \
               bit_xor(hashtextextended({row}, 0))::int8 FROM {table} AS {alias} GROUP BY 1"
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
                "SELECT status, rows_copied, cursor FROM {} WHERE table_name = $1 AND predicate = ''",
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
    let shadow = shadow_stats(tx, names, legacy, options.min_overlap).await?;
    let guard = Guard {
        policy: rule.rule.guard.as_str().to_string(),
        state: guard_state
            .as_ref()
            .map(|g| g.state.clone())
            .unwrap_or_else(|| "missing".into()),
        follows_ddl: guard_state.as_ref().is_some_and(|g| g.follows_ddl),
    };
    let mut columns = column_differences(rule);
    columns.dropped = columns
        .missing_in_target
        .iter()
        .filter(|c| rule.rule.drop_columns.contains(c))
        .cloned()
        .collect();
    for column in &columns.missing_in_target {
        let non_null: i64 = tx
            .query_one(
                &format!(
                    "SELECT count({})::int8 FROM {}",
                    tandem_rules::quote_ident(column),
                    rule.rule.table
                ),
                &[],
            )
            .await?
            .get(0);
        columns.missing_values.push(MissingValues {
            column: column.clone(),
            non_null,
        });
    }
    let access =
        crate::control::access::differences(tx, &rule.rule.table, &rule.rule.target).await?;
    let foreign_keys =
        crate::control::foreign_keys::problems(tx, &rule.rule.table, &rule.rule.target).await?;
    let constraints =
        crate::ops::constraints::missing(tx, &rule.rule.table, &rule.rule.target).await?;

    let mode = rule.rule.mode;
    let mut checks = vec![
        Check {
            name: "mode",
            ok: mode != Mode::Off,
            detail: format!("mode is {mode}"),
        },
        guard_check(rule, &guard),
        Check {
            name: "access",
            ok: access.is_empty(),
            detail: if access.is_empty() {
                "row level security, policies, privileges and owner are the same on both tables"
                    .into()
            } else {
                format!(
                    "{} access rules differ (reads or writes moved to the target would see or change other rows): {}",
                    access.len(),
                    access.join("; ")
                )
            },
        },
        columns_check(&columns),
        constraints_check(&constraints),
        Check {
            name: "foreign_keys",
            ok: foreign_keys.is_empty(),
            detail: if foreign_keys.is_empty() {
                "no foreign key references the legacy table; the target has the legacy table's own"
                    .into()
            } else {
                foreign_keys
                    .iter()
                    .map(|p| p.describe())
                    .collect::<Vec<_>>()
                    .join("; ")
            },
        },
        Check {
            name: "backfill",
            ok: backfill.status == "finished",
            detail: match backfill.status.as_str() {
                "finished" => format!("finished, {} rows copied", backfill.rows_copied),
                "none" => "never ran: run tandem backfill".into(),
                other => format!(
                    "{other}, {} rows copied so far, {not_yet} legacy rows not reached yet",
                    backfill.rows_copied
                ),
            },
        },
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
    ];
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
                None => format!(
                    "no shadow-read samples yet (need {}); set the rule's sample rate (SET RULE ... SAMPLE)",
                    options.min_samples
                ),
            },
        });
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
        columns,
        access,
        foreign_keys,
        constraints,
        backfill,
        shadow,
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

/// The `constraints` check: fails while the target lacks a NOT NULL, CHECK or unique rule
/// of the legacy table (it would stop enforcing it); a missing plain index is only a warning.
fn constraints_check(missing: &crate::ops::constraints::MissingRules) -> Check {
    let mut parts = missing.data_rule_problems();
    let ok = parts.is_empty();
    for index in &missing.indexes {
        parts.push(format!(
            "warning: no counterpart on the target for index {index} (reads get slower, nothing is lost)"
        ));
    }
    Check {
        name: "constraints",
        ok,
        detail: if parts.is_empty() {
            "the target keeps every NOT NULL, CHECK, unique rule and index of the legacy table"
                .into()
        } else {
            parts.join("; ")
        },
    }
}

/// The `columns` check: every legacy column is on the target with a type that holds all
/// its values; a missing or narrowed column fails, named, with what it would lose.
fn columns_check(columns: &ColumnDifferences) -> Check {
    let mut problems: Vec<String> = columns
        .missing_values
        .iter()
        .filter(|m| !columns.dropped.contains(&m.column))
        .map(|m| {
            format!(
                "legacy column {} is not on the target ({} non-null values would be lost)",
                m.column, m.non_null
            )
        })
        .collect();
    problems.extend(columns.narrowing_problems());
    let dropped = if columns.dropped.is_empty() {
        String::new()
    } else {
        format!(
            " (left behind on purpose, drop_columns: {})",
            columns.dropped.join(", ")
        )
    };
    Check {
        name: "columns",
        ok: problems.is_empty(),
        detail: if problems.is_empty() {
            format!(
                "every legacy column is on the target with a type that holds its values{dropped}"
            )
        } else {
            format!(
                "{}; add or widen them on the target and backfill again",
                problems.join("; ")
            )
        },
    }
}

/// Legacy columns the target lacks, and columns whose types differ, from the resolved
/// shape (`format_type` of both tables).
pub(crate) fn column_differences(rule: &ResolvedRule) -> ColumnDifferences {
    let mut out = ColumnDifferences::default();
    for column in &rule.shape.legacy_table {
        match rule.shape.target_column(&column.name) {
            None => out.missing_in_target.push(column.name.clone()),
            Some(t) if t.sql_type != column.sql_type => {
                if !crate::ops::widening::holds(&column.sql_type, &t.sql_type) {
                    out.narrowed.push(column.name.clone());
                }
                out.type_differs.push(TypeDifference {
                    column: column.name.clone(),
                    legacy_type: column.sql_type.clone(),
                    target_type: t.sql_type.clone(),
                })
            }
            Some(_) => {}
        }
    }
    out
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

/// The report as a readable table.
pub fn text(report: &Report) -> String {
    let mut out = String::new();
    for t in &report.tables {
        out.push_str(&format!(
            "{} -> {} [{}]: {}\n",
            t.table,
            t.target,
            t.mode,
            if t.ready { "READY" } else { "NOT READY" }
        ));
        out.push_str(&format!(
            "  rows: legacy {} / target {} / delta {}\n  missing {} (not yet backfilled {}), extra {}, different {}; divergence {}; unresolved drift {}\n",
            t.legacy_rows,
            t.target_rows,
            t.delta,
            t.missing.count,
            t.not_yet_backfilled,
            t.extra.count,
            t.different.count,
            t.divergence,
            t.unresolved_drift
        ));
        for (kind, m) in [
            ("missing", &t.missing),
            ("extra", &t.extra),
            ("different", &t.different),
        ] {
            if !m.sample_keys.is_empty() {
                out.push_str(&format!("  {kind} keys: {}\n", m.sample_keys.join(" ")));
            }
        }
        if t.guard_drift.unresolved > 0 {
            out.push_str(&format!(
                "  guard drift: {} unresolved (changes made around the proxy), latest:\n",
                t.guard_drift.unresolved
            ));
            for d in &t.guard_drift.latest {
                out.push_str(&format!("    {}\n", guard_drift_line(d)));
            }
        }
        if !t.columns.missing_in_target.is_empty() {
            out.push_str(&format!(
                "  columns missing from the target (not mirrored): {}\n",
                t.columns.missing_in_target.join(", ")
            ));
        }
        if !t.columns.type_differs.is_empty() {
            out.push_str(&format!(
                "  column types differ (legacy -> target): {}\n",
                type_differences(&t.columns)
            ));
        }
        for c in &t.checks {
            out.push_str(&format!(
                "  [{}] {}: {}\n",
                if c.ok { "ok" } else { "FAIL" },
                c.name,
                c.detail
            ));
        }
    }
    out.push_str(&format!(
        "{} table(s), {:.2} s: {}\n",
        report.tables.len(),
        report.seconds,
        if report.ready { "ready" } else { "not ready" }
    ));
    out
}

/// One guard drift row on one line: when, what, how many rows, who, and the statement.
fn guard_drift_line(d: &GuardDriftRow) -> String {
    let rows = d.rows.map(|n| format!(" {n} row(s)")).unwrap_or_default();
    let statement: String = d
        .statement
        .as_deref()
        .unwrap_or("")
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    format!(
        "{} {}{rows} by {} ({}): {}",
        d.at,
        d.operation,
        d.role.as_deref().unwrap_or("?"),
        d.application_name.as_deref().unwrap_or(""),
        statement
    )
}

/// `col legacy_type -> target_type, ...`.
fn type_differences(c: &ColumnDifferences) -> String {
    c.type_differs
        .iter()
        .map(|d| format!("{} {} -> {}", d.column, d.legacy_type, d.target_type))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The report as a self-contained HTML page: a summary table per table and, when there are
/// shadow samples, a chart of overlap over time (inline SVG, no scripts, no network).
pub fn html(report: &Report) -> String {
    fn esc(s: &str) -> String {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    }
    let mut body = String::new();
    for t in &report.tables {
        body.push_str(&format!(
            "<section><h2>{} &rarr; {} <span class=\"{}\">{}</span></h2>",
            esc(&t.table),
            esc(&t.target),
            if t.ready { "ok" } else { "fail" },
            if t.ready { "ready" } else { "not ready" }
        ));
        body.push_str(&format!(
            "<table><tr><th>mode</th><th>legacy rows</th><th>target rows</th><th>delta</th><th>missing</th><th>not yet backfilled</th><th>extra</th><th>different</th><th>divergence</th><th>drift</th></tr>\
             <tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr></table>",
            esc(&t.mode), t.legacy_rows, t.target_rows, t.delta, t.missing.count,
            t.not_yet_backfilled, t.extra.count, t.different.count, t.divergence, t.unresolved_drift
        ));
        body.push_str(&format!(
            "<p>guard: {} ({}{})</p>",
            esc(&t.guard.policy),
            esc(&t.guard.state),
            if t.guard.follows_ddl || t.guard.state != "in place" {
                ""
            } else {
                ", column changes not followed"
            }
        ));
        body.push_str("<ul>");
        for c in &t.checks {
            body.push_str(&format!(
                "<li class=\"{}\">{}: {}</li>",
                if c.ok { "ok" } else { "fail" },
                c.name,
                esc(&c.detail)
            ));
        }
        body.push_str("</ul>");
        if t.guard_drift.unresolved > 0 {
            body.push_str(&format!(
                "<p>guard drift: {} unresolved (changes made around the proxy), latest:</p>\
                 <table><tr><th>at (UTC)</th><th>operation</th><th>rows</th><th>role</th><th>application_name</th><th>statement</th></tr>",
                t.guard_drift.unresolved
            ));
            for d in &t.guard_drift.latest {
                body.push_str(&format!(
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
                    esc(&d.at),
                    esc(&d.operation),
                    d.rows.map(|n| n.to_string()).unwrap_or_default(),
                    esc(d.role.as_deref().unwrap_or("")),
                    esc(d.application_name.as_deref().unwrap_or("")),
                    esc(d.statement.as_deref().unwrap_or(""))
                ));
            }
            body.push_str("</table>");
        }
        if !t.columns.missing_in_target.is_empty() {
            body.push_str(&format!(
                "<p>columns missing from the target (not mirrored): <code>{}</code></p>",
                esc(&t.columns.missing_in_target.join(", "))
            ));
        }
        if !t.columns.type_differs.is_empty() {
            body.push_str(&format!(
                "<p>column types differ (legacy &rarr; target): <code>{}</code></p>",
                esc(&type_differences(&t.columns))
            ));
        }
        for (kind, m) in [
            ("missing", &t.missing),
            ("extra", &t.extra),
            ("different", &t.different),
        ] {
            if !m.sample_keys.is_empty() {
                body.push_str(&format!(
                    "<p>{kind} keys: <code>{}</code></p>",
                    esc(&m.sample_keys.join(" "))
                ));
            }
        }
        if t.shadow.series.len() > 1 {
            let (x0, x1) = (
                t.shadow.series[0].0,
                t.shadow.series[t.shadow.series.len() - 1].0,
            );
            let span = (x1 - x0).max(1e-9);
            let points: Vec<String> = t
                .shadow
                .series
                .iter()
                .map(|(x, y)| {
                    format!(
                        "{:.1},{:.1}",
                        (x - x0) / span * 580.0 + 10.0,
                        (1.0 - y) * 180.0 + 10.0
                    )
                })
                .collect();
            let threshold_y = (1.0 - report.min_overlap) * 180.0 + 10.0;
            body.push_str(&format!(
                "<p>shadow-read overlap over time ({} samples, threshold {:.2})</p>\
                 <svg width=\"600\" height=\"200\" viewBox=\"0 0 600 200\"><rect x=\"0\" y=\"0\" width=\"600\" height=\"200\" fill=\"#fafafa\"/>\
                 <line x1=\"10\" x2=\"590\" y1=\"{threshold_y:.1}\" y2=\"{threshold_y:.1}\" stroke=\"#c00\" stroke-dasharray=\"4\"/>\
                 <polyline fill=\"none\" stroke=\"#06c\" points=\"{}\"/></svg>",
                t.shadow.samples,
                report.min_overlap,
                points.join(" ")
            ));
        }
        body.push_str("</section>");
    }
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Tandem parity {id}</title>\
         <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px}}\
         .ok{{color:#070}}.fail{{color:#c00}}code{{word-break:break-all}}</style></head>\
         <body><h1>Tandem parity report {id}: {verdict}</h1><p>{n} table(s), {secs:.2} s, minimum overlap {mo:.2}</p>{body}</body></html>",
        id = esc(&report.run_id),
        verdict = if report.ready { "ready" } else { "not ready" },
        n = report.tables.len(),
        secs = report.seconds,
        mo = report.min_overlap,
    )
}

/// Writes `summary.json` and `report.html` under `<out>/<run_id>/`; returns the folder.
pub fn write(report: &Report, out: &std::path::Path) -> std::io::Result<std::path::PathBuf> {
    let dir = out.join(&report.run_id);
    std::fs::create_dir_all(&dir)?;
    let json = serde_json::to_string_pretty(report).map_err(std::io::Error::other)?;
    std::fs::write(dir.join("summary.json"), json)?;
    std::fs::write(dir.join("report.html"), html(report))?;
    Ok(dir)
}

impl From<store::OpenError> for ParityError {
    fn from(e: store::OpenError) -> Self {
        match e {
            store::OpenError::Catalog(c) => Self::Catalog(c),
            store::OpenError::Store(s) => Self::Store(s),
        }
    }
}
