//! `tandem backfill` against a real Postgres, under live writes through the proxy.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tandem::ops::backfill::{self, BackfillError, Event, Options, Outcome};
use tandem_rules::TableName;
use tandem_tests::mirror::{config_with, db_text, start_ruled_proxy, Kind, Pair};
use tandem_tests::{pg, through};

/// A pair with `rows` legacy rows that predate dual-write (the target is empty), and the
/// config of a proxy with its rule in `mode`.
async fn seeded(
    kind: Kind,
    rows: i64,
    mode: &str,
) -> (Pair, tokio_postgres::Client, tandem::Config) {
    let check = pg().direct().await;
    let pair = Pair::new(kind);
    pair.create(kind, &check).await;
    check
        .batch_execute(&pair.sql(&format!(
            "INSERT INTO {{legacy}} (tenant, amount, note) \
             SELECT CASE WHEN g % 2 = 0 THEN 'acme' ELSE 'globex' END, g, 'seed ' || g \
             FROM generate_series(1, {rows}) g"
        )))
        .await
        .unwrap();
    let config = config_with(&[pair.rule(kind).mode(mode)]);
    (pair, check, config)
}

fn options(pair: &Pair, batch_size: i64) -> Options {
    Options {
        batch_size,
        ..Options::new(TableName::new(Some("public"), &pair.legacy))
    }
}

async fn run(config: &tandem::Config, options: &Options) -> Outcome {
    backfill::run(config, options, &mut |_| {})
        .await
        .unwrap_or_else(|e| panic!("backfill: {e}"))
}

/// Updates, deletes and inserts through the proxy on keys 1..=`rows`, until `stop`; the
/// handle's value is the number of writes.
async fn live_writes(
    pair: &Pair,
    proxy: &tandem::server::RunningProxy,
    rows: i64,
) -> (Arc<AtomicBool>, tokio::task::JoinHandle<i64>) {
    let via = through(proxy).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = Arc::clone(&stop);
        let update =
            pair.sql("UPDATE {legacy} SET amount = amount + 1, note = 'live' WHERE id = $1");
        let delete = pair.sql("DELETE FROM {legacy} WHERE id = $1");
        let insert =
            pair.sql("INSERT INTO {legacy} (tenant, amount, note) VALUES ('acme', 1, 'new')");
        tokio::spawn(async move {
            let mut i: i64 = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let id = (i * 37) % rows + 1;
                let r = match i % 3 {
                    0 => via.execute(&update, &[&id]).await,
                    1 => via.execute(&delete, &[&((i * 53) % rows + 1)]).await,
                    _ => via.execute(&insert, &[]).await,
                };
                r.unwrap_or_else(|e| panic!("live write: {}", db_text(&e)));
            }
            i
        })
    };
    (stop, writer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_under_live_writes_ends_with_no_divergence() {
    let (pair, check, config) = seeded(Kind::List, 3000, "dual_write").await;
    let proxy = start_ruled_proxy(config.clone()).await;
    let (stop, writer) = live_writes(&pair, &proxy, 3000).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let outcome = run(
        &config,
        &Options {
            throttle: Duration::from_millis(2),
            ..options(&pair, 100)
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let writes = writer.await.unwrap();
    let Outcome::Finished(report) = outcome else {
        panic!("{outcome:?}")
    };
    assert!(report.progress.batches > 10, "{report:?}");
    assert!(
        writes > 50,
        "live writes ran during the backfill ({writes})"
    );
    assert_eq!(pair.drift(Kind::List, &check).await, Vec::<String>::new());
    let (legacy, target) = pair.counts(&check).await;
    assert_eq!(legacy, target);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_racing_a_batch_is_not_resurrected() {
    let (pair, check, config) = seeded(Kind::Hash, 50, "dual_write").await;
    let proxy = start_ruled_proxy(config.clone()).await;
    let deleter = through(&proxy).await;
    // The delete (legacy and, mirrored, target) is in flight when the batch reads the row.
    deleter.batch_execute("BEGIN").await.unwrap();
    deleter
        .execute(&pair.sql("DELETE FROM {legacy} WHERE id = 25"), &[])
        .await
        .unwrap();
    let batch = {
        let config = config.clone();
        let options = options(&pair, 1000);
        tokio::spawn(async move { run(&config, &options).await })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!batch.is_finished(), "the batch waits for the row lock");
    deleter.batch_execute("COMMIT").await.unwrap();
    let Outcome::Finished(report) = batch.await.unwrap() else {
        panic!()
    };
    assert_eq!(report.progress.copied, 49);
    let in_target: i64 = check
        .query_one(
            &pair.sql("SELECT count(*) FROM {target} WHERE id = 25"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        in_target, 0,
        "the deleted row is not resurrected in the target"
    );
    assert_eq!(pair.drift(Kind::Hash, &check).await, Vec::<String>::new());
}

/// Each batch is tried as a plain INSERT first and runs as the `ON CONFLICT DO NOTHING`
/// upsert when a key is in the target already: rows dual-write copied keep their (newer)
/// values, every other row is copied once, and the counts say which were skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_already_in_the_target_keep_their_rows_and_the_rest_is_copied() {
    let (pair, check, config) = seeded(Kind::Hash, 3000, "dual_write").await;
    let _proxy = start_ruled_proxy(config.clone()).await;
    // As dual-write would have left them: three rows in the target, newer than legacy's.
    check
        .batch_execute(&pair.sql(
            "INSERT INTO {target} SELECT * FROM {legacy} WHERE id IN (10, 1500, 2999); \
             UPDATE {target} SET note = 'newer' WHERE id IN (10, 1500, 2999)",
        ))
        .await
        .unwrap();
    match run(&config, &options(&pair, 1000)).await {
        Outcome::Finished(r) => {
            assert_eq!((r.progress.copied, r.progress.skipped), (2997, 3), "{r:?}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(pair.counts(&check).await, (3000, 3000));
    let newer: i64 = check
        .query_one(
            &pair.sql("SELECT count(*) FROM {target} WHERE note = 'newer'"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(newer, 3, "the target's own rows are not overwritten");
    let differing: i64 = check
        .query_one(
            &pair.sql(
                "SELECT count(*) FROM {legacy} l JOIN {target} t USING (id) \
                 WHERE l.note IS DISTINCT FROM t.note",
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(differing, 3, "every other row is legacy's");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_run_resumes_and_a_finished_one_is_not_rerun() {
    let (pair, check, config) = seeded(Kind::Hash, 1000, "dual_write").await;
    let _proxy = start_ruled_proxy(config.clone()).await;

    // Dry run: a plan, and nothing written.
    let plan = match run(
        &config,
        &Options {
            dry_run: true,
            ..options(&pair, 300)
        },
    )
    .await
    {
        Outcome::Plan(plan) => plan,
        other => panic!("{other:?}"),
    };
    assert!(plan.estimated_rows > 500, "{plan:?}");
    assert_eq!(plan.batches, (plan.estimated_rows + 299) / 300);
    assert!(
        plan.sql.contains("FOR KEY SHARE") && plan.sql.contains("ON CONFLICT (id) DO NOTHING"),
        "{}",
        plan.sql
    );
    assert_eq!(pair.counts(&check).await, (1000, 0));

    // Stopped after two batches (as if killed), then resumed.
    match run(
        &config,
        &Options {
            max_batches: 2,
            ..options(&pair, 300)
        },
    )
    .await
    {
        Outcome::Paused(r) => assert_eq!(r.progress.copied, 600),
        other => panic!("{other:?}"),
    }
    assert_eq!(pair.counts(&check).await, (1000, 600));
    match run(&config, &options(&pair, 300)).await {
        Outcome::Finished(r) => {
            assert!(r.resumed);
            assert_eq!(r.progress.copied, 400, "only the rest is read");
            assert_eq!(r.total_copied, 1000);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(pair.drift(Kind::Hash, &check).await, Vec::<String>::new());
    assert!(matches!(
        run(&config, &options(&pair, 300)).await,
        Outcome::AlreadyFinished { copied: 1000, .. }
    ));
    match run(
        &config,
        &Options {
            restart: true,
            ..options(&pair, 300)
        },
    )
    .await
    {
        Outcome::Finished(r) => assert_eq!((r.progress.copied, r.progress.skipped), (0, 1000)),
        other => panic!("{other:?}"),
    }
    let state: (String, i64) = {
        let row = check
            .query_one(
                &format!(
                    "SELECT status, batches FROM \"{}\".backfill_state WHERE table_name = $1",
                    config.store.schema
                ),
                &[&format!("public.{}", pair.legacy)],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(state, ("finished".to_string(), 4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn where_limits_the_scope_and_off_rules_are_refused() {
    let (pair, check, config) = seeded(Kind::List, 200, "dual_write").await;
    let _proxy = start_ruled_proxy(config.clone()).await;
    let scoped = Options {
        predicate: Some("tenant = 'acme'".into()),
        ..options(&pair, 30)
    };
    assert!(matches!(run(&config, &scoped).await, Outcome::Finished(r) if r.total_copied == 100));
    let acme: i64 = check
        .query_one(
            &pair.sql("SELECT count(*) FROM {target} WHERE tenant = 'acme'"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(pair.counts(&check).await, (200, 100));
    assert_eq!(acme, 100);
    let bad = Options {
        predicate: Some("1=1; DROP TABLE x".into()),
        ..options(&pair, 30)
    };
    assert!(backfill::run(&config, &bad, &mut |_| {}).await.is_err());

    let (pair, _check, config) = seeded(Kind::Hash, 10, "off").await;
    let _proxy = start_ruled_proxy(config.clone()).await;
    let err = backfill::run(&config, &options(&pair, 30), &mut |_| {})
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("set it to dual_write first"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_with_an_older_snapshot_does_not_leave_a_copy_behind() {
    let (pair, check, config) = seeded(Kind::Hash, 50, "dual_write").await;
    let proxy = start_ruled_proxy(config.clone()).await;
    let deleter = through(&proxy).await;
    // The deleter's snapshot predates the batch; it deletes the row after the batch copied
    // it, so its mirrored delete cannot see the copy.
    deleter
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1")
        .await
        .unwrap();
    let run_task = {
        let config = config.clone();
        let options = options(&pair, 1000);
        tokio::spawn(async move { run(&config, &options).await })
    };
    // Wait for the batch to commit its copies.
    loop {
        if pair.counts(&check).await.1 == 50 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    deleter
        .execute(&pair.sql("DELETE FROM {legacy} WHERE id = 25"), &[])
        .await
        .unwrap();
    assert!(
        !run_task.is_finished(),
        "the backfill waits for the older snapshot"
    );
    deleter.batch_execute("COMMIT").await.unwrap();
    let Outcome::Finished(report) = run_task.await.unwrap() else {
        panic!()
    };
    assert_eq!(report.progress.removed, 1, "{report:?}");
    assert_eq!(pair.drift(Kind::Hash, &check).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_run_resumes_after_its_last_committed_batch() {
    let (pair, check, config) = seeded(Kind::Hash, 2000, "dual_write").await;
    let _proxy = start_ruled_proxy(config.clone()).await;
    let slow = Options {
        throttle: Duration::from_millis(30),
        ..options(&pair, 100)
    };
    let task = {
        let config = config.clone();
        tokio::spawn(async move { run(&config, &slow).await })
    };
    // Let a few batches commit, then kill it.
    let start = std::time::Instant::now();
    while pair.counts(&check).await.1 < 300 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no batch committed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    task.abort(); // as a kill: the connection drops, an open batch rolls back
    let _ = task.await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_, copied_before) = pair.counts(&check).await;
    assert!(copied_before > 0 && copied_before < 2000, "{copied_before}");
    match run(&config, &options(&pair, 100)).await {
        Outcome::Finished(r) => {
            assert!(r.resumed);
            assert_eq!(r.total_copied, 2000);
            assert_eq!(r.progress.copied, 2000 - copied_before);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(pair.drift(Kind::Hash, &check).await, Vec::<String>::new());
}

/// Rows of the store's pending re-checks for the pair's legacy table.
async fn pending(check: &tokio_postgres::Client, config: &tandem::Config, pair: &Pair) -> i64 {
    check
        .query_one(
            &format!(
                "SELECT count(*) FROM \"{}\".backfill_pending WHERE table_name = $1",
                config.store.schema
            ),
            &[&format!("public.{}", pair.legacy)],
        )
        .await
        .unwrap()
        .get(0)
}

/// A session holding a REPEATABLE READ snapshot, as a report or `pg_dump` does; its pid.
async fn long_reader(client: &tokio_postgres::Client, application_name: &str) -> i32 {
    client
        .batch_execute(&format!(
            "SET application_name = '{application_name}'; BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1"
        ))
        .await
        .unwrap();
    client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0)
}

/// Issue 16: next to a long transaction the run said nothing and never ended. Now batches go
/// on while the re-checks wait, the wait is reported naming the session, `--max-wait` ends
/// the run with the pending re-checks recorded, and the next run does them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_go_on_next_to_a_long_transaction_and_max_wait_names_it() {
    let (pair, check, config) = seeded(Kind::Hash, 3000, "dual_write").await;
    let _proxy = start_ruled_proxy(config.clone()).await;
    let reader = pg().direct().await;
    let pid = long_reader(&reader, "nightly-report").await;
    let mut batches = Vec::new();
    let mut waits = Vec::new();
    let result = backfill::run(
        &config,
        &Options {
            max_wait: Some(Duration::from_secs(1)),
            report_every: Duration::ZERO,
            report_after: Duration::ZERO,
            ..options(&pair, 100)
        },
        &mut |e| match e {
            Event::Batch(p) => batches.push(p.pending_batches),
            Event::Waiting(w) => waits.push((*w).clone()),
            Event::Started(_) => {}
        },
    )
    .await;
    // Every row was copied while the reader held its snapshot: no batch waited for it.
    assert_eq!(pair.counts(&check).await, (3000, 3000));
    assert_eq!(
        batches.len(),
        31,
        "30 full batches, then an empty one: {batches:?}"
    );
    assert_eq!(
        batches.last().copied(),
        Some(30),
        "every batch's re-check waits: {batches:?}"
    );
    assert!(
        waits.iter().any(|w| w.blockers.iter().any(|b| b.pid == pid
            && b.application_name == "nightly-report"
            && b.state == "idle in transaction")),
        "the wait names the session: {waits:?}"
    );
    let err = match result {
        Err(e @ BackfillError::Blocked(_)) => e,
        other => panic!("the run must stop at --max-wait: {other:?}"),
    };
    let text = err.to_string();
    assert!(
        text.contains(&format!("pid {pid}")) && text.contains("nightly-report"),
        "{text}"
    );
    assert_eq!(
        pending(&check, &config, &pair).await,
        30,
        "kept for the next run"
    );

    // The reader ends; the next run only re-checks, and finishes.
    reader.batch_execute("COMMIT").await.unwrap();
    let mut started = None;
    let outcome = backfill::run(&config, &options(&pair, 100), &mut |e| {
        if let Event::Started(s) = e {
            started = Some((*s).clone());
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let started = started.expect("a Started event");
    assert!(
        started.only_rechecks && started.pending_batches == 30,
        "{started:?}"
    );
    match outcome {
        Outcome::Finished(r) => {
            assert_eq!((r.progress.batches, r.progress.removed), (0, 0), "{r:?}");
            assert_eq!(r.total_copied, 3000);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(pending(&check, &config, &pair).await, 0);
    assert_eq!(pair.drift(Kind::Hash, &check).await, Vec::<String>::new());
}

/// A DELETE in a long transaction, made after the batch copied its row, cannot see the copy;
/// a run stopped by `--max-wait` keeps the re-check, and the run after the transaction
/// ends removes the copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recheck_left_at_max_wait_is_done_by_the_next_run() {
    let (pair, check, config) = seeded(Kind::Hash, 50, "dual_write").await;
    let proxy = start_ruled_proxy(config.clone()).await;
    let deleter = through(&proxy).await;
    let pid = long_reader(&deleter, "cleanup-job").await;
    let run_task = {
        let config = config.clone();
        let options = Options {
            max_wait: Some(Duration::from_secs(2)),
            ..options(&pair, 1000)
        };
        tokio::spawn(async move { backfill::run(&config, &options, &mut |_| {}).await })
    };
    while pair.counts(&check).await.1 < 50 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    deleter
        .execute(&pair.sql("DELETE FROM {legacy} WHERE id = 25"), &[])
        .await
        .unwrap();
    match run_task.await.unwrap() {
        Err(BackfillError::Blocked(b)) => {
            assert!(b.wait.blockers.iter().any(|x| x.pid == pid), "{b}");
            assert_eq!(b.wait.pending_keys, 50, "{b}");
        }
        other => panic!("the run must stop at --max-wait naming pid {pid}: {other:?}"),
    }
    let copy: i64 = check
        .query_one(
            &pair.sql("SELECT count(*) FROM {target} WHERE id = 25"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(copy, 1, "the copy outlived its row until the re-check");
    assert_eq!(pending(&check, &config, &pair).await, 1);
    let last_error: Option<String> = check
        .query_one(
            &format!(
                "SELECT last_error FROM \"{}\".backfill_state WHERE table_name = $1",
                config.store.schema
            ),
            &[&format!("public.{}", pair.legacy)],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        last_error.is_some_and(|e| e.contains(&format!("pid {pid}"))),
        "the state row says what stopped the run"
    );

    deleter.batch_execute("COMMIT").await.unwrap();
    match run(&config, &options(&pair, 1000)).await {
        Outcome::Finished(r) => assert_eq!(r.progress.removed, 1, "{r:?}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(pending(&check, &config, &pair).await, 0);
    assert_eq!(pair.drift(Kind::Hash, &check).await, Vec::<String>::new());
}

/// Issue 16: right after a backfill the target had no statistics (a union read planned
/// without them took 95 ms instead of 1.4 ms). A finished run leaves it analysed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_backfill_leaves_the_target_analysed() {
    let (pair, check, config) = seeded(Kind::List, 500, "dual_write").await;
    let _proxy = start_ruled_proxy(config.clone()).await;
    let stats = pair.sql(
        "SELECT count(*) FROM pg_stats WHERE schemaname = 'public' AND tablename = '{target}' AND inherited",
    );
    let before: i64 = check.query_one(&stats, &[]).await.unwrap().get(0);
    assert_eq!(before, 0, "no statistics before");
    match run(&config, &options(&pair, 200)).await {
        Outcome::Finished(r) => assert!(r.analyzed.is_some(), "{r:?}"),
        other => panic!("{other:?}"),
    }
    let after: i64 = check.query_one(&stats, &[]).await.unwrap().get(0);
    assert!(after > 0, "the target's columns have statistics");
    let reltuples: f32 = check
        .query_one(
            &pair.sql("SELECT reltuples FROM pg_class WHERE oid = '{target}'::regclass"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    // PostgreSQL 13's ANALYZE leaves a partitioned table's own reltuples at 0 (14 counts it).
    if tandem_tests::server_major().await >= 14 {
        assert_eq!(reltuples, 500.0);
    }
}

/// Waits (at most 20 s) until a session whose query starts with `prefix` waits for a lock.
async fn waiting_on_lock(check: &tokio_postgres::Client, prefix: &str) {
    let start = std::time::Instant::now();
    loop {
        let n: i64 = check
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
                 AND left(query, length($1)) = $1",
                &[&prefix],
            )
            .await
            .unwrap()
            .get(0);
        if n > 0 {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "nobody waits: {prefix}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_whose_statement_ended_before_its_commit_does_not_leave_a_copy_behind() {
    let (pair, check, _) = seeded(Kind::Hash, 50, "dual_write").await;
    // Without the guard, which would otherwise find and mirror the missed delete itself
    // (its statement trigger reads with a fresh snapshot).
    let config = config_with(&[pair.rule(Kind::Hash).mode("dual_write").guard("off")]);
    let proxy = start_ruled_proxy(config.clone()).await;
    // Another session's uncommitted insert of key 40 holds the batch after it locked key
    // 25 (and copied it), so the delete of 25 below starts before the batch commits.
    let holder = pg().direct().await;
    holder
        .batch_execute(
            &pair.sql("BEGIN; INSERT INTO {target} SELECT * FROM {legacy} WHERE id = 40"),
        )
        .await
        .unwrap();
    let run_task = {
        let config = config.clone();
        let options = options(&pair, 1000);
        tokio::spawn(async move { run(&config, &options).await })
    };
    waiting_on_lock(&check, "WITH batch AS").await;
    let deleter = through(&proxy).await;
    deleter.batch_execute("BEGIN").await.unwrap();
    let delete = tokio::spawn({
        let sql = pair.sql("DELETE FROM {legacy} WHERE id = 25");
        async move {
            deleter.batch_execute(&sql).await.unwrap();
            deleter
        }
    });
    waiting_on_lock(&check, "WITH tandem_w").await;
    holder.batch_execute("ROLLBACK").await.unwrap();
    // The delete's statement ends (over the simple protocol its snapshot, older than the
    // batch, is released: backend_xmin goes NULL) but its transaction stays open: the copy of 25 is still there, and so, for now, is its row.
    let deleter = delete.await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        !run_task.is_finished(),
        "the re-check waits for the open transaction that deleted with an older snapshot"
    );
    deleter.batch_execute("COMMIT").await.unwrap();
    let Outcome::Finished(report) = run_task.await.unwrap() else {
        panic!()
    };
    assert_eq!(pair.drift(Kind::Hash, &check).await, Vec::<String>::new());
    assert_eq!(report.progress.removed, 1, "{report:?}");
}

/// The store's record of a run: (status, rows copied, rows skipped), and whether the rule
/// says its whole-table backfill finished.
async fn run_state(
    check: &tokio_postgres::Client,
    config: &tandem::Config,
    pair: &Pair,
) -> (String, i64, i64, bool) {
    let table = format!("public.{}", pair.legacy);
    let row = check
        .query_one(
            &format!(
                "SELECT s.status, s.rows_copied, s.rows_skipped, r.backfilled \
                 FROM \"{0}\".backfill_state s JOIN \"{0}\".rules r USING (table_name) \
                 WHERE s.table_name = $1 AND s.predicate = '' AND s.direction = 'forward'",
                config.store.schema
            ),
            &[&table],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2), row.get(3))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_workers_under_live_writes_end_with_no_divergence() {
    let (pair, check, config) = seeded(Kind::List, 3000, "dual_write").await;
    let proxy = start_ruled_proxy(config.clone()).await;
    let (stop, writer) = live_writes(&pair, &proxy, 3000).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let outcome = run(
        &config,
        &Options {
            jobs: 4,
            throttle: Duration::from_millis(2),
            ..options(&pair, 100)
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let writes = writer.await.unwrap();
    let Outcome::Finished(report) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(
        report.parts,
        Some(backfill::PartsDone {
            total: 4,
            finished: 4
        })
    );
    assert!(report.progress.batches >= 4, "{report:?}");
    assert!(
        writes > 50,
        "live writes ran during the backfill ({writes})"
    );
    assert_eq!(pair.drift(Kind::List, &check).await, Vec::<String>::new());
    let (legacy, target) = pair.counts(&check).await;
    assert_eq!(legacy, target);
    let (status, _, _, backfilled) = run_state(&check, &config, &pair).await;
    assert_eq!(status, "finished");
    assert!(
        backfilled,
        "the rule records the finished whole-table backfill"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parallel_run_resumes_and_two_processes_share_it() {
    let (pair, check, config) = seeded(Kind::Hash, 2000, "dual_write").await;
    let _proxy = start_ruled_proxy(config.clone()).await;
    // Three key ranges; stopped after two batches.
    let first = run(
        &config,
        &Options {
            jobs: 3,
            max_batches: 2,
            ..options(&pair, 100)
        },
    )
    .await;
    let Outcome::Paused(report) = first else {
        panic!("{first:?}")
    };
    let parts = report.parts.expect("a run in parts");
    assert_eq!(parts.total, 3);
    assert!(parts.finished < 3, "{parts:?}");
    assert!(report.progress.copied >= 200, "{report:?}");
    assert_eq!(run_state(&check, &config, &pair).await.0, "running");
    // Two runs at once (as two processes or machines would) take the ranges left.
    let shared = Options {
        jobs: 2,
        ..options(&pair, 100)
    };
    let (a, b) = tokio::join!(run(&config, &shared), run(&config, &shared));
    let copied = |o: &Outcome| match o {
        Outcome::Finished(r) | Outcome::Paused(r) => r.progress.copied,
        other => panic!("{other:?}"),
    };
    assert!(
        matches!(a, Outcome::Finished(_)) || matches!(b, Outcome::Finished(_)),
        "one of them finishes the run: {a:?} / {b:?}"
    );
    // Every row copied exactly once over the three runs: no range was copied twice.
    assert_eq!(report.progress.copied + copied(&a) + copied(&b), 2000);
    let (status, rows_copied, rows_skipped, backfilled) = run_state(&check, &config, &pair).await;
    assert_eq!(
        (status.as_str(), rows_copied, rows_skipped),
        ("finished", 2000, 0)
    );
    assert!(backfilled);
    assert_eq!(pair.drift(Kind::Hash, &check).await, Vec::<String>::new());
    assert_eq!(pair.counts(&check).await, (2000, 2000));
}

/// The rule's watermark and whether its whole-table backfill finished
/// (`rules.backfilled_to`, `rules.backfilled`).
async fn watermark(
    check: &tokio_postgres::Client,
    config: &tandem::Config,
    pair: &Pair,
) -> (Option<Vec<String>>, bool) {
    let row = check
        .query_one(
            &format!(
                "SELECT backfilled_to, backfilled FROM \"{}\".rules WHERE table_name = $1",
                config.store.schema
            ),
            &[&format!("public.{}", pair.legacy)],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// The single stream's cursor in `backfill_state`.
async fn state_cursor(
    check: &tokio_postgres::Client,
    config: &tandem::Config,
    pair: &Pair,
) -> Option<Vec<String>> {
    check
        .query_one(
            &format!(
                "SELECT cursor FROM \"{}\".backfill_state \
                 WHERE table_name = $1 AND predicate = '' AND direction = 'forward'",
                config.store.schema
            ),
            &[&format!("public.{}", pair.legacy)],
        )
        .await
        .unwrap()
        .get(0)
}

/// The parts of a split run in part order: (part, cursor, finished, batches).
async fn parts(
    check: &tokio_postgres::Client,
    config: &tandem::Config,
    pair: &Pair,
) -> Vec<(i32, Option<Vec<String>>, bool, i64)> {
    check
        .query(
            &format!(
                "SELECT part, cursor, status = 'finished', batches FROM \"{}\".backfill_parts \
                 WHERE table_name = $1 AND predicate = '' AND direction = 'forward' ORDER BY part",
                config.store.schema
            ),
            &[&format!("public.{}", pair.legacy)],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

/// Switches the rule's mode through the store, as `SET RULE ... MODE` does.
async fn set_mode(config: &tandem::Config, pair: &Pair, mode: tandem_rules::Mode) {
    let mut admin = pg().direct().await;
    let store = tandem::control::store::Store::new(&config.store.schema);
    tandem::control::store::change::apply(
        &mut admin,
        &store,
        tandem::control::store::change::RuleChange::SetMode {
            table: TableName::new(Some("public"), &pair.legacy),
            mode,
            force: false,
        },
        "test",
    )
    .await
    .unwrap_or_else(|e| panic!("SET RULE MODE {mode}: {e:?}"));
}

fn key(values: &[&str]) -> Option<Vec<String>> {
    Some(values.iter().map(|v| v.to_string()).collect())
}

/// A paused run publishes how far it copied; union reads split there; the run that finishes
/// records the finished backfill; `--restart` and a switch to `off` clear the watermark, and
/// a run that went on through `off` publishes none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_run_publishes_its_watermark_and_restart_and_off_clear_it() {
    let (pair, check, config) = seeded(Kind::Hash, 5000, "union_read").await;
    let proxy = start_ruled_proxy(config.clone()).await;
    assert_eq!(watermark(&check, &config, &pair).await, (None, false));
    let paused = |max_batches| Options {
        max_batches,
        ..options(&pair, 1000)
    };
    assert!(matches!(
        run(&config, &paused(2)).await,
        Outcome::Paused(r) if r.progress.copied == 2000
    ));
    assert_eq!(state_cursor(&check, &config, &pair).await, key(&["2000"]));
    assert_eq!(
        watermark(&check, &config, &pair).await,
        (key(&["2000"]), false),
        "the paused run's cursor is published"
    );
    // The proxy takes it, and a union read is still every legacy row: keys up to 2000 from
    // the target, the others from legacy.
    let watch = proxy
        .watch
        .as_ref()
        .expect("a ruled proxy watches its store");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while watch.current().set.rules[0].rule.backfilled_to != key(&["2000"]) {
        assert!(
            std::time::Instant::now() < deadline,
            "the proxy never took the watermark"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let via = through(&proxy).await;
    let counted: i64 = via
        .query_one(
            &pair.sql("SELECT count(*) FROM {legacy} WHERE id BETWEEN 1990 AND 2010"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(counted, 21, "both sides of the watermark are read");

    // To the end: the rule records the finished backfill.
    assert!(matches!(
        run(&config, &options(&pair, 1000)).await,
        Outcome::Finished(r) if r.total_copied == 5000
    ));
    assert_eq!(
        watermark(&check, &config, &pair).await,
        (key(&["5000"]), true),
        "published when the copying ended, then marked backfilled"
    );

    // --restart clears both (publications off, so only the restart could have written it).
    assert!(matches!(
        run(
            &config,
            &Options {
                restart: true,
                watermark_every: Duration::ZERO,
                ..paused(1)
            }
        )
        .await,
        Outcome::Paused(_)
    ));
    assert_eq!(state_cursor(&check, &config, &pair).await, key(&["1000"]));
    assert_eq!(watermark(&check, &config, &pair).await, (None, false));

    // Resumed: published again; a switch to off clears it.
    assert!(matches!(run(&config, &paused(1)).await, Outcome::Paused(_)));
    assert_eq!(
        watermark(&check, &config, &pair).await,
        (key(&["2000"]), false)
    );
    set_mode(&config, &pair, tandem_rules::Mode::DualWrite).await;
    assert_eq!(
        watermark(&check, &config, &pair).await,
        (key(&["2000"]), false),
        "kept through other mode changes"
    );
    set_mode(&config, &pair, tandem_rules::Mode::Off).await;
    assert_eq!(watermark(&check, &config, &pair).await, (None, false));
    // Rows changed in off were never mirrored: the run that goes on after it publishes
    // nothing.
    set_mode(&config, &pair, tandem_rules::Mode::DualWrite).await;
    assert!(matches!(run(&config, &paused(1)).await, Outcome::Paused(_)));
    assert_eq!(state_cursor(&check, &config, &pair).await, key(&["3000"]));
    assert_eq!(watermark(&check, &config, &pair).await, (None, false));
}

/// Split into parts, the watermark is the end of the contiguous copied prefix: the cursor
/// of the first part not finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parallel_run_publishes_the_cursor_of_its_first_unfinished_part() {
    let (pair, check, config) = seeded(Kind::Hash, 3000, "dual_write").await;
    let _proxy = start_ruled_proxy(config.clone()).await;
    let first = run(
        &config,
        &Options {
            jobs: 3,
            max_batches: 4,
            ..options(&pair, 100)
        },
    )
    .await;
    assert!(matches!(first, Outcome::Paused(_)), "{first:?}");
    let split = parts(&check, &config, &pair).await;
    assert_eq!(split.len(), 3, "{split:?}");
    assert!(split.iter().all(|p| !p.2), "no part is finished: {split:?}");
    let part0 = &split[0];
    assert!(part0.3 > 0, "the first part was copied from: {split:?}");
    assert_eq!(part0.1, key(&[&(100 * part0.3).to_string()]), "{split:?}");
    assert_eq!(
        watermark(&check, &config, &pair).await,
        (part0.1.clone(), false),
        "{split:?}"
    );

    // One worker finishes the first part (its rows left, then a batch that comes back
    // empty) and copies one batch of the second.
    let left = (1000 - 100 * part0.3) / 100 + 1;
    let second = run(
        &config,
        &Options {
            jobs: 1,
            max_batches: u64::try_from(left + 1).unwrap(),
            ..options(&pair, 100)
        },
    )
    .await;
    assert!(matches!(second, Outcome::Paused(_)), "{second:?}");
    let split = parts(&check, &config, &pair).await;
    assert!(split[0].2 && !split[1].2 && !split[2].2, "{split:?}");
    let part1 = &split[1];
    assert_eq!(
        part1.1,
        key(&[&(1000 + 100 * part1.3).to_string()]),
        "{split:?}"
    );
    assert_eq!(
        watermark(&check, &config, &pair).await,
        (part1.1.clone(), false),
        "the second part's cursor, not the third's: {split:?}"
    );
}

/// `--watermark-every 0`: nothing is published, paused or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watermark_every_zero_publishes_nothing() {
    let (pair, check, config) = seeded(Kind::Hash, 1000, "union_read").await;
    let _proxy = start_ruled_proxy(config.clone()).await;
    let off = Options {
        max_batches: 2,
        watermark_every: Duration::ZERO,
        ..options(&pair, 300)
    };
    assert!(matches!(run(&config, &off).await, Outcome::Paused(_)));
    assert_eq!(state_cursor(&check, &config, &pair).await, key(&["600"]));
    assert_eq!(watermark(&check, &config, &pair).await, (None, false));
    let parallel = Options {
        jobs: 2,
        batch_size: 100,
        ..off
    };
    assert!(matches!(run(&config, &parallel).await, Outcome::Paused(_)));
    assert!(!parts(&check, &config, &pair).await.is_empty());
    assert_eq!(watermark(&check, &config, &pair).await, (None, false));
    // The same run with publications on publishes.
    assert!(matches!(
        run(
            &config,
            &Options {
                max_batches: 1,
                ..options(&pair, 300)
            }
        )
        .await,
        Outcome::Paused(_)
    ));
    assert!(watermark(&check, &config, &pair).await.0.is_some());
}

/// While a run goes on, the watermark is published every interval, no more often than that,
/// and every legacy row at or below it is in the target whenever it is read.
/// (The parallel coordinator looks every 250 ms: a shorter interval would not show it
/// publishing too often.)
async fn published_while_running(
    jobs: usize,
    batch_size: i64,
    throttle: Duration,
    every: Duration,
) {
    let rows = 3000;
    let (pair, check, config) = seeded(Kind::Hash, rows, "union_read").await;
    let _proxy = start_ruled_proxy(config.clone()).await;
    let task = {
        let config = config.clone();
        let options = Options {
            jobs,
            throttle,
            watermark_every: every,
            ..options(&pair, batch_size)
        };
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let outcome = run(&config, &options).await;
            (outcome, started.elapsed())
        })
    };
    // The watermark and, in the same snapshot, the legacy rows at or below it the target
    // lacks.
    let observe = pair.sql(&format!(
        "SELECT r.backfilled_to[1]::int8, \
           (SELECT count(*) FROM {{legacy}} l WHERE l.id <= r.backfilled_to[1]::int8 \
              AND NOT EXISTS (SELECT 1 FROM {{target}} t WHERE t.id = l.id)) \
         FROM \"{}\".rules r WHERE r.table_name = $1 AND NOT r.backfilled",
        config.store.schema
    ));
    let table = format!("public.{}", pair.legacy);
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !task.is_finished() {
        assert!(std::time::Instant::now() < deadline, "the run stalled");
        if let Some(row) = check.query_opt(&observe, &[&table]).await.unwrap() {
            let (published, missing): (Option<i64>, i64) = (row.get(0), row.get(1));
            if let Some(published) = published {
                assert_eq!(missing, 0, "rows at or below {published} not in the target");
                seen.push(published);
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (outcome, elapsed) = task.await.unwrap();
    assert!(matches!(outcome, Outcome::Finished(_)), "{outcome:?}");
    assert!(
        seen.iter().any(|&k| k > 0 && k < rows),
        "a watermark was published while the run went on: {seen:?}"
    );
    let publications: i64 = check
        .query_one(
            &format!(
                "SELECT count(*) FROM \"{}\".rules_history WHERE table_name = $1 \
                   AND old_rule -> 'backfilled_to' IS DISTINCT FROM new_rule -> 'backfilled_to'",
                config.store.schema
            ),
            &[&table],
        )
        .await
        .unwrap()
        .get(0);
    let allowed = (elapsed.as_millis() / every.as_millis()) as i64 + 1;
    assert!(
        (2..=allowed).contains(&publications),
        "{publications} publications in {elapsed:?}, at most one per {every:?} and one at the end"
    );
    assert!(watermark(&check, &config, &pair).await.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_backfill_publishes_its_watermark_every_interval() {
    published_while_running(1, 50, Duration::from_millis(30), Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_parallel_backfill_publishes_its_watermark_every_interval() {
    published_while_running(3, 25, Duration::from_millis(30), Duration::from_millis(500)).await;
}

/// Workers copying without pause always have a batch holding the rule's row: publishing
/// must neither wait for the end of the copying nor hold a worker's open batch (it did,
/// when the coordinator's queries kept the workers from being polled).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_does_not_stall_busy_parallel_workers() {
    published_while_running(3, 5, Duration::ZERO, Duration::from_millis(1)).await;
}
