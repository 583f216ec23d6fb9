//! Mirroring `DELETE` from a ruled table.
//!
//! ```sql
//! DELETE FROM orders o USING customers c WHERE c.id = o.customer AND c.banned
//! -- becomes
//! WITH tandem_w AS (DELETE FROM orders o USING customers c WHERE ... RETURNING o.*),
//!      tandem_m AS (DELETE FROM public.orders_v2 AS tandem_t USING tandem_w
//!                   WHERE tandem_t.id = tandem_w.id)
//! SELECT FROM tandem_w
//! ```
//!
//! The target loses exactly the rows, by key, that the legacy table lost; a row that was
//! not backfilled yet is simply not there to delete. `DELETE FROM ONLY` keeps its `ONLY`
//! (see [`only`](crate::only)).

use sqlparser::ast::{Delete, FromTable, TableFactor, With};

use crate::only;
use crate::plan::{StatementPlan, WriteTag};
use crate::refusal::Refusal;
use crate::returning::Subject;
use crate::rule::ResolvedRule;

/// Rewrite a DELETE from `rule`'s table (with the client's `with`, if any);
/// `statement` is the client's text, kept with any drift under the `record` policy.
pub(crate) fn rewrite(
    with: Option<&With>,
    del: &Delete,
    rule: &ResolvedRule,
    statement: &str,
    only: bool,
) -> Result<StatementPlan, Refusal> {
    let unsupported = |construct: &str| Refusal::Unsupported {
        table: rule.rule.table.clone(),
        construct: construct.to_string(),
    };
    let from = match &del.from {
        FromTable::WithFromKeyword(from) | FromTable::WithoutKeyword(from) => from,
    };
    if !del.tables.is_empty()
        || from.len() != 1
        || del.output.is_some()
        || !del.order_by.is_empty()
        || del.limit.is_some()
        || !del.optimizer_hints.is_empty()
    {
        return Err(unsupported("DELETE syntax from another SQL dialect"));
    }
    let target = &from[0];
    let TableFactor::Table { name, alias, .. } = &target.relation else {
        return Err(unsupported("DELETE from something other than a table"));
    };
    if !target.joins.is_empty() {
        return Err(unsupported("DELETE with a joined table"));
    }
    let subject = Subject {
        table: name,
        alias: alias.as_ref().map(|a| &a.name),
        rule,
    };
    let mut write = del.clone();
    write.returning = None;
    subject.mirrored_joined(
        with,
        &only::restore(write.to_string(), only),
        del.using.is_some(),
        WriteTag::Delete,
        del.returning.as_deref(),
        statement,
    )
}

#[cfg(test)]
#[path = "tests/delete.rs"]
mod tests;
