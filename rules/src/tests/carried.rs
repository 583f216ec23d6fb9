//! What the write CTE carries for the client's RETURNING: system columns, the whole row,
//! and the check that makes the server refuse what RETURNING refuses. Each expected
//! statement was run on PostgreSQL 15 (see `tests/integration/dual_write/returning.rs` for
//! the comparison with the server's own answers).

use crate::testkit::*;

#[test]
fn system_columns_are_returned_by_the_write_under_their_names() {
    assert_rewrites(
        "INSERT INTO orders (id, amount) VALUES (1, 2) ON CONFLICT (id) DO UPDATE SET amount = 3 \
         RETURNING id, (xmax = 0) AS inserted, tableoid::regclass, orders.ctid",
        &format!(
            "WITH tandem_w AS (INSERT INTO orders (id, amount) VALUES (1, 2) ON CONFLICT(id) DO \
             UPDATE SET amount = 3 RETURNING *, orders.tableoid AS tableoid, orders.xmax AS xmax, \
             orders.ctid AS ctid), {ORDERS_UPSERT} SELECT id, (xmax = 0) AS inserted, \
             tableoid::REGCLASS, orders.ctid FROM tandem_w AS orders"
        ),
    );
}

#[test]
fn star_is_spelled_out_when_more_is_carried() {
    assert_rewrites(
        "UPDATE orders AS o SET note = 'x' WHERE id = 1 RETURNING *, o.xmin, o.*",
        &format!(
            "WITH tandem_w AS (UPDATE orders AS o SET note = 'x' WHERE id = 1 RETURNING *, \
             o.xmin AS xmin), {ORDERS_UPSERT} SELECT o.id, o.customer_id, o.amount, o.note, \
             o.created_at, o.xmin, o.id, o.customer_id, o.amount, o.note, o.created_at \
             FROM tandem_w AS o"
        ),
    );
}

#[test]
fn whole_row_is_the_tables_row() {
    assert_rewrites(
        "DELETE FROM orders o WHERE id = 1 RETURNING o, o.id",
        &format!(
            "WITH tandem_w AS (DELETE FROM orders o WHERE id = 1 RETURNING *, o AS o), \
             {ORDERS_DELETE} SELECT o, o.id FROM tandem_w AS o"
        ),
    );
}

#[test]
fn functions_are_checked_where_the_client_wrote_them() {
    // An aggregate, window or set-returning function is refused by the server in the
    // write's RETURNING, with the error it gives the client's own statement.
    assert_rewrites(
        "INSERT INTO orders (amount) VALUES (1) RETURNING count(*), upper(note) AS n",
        &format!(
            "WITH tandem_w AS (INSERT INTO orders (amount) VALUES (1) RETURNING *, CASE WHEN \
             false THEN ROW(count(*), upper(note)) END AS tandem_check), {ORDERS_UPSERT} \
             SELECT count(*), upper(note) AS n FROM tandem_w AS orders"
        ),
    );
}

#[test]
fn bare_names_with_from_are_checked_for_ambiguity() {
    assert_rewrites(
        "UPDATE orders o SET note = c.name FROM customers c WHERE c.id = o.customer_id \
         RETURNING note, o.id",
        &format!(
            "WITH tandem_w AS (UPDATE orders o SET note = c.name FROM customers c WHERE \
             c.id = o.customer_id RETURNING o.*, CASE WHEN false THEN ROW(note, o.id) END AS \
             tandem_check), {ORDERS_UPSERT} SELECT note, o.id FROM tandem_w AS o"
        ),
    );
}

#[test]
fn plain_columns_carry_nothing() {
    assert_rewrites(
        "INSERT INTO orders (amount) VALUES (1) RETURNING *, id, orders.amount * 2 AS d",
        &format!(
            "WITH tandem_w AS (INSERT INTO orders (amount) VALUES (1) RETURNING *), \
             {ORDERS_UPSERT} SELECT *, id, orders.amount * 2 AS d FROM tandem_w AS orders"
        ),
    );
}
