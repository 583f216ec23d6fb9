//! Read shapes: how often each shape of read runs, so that every hot or regular shape gets
//! its shadow comparisons, not only the ones random sampling happens to draw.
//!
//! Sessions call [`Shapes::seen`] for each read of a ruled table while a rule samples:
//! one lookup in a sharded map under a read lock (a relaxed counter bump), and for a shape
//! whose comparison budget is not spent, one atomic decrement that says "compare this
//! one". A shape seen for the first time is described (its table, by the shadow pair the
//! session builds anyway for a sample; its normalised text) outside any lock and inserted
//! under its shard's write lock; beyond `shadow.max_shapes` new shapes are only counted as
//! untracked. No lock is ever held across I/O.
//!
//! A background task per instance ([`run`]) wakes every `shadow.flush_ms`: it takes each
//! shape's count since the last flush (`swap(0)`) and adds it to `<store>.shadow_shapes`
//! in one upsert, so all instances' counts meet in the store; then it reads back, for the
//! fleet's counts, which shapes still want comparisons — the top `shadow.top_k` of each
//! table by executions, and any shape executed at least `shadow.min_executions` times,
//! until each has `shadow.min_comparisons` at full overlap in a row (a shape whose newest
//! comparison differed is re-checked once per flush: the backfill may have fixed it) —
//! and sets each tracked shape's budget to what it still wants. A shape no instance has reported yet starts with the full budget, so a
//! rare read (month-end, an admin screen) is compared the first times it runs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use tandem_rules::{Mode, TableName};
use tokio_postgres::Client;
use tracing::{debug, warn};

use crate::config::Config;
use crate::control::catalog;
use crate::control::store::Store;
use crate::control::watch::RulesWatch;
use crate::wire::upstream::Connector;

/// Shards of the map: sessions on different worker threads rarely meet on one lock.
const SHARDS: usize = 16;

/// Longest shape text kept, in characters.
const SHAPE_CHARS: usize = 2000;

/// Flushes a shape may go without an execution before this instance forgets it.
const IDLE_FLUSHES: u32 = 600;

/// Most budgets read back from the store per refresh.
const BUDGETS_READ: i64 = 100_000;

/// One tracked shape.
struct Entry {
    /// Executions since the last flush.
    count: AtomicU64,
    /// Comparisons still wanted; sessions take them one at a time.
    budget: AtomicU32,
    /// Consecutive flushes without an execution.
    idle: AtomicU32,
    /// The ruled table it reads, or `None` for a read that is never compared (not one
    /// pure read of a table ruled in dual_write, union_read or cutover).
    table: Option<TableName>,
    /// The normalised text, cut to `SHAPE_CHARS`.
    text: String,
}

impl Entry {
    /// Takes one comparison from the budget, if any is left.
    fn take(&self) -> bool {
        self.budget
            .fetch_update(Relaxed, Relaxed, |b| b.checked_sub(1))
            .is_ok()
    }
}

/// What a session says about a shape seen for the first time.
pub struct Description {
    /// The ruled table it reads (`None`: never compared).
    pub table: Option<TableName>,
    /// Its normalised text.
    pub text: String,
}

/// This instance's read shapes.
pub struct Shapes {
    shards: Vec<RwLock<HashMap<u64, Entry>>>,
    /// Shapes tracked now.
    len: AtomicUsize,
    /// `shadow.max_shapes`.
    max: usize,
    /// `shadow.min_comparisons`: the budget of a shape the store has not seen.
    first_budget: u32,
    /// What the store last said each shape still wants (a new entry starts from it).
    known: RwLock<Arc<HashMap<u64, u32>>>,
    /// New shapes not tracked because the map was full.
    pub untracked: AtomicU64,
    /// Flushes to the store that failed.
    pub flush_failures: AtomicU64,
}

impl Shapes {
    /// An empty tracker sized by `[shadow]`.
    pub fn new(config: &Config) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            len: AtomicUsize::new(0),
            max: config.shadow.max_shapes,
            first_budget: u32::try_from(config.shadow.min_comparisons).unwrap_or(u32::MAX),
            known: RwLock::new(Arc::new(HashMap::new())),
            untracked: AtomicU64::new(0),
            flush_failures: AtomicU64::new(0),
        }
    }

    /// Shapes tracked now.
    pub fn tracked(&self) -> usize {
        self.len.load(Relaxed)
    }

    fn shard(&self, hash: u64) -> &RwLock<HashMap<u64, Entry>> {
        &self.shards[(hash % SHARDS as u64) as usize]
    }

    /// Counts one execution of the shape `hash`; `describe` is called (outside any lock)
    /// only for a shape not tracked yet. With `may_compare`, takes one comparison from the
    /// shape's budget and says whether it got one.
    pub fn seen(
        &self,
        hash: u64,
        may_compare: bool,
        describe: impl FnOnce() -> Description,
    ) -> bool {
        {
            let map = self.shard(hash).read().unwrap_or_else(|e| e.into_inner());
            if let Some(entry) = map.get(&hash) {
                entry.count.fetch_add(1, Relaxed);
                return may_compare && entry.take();
            }
        }
        if self.len.load(Relaxed) >= self.max {
            self.untracked.fetch_add(1, Relaxed);
            return false;
        }
        let Description { table, mut text } = describe();
        if let Some((cut, _)) = text.char_indices().nth(SHAPE_CHARS) {
            text.truncate(cut);
        }
        let budget = match &table {
            Some(_) => {
                let known = self.known.read().unwrap_or_else(|e| e.into_inner());
                known.get(&hash).copied().unwrap_or(self.first_budget)
            }
            None => 0,
        };
        let mut map = self.shard(hash).write().unwrap_or_else(|e| e.into_inner());
        let entry = map.entry(hash).or_insert_with(|| {
            self.len.fetch_add(1, Relaxed);
            Entry {
                count: AtomicU64::new(0),
                budget: AtomicU32::new(budget),
                idle: AtomicU32::new(0),
                table,
                text,
            }
        });
        entry.count.fetch_add(1, Relaxed);
        may_compare && entry.take()
    }

    /// Takes the counts since the last flush of the shapes of `sampled` tables, and
    /// forgets shapes idle for `IDLE_FLUSHES` flushes.
    fn drain(&self, sampled: &[TableName]) -> Vec<Delta> {
        let mut out = Vec::new();
        for shard in &self.shards {
            let mut idle = Vec::new();
            {
                let map = shard.read().unwrap_or_else(|e| e.into_inner());
                for (hash, entry) in map.iter() {
                    let n = entry.count.swap(0, Relaxed);
                    if n == 0 {
                        if entry.idle.fetch_add(1, Relaxed) + 1 >= IDLE_FLUSHES {
                            idle.push(*hash);
                        }
                        continue;
                    }
                    entry.idle.store(0, Relaxed);
                    if let Some(table) = entry.table.as_ref().filter(|t| sampled.contains(t)) {
                        out.push(Delta {
                            table: table.to_string(),
                            fingerprint: tandem_rules::fingerprint::hex(*hash),
                            text: entry.text.clone(),
                            executions: i64::try_from(n).unwrap_or(i64::MAX),
                        });
                    }
                }
            }
            if !idle.is_empty() {
                let mut map = shard.write().unwrap_or_else(|e| e.into_inner());
                for hash in idle {
                    if map.get(&hash).is_some_and(|e| {
                        e.count.load(Relaxed) == 0 && e.idle.load(Relaxed) >= IDLE_FLUSHES
                    }) {
                        map.remove(&hash);
                        self.len.fetch_sub(1, Relaxed);
                    }
                }
            }
        }
        out
    }

    /// Sets every tracked shape's budget to what the store says it still wants (a shape
    /// the store does not list keeps its budget: it was seen after the flush).
    fn set_budgets(&self, wanted: HashMap<u64, u32>) {
        for shard in &self.shards {
            let map = shard.read().unwrap_or_else(|e| e.into_inner());
            for (hash, entry) in map.iter() {
                if let Some(b) = wanted.get(hash) {
                    entry.budget.store(*b, Relaxed);
                }
            }
        }
        *self.known.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(wanted);
    }
}

/// Executions of one shape since the last flush.
struct Delta {
    table: String,
    fingerprint: String,
    text: String,
    executions: i64,
}

/// The tables whose rules sample reads now (their shapes are flushed and covered).
fn sampled_tables(watch: &RulesWatch) -> Vec<TableName> {
    watch
        .current()
        .set
        .rules
        .iter()
        .filter(|r| {
            r.rule.sample_rate > 0.0
                && matches!(
                    r.rule.mode,
                    Mode::DualWrite | Mode::UnionRead | Mode::Cutover
                )
        })
        .map(|r| r.rule.table.clone())
        .collect()
}

/// Flushes counts and refreshes budgets every `shadow.flush_ms`, until the tracker is
/// dropped.
pub async fn run(
    shapes: Weak<Shapes>,
    config: Arc<Config>,
    connector: Arc<Connector>,
    store: Store,
    watch: Weak<RulesWatch>,
) {
    let mut client: Option<Client> = None;
    let period = Duration::from_millis(config.shadow.flush_ms);
    loop {
        tokio::time::sleep(period).await;
        let (Some(shapes), Some(watch)) = (shapes.upgrade(), watch.upgrade()) else {
            return;
        };
        let sampled = sampled_tables(&watch);
        drop(watch);
        let deltas = shapes.drain(&sampled);
        if sampled.is_empty() {
            continue;
        }
        if client.as_ref().is_none_or(Client::is_closed) {
            client = match catalog::side_connection(&config, &connector).await {
                Ok(c) => Some(c),
                Err(e) => {
                    shapes.flush_failures.fetch_add(1, Relaxed);
                    warn!(error = %e, "read shapes: cannot connect; counts of this period lost");
                    continue;
                }
            };
        }
        let Some(c) = client.as_ref() else { continue };
        if let Err(e) = flush(c, &store, &deltas).await {
            shapes.flush_failures.fetch_add(1, Relaxed);
            warn!(error = %catalog::describe(&e), "read shapes: cannot write counts");
            continue;
        }
        match budgets(c, &store, &config, &sampled).await {
            Ok(wanted) => shapes.set_budgets(wanted),
            Err(e) => debug!(error = %catalog::describe(&e), "read shapes: cannot read budgets"),
        }
    }
}

/// Adds this period's counts to `<store>.shadow_shapes`, in one statement.
async fn flush(
    client: &Client,
    store: &Store,
    deltas: &[Delta],
) -> Result<(), tokio_postgres::Error> {
    if deltas.is_empty() {
        return Ok(());
    }
    let tables: Vec<&str> = deltas.iter().map(|d| d.table.as_str()).collect();
    let fingerprints: Vec<&str> = deltas.iter().map(|d| d.fingerprint.as_str()).collect();
    let texts: Vec<&str> = deltas.iter().map(|d| d.text.as_str()).collect();
    let executions: Vec<i64> = deltas.iter().map(|d| d.executions).collect();
    let shapes = store.qualified("shadow_shapes");
    client
        .execute(
            &format!(
                "INSERT INTO {shapes} AS s (rule_table, fingerprint, shape, executions) \
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[]) \
                 ON CONFLICT (rule_table, fingerprint) DO UPDATE \
                   SET executions = s.executions + excluded.executions, last_seen = now()"
            ),
            &[&tables, &fingerprints, &texts, &executions],
        )
        .await?;
    Ok(())
}

/// What each shape of the sampled tables still wants, by the fleet's counts: the top K of
/// each table and any shape run `min_executions` times want `min_comparisons` at full
/// overlap in a row (one per refresh while the newest differed; shapes whose comparisons
/// failed that often are left alone); others want none.
async fn budgets(
    client: &Client,
    store: &Store,
    config: &Config,
    sampled: &[TableName],
) -> Result<HashMap<u64, u32>, tokio_postgres::Error> {
    let tables: Vec<String> = sampled.iter().map(ToString::to_string).collect();
    let shapes = store.qualified("shadow_shapes");
    let rows = client
        .query(
            &format!(
                "SELECT fingerprint, CASE WHEN (rank <= $2 OR executions >= $3) AND failures < $4 \
                   THEN CASE WHEN clean_streak = 0 AND differing > 0 THEN 1 \
                     ELSE greatest($4 - clean_streak, 0) END ELSE 0 END::int8 \
                 FROM (SELECT fingerprint, executions, clean_streak, differing, failures, row_number() OVER \
                   (PARTITION BY rule_table ORDER BY executions DESC, fingerprint) AS rank \
                   FROM {shapes} WHERE rule_table = ANY($1)) s \
                 LIMIT {BUDGETS_READ}"
            ),
            &[
                &tables,
                &config.shadow.top_k,
                &config.shadow.min_executions,
                &config.shadow.min_comparisons,
            ],
        )
        .await?;
    let mut wanted = HashMap::with_capacity(rows.len());
    for row in rows {
        let fingerprint: String = row.get(0);
        let budget: i64 = row.get(1);
        if let Ok(hash) = u64::from_str_radix(&fingerprint, 16) {
            let budget = u32::try_from(budget).unwrap_or(u32::MAX);
            let slot = wanted.entry(hash).or_insert(0);
            *slot = (*slot).max(budget);
        }
    }
    Ok(wanted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn described(table: Option<&str>) -> Description {
        Description {
            table: table.map(|t| TableName::new(Some("public"), t)),
            text: "select * from t where id = ?".into(),
        }
    }

    #[test]
    fn a_new_shape_gets_its_budget_and_counts_accumulate() {
        let mut config = Config::default();
        config.shadow.min_comparisons = 2;
        config.shadow.max_shapes = 2;
        let shapes = Shapes::new(&config);
        let mut described_times = 0;
        let mut compared = 0;
        for _ in 0..5 {
            if shapes.seen(7, true, || {
                described_times += 1;
                described(Some("t"))
            }) {
                compared += 1;
            }
        }
        assert_eq!((described_times, compared), (1, 2));
        // A read that is never compared is counted, with no budget.
        assert!(!shapes.seen(8, true, || described(None)));
        // Full: a third shape is untracked.
        assert!(!shapes.seen(9, true, || described(Some("t"))));
        assert_eq!(shapes.untracked.load(Relaxed), 1);
        let t = TableName::new(Some("public"), "t");
        let deltas = shapes.drain(std::slice::from_ref(&t));
        assert_eq!(
            deltas.len(),
            1,
            "only the comparable shape of a sampled table"
        );
        assert_eq!(deltas[0].executions, 5);
        assert!(shapes.drain(&[t]).is_empty(), "counts are taken once");
        // The store says two more comparisons are wanted.
        shapes.set_budgets(HashMap::from([(7, 2)]));
        assert!(shapes.seen(7, true, || described(Some("t"))));
        assert!(
            !shapes.seen(7, false, || described(Some("t"))),
            "not when it may not"
        );
        assert!(shapes.seen(7, true, || described(Some("t"))));
        assert!(!shapes.seen(7, true, || described(Some("t"))));
    }
}
