//! Column changes during a migration: the guard's event trigger follows a column change of
//! the guarded table on the other table in the same transaction (ADD with the same values,
//! DROP, RENAME, ALTER TYPE, SET/DROP DEFAULT, SET/DROP NOT NULL), refuses what it cannot
//! follow (a key column dropped or renamed) and what would break the mirror (a mirrored
//! column of the other table dropped or renamed), and guards partitions created later.
//!
//! Every test compares whole rows (every column, new ones included) of the legacy table
//! and its target after each step, and writes through Tandem and directly afterwards. A
//! Tandem session adopts the rules the store's bump makes it resolve again only between
//! transactions; writes made in a transaction that began before the change run under the
//! old rules (the old column list), and the guard must make the target right anyway.

use super::reloaded;

use tandem::RunningProxy;
use tandem_tests::mirror::{
    config_with, db_text, diff, rows_text, sqlstate, start_ruled_proxy, Kind, Pair,
};
use tandem_tests::{pg, through};
use tokio_postgres::Client;

/// The columns every test row is inserted with (legacy order).
const COLUMNS: &str = "id, tenant, amount, note, score, token, created_at";

/// A List pair with rows 1..=4 in both tables (backfilled before the proxy starts), a proxy
/// with its rule in `mode` (guard mirror) and a session through it.
async fn ruled(mode: &str) -> (Pair, Client, RunningProxy, Client) {
    let check = pg().direct().await;
    let pair = Pair::new(Kind::List);
    pair.create(Kind::List, &check).await;
    check
        .batch_execute(&pair.sql(
            "INSERT INTO {legacy} (tenant, amount, note) VALUES ('acme', 1, 'one'), \
               ('globex', 2, 'two'), ('acme', 3, NULL), ('initech', 4, 'four'); \
             INSERT INTO {target} SELECT * FROM {legacy}",
        ))
        .await
        .unwrap();
    let proxy = start_ruled_proxy(config_with(&[pair.rule(Kind::List).mode(mode)])).await;
    let via = through(&proxy).await;
    (pair, check, proxy, via)
}

/// Runs `sql` (with the pair's names) on `client`, panicking with the server's error.
async fn run(client: &Client, pair: &Pair, sql: &str) {
    client
        .batch_execute(&pair.sql(sql))
        .await
        .unwrap_or_else(|e| panic!("{}: {}", pair.sql(sql), db_text(&e)));
}

/// Runs `sql`, which must fail; returns the error.
async fn refused(client: &Client, pair: &Pair, sql: &str) -> tokio_postgres::Error {
    match client.batch_execute(&pair.sql(sql)).await {
        Ok(()) => panic!("{} was not refused", pair.sql(sql)),
        Err(e) => e,
    }
}

/// Each column of `table` as `name type [NOT NULL] [DEFAULT expr]`, in table order.
async fn columns(client: &Client, table: &str) -> Vec<String> {
    rows_text(
        client,
        &format!(
            "SELECT a.attname || ' ' || format_type(a.atttypid, a.atttypmod) \
               || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END \
               || coalesce(' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid), '') \
             FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
             WHERE a.attrelid = '{table}'::regclass AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum"
        ),
    )
    .await
}

/// `name type` of each column of `table`, in order.
async fn shape(client: &Client, table: &str) -> Vec<String> {
    columns(client, table)
        .await
        .iter()
        .map(|c| c.split(" NOT NULL").next().unwrap_or(c).to_string())
        .map(|c| c.split(" DEFAULT").next().unwrap_or(&c).to_string())
        .collect()
}

/// The column of `table` named `name`, as [`columns`] shows it.
async fn column(client: &Client, table: &str, name: &str) -> String {
    let all = columns(client, table).await;
    all.iter()
        .find(|c| c.split(' ').next() == Some(name))
        .unwrap_or_else(|| panic!("{table} has no column {name}: {all:?}"))
        .clone()
}

/// The target has the legacy table's columns (names and types, in order) and exactly the
/// legacy table's rows, every column compared.
async fn same(client: &Client, pair: &Pair, step: &str) {
    let (legacy, target) = (
        shape(client, &pair.legacy).await,
        shape(client, &pair.target).await,
    );
    assert_eq!(legacy, target, "{step}: the target's columns");
    let differ = diff(client, &pair.legacy, &pair.target, "*").await;
    assert!(
        differ.is_empty(),
        "{step}: legacy and target differ: {differ:#?}"
    );
    let (l, t) = pair.counts(client).await;
    assert_eq!(l, t, "{step}: row counts");
}

/// The rule's guard as `tandem.guard_report` sees it.
async fn guard_state(check: &Client, proxy: &RunningProxy, pair: &Pair) -> String {
    let schema = &proxy.watch.as_ref().unwrap().store().schema;
    check
        .query_one(
            &format!(
                "SELECT tandem.guard_report(r.table_name, r.target, r.key, r.mode, r.guard, \
                   r.on_mirror_error, r.set_columns) FROM \"{schema}\".rules r WHERE r.table_name = $1"
            ),
            &[&format!("public.{}", pair.legacy)],
        )
        .await
        .unwrap_or_else(|e| panic!("guard report: {}", db_text(&e)))
        .get(0)
}

/// One row insert with every legacy column given, plus `extra` columns and values.
fn insert(id: i64, tenant: &str, extra_cols: &str, extra_vals: &str) -> String {
    format!(
        "INSERT INTO {{legacy}} ({COLUMNS}{extra_cols}) VALUES ({id}, '{tenant}', {id}, 'row {id}', \
         0.5, gen_random_uuid(), now(){extra_vals})"
    )
}

/// ADD COLUMN through Tandem, then writes of the new column in the same transaction: the
/// session still runs under the rule as it was (its mirror does not know `c`), and the
/// guard completes every row. After the reload, writes through Tandem and directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_added_through_tandem_is_added_to_the_target_and_mirrored() {
    let (pair, check, proxy, via) = ruled("dual_write").await;
    run(
        &via,
        &pair,
        &format!(
            "BEGIN; ALTER TABLE {{legacy}} ADD COLUMN c text; {}; \
             UPDATE {{legacy}} SET c = 'updated ' || id WHERE id IN (1, 2)",
            insert(100, "acme", ", c", ", 'inserted'")
        ),
    )
    .await;
    // Inside the transaction, before any reload could reach this session.
    same(&via, &pair, "in the ALTER's transaction, through Tandem").await;
    run(&via, &pair, "COMMIT").await;
    assert_eq!(column(&check, &pair.target, "c").await, "c text");
    same(&check, &pair, "after COMMIT").await;
    let c = rows_text(&check, &pair.sql("SELECT c FROM {target} ORDER BY id")).await;
    assert_eq!(
        c,
        ["updated 1", "updated 2", "NULL", "NULL", "inserted"],
        "the target's c"
    );

    reloaded(&proxy, &check).await;
    for (client, name, id) in [(&via, "through Tandem", 101), (&check, "directly", 102)] {
        run(client, &pair, &insert(id, "globex", ", c", ", 'new'")).await;
        run(
            client,
            &pair,
            &format!("UPDATE {{legacy}} SET c = 'again {id}' WHERE id IN (3, {id})"),
        )
        .await;
        run(client, &pair, "UPDATE {legacy} SET c = NULL WHERE id = 1").await;
        same(&check, &pair, name).await;
    }
    assert_eq!(guard_state(&check, &proxy, &pair).await, "in place");
}

/// ADD COLUMN made directly, while a Tandem session has a transaction open (so it keeps
/// the old rule): its writes of `c` reach the target through the guard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_added_directly_is_mirrored_before_tandem_reloads() {
    let (pair, check, proxy, via) = ruled("dual_write").await;
    run(&via, &pair, "BEGIN; SELECT 1").await;
    run(&check, &pair, "ALTER TABLE {legacy} ADD COLUMN c text").await;
    assert_eq!(column(&check, &pair.target, "c").await, "c text");
    run(
        &via,
        &pair,
        &format!(
            "{}; UPDATE {{legacy}} SET c = 'old rule ' || id WHERE id <= 2",
            insert(100, "acme", ", c", ", 'old rule'")
        ),
    )
    .await;
    same(&via, &pair, "a session under the old rule").await;
    run(&via, &pair, "COMMIT").await;
    run(
        &check,
        &pair,
        &format!(
            "{}; UPDATE {{legacy}} SET c = 'direct ' || id WHERE id IN (3, 101)",
            insert(101, "globex", ", c", ", 'direct'")
        ),
    )
    .await;
    same(&check, &pair, "direct writes").await;

    reloaded(&proxy, &check).await;
    run(
        &via,
        &pair,
        &format!(
            "{}; UPDATE {{legacy}} SET c = 'new rule ' || id WHERE id IN (4, 102)",
            insert(102, "initech", ", c", ", 'new rule'")
        ),
    )
    .await;
    same(&check, &pair, "through Tandem after the reload").await;
    let c = rows_text(&check, &pair.sql("SELECT c FROM {target} ORDER BY id")).await;
    assert_eq!(
        c,
        [
            "old rule 1",
            "old rule 2",
            "direct 3",
            "new rule 4",
            "old rule",
            "direct 101",
            "new rule 102"
        ]
    );
}

/// A column added with a default to a table with rows: the target's rows get the very
/// values the legacy rows got, constant defaults and per-row (volatile) ones alike, and
/// the target gets the same default and NOT NULL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn columns_added_with_defaults_get_the_legacy_values() {
    let (pair, check, proxy, via) = ruled("dual_write").await;
    let seq = format!("{}_q", pair.legacy);
    run(&check, &pair, &format!("CREATE SEQUENCE {seq} START 1000")).await;
    // Constant (and stable) defaults: one value for every existing row.
    for add in [
        "ADD COLUMN k text NOT NULL DEFAULT 'konst'",
        "ADD COLUMN n int DEFAULT 42",
        "ADD COLUMN added_at timestamptz DEFAULT now()",
    ] {
        run(&via, &pair, &format!("ALTER TABLE {{legacy}} {add}")).await;
        same(&check, &pair, add).await;
    }
    assert_eq!(
        column(&check, &pair.target, "k").await,
        "k text NOT NULL DEFAULT 'konst'::text"
    );
    assert_eq!(
        column(&check, &pair.target, "n").await,
        "n integer DEFAULT 42"
    );
    // Volatile defaults: a value per row, which the target must copy, not compute again.
    for add in [
        "ADD COLUMN r float8 DEFAULT random()",
        "ADD COLUMN s bigserial",
        &format!("ADD COLUMN q bigint DEFAULT nextval('{seq}')"),
        "ADD COLUMN ts timestamptz NOT NULL DEFAULT clock_timestamp()",
        "ADD COLUMN u uuid DEFAULT gen_random_uuid()",
        "ADD COLUMN ident int GENERATED BY DEFAULT AS IDENTITY",
    ] {
        run(&check, &pair, &format!("ALTER TABLE {{legacy}} {add}")).await;
        same(&check, &pair, add).await;
    }
    let s = rows_text(&check, &pair.sql("SELECT s FROM {target} ORDER BY id")).await;
    assert_eq!(s, ["1", "2", "3", "4"], "the serial's values");
    let q = rows_text(&check, &pair.sql("SELECT q FROM {target} ORDER BY id")).await;
    assert_eq!(q, ["1000", "1001", "1002", "1003"], "nextval's values");
    // The sequences were drawn once per legacy row, not again for the target.
    let next = rows_text(
        &check,
        &pair.sql(&format!(
            "SELECT nextval('{{legacy}}_s_seq') || ' ' || nextval('{seq}')"
        )),
    )
    .await;
    assert_eq!(next, ["5 1004"]);
    assert!(
        column(&check, &pair.target, "ts")
            .await
            .ends_with("NOT NULL DEFAULT clock_timestamp()"),
        "{}",
        column(&check, &pair.target, "ts").await
    );

    // New rows take the defaults in the legacy table; the target copies them.
    reloaded(&proxy, &check).await;
    run(&via, &pair, &insert(100, "acme", "", "")).await;
    run(&check, &pair, &insert(101, "globex", "", "")).await;
    run(
        &via,
        &pair,
        "UPDATE {legacy} SET n = 7, k = 'changed' WHERE id = 1",
    )
    .await;
    same(&check, &pair, "writes after the columns were added").await;
}

/// DROP COLUMN, ALTER COLUMN TYPE (widening, and with a USING expression that changes the
/// values) and RENAME COLUMN of the legacy table: the target follows, later writes mirror.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_retyped_and_renamed_columns_are_followed() {
    let (pair, check, proxy, via) = ruled("dual_write").await;
    run(
        &via,
        &pair,
        "ALTER TABLE {legacy} ADD COLUMN qty int DEFAULT 1",
    )
    .await;

    // DROP COLUMN through Tandem.
    run(&via, &pair, "ALTER TABLE {legacy} DROP COLUMN note").await;
    same(&check, &pair, "DROP COLUMN note").await;
    reloaded(&proxy, &check).await;
    run(&via, &pair, "UPDATE {legacy} SET qty = 2 WHERE id = 1").await;
    run(&check, &pair, "UPDATE {legacy} SET qty = 3 WHERE id = 2").await;
    same(&check, &pair, "writes after DROP COLUMN").await;

    // ALTER COLUMN TYPE: int -> bigint, numeric(10,2) -> numeric(14,4).
    run(
        &via,
        &pair,
        "ALTER TABLE {legacy} ALTER COLUMN qty TYPE bigint, ALTER COLUMN amount TYPE numeric(14,4)",
    )
    .await;
    assert_eq!(
        column(&check, &pair.target, "qty").await,
        "qty bigint DEFAULT 1"
    );
    assert_eq!(
        column(&check, &pair.target, "amount").await,
        "amount numeric(14,4) NOT NULL"
    );
    same(&check, &pair, "ALTER TYPE").await;
    // A type change whose USING expression changes the values (dollars to cents).
    run(
        &check,
        &pair,
        "ALTER TABLE {legacy} ALTER COLUMN amount TYPE bigint USING (amount * 100)::bigint",
    )
    .await;
    same(&check, &pair, "ALTER TYPE ... USING").await;
    let cents = rows_text(&check, &pair.sql("SELECT amount FROM {target} ORDER BY id")).await;
    assert_eq!(cents, ["100", "200", "300", "400"]);
    // The same type, new values: the catalog shows no change, the rewrite does.
    run(
        &via,
        &pair,
        "ALTER TABLE {legacy} ALTER COLUMN amount TYPE bigint USING amount + 1",
    )
    .await;
    same(&check, &pair, "ALTER TYPE to the same type ... USING").await;
    reloaded(&proxy, &check).await;
    run(
        &via,
        &pair,
        "UPDATE {legacy} SET amount = 12345 WHERE id = 1",
    )
    .await;
    run(
        &check,
        &pair,
        "UPDATE {legacy} SET amount = 54321 WHERE id = 2",
    )
    .await;
    same(&check, &pair, "writes after ALTER TYPE").await;

    // RENAME COLUMN: Tandem refuses it (the rule names the columns); made directly, the
    // guard renames the target's column too.
    let e = refused(
        &via,
        &pair,
        "ALTER TABLE {legacy} RENAME COLUMN qty TO quantity",
    )
    .await;
    assert_eq!(sqlstate(&e), "55000", "{}", db_text(&e));
    assert!(column(&check, &pair.target, "qty")
        .await
        .starts_with("qty "));
    run(
        &check,
        &pair,
        "ALTER TABLE {legacy} RENAME COLUMN qty TO quantity",
    )
    .await;
    same(&check, &pair, "RENAME COLUMN").await;
    reloaded(&proxy, &check).await;
    run(
        &via,
        &pair,
        "UPDATE {legacy} SET quantity = 10 WHERE id = 3",
    )
    .await;
    run(
        &via,
        &pair,
        "INSERT INTO {legacy} (id, tenant, amount, score, token, created_at, quantity) \
         VALUES (100, 'acme', 1, 0.5, gen_random_uuid(), now(), 11)",
    )
    .await;
    run(
        &check,
        &pair,
        "UPDATE {legacy} SET quantity = 12 WHERE id = 4",
    )
    .await;
    run(&check, &pair, "DELETE FROM {legacy} WHERE id = 2").await;
    same(&check, &pair, "writes after RENAME COLUMN").await;
    assert_eq!(guard_state(&check, &proxy, &pair).await, "in place");
}

/// A key column of the rule cannot be dropped or renamed while the rule is active: 55000,
/// and neither table changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_columns_cannot_be_dropped_or_renamed() {
    let (pair, check, proxy, via) = ruled("dual_write").await;
    let before = (
        columns(&check, &pair.legacy).await,
        columns(&check, &pair.target).await,
    );
    for (client, sql) in [
        (&check, "ALTER TABLE {legacy} DROP COLUMN id"),
        (&via, "ALTER TABLE {legacy} DROP COLUMN id"),
        (&check, "ALTER TABLE {legacy} DROP COLUMN tenant CASCADE"),
        (
            &check,
            "ALTER TABLE {legacy} RENAME COLUMN tenant TO tenant_id",
        ),
        (&check, "ALTER TABLE {legacy} RENAME id TO legacy_id"),
    ] {
        let e = refused(client, &pair, sql).await;
        assert_eq!(sqlstate(&e), "55000", "{sql}: {}", db_text(&e));
        let message = e.as_db_error().map(|d| d.message()).unwrap_or_default();
        assert!(message.contains("key"), "{sql}: {message}");
        let after = (
            columns(&check, &pair.legacy).await,
            columns(&check, &pair.target).await,
        );
        assert_eq!(after, before, "{sql} changed a table");
    }
    assert_eq!(guard_state(&check, &proxy, &pair).await, "in place");
    run(&check, &pair, "UPDATE {legacy} SET note = 'still guarded'").await;
    run(&via, &pair, &insert(100, "acme", "", "")).await;
    same(&check, &pair, "after the refusals").await;
}

/// Dropping or renaming a mirrored column of the target (directly or through Tandem) is
/// refused (55000): the mirror writes it. A column only the target has may come and go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrored_columns_of_the_target_cannot_be_dropped_or_renamed() {
    let (pair, check, proxy, via) = ruled("dual_write").await;
    let before = columns(&check, &pair.target).await;
    for (client, sql) in [
        (&check, "ALTER TABLE {target} DROP COLUMN note"),
        (&via, "ALTER TABLE {target} DROP COLUMN score"),
        (&check, "ALTER TABLE {target} RENAME COLUMN note TO memo"),
    ] {
        let e = refused(client, &pair, sql).await;
        assert_eq!(sqlstate(&e), "55000", "{sql}: {}", db_text(&e));
        assert_eq!(columns(&check, &pair.target).await, before, "{sql}");
    }
    run(&check, &pair, "ALTER TABLE {target} ADD COLUMN extra text").await;
    run(&check, &pair, "ALTER TABLE {target} DROP COLUMN extra").await;
    assert_eq!(columns(&check, &pair.target).await, before);
    assert_eq!(guard_state(&check, &proxy, &pair).await, "in place");
    reloaded(&proxy, &check).await;
    run(
        &via,
        &pair,
        "UPDATE {legacy} SET note = 'after' WHERE id = 1",
    )
    .await;
    run(
        &check,
        &pair,
        "UPDATE {legacy} SET note = 'after' WHERE id = 2",
    )
    .await;
    same(&check, &pair, "after the refusals").await;
}

/// SET/DROP DEFAULT and SET/DROP NOT NULL of a legacy column are made on the target too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defaults_and_not_null_are_followed() {
    let (pair, check, proxy, via) = ruled("dual_write").await;
    run(
        &via,
        &pair,
        "UPDATE {legacy} SET note = 'was null' WHERE note IS NULL; \
         ALTER TABLE {legacy} ALTER COLUMN note SET DEFAULT 'n/a'",
    )
    .await;
    run(
        &check,
        &pair,
        "ALTER TABLE {legacy} ALTER COLUMN note SET NOT NULL",
    )
    .await;
    assert_eq!(
        column(&check, &pair.target, "note").await,
        "note text NOT NULL DEFAULT 'n/a'::text"
    );
    // The target refuses what the legacy table refuses.
    let e = refused(
        &check,
        &pair,
        "INSERT INTO {target} (id, tenant, amount, note, score, token, created_at) \
         VALUES (200, 'acme', 1, NULL, 1, gen_random_uuid(), now())",
    )
    .await;
    assert_eq!(sqlstate(&e), "23502", "{}", db_text(&e));
    reloaded(&proxy, &check).await;
    run(
        &via,
        &pair,
        "INSERT INTO {legacy} (id, tenant, amount, score, token, created_at) \
         VALUES (100, 'acme', 1, 0.5, gen_random_uuid(), now())",
    )
    .await;
    same(&check, &pair, "SET DEFAULT, SET NOT NULL").await;
    assert_eq!(
        rows_text(
            &check,
            &pair.sql("SELECT note FROM {target} WHERE id = 100")
        )
        .await,
        ["n/a"]
    );

    run(
        &check,
        &pair,
        "ALTER TABLE {legacy} ALTER COLUMN note DROP NOT NULL, ALTER COLUMN note DROP DEFAULT, \
         ALTER COLUMN amount SET DEFAULT 9.5",
    )
    .await;
    assert_eq!(column(&check, &pair.target, "note").await, "note text");
    assert_eq!(
        column(&check, &pair.target, "amount").await,
        "amount numeric(10,2) NOT NULL DEFAULT 9.5"
    );
    reloaded(&proxy, &check).await;
    run(
        &via,
        &pair,
        "INSERT INTO {legacy} (id, tenant, score, token, created_at) \
         VALUES (101, 'acme', 0.5, gen_random_uuid(), now())",
    )
    .await;
    run(
        &check,
        &pair,
        "UPDATE {legacy} SET note = NULL WHERE id = 1",
    )
    .await;
    same(&check, &pair, "DROP NOT NULL, DROP DEFAULT").await;
}

/// In cutover the target is guarded: a partition created under it later (through Tandem
/// or directly) gets the guard's triggers, so a direct write into the new partition is
/// mirrored back to the legacy table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_partition_of_the_guarded_target_is_guarded() {
    let (pair, check, proxy, via) = ruled("cutover").await;
    assert_eq!(guard_state(&check, &proxy, &pair).await, "in place");
    run(
        &via,
        &pair,
        "CREATE TABLE {target}_umbrella PARTITION OF {target} FOR VALUES IN ('umbrella')",
    )
    .await;
    run(
        &check,
        &pair,
        "CREATE TABLE {target}_hooli PARTITION OF {target} FOR VALUES IN ('hooli')",
    )
    .await;
    for part in ["umbrella", "hooli"] {
        let triggers = rows_text(
            &check,
            &pair.sql(&format!(
                "SELECT tgname FROM pg_trigger WHERE tgrelid = '{{target}}_{part}'::regclass \
                 AND tgname LIKE 'tandem_guard_%' ORDER BY 1"
            )),
        )
        .await;
        assert_eq!(
            triggers,
            [
                "tandem_guard_delete",
                "tandem_guard_insert",
                "tandem_guard_truncate",
                "tandem_guard_update"
            ],
            "{part}"
        );
    }
    assert_eq!(guard_state(&check, &proxy, &pair).await, "in place");
    // Direct writes into the new partitions, by name: mirrored to the legacy table.
    run(
        &check,
        &pair,
        "INSERT INTO {target}_umbrella (id, tenant, amount, note, score, token, created_at) \
         VALUES (100, 'umbrella', 5, 'direct', 0.5, gen_random_uuid(), now()), \
                (101, 'umbrella', 6, 'direct', 0.5, gen_random_uuid(), now()); \
         INSERT INTO {target}_hooli (id, tenant, amount, note, score, token, created_at) \
         VALUES (102, 'hooli', 7, 'direct', 0.5, gen_random_uuid(), now())",
    )
    .await;
    same(&check, &pair, "INSERT into the new partitions").await;
    run(
        &check,
        &pair,
        "UPDATE {target}_umbrella SET note = 'updated' WHERE id = 100; \
         DELETE FROM {target}_hooli WHERE id = 102",
    )
    .await;
    same(&check, &pair, "UPDATE and DELETE in the new partitions").await;
    run(&check, &pair, "TRUNCATE {target}_umbrella").await;
    same(&check, &pair, "TRUNCATE of a new partition").await;
    // Through Tandem (the reverse rewrite) into the new partition's range.
    run(&via, &pair, &insert(103, "umbrella", "", "")).await;
    same(&check, &pair, "through Tandem").await;
    assert_eq!(pair.counts(&check).await, (5, 5));
}

/// In cutover the target is the guarded table: its column changes are made on the legacy
/// table (which Tandem mirrors back to), with the same values; the legacy table's
/// mirrored columns cannot be dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn column_changes_of_the_target_are_followed_in_cutover() {
    let (pair, check, proxy, via) = ruled("cutover").await;
    run(
        &check,
        &pair,
        "ALTER TABLE {target} ADD COLUMN c text DEFAULT 'x', ADD COLUMN r float8 DEFAULT random()",
    )
    .await;
    same(&check, &pair, "ADD COLUMN to the target").await;
    run(
        &check,
        &pair,
        "ALTER TABLE {target} ALTER COLUMN amount TYPE numeric(12,2) USING amount * 10",
    )
    .await;
    same(&check, &pair, "ALTER TYPE ... USING of the target").await;
    run(&check, &pair, "ALTER TABLE {target} DROP COLUMN note").await;
    same(&check, &pair, "DROP COLUMN of the target").await;
    let e = refused(&check, &pair, "ALTER TABLE {legacy} DROP COLUMN score").await;
    assert_eq!(sqlstate(&e), "55000", "{}", db_text(&e));

    reloaded(&proxy, &check).await;
    run(
        &via,
        &pair,
        "INSERT INTO {legacy} (id, tenant, amount, score, token, created_at, c) \
         VALUES (100, 'acme', 1, 0.5, gen_random_uuid(), now(), 'through Tandem'); \
         UPDATE {legacy} SET c = 'updated' WHERE id = 1",
    )
    .await;
    run(
        &check,
        &pair,
        "INSERT INTO {target} (id, tenant, amount, score, token, created_at) \
         VALUES (101, 'globex', 2, 0.5, gen_random_uuid(), now()); \
         UPDATE {target} SET c = 'direct', r = 1 WHERE id = 2",
    )
    .await;
    same(&check, &pair, "writes after the changes").await;
    assert_eq!(guard_state(&check, &proxy, &pair).await, "in place");
    // A column added to the legacy table alone would never reach the table of record: the
    // applications' ALTER through Tandem and a direct one are refused, naming the target.
    for client in [&check, &via] {
        let e = refused(
            client,
            &pair,
            "ALTER TABLE {legacy} ADD COLUMN only_legacy text",
        )
        .await;
        assert_eq!(sqlstate(&e), "55000", "{}", db_text(&e));
        let hint = e.as_db_error().and_then(|d| d.hint()).unwrap_or_default();
        assert!(hint.contains(&pair.target), "{hint}");
    }
}
