//! `UPDATE ONLY` / `DELETE FROM ONLY`: mirrored with `ONLY` kept on the client's write.

use crate::only::strip;
use crate::parse::parse_statement;
use crate::testkit::*;

/// [`assert_rewrites`] for rewrites that carry `ONLY`, which the parser reads once blanked.
fn assert_rewrites_only(input: &str, expected: &str) {
    let statements = rewritten(input);
    assert_eq!(statements.len(), 1, "{input}");
    assert_eq!(statements[0].sql, expected, "rewrite of {input}");
    let stripped = strip(expected);
    assert!(!stripped.marks.is_empty(), "{expected}");
    parse_statement(&stripped.text).expect("expected rewrite parses");
}

#[test]
fn update_only_is_mirrored() {
    for (input, write) in [
        (
            "UPDATE ONLY orders SET note = 'x' WHERE id = 1",
            "UPDATE ONLY orders SET note = 'x' WHERE id = 1",
        ),
        (
            "UPDATE ONLY orders AS o SET note = 'x' WHERE o.id = 1",
            "UPDATE ONLY orders AS o SET note = 'x' WHERE o.id = 1",
        ),
        (
            "update only public.orders o set note = 'x'",
            "UPDATE ONLY public.orders o SET note = 'x'",
        ),
    ] {
        assert_rewrites_only(
            input,
            &format!(
                "WITH tandem_w AS ({write} RETURNING *), {ORDERS_UPSERT} SELECT FROM tandem_w"
            ),
        );
    }
}

#[test]
fn delete_from_only_is_mirrored() {
    assert_rewrites_only(
        "DELETE FROM ONLY orders AS o WHERE o.id = 1 RETURNING o.id",
        &format!(
            "WITH tandem_w AS (DELETE FROM ONLY orders AS o WHERE o.id = 1 RETURNING *), \
             {ORDERS_DELETE} SELECT o.id FROM tandem_w AS o"
        ),
    );
    assert_rewrites_only(
        "DELETE FROM\n  ONLY \"orders\" WHERE id = 1",
        &format!(
            "WITH tandem_w AS (DELETE FROM ONLY \"orders\" WHERE id = 1 RETURNING *), \
             {ORDERS_DELETE} SELECT FROM tandem_w"
        ),
    );
}

#[test]
fn update_only_of_a_key_locks_only_the_table_itself() {
    let plan = rewritten("UPDATE ONLY events SET region = 'us' WHERE id = 1");
    let sql = &plan[0].sql;
    assert!(
        sql.contains("FROM ONLY events WHERE id = 1 FOR UPDATE"),
        "{sql}"
    );
    assert!(
        sql.contains("tandem_w AS (UPDATE ONLY events SET region = 'us' FROM tandem_o"),
        "{sql}"
    );
}

#[test]
fn only_of_an_unruled_table_is_left_alone() {
    assert_passthrough("UPDATE ONLY customers SET name = 'x' WHERE id IN (SELECT id FROM orders)");
    assert_passthrough("DELETE FROM ONLY customers WHERE id IN (SELECT customer_id FROM orders)");
}

#[test]
fn only_that_a_rewrite_would_lose_is_refused() {
    let r = rejection(
        "WITH d AS (DELETE FROM ONLY customers RETURNING id) \
         UPDATE orders SET note = 'x' WHERE customer_id IN (SELECT id FROM d)",
    );
    assert_eq!(r.sqlstate, "0A000");
    assert!(r.message.contains("ONLY"), "{}", r.message);
    // A nested write of a ruled table is refused as before, ONLY or not.
    let r = rejection("WITH d AS (DELETE FROM ONLY orders RETURNING id) SELECT * FROM d");
    assert!(r.message.contains("inside a WITH clause"), "{}", r.message);
}
