//! The plan cache every session shares, bounded in entries and in bytes.
//!
//! Applications send the same few statements again and again, so a plan is kept by
//! (SQL text, search_path) and a repeated or prepared statement is planned once across all
//! sessions. A statement's text can be large, though (a 1 MB INSERT is kept twice: as the
//! key and inside its rewritten plan), so the cache is bounded by
//! `limits.plan_cache_bytes` as well as by entry count. When an insert would pass either
//! bound the whole cache is emptied first: an application's working set refills it at
//! once, and an LRU would put a lock or a write on every hit. A statement over 1/64 of the
//! byte budget is never cached: planning it is linear in its size, and such statements are
//! rarely sent twice (a bulk INSERT carries its values).
//!
//! Next to the plans, templates by statement shape (literals masked, see
//! `tandem_rules::literals`): a simple-protocol statement sent with other literals each time
//! is planned once per shape. A shape whose template did not reproduce its first
//! statement's own plan is remembered as such and planned by text, as before.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use dashmap::DashMap;
use tandem_rules::literals::Template;
use tandem_rules::Plan;

/// Plans kept before the cache is emptied.
const MAX_ENTRIES: usize = 10_000;

/// What an entry costs beyond its text and its plan's SQL: the map slot, the `Arc`s, the
/// plan's fixed fields.
const ENTRY_OVERHEAD: usize = 256;

/// (SQL text, search_path): what a plan depends on.
pub type Key = (String, Arc<[String]>);

/// What the template cache knows of a statement's shape.
pub enum Shape {
    /// The statement's plan, from its shape's template.
    Planned(Arc<Plan>),
    /// Not seen yet: plan it, then keep the shape's template under this key.
    Unseen(Key),
    /// The shape is planned by text (its template did not give back its own plan).
    ByText,
}

/// Plans by (SQL text, search_path).
#[derive(Debug)]
pub struct PlanCache {
    /// The plans.
    map: DashMap<Key, Arc<Plan>>,
    /// Templates by (masked text, search_path); `None`: the shape is planned by text.
    templates: DashMap<Key, Option<Arc<Template>>>,
    /// What the entries cost, as [`cost`] counts it (approximate under races, never far).
    bytes: AtomicUsize,
    /// The byte budget; 0: nothing is cached.
    max_bytes: usize,
}

impl PlanCache {
    /// An empty cache holding at most `max_bytes`.
    pub fn new(max_bytes: usize) -> Self {
        Self {
            map: DashMap::new(),
            templates: DashMap::new(),
            bytes: AtomicUsize::new(0),
            max_bytes,
        }
    }

    /// The cached plan of `sql` under `search_path`, or `plan()`'s, kept when it fits.
    pub fn get_or_plan(
        &self,
        sql: &str,
        search_path: &Arc<[String]>,
        plan: impl FnOnce() -> Plan,
    ) -> Arc<Plan> {
        // Checked before the key is copied: a large statement costs no copy and no hash.
        if sql.len() > self.max_bytes / 64 {
            return Arc::new(plan());
        }
        let key = (sql.to_string(), Arc::clone(search_path));
        if let Some(hit) = self.map.get(&key) {
            return Arc::clone(&hit);
        }
        let planned = Arc::new(plan());
        let cost = cost(sql, &planned);
        if self.map.len() >= MAX_ENTRIES || self.bytes.load(Relaxed) + cost > self.max_bytes {
            self.map.clear();
            self.templates.clear();
            self.bytes.store(0, Relaxed);
        }
        self.bytes.fetch_add(cost, Relaxed);
        if let Some(replaced) = self.map.insert(key, Arc::clone(&planned)) {
            // Another session planned it meanwhile: count it once.
            let _ = self
                .bytes
                .fetch_update(Relaxed, Relaxed, |b| Some(b.saturating_sub(cost)));
            drop(replaced);
        }
        planned
    }

    /// The plan of a statement whose masked text is `masked` with `literals`, from its
    /// shape's template; [`Shape::Unseen`] hands the key back for
    /// [`keep_template`](Self::keep_template).
    pub fn from_template(
        &self,
        masked: String,
        search_path: &Arc<[String]>,
        literals: &[String],
    ) -> Shape {
        if masked.len() > self.max_bytes / 64 {
            return Shape::ByText;
        }
        let key = (masked, Arc::clone(search_path));
        match self.templates.get(&key) {
            None => Shape::Unseen(key),
            Some(entry) => match entry
                .as_ref()
                .and_then(|template| template.instantiate(literals))
            {
                Some(plan) => Shape::Planned(Arc::new(plan)),
                None => Shape::ByText,
            },
        }
    }

    /// Keeps a shape's template (`None`: the shape is planned by text from now on).
    pub fn keep_template(&self, key: Key, template: Option<Template>) {
        let cost =
            key.0.len() + ENTRY_OVERHEAD + template.as_ref().map_or(0, |t| cost("", t.plan()));
        if self.templates.len() >= MAX_ENTRIES || self.bytes.load(Relaxed) + cost > self.max_bytes {
            self.map.clear();
            self.templates.clear();
            self.bytes.store(0, Relaxed);
        }
        self.bytes.fetch_add(cost, Relaxed);
        if self.templates.insert(key, template.map(Arc::new)).is_some() {
            let _ = self
                .bytes
                .fetch_update(Relaxed, Relaxed, |b| Some(b.saturating_sub(cost)));
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// What the entries cost, in bytes (see [`cost`]).
    pub fn bytes(&self) -> usize {
        self.bytes.load(Relaxed)
    }
}

/// What keeping `plan` for `sql` costs: the key's text, the SQL the plan holds, overhead.
fn cost(sql: &str, plan: &Plan) -> usize {
    let held = match plan {
        Plan::Rewritten(statements) => statements
            .iter()
            .map(|s| s.sql.len() + ENTRY_OVERHEAD)
            .sum(),
        Plan::CopyIn(copy) => copy.sql.len() + copy.options.len() + ENTRY_OVERHEAD,
        Plan::Reject(r) => {
            r.message.len()
                + r.detail.as_ref().map_or(0, String::len)
                + r.hint.as_ref().map_or(0, String::len)
        }
        _ => 0,
    };
    sql.len() + held + ENTRY_OVERHEAD
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_rules::{ResponseFix, StatementPlan};

    fn rewritten(sql: &str) -> Plan {
        Plan::Rewritten(vec![StatementPlan {
            sql: format!("WITH tandem_w AS ({sql} RETURNING *) SELECT FROM tandem_w"),
            response: ResponseFix::None,
            rule_table: None,
            policy: None,
        }])
    }

    #[test]
    fn large_statements_stay_within_the_byte_budget() {
        let cache = PlanCache::new(1024 * 1024);
        let path: Arc<[String]> = Arc::from(vec!["public".to_string()]);
        for i in 0..2_000 {
            // ~12 KB each, under the per-statement cap of 16 KB.
            let sql = format!("INSERT INTO orders VALUES ({i}, '{}')", "x".repeat(12_000));
            cache.get_or_plan(&sql, &path, || rewritten(&sql));
            assert!(cache.bytes() <= 1024 * 1024, "{} bytes", cache.bytes());
        }
        assert!(!cache.is_empty());
        let held: usize = cache.map.iter().map(|e| cost(&e.key().0, e.value())).sum();
        assert_eq!(held, cache.bytes(), "the count matches the entries");
    }

    #[test]
    fn a_statement_over_a_64th_of_the_budget_is_not_cached() {
        let cache = PlanCache::new(64 * 1024);
        let path: Arc<[String]> = Arc::from(Vec::new());
        let sql = format!("INSERT INTO orders VALUES ('{}')", "x".repeat(1024));
        let first = cache.get_or_plan(&sql, &path, || rewritten(&sql));
        assert!(cache.is_empty());
        assert_eq!(cache.bytes(), 0);
        let again = cache.get_or_plan(&sql, &path, || rewritten(&sql));
        assert!(!Arc::ptr_eq(&first, &again), "planned again");
    }

    #[test]
    fn a_repeated_statement_is_planned_once() {
        let cache = PlanCache::new(64 * 1024 * 1024);
        let path: Arc<[String]> = Arc::from(Vec::new());
        let first = cache.get_or_plan("SELECT 1", &path, || rewritten("SELECT 1"));
        let again = cache.get_or_plan("SELECT 1", &path, || panic!("planned twice"));
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn a_zero_budget_caches_nothing() {
        let cache = PlanCache::new(0);
        let path: Arc<[String]> = Arc::from(Vec::new());
        cache.get_or_plan("SELECT 1", &path, || Plan::Passthrough);
        assert!(cache.is_empty());
    }
}
