//! Bulk INSERTs as ORMs send them (`bulk_create`, `insert_all`): one statement with
//! thousands of rows. Tandem plans them through the rules crate's bulk path (rows carried
//! over as written), off the session's worker thread; both tables must hold every row and
//! the client must see exactly Postgres's answer.

use tandem_tests::mirror::{config_with, start_ruled_proxy, Kind, Pair, Twins};
use tandem_tests::{pg, through};

/// `INSERT INTO {legacy} (...) VALUES` with `rows` rows starting at id `first`, and `tail`.
fn bulk_insert(first: usize, rows: usize, tail: &str) -> String {
    let tenants = ["acme", "globex", "initech"];
    let values: Vec<String> = (first..first + rows)
        .map(|i| format!("({i}, '{}', {}.25, 'n{i}')", tenants[i % 3], i % 1000))
        .collect();
    format!(
        "INSERT INTO {{legacy}} (id, tenant, amount, note) VALUES {}{tail}",
        values.join(", ")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_20000_row_insert_is_mirrored_whole_with_its_exact_tag() {
    let twins = Twins::new(Kind::List).await;
    let (mut via, mut direct) = twins.raw_sessions().await;

    let insert = bulk_insert(1, 20_000, "");
    assert!(insert.len() > 500_000, "{} bytes", insert.len());
    let got = twins.same_simple(&mut via, &mut direct, &insert).await;
    assert!(
        got.iter().any(|l| l == "CommandComplete INSERT 0 20000"),
        "{got:?}"
    );
    assert_eq!(twins.ruled.counts(&twins.check).await, (20_000, 20_000));

    // The upsert form with RETURNING, through the extended protocol: 10,000 rows update,
    // 10,000 are new.
    let upsert = bulk_insert(
        10_001,
        20_000,
        " ON CONFLICT (id) DO UPDATE SET note = EXCLUDED.note || '!' RETURNING id, note",
    );
    let got = twins.same_extended(&mut via, &mut direct, &upsert).await;
    assert!(
        got.iter().any(|l| l == "CommandComplete INSERT 0 20000"),
        "{:?}",
        got.iter().rev().take(3).collect::<Vec<_>>()
    );
    assert_eq!(twins.ruled.counts(&twins.check).await, (30_000, 30_000));

    // A large statement that is not a bulk INSERT takes the parser, off the worker thread
    // (see `mirror::ahead`), and is mirrored like any other.
    let ids: Vec<String> = (1..=15_000).map(|i| (i * 2).to_string()).collect();
    let delete = format!("DELETE FROM {{legacy}} WHERE id IN ({})", ids.join(", "));
    let got = twins.same_simple(&mut via, &mut direct, &delete).await;
    assert!(
        got.iter().any(|l| l == "CommandComplete DELETE 15000"),
        "{got:?}"
    );
    assert_eq!(twins.ruled.counts(&twins.check).await, (15_000, 15_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_statements_stay_within_the_plan_cache_byte_budget() {
    let check = pg().direct().await;
    let pair = Pair::new(Kind::Hash);
    pair.create(Kind::Hash, &check).await;
    let mut config = config_with(&[pair.rule(Kind::Hash)]);
    let budget = 2 * 1024 * 1024;
    config.limits.plan_cache_bytes = budget;
    let proxy = start_ruled_proxy(config).await;
    let via = through(&proxy).await;
    let cache_bytes = || proxy.watch.as_ref().unwrap().current().cache().bytes();
    // 40 distinct statements of ~29 KB (under the 32 KB a statement may take here), each
    // kept twice (text and rewrite): about 2.3 MB if nothing were ever let go.
    for batch in 0..40 {
        let insert = pair.sql(&bulk_insert(batch * 800 + 1, 800, ""));
        assert!(insert.len() < budget / 64, "{} bytes", insert.len());
        let n = via.execute(insert.as_str(), &[]).await.unwrap();
        assert_eq!(n, 800);
        assert!(cache_bytes() <= budget, "{} bytes cached", cache_bytes());
    }
    assert!(cache_bytes() > 0, "statements under the cap are cached");
    assert_eq!(pair.counts(&check).await, (32_000, 32_000));
}
