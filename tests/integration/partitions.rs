//! `tandem partitions list|ensure|skew` on targets made by `tandem init`.

use tandem::ops::init::{self, Layout, Options};
use tandem::ops::parity;
use tandem::ops::partitions::{self, Ensure};
use tandem_rules::TableName;
use tandem_tests::mirror::{config_with, db_text, start_ruled_proxy};
use tandem_tests::{pg, through, unique};

async fn setup(layout: &str) -> (tokio_postgres::Client, String, tandem::Config) {
    let check = pg().direct().await;
    let t = unique("parts");
    check
        .batch_execute(&format!(
            "CREATE TABLE {t} (id bigserial PRIMARY KEY, tenant text NOT NULL,
                created_at timestamptz NOT NULL DEFAULT now());
             INSERT INTO {t} (tenant) SELECT (ARRAY['acme','acme','acme','globex'])[1 + g % 4]
               FROM generate_series(1, 400) g;"
        ))
        .await
        .unwrap();
    let mut config = config_with(&[]);
    config.store.enabled = Some(true);
    init::run(
        &config,
        &Options {
            table: TableName::new(Some("public"), &t),
            target: None,
            layout: Layout::parse(layout).unwrap(),
            no_default: false,
            dry_run: false,
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    (check, t, config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_value_gets_its_partition_and_its_rows_leave_default() {
    let (check, t, config) = setup("list(tenant)").await;
    let table = TableName::new(Some("public"), &t);
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
    // A brand-new tenant: its mirrored rows land in DEFAULT (no 23514).
    via.batch_execute(&format!(
        "INSERT INTO {t} (tenant) VALUES ('initech'), ('initech')"
    ))
    .await
    .unwrap_or_else(|e| panic!("{}", db_text(&e)));
    let created = partitions::ensure(&config, &table, Ensure::Value("initech".into()))
        .await
        .unwrap();
    assert_eq!(created, vec![format!("public.{t}_v2_initech")]);
    // init analysed the target; ensure the partition it made and the DEFAULT it emptied.
    // (PostgreSQL 13's pg_stat_all_tables has no row for a partitioned table itself.)
    let parent = (tandem_tests::server_major().await >= 14).then(|| format!("{t}_v2"));
    for table in parent
        .into_iter()
        .chain([format!("{t}_v2_initech"), format!("{t}_v2_default")])
    {
        // Before PostgreSQL 15 the statistics collector reports an ANALYZE a moment later,
        // so the check waits for the report (bounded) rather than reading it once.
        let mut analysed = false;
        for _ in 0..100 {
            analysed = check
                .query_one(
                    "SELECT last_analyze IS NOT NULL FROM pg_stat_all_tables WHERE relid = $1::text::regclass",
                    &[&table],
                )
                .await
                .unwrap()
                .get(0);
            if analysed {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(analysed, "{table} is analysed");
    }
    let in_new: i64 = check
        .query_one(&format!("SELECT count(*) FROM {t}_v2_initech"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(in_new, 2, "the rows moved out of DEFAULT");
    let in_default: i64 = check
        .query_one(
            &format!("SELECT count(*) FROM {t}_v2_default WHERE tenant = 'initech'"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(in_default, 0);
    // Idempotent, also racing: two at once create nothing twice and fail nothing.
    let (a, b) = tokio::join!(
        partitions::ensure(&config, &table, Ensure::AllKnown),
        partitions::ensure(&config, &table, Ensure::AllKnown)
    );
    assert!(a.unwrap().is_empty() && b.unwrap().is_empty());
    // New writes for that tenant go to its partition.
    via.batch_execute(&format!("INSERT INTO {t} (tenant) VALUES ('initech')"))
        .await
        .unwrap();
    let (_, parts) = partitions::list(&config, &table).await.unwrap();
    assert_eq!(parts.len(), 4, "acme, globex, initech, DEFAULT");
    let (_, skew) = partitions::skew(&config, &table, 2.0, 5.0).await.unwrap();
    let rows: i64 = skew.partitions.iter().map(|p| p.rows).sum();
    assert_eq!(
        rows, 3,
        "only the mirrored writes are in the target (no backfill yet)"
    );
    assert!(skew.empty.iter().any(|p| p.ends_with("_acme")));
    assert!(
        matches!(skew.verdict, "WARNING" | "REBALANCE"),
        "{}",
        skew.verdict
    );

    // The same in the admin console.
    let mut console_config = config.clone();
    console_config.admin = Some(tandem::config::AdminConfig {
        user: "admin".into(),
        password: Some("pw".into()),
        password_env: None,
    });
    let console = start_ruled_proxy(console_config).await;
    let out = tandem::ops::rules::run(
        &format!(
            "postgres://admin:pw@127.0.0.1:{}/tandem",
            console.addr.port()
        ),
        &format!("SHOW PARTITIONS {t}"),
    )
    .await
    .unwrap();
    assert!(
        out.contains(&format!("{t}_v2_initech")) && out.contains(skew.verdict),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn months_ahead_and_wrong_requests() {
    let (_check, t, config) = setup("range(created_at) monthly months-ahead 1").await;
    let table = TableName::new(Some("public"), &t);
    let created = partitions::ensure(&config, &table, Ensure::MonthsAhead(4))
        .await
        .unwrap();
    assert_eq!(created.len(), 3, "months 2..4 ahead: {created:?}");
    assert!(partitions::ensure(&config, &table, Ensure::MonthsAhead(4))
        .await
        .unwrap()
        .is_empty());
    let err = partitions::ensure(&config, &table, Ensure::Value("x".into()))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("RANGE") && err.contains("--value x does not apply"),
        "{err}"
    );
    // Every partition is empty (no backfill yet), yet none is a candidate to drop: the past
    // months hold legacy rows, the others are the current month or later, and DEFAULT.
    let (_, skew) = partitions::skew(&config, &table, 2.0, 5.0).await.unwrap();
    assert!(skew.partitions.len() > 5 && skew.empty.len() == skew.partitions.len());
    assert!(skew.droppable.is_empty(), "{:?}", skew.droppable);

    let (_check, t, config) = setup("hash(id) 4").await;
    let table = TableName::new(Some("public"), &t);
    let (_, skew) = partitions::skew(&config, &table, 2.0, 5.0).await.unwrap();
    assert_eq!(skew.partitions.len(), 4);
    let err = partitions::ensure(&config, &table, Ensure::AllKnown)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("HASH"), "{err}");
}

/// A legacy table of 60 rows over the last six months and its monthly RANGE target built by
/// `tandem init` (rule in `off`): the table's name, the config and its qualified name.
async fn six_months(prefix: &str) -> (String, tandem::Config, TableName) {
    let check = pg().direct().await;
    let t = unique(prefix);
    check
        .batch_execute(&format!(
            "CREATE TABLE {t} (id bigserial PRIMARY KEY, created_at timestamptz NOT NULL);
             INSERT INTO {t} (created_at) SELECT now() - (g % 6) * interval '1 month' FROM generate_series(1, 60) g;"
        ))
        .await
        .unwrap();
    let mut config = config_with(&[]);
    config.store.enabled = Some(true);
    let table = TableName::new(Some("public"), &t);
    init::run(
        &config,
        &Options {
            table: table.clone(),
            target: None,
            layout: Layout::parse("range(created_at) monthly").unwrap(),
            no_default: false,
            dry_run: false,
        },
    )
    .await
    .unwrap();
    (t, config, table)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_months_are_retired_from_both_tables() {
    let check = pg().direct().await;
    let (t, config, table) = six_months("retire").await;
    check
        .batch_execute(&format!(
            "UPDATE \"{}\".rules SET mode = 'dual_write' WHERE table_name = 'public.{t}';
             INSERT INTO {t}_v2 SELECT * FROM {t};",
            config.store.schema
        ))
        .await
        .unwrap();
    // The dry run (no flags) gives its plan; --apply without --allow-delete is refused,
    // carrying the same plan, since legacy rows go one by one.
    let plan = partitions::retire(&config, &table, 3, false, false)
        .await
        .unwrap();
    assert!(!plan.applied);
    assert_eq!(plan.partitions.len(), 2, "{:?}", plan.steps);
    assert_eq!(plan.legacy_rows, 20);
    match partitions::retire(&config, &table, 3, true, false).await {
        Err(e @ partitions::PartitionsError::RowDeleteNotAllowed(_)) => {
            assert!(e.to_string().contains("--allow-delete"), "{e}");
            let partitions::PartitionsError::RowDeleteNotAllowed(refused) = e else {
                unreachable!()
            };
            assert_eq!(refused.steps, plan.steps);
        }
        other => panic!("{other:?}"),
    }
    let done = partitions::retire(&config, &table, 3, true, true)
        .await
        .unwrap();
    assert!(done.applied);
    let counts: (i64, i64) = {
        let r = check
            .query_one(
                &format!("SELECT (SELECT count(*) FROM {t}), (SELECT count(*) FROM {t}_v2)"),
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(counts, (40, 40), "4 months of 10 rows kept in both");
    let (_, parts) = partitions::list(&config, &table).await.unwrap();
    assert!(parts.iter().all(|p| !done.partitions.contains(&p.name)));
}

/// Issue 16: `retire` deleted every legacy row older than the cutoff but dropped only the
/// monthly partitions, so the target's rows of those months in DEFAULT stayed (parity: extra).
/// Under each guard policy, the legacy delete and the target removal cover the same rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retire_removes_the_same_rows_from_both_tables_default_partition_included() {
    for (mode, guard) in [
        ("dual_write", "mirror"),
        ("dual_write", "record"),
        ("cutover", "fail"),
    ] {
        let check = pg().direct().await;
        let (t, config, table) = six_months("retire_def").await;
        check
            .batch_execute(&format!(
                "INSERT INTO {t}_v2 SELECT * FROM {t};
                 UPDATE \"{}\".rules SET mode = '{mode}', guard = '{guard}' WHERE table_name = 'public.{t}';",
                config.store.schema
            ))
            .await
            .unwrap();
        let proxy = start_ruled_proxy(config.clone()).await;
        let via = through(&proxy).await;
        // Older than the legacy table's first month: the target has no partition for it, so
        // the mirrored row lands in DEFAULT.
        via.batch_execute(&format!(
            "INSERT INTO {t} (created_at) VALUES ('2025-06-15 12:00:00+00')"
        ))
        .await
        .unwrap_or_else(|e| panic!("{}", db_text(&e)));
        let in_default: i64 = check
            .query_one(&format!("SELECT count(*) FROM {t}_v2_default"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(in_default, 1, "{mode}/{guard}: the old row sits in DEFAULT");

        let plan = partitions::retire(&config, &table, 3, false, false)
            .await
            .unwrap_or_else(|e| panic!("{mode}/{guard}: dry run: {e}"));
        assert!(!plan.applied);
        assert_eq!(plan.partitions.len(), 2, "{mode}/{guard}: {:?}", plan.steps);
        assert_eq!(
            (plan.legacy_rows, plan.target_rows),
            (21, 1),
            "{mode}/{guard}"
        );
        let refused = partitions::retire(&config, &table, 3, true, false)
            .await
            .unwrap_err()
            .to_string();
        assert!(refused.contains("--allow-delete"), "{refused}");
        let done = partitions::retire(&config, &table, 3, true, true)
            .await
            .unwrap_or_else(|e| panic!("{mode}/{guard}: {e}"));
        assert!(done.applied);
        let left: (i64, i64) = {
            let r = check
                .query_one(
                    &format!("SELECT (SELECT count(*) FROM {t}), (SELECT count(*) FROM {t}_v2)"),
                    &[],
                )
                .await
                .unwrap();
            (r.get(0), r.get(1))
        };
        assert_eq!(
            left,
            (40, 40),
            "{mode}/{guard}: 4 months of 10 rows kept in both"
        );
        let report = parity::run(
            &config,
            &parity::Options {
                tables: vec![table.clone()],
                min_overlap: 0.95,
                min_samples: 0,
                sample_limit: 5,
                strict_indexes: false,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let r = &report.tables[0];
        assert_eq!(
            (
                r.missing.count,
                r.extra.count,
                r.different.count,
                r.unresolved_drift
            ),
            (0, 0, 0, 0),
            "{mode}/{guard}: extra {:?}",
            r.extra.sample_keys
        );
        // Nothing left to retire: an applied run says so and changes nothing.
        let again = partitions::retire(&config, &table, 3, true, true)
            .await
            .unwrap();
        assert!(
            again.steps.is_empty() && !again.applied,
            "{:?}",
            again.steps
        );
        drop(proxy);
    }
}
