//! Large statements: a bulk `INSERT ... VALUES` of many rows (what ORMs send) is planned
//! in time linear in its size. The timing itself is measured by hand with the ignored
//! `bulk_insert_phase_timings` (release build, `--nocapture`), never asserted.

use std::time::Instant;

use crate::bulk::{plan_split, split};
use crate::parse::{parse_statement, renders_faithfully};
use crate::plan::{Outcome, Plan};
use crate::planner::{plan_statement, plan_statement_as};
use crate::prefilter::{mentions_ruled_table, RuledNames};
use crate::refusal::Refusal;
use crate::rule::{MirrorErrorPolicy, Mode};
use crate::ruleset::RuleSet;
use crate::split::split_statements;
use crate::testkit::*;
use crate::writes::Ctx;

/// The bulk path's result for `sql` whatever its size (`None`: it declined).
fn bulk_path(sql: &str, rules: &RuleSet) -> Option<Result<Outcome, Refusal>> {
    let search_path = path();
    let ctx = Ctx {
        rules,
        search_path: &search_path,
    };
    plan_split(sql, &RuledNames::new(rules), |skeleton, client| {
        plan_statement_as(skeleton, client, ctx)
    })
}

/// The ordinary path's result for `sql`.
fn ordinary_path(sql: &str, rules: &RuleSet) -> Result<Outcome, Refusal> {
    let search_path = path();
    plan_statement(
        sql,
        Ctx {
            rules,
            search_path: &search_path,
        },
    )
}

fn sql_of(outcome: Result<Outcome, Refusal>) -> String {
    match outcome {
        Ok(Outcome::Rewritten(p)) => p.sql,
        Ok(Outcome::Untouched) => "untouched".into(),
        Ok(Outcome::CopyIn(_)) => "copy".into(),
        Err(refusal) => format!("refused: {refusal:?}"),
    }
}

#[test]
fn the_bulk_path_plans_as_the_ordinary_path_does() {
    let mut record = rules();
    for r in &mut record.rules {
        r.rule.on_mirror_error = MirrorErrorPolicy::Record;
    }
    let in_mode = |mode: Mode| {
        let mut set = rules();
        for r in set.rules.iter_mut().filter(|r| r.rule.mode != Mode::Off) {
            r.rule.mode = mode;
        }
        set
    };
    for set in [
        rules(),
        record,
        in_mode(Mode::UnionRead),
        in_mode(Mode::Cutover),
        in_mode(Mode::TargetOnly),
    ] {
        for sql in [
            "INSERT INTO orders (id, amount) VALUES (1, 10), (2, 20)",
            "INSERT INTO orders AS o (id, amount) VALUES (1, 10), (2, 20) RETURNING o.id, amount",
            "INSERT INTO orders (id, amount) VALUES (1, 10), (2, 20) ON CONFLICT (id) DO NOTHING",
            "INSERT INTO orders (id, amount) VALUES (1, 10) ON CONFLICT (id) DO UPDATE SET amount = EXCLUDED.amount RETURNING *",
            "INSERT INTO orders (id, amount) VALUES (1, 10) ON CONFLICT (id) DO UPDATE SET id = 7",
            "INSERT INTO events (id, region, payload) VALUES (1, 'eu', 'x'), (2, 'us', $1)",
            "INSERT INTO public.events VALUES (1, 'eu', DEFAULT)",
            "INSERT INTO refunds (id) VALUES (1), (2)",
            "INSERT INTO logs (id) VALUES (1), (2)",
            "INSERT INTO orders_v2 (id) VALUES (1), (2)",
        ] {
            let bulk = bulk_path(sql, &set).unwrap_or_else(|| panic!("bulk path declined {sql}"));
            assert_eq!(sql_of(bulk), sql_of(ordinary_path(sql, &set)), "{sql}");
        }
    }
}

#[test]
fn bulk_rows_are_sent_as_the_client_wrote_them() {
    let sql = "INSERT INTO orders (id, note) values (1,'a'),/* two */( 2 , 'b;)' ) -- end";
    let bulk = split(sql, &RuledNames::new(&rules())).expect("a bulk insert");
    assert_eq!(bulk.rows, "(1,'a'),/* two */( 2 , 'b;)' )");
    let rewritten = sql_of(bulk_path(sql, &rules()).unwrap());
    assert!(
        rewritten.starts_with(
            "WITH tandem_w AS (INSERT INTO orders (id, note) VALUES (1,'a'),/* two */( 2 , 'b;)' ) RETURNING *), "
        ),
        "{rewritten}"
    );
    parse_statement(&rewritten).expect("the rewrite parses");
}

#[test]
fn unusual_bulk_inserts_take_the_ordinary_path() {
    let names = RuledNames::new(&rules());
    for sql in [
        // A row names a ruled table: a rename or a read rewrite may be needed inside it.
        "INSERT INTO orders (id) VALUES (1), ((SELECT max(id) FROM orders_v2))",
        "INSERT INTO orders (id) VALUES (1), ((SELECT max(id) FROM \"orders\"))",
        // Something other than ON CONFLICT, RETURNING or the end follows the rows.
        "INSERT INTO orders (id) VALUES (1), (2) ORDER BY 1",
        "INSERT INTO orders (id) VALUES (1), (2) LIMIT 1",
        // Not a plain INSERT ... VALUES.
        "WITH x AS (SELECT 1) INSERT INTO orders (id) VALUES (1)",
        "INSERT INTO orders (id) SELECT 1",
        "INSERT INTO orders DEFAULT VALUES",
        "INSERT INTO values (a) VALUES (1)",
        // Unbalanced or unterminated rows.
        "INSERT INTO orders (id) VALUES (1), (2",
        "INSERT INTO orders (id) VALUES (1), ('2)",
        // The client's own text spells the marker.
        "INSERT INTO orders (id) VALUES (1) RETURNING 1 AS tandem_bulk_rows",
    ] {
        assert_eq!(split(sql, &names), None, "{sql}");
    }
}

/// `INSERT INTO orders (...) VALUES (...), ...` with `rows` rows of about 20 bytes each.
pub(crate) fn bulk_insert(rows: usize) -> String {
    let mut sql = String::from("INSERT INTO orders (id, amount, note) VALUES ");
    for i in 0..rows {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&format!("({i}, {}, 'n')", i % 1000));
    }
    sql
}

#[test]
fn bulk_insert_is_rewritten_whole() {
    let sql = bulk_insert(2_000);
    let plans = rewritten(&sql);
    assert_eq!(plans.len(), 1);
    let body = sql.strip_prefix("INSERT INTO orders ").unwrap();
    assert!(plans[0].sql.contains(body), "every row is in the rewrite");
    assert!(plans[0].sql.ends_with(&format!(
        "RETURNING *), {ORDERS_UPSERT} SELECT FROM tandem_w"
    )));
}

/// Prints where planning a 100,000-row INSERT spends its time:
/// `CARGO_TARGET_DIR=... cargo test --release -p tandem-rules bulk_insert_phase_timings -- --ignored --nocapture`
#[test]
#[ignore = "a measurement, run by hand in a release build"]
fn bulk_insert_phase_timings() {
    let sql = bulk_insert(100_000);
    println!("statement: {} bytes", sql.len());
    let rules = rules();
    let names = RuledNames::new(&rules);
    let time = |label: &str, f: &mut dyn FnMut()| {
        let start = Instant::now();
        f();
        println!(
            "{label:>24}: {:>8.1} ms",
            start.elapsed().as_secs_f64() * 1e3
        );
    };
    time("prefilter", &mut || {
        assert!(mentions_ruled_table(&sql, &names))
    });
    time("split", &mut || assert_eq!(split_statements(&sql).len(), 1));
    time("ddl::check", &mut || {
        let ctx = crate::writes::Ctx {
            rules: &rules,
            search_path: &path(),
        };
        assert!(crate::ddl::check(&sql, ctx).is_none());
    });
    time("only::strip", &mut || {
        assert!(crate::only::strip(&sql).marks.is_empty())
    });
    let mut stmt = None;
    time("parse", &mut || stmt = Some(parse_statement(&sql).unwrap()));
    let stmt = stmt.unwrap();
    let mut rendered = String::new();
    time("render (Display)", &mut || rendered = stmt.to_string());
    time("clone tree", &mut || drop(stmt.clone()));
    time("renders_faithfully", &mut || {
        assert!(renders_faithfully(&stmt))
    });
    time("ordinary path, whole", &mut || {
        let ctx = crate::writes::Ctx {
            rules: &rules,
            search_path: &path(),
        };
        assert!(crate::planner::plan_statement(&sql, ctx).is_ok());
    });
    time("bulk split", &mut || {
        assert!(crate::bulk::split(&sql, &names).is_some())
    });
    time("plan (bulk path)", &mut || {
        assert!(matches!(plan_of(&sql), Plan::Rewritten(_)))
    });
}
