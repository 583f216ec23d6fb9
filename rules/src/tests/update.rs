//! UPDATE rewrites, each checked by hand on PostgreSQL 15 (see `tests/insert.rs`).

use crate::plan::{ResponseFix, WriteTag};
use crate::testkit::*;

#[test]
fn plain_update() {
    assert_rewrites(
        "UPDATE orders SET note = 'x' WHERE id = 1",
        &format!(
            "WITH tandem_w AS (UPDATE orders SET note = 'x' WHERE id = 1 RETURNING *), \
             {ORDERS_UPSERT} SELECT FROM tandem_w"
        ),
    );
    let plans = rewritten("UPDATE orders SET note = 'x' RETURNING id");
    assert_eq!(
        plans[0].response,
        ResponseFix::Mirror {
            tag: WriteTag::Update,
            returning: true
        }
    );
    assert_eq!(WriteTag::Update.tag(2), "UPDATE 2");
}

#[test]
fn from_with_alias_returns_only_legacy_columns() {
    assert_rewrites(
        "UPDATE orders AS o SET note = c.name FROM customers c WHERE c.id = o.customer_id RETURNING o.id, o.note",
        &format!(
            "WITH tandem_w AS (UPDATE orders AS o SET note = c.name FROM customers c WHERE c.id = \
             o.customer_id RETURNING o.*), {ORDERS_UPSERT} SELECT o.id, o.note FROM tandem_w AS o"
        ),
    );
}

#[test]
fn from_without_alias_on_a_qualified_table() {
    assert_rewrites(
        "UPDATE public.orders SET note = c.name FROM customers c WHERE c.id = orders.customer_id RETURNING orders.id",
        &format!(
            "WITH tandem_w AS (UPDATE public.orders SET note = c.name FROM customers c WHERE c.id = \
             orders.customer_id RETURNING public.orders.*), {ORDERS_UPSERT} SELECT orders.id FROM \
             tandem_w AS orders"
        ),
    );
}

#[test]
fn partitioned_target() {
    assert_rewrites(
        "UPDATE events SET payload = 'zz' WHERE region = 'eu' RETURNING id, payload",
        &format!(
            "WITH tandem_w AS (UPDATE events SET payload = 'zz' WHERE region = 'eu' RETURNING *), \
             {EVENTS_UPSERT} SELECT id, payload FROM tandem_w AS events"
        ),
    );
}

#[test]
fn tuple_assignment_and_parameters() {
    assert_rewrites(
        "UPDATE orders SET (note, amount) = ($1, $2) WHERE id = $3",
        &format!(
            "WITH tandem_w AS (UPDATE orders SET (note, amount) = ($1, $2) WHERE id = $3 RETURNING *), \
             {ORDERS_UPSERT} SELECT FROM tandem_w"
        ),
    );
    assert_rewrites(
        "UPDATE orders SET amount = amount + $1 WHERE id = $2 RETURNING amount",
        &format!(
            "WITH tandem_w AS (UPDATE orders SET amount = amount + $1 WHERE id = $2 RETURNING *), \
             {ORDERS_UPSERT} SELECT amount FROM tandem_w AS orders"
        ),
    );
}

#[test]
fn key_and_partition_columns_cannot_change() {
    for (sql, column) in [
        ("UPDATE orders SET id = id + 1", "id"),
        ("UPDATE orders SET (note, ID) = ('a', 2)", "id"),
        ("UPDATE events SET region = 'us' WHERE id = 1", "region"),
        ("UPDATE tags SET id = 3", "id"),
    ] {
        let r = rejection(sql);
        assert_eq!(r.sqlstate, "0A000");
        assert!(
            r.message
                .contains(&format!("column {column} of ruled table")),
            "{}",
            r.message
        );
        assert!(
            r.message.contains("cannot mirror a row move"),
            "{}",
            r.message
        );
    }
}

#[test]
fn returning_other_tables_with_from_is_refused() {
    for sql in [
        "UPDATE orders o SET note = c.name FROM customers c WHERE c.id = o.customer_id RETURNING *",
        "UPDATE orders o SET note = c.name FROM customers c WHERE c.id = o.customer_id RETURNING o.id, c.name",
        "UPDATE orders o SET note = c.name FROM customers c WHERE c.id = o.customer_id RETURNING c.*",
        "UPDATE orders o SET note = c.name FROM customers c WHERE c.id = o.customer_id RETURNING name",
    ] {
        let r = rejection(sql);
        assert!(r.message.contains("RETURNING"), "{sql}: {}", r.message);
    }
}

#[test]
fn current_of_is_refused() {
    let r = rejection("UPDATE orders SET note = 'a' WHERE CURRENT OF cur");
    assert_eq!(r.sqlstate, "0A000");
    assert!(r.message.contains("WHERE CURRENT OF"), "{}", r.message);
}
