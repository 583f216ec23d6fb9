//! `tandem partitions retire`: remove every row older than N months from a RANGE target and,
//! when its rule keeps the legacy table equal to it, from the legacy table, so that both
//! tables lose exactly the same rows.
//!
//! The cutoff is the first day of the month N months ago. On the target, RANGE partitions
//! (at any depth) whose upper bound is at or before it are detached and dropped. That alone
//! misses the target's rows of those months that sit elsewhere: in a DEFAULT partition (a
//! row written for a month that had no partition yet) or in a partition reaching across the
//! cutoff. Those, and the legacy rows of the same months, go in one statement:
//!
//! ```sql
//! WITH target_rows AS (DELETE FROM target WHERE col < cutoff RETURNING 1)
//! DELETE FROM legacy WHERE col < cutoff
//! ```
//!
//! the shape of a write Tandem mirrors, so the guard finds both sides equal whatever its
//! policy (a legacy-only delete would be mirrored, recorded as drift, or failed). Deleting
//! rows one by one is refused unless `allow_delete`. With `apply`, everything runs in one
//! transaction that first locks both tables (EXCLUSIVE: writes wait, reads go on) in the
//! order mirrored writes take them, and counts under those locks, so no write of an old month
//! can slip between the count and the delete.

use tandem_rules::{quote_ident, Mode, TableName};
use tokio_postgres::Transaction;

use super::PartitionsError;
use crate::config::Config;
use crate::control::store;

/// What `retire` found and did: the plan, and whether it ran.
#[derive(Debug, Clone, Default)]
pub struct Retired {
    /// The target.
    pub target: String,
    /// The legacy table, when a rule keeps it equal to the target (its rows go too).
    pub legacy: Option<String>,
    /// The range column.
    pub column: String,
    /// Rows with `column` before this instant go (as the server prints a timestamptz).
    pub cutoff: String,
    /// Partitions entirely before the cutoff (detached and dropped).
    pub partitions: Vec<String>,
    /// Legacy rows before the cutoff (deleted row by row).
    pub legacy_rows: i64,
    /// Target rows before the cutoff outside those partitions (DEFAULT partitions, or a
    /// partition reaching across the cutoff): deleted row by row.
    pub target_rows: i64,
    /// Statements, in order.
    pub steps: Vec<String>,
    /// Whether they ran.
    pub applied: bool,
}

impl Retired {
    /// Whether the plan deletes rows one by one (which needs `--allow-delete`).
    pub fn deletes_rows(&self) -> bool {
        self.legacy_rows > 0 || self.target_rows > 0
    }

    /// Whether there is anything to do.
    pub fn is_empty(&self) -> bool {
        self.partitions.is_empty() && !self.deletes_rows()
    }
}

/// The refusal of an `--apply` that would delete rows without `--allow-delete`.
pub(super) fn needs_allow_delete(plan: &Retired) -> String {
    let mut rows = Vec::new();
    if plan.legacy_rows > 0 {
        rows.push(format!(
            "{} rows of {} (kept equal to {} by its rule)",
            plan.legacy_rows,
            plan.legacy.as_deref().unwrap_or("the legacy table"),
            plan.target
        ));
    }
    if plan.target_rows > 0 {
        rows.push(format!(
            "{} rows of {} outside the retired partitions (in a DEFAULT partition)",
            plan.target_rows, plan.target
        ));
    }
    format!(
        "retiring {} before {} deletes {} one by one; nothing was changed. Pass --allow-delete with --apply to delete them (in the same transaction as the partitions), or give those months partitions of their own first",
        plan.column,
        plan.cutoff,
        rows.join(" and ")
    )
}

/// Plans, and with `apply` runs, the retirement of everything before the first day of the
/// month `months` months ago (see the module doc). Dry run unless `apply`; with `apply`,
/// refused with [`PartitionsError::RowDeleteNotAllowed`] (carrying the plan) when rows must
/// be deleted one by one and `allow_delete` is off.
pub async fn retire(
    config: &Config,
    table: &TableName,
    months: u32,
    apply: bool,
    allow_delete: bool,
) -> Result<Retired, PartitionsError> {
    let store::Opened {
        mut client,
        snapshot,
        ..
    } = store::open(config).await?;
    let rule = store::find(&snapshot, table).map(|r| r.rule.clone());
    let target = rule
        .as_ref()
        .map_or_else(|| table.clone(), |r| r.target.clone());
    // While a rule keeps the legacy table equal to the target, its rows go too.
    let legacy = rule
        .as_ref()
        .filter(|r| !matches!(r.mode, Mode::Off | Mode::TargetOnly))
        .map(|r| r.table.clone());
    // Take the tables in the order mirrored writes do (the target first in cutover).
    let target_first = rule.as_ref().is_some_and(|r| r.mode == Mode::Cutover);
    let tx = client.transaction().await?;
    let column = range_column(&tx, &target).await?;
    let col = quote_ident(&column);
    let mut locks = Vec::new();
    if let Some(legacy) = &legacy {
        locks.push(format!("LOCK TABLE {legacy} IN EXCLUSIVE MODE"));
        locks.push(format!("LOCK TABLE {target} IN EXCLUSIVE MODE"));
        if target_first {
            locks.reverse();
        }
    }
    if apply {
        for lock in &locks {
            tx.batch_execute(lock).await?;
        }
    }
    let cutoff: String = tx
        .query_one(
            &format!("SELECT (date_trunc('month', now()) - interval '{months} months')::timestamptz::text"),
            &[],
        )
        .await?
        .get(0);
    let lit = store::quote_literal(&cutoff);
    let mut plan = Retired {
        target: target.to_string(),
        legacy: legacy.as_ref().map(ToString::to_string),
        column: column.clone(),
        cutoff: cutoff.clone(),
        ..Retired::default()
    };
    let mut drops = Vec::new();
    for (partition, parent) in old_partitions(&tx, &target, &cutoff).await? {
        drops.push(format!("ALTER TABLE {parent} DETACH PARTITION {partition}"));
        drops.push(format!("DROP TABLE {partition}"));
        plan.partitions.push(partition);
    }
    // Target rows before the cutoff that dropping the partitions leaves behind.
    let in_partitions: String = plan
        .partitions
        .iter()
        .map(|p| format!(" - (SELECT count(*) FROM {p})"))
        .collect();
    plan.target_rows = tx
        .query_one(
            &format!(
                "SELECT ((SELECT count(*) FROM {target} WHERE {col} < {lit}){in_partitions})::int8"
            ),
            &[],
        )
        .await?
        .get(0);
    if let Some(legacy) = &legacy {
        plan.legacy_rows = tx
            .query_one(
                &format!("SELECT count(*)::int8 FROM {legacy} WHERE {col} < {lit}"),
                &[],
            )
            .await?
            .get(0);
    }
    if plan.is_empty() {
        return Ok(plan);
    }
    plan.steps.extend(locks);
    plan.steps.extend(drops);
    match &legacy {
        // One statement for both tables, as Tandem mirrors a delete.
        Some(legacy) if plan.deletes_rows() => plan.steps.push(format!(
            "WITH target_rows AS (DELETE FROM {target} WHERE {col} < {lit} RETURNING 1) \
             DELETE FROM {legacy} WHERE {col} < {lit}"
        )),
        None if plan.target_rows > 0 => plan
            .steps
            .push(format!("DELETE FROM {target} WHERE {col} < {lit}")),
        _ => {}
    }
    if !apply {
        return Ok(plan);
    }
    if plan.deletes_rows() && !allow_delete {
        return Err(PartitionsError::RowDeleteNotAllowed(Box::new(plan)));
    }
    for step in plan.steps.iter().filter(|s| !s.starts_with("LOCK TABLE")) {
        tx.batch_execute(step).await?;
    }
    tx.commit().await?;
    plan.applied = true;
    Ok(plan)
}

/// The column the target (or its sub-partitions) is RANGE-partitioned on.
async fn range_column(tx: &Transaction<'_>, target: &TableName) -> Result<String, PartitionsError> {
    let columns: Vec<String> = tx
        .query(
            "WITH RECURSIVE tree AS ( \
               SELECT $1::text::regclass::oid AS oid \
               UNION ALL SELECT i.inhrelid FROM pg_inherits i JOIN tree t ON i.inhparent = t.oid) \
             SELECT DISTINCT a.attname::text FROM tree t \
             JOIN pg_partitioned_table p ON p.partrelid = t.oid AND p.partstrat = 'r' AND p.partnatts = 1 \
             JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0]",
            &[&target.to_string()],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    match columns.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(PartitionsError::Refused(format!(
            "{target} has no RANGE partitions on one column; retire removes old months of a RANGE layout (range(col) monthly)"
        ))),
        many => Err(PartitionsError::Refused(format!(
            "{target} is RANGE-partitioned on several columns ({}); retire needs one range column",
            many.join(", ")
        ))),
    }
}

/// RANGE partitions (at any depth) whose upper bound is at or before `cutoff`, with their
/// parents.
async fn old_partitions(
    tx: &Transaction<'_>,
    target: &TableName,
    cutoff: &str,
) -> Result<Vec<(String, String)>, PartitionsError> {
    let rows = tx
        .query(
            "WITH RECURSIVE tree AS ( \
               SELECT inhrelid AS oid, inhparent AS parent FROM pg_inherits WHERE inhparent = $1::text::regclass \
               UNION ALL SELECT i.inhrelid, i.inhparent FROM pg_inherits i JOIN tree t ON i.inhparent = t.oid) \
             SELECT t.oid::regclass::text, t.parent::regclass::text \
             FROM tree t JOIN pg_class c ON c.oid = t.oid \
             JOIN pg_partitioned_table p ON p.partrelid = t.parent AND p.partstrat = 'r' AND p.partnatts = 1 \
             WHERE substring(pg_get_expr(c.relpartbound, c.oid) from 'TO \\(''([^'']*)''\\)')::timestamptz <= $2::text::timestamptz \
             ORDER BY 1",
            &[&target.to_string(), &cutoff],
        )
        .await?;
    let all: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    // A retired partition's own sub-partitions go with it.
    Ok(all
        .iter()
        .filter(|(_, parent)| !all.iter().any(|(p, _)| p == parent))
        .cloned()
        .collect())
}
