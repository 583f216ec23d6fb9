//! The `record` forms. Every expected statement here was run on PostgreSQL 15 against tables
//! shaped like the fixture (see `tests/insert.rs`), once with a target that rejects the rows
//! (no partition, a NOT NULL or CHECK only the target has, a referencing foreign key) and
//! once with one that accepts them; `SUPPORT_SQL` was run there twice.

use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use super::*;
use crate::parse::parse_statement;
use crate::plan::{Plan, ResponseFix, StatementPlan, WriteTag};
use crate::planner::plan;
use crate::rule::MirrorErrorPolicy;
use crate::testkit::{path, rules};

/// The plans of `sql` with every fixture rule under the `record` policy.
fn recorded(sql: &str) -> Vec<StatementPlan> {
    let mut set = rules();
    for r in &mut set.rules {
        r.rule.on_mirror_error = MirrorErrorPolicy::Record;
    }
    match plan(sql, &set, &path()) {
        Plan::Rewritten(statements) => statements,
        other => panic!("expected a rewrite of {sql:?}, got {other:?}"),
    }
}

/// `input` is rewritten under `record` to exactly `expected`, which must parse.
fn assert_records(input: &str, expected: &str) {
    let statements = recorded(input);
    assert_eq!(statements.len(), 1, "{input}");
    assert_eq!(statements[0].sql, expected, "record rewrite of {input}");
    parse_statement(expected).expect("expected rewrite parses");
}

const ORDERS_ARGS: &str = "'public.orders', 'public.orders_v2', \
ARRAY['id', 'customer_id', 'amount', 'note', 'created_at'], ARRAY['id'], ARRAY[]::text[], \
ARRAY[]::text[], (SELECT array_agg(ROW(tandem_w.*)::public.orders) FROM tandem_w)";

const EVENTS_ARGS: &str = "'public.events', 'public.events_v2', \
ARRAY['id', 'region', 'payload'], ARRAY['id', 'region'], ARRAY['source'], ARRAY['''tandem'''], \
(SELECT array_agg(ROW(tandem_w.*)::public.events) FROM tandem_w)";

#[test]
fn insert_with_parameters_alias_and_returning() {
    let sql = "INSERT INTO orders AS o (customer_id, amount) VALUES ($1, $2) RETURNING o.id, amount * $3 AS dbl";
    assert_records(
        sql,
        &format!(
            "WITH tandem_w AS (INSERT INTO orders AS o (customer_id, amount) VALUES ($1, $2) \
             RETURNING *) SELECT o.id, amount * $3 AS dbl FROM tandem_w AS o WHERE \
             (SELECT tandem.mirror('insert', {ORDERS_ARGS}, '{sql}')) IS NOT NULL"
        ),
    );
    let plans = recorded(sql);
    assert_eq!(
        plans[0].response,
        ResponseFix::Mirror {
            tag: WriteTag::Insert,
            returning: true
        }
    );
    assert_eq!(plans[0].policy, Some(MirrorErrorPolicy::Record));
}

#[test]
fn insert_without_returning_into_a_partitioned_target_with_set_columns() {
    assert_records(
        "INSERT INTO events (region, payload) VALUES ('eu', 'a'), ('xx', 'bb')",
        &format!(
            "WITH tandem_w AS (INSERT INTO events (region, payload) VALUES ('eu', 'a'), ('xx', 'bb') \
             RETURNING *) SELECT FROM tandem_w WHERE (SELECT tandem.mirror('insert', {EVENTS_ARGS}, \
             'INSERT INTO events (region, payload) VALUES (''eu'', ''a''), (''xx'', ''bb'')')) \
             IS NOT NULL"
        ),
    );
}

#[test]
fn update_from_with_alias() {
    let sql = "UPDATE orders AS o SET note = c.name FROM customers c WHERE c.id = o.customer_id RETURNING o.id, o.note";
    assert_records(
        sql,
        &format!(
            "WITH tandem_w AS (UPDATE orders AS o SET note = c.name FROM customers c WHERE c.id = \
             o.customer_id RETURNING o.*) SELECT o.id, o.note FROM tandem_w AS o WHERE \
             (SELECT tandem.mirror('update', {ORDERS_ARGS}, '{sql}')) IS NOT NULL"
        ),
    );
    assert_eq!(
        recorded("UPDATE orders SET note = 'x'")[0].response,
        ResponseFix::Mirror {
            tag: WriteTag::Update,
            returning: false
        }
    );
}

#[test]
fn delete_returning_star() {
    assert_records(
        "DELETE FROM events WHERE region = 'us' RETURNING *",
        &format!(
            "WITH tandem_w AS (DELETE FROM events WHERE region = 'us' RETURNING *) SELECT * FROM \
             tandem_w AS events WHERE (SELECT tandem.mirror('delete', {EVENTS_ARGS}, \
             'DELETE FROM events WHERE region = ''us'' RETURNING *')) IS NOT NULL"
        ),
    );
    let sql = "DELETE FROM orders WHERE id = ANY($1::bigint[])";
    assert_records(
        sql,
        &format!(
            "WITH tandem_w AS (DELETE FROM orders WHERE id = ANY($1::BIGINT[]) RETURNING *) SELECT \
             FROM tandem_w WHERE (SELECT tandem.mirror('delete', {ORDERS_ARGS}, '{sql}')) IS NOT NULL"
        ),
    );
}

#[test]
fn quoted_names_are_passed_in_sql_and_catalog_spelling() {
    assert_records(
        "INSERT INTO app.\"Line Items\" (\"Id\", qty) VALUES (1, 200)",
        "WITH tandem_w AS (INSERT INTO app.\"Line Items\" (\"Id\", qty) VALUES (1, 200) RETURNING *) \
         SELECT FROM tandem_w WHERE (SELECT tandem.mirror('insert', 'app.\"Line Items\"', \
         'app.\"Line Items_v2\"', ARRAY['Id', 'qty'], ARRAY['Id'], ARRAY[]::text[], ARRAY[]::text[], \
         (SELECT array_agg(ROW(tandem_w.*)::app.\"Line Items\") FROM tandem_w), \
         'INSERT INTO app.\"Line Items\" (\"Id\", qty) VALUES (1, 200)')) IS NOT NULL",
    );
}

#[test]
fn the_statement_is_kept_verbatim() {
    // The client's own text, comments and all, not the parser's rendering; a backslash
    // makes it an E'' literal so it reads back the same whatever standard_conforming_strings.
    let plans = recorded("UPDATE orders SET note = E'a\\\\b' /* it's */ WHERE id = 1");
    assert!(
        plans[0].sql.ends_with(
            ", E'UPDATE orders SET note = E''a\\\\\\\\b'' /* it''s */ WHERE id = 1')) IS NOT NULL"
        ),
        "{}",
        plans[0].sql
    );
    assert_eq!(literal("a'b $1"), "'a''b $1'");
    assert_eq!(literal("a\\'"), "E'a\\\\'''");
}

#[test]
fn fail_policy_keeps_the_cte_form() {
    let plans = crate::testkit::rewritten("INSERT INTO orders (customer_id) VALUES (1)");
    assert!(plans[0].sql.contains("tandem_m AS ("), "{}", plans[0].sql);
    assert!(!plans[0].sql.contains("tandem.mirror"), "{}", plans[0].sql);
}

#[test]
fn support_sql_defines_the_function_and_the_drift_table() {
    // The guard's part (event triggers, DO blocks) is beyond the SQL parser; it is run
    // against a real server by every integration test.
    let record = include_str!("../record.sql");
    assert!(SUPPORT_SQL.starts_with(record));
    assert!(SUPPORT_SQL.contains("CREATE OR REPLACE FUNCTION tandem.guard_sync("));
    let statements = Parser::parse_sql(&PostgreSqlDialect {}, record).expect("parses");
    assert_eq!(statements.len(), 7, "schema, table, four functions, grant");
    assert!(SUPPORT_SQL.contains("CREATE SCHEMA IF NOT EXISTS tandem;"));
    assert!(SUPPORT_SQL.contains("CREATE TABLE IF NOT EXISTS tandem.drift ("));
    assert!(SUPPORT_SQL.contains("CREATE OR REPLACE FUNCTION tandem.mirror("));
    assert!(SUPPORT_SQL.contains("CREATE OR REPLACE FUNCTION tandem.resolves_to("));
    assert!(SUPPORT_SQL.contains("CREATE OR REPLACE FUNCTION tandem.record_drift("));
    assert!(SUPPORT_SQL.contains("CREATE OR REPLACE FUNCTION tandem.check_moved("));
    // The function's argument list is what `guard` passes, in that order.
    let args: Vec<String> = SUPPORT_SQL
        .split("CREATE OR REPLACE FUNCTION tandem.mirror(")
        .nth(1)
        .and_then(|rest| rest.split(") RETURNS integer").next())
        .expect("mirror's argument list")
        .split(',')
        .map(|a| a.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        args,
        [
            "operation text",
            "rule_table text",
            "target_table text",
            "columns text[]",
            "key_columns text[]",
            "set_columns text[]",
            "set_exprs text[]",
            "rows anyarray",
            "statement text",
        ]
    );
}
