//! Every write form Tandem mirrors, run on each target kind (LIST, HASH, shadow) through
//! the simple and the extended protocol, plus RETURNING metadata and multi-statement strings.

use tandem_tests::mirror::{db_text, simple_counts, Kind, Pair, Twins};
use tandem_tests::pg;

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
