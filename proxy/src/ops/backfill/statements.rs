//! The SQL a backfill of one rule runs: the batch (copy the next keyset page), the deferred
//! re-check of its copies (find copied keys whose legacy row is gone, delete those copies),
//! and the estimate of the rows left. Built once per run from the resolved rule.

use tandem_rules::{quote_ident, ResolvedRule};

/// The statements a backfill of one rule runs.
pub(super) struct Statements {
    /// One batch: copy the next rows after the cursor (`$1`), return counts, last key, xid, copied keys.
    pub batch: String,
    /// Finds copied keys whose legacy row is gone (see [`super::recheck`]).
    pub recheck: String,
    /// Deletes those copies.
    pub remove: String,
    /// EXPLAIN of the rows left after the cursor (`$1`).
    pub remaining_estimate: String,
}

pub(super) fn statements(
    rule: &ResolvedRule,
    predicate: Option<&str>,
    batch_size: i64,
) -> Statements {
    let key: Vec<String> = rule.rule.key.iter().map(|k| quote_ident(k)).collect();
    let key_list = key.join(", ");
    // `(k1, k2) > (($1::text[])[1]::type1, ...)`: the cursor comes back typed.
    let typed: Vec<String> = rule
        .rule
        .key
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let ty = rule
                .shape
                .legacy_table
                .iter()
                .find(|c| &c.name == k)
                .map(|c| c.sql_type.clone())
                .unwrap_or_else(|| "text".into());
            format!("($1::text[])[{}]::{ty}", i + 1)
        })
        .collect();
    let mut conditions = vec![format!(
        "($1::text[] IS NULL OR ({key_list}) > ({}))",
        typed.join(", ")
    )];
    if let Some(p) = predicate {
        conditions.push(format!("({p})"));
    }
    let where_clause = conditions.join(" AND ");
    let mirrored = &rule.shape.mirrored_columns;
    let columns: Vec<String> = mirrored
        .iter()
        .map(|c| quote_ident(c))
        .chain(rule.rule.set.iter().map(|(c, _)| quote_ident(c)))
        .collect();
    let values: Vec<String> = mirrored
        .iter()
        .map(|c| quote_ident(c))
        .chain(rule.rule.set.iter().map(|(_, e)| format!("({e})")))
        .collect();
    let last_key = rule
        .rule
        .key
        .iter()
        .map(|k| format!("{}::text", quote_ident(k)))
        .collect::<Vec<_>>()
        .join(", ");
    let desc = key
        .iter()
        .map(|k| format!("{k} DESC"))
        .collect::<Vec<_>>()
        .join(", ");
    // The copied keys, one text array per key column, for the deferred re-check.
    let copied_keys = key
        .iter()
        .map(|k| format!("(SELECT array_agg({k}::text) FROM copied)"))
        .collect::<Vec<_>>()
        .join(", ");
    let batch = format!(
        "WITH batch AS (SELECT * FROM {legacy} WHERE {where_clause} ORDER BY {key_list} \
           LIMIT {batch_size} FOR KEY SHARE), \
         copied AS (INSERT INTO {target} ({cols}) SELECT {vals} FROM batch \
           ON CONFLICT ({key_list}) DO NOTHING RETURNING {key_list}) \
         SELECT (SELECT count(*) FROM batch)::int8, (SELECT count(*) FROM copied)::int8, \
           (SELECT ARRAY[{last_key}] FROM batch ORDER BY {desc} LIMIT 1), \
           (pg_current_xact_id()::text::int8 % 4294967296)::int8, {copied_keys}",
        legacy = rule.rule.table,
        target = rule.rule.target,
        cols = columns.join(", "),
        vals = values.join(", "),
    );
    // `$1..$n`: the copied keys, one text array per key column.
    let unnest_args = (1..=key.len())
        .map(|i| format!("${i}::text[]"))
        .collect::<Vec<_>>()
        .join(", ");
    let alias_cols = (1..=key.len())
        .map(|i| format!("c{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let key_types: Vec<String> = rule
        .rule
        .key
        .iter()
        .map(|k| {
            rule.shape
                .legacy_table
                .iter()
                .find(|c| &c.name == k)
                .map(|c| c.sql_type.clone())
                .unwrap_or_else(|| "text".into())
        })
        .collect();
    let match_copied = key
        .iter()
        .zip(&key_types)
        .enumerate()
        .map(|(i, (k, ty))| format!("t.{k} = k.c{}::{ty}", i + 1))
        .collect::<Vec<_>>()
        .join(" AND ");
    let match_legacy = key
        .iter()
        .map(|k| format!("l.{k} = t.{k}"))
        .collect::<Vec<_>>()
        .join(" AND ");
    // Two steps, so the common case (no copy outlived its row) costs one index probe of
    // the legacy table per copied key and never touches the target: `recheck` finds the
    // copied keys whose legacy row is gone, `remove` deletes just those copies.
    let match_gone = key
        .iter()
        .zip(&key_types)
        .enumerate()
        .map(|(i, (k, ty))| format!("l.{k} = k.c{}::{ty}", i + 1))
        .collect::<Vec<_>>()
        .join(" AND ");
    let recheck = format!(
        "SELECT {alias_cols} FROM unnest({unnest_args}) AS k({alias_cols}) \
         WHERE NOT EXISTS (SELECT 1 FROM {legacy} AS l WHERE {match_gone})",
        legacy = rule.rule.table,
    );
    let remove = format!(
        "WITH gone AS (DELETE FROM {target} AS t USING unnest({unnest_args}) AS k({alias_cols}) \
           WHERE {match_copied} AND NOT EXISTS (SELECT 1 FROM {legacy} AS l WHERE {match_legacy}) \
           RETURNING 1) SELECT count(*)::int8 FROM gone",
        legacy = rule.rule.table,
        target = rule.rule.target,
    );
    let remaining_estimate = format!(
        "EXPLAIN (FORMAT JSON) SELECT 1 FROM {legacy} WHERE {where_clause}",
        legacy = rule.rule.table
    );
    Statements {
        batch,
        recheck,
        remove,
        remaining_estimate,
    }
}
