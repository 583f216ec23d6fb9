//! Schema parity: does the target keep the legacy table's shape? Every legacy column (with
//! a type that holds its values), its NOT NULL, CHECK and unique rules, its triggers, its
//! access rules (row level security, policies, privileges, owner), and the foreign keys
//! around it. Read from the catalog (one query per kind, plus a count per lost column when
//! asked), so the parity report and `SHOW PARITY` judge it the same way.

use serde::Serialize;
use tandem_rules::ResolvedRule;
use tokio_postgres::GenericClient;

use super::columns::{columns_check, ColumnDifferences, MissingValues};
use super::Check;
use crate::control::foreign_keys::ForeignKeyProblem;
use crate::control::triggers::TriggerPair;
use crate::ops::constraints::MissingRules;

/// The checks that make up schema parity, in the report's order.
pub const CHECKS: [&str; 5] = [
    "access",
    "columns",
    "constraints",
    "triggers",
    "foreign_keys",
];

/// What the catalog says about the two tables' shapes.
#[derive(Debug, Clone)]
pub struct Facts {
    /// Column differences.
    pub columns: ColumnDifferences,
    /// Access rules that differ.
    pub access: Vec<String>,
    /// Foreign keys broken or lost by the move.
    pub foreign_keys: Vec<ForeignKeyProblem>,
    /// Legacy data rules and indexes, kept or missing.
    pub constraints: MissingRules,
    /// Legacy triggers and their counterparts.
    pub triggers: Vec<TriggerPair>,
}

/// Schema parity in short, for the report's schema section and `SHOW PARITY`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Schema {
    /// Every schema check passed.
    pub holds: bool,
    /// The schema checks that failed.
    pub failed: Vec<&'static str>,
    /// What fails them, a sentence per check.
    pub problems: Vec<String>,
    /// Worth knowing, not failing: legacy indexes with no counterpart.
    pub warnings: Vec<String>,
    /// Time the schema checks took, seconds (catalog queries, and a scan of the legacy
    /// table per lost column to count its values).
    pub seconds: f64,
}

impl Schema {
    /// From the report's checks (the ones named in [`CHECKS`]).
    pub fn from_checks(checks: &[Check], constraints: &MissingRules) -> Self {
        let failed: Vec<&Check> = checks
            .iter()
            .filter(|c| CHECKS.contains(&c.name) && !c.ok)
            .collect();
        Self {
            holds: failed.is_empty(),
            failed: failed.iter().map(|c| c.name).collect(),
            problems: failed
                .iter()
                .map(|c| format!("{}: {}", c.name, c.detail))
                .collect(),
            warnings: constraints
                .indexes
                .iter()
                .map(|i| format!("no counterpart on the target for index {i}"))
                .collect(),
            seconds: 0.0,
        }
    }
}

/// Reads the facts. `count_lost`: count the non-null values of each legacy column the
/// target lacks (a scan of the legacy table per column; the report does, `SHOW PARITY`
/// does not).
pub async fn facts(
    client: &impl GenericClient,
    rule: &ResolvedRule,
    mut columns: ColumnDifferences,
    count_lost: bool,
) -> Result<Facts, tokio_postgres::Error> {
    let (legacy, target) = (&rule.rule.table, &rule.rule.target);
    if count_lost {
        let lost: Vec<String> = columns.lost().cloned().collect();
        for column in lost {
            let non_null: i64 = client
                .query_one(
                    &format!(
                        "SELECT count({})::int8 FROM {legacy}",
                        tandem_rules::quote_ident(&column)
                    ),
                    &[],
                )
                .await?
                .get(0);
            columns
                .missing_values
                .push(MissingValues { column, non_null });
        }
    }
    Ok(Facts {
        columns,
        access: crate::control::access::differences(client, legacy, target).await?,
        foreign_keys: crate::control::foreign_keys::problems(client, legacy, target).await?,
        constraints: crate::ops::constraints::missing(client, legacy, target).await?,
        triggers: crate::control::triggers::pairs(client, legacy, target, &rule.rule.drop_triggers)
            .await?,
    })
}

impl Facts {
    /// The schema checks, in [`CHECKS`] order.
    pub fn checks(&self, rule: &ResolvedRule, strict_indexes: bool) -> Vec<Check> {
        let access = &self.access;
        vec![
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
            columns_check(&self.columns),
            constraints_check(&self.constraints, strict_indexes),
            triggers_check(rule, &self.triggers),
            Check {
                name: "foreign_keys",
                ok: self.foreign_keys.is_empty(),
                detail: if self.foreign_keys.is_empty() {
                    "no foreign key references the legacy table; the target has the legacy table's own"
                        .into()
                } else {
                    self.foreign_keys
                        .iter()
                        .map(|p| p.describe())
                        .collect::<Vec<_>>()
                        .join("; ")
                },
            },
        ]
    }
}

/// The `triggers` check: every legacy trigger has a counterpart on the target (or is
/// declared not needed), and none fires twice per write while both tables are written.
fn triggers_check(rule: &ResolvedRule, triggers: &[TriggerPair]) -> Check {
    let bad: Vec<&TriggerPair> = triggers
        .iter()
        .filter(|t| t.lost() || t.fires_twice())
        .collect();
    let detail = if triggers.is_empty() {
        "the legacy table has no triggers".to_string()
    } else if bad.is_empty() {
        triggers
            .iter()
            .map(|t| t.describe())
            .collect::<Vec<_>>()
            .join("; ")
    } else {
        let fix = match crate::control::triggers::fix_statements(
            triggers,
            &rule.rule.table,
            &rule.rule.target,
        ) {
            Ok(statements) if !statements.is_empty() => format!(
                "; to copy and condition them (tandem init does this): {}",
                statements.join("; ")
            ),
            Ok(_) => String::new(),
            Err(e) => format!("; {e}"),
        };
        format!(
            "{}{fix}; or declare a trigger not needed: SET RULE {} DROP_TRIGGERS (<trigger>, ...)",
            bad.iter()
                .map(|t| t.describe())
                .collect::<Vec<_>>()
                .join("; "),
            rule.rule.table
        )
    };
    Check {
        name: "triggers",
        ok: bad.is_empty(),
        detail,
    }
}

/// The `constraints` check: fails while the target lacks a NOT NULL, CHECK or unique rule
/// of the legacy table (it would stop enforcing it); a missing plain index is only a warning,
/// unless `strict_indexes` (`tandem parity --strict-indexes`).
fn constraints_check(
    missing: &crate::ops::constraints::MissingRules,
    strict_indexes: bool,
) -> Check {
    let mut parts = missing.data_rule_problems();
    let ok = parts.is_empty() && (missing.indexes.is_empty() || !strict_indexes);
    for index in &missing.indexes {
        parts.push(if strict_indexes {
            format!(
                "no counterpart on the target for index {index} (--strict-indexes: reads would get slower)"
            )
        } else {
            format!(
                "warning: no counterpart on the target for index {index} (reads get slower, nothing is lost)"
            )
        });
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

/// Schema parity of one stored rule, without counting lost values (for `SHOW PARITY`).
/// A rule in `off` is judged as it would be once switched on.
pub async fn of_rule(
    client: &mut tokio_postgres::Client,
    rule: &tandem_rules::Rule,
) -> Result<Schema, super::ParityError> {
    let mut active = rule.clone();
    if active.mode == tandem_rules::Mode::Off {
        active.mode = tandem_rules::Mode::DualWrite;
    }
    let set = crate::control::catalog::resolve(client, std::slice::from_ref(&active), 0).await?;
    let Some(resolved) = set.rules.into_iter().next() else {
        return Ok(Schema::default());
    };
    let set_columns = super::columns::set_columns(client, &resolved).await?;
    let columns = super::columns::column_differences(&resolved).with_set_columns(set_columns);
    let facts = facts(&*client, &resolved, columns, false).await?;
    Ok(Schema::from_checks(
        &facts.checks(&resolved, false),
        &facts.constraints,
    ))
}

impl Schema {
    /// One cell: `holds`, or `differs: <failed checks>`.
    pub fn summary(&self) -> String {
        if self.holds {
            "holds".into()
        } else {
            format!("differs: {}", self.failed.join(", "))
        }
    }
}
