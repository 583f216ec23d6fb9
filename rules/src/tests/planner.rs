//! Planner behaviour across statement kinds: batches, passthrough, refusals, policies.

use crate::plan::{join_statements, Plan, ResponseFix};
use crate::planner::plan;
use crate::rule::{MirrorErrorPolicy, Mode};
use crate::ruleset::RuleSet;
use crate::testkit::*;

#[test]
fn multi_statement_strings_keep_untouched_text() {
    let sql = "BEGIN; INSERT INTO orders (customer_id) VALUES (1); select  1 /* keep */; COMMIT";
    let plans = rewritten(sql);
    let texts: Vec<&str> = plans.iter().map(|p| p.sql.as_str()).collect();
    assert_eq!(texts[0], "BEGIN");
    assert!(texts[1].starts_with("WITH tandem_w AS (INSERT INTO orders"));
    assert_eq!(texts[2], "select  1 /* keep */");
    assert_eq!(texts[3], "COMMIT");
    assert_eq!(plans[0].response, ResponseFix::None);
    assert!(matches!(plans[1].response, ResponseFix::Mirror { .. }));
    let joined = join_statements(&plans);
    assert!(joined.starts_with("BEGIN;\nWITH tandem_w"));
    assert!(joined.ends_with(";\nselect  1 /* keep */;\nCOMMIT"));
}

#[test]
fn reads_and_ddl_pass_through() {
    for sql in [
        "SELECT * FROM orders WHERE id = $1",
        "SELECT * FROM orders FOR UPDATE",
        "SELECT 'INSERT INTO orders VALUES (1)'",
        "ALTER TABLE orders ADD COLUMN x int",
        "CREATE INDEX ON orders (note)",
        "EXPLAIN INSERT INTO orders (customer_id) VALUES (1)",
        "BEGIN; SELECT * FROM orders; COMMIT",
        "DROP TABLE logs",
        "DROP TABLE app.orders",
        "DROP VIEW orders_view",
    ] {
        assert_passthrough(sql);
    }
}

#[test]
fn drop_of_a_ruled_table_is_refused() {
    let r = rejection("DROP TABLE IF EXISTS customers, orders CASCADE");
    assert_eq!(r.sqlstate, "55000");
    assert_eq!(
        r.message,
        "tandem: table public.orders has an active rule; drop the rule first"
    );
    assert_eq!(r.policy, MirrorErrorPolicy::Fail);
}

#[test]
fn merge_is_refused() {
    let r = rejection(
        "MERGE INTO orders o USING customers c ON o.id = c.id WHEN MATCHED THEN UPDATE SET note = c.name",
    );
    assert_eq!(r.sqlstate, "0A000");
    assert_eq!(
        r.message,
        "tandem: MERGE into ruled table public.orders is mirrored from PostgreSQL 17 on (MERGE ... \
         RETURNING inside WITH); this server is older: rewrite as INSERT ... ON CONFLICT, UPDATE \
         and DELETE, or disable the rule"
    );
    assert_passthrough(
        "MERGE INTO customers c USING orders o ON o.id = c.id WHEN MATCHED THEN DELETE",
    );
}

#[test]
fn hidden_writes_are_refused() {
    for (sql, context) in [
        (
            "EXPLAIN ANALYZE INSERT INTO orders (customer_id) VALUES (1)",
            "EXPLAIN ANALYZE",
        ),
        ("EXPLAIN (ANALYZE) DELETE FROM orders", "EXPLAIN ANALYZE"),
        (
            "PREPARE p AS INSERT INTO orders (customer_id) VALUES ($1)",
            "PREPARE",
        ),
    ] {
        let r = rejection(sql);
        assert!(r.message.contains(context), "{sql}: {}", r.message);
    }
}

#[test]
fn a_refusal_anywhere_refuses_the_batch() {
    let r = rejection("BEGIN; INSERT INTO orders (customer_id) VALUES (1); MERGE INTO orders o USING customers c ON o.id = c.id WHEN MATCHED THEN DELETE; COMMIT");
    assert!(r.message.contains("MERGE"));
}

#[test]
fn unparsable_statements() {
    let r = rejection("INSERT INTO orders VALUES (1) RETURNING id INTO STRICT x");
    assert_eq!(r.sqlstate, "0A000");
    assert!(r.message.starts_with(
        "tandem: cannot parse statement that mentions ruled table public.orders; refusing to run it unmirrored"
    ));
    // Not mentioning an active rule's table: none of Tandem's business.
    assert_eq!(plan_of("THIS IS NOT SQL orders_v2"), Plan::Passthrough);
    assert_eq!(plan_of("GARBAGE logs"), Plan::Passthrough);
}

#[test]
fn search_path_resolution() {
    let rules = rules();
    let items = "INSERT INTO \"Line Items\" (\"Id\") VALUES (1)";
    assert!(matches!(
        plan(items, &rules, &["app".into()]),
        Plan::Rewritten(_)
    ));
    assert_eq!(plan(items, &rules, &["public".into()]), Plan::Passthrough);
    let orders = "INSERT INTO orders (customer_id) VALUES (1)";
    assert_eq!(plan(orders, &rules, &["app".into()]), Plan::Passthrough);
    assert!(matches!(
        plan(orders, &rules, &["$user".into(), "public".into()]),
        Plan::Rewritten(_)
    ));
}

#[test]
fn record_policy_is_carried() {
    let mut rules: RuleSet = rules();
    for r in &mut rules.rules {
        r.rule.on_mirror_error = MirrorErrorPolicy::Record;
    }
    let p = plan(
        "INSERT INTO orders (customer_id) VALUES (1)",
        &rules,
        &path(),
    );
    let Plan::Rewritten(statements) = p else {
        panic!("expected a rewrite");
    };
    assert_eq!(statements[0].policy, Some(MirrorErrorPolicy::Record));
    let Plan::Reject(r) = plan(
        "MERGE INTO orders o USING customers c ON true WHEN MATCHED THEN DELETE",
        &rules,
        &path(),
    ) else {
        panic!("expected a rejection");
    };
    assert_eq!(r.policy, MirrorErrorPolicy::Record);
    let Plan::Reject(r) = plan("DROP TABLE orders", &rules, &path()) else {
        panic!("expected a rejection");
    };
    assert_eq!(r.policy, MirrorErrorPolicy::Fail);
}

#[test]
fn mode_off_passes_everything_through() {
    let mut rules: RuleSet = rules();
    for r in &mut rules.rules {
        r.rule.mode = Mode::Off;
    }
    for sql in [
        "INSERT INTO orders (customer_id) VALUES (1)",
        "MERGE INTO orders o USING customers c ON true WHEN MATCHED THEN DELETE",
        "DROP TABLE orders",
        "COPY orders FROM STDIN",
    ] {
        assert_eq!(plan(sql, &rules, &path()), Plan::Passthrough, "{sql}");
    }
}

#[test]
fn explain_without_analyze_of_a_write_passes_through() {
    for sql in [
        "EXPLAIN UPDATE orders SET note = 'x'",
        "EXPLAIN VERBOSE DELETE FROM orders WHERE id = 1",
        "EXPLAIN (COSTS OFF) UPDATE orders SET note = 'x'",
        "EXPLAIN (ANALYZE false, COSTS OFF) INSERT INTO orders (customer_id) VALUES (1)",
        "EXPLAIN (ANALYZE off) DELETE FROM orders",
        "EXPLAIN (FORMAT JSON) WITH d AS (DELETE FROM orders RETURNING id) SELECT * FROM d",
    ] {
        assert_passthrough(sql);
    }
    for sql in [
        "EXPLAIN (ANALYZE, COSTS OFF) UPDATE orders SET note = 'x'",
        "EXPLAIN (COSTS OFF, ANALYZE true) DELETE FROM orders",
        "EXPLAIN (ANALYZE on) DELETE FROM orders",
    ] {
        let r = rejection(sql);
        assert!(
            r.message.contains("inside EXPLAIN ANALYZE"),
            "{sql}: {}",
            r.message
        );
    }
}

#[test]
fn a_refusal_names_the_table_by_its_own_schema() {
    let mut rules = rules();
    let mut s2 = rules.rules[0].clone();
    s2.rule.table = crate::name::TableName::new(Some("s2"), "orders");
    s2.rule.target = crate::name::TableName::new(Some("s2"), "orders_v2");
    rules.rules.push(s2);
    let unparsable = "UPDATE orders SET note = 'x' WHERE CURRENT OF c RETURNING * INTO x";
    for (sql, path, named) in [
        (
            unparsable,
            vec!["s2".to_string(), "public".into()],
            "s2.orders",
        ),
        (
            unparsable,
            vec!["public".to_string(), "s2".into()],
            "public.orders",
        ),
        (
            "SELECT FROM s2.orders WHERE CURRENT OF c INTO x",
            path(),
            "s2.orders",
        ),
        (
            "MERGE INTO orders o USING c ON true WHEN MATCHED THEN DELETE",
            vec!["s2".into()],
            "s2.orders",
        ),
        (
            "ALTER TABLE orders RENAME TO x",
            vec!["s2".into()],
            "s2.orders",
        ),
    ] {
        let Plan::Reject(r) = plan(sql, &rules, &path) else {
            panic!("{sql} is refused");
        };
        assert!(
            r.message.contains(&format!("table {named}"))
                || r.message.contains(&format!("on {named} ")),
            "{sql} under {path:?}: {}",
            r.message
        );
        assert_eq!(
            r.table.as_ref().map(ToString::to_string).as_deref(),
            Some(named)
        );
    }
}
