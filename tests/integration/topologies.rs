//! The topologies teams run with PgBouncer, each under pgbench with dual-write rules on the
//! pgbench tables (see docs/topologies.md):
//!
//! - app -> PgBouncer (transaction pooling) -> Tandem -> Postgres: one client's
//!   transactions land on different Tandem sessions, each of which is one Postgres session,
//!   so Tandem's per-session state (search_path probe, prepared statements, COPY staging
//!   tables) follows the server connection, not the client;
//! - app -> Tandem -> PgBouncer (session pooling) -> Postgres: each Tandem session has one
//!   server connection for its whole life, reset with `DISCARD ALL` before the next.
//!
//! The rules use `guard = "fail"`, so a write Tandem did not mirror fails the transaction
//! (pgbench counts it) instead of being mended by the guard; at the end legacy and target
//! must hold the same rows both ways, per table.

use std::path::Path;
use std::process::Command;

use tandem_tests::mirror::{config_with, db_text, diff, rows_text, start_ruled_proxy, RuleToml};
use tandem_tests::pgbouncer::{PgBouncer, PoolMode};
use tandem_tests::{pg, pg_program, pgbench, unique};
use tokio_postgres::Client;

const TABLES: [&str; 3] = ["pgbench_accounts", "pgbench_tellers", "pgbench_branches"];
/// Clients per pgbench run; more than the transaction pool's server connections.
const CLIENTS: &str = "6";
/// Seconds per pgbench run.
const SECONDS: &str = "2";

/// A fresh database with pgbench's tables (scale 1) and their backfilled `_v2` targets:
/// accounts hash-partitioned by its key, the others plain copies (as bench/run.sh does).
struct BenchDb {
    name: String,
    check: Client,
}

impl BenchDb {
    async fn new() -> BenchDb {
        let name = unique("topo");
        pg().direct()
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        pgbench(pg().port, &name, &["-i", "-s", "1", "-q"]);
        let check = tandem_tests::connect_url(&direct_url(pg().port, &name)).await;
        let mut setup = String::from(
            "CREATE TABLE pgbench_accounts_v2 (LIKE pgbench_accounts INCLUDING ALL) \
             PARTITION BY HASH (aid);",
        );
        for r in 0..4 {
            setup.push_str(&format!(
                "CREATE TABLE pgbench_accounts_v2_{r} PARTITION OF pgbench_accounts_v2 \
                 FOR VALUES WITH (MODULUS 4, REMAINDER {r});"
            ));
        }
        for t in TABLES {
            if t != "pgbench_accounts" {
                setup.push_str(&format!("CREATE TABLE {t}_v2 (LIKE {t} INCLUDING ALL);"));
            }
            setup.push_str(&format!("INSERT INTO {t}_v2 SELECT * FROM {t};"));
        }
        check
            .batch_execute(&setup)
            .await
            .unwrap_or_else(|e| panic!("{}", db_text(&e)));
        BenchDb { name, check }
    }

    /// A proxy config with a dual-write rule (guard `fail`) on each pgbench table.
    fn config(&self, upstream_port: u16) -> tandem::config::Config {
        let rules: Vec<RuleToml> = TABLES
            .iter()
            .map(|t| RuleToml::dual_write(t).guard("fail"))
            .collect();
        let mut config = config_with(&rules);
        config.upstream = direct_url(upstream_port, &self.name);
        config
    }

    /// Zero divergent rows, per table, both ways; and every transaction's delta landed.
    async fn assert_in_step(&self, what: &str) {
        for t in TABLES {
            let drift = diff(&self.check, t, &format!("{t}_v2"), "*").await;
            assert!(drift.is_empty(), "{what}: {t}:\n{}", drift.join("\n"));
        }
        let balanced = rows_text(
            &self.check,
            "SELECT (SELECT sum(abalance) FROM pgbench_accounts_v2) = \
             (SELECT coalesce(sum(delta), 0) FROM pgbench_history)",
        )
        .await;
        assert_eq!(balanced, ["t"], "{what}");
    }

    async fn drop_db(self) {
        drop(self.check);
        pg().direct()
            .await
            .batch_execute(&format!("DROP DATABASE {} WITH (FORCE)", self.name))
            .await
            .unwrap();
    }
}

fn direct_url(port: u16, db: &str) -> String {
    format!("postgres://{}@127.0.0.1:{port}/{db}", pg().superuser)
}

/// A few seconds of pgbench's TPC-B-like script in `mode` through `port`; asserts it ran
/// and no transaction failed.
fn bench(port: u16, db: &str, mode: &str) {
    let out = pgbench(
        port,
        db,
        &["-n", "-c", CLIENTS, "-j", "2", "-T", SECONDS, "-M", mode],
    );
    assert!(
        out.contains("number of failed transactions: 0"),
        "-M {mode}:\n{out}"
    );
    assert!(
        !out.contains("actually processed: 0/"),
        "-M {mode} ran nothing:\n{out}"
    );
}

/// psql with `-f script` against `port`; returns (success, stdout, stderr).
fn psql_script(port: u16, db: &str, script: &Path) -> (bool, String, String) {
    let out = Command::new(pg_program("psql"))
        .args(["-X", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
        .args(["-p", &port.to_string(), "-U", &pg().superuser, "-d", db])
        .arg("-f")
        .arg(script)
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .expect("cannot run psql");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `COPY pgbench_branches FROM STDIN` (psql's `\copy`, the simple protocol) from several
/// clients one after another, one of them in a transaction with a savepoint rolled back:
/// each lands in the Tandem session whose staging table the last one left behind.
async fn copy_branches(port: u16, db: &BenchDb) {
    let dir = std::env::temp_dir().join(unique("topocopy"));
    std::fs::create_dir_all(&dir).unwrap();
    let rows = |from: i32| -> String { (from..from + 50).map(|b| format!("{b}\t0\n")).collect() };
    for (i, from) in [1000, 2000, 3000].into_iter().enumerate() {
        let data = dir.join(format!("b{i}.tsv"));
        std::fs::write(&data, rows(from)).unwrap();
        let undone = dir.join(format!("u{i}.tsv"));
        std::fs::write(&undone, rows(from + 500)).unwrap();
        let script = dir.join(format!("copy{i}.sql"));
        std::fs::write(
            &script,
            format!(
                "\\copy pgbench_branches (bid, bbalance) from '{}'\n\
                 BEGIN;\n\
                 SAVEPOINT s;\n\
                 \\copy pgbench_branches (bid, bbalance) from '{}'\n\
                 ROLLBACK TO SAVEPOINT s;\n\
                 UPDATE pgbench_branches SET bbalance = bbalance + 1 WHERE bid >= {from};\n\
                 COMMIT;\n",
                data.display(),
                undone.display()
            ),
        )
        .unwrap();
        let (ok, out, err) = psql_script(port, &db.name, &script);
        assert!(ok, "COPY through the topology failed:\n{out}\n{err}");
        assert!(out.contains("COPY 50"), "{out}");
    }
    let copied = rows_text(
        &db.check,
        "SELECT count(*) FROM pgbench_branches_v2 WHERE bid >= 1000 AND bbalance = 1",
    )
    .await;
    assert_eq!(copied, ["150"]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A query cancelled by a libpq client (psql on SIGINT) through `port` stops with
/// "canceling statement": the cancel key it holds reaches the right backend through both
/// hops. The signal is sent once the query runs on the server.
async fn assert_cancel_reaches(port: u16, db: &BenchDb) {
    let marker = unique("cancel_me");
    let mut psql = Command::new(pg_program("psql"))
        .args(["-X", "-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-U", &pg().superuser, "-d", &db.name])
        .arg("-c")
        .arg(format!("SELECT pg_sleep(60) /* {marker} */"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("cannot run psql");
    let running = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' \
         AND query LIKE '%{marker}%' AND pid <> pg_backend_pid()"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while rows_text(&db.check, &running).await != ["1"] {
        assert!(std::time::Instant::now() < deadline, "the query never ran");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(psql.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("cannot signal psql");
    let out = tokio::task::spawn_blocking(move || {
        let _ = psql.stdin.take();
        psql.wait_with_output()
    })
    .await
    .unwrap()
    .expect("psql did not finish");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("canceling statement due to user request"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_through_transaction_pooling_in_front_of_tandem_keeps_targets_identical() {
    let db = BenchDb::new().await;
    let proxy = start_ruled_proxy(db.config(pg().port)).await;
    // Two server connections (Tandem sessions) for six clients: every client's
    // transactions move between them.
    let bouncer = PgBouncer::start(proxy.addr.port(), &pg().superuser, PoolMode::Transaction, 2);
    for mode in ["simple", "extended"] {
        bench(bouncer.port, &db.name, mode);
        db.assert_in_step(&format!("-M {mode}")).await;
    }
    copy_branches(bouncer.port, &db).await;
    db.assert_in_step("COPY").await;
    assert_cancel_reaches(bouncer.port, &db).await;
    drop(bouncer);
    drop(proxy);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_prepared_through_transaction_pooling_fails_without_divergence() {
    // PgBouncer before 1.21 (no `max_prepared_statements`) passes a client's named Parse to
    // whichever server connection it holds: the statement is missing (26000) or already
    // there (42P05) in the next transaction's session. pgbench aborts those clients (as it
    // does with PgBouncer straight in front of Postgres); Tandem must not mirror anything
    // wrong on the way, and the clients that ran must have run correctly.
    let db = BenchDb::new().await;
    let proxy = start_ruled_proxy(db.config(pg().port)).await;
    let bouncer = PgBouncer::start(proxy.addr.port(), &pg().superuser, PoolMode::Transaction, 2);
    let out = Command::new(pg_program("pgbench"))
        .args(["-h", "127.0.0.1", "-p", &bouncer.port.to_string()])
        .args(["-U", &pg().superuser])
        // A thread per client: an aborted client's thread ends and closes its connection,
        // which releases the server connection its open transaction held.
        .args([
            "-n", "-c", CLIENTS, "-j", CLIENTS, "-T", SECONDS, "-M", "prepared",
        ])
        .arg(&db.name)
        .output()
        .expect("cannot run pgbench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        assert!(
            stderr.contains("prepared statement"),
            "pgbench -M prepared failed for another reason:\n{stderr}"
        );
    }
    db.assert_in_step("-M prepared").await;
    drop(bouncer);
    drop(proxy);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_through_tandem_over_session_pooling_keeps_targets_identical() {
    let db = BenchDb::new().await;
    // Fewer server connections than Tandem uses over the runs, so server connections are
    // reset and handed to later Tandem sessions.
    let bouncer = PgBouncer::start(pg().port, &pg().superuser, PoolMode::Session, 10);
    let proxy = start_ruled_proxy(db.config(bouncer.port)).await;
    for mode in ["simple", "extended", "prepared"] {
        bench(proxy.addr.port(), &db.name, mode);
        db.assert_in_step(&format!("-M {mode}")).await;
    }
    copy_branches(proxy.addr.port(), &db).await;
    db.assert_in_step("COPY").await;
    assert_cancel_reaches(proxy.addr.port(), &db).await;
    drop(proxy);
    drop(bouncer);
    db.drop_db().await;
}
