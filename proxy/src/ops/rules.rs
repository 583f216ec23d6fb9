//! `tandem rules ...`: the admin console from scripts and CI pipelines.
//!
//! Each subcommand is one console command sent with the simple protocol over an ordinary
//! Postgres connection (tokio-postgres), so the console stays the single path for rule
//! changes, with its validation and history. TLS follows the admin URL's `sslmode` as libpq
//! does (`prefer` by default: TLS when the proxy's listener has `[tls]`; `require`; or
//! `disable`), with rustls: the certificate is verified, with the host name, only against a
//! CA file given (`--admin-ca`), as libpq's `verify-full`; otherwise it is not, as libpq's
//! `require`.

use std::path::Path;
use std::str::FromStr;

use tokio_postgres::SimpleQueryMessage;

/// A console error as the CLI prints it.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CliError {
    /// The server's (or connection's) message.
    pub message: String,
    /// Its hint, when there is one.
    pub hint: Option<String>,
}

/// Runs one console command against `admin_url`; returns its result as aligned text.
pub async fn run(admin_url: &str, command: &str) -> Result<String, CliError> {
    run_with_ca(admin_url, command, None).await
}

/// As [`run`], verifying the console's TLS certificate against the CA(s) in `ca`.
pub async fn run_with_ca(
    admin_url: &str,
    command: &str,
    ca: Option<&Path>,
) -> Result<String, CliError> {
    let tls = crate::wire::tls::client_config(ca, "--admin-ca").map_err(|e| CliError {
        message: e.to_string(),
        hint: None,
    })?;
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls);
    let config = tokio_postgres::Config::from_str(admin_url).map_err(|e| CliError {
        message: format!(
            "the admin URL is not a connection string ({})",
            crate::error_text::chain(&e)
        ),
        hint: Some("e.g. --admin postgres://admin:secret@127.0.0.1:6432/tandem".into()),
    })?;
    let (client, connection) = config
        .connect(tls)
        .await
        .map_err(|e| connect_error(&config, &e))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let messages = client.simple_query(command).await.map_err(|e| error(&e))?;
    // One table per command (`SHOW PARITY; SHOW STATS` prints two).
    let mut tables = Vec::new();
    let mut header: Vec<String> = Vec::new();
    let mut rows: Vec<Vec<String>> = Vec::new();
    for message in messages {
        match message {
            // Sent before the rows, and alone when there are none (an empty SHOW RULES).
            SimpleQueryMessage::RowDescription(columns) => {
                header = columns.iter().map(|c| c.name().to_string()).collect();
            }
            SimpleQueryMessage::Row(row) => {
                if header.is_empty() {
                    header = row.columns().iter().map(|c| c.name().to_string()).collect();
                }
                rows.push(
                    (0..row.len())
                        .map(|i| row.get(i).unwrap_or("").to_string())
                        .collect(),
                );
            }
            SimpleQueryMessage::CommandComplete(_) => {
                let text = table(&header, &rows);
                if !text.is_empty() {
                    tables.push(text);
                }
                header.clear();
                rows.clear();
            }
            _ => {}
        }
    }
    Ok(tables.join("\n"))
}

/// A failed connection to the console: where, why, and what to check.
fn connect_error(config: &tokio_postgres::Config, e: &tokio_postgres::Error) -> CliError {
    if e.as_db_error().is_some() {
        return error(e);
    }
    CliError {
        message: format!(
            "cannot connect to the admin console at {}: {}",
            endpoint(config),
            crate::error_text::chain(e)
        ),
        hint: Some(
            "check that tandem serve runs there with an [admin] section, and the URL \
             (--admin or TANDEM_ADMIN_URL)"
                .into(),
        ),
    }
}

/// `host:port` (or the socket path) a connection string points at, as libpq would try it.
fn endpoint(config: &tokio_postgres::Config) -> String {
    let port = config.get_ports().first().copied().unwrap_or(5432);
    match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => format!("{host}:{port}"),
        Some(tokio_postgres::config::Host::Unix(dir)) => {
            format!("{}/.s.PGSQL.{port}", dir.display())
        }
        None => format!("localhost:{port}"),
    }
}

fn error(e: &tokio_postgres::Error) -> CliError {
    match e.as_db_error() {
        Some(db) => CliError {
            message: format!("{}: {}", db.severity(), db.message()),
            hint: db.hint().map(str::to_string),
        },
        None => CliError {
            message: crate::error_text::chain(e),
            hint: None,
        },
    }
}

/// psql-style aligned columns.
fn table(header: &[String], rows: &[Vec<String>]) -> String {
    if header.is_empty() {
        return String::new();
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, v) in widths.iter_mut().zip(row) {
            *w = (*w).max(v.chars().count());
        }
    }
    let line = |cells: &[String]| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join(" | ")
            .trim_end()
            .to_string()
    };
    let mut out = line(header);
    out.push('\n');
    out.push_str(
        &widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("-+-"),
    );
    out.push('\n');
    for row in rows {
        out.push_str(&line(row));
        out.push('\n');
    }
    out.push_str(&format!(
        "({} row{})\n",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" }
    ));
    out
}
