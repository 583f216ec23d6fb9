//! DDL that would change which table, or which column, an active rule means.
//!
//! A rule names its legacy and target tables, and its shape lists their columns, as they
//! were when the rule was resolved. Renaming either table or one of its columns, moving it
//! to another schema, or changing its inheritance or partition tree makes later writes go
//! where the rule does not look: rows written through a parent or a detached partition
//! skip the mirror, rows of a new child or an attached partition appear on one side only,
//! and a renamed column silently stops being copied. So, like `DROP TABLE`, these
//! statements are refused while the rule is not `off`, on the legacy table and on the
//! target alike (in `target_only` only on the target: the legacy table is retired).
//!
//! The check reads tokens rather than the parser's tree: the parser Tandem uses does not
//! read `SET SCHEMA`, `INHERIT`, `NO INHERIT`, `ATTACH PARTITION` or `DETACH PARTITION`,
//! and a statement that names only a target would otherwise pass as unparsable-but-harmless.

use crate::lexer::{folded_eq, Kind, Scanner, Token};
use crate::name::TableName;
use crate::refusal::Refusal;
use crate::rule::{Mode, ResolvedRule};
use crate::writes::Ctx;

/// The statement's tokens with its text, and a cursor.
struct Tokens<'a> {
    sql: &'a [u8],
    tokens: Vec<Token>,
}

impl Tokens<'_> {
    fn is(&self, i: usize, word: &[u8]) -> bool {
        self.tokens
            .get(i)
            .is_some_and(|t| t.kind == Kind::Ident && folded_eq(self.text(t), word))
    }

    fn punct(&self, i: usize, p: u8) -> bool {
        self.tokens
            .get(i)
            .is_some_and(|t| t.kind == Kind::Other && self.text(t) == [p])
    }

    fn text(&self, t: &Token) -> &[u8] {
        &self.sql[t.start..t.end]
    }

    /// One name part at `i`, in catalog spelling.
    fn part(&self, i: usize) -> Option<String> {
        let t = self.tokens.get(i)?;
        let text = String::from_utf8_lossy(self.text(t));
        match t.kind {
            Kind::Ident => Some(text.to_ascii_lowercase()),
            Kind::Quoted => Some(text.replace("\"\"", "\"")),
            _ => None,
        }
    }

    /// A `[db.][schema.]table` name starting at `i`, and the index after it.
    fn name(&self, mut i: usize) -> Option<(TableName, usize)> {
        let mut parts = vec![self.part(i)?];
        i += 1;
        while self.punct(i, b'.') {
            parts.push(self.part(i + 1)?);
            i += 2;
        }
        let table = parts.pop()?;
        Some((TableName::new(parts.pop().as_deref(), &table), i))
    }
}

/// The refusal for `piece` when it is DDL that would change what an active rule means.
pub(crate) fn check(piece: &str, ctx: Ctx<'_>) -> Option<Refusal> {
    let t = Tokens {
        sql: piece.as_bytes(),
        tokens: Scanner::new(piece)
            .filter(|t| t.kind != Kind::Semicolon)
            .collect(),
    };
    if t.is(0, b"alter") && t.is(1, b"table") {
        alter_table(&t, ctx)
    } else if t.is(0, b"create") {
        create_inherits(&t, ctx)
    } else if t.is(0, b"drop") && t.is(1, b"table") {
        drop_target(&t, ctx)
    } else {
        None
    }
}

/// `ALTER TABLE [IF EXISTS] [ONLY] name [*] action [, ...]`.
fn alter_table(t: &Tokens<'_>, ctx: Ctx<'_>) -> Option<Refusal> {
    let mut i = 2;
    if t.is(i, b"if") && t.is(i + 1, b"exists") {
        i += 2;
    }
    if t.is(i, b"only") {
        i += 1;
    }
    let (subject, mut i) = t.name(i)?;
    if t.punct(i, b'*') {
        i += 1;
    }
    loop {
        let (action, other) = if t.is(i, b"rename") && t.is(i + 1, b"to") {
            ("ALTER TABLE ... RENAME TO", None)
        } else if t.is(i, b"rename") && !t.is(i + 1, b"constraint") {
            ("ALTER TABLE ... RENAME COLUMN", None)
        } else if t.is(i, b"set") && t.is(i + 1, b"schema") {
            ("ALTER TABLE ... SET SCHEMA", None)
        } else if t.is(i, b"inherit") {
            ("ALTER TABLE ... INHERIT", t.name(i + 1))
        } else if t.is(i, b"no") && t.is(i + 1, b"inherit") {
            ("ALTER TABLE ... NO INHERIT", t.name(i + 2))
        } else if t.is(i, b"attach") && t.is(i + 1, b"partition") {
            ("ALTER TABLE ... ATTACH PARTITION", t.name(i + 2))
        } else if t.is(i, b"detach") && t.is(i + 1, b"partition") {
            ("ALTER TABLE ... DETACH PARTITION", t.name(i + 2))
        } else {
            ("", None)
        };
        if !action.is_empty() {
            let named = std::iter::once(&subject).chain(other.as_ref().map(|(n, _)| n));
            for name in named {
                if let Some(refusal) = refuse_if_ruled(name, action, ctx) {
                    return Some(refusal);
                }
            }
        }
        i = next_action(t, i)?;
    }
}

/// The index after the next `,` outside parentheses at or after `i`, if any.
fn next_action(t: &Tokens<'_>, mut i: usize) -> Option<usize> {
    let mut depth = 0usize;
    while i < t.tokens.len() {
        if t.punct(i, b'(') {
            depth += 1;
        } else if t.punct(i, b')') {
            depth = depth.saturating_sub(1);
        } else if depth == 0 && t.punct(i, b',') {
            return Some(i + 1);
        }
        i += 1;
    }
    None
}

/// `CREATE ... TABLE ... INHERITS (parent [, ...])`.
fn create_inherits(t: &Tokens<'_>, ctx: Ctx<'_>) -> Option<Refusal> {
    let is_table = (1..5).any(|i| t.is(i, b"table"));
    if !is_table {
        return None;
    }
    let at = (0..t.tokens.len()).find(|&i| t.is(i, b"inherits") && t.punct(i + 1, b'('))?;
    let mut i = at + 2;
    while let Some((parent, next)) = t.name(i) {
        if let Some(refusal) = refuse_if_ruled(&parent, "CREATE TABLE ... INHERITS", ctx) {
            return Some(refusal);
        }
        if !t.punct(next, b',') {
            break;
        }
        i = next + 1;
    }
    None
}

/// `DROP TABLE` of a ruled target (a ruled legacy table is refused by the planner).
fn drop_target(t: &Tokens<'_>, ctx: Ctx<'_>) -> Option<Refusal> {
    let mut i = 2;
    if t.is(i, b"if") && t.is(i + 1, b"exists") {
        i += 2;
    }
    while let Some((name, next)) = t.name(i) {
        if let Some(rule) = target_rule(&name, ctx) {
            return Some(Refusal::DdlRuled {
                table: rule.rule.table.clone(),
                named: rule.rule.target.clone(),
                action: "DROP TABLE",
            });
        }
        if !t.punct(next, b',') {
            break;
        }
        i = next + 1;
    }
    None
}

/// The refusal when `name` is the legacy table or the target of an active rule.
fn refuse_if_ruled(name: &TableName, action: &'static str, ctx: Ctx<'_>) -> Option<Refusal> {
    // In `target_only` the legacy table is retired: the runbook has it dropped or renamed.
    let legacy = ctx
        .rules
        .lookup(name, ctx.search_path)
        .filter(|r| !matches!(r.rule.mode, Mode::Off | Mode::TargetOnly))
        .map(|r| (r, r.rule.table.clone()));
    let (rule, named) =
        legacy.or_else(|| target_rule(name, ctx).map(|r| (r, r.rule.target.clone())))?;
    Some(Refusal::DdlRuled {
        table: rule.rule.table.clone(),
        named,
        action,
    })
}

/// The active rule whose target `name` is: qualified names match exactly, bare ones go
/// through search_path as a legacy name would.
fn target_rule<'a>(name: &TableName, ctx: Ctx<'a>) -> Option<&'a ResolvedRule> {
    let active = ctx.rules.rules.iter().filter(|r| r.rule.mode != Mode::Off);
    match &name.schema {
        Some(_) => active.clone().find(|r| &r.rule.target == name),
        None => ctx
            .search_path
            .iter()
            .filter(|schema| schema.as_str() != "$user")
            .find_map(|schema| {
                active.clone().find(|r| {
                    r.rule.target.name == name.name
                        && r.rule.target.schema.as_deref() == Some(schema.as_str())
                })
            }),
    }
}

#[cfg(test)]
#[path = "tests/ddl.rs"]
mod tests;
