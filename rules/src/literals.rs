//! One plan per statement shape: literals masked, planned once, put back per statement.
//!
//! Simple-protocol clients (`pgbench -M simple`, ORMs that inline values, psql) send the
//! same statement with other literals each time, so a plan cache keyed by the text misses
//! every time and each statement is parsed and rewritten anew. Tandem's rewrites never look
//! at a literal's value (they move expressions, never evaluate them), so the plan of
//! `... WHERE id = $1` is the plan of `... WHERE id = 5` with `$1` where `5` was. This
//! module masks the literals (`mask`), and turns a plan of the masked text into a
//! [`Template`] whose statements are text and parameter slots, instantiated with each
//! statement's own literals by concatenation.
//!
//! What is masked: numbers, and `'…'` strings not preceded by an identifier (so `DATE
//! '…'`, `INTERVAL '…'`, `B'…'`, `LIKE '…'` stay as written), in a statement with no
//! `$` token at all (parameters, dollar quotes). A masked text that reads differently (a
//! type modifier `varchar(10)` cannot be a parameter) plans differently: the caller checks,
//! the first time a shape is seen, that the template instantiated with that statement's
//! literals equals the statement's own plan, and otherwise never masks that shape.

use crate::lexer::{Kind, Scanner, Token};
use crate::plan::{Plan, StatementPlan};

/// Most literals masked in one statement: beyond it (a bulk INSERT) masking costs more
/// than it saves.
const MAX_LITERALS: usize = 1000;

/// A statement with its literals masked: the masked text, and each literal's text in order
/// (`$1` is `literals[0]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Masked {
    /// The text with each literal replaced by `$k`.
    pub text: String,
    /// The literals as written.
    pub literals: Vec<String>,
}

/// The literals of `sql` masked, or `None` when there is none or masking does not apply.
pub fn mask(sql: &str) -> Option<Masked> {
    let src = sql.as_bytes();
    let mut text = String::with_capacity(sql.len());
    let mut literals = Vec::new();
    let mut at = 0;
    let mut previous: Option<Token> = None;
    for token in Scanner::new(sql) {
        let body = &src[token.start..token.end];
        if token.kind == Kind::Other && body.first() == Some(&b'$') {
            return None;
        }
        let number = token.kind == Kind::Other
            && (body[0].is_ascii_digit() || (body[0] == b'.' && body.len() > 1));
        let string = token.kind == Kind::Other
            && body[0] == b'\''
            && !previous.is_some_and(|p| {
                matches!(p.kind, Kind::Ident | Kind::Quoted | Kind::UnicodeQuoted)
            });
        if number || string {
            literals.push(sql[token.start..token.end].to_string());
            if literals.len() > MAX_LITERALS {
                return None;
            }
            text.push_str(&sql[at..token.start]);
            text.push('$');
            text.push_str(&literals.len().to_string());
            at = token.end;
        }
        previous = Some(token);
    }
    if literals.is_empty() {
        return None;
    }
    text.push_str(&sql[at..]);
    Some(Masked { text, literals })
}

/// A piece of a template statement's text.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    /// Text as it is.
    Text(String),
    /// The literal of `$k` (index `k - 1`).
    Literal(usize),
}

/// A plan of a masked statement, ready to be instantiated with a statement's literals.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    plan: Plan,
    pieces: Vec<Vec<Piece>>,
    literals: usize,
}

impl Template {
    /// The template of `plan`, planned from a masked text with `literals` literals; `None`
    /// for a plan that is not text to send (a refusal, a COPY).
    pub fn new(plan: Plan, literals: usize) -> Option<Self> {
        let pieces = match &plan {
            Plan::Passthrough => Vec::new(),
            Plan::Rewritten(statements) => statements
                .iter()
                .map(|s| pieces(&s.sql, literals))
                .collect(),
            Plan::Reject(_) | Plan::CopyIn(_) => return None,
        };
        Some(Self {
            plan,
            pieces,
            literals,
        })
    }

    /// The masked plan.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The plan with `literals` in their slots; `None` when their number differs.
    pub fn instantiate(&self, literals: &[String]) -> Option<Plan> {
        if literals.len() != self.literals {
            return None;
        }
        Some(match &self.plan {
            Plan::Rewritten(statements) => Plan::Rewritten(
                statements
                    .iter()
                    .zip(&self.pieces)
                    .map(|(s, pieces)| StatementPlan {
                        sql: pieces
                            .iter()
                            .map(|p| match p {
                                Piece::Text(t) => t.as_str(),
                                Piece::Literal(i) => literals[*i].as_str(),
                            })
                            .collect(),
                        ..s.clone()
                    })
                    .collect(),
            ),
            other => other.clone(),
        })
    }
}

/// `sql` cut at each `$k` token (1 <= k <= literals).
fn pieces(sql: &str, literals: usize) -> Vec<Piece> {
    let src = sql.as_bytes();
    let mut out = Vec::new();
    let mut at = 0;
    for token in Scanner::new(sql) {
        let body = &src[token.start..token.end];
        if token.kind != Kind::Other || body.first() != Some(&b'$') {
            continue;
        }
        let Ok(k) = sql[token.start + 1..token.end].parse::<usize>() else {
            continue;
        };
        if k == 0 || k > literals {
            continue;
        }
        out.push(Piece::Text(sql[at..token.start].to_string()));
        out.push(Piece::Literal(k - 1));
        at = token.end;
    }
    out.push(Piece::Text(sql[at..].to_string()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_plain_strings_are_masked() {
        let m = mask(
            "SELECT * FROM t WHERE id = 5 AND note = 'it''s' AND d = DATE '2024-01-01' LIMIT 10",
        )
        .unwrap();
        assert_eq!(
            m.text,
            "SELECT * FROM t WHERE id = $1 AND note = $2 AND d = DATE '2024-01-01' LIMIT $3"
        );
        assert_eq!(m.literals, vec!["5", "'it''s'", "10"]);
    }

    #[test]
    fn parameters_dollar_quotes_and_no_literals_are_not_masked() {
        assert!(mask("SELECT * FROM t WHERE id = $1 AND n = 2").is_none());
        assert!(mask("SELECT $$x$$, 1 FROM t").is_none());
        assert!(mask("SELECT * FROM t").is_none());
        // Identifiers with digits and quoted identifiers stay.
        assert_eq!(
            mask("SELECT a1, \"2\" FROM t2 WHERE x = 3").unwrap().text,
            "SELECT a1, \"2\" FROM t2 WHERE x = $1"
        );
    }

    #[test]
    fn a_template_puts_each_statements_literals_back() {
        let masked = mask("UPDATE t SET n = 'a' WHERE id = 7").unwrap();
        let plan = Plan::Rewritten(vec![StatementPlan::untouched(&format!(
            "WITH w AS ({}) SELECT '$1 stays', $2, $1 FROM w",
            masked.text
        ))]);
        let template = Template::new(plan, 2).unwrap();
        let Some(Plan::Rewritten(s)) = template.instantiate(&["'b'".into(), "8".into()]) else {
            panic!()
        };
        assert_eq!(
            s[0].sql,
            "WITH w AS (UPDATE t SET n = 'b' WHERE id = 8) SELECT '$1 stays', 8, 'b' FROM w"
        );
        assert!(template.instantiate(&["1".into()]).is_none());
    }
}
