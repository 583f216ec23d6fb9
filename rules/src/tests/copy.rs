//! COPY planning.

use crate::copy::{CopyFormat, CopyIn};
use crate::name::TableName;
use crate::plan::{PlainFirst, Plan};
use crate::rule::{MirrorErrorPolicy, Mode, ResolvedRule};
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
            // The fixture's tables have no OIDs.
            plain_first: None,
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

/// The fixture's `orders` rule, its tables given OIDs (16400 legacy, 16401 target).
fn orders_with_oids(mode: Mode, policy: MirrorErrorPolicy) -> ResolvedRule {
    let mut rule = rules()
        .lookup(&TableName::new(Some("public"), "orders"), &path())
        .expect("fixture rule")
        .clone();
    rule.rule.mode = mode;
    rule.rule.on_mirror_error = policy;
    rule.shape.legacy_oid = 16400;
    rule.shape.target_oid = 16401;
    rule
}

fn staged_insert(rule: &ResolvedRule) -> String {
    let rules = crate::ruleset::RuleSet::new(1, vec![rule.clone()]).expect("valid set");
    let insert = "INSERT INTO public.orders (customer_id, amount) \
                  SELECT customer_id, amount FROM pg_temp.tandem_copy_x";
    match crate::planner::plan(insert, &rules, &path()) {
        Plan::Rewritten(s) if s.len() == 1 => s[0].sql.clone(),
        other => panic!("expected one rewritten statement, got {other:?}"),
    }
}

fn copy_of(rule: &ResolvedRule) -> CopyIn {
    let rules = crate::ruleset::RuleSet::new(1, vec![rule.clone()]).expect("valid set");
    match crate::planner::plan(
        "COPY orders (customer_id, amount) FROM STDIN",
        &rules,
        &path(),
    ) {
        Plan::CopyIn(c) => c,
        other => panic!("expected CopyIn, got {other:?}"),
    }
}

#[test]
fn staged_rows_are_mirrored_by_plain_insert_first_then_by_the_upsert() {
    let rule = orders_with_oids(Mode::DualWrite, MirrorErrorPolicy::Fail);
    let copy = copy_of(&rule);
    let Some(PlainFirst {
        upsert,
        insert,
        mirror_oid,
    }) = copy.plain_first.clone()
    else {
        panic!("a plain-first form: {copy:?}");
    };
    assert_eq!(mirror_oid, 16401);
    assert!(
        upsert.contains("ON CONFLICT (id) DO UPDATE SET"),
        "{upsert}"
    );
    assert_eq!(
        insert,
        "tandem_m AS (INSERT INTO public.orders_v2 (id, customer_id, amount, note, created_at) \
         SELECT id, customer_id, amount, note, created_at FROM tandem_w)"
    );
    let planned = staged_insert(&rule);
    let sql = copy.mirror_statement(&planned);
    let (write, _) = planned.split_once(&upsert).expect("the upsert CTE");
    let check = "WHERE tandem.resolves_to('public.orders', 16400::oid, 'public.orders')";
    let finish = format!("SELECT count(*) INTO tandem_copy_rows FROM tandem_w {check}");
    let first = format!("BEGIN {write}{insert} {finish}; EXCEPTION WHEN unique_violation THEN");
    assert!(
        sql.starts_with("DO $tandem_copy$ #variable_conflict use_column\n"),
        "{sql}"
    );
    assert!(sql.contains(&first), "{sql}");
    assert!(sql.contains(
        "AND (16401::oid = c.oid OR 16401::oid IN (SELECT a.relid::oid \
         FROM pg_catalog.pg_partition_ancestors(c.oid) AS a))) THEN RAISE;"
    ));
    assert!(
        sql.ends_with(&format!("{write}{upsert} {finish}; END $tandem_copy$")),
        "{sql}"
    );
    // The rewrite's own statement ran the upsert alone.
    assert!(
        planned.ends_with(&format!("{upsert} SELECT FROM tandem_w {check}")),
        "{planned}"
    );
}

#[test]
fn plain_first_follows_cutover_into_the_legacy_table() {
    let rule = orders_with_oids(Mode::Cutover, MirrorErrorPolicy::Fail);
    let copy = copy_of(&rule);
    let forms = copy.plain_first.clone().expect("a plain-first form");
    assert_eq!(forms.mirror_oid, 16400);
    assert!(
        forms
            .insert
            .starts_with("tandem_m AS (INSERT INTO public.orders ("),
        "{forms:?}"
    );
    let sql = copy.mirror_statement(&staged_insert(&rule));
    assert!(sql.starts_with("DO $tandem_copy$"), "{sql}");
    assert!(
        sql.contains("INSERT INTO public.orders_v2 AS orders"),
        "{sql}"
    );
}

#[test]
fn record_policy_and_unknown_shapes_keep_the_rewrite() {
    let rule = orders_with_oids(Mode::DualWrite, MirrorErrorPolicy::Record);
    let copy = copy_of(&rule);
    assert_eq!(copy.plain_first, None);
    let planned = staged_insert(&rule);
    assert_eq!(copy.mirror_statement(&planned), planned);
    let copy = copy_of(&orders_with_oids(Mode::DualWrite, MirrorErrorPolicy::Fail));
    for other in [
        "SELECT 1",
        "WITH tandem_w AS (SELECT 1) SELECT FROM tandem_w",
    ] {
        assert_eq!(copy.mirror_statement(other), other);
    }
}

#[test]
fn dollar_quote_of_the_mirror_block_never_occurs_in_it() {
    let rule = orders_with_oids(Mode::DualWrite, MirrorErrorPolicy::Fail);
    let copy = copy_of(&rule);
    let planned =
        staged_insert(&rule).replace("SELECT customer_id", "SELECT '$tandem_copy$', customer_id");
    let sql = copy.mirror_statement(&planned);
    assert!(sql.starts_with("DO $tandem_copy_$ "), "{sql}");
    assert!(sql.ends_with(" END $tandem_copy_$"), "{sql}");
}
