//! DELETE rewrites, each checked by hand on PostgreSQL 15 (see `tests/insert.rs`).

use crate::plan::{ResponseFix, WriteTag};
use crate::testkit::*;

#[test]
fn plain_delete() {
    assert_rewrites(
        "DELETE FROM orders WHERE id = 2",
        &format!(
            "WITH tandem_w AS (DELETE FROM orders WHERE id = 2 RETURNING *), {ORDERS_DELETE} \
             SELECT FROM tandem_w"
        ),
    );
    let plans = rewritten("DELETE FROM orders");
    assert_eq!(
        plans[0].response,
        ResponseFix::Mirror {
            tag: WriteTag::Delete,
            returning: false
        }
    );
    assert_eq!(WriteTag::Delete.tag(0), "DELETE 0");
}

#[test]
fn using_with_alias() {
    assert_rewrites(
        "DELETE FROM orders o USING customers c WHERE c.id = o.customer_id AND c.name = 'bob' RETURNING o.*",
        &format!(
            "WITH tandem_w AS (DELETE FROM orders o USING customers c WHERE c.id = o.customer_id \
             AND c.name = 'bob' RETURNING o.*), {ORDERS_DELETE} SELECT o.* FROM tandem_w AS o"
        ),
    );
}

#[test]
fn partitioned_target_deletes_by_full_key() {
    assert_rewrites(
        "DELETE FROM events WHERE region = 'us' RETURNING *",
        "WITH tandem_w AS (DELETE FROM events WHERE region = 'us' RETURNING *), tandem_m AS \
         (DELETE FROM public.events_v2 AS tandem_t USING tandem_w WHERE tandem_t.id = tandem_w.id \
         AND tandem_t.region = tandem_w.region) SELECT * FROM tandem_w AS events",
    );
}

#[test]
fn parameters_and_casts() {
    assert_rewrites(
        "DELETE FROM orders WHERE id = ANY($1::bigint[])",
        &format!(
            "WITH tandem_w AS (DELETE FROM orders WHERE id = ANY($1::BIGINT[]) RETURNING *), \
             {ORDERS_DELETE} SELECT FROM tandem_w"
        ),
    );
}

#[test]
fn refused_forms() {
    let r = rejection("DELETE FROM orders WHERE CURRENT OF cur");
    assert!(r.message.contains("WHERE CURRENT OF"), "{}", r.message);
    let r = rejection("DELETE FROM orders o USING customers c WHERE c.id = o.id RETURNING c.name");
    assert!(r.message.contains("RETURNING"), "{}", r.message);
}
