//! Rules that would chain (one rule's legacy table is another's target) are refused on
//! every path that writes or loads rules: ADD RULE, the config's seeding, and a reload of a
//! store edited by hand. A mirrored write into such a target would itself be a write to a
//! ruled table.

use std::time::Duration;

use tandem::RunningProxy;
use tandem_tests::mirror::{config_with, start_ruled_proxy, Kind, Pair};
use tandem_tests::pg;
use tandem_tests::raw::{first_error, query, read_until_ready};
use tokio::io::AsyncWriteExt;

use crate::admin_wire::{console_proxy, logged_in};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_rule_refuses_a_table_that_is_another_rules_target_and_the_reverse() {
    let pair = Pair::new(Kind::Hash);
    pair.create(Kind::Hash, &pg().direct().await).await;
    let proxy = console_proxy(&pair).await;
    let mut s = logged_in(&proxy).await;
    let (legacy, target) = (
        format!("public.{}", pair.legacy),
        format!("public.{}", pair.target),
    );
    for (add, expected) in [
        (
            format!("ADD RULE {target} TARGET public.elsewhere"),
            format!("table {target} is the target of the rule for {legacy}"),
        ),
        (
            format!("ADD RULE public.elsewhere TARGET {legacy}"),
            format!("target {legacy} is the table of the rule for {legacy}"),
        ),
    ] {
        s.write_all(&query(&add)).await.unwrap();
        let frames = read_until_ready(&mut s, WAIT).await;
        let error = first_error(&frames).unwrap_or_else(|| panic!("{add}: {frames:?}"));
        assert_eq!(error.code.as_deref(), Some("55000"), "{error:?}");
        assert!(error.message.contains(&expected), "{}", error.message);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_in_the_store_or_the_seed_is_refused_and_the_previous_rules_stay() {
    let check = pg().direct().await;
    let pair = Pair::new(Kind::Hash);
    pair.create(Kind::Hash, &check).await;
    let config = config_with(&[pair.rule(Kind::Hash).mode("dual_write")]);
    let schema = config.store.schema.clone();
    let proxy = start_ruled_proxy(config.clone()).await;
    let watch = proxy.watch.clone().expect("the store is on");
    let before = watch.version();

    // Seeding: a second instance whose file chains onto the stored rule does not start,
    // and writes nothing.
    let mut seeded = config.clone();
    seeded.listen = "127.0.0.1:0".into();
    let mut chained = seeded.rules[0].clone();
    chained.table = chained.target.clone();
    chained.target = tandem_rules::TableName::new(Some("public"), "elsewhere");
    seeded.rules = vec![chained];
    let err = match RunningProxy::start(seeded).await {
        Ok(_) => panic!("an instance seeding a chained rule started"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains(&format!(
            "is the target of the rule for public.{}",
            pair.legacy
        )),
        "{err}"
    );
    let rows: i64 = check
        .query_one(&format!("SELECT count(*) FROM \"{schema}\".rules"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 1, "nothing seeded");

    // Reload: a chained row written by hand is not applied; the rules in force stay.
    check
        .execute(
            &format!(
                "INSERT INTO \"{schema}\".rules (table_name, target, key, mode) \
                 VALUES ($1, 'public.elsewhere', '{{id}}', 'off')"
            ),
            &[&format!("public.{}", pair.target)],
        )
        .await
        .unwrap();
    let err = watch
        .reload()
        .await
        .expect_err("a chained store is refused");
    assert!(
        err.to_string().contains("is the target of the rule"),
        "{err}"
    );
    assert_eq!(watch.version(), before, "the previous rules stay in force");
    assert!(watch
        .status()
        .last_error
        .is_some_and(|e| e.contains("a table may be a legacy table or a target")));
}
