//! Mirroring an `UPDATE` that changes the rule's key: the target row moves.
//!
//! Assigning a key column (which includes the target's partition key) gives the row a new
//! target key, so besides upserting the new row the mirror must delete the target row under
//! the old key. PostgreSQL 15's RETURNING shows only new values, so the old keys are read
//! first, in the same statement, from the rows the UPDATE is about to write:
//!
//! ```sql
//! UPDATE events SET region = 'us' WHERE id = $1
//! -- becomes
//! WITH tandem_o AS (SELECT events.ctid AS tandem_ctid, events.tableoid AS tandem_tableoid,
//!                          events.id AS tandem_old_id, events.region AS tandem_old_region
//!                   FROM events WHERE id = $1 FOR UPDATE),
//!      tandem_w AS (UPDATE events SET region = 'us' FROM tandem_o
//!                   WHERE events.ctid = tandem_o.tandem_ctid
//!                     AND events.tableoid = tandem_o.tandem_tableoid RETURNING events.*),
//!      tandem_d AS (DELETE FROM public.events_v2 AS tandem_t USING tandem_o
//!                   WHERE <tandem_t's key = tandem_o's old key>
//!                     AND NOT EXISTS (SELECT FROM tandem_w WHERE <its key = tandem_t's key>)),
//!      tandem_m AS (<the usual upsert from tandem_w>)
//! SELECT FROM tandem_w
//! WHERE (SELECT tandem.check_moved('public.events', (SELECT count(*) FROM tandem_o),
//!                                  (SELECT count(*) FROM tandem_w)))
//! ```
//!
//! The client's WHERE runs once, in `tandem_o`, and its SET once, in the UPDATE, so every
//! `$n` still appears once. `tandem_d` deletes the old keys that no updated row has as its
//! new key, so it never touches a row `tandem_m` writes, whatever order the two run in
//! (swapping or shifting keys in one statement works); a row that was not backfilled has no
//! target row to delete and is simply inserted. `RETURNING events.*` keeps `tandem_o`'s
//! columns out of `tandem_w`, so the client's `RETURNING *` sees the table's own columns.
//!
//! Why the count check: the UPDATE finds its rows by `ctid` under the statement's snapshot.
//! When another transaction changed a matching row after that snapshot was taken (under
//! READ COMMITTED, typically while this statement waited for its lock), `tandem_o` locks and
//! returns the newest version, which the snapshot cannot see: the UPDATE skips that row. A
//! plain UPDATE would have re-checked and updated the newest version, and `tandem_d` would
//! delete a target row whose legacy row kept its key. So `tandem.check_moved()` (see
//! `record.sql`) raises `serialization_failure` (40001) whenever the UPDATE wrote fewer rows
//! than `tandem_o` locked, and the whole statement rolls back; the client retries it. The
//! check runs once, as the final SELECT's one-time filter, even when no row was written.
//!
//! `tandem_o` takes `FOR UPDATE` row locks, the strength a plain UPDATE takes when it changes
//! a column of a unique index; when the key is in no unique index of the legacy table, a
//! plain UPDATE would take the weaker `FOR NO KEY UPDATE` (which the parser Tandem uses does
//! not accept), so this form also blocks concurrent foreign-key checks on those rows.
//!
//! Refused instead: a key change together with `FROM` (the joined rows would have to move
//! into `tandem_o`, with the client's WHERE), and under the `record` policy, whose
//! `tandem.mirror()` only upserts.

use sqlparser::ast::{Update, With};

use crate::carried::Carried;
use crate::ident::quote_ident;
use crate::only;
use crate::plan::{ResponseFix, StatementPlan, WriteTag};
use crate::record::literal;
use crate::refusal::Refusal;
use crate::returning::Subject;
use crate::sqlgen::{upsert_cte, Composed, Mirror, WRITE_CTE};

/// Name of the CTE that locks the rows to update and keeps their old keys.
const OLD_CTE: &str = "tandem_o";
/// Name of the CTE that deletes the moved rows' old target rows.
const DELETE_CTE: &str = "tandem_d";

/// Rewrite an UPDATE without FROM that assigns a key column of `subject`'s rule, under the
/// `fail` policy. `upd` has been checked by [`update::rewrite`](crate::update::rewrite).
pub(crate) fn rewrite(
    with: Option<&With>,
    upd: &Update,
    subject: &Subject<'_>,
    only: bool,
) -> Result<StatementPlan, Refusal> {
    let rule = subject.rule;
    let q = subject.qualifier();
    let key = &rule.rule.key;
    let old = |k: &String| quote_ident(&format!("tandem_old_{k}"));

    let mut locked = vec![
        format!("{q}.ctid AS tandem_ctid"),
        format!("{q}.tableoid AS tandem_tableoid"),
    ];
    locked.extend(
        key.iter()
            .map(|k| format!("{q}.{} AS {}", quote_ident(k), old(k))),
    );
    let filter = upd
        .selection
        .as_ref()
        .map(|w| format!(" WHERE {w}"))
        .unwrap_or_default();
    let before = format!(
        "{OLD_CTE} AS (SELECT {locked} FROM {only}{table}{filter} FOR UPDATE)",
        locked = locked.join(", "),
        only = only::keyword(only),
        table = upd.table,
    );

    let carried = Carried::of(subject, upd.returning.as_deref(), false)?;
    let mut write = upd.clone();
    write.selection = None;
    write.returning = None;
    let write = format!(
        "{write} FROM {OLD_CTE} WHERE {q}.ctid = {OLD_CTE}.tandem_ctid \
         AND {q}.tableoid = {OLD_CTE}.tandem_tableoid RETURNING {returning}",
        write = only::restore(write.to_string(), only),
        returning = carried.returning(&format!("{q}.*")),
    );

    let stale: Vec<String> = key
        .iter()
        .map(|k| format!("tandem_t.{} = {OLD_CTE}.{}", quote_ident(k), old(k)))
        .collect();
    let kept: Vec<String> = key
        .iter()
        .map(|k| {
            let k = quote_ident(k);
            format!("{WRITE_CTE}.{k} = tandem_t.{k}")
        })
        .collect();
    let mirror = format!(
        "{DELETE_CTE} AS (DELETE FROM {target} AS tandem_t USING {OLD_CTE} WHERE {stale} \
         AND NOT EXISTS (SELECT FROM {WRITE_CTE} WHERE {kept})), {upsert}",
        target = rule.rule.target,
        stale = stale.join(" AND "),
        kept = kept.join(" AND "),
        upsert = upsert_cte(rule),
    );
    let check = format!(
        "(SELECT tandem.check_moved({table}, (SELECT count(*) FROM {OLD_CTE}), \
         (SELECT count(*) FROM {WRITE_CTE})))",
        table = literal(&rule.rule.table.to_string()),
    );

    let sql = Composed {
        with,
        before: Some(before),
        write,
        mirror: Mirror::Cte(mirror),
        projection: upd
            .returning
            .as_deref()
            .map(|r| subject.projection(r, &carried)),
        alias: subject.row_name().to_string(),
        check: Some(match subject.resolution_check() {
            Some(resolves) => format!("{resolves} AND {check}"),
            None => check,
        }),
    }
    .sql();
    Ok(StatementPlan {
        sql,
        response: ResponseFix::Mirror {
            tag: WriteTag::Update,
            returning: upd.returning.is_some(),
        },
        rule_table: Some(rule.rule.table.clone()),
        policy: Some(rule.rule.on_mirror_error),
    })
}
