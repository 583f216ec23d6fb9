//! `tandem init`: the target built from the legacy table, for every layout, and usable by
//! dual-write at once.

use tandem::ops::init::{self, Layout, Options};
use tandem_rules::TableName;
use tandem_tests::mirror::{config_with, db_text, start_ruled_proxy};
use tandem_tests::{pg, through, unique};

/// A legacy table with a serial key, a unique email, a plain index, a CHECK, a generated
/// column and three months of rows.
async fn legacy() -> (tokio_postgres::Client, String) {
    let check = pg().direct().await;
    let t = unique("init");
    check
        .batch_execute(&format!(
            "CREATE TABLE {t} (id bigserial PRIMARY KEY, tenant text NOT NULL, email text NOT NULL,
                amount numeric(10,2) NOT NULL DEFAULT 0 CHECK (amount >= 0),
                created_at timestamptz NOT NULL DEFAULT now(),
                doubled numeric GENERATED ALWAYS AS (amount * 2) STORED);
             CREATE UNIQUE INDEX ON {t} (email);
             CREATE INDEX ON {t} (created_at);
             CREATE INDEX ON {t} (lower(email));
             INSERT INTO {t} (tenant, email, amount, created_at)
               SELECT (ARRAY['acme','globex'])[1 + g % 2], 'u' || g || '@x', g,
                      now() - (g % 3) * interval '1 month' FROM generate_series(1, 30) g;"
        ))
        .await
        .unwrap_or_else(|e| panic!("{}", db_text(&e)));
    (check, t)
}

fn options(t: &str, layout: &str, dry_run: bool) -> Options {
    Options {
        table: TableName::new(Some("public"), t),
        target: None,
        layout: Layout::parse(layout).unwrap(),
        no_default: false,
        dry_run,
    }
}

async fn partitions(check: &tokio_postgres::Client, table: &str) -> i64 {
    check
        .query_one(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = to_regclass($1)",
            &[&table],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_layout_builds_a_target_dual_write_can_use() {
    for (layout, expected_partitions) in [
        ("list(tenant)", 3), // acme, globex, DEFAULT
        ("hash(id) 4", 4),
        ("range(created_at) monthly months-ahead 2", 6), // 3 past months + current.. + 2 ahead + DEFAULT
        ("list(tenant) range(created_at) monthly", 3), // acme, globex (each sub-partitioned), DEFAULT
    ] {
        let (check, t) = legacy().await;
        let config = config_with(&[]);
        let mut config = config;
        config.store.enabled = Some(true);
        // Dry run first: nothing created.
        let dry = init::run(&config, &options(&t, layout, true))
            .await
            .unwrap();
        assert!(!dry.applied);
        assert!(
            dry.ddl[0].starts_with(&format!("CREATE TABLE public.{t}_v2 (")),
            "{}",
            dry.ddl[0]
        );
        let exists: bool = check
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&format!("{t}_v2")])
            .await
            .unwrap()
            .get(0);
        assert!(!exists, "{layout}: dry run created nothing");

        let report = init::run(&config, &options(&t, layout, false))
            .await
            .unwrap_or_else(|e| panic!("{layout}: {e}"));
        assert!(report.applied);
        let target = format!("{t}_v2");
        let n = partitions(&check, &target).await;
        if layout.starts_with("range") {
            assert!(n >= expected_partitions, "{layout}: {n} partitions");
        } else {
            assert_eq!(n, expected_partitions, "{layout}");
        }
        // Unique keys carry the partition key; the expression index is reported, not made.
        let parity = report.index_parity.join("\n");
        assert!(parity.contains("expression or partial index"), "{parity}");
        assert!(parity.contains("email"), "{parity}");
        // The rule was added in mode off; switch it on and write through a proxy.
        let schema = config.store.schema.clone();
        check
            .execute(
                &format!("UPDATE \"{schema}\".rules SET mode = 'dual_write' WHERE table_name = $1"),
                &[&format!("public.{t}")],
            )
            .await
            .unwrap();
        let proxy = start_ruled_proxy(config.clone()).await;
        let via = through(&proxy).await;
        via.execute(
            &format!("INSERT INTO {t} (tenant, email, amount) VALUES ('acme', 'new@x', 5)"),
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("{layout}: {}", db_text(&e)));
        let copied: i64 = check
            .query_one(
                &format!("SELECT count(*) FROM {target} WHERE email = 'new@x' AND doubled = 10"),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(copied, 1, "{layout}: mirrored into the new target");
        // The CHECK came along.
        let err = check
            .execute(
                &format!(
                    "INSERT INTO {target} (id, tenant, email, amount) VALUES (-1, 'acme', 'neg@x', -1)"
                ),
                &[],
            )
            .await
            .expect_err("CHECK (amount >= 0) copied");
        assert_eq!(tandem_tests::mirror::sqlstate(&err), "23514");
        // A target tandem init built passes every schema check (the expression index it
        // does not make is a warning).
        let report = tandem::ops::parity::run(
            &config,
            &tandem::ops::parity::Options {
                tables: vec![TableName::new(Some("public"), &t)],
                min_overlap: 0.95,
                min_samples: 0,
                sample_limit: 5,
                strict_indexes: false,
                ..Default::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{layout}: {e}"));
        let schema = &report.tables[0].schema;
        assert!(
            schema.holds
                && schema.warnings.len() == 1
                && schema.warnings[0].contains("lower(email)"),
            "{layout}: {schema:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impossible_layouts_are_refused() {
    let (_check, t) = legacy().await;
    let mut config = config_with(&[]);
    config.store.enabled = Some(true);
    assert!(Layout::parse("list-mod(id) 100").is_err());
    let err = init::run(&config, &options(&t, "list(nope)", true))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a column"), "{err}");
    let err = init::run(&config, &options(&t, "list(doubled)", true))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("generated"), "{err}");
    init::run(&config, &options(&t, "hash(id) 2", false))
        .await
        .unwrap();
    let err = init::run(&config, &options(&t, "hash(id) 2", false))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("already exists"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_target_gets_the_legacy_tables_access_rules() {
    let (check, t) = legacy().await;
    let role = unique("reader");
    check
        .batch_execute(&format!(
            "CREATE ROLE {role};
             GRANT SELECT, UPDATE ON {t} TO {role};
             GRANT INSERT (tenant, email) ON {t} TO {role};
             ALTER TABLE {t} ENABLE ROW LEVEL SECURITY;
             ALTER TABLE {t} FORCE ROW LEVEL SECURITY;
             CREATE POLICY own_tenant ON {t} FOR SELECT TO {role}
                 USING (tenant = current_setting('app.tenant', true));
             CREATE POLICY no_big ON {t} AS RESTRICTIVE FOR UPDATE TO PUBLIC
                 USING (true) WITH CHECK (amount < 1000);"
        ))
        .await
        .unwrap_or_else(|e| panic!("{}", db_text(&e)));
    let mut config = config_with(&[]);
    config.store.enabled = Some(true);
    let report = init::run(&config, &options(&t, "list(tenant)", false))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        report
            .ddl
            .iter()
            .any(|s| s.starts_with("CREATE POLICY own_tenant")),
        "{:?}",
        report.ddl
    );
    let legacy = TableName::new(Some("public"), &t);
    let target = TableName::new(Some("public"), &format!("{t}_v2"));
    let differences = tandem::control::access::differences(&check, &legacy, &target)
        .await
        .unwrap();
    assert!(differences.is_empty(), "{differences:?}");
}
