//! `MERGE` into a ruled table: refused.
//!
//! A mirror needs the written rows, and on PostgreSQL 15 `MERGE` can neither sit in a
//! data-modifying CTE nor have RETURNING (both arrive in 17). Running it unmirrored would
//! let the tables drift, so the client is told to use `INSERT … ON CONFLICT` instead.

use crate::refusal::Refusal;
use crate::rule::ResolvedRule;

/// The refusal for a MERGE into `rule`'s table.
pub(crate) fn refuse(rule: &ResolvedRule) -> Refusal {
    Refusal::Merge {
        table: rule.rule.table.clone(),
    }
}
