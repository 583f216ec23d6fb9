//! Bad input and failing peers: no panic, no hang, no leaked upstream connection.
//!
//! Includes the classes behind PgBouncer's CVEs: lying and overflowing lengths before and
//! after authentication, a second StartupMessage during authentication, and an upstream
//! ErrorResponse without a SQLSTATE.

use std::time::Duration;

use tandem_tests::raw::{
    self, fake_login_ok, fake_upstream, first_error, login, message, read_frames,
};
use tandem_tests::{
    expect_failure, pg, proxy_config, proxy_url, start_proxy, start_proxy_with, through,
    try_connect, unique,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(10);

/// Upstream backends whose application_name is `app`.
async fn backends(app: &str) -> i64 {
    let direct = pg().direct().await;
    direct
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            &[&app],
        )
        .await
        .unwrap()
        .get(0)
}

/// Polls until no upstream backend carries `app`, or fails after WAIT.
async fn assert_backend_gone(app: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while backends(app).await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "upstream backend for {app} leaked"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn assert_proxy_still_serves(proxy: &tandem::RunningProxy) {
    let c = through(proxy).await;
    let one: i32 = c.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_clients_refuses_with_53300() {
    let mut config = proxy_config();
    config.limits.max_clients = 2;
    let proxy = start_proxy_with(config).await;
    let a = through(&proxy).await;
    let b = through(&proxy).await;
    let err = expect_failure(
        try_connect(&proxy_url(&proxy, &pg().superuser)).await,
        "third must fail",
    );
    let db = err.as_db_error().expect("an ErrorResponse");
    assert_eq!(db.code().code(), "53300");
    assert_eq!(db.message(), "sorry, too many clients already");
    drop(a);
    // The freed slot is reusable once the session has ended.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if try_connect(&proxy_url(&proxy, &pg().superuser))
            .await
            .is_ok()
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "slot never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_packet_with_lying_lengths_is_dropped() {
    let proxy = start_proxy().await;
    for bytes in [
        vec![0, 0, 0, 3],                // below the minimum
        vec![0xff, 0xff, 0xff, 0xff],    // negative
        vec![0x7f, 0xff, 0xff, 0xff],    // 2 GiB: must not be allocated
        vec![0, 0, 0x27, 0x11, 0, 3, 0], // 10001 bytes: over the startup limit
    ] {
        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        s.write_all(&bytes).await.unwrap();
        let (_, closed) = read_frames(&mut s, WAIT).await;
        assert!(closed, "{bytes:?}: connection must be closed");
    }
    // Garbage such as an HTTP request gets a protocol error, like Postgres gives.
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (_, closed) = read_frames(&mut s, WAIT).await;
    assert!(closed);
    assert_proxy_still_serves(&proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_that_stalls_times_out() {
    let mut config = proxy_config();
    config.limits.startup_timeout_ms = 300;
    let proxy = start_proxy_with(config).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    // Claims 100 bytes, sends 10, then nothing.
    s.write_all(&[0, 0, 0, 100, 0, 3, 0, 0, b'u', 0])
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let (_, closed) = read_frames(&mut s, WAIT).await;
    assert!(closed);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_proxy_still_serves(&proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lying_lengths_after_authentication() {
    let mut config = proxy_config();
    config.limits.max_message_bytes = 4096;
    let proxy = start_proxy_with(config).await;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("short", vec![b'Q', 0, 0, 0, 2]),
        ("negative", vec![b'Q', 0xff, 0xff, 0xff, 0xf0]),
        ("oversized", message(b'Q', &vec![b'x'; 5000])),
        ("overflow", vec![b'P', 0x7f, 0xff, 0xff, 0xff, 0, 0]),
    ];
    for (name, bytes) in cases {
        let app = unique(name);
        let mut s = login(proxy.addr, &pg().superuser, &pg().database, &app).await;
        assert_eq!(backends(&app).await, 1);
        s.write_all(&bytes).await.unwrap();
        let (frames, closed) = read_frames(&mut s, WAIT).await;
        assert!(closed, "{name}: must close");
        let err = first_error(&frames).unwrap_or_else(|| panic!("{name}: no error in {frames:?}"));
        assert_eq!(err.severity, "FATAL");
        assert_eq!(
            err.code.as_deref(),
            Some("08P01"),
            "{name}: {}",
            err.message
        );
        assert_backend_gone(&app).await;
    }
    assert_proxy_still_serves(&proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_startup_message_during_authentication() {
    if !pg().has_auth_roles() {
        eprintln!("skipped: TANDEM_TEST_PG is set");
        return;
    }
    let proxy = start_proxy().await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(&raw::startup(tandem_tests::SCRAM_USER, "postgres", &[]))
        .await
        .unwrap();
    // Wait for the SASL request, then start over instead of answering it.
    let mut head = [0u8; 5];
    s.read_exact(&mut head).await.unwrap();
    assert_eq!(head[0], b'R');
    let mut body = vec![0u8; i32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize - 4];
    s.read_exact(&mut body).await.unwrap();
    assert_eq!(&body[..4], &10i32.to_be_bytes(), "AuthenticationSASL");
    s.write_all(&raw::startup(&pg().superuser, "postgres", &[]))
        .await
        .unwrap();
    let (frames, closed) = read_frames(&mut s, WAIT).await;
    assert!(closed);
    let err = first_error(&frames).expect("a FATAL");
    assert_eq!(err.code.as_deref(), Some("08P01"));
    assert_proxy_still_serves(&proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_error_without_sqlstate_is_relayed() {
    // During startup: the fake upstream refuses with an ErrorResponse that has no 'C' field.
    let no_code = message(b'E', b"SFATAL\0Mno sqlstate here\0\0");
    let reply = no_code.clone();
    let upstream = fake_upstream(move |mut s| {
        let reply = reply.clone();
        async move {
            let _ = s.write_all(&reply).await;
        }
    })
    .await;
    let mut config = proxy_config();
    config.upstream = format!("postgres://x@{upstream}/db");
    let proxy = start_proxy_with(config).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(&raw::startup("u", "db", &[])).await.unwrap();
    let (frames, closed) = read_frames(&mut s, WAIT).await;
    assert!(closed);
    assert_eq!(
        frames,
        vec![(b'E', no_code[5..].to_vec())],
        "relayed byte for byte"
    );

    // After login: a query answered with an SQLSTATE-less error, then the session goes on.
    let upstream = fake_upstream(|mut s| async move {
        let _ = s.write_all(&fake_login_ok()).await;
        let mut buf = [0u8; 1024];
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 || buf[0] == b'X' {
                return;
            }
            let mut reply = message(b'E', b"SERROR\0Mstill no sqlstate\0\0");
            reply.extend(message(b'Z', b"I"));
            let _ = s.write_all(&reply).await;
        }
    })
    .await;
    let mut config = proxy_config();
    config.upstream = format!("postgres://x@{upstream}/db");
    let proxy = start_proxy_with(config).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(&raw::startup("u", "db", &[])).await.unwrap();
    let frames = raw::read_until_ready(&mut s, WAIT).await;
    assert_eq!(frames.last().map(|f| f.0), Some(b'Z'));
    for _ in 0..2 {
        s.write_all(&raw::query("SELECT 1")).await.unwrap();
        let frames = raw::read_until_ready(&mut s, WAIT).await;
        let err = first_error(&frames).expect("relayed error");
        assert_eq!(err.code, None);
        assert_eq!(err.message, "still no sqlstate");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_unreachable_gets_08001() {
    // A port nobody listens on: bind, note it, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = proxy_config();
    config.upstream = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    let proxy = start_proxy_with(config).await;
    let err = expect_failure(
        try_connect(&proxy_url(&proxy, "postgres")).await,
        "must fail",
    );
    let db = err.as_db_error().expect("a FATAL from the proxy");
    assert_eq!(db.code().code(), "08001");
    assert!(
        db.message().contains("could not connect to upstream"),
        "{}",
        db.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_dying_mid_session_gets_08006_and_others_continue() {
    // Fake upstream: logs in, then dies on the first query without a word.
    let upstream = fake_upstream(|mut s| async move {
        let _ = s.write_all(&fake_login_ok()).await;
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf).await;
    })
    .await;
    let mut config = proxy_config();
    config.upstream = format!("postgres://x@{upstream}/db");
    let proxy = start_proxy_with(config).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(&raw::startup("u", "db", &[])).await.unwrap();
    raw::read_until_ready(&mut s, WAIT).await;
    s.write_all(&raw::query("SELECT 1")).await.unwrap();
    let (frames, closed) = read_frames(&mut s, WAIT).await;
    assert!(closed);
    let err = first_error(&frames).expect("an error");
    assert_eq!(err.code.as_deref(), Some("08006"));

    // A real backend terminated by an administrator: the client sees Postgres's own FATAL.
    let proxy = start_proxy().await;
    let victim = through(&proxy).await;
    let survivor = through(&proxy).await;
    let pid: i32 = victim
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    pg().direct()
        .await
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    let err = expect_failure(victim.query_one("SELECT 1", &[]).await, "victim must fail");
    if let Some(db) = err.as_db_error() {
        assert_eq!(db.code().code(), "57P01");
    }
    let one: i32 = survivor.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_vanishing_mid_transaction_rolls_back() {
    let proxy = start_proxy().await;
    let t = unique("vanish");
    let direct = pg().direct().await;
    direct
        .batch_execute(&format!("CREATE TABLE {t} (id int)"))
        .await
        .unwrap();
    let app = unique("vanisher");
    let mut s = login(proxy.addr, &pg().superuser, &pg().database, &app).await;
    s.write_all(&raw::query(&format!("BEGIN; INSERT INTO {t} VALUES (1)")))
        .await
        .unwrap();
    let frames = raw::read_until_ready(&mut s, WAIT).await;
    assert_eq!(
        frames.last().map(|(t, b)| (*t, b.clone())),
        Some((b'Z', b"T".to_vec()))
    );
    drop(s); // no Terminate, no COMMIT
    assert_backend_gone(&app).await;
    let n: i64 = direct
        .query_one(&format!("SELECT count(*) FROM {t}"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_clients_are_closed_when_configured() {
    let mut config = proxy_config();
    config.limits.client_idle_timeout_ms = 300;
    let proxy = start_proxy_with(config).await;
    let app = unique("idler");
    let mut s = login(proxy.addr, &pg().superuser, &pg().database, &app).await;
    let (frames, closed) = read_frames(&mut s, WAIT).await;
    assert!(closed);
    assert_eq!(
        first_error(&frames).and_then(|e| e.code).as_deref(),
        Some("57P05")
    );
    assert_backend_gone(&app).await;
    // A client inside a transaction is not idle: it is left alone.
    let app = unique("busy");
    let mut s = login(proxy.addr, &pg().superuser, &pg().database, &app).await;
    s.write_all(&raw::query("BEGIN")).await.unwrap();
    raw::read_until_ready(&mut s, WAIT).await;
    tokio::time::sleep(Duration::from_millis(900)).await;
    s.write_all(&raw::query("SELECT 1")).await.unwrap();
    let frames = raw::read_until_ready(&mut s, WAIT).await;
    assert!(first_error(&frames).is_none(), "{frames:?}");
    assert_eq!(frames.last().map(|f| f.1.clone()), Some(b"T".to_vec()));
}
