//! A backfill's saved state (`<store>.backfill_state`), the batch transaction that moves it
//! forward, and the estimate of the rows left.
//!
//! Each batch is one transaction: the copy, the cursor and counters, and the record of its
//! copied keys for the deferred re-check (`<store>.backfill_pending`, see
//! [`super::recheck`]), so a killed run loses neither its place nor a re-check.

use tokio_postgres::Client;

use crate::control::store::{self, Store};

/// The saved state of a backfill.
pub(super) struct State {
    pub cursor: Option<Vec<String>>,
    pub copied: i64,
    pub skipped: i64,
    pub status: String,
    pub finished_at: Option<String>,
}

/// What one committed batch did.
pub(super) struct Batch {
    pub read: i64,
    pub copied: i64,
    pub last: Option<Vec<String>>,
}

/// Which backfill: the store, the legacy table and the predicate (`''` for none).
pub(super) struct Key<'a> {
    pub names: &'a Store,
    pub table: &'a str,
    pub predicate: &'a str,
}

/// One batch, its state update and its pending re-check, in one transaction; marks the
/// backfill finished when the batch came back short.
pub(super) async fn batch(
    client: &mut Client,
    key: &Key<'_>,
    sql: &str,
    cursor: &Option<Vec<String>>,
    batch_size: i64,
) -> Result<Batch, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    let row = tx.query_one(sql, &[cursor]).await?;
    let read: i64 = row.get(0);
    let copied: i64 = row.get(1);
    let last: Option<Vec<String>> = row.get(2);
    let xid: i64 = row.get(3);
    let keys: Vec<Vec<String>> = (4..row.len())
        .map(|i| row.get::<_, Option<Vec<String>>>(i).unwrap_or_default())
        .collect();
    let done = last.is_none() || read < batch_size;
    tx.execute(
        &format!(
            "UPDATE {} SET cursor = coalesce($3, cursor), rows_copied = rows_copied + $4, \
               rows_skipped = rows_skipped + $5, batches = batches + 1, updated_at = now(), \
               status = CASE WHEN $6 THEN 'finished' ELSE 'running' END, \
               finished_at = CASE WHEN $6 THEN now() END, last_error = NULL \
             WHERE table_name = $1 AND predicate = $2",
            key.names.backfill_state()
        ),
        &[
            &key.table,
            &key.predicate,
            &last,
            &copied,
            &(read - copied),
            &done,
        ],
    )
    .await?;
    if copied > 0 {
        let keys = serde_json::Value::from(keys).to_string();
        tx.execute(
            &format!(
                "INSERT INTO {} (table_name, predicate, xid, keys) VALUES ($1, $2, $3, $4::text::jsonb)",
                key.names.backfill_pending()
            ),
            &[&key.table, &key.predicate, &xid, &keys],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(Batch { read, copied, last })
}

/// The saved state, if this backfill ran before.
pub(super) async fn load(
    client: &Client,
    key: &Key<'_>,
) -> Result<Option<State>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            &format!(
                "SELECT cursor, rows_copied, rows_skipped, status, finished_at::text FROM {} \
                 WHERE table_name = $1 AND predicate = $2",
                key.names.backfill_state()
            ),
            &[&key.table, &key.predicate],
        )
        .await?;
    Ok(row.map(|r| State {
        cursor: r.get(0),
        copied: r.get(1),
        skipped: r.get(2),
        status: r.get(3),
        finished_at: r.get(4),
    }))
}

/// Records why the run stopped (the status is left as the batches set it).
pub(super) async fn record_error(client: &Client, key: &Key<'_>, failed: bool, error: &str) {
    let status = if failed { "'failed'" } else { "status" };
    let _ = client
        .execute(
            &format!(
                "UPDATE {} SET status = {status}, last_error = $3, updated_at = now() \
                 WHERE table_name = $1 AND predicate = $2",
                key.names.backfill_state()
            ),
            &[&key.table, &key.predicate, &error],
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
    if !key.predicate.is_empty() {
        return Ok(()); // one scope's run says nothing about the whole table
    }
    let sql = if backfilled {
        format!(
            "UPDATE {rules} r SET backfilled = true, updated_by = 'tandem backfill' \
              WHERE r.table_name = $1 AND NOT r.backfilled \
                AND r.mode IN ('dual_write', 'union_read', 'cutover') \
                AND NOT EXISTS (SELECT 1 FROM {history} h, {state} s \
                                 WHERE h.table_name = $1 AND s.table_name = $1 AND s.predicate = '' \
                                   AND h.at >= s.started_at AND h.new_rule ->> 'mode' = 'off')",
            rules = key.names.rules(),
            history = key.names.qualified("rules_history"),
            state = key.names.backfill_state(),
        )
    } else {
        format!(
            "UPDATE {} SET backfilled = false, updated_by = 'tandem backfill' \
              WHERE table_name = $1 AND backfilled",
            key.names.rules()
        )
    };
    client.execute(&sql, &[&key.table]).await?;
    Ok(())
}
