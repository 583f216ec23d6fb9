//! The deferred re-check of a backfill's copies, and what it waits for.
//!
//! A DELETE through Tandem removes the legacy row and, in the same statement, the target's
//! copy, found with the statement's snapshot. A DELETE whose snapshot was taken before a
//! batch committed, and which reaches the legacy row after the batch released it, deletes
//! the legacy row but cannot see the batch's copy: the copy would outlive its row. So each
//! batch records its copied keys in `<store>.backfill_pending`, in its own transaction; once
//! no session of the database holds a snapshot older than the batch (no `backend_xmin` at or
//! before the batch's xid) and no transaction that started before the batch was seen
//! committed has written (`backend_xid`: its DELETE's statement may be over, its snapshot
//! released, but not its change), the copies whose legacy row is gone are deleted and the
//! record goes. Any later DELETE sees the copy and removes it itself. The same holds in
//! reverse (`--reverse`: target -> legacy) with the tables' roles swapped.
//!
//! Batches go on while earlier re-checks wait; a long transaction (a report, `pg_dump`, an
//! idle-in-transaction `psql`) only delays the re-checks. At the end of a run the backfill
//! waits for them, saying every few seconds which sessions it waits for, at most
//! `--max-wait` when given: then it stops with [`Blocked`], leaving the records for the next
//! run, which re-checks them first.

use std::fmt;
use std::time::{Duration, Instant};

use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

use super::state::Key;
use super::statements::Statements;

/// A session holding a snapshot older than a pending batch.
#[derive(Debug, Clone)]
pub struct Blocker {
    /// Its backend pid (`pg_terminate_backend(pid)` ends it).
    pub pid: i32,
    /// Its `application_name` (empty when unset).
    pub application_name: String,
    /// Its role.
    pub user: String,
    /// `active`, `idle in transaction`, ...
    pub state: String,
    /// How long its transaction has been open.
    pub transaction_age: Duration,
    /// When its current (or last) query started, as the server prints it.
    pub query_start: String,
    /// How long ago that was.
    pub query_age: Duration,
    /// The start of that query (80 characters at most).
    pub query: String,
}

impl fmt::Display for Blocker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pid {} (application_name \"{}\", user {}, {}, transaction open {:.0} s, query started {} ({:.0} s ago): {})",
            self.pid,
            self.application_name,
            self.user,
            self.state,
            self.transaction_age.as_secs_f64(),
            self.query_start,
            self.query_age.as_secs_f64(),
            self.query
        )
    }
}

/// What the re-checks are waiting for, reported every few seconds.
#[derive(Debug, Clone)]
pub struct Wait {
    /// Sessions holding a snapshot older than a pending batch, oldest transaction first.
    pub blockers: Vec<Blocker>,
    /// Batches whose re-check waits.
    pub pending_batches: i64,
    /// Copied rows those batches hold.
    pub pending_keys: i64,
    /// How long this run has been waiting after its last batch (zero while copying).
    pub waited: Duration,
}

impl fmt::Display for Wait {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "re-check of {} copied rows ({} batches) waits for {} holding an older snapshot: {}",
            self.pending_keys,
            self.pending_batches,
            if self.blockers.len() == 1 {
                "1 session".to_string()
            } else {
                format!("{} sessions", self.blockers.len())
            },
            self.blockers
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        )?;
        if !self.waited.is_zero() {
            write!(f, " (waiting {:.0} s)", self.waited.as_secs_f64())?;
        }
        Ok(())
    }
}

/// A run stopped by `--max-wait` with re-checks left (kept for the next run).
#[derive(Debug, Clone)]
pub struct Blocked {
    /// The legacy table.
    pub table: String,
    /// What it was waiting for when it gave up.
    pub wait: Wait,
    /// The store table keeping the pending re-checks.
    pub pending_table: String,
}

impl fmt::Display for Blocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pids = self
            .wait
            .blockers
            .iter()
            .map(|b| b.pid.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        write!(
            f,
            "backfill of {}: gave up after {:.0} s (--max-wait): the {}. A DELETE in such a \
             session could leave one of those copies behind, so they must be re-checked once \
             it ends; they are kept in {}. End that transaction (or SELECT \
             pg_terminate_backend(pid) for pid {pids}) and run tandem backfill again: it \
             re-checks them first",
            self.table,
            self.wait.waited.as_secs_f64(),
            self.wait,
            self.pending_table
        )
    }
}

/// What `settle` did.
pub(super) struct Settled {
    /// Copies removed because their legacy row was gone.
    pub removed: i64,
    /// Batches whose re-check still waits.
    pub pending_batches: i64,
}

/// Why re-checking stopped.
pub(super) enum SettleError {
    /// A query failed.
    Query(tokio_postgres::Error),
    /// A pending row's keys are not what a batch writes (edited by hand?).
    BadRow(i64),
    /// `max_wait` passed with sessions still holding older snapshots.
    Blocked(Blocked),
}

impl From<tokio_postgres::Error> for SettleError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Query(e)
    }
}

/// How `settle` waits.
pub(super) struct WaitPolicy<'a> {
    /// Wait until every re-check is done (the end of a run), or only do those that can run.
    pub until_done: bool,
    /// Give up after this long (with `until_done`).
    pub max_wait: Option<Duration>,
    /// Report what it waits for this often.
    pub report_every: Duration,
    /// Say nothing until the oldest pending batch has waited this long: under live
    /// traffic ordinary short transactions hold every new batch back for milliseconds.
    pub report_after: Duration,
    /// When it last reported (shared across calls, so reports stay spaced while copying).
    pub last_report: &'a mut Option<Instant>,
}

/// The SQL condition, over the alias `a` of `pg_stat_activity`, "this session may hold
/// back the pending batch `p`": it holds a snapshot at or before the batch's xid, or its
/// transaction started before the batch was seen committed and has written. The second
/// covers a DELETE whose statement, with a snapshot older than the batch, has ended
/// (releasing the snapshot: `backend_xmin` goes NULL between statements in READ
/// COMMITTED) but whose transaction has not committed: until it does, the re-check still
/// sees the row it deletes.
fn holds_back(p: &str) -> String {
    format!(
        "a.datname = current_database() AND a.pid <> pg_backend_pid() \
           AND ((a.backend_xmin IS NOT NULL AND age(a.backend_xmin) >= age({p}.xid::text::xid)) \
             OR (a.backend_xid IS NOT NULL AND a.xact_start < coalesce({p}.seen_at, now())))"
    )
}

/// Re-checks the pending batches no older snapshot can affect any more; with
/// `until_done`, waits (reporting through `report`) until none is left. Returns the copies
/// removed.
pub(super) async fn settle(
    client: &Client,
    sql: &Statements,
    scope: &Key<'_>,
    policy: WaitPolicy<'_>,
    report: &mut (dyn FnMut(&Wait) + Send),
) -> Result<Settled, SettleError> {
    let pending = scope.names.backfill_pending();
    let ready = format!(
        "SELECT id, keys::text FROM {pending} p \
         WHERE table_name = $1 AND predicate = $2 AND direction = $3 \
           AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE {}) ORDER BY id",
        holds_back("p")
    );
    // Every batch recorded so far has committed: from now on, a transaction that starts
    // sees its copies.
    client
        .execute(
            &format!(
                "UPDATE {pending} SET seen_at = clock_timestamp() \
                 WHERE table_name = $1 AND predicate = $2 AND direction = $3 AND seen_at IS NULL"
            ),
            &[&scope.table, &scope.predicate, &scope.direction.as_str()],
        )
        .await?;
    let started = Instant::now();
    let mut removed = 0;
    loop {
        for row in client
            .query(
                &ready,
                &[&scope.table, &scope.predicate, &scope.direction.as_str()],
            )
            .await?
        {
            let id: i64 = row.get(0);
            let keys: Vec<Vec<String>> =
                serde_json::from_str(row.get(1)).map_err(|_| SettleError::BadRow(id))?;
            removed += recheck(client, sql, &keys).await?;
            client
                .execute(&format!("DELETE FROM {pending} WHERE id = $1"), &[&id])
                .await?;
        }
        let Outstanding {
            batches,
            keys,
            oldest,
        } = outstanding(client, scope).await?;
        if batches == 0 {
            return Ok(Settled {
                removed,
                pending_batches: 0,
            });
        }
        let due = policy
            .last_report
            .is_none_or(|at| at.elapsed() >= policy.report_every);
        let waited = if policy.until_done {
            started.elapsed()
        } else {
            Duration::ZERO
        };
        let timed_out = policy.until_done && policy.max_wait.is_some_and(|m| waited >= m);
        if due || timed_out {
            let blockers = blockers(client, scope).await?;
            // None left: the last one ended since the re-checks above; go round again.
            if !blockers.is_empty() {
                let wait = Wait {
                    blockers,
                    pending_batches: batches,
                    pending_keys: keys,
                    waited,
                };
                if timed_out {
                    return Err(SettleError::Blocked(Blocked {
                        table: scope.table.to_string(),
                        wait,
                        pending_table: pending,
                    }));
                }
                if oldest >= policy.report_after {
                    report(&wait);
                    *policy.last_report = Some(Instant::now());
                }
            }
        }
        if !policy.until_done {
            return Ok(Settled {
                removed,
                pending_batches: batches,
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Deletes the copies among `keys` (one array per key column) whose source row is gone:
/// locked first, then deleted with a fresh snapshot in the same transaction, so a write
/// that gave the key back its source row meanwhile (and waits for the lock to mirror it)
/// is seen and its copy kept.
async fn recheck(
    client: &Client,
    sql: &Statements,
    keys: &[Vec<String>],
) -> Result<i64, tokio_postgres::Error> {
    if keys.first().is_none_or(|k| k.is_empty()) {
        return Ok(0);
    }
    let params: Vec<&(dyn ToSql + Sync)> = keys.iter().map(|k| k as &(dyn ToSql + Sync)).collect();
    let gone = client.query(&sql.recheck, &params).await?;
    if gone.is_empty() {
        return Ok(0);
    }
    let gone: Vec<Vec<String>> = (0..keys.len())
        .map(|i| gone.iter().map(|r| r.get::<_, String>(i)).collect())
        .collect();
    let params: Vec<&(dyn ToSql + Sync)> = gone.iter().map(|k| k as &(dyn ToSql + Sync)).collect();
    client.batch_execute("BEGIN").await?;
    let removed = async {
        client.execute(&sql.lock_copies, &params).await?;
        let removed: i64 = client.query_one(&sql.remove, &params).await?.get(0);
        client.batch_execute("COMMIT").await?;
        Ok(removed)
    }
    .await;
    if removed.is_err() {
        let _ = client.batch_execute("ROLLBACK").await;
    }
    removed
}

/// The re-checks still pending.
pub(super) struct Outstanding {
    /// Batches.
    pub batches: i64,
    /// Copied rows they hold.
    pub keys: i64,
    /// How long the oldest has been waiting.
    pub oldest: Duration,
}

/// The re-checks still pending.
pub(super) async fn outstanding(
    client: &Client,
    scope: &Key<'_>,
) -> Result<Outstanding, tokio_postgres::Error> {
    let row = client
        .query_one(
            &format!(
                "SELECT count(*)::int8, coalesce(sum(jsonb_array_length(keys -> 0)), 0)::int8, \
                   coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 \
                 FROM {} WHERE table_name = $1 AND predicate = $2 AND direction = $3",
                scope.names.backfill_pending()
            ),
            &[&scope.table, &scope.predicate, &scope.direction.as_str()],
        )
        .await?;
    Ok(Outstanding {
        batches: row.get(0),
        keys: row.get(1),
        oldest: Duration::from_secs_f64(row.get::<_, f64>(2).max(0.0)),
    })
}

/// Sessions holding a snapshot older than the newest pending batch (each holds back at
/// least one re-check), oldest transaction first, five at most.
async fn blockers(client: &Client, scope: &Key<'_>) -> Result<Vec<Blocker>, tokio_postgres::Error> {
    let rows = client
        .query(
            &format!(
                "SELECT a.pid, coalesce(a.application_name, ''), coalesce(a.usename::text, ''), \
                   coalesce(a.state, 'unknown state'), \
                   extract(epoch FROM now() - coalesce(a.xact_start, a.backend_start))::float8, \
                   coalesce(a.query_start::text, 'never'), \
                   coalesce(extract(epoch FROM now() - a.query_start), 0)::float8, \
                   left(regexp_replace(coalesce(a.query, ''), '\\s+', ' ', 'g'), 80) \
                 FROM pg_stat_activity a \
                 WHERE EXISTS (SELECT 1 FROM {} p WHERE p.table_name = $1 AND p.predicate = $2 \
                                 AND p.direction = $3 AND {}) \
                 ORDER BY a.xact_start NULLS LAST LIMIT 5",
                scope.names.backfill_pending(),
                holds_back("p")
            ),
            &[&scope.table, &scope.predicate, &scope.direction.as_str()],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Blocker {
            pid: r.get(0),
            application_name: r.get(1),
            user: r.get(2),
            state: r.get(3),
            transaction_age: Duration::from_secs_f64(r.get::<_, f64>(4).max(0.0)),
            query_start: r.get(5),
            query_age: Duration::from_secs_f64(r.get::<_, f64>(6).max(0.0)),
            query: r.get(7),
        })
        .collect())
}
