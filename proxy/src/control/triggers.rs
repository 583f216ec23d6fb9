//! A rule's legacy triggers and their counterparts on the target: what is lost at
//! `target_only` and what fires twice while both tables are written.
//!
//! Legacy triggers stop firing once nothing writes the legacy table; the target needs a
//! counterpart of each (or the rule declares it not needed, `drop_triggers`). A counterpart
//! that fires on the mirror's writes fires twice per application write, so both the legacy
//! trigger and its counterpart must carry the `tandem.written_here` condition (see
//! [`tandem_rules::triggers`]). The catalog says which do: [`TRIGGER_PAIRS_SQL`]. This
//! module turns that into sentences, the statements that fix each, and `tandem init`'s
//! copies.

use serde::Serialize;
use tandem_rules::triggers::{conditioned_on, TriggerDefError};
use tandem_rules::TableName;
use tokio_postgres::GenericClient;

/// One legacy trigger and its counterpart on the target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TriggerPair {
    /// The legacy trigger's name.
    pub name: String,
    /// Its definition (`pg_get_triggerdef`).
    pub definition: String,
    /// It carries the `written_here` condition (fires only while applications write legacy).
    pub conditioned: bool,
    /// The target trigger calling the same function the same way, if any.
    pub counterpart: Option<String>,
    /// The counterpart carries the condition.
    pub counterpart_conditioned: bool,
    /// The rule declares it not needed on the target (`drop_triggers`).
    pub not_needed: bool,
    /// The server can `CREATE OR REPLACE` it (PostgreSQL 14 and later, not a constraint
    /// trigger): conditioning it takes SHARE ROW EXCLUSIVE, not the ACCESS EXCLUSIVE lock of
    /// DROP TRIGGER, so reads of the legacy table do not wait.
    pub replaceable: bool,
}

impl TriggerPair {
    /// Lost at `target_only`: no counterpart, and not declared not needed.
    pub fn lost(&self) -> bool {
        self.counterpart.is_none() && !self.not_needed
    }

    /// Fires twice per application write while both tables are written: a counterpart
    /// exists and one of the two lacks the condition.
    pub fn fires_twice(&self) -> bool {
        self.counterpart.is_some() && !(self.conditioned && self.counterpart_conditioned)
    }

    /// One line for the parity report.
    pub fn describe(&self) -> String {
        match (&self.counterpart, self.not_needed) {
            (None, true) => format!(
                "trigger {}: not on the target, declared not needed (drop_triggers)",
                self.name
            ),
            (None, false) => format!(
                "trigger {} has no counterpart on the target: it stops firing at target_only",
                self.name
            ),
            (Some(c), _) if self.fires_twice() => format!(
                "trigger {} and its counterpart {c} on the target fire twice per write while both tables are written ({} lacks the tandem.written_here condition)",
                self.name,
                match (self.conditioned, self.counterpart_conditioned) {
                    (false, false) => "each",
                    (false, true) => "the legacy trigger",
                    _ => "the counterpart",
                }
            ),
            (Some(c), _) => format!("trigger {} -> {c} (fires once per write)", self.name),
        }
    }
}

/// The legacy triggers of `legacy` and their counterparts on `target`.
pub async fn pairs(
    client: &impl GenericClient,
    legacy: &TableName,
    target: &TableName,
    not_needed: &[String],
) -> Result<Vec<TriggerPair>, tokio_postgres::Error> {
    let rows = client
        .query(
            TRIGGER_PAIRS_SQL,
            &[&legacy.to_string(), &target.to_string()],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let name: String = r.get(0);
            TriggerPair {
                not_needed: not_needed.contains(&name),
                name,
                definition: r.get(1),
                conditioned: r.get(2),
                counterpart: r.get(3),
                counterpart_conditioned: r.get(4),
                replaceable: r.get(5),
            }
        })
        .collect())
}

/// The statements that give the target a conditioned copy of each legacy trigger without
/// a counterpart, and the condition to each legacy trigger without it (dropped and created
/// again in the same transaction). A counterpart without the condition is left for the
/// operator (it is named by the parity report): it may not be a copy.
pub fn fix_statements(
    pairs: &[TriggerPair],
    legacy: &TableName,
    target: &TableName,
) -> Result<Vec<String>, TriggerDefError> {
    let mut out = Vec::new();
    for pair in pairs.iter().filter(|p| !p.not_needed) {
        if pair.counterpart.is_none() {
            out.push(conditioned_on(&pair.definition, &target.to_string())?);
        }
        if !pair.conditioned {
            let create = conditioned_on(&pair.definition, &legacy.to_string())?;
            match create.strip_prefix("CREATE TRIGGER ") {
                Some(rest) if pair.replaceable => {
                    out.push(format!("CREATE OR REPLACE TRIGGER {rest}"));
                }
                _ => {
                    out.push(format!(
                        "DROP TRIGGER {} ON {legacy}",
                        tandem_rules::quote_ident(&pair.name)
                    ));
                    out.push(create);
                }
            }
        }
    }
    Ok(out)
}

/// Sentences for the triggers lost at `target_only` (for a refused mode switch).
pub fn lost(pairs: &[TriggerPair]) -> Vec<String> {
    pairs
        .iter()
        .filter(|p| p.lost())
        .map(|p| p.describe())
        .collect()
}

/// Each user trigger of `$1` (not the guard's, not a partition's clone) with its
/// counterpart on `$2`: the target trigger calling the same function at the same timing,
/// events, level, columns and arguments (the same name preferred), and whether each
/// carries the `written_here` condition (a dependency of its `WHEN` on the function).
/// Plain SQL, not a function in the database, so `tandem init --dry-run` needs nothing
/// installed.
const TRIGGER_PAIRS_SQL: &str = "\
WITH t AS (SELECT to_regclass($1) AS legacy, to_regclass($2) AS target,
                  to_regprocedure('tandem.written_here(regclass)') AS written_here),
trg AS (
    SELECT g.oid, g.tgrelid, g.tgname::text AS name, g.tgfoid, g.tgtype, g.tgargs,
           g.tgdeferrable, g.tginitdeferred, g.tgconstraint <> 0 AS is_constraint,
           ARRAY(SELECT a.attname::text FROM unnest(g.tgattr::int2[]) AS k(n)
                   JOIN pg_attribute a ON a.attrelid = g.tgrelid AND a.attnum = k.n
                  ORDER BY 1) AS cols,
           EXISTS (SELECT 1 FROM pg_depend d
                    WHERE d.classid = 'pg_trigger'::regclass AND d.objid = g.oid
                      AND d.refclassid = 'pg_proc'::regclass AND d.refobjid = t.written_here)
               AS conditioned,
           pg_get_triggerdef(g.oid) AS definition
      FROM t, pg_trigger g JOIN pg_proc p ON p.oid = g.tgfoid
     WHERE g.tgrelid IN (t.legacy, t.target) AND NOT g.tgisinternal AND g.tgparentid = 0
       AND p.pronamespace <> coalesce(to_regnamespace('tandem'), 0)
)
SELECT l.name, l.definition, l.conditioned, c.name, coalesce(c.conditioned, false),
       current_setting('server_version_num')::int >= 140000 AND NOT l.is_constraint
  FROM t CROSS JOIN trg l
  LEFT JOIN LATERAL (
      SELECT c.* FROM trg c
       WHERE c.tgrelid = t.target AND c.tgfoid = l.tgfoid AND c.tgtype = l.tgtype
         AND c.tgargs = l.tgargs AND c.cols = l.cols AND c.tgdeferrable = l.tgdeferrable
         AND c.tginitdeferred = l.tginitdeferred AND c.is_constraint = l.is_constraint
       ORDER BY c.name = l.name DESC, c.name LIMIT 1) c ON true
 WHERE l.tgrelid = t.legacy
 ORDER BY l.name";
