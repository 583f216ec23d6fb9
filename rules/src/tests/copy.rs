//! COPY planning.

use crate::copy::{CopyFormat, CopyIn};
use crate::name::TableName;
use crate::plan::Plan;
use crate::rule::MirrorErrorPolicy;
use crate::testkit::*;

fn copy_in(sql: &str) -> CopyIn {
    match plan_of(sql) {
        Plan::CopyIn(c) => c,
        other => panic!("expected CopyIn for {sql}, got {other:?}"),
    }
}

#[test]
fn copy_from_stdin_is_described() {
    let c = copy_in("COPY orders (customer_id, Amount) FROM STDIN WITH (FORMAT csv, HEADER true)");
    assert_eq!(
        c,
        CopyIn {
            table: TableName::new(Some("public"), "orders"),
            target: TableName::new(Some("public"), "orders_v2"),
            columns: vec!["customer_id".into(), "amount".into()],
            format: CopyFormat::Csv,
            options: "(FORMAT csv, HEADER)".into(),
            sql: "COPY orders (customer_id, Amount) FROM STDIN WITH (FORMAT csv, HEADER true)"
                .into(),
            policy: MirrorErrorPolicy::Fail,
        }
    );
    let c = copy_in("COPY public.orders FROM STDIN");
    assert_eq!(
        c.columns,
        ["id", "customer_id", "amount", "note", "created_at"]
    );
    assert_eq!(c.format, CopyFormat::Text);
    assert_eq!(c.options, "");
    assert_eq!(
        copy_in("COPY orders FROM STDIN CSV HEADER").format,
        CopyFormat::Csv
    );
    assert_eq!(
        copy_in("COPY orders FROM STDIN (FORMAT binary)").format,
        CopyFormat::Binary
    );
}

#[test]
fn copy_out_passes_through() {
    assert_passthrough("COPY orders TO STDOUT");
    assert_passthrough("COPY (SELECT * FROM orders) TO STDOUT WITH (FORMAT csv)");
    assert_passthrough("COPY customers FROM STDIN");
}

#[test]
fn refused_copies() {
    let r = rejection("COPY orders FROM '/tmp/orders.csv' CSV");
    assert!(
        r.message.contains("server file or program"),
        "{}",
        r.message
    );
    let r = rejection("COPY orders FROM PROGRAM 'cat x'");
    assert!(
        r.message.contains("server file or program"),
        "{}",
        r.message
    );
    let r = rejection("INSERT INTO orders (customer_id) VALUES (1); COPY orders FROM STDIN");
    assert!(r.message.contains("query of its own"), "{}", r.message);
    let r = rejection("COPY (DELETE FROM orders RETURNING *) TO STDOUT");
    assert!(r.message.contains("COPY (query) TO"), "{}", r.message);
}
