//! `tandem demo`: a throwaway Postgres, a sample schema, and the proxy in front of it.
//!
//! A newcomer sees Tandem work with no setup: the cluster lives in a temp dir, has a legacy
//! table `orders` with rows and an empty LIST-partitioned target `orders_v2` built as
//! `tandem init` builds it (see `tandem::ops::demo`), and is stopped and deleted on Ctrl-C
//! (or if this process dies).

use anyhow::Context;
use tandem::config::Config;
use tandem::embedded::{Cluster, ClusterOptions};
use tandem::Proxy;
use tokio::net::TcpListener;

/// `tandem demo`.
#[derive(clap::Args)]
pub struct Args {
    /// Listen address for the proxy.
    #[arg(long, default_value = "127.0.0.1:6432")]
    listen: String,
    /// PostgreSQL major version (13 to 18); by default any installed one, else 15. A major
    /// that is not installed is downloaded once from the npm registry.
    #[arg(long, value_name = "MAJOR")]
    pg_version: Option<u32>,
    /// Serve the Prometheus metrics endpoint on this address too (e.g. 127.0.0.1:9187).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,
}

/// Runs the demo until SIGINT/SIGTERM.
pub fn main(args: Args) -> std::process::ExitCode {
    super::init_logging("info", tandem::config::LogFormat::Text);
    super::run(async move { run(args.listen, args.pg_version, args.metrics).await })
}

/// Starts the cluster, loads the sample schema and serves until a signal.
async fn run(listen: String, version: Option<u32>, metrics: Option<String>) -> anyhow::Result<()> {
    println!("tandem demo: starting a throwaway PostgreSQL...");
    let options = ClusterOptions {
        version,
        ..ClusterOptions::default()
    };
    let cluster = tokio::task::spawn_blocking(move || Cluster::start(&options))
        .await
        .context("cluster start task failed")?
        .context("cannot start a throwaway PostgreSQL")?;
    let psql = psql_command(&cluster)?;
    let mut config = Config::parse(
        &format!(
            "listen = {listen:?}\nupstream = {:?}\n\n[admin]\nuser = \"admin\"\npassword = \"demo\"\n",
            cluster.url("postgres")
        ),
        "demo config",
    )?;
    config.limits.shutdown_timeout_ms = 2_000;
    config.metrics.listen = metrics.clone();
    config.validate()?;
    tandem::ops::demo::prepare(&config, "public").await?;
    let addr = config.listen_addr()?;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let addr = listener.local_addr()?;
    let proxy = Proxy::new(config.clone()).await?;
    let guard = guard_state(&config).await;

    println!(
        "tandem demo: PostgreSQL on 127.0.0.1:{} (data in {})",
        cluster.port(),
        cluster.data_dir().display()
    );
    println!("tandem demo: legacy table public.orders (1000 rows), target public.orders_v2 (LIST by tenant, empty)");
    println!("tandem demo: rule: public.orders -> public.orders_v2 in dual_write; try");
    println!("    INSERT INTO orders (tenant, amount) VALUES ('acme', 9.99) RETURNING id;");
    println!("    SELECT * FROM orders_v2;");
    println!(
        "tandem demo: guard {guard}: a write that bypasses the proxy is mirrored by the database too; try, straight to PostgreSQL,"
    );
    println!(
        "    {psql} {} -c \"UPDATE orders SET status = 'paid' WHERE id = 1\" -c \"SELECT * FROM orders_v2 WHERE id = 1\"",
        cluster.url("postgres")
    );
    println!("tandem demo: proxy listening on {addr}; connect with:");
    println!();
    println!("    {psql} postgres://postgres@{addr}/postgres");
    println!();
    println!(
        "tandem demo: the admin console (SHOW RULES, SET RULE public.orders MODE union_read, ...):"
    );
    println!();
    println!("    {psql} postgres://admin:demo@{addr}/tandem");
    println!();
    println!(
        "tandem demo: the runbook (docs/runbook.md) walks the table to target_only from there;"
    );
    println!("tandem demo: its backfill and parity commands, for this demo (another terminal):");
    println!();
    let upstream = cluster.url("postgres");
    println!("    tandem backfill --upstream {upstream} --table public.orders");
    println!("    tandem parity --upstream {upstream} --table public.orders --strict");
    println!();
    if let Some(metrics) = &metrics {
        println!(
            "tandem demo: metrics (Prometheus text), e.g. while pgbench runs through the proxy:"
        );
        println!();
        println!(
            "    curl -s http://{metrics}/metrics | grep -E '^tandem_(queries|mirrored|guard)'"
        );
        println!();
    }
    println!("tandem demo: Ctrl-C stops the proxy and deletes the cluster.");
    proxy.serve(listener, super::shutdown_signal()).await?;
    tokio::task::spawn_blocking(move || cluster.stop()).await?;
    println!("tandem demo: stopped and cleaned up.");
    Ok(())
}

/// The demo rule's guard as SHOW RULES shows it (`mirror, in place`), or why it is unknown.
async fn guard_state(config: &Config) -> String {
    let client = match tandem::control::catalog::connect(config).await {
        Ok(c) => c,
        Err(e) => return format!("state unknown ({e})"),
    };
    let store = tandem::control::store::Store::new(&config.store.schema);
    match tandem::control::guard::states(&client, &store).await {
        Ok(mut states) => match states.remove("public.orders") {
            Some(g) => format!("mirror, {}", g.describe()),
            None => "missing".into(),
        },
        Err(e) => format!("state unknown ({})", tandem::control::catalog::describe(&e)),
    }
}

/// How to run psql here: `psql` when it is on PATH, else the full path of the one we found
/// or fetched.
fn psql_command(cluster: &Cluster) -> anyhow::Result<String> {
    let path = tandem::embedded::client_program("psql", Some(cluster.bin_dir()))
        .context("cannot find or fetch psql")?;
    let on_path = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join("psql").is_file()));
    Ok(if on_path {
        "psql".to_owned()
    } else {
        path.display().to_string()
    })
}
