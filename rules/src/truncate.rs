//! Mirroring `TRUNCATE` of a ruled table.
//!
//! `TRUNCATE orders` becomes `TRUNCATE orders, public.orders_v2`: one statement, so both
//! tables empty atomically, and the command tag stays `TRUNCATE TABLE`, so the responses
//! need no fixing. The client's other tables and options (`RESTART IDENTITY`, `CASCADE`)
//! are kept; a target the client already listed is harmless, PostgreSQL ignores duplicates.

use sqlparser::ast::{Truncate, TruncateTableTarget};

use crate::plan::{Outcome, ResponseFix, StatementPlan};
use crate::refusal::require_dual_write;
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
            name: rule.rule.target.to_object_name(),
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

#[cfg(test)]
#[path = "tests/truncate.rs"]
mod tests;
