//! Mirroring `TRUNCATE` of a ruled table.
//!
//! `TRUNCATE orders` becomes `TRUNCATE orders, public.orders_v2`: one statement, so both
//! tables empty atomically, and the command tag stays `TRUNCATE TABLE`, so the responses
//! need no fixing. The client's other tables and options (`RESTART IDENTITY`, `CASCADE`)
//! are kept; a target the client already listed is harmless, PostgreSQL ignores duplicates.

use sqlparser::ast::{Ident, ObjectName, Truncate, TruncateTableTarget};

use crate::ident::quote_ident;
use crate::name::TableName;
use crate::plan::{require_dual_write, Outcome, ResponseFix, StatementPlan};
use crate::refusal::Refusal;
use crate::writes::Ctx;

/// Plan a TRUNCATE; untouched unless it names a ruled table.
pub(crate) fn plan(truncate: &Truncate, ctx: Ctx<'_>) -> Result<Outcome, Refusal> {
    let rules: Vec<_> = truncate
        .table_names
        .iter()
        .filter_map(|t| ctx.active(&t.name))
        .collect();
    let Some(first) = rules.first() else {
        return Ok(Outcome::Untouched);
    };
    let mut out = truncate.clone();
    for rule in &rules {
        require_dual_write(rule)?;
        out.table_names.push(TruncateTableTarget {
            name: object_name(&rule.rule.target),
            only: false,
            has_asterisk: false,
        });
    }
    Ok(Outcome::Rewritten(StatementPlan {
        sql: out.to_string(),
        response: ResponseFix::None,
        rule_table: Some(first.rule.table.clone()),
        policy: Some(first.rule.on_mirror_error),
    }))
}

/// A parser name for a catalog-spelled table, quoted where needed.
fn object_name(table: &TableName) -> ObjectName {
    let ident = |part: &str| {
        if quote_ident(part) == part {
            Ident::new(part)
        } else {
            Ident::with_quote('"', part)
        }
    };
    let mut parts = Vec::new();
    if let Some(schema) = &table.schema {
        parts.push(ident(schema));
    }
    parts.push(ident(&table.name));
    ObjectName::from(parts)
}

#[cfg(test)]
#[path = "tests/truncate.rs"]
mod tests;
