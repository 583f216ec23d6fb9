//! The rules in force, with what sessions need to apply them fast.
//!
//! Built once from the config and the catalog, then shared read-only by every session:
//! the resolved [`RuleSet`], the pre-filter's name set, the database the rules belong to,
//! and a [`PlanCache`] keyed by SQL text, so a repeated or prepared statement is planned once
//! across all sessions.

use std::sync::Arc;

use crate::control::plan_cache::{PlanCache, Shape};
use tandem_rules::literals::Template;
use tandem_rules::{
    first_ruled_name, mentions_ruled_table, plan, Lexing, MirrorErrorPolicy, Plan, Reading,
    Rejection, RuleSet, RuledNames, SessionReading,
};

/// Rules ready for sessions.
#[derive(Debug)]
pub struct ActiveRules {
    /// The resolved rules.
    pub set: RuleSet,
    /// Bare names the pre-filter looks for.
    names: RuledNames,
    /// Database whose tables the rules name; sessions on other databases are not ruled.
    pub database: String,
    /// [`RuleSet::layout`]: equal for two versions that differ only in backfill watermarks.
    pub layout: u64,
    /// [`RuleSet::watermarks`].
    pub watermarks: u64,
    /// Plans by (SQL text, search_path), bounded in entries and bytes.
    cache: PlanCache,
}

impl ActiveRules {
    /// Wraps a resolved rule set for `database`, with a plan cache of `cache_bytes`.
    pub fn new(set: RuleSet, database: String, cache_bytes: usize) -> Self {
        let names = RuledNames::new(&set);
        let layout = set.layout();
        let watermarks = set.watermarks();
        Self {
            set,
            names,
            database,
            layout,
            watermarks,
            cache: PlanCache::new(cache_bytes),
        }
    }

    /// The plan cache (for `SHOW STATS` and tests).
    pub fn cache(&self) -> &PlanCache {
        &self.cache
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
        if let Some(masked) = tandem_rules::literals::mask(sql) {
            match self
                .cache
                .from_template(masked.text, search_path, &masked.literals)
            {
                Shape::Planned(plan) => return plan,
                Shape::ByText => {}
                Shape::Unseen(key) => {
                    // First of its shape: plan it as written, and keep the masked plan as
                    // the shape's template only if it gives back exactly that plan.
                    let own = plan(sql, &self.set, search_path);
                    let template =
                        Template::new(plan(&key.0, &self.set, search_path), masked.literals.len())
                            .filter(|t| t.instantiate(&masked.literals).as_ref() == Some(&own));
                    self.cache.keep_template(key, template);
                    return Arc::new(own);
                }
            }
        }
        self.cache
            .get_or_plan(sql, search_path, || plan(sql, &self.set, search_path))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use tandem_rules::{Mode, ResolvedRule, Rule, TableName, TableShape};

    fn orders() -> ActiveRules {
        let columns: Vec<String> = ["id", "amount", "note"].map(String::from).to_vec();
        let shape = TableShape {
            legacy_columns: columns.clone(),
            target_columns: columns.clone(),
            mirrored_columns: columns,
            ..TableShape::default()
        };
        let rule = Rule::new(
            TableName::new(Some("public"), "orders"),
            Mode::DualWrite,
            vec!["id".into()],
        );
        let set = RuleSet::new(1, vec![ResolvedRule::new(rule, shape).unwrap()]).unwrap();
        ActiveRules::new(set, "app".into(), 64 * 1024 * 1024)
    }

    /// What a session spends on a 100,000-row, ~1.9 MB bulk INSERT, from its bytes to the
    /// plan (reading, pre-filter, planning; too large to cache). Measured by hand:
    /// `CARGO_TARGET_DIR=... cargo test --release -p tandem --lib bulk_insert_plan_text_timing -- --ignored --nocapture`
    #[test]
    #[ignore = "a measurement, run by hand in a release build"]
    fn bulk_insert_plan_text_timing() {
        let mut sql = String::from("INSERT INTO orders (id, amount, note) VALUES ");
        for i in 0..100_000 {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("({i}, {}, 'n')", i % 1000));
        }
        let rules = orders();
        let path: Arc<[String]> = Arc::from(vec!["public".to_string()]);
        for round in 0..3 {
            let start = Instant::now();
            let plan = rules.plan_text(sql.as_bytes(), SessionReading::default(), &path);
            let took = start.elapsed();
            assert!(matches!(plan.as_deref(), Some(Plan::Rewritten(_))));
            println!(
                "round {round}: {} bytes planned in {:.1} ms",
                sql.len(),
                took.as_secs_f64() * 1e3
            );
        }
    }

    /// A statement sent with other literals is planned once per shape: its plan is the
    /// template's with its own literals, equal to planning it as written.
    #[test]
    fn statements_of_one_shape_share_a_template() {
        let rules = orders();
        let path: Arc<[String]> = Arc::from(vec!["public".to_string()]);
        let shapes = [
            (
                "UPDATE orders SET note = 'a' WHERE id = 1",
                "UPDATE orders SET note = 'b' WHERE id = 42",
            ),
            (
                "INSERT INTO orders (id, amount, note) VALUES (7, 1.5, 'x') RETURNING id",
                "INSERT INTO orders (id, amount, note) VALUES (8, 2, 'y''z') RETURNING id",
            ),
            (
                "DELETE FROM orders WHERE id = 3 AND note <> 'it''s'",
                "DELETE FROM orders WHERE id = 4 AND note <> ''",
            ),
        ];
        for (first, second) in shapes {
            let a = rules.plan(first, &path).unwrap();
            let entries = rules.cache.len();
            let b = rules.plan(second, &path).unwrap();
            assert_eq!(
                *b,
                plan(second, &rules.set, &path),
                "from the template: {second}"
            );
            assert_ne!(*a, *b, "{first}");
            assert_eq!(rules.cache.len(), entries, "no plan by text for {second}");
        }
        // A shape whose masked text reads otherwise (a type modifier) is planned by text.
        let typmod = "UPDATE orders SET note = note::varchar(10) WHERE id = 1";
        let p = rules.plan(typmod, &path).unwrap();
        assert_eq!(*p, plan(typmod, &rules.set, &path));
        let again = typmod.replace("id = 1", "id = 2");
        assert_eq!(
            *rules.plan(&again, &path).unwrap(),
            plan(&again, &rules.set, &path)
        );
    }

    /// Tandem's CPU per mirrored simple-protocol statement on a template hit (other literals
    /// each time), against an exact-text hit and planning by text. Measured by hand:
    /// `CARGO_TARGET_DIR=... cargo test --release -p tandem --lib template_hit_timing -- --ignored --nocapture`
    #[test]
    #[ignore = "a measurement, run by hand in a release build"]
    fn template_hit_timing() {
        let rules = orders();
        let path: Arc<[String]> = Arc::from(vec!["public".to_string()]);
        let n = 20_000;
        let statement = |i: usize| {
            format!(
                "UPDATE orders SET amount = amount + {i} WHERE id = {}",
                i * 7
            )
        };
        rules.plan(&statement(0), &path);
        let start = Instant::now();
        for i in 1..=n {
            rules.plan(&statement(i), &path).unwrap();
        }
        let template = start.elapsed().as_secs_f64() * 1e6 / n as f64;
        let fixed = statement(1);
        let start = Instant::now();
        for _ in 0..n {
            rules.plan(&fixed, &path).unwrap();
        }
        let exact = start.elapsed().as_secs_f64() * 1e6 / n as f64;
        let start = Instant::now();
        for i in 0..2000 {
            let _ = plan(&statement(i), &rules.set, &path);
        }
        let by_text = start.elapsed().as_secs_f64() * 1e6 / 2000.0;
        println!(
            "per statement: template hit {template:.2} us, same text {exact:.2} us, planned by text {by_text:.2} us"
        );
    }
}
