//! What the planner decides, as types the per-statement rewrites build and the proxy reads.
//!
//! A client's SQL string becomes a [`Plan`]: pass it through, send rewritten statements
//! ([`StatementPlan`], each with the [`ResponseFix`] that turns the server's answer back
//! into the client's), mirror a `COPY FROM STDIN` ([`CopyIn`]), or refuse. The planner
//! itself is in `planner`; this module imports none of the rewrites, so they can all
//! import it.

use crate::name::TableName;
use crate::refusal::Rejection;
use crate::rule::MirrorErrorPolicy;

/// What the proxy does with a client's SQL string.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Plan {
    /// No statement writes a ruled table in a mode that mirrors: send the client's text
    /// unchanged.
    Passthrough,
    /// One entry per statement of the client's string, in order. Send them joined with
    /// [`join_statements`], or one by one, and fix each one's responses.
    Rewritten(Vec<StatementPlan>),
    /// Tandem cannot mirror this write with certainty: fail closed (or record drift when the
    /// rejection's policy is `Record`).
    Reject(Rejection),
    /// `COPY <ruled table> FROM STDIN`: the proxy mirrors the data stream itself.
    CopyIn(CopyIn),
}

/// One statement of the client's string, as it must be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementPlan {
    /// The SQL to send: the client's own text when untouched.
    pub sql: String,
    /// How to turn the server's responses back into what the client expects.
    pub response: ResponseFix,
    /// The ruled table this statement mirrors, when it was rewritten.
    pub rule_table: Option<TableName>,
    /// The rule's error policy, when it was rewritten.
    pub policy: Option<MirrorErrorPolicy>,
}

impl StatementPlan {
    /// The client's own statement, sent as it is.
    pub(crate) fn untouched(sql: &str) -> Self {
        Self {
            sql: sql.to_string(),
            response: ResponseFix::None,
            rule_table: None,
            policy: None,
        }
    }
}

/// Where a result column comes from, as a RowDescription names it: the table's OID and
/// the column's attribute number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColumnOrigin {
    /// `pg_class.oid` of the table.
    pub table_oid: u32,
    /// `pg_attribute.attnum` of the column.
    pub attnum: i16,
}

/// How the responses of a sent statement map back to the client's statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseFix {
    /// Forward the responses as they are: the statement is untouched, or (TRUNCATE) rewritten
    /// in a way that keeps its command tag.
    None,
    /// Rewritten mirror of a write. The sent statement is a SELECT whose rows are the
    /// client's RETURNING rows (zero-column rows when the client had no RETURNING). When
    /// `returning == false` the proxy drops RowDescription and DataRows; it always replaces
    /// the `SELECT n` tag with [`WriteTag::tag`]`(n)`.
    Mirror {
        /// The command tag the client expects.
        tag: WriteTag,
        /// Whether the client asked for RETURNING rows.
        returning: bool,
    },
    /// A read rewritten to read the target (`union_read`, `cutover`): rows pass unchanged,
    /// but the RowDescription's origins are what the client's own statement would have
    /// had. Field `i` of the RowDescription takes `origins[i]` when it is `Some`; other
    /// fields (and fields past the end of the list) pass as the server sent them. For a
    /// SQL `PREPARE` of a read, the origins are those of each later `EXECUTE` of it.
    Read {
        /// The legacy origin of each result column, when known.
        origins: std::sync::Arc<[Option<ColumnOrigin>]>,
    },
}

/// The kind of write whose command tag the client expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteTag {
    /// `INSERT 0 n`
    Insert,
    /// `UPDATE n`
    Update,
    /// `DELETE n`
    Delete,
    /// `MERGE n`
    Merge,
}

impl WriteTag {
    /// The command tag for `rows` affected rows.
    pub fn tag(self, rows: u64) -> String {
        match self {
            WriteTag::Insert => format!("INSERT 0 {rows}"),
            WriteTag::Update => format!("UPDATE {rows}"),
            WriteTag::Delete => format!("DELETE {rows}"),
            WriteTag::Merge => format!("MERGE {rows}"),
        }
    }
}

/// The statements of a [`Plan::Rewritten`] as one simple-query string. Statements are
/// separated by `;` and a newline, so a trailing `--` comment cannot swallow the next one.
pub fn join_statements(statements: &[StatementPlan]) -> String {
    statements
        .iter()
        .map(|s| s.sql.as_str())
        .collect::<Vec<_>>()
        .join(";\n")
}

/// What planning one statement produced.
pub(crate) enum Outcome {
    Untouched,
    Rewritten(StatementPlan),
    CopyIn(CopyIn),
}

/// A `COPY <ruled table> FROM STDIN` the proxy must mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyIn {
    /// The ruled (legacy) table.
    pub table: TableName,
    /// The rule's target table.
    pub target: TableName,
    /// Columns the data carries, in order (catalog spelling): the client's list, or the
    /// legacy table's non-generated columns when it gave none.
    pub columns: Vec<String>,
    /// Data format.
    pub format: CopyFormat,
    /// The client's option clause as written after `FROM STDIN` (e.g. `(FORMAT csv,
    /// HEADER)` or `CSV HEADER`), without `FREEZE`; empty when there was none.
    pub options: String,
    /// The client asked for `FREEZE`: the server's condition for it is checked on the
    /// legacy table (see [`CopyIn::freeze_check`]); the rows are loaded unfrozen.
    pub freeze: bool,
    /// The client's statement text.
    pub sql: String,
    /// The rule's error policy.
    pub policy: MirrorErrorPolicy,
    /// How the staged rows' mirror may first try a plain insert into the mirror table
    /// (see [`CopyIn::mirror_statement`]); `None` under the `record` policy or when the
    /// mirror table's OID is unknown.
    pub plain_first: Option<PlainFirst>,
}

/// The two forms of a COPY's mirror CTE, for [`CopyIn::mirror_statement`]: the upsert every
/// mirrored INSERT uses, and the same insert without `ON CONFLICT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlainFirst {
    /// The `tandem_m` CTE as the INSERT rewrite renders it (with `ON CONFLICT`).
    pub upsert: String,
    /// The same CTE as a plain insert.
    pub insert: String,
    /// OID of the table the mirror writes (the target; the legacy table in `cutover`):
    /// only a unique violation there is retried as the upsert.
    pub mirror_oid: u32,
}

/// The data format of a COPY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyFormat {
    /// Tab-separated text (the default).
    Text,
    /// CSV.
    Csv,
    /// PostgreSQL's binary format.
    Binary,
}
