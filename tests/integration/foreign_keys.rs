//! Foreign keys that reference the legacy table: `target_only` would check new child rows
//! against a table that no longer receives writes. It is refused, naming each key and the
//! statements that re-point it; `tandem parity` fails its `foreign_keys` check; after the
//! re-pointing, the walk goes through and new parents and children are written through
//! Tandem.

use tandem::control::store::change::{self, RuleChange};
use tandem::control::store::Store;
use tandem_rules::{Mode, TableName};
use tandem_tests::mirror::{config_with, db_text, start_ruled_proxy, Kind, Pair};
use tandem_tests::{pg, through};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_only_is_refused_while_a_foreign_key_references_the_legacy_table() {
    let check = pg().direct().await;
    let pair = Pair::new(Kind::Hash);
    pair.create(Kind::Hash, &check).await;
    pair.copy_defaults(&check).await;
    check
        .batch_execute(&pair.sql(
            "CREATE TABLE {legacy}_lines (id bigserial PRIMARY KEY, \
             order_id bigint NOT NULL REFERENCES {legacy} (id), n int)",
        ))
        .await
        .unwrap();
    let config = config_with(&[pair.rule(Kind::Hash)]);
    let store = Store::new(&config.store.schema);
    let proxy = start_ruled_proxy(config.clone()).await;
    let via = through(&proxy).await;
    via.batch_execute(&pair.sql(
        "INSERT INTO {legacy} (tenant, note) SELECT 'acme', 'o' || g FROM generate_series(1, 5) g;
         INSERT INTO {legacy}_lines (order_id, n) SELECT id, 1 FROM {legacy}",
    ))
    .await
    .unwrap();
    let mut admin = pg().direct().await;
    let table = TableName::parse(&format!("public.{}", pair.legacy)).unwrap();
    let switch = |mode: Mode| RuleChange::SetMode {
        table: table.clone(),
        mode,
        force: false,
    };
    change::apply(&mut admin, &store, switch(Mode::Cutover), "test")
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    let e = change::apply(&mut admin, &store, switch(Mode::TargetOnly), "test")
        .await
        .expect_err("target_only with a foreign key to legacy is refused");
    assert_eq!(e.sqlstate, "55000", "{e:?}");
    let constraint = format!("{}_lines_order_id_fkey", pair.legacy);
    assert!(
        e.message.contains(&constraint) && e.message.contains("re-point it to"),
        "{}",
        e.message
    );

    let options = tandem::ops::parity::Options {
        tables: vec![table.clone()],
        min_overlap: 0.95,
        min_samples: 0,
        sample_limit: 20,
        strict_indexes: false,
        ..Default::default()
    };
    let report = tandem::ops::parity::run(&config, &options).await.unwrap();
    let fk = report.tables[0]
        .checks
        .iter()
        .find(|c| c.name == "foreign_keys")
        .expect("a foreign_keys check")
        .clone();
    assert!(!fk.ok && fk.detail.contains(&constraint), "{fk:?}");

    // Re-point it as the report says.
    let target = TableName::parse(&format!("public.{}", pair.target)).unwrap();
    let problems = tandem::control::foreign_keys::problems(&check, &table, &target)
        .await
        .unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    let statements = problems[0]
        .fix
        .split_once(": ")
        .map(|(_, sql)| sql.to_string())
        .expect("the fix names the statements");
    check
        .batch_execute(&statements)
        .await
        .unwrap_or_else(|e| panic!("{statements}: {}", db_text(&e)));
    let report = tandem::ops::parity::run(&config, &options).await.unwrap();
    assert!(report.tables[0]
        .checks
        .iter()
        .any(|c| c.name == "foreign_keys" && c.ok));
    change::apply(&mut admin, &store, switch(Mode::TargetOnly), "test")
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    // New parents and children through Tandem, which now writes the target.
    tandem_tests::mirror::wait_for_mode(&proxy, Mode::TargetOnly).await;
    let via = through(&proxy).await;
    via.batch_execute(&pair.sql(
        "WITH o AS (INSERT INTO {legacy} (id, tenant, note, amount, score, token, created_at) \
                    VALUES (1000, 'acme', 'new', 1, 0, gen_random_uuid(), now()) RETURNING id) \
         SELECT 1; \
         INSERT INTO {legacy}_lines (order_id, n) VALUES (1000, 2)",
    ))
    .await
    .unwrap_or_else(|e| panic!("new parent and child: {}", db_text(&e)));
    let lines: i64 = check
        .query_one(
            &pair.sql("SELECT count(*) FROM {legacy}_lines l JOIN {target} t ON t.id = l.order_id"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(lines, 6);
}
