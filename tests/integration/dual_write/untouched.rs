//! What dual-write must leave alone: reads of the ruled table, other tables, a same-named
//! table in another schema, and a rule in mode `off`.

use tandem_tests::mirror::{
    config_with, db_text, rows_text, simple_counts, start_ruled_proxy, Kind, Pair, RawSession,
    Twins,
};
use tandem_tests::{pg, through, unique};

use super::{ruled_pair, seeded_pair};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_of_the_ruled_table_are_relayed_unchanged() {
    let (pair, _check, proxy, _via) = seeded_pair().await;
    let target = pair.target_rows(&pg().direct().await).await;
    let mut via = RawSession::connect(proxy.addr).await;
    let mut direct = RawSession::connect(tandem_tests::mirror::direct_addr()).await;
    for sql in [
        "SELECT * FROM {legacy} ORDER BY id",
        "SELECT l.id, s.note FROM {legacy} l JOIN {src} s USING (tenant) ORDER BY 1",
        "SELECT count(*) FROM {legacy} WHERE note = 'INSERT INTO {legacy}'",
        "BEGIN; SELECT id FROM {legacy} ORDER BY id FOR UPDATE; COMMIT",
        "EXPLAIN (COSTS OFF) SELECT * FROM {legacy} WHERE id = 1",
        "COPY (SELECT id, tenant FROM {legacy} ORDER BY id) TO STDOUT",
    ] {
        let sql = pair.sql(sql);
        let (got, want) = (via.simple(&sql).await, direct.simple(&sql).await);
        assert_eq!(got, want, "{sql}");
        let (got, want) = (via.extended(&sql).await, direct.extended(&sql).await);
        assert_eq!(got, want, "extended: {sql}");
    }
    assert_eq!(pair.target_rows(&pg().direct().await).await, target);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_to_other_tables_are_not_mirrored() {
    let twins = Twins::new(Kind::List).await;
    let (mut via, mut direct) = twins.raw_sessions().await;
    for sql in [
        "INSERT INTO {src} VALUES ('initech', 1, 'INSERT INTO {legacy} (tenant) VALUES (''x'')')",
        "UPDATE {src} SET note = '{legacy}' WHERE tenant = 'acme' RETURNING tenant, amount",
        "/* UPDATE {legacy} */ DELETE FROM {src} WHERE tenant = 'globex'",
        "INSERT INTO {src} SELECT tenant || '2', amount, note FROM {legacy}",
        "WITH x AS (DELETE FROM {src} WHERE tenant = 'umbrella' RETURNING *) SELECT count(*) FROM x",
    ] {
        twins.same_simple(&mut via, &mut direct, sql).await;
    }
    assert_eq!(twins.ruled.counts(&twins.check).await, (0, 0));
    let src = rows_text(&twins.check, &twins.ruled.sql("SELECT count(*) FROM {src}")).await;
    assert_eq!(src, ["2"], "the writes to the unruled table happened");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_table_name_in_another_schema_is_not_mirrored() {
    let check = pg().direct().await;
    let pair = Pair::new(Kind::List);
    pair.create(Kind::List, &check).await;
    let other = unique("other");
    check
        .batch_execute(&format!(
            "CREATE SCHEMA {other}; CREATE TABLE {other}.{} (LIKE public.{} INCLUDING ALL)",
            pair.legacy, pair.legacy
        ))
        .await
        .unwrap();
    let proxy = start_ruled_proxy(config_with(&[pair.rule(Kind::List)])).await;
    let via = through(&proxy).await;
    let n = via
        .execute(
            &pair.sql(&format!(
                "INSERT INTO {other}.{{legacy}} (tenant) VALUES ('acme')"
            )),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    via.batch_execute(&pair.sql(&format!(
        "UPDATE {other}.{{legacy}} SET note = 'x'; DELETE FROM {other}.{{legacy}} WHERE false"
    )))
    .await
    .unwrap();
    // A session whose search_path puts the other schema first: bare names mean that table.
    let url = format!(
        "{}?options=-c%20search_path%3D{other}",
        tandem_tests::proxy_url(&proxy, &pg().superuser)
    );
    let shadowed = tandem_tests::connect_url(&url).await;
    let n = shadowed
        .execute(
            &pair.sql("INSERT INTO {legacy} (tenant) VALUES ('globex')"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    let in_other = rows_text(
        &check,
        &pair.sql(&format!("SELECT count(*) FROM {other}.{{legacy}}")),
    )
    .await;
    assert_eq!(in_other, ["2"]);
    assert_eq!(
        pair.counts(&check).await,
        (0, 0),
        "nothing reached the ruled pair"
    );
    // Control: the ruled table itself is mirrored through the same proxy.
    via.execute(
        &pair.sql("INSERT INTO public.{legacy} (tenant) VALUES ('acme')"),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(pair.counts(&check).await, (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_in_mode_off_mirrors_nothing() {
    let (pair, check, proxy) = ruled_pair(Kind::List, |r| r.mode("off")).await;
    let via = through(&proxy).await;
    let mut sql = String::from(
        "INSERT INTO {legacy} (tenant) VALUES ('acme'), ('globex'); \
         UPDATE {legacy} SET note = 'x' WHERE tenant = 'acme'; \
         DELETE FROM {legacy} WHERE tenant = 'globex'",
    );
    let merge = tandem_tests::server_has_merge().await;
    if merge {
        sql.push_str(
            "; MERGE INTO {legacy} l USING {src} s ON l.tenant = s.tenant \
             WHEN NOT MATCHED THEN INSERT (tenant) VALUES (s.tenant)",
        );
    }
    let msgs = via
        .simple_query(&pair.sql(&sql))
        .await
        .unwrap_or_else(|e| panic!("{}", db_text(&e)));
    if merge {
        assert_eq!(simple_counts(&msgs), [2, 1, 1, 2]);
        assert_eq!(pair.counts(&check).await, (3, 0));
    } else {
        assert_eq!(simple_counts(&msgs), [2, 1, 1]);
        assert_eq!(pair.counts(&check).await, (1, 0));
    }
}
