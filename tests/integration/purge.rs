//! `tandem purge`: one scope out of both tables, under live dual-write traffic.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tandem::ops::init::{self, Layout};
use tandem::ops::parity;
use tandem::ops::purge::{self, Options, PurgeMode};
use tandem_rules::TableName;
use tandem_tests::mirror::{config_with, db_text, start_ruled_proxy};
use tandem_tests::{pg, through, unique};

async fn setup() -> (tokio_postgres::Client, String, tandem::Config) {
    let check = pg().direct().await;
    let t = unique("purge");
    check
        .batch_execute(&format!(
            "CREATE TABLE {t} (id bigserial PRIMARY KEY, tenant text NOT NULL, n int NOT NULL DEFAULT 0);
             INSERT INTO {t} (tenant) SELECT (ARRAY['acme','globex','initech'])[1 + g % 3] FROM generate_series(1, 600) g;"
        ))
        .await
        .unwrap();
    let mut config = config_with(&[]);
    config.store.enabled = Some(true);
    init::run(
        &config,
        &init::Options {
            table: TableName::new(Some("public"), &t),
            target: None,
            layout: Layout::parse("list(tenant)").unwrap(),
            no_default: false,
            dry_run: false,
        },
    )
    .await
    .unwrap();
    check
        .batch_execute(&format!(
            "UPDATE \"{}\".rules SET mode = 'dual_write' WHERE table_name = 'public.{t}';
             INSERT INTO {t}_v2 SELECT * FROM {t};",
            config.store.schema
        ))
        .await
        .unwrap();
    (check, t, config)
}

fn options(t: &str, mode: PurgeMode, apply: bool) -> Options {
    Options {
        table: TableName::new(Some("public"), t),
        column: "tenant".into(),
        value: "globex".into(),
        mode,
        apply,
        fail_on_delete: false,
        batch_size: 50,
    }
}

async fn divergence(config: &tandem::Config, t: &str) -> i64 {
    let r = parity::run(
        config,
        &parity::Options {
            tables: vec![TableName::new(Some("public"), t)],
            min_overlap: 0.95,
            min_samples: 0,
            sample_limit: 5,
            strict_indexes: false,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    r.tables[0].divergence + r.tables[0].missing.count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_under_live_traffic_leaves_no_divergence() {
    for mode in [PurgeMode::Auto, PurgeMode::Delete] {
        let (check, t, config) = setup().await;
        let proxy = start_ruled_proxy(config.clone()).await;
        // Dry run: a plan, nothing changed.
        let plan = purge::run(&config, &options(&t, mode, false))
            .await
            .unwrap();
        assert!(!plan.applied && !plan.steps.is_empty());
        assert_eq!((plan.legacy_rows, plan.target_rows), (200, 200));
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let via = through(&proxy).await;
            let stop = Arc::clone(&stop);
            let t = t.clone();
            tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let tenant = ["acme", "globex", "initech"][i % 3];
                    via.execute(&format!("INSERT INTO {t} (tenant) VALUES ($1)"), &[&tenant])
                        .await
                        .unwrap_or_else(|e| panic!("{}", db_text(&e)));
                    via.execute(
                        &format!("UPDATE {t} SET n = n + 1 WHERE id = $1"),
                        &[&(i as i64)],
                    )
                    .await
                    .unwrap_or_else(|e| panic!("{}", db_text(&e)));
                }
                i
            })
        };
        tokio::time::sleep(Duration::from_millis(150)).await;
        let done = purge::run(&config, &options(&t, mode, true)).await.unwrap();
        assert!(done.applied, "{mode:?}");
        tokio::time::sleep(Duration::from_millis(150)).await;
        stop.store(true, Ordering::Relaxed);
        assert!(writer.await.unwrap() > 10);
        assert_eq!(
            divergence(&config, &t).await,
            0,
            "{mode:?}: {:?}",
            done.steps
        );
        // Only rows written after the purge are left for the scope.
        let left: i64 = check
            .query_one(
                &format!("SELECT count(*) FROM {t} WHERE tenant = 'globex' AND id <= 600"),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(left, 0, "{mode:?}");
        if mode == PurgeMode::Auto {
            assert!(done.steps[0].starts_with("LOCK TABLE"), "{:?}", done.steps);
            assert!(done.steps[1].starts_with("TRUNCATE"), "{:?}", done.steps);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals() {
    let (_check, t, config) = setup().await;
    let mut o = options(&t, PurgeMode::Auto, false);
    o.fail_on_delete = true;
    let err = purge::run(&config, &o).await.unwrap_err().to_string();
    assert!(err.contains("row-by-row"), "{err}");
    let mut o = options(&t, PurgeMode::Partition, false);
    o.value = "nobody".into();
    let err = purge::run(&config, &o).await.unwrap_err().to_string();
    assert!(err.contains("no partition"), "{err}");
    assert!(purge::parse_scope("tenant").is_err());
    assert_eq!(
        purge::parse_scope("tenant = 'o''brien'").unwrap(),
        ("tenant".to_string(), "o'brien".to_string())
    );
}
