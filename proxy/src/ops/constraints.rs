//! Data rules of the legacy table the target must keep: NOT NULL, CHECK, UNIQUE / PRIMARY
//! KEY, and (for speed) plain indexes.
//!
//! After cutover the target is the table of record: a NOT NULL, CHECK or unique rule only
//! the legacy table had stops being enforced, silently. The parity report lists each legacy
//! rule with its counterpart on the target or none, and its `constraints` check fails on the data
//! rules; a missing plain index is a warning (reads get slower, nothing is lost). A unique
//! rule counts as kept when the target has a unique index on the same columns (or fewer:
//! stricter), or on them plus the target's partition key (PostgreSQL requires it on a partitioned table, and
//! `tandem init` adds it). Unique and plain indexes on expressions or with a WHERE clause are
//! compared by their definition text.

use serde::Serialize;
use tandem_rules::TableName;
use tokio_postgres::GenericClient;

/// The legacy table's rules the target lacks, each as a sentence.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MissingRules {
    /// Columns NOT NULL on legacy and nullable on the target.
    pub not_null: Vec<String>,
    /// CHECK constraints of legacy (their definitions) not on the target.
    pub checks: Vec<String>,
    /// Unique indexes / constraints of legacy (definitions) the target does not keep.
    pub unique: Vec<String>,
    /// Plain indexes of legacy (definitions) with no counterpart on the target.
    pub indexes: Vec<String>,
    /// Every legacy rule the target keeps, with the target's rule that keeps it.
    pub kept: Vec<KeptRule>,
}

/// A legacy rule and its counterpart on the target.
#[derive(Debug, Clone, Default, Serialize)]
pub struct KeptRule {
    /// `NOT NULL`, `CHECK`, `unique` or `index`.
    pub kind: &'static str,
    /// The legacy rule (column, constraint or index definition).
    pub legacy: String,
    /// The target's.
    pub target: String,
}

fn kind_name(kind: &str) -> &'static str {
    match kind {
        "not_null" => "NOT NULL",
        "check" => "CHECK",
        "unique" => "unique",
        _ => "index",
    }
}

impl MissingRules {
    /// The data rules the target would stop enforcing (indexes excluded), a sentence each:
    /// what the parity report's `constraints` check and a refused cutover say.
    pub fn data_rule_problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.not_null.is_empty() {
            out.push(format!(
                "NOT NULL missing on the target for {}",
                self.not_null.join(", ")
            ));
        }
        for check in &self.checks {
            out.push(format!("CHECK {check} missing on the target"));
        }
        for unique in &self.unique {
            out.push(format!(
                "no unique rule on the target for: {unique} (the same columns, plus the partition key on a partitioned target)"
            ));
        }
        out
    }
}

/// What `legacy` enforces that `target` does not.
pub async fn missing(
    client: &impl GenericClient,
    legacy: &TableName,
    target: &TableName,
) -> Result<MissingRules, tokio_postgres::Error> {
    let rows = client
        .query(MISSING_SQL, &[&legacy.to_string(), &target.to_string()])
        .await?;
    let mut out = MissingRules::default();
    for row in rows {
        let kind: String = row.get(0);
        let what: String = row.get(1);
        let counterpart: Option<String> = row.get(2);
        if let Some(counterpart) = counterpart {
            out.kept.push(KeptRule {
                kind: kind_name(&kind),
                legacy: what,
                target: counterpart,
            });
            continue;
        }
        match kind.as_str() {
            "not_null" => out.not_null.push(what),
            "check" => out.checks.push(what),
            "unique" => out.unique.push(what),
            _ => out.indexes.push(what),
        }
    }
    Ok(out)
}

/// `(kind, what, counterpart)` for every legacy rule: the target's rule that keeps it, or
/// NULL.
const MISSING_SQL: &str = "\
WITH t AS (SELECT to_regclass($1) AS legacy, to_regclass($2) AS target),
cols AS (
    SELECT i.indexrelid, i.indrelid, i.indisunique,
           i.indexprs IS NOT NULL OR i.indpred IS NOT NULL AS special,
           ARRAY(SELECT a.attname::text FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(n, o)
                   JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n
                  ORDER BY k.o) AS names,
           regexp_replace(pg_get_indexdef(i.indexrelid), '^.* USING ', '') AS body
      FROM t, pg_index i WHERE i.indrelid IN (t.legacy, t.target)
),
partkey AS (
    -- Every level's partition key: a unique index of a sub-partitioned target includes them all.
    SELECT coalesce(array_agg(DISTINCT a.attname::text), '{}') AS names
      FROM t, pg_partition_tree(t.target) AS tree
      JOIN pg_partitioned_table p ON p.partrelid = tree.relid
      JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = ANY (p.partattrs::int2[])
)
SELECT 'not_null', quote_ident(a.attname),
       CASE WHEN b.attnotnull THEN quote_ident(b.attname) || ' NOT NULL' END
  FROM t JOIN pg_attribute a ON a.attrelid = t.legacy AND a.attnum > 0 AND NOT a.attisdropped
  JOIN pg_attribute b ON b.attrelid = t.target AND b.attname = a.attname AND NOT b.attisdropped
 WHERE a.attnotnull
UNION ALL
SELECT 'check', format('%I %s', c.conname, pg_get_constraintdef(c.oid)),
       (SELECT format('%I %s', o.conname, pg_get_constraintdef(o.oid)) FROM pg_constraint o
         WHERE o.conrelid = t.target AND o.contype = 'c'
           AND pg_get_constraintdef(o.oid) = pg_get_constraintdef(c.oid)
         ORDER BY o.conname LIMIT 1)
  FROM t JOIN pg_constraint c ON c.conrelid = t.legacy AND c.contype = 'c'
UNION ALL
SELECT CASE WHEN l.indisunique THEN 'unique' ELSE 'index' END, pg_get_indexdef(l.indexrelid),
       (SELECT pg_get_indexdef(g.indexrelid) FROM cols g
         WHERE g.indrelid = t.target
           AND CASE
                 WHEN l.special THEN g.body = l.body AND g.indisunique = l.indisunique
                 WHEN l.indisunique THEN g.indisunique AND NOT g.special
                      AND (g.names <@ l.names
                           OR (l.names <@ g.names AND g.names <@ (l.names || partkey.names)))
                 ELSE NOT g.special AND g.names[1:cardinality(l.names)] = l.names
               END
         ORDER BY g.indisunique DESC, cardinality(g.names), 1 LIMIT 1)
  FROM t, partkey, cols l
 WHERE l.indrelid = t.legacy
ORDER BY 1, 2";
