//! Bulk `INSERT ... VALUES (...), (...), ...`: planned in time linear in its size.
//!
//! ORMs send one INSERT with thousands of rows (`bulk_create`, `insert_all`). Planned like
//! any statement, every row's expressions become a syntax tree, which is rendered into the
//! rewrite and parsed once more to check the rendering ([`renders_faithfully`]); for a
//! 100,000-row statement that took seconds on a worker thread other sessions share.
//!
//! The rows never need a tree: when none of them names a ruled table (or its target),
//! Tandem changes nothing in them, and the server can read them exactly as the client wrote
//! them. So [`split`] finds the row list with the [lexer](crate::lexer) (one pass,
//! literals and comments skipped as the server skips them), the statement is planned as a
//! *skeleton* whose row list is one marker row, and the client's rows are put back where
//! the rewrite rendered the marker. The rows are balanced parenthesised groups separated
//! by commas, so pasted back they cannot reach outside the `VALUES` they came from.
//!
//! Anything unusual takes the ordinary path: a statement that does not start with
//! `INSERT`, rows that name a ruled table (a `target_only` rename or a read rewrite might
//! be needed inside them), a row list followed by anything but `ON CONFLICT`,
//! `RETURNING` or the end, a client text that already spells the marker, or a rewrite
//! that does not render the marker exactly once.
//!
//! [`renders_faithfully`]: crate::parse::renders_faithfully

use crate::lexer::{folded_eq, Kind, Scanner, Token};
use crate::plan::Outcome;
use crate::prefilter::{mentions_ruled_table, RuledNames};
use crate::refusal::Refusal;

/// Statements shorter than this are planned the ordinary way: their tree is cheap, and
/// the ordinary path is the one the round-trip tests pin down to the byte.
pub(crate) const BULK_MIN_BYTES: usize = 16 * 1024;

/// The identifier standing for the row list in the skeleton.
const MARKER: &str = "tandem_bulk_rows";

/// The marker row as the parser renders it.
const MARKER_ROW: &str = "(tandem_bulk_rows)";

/// A bulk INSERT cut in two: the skeleton to plan, and the client's rows.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Bulk<'a> {
    /// The statement with its row list replaced by the marker row.
    pub skeleton: String,
    /// The client's row list, `(...), (...)`, as written.
    pub rows: &'a str,
}

/// Plans `piece` through its skeleton when it is a large bulk INSERT (see the module
/// doc); `None` sends it down the ordinary path. `plan_one(skeleton, piece)` plans a
/// statement given the text to parse and the client's own text.
pub(crate) fn plan(
    piece: &str,
    names: &RuledNames,
    plan_one: impl FnOnce(&str, &str) -> Result<Outcome, Refusal>,
) -> Option<Result<Outcome, Refusal>> {
    if piece.len() < BULK_MIN_BYTES {
        return None;
    }
    plan_split(piece, names, plan_one)
}

/// [`plan`] without the size threshold.
pub(crate) fn plan_split(
    piece: &str,
    names: &RuledNames,
    plan_one: impl FnOnce(&str, &str) -> Result<Outcome, Refusal>,
) -> Option<Result<Outcome, Refusal>> {
    let bulk = split(piece, names)?;
    let outcome = match plan_one(&bulk.skeleton, piece) {
        Ok(outcome) => outcome,
        Err(refusal) => return Some(Err(refusal)),
    };
    Some(Ok(match outcome {
        Outcome::Untouched => Outcome::Untouched,
        Outcome::Rewritten(mut statement) => {
            statement.sql = splice(&statement.sql, bulk.rows)?;
            Outcome::Rewritten(statement)
        }
        Outcome::CopyIn(_) => return None,
    }))
}

/// `rendered` with its one marker row replaced by the client's `rows`; `None` unless the
/// marker row occurs exactly once.
fn splice(rendered: &str, rows: &str) -> Option<String> {
    let at = rendered.find(MARKER_ROW)?;
    let after = at + MARKER_ROW.len();
    if rendered[after..].contains(MARKER_ROW) {
        return None;
    }
    let mut sql = String::with_capacity(rendered.len() + rows.len());
    sql.push_str(&rendered[..at]);
    sql.push_str(rows);
    sql.push_str(&rendered[after..]);
    Some(sql)
}

/// Cuts `piece` into skeleton and rows when it is `INSERT ... VALUES <rows>` followed by
/// nothing, `ON` (CONFLICT) or `RETURNING`, and no row names a ruled table.
pub(crate) fn split<'a>(piece: &'a str, names: &RuledNames) -> Option<Bulk<'a>> {
    let src = piece.as_bytes();
    let word = |t: &Token, w: &[u8]| t.kind == Kind::Ident && folded_eq(&src[t.start..t.end], w);
    let punct = |t: &Token, c: u8| t.kind == Kind::Other && src[t.start..t.end] == [c];
    let mut tokens = Scanner::new(piece);
    if !word(&tokens.next()?, b"insert") {
        return None;
    }
    // The first `VALUES` outside parentheses, right before a `(`, starts the rows.
    let mut depth = 0usize;
    let mut first = loop {
        let token = tokens.next()?;
        if punct(&token, b'(') {
            depth += 1;
        } else if punct(&token, b')') {
            depth = depth.checked_sub(1)?;
        } else if depth == 0 && word(&token, b"values") {
            let open = tokens.next()?;
            if !punct(&open, b'(') {
                return None;
            }
            break open;
        }
    };
    let start = first.start;
    let mut end;
    loop {
        // One row: `(` ... the matching `)`.
        depth = 1;
        end = first.end;
        while depth > 0 {
            let token = tokens.next()?;
            if punct(&token, b'(') {
                depth += 1;
            } else if punct(&token, b')') {
                depth -= 1;
            }
            end = token.end;
        }
        match tokens.next() {
            Some(t) if punct(&t, b',') => {
                first = tokens.next().filter(|t| punct(t, b'('))?;
            }
            Some(t) if word(&t, b"on") || word(&t, b"returning") => break,
            Some(_) => return None,
            None => break,
        }
    }
    let (prefix, rows, suffix) = (&piece[..start], &piece[start..end], &piece[end..]);
    // The rows start and end on token boundaries, so they lex alone as they did in place.
    if mentions_ruled_table(rows, names) {
        return None;
    }
    let spells_marker = |text: &str| text.to_ascii_lowercase().contains(MARKER);
    if spells_marker(prefix) || spells_marker(suffix) {
        return None;
    }
    Some(Bulk {
        skeleton: format!("{prefix}{MARKER_ROW}{suffix}"),
        rows,
    })
}
