//! What Tandem will not run: refusals raised by the server itself, or recorded as drift.
//!
//! A refused statement is replaced by one that makes the server raise Tandem's error
//! ([`raise_sql`]), so the error fields and the transaction state are exactly Postgres's
//! own; under `on_mirror_error = "record"` the statement runs and the refusal goes to
//! `tandem.drift`.

use std::collections::VecDeque;

use bytes::BytesMut;
use tandem_rules::{MirrorErrorPolicy, Plan, Rejection, RuleSet};
use tracing::warn;

use super::{Expect, MsgKind, MsgMode};
use crate::control::drift::{DriftRecord, DriftSink};
use crate::wire::protocol::frontend;

/// Records a refusal the rule's `record` policy lets run: a warning in the log and a row
/// in `tandem.drift` (when the drift sink is on).
pub(super) fn record(drift: Option<&DriftSink>, rules: &RuleSet, rejection: &Rejection, sql: &str) {
    let table = rejection
        .table
        .as_ref()
        .map(|t| t.to_string())
        .unwrap_or_default();
    warn!(%table, reason = %rejection.message, "statement runs unmirrored (on_mirror_error = record)");
    if let Some(drift) = drift {
        let target = rules
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

/// The prepared statement a refusal is raised through in the extended protocol.
const REFUSAL_STATEMENT: &str = "tandem_refusal";

/// A refusal of Tandem's own (no ruled table named, nothing to record: `fail`), 0A000.
fn own_refusal(
    message: String,
    detail: Option<&str>,
    hint: Option<&str>,
    construct: &str,
) -> Rejection {
    Rejection {
        sqlstate: tandem_rules::FEATURE_NOT_SUPPORTED,
        message,
        detail: detail.map(str::to_string),
        hint: hint.map(str::to_string),
        table: None,
        policy: MirrorErrorPolicy::Fail,
        reason: tandem_rules::Refusal::Unsupported {
            table: tandem_rules::TableName::new(None, "?"),
            construct: construct.into(),
        },
        statement: None,
    }
}

/// A refusal for a Parse or Bind whose statement or portal name is not UTF-8: Tandem
/// could not follow that statement across rule changes, so it is not let through.
pub(super) fn undecodable_name() -> Rejection {
    own_refusal(
        "tandem: prepared statement and portal names must be UTF-8 in a session with migration rules".into(),
        None,
        Some("name prepared statements and portals in ASCII"),
        "a prepared statement or portal name that is not UTF-8",
    )
}

/// A prepared statement planned under older rules that must now run differently and that
/// Tandem cannot prepare again from where it is run (a protocol-level statement run by SQL
/// `EXECUTE`, or a SQL `PREPARE` bound through the protocol).
pub(super) fn stale_statement(name: &str) -> Rejection {
    own_refusal(
        format!(
            "tandem: prepared statement \"{name}\" was prepared under older migration rules and would now run differently"
        ),
        Some("Tandem plans a prepared statement again where it is run, and cannot from here."),
        Some("prepare the statement again (DEALLOCATE and PREPARE, or a new Parse)"),
        "a prepared statement planned under older rules",
    )
}

/// Messages that run a statement raising `rejection` in the extended protocol (unnamed
/// Parse, Bind, Execute), with their ParseComplete/BindComplete hidden: the server fails
/// there and skips the client's messages up to Sync, as after any failed message.
pub(super) fn raise_in_place(
    rejection: &Rejection,
    queue: &mut VecDeque<Expect>,
    out: &mut BytesMut,
) {
    // A statement of Tandem's own, so the client's unnamed statement is not replaced (its
    // next Bind of it, after the Sync, must find its own). Closing a statement that does
    // not exist is no error.
    // A text Tandem could not parse is parsed by the server first (see [`raise_sql`]):
    // Parse only reads and analyses it, and its syntax error, with the client's own
    // position, is the one the client gets.
    let unparsable = matches!(rejection.reason, tandem_rules::Refusal::Unparsable { .. });
    if let Some(text) = rejection.statement.as_ref().filter(|_| unparsable) {
        frontend::encode_close(b'S', REFUSAL_STATEMENT, out);
        frontend::encode_parse(REFUSAL_STATEMENT, text, &[0, 0], out);
        for kind in [MsgKind::Close, MsgKind::Parse] {
            queue.push_back(Expect::Msg {
                kind,
                mode: MsgMode::Hide,
            });
        }
    }
    frontend::encode_close(b'S', REFUSAL_STATEMENT, out);
    frontend::encode_parse(REFUSAL_STATEMENT, &raise_one(rejection), &[0, 0], out);
    frontend::encode_bind_empty("", REFUSAL_STATEMENT, out);
    frontend::encode_execute("", 0, out);
    for (kind, mode) in [
        (MsgKind::Close, MsgMode::Hide),
        (MsgKind::Parse, MsgMode::Hide),
        (MsgKind::Bind, MsgMode::Hide),
        (MsgKind::Execute, MsgMode::Pass),
    ] {
        queue.push_back(Expect::Msg { kind, mode });
    }
}

/// The refusal for a plan Tandem will not run.
pub(super) fn refusal_of(plan: &Plan) -> Rejection {
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
            statement: None,
        },
        _ => own_refusal(
            "tandem: statement cannot be mirrored".into(),
            None,
            None,
            "statement",
        ),
    }
}

/// A simple-protocol query string that makes the server raise the refusal with its
/// SQLSTATE, message, detail and hint, so the error and the transaction state are the
/// server's own. When Tandem could not parse the client's text, the text follows the
/// raising statement: the server parses the whole string before it runs any of it, so a
/// syntax error is reported as its own 42601 (inside an aborted transaction too, where it
/// parses before it refuses with 25P02), and otherwise the refusal stops the string before
/// the client's text runs. (The error's position then counts Tandem's statement too.)
pub fn raise_sql(rejection: &Rejection) -> String {
    match &rejection.statement {
        Some(text) => format!("{};\n{text}", raise_one(rejection)),
        None => raise_one(rejection),
    }
}

/// A simple Query body that raises the refusal, followed by the client's own bytes `src`
/// (in its client_encoding): the server parses the whole string first, so a statement it
/// cannot parse gets its own syntax error, exactly as without Tandem, and otherwise the
/// refusal stops the string before any of the client's statements run.
pub(super) fn raise_before(rejection: &Rejection, src: &[u8]) -> Vec<u8> {
    let mut text = raise_one(rejection).into_bytes();
    text.extend_from_slice(b";\n");
    text.extend_from_slice(src);
    text
}

/// One statement raising the refusal (see [`raise_sql`]); what a Parse can hold.
fn raise_one(rejection: &Rejection) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

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
            statement: None,
        };
        let sql = raise_sql(&r);
        assert!(sql.contains("MESSAGE = 'it''s $ tandem $ here'"), "{sql}");
        assert!(sql.contains("HINT = 'h'''"));
    }
}
