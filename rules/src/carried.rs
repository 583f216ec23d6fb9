//! What the write CTE must return besides the row, so the client's RETURNING means in the
//! final SELECT what it means on the table.
//!
//! `SELECT <client RETURNING> FROM tandem_w AS o` sees a CTE, not the table: a CTE has no
//! system columns (`xmin`, `ctid`, `tableoid`...), its whole row `o` is an anonymous
//! `record`, and the final SELECT accepts aggregates, window and set-returning functions
//! that RETURNING refuses, and has no other table in scope to make a name ambiguous. So the
//! write's own RETURNING carries, after its row:
//!
//! ```sql
//! RETURNING *, o.xmax AS xmax,        -- each system column the client names, under its name
//!              o AS o,                -- the whole row, when the client names it bare
//!              CASE WHEN false THEN ROW(<client's expressions>) END AS tandem_check
//! ```
//!
//! A bare name resolves to a column before a table's whole row, so in the final SELECT
//! `xmax` and `o` find these columns: the same values, types and (through the CTE) the same
//! RowDescription origins as on the table. `tandem_check` repeats the client's expressions
//! where they were written, in RETURNING of the write: PostgreSQL checks them there as it
//! would have (42803 for an aggregate, 42P20 for a window function, 0A000 for a
//! set-returning function, 42702 for an ambiguous column), and the planner folds the
//! `CASE WHEN false` away, so they never run twice. When anything is carried, a `*` or `o.*`
//! of the client's list is spelled out as the table's columns, which it means there.

use std::ops::ControlFlow;

use sqlparser::ast::{Expr, Query, SelectItem, Visit, Visitor};

use crate::ident::{normalize, quote_ident};
use crate::refusal::Refusal;
use crate::returning::Subject;
use crate::rule::Mode;

/// PostgreSQL's system columns (15 has no `oid` column).
const SYSTEM_COLUMNS: [&str; 6] = ["tableoid", "xmin", "cmin", "xmax", "cmax", "ctid"];

/// Name of the column that makes the server check the client's expressions.
const CHECK_COLUMN: &str = "tandem_check";

/// What `tandem_w` returns besides the row, for one client RETURNING list.
#[derive(Debug, Default)]
pub(crate) struct Carried {
    /// `<row>.xmin AS xmin`..., the whole row and the check column, rendered.
    extras: Vec<String>,
}

impl Carried {
    /// What `items` (the client's RETURNING, in `subject`'s write) need carried; `joined`
    /// when FROM/USING puts other tables in scope.
    ///
    /// Refused in `cutover`: there the statement writes the target, and the legacy row the
    /// client's system columns or whole row mean is written by the mirror, not returned.
    pub(crate) fn of(
        subject: &Subject<'_>,
        items: Option<&[SelectItem]>,
        joined: bool,
    ) -> Result<Self, Refusal> {
        let Some(items) = items else {
            return Ok(Self::default());
        };
        let row = subject.row_name();
        let row_key = normalize(&row);
        let shape = &subject.rule.shape;
        let mut scan = Scan {
            subject,
            row_key: &row_key,
            system: Vec::new(),
            whole_row: false,
            check: false,
            joined,
        };
        let mut exprs = Vec::new();
        for item in items {
            let expr = match item {
                SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => e,
                _ => continue,
            };
            let _ = expr.visit(&mut scan);
            exprs.push(expr.to_string());
        }
        let whole_row = scan.whole_row && !shape.is_legacy_column(&row_key);
        if subject.rule.rule.mode == Mode::Cutover && (whole_row || !scan.system.is_empty()) {
            return Err(Refusal::Unsupported {
                table: subject.rule.rule.table.clone(),
                construct: "RETURNING a system column or the whole row in cutover (the \
                            statement writes the target; the legacy row is written by the \
                            mirror and not returned)"
                    .into(),
            });
        }
        let mut extras: Vec<String> = SYSTEM_COLUMNS
            .iter()
            .filter(|c| scan.system.iter().any(|s| s == *c))
            .map(|c| format!("{row}.{c} AS {c}"))
            .collect();
        if whole_row {
            extras.push(format!("{row} AS {row}"));
        }
        if scan.check {
            extras.push(format!(
                "CASE WHEN false THEN ROW({}) END AS {CHECK_COLUMN}",
                exprs.join(", ")
            ));
        }
        Ok(Self { extras })
    }

    /// Carry one more column: `expr AS name`, rendered (a MERGE's action, see
    /// [`merge`](crate::merge)).
    pub(crate) fn push(&mut self, column: String) {
        self.extras.push(column);
    }

    /// Nothing carried: `tandem_w` has exactly the table's columns.
    pub(crate) fn is_empty(&self) -> bool {
        self.extras.is_empty()
    }

    /// The write's RETURNING list: `row` (`*` or `o.*`) and the carried columns.
    pub(crate) fn returning(&self, row: &str) -> String {
        std::iter::once(row.to_string())
            .chain(self.extras.iter().cloned())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// What `ROW(...)` takes for one row of `written` (`tandem_w`) as the legacy table's
    /// row: `tandem_w.*`, or its columns by name when more is carried.
    pub(crate) fn row_of(&self, subject: &Subject<'_>, written: &str) -> String {
        if self.is_empty() {
            format!("{written}.*")
        } else {
            table_columns(subject)
                .iter()
                .map(|c| format!("{written}.{}", quote_ident(c)))
                .collect::<Vec<_>>()
                .join(", ")
        }
    }
}

/// Is `name` (catalog spelling) a system column?
pub(crate) fn is_system_column(name: &str) -> bool {
    SYSTEM_COLUMNS.contains(&name)
}

/// The table's columns in table order, generated ones included: what `*` means on it.
pub(crate) fn table_columns(subject: &Subject<'_>) -> Vec<String> {
    let shape = &subject.rule.shape;
    if shape.legacy_table.is_empty() {
        shape.legacy_columns.clone()
    } else {
        shape.legacy_table.iter().map(|c| c.name.clone()).collect()
    }
}

/// Finds system columns, bare whole-row references and expressions the server must check.
struct Scan<'a> {
    subject: &'a Subject<'a>,
    row_key: &'a str,
    system: Vec<&'static str>,
    whole_row: bool,
    check: bool,
    joined: bool,
}

impl Scan<'_> {
    fn system(&mut self, name: &str) {
        if let Some(c) = SYSTEM_COLUMNS.iter().find(|c| **c == name) {
            self.system.push(c);
        }
    }
}

impl Visitor for Scan<'_> {
    type Break = ();
    fn pre_visit_query(&mut self, _query: &Query) -> ControlFlow<()> {
        self.check = true;
        ControlFlow::Continue(())
    }
    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        match expr {
            Expr::Identifier(id) => {
                let name = normalize(id);
                if !self.subject.rule.shape.is_legacy_column(&name) {
                    self.system(&name);
                    if name == self.row_key {
                        self.whole_row = true;
                    }
                }
                // Another table in scope may have a column of this name too.
                if self.joined {
                    self.check = true;
                }
            }
            Expr::CompoundIdentifier(parts) if parts.len() > 1 => {
                let (column, qualifier) = parts.split_last().expect("two parts or more");
                if self.subject.names_row(qualifier) {
                    self.system(&normalize(column));
                }
            }
            Expr::Function(_) => self.check = true,
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
#[path = "tests/carried.rs"]
mod tests;
