//! Foreign keys around a rule's tables: the ones the move to the target would break.
//!
//! A foreign key that references the legacy table (`order_lines.order_id REFERENCES
//! orders(id)`) checks new child rows against the legacy table. Once writes stop reaching
//! it (`target_only`), a new order exists only in the target and its lines are refused
//! (23503), and a deleted order leaves lines pointing at the retired legacy row. A foreign
//! key *from* the legacy table the target lacks is a data rule the target stops enforcing.
//! Both are named, with the statements that re-point or add them: `target_only` is refused
//! while any key references the legacy table, and `tandem parity`'s `foreign_keys` check
//! fails while either kind remains.

use tandem_rules::TableName;
use tokio_postgres::GenericClient;

/// One foreign key that would be broken or lost at cutover, with what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ForeignKeyProblem {
    /// `references_legacy` (another table's key points at the legacy table) or
    /// `missing_on_target` (the legacy table's own key has no counterpart on the target).
    pub kind: &'static str,
    /// The constraint, as `table.constraint`.
    pub constraint: String,
    /// Its definition (`pg_get_constraintdef`).
    pub definition: String,
    /// What to run, or what to change first.
    pub fix: String,
}

impl ForeignKeyProblem {
    /// One line for messages and the text report.
    pub fn describe(&self) -> String {
        match self.kind {
            "references_legacy" => format!(
                "foreign key {} ({}) references the legacy table; {}",
                self.constraint, self.definition, self.fix
            ),
            _ => format!(
                "foreign key {} ({}) has no counterpart on the target; {}",
                self.constraint, self.definition, self.fix
            ),
        }
    }
}

/// The foreign keys of `legacy` and to it that the move to `target` would break or lose.
pub async fn problems(
    client: &impl GenericClient,
    legacy: &TableName,
    target: &TableName,
) -> Result<Vec<ForeignKeyProblem>, tokio_postgres::Error> {
    let rows = client
        .query(
            FOREIGN_KEYS_SQL,
            &[&legacy.to_string(), &target.to_string()],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let kind: String = r.get(0);
            let constraint: String = r.get(1);
            let definition: String = r.get(2);
            let child: String = r.get(3);
            let name: String = r.get(4);
            let columns: String = r.get(5);
            let child_columns: String = r.get(6);
            let covered: bool = r.get(7);
            if kind == "references_legacy" {
                let repoint = format!(
                    "re-point it to {target}: ALTER TABLE {child} DROP CONSTRAINT {name}, ADD CONSTRAINT {name} FOREIGN KEY ({child_columns}) REFERENCES {target} ({columns}) NOT VALID; ALTER TABLE {child} VALIDATE CONSTRAINT {name}"
                );
                let fix = if covered {
                    repoint
                } else {
                    format!(
                        "{target} has no unique key on exactly ({columns}) (a partitioned target's unique keys include its partition key): add the partition key column to {child}, then {repoint}",
                    )
                };
                ForeignKeyProblem {
                    kind: "references_legacy",
                    constraint,
                    definition,
                    fix,
                }
            } else {
                ForeignKeyProblem {
                    kind: "missing_on_target",
                    constraint,
                    definition: definition.clone(),
                    fix: format!(
                        "add it to the target: ALTER TABLE {target} ADD CONSTRAINT {name} {definition}"
                    ),
                }
            }
        })
        .collect())
}

/// `(kind, table.constraint, definition, child table, constraint name, referenced columns,
/// referencing columns, whether the target has a unique key on the referenced columns)`.
const FOREIGN_KEYS_SQL: &str = "\
WITH t AS (SELECT to_regclass($1) AS legacy, to_regclass($2) AS target)
SELECT 'references_legacy', format('%s.%I', c.conrelid::regclass, c.conname),
       pg_get_constraintdef(c.oid), c.conrelid::regclass::text, quote_ident(c.conname),
       (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY k.n)
          FROM unnest(c.confkey) WITH ORDINALITY AS k(attnum, n)
          JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.attnum),
       (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY k.n)
          FROM unnest(c.conkey) WITH ORDINALITY AS k(attnum, n)
          JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum),
       EXISTS (SELECT 1 FROM pg_index i
                WHERE i.indrelid = t.target AND i.indisunique AND i.indpred IS NULL
                  AND (SELECT array_agg(a.attname::text ORDER BY a.attname)
                         FROM pg_attribute a
                        WHERE a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey))
                      = (SELECT array_agg(a.attname::text ORDER BY a.attname)
                           FROM pg_attribute a
                          WHERE a.attrelid = c.confrelid AND a.attnum = ANY (c.confkey)))
  FROM t JOIN pg_constraint c ON c.contype = 'f' AND c.confrelid = t.legacy
 WHERE c.conrelid NOT IN (t.legacy, t.target) AND c.conparentid = 0
UNION ALL
SELECT 'missing_on_target', format('%s.%I', c.conrelid::regclass, c.conname),
       pg_get_constraintdef(c.oid), c.conrelid::regclass::text, quote_ident(c.conname), '', '',
       true
  FROM t JOIN pg_constraint c ON c.contype = 'f' AND c.conrelid = t.legacy
 WHERE NOT EXISTS (SELECT 1 FROM pg_constraint o
                    WHERE o.contype = 'f' AND o.conrelid = t.target
                      AND o.confrelid = c.confrelid
                      AND pg_get_constraintdef(o.oid) = pg_get_constraintdef(c.oid))
ORDER BY 1, 2";
