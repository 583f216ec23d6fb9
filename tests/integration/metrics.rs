//! The Prometheus endpoint, scraped over loopback while statements run through the proxy:
//! the numbers move, exactly where the work done is deterministic.

use std::collections::HashMap;

use tandem::ops::backfill::{self, Options};
use tandem_rules::TableName;
use tandem_tests::mirror::{config_with, start_ruled_proxy, Kind, Pair};
use tandem_tests::{pg, through};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One scrape: the status line and the samples, `name{labels}` -> value.
struct Scrape {
    status: String,
    content_type: String,
    samples: HashMap<String, f64>,
    text: String,
}

impl Scrape {
    fn get(&self, key: &str) -> f64 {
        *self
            .samples
            .get(key)
            .unwrap_or_else(|| panic!("no sample {key} in:\n{}", self.text))
    }
}

async fn scrape(addr: std::net::SocketAddr, path: &str) -> Scrape {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: tandem\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head.lines().next().unwrap_or_default().to_string();
    let content_type = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Type: "))
        .unwrap_or_default()
        .to_string();
    let samples = body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_string(), value.parse().ok()?))
        })
        .collect();
    Scrape {
        status,
        content_type,
        samples,
        text: body.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_endpoint_counts_what_went_through() {
    let check = pg().direct().await;
    let pair = Pair::new(Kind::List);
    pair.create(Kind::List, &check).await;
    // Two rows from before dual-write, for the backfill to copy.
    check
        .batch_execute(&pair.sql(
            "INSERT INTO {legacy} (tenant, amount, note) VALUES ('acme', 1, 'old'), ('globex', 2, 'old')",
        ))
        .await
        .unwrap();
    let mut config = config_with(&[pair.rule(Kind::List).mode("dual_write")]);
    config.metrics.listen = Some("127.0.0.1:0".into());
    let proxy = start_ruled_proxy(config.clone()).await;
    let addr = proxy.metrics_addr.expect("metrics are on");
    let table = format!("public.{}", pair.legacy);

    let before = scrape(addr, "/metrics").await;
    assert_eq!(before.status, "HTTP/1.1 200 OK");
    assert!(before
        .content_type
        .starts_with("application/openmetrics-text"));
    assert_eq!(before.get("tandem_queries_total"), 0.0);
    assert_eq!(before.get("tandem_sessions_active"), 0.0);

    let client = through(&proxy).await;
    // Six simple queries: three mirrored writes (3 + 2 + 1 rows), one read, one refused
    // statement (DROP of the ruled table), one division by zero.
    client
        .batch_execute(&pair.sql(
            "INSERT INTO {legacy} (tenant, amount, note) VALUES ('acme', 10, 'a'), ('acme', 11, 'b'), ('globex', 12, 'c')",
        ))
        .await
        .unwrap();
    client
        .batch_execute(&pair.sql("UPDATE {legacy} SET note = 'x' WHERE amount IN (10, 11)"))
        .await
        .unwrap();
    client
        .batch_execute(&pair.sql("DELETE FROM {legacy} WHERE amount = 12"))
        .await
        .unwrap();
    client
        .batch_execute(&pair.sql("SELECT count(*) FROM {legacy}"))
        .await
        .unwrap();
    let refused = client
        .batch_execute(&pair.sql("DROP TABLE {legacy}"))
        .await
        .expect_err("dropping a ruled table is refused");
    let refused_code = refused.code().expect("a server error").code().to_string();
    let zero = client.batch_execute("SELECT 1/0").await.expect_err("22012");
    assert_eq!(zero.code().map(|c| c.code()), Some("22012"));

    let outcome = backfill::run(
        &config,
        &Options::new(TableName::new(Some("public"), &pair.legacy)),
        &mut |_| {},
    )
    .await
    .unwrap_or_else(|e| panic!("backfill: {e}"));
    assert!(
        matches!(outcome, backfill::Outcome::Finished(_)),
        "{outcome:?}"
    );

    let after = scrape(addr, "/metrics").await;
    let t = |name: &str| format!("{name}{{table=\"{table}\"}}");
    assert_eq!(after.get("tandem_queries_total"), 6.0, "{}", after.text);
    assert_eq!(after.get("tandem_sessions_accepted_total"), 1.0);
    assert_eq!(after.get("tandem_sessions_active"), 1.0);
    assert_eq!(after.get(&t("tandem_mirrored_statements_total")), 3.0);
    assert_eq!(after.get(&t("tandem_mirrored_rows_total")), 6.0);
    assert_eq!(
        after.get(&format!(
            "tandem_refusals_total{{sqlstate=\"{refused_code}\",table=\"{table}\"}}"
        )),
        1.0
    );
    assert_eq!(after.get("tandem_errors_total{sqlstate=\"22012\"}"), 1.0);
    assert_eq!(
        after.get(&format!(
            "tandem_errors_total{{sqlstate=\"{refused_code}\"}}"
        )),
        1.0
    );
    assert!(after.get("tandem_client_received_bytes_total") > 0.0);
    assert!(after.get("tandem_client_sent_bytes_total") > 0.0);
    // One observation per forwarded batch: at least one per query each way.
    assert!(after.get("tandem_added_latency_seconds_count{direction=\"to_server\"}") >= 6.0);
    assert!(after.get("tandem_added_latency_seconds_count{direction=\"to_client\"}") >= 6.0);
    assert_eq!(
        after.get("tandem_added_latency_seconds_bucket{le=\"+Inf\",direction=\"to_server\"}"),
        after.get("tandem_added_latency_seconds_count{direction=\"to_server\"}")
    );
    assert!(after.get("tandem_rules_version") >= 1.0);
    assert_eq!(
        after.get(&format!(
            "tandem_rule_mode{{table=\"{table}\",target=\"public.{}\",mode=\"dual_write\"}}",
            pair.target
        )),
        1.0
    );
    assert_eq!(after.get("tandem_store_up"), 1.0);
    assert_eq!(after.get(&t("tandem_backfill_rows_copied")), 2.0);
    assert_eq!(after.get(&t("tandem_backfill_finished")), 1.0);
    assert_eq!(
        after.get(&format!(
            "tandem_guard_state{{table=\"{table}\",state=\"in place\"}}"
        )),
        1.0
    );
    assert!(
        !after
            .text
            .contains(&format!("tandem_drift_unresolved{{table=\"{table}\"")),
        "no drift: {}",
        after.text
    );
    assert_eq!(
        after.get("tandem_shadow_samples_total{result=\"queued\"}"),
        0.0
    );
    // No rule samples: no read shape is counted or compared.
    assert_eq!(after.get("tandem_shadow_shapes_tracked"), 0.0);
    assert_eq!(after.get("tandem_shadow_shapes_untracked_total"), 0.0);
    assert_eq!(after.get("tandem_shadow_coverage_samples_total"), 0.0);
    assert!(after.text.ends_with("# EOF\n"), "{}", after.text);
    let fired = format!("tandem_guard_firings_total{{table=\"{table}\",policy=\"mirror\"}}");
    assert_eq!(after.get(&fired), 0.0, "every write went through Tandem");

    // Two statements straight to the database, around the proxy: the guard mirrors them
    // and counts each; a third through Tandem is mirrored by the rewrite, not the guard.
    check
        .batch_execute(&pair.sql(
            "INSERT INTO {legacy} (tenant, amount, note) VALUES ('acme', 20, 'direct'), ('acme', 21, 'direct')",
        ))
        .await
        .unwrap();
    check
        .batch_execute(&pair.sql("UPDATE {legacy} SET note = 'direct too' WHERE amount = 20"))
        .await
        .unwrap();
    client
        .batch_execute(&pair.sql("UPDATE {legacy} SET note = 'via' WHERE amount = 21"))
        .await
        .unwrap();
    let later = scrape(addr, "/metrics").await;
    assert_eq!(later.get(&fired), 2.0, "{}", later.text);
    let mirrored: i64 = check
        .query_one(
            &pair.sql("SELECT count(*) FROM {target} WHERE amount IN (20, 21)"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(mirrored, 2, "the guard mirrored the direct writes");

    let other = scrape(addr, "/").await;
    assert_eq!(other.status, "HTTP/1.1 404 Not Found");
    drop(client);
    proxy.shutdown().await.unwrap();
}
