//! auto_partition: a mirrored write that failed for want of a target partition runs again.
//!
//! The write is armed before it runs (behind Tandem's own savepoint inside a transaction,
//! alone in autocommit); when the target answers 23514 the [server side](super::server)
//! holds the error and ReadyForQuery, the session makes the partition
//! ([`ClientSide::make_partition`]) and sends [`ClientSide::retry_message`]: the client's
//! own statement (or Bind and Execute frames) again. The client never sees the error.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::BytesMut;
use tandem_rules::{Plan, ResponseFix};

use super::client::ClientSide;
use super::{append_frame, error_field, Expect, Mirror, MsgKind, MsgMode, StmtFix};
use crate::session::framed::Action;
use crate::wire::protocol::frontend;

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

impl ClientSide {
    /// The auto_partition form of a single mirrored write: inside a transaction it runs
    /// behind a savepoint (so a retry can roll back to it), and the retry data goes with
    /// its expectation. `None` when the rule does not ask for it.
    pub(super) fn with_retry(
        &self,
        statements: &[tandem_rules::StatementPlan],
    ) -> Option<(String, Arc<[StmtFix]>, Arc<Retry>)> {
        let [statement] = statements else { return None };
        if !self.auto_partition(statement) {
            return None;
        }
        let fix = StmtFix::of(statement, &self.stats.rules);
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
            .ok_or_else(|| {
                format!(
                    "cannot read a single partition key value from the error's detail \"{detail}\""
                )
            })?;
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
    pub(super) fn arm_retry(
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
    pub(super) fn auto_partition(&self, statement: &tandem_rules::StatementPlan) -> bool {
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
    pub(super) fn auto_partition_bind(&self, statement: &str, body: &[u8]) -> Option<BytesMut> {
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
}
