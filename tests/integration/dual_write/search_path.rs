//! Bare names are resolved through the session's search_path as the server has it: set at
//! login (role defaults included), by `SET`, `SET LOCAL`, `set_config()`, undone by
//! `ROLLBACK`; Tandem asks the server rather than model these. A ruled table in schema `sp`
//! shares its name with an unruled table in `public`, so a wrong guess either leaves a
//! write unmirrored or mirrors the wrong table's rows.

use std::sync::atomic::Ordering::Relaxed;
use tandem_tests::mirror::{config_with, db_text, sqlstate, start_ruled_proxy, RuleToml};

use tandem_tests::{connect_url, pg, proxy_url, server_major, through, unique};
use tokio_postgres::Client;

/// `<schema>.items` ruled (target `<schema>.items_v2`) and an unruled `public.<items>`.
struct Shadowed {
    schema: String,
    items: String,
}

impl Shadowed {
    async fn new(check: &Client) -> Self {
        let schema = unique("sp");
        let items = unique("items");
        check
            .batch_execute(&format!(
                "CREATE SCHEMA {schema};
                 CREATE TABLE {schema}.{items} (id bigint PRIMARY KEY, v text);
                 CREATE TABLE {schema}.{items}_v2 (id bigint PRIMARY KEY, v text);
                 CREATE TABLE public.{items} (id bigint PRIMARY KEY, v text);"
            ))
            .await
            .unwrap();
        Self { schema, items }
    }

    fn rule(&self) -> RuleToml {
        let mut rule =
            RuleToml::dual_write(&self.items).target(&format!("{}.{}_v2", self.schema, self.items));
        rule.table = format!("{}.{}", self.schema, self.items);
        rule
    }

    /// Rows in the ruled legacy table, its target, and the public namesake.
    async fn counts(&self, check: &Client) -> (i64, i64, i64) {
        let n = |t: String| async move {
            check
                .query_one(&format!("SELECT count(*) FROM {t}"), &[])
                .await
                .unwrap()
                .get::<_, i64>(0)
        };
        (
            n(format!("{}.{}", self.schema, self.items)).await,
            n(format!("{}.{}_v2", self.schema, self.items)).await,
            n(format!("public.{}", self.items)).await,
        )
    }

    fn insert(&self, id: i64) -> String {
        format!("INSERT INTO {} (id, v) VALUES ({id}, 'x')", self.items)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_search_path_is_followed_for_later_writes() {
    let check = pg().direct().await;
    let t = Shadowed::new(&check).await;
    let proxy = start_ruled_proxy(config_with(&[t.rule()])).await;
    let via = through(&proxy).await;
    // The default path finds the public namesake: not mirrored.
    via.batch_execute(&t.insert(1)).await.unwrap();
    assert_eq!(t.counts(&check).await, (0, 0, 1));
    via.batch_execute(&format!("SET search_path TO {}, public", t.schema))
        .await
        .unwrap();
    via.batch_execute(&t.insert(2)).await.unwrap();
    assert_eq!(t.counts(&check).await, (1, 1, 1));
    // set_config, as ORMs and poolers do it.
    via.batch_execute("SELECT set_config('search_path', 'public', false)")
        .await
        .unwrap();
    via.batch_execute(&t.insert(3)).await.unwrap();
    assert_eq!(t.counts(&check).await, (1, 1, 2));
    via.batch_execute(&format!("SET search_path = '{}'", t.schema))
        .await
        .unwrap();
    via.batch_execute(&t.insert(4)).await.unwrap();
    assert_eq!(t.counts(&check).await, (2, 2, 2));
    via.batch_execute("RESET search_path").await.unwrap();
    via.batch_execute(&t.insert(5)).await.unwrap();
    assert_eq!(t.counts(&check).await, (2, 2, 3));
}

/// PostgreSQL 18 reports `search_path` in ParameterStatus: after the session's first probe
/// a changed path is taken from the report, with no hidden round trip. Before 18 each change
/// costs a probe. The writes land where the path says in both cases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_path_set_per_request_costs_no_probe_where_the_server_reports_it() {
    let check = pg().direct().await;
    let t = Shadowed::new(&check).await;
    let proxy = start_ruled_proxy(config_with(&[t.rule()])).await;
    let via = through(&proxy).await;
    for i in 0..5 {
        via.batch_execute(&format!("SET search_path TO {}, public", t.schema))
            .await
            .unwrap();
        via.batch_execute(&t.insert(2 * i)).await.unwrap();
        via.batch_execute("SET search_path TO public")
            .await
            .unwrap();
        via.batch_execute(&t.insert(2 * i + 1)).await.unwrap();
    }
    assert_eq!(t.counts(&check).await, (5, 5, 5));
    let probes = proxy.stats.search_path_probes.load(Relaxed);
    let reports = proxy.stats.search_path_reports.load(Relaxed);
    if server_major().await >= 18 {
        assert_eq!(
            (probes, reports),
            (1, 9),
            "one probe, then the server's reports"
        );
    } else {
        assert_eq!((probes, reports), (10, 0), "a probe per change");
    }
}

/// A search_path changed where Tandem cannot see it (inside a function): on PostgreSQL 18
/// the server's report makes the next write resolve right and the rewrite mirrors it; before
/// 18 Tandem keeps the old path and the guard mirrors the write (a firing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_path_a_function_changed_is_followed_where_the_server_reports_it() {
    let check = pg().direct().await;
    let t = Shadowed::new(&check).await;
    let switch = unique("sp_switch");
    check
        .batch_execute(&format!(
            "CREATE FUNCTION public.{switch}() RETURNS void LANGUAGE sql \
             AS $$ SELECT pg_catalog.set_config('search_path', '{}', false) $$",
            t.schema
        ))
        .await
        .unwrap();
    let proxy = start_ruled_proxy(config_with(&[t.rule()])).await;
    let via = through(&proxy).await;
    via.batch_execute(&t.insert(1)).await.unwrap();
    assert_eq!(t.counts(&check).await, (0, 0, 1));
    via.batch_execute(&format!("SELECT public.{switch}()"))
        .await
        .unwrap();
    via.batch_execute(&t.insert(2)).await.unwrap();
    // Either way the row reached both tables of the rule.
    assert_eq!(t.counts(&check).await, (1, 1, 1));
    let firings: i64 = check
        .query_one(
            "SELECT tandem.guard_firings($1)",
            &[&format!("{}.{}", t.schema, t.items)],
        )
        .await
        .unwrap()
        .get(0);
    let expected = if server_major().await >= 18 { 0 } else { 1 };
    assert_eq!(firings, expected, "who mirrored the write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_local_and_rollback_undo_a_search_path_as_the_server_does() {
    let check = pg().direct().await;
    let t = Shadowed::new(&check).await;
    let proxy = start_ruled_proxy(config_with(&[t.rule()])).await;
    let via = through(&proxy).await;
    via.batch_execute("BEGIN").await.unwrap();
    via.batch_execute(&format!("SET LOCAL search_path TO {}", t.schema))
        .await
        .unwrap();
    via.batch_execute(&t.insert(1)).await.unwrap();
    via.batch_execute("COMMIT").await.unwrap();
    assert_eq!(t.counts(&check).await, (1, 1, 0));
    // SET LOCAL ended with the transaction.
    via.batch_execute(&t.insert(2)).await.unwrap();
    assert_eq!(t.counts(&check).await, (1, 1, 1));
    // A SET inside a transaction that rolls back is undone.
    via.batch_execute("BEGIN").await.unwrap();
    via.batch_execute(&format!("SET search_path TO {}", t.schema))
        .await
        .unwrap();
    via.batch_execute("ROLLBACK").await.unwrap();
    via.batch_execute(&t.insert(3)).await.unwrap();
    assert_eq!(t.counts(&check).await, (1, 1, 2));
    // ROLLBACK TO a savepoint before the SET, too.
    via.batch_execute("BEGIN; SAVEPOINT a").await.unwrap();
    via.batch_execute(&format!("SET search_path TO {}", t.schema))
        .await
        .unwrap();
    via.batch_execute("ROLLBACK TO SAVEPOINT a").await.unwrap();
    via.batch_execute(&t.insert(4)).await.unwrap();
    via.batch_execute("COMMIT").await.unwrap();
    assert_eq!(t.counts(&check).await, (1, 1, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_default_search_path_is_the_session_path() {
    let check = pg().direct().await;
    let t = Shadowed::new(&check).await;
    let role = unique("sp_role");
    check
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN SUPERUSER; ALTER ROLE {role} SET search_path = {}, public",
            t.schema
        ))
        .await
        .unwrap();
    let proxy = start_ruled_proxy(config_with(&[t.rule()])).await;
    let via = connect_url(&proxy_url(&proxy, &role)).await;
    via.batch_execute(&t.insert(1)).await.unwrap();
    assert_eq!(t.counts(&check).await, (1, 1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_pipelined_behind_a_set_search_path_waits_for_it() {
    let check = pg().direct().await;
    let t = Shadowed::new(&check).await;
    let proxy = start_ruled_proxy(config_with(&[t.rule()])).await;
    let via = through(&proxy).await;
    via.batch_execute("SELECT 1").await.unwrap();
    // tokio-postgres sends both before reading either answer.
    let set = format!("SET search_path TO {}, public", t.schema);
    let insert = t.insert(1);
    let (a, b) = tokio::join!(via.batch_execute(&set), via.execute(insert.as_str(), &[]));
    a.unwrap();
    assert_eq!(b.unwrap(), 1);
    assert_eq!(t.counts(&check).await, (1, 1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_path_change_before_a_write_in_one_query_string_is_refused() {
    let check = pg().direct().await;
    let t = Shadowed::new(&check).await;
    let proxy = start_ruled_proxy(config_with(&[t.rule()])).await;
    let via = through(&proxy).await;
    let e = via
        .batch_execute(&format!(
            "SET search_path TO {}, public; {}",
            t.schema,
            t.insert(1)
        ))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "0A000", "{}", db_text(&e));
    assert!(db_text(&e).contains("search_path"), "{}", db_text(&e));
    assert_eq!(t.counts(&check).await, (0, 0, 0));
    // After it, on its own, it works.
    via.batch_execute(&format!("SET search_path TO {}, public", t.schema))
        .await
        .unwrap();
    via.batch_execute(&t.insert(1)).await.unwrap();
    assert_eq!(t.counts(&check).await, (1, 1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_temporary_table_shadowing_a_ruled_name_is_never_mirrored() {
    let check = pg().direct().await;
    let t = Shadowed::new(&check).await;
    let proxy = start_ruled_proxy(config_with(&[t.rule()])).await;
    let via = through(&proxy).await;
    via.batch_execute(&format!("SET search_path TO {}, public", t.schema))
        .await
        .unwrap();
    via.batch_execute(&t.insert(1)).await.unwrap();
    assert_eq!(t.counts(&check).await, (1, 1, 0));
    // pg_temp comes first: the bare name now means the temporary table. The server checks
    // what the name means as it runs the rewritten statement, and refuses it.
    via.batch_execute(&format!(
        "CREATE TEMP TABLE {} (id bigint PRIMARY KEY, v text)",
        t.items
    ))
    .await
    .unwrap();
    for sql in [
        t.insert(2),
        format!("UPDATE {} SET v = 'y'", t.items),
        format!("DELETE FROM {}", t.items),
    ] {
        let e = via.batch_execute(&sql).await.unwrap_err();
        assert_eq!(sqlstate(&e), "55000", "{sql}: {}", db_text(&e));
        assert!(db_text(&e).contains("pg_temp"), "{}", db_text(&e));
    }
    let e = via.execute(t.insert(3).as_str(), &[]).await.unwrap_err();
    assert_eq!(sqlstate(&e), "55000", "{}", db_text(&e));
    assert_eq!(t.counts(&check).await, (1, 1, 0));
    // The ruled table by its qualified name is still mirrored.
    via.batch_execute(&format!(
        "INSERT INTO {}.{} (id, v) VALUES (4, 'q')",
        t.schema, t.items
    ))
    .await
    .unwrap();
    assert_eq!(t.counts(&check).await, (2, 2, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_prepared_before_a_search_path_change_follows_it() {
    let check = pg().direct().await;
    let t = Shadowed::new(&check).await;
    // Without the guard, which would take the SQL PREPARE'd write Tandem refuses below.
    let proxy = start_ruled_proxy(config_with(&[t.rule().guard("off")])).await;
    let via = through(&proxy).await;
    let insert = via
        .prepare(&format!("INSERT INTO {} (id, v) VALUES ($1, 'x')", t.items))
        .await
        .unwrap();
    via.batch_execute(&format!(
        "PREPARE sqlins (bigint) AS INSERT INTO {} (id, v) VALUES ($1, 'y')",
        t.items
    ))
    .await
    .unwrap();
    via.execute(&insert, &[&1i64]).await.unwrap();
    via.batch_execute("EXECUTE sqlins(2)").await.unwrap();
    assert_eq!(t.counts(&check).await, (0, 0, 2));
    // The server plans both again with the new path, so they now write the ruled table:
    // Tandem plans them again too. The protocol-level one is mirrored; a SQL PREPARE of
    // a write to a ruled table is refused, as it is when prepared under the rule.
    via.batch_execute(&format!("SET search_path TO {}, public", t.schema))
        .await
        .unwrap();
    via.execute(&insert, &[&3i64]).await.unwrap();
    assert_eq!(t.counts(&check).await, (1, 1, 2));
    let e = via.batch_execute("EXECUTE sqlins(4)").await.unwrap_err();
    assert_eq!(sqlstate(&e), "0A000", "{}", db_text(&e));
    assert_eq!(t.counts(&check).await, (1, 1, 2));
}
