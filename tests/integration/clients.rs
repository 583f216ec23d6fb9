//! Real clients from other ecosystems through the proxy: psql, pgbench, psycopg 3.
//! Each runs once directly and once through Tandem; the results must be identical.

use std::path::PathBuf;
use std::process::Command;

use tandem_tests::{pg, pg_program, pgbench, start_proxy, unique};

fn psql_file(port: u16, file: &PathBuf) -> (String, String, Option<i32>) {
    let out = Command::new(pg_program("psql"))
        .args([
            "-X",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            &pg().superuser,
            "-d",
            &pg().database,
        ])
        .arg("-f")
        .arg(file)
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .expect("cannot run psql");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_script_with_copy_and_an_error_matches_direct() {
    let proxy = start_proxy().await;
    let dir = std::env::temp_dir().join(unique("psql"));
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("in.tsv");
    let rows: String = (1..=500).map(|i| format!("{i}\trow {i}\n")).collect();
    std::fs::write(&data, &rows).unwrap();
    let t = unique("psqlt");
    let run = |out_name: &str| {
        let out_file = dir.join(out_name);
        let script = dir.join(format!("{out_name}.sql"));
        std::fs::write(
            &script,
            format!(
                "CREATE TABLE {t} (id int PRIMARY KEY, v text);\n\
                 \\copy {t} FROM '{}'\n\
                 SELECT count(*), min(v), max(id) FROM {t};\n\
                 INSERT INTO {t} VALUES (1, 'duplicate');\n\
                 BEGIN;\nUPDATE {t} SET v = upper(v) WHERE id <= 3;\nSELECT 1/0;\nCOMMIT;\n\
                 SELECT id, v FROM {t} ORDER BY id LIMIT 4;\n\
                 \\copy (SELECT * FROM {t} WHERE id > 490 ORDER BY id) TO '{}'\n\
                 DROP TABLE {t};\n",
                data.display(),
                out_file.display()
            ),
        )
        .unwrap();
        (script, out_file)
    };
    let (script_d, out_d) = run("direct");
    let (script_p, out_p) = run("proxy");
    let direct = psql_file(pg().port, &script_d);
    let via = psql_file(proxy.addr.port(), &script_p);
    // Error lines name the script file; compare with the file names aligned.
    let align = |s: &str| {
        s.replace(
            &script_p.display().to_string(),
            &script_d.display().to_string(),
        )
    };
    assert_eq!(via.0, direct.0, "stdout differs");
    assert_eq!(align(&via.1), direct.1, "stderr differs");
    assert_eq!(via.2, direct.2);
    assert!(
        direct
            .1
            .contains("duplicate key value violates unique constraint"),
        "{}",
        direct.1
    );
    assert!(direct.1.contains("division by zero"));
    assert!(direct.0.contains("COPY 500"), "{}", direct.0);
    assert_eq!(
        std::fs::read(&out_p).unwrap(),
        std::fs::read(&out_d).unwrap()
    );
    assert_eq!(std::fs::read_to_string(&out_p).unwrap().lines().count(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_init_and_runs_in_every_query_mode() {
    let proxy = start_proxy().await;
    let db = unique("pgb");
    let direct = pg().direct().await;
    direct
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await
        .unwrap();
    let port = proxy.addr.port();
    pgbench(port, &db, &["-i", "-s", "1", "-q"]);
    let check_url = format!(
        "postgres://{}@{}:{}/{db}",
        pg().superuser,
        pg().host,
        pg().port
    );
    let check = tandem_tests::connect_url(&check_url).await;
    let accounts: i64 = check
        .query_one("SELECT count(*) FROM pgbench_accounts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        accounts, 100_000,
        "pgbench -i loaded through the proxy (COPY)"
    );
    for mode in ["simple", "extended", "prepared"] {
        // -n: keep history across runs so every run's writes can be counted.
        let out = pgbench(
            port,
            &db,
            &["-n", "-c", "4", "-j", "2", "-t", "50", "-M", mode],
        );
        assert!(out.contains("number of failed transactions: 0"), "{out}");
        assert!(
            out.contains("number of transactions actually processed: 200/200"),
            "{out}"
        );
    }
    let n: i64 = check
        .query_one("SELECT count(*) FROM pgbench_history", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 600);
    let balanced: bool = check
        .query_one(
            "SELECT (SELECT sum(abalance) FROM pgbench_accounts) = (SELECT sum(delta) FROM pgbench_history)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(balanced);
    drop(check);
    direct
        .batch_execute(&format!("DROP DATABASE {db} WITH (FORCE)"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg3_prepared_statements_and_copy_match_direct() {
    let proxy = start_proxy().await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients/psycopg_check.py");
    let run = |port: u16, table: &str| {
        let dsn = format!(
            "host=127.0.0.1 port={port} user={} dbname={}",
            pg().superuser,
            pg().database
        );
        let out = tandem_tests::python::python_with_psycopg()
            .arg(&script)
            .arg(&dsn)
            .arg(table)
            .output()
            .expect("python3");
        assert!(
            out.status.success(),
            "psycopg client failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let t = unique("psyco");
    let direct = run(pg().port, &t);
    let via = run(proxy.addr.port(), &t);
    assert_eq!(via, direct);
    assert!(direct.contains("\"copy_in_rowcount\": 1000"), "{direct}");
    assert!(direct.contains("23505"), "{direct}");
}
