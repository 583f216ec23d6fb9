//! Finding every write to a ruled table anywhere in a statement's tree.
//!
//! Tandem mirrors one write per statement: the top-level INSERT, UPDATE or DELETE. A write
//! hidden deeper — a data-modifying CTE, `EXPLAIN ANALYZE`, `PREPARE`, `COPY (INSERT …) TO`
//! — would change the legacy table without a mirror, so the planner first lists all of
//! them and refuses any that is not the one it rewrites. Writes made by functions,
//! triggers or through views are invisible in the SQL text and out of scope.

use std::ops::ControlFlow;

use sqlparser::ast::{FromTable, ObjectName, Statement, TableFactor, TableObject, Visit, Visitor};

use crate::name::TableName;
use crate::rule::{Mode, ResolvedRule};
use crate::ruleset::RuleSet;

/// What the planner needs to resolve names: the rules and the session's search_path.
#[derive(Clone, Copy)]
pub(crate) struct Ctx<'a> {
    pub rules: &'a RuleSet,
    pub search_path: &'a [String],
}

impl<'a> Ctx<'a> {
    /// The rule for a table reference, if it is ruled and the rule is not `Off`.
    pub(crate) fn active(&self, name: &ObjectName) -> Option<&'a ResolvedRule> {
        let table = TableName::from_object_name(name)?;
        self.rules
            .lookup(&table, self.search_path)
            .filter(|r| r.rule.mode != Mode::Off)
    }
}

/// The table a DML statement writes, when it is a plain named table.
pub(crate) fn written_table(stmt: &Statement) -> Option<&ObjectName> {
    match stmt {
        Statement::Insert(ins) => match &ins.table {
            TableObject::TableName(name) => Some(name),
            _ => None,
        },
        Statement::Update(upd) => table_factor_name(&upd.table.relation),
        Statement::Delete(del) => {
            let from = match &del.from {
                FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t) => t,
            };
            del.tables
                .first()
                .or_else(|| from.first().and_then(|t| table_factor_name(&t.relation)))
        }
        Statement::Merge(merge) => table_factor_name(&merge.table),
        _ => None,
    }
}

/// The name of a plain table factor.
pub(crate) fn table_factor_name(factor: &TableFactor) -> Option<&ObjectName> {
    match factor {
        TableFactor::Table { name, .. } => Some(name),
        _ => None,
    }
}

/// Every statement node in `stmt` (itself included) that writes a table with an active
/// rule, with that rule, in tree order.
pub(crate) fn ruled_writes<'a>(stmt: &Statement, ctx: Ctx<'a>) -> Vec<&'a ResolvedRule> {
    struct Collect<'a> {
        ctx: Ctx<'a>,
        found: Vec<&'a ResolvedRule>,
    }
    impl Visitor for Collect<'_> {
        type Break = ();
        fn pre_visit_statement(&mut self, stmt: &Statement) -> ControlFlow<()> {
            if let Some(rule) = written_table(stmt).and_then(|n| self.ctx.active(n)) {
                self.found.push(rule);
            }
            ControlFlow::Continue(())
        }
    }
    let mut collect = Collect {
        ctx,
        found: Vec::new(),
    };
    let _ = stmt.visit(&mut collect);
    collect.found
}
