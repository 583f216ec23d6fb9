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
//! client. Samples beyond `shadow.retention` per table are pruned.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use tandem_rules::{overlap, quote_ident, ShadowPair};
use tokio::sync::mpsc;
use tokio_postgres::{Client, IsolationLevel, SimpleQueryMessage};
use tracing::{debug, warn};

use crate::config::Config;
use crate::control::catalog;
use crate::control::store::Store;
use crate::wire::upstream::Connector;

/// Longest example row kept, in bytes.
const EXAMPLE_BYTES: usize = 500;

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
}

impl Sampler {
    /// Starts the background comparer on the current runtime.
    pub fn start(config: Arc<Config>, connector: Arc<Connector>, store: Store) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(config.shadow.queue_size.max(1));
        let sampler = Arc::new(Self {
            tx,
            queued: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            recorded: AtomicU64::new(0),
            failed: AtomicU64::new(0),
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
        match self.tx.try_send(job) {
            Ok(()) => {
                self.queued.fetch_add(1, Relaxed);
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
        match compare(c, &job).await {
            Ok(sample) => match record(c, &store, &job, &sample).await {
                Ok(()) => {
                    counters.recorded.fetch_add(1, Relaxed);
                    since_prune += 1;
                }
                Err(e) => {
                    counters.failed.fetch_add(1, Relaxed);
                    warn!(error = %catalog::describe(&e), "shadow reads: cannot record a sample");
                }
            },
            Err(e) => {
                counters.failed.fetch_add(1, Relaxed);
                debug!(error = %catalog::describe(&e), table = %job.pair.table, "shadow read failed");
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
}

async fn compare(client: &mut Client, job: &Job) -> Result<Sample, tokio_postgres::Error> {
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
    let legacy = rows(&tx, &job.pair.legacy_sql, job).await?;
    let target = rows(&tx, &job.pair.target_sql, job).await?;
    tx.commit().await?;
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
    })
}

/// The read's rows, each as its record text; with the client's own parameter values when
/// it had any (the statement is prepared with the types the client declared).
async fn rows(
    tx: &tokio_postgres::Transaction<'_>,
    sql: &str,
    job: &Job,
) -> Result<Vec<String>, tokio_postgres::Error> {
    let wrapped = format!("SELECT tandem_r::text FROM ({sql}) AS tandem_r");
    if !job.params.is_empty() {
        let types: Vec<tokio_postgres::types::Type> = job
            .param_types
            .iter()
            .take_while(|oid| **oid != 0)
            .map(|oid| {
                tokio_postgres::types::Type::from_oid(*oid)
                    .unwrap_or(tokio_postgres::types::Type::TEXT)
            })
            .collect();
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
    sample: &Sample,
) -> Result<(), tokio_postgres::Error> {
    let statement: String = job.pair.legacy_sql.chars().take(2000).collect();
    client
        .execute(
            &format!(
                "INSERT INTO {} (rule_table, fingerprint, statement, k, overlap, rows_differ, \
                   example, legacy_rows, target_rows) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                store.qualified("shadow_samples")
            ),
            &[
                &job.pair.table.to_string(),
                &fingerprint(&job.pair.legacy_sql),
                &statement,
                &job.pair.k.map(|k| k.min(i32::MAX as u64) as i32),
                &sample.overlap,
                &sample.differ,
                &sample.example,
                &(sample.legacy_rows.min(i32::MAX as usize) as i32),
                &(sample.target_rows.min(i32::MAX as usize) as i32),
            ],
        )
        .await?;
    Ok(())
}

async fn prune(client: &Client, store: &Store, keep: i64) -> Result<(), tokio_postgres::Error> {
    let table = store.qualified("shadow_samples");
    client
        .execute(
            &format!(
                "DELETE FROM {table} s USING (SELECT rule_table, (SELECT id FROM {table} x \
                   WHERE x.rule_table = t.rule_table ORDER BY id DESC OFFSET $1 LIMIT 1) AS cut \
                   FROM (SELECT DISTINCT rule_table FROM {table}) t) c \
                 WHERE s.rule_table = c.rule_table AND s.id <= c.cut"
            ),
            &[&keep],
        )
        .await?;
    Ok(())
}

/// A statement's shape: literals replaced by `?`, whitespace folded, as 16 hex digits.
pub fn fingerprint(sql: &str) -> String {
    let mut shape = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    let mut last_space = false;
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                while let Some(d) = chars.next() {
                    if d == '\'' {
                        if chars.peek() == Some(&'\'') {
                            chars.next();
                        } else {
                            break;
                        }
                    }
                }
                shape.push('?');
                last_space = false;
            }
            d if d.is_ascii_digit()
                && !shape.ends_with(|p: char| p.is_alphanumeric() || p == '_') =>
            {
                while chars
                    .peek()
                    .is_some_and(|n| n.is_ascii_digit() || *n == '.')
                {
                    chars.next();
                }
                shape.push('?');
                last_space = false;
            }
            w if w.is_whitespace() => {
                if !last_space {
                    shape.push(' ');
                }
                last_space = true;
            }
            other => {
                shape.extend(other.to_lowercase());
                last_space = false;
            }
        }
    }
    let hash = shape.trim().bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn fingerprints_ignore_literals_and_spacing() {
        let f = super::fingerprint;
        assert_eq!(
            f("SELECT * FROM t WHERE id = 5 AND n = 'x'"),
            f("select *  from t where id = 77 and n = 'it''s'")
        );
        assert_ne!(f("SELECT a FROM t"), f("SELECT b FROM t"));
        assert_eq!(f("SELECT * FROM t2"), f("SELECT * FROM t2"));
        assert_ne!(f("SELECT * FROM t1"), f("SELECT * FROM t2"));
    }
}
