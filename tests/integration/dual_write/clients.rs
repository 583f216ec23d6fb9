//! Real clients and several proxies: COPY through psql and tokio-postgres, pgbench, and
//! proxies with rules starting at the same moment.

use std::process::Command;

use futures_util::SinkExt;
use tandem_tests::mirror::{
    config_with, db_text, diff, rows_text, start_ruled_proxy, Kind, Pair, RuleToml, Twins,
};
use tandem_tests::{pg, pg_program, pgbench, unique};

use super::{assert_refusal, seeded_pair};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_with_rules_start_together() {
    // Several proxies (several Tandem instances, or tests) installing the support objects on
    // one server at once must all start; Postgres' `IF NOT EXISTS` alone does not make that
    // safe (concurrent CREATE SCHEMA IF NOT EXISTS fails with 23505).
    let check = pg().direct().await;
    let mut configs = Vec::new();
    for _ in 0..6 {
        let pair = Pair::new(Kind::Hash);
        pair.create(Kind::Hash, &check).await;
        configs.push(config_with(&[pair.rule(Kind::Hash)]));
    }
    let starts = configs.into_iter().map(tandem::RunningProxy::start);
    for (i, started) in futures_util::future::join_all(starts)
        .await
        .into_iter()
        .enumerate()
    {
        if let Err(e) = started {
            panic!("proxy {i} did not start: {e:?}");
        }
    }
}
/// Runs psql against `port` with `-c` commands; returns stdout, or panics with stderr.
fn psql(port: u16, commands: &[String]) -> String {
    let mut cmd = Command::new(pg_program("psql"));
    cmd.args(["-X", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
        .args([
            "-p",
            &port.to_string(),
            "-U",
            &pg().superuser,
            "-d",
            &pg().database,
        ])
        .env("PGCONNECT_TIMEOUT", "10");
    for c in commands {
        cmd.arg("-c").arg(c);
    }
    let out = cmd.output().expect("cannot run psql");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "psql {commands:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_copy_from_stdin_lands_in_both_tables() {
    let twins = Twins::new(Kind::List).await;
    let dir = std::env::temp_dir().join(unique("dwcopy"));
    std::fs::create_dir_all(&dir).unwrap();
    let text = dir.join("rows.tsv");
    std::fs::write(
        &text,
        "acme\t1.50\tfirst\nglobex\t2\t\\N\ninitech\t3\tthird\n",
    )
    .unwrap();
    let csv = dir.join("rows.csv");
    let csv_rows: String = (0..200)
        .map(|i| format!("{},{i},\"row, {i}\"\n", ["acme", "globex", "hooli"][i % 3]))
        .collect();
    std::fs::write(&csv, format!("tenant,amount,note\n{csv_rows}")).unwrap();
    let run = |port: u16, pair: &Pair| {
        psql(
            port,
            &[
                "SELECT setseed(0.42)".to_string(),
                pair.sql(&format!(
                    "\\copy {{legacy}} (tenant, amount, note) from '{}'",
                    text.display()
                )),
                pair.sql(&format!(
                    "\\copy {{legacy}} (tenant, amount, note) from '{}' with (format csv, header true)",
                    csv.display()
                )),
            ],
        )
    };
    let got = run(twins.proxy.addr.port(), &twins.ruled);
    let want = run(pg().port, &twins.baseline);
    assert_eq!(got, want);
    let tags: Vec<&str> = got.lines().filter(|l| l.starts_with("COPY")).collect();
    assert_eq!(tags, ["COPY 3", "COPY 200"], "{got}");
    twins.assert_parity("\\copy").await;
    assert_eq!(twins.ruled.counts(&twins.check).await, (203, 203));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_over_the_extended_protocol_is_mirrored_or_refused() {
    let (pair, check, proxy, via) = seeded_pair().await;
    let legacy = pair.legacy_rows(&check).await;
    let rows = "acme\t1\tcopied\nglobex\t2\tcopied\n";
    let sql = pair.sql("COPY {legacy} (tenant, amount, note) FROM STDIN");
    let outcome = match via.copy_in::<str, bytes::Bytes>(sql.as_str()).await {
        Err(e) => Err(e),
        Ok(sink) => {
            futures_util::pin_mut!(sink);
            match sink.send(bytes::Bytes::from(rows)).await {
                Err(e) => Err(e),
                Ok(()) => sink.as_mut().finish().await,
            }
        }
    };
    match outcome {
        Ok(n) => {
            assert_eq!(n, 2);
            assert_eq!(pair.counts(&check).await, (4, 4));
            let drift = pair.drift(Kind::List, &check).await;
            assert!(drift.is_empty(), "{}", drift.join("\n"));
        }
        Err(e) => {
            assert_refusal(&e, &pair, &sql);
            assert_eq!(pair.legacy_rows(&check).await, legacy);
            assert_eq!(pair.counts(&check).await, (2, 2));
        }
    }
    // Either way the session is usable afterwards.
    let rows = via.query("SELECT 1", &[]).await.unwrap();
    assert_eq!(rows.len(), 1);
    drop(proxy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_through_dual_write_keeps_every_target_identical() {
    let db = unique("dwbench");
    let direct = pg().direct().await;
    direct
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await
        .unwrap();
    pgbench(pg().port, &db, &["-i", "-s", "1", "-q"]);
    let url = format!(
        "postgres://{}@{}:{}/{db}",
        pg().superuser,
        pg().host,
        pg().port
    );
    let check = tandem_tests::connect_url(&url).await;
    let mut setup = String::from(
        "CREATE TABLE pgbench_accounts_v2 (LIKE pgbench_accounts INCLUDING ALL) \
         PARTITION BY HASH (aid);",
    );
    for r in 0..8 {
        setup.push_str(&format!(
            "CREATE TABLE pgbench_accounts_v2_{r} PARTITION OF pgbench_accounts_v2 \
             FOR VALUES WITH (MODULUS 8, REMAINDER {r});"
        ));
    }
    setup.push_str(
        "CREATE TABLE pgbench_tellers_v2 (LIKE pgbench_tellers INCLUDING ALL);
         CREATE TABLE pgbench_branches_v2 (LIKE pgbench_branches INCLUDING ALL);
         INSERT INTO pgbench_accounts_v2 SELECT * FROM pgbench_accounts;
         INSERT INTO pgbench_tellers_v2 SELECT * FROM pgbench_tellers;
         INSERT INTO pgbench_branches_v2 SELECT * FROM pgbench_branches;",
    );
    check
        .batch_execute(&setup)
        .await
        .unwrap_or_else(|e| panic!("{}", db_text(&e)));
    let tables = ["pgbench_accounts", "pgbench_tellers", "pgbench_branches"];
    let rules: Vec<RuleToml> = tables.iter().map(|t| RuleToml::dual_write(t)).collect();
    let mut config = config_with(&rules);
    config.upstream = url.clone();
    let proxy = start_ruled_proxy(config).await;
    let port = proxy.addr.port();
    for mode in ["simple", "prepared"] {
        let out = pgbench(
            port,
            &db,
            &["-n", "-c", "8", "-j", "2", "-t", "100", "-M", mode],
        );
        assert!(out.contains("number of failed transactions: 0"), "{out}");
        assert!(
            out.contains("number of transactions actually processed: 800/800"),
            "{out}"
        );
    }
    for t in tables {
        let drift = diff(&check, t, &format!("{t}_v2"), "*").await;
        assert!(drift.is_empty(), "{t}:\n{}", drift.join("\n"));
    }
    // The run really wrote: 1600 transactions, each one history row and one account update.
    let history = rows_text(&check, "SELECT count(*) FROM pgbench_history").await;
    assert_eq!(history, ["1600"]);
    let balanced = rows_text(
        &check,
        "SELECT (SELECT sum(abalance) FROM pgbench_accounts_v2) = \
         (SELECT sum(delta) FROM pgbench_history)",
    )
    .await;
    assert_eq!(balanced, ["t"]);
    drop(proxy);
    drop(check);
    direct
        .batch_execute(&format!("DROP DATABASE {db} WITH (FORCE)"))
        .await
        .unwrap();
}
