//! `tandem partitions list|ensure|skew`: keep a target's partitions ready and see how rows
//! spread over them.
//!
//! The target's layout is read from the catalog (`pg_partitioned_table`), so these work on
//! any LIST, RANGE or HASH target, whether `tandem init` made it or not:
//!
//! - `list`: every partition (sub-partitions indented) with its bound, rows and bytes;
//! - `ensure`: for a LIST target, the partition for a value (`--value`) or for every value
//!   present in the legacy table (`--all-known`); rows of that value already in the DEFAULT
//!   partition are moved into the new one in the same transaction (PostgreSQL refuses to
//!   create the partition otherwise). For a RANGE target, monthly partitions up to
//!   `--months-ahead` months after the current one. Each ensure takes an advisory lock on the
//!   target, so two instances racing create each partition once; existing partitions are
//!   left alone;
//! - `skew`: exact rows and bytes per leaf partition, the skew ratio (max / mean), hot
//!   (more than twice the mean) and empty partitions, the empty ones that look safe to
//!   drop (see [`Droppable`]), and a verdict: HEALTHY below `--warn` (2), WARNING below
//!   `--rebalance` (5), REBALANCE above;
//! - `retire`: remove every row older than N months from the target and, when the rule
//!   keeps both tables equal, from the legacy table (see [`retire`]).

use tandem_rules::{quote_ident, TableName};
use tokio_postgres::Client;

use crate::config::Config;
use crate::control::catalog::{self, CatalogError};
use crate::control::store;

mod retire;
pub use retire::{retire, Retired};

/// Why a partitions command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PartitionsError {
    /// Reaching or reading the database failed.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] crate::control::store::StoreError),
    /// A query failed.
    #[error("{}", catalog::describe(.0))]
    Query(#[from] tokio_postgres::Error),
    /// The request does not fit the table.
    #[error("{0}")]
    Refused(String),
    /// `retire --apply` would delete rows one by one and `--allow-delete` was not given.
    #[error("{}", retire::needs_allow_delete(.0))]
    RowDeleteNotAllowed(Box<Retired>),
}

/// One partition.
#[derive(Debug, Clone)]
pub struct Partition {
    /// Name (schema-qualified).
    pub name: String,
    /// Its bound as PostgreSQL prints it (`FOR VALUES IN ('acme')`, `DEFAULT`...).
    pub bound: String,
    /// Nesting level: 1 for the target's own partitions, 2 for sub-partitions.
    pub level: i32,
    /// Whether it is itself partitioned.
    pub partitioned: bool,
    /// Rows (exact for leaves in `skew`, the planner's estimate in `list`).
    pub rows: i64,
    /// Bytes on disk, indexes included.
    pub bytes: i64,
}

/// The skew report.
#[derive(Debug, Clone)]
pub struct Skew {
    /// Leaf partitions with their exact row counts.
    pub partitions: Vec<Partition>,
    /// Mean rows per leaf.
    pub mean: f64,
    /// max / mean (0 when the table is empty).
    pub ratio: f64,
    /// Leaves with more than twice the mean.
    pub hot: Vec<String>,
    /// Leaves with no rows.
    pub empty: Vec<String>,
    /// Empty leaves that look safe to drop (see [`droppable`]), with their parents.
    pub droppable: Vec<Droppable>,
    /// HEALTHY, WARNING or REBALANCE.
    pub verdict: &'static str,
}

/// A connection and the rule's target for `table` (or `table` itself when it is not ruled:
/// then the command works on that table).
pub(super) async fn target_of(
    config: &Config,
    table: &TableName,
) -> Result<(Client, TableName, Option<TableName>), PartitionsError> {
    let store::Opened {
        client, snapshot, ..
    } = store::open(config).await?;
    Ok(match store::find(&snapshot, table) {
        Some(r) => (client, r.rule.target.clone(), Some(r.rule.table.clone())),
        None => (client, table.clone(), None),
    })
}

/// Every partition of `table`'s target, depth first.
pub async fn list(
    config: &Config,
    table: &TableName,
) -> Result<(TableName, Vec<Partition>), PartitionsError> {
    let (client, target, _) = target_of(config, table).await?;
    let rows = client
        .query(
            "WITH RECURSIVE tree AS ( \
               SELECT inhrelid AS oid, 1 AS level, ARRAY[inhrelid::regclass::text] AS path \
                 FROM pg_inherits WHERE inhparent = $1::text::regclass \
               UNION ALL \
               SELECT i.inhrelid, t.level + 1, t.path || i.inhrelid::regclass::text \
                 FROM pg_inherits i JOIN tree t ON i.inhparent = t.oid) \
             SELECT t.oid::regclass::text, coalesce(pg_get_expr(c.relpartbound, c.oid), ''), t.level, \
                    c.relkind = 'p', greatest(c.reltuples, 0)::int8, pg_total_relation_size(t.oid)::int8 \
             FROM tree t JOIN pg_class c ON c.oid = t.oid ORDER BY t.path",
            &[&target.to_string()],
        )
        .await?;
    if rows.is_empty() {
        let partitioned: bool = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = to_regclass($1))",
                &[&target.to_string()],
            )
            .await?
            .get(0);
        if !partitioned {
            return Err(PartitionsError::Refused(format!(
                "{target} is not a partitioned table"
            )));
        }
    }
    Ok((
        target,
        rows.iter()
            .map(|r| Partition {
                name: r.get(0),
                bound: r.get(1),
                level: r.get(2),
                partitioned: r.get(3),
                rows: r.get(4),
                bytes: r.get(5),
            })
            .collect(),
    ))
}

/// Exact rows and bytes per leaf partition, and the verdict.
pub async fn skew(
    config: &Config,
    table: &TableName,
    warn: f64,
    rebalance: f64,
) -> Result<(TableName, Skew), PartitionsError> {
    let (target, all) = list(config, table).await?;
    let (client, _, legacy) = target_of(config, table).await?;
    let counts = client
        .query(
            &format!("SELECT tableoid::regclass::text, count(*)::int8 FROM {target} GROUP BY 1"),
            &[],
        )
        .await?;
    let mut leaves: Vec<Partition> = all.into_iter().filter(|p| !p.partitioned).collect();
    for leaf in &mut leaves {
        leaf.rows = counts
            .iter()
            .find(|r| r.get::<_, String>(0) == leaf.name)
            .map_or(0, |r| r.get(1));
    }
    let total: i64 = leaves.iter().map(|p| p.rows).sum();
    let mean = if leaves.is_empty() {
        0.0
    } else {
        total as f64 / leaves.len() as f64
    };
    let max = leaves.iter().map(|p| p.rows).max().unwrap_or(0) as f64;
    let ratio = if mean > 0.0 { max / mean } else { 0.0 };
    let hot = leaves
        .iter()
        .filter(|p| mean > 0.0 && p.rows as f64 > 2.0 * mean)
        .map(|p| p.name.clone())
        .collect();
    let empty: Vec<String> = leaves
        .iter()
        .filter(|p| p.rows == 0)
        .map(|p| p.name.clone())
        .collect();
    let mut droppable = Vec::new();
    for name in &empty {
        if let Some(d) = droppable_leaf(&client, legacy.as_ref(), name).await? {
            droppable.push(d);
        }
    }
    let verdict = if ratio < warn {
        "HEALTHY"
    } else if ratio < rebalance {
        "WARNING"
    } else {
        "REBALANCE"
    };
    Ok((
        target,
        Skew {
            partitions: leaves,
            mean,
            ratio,
            hot,
            empty,
            droppable,
            verdict,
        },
    ))
}

/// An empty partition that looks safe to drop.
#[derive(Debug, Clone)]
pub struct Droppable {
    /// The partition.
    pub name: String,
    /// Its parent.
    pub parent: String,
}

impl Droppable {
    /// The statements that drop it.
    pub fn sql(&self) -> String {
        format!(
            "ALTER TABLE {} DETACH PARTITION {}; DROP TABLE {};",
            self.parent, self.name, self.name
        )
    }
}

/// Whether the empty leaf `name` is a candidate to drop: not a DEFAULT partition, not a
/// RANGE partition of the current month or later (made ahead on purpose), and, when a
/// rule names a legacy table, no legacy row falls within its bounds (its rows would come
/// with the backfill). Such a partition is typically one `auto_partition` made for a write
/// whose transaction then rolled back: the partition stays. When the bounds cannot be
/// checked on the legacy table (a column it lacks), it is not a candidate.
async fn droppable_leaf(
    client: &Client,
    legacy: Option<&TableName>,
    name: &str,
) -> Result<Option<Droppable>, PartitionsError> {
    let Some(row) = client
        .query_opt(
            "SELECT i.inhparent::regclass::text, pg_get_partition_constraintdef(c.oid), \
               pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT', \
               CASE WHEN p.partstrat = 'r' AND format_type(a.atttypid, NULL) IN \
                      ('date', 'timestamp without time zone', 'timestamp with time zone') \
                    THEN coalesce(substring(pg_get_expr(c.relpartbound, c.oid) \
                                    from 'TO \\(''([^'']*)''\\)')::timestamptz \
                                  > date_trunc('month', now()), true) \
                    ELSE false END \
             FROM pg_class c JOIN pg_inherits i ON i.inhrelid = c.oid \
             JOIN pg_partitioned_table p ON p.partrelid = i.inhparent \
             LEFT JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0] \
             WHERE c.oid = $1::text::regclass",
            &[&name],
        )
        .await?
    else {
        return Ok(None);
    };
    let parent: String = row.get(0);
    let constraint: Option<String> = row.get(1);
    let is_default: bool = row.get(2);
    let current_or_later: bool = row.get(3);
    if is_default || current_or_later {
        return Ok(None);
    }
    if let (Some(legacy), Some(constraint)) = (legacy, constraint) {
        let has_rows = client
            .query_one(
                &format!("SELECT EXISTS (SELECT 1 FROM {legacy} WHERE {constraint})"),
                &[],
            )
            .await;
        match has_rows {
            Ok(r) if !r.get::<_, bool>(0) => {}
            _ => return Ok(None),
        }
    }
    Ok(Some(Droppable {
        name: name.to_string(),
        parent,
    }))
}

/// What to ensure.
#[derive(Debug, Clone)]
pub enum Ensure {
    /// The LIST partition for one value.
    Value(String),
    /// LIST partitions for every value in the legacy table.
    AllKnown,
    /// RANGE: monthly partitions up to this many months ahead.
    MonthsAhead(u32),
    /// RANGE: the monthly partition holding this value (a timestamp or date, as text).
    MonthOf(String),
    /// Whatever the layout needs for a row with this partition key value: its LIST
    /// partition, or its month's RANGE partition.
    ForValue(String),
}

impl std::fmt::Display for Ensure {
    /// The request as the operator wrote it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ensure::Value(v) => write!(f, "--value {v}"),
            Ensure::AllKnown => write!(f, "--all-known"),
            Ensure::MonthsAhead(n) => write!(f, "--months-ahead {n}"),
            Ensure::MonthOf(v) => write!(f, "the month of {v}"),
            Ensure::ForValue(v) => write!(f, "a partition for the value {v}"),
        }
    }
}

/// The target's partitioning: strategy (`l`, `r`, `h`) and key column.
async fn strategy(
    client: &Client,
    target: &TableName,
) -> Result<(String, String), PartitionsError> {
    let row = client
        .query_opt(
            "SELECT p.partstrat::text, a.attname::text FROM pg_partitioned_table p \
             JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0] \
             WHERE p.partrelid = to_regclass($1) AND p.partnatts = 1",
            &[&target.to_string()],
        )
        .await?
        .ok_or_else(|| {
            PartitionsError::Refused(format!(
                "{target} is not partitioned on one plain column; ensure needs LIST or RANGE on a column"
            ))
        })?;
    Ok((row.get(0), row.get(1)))
}

/// Creates what is missing; returns the partitions created. Except for a partition made
/// for a held write ([`Ensure::ForValue`]), the new partitions, and a DEFAULT partition
/// whose rows moved into them, are analysed afterwards.
pub async fn ensure(
    config: &Config,
    table: &TableName,
    what: Ensure,
) -> Result<Vec<String>, PartitionsError> {
    let (mut client, target, legacy) = target_of(config, table).await?;
    let (strat, column) = strategy(&client, &target).await?;
    let tx = client.transaction().await?;
    // Never wait forever for a lock: a partition made for a held write (auto_partition)
    // fails cleanly instead, and the client gets the original error.
    tx.batch_execute("SET LOCAL lock_timeout = '10s'").await?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext($1))",
        &[&format!("tandem partitions {target}")],
    )
    .await?;
    let mut created = Vec::new();
    // DEFAULT partitions rows moved out of (analysed again afterwards).
    let mut emptied = Vec::new();
    // A partition made for a write held in a client's transaction (auto_partition) is not
    // analysed: that write waits.
    let for_held_write = matches!(what, Ensure::ForValue(_));
    let what = match (strat.as_str(), what) {
        ("l", Ensure::ForValue(v)) => Ensure::Value(v),
        ("r", Ensure::ForValue(v)) => Ensure::MonthOf(v),
        (_, other) => other,
    };
    match (strat.as_str(), what) {
        ("l", Ensure::Value(v)) => {
            if let Some(p) = ensure_value(&tx, &target, &column, &v, &mut emptied).await? {
                created.push(p);
            }
        }
        ("l", Ensure::AllKnown) => {
            let source = legacy.unwrap_or_else(|| target.clone());
            let values: Vec<String> = tx
                .query(
                    &format!(
                        "SELECT DISTINCT {c}::text FROM {source} WHERE {c} IS NOT NULL ORDER BY 1",
                        c = quote_ident(&column)
                    ),
                    &[],
                )
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            for v in values {
                if let Some(p) = ensure_value(&tx, &target, &column, &v, &mut emptied).await? {
                    created.push(p);
                }
            }
        }
        ("r", what @ (Ensure::MonthsAhead(_) | Ensure::MonthOf(_))) => {
            let months = match what {
                Ensure::MonthOf(value) => {
                    tx.query(
                        "SELECT to_char(m, 'YYYY_MM'), m::date::text, (m + interval '1 month')::date::text \
                         FROM (SELECT date_trunc('month', $1::text::timestamp) AS m) s",
                        &[&value],
                    )
                    .await?
                }
                Ensure::MonthsAhead(ahead) => {
                    tx.query(
                        &format!(
                            "SELECT to_char(m, 'YYYY_MM'), m::date::text, (m + interval '1 month')::date::text \
                             FROM generate_series(date_trunc('month', now()::timestamp), \
                               date_trunc('month', now()::timestamp) + interval '{ahead} months', interval '1 month') AS m"
                        ),
                        &[],
                    )
                    .await?
                }
                _ => Vec::new(),
            };
            for m in months {
                let name = crate::ops::init::partition_name(&target, &m.get::<_, String>(0));
                let exists: bool = tx
                    .query_one("SELECT to_regclass($1) IS NOT NULL", &[&name.to_string()])
                    .await?
                    .get(0);
                if exists {
                    continue;
                }
                tx.batch_execute(&attach(
                    &name,
                    &target,
                    &format!(
                        "FOR VALUES FROM ({}) TO ({})",
                        store::quote_literal(&m.get::<_, String>(1)),
                        store::quote_literal(&m.get::<_, String>(2))
                    ),
                ))
                .await?;
                created.push(name.to_string());
            }
        }
        (s, w) => {
            return Err(PartitionsError::Refused(format!(
                "{target} is partitioned by {} on {column}; {w} does not apply (LIST takes --value or --all-known, RANGE takes --months-ahead, HASH needs nothing)",
                match s {
                    "l" => "LIST",
                    "r" => "RANGE",
                    _ => "HASH",
                }
            )))
        }
    }
    tx.commit().await?;
    if !for_held_write {
        // Statistics for the new partitions, and for a DEFAULT that lost rows to them.
        emptied.dedup();
        for table in created.iter().chain(&emptied) {
            client.batch_execute(&format!("ANALYZE {table}")).await?;
        }
    }
    Ok(created)
}

/// A new partition made as a table of the parent's shape and then attached: ATTACH takes
/// SHARE UPDATE EXCLUSIVE on the parent, which does not wait for transactions writing it
/// (CREATE TABLE ... PARTITION OF would take ACCESS EXCLUSIVE). That matters when the
/// partition is made for a write held in a client's open transaction (auto_partition):
/// that transaction holds ROW EXCLUSIVE on the parent until the write is run again.
fn attach(name: &TableName, parent: &TableName, bound: &str) -> String {
    format!(
        "CREATE TABLE {name} (LIKE {parent} INCLUDING DEFAULTS INCLUDING CONSTRAINTS \
           INCLUDING GENERATED INCLUDING STORAGE INCLUDING COMMENTS); \
         ALTER TABLE {parent} ATTACH PARTITION {name} {bound};"
    )
}

/// Creates the LIST partition for `value` unless a partition already takes it; rows of that
/// value waiting in the DEFAULT partition move into it, in the caller's transaction.
async fn ensure_value(
    tx: &tokio_postgres::Transaction<'_>,
    target: &TableName,
    column: &str,
    value: &str,
    emptied: &mut Vec<String>,
) -> Result<Option<String>, PartitionsError> {
    // Which partition takes the value now (none, the DEFAULT, or its own)?
    let bounds = tx
        .query(
            "SELECT c.oid::regclass::text, pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT', \
               EXISTS (SELECT 1 FROM unnest(coalesce(( \
                 SELECT array_agg(trim(both '''' from x)) FROM regexp_split_to_table( \
                   substring(pg_get_expr(c.relpartbound, c.oid) from 'IN \\((.*)\\)'), ', ') AS x), '{}')) v \
                 WHERE v = $2) \
             FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = $1::text::regclass",
            &[&target.to_string(), &value],
        )
        .await?;
    if bounds.iter().any(|r| r.get::<_, bool>(2)) {
        return Ok(None);
    }
    let name = crate::ops::init::partition_name(target, value);
    let default = bounds
        .iter()
        .find(|r| r.get::<_, bool>(1))
        .map(|r| r.get::<_, String>(0));
    let lit = store::quote_literal(value);
    let col = quote_ident(column);
    match default {
        None => {
            tx.batch_execute(&attach(&name, target, &format!("FOR VALUES IN ({lit})")))
                .await?;
        }
        Some(default) => {
            // Move the value's rows out of DEFAULT around the creation.
            tx.batch_execute(&format!(
                "ALTER TABLE {target} DETACH PARTITION {default};
                 CREATE TABLE {name} PARTITION OF {target} FOR VALUES IN ({lit});
                 INSERT INTO {name} SELECT * FROM {default} WHERE {col} = {lit};
                 DELETE FROM {default} WHERE {col} = {lit};
                 ALTER TABLE {target} ATTACH PARTITION {default} DEFAULT;"
            ))
            .await?;
            emptied.push(default);
        }
    }
    Ok(Some(name.to_string()))
}

impl From<store::OpenError> for PartitionsError {
    fn from(e: store::OpenError) -> Self {
        match e {
            store::OpenError::Catalog(c) => Self::Catalog(c),
            store::OpenError::Store(s) => Self::Store(s),
        }
    }
}
