//! A backfill's saved state (`<store>.backfill_state`, one row per table, predicate and
//! direction), the batch transaction that moves it forward, and the estimate of the rows
//! left.
//!
//! Each batch is one transaction: the copy, the cursor and counters, and the record of its
//! copied keys for the deferred re-check (`<store>.backfill_pending`, see
//! [`super::recheck`]), so a killed run loses neither its place nor a re-check.

use tokio_postgres::Client;

use super::statements::Statements;
use super::Direction;
use crate::control::store::{self, resync, Store};

/// The saved state of a backfill.
pub(super) struct State {
    pub cursor: Option<Vec<String>>,
    pub copied: i64,
    pub skipped: i64,
    pub removed: i64,
    pub status: String,
    pub finished_at: Option<String>,
}

/// What one committed batch did.
pub(super) struct Batch {
    pub read: i64,
    pub copied: i64,
    /// Reverse only: destination rows in the batch's key range whose key the source lacks,
    /// deleted.
    pub removed: i64,
    pub last: Option<Vec<String>>,
}

/// Which backfill: the store, the legacy table, the predicate (`''` for none) and the
/// direction (`forward` or `reverse`).
pub(super) struct Key<'a> {
    pub names: &'a Store,
    pub table: &'a str,
    pub predicate: &'a str,
    pub direction: Direction,
}

/// Why a batch did not commit.
pub(super) enum BatchError {
    /// A query failed.
    Query(tokio_postgres::Error),
    /// The rule left the modes this direction may run in (read under the rule's row lock,
    /// so no mode change commits while the batch runs).
    Mode(String),
    /// The rule's row is gone (DROP RULE while the run went on).
    NoRule,
    /// A forward batch while the legacy table owes a re-sync from the target.
    ResyncOwed,
}

impl From<tokio_postgres::Error> for BatchError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Query(e)
    }
}

/// Where a batch reads: after `cursor`, up to `upper` (inclusive; `None`: the last key),
/// and which part of a parallel run it belongs to (`None`: a run in one stream).
pub(super) struct Range<'a> {
    pub cursor: &'a Option<Vec<String>>,
    pub upper: &'a Option<Vec<String>>,
    pub part: Option<i32>,
}

/// One batch, its state update and its pending re-check, in one transaction; marks the
/// backfill (or its part) finished when the batch came back short.
pub(super) async fn batch(
    client: &mut Client,
    key: &Key<'_>,
    sql: &Statements,
    range: Range<'_>,
    batch_size: i64,
) -> Result<Batch, BatchError> {
    let Range {
        cursor,
        upper: bound,
        part,
    } = range;
    let mut tx = client.transaction().await?;
    // The rule's mode, locked against changes until this batch commits.
    let rule = tx
        .query_opt(
            &format!(
                "SELECT r.mode, EXISTS (SELECT 1 FROM {} b WHERE b.table_name = r.table_name \
                   AND b.direction = '{}' AND b.status <> 'finished') \
                 FROM {} r WHERE r.table_name = $1 FOR SHARE OF r",
                key.names.backfill_state(),
                resync::REVERSE,
                key.names.rules()
            ),
            &[&key.table],
        )
        .await?;
    let Some(rule) = rule else {
        return Err(BatchError::NoRule);
    };
    let mode: String = rule.get(0);
    let owed: bool = rule.get(1);
    if !key.direction.runs_in(&mode) {
        return Err(BatchError::Mode(mode));
    }
    if key.direction == Direction::Forward && owed {
        return Err(BatchError::ResyncOwed);
    }
    let row = copy_rows(&mut tx, sql, cursor, bound).await?;
    let read: i64 = row.get(0);
    let copied: i64 = row.get(1);
    let last: Option<Vec<String>> = row.get(2);
    let xid: i64 = row.get(3);
    let keys: Vec<Vec<String>> = (4..row.len())
        .map(|i| row.get::<_, Option<Vec<String>>>(i).unwrap_or_default())
        .collect();
    let done = last.is_none() || read < batch_size;
    // Reverse: the stale rows up to this batch's last key (past the end on the last batch),
    // locked first so the deletion's own snapshot sees a write that raced it.
    let mut removed = 0;
    if let Some((lock, delete)) = &sql.stale {
        let upper = if done { None } else { last.clone() };
        tx.execute(lock, &[cursor, &upper]).await?;
        removed = tx.query_one(delete, &[cursor, &upper]).await?.get(0);
    }
    if let Some(part) = part {
        // The part moves on; the run's row only adds up (it finishes once every part has,
        // see `parts::finish`).
        tx.execute(
            &format!(
                "UPDATE {} SET cursor = coalesce($5, cursor), rows_copied = rows_copied + $6, \
                   rows_read = rows_read + $7, batches = batches + 1, updated_at = now(), \
                   status = CASE WHEN $8 THEN 'finished' ELSE 'running' END \
                 WHERE table_name = $1 AND predicate = $2 AND direction = $3 AND part = $4",
                key.names.backfill_parts()
            ),
            &[
                &key.table,
                &key.predicate,
                &key.direction.as_str(),
                &part,
                &last,
                &copied,
                &read,
                &done,
            ],
        )
        .await?;
    }
    if part.is_some() {
        tx.execute(
            &format!(
                "UPDATE {} SET rows_copied = rows_copied + $4, rows_skipped = rows_skipped + $5, \
                   batches = batches + 1, updated_at = now(), last_error = NULL \
                 WHERE table_name = $1 AND predicate = $2 AND direction = $3",
                key.names.backfill_state()
            ),
            &[
                &key.table,
                &key.predicate,
                &key.direction.as_str(),
                &copied,
                &(read - copied),
            ],
        )
        .await?;
    } else {
        tx.execute(
            &format!(
                "UPDATE {} SET cursor = coalesce($4, cursor), rows_copied = rows_copied + $5, \
                   rows_skipped = rows_skipped + $6, rows_removed = rows_removed + $8, \
                   batches = batches + 1, updated_at = now(), \
                   status = CASE WHEN $7 THEN 'finished' ELSE 'running' END, \
                   finished_at = CASE WHEN $7 THEN now() END, last_error = NULL \
                 WHERE table_name = $1 AND predicate = $2 AND direction = $3",
                key.names.backfill_state()
            ),
            &[
                &key.table,
                &key.predicate,
                &key.direction.as_str(),
                &last,
                &copied,
                &(read - copied),
                &done,
                &removed,
            ],
        )
        .await?;
    }
    if copied > 0 {
        let keys = serde_json::Value::from(keys).to_string();
        tx.execute(
            &format!(
                "INSERT INTO {} (table_name, predicate, direction, xid, keys) \
                 VALUES ($1, $2, $3, $4, $5::text::jsonb)",
                key.names.backfill_pending()
            ),
            &[
                &key.table,
                &key.predicate,
                &key.direction.as_str(),
                &xid,
                &keys,
            ],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(Batch {
        read,
        copied,
        removed,
        last,
    })
}

/// The saved state, if this backfill ran before.
pub(super) async fn load(
    client: &Client,
    key: &Key<'_>,
) -> Result<Option<State>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            &format!(
                "SELECT cursor, rows_copied, rows_skipped, rows_removed, status, finished_at::text \
                 FROM {} WHERE table_name = $1 AND predicate = $2 AND direction = $3",
                key.names.backfill_state()
            ),
            &[&key.table, &key.predicate, &key.direction.as_str()],
        )
        .await?;
    Ok(row.map(|r| State {
        cursor: r.get(0),
        copied: r.get(1),
        skipped: r.get(2),
        removed: r.get(3),
        status: r.get(4),
        finished_at: r.get(5),
    }))
}

/// Records why the run stopped (the status is left as the batches set it).
pub(super) async fn record_error(client: &Client, key: &Key<'_>, failed: bool, error: &str) {
    let status = if failed { "'failed'" } else { "status" };
    let _ = client
        .execute(
            &format!(
                "UPDATE {} SET status = {status}, last_error = $4, updated_at = now() \
                 WHERE table_name = $1 AND predicate = $2 AND direction = $3",
                key.names.backfill_state()
            ),
            &[&key.table, &key.predicate, &key.direction.as_str(), &error],
        )
        .await;
}

/// The role's name, for messages.
pub(super) async fn current_user(client: &Client) -> String {
    client
        .query_one("SELECT current_user::text", &[])
        .await
        .map(|r| r.get(0))
        .unwrap_or_else(|_| "the upstream user".into())
}

/// The planner's estimate of the rows left (after `cursor`). EXPLAIN's JSON comes back as
/// `json`, so it is read over the simple protocol (text), with the cursor as a literal.
pub(super) async fn estimate(
    client: &Client,
    explain: &str,
    cursor: &Option<Vec<String>>,
) -> Result<i64, tokio_postgres::Error> {
    let literal = match cursor {
        None => "NULL::text[]".to_string(),
        Some(values) => format!(
            "ARRAY[{}]::text[]",
            values
                .iter()
                .map(|v| store::quote_literal(v))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let text = explain.replace("$1::text[]", &literal);
    let messages = client.simple_query(&text).await?;
    let json = messages.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
        _ => None,
    });
    let value: serde_json::Value =
        serde_json::from_str(json.as_deref().unwrap_or("null")).unwrap_or_default();
    Ok(value
        .pointer("/0/Plan/Plan Rows")
        .and_then(|v| v.as_f64())
        .map(|f| f as i64)
        .unwrap_or(0))
}

/// How the estimate was made, in words: the statistics it comes from and how stale they are.
pub(super) async fn estimate_basis(
    client: &Client,
    table: &str,
) -> Result<String, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "SELECT greatest(s.last_analyze, s.last_autoanalyze)::text, s.n_mod_since_analyze::int8, \
               c.reltuples::int8 \
             FROM pg_class c LEFT JOIN pg_stat_all_tables s ON s.relid = c.oid \
             WHERE c.oid = $1::text::regclass",
            &[&table],
        )
        .await?;
    let Some(row) = row else {
        return Ok("the planner's estimate (EXPLAIN of the rows left)".into());
    };
    let analysed: Option<String> = row.get(0);
    let changed: Option<i64> = row.get(1);
    let reltuples: i64 = row.get(2);
    Ok(match analysed {
        Some(at) => format!(
            "the planner's estimate (EXPLAIN of the rows left), from {table}'s statistics of {at} ({} rows then; {} rows changed since)",
            reltuples.max(0),
            changed.unwrap_or(0)
        ),
        None if reltuples < 0 => format!(
            "the planner's guess (EXPLAIN of the rows left): {table} was never analysed, so it comes from the table's size on disk; ANALYZE {table} for a better one"
        ),
        None => format!(
            "the planner's estimate (EXPLAIN of the rows left), from {table}'s statistics ({} rows at the last VACUUM or CREATE INDEX)",
            reltuples
        ),
    })
}

/// Batches run as the upsert after a plain try met a key already in the target, before the
/// next plain try.
const UPSERT_STREAK: u32 = 16;

/// The batch's copy: a plain INSERT first, in a savepoint, and the `ON CONFLICT` batch when
/// that met a unique violation (a key already in the target: the plain try's rows are rolled
/// back with its savepoint, so the upsert copies exactly what the batch would have). A
/// unique violation the upsert does not absorb (another unique index of the target) is
/// raised by the upsert as before. After a conflict the next [`UPSERT_STREAK`] batches go
/// straight to the upsert, so a stretch of keys dual-write has already copied costs at most
/// one wasted try per streak.
async fn copy_rows(
    tx: &mut tokio_postgres::Transaction<'_>,
    sql: &Statements,
    cursor: &Option<Vec<String>>,
    bound: &Option<Vec<String>>,
) -> Result<tokio_postgres::Row, tokio_postgres::Error> {
    use std::sync::atomic::Ordering::Relaxed;
    // Counts one batch of the streak down; none left: the plain try is due.
    let in_streak = sql
        .upsert_streak
        .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1))
        .is_ok();
    let (Some(plain), false) = (&sql.batch_plain, in_streak) else {
        return tx.query_one(&sql.batch, &[cursor, bound]).await;
    };
    let attempt = tx.savepoint("tandem_plain_batch").await?;
    match attempt.query_one(plain, &[cursor, bound]).await {
        Ok(row) => {
            attempt.commit().await?;
            Ok(row)
        }
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
            attempt.rollback().await?;
            sql.upsert_streak.store(UPSERT_STREAK, Relaxed);
            tx.query_one(&sql.batch, &[cursor, bound]).await
        }
        Err(e) => Err(e),
    }
}

/// Records on the rule whether a whole-table backfill has finished since the rule last left
/// `off` (see `tandem_rules::Rule::backfilled`; union reads then read the target alone). Set
/// only while the rule mirrors and when it did not pass through `off` since this backfill
/// started (rows changed then were never mirrored); cleared when a run starts over. A rule
/// change like any other: every instance takes it at its next transaction boundary.
pub(super) async fn mark_backfilled(
    client: &Client,
    key: &Key<'_>,
    backfilled: bool,
) -> Result<(), tokio_postgres::Error> {
    if !key.predicate.is_empty() || key.direction != super::Direction::Forward {
        // One scope's run says nothing about the whole table; a re-sync fills legacy.
        return Ok(());
    }
    let sql = if backfilled {
        format!(
            "UPDATE {rules} r SET backfilled = true, updated_by = 'tandem backfill' \
              WHERE r.table_name = $1 AND NOT r.backfilled \
                AND r.mode IN ('dual_write', 'union_read', 'cutover') \
                AND NOT EXISTS (SELECT 1 FROM {history} h, {state} s \
                                 WHERE h.table_name = $1 AND s.table_name = $1 AND s.predicate = '' \
                                   AND s.direction = 'forward' \
                                   AND h.at >= s.started_at AND h.new_rule ->> 'mode' = 'off')",
            rules = key.names.rules(),
            history = key.names.qualified("rules_history"),
            state = key.names.backfill_state(),
        )
    } else {
        // The watermark was this (or an earlier) run's: a run starting over has copied
        // nothing yet.
        format!(
            "UPDATE {} SET backfilled = false, backfilled_to = NULL, \
               updated_by = 'tandem backfill' \
              WHERE table_name = $1 AND (backfilled OR backfilled_to IS NOT NULL)",
            key.names.rules()
        )
    };
    client.execute(&sql, &[&key.table]).await?;
    Ok(())
}

/// Publishes the backfill watermark on the rule (`backfilled_to`, see
/// `tandem_rules::Rule::backfilled_to`): the key up to which this whole-table run has copied
/// every legacy row, so union reads take the rows at or below it from the target alone.
///
/// The value is read from the store by the statement itself, so it only ever counts batches
/// that committed. In one stream it is the run's cursor; split into parts (numbered in key
/// order, each `(lower, upper]` with a cursor starting at `lower`), it is the end of the
/// contiguous copied prefix: the cursor of the first part not finished, or the last part's
/// cursor once every part is (the parts before a part not finished are copied to their
/// upper, which is its lower). Set only under the conditions of [`mark_backfilled`] (the
/// rule mirrors, and did not pass through `off` since the run started), while the rule is
/// not `backfilled` yet, and only when the value changed: every update of the rule's row is
/// a rule change each instance reloads, so the caller paces it (see [`super::watermark`]).
///
/// A mode change racing the statement (it commits after the statement's snapshot, before
/// the row is updated) makes the update re-check the newer row, but the history and the
/// cursor are still read as of the snapshot: the row's `version` must be the one the
/// snapshot saw, so a rule that went to `off` and back meanwhile is left alone (the next
/// publication sees the history).
///
/// Batches hold the rule's row `FOR SHARE`; the update waits for them at most
/// [`WATERMARK_LOCK_TIMEOUT`] (batches of other processes sharing a parallel run), and then
/// fails, to be tried again later, instead of holding up the caller's re-checks. Returns
/// whether the rule changed.
pub(super) async fn publish_watermark(
    client: &Client,
    key: &Key<'_>,
) -> Result<bool, tokio_postgres::Error> {
    if !key.predicate.is_empty() || key.direction != super::Direction::Forward {
        // One scope's cursor says nothing about the keys outside it; a re-sync fills legacy.
        return Ok(false);
    }
    let published = async {
        client
            .batch_execute(&format!(
                "BEGIN; SET LOCAL lock_timeout = '{WATERMARK_LOCK_TIMEOUT}'"
            ))
            .await?;
        let n = client
            .execute(&watermark_sql(key.names), &[&key.table])
            .await?;
        client.batch_execute("COMMIT").await?;
        Ok(n > 0)
    }
    .await;
    if published.is_err() {
        let _ = client.batch_execute("ROLLBACK").await;
    }
    published
}

/// How long publishing the watermark waits for batches holding the rule's row.
const WATERMARK_LOCK_TIMEOUT: &str = "2s";

/// The statement of [`publish_watermark`] (`$1`: the legacy table).
fn watermark_sql(names: &Store) -> String {
    format!(
        "WITH p AS (SELECT part, cursor, status = 'finished' AS finished FROM {parts} \
                     WHERE table_name = $1 AND predicate = '' AND direction = 'forward'), \
              w AS (SELECT s.started_at, \
                      CASE WHEN EXISTS (SELECT 1 FROM p) \
                           THEN (SELECT cursor FROM p WHERE part = coalesce( \
                                   (SELECT min(part) FROM p WHERE NOT finished), \
                                   (SELECT max(part) FROM p))) \
                           ELSE s.cursor END AS watermark \
                      FROM {state} s \
                     WHERE s.table_name = $1 AND s.predicate = '' AND s.direction = 'forward') \
         UPDATE {rules} r SET backfilled_to = w.watermark, updated_by = 'tandem backfill' \
           FROM w \
          WHERE r.table_name = $1 AND NOT r.backfilled \
            AND r.mode IN ('dual_write', 'union_read', 'cutover') \
            AND w.watermark IS NOT NULL AND r.backfilled_to IS DISTINCT FROM w.watermark \
            AND NOT EXISTS (SELECT 1 FROM {history} h WHERE h.table_name = $1 \
                              AND h.at >= w.started_at AND h.new_rule ->> 'mode' = 'off') \
            AND r.version = (SELECT v.version FROM {rules} v WHERE v.table_name = $1)",
        rules = names.rules(),
        parts = names.backfill_parts(),
        state = names.backfill_state(),
        history = names.qualified("rules_history"),
    )
}
