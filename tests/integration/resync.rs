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

/// Rows present in one table and not the other (on every column), in one snapshot.
async fn disagreement(check: &mut Client, legacy: &str, target: &str) -> (i64, i64) {
    tandem_tests::disagreement(check, legacy, target, "id, tenant, amount, note").await
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
        strict_indexes: false,
        ..Default::default()
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

/// A ruled table walked to `target_only`, `write` made there through Tandem (so legacy
/// misses it), and back in `cutover FORCE`, owing its re-sync: the legacy table, the
/// config and the proxy.
async fn back_from_target_only(
    check: &Client,
    write: &str,
) -> (String, tandem::Config, tandem::RunningProxy) {
    let (legacy, _target, config) = table(check).await;
    let proxy = start_ruled_proxy(config.clone()).await;
    let port = proxy.addr.port();
    to_target_only(&config, port, &legacy).await;
    through(&proxy)
        .await
        .batch_execute(&write.replace("{legacy}", &legacy))
        .await
        .unwrap();
    set_mode(port, &legacy, "cutover FORCE").await.unwrap();
    (legacy, config, proxy)
}

/// Writes through Tandem until `stop`, whatever the mode: inserts of new ids, updates and
/// deletes of ids 2001..=3000 (the walk's own writes use ids up to 2000), and deletes of
/// rows written in target_only (ids 100101..=100200 of 100001..=100200). Returns how many it made.
fn live_writes(via: Client, legacy: &str, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<i64> {
    let insert =
        format!("INSERT INTO {legacy} (id, tenant, amount, note) VALUES ($1, 'acme', 1, 'loop')");
    let update = format!("UPDATE {legacy} SET amount = amount + 1, note = 'loop' WHERE id = $1");
    let delete = format!("DELETE FROM {legacy} WHERE id = $1");
    tokio::spawn(async move {
        let mut i: i64 = 0;
        while !stop.load(Ordering::Relaxed) {
            i += 1;
            let r = match i % 4 {
                0 => via.execute(&insert, &[&(200_000 + i)]).await,
                1 => via.execute(&update, &[&(2001 + (i * 37) % 1000)]).await,
                2 => via.execute(&delete, &[&(2001 + (i * 53) % 1000)]).await,
                _ => via.execute(&delete, &[&(100_101 + (i * 7) % 100)]).await,
            };
            r.unwrap_or_else(|e| panic!("live write: {}", db_text(&e)));
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        i
    })
}

/// The runbook's walk, `tandem init` to `target_only` and back, under a live write loop
/// through Tandem the whole time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_way_back_from_target_only_resyncs_legacy_under_live_writes() {
    let mut check = pg().direct().await;
    let legacy = unique("resync");
    let target = format!("{legacy}_v2");
    check
        .batch_execute(&format!(
            "CREATE TABLE {legacy} (id bigint PRIMARY KEY, tenant text NOT NULL, amount bigint NOT NULL, note text);
             INSERT INTO {legacy} SELECT g, CASE WHEN g % 2 = 0 THEN 'acme' ELSE 'globex' END, g, 'seed'
               FROM generate_series(1, {ROWS}) g;"
        ))
        .await
        .unwrap_or_else(|e| panic!("{}", db_text(&e)));
    // 1. tandem init: the target LIST-partitioned by tenant, key (id, tenant) while
    //    legacy's own primary key is id, and the rule in off.
    let mut config = config_with(&[]);
    config.store.enabled = Some(true);
    config.admin = Some(tandem::config::AdminConfig {
        user: "admin".into(),
        password: Some("resync".into()),
        password_env: None,
    });
    tandem::ops::init::run(
        &config,
        &tandem::ops::init::Options {
            table: TableName::new(Some("public"), &legacy),
            target: None,
            layout: tandem::ops::init::Layout::parse("list(tenant)").unwrap(),
            no_default: false,
            dry_run: false,
        },
    )
    .await
    .unwrap_or_else(|e| panic!("init: {e}"));
    let proxy = start_ruled_proxy(config.clone()).await;
    let port = proxy.addr.port();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = live_writes(through(&proxy).await, &legacy, Arc::clone(&stop));

    // 2-7. dual_write, backfill, union_read, cutover, target_only.
    set_mode(port, &legacy, "dual_write").await.unwrap();
    to_target_only(&config, port, &legacy).await;

    // target_only: the target alone changes; legacy misses inserts, updates and deletes,
    // and a row moved to another tenant.
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
    assert_eq!(
        legacy_row(&check, &legacy, 1100).await.as_deref(),
        Some("acme|1100|seed")
    );
    let (stale, missed) = disagreement(&mut check, &legacy, &target).await;
    assert!(stale >= 601 && missed >= 501, "{stale} {missed}");

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

    // The re-sync, in batches of 100, while the loop writes.
    let writes_before = {
        let c = pg().direct().await;
        let n: i64 = c
            .query_one(
                &format!("SELECT count(*) FROM {target} WHERE id > 200000"),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        n
    };
    let Outcome::Finished(report) = backfill::run(
        &config,
        &Options {
            throttle: Duration::from_millis(2),
            ..options(&legacy, Direction::Reverse, 100)
        },
        &mut |_| {},
    )
    .await
    .unwrap_or_else(|e| panic!("re-sync: {e}")) else {
        panic!("the re-sync did not finish")
    };
    eprintln!("{}", backfill::progress_line(&report.progress));
    assert!(report.progress.batches > 10, "{report:?}");
    assert!(report.progress.copied > 0, "{report:?}");
    assert!(report.total_deleted >= 300, "{report:?}");
    let report = parity(&config, &legacy).await;
    assert!(report.ready, "{:?}", report.checks);
    assert_eq!(report.divergence, 0);
    assert!(report.checks.iter().any(|c| c.name == "resync" && c.ok));

    // Now the way back is open.
    set_mode(port, &legacy, "union_read").await.unwrap();
    set_mode(port, &legacy, "dual_write").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let writes = writer.await.unwrap();
    let inserted_since: i64 = check
        .query_one(
            &format!("SELECT count(*) FROM {legacy} WHERE id > 200000"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    eprintln!("{writes} live writes through the walk");
    assert!(
        inserted_since > writes_before,
        "the loop wrote during the re-sync"
    );

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
    assert!(
        legacy_row(&check, &legacy, 100_002).await.is_some(),
        "inserted"
    );
    assert!(parity(&config, &legacy).await.ready);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_with_an_older_snapshot_does_not_leave_a_resynced_row_in_legacy() {
    let check = pg().direct().await;
    let (legacy, config, proxy) = back_from_target_only(
        &check,
        "INSERT INTO {legacy} SELECT g, 'acme', g, 'new' FROM generate_series(100001, 100050) g",
    )
    .await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_racing_a_resync_batch_is_not_overwritten_by_its_older_read() {
    let check = pg().direct().await;
    let (legacy, config, proxy) = back_from_target_only(
        &check,
        "UPDATE {legacy} SET note = 'changed in target_only' WHERE id = 42",
    )
    .await;
    // The update (target, mirrored into legacy) is in flight when the batch reads the row.
    let updater = through(&proxy).await;
    updater.batch_execute("BEGIN").await.unwrap();
    updater
        .execute(
            &format!("UPDATE {legacy} SET amount = -1, note = 'updated in cutover' WHERE id = 42"),
            &[],
        )
        .await
        .unwrap();
    let task = {
        let config = config.clone();
        let options = options(&legacy, Direction::Reverse, 10_000);
        tokio::spawn(async move { backfill::run(&config, &options, &mut |_| {}).await })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!task.is_finished(), "the batch waits for the row lock");
    updater.batch_execute("COMMIT").await.unwrap();
    let Ok(Outcome::Finished(_)) = task.await.unwrap() else {
        panic!("the re-sync did not finish")
    };
    assert_eq!(
        legacy_row(&check, &legacy, 42).await.as_deref(),
        Some("acme|-1|updated in cutover"),
        "the update survives the re-sync"
    );
    assert!(parity(&config, &legacy).await.ready);
}
