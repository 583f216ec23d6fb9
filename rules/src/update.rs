//! Mirroring `UPDATE` of a ruled table.
//!
//! ```sql
//! UPDATE orders o SET note = c.name FROM customers c WHERE c.id = o.customer RETURNING o.id
//! -- becomes
//! WITH tandem_w AS (UPDATE orders o SET ... FROM customers c WHERE ... RETURNING o.*),
//!      tandem_m AS (INSERT INTO public.orders_v2 (...) SELECT ... FROM tandem_w
//!                   ON CONFLICT (id) DO UPDATE SET ...)
//! SELECT o.id FROM tandem_w AS o
//! ```
//!
//! The mirror is an upsert, so an updated row that was not backfilled yet lands in the
//! target too. With FROM, `RETURNING o.*` keeps the other tables' columns out of
//! `tandem_w`, and the client's RETURNING may only name the updated table. An UPDATE that
//! assigns a key or target partition-key column moves the target row, which takes the
//! [`keymove`](crate::keymove) form; that form is refused with FROM and under the `record`
//! policy. `UPDATE ONLY` keeps its `ONLY` (see [`only`](crate::only)).

use sqlparser::ast::{
    Assignment, AssignmentTarget, Expr, ObjectName, ObjectNamePart, TableFactor, Update, With,
};

use crate::ident::normalize;
use crate::keymove;
use crate::only;
use crate::plan::{StatementPlan, WriteTag};
use crate::refusal::Refusal;
use crate::returning::Subject;
use crate::rule::{MirrorErrorPolicy, ResolvedRule};

/// Rewrite an UPDATE of `rule`'s table (with the client's `with`, if any);
/// `statement` is the client's text, kept with any drift under the `record` policy.
pub(crate) fn rewrite(
    with: Option<&With>,
    upd: &Update,
    rule: &ResolvedRule,
    statement: &str,
    only: bool,
) -> Result<StatementPlan, Refusal> {
    let unsupported = |construct: &str| Refusal::Unsupported {
        table: rule.rule.table.clone(),
        construct: construct.to_string(),
    };
    let TableFactor::Table { name, alias, .. } = &upd.table.relation else {
        return Err(unsupported("UPDATE of something other than a table"));
    };
    if !upd.table.joins.is_empty()
        || upd.or.is_some()
        || upd.output.is_some()
        || !upd.order_by.is_empty()
        || upd.limit.is_some()
        || !upd.optimizer_hints.is_empty()
    {
        return Err(unsupported("UPDATE syntax from another SQL dialect"));
    }
    let subject = Subject {
        table: name,
        alias: alias.as_ref().map(|a| &a.name),
        rule,
    };
    if let Some(column) = assigned_key(&upd.assignments, rule) {
        let refuse = |context| Refusal::KeyUpdate {
            table: rule.rule.table.clone(),
            column,
            context,
        };
        if upd.from.is_some() {
            return Err(refuse("together with FROM"));
        }
        if rule.rule.on_mirror_error == MirrorErrorPolicy::Record {
            return Err(refuse("under the record error policy"));
        }
        return keymove::rewrite(with, upd, &subject, only);
    }
    let mut write = upd.clone();
    write.returning = None;
    subject.mirrored_joined(
        with,
        &only::restore(write.to_string(), only),
        upd.from.is_some(),
        WriteTag::Update,
        upd.returning.as_deref(),
        statement,
    )
}

/// The first key column (the target's partition key is part of the key) that `assignments`
/// assign, if any.
fn assigned_key(assignments: &[Assignment], rule: &ResolvedRule) -> Option<String> {
    assigned_keys(assignments, rule)
        .next()
        .map(|(column, _)| column)
}

/// Every key column (the target's partition key is part of the key) that `assignments`
/// assign, with the assigned value (`None` inside a tuple assignment).
pub(crate) fn assigned_keys<'a>(
    assignments: &'a [Assignment],
    rule: &'a ResolvedRule,
) -> impl Iterator<Item = (String, Option<&'a Expr>)> + 'a {
    assignments.iter().flat_map(move |assignment| {
        let (targets, value): (&[ObjectName], _) = match &assignment.target {
            AssignmentTarget::ColumnName(name) => {
                (std::slice::from_ref(name), Some(&assignment.value))
            }
            AssignmentTarget::Tuple(names) => (names, None),
        };
        targets.iter().filter_map(move |target| {
            // `SET col.field = …` assigns a field of composite column `col`.
            let Some(ObjectNamePart::Identifier(first)) = target.0.first() else {
                return None;
            };
            let column = normalize(first);
            let is_key = rule.rule.key.contains(&column)
                || rule.shape.target_partition_key.contains(&column);
            is_key.then_some((column, value))
        })
    })
}

#[cfg(test)]
#[path = "tests/update.rs"]
mod tests;
