//! RETURNING lists that mean something only on the table, found by running the same
//! statements through Tandem and directly: system columns, whole rows, functions RETURNING
//! refuses and names another table makes ambiguous. Through Tandem the client must get
//! Postgres's own answer: the same rows and RowDescription, or the same error with nothing
//! written.

use tandem_tests::mirror::{without_positions, Kind, RawSession, Twins};

/// Seeds the twins with two rows whose every value is the same on both sides.
async fn seeded(twins: &Twins, via: &mut RawSession, direct: &mut RawSession) {
    twins
        .same_simple(
            via,
            direct,
            "INSERT INTO {legacy} (tenant, amount, note, token, created_at) VALUES \
             ('acme', 1, 'a', '00000000-0000-0000-0000-000000000001', '2024-01-01'), \
             ('globex', 2, 'b', '00000000-0000-0000-0000-000000000002', '2024-01-02')",
        )
        .await;
}

/// Runs `template` on both twins, simple then extended protocol, and asserts the same
/// error (SQLSTATE, message, detail, hint; positions aside) with nothing written.
async fn same_error(twins: &Twins, via: &mut RawSession, direct: &mut RawSession, template: &str) {
    for extended in [false, true] {
        let (got, want) = if extended {
            (
                via.extended(&twins.ruled.sql(template)).await,
                direct.extended(&twins.baseline.sql(template)).await,
            )
        } else {
            (
                via.simple(&twins.ruled.sql(template)).await,
                direct.simple(&twins.baseline.sql(template)).await,
            )
        };
        let got = without_positions(twins.transcript(&got));
        let want = without_positions(twins.transcript(&want));
        assert!(
            want.iter().any(|l| l.starts_with("Error ")),
            "{template}: Postgres accepted it: {want:?}"
        );
        assert_eq!(
            got, want,
            "{template} (extended: {extended}): through Tandem (left) differs from direct (right)"
        );
        twins.assert_parity(template).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn returning_system_columns_match_postgres() {
    let twins = Twins::new(Kind::List).await;
    let (mut via, mut direct) = twins.raw_sessions().await;
    seeded(&twins, &mut via, &mut direct).await;
    for template in [
        // The upsert idiom: inserted, then updated.
        "INSERT INTO {legacy} (id, tenant, amount) VALUES (10, 'acme', 5) ON CONFLICT (id) \
         DO UPDATE SET amount = EXCLUDED.amount RETURNING id, (xmax = 0) AS inserted",
        "INSERT INTO {legacy} AS l (id, tenant, amount) VALUES (10, 'acme', 6) ON CONFLICT (id) \
         DO UPDATE SET amount = EXCLUDED.amount RETURNING l.id, (l.xmax = 0) AS inserted, ctid",
        "INSERT INTO {legacy} (tenant, amount) VALUES ('acme', 3) RETURNING *, ctid, \
         xmin IS NOT NULL AS has_xmin, tableoid = '{legacy}'::regclass AS own_table",
        "UPDATE {legacy} SET note = 'u' WHERE id = 1 RETURNING ctid, {legacy}.*, cmax",
        "UPDATE {legacy} l SET note = s.note FROM {src} s WHERE s.tenant = l.tenant \
         RETURNING l.id, l.ctid, l.tableoid = '{legacy}'::regclass AS own_table",
        // A key move (the target row moves too).
        "UPDATE {legacy} SET tenant = 'globex' WHERE id = 1 RETURNING id, tenant, ctid",
        "DELETE FROM {legacy} WHERE id = 2 RETURNING ctid, *",
    ] {
        twins.same_simple(&mut via, &mut direct, template).await;
    }
    for template in [
        "INSERT INTO {legacy} (id, tenant, amount) VALUES (20, 'acme', 5) ON CONFLICT (id) \
         DO UPDATE SET amount = EXCLUDED.amount RETURNING id, (xmax = 0) AS inserted, ctid",
        "UPDATE {legacy} SET note = 'e' WHERE id = 20 RETURNING *, (xmax = 0) AS fresh",
    ] {
        twins.same_extended(&mut via, &mut direct, template).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn returning_whole_row_has_the_tables_row_type() {
    let twins = Twins::new(Kind::List).await;
    let (mut via, mut direct) = twins.raw_sessions().await;
    seeded(&twins, &mut via, &mut direct).await;
    let transcript = twins
        .same_simple(
            &mut via,
            &mut direct,
            "UPDATE {legacy} AS l SET note = 'w' WHERE id = 1 RETURNING l, to_jsonb(l) AS j",
        )
        .await;
    assert!(
        transcript
            .iter()
            .any(|l| l.contains("l table={legacy} attnum=0 type={legacy row type}")),
        "{transcript:?}"
    );
    for template in [
        "UPDATE {legacy} SET note = 'x' WHERE id = 1 RETURNING {legacy}, id",
        "DELETE FROM {legacy} WHERE id = 2 RETURNING {legacy}",
    ] {
        twins.same_extended(&mut via, &mut direct, template).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn returning_aggregate_window_or_set_returning_function_fails_as_postgres_does() {
    let twins = Twins::new(Kind::List).await;
    let (mut via, mut direct) = twins.raw_sessions().await;
    seeded(&twins, &mut via, &mut direct).await;
    for template in [
        "INSERT INTO {legacy} (tenant) VALUES ('acme'), ('globex'), ('acme') RETURNING count(*)",
        "INSERT INTO {legacy} (tenant) VALUES ('acme') RETURNING generate_series(1, 3)",
        "INSERT INTO {legacy} (tenant) VALUES ('acme') RETURNING id, rank() OVER (ORDER BY id)",
        "UPDATE {legacy} SET note = 'n' RETURNING sum(amount)",
        "UPDATE {legacy} SET note = 'n' WHERE id = 1 RETURNING (SELECT max(amount))",
        "DELETE FROM {legacy} RETURNING unnest(ARRAY[id, id])",
        "UPDATE {legacy} SET tenant = 'globex' WHERE id = 1 RETURNING max(id)",
    ] {
        same_error(&twins, &mut via, &mut direct, template).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_returning_column_with_from_fails_with_42702() {
    let twins = Twins::new(Kind::List).await;
    let (mut via, mut direct) = twins.raw_sessions().await;
    seeded(&twins, &mut via, &mut direct).await;
    for template in [
        "UPDATE {legacy} l SET note = 'x' FROM {src} s WHERE s.tenant = l.tenant RETURNING note",
        "UPDATE {legacy} l SET note = 'x' FROM {src} s WHERE s.tenant = l.tenant \
         RETURNING l.id, upper(tenant)",
        "DELETE FROM {legacy} l USING {src} s WHERE s.tenant = l.tenant RETURNING amount",
        "DELETE FROM {legacy} l USING {src} s WHERE s.tenant = l.tenant RETURNING ctid",
    ] {
        same_error(&twins, &mut via, &mut direct, template).await;
    }
    // A name only the written table has is not ambiguous: the same rows as Postgres.
    twins
        .same_simple(
            &mut via,
            &mut direct,
            "UPDATE {legacy} l SET note = 'y' FROM {src} s WHERE s.tenant = l.tenant \
             RETURNING id, score, l.note",
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn returning_system_columns_under_the_record_policy_match_postgres() {
    // Under `record` the rows go to tandem.mirror() as the legacy row type: the carried
    // columns must stay out of it.
    let twins = Twins::with_rule(Kind::List, |rule| rule.record()).await;
    let (mut via, mut direct) = twins.raw_sessions().await;
    seeded(&twins, &mut via, &mut direct).await;
    for template in [
        "INSERT INTO {legacy} (id, tenant, amount) VALUES (10, 'acme', 5) ON CONFLICT (id) \
         DO UPDATE SET amount = EXCLUDED.amount RETURNING *, (xmax = 0) AS inserted",
        "UPDATE {legacy} AS l SET note = 'r' WHERE id = 1 RETURNING l, ctid, upper(note)",
    ] {
        twins.same_simple(&mut via, &mut direct, template).await;
    }
}
