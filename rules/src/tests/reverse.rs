//! Cutover writes: the target first, mirrored back into the legacy table.

use crate::plan::{Plan, ResponseFix, WriteTag};
use crate::planner::plan;
use crate::rule::Mode;
use crate::ruleset::RuleSet;
use crate::testkit;

fn cutover() -> RuleSet {
    let mut set = testkit::rules();
    for r in &mut set.rules {
        if r.rule.table.name == "orders" || r.rule.table.name == "events" {
            r.rule.mode = Mode::Cutover;
        }
    }
    set
}

fn one(sql: &str) -> crate::plan::StatementPlan {
    match plan(sql, &cutover(), &testkit::path()) {
        Plan::Rewritten(mut s) if s.len() == 1 => s.remove(0),
        other => panic!("expected one rewrite of {sql}, got {other:?}"),
    }
}

const LEGACY_UPSERT: &str = "tandem_m AS (INSERT INTO public.orders \
(id, customer_id, amount, note, created_at) SELECT id, customer_id, amount, note, created_at \
FROM tandem_w ON CONFLICT (id) DO UPDATE SET customer_id = EXCLUDED.customer_id, \
amount = EXCLUDED.amount, note = EXCLUDED.note, created_at = EXCLUDED.created_at)";

#[test]
fn insert_writes_the_target_and_mirrors_into_legacy() {
    let p = one("INSERT INTO orders (customer_id, amount) VALUES (1, 2) RETURNING id");
    assert_eq!(
        p.sql,
        format!("WITH tandem_w AS (INSERT INTO public.orders_v2 AS orders (customer_id, amount) VALUES (1, 2) RETURNING *), {LEGACY_UPSERT} SELECT id FROM tandem_w AS orders")
    );
    assert_eq!(
        p.response,
        ResponseFix::Mirror {
            tag: WriteTag::Insert,
            returning: true
        }
    );
    assert_eq!(p.rule_table.unwrap().to_string(), "public.orders");
}

#[test]
fn update_and_delete_keep_the_clients_alias() {
    let p = one("UPDATE orders o SET note = 'x' WHERE o.id = 1");
    assert_eq!(
        p.sql,
        format!("WITH tandem_w AS (UPDATE public.orders_v2 o SET note = 'x' WHERE o.id = 1 RETURNING *), {LEGACY_UPSERT} SELECT FROM tandem_w")
    );
    let p = one("DELETE FROM orders WHERE id = 1 RETURNING *");
    assert_eq!(
        p.sql,
        "WITH tandem_w AS (DELETE FROM public.orders_v2 AS orders WHERE id = 1 RETURNING *), \
         tandem_m AS (DELETE FROM public.orders AS tandem_t USING tandem_w WHERE tandem_t.id = tandem_w.id) \
         SELECT * FROM tandem_w AS orders"
    );
}

#[test]
fn returning_star_needs_the_same_columns() {
    // events_v2 has extra columns: RETURNING * would show the target's shape.
    let r = match plan(
        "INSERT INTO events (id, region, payload) VALUES (1, 'eu', 'p') RETURNING *",
        &cutover(),
        &testkit::path(),
    ) {
        Plan::Reject(r) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!(r.sqlstate, "0A000");
    assert!(r.message.contains("RETURNING *"), "{}", r.message);
    assert_eq!(r.table.unwrap().to_string(), "public.events");
    // Named columns are fine.
    one("INSERT INTO events (id, region, payload) VALUES (1, 'eu', 'p') RETURNING id");
}

#[test]
fn returning_system_columns_or_the_whole_row_is_refused() {
    // The target is written; the legacy row those would mean is the mirror's, not returned.
    for sql in [
        "INSERT INTO orders (amount) VALUES (1) RETURNING id, (xmax = 0) AS inserted",
        "UPDATE orders o SET note = 'x' WHERE id = 1 RETURNING o",
        "UPDATE orders SET id = 2 WHERE id = 1 RETURNING ctid",
        "DELETE FROM orders WHERE id = 1 RETURNING tableoid::regclass",
    ] {
        let r = match plan(sql, &cutover(), &testkit::path()) {
            Plan::Reject(r) => r,
            other => panic!("{sql}: {other:?}"),
        };
        assert_eq!(r.sqlstate, "0A000", "{sql}");
        assert!(r.message.contains("system column"), "{}", r.message);
        assert_eq!(r.table.unwrap().to_string(), "public.orders");
    }
    // Functions are still checked where the client wrote them.
    let p = one("UPDATE orders SET note = 'x' RETURNING upper(note)");
    assert!(
        p.sql.contains("CASE WHEN false THEN ROW(upper(note)) END"),
        "{}",
        p.sql
    );
}
