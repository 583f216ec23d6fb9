//! `tandem purge`: remove one scope (a tenant, say) from the legacy table and its target so
//! that they stay equal, preferring whole partitions to row-by-row deletes.
//!
//! `--where "<col> = <value>"` names the scope. When the target has a LIST partition for
//! exactly that value (`FOR VALUES IN (value)` on that column), the partition is truncated;
//! the legacy table's rows of the scope are deleted in the same transaction (or its own
//! partition truncated, when it is partitioned the same way). Doing both in one transaction
//! keeps them equal under live dual-write traffic: the transaction takes the legacy table
//! (EXCLUSIVE: writes wait, reads go on) and the target partition in the order mirrored
//! writes take them, so a write of that scope waits and then lands in both tables, and no
//! writer can deadlock with the purge. Without such
//! a partition (`--mode delete`, or `auto` falling back), rows go in batches, each batch one
//! mirrored DELETE (legacy and target together, as Tandem rewrites it). Dry run by default:
//! the plan is printed and nothing is changed until `--apply`. `--fail-on-delete` refuses any
//! plan that needs a row-by-row delete.

use tandem_rules::{quote_ident, Mode, Plan, TableName};
use tokio_postgres::Client;

use crate::config::Config;
use crate::control::catalog::{self, CatalogError};
use crate::control::store;

/// How to remove the scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurgeMode {
    /// Partitions when possible, else batched deletes.
    Auto,
    /// Partitions only; refused when none holds exactly the scope.
    Partition,
    /// Batched deletes.
    Delete,
}

/// What `tandem purge` was asked.
#[derive(Debug, Clone)]
pub struct Options {
    /// Legacy table.
    pub table: TableName,
    /// The scope column.
    pub column: String,
    /// The scope value (as text).
    pub value: String,
    /// How.
    pub mode: PurgeMode,
    /// Do it (else only the plan).
    pub apply: bool,
    /// Refuse plans with row-by-row deletes.
    pub fail_on_delete: bool,
    /// Rows per delete batch.
    pub batch_size: i64,
}

/// Why a purge failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PurgeError {
    /// Reaching or reading the database failed.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] crate::control::store::StoreError),
    /// A query failed.
    #[error("{}", catalog::describe(.0))]
    Query(#[from] tokio_postgres::Error),
    /// The plan is not allowed.
    #[error("{0}")]
    Refused(String),
}

/// The plan, and what was done.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Steps, as SQL or descriptions, in order.
    pub steps: Vec<String>,
    /// Rows of the scope in legacy before.
    pub legacy_rows: i64,
    /// Rows of the scope in the target before.
    pub target_rows: i64,
    /// Whether the steps ran.
    pub applied: bool,
}

/// Parses `col = value` (value quoted or bare).
pub fn parse_scope(text: &str) -> Result<(String, String), String> {
    let (col, value) = text
        .split_once('=')
        .ok_or("--where must be <column> = <value>")?;
    let col = col.trim();
    let name = TableName::parse(col).map_err(|e| e.to_string())?;
    if name.schema.is_some() || col.is_empty() {
        return Err(format!(
            "--where: \"{col}\" is not a column name; write <column> = <value>, e.g. tenant = 'acme'"
        ));
    }
    let value = value.trim();
    let value = match value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
        Some(inner) => inner.replace("''", "'"),
        None => value.to_string(),
    };
    if value.is_empty() {
        return Err("--where needs a value".into());
    }
    Ok((name.name, value))
}

/// The LIST partition of `table` holding exactly `value` of `column`, if any.
async fn exact_partition(
    client: &Client,
    table: &TableName,
    column: &str,
    value: &str,
) -> Result<Option<String>, PurgeError> {
    let row = client
        .query_opt(
            "SELECT c.oid::regclass::text FROM pg_partitioned_table p \
             JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0] \
             JOIN pg_inherits i ON i.inhparent = p.partrelid JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE p.partrelid = to_regclass($1) AND p.partstrat = 'l' AND p.partnatts = 1 \
               AND a.attname = $2 AND pg_get_expr(c.relpartbound, c.oid) = 'FOR VALUES IN (' || $3 || ')'",
            &[&table.to_string(), &column, &store::quote_literal(value)],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}

/// Plans and (with `apply`) runs the purge.
pub async fn run(config: &Config, options: &Options) -> Result<Report, PurgeError> {
    let store::Opened {
        mut client,
        snapshot,
        ..
    } = store::open(config).await?;
    let legacy = &options.table;
    let rule = store::find(&snapshot, legacy).map(|r| r.rule.clone());
    let active = rule.as_ref().filter(|r| r.mode != Mode::Off);
    let target = active.map(|r| r.target.clone());
    let col = quote_ident(&options.column);
    let lit = store::quote_literal(&options.value);
    let count = |t: &TableName| format!("SELECT count(*)::int8 FROM {t} WHERE {col} = {lit}");
    let mut report = Report {
        legacy_rows: client.query_one(&count(legacy), &[]).await?.get(0),
        ..Report::default()
    };
    if let Some(t) = &target {
        report.target_rows = client.query_one(&count(t), &[]).await?.get(0);
    }
    let legacy_part = exact_partition(&client, legacy, &options.column, &options.value).await?;
    let target_part = match &target {
        Some(t) => exact_partition(&client, t, &options.column, &options.value).await?,
        None => None,
    };
    // Whole partitions when the target (if ruled) has one for exactly the scope.
    let partition_path = match (options.mode, &target, &target_part) {
        (PurgeMode::Delete, _, _) => false,
        (PurgeMode::Partition, Some(t), None) => {
            return Err(PurgeError::Refused(format!(
                "no partition of {t} holds exactly {} = {lit}; use --mode auto or delete",
                options.column
            )))
        }
        (_, Some(_), None) => false,
        (PurgeMode::Partition, None, _) if legacy_part.is_none() => {
            return Err(PurgeError::Refused(format!(
                "no partition of {legacy} holds exactly {} = {lit}; use --mode auto or delete",
                options.column
            )))
        }
        _ => true,
    };
    let needs_delete = if partition_path {
        legacy_part.is_none() && report.legacy_rows > 0
    } else {
        report.legacy_rows > 0 || report.target_rows > 0
    };
    if options.fail_on_delete && needs_delete {
        return Err(PurgeError::Refused(format!(
            "purging {} = {lit} needs a row-by-row delete ({} legacy rows are not in a partition of their own); --fail-on-delete refuses it",
            options.column, report.legacy_rows
        )));
    }
    if partition_path {
        // One transaction, taking the tables in the order mirrored writes take them (legacy
        // first, or the target first in cutover), so no writer can deadlock with it: a write
        // of the scope waits and lands in both tables after the purge commits.
        let cutover = active.is_some_and(|r| r.mode == Mode::Cutover);
        let lock_legacy = format!("LOCK TABLE {legacy} IN EXCLUSIVE MODE");
        let truncate_target = target_part.as_ref().map(|p| format!("TRUNCATE {p}"));
        if cutover {
            report.steps.extend(truncate_target.clone());
            report.steps.push(lock_legacy);
        } else {
            report.steps.push(lock_legacy);
            report.steps.extend(truncate_target);
        }
        match &legacy_part {
            Some(p) => report.steps.push(format!("TRUNCATE {p}")),
            None if report.legacy_rows > 0 => report
                .steps
                .push(format!("DELETE FROM {legacy} WHERE {col} = {lit}")),
            None => {}
        }
        if options.apply {
            let tx = client.transaction().await?;
            for step in &report.steps {
                tx.batch_execute(step).await?;
            }
            tx.commit().await?;
            report.applied = true;
        }
        return Ok(report);
    }
    // Batched deletes, each one mirrored DELETE (legacy and target in one statement).
    let delete = format!(
        "DELETE FROM {legacy} WHERE ctid = ANY (ARRAY(SELECT ctid FROM {legacy} WHERE {col} = {lit} LIMIT {}))",
        options.batch_size.max(1)
    );
    let statement = match (&rule, active) {
        (Some(r), Some(_)) => {
            let resolved = catalog::resolve(&client, std::slice::from_ref(r), 0).await?;
            match tandem_rules::plan(&delete, &resolved, &[]) {
                Plan::Rewritten(s) if s.len() == 1 => s[0].sql.clone(),
                Plan::Reject(r) => {
                    return Err(PurgeError::Refused(format!(
                        "cannot build the mirrored delete: {}{}",
                        r.message,
                        r.hint
                            .as_deref()
                            .map(|h| format!(" (hint: {h})"))
                            .unwrap_or_default()
                    )))
                }
                _ => {
                    return Err(PurgeError::Refused(format!(
                        "cannot build the mirrored delete of {legacy}: the rule does not \
                         rewrite it as one statement; purge with --mode partition, or set the \
                         rule to off first"
                    )))
                }
            }
        }
        _ => delete,
    };
    report
        .steps
        .push(format!("repeat until no row is left: {statement}"));
    if options.apply {
        loop {
            let n = client.execute(&statement, &[]).await?;
            if n == 0 {
                break;
            }
        }
        // A target partition for the scope (if any) is now empty too.
        report.applied = true;
    }
    Ok(report)
}

impl From<store::OpenError> for PurgeError {
    fn from(e: store::OpenError) -> Self {
        match e {
            store::OpenError::Catalog(c) => Self::Catalog(c),
            store::OpenError::Store(s) => Self::Store(s),
        }
    }
}
