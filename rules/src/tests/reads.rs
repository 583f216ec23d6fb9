//! Reads under union_read and cutover, and target_only renames.

use std::sync::Arc;

use crate::name::TableName;
use crate::plan::{ColumnOrigin, Plan, ResponseFix, StatementPlan};
use crate::planner::plan;
use crate::rule::{ColumnInfo, Mode, ResolvedRule, Rule, TableShape};
use crate::ruleset::RuleSet;

fn col(name: &str, ty: &str, attnum: i16) -> ColumnInfo {
    ColumnInfo {
        name: name.into(),
        sql_type: ty.into(),
        attnum,
        collation: 0,
    }
}

/// `public.orders (id bigint, amount numeric, note text)` -> `orders_v2` with `note` as
/// varchar and an extra `tenant`; `public.items (id int, qty int)` -> `items_v2`, same shape.
fn rules(orders: Mode, items: Mode) -> RuleSet {
    let orders_shape = TableShape {
        legacy_columns: vec!["id".into(), "amount".into(), "note".into()],
        target_columns: vec!["id".into(), "tenant".into(), "amount".into(), "note".into()],
        mirrored_columns: vec!["id".into(), "amount".into(), "note".into()],
        target_partition_key: vec![],
        legacy_oid: 1000,
        target_oid: 2000,
        legacy_table: vec![
            col("id", "bigint", 1),
            col("amount", "numeric", 3),
            col("note", "text", 4),
        ],
        target_table: vec![
            col("id", "bigint", 1),
            col("tenant", "text", 2),
            col("amount", "numeric", 3),
            col("note", "character varying", 4),
        ],
        legacy_primary_key: vec!["id".into()],
        guard_ready: false,
    };
    let items_shape = TableShape {
        legacy_columns: vec!["id".into(), "qty".into()],
        target_columns: vec!["id".into(), "qty".into()],
        mirrored_columns: vec!["id".into(), "qty".into()],
        target_partition_key: vec![],
        legacy_oid: 3000,
        target_oid: 4000,
        legacy_table: vec![col("id", "integer", 1), col("qty", "integer", 2)],
        target_table: vec![col("id", "integer", 1), col("qty", "integer", 2)],
        legacy_primary_key: vec!["id".into()],
        guard_ready: false,
    };
    let table = |t: &str| TableName::parse(t).unwrap();
    let orders = ResolvedRule::new(
        Rule::new(table("public.orders"), orders, vec!["id".into()]),
        orders_shape,
    )
    .unwrap();
    let items = ResolvedRule::new(
        Rule::new(table("public.items"), items, vec!["id".into()]),
        items_shape,
    )
    .unwrap();
    RuleSet::new(3, vec![orders, items]).unwrap()
}

fn one(sql: &str, set: &RuleSet) -> StatementPlan {
    match plan(sql, set, &["public".to_string()]) {
        Plan::Rewritten(mut s) if s.len() == 1 => s.remove(0),
        other => panic!("expected one rewritten statement for {sql}, got {other:?}"),
    }
}

const ORDERS_UNION: &str = "(SELECT id, amount, note::TEXT AS note FROM public.orders_v2 UNION ALL SELECT id, amount, note FROM public.orders AS tandem_l WHERE NOT EXISTS (SELECT 1 FROM public.orders_v2 AS tandem_k WHERE tandem_k.id = tandem_l.id))";

#[test]
fn union_read_swaps_the_table_for_target_plus_missing_legacy_rows() {
    let set = rules(Mode::UnionRead, Mode::Off);
    let p = one("SELECT * FROM orders WHERE id = $1", &set);
    assert_eq!(
        p.sql,
        format!("SELECT * FROM {ORDERS_UNION} AS orders WHERE id = $1")
    );
    crate::parse::parse_statement(&p.sql).unwrap();
    let o = |attnum| {
        Some(ColumnOrigin {
            table_oid: 1000,
            attnum,
        })
    };
    assert_eq!(
        p.response,
        ResponseFix::Read {
            origins: Arc::from([o(1), o(3), o(4)])
        }
    );
}

#[test]
fn after_a_finished_backfill_union_read_reads_the_target_alone() {
    let mut set = rules(Mode::UnionRead, Mode::Off);
    let mut orders = set.rules[0].clone();
    orders.rule.backfilled = true;
    set = RuleSet::new(4, vec![orders, set.rules[1].clone()]).unwrap();
    let p = one("SELECT * FROM orders o WHERE id = $1", &set);
    assert_eq!(
        p.sql,
        "SELECT * FROM (SELECT id, amount, note::TEXT AS note FROM public.orders_v2) o WHERE id = $1"
    );
    // Writes are mirrored as before.
    let w = plan(
        "UPDATE orders SET note = 'x' WHERE id = 1",
        &set,
        &["public".to_string()],
    );
    assert!(matches!(w, Plan::Rewritten(_)), "{w:?}");
}

/// The rule set of [`rules`] with `orders` in union_read at the watermark `to`.
fn with_watermark(to: &[&str], edit: impl FnOnce(&mut ResolvedRule)) -> RuleSet {
    let set = rules(Mode::UnionRead, Mode::Off);
    let mut orders = set.rules[0].clone();
    orders.rule.backfilled_to = Some(to.iter().map(|s| s.to_string()).collect());
    edit(&mut orders);
    RuleSet::new(5, vec![orders, set.rules[1].clone()]).unwrap()
}

#[test]
fn a_backfill_watermark_splits_the_union_at_the_key_with_no_anti_join() {
    let set = with_watermark(&["900"], |_| {});
    let p = one("SELECT * FROM orders o WHERE id = $1", &set);
    assert_eq!(
        p.sql,
        "SELECT * FROM (SELECT id, amount, note FROM (SELECT id, amount, note::TEXT AS note, true AS tandem_from_target FROM public.orders_v2 \
         UNION ALL SELECT id, amount, note, false FROM public.orders AS tandem_l) AS tandem_u \
         WHERE CASE WHEN tandem_u.tandem_from_target THEN tandem_u.id <= '900' ELSE tandem_u.id > '900' END) o WHERE id = $1"
    );
    // The same origins as the anti-join union's.
    let ResponseFix::Read { origins } = &p.response else {
        panic!("{:?}", p.response)
    };
    assert_eq!(origins.len(), 3);
    // A quote in a text key is escaped; a backslash makes it an E'' literal whatever
    // standard_conforming_strings is.
    let set = with_watermark(&["it's \\ here"], |_| {});
    let p = one("SELECT * FROM orders WHERE id = 1", &set);
    assert!(
        p.sql.contains("tandem_u.id <= E'it\\'s \\\\ here'"),
        "{}",
        p.sql
    );
}

#[test]
fn a_composite_watermark_compares_rows_and_bounds_the_first_column() {
    let set = with_watermark(&["150", "acme"], |orders| {
        orders.rule.key = vec!["id".into(), "note".into()];
        // The target's note is varchar; make it text so the split applies.
        orders.shape.target_table[3].sql_type = "text".into();
    });
    let p = one("SELECT count(*) FROM orders", &set);
    assert!(
        p.sql.contains(
            "CASE WHEN tandem_u.tandem_from_target THEN tandem_u.id <= '150' AND ROW(tandem_u.id, tandem_u.note) <= ROW('150', 'acme') \
             ELSE tandem_u.id >= '150' AND ROW(tandem_u.id, tandem_u.note) > ROW('150', 'acme') END"
        ),
        "{}",
        p.sql
    );
}

#[test]
fn no_split_where_the_tables_order_keys_differently_or_the_watermark_does_not_fit() {
    let anti_join = |set: &RuleSet| {
        let p = one("SELECT * FROM orders WHERE id = 1", set);
        p.sql.contains("NOT EXISTS") && !p.sql.contains("tandem_from_target")
    };
    // Another key type in the target.
    let set = with_watermark(&["900"], |o| {
        o.shape.target_table[0].sql_type = "numeric".into()
    });
    assert!(anti_join(&set));
    // Another collation.
    let set = with_watermark(&["900"], |o| o.shape.target_table[0].collation = 950);
    assert!(anti_join(&set));
    // A watermark of another width than the key (a key changed under it).
    let set = with_watermark(&["900", "x"], |_| {});
    assert!(anti_join(&set));
    // No catalog facts: types unknown.
    let set = with_watermark(&["900"], |o| o.shape.target_table.clear());
    assert!(anti_join(&set));
    // A finished backfill still reads the target alone.
    let set = with_watermark(&["900"], |o| o.rule.backfilled = true);
    let p = one("SELECT * FROM orders WHERE id = 1", &set);
    assert!(!p.sql.contains("UNION"), "{}", p.sql);
    // cutover reads the target alone whatever the watermark.
    let set = with_watermark(&["900"], |o| o.rule.mode = Mode::Cutover);
    let p = one("SELECT * FROM orders WHERE id = 1", &set);
    assert!(!p.sql.contains("UNION"), "{}", p.sql);
}

#[test]
fn the_layout_leaves_watermarks_out_and_the_mask_says_which_rules_have_one() {
    let a = with_watermark(&["900"], |_| {});
    let b = with_watermark(&["1800"], |_| {});
    let none = rules(Mode::UnionRead, Mode::Off);
    assert_eq!(a.layout(), b.layout());
    assert_eq!(a.layout(), none.layout());
    assert_eq!((a.watermarks(), none.watermarks()), (1, 0));
    let cutover = with_watermark(&["900"], |o| o.rule.mode = Mode::Cutover);
    assert_ne!(a.layout(), cutover.layout());
}

#[test]
fn aliases_joins_subqueries_and_ctes() {
    let set = rules(Mode::UnionRead, Mode::Off);
    let p = one(
        "SELECT o.note, c.name, o.amount * 2 FROM public.orders o JOIN customers c ON c.id = o.id",
        &set,
    );
    assert_eq!(
        p.sql,
        format!("SELECT o.note, c.name, o.amount * 2 FROM {ORDERS_UNION} o JOIN customers c ON c.id = o.id")
    );
    let ResponseFix::Read { origins } = &p.response else {
        panic!()
    };
    assert_eq!(
        &origins[..],
        &[
            Some(ColumnOrigin {
                table_oid: 1000,
                attnum: 4
            }),
            None,
            None
        ]
    );
    let p = one(
        "SELECT count(*) FROM (SELECT id FROM orders WHERE amount > 1) s",
        &set,
    );
    assert!(
        p.sql
            .contains(&format!("FROM {ORDERS_UNION} AS orders WHERE amount > 1")),
        "{}",
        p.sql
    );
    let p = one("WITH x AS (SELECT id FROM orders) SELECT * FROM x", &set);
    assert!(
        p.sql.starts_with(&format!(
            "WITH x AS (SELECT id FROM {ORDERS_UNION} AS orders)"
        )),
        "{}",
        p.sql
    );
    // A CTE named like the ruled table shadows it.
    assert_eq!(
        plan(
            "WITH orders AS (SELECT 1 AS id) SELECT * FROM orders",
            &set,
            &["public".into()]
        ),
        Plan::Passthrough
    );
    let p = one("EXPLAIN SELECT * FROM orders WHERE id = 1", &set);
    assert!(
        p.sql.starts_with("EXPLAIN SELECT * FROM (SELECT id"),
        "{}",
        p.sql
    );
}

#[test]
fn locking_reads_stay_on_legacy_in_union_read_but_not_in_cutover() {
    let set = rules(Mode::UnionRead, Mode::Off);
    assert_eq!(
        plan(
            "SELECT * FROM orders WHERE id = 1 FOR UPDATE",
            &set,
            &["public".into()]
        ),
        Plan::Passthrough
    );
    let set = rules(Mode::Cutover, Mode::Off);
    let p = one("SELECT * FROM orders WHERE id = 1 FOR UPDATE", &set);
    assert_eq!(
        p.sql,
        "SELECT * FROM (SELECT id, amount, note::TEXT AS note FROM public.orders_v2) AS orders WHERE id = 1 FOR UPDATE"
    );
}

#[test]
fn a_prepared_read_is_the_rewritten_read() {
    let set = rules(Mode::UnionRead, Mode::Off);
    let p = one(
        "PREPARE q (bigint) AS SELECT * FROM orders WHERE id = $1",
        &set,
    );
    assert_eq!(
        p.sql,
        format!("PREPARE q (BIGINT) AS SELECT * FROM {ORDERS_UNION} AS orders WHERE id = $1")
    );
    // The origins are for its EXECUTE's RowDescription.
    let ResponseFix::Read { origins } = &p.response else {
        panic!("{:?}", p.response)
    };
    assert_eq!(origins.len(), 3);
    assert_eq!(origins[2].map(|o| (o.table_oid, o.attnum)), Some((1000, 4)));
    let set = rules(Mode::Cutover, Mode::Off);
    let p = one("prepare q as select count(*) from public.orders", &set);
    assert_eq!(
        p.sql,
        "PREPARE q AS SELECT count(*) FROM (SELECT id, amount, note::TEXT AS note FROM public.orders_v2) AS orders"
    );
    // A prepared write is still refused (see the planner's tests), and a prepared read of
    // a table in dual_write is left alone.
    let set = rules(Mode::DualWrite, Mode::Off);
    assert_eq!(
        plan(
            "PREPARE q AS SELECT * FROM orders",
            &set,
            &["public".into()]
        ),
        Plan::Passthrough
    );
}

#[test]
fn reads_inside_writes_are_not_swapped() {
    let set = rules(Mode::UnionRead, Mode::Off);
    assert_eq!(
        plan(
            "INSERT INTO log SELECT id FROM orders",
            &set,
            &["public".into()]
        ),
        Plan::Passthrough
    );
}

#[test]
fn origins_stop_at_a_wildcard_of_unknown_width() {
    let set = rules(Mode::UnionRead, Mode::UnionRead);
    let p = one("SELECT c.*, o.id FROM customers c, orders o", &set);
    let ResponseFix::Read { origins } = &p.response else {
        panic!()
    };
    assert!(origins.is_empty());
    let p = one(
        "SELECT o.*, i.qty AS q FROM orders o JOIN items i USING (id)",
        &set,
    );
    let ResponseFix::Read { origins } = &p.response else {
        panic!()
    };
    assert_eq!(origins.len(), 4);
    assert_eq!(
        origins[3],
        Some(ColumnOrigin {
            table_oid: 3000,
            attnum: 2
        })
    );
    // Set operations report no origins, as Postgres does.
    let p = one("SELECT id FROM orders UNION SELECT id FROM items", &set);
    assert_eq!(
        p.response,
        ResponseFix::Read {
            origins: Arc::from([])
        }
    );
}

#[test]
fn target_only_renames_every_use() {
    let set = rules(Mode::TargetOnly, Mode::Off);
    let path = ["public".to_string()];
    for (input, expected) in [
        (
            "SELECT * FROM orders WHERE orders.id = 1",
            "SELECT * FROM public.orders_v2 AS orders WHERE orders.id = 1",
        ),
        (
            "INSERT INTO orders (id) VALUES (1) RETURNING id",
            "INSERT INTO public.orders_v2 AS orders (id) VALUES (1) RETURNING id",
        ),
        (
            "UPDATE orders o SET note = 'x' WHERE o.id = 1",
            "UPDATE public.orders_v2 o SET note = 'x' WHERE o.id = 1",
        ),
        (
            "DELETE FROM public.orders WHERE id = 1",
            "DELETE FROM public.orders_v2 AS orders WHERE id = 1",
        ),
        ("TRUNCATE orders", "TRUNCATE public.orders_v2"),
        ("COPY orders FROM STDIN", "COPY public.orders_v2 FROM STDIN"),
        ("COPY orders TO STDOUT", "COPY public.orders_v2 TO STDOUT"),
    ] {
        let p = one(input, &set);
        assert_eq!(p.sql, expected, "{input}");
        assert_eq!(p.response, ResponseFix::None);
    }
    assert_eq!(
        plan("ALTER TABLE orders ADD COLUMN x int", &set, &path),
        Plan::Passthrough
    );
}

#[test]
fn mixed_modes_in_one_statement() {
    let set = rules(Mode::TargetOnly, Mode::DualWrite);
    let p = one("INSERT INTO items (id, qty) SELECT id, 1 FROM orders", &set);
    assert!(
        p.sql.starts_with("WITH tandem_w AS (INSERT INTO items (id, qty) SELECT id, 1 FROM public.orders_v2 AS orders RETURNING *)"),
        "{}",
        p.sql
    );
}
