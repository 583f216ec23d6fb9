//! Installing the guard next to long transactions: a proxy starting while a transaction
//! holds a ruled table does not wait for it without bound nor fail to start; it leaves the
//! guard for later, says so, and installs it once the table is free.

use std::time::{Duration, Instant};

use tandem_tests::mirror::{config_with, db_text, start_ruled_proxy, Kind, Pair};
use tandem_tests::{pg, through};

async fn guard_state(check: &tokio_postgres::Client, pair: &Pair) -> String {
    check
        .query_one(
            &pair.sql(
                "SELECT tandem.guard_report('public.{legacy}', 'public.{target}', '{id,tenant}', \
                 'dual_write', 'mirror', 'fail', '[]')",
            ),
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("guard_report: {}", db_text(&e)))
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_starting_next_to_a_long_transaction_installs_the_guard_later() {
    let check = pg().direct().await;
    let pair = Pair::new(Kind::List);
    pair.create(Kind::List, &check).await;
    // A transaction that wrote the legacy table and stays open: it holds a lock the guard's
    // CREATE TRIGGER conflicts with.
    let long = pg().direct().await;
    long.batch_execute(
        &pair.sql("BEGIN; INSERT INTO {legacy} (tenant, note) VALUES ('acme', 'long transaction')"),
    )
    .await
    .unwrap();
    let mut config = config_with(&[pair.rule(Kind::List)]);
    config.store.poll_interval_ms = 200;
    let started = Instant::now();
    let proxy = start_ruled_proxy(config).await;
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the start waited {:?}",
        started.elapsed()
    );
    assert_eq!(guard_state(&check, &pair).await, "missing");
    // Writes through the proxy are mirrored by the rewrite meanwhile.
    let via = through(&proxy).await;
    via.batch_execute(&pair.sql("INSERT INTO {legacy} (tenant, note) VALUES ('globex', 'via')"))
        .await
        .unwrap();
    long.batch_execute("COMMIT").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while guard_state(&check, &pair).await != "in place" {
        assert!(Instant::now() < deadline, "the guard was never installed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Now a direct write is mirrored; the long transaction's row, written before the guard,
    // is not (a backfill copies it).
    check
        .batch_execute(&pair.sql("INSERT INTO {legacy} (tenant, note) VALUES ('acme', 'direct')"))
        .await
        .unwrap();
    let notes = tandem_tests::mirror::rows_text(
        &check,
        &pair.sql("SELECT note FROM {target} ORDER BY note"),
    )
    .await;
    assert_eq!(notes, ["direct", "via"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guard_is_not_switched_off_behind_the_rule() {
    let check = pg().direct().await;
    let pair = Pair::new(Kind::List);
    pair.create(Kind::List, &check).await;
    let config = config_with(&[pair.rule(Kind::List)]);
    let store = config.store.schema.clone();
    let _proxy = start_ruled_proxy(config).await;
    assert_eq!(guard_state(&check, &pair).await, "in place");
    for sql in [
        "DROP TRIGGER tandem_guard_insert ON {legacy}",
        "DROP TRIGGER tandem_guard_update ON {target}_acme",
        "ALTER TABLE {legacy} DISABLE TRIGGER ALL",
        "ALTER TABLE {legacy} DISABLE TRIGGER tandem_guard_delete",
        "ALTER TABLE {legacy} ENABLE REPLICA TRIGGER tandem_guard_delete",
    ] {
        let e = check
            .batch_execute(&pair.sql(sql))
            .await
            .expect_err(&format!("{sql} is refused"));
        assert_eq!(
            tandem_tests::mirror::sqlstate(&e),
            "55000",
            "{sql}: {}",
            db_text(&e)
        );
    }
    let function: String = check
        .query_one(
            &pair.sql("SELECT format('tandem.%I()', 'guard ' || '{legacy}'::regclass::oid)"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let e = check
        .batch_execute(&format!("DROP FUNCTION {function} CASCADE"))
        .await
        .expect_err("dropping the guard's function is refused");
    assert_eq!(tandem_tests::mirror::sqlstate(&e), "55000");
    assert_eq!(guard_state(&check, &pair).await, "in place");
    // A session in replica mode (a logical replication apply, some restore tools) is
    // guarded too.
    check
        .batch_execute(&pair.sql(
            "SET session_replication_role = replica; \
             INSERT INTO {legacy} (tenant, note) VALUES ('acme', 'replica'); \
             RESET session_replication_role",
        ))
        .await
        .unwrap();
    assert!(pair.drift(Kind::List, &check).await.is_empty());
    assert_eq!(pair.counts(&check).await, (1, 1));
    // Switching the guard off through the rule removes it, triggers and functions.
    check
        .execute(
            &format!("UPDATE \"{store}\".rules SET guard = 'off' WHERE table_name = $1"),
            &[&format!("public.{}", pair.legacy)],
        )
        .await
        .unwrap();
    let left: i64 = check
        .query_one(
            &pair.sql(
                "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'tandem_guard%' \
                 AND (tgrelid IN (SELECT relid FROM pg_partition_tree('{target}')) \
                      OR tgrelid = '{legacy}'::regclass)",
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
}
