//! The hot-path question: could this statement touch a ruled table at all?
//!
//! Almost every statement the proxy relays has nothing to do with the tables being
//! migrated, and those must cost next to nothing. [`mentions_ruled_table`] answers from one
//! allocation-free pass of the [lexer](crate::lexer): true when any identifier outside
//! literals and comments spells the bare name of a legacy table or a target of a rule in a
//! mode other than `Off` (DDL on a target is checked too, see [`ddl`](crate::ddl)). Schema
//! qualification is ignored, so the answer may be a false positive (`app.orders` when only
//! `public.orders` is ruled, a column called `orders`); it is never a false negative, because
//! only a true answer sends the statement to the planner.

use crate::lexer::{folded_eq, quoted_eq, Kind, Scanner};
use crate::rule::Mode;
use crate::ruleset::RuleSet;

/// Bare names of the active rules, built once per [`RuleSet`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuledNames {
    /// Catalog spelling of each active rule's legacy and target table names, deduplicated.
    names: Vec<Box<[u8]>>,
}

impl RuledNames {
    /// Names of the tables of the rules whose mode is not `Off`.
    pub fn new(rules: &RuleSet) -> Self {
        let mut names: Vec<Box<[u8]>> = Vec::new();
        for r in rules.rules.iter().filter(|r| r.rule.mode != Mode::Off) {
            for table in [&r.rule.table, &r.rule.target] {
                let name: Box<[u8]> = table.name.as_bytes().into();
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        Self { names }
    }

    /// True when no rule is active: the proxy can skip the filter entirely.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// Could one token (of `kind`, with `text` as the lexer spans it) name the table `name`?
/// Unicode-escaped identifiers are not decoded and are assumed to.
pub(crate) fn token_spells(kind: Kind, text: &[u8], name: &[u8]) -> bool {
    match kind {
        Kind::Ident => folded_eq(text, name),
        Kind::Quoted => quoted_eq(text, name),
        Kind::UnicodeQuoted => true,
        Kind::Semicolon | Kind::Other => false,
    }
}

/// True when `sql` may reference a ruled table (see the module doc for the guarantee).
pub fn mentions_ruled_table(sql: &str, names: &RuledNames) -> bool {
    if names.is_empty() {
        return false;
    }
    let bytes = sql.as_bytes();
    Scanner::new(sql).any(|t| {
        if matches!(t.kind, Kind::Other | Kind::Semicolon) {
            return false;
        }
        let text = &bytes[t.start..t.end];
        names.names.iter().any(|n| token_spells(t.kind, text, n))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::name::TableName;
    use crate::rule::{ResolvedRule, Rule, TableShape};

    fn names(tables: &[(&str, Mode)]) -> RuledNames {
        let rules = tables
            .iter()
            .map(|(t, mode)| {
                let shape = TableShape {
                    mirrored_columns: vec!["id".into()],
                    ..TableShape::default()
                };
                let rule = Rule::new(TableName::parse(t).unwrap(), *mode, vec!["id".into()]);
                ResolvedRule::new(rule, shape).unwrap()
            })
            .collect();
        RuledNames::new(&RuleSet::new(1, rules).unwrap())
    }

    fn orders() -> RuledNames {
        names(&[("public.orders", Mode::DualWrite)])
    }

    #[test]
    fn finds_plain_mentions() {
        let n = orders();
        assert!(mentions_ruled_table("INSERT INTO orders VALUES (1)", &n));
        assert!(mentions_ruled_table("insert into ORDERS values (1)", &n));
        assert!(mentions_ruled_table("DELETE FROM public.orders", &n));
        assert!(mentions_ruled_table("UPDATE \"orders\" SET a = 1", &n));
        assert!(mentions_ruled_table("select 1;delete from orders", &n));
        assert!(mentions_ruled_table(
            "SELECT * FROM x JOIN orders ON true",
            &n
        ));
        assert!(mentions_ruled_table("TRUNCATE orders", &n));
    }

    #[test]
    fn target_names_are_names_too() {
        // DDL on a target must reach the planner (see `ddl`).
        assert!(mentions_ruled_table(
            "ALTER TABLE orders_v2 RENAME TO x",
            &orders()
        ));
    }

    #[test]
    fn ignores_literals_comments_and_other_names() {
        let n = orders();
        assert!(!mentions_ruled_table("SELECT 'orders'", &n));
        assert!(!mentions_ruled_table("SELECT 'it''s orders'", &n));
        assert!(!mentions_ruled_table("SELECT E'\\' orders'", &n));
        assert!(!mentions_ruled_table(
            "SELECT $$orders$$, $q$ orders $q$",
            &n
        ));
        assert!(!mentions_ruled_table("SELECT 1 -- orders", &n));
        assert!(!mentions_ruled_table(
            "SELECT /* a /* orders */ orders */ 1",
            &n
        ));
        assert!(!mentions_ruled_table("SELECT * FROM \"Orders\"", &n));
        assert!(!mentions_ruled_table("SELECT * FROM orders_v3", &n));
        assert!(!mentions_ruled_table("SELECT * FROM my_orders", &n));
        assert!(!mentions_ruled_table("SELECT $1, orders$x", &n));
        assert!(!mentions_ruled_table("SELECT E'\\", &n));
        assert!(!mentions_ruled_table("SELECT 'unterminated orders", &n));
    }

    #[test]
    fn quoted_rule_names_match_exactly() {
        let n = names(&[("public.\"Orders\"", Mode::DualWrite)]);
        assert!(mentions_ruled_table(
            "INSERT INTO \"Orders\" VALUES (1)",
            &n
        ));
        assert!(!mentions_ruled_table("INSERT INTO orders VALUES (1)", &n));
        assert!(!mentions_ruled_table("INSERT INTO ORDERS VALUES (1)", &n));
        let n = names(&[("public.\"a\"\"b\"", Mode::DualWrite)]);
        assert!(mentions_ruled_table(
            "INSERT INTO \"a\"\"b\" VALUES (1)",
            &n
        ));
    }

    #[test]
    fn unicode_identifiers_are_assumed_to_match() {
        assert!(mentions_ruled_table(
            "SELECT * FROM U&\"\\006Frders\"",
            &orders()
        ));
    }

    #[test]
    fn rules_that_are_off_are_not_names() {
        let n = names(&[("public.orders", Mode::Off)]);
        assert!(n.is_empty());
        assert!(!mentions_ruled_table("INSERT INTO orders VALUES (1)", &n));
    }
}
