//! Every reason Tandem refuses to run a statement, and what the client is told.
//!
//! Tandem fails closed: a write to a ruled table that it cannot mirror with certainty is
//! not sent to the server at all (or, under the `record` policy, the proxy records the
//! drift). Each reason is one variant carrying what the user needs to act — the table, the
//! column, the construct — and maps to a SQLSTATE and hint in one place, so the proxy turns
//! it into an `ErrorResponse` without knowing the cases.

use crate::name::TableName;
use crate::rule::{MirrorErrorPolicy, Mode, ResolvedRule};

/// SQLSTATE `feature_not_supported`.
pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
/// SQLSTATE `object_not_in_prerequisite_state`.
pub const OBJECT_NOT_IN_PREREQUISITE_STATE: &str = "55000";

/// Why a statement that touches a ruled table cannot be run as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The parser could not read a statement that mentions a ruled table.
    #[error("tandem: cannot parse statement that mentions ruled table {table}; refusing to run it unmirrored")]
    Unparsable {
        /// The ruled table whose name appears.
        table: TableName,
        /// The parser's message.
        reason: String,
    },
    /// A positioned update or delete through a cursor.
    #[error(
        "tandem: UPDATE/DELETE ... WHERE CURRENT OF on ruled table {table} cannot be mirrored"
    )]
    CurrentOf {
        /// The ruled table.
        table: TableName,
    },
    /// Before PostgreSQL 17 `MERGE` has no RETURNING and cannot be put in a CTE, so it
    /// cannot carry a mirror.
    #[error("tandem: MERGE into ruled table {table} is mirrored from PostgreSQL 17 on (MERGE ... RETURNING inside WITH); this server is older: rewrite as INSERT ... ON CONFLICT, UPDATE and DELETE, or disable the rule")]
    Merge {
        /// The ruled table.
        table: TableName,
    },
    /// An UPDATE assigns a key or target partition key column in a form whose row move
    /// Tandem cannot mirror (with FROM, in `INSERT ... ON CONFLICT DO UPDATE`, or under the
    /// `record` policy).
    #[error("tandem: UPDATE changes key/partition column {column} of ruled table {table} {context}; Tandem cannot mirror a row move in that form")]
    KeyUpdate {
        /// The ruled table.
        table: TableName,
        /// The assigned column.
        column: String,
        /// What makes the move unmirrorable (`together with FROM`, ...).
        context: &'static str,
    },
    /// A write to a ruled table that is not the statement's top-level write.
    #[error("tandem: statement writes ruled table {table} inside {context}; Tandem only mirrors a top-level INSERT, UPDATE, DELETE or TRUNCATE")]
    NestedWrite {
        /// The ruled table.
        table: TableName,
        /// Where the write sits (`a WITH clause`, `EXPLAIN ANALYZE`, ...).
        context: &'static str,
    },
    /// `COPY … FROM 'file'` or `FROM PROGRAM`: the rows never pass through the proxy.
    #[error(
        "tandem: COPY into ruled table {table} from a server file or program cannot be mirrored"
    )]
    CopyFromServer {
        /// The ruled table.
        table: TableName,
    },
    /// `COPY … FROM STDIN` in a multi-statement query string.
    #[error("tandem: COPY FROM STDIN into ruled table {table} must be sent as a query of its own")]
    CopyInBatch {
        /// The ruled table.
        table: TableName,
    },
    /// Dropping a table while its rule is active would break every later write.
    #[error("tandem: table {table} has an active rule; drop the rule first")]
    DropRuled {
        /// The ruled table.
        table: TableName,
    },
    /// DDL that would change which table or column an active rule means: a rename, a new
    /// schema, inheritance or partition changes of its legacy table or its target.
    #[error("tandem: {action} on {named} would change what the active rule on {table} means; refusing it")]
    DdlRuled {
        /// The rule's legacy table.
        table: TableName,
        /// The table the statement changes (the legacy table or the rule's target).
        named: TableName,
        /// The statement, e.g. `ALTER TABLE ... RENAME TO`.
        action: &'static str,
    },
    /// The rule's mode has no implementation yet; writes are refused rather than guessed.
    #[error("tandem: rule for {table} is in mode {}, which this version of Tandem does not implement; writes are refused", mode.as_str())]
    UnsupportedMode {
        /// The ruled table.
        table: TableName,
        /// The configured mode.
        mode: Mode,
    },
    /// RETURNING refers to something the mirror's final SELECT cannot see.
    #[error("tandem: RETURNING of a write to ruled table {table} refers to {what}; Tandem can only return the ruled table's own columns when FROM/USING is present")]
    Returning {
        /// The ruled table.
        table: TableName,
        /// The offending reference.
        what: String,
    },
    /// The session's settings make the server read the statement's text otherwise than
    /// Tandem plans it, or Tandem cannot be sure how the server reads it.
    #[error("tandem: cannot be sure how the server reads a statement that names ruled table {table}: {why}")]
    Unreadable {
        /// The ruled table whose name appears (under some reading).
        table: TableName,
        /// What makes the reading uncertain.
        why: Unreadable,
    },
    /// Some other construct the rewrite does not handle.
    #[error("tandem: {construct} on ruled table {table} cannot be mirrored")]
    Unsupported {
        /// The ruled table.
        table: TableName,
        /// The construct, e.g. `INSERT with a joined target`.
        construct: String,
    },
}

/// Why Tandem cannot read a statement's text the way the server will.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Unreadable {
    /// A non-UTF8 client encoding and non-ASCII characters in the text.
    #[error("client_encoding is {0} and the statement holds non-ASCII characters")]
    Encoding(String),
    /// `standard_conforming_strings` is off and a string literal holds a backslash that
    /// changes where it ends.
    #[error(
        "standard_conforming_strings is off and a string literal holds a backslash before a quote"
    )]
    BackslashString,
    /// A statement still running may change `standard_conforming_strings` or
    /// `client_encoding`, and this statement reads differently under the two.
    #[error("a statement still running may change standard_conforming_strings or client_encoding, which this statement's reading depends on")]
    SettingInFlight,
    /// `search_path` (or the role `"$user"` stands for) may have changed earlier in the
    /// same query string or pipeline, so Tandem cannot tell which table a name means.
    #[error("search_path may change earlier in the same query string or pipeline, so Tandem cannot tell which table the name means")]
    SearchPathChanging,
}

impl Refusal {
    /// The SQLSTATE the client receives.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            Refusal::DropRuled { .. } | Refusal::DdlRuled { .. } => {
                OBJECT_NOT_IN_PREREQUISITE_STATE
            }
            _ => FEATURE_NOT_SUPPORTED,
        }
    }

    /// The ruled table concerned.
    pub fn table(&self) -> &TableName {
        match self {
            Refusal::Unparsable { table, .. }
            | Refusal::CurrentOf { table }
            | Refusal::Merge { table }
            | Refusal::KeyUpdate { table, .. }
            | Refusal::NestedWrite { table, .. }
            | Refusal::CopyFromServer { table }
            | Refusal::CopyInBatch { table }
            | Refusal::DropRuled { table }
            | Refusal::DdlRuled { table, .. }
            | Refusal::UnsupportedMode { table, .. }
            | Refusal::Returning { table, .. }
            | Refusal::Unreadable { table, .. }
            | Refusal::Unsupported { table, .. } => table,
        }
    }

    /// The same refusal, naming `table` (a reverse rewrite refuses on the target's name).
    pub(crate) fn for_table(mut self, name: &TableName) -> Self {
        match &mut self {
            Refusal::Unparsable { table, .. }
            | Refusal::CurrentOf { table }
            | Refusal::Merge { table }
            | Refusal::KeyUpdate { table, .. }
            | Refusal::NestedWrite { table, .. }
            | Refusal::CopyFromServer { table }
            | Refusal::CopyInBatch { table }
            | Refusal::DropRuled { table }
            | Refusal::DdlRuled { table, .. }
            | Refusal::UnsupportedMode { table, .. }
            | Refusal::Returning { table, .. }
            | Refusal::Unreadable { table, .. }
            | Refusal::Unsupported { table, .. } => *table = name.clone(),
        }
        self
    }

    /// Extra detail for the `ErrorResponse`, when there is any.
    pub fn detail(&self) -> Option<String> {
        match self {
            Refusal::Unparsable { reason, .. } => Some(reason.clone()),
            _ => None,
        }
    }

    /// What the user can do about it.
    pub fn hint(&self) -> Option<String> {
        let hint = match self {
            Refusal::Unparsable { .. } => "simplify the statement, or set the rule's mode to off",
            Refusal::CurrentOf { .. } => {
                "update or delete the row by its key instead of through a cursor"
            }
            Refusal::Merge { .. } => return None,
            Refusal::KeyUpdate { .. } => {
                "change the key with an UPDATE without FROM under the fail policy (a subquery \
                 can supply the new value), or delete the row and insert it again with the new key"
            }
            Refusal::NestedWrite { .. } => {
                "run the write to the ruled table as a statement of its own"
            }
            Refusal::CopyFromServer { .. } => {
                "use COPY ... FROM STDIN so the rows pass through Tandem"
            }
            Refusal::CopyInBatch { .. } => "send the COPY in a query message of its own",
            Refusal::DropRuled { .. } => {
                "remove the rule (or set its mode to off) and reload Tandem's configuration"
            }
            Refusal::DdlRuled { action, .. } if action.ends_with("PARTITION") => {
                "create and retire the target's partitions with `tandem partitions`, or set the \
                 rule's mode to off first (SET RULE <table> MODE off), change both tables alike, \
                 and turn the rule back on"
            }
            Refusal::DdlRuled { .. } => {
                "set the rule's mode to off first (SET RULE <table> MODE off) or remove the rule, \
                 make the change, point the rule at the tables as they are now, and turn it back on"
            }
            Refusal::UnsupportedMode { .. } => "set the rule's mode to dual_write or off",
            Refusal::Returning { .. } => {
                "qualify the returned columns with the ruled table's name or alias"
            }
            Refusal::Unsupported { .. } => {
                "rewrite the statement as a plain INSERT, UPDATE or DELETE"
            }
            Refusal::Unreadable { why, .. } => match why {
                Unreadable::Encoding(_) => {
                    "set client_encoding to UTF8 in sessions that write ruled tables"
                }
                Unreadable::BackslashString => {
                    "write the literal as E'...', or set standard_conforming_strings to on"
                }
                Unreadable::SettingInFlight => {
                    "send the statement after the result of the one that changes the setting"
                }
                Unreadable::SearchPathChanging => {
                    "change search_path in a query (or Sync) of its own, before the statement that writes the ruled table"
                }
            },
        };
        Some(hint.to_string())
    }

    /// Whether the rule's `record` policy may apply: a write that cannot be mirrored may be
    /// let through and recorded as drift, but schema changes and unknown modes may not.
    fn policy_applies(&self) -> bool {
        !matches!(
            self,
            Refusal::DropRuled { .. }
                | Refusal::DdlRuled { .. }
                | Refusal::UnsupportedMode { .. }
                | Refusal::Unreadable { .. }
        )
    }
}

/// A refusal as the proxy reports it: everything for an `ErrorResponse`, plus the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// SQLSTATE code.
    pub sqlstate: &'static str,
    /// Primary message.
    pub message: String,
    /// Optional detail line.
    pub detail: Option<String>,
    /// Optional hint line.
    pub hint: Option<String>,
    /// The ruled table concerned.
    pub table: Option<TableName>,
    /// `Fail`: return the error. `Record`: the proxy may run the client's statement unmirrored
    /// and record drift.
    pub policy: MirrorErrorPolicy,
    /// The typed reason, for callers that branch on it.
    pub reason: Refusal,
    /// The client's whole query text when Tandem could not parse it: the server should read
    /// it (without running it) before Tandem's refusal, so that a syntax error is reported
    /// as the server's own 42601, first, as it would be without Tandem (also inside an
    /// aborted transaction, where the server parses before it refuses with 25P02).
    pub statement: Option<String>,
}

impl Rejection {
    /// The report for `reason` under the rule's error `policy`.
    pub fn new(reason: Refusal, policy: MirrorErrorPolicy) -> Self {
        let policy = if reason.policy_applies() {
            policy
        } else {
            MirrorErrorPolicy::Fail
        };
        Self {
            sqlstate: reason.sqlstate(),
            message: reason.to_string(),
            detail: reason.detail(),
            hint: reason.hint(),
            table: Some(reason.table().clone()),
            policy,
            reason,
            statement: None,
        }
    }
}

/// The modes in which a write to the legacy table is mirrored (`dual_write` and
/// `union_read` forward, `cutover` in reverse). `target_only` never gets here (its
/// statements are renamed first).
pub(crate) fn require_dual_write(rule: &ResolvedRule) -> Result<(), Refusal> {
    match rule.rule.mode {
        Mode::DualWrite | Mode::UnionRead | Mode::Cutover => Ok(()),
        mode => Err(Refusal::UnsupportedMode {
            table: rule.rule.table.clone(),
            mode,
        }),
    }
}
