//! The SQL a backfill of one rule runs, in either direction: the batch (copy the next keyset
//! page of the source into the destination), for the reverse re-sync the removal of
//! destination rows whose key the source no longer has, the deferred re-check of the copies
//! (find copied keys whose source row is gone, lock and delete those copies), and the
//! estimate of the rows left. Built once per run from the resolved rule.
//!
//! Forward (`tandem backfill`): legacy -> target, `ON CONFLICT DO NOTHING` (a row dual-write
//! already copied is newer, so it wins), source rows locked `FOR KEY SHARE`.
//!
//! Reverse (`tandem backfill --reverse`, in `cutover`): target -> legacy, as the cutover
//! mirror writes it (its conflict target and columns, [`tandem_rules::reversed`]). The
//! legacy table missed inserts, updates and deletes in `target_only`, so a row already there
//! may be stale: the copy is an upsert that updates rows that differ, and the source rows
//! are locked `FOR SHARE`, so a concurrent UPDATE of a target row either committed before
//! the batch (which then reads and copies its new version) or waits for the batch and
//! mirrors its change after it. Legacy rows in the batch's key range whose key the target
//! lacks are deleted in two statements of the batch's transaction: first locked, then
//! deleted with a fresh snapshot, so a concurrent INSERT of that key (target first, then
//! its mirror into legacy, which waits for the lock) is seen and its row kept.

use tandem_rules::{quote_ident, ResolvedRule};

use super::Direction;

/// The statements a backfill of one rule runs.
pub(super) struct Statements {
    /// One batch: copy the next rows after the cursor (`$1`) up to the upper bound (`$2`,
    /// inclusive; NULL: none), return counts, last key, xid, copied keys.
    pub batch: String,
    /// Forward only: the same batch as a plain INSERT, without `ON CONFLICT`, tried first
    /// (see [`super::state::batch`]): most rows of a forward batch are not in the target
    /// yet, and a plain insert skips the speculative insertion `ON CONFLICT` pays per row.
    pub batch_plain: Option<String>,
    /// Batches to run as [`batch`](Self::batch) straight away, without trying
    /// [`batch_plain`](Self::batch_plain) first: set after a plain try met a key already
    /// in the target (a stretch of keys dual-write has copied, or updated rows), counted
    /// down by each batch, shared by the run's workers.
    pub upsert_streak: std::sync::atomic::AtomicU32,
    /// The keys that split the rows left after the cursor (`$1`) into `$2` parts of about
    /// equal size (see [`super::parts`]): `$2 - 1` keys at most, ascending.
    pub boundaries: String,
    /// The same from a sample of the table's pages (for tables too large to read whole):
    /// `%` stands for the sampled percentage.
    pub sampled_boundaries: String,
    /// Reverse only: lock, then delete, the destination rows in the key range `($1, $2]`
    /// (`$2` NULL: no upper bound) whose key the source lacks.
    pub stale: Option<(String, String)>,
    /// Finds copied keys whose source row is gone (see [`super::recheck`]).
    pub recheck: String,
    /// Locks those copies (so the removal's fresh snapshot sees a write that raced it).
    pub lock_copies: String,
    /// Deletes those copies.
    pub remove: String,
    /// EXPLAIN of the rows left after the cursor (`$1`).
    pub remaining_estimate: String,
    /// The table read (legacy forward, the target in reverse).
    pub source: String,
    /// The table written (the target forward, legacy in reverse): analysed at the end.
    pub dest: String,
}

/// Which table is read and which written, and how.
struct Sides {
    source: String,
    dest: String,
    /// The rule's key (unique in both), quoted: the pages and the re-checks go by it.
    key: Vec<String>,
    source_types: Vec<String>,
    dest_types: Vec<String>,
    /// The destination's conflict target, quoted.
    conflict: Vec<String>,
    /// Destination columns written, quoted, and the value of each over the source row.
    columns: Vec<String>,
    values: Vec<String>,
    /// The row lock taken on the source rows a batch reads.
    lock: &'static str,
    /// Whether a row already in the destination is updated to the source's (reverse).
    update: bool,
}

fn sides(rule: &ResolvedRule, direction: Direction) -> Sides {
    let types = |table: &[tandem_rules::ColumnInfo]| -> Vec<String> {
        rule.rule
            .key
            .iter()
            .map(|k| {
                table
                    .iter()
                    .find(|c| &c.name == k)
                    .map(|c| c.sql_type.clone())
                    .unwrap_or_else(|| "text".into())
            })
            .collect()
    };
    let quoted = |names: &[String]| names.iter().map(|c| quote_ident(c)).collect::<Vec<_>>();
    let key = quoted(&rule.rule.key);
    match direction {
        Direction::Forward => {
            let mirrored = &rule.shape.mirrored_columns;
            Sides {
                source: rule.rule.table.to_string(),
                dest: rule.rule.target.to_string(),
                source_types: types(&rule.shape.legacy_table),
                dest_types: types(&rule.shape.target_table),
                conflict: key.clone(),
                key,
                columns: mirrored
                    .iter()
                    .map(|c| quote_ident(c))
                    .chain(rule.rule.set.iter().map(|(c, _)| quote_ident(c)))
                    .collect(),
                values: mirrored
                    .iter()
                    .map(|c| quote_ident(c))
                    .chain(rule.rule.set.iter().map(|(_, e)| format!("({e})")))
                    .collect(),
                lock: "FOR KEY SHARE",
                update: false,
            }
        }
        Direction::Reverse => {
            let reversed = tandem_rules::reversed(rule);
            let columns = quoted(&reversed.shape.mirrored_columns);
            Sides {
                source: rule.rule.target.to_string(),
                dest: rule.rule.table.to_string(),
                source_types: types(&rule.shape.target_table),
                dest_types: types(&rule.shape.legacy_table),
                conflict: quoted(&reversed.rule.key),
                key,
                values: columns.clone(),
                columns,
                lock: "FOR SHARE",
                update: true,
            }
        }
    }
}

/// `(a.k1, a.k2) <op> (($n::text[])[1]::type1, ...)`: a key compared with a typed cursor.
fn compare(alias: &str, key: &[String], op: &str, param: &str, types: &[String]) -> String {
    let cols = key
        .iter()
        .map(|k| format!("{alias}{k}"))
        .collect::<Vec<_>>()
        .join(", ");
    let typed = types
        .iter()
        .enumerate()
        .map(|(i, ty)| format!("({param}::text[])[{}]::{ty}", i + 1))
        .collect::<Vec<_>>()
        .join(", ");
    format!("({param}::text[] IS NULL OR ({cols}) {op} ({typed}))")
}

/// `a.k1 = b.k1 AND ...`
fn same_key(key: &[String], left: &str, right: &str) -> String {
    key.iter()
        .map(|k| format!("{left}.{k} = {right}.{k}"))
        .collect::<Vec<_>>()
        .join(" AND ")
}

pub(super) fn statements(
    rule: &ResolvedRule,
    predicate: Option<&str>,
    batch_size: i64,
    direction: Direction,
) -> Statements {
    let s = sides(rule, direction);
    let key_list = s.key.join(", ");
    let mut conditions = vec![compare("", &s.key, ">", "$1", &s.source_types)];
    if let Some(p) = predicate {
        conditions.push(format!("({p})"));
    }
    let where_clause = conditions.join(" AND ");
    let last_key = s
        .key
        .iter()
        .map(|k| format!("{k}::text"))
        .collect::<Vec<_>>()
        .join(", ");
    let desc = s
        .key
        .iter()
        .map(|k| format!("{k} DESC"))
        .collect::<Vec<_>>()
        .join(", ");
    // The copied keys, one text array per key column, for the deferred re-check.
    let copied_keys = s
        .key
        .iter()
        .map(|k| format!("(SELECT array_agg({k}::text) FROM copied)"))
        .collect::<Vec<_>>()
        .join(", ");
    let changed: Vec<&String> = s
        .columns
        .iter()
        .filter(|c| !s.conflict.contains(c))
        .collect();
    let (alias, action) = if s.update && !changed.is_empty() {
        let set = changed
            .iter()
            .map(|c| format!("{c} = EXCLUDED.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let list = |alias: &str| {
            changed
                .iter()
                .map(|c| format!("{alias}.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        (
            " AS d",
            format!(
                "DO UPDATE SET {set} WHERE ROW({}) IS DISTINCT FROM ROW({})",
                list("d"),
                list("EXCLUDED")
            ),
        )
    } else {
        ("", "DO NOTHING".to_string())
    };
    let bounded = format!(
        "{where_clause} AND {}",
        compare("", &s.key, "<=", "$2", &s.source_types)
    );
    // ntile over the rows left, in key order: the last key of each tile but the last.
    let tiles = |from: &str| {
        format!(
            "SELECT ARRAY[{last_key}] FROM ( \
               SELECT {key_list}, tandem_tile, \
                 lead(tandem_tile) OVER (ORDER BY {key_list}) AS tandem_next \
               FROM (SELECT {key_list}, ntile($2::int) OVER (ORDER BY {key_list}) AS tandem_tile \
                     FROM {from} WHERE {where_clause}) AS t) AS s \
             WHERE tandem_next IS NOT NULL AND tandem_next <> tandem_tile ORDER BY {key_list}",
        )
    };
    let boundaries = tiles(&s.source);
    let sampled_boundaries = tiles(&format!("{} TABLESAMPLE SYSTEM (%)", s.source));
    let batch_with = |on_conflict: &str| {
        format!(
            "WITH batch AS (SELECT * FROM {source} WHERE {bounded} ORDER BY {key_list} \
               LIMIT {batch_size} {lock}), \
             copied AS (INSERT INTO {dest}{alias} ({cols}) SELECT {vals} FROM batch \
               {on_conflict} RETURNING {key_list}) \
             SELECT (SELECT count(*) FROM batch)::int8, (SELECT count(*) FROM copied)::int8, \
               (SELECT ARRAY[{last_key}] FROM batch ORDER BY {desc} LIMIT 1), \
               (pg_current_xact_id()::text::int8 % 4294967296)::int8, {copied_keys}",
            source = s.source,
            dest = s.dest,
            lock = s.lock,
            cols = s.columns.join(", "),
            vals = s.values.join(", "),
        )
    };
    let batch = batch_with(&format!(
        "ON CONFLICT ({conflict}) {action}",
        conflict = s.conflict.join(", ")
    ));
    let batch_plain = (direction == Direction::Forward).then(|| batch_with(""));
    let source_gone = format!(
        "NOT EXISTS (SELECT 1 FROM {} AS s WHERE {})",
        s.source,
        same_key(&s.key, "s", "d")
    );
    let stale = (direction == Direction::Reverse).then(|| {
        let range = format!(
            "{} AND {}",
            compare("d.", &s.key, ">", "$1", &s.dest_types),
            compare("d.", &s.key, "<=", "$2", &s.dest_types)
        );
        (
            format!(
                "SELECT 1 FROM {dest} AS d WHERE {range} AND {source_gone} FOR UPDATE OF d",
                dest = s.dest
            ),
            format!(
                "WITH gone AS (DELETE FROM {dest} AS d WHERE {range} AND {source_gone} RETURNING 1) \
                 SELECT count(*)::int8 FROM gone",
                dest = s.dest
            ),
        )
    });
    // `$1..$n`: the copied keys, one text array per key column.
    let unnest_args = (1..=s.key.len())
        .map(|i| format!("${i}::text[]"))
        .collect::<Vec<_>>()
        .join(", ");
    let alias_cols = (1..=s.key.len())
        .map(|i| format!("c{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let match_keys = |alias: &str, types: &[String]| {
        s.key
            .iter()
            .zip(types)
            .enumerate()
            .map(|(i, (k, ty))| format!("{alias}.{k} = k.c{}::{ty}", i + 1))
            .collect::<Vec<_>>()
            .join(" AND ")
    };
    // Two steps, so the common case (no copy outlived its row) costs one index probe of
    // the source per copied key and never touches the destination: `recheck` finds the
    // copied keys whose source row is gone; `lock_copies` and `remove` (one transaction)
    // delete just those copies.
    let recheck = format!(
        "SELECT {alias_cols} FROM unnest({unnest_args}) AS k({alias_cols}) \
         WHERE NOT EXISTS (SELECT 1 FROM {source} AS d WHERE {})",
        match_keys("d", &s.source_types),
        source = s.source,
    );
    let copies_where = format!("{} AND {source_gone}", match_keys("d", &s.dest_types));
    let keys_from = format!("unnest({unnest_args}) AS k({alias_cols})");
    let lock_copies = format!(
        "SELECT 1 FROM {dest} AS d, {keys_from} WHERE {copies_where} FOR UPDATE OF d",
        dest = s.dest
    );
    let remove = format!(
        "WITH gone AS (DELETE FROM {dest} AS d USING {keys_from} WHERE {copies_where} \
           RETURNING 1) SELECT count(*)::int8 FROM gone",
        dest = s.dest
    );
    let remaining_estimate = format!(
        "EXPLAIN (FORMAT JSON) SELECT 1 FROM {source} WHERE {where_clause}",
        source = s.source
    );
    Statements {
        batch,
        batch_plain,
        upsert_streak: std::sync::atomic::AtomicU32::new(0),
        boundaries,
        sampled_boundaries,
        stale,
        recheck,
        lock_copies,
        remove,
        remaining_estimate,
        source: s.source,
        dest: s.dest,
    }
}
