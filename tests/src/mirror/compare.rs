//! Comparing results: `EXCEPT ALL` table diffs, rows as text, command counts, server
//! error codes, and tokio-postgres rows in wire form with volatile columns masked.

use tokio_postgres::types::{FromSql, Type};
use tokio_postgres::{Client, SimpleQueryMessage};

use super::VOLATILE_COLUMNS;

/// Rows in `left` but not `right` and the other way round (`EXCEPT ALL` both ways), as
/// text, each prefixed with the table it is only in. Empty when the tables hold the same rows.
pub async fn diff(check: &Client, left: &str, right: &str, columns: &str) -> Vec<String> {
    rows_text(check, &diff_sql(left, right, columns)).await
}

/// The query [`diff`] runs, to run it elsewhere (inside a session's open transaction).
pub fn diff_sql(left: &str, right: &str, columns: &str) -> String {
    format!(
        "SELECT 'only in {left}: ' || r::text FROM (SELECT {columns} FROM {left} \
         EXCEPT ALL SELECT {columns} FROM {right}) r \
         UNION ALL \
         SELECT 'only in {right}: ' || r::text FROM (SELECT {columns} FROM {right} \
         EXCEPT ALL SELECT {columns} FROM {left}) r"
    )
}

/// The first column of every row of `sql`, as text (NULL as `NULL`).
pub async fn rows_text(client: &Client, sql: &str) -> Vec<String> {
    let msgs = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", db_text(&e)));
    msgs.iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("NULL").to_string()),
            _ => None,
        })
        .collect()
}

/// The CommandComplete row counts of a simple query, in order.
pub fn simple_counts(msgs: &[SimpleQueryMessage]) -> Vec<u64> {
    msgs.iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::CommandComplete(n) => Some(*n),
            _ => None,
        })
        .collect()
}

/// The SQLSTATE of a failed call, or `"-"` when the error did not come from the server.
pub fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.code().code().to_string())
        .unwrap_or_else(|| "-".to_string())
}

/// `CODE: message` of a server error, or the error's text, for assertion messages.
pub fn db_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{}: {}", d.code().code(), d.message()),
        None => e.to_string(),
    }
}

/// Any value in its wire form (binary for tokio-postgres results), to compare results
/// without knowing their types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireValue(pub Option<Vec<u8>>);

impl<'a> FromSql<'a> for WireValue {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(WireValue(Some(raw.to_vec())))
    }
    fn from_sql_null(_: &Type) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(WireValue(None))
    }
    fn accepts(_: &Type) -> bool {
        true
    }
}

/// tokio-postgres rows as wire values, sorted, with [`VOLATILE_COLUMNS`] reduced to whether
/// they are NULL: comparable across the twins.
pub fn wire_rows(rows: &[tokio_postgres::Row]) -> Vec<Vec<WireValue>> {
    let mut out: Vec<Vec<WireValue>> = rows
        .iter()
        .map(|row| {
            (0..row.len())
                .map(|i| {
                    let value: WireValue = row.get(i);
                    if VOLATILE_COLUMNS.contains(&row.columns()[i].name()) {
                        WireValue(value.0.map(|_| b"<set>".to_vec()))
                    } else {
                        value
                    }
                })
                .collect()
        })
        .collect();
    out.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
    out
}
