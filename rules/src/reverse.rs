//! `cutover` writes: reverse dual-write. The target is the table of record; every write the
//! client sends for the legacy table runs on the target, and the written rows are mirrored
//! back into the legacy table in the same statement, so returning to `dual_write` or `off`
//! loses nothing.
//!
//! It is the dual-write rewrite with the roles swapped: the client's statement has its
//! table replaced by the target (keeping the client's alias, or taking the legacy table's
//! bare name as alias so `orders.col` references resolve), and the rule is reversed (the
//! target is written, the legacy table is the mirror, on the same key), so every form the
//! dual-write rewrite supports — RETURNING, ON CONFLICT, UPDATE … FROM, DELETE … USING,
//! key-moving UPDATEs, MERGE (from PostgreSQL 17), the `record` policy — works the same way:
//!
//! ```sql
//! UPDATE orders SET note = 'x' WHERE id = 5
//! -- becomes
//! WITH tandem_w AS (UPDATE public.orders_v2 AS orders SET note = 'x' WHERE id = 5 RETURNING *),
//!      tandem_m AS (INSERT INTO public.orders (...) SELECT ... FROM tandem_w
//!                   ON CONFLICT (id) DO UPDATE SET ...)
//! SELECT FROM tandem_w
//! ```
//!
//! What the swap cannot give: the rule's `set` columns are not computed (the application
//! writes the target directly now; give those columns a DEFAULT), the reverse upsert's
//! conflict target is the legacy primary key when the rule's key contains it (else the
//! rule's key, which then needs a unique index on the legacy table), and `RETURNING *`
//! is refused when the target's columns differ from the legacy table's (the client would
//! see the target's shape): name the columns.

use sqlparser::ast::{
    FromTable, OutputClause, SelectItem, Statement, TableAlias, TableAliasWithoutColumns,
    TableFactor, TableObject, With,
};

use crate::ident::ident;
use crate::plan::StatementPlan;
use crate::refusal::Refusal;
use crate::rule::{ResolvedRule, Rule, TableShape};
use crate::{delete, insert, merge, update};

/// Rewrite a top-level INSERT/UPDATE/DELETE/MERGE of `rule`'s legacy table (mode
/// `cutover`) for a server of `server_version` (`server_version_num`).
pub(crate) fn rewrite(
    with: Option<&With>,
    top: &Statement,
    rule: &ResolvedRule,
    piece: &str,
    server_version: u32,
) -> Result<StatementPlan, Refusal> {
    let mut reversed = reversed(rule);
    // The statement now names the target: the server still checks that the client's own
    // bare name meant the ruled legacy table (not a temporary table of that name).
    if rule.shape.legacy_oid != 0 {
        reversed.client_name =
            client_name(top).map(|name| (name, rule.shape.legacy_oid, rule.rule.table.clone()));
    }
    let mut write = top.clone();
    let returning = match &mut write {
        Statement::Insert(ins) => {
            if let TableObject::TableName(name) = &mut ins.table {
                *name = rule.rule.target.to_object_name();
            }
            if ins.table_alias.is_none() {
                ins.table_alias = Some(TableAliasWithoutColumns {
                    explicit: true,
                    alias: ident(&rule.rule.table.name),
                });
            }
            ins.returning.clone()
        }
        Statement::Update(upd) => {
            swap_factor(&mut upd.table.relation, rule);
            upd.returning.clone()
        }
        Statement::Delete(del) => {
            let from = match &mut del.from {
                FromTable::WithFromKeyword(from) | FromTable::WithoutKeyword(from) => from,
            };
            if let Some(first) = from.first_mut() {
                swap_factor(&mut first.relation, rule);
            }
            del.returning.clone()
        }
        Statement::Merge(m) => {
            // Without a column list an INSERT action takes the table's columns in order,
            // which are the target's now.
            if merge::inserts_without_columns(m) && !same_columns(rule) {
                return Err(Refusal::Unsupported {
                    table: rule.rule.table.clone(),
                    construct: "MERGE ... INSERT without a column list in cutover while the \
                                target's columns differ from the legacy table's (name the columns)"
                        .into(),
                });
            }
            swap_factor(&mut m.table, rule);
            match &m.output {
                Some(OutputClause::Returning { select_items, .. }) => Some(select_items.clone()),
                _ => None,
            }
        }
        _ => None,
    };
    if let Some(items) = &returning {
        let star = items.iter().any(|i| {
            matches!(
                i,
                SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)
            )
        });
        if star && !same_columns(rule) {
            return Err(Refusal::Unsupported {
                table: rule.rule.table.clone(),
                construct: "RETURNING * in cutover while the target's columns differ from the legacy table's (name the columns)".into(),
            });
        }
    }
    let mut plan = match &write {
        Statement::Insert(ins) => insert::rewrite(with, ins, &reversed, piece),
        Statement::Update(upd) => update::rewrite(with, upd, &reversed, piece, false),
        Statement::Delete(del) => delete::rewrite(with, del, &reversed, piece, false),
        Statement::Merge(m) => merge::rewrite(with, m, &reversed, piece, false, server_version),
        _ => {
            return Err(Refusal::Unsupported {
                table: rule.rule.table.clone(),
                construct: "this statement in cutover".into(),
            })
        }
    }
    .map_err(|refusal| refusal.for_table(&rule.rule.table))?;
    plan.rule_table = Some(rule.rule.table.clone());
    Ok(plan)
}

/// The rule with its roles swapped: the target is written, the legacy table mirrors it.
/// Its key is the reverse upsert's conflict target, its mirrored columns those written into
/// the legacy table (`tandem backfill --reverse` copies the same way the mirror does).
pub fn reversed(rule: &ResolvedRule) -> ResolvedRule {
    let shape = &rule.shape;
    // The legacy table's own primary key is the reverse upsert's conflict target when the
    // rule's key extends it (a partitioned target's key adds the partition column, which
    // the legacy table has no unique index on).
    let pk = &shape.legacy_primary_key;
    let key = if !pk.is_empty() && pk.iter().all(|c| shape.mirrored_columns.contains(c)) {
        pk.clone()
    } else {
        rule.rule.key.clone()
    };
    ResolvedRule {
        rule: Rule {
            table: rule.rule.target.clone(),
            target: rule.rule.table.clone(),
            mode: rule.rule.mode,
            key,
            on_mirror_error: rule.rule.on_mirror_error,
            set: Vec::new(),
            sample_rate: rule.rule.sample_rate,
            auto_partition: rule.rule.auto_partition,
            guard: rule.rule.guard,
            drop_columns: rule.rule.drop_columns.clone(),
            drop_triggers: rule.rule.drop_triggers.clone(),
            backfilled: rule.rule.backfilled,
            backfilled_to: rule.rule.backfilled_to.clone(),
        },
        shape: TableShape {
            legacy_columns: shape.target_columns.clone(),
            target_columns: shape.legacy_columns.clone(),
            // A column generated in legacy is computed there again, never written.
            mirrored_columns: shape
                .mirrored_columns
                .iter()
                .filter(|c| shape.legacy_columns.contains(c))
                .cloned()
                .collect(),
            target_partition_key: Vec::new(),
            legacy_oid: shape.target_oid,
            target_oid: shape.legacy_oid,
            legacy_table: shape.target_table.clone(),
            target_table: shape.legacy_table.clone(),
            legacy_primary_key: Vec::new(),
            // Writes in cutover land on the target: the legacy table's guard is idle.
            guard_ready: false,
        },
        client_name: None,
    }
}

/// The table name the client wrote in `top`.
fn client_name(top: &Statement) -> Option<String> {
    let name = match top {
        Statement::Insert(ins) => match &ins.table {
            TableObject::TableName(name) => name,
            _ => return None,
        },
        Statement::Update(upd) => match &upd.table.relation {
            TableFactor::Table { name, .. } => name,
            _ => return None,
        },
        Statement::Delete(del) => {
            let (FromTable::WithFromKeyword(from) | FromTable::WithoutKeyword(from)) = &del.from;
            match &from.first()?.relation {
                TableFactor::Table { name, .. } => name,
                _ => return None,
            }
        }
        Statement::Merge(m) => match &m.table {
            TableFactor::Table { name, .. } => name,
            _ => return None,
        },
        _ => return None,
    };
    Some(name.to_string())
}

/// Do both tables have the same column names in the same order?
fn same_columns(rule: &ResolvedRule) -> bool {
    let shape = &rule.shape;
    if shape.legacy_table.is_empty() || shape.target_table.is_empty() {
        return shape.legacy_columns == shape.target_columns;
    }
    shape
        .legacy_table
        .iter()
        .map(|c| &c.name)
        .eq(shape.target_table.iter().map(|c| &c.name))
}

/// Point a written table factor at the target, keeping (or adding) the alias.
fn swap_factor(factor: &mut TableFactor, rule: &ResolvedRule) {
    if let TableFactor::Table { name, alias, .. } = factor {
        *name = rule.rule.target.to_object_name();
        if alias.is_none() {
            *alias = Some(TableAlias {
                explicit: true,
                name: ident(&rule.rule.table.name),
                columns: Vec::new(),
                at: None,
            });
        }
    }
}

#[cfg(test)]
#[path = "tests/reverse.rs"]
mod tests;
