//! The rows of `EXECUTE name` when `name` is a SQL-prepared read Tandem rewrote.
//!
//! Under `union_read` and `cutover` a `PREPARE q AS SELECT ... FROM orders` is prepared as
//! the read of the target (see `tandem_rules::reads`), so the server describes `EXECUTE q`'s
//! columns as coming from a derived table. The client's own statement would have named the
//! legacy table's columns: the RowDescription gets those origins back, as for a plain read.
//! The origins do not depend on the mode (they are always the legacy table's), so a
//! statement prepared again under other rules keeps them.

use std::sync::Arc;

use tandem_rules::{Plan, ResponseFix};

use super::client::{ClientSide, Known};
use super::{Origins, StmtFix};

impl ClientSide {
    /// `fixes` of a simple Query (one per statement, or none when nothing is fixed), with
    /// the legacy origins for each plain `EXECUTE` of a rewritten SQL-prepared read.
    pub(super) fn with_execute_origins(&self, sql: &str, fixes: Arc<[StmtFix]>) -> Arc<[StmtFix]> {
        if !self
            .sql_prepared
            .values()
            .any(|k| read_origins(k).is_some())
        {
            return fixes;
        }
        let executes = tandem_rules::executes_by_statement(sql);
        if executes.is_empty() || (!fixes.is_empty() && fixes.len() != executes.len()) {
            return fixes;
        }
        let mut out: Vec<StmtFix> = if fixes.is_empty() {
            vec![StmtFix::Pass; executes.len()]
        } else {
            fixes.to_vec()
        };
        let mut changed = false;
        for (fix, name) in out.iter_mut().zip(&executes) {
            let origins = name.as_deref().and_then(|n| self.execute_origins(n));
            if let (StmtFix::Pass, Some(origins)) = (&fix, origins) {
                *fix = StmtFix::Read(origins);
                changed = true;
            }
        }
        if changed {
            out.into()
        } else {
            fixes
        }
    }

    /// The legacy origins of the rows of `EXECUTE name`, when `name` is a SQL-prepared
    /// read Tandem rewrote. Not for a name the session also Parsed (the server holds one
    /// statement per name, and Tandem does not follow DEALLOCATE: it cannot tell which).
    pub(super) fn execute_origins(&self, name: &str) -> Option<Origins> {
        if self.known.contains_key(name) {
            return None;
        }
        self.sql_prepared.get(name).and_then(read_origins)
    }
}

/// The origins a remembered SQL `PREPARE` of a rewritten read gives its rows.
fn read_origins(known: &Known) -> Option<Origins> {
    match known.plan.as_deref() {
        Some(Plan::Rewritten(statements)) if statements.len() == 1 => {
            match &statements[0].response {
                ResponseFix::Read { origins } if !origins.is_empty() => Some(Arc::clone(origins)),
                _ => None,
            }
        }
        _ => None,
    }
}
