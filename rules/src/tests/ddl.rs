//! DDL that would change what an active rule means is refused, on the legacy table and on
//! the target, bare or qualified; the same DDL on other tables, or under a rule that is
//! `off`, passes through.

use crate::plan::Plan;
use crate::planner::plan;
use crate::rule::{MirrorErrorPolicy, Mode};
use crate::testkit::*;

/// `sql` is refused with 55000, naming `named` and the rule's legacy table `table`.
fn assert_ddl_refused(sql: &str, action: &str, named: &str, table: &str) {
    let r = rejection(sql);
    assert_eq!(r.sqlstate, "55000", "{sql}: {}", r.message);
    assert_eq!(
        r.message,
        format!(
            "tandem: {action} on {named} would change what the active rule on {table} means; \
             refusing it"
        ),
        "{sql}"
    );
    assert!(
        r.hint.as_deref().unwrap_or("").contains("MODE off"),
        "{sql}"
    );
    assert_eq!(r.policy, MirrorErrorPolicy::Fail, "{sql}");
}

#[test]
fn ddl_renaming_a_ruled_table_is_refused() {
    for (sql, named) in [
        ("ALTER TABLE orders RENAME TO orders_old", "public.orders"),
        (
            "alter table if exists only public.orders rename to x",
            "public.orders",
        ),
        ("ALTER TABLE orders_v2 RENAME TO x", "public.orders_v2"),
        (
            "ALTER TABLE public.\"orders_v2\" RENAME TO x",
            "public.orders_v2",
        ),
    ] {
        assert_ddl_refused(sql, "ALTER TABLE ... RENAME TO", named, "public.orders");
    }
    assert_ddl_refused(
        "ALTER TABLE app.\"Line Items\" RENAME TO li",
        "ALTER TABLE ... RENAME TO",
        "app.\"Line Items\"",
        "app.\"Line Items\"",
    );
}

#[test]
fn ddl_moving_a_ruled_table_to_another_schema_is_refused() {
    assert_ddl_refused(
        "ALTER TABLE public.orders SET SCHEMA app",
        "ALTER TABLE ... SET SCHEMA",
        "public.orders",
        "public.orders",
    );
    assert_ddl_refused(
        "ALTER TABLE events_v2 SET SCHEMA app",
        "ALTER TABLE ... SET SCHEMA",
        "public.events_v2",
        "public.events",
    );
}

#[test]
fn ddl_changing_inheritance_of_a_ruled_table_is_refused() {
    for (sql, action, named) in [
        (
            "ALTER TABLE orders INHERIT base",
            "ALTER TABLE ... INHERIT",
            "public.orders",
        ),
        (
            "ALTER TABLE kid INHERIT public.orders",
            "ALTER TABLE ... INHERIT",
            "public.orders",
        ),
        (
            "ALTER TABLE orders_v2 NO INHERIT base",
            "ALTER TABLE ... NO INHERIT",
            "public.orders_v2",
        ),
        (
            "ALTER TABLE kid NO INHERIT orders",
            "ALTER TABLE ... NO INHERIT",
            "public.orders",
        ),
        (
            "CREATE TABLE kid (x int) INHERITS (orders)",
            "CREATE TABLE ... INHERITS",
            "public.orders",
        ),
        (
            "CREATE UNLOGGED TABLE IF NOT EXISTS kid (x int) INHERITS (base, public.orders_v2)",
            "CREATE TABLE ... INHERITS",
            "public.orders_v2",
        ),
    ] {
        assert_ddl_refused(sql, action, named, "public.orders");
    }
}

#[test]
fn ddl_attaching_or_detaching_partitions_of_ruled_tables_is_refused() {
    for (sql, action, named) in [
        (
            "ALTER TABLE p ATTACH PARTITION events FOR VALUES IN ('eu')",
            "ALTER TABLE ... ATTACH PARTITION",
            "public.events",
        ),
        (
            "ALTER TABLE p ATTACH PARTITION public.events_v2 DEFAULT",
            "ALTER TABLE ... ATTACH PARTITION",
            "public.events_v2",
        ),
        (
            "ALTER TABLE events_v2 ATTACH PARTITION events_v2_eu FOR VALUES IN ('eu')",
            "ALTER TABLE ... ATTACH PARTITION",
            "public.events_v2",
        ),
        (
            "ALTER TABLE public.events_v2 DETACH PARTITION events_v2_eu CONCURRENTLY",
            "ALTER TABLE ... DETACH PARTITION",
            "public.events_v2",
        ),
        (
            "ALTER TABLE events DETACH PARTITION old",
            "ALTER TABLE ... DETACH PARTITION",
            "public.events",
        ),
    ] {
        assert_ddl_refused(sql, action, named, "public.events");
        assert!(rejection(sql).hint.unwrap().contains("tandem partitions"));
    }
}

#[test]
fn ddl_renaming_a_column_of_a_ruled_table_is_refused() {
    for (sql, named) in [
        (
            "ALTER TABLE orders RENAME COLUMN note TO remark",
            "public.orders",
        ),
        ("ALTER TABLE orders RENAME note TO remark", "public.orders"),
        (
            "ALTER TABLE orders ADD COLUMN x int, RENAME COLUMN note TO remark",
            "public.orders",
        ),
        (
            "ALTER TABLE public.orders_v2 RENAME COLUMN note TO remark",
            "public.orders_v2",
        ),
    ] {
        assert_ddl_refused(sql, "ALTER TABLE ... RENAME COLUMN", named, "public.orders");
    }
}

#[test]
fn drop_of_a_ruled_target_is_refused() {
    assert_ddl_refused(
        "DROP TABLE IF EXISTS customers, orders_v2",
        "DROP TABLE",
        "public.orders_v2",
        "public.orders",
    );
}

#[test]
fn ddl_that_keeps_what_a_rule_means_passes_through() {
    for sql in [
        "ALTER TABLE orders ADD COLUMN x int",
        "ALTER TABLE orders RENAME CONSTRAINT orders_pkey TO orders_pk",
        "ALTER TABLE orders_v2 ALTER COLUMN note SET DEFAULT 'x'",
        "ALTER TABLE customers RENAME TO clients",
        "ALTER TABLE app.orders RENAME TO x",
        "ALTER TABLE customers INHERIT base",
        "ALTER TABLE p ATTACH PARTITION customers FOR VALUES IN (1)",
        "CREATE TABLE kid (x int) INHERITS (customers)",
        "CREATE TABLE orders_v2_eu PARTITION OF orders_v2 FOR VALUES IN ('eu')",
        "ALTER TABLE logs RENAME TO logs_old",
        "ALTER TABLE logs_v2 RENAME TO x",
        "SELECT * FROM orders_v2",
    ] {
        assert_passthrough(sql);
    }
}

#[test]
fn ddl_under_a_rule_that_is_off_passes_through() {
    let mut rules = rules();
    for r in &mut rules.rules {
        r.rule.mode = Mode::Off;
    }
    for sql in [
        "ALTER TABLE orders RENAME TO orders_old",
        "ALTER TABLE orders_v2 SET SCHEMA app",
        "DROP TABLE orders_v2",
    ] {
        assert_eq!(plan(sql, &rules, &path()), Plan::Passthrough, "{sql}");
    }
}

#[test]
fn ddl_on_a_target_reached_through_search_path_names_its_schema() {
    let r = match plan(
        "ALTER TABLE \"Line Items_v2\" RENAME TO x",
        &rules(),
        &["app".into()],
    ) {
        Plan::Reject(r) => r,
        other => panic!("{other:?}"),
    };
    assert!(
        r.message.contains("on app.\"Line Items_v2\""),
        "{}",
        r.message
    );
    assert_eq!(
        plan(
            "ALTER TABLE \"Line Items_v2\" RENAME TO x",
            &rules(),
            &path()
        ),
        Plan::Passthrough
    );
}

#[test]
fn ddl_on_a_retired_legacy_table_passes_in_target_only() {
    let mut rules = rules();
    for r in &mut rules.rules {
        r.rule.mode = Mode::TargetOnly;
    }
    let Plan::Reject(r) = plan("ALTER TABLE orders_v2 RENAME TO x", &rules, &path()) else {
        panic!("the target is the table of record");
    };
    assert_eq!(r.sqlstate, "55000");
    assert_eq!(
        plan(
            "ALTER TABLE orders RENAME TO orders_retired",
            &rules,
            &path()
        ),
        Plan::Passthrough,
        "renaming the retired legacy table is the runbook's last step"
    );
}
