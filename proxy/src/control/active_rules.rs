//! The rules in force, with what sessions need to apply them fast.
//!
//! Built once from the config and the catalog, then shared read-only by every session:
//! the resolved [`RuleSet`], the pre-filter's name set, the database the rules belong to,
//! and a plan cache keyed by SQL text, so a repeated or prepared statement is planned once
//! across all sessions.

use std::sync::Arc;

use dashmap::DashMap;
use tandem_rules::{
    first_ruled_name, mentions_ruled_table, plan, Lexing, MirrorErrorPolicy, Plan, Reading,
    Rejection, RuleSet, RuledNames, SessionReading,
};

/// Plans kept before the cache is cleared (statements are usually a small, fixed set).
const PLAN_CACHE_LIMIT: usize = 10_000;

/// Rules ready for sessions.
#[derive(Debug)]
pub struct ActiveRules {
    /// The resolved rules.
    pub set: RuleSet,
    /// Bare names the pre-filter looks for.
    names: RuledNames,
    /// Database whose tables the rules name; sessions on other databases are not ruled.
    pub database: String,
    /// Plans by (SQL text, search_path).
    cache: DashMap<(String, Arc<[String]>), Arc<Plan>>,
}

impl ActiveRules {
    /// Wraps a resolved rule set for `database`.
    pub fn new(set: RuleSet, database: String) -> Self {
        let names = RuledNames::new(&set);
        Self {
            set,
            names,
            database,
            cache: DashMap::new(),
        }
    }

    /// Whether any rule mirrors anything.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The plan for a client's statement bytes as a session reading them as `reading` does:
    /// `None` when it names no ruled table however the session reads it (the common case,
    /// decided without parsing), a refusal when Tandem cannot be sure how the server reads
    /// it, else the (cached) plan of its text.
    pub fn plan_text(
        &self,
        src: &[u8],
        reading: SessionReading<'_>,
        search_path: &Arc<[String]>,
    ) -> Option<Arc<Plan>> {
        match tandem_rules::read(src, reading, &self.set, &self.names) {
            Reading::Unruled => None,
            Reading::Plannable(sql) => Some(self.cached(sql, search_path)),
            Reading::Unreadable(refusal) => Some(Arc::new(Plan::Reject(Rejection::new(
                refusal,
                MirrorErrorPolicy::Fail,
            )))),
        }
    }

    /// The bare name of a ruled table `src` may name, under either string syntax.
    pub fn ruled_name(&self, src: &[u8]) -> Option<Vec<u8>> {
        [true, false].into_iter().find_map(|standard| {
            let lexing = Lexing {
                standard_conforming_strings: standard,
                ..Lexing::default()
            };
            first_ruled_name(src, lexing, &self.names).map(<[u8]>::to_vec)
        })
    }

    /// Whether a statement of `src` that may change search_path comes before one naming a
    /// ruled table (see `tandem_rules::search_path_changes_before_ruled`).
    pub fn search_path_changes_before_ruled(
        &self,
        src: &[u8],
        lexing: Lexing,
        path_has_user: bool,
    ) -> bool {
        tandem_rules::search_path_changes_before_ruled(src, lexing, &self.names, path_has_user)
    }

    /// The plan for a statement read with the planner's defaults, or `None` when it names
    /// no ruled table (decided without parsing).
    pub fn plan(&self, sql: &str, search_path: &Arc<[String]>) -> Option<Arc<Plan>> {
        if !mentions_ruled_table(sql, &self.names) {
            return None;
        }
        Some(self.cached(sql, search_path))
    }

    /// The plan of a statement that names a ruled table, from the cache when planned before.
    fn cached(&self, sql: &str, search_path: &Arc<[String]>) -> Arc<Plan> {
        let key = (sql.to_string(), Arc::clone(search_path));
        if let Some(hit) = self.cache.get(&key) {
            return Arc::clone(&hit);
        }
        let planned = Arc::new(plan(sql, &self.set, search_path));
        if self.cache.len() >= PLAN_CACHE_LIMIT {
            self.cache.clear();
        }
        self.cache.insert(key, Arc::clone(&planned));
        planned
    }
}
