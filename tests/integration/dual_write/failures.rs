//! When a write cannot be mirrored or does not commit: a missing target partition under
//! the `fail` and `record` policies, rollback and commit, and statements Tandem refuses.

use std::time::Duration;

use tandem_tests::mirror::{db_text, diff, rows_text, sqlstate, Kind, RuleToml};
use tandem_tests::{pg, through};

use super::{assert_refusal, ruled_pair, seeded_pair};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_target_partition_fails_the_statement_and_leaves_legacy_unchanged() {
    let (pair, check, proxy) = ruled_pair(Kind::ListNoDefault, |r| r).await;
    let via = through(&proxy).await;
    via.batch_execute(
        &pair.sql("INSERT INTO {legacy} (tenant, amount) VALUES ('acme', 1), ('globex', 2)"),
    )
    .await
    .unwrap();
    let before = pair.legacy_rows(&check).await;
    assert_eq!(before.len(), 2);
    for sql in [
        "INSERT INTO {legacy} (tenant, amount) VALUES ('nowhere', 1)",
        "INSERT INTO {legacy} (tenant, amount) VALUES ('acme', 3), ('nowhere', 4)",
        "INSERT INTO {legacy} (tenant, amount) VALUES ('nowhere', 1) RETURNING id",
    ] {
        let e = via.execute(&pair.sql(sql), &[]).await.unwrap_err();
        assert_eq!(sqlstate(&e), "23514", "{sql}: {}", db_text(&e));
        let e = via.simple_query(&pair.sql(sql)).await.unwrap_err();
        assert_eq!(sqlstate(&e), "23514", "{sql}: {}", db_text(&e));
    }
    let stmt = via
        .prepare(&pair.sql("INSERT INTO {legacy} (tenant, amount) VALUES ($1, 5)"))
        .await
        .unwrap();
    let e = via.execute(&stmt, &[&"nowhere"]).await.unwrap_err();
    assert_eq!(sqlstate(&e), "23514", "{}", db_text(&e));
    assert_eq!(via.execute(&stmt, &[&"acme"]).await.unwrap(), 1);
    let after = pair.legacy_rows(&check).await;
    assert_eq!(after.len(), 3, "only the acme row was added: {after:?}");
    assert_eq!(after[..2], before[..]);
    let drift = pair.drift(Kind::ListNoDefault, &check).await;
    assert!(drift.is_empty(), "{}", drift.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_target_partition_under_record_policy_writes_legacy_and_records_drift() {
    let (pair, check, proxy) = ruled_pair(Kind::ListNoDefault, RuleToml::record).await;
    let via = through(&proxy).await;
    let n = via
        .execute(
            &pair.sql("INSERT INTO {legacy} (tenant, amount, note) VALUES ('nowhere', 1, 'lost')"),
            &[],
        )
        .await
        .unwrap_or_else(|e| {
            panic!(
                "record policy lets the legacy write through: {}",
                db_text(&e)
            )
        });
    assert_eq!(n, 1);
    let n = via
        .execute(
            &pair.sql("INSERT INTO {legacy} (tenant, amount) VALUES ('acme', 2)"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(pair.counts(&check).await, (2, 1));
    let only_legacy = diff(&check, &pair.legacy, &pair.target, "id, tenant, note").await;
    assert_eq!(only_legacy.len(), 1, "{only_legacy:?}");
    assert!(only_legacy[0].contains("nowhere"), "{only_legacy:?}");
    let qualified = format!("public.{}", pair.legacy);
    let mut recorded = Vec::new();
    for _ in 0..50 {
        recorded = check
            .query(
                "SELECT sqlstate FROM tandem.drift WHERE rule_table IN ($1, $2)",
                &[&qualified, &pair.legacy],
            )
            .await
            .unwrap_or_else(|e| panic!("read tandem.drift: {}", db_text(&e)))
            .iter()
            .map(|r| r.get::<_, Option<String>>(0))
            .collect::<Vec<_>>();
        if !recorded.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(recorded, [Some("23514".to_string())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_undoes_the_write_in_both_tables() {
    let (pair, check, proxy) = ruled_pair(Kind::List, |r| r).await;
    let via = through(&proxy).await;
    via.batch_execute(&pair.sql("INSERT INTO {legacy} (tenant) VALUES ('acme')"))
        .await
        .unwrap();
    let (legacy, target) = (
        pair.legacy_rows(&check).await,
        pair.target_rows(&check).await,
    );
    via.batch_execute(&pair.sql(
        "BEGIN; INSERT INTO {legacy} (tenant) VALUES ('globex'), ('initech'); \
         UPDATE {legacy} SET note = 'changed'; DELETE FROM {legacy} WHERE tenant = 'acme'",
    ))
    .await
    .unwrap();
    // Inside the transaction, the session sees the mirrored rows: same transaction.
    let seen = rows_text(
        &via,
        &pair.sql("SELECT count(*) FROM {target} WHERE note = 'changed'"),
    )
    .await;
    assert_eq!(seen, ["2"]);
    via.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(pair.legacy_rows(&check).await, legacy);
    assert_eq!(pair.target_rows(&check).await, target);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_lands_the_write_in_both_tables_at_once() {
    let (pair, check, proxy) = ruled_pair(Kind::Hash, |r| r).await;
    let via = through(&proxy).await;
    via.batch_execute(
        &pair.sql("BEGIN; INSERT INTO {legacy} (tenant, amount) VALUES ('acme', 1), ('globex', 2)"),
    )
    .await
    .unwrap();
    assert_eq!(
        pair.counts(&check).await,
        (0, 0),
        "nothing visible before COMMIT"
    );
    via.batch_execute("COMMIT").await.unwrap();
    assert_eq!(pair.counts(&check).await, (2, 2));
    let drift = pair.drift(Kind::Hash, &check).await;
    assert!(drift.is_empty(), "{}", drift.join("\n"));
}
/// With the guard in place (policy `mirror`, the default), every write Tandem refuses
/// without it runs as the client sent it, with Postgres's own answer, and the guard mirrors
/// what it changed: the target equals legacy after each, through both protocols, and for a
/// few more forms Tandem cannot rewrite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guard_takes_what_tandem_cannot_rewrite() {
    let (pair, check, _proxy, via) = super::seeded_pair_with("mirror").await;
    let more = [
        "UPDATE {legacy} l SET note = 'joined' FROM {src} s WHERE s.tenant = l.tenant RETURNING *",
        "INSERT INTO {legacy} (id, tenant) SELECT id, tenant FROM {legacy} WHERE tenant = 'acme' \
         ON CONFLICT (id) DO UPDATE SET tenant = 'globex'",
        "PREPARE w AS UPDATE {legacy} SET note = 'prepared' WHERE tenant = 'globex'; EXECUTE w; DEALLOCATE w",
        "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) DELETE FROM {legacy} WHERE tenant = 'globex'",
        "INSERT INTO {legacy} (tenant, note) VALUES ('acme', 'again'), ('umbrella', 'again')",
    ];
    for (i, sql) in refused().await.into_iter().chain(more).enumerate() {
        let sql = pair.sql(sql);
        let before = pair.legacy_rows(&check).await;
        let result = if i % 2 == 0 {
            via.simple_query(&sql).await.map(|_| ())
        } else if sql.contains("; ") {
            via.batch_execute(&sql).await
        } else {
            via.query(&sql, &[]).await.map(|_| ())
        };
        result.unwrap_or_else(|e| panic!("{sql}: {}", db_text(&e)));
        assert_ne!(
            pair.legacy_rows(&check).await,
            before,
            "{sql}: wrote nothing"
        );
        let drift = pair.drift(Kind::List, &check).await;
        assert!(drift.is_empty(), "{sql}: {}", drift.join("\n"));
    }
    // A cursor's positioned write, too.
    via.batch_execute(&pair.sql(
        "BEGIN; DECLARE c CURSOR FOR SELECT * FROM {legacy} WHERE tenant = 'acme' FOR UPDATE; \
         FETCH c; UPDATE {legacy} SET note = 'positioned' WHERE CURRENT OF c; COMMIT",
    ))
    .await
    .unwrap_or_else(|e| panic!("WHERE CURRENT OF: {}", db_text(&e)));
    assert_eq!(
        rows_text(
            &check,
            &pair.sql("SELECT count(*) FROM {target} WHERE note = 'positioned'")
        )
        .await,
        ["1"]
    );
    assert!(pair.drift(Kind::List, &check).await.is_empty());
}

/// Statements Tandem must refuse on a ruled table: 0A000, with a message naming the table.
const REFUSED: &[&str] = &[
    "MERGE INTO {legacy} l USING {src} s ON l.tenant = s.tenant \
     WHEN MATCHED THEN UPDATE SET note = s.note \
     WHEN NOT MATCHED THEN INSERT (tenant, amount) VALUES (s.tenant, s.amount)",
    // Key changes are mirrored, except together with FROM (the locked old rows could not
    // be matched to the joined update with certainty).
    "UPDATE {legacy} l SET id = l.id + 100 FROM {src} s WHERE s.tenant = l.tenant",
    "UPDATE {legacy} l SET tenant = 'globex' FROM {src} s WHERE l.tenant = 'acme' AND s.tenant = l.tenant",
    "WITH x AS (DELETE FROM {legacy} RETURNING *) SELECT count(*) FROM x",
    "WITH x AS (INSERT INTO {legacy} (tenant) VALUES ('acme') RETURNING id) SELECT id FROM x",
];
/// The statements of [`REFUSED`] this server refuses: MERGE only on PostgreSQL 15 and 16
/// (before, it is the server's own syntax error; from 17 on it is mirrored, see
/// `dual_write::merge`).
async fn refused() -> Vec<&'static str> {
    let merge = tandem_tests::server_refuses_merge().await;
    REFUSED
        .iter()
        .copied()
        .filter(|sql| merge || !sql.starts_with("MERGE"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmirrorable_writes_are_refused_and_write_nothing() {
    let (pair, check, _proxy, via) = seeded_pair().await;
    let (legacy, target) = (
        pair.legacy_rows(&check).await,
        pair.target_rows(&check).await,
    );
    for sql in refused().await {
        let sql = pair.sql(sql);
        let e = via.simple_query(&sql).await.unwrap_err();
        assert_refusal(&e, &pair, &sql);
        assert_eq!(pair.legacy_rows(&check).await, legacy, "{sql}");
        assert_eq!(pair.target_rows(&check).await, target, "{sql}");
    }
    // A refusal anywhere in a multi-statement string runs none of it.
    let sql = pair.sql(&format!(
        "INSERT INTO {{legacy}} (tenant) VALUES ('acme'); {}",
        REFUSED[1]
    ));
    let e = via.simple_query(&sql).await.unwrap_err();
    assert_refusal(&e, &pair, &sql);
    assert_eq!(pair.legacy_rows(&check).await, legacy);
    // The same statements directly are fine: Postgres itself does not refuse them.
    if tandem_tests::server_has_merge().await {
        let direct = pg().direct().await;
        direct
            .batch_execute(&pair.sql(&format!("BEGIN; {}; ROLLBACK", REFUSED[0])))
            .await
            .unwrap_or_else(|e| panic!("MERGE directly: {}", db_text(&e)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmirrorable_writes_are_refused_through_the_extended_protocol() {
    let (pair, check, _proxy, via) = seeded_pair().await;
    let (legacy, target) = (
        pair.legacy_rows(&check).await,
        pair.target_rows(&check).await,
    );
    for sql in refused().await {
        let sql = pair.sql(sql);
        // Tandem may refuse at Parse or at Execute; either way with 0A000.
        let e = match via.prepare(&sql).await {
            Err(e) => e,
            Ok(stmt) => via
                .query(&stmt, &[])
                .await
                .map(|rows| panic!("{sql}: ran and returned {} rows", rows.len()))
                .unwrap_err(),
        };
        assert_refusal(&e, &pair, &sql);
        let e = via.query(&sql, &[]).await.unwrap_err();
        assert_refusal(&e, &pair, &sql);
        assert_eq!(pair.legacy_rows(&check).await, legacy, "{sql}");
        assert_eq!(pair.target_rows(&check).await, target, "{sql}");
    }
    // A parameterised key change, prepared once and executed.
    let sql = pair
        .sql("UPDATE {legacy} l SET id = $1 FROM {src} s WHERE l.id = $2 AND s.tenant = l.tenant");
    let e = match via.prepare(&sql).await {
        Err(e) => e,
        Ok(stmt) => via.execute(&stmt, &[&500i64, &1i64]).await.unwrap_err(),
    };
    assert_refusal(&e, &pair, &sql);
    assert_eq!(pair.legacy_rows(&check).await, legacy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusal_aborts_the_transaction_like_a_server_error() {
    let (pair, check, _proxy, via) = seeded_pair().await;
    let (legacy, target) = (
        pair.legacy_rows(&check).await,
        pair.target_rows(&check).await,
    );
    via.batch_execute(&pair.sql("BEGIN; INSERT INTO {legacy} (tenant) VALUES ('acme')"))
        .await
        .unwrap();
    let first = pair.sql(refused().await[0]);
    assert_refusal(&via.simple_query(&first).await.unwrap_err(), &pair, &first);
    let e = via.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(sqlstate(&e), "25P02", "{}", db_text(&e));
    let e = via.query("SELECT 1", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&e), "25P02", "{}", db_text(&e));
    via.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(pair.legacy_rows(&check).await, legacy);
    assert_eq!(pair.target_rows(&check).await, target);
    // The session is healthy and still mirrors.
    let n = via
        .execute(
            &pair.sql("INSERT INTO {legacy} (tenant) VALUES ('globex')"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(pair.counts(&check).await, (3, 3));
    // Same through the extended protocol inside a transaction.
    via.batch_execute("BEGIN").await.unwrap();
    let key_change = pair.sql(REFUSED[1]);
    assert_refusal(
        &via.query(&key_change, &[]).await.unwrap_err(),
        &pair,
        &key_change,
    );
    let e = via.query("SELECT 1", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&e), "25P02", "{}", db_text(&e));
    via.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(pair.counts(&check).await, (3, 3));
}
