//! Access rules and the move to the target: with row level security on the legacy table
//! and not on the target, `union_read` (which reads the target) would show an application
//! role every tenant's rows. The switch is refused, naming each difference; once the target
//! has the same policy and privileges, the role sees through Tandem exactly what it sees
//! directly.

use tandem::control::store::change::{self, RuleChange};
use tandem::control::store::Store;
use tandem_rules::{Mode, TableName};
use tandem_tests::mirror::{config_with, db_text, start_ruled_proxy, Kind, Pair};
use tandem_tests::{connect_url, pg, proxy_url, through, unique};
use tokio_postgres::Client;

async fn count(client: &Client, sql: &str) -> i64 {
    client
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", db_text(&e)))
        .get(0)
}

/// A LIST pair, an application role (`grants`, with `{role}` for its name) and a policy on
/// the legacy table only: the role sees the rows of the tenant in `app.tenant`.
async fn tenant_policy_on_legacy(grants: &str) -> (Client, Pair, String) {
    let check = pg().direct().await;
    let pair = Pair::new(Kind::List);
    pair.create(Kind::List, &check).await;
    let role = unique("app");
    check
        .batch_execute(&pair.sql(&format!(
            "CREATE ROLE {role} LOGIN;
             {}
             ALTER TABLE {{legacy}} ENABLE ROW LEVEL SECURITY;
             CREATE POLICY tenant_only ON {{legacy}} TO {role}
                 USING (tenant = current_setting('app.tenant', true));",
            grants.replace("{role}", &role)
        )))
        .await
        .unwrap();
    (check, pair, role)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn union_read_is_refused_while_the_target_lacks_the_legacy_tables_policy() {
    let (check, pair, role) = tenant_policy_on_legacy(
        "GRANT SELECT, INSERT, UPDATE, DELETE ON {legacy} TO {role};
         GRANT USAGE ON SEQUENCE {legacy}_id_seq TO {role};",
    )
    .await;
    let config = config_with(&[pair.rule(Kind::List)]);
    let store = Store::new(&config.store.schema);
    let access_check = |config: tandem::Config| {
        let legacy = pair.legacy.clone();
        async move {
            let options = tandem::ops::parity::Options {
                tables: vec![TableName::new(Some("public"), &legacy)],
                min_overlap: 0.95,
                min_samples: 0,
                sample_limit: 20,
                strict_indexes: false,
                ..Default::default()
            };
            let report = tandem::ops::parity::run(&config, &options)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let table = report.tables[0].clone();
            let check = table
                .checks
                .iter()
                .find(|c| c.name == "access")
                .expect("an access check")
                .clone();
            (check.ok, check.detail, table.access.len())
        }
    };
    let proxy = start_ruled_proxy(config.clone()).await;
    let via = through(&proxy).await;
    via.batch_execute(&pair.sql(
        "INSERT INTO {legacy} (tenant, note) SELECT t, 'row ' || g \
         FROM unnest(ARRAY['acme', 'globex', 'umbrella']) t, generate_series(1, 10) g",
    ))
    .await
    .unwrap();
    assert_eq!(pair.counts(&check).await, (30, 30));

    let as_app = |url: String| async move {
        let client = connect_url(&url).await;
        client
            .batch_execute("SET app.tenant = 'acme'")
            .await
            .unwrap();
        client
    };
    let direct = as_app(pg().direct_url(&role)).await;
    let legacy_count = format!("SELECT count(*) FROM {}", pair.legacy);
    assert_eq!(count(&direct, &legacy_count).await, 10, "one tenant's rows");

    let mut admin = pg().direct().await;
    let table = TableName::parse(&format!("public.{}", pair.legacy)).unwrap();
    let switch = |mode: Mode| RuleChange::SetMode {
        table: table.clone(),
        mode,
        force: false,
    };
    let e = change::apply(&mut admin, &store, switch(Mode::UnionRead), "test")
        .await
        .expect_err("union_read with a target that lacks the policy is refused");
    assert_eq!(e.sqlstate, "55000", "{e:?}");
    let (ok, detail, n) = access_check(config.clone()).await;
    assert!(
        !ok && n == 7 && detail.contains("policy tenant_only"),
        "{detail}"
    );
    assert!(
        e.message.contains("policy tenant_only")
            && e.message.contains("row level security enabled")
            && e.message.contains(&format!("privilege SELECT to {role}")),
        "{}",
        e.message
    );
    // The same policy, flags and privileges on the target: the switch goes through.
    check
        .batch_execute(&pair.sql(&format!(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON {{target}} TO {role};
             ALTER TABLE {{target}} ENABLE ROW LEVEL SECURITY;
             CREATE POLICY tenant_only ON {{target}} TO {role}
                 USING (tenant = current_setting('app.tenant', true));"
        )))
        .await
        .unwrap();
    let (ok, detail, _) = access_check(config.clone()).await;
    assert!(ok, "{detail}");
    change::apply(&mut admin, &store, switch(Mode::UnionRead), "test")
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    // Reads through Tandem now come from the target: the role sees exactly its rows.
    tandem_tests::mirror::wait_for_mode(&proxy, Mode::UnionRead).await;
    let through_tandem = as_app(proxy_url(&proxy, &role)).await;
    assert_eq!(count(&through_tandem, &legacy_count).await, 10);
    let notes = format!(
        "SELECT count(*) FROM {} WHERE tenant <> 'acme'",
        pair.legacy
    );
    assert_eq!(count(&through_tandem, &notes).await, 0);
    assert_eq!(count(&direct, &notes).await, 0);

    // And in the modes after it, where reads and writes are the target's: the same rows.
    pair.copy_defaults(&check).await;
    tandem::ops::backfill::run(
        &config,
        &tandem::ops::backfill::Options::new(table.clone()),
        &mut |_| {},
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    for mode in [Mode::Cutover, Mode::TargetOnly] {
        change::apply(&mut admin, &store, switch(mode), "test")
            .await
            .unwrap_or_else(|e| panic!("{mode}: {e:?}"));
        tandem_tests::mirror::wait_for_mode(&proxy, mode).await;
        let through_tandem = as_app(proxy_url(&proxy, &role)).await;
        assert_eq!(count(&through_tandem, &legacy_count).await, 10, "{mode}");
        assert_eq!(count(&through_tandem, &notes).await, 0, "{mode}");
    }
}

/// Shadow reads run as the application's role, with its settings: a policy only the legacy
/// table has shows as an overlap difference, not as a perfect overlap read by a superuser.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_reads_run_with_the_applications_role_and_settings() {
    let (check, pair, role) = tenant_policy_on_legacy(
        "GRANT SELECT, INSERT, UPDATE, DELETE ON {legacy}, {target} TO {role};",
    )
    .await;
    let config = config_with(&[pair.rule(Kind::List).sample(1.0)]);
    let proxy = start_ruled_proxy(config.clone()).await;
    let via = through(&proxy).await;
    via.batch_execute(&pair.sql(
        "INSERT INTO {legacy} (tenant, note) SELECT t, 'row ' || g \
         FROM unnest(ARRAY['acme', 'globex', 'umbrella']) t, generate_series(1, 10) g",
    ))
    .await
    .unwrap();
    let samples = format!("\"{}\".shadow_samples", config.store.schema);
    let newest = |after: i64| {
        let samples = samples.clone();
        let check = &check;
        async move {
            for _ in 0..500 {
                let row = check
                    .query_opt(
                        &format!(
                            "SELECT id, legacy_rows, target_rows, overlap FROM {samples} \
                             WHERE id > $1 ORDER BY id DESC LIMIT 1"
                        ),
                        &[&after],
                    )
                    .await
                    .unwrap();
                if let Some(r) = row {
                    return (
                        r.get::<_, i64>(0),
                        r.get::<_, i32>(1),
                        r.get::<_, i32>(2),
                        r.get::<_, f64>(3),
                    );
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            panic!("no shadow sample recorded");
        }
    };
    let app = connect_url(&proxy_url(&proxy, &role)).await;
    app.batch_execute("SET app.tenant = 'acme'").await.unwrap();
    let read = format!("SELECT id, note FROM {} ORDER BY id", pair.legacy);
    assert_eq!(app.query(&read, &[]).await.unwrap().len(), 10);
    // The target has no policy: under the application's role and app.tenant the legacy
    // read sees 10 rows, the target 30.
    let (id, legacy_rows, target_rows, overlap) = newest(0).await;
    assert_eq!((legacy_rows, target_rows), (10, 30), "overlap {overlap}");
    assert!(overlap < 0.5, "{overlap}");

    // The same policy on the target: the next sample agrees.
    check
        .batch_execute(&pair.sql(&format!(
            "ALTER TABLE {{target}} ENABLE ROW LEVEL SECURITY;
             CREATE POLICY tenant_only ON {{target}} TO {role}
                 USING (tenant = current_setting('app.tenant', true));"
        )))
        .await
        .unwrap();
    app.batch_execute("SET app.tenant = 'globex'")
        .await
        .unwrap();
    assert_eq!(app.query(&read, &[]).await.unwrap().len(), 10);
    let (_, legacy_rows, target_rows, overlap) = newest(id).await;
    assert_eq!((legacy_rows, target_rows, overlap), (10, 10, 1.0));
}
