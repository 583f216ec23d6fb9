//! The one-shot commands speak TLS as configured: to the upstream per `[upstream_tls]`
//! (backfill, parity, init, partitions and purge open their connections through the same
//! connector as sessions), and `tandem rules` to the admin console per its URL's sslmode.

use tandem::config::{AdminConfig, UpstreamTlsConfig, UpstreamTlsMode};
use tandem_tests::mirror::{config_with, start_ruled_proxy};
use tandem_tests::pg;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shot_commands_reach_the_upstream_over_tls_when_upstream_tls_says_so() {
    if pg().cluster.is_none() {
        eprintln!("skipped: TANDEM_TEST_PG may have no TLS");
        return;
    }
    for (mode, ca) in [
        (UpstreamTlsMode::Disable, None),
        (UpstreamTlsMode::Require, None),
        (
            UpstreamTlsMode::VerifyFull,
            Some(pg().tls.cert_path.clone()),
        ),
    ] {
        let mut config = config_with(&[]);
        config.upstream_tls = UpstreamTlsConfig { mode, ca };
        // The connection `tandem backfill`, `parity`, `init`, `partitions` and `purge` use.
        let client = tandem::control::catalog::connect(&config)
            .await
            .unwrap_or_else(|e| panic!("{mode:?}: {e}"));
        let ssl: bool = client
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(ssl, mode != UpstreamTlsMode::Disable, "{mode:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tandem_rules_speaks_tls_to_a_console_that_has_it() {
    let admin = AdminConfig {
        user: "admin".into(),
        password: Some("tls admin".into()),
        password_env: None,
    };
    let mut plain = config_with(&[]);
    plain.admin = Some(admin.clone());
    let mut tls = plain.clone();
    tls.store.schema = tandem_tests::unique("tandem_store");
    tls.tls = Some(tandem_tests::proxy_tls());
    let plain = start_ruled_proxy(plain).await;
    let tls = start_ruled_proxy(tls).await;
    let url = |port: u16, sslmode: &str| {
        format!("postgres://admin:tls%20admin@127.0.0.1:{port}/tandem?sslmode={sslmode}")
    };
    let ca = pg().tls.cert_path.clone();

    // sslmode=require: only the listener with [tls] can answer.
    let out = tandem::ops::rules::run(&url(tls.addr.port(), "require"), "SHOW VERSION")
        .await
        .unwrap_or_else(|e| panic!("{}", e.message));
    assert!(out.contains("store_version"), "{out}");
    let e = tandem::ops::rules::run(&url(plain.addr.port(), "require"), "SHOW VERSION")
        .await
        .expect_err("require against a listener without TLS");
    assert!(
        e.message.to_lowercase().contains("tls") || e.message.contains("SSL"),
        "{}",
        e.message
    );
    // The default (prefer) works with both.
    for proxy in [&plain, &tls] {
        tandem::ops::rules::run(&url(proxy.addr.port(), "prefer"), "SHOW VERSION")
            .await
            .unwrap_or_else(|e| panic!("{}", e.message));
    }
    // Verified against the CA, with the host name.
    let out = tandem::ops::rules::run_with_ca(
        &url(tls.addr.port(), "require"),
        "SHOW VERSION",
        Some(&ca),
    )
    .await
    .unwrap_or_else(|e| panic!("{}", e.message));
    assert!(out.contains("store_version"), "{out}");
}
