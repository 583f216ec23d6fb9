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
