//! MERGE rewrites (PostgreSQL 17 and 18), and MERGE's refusals before 17.

use crate::plan::{Plan, ResponseFix, StatementPlan, WriteTag};
use crate::planner::plan;
use crate::refusal::Rejection;
use crate::rule::{MirrorErrorPolicy, Mode};
use crate::ruleset::RuleSet;
use crate::testkit::{path, rules, ORDERS_UPSERT};

const PG17: u32 = 170_004;
const PG18: u32 = 180_001;

/// `ORDERS_UPSERT` of the inserted and updated rows only.
fn orders_upsert_merged() -> String {
    ORDERS_UPSERT.replace(
        "FROM tandem_w ON CONFLICT",
        "FROM tandem_w WHERE tandem_w.merge_action <> 'DELETE' ON CONFLICT",
    )
}

/// The deletion of deleted rows from `public.orders_v2`.
const ORDERS_MERGE_DELETE: &str = "tandem_d AS (DELETE FROM public.orders_v2 AS tandem_t \
USING tandem_w WHERE tandem_w.merge_action = 'DELETE' AND tandem_t.id = tandem_w.id \
AND NOT EXISTS (SELECT FROM tandem_w AS tandem_n WHERE tandem_n.merge_action <> 'DELETE' \
AND tandem_n.id = tandem_t.id))";

fn plan_on(sql: &str, set: RuleSet, version: u32) -> Plan {
    plan(sql, &set.with_server_version(version), &path())
}

fn one_on(sql: &str, set: RuleSet, version: u32) -> StatementPlan {
    match plan_on(sql, set, version) {
        Plan::Rewritten(mut s) if s.len() == 1 => s.remove(0),
        other => panic!("expected one rewrite of {sql}, got {other:?}"),
    }
}

fn rewritten_on(sql: &str, version: u32) -> StatementPlan {
    let p = one_on(sql, rules(), version);
    crate::parse::parse_statement(&p.sql)
        .unwrap_or_else(|e| panic!("rewrite of {sql} parses: {e}\n{}", p.sql));
    p
}

fn refused_on(sql: &str, set: RuleSet, version: u32) -> Rejection {
    match plan_on(sql, set, version) {
        Plan::Reject(r) => r,
        other => panic!("expected {sql} to be refused, got {other:?}"),
    }
}

const FULL: &str = "MERGE INTO orders o USING src s ON o.id = s.id \
WHEN MATCHED AND s.gone THEN DELETE \
WHEN MATCHED THEN UPDATE SET amount = s.amount \
WHEN NOT MATCHED THEN INSERT (id, amount) VALUES (s.id, s.amount)";

#[test]
fn merge_is_refused_before_17() {
    for version in [0, 150_010, 160_004] {
        let r = refused_on(FULL, rules(), version);
        assert_eq!(r.sqlstate, "0A000");
        assert_eq!(
            r.message,
            "tandem: MERGE into ruled table public.orders is mirrored from PostgreSQL 17 on \
             (MERGE ... RETURNING inside WITH); this server is older: rewrite as INSERT ... \
             ON CONFLICT, UPDATE and DELETE, or disable the rule"
        );
    }
    // A MERGE into another table that reads a ruled one is none of Tandem's business.
    let other = "MERGE INTO customers c USING orders o ON o.id = c.id WHEN MATCHED THEN DELETE";
    assert_eq!(plan_on(other, rules(), 160_000), Plan::Passthrough);
    assert_eq!(plan_on(other, rules(), PG17), Plan::Passthrough);
}

#[test]
fn every_action_is_mirrored_in_one_statement() {
    let p = rewritten_on(FULL, PG17);
    assert_eq!(
        p.sql,
        format!(
            "WITH tandem_w AS (MERGE INTO orders o USING src s ON o.id = s.id \
             WHEN MATCHED AND s.gone THEN DELETE \
             WHEN MATCHED THEN UPDATE SET amount = s.amount \
             WHEN NOT MATCHED THEN INSERT (id, amount) VALUES (s.id, s.amount) \
             RETURNING o.*, merge_action() AS merge_action), \
             {ORDERS_MERGE_DELETE}, {} SELECT FROM tandem_w",
            orders_upsert_merged()
        )
    );
    assert_eq!(
        p.response,
        ResponseFix::Mirror {
            tag: WriteTag::Merge,
            returning: false
        }
    );
    assert_eq!(WriteTag::Merge.tag(3), "MERGE 3");
}

#[test]
fn without_delete_only_the_upsert() {
    let p = rewritten_on(
        "MERGE INTO orders USING src ON orders.id = src.id \
         WHEN MATCHED THEN DO NOTHING \
         WHEN NOT MATCHED THEN INSERT (id, note) VALUES (src.id, $1)",
        PG18,
    );
    assert_eq!(
        p.sql,
        format!(
            "WITH tandem_w AS (MERGE INTO orders USING src ON orders.id = src.id \
             WHEN MATCHED THEN DO NOTHING \
             WHEN NOT MATCHED THEN INSERT (id, note) VALUES (src.id, $1) \
             RETURNING orders.*, merge_action() AS merge_action), {} SELECT FROM tandem_w",
            orders_upsert_merged()
        )
    );
}

#[test]
fn returning_reads_merge_action_from_the_carried_column() {
    let p = rewritten_on(
        &format!("{FULL} RETURNING merge_action(), o.id, merge_action()::text AS act, o.*"),
        PG17,
    );
    assert!(
        p.sql.starts_with(
            "WITH tandem_w AS (MERGE INTO orders o USING src s ON o.id = s.id WHEN MATCHED AND \
             s.gone THEN DELETE WHEN MATCHED THEN UPDATE SET amount = s.amount WHEN NOT MATCHED \
             THEN INSERT (id, amount) VALUES (s.id, s.amount) RETURNING o.*, CASE WHEN false \
             THEN ROW(merge_action(), o.id, merge_action()::TEXT) END AS tandem_check, \
             merge_action() AS merge_action), "
        ),
        "{}",
        p.sql
    );
    assert!(
        p.sql.ends_with(
            " SELECT o.merge_action, o.id, o.merge_action::TEXT AS act, o.id, o.customer_id, \
             o.amount, o.note, o.created_at FROM tandem_w AS o"
        ),
        "{}",
        p.sql
    );
    assert_eq!(
        p.response,
        ResponseFix::Mirror {
            tag: WriteTag::Merge,
            returning: true
        }
    );
}

#[test]
fn the_clients_with_and_only_are_kept() {
    let p = rewritten_on(
        "WITH s AS (SELECT 1 AS id) MERGE INTO ONLY orders USING s ON orders.id = s.id \
         WHEN MATCHED THEN UPDATE SET note = 'x'",
        PG17,
    );
    assert_eq!(
        p.sql,
        format!(
            "WITH s AS (SELECT 1 AS id), tandem_w AS (MERGE INTO ONLY orders USING s \
             ON orders.id = s.id WHEN MATCHED THEN UPDATE SET note = 'x' \
             RETURNING orders.*, merge_action() AS merge_action), {} SELECT FROM tandem_w",
            orders_upsert_merged()
        )
    );
}

#[test]
fn merge_into_only_is_a_write_to_the_ruled_table() {
    // The parser alone reads `ONLY` as the table and `orders` as its alias.
    let r = refused_on(
        "MERGE INTO ONLY orders USING s ON orders.id = s.id WHEN MATCHED THEN DELETE",
        rules(),
        160_000,
    );
    assert!(r.message.contains("MERGE into ruled table public.orders"));
}

#[test]
fn nested_merges_are_refused() {
    let r = refused_on(
        "WITH m AS (MERGE INTO orders o USING s ON o.id = s.id WHEN MATCHED THEN DELETE \
         RETURNING o.id) SELECT * FROM m",
        rules(),
        PG17,
    );
    assert!(r.message.contains("inside a WITH clause"), "{}", r.message);
}

#[test]
fn returning_other_tables_is_refused() {
    for (returning, what) in [
        ("*", "* (which includes the other tables' columns)"),
        ("s.id", "s.id"),
        ("s.*", "s.*"),
        ("old.id", "old.id"),
    ] {
        let r = refused_on(&format!("{FULL} RETURNING {returning}"), rules(), PG18);
        assert_eq!(
            r.message,
            format!(
                "tandem: RETURNING of a write to ruled table public.orders refers to {what}; \
                 Tandem can only return the ruled table's own columns when FROM/USING is present"
            )
        );
    }
}

#[test]
fn a_key_change_is_refused_on_17_and_mirrored_on_18() {
    let sql = "MERGE INTO events e USING src s ON e.id = s.id \
               WHEN MATCHED THEN UPDATE SET region = s.region";
    let r = refused_on(sql, rules(), PG17);
    assert_eq!(
        r.message,
        "tandem: UPDATE changes key/partition column region of ruled table public.events in \
         MERGE before PostgreSQL 18 (whose RETURNING OLD gives the old key); Tandem cannot \
         mirror a row move in that form"
    );
    let p = one_on(sql, rules(), PG18);
    assert_eq!(
        p.sql,
        "WITH tandem_w AS (MERGE INTO events e USING src s ON e.id = s.id \
         WHEN MATCHED THEN UPDATE SET region = s.region \
         RETURNING WITH (OLD AS tandem_old) e.*, merge_action() AS merge_action, \
         tandem_old.id AS tandem_old_id, tandem_old.region AS tandem_old_region), \
         tandem_d AS (DELETE FROM public.events_v2 AS tandem_t USING tandem_w \
         WHERE tandem_w.merge_action <> 'INSERT' AND tandem_t.id = tandem_w.tandem_old_id \
         AND tandem_t.region = tandem_w.tandem_old_region \
         AND NOT EXISTS (SELECT FROM tandem_w AS tandem_n WHERE tandem_n.merge_action <> 'DELETE' \
         AND tandem_n.id = tandem_t.id AND tandem_n.region = tandem_t.region)), \
         tandem_m AS (INSERT INTO public.events_v2 (id, region, payload, source) \
         SELECT id, region, payload, ('tandem') FROM tandem_w \
         WHERE tandem_w.merge_action <> 'DELETE' ON CONFLICT (id, region) \
         DO UPDATE SET payload = EXCLUDED.payload, source = EXCLUDED.source) \
         SELECT FROM tandem_w"
    );
    let mut record = rules();
    for r in &mut record.rules {
        r.rule.on_mirror_error = MirrorErrorPolicy::Record;
    }
    let r = refused_on(sql, record, PG18);
    assert!(
        r.message.contains("under the record error policy"),
        "{}",
        r.message
    );
}

#[test]
fn record_policy_mirrors_upserts_and_deletes_apart() {
    let mut set = rules();
    for r in &mut set.rules {
        r.rule.on_mirror_error = MirrorErrorPolicy::Record;
    }
    let p = one_on(FULL, set, PG17);
    assert_eq!(p.policy, Some(MirrorErrorPolicy::Record));
    let row = "tandem_w.id, tandem_w.customer_id, tandem_w.amount, tandem_w.note, \
               tandem_w.created_at";
    let call = |op: &str, rows_of: &str| {
        format!(
            "(SELECT tandem.mirror('{op}', 'public.orders', 'public.orders_v2', \
             ARRAY['id', 'customer_id', 'amount', 'note', 'created_at'], ARRAY['id'], \
             ARRAY[]::text[], ARRAY[]::text[], (SELECT array_agg(ROW({row})::public.orders) \
             FROM {rows_of}), '{}')) IS NOT NULL",
            FULL.replace('\'', "''")
        )
    };
    assert!(
        p.sql.ends_with(&format!(
            "RETURNING o.*, merge_action() AS merge_action) SELECT FROM tandem_w WHERE {} AND {}",
            call("update", "tandem_w WHERE tandem_w.merge_action <> 'DELETE'"),
            call(
                "delete",
                "tandem_w WHERE tandem_w.merge_action = 'DELETE' AND NOT EXISTS (SELECT FROM \
                 tandem_w AS tandem_n WHERE tandem_n.merge_action <> 'DELETE' AND \
                 tandem_n.id = tandem_w.id)"
            ),
        )),
        "{}",
        p.sql
    );
}

#[test]
fn cutover_merges_into_the_target_and_mirrors_into_legacy() {
    let mut set = rules();
    for r in &mut set.rules {
        if r.rule.table.name == "orders" {
            r.rule.mode = Mode::Cutover;
        }
    }
    let p = one_on(&format!("{FULL} RETURNING o.id"), set.clone(), PG17);
    assert_eq!(
        p.sql,
        "WITH tandem_w AS (MERGE INTO public.orders_v2 o USING src s ON o.id = s.id \
         WHEN MATCHED AND s.gone THEN DELETE \
         WHEN MATCHED THEN UPDATE SET amount = s.amount \
         WHEN NOT MATCHED THEN INSERT (id, amount) VALUES (s.id, s.amount) \
         RETURNING o.*, merge_action() AS merge_action), \
         tandem_d AS (DELETE FROM public.orders AS tandem_t USING tandem_w \
         WHERE tandem_w.merge_action = 'DELETE' AND tandem_t.id = tandem_w.id \
         AND NOT EXISTS (SELECT FROM tandem_w AS tandem_n WHERE tandem_n.merge_action <> 'DELETE' \
         AND tandem_n.id = tandem_t.id)), \
         tandem_m AS (INSERT INTO public.orders (id, customer_id, amount, note, created_at) \
         SELECT id, customer_id, amount, note, created_at FROM tandem_w \
         WHERE tandem_w.merge_action <> 'DELETE' ON CONFLICT (id) DO UPDATE SET \
         customer_id = EXCLUDED.customer_id, amount = EXCLUDED.amount, note = EXCLUDED.note, \
         created_at = EXCLUDED.created_at) SELECT o.id FROM tandem_w AS o"
    );
    assert_eq!(
        p.rule_table.map(|t| t.to_string()).as_deref(),
        Some("public.orders")
    );
    let r = refused_on(FULL, set, 160_000);
    assert!(
        r.message.contains("MERGE into ruled table public.orders"),
        "{}",
        r.message
    );
}

#[test]
fn cutover_refuses_positional_inserts_when_the_columns_differ() {
    let mut set = rules();
    for r in &mut set.rules {
        if r.rule.table.name == "events" {
            r.rule.mode = Mode::Cutover;
        }
    }
    let r = refused_on(
        "MERGE INTO events e USING src s ON e.id = s.id \
         WHEN NOT MATCHED THEN INSERT VALUES (s.id, 'eu', '{}')",
        set,
        PG17,
    );
    assert!(
        r.message
            .contains("INSERT without a column list in cutover"),
        "{}",
        r.message
    );
}

#[test]
fn foreign_merge_syntax_is_refused() {
    for sql in [
        "MERGE orders o USING src s ON o.id = s.id WHEN MATCHED THEN DELETE",
        "MERGE INTO orders o USING src s ON o.id = s.id WHEN MATCHED THEN UPDATE SET *",
        "MERGE INTO orders o USING src s ON o.id = s.id WHEN NOT MATCHED THEN INSERT ROW",
    ] {
        let r = refused_on(sql, rules(), PG17);
        assert_eq!(r.sqlstate, "0A000", "{sql}");
    }
}

#[test]
fn merge_into_only_with_an_alias_keeps_its_only() {
    // (The parser Tandem uses cannot read the rewrite back, as for UPDATE ONLY.)
    let p = one_on(
        "MERGE INTO ONLY orders AS o USING src s ON o.id = s.id WHEN MATCHED THEN DELETE",
        rules(),
        PG17,
    );
    assert!(
        p.sql
            .starts_with("WITH tandem_w AS (MERGE INTO ONLY orders AS o USING src s ON o.id = s.id WHEN MATCHED THEN DELETE RETURNING o.*, merge_action() AS merge_action), tandem_d AS"),
        "{}",
        p.sql
    );
}

#[test]
fn a_table_with_a_merge_action_column_is_refused() {
    let mut set = rules();
    for r in &mut set.rules {
        if r.rule.table.name == "tags" {
            r.shape.legacy_columns.push("merge_action".into());
        }
    }
    let r = refused_on(
        "MERGE INTO tags t USING src s ON t.id = s.id WHEN MATCHED THEN DELETE",
        set,
        PG17,
    );
    assert!(
        r.message.contains("column named merge_action"),
        "{}",
        r.message
    );
}
