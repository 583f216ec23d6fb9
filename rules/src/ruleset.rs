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
use crate::rule::{ResolvedRule, Rule, RuleError};

/// Refuses rules where one rule's legacy table is another's target (in any mode: an `off`
/// rule may be switched on later, so the pair is refused when it is written). The error
/// names the later rule of the pair (in `rules` order), which is the one being added when
/// a new rule is checked last.
pub fn refuse_chains<'a>(rules: impl IntoIterator<Item = &'a Rule>) -> Result<(), RuleError> {
    let rules: Vec<&Rule> = rules.into_iter().collect();
    for (i, rule) in rules.iter().enumerate() {
        for other in &rules[..i] {
            let table_is_target = rule.table == other.target;
            if table_is_target || rule.target == other.table {
                return Err(RuleError::Chained {
                    table: rule.table.clone(),
                    other: other.table.clone(),
                    table_is_target,
                });
            }
        }
    }
    Ok(())
}

/// Rules whose watermark [`RuleSet::watermarks`] tracks by bit.
const WATERMARK_BITS: usize = 63;

/// All rules in force, tagged with the configuration version they came from.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RuleSet {
    /// Configuration version, so the proxy can tell which rules a plan was made under.
    pub version: u64,
    /// The rules, at most one per legacy table.
    pub rules: Vec<ResolvedRule>,
    /// The server's `server_version_num` (170004 for 17.4) as read with the rules; 0 when
    /// unknown, which is taken as the oldest server. It decides which forms Tandem can
    /// mirror: `MERGE` from 17 on, a MERGE that changes a key from 18 on (see
    /// [`merge`](crate::merge)).
    pub server_version_num: u32,
}

impl RuleSet {
    /// A rule set, refusing two rules on the same legacy table and one rule's table being
    /// another's target ([`refuse_chains`]).
    pub fn new(version: u64, rules: Vec<ResolvedRule>) -> Result<Self, RuleError> {
        for (i, rule) in rules.iter().enumerate() {
            if rules[..i].iter().any(|r| r.rule.table == rule.rule.table) {
                return Err(RuleError::Duplicate(rule.rule.table.clone()));
            }
        }
        refuse_chains(rules.iter().map(|r| &r.rule))?;
        Ok(Self {
            version,
            rules,
            server_version_num: 0,
        })
    }

    /// A fingerprint of the rules that leaves out their backfill watermarks
    /// ([`Rule::backfilled_to`](crate::Rule::backfilled_to)) and the version. Two sets with
    /// the same layout rewrite every statement alike but for the watermarks in union reads;
    /// a read rewritten without a watermark, or under an older one, is still right (only
    /// slower), so a statement prepared under one need not be refused under the other
    /// unless a watermark was taken away ([`watermarks`](Self::watermarks)).
    pub fn layout(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.server_version_num.hash(&mut hasher);
        for (i, rule) in self.rules.iter().enumerate() {
            let mut rule = rule.clone();
            // Past the mask's bits, whether a watermark is set counts here instead.
            let set = rule.rule.backfilled_to.take().is_some();
            (i >= WATERMARK_BITS && set).hash(&mut hasher);
            format!("{rule:?}").hash(&mut hasher);
        }
        hasher.finish()
    }

    /// Which rules have a backfill watermark: bit `i` for the `i`-th rule (the first 63).
    /// A watermark cleared (a backfill started over) may mean the target lost rows, so a
    /// statement split at it must be prepared again.
    pub fn watermarks(&self) -> u64 {
        self.rules
            .iter()
            .take(WATERMARK_BITS)
            .enumerate()
            .filter(|(_, r)| r.rule.backfilled_to.is_some())
            .fold(0, |mask, (i, _)| mask | 1 << i)
    }

    /// The same rules, for a server of `server_version_num`.
    pub fn with_server_version(mut self, server_version_num: u32) -> Self {
        self.server_version_num = server_version_num;
        self
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
    fn a_table_that_is_another_rules_target_is_refused() {
        let a = |table: &str, target: &str| {
            let mut r = Rule::new(TableName::parse(table).unwrap(), Mode::Off, vec![]);
            r.target = TableName::parse(target).unwrap();
            r
        };
        let first = a("public.a", "public.b");
        let legacy_is_target = a("public.b", "public.c");
        let err = refuse_chains([&first, &legacy_is_target]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "rule for public.b: table public.b is the target of the rule for public.a; \
             a table may be a legacy table or a target, not both"
        );
        let target_is_legacy = a("public.z", "public.a");
        let err = refuse_chains([&first, &target_is_legacy]).unwrap_err();
        assert!(err.to_string().starts_with(
            "rule for public.z: target public.a is the table of the rule for public.a"
        ));
        let unrelated = a("public.x", "public.y");
        assert!(refuse_chains([&first, &unrelated]).is_ok());
    }

    #[test]
    fn duplicate_rules_are_refused() {
        let err = RuleSet::new(1, vec![rule("public", "orders"), rule("public", "orders")]);
        assert!(matches!(err, Err(RuleError::Duplicate(_))));
    }
}
