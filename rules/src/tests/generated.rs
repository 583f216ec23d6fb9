//! A column generated in legacy but plain in the target: the target gets the value legacy
//! computed, a cutover never writes it back, and RETURNING may name it.

use crate::name::TableName;
use crate::plan::Plan;
use crate::planner::plan;
use crate::rule::{mirrored_columns, ColumnInfo, Mode, ResolvedRule, Rule, TableShape};
use crate::ruleset::RuleSet;

fn flags(cols: &[(&str, bool)]) -> Vec<(String, bool)> {
    cols.iter().map(|(c, g)| (c.to_string(), *g)).collect()
}

fn info(names: &[&str]) -> Vec<ColumnInfo> {
    names
        .iter()
        .zip(1..)
        .map(|(n, attnum)| ColumnInfo {
            name: n.to_string(),
            sql_type: "integer".into(),
            attnum,
            collation: 0,
        })
        .collect()
}

/// `public.lines (id, qty, price, total GENERATED)` to `public.lines_v2 (id, qty, price,
/// total)`, in `mode`.
fn lines(mode: Mode) -> RuleSet {
    let legacy = flags(&[
        ("id", false),
        ("qty", false),
        ("price", false),
        ("total", true),
    ]);
    let target = flags(&[
        ("id", false),
        ("qty", false),
        ("price", false),
        ("total", false),
    ]);
    let all = ["id", "qty", "price", "total"];
    let shape = TableShape {
        legacy_columns: vec!["id".into(), "qty".into(), "price".into()],
        target_columns: all.iter().map(|c| c.to_string()).collect(),
        mirrored_columns: mirrored_columns(&legacy, &target),
        legacy_table: info(&all),
        target_table: info(&all),
        legacy_primary_key: vec!["id".into()],
        ..TableShape::default()
    };
    let rule = Rule::new(
        TableName::new(Some("public"), "lines"),
        mode,
        vec!["id".into()],
    );
    RuleSet::new(1, vec![ResolvedRule::new(rule, shape).unwrap()]).unwrap()
}

fn one(sql: &str, rules: &RuleSet) -> String {
    match plan(sql, rules, &["public".into()]) {
        Plan::Rewritten(mut s) => s.remove(0).sql,
        other => panic!("{sql}: {other:?}"),
    }
}

#[test]
fn mirrored_columns_take_legacy_generated_columns_the_target_has_plain() {
    let legacy = flags(&[
        ("id", false),
        ("total", true),
        ("tax", true),
        ("note", false),
    ]);
    let target = flags(&[("id", false), ("total", false), ("tax", true)]);
    assert_eq!(mirrored_columns(&legacy, &target), ["id", "total"]);
}

#[test]
fn generated_legacy_column_is_copied_into_a_plain_target_column() {
    let sql = one(
        "UPDATE lines SET qty = 2 WHERE id = 1",
        &lines(Mode::DualWrite),
    );
    assert!(
        sql.contains(
            "INSERT INTO public.lines_v2 (id, qty, price, total) SELECT id, qty, price, total \
             FROM tandem_w ON CONFLICT (id) DO UPDATE SET qty = EXCLUDED.qty, \
             price = EXCLUDED.price, total = EXCLUDED.total"
        ),
        "{sql}"
    );
}

#[test]
fn cutover_never_writes_a_column_legacy_generates() {
    let sql = one(
        "UPDATE lines SET qty = 2 WHERE id = 1",
        &lines(Mode::Cutover),
    );
    assert!(
        sql.contains(
            "INSERT INTO public.lines (id, qty, price) SELECT id, qty, price FROM tandem_w"
        ),
        "{sql}"
    );
}

#[test]
fn returning_an_unqualified_generated_column_with_from_is_mirrored() {
    let rules = lines(Mode::DualWrite);
    let sql = one(
        "UPDATE lines l SET qty = s.qty FROM src s WHERE s.id = l.id RETURNING total, l.id",
        &rules,
    );
    assert!(
        sql.ends_with("SELECT total, l.id FROM tandem_w AS l"),
        "{sql}"
    );
    let sql = one(
        "DELETE FROM lines l USING src s WHERE s.id = l.id RETURNING total",
        &rules,
    );
    assert!(sql.ends_with("SELECT total FROM tandem_w AS l"), "{sql}");
    // A column of neither table is still refused.
    assert!(matches!(
        plan(
            "DELETE FROM lines l USING src s WHERE s.id = l.id RETURNING nope",
            &rules,
            &["public".into()]
        ),
        Plan::Reject(_)
    ));
}
