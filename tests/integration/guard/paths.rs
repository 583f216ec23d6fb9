//! Every path around the proxy, under each guard policy: the statement runs on a direct
//! connection (or reaches the legacy table through a function, procedure, DO block, trigger,
//! updatable view or rule), and afterwards the target equals legacy (`mirror`), or the
//! statement failed and neither table changed (`fail`), or the change stands and a drift row
//! names the statement (`record`). Then writes through the proxy, alone and mixed with such
//! paths in one statement: each change applied exactly once.

use bytes::Bytes;
use futures_util::SinkExt;
use tandem_tests::mirror::{
    config_with, db_text, rows_text, sqlstate, start_ruled_proxy, Kind, Pair,
};
use tandem_tests::{pg, through};
use tokio_postgres::Client;

/// One way to write the legacy table without the proxy: objects to create first, then the
/// statement that writes (run on a direct connection), or a COPY.
struct Path {
    name: &'static str,
    setup: &'static str,
    statement: &'static str,
    copy: Option<&'static str>,
}

/// Every path the issue lists. `{legacy}`, `{target}` are the pair's tables; each path
/// inserts a row (note = the path's name), updates the `seed` row and deletes the `doomed`
/// one where the path can do all three.
const PATHS: &[Path] = &[
    Path {
        name: "plpgsql function",
        setup: "CREATE FUNCTION {legacy}_plpgsql(n text) RETURNS int LANGUAGE plpgsql AS $$
                BEGIN
                    INSERT INTO {legacy} (tenant, note) VALUES ('acme', n);
                    UPDATE {legacy} SET amount = amount + 1 WHERE note = 'seed';
                    DELETE FROM {legacy} WHERE note = 'doomed';
                    RETURN 1;
                END $$",
        statement: "SELECT {legacy}_plpgsql('plpgsql function')",
        copy: None,
    },
    Path {
        name: "sql function",
        setup: "CREATE FUNCTION {legacy}_sql(n text) RETURNS int LANGUAGE sql AS $$
                    INSERT INTO {legacy} (tenant, note) VALUES ('globex', n);
                    UPDATE {legacy} SET amount = amount + 1 WHERE note = 'seed';
                    DELETE FROM {legacy} WHERE note = 'doomed';
                    SELECT 1;
                $$",
        statement: "SELECT {legacy}_sql('sql function')",
        copy: None,
    },
    Path {
        name: "procedure",
        setup: "CREATE PROCEDURE {legacy}_proc(n text) LANGUAGE plpgsql AS $$
                BEGIN
                    INSERT INTO {legacy} (tenant, note) VALUES ('acme', n);
                    UPDATE {legacy} SET amount = amount + 1 WHERE note = 'seed';
                    DELETE FROM {legacy} WHERE note = 'doomed';
                END $$",
        statement: "CALL {legacy}_proc('procedure')",
        copy: None,
    },
    Path {
        name: "do block",
        setup: "",
        statement: "DO $$ BEGIN
                    INSERT INTO {legacy} (tenant, note) VALUES ('globex', 'do block');
                    UPDATE {legacy} SET amount = amount + 1 WHERE note = 'seed';
                    DELETE FROM {legacy} WHERE note = 'doomed';
                END $$",
        copy: None,
    },
    Path {
        name: "trigger on another table",
        setup: "CREATE TABLE {legacy}_side (note text);
                CREATE FUNCTION {legacy}_side_trg() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    INSERT INTO {legacy} (tenant, note) VALUES ('acme', NEW.note);
                    UPDATE {legacy} SET amount = amount + 1 WHERE note = 'seed';
                    DELETE FROM {legacy} WHERE note = 'doomed';
                    RETURN NEW;
                END $$;
                CREATE TRIGGER side_trg AFTER INSERT ON {legacy}_side
                    FOR EACH ROW EXECUTE FUNCTION {legacy}_side_trg()",
        statement: "INSERT INTO {legacy}_side VALUES ('trigger on another table')",
        copy: None,
    },
    Path {
        name: "updatable view",
        setup: "CREATE VIEW {legacy}_view AS SELECT * FROM {legacy} WHERE tenant IN ('acme', 'globex')",
        statement: "WITH i AS (INSERT INTO {legacy}_view (tenant, note) VALUES ('acme', 'updatable view') RETURNING 1),
                         u AS (UPDATE {legacy}_view SET amount = amount + 1 WHERE note = 'seed' RETURNING 1)
                    DELETE FROM {legacy}_view WHERE note = 'doomed'",
        copy: None,
    },
    Path {
        name: "rule do also",
        setup: "CREATE TABLE {legacy}_log (note text);
                CREATE RULE log_also AS ON INSERT TO {legacy}_log DO ALSO (
                    INSERT INTO {legacy} (tenant, note) VALUES ('globex', NEW.note);
                    UPDATE {legacy} SET amount = amount + 1 WHERE note = 'seed';
                    DELETE FROM {legacy} WHERE note = 'doomed')",
        statement: "INSERT INTO {legacy}_log VALUES ('rule do also')",
        copy: None,
    },
    Path {
        name: "direct insert",
        setup: "",
        statement: "INSERT INTO {legacy} (tenant, note) VALUES ('acme', 'direct insert'), ('umbrella', 'direct insert')",
        copy: None,
    },
    Path {
        name: "direct update",
        setup: "",
        statement: "UPDATE {legacy} SET amount = amount + 1, tenant = 'globex' WHERE note = 'seed'",
        copy: None,
    },
    Path {
        name: "direct delete",
        setup: "",
        statement: "DELETE FROM {legacy} WHERE note = 'doomed'",
        copy: None,
    },
    Path {
        name: "direct merge",
        setup: "",
        statement: "MERGE INTO {legacy} l USING (VALUES ('seed', 5), ('direct merge', 6)) AS s(note, amount)
                    ON l.note = s.note
                    WHEN MATCHED THEN UPDATE SET amount = l.amount + s.amount
                    WHEN NOT MATCHED THEN INSERT (tenant, note, amount) VALUES ('acme', s.note, s.amount)",
        copy: None,
    },
    Path {
        name: "direct copy",
        setup: "",
        statement: "COPY {legacy} (tenant, note) FROM STDIN",
        copy: Some("acme\tdirect copy\nglobex\tdirect copy\n"),
    },
    Path {
        name: "direct truncate",
        setup: "",
        statement: "TRUNCATE {legacy}",
        copy: None,
    },
];

/// A pair with the guard under `policy` (in `mode`), and a direct connection.
/// The paths this server can take: MERGE arrived in PostgreSQL 15.
async fn available_paths() -> Vec<&'static Path> {
    let major = tandem_tests::server_major().await;
    PATHS
        .iter()
        .filter(|p| major >= 15 || !p.statement.starts_with("MERGE"))
        .collect()
}

async fn guarded(policy: &str, mode: &str) -> (Pair, Client, tandem::RunningProxy) {
    let check = pg().direct().await;
    let pair = Pair::new(Kind::List);
    pair.create(Kind::List, &check).await;
    let proxy = start_ruled_proxy(config_with(&[pair
        .rule(Kind::List)
        .mode(mode)
        .guard(policy)]))
    .await;
    (pair, check, proxy)
}

/// Puts back the rows every path works on (`seed` to update, `doomed` to delete), through
/// the proxy so both tables have them.
async fn reseed(pair: &Pair, proxy: &tandem::RunningProxy) {
    let via = through(proxy).await;
    via.batch_execute(&pair.sql(
        "DELETE FROM {legacy} WHERE note IN ('seed', 'doomed');
         INSERT INTO {legacy} (tenant, note, amount) VALUES ('acme', 'seed', 1), ('globex', 'doomed', 2)",
    ))
    .await
    .unwrap_or_else(|e| panic!("reseed: {}", db_text(&e)));
}

/// Runs `path`'s statement on `client`.
async fn run(pair: &Pair, client: &Client, path: &Path) -> Result<(), tokio_postgres::Error> {
    let sql = pair.sql(path.statement);
    match path.copy {
        None => client.batch_execute(&sql).await,
        Some(data) => {
            let sink = client.copy_in::<_, Bytes>(&sql).await?;
            futures_util::pin_mut!(sink);
            sink.send(Bytes::from_static(data.as_bytes())).await?;
            sink.finish().await.map(|_| ())
        }
    }
}

async fn setup(pair: &Pair, check: &Client) {
    for path in PATHS.iter().filter(|p| !p.setup.is_empty()) {
        check
            .batch_execute(&pair.sql(path.setup))
            .await
            .unwrap_or_else(|e| panic!("{}: setup: {}", path.name, db_text(&e)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_keeps_the_target_equal_on_every_path() {
    let (pair, check, proxy) = guarded("mirror", "dual_write").await;
    setup(&pair, &check).await;
    for path in available_paths().await {
        reseed(&pair, &proxy).await;
        let before = pair.legacy_rows(&check).await;
        run(&pair, &check, path)
            .await
            .unwrap_or_else(|e| panic!("{}: {}", path.name, db_text(&e)));
        assert_ne!(
            pair.legacy_rows(&check).await,
            before,
            "{}: the path wrote nothing",
            path.name
        );
        assert_eq!(
            pair.drift(Kind::List, &check).await,
            Vec::<String>::new(),
            "{}: target differs from legacy",
            path.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_rolls_back_every_path() {
    let (pair, check, proxy) = guarded("fail", "dual_write").await;
    setup(&pair, &check).await;
    reseed(&pair, &proxy).await;
    let table = format!("public.{}", pair.legacy);
    let firings = || async {
        check
            .query_one("SELECT tandem.guard_firings($1)", &[&table])
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    for path in available_paths().await {
        let (legacy, target) = (
            pair.legacy_rows(&check).await,
            pair.target_rows(&check).await,
        );
        let fired = firings().await;
        let e = run(&pair, &check, path)
            .await
            .expect_err(&format!("{}: the guard lets it through", path.name));
        // Counted although the statement rolled back (tandem_guard_firings_total).
        assert_eq!(firings().await, fired + 1, "{}", path.name);
        assert_eq!(sqlstate(&e), "55000", "{}: {}", path.name, db_text(&e));
        let db = e.as_db_error().expect("a server error");
        assert!(
            db.message().contains(&pair.legacy) && db.message().contains(&pair.target),
            "{}: the message names both tables: {}",
            path.name,
            db.message()
        );
        assert!(
            db.hint().is_some_and(|h| h.contains("GUARD mirror")),
            "{}: {:?}",
            path.name,
            db.hint()
        );
        assert_eq!(pair.legacy_rows(&check).await, legacy, "{}", path.name);
        assert_eq!(pair.target_rows(&check).await, target, "{}", path.name);
    }
    // Through the proxy the same writes pass: the rewrite mirrors them.
    let via = through(&proxy).await;
    via.batch_execute(&pair.sql(
        "INSERT INTO {legacy} (tenant, note) VALUES ('acme', 'via proxy');
         UPDATE {legacy} SET amount = amount + 1 WHERE note = 'seed';
         DELETE FROM {legacy} WHERE note = 'doomed';
         TRUNCATE {legacy}",
    ))
    .await
    .unwrap_or_else(|e| panic!("through the proxy: {}", db_text(&e)));
    assert_eq!(pair.counts(&check).await, (0, 0));
    assert_eq!(
        firings().await,
        available_paths().await.len() as i64,
        "writes Tandem mirrored are not firings"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_lets_every_path_stand_and_names_it() {
    let (pair, check, proxy) = guarded("record", "dual_write").await;
    setup(&pair, &check).await;
    check
        .batch_execute("SET application_name = 'guard-record-test'")
        .await
        .unwrap();
    let table = format!("public.{}", pair.legacy);
    for path in available_paths().await {
        reseed(&pair, &proxy).await;
        let last: i64 = check
            .query_one(
                "SELECT coalesce(max(id), 0) FROM tandem.drift WHERE rule_table = $1",
                &[&table],
            )
            .await
            .unwrap()
            .get(0);
        let before = pair.legacy_rows(&check).await;
        run(&pair, &check, path)
            .await
            .unwrap_or_else(|e| panic!("{}: {}", path.name, db_text(&e)));
        assert_ne!(pair.legacy_rows(&check).await, before, "{}", path.name);
        let rows = check
            .query(
                "SELECT operation, rows, statement, role, application_name, source, target_table \
                 FROM tandem.drift WHERE rule_table = $1 AND id > $2 ORDER BY id",
                &[&table, &last],
            )
            .await
            .unwrap();
        assert!(!rows.is_empty(), "{}: no drift recorded", path.name);
        for row in &rows {
            let statement: String = row.get(2);
            assert_eq!(
                statement,
                pair.sql(path.statement),
                "{}: the drift names the statement",
                path.name
            );
            assert!(row.get::<_, i64>(1) > 0, "{}", path.name);
            assert_eq!(row.get::<_, String>(3), "postgres", "{}", path.name);
            assert_eq!(
                row.get::<_, String>(4),
                "guard-record-test",
                "{}",
                path.name
            );
            assert_eq!(row.get::<_, String>(5), "guard", "{}", path.name);
            assert_eq!(
                row.get::<_, String>(6),
                format!("public.{}", pair.target),
                "{}",
                path.name
            );
        }
        // The change stands on legacy only: put the pair back in parity for the next path.
        check
            .batch_execute(&pair.sql(
                "DELETE FROM {target}; INSERT INTO {target} SELECT * FROM {legacy}; \
                 UPDATE tandem.drift SET resolved = true WHERE NOT resolved",
            ))
            .await
            .unwrap();
    }
}

/// The transaction's inserted, updated and deleted target rows so far, counted by the
/// server.
async fn target_writes(via: &Client, pair: &Pair) -> (i64, i64, i64) {
    let row = via
        .query_one(
            &pair.sql(
                "SELECT coalesce(sum(n_tup_ins), 0)::int8, coalesce(sum(n_tup_upd), 0)::int8, \
                        coalesce(sum(n_tup_del), 0)::int8 \
                 FROM pg_stat_xact_user_tables \
                 WHERE relid IN (SELECT relid FROM pg_partition_tree('{target}'))",
            ),
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_the_proxy_are_applied_exactly_once() {
    // The same writes through the proxy on a pair with the guard and on one without: the
    // server's count of target rows written in each transaction is the same, so the guard
    // found nothing to do and wrote nothing (a second application would show as extra
    // inserts/updates/deletes).
    let (pair, check, proxy) = guarded("mirror", "dual_write").await;
    let (bare, _, bare_proxy) = guarded("off", "dual_write").await;
    let via = through(&proxy).await;
    let via_bare = through(&bare_proxy).await;
    for sql in [
        "INSERT INTO {legacy} (tenant, note) VALUES ('acme', 'one'), ('globex', 'two')",
        "UPDATE {legacy} SET amount = amount + 1",
        "UPDATE {legacy} SET tenant = 'globex' WHERE note = 'one'",
        "INSERT INTO {legacy} (tenant, note) VALUES ('acme', 'three') ON CONFLICT DO NOTHING",
        "DELETE FROM {legacy} WHERE note = 'two'",
    ] {
        let mut counts = Vec::new();
        for (via, pair) in [(&via, &pair), (&via_bare, &bare)] {
            via.batch_execute("BEGIN").await.unwrap();
            via.batch_execute(&pair.sql(sql))
                .await
                .unwrap_or_else(|e| panic!("{sql}: {}", db_text(&e)));
            counts.push(target_writes(via, pair).await);
            via.batch_execute("COMMIT").await.unwrap();
        }
        assert_ne!(counts[1], (0, 0, 0), "{sql}: the rewrite wrote the target");
        assert_eq!(counts[0], counts[1], "{sql}: with the guard vs without");
        assert_eq!(
            pair.drift(Kind::List, &check).await,
            Vec::<String>::new(),
            "{sql}"
        );
    }

    // One statement through the rewrite that also calls functions writing the same table:
    // in its RETURNING list, in a data-modifying CTE the statement does not read, and from
    // a user trigger on the legacy table. The rewrite mirrors its own rows, the guard the
    // functions' rows; none is left out, none applied twice.
    check
        .batch_execute(&pair.sql(
            "CREATE FUNCTION {legacy}_touch(n text) RETURNS text LANGUAGE plpgsql AS $$
             BEGIN
                 UPDATE {legacy} SET note = n || ' touched' WHERE note = 'one';
                 INSERT INTO {legacy} (tenant, note) VALUES ('globex', n || ' side row');
                 RETURN n;
             END $$;
             CREATE FUNCTION {legacy}_audit() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 IF NEW.note = 'with trigger' THEN
                     INSERT INTO {legacy} (tenant, note) VALUES ('acme', 'from user trigger');
                 END IF;
                 RETURN NULL;
             END $$;
             CREATE TRIGGER audit AFTER INSERT ON {legacy}
                 FOR EACH ROW EXECUTE FUNCTION {legacy}_audit()",
        ))
        .await
        .unwrap();
    for sql in [
        "INSERT INTO {legacy} (tenant, note) VALUES ('acme', 'returning') RETURNING {legacy}_touch(note)",
        "INSERT INTO {legacy} (tenant, note) VALUES ('acme', 'with trigger')",
        "WITH side AS (INSERT INTO {src} VALUES ('cte-' || {legacy}_touch('cte'), 1, 'x') RETURNING 1)
         UPDATE {legacy} SET amount = amount + 10 WHERE tenant = 'globex'",
    ] {
        let before = pair.counts(&check).await;
        via.batch_execute(&pair.sql(sql))
            .await
            .unwrap_or_else(|e| panic!("{sql}: {}", db_text(&e)));
        assert_ne!(pair.counts(&check).await, before, "{sql}: wrote nothing new");
        assert_eq!(
            pair.drift(Kind::List, &check).await,
            Vec::<String>::new(),
            "{sql}"
        );
    }
    let notes = rows_text(
        &check,
        &pair.sql("SELECT note FROM {target} WHERE note LIKE '%side row' OR note LIKE 'from user%' ORDER BY note"),
    )
    .await;
    assert_eq!(
        notes,
        ["cte side row", "from user trigger", "returning side row"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_cutover_the_guard_sits_on_the_target_and_mirrors_back() {
    let (pair, check, proxy) = guarded("mirror", "cutover").await;
    let via = through(&proxy).await;
    via.batch_execute(&pair.sql(
        "INSERT INTO {legacy} (id, tenant, note, amount, score, token, created_at) \
         VALUES (1, 'acme', 'seed', 1, 0, gen_random_uuid(), now()), \
                (2, 'globex', 'doomed', 2, 0, gen_random_uuid(), now())",
    ))
    .await
    .unwrap_or_else(|e| panic!("seed: {}", db_text(&e)));
    assert_eq!(pair.counts(&check).await, (2, 2));
    // Around the proxy, on the target (the table of record now): mirrored back to legacy.
    check
        .batch_execute(&pair.sql(
            "INSERT INTO {target} (id, tenant, note, amount, score, token, created_at) \
               VALUES (3, 'acme', 'direct on target', 3, 0, gen_random_uuid(), now());
             UPDATE {target} SET amount = amount + 1 WHERE note = 'seed';
             DELETE FROM {target} WHERE note = 'doomed';
             UPDATE {target}_acme SET note = 'partition write' WHERE id = 3",
        ))
        .await
        .unwrap_or_else(|e| panic!("direct: {}", db_text(&e)));
    assert_eq!(pair.drift(Kind::List, &check).await, Vec::<String>::new());
    assert_eq!(pair.counts(&check).await, (2, 2));
    // Through the proxy: the reverse rewrite writes legacy once, the guard nothing more.
    via.batch_execute("BEGIN").await.unwrap();
    via.batch_execute(&pair.sql("UPDATE {legacy} SET amount = amount + 1"))
        .await
        .unwrap();
    let legacy_updates: i64 = via
        .query_one(
            &pair.sql(
                "SELECT n_tup_upd FROM pg_stat_xact_user_tables WHERE relid = '{legacy}'::regclass",
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        legacy_updates, 2,
        "the mirror back updated each legacy row once"
    );
    via.batch_execute("COMMIT").await.unwrap();
    assert_eq!(pair.drift(Kind::List, &check).await, Vec::<String>::new());
    // A direct write to the legacy table is not guarded in cutover (it is the mirror now):
    // it shows as drift, as the runbook says.
    check
        .batch_execute(&pair.sql("UPDATE {legacy} SET note = 'behind' WHERE id = 1"))
        .await
        .unwrap();
    assert_eq!(pair.drift(Kind::List, &check).await.len(), 2);
}
