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
            freeze: false,
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

#[test]
fn freeze_is_checked_on_the_legacy_table_not_passed_to_the_staging_copy() {
    let c = copy_in("COPY orders (id) FROM STDIN WITH (FORMAT csv, FREEZE)");
    assert!(c.freeze);
    assert_eq!(c.options, "(FORMAT csv)");
    let check = c.freeze_check().expect("a FREEZE check");
    assert!(check.contains("'public.orders'::regclass"), "{check}");
    assert!(check.contains("ERRCODE = '55000'"), "{check}");
    let c = copy_in("COPY orders (id) FROM STDIN WITH (FREEZE)");
    assert_eq!((c.freeze, c.options.as_str()), (true, ""));
    assert_eq!(copy_in("COPY orders FROM STDIN").freeze_check(), None);
}

#[test]
fn column_list_is_checked_as_copy_checks_it() {
    let check = copy_in("COPY orders (id, note) FROM STDIN").columns_check();
    assert!(check.contains("ARRAY['id', 'note']"), "{check}");
    assert!(check.contains("ERRCODE = '42703'"), "{check}");
    assert!(
        check.contains("'orders'"),
        "names the relation bare: {check}"
    );
}
