//! What the console shows an operator, and what `tandem rules` changes: every setting of a
//! rule, what each session is doing, the parity estimates of tables never analysed, and an
//! empty rule list.

use std::process::Command;
use std::time::{Duration, Instant};

use tandem::config::AdminConfig;
use tandem_tests::mirror::{config_with, db_text, start_ruled_proxy, Kind, Pair};
use tandem_tests::{pg, through};

use crate::lifecycle::tandem_bin;

/// A proxy with an admin console over `config`; returns it and its console URL.
async fn console_proxy(mut config: tandem::Config) -> (tandem::RunningProxy, String) {
    config.admin = Some(AdminConfig {
        user: "admin".into(),
        password: Some("pw".into()),
        password_env: None,
    });
    let proxy = start_ruled_proxy(config).await;
    let url = format!("postgres://admin:pw@127.0.0.1:{}/tandem", proxy.addr.port());
    (proxy, url)
}

/// `tandem rules <args>` against `url`: (exit code, stdout, stderr).
fn cli(url: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(tandem_bin())
        .arg("rules")
        .args(args)
        .args(["--admin", url])
        .output()
        .expect("run tandem");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The value of column `name` in the first row of an aligned table whose row mentions
/// `row_with`.
fn cell(table: &str, row_with: &str, name: &str) -> String {
    let mut lines = table.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split(" | ")
        .map(str::trim)
        .collect();
    let at = header
        .iter()
        .position(|h| *h == name)
        .unwrap_or_else(|| panic!("no column {name} in\n{table}"));
    let row = lines
        .find(|l| l.contains(row_with))
        .unwrap_or_else(|| panic!("no row with {row_with} in\n{table}"));
    row.split(" | ")
        .nth(at)
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_rule_list_prints_its_header() {
    let (_proxy, url) = console_proxy(config_with(&[])).await;
    let (code, out, err) = cli(&url, &["list"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("table "), "{out}");
    assert!(out.contains("auto_partition"), "{out}");
    assert!(out.ends_with("(0 rows)\n"), "{out}");
    // Several commands: one table each, with its own header.
    let out = tandem::ops::rules::run(&url, "SHOW VERSION; SHOW STATS")
        .await
        .unwrap_or_else(|e| panic!("{}", e.message));
    let headers: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("tandem ") || l.starts_with("stat "))
        .collect();
    assert_eq!(headers.len(), 2, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_changes_every_setting_and_show_rules_shows_it() {
    let check = pg().direct().await;
    let pair = Pair::new(Kind::Hash);
    pair.create(Kind::Hash, &check).await;
    let (_proxy, url) = console_proxy(config_with(&[pair.rule(Kind::Hash).mode("off")])).await;
    let table = format!("public.{}", pair.legacy);
    let show = || async {
        tandem::ops::rules::run(&url, "SHOW RULES")
            .await
            .unwrap_or_else(|e| panic!("{}", e.message))
    };
    assert_eq!(cell(&show().await, &table, "auto_partition"), "off");

    let (code, out, err) = cli(&url, &["set", &table, "--auto-partition", "on"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(cell(&out, &table, "auto_partition"), "on");
    assert_eq!(cell(&show().await, &table, "auto_partition"), "on");

    let (code, _, err) = cli(&url, &["set", &table, "--guard", "record"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(cell(&show().await, &table, "guard"), "record");

    let (code, _, err) = cli(&url, &["set", &table, "--drop-columns", "note,score"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(cell(&show().await, &table, "drop_columns"), "note, score");
    let (code, _, err) = cli(&url, &["set", &table, "--drop-columns", ""]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(cell(&show().await, &table, "drop_columns"), "");
    let (code, _, err) = cli(&url, &["set", &table, "--drop-triggers", "audit"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(cell(&show().await, &table, "drop_triggers"), "audit");

    // One change at a time: a usage error, nothing sent.
    let (code, _, err) = cli(
        &url,
        &["set", &table, "--mode", "off", "--auto-partition", "off"],
    );
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(cell(&show().await, &table, "auto_partition"), "on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_sessions_shows_a_running_query_as_active_with_its_age() {
    let check = pg().direct().await;
    let pair = Pair::new(Kind::Hash);
    pair.create(Kind::Hash, &check).await;
    let (proxy, url) = console_proxy(config_with(&[pair.rule(Kind::Hash).mode("off")])).await;
    let via = through(&proxy).await;
    via.batch_execute("SET application_name = 'sleeper'")
        .await
        .unwrap();
    let cancel = via.cancel_token();
    let sleeping = tokio::spawn(async move {
        let result = via.simple_query("SELECT pg_sleep(60)").await;
        (via, result)
    });
    let sessions = || async {
        tandem::ops::rules::run(&url, "SHOW SESSIONS")
            .await
            .unwrap_or_else(|e| panic!("{}", e.message))
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    let shown = loop {
        let out = sessions().await;
        if out.lines().any(|l| l.contains("| active |")) {
            break out;
        }
        assert!(!sleeping.is_finished(), "the sleep ended early");
        assert!(Instant::now() < deadline, "never shown active:\n{out}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let age = cell(&shown, "| active |", "active_for_s");
    assert!(age.parse::<f64>().is_ok_and(|s| s >= 0.0), "{age}\n{shown}");
    cancel
        .cancel_query(tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("{}", db_text(&e)));
    let (_via, result) = sleeping.await.unwrap();
    let err = result.expect_err("cancelled");
    assert_eq!(tandem_tests::mirror::sqlstate(&err), "57014");
    // Waiting for its client again: idle, with no age.
    let out = sessions().await;
    assert!(!out.contains("| active |"), "{out}");
    assert!(out.lines().any(|l| l.contains("| idle ")), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_parity_says_unknown_for_tables_never_analysed_and_counts_needed_samples() {
    let check = pg().direct().await;
    let pair = Pair::new(Kind::Hash);
    pair.create(Kind::Hash, &check).await;
    check
        .batch_execute(&pair.sql(
            "INSERT INTO {legacy} (tenant, amount, note) SELECT 'acme', g, 'n' FROM generate_series(1, 8) g;
             INSERT INTO {target} SELECT * FROM {legacy};",
        ))
        .await
        .unwrap();
    let (_proxy, url) =
        console_proxy(config_with(&[pair.rule(Kind::Hash).mode("dual_write")])).await;
    let parity = || async {
        tandem::ops::rules::run(&url, "SHOW PARITY")
            .await
            .unwrap_or_else(|e| panic!("{}", e.message))
    };
    let out = parity().await;
    let legacy = pair.legacy.as_str();
    assert_eq!(
        cell(&out, legacy, "legacy_rows_est"),
        "unknown (never analysed)",
        "{out}"
    );
    assert_eq!(
        cell(&out, legacy, "target_rows_est"),
        "unknown (never analysed)",
        "{out}"
    );
    assert_eq!(cell(&out, legacy, "shadow_samples"), "0");
    assert_eq!(cell(&out, legacy, "samples_needed"), "20");
    // Analysed (the partitioned target as a whole, so its parent has a figure too): each
    // row counted once.
    check
        .batch_execute(&pair.sql("ANALYZE {legacy}; ANALYZE {target};"))
        .await
        .unwrap();
    let out = parity().await;
    assert_eq!(cell(&out, legacy, "legacy_rows_est"), "8", "{out}");
    assert_eq!(cell(&out, legacy, "target_rows_est"), "8", "{out}");
}
