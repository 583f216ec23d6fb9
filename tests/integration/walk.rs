//! The whole migration of one table under load, across two proxy instances sharing one
//! rule store: `off -> dual_write -> (backfill) -> union_read -> cutover -> dual_write ->
//! cutover -> target_only`, with pgbench writing and reading through both instances the
//! whole time (one with prepared statements, one with simple queries). At every step the
//! legacy and target tables must agree on every key the mode says they must, in one
//! snapshot, and no client may see an error (pgbench retries deadlocks, which a mode switch
//! can cause between two sessions still in different modes for one transaction).

use std::time::Duration;

use tandem_tests::mirror::{config_with, db_text, start_ruled_proxy, wait_for_mode, RuleToml};
use tandem_tests::{pg, pgbench, unique};
use tokio_postgres::Client;

/// Rows the table starts with (ids 1..=ROWS); pgbench updates them and inserts others.
const ROWS: i64 = 2000;

/// Seconds each pgbench runs: long enough for the whole walk.
const BENCH_SECONDS: u64 = 30;

/// Reads whose answer does not change under the load (it never deletes or re-tenants the
/// seed rows), so through the proxy they must equal a direct read of the legacy table at
/// every stage: aggregates, a join, ORDER BY ... LIMIT, and a prepared statement.
async fn same_reads(via: &Client, check: &Client, legacy: &str) {
    for sql in [
        format!("SELECT count(*), min(id), max(id) FROM {legacy} WHERE id <= {ROWS}"),
        format!("SELECT tenant, count(*) FROM {legacy} WHERE id <= {ROWS} GROUP BY tenant ORDER BY tenant"),
        format!("SELECT a.id, b.tenant FROM {legacy} a JOIN {legacy} b ON b.id = a.id + 1 WHERE a.id < 6 ORDER BY a.id"),
        format!("SELECT id, tenant FROM {legacy} WHERE id <= {ROWS} ORDER BY id DESC LIMIT 3"),
    ] {
        let text = |rows: Vec<tokio_postgres::Row>| {
            rows.iter()
                .map(|r| (0..r.len()).map(|i| format!("{:?}", r.get::<_, Option<String>>(i))).collect::<Vec<_>>().join("|"))
                .collect::<Vec<_>>()
        };
        let wrapped = format!("SELECT t::text FROM ({sql}) t");
        let proxied = text(via.query(&wrapped, &[]).await.unwrap());
        let direct = text(check.query(&wrapped, &[]).await.unwrap());
        assert_eq!(proxied, direct, "{sql}");
        let stmt = via.prepare(&wrapped).await.unwrap();
        assert_eq!(text(via.query(&stmt, &[]).await.unwrap()), direct, "prepared {sql}");
    }
}

/// Rows present in one table and not the other (on every column), in one snapshot.
async fn disagreement(check: &mut Client, legacy: &str, target: &str) -> (i64, i64) {
    tandem_tests::disagreement(check, legacy, target, "id, tenant, balance, note").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walk_a_table_from_off_to_target_only_under_load_across_two_instances() {
    let mut check = pg().direct().await;
    let legacy = unique("walk");
    let target = format!("{legacy}_v2");
    check
        .batch_execute(&format!(
            "CREATE TABLE {legacy} (id bigint PRIMARY KEY, tenant text NOT NULL, balance bigint NOT NULL, note text);
             INSERT INTO {legacy} SELECT g, CASE WHEN g % 2 = 0 THEN 'acme' ELSE 'globex' END, 0, 'seed' FROM generate_series(1, {ROWS}) g;
             CREATE TABLE {target} (id bigint PRIMARY KEY, tenant text NOT NULL, balance bigint NOT NULL, note text) PARTITION BY HASH (id);
             CREATE TABLE {target}_0 PARTITION OF {target} FOR VALUES WITH (MODULUS 4, REMAINDER 0);
             CREATE TABLE {target}_1 PARTITION OF {target} FOR VALUES WITH (MODULUS 4, REMAINDER 1);
             CREATE TABLE {target}_2 PARTITION OF {target} FOR VALUES WITH (MODULUS 4, REMAINDER 2);
             CREATE TABLE {target}_3 PARTITION OF {target} FOR VALUES WITH (MODULUS 4, REMAINDER 3);"
        ))
        .await
        .unwrap_or_else(|e| panic!("{}", db_text(&e)));
    let mut config = config_with(&[RuleToml::dual_write(&legacy).mode("off")]);
    config.admin = Some(tandem::config::AdminConfig {
        user: "admin".into(),
        password: Some("walk".into()),
        password_env: None,
    });
    let a = start_ruled_proxy(config.clone()).await;
    let b = start_ruled_proxy(config).await;

    let script = std::env::temp_dir().join(format!("{legacy}.sql"));
    std::fs::write(
        &script,
        format!(
            "\\set id random(1, {ROWS})\n\\set nid random(100000, 1000000000)\n\\set delta random(-50, 50)\n\
             BEGIN;\n\
             UPDATE {legacy} SET balance = balance + :delta WHERE id = :id;\n\
             SELECT balance FROM {legacy} WHERE id = :id;\n\
             INSERT INTO {legacy} (id, tenant, balance, note) VALUES (:nid, 'acme', :delta, 'bench') ON CONFLICT DO NOTHING;\n\
             DELETE FROM {legacy} WHERE id = :nid - 7;\n\
             END;\n"
        ),
    )
    .unwrap();
    let db = pg().database.clone();
    let bench = |port: u16, protocol: &'static str| {
        let script = script.display().to_string();
        let db = db.clone();
        std::thread::spawn(move || {
            pgbench(
                port,
                &db,
                &[
                    "-n",
                    "-c",
                    "4",
                    "-j",
                    "1",
                    "-M",
                    protocol,
                    "--max-tries",
                    "20",
                    "-T",
                    &BENCH_SECONDS.to_string(),
                    "-f",
                    &script,
                ],
            )
        })
    };
    let bench_a = bench(a.addr.port(), "prepared");
    let bench_b = bench(b.addr.port(), "simple");
    let pause = || tokio::time::sleep(Duration::from_millis(1500));
    let table = format!("public.{legacy}");
    // Each switch goes through one instance's admin console, alternating, as an operator
    // behind a load balancer would land on either.
    let consoles = [
        format!("postgres://admin:walk@127.0.0.1:{}/tandem", a.addr.port()),
        format!("postgres://admin:walk@127.0.0.1:{}/tandem", b.addr.port()),
    ];
    let flips = std::sync::atomic::AtomicUsize::new(0);
    let flip = |mode: &'static str| {
        let n = flips.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let url = consoles[n % 2].clone();
        let command = format!("SET RULE {table} MODE {mode}");
        async move {
            tandem::ops::rules::run(&url, &command)
                .await
                .unwrap_or_else(|e| panic!("{command}: {} ({:?})", e.message, e.hint));
        }
    };
    pause().await;
    flip("dual_write").await;
    pause().await;
    let (_, extra) = disagreement(&mut check, &legacy, &target).await;
    assert_eq!(
        extra, 0,
        "dual_write: every target row equals its legacy row"
    );

    // Backfill in keyset batches, as the backfill job will.
    let mut last = 0i64;
    loop {
        let end: Option<i64> = check
            .query_one(
                &format!("SELECT max(id) FROM (SELECT id FROM {legacy} WHERE id > $1 ORDER BY id LIMIT 500) b"),
                &[&last],
            )
            .await
            .unwrap()
            .get(0);
        let Some(end) = end else { break };
        check
            .execute(
                &format!(
                    "INSERT INTO {target} SELECT * FROM {legacy} WHERE id > $1 AND id <= $2 ON CONFLICT DO NOTHING"
                ),
                &[&last, &end],
            )
            .await
            .unwrap();
        last = end;
    }
    pause().await;
    assert_eq!(
        disagreement(&mut check, &legacy, &target).await,
        (0, 0),
        "after backfill"
    );

    let via_a = tandem_tests::through(&a).await;
    let via_b = tandem_tests::through(&b).await;
    for mode in ["union_read", "cutover", "dual_write", "cutover"] {
        flip(mode).await;
        pause().await;
        same_reads(&via_a, &check, &legacy).await;
        same_reads(&via_b, &check, &legacy).await;
        assert_eq!(
            disagreement(&mut check, &legacy, &target).await,
            (0, 0),
            "{mode}: legacy and target agree"
        );
    }

    flip("target_only").await;
    // Both instances have the new rules (under load a fixed pause was not always enough;
    // seen once on PostgreSQL 18 with two shared cores), and their sessions take them at
    // their next transaction boundary.
    wait_for_mode(&a, tandem_rules::Mode::TargetOnly).await;
    wait_for_mode(&b, tandem_rules::Mode::TargetOnly).await;
    pause().await;
    let legacy_sum = |sql: String| async move {
        let c = pg().direct().await;
        let r = c.query_one(&sql, &[]).await.unwrap();
        (r.get::<_, i64>(0), r.get::<_, i64>(1))
    };
    let sum_sql = format!("SELECT count(*), coalesce(sum(balance), 0)::int8 FROM {legacy}");
    let before = legacy_sum(sum_sql.clone()).await;
    pause().await;
    assert_eq!(
        legacy_sum(sum_sql).await,
        before,
        "target_only: the legacy table no longer changes"
    );

    for (name, handle) in [("a (prepared)", bench_a), ("b (simple)", bench_b)] {
        let out = handle.join().expect("pgbench thread");
        assert!(
            out.contains("number of failed transactions: 0"),
            "pgbench {name} saw failures:\n{out}"
        );
        eprintln!("pgbench through instance {name}:\n{out}");
    }
    let _ = std::fs::remove_file(&script);
}
