//! The extended protocol: prepared statements (described, named, unnamed, reused with
//! parameters) and pipelined writes on one connection.

use tandem_tests::mirror::{db_text, rows_text, wire_rows, Kind, Twins};
use tokio_postgres::types::Type;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_insert_without_returning_describes_no_columns() {
    let twins = Twins::new(Kind::List).await;
    let (via, direct) = twins.clients().await;
    let sql = "INSERT INTO {legacy} (tenant, amount, note) VALUES ($1, $2::int, $3)";
    let sv = via.prepare(&twins.ruled.sql(sql)).await.unwrap();
    let sd = direct.prepare(&twins.baseline.sql(sql)).await.unwrap();
    assert!(
        sv.columns().is_empty(),
        "NoData expected, got {:?}",
        twins.columns(&sv)
    );
    assert_eq!(sv.params(), &[Type::TEXT, Type::INT4, Type::TEXT]);
    assert_eq!(sv.params(), sd.params());
    for i in 0..5i32 {
        let tenant = ["acme", "globex", "initech"][i as usize % 3];
        let note = (i % 2 == 0).then(|| format!("note {i}"));
        let got = via.execute(&sv, &[&tenant, &i, &note]).await.unwrap();
        let want = direct.execute(&sd, &[&tenant, &i, &note]).await.unwrap();
        assert_eq!((got, want), (1, 1));
        // query() on a write without RETURNING: no rows, as direct.
        let rows = via.query(&sv, &[&tenant, &(i + 100), &note]).await.unwrap();
        direct
            .query(&sd, &[&tenant, &(i + 100), &note])
            .await
            .unwrap();
        assert!(rows.is_empty());
    }
    twins.assert_parity("prepared INSERT").await;
    assert_eq!(twins.ruled.counts(&twins.check).await, (10, 10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_statements_reused_with_parameters_match_direct() {
    let twins = Twins::new(Kind::Shadow).await;
    let (via, direct) = twins.clients().await;
    let prepare = |sql: &'static str| {
        let (via, direct, twins) = (&via, &direct, &twins);
        async move {
            let sv = via.prepare(&twins.ruled.sql(sql)).await;
            let sv = sv.unwrap_or_else(|e| panic!("{sql}: {}", db_text(&e)));
            let sd = direct.prepare(&twins.baseline.sql(sql)).await.unwrap();
            assert_eq!(twins.columns(&sv), twins.columns(&sd), "{sql}");
            assert_eq!(sv.params(), sd.params(), "{sql}");
            (sv, sd)
        }
    };
    let (iv, id) = prepare(
        "INSERT INTO {legacy} AS o (tenant, amount, note) VALUES ($1, $2::int, $3) \
         RETURNING o.id, o.tenant, amount * 2 AS doubled, note, created_at, score",
    )
    .await;
    let (uv, ud) = prepare(
        "UPDATE {legacy} SET amount = amount + $1::int WHERE tenant = $2 RETURNING id, amount",
    )
    .await;
    let (dv, dd) = prepare("DELETE FROM {legacy} WHERE id = ANY($1::bigint[])").await;
    assert!(twins.columns(&dv).is_empty());
    for i in 0..6i32 {
        let tenant = ["acme", "globex", "umbrella"][i as usize % 3];
        let args: [&(dyn tokio_postgres::types::ToSql + Sync); 3] = [&tenant, &i, &"n"];
        let got = via.query(&iv, &args).await.unwrap();
        let want = direct.query(&id, &args).await.unwrap();
        assert_eq!(wire_rows(&got), wire_rows(&want));
    }
    for tenant in ["acme", "globex", "nobody"] {
        let got = via.query(&uv, &[&10i32, &tenant]).await.unwrap();
        let want = direct.query(&ud, &[&10i32, &tenant]).await.unwrap();
        assert_eq!(wire_rows(&got), wire_rows(&want), "UPDATE {tenant}");
    }
    twins.assert_parity("named INSERT and UPDATE").await;
    for ids in [vec![1i64, 2], vec![2], vec![6, 5, 99]] {
        let got = via.execute(&dv, &[&ids]).await.unwrap();
        let want = direct.execute(&dd, &[&ids]).await.unwrap();
        assert_eq!(got, want, "DELETE {ids:?}");
    }
    twins.assert_parity("named DELETE").await;
    assert_eq!(twins.ruled.counts(&twins.check).await, (2, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unnamed_statements_with_parameters_match_direct() {
    let twins = Twins::new(Kind::Hash).await;
    let (via, direct) = twins.clients().await;
    for i in 0..4i32 {
        let sql = "INSERT INTO {legacy} (tenant, amount) VALUES ($1, $2::int) RETURNING *";
        let got = via
            .query(&twins.ruled.sql(sql), &[&"acme", &i])
            .await
            .unwrap_or_else(|e| panic!("{}", db_text(&e)));
        let want = direct
            .query(&twins.baseline.sql(sql), &[&"acme", &i])
            .await
            .unwrap();
        assert_eq!(wire_rows(&got), wire_rows(&want));
        assert_eq!(got.len(), 1);
    }
    let sql = "UPDATE {legacy} SET note = $1 WHERE amount >= $2::int";
    let got = via
        .execute(&twins.ruled.sql(sql), &[&"big", &2i32])
        .await
        .unwrap();
    let want = direct
        .execute(&twins.baseline.sql(sql), &[&"big", &2i32])
        .await
        .unwrap();
    assert_eq!((got, want), (2, 2));
    let sql = "DELETE FROM {legacy} WHERE note IS DISTINCT FROM $1";
    let got = via.execute(&twins.ruled.sql(sql), &[&"big"]).await.unwrap();
    let want = direct
        .execute(&twins.baseline.sql(sql), &[&"big"])
        .await
        .unwrap();
    assert_eq!((got, want), (2, 2));
    twins.assert_parity("unnamed statements").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_writes_on_one_connection_are_all_mirrored() {
    let twins = Twins::new(Kind::List).await;
    let (via, _) = twins.clients().await;
    let insert = via
        .prepare(
            &twins
                .ruled
                .sql("INSERT INTO {legacy} (id, tenant, amount) VALUES ($1, $2, 1)"),
        )
        .await
        .unwrap();
    let returning = via
        .prepare(
            &twins
                .ruled
                .sql("INSERT INTO {legacy} (id, tenant, amount) VALUES ($1, $2, 2) RETURNING id"),
        )
        .await
        .unwrap();
    let bump = via
        .prepare(
            &twins
                .ruled
                .sql("UPDATE {legacy} SET amount = amount + 10 WHERE id = $1"),
        )
        .await
        .unwrap();
    // Each future sends its messages before any answer is read: one pipeline.
    let futures: Vec<_> = (1..=60i64)
        .map(|id| {
            let (via, insert, returning, bump) = (&via, &insert, &returning, &bump);
            async move {
                let tenant = ["acme", "globex", "initech"][id as usize % 3];
                if id % 2 == 0 {
                    let n = via.execute(insert, &[&id, &tenant]).await?;
                    let m = via.execute(bump, &[&id]).await?;
                    Ok::<_, tokio_postgres::Error>((n, m))
                } else {
                    let row = via.query_one(returning, &[&id, &tenant]).await?;
                    assert_eq!(row.get::<_, i64>(0), id);
                    Ok((1, 0))
                }
            }
        })
        .collect();
    for (i, r) in futures_util::future::join_all(futures)
        .await
        .into_iter()
        .enumerate()
    {
        let id = i as i64 + 1;
        let want = if id % 2 == 0 { (1, 1) } else { (1, 0) };
        assert_eq!(r.unwrap_or_else(|e| panic!("{}", db_text(&e))), want);
    }
    let drift = twins.ruled.drift(Kind::List, &twins.check).await;
    assert!(drift.is_empty(), "{}", drift.join("\n"));
    assert_eq!(twins.ruled.counts(&twins.check).await, (60, 60));
    let bumped = rows_text(
        &twins.check,
        &twins
            .ruled
            .sql("SELECT count(*) FROM {target} WHERE amount = 11"),
    )
    .await;
    assert_eq!(bumped, ["30"]);
}
