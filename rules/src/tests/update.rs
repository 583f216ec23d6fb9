//! UPDATE rewrites, each checked by hand on PostgreSQL 15 (see `tests/insert.rs`).

use crate::plan::{Plan, ResponseFix, WriteTag};
use crate::planner::plan;
use crate::rule::MirrorErrorPolicy;
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

/// The key-move form's check, for `table`.
fn check_moved(table: &str) -> String {
    format!(
        "WHERE (SELECT tandem.check_moved('{table}', (SELECT count(*) FROM tandem_o), \
         (SELECT count(*) FROM tandem_w)))"
    )
}

#[test]
fn partition_key_change_moves_the_target_row() {
    assert_rewrites(
        "UPDATE events SET region = 'us' WHERE id = $1",
        &format!(
            "WITH tandem_o AS (SELECT events.ctid AS tandem_ctid, events.tableoid AS \
             tandem_tableoid, events.id AS tandem_old_id, events.region AS tandem_old_region \
             FROM events WHERE id = $1 FOR UPDATE), \
             tandem_w AS (UPDATE events SET region = 'us' FROM tandem_o WHERE events.ctid = \
             tandem_o.tandem_ctid AND events.tableoid = tandem_o.tandem_tableoid RETURNING \
             events.*), \
             tandem_d AS (DELETE FROM public.events_v2 AS tandem_t USING tandem_o WHERE \
             tandem_t.id = tandem_o.tandem_old_id AND tandem_t.region = \
             tandem_o.tandem_old_region AND NOT EXISTS (SELECT FROM tandem_w WHERE tandem_w.id \
             = tandem_t.id AND tandem_w.region = tandem_t.region)), \
             {EVENTS_UPSERT} SELECT FROM tandem_w {}",
            check_moved("public.events")
        ),
    );
    let plans = rewritten("UPDATE events SET region = 'us' RETURNING *");
    assert_eq!(
        plans[0].response,
        ResponseFix::Mirror {
            tag: WriteTag::Update,
            returning: true
        }
    );
}

#[test]
fn key_change_with_alias_parameters_and_returning_star() {
    // The WHERE moves ahead of the SET: `$2` now comes before `$1` in the text, which is
    // fine, since parameters are referenced by number. `RETURNING o.*` keeps tandem_o's
    // columns out of tandem_w, so the client's `*` is the table's own columns.
    assert_rewrites(
        "UPDATE orders AS o SET id = id + 100, note = $1 WHERE o.customer_id = $2 RETURNING *",
        &format!(
            "WITH tandem_o AS (SELECT o.ctid AS tandem_ctid, o.tableoid AS tandem_tableoid, \
             o.id AS tandem_old_id FROM orders AS o WHERE o.customer_id = $2 FOR UPDATE), \
             tandem_w AS (UPDATE orders AS o SET id = id + 100, note = $1 FROM tandem_o WHERE \
             o.ctid = tandem_o.tandem_ctid AND o.tableoid = tandem_o.tandem_tableoid RETURNING \
             o.*), \
             tandem_d AS (DELETE FROM public.orders_v2 AS tandem_t USING tandem_o WHERE \
             tandem_t.id = tandem_o.tandem_old_id AND NOT EXISTS (SELECT FROM tandem_w WHERE \
             tandem_w.id = tandem_t.id)), \
             {ORDERS_UPSERT} SELECT * FROM tandem_w AS o {}",
            check_moved("public.orders")
        ),
    );
}

#[test]
fn key_change_on_a_quoted_table_without_where() {
    assert_rewrites(
        "UPDATE app.\"Line Items\" SET (\"Id\", qty) = (2, 3)",
        &format!(
            "WITH tandem_o AS (SELECT app.\"Line Items\".ctid AS tandem_ctid, \
             app.\"Line Items\".tableoid AS tandem_tableoid, app.\"Line Items\".\"Id\" AS \
             \"tandem_old_Id\" FROM app.\"Line Items\" FOR UPDATE), \
             tandem_w AS (UPDATE app.\"Line Items\" SET (\"Id\", qty) = (2, 3) FROM tandem_o \
             WHERE app.\"Line Items\".ctid = tandem_o.tandem_ctid AND \
             app.\"Line Items\".tableoid = tandem_o.tandem_tableoid RETURNING \
             app.\"Line Items\".*), \
             tandem_d AS (DELETE FROM app.\"Line Items_v2\" AS tandem_t USING tandem_o WHERE \
             tandem_t.\"Id\" = tandem_o.\"tandem_old_Id\" AND NOT EXISTS (SELECT FROM \
             tandem_w WHERE tandem_w.\"Id\" = tandem_t.\"Id\")), \
             tandem_m AS (INSERT INTO app.\"Line Items_v2\" (\"Id\", qty) SELECT \"Id\", qty \
             FROM tandem_w ON CONFLICT (\"Id\") DO UPDATE SET qty = EXCLUDED.qty) \
             SELECT FROM tandem_w {}",
            check_moved("app.\"Line Items\"")
        ),
    );
}

#[test]
fn key_change_with_from_is_refused() {
    for (sql, column) in [
        (
            "UPDATE orders o SET id = c.id FROM customers c WHERE c.id = o.customer_id",
            "id",
        ),
        (
            "UPDATE orders SET (note, ID) = ('a', 2) FROM customers c WHERE c.id = 1",
            "id",
        ),
        (
            "UPDATE events e SET region = r.name FROM regions r WHERE r.id = e.id",
            "region",
        ),
        ("UPDATE tags SET id = 3 FROM customers", "id"),
    ] {
        let r = rejection(sql);
        assert_eq!(r.sqlstate, "0A000");
        assert!(
            r.message
                .contains(&format!("column {column} of ruled table public."))
                && r.message.contains("together with FROM"),
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
fn key_change_under_the_record_policy_is_refused() {
    let mut rules = rules();
    for r in &mut rules.rules {
        r.rule.on_mirror_error = MirrorErrorPolicy::Record;
    }
    let Plan::Reject(r) = plan(
        "UPDATE events SET region = 'us' WHERE id = 1",
        &rules,
        &path(),
    ) else {
        panic!("expected a rejection");
    };
    assert_eq!(r.sqlstate, "0A000");
    assert!(r.message.contains("record error policy"), "{}", r.message);
    assert_eq!(r.policy, MirrorErrorPolicy::Record);
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
    for sql in [
        "UPDATE orders SET note = 'a' WHERE CURRENT OF cur",
        "UPDATE events SET region = 'us' WHERE CURRENT OF cur",
    ] {
        let r = rejection(sql);
        assert_eq!(r.sqlstate, "0A000");
        assert!(r.message.contains("WHERE CURRENT OF"), "{}", r.message);
    }
}
