//! Entering `cutover` is refused while a NOT NULL target column lacks a default that the
//! legacy column has: inserts run on the target first from then on, and one that leaves
//! the column out (`INSERT INTO orders (tenant, amount) ...`) would fail there.

use tandem::control::store::change::{self, RuleChange};
use tandem::control::store::Store;
use tandem_rules::{Mode, TableName};
use tandem_tests::mirror::{config_with, db_text, start_ruled_proxy, wait_for_mode, Kind, Pair};
use tandem_tests::{pg, through};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cutover_is_refused_while_the_target_lacks_a_default_legacy_has() {
    let check = pg().direct().await;
    let pair = Pair::new(Kind::List);
    pair.create(Kind::List, &check).await;
    let config = config_with(&[pair.rule(Kind::List)]);
    let store = Store::new(&config.store.schema);
    let proxy = start_ruled_proxy(config).await;
    let table = TableName::new(Some("public"), &pair.legacy);
    let cutover = || RuleChange::SetMode {
        table: table.clone(),
        mode: Mode::Cutover,
        force: false,
    };
    let mut admin = pg().direct().await;
    let e = change::apply(&mut admin, &store, cutover(), "test")
        .await
        .expect_err("a target without the legacy defaults is refused");
    assert_eq!(e.sqlstate, "55000", "{e:?}");
    assert!(
        e.message.contains(&format!(
            "id (legacy: DEFAULT nextval('{}_id_seq'::regclass))",
            pair.legacy
        )) && e
            .message
            .contains("token (legacy: DEFAULT gen_random_uuid())"),
        "{}",
        e.message
    );
    assert!(
        !e.message.contains("note ("),
        "a nullable column is no problem: {}",
        e.message
    );
    let hint = e.hint.unwrap_or_default();
    assert!(
        hint.contains(&format!(
            "ALTER TABLE public.{} ALTER COLUMN id SET DEFAULT nextval(",
            pair.target
        )),
        "{hint}"
    );
    // The rule did not move.
    wait_for_mode(&proxy, Mode::DualWrite).await;

    pair.copy_defaults(&check).await;
    change::apply(&mut admin, &store, cutover(), "test")
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    wait_for_mode(&proxy, Mode::Cutover).await;
    let via = through(&proxy).await;
    let id: i64 = via
        .query_one(
            &pair.sql("INSERT INTO {legacy} (tenant, amount) VALUES ('acme', 9.99) RETURNING id"),
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("insert without id in cutover: {}", db_text(&e)))
        .get(0);
    assert_eq!(pair.counts(&check).await, (1, 1));
    let in_legacy: i64 = check
        .query_one(
            &pair.sql("SELECT count(*) FROM {legacy} WHERE id = $1"),
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(in_legacy, 1, "mirrored back into legacy with the same id");
}

/// Issue 13: following the runbook from the demo, `INSERT INTO orders (tenant, amount) ...`
/// failed in `cutover` with a null id on the demo's hand-made target. The demo now builds
/// its target with `tandem init`; its own setup code runs here, then the runbook's steps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_target_takes_inserts_without_id_in_cutover_and_back() {
    let check = pg().direct().await;
    let schema = tandem_tests::unique("demo");
    let mut config = config_with(&[]);
    config.store.enabled = Some(true);
    let sample = tandem::ops::demo::prepare(&config, &schema)
        .await
        .unwrap_or_else(|e| panic!("demo setup: {e}"));
    let store = Store::new(&config.store.schema);
    let proxy = start_ruled_proxy(config.clone()).await;
    wait_for_mode(&proxy, Mode::DualWrite).await;
    let via = through(&proxy).await;
    let insert = format!(
        "INSERT INTO {} (tenant, amount) VALUES ('acme', 9.99) RETURNING id",
        sample.legacy
    );
    let count = |table: &TableName| format!("SELECT count(*) FROM {table}");
    via.query_one(&insert, &[])
        .await
        .unwrap_or_else(|e| panic!("dual_write insert: {}", db_text(&e)));
    tandem::ops::backfill::run(
        &config,
        &tandem::ops::backfill::Options::new(sample.legacy.clone()),
        &mut |_| {},
    )
    .await
    .unwrap_or_else(|e| panic!("backfill: {e}"));
    let mut admin = pg().direct().await;
    for mode in [Mode::UnionRead, Mode::Cutover] {
        change::apply(
            &mut admin,
            &store,
            RuleChange::SetMode {
                table: sample.legacy.clone(),
                mode,
                force: false,
            },
            "test",
        )
        .await
        .unwrap_or_else(|e| panic!("{mode}: {}", e.message));
    }
    wait_for_mode(&proxy, Mode::Cutover).await;
    let id: i64 = via
        .query_one(&insert, &[])
        .await
        .unwrap_or_else(|e| panic!("cutover insert without id: {}", db_text(&e)))
        .get(0);
    let in_legacy: i64 = check
        .query_one(
            &format!("SELECT count(*) FROM {} WHERE id = $1", sample.legacy),
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        in_legacy, 1,
        "the cutover insert is mirrored back into legacy"
    );
    // And back, as the runbook's rollback says.
    change::apply(
        &mut admin,
        &store,
        RuleChange::SetMode {
            table: sample.legacy.clone(),
            mode: Mode::DualWrite,
            force: false,
        },
        "test",
    )
    .await
    .unwrap_or_else(|e| panic!("back to dual_write: {}", e.message));
    wait_for_mode(&proxy, Mode::DualWrite).await;
    via.query_one(&insert, &[])
        .await
        .unwrap_or_else(|e| panic!("dual_write insert after rollback: {}", db_text(&e)));
    let legacy: i64 = check
        .query_one(&count(&sample.legacy), &[])
        .await
        .unwrap()
        .get(0);
    let target: i64 = check
        .query_one(&count(&sample.target), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        (legacy, target),
        (
            tandem::ops::demo::SAMPLE_ROWS + 3,
            tandem::ops::demo::SAMPLE_ROWS + 3
        )
    );
}
