//! TRUNCATE rewrites, checked by hand on PostgreSQL 15.

use crate::plan::ResponseFix;
use crate::testkit::*;

#[test]
fn adds_the_target_and_keeps_options() {
    let plans = rewritten("TRUNCATE orders, customers RESTART IDENTITY");
    assert_eq!(
        plans[0].sql,
        "TRUNCATE orders, customers, public.orders_v2 RESTART IDENTITY"
    );
    assert_eq!(plans[0].response, ResponseFix::None);
    let plans = rewritten("TRUNCATE TABLE ONLY app.\"Line Items\", events CASCADE");
    assert_eq!(
        plans[0].sql,
        "TRUNCATE TABLE ONLY app.\"Line Items\", events, app.\"Line Items_v2\", public.events_v2 CASCADE"
    );
}

#[test]
fn other_tables_pass_through() {
    assert_passthrough("TRUNCATE customers");
    assert_passthrough("TRUNCATE logs");
    assert_passthrough("TRUNCATE app.orders");
}

#[test]
fn union_read_truncates_both() {
    assert_rewrites("TRUNCATE refunds", "TRUNCATE refunds, public.refunds_v2");
}
