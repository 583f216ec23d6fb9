//! The way back from `target_only` (issue 16): `SET RULE ... MODE cutover FORCE`, then
//! `tandem backfill --reverse` re-syncs the legacy table from the target (the inserts,
//! updates and deletes it missed) under live writes, `tandem parity --strict` says READY,
//! and only then may the rule leave `cutover` for `union_read` or `dual_write`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tandem::ops::backfill::{self, BackfillError, Direction, Options, Outcome};
use tandem_rules::TableName;
use tandem_tests::mirror::{config_with, db_text, start_ruled_proxy, RuleToml};
use tandem_tests::{pg, through, unique};
use tokio_postgres::Client;

/// Rows the legacy table starts with (ids 1..=ROWS).
const ROWS: i64 = 3000;

/// A legacy table of `ROWS` rows (not yet in the target), its LIST-partitioned target
/// (key `(id, tenant)`, while legacy's own primary key is `id`), and the config of a proxy
/// with an admin console and the rule in `dual_write`.
async fn table(check: &Client) -> (String, String, tandem::Config) {
    let legacy = unique("resync");
    let target = format!("{legacy}_v2");
    check
        .batch_execute(&format!(
            "CREATE TABLE {legacy} (id bigint PRIMARY KEY, tenant text NOT NULL, amount bigint NOT NULL, note text);
             INSERT INTO {legacy} SELECT g, CASE WHEN g % 2 = 0 THEN 'acme' ELSE 'globex' END, g, 'seed'
               FROM generate_series(1, {ROWS}) g;
             CREATE TABLE {target} (id bigint NOT NULL, tenant text NOT NULL, amount bigint NOT NULL, note text,
               PRIMARY KEY (id, tenant)) PARTITION BY LIST (tenant);
             CREATE TABLE {target}_acme PARTITION OF {target} FOR VALUES IN ('acme');
             CREATE TABLE {target}_other PARTITION OF {target} DEFAULT;"
        ))
        .await
        .unwrap_or_else(|e| panic!("{}", db_text(&e)));
    let mut config = config_with(&[RuleToml::dual_write(&legacy).key(&["id", "tenant"])]);
    config.admin = Some(tandem::config::AdminConfig {
        user: "admin".into(),
        password: Some("resync".into()),
        password_env: None,
    });
    (legacy, target, config)
}

fn options(legacy: &str, direction: Direction, batch_size: i64) -> Options {
    Options {
        direction,
        batch_size,
        ..Options::new(TableName::new(Some("public"), legacy))
    }
}

/// `SET RULE <legacy> MODE <mode>` through the proxy's console: the message and hint of
/// a refusal.
async fn set_mode(port: u16, legacy: &str, mode: &str) -> Result<(), String> {
    let url = format!("postgres://admin:resync@127.0.0.1:{port}/tandem");
    tandem::ops::rules::run(&url, &format!("SET RULE public.{legacy} MODE {mode}"))
        .await
        .map(|_| ())
        .map_err(|e| format!("{} (hint: {})", e.message, e.hint.unwrap_or_default()))
}

/// Rows of legacy not in the target and of the target not in legacy, in one snapshot.
async fn disagreement(check: &mut Client, legacy: &str, target: &str) -> (i64, i64) {
    let tx = check
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .unwrap();
    let cols = "id, tenant, amount, note";
    let row = tx
        .query_one(
            &format!(
                "SELECT (SELECT count(*) FROM (SELECT {cols} FROM {legacy} EXCEPT SELECT {cols} FROM {target}) a), \
                        (SELECT count(*) FROM (SELECT {cols} FROM {target} EXCEPT SELECT {cols} FROM {legacy}) b)"
            ),
            &[],
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();
    (row.get(0), row.get(1))
}

/// One legacy row as `tenant|amount|note`, or `None`.
async fn legacy_row(check: &Client, legacy: &str, id: i64) -> Option<String> {
    check
        .query_opt(
            &format!("SELECT tenant || '|' || amount || '|' || coalesce(note, '') FROM {legacy} WHERE id = $1"),
            &[&id],
        )
        .await
        .unwrap()
        .map(|r| r.get(0))
}

async fn parity(config: &tandem::Config, legacy: &str) -> tandem::ops::parity::TableReport {
    let options = tandem::ops::parity::Options {
        tables: vec![TableName::new(Some("public"), legacy)],
        min_overlap: 0.95,
        min_samples: 0,
        sample_limit: 5,
    };
    let mut report = tandem::ops::parity::run(config, &options)
        .await
        .unwrap_or_else(|e| panic!("parity: {e}"));
    report.tables.remove(0)
}

/// Walks the table to `target_only` (backfill, union_read, cutover, target_only).
async fn to_target_only(config: &tandem::Config, port: u16, legacy: &str) {
    match backfill::run(
        config,
        &options(legacy, Direction::Forward, 1000),
        &mut |_| {},
    )
    .await
    {
        Ok(Outcome::Finished(_)) => {}
        other => panic!("backfill: {other:?}"),
    }
    for mode in ["union_read", "cutover", "target_only"] {
        set_mode(port, legacy, mode)
            .await
            .unwrap_or_else(|e| panic!("{mode}: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_way_back_from_target_only_resyncs_legacy_under_live_writes() {
    let mut check = pg().direct().await;
    let (legacy, target, config) = table(&check).await;
    let proxy = start_ruled_proxy(config.clone()).await;
    let port = proxy.addr.port();
    to_target_only(&config, port, &legacy).await;

    // target_only: the target alone changes; legacy misses inserts, updates and deletes,
    // and a row moved to another tenant (legacy's key is id, the rule's (id, tenant)).
    let via = through(&proxy).await;
    via.batch_execute(&format!(
        "INSERT INTO {legacy} SELECT g, 'acme', g, 'new in target_only' FROM generate_series(100001, 100200) g;
         UPDATE {legacy} SET amount = amount + 1000, note = 'changed in target_only' WHERE id <= 300;
         DELETE FROM {legacy} WHERE id BETWEEN 1001 AND 1300;
         UPDATE {legacy} SET tenant = 'globex', note = 'moved in target_only' WHERE id = 2000;"
    ))
    .await
    .unwrap_or_else(|e| panic!("{}", db_text(&e)));
    assert_eq!(
        legacy_row(&check, &legacy, 5).await.as_deref(),
        Some("globex|5|seed"),
        "target_only does not write legacy"
    );
    assert_eq!(disagreement(&mut check, &legacy, &target).await, (601, 501));

    // Leaving target_only: only to cutover, and only with FORCE.
    for mode in [
        "dual_write FORCE",
        "union_read FORCE",
        "off FORCE",
        "cutover",
    ] {
        let err = set_mode(port, &legacy, mode).await.unwrap_err();
        assert!(err.contains("--reverse"), "{mode}: {err}");
    }
    set_mode(port, &legacy, "cutover FORCE").await.unwrap();
    // Before the re-sync: leaving cutover is refused, and so is a forward backfill; parity
    // names the re-sync.
    for mode in ["union_read", "dual_write", "off"] {
        let err = set_mode(port, &legacy, mode).await.unwrap_err();
        assert!(
            err.contains("re-sync") && err.contains("--reverse"),
            "{mode}: {err}"
        );
    }
    let forward = backfill::run(
        &config,
        &Options {
            restart: true,
            ..options(&legacy, Direction::Forward, 1000)
        },
        &mut |_| {},
    )
    .await;
    assert!(
        matches!(forward, Err(BackfillError::ResyncOwed(..))),
        "{forward:?}"
    );
    let before = parity(&config, &legacy).await;
    assert!(!before.ready);
    assert!(
        before.checks.iter().any(|c| c.name == "resync" && !c.ok),
        "{:?}",
        before.checks
    );

    // Live writes through Tandem in cutover while the re-sync runs: inserts, updates and
    // deletes, of rows legacy has and of rows it does not have yet.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = Arc::clone(&stop);
        let via = through(&proxy).await;
        let insert = format!(
            "INSERT INTO {legacy} (id, tenant, amount, note) VALUES ($1, 'acme', 1, 'loop')"
        );
        let update =
            format!("UPDATE {legacy} SET amount = amount + 1, note = 'loop' WHERE id = $1");
        let delete = format!("DELETE FROM {legacy} WHERE id = $1");
        tokio::spawn(async move {
            let mut i: i64 = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let r = match i % 4 {
                    0 => via.execute(&insert, &[&(200_000 + i)]).await,
                    1 => via.execute(&update, &[&(2001 + (i * 37) % 1000)]).await,
                    2 => via.execute(&delete, &[&(2001 + (i * 53) % 1000)]).await,
                    // a row inserted in target_only, not copied into legacy yet
                    _ => via.execute(&delete, &[&(100_001 + (i * 7) % 200)]).await,
                };
                r.unwrap_or_else(|e| panic!("live write: {}", db_text(&e)));
            }
            i
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let outcome = backfill::run(
        &config,
        &Options {
            throttle: Duration::from_millis(2),
            ..options(&legacy, Direction::Reverse, 100)
        },
        &mut |_| {},
    )
    .await
    .unwrap_or_else(|e| panic!("re-sync: {e}"));
    stop.store(true, Ordering::Relaxed);
    let writes = writer.await.unwrap();
    let Outcome::Finished(report) = outcome else {
        panic!("{outcome:?}")
    };
    eprintln!(
        "{} ({writes} live writes meanwhile)",
        backfill::progress_line(&report.progress)
    );
    assert!(writes > 50, "live writes ran during the re-sync ({writes})");
    assert!(report.progress.batches > 10, "{report:?}");
    assert!(report.progress.copied > 0, "{report:?}");
    assert!(report.total_deleted >= 300, "{report:?}");

    // Both tables hold the same rows: what target_only wrote, and what the loop wrote.
    assert_eq!(disagreement(&mut check, &legacy, &target).await, (0, 0));
    assert_eq!(
        legacy_row(&check, &legacy, 5).await.as_deref(),
        Some("globex|1005|changed in target_only")
    );
    assert_eq!(legacy_row(&check, &legacy, 1100).await, None, "deleted");
    assert_eq!(
        legacy_row(&check, &legacy, 2000).await.as_deref(),
        Some("globex|2000|moved in target_only")
    );
    let report = parity(&config, &legacy).await;
    assert!(report.ready, "{:?}", report.checks);
    assert_eq!(report.divergence, 0);
    assert!(report.checks.iter().any(|c| c.name == "resync" && c.ok));

    // Now the way back is open, and writes reach both tables again.
    set_mode(port, &legacy, "union_read").await.unwrap();
    set_mode(port, &legacy, "dual_write").await.unwrap();
    let via = through(&proxy).await;
    via.batch_execute(&format!(
        "INSERT INTO {legacy} VALUES (300001, 'acme', 7, 'back in dual_write');
         UPDATE {legacy} SET note = 'dual_write again' WHERE id = 5;
         DELETE FROM {legacy} WHERE id = 6;"
    ))
    .await
    .unwrap_or_else(|e| panic!("{}", db_text(&e)));
    assert_eq!(disagreement(&mut check, &legacy, &target).await, (0, 0));
    assert!(parity(&config, &legacy).await.ready);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_with_an_older_snapshot_does_not_leave_a_resynced_row_in_legacy() {
    let check = pg().direct().await;
    let (legacy, _target, config) = table(&check).await;
    let proxy = start_ruled_proxy(config.clone()).await;
    let port = proxy.addr.port();
    to_target_only(&config, port, &legacy).await;
    let via = through(&proxy).await;
    via.batch_execute(&format!(
        "INSERT INTO {legacy} SELECT g, 'acme', g, 'new' FROM generate_series(100001, 100050) g"
    ))
    .await
    .unwrap();
    set_mode(port, &legacy, "cutover FORCE").await.unwrap();
    // The deleter's snapshot predates the batch; it deletes a row after the batch copied
    // it into legacy, so its mirrored delete cannot see the copy.
    let deleter = through(&proxy).await;
    deleter
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1")
        .await
        .unwrap();
    let task = {
        let config = config.clone();
        let options = options(&legacy, Direction::Reverse, 10_000);
        tokio::spawn(async move { backfill::run(&config, &options, &mut |_| {}).await })
    };
    while legacy_row(&check, &legacy, 100_025).await.is_none() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    deleter
        .execute(&format!("DELETE FROM {legacy} WHERE id = 100025"), &[])
        .await
        .unwrap();
    assert!(
        !task.is_finished(),
        "the re-sync waits for the older snapshot"
    );
    deleter.batch_execute("COMMIT").await.unwrap();
    let Ok(Outcome::Finished(report)) = task.await.unwrap() else {
        panic!("the re-sync did not finish")
    };
    assert_eq!(report.progress.removed, 1, "{report:?}");
    assert_eq!(
        legacy_row(&check, &legacy, 100_025).await,
        None,
        "not resurrected"
    );
    assert!(parity(&config, &legacy).await.ready);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resync_runs_in_cutover_only_and_a_killed_one_resumes() {
    let check = pg().direct().await;
    let (legacy, _target, config) = table(&check).await;
    let proxy = start_ruled_proxy(config.clone()).await;
    let port = proxy.addr.port();
    let refused = backfill::run(
        &config,
        &options(&legacy, Direction::Reverse, 100),
        &mut |_| {},
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(refused.contains("cutover only"), "{refused}");
    to_target_only(&config, port, &legacy).await;
    let via = through(&proxy).await;
    via.batch_execute(&format!("DELETE FROM {legacy} WHERE id % 3 = 0"))
        .await
        .unwrap();
    set_mode(port, &legacy, "cutover FORCE").await.unwrap();
    let first = backfill::run(
        &config,
        &Options {
            max_batches: 5,
            ..options(&legacy, Direction::Reverse, 100)
        },
        &mut |_| {},
    )
    .await
    .unwrap();
    assert!(matches!(first, Outcome::Paused(_)), "{first:?}");
    let err = set_mode(port, &legacy, "dual_write").await.unwrap_err();
    assert!(err.contains("running"), "{err}");
    let Outcome::Finished(rest) = backfill::run(
        &config,
        &options(&legacy, Direction::Reverse, 100),
        &mut |_| {},
    )
    .await
    .unwrap() else {
        panic!("not finished")
    };
    assert!(rest.resumed);
    assert_eq!(rest.total_deleted, ROWS / 3);
    let left: i64 = check
        .query_one(&format!("SELECT count(*) FROM {legacy}"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, ROWS - ROWS / 3);
    // The forward backfill's state is its own: still finished, not rerun.
    let forward = backfill::run(
        &config,
        &options(&legacy, Direction::Forward, 100),
        &mut |_| {},
    )
    .await
    .unwrap();
    assert!(
        matches!(forward, Outcome::AlreadyFinished { .. }),
        "{forward:?}"
    );
    set_mode(port, &legacy, "dual_write").await.unwrap();
}
