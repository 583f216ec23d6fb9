//! Applying rules inside a session: rewrite what the client sends, fix what it gets back.
//!
//! [`ClientSide`] looks at each client message of a ruled session: a Query or Parse that
//! writes a ruled table is replaced by its rewritten form (or by a statement that raises
//! Tandem's refusal), and every message that earns a response pushes an [`Expect`] on a
//! queue shared with [`ServerSide`]. The server side walks its responses against that
//! queue: responses of untouched messages pass unchanged; for a mirrored write it drops the
//! zero-column rows of a statement the client wrote without RETURNING, turns
//! RowDescription into NoData for its Describe, and replaces the `SELECT n` tag with the
//! client's `INSERT 0 n` / `UPDATE n` / `DELETE n`. Sessions without rules never get here.
//!
//! One job per file: [`client`] decides what each client message becomes, [`prepared`]
//! keeps prepared statements planned under the rules in force, [`executed`] gives the
//! rows of `EXECUTE` of a rewritten SQL-prepared read their legacy origins, [`retry`] runs a write
//! again once the partition it needed exists (auto_partition), [`sample`] hands reads to
//! the shadow sampler, [`refusal`] raises or records what Tandem will not run, and
//! [`server`] fixes the responses; [`ahead`] plans a large statement off the worker thread. This module holds the expectations they share.

mod ahead;
mod client;
mod executed;
mod prepared;
pub mod probe;
mod refusal;
mod retry;
mod sample;
mod server;

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::BytesMut;
use tandem_rules::{ColumnOrigin, ResponseFix, StatementPlan, WriteTag};

use crate::control::stats::{RuleId, RuleStats};
use crate::wire::protocol::frame::{begin, finish};

pub use client::ClientSide;
pub use probe::probe_sql;

pub use refusal::raise_sql;
pub use retry::{Retry, RetryExt, RetryJob, RetryKind};
pub use server::ServerSide;

/// How a rewritten statement's responses map back: the client's tag and whether it asked
/// for RETURNING rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mirror {
    /// The tag the client expects.
    pub tag: WriteTag,
    /// Whether rows go to the client.
    pub returning: bool,
    /// The rule it mirrors for, whose counters its completion bumps.
    pub rule: RuleId,
}

/// Which message a response group answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsgKind {
    /// Parse: ParseComplete.
    Parse,
    /// Bind: BindComplete.
    Bind,
    /// Describe of a statement: ParameterDescription, then RowDescription or NoData.
    DescribeStatement,
    /// Describe of a portal: RowDescription or NoData.
    DescribePortal,
    /// Execute: rows, then CommandComplete, EmptyQueryResponse or PortalSuspended.
    Execute,
    /// Close: CloseComplete.
    Close,
}

impl MsgKind {
    pub(crate) fn ends_with(self, tag: u8) -> bool {
        match self {
            MsgKind::Parse => tag == b'1',
            MsgKind::Bind => tag == b'2',
            MsgKind::Close => tag == b'3',
            MsgKind::DescribeStatement | MsgKind::DescribePortal => tag == b'T' || tag == b'n',
            MsgKind::Execute => matches!(tag, b'C' | b'I' | b's'),
        }
    }
}

/// Legacy origins for a rewritten read's RowDescription fields.
pub type Origins = Arc<[Option<ColumnOrigin>]>;

/// What to do with one statement's responses inside a simple Query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StmtFix {
    /// Forward unchanged.
    Pass,
    /// A mirrored write: fix its tag, drop rows when the client had no RETURNING.
    Mirror(Mirror),
    /// A statement Tandem added: drop everything but errors and notices.
    Hide,
    /// Hold the CommandComplete until the whole Query succeeds (a COPY whose rows are
    /// mirrored by a later, hidden statement: if that fails, the client sees only the error,
    /// as it would had the COPY itself failed).
    Defer,
    /// A read rewritten to the target: its RowDescription gets the legacy origins.
    Read(Origins),
}

impl StmtFix {
    /// The fix for one planned statement; a mirrored write carries its rule's counters.
    pub(crate) fn of(statement: &StatementPlan, rules: &RuleStats) -> Self {
        match &statement.response {
            ResponseFix::None => StmtFix::Pass,
            ResponseFix::Mirror { tag, returning } => StmtFix::Mirror(Mirror {
                tag: *tag,
                returning: *returning,
                rule: rule_id(statement, rules),
            }),
            ResponseFix::Read { origins } => StmtFix::Read(Arc::clone(origins)),
        }
    }
}

/// The counters' slot of the rule a planned statement mirrors for.
fn rule_id(statement: &StatementPlan, rules: &RuleStats) -> RuleId {
    statement
        .rule_table
        .as_ref()
        .map_or(RuleId::NONE, |t| rules.id(t))
}

/// What to do with one message's responses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MsgMode {
    /// Forward unchanged.
    Pass,
    /// Tandem injected the message: drop its normal responses (errors still go through).
    Hide,
    /// Describe of a mirrored write without RETURNING: RowDescription becomes NoData.
    NoData,
    /// Execute of a mirrored write.
    Mirror(Mirror),
    /// Describe of a rewritten read: RowDescription gets the legacy origins.
    Read(Origins),
    /// A Parse of a named statement Tandem already had a record of (forwarded as is): the
    /// server confirms (ParseComplete) or refuses (an error, or skipped after one) the new
    /// one, and Tandem keeps the record that matches (see [`Reports::parses`]).
    Replaces(String),
}

/// What a prepared statement or portal needs when it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prepared {
    /// A mirrored write.
    Mirror(Mirror),
    /// A rewritten read.
    Read(Origins),
}

impl Prepared {
    pub(crate) fn of(statement: &StatementPlan, rules: &RuleStats) -> Option<Self> {
        match &statement.response {
            ResponseFix::None => None,
            ResponseFix::Mirror { tag, returning } => Some(Prepared::Mirror(Mirror {
                tag: *tag,
                returning: *returning,
                rule: rule_id(statement, rules),
            })),
            ResponseFix::Read { origins } => Some(Prepared::Read(Arc::clone(origins))),
        }
    }
}

/// The responses the server owes, in order.
#[derive(Debug, Clone)]
pub enum Expect {
    /// A simple Query (or FunctionCall): one fix per statement, up to ReadyForQuery.
    Query {
        /// Fixes by statement index; missing ones pass.
        fixes: Arc<[StmtFix]>,
        /// Index of the statement whose responses come next.
        next: usize,
        /// A deferred CommandComplete, released just before ReadyForQuery.
        held: Option<BytesMut>,
        /// How to run the statement again if the target lacks a partition for its row.
        retry: Option<Arc<Retry>>,
        /// The held 23514 ErrorResponse of a statement about to be retried.
        failed: Option<BytesMut>,
    },
    /// One extended-protocol message.
    Msg {
        /// Which message.
        kind: MsgKind,
        /// What to do.
        mode: MsgMode,
    },
    /// Sync: answered by ReadyForQuery.
    Sync,
    /// The client's Execute of a mirrored write that may be run again once its missing
    /// partition exists (auto_partition, extended protocol): answered as an Execute of a
    /// mirrored write.
    RetryExec {
        /// The write's response fix.
        mirror: Mirror,
        /// How to run it again.
        retry: Arc<RetryExt>,
        /// The held 23514 ErrorResponse, once it came.
        failed: Option<BytesMut>,
    },
    /// Tandem's own query asking the server for the session's search_path (see
    /// [`probe`]): every response is hidden, ReadyForQuery included, and the row kept.
    Probe {
        /// The answer so far.
        answer: ProbeAnswer,
    },
}

/// What the server side learned for the client side while fixing responses.
#[derive(Debug, Default)]
pub struct Reports {
    /// The answer to the search_path probe, once its ReadyForQuery arrived.
    pub probe: Option<ProbeAnswer>,
    /// Parses of names Tandem had a record of: whether the server created the new
    /// statement (`true`) or kept the old one (`false`).
    pub parses: Vec<(String, bool)>,
    /// Mirrored statements completed, with the rows each wrote, for the rules' counters.
    pub mirrored: Vec<(RuleId, u64)>,
}

/// What the server answered to Tandem's search_path probe.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeAnswer {
    /// The row's values (`search_path`, `current_user`, settings), text format.
    pub values: Vec<Option<String>>,
    /// The server answered with an error.
    pub failed: bool,
}

/// The role and settings of a session, as the server said them (see `probe`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionView {
    /// `current_user`.
    pub role: String,
    /// Settings a user may change, not at their defaults: `(name, value)`.
    pub settings: Vec<(String, String)>,
}

/// The values of a DataRow body, as text.
pub(crate) fn data_row(body: &[u8]) -> Option<Vec<Option<String>>> {
    let count = u16::from_be_bytes(body.get(..2)?.try_into().ok()?);
    let mut rest = &body[2..];
    let mut values = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let len = i32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
        rest = &rest[4..];
        if len < 0 {
            values.push(None);
            continue;
        }
        let len = usize::try_from(len).ok()?;
        values.push(Some(String::from_utf8_lossy(rest.get(..len)?).into_owned()));
        rest = &rest[len..];
    }
    Some(values)
}

/// The queue both halves of a ruled session share.
pub type ExpectQueue = std::sync::Mutex<VecDeque<Expect>>;

/// One field (`s` schema, `t` table, `D` detail...) of an ErrorResponse body.
pub(crate) fn error_field(body: &[u8], code: u8) -> Option<String> {
    let mut rest = body;
    while let Some((&kind, tail)) = rest.split_first() {
        if kind == 0 {
            return None;
        }
        let end = tail.iter().position(|&b| b == 0)?;
        if kind == code {
            return Some(String::from_utf8_lossy(&tail[..end]).into_owned());
        }
        rest = &tail[end + 1..];
    }
    None
}

/// The expectation of a simple Query whose responses all pass.
pub(crate) fn plain_query() -> Expect {
    Expect::Query {
        fixes: Arc::from([]),
        next: 0,
        held: None,
        retry: None,
        failed: None,
    }
}

/// A frame around `body`.
pub(crate) fn append_frame(out: &mut BytesMut, tag: u8, body: &[u8]) {
    let start = begin(out, tag);
    out.extend_from_slice(body);
    finish(out, start);
}
