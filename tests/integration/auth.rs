//! Authentication relayed to the upstream (trust, cleartext, md5, SCRAM), and TLS on both legs.

use std::process::Command;

use tandem::config::{UpstreamTlsConfig, UpstreamTlsMode};
use tandem_tests::{
    expect_failure, pg, pg_program, proxy_config, proxy_tls, proxy_url, start_proxy,
    start_proxy_with, try_connect, CLEAR_USER, MD5_USER, PASSWORD, SCRAM_USER,
};

fn with_password(url: &str) -> String {
    url.replacen("@", &format!(":{PASSWORD}@"), 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_methods_relay_to_upstream() {
    if !pg().has_auth_roles() {
        eprintln!("skipped: TANDEM_TEST_PG is set; auth roles and pg_hba are not under the harness's control");
        return;
    }
    let proxy = start_proxy().await;
    for user in [SCRAM_USER, MD5_USER, CLEAR_USER] {
        let client = try_connect(&with_password(&proxy_url(&proxy, user)))
            .await
            .unwrap_or_else(|e| panic!("{user}: {e}"));
        let who: String = client
            .query_one("SELECT current_user::text", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(who, user);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_gets_postgres_error() {
    if !pg().has_auth_roles() {
        eprintln!("skipped: TANDEM_TEST_PG is set");
        return;
    }
    let proxy = start_proxy().await;
    for user in [SCRAM_USER, MD5_USER, CLEAR_USER] {
        let bad = proxy_url(&proxy, user).replacen("@", ":wrong@", 1);
        let err = expect_failure(try_connect(&bad).await, "wrong password must fail");
        let direct_bad = pg().direct_url(user).replacen("@", ":wrong@", 1);
        let direct_err = expect_failure(try_connect(&direct_bad).await, "direct must fail too");
        let (a, b) = (
            err.as_db_error().unwrap(),
            direct_err.as_db_error().unwrap(),
        );
        assert_eq!(a.code().code(), "28P01");
        assert_eq!(a.message(), b.message());
    }
    // The proxy still serves after refusals.
    let ok = try_connect(&with_password(&proxy_url(&proxy, SCRAM_USER))).await;
    assert!(ok.is_ok());
}

fn psql(conninfo: &str, sql: &str) -> std::process::Output {
    Command::new(pg_program("psql"))
        .args([
            "-X",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            conninfo,
            "-c",
            sql,
        ])
        .env("PGPASSWORD", PASSWORD)
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .expect("cannot run psql")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_on_the_client_leg_with_scram() {
    if !pg().has_auth_roles() {
        eprintln!("skipped: TANDEM_TEST_PG is set");
        return;
    }
    let mut config = proxy_config();
    config.tls = Some(proxy_tls());
    let proxy = start_proxy_with(config).await;
    let port = proxy.addr.port();
    // sslmode=require fails unless the proxy answered the SSLRequest with TLS.
    let info =
        format!("host=127.0.0.1 port={port} user={SCRAM_USER} dbname=postgres sslmode=require");
    let out = psql(&info, "SELECT current_user");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), SCRAM_USER);
    // Without [tls], the proxy says 'N' and sslmode=require refuses.
    let plain = start_proxy().await;
    let info = format!(
        "host=127.0.0.1 port={} user={SCRAM_USER} dbname=postgres sslmode=require",
        plain.addr.port()
    );
    let out = psql(&info, "SELECT 1");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not support SSL"));
    // sslmode=prefer falls back to plain.
    let info = format!(
        "host=127.0.0.1 port={} user={SCRAM_USER} dbname=postgres sslmode=prefer",
        plain.addr.port()
    );
    assert!(psql(&info, "SELECT 1").status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_on_the_upstream_leg() {
    if !pg().has_auth_roles() {
        eprintln!("skipped: TANDEM_TEST_PG is set");
        return;
    }
    for (mode, ca) in [
        (UpstreamTlsMode::Require, None),
        (
            UpstreamTlsMode::VerifyFull,
            Some(pg().tls.cert_path.clone()),
        ),
    ] {
        let mut config = proxy_config();
        config.upstream_tls = UpstreamTlsConfig { mode, ca };
        let proxy = start_proxy_with(config).await;
        let client = try_connect(&with_password(&proxy_url(&proxy, SCRAM_USER)))
            .await
            .unwrap_or_else(|e| panic!("{mode:?}: {e}"));
        let ssl = tandem_tests::server_sees_ssl(&client).await;
        assert!(ssl, "{mode:?}: upstream leg must be encrypted");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_verify_full_rejects_an_unknown_ca() {
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = std::env::temp_dir().join(tandem_tests::unique("otherca"));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.crt");
    std::fs::write(&ca, other.cert.pem()).unwrap();
    let mut config = proxy_config();
    config.upstream_tls = UpstreamTlsConfig {
        mode: UpstreamTlsMode::VerifyFull,
        ca: Some(ca),
    };
    let proxy = start_proxy_with(config).await;
    let err = expect_failure(
        try_connect(&proxy_url(&proxy, &pg().superuser)).await,
        "must fail",
    );
    let db = err.as_db_error().expect("a FATAL from the proxy");
    assert_eq!(db.code().code(), "08001");
    assert!(
        db.message().contains("TLS handshake with upstream")
            && db.message().contains("not signed by")
            && db.message().contains("upstream_tls.ca"),
        "{}",
        db.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_across_two_tls_legs_is_refused_clearly_or_works_without_binding() {
    if !pg().has_auth_roles() {
        eprintln!("skipped: TANDEM_TEST_PG is set");
        return;
    }
    let mut config = proxy_config();
    config.tls = Some(proxy_tls());
    config.upstream_tls = UpstreamTlsConfig {
        mode: UpstreamTlsMode::Require,
        ca: None,
    };
    let proxy = start_proxy_with(config).await;
    let port = proxy.addr.port();
    // libpq over TLS, not offered SCRAM-SHA-256-PLUS, says "I could bind but you can't" ('y').
    // Postgres on a TLS connection treats that as a downgrade; Tandem explains instead.
    let info =
        format!("host=127.0.0.1 port={port} user={SCRAM_USER} dbname=postgres sslmode=require");
    let out = psql(&info, "SELECT 1");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("channel_binding=disable"), "{stderr}");
    let info = format!(
        "host=127.0.0.1 port={port} user={SCRAM_USER} dbname=postgres sslmode=require channel_binding=disable"
    );
    let out = psql(
        &info,
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "t");
}

/// A self-signed certificate for `names` (its subjectAltNames; none when empty) with
/// Common Name `cn`, marked CA:TRUE as `openssl req -x509` marks it, valid until
/// `not_after` (year) and its key, in PEM.
fn self_signed_ca(names: &[&str], cn: &str, not_after: i32) -> (String, String) {
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.not_before = rcgen::date_time_ymd(2000, 1, 1);
    params.not_after = rcgen::date_time_ymd(not_after, 1, 1);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_accepts_a_self_signed_ca_certificate_as_libpq_does() {
    if !pg().has_auth_roles() {
        eprintln!("skipped: TANDEM_TEST_PG is set; this test starts its own server");
        return;
    }
    // A server of its own: its certificate changes below.
    let (cert_pem, key_pem) = self_signed_ca(&["localhost", "127.0.0.1"], "db", 2100);
    let dir = std::env::temp_dir().join(tandem_tests::unique("selfca"));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.crt");
    std::fs::write(&ca, &cert_pem).unwrap();
    let cluster = tandem::embedded::Cluster::start(&tandem::embedded::ClusterOptions {
        tls: Some(tandem::embedded::ServerTls { cert_pem, key_pem }),
        max_connections: 20,
        version: tandem_tests::requested_version(),
        ..Default::default()
    })
    .expect("start a server");
    let user = cluster.superuser().to_string();
    // Through Tandem with verify-full and that certificate as the CA file, to `host`:
    // whether the session starts encrypted, or the 08001 it gets.
    let through = |host: &'static str| {
        let mut config = proxy_config();
        config.upstream = format!("postgres://{user}@{host}:{}/postgres", cluster.port());
        let user = user.clone();
        config.upstream_tls = UpstreamTlsConfig {
            mode: UpstreamTlsMode::VerifyFull,
            ca: Some(ca.clone()),
        };
        async move {
            let proxy = start_proxy_with(config).await;
            match try_connect(&proxy_url(&proxy, &user)).await {
                Ok(client) => {
                    let ssl = tandem_tests::server_sees_ssl(&client).await;
                    Ok(ssl)
                }
                Err(e) => {
                    let db = e.as_db_error().expect("a FATAL from the proxy");
                    assert_eq!(db.code().code(), "08001", "{}", db.message());
                    Err(db.message().to_string())
                }
            }
        }
    };
    // The server's certificate, replaced and reloaded; the CA file is that certificate.
    let serve = |(cert, key): (String, String)| {
        std::fs::write(cluster.data_dir().join("server.crt"), &cert).unwrap();
        std::fs::write(cluster.data_dir().join("server.key"), &key).unwrap();
        std::fs::write(&ca, &cert).unwrap();
        cluster.psql("postgres", "SELECT pg_reload_conf()").unwrap();
    };

    // CA:TRUE and self-signed, named in its subjectAltNames: rustls alone refused it
    // (CaUsedAsEndEntity); libpq's verify-full takes it.
    assert_eq!(through("127.0.0.1").await, Ok(true));
    assert_eq!(through("localhost").await, Ok(true));

    // PostgreSQL's own recipe: no subjectAltName, the host in the Common Name.
    serve(self_signed_ca(&[], "localhost", 2100));
    // A reload takes effect for new connections once the postmaster has read it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while through("localhost").await != Ok(true) {
        assert!(std::time::Instant::now() < deadline, "never accepted");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // ... and the name still matters.
    let refused = through("127.0.0.1").await.unwrap_err();
    assert!(
        refused.contains("TLS handshake with upstream")
            && refused.contains("does not name this host"),
        "{refused}"
    );

    // Trusted as it stands, but not outside its validity period.
    serve(self_signed_ca(&["localhost", "127.0.0.1"], "db", 2001));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        match through("127.0.0.1").await {
            Err(message) if message.contains("xpired") => break,
            other => {
                assert!(std::time::Instant::now() < deadline, "{other:?}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
