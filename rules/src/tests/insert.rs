//! INSERT rewrites. Every expected statement here was run on PostgreSQL 15 against tables
//! shaped like the fixture, and the legacy and target tables compared afterwards.

use crate::plan::{ResponseFix, WriteTag};
use crate::rule::MirrorErrorPolicy;
use crate::testkit::*;

#[test]
fn multi_row_values() {
    assert_rewrites(
        "INSERT INTO orders (customer_id, amount) VALUES (1, 10), (2, 20)",
        &format!(
            "WITH tandem_w AS (INSERT INTO orders (customer_id, amount) VALUES (1, 10), (2, 20) \
             RETURNING *), {ORDERS_UPSERT} SELECT FROM tandem_w"
        ),
    );
}

#[test]
fn response_fix_and_policy() {
    let plans = rewritten("INSERT INTO orders (customer_id) VALUES (1)");
    assert_eq!(
        plans[0].response,
        ResponseFix::Mirror {
            tag: WriteTag::Insert,
            returning: false
        }
    );
    assert_eq!(
        plans[0]
            .rule_table
            .as_ref()
            .map(ToString::to_string)
            .as_deref(),
        Some("public.orders")
    );
    assert_eq!(plans[0].policy, Some(MirrorErrorPolicy::Fail));
    let plans = rewritten("INSERT INTO orders (customer_id) VALUES (1) RETURNING id");
    assert_eq!(
        plans[0].response,
        ResponseFix::Mirror {
            tag: WriteTag::Insert,
            returning: true
        }
    );
    assert_eq!(WriteTag::Insert.tag(3), "INSERT 0 3");
}

#[test]
fn default_values() {
    assert_rewrites(
        "INSERT INTO orders DEFAULT VALUES",
        &format!(
            "WITH tandem_w AS (INSERT INTO orders DEFAULT VALUES RETURNING *), {ORDERS_UPSERT} \
             SELECT FROM tandem_w"
        ),
    );
}

#[test]
fn alias_and_returning_expressions() {
    assert_rewrites(
        "INSERT INTO orders AS o (customer_id, amount) VALUES (1, 5) RETURNING o.id, amount * 2 AS dbl, o.total",
        &format!(
            "WITH tandem_w AS (INSERT INTO orders AS o (customer_id, amount) VALUES (1, 5) \
             RETURNING *), {ORDERS_UPSERT} SELECT o.id, amount * 2 AS dbl, o.total FROM tandem_w AS o"
        ),
    );
}

#[test]
fn insert_select_returning_star() {
    assert_rewrites(
        "INSERT INTO orders (customer_id, amount) SELECT id, 7 FROM customers RETURNING *",
        &format!(
            "WITH tandem_w AS (INSERT INTO orders (customer_id, amount) SELECT id, 7 FROM customers \
             RETURNING *), {ORDERS_UPSERT} SELECT * FROM tandem_w AS orders"
        ),
    );
}

#[test]
fn insert_select_from_itself() {
    assert_rewrites(
        "INSERT INTO orders (id, customer_id, amount) SELECT id + 100, customer_id, amount FROM orders WHERE id < 3 ON CONFLICT DO NOTHING",
        &format!(
            "WITH tandem_w AS (INSERT INTO orders (id, customer_id, amount) SELECT id + 100, \
             customer_id, amount FROM orders WHERE id < 3 ON CONFLICT DO NOTHING RETURNING *), \
             {ORDERS_UPSERT} SELECT FROM tandem_w"
        ),
    );
}

#[test]
fn on_conflict_do_update_with_excluded_and_qualified_returning() {
    assert_rewrites(
        "INSERT INTO orders (id, customer_id, amount) VALUES (1, 9, 99) ON CONFLICT (id) DO UPDATE SET amount = EXCLUDED.amount + orders.amount RETURNING public.orders.id, orders.amount",
        &format!(
            "WITH tandem_w AS (INSERT INTO orders (id, customer_id, amount) VALUES (1, 9, 99) \
             ON CONFLICT(id) DO UPDATE SET amount = EXCLUDED.amount + orders.amount RETURNING *), \
             {ORDERS_UPSERT} SELECT orders.id, orders.amount FROM tandem_w AS orders"
        ),
    );
}

#[test]
fn schema_qualified_on_conflict_do_nothing() {
    assert_rewrites(
        "INSERT INTO public.orders (id, amount) VALUES (1, 1) ON CONFLICT DO NOTHING RETURNING id",
        &format!(
            "WITH tandem_w AS (INSERT INTO public.orders (id, amount) VALUES (1, 1) ON CONFLICT DO \
             NOTHING RETURNING *), {ORDERS_UPSERT} SELECT id FROM tandem_w AS orders"
        ),
    );
}

#[test]
fn client_ctes_are_kept_in_front() {
    assert_rewrites(
        "WITH c AS (SELECT 3 AS cid) INSERT INTO orders (customer_id) SELECT cid FROM c RETURNING id, customer_id",
        &format!(
            "WITH c AS (SELECT 3 AS cid), tandem_w AS (INSERT INTO orders (customer_id) SELECT cid \
             FROM c RETURNING *), {ORDERS_UPSERT} SELECT id, customer_id FROM tandem_w AS orders"
        ),
    );
    // A data-modifying CTE on a table without a rule is the client's business.
    assert_rewrites(
        "WITH x AS (DELETE FROM customers RETURNING *) INSERT INTO orders (customer_id) SELECT id FROM x",
        &format!(
            "WITH x AS (DELETE FROM customers RETURNING *), tandem_w AS (INSERT INTO orders \
             (customer_id) SELECT id FROM x RETURNING *), {ORDERS_UPSERT} SELECT FROM tandem_w"
        ),
    );
}

#[test]
fn partitioned_target_with_set_columns() {
    assert_rewrites(
        "INSERT INTO events (region, payload) VALUES ('eu', 'a'), ('us', 'bb') RETURNING *",
        &format!(
            "WITH tandem_w AS (INSERT INTO events (region, payload) VALUES ('eu', 'a'), ('us', 'bb') \
             RETURNING *), {EVENTS_UPSERT} SELECT * FROM tandem_w AS events"
        ),
    );
}

#[test]
fn quoted_identifiers() {
    assert_rewrites(
        "INSERT INTO app.\"Line Items\" (\"Id\", qty) VALUES (1, 2)",
        "WITH tandem_w AS (INSERT INTO app.\"Line Items\" (\"Id\", qty) VALUES (1, 2) RETURNING *), \
         tandem_m AS (INSERT INTO app.\"Line Items_v2\" (\"Id\", qty) SELECT \"Id\", qty FROM \
         tandem_w ON CONFLICT (\"Id\") DO UPDATE SET qty = EXCLUDED.qty) SELECT FROM tandem_w",
    );
    assert!(rewritten("INSERT INTO \"orders\" (customer_id) VALUES (1)").len() == 1);
    assert_passthrough("INSERT INTO \"Orders\" (customer_id) VALUES (1)");
    assert_passthrough("INSERT INTO \"Line Items\" (\"Id\") VALUES (1)");
}

#[test]
fn all_key_columns_means_do_nothing() {
    assert_rewrites(
        "INSERT INTO tags (id) VALUES (1), (2)",
        "WITH tandem_w AS (INSERT INTO tags (id) VALUES (1), (2) RETURNING *), tandem_m AS \
         (INSERT INTO public.tags_v2 (id) SELECT id FROM tandem_w ON CONFLICT (id) DO NOTHING) \
         SELECT FROM tandem_w",
    );
}

#[test]
fn parameters_stay_in_place() {
    assert_rewrites(
        "INSERT INTO orders (customer_id, amount, note) VALUES ($1, $2, $3) RETURNING id, amount + $4 AS bumped",
        &format!(
            "WITH tandem_w AS (INSERT INTO orders (customer_id, amount, note) VALUES ($1, $2, $3) \
             RETURNING *), {ORDERS_UPSERT} SELECT id, amount + $4 AS bumped FROM tandem_w AS orders"
        ),
    );
}

#[test]
fn other_tables_and_modes_pass_through() {
    assert_passthrough("INSERT INTO app.orders (id) VALUES (1)");
    assert_passthrough("INSERT INTO customers (id) VALUES (1)");
    assert_passthrough("INSERT INTO logs (id) VALUES (1)");
    assert_passthrough("INSERT INTO customers SELECT * FROM orders");
}

#[test]
fn union_read_writes_are_dual_writes() {
    let plans = rewritten("INSERT INTO refunds (id) VALUES (1)");
    assert!(
        plans[0].sql.starts_with("WITH tandem_w AS (INSERT INTO refunds (id) VALUES (1) RETURNING *), tandem_m AS (INSERT INTO public.refunds_v2"),
        "{}",
        plans[0].sql
    );
}

#[test]
fn writes_to_a_ruled_table_in_a_cte_are_refused() {
    for sql in [
        "WITH x AS (INSERT INTO orders (customer_id) VALUES (1) RETURNING *) SELECT * FROM x",
        "WITH x AS (DELETE FROM orders RETURNING *) INSERT INTO orders (customer_id) SELECT id FROM x",
        "WITH x AS (UPDATE orders SET note = 'a' RETURNING id) INSERT INTO customers SELECT id FROM x",
    ] {
        let r = rejection(sql);
        assert_eq!(r.sqlstate, "0A000");
        assert!(r.message.contains("inside a WITH clause"), "{}", r.message);
        assert_eq!(r.table.as_ref().map(ToString::to_string).as_deref(), Some("public.orders"));
    }
}

#[test]
fn on_conflict_update_of_a_key_column_is_refused() {
    for (sql, column) in [
        (
            "INSERT INTO orders (id, note) VALUES (1, 'x') ON CONFLICT (id) DO UPDATE SET id = 5",
            "id",
        ),
        (
            "INSERT INTO events (id, region) VALUES (1, 'eu') ON CONFLICT (id, region) \
             DO UPDATE SET payload = 'p', region = 'us'",
            "region",
        ),
        // EXCLUDED of a column outside the conflict target changes the key.
        (
            "INSERT INTO events AS e (id, region) VALUES (1, 'eu') ON CONFLICT (id) \
             DO UPDATE SET region = EXCLUDED.region",
            "region",
        ),
        (
            "INSERT INTO orders (id) VALUES (1) ON CONFLICT ON CONSTRAINT orders_pkey \
             DO UPDATE SET id = EXCLUDED.id",
            "id",
        ),
        (
            "INSERT INTO events (id, region) VALUES (1, 'eu') ON CONFLICT (id, region) \
             DO UPDATE SET (payload, region) = ('p', 'us')",
            "region",
        ),
    ] {
        let r = rejection(sql);
        assert_eq!(r.sqlstate, "0A000", "{sql}");
        assert_eq!(
            r.message,
            format!(
                "tandem: UPDATE changes key/partition column {column} of ruled table {} in \
                 INSERT ... ON CONFLICT DO UPDATE; Tandem cannot mirror a row move in that form",
                if column == "id" && sql.contains("orders") {
                    "public.orders"
                } else {
                    "public.events"
                }
            ),
            "{sql}"
        );
        assert!(r
            .hint
            .unwrap()
            .contains("delete the row and insert it again"));
    }
}

#[test]
fn on_conflict_update_setting_a_key_to_its_own_excluded_value_is_mirrored() {
    let statements = rewritten(
        "INSERT INTO events (id, region, payload) VALUES (1, 'eu', 'p') \
         ON CONFLICT (id, region) DO UPDATE SET id = EXCLUDED.id, region = excluded.region, \
         payload = EXCLUDED.payload",
    );
    assert!(statements[0]
        .sql
        .starts_with("WITH tandem_w AS (INSERT INTO events"));
    // A key column that is not assigned is no reason to refuse.
    rewritten("INSERT INTO orders (id) VALUES (1) ON CONFLICT (id) DO UPDATE SET note = 'x'");
}
