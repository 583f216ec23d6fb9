//! What a scrape asks the database: backfill progress, unresolved drift, shadow overlap and
//! each rule's guard state and firings. One side connection per scrape, the whole bounded by
//! [`DEADLINE`], so a slow or unreachable database makes `tandem_store_up` 0 rather than a
//! hung scrape.

use std::time::Duration;

use crate::control::catalog;
use crate::control::store::Store;
use crate::shared::Shared;

/// The longest a scrape waits for the database.
pub const DEADLINE: Duration = Duration::from_secs(5);

/// The database's figures, per legacy table.
#[derive(Debug, Default)]
pub struct StoreFacts {
    /// Backfill runs over the whole table: (table, status, rows copied).
    pub backfill: Vec<(String, String, i64)>,
    /// Planner estimate of each rule's legacy rows, when analysed: (table, rows).
    pub legacy_rows: Vec<(String, i64)>,
    /// Unresolved drift rows: (table, source, count). `source` is `mirror` for writes
    /// Tandem let through unmirrored and `guard` for writes the guard recorded.
    pub drift: Vec<(String, String, i64)>,
    /// Shadow samples kept: (table, samples, mean overlap, lowest overlap).
    pub shadow: Vec<(String, i64, f64, f64)>,
    /// Each rule's guard: (table, state).
    pub guard: Vec<(String, String)>,
    /// Guard firings per rule since the guard was first installed: (table, policy, count).
    pub guard_firings: Vec<(String, String, i64)>,
}

/// Asks the database, within [`DEADLINE`]; the error in words otherwise.
pub async fn gather(shared: &Shared, store: &Store) -> Result<StoreFacts, String> {
    match tokio::time::timeout(DEADLINE, ask(shared, store)).await {
        Ok(answer) => answer,
        Err(_) => Err(format!(
            "the database did not answer within {} s",
            DEADLINE.as_secs()
        )),
    }
}

/// The rows `sql` returns, each read by `each` (`None` skips a row).
async fn rows<T>(
    client: &tokio_postgres::Client,
    sql: &str,
    each: impl Fn(&tokio_postgres::Row) -> Option<T>,
) -> Result<Vec<T>, String> {
    Ok(client
        .query(sql, &[])
        .await
        .map_err(|e| catalog::describe(&e))?
        .iter()
        .filter_map(each)
        .collect())
}

async fn ask(shared: &Shared, store: &Store) -> Result<StoreFacts, String> {
    let client = catalog::side_connection(&shared.config, &shared.connector)
        .await
        .map_err(|e| e.to_string())?;
    let backfill = rows(
        &client,
        &format!(
            "SELECT table_name, status, rows_copied FROM {} \
             WHERE predicate = '' AND direction = 'forward' ORDER BY 1",
            store.backfill_state()
        ),
        |r| Some((r.get(0), r.get(1), r.get(2))),
    )
    .await?;
    let legacy_rows = rows(
        &client,
        &format!(
            "SELECT r.table_name, \
               (SELECT sum(c.reltuples)::int8 FROM pg_class c \
                 WHERE ((c.oid = to_regclass(r.table_name) AND c.relkind <> 'p') \
                    OR c.oid IN (SELECT relid FROM pg_partition_tree(to_regclass(r.table_name)) WHERE isleaf)) \
                HAVING bool_and(c.reltuples >= 0)) \
             FROM {} r ORDER BY 1",
            store.rules()
        ),
        |r| r.get::<_, Option<i64>>(1).map(|n| (r.get(0), n)),
    )
    .await?;
    let drift = rows(
        &client,
        "SELECT rule_table, source, count(*) FROM tandem.drift WHERE NOT resolved \
         GROUP BY 1, 2 ORDER BY 1, 2",
        |r| Some((r.get(0), r.get(1), r.get(2))),
    )
    .await?;
    let shadow = rows(
        &client,
        &format!(
            "SELECT rule_table, count(*), avg(overlap)::float8, min(overlap)::float8 \
             FROM {} GROUP BY 1 ORDER BY 1",
            store.qualified("shadow_samples")
        ),
        |r| Some((r.get(0), r.get(1), r.get(2), r.get(3))),
    )
    .await?;
    let mut guard: Vec<(String, String)> = crate::control::guard::states(&client, store)
        .await
        .map_err(|e| catalog::describe(&e))?
        .into_iter()
        .map(|(table, state)| (table, state.state))
        .collect();
    guard.sort();
    let guard_firings = rows(
        &client,
        "SELECT rule_table, policy, tandem.guard_firings(rule_table) FROM tandem.guards ORDER BY 1",
        |r| Some((r.get(0), r.get(1), r.get(2))),
    )
    .await?;
    Ok(StoreFacts {
        backfill,
        legacy_rows,
        drift,
        shadow,
        guard,
        guard_firings,
    })
}
