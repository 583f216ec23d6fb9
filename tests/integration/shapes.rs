//! Shadow reads per query shape: every shape gets its comparisons however rare, the gate
//! names a shape whose target rows differ or that is slower on the target, and a simple
//! query and a prepared statement of one read are one shape.

use std::time::{Duration, Instant};

use tandem::ops::parity::{self, Options, TableReport};
use tandem_rules::TableName;
use tandem_tests::mirror::{config_with, start_ruled_proxy, Kind, Pair};
use tandem_tests::{pg, through};

use crate::lifecycle::tandem_bin;

/// A config sampling `pair`'s reads at `rate`, with per-shape coverage that flushes fast.
fn shapes_config(pair: &Pair, rate: f64, min_comparisons: i64) -> tandem::Config {
    let mut config = config_with(&[pair.rule(Kind::Hash).sample(rate).guard("off")]);
    config.shadow.flush_ms = 100;
    config.shadow.min_comparisons = min_comparisons;
    config
}

/// `(fingerprint, shape, executions, comparisons)` of every shape of `pair`'s table.
/// A HASH pair whose legacy rows are `rows` (an `INSERT ... SELECT` column list and query
/// after `INSERT INTO {legacy} (tenant, amount, note)`), already copied into the target,
/// then `after` (more SQL, may be empty).
async fn filled_pair(direct: &tokio_postgres::Client, rows: &str, after: &str) -> Pair {
    let pair = Pair::new(Kind::Hash);
    pair.create(Kind::Hash, direct).await;
    direct
        .batch_execute(&pair.sql(&format!(
            "INSERT INTO {{legacy}} (tenant, amount, note) {rows};
             INSERT INTO {{target}} SELECT * FROM {{legacy}}; {after}"
        )))
        .await
        .unwrap();
    pair
}

async fn stored_shapes(
    check: &tokio_postgres::Client,
    schema: &str,
    pair: &Pair,
) -> Vec<(String, String, i64, i64)> {
    check
        .query(
            &format!(
                "SELECT fingerprint, shape, executions, comparisons FROM \"{schema}\".shadow_shapes \
                 WHERE rule_table = $1 ORDER BY executions DESC"
            ),
            &[&format!("public.{}", pair.legacy)],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

/// Waits (at most 30 s) until `ok` holds of the stored shapes.
async fn wait_for_shapes(
    check: &tokio_postgres::Client,
    schema: &str,
    pair: &Pair,
    what: &str,
    ok: impl Fn(&[(String, String, i64, i64)]) -> bool,
) -> Vec<(String, String, i64, i64)> {
    let start = Instant::now();
    loop {
        let shapes = stored_shapes(check, schema, pair).await;
        if ok(&shapes) {
            return shapes;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{what}: never happened; shapes: {shapes:#?}; failures: {:?}",
            check
                .query(
                    &format!("SELECT failures, last_error FROM \"{schema}\".shadow_shapes"),
                    &[]
                )
                .await
                .unwrap()
                .iter()
                .map(|r| (r.get::<_, i64>(0), r.get::<_, Option<String>>(1)))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The report of `pair`'s table with the shape checks on (`--min-samples 1`).
async fn shape_report(config: &tandem::Config, pair: &Pair, options: Options) -> TableReport {
    let options = Options {
        tables: vec![TableName::new(Some("public"), &pair.legacy)],
        min_samples: 1,
        ..options
    };
    let r = parity::run(config, &options)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    r.tables[0].clone()
}

fn check<'a>(t: &'a TableReport, name: &str) -> &'a parity::Check {
    t.checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no {name} check: {:#?}", t.checks))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rare_shapes_get_their_comparisons_and_a_differing_one_blocks_the_gate_and_cutover_by_name()
{
    let direct = pg().direct().await;
    let pair = filled_pair(
        &direct,
        "SELECT CASE WHEN g % 3 = 0 THEN 'globex' ELSE 'acme' END, g, 'n' || g \
         FROM generate_series(1, 300) g",
        "",
    )
    .await;
    // A random share this low draws about one of the hot shape's 3000 reads and almost
    // never a rare one: their comparisons come from coverage.
    let config = shapes_config(&pair, 0.0005, 3);
    let schema = config.store.schema.clone();
    let proxy = start_ruled_proxy(config.clone()).await;
    let via = through(&proxy).await;
    let rare = [
        "SELECT count(*) FROM {legacy} WHERE tenant = 'globex'",
        "SELECT id, amount FROM {legacy} WHERE amount > 280 ORDER BY id",
        "SELECT tenant, sum(amount) FROM {legacy} GROUP BY tenant ORDER BY tenant",
        "SELECT l.id, s.note FROM {legacy} l JOIN {src} s ON s.tenant = l.tenant WHERE l.id < 4 ORDER BY l.id",
    ];
    for round in 0..3000 {
        via.simple_query(&pair.sql(&format!(
            "SELECT note FROM {{legacy}} WHERE id = {}",
            round % 250 + 1
        )))
        .await
        .unwrap();
        // Each rare shape runs three times in the whole workload.
        if round % 1000 == 500 {
            for sql in rare {
                via.simple_query(&pair.sql(sql)).await.unwrap();
            }
        }
    }
    let shapes = wait_for_shapes(
        &direct,
        &schema,
        &pair,
        "every shape compared 3 times",
        |s| s.len() == 5 && s.iter().all(|x| x.3 >= 3) && s[0].2 == 3000,
    )
    .await;
    assert!(shapes[0].1.contains("where id = ?"), "{shapes:#?}");
    for x in &shapes[1..] {
        assert_eq!(x.2, 3, "each rare shape ran 3 times: {x:?}");
    }
    let t = shape_report(&config, &pair, Options::default()).await;
    let coverage = check(&t, "shape_coverage");
    assert!(coverage.ok, "{coverage:?}");
    assert_eq!(t.shapes.coverage, Some(1.0));
    assert_eq!(t.shapes.shapes.len(), 5);
    assert!(
        t.shapes.shapes.iter().all(|s| s.same_rows == Some(true)
            && s.legacy_ms_p50.is_some()
            && s.target_ms_p50.is_some()),
        "{:#?}",
        t.shapes.shapes
    );
    let text = parity::text(&parity::Report {
        run_id: "x".into(),
        started_at: 0.0,
        seconds: 0.0,
        min_overlap: 0.95,
        min_samples: 1,
        min_coverage: 1.0,
        max_slowdown: 2.0,
        tables: vec![t.clone()],
        ready: false,
    });
    assert!(
        text.contains("read shapes (5 recorded") && text.contains("group by tenant"),
        "{text}"
    );

    // A rare shape whose rows differ on the target (written around the proxy).
    direct
        .batch_execute(&pair.sql("UPDATE {target} SET note = 'changed' WHERE id = 299"))
        .await
        .unwrap();
    let odd = "SELECT id, note FROM {legacy} WHERE id > 295 ORDER BY id";
    for _ in 0..3 {
        via.simple_query(&pair.sql(odd)).await.unwrap();
    }
    let shapes = wait_for_shapes(&direct, &schema, &pair, "the odd shape compared", |s| {
        s.iter().any(|x| x.1.contains("where id > ?") && x.3 >= 3)
    })
    .await;
    let odd_fp = shapes
        .iter()
        .find(|x| x.1.contains("where id > ?"))
        .map(|x| x.0.clone())
        .unwrap();
    let t = shape_report(&config, &pair, Options::default()).await;
    let coverage = check(&t, "shape_coverage");
    assert!(!coverage.ok && !t.ready, "{coverage:?}");
    assert!(
        coverage.detail.contains(&odd_fp)
            && coverage.detail.contains("where id > ? order by id")
            && coverage.detail.contains("rows differ in 3 of 3"),
        "{coverage:?}"
    );
    let odd_shape = t
        .shapes
        .shapes
        .iter()
        .find(|s| s.fingerprint == odd_fp)
        .unwrap();
    assert_eq!(odd_shape.same_rows, Some(false));
    assert!(odd_shape.min_overlap.unwrap() < 1.0);
    // The mode switch refuses cutover while that read differs (the target carries the
    // legacy defaults, and every key, so nothing else stands in the way).
    pair.copy_defaults(&direct).await;
    let mut console_config = config.clone();
    console_config.admin = Some(tandem::config::AdminConfig {
        user: "admin".into(),
        password: Some("pw".into()),
        password_env: None,
    });
    let console = start_ruled_proxy(console_config).await;
    let console_url = format!(
        "postgres://admin:pw@127.0.0.1:{}/tandem",
        console.addr.port()
    );
    let cutover = format!("SET RULE public.{} MODE cutover", pair.legacy);
    let refused = tandem::ops::rules::run(&console_url, &cutover)
        .await
        .expect_err("cutover while a top read differs");
    assert!(
        refused.to_string().contains(&odd_fp)
            && refused.to_string().contains("rows differ in 3 of 3"),
        "{refused}"
    );
    // The console's live view names it too.
    let out = tandem::ops::rules::run(
        &console_url,
        &format!("SHOW SHAPES public.{}; SHOW STATS", pair.legacy),
    )
    .await
    .unwrap();
    assert!(
        out.contains(&odd_fp)
            && out.contains("no (3 of 3 comparisons differ)")
            && out.contains("shadow_samples_coverage"),
        "{out}"
    );
    // Below the share asked for, it passes again: 5 of 6 shapes are covered.
    let lenient = shape_report(
        &config,
        &pair,
        Options {
            min_coverage: 0.8,
            ..Options::default()
        },
    )
    .await;
    assert!(check(&lenient, "shape_coverage").ok);

    // The target is fixed (as a finished backfill would): the shape is compared again
    // until its newest comparisons agree, and the gate passes.
    direct
        .batch_execute(&pair.sql("UPDATE {target} SET note = 'n299' WHERE id = 299"))
        .await
        .unwrap();
    let start = Instant::now();
    loop {
        via.simple_query(&pair.sql(odd)).await.unwrap();
        let streak: i64 = direct
            .query_one(
                &format!(
                    "SELECT clean_streak FROM \"{schema}\".shadow_shapes WHERE fingerprint = $1"
                ),
                &[&odd_fp],
            )
            .await
            .unwrap()
            .get(0);
        if streak >= 3 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "never re-compared: streak {streak}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let t = shape_report(&config, &pair, Options::default()).await;
    assert!(
        check(&t, "shape_coverage").ok,
        "{:?}",
        check(&t, "shape_coverage")
    );
    let fixed = t
        .shapes
        .shapes
        .iter()
        .find(|s| s.fingerprint == odd_fp)
        .unwrap();
    assert_eq!(fixed.same_rows, Some(true));
    assert!(
        fixed.rows_verdict().contains("3 of") && fixed.rows_verdict().contains("differed before"),
        "{}",
        fixed.rows_verdict()
    );
    // And the switch goes through.
    tandem::ops::rules::run(&console_url, &cutover)
        .await
        .unwrap_or_else(|e| panic!("cutover once the read agrees: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_missing_the_index_a_shape_needs_is_slower_and_fails_max_slowdown() {
    let direct = pg().direct().await;
    // Legacy finds a note by its index; the target has no such index, so each of its
    // four partitions is read whole.
    let pair = filled_pair(
        &direct,
        "SELECT 'acme', g % 1000, 'n' || g FROM generate_series(1, 200000) g",
        "CREATE INDEX ON {legacy} (note); ANALYZE {legacy}; ANALYZE {target};",
    )
    .await;
    let config = shapes_config(&pair, 0.0001, 3);
    let schema = config.store.schema.clone();
    let proxy = start_ruled_proxy(config.clone()).await;
    let via = through(&proxy).await;
    for i in 0..8 {
        via.simple_query(&pair.sql(&format!(
            "SELECT id, amount FROM {{legacy}} WHERE note = 'n{}'",
            i * 1000 + 7
        )))
        .await
        .unwrap();
        // A point read by key stays as fast on the target.
        via.simple_query(&pair.sql(&format!("SELECT note FROM {{legacy}} WHERE id = {}", i + 1)))
            .await
            .unwrap();
    }
    let shapes = wait_for_shapes(&direct, &schema, &pair, "both shapes compared", |s| {
        s.len() == 2 && s.iter().all(|x| x.3 >= 3 && x.2 == 8)
    })
    .await;
    let slow_fp = shapes
        .iter()
        .find(|x| x.1.contains("where note = ?"))
        .map(|x| x.0.clone())
        .unwrap();
    let t = shape_report(&config, &pair, Options::default()).await;
    let slow = t
        .shapes
        .shapes
        .iter()
        .find(|s| s.fingerprint == slow_fp)
        .unwrap();
    assert!(slow.slower && slow.ratio.unwrap() > 2.0, "{slow:#?}");
    assert_eq!(slow.same_rows, Some(true), "{slow:#?}");
    let plan = slow.target_plan.as_deref().unwrap_or_default();
    assert!(plan.contains("Seq Scan"), "{slow:#?}");
    assert!(
        slow.legacy_plan
            .as_deref()
            .unwrap_or_default()
            .contains("Index"),
        "{slow:#?}"
    );
    assert!(
        slow.plan_hint
            .as_deref()
            .unwrap_or_default()
            .contains("sequential scan on the target"),
        "{slow:#?}"
    );
    let point = t
        .shapes
        .shapes
        .iter()
        .find(|s| s.fingerprint != slow_fp)
        .unwrap();
    assert!(!point.slower, "{point:#?}");
    let gate = check(&t, "shape_slowdown");
    assert!(!gate.ok, "{gate:?}");
    assert!(
        gate.detail.contains(&slow_fp) && gate.detail.contains("slower on the target"),
        "{gate:?}"
    );
    assert!(!gate.detail.contains(&point.fingerprint), "{gate:?}");
    assert!(
        check(&t, "shape_coverage").ok,
        "{:?}",
        check(&t, "shape_coverage")
    );

    // The command line: the gate's options, the text and summary.json.
    let dir = std::env::temp_dir().join(tandem_tests::unique("shapes"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("tandem.toml");
    std::fs::write(
        &file,
        format!(
            "upstream = \"{}\"\n[store]\nschema = \"{schema}\"\n",
            config.upstream
        ),
    )
    .unwrap();
    let run = |extra: &[&str]| {
        let out = std::process::Command::new(tandem_bin())
            .args(["parity", "--config"])
            .arg(&file)
            .args([
                "--table",
                &pair.legacy,
                "--min-samples",
                "1",
                "--strict",
                "--out",
            ])
            .arg(dir.join("out"))
            .args(extra)
            .output()
            .expect("run tandem parity");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, stdout) = run(&["--max-slowdown", "2"]);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.contains("[FAIL] shape_slowdown") && stdout.contains(&slow_fp),
        "{stdout}"
    );
    assert!(
        stdout.contains("Seq Scan"),
        "the target's plan is printed: {stdout}"
    );
    let (_, stdout) = run(&["--max-slowdown", "0", "--format", "json"]);
    assert!(!stdout.contains("\"shape_slowdown\""), "skipped: {stdout}");
    let summary: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(summary["max_slowdown"], 0.0);
    assert_eq!(summary["min_coverage"], 1.0);
    let listed = summary["tables"][0]["shapes"]["shapes"].as_array().unwrap();
    assert!(
        listed
            .iter()
            .any(|s| s["fingerprint"] == slow_fp.as_str() && s["slower"] == true),
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simple_query_and_a_prepared_statement_of_one_read_are_one_shape() {
    let direct = pg().direct().await;
    let pair = filled_pair(
        &direct,
        "SELECT 'acme', g, 'n' || g FROM generate_series(1, 50) g",
        "",
    )
    .await;
    let config = shapes_config(&pair, 0.0001, 20);
    let schema = config.store.schema.clone();
    let proxy = start_ruled_proxy(config.clone()).await;
    let via = through(&proxy).await;
    for i in 1..=5 {
        via.simple_query(&pair.sql(&format!(
            "select id, note from {{legacy}} where id = {i} and amount > -1"
        )))
        .await
        .unwrap();
    }
    let prepared = via
        .prepare(&pair.sql(
            "SELECT id, note\n  FROM {legacy}\n WHERE id = $1 AND amount > $2::int8 -- by key",
        ))
        .await
        .unwrap();
    for i in 1..=7i64 {
        via.query(&prepared, &[&i, &-1i64]).await.unwrap();
    }
    let shapes = wait_for_shapes(&direct, &schema, &pair, "12 executions of one shape", |s| {
        s.iter().map(|x| x.2).sum::<i64>() == 12 && s.iter().map(|x| x.3).sum::<i64>() >= 12
    })
    .await;
    assert_eq!(shapes.len(), 1, "one shape: {shapes:#?}");
    assert_eq!(
        shapes[0].1,
        format!(
            "select id, note from {} where id = ? and amount > ?",
            pair.legacy
        )
    );
    // Its comparisons (both forms) are recorded under that one fingerprint.
    let forms: Vec<(String, i64)> = direct
        .query(
            &format!(
                "SELECT fingerprint, count(*) FROM \"{schema}\".shadow_samples \
                 WHERE rule_table = $1 GROUP BY 1"
            ),
            &[&format!("public.{}", pair.legacy)],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(forms.len(), 1, "{forms:?}");
    assert_eq!(forms[0].0, shapes[0].0);
    let prepared_samples: i64 = direct
        .query_one(
            &format!(
                "SELECT count(*) FROM \"{schema}\".shadow_samples \
                 WHERE rule_table = $1 AND statement LIKE '%$1%' AND NOT rows_differ"
            ),
            &[&format!("public.{}", pair.legacy)],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        prepared_samples >= 1 && forms[0].1 > prepared_samples,
        "both forms compared: {forms:?}, prepared {prepared_samples}"
    );
}
