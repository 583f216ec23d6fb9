//! The rule model: which legacy table moves to which target, in what phase, and the
//! catalog facts a rewrite needs.
//!
//! A [`Rule`] is what the operator writes in configuration. A [`TableShape`] is what the
//! proxy reads from `pg_catalog` for that rule. Together, checked once by
//! [`ResolvedRule::new`], they are everything the planner needs: the planner never looks at
//! a catalog itself, so every rewrite is a pure function of (SQL, rules, search_path).

use serde::{Deserialize, Serialize};

use crate::name::TableName;

/// The schema a rule's table lands in when the configuration does not name one.
pub const DEFAULT_SCHEMA: &str = "public";

/// Phase of a migration. Only `Off` and `DualWrite` have behaviour in this version; the
/// others are accepted so configuration can name them, and writes under them are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// The rule exists but Tandem does nothing with it.
    Off,
    /// Every write to the legacy table also writes the target, in the same statement.
    DualWrite,
    /// Writes as `DualWrite`; reads see both tables (not implemented yet).
    UnionRead,
    /// The target becomes the table of record (not implemented yet).
    Cutover,
    /// Only the target is used (not implemented yet).
    TargetOnly,
}

impl Mode {
    /// The configuration spelling (`dual_write`, ...), for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::DualWrite => "dual_write",
            Mode::UnionRead => "union_read",
            Mode::Cutover => "cutover",
            Mode::TargetOnly => "target_only",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    /// The configuration spelling, case-insensitive.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Mode::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(text.trim()))
            .ok_or_else(|| {
                format!(
                    "unknown mode \"{text}\"; expected one of off, dual_write, union_read, cutover, target_only"
                )
            })
    }
}

impl Mode {
    /// Every mode, in migration order.
    pub const ALL: [Mode; 5] = [
        Mode::Off,
        Mode::DualWrite,
        Mode::UnionRead,
        Mode::Cutover,
        Mode::TargetOnly,
    ];
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl MirrorErrorPolicy {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            MirrorErrorPolicy::Fail => "fail",
            MirrorErrorPolicy::Record => "record",
        }
    }
}

/// What the proxy does when the mirrored half of a write fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MirrorErrorPolicy {
    /// Fail the client's statement: the tables never disagree.
    #[default]
    Fail,
    /// Let the legacy write through and record the drift for later repair.
    Record,
}

/// What the guard in the database does with a change to the guarded table that Tandem's
/// rewrite did not mirror (see [`guard`](crate::guard)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GuardPolicy {
    /// Apply the same change to the mirror table in the same statement.
    #[default]
    Mirror,
    /// Fail the writer's statement.
    Fail,
    /// Let it stand and write a drift row the parity report shows.
    Record,
    /// No guard: changes made around the proxy are not caught.
    Off,
}

impl GuardPolicy {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            GuardPolicy::Mirror => "mirror",
            GuardPolicy::Fail => "fail",
            GuardPolicy::Record => "record",
            GuardPolicy::Off => "off",
        }
    }
}

impl std::str::FromStr for GuardPolicy {
    type Err = String;
    /// The configuration spelling, case-insensitive.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        [
            GuardPolicy::Mirror,
            GuardPolicy::Fail,
            GuardPolicy::Record,
            GuardPolicy::Off,
        ]
        .into_iter()
        .find(|g| g.as_str().eq_ignore_ascii_case(text.trim()))
        .ok_or_else(|| {
            format!("unknown guard \"{text}\"; expected one of mirror, fail, record, off")
        })
    }
}

/// One migration rule, as configured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawRule")]
pub struct Rule {
    /// The hot table the applications write today. Always schema-qualified.
    pub table: TableName,
    /// Where rows go. Defaults to `<table>_v2` in the table's schema.
    pub target: TableName,
    /// Migration phase.
    pub mode: Mode,
    /// Columns identifying a row in the target (its upsert conflict target), catalog spelling.
    pub key: Vec<String>,
    /// What to do when the mirrored write fails.
    pub on_mirror_error: MirrorErrorPolicy,
    /// Extra target columns and the SQL expression (over legacy columns) that fills them.
    pub set: Vec<(String, String)>,
    /// Share of this table's reads re-run on both tables for shadow comparison, in `[0, 1]`
    /// (0, the default: none).
    pub sample_rate: f64,
    /// When a mirrored write finds no partition of the target for its row (SQLSTATE 23514),
    /// create the partition and run the statement again instead of failing it.
    pub auto_partition: bool,
    /// What the guard in the database does with changes made around the proxy.
    pub guard: GuardPolicy,
    /// Legacy columns deliberately left behind: the target need not have them, and the
    /// parity report lists them as dropped instead of failing.
    pub drop_columns: Vec<String>,
    /// Legacy triggers the target does not need: no counterpart is asked for them.
    pub drop_triggers: Vec<String>,
    /// A whole-table backfill finished since the rule last left `off` (state, not
    /// configuration: set by `tandem backfill`, cleared when it starts over or the rule goes
    /// to `off`). Every legacy row is then in the target (the backfill copied the old ones,
    /// the mirror and the guard every change since), so a `union_read` read needs the
    /// target alone (see [`crate::reads`]).
    pub backfilled: bool,
    /// The backfill watermark (state, like [`backfilled`](Self::backfilled)): the largest
    /// key, one text per key column, such that every legacy row at or below it is in the
    /// target, because a forward backfill running since the rule last left `off` copied
    /// them and the mirror (and the guard) kept them current since. Published by `tandem
    /// backfill` every few seconds while it runs, cleared with `backfilled`. Any key at or
    /// below the true one is as good (only slower), so instances may lag it. A `union_read`
    /// read then takes rows at or below it from the target and the rest from legacy (see
    /// [`crate::reads`]).
    pub backfilled_to: Option<Vec<String>>,
}

/// The configuration form of a [`Rule`], before defaults that depend on other fields.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    table: TableName,
    target: Option<TableName>,
    #[serde(default = "default_mode")]
    mode: Mode,
    /// Empty means "the legacy table's primary key", filled in from the catalog.
    #[serde(default)]
    key: Vec<String>,
    #[serde(default)]
    on_mirror_error: MirrorErrorPolicy,
    #[serde(default)]
    set: Vec<(String, String)>,
    #[serde(default = "default_sample_rate")]
    sample_rate: f64,
    #[serde(default)]
    auto_partition: bool,
    #[serde(default)]
    guard: GuardPolicy,
    #[serde(default)]
    drop_columns: Vec<String>,
    #[serde(default)]
    drop_triggers: Vec<String>,
}

fn default_mode() -> Mode {
    Mode::Off
}

fn default_sample_rate() -> f64 {
    0.0
}

impl TryFrom<RawRule> for Rule {
    type Error = RuleError;
    fn try_from(raw: RawRule) -> Result<Self, Self::Error> {
        let mut rule = Rule::new(raw.table, raw.mode, raw.key);
        if let Some(target) = raw.target {
            rule.target = qualify(target);
        }
        rule.on_mirror_error = raw.on_mirror_error;
        rule.set = raw.set;
        rule.sample_rate = raw.sample_rate;
        rule.auto_partition = raw.auto_partition;
        rule.guard = raw.guard;
        rule.drop_columns = raw.drop_columns;
        rule.drop_triggers = raw.drop_triggers;
        rule.check()?;
        Ok(rule)
    }
}

/// Put a schema-less configured name in [`DEFAULT_SCHEMA`].
fn qualify(mut name: TableName) -> TableName {
    if name.schema.is_none() {
        name.schema = Some(DEFAULT_SCHEMA.to_string());
    }
    name
}

impl Rule {
    /// A rule with the default target (`<table>_v2`), `Fail` policy, no extra columns and a
    /// sample rate of 1. A schema-less `table` is placed in [`DEFAULT_SCHEMA`].
    pub fn new(table: TableName, mode: Mode, key: Vec<String>) -> Self {
        let table = qualify(table);
        let target = table.with_suffix("_v2");
        Self {
            table,
            target,
            mode,
            key,
            on_mirror_error: MirrorErrorPolicy::Fail,
            set: Vec::new(),
            sample_rate: 0.0,
            auto_partition: false,
            guard: GuardPolicy::Mirror,
            drop_columns: Vec::new(),
            drop_triggers: Vec::new(),
            backfilled: false,
            backfilled_to: None,
        }
    }

    /// Checks that need only the rule itself. An empty key is allowed here: the caller
    /// fills it from the legacy primary key before [`ResolvedRule::new`] requires one.
    fn check(&self) -> Result<(), RuleError> {
        let table = &self.table;
        if !(0.0..=1.0).contains(&self.sample_rate) {
            return Err(RuleError::SampleRate(table.clone(), self.sample_rate));
        }
        if self.target == self.table {
            return Err(RuleError::TargetIsTable(table.clone()));
        }
        for (column, expr) in &self.set {
            crate::parse::parse_expr(expr).map_err(|reason| RuleError::SetExpr {
                table: table.clone(),
                column: column.clone(),
                reason,
            })?;
        }
        Ok(())
    }
}

/// Catalog facts for one rule, read by the caller from `pg_catalog`. Column names are in
/// catalog spelling (`pg_attribute.attname`), not SQL spelling.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TableShape {
    /// Legacy columns in table order, generated columns excluded.
    pub legacy_columns: Vec<String>,
    /// All target columns.
    pub target_columns: Vec<String>,
    /// Columns in both tables and not generated in the target: the ones copied (see
    /// [`mirrored_columns`]).
    pub mirrored_columns: Vec<String>,
    /// The target's partition key columns (empty when it is not partitioned).
    pub target_partition_key: Vec<String>,
    /// The legacy table's OID: RowDescriptions of rewritten reads are fixed to name it.
    pub legacy_oid: u32,
    /// The target table's OID.
    pub target_oid: u32,
    /// Every legacy column, generated ones included, in table order.
    pub legacy_table: Vec<ColumnInfo>,
    /// Every target column, generated ones included, in table order.
    pub target_table: Vec<ColumnInfo>,
    /// The legacy table's primary key columns (empty when it has none): the conflict
    /// target of the reverse mirror in `cutover`.
    pub legacy_primary_key: Vec<String>,
    /// The guard in the database is in place on the legacy table with policy `mirror` (as
    /// the catalog showed when the rule was resolved): a write Tandem cannot rewrite is left
    /// to it instead of refused (see [`guard`](crate::guard)).
    #[serde(default)]
    pub guard_ready: bool,
}

/// One column as the catalog describes it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ColumnInfo {
    /// `pg_attribute.attname`.
    pub name: String,
    /// `format_type(atttypid, atttypmod)`: usable in a cast.
    pub sql_type: String,
    /// `pg_attribute.attnum`.
    pub attnum: i16,
    /// `pg_attribute.attcollation` (0 for a type that has none).
    #[serde(default)]
    pub collation: u32,
}

/// The columns a mirror copies, in legacy table order, from each table's columns as
/// `(name, generated)`: every legacy column the target has as a plain column. A column
/// generated in legacy but plain in the target is copied too, with the value legacy
/// computed (the write's `RETURNING *` carries it); one generated in the target is left to
/// the target to compute.
pub fn mirrored_columns(legacy: &[(String, bool)], target: &[(String, bool)]) -> Vec<String> {
    legacy
        .iter()
        .filter(|(name, _)| target.iter().any(|(t, generated)| t == name && !generated))
        .map(|(name, _)| name.clone())
        .collect()
}

impl TableShape {
    /// Is `name` a legacy column, generated ones included?
    pub fn is_legacy_column(&self, name: &str) -> bool {
        if self.legacy_table.is_empty() {
            self.legacy_columns.iter().any(|c| c == name)
        } else {
            self.legacy_table.iter().any(|c| c.name == name)
        }
    }

    /// A target column by name.
    pub fn target_column(&self, name: &str) -> Option<&ColumnInfo> {
        self.target_table.iter().find(|c| c.name == name)
    }
}

/// A rule checked against its tables' shape: the unit the planner works with.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedRule {
    /// The configured rule.
    pub rule: Rule,
    /// Its tables' catalog facts.
    pub shape: TableShape,
    /// For a rewrite that writes another table than the one the client named (`cutover`
    /// writes the target): the client's bare name, the OID it must mean and that table,
    /// for the check the server makes as it runs the statement.
    pub(crate) client_name: Option<(String, u32, TableName)>,
}

impl ResolvedRule {
    /// Check that the rule can be mirrored with this shape: the key columns are mirrored,
    /// the target's partition key is part of the key (PostgreSQL only allows a unique index
    /// on a partitioned table when it contains the partition key, and the mirror upserts on
    /// that index), and every `set` column exists in the target and is not also mirrored.
    pub fn new(rule: Rule, shape: TableShape) -> Result<Self, RuleError> {
        rule.check()?;
        let table = &rule.table;
        if rule.key.is_empty() {
            return Err(RuleError::NoKey(table.clone()));
        }
        for key in &rule.key {
            if !shape.mirrored_columns.contains(key) {
                return Err(RuleError::KeyNotMirrored(table.clone(), key.clone()));
            }
        }
        for column in &shape.target_partition_key {
            if !rule.key.contains(column) {
                return Err(RuleError::PartitionKeyNotInKey(
                    table.clone(),
                    column.clone(),
                ));
            }
        }
        for (column, _) in &rule.set {
            if !shape.target_columns.contains(column) {
                return Err(RuleError::SetColumnMissing(table.clone(), column.clone()));
            }
            if shape.mirrored_columns.contains(column) {
                return Err(RuleError::SetColumnMirrored(table.clone(), column.clone()));
            }
        }
        if shape.mirrored_columns.is_empty() {
            return Err(RuleError::NothingMirrored(table.clone()));
        }
        Ok(Self {
            rule,
            shape,
            client_name: None,
        })
    }
}

/// Why a rule (or rule set) cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RuleError {
    /// `key` is empty.
    #[error("rule for {0}: key must name at least one column")]
    NoKey(TableName),
    /// `sample_rate` outside `[0, 1]`.
    #[error("rule for {0}: sample_rate {1} is not between 0 and 1")]
    SampleRate(TableName, f64),
    /// `target` is the legacy table itself.
    #[error("rule for {0}: target must differ from the table")]
    TargetIsTable(TableName),
    /// A `set` expression is not valid SQL.
    #[error("rule for {table}: set expression for column {column} does not parse: {reason}")]
    SetExpr {
        /// The rule's legacy table.
        table: TableName,
        /// The target column the expression fills.
        column: String,
        /// The parser's complaint.
        reason: String,
    },
    /// A key column is not among the mirrored columns.
    #[error("rule for {0}: key column {1} is not a mirrored column (present in both tables and not generated in the target)")]
    KeyNotMirrored(TableName, String),
    /// A target partition key column is not part of the key.
    #[error("rule for {0}: target partition key column {1} must be part of the rule's key")]
    PartitionKeyNotInKey(TableName, String),
    /// A `set` column does not exist in the target.
    #[error("rule for {0}: set column {1} does not exist in the target")]
    SetColumnMissing(TableName, String),
    /// A `set` column would also be copied from the legacy row.
    #[error("rule for {0}: set column {1} is also a mirrored column")]
    SetColumnMirrored(TableName, String),
    /// No column is copied at all.
    #[error("rule for {0}: no column is mirrored")]
    NothingMirrored(TableName),
    /// Two rules name the same legacy table.
    #[error("two rules for table {0}")]
    Duplicate(TableName),
    /// One rule's legacy table is another rule's target, or its target another rule's
    /// legacy table: a write mirrored into the target would itself be a write to a ruled
    /// table, and no order of modes makes that safe.
    #[error("{}", chain_message(.table, .other, *.table_is_target))]
    Chained {
        /// The rule being checked.
        table: TableName,
        /// The other rule's legacy table.
        other: TableName,
        /// True: `table` is the other rule's target. False: this rule's target is `other`.
        table_is_target: bool,
    },
}

/// The message of [`RuleError::Chained`].
fn chain_message(table: &TableName, other: &TableName, table_is_target: bool) -> String {
    let (role, shared, other_role) = if table_is_target {
        ("table", table, "target")
    } else {
        ("target", other, "table")
    };
    format!(
        "rule for {table}: {role} {shared} is the {other_role} of the rule for {other}; \
         a table may be a legacy table or a target, not both"
    )
}

#[cfg(test)]
#[path = "tests/rule.rs"]
mod tests;

#[cfg(test)]
#[path = "tests/generated.rs"]
mod generated;
