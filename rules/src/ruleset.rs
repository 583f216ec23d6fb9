//! The versioned set of rules in force, and name resolution against it.
//!
//! A client names a table bare (`orders`) or qualified (`public.orders`). Bare names are
//! resolved the way the server would, through the session's `search_path` — but Tandem only
//! knows the ruled tables, not every table in every schema, so it takes the first
//! search_path schema that has a *ruled* table of that name. The caller passes the path as
//! the server has it, `$user` expanded; a literal `$user` entry is skipped. A temporary
//! table (`pg_temp`) shadowing a ruled table is not known here: the rewritten statement
//! checks at execution that the name means the ruled table.

use crate::name::TableName;
use crate::rule::{ResolvedRule, RuleError};

/// All rules in force, tagged with the configuration version they came from.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RuleSet {
    /// Configuration version, so the proxy can tell which rules a plan was made under.
    pub version: u64,
    /// The rules, at most one per legacy table.
    pub rules: Vec<ResolvedRule>,
}

impl RuleSet {
    /// A rule set, refusing two rules on the same legacy table.
    pub fn new(version: u64, rules: Vec<ResolvedRule>) -> Result<Self, RuleError> {
        for (i, rule) in rules.iter().enumerate() {
            if rules[..i].iter().any(|r| r.rule.table == rule.rule.table) {
                return Err(RuleError::Duplicate(rule.rule.table.clone()));
            }
        }
        Ok(Self { version, rules })
    }

    /// The rule for a table reference, in any mode. A schema-qualified reference matches
    /// exactly; a bare one goes through `search_path` (see the module doc).
    pub fn lookup(&self, table: &TableName, search_path: &[String]) -> Option<&ResolvedRule> {
        match &table.schema {
            Some(_) => self.rules.iter().find(|r| &r.rule.table == table),
            None => search_path
                .iter()
                .filter(|schema| schema.as_str() != "$user")
                .find_map(|schema| {
                    self.rules.iter().find(|r| {
                        r.rule.table.name == table.name
                            && r.rule.table.schema.as_deref() == Some(schema.as_str())
                    })
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rule::{Mode, Rule, TableShape};

    fn rule(schema: &str, name: &str) -> ResolvedRule {
        let shape = TableShape {
            legacy_columns: vec!["id".into()],
            target_columns: vec!["id".into()],
            mirrored_columns: vec!["id".into()],
            target_partition_key: vec![],
            ..TableShape::default()
        };
        let table = TableName::new(Some(schema), name);
        ResolvedRule::new(Rule::new(table, Mode::DualWrite, vec!["id".into()]), shape).unwrap()
    }

    fn path(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn qualified_names_match_exactly() {
        let set = RuleSet::new(1, vec![rule("public", "orders")]).unwrap();
        let hit = set.lookup(&TableName::new(Some("public"), "orders"), &[]);
        assert!(hit.is_some());
        assert!(set
            .lookup(&TableName::new(Some("app"), "orders"), &[])
            .is_none());
    }

    #[test]
    fn bare_names_follow_search_path() {
        let set = RuleSet::new(1, vec![rule("public", "orders"), rule("app", "orders")]).unwrap();
        let bare = TableName::new(None, "orders");
        let found = |p: &[&str]| set.lookup(&bare, &path(p)).map(|r| r.rule.table.clone());
        assert_eq!(
            found(&["app", "public"]),
            Some(TableName::new(Some("app"), "orders"))
        );
        assert_eq!(
            found(&["$user", "public"]),
            Some(TableName::new(Some("public"), "orders"))
        );
        assert_eq!(found(&["other"]), None);
        assert_eq!(found(&[]), None);
    }

    #[test]
    fn duplicate_rules_are_refused() {
        let err = RuleSet::new(1, vec![rule("public", "orders"), rule("public", "orders")]);
        assert!(matches!(err, Err(RuleError::Duplicate(_))));
    }
}
