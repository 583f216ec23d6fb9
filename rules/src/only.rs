//! `UPDATE ONLY t`, `DELETE FROM ONLY t` and `MERGE INTO ONLY t`, which the parser misreads.
//!
//! The parser Tandem uses has no `ONLY` for UPDATE, DELETE and MERGE: it reads `UPDATE ONLY
//! orders SET ...` as an update of a table called `only` aliased `orders`, so the write to
//! the ruled table would pass unseen, and `UPDATE ONLY orders AS o` does not parse at all.
//! `ONLY` is a reserved word in PostgreSQL, so right after `UPDATE`, `DELETE FROM` or
//! `MERGE INTO` it is
//! always the keyword. [`strip`] blanks it out (same length, so every other token keeps its
//! position) and remembers where the table name that followed it starts; the planner then
//! knows which write carried `ONLY`, and [`restore`] puts the keyword back into the rendered
//! write. A legacy table with no inheritance children writes the same rows either way; with
//! children, `ONLY` keeps them out of the write and therefore out of the mirror.

use sqlparser::ast::ObjectName;
use sqlparser::tokenizer::Location;

use crate::lexer::{folded_eq, Kind, Scanner};

/// A statement's text with every `ONLY` after `UPDATE` / `DELETE FROM` blanked out.
pub(crate) struct Stripped<'a> {
    /// The text to parse: the original when nothing was blanked.
    pub text: std::borrow::Cow<'a, str>,
    /// Where each table name that followed a blanked `ONLY` starts (the parser's
    /// line/column, 1-based).
    pub marks: Vec<Location>,
}

impl Stripped<'_> {
    /// Did `ONLY` precede this table name, as the parser placed it?
    pub(crate) fn marks_table(&self, name: &ObjectName) -> bool {
        let Some(sqlparser::ast::ObjectNamePart::Identifier(first)) = name.0.first() else {
            return false;
        };
        self.marks.contains(&first.span.start)
    }
}

/// Blank out `ONLY` where it follows `UPDATE`, `DELETE FROM` or `MERGE INTO` (see the module
/// doc).
pub(crate) fn strip(sql: &str) -> Stripped<'_> {
    let bytes = sql.as_bytes();
    let is = |t: &crate::lexer::Token, word: &[u8]| {
        t.kind == Kind::Ident && folded_eq(&bytes[t.start..t.end], word)
    };
    let tokens: Vec<_> = Scanner::new(sql).collect();
    let mut blanks = Vec::new();
    let mut marks = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        if !is(token, b"only") || i == 0 {
            continue;
        }
        let after_update = is(&tokens[i - 1], b"update");
        let after_delete_from =
            i >= 2 && is(&tokens[i - 1], b"from") && is(&tokens[i - 2], b"delete");
        let after_merge_into =
            i >= 2 && is(&tokens[i - 1], b"into") && is(&tokens[i - 2], b"merge");
        if !(after_update || after_delete_from || after_merge_into) {
            continue;
        }
        if let Some(next) = tokens.get(i + 1) {
            // A quoted name's span starts at its opening quote.
            let start = match next.kind {
                Kind::Quoted => next.start - 1,
                Kind::UnicodeQuoted => next.start.saturating_sub(3),
                _ => next.start,
            };
            marks.push(location(sql, start));
        }
        blanks.push((token.start, token.end));
    }
    if blanks.is_empty() {
        return Stripped {
            text: sql.into(),
            marks,
        };
    }
    let mut text = sql.to_string();
    for (start, end) in blanks {
        text.replace_range(start..end, &" ".repeat(end - start));
    }
    Stripped {
        text: text.into(),
        marks,
    }
}

/// The parser's line and column (1-based, counted in characters) of byte `offset`.
fn location(sql: &str, offset: usize) -> Location {
    let before = &sql[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |at| at + 1);
    let column = before[line_start..].chars().count() + 1;
    Location::new(line as u64, column as u64)
}

/// Put `ONLY` back into a rendered `UPDATE …`, `DELETE FROM …` or `MERGE INTO …` when
/// `only` is set.
pub(crate) fn restore(rendered: String, only: bool) -> String {
    if !only {
        return rendered;
    }
    for prefix in ["UPDATE ", "DELETE FROM ", "MERGE INTO "] {
        if let Some(rest) = rendered.strip_prefix(prefix) {
            return format!("{prefix}ONLY {rest}");
        }
    }
    debug_assert!(false, "no UPDATE/DELETE/MERGE prefix in {rendered}");
    rendered
}

/// `ONLY ` when `only` is set: for a `FROM` Tandem writes itself.
pub(crate) fn keyword(only: bool) -> &'static str {
    if only {
        "ONLY "
    } else {
        ""
    }
}

#[cfg(test)]
#[path = "tests/only.rs"]
mod tests;
