//! A backfill split into key ranges copied in parallel (`tandem backfill --jobs N`).
//!
//! One stream of batches is bounded by one Postgres backend inserting into the target. For
//! large tables the rows left are split, once, into parts of about equal size: the keys
//! that cut them into N tiles in key order (`ntile`), read from the table itself, or from a
//! sample of its pages (`TABLESAMPLE SYSTEM`) when it has more than [`SAMPLE_ABOVE`] rows.
//! Each part is a key range `(lower, upper]` with its own cursor in
//! `<store>.backfill_parts`, and each batch of a part is the ordinary batch (same lock,
//! same re-check record, see the parent module) bounded above by the part's upper key, so
//! every safety argument of one stream holds per part: the parts cover the key space
//! without overlap, and a row copied by one part's batch is re-checked like any other.
//!
//! Workers claim a part with a session advisory lock (`pg_try_advisory_lock`, keyed by the
//! run and the part number), copy it to its end, and claim the next. Several processes or
//! machines running `tandem backfill --jobs N` on the same table therefore share one run:
//! each takes the parts nobody holds, a part is never copied by two workers at once, and a
//! killed worker's lock goes with its connection, so another process (or the next run)
//! resumes that part at its cursor. The run's own row in `backfill_state` adds up every
//! part's counters and is marked finished by the process that sees the last part finished
//! (after its re-checks), which then records the finished backfill on the rule and
//! analyses the target, as a single stream does.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, RwLock};
use tokio_postgres::Client;

use super::recheck::{self, WaitPolicy};
use super::state::{self, BatchError, Key, Range};
use super::statements::Statements;
use super::watermark::Watermark;
use super::{Event, Progress};
use crate::config::Config;
use crate::control::catalog;

/// Above this many rows (the planner's estimate), the split reads a sample of the table's
/// pages instead of every key.
pub(super) const SAMPLE_ABOVE: i64 = 2_000_000;

/// Rows the sample aims at.
const SAMPLE_ROWS: f64 = 200_000.0;

/// How often the coordinating connection runs the re-checks that are due while the workers
/// copy.
const SETTLE_EVERY: Duration = Duration::from_millis(250);

/// One part of a run.
#[derive(Debug, Clone)]
pub(super) struct Part {
    pub part: i32,
    pub cursor: Option<Vec<String>>,
    pub upper: Option<Vec<String>>,
}

/// How far the parts of a run have got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PartsDone {
    /// Parts the run is split into.
    pub total: usize,
    /// Parts copied to their end.
    pub finished: usize,
}

/// The rows of one run, with its table (`$1`), predicate (`$2`) and direction (`$3`).
const WHERE_RUN: &str = "table_name = $1 AND predicate = $2 AND direction = $3";

/// Whether this run has parts (it was split by an earlier `--jobs` run).
pub(super) async fn exist(client: &Client, key: &Key<'_>) -> Result<bool, tokio_postgres::Error> {
    let row = client
        .query_one(
            &format!(
                "SELECT EXISTS (SELECT 1 FROM {} WHERE {})",
                key.names.backfill_parts(),
                WHERE_RUN
            ),
            &[&key.table, &key.predicate, &key.direction.as_str()],
        )
        .await?;
    Ok(row.get(0))
}

/// Forgets the parts of a run (a fresh start).
pub(super) async fn forget(client: &Client, key: &Key<'_>) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            &format!(
                "DELETE FROM {} WHERE {}",
                key.names.backfill_parts(),
                WHERE_RUN
            ),
            &[&key.table, &key.predicate, &key.direction.as_str()],
        )
        .await?;
    Ok(())
}

/// Splits the rows left after `cursor` into at most `n` parts, unless another process split
/// the run first (the run's row is locked meanwhile). Returns the number of parts.
pub(super) async fn split(
    client: &mut Client,
    key: &Key<'_>,
    sql: &Statements,
    cursor: &Option<Vec<String>>,
    n: usize,
    estimated: i64,
) -> Result<usize, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.execute(
        &format!(
            "SELECT 1 FROM {} WHERE {} FOR UPDATE",
            key.names.backfill_state(),
            WHERE_RUN
        ),
        &[&key.table, &key.predicate, &key.direction.as_str()],
    )
    .await?;
    let existing: i64 = tx
        .query_one(
            &format!(
                "SELECT count(*) FROM {} WHERE {}",
                key.names.backfill_parts(),
                WHERE_RUN
            ),
            &[&key.table, &key.predicate, &key.direction.as_str()],
        )
        .await?
        .get(0);
    if existing > 0 {
        tx.commit().await?;
        return Ok(existing as usize);
    }
    let tiles = i32::try_from(n.max(1)).unwrap_or(i32::MAX);
    let query = if estimated > SAMPLE_ABOVE {
        let percent = (100.0 * SAMPLE_ROWS / estimated as f64).clamp(0.001, 100.0);
        sql.sampled_boundaries
            .replace("(%)", &format!("({percent:.6})"))
    } else {
        sql.boundaries.clone()
    };
    let boundaries: Vec<Vec<String>> = tx
        .query(&query, &[cursor, &tiles])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut lower = cursor.clone();
    let count = boundaries.len() + 1;
    for (i, upper) in boundaries
        .into_iter()
        .map(Some)
        .chain(std::iter::once(None))
        .enumerate()
    {
        tx.execute(
            &format!(
                "INSERT INTO {} (table_name, predicate, direction, part, lower, upper, cursor) \
                 VALUES ($1, $2, $3, $4, $5, $6, $5)",
                key.names.backfill_parts()
            ),
            &[
                &key.table,
                &key.predicate,
                &key.direction.as_str(),
                &(i as i32),
                &lower,
                &upper,
            ],
        )
        .await?;
        lower = upper;
    }
    tx.commit().await?;
    Ok(count)
}

/// The run's advisory lock space: one per table, predicate and direction.
async fn lock_space(client: &Client, key: &Key<'_>) -> Result<i32, tokio_postgres::Error> {
    Ok(client
        .query_one(
            "SELECT hashtext('tandem backfill ' || $1 || ' ' || $2 || ' ' || $3)",
            &[&key.table, &key.predicate, &key.direction.as_str()],
        )
        .await?
        .get(0))
}

/// Claims the first unfinished part nobody holds (locked until [`release`] or the
/// connection ends).
async fn claim(
    client: &Client,
    key: &Key<'_>,
    space: i32,
) -> Result<Option<Part>, tokio_postgres::Error> {
    let list = format!(
        "SELECT part FROM {} WHERE {} AND status <> 'finished' ORDER BY part",
        key.names.backfill_parts(),
        WHERE_RUN
    );
    for row in client
        .query(
            &list,
            &[&key.table, &key.predicate, &key.direction.as_str()],
        )
        .await?
    {
        let part: i32 = row.get(0);
        let locked: bool = client
            .query_one("SELECT pg_try_advisory_lock($1, $2)", &[&space, &part])
            .await?
            .get(0);
        if !locked {
            continue;
        }
        // Read again under the lock: it may have finished since the list was read.
        let now = client
            .query_one(
                &format!(
                    "SELECT cursor, upper, status FROM {} WHERE {} AND part = $4",
                    key.names.backfill_parts(),
                    WHERE_RUN
                ),
                &[&key.table, &key.predicate, &key.direction.as_str(), &part],
            )
            .await?;
        if now.get::<_, String>(2) == "finished" {
            release(client, space, part).await?;
            continue;
        }
        return Ok(Some(Part {
            part,
            cursor: now.get(0),
            upper: now.get(1),
        }));
    }
    Ok(None)
}

async fn release(client: &Client, space: i32, part: i32) -> Result<(), tokio_postgres::Error> {
    client
        .execute("SELECT pg_advisory_unlock($1, $2)", &[&space, &part])
        .await?;
    Ok(())
}

/// How far the parts have got.
pub(super) async fn done(
    client: &Client,
    key: &Key<'_>,
) -> Result<PartsDone, tokio_postgres::Error> {
    let row = client
        .query_one(
            &format!(
                "SELECT count(*), count(*) FILTER (WHERE status = 'finished') FROM {} WHERE {}",
                key.names.backfill_parts(),
                WHERE_RUN
            ),
            &[&key.table, &key.predicate, &key.direction.as_str()],
        )
        .await?;
    Ok(PartsDone {
        total: row.get::<_, i64>(0) as usize,
        finished: row.get::<_, i64>(1) as usize,
    })
}

/// Marks the run finished once every part is (false while another process still copies).
pub(super) async fn finish(client: &Client, key: &Key<'_>) -> Result<bool, tokio_postgres::Error> {
    let updated = client
        .execute(
            &format!(
                "UPDATE {state} SET status = 'finished', finished_at = now(), updated_at = now() \
                 WHERE {w} AND status <> 'finished' \
                   AND NOT EXISTS (SELECT 1 FROM {parts} p WHERE p.table_name = $1 \
                     AND p.predicate = $2 AND p.direction = $3 AND p.status <> 'finished')",
                state = key.names.backfill_state(),
                parts = key.names.backfill_parts(),
                w = WHERE_RUN,
            ),
            &[&key.table, &key.predicate, &key.direction.as_str()],
        )
        .await?;
    Ok(updated > 0 || done(client, key).await.map(|d| d.finished == d.total)?)
}

/// What the workers share.
pub(super) struct Run<'a> {
    pub config: &'a Config,
    pub key: &'a Key<'a>,
    pub sql: &'a Statements,
    pub batch_size: i64,
    pub max_batches: u64,
    pub throttle: Duration,
    pub jobs: usize,
    pub report_every: Duration,
    pub report_after: Duration,
}

/// Progress shared by the workers, and the caller's event sink.
pub(super) struct Shared<'e> {
    pub progress: Mutex<Progress>,
    events: Mutex<&'e mut (dyn FnMut(&Event<'_>) + Send)>,
    started: Instant,
}

impl<'e> Shared<'e> {
    pub fn new(
        progress: Progress,
        started: Instant,
        events: &'e mut (dyn FnMut(&Event<'_>) + Send),
    ) -> Self {
        Self {
            progress: Mutex::new(progress),
            events: Mutex::new(events),
            started,
        }
    }

    fn emit(&self, event: &Event<'_>) {
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        (*events)(event);
    }

    fn batch(&self, read: i64, copied: i64) {
        let now = {
            let mut p = self.progress.lock().unwrap_or_else(|p| p.into_inner());
            p.batches += 1;
            p.copied += copied;
            p.skipped += read - copied;
            p.elapsed = self.started.elapsed();
            p.clone()
        };
        self.emit(&Event::Batch(&now));
    }
}

/// Why a parallel run stopped early.
pub(super) enum Stop {
    /// A batch failed.
    Batch(BatchError),
    /// Connecting or a query of the claim failed.
    Query(tokio_postgres::Error),
    /// Connecting failed.
    Connect(catalog::CatalogError),
    /// A re-check failed.
    Settle(recheck::SettleError),
}

/// Copies the run's parts with `jobs` workers (each its own connection) while the caller's
/// connection runs the re-checks that are due and publishes the watermark when its interval
/// has passed (see [`coordinate`]). Returns when no part is left to claim (all finished, or
/// held by another process), when `max_batches` is reached, or at the first error (the
/// other workers' open batches roll back with their connections; after a failed re-check
/// the workers stop after their current batch).
pub(super) async fn copy(
    client: &Client,
    run: &Run<'_>,
    shared: &Shared<'_>,
    watermark: &mut Watermark,
) -> Result<(), Stop> {
    let space = lock_space(client, run.key).await.map_err(Stop::Query)?;
    let stop = AtomicBool::new(false);
    let batches = AtomicU64::new(0);
    let gate = RwLock::new(());
    let ended = Notify::new();
    let workers = async {
        let all = (0..run.jobs.max(1)).map(|_| worker(run, shared, space, &stop, &batches, &gate));
        let result = futures_util::future::try_join_all(all).await.map(|_| ());
        ended.notify_one();
        result
    };
    let coordinator = coordinate(client, run, shared, watermark, &gate, &ended, &stop);
    // Both go on at once: neither waits for the other's queries (a worker held between two
    // statements of its batch would keep its locks while the coordinator waited for them).
    // The coordinator is never dropped mid-way (a re-check may be in a transaction on the
    // caller's connection): it ends when the workers have.
    let (copied, coordinated) = tokio::join!(workers, coordinator);
    copied.and(coordinated)
}

/// The coordinating connection's part of a parallel run: every [`SETTLE_EVERY`], the
/// re-checks that are due and, when its interval has passed, the watermark, until the
/// workers have ended (`ended`). A failed re-check stops the workers.
///
/// Every batch holds the rule's row `FOR SHARE`, and a new batch's share lock does not
/// queue behind an update waiting for the row: with batches overlapping, publishing the
/// watermark would wait until the copying ended. So this process's workers wait between
/// batches (`gate`) while it publishes; other processes sharing the run can still hold it
/// back, for at most the publication's lock timeout (see [`state::publish_watermark`]).
async fn coordinate(
    client: &Client,
    run: &Run<'_>,
    shared: &Shared<'_>,
    watermark: &mut Watermark,
    gate: &RwLock<()>,
    ended: &Notify,
    stop: &AtomicBool,
) -> Result<(), Stop> {
    let mut last_report = None;
    loop {
        tokio::select! {
            _ = ended.notified() => return Ok(()),
            _ = tokio::time::sleep(SETTLE_EVERY) => {}
        }
        let settled = recheck::settle(
            client,
            run.sql,
            run.key,
            WaitPolicy {
                until_done: false,
                max_wait: None,
                report_every: run.report_every,
                report_after: run.report_after,
                last_report: &mut last_report,
            },
            &mut |w| shared.emit(&Event::Waiting(w)),
        )
        .await;
        match settled {
            Ok(s) => {
                let mut p = shared.progress.lock().unwrap_or_else(|p| p.into_inner());
                p.removed += s.removed;
                p.pending_batches = s.pending_batches;
            }
            Err(e) => {
                stop.store(true, Relaxed);
                return Err(Stop::Settle(e));
            }
        }
        if watermark.due() {
            let _alone = gate.write().await;
            watermark.publish(client, run.key).await;
        }
    }
}

async fn worker(
    run: &Run<'_>,
    shared: &Shared<'_>,
    space: i32,
    stop: &AtomicBool,
    batches: &AtomicU64,
    gate: &RwLock<()>,
) -> Result<(), Stop> {
    let mut client = catalog::connect(run.config).await.map_err(Stop::Connect)?;
    let result = async {
        while !stop.load(Relaxed) {
            let Some(part) = claim(&client, run.key, space).await.map_err(Stop::Query)? else {
                return Ok(());
            };
            let mut cursor = part.cursor.clone();
            loop {
                if stop.load(Relaxed) {
                    break;
                }
                let step = {
                    // Not while the coordinator publishes the watermark (see `coordinate`).
                    let _pass = gate.read().await;
                    state::batch(
                        &mut client,
                        run.key,
                        run.sql,
                        Range {
                            cursor: &cursor,
                            upper: &part.upper,
                            part: Some(part.part),
                        },
                        run.batch_size,
                    )
                    .await
                    .map_err(Stop::Batch)?
                };
                shared.batch(step.read, step.copied);
                let n = batches.fetch_add(1, Relaxed) + 1;
                if run.max_batches > 0 && n >= run.max_batches {
                    stop.store(true, Relaxed);
                }
                if step.read < run.batch_size || step.last.is_none() {
                    break;
                }
                cursor = step.last;
                if !run.throttle.is_zero() {
                    tokio::time::sleep(run.throttle).await;
                }
            }
            release(&client, space, part.part)
                .await
                .map_err(Stop::Query)?;
        }
        Ok(())
    }
    .await;
    if result.is_err() {
        stop.store(true, Relaxed);
    }
    result
}
