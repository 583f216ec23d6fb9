//! Rules across a fleet: several proxies share one rule store; a change made anywhere
//! reaches every instance within a second, sessions adopt it only between transactions,
//! and prepared statements are planned again under the new rules.

use std::time::{Duration, Instant};

use tandem_tests::mirror::{config_with, db_text, start_ruled_proxy, Kind, Pair};
use tandem_tests::{pg, through};
use tokio_postgres::Client;

/// One row for `pair`'s legacy table; ids come from its bigserial.
const INSERT: &str =
    "INSERT INTO {legacy} (tenant, amount, note) VALUES ('acme', 1, $1) RETURNING id";

/// Sets the mode of `pair`'s rule in the store, directly in SQL (as an operator could).
async fn set_mode(check: &Client, schema: &str, pair: &Pair, mode: &str) {
    let sql = format!(
        "UPDATE \"{schema}\".rules SET mode = $1, updated_by = 'test' WHERE table_name = $2"
    );
    let n = check
        .execute(&sql, &[&mode, &format!("public.{}", pair.legacy)])
        .await
        .unwrap_or_else(|e| panic!("set mode: {}", db_text(&e)));
    assert_eq!(n, 1, "the rule row exists");
}

/// Whether the target holds the legacy row `id`.
async fn mirrored(check: &Client, pair: &Pair, id: i64) -> bool {
    let row = check
        .query_one(
            &pair.sql("SELECT count(*) FROM {target} WHERE id = $1"),
            &[&id],
        )
        .await
        .unwrap_or_else(|e| panic!("{}", db_text(&e)));
    row.get::<_, i64>(0) == 1
}

/// Inserts with `insert` through `via` until a row is not mirrored (`off` applied).
async fn until_unmirrored(
    via: &Client,
    insert: &tokio_postgres::Statement,
    check: &Client,
    pair: &Pair,
) {
    let start = Instant::now();
    loop {
        let id: i64 = via.query_one(insert, &[&"off"]).await.unwrap().get(0);
        if !mirrored(check, pair, id).await {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "off never applied"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A fresh hash-partitioned pair, and a proxy config whose own store has its rule in `off`.
async fn ruled_off() -> (Client, Pair, tandem::Config, String) {
    let check = pg().direct().await;
    let pair = Pair::new(Kind::Hash);
    pair.create(Kind::Hash, &check).await;
    // No guard: these tests watch the proxies pick a rule change up by whether their writes
    // are mirrored, which the guard in the database would do at once whatever the proxy.
    let config = config_with(&[pair.rule(Kind::Hash).mode("off").guard("off")]);
    let schema = config.store.schema.clone();
    (check, pair, config, schema)
}

/// Inserts through `via` until a row is mirrored; returns how long that took.
async fn until_mirrored(via: &Client, check: &Client, pair: &Pair) -> Duration {
    let start = Instant::now();
    loop {
        let row = via
            .query_one(&pair.sql(INSERT), &[&"probe"])
            .await
            .unwrap_or_else(|e| panic!("insert: {}", db_text(&e)));
        if mirrored(check, pair, row.get(0)).await {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the change never reached this instance"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flip_reaches_every_instance_sharing_the_store() {
    let (check, pair, config, schema) = ruled_off().await;
    let a = start_ruled_proxy(config.clone()).await;
    let b = start_ruled_proxy(config).await;
    let (via_a, via_b) = (through(&a).await, through(&b).await);

    // Off: nothing is mirrored on either instance.
    for via in [&via_a, &via_b] {
        let id: i64 = via
            .query_one(&pair.sql(INSERT), &[&"off"])
            .await
            .unwrap()
            .get(0);
        assert!(!mirrored(&check, &pair, id).await);
    }

    set_mode(&check, &schema, &pair, "dual_write").await;
    let (la, lb) = tokio::join!(
        until_mirrored(&via_a, &check, &pair),
        until_mirrored(&via_b, &check, &pair)
    );
    eprintln!("flip to dual_write honoured after {la:?} (instance a), {lb:?} (instance b)");

    set_mode(&check, &schema, &pair, "off").await;
    // Back to off: within the deadline, writes stop being mirrored on both.
    for via in [&via_a, &via_b] {
        let insert = via.prepare(&pair.sql(INSERT)).await.unwrap();
        until_unmirrored(via, &insert, &check, &pair).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_keeps_the_rules_it_started_with() {
    let (check, pair, config, schema) = ruled_off().await;
    let proxy = start_ruled_proxy(config).await;
    let probe = through(&proxy).await;
    let via = through(&proxy).await;

    via.batch_execute("BEGIN").await.unwrap();
    let first: i64 = via
        .query_one(&pair.sql(INSERT), &[&"in tx 1"])
        .await
        .unwrap()
        .get(0);
    set_mode(&check, &schema, &pair, "dual_write").await;
    // Another session sees the change...
    until_mirrored(&probe, &check, &pair).await;
    // ...but this transaction still runs under the rules it began with.
    let second: i64 = via
        .query_one(&pair.sql(INSERT), &[&"in tx 2"])
        .await
        .unwrap()
        .get(0);
    via.batch_execute("COMMIT").await.unwrap();
    assert!(!mirrored(&check, &pair, first).await);
    assert!(!mirrored(&check, &pair, second).await);
    // The next transaction adopts the new rules.
    let third: i64 = via
        .query_one(&pair.sql(INSERT), &[&"after"])
        .await
        .unwrap()
        .get(0);
    assert!(mirrored(&check, &pair, third).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_are_planned_again_under_new_rules() {
    let (check, pair, config, schema) = ruled_off().await;
    let proxy = start_ruled_proxy(config).await;
    let probe = through(&proxy).await;
    let via = through(&proxy).await;
    let insert = via.prepare(&pair.sql(INSERT)).await.unwrap();
    let update = via
        .prepare(&pair.sql("UPDATE {legacy} SET note = $1 WHERE id = $2"))
        .await
        .unwrap();
    let id: i64 = via.query_one(&insert, &[&"off"]).await.unwrap().get(0);
    assert!(!mirrored(&check, &pair, id).await);

    set_mode(&check, &schema, &pair, "dual_write").await;
    until_mirrored(&probe, &check, &pair).await;
    // Same prepared statements, now mirrored, with the client's own tags.
    let id: i64 = via.query_one(&insert, &[&"dual"]).await.unwrap().get(0);
    assert!(mirrored(&check, &pair, id).await);
    assert_eq!(via.execute(&update, &[&"changed", &id]).await.unwrap(), 1);
    let note: String = check
        .query_one(&pair.sql("SELECT note FROM {target} WHERE id = $1"), &[&id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(note, "changed");

    set_mode(&check, &schema, &pair, "off").await;
    until_unmirrored(&via, &insert, &check, &pair).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_added_to_the_store_applies_without_restart() {
    let check = pg().direct().await;
    let pair = Pair::new(Kind::Hash);
    pair.create(Kind::Hash, &check).await;
    let mut config = config_with(&[]);
    config.store.enabled = Some(true);
    let schema = config.store.schema.clone();
    let proxy = start_ruled_proxy(config).await;
    let via = through(&proxy).await;
    let id: i64 = via
        .query_one(&pair.sql(INSERT), &[&"none"])
        .await
        .unwrap()
        .get(0);
    assert!(!mirrored(&check, &pair, id).await);
    check
        .execute(
            &format!(
                "INSERT INTO \"{schema}\".rules (table_name, target, mode, updated_by) \
                 VALUES ($1, $2, 'dual_write', 'test')"
            ),
            &[
                &format!("public.{}", pair.legacy),
                &format!("public.{}", pair.target),
            ],
        )
        .await
        .unwrap();
    until_mirrored(&via, &check, &pair).await;
    let history: i64 = check
        .query_one(
            &format!("SELECT count(*) FROM \"{schema}\".rules_history"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(history, 1, "the change is in the history");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_change_that_cannot_be_honoured_keeps_the_previous_rules() {
    let check = pg().direct().await;
    let pair = Pair::new(Kind::Hash);
    pair.create(Kind::Hash, &check).await;
    let config = config_with(&[pair.rule(Kind::Hash)]);
    let schema = config.store.schema.clone();
    let proxy = start_ruled_proxy(config).await;
    let via = through(&proxy).await;
    check
        .execute(
            &format!("UPDATE \"{schema}\".rules SET target = 'public.no_such_table'"),
            &[],
        )
        .await
        .unwrap();
    // Wait until the instance has tried the change and refused it.
    let watch = proxy.watch.clone().unwrap();
    let start = Instant::now();
    while watch.status().last_error.is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the change was never tried"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        watch.status().last_error.unwrap().contains("no_such_table"),
        "the reason names the missing target"
    );
    // Still mirrored into the real target: a broken rule never turns mirroring off.
    let id: i64 = via
        .query_one(&pair.sql(INSERT), &[&"kept"])
        .await
        .unwrap()
        .get(0);
    assert!(mirrored(&check, &pair, id).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_prepare_made_before_a_rule_is_checked_again_on_execute() {
    let (check, pair, config, schema) = ruled_off().await;
    let proxy = start_ruled_proxy(config).await;
    let probe = through(&proxy).await;
    let via = through(&proxy).await;
    via.batch_execute(&pair.sql(
        "PREPARE ins (text) AS INSERT INTO {legacy} (tenant, amount, note) VALUES ('acme', 1, $1); \
         PREPARE sel AS SELECT count(*) FROM {legacy}",
    ))
    .await
    .unwrap();
    via.batch_execute("EXECUTE ins('off')").await.unwrap();

    set_mode(&check, &schema, &pair, "dual_write").await;
    until_mirrored(&probe, &check, &pair).await;
    // Under dual_write a PREPAREd write to the legacy table cannot be mirrored: EXECUTE
    // fails closed instead of writing one table.
    let (legacy_before, _) = pair.counts(&check).await;
    let err = via
        .batch_execute("EXECUTE ins('dual')")
        .await
        .expect_err("EXECUTE of a write prepared before the rule must be refused");
    assert_eq!(
        tandem_tests::mirror::sqlstate(&err),
        "0A000",
        "{}",
        db_text(&err)
    );
    assert_eq!(pair.counts(&check).await.0, legacy_before);
    // A prepared read is fine, and the session goes on.
    let rows = via.simple_query("EXECUTE sel").await.unwrap();
    assert!(!rows.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flip_latency_across_two_instances() {
    let (check, pair, config, schema) = ruled_off().await;
    let a = start_ruled_proxy(config.clone()).await;
    let b = start_ruled_proxy(config).await;
    let (wa, wb) = (a.watch.clone().unwrap(), b.watch.clone().unwrap());
    let mut samples = Vec::new();
    for i in 0..20 {
        let mode = if i % 2 == 0 { "dual_write" } else { "off" };
        let before = (wa.version(), wb.version());
        set_mode(&check, &schema, &pair, mode).await;
        // From the UPDATE's commit to both instances running the new version.
        let start = Instant::now();
        let mut seen = [None, None];
        while seen.iter().any(Option::is_none) {
            if seen[0].is_none() && wa.version() != before.0 {
                seen[0] = Some(start.elapsed());
            }
            if seen[1].is_none() && wb.version() != before.1 {
                seen[1] = Some(start.elapsed());
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "flip {i} not applied"
            );
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        samples.extend(seen.into_iter().flatten());
    }
    samples.sort();
    eprintln!(
        "flip latency over {} instance-flips: median {:?}, p90 {:?}, max {:?}",
        samples.len(),
        samples[samples.len() / 2],
        samples[samples.len() * 9 / 10],
        samples[samples.len() - 1]
    );
    assert_eq!(
        wa.version(),
        wb.version(),
        "both instances end on the same version"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_listen_connection_is_reestablished() {
    let (check, pair, config, schema) = ruled_off().await;
    let proxy = start_ruled_proxy(config).await;
    let via = through(&proxy).await;
    let app = format!("tandem rules watch {schema}");
    // The watch connects in the background after the start: wait for it.
    let start = Instant::now();
    while !proxy.watch.as_ref().unwrap().status().listening {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the watch never listened"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let killed: i64 = check
        .query_one(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = $1) t",
            &[&app],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(killed, 1, "the watch connection was found");
    // A change made while it is down is still applied (poll or reconnect).
    set_mode(&check, &schema, &pair, "dual_write").await;
    until_mirrored(&via, &check, &pair).await;
    // And it is back: LISTENing again.
    let start = Instant::now();
    loop {
        let n: i64 = check
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                &[&app],
            )
            .await
            .unwrap()
            .get(0);
        if n == 1 && proxy.watch.as_ref().unwrap().status().listening {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "watch never reconnected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_prepared_one_way_and_run_the_other_is_checked_again_after_a_rule_change() {
    use tandem_tests::mirror::RawSession;
    use tandem_tests::raw::{first_error, message};
    let (check, pair, config, schema) = ruled_off().await;
    let proxy = start_ruled_proxy(config).await;
    let probe = through(&proxy).await;
    let mut via = RawSession::connect(proxy.addr).await;
    // A protocol-level statement (to be run by SQL EXECUTE) and a SQL PREPARE (to be run
    // through Bind), both made while the rule is off.
    let insert = pair.sql("INSERT INTO {legacy} (tenant, amount, note) VALUES ('acme', 1, 'x')");
    let mut parse = b"tins\0".to_vec();
    parse.extend_from_slice(insert.as_bytes());
    parse.extend_from_slice(&[0, 0, 0]);
    let mut out = message(b'P', &parse);
    out.extend(message(b'S', &[]));
    assert!(first_error(&via.send(&out).await).is_none());
    let frames = via.simple(&format!("PREPARE sqlins AS {insert}")).await;
    assert!(first_error(&frames).is_none(), "{frames:?}");

    set_mode(&check, &schema, &pair, "dual_write").await;
    until_mirrored(&probe, &check, &pair).await;
    let before = pair.counts(&check).await;
    let frames = via.simple("EXECUTE tins").await;
    let error = first_error(&frames).expect("EXECUTE of a stale protocol statement is refused");
    assert_eq!(error.code.as_deref(), Some("0A000"), "{error:?}");
    let mut out = message(b'B', b"\0sqlins\0\0\0\0\0\0\0");
    out.extend(message(b'E', &[0, 0, 0, 0, 0]));
    out.extend(message(b'S', &[]));
    let frames = via.send(&out).await;
    let error = first_error(&frames).expect("Bind of a stale SQL PREPARE is refused");
    assert_eq!(error.code.as_deref(), Some("0A000"), "{error:?}");
    let mut parse = b"\0EXECUTE tins\0\0\0".to_vec();
    let mut out = message(b'P', &parse);
    parse.clear();
    out.extend(message(b'B', b"\0\0\0\0\0\0\0\0"));
    out.extend(message(b'E', &[0, 0, 0, 0, 0]));
    out.extend(message(b'S', &[]));
    let frames = via.send(&out).await;
    let error = first_error(&frames).expect("a Parse of EXECUTE of a stale statement is refused");
    assert_eq!(error.code.as_deref(), Some("0A000"), "{error:?}");
    assert_eq!(pair.counts(&check).await, before, "nothing ran unmirrored");
}
