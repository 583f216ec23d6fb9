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

use crate::lexer::{folded_eq, quoted_eq, unicode_eq, Kind, Lexing, Scanner, Token};
use crate::rule::{Mode, ResolvedRule};
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

    /// The names of one rule's tables.
    pub fn of(rule: &ResolvedRule) -> Self {
        let mut names: Vec<Box<[u8]>> = vec![rule.rule.table.name.as_bytes().into()];
        if rule.rule.target.name != rule.rule.table.name {
            names.push(rule.rule.target.name.as_bytes().into());
        }
        Self { names }
    }

    /// True when no rule is active: the proxy can skip the filter entirely.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// Could `token` of `src` name the table `name` (catalog spelling)? Identifiers are
/// folded, unescaped and truncated to 63 bytes as the server does; a `U&"…"` whose escapes
/// the server would refuse is assumed to.
pub(crate) fn token_spells(token: &Token, src: &[u8], name: &[u8]) -> bool {
    let text = &src[token.start..token.end];
    match token.kind {
        Kind::Ident => folded_eq(text, name),
        Kind::Quoted => quoted_eq(text, name),
        Kind::UnicodeQuoted => unicode_eq(text, token.uescape, name).unwrap_or(true),
        Kind::Semicolon | Kind::Other => false,
    }
}

/// True when `sql` may reference a ruled table (see the module doc for the guarantee),
/// read with the planner's defaults (`standard_conforming_strings` on, UTF-8).
pub fn mentions_ruled_table(sql: &str, names: &RuledNames) -> bool {
    first_ruled_name(sql.as_bytes(), Lexing::default(), names).is_some()
}

/// The bare name of the first ruled table `src` may reference when read as a session with
/// `lexing` reads it, or `None` when it references none.
pub fn first_ruled_name<'n>(src: &[u8], lexing: Lexing, names: &'n RuledNames) -> Option<&'n [u8]> {
    if names.is_empty() {
        return None;
    }
    Scanner::with(src, lexing).find_map(|t| {
        if matches!(t.kind, Kind::Other | Kind::Semicolon) {
            return None;
        }
        names
            .names
            .iter()
            .find(|n| token_spells(&t, src, n))
            .map(|n| &n[..])
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
    fn unicode_identifiers_are_decoded() {
        let n = orders();
        assert!(mentions_ruled_table("SELECT * FROM U&\"\\006Frders\"", &n));
        assert!(mentions_ruled_table(
            "SELECT * FROM u&\"\\+00006Frders\"",
            &n
        ));
        assert!(mentions_ruled_table(
            "DELETE FROM U&\"!006Frders\" UESCAPE '!'",
            &n
        ));
        assert!(mentions_ruled_table(
            "DELETE FROM U&\"!006Frders\" /* c */ uescape\n'!'",
            &n
        ));
        assert!(!mentions_ruled_table("SELECT * FROM U&\"\\006Fther\"", &n));
        // Escapes the server refuses: assumed to match (the planner then refuses too).
        assert!(mentions_ruled_table("SELECT * FROM U&\"\\zz\"", &n));
    }

    #[test]
    fn long_identifiers_are_truncated_as_the_server_truncates_them() {
        let name = "t".repeat(63);
        let n = names(&[(&format!("public.{name}"), Mode::DualWrite)]);
        let long = format!("{name}_and_more");
        assert!(mentions_ruled_table(
            &format!("INSERT INTO {long} VALUES (1)"),
            &n
        ));
        assert!(mentions_ruled_table(
            &format!("INSERT INTO \"{long}\" VALUES (1)"),
            &n
        ));
        let upper = long.to_uppercase();
        assert!(mentions_ruled_table(
            &format!("INSERT INTO {upper} VALUES (1)"),
            &n
        ));
        assert!(!mentions_ruled_table(
            &format!("INSERT INTO {} VALUES (1)", &long[..62]),
            &n
        ));
        // A two-byte character straddling byte 63 is cut whole.
        let n = names(&[(&format!("public.{}", "t".repeat(62)), Mode::DualWrite)]);
        assert!(mentions_ruled_table(
            &format!("INSERT INTO {}é VALUES (1)", "t".repeat(62)),
            &n
        ));
    }

    #[test]
    fn a_line_comment_ends_at_a_carriage_return() {
        assert!(mentions_ruled_table(
            "insert into --\rorders values (1)",
            &orders()
        ));
    }

    #[test]
    fn backslashes_escape_in_plain_strings_when_standard_conforming_strings_is_off() {
        let n = orders();
        let sql = b"SELECT 'a\\'; DELETE FROM orders; --'";
        let on = Lexing::default();
        let off = Lexing {
            standard_conforming_strings: false,
            ..on
        };
        assert!(first_ruled_name(sql, on, &n).is_some());
        assert!(first_ruled_name(sql, off, &n).is_none());
        let sql = b"SELECT 'a\\'' ; DELETE FROM orders; --'";
        assert!(first_ruled_name(sql, on, &n).is_none());
        assert!(first_ruled_name(sql, off, &n).is_some());
    }

    #[test]
    fn multibyte_characters_hide_no_quote_or_semicolon() {
        use crate::lexer::CharWidths;
        let n = orders();
        // SJIS 0x83 0x5C is one character whose second byte is a backslash.
        let sql = b"SELECT E'\x83\x5c'; DELETE FROM orders";
        let sjis = Lexing {
            encoding: CharWidths::of_encoding("SJIS"),
            ..Lexing::default()
        };
        assert!(first_ruled_name(sql, sjis, &n).is_some());
        assert!(first_ruled_name(sql, Lexing::default(), &n).is_none());
    }

    #[test]
    fn rules_that_are_off_are_not_names() {
        let n = names(&[("public.orders", Mode::Off)]);
        assert!(n.is_empty());
        assert!(!mentions_ruled_table("INSERT INTO orders VALUES (1)", &n));
    }
}
