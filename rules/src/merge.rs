//! Mirroring `MERGE` into a ruled table, on PostgreSQL 17 and later.
//!
//! A mirror needs the written rows in the same statement. PostgreSQL 17 gives MERGE a
//! RETURNING clause (with `merge_action()` saying what each row went through, and the old
//! row for a DELETE) and lets it sit in a data-modifying CTE, so MERGE takes the shape of
//! every other mirrored write:
//!
//! ```sql
//! MERGE INTO orders o USING src s ON o.id = s.id
//!   WHEN MATCHED AND s.gone THEN DELETE
//!   WHEN MATCHED THEN UPDATE SET amount = s.amount
//!   WHEN NOT MATCHED THEN INSERT (id, amount) VALUES (s.id, s.amount)
//!   RETURNING merge_action(), o.id
//! -- becomes
//! WITH tandem_w AS (MERGE INTO orders o USING src s ON ... RETURNING o.*,
//!                   CASE WHEN false THEN ROW(merge_action(), o.id) END AS tandem_check,
//!                   merge_action() AS merge_action),
//!      tandem_d AS (DELETE FROM public.orders_v2 AS tandem_t USING tandem_w
//!                   WHERE tandem_w.merge_action = 'DELETE' AND tandem_t.id = tandem_w.id
//!                     AND NOT EXISTS (SELECT FROM tandem_w AS tandem_n
//!                                     WHERE tandem_n.merge_action <> 'DELETE'
//!                                       AND tandem_n.id = tandem_t.id)),
//!      tandem_m AS (INSERT INTO public.orders_v2 (...) SELECT ... FROM tandem_w
//!                   WHERE tandem_w.merge_action <> 'DELETE' ON CONFLICT (id) DO UPDATE ...)
//! SELECT o.merge_action, o.id FROM tandem_w AS o
//! ```
//!
//! Inserted and updated rows are upserted into the target, as an INSERT's and an UPDATE's
//! are; deleted rows (RETURNING shows a deleted row as it was) are deleted by key, as a
//! DELETE's are. `DO NOTHING` returns no row and writes nothing. The two target writes
//! never touch the same key (a key deleted and inserted again in one MERGE is only
//! upserted), so their order does not matter. MERGE's own tag counts exactly the rows its
//! RETURNING returns, so the final SELECT's count is the client's `MERGE n`. The client's
//! `merge_action()` is read from the carried column, which bears that name so that the
//! column keeps its name in the RowDescription; as with UPDATE ... FROM, the client's
//! RETURNING may name only the merged table's columns (not the source's, nor `*`).
//!
//! A `WHEN MATCHED THEN UPDATE` that assigns a key column moves the target row. On 17 its
//! old key is in no RETURNING, and the rows cannot be locked ahead as the
//! [`keymove`](crate::keymove) form does (the join decides which rows are matched), so it
//! is refused. PostgreSQL 18's `RETURNING OLD` gives the old key, so there the write also
//! returns `tandem_old.<key>` (through `WITH (OLD AS tandem_old)`, whatever the client's
//! aliases) and `tandem_d` deletes the old keys of updated and deleted rows that no
//! written row has as its new key, exactly as the key-move form's `tandem_d` does.
//!
//! Under the `record` policy the final SELECT calls `tandem.mirror()` twice, once to upsert
//! the inserted and updated rows and once to delete the deleted ones (the same disjoint
//! sets); a key change there is refused, as for UPDATE. In `cutover` the same rewrite runs
//! with the roles swapped (see [`reverse`](crate::reverse)). Before 17 a MERGE into a ruled
//! table is refused (`Refusal::Merge`); PostgreSQL 13 and 14 have no MERGE at all.

use std::ops::ControlFlow;

use sqlparser::ast::{
    Expr, Ident, Merge, MergeAction, MergeInsertKind, MergeUpdateKind, ObjectNamePart,
    OutputClause, SelectItem, TableFactor, VisitMut, VisitorMut, With,
};

use crate::carried::Carried;
use crate::ident::{normalize, quote_ident};
use crate::only;
use crate::plan::{ResponseFix, StatementPlan, WriteTag};
use crate::record::guard_rows;
use crate::refusal::Refusal;
use crate::returning::Subject;
use crate::rule::{MirrorErrorPolicy, ResolvedRule};
use crate::sqlgen::{upsert_cte_of, Composed, Mirror, WRITE_CTE};
use crate::update::assigned_keys;

/// The first `server_version_num` with `MERGE ... RETURNING` and MERGE inside WITH.
pub(crate) const MERGE_RETURNING: u32 = 170_000;
/// The first `server_version_num` with `RETURNING OLD`.
pub(crate) const RETURNING_OLD: u32 = 180_000;

/// The column of `tandem_w` holding `merge_action()`.
const ACTION: &str = "merge_action";
/// Name of the CTE that deletes the target rows of deleted (and moved) rows.
const DELETE_CTE: &str = "tandem_d";
/// What the write's RETURNING calls the old row on 18.
const OLD: &str = "tandem_old";

/// The refusal for a MERGE into `rule`'s table on a server before 17.
pub(crate) fn refuse(rule: &ResolvedRule) -> Refusal {
    Refusal::Merge {
        table: rule.rule.table.clone(),
    }
}

/// Rewrite a MERGE into `rule`'s table (with the client's `with`, if any) for a server of
/// `server_version` (`server_version_num`); `statement` is the client's text, kept with any
/// drift under the `record` policy; `only` says the client wrote `MERGE INTO ONLY`.
pub(crate) fn rewrite(
    with: Option<&With>,
    merge: &Merge,
    rule: &ResolvedRule,
    statement: &str,
    only: bool,
    server_version: u32,
) -> Result<StatementPlan, Refusal> {
    if server_version < MERGE_RETURNING {
        return Err(refuse(rule));
    }
    let unsupported = |construct: &str| Refusal::Unsupported {
        table: rule.rule.table.clone(),
        construct: construct.to_string(),
    };
    let TableFactor::Table { name, alias, .. } = &merge.table else {
        return Err(unsupported("MERGE into something other than a table"));
    };
    if has_foreign_syntax(merge) {
        return Err(unsupported("MERGE syntax from another SQL dialect"));
    }
    let returning = match &merge.output {
        None => None,
        Some(OutputClause::Returning { select_items, .. }) => Some(select_items.as_slice()),
        Some(OutputClause::Output { .. }) => {
            return Err(unsupported("MERGE syntax from another SQL dialect"))
        }
    };
    if rule.shape.is_legacy_column(ACTION) {
        return Err(unsupported(
            "MERGE into a table with a column named merge_action",
        ));
    }
    let moved = moved_key(merge, rule);
    if let Some(column) = &moved {
        let refuse = |context| Refusal::KeyUpdate {
            table: rule.rule.table.clone(),
            column: column.clone(),
            context,
        };
        if server_version < RETURNING_OLD {
            return Err(refuse(
                "in MERGE before PostgreSQL 18 (whose RETURNING OLD gives the old key)",
            ));
        }
        if rule.rule.on_mirror_error == MirrorErrorPolicy::Record {
            return Err(refuse("under the record error policy"));
        }
    }
    let subject = Subject {
        table: name,
        alias: alias.as_ref().map(|a| &a.name),
        rule,
    };
    if let Some(items) = returning {
        subject.check_only_subject(items)?;
    }

    let key = &rule.rule.key;
    let old = |k: &String| quote_ident(&format!("tandem_old_{k}"));
    let mut carried = Carried::of(&subject, returning, true)?;
    carried.push(format!("merge_action() AS {ACTION}"));
    if moved.is_some() {
        for k in key {
            carried.push(format!("{OLD}.{} AS {}", quote_ident(k), old(k)));
        }
    }
    let mut write = merge.clone();
    write.output = None;
    let write = format!(
        "{write} RETURNING {with_old}{returning}",
        write = only::restore(write.to_string(), only),
        with_old = if moved.is_some() {
            format!("WITH (OLD AS {OLD}) ")
        } else {
            String::new()
        },
        returning = carried.returning(&subject.row_star()),
    );

    // Deleted rows (and, on 18, the old keys of moved rows) whose key no inserted or updated
    // row has: `tandem_m` upserts those.
    let same_key = |a: &str, b: &str| -> String {
        key.iter()
            .map(|k| {
                let k = quote_ident(k);
                format!("{a}.{k} = {b}.{k}")
            })
            .collect::<Vec<_>>()
            .join(" AND ")
    };
    let not_upserted = |row: &str| {
        format!(
            "NOT EXISTS (SELECT FROM {WRITE_CTE} AS tandem_n \
             WHERE tandem_n.{ACTION} <> 'DELETE' AND {})",
            same_key("tandem_n", row)
        )
    };
    let deletes = moved.is_some() || has_delete(merge);
    let upserted = format!("{WRITE_CTE} WHERE {WRITE_CTE}.{ACTION} <> 'DELETE'");
    let mirror = match rule.rule.on_mirror_error {
        MirrorErrorPolicy::Fail => {
            let upsert = upsert_cte_of(rule, &upserted);
            if deletes {
                let gone = if moved.is_some() {
                    let matches: Vec<String> = key
                        .iter()
                        .map(|k| format!("tandem_t.{} = {WRITE_CTE}.{}", quote_ident(k), old(k)))
                        .collect();
                    format!(
                        "{WRITE_CTE}.{ACTION} <> 'INSERT' AND {}",
                        matches.join(" AND ")
                    )
                } else {
                    format!(
                        "{WRITE_CTE}.{ACTION} = 'DELETE' AND {}",
                        same_key("tandem_t", WRITE_CTE)
                    )
                };
                Mirror::Cte(format!(
                    "{DELETE_CTE} AS (DELETE FROM {target} AS tandem_t USING {WRITE_CTE} \
                     WHERE {gone} AND {kept}), {upsert}",
                    target = rule.rule.target,
                    kept = not_upserted("tandem_t"),
                ))
            } else {
                Mirror::Cte(upsert)
            }
        }
        MirrorErrorPolicy::Record => {
            let row = carried.row_of(&subject, WRITE_CTE);
            let mut guard = guard_rows(rule, "update", statement, &upserted, &row);
            if deletes {
                let deleted = format!(
                    "{WRITE_CTE} WHERE {WRITE_CTE}.{ACTION} = 'DELETE' AND {}",
                    not_upserted(WRITE_CTE)
                );
                guard.push_str(" AND ");
                guard.push_str(&guard_rows(rule, "delete", statement, &deleted, &row));
            }
            Mirror::Guard(guard)
        }
    };

    let row_name = subject.row_name();
    let projection = returning.map(|items| {
        let items = with_carried_action(items, &row_name);
        subject.projection(&items, &carried)
    });
    let sql = Composed {
        with,
        before: None,
        write,
        mirror,
        projection,
        alias: row_name.to_string(),
        check: subject.resolution_check(),
    }
    .sql();
    Ok(StatementPlan {
        sql,
        response: ResponseFix::Mirror {
            tag: WriteTag::Merge,
            returning: returning.is_some(),
        },
        rule_table: Some(rule.rule.table.clone()),
        policy: Some(rule.rule.on_mirror_error),
    })
}

/// The first key column (the target's partition key is part of the key) that an UPDATE
/// action assigns, if any.
fn moved_key(merge: &Merge, rule: &ResolvedRule) -> Option<String> {
    merge
        .clauses
        .iter()
        .find_map(|clause| match &clause.action {
            MergeAction::Update(update) => match &update.kind {
                MergeUpdateKind::Set(assignments) => assigned_keys(assignments, rule)
                    .next()
                    .map(|(column, _)| column),
                MergeUpdateKind::Wildcard => None,
            },
            _ => None,
        })
}

/// Does any clause delete?
fn has_delete(merge: &Merge) -> bool {
    merge
        .clauses
        .iter()
        .any(|c| matches!(c.action, MergeAction::Delete { .. }))
}

/// Clauses the parser accepts for other databases; PostgreSQL would reject them anyway.
fn has_foreign_syntax(merge: &Merge) -> bool {
    !merge.into
        || !merge.optimizer_hints.is_empty()
        || merge.clauses.iter().any(|c| match &c.action {
            MergeAction::Insert(insert) => {
                insert.insert_predicate.is_some()
                    || !matches!(insert.kind, MergeInsertKind::Values(_))
            }
            MergeAction::Update(update) => {
                update.update_predicate.is_some()
                    || update.delete_predicate.is_some()
                    || matches!(update.kind, MergeUpdateKind::Wildcard)
            }
            MergeAction::Delete { .. } | MergeAction::DoNothing { .. } => false,
        })
}

/// Does any INSERT action take the table's columns in order (no column list)?
pub(crate) fn inserts_without_columns(merge: &Merge) -> bool {
    merge
        .clauses
        .iter()
        .any(|c| matches!(&c.action, MergeAction::Insert(i) if i.columns.is_empty()))
}

/// The client's RETURNING items with each `merge_action()` read from the carried column
/// (`<row>.merge_action`), which only exists in the write's own RETURNING.
fn with_carried_action(items: &[SelectItem], row: &Ident) -> Vec<SelectItem> {
    struct Replace<'a> {
        row: &'a Ident,
    }
    impl VisitorMut for Replace<'_> {
        type Break = ();
        fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
            if let Expr::Function(f) = expr {
                let parts: Vec<String> = f
                    .name
                    .0
                    .iter()
                    .map(|p| match p {
                        ObjectNamePart::Identifier(i) => normalize(i),
                        _ => String::new(),
                    })
                    .collect();
                let named = match parts.as_slice() {
                    [name] => name == ACTION,
                    [schema, name] => schema == "pg_catalog" && name == ACTION,
                    _ => false,
                };
                if named {
                    *expr = Expr::CompoundIdentifier(vec![self.row.clone(), Ident::new(ACTION)]);
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut items = items.to_vec();
    for item in &mut items {
        let _ = item.visit(&mut Replace { row });
    }
    items
}

#[cfg(test)]
#[path = "tests/merge.rs"]
mod tests;
