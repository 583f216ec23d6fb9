//! Graceful shutdown, the `tandem` binary's config errors, and `tandem demo`.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use tandem_tests::raw::{self, first_error, login, read_frames, read_until_ready};
use tandem_tests::{pg, proxy_config, start_proxy_with, unique};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_transactions_and_closes_idle_sessions() {
    let mut config = proxy_config();
    config.limits.shutdown_timeout_ms = 10_000;
    let proxy = start_proxy_with(config).await;
    let addr = proxy.addr;
    let t = unique("drain");
    pg().direct()
        .await
        .batch_execute(&format!("CREATE TABLE {t} (id int)"))
        .await
        .unwrap();

    let mut idle = login(addr, &pg().superuser, &pg().database, &unique("idle")).await;
    let mut busy = login(addr, &pg().superuser, &pg().database, &unique("busy")).await;
    busy.write_all(&raw::query(&format!("BEGIN; INSERT INTO {t} VALUES (1)")))
        .await
        .unwrap();
    read_until_ready(&mut busy, WAIT).await;

    let stopping = tokio::spawn(proxy.shutdown());

    // The idle session is told why and closed.
    let (frames, closed) = read_frames(&mut idle, WAIT).await;
    assert!(closed);
    assert_eq!(
        first_error(&frames).and_then(|e| e.code).as_deref(),
        Some("57P01")
    );

    // New clients are no longer accepted.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "listener must be closed"
    );

    // The open transaction may finish; its COMMIT is answered, then the session closes.
    busy.write_all(&raw::query(&format!("INSERT INTO {t} VALUES (2); COMMIT")))
        .await
        .unwrap();
    let (frames, closed) = read_frames(&mut busy, WAIT).await;
    assert!(closed);
    let tags: Vec<String> = frames
        .iter()
        .filter(|(t, _)| *t == b'C')
        .map(|(_, b)| String::from_utf8_lossy(&b[..b.len() - 1]).into_owned())
        .collect();
    assert_eq!(tags, vec!["INSERT 0 1", "COMMIT"]);
    assert_eq!(
        first_error(&frames).and_then(|e| e.code).as_deref(),
        Some("57P01")
    );
    stopping.await.unwrap().unwrap();
    let n: i64 = pg()
        .direct()
        .await
        .query_one(&format!("SELECT count(*) FROM {t}"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2, "the drained transaction committed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_timeout_closes_stuck_sessions() {
    let mut config = proxy_config();
    config.limits.shutdown_timeout_ms = 300;
    let proxy = start_proxy_with(config).await;
    let app = unique("stuck");
    let mut s = login(proxy.addr, &pg().superuser, &pg().database, &app).await;
    s.write_all(&raw::query("BEGIN")).await.unwrap();
    read_until_ready(&mut s, WAIT).await;
    let started = std::time::Instant::now();
    proxy.shutdown().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    let (_, closed) = read_frames(&mut s, WAIT).await;
    assert!(closed);
}

/// The `tandem` binary, built by cargo for this workspace.
pub fn tandem_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/integration-<hash> -> target/<profile>/tandem
    let profile_dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let bin = profile_dir.join("tandem");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let release = profile_dir.ends_with("release");
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", "tandem", "--bin", "tandem"]);
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("cannot run cargo build");
        assert!(status.success(), "cargo build of tandem failed");
    }
    bin
}

#[test]
fn bad_config_file_exits_2_with_one_line_naming_the_key() {
    let dir = std::env::temp_dir().join(unique("cfg"));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        ("[limits]\nmax_clients = \"lots\"\n", "limits.max_clients"),
        ("listen = \"not an address\"\n", "listen"),
        ("upstream_tls = { mode = \"sometimes\" }\n", "upstream_tls"),
        ("unknown_key = 1\n", "unknown_key"),
    ];
    for (text, key) in cases {
        let path = dir.join("tandem.toml");
        std::fs::write(&path, text).unwrap();
        for args in [vec!["check-config", "--config"], vec!["serve", "--config"]] {
            let out = Command::new(tandem_bin())
                .args(&args)
                .arg(&path)
                .stdin(Stdio::null())
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(2), "{text}");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
            assert!(stderr.contains(key), "{key} not in {stderr}");
        }
    }
}

#[test]
fn demo_runs_a_throwaway_postgres_and_cleans_up() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(tandem_bin())
        .args(["demo", "--listen", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    let result = rt.block_on(async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(c) = tandem_tests::try_connect(&url).await {
                return Some(c);
            }
            if tokio::time::Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let client = result.unwrap_or_else(|| {
        let _ = child.kill();
        panic!("demo never accepted a connection");
    });
    let rows = rt.block_on(async {
        client
            .query("SELECT count(*) FROM public.orders", &[])
            .await
            .map(|r| r[0].get::<_, i64>(0))
    });
    assert!(rows.unwrap() > 0, "demo has sample rows");
    let parted: bool = rt
        .block_on(client.query_one(
            "SELECT relkind = 'p' FROM pg_class WHERE oid = 'public.orders_v2'::regclass",
            &[],
        ))
        .unwrap()
        .get(0);
    assert!(parted, "demo target is partitioned");
    // The demo's rule is in dual_write: a write through the proxy lands in both tables.
    let id: i64 = rt
        .block_on(client.query_one(
            "INSERT INTO orders (tenant, amount) VALUES ('acme', 9.99) RETURNING id",
            &[],
        ))
        .unwrap()
        .get(0);
    let mirrored: i64 = rt
        .block_on(client.query_one("SELECT count(*) FROM orders_v2 WHERE id = $1", &[&id]))
        .unwrap()
        .get(0);
    assert_eq!(mirrored, 1, "demo dual-writes into orders_v2");
    drop(client);
    nix_kill_int(child.id());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Logs go to stderr, without colour codes when it is not a terminal.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("tandem accepting connections"), "{stderr}");
    assert!(!out.stderr.contains(&0x1b), "ANSI escapes in {stderr:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "psql postgres://postgres@127.0.0.1:{port}/postgres"
        )),
        "{stdout}"
    );
}

/// `log_format`: plain text or one JSON object per line, and no ANSI colour codes in either
/// when stderr is not a terminal (a file, a pipe to a log shipper).
#[test]
fn logs_are_text_or_json_lines_without_colour_codes_off_a_terminal() {
    use std::io::BufRead;
    for format in ["text", "json"] {
        // No rules and no admin console: serve never connects upstream on its own.
        let mut child = Command::new(tandem_bin())
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(["--upstream", "postgres://127.0.0.1:1/nowhere"])
            .args(["--log-format", format])
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().expect("piped stderr");
        let mut lines = std::io::BufReader::new(stderr).lines();
        let mut seen = Vec::new();
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            let started = line.contains("tandem accepting connections");
            seen.push(line);
            if started {
                break;
            }
        }
        nix_kill_int(child.id());
        seen.extend(lines.map_while(Result::ok));
        let status = child.wait().unwrap();
        assert!(status.success(), "{format}: {seen:?}");
        assert!(
            seen.iter()
                .any(|l| l.contains("tandem accepting connections")),
            "{format}: {seen:?}"
        );
        assert!(
            seen.iter().any(|l| l.contains("tandem stopped")),
            "{format}: {seen:?}"
        );
        for line in &seen {
            assert!(
                !line.contains('\u{1b}'),
                "{format}: ANSI escape in {line:?}"
            );
            if format == "json" {
                let value: serde_json::Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
                assert!(value.get("level").is_some(), "{line}");
            }
        }
    }
}

fn nix_kill_int(pid: u32) {
    let _ = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status();
}
