//! Shared fixtures for the rewrite tests: a small rule set and round-trip assertions.
//!
//! The fixture mirrors the tables used to check every expected rewrite by hand on
//! PostgreSQL 15: `orders` (key `id`) moving to `orders_v2`, and `events` (key
//! `id, region`) moving to a LIST-partitioned `events_v2` with an extra `source` column.

use crate::name::TableName;
use crate::plan::{Plan, StatementPlan};
use crate::planner::plan;
use crate::refusal::Rejection;
use crate::rule::{Mode, ResolvedRule, Rule, TableShape};
use crate::ruleset::RuleSet;

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn resolved(
    rule: Rule,
    legacy: &[&str],
    target: &[&str],
    mirrored: &[&str],
    part: &[&str],
) -> ResolvedRule {
    let shape = TableShape {
        legacy_columns: strings(legacy),
        target_columns: strings(target),
        mirrored_columns: strings(mirrored),
        target_partition_key: strings(part),
        ..TableShape::default()
    };
    ResolvedRule::new(rule, shape).expect("fixture rule is valid")
}

fn table(name: &str) -> TableName {
    TableName::parse(name).expect("fixture name parses")
}

/// The fixture rules.
pub(crate) fn rules() -> RuleSet {
    let cols = ["id", "customer_id", "amount", "note", "created_at"];
    let orders = resolved(
        Rule::new(table("public.orders"), Mode::DualWrite, strings(&["id"])),
        &cols,
        &cols,
        &cols,
        &[],
    );
    let mut events_rule = Rule::new(
        table("public.events"),
        Mode::DualWrite,
        strings(&["id", "region"]),
    );
    events_rule.set = vec![("source".into(), "'tandem'".into())];
    let events = resolved(
        events_rule,
        &["id", "region", "payload"],
        &["id", "region", "payload", "source", "payload_len"],
        &["id", "region", "payload"],
        &["region"],
    );
    let items = resolved(
        Rule::new(
            table("app.\"Line Items\""),
            Mode::DualWrite,
            strings(&["Id"]),
        ),
        &["Id", "qty"],
        &["Id", "qty"],
        &["Id", "qty"],
        &[],
    );
    let tags = resolved(
        Rule::new(table("public.tags"), Mode::DualWrite, strings(&["id"])),
        &["id"],
        &["id"],
        &["id"],
        &[],
    );
    let logs = resolved(
        Rule::new(table("public.logs"), Mode::Off, strings(&["id"])),
        &["id"],
        &["id"],
        &["id"],
        &[],
    );
    let refunds = resolved(
        Rule::new(table("public.refunds"), Mode::UnionRead, strings(&["id"])),
        &["id"],
        &["id"],
        &["id"],
        &[],
    );
    RuleSet::new(7, vec![orders, events, items, tags, logs, refunds]).expect("fixture set is valid")
}

/// The fixture search_path.
pub(crate) fn path() -> Vec<String> {
    strings(&["public"])
}

/// Plan with the fixture rules and search_path.
pub(crate) fn plan_of(sql: &str) -> Plan {
    plan(sql, &rules(), &path())
}

/// The statements of a rewritten plan; panics on any other plan.
pub(crate) fn rewritten(sql: &str) -> Vec<StatementPlan> {
    match plan_of(sql) {
        Plan::Rewritten(statements) => statements,
        other => panic!("expected a rewrite of {sql:?}, got {other:?}"),
    }
}

/// `input` (one statement) is rewritten to exactly `expected`, which must parse.
pub(crate) fn assert_rewrites(input: &str, expected: &str) {
    let statements = rewritten(input);
    assert_eq!(statements.len(), 1, "{input}");
    assert_eq!(statements[0].sql, expected, "rewrite of {input}");
    crate::parse::parse_statement(expected).expect("expected rewrite parses");
}

/// `input` is sent unchanged.
pub(crate) fn assert_passthrough(input: &str) {
    assert_eq!(plan_of(input), Plan::Passthrough, "{input}");
}

/// The rejection for `input`; panics on any other plan.
pub(crate) fn rejection(input: &str) -> Rejection {
    match plan_of(input) {
        Plan::Reject(r) => r,
        other => panic!("expected {input:?} to be rejected, got {other:?}"),
    }
}

/// The mirror CTE for `orders` (upsert into `public.orders_v2` on `id`).
pub(crate) const ORDERS_UPSERT: &str = "tandem_m AS (INSERT INTO public.orders_v2 \
(id, customer_id, amount, note, created_at) SELECT id, customer_id, amount, note, created_at \
FROM tandem_w ON CONFLICT (id) DO UPDATE SET customer_id = EXCLUDED.customer_id, \
amount = EXCLUDED.amount, note = EXCLUDED.note, created_at = EXCLUDED.created_at)";

/// The mirror CTE for `events` (upsert into the partitioned `public.events_v2`).
pub(crate) const EVENTS_UPSERT: &str = "tandem_m AS (INSERT INTO public.events_v2 \
(id, region, payload, source) SELECT id, region, payload, ('tandem') FROM tandem_w \
ON CONFLICT (id, region) DO UPDATE SET payload = EXCLUDED.payload, source = EXCLUDED.source)";

/// The mirror CTE deleting from `public.orders_v2` by `id`.
pub(crate) const ORDERS_DELETE: &str = "tandem_m AS (DELETE FROM public.orders_v2 AS tandem_t \
USING tandem_w WHERE tandem_t.id = tandem_w.id)";
