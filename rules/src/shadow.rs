//! Shadow reads: the same read against the legacy table and against the target.
//!
//! Before cutover an operator wants evidence that the target answers the application's own
//! reads as the legacy table does. The proxy samples reads of ruled tables and re-runs each
//! one twice off the hot path, in one snapshot: as written (the legacy table) and with every
//! ruled table swapped for its target (the `cutover` read rewrite). This module decides
//! whether a statement can be re-run safely — one pure read, no data-modifying part, no row
//! locks — and builds both texts; the proxy runs them in a READ ONLY transaction, so even a
//! side-effecting function in the read fails instead of running twice.

use std::ops::ControlFlow;

use sqlparser::ast::{Expr, Statement, Value, Visit, Visitor};

use crate::name::TableName;
use crate::parse::parse_statement;
use crate::rule::Mode;
use crate::ruleset::RuleSet;
use crate::writes::Ctx;

/// One read, in both forms.
#[derive(Debug, Clone, PartialEq)]
pub struct ShadowPair {
    /// The first ruled table the read uses.
    pub table: TableName,
    /// The read as the client wrote it: it reads the legacy tables.
    pub legacy_sql: String,
    /// The same read with each ruled table swapped for its target.
    pub target_sql: String,
    /// `LIMIT K` of a top-level `ORDER BY ... LIMIT K`, when there is one.
    pub k: Option<u64>,
}

/// Both forms of `sql`, when it is one pure read of a table ruled in `dual_write`,
/// `union_read` or `cutover`.
pub fn shadow_pair(sql: &str, rules: &RuleSet, search_path: &[String]) -> Option<ShadowPair> {
    let stmt = parse_statement(sql).ok()?;
    let Statement::Query(query) = &stmt else {
        return None;
    };
    if nested_statements(&stmt) || !crate::parse::renders_faithfully(&stmt) {
        return None;
    }
    // Every ruled table read as if in cutover: the target alone.
    let mut as_target = rules.clone();
    for rule in &mut as_target.rules {
        if matches!(
            rule.rule.mode,
            Mode::DualWrite | Mode::UnionRead | Mode::Cutover
        ) {
            rule.rule.mode = Mode::Cutover;
        } else {
            rule.rule.mode = Mode::Off;
        }
    }
    if !query.locks.is_empty() {
        return None;
    }
    let ctx = Ctx {
        rules: &as_target,
        search_path,
    };
    let plan = crate::reads::rewrite(&stmt, ctx)?;
    let k = match (&query.order_by, &query.limit_clause) {
        (
            Some(_),
            Some(sqlparser::ast::LimitClause::LimitOffset {
                limit: Some(Expr::Value(v)),
                ..
            }),
        ) => match &v.value {
            Value::Number(n, _) => n.parse().ok(),
            _ => None,
        },
        _ => None,
    };
    Some(ShadowPair {
        table: plan.rule_table?,
        legacy_sql: sql.trim().trim_end_matches(';').to_string(),
        target_sql: plan.sql,
        k,
    })
}

/// Does the statement contain another statement (a data-modifying CTE, say)?
fn nested_statements(stmt: &Statement) -> bool {
    struct Count(usize);
    impl Visitor for Count {
        type Break = ();
        fn pre_visit_statement(&mut self, _: &Statement) -> ControlFlow<()> {
            self.0 += 1;
            ControlFlow::Continue(())
        }
    }
    let mut count = Count(0);
    let _ = stmt.visit(&mut count);
    count.0 > 1
}

/// The overlap of two row multisets: |A ∩ B| / max(|A|, |B|) (1 when both are empty).
pub fn overlap(a: &[String], b: &[String]) -> f64 {
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    let mut counts = std::collections::HashMap::<&str, i64>::new();
    for row in a {
        *counts.entry(row).or_default() += 1;
    }
    let mut common = 0usize;
    for row in b {
        if let Some(n) = counts.get_mut(row.as_str()) {
            if *n > 0 {
                *n -= 1;
                common += 1;
            }
        }
    }
    common as f64 / a.len().max(b.len()) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit;

    #[test]
    fn pure_reads_get_a_target_form() {
        let rules = testkit::rules();
        let p = shadow_pair(
            "SELECT id, amount FROM orders ORDER BY amount DESC LIMIT 5",
            &rules,
            &testkit::path(),
        )
        .unwrap();
        assert_eq!(p.table.to_string(), "public.orders");
        assert_eq!(p.k, Some(5));
        assert!(
            p.target_sql.contains("FROM public.orders_v2"),
            "{}",
            p.target_sql
        );
        assert!(!p.target_sql.contains("UNION ALL"), "{}", p.target_sql);
        for sql in [
            "INSERT INTO orders (id) VALUES (1)",
            "WITH x AS (DELETE FROM logs RETURNING *) SELECT * FROM orders",
            "SELECT * FROM orders FOR UPDATE",
            "SELECT 1",
            "SELECT * FROM customers",
        ] {
            assert_eq!(shadow_pair(sql, &rules, &testkit::path()), None, "{sql}");
        }
    }

    #[test]
    fn overlap_counts_rows_as_multisets() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(overlap(&s(&[]), &s(&[])), 1.0);
        assert_eq!(overlap(&s(&["a", "b"]), &s(&["b", "a"])), 1.0);
        assert_eq!(
            overlap(&s(&["a", "a", "b"]), &s(&["a", "b", "c"])),
            2.0 / 3.0
        );
        assert_eq!(overlap(&s(&["a"]), &s(&[])), 0.0);
    }
}
