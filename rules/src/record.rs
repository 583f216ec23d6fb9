//! The `record` error policy: the legacy write stands even when the target's half fails.
//!
//! Under `on_mirror_error = "record"` a failure of the mirror (no partition of the target
//! for the row, a unique or NOT NULL constraint only the target has, a missing target) must
//! neither fail the client's statement nor abort its transaction; it leaves a row in
//! `tandem.drift` instead. PostgreSQL cannot catch an error inside one SQL statement except
//! in a PL/pgSQL `EXCEPTION` block, which runs as a subtransaction. So the proxy installs
//! [`SUPPORT_SQL`] at start, and the rewrite calls its `tandem.mirror()` instead of the
//! `tandem_m` CTE of the `fail` form (see `sqlgen`):
//!
//! ```sql
//! WITH tandem_w AS (<client write> RETURNING *)
//! SELECT <client RETURNING> FROM tandem_w AS <alias>        -- or SELECT FROM tandem_w
//! WHERE (SELECT tandem.mirror('insert', 'public.orders', 'public.orders_v2',
//!                             ARRAY['id', ...], ARRAY['id'], ARRAY[]::text[], ARRAY[]::text[],
//!                             (SELECT array_agg(ROW(tandem_w.*)::public.orders) FROM tandem_w),
//!                             '<client statement>')) IS NOT NULL
//! ```
//!
//! Why this shape, checked with EXPLAIN ANALYZE on PostgreSQL 15: the condition references
//! no column, so the planner makes the scalar subquery an InitPlan and the condition a
//! one-time filter: the function runs exactly once per statement, even when no row was
//! written (it then returns 0 at once). Its argument aggregates all of `tandem_w`, so the
//! client's write has run to completion before the mirror starts. The function never
//! returns NULL, so the condition is always true: columns, row count and RowDescription are
//! those of the `fail` form, and the client's `$n` stay where they were, once each.
//!
//! The rows travel as an array of the legacy table's row type, not as `jsonb`: a jsonb trip
//! turns a jsonb `null` value into SQL NULL, normalizes `json` text, drops array lower bounds
//! and, when the session lowered `extra_float_digits`, float precision. A typed array
//! carries every value exactly (checked byte for byte with `*=` on PostgreSQL 15).
//!
//! What this form does not do: the mirror of one statement succeeds or fails as a whole, so
//! a drift row stands for all of that statement's rows (its text is recorded, not its
//! parameters); deferred constraints of the target fail at COMMIT, outside the block; each
//! mirrored statement opens a subtransaction, and more than 64 of them in one transaction
//! overflow PostgreSQL's per-backend subtransaction cache, which slows snapshots.

use crate::plan::WriteTag;
use crate::rule::ResolvedRule;

/// Idempotent DDL the proxy runs at start, as one simple-query string: the `tandem` schema,
/// the `tandem.drift` table, `tandem.mirror()` (what the `record` form calls) and
/// `tandem.record_drift()` (SECURITY DEFINER, so client roles need no privilege on the drift
/// table), `tandem.check_moved()` (what the key-move form of UPDATE calls under either
/// policy, see [`keymove`](crate::keymove)), USAGE on the schema for PUBLIC, and the
/// guard's functions and event triggers (see [`guard`](crate::guard)). The role
/// that runs it must own these objects once they exist. Without them, every `record`-form
/// statement and every key-moving UPDATE fails (function missing).
pub const SUPPORT_SQL: &str = concat!(
    include_str!("record.sql"),
    include_str!("guard.sql"),
    include_str!("triggers.sql")
);

/// The final SELECT's `WHERE` condition that mirrors the rows of CTE `written` (the client's
/// write, `tandem_w`) through `tandem.mirror()`. `statement` is the client's statement
/// text, stored with any drift; `row` is what `ROW(...)` takes for one of its rows as the
/// legacy table's row.
pub(crate) fn guard(
    rule: &ResolvedRule,
    op: WriteTag,
    statement: &str,
    written: &str,
    row: &str,
) -> String {
    let operation = match op {
        WriteTag::Insert => "insert",
        // A MERGE's rows are mirrored by two calls, see `merge`.
        WriteTag::Update | WriteTag::Merge => "update",
        WriteTag::Delete => "delete",
    };
    guard_rows(rule, operation, statement, written, row)
}

/// [`guard`] for `operation` (`insert`, `update` or `delete`) on the rows `rows_of` names:
/// a CTE, or a CTE and a `WHERE` condition choosing some of its rows.
pub(crate) fn guard_rows(
    rule: &ResolvedRule,
    operation: &str,
    statement: &str,
    rows_of: &str,
    row: &str,
) -> String {
    let set = &rule.rule.set;
    // `ROW(tandem_w.*)` rather than a bare `tandem_w`, which a legacy column of that name
    // would capture.
    let rows = format!(
        "(SELECT array_agg(ROW({row})::{legacy}) FROM {rows_of})",
        legacy = rule.rule.table,
    );
    format!(
        "(SELECT tandem.mirror({operation}, {table}, {target}, {columns}, {key}, {set_columns}, \
         {set_exprs}, {rows}, {statement})) IS NOT NULL",
        operation = literal(operation),
        table = literal(&rule.rule.table.to_string()),
        target = literal(&rule.rule.target.to_string()),
        columns = text_array(rule.shape.mirrored_columns.iter()),
        key = text_array(rule.rule.key.iter()),
        set_columns = text_array(set.iter().map(|(c, _)| c)),
        set_exprs = text_array(set.iter().map(|(_, e)| e)),
        statement = literal(statement),
    )
}

/// A string literal that reads back as `text` whatever `standard_conforming_strings` is:
/// `E'…'` when it holds a backslash, plain `'…'` otherwise.
pub(crate) fn literal(text: &str) -> String {
    let quoted = text.replace('\'', "''");
    if text.contains('\\') {
        format!("E'{}'", quoted.replace('\\', "\\\\"))
    } else {
        format!("'{quoted}'")
    }
}

/// `ARRAY['a', 'b']`, or `ARRAY[]::text[]` when empty (an empty ARRAY[] needs a type).
fn text_array<'a>(items: impl Iterator<Item = &'a String>) -> String {
    let items: Vec<String> = items.map(|s| literal(s)).collect();
    if items.is_empty() {
        "ARRAY[]::text[]".to_string()
    } else {
        format!("ARRAY[{}]", items.join(", "))
    }
}

#[cfg(test)]
#[path = "tests/record.rs"]
mod tests;
