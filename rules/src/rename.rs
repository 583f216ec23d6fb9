//! `target_only`: the legacy table's name, wherever a statement uses the table, becomes the
//! target's.
//!
//! The last mode before the legacy table is dropped: nothing is mirrored any more, and every
//! read and write the application sends for `orders` runs on `orders_v2`. The reference
//! keeps the client's alias or, when it had none, takes the legacy table's bare name as
//! alias (`FROM public.orders_v2 AS orders`), so `orders.id` keeps resolving. INSERT,
//! UPDATE, DELETE, MERGE, SELECT (at any depth), TRUNCATE, COPY, EXPLAIN and PREPARE are
//! renamed; DDL (`ALTER TABLE orders ...`, `DROP TABLE orders`) is not: it is the operator
//! working on the legacy table itself. A `SELECT *` now returns the target's columns,
//! which is the point of this mode: the application runs on the new table.

use std::ops::ControlFlow;

use sqlparser::ast::{
    CopySource, ObjectName, Statement, TableAlias, TableAliasWithoutColumns, TableFactor,
    TableObject, VisitMut, VisitorMut,
};

use crate::ident::{ident, normalize};
use crate::rule::{Mode, ResolvedRule};
use crate::writes::Ctx;

/// The statement with every `target_only` table renamed, or `None` when it names none.
pub(crate) fn rewrite<'a>(stmt: &Statement, ctx: Ctx<'a>) -> Option<(Statement, &'a ResolvedRule)> {
    if !renamable(stmt) {
        return None;
    }
    let mut out = stmt.clone();
    let mut rename = Rename {
        ctx,
        ctes: crate::reads::cte_names(stmt),
        first: None,
    };
    let _ = VisitMut::visit(&mut out, &mut rename);
    rename.first.map(|rule| (out, rule))
}

/// Statements whose table references are the application's use of the table.
fn renamable(stmt: &Statement) -> bool {
    matches!(
        stmt,
        Statement::Query(_)
            | Statement::Insert(_)
            | Statement::Update(_)
            | Statement::Delete(_)
            | Statement::Merge(_)
            | Statement::Truncate(_)
            | Statement::Copy { .. }
            | Statement::Explain { .. }
            | Statement::Prepare { .. }
    )
}

struct Rename<'a> {
    ctx: Ctx<'a>,
    ctes: Vec<String>,
    first: Option<&'a ResolvedRule>,
}

impl<'a> Rename<'a> {
    /// The target_only rule a name refers to (not a CTE of the same bare name).
    fn rule(&mut self, name: &ObjectName) -> Option<&'a ResolvedRule> {
        if let [one] = name.0.as_slice() {
            if one
                .as_ident()
                .is_some_and(|i| self.ctes.contains(&normalize(i)))
            {
                return None;
            }
        }
        let rule = self
            .ctx
            .active(name)
            .filter(|r| r.rule.mode == Mode::TargetOnly)?;
        self.first.get_or_insert(rule);
        Some(rule)
    }
}

impl VisitorMut for Rename<'_> {
    type Break = ();

    fn pre_visit_statement(&mut self, stmt: &mut Statement) -> ControlFlow<()> {
        match stmt {
            Statement::Insert(ins) => {
                if let TableObject::TableName(name) = &mut ins.table {
                    if let Some(rule) = self.rule(name) {
                        *name = rule.rule.target.to_object_name();
                        if ins.table_alias.is_none() {
                            ins.table_alias = Some(TableAliasWithoutColumns {
                                explicit: true,
                                alias: ident(&rule.rule.table.name),
                            });
                        }
                    }
                }
            }
            Statement::Truncate(t) => {
                for target in &mut t.table_names {
                    if let Some(rule) = self.rule(&target.name) {
                        target.name = rule.rule.target.to_object_name();
                    }
                }
            }
            Statement::Copy {
                source: CopySource::Table { table_name, .. },
                ..
            } => {
                if let Some(rule) = self.rule(table_name) {
                    *table_name = rule.rule.target.to_object_name();
                }
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        if let TableFactor::Table { name, alias, .. } = factor {
            if let Some(rule) = self.rule(name) {
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
        ControlFlow::Continue(())
    }
}
