//! auto_partition: a mirrored write that finds no partition of the target for its row gets
//! one made and runs again, inside the client's transaction; the client never sees 23514.

use std::time::Instant;

use tandem::ops::init::{self, Layout, Options};
use tandem_rules::TableName;
use tandem_tests::mirror::{config_with, db_text, sqlstate, start_ruled_proxy, RuleToml};
use tandem_tests::{pg, through, unique};

/// A legacy table and a target made by `tandem init` without DEFAULT partitions, so a
/// new tenant (or month) has nowhere to go in the target.
async fn setup(layout: &str, auto: bool) -> (tokio_postgres::Client, String, tandem::Config) {
    let check = pg().direct().await;
    let t = unique("auto");
    check
        .batch_execute(&format!(
            "CREATE TABLE {t} (id bigserial PRIMARY KEY, tenant text NOT NULL,
                created_at timestamptz NOT NULL DEFAULT now());
             INSERT INTO {t} (tenant) VALUES ('acme'), ('globex');"
        ))
        .await
        .unwrap();
    let mut seed = config_with(&[]);
    seed.store.enabled = Some(true);
    init::run(
        &seed,
        &Options {
            table: TableName::new(Some("public"), &t),
            target: None,
            layout: Layout::parse(layout).unwrap(),
            no_default: true,
            dry_run: false,
        },
    )
    .await
    .unwrap();
    check
        .batch_execute(&format!("INSERT INTO {t}_v2 SELECT * FROM {t}"))
        .await
        .unwrap();
    let key: Vec<&str> = if layout.starts_with("list") {
        vec!["id", "tenant"]
    } else {
        vec!["id", "created_at"]
    };
    let mut rule = RuleToml::dual_write(&t).key(&key);
    rule.auto_partition = auto;
    let mut config = config_with(&[rule]);
    config.store.schema = seed.store.schema.clone();
    // The store already has the rule (mode off, from init): set it as the test wants.
    check
        .execute(
            &format!(
                "UPDATE \"{}\".rules SET mode = 'dual_write', auto_partition = $2 WHERE table_name = $1",
                config.store.schema
            ),
            &[&format!("public.{t}"), &auto],
        )
        .await
        .unwrap();
    (check, t, config)
}

async fn both(check: &tokio_postgres::Client, t: &str, tenant: &str) -> (i64, i64) {
    let r = check
        .query_one(
            &format!(
                "SELECT (SELECT count(*) FROM {t} WHERE tenant = $1), (SELECT count(*) FROM {t}_v2 WHERE tenant = $1)"
            ),
            &[&tenant],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_tenant_gets_its_partition_on_the_first_write() {
    let (check, t, config) = setup("list(tenant)", true).await;
    let proxy = start_ruled_proxy(config.clone()).await;
    let via = through(&proxy).await;

    // Autocommit: the statement fails on the target, the partition is made, it runs again.
    let started = Instant::now();
    let rows = via
        .simple_query(&format!(
            "INSERT INTO {t} (tenant) VALUES ('initech') RETURNING tenant"
        ))
        .await
        .unwrap_or_else(|e| panic!("{}", db_text(&e)));
    let first = started.elapsed();
    assert_eq!(tandem_tests::mirror::simple_counts(&rows), vec![1]);
    assert_eq!(both(&check, &t, "initech").await, (1, 1));
    let started = Instant::now();
    via.simple_query(&format!("INSERT INTO {t} (tenant) VALUES ('initech')"))
        .await
        .unwrap();
    let second = started.elapsed();
    eprintln!("auto_partition: first write {first:?} (partition created), next write {second:?}");

    // Inside a transaction: behind a savepoint, the rest of the transaction is unharmed.
    via.batch_execute("BEGIN").await.unwrap();
    via.simple_query(&format!("INSERT INTO {t} (tenant) VALUES ('acme')"))
        .await
        .unwrap();
    via.simple_query(&format!("INSERT INTO {t} (tenant) VALUES ('umbrella')"))
        .await
        .unwrap_or_else(|e| panic!("{}", db_text(&e)));
    via.batch_execute("COMMIT").await.unwrap();
    assert_eq!(both(&check, &t, "umbrella").await, (1, 1));
    assert_eq!(both(&check, &t, "acme").await, (2, 2));

    // Two instances racing for the same new tenant: both writes succeed, one partition.
    let other = start_ruled_proxy(config.clone()).await;
    let (a, b) = (through(&proxy).await, through(&other).await);
    let sql = format!("INSERT INTO {t} (tenant) VALUES ('hooli')");
    let (ra, rb) = tokio::join!(a.simple_query(&sql), b.simple_query(&sql));
    ra.unwrap_or_else(|e| panic!("{}", db_text(&e)));
    rb.unwrap_or_else(|e| panic!("{}", db_text(&e)));
    assert_eq!(both(&check, &t, "hooli").await, (2, 2));
    let parts: i64 = check
        .query_one(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = to_regclass($1)",
            &[&format!("{t}_v2")],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(parts, 5, "acme, globex, initech, umbrella, hooli");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn months_too_and_without_the_flag_the_error_is_postgres_own() {
    let (check, t, config) = setup("range(created_at) monthly months-ahead 1", true).await;
    let proxy = start_ruled_proxy(config).await;
    let via = through(&proxy).await;
    via.simple_query(&format!(
        "INSERT INTO {t} (tenant, created_at) VALUES ('acme', now() + interval '8 months')"
    ))
    .await
    .unwrap_or_else(|e| panic!("{}", db_text(&e)));
    let copied: i64 = check
        .query_one(
            &format!("SELECT count(*) FROM {t}_v2 WHERE created_at > now() + interval '7 months'"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(copied, 1);

    let (check, t, config) = setup("list(tenant)", false).await;
    let proxy = start_ruled_proxy(config).await;
    let via = through(&proxy).await;
    let err = via
        .simple_query(&format!("INSERT INTO {t} (tenant) VALUES ('initech')"))
        .await
        .expect_err("no partition and no auto_partition");
    assert_eq!(sqlstate(&err), "23514", "{}", db_text(&err));
    assert_eq!(
        both(&check, &t, "initech").await,
        (0, 0),
        "nothing half-written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_writes_get_their_partition_too() {
    let (check, t, config) = setup("list(tenant)", true).await;
    let proxy = start_ruled_proxy(config).await;
    let mut via = through(&proxy).await;
    let insert = via
        .prepare(&format!(
            "INSERT INTO {t} (tenant) VALUES ($1) RETURNING id"
        ))
        .await
        .unwrap();
    // Autocommit (Bind, Execute, Sync): the row comes back as if nothing happened.
    let row = via
        .query_one(&insert, &[&"initech"])
        .await
        .unwrap_or_else(|e| panic!("{}", db_text(&e)));
    let _: i64 = row.get(0);
    assert_eq!(both(&check, &t, "initech").await, (1, 1));
    // Inside a transaction, after other work that must survive the retry.
    let tx = via.transaction().await.unwrap();
    tx.execute(&insert, &[&"acme"]).await.unwrap();
    assert_eq!(
        tx.execute(&insert, &[&"umbrella"])
            .await
            .unwrap_or_else(|e| panic!("{}", db_text(&e))),
        1
    );
    assert_eq!(tx.execute(&insert, &[&"umbrella"]).await.unwrap(), 1);
    tx.commit().await.unwrap();
    assert_eq!(both(&check, &t, "umbrella").await, (2, 2));
    assert_eq!(both(&check, &t, "acme").await, (2, 2));
    // Reads and later writes in the session go on as usual.
    let n: i64 = via
        .query_one(
            &format!("SELECT count(*) FROM {t} WHERE tenant = $1"),
            &[&"umbrella"],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
    via.execute(&insert, &[&"initech"]).await.unwrap();
    assert_eq!(both(&check, &t, "initech").await, (2, 2));
}

/// Issue 16: a partition made for a write whose transaction then rolls back stays (it was
/// attached outside the client's transaction). `partitions skew` lists it as a candidate to
/// drop, and not an empty partition whose rows the legacy table still has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_left_by_a_rolled_back_write_is_a_candidate_to_drop() {
    use tandem::ops::partitions::{self, Ensure};
    let (check, t, config) = setup("list(tenant)", true).await;
    let table = TableName::new(Some("public"), &t);
    let proxy = start_ruled_proxy(config.clone()).await;
    let via = through(&proxy).await;
    via.batch_execute("BEGIN").await.unwrap();
    via.simple_query(&format!("INSERT INTO {t} (tenant) VALUES ('ghost')"))
        .await
        .unwrap_or_else(|e| panic!("{}", db_text(&e)));
    via.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(both(&check, &t, "ghost").await, (0, 0));
    let ghost: bool = check
        .query_one(
            &format!("SELECT to_regclass('{t}_v2_ghost') IS NOT NULL"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(ghost, "the partition made for the rolled-back write stays");

    // An empty partition whose value the legacy table holds is not a candidate.
    partitions::ensure(&config, &table, Ensure::Value("initech".into()))
        .await
        .unwrap();
    check
        .batch_execute(&format!(
            "INSERT INTO {t} (tenant) VALUES ('initech'); DELETE FROM {t}_v2 WHERE tenant = 'initech';"
        ))
        .await
        .unwrap();

    let (_, skew) = partitions::skew(&config, &table, 2.0, 5.0).await.unwrap();
    let empty: Vec<&str> = skew.empty.iter().map(String::as_str).collect();
    assert!(
        empty.contains(&format!("{t}_v2_ghost").as_str())
            && empty.contains(&format!("{t}_v2_initech").as_str()),
        "{empty:?}"
    );
    let droppable: Vec<String> = skew.droppable.iter().map(|d| d.sql()).collect();
    assert_eq!(
        droppable,
        vec![format!(
            "ALTER TABLE {t}_v2 DETACH PARTITION {t}_v2_ghost; DROP TABLE {t}_v2_ghost;"
        )]
    );
    // The statements given do drop it.
    check.batch_execute(&droppable[0]).await.unwrap();
}
