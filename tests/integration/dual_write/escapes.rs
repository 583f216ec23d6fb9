//! Ways a write or a schema change could escape the mirror, each closed: DDL that changes
//! what a rule means is refused, `UPDATE ONLY` / `DELETE FROM ONLY` are mirrored, an upsert
//! that moves a key is refused, a generated legacy column reaches a plain target column,
//! and the over-refusals that hid behind them are gone (plain EXPLAIN of a write,
//! RETURNING of a generated column with FROM, a refusal naming the wrong schema).

use tandem_tests::mirror::{
    config_with, db_text, diff, rows_text, sqlstate, start_ruled_proxy, Kind, RuleToml, Twins,
};
use tandem_tests::{connect_url, pg, proxy_url, through, unique};
use tokio_postgres::Client;

use super::{ruled_pair, seeded_pair};

/// `sql` fails with `code`; returns the error's message and hint.
async fn refused(client: &Client, sql: &str, code: &str) -> (String, String) {
    let e = client
        .batch_execute(sql)
        .await
        .err()
        .unwrap_or_else(|| panic!("{sql} must be refused"));
    assert_eq!(sqlstate(&e), code, "{sql}: {}", db_text(&e));
    let db = e.as_db_error().expect("a server error");
    (
        db.message().to_string(),
        db.hint().unwrap_or("").to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_changing_what_a_rule_means_is_refused_on_legacy_and_target() {
    let (pair, check, _proxy, via) = seeded_pair().await;
    let other = unique("elsewhere");
    check
        .batch_execute(&pair.sql(&format!(
            "CREATE SCHEMA {other}; CREATE TABLE {{legacy}}_p (LIKE {{target}});
             CREATE TABLE {{legacy}}_parent (LIKE {{legacy}}) PARTITION BY LIST (tenant);"
        )))
        .await
        .unwrap();
    let means = pair.sql("would change what the active rule on public.{legacy} means");
    for sql in [
        "ALTER TABLE {legacy} RENAME TO {legacy}_old",
        "ALTER TABLE public.{target} RENAME TO {legacy}_new",
        &format!("ALTER TABLE {{legacy}} SET SCHEMA {other}"),
        &format!("ALTER TABLE public.{{target}} SET SCHEMA {other}"),
        "ALTER TABLE {legacy} INHERIT {src}",
        "ALTER TABLE {src} INHERIT public.{legacy}",
        "ALTER TABLE {target} NO INHERIT {src}",
        "CREATE TABLE {legacy}_kid () INHERITS ({legacy})",
        "CREATE TABLE {legacy}_kid () INHERITS ({src}, public.{target})",
        "ALTER TABLE {legacy}_parent ATTACH PARTITION {legacy} FOR VALUES IN ('acme')",
        "ALTER TABLE {target} ATTACH PARTITION {legacy}_p FOR VALUES IN ('p')",
        "ALTER TABLE public.{target} DETACH PARTITION {target}_globex",
        "ALTER TABLE {legacy} RENAME COLUMN note TO remark",
        "DROP TABLE {target}",
    ] {
        let sql = pair.sql(sql);
        let (message, hint) = refused(&via, &sql, "55000").await;
        assert!(message.contains(&means), "{sql}: {message}");
        assert!(hint.contains("MODE off"), "{sql}: {hint}");
        // The extended protocol is refused alike.
        let e = via.execute(&sql, &[]).await.unwrap_err();
        assert_eq!(sqlstate(&e), "55000", "extended {sql}: {}", db_text(&e));
    }
    // Nothing changed: same names, schema, columns, inheritance and partitions.
    let facts = rows_text(
        &check,
        &pair.sql(
            "SELECT concat_ws(' ', to_regclass('public.{legacy}') IS NOT NULL, \
             to_regclass('public.{target}') IS NOT NULL, \
             (SELECT count(*) FROM pg_inherits WHERE inhparent = 'public.{target}'::regclass), \
             (SELECT count(*) FROM pg_inherits WHERE inhrelid IN ('public.{legacy}'::regclass, \
              'public.{target}'::regclass, 'public.{src}'::regclass) \
              OR inhparent = 'public.{legacy}'::regclass), \
             (SELECT count(*) FROM pg_attribute WHERE attname = 'note' AND attrelid IN \
              ('public.{legacy}'::regclass, 'public.{target}'::regclass)))",
        ),
    )
    .await;
    assert_eq!(facts, ["t t 3 0 2"]);
    // The rule still holds: a write is mirrored.
    via.batch_execute(&pair.sql("UPDATE {legacy} SET note = 'after' WHERE tenant = 'acme'"))
        .await
        .unwrap();
    assert!(pair.drift(Kind::List, &check).await.is_empty());
    assert_eq!(pair.counts(&check).await, (2, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_under_a_rule_that_is_off_runs() {
    let (pair, check, proxy) = ruled_pair(Kind::List, |r| r.mode("off")).await;
    let via = through(&proxy).await;
    via.batch_execute(&pair.sql(
        "ALTER TABLE {legacy} RENAME COLUMN note TO remark; \
         ALTER TABLE {target} DETACH PARTITION {target}_globex",
    ))
    .await
    .unwrap_or_else(|e| panic!("{}", db_text(&e)));
    let remark = rows_text(
        &check,
        &pair.sql("SELECT count(*) FROM pg_attribute WHERE attname = 'remark' AND attrelid = '{legacy}'::regclass"),
    )
    .await;
    assert_eq!(remark, ["1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_only_and_delete_from_only_are_mirrored() {
    let twins = Twins::new(Kind::List).await;
    let (mut via, mut direct) = twins.raw_sessions().await;
    twins
        .same_simple(
            &mut via,
            &mut direct,
            "INSERT INTO {legacy} (tenant, amount, note) VALUES ('acme', 1, 'a'), \
             ('globex', 2, 'b'), ('acme', 3, 'c'), ('initech', 4, 'd')",
        )
        .await;
    for (sql, tag) in [
        (
            "UPDATE ONLY {legacy} SET note = 'only' WHERE tenant = 'acme'",
            "UPDATE 2",
        ),
        (
            "UPDATE ONLY {legacy} AS l SET note = 'aliased' WHERE l.tenant = 'globex' \
             RETURNING l.id, l.note",
            "UPDATE 1",
        ),
        (
            "update only public.{legacy} l set amount = l.amount + 1",
            "UPDATE 4",
        ),
        // A key move (the LIST target's partition column): the old target row goes.
        (
            "UPDATE ONLY {legacy} SET tenant = 'globex' WHERE id = 1",
            "UPDATE 1",
        ),
        (
            "DELETE FROM ONLY {legacy} AS l WHERE l.id = 2 RETURNING l.id",
            "DELETE 1",
        ),
        (
            "DELETE FROM ONLY {legacy} WHERE tenant = 'acme'",
            "DELETE 1",
        ),
    ] {
        let simple = twins.same_simple(&mut via, &mut direct, sql).await;
        assert!(
            simple
                .iter()
                .any(|l| l == &format!("CommandComplete {tag}")),
            "{sql}: {simple:?}"
        );
    }
    twins
        .same_extended(
            &mut via,
            &mut direct,
            "UPDATE ONLY {legacy} o SET note = 'extended' RETURNING o.note",
        )
        .await;
    twins
        .same_extended(
            &mut via,
            &mut direct,
            "DELETE FROM ONLY {legacy} WHERE id = 4",
        )
        .await;
    assert_eq!(twins.ruled.counts(&twins.check).await, (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_only_leaves_an_inheritance_child_and_its_mirror_alone() {
    let (pair, check, proxy) = ruled_pair(Kind::List, |r| r).await;
    check
        .batch_execute(&pair.sql(
            "CREATE TABLE {legacy}_kid () INHERITS ({legacy}); \
             INSERT INTO {legacy}_kid (id, tenant, note, score, token, created_at) \
             VALUES (900, 'acme', 'kid', 0, gen_random_uuid(), now())",
        ))
        .await
        .unwrap();
    let via = through(&proxy).await;
    via.batch_execute(&pair.sql("INSERT INTO {legacy} (tenant, note) VALUES ('acme', 'parent')"))
        .await
        .unwrap();
    let n = via
        .execute(&pair.sql("UPDATE ONLY {legacy} SET note = 'only'"), &[])
        .await
        .unwrap();
    assert_eq!(n, 1, "the child's row is not updated");
    let n = via
        .execute(
            &pair.sql("DELETE FROM ONLY {legacy} WHERE tenant = 'acme'"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(n, 1, "the child's row is not deleted");
    let kid = rows_text(&check, &pair.sql("SELECT note FROM {legacy}_kid")).await;
    assert_eq!(kid, ["kid"]);
    // The parent's row was mirrored in and out by the rewrite; the child's, written
    // directly into the child (a table under the legacy one, so its rows are the legacy
    // table's), was mirrored by the guard, and neither ONLY statement touched it.
    assert_eq!(
        rows_text(&check, &pair.sql("SELECT note FROM {target}")).await,
        ["kid"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_conflict_update_of_a_key_column_is_refused() {
    let (pair, check, _proxy, via) = seeded_pair().await;
    let ids = rows_text(&check, &pair.sql("SELECT id FROM {legacy} ORDER BY id")).await;
    let (first, before) = (&ids[0], pair.legacy_rows(&check).await);
    for (sql, column) in [
        (
            format!(
                "INSERT INTO {{legacy}} (id, tenant) VALUES ({first}, 'acme') \
                 ON CONFLICT (id) DO UPDATE SET tenant = 'globex'"
            ),
            "tenant",
        ),
        (
            format!(
                "INSERT INTO {{legacy}} (id, tenant) VALUES ({first}, 'acme') \
                 ON CONFLICT (id) DO UPDATE SET id = 100"
            ),
            "id",
        ),
        (
            format!(
                "INSERT INTO {{legacy}} (id, tenant) VALUES ({first}, 'globex') \
                 ON CONFLICT (id) DO UPDATE SET tenant = EXCLUDED.tenant"
            ),
            "tenant",
        ),
    ] {
        let sql = pair.sql(&sql);
        let (message, hint) = refused(&via, &sql, "0A000").await;
        assert!(
            message.contains(&pair.sql(&format!(
                "changes key/partition column {column} of ruled table public.{{legacy}} in \
                 INSERT ... ON CONFLICT DO UPDATE"
            ))),
            "{sql}: {message}"
        );
        assert!(
            hint.contains("delete the row and insert it again"),
            "{hint}"
        );
    }
    assert_eq!(
        pair.legacy_rows(&check).await,
        before,
        "nothing was written"
    );
    // Setting a key column of the conflict target to its EXCLUDED value keeps the key.
    let n = via
        .execute(
            &pair.sql(&format!(
                "INSERT INTO {{legacy}} (id, tenant, note) VALUES ({first}, 'acme', 'upserted') \
                 ON CONFLICT (id) DO UPDATE SET id = EXCLUDED.id, note = EXCLUDED.note"
            )),
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("{}", db_text(&e)));
    assert_eq!(n, 1);
    assert!(pair.drift(Kind::List, &check).await.is_empty());
    assert_eq!(pair.counts(&check).await, (2, 2));
}

/// A legacy table with a generated column, a target where it is plain, and a proxy.
async fn generated_pair() -> (String, Client, tandem::RunningProxy) {
    let check = pg().direct().await;
    let t = unique("gen");
    check
        .batch_execute(&format!(
            "CREATE TABLE {t} (id bigserial PRIMARY KEY, qty int NOT NULL, price numeric NOT NULL,
                 total numeric GENERATED ALWAYS AS (qty * price) STORED);
             CREATE TABLE {t}_v2 (id bigint PRIMARY KEY, qty int NOT NULL, price numeric NOT NULL,
                 total numeric);
             CREATE TABLE {t}_src (id bigint PRIMARY KEY, qty int);"
        ))
        .await
        .unwrap();
    let proxy = start_ruled_proxy(config_with(&[RuleToml::dual_write(&t)])).await;
    (t, check, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_legacy_column_reaches_a_plain_target_column() {
    let (t, check, proxy) = generated_pair().await;
    let via = through(&proxy).await;
    via.batch_execute(&format!(
        "INSERT INTO {t} (qty, price) VALUES (2, 1.5), (3, 10); \
         UPDATE {t} SET qty = qty + 1 WHERE id = 1; \
         INSERT INTO {t} (id, qty, price) VALUES (2, 5, 10) \
             ON CONFLICT (id) DO UPDATE SET qty = EXCLUDED.qty; \
         INSERT INTO {t}_src VALUES (1, 7)"
    ))
    .await
    .unwrap_or_else(|e| panic!("{}", db_text(&e)));
    let cols = "id, qty, price, total";
    assert_eq!(
        diff(&check, &t, &format!("{t}_v2"), cols).await,
        Vec::<String>::new()
    );
    let totals = rows_text(&check, &format!("SELECT total FROM {t}_v2 ORDER BY id")).await;
    assert_eq!(totals, ["4.5", "50"]);
    // RETURNING may name the generated column unqualified next to FROM / USING.
    let rows = via
        .query(
            &format!(
                "UPDATE {t} l SET qty = s.qty FROM {t}_src s WHERE s.id = l.id RETURNING total"
            ),
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("{}", db_text(&e)));
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows_text(&check, &format!("SELECT total FROM {t}_v2 WHERE id = 1")).await,
        ["10.5"]
    );
    let rows = via
        .query(
            &format!("DELETE FROM {t} l USING {t}_src s WHERE s.id = l.id RETURNING total, l.id"),
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("{}", db_text(&e)));
    assert_eq!(rows.len(), 1);
    assert_eq!(
        diff(&check, &t, &format!("{t}_v2"), cols).await,
        Vec::<String>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_without_analyze_of_a_write_passes_through_and_writes_nothing() {
    let (pair, check, _proxy, via) = seeded_pair().await;
    let (legacy, target) = (
        pair.legacy_rows(&check).await,
        pair.target_rows(&check).await,
    );
    for sql in [
        "EXPLAIN UPDATE {legacy} SET note = 'x'",
        "EXPLAIN (COSTS OFF) UPDATE {legacy} SET note = 'x'",
        "EXPLAIN (COSTS OFF, ANALYZE false) DELETE FROM {legacy}",
    ] {
        let sql = pair.sql(sql);
        let plan = rows_text(&via, &sql).await;
        let direct = rows_text(&check, &sql).await;
        assert!(
            plan.iter()
                .any(|l| l.contains("Update") || l.contains("Delete")),
            "{plan:?}"
        );
        if sql.contains("COSTS OFF") {
            assert_eq!(plan, direct, "{sql}: the client's own plan");
        }
    }
    assert_eq!(pair.legacy_rows(&check).await, legacy);
    assert_eq!(pair.target_rows(&check).await, target);
    let (message, _) = refused(
        &via,
        &pair.sql("EXPLAIN (ANALYZE, COSTS OFF) UPDATE {legacy} SET note = 'x'"),
        "0A000",
    )
    .await;
    assert!(message.contains("inside EXPLAIN ANALYZE"), "{message}");
    assert_eq!(pair.legacy_rows(&check).await, legacy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusal_names_a_table_reached_through_search_path_by_its_schema() {
    let check = pg().direct().await;
    let schema = unique("s");
    let name = unique("items");
    let ddl = |s: &str| {
        format!(
            "CREATE TABLE {s}.{name} (id bigint PRIMARY KEY, note text);
             CREATE TABLE {s}.{name}_v2 (id bigint PRIMARY KEY, note text);"
        )
    };
    check
        .batch_execute(&format!(
            "CREATE SCHEMA {schema}; {} {}",
            ddl("public"),
            ddl(&schema)
        ))
        .await
        .unwrap();
    // Without the guard, which would take the CURRENT OF and MERGE below.
    let rule = |s: &str| RuleToml {
        table: format!("{s}.{name}"),
        ..RuleToml::dual_write(&name).guard("off")
    };
    let proxy = start_ruled_proxy(config_with(&[rule("public"), rule(&schema)])).await;
    let url = format!(
        "{}?options=-c%20search_path%3D{schema}",
        proxy_url(&proxy, &pg().superuser)
    );
    let via = connect_url(&url).await;
    let own = format!("{schema}.{name}");
    // MERGE is refused on 15 and 16 only (mirrored from 17 on).
    let merge = tandem_tests::server_refuses_merge().await;
    for (sql, code) in [
        // (A statement Postgres cannot parse either now gets the server's own 42601.)
        (format!("DELETE FROM {name} WHERE CURRENT OF c"), "0A000"),
        (
            format!("MERGE INTO {name} t USING (SELECT 1 AS id) s ON t.id = s.id WHEN MATCHED THEN DELETE"),
            "0A000",
        ),
        (format!("ALTER TABLE {name} RENAME TO gone"), "55000"),
        (format!("ALTER TABLE {name}_v2 RENAME COLUMN note TO n"), "55000"),
        (format!("DROP TABLE {name}"), "55000"),
    ]
    .into_iter()
    .filter(|(sql, _)| merge || !sql.starts_with("MERGE"))
    {
        let (message, _) = refused(&via, &sql, code).await;
        assert!(message.contains(&own), "{sql}: {message}");
        assert!(!message.contains(&format!("public.{name}")), "{sql}: {message}");
    }
    // And a write through search_path lands in that schema's pair.
    via.batch_execute(&format!("INSERT INTO {name} VALUES (1, 'x')"))
        .await
        .unwrap();
    let counts = rows_text(
        &check,
        &format!("SELECT (SELECT count(*) FROM {own}_v2) || ' ' || (SELECT count(*) FROM public.{name}_v2)"),
    )
    .await;
    assert_eq!(counts, ["1 0"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_the_server_cannot_parse_gets_the_servers_own_syntax_error() {
    let (pair, _check, _proxy, via) = seeded_pair().await;
    // RENAME cannot be combined with other ALTER TABLE actions: Postgres's own 42601, as
    // without Tandem (Tandem's refusal would have come second), and nothing changed.
    let sql = pair.sql("ALTER TABLE {target} ADD COLUMN x int, RENAME note TO remark");
    refused(&via, &sql, "42601").await;
}
