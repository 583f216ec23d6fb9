//! Reads under `union_read` and `cutover`: the legacy table's name, in a read, becomes a
//! derived table over the target.
//!
//! In `union_read` the target serves reads, with the legacy rows it does not have yet:
//!
//! ```sql
//! SELECT * FROM orders o WHERE id = 5
//! -- becomes
//! SELECT * FROM (SELECT id, customer_id, amount FROM public.orders_v2
//!                UNION ALL
//!                SELECT id, customer_id, amount FROM public.orders AS tandem_l
//!                WHERE NOT EXISTS (SELECT 1 FROM public.orders_v2 AS tandem_k
//!                                  WHERE tandem_k.id = tandem_l.id)) AS o WHERE id = 5
//! ```
//!
//! PostgreSQL pushes `id = 5` into both arms of the UNION ALL, and the NOT EXISTS becomes an
//! anti-join on the target's key index, so a key lookup is an Index Scan on the target plus
//! an Index Scan on the legacy table with an anti-join probe (checked with EXPLAIN on
//! PostgreSQL 15; see tests/integration/modes). In `cutover` only the first arm remains, and
//! in `union_read` too once a whole-table backfill has finished since the rule left `off`
//! ([`Rule::backfilled`](crate::Rule::backfilled)): the backfill copied every older row and
//! the mirror (and the guard, for writes made around the proxy) every change since, so the
//! legacy arm could only find rows the target lacks by a change nothing mirrored, which the
//! parity report's divergence check names. This keeps union reads at the plain read's cost
//! (PostgreSQL re-plans the two-arm union on every execution).
//!
//! While a backfill runs, its watermark ([`Rule::backfilled_to`](crate::Rule::backfilled_to))
//! splits the union by key instead: keys at or below it from the target (the backfill
//! copied them, the mirror keeps them current), the others from legacy (the table of
//! record, complete everywhere), so no anti-join is needed:
//!
//! ```sql
//! (SELECT id, customer_id, amount FROM
//!    (SELECT id, customer_id, amount, true AS tandem_from_target FROM public.orders_v2
//!     UNION ALL SELECT id, customer_id, amount, false FROM public.orders AS tandem_l) AS tandem_u
//!  WHERE CASE WHEN tandem_u.tandem_from_target THEN tandem_u.id <= '900000'
//!             ELSE tandem_u.id > '900000' END) AS o
//! ```
//!
//! Neither arm has a WHERE of its own, so PostgreSQL flattens both into one append relation
//! (it does not flatten an arm with a WHERE or an anti-join), substitutes each arm's constant
//! into the pushed-down condition, and drops an arm the client's predicates contradict at
//! plan time: a key lookup reads one table, and an `ORDER BY ... LIMIT` merges both tables'
//! index order and stops early (checked with EXPLAIN in tests/integration/modes).
//! Both arms list every legacy column, in table order, under its legacy name and type: a
//! target column of another type is cast (only then, so key columns keep their indexes) and
//! a column the target lacks reads as NULL. The derived table keeps the client's alias, or
//! takes the legacy table's bare name, so `orders.id` still resolves.
//!
//! Only pure reads are rewritten: a query with no data-modifying part, EXPLAIN of one, and
//! `PREPARE name AS` one (so `EXECUTE name` and `EXPLAIN EXECUTE name` run the rewritten
//! read; the proxy prepares it again when the rules change, see `prepared`).
//! Reads inside writes (`INSERT … SELECT FROM orders`, subqueries of an UPDATE) keep reading
//! the legacy table, which is complete and current in both modes. In `union_read`, locking
//! reads (`FOR UPDATE`/`FOR SHARE`) are left alone too: the legacy table is still the table
//! of record there (writes land in it first), so its rows are the ones to lock. In `cutover`
//! they are rewritten, and PostgreSQL applies the lock to the target rows inside the
//! derived table.
//!
//! A set-returning UNION loses the columns' origin, which JDBC and ORMs read from the
//! RowDescription, so the plan carries the legacy origins of the top-level select list
//! ([`origins`]) for the proxy to put back.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;

use sqlparser::ast::{
    Expr, Ident, ObjectName, Query, SelectItem, SelectItemQualifiedWildcardKind, SetExpr,
    Statement, TableAlias, TableFactor, Visit, VisitMut, Visitor, VisitorMut,
};

use crate::ident::{ident, normalize, quote_ident};
use crate::parse::parse_statement;
use crate::plan::{ColumnOrigin, ResponseFix, StatementPlan};
use crate::record::literal;
use crate::rule::{Mode, ResolvedRule};
use crate::writes::Ctx;

/// Alias prefixes Tandem's own derived tables use; never rewritten again.
const OWN_ALIAS: &str = "tandem_";

/// Rewrite a pure read (`Statement::Query` without data-modifying parts, or EXPLAIN or
/// PREPARE of one) whose ruled tables are in `union_read` or `cutover`. `None` when
/// nothing changes.
pub(crate) fn rewrite(stmt: &Statement, ctx: Ctx<'_>) -> Option<StatementPlan> {
    let query = match stmt {
        Statement::Query(q) => q.as_ref(),
        Statement::Explain { statement, .. } | Statement::Prepare { statement, .. } => {
            match statement.as_ref() {
                Statement::Query(q) => q.as_ref(),
                _ => return None,
            }
        }
        _ => return None,
    };
    let locking = has_locks(stmt);
    let ctes = cte_names(stmt);
    let mut out = stmt.clone();
    let mut swap = Swap {
        ctx,
        locking,
        ctes,
        swapped: HashMap::new(),
        first: None,
    };
    let _ = VisitMut::visit(&mut out, &mut swap);
    let first = swap.first?;
    // A PREPARE answers with its tag only: its origins are for the RowDescription of each
    // later `EXECUTE` of it (see `ResponseFix::Read`).
    let origins = match &out {
        Statement::Query(_) | Statement::Prepare { .. } => origins(query, ctx, &swap.swapped),
        _ => Arc::from([]),
    };
    Some(StatementPlan {
        sql: out.to_string(),
        response: ResponseFix::Read { origins },
        rule_table: Some(first.rule.table.clone()),
        policy: Some(first.rule.on_mirror_error),
    })
}

/// Does the statement take row locks anywhere?
fn has_locks(stmt: &Statement) -> bool {
    struct Locks(bool);
    impl Visitor for Locks {
        type Break = ();
        fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
            self.0 |= !q.locks.is_empty();
            ControlFlow::Continue(())
        }
    }
    let mut v = Locks(false);
    let _ = stmt.visit(&mut v);
    v.0
}

/// Names of every CTE the statement defines (catalog spelling): a bare reference to one of
/// them is the CTE, not the ruled table.
pub(crate) fn cte_names(stmt: &Statement) -> Vec<String> {
    struct Ctes(Vec<String>);
    impl Visitor for Ctes {
        type Break = ();
        fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
            if let Some(with) = &q.with {
                for cte in &with.cte_tables {
                    self.0.push(normalize(&cte.alias.name));
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut v = Ctes(Vec::new());
    let _ = stmt.visit(&mut v);
    v.0
}

/// Replaces ruled table references by derived tables, after their children are visited
/// (so the derived tables' own references are never visited).
struct Swap<'a> {
    ctx: Ctx<'a>,
    locking: bool,
    ctes: Vec<String>,
    /// Alias (catalog spelling) -> rule, for every swapped reference.
    swapped: HashMap<String, &'a ResolvedRule>,
    first: Option<&'a ResolvedRule>,
}

impl<'a> Swap<'a> {
    fn rule_for(&self, name: &ObjectName, alias: Option<&TableAlias>) -> Option<&'a ResolvedRule> {
        if alias.is_some_and(|a| a.name.value.starts_with(OWN_ALIAS)) {
            return None;
        }
        if let [one] = name.0.as_slice() {
            if one
                .as_ident()
                .is_some_and(|i| self.ctes.contains(&normalize(i)))
            {
                return None;
            }
        }
        let rule = self.ctx.active(name)?;
        match rule.rule.mode {
            Mode::UnionRead if !self.locking => Some(rule),
            Mode::Cutover => Some(rule),
            _ => None,
        }
    }
}

impl VisitorMut for Swap<'_> {
    type Break = ();
    fn post_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        let TableFactor::Table {
            name,
            alias,
            args: None,
            with_hints,
            version: None,
            with_ordinality: false,
            partitions,
            json_path: None,
            sample: None,
            index_hints,
        } = factor
        else {
            return ControlFlow::Continue(());
        };
        if !with_hints.is_empty() || !partitions.is_empty() || !index_hints.is_empty() {
            return ControlFlow::Continue(());
        }
        let Some(rule) = self.rule_for(name, alias.as_ref()) else {
            return ControlFlow::Continue(());
        };
        let Some(subquery) = derived_query(rule) else {
            return ControlFlow::Continue(());
        };
        let alias = alias.clone().unwrap_or_else(|| TableAlias {
            explicit: true,
            name: ident(&rule.rule.table.name),
            columns: Vec::new(),
            at: None,
        });
        self.swapped.insert(normalize(&alias.name), rule);
        self.first.get_or_insert(rule);
        *factor = TableFactor::Derived {
            lateral: false,
            subquery: Box::new(subquery),
            alias: Some(alias),
            sample: None,
        };
        ControlFlow::Continue(())
    }
}

/// The legacy columns (name, type) a derived table lists: every legacy column in table
/// order; from the plain name list when the catalog types are unknown.
fn legacy_columns(rule: &ResolvedRule) -> Vec<(String, Option<String>)> {
    let shape = &rule.shape;
    if shape.legacy_table.is_empty() {
        return shape
            .legacy_columns
            .iter()
            .map(|c| (c.clone(), None))
            .collect();
    }
    shape
        .legacy_table
        .iter()
        .map(|c| (c.name.clone(), Some(c.sql_type.clone())))
        .collect()
}

/// The target arm's select list: legacy names and types over the target's columns.
fn target_list(rule: &ResolvedRule) -> String {
    let shape = &rule.shape;
    legacy_columns(rule)
        .into_iter()
        .map(|(name, ty)| {
            let q = quote_ident(&name);
            let in_target = if shape.target_table.is_empty() {
                shape
                    .target_columns
                    .contains(&name)
                    .then(|| ty.clone().unwrap_or_default())
            } else {
                shape.target_column(&name).map(|c| c.sql_type.clone())
            };
            match (in_target, ty) {
                (Some(target_ty), Some(ty)) if !target_ty.is_empty() && target_ty != ty => {
                    format!("{q}::{ty} AS {q}")
                }
                (Some(_), _) => q,
                (None, Some(ty)) => format!("NULL::{ty} AS {q}"),
                (None, None) => format!("NULL AS {q}"),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The SQL of the derived table for a rule in `union_read` or `cutover`.
pub(crate) fn derived_sql(rule: &ResolvedRule) -> String {
    let target = &rule.rule.target;
    let first = format!("SELECT {} FROM {target}", target_list(rule));
    // Once a whole-table backfill finished, every legacy row is in the target: the union's
    // legacy arm would find nothing the target lacks, at the price of planning it.
    if rule.rule.mode != Mode::UnionRead || rule.rule.backfilled {
        return first;
    }
    let legacy = legacy_columns(rule)
        .into_iter()
        .map(|(c, _)| quote_ident(&c))
        .collect::<Vec<_>>()
        .join(", ");
    if let Some(split) = watermark_split(rule) {
        // Keys at or below the watermark from the target, the others from legacy: two
        // single-table arms with no WHERE of their own, so PostgreSQL flattens them into one
        // append relation, pushes the client's predicates into each with the arm's constant
        // folded (`CASE WHEN true THEN ...`), drops an arm those predicates contradict at
        // plan time (a key lookup reads one table), and can merge the arms' index order
        // under an `ORDER BY ... LIMIT`.
        return format!(
            "SELECT {legacy} FROM (SELECT {target_list}, true AS {ARM} FROM {target} UNION ALL \
             SELECT {legacy}, false FROM {table} AS tandem_l) AS tandem_u WHERE {split}",
            target_list = target_list(rule),
            table = rule.rule.table,
        );
    }
    let matches = rule
        .rule
        .key
        .iter()
        .map(|k| {
            let k = quote_ident(k);
            format!("tandem_k.{k} = tandem_l.{k}")
        })
        .collect::<Vec<_>>()
        .join(" AND ");
    format!(
        "{first} UNION ALL SELECT {legacy} FROM {table} AS tandem_l \
         WHERE NOT EXISTS (SELECT 1 FROM {target} AS tandem_k WHERE {matches})",
        table = rule.rule.table,
    )
}

/// The column that tells a watermark split's arms apart (see [`watermark_split`]).
const ARM: &str = "tandem_from_target";

/// The condition splitting the union at the backfill watermark
/// ([`Rule::backfilled_to`](crate::Rule::backfilled_to)): `CASE WHEN <from the target> THEN
/// key <= W ELSE key > W END`, a row comparison for a composite key, as the backfill's own
/// cursor compares. Every legacy row at or below the watermark is in the target and kept
/// current there; legacy is complete and current everywhere (it is the table of record in
/// `union_read`), so the two halves are exactly the legacy table's rows, with no anti-join.
/// `None` (the anti-join union) without a watermark, or when a key column's type or
/// collation differs between the tables (the two sides would not order keys alike).
fn watermark_split(rule: &ResolvedRule) -> Option<String> {
    let watermark = rule.rule.backfilled_to.as_ref()?;
    let key = &rule.rule.key;
    if watermark.len() != key.len() || key.is_empty() {
        return None;
    }
    let shape = &rule.shape;
    let same = key.iter().all(|k| {
        let legacy = shape.legacy_table.iter().find(|c| &c.name == k);
        let target = shape.target_column(k);
        matches!((legacy, target), (Some(l), Some(t))
            if l.sql_type == t.sql_type && l.collation == t.collation)
    });
    if !same {
        return None;
    }
    let columns: Vec<String> = key
        .iter()
        .map(|k| format!("tandem_u.{}", quote_ident(k)))
        .collect();
    let values: Vec<String> = watermark.iter().map(|v| literal(v)).collect();
    let (at_or_below, above) = match (columns.as_slice(), values.as_slice()) {
        ([c], [v]) => (format!("{c} <= {v}"), format!("{c} > {v}")),
        _ => {
            // The row comparison bounds an index scan on the whole key; the implied bound
            // on the first column is what lets the planner drop the arm a lookup
            // contradicts (its refutation proofs do not read row comparisons).
            let (first, value) = (&columns[0], &values[0]);
            let row = format!("ROW({})", columns.join(", "));
            let mark = format!("ROW({})", values.join(", "));
            (
                format!("{first} <= {value} AND {row} <= {mark}"),
                format!("{first} >= {value} AND {row} > {mark}"),
            )
        }
    };
    Some(format!(
        "CASE WHEN tandem_u.{ARM} THEN {at_or_below} ELSE {above} END"
    ))
}

fn derived_query(rule: &ResolvedRule) -> Option<Query> {
    match parse_statement(&derived_sql(rule)) {
        Ok(Statement::Query(q)) => Some(*q),
        _ => None,
    }
}

/// Legacy origins of the top-level select list, as far as they can be known (see the
/// module doc): the list ends at the first item whose width is unknown.
fn origins(
    query: &Query,
    ctx: Ctx<'_>,
    swapped: &HashMap<String, &ResolvedRule>,
) -> Arc<[Option<ColumnOrigin>]> {
    let SetExpr::Select(select) = query.body.as_ref() else {
        return Arc::from([]);
    };
    // The single FROM item, when the query reads exactly one swapped table.
    let single: Option<&ResolvedRule> = match select.from.as_slice() {
        [only] if only.joins.is_empty() => match &only.relation {
            TableFactor::Table { name, alias, .. } => {
                let key = alias
                    .as_ref()
                    .map(|a| normalize(&a.name))
                    .or_else(|| name.0.last().and_then(|p| p.as_ident()).map(normalize));
                key.and_then(|k| swapped.get(&k).copied()).filter(|r| {
                    ctx.active(name)
                        .is_some_and(|a| a.rule.table == r.rule.table)
                })
            }
            _ => None,
        },
        _ => None,
    };
    let all = |rule: &ResolvedRule| -> Vec<Option<ColumnOrigin>> {
        rule.shape
            .legacy_table
            .iter()
            .map(|c| {
                Some(ColumnOrigin {
                    table_oid: rule.shape.legacy_oid,
                    attnum: c.attnum,
                })
            })
            .collect()
    };
    let column = |rule: &ResolvedRule, name: &Ident| -> Option<ColumnOrigin> {
        let name = normalize(name);
        rule.shape
            .legacy_table
            .iter()
            .find(|c| c.name == name)
            .map(|c| ColumnOrigin {
                table_oid: rule.shape.legacy_oid,
                attnum: c.attnum,
            })
    };
    let mut out = Vec::new();
    for item in &select.projection {
        match item {
            SelectItem::Wildcard(_) => match single {
                Some(rule) => out.extend(all(rule)),
                None => break,
            },
            SelectItem::QualifiedWildcard(SelectItemQualifiedWildcardKind::ObjectName(q), _) => {
                let rule =
                    q.0.last()
                        .and_then(|p| p.as_ident())
                        .and_then(|i| swapped.get(&normalize(i)));
                match rule {
                    Some(rule) if q.0.len() == 1 => out.extend(all(rule)),
                    _ => break,
                }
            }
            SelectItem::QualifiedWildcard(..) | SelectItem::ExprWithAliases { .. } => break,
            SelectItem::UnnamedExpr(expr) | SelectItem::ExprWithAlias { expr, .. } => {
                out.push(match expr {
                    Expr::Identifier(id) => single.and_then(|r| column(r, id)),
                    Expr::CompoundIdentifier(parts) if parts.len() == 2 => swapped
                        .get(&normalize(&parts[0]))
                        .and_then(|r| column(r, &parts[1])),
                    _ => None,
                });
            }
        }
    }
    Arc::from(out)
}

#[cfg(test)]
#[path = "tests/reads.rs"]
mod tests;
