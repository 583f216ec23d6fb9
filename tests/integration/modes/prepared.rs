//! SQL-level `PREPARE` of a read: `EXECUTE` and `EXPLAIN EXECUTE` read what the mode says,
//! and a mode switch prepares the statement again (or refuses a stale one).

use tandem_rules::Mode;
use tandem_tests::mirror::{
    config_with, db_text, rows_text, sqlstate, start_ruled_proxy, wait_for_mode, RuleToml,
};
use tandem_tests::through;

use super::Fixture;

/// Which of the fixture's tables an EXPLAIN's scans read (the relation after ` on `):
/// (the legacy table, the target or one of its partitions).
async fn scanned(f: &Fixture, client: &tokio_postgres::Client, sql: &str) -> (bool, bool) {
    let plan = rows_text(client, sql).await;
    let relations: Vec<&str> = plan
        .iter()
        .filter(|line| line.contains("Scan"))
        .filter_map(|line| line.split(" on ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .collect();
    assert!(
        !relations.is_empty(),
        "{sql}: no scan in\n{}",
        plan.join("\n")
    );
    (
        relations.contains(&f.legacy.as_str()),
        relations.iter().any(|r| r.starts_with(&f.target)),
    )
}

/// Sets the fixture's rule to `mode` in the store and waits for the proxy to apply it.
async fn switch(f: &Fixture, proxy: &tandem::RunningProxy, schema: &str, mode: Mode) {
    f.check
        .execute(
            &format!("UPDATE \"{schema}\".rules SET mode = $1 WHERE table_name = $2"),
            &[&mode.to_string(), &format!("public.{}", f.legacy)],
        )
        .await
        .unwrap_or_else(|e| panic!("{}", db_text(&e)));
    wait_for_mode(proxy, mode).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sql_prepared_read_reads_what_each_mode_says() {
    let f = Fixture::new(10).await;
    // The target complete, plus a row only it has (as a write in cutover would leave it
    // were legacy behind): a read of the legacy table cannot return it.
    f.check
        .batch_execute(&f.sql(
            "INSERT INTO {target} SELECT * FROM {legacy} ON CONFLICT DO NOTHING;
             INSERT INTO {target} VALUES (1000, 'acme', 1, 'target only')",
        ))
        .await
        .unwrap();
    let rule = RuleToml::dual_write(&f.legacy)
        .key(&["id", "tenant"])
        .guard("off");
    let config = config_with(&[rule]);
    let schema = config.store.schema.clone();
    let proxy = start_ruled_proxy(config).await;
    let via = through(&proxy).await;
    via.batch_execute(&f.sql(
        "PREPARE one (bigint) AS SELECT note FROM {legacy} WHERE id = $1;
         PREPARE total AS SELECT count(*) FROM {legacy}",
    ))
    .await
    .unwrap_or_else(|e| panic!("{}", db_text(&e)));
    let explain = "EXPLAIN (COSTS OFF) EXECUTE one(1000)";

    // dual_write: the legacy table.
    assert!(rows_text(&via, "EXECUTE one(1000)").await.is_empty());
    assert_eq!(rows_text(&via, "EXECUTE total").await, ["10"]);
    assert_eq!(scanned(&f, &via, explain).await, (true, false));

    switch(&f, &proxy, &schema, Mode::Cutover).await;
    // A Parse cannot carry the hidden re-PREPARE: a stale statement is refused, clearly,
    // rather than run on the legacy table.
    let err = via
        .query("EXECUTE one(1000)", &[])
        .await
        .expect_err("EXECUTE of a stale prepared read through a Parse is refused");
    assert_eq!(sqlstate(&err), "0A000", "{}", db_text(&err));
    assert!(
        db_text(&err).contains("prepared under older migration rules"),
        "{}",
        db_text(&err)
    );
    // The simple protocol prepares it again: the target alone.
    assert_eq!(rows_text(&via, "EXECUTE one(1000)").await, ["target only"]);
    assert_eq!(rows_text(&via, "EXECUTE total").await, ["11"]);
    assert_eq!(scanned(&f, &via, explain).await, (false, true));
    // Now current, it runs through a Parse too, with the legacy table's column origins.
    let rows = via
        .query("EXECUTE one(1000)", &[])
        .await
        .unwrap_or_else(|e| panic!("{}", db_text(&e)));
    assert_eq!(rows[0].get::<_, &str>(0), "target only");
    f.check
        .batch_execute(&f.sql("PREPARE one (bigint) AS SELECT note FROM {legacy} WHERE id = $1"))
        .await
        .unwrap();
    let direct = f.check.prepare("EXECUTE one(1)").await.unwrap();
    let proxied = via.prepare("EXECUTE one(1)").await.unwrap();
    let origin = |s: &tokio_postgres::Statement| {
        let c = &s.columns()[0];
        (c.table_oid(), c.column_id())
    };
    assert_eq!(origin(&proxied), origin(&direct));
    assert!(
        origin(&direct).0.unwrap_or(0) != 0,
        "the check is not vacuous"
    );

    // union_read: the target plus the legacy rows it lacks, EXPLAIN EXECUTE included.
    switch(&f, &proxy, &schema, Mode::UnionRead).await;
    assert_eq!(scanned(&f, &via, explain).await, (true, true));
    assert_eq!(rows_text(&via, "EXECUTE one(1000)").await, ["target only"]);
    assert_eq!(rows_text(&via, "EXECUTE total").await, ["11"]);

    // Back to dual_write: the legacy table again.
    switch(&f, &proxy, &schema, Mode::DualWrite).await;
    assert_eq!(scanned(&f, &via, explain).await, (true, false));
    assert!(rows_text(&via, "EXECUTE one(1000)").await.is_empty());
    assert_eq!(rows_text(&via, "EXECUTE total").await, ["10"]);
}
