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

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::BytesMut;
use tandem_rules::{
    join_statements, ColumnOrigin, MirrorErrorPolicy, Plan, Rejection, ResponseFix, WriteTag,
};
use tracing::{debug, warn};

use super::framed::Action;
use crate::control::active_rules::ActiveRules;
use crate::control::drift::{DriftRecord, DriftSink};
use crate::control::shadow::Sampler;
use crate::control::watch::RulesWatch;
use crate::wire::protocol::backend::ErrorFields;
use crate::wire::protocol::frame::{begin, finish};
use crate::wire::protocol::frontend;

/// How a rewritten statement's responses map back: the client's tag and whether it asked
/// for RETURNING rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mirror {
    /// The tag the client expects.
    pub tag: WriteTag,
    /// Whether rows go to the client.
    pub returning: bool,
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
    fn ends_with(self, tag: u8) -> bool {
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

impl From<ResponseFix> for StmtFix {
    fn from(fix: ResponseFix) -> Self {
        match fix {
            ResponseFix::None => StmtFix::Pass,
            ResponseFix::Mirror { tag, returning } => StmtFix::Mirror(Mirror { tag, returning }),
            ResponseFix::Read { origins } => StmtFix::Read(origins),
        }
    }
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
    fn from_fix(fix: &ResponseFix) -> Option<Self> {
        match fix {
            ResponseFix::None => None,
            ResponseFix::Mirror { tag, returning } => Some(Prepared::Mirror(Mirror {
                tag: *tag,
                returning: *returning,
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
}

/// An extended-protocol write to run again: the client's own Bind and Execute frames.
#[derive(Debug)]
pub struct RetryExt {
    /// The Bind frame, as the client sent it.
    pub bind: BytesMut,
    /// The Execute frame (row limit 0).
    pub execute: BytesMut,
    /// The write's response fix.
    pub mirror: Mirror,
    /// Sent inside the client's transaction, behind `SAVEPOINT tandem_ap`.
    pub savepoint: bool,
}

/// Which kind of write a retry runs again.
#[derive(Debug, Clone)]
pub enum RetryKind {
    /// A simple Query.
    Simple(Arc<Retry>),
    /// A Bind + Execute.
    Extended(Arc<RetryExt>),
}

/// A mirrored write that may be run again once the target has a partition for its row
/// (the rule's `auto_partition`).
#[derive(Debug)]
pub struct Retry {
    /// The rewritten statement.
    pub sql: String,
    /// Its response fix.
    pub fix: StmtFix,
    /// Sent inside the client's transaction, behind `SAVEPOINT tandem_ap`.
    pub savepoint: bool,
}

/// What the server side hands the client side when a retry is due: the statement, and
/// the held error and ReadyForQuery to deliver if the partition cannot be made.
#[derive(Debug)]
pub struct RetryJob {
    /// The statement to run again.
    pub retry: RetryKind,
    /// The ErrorResponse frame (23514).
    pub error: BytesMut,
    /// The ReadyForQuery frame that followed it.
    pub ready: BytesMut,
}

/// The savepoint auto-partition retries roll back to.
const RETRY_SAVEPOINT: &str = "tandem_ap";
/// Tandem's prepared statements for it (extended protocol), and the portal that runs them.
const AP_SAVEPOINT: &str = "tandem_ap_savepoint";
const AP_ROLLBACK: &str = "tandem_ap_rollback";
const AP_RELEASE: &str = "tandem_ap_release";
const AP_PORTAL: &str = "tandem_ap_portal";
const AP_TOUCH: &str = "tandem_ap_touch";

/// Runs one of Tandem's prepared savepoint statements through its own portal, every
/// response hidden (Bind, Execute, Close).
fn run_hidden(statement: &str, queue: &mut VecDeque<Expect>, out: &mut BytesMut) {
    frontend::encode_bind_empty(AP_PORTAL, statement, out);
    frontend::encode_execute(AP_PORTAL, 0, out);
    frontend::encode_close(b'P', AP_PORTAL, out);
    for kind in [MsgKind::Bind, MsgKind::Execute, MsgKind::Close] {
        queue.push_back(Expect::Msg {
            kind,
            mode: MsgMode::Hide,
        });
    }
}

/// The queue both halves of a ruled session share.
pub type ExpectQueue = std::sync::Mutex<VecDeque<Expect>>;

/// A prepared statement as the server holds it: the client's SQL, what was sent for it,
/// and the rules version it was planned under.
#[derive(Debug, Clone)]
struct Known {
    /// The client's text.
    sql: String,
    /// Parameter count and types, as the client sent them.
    param_types: Vec<u8>,
    /// The text the server prepared (the rewrite, or the client's own).
    sent: String,
    /// Rules version it was planned under.
    version: u64,
    /// The plan it was prepared with (protocol-level statements only), so a Bind needs no
    /// second plan lookup.
    plan: Option<Arc<Plan>>,
}

/// Client-to-server half: rewrites and records expectations.
pub struct ClientSide {
    /// Where newer rules come from.
    watch: Arc<RulesWatch>,
    /// Rules this session plans with: adopted from `watch` only at transaction boundaries.
    rules: Arc<ActiveRules>,
    /// Every prepared statement of the session, so one planned under older rules is planned
    /// again on its next use.
    known: HashMap<String, Known>,
    /// SQL-level prepared statements (`PREPARE name AS ...`), by name, likewise.
    sql_prepared: HashMap<String, Known>,
    /// The session's search_path for resolving bare table names.
    search_path: Arc<[String]>,
    /// Prepared statements that are rewritten, by name.
    statements: HashMap<String, Prepared>,
    /// Portals bound to such statements, by name.
    portals: HashMap<String, Prepared>,
    /// Where `record`-policy refusals are written.
    drift: Option<DriftSink>,
    /// Where sampled reads go for shadow comparison.
    sampler: Option<Arc<Sampler>>,
    /// The configuration, for creating a missing partition (auto_partition).
    config: Arc<crate::config::Config>,
    /// Whether the session is inside a transaction block (last ReadyForQuery not idle).
    in_transaction: bool,
    /// Bind frames of portals running an auto_partition mirrored write, by portal.
    retry_binds: HashMap<String, BytesMut>,
    /// Execute messages since the last Sync (a retry outside a transaction must be the
    /// first, or it would drop the work before it).
    executes_since_sync: u32,
    /// Whether Tandem's savepoint statements are prepared in this session.
    savepoints_prepared: bool,
}

impl ClientSide {
    /// A client side for a session on the rules' database.
    pub fn new(
        watch: Arc<RulesWatch>,
        search_path: Arc<[String]>,
        drift: Option<DriftSink>,
        sampler: Option<Arc<Sampler>>,
        config: Arc<crate::config::Config>,
    ) -> Self {
        Self {
            rules: watch.current(),
            watch,
            known: HashMap::new(),
            sql_prepared: HashMap::new(),
            search_path,
            statements: HashMap::new(),
            portals: HashMap::new(),
            drift,
            sampler,
            config,
            in_transaction: false,
            retry_binds: HashMap::new(),
            executes_since_sync: 0,
            savepoints_prepared: false,
        }
    }

    /// Records whether the session is inside a transaction block, before a batch of
    /// client messages is looked at.
    pub fn set_in_transaction(&mut self, in_transaction: bool) {
        self.in_transaction = in_transaction;
    }

    /// The auto_partition form of a single mirrored write: inside a transaction it runs
    /// behind a savepoint (so a retry can roll back to it), and the retry data goes with
    /// its expectation. `None` when the rule does not ask for it.
    fn with_retry(
        &self,
        statements: &[tandem_rules::StatementPlan],
    ) -> Option<(String, Arc<[StmtFix]>, Arc<Retry>)> {
        let [statement] = statements else { return None };
        if !self.auto_partition(statement) {
            return None;
        }
        let fix: StmtFix = statement.response.clone().into();
        let retry = Arc::new(Retry {
            sql: statement.sql.clone(),
            fix: fix.clone(),
            savepoint: self.in_transaction,
        });
        Some(if self.in_transaction {
            (
                format!(
                    "SAVEPOINT {RETRY_SAVEPOINT};\n{};\nRELEASE SAVEPOINT {RETRY_SAVEPOINT}",
                    statement.sql
                ),
                Arc::from([StmtFix::Hide, fix, StmtFix::Hide]),
                retry,
            )
        } else {
            (statement.sql.clone(), Arc::from([fix]), retry)
        })
    }

    /// Creates the partition a held 23514 asked for (the relation and key value from the
    /// error). Returns what it created, or why it could not.
    pub async fn make_partition(&self, job: &RetryJob) -> Result<Vec<String>, String> {
        let field = |code: u8| error_field(job.error.get(5..).unwrap_or_default(), code);
        let relation = match (field(b's'), field(b't')) {
            (Some(schema), Some(table)) => tandem_rules::TableName::new(Some(&schema), &table),
            _ => return Err("the error names no relation".into()),
        };
        let detail = field(b'D').unwrap_or_default();
        // "Partition key of the failing row contains (tenant) = (initech)."
        let value = detail
            .split_once(") = (")
            .map(|(_, v)| v.trim_end_matches('.').trim_end_matches(')').to_string())
            .filter(|v| !v.contains(", "))
            .ok_or_else(|| format!("cannot read a single partition key value from {detail:?}"))?;
        crate::ops::partitions::ensure(
            &self.config,
            &relation,
            crate::ops::partitions::Ensure::ForValue(value),
        )
        .await
        .map_err(|e| e.to_string())
    }

    /// The messages that run a held write again, with their expectations pushed.
    pub fn retry_message(&self, job: &RetryJob, queue: &mut VecDeque<Expect>) -> BytesMut {
        let mut out = BytesMut::new();
        match &job.retry {
            RetryKind::Simple(retry) => {
                let (sql, fixes): (String, Arc<[StmtFix]>) = if retry.savepoint {
                    (
                        format!(
                            "ROLLBACK TO SAVEPOINT {RETRY_SAVEPOINT};\n{};\nRELEASE SAVEPOINT {RETRY_SAVEPOINT}",
                            retry.sql
                        ),
                        Arc::from([StmtFix::Hide, retry.fix.clone(), StmtFix::Hide]),
                    )
                } else {
                    (retry.sql.clone(), Arc::from([retry.fix.clone()]))
                };
                queue.push_back(Expect::Query {
                    fixes,
                    next: 0,
                    held: None,
                    retry: None,
                    failed: None,
                });
                frontend::encode_query(&sql, &mut out);
            }
            RetryKind::Extended(retry) => {
                if retry.savepoint {
                    run_hidden(AP_ROLLBACK, queue, &mut out);
                }
                // A prepared write reuses its plan, and a backend inside a transaction that
                // already holds the target's lock does not look at other sessions' catalog
                // changes on its own: parsing a statement that names the table (parsed,
                // never run) makes it see the new partition.
                let field = |code: u8| error_field(job.error.get(5..).unwrap_or_default(), code);
                if let (Some(schema), Some(table)) = (field(b's'), field(b't')) {
                    let target = tandem_rules::TableName::new(Some(&schema), &table);
                    frontend::encode_parse(
                        AP_TOUCH,
                        &format!("SELECT 1 FROM {target} LIMIT 0"),
                        &[0, 0],
                        &mut out,
                    );
                    frontend::encode_close(b'S', AP_TOUCH, &mut out);
                    for kind in [MsgKind::Parse, MsgKind::Close] {
                        queue.push_back(Expect::Msg {
                            kind,
                            mode: MsgMode::Hide,
                        });
                    }
                }
                // The client already has its BindComplete.
                out.extend_from_slice(&retry.bind);
                queue.push_back(Expect::Msg {
                    kind: MsgKind::Bind,
                    mode: MsgMode::Hide,
                });
                out.extend_from_slice(&retry.execute);
                queue.push_back(Expect::Msg {
                    kind: MsgKind::Execute,
                    mode: MsgMode::Mirror(retry.mirror),
                });
                if retry.savepoint {
                    run_hidden(AP_RELEASE, queue, &mut out);
                }
                out.extend_from_slice(&[b'S', 0, 0, 0, 4]);
                queue.push_back(Expect::Sync);
            }
        }
        out
    }

    /// The client's Execute of an auto_partition write, armed for a retry: inside a
    /// transaction, wrapped in Tandem's own savepoint (hidden), and run to completion.
    fn arm_retry(
        &mut self,
        portal: &str,
        mirror: Mirror,
        bind: BytesMut,
        queue: &mut VecDeque<Expect>,
    ) -> Action {
        let mut out = BytesMut::new();
        let savepoint = self.in_transaction;
        if savepoint {
            if !self.savepoints_prepared {
                for (name, sql) in [
                    (AP_SAVEPOINT, format!("SAVEPOINT {RETRY_SAVEPOINT}")),
                    (
                        AP_ROLLBACK,
                        format!("ROLLBACK TO SAVEPOINT {RETRY_SAVEPOINT}"),
                    ),
                    (AP_RELEASE, format!("RELEASE SAVEPOINT {RETRY_SAVEPOINT}")),
                ] {
                    frontend::encode_parse(name, &sql, &[0, 0], &mut out);
                    queue.push_back(Expect::Msg {
                        kind: MsgKind::Parse,
                        mode: MsgMode::Hide,
                    });
                }
                self.savepoints_prepared = true;
            }
            run_hidden(AP_SAVEPOINT, queue, &mut out);
        }
        let mut execute = BytesMut::new();
        frontend::encode_execute(portal, 0, &mut execute);
        out.extend_from_slice(&execute);
        queue.push_back(Expect::RetryExec {
            mirror,
            retry: Arc::new(RetryExt {
                bind,
                execute,
                mirror,
                savepoint,
            }),
            failed: None,
        });
        if savepoint {
            run_hidden(AP_RELEASE, queue, &mut out);
        }
        Action::Replace(out)
    }

    /// Is `statement` a mirrored write whose rule has auto_partition on?
    fn auto_partition(&self, statement: &tandem_rules::StatementPlan) -> bool {
        matches!(statement.response, ResponseFix::Mirror { .. })
            && statement.rule_table.as_ref().is_some_and(|table| {
                self.rules
                    .set
                    .rules
                    .iter()
                    .any(|r| &r.rule.table == table && r.rule.auto_partition)
            })
    }

    /// For the Bind of a prepared mirrored write whose rule has auto_partition: the Bind
    /// frame, kept so the write can be run again.
    fn auto_partition_bind(&self, statement: &str, body: &[u8]) -> Option<BytesMut> {
        let plan = self.known.get(statement)?.plan.as_deref()?;
        let Plan::Rewritten(statements) = plan else {
            return None;
        };
        let [only] = statements.as_slice() else {
            return None;
        };
        if !self.auto_partition(only) {
            return None;
        }
        let mut frame = BytesMut::new();
        append_frame(&mut frame, b'B', body);
        Some(frame)
    }

    /// Maybe hands a read of a ruled table to the shadow sampler: a random draw against the
    /// rule's `sample_rate`, so sessions pay one random number per read of a ruled table
    /// and nothing else unless sampled (and then one parse, off the reply's path).
    fn maybe_sample(&self, sql: &str, plan: Option<&Plan>, bind: Option<(&[u8], &[u8])>) {
        let Some(sampler) = &self.sampler else { return };
        let read = match plan {
            Some(Plan::Passthrough) => true,
            Some(Plan::Rewritten(s)) => {
                s.len() == 1 && matches!(s[0].response, ResponseFix::Read { .. })
            }
            _ => false,
        };
        if !read {
            return;
        }
        let max = self
            .rules
            .set
            .rules
            .iter()
            .map(|r| r.rule.sample_rate)
            .fold(0.0, f64::max);
        if max <= 0.0 || rand::random::<f64>() >= max {
            return;
        }
        let Some(pair) = tandem_rules::shadow_pair(sql, &self.rules.set, &self.search_path) else {
            return;
        };
        let rate = self
            .rules
            .set
            .rules
            .iter()
            .find(|r| r.rule.table == pair.table)
            .map_or(0.0, |r| r.rule.sample_rate);
        // Sampled at `max` so far; keep `rate / max` of those for this table's own rate.
        if rand::random::<f64>() * max >= rate {
            return;
        }
        // A Bind's values go along byte for byte, with the types its Parse declared.
        let (params, param_types) = match bind {
            Some((bind_body, param_types)) => match frontend::bind_params(bind_body) {
                Ok(values) => (
                    values
                        .into_iter()
                        .map(|(value, binary)| crate::control::shadow::RawParam { value, binary })
                        .collect(),
                    frontend::param_type_oids(param_types),
                ),
                Err(_) => return,
            },
            None => (Vec::new(), Vec::new()),
        };
        // A type left to the server in the middle of declared ones cannot be re-declared.
        if param_types
            .iter()
            .skip_while(|oid| **oid != 0)
            .any(|oid| *oid != 0)
        {
            return;
        }
        sampler.offer(crate::control::shadow::Job {
            pair,
            search_path: Arc::clone(&self.search_path),
            params,
            param_types,
        });
    }

    /// The rules version this session plans with.
    pub fn version(&self) -> u64 {
        self.rules.set.version
    }

    /// Takes the newest rules if they changed. Call only at a transaction boundary (no
    /// request in flight, ReadyForQuery said idle): a transaction never sees two versions.
    /// Returns the version in force afterwards.
    pub fn adopt_latest(&mut self) -> u64 {
        if self.watch.version() != self.rules.set.version {
            let newer = self.watch.current();
            if newer.set.version != self.rules.set.version {
                debug!(
                    from = self.rules.set.version,
                    to = newer.set.version,
                    "session adopts new rules"
                );
                self.rules = newer;
            }
        }
        self.rules.set.version
    }

    /// Tags whose whole body the client side needs.
    pub fn inspects(tag: u8) -> bool {
        matches!(tag, b'Q' | b'P' | b'B' | b'D' | b'E' | b'C')
    }

    /// Decides one client message's fate and records what its responses need.
    pub fn visit(&mut self, tag: u8, body: &[u8], queue: &mut VecDeque<Expect>) -> Action {
        let msg = |kind, mode| Expect::Msg { kind, mode };
        match tag {
            b'Q' => self.query(body, queue),
            b'P' => self.parse(body, queue),
            b'B' => {
                let mut out = BytesMut::new();
                let mut refreshed = false;
                if let Ok((_, statement)) = frontend::bind_names(body) {
                    refreshed = self.refresh(statement, queue, &mut out);
                    if self.sampler.is_some() {
                        if let Some(known) = self.known.get(statement) {
                            self.maybe_sample(
                                &known.sql,
                                known.plan.as_deref(),
                                Some((body, &known.param_types)),
                            );
                        }
                    }
                }
                if let Ok((portal, statement)) = frontend::bind_names(body) {
                    match self.auto_partition_bind(statement, body) {
                        Some(frame) => {
                            self.retry_binds.insert(portal.to_string(), frame);
                        }
                        None => {
                            self.retry_binds.remove(portal);
                        }
                    }
                    match self.statements.get(statement) {
                        Some(m) => {
                            self.portals.insert(portal.to_string(), m.clone());
                        }
                        None => {
                            self.portals.remove(portal);
                        }
                    }
                }
                queue.push_back(msg(MsgKind::Bind, MsgMode::Pass));
                if refreshed {
                    append_frame(&mut out, b'B', body);
                    return Action::Replace(out);
                }
                Action::Forward
            }
            b'D' => {
                let mut out = BytesMut::new();
                let mut refreshed = false;
                if let Ok((b'S', name)) = frontend::target(body, "Describe") {
                    refreshed = self.refresh(name, queue, &mut out);
                }
                let (kind, fix) = match frontend::target(body, "Describe") {
                    Ok((b'S', name)) => (MsgKind::DescribeStatement, self.statements.get(name)),
                    Ok((_, name)) => (MsgKind::DescribePortal, self.portals.get(name)),
                    Err(_) => (MsgKind::DescribePortal, None),
                };
                let mode = match fix {
                    Some(Prepared::Mirror(m)) if !m.returning => MsgMode::NoData,
                    Some(Prepared::Read(origins)) => MsgMode::Read(Arc::clone(origins)),
                    _ => MsgMode::Pass,
                };
                queue.push_back(msg(kind, mode));
                if refreshed {
                    append_frame(&mut out, b'D', body);
                    return Action::Replace(out);
                }
                Action::Forward
            }
            b'E' => {
                let Ok((portal, max_rows)) = frontend::execute(body) else {
                    queue.push_back(msg(MsgKind::Execute, MsgMode::Pass));
                    return Action::Forward;
                };
                let first = self.executes_since_sync == 0;
                self.executes_since_sync += 1;
                if let (Some(Prepared::Mirror(m)), Some(bind)) =
                    (self.portals.get(portal), self.retry_binds.get(portal))
                {
                    if self.in_transaction || first {
                        let (m, bind) = (*m, bind.clone());
                        return self.arm_retry(portal, m, bind, queue);
                    }
                }
                match self.portals.get(portal) {
                    Some(Prepared::Mirror(m)) => {
                        queue.push_back(msg(MsgKind::Execute, MsgMode::Mirror(*m)));
                        // A write runs to completion on its first Execute; the rewritten
                        // SELECT would stop at the row limit and never send the write's tag.
                        if max_rows != 0 {
                            let mut out = BytesMut::new();
                            frontend::encode_execute(portal, 0, &mut out);
                            return Action::Replace(out);
                        }
                        Action::Forward
                    }
                    Some(Prepared::Read(_)) | None => {
                        queue.push_back(msg(MsgKind::Execute, MsgMode::Pass));
                        Action::Forward
                    }
                }
            }
            b'C' => {
                match frontend::target(body, "Close") {
                    Ok((b'S', name)) => {
                        self.statements.remove(name);
                        self.known.remove(name);
                    }
                    Ok((_, name)) => {
                        self.portals.remove(name);
                    }
                    Err(_) => {}
                }
                queue.push_back(msg(MsgKind::Close, MsgMode::Pass));
                Action::Forward
            }
            b'S' => {
                self.executes_since_sync = 0;
                queue.push_back(Expect::Sync);
                Action::Forward
            }
            b'F' => {
                queue.push_back(Expect::Query {
                    fixes: Arc::from([]),
                    next: 0,
                    held: None,
                    retry: None,
                    failed: None,
                });
                Action::Forward
            }
            _ => Action::Forward,
        }
    }

    fn query(&mut self, body: &[u8], queue: &mut VecDeque<Expect>) -> Action {
        let Ok(sql) = frontend::query_sql(body) else {
            queue.push_back(plain_query());
            return Action::Forward;
        };
        // DEALLOCATE / DISCARD ALL are not tracked on purpose: forgetting a statement here
        // could let one planned under older rules run unplanned, while remembering one the
        // server dropped at worst re-creates it on a stale Bind.
        // EXECUTE of a statement PREPAREd under older rules: prepare it again first.
        let prefix = match self.refresh_sql_prepared(sql) {
            Ok(prefix) => prefix,
            Err(rejection) => {
                let mut out = BytesMut::new();
                queue.push_back(plain_query());
                frontend::encode_query(&raise_sql(&rejection), &mut out);
                return Action::Replace(out);
            }
        };
        let plan = self.rules.plan(sql, &self.search_path);
        self.maybe_sample(sql, plan.as_deref(), None);
        if !matches!(plan.as_deref(), Some(Plan::Reject(r)) if r.policy != MirrorErrorPolicy::Record)
        {
            for (name, piece) in tandem_rules::prepared_statements(sql) {
                let piece_plan = self.rules.plan(piece, &self.search_path);
                self.remember_sql_prepared(name, piece, piece_plan.as_deref());
            }
        }
        let mut out = BytesMut::new();
        let (send, fixes): (String, Arc<[StmtFix]>) = match plan.as_deref() {
            None | Some(Plan::Passthrough) => (sql.to_string(), Arc::from([])),
            Some(Plan::Rewritten(statements)) => {
                debug!(statements = statements.len(), "query rewritten");
                (
                    join_statements(statements),
                    statements
                        .iter()
                        .map(|s| s.response.clone().into())
                        .collect(),
                )
            }
            Some(Plan::Reject(rejection)) if rejection.policy == MirrorErrorPolicy::Record => {
                self.record(rejection, sql);
                (sql.to_string(), Arc::from([]))
            }
            Some(plan @ Plan::CopyIn(copy)) => match self.copy_in(copy) {
                Some(copy) => copy,
                None => {
                    queue.push_back(plain_query());
                    frontend::encode_query(&raise_sql(&refusal_of(plan)), &mut out);
                    return Action::Replace(out);
                }
            },
            Some(other) => {
                queue.push_back(plain_query());
                frontend::encode_query(&raise_sql(&refusal_of(other)), &mut out);
                return Action::Replace(out);
            }
        };
        // auto_partition: the write may be run again once its partition exists.
        let (send, fixes, retry) = match plan.as_deref() {
            Some(Plan::Rewritten(statements)) if prefix.is_empty() => {
                match self.with_retry(statements) {
                    Some((send, fixes, retry)) => (send, fixes, Some(retry)),
                    None => (send, fixes, None),
                }
            }
            _ => (send, fixes, None),
        };
        let untouched = prefix.is_empty() && fixes.is_empty() && send == sql;
        if untouched {
            queue.push_back(plain_query());
            return Action::Forward;
        }
        let fixes: Arc<[StmtFix]> = prefix
            .iter()
            .map(|_| StmtFix::Hide)
            .chain(fixes.iter().cloned())
            .collect();
        let mut text = prefix.join(";\n");
        if !text.is_empty() {
            text.push_str(";\n");
        }
        text.push_str(&send);
        queue.push_back(Expect::Query {
            fixes,
            next: 0,
            held: None,
            retry,
            failed: None,
        });
        frontend::encode_query(&text, &mut out);
        Action::Replace(out)
    }

    /// Remembers a SQL-level `PREPARE` (unless the rules refused it, in which case the
    /// server never gets it).
    fn remember_sql_prepared(&mut self, name: String, sql: &str, plan: Option<&Plan>) {
        let sent = match plan {
            Some(Plan::Rewritten(statements)) if statements.len() == 1 => statements[0].sql.clone(),
            Some(Plan::Reject(r)) if r.policy != MirrorErrorPolicy::Record => {
                self.sql_prepared.remove(&name);
                return;
            }
            _ => sql.to_string(),
        };
        self.sql_prepared.insert(
            name,
            Known {
                sql: sql.to_string(),
                param_types: Vec::new(),
                sent,
                version: self.rules.set.version,
                plan: None,
            },
        );
    }

    /// For each statement `sql` EXECUTEs that was PREPAREd under older rules: plan its
    /// PREPARE again; when the server must hold a different text, return `DEALLOCATE` +
    /// the new `PREPARE` to run (hidden) before the client's query. A PREPARE the new
    /// rules refuse fails the EXECUTE with that refusal.
    fn refresh_sql_prepared(&mut self, sql: &str) -> Result<Vec<String>, Box<Rejection>> {
        let mut prefix = Vec::new();
        if self.sql_prepared.is_empty() {
            return Ok(prefix);
        }
        let version = self.rules.set.version;
        for name in tandem_rules::executed_names(sql) {
            let Some(known) = self.sql_prepared.get(&name).cloned() else {
                continue;
            };
            if known.version == version {
                continue;
            }
            let sent = match self.rules.plan(&known.sql, &self.search_path).as_deref() {
                None | Some(Plan::Passthrough) => known.sql.clone(),
                Some(Plan::Rewritten(statements)) if statements.len() == 1 => {
                    statements[0].sql.clone()
                }
                Some(Plan::Reject(r)) if r.policy == MirrorErrorPolicy::Record => {
                    self.record(r, &known.sql);
                    known.sql.clone()
                }
                Some(other) => return Err(Box::new(refusal_of(other))),
            };
            if sent != known.sent {
                prefix.push(format!("DEALLOCATE {}", tandem_rules::quote_ident(&name)));
                prefix.push(sent.clone());
            }
            self.sql_prepared.insert(
                name,
                Known {
                    sent,
                    version,
                    ..known
                },
            );
        }
        Ok(prefix)
    }

    fn parse(&mut self, body: &[u8], queue: &mut VecDeque<Expect>) -> Action {
        let pass = Expect::Msg {
            kind: MsgKind::Parse,
            mode: MsgMode::Pass,
        };
        let Ok(parse) = frontend::parse_parse(body) else {
            queue.push_back(pass);
            return Action::Forward;
        };
        let plan = self.rules.plan(parse.sql, &self.search_path);
        let mut known = Known {
            sql: parse.sql.to_string(),
            param_types: parse.param_types.to_vec(),
            sent: parse.sql.to_string(),
            version: self.rules.set.version,
            plan: plan.clone(),
        };
        if let Some(Plan::Rewritten(statements)) = plan.as_deref() {
            if statements.len() == 1 {
                known.sent = statements[0].sql.clone();
            }
        }
        if matches!(plan.as_deref(), Some(Plan::Reject(r)) if r.policy != MirrorErrorPolicy::Record)
        {
            // Refused: the server never gets this statement.
            self.known.remove(parse.name);
        } else {
            self.known.insert(parse.name.to_string(), known);
        }
        let mut out = BytesMut::new();
        match plan.as_deref() {
            None | Some(Plan::Passthrough) => {
                self.statements.remove(parse.name);
                queue.push_back(pass);
                Action::Forward
            }
            Some(Plan::Rewritten(statements)) if statements.len() == 1 => {
                let statement = &statements[0];
                match Prepared::from_fix(&statement.response) {
                    Some(prepared) => {
                        self.statements.insert(parse.name.to_string(), prepared);
                    }
                    None => {
                        self.statements.remove(parse.name);
                    }
                }
                queue.push_back(pass);
                frontend::encode_parse(parse.name, &statement.sql, parse.param_types, &mut out);
                Action::Replace(out)
            }
            Some(Plan::Rewritten(_)) => {
                // Several statements in one Parse: Postgres refuses it itself.
                self.statements.remove(parse.name);
                queue.push_back(pass);
                Action::Forward
            }
            Some(Plan::Reject(rejection)) if rejection.policy == MirrorErrorPolicy::Record => {
                self.record(rejection, parse.sql);
                self.statements.remove(parse.name);
                queue.push_back(pass);
                Action::Forward
            }
            Some(other) => {
                // Refuse at the Parse's place in the stream: run a statement that raises the
                // refusal, hiding the ParseComplete/BindComplete of the messages injected to
                // run it. The server then skips the client's messages up to Sync, as after
                // any failed Parse, and the transaction state is exactly Postgres's own.
                self.statements.remove(parse.name);
                raise_in_place(&refusal_of(other), queue, &mut out);
                Action::Replace(out)
            }
        }
    }

    /// Before a Bind or Describe of prepared statement `name`: if it was planned under older
    /// rules, plan it again and, when the text the server must hold changed, put a hidden
    /// Close + Parse of the new text in `out` (the caller appends the client's message).
    /// A statement the new rules refuse gets the refusal raised in its place, so the
    /// server fails the client's message and skips to Sync; it stays stale and is tried
    /// again on its next use. Returns whether `out` holds messages to send first.
    fn refresh(&mut self, name: &str, queue: &mut VecDeque<Expect>, out: &mut BytesMut) -> bool {
        let version = self.rules.set.version;
        let Some(known) = self.known.get(name) else {
            return false;
        };
        if known.version == version {
            return false;
        }
        let known = known.clone();
        let plan = self.rules.plan(&known.sql, &self.search_path);
        let (sent, prepared) = match plan.as_deref() {
            None | Some(Plan::Passthrough) => (known.sql.clone(), None),
            Some(Plan::Rewritten(statements)) if statements.len() == 1 => (
                statements[0].sql.clone(),
                Prepared::from_fix(&statements[0].response),
            ),
            Some(Plan::Rewritten(_)) => (known.sql.clone(), None),
            Some(Plan::Reject(rejection)) if rejection.policy == MirrorErrorPolicy::Record => {
                self.record(rejection, &known.sql);
                (known.sql.clone(), None)
            }
            Some(other) => {
                raise_in_place(&refusal_of(other), queue, out);
                return true;
            }
        };
        match prepared {
            Some(p) => {
                self.statements.insert(name.to_string(), p);
            }
            None => {
                self.statements.remove(name);
            }
        }
        let changed = sent != known.sent;
        self.known.insert(
            name.to_string(),
            Known {
                sent: sent.clone(),
                version,
                plan: plan.clone(),
                ..known.clone()
            },
        );
        if !changed {
            return false;
        }
        debug!(
            statement = name,
            "prepared statement planned again under new rules"
        );
        frontend::encode_close(b'S', name, out);
        frontend::encode_parse(name, &sent, &known.param_types, out);
        queue.push_back(Expect::Msg {
            kind: MsgKind::Close,
            mode: MsgMode::Hide,
        });
        queue.push_back(Expect::Msg {
            kind: MsgKind::Parse,
            mode: MsgMode::Hide,
        });
        true
    }

    /// `COPY legacy FROM STDIN` in a simple Query: the rows go to a session temp table with
    /// the COPY's own column list and options (so the client's tag is the real `COPY n`),
    /// then one mirrored INSERT moves them into legacy and target in the same transaction.
    /// Tandem's added statements are hidden from the client.
    fn copy_in(&self, copy: &tandem_rules::CopyIn) -> Option<(String, Arc<[StmtFix]>)> {
        let temp = format!("pg_temp.{}", copy_table_name(&copy.table.to_string()));
        let cols = copy
            .columns
            .iter()
            .map(|c| tandem_rules::quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ");
        let insert = format!(
            "INSERT INTO {} ({cols}) SELECT {cols} FROM {temp}",
            copy.table
        );
        let mirror_sql = match tandem_rules::plan(&insert, &self.rules.set, &self.search_path) {
            Plan::Rewritten(statements) if statements.len() == 1 => statements[0].sql.clone(),
            _ => return None,
        };
        let create = format!(
            "DO $tandem$ BEGIN IF to_regclass('{temp}') IS NULL THEN \
             CREATE TEMP TABLE {} AS SELECT {cols} FROM {} WITH NO DATA; END IF; END $tandem$",
            copy_table_name(&copy.table.to_string()),
            copy.table
        );
        let statements = [
            (create, StmtFix::Hide),
            (format!("TRUNCATE {temp}"), StmtFix::Hide),
            (
                format!("COPY {temp} ({cols}) FROM STDIN {}", copy.options),
                StmtFix::Defer,
            ),
            (mirror_sql, StmtFix::Hide),
            (format!("TRUNCATE {temp}"), StmtFix::Hide),
        ];
        let sql = statements
            .iter()
            .map(|(s, _)| s.as_str())
            .collect::<Vec<_>>()
            .join(";\n");
        Some((sql, statements.iter().map(|(_, f)| f.clone()).collect()))
    }

    fn record(&self, rejection: &Rejection, sql: &str) {
        let table = rejection
            .table
            .as_ref()
            .map(|t| t.to_string())
            .unwrap_or_default();
        warn!(%table, reason = %rejection.message, "statement runs unmirrored (on_mirror_error = record)");
        if let Some(drift) = &self.drift {
            let target = self
                .rules
                .set
                .rules
                .iter()
                .find(|r| rejection.table.as_ref() == Some(&r.rule.table))
                .map(|r| r.rule.target.to_string())
                .unwrap_or_default();
            drift.record(DriftRecord {
                rule_table: table,
                target_table: target,
                operation: "unmirrored".into(),
                sqlstate: rejection.sqlstate.to_string(),
                error: rejection.message.clone(),
                statement: sql.to_string(),
            });
        }
    }
}

/// Messages that run a statement raising `rejection` in the extended protocol (unnamed
/// Parse, Bind, Execute), with their ParseComplete/BindComplete hidden: the server fails
/// there and skips the client's messages up to Sync, as after any failed message.
fn raise_in_place(rejection: &Rejection, queue: &mut VecDeque<Expect>, out: &mut BytesMut) {
    frontend::encode_parse("", &raise_sql(rejection), &[0, 0], out);
    frontend::encode_bind_empty("", "", out);
    frontend::encode_execute("", 0, out);
    for (kind, mode) in [
        (MsgKind::Parse, MsgMode::Hide),
        (MsgKind::Bind, MsgMode::Hide),
        (MsgKind::Execute, MsgMode::Pass),
    ] {
        queue.push_back(Expect::Msg { kind, mode });
    }
}

/// One field (`s` schema, `t` table, `D` detail...) of an ErrorResponse body.
fn error_field(body: &[u8], code: u8) -> Option<String> {
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
fn plain_query() -> Expect {
    Expect::Query {
        fixes: Arc::from([]),
        next: 0,
        held: None,
        retry: None,
        failed: None,
    }
}

/// A frame around `body`.
fn append_frame(out: &mut BytesMut, tag: u8, body: &[u8]) {
    let start = begin(out, tag);
    out.extend_from_slice(body);
    finish(out, start);
}

/// The session temp table a COPY into `table` lands in first.
fn copy_table_name(table: &str) -> String {
    let safe: String = table
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    let hash = table.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    });
    format!("tandem_copy_{safe}_{:08x}", hash as u32)
}

/// The refusal for a plan Tandem will not run.
fn refusal_of(plan: &Plan) -> Rejection {
    match plan {
        Plan::Reject(rejection) => rejection.clone(),
        Plan::CopyIn(copy) => Rejection {
            sqlstate: tandem_rules::FEATURE_NOT_SUPPORTED,
            message: format!(
                "tandem: COPY FROM STDIN into ruled table {} is not mirrored yet",
                copy.table
            ),
            detail: Some(
                "Tandem refuses writes it cannot mirror rather than let them diverge.".into(),
            ),
            hint: Some(format!(
                "load the rows with INSERT, or COPY into {} and {} separately with the rule off",
                copy.table, copy.target
            )),
            table: Some(copy.table.clone()),
            policy: MirrorErrorPolicy::Fail,
            reason: tandem_rules::Refusal::Unsupported {
                table: copy.table.clone(),
                construct: "COPY FROM STDIN".into(),
            },
        },
        _ => Rejection {
            sqlstate: tandem_rules::FEATURE_NOT_SUPPORTED,
            message: "tandem: statement cannot be mirrored".into(),
            detail: None,
            hint: None,
            table: None,
            policy: MirrorErrorPolicy::Fail,
            reason: tandem_rules::Refusal::Unsupported {
                table: tandem_rules::TableName::new(None, "?"),
                construct: "statement".into(),
            },
        },
    }
}

/// A statement that makes the server raise the refusal with its SQLSTATE, message, detail
/// and hint, so the error and the transaction state are the server's own.
pub fn raise_sql(rejection: &Rejection) -> String {
    let lit = |s: &str| {
        format!(
            "'{}'",
            s.replace('\'', "''").replace("$tandem$", "$ tandem $")
        )
    };
    let mut using = vec![
        format!("ERRCODE = {}", lit(rejection.sqlstate)),
        format!("MESSAGE = {}", lit(&rejection.message)),
    ];
    if let Some(detail) = &rejection.detail {
        using.push(format!("DETAIL = {}", lit(detail)));
    }
    if let Some(hint) = &rejection.hint {
        using.push(format!("HINT = {}", lit(hint)));
    }
    if let Some(table) = &rejection.table {
        using.push(format!("TABLE = {}", lit(&table.name)));
        if let Some(schema) = &table.schema {
            using.push(format!("SCHEMA = {}", lit(schema)));
        }
    }
    format!(
        "DO $tandem$ BEGIN RAISE EXCEPTION USING {}; END $tandem$",
        using.join(", ")
    )
}

/// Server-to-client half: applies the expectations to the responses.
#[derive(Debug, Default)]
pub struct ServerSide;

impl ServerSide {
    /// Tags whose whole body the server side needs (RowDescription too, since a frame can
    /// only be replaced whole).
    pub fn inspects(tag: u8) -> bool {
        matches!(tag, b'C' | b'Z' | b'E' | b'T')
    }

    /// Decides one server message's fate.
    pub fn visit(tag: u8, body: &[u8], queue: &mut VecDeque<Expect>) -> Action {
        Self::visit_with_retry(tag, body, queue, &mut None)
    }

    /// As [`visit`](Self::visit); a statement to run again after a missing partition is
    /// created is put in `retry_out` (its error and ReadyForQuery are held back).
    pub fn visit_with_retry(
        tag: u8,
        body: &[u8],
        queue: &mut VecDeque<Expect>,
        retry_out: &mut Option<RetryJob>,
    ) -> Action {
        // Asynchronous messages can arrive at any point.
        if matches!(tag, b'N' | b'A' | b'S') {
            return Action::Forward;
        }
        if tag == b'Z' {
            while let Some(e) = queue.pop_front() {
                match e {
                    Expect::Query {
                        retry: Some(retry),
                        failed: Some(error),
                        ..
                    } => {
                        let mut ready = BytesMut::from(&[b'Z', 0, 0, 0, 5][..]);
                        ready.extend_from_slice(body);
                        *retry_out = Some(RetryJob {
                            retry: RetryKind::Simple(retry),
                            error,
                            ready,
                        });
                        return Action::Drop;
                    }
                    Expect::Query {
                        held: Some(mut held),
                        ..
                    } => {
                        held.extend_from_slice(&[b'Z', 0, 0, 0, 5]);
                        held.extend_from_slice(body);
                        return Action::Replace(held);
                    }
                    Expect::RetryExec {
                        retry,
                        failed: Some(error),
                        ..
                    } => {
                        // The rest of this batch, up to its Sync, was skipped by the server.
                        while let Some(e) = queue.pop_front() {
                            if matches!(e, Expect::Sync) {
                                break;
                            }
                        }
                        let mut ready = BytesMut::from(&[b'Z', 0, 0, 0, 5][..]);
                        ready.extend_from_slice(body);
                        *retry_out = Some(RetryJob {
                            retry: RetryKind::Extended(retry),
                            error,
                            ready,
                        });
                        return Action::Drop;
                    }
                    Expect::Sync | Expect::Query { .. } => break,
                    Expect::Msg { .. } | Expect::RetryExec { .. } => {}
                }
            }
            return Action::Forward;
        }
        let Some(head) = queue.front_mut() else {
            return Action::Forward;
        };
        if tag == b'E' {
            // A mirrored write that found no partition of the target, alone in flight, with
            // auto_partition: hold the error; the client side makes the partition and runs
            // the statement again.
            let alone = queue.len() == 1;
            if let Some(Expect::Query {
                retry: Some(_),
                failed,
                ..
            }) = queue.front_mut()
            {
                let fields = ErrorFields::parse(body);
                if alone
                    && failed.is_none()
                    && fields.code.as_deref() == Some("23514")
                    && fields.message.starts_with("no partition of relation")
                {
                    let mut frame = BytesMut::with_capacity(body.len() + 5);
                    let start = begin(&mut frame, b'E');
                    frame.extend_from_slice(body);
                    finish(&mut frame, start);
                    *failed = Some(frame);
                    return Action::Drop;
                }
            }
            // The same for the Execute of a prepared write, when nothing but Tandem's own
            // hidden messages and the Sync follow it (anything else would have been skipped
            // by the server, and could not be replayed in order).
            if let Some(Expect::RetryExec { failed: None, .. }) = queue.front() {
                let fields = ErrorFields::parse(body);
                let after: Vec<&Expect> = queue.iter().skip(1).collect();
                let sync_at = after.iter().position(|e| matches!(e, Expect::Sync));
                let only_hidden = sync_at.is_some_and(|at| {
                    at + 1 == after.len()
                        && after[..at].iter().all(|e| {
                            matches!(
                                e,
                                Expect::Msg {
                                    mode: MsgMode::Hide,
                                    ..
                                }
                            )
                        })
                });
                if only_hidden
                    && fields.code.as_deref() == Some("23514")
                    && fields.message.starts_with("no partition of relation")
                {
                    let mut frame = BytesMut::with_capacity(body.len() + 5);
                    let start = begin(&mut frame, b'E');
                    frame.extend_from_slice(body);
                    finish(&mut frame, start);
                    if let Some(Expect::RetryExec { failed, .. }) = queue.front_mut() {
                        *failed = Some(frame);
                    }
                    return Action::Drop;
                }
            }
            // After an error the server skips everything up to the next Sync, and a
            // deferred tag must never be seen.
            while matches!(
                queue.front(),
                Some(Expect::Msg { .. } | Expect::RetryExec { .. })
            ) {
                queue.pop_front();
            }
            if let Some(Expect::Query { held, .. }) = queue.front_mut() {
                *held = None;
            }
            return Action::Forward;
        }
        match head {
            Expect::Query {
                failed: Some(_), ..
            } => Action::Drop,
            Expect::Query {
                fixes, next, held, ..
            } => {
                let fix = fixes.get(*next).cloned().unwrap_or(StmtFix::Pass);
                if matches!(tag, b'C' | b'I') {
                    *next += 1;
                }
                match (fix, tag) {
                    (StmtFix::Hide, _) => Action::Drop,
                    (StmtFix::Defer, b'C') => {
                        *held = Some(command_complete(body));
                        Action::Drop
                    }
                    (StmtFix::Mirror(m), b'C') => fixed_tag(body, m.tag),
                    (StmtFix::Read(origins), b'T') => patch_origins(body, &origins),
                    (
                        StmtFix::Mirror(Mirror {
                            returning: false, ..
                        }),
                        b'T' | b'D',
                    ) => Action::Drop,
                    _ => Action::Forward,
                }
            }
            Expect::Msg { kind, mode } => {
                let kind = *kind;
                let action = match mode {
                    MsgMode::Pass => Action::Forward,
                    MsgMode::Hide => Action::Drop,
                    MsgMode::NoData if tag == b'T' => Action::Replace(no_data()),
                    MsgMode::NoData => Action::Forward,
                    MsgMode::Read(origins) if tag == b'T' => patch_origins(body, origins),
                    MsgMode::Read(_) => Action::Forward,
                    MsgMode::Mirror(m) => match tag {
                        b'D' if !m.returning => Action::Drop,
                        b'C' => fixed_tag(body, m.tag),
                        _ => Action::Forward,
                    },
                };
                if kind.ends_with(tag) {
                    queue.pop_front();
                }
                action
            }
            Expect::RetryExec {
                failed: Some(_), ..
            } => Action::Drop,
            Expect::RetryExec { mirror, .. } => {
                let m = *mirror;
                let action = match tag {
                    b'D' if !m.returning => Action::Drop,
                    b'C' => fixed_tag(body, m.tag),
                    _ => Action::Forward,
                };
                if MsgKind::Execute.ends_with(tag) {
                    queue.pop_front();
                }
                action
            }
            Expect::Sync => Action::Forward,
        }
    }
}

/// A RowDescription whose fields' table OID and attribute number are replaced by the
/// known legacy origins. A body that does not parse is forwarded as it is.
fn patch_origins(body: &[u8], origins: &[Option<ColumnOrigin>]) -> Action {
    let mut out = BytesMut::with_capacity(body.len() + 5);
    let start = begin(&mut out, b'T');
    out.extend_from_slice(body);
    finish(&mut out, start);
    let Some(count) = body.get(..2).map(|c| i16::from_be_bytes([c[0], c[1]])) else {
        return Action::Forward;
    };
    let mut at = 2usize;
    for i in 0..count.max(0) as usize {
        let Some(nul) = body.get(at..).and_then(|b| b.iter().position(|&c| c == 0)) else {
            return Action::Forward;
        };
        at += nul + 1;
        if body.len() < at + 18 {
            return Action::Forward;
        }
        if let Some(Some(origin)) = origins.get(i) {
            // +5: the frame header in `out`.
            out[5 + at..5 + at + 4].copy_from_slice(&origin.table_oid.to_be_bytes());
            out[5 + at + 4..5 + at + 6].copy_from_slice(&origin.attnum.to_be_bytes());
        }
        at += 18;
    }
    Action::Replace(out)
}

fn no_data() -> BytesMut {
    BytesMut::from(&[b'n', 0, 0, 0, 4][..])
}

/// CommandComplete for a mirrored write: `SELECT n` becomes the client's own tag.
fn fixed_tag(body: &[u8], write: WriteTag) -> Action {
    let text = body.strip_suffix(&[0]).unwrap_or(body);
    let rows = std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.strip_prefix("SELECT "))
        .and_then(|n| n.parse::<u64>().ok());
    let Some(rows) = rows else {
        return Action::Forward;
    };
    let mut tag = write.tag(rows).into_bytes();
    tag.push(0);
    Action::Replace(command_complete(&tag))
}

/// A CommandComplete frame around a NUL-terminated tag.
fn command_complete(tag_with_nul: &[u8]) -> BytesMut {
    let mut out = BytesMut::with_capacity(tag_with_nul.len() + 5);
    let start = begin(&mut out, b'C');
    out.extend_from_slice(tag_with_nul);
    finish(&mut out, start);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mirror(returning: bool) -> StmtFix {
        StmtFix::Mirror(Mirror {
            tag: WriteTag::Update,
            returning,
        })
    }

    fn bytes(a: Action) -> Option<Vec<u8>> {
        match a {
            Action::Replace(b) => Some(b.to_vec()),
            _ => None,
        }
    }

    #[test]
    fn simple_query_fixes_tag_and_drops_rows() {
        let mut q = VecDeque::new();
        q.push_back(Expect::Query {
            fixes: Arc::from([StmtFix::Pass, mirror(false), StmtFix::Hide]),
            next: 0,
            held: None,
            retry: None,
            failed: None,
        });
        // Statement 1 untouched.
        assert!(matches!(
            ServerSide::visit(b'T', b"", &mut q),
            Action::Forward
        ));
        assert!(matches!(
            ServerSide::visit(b'C', b"SELECT 1\0", &mut q),
            Action::Forward
        ));
        // Statement 2 mirrored without RETURNING.
        assert!(matches!(ServerSide::visit(b'T', b"", &mut q), Action::Drop));
        assert!(matches!(ServerSide::visit(b'D', b"", &mut q), Action::Drop));
        let c = bytes(ServerSide::visit(b'C', b"SELECT 3\0", &mut q)).unwrap();
        assert_eq!(&c[5..], b"UPDATE 3\0");
        assert!(matches!(
            ServerSide::visit(b'Z', b"I", &mut q),
            Action::Forward
        ));
        assert!(q.is_empty());
    }

    #[test]
    fn extended_fixes_describe_and_execute_and_skips_after_error() {
        let mut q = VecDeque::new();
        for e in [
            Expect::Msg {
                kind: MsgKind::Parse,
                mode: MsgMode::Pass,
            },
            Expect::Msg {
                kind: MsgKind::DescribeStatement,
                mode: MsgMode::NoData,
            },
            Expect::Msg {
                kind: MsgKind::Bind,
                mode: MsgMode::Pass,
            },
            Expect::Msg {
                kind: MsgKind::Execute,
                mode: MsgMode::Mirror(Mirror {
                    tag: WriteTag::Insert,
                    returning: false,
                }),
            },
            Expect::Sync,
        ] {
            q.push_back(e);
        }
        assert!(matches!(
            ServerSide::visit(b'1', b"", &mut q),
            Action::Forward
        ));
        assert!(matches!(
            ServerSide::visit(b't', b"", &mut q),
            Action::Forward
        ));
        assert_eq!(
            bytes(ServerSide::visit(b'T', b"", &mut q)).unwrap(),
            b"n\0\0\0\x04"
        );
        assert!(matches!(
            ServerSide::visit(b'2', b"", &mut q),
            Action::Forward
        ));
        assert!(matches!(ServerSide::visit(b'D', b"", &mut q), Action::Drop));
        let c = bytes(ServerSide::visit(b'C', b"SELECT 2\0", &mut q)).unwrap();
        assert_eq!(&c[5..], b"INSERT 0 2\0");
        ServerSide::visit(b'Z', b"I", &mut q);
        assert!(q.is_empty());

        q.push_back(Expect::Msg {
            kind: MsgKind::Parse,
            mode: MsgMode::Hide,
        });
        q.push_back(Expect::Msg {
            kind: MsgKind::Bind,
            mode: MsgMode::Hide,
        });
        q.push_back(Expect::Msg {
            kind: MsgKind::Execute,
            mode: MsgMode::Pass,
        });
        q.push_back(Expect::Msg {
            kind: MsgKind::Bind,
            mode: MsgMode::Pass,
        });
        q.push_back(Expect::Sync);
        assert!(matches!(ServerSide::visit(b'1', b"", &mut q), Action::Drop));
        assert!(matches!(ServerSide::visit(b'2', b"", &mut q), Action::Drop));
        assert!(matches!(
            ServerSide::visit(b'E', b"", &mut q),
            Action::Forward
        ));
        assert!(matches!(q.front(), Some(Expect::Sync)));
        ServerSide::visit(b'Z', b"E", &mut q);
        assert!(q.is_empty());
    }

    #[test]
    fn raise_sql_escapes_quotes() {
        let r = Rejection {
            sqlstate: "0A000",
            message: "it's $tandem$ here".into(),
            detail: None,
            hint: Some("h'".into()),
            table: None,
            policy: MirrorErrorPolicy::Fail,
            reason: tandem_rules::Refusal::Unsupported {
                table: tandem_rules::TableName::new(None, "t"),
                construct: "x".into(),
            },
        };
        let sql = raise_sql(&r);
        assert!(sql.contains("MESSAGE = 'it''s $ tandem $ here'"), "{sql}");
        assert!(sql.contains("HINT = 'h'''"));
    }
}

#[cfg(test)]
mod copy_tests {
    use super::*;

    #[test]
    fn deferred_copy_tag_is_dropped_on_error() {
        let mut q = VecDeque::new();
        q.push_back(Expect::Query {
            fixes: Arc::from([
                StmtFix::Hide,
                StmtFix::Hide,
                StmtFix::Defer,
                StmtFix::Hide,
                StmtFix::Hide,
            ]),
            next: 0,
            held: None,
            retry: None,
            failed: None,
        });
        assert!(matches!(
            ServerSide::visit(b'C', b"DO\0", &mut q),
            Action::Drop
        ));
        assert!(matches!(
            ServerSide::visit(b'C', b"TRUNCATE TABLE\0", &mut q),
            Action::Drop
        ));
        assert!(matches!(
            ServerSide::visit(b'G', b"", &mut q),
            Action::Forward
        ));
        assert!(matches!(
            ServerSide::visit(b'C', b"COPY 2\0", &mut q),
            Action::Drop
        ));
        assert!(matches!(
            ServerSide::visit(b'E', b"", &mut q),
            Action::Forward
        ));
        assert!(matches!(
            ServerSide::visit(b'Z', b"I", &mut q),
            Action::Forward
        ));
        q.push_back(Expect::Query {
            fixes: Arc::from([StmtFix::Defer, StmtFix::Hide]),
            next: 0,
            held: None,
            retry: None,
            failed: None,
        });
        assert!(matches!(
            ServerSide::visit(b'C', b"COPY 2\0", &mut q),
            Action::Drop
        ));
        assert!(matches!(
            ServerSide::visit(b'C', b"SELECT 2\0", &mut q),
            Action::Drop
        ));
        match ServerSide::visit(b'Z', b"I", &mut q) {
            Action::Replace(b) => assert_eq!(&b[..], b"C\0\0\0\x0bCOPY 2\0Z\0\0\0\x05I"),
            other => panic!("{other:?}"),
        }
    }
}
