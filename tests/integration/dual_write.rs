//! Dual-write through the proxy: every write to a ruled legacy table also lands in its
//! target, and the client sees exactly what Postgres would have answered without Tandem.
//!
//! Most tests run on *twins* (see `tandem_tests::mirror`): the same statements go through the
//! proxy to a ruled pair and straight to an identical unruled pair; the normalized wire
//! transcripts must match, and after every statement the ruled target must hold exactly the
//! ruled legacy rows. Legacy tables have a `bigserial` id, `DEFAULT random()`,
//! `DEFAULT gen_random_uuid()` and `DEFAULT now()` columns, so a mirror that recomputed
//! generated values instead of copying them would show up as drift.

use std::process::Command;
use std::time::Duration;

use futures_util::SinkExt;
use tandem_tests::mirror::{
    config_with, db_text, diff, rows_text, simple_counts, sqlstate, start_ruled_proxy, wire_rows,
    Kind, Pair, RawSession, RuleToml, Twins,
};
use tandem_tests::{pg, pg_program, through, unique};
use tokio_postgres::types::Type;
use tokio_postgres::Client;

/// Every write form Tandem mirrors, in an order where each one touches rows (the comments
/// say which). Run in sequence on one session.
const WRITE_FORMS: &[&str] = &[
    // id 1
    "INSERT INTO {legacy} (tenant, amount, note) VALUES ('acme', 10.50, 'one')",
    // ids 2-4; initech lands in the LIST target's DEFAULT partition
    "INSERT INTO {legacy} (tenant, amount, note) VALUES ('acme', 1, 'a'), ('globex', 2, 'b'), \
     ('initech', 3, 'c')",
    // ids 5-7
    "INSERT INTO {legacy} (tenant, amount, note) SELECT tenant, amount, note FROM {src} \
     ORDER BY tenant",
    // id 8, every column from its default
    "INSERT INTO {legacy} DEFAULT VALUES",
    // 1 conflicts, 1000 is new: INSERT 0 1
    "INSERT INTO {legacy} (id, tenant, amount) VALUES (1, 'acme', 99), (1000, 'globex', 5) \
     ON CONFLICT DO NOTHING",
    // 2 is updated, 1001 is new: INSERT 0 2
    "INSERT INTO {legacy} AS l (id, tenant, amount, note) VALUES (2, 'acme', 7, 'upserted'), \
     (1001, 'hooli', 8, 'new') ON CONFLICT (id) DO UPDATE SET amount = l.amount + \
     EXCLUDED.amount, note = EXCLUDED.note",
    // id 9
    "INSERT INTO {legacy} (tenant, amount, note) VALUES ('globex', 42, 'ret') RETURNING *",
    // ids 10-11
    "INSERT INTO {legacy} AS o (tenant, amount) VALUES ('acme', 3), ('umbrella', 4) \
     RETURNING o.id, amount * 2 AS doubled, upper(o.tenant) AS shout, \
     o.created_at IS NOT NULL AS stamped",
    // upsert of 3 with RETURNING
    "INSERT INTO {legacy} (id, tenant, amount, note) VALUES (3, 'globex', 1, 'x') \
     ON CONFLICT (id) DO UPDATE SET note = EXCLUDED.note || '!' RETURNING id, note, score",
    // duplicate key: the same error, nothing written anywhere
    "INSERT INTO {legacy} (id, tenant) VALUES (1, 'acme')",
    // ids 1, 2, 5, 8, 10
    "UPDATE {legacy} SET amount = amount + 1, note = coalesce(note, '') || '+' \
     WHERE tenant = 'acme'",
    // globex and umbrella rows
    "UPDATE {legacy} AS l SET note = s.note, amount = s.amount FROM {src} s \
     WHERE s.tenant = l.tenant AND l.tenant <> 'acme'",
    "UPDATE {legacy} SET note = 'returned' WHERE id IN (2, 3) RETURNING id, note, tenant",
    "UPDATE {legacy} AS l SET note = 'via ' || s.tenant FROM {src} s \
     WHERE s.tenant = l.tenant RETURNING l.*",
    // UPDATE 0
    "UPDATE {legacy} SET note = 'none' WHERE false",
    // Key moves: 5 changes tenant (a partition move in the LIST target, whose key is
    // (id, tenant)); 6 becomes 5006. The stale target rows must go.
    "UPDATE {legacy} SET tenant = 'globex' WHERE id = 5 RETURNING id, tenant",
    "UPDATE {legacy} SET id = id + 5000 WHERE id = 6",
    // id 1001
    "DELETE FROM {legacy} WHERE tenant = 'hooli'",
    // ids 7, 11
    "DELETE FROM {legacy} l USING {src} s WHERE s.tenant = l.tenant AND s.tenant = 'umbrella'",
    "DELETE FROM {legacy} WHERE id = 1 RETURNING *",
    // id 4
    "DELETE FROM {legacy} AS l WHERE l.tenant = 'initech' RETURNING l.id, l.amount * 100 AS cents",
    "TRUNCATE {legacy}",
    "INSERT INTO {legacy} (tenant, amount) VALUES ('globex', 5)",
];

/// Rows left in legacy after every form but the last two (TRUNCATE and one INSERT):
/// ids 2, 3, 5, 8, 9, 10, 1000, 5006.
const ROWS_BEFORE_TRUNCATE: i64 = 8;

#[derive(Clone, Copy)]
enum Protocol {
    Simple,
    Extended,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parity_check_reports_rows_that_differ() {
    // The checker every test leans on must see drift, or every test here passes vacuously.
    let check = pg().direct().await;
    let pair = Pair::new(Kind::Shadow);
    pair.create(Kind::Shadow, &check).await;
    check
        .batch_execute(
            &pair.sql("INSERT INTO {legacy} (tenant, note) VALUES ('acme', 'only legacy')"),
        )
        .await
        .unwrap();
    let drift = pair.drift(Kind::Shadow, &check).await;
    assert_eq!(drift.len(), 1, "{drift:?}");
    assert!(drift[0].contains("only legacy"), "{drift:?}");
    // Copied with a recomputed random() default: both directions differ.
    check
        .batch_execute(&pair.sql(
            "INSERT INTO {target} (id, tenant, amount, note, score, token, created_at, _sync_status) \
             SELECT id, tenant, amount, note, random(), token, created_at, 'synced' FROM {legacy}",
        ))
        .await
        .unwrap();
    assert_eq!(pair.drift(Kind::Shadow, &check).await.len(), 2);
    // Exact copy, but the rule's set column left at its default.
    check
        .batch_execute(&pair.sql("TRUNCATE {target}; INSERT INTO {target} SELECT * FROM {legacy}"))
        .await
        .unwrap();
    let drift = pair.drift(Kind::Shadow, &check).await;
    assert_eq!(drift.len(), 1, "{drift:?}");
    assert!(
        drift[0].contains("target-only columns not filled"),
        "{drift:?}"
    );
    check
        .batch_execute(&pair.sql("UPDATE {target} SET _sync_status = 'synced'"))
        .await
        .unwrap();
    assert_eq!(pair.drift(Kind::Shadow, &check).await, Vec::<String>::new());
}

/// Runs [`WRITE_FORMS`] through the proxy and directly; every transcript must match and the
/// ruled pair must stay in parity after every statement.
async fn every_write_form(kind: Kind, protocol: Protocol) {
    let twins = Twins::new(kind).await;
    let (mut via, mut direct) = twins.raw_sessions().await;
    for (i, form) in WRITE_FORMS.iter().enumerate() {
        let transcript = match protocol {
            Protocol::Simple => twins.same_simple(&mut via, &mut direct, form).await,
            Protocol::Extended => twins.same_extended(&mut via, &mut direct, form).await,
        };
        if form.starts_with("TRUNCATE") {
            continue;
        }
        // Guard against a vacuous run: each form did what the comments say.
        if i == 9 {
            assert!(
                transcript.iter().any(|l| l.contains("C=23505")),
                "{transcript:?}"
            );
        } else {
            assert!(
                transcript.iter().any(|l| l.starts_with("CommandComplete ")),
                "{form}: {transcript:?}"
            );
        }
        if i == WRITE_FORMS.len() - 3 {
            assert_eq!(
                twins.ruled.counts(&twins.check).await,
                (ROWS_BEFORE_TRUNCATE, ROWS_BEFORE_TRUNCATE)
            );
        }
    }
    assert_eq!(twins.ruled.counts(&twins.check).await, (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_partitioned_target_every_write_form_simple_protocol() {
    every_write_form(Kind::List, Protocol::Simple).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_partitioned_target_every_write_form_extended_protocol() {
    every_write_form(Kind::List, Protocol::Extended).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_partitioned_target_every_write_form_simple_protocol() {
    every_write_form(Kind::Hash, Protocol::Simple).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_partitioned_target_every_write_form_extended_protocol() {
    every_write_form(Kind::Hash, Protocol::Extended).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_target_with_set_columns_every_write_form_simple_protocol() {
    every_write_form(Kind::Shadow, Protocol::Simple).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_target_with_set_columns_every_write_form_extended_protocol() {
    every_write_form(Kind::Shadow, Protocol::Extended).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn returning_columns_carry_the_legacy_table_oid_and_attnum() {
    let twins = Twins::new(Kind::List).await;
    let (via, _direct) = twins.clients().await;
    let stmt = via
        .prepare(&twins.ruled.sql(
            "INSERT INTO {legacy} AS o (tenant, amount) VALUES ($1, $2::int) \
             RETURNING o.note, o.id, amount * 2 AS doubled",
        ))
        .await
        .unwrap_or_else(|e| panic!("prepare: {}", db_text(&e)));
    let attnum: Vec<i16> = twins
        .check
        .query(
            "SELECT attnum FROM pg_attribute WHERE attrelid = $1::text::regclass \
             AND attname = ANY(ARRAY['note', 'id']) ORDER BY attname DESC",
            &[&twins.ruled.legacy],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let cols = stmt.columns();
    assert_eq!(cols.len(), 3);
    for (col, attnum) in cols[..2].iter().zip(&attnum) {
        assert_eq!(twins.oid_name(col.table_oid().unwrap_or(0)), "{legacy}");
        assert_eq!(col.column_id(), Some(*attnum), "{}", col.name());
    }
    assert_eq!(cols[2].table_oid(), None, "an expression has no table");
    assert_eq!(cols[2].column_id(), None);
    let n = via.execute(&stmt, &[&"acme", &1i32]).await.unwrap();
    assert_eq!(n, 1);
    twins.assert_mirrored("INSERT ... RETURNING").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_statement_simple_query_strings_match_direct() {
    let twins = Twins::new(Kind::List).await;
    let (mut via, mut direct) = twins.raw_sessions().await;
    let t = twins
        .same_simple(
            &mut via,
            &mut direct,
            "BEGIN; INSERT INTO {legacy} (tenant, amount) VALUES ('acme', 1), ('globex', 2), \
             ('initech', 3); UPDATE {legacy} SET note = 'in tx' WHERE tenant = 'acme'; \
             DELETE FROM {legacy} WHERE tenant = 'globex' RETURNING id; \
             SELECT count(*) FROM {legacy}; COMMIT",
        )
        .await;
    let tags: Vec<&String> = t
        .iter()
        .filter(|l| l.starts_with("CommandComplete"))
        .collect();
    assert_eq!(
        tags,
        [
            "CommandComplete BEGIN",
            "CommandComplete INSERT 0 3",
            "CommandComplete UPDATE 1",
            "CommandComplete DELETE 1",
            "CommandComplete SELECT 1",
            "CommandComplete COMMIT"
        ]
    );
    // An implicit transaction: an error in the middle undoes the mirrored writes before it.
    twins
        .same_simple(
            &mut via,
            &mut direct,
            "INSERT INTO {legacy} (tenant) VALUES ('acme'); UPDATE {legacy} SET amount = 9; \
             INSERT INTO {legacy} (id, tenant) VALUES (1, 'acme'); \
             INSERT INTO {legacy} (tenant) VALUES ('globex')",
        )
        .await;
    assert_eq!(twins.ruled.counts(&twins.check).await, (2, 2));
    // The same through tokio-postgres' simple_query: one count per statement.
    let (client, _) = twins.clients().await;
    let msgs = client
        .simple_query(&twins.ruled.sql(
            "BEGIN; INSERT INTO {legacy} (tenant) VALUES ('acme'), ('globex'); \
             UPDATE {legacy} SET note = 'x'; DELETE FROM {legacy} WHERE tenant = 'globex'; COMMIT",
        ))
        .await
        .unwrap_or_else(|e| panic!("{}", db_text(&e)));
    assert_eq!(simple_counts(&msgs), [0, 2, 4, 1, 0]);
    twins.assert_mirrored("tokio-postgres simple_query").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_insert_without_returning_describes_no_columns() {
    let twins = Twins::new(Kind::List).await;
    let (via, direct) = twins.clients().await;
    let sql = "INSERT INTO {legacy} (tenant, amount, note) VALUES ($1, $2::int, $3)";
    let sv = via.prepare(&twins.ruled.sql(sql)).await.unwrap();
    let sd = direct.prepare(&twins.baseline.sql(sql)).await.unwrap();
    assert!(
        sv.columns().is_empty(),
        "NoData expected, got {:?}",
        twins.columns(&sv)
    );
    assert_eq!(sv.params(), &[Type::TEXT, Type::INT4, Type::TEXT]);
    assert_eq!(sv.params(), sd.params());
    for i in 0..5i32 {
        let tenant = ["acme", "globex", "initech"][i as usize % 3];
        let note = (i % 2 == 0).then(|| format!("note {i}"));
        let got = via.execute(&sv, &[&tenant, &i, &note]).await.unwrap();
        let want = direct.execute(&sd, &[&tenant, &i, &note]).await.unwrap();
        assert_eq!((got, want), (1, 1));
        // query() on a write without RETURNING: no rows, as direct.
        let rows = via.query(&sv, &[&tenant, &(i + 100), &note]).await.unwrap();
        direct
            .query(&sd, &[&tenant, &(i + 100), &note])
            .await
            .unwrap();
        assert!(rows.is_empty());
    }
    twins.assert_parity("prepared INSERT").await;
    assert_eq!(twins.ruled.counts(&twins.check).await, (10, 10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_statements_reused_with_parameters_match_direct() {
    let twins = Twins::new(Kind::Shadow).await;
    let (via, direct) = twins.clients().await;
    let prepare = |sql: &'static str| {
        let (via, direct, twins) = (&via, &direct, &twins);
        async move {
            let sv = via.prepare(&twins.ruled.sql(sql)).await;
            let sv = sv.unwrap_or_else(|e| panic!("{sql}: {}", db_text(&e)));
            let sd = direct.prepare(&twins.baseline.sql(sql)).await.unwrap();
            assert_eq!(twins.columns(&sv), twins.columns(&sd), "{sql}");
            assert_eq!(sv.params(), sd.params(), "{sql}");
            (sv, sd)
        }
    };
    let (iv, id) = prepare(
        "INSERT INTO {legacy} AS o (tenant, amount, note) VALUES ($1, $2::int, $3) \
         RETURNING o.id, o.tenant, amount * 2 AS doubled, note, created_at, score",
    )
    .await;
    let (uv, ud) = prepare(
        "UPDATE {legacy} SET amount = amount + $1::int WHERE tenant = $2 RETURNING id, amount",
    )
    .await;
    let (dv, dd) = prepare("DELETE FROM {legacy} WHERE id = ANY($1::bigint[])").await;
    assert!(twins.columns(&dv).is_empty());
    for i in 0..6i32 {
        let tenant = ["acme", "globex", "umbrella"][i as usize % 3];
        let args: [&(dyn tokio_postgres::types::ToSql + Sync); 3] = [&tenant, &i, &"n"];
        let got = via.query(&iv, &args).await.unwrap();
        let want = direct.query(&id, &args).await.unwrap();
        assert_eq!(wire_rows(&got), wire_rows(&want));
    }
    for tenant in ["acme", "globex", "nobody"] {
        let got = via.query(&uv, &[&10i32, &tenant]).await.unwrap();
        let want = direct.query(&ud, &[&10i32, &tenant]).await.unwrap();
        assert_eq!(wire_rows(&got), wire_rows(&want), "UPDATE {tenant}");
    }
    twins.assert_parity("named INSERT and UPDATE").await;
    for ids in [vec![1i64, 2], vec![2], vec![6, 5, 99]] {
        let got = via.execute(&dv, &[&ids]).await.unwrap();
        let want = direct.execute(&dd, &[&ids]).await.unwrap();
        assert_eq!(got, want, "DELETE {ids:?}");
    }
    twins.assert_parity("named DELETE").await;
    assert_eq!(twins.ruled.counts(&twins.check).await, (2, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unnamed_statements_with_parameters_match_direct() {
    let twins = Twins::new(Kind::Hash).await;
    let (via, direct) = twins.clients().await;
    for i in 0..4i32 {
        let sql = "INSERT INTO {legacy} (tenant, amount) VALUES ($1, $2::int) RETURNING *";
        let got = via
            .query(&twins.ruled.sql(sql), &[&"acme", &i])
            .await
            .unwrap_or_else(|e| panic!("{}", db_text(&e)));
        let want = direct
            .query(&twins.baseline.sql(sql), &[&"acme", &i])
            .await
            .unwrap();
        assert_eq!(wire_rows(&got), wire_rows(&want));
        assert_eq!(got.len(), 1);
    }
    let sql = "UPDATE {legacy} SET note = $1 WHERE amount >= $2::int";
    let got = via
        .execute(&twins.ruled.sql(sql), &[&"big", &2i32])
        .await
        .unwrap();
    let want = direct
        .execute(&twins.baseline.sql(sql), &[&"big", &2i32])
        .await
        .unwrap();
    assert_eq!((got, want), (2, 2));
    let sql = "DELETE FROM {legacy} WHERE note IS DISTINCT FROM $1";
    let got = via.execute(&twins.ruled.sql(sql), &[&"big"]).await.unwrap();
    let want = direct
        .execute(&twins.baseline.sql(sql), &[&"big"])
        .await
        .unwrap();
    assert_eq!((got, want), (2, 2));
    twins.assert_parity("unnamed statements").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_writes_on_one_connection_are_all_mirrored() {
    let twins = Twins::new(Kind::List).await;
    let (via, _) = twins.clients().await;
    let insert = via
        .prepare(
            &twins
                .ruled
                .sql("INSERT INTO {legacy} (id, tenant, amount) VALUES ($1, $2, 1)"),
        )
        .await
        .unwrap();
    let returning = via
        .prepare(
            &twins
                .ruled
                .sql("INSERT INTO {legacy} (id, tenant, amount) VALUES ($1, $2, 2) RETURNING id"),
        )
        .await
        .unwrap();
    let bump = via
        .prepare(
            &twins
                .ruled
                .sql("UPDATE {legacy} SET amount = amount + 10 WHERE id = $1"),
        )
        .await
        .unwrap();
    // Each future sends its messages before any answer is read: one pipeline.
    let futures: Vec<_> = (1..=60i64)
        .map(|id| {
            let (via, insert, returning, bump) = (&via, &insert, &returning, &bump);
            async move {
                let tenant = ["acme", "globex", "initech"][id as usize % 3];
                if id % 2 == 0 {
                    let n = via.execute(insert, &[&id, &tenant]).await?;
                    let m = via.execute(bump, &[&id]).await?;
                    Ok::<_, tokio_postgres::Error>((n, m))
                } else {
                    let row = via.query_one(returning, &[&id, &tenant]).await?;
                    assert_eq!(row.get::<_, i64>(0), id);
                    Ok((1, 0))
                }
            }
        })
        .collect();
    for (i, r) in futures_util::future::join_all(futures)
        .await
        .into_iter()
        .enumerate()
    {
        let id = i as i64 + 1;
        let want = if id % 2 == 0 { (1, 1) } else { (1, 0) };
        assert_eq!(r.unwrap_or_else(|e| panic!("{}", db_text(&e))), want);
    }
    let drift = twins.ruled.drift(Kind::List, &twins.check).await;
    assert!(drift.is_empty(), "{}", drift.join("\n"));
    assert_eq!(twins.ruled.counts(&twins.check).await, (60, 60));
    let bumped = rows_text(
        &twins.check,
        &twins
            .ruled
            .sql("SELECT count(*) FROM {target} WHERE amount = 11"),
    )
    .await;
    assert_eq!(bumped, ["30"]);
}

/// A pair created directly and a proxy with its rule, for tests that need no twin.
async fn ruled_pair(
    kind: Kind,
    adjust: impl FnOnce(RuleToml) -> RuleToml,
) -> (Pair, Client, tandem::RunningProxy) {
    let check = pg().direct().await;
    let pair = Pair::new(kind);
    pair.create(kind, &check).await;
    let proxy = start_ruled_proxy(config_with(&[adjust(pair.rule(kind))])).await;
    (pair, check, proxy)
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_with_rules_start_together() {
    // Several proxies (several Tandem instances, or tests) installing the support objects on
    // one server at once must all start; Postgres' `IF NOT EXISTS` alone does not make that
    // safe (concurrent CREATE SCHEMA IF NOT EXISTS fails with 23505).
    let check = pg().direct().await;
    let mut configs = Vec::new();
    for _ in 0..6 {
        let pair = Pair::new(Kind::Hash);
        pair.create(Kind::Hash, &check).await;
        configs.push(config_with(&[pair.rule(Kind::Hash)]));
    }
    let starts = configs.into_iter().map(tandem::RunningProxy::start);
    for (i, started) in futures_util::future::join_all(starts)
        .await
        .into_iter()
        .enumerate()
    {
        if let Err(e) = started {
            panic!("proxy {i} did not start: {e:?}");
        }
    }
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

/// A pair with some mirrored rows, for refusal tests.
async fn seeded_pair() -> (Pair, Client, tandem::RunningProxy, Client) {
    let (pair, check, proxy) = ruled_pair(Kind::List, |r| r).await;
    let via = through(&proxy).await;
    via.batch_execute(&pair.sql(
        "INSERT INTO {legacy} (tenant, amount, note) VALUES ('acme', 1, 'a'), ('globex', 2, 'b')",
    ))
    .await
    .unwrap();
    assert_eq!(pair.counts(&check).await, (2, 2));
    (pair, check, proxy, via)
}

fn assert_refusal(e: &tokio_postgres::Error, pair: &Pair, sql: &str) {
    assert_eq!(sqlstate(e), "0A000", "{sql}: {}", db_text(e));
    let message = e.as_db_error().map(|d| d.message()).unwrap_or_default();
    assert!(
        message.contains(&pair.legacy),
        "{sql}: message must name the table: {message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmirrorable_writes_are_refused_and_write_nothing() {
    let (pair, check, _proxy, via) = seeded_pair().await;
    let (legacy, target) = (
        pair.legacy_rows(&check).await,
        pair.target_rows(&check).await,
    );
    for sql in REFUSED {
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
    let direct = pg().direct().await;
    direct
        .batch_execute(&pair.sql(&format!("BEGIN; {}; ROLLBACK", REFUSED[0])))
        .await
        .unwrap_or_else(|e| panic!("MERGE directly: {}", db_text(&e)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmirrorable_writes_are_refused_through_the_extended_protocol() {
    let (pair, check, _proxy, via) = seeded_pair().await;
    let (legacy, target) = (
        pair.legacy_rows(&check).await,
        pair.target_rows(&check).await,
    );
    for sql in REFUSED {
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
    let merge = pair.sql(REFUSED[0]);
    assert_refusal(&via.simple_query(&merge).await.unwrap_err(), &pair, &merge);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_of_the_ruled_table_are_relayed_unchanged() {
    let (pair, _check, proxy, _via) = seeded_pair().await;
    let target = pair.target_rows(&pg().direct().await).await;
    let mut via = RawSession::connect(proxy.addr).await;
    let mut direct = RawSession::connect(tandem_tests::mirror::direct_addr()).await;
    for sql in [
        "SELECT * FROM {legacy} ORDER BY id",
        "SELECT l.id, s.note FROM {legacy} l JOIN {src} s USING (tenant) ORDER BY 1",
        "SELECT count(*) FROM {legacy} WHERE note = 'INSERT INTO {legacy}'",
        "BEGIN; SELECT id FROM {legacy} ORDER BY id FOR UPDATE; COMMIT",
        "EXPLAIN (COSTS OFF) SELECT * FROM {legacy} WHERE id = 1",
        "COPY (SELECT id, tenant FROM {legacy} ORDER BY id) TO STDOUT",
    ] {
        let sql = pair.sql(sql);
        let (got, want) = (via.simple(&sql).await, direct.simple(&sql).await);
        assert_eq!(got, want, "{sql}");
        let (got, want) = (via.extended(&sql).await, direct.extended(&sql).await);
        assert_eq!(got, want, "extended: {sql}");
    }
    assert_eq!(pair.target_rows(&pg().direct().await).await, target);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_to_other_tables_are_not_mirrored() {
    let twins = Twins::new(Kind::List).await;
    let (mut via, mut direct) = twins.raw_sessions().await;
    for sql in [
        "INSERT INTO {src} VALUES ('initech', 1, 'INSERT INTO {legacy} (tenant) VALUES (''x'')')",
        "UPDATE {src} SET note = '{legacy}' WHERE tenant = 'acme' RETURNING tenant, amount",
        "/* UPDATE {legacy} */ DELETE FROM {src} WHERE tenant = 'globex'",
        "INSERT INTO {src} SELECT tenant || '2', amount, note FROM {legacy}",
        "WITH x AS (DELETE FROM {src} WHERE tenant = 'umbrella' RETURNING *) SELECT count(*) FROM x",
    ] {
        twins.same_simple(&mut via, &mut direct, sql).await;
    }
    assert_eq!(twins.ruled.counts(&twins.check).await, (0, 0));
    let src = rows_text(&twins.check, &twins.ruled.sql("SELECT count(*) FROM {src}")).await;
    assert_eq!(src, ["2"], "the writes to the unruled table happened");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_table_name_in_another_schema_is_not_mirrored() {
    let check = pg().direct().await;
    let pair = Pair::new(Kind::List);
    pair.create(Kind::List, &check).await;
    let other = unique("other");
    check
        .batch_execute(&format!(
            "CREATE SCHEMA {other}; CREATE TABLE {other}.{} (LIKE public.{} INCLUDING ALL)",
            pair.legacy, pair.legacy
        ))
        .await
        .unwrap();
    let proxy = start_ruled_proxy(config_with(&[pair.rule(Kind::List)])).await;
    let via = through(&proxy).await;
    let n = via
        .execute(
            &pair.sql(&format!(
                "INSERT INTO {other}.{{legacy}} (tenant) VALUES ('acme')"
            )),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    via.batch_execute(&pair.sql(&format!(
        "UPDATE {other}.{{legacy}} SET note = 'x'; DELETE FROM {other}.{{legacy}} WHERE false"
    )))
    .await
    .unwrap();
    // A session whose search_path puts the other schema first: bare names mean that table.
    let url = format!(
        "{}?options=-c%20search_path%3D{other}",
        tandem_tests::proxy_url(&proxy, &pg().superuser)
    );
    let shadowed = tandem_tests::connect_url(&url).await;
    let n = shadowed
        .execute(
            &pair.sql("INSERT INTO {legacy} (tenant) VALUES ('globex')"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    let in_other = rows_text(
        &check,
        &pair.sql(&format!("SELECT count(*) FROM {other}.{{legacy}}")),
    )
    .await;
    assert_eq!(in_other, ["2"]);
    assert_eq!(
        pair.counts(&check).await,
        (0, 0),
        "nothing reached the ruled pair"
    );
    // Control: the ruled table itself is mirrored through the same proxy.
    via.execute(
        &pair.sql("INSERT INTO public.{legacy} (tenant) VALUES ('acme')"),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(pair.counts(&check).await, (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_in_mode_off_mirrors_nothing() {
    let (pair, check, proxy) = ruled_pair(Kind::List, |r| r.mode("off")).await;
    let via = through(&proxy).await;
    let msgs = via
        .simple_query(&pair.sql(
            "INSERT INTO {legacy} (tenant) VALUES ('acme'), ('globex'); \
             UPDATE {legacy} SET note = 'x' WHERE tenant = 'acme'; \
             DELETE FROM {legacy} WHERE tenant = 'globex'; \
             MERGE INTO {legacy} l USING {src} s ON l.tenant = s.tenant \
             WHEN NOT MATCHED THEN INSERT (tenant) VALUES (s.tenant)",
        ))
        .await
        .unwrap_or_else(|e| panic!("{}", db_text(&e)));
    assert_eq!(simple_counts(&msgs), [2, 1, 1, 2]);
    assert_eq!(pair.counts(&check).await, (3, 0));
}

/// Runs psql against `port` with `-c` commands; returns stdout, or panics with stderr.
fn psql(port: u16, commands: &[String]) -> String {
    let mut cmd = Command::new(pg_program("psql"));
    cmd.args(["-X", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
        .args([
            "-p",
            &port.to_string(),
            "-U",
            &pg().superuser,
            "-d",
            &pg().database,
        ])
        .env("PGCONNECT_TIMEOUT", "10");
    for c in commands {
        cmd.arg("-c").arg(c);
    }
    let out = cmd.output().expect("cannot run psql");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "psql {commands:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_copy_from_stdin_lands_in_both_tables() {
    let twins = Twins::new(Kind::List).await;
    let dir = std::env::temp_dir().join(unique("dwcopy"));
    std::fs::create_dir_all(&dir).unwrap();
    let text = dir.join("rows.tsv");
    std::fs::write(
        &text,
        "acme\t1.50\tfirst\nglobex\t2\t\\N\ninitech\t3\tthird\n",
    )
    .unwrap();
    let csv = dir.join("rows.csv");
    let csv_rows: String = (0..200)
        .map(|i| format!("{},{i},\"row, {i}\"\n", ["acme", "globex", "hooli"][i % 3]))
        .collect();
    std::fs::write(&csv, format!("tenant,amount,note\n{csv_rows}")).unwrap();
    let run = |port: u16, pair: &Pair| {
        psql(
            port,
            &[
                "SELECT setseed(0.42)".to_string(),
                pair.sql(&format!(
                    "\\copy {{legacy}} (tenant, amount, note) from '{}'",
                    text.display()
                )),
                pair.sql(&format!(
                    "\\copy {{legacy}} (tenant, amount, note) from '{}' with (format csv, header true)",
                    csv.display()
                )),
            ],
        )
    };
    let got = run(twins.proxy.addr.port(), &twins.ruled);
    let want = run(pg().port, &twins.baseline);
    assert_eq!(got, want);
    let tags: Vec<&str> = got.lines().filter(|l| l.starts_with("COPY")).collect();
    assert_eq!(tags, ["COPY 3", "COPY 200"], "{got}");
    twins.assert_parity("\\copy").await;
    assert_eq!(twins.ruled.counts(&twins.check).await, (203, 203));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_over_the_extended_protocol_is_mirrored_or_refused() {
    let (pair, check, proxy, via) = seeded_pair().await;
    let legacy = pair.legacy_rows(&check).await;
    let rows = "acme\t1\tcopied\nglobex\t2\tcopied\n";
    let sql = pair.sql("COPY {legacy} (tenant, amount, note) FROM STDIN");
    let outcome = match via.copy_in::<str, bytes::Bytes>(sql.as_str()).await {
        Err(e) => Err(e),
        Ok(sink) => {
            futures_util::pin_mut!(sink);
            match sink.send(bytes::Bytes::from(rows)).await {
                Err(e) => Err(e),
                Ok(()) => sink.as_mut().finish().await,
            }
        }
    };
    match outcome {
        Ok(n) => {
            assert_eq!(n, 2);
            assert_eq!(pair.counts(&check).await, (4, 4));
            let drift = pair.drift(Kind::List, &check).await;
            assert!(drift.is_empty(), "{}", drift.join("\n"));
        }
        Err(e) => {
            assert_refusal(&e, &pair, &sql);
            assert_eq!(pair.legacy_rows(&check).await, legacy);
            assert_eq!(pair.counts(&check).await, (2, 2));
        }
    }
    // Either way the session is usable afterwards.
    let rows = via.query("SELECT 1", &[]).await.unwrap();
    assert_eq!(rows.len(), 1);
    drop(proxy);
}

fn pgbench(port: u16, db: &str, args: &[&str]) -> String {
    let out = Command::new(pg_program("pgbench"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            &pg().superuser,
        ])
        .args(args)
        .arg(db)
        .output()
        .expect("cannot run pgbench");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "pgbench {args:?} failed:\n{stdout}\n{stderr}"
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_through_dual_write_keeps_every_target_identical() {
    let db = unique("dwbench");
    let direct = pg().direct().await;
    direct
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await
        .unwrap();
    pgbench(pg().port, &db, &["-i", "-s", "1", "-q"]);
    let url = format!(
        "postgres://{}@{}:{}/{db}",
        pg().superuser,
        pg().host,
        pg().port
    );
    let check = tandem_tests::connect_url(&url).await;
    let mut setup = String::from(
        "CREATE TABLE pgbench_accounts_v2 (LIKE pgbench_accounts INCLUDING ALL) \
         PARTITION BY HASH (aid);",
    );
    for r in 0..8 {
        setup.push_str(&format!(
            "CREATE TABLE pgbench_accounts_v2_{r} PARTITION OF pgbench_accounts_v2 \
             FOR VALUES WITH (MODULUS 8, REMAINDER {r});"
        ));
    }
    setup.push_str(
        "CREATE TABLE pgbench_tellers_v2 (LIKE pgbench_tellers INCLUDING ALL);
         CREATE TABLE pgbench_branches_v2 (LIKE pgbench_branches INCLUDING ALL);
         INSERT INTO pgbench_accounts_v2 SELECT * FROM pgbench_accounts;
         INSERT INTO pgbench_tellers_v2 SELECT * FROM pgbench_tellers;
         INSERT INTO pgbench_branches_v2 SELECT * FROM pgbench_branches;",
    );
    check
        .batch_execute(&setup)
        .await
        .unwrap_or_else(|e| panic!("{}", db_text(&e)));
    let tables = ["pgbench_accounts", "pgbench_tellers", "pgbench_branches"];
    let rules: Vec<RuleToml> = tables.iter().map(|t| RuleToml::dual_write(t)).collect();
    let mut config = config_with(&rules);
    config.upstream = url.clone();
    let proxy = start_ruled_proxy(config).await;
    let port = proxy.addr.port();
    for mode in ["simple", "prepared"] {
        let out = pgbench(
            port,
            &db,
            &["-n", "-c", "8", "-j", "2", "-t", "100", "-M", mode],
        );
        assert!(out.contains("number of failed transactions: 0"), "{out}");
        assert!(
            out.contains("number of transactions actually processed: 800/800"),
            "{out}"
        );
    }
    for t in tables {
        let drift = diff(&check, t, &format!("{t}_v2"), "*").await;
        assert!(drift.is_empty(), "{t}:\n{}", drift.join("\n"));
    }
    // The run really wrote: 1600 transactions, each one history row and one account update.
    let history = rows_text(&check, "SELECT count(*) FROM pgbench_history").await;
    assert_eq!(history, ["1600"]);
    let balanced = rows_text(
        &check,
        "SELECT (SELECT sum(abalance) FROM pgbench_accounts_v2) = \
         (SELECT sum(delta) FROM pgbench_history)",
    )
    .await;
    assert_eq!(balanced, ["t"]);
    drop(proxy);
    drop(check);
    direct
        .batch_execute(&format!("DROP DATABASE {db} WITH (FORCE)"))
        .await
        .unwrap();
}
