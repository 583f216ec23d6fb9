//! The re-sync a FORCEd exit from `target_only` leaves owed, recorded in the store.
//!
//! In `target_only` the legacy table receives no writes, so it misses inserts, updates and
//! deletes. Leaving `target_only` is only allowed (with FORCE) to `cutover`, where writes
//! go to the target and are mirrored back into legacy; that switch writes a `required` row
//! for the reverse direction in `<store>.backfill_state`, in the same transaction as the
//! mode change. `tandem backfill --reverse` re-syncs the legacy table and marks the row
//! `finished`; until then (and until its re-checks are done) leaving `cutover` for a mode
//! that serves or keeps legacy rows (`union_read`, `dual_write`, `off`) is refused, and so
//! is a forward backfill (it would copy stale legacy rows back into the target).
//!
//! Entering `cutover` from `dual_write` or `union_read` clears any such row: the legacy
//! table was the table of record until then, so it owes nothing (a leftover of a rule
//! dropped and added again, say).

use tokio_postgres::GenericClient;

use super::Store;

/// The `direction` of a reverse re-sync's rows in `backfill_state` and `backfill_pending`.
pub const REVERSE: &str = "reverse";

/// The `direction` of a forward backfill's rows.
pub const FORWARD: &str = "forward";

/// Where the re-sync owed by a table stands.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Resync {
    /// `required` (not started), `running`, `failed` or `finished`.
    pub status: String,
    /// Target rows copied or updated into legacy so far.
    pub rows_copied: i64,
    /// Stale legacy rows deleted so far.
    pub rows_removed: i64,
    /// Batches whose copies still wait for their re-check.
    pub pending_rechecks: i64,
}

impl Resync {
    /// The legacy table is equal to the target again (as kept since by the cutover mirror).
    pub fn done(&self) -> bool {
        self.status == "finished" && self.pending_rechecks == 0
    }

    /// Where it stands, in words.
    pub fn describe(&self) -> String {
        let so_far = format!(
            "{} rows copied or updated, {} stale rows deleted",
            self.rows_copied, self.rows_removed
        );
        match self.status.as_str() {
            "required" => "required, not started".to_string(),
            "finished" if self.pending_rechecks > 0 => format!(
                "finished ({so_far}), but the copies of {} batches wait for their re-check",
                self.pending_rechecks
            ),
            "finished" => format!("finished ({so_far})"),
            other => format!("{other} ({so_far} so far)"),
        }
    }
}

/// Records that `table`'s legacy rows must be re-synced from `target` (a FORCEd exit from
/// `target_only`): a fresh reverse state, and no pending re-checks of an earlier run.
pub async fn require(
    client: &impl GenericClient,
    store: &Store,
    table: &str,
    target: &str,
    key: &[String],
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            &format!(
                "DELETE FROM {} WHERE table_name = $1 AND direction = '{REVERSE}'",
                store.backfill_pending()
            ),
            &[&table],
        )
        .await?;
    client
        .execute(
            &format!(
                "INSERT INTO {} (table_name, predicate, direction, target, key, status) \
                 VALUES ($1, '', '{REVERSE}', $2, $3, 'required') \
                 ON CONFLICT (table_name, predicate, direction) DO UPDATE SET \
                   target = EXCLUDED.target, key = EXCLUDED.key, cursor = NULL, rows_copied = 0, \
                   rows_skipped = 0, rows_removed = 0, batches = 0, status = 'required', \
                   last_error = NULL, started_at = now(), updated_at = now(), finished_at = NULL",
                store.backfill_state()
            ),
            &[&table, &target, &key],
        )
        .await?;
    Ok(())
}

/// Forgets any re-sync owed by `table` (its legacy table is the table of record again).
pub async fn clear(
    client: &impl GenericClient,
    store: &Store,
    table: &str,
) -> Result<(), tokio_postgres::Error> {
    for object in [store.backfill_pending(), store.backfill_state()] {
        client
            .execute(
                &format!("DELETE FROM {object} WHERE table_name = $1 AND direction = '{REVERSE}'"),
                &[&table],
            )
            .await?;
    }
    Ok(())
}

/// The re-sync `table` owes or owed, if any.
pub async fn state(
    client: &impl GenericClient,
    store: &Store,
    table: &str,
) -> Result<Option<Resync>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            &format!(
                "SELECT s.status, s.rows_copied, s.rows_removed, \
                   (SELECT count(*)::int8 FROM {} p WHERE p.table_name = s.table_name \
                      AND p.direction = s.direction) \
                 FROM {} s WHERE s.table_name = $1 AND s.predicate = '' AND s.direction = '{REVERSE}'",
                store.backfill_pending(),
                store.backfill_state()
            ),
            &[&table],
        )
        .await?;
    Ok(row.map(|r| Resync {
        status: r.get(0),
        rows_copied: r.get(1),
        rows_removed: r.get(2),
        pending_rechecks: r.get(3),
    }))
}
