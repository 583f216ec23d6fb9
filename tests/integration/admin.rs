//! The admin console with psql: authentication, every command, transitions, errors.

use std::process::Command;

use tandem::config::AdminConfig;
use tandem_tests::mirror::{config_with, start_ruled_proxy, Kind, Pair};
use tandem_tests::{pg, pg_program, through};

struct Psql {
    stdout: String,
    stderr: String,
    ok: bool,
}

/// Runs psql against the proxy's console with `sql` (`-c`, unaligned, tuples only).
fn psql(port: u16, user: &str, password: &str, db: &str, sql: &str) -> Psql {
    let out = Command::new(pg_program("psql"))
        .arg(format!(
            "postgres://{user}:{password}@127.0.0.1:{port}/{db}?sslmode=disable"
        ))
        .args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-F",
            "|",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ])
        .output()
        .expect("run psql");
    Psql {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        ok: out.status.success(),
    }
}

fn admin_config(pair: &Pair, mode: &str) -> tandem::Config {
    let mut config = config_with(&[pair.rule(Kind::Hash).mode(mode)]);
    config.admin = Some(AdminConfig {
        user: "admin".into(),
        password: Some("s3cret admin".into()),
        password_env: None,
    });
    config
}

fn console(port: u16, sql: &str) -> Psql {
    psql(port, "admin", "s3cret%20admin", "tandem", sql)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_and_changes_rules() {
    let check = pg().direct().await;
    let pair = Pair::new(Kind::Hash);
    pair.create(Kind::Hash, &check).await;
    let config = admin_config(&pair, "off");
    let proxy = start_ruled_proxy(config.clone()).await;
    let port = proxy.addr.port();
    let table = format!("public.{}", pair.legacy);

    let r = console(port, "SHOW RULES");
    assert!(r.ok, "{}", r.stderr);
    assert!(
        r.stdout.contains(&format!(
            "{table}|public.{}||off|0|fail|mirror|idle|[]|off|||false||1|",
            pair.target
        )),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.trim_end().ends_with("|config|true"),
        "{}",
        r.stdout
    );

    // Transitions that would lose data are refused with a hint.
    let r = console(port, &format!("SET RULE {table} MODE cutover"));
    assert!(!r.ok);
    assert!(
        r.stderr.contains("cannot go from off to cutover"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("HINT:"), "{}", r.stderr);

    let r = console(port, &format!("SET RULE {table} MODE dual_write"));
    assert!(r.ok, "{}", r.stderr);
    assert!(r.stdout.contains("|dual_write|"), "{}", r.stdout);
    // Applied on this instance at once: writes through the proxy are mirrored.
    let via = through(&proxy).await;
    via.batch_execute(&pair.sql(
        "INSERT INTO {legacy} (tenant, amount, note, score, token, created_at) \
         VALUES ('acme', 1, 'x', 1, gen_random_uuid(), now())",
    ))
    .await
    .unwrap();
    assert_eq!(pair.counts(&check).await, (1, 1));

    // Cutover needs the target to fill what legacy's defaults fill (the id above all).
    let r = console(port, &format!("SET RULE {table} MODE cutover"));
    assert!(!r.ok);
    assert!(
        r.stderr.contains("id (legacy: DEFAULT nextval(")
            && r.stderr.contains("created_at (legacy: DEFAULT now())"),
        "{}",
        r.stderr
    );
    pair.copy_defaults(&check).await;

    // Cutover needs every legacy key in the target.
    check
        .batch_execute(&pair.sql(
            "INSERT INTO {legacy} (tenant, amount, note, score, token, created_at) \
             VALUES ('globex', 2, 'not backfilled', 1, gen_random_uuid(), now()); \
             DELETE FROM {target} WHERE note = 'not backfilled'",
        ))
        .await
        .unwrap();
    let r = console(port, &format!("SET RULE {table} MODE cutover"));
    assert!(!r.ok);
    assert!(r.stderr.contains("1 legacy rows"), "{}", r.stderr);
    check
        .batch_execute(
            &pair.sql("INSERT INTO {target} SELECT * FROM {legacy} ON CONFLICT DO NOTHING"),
        )
        .await
        .unwrap();
    for mode in [
        "union_read",
        "cutover",
        "dual_write",
        "cutover",
        "target_only",
    ] {
        let r = console(port, &format!("SET RULE {table} MODE {mode}"));
        assert!(r.ok, "{mode}: {}", r.stderr);
    }
    let r = console(port, &format!("SET RULE {table} MODE dual_write"));
    assert!(!r.ok && r.stderr.contains("FORCE"), "{}", r.stderr);
    // Dropping the rule in target_only would send applications back to the stale table.
    let r = console(port, &format!("DROP RULE {table}"));
    assert!(!r.ok && r.stderr.contains("FORCE"), "{}", r.stderr);
    let r = console(port, &format!("SET RULE {table} MODE cutover FORCE"));
    assert!(r.ok, "{}", r.stderr);

    let r = console(port, &format!("SET RULE {table} SAMPLE 0.25"));
    assert!(
        r.ok && r.stdout.contains("|0.25|"),
        "{} {}",
        r.stdout,
        r.stderr
    );
    let r = console(port, &format!("DROP RULE {table}"));
    assert!(!r.ok && r.stderr.contains("SET RULE"), "{}", r.stderr);
    // Back from target_only, cutover is left only once the legacy table is re-synced.
    let r = console(port, &format!("SET RULE {table} MODE off"));
    assert!(
        !r.ok && r.stderr.contains("re-sync") && r.stderr.contains("--reverse"),
        "{}",
        r.stderr
    );
    let mut resync = tandem::ops::backfill::Options::new(tandem_rules::TableName::new(
        Some("public"),
        &pair.legacy,
    ));
    resync.direction = tandem::ops::backfill::Direction::Reverse;
    tandem::ops::backfill::run(&config, &resync, &mut |_| {})
        .await
        .unwrap_or_else(|e| panic!("re-sync: {e}"));
    let r = console(port, &format!("SET RULE {table} MODE off"));
    assert!(r.ok, "{}", r.stderr);
    let r = console(port, &format!("DROP RULE {table}"));
    assert!(r.ok, "{}", r.stderr);
    let r = console(
        port,
        &format!(
            "ADD RULE {table} TARGET public.{} KEY (id) MODE dual_write",
            pair.target
        ),
    );
    assert!(r.ok, "{}", r.stderr);
    let r = console(port, &format!("ADD RULE {table}"));
    assert!(!r.ok && r.stderr.contains("already exists"), "{}", r.stderr);
    let r = console(port, "ADD RULE public.no_such_table");
    assert!(!r.ok && r.stderr.contains("does not exist"), "{}", r.stderr);

    // History of every change, with who made it.
    let schema = proxy_schema(&check, &table).await;
    let n: i64 = check
        .query_one(
            &format!("SELECT count(*) FROM \"{schema}\".rules_history WHERE by = 'admin'"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(n >= 10, "{n} admin changes logged");

    let r = console(port, "SHOW SESSIONS");
    assert!(r.ok, "{}", r.stderr);
    assert!(
        r.stdout.contains(&format!("|{}|", pg().database)),
        "{}",
        r.stdout
    );
    let r = console(port, "SHOW STATS; SHOW VERSION");
    assert!(r.ok && r.stdout.contains("sessions_total|"), "{}", r.stdout);
    let r = console(port, "RELOAD");
    assert!(r.ok, "{}", r.stderr);
}

/// The store schema holding `table`'s rule.
async fn proxy_schema(check: &tokio_postgres::Client, table: &str) -> String {
    for row in check
        .query(
            "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'tandem_store%'",
            &[],
        )
        .await
        .unwrap()
    {
        let schema: String = row.get(0);
        let hit = check
            .query_opt(
                &format!("SELECT 1 FROM \"{schema}\".rules_history WHERE table_name = $1 LIMIT 1"),
                &[&table],
            )
            .await
            .ok()
            .flatten();
        if hit.is_some() {
            return schema;
        }
    }
    panic!("no store holds {table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_admin_with_the_right_password_gets_in() {
    let check = pg().direct().await;
    let pair = Pair::new(Kind::Hash);
    pair.create(Kind::Hash, &check).await;
    let proxy = start_ruled_proxy(admin_config(&pair, "off")).await;
    let port = proxy.addr.port();

    let r = psql(port, "admin", "wrong", "tandem", "SHOW RULES");
    assert!(!r.ok);
    assert!(
        r.stderr
            .contains("password authentication failed for user \"admin\""),
        "{}",
        r.stderr
    );
    let r = psql(port, &pg().superuser, "x", "tandem", "SHOW RULES");
    assert!(!r.ok);
    assert!(r.stderr.contains("only the admin user"), "{}", r.stderr);

    // A bad command: an error with the list of commands, and the session goes on.
    let r = console(port, "SHOW TABLES");
    assert!(!r.ok);
    assert!(r.stderr.contains("unknown SHOW target"), "{}", r.stderr);
    assert!(
        r.stderr.contains("HINT:  commands: SHOW RULES"),
        "{}",
        r.stderr
    );
    let out = Command::new(pg_program("psql"))
        .arg(format!(
            "postgres://admin:s3cret%20admin@127.0.0.1:{port}/tandem"
        ))
        .args(["-X", "-q", "-A", "-t"])
        .arg("-c")
        .arg("SHOW NOTHING")
        .arg("-c")
        .arg("SHOW VERSION")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));

    // A SCRAM verifier in the config works the same.
    let mut config = admin_config(&pair, "off");
    config.admin = Some(AdminConfig {
        user: "ops".into(),
        password: Some(postgres_protocol_verifier("vpw")),
        password_env: None,
    });
    let other = start_ruled_proxy(config).await;
    let r = psql(other.addr.port(), "ops", "vpw", "tandem", "SHOW VERSION");
    assert!(r.ok, "{}", r.stderr);
}

fn postgres_protocol_verifier(password: &str) -> String {
    // What `SELECT rolpassword FROM pg_authid` shows for a SCRAM password.
    let check = std::process::Command::new(pg_program("psql"))
        .arg(pg().direct_url(&pg().superuser))
        .args(["-X", "-q", "-A", "-t", "-c"])
        .arg(format!(
            "SET password_encryption = 'scram-sha-256'; CREATE ROLE tandem_verifier_probe_{n} PASSWORD '{password}'; \
             SELECT rolpassword FROM pg_authid WHERE rolname = 'tandem_verifier_probe_{n}'; DROP ROLE tandem_verifier_probe_{n};",
            n = std::process::id()
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&check.stdout)
        .lines()
        .find(|l| l.starts_with("SCRAM-SHA-256$"))
        .expect("verifier")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_admin_config_there_is_no_console() {
    let proxy = tandem_tests::start_proxy().await;
    let r = psql(proxy.addr.port(), "admin", "x", "tandem", "SHOW RULES");
    assert!(!r.ok);
    assert!(
        r.stderr.contains("database \"tandem\" does not exist"),
        "{}",
        r.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_speaks_to_the_console() {
    let check = pg().direct().await;
    let pair = Pair::new(Kind::Hash);
    pair.create(Kind::Hash, &check).await;
    let proxy = start_ruled_proxy(admin_config(&pair, "off")).await;
    let url = format!(
        "postgres://admin:s3cret%20admin@127.0.0.1:{}/tandem",
        proxy.addr.port()
    );
    let out = tandem::ops::rules::run(&url, "SHOW RULES").await.unwrap();
    let mut lines = out.lines();
    assert!(lines.next().unwrap().starts_with("table "), "{out}");
    assert!(out.contains(&pair.legacy), "{out}");
    assert!(out.ends_with("(1 row)\n"), "{out}");
    let out = tandem::ops::rules::run(
        &url,
        &format!("SET RULE public.{} MODE dual_write", pair.legacy),
    )
    .await
    .unwrap();
    assert!(out.contains("dual_write"), "{out}");
    let err = tandem::ops::rules::run(
        &url,
        &format!("SET RULE public.{} MODE target_only", pair.legacy),
    )
    .await
    .unwrap_err();
    assert!(
        err.message
            .contains("cannot go from dual_write to target_only"),
        "{}",
        err.message
    );
    assert!(err.hint.unwrap().contains("cutover"));
    let err = tandem::ops::rules::run(&url.replace("s3cret%20admin", "nope"), "SHOW RULES")
        .await
        .unwrap_err();
    assert!(
        err.message.contains("password authentication failed"),
        "{}",
        err.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_console_or_upstream_is_named_with_the_reason() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = tandem::ops::rules::run(
        &format!("postgres://admin:x@127.0.0.1:{port}/tandem"),
        "SHOW RULES",
    )
    .await
    .unwrap_err();
    assert!(
        err.message.starts_with(&format!(
            "cannot connect to the admin console at 127.0.0.1:{port}: "
        )) && err.message.contains("refused"),
        "{}",
        err.message
    );
    assert!(err.hint.unwrap().contains("TANDEM_ADMIN_URL"));
    let err = tandem::ops::rules::run(
        &format!("host=/nonexistent port={port} user=admin dbname=tandem"),
        "SHOW RULES",
    )
    .await
    .unwrap_err();
    assert!(
        err.message
            .contains(&format!("/nonexistent/.s.PGSQL.{port}: ")),
        "{}",
        err.message
    );
    // The side connection of every operator command: the address, and the reason once.
    let config = tandem::Config {
        upstream: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
        ..tandem::Config::default()
    };
    let Err(err) = tandem::control::catalog::connect(&config).await else {
        panic!("nothing listens there");
    };
    let text = tandem::error_text::chain(&err);
    assert!(
        text.contains(&format!("upstream 127.0.0.1:{port}: ")),
        "{text}"
    );
    assert_eq!(text.matches("refused").count(), 1, "{text}");
}
