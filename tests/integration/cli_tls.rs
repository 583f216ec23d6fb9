//! The one-shot commands speak TLS as configured: to the upstream per `[upstream_tls]`
//! (backfill, parity, init, partitions and purge open their connections through the same
//! connector as sessions), and `tandem rules` to the admin console per its URL's sslmode,
//! with SCRAM bound to the console's certificate over TLS.

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
        let ssl = tandem_tests::server_sees_ssl(&client).await;
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

/// Over TLS the console offers SCRAM-SHA-256-PLUS, bound to Tandem's own certificate
/// (`tls-server-end-point`), so a client that requires channel binding gets in (tokio-postgres
/// through `tandem rules`, and libpq through psql); over plain TCP it offers SCRAM-SHA-256
/// alone, and such a client refuses to go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_binds_scram_to_its_certificate_over_tls() {
    let mut config = config_with(&[]);
    config.admin = Some(AdminConfig {
        user: "admin".into(),
        password: Some("pw".into()),
        password_env: None,
    });
    config.tls = Some(tandem_tests::proxy_tls());
    let proxy = start_ruled_proxy(config).await;
    let url = |sslmode: &str| {
        format!(
            "postgres://admin:pw@127.0.0.1:{}/tandem?sslmode={sslmode}&channel_binding=require",
            proxy.addr.port()
        )
    };
    let out = tandem::ops::rules::run(&url("require"), "SHOW VERSION")
        .await
        .unwrap_or_else(|e| panic!("{}", e.message));
    assert!(out.contains("store_version"), "{out}");
    let wrong = url("require").replace("admin:pw@", "admin:wrong@");
    let e = tandem::ops::rules::run(&wrong, "SHOW VERSION")
        .await
        .expect_err("a wrong password, bound or not");
    assert!(
        e.message.contains("password authentication failed"),
        "{}",
        e.message
    );
    let e = tandem::ops::rules::run(&url("disable"), "SHOW VERSION")
        .await
        .expect_err("no channel binding without TLS");
    assert!(
        e.message.to_lowercase().contains("channel binding"),
        "{}",
        e.message
    );
    // libpq (psql) binds to the same certificate.
    let psql = |url: &str| {
        std::process::Command::new(tandem_tests::pg_program("psql"))
            .args(["-X", "-A", "-t", "-c", "SHOW VERSION", url])
            .output()
            .expect("run psql")
    };
    let out = psql(&url("require"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with(env!("CARGO_PKG_VERSION")),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Without TLS libpq itself refuses to go on: nothing to bind to.
    let out = psql(&url("disable"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("channel binding"), "{stderr}");
}
