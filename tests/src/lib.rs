//! Test harness: one real Postgres per test process, and proxies started in-process.
//!
//! The server is a throwaway cluster started by [`tandem::embedded`] on a free loopback port
//! (it stops and deletes itself when the process ends, even after a panic), or the server
//! named by `TANDEM_TEST_PG` (a superuser URL). `TANDEM_TEST_PG_VERSION=13` (13 to 18)
//! picks the managed server's major version: an installed one if there is one, else one
//! downloaded once into the cache (see [`tandem::embedded`]). Each test makes its own tables
//! with [`unique`] names, so tests can run in parallel against one server.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use tokio::sync::OnceCell;

use tandem::config::{Config, TlsConfig};
use tandem::embedded::{Cluster, ClusterOptions, ServerTls};
use tandem::RunningProxy;
use tokio_postgres::{Client, NoTls};

/// Password of every password-authenticated test role.
pub const PASSWORD: &str = "s3cret-pw";
/// Role that authenticates with SCRAM-SHA-256.
pub const SCRAM_USER: &str = "tandem_scram";
/// Role that authenticates with md5.
pub const MD5_USER: &str = "tandem_md5";
/// Role that authenticates with a cleartext password.
pub const CLEAR_USER: &str = "tandem_clear";

/// The Postgres every test talks to.
pub struct TestPg {
    /// Host (always loopback for a managed cluster).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Superuser name.
    pub superuser: String,
    /// Database tests use.
    pub database: String,
    /// Present when the harness started the server itself.
    pub cluster: Option<Cluster>,
    /// Certificate material: the server (when managed) and the proxy use it for TLS.
    pub tls: TestTls,
}

/// A self-signed certificate for `localhost`/127.0.0.1 written to files.
pub struct TestTls {
    /// PEM certificate (also the CA, being self-signed).
    pub cert_pem: String,
    /// PEM private key.
    pub key_pem: String,
    /// Path of the certificate file.
    pub cert_path: PathBuf,
    /// Path of the key file.
    pub key_path: PathBuf,
}

impl TestPg {
    /// Whether the auth-method roles exist with known pg_hba rules (managed cluster only).
    pub fn has_auth_roles(&self) -> bool {
        self.cluster.is_some()
    }

    /// Connection string for a user straight to Postgres.
    pub fn direct_url(&self, user: &str) -> String {
        format!(
            "postgres://{user}@{}:{}/{}",
            self.host, self.port, self.database
        )
    }

    /// Superuser connection straight to Postgres.
    pub async fn direct(&self) -> Client {
        connect_url(&self.direct_url(&self.superuser)).await
    }
}

static PG: OnceLock<TestPg> = OnceLock::new();

/// The shared server, started on first use.
pub fn pg() -> &'static TestPg {
    PG.get_or_init(start_pg)
}

fn start_pg() -> TestPg {
    let tls = make_tls();
    if let Ok(url) = std::env::var("TANDEM_TEST_PG") {
        let cfg: tokio_postgres::Config = url
            .parse()
            .expect("TANDEM_TEST_PG is not a connection string");
        let host = match cfg.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            _ => "127.0.0.1".to_string(),
        };
        return TestPg {
            host,
            port: cfg.get_ports().first().copied().unwrap_or(5432),
            superuser: cfg.get_user().unwrap_or("postgres").to_string(),
            database: cfg.get_dbname().unwrap_or("postgres").to_string(),
            cluster: None,
            tls,
        };
    }
    let opts = ClusterOptions {
        version: requested_version(),
        hba_lines: vec![
            format!("host all {SCRAM_USER} 127.0.0.1/32 scram-sha-256"),
            format!("host all {MD5_USER} 127.0.0.1/32 md5"),
            format!("host all {CLEAR_USER} 127.0.0.1/32 password"),
        ],
        tls: Some(ServerTls {
            cert_pem: tls.cert_pem.clone(),
            key_pem: tls.key_pem.clone(),
        }),
        ..ClusterOptions::default()
    };
    let cluster = Cluster::start(&opts).expect("cannot start a throwaway Postgres for the tests");
    let setup = format!(
        "SET password_encryption = 'scram-sha-256';
         CREATE ROLE {SCRAM_USER} LOGIN SUPERUSER PASSWORD '{PASSWORD}';
         CREATE ROLE {CLEAR_USER} LOGIN PASSWORD '{PASSWORD}';
         SET password_encryption = 'md5';
         CREATE ROLE {MD5_USER} LOGIN PASSWORD '{PASSWORD}';"
    );
    cluster
        .psql("postgres", &setup)
        .expect("cannot create test roles");
    // Straight to stderr (not captured by the test harness): which server this run tests.
    let _ = writeln!(
        std::io::stderr(),
        "tandem tests: throwaway PostgreSQL from {} on 127.0.0.1:{}",
        cluster.bin_dir().display(),
        cluster.port()
    );
    TestPg {
        host: cluster.host().to_string(),
        port: cluster.port(),
        superuser: cluster.superuser().to_string(),
        database: "postgres".to_string(),
        cluster: Some(cluster),
        tls,
    }
}

/// The major version `TANDEM_TEST_PG_VERSION` asks for, if any: every cluster a test
/// starts uses it.
pub fn requested_version() -> Option<u32> {
    let v = std::env::var("TANDEM_TEST_PG_VERSION").ok()?;
    let v = v.trim();
    if v.is_empty() {
        return None;
    }
    Some(
        v.parse()
            .unwrap_or_else(|_| panic!("TANDEM_TEST_PG_VERSION={v:?} is not a major version")),
    )
}

fn make_tls() -> TestTls {
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("cannot generate a test certificate");
    let cert_pem = cert.cert.pem();
    let key_pem = cert.signing_key.serialize_pem();
    let dir = std::env::temp_dir().join(format!("tandem-test-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("cannot create TLS temp dir");
    let cert_path = dir.join("server.crt");
    let key_path = dir.join("server.key");
    std::fs::write(&cert_path, &cert_pem).expect("cannot write cert");
    std::fs::write(&key_path, &key_pem).expect("cannot write key");
    TestTls {
        cert_pem,
        key_pem,
        cert_path,
        key_path,
    }
}

/// A name no other test in this process uses: `<prefix>_<pid>_<n>`, `n` zero-padded so
/// that names made with one prefix have one length (twins' error positions then agree).
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}_{}_{:05}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A proxy config pointing at the test server, listening on a free port.
pub fn proxy_config() -> Config {
    let pg = pg();
    Config {
        listen: "127.0.0.1:0".to_string(),
        upstream: format!(
            "postgres://{}@{}:{}/{}",
            pg.superuser, pg.host, pg.port, pg.database
        ),
        ..Config::default()
    }
}

/// The proxy's client-facing TLS config from the test certificate.
pub fn proxy_tls() -> TlsConfig {
    let tls = &pg().tls;
    TlsConfig {
        cert: tls.cert_path.clone(),
        key: tls.key_path.clone(),
    }
}

/// Starts a proxy in this process with the default test config.
pub async fn start_proxy() -> RunningProxy {
    start_proxy_with(proxy_config()).await
}

/// Starts a proxy in this process with the given config.
pub async fn start_proxy_with(config: Config) -> RunningProxy {
    init_logging();
    RunningProxy::start(config)
        .await
        .expect("cannot start proxy")
}

/// A connection string through the proxy.
pub fn proxy_url(proxy: &RunningProxy, user: &str) -> String {
    format!(
        "postgres://{user}@127.0.0.1:{}/{}",
        proxy.addr.port(),
        pg().database
    )
}

/// Connects with tokio-postgres, driving the connection in the background.
pub async fn connect_url(url: &str) -> Client {
    try_connect(url)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"))
}

/// Connects, returning the error instead of panicking.
pub async fn try_connect(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// Superuser connection through a proxy.
pub async fn through(proxy: &RunningProxy) -> Client {
    connect_url(&proxy_url(proxy, &pg().superuser)).await
}

/// Logs go to the test output when `RUST_LOG` is set.
pub fn init_logging() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    }
}

/// Path of a PostgreSQL client program (`psql`, `pgbench`): beside the server, on PATH, or
/// fetched once into the cache (see [`tandem::embedded::client_program`]).
pub fn pg_program(name: &str) -> PathBuf {
    static FOUND: std::sync::Mutex<Vec<(String, PathBuf)>> = std::sync::Mutex::new(Vec::new());
    let mut found = FOUND.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, path)) = found.iter().find(|(n, _)| n == name) {
        return path.clone();
    }
    let near = pg().cluster.as_ref().map(|c| c.bin_dir().to_path_buf());
    let path = tandem::embedded::client_program(name, near.as_deref())
        .unwrap_or_else(|e| panic!("cannot find or fetch {name}: {e}"));
    found.push((name.to_owned(), path.clone()));
    path
}

/// The server's `server_version_num` (e.g. 150018), asked once.
pub async fn server_version_num() -> u32 {
    static NUM: OnceCell<u32> = OnceCell::const_new();
    *NUM.get_or_init(|| async {
        let client = pg().direct().await;
        let row = client
            .query_one("SELECT current_setting('server_version_num')::int", &[])
            .await
            .expect("server_version_num");
        u32::try_from(row.get::<_, i32>(0)).unwrap_or(0)
    })
    .await
}

/// The server's major version (13 to 18).
pub async fn server_major() -> u32 {
    server_version_num().await / 10_000
}

/// Whether the server has MERGE (PostgreSQL 15 and later); before that a MERGE is the
/// server's own syntax error (42601), which Tandem passes on.
pub async fn server_has_merge() -> bool {
    server_major().await >= 15
}

/// Whether Tandem mirrors a MERGE into a ruled table on this server (PostgreSQL 17 and
/// later: MERGE ... RETURNING inside WITH); on 15 and 16 it refuses it (0A000).
pub async fn server_mirrors_merge() -> bool {
    server_major().await >= 17
}

/// Whether Tandem refuses a MERGE into a ruled table on this server: it has MERGE, but not
/// yet MERGE ... RETURNING (15, 16).
pub async fn server_refuses_merge() -> bool {
    server_has_merge().await && !server_mirrors_merge().await
}

pub mod mirror;
pub mod pgbouncer;
pub mod python;
pub mod raw;

/// Rows of `legacy` not in `target`, and of `target` not in `legacy`, compared on `cols`
/// (a column list), in one snapshot.
pub async fn disagreement(
    check: &mut Client,
    legacy: &str,
    target: &str,
    cols: &str,
) -> (i64, i64) {
    let tx = check
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .unwrap();
    let row = tx
        .query_one(
            &format!(
                "SELECT (SELECT count(*) FROM (SELECT {cols} FROM {legacy} EXCEPT SELECT {cols} FROM {target}) a), \
                        (SELECT count(*) FROM (SELECT {cols} FROM {target} EXCEPT SELECT {cols} FROM {legacy}) b)"
            ),
            &[],
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();
    (row.get(0), row.get(1))
}

/// Whether `client`'s connection to the server is encrypted, as the server sees it.
pub async fn server_sees_ssl(client: &Client) -> bool {
    client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// The error of a result that must have failed (for values that are not `Debug`).
pub fn expect_failure<T, E>(result: Result<T, E>, what: &str) -> E {
    match result {
        Ok(_) => panic!("{what}"),
        Err(e) => e,
    }
}

/// Runs pgbench against `127.0.0.1:port` as the superuser on `db`; panics with its output
/// when it fails, returns its stdout.
pub fn pgbench(port: u16, db: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(pg_program("pgbench"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            &pg().superuser,
        ])
        .args(args)
        .arg(db)
        .output()
        .expect("cannot run pgbench");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "pgbench {args:?} failed:\n{stdout}\n{stderr}"
    );
    stdout
}
