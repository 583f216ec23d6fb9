//! `tandem rules ...`: the admin console from scripts and CI pipelines.
//!
//! Each subcommand is one console command sent with the simple protocol over an ordinary
//! Postgres connection (tokio-postgres, no TLS: the console runs on the proxy's listener,
//! usually on a private network; use psql with sslmode when the listener has TLS), so the
//! console stays the single path for rule changes, with its validation and history.

use tokio_postgres::{NoTls, SimpleQueryMessage};

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
    let (client, connection) = tokio_postgres::connect(admin_url, NoTls)
        .await
        .map_err(|e| error(&e))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let messages = client.simple_query(command).await.map_err(|e| error(&e))?;
    let mut header: Vec<String> = Vec::new();
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut tags = Vec::new();
    for message in messages {
        match message {
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
            SimpleQueryMessage::CommandComplete(n) => tags.push(n),
            _ => {}
        }
    }
    Ok(table(&header, &rows))
}

fn error(e: &tokio_postgres::Error) -> CliError {
    match e.as_db_error() {
        Some(db) => CliError {
            message: format!("{}: {}", db.severity(), db.message()),
            hint: db.hint().map(str::to_string),
        },
        None => CliError {
            message: e.to_string(),
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
