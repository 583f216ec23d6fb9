//! Mirroring `INSERT` into a ruled table.
//!
//! ```sql
//! INSERT INTO orders AS o (id, amount) VALUES ($1, $2) RETURNING o.id
//! -- becomes
//! WITH tandem_w AS (INSERT INTO orders AS o (id, amount) VALUES ($1, $2) RETURNING *),
//!      tandem_m AS (INSERT INTO public.orders_v2 (...) SELECT ... FROM tandem_w
//!                   ON CONFLICT (id) DO UPDATE SET ...)
//! SELECT o.id FROM tandem_w AS o
//! ```
//!
//! Every INSERT form PostgreSQL has works the same way (VALUES, multi-row, SELECT, DEFAULT
//! VALUES, the client's own ON CONFLICT): `tandem_w` holds exactly the rows the legacy table
//! inserted or updated, and the target gets those rows by upsert, so a row the client's
//! `ON CONFLICT DO NOTHING` skipped is skipped in the target too.
//!
//! Except one: `ON CONFLICT ... DO UPDATE SET <key column> = ...` moves the existing row to
//! a new key, and its old key, which the target row still has, is in no RETURNING (and
//! which row conflicted is only known inside the INSERT). It is refused like a key change
//! with FROM, unless the value is `EXCLUDED.<col>` for a column of the conflict target:
//! that is the key the row already has (the common "upsert every column" form).

use sqlparser::ast::{
    ConflictTarget, Expr, Insert, OnConflict, OnConflictAction, OnInsert, TableObject, With,
};

use crate::ident::normalize;

use crate::plan::{StatementPlan, WriteTag};
use crate::refusal::Refusal;
use crate::returning::Subject;
use crate::rule::ResolvedRule;
use crate::update::assigned_keys;

/// Rewrite an INSERT into `rule`'s table (with the client's `with`, if any);
/// `statement` is the client's text, kept with any drift under the `record` policy.
pub(crate) fn rewrite(
    with: Option<&With>,
    ins: &Insert,
    rule: &ResolvedRule,
    statement: &str,
) -> Result<StatementPlan, Refusal> {
    let unsupported = |construct: &str| Refusal::Unsupported {
        table: rule.rule.table.clone(),
        construct: construct.to_string(),
    };
    let TableObject::TableName(table) = &ins.table else {
        return Err(unsupported("INSERT INTO a table function"));
    };
    if has_foreign_syntax(ins) {
        return Err(unsupported("INSERT syntax from another SQL dialect"));
    }
    if let Some(column) = moved_key(ins, rule) {
        return Err(Refusal::KeyUpdate {
            table: rule.rule.table.clone(),
            column,
            context: "in INSERT ... ON CONFLICT DO UPDATE",
        });
    }
    let subject = Subject {
        table,
        alias: ins.table_alias.as_ref().map(|a| &a.alias),
        rule,
    };
    let mut write = ins.clone();
    write.returning = None;
    subject.mirrored(
        with,
        &write,
        "*",
        false,
        WriteTag::Insert,
        ins.returning.as_deref(),
        statement,
    )
}

/// The first key column an `ON CONFLICT DO UPDATE` may change (see the module doc).
fn moved_key(ins: &Insert, rule: &ResolvedRule) -> Option<String> {
    let Some(OnInsert::OnConflict(OnConflict {
        conflict_target,
        action: OnConflictAction::DoUpdate(update),
    })) = &ins.on
    else {
        return None;
    };
    let arbiter: Vec<String> = match conflict_target {
        Some(ConflictTarget::Columns(columns)) => columns.iter().map(normalize).collect(),
        _ => Vec::new(),
    };
    assigned_keys(&update.assignments, rule)
        .find(|(column, value)| {
            let unchanged = matches!(value, Some(Expr::CompoundIdentifier(parts))
                if parts.len() == 2
                    && normalize(&parts[0]) == "excluded"
                    && &normalize(&parts[1]) == column);
            !(unchanged && arbiter.contains(column))
        })
        .map(|(column, _)| column)
}

/// Clauses the parser accepts for other databases; PostgreSQL would reject them anyway.
fn has_foreign_syntax(ins: &Insert) -> bool {
    ins.or.is_some()
        || ins.ignore
        || ins.overwrite
        || ins.replace_into
        || ins.has_table_keyword
        || ins.partitioned.is_some()
        || !ins.after_columns.is_empty()
        || !ins.assignments.is_empty()
        || ins.output.is_some()
        || ins.priority.is_some()
        || ins.insert_alias.is_some()
        || ins.settings.is_some()
        || ins.format_clause.is_some()
        || ins.multi_table_insert_type.is_some()
        || !ins.optimizer_hints.is_empty()
}

#[cfg(test)]
#[path = "tests/insert.rs"]
mod tests;

#[cfg(test)]
#[path = "tests/large.rs"]
mod large_tests;
