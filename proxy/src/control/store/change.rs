//! Changing the rule store: what the admin console's SET/ADD/DROP RULE do, validated.
//!
//! A change that would lose data or break writes is refused with a SQLSTATE, a message and
//! a hint naming the safe path, before anything is written:
//!
//! - the rule must resolve against the catalog in its new mode (both tables exist, the key
//!   has a unique index in the target, the target's partition key is in the key);
//! - transitions: `union_read` only from `dual_write`/`cutover` (from `off` the target is not
//!   current); `cutover` only from `dual_write`/`union_read`, and only when every legacy key
//!   is in the target (a finished backfill); `target_only` only from `cutover`; leaving
//!   `target_only` only with FORCE (the legacy table stopped receiving writes), and only for
//!   `cutover`, which records that the legacy table owes a re-sync from the target; leaving
//!   `cutover` for a mode that serves or keeps legacy rows is then refused until `tandem
//!   backfill --reverse` has finished (see [`super::resync`]);
//! - entering `cutover` advances the target's sequences past the largest value in either
//!   table (the target generates ids from now on), and leaving it for `dual_write`,
//!   `union_read` or `off` does the same for the legacy table's sequences;
//! - ADD RULE refuses a rule whose table is another rule's target or whose target is
//!   another rule's table (checked under an advisory lock, so two racing adds cannot
//!   chain);
//! - DROP RULE only in `off` or `dual_write`, or in `target_only` with FORCE (applications
//!   still using the legacy name would fall back to the stale legacy table).
//!
//! The row is locked (`SELECT ... FOR UPDATE`) and its version compared, so two admins
//! racing on one rule serialise, and the second sees the first's result.

use tandem_rules::{quote_ident, GuardPolicy, Mode, ResolvedRule, Rule, TableName};
use tokio_postgres::Client;

use super::{set_json, stored_rule, Store, StoredRule, RULE_COLUMNS};
use crate::control::catalog::{self, CatalogError};

/// A change an operator asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleChange {
    /// `SET RULE t MODE m [FORCE]`
    SetMode {
        /// Legacy table.
        table: TableName,
        /// New mode.
        mode: Mode,
        /// Allow leaving `target_only`.
        force: bool,
    },
    /// `SET RULE t SAMPLE x`
    SetSample {
        /// Legacy table.
        table: TableName,
        /// New rate.
        rate: f64,
    },
    /// `SET RULE t AUTO_PARTITION on|off`
    SetAutoPartition {
        /// Legacy table.
        table: TableName,
        /// On or off.
        on: bool,
    },
    /// `SET RULE t GUARD mirror|fail|record|off`
    SetGuard {
        /// Legacy table.
        table: TableName,
        /// What the guard does with changes made around the proxy.
        guard: GuardPolicy,
    },
    /// `SET RULE t DROP_TRIGGERS (a, b)`
    SetDropTriggers {
        /// Legacy table.
        table: TableName,
        /// Legacy triggers the target does not need.
        triggers: Vec<String>,
    },
    /// `SET RULE t DROP_COLUMNS (a, b)`
    SetDropColumns {
        /// Legacy table.
        table: TableName,
        /// Legacy columns left behind on purpose.
        columns: Vec<String>,
    },
    /// `ADD RULE ...`
    Add(Rule),
    /// `DROP RULE t [FORCE]`
    Drop {
        /// Legacy table.
        table: TableName,
        /// Allow dropping a rule in `target_only`.
        force: bool,
    },
}

/// Why a change was refused, as the console reports it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ChangeError {
    /// SQLSTATE.
    pub sqlstate: &'static str,
    /// Primary message.
    pub message: String,
    /// What to do instead.
    pub hint: Option<String>,
}

impl ChangeError {
    fn new(sqlstate: &'static str, message: String, hint: Option<&str>) -> Self {
        Self {
            sqlstate,
            message,
            hint: hint.map(str::to_string),
        }
    }

    fn state(message: String, hint: &str) -> Self {
        Self::new("55000", message, Some(hint))
    }
}

impl From<tokio_postgres::Error> for ChangeError {
    fn from(e: tokio_postgres::Error) -> Self {
        let code = e.code().map(|c| c.code().to_string());
        let message = e
            .as_db_error()
            .map(|d| d.message().to_string())
            .unwrap_or_else(|| crate::error_text::chain(&e));
        // Keep the server's class for the common cases.
        let sqlstate = match code.as_deref() {
            Some("42P01") => "42P01",
            Some("40001") => "40001",
            Some("42501") => "42501",
            Some("55P03") => "55P03",
            Some("55000") => "55000",
            _ => "XX000",
        };
        Self::new(sqlstate, format!("tandem: rule store: {message}"), None)
    }
}

impl From<CatalogError> for ChangeError {
    fn from(e: CatalogError) -> Self {
        match &e {
            CatalogError::Rule { reason, .. } if reason.contains("does not exist") => Self::new(
                "42P01",
                format!("tandem: {e}"),
                Some("create the table first"),
            ),
            CatalogError::Rule { .. } => Self::new(
                "55000",
                format!("tandem: {e}"),
                Some("fix the tables or the rule's target/key, then retry"),
            ),
            _ => Self::new("08000", format!("tandem: {e}"), None),
        }
    }
}

/// What a successful change did.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// The rule after the change (`None` after DROP).
    pub rule: Option<Rule>,
    /// Side effects worth telling the operator (sequences advanced...).
    pub notes: Vec<String>,
}

/// Validates and applies `change`, recording `by` as its author.
pub async fn apply(
    client: &mut Client,
    store: &Store,
    change: RuleChange,
    by: &str,
) -> Result<Applied, ChangeError> {
    let table = match &change {
        RuleChange::SetMode { table, .. }
        | RuleChange::SetSample { table, .. }
        | RuleChange::SetAutoPartition { table, .. }
        | RuleChange::SetGuard { table, .. }
        | RuleChange::SetDropColumns { table, .. }
        | RuleChange::SetDropTriggers { table, .. }
        | RuleChange::Drop { table, .. } => table.clone(),
        RuleChange::Add(rule) => rule.table.clone(),
    };
    let current = read_in(client, store, &table).await?;
    let mut notes = Vec::new();
    let new_rule = match (&change, &current) {
        (RuleChange::Add(_), Some(_)) => {
            return Err(ChangeError::new(
                "42710",
                format!("tandem: a rule for {table} already exists"),
                Some("change it with SET RULE, or DROP RULE it first"),
            ))
        }
        (RuleChange::Add(rule), None) => {
            // First without the lock, so the operator hears of the chain before anything
            // about the tables; again under the lock before writing.
            refuse_chain(&*client, store, rule).await?;
            resolve(client, rule).await?;
            Some(rule.clone())
        }
        (_, None) => {
            return Err(ChangeError::new(
                "42704",
                format!("tandem: no rule for {table}"),
                Some("see SHOW RULES, or ADD RULE it"),
            ))
        }
        (RuleChange::SetSample { rate, .. }, Some(old)) => {
            let mut rule = old.rule.clone();
            rule.sample_rate = *rate;
            Some(rule)
        }
        (RuleChange::SetDropTriggers { triggers, .. }, Some(old)) => {
            let mut rule = old.rule.clone();
            rule.drop_triggers = triggers.clone();
            Some(rule)
        }
        (RuleChange::SetDropColumns { columns, .. }, Some(old)) => {
            let mut rule = old.rule.clone();
            rule.drop_columns = columns.clone();
            Some(rule)
        }
        (RuleChange::SetGuard { guard, .. }, Some(old)) => {
            let mut rule = old.rule.clone();
            rule.guard = *guard;
            Some(rule)
        }
        (RuleChange::SetAutoPartition { on, .. }, Some(old)) => {
            let mut rule = old.rule.clone();
            rule.auto_partition = *on;
            Some(rule)
        }
        (RuleChange::Drop { force, .. }, Some(old)) => {
            if old.rule.mode == Mode::TargetOnly && !force {
                return Err(ChangeError::state(
                    format!(
                        "tandem: the rule for {table} is in target_only; without it, applications that still use the name {table} would read and write the legacy table, which stopped receiving writes"
                    ),
                    "switch the applications to the target's name first, then DROP RULE ... FORCE",
                ));
            }
            if matches!(old.rule.mode, Mode::UnionRead | Mode::Cutover) {
                return Err(ChangeError::state(
                    format!(
                        "tandem: the rule for {table} is in {}; dropping it would send reads and writes back to the legacy table alone",
                        old.rule.mode
                    ),
                    "SET RULE ... MODE dual_write (or off) first",
                ));
            }
            None
        }
        (RuleChange::SetMode { mode, force, .. }, Some(old)) => {
            let from = old.rule.mode;
            transition(&table, from, *mode, *force)?;
            let mut rule = old.rule.clone();
            rule.mode = *mode;
            if *mode == Mode::Off {
                // Nothing is mirrored in off: the target falls behind until a new backfill.
                rule.backfilled = false;
                rule.backfilled_to = None;
            }
            let resolved = resolve(client, &rule).await?;
            if from != *mode && matches!(mode, Mode::UnionRead | Mode::Cutover | Mode::TargetOnly) {
                same_access(client, &rule, *mode).await?;
            }
            if *mode == Mode::TargetOnly && from != Mode::TargetOnly {
                no_keys_to_legacy(client, &rule).await?;
            }
            if from != *mode && matches!(mode, Mode::Cutover | Mode::TargetOnly) {
                keeps_schema(client, &resolved, *mode).await?;
                keeps_defaults(client, &rule, *mode).await?;
            }
            if *mode == Mode::Cutover && from != Mode::Cutover {
                // From target_only the legacy table is the stale one: its extra rows are
                // rows the target deleted, which the re-sync removes.
                if from != Mode::TargetOnly {
                    backfilled(client, &resolved).await?;
                    shapes_agree(client, store, &table).await?;
                }
                notes.extend(advance_sequences(client, &rule.target, &rule.table).await?);
            }
            if from == Mode::TargetOnly && *mode == Mode::Cutover {
                notes.push(format!(
                    "{table} missed every write made in target_only: re-sync it now with tandem backfill --config tandem.toml --table {table} --reverse (leaving cutover is refused until it has finished)"
                ));
            }
            if from == Mode::Cutover
                && matches!(mode, Mode::DualWrite | Mode::UnionRead | Mode::Off)
            {
                resynced(client, store, &table, *mode).await?;
                notes.extend(advance_sequences(client, &rule.table, &rule.target).await?);
            }
            Some(rule)
        }
    };
    // Write, serialised with other admins on this row. The store's trigger moves the guard
    // in the same transaction; its lock waits at most tandem.guard_lock_timeout, and a
    // timeout (a long transaction on the table) is retried a few times, then reported
    // with the sessions holding the table.
    let mut attempt = 1;
    loop {
        match write(client, store, &table, &change, &current, &new_rule, by).await {
            Ok(()) => break,
            Err(e) if e.sqlstate == "55P03" && attempt < GUARD_LOCK_ATTEMPTS => {
                notes.push(format!(
                    "attempt {attempt}: the guard's lock on the rule's tables timed out ({}); retrying",
                    e.message
                ));
                tokio::time::sleep(std::time::Duration::from_millis(250 * attempt as u64)).await;
                attempt += 1;
            }
            Err(mut e) if e.sqlstate == "55P03" => {
                let holders = lock_holders(
                    client,
                    new_rule.as_ref().or(current.as_ref().map(|c| &c.rule)),
                )
                .await;
                e.message = format!(
                    "tandem: the rule for {table} was not changed: installing or removing its guard could not lock the tables after {attempt} attempts; {holders}"
                );
                e.hint = Some("end or wait for the long transaction(s) named, then retry (SET tandem.guard_lock_timeout on the admin role waits longer)".into());
                return Err(e);
            }
            Err(e) => return Err(e),
        }
    }
    if let Some(rule) = &new_rule {
        if let Ok(state) = crate::control::guard::report(client, rule).await {
            notes.push(format!("guard: {state}"));
        }
    }
    Ok(Applied {
        rule: new_rule,
        notes,
    })
}

/// How many times a rule change is tried when the guard's lock times out.
const GUARD_LOCK_ATTEMPTS: u32 = 4;

/// The sessions holding a lock on the rule's tables, for the lock-timeout message.
async fn lock_holders(client: &Client, rule: Option<&Rule>) -> String {
    let Some(rule) = rule else {
        return String::new();
    };
    let rows = client
        .query(
            "SELECT a.pid, coalesce(a.application_name, ''), coalesce(a.state, ''), \
                    coalesce(extract(epoch FROM now() - a.xact_start)::int8, 0), \
                    left(coalesce(a.query, ''), 80) \
             FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.granted AND l.pid <> pg_backend_pid() \
               AND l.relation IN (to_regclass($1), to_regclass($2)) \
             GROUP BY 1, 2, 3, 4, 5 ORDER BY 4 DESC",
            &[&rule.table.to_string(), &rule.target.to_string()],
        )
        .await
        .unwrap_or_default();
    if rows.is_empty() {
        return "no session holds them now".into();
    }
    let list: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "pid {} ({}, {}, transaction open {} s: {})",
                r.get::<_, i32>(0),
                r.get::<_, String>(1),
                r.get::<_, String>(2),
                r.get::<_, i64>(3),
                r.get::<_, String>(4)
            )
        })
        .collect();
    format!("held by {}", list.join("; "))
}

/// One attempt at writing the change (see [`apply`]).
async fn write(
    client: &mut Client,
    store: &Store,
    table: &TableName,
    change: &RuleChange,
    current: &Option<StoredRule>,
    new_rule: &Option<Rule>,
    by: &str,
) -> Result<(), ChangeError> {
    let tx = client.transaction().await?;
    if let RuleChange::Add(rule) = change {
        // Two ADD RULEs racing could each pass alone and chain together: one at a time.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&ADD_LOCK])
            .await?;
        refuse_chain(&tx, store, rule).await?;
    }
    let locked = read_in(&tx, store, table).await?;
    if locked.as_ref().map(|r| r.version) != current.as_ref().map(|r| r.version) {
        return Err(ChangeError::new(
            "40001",
            format!("tandem: the rule for {table} changed while this change was being checked"),
            Some("look at SHOW RULES and retry"),
        ));
    }
    // The re-sync owed by a FORCEd exit from target_only is recorded with the switch, so
    // no session sees cutover without it; entering cutover from a mode where legacy was
    // the table of record clears a leftover one.
    if let (RuleChange::SetMode { mode, .. }, Some(old)) = (change, current) {
        let name = table.to_string();
        match (old.rule.mode, mode) {
            (Mode::TargetOnly, Mode::Cutover) => {
                super::resync::require(
                    &tx,
                    store,
                    &name,
                    &old.rule.target.to_string(),
                    &old.rule.key,
                )
                .await?
            }
            (Mode::DualWrite | Mode::UnionRead, Mode::Cutover) => {
                super::resync::clear(&tx, store, &name).await?
            }
            _ => {}
        }
    }
    match new_rule {
        None => {
            tx.execute(
                &format!("DELETE FROM {} WHERE table_name = $1", store.rules()),
                &[&table.to_string()],
            )
            .await?;
        }
        Some(rule) => {
            tx.execute(
                &format!(
                    "INSERT INTO {} (table_name, target, key, mode, sample_rate, on_mirror_error, \
                       set_columns, updated_by, auto_partition, guard, drop_columns, drop_triggers, \
                       backfilled, backfilled_to) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7::text::jsonb, $8, $9, $10, $11, $12, $13, $14) \
                     ON CONFLICT (table_name) DO UPDATE SET target = EXCLUDED.target, \
                       key = EXCLUDED.key, mode = EXCLUDED.mode, sample_rate = EXCLUDED.sample_rate, \
                       on_mirror_error = EXCLUDED.on_mirror_error, set_columns = EXCLUDED.set_columns, \
                       updated_by = EXCLUDED.updated_by, auto_partition = EXCLUDED.auto_partition, \
                       guard = EXCLUDED.guard, drop_columns = EXCLUDED.drop_columns, \
                       drop_triggers = EXCLUDED.drop_triggers, backfilled = EXCLUDED.backfilled, \
                       backfilled_to = EXCLUDED.backfilled_to",
                    store.rules()
                ),
                &[
                    &rule.table.to_string(),
                    &rule.target.to_string(),
                    &rule.key,
                    &rule.mode.as_str(),
                    &rule.sample_rate,
                    &rule.on_mirror_error.as_str(),
                    &set_json(&rule.set),
                    &by,
                    &rule.auto_partition,
                    &rule.guard.as_str(),
                    &rule.drop_columns,
                    &rule.drop_triggers,
                    &rule.backfilled,
                    &rule.backfilled_to,
                ],
            )
            .await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// Advisory lock key serialising ADD RULE across instances (see [`refuse_chain`]).
const ADD_LOCK: i64 = super::SCHEMA_LOCK + 1;

/// Refuses a new rule whose table is a stored rule's target, or whose target is a stored
/// rule's table: the mirror write into the target would itself be a ruled write.
async fn refuse_chain(
    client: &impl tokio_postgres::GenericClient,
    store: &Store,
    rule: &Rule,
) -> Result<(), ChangeError> {
    let rows = client
        .query(
            &format!("SELECT {RULE_COLUMNS} FROM {} AS r", store.rules()),
            &[],
        )
        .await?;
    let mut stored = Vec::with_capacity(rows.len());
    for row in &rows {
        stored.push(stored_rule(row, 0).map_err(|(name, reason)| {
            ChangeError::new(
                "XX000",
                format!("tandem: stored rule for {name} is invalid: {reason}"),
                Some("fix the row in the rule store"),
            )
        })?);
    }
    tandem_rules::refuse_chains(stored.iter().map(|s| &s.rule).chain([rule])).map_err(|e| {
        ChangeError::state(
            format!("tandem: {e}"),
            "a table takes part in one rule only; finish the other rule's migration (DROP RULE) first, or choose another target",
        )
    })
}

/// Is `from -> to` allowed? (See the module doc.)
pub fn transition(table: &TableName, from: Mode, to: Mode, force: bool) -> Result<(), ChangeError> {
    use Mode::*;
    if from == to {
        return Ok(());
    }
    if from == TargetOnly && !force {
        return Err(ChangeError::state(
            format!("tandem: {table} is in target_only; the legacy table has not received writes since, so leaving target_only would serve or keep stale rows"),
            &format!("the way back is SET RULE {table} MODE cutover FORCE (writes reach both tables again), then tandem backfill --config tandem.toml --table {table} --reverse to re-sync the legacy table, then tandem parity --strict; see the runbook"),
        ));
    }
    if from == TargetOnly && to != Cutover {
        return Err(ChangeError::state(
            format!("tandem: {table} cannot go from target_only to {to}: the legacy table missed every write made in target_only, and {to} would serve or keep its stale rows"),
            &format!("go back through cutover: SET RULE {table} MODE cutover FORCE, then tandem backfill --config tandem.toml --table {table} --reverse, then SET RULE {table} MODE {to}"),
        ));
    }
    let ok = match to {
        Off | DualWrite => true,
        UnionRead => matches!(from, DualWrite | Cutover),
        Cutover => matches!(from, DualWrite | UnionRead | TargetOnly),
        TargetOnly => from == Cutover,
    };
    if ok {
        return Ok(());
    }
    let hint = match to {
        UnionRead => "SET RULE ... MODE dual_write first, and backfill the target",
        Cutover => "SET RULE ... MODE dual_write first, backfill, then union_read or cutover",
        _ => "go through cutover first: dual_write -> union_read -> cutover -> target_only",
    };
    Err(ChangeError::state(
        format!(
            "tandem: {table} cannot go from {from} to {to}: the target would not hold every row"
        ),
        hint,
    ))
}

/// The stored rule for `table`, its row locked when inside a transaction.
async fn read_in(
    client: &impl tokio_postgres::GenericClient,
    store: &Store,
    table: &TableName,
) -> Result<Option<StoredRule>, ChangeError> {
    let row = client
        .query_opt(
            &format!(
                "SELECT {RULE_COLUMNS} FROM {} AS r WHERE r.table_name = $1 FOR UPDATE",
                store.rules()
            ),
            &[&table.to_string()],
        )
        .await?;
    let Some(row) = row else { return Ok(None) };
    stored_rule(&row, 0).map(Some).map_err(|(name, reason)| {
        ChangeError::new(
            "XX000",
            format!("tandem: stored rule for {name} is invalid: {reason}"),
            Some("fix the row in the rule store"),
        )
    })
}

/// Resolves `rule` against the catalog as if it were active (an `off` rule is checked too,
/// so ADD RULE catches a missing target at once).
async fn resolve(client: &Client, rule: &Rule) -> Result<ResolvedRule, ChangeError> {
    let mut active = rule.clone();
    if active.mode == Mode::Off {
        active.mode = Mode::DualWrite;
    }
    let set = catalog::resolve(client, &[active], 0).await?;
    set.rules.into_iter().next().ok_or_else(|| {
        ChangeError::new(
            "XX000",
            format!("tandem: rule for {} did not resolve", rule.table),
            None,
        )
    })
}

/// Refuses moving reads or writes to the target while its access rules (RLS, policies,
/// privileges, owner) differ from the legacy table's: the applications' roles would see or
/// change rows they cannot today (see [`crate::control::access`]).
async fn same_access(client: &Client, rule: &Rule, mode: Mode) -> Result<(), ChangeError> {
    let differences =
        crate::control::access::differences(client, &rule.table, &rule.target).await?;
    if differences.is_empty() {
        return Ok(());
    }
    let shown: Vec<&str> = differences.iter().take(12).map(String::as_str).collect();
    let more = match differences.len() {
        n if n > 12 => format!(" (and {} more)", n - 12),
        _ => String::new(),
    };
    Err(ChangeError::state(
        format!(
            "tandem: {} cannot go to {mode}: {} serves the rows then, and its access rules differ from {}'s: {}{more}",
            rule.table,
            rule.target,
            rule.table,
            shown.join("; ")
        ),
        "give the target the same row level security, policies, privileges and owner as the legacy table (tandem parity lists every difference), then retry",
    ))
}

/// Refuses `target_only` while a foreign key references the legacy table: new child rows
/// would be checked against a table that no longer receives writes (see
/// [`crate::control::foreign_keys`]).
async fn no_keys_to_legacy(client: &Client, rule: &Rule) -> Result<(), ChangeError> {
    let problems =
        crate::control::foreign_keys::problems(client, &rule.table, &rule.target).await?;
    let referencing: Vec<String> = problems
        .iter()
        .filter(|p| p.kind == "references_legacy")
        .map(|p| p.describe())
        .collect();
    if referencing.is_empty() {
        return Ok(());
    }
    Err(ChangeError::state(
        format!(
            "tandem: {} cannot go to target_only while foreign keys reference it (the legacy table stops receiving writes, so new child rows would be refused): {}",
            rule.table,
            referencing.join("; ")
        ),
        "re-point each foreign key to the target as shown, then retry",
    ))
}

/// Refuses making the target the table of record (`cutover`, `target_only`) while a NOT
/// NULL column of it has no default that the legacy column has: inserts that leave the
/// column out would fail there (see [`crate::control::defaults`]).
async fn keeps_defaults(client: &Client, rule: &Rule, mode: Mode) -> Result<(), ChangeError> {
    let missing = crate::control::defaults::missing(client, &rule.table, &rule.target).await?;
    if missing.is_empty() {
        return Ok(());
    }
    let named: Vec<String> = missing.iter().map(|m| m.describe()).collect();
    let example = missing
        .iter()
        .find(|m| m.legacy_default.starts_with("DEFAULT "))
        .map(|m| {
            format!(
                " (e.g. ALTER TABLE {} ALTER COLUMN {} SET {})",
                rule.target,
                quote_ident(&m.column),
                m.legacy_default
            )
        })
        .unwrap_or_default();
    Err(ChangeError::state(
        format!(
            "tandem: {} cannot go to {mode}: inserts then run on {} first, and these NOT NULL columns have a default on {} but none on {}, so an insert that leaves them out would fail: {}",
            rule.table,
            rule.target,
            rule.table,
            rule.target,
            named.join(", ")
        ),
        &format!(
            "give the target the same defaults{example}, then retry; tandem init copies them"
        ),
    ))
}

/// Refuses making the target the table of record (`cutover`, `target_only`) while it lacks
/// a legacy column, narrows one, or lacks a NOT NULL, CHECK or unique rule of the legacy
/// table: values or data rules would be lost (the parity report's `columns` and
/// `constraints` checks say the same).
async fn keeps_schema(
    client: &mut Client,
    rule: &ResolvedRule,
    mode: Mode,
) -> Result<(), ChangeError> {
    let set_columns = crate::ops::parity::set_columns(client, rule).await?;
    let columns = crate::ops::parity::column_differences(rule).with_set_columns(set_columns);
    let mut problems: Vec<String> = columns
        .lost()
        .map(|c| {
            format!(
                "legacy column {c} is not on the target (declare it with SET RULE ... DROP_COLUMNS if it is left behind on purpose)"
            )
        })
        .collect();
    problems.extend(columns.narrowing_problems());
    let missing =
        crate::ops::constraints::missing(client, &rule.rule.table, &rule.rule.target).await?;
    problems.extend(missing.data_rule_problems());
    let triggers = crate::control::triggers::pairs(
        &*client,
        &rule.rule.table,
        &rule.rule.target,
        &rule.rule.drop_triggers,
    )
    .await?;
    problems.extend(
        crate::control::triggers::lost(&triggers)
            .into_iter()
            .map(|t| format!("{t} (tandem parity prints the statements that copy it; SET RULE ... DROP_TRIGGERS if the target does not need it)")),
    );
    if problems.is_empty() {
        return Ok(());
    }
    Err(ChangeError::state(
        format!(
            "tandem: {} cannot go to {mode}: the target would become the table of record without: {}",
            rule.rule.table,
            problems.join("; ")
        ),
        "add the columns, rules and triggers to the target (widen the narrowed columns), backfill again, and check with tandem parity",
    ))
}

/// Refuses leaving `cutover` for `to` (a mode that serves or keeps legacy rows) while the
/// re-sync a FORCEd exit from `target_only` owes has not finished (see [`super::resync`]).
async fn resynced(
    client: &Client,
    store: &Store,
    table: &TableName,
    to: Mode,
) -> Result<(), ChangeError> {
    let Some(owed) = super::resync::state(client, store, &table.to_string()).await? else {
        return Ok(());
    };
    if owed.done() {
        return Ok(());
    }
    Err(ChangeError::state(
        format!(
            "tandem: {table} cannot go from cutover to {to} yet: it came back from target_only, and its re-sync from the target is {}; in {to} the legacy table would serve or keep rows the target changed or deleted in target_only",
            owed.describe()
        ),
        &format!(
            "run tandem backfill --config tandem.toml --table {table} --reverse until it says finished, check with tandem parity --config tandem.toml --table {table} --strict, then retry"
        ),
    ))
}

/// Refuses cutover while the newest shadow comparison of one of the table's top read
/// shapes (by executions, the default `shadow.top_k`) found rows that differ: the target
/// would answer that read differently (see docs/parity.md, read shapes).
async fn shapes_agree(
    client: &Client,
    store: &Store,
    table: &TableName,
) -> Result<(), ChangeError> {
    let shapes = store.qualified("shadow_shapes");
    let exists: bool = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&shapes])
        .await?
        .get(0);
    if !exists {
        return Ok(());
    }
    let top_k = crate::config::ShadowConfig::default().top_k;
    let differ: Vec<String> = client
        .query(
            &format!(
                "SELECT fingerprint, left(shape, 120), differing, comparisons FROM \
                   (SELECT *, row_number() OVER (ORDER BY executions DESC, fingerprint) AS rank \
                    FROM {shapes} WHERE rule_table = $1) s \
                 WHERE rank <= $2 AND clean_streak = 0 AND differing > 0 ORDER BY rank LIMIT 5"
            ),
            &[&table.to_string(), &top_k],
        )
        .await?
        .iter()
        .map(|r| {
            format!(
                "{} \"{}\" (rows differ in {} of {} comparisons)",
                r.get::<_, String>(0),
                r.get::<_, String>(1),
                r.get::<_, i64>(2),
                r.get::<_, i64>(3)
            )
        })
        .collect();
    if differ.is_empty() {
        return Ok(());
    }
    Err(ChangeError::state(
        format!(
            "tandem: {table} cannot go to cutover: the target answers some of its most run reads with other rows than the legacy table (the newest shadow comparison of each differed): {}",
            differ.join("; ")
        ),
        &format!(
            "find why with tandem parity --table {table} (and SHOW SHAPES); once the target agrees, the next comparisons of those reads clear this. For a read that cannot agree (random(), ORDER BY ... LIMIT with ties): UPDATE {shapes} SET differing = 0 WHERE fingerprint = '...'"
        ),
    ))
}

/// Refuses cutover while any legacy key is missing from the target.
async fn backfilled(client: &Client, rule: &ResolvedRule) -> Result<(), ChangeError> {
    let matches = rule
        .rule
        .key
        .iter()
        .map(|k| {
            let k = quote_ident(k);
            format!("t.{k} = l.{k}")
        })
        .collect::<Vec<_>>()
        .join(" AND ");
    let missing: i64 = client
        .query_one(
            &format!(
                "SELECT count(*) FROM {} AS l WHERE NOT EXISTS (SELECT 1 FROM {} AS t WHERE {matches})",
                rule.rule.table, rule.rule.target
            ),
            &[],
        )
        .await?
        .get(0);
    if missing > 0 {
        return Err(ChangeError::state(
            format!(
                "tandem: {} legacy rows of {} are not in {} yet; cutover would hide them",
                missing, rule.rule.table, rule.rule.target
            ),
            "finish the backfill (INSERT INTO target SELECT ... ON CONFLICT DO NOTHING), then retry",
        ));
    }
    Ok(())
}

/// Advances every sequence that feeds a column of `table` past the largest value of that
/// column in `table` and `other`. Returns one note per sequence moved.
async fn advance_sequences(
    client: &Client,
    table: &TableName,
    other: &TableName,
) -> Result<Vec<String>, ChangeError> {
    let rows = client
        .query(
            "SELECT a.attname::text, pg_get_serial_sequence($1::text, a.attname) \
             FROM pg_attribute a WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 \
               AND NOT a.attisdropped AND pg_get_serial_sequence($1::text, a.attname) IS NOT NULL",
            &[&table.to_string()],
        )
        .await?;
    let mut notes = Vec::new();
    for row in rows {
        let column: String = row.get(0);
        let sequence: String = row.get(1);
        let col = quote_ident(&column);
        let has_other: bool = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = $1::text::regclass \
                 AND attname = $2::text AND NOT attisdropped)",
                &[&other.to_string(), &column],
            )
            .await?
            .get(0);
        let other_max = if has_other {
            format!("(SELECT max({col})::int8 FROM {other})")
        } else {
            "NULL".to_string()
        };
        let value: i64 = client
            .query_one(
                &format!(
                    "SELECT setval($1::text::regclass, greatest((SELECT last_value FROM {sequence}), \
                       (SELECT max({col})::int8 FROM {table}), {other_max}, 1))"
                ),
                &[&sequence],
            )
            .await?
            .get(0);
        notes.push(format!("sequence {sequence} advanced to {value}"));
    }
    Ok(notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_follow_the_runbook() {
        let t = TableName::new(Some("public"), "orders");
        use Mode::*;
        for (from, to) in [
            (Off, DualWrite),
            (DualWrite, UnionRead),
            (UnionRead, Cutover),
            (DualWrite, Cutover),
            (Cutover, DualWrite),
            (Cutover, UnionRead),
            (Cutover, TargetOnly),
            (UnionRead, Off),
            (Cutover, Off),
        ] {
            assert!(transition(&t, from, to, false).is_ok(), "{from} -> {to}");
        }
        for (from, to) in [
            (Off, UnionRead),
            (Off, Cutover),
            (Off, TargetOnly),
            (DualWrite, TargetOnly),
            (UnionRead, TargetOnly),
            (TargetOnly, Cutover),
            (TargetOnly, Off),
        ] {
            let err = transition(&t, from, to, false).unwrap_err();
            assert_eq!(err.sqlstate, "55000");
            assert!(err.hint.is_some());
        }
        assert!(transition(&t, TargetOnly, Cutover, true).is_ok());
        // Back from target_only only through cutover, where the re-sync runs.
        for to in [Off, DualWrite, UnionRead] {
            let err = transition(&t, TargetOnly, to, true).unwrap_err();
            assert_eq!(err.sqlstate, "55000");
            assert!(err.hint.is_some_and(|h| h.contains("--reverse")), "{to}");
        }
    }
}
