//! Reads under union_read and cutover.

use tandem_tests::mirror::rows_text;

use super::Fixture;

/// Reads that must return exactly what a direct read of the legacy table returns.
const READS: &[&str] = &[
    "SELECT * FROM {legacy} WHERE id = 7",
    "SELECT * FROM {legacy} WHERE id = 8",
    "SELECT id, note FROM {legacy} ORDER BY amount DESC, id LIMIT 5",
    "SELECT tenant, count(*), sum(amount) FROM {legacy} GROUP BY tenant ORDER BY tenant",
    "SELECT l.id, c.name FROM {legacy} l JOIN {customers} c ON c.id = l.id WHERE l.id < 6 ORDER BY 1",
    "SELECT count(*) FROM {customers} c WHERE EXISTS (SELECT 1 FROM public.{legacy} WHERE {legacy}.id = c.id AND tenant = 'acme')",
    "WITH recent AS (SELECT * FROM {legacy} WHERE id > 290) SELECT count(*), max(note) FROM recent",
    "SELECT id FROM {legacy} WHERE id < 4 UNION SELECT id FROM {legacy} WHERE id > 298 ORDER BY 1",
];

/// Rows as text, sorted when the query has no ORDER BY.
async fn rows(client: &tokio_postgres::Client, sql: &str) -> Vec<String> {
    let mut out = rows_text(client, &format!("SELECT t::text FROM ({sql}) t")).await;
    if !sql.contains("ORDER BY") {
        out.sort();
    }
    out
}

async fn reads_equal_legacy(mode: &str) {
    let f = Fixture::new(300).await;
    let (_proxy, via) = f.proxy(mode).await;
    if mode == "cutover" {
        // Cutover reads the target alone: it must be complete (as the transition checks).
        f.check
            .batch_execute(
                &f.sql("INSERT INTO {target} SELECT * FROM {legacy} ON CONFLICT DO NOTHING"),
            )
            .await
            .unwrap();
    }
    // A row that differs: the target's copy is what union_read and cutover must show.
    f.check
        .batch_execute(&f.sql(
            "UPDATE {legacy} SET note = 'fresh' WHERE id = 8; UPDATE {target} SET note = 'fresh' WHERE id = 8",
        ))
        .await
        .unwrap();
    for template in READS {
        let sql = f.sql(template);
        assert_eq!(
            rows(&via, &sql).await,
            rows(&f.check, &sql).await,
            "{mode}: {sql}"
        );
        // Prepared (extended protocol) too.
        let stmt = via.prepare(&sql).await.unwrap();
        assert_eq!(
            via.query(&stmt, &[]).await.unwrap().len(),
            f.check.query(&sql, &[]).await.unwrap().len(),
            "{mode} prepared: {sql}"
        );
    }
    let stmt = via
        .prepare(&f.sql("SELECT note FROM {legacy} WHERE id = $1"))
        .await
        .unwrap();
    for id in [1i64, 2, 3, 150] {
        let got: String = via.query_one(&stmt, &[&id]).await.unwrap().get(0);
        assert_eq!(got, f.legacy_note(id).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn union_read_results_equal_legacy() {
    reads_equal_legacy("union_read").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cutover_results_equal_legacy() {
    reads_equal_legacy("cutover").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn union_read_serves_rows_missing_from_the_target_and_prefers_the_target() {
    let f = Fixture::new(10).await;
    let (_proxy, via) = f.proxy("union_read").await;
    // Odd ids are only in legacy; id 4's target copy differs (as drift would).
    f.check
        .batch_execute(&f.sql("UPDATE {target} SET note = 'target' WHERE id = 4"))
        .await
        .unwrap();
    reads_as(&f, &via, "3, 4", &["n3", "target"], 10).await;
}

/// Through the proxy: the notes of rows `ids` (in id order) are `notes`, and the table
/// reads as `rows` rows, none twice, none missing.
async fn reads_as(f: &Fixture, via: &tokio_postgres::Client, ids: &str, notes: &[&str], rows: i64) {
    let got = rows_text(
        via,
        &f.sql(&format!(
            "SELECT note FROM {{legacy}} WHERE id IN ({ids}) ORDER BY id"
        )),
    )
    .await;
    assert_eq!(got, notes);
    let n: i64 = via
        .query_one(&f.sql("SELECT count(*) FROM {legacy}"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, rows, "no row twice, none missing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_lookup_is_an_index_scan_on_both_tables() {
    let f = Fixture::new(20000).await;
    let (_proxy, via) = f.proxy("union_read").await;
    let plan = rows_text(
        &via,
        &f.sql("EXPLAIN (COSTS OFF) SELECT * FROM {legacy} WHERE id = 77 AND tenant = 'globex'"),
    )
    .await
    .join("\n");
    assert!(
        plan.contains(&format!(
            "Index Scan using {}_pkey on {}",
            f.legacy, f.legacy
        )),
        "legacy side:\n{plan}"
    );
    assert!(
        plan.contains(&format!("{}_o", f.target)) && plan.matches("Index").count() >= 3,
        "target side (both the target arm and the anti-join probe use the key index):\n{plan}"
    );
    assert!(!plan.contains("Seq Scan"), "no sequential scan:\n{plan}");
    eprintln!("{plan}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_description_keeps_the_legacy_tables_origins() {
    let f = Fixture::new(10).await;
    for mode in ["union_read", "cutover"] {
        let (_proxy, via) = f.proxy(mode).await;
        for template in [
            "SELECT * FROM {legacy} WHERE id = $1",
            "SELECT l.note, l.id, l.amount + 1 AS more FROM {legacy} l WHERE l.id = $1",
        ] {
            let sql = f.sql(template);
            let direct = f.check.prepare(&sql).await.unwrap();
            let proxied = via.prepare(&sql).await.unwrap();
            let origins = |s: &tokio_postgres::Statement| {
                s.columns()
                    .iter()
                    .map(|c| {
                        (
                            c.name().to_string(),
                            c.table_oid(),
                            c.column_id(),
                            c.type_().oid(),
                        )
                    })
                    .collect::<Vec<_>>()
            };
            assert_eq!(origins(&proxied), origins(&direct), "{mode}: {sql}");
            assert!(
                origins(&direct)[0].1.unwrap_or(0) != 0,
                "the check is not vacuous"
            );
            // Simple protocol too: rows and names come through unchanged.
            let simple = via.simple_query(&sql.replace("$1", "3")).await.unwrap();
            assert!(!simple.is_empty());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cutover_locking_reads_lock_the_target_rows() {
    let f = Fixture::new(4).await;
    f.check
        .batch_execute(&f.sql("INSERT INTO {target} SELECT * FROM {legacy} ON CONFLICT DO NOTHING"))
        .await
        .unwrap();
    let (_proxy, via) = f.proxy("cutover").await;
    via.batch_execute("BEGIN").await.unwrap();
    let rows = via
        .query(
            &f.sql("SELECT id, note FROM {legacy} WHERE id = 3 FOR UPDATE"),
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("{}", tandem_tests::mirror::db_text(&e)));
    assert_eq!(rows.len(), 1);
    let err = f
        .check
        .query(
            &f.sql("SELECT 1 FROM {target} WHERE id = 3 FOR UPDATE NOWAIT"),
            &[],
        )
        .await
        .expect_err("the target row is locked");
    assert_eq!(tandem_tests::mirror::sqlstate(&err), "55P03");
    via.batch_execute("COMMIT").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_finished_backfill_union_reads_read_the_target_alone() {
    let f = Fixture::new(200).await;
    let (config, proxy, via) = f.ruled("union_read").await;
    let explain =
        f.sql("EXPLAIN (COSTS OFF) SELECT * FROM {legacy} WHERE id = 77 AND tenant = 'globex'");
    let scans_legacy = |plan: &[String]| {
        plan.iter().any(|l| {
            l.contains(&format!(" on {} ", f.legacy)) || l.ends_with(&format!(" on {}", f.legacy))
        })
    };
    let before = rows_text(&via, &explain).await;
    assert!(scans_legacy(&before), "{before:#?}");

    let table = tandem_rules::TableName::new(Some("public"), &f.legacy);
    tandem::ops::backfill::run(
        &config,
        &tandem::ops::backfill::Options::new(table.clone()),
        &mut |_| {},
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    // The rule change reaches the proxy; a new transaction plans with it.
    let watch = proxy
        .watch
        .as_ref()
        .expect("a ruled proxy watches its store");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !watch.current().set.rules[0].rule.backfilled {
        assert!(
            std::time::Instant::now() < deadline,
            "the proxy never took the backfilled rule"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let after = rows_text(&via, &explain).await;
    assert!(!scans_legacy(&after), "the target alone:\n{after:#?}");
    let n: i64 = via
        .query_one(&f.sql("SELECT count(*) FROM {legacy}"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 200);
    via.batch_execute(&f.sql("INSERT INTO {legacy} VALUES (1001, 'acme', 1, 'new')"))
        .await
        .unwrap();
    let note = rows_text(&via, &f.sql("SELECT note FROM {legacy} WHERE id = 1001")).await;
    assert_eq!(
        note,
        vec!["new".to_string()],
        "a new row, mirrored, is read from the target"
    );

    // Going to off clears it: the target falls behind until the next backfill.
    let mut admin = tandem_tests::pg().direct().await;
    let store = tandem::control::store::Store::new(&config.store.schema);
    for mode in [tandem_rules::Mode::DualWrite, tandem_rules::Mode::Off] {
        tandem::control::store::change::apply(
            &mut admin,
            &store,
            tandem::control::store::change::RuleChange::SetMode {
                table: table.clone(),
                mode,
                force: false,
            },
            "test",
        )
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    }
    let backfilled: bool = admin
        .query_one(
            &format!(
                "SELECT backfilled FROM {} WHERE table_name = $1",
                store.rules()
            ),
            &[&table.to_string()],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!backfilled);
}

/// Sets the rule's backfill watermark in the store, as a running `tandem backfill`
/// publishes it, and waits for the proxy to take it.
async fn set_watermark(
    proxy: &tandem::RunningProxy,
    config: &tandem::Config,
    admin: &tokio_postgres::Client,
    table: &str,
    to: &[&str],
) {
    let store = tandem::control::store::Store::new(&config.store.schema);
    let to: Vec<String> = to.iter().map(|s| s.to_string()).collect();
    admin
        .execute(
            &format!(
                "UPDATE {} SET backfilled_to = $2 WHERE table_name = $1",
                store.rules()
            ),
            &[&format!("public.{table}"), &to],
        )
        .await
        .unwrap();
    let watch = proxy
        .watch
        .as_ref()
        .expect("a ruled proxy watches its store");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while watch.current().set.rules[0].rule.backfilled_to.as_ref() != Some(&to) {
        assert!(
            std::time::Instant::now() < deadline,
            "the proxy never took the watermark"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Reads through a union split at the watermark, against the same reads run directly on
/// the legacy table.
const SPLIT_READS: &[&str] = &[
    "SELECT * FROM {legacy} WHERE id = 149",
    "SELECT * FROM {legacy} WHERE id = 150 AND tenant = 'acme'",
    "SELECT * FROM {legacy} WHERE id = 151",
    "SELECT * FROM {legacy} WHERE id BETWEEN 140 AND 160",
    "SELECT id, tenant FROM {legacy} ORDER BY id DESC LIMIT 5",
    "SELECT id FROM {legacy} WHERE tenant = 'acme' ORDER BY id LIMIT 7 OFFSET 45",
    "SELECT id, note FROM {legacy} ORDER BY amount DESC, id LIMIT 5",
    "SELECT tenant, count(*), sum(amount), min(id), max(id) FROM {legacy} GROUP BY tenant ORDER BY tenant",
    "SELECT l.id, c.name FROM {legacy} l JOIN {customers} c ON c.id = l.id WHERE l.id BETWEEN 148 AND 153 ORDER BY 1",
    "SELECT count(*) FROM {legacy} a JOIN {legacy} b ON b.id = a.id + 1",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn union_reads_split_at_the_backfill_watermark_equal_legacy_and_read_one_table_per_key() {
    let f = Fixture::new(300).await;
    // The backfill has copied every row up to (150, 'acme'); above it only the even ids
    // (mirrored writes) are in the target.
    f.check
        .batch_execute(&f.sql(
            "INSERT INTO {target} SELECT * FROM {legacy} WHERE id <= 150 ON CONFLICT DO NOTHING",
        ))
        .await
        .unwrap();
    let (config, proxy, via) = f.ruled("union_read").await;
    // A statement prepared by SQL before the watermark, run through the protocol after it.
    via.batch_execute(&f.sql("PREPARE by_id(bigint) AS SELECT note FROM {legacy} WHERE id = $1"))
        .await
        .unwrap();
    let before = via
        .prepare(&f.sql("SELECT note FROM {legacy} WHERE id = $1"))
        .await
        .unwrap();
    set_watermark(&proxy, &config, &f.check, &f.legacy, &["150", "acme"]).await;

    for template in SPLIT_READS {
        let sql = f.sql(template);
        assert_eq!(rows(&via, &sql).await, rows(&f.check, &sql).await, "{sql}");
        let stmt = via.prepare(&sql).await.unwrap();
        assert_eq!(
            via.query(&stmt, &[]).await.unwrap().len(),
            f.check.query(&sql, &[]).await.unwrap().len(),
            "prepared: {sql}"
        );
    }
    // Each side of the split reads its own table for the keys it holds: the target's copy
    // at or below the watermark, legacy's row above it.
    f.check
        .batch_execute(&f.sql(
            // Legacy first: the guard mirrors a direct write to legacy into the target.
            "UPDATE {legacy} SET note = 'legacy' WHERE id IN (8, 200); UPDATE {target} SET note = 'target' WHERE id IN (8, 200)",
        ))
        .await
        .unwrap();
    reads_as(&f, &via, "8, 200", &["target", "legacy"], 300).await;

    // A key lookup reads one table, the one its side of the watermark names; an ORDER BY
    // ... LIMIT merges both tables' index order and stops early.
    let plan = |sql: String| {
        let via = &via;
        async move {
            rows_text(via, &format!("EXPLAIN (COSTS OFF) {sql}"))
                .await
                .join("\n")
        }
    };
    // The legacy table by its exact name; the target by its partitions' (`<target>_a`, `_o`).
    let legacy = |plan: &str| {
        plan.lines().any(|l| {
            l.contains(&format!(" on {} ", f.legacy)) || l.ends_with(&format!(" on {}", f.legacy))
        })
    };
    let target = |plan: &str| plan.contains(&format!(" on {}_", f.target));
    let below = plan(f.sql("SELECT * FROM {legacy} WHERE id = 77 AND tenant = 'globex'")).await;
    assert!(!legacy(&below) && target(&below), "below:\n{below}");
    let above = plan(f.sql("SELECT * FROM {legacy} WHERE id = 201 AND tenant = 'acme'")).await;
    assert!(legacy(&above) && !target(&above), "above:\n{above}");
    let latest = plan(f.sql("SELECT * FROM {legacy} ORDER BY id DESC LIMIT 3")).await;
    assert!(
        latest.contains("Limit") && latest.contains("Merge Append") && !latest.contains("Sort\n"),
        "latest:\n{latest}"
    );

    // The watermark moves on: statements prepared under the older one still run, the SQL
    // one through the protocol too (its text, split lower, reads the same rows).
    f.check
        .batch_execute(&f.sql(
            "INSERT INTO {target} SELECT * FROM {legacy} WHERE id <= 250 ON CONFLICT DO NOTHING",
        ))
        .await
        .unwrap();
    set_watermark(&proxy, &config, &f.check, &f.legacy, &["250", "globex"]).await;
    for id in [8i64, 151, 200, 251] {
        let want = f.legacy_note(id).await;
        // 8 and 200 are at or below the watermark now: their (differing) target copies.
        let want = if id == 8 || id == 200 {
            "target".to_string()
        } else {
            want
        };
        let got: String = via.query_one(&before, &[&id]).await.unwrap().get(0);
        assert_eq!(got, want, "protocol statement, id {id}");
        let got: String = via
            .query_one(&format!("EXECUTE by_id({id})"), &[])
            .await
            .unwrap_or_else(|e| panic!("{}", tandem_tests::mirror::db_text(&e)))
            .get(0);
        assert_eq!(got, want, "SQL statement through the protocol, id {id}");
    }
}
