//! Writes under cutover (reverse dual-write) and target_only.

use tandem_tests::mirror::{db_text, rows_text, sqlstate};

use super::Fixture;

async fn both(f: &Fixture, id: i64) -> (Vec<String>, Vec<String>) {
    (
        rows_text(
            &f.check,
            &f.sql(&format!("SELECT l::text FROM {{legacy}} l WHERE id = {id}")),
        )
        .await,
        rows_text(
            &f.check,
            &f.sql(&format!("SELECT t::text FROM {{target}} t WHERE id = {id}")),
        )
        .await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cutover_writes_land_in_the_target_and_back_in_legacy() {
    let f = Fixture::new(10).await;
    f.check
        .batch_execute(&f.sql("INSERT INTO {target} SELECT * FROM {legacy} ON CONFLICT DO NOTHING"))
        .await
        .unwrap();
    let (_proxy, via) = f.proxy("cutover").await;

    let rows = via
        .simple_query(&f.sql("INSERT INTO {legacy} (id, tenant, amount, note) VALUES (100, 'acme', 1, 'new') RETURNING id, note"))
        .await
        .unwrap();
    assert_eq!(tandem_tests::mirror::simple_counts(&rows), vec![1]);
    let (l, t) = both(&f, 100).await;
    assert_eq!(l, t);
    assert_eq!(l.len(), 1);

    assert_eq!(
        via.execute(
            &f.sql("UPDATE {legacy} SET note = $1 WHERE id = $2"),
            &[&"upd", &100i64]
        )
        .await
        .unwrap(),
        1
    );
    let (l, t) = both(&f, 100).await;
    assert_eq!(l, t);
    assert!(l[0].contains("upd"));

    // A key move (tenant is part of the key and the target's partition key).
    assert_eq!(
        via.execute(
            &f.sql("UPDATE {legacy} SET tenant = 'globex' WHERE id = 100"),
            &[]
        )
        .await
        .unwrap_or_else(|e| panic!("{}", db_text(&e))),
        1
    );
    let (l, t) = both(&f, 100).await;
    assert_eq!(l, t);
    assert!(l[0].contains("globex"), "{l:?}");

    let deleted = via
        .query(
            &f.sql("DELETE FROM {legacy} WHERE id = 100 RETURNING *"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(deleted.len(), 1);
    assert_eq!(both(&f, 100).await, (vec![], vec![]));

    // A write the target refuses fails the statement: neither table changes.
    let err = via
        .execute(
            &f.sql("INSERT INTO {legacy} (id, tenant, amount) VALUES (1, 'globex', 1)"),
            &[],
        )
        .await
        .expect_err("duplicate key");
    assert_eq!(sqlstate(&err), "23505");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_only_reads_and_writes_the_target_alone() {
    let f = Fixture::new(10).await;
    f.check
        .batch_execute(&f.sql("INSERT INTO {target} SELECT * FROM {legacy} ON CONFLICT DO NOTHING"))
        .await
        .unwrap();
    let (_proxy, via) = f.proxy("target_only").await;
    via.batch_execute(&f.sql(
        "INSERT INTO {legacy} (id, tenant, amount, note) VALUES (200, 'acme', 1, 'only');
         UPDATE {legacy} SET note = 'changed' WHERE id = 1;
         DELETE FROM {legacy} WHERE id = 2",
    ))
    .await
    .unwrap();
    let (l, t) = both(&f, 200).await;
    assert!(l.is_empty() && t.len() == 1);
    let (l, t) = both(&f, 1).await;
    assert!(!l[0].contains("changed") && t[0].contains("changed"));
    let (l, t) = both(&f, 2).await;
    assert!(l.len() == 1 && t.is_empty());
    let n: i64 = via
        .query_one(
            &f.sql("SELECT count(*) FROM {legacy} WHERE note = 'changed'"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "reads come from the target");

    // The legacy table can go while applications still use its name.
    f.check
        .batch_execute(&f.sql("DROP TABLE {legacy}"))
        .await
        .unwrap();
    let (_fresh, via) = f.proxy("target_only").await;
    let n: i64 = via
        .query_one(&f.sql("SELECT count(*) FROM {legacy}"), &[])
        .await
        .unwrap_or_else(|e| panic!("{}", db_text(&e)))
        .get(0);
    assert_eq!(
        n, 10,
        "10 seeded + 1 inserted - 1 deleted, all in the target"
    );
}

/// `\copy` through psql (a simple-protocol COPY FROM STDIN) into the legacy table.
fn copy_rows(port: u16, table: &str, rows: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = std::process::Command::new(tandem_tests::pg_program("psql"))
        .arg(format!(
            "postgres://{}@127.0.0.1:{port}/{}",
            tandem_tests::pg().superuser,
            tandem_tests::pg().database
        ))
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-c"])
        .arg(format!(
            "\\copy {table} (id, tenant, amount, note) FROM STDIN"
        ))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(rows.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_follows_the_mode() {
    let f = Fixture::new(4).await;
    f.check
        .batch_execute(&f.sql("INSERT INTO {target} SELECT * FROM {legacy} ON CONFLICT DO NOTHING"))
        .await
        .unwrap();
    let (cutover, _via) = f.proxy("cutover").await;
    let out = copy_rows(
        cutover.addr.port(),
        &f.legacy,
        "301\tacme\t1.00\tcopied\n302\tglobex\t2.00\tcopied\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for id in [301, 302] {
        let (l, t) = both(&f, id).await;
        assert_eq!(l, t, "cutover COPY lands in both");
        assert_eq!(l.len(), 1);
    }
    drop(cutover);
    let (only, _via) = f.proxy("target_only").await;
    let out = copy_rows(only.addr.port(), &f.legacy, "303\tacme\t3.00\tonly\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (l, t) = both(&f, 303).await;
    assert!(
        l.is_empty() && t.len() == 1,
        "target_only COPY lands in the target alone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cutover_never_writes_the_target_for_a_temporary_table_of_the_legacy_name() {
    let f = Fixture::new(5).await;
    f.check
        .batch_execute(&f.sql("INSERT INTO {target} SELECT * FROM {legacy} ON CONFLICT DO NOTHING"))
        .await
        .unwrap();
    let (_proxy, via) = f.proxy("cutover").await;
    via.batch_execute(&f.sql("CREATE TEMP TABLE {legacy} (LIKE public.{legacy})"))
        .await
        .unwrap();
    let before = both(&f, 1).await;
    for sql in [
        "INSERT INTO {legacy} (id, tenant, amount, note) VALUES (200, 'acme', 1, 'temp')",
        "UPDATE {legacy} SET note = 'temp' WHERE id = 1",
        "DELETE FROM {legacy} WHERE id = 1",
    ] {
        let e = via.batch_execute(&f.sql(sql)).await.unwrap_err();
        assert_eq!(sqlstate(&e), "55000", "{sql}: {}", db_text(&e));
    }
    assert_eq!(both(&f, 1).await, before);
    assert_eq!(both(&f, 200).await, (vec![], vec![]));
}
