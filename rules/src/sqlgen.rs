//! The SQL text every mirror rewrite shares.
//!
//! All write rewrites have one shape: the client's write becomes a data-modifying CTE whose
//! `RETURNING` hands the written legacy rows to a second CTE that writes the target, and a
//! final `SELECT` gives the client back its own RETURNING rows:
//!
//! ```sql
//! WITH <client CTEs>, tandem_w AS (<client write> RETURNING *),
//!      tandem_m AS (<mirror write reading tandem_w>)
//! SELECT <client RETURNING> FROM tandem_w AS <alias>   -- or SELECT FROM tandem_w
//! ```
//!
//! Both CTEs run in the client's statement, so the two tables change atomically and see the
//! same snapshot. Values the legacy table generated (serials, defaults, generated columns)
//! are copied from what it returned, never computed again. The CTE names are prefixed
//! `tandem_` so they do not collide with the client's own CTEs.
//!
//! That is the `fail` policy's form. Under `record` there is no `tandem_m`: the final
//! SELECT gets a `WHERE` condition that mirrors through `tandem.mirror()` (see
//! [`record`](crate::record)), so a failure of the target's half is caught.

use sqlparser::ast::With;

use crate::ident::quote_ident;
use crate::plan::WriteTag;
use crate::record;
use crate::rule::{MirrorErrorPolicy, ResolvedRule};

/// Name of the CTE holding the client's write.
pub(crate) const WRITE_CTE: &str = "tandem_w";
/// Name of the CTE holding the mirror write.
pub(crate) const MIRROR_CTE: &str = "tandem_m";

/// Quoted, comma-separated column list.
fn column_list<'a>(columns: impl IntoIterator<Item = &'a String>) -> String {
    columns
        .into_iter()
        .map(|c| quote_ident(c))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `tandem_m AS (INSERT INTO target (...) SELECT ... FROM tandem_w ON CONFLICT (key) DO ...)`:
/// insert the written rows into the target, or overwrite the target's copy. Key columns
/// are never overwritten; when every column is a key column there is nothing to update.
pub(crate) fn upsert_cte(rule: &ResolvedRule) -> String {
    upsert_cte_of(rule, WRITE_CTE)
}

/// [`upsert_cte`] of the rows `rows_of` names: `tandem_w`, or `tandem_w WHERE <condition>`
/// choosing some of its rows (a MERGE's inserted and updated rows, see
/// [`merge`](crate::merge)).
pub(crate) fn upsert_cte_of(rule: &ResolvedRule, rows_of: &str) -> String {
    insert_into_target(rule, rows_of, true)
}

/// [`upsert_cte`] without its `ON CONFLICT` clause: a plain insert, which fails with
/// 23505 where the upsert would overwrite. Cheaper per row (no speculative insertion); a
/// bulk load that expects no conflict tries it first (see [`CopyIn`](crate::plan::CopyIn)).
pub(crate) fn insert_cte(rule: &ResolvedRule) -> String {
    insert_into_target(rule, WRITE_CTE, false)
}

fn insert_into_target(rule: &ResolvedRule, rows_of: &str, upsert: bool) -> String {
    let shape = &rule.shape;
    let set = &rule.rule.set;
    let columns: Vec<&String> = shape
        .mirrored_columns
        .iter()
        .chain(set.iter().map(|(c, _)| c))
        .collect();
    let values: Vec<String> = shape
        .mirrored_columns
        .iter()
        .map(|c| quote_ident(c))
        .chain(set.iter().map(|(_, e)| format!("({e})")))
        .collect();
    let updates: Vec<String> = columns
        .iter()
        .filter(|c| !rule.rule.key.contains(c))
        .map(|c| {
            let c = quote_ident(c);
            format!("{c} = EXCLUDED.{c}")
        })
        .collect();
    let action = if updates.is_empty() {
        "DO NOTHING".to_string()
    } else {
        format!("DO UPDATE SET {}", updates.join(", "))
    };
    let conflict = if upsert {
        format!(" ON CONFLICT ({}) {action}", column_list(&rule.rule.key))
    } else {
        String::new()
    };
    format!(
        "{MIRROR_CTE} AS (INSERT INTO {target} ({columns}) SELECT {values} FROM {rows_of}\
         {conflict})",
        target = rule.rule.target,
        columns = column_list(columns),
        values = values.join(", "),
    )
}

/// `tandem_m AS (DELETE FROM target AS tandem_t USING tandem_w WHERE <key matches>)`.
fn delete_cte(rule: &ResolvedRule) -> String {
    let matches: Vec<String> = rule
        .rule
        .key
        .iter()
        .map(|k| {
            let k = quote_ident(k);
            format!("tandem_t.{k} = {WRITE_CTE}.{k}")
        })
        .collect();
    format!(
        "{MIRROR_CTE} AS (DELETE FROM {target} AS tandem_t USING {WRITE_CTE} WHERE {cond})",
        target = rule.rule.target,
        cond = matches.join(" AND "),
    )
}

/// How a rewrite writes the target, by the rule's error policy.
pub(crate) enum Mirror {
    /// `fail`: the `tandem_m` CTE ([`upsert_cte`] or [`delete_cte`]); a target error fails
    /// the statement.
    Cte(String),
    /// `record`: the final SELECT's `WHERE` condition calling `tandem.mirror()`, which
    /// records a target error as drift instead.
    Guard(String),
}

/// The mirror of a write of kind `op` under `rule`'s policy; `statement` is the client's
/// text, kept with any drift; `row` is what `ROW(...)` takes for one written row as the
/// legacy table's row (`tandem_w.*` unless the CTE carries more, see
/// [`carried`](crate::carried)).
pub(crate) fn mirror(rule: &ResolvedRule, op: WriteTag, statement: &str, row: &str) -> Mirror {
    match (rule.rule.on_mirror_error, op) {
        (MirrorErrorPolicy::Fail, WriteTag::Delete) => Mirror::Cte(delete_cte(rule)),
        (MirrorErrorPolicy::Fail, _) => Mirror::Cte(upsert_cte(rule)),
        (MirrorErrorPolicy::Record, _) => {
            Mirror::Guard(record::guard(rule, op, statement, WRITE_CTE, row))
        }
    }
}

/// The parts of a mirrored write, assembled by [`Composed::sql`].
pub(crate) struct Composed<'a> {
    /// The client's own WITH clause, kept in front of Tandem's CTEs.
    pub with: Option<&'a With>,
    /// A Tandem CTE the write reads, placed before `tandem_w` (the key-move form's
    /// `tandem_o`, see [`keymove`](crate::keymove)).
    pub before: Option<String>,
    /// The client's write with Tandem's RETURNING.
    pub write: String,
    /// How the target is written.
    pub mirror: Mirror,
    /// The client's RETURNING list, rendered for the final SELECT; `None` when it had none.
    pub projection: Option<String>,
    /// Name the final SELECT gives `tandem_w`, so the RETURNING list's references resolve.
    pub alias: String,
    /// A condition the final SELECT must check once per statement (it raises rather than
    /// filters), ANDed before any `record` guard.
    pub check: Option<String>,
}

impl Composed<'_> {
    /// The rewritten statement.
    pub(crate) fn sql(&self) -> String {
        let mut sql = String::from("WITH ");
        if let Some(with) = self.with {
            if with.recursive {
                sql.push_str("RECURSIVE ");
            }
            for cte in &with.cte_tables {
                sql.push_str(&cte.to_string());
                sql.push_str(", ");
            }
        }
        if let Some(cte) = &self.before {
            sql.push_str(cte);
            sql.push_str(", ");
        }
        sql.push_str(&format!("{WRITE_CTE} AS ({})", self.write));
        if let Mirror::Cte(cte) = &self.mirror {
            sql.push_str(&format!(", {cte}"));
        }
        match &self.projection {
            Some(list) => sql.push_str(&format!(
                " SELECT {list} FROM {WRITE_CTE} AS {}",
                self.alias
            )),
            None => sql.push_str(&format!(" SELECT FROM {WRITE_CTE}")),
        }
        let guard = match &self.mirror {
            Mirror::Guard(condition) => Some(condition),
            Mirror::Cte(_) => None,
        };
        let conditions: Vec<&str> = self.check.iter().chain(guard).map(String::as_str).collect();
        if !conditions.is_empty() {
            sql.push_str(&format!(" WHERE {}", conditions.join(" AND ")));
        }
        sql
    }
}
