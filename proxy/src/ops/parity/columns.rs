//! Columns: does the target hold every legacy column's values, and which columns the row
//! diff compares.
//!
//! A legacy column is accounted for when the target has it with a type that holds all its
//! values (see [`crate::ops::widening`]), when the rule leaves it behind on purpose
//! (`drop_columns`), or when a `set` column of the rule reads it (a renamed column). Which
//! columns a `set` expression reads, and whether it is immutable (so the row diff can
//! compare the target's value with the expression over the legacy row), is asked of the
//! server, not read from the expression: a temporary view over a copy of the legacy
//! columns records the columns it reads, and an index on the expression is refused unless
//! it is immutable. Both are made in a transaction that is rolled back.

use serde::Serialize;
use tandem_rules::ResolvedRule;
use tokio_postgres::Client;

use super::Check;

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
    /// Missing columns whose values a `set` column of the rule carries (a renamed column),
    /// as `legacy -> target`: listed, not failed.
    pub carried: Vec<String>,
    /// The target columns the rule computes (`set`), as the server judged them.
    pub set_columns: Vec<SetColumn>,
    /// What the row diff compares, one entry per target column: every legacy column with a
    /// counterpart of its name (generated ones included, on either side), and each `set`
    /// column whose expression is immutable (`column = expr`).
    pub compared: Vec<String>,
}

/// A target column the rule computes from the legacy row (`set`), as the server judged it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SetColumn {
    /// The target column.
    pub column: String,
    /// The rule's expression over the legacy row.
    pub expr: String,
    /// The legacy columns it reads (the server's dependency records of the expression).
    pub reads: Vec<String>,
    /// Why the row diff does not compare it (the expression is not immutable, so the
    /// same legacy row gives another value each time), in the server's words; `None`:
    /// compared.
    pub not_compared: Option<String>,
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

    /// The legacy columns the target lacks that nothing accounts for: not left behind on
    /// purpose (`drop_columns`) and not carried by a `set` column.
    pub fn lost(&self) -> impl Iterator<Item = &String> {
        self.missing_in_target.iter().filter(|c| {
            !self.dropped.contains(c) && !self.set_columns.iter().any(|s| s.reads.contains(c))
        })
    }

    /// Notes what the rule's `set` columns do: which missing columns they carry, and which
    /// of them the row diff compares.
    pub fn with_set_columns(mut self, set_columns: Vec<SetColumn>) -> Self {
        self.carried = self
            .missing_in_target
            .iter()
            .flat_map(|c| {
                set_columns
                    .iter()
                    .filter(move |s| s.reads.contains(c))
                    .map(move |s| format!("{c} -> {}", s.column))
            })
            .collect();
        self.compared.extend(
            set_columns
                .iter()
                .filter(|s| s.not_compared.is_none())
                .map(|s| format!("{} = {}", s.column, s.expr)),
        );
        self.set_columns = set_columns;
        self
    }

    /// No difference.
    pub fn is_empty(&self) -> bool {
        self.missing_in_target.is_empty() && self.type_differs.is_empty()
    }
}

/// The `columns` check: every legacy column is on the target with a type that holds all
/// its values; a missing or narrowed column fails, named, with what it would lose.
pub(super) fn columns_check(columns: &ColumnDifferences) -> Check {
    let mut problems: Vec<String> = columns
        .lost()
        .map(
            |c| match columns.missing_values.iter().find(|m| &m.column == c) {
                Some(m) => format!(
                    "legacy column {c} is not on the target ({} non-null values would be lost)",
                    m.non_null
                ),
                None => format!("legacy column {c} is not on the target"),
            },
        )
        .collect();
    problems.extend(columns.narrowing_problems());
    let mut notes = Vec::new();
    if !columns.dropped.is_empty() {
        notes.push(format!(
            "left behind on purpose, drop_columns: {}",
            columns.dropped.join(", ")
        ));
    }
    if !columns.carried.is_empty() {
        notes.push(format!(
            "carried by the rule's set: {}",
            columns.carried.join(", ")
        ));
    }
    for s in &columns.set_columns {
        if let Some(why) = &s.not_compared {
            notes.push(format!(
                "set column {} = {} is not compared row by row ({why})",
                s.column, s.expr
            ));
        }
    }
    notes.push(format!(
        "rows compared on {} columns",
        columns.compared.len()
    ));
    let dropped = format!(" ({})", notes.join("; "));
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
    let mut out = ColumnDifferences {
        dropped: rule
            .shape
            .legacy_table
            .iter()
            .filter(|c| rule.rule.drop_columns.contains(&c.name))
            .filter(|c| rule.shape.target_column(&c.name).is_none())
            .map(|c| c.name.clone())
            .collect(),
        compared: rule
            .shape
            .legacy_table
            .iter()
            .filter(|c| rule.shape.target_column(&c.name).is_some())
            .map(|c| c.name.clone())
            .collect(),
        ..ColumnDifferences::default()
    };
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

/// The rule's `set` columns as the server judges them: the legacy columns each reads, and
/// whether it is immutable. In a transaction rolled back at the end (temporary objects only).
pub async fn set_columns(
    client: &mut Client,
    rule: &ResolvedRule,
) -> Result<Vec<SetColumn>, tokio_postgres::Error> {
    let set = &rule.rule.set;
    if set.is_empty() {
        return Ok(Vec::new());
    }
    let tx = client.transaction().await?;
    let probe = format!(
        "CREATE TEMP TABLE tandem_set_probe (LIKE {}) ON COMMIT DROP",
        rule.rule.table
    );
    if let Err(e) = tx.batch_execute(&probe).await {
        let why = format!(
            "the server could not judge the expression: {}",
            crate::control::catalog::describe(&e)
        );
        return Ok(set
            .iter()
            .map(|(column, expr)| SetColumn {
                column: column.clone(),
                expr: expr.clone(),
                reads: Vec::new(),
                not_compared: Some(why.clone()),
            })
            .collect());
    }
    let mut out = Vec::new();
    for (column, expr) in set {
        tx.batch_execute("SAVEPOINT tandem_set_probe").await?;
        let view = format!(
            "CREATE TEMP VIEW tandem_set_probe_v AS SELECT ({expr}) AS v FROM pg_temp.tandem_set_probe"
        );
        let reads = match tx.batch_execute(&view).await {
            Ok(()) => {
                tx.query(
                    "SELECT DISTINCT a.attname::text FROM pg_depend d \
                       JOIN pg_rewrite r ON r.oid = d.objid AND d.classid = 'pg_rewrite'::regclass \
                       JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid \
                      WHERE r.ev_class = 'pg_temp.tandem_set_probe_v'::regclass \
                        AND d.refobjid = 'pg_temp.tandem_set_probe'::regclass AND d.refobjsubid > 0 \
                      ORDER BY 1",
                    &[],
                )
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect()
            }
            Err(_) => Vec::new(),
        };
        tx.batch_execute("ROLLBACK TO SAVEPOINT tandem_set_probe")
            .await?;
        // `IS NULL` so that a result type without a btree operator class is no obstacle:
        // the server still refuses a mutable function anywhere in the expression.
        let index = format!("CREATE INDEX ON pg_temp.tandem_set_probe ((({expr}) IS NULL))");
        let not_compared = match tx.batch_execute(&index).await {
            Ok(()) => None,
            Err(e) => Some(format!(
                "not immutable: {}",
                crate::control::catalog::describe(&e)
            )),
        };
        tx.batch_execute("ROLLBACK TO SAVEPOINT tandem_set_probe")
            .await?;
        out.push(SetColumn {
            column: column.clone(),
            expr: expr.clone(),
            reads,
            not_compared,
        });
    }
    tx.rollback().await?;
    Ok(out)
}
