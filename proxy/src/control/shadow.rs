//! Shadow-read sampling: a share of the reads of ruled tables is re-run against the legacy
//! table and the target in one snapshot, and the overlap recorded.
//!
//! Sessions only draw a random number and, for a sampled read, hand its text to a bounded
//! queue (`try_send`: when the queue is full the sample is dropped and counted, never
//! waited for). One background task per proxy runs the comparisons on its own connection:
//! `BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY`, the session's search_path, settings
//! and role (`SET LOCAL ROLE`, so row level security filters both reads as it filtered the
//! application's; the side connection's user must be able to become that role, else the
//! sample fails and is counted), the read as written (legacy), the same
//! read with the ruled tables swapped for their targets, `COMMIT`; then one row in
//! `<store>.shadow_samples`: overlap |A ∩ B| / max(|A|, |B|) over the result rows (for an
//! `ORDER BY ... LIMIT K` read, the top-K overlap), whether the rows differ, one example
//! row, the statement's fingerprint. Errors are logged and counted; they never reach the
//! client. Samples beyond `shadow.retention` per table are pruned, except each shape's
//! newest [`SHAPE_SAMPLES_KEPT`], so a rare shape's comparisons outlive a hot shape's flood.
//!
//! Each comparison also times both statements, on the side connection, from sending the
//! statement to its last row (planning and execution as the application pays them, over
//! loopback; the same text conversion of the rows on both sides). `EXPLAIN ANALYZE` would
//! run each read once more and add its instrumentation's overhead, which differs with the
//! plan's node count. The order alternates (legacy first, then target first) so neither
//! side always reads cold caches. When the target took more than `shadow.slowdown_factor`
//! times the legacy time, both plans (`EXPLAIN`, no ANALYZE: nothing runs again) are kept
//! with the shape (once per shape per instance lifetime), for the report to show why.
//! Each comparison bumps its shape's counters in `<store>.shadow_shapes` (see
//! [`crate::control::shapes`]).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use tandem_rules::{overlap, quote_ident, ShadowPair};
use tokio::sync::mpsc;
use tokio_postgres::{Client, IsolationLevel, SimpleQueryMessage};
use tracing::{debug, warn};

use crate::config::Config;
use crate::control::catalog;
use crate::control::shapes::Shapes;
use crate::control::store::Store;
use crate::control::watch::RulesWatch;
use crate::wire::upstream::Connector;

/// Longest example row kept, in bytes.
const EXAMPLE_BYTES: usize = 500;

/// Samples each shape keeps whatever its table's `shadow.retention`.
pub const SHAPE_SAMPLES_KEPT: i64 = 100;

/// Shapes whose plans this instance has kept, at most (then it starts over).
const PLANS_REMEMBERED: usize = 10_000;

/// Longest error text kept with a shape.
const ERROR_CHARS: usize = 500;

/// One read to compare.
pub struct Job {
    /// Both forms of the read.
    pub pair: ShadowPair,
    /// The session's search_path (the read's bare names resolve through it).
    pub search_path: Arc<[String]>,
    /// The session's role and settings: both reads run with them, so a row level security
    /// policy (and anything else reading a setting) sees what the application's read saw.
    pub view: Arc<crate::session::mirror::SessionView>,
    /// Bind parameter values exactly as the client sent them, and their declared types
    /// (empty for a simple query).
    pub params: Vec<RawParam>,
    /// Parameter type OIDs the client declared in its Parse (0: let the server infer).
    pub param_types: Vec<u32>,
    /// Taken from its shape's coverage budget (else drawn at the rule's sample rate).
    pub coverage: bool,
}

/// A parameter value passed through byte for byte, in the client's own format.
#[derive(Debug, Clone)]
pub struct RawParam {
    /// The bytes, or `None` for NULL.
    pub value: Option<Vec<u8>>,
    /// Binary (else text) format.
    pub binary: bool,
}

impl tokio_postgres::types::ToSql for RawParam {
    fn to_sql(
        &self,
        _ty: &tokio_postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match &self.value {
            None => Ok(tokio_postgres::types::IsNull::Yes),
            Some(v) => {
                out.extend_from_slice(v);
                Ok(tokio_postgres::types::IsNull::No)
            }
        }
    }

    fn accepts(_ty: &tokio_postgres::types::Type) -> bool {
        true
    }

    tokio_postgres::types::to_sql_checked!();

    fn encode_format(&self, _ty: &tokio_postgres::types::Type) -> tokio_postgres::types::Format {
        if self.binary {
            tokio_postgres::types::Format::Binary
        } else {
            tokio_postgres::types::Format::Text
        }
    }
}

/// The sampling queue and its counters.
pub struct Sampler {
    tx: mpsc::Sender<Job>,
    /// Samples queued.
    pub queued: AtomicU64,
    /// Samples dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Comparisons recorded.
    pub recorded: AtomicU64,
    /// Comparisons that failed (the read erred, the connection broke...).
    pub failed: AtomicU64,
    /// Of the queued samples, those taken for a shape's coverage.
    pub coverage: AtomicU64,
    /// Read shapes and their comparison budgets (`shadow.coverage`).
    pub shapes: Option<Arc<Shapes>>,
}

impl Sampler {
    /// Starts the background comparer (and, with `shadow.coverage`, the shape counter's
    /// flush) on the current runtime.
    pub fn start(
        config: Arc<Config>,
        connector: Arc<Connector>,
        watch: Arc<RulesWatch>,
    ) -> Arc<Self> {
        let store = watch.store().clone();
        let (tx, rx) = mpsc::channel(config.shadow.queue_size.max(1));
        let shapes = config
            .shadow
            .coverage
            .then(|| Arc::new(Shapes::new(&config)));
        if let Some(shapes) = &shapes {
            tokio::spawn(crate::control::shapes::run(
                Arc::downgrade(shapes),
                Arc::clone(&config),
                Arc::clone(&connector),
                store.clone(),
                Arc::downgrade(&watch),
            ));
        }
        let sampler = Arc::new(Self {
            tx,
            queued: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            recorded: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            coverage: AtomicU64::new(0),
            shapes,
        });
        tokio::spawn(worker(
            rx,
            config,
            connector,
            store,
            Arc::downgrade(&sampler),
        ));
        sampler
    }

    /// Queues a read for comparison, or drops it when the queue is full.
    pub fn offer(&self, job: Job) {
        let coverage = job.coverage;
        match self.tx.try_send(job) {
            Ok(()) => {
                self.queued.fetch_add(1, Relaxed);
                if coverage {
                    self.coverage.fetch_add(1, Relaxed);
                }
            }
            Err(_) => {
                self.dropped.fetch_add(1, Relaxed);
            }
        }
    }
}

async fn worker(
    mut rx: mpsc::Receiver<Job>,
    config: Arc<Config>,
    connector: Arc<Connector>,
    store: Store,
    sampler: std::sync::Weak<Sampler>,
) {
    let mut client: Option<Client> = None;
    let mut since_prune = 0u64;
    // Which side runs first, alternating, so neither always reads cold caches.
    let mut legacy_first = true;
    // Shapes whose plans this instance has kept already.
    let mut planned: HashSet<String> = HashSet::new();
    while let Some(job) = rx.recv().await {
        let Some(counters) = sampler.upgrade() else {
            return;
        };
        if client.as_ref().is_none_or(Client::is_closed) {
            client = match catalog::side_connection(&config, &connector).await {
                Ok(c) => Some(c),
                Err(e) => {
                    warn!(error = %e, "shadow reads: cannot connect; sample dropped");
                    counters.failed.fetch_add(1, Relaxed);
                    continue;
                }
            };
        }
        let Some(c) = client.as_mut() else { continue };
        let shape = tandem_rules::query_shape(&job.pair.legacy_sql);
        let fingerprint = shape.fingerprint();
        if planned.len() >= PLANS_REMEMBERED {
            planned.clear();
        }
        let plans_wanted =
            (!planned.contains(&fingerprint)).then_some(config.shadow.slowdown_factor);
        legacy_first = !legacy_first;
        match compare(c, &job, !legacy_first, plans_wanted).await {
            Ok(sample) => {
                if sample.plans.is_some() {
                    planned.insert(fingerprint.clone());
                }
                match record(c, &store, &job, &shape, &sample).await {
                    Ok(()) => {
                        counters.recorded.fetch_add(1, Relaxed);
                        since_prune += 1;
                    }
                    Err(e) => {
                        counters.failed.fetch_add(1, Relaxed);
                        warn!(error = %catalog::describe(&e), "shadow reads: cannot record a sample");
                    }
                }
            }
            Err(e) => {
                counters.failed.fetch_add(1, Relaxed);
                let text = catalog::describe(&e);
                debug!(error = %text, table = %job.pair.table, "shadow read failed");
                if let Err(e) = record_failure(c, &store, &job, &shape, &text).await {
                    debug!(error = %catalog::describe(&e), "shadow reads: cannot record a failure");
                }
            }
        }
        if since_prune >= 100 {
            since_prune = 0;
            if let Err(e) = prune(c, &store, config.shadow.retention).await {
                debug!(error = %catalog::describe(&e), "shadow reads: prune failed");
            }
        }
    }
}

/// What one comparison found.
struct Sample {
    overlap: f64,
    differ: bool,
    example: Option<String>,
    legacy_rows: usize,
    target_rows: usize,
    /// Time of the legacy statement, milliseconds.
    legacy_ms: f64,
    /// Time of the target statement, milliseconds.
    target_ms: f64,
    /// Both plans (legacy, target), when the target was slower by the factor.
    plans: Option<(String, String)>,
}

/// Runs the read on both sides in one snapshot, timing each; `plans_wanted` is the
/// slowdown factor beyond which both plans are kept (`None`: this shape's are kept).
async fn compare(
    client: &mut Client,
    job: &Job,
    legacy_first: bool,
    plans_wanted: Option<f64>,
) -> Result<Sample, tokio_postgres::Error> {
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let path = job
        .search_path
        .iter()
        .map(|s| quote_ident(s))
        .collect::<Vec<_>>()
        .join(", ");
    if !path.is_empty() {
        tx.batch_execute(&format!("SET LOCAL search_path = {path}"))
            .await?;
    }
    for (name, value) in &job.view.settings {
        tx.execute("SELECT pg_catalog.set_config($1, $2, true)", &[name, value])
            .await?;
    }
    // The application's role, last: its policies apply to both reads. A side connection
    // that cannot become it fails the sample (counted, logged) rather than compare rows
    // the application could not see.
    tx.batch_execute(&format!("SET LOCAL ROLE {}", quote_ident(&job.view.role)))
        .await?;
    let ((legacy, legacy_ms), (target, target_ms)) = if legacy_first {
        let l = timed(rows(&tx, &job.pair.legacy_sql, job)).await?;
        let t = timed(rows(&tx, &job.pair.target_sql, job)).await?;
        (l, t)
    } else {
        let t = timed(rows(&tx, &job.pair.target_sql, job)).await?;
        let l = timed(rows(&tx, &job.pair.legacy_sql, job)).await?;
        (l, t)
    };
    let mut plans = None;
    let mut aborted = false;
    if plans_wanted.is_some_and(|factor| target_ms > factor * legacy_ms) {
        // A plan that cannot be had (EXPLAIN refused) does not spoil the comparison; it
        // aborts the read-only transaction, which then has nothing to keep.
        let both = async {
            let l = explain(&tx, &job.pair.legacy_sql, job).await?;
            let t = explain(&tx, &job.pair.target_sql, job).await?;
            Ok::<_, tokio_postgres::Error>((l, t))
        };
        match both.await {
            Ok(p) => plans = Some(p),
            Err(e) => {
                aborted = true;
                debug!(error = %catalog::describe(&e), "shadow reads: EXPLAIN failed");
            }
        }
    }
    if aborted {
        let _ = tx.rollback().await;
    } else {
        tx.commit().await?;
    }
    let mut a = legacy.clone();
    let mut b = target.clone();
    a.sort();
    b.sort();
    let differ = a != b;
    let example = differ.then(|| {
        let only_a = legacy
            .iter()
            .find(|r| !target.contains(r))
            .map(|r| format!("legacy only: {r}"));
        let only_b = target
            .iter()
            .find(|r| !legacy.contains(r))
            .map(|r| format!("target only: {r}"));
        let mut e = only_a
            .or(only_b)
            .unwrap_or_else(|| "same rows, different counts".into());
        if e.len() > EXAMPLE_BYTES {
            let mut cut = EXAMPLE_BYTES;
            while !e.is_char_boundary(cut) {
                cut -= 1;
            }
            e.truncate(cut);
        }
        e
    });
    Ok(Sample {
        overlap: overlap(&legacy, &target),
        differ,
        example,
        legacy_rows: legacy.len(),
        target_rows: target.len(),
        legacy_ms,
        target_ms,
        plans,
    })
}

/// `work`'s result and its wall time in milliseconds.
async fn timed<T, E>(work: impl std::future::Future<Output = Result<T, E>>) -> Result<(T, f64), E> {
    let started = Instant::now();
    let out = work.await?;
    Ok((out, started.elapsed().as_secs_f64() * 1000.0))
}

/// `EXPLAIN (FORMAT TEXT)` of the read, with the client's parameters when it had any.
async fn explain(
    tx: &tokio_postgres::Transaction<'_>,
    sql: &str,
    job: &Job,
) -> Result<String, tokio_postgres::Error> {
    let text = format!("EXPLAIN (FORMAT TEXT) {sql}");
    let lines: Vec<String> = if job.params.is_empty() {
        tx.simple_query(&text)
            .await?
            .iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
                _ => None,
            })
            .collect()
    } else {
        let statement = tx.prepare_typed(&text, &declared_types(job)).await?;
        let rows = tx.query_raw(&statement, job.params.iter()).await?;
        use futures_util::TryStreamExt;
        let rows: Vec<tokio_postgres::Row> = rows.try_collect().await?;
        rows.iter()
            .filter_map(|r| r.try_get::<_, String>(0).ok())
            .collect()
    };
    Ok(lines.join("\n"))
}

/// The parameter types the client declared, up to the first it left to the server.
fn declared_types(job: &Job) -> Vec<tokio_postgres::types::Type> {
    job.param_types
        .iter()
        .take_while(|oid| **oid != 0)
        .map(|oid| {
            tokio_postgres::types::Type::from_oid(*oid).unwrap_or(tokio_postgres::types::Type::TEXT)
        })
        .collect()
}

/// The read's rows, each as its record text; with the client's own parameter values when
/// it had any (the statement is prepared with the types the client declared).
async fn rows(
    tx: &tokio_postgres::Transaction<'_>,
    sql: &str,
    job: &Job,
) -> Result<Vec<String>, tokio_postgres::Error> {
    // The newline ends a trailing `--` comment of the client's text.
    let wrapped = format!("SELECT tandem_r::text FROM ({sql}\n) AS tandem_r");
    if !job.params.is_empty() {
        let types = declared_types(job);
        let statement = tx.prepare_typed(&wrapped, &types).await?;
        let rows = tx.query_raw(&statement, job.params.iter()).await?;
        use futures_util::TryStreamExt;
        let rows: Vec<tokio_postgres::Row> = rows.try_collect().await?;
        return Ok(rows
            .iter()
            .map(|r| {
                r.get::<_, Option<String>>(0)
                    .unwrap_or_else(|| "\\N".to_string())
            })
            .collect());
    }
    let messages = tx.simple_query(&wrapped).await?;
    Ok(messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("\\N").to_string()),
            _ => None,
        })
        .collect())
}

async fn record(
    client: &Client,
    store: &Store,
    job: &Job,
    shape: &tandem_rules::QueryShape,
    sample: &Sample,
) -> Result<(), tokio_postgres::Error> {
    let statement: String = job.pair.legacy_sql.chars().take(2000).collect();
    let text: String = shape.text.chars().take(2000).collect();
    let (legacy_plan, target_plan) = match &sample.plans {
        Some((l, t)) => (Some(l.as_str()), Some(t.as_str())),
        None => (None, None),
    };
    client
        .execute(
            &format!(
                "WITH s AS (INSERT INTO {samples} (rule_table, fingerprint, statement, k, overlap, \
                   rows_differ, example, legacy_rows, target_rows, legacy_ms, target_ms) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)) \
                 INSERT INTO {shapes} AS x (rule_table, fingerprint, shape, comparisons, \
                   full_overlap, differing, clean_streak, legacy_plan, target_plan, plans_at) \
                 VALUES ($1, $2, $12, 1, CASE WHEN $5 >= 1 THEN 1 ELSE 0 END, \
                   CASE WHEN $6 THEN 1 ELSE 0 END, CASE WHEN $5 >= 1 AND NOT $6 THEN 1 ELSE 0 END, \
                   $13, $14, CASE WHEN $13::text IS NULL THEN NULL ELSE now() END) \
                 ON CONFLICT (rule_table, fingerprint) DO UPDATE SET \
                   comparisons = x.comparisons + 1, \
                   full_overlap = x.full_overlap + excluded.full_overlap, \
                   differing = x.differing + excluded.differing, \
                   clean_streak = CASE WHEN excluded.clean_streak = 0 THEN 0 \
                     ELSE x.clean_streak + 1 END, \
                   legacy_plan = coalesce(excluded.legacy_plan, x.legacy_plan), \
                   target_plan = coalesce(excluded.target_plan, x.target_plan), \
                   plans_at = coalesce(excluded.plans_at, x.plans_at)",
                samples = store.qualified("shadow_samples"),
                shapes = store.qualified("shadow_shapes"),
            ),
            &[
                &job.pair.table.to_string(),
                &shape.fingerprint(),
                &statement,
                &job.pair.k.map(|k| k.min(i32::MAX as u64) as i32),
                &sample.overlap,
                &sample.differ,
                &sample.example,
                &(sample.legacy_rows.min(i32::MAX as usize) as i32),
                &(sample.target_rows.min(i32::MAX as usize) as i32),
                &sample.legacy_ms,
                &sample.target_ms,
                &text,
                &legacy_plan,
                &target_plan,
            ],
        )
        .await?;
    Ok(())
}

/// Counts a comparison that failed against its shape, with the error.
async fn record_failure(
    client: &Client,
    store: &Store,
    job: &Job,
    shape: &tandem_rules::QueryShape,
    error: &str,
) -> Result<(), tokio_postgres::Error> {
    let text: String = shape.text.chars().take(2000).collect();
    let error: String = error.chars().take(ERROR_CHARS).collect();
    client
        .execute(
            &format!(
                "INSERT INTO {shapes} AS x (rule_table, fingerprint, shape, failures, last_error) \
                 VALUES ($1, $2, $3, 1, $4) \
                 ON CONFLICT (rule_table, fingerprint) DO UPDATE SET \
                   failures = x.failures + 1, last_error = excluded.last_error",
                shapes = store.qualified("shadow_shapes"),
            ),
            &[
                &job.pair.table.to_string(),
                &shape.fingerprint(),
                &text,
                &error,
            ],
        )
        .await?;
    Ok(())
}

/// Keeps the newest `keep` samples per table, and the newest [`SHAPE_SAMPLES_KEPT`] of
/// each shape whatever their age.
async fn prune(client: &Client, store: &Store, keep: i64) -> Result<(), tokio_postgres::Error> {
    let table = store.qualified("shadow_samples");
    client
        .execute(
            &format!(
                "DELETE FROM {table} s USING (SELECT id FROM (SELECT id, \
                   row_number() OVER (PARTITION BY rule_table ORDER BY id DESC) AS by_table, \
                   row_number() OVER (PARTITION BY rule_table, fingerprint ORDER BY id DESC) AS by_shape \
                   FROM {table}) r WHERE by_table > $1 AND by_shape > $2) d \
                 WHERE s.id = d.id"
            ),
            &[&keep, &SHAPE_SAMPLES_KEPT],
        )
        .await?;
    Ok(())
}
